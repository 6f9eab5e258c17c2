//! The source partitions this instance owns ([`Partitions`]), each a
//! [`Partition`]: its positions on the two topics, its one event clock, and
//! its latency, accuracy and drift parts, behind one interface:
//!
//! - `apply` (observe): a poll's messages in order. An inference event moves
//!   the clock to its time; each part first evaluates what the clock made
//!   due, then takes the event. A label goes to the accuracy join only and
//!   does not move the clock (labels read ahead of their predictions in a
//!   catch-up must not advance evaluation).
//! - [`Partitions::advance_idle`]: an idle partition's clock follows wall
//!   time, so a model that stops sending is still judged.
//! - [`Partitions::checkpoint`] / [`Partitions::restore`]: the whole
//!   partition as one [`Checkpoint`](crate::checkpoint::Checkpoint).
//!
//! Events are keyed by model, so a model lives in exactly one partition and
//! moves between instances with it. Alerts go to the outbox, published (and
//! acknowledged) before the checkpoint that reflects them. Adding a signal
//! is a library with a part (observe, advance, checkpoint, restore) and a
//! field here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mlwatch_analyzer_accuracy::join::{JoinCounts, JoinInput, PendingPrediction, TruthLabel};
use mlwatch_analyzer_accuracy::part::{AccuracyCheckpoint, AccuracyPart, Source, Topics};
use mlwatch_analyzer_accuracy::tracker::{AccuracyConfig, AccuracyTracker};
use mlwatch_analyzer_core::{Error, EventClock};
use mlwatch_analyzer_drift::capture::Captures;
use mlwatch_analyzer_drift::part::{DriftCheckpoint, DriftPart, DriftSection, VersionDrift};
use mlwatch_analyzer_drift::registry::{self, ProfileCache, ProfileRegistry, SharedProfiles};
use mlwatch_analyzer_drift::{MetricValues, Profile};
use mlwatch_analyzer_latency::part::{SeriesInfo, WindowReport};
use mlwatch_analyzer_latency::{LatencyConfig, LatencyPart, RulesConfig, Settings as LatencySettings};
use mlwatch_proto::v1::{Alert, InferenceStatus};
use mlwatch_proto::view::{InferenceRef, LabelRef};
use serde::{Deserialize, Serialize};

use crate::alerts::{AlertBook, AlertRecord};
use crate::history::{HistoryConfig, PartitionHistory, Sample, SeriesHistory};

/// A message decoded outside the lock (`Err`: why it is poison); an
/// inference event borrows from its message.
// Not boxed: a box per event is the allocation the decoding avoids.
#[allow(clippy::large_enum_variant)]
pub enum Decoded<'m> {
    Inference(Result<InferenceRef<'m>, String>),
    Label(Result<LabelRef<'m>, String>),
}

/// What [`Partitions::apply`] did with a run of messages.
#[derive(Debug, Default)]
pub struct Applied<'d> {
    /// The poison message that ended the run (its index and why).
    pub poison: Option<(usize, &'d str)>,
    /// Inference events newly applied.
    pub inferences: u64,
    /// Label events newly applied.
    pub labels: u64,
    /// Messages already applied before (redelivered).
    pub duplicates: u64,
    /// The join store failed: latency and drift have the inferences, the
    /// join does not; applying the same messages again completes it (each
    /// part skips what it already has).
    pub error: Option<Error>,
}

/// A partition's positions, clock and latency state as checkpointed
/// (the layout of format 1: `state` of a checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Offset of the next inference message to apply.
    pub next_offset: i64,
    /// The partition's event clock.
    pub clock_ms: i64,
    /// Inference events applied.
    pub events: u64,
    /// Offset of the next message of the labels topic's same partition.
    #[serde(default)]
    pub label_next_offset: i64,
    #[serde(flatten)]
    pub latency: LatencyPart,
    /// The partition's alerts that are firing (published, not resolved).
    #[serde(default)]
    pub alerts: Vec<AlertRecord>,
    /// The partition's series histories (absent in older checkpoints).
    #[serde(default)]
    pub history: PartitionHistory,
}

/// Where a partition stands: its two offsets and its clock (a checkpoint is
/// written only when this changed).
pub type Position = (i64, i64, i64);

/// One owned source partition.
pub struct Partition {
    next_offset: i64,
    label_next_offset: i64,
    events: u64,
    clock: EventClock,
    latency: LatencyPart,
    /// Opened with the first prediction or label (or a checkpoint that has
    /// one); `None` when accuracy is off.
    accuracy: Option<AccuracyPart>,
    drift: DriftPart,
    history: PartitionHistory,
}

impl Partition {
    /// The partition's event clock.
    pub fn clock_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn position(&self) -> Position {
        (self.next_offset, self.label_next_offset, self.clock.now_ms())
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}

/// Configuration resolved once and shared by every partition.
pub struct Settings {
    latency: LatencySettings,
    eval_interval_ms: i64,
    accuracy: AccuracyConfig,
    /// `<join.dir>/<consumer group>`: the group's store files.
    join_dir: PathBuf,
    topics: Topics,
    drift: DriftSection,
    history: HistoryConfig,
}

impl Settings {
    /// The settings of the service's configuration.
    pub fn from_config(config: &crate::Config) -> Self {
        let a = &config.analyzer;
        let topics = &config.kafka.topics;
        Self::new(
            a.latency.clone(),
            config.rules.clone(),
            a.eval_interval_ms,
            config.accuracy.clone(),
            config.drift.clone(),
            &a.group_id,
            &topics.inference,
            &topics.labels,
        )
        .with_history(config.history.clone())
    }

    /// These settings with the series history configured.
    pub fn with_history(mut self, history: HistoryConfig) -> Self {
        self.history = history;
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        latency: LatencyConfig,
        rules: RulesConfig,
        eval_interval_ms: u64,
        accuracy: AccuracyConfig,
        drift: DriftSection,
        group: &str,
        inference_topic: &str,
        labels_topic: &str,
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
            latency: LatencySettings::new(latency, rules, eval_interval_ms),
            eval_interval_ms: i64::try_from(eval_interval_ms.max(1)).unwrap_or(1000),
            join_dir: accuracy.join.dir.join(safe),
            accuracy,
            topics: Topics {
                inferences: inference_topic.to_string(),
                labels: labels_topic.to_string(),
            },
            drift,
            history: HistoryConfig::default(),
        }
    }
}

/// The partitions of this instance, what they share, and the alerts they
/// produced that are not yet acknowledged.
pub struct Partitions {
    settings: Settings,
    owned: BTreeMap<i32, Partition>,
    /// The profiles known (fed by the profiles topic in the service).
    profiles: SharedProfiles,
    profile_cache: ProfileCache,
    captures: Captures,
    /// Where finished captures go to be published; `None`: they are applied
    /// to `profiles` directly (no topic: unit tests, tools).
    captured: Option<tokio::sync::mpsc::UnboundedSender<Profile>>,
    outbox: Vec<(i32, Alert)>,
    /// Alerts published: active per partition, recent per process.
    alerts: AlertBook,
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

/// Partition `p`'s accuracy part, created (with its store) by the first
/// prediction or label.
fn open_accuracy<'a>(s: &Settings, p: i32, slot: &'a mut Option<AccuracyPart>) -> Result<&'a mut AccuracyPart, Error> {
    if slot.is_none() {
        *slot = Some(AccuracyPart::create(
            &s.accuracy,
            &s.join_dir,
            p,
            s.topics.clone(),
            AccuracyCheckpoint::default(),
        )?);
    }
    Ok(slot.as_mut().expect("set above"))
}

impl Partitions {
    pub fn new(settings: Settings) -> Self {
        Self {
            profile_cache: ProfileCache::new(settings.drift.profile_dir.clone()),
            settings,
            owned: BTreeMap::new(),
            profiles: SharedProfiles::default(),
            captures: Captures::default(),
            captured: None,
            outbox: Vec::new(),
            alerts: AlertBook::default(),
        }
    }

    /// Uses the profiles of a shared registry (the profiles topic's) and
    /// sends finished captures to `captured` for publishing.
    pub fn share_profiles(&mut self, registry: SharedProfiles, captured: tokio::sync::mpsc::UnboundedSender<Profile>) {
        self.profiles = registry;
        self.captured = Some(captured);
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, ProfileRegistry> {
        registry::read(&self.profiles)
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.owned.contains_key(&partition)
    }

    /// The owned partitions.
    pub fn iter(&self) -> impl Iterator<Item = (i32, &Partition)> {
        self.owned.iter().map(|(p, s)| (*p, s))
    }

    /// Takes ownership of partition `p` from its checkpoint (`None`: from
    /// scratch): the latency state as it was, the accuracy store opened and
    /// its tracker restored, the drift monitors on their profiles.
    pub fn restore(
        &mut self,
        p: i32,
        record: PartitionRecord,
        accuracy: Option<AccuracyCheckpoint>,
        drift: Vec<DriftCheckpoint>,
    ) -> Result<(), Error> {
        let s = &self.settings;
        let accuracy = if s.accuracy.enabled {
            AccuracyPart::open(&s.accuracy, &s.join_dir, p, s.topics.clone(), accuracy)?
        } else {
            None
        };
        let drift = DriftPart::restore(drift, &s.drift, &self.registry(), &self.profile_cache);
        let mut latency = record.latency;
        latency.reconcile(&s.latency);
        self.alerts.restore(p, record.alerts);
        self.owned.insert(
            p,
            Partition {
                next_offset: record.next_offset,
                label_next_offset: record.label_next_offset,
                events: record.events,
                clock: EventClock::at(record.clock_ms),
                latency,
                accuracy,
                drift,
                history: record.history,
            },
        );
        Ok(())
    }

    /// Takes ownership of partition `p` with no checkpoint (tools, tests).
    pub fn own(&mut self, p: i32) -> Result<(), Error> {
        self.restore(p, PartitionRecord::default(), None, Vec::new())
    }

    /// Gives partition `p` up (revoked); its join store stays on disk, its
    /// alerts not yet published go (the next owner replays them).
    pub fn remove(&mut self, p: i32) -> Option<Partition> {
        self.outbox.retain(|(q, _)| *q != p);
        self.alerts.remove(p);
        self.owned.remove(&p)
    }

    /// Whether the message at `offset` of partition `p` is already applied.
    pub fn is_applied(&self, p: i32, label: bool, offset: i64) -> bool {
        self.owned
            .get(&p)
            .is_some_and(|s| offset < if label { s.label_next_offset } else { s.next_offset })
    }

    /// Records that the message at `offset` was handled without touching
    /// any statistics (a poison message sent to the dead-letter topic).
    pub fn mark_applied(&mut self, p: i32, label: bool, offset: i64) {
        if let Some(s) = self.owned.get_mut(&p) {
            let next = if label {
                &mut s.label_next_offset
            } else {
                &mut s.next_offset
            };
            *next = (*next).max(offset + 1);
        }
    }

    /// Applies `(partition, offset, message)` in order until the first
    /// poison message (messages of partitions not owned are skipped).
    /// Alerts go to the outbox.
    pub fn apply<'d, 'm: 'd>(
        &mut self,
        messages: impl IntoIterator<Item = (i32, i64, &'d Decoded<'m>)>,
    ) -> Applied<'d> {
        let mut out = Applied::default();
        let mut touched: Vec<i32> = Vec::new();
        let mut labels: Vec<(i32, i64)> = Vec::new();
        for (i, (p, offset, d)) in messages.into_iter().enumerate() {
            if !touched.contains(&p) {
                touched.push(p);
            }
            let result = match d {
                Decoded::Inference(Ok(event)) => self.observe_inference(p, offset, event, &mut out),
                Decoded::Label(Ok(event)) => self.observe_label(p, offset, event, &mut out, &mut labels),
                Decoded::Inference(Err(_)) if self.is_applied(p, false, offset) => {
                    out.duplicates += 1;
                    Ok(())
                }
                Decoded::Label(Err(_)) if self.is_applied(p, true, offset) => {
                    out.duplicates += 1;
                    Ok(())
                }
                Decoded::Inference(Err(reason)) | Decoded::Label(Err(reason)) => {
                    out.poison = Some((i, reason.as_str()));
                    break;
                }
            };
            if let Err(error) = result {
                out.error = Some(error);
                return out;
            }
        }
        let touched_for_history = touched.clone();
        // What the accuracy parts queued goes to their stores in one write.
        for p in touched {
            if let Some(a) = self.owned.get_mut(&p).and_then(|s| s.accuracy.as_mut())
                && let Err(error) = a.flush()
            {
                out.error = Some(error);
                return out;
            }
        }
        for (p, offset) in labels {
            self.mark_applied(p, true, offset);
            out.labels += 1;
        }
        for p in touched_for_history {
            self.sample_history(p);
        }
        out
    }

    fn observe_inference(
        &mut self,
        p: i32,
        offset: i64,
        event: &InferenceRef<'_>,
        out: &mut Applied<'_>,
    ) -> Result<(), Error> {
        let Some(part) = self.owned.get(&p) else {
            return Ok(()); // not owned (shutting down)
        };
        let fresh = offset >= part.next_offset;
        if fresh && self.settings.drift.enabled {
            self.capture(event);
        }
        let Self {
            settings: s,
            owned,
            outbox,
            profiles,
            ..
        } = self;
        let part = owned.get_mut(&p).expect("owned above");
        if fresh {
            part.next_offset = offset + 1;
            let now = part.clock.observe(event.timestamp_ms);
            let alerts = part.latency.observe(&s.latency, now, event);
            outbox.extend(alerts.into_iter().map(|a| (p, a)));
            // Drift sees exactly the events latency applies (both are
            // checkpointed with the inference offset).
            if s.drift.enabled {
                match part.drift.observe(&s.drift, &registry::read(profiles), now, event) {
                    Ok(alerts) => outbox.extend(alerts.into_iter().map(|a| (p, a))),
                    Err(error) => tracing::warn!(%error, partition = p, "drift monitor skipped an event"),
                }
            }
            part.events += 1;
            out.inferences += 1;
        } else {
            out.duplicates += 1;
        }
        if !s.accuracy.enabled {
            return Ok(());
        }
        // The join skips what its store already has (it may be behind the
        // offsets after a failed write).
        let joinable = event.status == InferenceStatus::Ok as i32 && event.prediction.is_some();
        if joinable {
            let input = JoinInput::Prediction(pending_of(event));
            open_accuracy(s, p, &mut part.accuracy)?.feed(Source::Inferences, offset, event.timestamp_ms, input);
        }
        if let Some(a) = part.accuracy.as_mut() {
            let alerts = a.evaluate_due(part.clock.now_ms(), s.eval_interval_ms)?;
            outbox.extend(alerts.into_iter().map(|a| (p, a)));
        }
        Ok(())
    }

    /// Queues a label for the join; it counts as applied once the write
    /// that holds it succeeded (end of [`Partitions::apply`]).
    fn observe_label(
        &mut self,
        p: i32,
        offset: i64,
        event: &LabelRef<'_>,
        out: &mut Applied<'_>,
        labels: &mut Vec<(i32, i64)>,
    ) -> Result<(), Error> {
        let s = &self.settings;
        let Some(part) = self.owned.get_mut(&p) else {
            return Ok(());
        };
        if offset < part.label_next_offset {
            out.duplicates += 1;
            return Ok(());
        }
        if s.accuracy.enabled {
            let input = JoinInput::Label(truth_of(event));
            open_accuracy(s, p, &mut part.accuracy)?.feed(Source::Labels, offset, event.timestamp_ms, input);
        }
        labels.push((p, offset));
        Ok(())
    }

    /// Feeds a profile capture; a finished one is published (or, without a
    /// topic, made active here).
    fn capture(&mut self, event: &InferenceRef<'_>) {
        let finished = {
            let registry = registry::read(&self.profiles);
            self.captures
                .observe(&registry, self.settings.drift.capture_events, event)
        };
        match finished {
            Ok(None) => {}
            Ok(Some(profile)) => match &self.captured {
                Some(tx) => {
                    if tx.send(profile).is_err() {
                        tracing::warn!(model = %event.model, "profile publisher stopped; captured profile dropped");
                    }
                }
                None => match self.put_profile(profile) {
                    Ok(version) => tracing::info!(model = %event.model, version, "reference profile captured"),
                    Err(error) => tracing::warn!(%error, model = %event.model, "captured profile not stored"),
                },
            },
            Err(error) => tracing::warn!(%error, model = %event.model, "profile capture failed"),
        }
    }

    /// Moves partition `p`'s clock to `t_ms` (idle partitions), evaluating
    /// every part on what became due.
    pub fn advance(&mut self, p: i32, t_ms: i64) -> Result<(), Error> {
        let s = &self.settings;
        let Some(part) = self.owned.get_mut(&p) else {
            return Ok(());
        };
        if !part.clock.advance(t_ms) {
            return Ok(());
        }
        let now = part.clock.now_ms();
        let mut alerts = part.latency.advance(&s.latency, now);
        if s.drift.enabled {
            alerts.extend(part.drift.advance(&s.drift, now));
        }
        self.outbox.extend(alerts.into_iter().map(|a| (p, a)));
        if let Some(a) = part.accuracy.as_mut() {
            let alerts = a.evaluate_due(now, s.eval_interval_ms)?;
            self.outbox.extend(alerts.into_iter().map(|a| (p, a)));
        }
        self.sample_history(p);
        Ok(())
    }

    /// Adds a row to partition `p`'s series histories when its clock
    /// passed the next history step.
    fn sample_history(&mut self, p: i32) {
        let s = &self.settings;
        let Some(part) = self.owned.get(&p) else {
            return;
        };
        let now = part.clock.now_ms();
        let Some(t) = part.history.due(&s.history, now) else {
            return;
        };
        let samples = self.samples(part, now);
        if let Some(part) = self.owned.get_mut(&p) {
            part.history.record(&self.settings.history, t, &samples);
        }
    }

    /// One sample per series of a partition: latency over the shortest
    /// window, accuracy over the decay window with its baseline and alert
    /// line, label coverage, drift scores per feature and the prediction
    /// distribution's mean (docs/ui.md lists the columns).
    fn samples(&self, part: &Partition, now: i64) -> Vec<Sample> {
        let s = &self.settings;
        let mut out: Vec<Sample> = Vec::new();
        fn slot<'a>(out: &'a mut Vec<Sample>, model: &str, version: &str, segment: &str) -> &'a mut Sample {
            match out
                .iter()
                .position(|x| x.model == model && x.model_version == version && x.segment == segment)
            {
                Some(i) => &mut out[i],
                None => {
                    out.push(Sample::new(model, version, segment));
                    out.last_mut().expect("pushed")
                }
            }
        }
        if let Some(&w) = s.latency.windows_secs().iter().min() {
            for r in part.latency.reports(&s.latency, None, w, now).unwrap_or_default() {
                let x = slot(&mut out, &r.model, &r.model_version, &r.segment);
                let m = &r.summary;
                x.put("throughput_rps", Some(m.throughput_rps));
                if m.count > 0 {
                    x.put("p50_ms", Some(m.p50_ms));
                    x.put("p90_ms", Some(m.p90_ms));
                    x.put("p99_ms", Some(m.p99_ms));
                    x.put("error_rate", Some(m.error_rate));
                    x.put("slow_request_rate", Some(m.slow_request_rate));
                }
            }
        }
        let mut models: Vec<String> = out.iter().map(|x| x.model.clone()).collect();
        models.dedup();
        if let Some(a) = part.accuracy.as_ref() {
            for model in &models {
                for r in a.tracker().reports(model, a.join_ms()) {
                    let c = &r.series;
                    let x = slot(&mut out, &c.model, &c.model_version, &c.segment);
                    x.put("label_coverage", c.label_coverage);
                    for m in &r.metrics {
                        let Some(name) = serde_json::to_value(m.metric)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                        else {
                            continue;
                        };
                        x.put(format!("{name}_baseline"), m.baseline);
                        x.put(format!("{name}_alert_below"), m.baseline.map(|b| b - m.threshold));
                        x.put(format!("{name}_estimated"), m.estimated);
                        x.put(name, m.current);
                    }
                }
            }
        }
        if s.drift.enabled {
            let registry = self.registry();
            for model in &models {
                for v in part.drift.report(&registry, model, None) {
                    let Some(report) = v.report else { continue };
                    let x = slot(&mut out, model, v.model_version, "");
                    for (prefix, streams) in [("drift", &report.features), ("prediction", &report.predictions)] {
                        for f in streams {
                            let n = &f.name;
                            x.put(format!("{prefix}.{n}.psi"), Some(f.scores.psi));
                            x.put(format!("{prefix}.{n}.js"), Some(f.scores.js_distance));
                            x.put(format!("{prefix}.{n}.ks"), f.scores.ks);
                            x.put(format!("{prefix}.{n}.wasserstein"), f.scores.wasserstein_normalised);
                            x.put(format!("{prefix}.{n}.z"), Some(f.decision.z));
                            if prefix == "prediction" {
                                x.put(format!("{prefix}.{n}.mean"), binned_mean(&f.distribution));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Advances each of `partitions` by `step_ms` of wall time.
    pub fn advance_idle(&mut self, partitions: &[i32], step_ms: i64) {
        for &p in partitions {
            let Some(now) = self.owned.get(&p).map(|s| s.clock.now_ms()) else {
                continue;
            };
            if let Err(error) = self.advance(p, now + step_ms) {
                tracing::warn!(%error, partition = p, "accuracy evaluation failed");
            }
        }
    }

    /// Partition `p`'s checkpoint (the accuracy store made durable first),
    /// unless it has alerts not yet acknowledged, nothing to save, or its
    /// store cannot be made durable now.
    pub fn checkpoint(
        &mut self,
        p: i32,
    ) -> Option<(PartitionRecord, Option<AccuracyCheckpoint>, Vec<DriftCheckpoint>)> {
        if self.outbox.iter().any(|(q, _)| *q == p) {
            return None;
        }
        let part = self.owned.get_mut(&p)?;
        if part.next_offset == 0 && part.label_next_offset == 0 {
            return None;
        }
        let accuracy = match part.accuracy.as_mut().map(AccuracyPart::checkpoint).transpose() {
            Ok(a) => a,
            Err(error) => {
                tracing::error!(%error, partition = p, "join store not durable; checkpoint postponed");
                return None;
            }
        };
        let record = PartitionRecord {
            next_offset: part.next_offset,
            clock_ms: part.clock.now_ms(),
            events: part.events,
            label_next_offset: part.label_next_offset,
            latency: part.latency.clone(),
            alerts: self.alerts.checkpoint(p),
            history: part.history.clone(),
        };
        Some((record, accuracy, part.drift.checkpoint()))
    }

    /// After partition `p`'s checkpoint holding journal sequence `seq` was
    /// acknowledged.
    pub fn checkpointed(&mut self, p: i32, seq: u64) {
        if let Some(a) = self.owned.get_mut(&p).and_then(|s| s.accuracy.as_mut()) {
            a.checkpointed(seq);
        }
    }

    /// Alerts not yet published, oldest first.
    pub fn outbox(&self) -> &[(i32, Alert)] {
        &self.outbox
    }

    /// Drops the oldest alert once published (if it is still `id`).
    pub fn published(&mut self, id: &str) {
        if self.outbox.first().is_some_and(|(_, a)| a.id == id) {
            let (p, alert) = self.outbox.remove(0);
            self.alerts.published(p, &alert);
        }
    }

    /// Takes the alerts not yet published (tools that apply messages
    /// without publishing, like the bench).
    pub fn take_outbox(&mut self) -> Vec<(i32, Alert)> {
        std::mem::take(&mut self.outbox)
    }

    // --- reads (the API and the gauges) ---

    /// The latency windows tracked, in seconds.
    pub fn windows_secs(&self) -> &[u64] {
        self.settings.latency.windows_secs()
    }

    /// Latency statistics of every series of `model` (all when `None`) over
    /// `window_secs`, each as of its partition's clock; `None` when the
    /// window is not tracked.
    pub fn latency_reports(&self, model: Option<&str>, window_secs: u64) -> Option<Vec<WindowReport>> {
        if !self.windows_secs().contains(&window_secs) {
            return None;
        }
        let mut out = Vec::new();
        for part in self.owned.values() {
            out.extend(
                part.latency
                    .reports(&self.settings.latency, model, window_secs, part.clock.now_ms())?,
            );
        }
        Some(out)
    }

    /// Every tracked series, sorted by model, version, segment.
    pub fn series(&self) -> Vec<SeriesInfo> {
        let mut out: Vec<SeriesInfo> = self.owned.iter().flat_map(|(p, s)| s.latency.series(*p)).collect();
        // Every signal's firing alerts, not only latency's.
        let active = self.alerts.active(None);
        for s in &mut out {
            for a in active
                .iter()
                .filter(|a| a.concerns(&s.model, &s.model_version, &s.segment))
            {
                if !s.alerts_firing.contains(&a.alert_type) {
                    s.alerts_firing.push(a.alert_type.clone());
                }
            }
            s.alerts_firing.sort();
        }
        out.sort_by(|a, b| (&a.model, &a.model_version, &a.segment).cmp(&(&b.model, &b.model_version, &b.segment)));
        out
    }

    /// Approximate heap bytes and series count of the latency state.
    pub fn latency_size(&self) -> (usize, usize) {
        self.owned.values().fold((0, 0), |(b, n), s| {
            (b + s.latency.heap_bytes(), n + s.latency.series_count())
        })
    }

    /// The history of `model`'s series (only `model_version` when given)
    /// across owned partitions, with the partition's clock.
    pub fn history<'a>(&'a self, model: &'a str, model_version: Option<&'a str>) -> Vec<(&'a SeriesHistory, i64)> {
        self.owned
            .values()
            .flat_map(|s| s.history.of(model, model_version).map(|h| (h, s.clock.now_ms())))
            .collect()
    }

    /// The history configuration.
    pub fn history_config(&self) -> &HistoryConfig {
        &self.settings.history
    }

    /// Approximate heap bytes and series count of the histories.
    pub fn history_size(&self) -> (usize, usize) {
        self.owned.values().fold((0, 0), |(b, n), s| {
            let (b2, n2) = s.history.size();
            (b + b2, n + n2)
        })
    }

    /// The alerts published by this instance (active and recent).
    pub fn alerts(&self) -> &AlertBook {
        &self.alerts
    }

    pub fn accuracy_config(&self) -> &AccuracyConfig {
        &self.settings.accuracy
    }

    /// Every owned partition's accuracy tracker with its join counts and
    /// the join's time.
    pub fn accuracy_parts(&self) -> impl Iterator<Item = (&AccuracyTracker, JoinCounts, i64)> {
        self.owned
            .values()
            .filter_map(|s| s.accuracy.as_ref())
            .map(|a| (a.tracker(), a.counts(), a.join_ms()))
    }

    pub fn drift_enabled(&self) -> bool {
        self.settings.drift.enabled
    }

    /// The drift state of `model`'s versions (only `model_version` when
    /// given), with the profile each is judged against, across partitions.
    pub fn drift_report(&self, model: &str, model_version: Option<&str>) -> Vec<VersionDrift<'_>> {
        let registry = self.registry();
        self.owned
            .values()
            .flat_map(|s| s.drift.report(&registry, model, model_version))
            .collect()
    }

    /// Every drift monitor's gauge values: `(model, version, values)`.
    pub fn drift_values(&self) -> impl Iterator<Item = (&str, &str, MetricValues)> + '_ {
        self.owned.values().flat_map(|s| s.drift.metric_values())
    }

    /// Makes `profile` active without a topic (unit tests, tools): it gets
    /// a free version, which is returned. The service publishes through
    /// [`crate::profiles::ProfileTopic::publish`] instead.
    pub fn put_profile(&mut self, mut profile: Profile) -> Result<u32, Error> {
        let mut registry = registry::write(&self.profiles);
        registry.assign_version(&mut profile);
        self.profile_cache.put(&profile)?;
        let key = registry::record_key(&profile.model, profile.model_version.as_deref());
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
        let registry = registry::read(&self.profiles);
        self.captures.request(&registry, model, events, from_version)
    }
}

/// The mean of a binned distribution's current shares, from bin
/// midpoints (the open outer bins count at their edge); `None` for
/// categories or an empty window.
fn binned_mean(d: &mlwatch_analyzer_drift::monitor::Distribution) -> Option<f64> {
    let edges = d.edges.as_ref()?;
    let total: f64 = d.current.iter().sum();
    if edges.is_empty() || total <= 0.0 {
        return None;
    }
    let at = |i: usize| -> f64 {
        match i {
            0 => edges[0],
            i if i >= edges.len() => edges[edges.len() - 1],
            i => (edges[i - 1] + edges[i]) / 2.0,
        }
    };
    Some(d.current.iter().enumerate().map(|(i, w)| w * at(i)).sum::<f64>() / total)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use mlwatch_analyzer_drift::{BuildOptions, ProfileBuilder, Value};
    use mlwatch_proto::v1::{FeatureValue, InferenceEvent, LabelEvent, Prediction, feature_value};

    use super::*;

    const T0: i64 = 1_795_000_000_000;

    fn config(dir: &std::path::Path) -> crate::Config {
        let mut c = crate::Config::default();
        c.accuracy.join.dir = dir.join("join");
        c.drift.profile_dir = dir.join("profiles");
        c.drift.window_secs = 10;
        c.analyzer.group_id = "grp/1".into();
        c.kafka.topics.inference = "inf".into();
        c.kafka.topics.labels = "lab".into();
        c
    }

    /// Partition 0 of an instance with `config`.
    fn owning(config: &crate::Config) -> Partitions {
        let mut t = Partitions::new(Settings::from_config(config));
        t.own(0).unwrap();
        t
    }

    fn trackers(dir: &std::path::Path) -> Partitions {
        owning(&config(dir))
    }

    /// Applies one inference at `offset` of partition 0; its alerts.
    fn on_inference(t: &mut Partitions, offset: i64, e: &InferenceEvent) -> Vec<Alert> {
        let d = Decoded::Inference(Ok(InferenceRef::of(e)));
        let applied = t.apply([(0, offset, &d)]);
        assert!(applied.error.is_none(), "{:?}", applied.error);
        t.take_outbox().into_iter().map(|(_, a)| a).collect()
    }

    /// Applies one label at `offset` of partition 0.
    fn on_label(t: &mut Partitions, offset: i64, l: &LabelEvent) -> Vec<Alert> {
        let d = Decoded::Label(Ok(LabelRef::of(l)));
        let applied = t.apply([(0, offset, &d)]);
        assert!(applied.error.is_none(), "{:?}", applied.error);
        t.take_outbox().into_iter().map(|(_, a)| a).collect()
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

    fn labelled(t: &Partitions) -> (u64, u64) {
        let (tracker, _, clock) = t.accuracy_parts().next().unwrap();
        let w = &tracker.window_metrics(Some("fraud"), 3600, clock)[0];
        (w.series.predictions, w.series.labelled)
    }

    #[test]
    fn restore_from_checkpoint_replays_the_journal_and_skips_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trackers(dir.path());
        for i in 0..100 {
            on_inference(&mut t, i, &prediction(i));
        }
        for i in 0..60 {
            on_label(&mut t, i, &label(i));
        }
        let (record, accuracy, drift) = t.checkpoint(0).unwrap();
        // Applied to the store after the checkpoint, then a crash.
        for i in 60..80 {
            on_label(&mut t, i, &label(i));
        }
        assert_eq!(labelled(&t), (100, 80));
        drop(t);

        let mut t = Partitions::new(Settings::from_config(&config(dir.path())));
        t.restore(0, record, accuracy, drift).unwrap();
        assert_eq!(labelled(&t), (100, 80));
        // Redelivered messages change nothing.
        for i in 70..80 {
            on_label(&mut t, i, &label(i));
        }
        on_inference(&mut t, 5, &prediction(5));
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
        let decoded: Vec<(i64, Decoded<'_>)> = messages
            .iter()
            .zip(&views)
            .map(|(m, (i, l))| {
                let d = if m.0 {
                    Decoded::Label(Ok(l.clone()))
                } else {
                    Decoded::Inference(Ok(i.clone()))
                };
                (m.1, d)
            })
            .collect();

        // Short waits and retention, so that deadlines decide outcomes.
        let short = |dir: &std::path::Path| {
            let mut c = config(dir);
            c.accuracy.join.label_wait_secs = 1;
            c.accuracy.join.settled_retention_secs = 2;
            owning(&c)
        };
        let one_dir = tempfile::tempdir().unwrap();
        let mut one = short(one_dir.path());
        let mut one_alerts = Vec::new();
        for (offset, d) in &decoded {
            assert!(one.apply([(0, *offset, d)]).error.is_none());
            one_alerts.extend(one.take_outbox());
        }
        let batch_dir = tempfile::tempdir().unwrap();
        let mut batched = short(batch_dir.path());
        let mut batch_alerts = Vec::new();
        for chunk in decoded.chunks(333) {
            assert!(batched.apply(chunk.iter().map(|(o, d)| (0, *o, d))).error.is_none());
            batch_alerts.extend(batched.take_outbox());
        }

        let (a, b) = (
            one.checkpoint(0).unwrap().1.unwrap(),
            batched.checkpoint(0).unwrap().1.unwrap(),
        );
        assert_eq!((a.clock_ms, a.next_eval_ms), (b.clock_ms, b.next_eval_ms));
        assert_eq!(
            serde_json::to_value(&a.tracker).unwrap(),
            serde_json::to_value(&b.tracker).unwrap()
        );
        let counts = |t: &Partitions| t.accuracy_parts().next().unwrap().1;
        assert_eq!(counts(&one), counts(&batched));
        let c = counts(&one);
        assert!(
            c.joined > 1000 && c.expired_labels > 0 && c.duplicate_labels > 0,
            "{c:?}"
        );
        let ids = |v: &[(i32, Alert)]| v.iter().map(|(_, a)| a.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&one_alerts), ids(&batch_alerts));
        assert_eq!(labelled(&one), labelled(&batched));
    }

    #[test]
    fn drift_monitors_checkpoint_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.accuracy.enabled = false;
        let mut t = owning(&c);
        let mut b = ProfileBuilder::new(BuildOptions::new("fraud", 1)).unwrap();
        for i in 0..500 {
            b.start_row();
            b.add_feature("amount", Value::Number((i % 50) as f64));
        }
        assert_eq!(t.put_profile(b.finish().unwrap()).unwrap(), 1);
        for i in 0..150 {
            on_inference(&mut t, i, &prediction(i));
        }
        let (record, _, cp) = t.checkpoint(0).unwrap();
        assert_eq!(cp.len(), 1);
        let mut restored = Partitions::new(Settings::from_config(&c));
        // The profile comes from the local cache (no topic here).
        restored.restore(0, record, None, cp.clone()).unwrap();
        assert_eq!(restored.checkpoint(0).unwrap().2[0].state, cp[0].state);
        let report = restored.drift_report("fraud", None);
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].model_version, report[0].profile_version), ("v1", 1));
    }

    #[test]
    fn the_history_samples_every_signal_and_survives_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.history.step_secs = 5;
        c.drift.rules.defaults.min_window_events = 50;
        let mut t = owning(&c);
        let mut b = ProfileBuilder::new(BuildOptions::new("fraud", 1)).unwrap();
        for i in 0..500 {
            b.start_row();
            b.add_feature("amount", Value::Number((i % 50) as f64));
        }
        t.put_profile(b.finish().unwrap()).unwrap();
        // 60 s of events, 10 per second.
        for i in 0..600 {
            on_inference(&mut t, i, &prediction(i));
        }
        let rows = |t: &Partitions| {
            let h = t.history("fraud", Some("v1"));
            assert_eq!(h.len(), 1);
            let r = h[0].0.range(t.history_config(), h[0].1, 3_600_000);
            (r.t.len(), r.columns)
        };
        let (n, columns) = rows(&t);
        assert!((11..=13).contains(&n), "one row per 5 s of event time, got {n}");
        for name in [
            "p50_ms",
            "p99_ms",
            "throughput_rps",
            "error_rate",
            "drift.amount.psi",
            "drift.amount.ks",
        ] {
            assert!(
                columns.get(name).is_some_and(|v| v.iter().any(Option::is_some)),
                "{name}: {columns:?}"
            );
        }
        // Through a checkpoint (as JSON, as stored) into a new instance.
        let (record, accuracy, drift) = t.checkpoint(0).unwrap();
        let json = serde_json::to_string(&record).unwrap();
        let record: PartitionRecord = serde_json::from_str(&json).unwrap();
        drop(t); // releases the join store
        let mut restored = Partitions::new(Settings::from_config(&c));
        restored.restore(0, record, accuracy, drift).unwrap();
        assert_eq!(rows(&restored), (n, columns));
        // A checkpoint written before the history existed restores with none.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("history");
        let old: PartitionRecord = serde_json::from_value(old).unwrap();
        drop(restored);
        let mut fresh = Partitions::new(Settings::from_config(&c));
        fresh.restore(0, old, None, Vec::new()).unwrap();
        assert!(fresh.history("fraud", None).is_empty());
    }

    #[test]
    fn each_model_version_has_its_own_monitor_and_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.accuracy.enabled = false;
        let mut t = owning(&c);
        let mut offset = 0;
        let mut observe = |t: &mut Partitions, e: &InferenceEvent| {
            offset += 1;
            on_inference(t, offset, e)
        };
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
                alerts.extend(observe(&mut t, &e));
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
        assert_eq!(t.checkpoint(0).unwrap().2.len(), 2);

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
        observe(&mut t, &e);
        let v2 = t.drift_report("fraud", Some("v2"));
        assert_eq!((v2[0].profile_version, v2[0].version_specific), (2, true));
        assert_eq!(t.drift_report("fraud", Some("v1"))[0].profile_version, 1);

        // A tombstone of the model's profile ends the monitors that used it.
        t.profiles.write().unwrap().apply("fraud", None, None).unwrap();
        let mut e = prediction(3001);
        e.model_version = "v1".into();
        observe(&mut t, &e);
        assert!(t.drift_report("fraud", Some("v1")).is_empty());
        assert_eq!(t.drift_report("fraud", Some("v2")).len(), 1);

        // Versions per model are bounded: the least recent is dropped.
        let mut c = config(dir.path());
        c.accuracy.enabled = false;
        c.drift.max_versions_per_model = 2;
        let mut small = owning(&c);
        small.put_profile(profile).unwrap();
        for (i, version) in ["a", "b", "c"].iter().enumerate() {
            let mut e = prediction(i as i64 * 200);
            e.model_version = (*version).into();
            on_inference(&mut small, i as i64, &e);
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
            on_inference(&mut t, 2 * i, &prediction(i));
            // Events of other versions do not count.
            let mut other = prediction(i);
            other.model_version = "v9".into();
            on_inference(&mut t, 2 * i + 1, &other);
        }
        assert!(t.active_profile("fraud").is_none());
        on_inference(&mut t, 398, &prediction(199));
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
        let mut c = config(dir.path());
        c.drift.capture_events = 100;
        let mut t = owning(&c);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        t.share_profiles(SharedProfiles::default(), tx);
        for i in 0..250 {
            on_inference(&mut t, i, &prediction(i));
        }
        let sent = rx.try_recv().unwrap();
        assert_eq!((sent.version, sent.rows), (1, 100));
        assert!(
            rx.try_recv().is_err(),
            "a second capture started while the first was publishing"
        );
    }
}
