//! Reloads the configuration when a certificate, key or truststore file
//! the running snapshot read changes (a renewed certificate takes effect
//! without a signal). A std thread compares the files' modification time,
//! size and inode with those recorded when the snapshot was built, every
//! [`WATCH_EVERY`]; a change must hold for one more look before the
//! reload (so a file being written is not read half done). New
//! connections get the new certificates; open ones keep theirs. A reload
//! that fails (e.g. the key was not replaced yet) leaves the running
//! configuration in place and is tried again only after a further change.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Control;
use crate::config::tls::{stamp, FileStamp};
use crate::observe::stderr_line;

/// How often the files are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

type Files = Vec<(PathBuf, FileStamp)>;

/// The debounce decision, without I/O.
#[derive(Debug, Default)]
pub struct Watch {
    /// A change seen once, waiting to be seen unchanged again.
    pending: Option<Files>,
    /// The files as they were when a reload from them failed.
    failed: Option<Files>,
}

impl Watch {
    /// Compares the files now with those the running configuration was
    /// built from; true when a reload is due.
    pub fn observe(&mut self, built: &[(PathBuf, FileStamp)], now: Files) -> bool {
        if now == built || self.failed.as_ref() == Some(&now) {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }

    /// The reload from `files` failed: wait for another change.
    pub fn failed(&mut self, files: Files) {
        self.failed = Some(files);
    }
}

/// Starts the watcher; it ends when the gateway stops or is dropped.
pub fn spawn(control: &Arc<Control>) {
    let weak: Weak<Control> = Arc::downgrade(control);
    let _ = std::thread::Builder::new()
        .name("tollgate-watch".into())
        .spawn(move || {
            let mut watch = Watch::default();
            loop {
                // Short naps so a stopped gateway releases the thread soon.
                for _ in 0..(WATCH_EVERY.as_millis() / 100) {
                    std::thread::sleep(Duration::from_millis(100));
                    match weak.upgrade() {
                        Some(c) if !c.stopping() => {}
                        _ => return,
                    }
                }
                let Some(control) = weak.upgrade() else {
                    return;
                };
                let snap = control.snapshot();
                let now: Files = snap
                    .tls
                    .files
                    .iter()
                    .map(|(f, _)| (f.clone(), stamp(f)))
                    .collect();
                if !watch.observe(&snap.tls.files, now.clone()) || !control.has_source() {
                    continue;
                }
                match control.reload_from_source() {
                    Ok(r) => stderr_line(format_args!(
                        "tollgate: certificate files changed: configuration reloaded (generation {})",
                        r.generation
                    )),
                    // Busy (a reload still reaching the shards) or a bind
                    // error passes: look again at the next round.
                    Err(super::ReloadError::Busy | super::ReloadError::Stopping) => {}
                    Err(e) => {
                        if matches!(e, super::ReloadError::Config(_)) {
                            watch.failed(now);
                        }
                        stderr_line(format_args!("tollgate: certificate files changed but the reload was refused; the running configuration stays:"));
                        for i in e.issues() {
                            stderr_line(format_args!("  {i}"));
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(stamps: &[u64]) -> Files {
        stamps
            .iter()
            .enumerate()
            .map(|(i, &s)| (PathBuf::from(format!("f{i}")), Some((s as i128, s, 1))))
            .collect()
    }

    #[test]
    fn a_change_reloads_once_it_holds_for_a_second_look() {
        let built = files(&[1, 1]);
        let mut w = Watch::default();
        assert!(!w.observe(&built, files(&[1, 1])), "unchanged");
        assert!(!w.observe(&built, files(&[2, 1])), "seen once: wait");
        assert!(!w.observe(&built, files(&[2, 2])), "still changing: wait");
        assert!(w.observe(&built, files(&[2, 2])), "held: reload");
        // The reload built a snapshot from the new files.
        let built = files(&[2, 2]);
        assert!(!w.observe(&built, files(&[2, 2])), "no change since");
    }

    #[test]
    fn a_failed_reload_waits_for_another_change() {
        let built = files(&[1, 1]);
        let mut w = Watch::default();
        let mut gone = files(&[1, 1]);
        gone[1].1 = None;
        assert!(!w.observe(&built, gone.clone()));
        assert!(
            w.observe(&built, gone.clone()),
            "a vanished file is a change"
        );
        w.failed(gone.clone());
        assert!(!w.observe(&built, gone.clone()));
        assert!(!w.observe(&built, gone), "not retried");
        assert!(!w.observe(&built, files(&[1, 3])));
        assert!(
            w.observe(&built, files(&[1, 3])),
            "a further change is tried"
        );
    }
}
