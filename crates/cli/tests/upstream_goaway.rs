//! End-to-end: an HTTP/2 upstream that goes away in the middle of many concurrent POSTs
//! (docs/architecture.md, "Upstream"). A GOAWAY's last stream id splits the requests in flight:
//! those at or below it were processed and are answered on their connection; those above it
//! were not, and meshguard sends them again, bodies included, on a new connection. Each body
//! must reach the upstream exactly once (a POST delivered twice is a real bug), and every
//! client must get its own answer.
//!
//! The upstream is Python `h2` driven frame by frame (the script below), so that the GOAWAY
//! comes at a chosen point: after half of the requests' HEADERS arrived on the first
//! connection, with the last stream id in the middle of those.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};

use support::fs::tmp;
use support::proxy::{Proxy, Stdout, proxy_command, spawn};

/// The upstream (a thread per connection): `python - MODE REQUESTS`. On its first connection
/// it goes away:
/// - `answer`: once REQUESTS / 2 requests arrived, GOAWAY with the (REQUESTS / 4)-th lowest of
///   their stream ids as the last one processed; it answers the streams at or below it, never
///   the others, and keeps the connection until meshguard closes it;
/// - `close`: the same, then closes (a FIN) right after those answers;
/// - `graceful`: as soon as the first request arrives, as RFC 9113 §6.8 advises, GOAWAY with
///   the largest stream id and a PING, then, once the PING is acknowledged, GOAWAY with the
///   largest id received (every request meshguard sent until it saw the first GOAWAY is
///   processed), and answers those.
///
/// Later connections answer every request. A request is named by its body, or by its `?n=`
/// when it has none; the answer is the name. Prints `listening PORT`, `goaway LAST covering
/// COUNT` (how many streams the GOAWAY leaves to be processed), then `processed NAME on
/// CONNECTION` for each request answered (the delivery count) and `ignored NAME` for each one
/// received whole above the last stream id.
const UPSTREAM: &str = r#"
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events
import hyperframe.frame

MODE, REQUESTS = sys.argv[1], int(sys.argv[2])
PRINTING = threading.Lock()


def say(*words):
    with PRINTING:
        print(*words, flush=True)


def linger_close(sock):
    # Closing with unread input would reset the connection and could drop what was sent.
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()


def answer(conn, stream_id, name, number):
    conn.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(name)))])
    conn.send_data(stream_id, name.encode(), end_stream=True)
    say("processed", name, "on", number)


def goaway(last):
    frame = hyperframe.frame.GoAwayFrame(0)
    frame.last_stream_id = last
    frame.error_code = 0
    return frame.serialize()


def serve(sock, first, number):
    try:
        serve_connection(sock, first, number)
    except OSError:
        # meshguard closed the connection: nothing more to send there.
        sock.close()


def serve_connection(sock, first, number):
    config = h2.config.H2Configuration(client_side=False)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    # A request is named by its body, or by its query when it has none.
    names, bodies, ids, ended, answered = {}, {}, [], [], set()
    last = None
    pinged = announced = False
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            sock.close()
            return
        acked = False
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers)[b":path"].decode()
                names[event.stream_id] = path.partition("?n=")[2]
                bodies[event.stream_id] = b""
                ids.append(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if bodies[event.stream_id]:
                    names[event.stream_id] = bodies[event.stream_id].decode()
                ended.append(event.stream_id)
            elif isinstance(event, h2.events.PingAckReceived):
                acked = True
        out = conn.data_to_send()
        if MODE == "graceful" and first and ids and not pinged:
            # RFC 9113 6.8: GOAWAY with the largest id, a PING, then the real last id.
            out += goaway(2**31 - 1)
            conn.ping(b"goingawy")
            out += conn.data_to_send()
            pinged = True
            say("goaway", 2**31 - 1)
        elif MODE != "graceful" and first and last is None and len(ids) >= REQUESTS // 2:
            last = sorted(ids)[REQUESTS // 4 - 1]
        if first and pinged and acked and last is None:
            last = max(ids)
        if first and last is not None and not announced:
            out += goaway(last)
            announced = True
            say("goaway", last, "covering", len([s for s in ids if s <= last]))
        sock.sendall(out)
        for sid in ended:
            if sid in answered:
                continue
            if not first or (last is not None and sid <= last):
                answer(conn, sid, names[sid], number)
                answered.add(sid)
            elif last is not None:
                say("ignored", names[sid])
                answered.add(sid)
        sock.sendall(conn.data_to_send())
        covered = [s for s in ids if last is not None and s <= last]
        if first and MODE == "close" and last is not None and all(s in answered for s in covered):
            linger_close(sock)
            return


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    say("listening", listener.getsockname()[1])
    number = 0
    while True:
        sock, _ = listener.accept()
        number += 1
        threading.Thread(target=serve, args=(sock, number == 1, number), daemon=True).start()


main()
"#;

/// The upstream process, killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
}

impl Upstream {
    fn start(python: &str, mode: &str, requests: usize) -> Upstream {
        let mut child = Command::new(python)
            .args(["-c", UPSTREAM, mode, &requests.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The first line only, byte by byte: the rest stays in the pipe for `lines`.
        let out = child.stdout.as_mut().unwrap();
        let mut first = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            first.push(b[0]);
        }
        let first = String::from_utf8(first).unwrap();
        let port = first
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{first:?}"))
            .parse()
            .unwrap();
        Upstream { child, port }
    }

    /// Everything it printed, once stopped.
    fn lines(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy(port: u16) -> Proxy {
    spawn(
        proxy_command()
            .args(["--policies", "examples/step2-request-authentication"])
            .args(["--namespace", "foo", "--labels", "app=httpbin"])
            .args(["--upstream", &format!("http://127.0.0.1:{port}")])
            .args(["--upstream-protocol", "h2c"]),
        Stdout::Collect,
    )
}

/// `n` concurrent POSTs named `post-00`, `post-01`, ... (one curl, `--parallel`): the even ones
/// with their name as their body, the odd ones without a body (`content-length: 0`, so that
/// their HEADERS end their stream) and their name in the query. Each answer is written to a
/// file of its own: (status, answer body) per request, in order.
fn posts(proxy: &Proxy, n: usize, dir: &str) -> Vec<(u16, String)> {
    let scratch = tmp(dir);
    let url = format!("{}/post", proxy.base);
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "20",
        "--parallel",
        "--parallel-immediate",
    ])
    .args(["--parallel-max", &n.to_string()]);
    for i in 0..n {
        if i > 0 {
            cmd.arg("--next");
        }
        let out = scratch.join(format!("{i:02}"));
        let (body, url) = if i % 2 == 0 {
            (format!("post-{i:02}"), url.clone())
        } else {
            (String::new(), format!("{url}?n=post-{i:02}"))
        };
        cmd.args(["-w", &format!("{i} %{{http_code}}\n"), "-d", &body, "-o"])
            .arg(out)
            .arg(url);
    }
    let out = cmd.output().unwrap();
    // curl writes `-w` in completion order, each line led by the request's index.
    let mut answers = vec![(0, String::new()); n];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (i, status) = line.split_once(' ').unwrap();
        let i: usize = i.parse().unwrap();
        let body = std::fs::read_to_string(scratch.join(format!("{i:02}"))).unwrap_or_default();
        answers[i] = (status.parse().unwrap(), body);
    }
    answers
}

/// The GOAWAY case `mode`: every client answered with its own name, each request processed
/// exactly once.
fn goaway_in_the_middle(test: &str, mode: &str) {
    const N: usize = 24;
    let Some(python) = support::python::python_with(test, "h2, hyperframe") else {
        return;
    };
    let up = Upstream::start(&python, mode, N);
    let p = proxy(up.port);
    let answers = posts(&p, N, test);
    let lines = up.lines();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(
        statuses,
        vec![200; N],
        "{answers:?}\n{lines:?}\n{}",
        p.stderr_text()
    );
    for (i, (_, body)) in answers.iter().enumerate() {
        assert_eq!(body, &format!("post-{i:02}"), "{answers:?}");
    }
    // (body, connection) for each delivery.
    let processed: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("processed ")?.split_once(" on "))
        .collect();
    let mut bodies: Vec<&str> = processed.iter().map(|p| p.0).collect();
    bodies.sort_unstable();
    let expected: Vec<String> = (0..N).map(|i| format!("post-{i:02}")).collect();
    assert_eq!(
        bodies, expected,
        "each request delivered exactly once\n{lines:?}"
    );
    // The GOAWAY came in the middle: the streams it covered were processed on the first
    // connection, every other request on a later one.
    let covering: usize = lines
        .iter()
        .find_map(|l| l.split_once(" covering ")?.1.parse().ok())
        .unwrap_or_else(|| panic!("no last GOAWAY\n{lines:?}"));
    assert!((1..=N).contains(&covering), "{lines:?}");
    let on_first = processed.iter().filter(|p| p.1 == "1").count();
    assert_eq!(on_first, covering, "{lines:?}");
}

#[test]
fn a_goaway_in_the_middle_of_concurrent_posts_delivers_each_once() {
    goaway_in_the_middle(
        "a_goaway_in_the_middle_of_concurrent_posts_delivers_each_once",
        "answer",
    );
}

#[test]
fn a_goaway_then_a_close_after_the_answers_delivers_each_once() {
    goaway_in_the_middle(
        "a_goaway_then_a_close_after_the_answers_delivers_each_once",
        "close",
    );
}

/// Requests opened between the upstream's first GOAWAY (the largest stream id) and its last
/// one are processed: none of them is sent again (a request without a body is processed as
/// soon as its HEADERS arrive, so one sent again would be delivered twice).
///
/// A request sent again there comes from a race (the first GOAWAY arriving while the request
/// is being handed to the connection), hence several rounds.
#[test]
fn a_graceful_two_step_goaway_delivers_each_once() {
    for _ in 0..5 {
        goaway_in_the_middle("a_graceful_two_step_goaway_delivers_each_once", "graceful");
    }
}
