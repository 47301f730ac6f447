//! Why a camera or server could not be reached, in the words a user acts on.
//!
//! GStreamer says "Could not open resource for reading and writing" for a refused port, a
//! name that does not resolve and a host that does not answer alike. When a network
//! source fails to open, the host and port are tried once more here, directly, and the
//! answer names the cause: the name does not resolve, nothing listens on the port, or the
//! host does not answer. Done only after a failure, on the source's own thread, which is
//! about to back off anyway.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the direct try waits for a host that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The cause, when the direct try finds one; `None` when the port answers (the trouble is
/// further in: the path, the stream, the credentials).
pub fn why_unreachable(host: &str, port: u16) -> Option<String> {
    let addresses = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Some(format!("cannot resolve host {host:?}: {e}")),
    };
    let Some(address) = addresses.first() else {
        return Some(format!("cannot resolve host {host:?}: no address"));
    };
    match TcpStream::connect_timeout(address, CONNECT_TIMEOUT) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(format!(
            "connection refused by {host}:{port}: nothing listens there (is the camera on, the port right?)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Some(format!(
            "{host}:{port} does not answer (no reply in {} s)",
            CONNECT_TIMEOUT.as_secs()
        )),
        Err(e) => Some(format!("cannot connect to {host}:{port}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_refused_port_and_a_name_that_does_not_resolve() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = why_unreachable("127.0.0.1", port).unwrap();
        assert!(
            refused.starts_with("connection refused by 127.0.0.1:"),
            "{refused}"
        );
        // `.invalid` never resolves (RFC 6761).
        let unknown = why_unreachable("camera.invalid", 554).unwrap();
        assert!(
            unknown.starts_with("cannot resolve host \"camera.invalid\""),
            "{unknown}"
        );
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listening.local_addr().unwrap().port();
        assert_eq!(why_unreachable("127.0.0.1", open), None);
    }
}
