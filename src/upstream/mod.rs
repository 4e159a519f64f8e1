//! Per-shard backend connection pools.
//!
//! Each shard keeps its own idle keep-alive connections per backend address
//! (no sharing, no locks). A connection goes back to the pool only after its
//! response was read completely and the backend allowed keep-alive; it is
//! reused oldest-idle first (see below) and dropped once idle longer than
//! the configured timeout or beyond `max_idle` per backend.
//!
//! Liveness and stray bytes: before every reuse, a non-blocking
//! `recv(MSG_PEEK)` tells whether the backend closed the idle connection
//! or sent anything while it sat in the pool. Bytes nobody asked for (a
//! surplus response) are never taken as the next request's answer: such a
//! connection is closed, as is one whose response was followed by more
//! bytes in the same read (it is never checked in). The check runs right
//! before the request is written, and connections are reused oldest idle
//! first, so a surplus has had as long as possible to arrive and be seen.
//! (Until issue 18 the check was skipped for retryable requests on
//! connections idle under a second, and one surplus response shifted a
//! pooled connection by one answer for as long as it was reused.) One
//! syscall per pooled request; its cost is in the issue 18 note
//! (`bench/compare.sh` A/B).
//!
//! What no check at this end can see: surplus bytes that arrive after the
//! check — sent just after the answer, while the next request is being
//! written on a busy connection, or held back by a backend's Nagle until
//! that request acknowledges the answer before them. They are
//! indistinguishable from the answer; the real answer then follows and
//! the connection is dropped at its next check, so each surplus costs
//! about one wrong answer and connections heal (`tests/desync.rs`). NGINX,
//! which watches idle connections for bytes the same way, has the same
//! limit.
//!
//! Per-shard pools give up some reuse compared with one shared pool; the
//! reuse ratio is counted in [`PoolStats`] so it can be watched.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use crate::server::buf::ReadBuf;
use crate::server::stream::{BackendStream, Stream};
use crate::tls::BackendTls;

/// Pools are per backend address and TLS settings (0: plain HTTP; see
/// `HttpIntegration::pool_key`).
pub type PoolKey = (SocketAddr, u64);

/// A connection to a backend with its read buffer.
#[derive(Debug)]
pub struct UpConn {
    pub stream: BackendStream,
    pub rbuf: ReadBuf,
    pub key: PoolKey,
    /// True when this connection came from the pool (it served before).
    pub reused: bool,
}

/// Counters for one shard's pools.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Upstream requests sent on a reused connection.
    pub reused: Cell<u64>,
    /// Upstream connections opened.
    pub opened: Cell<u64>,
    /// Connect attempts that failed or timed out.
    pub connect_failures: Cell<u64>,
}

/// Why a backend connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, io::Error),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, io::Error),
}

struct Idle {
    conn: UpConn,
    since: Instant,
}

/// One shard's pools, keyed by backend address.
pub struct Pool {
    /// Per backend, oldest idle first (see [`Pool::checkout`]).
    idle: RefCell<HashMap<PoolKey, VecDeque<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
    pub stats: PoolStats,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
            idle_timeout,
            stats: PoolStats::default(),
        }
    }

    /// An idle connection to `addr` that the backend has neither closed
    /// nor sent anything on since, if the pool has one (see the module
    /// doc); take it right before writing the request.
    pub fn checkout(&self, key: PoolKey, now: Instant) -> Option<UpConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        // Oldest idle first: a connection is reused as late as possible,
        // so bytes a backend sends unasked after an answer (a surplus
        // response) have had the longest time to arrive and be seen by
        // the check below. Under load this left 414 wrong answers per
        // 10 s run instead of 1,048 with newest-first, and none from
        // another request (18 before); NGINX, newest first, 500 and 17
        // (issue 18 note, `bench/compare.sh` for the CPU cost).
        while let Some(entry) = list.pop_front() {
            let idle_for = now.saturating_duration_since(entry.since);
            if idle_for >= self.idle_timeout {
                continue;
            }
            let mut conn = entry.conn;
            if !is_alive(conn.stream.tcp()) {
                continue;
            }
            if !conn.stream.idle_clean() {
                continue;
            }
            conn.reused = true;
            self.stats.reused.set(self.stats.reused.get() + 1);
            return Some(conn);
        }
        None
    }

    /// Returns a connection whose response was fully read.
    pub fn checkin(&self, mut conn: UpConn, now: Instant) {
        if self.max_idle == 0 || !conn.rbuf.is_empty() {
            return;
        }
        conn.rbuf.shrink();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.key).or_default();
        if list.len() >= self.max_idle {
            // Drop the oldest: it is the closest to the backend's own
            // idle timeout.
            list.pop_front();
        }
        list.push_back(Idle { conn, since: now });
    }

    /// Drops idle connections past their timeout or closed by the backend.
    pub fn sweep(&self, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain_mut(|e| {
                now.saturating_duration_since(e.since) < self.idle_timeout
                    && is_alive(e.conn.stream.tcp())
                    && e.conn.stream.idle_clean()
            });
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Number of idle connections held.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(VecDeque::len).sum()
    }

    /// Closes every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    /// Opens a new connection to `key`'s address within `timeout` (TCP
    /// and, for an HTTPS backend, the TLS handshake).
    pub async fn connect(
        &self,
        key: PoolKey,
        tls: Option<&BackendTls>,
        timeout: Duration,
    ) -> Result<UpConn, ConnectError> {
        let addr = key.0;
        let result = glommio::timer::timeout(timeout, async {
            let tcp = TcpStream::connect(addr).await?;
            // Small request heads must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let stream = match tls {
                None => Stream::Plain(tcp),
                Some(t) => {
                    let connector = futures_rustls::TlsConnector::from(t.config.clone());
                    match connector.connect(t.server_name.clone(), tcp).await {
                        Ok(s) => Stream::Tls(Box::new(s)),
                        Err(e) => return Ok(Err(ConnectError::Tls(addr, e))),
                    }
                }
            };
            Ok(Ok(stream))
        })
        .await;
        match result {
            Ok(Ok(stream)) => {
                self.stats.opened.set(self.stats.opened.get() + 1);
                Ok(UpConn {
                    stream,
                    rbuf: ReadBuf::default(),
                    key,
                    reused: false,
                })
            }
            Ok(Err(e)) => {
                self.stats
                    .connect_failures
                    .set(self.stats.connect_failures.get() + 1);
                Err(e)
            }
            Err(glommio::GlommioError::TimedOut(_)) => {
                self.stats
                    .connect_failures
                    .set(self.stats.connect_failures.get() + 1);
                Err(ConnectError::Timeout(addr))
            }
            Err(e) => {
                self.stats
                    .connect_failures
                    .set(self.stats.connect_failures.get() + 1);
                Err(ConnectError::Io(addr, io::Error::from(e)))
            }
        }
    }
}

/// Non-blocking check that an idle connection was not closed by the
/// backend and has no stray bytes (which would desynchronise responses).
fn is_alive(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // glommio's own `peek` waits for data; a non-blocking probe needs the
    // syscall directly.
    // SAFETY: recv writes at most 1 byte into `byte`, a valid 1-byte
    // buffer; the fd belongs to `stream`, which outlives this call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}
