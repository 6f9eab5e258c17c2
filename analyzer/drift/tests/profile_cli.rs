//! The `mlwatch-profile` binary end to end: CSV and JSON Lines in, a
//! profile file out that loads and drives a monitor; bad input exits
//! non-zero naming the problem.

use std::process::Command;

use mlwatch_analyzer_drift::{DriftConfig, DriftMonitor, FeatureProfile, Profile};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mlwatch-profile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn profile_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlwatch-profile"))
}

#[test]
fn builds_profiles_from_csv_and_json_lines() {
    let dir = temp_dir("ok");
    let csv = dir.join("train.csv");
    let mut text = String::from("id,amount,country,proba\n");
    for i in 0..2000 {
        let country = ["DE", "FR", "US"][i % 3];
        text.push_str(&format!(
            "{i},{},{country},{}\n",
            (i % 97) as f64 * 1.5,
            (i % 10) as f64 / 10.0
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("fraud-v3.json");
    let status = profile_cmd()
        .args([
            "build",
            "--input",
            csv.to_str().unwrap(),
            "--model",
            "fraud",
            "--version",
            "3",
        ])
        .args([
            "--exclude",
            "id",
            "--prediction-column",
            "proba=score",
            "--out",
            out.to_str().unwrap(),
        ])
        .status()
        .expect("run mlwatch-profile");
    assert!(status.success());
    let p = Profile::from_json(&std::fs::read_to_string(&out).unwrap()).expect("valid profile");
    assert_eq!((p.model.as_str(), p.version, p.rows), ("fraud", 3, 2000));
    assert!(matches!(p.features["amount"], FeatureProfile::Numeric(_)));
    assert!(matches!(p.features["country"], FeatureProfile::Categorical(_)));
    assert!(p.predictions.contains_key("score") && !p.features.contains_key("id"));
    DriftMonitor::new(&p, DriftConfig::default()).expect("monitor from the built profile");

    let inspect = profile_cmd().args(["inspect", out.to_str().unwrap()]).output().unwrap();
    assert!(inspect.status.success());
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        shown.contains("amount: numeric") && shown.contains("country: categorical"),
        "{shown}"
    );

    let jsonl = dir.join("events.jsonl");
    std::fs::write(
        &jsonl,
        "{\"features\": {\"amount\": 3.0, \"country\": \"DE\"}, \"prediction\": {\"score\": 0.2}}\n\
         {\"features\": {\"amount\": 4.0, \"country\": \"FR\"}, \"prediction\": {\"score\": 0.7}}\n",
    )
    .unwrap();
    let stdout = profile_cmd()
        .args([
            "build",
            "--input",
            jsonl.to_str().unwrap(),
            "--model",
            "fraud",
            "--version",
            "4",
        ])
        .output()
        .unwrap();
    assert!(stdout.status.success());
    let p = Profile::from_json(&String::from_utf8_lossy(&stdout.stdout)).expect("profile on stdout");
    assert_eq!((p.version, p.rows), (4, 2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_fails_with_a_reason() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"a\": 1}\nnot json\n").unwrap();
    let out = profile_cmd()
        .args([
            "build",
            "--input",
            bad.to_str().unwrap(),
            "--model",
            "m",
            "--version",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    // Not a Parquet file (CSV bytes under a .parquet name).
    let fake = dir.join("fake.parquet");
    std::fs::write(&fake, "a,b\n1,2\n").unwrap();
    let out = profile_cmd()
        .args([
            "build",
            "--input",
            fake.to_str().unwrap(),
            "--model",
            "m",
            "--version",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fake.parquet") && err.contains("parquet"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Builds a profile from a fixture file (same columns for every format).
fn build_fixture(dir: &std::path::Path, input: &str) -> Profile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parquet")
        .join(input);
    let out = dir.join(format!("{input}.json"));
    let run = profile_cmd()
        .args([
            "build",
            "--input",
            path.to_str().unwrap(),
            "--model",
            "fraud",
            "--version",
            "1",
        ])
        .args(["--exclude", "id", "--prediction-column", "proba=score"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .expect("run mlwatch-profile");
    assert!(
        run.status.success(),
        "{input}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut p = Profile::from_json(&std::fs::read_to_string(&out).unwrap()).expect("valid profile");
    // Only where and when it was built may differ.
    p.source.clear();
    p.created_at_ms = 0;
    p
}

/// The pyarrow-written Parquet files (snappy, zstd, lz4; nullable float,
/// Int64, string and boolean columns, a float32 column) give exactly the
/// profile of the same data as CSV (tests/fixtures/parquet/generate.py).
#[test]
fn parquet_profile_equals_csv_profile() {
    let dir = temp_dir("parquet");
    let csv = build_fixture(&dir, "train.csv");
    assert_eq!(csv.rows, 1000);
    let missing: Vec<(&str, u64)> = ["amount", "age", "country", "is_new", "ratio32"]
        .iter()
        .map(|f| (*f, csv.features[*f].missing()))
        .collect();
    assert!(missing.iter().take(4).all(|(_, m)| *m > 0), "{missing:?}");
    assert!(matches!(csv.features["age"], FeatureProfile::Numeric(_)));
    assert!(matches!(csv.features["is_new"], FeatureProfile::Categorical(_)));
    assert!(csv.predictions.contains_key("score") && !csv.features.contains_key("id"));
    for codec in ["snappy", "zstd", "lz4"] {
        let parquet = build_fixture(&dir, &format!("train.{codec}.parquet"));
        assert_eq!(parquet, csv, "{codec}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
