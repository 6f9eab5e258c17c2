//! One partition's accuracy ([`AccuracyPart`]): its label-join store and its
//! tracker, fed in the partition's message order and evaluated on the
//! partition's event clock.
//!
//! Two times meet here. The *join's time* is the newest prediction or label
//! time the join has seen (or the partition's clock when that is ahead): a
//! pending prediction or an early label expires against it, so a label
//! later than the lag is late whatever else arrived. The *evaluation
//! times* are the partition clock's boundaries: metrics are bucketed by
//! prediction time, so the verdict at a boundary reads the predictions up to
//! it, and labels read ahead of their predictions (a catch-up, a backfill)
//! do not move evaluation forward.
//!
//! Inputs are written to the store in one transaction per evaluation (the
//! ones queued since the last), each with the join time it would have had
//! alone, so a poll's worth costs one write. Redelivered messages are
//! skipped by the store's own applied offsets. On `Err` nothing after the
//! last completed transaction counts; feeding the same messages again
//! completes it, and an evaluation that failed is made up the next time the
//! part is asked (its [`Schedule`] only moves once it succeeded).

use std::collections::HashMap;
use std::path::Path;

use mlwatch_analyzer_core::{Error, Schedule};
use mlwatch_proto::v1::Alert;
use serde::{Deserialize, Serialize};

use crate::join::{JoinCounts, JoinInput, JoinStore};
use crate::tracker::{AccuracyConfig, AccuracyState, AccuracyTracker};

/// Which topic a message came from (each has its own offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Inferences,
    Labels,
}

/// The names of the two topics, as the store records their offsets.
#[derive(Debug, Clone)]
pub struct Topics {
    pub inferences: String,
    pub labels: String,
}

impl Topics {
    fn name(&self, source: Source) -> &str {
        match source {
            Source::Inferences => &self.inferences,
            Source::Labels => &self.labels,
        }
    }
}

/// What a checkpoint holds of a partition's accuracy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccuracyCheckpoint {
    /// The join's time: newest prediction or label time seen.
    pub clock_ms: i64,
    /// The next evaluation boundary.
    pub next_eval_ms: Schedule,
    pub tracker: AccuracyState,
}

/// The accuracy of one owned partition.
pub struct AccuracyPart {
    store: JoinStore,
    tracker: AccuracyTracker,
    /// Last offset applied to the store, per source (cached from the store).
    applied: HashMap<&'static str, i64>,
    topics: Topics,
    join_ms: i64,
    schedule: Schedule,
    /// Inputs queued for the next write, each with its join time.
    queued: Vec<(JoinInput, i64)>,
    /// Last offset of each source among `queued`.
    queued_to: [Option<i64>; 2],
}

fn slot(source: Source) -> usize {
    match source {
        Source::Inferences => 0,
        Source::Labels => 1,
    }
}

fn key(source: Source) -> &'static str {
    match source {
        Source::Inferences => "inferences",
        Source::Labels => "labels",
    }
}

impl AccuracyPart {
    /// Opens partition `partition`'s store under `dir` and restores the
    /// tracker from `checkpoint`, replaying the store's journal after it.
    /// `None` when there is nothing to restore: no checkpoint and no store
    /// (the store is created by the first prediction or label, so
    /// partitions without any make no file).
    pub fn open(
        config: &AccuracyConfig,
        dir: &Path,
        partition: i32,
        topics: Topics,
        checkpoint: Option<AccuracyCheckpoint>,
    ) -> Result<Option<Self>, Error> {
        let mut join = config.join.clone();
        join.dir = dir.to_path_buf();
        if checkpoint.is_none() && !JoinStore::path_for(&join, partition).exists() {
            return Ok(None);
        }
        Self::create(config, dir, partition, topics, checkpoint.unwrap_or_default()).map(Some)
    }

    /// Opens (or creates) the store and restores the tracker.
    pub fn create(
        config: &AccuracyConfig,
        dir: &Path,
        partition: i32,
        topics: Topics,
        checkpoint: AccuracyCheckpoint,
    ) -> Result<Self, Error> {
        let mut join = config.join.clone();
        join.dir = dir.to_path_buf();
        let mut store = JoinStore::open(&join, partition)?;
        // One fsync per checkpoint, not per message: `checkpoint` syncs the
        // store before the tracker state is taken.
        store.defer_durability(true);
        let mut tracker = AccuracyTracker::from_state(config.clone(), checkpoint.tracker);
        let counts = store.counts();
        if tracker.journal_seq() > counts.journal_seq as u64 {
            // A store that is behind its checkpoint (partition moved to an
            // instance without the file): take its numbering; predictions
            // it never saw cannot be joined (docs/analyzer.md, limits).
            tracing::warn!(
                partition,
                checkpoint_seq = tracker.journal_seq(),
                store_seq = counts.journal_seq,
                "join store behind the checkpoint; continuing with the store's journal"
            );
            tracker.rebase_journal(counts.journal_seq as u64);
        } else {
            tracker.apply(&store.journal_since(tracker.journal_seq())?);
        }
        let mut applied = HashMap::new();
        for source in [Source::Inferences, Source::Labels] {
            if let Some(o) = store.applied_offset(topics.name(source))? {
                applied.insert(key(source), o);
            }
        }
        Ok(Self {
            store,
            tracker,
            applied,
            topics,
            join_ms: checkpoint.clock_ms,
            schedule: checkpoint.next_eval_ms,
            queued: Vec::new(),
            queued_to: [None, None],
        })
    }

    /// Queues a prediction or label at `offset` of `source`, at event time
    /// `t_ms`; `false` when the store (or the queue) already has it.
    pub fn feed(&mut self, source: Source, offset: i64, t_ms: i64, input: JoinInput) -> bool {
        let queued = self.queued_to[slot(source)];
        if self.applied.get(key(source)).is_some_and(|o| offset <= *o) || queued.is_some_and(|o| offset <= o) {
            return false;
        }
        self.join_ms = self.join_ms.max(t_ms);
        self.queued.push((input, self.join_ms));
        self.queued_to[slot(source)] = Some(offset);
        true
    }

    /// Writes the queued inputs in one transaction with the last offsets
    /// they consumed, and feeds what they produced to the tracker.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(&str, i64)> = [Source::Inferences, Source::Labels]
            .into_iter()
            .filter_map(|s| self.queued_to[slot(s)].map(|o| (self.topics.name(s), o)))
            .collect();
        let entries = self
            .store
            .apply_each(self.queued.iter().map(|(i, now)| (i, *now)), &offsets)?;
        for source in [Source::Inferences, Source::Labels] {
            if let Some(o) = self.queued_to[slot(source)] {
                self.applied.insert(key(source), o);
            }
        }
        self.tracker.apply(&entries);
        self.queued.clear();
        self.queued_to = [None, None];
        Ok(())
    }

    /// The partition's clock is at `now_ms`: when an evaluation boundary is
    /// due, writes what is queued, expires what the join's time passed and
    /// evaluates at the newest boundary (once per call: the verdicts read
    /// windows of hours, a skipped intermediate boundary changes nothing but
    /// the hold timing by one interval).
    pub fn evaluate_due(&mut self, now_ms: i64, interval_ms: i64) -> Result<Vec<Alert>, Error> {
        self.join_ms = self.join_ms.max(now_ms);
        let mut next = self.schedule;
        let Some(at) = next.due_newest(now_ms, interval_ms) else {
            self.schedule = next;
            return Ok(Vec::new());
        };
        self.flush()?;
        let iv = interval_ms.max(1);
        self.store.expire(self.join_ms - self.join_ms.rem_euclid(iv))?;
        self.schedule = next;
        Ok(self.tracker.evaluate(at))
    }

    /// What goes into the partition's checkpoint (records the covered
    /// offsets first). The store is made durable first, so it is never
    /// behind a checkpoint; `Err` means no checkpoint may be written now.
    pub fn checkpoint(&mut self) -> Result<AccuracyCheckpoint, Error> {
        self.flush()?;
        self.store.sync()?;
        let covered: Vec<(String, i64)> = [Source::Inferences, Source::Labels]
            .into_iter()
            .filter_map(|s| self.applied.get(key(s)).map(|o| (self.topics.name(s).to_string(), *o)))
            .collect();
        self.tracker.set_covered_offsets(covered);
        Ok(AccuracyCheckpoint {
            clock_ms: self.join_ms,
            next_eval_ms: self.schedule,
            tracker: self.tracker.state().clone(),
        })
    }

    /// After a checkpoint holding journal sequence `seq` was acknowledged:
    /// the journal before it is no longer needed.
    pub fn checkpointed(&mut self, seq: u64) {
        if let Err(error) = self.store.trim_journal(seq) {
            tracing::warn!(%error, "cannot trim the join journal; it is trimmed at the next checkpoint");
        }
    }

    pub fn tracker(&self) -> &AccuracyTracker {
        &self.tracker
    }

    pub fn counts(&self) -> JoinCounts {
        self.store.counts()
    }

    /// The join's time (what the API's figures are as of).
    pub fn join_ms(&self) -> i64 {
        self.join_ms
    }
}
