//! `meshguard proxy` end to end against upstreams and clients that misbehave: the real binary
//! on 127.0.0.1:0, raw sockets on both sides (a client library would fix the request, an HTTP
//! server library the response).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod support;

use support::http::read_head;
use support::proxy::{Proxy, Stdout, step2_in_front_of};
use support::upstream::serve_with;

/// Starts the proxy in front of `upstream` with the walkthrough's step 2 (requests without a
/// token pass), its access log collected.
fn start(upstream: &str, extra: &[&str]) -> Proxy {
    step2_in_front_of(upstream, extra, Stdout::Collect)
}

/// The access-log lines written so far.
fn access_log(p: &Proxy) -> Vec<serde_json::Value> {
    p.stdout_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `n` access-log lines have been written.
fn wait_for_log_lines(p: &Proxy, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = access_log(p);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(p: &Proxy) -> String {
    curl(&["-s", &format!("{}/metrics", p.admin)])
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The metric's value, 0 when absent.
fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Sends `request` on a new connection and reads until the proxy closes it or stays silent
/// for `lull`.
fn exchange(addr: &str, request: &[u8], lull: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    read_all(&mut s, lull)
}

fn read_all(s: &mut TcpStream, lull: Duration) -> String {
    s.set_read_timeout(Some(lull)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client's chunked bodies that are not valid HTTP/1.1 framing.
const MALFORMED_BODIES: [&str; 6] = [
    "zz\r\nabc\r\n0\r\n\r\n",
    "-1\r\nabc\r\n0\r\n\r\n",
    "10000000000000003\r\nabc\r\n0\r\n\r\n",
    "3\nabc\r\n0\r\n\r\n",
    "3\r\nabc\n0\r\n\r\n",
    "3\r\nabcdef\r\n0\r\n\r\n",
];

#[test]
fn a_malformed_request_body_is_the_clients_400_not_an_upstream_failure() {
    // An upstream that reads request heads and answers once a whole body has arrived (it never
    // does here: each body is malformed).
    let (up, _) = serve_with(|mut s| {
        while read_head(&mut s).is_some() {
            let _ = read_all(&mut s, Duration::from_secs(30));
        }
    });
    let p = start(&up, &[]);
    for body in MALFORMED_BODIES {
        let request =
            format!("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let t = Instant::now();
        let answer = exchange(p.addr(), request.as_bytes(), Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{body:?}: {answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nBad Request"),
            "{body:?}: {answer}"
        );
        assert!(
            answer.contains("\r\nconnection: close\r\n"),
            "{body:?}: {answer}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{body:?}: the answer waited"
        );
    }
    let lines = wait_for_log_lines(&p, MALFORMED_BODIES.len());
    assert_eq!(lines.len(), MALFORMED_BODIES.len());
    for l in &lines {
        assert_eq!(l["response_code"], 400, "{l}");
        assert_eq!(l["response_code_details"], "http1.codec_error", "{l}");
    }
    let metrics = metrics(&p);
    assert!(
        !metrics.contains("meshguard_upstream_errors_total{"),
        "counted as upstream errors:\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, "meshguard_requests_total{code=\"400\"}"),
        6
    );
    let stderr = p.stderr_text();
    assert!(!stderr.contains("upstream failed"), "{stderr}");
}

#[test]
fn a_malformed_request_body_after_the_upstream_answered_resets_the_response() {
    // An upstream that answers at once with a streamed body, then reads the request body.
    let (up, _) = serve_with(|mut s| {
        if read_head(&mut s).is_some() {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            let _ = read_all(&mut s, Duration::from_secs(30));
            let _ = s.write_all(b"0\r\n\r\n");
        }
    });
    let p = start(&up, &[]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .unwrap();
    // The head and the first chunk are relayed before the body goes wrong.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("hello\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"zz\r\nabc\r\n0\r\n\r\n").unwrap();
    let t = Instant::now();
    let rest = read_all(&mut s, Duration::from_secs(10));
    let whole = format!("{}{rest}", String::from_utf8_lossy(&got));
    assert!(whole.starts_with("HTTP/1.1 200 OK\r\n"), "{whole}");
    // No terminating chunk and no second answer: the response is cut off, so the client
    // knows it is incomplete.
    assert!(!whole.contains("0\r\n\r\n"), "{whole}");
    assert!(!whole.contains("400"), "{whole}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the connection was not closed"
    );
}

#[test]
fn the_upstream_timeout_counts_from_the_end_of_a_slow_upload() {
    // An upstream that reads the whole body, then answers with its size; or never, for
    // `/hang`.
    let (up, _) = serve_with(|mut s| {
        while let Some(head) = read_head(&mut s) {
            let mut body = vec![0u8; content_length(&head)];
            if s.read_exact(&mut body).is_err() {
                return;
            }
            if head.starts_with("POST /hang ") {
                let _ = read_all(&mut s, Duration::from_secs(30));
                return;
            }
            let answer = format!("got {}", body.len());
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    let p = start(&up, &["--upstream-timeout", "1s"]);
    // 1000 bytes over about 2.5 s: longer than the upstream timeout.
    let upload = |path: &str| {
        let mut s = TcpStream::connect(p.addr()).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        )
        .unwrap();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(250));
            s.write_all(&[b'x'; 100]).unwrap();
        }
        let sent = Instant::now();
        (read_all(&mut s, Duration::from_secs(1)), sent.elapsed())
    };
    let (answer, _) = upload("/upload");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\ngot 1000"), "{answer}");

    // Once the request is complete, the timer runs: an upstream that never answers gets 504
    // about a second after the last byte.
    let (answer, after_last_byte) = upload("/hang");
    assert!(
        answer.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("upstream request timeout"), "{answer}");
    assert!(
        after_last_byte >= Duration::from_millis(900) && after_last_byte < Duration::from_secs(3),
        "{after_last_byte:?}"
    );
}

#[test]
fn a_response_with_content_length_and_transfer_encoding_is_refused() {
    // The upstream's answer is framed both ways: `Content-Length: 5` and a chunked `ok`.
    let (up, _) = serve_with(|mut s| {
        while read_head(&mut s).is_some() {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            );
        }
    });
    let p = start(&up, &[]);
    let answer = exchange(
        p.addr(),
        b"GET /both HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with(
            "\r\n\r\nupstream connect error or disconnect/reset before headers. reset reason: protocol error"
        ),
        "{answer}"
    );
    let lines = wait_for_log_lines(&p, 1);
    assert_eq!(
        lines[0]["response_code_details"],
        "upstream_reset_before_response_started{protocol_error}"
    );
    assert_eq!(
        metric(
            &metrics(&p),
            "meshguard_upstream_errors_total{result=\"protocol\"}"
        ),
        1
    );
}

#[test]
fn an_http_1_0_upstream_does_not_downgrade_http_1_1_clients() {
    // An HTTP/1.0 server: one answer per connection, then close (as `python3 -m http.server`).
    let (up, _) = serve_with(|mut s| {
        if read_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let _ = s.shutdown(Shutdown::Both);
        }
    });
    let p = start(&up, &[]);
    let base = p.base.clone();
    // Two requests in one curl: both HTTP/1.1, the second on the first one's connection.
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code} %{num_connects}\n",
        &format!("{base}/a"),
        &format!("{base}/b"),
    ]);
    assert_eq!(out, "1.1 200 1\n1.1 200 0\n");
    // The same on the wire: the status line says HTTP/1.1 and the connection stays open.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    s.write_all(b"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let second = read_all(&mut s, Duration::from_secs(10));
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
}

/// The requests waiting for a connection have their own bound (1,024 by default, Envoy's
/// `max_pending_requests`), not the connection bound: with one connection, twelve requests at
/// once all wait their turn and are answered (eleven of them were refused with 503 when the
/// queue was as long as the connection bound).
#[test]
fn requests_wait_for_a_connection_beyond_the_connection_bound() {
    let (up, accepted) = serve_with(|mut s| {
        while let Some(_head) = read_head(&mut s) {
            std::thread::sleep(Duration::from_millis(50));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = start(&up, &["--max-upstream-connections", "1"]);
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..12 {
        let addr = p.addr().to_string();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let request =
                format!("GET /q HTTP/1.1\r\nHost: x\r\nX-N: {i}\r\nConnection: close\r\n\r\n");
            tx.send(exchange(&addr, request.as_bytes(), Duration::from_secs(10)))
                .unwrap();
        });
    }
    for _ in 0..12 {
        let a = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
}

#[test]
fn upstream_connections_are_bounded_and_the_overflow_gets_503() {
    // An upstream that never answers `/hang` and answers anything else at once.
    let (up, accepted) = serve_with(|mut s| {
        while let Some(head) = read_head(&mut s) {
            if head.starts_with("GET /hang ") {
                let _ = read_all(&mut s, Duration::from_secs(30));
                return;
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = start(
        &up,
        &[
            "--max-upstream-connections",
            "2",
            "--max-pending-upstream-requests",
            "2",
            "--upstream-timeout",
            "3s",
        ],
    );
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..10 {
        let addr = p.addr().to_string();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let request =
                format!("GET /hang HTTP/1.1\r\nHost: x\r\nX-N: {i}\r\nConnection: close\r\n\r\n");
            let answer = exchange(&addr, request.as_bytes(), Duration::from_secs(10));
            tx.send((answer, t.elapsed())).unwrap();
        });
    }
    // Two requests hold the two connections, two wait for one (the pending queue), six are
    // refused at once.
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(rx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    for (a, at) in &answers {
        assert!(a.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{a}");
        assert!(
            a.ends_with(
                "\r\n\r\nupstream connect error or disconnect/reset before headers. reset reason: overflow"
            ),
            "{a}"
        );
        assert!(*at < Duration::from_secs(1), "the overflow waited {at:?}");
    }
    // Until the upstream timeout (3 s), the upstream sees exactly the two connections.
    let deadline = Duration::from_millis(2500);
    while accepted.load(Ordering::SeqCst) < 2 && t.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert!(t.elapsed() < deadline);
    // Then the four that held or waited for a connection time out.
    for _ in 0..4 {
        let (a, at) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(a.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"), "{a}");
        assert!(at >= Duration::from_secs(3), "{at:?}");
    }
    let metrics = metrics(&p);
    assert_eq!(
        metric(
            &metrics,
            "meshguard_upstream_errors_total{result=\"overflow\"}"
        ),
        6
    );
    assert_eq!(
        metric(
            &metrics,
            "meshguard_upstream_errors_total{result=\"timeout\"}"
        ),
        4
    );
    let lines = wait_for_log_lines(&p, 10);
    let details: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["response_code_details"].as_str())
        .filter(|d| *d == "upstream_reset_before_response_started{overflow}")
        .collect();
    assert_eq!(details.len(), 6);

    // The timed-out requests gave their connections up: the next request gets one.
    let answer = exchange(
        p.addr(),
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[test]
fn a_request_body_that_stalls_gets_408_and_frees_the_upstream_connection() {
    // An upstream that reads whole bodies and answers with their size.
    let (up, accepted) = serve_with(|mut s| {
        while let Some(head) = read_head(&mut s) {
            let mut body = vec![0u8; content_length(&head)];
            if s.read_exact(&mut body).is_err() {
                return;
            }
            let answer = format!("got {}", body.len());
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    let p = start(
        &up,
        &[
            "--header-read-timeout",
            "1s",
            "--max-upstream-connections",
            "1",
        ],
    );
    // 10 of 1000 bytes, then silence: cut off one header read timeout later, with Envoy's
    // `stream_idle_timeout` answer, and the connection closed.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .unwrap();
    let t = Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(10));
    let took = t.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nstream timeout"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let lines = wait_for_log_lines(&p, 1);
    assert_eq!(lines[0]["response_code_details"], "stream_idle_timeout");
    assert!(!metrics(&p).contains("meshguard_upstream_errors_total{"));
    // The one upstream connection was given back: the next upload gets it (or a new one).
    let answer = exchange(
        p.addr(),
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        Duration::from_secs(10),
    );
    assert!(answer.ends_with("\r\n\r\ngot 3"), "{answer}");
    assert!(accepted.load(Ordering::SeqCst) <= 2);
}

/// An upstream that takes the request and closes (or resets) the connection without
/// answering gets Envoy 1.40's answer: 503 `connection termination` (response flag UC), not a
/// 502 protocol error, which is for an answer that is not HTTP.
#[test]
fn an_upstream_that_closes_or_resets_before_answering_is_a_connection_termination() {
    for reset in [false, true] {
        let (up, _) = serve_with(move |mut s| {
            if read_head(&mut s).is_some() && reset {
                // SO_LINGER 0: the close sends a reset.
                let _ = socket2_reset(&s);
            }
        });
        let p = start(&up, &[]);
        let answer = exchange(
            p.addr(),
            b"GET /gone HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        );
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "reset {reset}: {answer}"
        );
        assert!(
            answer.ends_with(
                "\r\n\r\nupstream connect error or disconnect/reset before headers. reset reason: connection termination"
            ),
            "reset {reset}: {answer}"
        );
        let lines = wait_for_log_lines(&p, 1);
        assert_eq!(
            lines[0]["response_code_details"],
            "upstream_reset_before_response_started{connection_termination}"
        );
        assert_eq!(
            metric(
                &metrics(&p),
                "meshguard_upstream_errors_total{result=\"closed\"}"
            ),
            1
        );
    }
    // An answer that is not HTTP stays a protocol error.
    let (up, _) = serve_with(|mut s| {
        if read_head(&mut s).is_some() {
            let _ = s.write_all(b"NOT HTTP\r\n\r\n");
        }
    });
    let p = start(&up, &[]);
    let answer = exchange(
        p.addr(),
        b"GET /garbage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("reset reason: protocol error"), "{answer}");
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
fn socket2_reset(s: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(s).set_linger(Some(Duration::ZERO))
}
