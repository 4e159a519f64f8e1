//! The access log's file: whole lines appended, the bulk of a busy log
//! written with `O_DIRECT` (a sink of the writer thread, see `writer.rs`).
//!
//! # Why direct writes
//!
//! A buffered `write(2)` copies the log into the page cache, and a log that
//! keeps growing needs a new page-cache page for every 4 KiB written: the
//! kernel allocates it, copies into it, keeps it on its lists and later
//! writes it back. On the benchmark machine (a VM that hands freed memory
//! back to its host, so a new page is faulted in again) that cost
//! 0.85–3.6 ns per byte (`dd`, 2 GiB of 64 KiB writes into a new file)
//! against 0.19 ns per byte for 1 MiB `O_DIRECT` writes from one reused
//! buffer; at ~370 bytes per JSON line it was most of what a line cost.
//! Direct writes also keep the log out of the page cache.
//!
//! # How
//!
//! Batches are staged in a 4 KiB-aligned buffer, laid out so that a
//! byte's place in the buffer and its offset in the file agree modulo
//! 4 KiB. At the end of a pass over the writer's queue, once 256 KiB are
//! staged, the sink appends under an exclusive `flock`, taken for every
//! write to a regular file (so another tollgate process on the same file,
//! e.g. the other one of a binary upgrade, never lands inside a line; a
//! holder that keeps it over 1 s is given up on):
//!
//! 1. the file's end is read (`fstat`): another writer or logrotate's
//!    `copytruncate` may have moved it; the staged bytes are shifted to
//!    agree with it;
//! 2. the bytes up to the file's next 4 KiB boundary go with a buffered
//!    write;
//! 3. the whole blocks after them go with one `O_APPEND | O_DIRECT` write
//!    straight from the aligned buffer (an end moved off the boundary
//!    since step 1, by a writer without the lock, makes the kernel refuse
//!    it with `EINVAL`, writing nothing: those bytes then go buffered);
//! 4. the rest (under 4 KiB) goes with a buffered write, so the file ends
//!    with a whole line whenever the lock is free (another process's
//!    lines never land inside one of ours); the next lead completes that
//!    page, so the page cache sees one page per pass instead of one per
//!    4 KiB of log.
//!
//! Less than 256 KiB staged waits for more, at most 100 ms, and is then
//! written with one buffered write; so are the staged lines when a pass
//! brings nothing (the writer going idle), at a reopen and at the stop.
//! Lines reach the file within ~0.15 s under load, at once when it is quiet.
//!
//! # When not
//!
//! `O_DIRECT` refused at open (file systems without it, pipes, devices),
//! or a direct write refused with `EINVAL` although the file's end was
//! aligned (a device with blocks over 4 KiB): buffered writes only, as for
//! stdout, until the file is reopened. A direct write waits for the
//! device, a buffered one only for the page cache: a direct write that took
//! over 30 ms (a slow or congested disk) or failed switches the file to
//! buffered writes for 10 s, so a disk hiccup fills the page cache rather
//! than the writer's queue, and a failed direct write's bytes are tried
//! once more, buffered, before they count as dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Alignment of direct writes: file offset, length and memory. 4 KiB
/// covers devices with 512-byte and 4 KiB logical blocks.
pub(super) const BLOCK: usize = 4096;
/// Bytes staged at most.
const STAGE_BYTES: usize = 2 * 1024 * 1024;
/// Staged bytes that make a direct write worth it: a direct write costs
/// ~35 µs of CPU by itself (block allocation, journal, request), so small
/// ones cost more per byte than the page cache (`dd`: 64 KiB direct
/// writes 0.35 ns per byte, 256 KiB 0.28, 1 MiB 0.19).
pub(super) const DIRECT_MIN: usize = 256 * 1024;
/// Staged bytes wait at most this long for more.
pub(super) const MAX_HOLD: Duration = Duration::from_millis(100);
/// A direct write slower than this pauses direct writes (the writer's
/// queue holds ~65 ms of lines at 60 MB/s, and it naps 25 ms a pass) ...
const SLOW_DIRECT: Duration = Duration::from_millis(30);
/// ... for this long.
const SLOW_PAUSE: Duration = Duration::from_secs(10);
/// How long a write waits for another process's `flock` before writing
/// without it (a stuck holder must not stall the log, nor the stop).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Lines written out and dropped by one call, and the error that dropped
/// them.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub written: u64,
    pub dropped: u64,
    pub error: Option<io::Error>,
}

impl Tally {
    /// `lines` lines written by `res`, or dropped by its error.
    pub fn lines(lines: u64, res: io::Result<()>) -> Tally {
        match res {
            Ok(()) => Tally {
                written: lines,
                ..Tally::default()
            },
            Err(e) => Tally {
                dropped: lines,
                error: Some(e),
                ..Tally::default()
            },
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.written += other.written;
        self.dropped += other.dropped;
        if other.error.is_some() {
            self.error = other.error;
        }
    }
}

/// Lines ending in `buf`: every rendered line ends with the only `\n` in
/// it (values are escaped, templates cannot hold a line break). Only for
/// the failure path.
fn lines_in(buf: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', buf).count() as u64
}

/// Staged bytes in a 4 KiB-aligned region: `region[start..end]`, where a
/// byte's index and its file offset agree modulo [`BLOCK`], so the whole
/// blocks can be written from aligned memory. `start < BLOCK` always.
struct Stage {
    mem: Vec<u8>,
    /// Index in `mem` of the region's first byte (4 KiB-aligned).
    base: usize,
    start: usize,
    end: usize,
    /// When the oldest staged byte came.
    since: Option<Instant>,
    /// Lines staged (each batch's count: no need to count line ends).
    lines: u64,
}

/// Region size: the stage plus room to shift it to any phase.
const REGION: usize = STAGE_BYTES + BLOCK;

impl Stage {
    fn new() -> Stage {
        let mem = vec![0u8; REGION + BLOCK];
        // The address is only used to find the aligned start.
        let base = (BLOCK - mem.as_ptr() as usize % BLOCK) % BLOCK;
        Stage {
            mem,
            base,
            start: 0,
            end: 0,
            since: None,
            lines: 0,
        }
    }

    fn region(&self) -> &[u8] {
        &self.mem[self.base..self.base + REGION]
    }

    fn region_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.base..self.base + REGION]
    }

    fn pending(&self) -> &[u8] {
        &self.region()[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether `n` more bytes fit.
    fn fits(&self, n: usize) -> bool {
        self.len() + n <= STAGE_BYTES
    }

    /// Stages `buf` (`lines` whole lines), which must fit.
    fn push(&mut self, buf: &[u8], lines: u64, now: Instant) {
        self.lines += lines;
        let end = self.end;
        self.region_mut()[end..end + buf.len()].copy_from_slice(buf);
        self.end += buf.len();
        self.since.get_or_insert(now);
    }

    /// Shifts the staged bytes so they start at `phase` (the file's end
    /// modulo [`BLOCK`]).
    fn align_to(&mut self, phase: usize) {
        if phase != self.start {
            let (start, end) = (self.start, self.end);
            self.region_mut().copy_within(start..end, phase);
            self.end = phase + (end - start);
            self.start = phase;
        }
    }

    /// The bytes up to the next block boundary (empty when aligned) and
    /// the whole blocks after them, as `(lead_end, bulk_end)` indexes.
    fn split(&self) -> (usize, usize) {
        let lead_end = if self.start == 0 {
            0
        } else {
            BLOCK.min(self.end)
        };
        let bulk = (self.end - lead_end) / BLOCK * BLOCK;
        (lead_end, lead_end + bulk)
    }

    /// Bytes up to index `pos` are gone (written or dropped): the rest
    /// moves to the front, keeping its phase.
    fn consumed(&mut self, pos: usize) {
        let phase = pos % BLOCK;
        let end = self.end;
        self.region_mut().copy_within(pos..end, phase);
        self.start = phase;
        self.end = phase + (end - pos);
        if self.end == self.start {
            self.since = None;
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// The same file opened for `O_DIRECT` appends, if it is a regular file
/// (on a pipe `O_DIRECT` means packets), the file system allows it and the
/// path still names the file `file` opened.
fn open_direct(path: &Path, file: &File) -> Option<File> {
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let direct = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

/// Until when direct writes pause after one took `took`.
fn pause_after(took: Duration, slow: Duration, now: Instant) -> Option<Instant> {
    (took > slow).then(|| now + SLOW_PAUSE)
}

/// An access log file (see the module doc).
pub(super) struct FileSink {
    path: PathBuf,
    file: File,
    /// A regular file: appended to under its `flock`.
    regular: bool,
    /// Whether to use direct writes where they work.
    try_direct: bool,
    /// The same file for direct writes; `None` where they do not work.
    direct: Option<File>,
    stage: Stage,
    /// Direct writes pause until then after a slow one ...
    paused_until: Option<Instant>,
    /// ... slower than this ([`SLOW_DIRECT`]; tests that count direct
    /// bytes raise it, so a slow test machine's disk cannot fail them).
    slow: Duration,
    /// Bytes written with `O_DIRECT`.
    pub direct_bytes: u64,
    /// A note for stderr (direct writes given up or paused), taken by the
    /// writer.
    pub notice: Option<String>,
}

impl FileSink {
    /// Opens `path` for appending (created if missing); with `direct`,
    /// also for direct writes where the file system allows them.
    pub fn open(path: PathBuf, direct: bool) -> io::Result<FileSink> {
        let file = open_append(&path)?;
        let regular = file.metadata()?.is_file();
        let try_direct = direct;
        let direct = if try_direct {
            open_direct(&path, &file)
        } else {
            None
        };
        Ok(FileSink {
            path,
            file,
            regular,
            try_direct,
            direct,
            stage: Stage::new(),
            paused_until: None,
            slow: SLOW_DIRECT,
            direct_bytes: 0,
            notice: None,
        })
    }

    /// Whether direct writes are possible on this file at all.
    #[cfg(test)]
    pub fn has_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn direct_now(&self, now: Instant) -> bool {
        self.direct.is_some() && self.paused_until.is_none_or(|t| now >= t)
    }

    /// Writes (or stages) `buf`: whole lines, `lines` of them.
    pub fn write(&mut self, buf: &[u8], lines: u64, now: Instant) -> Tally {
        let mut tally = Tally::default();
        if self.direct_now(now) && buf.len() <= STAGE_BYTES {
            if !self.stage.fits(buf.len()) {
                tally.add(self.write_out(now));
            }
            self.stage.push(buf, lines, now);
            return tally;
        }
        if self.stage.len() > 0 {
            tally.add(self.write_out(now));
        }
        let locked = self.lock();
        tally.add(Tally::lines(lines, (&self.file).write_all(buf)));
        self.unlock(locked);
        tally
    }

    /// End of a pass over the queue: writes what is due. With `all` (the
    /// writer going idle, a reopen, the stop) nothing stays staged.
    pub fn settle(&mut self, now: Instant, all: bool) -> Tally {
        let len = self.stage.len();
        if len == 0 {
            return Tally::default();
        }
        let due = all
            || self
                .stage
                .since
                .is_some_and(|t| now.saturating_duration_since(t) >= MAX_HOLD);
        if len >= DIRECT_MIN || due {
            self.write_out(now)
        } else {
            Tally::default()
        }
    }

    /// Appends everything staged: the whole blocks directly when enough
    /// are staged, the rest buffered. A failed write drops what was not
    /// written yet, as a failed buffered write drops its batch.
    fn write_out(&mut self, now: Instant) -> Tally {
        let lines = std::mem::take(&mut self.stage.lines);
        let locked = self.lock();
        let res = self.write_staged(now);
        self.unlock(locked);
        match res {
            Ok(()) => Tally::lines(lines, Ok(())),
            Err(e) => {
                // Counting line ends only here keeps them off the
                // writer's path (it was 16% of its time).
                let dropped = lines_in(self.stage.pending());
                self.stage.consumed(self.stage.end);
                Tally {
                    written: lines.saturating_sub(dropped),
                    dropped,
                    error: Some(e),
                }
            }
        }
    }

    fn write_staged(&mut self, now: Instant) -> io::Result<()> {
        if self.stage.len() >= DIRECT_MIN && self.direct_now(now) {
            self.write_direct(now)?;
        }
        if self.stage.len() > 0 {
            (&self.file).write_all(self.stage.pending())?;
            self.stage.consumed(self.stage.end);
        }
        Ok(())
    }

    /// Steps 1–3 of the module doc; the rest stays staged for the caller.
    /// Only a failed lead (a buffered write) is an error: a refused or
    /// failed direct write leaves its bytes to the buffered write after it.
    fn write_direct(&mut self, now: Instant) -> io::Result<()> {
        let Some(direct) = &self.direct else {
            return Ok(());
        };
        let Ok(meta) = self.file.metadata() else {
            return Ok(());
        };
        self.stage.align_to((meta.len() % BLOCK as u64) as usize);
        let (lead_end, bulk_end) = self.stage.split();
        if lead_end > self.stage.start {
            (&self.file).write_all(&self.stage.region()[self.stage.start..lead_end])?;
        }
        // The whole blocks after the lead: aligned memory (`lead_end` is 0
        // or BLOCK), an aligned file end (under the lock), whole blocks.
        let bulk = &self.stage.region()[lead_end..bulk_end];
        let mut written = 0;
        if !bulk.is_empty() {
            let started = crate::clock::now();
            let res = (&*direct).write(bulk);
            let took = crate::clock::since(started);
            match res {
                Ok(n) => {
                    written = n;
                    self.direct_bytes += n as u64;
                    if let Some(until) = pause_after(took, self.slow, now) {
                        self.paused_until = Some(until);
                        self.notice = Some(format!(
                            "a direct write took {} ms: buffered writes for {} s",
                            took.as_millis(),
                            SLOW_PAUSE.as_secs()
                        ));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Refused. If the file's end moved off the boundary
                    // (a writer without the lock, a copytruncate) that was
                    // a race; refused at an aligned end, direct writes do
                    // not work here.
                    let moved = self
                        .file
                        .metadata()
                        .is_ok_and(|m| m.len() % BLOCK as u64 != 0);
                    if !moved {
                        self.direct = None;
                        self.notice = Some(format!(
                            "direct writes refused ({e}): buffered writes until reopened"
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.paused_until = Some(now + SLOW_PAUSE);
                    self.notice = Some(format!(
                        "a direct write failed ({e}): buffered writes for {} s",
                        SLOW_PAUSE.as_secs()
                    ));
                }
            }
        }
        self.stage.consumed(lead_end + written);
        Ok(())
    }

    /// Takes the file's `flock` (every tollgate writing a regular file
    /// does, so two processes' lines never interleave inside a line);
    /// after [`LOCK_WAIT`] for a holder that does not let go, writes
    /// without it. Whether it was taken.
    fn lock(&self) -> bool {
        if !self.regular {
            return false;
        }
        let deadline = crate::clock::now() + LOCK_WAIT;
        loop {
            match self.file.try_lock() {
                Ok(()) => return true,
                Err(std::fs::TryLockError::WouldBlock) if crate::clock::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err(_) => return false,
            }
        }
    }

    fn unlock(&self, locked: bool) {
        if locked {
            let _ = self.file.unlock();
        }
    }

    /// Opens the path again (after logrotate moved the file); the caller
    /// settles first. On failure the old file stays in use.
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.regular = file.metadata().is_ok_and(|m| m.is_file());
        self.direct = if self.try_direct {
            open_direct(&self.path, &file)
        } else {
            None
        };
        self.file = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::access_log::test_log_path as temp_path;
    use std::fs;

    /// A deterministic run of lines of 40–800 bytes.
    fn line(i: u64) -> Vec<u8> {
        let len = 40 + (i * 7919 % 761) as usize;
        let mut l = format!("ours {i:08} ").into_bytes();
        l.resize(len - 1, b'a' + (i % 26) as u8);
        l.push(b'\n');
        l
    }

    /// Feeds lines `from..to` in batches of 1–200 lines, settling after
    /// each (time moving 3 ms a batch), and returns their bytes.
    fn feed(
        sink: &mut FileSink,
        from: u64,
        to: u64,
        now: &mut Instant,
        total: &mut Tally,
    ) -> Vec<u8> {
        let mut all = Vec::new();
        let mut i = from;
        while i < to {
            let n = (1 + i * 31 % 200).min(to - i);
            let mut batch = Vec::new();
            for k in i..i + n {
                batch.extend_from_slice(&line(k));
            }
            total.add(sink.write(&batch, n, *now));
            all.extend_from_slice(&batch);
            *now += Duration::from_millis(3);
            total.add(sink.settle(*now, false));
            i += n;
        }
        all
    }

    #[test]
    fn staged_lines_reach_the_file_whole_and_in_order() {
        for direct in [true, false] {
            let path = temp_path("order");
            let mut sink = FileSink::open(path.clone(), direct).expect("open");
            // A slow disk (a busy test machine) must not pause direct
            // writes here: the test counts them.
            sink.slow = Duration::MAX;
            let mut now = crate::clock::now();
            let mut total = Tally::default();
            let mut want = feed(&mut sink, 0, 20_000, &mut now, &mut total);
            // Idle: everything staged is written.
            total.add(sink.settle(now, true));
            assert_eq!(fs::read(&path).expect("read"), want, "direct {direct}");
            want.extend(feed(&mut sink, 20_000, 30_000, &mut now, &mut total));
            total.add(sink.settle(now, true));
            assert_eq!(fs::read(&path).expect("read"), want, "direct {direct}");
            assert_eq!((total.written, total.dropped), (30_000, 0));
            assert!(total.error.is_none());
            if sink.has_direct() {
                // ~8 MB of lines: most of it went directly, in whole blocks.
                assert!(
                    sink.direct_bytes > want.len() as u64 / 2,
                    "{}",
                    sink.direct_bytes
                );
                assert_eq!(sink.direct_bytes % BLOCK as u64, 0);
            } else {
                assert_eq!(sink.direct_bytes, 0);
            }
            let _ = fs::remove_file(&path);
        }
    }

    #[test]
    fn little_staged_waits_at_most_max_hold() {
        let path = temp_path("hold");
        let mut sink = FileSink::open(path.clone(), true).expect("open");
        let now = crate::clock::now();
        let t = sink.write(b"one\n", 1, now);
        if sink.has_direct() {
            assert_eq!(t.written, 0, "staged");
            assert_eq!(sink.settle(now + MAX_HOLD / 2, false).written, 0);
            assert_eq!(fs::read(&path).expect("read"), b"", "held while young");
            assert_eq!(sink.settle(now + MAX_HOLD, false).written, 1);
        } else {
            assert_eq!(t.written, 1, "no staging without direct writes");
        }
        assert_eq!(fs::read(&path).expect("read"), b"one\n");
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn other_appenders_and_truncation_keep_lines_whole() {
        let path = temp_path("others");
        let mut sink = FileSink::open(path.clone(), true).expect("open");
        let mut other = open_append(&path).expect("other");
        let mut now = crate::clock::now();
        let mut total = Tally::default();
        let mut ours = Vec::new();
        for round in 0..20u64 {
            ours.extend(feed(
                &mut sink,
                round * 1000,
                round * 1000 + 1000,
                &mut now,
                &mut total,
            ));
            // Another process appends whole lines of odd lengths (the file's
            // end is no longer where the sink left it), taking the lock as
            // tollgate does.
            other.lock().expect("lock");
            other
                .write_all(
                    format!("foreign {round} {}\n", "z".repeat(round as usize * 13)).as_bytes(),
                )
                .expect("append");
            other.unlock().expect("unlock");
        }
        total.add(sink.settle(now, true));
        let text = fs::read(&path).expect("read");
        let (mut mine, mut foreign) = (Vec::new(), 0);
        for l in text.split_inclusive(|&b| b == b'\n') {
            if l.starts_with(b"foreign ") {
                foreign += 1;
            } else {
                mine.extend_from_slice(l);
            }
        }
        assert_eq!(foreign, 20);
        assert_eq!(mine, ours, "our lines whole and in order");
        assert_eq!(total.written, 20_000);

        // logrotate's copytruncate while nothing is staged: the file
        // starts again at 0 and the sink follows.
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        let after = feed(&mut sink, 50_000, 55_000, &mut now, &mut total);
        total.add(sink.settle(now, true));
        assert_eq!(fs::read(&path).expect("read"), after);
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn reopen_follows_the_path() {
        let path = temp_path("reopen");
        let moved = path.with_extension("log.1");
        let mut sink = FileSink::open(path.clone(), true).expect("open");
        let mut now = crate::clock::now();
        let mut total = Tally::default();
        let before = feed(&mut sink, 0, 3000, &mut now, &mut total);
        total.add(sink.settle(now, true));
        fs::rename(&path, &moved).expect("rename");
        sink.reopen().expect("reopen");
        let after = feed(&mut sink, 3000, 6000, &mut now, &mut total);
        total.add(sink.settle(now, true));
        assert_eq!(fs::read(&moved).expect("read"), before);
        assert_eq!(fs::read(&path).expect("read"), after);
        assert_eq!(total.written, 6000);
        for p in [&path, &moved] {
            let _ = fs::remove_file(p);
        }
    }

    #[test]
    fn a_slow_direct_write_pauses_direct_writes() {
        let now = crate::clock::now();
        assert_eq!(
            pause_after(Duration::from_millis(5), SLOW_DIRECT, now),
            None
        );
        assert_eq!(pause_after(SLOW_DIRECT, SLOW_DIRECT, now), None);
        assert_eq!(
            pause_after(SLOW_DIRECT + Duration::from_millis(1), SLOW_DIRECT, now),
            Some(now + SLOW_PAUSE)
        );
        // While paused, batches are written at once, buffered.
        let path = temp_path("paused");
        let mut sink = FileSink::open(path.clone(), true).expect("open");
        sink.paused_until = Some(now + SLOW_PAUSE);
        let t = sink.write(b"a\nb\n", 2, now);
        assert_eq!(t.written, 2);
        assert_eq!(fs::read(&path).expect("read"), b"a\nb\n");
        // After the pause, staged again (where direct writes work).
        let t = sink.write(b"c\n", 1, now + SLOW_PAUSE);
        assert_eq!(t.written, if sink.has_direct() { 0 } else { 1 });
        let _ = sink.settle(now + SLOW_PAUSE, true);
        assert_eq!(fs::read(&path).expect("read"), b"a\nb\nc\n");
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn every_write_to_a_regular_file_takes_the_lock() {
        let path = temp_path("lock");
        // Without direct writes too: the other process may use them.
        let mut sink = FileSink::open(path.clone(), false).expect("open");
        let other = open_append(&path).expect("other");
        assert!(sink.lock(), "taken");
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        sink.unlock(true);
        other.try_lock().expect("released");
        // A holder that does not let go is given up on after LOCK_WAIT:
        // the line is written anyway.
        let started = crate::clock::now();
        let t = sink.write(b"late\n", 1, started);
        assert_eq!(t.written, 1);
        assert!(crate::clock::since(started) >= LOCK_WAIT);
        assert_eq!(fs::read(&path).expect("read"), b"late\n");
        other.unlock().expect("unlock");
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn only_regular_files_get_direct_writes() {
        let file = open_append(Path::new("/dev/null")).expect("open");
        assert!(open_direct(Path::new("/dev/null"), &file).is_none());
    }

    #[test]
    fn a_failed_write_drops_and_counts_what_it_did_not_write() {
        let path = temp_path("fail");
        let mut sink = FileSink::open(path.clone(), true).expect("open");
        // Read-only from here: every buffered write fails (EBADF); direct
        // writes (their own descriptor) still work.
        sink.file = File::open(&path).expect("open read-only");
        let mut now = crate::clock::now();
        let mut total = Tally::default();
        let mut all = Vec::new();
        let mut lines = 0;
        while all.len() < DIRECT_MIN + 10_000 {
            let l = line(lines);
            total.add(sink.write(&l, 1, now));
            all.extend_from_slice(&l);
            lines += 1;
        }
        now += MAX_HOLD;
        total.add(sink.settle(now, true));
        let text = fs::read(&path).expect("read");
        assert_eq!(total.written + total.dropped, lines);
        assert_eq!(
            total.written,
            lines_in(&text),
            "written = line ends in the file"
        );
        assert!(all.starts_with(&text));
        assert!(total.error.is_some());
        if sink.has_direct() {
            // The whole blocks went out; the rest failed.
            assert_eq!(text.len(), all.len() / BLOCK * BLOCK);
            assert!(total.written > 0);
        } else {
            assert_eq!(total.written, 0);
        }
        assert_eq!(sink.stage.len(), 0);
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn other_files_are_written_as_batches_come() {
        // /dev/full: no direct writes (not a regular file), and every
        // write fails with ENOSPC.
        let mut sink = FileSink::open(PathBuf::from("/dev/full"), true).expect("open");
        let now = crate::clock::now();
        let mut total = Tally::default();
        let batch = [line(1), line(2), line(3)].concat();
        assert!(!sink.has_direct());
        for _ in 0..100 {
            let t = sink.write(&batch, 3, now);
            assert_eq!((t.written, t.dropped), (0, 3), "written at once");
            total.add(t);
        }
        total.add(sink.settle(now, true));
        assert_eq!((total.written, total.dropped), (0, 300));
        assert_eq!(
            total.error.map(|e| e.raw_os_error()),
            Some(Some(libc::ENOSPC))
        );
        assert_eq!(sink.stage.len(), 0);
    }

    #[test]
    fn stage_keeps_file_phase() {
        let mut s = Stage::new();
        assert_eq!(s.region().as_ptr() as usize % BLOCK, 0);
        let now = crate::clock::now();
        s.push(&[b'x'; 10_000], 0, now);
        s.align_to(100);
        assert_eq!((s.start, s.end), (100, 10_100));
        assert_eq!(s.split(), (BLOCK, BLOCK + 4096));
        s.consumed(BLOCK);
        assert_eq!((s.start, s.end), (0, 10_100 - BLOCK));
        s.consumed(4096);
        assert_eq!((s.start, s.end), (0, 10_100 - 2 * BLOCK));
        s.consumed(s.end);
        assert_eq!((s.start, s.end, s.since), (1908, 1908, None));
    }
}
