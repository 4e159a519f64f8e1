//! Quota counters on disk: one `redb` file under the state directory.
//!
//! Each (usage plan, API key) quota is stored as `"plan/key" → (period
//! start in Unix seconds, requests used)`. The reconciler thread writes
//! every counter at each flush (default every second) and at shutdown, in
//! one transaction, which redb makes durable (fsync) before returning; a
//! crash therefore loses at most the requests admitted since the last
//! flush (plus what shards admitted from leases in their last sync
//! interval). An embedded store is not our core: `redb` is crash-safe,
//! pure Rust and needs no setup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("quota_used");
/// The store's file name under the state directory.
pub const FILE_NAME: &str = "quotas.redb";

/// Why the quota store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("quota store {file}: {reason}")]
    Db { file: PathBuf, reason: String },
}

/// A stored quota counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Start of the period the count belongs to, Unix seconds.
    pub period_start: u64,
    pub used: u64,
}

/// The open quota store.
pub struct QuotaStore {
    db: Database,
    file: PathBuf,
}

impl QuotaStore {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path) -> Result<QuotaStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let db = Database::create(&file).map_err(|e| StoreError::Db {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Ok(QuotaStore { db, file })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            file: self.file.clone(),
            reason: e.to_string(),
        }
    }

    /// Every stored counter.
    pub fn load(&self) -> Result<HashMap<String, Stored>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = HashMap::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (period_start, used) = v.value();
            out.insert(k.value().to_string(), Stored { period_start, used });
        }
        Ok(out)
    }

    /// Writes `entries` in one durable transaction.
    pub fn save<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, Stored)>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(TABLE).map_err(|e| self.err(e))?;
            for (k, s) in entries {
                table
                    .insert(k, (s.period_start, s.used))
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("tollgate-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = QuotaStore::open(&dir).expect("open");
            assert!(s.load().expect("load").is_empty());
            let a = Stored {
                period_start: 100,
                used: 7,
            };
            s.save([("plan/alice", a)]).expect("save");
            let b = Stored {
                period_start: 100,
                used: 9,
            };
            s.save([("plan/alice", b), ("plan/bob", a)]).expect("save");
        }
        let s = QuotaStore::open(&dir).expect("reopen");
        let got = s.load().expect("load");
        assert_eq!(got.len(), 2);
        assert_eq!(got["plan/alice"].used, 9);
        assert_eq!(got["plan/bob"].used, 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
