//! gRPC ingest against a real collector and broker: unary batches and
//! client streaming for inferences and labels, precise rejections of values
//! only protobuf can carry (NaN, infinity), and whole-request errors mapped
//! to their gRPC codes.

mod support;

use std::collections::{BTreeSet, HashMap};

use mlwatch_proto::v1::collector_client::CollectorClient;
use mlwatch_proto::v1::{
    FeatureValue, InferenceEvent, IngestInferencesRequest, IngestLabelsRequest, IngestResponse, LabelEvent,
    feature_value,
};
use mlwatch_testkit::{read_inferences, read_topic};
use prost::Message as _;
use rdkafka::Message;
use support::TestCollector;
use tonic::codegen::tokio_stream;

fn event(id: &str) -> InferenceEvent {
    InferenceEvent {
        event_id: id.into(),
        model: "fraud".into(),
        latency_ms: 7.5,
        features: HashMap::from([(
            "amount".to_string(),
            FeatureValue {
                kind: Some(feature_value::Kind::Number(10.0)),
            },
        )]),
        ..InferenceEvent::default()
    }
}

fn label(id: &str) -> LabelEvent {
    LabelEvent {
        event_id: id.into(),
        model: "fraud".into(),
        label: Some("1".into()),
        ..LabelEvent::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_streams_are_published_with_precise_rejections() {
    let collector = TestCollector::start("grpc", |c| c.limits.max_events_per_request = 100).await;
    let mut client = CollectorClient::connect(collector.grpc()).await.unwrap();

    // Unary batch: NaN and infinity are rejected by index and field.
    let mut nan = event("bad-nan");
    nan.latency_ms = f64::NAN;
    let mut inf = event("bad-inf");
    inf.features.insert(
        "amount".into(),
        FeatureValue {
            kind: Some(feature_value::Kind::Number(f64::INFINITY)),
        },
    );
    let mut no_kind = event("bad-kind");
    no_kind.features.insert("amount".into(), FeatureValue { kind: None });
    let mut bad_status = event("bad-status");
    bad_status.status = 42;
    let batch = vec![event("u1"), nan, inf, no_kind, bad_status, event("u2")];
    let answer = client
        .ingest_inferences(IngestInferencesRequest { events: batch })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 2);
    let got = rejections(&answer);
    assert_eq!(
        got,
        vec![
            (1, "latency_ms", "must be finite, found NaN"),
            (2, "features.amount", "must be finite, found inf"),
            (3, "features.amount", "feature value has no kind"),
            (4, "status", "unknown status 42"),
        ]
    );

    // Client streaming: three batches, indices count across the stream.
    let mut nan_label = label("bad-label");
    nan_label.label = None;
    nan_label.value = Some(f64::NAN);
    let requests = vec![
        IngestInferencesRequest {
            events: vec![event("s1"), event("s2")],
        },
        IngestInferencesRequest {
            events: vec![event("s3"), InferenceEvent::default()],
        },
        IngestInferencesRequest {
            events: vec![event("s4")],
        },
    ];
    let answer = client
        .stream_inferences(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 4);
    assert_eq!(answer.rejected.len(), 1);
    assert_eq!(
        (answer.rejected[0].index, answer.rejected[0].field.as_str()),
        (3, "event_id")
    );

    // Labels: unary and streaming.
    let answer = client
        .ingest_labels(IngestLabelsRequest {
            events: vec![label("u1"), nan_label],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 1);
    assert_eq!(answer.rejected[0].field, "value");
    assert_eq!(answer.rejected[0].reason, "must be finite, found NaN");
    let answer = client
        .stream_labels(tokio_stream::iter(vec![
            IngestLabelsRequest {
                events: vec![label("s1")],
            },
            IngestLabelsRequest {
                events: vec![label("s2")],
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 2);

    // Whole-request errors: every event bad, too many events.
    let status = client
        .ingest_inferences(IngestInferencesRequest {
            events: vec![InferenceEvent::default()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("field \"event_id\""), "{}", status.message());
    let status = client
        .ingest_inferences(IngestInferencesRequest {
            events: (0..101).map(|i| event(&format!("m{i}"))).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "too many events: 101 > 100");

    // What the broker holds: exactly the accepted events, keyed by model.
    let expect: BTreeSet<&str> = ["s1", "s2", "s3", "s4", "u1", "u2"].into();
    let inferences = read_topic(&collector.kafka, &collector.kafka.topics.inference, 30, |ms| {
        ms.len() >= expect.len()
    })
    .await;
    let ids: BTreeSet<String> = inferences
        .iter()
        .map(|m| {
            assert_eq!(m.key(), Some(&b"fraud"[..]));
            InferenceEvent::decode(m.payload().unwrap()).unwrap().event_id
        })
        .collect();
    assert_eq!(ids, expect.iter().map(|s| s.to_string()).collect());
    let labels = read_topic(&collector.kafka, &collector.kafka.topics.labels, 30, |ms| ms.len() >= 3).await;
    assert_eq!(labels.len(), 3);
    collector.assert_healthy().await;
    collector.stop().await;
}

/// `IngestInferencesRequest` as the collector reads it: each event's bytes
/// as they are, so a test can send events no well-behaved client would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawInferences {
    #[prost(bytes = "vec", repeated, tag = "1")]
    events: Vec<Vec<u8>>,
}

/// A request whose field 1 is a number, not events.
#[derive(Clone, PartialEq, prost::Message)]
struct NotEvents {
    #[prost(uint64, tag = "1")]
    events: u64,
}

async fn send_raw<M: prost::Message + Default + Send + Sync + 'static>(
    url: &str,
    request: M,
) -> Result<mlwatch_proto::v1::IngestResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(request),
            tonic::codegen::http::uri::PathAndQuery::from_static("/mlwatch.v1.Collector/IngestInferences"),
            tonic_prost::ProstCodec::<M, mlwatch_proto::v1::IngestResponse>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// The collector publishes each event's own bytes: a malformed event is
/// rejected alone, naming its field; unknown fields travel on; the defaults
/// (version, endpoint, status, batch size, time, received_at) are filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_as_received_with_their_defaults() {
    let collector = TestCollector::start("grpc-wire", |_| {}).await;
    let good = event("w1").encode_to_vec();
    // latency_ms (field 6) sent as a varint.
    let mut wrong_type = event("w2").encode_to_vec();
    wrong_type.extend([0x30, 0x01]);
    // An unknown field 99 (varint 7) after a good event.
    let mut unknown = event("w3").encode_to_vec();
    unknown.extend([0x98, 0x06, 0x07]);
    let events = vec![good, wrong_type, unknown, vec![0xff]];
    let answer = send_raw(&collector.grpc(), RawInferences { events }).await.unwrap();
    assert_eq!(answer.accepted, 2);
    let got = rejections(&answer);
    assert_eq!(
        got,
        vec![
            (
                1,
                "latency_ms",
                "malformed protobuf: invalid wire type: Varint (expected SixtyFourBit)"
            ),
            (3, "", "malformed protobuf: truncated varint"),
        ]
    );

    // A request that is not a batch of events.
    let status = send_raw(&collector.grpc(), NotEvents { events: 7 }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "malformed request: events: invalid wire type: Varint (expected LengthDelimited)"
    );

    let before = mlwatch_common::now_ms();
    let events = read_inferences(&collector.kafka, 2, 30).await;
    assert_eq!(events.len(), 2);
    for (e, id) in events.iter().zip(["w1", "w3"]) {
        assert_eq!(e.event_id, id);
        assert_eq!(
            (e.model_version.as_str(), e.endpoint.as_str()),
            ("unversioned", "predict")
        );
        assert_eq!((e.status, e.batch_size), (1, 1));
        assert!(e.timestamp_ms > 0 && e.timestamp_ms <= before, "{}", e.timestamp_ms);
        assert_eq!(e.received_at_ms, e.timestamp_ms);
        assert_eq!(e.features["amount"].kind, Some(feature_value::Kind::Number(10.0)));
    }
    collector.assert_healthy().await;
    collector.stop().await;
}

/// (index, field, reason) of each rejected event of an answer.
fn rejections(answer: &IngestResponse) -> Vec<(u32, &str, &str)> {
    answer
        .rejected
        .iter()
        .map(|r| (r.index, r.field.as_str(), r.reason.as_str()))
        .collect()
}
