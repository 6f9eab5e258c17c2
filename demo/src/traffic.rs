//! A traffic generator: posts inference events over HTTP to the collector,
//! at the load the simulated platform says each model receives, with the
//! latency the platform's queueing model gives at its current replicas.
//! For models whose active version has a known accuracy, it also posts the
//! ground-truth label of each event (right with that probability), so that
//! a bad release shows as accuracy decay and a rollback fixes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sim::SimPlatform;

/// Counters of what the generator sent.
#[derive(Default, Debug)]
pub struct Sent {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    /// Label events accepted.
    pub labels: AtomicU64,
}

/// One inference event in the public JSON shape (DESIGN.md).
pub fn inference_json(
    event_id: &str,
    model: &str,
    version: &str,
    ts_ms: i64,
    latency_ms: f64,
    rng: &mut impl Rng,
) -> Value {
    let score: f64 = rng.random_range(0.0..1.0);
    let amount: f64 = rng.random_range(1.0..500.0);
    let countries = ["DE", "FR", "US", "GB", "IN"];
    json!({
        "event_id": event_id,
        "model": model,
        "model_version": version,
        "endpoint": "predict",
        "timestamp": ts_ms,
        "latency_ms": (latency_ms * 100.0).round() / 100.0,
        "status": "ok",
        "batch_size": 1,
        "prediction": {"score": score, "label": if score > 0.5 { "1" } else { "0" }},
        "features": {
            "amount": (amount * 100.0).round() / 100.0,
            "country": countries[rng.random_range(0..countries.len())],
            "is_new": rng.random_bool(0.2),
        },
        "tags": {"region": "eu"},
    })
}

/// The ground-truth label event for a prediction: the predicted label when
/// `correct`, the other class otherwise.
pub fn label_json(event_id: &str, model: &str, ts_ms: i64, predicted: &str, correct: bool) -> Value {
    let other = if predicted == "1" { "0" } else { "1" };
    json!({
        "event_id": event_id,
        "model": model,
        "timestamp": ts_ms,
        "label": if correct { predicted } else { other },
    })
}

/// Starts posting events for `models` every `tick` until `shutdown`.
pub fn start(
    collector_http: String,
    sim: SimPlatform,
    models: Vec<String>,
    tick: Duration,
    shutdown: CancellationToken,
) -> (Arc<Sent>, JoinHandle<()>) {
    let sent = Arc::new(Sent::default());
    let counters = sent.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let url = format!("{collector_http}/v1/inferences");
        let labels_url = format!("{collector_http}/v1/labels");
        let mut carry = vec![0.0f64; models.len()];
        let mut seq = 0u64;
        let mut ticker = tokio::time::interval(tick);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let mut batch = Vec::new();
            let mut labels = Vec::new();
            {
                let mut rng = rand::rng();
                let now = mlwatch_common::now_ms();
                for (i, model) in models.iter().enumerate() {
                    let Some(m) = sim.model(model) else { continue };
                    carry[i] += m.load_rps * tick.as_secs_f64();
                    while carry[i] >= 1.0 {
                        carry[i] -= 1.0;
                        seq += 1;
                        let latency = m.sample_latency_ms(&mut rng);
                        let event_id = format!("{model}-{seq}");
                        let event =
                            inference_json(&event_id, model, &m.deployment.active_version, now, latency, &mut rng);
                        if let Some(accuracy) = m.accuracy() {
                            let predicted = event["prediction"]["label"].as_str().unwrap_or("0");
                            let correct = rng.random_bool(accuracy);
                            labels.push(label_json(&event_id, model, now, predicted, correct));
                        }
                        batch.push(event);
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            match client.post(&url).json(&batch).send().await {
                Ok(r) if r.status().is_success() => {
                    counters.accepted.fetch_add(n, Ordering::Relaxed);
                    if !labels.is_empty() {
                        post_labels(&client, &labels_url, &labels, &counters).await;
                    }
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "collector refused a batch");
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(error = %error.without_url(), "collector unreachable");
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    });
    (sent, task)
}

async fn post_labels(client: &reqwest::Client, url: &str, labels: &[Value], counters: &Sent) {
    let n = labels.len() as u64;
    match client.post(url).json(labels).send().await {
        Ok(r) if r.status().is_success() => {
            counters.labels.fetch_add(n, Ordering::Relaxed);
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), "collector refused a label batch");
            counters.failed.fetch_add(n, Ordering::Relaxed);
        }
        Err(error) => {
            tracing::warn!(error = %error.without_url(), "collector unreachable");
            counters.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_right_or_the_other_class() {
        let right = label_json("e1", "fraud", 5, "1", true);
        assert_eq!(right["label"], "1");
        assert_eq!(right["event_id"], "e1");
        assert_eq!(label_json("e1", "fraud", 5, "1", false)["label"], "0");
        assert_eq!(label_json("e1", "fraud", 5, "0", false)["label"], "1");
    }
}
