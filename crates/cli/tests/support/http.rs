//! HTTP/1.1 clients for the tests: raw bytes over TCP (where a client library would fix or
//! refuse the request) and curl, with one parser for what comes back.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::Duration;

/// A response: the status, the header fields in order, the body (lossy UTF-8).
#[derive(Debug)]
pub struct Response {
    /// 0 when the connection closed without a response head ([`exchange`] only).
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// The status line's code and the header fields of a head (without the blank line).
fn parse_head(head: &str) -> (Option<u16>, Vec<(String, String)>) {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// One whole response as received (head, blank line, body); panics when there is none.
pub fn parse(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let (status, headers) = parse_head(head);
    Response {
        status: status.unwrap_or_else(|| panic!("bad status line: {head:?}")),
        headers,
        body: body.to_string(),
    }
}

/// `curl -s -i --max-time 20 ARGS`: the response it got.
pub fn curl(args: &[&str]) -> Response {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    parse(&out.stdout)
}

/// `curl -s --max-time 20 -w '\n%{http_code}' ARGS`: (status, body).
pub fn curl_status(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// Sends raw bytes on a new connection and reads one response: the head, then a
/// `content-length` body (10 s at most for each read). Status 0 when the connection closes
/// (or stays silent) before a whole head.
pub fn exchange(addr: &str, request: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                return Response {
                    status: 0,
                    headers: Vec::new(),
                    body: String::from_utf8_lossy(&buf).into_owned(),
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let (status, headers) = parse_head(&String::from_utf8_lossy(&buf[..head_end]));
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Response {
        status: status.unwrap_or(0),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends raw bytes on a new connection and reads until the server closes it, `timeout` at
/// most per read: everything received (lossy UTF-8).
pub fn until_closed(addr: impl ToSocketAddrs, request: &[u8], timeout: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(timeout)).unwrap();
    tcp.write_all(request).unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not answered within {timeout:?}: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request or response head, byte by byte (so nothing after it is consumed);
/// `None` when the connection ends first.
pub fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
