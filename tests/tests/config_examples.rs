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
