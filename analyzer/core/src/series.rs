//! Series identity: which model, version and segment a statistic belongs
//! to, and the labels its alerts carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Identity of a tracked series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub model: String,
    pub model_version: String,
    /// `""` for the whole version, else `tag=value`.
    #[serde(default)]
    pub segment: String,
}

/// A series identity by reference: `(model, model_version, segment)`,
/// ordered as [`SeriesKey`] is, so a series is found without building its
/// key.
pub trait SeriesId {
    fn parts(&self) -> (&str, &str, &str);
}

impl SeriesId for SeriesKey {
    fn parts(&self) -> (&str, &str, &str) {
        (&self.model, &self.model_version, &self.segment)
    }
}

impl SeriesId for (&str, &str, &str) {
    fn parts(&self) -> (&str, &str, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn SeriesId + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn SeriesId + 'a) {
        self
    }
}

impl PartialEq for dyn SeriesId + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn SeriesId + '_ {}

impl PartialOrd for dyn SeriesId + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn SeriesId + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// `model version` or `model version [segment]`, for summaries.
pub fn series_name(key: &SeriesKey) -> String {
    if key.segment.is_empty() {
        format!("{} {}", key.model, key.model_version)
    } else {
        format!("{} {} [{}]", key.model, key.model_version, key.segment)
    }
}

/// The labels of a series' alerts: `model`, `model_version` and, for a
/// segment, `segment`.
pub fn labels(key: &SeriesKey) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("model".to_string(), key.model.clone());
    labels.insert("model_version".to_string(), key.model_version.clone());
    if !key.segment.is_empty() {
        labels.insert("segment".to_string(), key.segment.clone());
    }
    labels
}

/// Maps with struct keys, (de)serialised as JSON arrays of pairs
/// (`#[serde(with = "mlwatch_analyzer_core::series::pairs")]`).
pub mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
