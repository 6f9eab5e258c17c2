//! The example configuration files in `config/` are what users copy: each
//! must load into its service's configuration exactly as the binary loads it.

use std::path::Path;

fn load<T>(name: &str, sections: &[&str]) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("config")
        .join(name);
    mlwatch_common::config::load(Some(&path), sections).unwrap_or_else(|e| panic!("config/{name}: {e}"))
}

#[test]
fn example_configs_load() {
    let c: mlwatch_collector::Config = load("collector.toml", mlwatch_collector::SECTIONS);
    assert_eq!(c.http.listen.port(), 8080);
    let a: mlwatch_analyzer::Config = load("analyzer.toml", mlwatch_analyzer::SECTIONS);
    assert_eq!(a.admin.listen.port(), 9102);
    let al: mlwatch_alerter::Config = load("alerter.toml", mlwatch_alerter::SECTIONS);
    assert!(al.receivers.contains_key("slack"));
    let r: mlwatch_remediator::Config = load("remediator.toml", mlwatch_remediator::SECTIONS);
    assert_eq!(r.serving.timeout_ms, 5000);
}

#[test]
fn a_typo_is_refused_with_the_key_named() {
    let err = mlwatch_common::config::from_toml::<mlwatch_analyzer::Config>("[rules.p99_latency]\nthreshold = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("threshold"), "{err}");
}

/// The TOML that the Kubernetes base puts in a service's ConfigMap
/// (`deploy/k8s/base/config/<service>.toml`, read by Kustomize's
/// configMapGenerator).
fn configmap_toml(service: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s/base/config")
        .join(format!("{service}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn kubernetes_configmaps_load() {
    use mlwatch_common::config::from_toml;
    let c: mlwatch_collector::Config = from_toml(&configmap_toml("collector")).expect("collector configmap");
    // The memory limit in deploy/k8s is sized from these budgets.
    assert_eq!(c.ingest.max_in_flight_body_bytes, 128 << 20);
    assert_eq!(c.cloudevents.max_pending_bytes, 32 << 20);
    let a: mlwatch_analyzer::Config = from_toml(&configmap_toml("analyzer")).expect("analyzer configmap");
    // The root file system is read-only: state lives on the volume.
    assert!(
        a.accuracy.join.dir.starts_with("/var/lib/mlwatch"),
        "{:?}",
        a.accuracy.join.dir
    );
    assert!(
        a.drift.profile_dir.starts_with("/var/lib/mlwatch"),
        "{:?}",
        a.drift.profile_dir
    );
    assert_eq!(a.accuracy.join.cache_bytes, 64 << 20);
    let al: mlwatch_alerter::Config = from_toml(&configmap_toml("alerter")).expect("alerter configmap");
    let state = al.alerter.state_file.expect("alerter state file");
    assert!(state.starts_with("/var/lib/mlwatch"), "{state:?}");
    let r: mlwatch_remediator::Config = from_toml(&configmap_toml("remediator")).expect("remediator configmap");
    // Dry-run until an operator turns acting on.
    assert!(r.remediator.dry_run);
}

/// The `MLWATCH_…=…` literals of the `mlwatch-env` ConfigMap generator in a
/// kustomization under `deploy/k8s/`.
fn kustomize_env(kustomization: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s")
        .join(kustomization);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- MLWATCH_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("MLWATCH_{k}"), v.to_string()))
        .collect()
}

#[test]
fn kubernetes_production_environment_loads() {
    use mlwatch_common::config::load_with_env;
    let mut env = kustomize_env("base/kustomization.yaml");
    env.extend(kustomize_env("overlays/production/kustomization.yaml"));
    assert!(env.len() >= 5, "{env:?}");
    let toml = |service: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/k8s/base/config")
            .join(format!("{service}.toml"))
    };
    let kafka = |k: &mlwatch_common::kafka::KafkaConfig| {
        assert_eq!(k.replication_factor, 3);
        assert_eq!(k.topic_config.get("min.insync.replicas").map(String::as_str), Some("2"));
        assert_eq!(k.topic_config.len(), 1, "{:?}", k.topic_config);
    };
    let c: mlwatch_collector::Config =
        load_with_env(Some(&toml("collector")), mlwatch_collector::SECTIONS, env.clone()).expect("collector");
    kafka(&c.kafka);
    assert!(c.log.json);
    assert_eq!(c.admin.listen.port(), 9100);
    let a: mlwatch_analyzer::Config =
        load_with_env(Some(&toml("analyzer")), mlwatch_analyzer::SECTIONS, env.clone()).expect("analyzer");
    kafka(&a.kafka);
    let state = &a.kafka.topic_overrides[&a.analyzer.state_topic];
    assert_eq!(
        state.config.get("max.message.bytes").map(String::as_str),
        Some("67108864")
    );
    let al: mlwatch_alerter::Config =
        load_with_env(Some(&toml("alerter")), mlwatch_alerter::SECTIONS, env.clone()).expect("alerter");
    kafka(&al.kafka);
    let r: mlwatch_remediator::Config =
        load_with_env(Some(&toml("remediator")), mlwatch_remediator::SECTIONS, env).expect("remediator");
    kafka(&r.kafka);
    assert!(r.remediator.dry_run);
}
