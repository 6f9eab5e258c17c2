//! The collector's Prometheus metrics, registered on a registry passed in.
//! Names follow DESIGN.md so existing ML dashboards work unchanged.

use prometheus::{GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

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
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure is a programming error.
    r.expect("valid metric definition")
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
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
        })
    }
}
