#[tokio::test(flavor = "multi_thread")]
async fn run() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:18089").await.unwrap();
    let _ = meshguard_proxy::echo::serve(l, tokio::time::sleep(std::time::Duration::from_secs(40))).await;
}
