//! The `ServingControl` client over TLS and mutual TLS, against the
//! simulated platform served by tonic with rustls. The PKI is in
//! `tests/fixtures/tls` (made by its `gen.sh`).

mod support;

use std::path::PathBuf;

use mlwatch_proto::v1::ScaleRequest;
use mlwatch_remediator::serving::{Serving, TlsConfig};
use mlwatch_testkit::sim::{ModelSim, SimPlatform};
use support::*;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

fn fixture_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture_file(name)).expect("fixture")
}

fn server_tls(mutual: bool) -> ServerTlsConfig {
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(pem("server.pem"), pem("server-key.pem")));
    if mutual {
        tls.client_ca_root(Certificate::from_pem(pem("ca.pem")))
    } else {
        tls
    }
}

fn client_tls(identity: bool) -> TlsConfig {
    TlsConfig {
        ca_file: Some(fixture_file("ca.pem")),
        cert_file: identity.then(|| fixture_file("client.pem")),
        key_file: identity.then(|| fixture_file("client-key.pem")),
        domain_name: Some("localhost".into()),
    }
}

async fn tls_platform(mutual: bool) -> (SimPlatform, String, mlwatch_common::shutdown::CancellationToken) {
    init_logs();
    let shutdown = mlwatch_common::shutdown::CancellationToken::new();
    let sim = SimPlatform::default();
    sim.add_model(ModelSim::new("fraud", "v3", 2, 50.0));
    let (addr, _task) = sim
        .serve_tls(loopback(), server_tls(mutual), shutdown.clone())
        .await
        .expect("tls platform serves");
    (sim, format!("https://{addr}"), shutdown)
}

fn scale(id: &str) -> ScaleRequest {
    ScaleRequest {
        request_id: id.into(),
        model: "fraud".into(),
        replicas: 3,
        reason: "test".into(),
    }
}

const DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let (sim, endpoint, shutdown) = tls_platform(false).await;
    let client = Serving::connect_lazy(&endpoint, DEADLINE, &client_tls(false)).expect("client");
    assert_eq!(client.get_deployment("fraud").await.expect("over tls").replicas, 2);
    // Without the CA the platform's certificate is not trusted.
    let untrusting = Serving::connect_lazy(
        &endpoint,
        DEADLINE,
        &TlsConfig {
            domain_name: Some("localhost".into()),
            ..Default::default()
        },
    )
    .expect("client");
    assert!(untrusting.get_deployment("fraud").await.is_err());
    assert!(sim.calls().is_empty());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let (sim, endpoint, shutdown) = tls_platform(true).await;
    let anonymous = Serving::connect_lazy(&endpoint, DEADLINE, &client_tls(false)).expect("client");
    assert!(anonymous.scale(scale("r-anon")).await.is_err());
    assert!(sim.calls().is_empty());
    let client = Serving::connect_lazy(&endpoint, DEADLINE, &client_tls(true)).expect("client");
    let r = client.scale(scale("r-1")).await.expect("over mtls");
    assert_eq!(r.deployment.expect("deployment").replicas, 3);
    // The request id travels: the same id again is a duplicate.
    assert!(client.scale(scale("r-1")).await.expect("over mtls").duplicate);
    assert_eq!(sim.applied_calls().len(), 1);
    shutdown.cancel();
}
