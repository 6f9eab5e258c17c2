//! Checkpoints of per-partition state on a compacted Kafka topic.
//!
//! A checkpoint is the whole state of one source partition (positions,
//! clock, latency, accuracy and drift parts), encoded as
//! JSON, keyed by `group/topic/partition` and written to partition
//! `source partition mod state partitions` of the state topic, so a restore
//! reads one state partition. The newest record of a key wins; the topic is
//! created with `cleanup.policy=compact` so the broker keeps only that one
//! (a broker that refuses the setting gets a plain topic, which is correct,
//! only larger).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use mlwatch_common::kafka::{KafkaConfig, ResilientProducer};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use mlwatch_analyzer_accuracy::part::AccuracyCheckpoint;
use mlwatch_analyzer_drift::part::DriftCheckpoint;

use crate::partition::PartitionRecord;

/// Format version written into every checkpoint.
pub const FORMAT_VERSION: u32 = 1;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("checkpoint {key}: undecodable: {reason}")]
    Decode { key: String, reason: String },
    #[error("checkpoint encoding failed: {0}")]
    Encode(String),
    #[error("cannot create state topic: {0}")]
    Setup(String),
    #[error("state topic {0}: no partitions")]
    NoPartitions(String),
    #[error("reading state partition {partition} timed out at offset {at} of {high}")]
    ReadTimeout { partition: i32, at: i64, high: i64 },
}

/// One stored checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub written_at_ms: i64,
    pub state: PartitionRecord,
    /// The partition's accuracy tracker (absent when accuracy is off).
    #[serde(default)]
    pub accuracy: Option<AccuracyCheckpoint>,
    /// The partition's drift monitors, by model.
    #[serde(default)]
    pub drift: Vec<DriftCheckpoint>,
}

/// The record key of a source partition's checkpoint.
pub fn key(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// Largest checkpoint record the analyzer writes (64 MiB, before lz4).
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024 * 1024;

/// Writes and reads checkpoints.
pub struct CheckpointStore {
    /// Replaced after an unrecoverable error (a fenced idempotent producer
    /// after the broker was unreachable), so checkpoints resume by themselves.
    producer: ResilientProducer,
    loader: Mutex<BaseConsumer>,
    topic: String,
    partitions: i32,
    timeout: Duration,
}

impl CheckpointStore {
    /// Creates the state topic (compacted) when missing and connects.
    ///
    /// Checkpoints get their own producer whose message size limit is
    /// [`MAX_CHECKPOINT_BYTES`]: a partition's whole state is one record, and
    /// the default 1 MB would cap a partition at a few dozen model versions.
    /// On Kafka and Redpanda the state topic needs `max.message.bytes` at
    /// least as large (docs/decisions/0003-checkpoint-size.md).
    pub async fn open(kafka: &KafkaConfig, topic: &str) -> Result<Self, CheckpointError> {
        if kafka.create_topics {
            create_compacted(kafka, topic).await?;
        }
        let limit = MAX_CHECKPOINT_BYTES.to_string();
        let producer = ResilientProducer::from_config(kafka, &[("message.max.bytes", limit.as_str())])
            .map_err(|e| CheckpointError::Setup(e.to_string()))?;
        let loader: BaseConsumer = kafka
            .client_config()
            .set("group.id", "mlwatch-analyzer-state-loader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.message.max.bytes", "104857600")
            .create()?;
        let metadata = loader.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        if partitions == 0 {
            return Err(CheckpointError::NoPartitions(topic.to_string()));
        }
        Ok(Self {
            producer,
            loader: Mutex::new(loader),
            topic: topic.to_string(),
            partitions,
            timeout: Duration::from_millis(kafka.produce_timeout_ms),
        })
    }

    fn state_partition(&self, source_partition: i32) -> i32 {
        source_partition.rem_euclid(self.partitions)
    }

    /// Encodes a checkpoint.
    pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
        serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Encode(e.to_string()))
    }

    fn record<'a>(&'a self, key: &'a str, source_partition: i32, payload: &'a [u8]) -> FutureRecord<'a, str, [u8]> {
        FutureRecord::to(&self.topic)
            .partition(self.state_partition(source_partition))
            .key(key)
            .payload(payload)
    }

    /// Writes a checkpoint and waits for the broker's acknowledgement.
    pub async fn save(&self, key: &str, source_partition: i32, payload: &[u8]) -> Result<(), CheckpointError> {
        self.producer
            .send(self.record(key, source_partition, payload), self.timeout)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Writes a checkpoint from synchronous code (a rebalance callback):
    /// enqueues, flushes, then reads the delivery result.
    pub fn save_blocking(&self, key: &str, source_partition: i32, payload: &[u8]) -> Result<(), CheckpointError> {
        let (generation, producer) = self.producer.current();
        let result = Self::save_with(&producer, self.record(key, source_partition, payload), self.timeout);
        if let Err(error) = &result {
            self.producer.failed(generation, error);
        }
        result.map_err(Into::into)
    }

    fn save_with(
        producer: &rdkafka::producer::FutureProducer,
        record: FutureRecord<'_, str, [u8]>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let mut delivery = producer.send_result(record).map_err(|(e, _)| e)?;
        producer.flush(timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(result) = (&mut delivery).now_or_never() {
                return match result {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                };
            }
            if Instant::now() > deadline {
                return Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads the newest checkpoint of each `(source partition, key)` asked
    /// for (blocking: call from a blocking thread). Missing keys are absent
    /// from the answer.
    pub fn load_blocking(&self, wanted: &[(i32, String)]) -> Result<HashMap<i32, Checkpoint>, CheckpointError> {
        let loader = self.loader.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_state_partition: HashMap<i32, Vec<(i32, &str)>> = HashMap::new();
        for (p, k) in wanted {
            by_state_partition
                .entry(self.state_partition(*p))
                .or_default()
                .push((*p, k.as_str()));
        }
        let mut newest: HashMap<i32, Vec<u8>> = HashMap::new();
        for (sp, keys) in by_state_partition {
            let (low, high) = loader.fetch_watermarks(&self.topic, sp, Duration::from_secs(10))?;
            if high <= low {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, sp, Offset::Beginning)?;
            loader.assign(&tpl)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut at = low - 1;
            while at < high - 1 {
                if Instant::now() > deadline {
                    return Err(CheckpointError::ReadTimeout {
                        partition: sp,
                        at,
                        high,
                    });
                }
                let Some(message) = loader.poll(Duration::from_millis(500)) else {
                    continue;
                };
                let message = message?;
                at = message.offset();
                let key = message.key().unwrap_or_default();
                if let Some((p, _)) = keys.iter().find(|(_, k)| k.as_bytes() == key) {
                    newest.insert(*p, message.payload().unwrap_or_default().to_vec());
                }
            }
            loader.unassign()?;
        }
        newest
            .into_iter()
            .map(|(p, bytes)| {
                let key = || {
                    wanted
                        .iter()
                        .find(|(q, _)| *q == p)
                        .map(|(_, k)| k.clone())
                        .unwrap_or_default()
                };
                let checkpoint: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Decode {
                    key: key(),
                    reason: e.to_string(),
                })?;
                if checkpoint.format != FORMAT_VERSION {
                    return Err(CheckpointError::Decode {
                        key: key(),
                        reason: format!("format {}, this analyzer reads {FORMAT_VERSION}", checkpoint.format),
                    });
                }
                Ok((p, checkpoint))
            })
            .collect()
    }
}

/// Creates `topic` with `cleanup.policy=compact`; retries without the
/// setting when the broker refuses it.
pub(crate) async fn create_compacted(kafka: &KafkaConfig, topic: &str) -> Result<(), CheckpointError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let compacted = kafka.new_topic(topic, &[("cleanup.policy", "compact")]);
    let result = admin.create_topics([&compacted], &opts).await?;
    match result.into_iter().next() {
        Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(()),
        Some(Err((_, code))) => {
            tracing::warn!(%code, topic, "broker refused a compacted state topic; creating a plain one");
            kafka
                .ensure_topics(&[topic])
                .await
                .map_err(|e| CheckpointError::Setup(e.to_string()))
        }
    }
}
