//! Message framing through the proxy in every combination of client protocol (HTTP/1.0,
//! HTTP/1.1, HTTP/2 with prior knowledge) and upstream protocol (HTTP/1.0, HTTP/1.1, h2c):
//! bodies delimited by length, by chunks and by close; `HEAD`; `204` and `304`, which never
//! have a body; a request body, with `Expect: 100-continue`. Each answer is checked as the
//! client sees it, and keep-alive connections are checked to stay usable after it (a framing
//! mistake shows as a hung or broken next request).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::http::{Response, curl, parse};
use support::proxy::{Proxy, Stdout, step2_in_front_of};
use support::upstream::serve_with;

/// What the upstreams answer, whatever their protocol.
enum Answer {
    /// 200 with `hello`; `chunked` for an HTTP/1.1 upstream's chunked framing.
    Hello {
        chunked: bool,
    },
    /// 200 with `content-length: 5` and no body (the answer to `HEAD`).
    HeadOfHello,
    NoContent,
    NotModified,
    /// 200 with `got N`, N the request body's length.
    Got(usize),
}

fn answer(method: &str, path: &str, body_len: usize) -> Answer {
    match (method, path) {
        ("HEAD", _) => Answer::HeadOfHello,
        (_, "/204") => Answer::NoContent,
        (_, "/304") => Answer::NotModified,
        ("POST", _) => Answer::Got(body_len),
        (_, "/chunked") => Answer::Hello { chunked: true },
        _ => Answer::Hello { chunked: false },
    }
}

/// Reads one request (head and a length-delimited or chunked body); `None` at the end of the
/// connection.
fn read_request(s: &mut TcpStream) -> Option<(String, String, usize)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut line = head.lines().next()?.split(' ');
    let method = line.next()?.to_string();
    let path = line.next()?.split('?').next()?.to_string();
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let body_len = if let Some(n) = length {
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).ok()?;
        n
    } else if lower.contains("transfer-encoding: chunked") {
        let mut raw = Vec::new();
        while !raw.ends_with(b"0\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => raw.push(byte[0]),
                _ => return None,
            }
        }
        // One chunk at most in these tests: its size line tells the length.
        let text = String::from_utf8_lossy(&raw);
        let size = text.lines().next().unwrap_or("0");
        usize::from_str_radix(size.trim(), 16).unwrap_or(0)
    } else {
        0
    };
    Some((method, path, body_len))
}

/// An HTTP/1.x upstream. HTTP/1.0 closes after every answer and delimits `hello` by closing;
/// HTTP/1.1 keeps connections open.
fn h1_upstream(http10: bool) -> String {
    let (addr, _) = serve_with(move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while let Some((method, path, body_len)) = read_request(&mut s) {
            let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
            let bytes = match answer(&method, &path, body_len) {
                Answer::Hello { .. } if http10 => format!("{version} 200 OK\r\n\r\nhello"),
                Answer::Hello { chunked: true } => format!(
                    "{version} 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                ),
                Answer::Hello { chunked: false } => {
                    format!("{version} 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                }
                Answer::HeadOfHello => format!("{version} 200 OK\r\ncontent-length: 5\r\n\r\n"),
                Answer::NoContent => format!("{version} 204 No Content\r\n\r\n"),
                Answer::NotModified => {
                    format!("{version} 304 Not Modified\r\netag: \"v1\"\r\n\r\n")
                }
                Answer::Got(n) => {
                    let body = format!("got {n}");
                    format!(
                        "{version} 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
            };
            if s.write_all(bytes.as_bytes()).is_err() || http10 {
                return;
            }
        }
    });
    addr
}

/// An h2c (HTTP/2 with prior knowledge) upstream on hyper; it refuses HTTP/1.
fn h2c_upstream() -> String {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service =
                        service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                            let mut resp = http::Response::builder();
                            let body = match answer(&method, &path, body.unwrap_or(0)) {
                                Answer::Hello { .. } => Bytes::from_static(b"hello"),
                                Answer::HeadOfHello => {
                                    resp = resp.header("content-length", "5");
                                    Bytes::new()
                                }
                                Answer::NoContent => {
                                    resp = resp.status(204);
                                    Bytes::new()
                                }
                                Answer::NotModified => {
                                    resp = resp.status(304).header("etag", "\"v1\"");
                                    Bytes::new()
                                }
                                Answer::Got(n) => Bytes::from(format!("got {n}")),
                            };
                            resp.body(Full::new(body))
                        });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// The client protocols, as curl flags.
const CLIENTS: [(&str, &str); 3] = [
    ("HTTP/1.0", "--http1.0"),
    ("HTTP/1.1", "--http1.1"),
    ("HTTP/2", "--http2-prior-knowledge"),
];

/// `curl FLAG -o /dev/null -w ... URL...`: per URL, the status and the connections curl
/// opened for it (0: the previous request's connection was reused).
fn statuses_and_connects(flag: &str, extra: &[&str], urls: &[String]) -> Vec<(u16, u32)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", flag])
        .args(extra)
        .args(["-w", "%{http_code} %{num_connects}\\n"])
        .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()]))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (code, connects) = l.split_once(' ').unwrap();
            (code.parse().unwrap(), connects.parse().unwrap())
        })
        .collect()
}

/// `nghttp -v ARGS URL...` (HTTP/2 with prior knowledge, one connection): the status of each
/// stream, in the order they came back.
fn nghttp_statuses(extra: &[&str], urls: &[String]) -> Vec<u16> {
    let out = Command::new("nghttp")
        .args(["-v", "-t", "10"])
        .args(extra)
        .args(urls)
        .output()
        .expect("nghttp (Debian nghttp2-client) must be installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(":status: ")
                .map(|(_, s)| s.trim().parse().unwrap())
        })
        .collect()
}

/// Runs every case through `proxy` with each client protocol.
fn every_case(proxy: &Proxy, upstream: &str) {
    let base = &proxy.base;
    for (client, flag) in CLIENTS {
        let what = |case: &str| format!("{client} client, {upstream} upstream: {case}");

        // Bodies: by length, by chunks (an HTTP/1.0 client gets them by close), by close.
        for path in ["/body", "/chunked"] {
            let r = curl(&[flag, &format!("{base}{path}")]);
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "hello"),
                "{}",
                what(path)
            );
            if client == "HTTP/1.0" {
                assert_eq!(r.header("transfer-encoding"), None, "{}", what(path));
            }
        }

        // HEAD: the length of what GET would send, no body.
        let r = curl(&[flag, "-I", &format!("{base}/body")]);
        assert_eq!(r.status, 200, "{}", what("HEAD"));
        assert_eq!(r.header("content-length"), Some("5"), "{}", what("HEAD"));
        assert_eq!(r.body, "", "{}", what("HEAD"));

        // 204 and 304: no body, and no framing header that announces one.
        let r = curl(&[flag, &format!("{base}/204")]);
        assert_eq!((r.status, r.body.as_str()), (204, ""), "{}", what("204"));
        assert_eq!(r.header("transfer-encoding"), None, "{}", what("204"));
        assert_eq!(r.header("content-length"), None, "{}", what("204"));
        let r = curl(&[flag, &format!("{base}/304")]);
        assert_eq!((r.status, r.body.as_str()), (304, ""), "{}", what("304"));
        assert_eq!(r.header("etag"), Some("\"v1\""), "{}", what("304"));
        assert_eq!(r.header("transfer-encoding"), None, "{}", what("304"));

        // A request body.
        let r = curl(&[flag, "--data-binary", "abcde", &format!("{base}/upload")]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "got 5"),
            "{}",
            what("POST")
        );

        // Keep-alive survives every bodiless answer: later requests on the same connection
        // are answered.
        let paths = [
            "/204?1",
            "/body?2",
            "/304?3",
            "/body?4",
            "/chunked?5",
            "/body?6",
        ];
        let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
        match client {
            "HTTP/1.1" => {
                let got = statuses_and_connects(flag, &[], &urls);
                assert_eq!(
                    got,
                    [(204, 1), (200, 0), (304, 0), (200, 0), (200, 0), (200, 0)],
                    "{}",
                    what("one connection for six requests")
                );
                // `HEAD` (every path answers it as `HeadOfHello`) twice on one connection.
                let heads = statuses_and_connects(flag, &["-I"], &urls[..2]);
                assert_eq!(heads, [(200, 1), (200, 0)], "{}", what("HEAD then reuse"));
            }
            "HTTP/2" => {
                // curl 7.88 does not reuse a prior-knowledge connection; nghttp sends every
                // request on its one connection.
                let mut got = nghttp_statuses(&[], &urls);
                got.sort_unstable();
                assert_eq!(
                    got,
                    [200, 200, 200, 200, 204, 304],
                    "{}",
                    what("six streams")
                );
                let heads = nghttp_statuses(&["-H", ":method: HEAD"], &urls[..2]);
                assert_eq!(heads, [200, 200], "{}", what("HEAD streams"));
            }
            _ => {}
        }
    }

    // Expect: 100-continue from an HTTP/1.1 client: one interim 100, then the answer.
    let out = Command::new("curl")
        .args(["-s", "-v", "-i", "--max-time", "10", "--http1.1"])
        .args(["-H", "Expect: 100-continue", "--data-binary", "abcde"])
        .arg(format!("{base}/upload"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let continues = stdout.matches("HTTP/1.1 100 Continue").count();
    assert_eq!(
        continues, 1,
        "{upstream} upstream, Expect: 100-continue:\n{stdout}"
    );
    let last = stdout
        .rsplit("HTTP/1.1 100 Continue\r\n\r\n")
        .next()
        .unwrap();
    let r = parse(last.as_bytes());
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "got 5"),
        "{upstream} upstream, Expect"
    );
}

/// The walkthrough's step 2 (no token needed) in front of `addr` with `--upstream-protocol`.
fn proxy(addr: &str, protocol: &str) -> Proxy {
    step2_in_front_of(addr, &["--upstream-protocol", protocol], Stdout::Null)
}

#[test]
fn http10_upstream_with_every_client() {
    let addr = h1_upstream(true);
    every_case(&proxy(&addr, "http1"), "HTTP/1.0");
}

#[test]
fn http11_upstream_with_every_client() {
    let addr = h1_upstream(false);
    every_case(&proxy(&addr, "http1"), "HTTP/1.1");
}

#[test]
fn h2c_upstream_with_every_client() {
    let addr = h2c_upstream();
    every_case(&proxy(&addr, "h2c"), "h2c");
}

/// The response from the upstream is relayed as the client's protocol version, whatever the
/// upstream's: an HTTP/1.1 client of an HTTP/1.0 upstream keeps its connection.
#[test]
fn an_http10_upstream_does_not_close_an_http11_client() {
    let addr = h1_upstream(true);
    let p = proxy(&addr, "http1");
    let r: Response = curl(&["--http1.1", &format!("{}/body", p.base)]);
    assert!(
        r.headers
            .iter()
            .all(|(n, v)| !(n.eq_ignore_ascii_case("connection") && v == "close"))
    );
}
