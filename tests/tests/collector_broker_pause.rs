//! The collector never loses an event it acknowledged: under load, its
//! broker (a dedicated Tansu process on its own port) is frozen with
//! SIGSTOP and later resumed with SIGCONT. Every event answered 2xx must be
//! in Kafka afterwards; every other one must have been answered 429 or 503
//! (the client's cue to retry), never anything else; the same over gRPC
//! (OK, or RESOURCE_EXHAUSTED / UNAVAILABLE with a retry hint).

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlwatch_proto::v1::collector_client::CollectorClient;
use mlwatch_proto::v1::{InferenceEvent, IngestInferencesRequest};
use mlwatch_testkit::broker::PrivateBroker;
use mlwatch_testkit::{kafka_for_test, read_topic};
use prost::Message as _;
use rdkafka::Message;
use serde_json::json;
use support::TestCollector;

#[derive(Default)]
struct Outcomes {
    /// Event id → HTTP status of the request that carried it.
    status: BTreeMap<String, u16>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_a_frozen_broker() {
    let broker = PrivateBroker::start().await;
    let (mut kafka, _) = kafka_for_test("pause");
    kafka.bootstrap_servers = broker.bootstrap();
    kafka.produce_timeout_ms = 2_000;
    let collector = TestCollector::start_with(kafka.clone(), |c| {
        c.ingest.max_in_flight_events = 100;
    })
    .await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (http, url, outcomes, stop) = (
            http.clone(),
            collector.url("/v1/inferences"),
            outcomes.clone(),
            stop.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let ids: Vec<String> = (0..20).map(|i| format!("w{worker}-{n}-{i}")).collect();
                n += 1;
                let body: Vec<_> = ids
                    .iter()
                    .map(|id| json!({"event_id": id, "model": format!("m{}", worker % 3), "latency_ms": 5.0}))
                    .collect();
                let status = match http.post(&url).json(&body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => panic!("request failed without an answer: {e}"),
                };
                {
                    let mut o = outcomes.lock().unwrap();
                    for id in ids {
                        o.status.insert(id, status);
                    }
                }
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // gRPC senders too: OK, RESOURCE_EXHAUSTED and UNAVAILABLE are recorded
    // as 200, 429 and 503; anything else as 1000 + the gRPC code.
    for worker in 8..10 {
        let (url, outcomes, stop) = (collector.grpc(), outcomes.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut client = CollectorClient::connect(url).await.unwrap();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let ids: Vec<String> = (0..20).map(|i| format!("g{worker}-{n}-{i}")).collect();
                n += 1;
                let events = ids
                    .iter()
                    .map(|id| InferenceEvent {
                        event_id: id.clone(),
                        model: format!("m{}", worker % 3),
                        latency_ms: 5.0,
                        ..InferenceEvent::default()
                    })
                    .collect();
                let status = match client.ingest_inferences(IngestInferencesRequest { events }).await {
                    Ok(_) => 200,
                    Err(s) => {
                        assert!(s.metadata().get("retry-after").is_some(), "no retry hint: {s:?}");
                        match s.code() {
                            tonic::Code::ResourceExhausted => 429,
                            tonic::Code::Unavailable => 503,
                            other => 1000 + other as u16,
                        }
                    }
                };
                {
                    let mut o = outcomes.lock().unwrap();
                    for id in ids {
                        o.status.insert(id, status);
                    }
                }
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    let count = |code: u16| outcomes.lock().unwrap().status.values().filter(|s| **s == code).count();
    // Healthy load, then the broker freezes long enough for produce
    // timeouts, then it resumes and load goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_pause = count(200);
    assert!(before_pause > 0, "nothing accepted before the pause");
    broker.freeze();
    tokio::time::sleep(Duration::from_secs(6)).await;
    broker.resume();
    let at_resume = count(200);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.cancel();
    for s in senders {
        s.await.expect("sender did not panic");
    }

    let outcomes = std::mem::take(&mut outcomes.lock().unwrap().status);
    let by_status = outcomes.values().fold(BTreeMap::<u16, usize>::new(), |mut m, s| {
        *m.entry(*s).or_default() += 1;
        m
    });
    eprintln!("outcomes by status: {by_status:?}; accepted before pause {before_pause}, at resume {at_resume}");
    let unexpected: Vec<_> = by_status.keys().filter(|s| ![200, 429, 503].contains(*s)).collect();
    assert!(unexpected.is_empty(), "statuses other than 200/429/503: {by_status:?}");
    assert!(
        by_status.get(&429).copied().unwrap_or(0) + by_status.get(&503).copied().unwrap_or(0) > 0,
        "the frozen broker never pushed back: {by_status:?}"
    );
    assert!(count_after(&outcomes, at_resume), "nothing accepted after the resume");

    let acked: BTreeSet<&String> = outcomes.iter().filter(|(_, s)| **s == 200).map(|(id, _)| id).collect();
    // Read until every acknowledged id was seen (decoding each message once).
    let missing = RefCell::new((0usize, acked.clone()));
    read_topic(&kafka, &kafka.topics.inference, 120, |ms| {
        let (decoded, missing) = &mut *missing.borrow_mut();
        for m in &ms[*decoded..] {
            missing.remove(&InferenceEvent::decode(m.payload().unwrap()).unwrap().event_id);
        }
        *decoded = ms.len();
        missing.is_empty()
    })
    .await;
    let lost: Vec<_> = missing.into_inner().1.into_iter().take(10).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in kafka ({} acked): {lost:?}",
        acked.len()
    );
    collector.stop().await;
    drop(broker);
}

fn count_after(outcomes: &BTreeMap<String, u16>, at_resume: usize) -> bool {
    outcomes.values().filter(|s| **s == 200).count() > at_resume
}

/// A gRPC stream that fails part-way (the broker freezes) answers with how
/// many of its messages were handled; resending the rest once the broker is
/// back loses nothing, and only the failed message's events can be doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_fails_part_way_says_where_to_resume() {
    let broker = PrivateBroker::start().await;
    let (mut kafka, _) = kafka_for_test("pause-stream");
    kafka.bootstrap_servers = broker.bootstrap();
    kafka.produce_timeout_ms = 2_000;
    let collector = TestCollector::start_with(kafka.clone(), |_| {}).await;
    let batch = |m: usize| IngestInferencesRequest {
        events: (0..50)
            .map(|i| InferenceEvent {
                event_id: format!("s{m}-{i}"),
                model: "fraud".into(),
                latency_ms: 5.0,
                ..InferenceEvent::default()
            })
            .collect(),
    };
    let mut client = CollectorClient::connect(collector.grpc()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let call = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .stream_inferences(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        }
    });
    for m in 0..10 {
        tx.send(batch(m)).await.unwrap();
    }
    // Let the first ten be acknowledged, then freeze the broker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.freeze();
    for m in 10..20 {
        if tx.send(batch(m)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let status = call
        .await
        .unwrap()
        .expect_err("the stream fails while the broker is frozen");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let done = mlwatch_proto::v1::IngestResponse::decode(status.details()).expect("an IngestResponse in the details");
    let handled = done.handled_messages as usize;
    assert!(handled >= 10, "{done:?}");
    assert_eq!(done.accepted as usize, handled * 50);
    assert_eq!(
        status
            .metadata()
            .get("mlwatch-accepted-messages")
            .unwrap()
            .to_str()
            .unwrap(),
        handled.to_string()
    );
    assert!(
        status.message().contains(&format!("resend from message {handled}")),
        "{}",
        status.message()
    );

    broker.resume();
    // Resend the rest as a client would: each failure says where to resume
    // (the first produce after the freeze can fail too, until the collector
    // replaced its fenced producer).
    let mut failed = BTreeSet::from([format!("s{handled}")]);
    let mut next = handled;
    for attempt in 0.. {
        assert!(attempt < 30, "the rest was never accepted");
        let rest: Vec<_> = (next..20).map(batch).collect();
        match client.stream_inferences(tonic::codegen::tokio_stream::iter(rest)).await {
            Ok(answer) => {
                assert_eq!(answer.into_inner().accepted as usize, (20 - next) * 50);
                break;
            }
            Err(status) => {
                let done = mlwatch_proto::v1::IngestResponse::decode(status.details()).expect("details");
                next += done.handled_messages as usize;
                failed.insert(format!("s{next}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    let messages = read_topic(&kafka, &kafka.topics.inference, 60, |ms| {
        ms.iter()
            .filter_map(|m| m.payload())
            .filter_map(|p| InferenceEvent::decode(p).ok())
            .map(|e| e.event_id)
            .collect::<BTreeSet<_>>()
            .len()
            >= 1_000
    })
    .await;
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|m| m.payload())
        .filter_map(|p| InferenceEvent::decode(p).ok())
        .map(|e| e.event_id)
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 1_000, "every event arrived");
    let mut seen = BTreeSet::new();
    let doubled: BTreeSet<String> = ids
        .iter()
        .filter(|id| !seen.insert(*id))
        .map(|id| id.split('-').next().unwrap().to_string())
        .collect();
    assert!(
        doubled.is_subset(&failed),
        "only failed messages' events may be doubled: {doubled:?} (failed: {failed:?})"
    );
    collector.stop().await;
}
