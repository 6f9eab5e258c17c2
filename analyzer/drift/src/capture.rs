//! Reference profiles captured from a model's own events ([`Captures`]):
//! on request (the API), or automatically for a model without a profile
//! when `[drift] capture_events` is set. Not checkpointed: a restart starts
//! a capture over.

use std::collections::{BTreeMap, BTreeSet};

use mlwatch_analyzer_core::Error;
use mlwatch_proto::view::InferenceRef;

use crate::registry::ProfileRegistry;
use crate::{BuildOptions, Profile, ProfileBuilder};

/// One profile being captured.
struct Capture {
    builder: ProfileBuilder,
    events: u64,
    /// Only events of this model version count (all when absent).
    from_version: Option<String>,
}

/// The captures under way, by model.
#[derive(Default)]
pub struct Captures {
    under_way: BTreeMap<String, Capture>,
    /// Models whose captured profile is finished but not active yet (being
    /// published): no new capture starts for them meanwhile.
    finished: BTreeSet<String>,
}

impl Captures {
    /// Starts capturing `model`'s next `events` events (only those of
    /// `from_version` when given) as its next profile version.
    pub fn request(
        &mut self,
        registry: &ProfileRegistry,
        model: &str,
        events: u64,
        from_version: Option<&str>,
    ) -> Result<(), Error> {
        let version = registry.versions(model).last().copied().unwrap_or(0) + 1;
        let builder = ProfileBuilder::new(BuildOptions::new(model, version))
            .map_err(|e| Error::Invalid(format!("profile capture: {e}")))?;
        self.under_way.insert(
            model.to_string(),
            Capture {
                builder,
                events,
                from_version: from_version.map(str::to_string),
            },
        );
        Ok(())
    }

    /// Feeds one event; the finished profile when this event completed a
    /// capture. With `auto_events > 0`, a model without an active profile
    /// gets a capture of that many events.
    pub fn observe(
        &mut self,
        registry: &ProfileRegistry,
        auto_events: u64,
        event: &InferenceRef<'_>,
    ) -> Result<Option<Profile>, Error> {
        let model = event.model;
        if auto_events > 0 && !self.under_way.contains_key(model) {
            if registry.active(model).is_some() {
                self.finished.remove(model);
            } else if !self.finished.contains(model) {
                self.request(registry, model, auto_events, None)?;
            }
        }
        let Some(c) = self.under_way.get_mut(model) else {
            return Ok(None);
        };
        if c.from_version.as_ref().is_some_and(|v| *v != event.model_version) {
            return Ok(None);
        }
        c.builder.add_event(&event.to_event());
        if c.builder.rows() < c.events {
            return Ok(None);
        }
        let c = self.under_way.remove(model).expect("present");
        match c.builder.finish() {
            Ok(mut profile) => {
                profile.source = format!("captured from {} events of {}", c.events, event.model_version);
                self.finished.insert(model.to_string());
                Ok(Some(profile))
            }
            Err(error) => {
                tracing::warn!(%error, model = %model, "profile capture failed");
                Ok(None)
            }
        }
    }
}
