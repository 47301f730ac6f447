//! A small HTTP/1.1 server on loopback for the HTTP source tests: static files with range
//! requests (what nginx, a NAS or `python3 -m http.server` do for recordings), at a chosen
//! rate, optionally cutting one response short once; and a live MJPEG camera
//! (`multipart/x-mixed-replace`, what cheap IP cameras serve). Written with std only: the
//! tests need to kill it mid-body and count the range requests, which a real server hides.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server serves and how.
#[derive(Clone, Default)]
pub struct Site {
    /// Files under this directory, by path.
    pub root: PathBuf,
    /// Bytes per second for file bodies (`None`: as fast as the socket takes them).
    pub rate: Option<u64>,
    /// Once, the response that reaches this byte offset of a file is cut there (the
    /// connection dropped mid-body), as a flaky network does.
    pub cut_once_at: Option<u64>,
    /// `/mjpeg`: these JPEG frames, in a loop, at `mjpeg_fps`, for as long as the client reads.
    pub mjpeg: Vec<Vec<u8>>,
    pub mjpeg_fps: u32,
    /// Paths under `/private/` answer 401 whatever credentials come: a camera that
    /// refuses the configured password.
    pub private_refuses_everyone: bool,
}

struct Shared {
    site: Site,
    stop: AtomicBool,
    cut_used: AtomicBool,
    /// Open connections, so `stop` can drop them mid-body.
    connections: Mutex<Vec<TcpStream>>,
    /// "GET /path" plus " Range: ..." where one was asked, in order.
    requests: Mutex<Vec<String>>,
    /// Body bytes written, all responses together.
    sent: AtomicU64,
}

pub struct WebServer {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Serves `site` on a free loopback port.
    pub fn start(site: Site) -> WebServer {
        WebServer::start_on(0, site)
    }

    /// Serves `site` on `port` (0: any free one): a restart after [`WebServer::stop`].
    pub fn start_on(port: u16, site: Site) -> WebServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            site,
            stop: AtomicBool::new(false),
            cut_used: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        shared.connections.lock().unwrap().push(clone);
                    }
                    let shared = shared.clone();
                    std::thread::spawn(move || serve(stream, &shared));
                }
            })
        };
        WebServer {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The requests so far: "GET /path", with " Range: bytes=N-" where one was asked.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Body bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection mid-body: the server is gone.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for c in self.shared.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    shared.requests.lock().unwrap().push(match &range {
        Some(r) => format!("GET {path} Range: {r}"),
        None => format!("GET {path}"),
    });
    if shared.site.private_refuses_everyone && path.starts_with("/private/") {
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"camera\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    if path.split('?').next() == Some("/mjpeg") && !shared.site.mjpeg.is_empty() {
        serve_mjpeg(stream, shared);
        return;
    }
    // The query is the client's business (a signed URL, a camera's credentials).
    let file_path = path.split('?').next().unwrap_or_default();
    let file = shared.site.root.join(file_path.trim_start_matches('/'));
    let Ok(body) = std::fs::read(&file) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let total = body.len() as u64;
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        .min(total);
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("mp4") => "video/mp4",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("mkv") => "video/x-matroska",
        _ => "application/octet-stream",
    };
    let status = if range.is_some() {
        format!(
            "206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}",
            total.saturating_sub(1)
        )
    } else {
        "200 OK".to_string()
    };
    // The file's mtime as the HTTP-date every web server sends.
    let modified = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .map(|d| format!("Last-Modified: {d}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n{modified}Connection: close\r\n\r\n",
        total - start
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let chunk = 4096u64;
    let mut at = start;
    while at < total {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let end = (at + chunk).min(total);
        if let Some(cut) = shared.site.cut_once_at {
            if at <= cut && cut < end && !shared.cut_used.swap(true, Ordering::SeqCst) {
                // Cut mid-body: what was sent so far, then the connection is gone.
                let _ = stream.write_all(&body[at as usize..cut as usize]);
                shared.sent.fetch_add(cut - at, Ordering::SeqCst);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
        if stream.write_all(&body[at as usize..end as usize]).is_err() {
            return;
        }
        shared.sent.fetch_add(end - at, Ordering::SeqCst);
        at = end;
        if let Some(rate) = shared.site.rate {
            std::thread::sleep(Duration::from_secs_f64(chunk as f64 / rate as f64));
        }
    }
}

/// An MJPEG camera: one multipart part per frame, at the site's frame rate, until the
/// client goes or the server stops.
fn serve_mjpeg(mut stream: TcpStream, shared: &Shared) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(shared.site.mjpeg_fps.max(1)));
    for jpeg in shared.site.mjpeg.iter().cycle() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let part = format!(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        let ok = stream.write_all(part.as_bytes()).is_ok()
            && stream.write_all(jpeg).is_ok()
            && stream.write_all(b"\r\n").is_ok();
        if !ok {
            return;
        }
        shared.sent.fetch_add(jpeg.len() as u64, Ordering::SeqCst);
        std::thread::sleep(period);
    }
}

/// The request's head (request line and headers), or `None` if the client went away.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
