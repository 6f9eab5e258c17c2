//! The standard benchmark event: 20 numeric and 5 categorical features, a
//! binary prediction with a score, labels for half of the events.

use std::collections::HashMap;

use mlwatch_proto::v1::{FeatureValue, InferenceEvent, InferenceStatus, LabelEvent, Prediction, feature_value};
use rand::Rng;
use rand::rngs::SmallRng;

pub const NUMERIC: usize = 20;
pub const CATEGORICAL: usize = 5;
const CATEGORIES: [&str; 8] = ["DE", "FR", "US", "GB", "IN", "BR", "JP", "NG"];

/// Feature names, built once.
pub struct Names {
    numeric: Vec<String>,
    categorical: Vec<String>,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            numeric: (0..NUMERIC).map(|i| format!("num_{i:02}")).collect(),
            categorical: (0..CATEGORICAL).map(|i| format!("cat_{i}")).collect(),
        }
    }
}

/// One standard inference event for `model` (version `v1`).
pub fn inference(
    names: &Names,
    rng: &mut SmallRng,
    model: &str,
    seq: u64,
    ts_ms: i64,
    latency_ms: f64,
) -> InferenceEvent {
    let mut features = HashMap::with_capacity(NUMERIC + CATEGORICAL);
    for n in &names.numeric {
        let x: f64 = rng.random_range(-3.0..3.0);
        features.insert(
            n.clone(),
            FeatureValue {
                kind: Some(feature_value::Kind::Number(x)),
            },
        );
    }
    for c in &names.categorical {
        let v = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        features.insert(
            c.clone(),
            FeatureValue {
                kind: Some(feature_value::Kind::Text(v.to_string())),
            },
        );
    }
    let score: f64 = rng.random_range(0.0..1.0);
    InferenceEvent {
        event_id: format!("{model}-{seq}"),
        model: model.to_string(),
        model_version: "v1".into(),
        endpoint: "predict".into(),
        timestamp_ms: ts_ms,
        latency_ms,
        status: InferenceStatus::Ok as i32,
        error: String::new(),
        batch_size: 1,
        prediction: Some(Prediction {
            score: Some(score),
            label: Some(if score > 0.5 { "1" } else { "0" }.into()),
            value: None,
            scores: HashMap::new(),
        }),
        features,
        tags: HashMap::new(),
        received_at_ms: ts_ms,
    }
}

/// The label of an event (sent for half of the events).
pub fn label(model: &str, seq: u64, ts_ms: i64, rng: &mut SmallRng) -> LabelEvent {
    LabelEvent {
        event_id: format!("{model}-{seq}"),
        model: model.to_string(),
        timestamp_ms: ts_ms,
        label: Some(if rng.random_bool(0.5) { "1" } else { "0" }.into()),
        value: None,
        received_at_ms: ts_ms,
    }
}

/// An inference event in the public JSON shape (DESIGN.md), as a client
/// would post it or a JSON Lines file would hold it.
pub fn to_json(e: &InferenceEvent) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let features: Map<String, Value> = e
        .features
        .iter()
        .map(|(k, v)| {
            let v = match &v.kind {
                Some(feature_value::Kind::Number(x)) => json!(x),
                Some(feature_value::Kind::Text(t)) => json!(t),
                Some(feature_value::Kind::Flag(b)) => json!(b),
                Some(feature_value::Kind::Missing(_)) | None => Value::Null,
            };
            (k.clone(), v)
        })
        .collect();
    let mut prediction = Map::new();
    if let Some(p) = &e.prediction {
        if let Some(s) = p.score {
            prediction.insert("score".into(), json!(s));
        }
        if let Some(l) = &p.label {
            prediction.insert("label".into(), json!(l));
        }
    }
    json!({
        "event_id": e.event_id,
        "model": e.model,
        "model_version": e.model_version,
        "endpoint": e.endpoint,
        "timestamp": e.timestamp_ms,
        "latency_ms": e.latency_ms,
        "status": if e.status == InferenceStatus::Error as i32 { "error" } else { "ok" },
        "batch_size": e.batch_size,
        "prediction": prediction,
        "features": features,
    })
}

/// A label event in the public JSON shape.
pub fn label_to_json(l: &LabelEvent) -> serde_json::Value {
    serde_json::json!({
        "event_id": l.event_id,
        "model": l.model,
        "timestamp": l.timestamp_ms,
        "label": l.label,
    })
}

/// A reference profile of the standard event for `model` (version 1),
/// from 5,000 events of the same distribution.
pub fn profile(model: &str) -> anyhow::Result<mlwatch_analyzer::drift::Profile> {
    use mlwatch_analyzer::drift::{BuildOptions, ProfileBuilder};
    use rand::SeedableRng;
    let names = Names::default();
    let mut rng = SmallRng::seed_from_u64(29);
    let mut b = ProfileBuilder::new(BuildOptions::new(model, 1))?;
    for i in 0..5000 {
        b.add_event(&inference(&names, &mut rng, model, i, 0, 20.0));
    }
    Ok(b.finish()?)
}

/// Uploads a reference profile of the standard event for `model` to the
/// analyzer's API at `api`.
pub async fn upload_profile(api: &str, model: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .put(format!("{api}/v1/models/{model}/profile"))
        .body(profile(model)?.to_json())
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "profile upload: {}",
        response.text().await?
    );
    Ok(())
}
