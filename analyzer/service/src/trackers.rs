//! The accuracy (and drift) trackers of each owned partition, beside the
//! latency [`crate::engine::Engine`]: what the consume loop feeds on every
//! inference and label, evaluates on event-time ticks, and saves in the
//! partition's checkpoint.
//!
//! Accuracy per partition = one [`JoinStore`] (I/O: a redb file, or a
//! directory of log segments with `backend = "memory"`, under
//! `[accuracy.join] dir`) and one [`AccuracyTracker`] (pure; its state
//! goes into the checkpoint). Redelivered messages are skipped by the
//! store's own applied offsets, so the store and the latency engine are
//! each idempotent on their own. After a restore the tracker replays the
//! store's journal since the checkpoint's journal sequence
//! (docs/accuracy.md, "Engine integration").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use mlwatch_proto::v1::{Alert, InferenceEvent, InferenceStatus, LabelEvent};
use prometheus::GaugeVec;
use serde::{Deserialize, Serialize};

use crate::drift::{BuildOptions, DriftMonitor, DriftReport, DriftRulesConfig, MonitorState, Profile, ProfileBuilder};
use crate::profiles::{self, ProfileCache, ProfileRegistry, SharedProfiles};

use crate::accuracy::join::{JoinCounts, JoinInput, JoinStore, PendingPrediction, TruthLabel};
use crate::accuracy::tracker::{AccuracyConfig, AccuracyState, AccuracyTracker};
use crate::accuracy_metrics::AccuracyMetrics;
use mlwatch_analyzer_core::Error;
use mlwatch_proto::view::{InferenceRef, LabelRef};

/// One message of a partition fed to its accuracy join.
#[derive(Debug, Clone, Copy)]
pub enum Feed<'a> {
    /// An inference at its offset (a prediction when `status = ok` and it
    /// has one; else it only moves the clock).
    Inference(i64, &'a InferenceRef<'a>),
    /// A label at its offset.
    Label(i64, &'a LabelRef<'a>),
}

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
}

/// What a checkpoint holds of one model version's drift monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftCheckpoint {
    pub model: String,
    /// The model version monitored (alerts carry it).
    pub model_version: String,
    /// End of the open window, event time.
    pub next_window_ms: i64,
    pub state: MonitorState,
}

/// One model version's drift monitor in a partition.
struct ModelDrift {
    monitor: DriftMonitor,
    model_version: String,
    next_window_ms: i64,
}

/// A profile being captured from a model's events.
struct Capture {
    builder: ProfileBuilder,
    events: u64,
    /// Only events of this model version count (all when absent).
    from_version: Option<String>,
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

/// What a checkpoint holds of a partition's accuracy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccuracyCheckpoint {
    /// The accuracy clock: newest inference or label time seen.
    pub clock_ms: i64,
    /// The next evaluation boundary.
    pub next_eval_ms: i64,
    pub tracker: AccuracyState,
}

/// The accuracy of one owned partition.
pub struct AccuracyPart {
    store: JoinStore,
    tracker: AccuracyTracker,
    /// Last offset applied to the store, per topic (cached from the store).
    applied: HashMap<String, i64>,
    clock_ms: i64,
    next_eval_ms: i64,
}

/// The trackers of every owned partition, and what they share.
pub struct Trackers {
    config: AccuracyConfig,
    /// `<join.dir>/<consumer group>`: the group's store files.
    join_dir: std::path::PathBuf,
    inference_topic: String,
    labels_topic: String,
    eval_interval_ms: i64,
    accuracy: BTreeMap<i32, AccuracyPart>,
    drift_config: DriftSection,
    /// The profiles known (fed by the profiles topic in the service).
    profiles: SharedProfiles,
    profile_cache: ProfileCache,
    /// Where finished captures go to be published; `None`: they are applied
    /// to `profiles` directly (no topic: unit tests, tools).
    captured: Option<tokio::sync::mpsc::UnboundedSender<Profile>>,
    /// Drift monitors by partition, model and model version.
    drift: BTreeMap<i32, BTreeMap<String, BTreeMap<String, ModelDrift>>>,
    /// Profile captures under way, by model (not checkpointed: a restart
    /// starts a capture over).
    captures: BTreeMap<String, Capture>,
    /// Models whose captured profile is being published.
    publishing: BTreeSet<String>,
}

impl Trackers {
    pub fn new(
        config: AccuracyConfig,
        group: &str,
        inference_topic: &str,
        labels_topic: &str,
        eval_interval_ms: u64,
        drift_config: DriftSection,
    ) -> Self {
        let safe: String = group
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            join_dir: config.join.dir.join(safe),
            config,
            inference_topic: inference_topic.to_string(),
            labels_topic: labels_topic.to_string(),
            eval_interval_ms: i64::try_from(eval_interval_ms.max(1)).unwrap_or(1000),
            accuracy: BTreeMap::new(),
            profiles: SharedProfiles::default(),
            profile_cache: ProfileCache::new(drift_config.profile_dir.clone()),
            captured: None,
            drift_config,
            drift: BTreeMap::new(),
            captures: BTreeMap::new(),
            publishing: BTreeSet::new(),
        }
    }

    /// Uses the profiles of a shared registry (the profiles topic's) and
    /// sends finished captures to `captured` for publishing.
    pub fn share_profiles(&mut self, registry: SharedProfiles, captured: tokio::sync::mpsc::UnboundedSender<Profile>) {
        self.profiles = registry;
        self.captured = Some(captured);
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, ProfileRegistry> {
        profiles::read(&self.profiles)
    }

    pub fn accuracy_enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn accuracy_config(&self) -> &AccuracyConfig {
        &self.config
    }

    /// Opens partition `p`'s join store and restores its tracker from the
    /// checkpoint, replaying the store's journal after it.
    pub fn restore(&mut self, p: i32, checkpoint: Option<AccuracyCheckpoint>) -> Result<(), Error> {
        if !self.config.enabled || self.accuracy.contains_key(&p) {
            return Ok(());
        }
        let mut join = self.config.join.clone();
        join.dir = self.join_dir.clone();
        if checkpoint.is_none() && !JoinStore::path_for(&join, p).exists() {
            // Nothing to restore: the store is created by the first
            // prediction or label (partitions without any make no file).
            return Ok(());
        }
        let mut store = JoinStore::open(&join, p)?;
        // One fsync per checkpoint, not per message: `checkpoint` syncs the
        // store before the tracker state is taken.
        store.defer_durability(true);
        let cp = checkpoint.unwrap_or_default();
        let mut tracker = AccuracyTracker::from_state(self.config.clone(), cp.tracker);
        let counts = store.counts();
        if tracker.journal_seq() > counts.journal_seq as u64 {
            // A store that is behind its checkpoint (partition moved to an
            // instance without the file): take its numbering; predictions
            // it never saw cannot be joined (docs/analyzer.md, limits).
            tracing::warn!(
                partition = p,
                checkpoint_seq = tracker.journal_seq(),
                store_seq = counts.journal_seq,
                "join store behind the checkpoint; continuing with the store's journal"
            );
            tracker.rebase_journal(counts.journal_seq as u64);
        } else {
            tracker.apply(&store.journal_since(tracker.journal_seq())?);
        }
        let mut applied = HashMap::new();
        for topic in [&self.inference_topic, &self.labels_topic] {
            if let Some(o) = store.applied_offset(topic)? {
                applied.insert(topic.clone(), o);
            }
        }
        self.accuracy.insert(
            p,
            AccuracyPart {
                store,
                tracker,
                applied,
                clock_ms: cp.clock_ms,
                next_eval_ms: cp.next_eval_ms,
            },
        );
        Ok(())
    }

    /// Forgets partition `p` (revoked); its store file stays on disk.
    pub fn remove(&mut self, p: i32) {
        self.accuracy.remove(&p);
        self.drift.remove(&p);
    }

    /// Restores partition `p`'s drift monitors from its checkpoint (a
    /// monitor whose profile version is gone starts afresh on the active
    /// profile).
    pub fn restore_drift(&mut self, p: i32, checkpoints: Vec<DriftCheckpoint>) {
        let mut monitors: BTreeMap<String, BTreeMap<String, ModelDrift>> = BTreeMap::new();
        for c in checkpoints {
            let version = c.state.profile_version;
            let known = self.registry().get(&c.model, version).cloned();
            let profile: Arc<Profile> = match known {
                Some(p) => p,
                None => match self.profile_cache.get(&c.model, version) {
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
            let config = self.drift_config.rules.for_model(&c.model).clone();
            match DriftMonitor::restore(&profile, config, c.state) {
                Ok(monitor) => {
                    monitors.entry(c.model.clone()).or_default().insert(
                        c.model_version.clone(),
                        ModelDrift {
                            monitor,
                            model_version: c.model_version,
                            next_window_ms: c.next_window_ms,
                        },
                    );
                }
                Err(error) => tracing::warn!(%error, model = %c.model, "drift checkpoint unusable; starting afresh"),
            }
        }
        self.drift.insert(p, monitors);
    }

    /// What goes into `p`'s checkpoint of drift.
    pub fn drift_checkpoint(&self, p: i32) -> Vec<DriftCheckpoint> {
        self.drift
            .get(&p)
            .map(|m| {
                m.iter()
                    .flat_map(|(model, versions)| {
                        versions.values().map(move |d| DriftCheckpoint {
                            model: model.clone(),
                            model_version: d.model_version.clone(),
                            next_window_ms: d.next_window_ms,
                            state: d.monitor.snapshot(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes `profile` active without a topic (unit tests, tools): it gets
    /// a free version, which is returned. The service publishes through
    /// [`crate::profiles::ProfileTopic::publish`] instead.
    pub fn put_profile(&mut self, mut profile: Profile) -> Result<u32, Error> {
        let mut registry = self.profiles.write().unwrap_or_else(|p| p.into_inner());
        registry.assign_version(&mut profile);
        self.profile_cache.put(&profile)?;
        let key = profiles::record_key(&profile.model, profile.model_version.as_deref());
        let version = profile.version;
        registry
            .apply(&key, Some(profile), None)
            .map_err(|e| Error::Invalid(format!("profile: {e}")))?;
        Ok(version)
    }

    /// The active (model-wide) profile of `model`.
    pub fn active_profile(&self, model: &str) -> Option<Arc<Profile>> {
        self.registry().active(model).cloned()
    }

    /// Starts capturing `model`'s next `events` events (only those of
    /// `from_version` when given) as its new model-wide reference.
    pub fn request_capture(&mut self, model: &str, events: u64, from_version: Option<&str>) -> Result<(), Error> {
        let version = self.registry().versions(model).last().copied().unwrap_or(0) + 1;
        let builder = ProfileBuilder::new(BuildOptions::new(model, version))
            .map_err(|e| Error::Invalid(format!("profile capture: {e}")))?;
        self.captures.insert(
            model.to_string(),
            Capture {
                builder,
                events,
                from_version: from_version.map(str::to_string),
            },
        );
        Ok(())
    }

    /// The drift state of `model`'s versions (only `model_version` when
    /// given), each with the version of the profile it is judged against.
    pub fn drift_report(&self, model: &str, model_version: Option<&str>) -> Vec<VersionDrift<'_>> {
        let registry = self.registry();
        self.drift
            .values()
            .filter_map(|m| m.get(model))
            .flat_map(|versions| versions.values())
            .filter(|d| model_version.is_none_or(|v| v == d.model_version))
            .map(|d| VersionDrift {
                model_version: &d.model_version,
                profile_version: d.monitor.profile_version(),
                version_specific: registry
                    .version_specific(model, &d.model_version)
                    .is_some_and(|p| p.version == d.monitor.profile_version()),
                report: d.monitor.report(),
            })
            .collect()
    }

    /// Sets `ml_feature_drift_score` and `ml_data_quality_score` (labels
    /// `model_name`, `model_version`, and `feature_name` / `quality_check`).
    pub fn export_drift(&self, drift: &GaugeVec, quality: &GaugeVec) {
        drift.reset();
        quality.reset();
        for (model, versions) in self.drift.values().flat_map(|m| m.iter()) {
            for (version, d) in versions {
                let v = d.monitor.metric_values();
                for (feature, score) in &v.drift {
                    drift.with_label_values(&[model, version, feature]).set(*score);
                }
                for (check, score) in &v.quality {
                    quality
                        .with_label_values(&[model.as_str(), version.as_str(), check])
                        .set(*score);
                }
            }
        }
    }

    /// Feeds one inference event to its model version's drift monitor (and
    /// to a profile capture), evaluating the windows its event time closes.
    /// A version is judged against its own profile when it has one, else
    /// against the model's active profile.
    pub fn observe_drift(&mut self, p: i32, event: &InferenceEvent) -> Result<Vec<Alert>, Error> {
        self.observe_drift_view(p, &InferenceRef::of(event))
    }

    /// [`Trackers::observe_drift`] of a decoded message.
    pub fn observe_drift_view(&mut self, p: i32, event: &InferenceRef<'_>) -> Result<Vec<Alert>, Error> {
        if !self.drift_config.enabled {
            return Ok(Vec::new());
        }
        self.capture(event)?;
        let (model, version) = (event.model, event.model_version);
        let fresh = {
            let registry = profiles::read(&self.profiles);
            let Some(profile) = registry.for_version(model, version) else {
                // No profile (or it was removed by a tombstone): no monitor.
                if let Some(versions) = self.drift.get_mut(&p).and_then(|m| m.get_mut(model)) {
                    versions.remove(version);
                }
                return Ok(Vec::new());
            };
            let stale = self
                .drift
                .get(&p)
                .and_then(|m| m.get(model))
                .and_then(|v| v.get(version))
                .is_none_or(|d| d.monitor.profile_version() != profile.version);
            stale.then(|| profile.clone())
        };
        let window_ms = self.drift_config.window_secs as i64 * 1000;
        let models = self.drift.entry(p).or_default();
        if !models.contains_key(model) {
            models.insert(model.to_string(), BTreeMap::new());
        }
        let versions = models.get_mut(model).expect("inserted above");
        if let Some(profile) = fresh {
            let config = self.drift_config.rules.for_model(model).clone();
            let monitor = DriftMonitor::new(&profile, config).map_err(|e| Error::Invalid(format!("drift: {e}")))?;
            if !versions.contains_key(version) && versions.len() >= self.drift_config.max_versions_per_model {
                // Bounded memory: drop the version seen least recently.
                if let Some(oldest) = versions
                    .iter()
                    .min_by_key(|(_, d)| d.next_window_ms)
                    .map(|(v, _)| v.clone())
                {
                    tracing::info!(model = %model, model_version = %oldest, "drift monitor of the least recent version dropped");
                    versions.remove(&oldest);
                }
            }
            versions.insert(
                version.to_string(),
                ModelDrift {
                    monitor,
                    model_version: version.to_string(),
                    next_window_ms: (event.timestamp_ms.div_euclid(window_ms) + 1) * window_ms,
                },
            );
        }
        let d = versions.get_mut(version).expect("inserted above");
        let alerts = d.close_windows(event.timestamp_ms, window_ms);
        d.monitor.observe_view(event);
        Ok(alerts)
    }

    /// Closes the drift windows that `t_ms` passed in partition `p` (idle
    /// partitions).
    pub fn advance_drift(&mut self, p: i32, t_ms: i64) -> Vec<Alert> {
        let window_ms = self.drift_config.window_secs as i64 * 1000;
        self.drift
            .get_mut(&p)
            .map(|m| {
                m.values_mut()
                    .flat_map(|v| v.values_mut())
                    .flat_map(|d| d.close_windows(t_ms, window_ms))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn capture(&mut self, event: &InferenceRef<'_>) -> Result<(), Error> {
        if self.drift_config.capture_events > 0 && !self.captures.contains_key(event.model) {
            let has_profile = self.registry().active(event.model).is_some();
            if has_profile {
                self.publishing.remove(event.model);
            } else if !self.publishing.contains(event.model) {
                self.request_capture(event.model, self.drift_config.capture_events, None)?;
            }
        }
        let Some(c) = self.captures.get_mut(event.model) else {
            return Ok(());
        };
        if c.from_version.as_ref().is_some_and(|v| *v != event.model_version) {
            return Ok(());
        }
        c.builder.add_event(&event.to_event());
        if c.builder.rows() < c.events {
            return Ok(());
        }
        let c = self.captures.remove(event.model).expect("present");
        match c.builder.finish() {
            Ok(mut profile) => {
                profile.source = format!("captured from {} events of {}", c.events, event.model_version);
                match &self.captured {
                    Some(tx) => {
                        self.publishing.insert(event.model.to_string());
                        if tx.send(profile).is_err() {
                            tracing::warn!(model = %event.model, "profile publisher stopped; captured profile dropped");
                        }
                    }
                    None => {
                        let version = self.put_profile(profile)?;
                        tracing::info!(model = %event.model, version, "reference profile captured");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, model = %event.model, "profile capture failed"),
        }
        Ok(())
    }

    /// A prediction (inference events with `status = ok` only).
    pub fn on_inference(&mut self, p: i32, offset: i64, event: &InferenceEvent) -> Result<Vec<Alert>, Error> {
        self.on_batch(p, &[Feed::Inference(offset, &InferenceRef::of(event))])
    }

    /// A ground-truth label.
    pub fn on_label(&mut self, p: i32, offset: i64, event: &LabelEvent) -> Result<Vec<Alert>, Error> {
        self.on_batch(p, &[Feed::Label(offset, &LabelRef::of(event))])
    }

    /// Feeds partition `p`'s messages of one poll, in offset order per
    /// topic, to its join, and evaluates on the ticks the accuracy clock
    /// passes. Inputs go to the store in one write transaction per
    /// evaluation tick crossed (usually one for the whole poll), each at the
    /// clock it would have had alone, so the result is that of feeding
    /// them one by one. Inputs the store already applied (redelivered) are
    /// skipped. On `Err` nothing after the last completed transaction
    /// counts; feeding the same messages again completes it.
    pub fn on_batch(&mut self, p: i32, feed: &[Feed<'_>]) -> Result<Vec<Alert>, Error> {
        if !self.config.enabled {
            return Ok(Vec::new());
        }
        let interval = self.eval_interval_ms;
        let mut alerts = Vec::new();
        let mut segment: Vec<(JoinInput, i64)> = Vec::new();
        // Last offset of each topic in `segment`: (inference, labels).
        let mut last: (Option<i64>, Option<i64>) = (None, None);
        for f in feed {
            let (is_label, offset, t_ms, input) = match *f {
                Feed::Inference(offset, event) => {
                    let joinable = event.status == InferenceStatus::Ok as i32 && event.prediction.is_some();
                    let input = joinable.then(|| JoinInput::Prediction(pending_of(event)));
                    (false, offset, event.timestamp_ms, input)
                }
                Feed::Label(offset, event) => (
                    true,
                    offset,
                    event.timestamp_ms,
                    Some(JoinInput::Label(truth_of(event))),
                ),
            };
            if !self.accuracy.contains_key(&p) {
                if input.is_none() {
                    continue; // no store yet and nothing to join: nothing to move
                }
                // The store is created by the first prediction or label.
                self.restore(p, Some(AccuracyCheckpoint::default()))?;
            }
            let topic = if is_label {
                &self.labels_topic
            } else {
                &self.inference_topic
            };
            let part = self
                .accuracy
                .get_mut(&p)
                .ok_or_else(|| Error::Invalid(format!("join store: partition {p} not open")))?;
            match input {
                Some(input) => {
                    let pending = if is_label { last.1 } else { last.0 };
                    if part.applied.get(topic).is_some_and(|o| offset <= *o) || pending.is_some_and(|o| offset <= o) {
                        continue; // already in the store (or in this transaction)
                    }
                    part.clock_ms = part.clock_ms.max(t_ms);
                    segment.push((input, part.clock_ms));
                    if is_label {
                        last.1 = Some(offset);
                    } else {
                        last.0 = Some(offset);
                    }
                }
                None => {
                    // Nothing to join; the event still moves the clock.
                    if part.next_eval_ms == 0 && part.clock_ms == 0 {
                        continue;
                    }
                    part.clock_ms = part.clock_ms.max(t_ms);
                }
            }
            if part.next_eval_ms == 0 || part.clock_ms >= part.next_eval_ms {
                part.flush(&mut segment, &mut last, &self.inference_topic, &self.labels_topic)?;
                alerts.extend(part.tick(interval)?);
            }
        }
        if let Some(part) = self.accuracy.get_mut(&p) {
            part.flush(&mut segment, &mut last, &self.inference_topic, &self.labels_topic)?;
        }
        Ok(alerts)
    }

    /// Moves partition `p`'s accuracy clock to `t_ms` (idle partitions).
    pub fn advance(&mut self, p: i32, t_ms: i64) -> Result<Vec<Alert>, Error> {
        if !self.config.enabled {
            return Ok(Vec::new());
        }
        let interval = self.eval_interval_ms;
        let Some(part) = self.accuracy.get_mut(&p) else {
            return Ok(Vec::new());
        };
        if part.next_eval_ms == 0 && part.clock_ms == 0 {
            return Ok(Vec::new());
        }
        part.clock_ms = part.clock_ms.max(t_ms);
        part.tick(interval)
    }

    /// The accuracy clock of `p`.
    pub fn clock_ms(&self, p: i32) -> Option<i64> {
        self.accuracy.get(&p).map(|a| a.clock_ms)
    }

    /// What goes into `p`'s checkpoint (records the covered offsets first).
    /// The join store is made durable first, so it is never behind a
    /// checkpoint; `Err` means no checkpoint may be written now.
    pub fn checkpoint(&mut self, p: i32) -> Result<Option<AccuracyCheckpoint>, Error> {
        let Some(part) = self.accuracy.get_mut(&p) else {
            return Ok(None);
        };
        part.store.sync()?;
        let covered: Vec<(String, i64)> = part.applied.iter().map(|(k, v)| (k.clone(), *v)).collect();
        part.tracker.set_covered_offsets(covered);
        Ok(Some(AccuracyCheckpoint {
            clock_ms: part.clock_ms,
            next_eval_ms: part.next_eval_ms,
            tracker: part.tracker.state().clone(),
        }))
    }

    /// After a checkpoint holding journal sequence `seq` was acknowledged.
    pub fn checkpointed(&mut self, p: i32, seq: u64) {
        if let Some(part) = self.accuracy.get_mut(&p)
            && let Err(error) = part.store.trim_journal(seq)
        {
            tracing::warn!(%error, partition = p, "cannot trim the join journal; it is trimmed at the next checkpoint");
        }
    }

    /// Every owned partition's tracker with its join counts and clock.
    pub fn accuracy_parts(&self) -> impl Iterator<Item = (&AccuracyTracker, JoinCounts, i64)> {
        self.accuracy
            .values()
            .map(|a| (&a.tracker, a.store.counts(), a.clock_ms))
    }

    /// Sets the accuracy gauges from every owned partition.
    pub fn export(&self, metrics: &mut AccuracyMetrics) {
        metrics.reset();
        let mut total = JoinCounts::default();
        for (tracker, counts, clock) in self.accuracy_parts() {
            metrics.export_series(tracker, clock);
            total.add(&counts);
        }
        metrics.export_join(&total, self.accuracy.values().map(|a| a.tracker.counts()));
    }
}

impl ModelDrift {
    /// Evaluates every window boundary up to `t_ms` (only the first does
    /// work: an empty window is no decision).
    fn close_windows(&mut self, t_ms: i64, window_ms: i64) -> Vec<Alert> {
        if t_ms < self.next_window_ms {
            return Vec::new();
        }
        let end = self.next_window_ms;
        self.next_window_ms = (t_ms.div_euclid(window_ms) + 1) * window_ms;
        self.monitor
            .evaluate(end)
            .iter()
            .filter_map(|d| d.to_alert(&self.model_version))
            .collect()
    }
}

/// The prediction of a decoded inference event, as the join keeps it.
fn pending_of(e: &InferenceRef<'_>) -> PendingPrediction {
    let p = e.prediction.as_ref();
    PendingPrediction {
        event_id: e.event_id.to_string(),
        model: e.model.to_string(),
        model_version: e.model_version.to_string(),
        timestamp_ms: e.timestamp_ms,
        score: p.and_then(|p| p.score),
        label: p.and_then(|p| p.label).map(str::to_string),
        value: p.and_then(|p| p.value),
        scores: p
            .map(|p| p.scores.iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default(),
        tags: e.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// A decoded label, as the join keeps it.
fn truth_of(l: &LabelRef<'_>) -> TruthLabel {
    TruthLabel {
        event_id: l.event_id.to_string(),
        model: l.model.to_string(),
        timestamp_ms: l.timestamp_ms,
        label: l.label.map(str::to_string),
        value: l.value,
    }
}

impl AccuracyPart {
    /// Writes `segment` to the store in one transaction with the last
    /// offsets it consumed, and feeds what it produced to the tracker.
    fn flush(
        &mut self,
        segment: &mut Vec<(JoinInput, i64)>,
        last: &mut (Option<i64>, Option<i64>),
        inference_topic: &str,
        labels_topic: &str,
    ) -> Result<(), Error> {
        if segment.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(&str, i64)> = [(inference_topic, last.0), (labels_topic, last.1)]
            .into_iter()
            .filter_map(|(t, o)| o.map(|o| (t, o)))
            .collect();
        let entries = self
            .store
            .apply_each(segment.iter().map(|(i, now)| (i, *now)), &offsets)?;
        for (topic, offset) in offsets {
            self.applied.insert(topic.to_string(), offset);
        }
        self.tracker.apply(&entries);
        segment.clear();
        *last = (None, None);
        Ok(())
    }

    /// Evaluates at the newest boundary the clock passed (once per call:
    /// the verdicts read windows of hours, a skipped intermediate tick
    /// changes nothing but the hold timing by one interval).
    fn tick(&mut self, interval: i64) -> Result<Vec<Alert>, Error> {
        if self.next_eval_ms == 0 {
            self.next_eval_ms = (self.clock_ms / interval + 1) * interval;
            return Ok(Vec::new());
        }
        if self.clock_ms < self.next_eval_ms {
            return Ok(Vec::new());
        }
        let at = self.clock_ms - self.clock_ms.rem_euclid(interval);
        self.next_eval_ms = at + interval;
        self.store.expire(at)?;
        Ok(self.tracker.evaluate(at))
    }
}

#[cfg(test)]
mod tests {
    use mlwatch_proto::v1::{FeatureValue, Prediction, feature_value};

    use super::*;
    use crate::drift::{BuildOptions, ProfileBuilder, Value};

    const T0: i64 = 1_795_000_000_000;

    fn trackers(dir: &std::path::Path) -> Trackers {
        let mut config = AccuracyConfig::default();
        config.join.dir = dir.join("join");
        let drift = DriftSection {
            profile_dir: dir.join("profiles"),
            window_secs: 10,
            ..DriftSection::default()
        };
        Trackers::new(config, "grp/1", "inf", "lab", 1000, drift)
    }

    fn prediction(i: i64) -> InferenceEvent {
        InferenceEvent {
            event_id: format!("e{i}"),
            model: "fraud".into(),
            model_version: "v1".into(),
            timestamp_ms: T0 + i * 100,
            status: InferenceStatus::Ok as i32,
            prediction: Some(Prediction {
                score: Some(if i % 3 == 0 { 0.2 } else { 0.8 }),
                ..Default::default()
            }),
            features: [(
                "amount".to_string(),
                FeatureValue {
                    kind: Some(feature_value::Kind::Number((i % 50) as f64)),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn label(i: i64) -> LabelEvent {
        LabelEvent {
            event_id: format!("e{i}"),
            model: "fraud".into(),
            timestamp_ms: T0 + i * 100 + 60_000,
            label: Some("1".into()),
            ..Default::default()
        }
    }

    fn labelled(t: &Trackers) -> (u64, u64) {
        let (tracker, _, clock) = t.accuracy_parts().next().unwrap();
        let w = &tracker.window_metrics(Some("fraud"), 3600, clock)[0];
        (w.series.predictions, w.series.labelled)
    }

    #[test]
    fn restore_from_checkpoint_replays_the_journal_and_skips_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trackers(dir.path());
        for i in 0..100 {
            t.on_inference(0, i, &prediction(i)).unwrap();
        }
        for i in 0..60 {
            t.on_label(0, i, &label(i)).unwrap();
        }
        let cp = t.checkpoint(0).unwrap().unwrap();
        // Applied to the store after the checkpoint, then a crash.
        for i in 60..80 {
            t.on_label(0, i, &label(i)).unwrap();
        }
        assert_eq!(labelled(&t), (100, 80));
        drop(t);

        let mut t = trackers(dir.path());
        t.restore(0, Some(cp)).unwrap();
        assert_eq!(labelled(&t), (100, 80));
        // Redelivered messages change nothing.
        for i in 70..80 {
            t.on_label(0, i, &label(i)).unwrap();
        }
        t.on_inference(0, 5, &prediction(5)).unwrap();
        assert_eq!(labelled(&t), (100, 80));
        let (_, counts, _) = t.accuracy_parts().next().unwrap();
        assert_eq!(
            (counts.joined, counts.duplicate_labels, counts.predictions),
            (80, 0, 100)
        );
    }

    #[test]
    fn a_batch_gives_what_one_by_one_gives() {
        // Predictions and labels interleaved across many evaluation ticks,
        // some failed inferences (clock only) and a redelivered stretch.
        let mut messages: Vec<(bool, i64, InferenceEvent, LabelEvent)> = Vec::new();
        let (mut inf_offset, mut label_offset) = (0, 0);
        for i in 0..3000 {
            let mut e = prediction(i);
            if i % 7 == 0 {
                e.status = InferenceStatus::Error as i32;
            }
            messages.push((false, inf_offset, e, LabelEvent::default()));
            inf_offset += 1;
            let mut labels = Vec::new();
            if i >= 20 && i % 2 == 0 {
                labels.push((i - 20, if i % 5 == 0 { "0" } else { "1" }));
            }
            // Labels ahead of their prediction (they wait about as long as
            // the store lets them), and labels again after their id was
            // settled (within or past its retention): where the deadlines
            // fall depends on each input's own clock.
            if i % 10 == 3 {
                labels.push((i + 10, "1"));
            }
            if i >= 40 && i % 10 == 5 {
                labels.push((i - 35, "1"));
            }
            for (j, class) in labels {
                let mut l = label(j);
                l.timestamp_ms = T0 + i * 100;
                l.label = Some(class.into());
                messages.push((true, label_offset, InferenceEvent::default(), l));
                label_offset += 1;
            }
        }
        let redelivered: Vec<_> = messages[1000..1100].to_vec();
        messages.extend(redelivered);
        let views: Vec<(InferenceRef<'_>, LabelRef<'_>)> = messages
            .iter()
            .map(|m| (InferenceRef::of(&m.2), LabelRef::of(&m.3)))
            .collect();
        fn feed<'a>(
            (m, (i, l)): (
                &'a (bool, i64, InferenceEvent, LabelEvent),
                &'a (InferenceRef<'a>, LabelRef<'a>),
            ),
        ) -> Feed<'a> {
            if m.0 {
                Feed::Label(m.1, l)
            } else {
                Feed::Inference(m.1, i)
            }
        }

        // Short waits and retention, so that deadlines decide outcomes.
        let short = |dir: &std::path::Path| {
            let mut t = trackers(dir);
            t.config.join.label_wait_secs = 1;
            t.config.join.settled_retention_secs = 2;
            t
        };
        let one_dir = tempfile::tempdir().unwrap();
        let mut one = short(one_dir.path());
        let mut one_alerts = Vec::new();
        for m in messages.iter().zip(&views) {
            one_alerts.extend(one.on_batch(0, &[feed(m)]).unwrap());
        }
        let batch_dir = tempfile::tempdir().unwrap();
        let mut batched = short(batch_dir.path());
        let mut batch_alerts = Vec::new();
        for (chunk, views) in messages.chunks(333).zip(views.chunks(333)) {
            let f: Vec<Feed<'_>> = chunk.iter().zip(views).map(feed).collect();
            batch_alerts.extend(batched.on_batch(0, &f).unwrap());
        }

        let (a, b) = (
            one.checkpoint(0).unwrap().unwrap(),
            batched.checkpoint(0).unwrap().unwrap(),
        );
        assert_eq!((a.clock_ms, a.next_eval_ms), (b.clock_ms, b.next_eval_ms));
        assert_eq!(
            serde_json::to_value(&a.tracker).unwrap(),
            serde_json::to_value(&b.tracker).unwrap()
        );
        let counts = |t: &Trackers| t.accuracy_parts().next().unwrap().1;
        assert_eq!(counts(&one), counts(&batched));
        let c = counts(&one);
        assert!(
            c.joined > 1000 && c.expired_labels > 0 && c.duplicate_labels > 0,
            "{c:?}"
        );
        let ids = |v: &[Alert]| v.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&one_alerts), ids(&batch_alerts));
        assert_eq!(labelled(&one), labelled(&batched));
    }

    #[test]
    fn drift_monitors_checkpoint_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trackers(dir.path());
        let mut b = ProfileBuilder::new(BuildOptions::new("fraud", 1)).unwrap();
        for i in 0..500 {
            b.start_row();
            b.add_feature("amount", Value::Number((i % 50) as f64));
        }
        assert_eq!(t.put_profile(b.finish().unwrap()).unwrap(), 1);
        for i in 0..150 {
            t.observe_drift(0, &prediction(i)).unwrap();
        }
        let cp = t.drift_checkpoint(0);
        assert_eq!(cp.len(), 1);
        let mut restored = trackers(dir.path());
        // The profile comes from the local cache (no topic here).
        restored.restore_drift(0, cp.clone());
        assert_eq!(restored.drift_checkpoint(0)[0].state, cp[0].state);
        let report = restored.drift_report("fraud", None);
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].model_version, report[0].profile_version), ("v1", 1));
    }

    #[test]
    fn each_model_version_has_its_own_monitor_and_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trackers(dir.path());
        let mut b = ProfileBuilder::new(BuildOptions::new("fraud", 1)).unwrap();
        for i in 0..5000 {
            b.start_row();
            b.add_feature("amount", Value::Number((i % 50) as f64));
        }
        let profile = b.finish().unwrap();
        assert_eq!(t.put_profile(profile.clone()).unwrap(), 1);
        // v2 (the canary) sees amount shifted by 20; v1 does not. Interleaved
        // in one partition: 30 windows of 10 s.
        let mut alerts = Vec::new();
        for i in 0..3000 {
            for (version, shift) in [("v1", 0.0), ("v2", 20.0)] {
                let mut e = prediction(i);
                e.model_version = version.into();
                e.features.get_mut("amount").unwrap().kind = Some(feature_value::Kind::Number(
                    (i % 50) as f64 + if i >= 1500 { shift } else { 0.0 },
                ));
                alerts.extend(t.observe_drift(0, &e).unwrap());
            }
        }
        let fired: BTreeSet<(String, String)> = alerts
            .iter()
            .filter(|a| a.r#type == "FeatureDrift")
            .map(|a| (a.labels["model_version"].clone(), a.labels["feature"].clone()))
            .collect();
        assert_eq!(
            fired,
            BTreeSet::from([("v2".to_string(), "amount".to_string())]),
            "{alerts:?}"
        );
        let reports = t.drift_report("fraud", None);
        assert_eq!(reports.len(), 2);
        assert_eq!(t.drift_report("fraud", Some("v2")).len(), 1);
        assert_eq!(t.drift_checkpoint(0).len(), 2);

        // A version-specific profile: v2 is judged against its own reference
        // (the shifted data), so its monitor restarts on profile 2.
        let mut own = ProfileBuilder::new(BuildOptions::new("fraud", 1)).unwrap();
        for i in 0..5000 {
            own.start_row();
            own.add_feature("amount", Value::Number((i % 50) as f64 + 20.0));
        }
        let mut own = own.finish().unwrap();
        own.model_version = Some("v2".into());
        assert_eq!(t.put_profile(own).unwrap(), 2);
        let mut e = prediction(3000);
        e.model_version = "v2".into();
        t.observe_drift(0, &e).unwrap();
        let v2 = t.drift_report("fraud", Some("v2"));
        assert_eq!((v2[0].profile_version, v2[0].version_specific), (2, true));
        assert_eq!(t.drift_report("fraud", Some("v1"))[0].profile_version, 1);

        // A tombstone of the model's profile ends the monitors that used it.
        t.profiles.write().unwrap().apply("fraud", None, None).unwrap();
        let mut e = prediction(3001);
        e.model_version = "v1".into();
        t.observe_drift(0, &e).unwrap();
        assert!(t.drift_report("fraud", Some("v1")).is_empty());
        assert_eq!(t.drift_report("fraud", Some("v2")).len(), 1);

        // Versions per model are bounded: the least recent is dropped.
        let mut small = trackers(dir.path());
        small.drift_config.max_versions_per_model = 2;
        small.put_profile(profile).unwrap();
        for (i, version) in ["a", "b", "c"].iter().enumerate() {
            let mut e = prediction(i as i64 * 200);
            e.model_version = (*version).into();
            small.observe_drift(0, &e).unwrap();
        }
        let kept: Vec<&str> = small
            .drift_report("fraud", None)
            .iter()
            .map(|r| r.model_version)
            .collect();
        assert_eq!(kept, ["b", "c"]);
    }

    #[test]
    fn a_requested_capture_becomes_the_active_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trackers(dir.path());
        t.request_capture("fraud", 200, Some("v1")).unwrap();
        for i in 0..199 {
            t.observe_drift(0, &prediction(i)).unwrap();
            // Events of other versions do not count.
            let mut other = prediction(i);
            other.model_version = "v9".into();
            t.observe_drift(0, &other).unwrap();
        }
        assert!(t.active_profile("fraud").is_none());
        t.observe_drift(0, &prediction(199)).unwrap();
        let p = t.active_profile("fraud").unwrap();
        assert_eq!((p.version, p.rows), (1, 200));
        assert!(p.features.contains_key("amount") && p.predictions.contains_key("score"));
        // Cached locally for checkpoint restores.
        let cache = ProfileCache::new(dir.path().join("profiles"));
        assert_eq!(cache.get("fraud", 1).unwrap().unwrap().rows, 200);
    }

    #[test]
    fn a_published_capture_is_sent_once_and_not_restarted_while_publishing() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trackers(dir.path());
        t.drift_config.capture_events = 100;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        t.share_profiles(SharedProfiles::default(), tx);
        for i in 0..250 {
            t.observe_drift(0, &prediction(i)).unwrap();
        }
        let sent = rx.try_recv().unwrap();
        assert_eq!((sent.version, sent.rows), (1, 100));
        assert!(
            rx.try_recv().is_err(),
            "a second capture started while the first was publishing"
        );
    }
}
