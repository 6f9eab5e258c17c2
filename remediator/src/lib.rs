//! The mlwatch remediator: turns alerts into actions on the serving
//! platform, safely, and records every decision.
//!
//! - [`policy`] (pure): rules mapping an alert (type, severity, labels) to
//!   an action (scale up, roll back, shift traffic, retrain, notify) and the
//!   arithmetic of each action's target.
//! - [`guards`] (pure): kill switch, empty/wildcard targets, replica
//!   bounds, cooldowns, budgets, no blind repeat of a failed remedy.
//! - [`ledger`] (pure): each action's life rebuilt from its records: what
//!   was decided, what waits for approval, what is left to carry out or to
//!   verify.
//! - [`plan`] (pure): decide. From an alert, the policy, the guards, the
//!   ledger and (when needed) the model's deployment, one [`plan::Plan`]:
//!   nothing, resume an action already decided, the follow-ups of a
//!   resolved alert, or a new action's first record (refused, failed,
//!   notify, dry-run, awaiting approval, execute). Also what an overdue
//!   verification and a person's approval decide.
//! - [`engine`]: do. Reads the deployment when a plan asks for it, then
//!   carries the plan out: publishes its `ActionRecord`s on
//!   `mlwatch.actions.v1` and `RemediationFailed` alerts, calls the
//!   platform or the webhook, retries, verifies. The live path and the
//!   `POST /v1/plan` preview take the same plan, so they cannot disagree.
//! - [`serving`]: the `ServingControl` gRPC client (deadlines, retries on
//!   `UNAVAILABLE` only, request ids, TLS/mTLS).
//! - [`replay`]: rebuilds the ledger from the actions topic at start-up.
//! - [`api`]: plan, approve, reject, execute, list, guard state, kill
//!   switch, on the admin port.
//!
//! One action per alert firing: the action id is derived from the alert id
//! and sent as the request id of the mutating call, and the ledger (rebuilt
//! from the actions topic after a restart) recognises a redelivered alert.

pub mod api;
pub mod engine;
pub mod guards;
pub mod ledger;
pub mod plan;
pub mod policy;
pub mod replay;
pub mod serving;

use std::net::SocketAddr;
use std::time::Duration;

use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::auth::{AuthConfig, Tokens};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{self, DeadLetter, HandleError, Handler, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use mlwatch_proto::v1::Alert;
use prometheus::Registry;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use crate::engine::RetrainConfig;
use crate::engine::{Engine, Metrics, RemediatorError, Settings, Sink};
pub use crate::guards::GuardConfig;
use crate::ledger::Ledger;
use crate::policy::Rule;
use crate::serving::{Serving, TlsConfig};

pub const SECTIONS: &[&str] = &[
    "kafka",
    "admin",
    "log",
    "auth",
    "remediator",
    "serving",
    "policy",
    "guards",
    "retrain",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Broker, topics and client settings.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Admin port: metrics, health and the remediator's API.
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Bearer tokens for the `/v1` API routes (kill switch, approvals,
    /// plans, the ledger); empty: open.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The remediator itself.
    #[serde(default)]
    pub remediator: RemediatorConfig,
    /// The serving platform's `ServingControl` endpoint.
    #[serde(default)]
    pub serving: ServingConfig,
    /// Which alert calls for which action.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// What must hold before any action.
    #[serde(default)]
    pub guards: GuardConfig,
    /// The retraining webhook.
    #[serde(default)]
    pub retrain: RetrainConfig,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 9104)))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            admin: default_admin(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            remediator: RemediatorConfig::default(),
            serving: ServingConfig::default(),
            policy: PolicyConfig::default(),
            guards: GuardConfig::default(),
            retrain: RetrainConfig::default(),
        }
    }
}

impl HasLog for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

/// The `[remediator]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediatorConfig {
    /// Consumer group on the alerts topic.
    pub group_id: String,
    /// Plan and record actions without carrying them out (an operator can
    /// still execute one through the API).
    pub dry_run: bool,
    /// After acting, how long the alert has to resolve before the action
    /// is recorded as VERIFICATION_FAILED and `RemediationFailed` raised.
    pub verify_window_secs: u64,
    /// How often committed actions, retries and verification windows are
    /// looked at.
    pub tick_ms: u64,
    /// Attempts at an action call while the platform is unavailable, before
    /// it is recorded as FAILED.
    pub max_attempts: u32,
    /// Longest time the start-up replay of the actions topic may take.
    pub replay_timeout_secs: u64,
    /// Test only: sleep this long after recording PLANNED and before
    /// calling the platform, so a test can `kill -9` the process there.
    /// 0 (the default) turns it off.
    pub test_pause_after_planned_ms: u64,
    /// Test only: sleep this long after the platform call and before
    /// recording EXECUTED. 0 (the default) turns it off.
    pub test_pause_after_call_ms: u64,
}

impl Default for RemediatorConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-remediator".into(),
            dry_run: false,
            verify_window_secs: 300,
            tick_ms: 1000,
            max_attempts: 5,
            replay_timeout_secs: 60,
            test_pause_after_planned_ms: 0,
            test_pause_after_call_ms: 0,
        }
    }
}

/// The `[serving]` section: where the `ServingControl` service is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// gRPC endpoint, e.g. `http://127.0.0.1:50051` (`https://` for TLS).
    pub endpoint: String,
    /// Deadline of each call, retries included.
    pub timeout_ms: u64,
    /// TLS and mutual TLS.
    pub tls: TlsConfig,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50051".into(),
            timeout_ms: 5_000,
            tls: TlsConfig::default(),
        }
    }
}

/// The `[policy]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Rules in order; the first that matches an alert decides.
    pub rules: Vec<Rule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            rules: policy::default_rules(),
        }
    }
}

impl Config {
    /// A remediator for a test: `kafka`'s broker and topics, the consumer
    /// group `mlwatch-remediator-{name}`, the admin port on a loopback port
    /// the OS picks, the serving platform at `serving` (plain gRPC), and a
    /// 200 ms tick so that retries and verification are looked at promptly.
    /// Tests adjust fields from there.
    pub fn for_test(kafka: &KafkaConfig, name: &str, serving: SocketAddr) -> Self {
        let mut config = Self {
            kafka: kafka.clone(),
            admin: AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        };
        config.remediator.group_id = format!("mlwatch-remediator-{name}");
        config.remediator.tick_ms = 200;
        config.serving.endpoint = format!("http://{serving}");
        config
    }

    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), Error> {
        self.guards.validate().map_err(|(k, r)| Error::config(k, r))?;
        if let Some((i, _)) = self
            .policy
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.name.trim().is_empty() || r.alert_types.is_empty())
        {
            return Err(Error::config(
                format!("policy.rules[{i}]"),
                "a rule needs a name and at least one alert type",
            ));
        }
        if self.remediator.verify_window_secs == 0 {
            return Err(Error::config("remediator.verify_window_secs", "must be above 0"));
        }
        if self.remediator.tick_ms == 0 {
            return Err(Error::config("remediator.tick_ms", "must be above 0"));
        }
        Ok(())
    }
}

pub use mlwatch_common::ServiceError as Error;

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

struct AlertHandler {
    engine: Engine,
}

impl Handler for AlertHandler {
    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), HandleError> {
        let alert: Alert = kafka::decode(message)?;
        if alert.id.is_empty() {
            return Err(HandleError::Poison("alert without id".into()));
        }
        match self.engine.on_alert(&alert, mlwatch_common::now_ms()).await {
            Ok(()) => Ok(()),
            Err(e @ (RemediatorError::Publish(_) | RemediatorError::Unavailable(_))) => {
                Err(HandleError::Transient(e.to_string()))
            }
            Err(error) => {
                tracing::warn!(alert_id = %alert.id, %error, "alert not acted on");
                Ok(())
            }
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    mlwatch_common::join(start(config, shutdown).await?.task).await
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    config.validate()?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let ready = Readiness::default();
    let topics = config.kafka.topics.clone();
    let admin = admin::starting(&config.admin, registry.clone(), shutdown.clone()).await?;
    config
        .kafka
        .await_topics(&[&topics.alerts, &topics.actions, &topics.deadletter], &shutdown, |s| {
            admin.status(s)
        })
        .await?;
    let deadline = Duration::from_millis(config.serving.timeout_ms);
    let serving = Serving::connect_lazy(&config.serving.endpoint, deadline, &config.serving.tls)
        .map_err(|e| Error::config("serving", e))?;

    // Durable memory: rebuild the ledger from the actions topic.
    let kafka_cfg = config.kafka.clone();
    let actions_topic = topics.actions.clone();
    let limit = Duration::from_secs(config.remediator.replay_timeout_secs);
    let records = tokio::task::spawn_blocking(move || replay::read_all(&kafka_cfg, &actions_topic, limit))
        .await
        .map_err(|e| Error::Task("replay of the actions topic", e.to_string()))??;
    let mut ledger = Ledger::default();
    let replayed = records.len();
    for r in records {
        ledger.apply(r);
    }
    tracing::info!(
        records = replayed,
        actions = ledger.len(),
        "ledger rebuilt from the actions topic"
    );

    let producer = config.kafka.producer()?;
    let timeout = Duration::from_millis(config.kafka.produce_timeout_ms);
    let settings = Settings {
        rules: config.policy.rules.clone(),
        guards: config.guards.clone(),
        dry_run: config.remediator.dry_run,
        verify_window_ms: i64::try_from(config.remediator.verify_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        max_attempts: config.remediator.max_attempts.max(1),
        retrain: config.retrain.clone(),
        retrain_timeout: deadline,
        pause_after_planned: Duration::from_millis(config.remediator.test_pause_after_planned_ms),
        pause_after_call: Duration::from_millis(config.remediator.test_pause_after_call_ms),
    };
    let sink = Sink {
        producer: producer.clone(),
        actions_topic: topics.actions.clone(),
        alerts_topic: topics.alerts.clone(),
        timeout,
    };
    let engine = Engine::new(settings, ledger, serving, sink, metrics);

    let app = admin::router(registry, ready.clone()).merge(api::router(engine.clone(), Tokens::new(&config.auth)));
    let (admin_addr, admin_task) = admin.serve(app);

    let ticker = {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let every = Duration::from_millis(config.remediator.tick_ms);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = interval.tick() => {}
                }
                if let Err(error) = engine.tick(mlwatch_common::now_ms()).await {
                    tracing::warn!(%error, "periodic remediation work failed; retrying next tick");
                }
            }
        })
    };

    let consumer = config.kafka.consumer(&config.remediator.group_id)?;
    consumer.subscribe(&[&topics.alerts])?;
    let kill_switch = engine.kill_switch().await;
    let mut handler = AlertHandler { engine };
    let dead_letter = DeadLetter::new(producer, topics.deadletter.clone(), timeout);
    ready.set(true);
    tracing::info!(
        %admin_addr,
        dry_run = config.remediator.dry_run,
        kill_switch,
        "remediator ready"
    );
    let task = tokio::spawn(async move {
        kafka::consume(&consumer, &dead_letter, &shutdown, &mut handler).await;
        ready.set(false);
        let _ = ticker.await;
        let _ = admin_task.await;
        Ok(())
    });
    Ok(Running { admin_addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlwatch_common::config::from_toml;

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = include_str!("../../config/remediator.toml");
        let parsed: Config = from_toml(text).expect("config/remediator.toml parses");
        let defaults = Config::default();
        assert_eq!(parsed.policy.rules, defaults.policy.rules);
        assert_eq!(parsed.guards, defaults.guards);
        assert_eq!(parsed.serving.tls, defaults.serving.tls);
        parsed.validate().expect("valid");
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let err = from_toml::<Config>("[guards]\ncooldown_sec = 3").unwrap_err();
        assert!(err.to_string().contains("cooldown_sec"), "{err}");
        let err = from_toml::<Config>(
            "[[policy.rules]]\nname = \"x\"\nalert_types = [\"A\"]\naction = { kind = \"reboot\" }",
        )
        .unwrap_err();
        assert!(err.to_string().contains("reboot"), "{err}");
        let mut c = Config::default();
        c.guards.require_approval = vec!["scale_up".into()];
        let err = c.validate().unwrap_err();
        assert!(err.to_string().starts_with("guards.require_approval"), "{err}");
        assert_eq!(err.exit_code(), 64);
        let mut c = Config::default();
        c.policy.rules[1].alert_types.clear();
        assert!(c.validate().unwrap_err().to_string().starts_with("policy.rules[1]"));
    }

    #[test]
    fn the_webhook_url_never_prints() {
        let mut c = Config::default();
        c.retrain.webhook_url = Some("https://ci.example.com/hooks/TOKEN123".into());
        assert!(!format!("{c:?}").contains("TOKEN123"));
    }
}
