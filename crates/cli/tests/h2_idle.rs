//! HTTP/2 connections without a stream are closed at `--header-read-timeout`, on the proxy and
//! the admin listener, so that silent HTTP/2 clients cannot hold every `--max-connections`
//! slot; a connection whose stream is still being answered stays open. The real binary on
//! 127.0.0.1:0, HTTP/2 frames written and read raw over TCP (the frames are fixed bytes; the
//! one request header block is built from HPACK's static table).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod support;

use support::http::read_head;
use support::proxy::{Proxy, Stdout, step2_in_front_of};
use support::upstream::serve_with;

/// Starts the proxy in front of `upstream` with the walkthrough's step 2 (requests without a
/// token pass).
fn start(upstream: &str, extra: &[&str]) -> Proxy {
    // The upstream below speaks HTTP/1.1 only: HTTP/2 clients' requests go out as HTTP/1.1.
    let args = [&["--upstream-protocol", "http1"], extra].concat();
    step2_in_front_of(upstream, &args, Stdout::Null)
}

/// An upstream that answers every request `200 ok`, requests for `/slow` after `SLOW`.
fn upstream() -> String {
    serve_with(serve).0
}

/// How long the upstream takes to answer `/slow`: longer than the header read timeout and
/// the GOAWAY grace together.
const SLOW: Duration = Duration::from_millis(2500);

fn serve(mut s: TcpStream) {
    while let Some(head) = read_head(&mut s) {
        if head.starts_with("GET /slow ") {
            std::thread::sleep(SLOW);
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: all a client must send.
const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ACK: u8 = 1;

/// A frame: its type, flags, stream and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The header block of `GET {path}` with authority `x`: `:method GET` and `:scheme http`
/// from HPACK's static table (indexes 2 and 6), `:authority` and `:path` as literals without
/// indexing that name static entries 1 and 4.
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x01, 1, b'x', 0x04];
    b.push(u8::try_from(path.len()).unwrap());
    b.extend_from_slice(path.as_bytes());
    b
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Reads one frame; `None` when the server has closed the connection (FIN or reset). Fails
/// the test if nothing arrives before `deadline`.
fn read_frame(tcp: &mut TcpStream, deadline: Instant) -> Option<Frame> {
    let mut head = [0u8; 9];
    if !read_exact_by(tcp, &mut head, deadline) {
        return None;
    }
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    if !read_exact_by(tcp, &mut payload, deadline) {
        return None;
    }
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload,
    })
}

/// `false` when the connection ends (FIN or reset) first.
fn read_exact_by(tcp: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the connection is still open");
        tcp.set_read_timeout(Some(left)).unwrap();
        match tcp.read(&mut buf[filled..]) {
            Ok(0) => return false,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    true
}

/// Reads frames until the server closes the connection, within `deadline`; all frames read.
fn frames_until_closed(tcp: &mut TcpStream, deadline: Instant) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = read_frame(tcp, deadline) {
        frames.push(f);
    }
    frames
}

/// Asserts that `frames` hold a GOAWAY with `NO_ERROR`.
fn assert_goaway_no_error(frames: &[Frame]) {
    let goaway = frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    assert_eq!(goaway.payload[4..8], [0, 0, 0, 0], "NO_ERROR: {goaway:?}");
}

/// Two silent HTTP/2 connections fill `--max-connections 2`: one that sent only the preface
/// and SETTINGS, one whose header block never ends. Both get a GOAWAY and are closed between
/// one header read timeout and that plus the 1 s grace (and some slack) after connecting,
/// and the HTTP/1 request waiting behind them is answered.
fn silent_connections_are_closed(addr: &str, request: &str, expect: &str) {
    let started = Instant::now();
    let mut settings_only = TcpStream::connect(addr).unwrap();
    settings_only.write_all(PREFACE_AND_SETTINGS).unwrap();
    let mut unfinished = TcpStream::connect(addr).unwrap();
    unfinished.write_all(PREFACE_AND_SETTINGS).unwrap();
    // END_STREAM without END_HEADERS, and no CONTINUATION ever.
    unfinished
        .write_all(&frame(HEADERS, END_STREAM, 1, &[0x82, 0x86]))
        .unwrap();
    // Waits in the listen backlog until a slot is free.
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting.write_all(request.as_bytes()).unwrap();

    let by = started + Duration::from_millis(3500);
    for tcp in [&mut settings_only, &mut unfinished] {
        let frames = frames_until_closed(tcp, by);
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "closed after {:?}",
            started.elapsed()
        );
        assert_goaway_no_error(&frames);
    }
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    waiting
        .read_to_end(&mut answer)
        .expect("answered once the silent connections are closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with(expect), "{answer}");
}

#[test]
fn silent_http2_connections_are_closed_at_the_header_read_timeout() {
    let up = upstream();
    let proxy = start(
        &up,
        &["--max-connections", "2", "--header-read-timeout", "1s"],
    );
    silent_connections_are_closed(
        proxy.addr(),
        "GET /ip HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\n",
    );
}

#[test]
fn silent_http2_connections_to_the_admin_listener_are_closed_too() {
    let up = upstream();
    let proxy = start(
        &up,
        &["--max-connections", "2", "--header-read-timeout", "1s"],
    );
    silent_connections_are_closed(
        proxy.admin_addr(),
        "GET /healthz/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\n",
    );
}

/// A stream waiting for a slow upstream keeps its connection open past the timeout; the idle
/// time counts from the end of that stream, and a client that answers the GOAWAY's PING is
/// closed at once.
#[test]
fn a_connection_with_a_stream_in_progress_stays_open() {
    let up = upstream();
    let proxy = start(&up, &["--header-read-timeout", "1s"]);
    let started = Instant::now();
    let mut tcp = TcpStream::connect(proxy.addr()).unwrap();
    tcp.write_all(PREFACE_AND_SETTINGS).unwrap();
    tcp.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/slow"),
    ))
    .unwrap();
    let deadline = started + SLOW + Duration::from_secs(5);
    // The response, with no GOAWAY or RST_STREAM before it.
    let response = loop {
        let f = read_frame(&mut tcp, deadline).expect("the connection stays open");
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => {
                tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
            }
            HEADERS => break f,
            GOAWAY | RST_STREAM => panic!("before the response: {f:?}"),
            _ => {}
        }
    };
    let answered = Instant::now();
    assert!(answered - started >= SLOW, "{:?}", answered - started);
    assert_eq!(response.stream, 1);
    // `:status 200`, HPACK static index 8.
    assert_eq!(response.payload.first(), Some(&0x88), "{response:?}");
    // Then the body, the GOAWAY one timeout after the stream ended; the client answers the
    // PING that comes with it, and the connection closes.
    let mut frames = Vec::new();
    while let Some(f) = read_frame(&mut tcp, answered + Duration::from_secs(3)) {
        if f.kind == GOAWAY && !frames.iter().any(|f: &Frame| f.kind == GOAWAY) {
            let idle = answered.elapsed();
            assert!(
                idle >= Duration::from_millis(900) && idle < Duration::from_millis(1500),
                "GOAWAY {idle:?} after the response"
            );
        }
        if f.kind == PING && f.flags & ACK == 0 {
            tcp.write_all(&frame(PING, ACK, 0, &f.payload)).unwrap();
        }
        frames.push(f);
    }
    assert!(
        answered.elapsed() < Duration::from_millis(1900),
        "closed {:?} after the response, without the grace",
        answered.elapsed()
    );
    assert_goaway_no_error(&frames);
    assert!(
        frames
            .iter()
            .any(|f| f.stream == 1 && f.payload == b"ok" && f.flags & END_STREAM != 0),
        "{frames:?}"
    );
}
