//! Quota counters on disk: one `redb` file under the state directory.
//!
//! Each (usage plan, API key) quota is stored as `"plan/key" → (period
//! start in Unix seconds, requests used)`. While the gateway runs, "used"
//! is the quota's durable mark (`throttle::lease::Mark`): what shards have
//! been handed plus a reserve, written before shards may spend any of it
//! — at every `quota_flush_interval` and as soon as a reserve runs low,
//! off the request path; at shutdown it is the exact count. All counters
//! go in one transaction, which redb makes durable (fsync) before
//! returning. So a crash (kill -9) never gives a key requests back; it
//! costs at most the reserve (about 100 ms of that key's traffic, at
//! least 1% of its limit, at most a quarter of what was left). An
//! embedded store is not our core: `redb` is crash-safe, pure Rust and
//! needs no setup.
//!
//! A damaged file is never taken for a new one: an existing file that is
//! empty, that redb refuses, or that makes redb panic (it asserts on some
//! corrupt pages) is reported as [`StoreError::Corrupt`], naming the file
//! and the way out (`tollgate run --reset-quotas`, which keeps the old
//! file aside, or moving it). Every call into redb runs under
//! `catch_unwind`, so a store failing while the gateway runs is an error
//! for the flusher to report, never a panic that stops it.

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
    #[error("quota store {file} is unreadable ({reason}); start with `tollgate run --reset-quotas` to keep it aside and begin with fresh counters, or move it away")]
    Corrupt { file: PathBuf, reason: String },
    #[error("cannot open quota store {file}: {reason}")]
    Open { file: PathBuf, reason: String },
    #[error("cannot set aside quota store {file}: {reason}")]
    Reset { file: PathBuf, reason: String },
}

thread_local! {
    /// Set while a call into redb runs: its panics are reported as errors,
    /// so the panic hook stays quiet about them.
    static IN_STORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the process's panic hook (once) so that panics caught by
/// [`guarded`] print no message and backtrace of their own.
fn quiet_store_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_STORE.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` (a call into redb), turning a panic into an error message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    quiet_store_panics();
    let was = IN_STORE.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_STORE.with(|q| q.set(was));
    result.map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        format!("redb failed reading it: {what}")
    })
}

/// A stored quota counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Start of the period the count belongs to, Unix seconds.
    pub period_start: u64,
    pub used: u64,
}

/// What a failure to open an existing store file means.
fn open_error(file: &Path, e: redb::DatabaseError) -> StoreError {
    let file = file.to_path_buf();
    match e {
        // Another process holds it (a binary upgrade's predecessor): not
        // damage, the caller may retry.
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Db {
            file,
            reason: e.to_string(),
        },
        // Permissions, a full disk, ...: not damage, and resetting would
        // give every key its quota back. (redb reports a file that is not
        // a store as InvalidData.)
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Open {
                file,
                reason: io.to_string(),
            }
        }
        e => StoreError::Corrupt {
            file,
            reason: e.to_string(),
        },
    }
}

/// The open quota store.
pub struct QuotaStore {
    db: Database,
    file: PathBuf,
    /// Held by a writer from planning its marks to applying them, so two
    /// writers (the old and new coordinator across a reload) can never
    /// store an older, lower mark after a newer one was applied.
    writing: std::sync::Mutex<()>,
}

impl QuotaStore {
    /// Opens the store under `dir`, creating it only where no file exists
    /// (an existing file that cannot be read is [`StoreError::Corrupt`]).
    pub fn open(dir: &Path) -> Result<QuotaStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let corrupt = |reason: String| StoreError::Corrupt {
            file: file.clone(),
            reason,
        };
        let unopenable = |reason: String| StoreError::Open {
            file: file.clone(),
            reason,
        };
        let db = match std::fs::metadata(&file) {
            Ok(m) if m.len() == 0 => return Err(corrupt("the file is empty".into())),
            Ok(_) => guarded(|| Database::open(&file))
                .map_err(corrupt)?
                .map_err(|e| open_error(&file, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                guarded(|| Database::create(&file))
                    .map_err(corrupt)?
                    .map_err(|e| StoreError::Db {
                        file: file.clone(),
                        reason: e.to_string(),
                    })?
            }
            Err(e) => return Err(unopenable(e.to_string())),
        };
        let store = QuotaStore {
            db,
            file,
            writing: std::sync::Mutex::new(()),
        };
        // Read it all once: damage past the header shows up here, at
        // start, not at the first flush.
        store.load().map_err(|e| match e {
            StoreError::Db { file, reason } => StoreError::Corrupt { file, reason },
            e => e,
        })?;
        Ok(store)
    }

    /// Sets the store under `dir` aside (renamed to
    /// `quotas.redb.reset-UNIXTIME`) so the next [`QuotaStore::open`]
    /// starts with fresh counters; returns where it went, or `None` if
    /// there was no store.
    pub fn reset(dir: &Path, unix_now: u64) -> Result<Option<PathBuf>, StoreError> {
        let file = dir.join(FILE_NAME);
        if !file.exists() {
            return Ok(None);
        }
        let fail = |reason: String| StoreError::Reset {
            file: file.clone(),
            reason,
        };
        // A running gateway holds redb's lock on it: never pull the store
        // from under it. (A damaged file fails to open for other reasons,
        // which is why it is being reset.)
        if let Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) =
            guarded(|| Database::open(&file).map(drop))
        {
            return Err(fail(
                "another process (a running tollgate?) has it open".into(),
            ));
        }
        let aside = dir.join(format!("{FILE_NAME}.reset-{unix_now}"));
        std::fs::rename(&file, &aside).map_err(|e| fail(e.to_string()))?;
        Ok(Some(aside))
    }

    /// Serialises writers (see the field): hold it from reading the
    /// counters to applying what was written.
    pub fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            file: self.file.clone(),
            reason: e.to_string(),
        }
    }

    /// Every stored counter.
    pub fn load(&self) -> Result<HashMap<String, Stored>, StoreError> {
        guarded(|| self.load_inner()).map_err(|e| self.err(e))?
    }

    fn load_inner(&self) -> Result<HashMap<String, Stored>, StoreError> {
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
        guarded(|| self.save_inner(entries)).map_err(|e| self.err(e))?
    }

    fn save_inner<'a>(
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

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A store with some counters, then `damage` done to its file.
    fn damaged(name: &str, damage: impl FnOnce(&Path)) -> (PathBuf, StoreError) {
        let d = dir(name);
        {
            let s = QuotaStore::open(&d).expect("open");
            let rows: Vec<(String, Stored)> = (0..200)
                .map(|i| {
                    (
                        format!("plan/key-{i}"),
                        Stored {
                            period_start: 100,
                            used: i,
                        },
                    )
                })
                .collect();
            s.save(rows.iter().map(|(k, v)| (k.as_str(), *v)))
                .expect("save");
        }
        damage(&d.join(FILE_NAME));
        let e = match QuotaStore::open(&d) {
            Ok(_) => panic!("{name}: a damaged store opened"),
            Err(e) => e,
        };
        (d, e)
    }

    #[test]
    fn a_damaged_store_is_an_error_naming_the_file_and_the_way_out() {
        let zero_at = |offset: u64| {
            move |f: &Path| {
                use std::io::{Seek, SeekFrom, Write};
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .expect("file");
                file.seek(SeekFrom::Start(offset)).expect("seek");
                file.write_all(&[0u8; 4096]).expect("zero");
            }
        };
        type Damage = Box<dyn FnOnce(&Path)>;
        let cases: [(&str, Damage); 4] = [
            (
                "empty",
                Box::new(|f: &Path| std::fs::write(f, b"").expect("truncate")),
            ),
            ("header", Box::new(zero_at(0))),
            ("page", Box::new(zero_at(8192))),
            (
                "garbage",
                Box::new(|f: &Path| std::fs::write(f, vec![7u8; 9000]).expect("write")),
            ),
        ];
        for (name, damage) in cases {
            let (d, e) = damaged(name, damage);
            assert!(matches!(e, StoreError::Corrupt { .. }), "{name}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(FILE_NAME) && text.contains("--reset-quotas"),
                "{text}"
            );
            // The way out: set aside, then a fresh store opens.
            let aside = QuotaStore::reset(&d, 42)
                .expect("reset")
                .expect("was there");
            assert!(aside.ends_with("quotas.redb.reset-42"));
            assert!(QuotaStore::open(&d)
                .expect("fresh")
                .load()
                .expect("load")
                .is_empty());
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_store_in_use_is_not_reset_and_an_unreadable_file_is_not_called_corrupt() {
        let d = dir("in-use");
        let open = QuotaStore::open(&d).expect("open");
        let e = QuotaStore::reset(&d, 1).expect_err("in use");
        assert!(e.to_string().contains("another process"), "{e}");
        drop(open);
        assert!(QuotaStore::reset(&d, 1).expect("reset").is_some());
        // A file this process may not read: an open error, no advice to
        // reset (which would give every key its quota back).
        {
            let s = QuotaStore::open(&d).expect("fresh");
            s.save([(
                "p/k",
                Stored {
                    period_start: 1,
                    used: 2,
                },
            )])
            .expect("save");
        }
        let f = Path::new("quotas.redb");
        let io = |kind: std::io::ErrorKind| {
            redb::DatabaseError::Storage(redb::StorageError::Io(kind.into()))
        };
        let e = open_error(f, io(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(e, StoreError::Open { .. }), "{e}");
        assert!(!e.to_string().contains("--reset-quotas"), "{e}");
        let e = open_error(f, io(std::io::ErrorKind::InvalidData));
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        let e = open_error(
            f,
            redb::DatabaseError::Storage(redb::StorageError::Corrupted("x".into())),
        );
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
