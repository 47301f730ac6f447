//! Child processes for the tests: the daemon with its stderr collected, signals, the RTSP
//! test server on loopback, free ports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{clips, cliptag};

/// A `cliptag run` child whose stderr is collected as it is written.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// `cliptag run --config CONFIG` with these extra environment variables.
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(&["run", "--config", config.to_str().unwrap()], envs)
    }

    /// `cliptag ARGS` at info level with these extra environment variables.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = cliptag();
        cmd.args(args)
            .env("CLIPTAG_LOG", "info,tract_linalg=warn")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cliptag starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn send_signal(pid: u32, signal: &str) {
    // bash's builtin kill: a minimal Debian has no /bin/kill (procps).
    let status = std::process::Command::new("bash")
        .args(["-c", &format!("kill -s {signal} {pid}")])
        .status()
        .expect("bash runs");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The RTSP test server (examples/rtsp_test_server.rs). `cargo test` builds examples only
/// as test harnesses, so scripts/test.sh runs `cargo build --examples` first.
pub fn rtsp_server_exe() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_cliptag"))
        .parent()
        .unwrap()
        .join("examples/rtsp_test_server");
    assert!(
        exe.is_file(),
        "{} is missing: build it with `cargo build --examples` (scripts/test.sh does)",
        exe.display()
    );
    exe
}

/// A running RTSP test server, killed when dropped: a test that panics must not leave it
/// running, holding the test runner's output pipe open (a CI run then waits for it forever).
pub struct RtspServer(Child);

impl std::ops::Deref for RtspServer {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for RtspServer {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn rtsp_server(port: u16) -> RtspServer {
    rtsp_server_with(port, &[])
}

/// [`rtsp_server`] with more arguments (`--credentials USER:PASS`).
pub fn rtsp_server_with(port: u16, extra: &[&str]) -> RtspServer {
    let exe = rtsp_server_exe();
    let mut child = std::process::Command::new(exe)
        .args([
            "--port",
            &port.to_string(),
            "--clip",
            clips().join("three_scenes_10s.mp4").to_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rtsp_test_server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = RtspServer(child);
    assert!(line.starts_with("READY "), "rtsp_test_server said {line:?}");
    server
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
