//! Reference profiles shared by every analyzer instance
//! (docs/decisions/0004-profile-store.md).
//!
//! The truth is a compacted Kafka topic (`[kafka.topics] profiles`, default
//! `mlwatch.profiles.v1`): one record per model (key = model) holding its
//! active profile as compact JSON, plus one per model version that has a
//! profile of its own (key = model, U+001F, model version); a tombstone
//! removes one. Every instance reads the topic in full before it consumes
//! inferences, then follows it (no consumer group, so every instance sees
//! every record). The upload API and profile capture publish to it and count
//! as done only once the broker acknowledged.
//!
//! - `mlwatch_analyzer_drift::registry`: what an instance knows (the active
//!   profile per model, the version-specific ones, the version numbers
//!   used) and the local file cache of profile versions.
//! - [`ProfileTopic`]: the I/O: publish (produce, wait for the ack) and
//!   follow (read in full, then tail).

use std::time::Duration;

use std::path::PathBuf;
use std::sync::Arc;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use prometheus::IntCounterVec;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::Error;
use mlwatch_analyzer_drift::Profile;
pub use mlwatch_analyzer_drift::registry::{
    KEY_SEPARATOR, Position, ProfileCache, ProfileRegistry, SharedProfiles, read, record_key, write,
};

/// The profiles topic: publish and follow.
pub struct ProfileTopic {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
    registry: SharedProfiles,
    cache: ProfileCache,
    /// Records read, by result: `applied`, `unchanged`, `skipped`.
    records: IntCounterVec,
    /// One publish at a time per instance, so two uploads to the same
    /// instance never pick the same version number.
    publishing: tokio::sync::Mutex<()>,
}

/// How long an instance waits at start to read the profiles topic in full.
const CATCH_UP: Duration = Duration::from_secs(60);

impl ProfileTopic {
    /// Creates the topic (compacted) when missing, reads it in full into a
    /// new registry, and keeps following it until `shutdown`; counts the
    /// records read in `records` (label `result`).
    pub async fn open(
        kafka: &KafkaConfig,
        cache_dir: PathBuf,
        records: IntCounterVec,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let topic = kafka.topics.profiles.clone();
        if kafka.create_topics {
            crate::checkpoint::create_compacted(kafka, &topic)
                .await
                .map_err(|e| Error::Task("profiles topic", e.to_string()))?;
        }
        let this = Arc::new(Self {
            producer: kafka.producer()?,
            timeout: Duration::from_millis(kafka.produce_timeout_ms),
            registry: SharedProfiles::default(),
            cache: ProfileCache::new(cache_dir),
            records,
            publishing: tokio::sync::Mutex::new(()),
            topic,
        });
        let consumer: StreamConsumer = kafka
            .client_config()
            // Assigned, never subscribed: the group id only names the client.
            .set("group.id", "mlwatch-analyzer-profiles")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.message.max.bytes", "104857600")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&this.topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == this.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::Task("profiles topic", format!("{}: no partitions", this.topic)));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&this.topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (caught_up, ready) = tokio::sync::oneshot::channel();
        tokio::spawn(this.clone().follow(consumer, partitions, caught_up, shutdown));
        match tokio::time::timeout(CATCH_UP, ready).await {
            Ok(Ok(())) => Ok(this),
            _ => Err(Error::Task(
                "profiles topic",
                format!("{}: not read to its end within {CATCH_UP:?}", this.topic),
            )),
        }
    }

    /// The registry this topic feeds.
    pub fn registry(&self) -> SharedProfiles {
        self.registry.clone()
    }

    /// Applies one record and keeps a local copy of its profile; returns
    /// whether it changed anything.
    fn apply(&self, key: &str, profile: Option<Profile>, at: Position) -> Result<bool, String> {
        let changed = write(&self.registry).apply(key, profile.clone(), Some(at))?;
        if changed && let Some(p) = &profile {
            if let Err(error) = self.cache.put(p) {
                tracing::warn!(%error, model = %p.model, version = p.version, "cannot cache profile");
            }
            tracing::info!(
                model = %p.model, version = p.version, model_version = p.model_version.as_deref().unwrap_or("*"),
                "reference profile active"
            );
        }
        Ok(changed)
    }

    async fn follow(
        self: Arc<Self>,
        consumer: StreamConsumer,
        partitions: Vec<i32>,
        caught_up: tokio::sync::oneshot::Sender<()>,
        shutdown: CancellationToken,
    ) {
        let mut behind: std::collections::BTreeSet<i32> = partitions.into_iter().collect();
        let mut caught_up = Some(caught_up);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = consumer.recv() => m,
            };
            match message {
                Ok(m) => {
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    let at = (m.partition(), m.offset());
                    let profile = match m.payload() {
                        None => Ok(None),
                        Some(bytes) => std::str::from_utf8(bytes)
                            .map_err(|e| e.to_string())
                            .and_then(|t| Profile::from_json(t).map_err(|e| e.to_string()))
                            .map(Some),
                    };
                    let result = match profile.and_then(|p| self.apply(&key, p, at)) {
                        Ok(true) => "applied",
                        Ok(false) => "unchanged",
                        Err(reason) => {
                            // Skipped, never fatal: the next upload of the key replaces it.
                            tracing::warn!(topic = %self.topic, partition = at.0, offset = at.1, key = %key, %reason, "profile record unusable; skipped");
                            "skipped"
                        }
                    };
                    self.records.with_label_values(&[result]).inc();
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    behind.remove(&p);
                    if behind.is_empty()
                        && let Some(tx) = caught_up.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "profiles topic read failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Publishes `profile` (a free version is assigned, see
    /// [`ProfileRegistry::assign_version`]) and returns its version once the
    /// broker acknowledged it; it is then active on this instance, and on
    /// the others as soon as they read it.
    pub async fn publish(&self, mut profile: Profile) -> Result<u32, Error> {
        let _one_at_a_time = self.publishing.lock().await;
        read(&self.registry).assign_version(&mut profile);
        let key = record_key(&profile.model, profile.model_version.as_deref());
        let payload = serde_json::to_vec(&profile).map_err(|e| Error::Task("profile encoding", e.to_string()))?;
        let (partition, offset) = self
            .producer
            .send(FutureRecord::to(&self.topic).key(&key).payload(&payload), self.timeout)
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(e, _)| Error::KafkaClient(e))?;
        let version = profile.version;
        self.apply(&key, Some(profile), (partition, offset))
            .map_err(|e| Error::Task("profile publish", e))?;
        Ok(version)
    }

    /// Publishes captured profiles from `rx` until it closes or `shutdown`,
    /// retrying each (with backoff) until the broker takes it.
    pub async fn publish_captures(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Profile>,
        shutdown: CancellationToken,
    ) {
        loop {
            let profile = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            };
            let mut backoff = Duration::from_millis(200);
            loop {
                match self.publish(profile.clone()).await {
                    Ok(version) => {
                        tracing::info!(model = %profile.model, version, "captured reference profile published");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, model = %profile.model, "cannot publish captured profile; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }
}
