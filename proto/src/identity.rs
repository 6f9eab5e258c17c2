//! Alert identity: the contract every producer and consumer of
//! `mlwatch.alerts.v1` shares.
//!
//! - [`fingerprint`]: one alert series, the hash of its type and labels
//!   (label order does not matter: labels are a sorted map). The alerter
//!   groups and deduplicates by it, PagerDuty uses it as `dedup_key`, the
//!   topic is keyed by it.
//! - [`alert_id`]: one state change of that series, the hash of fingerprint,
//!   status and start time, so a replayed or re-published change keeps its id.
//!
//! Both are the first 16 bytes of a SHA-256 in lowercase hex. Changing either
//! function breaks deduplication across an upgrade: the golden values below
//! pin them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::v1::AlertStatus;

/// Stable identity of an alert series: hash of its type and labels.
pub fn fingerprint(alert_type: &str, labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(alert_type.as_bytes());
    for (k, v) in labels {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
    }
    hex(&h.finalize()[..16])
}

/// Deterministic id of one alert state change.
pub fn alert_id(fingerprint: &str, status: AlertStatus, starts_at_ms: i64) -> String {
    let mut h = Sha256::new();
    h.update(fingerprint.as_bytes());
    h.update(status.name().as_bytes());
    h.update(starts_at_ms.to_be_bytes());
    hex(&h.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Values computed independently (Python's hashlib over the same bytes);
    /// a change here is a breaking change of the alerts topic.
    #[test]
    fn golden_values() {
        let fp = fingerprint(
            "HighP99Latency",
            &labels(&[("model_version", "v3"), ("model", "fraud")]),
        );
        assert_eq!(fp, "f3713ffca4bc1f114da41738c009df18");
        assert_eq!(
            alert_id(&fp, AlertStatus::Firing, 1_795_723_079_957),
            "e3d81f1e3e26fd9caff3a676358d0724"
        );
        assert_eq!(
            alert_id(&fp, AlertStatus::Resolved, 1_795_723_079_957),
            "57e381d87f1619f6fcc56593cb098789"
        );
        let empty = fingerprint("RemediationFailed", &BTreeMap::new());
        assert_eq!(empty, "38fc1759fd48040389c6ff4ac58878e7");
        assert_eq!(
            alert_id(&empty, AlertStatus::Firing, -1),
            "6fc78b5043dce92a3fa18e832acb94c9"
        );
    }

    #[test]
    fn type_and_labels_both_count() {
        let a = labels(&[("model", "fraud")]);
        let f = fingerprint("HighP99Latency", &a);
        assert_ne!(f, fingerprint("FeatureDrift", &a));
        assert_ne!(f, fingerprint("HighP99Latency", &labels(&[("model", "recsys")])));
        // The separators keep `ab=c` and `a=bc` apart.
        assert_ne!(
            fingerprint("T", &labels(&[("ab", "c")])),
            fingerprint("T", &labels(&[("a", "bc")]))
        );
        assert_ne!(
            alert_id(&f, AlertStatus::Firing, 1),
            alert_id(&f, AlertStatus::Firing, 2)
        );
    }
}
