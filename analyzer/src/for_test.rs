//! The analyzer's configuration for tests (kept apart from the service's
//! own configuration code).

use std::net::SocketAddr;
use std::path::Path;

use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::KafkaConfig;

use crate::Config;

impl Config {
    /// An analyzer for a test: `kafka`'s broker and topics, the consumer
    /// group `mlwatch-analyzer-{name}` and its own state topic
    /// (`mlwatch.analyzer.state.v1.{name}`), the admin port on a loopback
    /// port the OS picks, the label join store and the profile cache in
    /// `join/` and `profiles/` under `state_dir` (a test's temporary
    /// directory). Tests adjust fields from there.
    pub fn for_test(kafka: &KafkaConfig, name: &str, state_dir: &Path) -> Self {
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
