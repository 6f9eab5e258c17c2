//! The analyzer's configuration: every section, its defaults and the
//! checks the types cannot make (config/analyzer.toml lists every key).

use std::net::SocketAddr;

use mlwatch_analyzer_accuracy::tracker::AccuracyConfig;
use mlwatch_analyzer_drift::part::DriftSection;
use mlwatch_analyzer_latency::{LatencyConfig, RulesConfig};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::telemetry::LogConfig;
use serde::{Deserialize, Serialize};

pub const SECTIONS: &[&str] = &["kafka", "admin", "log", "analyzer", "rules", "accuracy", "drift"];

/// The analyzer's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub analyzer: AnalyzerConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    /// Label join, accuracy metrics and decay (docs/accuracy.md).
    #[serde(default)]
    pub accuracy: AccuracyConfig,
    /// Drift and data quality against reference profiles (docs/drift.md).
    #[serde(default)]
    pub drift: DriftSection,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 9102)))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            admin: default_admin(),
            log: LogConfig::default(),
            analyzer: AnalyzerConfig::default(),
            rules: RulesConfig::default(),
            accuracy: AccuracyConfig::default(),
            drift: DriftSection::default(),
        }
    }
}

impl HasLog for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

/// The `[analyzer]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzerConfig {
    /// Consumer group of the analyzer instances.
    pub group_id: String,
    /// How often rules are evaluated, in event time (and how often idle
    /// partitions and gauges are refreshed, in wall time).
    pub eval_interval_ms: u64,
    /// Compacted topic holding each partition's checkpoint.
    pub state_topic: String,
    /// How often changed partition state is checkpointed (also on revoke
    /// and at shutdown).
    pub checkpoint_interval_secs: u64,
    /// After this long without a message on a partition, its event-time
    /// clock follows wall time, so silent models are still judged (0 = off).
    pub idle_advance_after_secs: u64,
    /// A partition with messages waiting whose position has not moved for
    /// this long is stalled: logged, shown in `/readyz` and re-seeked
    /// (0 = not watched).
    pub stall_after_secs: u64,
    /// Windows, lateness, slow threshold and segments (same section).
    #[serde(flatten)]
    pub latency: LatencyConfig,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-analyzer".into(),
            eval_interval_ms: 1000,
            state_topic: "mlwatch.analyzer.state.v1".into(),
            checkpoint_interval_secs: 5,
            idle_advance_after_secs: 5,
            stall_after_secs: 60,
            latency: LatencyConfig::default(),
        }
    }
}

impl Config {
    /// An analyzer for a test: `kafka`'s broker and topics, the consumer
    /// group `mlwatch-analyzer-{name}` and its own state topic
    /// (`mlwatch.analyzer.state.v1.{name}`), the admin port on a loopback
    /// port the OS picks, the label join store and the profile cache in
    /// `join/` and `profiles/` under `state_dir` (a test's temporary
    /// directory). Tests adjust fields from there.
    pub fn for_test(kafka: &KafkaConfig, name: &str, state_dir: &std::path::Path) -> Self {
        let mut config = Self {
            kafka: kafka.clone(),
            admin: AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        };
        config.analyzer.group_id = format!("mlwatch-analyzer-{name}");
        config.analyzer.state_topic = format!("mlwatch.analyzer.state.v1.{name}");
        config.accuracy.join.dir = state_dir.join("join");
        config.drift.profile_dir = state_dir.join("profiles");
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_lists_the_defaults() {
        let c: Config = mlwatch_common::config::from_toml(include_str!("../../../config/analyzer.toml")).unwrap();
        let d = Config::default();
        assert_eq!(
            serde_json::to_value(&c.analyzer).unwrap(),
            serde_json::to_value(&d.analyzer).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&c.rules).unwrap(),
            serde_json::to_value(&d.rules).unwrap()
        );
        assert_eq!(c.accuracy, d.accuracy);
        assert_eq!(c.drift, d.drift);
    }

    #[test]
    fn per_model_overrides_parse_and_unknown_keys_are_named() {
        let c: Config =
            mlwatch_common::config::from_toml("[rules.models.fraud.p99_latency]\nthreshold = 150.0\nfor_secs = 30\n")
                .unwrap();
        let o = c.rules.models["fraud"].p99_latency.as_ref().unwrap();
        assert_eq!(o.threshold, Some(150.0));
        let p = c.rules.p99_latency.params().with(Some(o));
        assert_eq!((p.threshold, p.for_ms, p.window_secs), (150.0, 30_000, 300));
        let err = mlwatch_common::config::from_toml::<Config>("[rules.p99_latency]\nthreshhold_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("threshhold_ms"), "{err}");
    }
}
