//! The admin listener's connections: one thread reads every request with
//! non-blocking sockets and `poll(2)`, and hands complete requests to a
//! few worker threads, which answer them.
//!
//! A client that opens connections and sends half a request holds no
//! thread and no worker: at most [`MAX_READING`] connections are being
//! read at once, each gets [`HEAD_DEADLINE`] for its request head (and
//! [`REQUEST_DEADLINE`] for the whole request), and when the table is
//! full the oldest incomplete connection is dropped to make room for a
//! new one — so a scrape, whose request arrives whole at once, is read as
//! soon as it comes, however many slow clients hold connections
//! (`tests/admin.rs` holds 300 half requests while scraping). NGINX does
//! the same with its `client_header_timeout` but refuses new connections
//! once `worker_connections` are taken.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{parse_request, ReadError, Request};

/// Connections read at once; the oldest incomplete one makes room.
pub const MAX_READING: usize = 256;
/// Time a connection gets for its request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// ...and for the whole request, body included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Threads answering complete requests (a reload may take seconds;
/// scrapes on the other workers go on meanwhile).
const WORKERS: usize = 8;
/// Complete requests waiting for a worker; past this a 503 answers.
const QUEUE: usize = 64;
/// How often the loop looks whether it should stop.
const POLL: Duration = Duration::from_millis(100);
/// Pause before accepting again after an accept failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a connection sent: a request, or why it will not be one.
pub type Parsed = Result<Request, ReadError>;

/// A connection whose request is being read.
struct Reading {
    stream: TcpStream,
    buf: Vec<u8>,
    since: Instant,
}

/// Runs the admin listener until `stop` (or `stopping()`) is set:
/// `answer` turns each request into the bytes of its response, on a
/// worker thread.
pub fn run(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    stopping: impl Fn() -> bool,
    answer: Arc<dyn Fn(Parsed) -> Vec<u8> + Send + Sync>,
) {
    let (tx, rx) = sync_channel::<(TcpStream, Parsed)>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..WORKERS)
        .filter_map(|i| {
            let (rx, answer) = (rx.clone(), answer.clone());
            std::thread::Builder::new()
                .name(format!("tollgate-admin-{i}"))
                .spawn(move || work(&rx, &*answer))
                .ok()
        })
        .collect();
    let mut reading: Vec<Reading> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // After an accept failed (out of descriptors): the listener stays
    // readable, so it is left out of the poll for a moment, not spun on.
    let mut accept_after = crate::clock::now();
    while !stop.load(Ordering::Acquire) && !stopping() {
        let now = crate::clock::now();
        reading.retain(|r| now < deadline(r));
        let mut wait = reading
            .iter()
            .map(|r| deadline(r).saturating_duration_since(now))
            .min()
            .unwrap_or(POLL)
            .min(POLL);
        if accept_after > now {
            wait = wait.min(accept_after - now);
        }
        let listen_fd = if now >= accept_after {
            listener.as_raw_fd()
        } else {
            -1
        };
        let mut fds: Vec<libc::pollfd> = std::iter::once(listen_fd)
            .chain(reading.iter().map(|r| r.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = i32::try_from(wait.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: poll(2) on `fds`, a live array of `fds.len()` pollfds;
        // every descriptor belongs to a socket alive in this frame.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            continue;
        }
        // Requests first (they were accepted before the new ones).
        let mut done = Vec::new();
        for (i, pfd) in fds.iter().enumerate().skip(1) {
            if pfd.revents == 0 {
                continue;
            }
            let r = &mut reading[i - 1];
            match read_more(r, &mut chunk) {
                Step::More => {}
                Step::Gone => done.push((i - 1, None)),
                Step::Parsed(p) => done.push((i - 1, Some(p))),
            }
        }
        for (i, parsed) in done.into_iter().rev() {
            let r = reading.remove(i);
            if let Some(p) = parsed {
                dispatch(&tx, r.stream, p);
            }
        }
        if fds[0].revents != 0 && !accept_all(&listener, &mut reading, &tx, &mut chunk) {
            accept_after = crate::clock::now() + ACCEPT_BACKOFF;
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
}

fn deadline(r: &Reading) -> Instant {
    let head_done = memchr::memmem::find(&r.buf, b"\r\n\r\n").is_some();
    r.since
        + if head_done {
            REQUEST_DEADLINE
        } else {
            HEAD_DEADLINE
        }
}

/// Takes every connection waiting in the backlog; a full table drops its
/// oldest incomplete connection for each new one. False when an accept
/// failed (out of descriptors): back off.
fn accept_all(
    listener: &TcpListener,
    reading: &mut Vec<Reading>,
    tx: &SyncSender<(TcpStream, Parsed)>,
    chunk: &mut [u8],
) -> bool {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            // Empty (a successor sharing the socket may have taken it).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let mut r = Reading {
            stream,
            buf: Vec::new(),
            since: crate::clock::now(),
        };
        // Most requests are in with the connection: answer at once.
        match read_more(&mut r, chunk) {
            Step::Parsed(p) => {
                dispatch(tx, r.stream, p);
                continue;
            }
            Step::Gone => continue,
            Step::More => {}
        }
        if reading.len() >= MAX_READING {
            // Oldest first in the table: it has had the longest.
            reading.remove(0);
        }
        reading.push(r);
    }
}

enum Step {
    More,
    Gone,
    Parsed(Parsed),
}

/// Reads what is there and tries to parse the request.
fn read_more(r: &mut Reading, chunk: &mut [u8]) -> Step {
    loop {
        match r.stream.read(chunk) {
            Ok(0) => return Step::Gone,
            Ok(n) => {
                r.buf.extend_from_slice(&chunk[..n]);
                match parse_request(&r.buf) {
                    Ok(Some(req)) => return Step::Parsed(Ok(req)),
                    Ok(None) => {}
                    Err(e) => return Step::Parsed(Err(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::More,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Gone,
        }
    }
}

/// Hands a complete request to a worker; 503 at once if all are busy and
/// the queue is full.
fn dispatch(tx: &SyncSender<(TcpStream, Parsed)>, stream: TcpStream, p: Parsed) {
    match tx.try_send((stream, p)) {
        Ok(()) => {}
        Err(TrySendError::Full((mut stream, p))) => {
            let head_only = matches!(&p, Ok(r) if r.method == "HEAD");
            let _ = stream.write_all(&super::busy(head_only));
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn work(rx: &Mutex<Receiver<(TcpStream, Parsed)>>, answer: &dyn Fn(Parsed) -> Vec<u8>) {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((mut stream, parsed)) = next else {
            return;
        };
        // A panic answering one request must not take the worker away.
        let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(parsed)))
            .unwrap_or_else(|_| super::internal_error());
        if stream.set_nonblocking(false).is_ok() {
            write_within(&mut stream, &bytes, REQUEST_DEADLINE);
        }
    }
}

/// Writes `bytes` unless the client takes longer than `limit` in all to
/// read them (a per-write timeout alone lets a slow reader hold the
/// worker for as long as it keeps taking a byte now and then).
fn write_within(stream: &mut TcpStream, bytes: &[u8], limit: Duration) {
    let deadline = crate::clock::now() + limit;
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(crate::clock::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match stream.write(&rest[..rest.len().min(64 * 1024)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n..],
        }
    }
}
