//! A partition's checkpoint is one record: it must hold many model versions,
//! well past librdkafka's default 1 MB message limit, and come back intact.

use mlwatch_analyzer::checkpoint::{Checkpoint, CheckpointStore, key};
use mlwatch_analyzer::partition::{Decoded, Partitions, Settings};
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_proto::v1::{InferenceEvent, InferenceStatus};
use mlwatch_proto::view::InferenceRef;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_hundreds_of_model_versions_checkpoints_and_restores() {
    let suffix = format!("ckpt-size-{}", std::process::id());
    let kafka = KafkaConfig {
        bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topics: Topics::with_suffix(&suffix),
        partitions: 1,
        ..KafkaConfig::default()
    };
    let state_topic = format!("mlwatch.analyzer.state.v1.{suffix}");
    let store = CheckpointStore::open(&kafka, &state_topic).await.expect("state topic");

    let mut config = mlwatch_analyzer::Config::default();
    config.accuracy.enabled = false;
    config.drift.enabled = false;
    let mut partitions = Partitions::new(Settings::from_config(&config));
    partitions.own(0).unwrap();
    let t0 = 1_795_000_000_000i64;
    let mut offset = 0i64;
    for v in 0..300 {
        for i in 0..120i64 {
            let e = InferenceEvent {
                event_id: format!("e{offset}"),
                model: format!("model-{}", v % 30),
                model_version: format!("v{v}"),
                timestamp_ms: t0 + i * 500,
                latency_ms: 5.0 + (i % 40) as f64 * 3.7,
                status: InferenceStatus::Ok as i32,
                ..Default::default()
            };
            let decoded = Decoded::Inference(Ok(InferenceRef::of(&e)));
            let applied = partitions.apply([(0, offset, &decoded)]);
            assert_eq!(applied.inferences, 1);
            offset += 1;
        }
    }
    let (state, _, _) = partitions.checkpoint(0).expect("partition state");
    let checkpoint = Checkpoint {
        format: 1,
        group: "g".into(),
        topic: kafka.topics.inference.clone(),
        partition: 0,
        written_at_ms: t0,
        state,
        accuracy: None,
        drift: Vec::new(),
    };
    let payload = CheckpointStore::encode(&checkpoint).unwrap();
    assert!(
        payload.len() > 1_000_000,
        "the test must exceed 1 MB, got {} bytes",
        payload.len()
    );
    let k = key("g", &kafka.topics.inference, 0);
    store
        .save(&k, 0, &payload)
        .await
        .expect("a large checkpoint is accepted");
    let loaded = tokio::task::spawn_blocking(move || store.load_blocking(&[(0, k)]))
        .await
        .unwrap()
        .expect("load");
    let restored = loaded.get(&0).expect("checkpoint found");
    assert_eq!(restored.state.next_offset, offset);
    assert_eq!(restored.state.events, offset as u64);
    assert_eq!(CheckpointStore::encode(restored).unwrap(), payload);
}
