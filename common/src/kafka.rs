//! Kafka: broker settings, topic names, topic creation, the producer, and the
//! at-least-once consume loop.
//!
//! Consumers follow rust-rdkafka's at-least-once pattern:
//! `enable.auto.offset.store=false`, an offset is stored only after its
//! message is fully handled (and after any produce it caused is
//! acknowledged), stored offsets are committed periodically, on revoke and at
//! shutdown. A message that can never be handled goes to the dead-letter
//! topic with its reason (headers) and is then skipped.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The `[kafka]` section shared by every service. Its `Debug` form shows
/// pass-through settings named as secrets (`sasl.password`, ...) as
/// `<redacted>`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// librdkafka settings passed through verbatim (TLS, SASL, tuning), e.g.
    /// `"security.protocol" = "SASL_SSL"`. They override mlwatch's own.
    /// From the environment, `_` stands for `.`
    /// (`MLWATCH_KAFKA__CLIENT__SASL_PASSWORD` sets `sasl.password`), and a
    /// key ending in `_file` / `.file` reads the value of the key without it
    /// from that file, trimmed (`sasl.password.file = "/run/secrets/kafka"`).
    #[serde(default, deserialize_with = "client_settings")]
    pub client: BTreeMap<String, String>,
    /// Topic names.
    #[serde(default)]
    pub topics: Topics,
    /// Create missing topics at start-up (the local broker does not
    /// auto-create them).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics this service creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics this service creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// How long a produce may wait for the broker's acknowledgement.
    #[serde(default = "default_produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// Kafka topic configs set on every topic this service creates, e.g.
    /// `"min.insync.replicas" = "2"` (production; with
    /// `replication_factor = 3`). Empty by default: the local broker takes
    /// the broker's defaults.
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
    /// Per topic (by full name): partitions, replication factor and topic
    /// configs that differ from the above, e.g.
    /// `[kafka.topic_overrides."mlwatch.analyzer.state.v1"] config =
    /// {"max.message.bytes" = "67108864"}`.
    #[serde(default)]
    pub topic_overrides: BTreeMap<String, TopicOverride>,
}

/// How one topic differs from the `[kafka]` defaults when created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicOverride {
    pub partitions: Option<i32>,
    pub replication_factor: Option<i32>,
    /// Kafka topic configs, over `[kafka] topic_config`.
    pub config: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client: BTreeMap<&str, &str> = self
            .client
            .iter()
            .map(|(k, v)| {
                let shown = if crate::secrets::is_secret_name(k) {
                    "<redacted>"
                } else {
                    v
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client", &client)
            .field("topics", &self.topics)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("produce_timeout_ms", &self.produce_timeout_ms)
            .field("topic_config", &self.topic_config)
            .field("topic_overrides", &self.topic_overrides)
            .finish()
    }
}

/// librdkafka's property names that hold an underscore; every other one
/// is dotted, so an `_` from an environment variable name stands for `.`.
const UNDERSCORE_KEYS: &[&str] = &["log_level"];

/// The librdkafka name of a `[kafka.client]` key as written in TOML or
/// derived from an environment variable.
pub fn librdkafka_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    if key.contains('.') || UNDERSCORE_KEYS.contains(&key.as_str()) {
        key
    } else {
        key.replace('_', ".")
    }
}

/// `[kafka.client]`: keys named as librdkafka names them, `*.file` keys
/// replaced by the trimmed content of their file. Numbers and booleans
/// (TOML, or an environment value such as `5`) become text, except at
/// secret-bearing keys, which take text only (so a mistyped secret is an
/// error that does not show it).
fn client_settings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::{DeserializeSeed, Error, MapAccess, Visitor};

    /// librdkafka takes every value as text.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }

    /// The trimmed content of the file named by the value.
    struct FileContent;
    impl<'de> DeserializeSeed<'de> for FileContent {
        type Value = String;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            let path = String::deserialize(d)?;
            std::fs::read_to_string(&path)
                .map(|text| text.trim().to_string())
                .map_err(|e| D::Error::custom(format!("cannot read {path}: {}", e.kind())))
        }
    }

    struct Settings;
    impl<'de> Visitor<'de> for Settings {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table of librdkafka settings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            let mut from_files = BTreeMap::new();
            while let Some(written) = map.next_key::<String>()? {
                let key = librdkafka_key(&written);
                if let Some(target) = key.strip_suffix(".file") {
                    from_files.insert(target.to_string(), map.next_value_seed(FileContent)?);
                } else if crate::secrets::is_secret_name(&key) {
                    out.insert(key, map.next_value::<String>()?);
                } else {
                    let value = match map.next_value::<Scalar>()? {
                        Scalar::Text(t) => t,
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                    };
                    out.insert(key, value);
                }
            }
            // A value given inline wins over one from a file.
            for (key, value) in from_files {
                out.entry(key).or_insert(value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Settings)
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}
fn default_produce_timeout_ms() -> u64 {
    10_000
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            client: BTreeMap::new(),
            topics: Topics::default(),
            create_topics: true,
            partitions: default_partitions(),
            replication_factor: default_replication(),
            produce_timeout_ms: default_produce_timeout_ms(),
            topic_config: BTreeMap::new(),
            topic_overrides: BTreeMap::new(),
        }
    }
}

/// Topic names (DESIGN.md defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub inference: String,
    pub labels: String,
    pub alerts: String,
    pub actions: String,
    pub deadletter: String,
    /// Drift reference profiles (compacted; key = model), read in full by
    /// every analyzer instance.
    pub profiles: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            inference: "mlwatch.inference.v1".into(),
            labels: "mlwatch.labels.v1".into(),
            alerts: "mlwatch.alerts.v1".into(),
            actions: "mlwatch.actions.v1".into(),
            deadletter: "mlwatch.deadletter.v1".into(),
            profiles: "mlwatch.profiles.v1".into(),
        }
    }
}

impl Topics {
    /// The default names with a suffix, e.g. for one test's private topics.
    pub fn with_suffix(suffix: &str) -> Self {
        let d = Self::default();
        Self {
            inference: format!("{}.{suffix}", d.inference),
            labels: format!("{}.{suffix}", d.labels),
            alerts: format!("{}.{suffix}", d.alerts),
            actions: format!("{}.{suffix}", d.actions),
            deadletter: format!("{}.{suffix}", d.deadletter),
            profiles: format!("{}.{suffix}", d.profiles),
        }
    }
}

/// Kafka failures, with whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka client setup failed: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot create topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    /// Shutdown was asked for while start-up waited for the broker.
    #[error("stopped while waiting for the broker")]
    Stopped,
}

/// The delay before start-up's next attempt to reach the broker: 1 s,
/// 2 s, 4 s, … at most 30 s (each attempt itself bounded by
/// [`ATTEMPT_TIMEOUT`]).
pub fn startup_retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// The longest one attempt to reach the broker (create or look up topics)
/// may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one attempt to create topics failed.
enum Attempt {
    /// The broker could not be reached or answered late: try again.
    Unreachable(String),
    /// The broker refused: retrying will not help.
    Refused(KafkaSetupError),
}

impl KafkaConfig {
    /// Base client settings: bootstrap servers plus the pass-through ones.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        cfg.set("log_level", "4");
        for (k, v) in &self.client {
            cfg.set(k, v);
        }
        cfg
    }

    fn with_passthrough(&self, mut cfg: ClientConfig) -> ClientConfig {
        for (k, v) in &self.client {
            cfg.set(k, v);
        }
        cfg
    }

    /// An idempotent, `acks=all`, lz4-compressed, batching producer.
    pub fn producer(&self) -> Result<FutureProducer, KafkaSetupError> {
        self.producer_with(&[])
    }

    /// The same producer with extra librdkafka settings (applied after
    /// mlwatch's, before the pass-through ones).
    pub fn producer_with(&self, extra: &[(&str, &str)]) -> Result<FutureProducer, KafkaSetupError> {
        let mut cfg = self.client_config();
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", self.produce_timeout_ms.to_string());
        self.with_passthrough(cfg).create().map_err(KafkaSetupError::Client)
    }

    /// An at-least-once consumer in `group`: offsets are stored by the
    /// application after handling, committed every second, on revoke and at
    /// shutdown. Starts from the earliest offset when the group is new.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer<CommitOnRevoke>, KafkaSetupError> {
        let mut cfg = self.client_config();
        cfg.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Brokers wait up to about half the session timeout for a group
            // to form; 6 s (the usual broker minimum) keeps joins and
            // rebalances quick.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false");
        self.with_passthrough(cfg)
            .create_with_context(CommitOnRevoke)
            .map_err(KafkaSetupError::Client)
    }

    /// Creates the topics that do not exist yet (when `create_topics`).
    /// Retries while the broker is starting, 30 attempts of at most
    /// [`ATTEMPT_TIMEOUT`] each, one second apart (tools and tests; the
    /// services use [`KafkaConfig::await_topics`]).
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), KafkaSetupError> {
        if !self.create_topics {
            return Ok(());
        }
        let never = CancellationToken::new();
        self.retry_topics(topics, &never, Some(30), |_| Duration::from_secs(1), |_| {})
            .await
    }

    /// A service's start-up: makes sure `topics` exist (creating them when
    /// `create_topics`, else looking them up), retrying for as long as it
    /// takes on the schedule of [`startup_retry_delay`], each failure logged
    /// and told to `status` (which `/readyz` shows). Returns
    /// [`KafkaSetupError::Stopped`] as soon as `shutdown` fires.
    pub async fn await_topics(
        &self,
        topics: &[&str],
        shutdown: &CancellationToken,
        status: impl Fn(String),
    ) -> Result<(), KafkaSetupError> {
        self.retry_topics(topics, shutdown, None, startup_retry_delay, status)
            .await
    }

    async fn retry_topics(
        &self,
        topics: &[&str],
        shutdown: &CancellationToken,
        max_attempts: Option<u32>,
        delay: fn(u32) -> Duration,
        status: impl Fn(String),
    ) -> Result<(), KafkaSetupError> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().map_err(KafkaSetupError::Client)?;
        let servers = &self.bootstrap_servers;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            status(format!("waiting for the broker at {servers} (attempt {attempt})"));
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Err(KafkaSetupError::Stopped),
                outcome = self.create_once(&admin, topics) => outcome,
            };
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(Attempt::Refused(e)) => return Err(e),
                Err(Attempt::Unreachable(reason)) if max_attempts.is_some_and(|m| attempt >= m) => {
                    return Err(KafkaSetupError::CreateTopic {
                        topic: topics.join(","),
                        reason,
                    });
                }
                Err(Attempt::Unreachable(error)) => error,
            };
            let next = delay(attempt);
            tracing::warn!(%error, attempt, next_in_secs = next.as_secs(), %servers, "the broker cannot be reached; retrying");
            status(format!(
                "waiting for the broker at {servers}: {error} (attempt {attempt}, next in {} s)",
                next.as_secs()
            ));
            tokio::select! {
                _ = shutdown.cancelled() => return Err(KafkaSetupError::Stopped),
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// One attempt: creates the missing topics, or (without
    /// `create_topics`) checks that they exist.
    async fn create_once(&self, admin: &AdminClient<DefaultClientContext>, topics: &[&str]) -> Result<(), Attempt> {
        if !self.create_topics {
            return self.look_up(topics).await;
        }
        let new: Vec<NewTopic> = topics.iter().map(|t| self.new_topic(t, &[])).collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(ATTEMPT_TIMEOUT))
            .request_timeout(Some(ATTEMPT_TIMEOUT));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| Attempt::Unreachable(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Attempt::Refused(KafkaSetupError::CreateTopic {
                        topic,
                        reason: code.to_string(),
                    }));
                }
            }
        }
        Ok(())
    }

    /// How this service creates `topic`: `[kafka]` partitions, replication
    /// factor and `topic_config`, then `role` (the configs the topic's use
    /// needs, such as `cleanup.policy=compact`), then the topic's
    /// `topic_overrides`.
    pub fn new_topic<'a>(&'a self, topic: &'a str, role: &[(&'a str, &'a str)]) -> NewTopic<'a> {
        let over = self.topic_overrides.get(topic);
        let partitions = over.and_then(|o| o.partitions).unwrap_or(self.partitions);
        let replication = over
            .and_then(|o| o.replication_factor)
            .unwrap_or(self.replication_factor);
        let mut config: BTreeMap<&str, &str> = self
            .topic_config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        config.extend(role.iter().copied());
        if let Some(o) = over {
            config.extend(o.config.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        config.into_iter().fold(
            NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)),
            |t, (k, v)| t.set(k, v),
        )
    }

    /// Checks that `topics` exist (they are not ours to create).
    async fn look_up(&self, topics: &[&str]) -> Result<(), Attempt> {
        let config = self.client_config();
        let known = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = config.create().map_err(|e| e.to_string())?;
            let metadata = client
                .fetch_metadata(None, ATTEMPT_TIMEOUT)
                .map_err(|e| e.to_string())?;
            Ok::<Vec<String>, String>(metadata.topics().iter().map(|t| t.name().to_string()).collect())
        })
        .await
        .map_err(|e| Attempt::Unreachable(e.to_string()))?
        .map_err(Attempt::Unreachable)?;
        match topics.iter().find(|t| !known.iter().any(|k| k == *t)) {
            None => Ok(()),
            Some(missing) => Err(Attempt::Unreachable(format!(
                "topic {missing} does not exist and create_topics is off"
            ))),
        }
    }
}

/// Consumer context that commits the stored offsets of partitions being
/// revoked, so that a rebalance neither loses nor repeats handled work.
pub struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance
            && let Err(error) = consumer.commit_consumer_state(CommitMode::Sync)
            && !matches!(error, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
        {
            tracing::warn!(%error, "commit on revoke failed");
        }
    }
}

/// What a handler says of a message it could not handle.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be handled (undecodable, invalid): it goes to
    /// the dead-letter topic with this reason and is skipped.
    #[error("poison message: {0}")]
    Poison(String),
    /// A retry can help (a produce or a call failed): the message is
    /// retried with backoff and its offset is not stored meanwhile.
    #[error("transient failure: {0}")]
    Transient(String),
}

/// Handles one message at a time for [`consume`].
#[allow(async_fn_in_trait)]
pub trait Handler {
    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), HandleError>;
}

/// Errors after which an idempotent producer never produces again (its
/// producer id or epoch is no longer valid on the broker, typically after
/// the broker was unreachable for longer than its transaction timeout);
/// some brokers report them per message rather than as a fatal error.
pub fn producer_state_lost(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::Fatal
    )
}

type Rebuild = Box<dyn Fn() -> Result<FutureProducer, KafkaSetupError> + Send + Sync>;

/// A producer that replaces itself after an error it cannot recover from
/// (a fenced or out-of-sequence idempotent producer), so a service keeps
/// producing after broker trouble without a restart. Each replacement is a
/// new generation; however many sends saw the failure, a generation is
/// replaced once.
pub struct ResilientProducer {
    current: RwLock<(u64, FutureProducer)>,
    rebuild: Option<Rebuild>,
}

impl ResilientProducer {
    /// `producer`, replaced by a fresh one from `rebuild` when it fails for
    /// good.
    pub fn new(
        producer: FutureProducer,
        rebuild: impl Fn() -> Result<FutureProducer, KafkaSetupError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            current: RwLock::new((0, producer)),
            rebuild: Some(Box::new(rebuild)),
        }
    }

    /// `producer`, never replaced.
    pub fn fixed(producer: FutureProducer) -> Self {
        Self {
            current: RwLock::new((0, producer)),
            rebuild: None,
        }
    }

    /// A producer whose failures are replaced from `kafka`'s settings plus
    /// `extra`.
    pub fn from_config(kafka: &KafkaConfig, extra: &[(&str, &str)]) -> Result<Self, KafkaSetupError> {
        let producer = kafka.producer_with(extra)?;
        let (kafka, extra): (KafkaConfig, Vec<(String, String)>) = (
            kafka.clone(),
            extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        );
        Ok(Self::new(producer, move || {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            kafka.producer_with(&extra)
        }))
    }

    /// The current producer and its generation.
    pub fn current(&self) -> (u64, FutureProducer) {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a send of generation `generation` failed with `error`: replaces
    /// the producer when librdkafka reports a fatal error or the error says
    /// the producer's state is lost. Returns whether it was replaced.
    pub fn failed(&self, generation: u64, error: &KafkaError) -> bool {
        let (_, producer) = self.current();
        if let Some((code, reason)) = rdkafka::producer::Producer::client(&producer).fatal_error() {
            return self.replace(generation, code, &reason);
        }
        match error {
            KafkaError::MessageProduction(code) if producer_state_lost(*code) => {
                self.replace(generation, *code, "producer state lost")
            }
            KafkaError::Flush(code) if producer_state_lost(*code) => {
                self.replace(generation, *code, "producer state lost")
            }
            _ => false,
        }
    }

    fn replace(&self, generation: u64, code: RDKafkaErrorCode, reason: &str) -> bool {
        let Some(rebuild) = &self.rebuild else {
            return false;
        };
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != generation {
            return true; // another send replaced it already
        }
        match rebuild() {
            Ok(fresh) => {
                tracing::warn!(%code, %reason, generation, "producer hit an unrecoverable error; replaced it");
                *current = (generation + 1, fresh);
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot replace the failed producer");
                false
            }
        }
    }

    /// Sends one record and waits for the broker's acknowledgement; a
    /// failure that the producer cannot recover from replaces it (the next
    /// send uses the fresh one).
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>, timeout: Duration) -> Result<(i32, i64), KafkaError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let (generation, producer) = self.current();
        let delivered = producer.send(record, timeout).await;
        match delivered {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((error, _)) => {
                self.failed(generation, &error);
                Err(error)
            }
        }
    }
}

/// Sends poison messages to the dead-letter topic: key = source topic,
/// value = the raw bytes, headers = reason, source partition and offset.
#[derive(Clone)]
pub struct DeadLetter {
    producer: std::sync::Arc<ResilientProducer>,
    topic: String,
    timeout: Duration,
}

impl DeadLetter {
    pub fn new(producer: FutureProducer, topic: String, timeout: Duration) -> Self {
        Self::resilient(std::sync::Arc::new(ResilientProducer::fixed(producer)), topic, timeout)
    }

    /// A dead-letter publisher on a producer that replaces itself after an
    /// unrecoverable error (shared with the service's other sends).
    pub fn resilient(producer: std::sync::Arc<ResilientProducer>, topic: String, timeout: Duration) -> Self {
        Self {
            producer,
            topic,
            timeout,
        }
    }

    /// Publishes and waits for the broker's acknowledgement.
    pub async fn send(&self, message: &BorrowedMessage<'_>, reason: &str) -> Result<(), KafkaError> {
        self.send_message(message, reason).await
    }

    /// [`DeadLetter::send`] for any message, borrowed or owned (detached).
    pub async fn send_message<M: Message>(&self, message: &M, reason: &str) -> Result<(), KafkaError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "mlwatch.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "mlwatch.source.topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "mlwatch.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "mlwatch.source.offset",
                value: Some(&offset),
            });
        let record = FutureRecord::to(&self.topic)
            .key(message.topic())
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        self.producer.send(record, self.timeout).await.map(|_| ())
    }
}

/// The at-least-once consume loop: handles each message, dead-letters
/// poison, retries transient failures with backoff, stores the offset only
/// after success, and commits synchronously when `shutdown` fires.
pub async fn consume<H: Handler>(
    consumer: &StreamConsumer<CommitOnRevoke>,
    dead_letter: &DeadLetter,
    shutdown: &CancellationToken,
    handler: &mut H,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match handler.handle(&message).await {
                Ok(()) => break,
                Err(HandleError::Poison(reason)) => {
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        %reason,
                        "moving poison message to the dead-letter topic"
                    );
                    match dead_letter.send(&message, &reason).await {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(%error, "dead-letter produce failed, retrying");
                        }
                    }
                }
                Err(HandleError::Transient(reason)) => {
                    tracing::warn!(%reason, ?backoff, "transient failure, retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    commit(consumer);
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        if let Err(error) = consumer.store_offset_from_message(&message) {
            tracing::warn!(%error, "cannot store offset");
        }
    }
    commit(consumer);
}

/// Commits the stored offsets synchronously (at shutdown).
pub fn commit<C: ConsumerContext>(consumer: &StreamConsumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
}

/// Decodes a protobuf message payload, mapping failures to poison.
pub fn decode<M: prost::Message + Default>(message: &BorrowedMessage<'_>) -> Result<M, HandleError> {
    let payload = message
        .payload()
        .ok_or_else(|| HandleError::Poison("empty payload".into()))?;
    M::decode(payload).map_err(|e| HandleError::Poison(format!("undecodable protobuf: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_created_with_defaults_role_and_overrides_in_that_order() {
        let config: KafkaConfig = crate::config::from_toml::<Wrapper>(
            r#"[kafka]
replication_factor = 3
partitions = 6
topic_config = { "min.insync.replicas" = "2", "retention.ms" = "604800000" }
[kafka.topic_overrides."mlwatch.analyzer.state.v1"]
partitions = 12
config = { "max.message.bytes" = "67108864", "cleanup.policy" = "compact,delete" }
"#,
        )
        .unwrap()
        .kafka;
        let plain = config.new_topic("mlwatch.alerts.v1", &[]);
        assert_eq!(plain.num_partitions, 6);
        assert!(matches!(plain.replication, TopicReplication::Fixed(3)));
        assert_eq!(
            plain.config,
            vec![("min.insync.replicas", "2"), ("retention.ms", "604800000")]
        );
        let state = config.new_topic("mlwatch.analyzer.state.v1", &[("cleanup.policy", "compact")]);
        assert_eq!(state.num_partitions, 12);
        assert_eq!(
            state.config,
            vec![
                ("cleanup.policy", "compact,delete"),
                ("max.message.bytes", "67108864"),
                ("min.insync.replicas", "2"),
                ("retention.ms", "604800000"),
            ]
        );
    }

    #[derive(Default, Serialize, Deserialize)]
    struct Wrapper {
        #[serde(default)]
        kafka: KafkaConfig,
    }

    #[test]
    fn debug_hides_secret_pass_through_settings() {
        let mut config = KafkaConfig::default();
        config.client.insert("sasl.password".into(), "s3cr3t-1".into());
        config.client.insert("ssl.key.pem".into(), "s3cr3t-2".into());
        config.client.insert("security.protocol".into(), "SASL_SSL".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("SASL_SSL") && shown.contains("sasl.password"), "{shown}");
    }
}
