//! One partition's drift ([`DriftPart`]): a [`DriftMonitor`] per model
//! version seen, judged against the version's own profile when it has one,
//! else the model's active profile, each deciding at the end of its windows
//! of event time (the partition's clock). The `[drift]` configuration
//! section ([`DriftSection`]) is here too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mlwatch_analyzer_core::Error;
use mlwatch_analyzer_core::Schedule;
use mlwatch_proto::v1::Alert;
use mlwatch_proto::view::InferenceRef;
use serde::{Deserialize, Serialize};

use crate::registry::{ProfileCache, ProfileRegistry};
use crate::{DriftMonitor, DriftReport, DriftRulesConfig, MetricValues, MonitorState, Profile};

/// The `[drift]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSection {
    /// Monitor drift and data quality at all.
    pub enabled: bool,
    /// Local cache of the reference profiles read from the profiles topic
    /// (`<model>/v<N>.json` and `<model>/active`): lets a checkpointed
    /// monitor restore on a version the topic has compacted away.
    pub profile_dir: PathBuf,
    /// Length of a drift evaluation window, in seconds of event time (a
    /// window with fewer than `min_window_events` carries over).
    pub window_secs: u64,
    /// When > 0, a model without a profile gets one captured from its first
    /// this many events (0 = only uploaded or requested profiles).
    pub capture_events: u64,
    /// Drift monitors kept per model: one per model version seen (about
    /// 170 KiB each with 25 features); beyond this many, the version seen
    /// least recently is dropped.
    pub max_versions_per_model: usize,
    /// Statistical settings: `[drift.rules.defaults]` and
    /// `[drift.rules.models.<model>]`.
    pub rules: DriftRulesConfig,
}

impl Default for DriftSection {
    fn default() -> Self {
        Self {
            enabled: true,
            profile_dir: PathBuf::from("data/profiles"),
            window_secs: 60,
            capture_events: 0,
            max_versions_per_model: 16,
            rules: DriftRulesConfig::default(),
        }
    }
}

impl DriftSection {
    /// Checks values the types cannot; names the offending key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.window_secs == 0 {
            return Err(Error::config("drift.window_secs", "must be > 0"));
        }
        if self.max_versions_per_model == 0 {
            return Err(Error::config("drift.max_versions_per_model", "must be > 0"));
        }
        self.rules
            .defaults
            .validate()
            .map_err(|e| Error::config("drift.rules.defaults", e))?;
        for (model, c) in &self.rules.models {
            c.validate()
                .map_err(|e| Error::config(format!("drift.rules.models.{model}"), e))?;
        }
        Ok(())
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// What a checkpoint holds of one model version's drift monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftCheckpoint {
    pub model: String,
    /// The model version monitored (alerts carry it).
    pub model_version: String,
    /// End of the open window, event time.
    pub next_window_ms: Schedule,
    pub state: MonitorState,
}

/// One model version's drift monitor.
struct VersionMonitor {
    monitor: DriftMonitor,
    /// End of the open window.
    window: Schedule,
}

/// One model version's drift state, as the API shows it.
#[derive(Debug, Serialize)]
pub struct VersionDrift<'a> {
    pub model_version: &'a str,
    /// Version of the profile it is judged against.
    pub profile_version: u32,
    /// Whether that profile is the version's own (else the model's).
    pub version_specific: bool,
    /// The newest evaluated window (`None` before the first).
    pub report: Option<&'a DriftReport>,
}

/// The drift monitors of one partition, by model and model version.
#[derive(Default)]
pub struct DriftPart {
    models: BTreeMap<String, BTreeMap<String, VersionMonitor>>,
}

impl DriftPart {
    /// Restores the monitors of a checkpoint; a monitor whose profile
    /// version is neither known nor cached starts afresh on the active
    /// profile (logged).
    pub fn restore(
        checkpoints: Vec<DriftCheckpoint>,
        config: &DriftSection,
        registry: &ProfileRegistry,
        cache: &ProfileCache,
    ) -> Self {
        let mut part = Self::default();
        for c in checkpoints {
            let version = c.state.profile_version;
            let profile: Arc<Profile> = match registry.get(&c.model, version).cloned() {
                Some(p) => p,
                None => match cache.get(&c.model, version) {
                    Ok(Some(p)) => Arc::new(p),
                    Ok(None) => {
                        tracing::warn!(model = %c.model, version, "profile of a checkpointed drift monitor is gone; starting afresh");
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, model = %c.model, "cannot read the profile of a checkpointed drift monitor; starting afresh");
                        continue;
                    }
                },
            };
            let rules = config.rules.for_model(&c.model).clone();
            match DriftMonitor::restore(&profile, rules, c.state) {
                Ok(monitor) => {
                    part.models.entry(c.model).or_default().insert(
                        c.model_version,
                        VersionMonitor {
                            monitor,
                            window: c.next_window_ms,
                        },
                    );
                }
                Err(error) => tracing::warn!(%error, model = %c.model, "drift checkpoint unusable; starting afresh"),
            }
        }
        part
    }

    /// What goes into the partition's checkpoint.
    pub fn checkpoint(&self) -> Vec<DriftCheckpoint> {
        self.models
            .iter()
            .flat_map(|(model, versions)| {
                versions.iter().map(move |(version, d)| DriftCheckpoint {
                    model: model.clone(),
                    model_version: version.clone(),
                    next_window_ms: d.window,
                    state: d.monitor.snapshot(),
                })
            })
            .collect()
    }

    /// Feeds one inference event to its model version's monitor at the
    /// partition's time `now_ms` (the clock after this event), first
    /// deciding on the windows the clock closed. A version without a
    /// profile has no monitor (and loses one whose profile was removed).
    pub fn observe(
        &mut self,
        config: &DriftSection,
        registry: &ProfileRegistry,
        now_ms: i64,
        event: &InferenceRef<'_>,
    ) -> Result<Vec<Alert>, Error> {
        let (model, version) = (event.model, event.model_version);
        let Some(profile) = registry.for_version(model, version) else {
            if let Some(versions) = self.models.get_mut(model) {
                versions.remove(version);
            }
            return Ok(Vec::new());
        };
        if !self.models.contains_key(model) {
            self.models.insert(model.to_string(), BTreeMap::new());
        }
        let versions = self.models.get_mut(model).expect("inserted above");
        let stale = versions
            .get(version)
            .is_none_or(|d| d.monitor.profile_version() != profile.version);
        if stale {
            let rules = config.rules.for_model(model).clone();
            let monitor = DriftMonitor::new(profile, rules).map_err(|e| Error::Invalid(format!("drift: {e}")))?;
            if !versions.contains_key(version) && versions.len() >= config.max_versions_per_model {
                // Bounded memory: drop the version seen least recently.
                if let Some(oldest) = versions
                    .iter()
                    .min_by_key(|(_, d)| d.window.next_ms)
                    .map(|(v, _)| v.clone())
                {
                    tracing::info!(model = %model, model_version = %oldest, "drift monitor of the least recent version dropped");
                    versions.remove(&oldest);
                }
            }
            versions.insert(
                version.to_string(),
                VersionMonitor {
                    monitor,
                    window: Schedule::after(event.timestamp_ms, config.window_ms()),
                },
            );
        }
        let d = versions.get_mut(version).expect("inserted above");
        let alerts = d.close_window(version, now_ms, config.window_ms());
        d.monitor.observe_view(event);
        Ok(alerts)
    }

    /// An idle partition's clock moved to `now_ms`: decides on the windows
    /// it closed.
    pub fn advance(&mut self, config: &DriftSection, now_ms: i64) -> Vec<Alert> {
        let window_ms = config.window_ms();
        self.models
            .values_mut()
            .flat_map(|v| v.iter_mut())
            .flat_map(|(version, d)| d.close_window(version, now_ms, window_ms))
            .collect()
    }

    /// The drift state of `model`'s versions (only `model_version` when
    /// given), each with the version of the profile it is judged against.
    pub fn report<'a>(
        &'a self,
        registry: &ProfileRegistry,
        model: &str,
        model_version: Option<&str>,
    ) -> Vec<VersionDrift<'a>> {
        self.models
            .get(model)
            .into_iter()
            .flat_map(|versions| versions.iter())
            .filter(|(v, _)| model_version.is_none_or(|want| want == v.as_str()))
            .map(|(v, d)| VersionDrift {
                model_version: v,
                profile_version: d.monitor.profile_version(),
                version_specific: registry
                    .version_specific(model, v)
                    .is_some_and(|p| p.version == d.monitor.profile_version()),
                report: d.monitor.report(),
            })
            .collect()
    }

    /// Every monitor's gauge values: `(model, model version, values)`.
    pub fn metric_values(&self) -> impl Iterator<Item = (&str, &str, MetricValues)> + '_ {
        self.models.iter().flat_map(|(model, versions)| {
            versions
                .iter()
                .map(move |(version, d)| (model.as_str(), version.as_str(), d.monitor.metric_values()))
        })
    }
}

impl VersionMonitor {
    /// Decides on the window `now_ms` closed (only the first boundary
    /// passed does work: an empty window is no decision).
    fn close_window(&mut self, version: &str, now_ms: i64, window_ms: i64) -> Vec<Alert> {
        let Some(end) = self.window.due_first(now_ms, window_ms) else {
            return Vec::new();
        };
        self.monitor
            .evaluate(end)
            .iter()
            .filter_map(|d| d.to_alert(version))
            .collect()
    }
}
