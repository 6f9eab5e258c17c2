//! Durable state in an embedded redb database: alerts, groups, silences,
//! acknowledgements, the id counter, and the notification log.
//!
//! The log is a write-ahead intent log. A notification is written as
//! `pending` in the same transaction as the engine state that produced it,
//! before it is sent; once the channel answered it is marked `delivered`
//! or `failed`. After a crash, the state is exactly as of the last commit
//! and every `pending` entry is sent again, so nothing is lost, and at most
//! the notifications that were in flight at the crash are sent twice
//! (which the channels' dedup keys absorb where they have one). Every
//! commit is durable (fsync) before it returns.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::engine::{Notification, State};
use crate::error::AlerterError;

const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences");
const ACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("acks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
type Table = TableDefinition<'static, &'static str, &'static [u8]>;
type Rows = BTreeMap<String, Vec<u8>>;

const LOG: TableDefinition<&str, &[u8]> = TableDefinition::new("notification_log");

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Written, not yet answered by the channel.
    Pending,
    Delivered,
    /// Refused (4xx) or retries exhausted; `error` says why.
    Failed,
}

/// One entry of the notification log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub notification: Notification,
    pub outcome: Outcome,
    /// The channel's error text, never containing secrets.
    #[serde(default)]
    pub error: Option<String>,
    pub updated_at_ms: i64,
}

fn st(e: impl std::fmt::Display) -> AlerterError {
    AlerterError::Store(e.to_string())
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, AlerterError> {
    serde_json::to_vec(v).map_err(st)
}

/// The database, plus the state as last committed (so a commit writes only
/// what changed, and a failed change can be rolled back).
pub struct Store {
    db: Database,
    committed: State,
}

impl Store {
    /// Opens (or creates) the database file; `None` keeps it in memory.
    pub fn open(path: Option<&Path>) -> Result<Self, AlerterError> {
        let db = match path {
            Some(p) => {
                if let Some(dir) = p.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|e| st(format!("{}: {e}", dir.display())))?;
                }
                Database::create(p).map_err(|e| st(format!("{}: {e}", p.display())))?
            }
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(st)?,
        };
        let tx = db.begin_write().map_err(st)?;
        for t in [ALERTS, GROUPS, SILENCES, ACKS, META, LOG] {
            tx.open_table(t).map_err(st)?;
        }
        tx.commit().map_err(st)?;
        Ok(Self {
            db,
            committed: State::default(),
        })
    }

    fn read_table(&self, def: TableDefinition<&str, &[u8]>) -> Result<BTreeMap<String, Vec<u8>>, AlerterError> {
        let tx = self.db.begin_read().map_err(st)?;
        let t = tx.open_table(def).map_err(st)?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(st)? {
            let (k, v) = row.map_err(st)?;
            out.insert(k.value().to_string(), v.value().to_vec());
        }
        Ok(out)
    }

    /// Loads the engine state written by the last commit.
    pub fn load(&mut self) -> Result<State, AlerterError> {
        fn decode<T: for<'de> Deserialize<'de>>(rows: Rows) -> Result<BTreeMap<String, T>, AlerterError> {
            rows.into_iter()
                .map(|(k, v)| {
                    let value = serde_json::from_slice(&v).map_err(|e| st(format!("row {k}: {e}")))?;
                    Ok((k, value))
                })
                .collect()
        }
        let mut state = State {
            alerts: decode(self.read_table(ALERTS)?)?,
            groups: decode(self.read_table(GROUPS)?)?,
            silences: decode(self.read_table(SILENCES)?)?,
            acks: decode(self.read_table(ACKS)?)?,
            seq: 0,
        };
        if let Some(seq) = self.read_table(META)?.get("seq") {
            state.seq = serde_json::from_slice(seq).map_err(st)?;
        }
        self.committed = state.clone();
        Ok(state)
    }

    /// The state as of the last commit (to roll back to).
    pub fn committed(&self) -> &State {
        &self.committed
    }

    /// Writes what changed in the state since the last commit, and the new
    /// notifications (as pending), in one durable transaction.
    pub fn commit(&mut self, state: &State, new: &[Notification], now_ms: i64) -> Result<(), AlerterError> {
        let before = &self.committed;
        let tx = self.db.begin_write().map_err(st)?;
        write_changes(&tx, ALERTS, &before.alerts, &state.alerts)?;
        write_changes(&tx, GROUPS, &before.groups, &state.groups)?;
        write_changes(&tx, SILENCES, &before.silences, &state.silences)?;
        write_changes(&tx, ACKS, &before.acks, &state.acks)?;
        if state.seq != before.seq {
            let mut meta = tx.open_table(META).map_err(st)?;
            meta.insert("seq", json(&state.seq)?.as_slice()).map_err(st)?;
        }
        {
            let mut log = tx.open_table(LOG).map_err(st)?;
            for n in new {
                let entry = LogEntry {
                    notification: n.clone(),
                    outcome: Outcome::Pending,
                    error: None,
                    updated_at_ms: now_ms,
                };
                log.insert(n.id.as_str(), json(&entry)?.as_slice()).map_err(st)?;
            }
        }
        tx.commit().map_err(st)?;
        self.committed = state.clone();
        Ok(())
    }

    /// Records the channel's answer to a notification.
    pub fn mark(&self, id: &str, outcome: Outcome, error: Option<String>, now_ms: i64) -> Result<(), AlerterError> {
        let tx = self.db.begin_write().map_err(st)?;
        {
            let mut log = tx.open_table(LOG).map_err(st)?;
            let bytes = log
                .get(id)
                .map_err(st)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| AlerterError::NotFound {
                    what: "notification",
                    id: id.to_string(),
                })?;
            let mut entry: LogEntry = serde_json::from_slice(&bytes).map_err(st)?;
            entry.outcome = outcome;
            entry.error = error;
            entry.updated_at_ms = now_ms;
            log.insert(id, json(&entry)?.as_slice()).map_err(st)?;
        }
        tx.commit().map_err(st)
    }

    /// Log entries, oldest first, optionally only those with `outcome`.
    pub fn log(&self, outcome: Option<Outcome>) -> Result<Vec<LogEntry>, AlerterError> {
        let mut out = Vec::new();
        for (k, v) in self.read_table(LOG)? {
            let entry: LogEntry = serde_json::from_slice(&v).map_err(|e| st(format!("log {k}: {e}")))?;
            if outcome.is_none_or(|o| o == entry.outcome) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Keeps the newest `keep` answered entries (pending ones always stay).
    pub fn prune(&self, keep: usize) -> Result<usize, AlerterError> {
        let entries = self.log(None)?;
        let answered: Vec<&LogEntry> = entries.iter().filter(|e| e.outcome != Outcome::Pending).collect();
        if answered.len() <= keep {
            return Ok(0);
        }
        let drop = answered.len() - keep;
        let tx = self.db.begin_write().map_err(st)?;
        {
            let mut log = tx.open_table(LOG).map_err(st)?;
            for e in answered.iter().take(drop) {
                log.remove(e.notification.id.as_str()).map_err(st)?;
            }
        }
        tx.commit().map_err(st)?;
        Ok(drop)
    }
}

/// Writes the rows of `now` that differ from `before`, removes the gone ones.
fn write_changes<T: Serialize + PartialEq>(
    tx: &redb::WriteTransaction,
    def: Table,
    before: &BTreeMap<String, T>,
    now: &BTreeMap<String, T>,
) -> Result<(), AlerterError> {
    let mut t = tx.open_table(def).map_err(st)?;
    for k in before.keys() {
        if !now.contains_key(k) {
            t.remove(k.as_str()).map_err(st)?;
        }
    }
    for (k, v) in now {
        if before.get(k) != Some(v) {
            t.insert(k.as_str(), json(v)?.as_slice()).map_err(st)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Ack, Kind};

    fn notification(id: &str) -> Notification {
        Notification {
            id: id.into(),
            receiver: "slack".into(),
            kind: Kind::Notify,
            group_id: "g".into(),
            group_key: "0|slack|{}".into(),
            group_labels: BTreeMap::new(),
            group_created_ms: 0,
            thread_seq: 1,
            firing: vec![crate::alert::test_alert("fp", "X", "high", "m")],
            resolved: vec![],
            ack: None,
            created_at_ms: 5,
        }
    }

    #[test]
    fn state_and_intents_survive_reopening_and_marks_stick() {
        let dir = std::env::temp_dir().join(format!("mlwatch-store-{}", std::process::id()));
        let path = dir.join("state.redb");
        let _ = std::fs::remove_file(&path);
        let mut state = State::default();
        state.seq = 7;
        state
            .alerts
            .insert("fp".into(), crate::alert::test_alert("fp", "X", "high", "m"));
        state.acks.insert(
            "fp".into(),
            Ack {
                by: "bob".into(),
                comment: String::new(),
                at_ms: 3,
            },
        );
        {
            let mut store = Store::open(Some(&path)).unwrap();
            store.load().unwrap();
            store
                .commit(&state, &[notification("001"), notification("002")], 5)
                .unwrap();
            store.mark("001", Outcome::Delivered, None, 6).unwrap();
            // A removal is written too.
            state.acks.clear();
            store.commit(&state, &[], 7).unwrap();
        }
        let mut store = Store::open(Some(&path)).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.seq, 7);
        assert_eq!(loaded.alerts, state.alerts);
        assert!(loaded.acks.is_empty());
        let pending = store.log(Some(Outcome::Pending)).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].notification, notification("002"));
        assert_eq!(store.log(None).unwrap().len(), 2);
        assert!(store.mark("nope", Outcome::Delivered, None, 8).is_err());
        store.mark("002", Outcome::Failed, Some("404: no".into()), 9).unwrap();
        assert_eq!(store.prune(1).unwrap(), 1);
        let left = store.log(None).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].error.as_deref(), Some("404: no"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
