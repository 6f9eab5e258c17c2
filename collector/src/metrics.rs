//! The collector's Prometheus metrics, registered on a registry passed in.
//! Names follow DESIGN.md so existing ML dashboards work unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlwatch_common::cardinality::{self, LabelCap};
use prometheus::{GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::validate::Limits;

#[derive(Clone)]
pub struct Metrics {
    /// `ml_inference_latency_seconds{model_name,model_version,endpoint}`.
    pub latency: HistogramVec,
    /// `ml_inference_requests_total{model_name,model_version,status}`.
    pub requests: IntCounterVec,
    /// `ml_inference_batch_size{model_name}`.
    pub batch_size: HistogramVec,
    /// `ml_prediction_distribution{model_name,model_version}`: scores.
    pub predictions: HistogramVec,
    /// `mlwatch_collector_events_total{kind,outcome,reason}`.
    pub events: IntCounterVec,
    /// `mlwatch_collector_produce_seconds`: broker acknowledgement latency.
    pub produce_seconds: Histogram,
    /// `mlwatch_collector_in_flight_events`.
    pub in_flight: IntGauge,
    /// `mlwatch_collector_cloudevents_pending`: KServe halves waiting for
    /// their other half (in memory only).
    pub cloudevents_pending: IntGauge,
    /// `ml_queue_depth{model_name,model_version}`: from resource samples.
    pub queue_depth: GaugeVec,
    /// `ml_memory_usage_bytes{model_name,model_version}`: from resource samples.
    pub memory_bytes: GaugeVec,
    /// `ml_gpu_utilization_percent{model_name,model_version}`: from resource samples.
    pub gpu_percent: GaugeVec,
    /// `ml_model_info{model_name,model_version}` = 1 for every model
    /// version the collector has seen.
    pub info: GaugeVec,
    /// `ml_model_staleness_hours{model_name,model_version}`: hours since the
    /// collector last received an inference of the model version
    /// (refreshed by [`Metrics::refresh_staleness`]).
    pub staleness: GaugeVec,
    /// Caps the distinct (model, version) pairs that become series.
    pub series: Arc<LabelCap>,
    /// Caps the distinct endpoints that become series.
    pub endpoints: Arc<LabelCap>,
    /// When each admitted model version was last received (epoch ms).
    last_seen: Arc<Mutex<HashMap<(String, String), i64>>>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure is a programming error.
    r.expect("valid metric definition")
}

impl Metrics {
    pub fn register(registry: &Registry, limits: &Limits) -> prometheus::Result<Self> {
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "ml_inference_latency_seconds",
                "Inference latency reported by model servers",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["model_name", "model_version", "endpoint"],
        ));
        let requests = must(IntCounterVec::new(
            Opts::new("ml_inference_requests_total", "Inference requests by outcome"),
            &["model_name", "model_version", "status"],
        ));
        let batch_size = must(HistogramVec::new(
            HistogramOpts::new("ml_inference_batch_size", "Batch size of inference requests")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["model_name"],
        ));
        let predictions = must(HistogramVec::new(
            HistogramOpts::new("ml_prediction_distribution", "Distribution of predicted scores")
                .buckets((1..=10).map(|i| f64::from(i) / 10.0).collect()),
            &["model_name", "model_version"],
        ));
        let events = must(IntCounterVec::new(
            Opts::new(
                "mlwatch_collector_events_total",
                "Events seen by the collector by outcome",
            ),
            &["kind", "outcome", "reason"],
        ));
        let produce_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "mlwatch_collector_produce_seconds",
                "Time for the broker to acknowledge a request's events",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        ));
        let in_flight = must(IntGauge::new(
            "mlwatch_collector_in_flight_events",
            "Events waiting for the broker",
        ));
        let cloudevents_pending = must(IntGauge::new(
            "mlwatch_collector_cloudevents_pending",
            "KServe CloudEvent halves waiting for their other half",
        ));
        let resource =
            |name: &str, help: &str| must(GaugeVec::new(Opts::new(name, help), &["model_name", "model_version"]));
        let queue_depth = resource("ml_queue_depth", "Requests waiting in the model server's queue");
        let memory_bytes = resource("ml_memory_usage_bytes", "Memory used by the model server");
        let gpu_percent = resource("ml_gpu_utilization_percent", "GPU utilisation of the model server");
        let info = resource("ml_model_info", "1 for every model version the collector has seen");
        let staleness = resource(
            "ml_model_staleness_hours",
            "Hours since the collector last received an inference of the model version",
        );
        registry.register(Box::new(info.clone()))?;
        registry.register(Box::new(staleness.clone()))?;
        let folded = cardinality::folded_counter(registry)?;
        let series = Arc::new(LabelCap::new(limits.max_metric_series, "model_version", folded.clone()));
        let endpoints = Arc::new(LabelCap::new(limits.max_metric_endpoints, "endpoint", folded));
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(memory_bytes.clone()))?;
        registry.register(Box::new(gpu_percent.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(predictions.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(produce_seconds.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(cloudevents_pending.clone()))?;
        Ok(Self {
            latency,
            requests,
            batch_size,
            predictions,
            events,
            produce_seconds,
            in_flight,
            cloudevents_pending,
            queue_depth,
            memory_bytes,
            gpu_percent,
            info,
            staleness,
            series,
            endpoints,
            last_seen: Arc::default(),
        })
    }

    /// The (model, version) labels of an observation: its own while under
    /// the cap, else `_overflow` (counted `n` times).
    pub fn model_labels<'a>(&self, model: &'a str, version: &'a str, n: u64) -> [&'a str; 2] {
        let admitted = self.series.admit([model, version]);
        if admitted.folded {
            self.series.count_folded(n);
        }
        admitted.values
    }

    /// The endpoint label of an observation, capped alike.
    pub fn endpoint_label<'a>(&self, endpoint: &'a str, n: u64) -> &'a str {
        let admitted = self.endpoints.admit([endpoint]);
        if admitted.folded {
            self.endpoints.count_folded(n);
        }
        admitted.values[0]
    }

    /// Notes that an inference of this (capped) model version arrived now.
    pub fn seen(&self, labels: [&str; 2], now_ms: i64) {
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .insert((labels[0].to_string(), labels[1].to_string()), now_ms)
            .is_none()
        {
            self.info.with_label_values(&labels).set(1.0);
            self.staleness.with_label_values(&labels).set(0.0);
        }
    }

    /// Sets `ml_model_staleness_hours` of every model version seen.
    pub fn refresh_staleness(&self, now_ms: i64) {
        let last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        for ((model, version), at) in last.iter() {
            self.staleness
                .with_label_values(&[model.as_str(), version.as_str()])
                .set((now_ms - at).max(0) as f64 / 3_600_000.0);
        }
    }
}
