//! Bearer tokens and TLS on both front ends of a real collector: HTTPS and
//! gRPC over TLS (rustls) with a private CA, several tokens accepted, a
//! missing or wrong token refused (401 / UNAUTHENTICATED), and no token in
//! any answer or metric.

mod support;

use std::path::PathBuf;

use mlwatch_collector::client::{Client, ClientConfig, Kind};
use mlwatch_collector::security::{Secret, TlsConfig};
use mlwatch_proto::v1::collector_client::CollectorClient;
use mlwatch_proto::v1::{InferenceEvent, IngestInferencesRequest};
use serde_json::json;
use support::TestCollector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_tls_guard_http_and_grpc() {
    let tls = TlsConfig {
        cert_path: fixture("server.pem"),
        key_path: fixture("server.key"),
    };
    let collector = TestCollector::start("security", |c| {
        c.auth.bearer_tokens = vec![Secret::new("team-a-s3cret"), Secret::new("team-b-s3cret")];
        c.http.tls = Some(tls.clone());
        c.grpc.tls = Some(tls.clone());
    })
    .await;
    let ca = std::fs::read(fixture("ca.pem")).unwrap();
    let base = format!("https://localhost:{}", collector.running.http_addr.port());
    let url = format!("{base}/v1/inferences");
    let event = json!({"event_id": "t1", "model": "fraud", "latency_ms": 3.0});

    // HTTPS: no token, a wrong token, a token with a wrong scheme: 401.
    let https = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    for auth in [None, Some("Bearer team-c-s3cret"), Some("Basic team-a-s3cret")] {
        let mut request = https.post(&url).json(&event);
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body = r.text().await.unwrap();
        assert!(!body.contains("s3cret"), "{body}");
    }
    // Plain HTTP to the TLS listener gets no answer.
    let plain = format!("http://{}/v1/inferences", collector.running.http_addr);
    assert!(reqwest::Client::new().post(&plain).json(&event).send().await.is_err());

    // Both tokens work, through the Rust client over HTTPS.
    for token in ["team-a-s3cret", "team-b-s3cret"] {
        let mut config = ClientConfig::new(&base);
        config.token = Some(Secret::new(token));
        config.root_ca_pem = Some(ca.clone());
        let client = Client::new(config).unwrap();
        let summary = client
            .send(Kind::Inferences, std::slice::from_ref(&event))
            .await
            .unwrap();
        assert_eq!(summary.accepted, 1);
    }

    // gRPC over TLS: refused without a token, accepted with one.
    let channel = Channel::from_shared(format!("https://localhost:{}", collector.running.grpc_addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = CollectorClient::new(channel);
    let request = || IngestInferencesRequest {
        events: vec![InferenceEvent {
            event_id: "g1".into(),
            model: "fraud".into(),
            latency_ms: 2.0,
            ..InferenceEvent::default()
        }],
    };
    let status = grpc.ingest_inferences(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(request());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        grpc.ingest_inferences(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(request());
    right
        .metadata_mut()
        .insert("authorization", "Bearer team-b-s3cret".parse().unwrap());
    assert_eq!(grpc.ingest_inferences(right).await.unwrap().into_inner().accepted, 1);

    // No secret on the admin port either.
    let metrics = mlwatch_testkit::http::get_text(&collector.admin("/metrics")).await;
    assert!(!metrics.contains("s3cret"));
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_tls_when_configured() {
    let tls = TlsConfig {
        cert_path: fixture("server.pem"),
        key_path: fixture("server.key"),
    };
    let collector = TestCollector::start("security-admin-tls", |c| {
        c.admin.tls = Some(tls.clone());
    })
    .await;
    let ca = std::fs::read(fixture("ca.pem")).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let port = collector.running.admin_addr.port();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = https
            .get(format!("https://localhost:{port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Plain HTTP to the TLS admin port gets no answer.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_err());
    collector.stop().await;
}
