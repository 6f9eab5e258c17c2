//! Start-up replay: reads the actions topic from its beginning to its end
//! (the high watermark of every partition when the replay starts) and
//! returns the records, so the ledger can be rebuilt. This is the
//! remediator's durability: no local state survives a `kill -9`, the
//! topic does.

use std::time::{Duration, Instant};

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_proto::v1::ActionRecord;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Reads every record of `topic`. Blocking: call it from
/// `spawn_blocking`. Undecodable messages are logged and skipped.
pub fn read_all(kafka: &KafkaConfig, topic: &str, limit: Duration) -> Result<Vec<ActionRecord>, KafkaError> {
    let started = Instant::now();
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "mlwatch-remediator-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), limit)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, limit)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(records);
    }
    consumer.assign(&tpl)?;
    while !ends.is_empty() {
        if started.elapsed() > limit {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let partition = message.partition();
        match ActionRecord::decode(message.payload().unwrap_or_default()) {
            Ok(r) => records.push(r),
            Err(error) => tracing::warn!(
                %error,
                partition,
                offset = message.offset(),
                "undecodable action record skipped during replay"
            ),
        }
        if ends.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&partition);
        }
    }
    Ok(records)
}
