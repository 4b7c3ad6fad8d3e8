//! The echo upstream over real sockets: `curl` as the client (HTTP/1.1 and HTTP/2 with prior
//! knowledge), raw TCP for the shutdown cases.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshguard_echo as echo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running echo server and the means to stop it.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(echo::serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits for `serve` to return; panics if it takes longer than `limit`.
    async fn shutdown(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(limit, &mut self.task)
            .await
            .expect("serve ended in time")
            .expect("serve task did not panic");
        result.expect("serve returned Ok");
    }
}

/// What curl saw: status, negotiated HTTP version, response headers (lowercase names), body.
#[derive(Debug)]
struct CurlAnswer {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl CurlAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert!(
            self.body.ends_with(b"}\n"),
            "pretty JSON with a trailing newline: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Runs curl with `args` (plus `--http1.1` or `--http2-prior-knowledge`) on a blocking thread.
async fn curl(http2: bool, args: &[&str], stdin: Option<Vec<u8>>) -> CurlAnswer {
    let dir = std::env::temp_dir();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "meshguard-echo-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let headers_file = dir.join(format!("{unique}.headers"));
    let mut command = Command::new("curl");
    command
        .arg(if http2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        })
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--dump-header")
        .arg(&headers_file)
        .args(["--write-out", "\n%{http_code} %{http_version}"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output: Output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("curl is installed");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            // The server may answer (413) before reading it all: ignore broken pipes.
            let _ = pipe.write_all(&input);
        }
        child.wait_with_output().expect("curl ran")
    })
    .await
    .expect("curl thread");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let raw_headers = std::fs::read_to_string(&headers_file).unwrap_or_default();
    let _ = std::fs::remove_file(&headers_file);
    let headers = raw_headers
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();

    let stdout = output.stdout;
    let split = stdout
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("write-out line");
    let trailer = String::from_utf8_lossy(&stdout[split + 1..]).into_owned();
    let (status, version) = trailer.split_once(' ').expect("status and version");
    CurlAnswer {
        status: status.parse().expect("status code"),
        version: version.to_owned(),
        headers,
        body: stdout[..split].to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_over_http1_and_http2() {
    let server = Server::start().await;
    for http2 in [false, true] {
        let url = server.url("/get?a=1&a=2&b=x");
        let answer = curl(
            http2,
            &["-H", "X-Test: one", "-H", "X-Test: two", url.as_str()],
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.version, if http2 { "2" } else { "1.1" });
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            answer.header("access-control-allow-credentials"),
            Some("true")
        );
        let doc = answer.json();
        assert_eq!(doc["method"], "GET");
        assert_eq!(doc["path"], "/get?a=1&a=2&b=x");
        assert_eq!(doc["args"], json!({"a": ["1", "2"], "b": "x"}));
        assert_eq!(doc["origin"], "127.0.0.1");
        assert_eq!(doc["headers"]["x-test"], "one,two");
        assert!(
            doc["headers"]["user-agent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("curl/"))
        );
        assert_eq!(doc["url"], url);
        if !http2 {
            assert_eq!(doc["headers"]["host"], server.addr.to_string());
        }
    }
    server.shutdown(Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anything_status_head_and_413() {
    let server = Server::start().await;
    for http2 in [false, true] {
        let url = server.url("/anything/x?y=z");
        let answer = curl(
            http2,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data-binary",
                r#"{"hello": "world"}"#,
                url.as_str(),
            ],
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        let doc = answer.json();
        assert_eq!(doc["method"], "POST");
        assert_eq!(doc["path"], "/anything/x?y=z");
        assert_eq!(doc["data"], r#"{"hello": "world"}"#);
        assert_eq!(doc["json"], json!({"hello": "world"}));
        assert_eq!(doc["headers"]["content-type"], "application/json");

        let url = server.url("/status/418");
        let answer = curl(http2, &[url.as_str()], None).await;
        assert_eq!(answer.status, 418);
        assert_eq!(answer.json()["path"], "/status/418");

        let url = server.url("/status/204");
        let answer = curl(http2, &[url.as_str()], None).await;
        assert_eq!(answer.status, 204);
        assert!(answer.body.is_empty());

        // hyper cannot send a 1xx as the final answer: serve says so.
        let url = server.url("/status/101");
        let answer = curl(http2, &[url.as_str()], None).await;
        assert_eq!(answer.status, 501);

        let url = server.url("/status/abc");
        let answer = curl(http2, &[url.as_str()], None).await;
        assert_eq!(answer.status, 400);

        let url = server.url("/headers");
        let answer = curl(http2, &["--head", url.as_str()], None).await;
        assert_eq!(answer.status, 200);
        // With --head, curl prints the response head where the body would be.
        assert!(answer.body.starts_with(b"HTTP/"));
        assert!(!answer.body.contains(&b'{'), "no body after HEAD");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(
            answer
                .header("content-length")
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|l| l > 0)
        );

        let url = server.url("/anything");
        let answer = curl(
            http2,
            &["--data-binary", "@-", url.as_str()],
            Some(vec![b'z'; echo::MAX_BODY + 1]),
        )
        .await;
        assert_eq!(answer.status, 413);
        assert!(!answer.body.is_empty());
    }
    server.shutdown(Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_errors_do_not_end_the_server() {
    let server = Server::start().await;
    let mut garbage = TcpStream::connect(server.addr).await.expect("connect");
    garbage
        .write_all(b"\x00\x01 not http at all\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut sink)).await;
    drop(garbage);
    // Connect and drop at once, too.
    drop(TcpStream::connect(server.addr).await.expect("connect"));

    let url = server.url("/ip");
    let answer = curl(false, &[url.as_str()], None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["origin"], "127.0.0.1");
    server.shutdown(Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let server = Server::start().await;
    let addr = server.addr;
    // An idle keep-alive connection must not hold shutdown up.
    let idle = TcpStream::connect(addr).await.expect("connect");

    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(
        b"POST /anything HTTP/1.1\r\nhost: echo.test\r\ncontent-length: 10\r\n\r\nhello",
    )
    .await
    .expect("write head");
    // Let the server start on the request before shutting down.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let Server { stop, mut task, .. } = server;
    stop.expect("stop sender")
        .send(())
        .expect("serve is running");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "serve waits for the in-flight request");
    // New connections are refused once shutdown has begun.
    assert!(TcpStream::connect(addr).await.is_err());

    conn.write_all(b"world").await.expect("write rest of body");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\"data\": \"helloworld\""), "{response}");

    let result = tokio::time::timeout(Duration::from_secs(5), &mut task)
        .await
        .expect("serve ended after the in-flight request")
        .expect("serve task did not panic");
    result.expect("serve returned Ok");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_is_bounded() {
    let server = Server::start().await;
    let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
    stuck
        .write_all(b"POST /anything HTTP/1.1\r\nhost: echo.test\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.shutdown(Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "{took:?}"
    );
    drop(stuck);
}
