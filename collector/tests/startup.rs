//! Start-up with the broker down: the admin port answers, `/readyz` says
//! why the service is not ready, SIGTERM stops it within seconds, and it
//! becomes ready by itself once a broker listens (admin port 21610).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_serving_its_admin_port_and_waits_for_the_broker() {
    mlwatch_testkit::startup::assert_waits_for_broker(
        env!("CARGO_BIN_EXE_mlwatch-collector"),
        21610,
        "[http]\nlisten = \"127.0.0.1:0\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
}
