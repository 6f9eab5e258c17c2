//! Replay: streams a JSON Lines file of inference and label events (the
//! DESIGN.md shape) through the collector with the [`crate::client`], at a
//! given rate or as fast as the collector takes them. Also how history is
//! backfilled. Consecutive events of one kind go in one batch; a line that
//! is not JSON is reported by its line number and skipped.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::client::{Client, ClientError, Kind};

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

/// Replays every line of `input`; `progress` is called with the number of
/// lines handled so far after each batch.
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
    let mut batch = Batch {
        kind: Kind::Inferences,
        events: Vec::new(),
        lines: Vec::new(),
    };
    let batch_size = options.batch_size.max(1);
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
                let kind = kind_of(&event);
                if kind != batch.kind && !batch.events.is_empty() {
                    flush(client, &mut batch, &mut report, options, started).await?;
                    progress(line_no as u64 - 1);
                }
                batch.kind = kind;
                batch.events.push(event);
                batch.lines.push(line_no);
                if batch.events.len() >= batch_size {
                    flush(client, &mut batch, &mut report, options, started).await?;
                    progress(line_no as u64);
                }
            }
            Err(e) => report.rejected.push(LineRejection {
                line: line_no,
                field: String::new(),
                reason: format!("malformed JSON line: {e}"),
            }),
        }
    }
    if !batch.events.is_empty() {
        flush(client, &mut batch, &mut report, options, started).await?;
    }
    progress(line_no as u64);
    report.rejected.sort_by_key(|r| r.line);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Consecutive events of one kind and their line numbers.
struct Batch {
    kind: Kind,
    events: Vec<Value>,
    lines: Vec<usize>,
}

async fn flush(
    client: &Client,
    batch: &mut Batch,
    report: &mut Report,
    options: &Options,
    started: Instant,
) -> Result<(), ClientError> {
    send(client, batch.kind, &mut batch.events, &mut batch.lines, report).await?;
    pace(options, report, started).await;
    Ok(())
}

async fn send(
    client: &Client,
    kind: Kind,
    batch: &mut Vec<Value>,
    lines: &mut Vec<usize>,
    report: &mut Report,
) -> Result<(), ClientError> {
    let summary = client.send(kind, batch).await?;
    report.sent += batch.len() as u64;
    report.accepted += summary.accepted as u64;
    report.retries += summary.retries;
    report
        .rejected
        .extend(summary.rejected.into_iter().map(|r| LineRejection {
            line: lines.get(r.index).copied().unwrap_or_default(),
            field: r.field,
            reason: r.reason,
        }));
    batch.clear();
    lines.clear();
    Ok(())
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
