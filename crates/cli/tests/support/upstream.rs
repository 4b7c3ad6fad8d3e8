//! Upstreams for the proxy to forward to: one that records the head of every request, and a
//! bare listener that hands each connection to the test's own code.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Listens on `127.0.0.1:0` and serves each accepted connection with `serve` on a thread of
/// its own. Returns the address and the count of accepted connections.
pub fn serve_with<F>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    (addr, accepted)
}

/// An HTTP/1.1 upstream that records the head of every request it receives, as bytes on the
/// wire, and answers `200 ok` (closing each connection, so every request is its own).
pub struct Recorder {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let record = heads.clone();
        let (addr, _) = serve_with(move |s| serve_one(s, &record));
        Recorder { addr, heads }
    }

    /// Waits until a request whose head contains `marker` has arrived, then returns every head
    /// received so far. Requests sent before the marker have been forwarded (or not) by then.
    pub fn heads_until(&self, marker: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let heads = self.heads.lock().unwrap().clone();
            if heads.iter().any(|h| h.contains(marker)) {
                return heads;
            }
            assert!(Instant::now() < deadline, "the upstream never got {marker}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve_one(mut s: TcpStream, record: &Mutex<Vec<String>>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lower = head.to_ascii_lowercase();
    // Read the body to its end so that the proxy's write completes.
    let done = |b: &[u8]| {
        if lower.contains("transfer-encoding: chunked") {
            b.ends_with(b"0\r\n\r\n")
        } else {
            let len = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            b.len() >= len
        }
    };
    let mut body = buf[head_end..].to_vec();
    while !done(&body) {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    record.lock().unwrap().push(head);
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
}
