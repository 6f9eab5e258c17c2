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

/// The TOML a Kubernetes ConfigMap in `deploy/k8s/<service>.yaml` carries
/// under `<service>.toml: |` (a literal block indented by four spaces).
fn configmap_toml(service: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s")
        .join(format!("{service}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = format!("{service}.toml: |");
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    assert!(lines.next().is_some(), "deploy/k8s/{service}.yaml: no {header}");
    lines
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| l.get(4..).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kubernetes_configmaps_load() {
    use mlwatch_common::config::from_toml;
    let c: mlwatch_collector::Config = from_toml(&configmap_toml("collector")).expect("collector configmap");
    assert!(c.log.json);
    let a: mlwatch_analyzer::Config = from_toml(&configmap_toml("analyzer")).expect("analyzer configmap");
    // The pod's working directory is not writable: state lives on the volume.
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
    let _: mlwatch_alerter::Config = from_toml(&configmap_toml("alerter")).expect("alerter configmap");
    let _: mlwatch_remediator::Config = from_toml(&configmap_toml("remediator")).expect("remediator configmap");
}
