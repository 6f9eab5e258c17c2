//! Email over TLS to real SMTP servers: STARTTLS on a plain port and TLS
//! from the first byte, both authenticated, the server's certificate
//! checked against a private CA (`ca_file`); without that CA the
//! certificate is refused and nothing is sent.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use mlwatch_alerter::route::RouteConfig;
use mlwatch_alerter::{Receiver, Secret, SmtpTls};
use mlwatch_proto::v1::Severity;
use mlwatch_testkit::smtp::{SmtpServer, TlsMode, tls_acceptor};
use mlwatch_testkit::{eventually, get_json_blocking, setup, within};
use support::{api, fire, start};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn email(port: u16, tls: SmtpTls, ca: Option<PathBuf>) -> Receiver {
    Receiver::Email {
        host: "127.0.0.1".into(),
        port: Some(port),
        tls,
        ca_file: ca,
        username: Some("alerts".into()),
        password: Some(Secret::new("tls-pass")),
        password_file: None,
        from: "alerts@example.org".into(),
        to: vec!["oncall@example.org".into()],
        subject_template: Some("[{{severity}}] {{type}} on {{model}}".into()),
        send_resolved: None,
        rate_limit_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starttls_and_implicit_tls_deliver_and_an_unknown_ca_is_refused() {
    let (kafka, suffix, shutdown) = setup("alerter-tls");
    let acceptor = tls_acceptor(
        &std::fs::read(fixture("server.pem")).unwrap(),
        &std::fs::read(fixture("server.key")).unwrap(),
    )
    .expect("test certificate loads");
    let starttls = SmtpServer::with_tls(TlsMode::StartTls(acceptor.clone()));
    let implicit = SmtpServer::with_tls(TlsMode::Implicit(acceptor.clone()));
    let untrusted = SmtpServer::with_tls(TlsMode::StartTls(acceptor));
    for s in [&starttls, &implicit, &untrusted] {
        s.require_auth("alerts", "tls-pass");
    }
    let starttls_port = starttls.start(&shutdown).await.port();
    let implicit_port = implicit.start(&shutdown).await.port();
    let untrusted_port = untrusted.start(&shutdown).await.port();

    let mut config = mlwatch_alerter::Config::for_test(&kafka, &suffix);
    config.alerter.max_attempts = 2;
    config.alerter.initial_backoff_ms = 50;
    let child = |r: &str| RouteConfig {
        receiver: Some(r.into()),
        continue_matching: true,
        ..RouteConfig::default()
    };
    config.route = Some(RouteConfig {
        receiver: Some("starttls".into()),
        group_wait_ms: Some(0),
        routes: vec![child("starttls"), child("implicit"), child("untrusted")],
        ..RouteConfig::default()
    });
    let ca = Some(fixture("ca.pem"));
    config
        .receivers
        .insert("starttls".into(), email(starttls_port, SmtpTls::Starttls, ca.clone()));
    config
        .receivers
        .insert("implicit".into(), email(implicit_port, SmtpTls::Tls, ca));
    config
        .receivers
        .insert("untrusted".into(), email(untrusted_port, SmtpTls::Starttls, None));
    let (running, publisher) = start(config, &shutdown).await;

    fire(
        &publisher,
        "fp-tls",
        "AccuracyDecay",
        Severity::Critical,
        "fraud",
        mlwatch_common::now_ms(),
    )
    .await;

    for server in [&starttls, &implicit] {
        let mails = within(30, "mail over tls", server.wait_mails(0)).await;
        assert!(mails[0].tls, "sent in the clear");
        assert_eq!(mails[0].user.as_deref(), Some("alerts"));
        assert_eq!(
            mails[0].header("Subject").as_deref(),
            Some("[CRITICAL] AccuracyDecay on fraud")
        );
    }
    let failed = eventually(30, "the untrusted server's failure", || {
        let h = get_json_blocking(&api(running.admin_addr, "/api/v1/notifications?outcome=failed"));
        h.as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(failed["receiver"], "untrusted");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("gave up after 2 attempts"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(untrusted.mails().is_empty());
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), running.task).await;
}
