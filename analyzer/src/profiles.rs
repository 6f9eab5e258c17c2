//! Durable reference profiles: one JSON file per (model, version) under
//! `[drift] profile_dir`, and one `active` file per model naming the active
//! version. Writes go to a temporary file renamed into place, so a crash
//! never leaves a half-written profile or pointer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::drift::Profile;

/// The profiles on disk, with the active ones cached.
pub struct ProfileStore {
    dir: PathBuf,
    /// Active profile by model (`None`: known to have none).
    active: HashMap<String, Option<Profile>>,
}

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Task("profile store", format!("{what} {}: {e}", path.display()))
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

impl ProfileStore {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            active: HashMap::new(),
        }
    }

    fn model_dir(&self, model: &str) -> PathBuf {
        self.dir.join(safe(model))
    }

    fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, "cannot write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, "cannot rename into", e))
    }

    /// The versions stored for `model`, ascending.
    pub fn versions(&self, model: &str) -> Result<Vec<u32>, Error> {
        let dir = self.model_dir(model);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, "cannot list", e)),
        };
        let mut out: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Stores `profile` and makes it the active one. A profile whose version
    /// is already stored gets the next free version. Returns the version.
    pub fn put(&mut self, mut profile: Profile) -> Result<u32, Error> {
        let dir = self.model_dir(&profile.model);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "cannot create", e))?;
        let versions = self.versions(&profile.model)?;
        if versions.contains(&profile.version) {
            profile.version = versions.last().copied().unwrap_or(0) + 1;
        }
        Self::write(
            &dir.join(format!("v{}.json", profile.version)),
            profile.to_json().as_bytes(),
        )?;
        Self::write(&dir.join("active"), profile.version.to_string().as_bytes())?;
        let version = profile.version;
        self.active.insert(profile.model.clone(), Some(profile));
        Ok(version)
    }

    /// A stored version of `model`'s profile.
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

    /// The active profile of `model` (read from disk once, then cached).
    pub fn active(&mut self, model: &str) -> Result<Option<&Profile>, Error> {
        if !self.active.contains_key(model) {
            let pointer = self.model_dir(model).join("active");
            let version = match std::fs::read_to_string(&pointer) {
                Ok(v) => v.trim().parse::<u32>().map_err(|e| io(&pointer, "cannot parse", e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.active.insert(model.to_string(), None);
                    return Ok(None);
                }
                Err(e) => return Err(io(&pointer, "cannot read", e)),
            };
            let profile = self.get(model, version)?;
            self.active.insert(model.to_string(), profile);
        }
        Ok(self.active.get(model).and_then(Option::as_ref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{BuildOptions, ProfileBuilder, Value};

    fn profile(model: &str, version: u32) -> Profile {
        let mut b = ProfileBuilder::new(BuildOptions::new(model, version)).unwrap();
        for i in 0..200 {
            b.start_row();
            b.add_feature("x", Value::Number(f64::from(i)));
        }
        b.finish().unwrap()
    }

    #[test]
    fn put_versions_and_reload_the_active_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProfileStore::new(dir.path().to_path_buf());
        assert!(store.active("fraud").unwrap().is_none());
        assert_eq!(store.put(profile("fraud", 1)).unwrap(), 1);
        // The same version again becomes the next one, and active.
        assert_eq!(store.put(profile("fraud", 1)).unwrap(), 2);
        assert_eq!(store.versions("fraud").unwrap(), vec![1, 2]);
        let mut reopened = ProfileStore::new(dir.path().to_path_buf());
        let active = reopened.active("fraud").unwrap().unwrap();
        assert_eq!(active.version, 2);
        assert_eq!(reopened.get("fraud", 1).unwrap().unwrap().version, 1);
    }
}
