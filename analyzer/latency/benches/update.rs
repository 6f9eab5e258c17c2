//! Per-event update cost: one inference event applied to a partition's
//! latency part (three windows, every rule and detector on), for one hot
//! series and for events spread over 1,000 model versions; plus the bare
//! sketch insert.
//!
//! `cargo bench -p mlwatch-analyzer-latency --bench update`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mlwatch_analyzer_core::EventClock;
use mlwatch_analyzer_core::sketch::DDSketch;
use mlwatch_analyzer_latency::{LatencyConfig, LatencyPart, RulesConfig, Settings};
use mlwatch_proto::v1::{InferenceEvent, InferenceStatus};
use mlwatch_proto::view::InferenceRef;

fn event(model: usize, t: i64, latency: f64) -> InferenceEvent {
    InferenceEvent {
        event_id: format!("e{t}"),
        model: format!("model-{model}"),
        model_version: "v1".into(),
        timestamp_ms: t,
        latency_ms: latency,
        status: InferenceStatus::Ok as i32,
        ..Default::default()
    }
}

/// A deterministic latency-like value (log-normal-ish) for step `i`.
fn latency(i: u64) -> f64 {
    let u = ((i.wrapping_mul(2654435761) % 10_000) as f64 + 0.5) / 10_000.0;
    20.0 * (1.0 + 3.0 * u * u * u)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_event_update");
    g.throughput(Throughput::Elements(1));
    for models in [1usize, 1000] {
        let mut events: Vec<InferenceEvent> = (0..100_000u64)
            .map(|i| event(i as usize % models, 1_790_000_000_000 + i as i64, latency(i)))
            .collect();
        g.bench_function(format!("latency_observe/{models}_series"), |b| {
            let settings = Settings::new(LatencyConfig::default(), RulesConfig::default(), 1000);
            let mut part = LatencyPart::default();
            let mut clock = EventClock::default();
            let mut i = 0usize;
            let mut offset = 0i64;
            b.iter(|| {
                // Keep event time moving at 1,000 events/s so windows slide
                // and rules are evaluated every 1,000 events.
                events[i].timestamp_ms = 1_790_000_000_000 + offset;
                let now = clock.observe(events[i].timestamp_ms);
                std::hint::black_box(part.observe(&settings, now, &InferenceRef::of(&events[i])));
                offset += 1;
                i = (i + 1) % events.len();
            });
        });
    }
    g.bench_function("ddsketch_add", |b| {
        let mut s = DDSketch::default();
        let mut i = 0u64;
        b.iter(|| {
            s.add(std::hint::black_box(latency(i)));
            i += 1;
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
