//! Replay: streams a JSON Lines file of inference and label events (the
//! DESIGN.md shape) through the collector with the [`crate::client`], at a
//! given rate or as fast as the collector takes them. Also how history is
//! backfilled. Inferences and labels go in full batches of their own, one
//! request at a time; a label is sent only once the batch holding its
//! prediction was acknowledged ([`order`], pure, decides the batches). A
//! line that is not JSON is reported by its line number and skipped.

pub mod order;

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::client::{Client, ClientError, Kind};
use order::{Batch, Orderer};

/// Whether a JSON event is a label event (it carries `label` or `value`
/// and none of the inference-only fields) or an inference event.
pub fn kind_of(event: &Value) -> Kind {
    const INFERENCE_ONLY: &[&str] = &[
        "latency_ms",
        "prediction",
        "features",
        "status",
        "batch_size",
        "endpoint",
        "model_version",
        "tags",
        "error",
    ];
    match event {
        Value::Object(m)
            if (m.contains_key("label") || m.contains_key("value"))
                && !INFERENCE_ONLY.iter().any(|k| m.contains_key(*k)) =>
        {
            Kind::Labels
        }
        _ => Kind::Inferences,
    }
}

/// A rejected line of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LineRejection {
    /// 1-based line number in the file.
    pub line: usize,
    pub field: String,
    pub reason: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: Vec<LineRejection>,
    pub retries: u32,
    pub elapsed: Duration,
}

/// Replay settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events per second; `None`: as fast as possible.
    pub rate_per_sec: Option<f64>,
    /// Events per request.
    pub batch_size: usize,
}

/// The prediction an event names: its model and event id, when it has both.
pub fn key_of(event: &Value) -> Option<(String, String)> {
    let text = |field| event.get(field).and_then(Value::as_str).map(str::to_owned);
    Some((text("model")?, text("event_id")?))
}

/// An event and its 1-based line number.
type Line = (usize, Value);

/// Replays every line of `input`; `progress` is called with the number of
/// lines read so far after each request.
pub async fn replay(
    input: impl tokio::io::AsyncBufRead + Unpin,
    client: &Client,
    options: &Options,
    mut progress: impl FnMut(u64),
) -> Result<Report, ClientError> {
    let started = Instant::now();
    let mut report = Report::default();
    let mut lines = input.lines();
    let mut line_no = 0usize;
    let mut order = Orderer::new(options.batch_size);
    let sender = Sender {
        client,
        options,
        started,
    };
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| ClientError::Setup(format!("cannot read input: {e}")))?
    {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(event) => {
                let key = key_of(&event);
                match kind_of(&event) {
                    Kind::Inferences => order.push_inference(key, (line_no, event)),
                    Kind::Labels => order.push_label(key, (line_no, event)),
                }
                sender
                    .drain(&mut order, &mut report, || progress(line_no as u64))
                    .await?;
            }
            Err(e) => report.rejected.push(LineRejection {
                line: line_no,
                field: String::new(),
                reason: format!("malformed JSON line: {e}"),
            }),
        }
    }
    order.finish();
    sender
        .drain(&mut order, &mut report, || progress(line_no as u64))
        .await?;
    progress(line_no as u64);
    report.rejected.sort_by_key(|r| r.line);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Sends the batches an [`Orderer`] has ready.
struct Sender<'a> {
    client: &'a Client,
    options: &'a Options,
    started: Instant,
}

impl Sender<'_> {
    /// Sends every ready batch, one request at a time, acknowledging each
    /// to `order` once the collector answered it, then keeps the pace.
    async fn drain(
        &self,
        order: &mut Orderer<(String, String), Line>,
        report: &mut Report,
        mut progress: impl FnMut(),
    ) -> Result<(), ClientError> {
        while let Some(batch) = order.next_batch() {
            self.send(batch, report).await?;
            order.acknowledged();
            pace(self.options, report, self.started).await;
            progress();
        }
        Ok(())
    }

    async fn send(&self, batch: Batch<Line>, report: &mut Report) -> Result<(), ClientError> {
        let (lines, events): (Vec<usize>, Vec<Value>) = batch.items.into_iter().unzip();
        let summary = self.client.send(batch.kind, &events).await?;
        report.sent += events.len() as u64;
        report.accepted += summary.accepted as u64;
        report.retries += summary.retries;
        report
            .rejected
            .extend(summary.rejected.into_iter().map(|r| LineRejection {
                line: lines.get(r.index).copied().unwrap_or_default(),
                field: r.field,
                reason: r.reason,
            }));
        Ok(())
    }
}

/// Sleeps until `sent` events are due at the configured rate.
async fn pace(options: &Options, report: &Report, started: Instant) {
    if let Some(rate) = options.rate_per_sec.filter(|r| *r > 0.0) {
        let due = started + Duration::from_secs_f64(report.sent as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_inferences_are_told_apart() {
        assert_eq!(
            kind_of(&json!({"event_id": "a", "model": "m", "label": "1"})),
            Kind::Labels
        );
        assert_eq!(
            kind_of(&json!({"event_id": "a", "model": "m", "value": 2.5})),
            Kind::Labels
        );
        assert_eq!(
            kind_of(&json!({"event_id": "a", "model": "m", "latency_ms": 1, "prediction": {"label": "1"}})),
            Kind::Inferences
        );
        assert_eq!(kind_of(&json!({"event_id": "a"})), Kind::Inferences);
        assert_eq!(kind_of(&json!(3)), Kind::Inferences);
    }
}
