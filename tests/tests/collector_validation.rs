//! Table-driven: every kind of bad input a model server can send gets its
//! precise answer (index, field path, reason) from a real collector over
//! HTTP, the valid events of the same request are published to the real
//! broker, and the collector is healthy afterwards.

mod support;

use mlwatch_proto::v1::InferenceEvent;
use mlwatch_testkit::read_topic;
use prost::Message as _;
use rdkafka::Message;
use serde_json::{Value, json};
use support::TestCollector;

/// One bad inference event: its description, the event, and the exact
/// `(field, reason)` the collector must answer.
struct Case {
    what: &'static str,
    event: Value,
    field: &'static str,
    reason: String,
}

fn good(id: &str) -> Value {
    json!({"event_id": id, "model": "fraud", "model_version": "v3", "endpoint": "predict",
           "latency_ms": 12.5, "status": "ok", "batch_size": 1,
           "prediction": {"score": 0.87, "label": "1"},
           "features": {"amount": 120.5, "country": "DE", "is_new": true, "age": null},
           "tags": {"region": "eu"}})
}

fn with(id: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = good(id);
    edit(v.as_object_mut().expect("object"));
    v
}

fn cases(now: i64) -> Vec<Case> {
    let future = now + 3_600_000;
    let past = now - 60 * 24 * 3_600_000;
    let c = |what, event, field, reason: &str| Case {
        what,
        event,
        field,
        reason: reason.to_string(),
    };
    vec![
        c(
            "missing event_id",
            with("x", |m| {
                m.remove("event_id");
            }),
            "event_id",
            "missing required field",
        ),
        c(
            "missing model",
            with("b2", |m| {
                m.remove("model");
            }),
            "model",
            "missing required field",
        ),
        c(
            "missing latency",
            with("b3", |m| {
                m.remove("latency_ms");
            }),
            "latency_ms",
            "missing required field",
        ),
        c(
            "negative latency",
            with("b4", |m| {
                m.insert("latency_ms".into(), json!(-1.5));
            }),
            "latency_ms",
            "must not be negative, found -1.5",
        ),
        c(
            "latency over the limit",
            with("b5", |m| {
                m.insert("latency_ms".into(), json!(1e7));
            }),
            "latency_ms",
            "10000000 ms exceeds the limit of 3600000 ms",
        ),
        c(
            "latency as a string",
            with("b6", |m| {
                m.insert("latency_ms".into(), json!("12"));
            }),
            "latency_ms",
            "expected a number, found a string",
        ),
        c(
            "event_id of the wrong type",
            with("x", |m| {
                m.insert("event_id".into(), json!(42));
            }),
            "event_id",
            "expected a string, found a number",
        ),
        c(
            "event_id too long",
            with("b8-is-far-too-long", |_| {}),
            "event_id",
            "too long: 18 bytes > 16",
        ),
        c(
            "control characters in event_id",
            with("b9\u{7}", |_| {}),
            "event_id",
            "contains control characters",
        ),
        c(
            "timestamp in the future",
            with("b10", |m| {
                m.insert("timestamp".into(), json!(future));
            }),
            "timestamp",
            &format!("{future} ms is more than 300 s in the future"),
        ),
        c(
            "timestamp too far in the past",
            with("b11", |m| {
                m.insert("timestamp".into(), json!(past));
            }),
            "timestamp",
            &format!("{past} ms is more than 2592000 s in the past"),
        ),
        c(
            "timestamp not RFC 3339",
            with("b12", |m| {
                m.insert("timestamp".into(), json!("yesterday"));
            }),
            "timestamp",
            "not an RFC 3339 timestamp: \"yesterday\"",
        ),
        c(
            "timestamp of the wrong type",
            with("b13", |m| {
                m.insert("timestamp".into(), json!(true));
            }),
            "timestamp",
            "expected epoch milliseconds or RFC 3339, found a bool",
        ),
        c(
            "fractional epoch timestamp",
            with("b14", |m| {
                m.insert("timestamp".into(), json!(1.5));
            }),
            "timestamp",
            "expected integer epoch milliseconds or an RFC 3339 string",
        ),
        c(
            "unknown status",
            with("b15", |m| {
                m.insert("status".into(), json!("maybe"));
            }),
            "status",
            "expected \"ok\" or \"error\", found \"maybe\"",
        ),
        c(
            "negative batch size",
            with("b16", |m| {
                m.insert("batch_size".into(), json!(-3));
            }),
            "batch_size",
            "expected a positive integer, found -3",
        ),
        c(
            "wrong feature type",
            with("b17", |m| {
                m["features"]["age"] = json!({"nested": 1});
            }),
            "features.age",
            "wrong feature type: expected a number, string, bool or null, found an object",
        ),
        c(
            "too many features",
            with("b18", |m| {
                m["features"]["extra"] = json!(1);
            }),
            "features",
            "too many features: 5 > 4",
        ),
        c(
            "feature string too long",
            with("b19", |m| {
                m["features"]["country"] = json!("D".repeat(33));
            }),
            "features.country",
            "string too long: 33 bytes > 32",
        ),
        c(
            "features not an object",
            with("b20", |m| {
                m.insert("features".into(), json!([1, 2]));
            }),
            "features",
            "expected an object, found an array",
        ),
        c(
            "unknown field",
            with("b21", |m| {
                m.insert("colour".into(), json!("red"));
            }),
            "colour",
            "unknown field",
        ),
        c(
            "unknown prediction field",
            with("b22", |m| {
                m["prediction"]["proba"] = json!(0.3);
            }),
            "prediction.proba",
            "unknown field",
        ),
        c(
            "score outside [0, 1]",
            with("b23", |m| {
                m["prediction"]["score"] = json!(1.5);
            }),
            "prediction.score",
            "expected a probability in [0, 1], found 1.5",
        ),
        c(
            "class probability outside [0, 1]",
            with("b24", |m| {
                m["prediction"]["scores"] = json!({"a": 2});
            }),
            "prediction.scores.a",
            "expected a probability in [0, 1], found 2",
        ),
        c(
            "fractional class label",
            with("b25", |m| {
                m["prediction"]["label"] = json!(0.5);
            }),
            "prediction.label",
            "expected a class label (string, integer or bool), found a number",
        ),
        c(
            "tag of the wrong type",
            with("b26", |m| {
                m["tags"]["region"] = json!(7);
            }),
            "tags.region",
            "expected a string, found a number",
        ),
        c(
            "too many tags",
            with("b27", |m| {
                m.insert("tags".into(), json!({"a": "1", "b": "2", "c": "3"}));
            }),
            "tags",
            "too many tags: 3 > 2",
        ),
        c(
            "error text too long",
            with("b28", |m| {
                m.insert("status".into(), json!("error"));
                m.insert("error".into(), json!("e".repeat(40)));
            }),
            "error",
            "string too long: 40 bytes > 32",
        ),
        c("not an object", json!(17), "", "expected a JSON object, found a number"),
        c(
            "timestamp 0 (1970)",
            with("b29", |m| {
                m.insert("timestamp".into(), json!(0));
            }),
            "timestamp",
            "0 (1970-01-01) is not an event time: leave the field out to use the arrival time",
        ),
        c(
            "batch_size 0",
            with("b30", |m| {
                m.insert("batch_size".into(), json!(0));
            }),
            "batch_size",
            "must be at least 1, found 0 (leave it out for 1)",
        ),
    ]
}

/// A key written twice rejects its event alone, naming the key's path, in
/// an array and in JSON Lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_given_twice_rejects_its_event_alone() {
    let collector = TestCollector::start("validation-duplicates", |_| {}).await;
    let http = reqwest::Client::new();
    let one = |id: &str| format!(r#"{{"event_id":"{id}","model":"fraud","latency_ms":3.0}}"#);
    let twice = r#"{"event_id":"d1","model":"fraud","latency_ms":3.0,"latency_ms":900.0}"#;
    let nested = r#"{"event_id":"d2","model":"fraud","latency_ms":3.0,"features":{"amount":1,"amount":2}}"#;
    let array = format!("[{},{twice},{nested},{}]", one("ok-1"), one("ok-2"));
    let lines = format!("{}\n{twice}\n{nested}\n{}\n", one("ok-3"), one("ok-4"));
    for body in [array, lines] {
        let r = http
            .post(collector.url("/v1/inferences"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            answer,
            json!({"accepted": 2, "rejected": [
                {"index": 1, "field": "latency_ms", "reason": "key given twice (JSON leaves its value open)"},
                {"index": 2, "field": "features.amount", "reason": "key given twice (JSON leaves its value open)"},
            ]})
        );
    }
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_its_precise_answer() {
    let collector = TestCollector::start("validation", |c| {
        c.limits.max_features = 4;
        c.limits.max_tags = 2;
        c.limits.max_string_bytes = 32;
        c.limits.max_id_bytes = 16;
        c.limits.max_body_bytes = 64 * 1024;
        c.limits.max_events_per_request = 50;
    })
    .await;
    let http = reqwest::Client::new();
    let now = mlwatch_common::now_ms();
    let table = cases(now);
    assert!(table.len() >= 20);

    // One batch: a good event first, then every bad one, then a good one.
    let mut batch = vec![good("good-1")];
    batch.extend(table.iter().map(|c| c.event.clone()));
    batch.push(good("good-2"));
    let r = http
        .post(collector.url("/v1/inferences"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer:#}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), table.len(), "{answer:#}");
    for (i, (case, got)) in table.iter().zip(rejected).enumerate() {
        assert_eq!(
            (got["index"].as_u64(), got["field"].as_str(), got["reason"].as_str()),
            (Some(i as u64 + 1), Some(case.field), Some(case.reason.as_str())),
            "case {:?}",
            case.what
        );
    }

    // Label events: their own rules.
    let labels = json!([
        {"event_id": "l0", "model": "fraud", "label": "1"},
        {"event_id": "l1", "model": "fraud"},
        {"event_id": "l2", "model": "fraud", "label": "1", "value": 0.5},
        {"event_id": "l3", "model": "fraud", "label": {"class": 1}},
        {"event_id": "l4", "model": "fraud", "label": "1", "prediction": "1"},
    ]);
    let r = http
        .post(collector.url("/v1/labels"))
        .json(&labels)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"accepted": 1, "rejected": [
            {"index": 1, "field": "label", "reason": "missing: a label event needs `label` (classifiers) or `value` (regressors)"},
            {"index": 2, "field": "value", "reason": "give either `label` or `value`, not both"},
            {"index": 3, "field": "label", "reason": "expected a class label (string, integer or bool), found an object"},
            {"index": 4, "field": "prediction", "reason": "unknown field"},
        ]})
    );

    // Whole-body problems: one status and one reason each.
    let ok = good("good-3").to_string();
    let too_many: Vec<Value> = (0..51).map(|i| good(&format!("m{i}"))).collect();
    let bodies: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "empty body",
            b"  ".to_vec(),
            400,
            "empty body: expected a JSON object, an array or JSON Lines",
        ),
        ("invalid UTF-8", vec![b'{', 0xff, 0xfe, b'}'], 400, "body is not UTF-8"),
        (
            "malformed array",
            b"[{\"event_id\": ".to_vec(),
            400,
            "malformed JSON array",
        ),
        (
            "payload too large",
            vec![b' '; 70 * 1024],
            413,
            "body too large: limit is 65536 bytes",
        ),
        (
            "too many events",
            serde_json::to_vec(&too_many).unwrap(),
            413,
            "too many events: 51 > 50",
        ),
    ];
    for (what, body, status, reason) in bodies {
        let r = http
            .post(collector.url("/v1/inferences"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{what}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["status"], status, "{what}: {answer}");
        let error = answer["detail"].as_str().unwrap_or_default();
        assert!(error.starts_with(reason), "{what}: {error:?}");
    }

    // JSON Lines: a broken line is rejected alone, by its line index.
    let lines = format!("{ok}\nnot json\n{}\n", good("good-4"));
    let r = http
        .post(collector.url("/v1/inferences"))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON line")
    );

    // Every event bad: 400 with the list.
    let r = http
        .post(collector.url("/v1/inferences"))
        .json(&json!([table[0].event]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["rejected"][0]["field"], "event_id");

    // Rejections are counted, and the collector is still healthy.
    let counted = collector
        .metric("mlwatch_collector_events_total{kind=\"inference\",outcome=\"rejected\",reason=\"timestamp\"}")
        .await;
    assert_eq!(counted, 6.0);
    collector.assert_healthy().await;

    // Exactly the good events reached Kafka.
    let expected = ["good-1", "good-2", "good-3", "good-4", "health-check"];
    let messages = read_topic(&collector.kafka, &collector.kafka.topics.inference, 30, |ms| {
        ms.len() >= expected.len()
    })
    .await;
    let mut ids: Vec<String> = messages
        .iter()
        .map(|m| InferenceEvent::decode(m.payload().unwrap()).unwrap().event_id)
        .collect();
    ids.sort();
    assert_eq!(ids, expected);
    collector.stop().await;
}

/// Request bodies in memory are bounded: while one client holds most of the
/// budget (its headers sent, its body not yet), another is told 429 before
/// its body is read; once the first finishes, the second gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_memory_is_bounded_with_429() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let collector = TestCollector::start("bodies", |c| {
        c.ingest.max_in_flight_body_bytes = 10 * 1024;
        c.limits.max_body_bytes = 8 * 1024;
    })
    .await;
    let event = good("slow-1").to_string();
    let padded = format!("{event}{}", " ".repeat(8 * 1024 - event.len()));
    let mut slow = tokio::net::TcpStream::connect(collector.running.http_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/inferences HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        padded.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&padded.as_bytes()[..100]).await.unwrap();
    slow.flush().await.unwrap();

    let http = reqwest::Client::new();
    let second = format!("{}{}", good("fast-1"), " ".repeat(4000));
    let mut refused = None;
    for _ in 0..50 {
        let r = http
            .post(collector.url("/v1/inferences"))
            .body(second.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        // The slow request may not have been admitted yet.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refused = refused.expect("second request refused while the first holds the budget");
    assert_eq!(refused.headers()["retry-after"], "1");
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"type": "about:blank", "title": "Too Many Requests", "status": 429,
            "detail": "collector is at capacity (request bodies in memory); retry after 1 s",
            "retry_after_secs": 1})
    );

    slow.write_all(&padded.as_bytes()[100..]).await.unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let r = http
        .post(collector.url("/v1/inferences"))
        .body(second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    collector.stop().await;
}
