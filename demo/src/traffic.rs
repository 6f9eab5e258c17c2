//! A traffic generator: posts inference events over HTTP to the collector,
//! at the load the simulated platform says each model receives, with the
//! latency the platform's queueing model gives at its current replicas.
//! For models whose active version has a known accuracy, it also posts the
//! ground-truth label of each event (right with that probability), after
//! the model's label delay, so that a bad release shows as accuracy decay
//! once its late labels arrive and a rollback fixes it. The `amount`
//! feature follows the model's shape, so a covariate drift can be injected.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use mlwatch_testkit::sim::SimPlatform;

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
    amount: f64,
    rng: &mut impl Rng,
) -> Value {
    let score: f64 = rng.random_range(0.0..1.0);
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
            "amount": amount,
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
        // Labels not yet due, earliest first.
        let mut due: BinaryHeap<Reverse<PendingLabel>> = BinaryHeap::new();
        let mut ticker = tokio::time::interval(tick);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let mut batch = Vec::new();
            let now = mlwatch_common::now_ms();
            {
                let mut rng = rand::rng();
                for (i, model) in models.iter().enumerate() {
                    let Some(m) = sim.model(model) else { continue };
                    carry[i] += m.load_rps * tick.as_secs_f64();
                    while carry[i] >= 1.0 {
                        carry[i] -= 1.0;
                        seq += 1;
                        let latency = m.sample_latency_ms(&mut rng);
                        let event_id = format!("{model}-{seq}");
                        let amount = m.sample_amount(&mut rng);
                        let event = inference_json(
                            &event_id,
                            model,
                            &m.deployment.active_version,
                            now,
                            latency,
                            amount,
                            &mut rng,
                        );
                        if let Some(accuracy) = m.accuracy() {
                            due.push(Reverse(PendingLabel {
                                due_ms: now + m.sample_label_delay_ms(&mut rng),
                                seq,
                                event_id,
                                model: model.clone(),
                                predicted: event["prediction"]["label"].as_str().unwrap_or("0").to_string(),
                                correct: rng.random_bool(accuracy),
                            }));
                        }
                        batch.push(event);
                    }
                }
            }
            if !batch.is_empty() {
                post(
                    &client,
                    &url,
                    &batch,
                    &counters.accepted,
                    &counters.failed,
                    "inferences",
                )
                .await;
            }
            // Labels are sent once due, stamped with their arrival time.
            let mut labels = Vec::new();
            while due.peek().is_some_and(|Reverse(l)| l.due_ms <= now) {
                let Some(Reverse(l)) = due.pop() else { break };
                labels.push(label_json(&l.event_id, &l.model, now, &l.predicted, l.correct));
            }
            if !labels.is_empty() {
                post(
                    &client,
                    &labels_url,
                    &labels,
                    &counters.labels,
                    &counters.failed,
                    "labels",
                )
                .await;
            }
        }
    });
    (sent, task)
}

/// A ground-truth label waiting for its delay to pass.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PendingLabel {
    due_ms: i64,
    seq: u64,
    event_id: String,
    model: String,
    predicted: String,
    correct: bool,
}

/// Posts one batch; counts it as `ok` when the collector accepted it, as
/// failed otherwise (logged, never silent).
async fn post(client: &reqwest::Client, url: &str, items: &[Value], ok: &AtomicU64, failed: &AtomicU64, what: &str) {
    let n = items.len() as u64;
    match client.post(url).json(items).send().await {
        Ok(r) if r.status().is_success() => {
            ok.fetch_add(n, Ordering::Relaxed);
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), what, "collector refused a batch");
            failed.fetch_add(n, Ordering::Relaxed);
        }
        Err(error) => {
            tracing::warn!(error = %error.without_url(), what, "collector unreachable");
            failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_shape_moves_the_mass_and_stays_in_the_reference_range() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut m = mlwatch_testkit::sim::ModelSim::new("recsys", "v12", 3, 80.0);
        let mean = |m: &mlwatch_testkit::sim::ModelSim, rng: &mut rand::rngs::StdRng| {
            let xs: Vec<f64> = (0..20_000).map(|_| m.sample_amount(rng)).collect();
            assert!(xs.iter().all(|x| (1.0..=500.0).contains(x)), "outside [1, 500]");
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        // Uniform on [1, 500]: mean 250.5; u^0.5: 1 + 499 * 2/3 = 333.7.
        assert!((mean(&m, &mut rng) - 250.5).abs() < 5.0);
        m.amount_exponent = 0.5;
        assert!((mean(&m, &mut rng) - 333.7).abs() < 5.0);
    }

    #[test]
    fn label_delays_fall_in_the_range_and_due_labels_come_first() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let m = mlwatch_testkit::sim::ModelSim::new("fraud", "v4", 2, 50.0).with_label_delay_secs(20.0, 50.0);
        let delays: Vec<i64> = (0..1000).map(|_| m.sample_label_delay_ms(&mut rng)).collect();
        assert!(delays.iter().all(|d| (20_000..=50_000).contains(d)));
        assert!(delays.iter().any(|d| *d < 25_000) && delays.iter().any(|d| *d > 45_000));
        assert_eq!(
            mlwatch_testkit::sim::ModelSim::new("fraud", "v4", 2, 50.0).sample_label_delay_ms(&mut rng),
            0
        );
        let label = |due_ms, seq| {
            Reverse(PendingLabel {
                due_ms,
                seq,
                event_id: format!("e{seq}"),
                model: "fraud".into(),
                predicted: "1".into(),
                correct: true,
            })
        };
        let mut heap: BinaryHeap<_> = [label(30, 1), label(10, 2), label(20, 3)].into_iter().collect();
        assert_eq!(heap.pop().map(|Reverse(l)| l.due_ms), Some(10));
        assert_eq!(heap.pop().map(|Reverse(l)| l.due_ms), Some(20));
    }

    #[test]
    fn labels_are_right_or_the_other_class() {
        let right = label_json("e1", "fraud", 5, "1", true);
        assert_eq!(right["label"], "1");
        assert_eq!(right["event_id"], "e1");
        assert_eq!(label_json("e1", "fraud", 5, "1", false)["label"], "0");
        assert_eq!(label_json("e1", "fraud", 5, "0", false)["label"], "1");
    }
}
