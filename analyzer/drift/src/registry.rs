//! Reference profiles as an analyzer instance knows them: the active
//! profile per model, the version-specific ones and the version numbers
//! used ([`ProfileRegistry`], no I/O), and local copies of every version
//! applied ([`ProfileCache`]: `<dir>/<model>/v<N>.json` and `active`), so a
//! checkpointed monitor can restore on a profile version the profiles topic
//! has since compacted away. The topic itself is the service's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mlwatch_analyzer_core::Error;

use crate::Profile;

/// Separates model and model version in a record key (a control character
/// no model name uses).
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The record key of `model`'s profile (`model_version`: a version-specific one).
pub fn record_key(model: &str, model_version: Option<&str>) -> String {
    match model_version {
        None => model.to_string(),
        Some(v) => format!("{model}{KEY_SEPARATOR}{v}"),
    }
}

fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(KEY_SEPARATOR) {
        Some((m, v)) => (m, Some(v)),
        None => (key, None),
    }
}

/// Where a record sits in the topic; a record older than the one applied
/// for its key is ignored (the publisher applies its own record on the ack,
/// before the follower reads it back).
pub type Position = (i32, i64);

#[derive(Default)]
struct ModelProfiles {
    /// The model-wide active profile.
    active: Option<Arc<Profile>>,
    /// Profiles of single model versions.
    by_model_version: BTreeMap<String, Arc<Profile>>,
    /// Every profile version number seen (the profiles themselves only
    /// while in use: older ones are in the [`ProfileCache`]).
    versions: BTreeSet<u32>,
}

/// The profiles an instance knows. Pure: fed by [`ProfileRegistry::apply`].
#[derive(Default)]
pub struct ProfileRegistry {
    models: HashMap<String, ModelProfiles>,
    /// Position of the newest record applied per key.
    applied: HashMap<String, Position>,
}

/// The registry shared by the follower, the publisher, the API and the
/// trackers.
pub type SharedProfiles = Arc<RwLock<ProfileRegistry>>;

/// Reads a shared registry (a poisoned lock still holds usable data).
pub fn read(shared: &SharedProfiles) -> std::sync::RwLockReadGuard<'_, ProfileRegistry> {
    shared.read().unwrap_or_else(|p| p.into_inner())
}

pub fn write(shared: &SharedProfiles) -> std::sync::RwLockWriteGuard<'_, ProfileRegistry> {
    shared.write().unwrap_or_else(|p| p.into_inner())
}

impl ProfileRegistry {
    /// Applies one record of the topic: a profile, or `None` (a tombstone).
    /// `at` orders records of the same key (`None`: apply unconditionally).
    /// Returns whether the record changed anything; a profile whose model
    /// or model version disagrees with its key is refused.
    pub fn apply(&mut self, key: &str, profile: Option<Profile>, at: Option<Position>) -> Result<bool, String> {
        if let (Some(at), Some(seen)) = (at, self.applied.get(key))
            && at.0 == seen.0
            && at.1 <= seen.1
        {
            return Ok(false);
        }
        let (model, model_version) = split_key(key);
        if let Some(p) = &profile
            && (p.model != model || p.model_version.as_deref() != model_version)
        {
            return Err(format!(
                "key {key:?} names model {model:?} version {model_version:?}, the profile model {:?} version {:?}",
                p.model, p.model_version
            ));
        }
        if let Some(at) = at {
            self.applied.insert(key.to_string(), at);
        }
        let entry = self.models.entry(model.to_string()).or_default();
        let profile = profile.map(Arc::new);
        if let Some(p) = &profile {
            entry.versions.insert(p.version);
        }
        match model_version {
            None => entry.active = profile,
            Some(v) => match profile {
                Some(p) => {
                    entry.by_model_version.insert(v.to_string(), p);
                }
                None => {
                    entry.by_model_version.remove(v);
                }
            },
        }
        Ok(true)
    }

    /// The model-wide active profile of `model`.
    pub fn active(&self, model: &str) -> Option<&Arc<Profile>> {
        self.models.get(model)?.active.as_ref()
    }

    /// The profile `model_version` of `model` is judged against: its own if
    /// it has one, else the model's active one.
    pub fn for_version(&self, model: &str, model_version: &str) -> Option<&Arc<Profile>> {
        let m = self.models.get(model)?;
        m.by_model_version.get(model_version).or(m.active.as_ref())
    }

    /// The profile of `model_version` only (not the model-wide fallback).
    pub fn version_specific(&self, model: &str, model_version: &str) -> Option<&Arc<Profile>> {
        self.models.get(model)?.by_model_version.get(model_version)
    }

    /// A profile version of `model` in use (active or version-specific).
    pub fn get(&self, model: &str, version: u32) -> Option<&Arc<Profile>> {
        let m = self.models.get(model)?;
        m.active
            .iter()
            .chain(m.by_model_version.values())
            .find(|p| p.version == version)
    }

    /// The version numbers of `model` seen, ascending.
    pub fn versions(&self, model: &str) -> Vec<u32> {
        self.models
            .get(model)
            .map(|m| m.versions.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Gives `profile` a version no profile of its model has: its own when
    /// free and > 0, else the newest + 1.
    pub fn assign_version(&self, profile: &mut Profile) {
        let versions = self.versions(&profile.model);
        if profile.version == 0 || versions.contains(&profile.version) {
            profile.version = versions.last().copied().unwrap_or(0) + 1;
        }
    }
}

/// Local copies of the profiles an instance applied: `<dir>/<model>/v<N>.json`
/// and `<dir>/<model>/active` (the model-wide active version). Writes go to a
/// temporary file renamed into place.
#[derive(Debug, Clone)]
pub struct ProfileCache {
    dir: PathBuf,
}

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::storage("profile cache", format!("{what} {}: {e}", path.display()))
}

/// A model name as a directory name (anything outside `[A-Za-z0-9._-]`
/// becomes `_`).
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ProfileCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn model_dir(&self, model: &str) -> PathBuf {
        self.dir.join(safe(model))
    }

    fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, "cannot write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, "cannot rename into", e))
    }

    /// Keeps a copy of `profile` (and, for a model-wide one, marks it active).
    pub fn put(&self, profile: &Profile) -> Result<(), Error> {
        let dir = self.model_dir(&profile.model);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "cannot create", e))?;
        let file = dir.join(format!("v{}.json", profile.version));
        if !file.exists() {
            Self::write_file(&file, profile.to_json().as_bytes())?;
        }
        if profile.model_version.is_none() {
            Self::write_file(&dir.join("active"), profile.version.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// A cached profile version of `model`.
    pub fn get(&self, model: &str, version: u32) -> Result<Option<Profile>, Error> {
        let path = self.model_dir(model).join(format!("v{version}.json"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Profile::from_json(&text)
                .map(Some)
                .map_err(|e| io(&path, "cannot use", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, "cannot read", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BuildOptions, ProfileBuilder, Value};

    fn profile(model: &str, version: u32) -> Profile {
        let mut b = ProfileBuilder::new(BuildOptions::new(model, version)).unwrap();
        for i in 0..200 {
            b.start_row();
            b.add_feature("x", Value::Number(f64::from(i)));
        }
        b.finish().unwrap()
    }

    #[test]
    fn registry_applies_records_in_order_and_falls_back_to_the_model_profile() {
        let mut r = ProfileRegistry::default();
        assert!(r.active("fraud").is_none());
        assert!(r.apply("fraud", Some(profile("fraud", 1)), Some((0, 5))).unwrap());
        // A record the publisher already applied comes back from the topic: ignored.
        assert!(!r.apply("fraud", Some(profile("fraud", 1)), Some((0, 5))).unwrap());
        // An older record of the key does not undo a newer one.
        assert!(!r.apply("fraud", Some(profile("fraud", 9)), Some((0, 3))).unwrap());
        assert_eq!(r.active("fraud").unwrap().version, 1);

        let mut canary = profile("fraud", 2);
        canary.model_version = Some("v4".into());
        let key = record_key("fraud", Some("v4"));
        assert!(r.apply(&key, Some(canary.clone()), Some((0, 6))).unwrap());
        assert_eq!(r.for_version("fraud", "v4").unwrap().version, 2);
        assert_eq!(r.for_version("fraud", "v3").unwrap().version, 1);
        assert_eq!(r.versions("fraud"), vec![1, 2]);

        // Next free version; a free one is kept.
        let mut p = profile("fraud", 1);
        r.assign_version(&mut p);
        assert_eq!(p.version, 3);
        let mut p = profile("fraud", 7);
        r.assign_version(&mut p);
        assert_eq!(p.version, 7);

        // A tombstone removes the version's own profile; its number stays used.
        assert_eq!(r.get("fraud", 2).unwrap().version, 2);
        assert!(r.apply(&key, None, Some((0, 7))).unwrap());
        assert_eq!(r.for_version("fraud", "v4").unwrap().version, 1);
        assert!(r.get("fraud", 2).is_none());
        assert_eq!(r.versions("fraud"), vec![1, 2]);

        // Key and profile must agree.
        let err = r.apply("other", Some(profile("fraud", 4)), None).unwrap_err();
        assert!(err.contains("other") && err.contains("fraud"), "{err}");
        let err = r.apply("fraud", Some(canary), None).unwrap_err();
        assert!(err.contains("v4"), "{err}");
    }

    proptest::proptest! {
        /// Whatever order records arrive in (the publisher applying its own
        /// record before the follower reads the older ones back), the
        /// profile of each key is that of its newest record.
        #[test]
        fn newest_record_per_key_wins_in_any_order(
            records in proptest::collection::vec((0usize..3, proptest::option::of(1u32..50)), 1..20),
            order in proptest::collection::vec(proptest::num::usize::ANY, 0..40),
        ) {
            let keys = ["fraud", "fraud\u{1f}v2", "credit"];
            let profile_of = |key: &str, version: u32| {
                let (model, model_version) = split_key(key);
                let mut p = profile(model, version);
                p.model_version = model_version.map(str::to_string);
                p
            };
            let mut sorted = ProfileRegistry::default();
            let mut shuffled = ProfileRegistry::default();
            let mut idx: Vec<usize> = (0..records.len()).collect();
            for (i, o) in order.iter().enumerate() {
                let n = idx.len();
                idx.swap(i % n, o % n);
            }
            for (offset, (k, v)) in records.iter().enumerate() {
                let key = keys[*k];
                sorted.apply(key, v.map(|v| profile_of(key, v)), Some((0, offset as i64))).unwrap();
            }
            for i in idx {
                let (k, v) = records[i];
                let key = keys[k];
                shuffled.apply(key, v.map(|v| profile_of(key, v)), Some((0, i as i64))).unwrap();
            }
            for (model, version) in [("fraud", "v1"), ("fraud", "v2"), ("credit", "v1")] {
                let a = sorted.for_version(model, version).map(|p| p.version);
                let b = shuffled.for_version(model, version).map(|p| p.version);
                proptest::prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn cache_keeps_versions_and_the_active_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ProfileCache::new(dir.path().to_path_buf());
        assert!(cache.get("fraud/x", 1).unwrap().is_none());
        cache.put(&profile("fraud/x", 1)).unwrap();
        cache.put(&profile("fraud/x", 2)).unwrap();
        assert_eq!(cache.get("fraud/x", 1).unwrap().unwrap().version, 1);
        let active = std::fs::read_to_string(dir.path().join("fraud_x").join("active")).unwrap();
        assert_eq!(active, "2");
    }
}
