//! The writing half of the access log (see the parent module's doc):
//! per-shard buffers handed to one writer thread per destination,
//! drops counted, reopen on request.

use std::io::{self, Write};
use std::mem;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::file::{FileSink, Tally};

/// Where an access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// Appended to (created if missing); reopened on [`AccessLog::reopen`].
    File(PathBuf),
}

/// Bytes a shard buffers before handing a batch to the writer.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Bytes a shard buffers at most while the writer's queue is full; lines
/// past it are dropped.
pub const SHARD_CAP_BYTES: usize = 1024 * 1024;
/// Room for a line past the batch size, so a batch rarely reallocates.
const LINE_SLACK: usize = 8 * 1024;
/// How often an idle writer looks at the reopen flag.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// While batches keep coming, the writer takes them at most this often
/// (see `run_writer`).
const PACE: Duration = Duration::from_millis(25);

/// Counters and flags shared by the shards and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    written: AtomicU64,
    dropped: AtomicU64,
    reopen: AtomicBool,
}

/// What a shard's batches carry back: the way home for the buffer and the
/// counters.
struct Link {
    back: SyncSender<Vec<u8>>,
    shared: Arc<Shared>,
}

/// Whole lines of one shard. Lines of a batch dropped unwritten (the writer
/// gone, a failed write) are counted as dropped.
struct Batch {
    buf: Vec<u8>,
    lines: u64,
    link: Arc<Link>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.lines > 0 {
            self.link
                .shared
                .dropped
                .fetch_add(self.lines, Ordering::Release);
        }
    }
}

enum Msg {
    Batch(Batch),
    /// Look at the reopen flag now.
    Wake,
    /// Write what is queued, then end.
    Stop,
}

/// Where the writer thread writes.
trait Sink: Send {
    /// Writes (or stages) `buf`: whole lines, `lines` of them.
    fn write(&mut self, buf: &[u8], lines: u64, now: Instant) -> Tally;
    /// End of a pass over the queue: writes what is due; with `all` (idle,
    /// reopen, stop) everything staged.
    fn settle(&mut self, _now: Instant, _all: bool) -> Tally {
        Tally::default()
    }
    fn reopen(&mut self) -> io::Result<()>;
    /// Something worth a line on stderr.
    fn take_notice(&mut self) -> Option<String> {
        None
    }
}

struct StdoutSink;

impl Sink for StdoutSink {
    fn write(&mut self, buf: &[u8], lines: u64, _now: Instant) -> Tally {
        let mut out = io::stdout().lock();
        Tally::lines(lines, out.write_all(buf).and_then(|()| out.flush()))
    }

    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, buf: &[u8], lines: u64, now: Instant) -> Tally {
        FileSink::write(self, buf, lines, now)
    }

    fn settle(&mut self, now: Instant, all: bool) -> Tally {
        FileSink::settle(self, now, all)
    }

    fn reopen(&mut self) -> io::Result<()> {
        FileSink::reopen(self)
    }

    fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }
}

/// An access log destination and its writer thread (`tollgate-log`).
/// Shared by the shards through an `Arc`; each shard writes through its
/// own [`ShardLog`]. Dropping it stops the writer like [`AccessLog::stop`].
pub struct AccessLog {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    queue_batches: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("queue_batches", &self.queue_batches)
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens the destination (a file for append, created if missing, so
    /// errors surface now) and starts its writer thread with a queue of
    /// `queue_batches` batches (at least 1).
    pub fn start(dest: Destination, queue_batches: usize) -> io::Result<Arc<AccessLog>> {
        let (sink, label): (Box<dyn Sink>, String) = match dest {
            Destination::Stdout => (Box::new(StdoutSink), "stdout".to_string()),
            Destination::File(path) => {
                let label = path.display().to_string();
                (Box::new(FileSink::open(path, true)?), label)
            }
        };
        AccessLog::start_sink(sink, label, queue_batches)
    }

    fn start_sink(
        sink: Box<dyn Sink>,
        label: String,
        queue_batches: usize,
    ) -> io::Result<Arc<AccessLog>> {
        let queue_batches = queue_batches.max(1);
        let (tx, rx) = mpsc::sync_channel(queue_batches);
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("tollgate-log".to_string())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run_writer(rx, sink, &label, &shared)
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            shared,
            queue_batches,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// A buffer for one shard: batches of [`BATCH_BYTES`], at most
    /// [`SHARD_CAP_BYTES`] buffered.
    pub fn shard_buffer(self: &Arc<Self>) -> ShardLog {
        self.shard_buffer_with_limits(BATCH_BYTES, SHARD_CAP_BYTES)
    }

    /// A buffer for one shard that hands a batch to the writer once it
    /// holds `batch_bytes` and drops lines once it holds `cap_bytes`.
    pub fn shard_buffer_with_limits(
        self: &Arc<Self>,
        batch_bytes: usize,
        cap_bytes: usize,
    ) -> ShardLog {
        let batch_bytes = batch_bytes.max(1);
        // Buffers in flight per shard: the queue, the one being written,
        // and the one coming back.
        let (back, back_rx) = mpsc::sync_channel(self.queue_batches + 2);
        let capacity = batch_bytes.min(cap_bytes) + LINE_SLACK;
        ShardLog {
            tx: self.tx.clone(),
            link: Arc::new(Link {
                back,
                shared: Arc::clone(&self.shared),
            }),
            back_rx,
            cur: Vec::with_capacity(capacity),
            lines: 0,
            spare: None,
            capacity,
            batch_bytes,
            cap_bytes,
            flush_at: batch_bytes,
            dropped: 0,
        }
    }

    /// Asks the writer to reopen the file before its next batch (and
    /// within 500 ms if idle), e.g. on `SIGUSR1` after logrotate moved it.
    /// Nothing for stdout.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        // A full queue means a batch is coming, which checks the flag.
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Lines dropped by all shards (published at each shard's flush).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Lines written.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Writes what was handed over so far and joins the writer thread.
    /// Batches handed over later are dropped (and counted). Idempotent.
    pub fn stop(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // Blocks while the queue is full: this is not a shard.
            let _ = self.tx.send(Msg::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread's state.
struct Writer<'a> {
    sink: Box<dyn Sink>,
    label: &'a str,
    shared: &'a Shared,
    /// A write failed and nothing was written since: not logged again.
    failing: bool,
}

impl Writer<'_> {
    fn account(&mut self, tally: Tally) {
        let label = self.label;
        if let Some(notice) = self.sink.take_notice() {
            crate::observe::stderr_line(format_args!("tollgate: access log {label}: {notice}"));
        }
        match tally.error {
            Some(e) if !self.failing => {
                crate::observe::stderr_line(format_args!(
                    "tollgate: access log {label}: {e} (dropping lines until a write succeeds)"
                ));
                self.failing = true;
            }
            Some(_) => {}
            None if tally.written > 0 => self.failing = false,
            None => {}
        }
        if tally.dropped > 0 {
            self.shared
                .dropped
                .fetch_add(tally.dropped, Ordering::Release);
        }
        if tally.written > 0 {
            self.shared
                .written
                .fetch_add(tally.written, Ordering::Release);
        }
    }

    fn write_batch(&mut self, mut batch: Batch, now: Instant) {
        // From here the sink counts the batch's lines, written or dropped.
        let lines = mem::take(&mut batch.lines);
        let tally = self.sink.write(&batch.buf, lines, now);
        let mut buf = mem::take(&mut batch.buf);
        buf.clear();
        // The shard may be gone or have enough buffers: then it is freed.
        let _ = batch.link.back.try_send(buf);
        // Counted after the buffer went back: whoever sees the count finds
        // the buffer home.
        self.account(tally);
    }

    fn settle(&mut self, all: bool) {
        let tally = self.sink.settle(crate::clock::now(), all);
        self.account(tally);
    }

    fn reopen_if_asked(&mut self) {
        if self.shared.reopen.swap(false, Ordering::AcqRel) {
            // Lines staged so far belong to the old file.
            self.settle(true);
            if let Err(e) = self.sink.reopen() {
                let label = self.label;
                crate::observe::stderr_line(format_args!(
                    "tollgate: access log {label}: reopen: {e}"
                ));
            }
        }
    }
}

fn run_writer(rx: Receiver<Msg>, sink: Box<dyn Sink>, label: &str, shared: &Shared) {
    let mut w = Writer {
        sink,
        label,
        shared,
        failing: false,
    };
    loop {
        // Idle: wait for a message (or the reopen check) ...
        let mut first = match rx.recv_timeout(IDLE_CHECK) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                w.settle(true);
                return;
            }
        };
        // ... then, while batches keep coming, pass over the queue at most
        // every PACE: a writer asleep on a timer is not registered on the
        // channel, so a shard handing a batch over wakes nobody.
        loop {
            w.reopen_if_asked();
            let now = crate::clock::now();
            let mut wrote = false;
            for msg in first.take().into_iter().chain(rx.try_iter()) {
                // Per message: a pass lasts as long as batches keep coming.
                w.reopen_if_asked();
                match msg {
                    Msg::Batch(batch) => {
                        w.write_batch(batch, now);
                        wrote = true;
                    }
                    Msg::Wake => {}
                    Msg::Stop => {
                        // What was queued before Stop (and since) is
                        // written; anything sent after the receiver is gone
                        // counts as dropped at the sender.
                        for msg in rx.try_iter() {
                            if let Msg::Batch(batch) = msg {
                                w.write_batch(batch, now);
                            }
                        }
                        w.settle(true);
                        return;
                    }
                }
            }
            // A pass that wrote nothing: everything staged goes out, back
            // to waiting on the channel.
            if !wrote {
                w.settle(true);
                break;
            }
            w.settle(false);
            std::thread::sleep(PACE);
        }
    }
}

/// One shard's access log buffer; owned by the shard thread. Lines go
/// into a local buffer (no lock, no atomic); [`ShardLog::flush`] hands it
/// to the writer without blocking. Dropping it flushes once more and
/// counts what could not be handed over as dropped.
pub struct ShardLog {
    tx: SyncSender<Msg>,
    link: Arc<Link>,
    /// Emptied buffers coming back from the writer.
    back_rx: Receiver<Vec<u8>>,
    /// Lines not yet handed over.
    cur: Vec<u8>,
    lines: u64,
    /// An empty buffer kept after a hand-over failed.
    spare: Option<Vec<u8>>,
    /// Capacity of a new buffer.
    capacity: usize,
    batch_bytes: usize,
    cap_bytes: usize,
    /// Size at which `line` hands the buffer over: the batch size, or one
    /// more batch after a hand-over failed (the queue was full).
    flush_at: usize,
    /// Drops not yet published to the shared counter.
    dropped: u64,
}

impl std::fmt::Debug for ShardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLog")
            .field("buffered_bytes", &self.cur.len())
            .field("buffered_lines", &self.lines)
            .field("batch_bytes", &self.batch_bytes)
            .field("cap_bytes", &self.cap_bytes)
            .finish_non_exhaustive()
    }
}

impl ShardLog {
    /// Appends one line through `f` (which calls [`Format::render`])
    /// unless the buffer holds its cap already: then the line is counted
    /// as dropped and `f` is not called. Hands the buffer over once it
    /// holds a batch. Never blocks; allocates nothing in steady state.
    pub fn line(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        if self.cur.len() >= self.cap_bytes {
            self.dropped += 1;
            return;
        }
        f(&mut self.cur);
        self.lines += 1;
        if self.cur.len() >= self.flush_at {
            self.flush();
        }
    }

    /// Hands the buffered lines to the writer (at the shard's tick, and by
    /// [`ShardLog::line`] once a batch is full) and publishes the drop
    /// count. If the writer's queue is full the lines stay buffered (up to
    /// the cap) for the next try. Never blocks.
    pub fn flush(&mut self) {
        if self.dropped > 0 {
            self.link
                .shared
                .dropped
                .fetch_add(self.dropped, Ordering::Release);
            self.dropped = 0;
        }
        if self.lines == 0 {
            self.cur.clear();
            return;
        }
        let next = match self.spare.take() {
            Some(buf) => buf,
            None => self
                .back_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.capacity)),
        };
        let batch = Batch {
            buf: mem::replace(&mut self.cur, next),
            lines: mem::take(&mut self.lines),
            link: Arc::clone(&self.link),
        };
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => self.flush_at = self.batch_bytes,
            Err(TrySendError::Full(msg)) => {
                if let Msg::Batch(mut batch) = msg {
                    // Take the lines back; the batch then counts nothing.
                    self.lines = mem::take(&mut batch.lines);
                    let next = mem::replace(&mut self.cur, mem::take(&mut batch.buf));
                    self.spare = Some(next);
                }
                self.flush_at = self.cur.len().saturating_add(self.batch_bytes);
            }
            // The writer has stopped: the batch, dropped here, counted its
            // lines as dropped.
            Err(TrySendError::Disconnected(_)) => self.flush_at = self.batch_bytes,
        }
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        self.flush();
        if self.lines > 0 {
            self.link
                .shared
                .dropped
                .fetch_add(self.lines, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::access_log::test_log_path as temp_path;
    use crate::observe::access_log::Format;
    use std::fs;
    use std::sync::Condvar;
    use std::time::Instant;

    // -- writer ----------------------------------------------------------------

    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        let deadline = crate::clock::now() + Duration::from_secs(5);
        loop {
            if done() {
                return true;
            }
            if crate::clock::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Flushes until everything buffered was handed over.
    fn hand_over(shard: &mut ShardLog) {
        assert!(wait_until(|| {
            shard.flush();
            shard.lines == 0
        }));
    }

    fn read(path: &std::path::Path) -> String {
        fs::read_to_string(path).expect("log file")
    }

    #[test]
    fn writer_types_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<AccessLog>();
        send_sync::<Format>();
        send::<ShardLog>();
    }

    #[test]
    fn lines_arrive_in_order() {
        let path = temp_path("order");
        let log = AccessLog::start(Destination::File(path.clone()), 2).expect("open");
        let mut shards = [
            log.shard_buffer_with_limits(256, 1 << 20),
            log.shard_buffer(),
        ];
        let mut expected = [String::new(), String::new()];
        for i in 0..2000 {
            let s = i % 2;
            shards[s].line(|out| {
                let _ = writeln!(out, "shard {s} line {i}");
            });
            expected[s].push_str(&format!("shard {s} line {i}\n"));
            if i % 300 == 0 {
                shards[s].flush();
            }
        }
        for shard in shards.iter_mut() {
            hand_over(shard);
        }
        drop(shards);
        log.stop();
        assert_eq!(log.written(), 2000);
        assert_eq!(log.dropped(), 0);
        let text = read(&path);
        for (s, want) in expected.iter().enumerate() {
            let got: String = text
                .lines()
                .filter(|l| l.starts_with(&format!("shard {s} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(&got, want, "shard {s} in order");
        }
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn buffers_are_reused() {
        let path = temp_path("reuse");
        let log = AccessLog::start(Destination::File(path.clone()), 2).expect("open");
        let mut shard = log.shard_buffer();
        let mut seen = Vec::new();
        for i in 0..50u64 {
            shard.line(|out| out.extend_from_slice(b"x\n"));
            let ptr = shard.cur.as_ptr() as usize;
            if !seen.contains(&ptr) {
                seen.push(ptr);
            }
            shard.flush();
            assert!(wait_until(|| log.written() == i + 1));
        }
        assert!(seen.len() <= 3, "{} buffers for 50 batches", seen.len());
        drop(shard);
        drop(log);
        let _ = fs::remove_file(&path);
    }

    /// Fails every write while `fail` is set.
    struct FlakySink {
        fail: Arc<AtomicBool>,
    }

    impl Sink for FlakySink {
        fn write(&mut self, _buf: &[u8], lines: u64, _now: Instant) -> Tally {
            if self.fail.load(Ordering::Acquire) {
                Tally::lines(lines, Err(io::Error::other("disk full")))
            } else {
                Tally::lines(lines, Ok(()))
            }
        }

        fn reopen(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_of_a_failed_write_are_dropped_and_counted() {
        let fail = Arc::new(AtomicBool::new(true));
        let log = AccessLog::start_sink(
            Box::new(FlakySink {
                fail: Arc::clone(&fail),
            }),
            "flaky".to_string(),
            4,
        )
        .expect("start");
        let mut shard = log.shard_buffer();
        for _ in 0..10 {
            shard.line(|out| out.extend_from_slice(b"x\n"));
        }
        hand_over(&mut shard);
        assert!(wait_until(|| log.dropped() == 10));
        assert_eq!(log.written(), 0);
        fail.store(false, Ordering::Release);
        for _ in 0..5 {
            shard.line(|out| out.extend_from_slice(b"y\n"));
        }
        hand_over(&mut shard);
        assert!(wait_until(|| log.written() == 5));
        drop(shard);
        log.stop();
        assert_eq!((log.written(), log.dropped()), (5, 10));
    }

    /// Takes 1 ms per write and counts reopens.
    struct SlowSink {
        reopens: Arc<AtomicU64>,
    }

    impl Sink for SlowSink {
        fn write(&mut self, _buf: &[u8], lines: u64, _now: Instant) -> Tally {
            std::thread::sleep(Duration::from_millis(1));
            Tally::lines(lines, Ok(()))
        }

        fn reopen(&mut self) -> io::Result<()> {
            self.reopens.fetch_add(1, Ordering::Release);
            Ok(())
        }
    }

    #[test]
    fn reopen_happens_while_batches_keep_coming() {
        let reopens = Arc::new(AtomicU64::new(0));
        let log = AccessLog::start_sink(
            Box::new(SlowSink {
                reopens: Arc::clone(&reopens),
            }),
            "slow".to_string(),
            2,
        )
        .expect("start");
        let stop = Arc::new(AtomicBool::new(false));
        // A shard handing over one-line batches faster than the sink
        // writes them: the writer's queue never runs dry.
        let producer = std::thread::spawn({
            let log = Arc::clone(&log);
            let stop = Arc::clone(&stop);
            move || {
                let mut shard = log.shard_buffer_with_limits(1, 1024);
                while !stop.load(Ordering::Acquire) {
                    shard.line(|out| out.extend_from_slice(b"x\n"));
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        assert!(wait_until(|| log.written() > 20));
        log.reopen();
        let reopened = wait_until(|| reopens.load(Ordering::Acquire) == 1);
        stop.store(true, Ordering::Release);
        producer.join().expect("producer");
        log.stop();
        assert!(reopened, "no reopen while batches kept coming");
    }

    #[test]
    fn reopen_after_rename_writes_a_new_file() {
        let path = temp_path("rotate");
        let moved = path.with_extension("log.1");
        let moved2 = path.with_extension("log.2");
        let log = AccessLog::start(Destination::File(path.clone()), 4).expect("open");
        let mut shard = log.shard_buffer();

        shard.line(|out| out.extend_from_slice(b"before\n"));
        hand_over(&mut shard);
        assert!(wait_until(|| log.written() == 1));
        fs::rename(&path, &moved).expect("rename");
        log.reopen();
        // An idle writer reopens too: the file comes back without a line.
        assert!(wait_until(|| path.exists()), "reopened while idle");

        shard.line(|out| out.extend_from_slice(b"after\n"));
        hand_over(&mut shard);
        assert!(wait_until(|| log.written() == 2));

        // Reopen requested before a batch: the batch goes to the new file.
        fs::rename(&path, &moved2).expect("rename");
        log.reopen();
        shard.line(|out| out.extend_from_slice(b"third\n"));
        hand_over(&mut shard);
        drop(shard);
        log.stop();

        assert_eq!(read(&moved), "before\n");
        assert_eq!(read(&moved2), "after\n");
        assert_eq!(read(&path), "third\n");
        assert_eq!(log.written(), 3);
        for p in [&path, &moved, &moved2] {
            let _ = fs::remove_file(p);
        }
    }

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        let path = temp_path("cap");
        let log = AccessLog::start(Destination::File(path.clone()), 1).expect("open");
        let mut shard = log.shard_buffer_with_limits(1 << 20, 100);
        let mut calls = 0;
        for i in 0..1000 {
            shard.line(|out| {
                calls += 1;
                let _ = writeln!(out, "{i:016}");
            });
        }
        // 17-byte lines: six fit under 100 bytes, the rest never rendered.
        assert_eq!(calls, 6);
        hand_over(&mut shard);
        assert_eq!(log.dropped(), 994);
        drop(shard);
        log.stop();
        assert_eq!(log.written(), 6);
        assert_eq!(log.written() + log.dropped(), 1000);
        assert_eq!(read(&path).lines().count(), 6);
        let _ = fs::remove_file(&path);
    }

    /// A sink that blocks until its gate opens.
    struct GatedSink {
        gate: Arc<(Mutex<bool>, Condvar)>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Sink for GatedSink {
        fn write(&mut self, buf: &[u8], lines: u64, _now: Instant) -> Tally {
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            while !*open {
                open = cv.wait(open).unwrap_or_else(PoisonError::into_inner);
            }
            self.out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Tally::lines(lines, Ok(()))
        }

        fn reopen(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_never_blocks_the_shard() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = GatedSink {
            gate: Arc::clone(&gate),
            out: Arc::clone(&out),
        };
        let log = AccessLog::start_sink(Box::new(sink), "gated".into(), 1).expect("thread");
        let mut shard = log.shard_buffer_with_limits(64, 256);
        let started = crate::clock::now();
        for i in 0..200 {
            shard.line(|out| {
                let _ = writeln!(out, "line {i:04}");
            });
        }
        shard.flush();
        assert!(
            crate::clock::since(started) < Duration::from_secs(1),
            "shard did not block"
        );
        assert!(log.dropped() > 0, "lines past the cap are dropped");
        assert_eq!(log.written(), 0);

        {
            let (open, cv) = &*gate;
            *open.lock().unwrap_or_else(PoisonError::into_inner) = true;
            cv.notify_all();
        }
        hand_over(&mut shard);
        drop(shard);
        log.stop();
        let written = log.written();
        assert!(written > 0);
        assert_eq!(written + log.dropped(), 200);

        let text = String::from_utf8(out.lock().expect("output").clone()).expect("UTF-8");
        let numbers: Vec<u32> = text
            .lines()
            .map(|l| {
                l.strip_prefix("line ")
                    .and_then(|n| n.parse().ok())
                    .expect("whole line")
            })
            .collect();
        assert_eq!(numbers.len() as u64, written);
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order");
    }

    #[test]
    fn lines_after_stop_or_unflushed_at_drop_are_counted() {
        let path = temp_path("stop");
        let log = AccessLog::start(Destination::File(path.clone()), 2).expect("open");
        let mut kept = log.shard_buffer();
        kept.line(|out| out.extend_from_slice(b"kept at drop\n"));
        drop(kept); // flushes on drop

        let mut shard = log.shard_buffer();
        shard.line(|out| out.extend_from_slice(b"a\n"));
        shard.flush();
        log.stop();
        log.stop(); // idempotent
        assert_eq!(log.written(), 2);

        shard.line(|out| out.extend_from_slice(b"b\n"));
        shard.flush();
        assert_eq!(log.dropped(), 1);
        shard.line(|out| out.extend_from_slice(b"c\n"));
        drop(shard);
        assert_eq!(log.dropped(), 2);
        assert_eq!(read(&path), "kept at drop\na\n");
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn start_reports_open_errors_and_stdout_starts() {
        let bad = temp_path("missing-dir").join("access.log");
        assert!(AccessLog::start(Destination::File(bad), 1).is_err());
        let log = AccessLog::start(Destination::Stdout, 0).expect("stdout");
        log.reopen(); // no-op for stdout
        log.stop();
        assert_eq!(log.written(), 0);
    }
}
