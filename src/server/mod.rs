//! The socket side of a shard: accept loops, connection drivers, the
//! proxy's I/O, and the shard's drain at shutdown.

pub mod buf;
mod caching;
mod conn;
mod exchange;
mod fill;
mod proxy;
mod respond;
pub mod shard;
pub mod stream;

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::os::unix::io::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::sync::Gate;

pub use caching::{flush_url, FlushUrlError};
pub use conn::ConnError;
pub use shard::Shard;

/// How often a shard checks for shutdown and does housekeeping.
const TICK: Duration = Duration::from_millis(25);
/// How often idle backend connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A reloaded configuration for one shard, left in its [`Mailbox`].
pub struct Swap {
    pub generation: u64,
    pub snapshot: Arc<crate::config::Snapshot>,
    /// New throttle leases (`None`: keep the current ones).
    pub throttle: Option<Option<crate::throttle::sync::ShardThrottle>>,
    /// A new per-client-IP table (`None`: keep the current one).
    #[allow(clippy::type_complexity)]
    pub client_ip: Option<Option<(Arc<crate::throttle::client_ip::ClientIpTable>, Instant)>>,
    /// Listening sockets to start accepting on (new listen addresses).
    pub listen: Vec<(SocketAddr, std::net::TcpListener)>,
    /// Listen addresses to stop accepting on and close.
    pub close: Vec<SocketAddr>,
    /// New access log buffers (`None`: the destinations did not change).
    pub logs: Option<
        Vec<(
            crate::observe::access_log::Destination,
            crate::observe::access_log::ShardLog,
        )>,
    >,
}

/// Where the runtime leaves a shard's [`Swap`]; the shard looks at its
/// tick (one atomic load) and takes it between requests.
#[derive(Default)]
pub struct Mailbox {
    /// Generation of the swap waiting (0: none yet).
    pub posted: AtomicU64,
    pub swap: Mutex<Option<Swap>>,
    /// Generation the shard runs.
    pub applied: AtomicU64,
}

/// The shard's accept loops, by listen address.
struct Acceptors {
    shard: Rc<Shard>,
    gate: Rc<Gate>,
    /// Dropping a task cancels it, which drops (closes) its socket.
    tasks: Vec<(SocketAddr, glommio::Task<()>)>,
}

impl Acceptors {
    fn start(&mut self, addr: SocketAddr, l: std::net::TcpListener) {
        // SAFETY: the fd comes from a bound, listening std listener whose
        // ownership is transferred here with into_raw_fd.
        let listener = unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) };
        let task = glommio::spawn_local(accept_loop(
            self.shard.clone(),
            listener,
            self.gate.clone(),
            addr,
        ));
        self.tasks.push((addr, task));
    }

    /// Stops accepting on `addr` and closes its socket.
    fn close(&mut self, addr: SocketAddr) {
        self.tasks.retain(|(a, _)| *a != addr);
    }

    fn close_all(&mut self) {
        self.tasks.clear();
    }
}

/// Runs one shard: serves `listeners` until `stop` is set, then stops
/// accepting and gives in-flight requests up to `drain` to finish.
/// Reloads arrive through `mailbox`.
pub async fn run_shard(
    shard: Rc<Shard>,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    stop: Arc<AtomicBool>,
    drain: Duration,
    mailbox: Arc<Mailbox>,
) {
    let gate = Rc::new(Gate::new());
    // Take the first throttle leases before the first request.
    shard.throttle_tick();
    let mut acceptors = Acceptors {
        shard: shard.clone(),
        gate: gate.clone(),
        tasks: Vec::new(),
    };
    for (addr, l) in listeners {
        acceptors.start(addr, l);
    }
    let mut last_sweep = crate::clock::now();
    // The tick also carries the throttle's lease exchange.
    let tick = TICK.min(shard.snapshot().sync_interval);
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(tick).await;
        if mailbox.posted.load(Ordering::Acquire) != shard.generation() {
            let swap = mailbox
                .swap
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(mut swap) = swap {
                for addr in std::mem::take(&mut swap.close) {
                    acceptors.close(addr);
                }
                for (addr, l) in std::mem::take(&mut swap.listen) {
                    acceptors.start(addr, l);
                }
                let generation = swap.generation;
                shard.install(swap);
                mailbox.applied.store(generation, Ordering::Release);
            }
        }
        shard.throttle_tick();
        shard.expire_idle(crate::clock::now());
        shard.publish_gauges();
        shard.flush_logs();
        if crate::clock::since(last_sweep) >= SWEEP_EVERY {
            last_sweep = crate::clock::now();
            shard.sweep(last_sweep);
        }
    }
    // Ending the accept tasks closes the listening sockets; the kernel
    // sends new connections to shards (or processes) still listening.
    acceptors.close_all();
    shard.begin_drain();
    // The tick keeps running while in-flight requests finish: it enforces
    // backend deadlines and keeps the Date header current.
    let ticking = async {
        loop {
            glommio::timer::sleep(tick).await;
            shard.throttle_tick();
            shard.expire_idle(crate::clock::now());
            shard.flush_logs();
        }
    };
    let _ = glommio::timer::timeout(drain, async {
        futures_lite::future::or(
            async {
                let _ = gate.close().await;
            },
            ticking,
        )
        .await;
        Ok(())
    })
    .await;
    // Settle the last leases, so the final quota flush counts every
    // request this shard admitted; hand over the last log lines.
    shard.throttle_tick();
    shard.flush_logs();
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, gate: Rc<Gate>, addr: SocketAddr) {
    loop {
        // The peer's address comes with the accept (vendor patch 5: no
        // getpeername per connection).
        match listener.accept_with_peer().await {
            Ok((stream, peer)) => {
                let peer = peer
                    .or_else(|| stream.peer_addr().ok())
                    .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                // The listener's TLS sites in the current snapshot (a
                // reload may have changed them; connections keep theirs).
                let tls = shard.snapshot().tls.for_listener(addr).cloned();
                // Boxed so the task holds a pointer: spawning the future
                // by value lays it out twice in the gate's wrapper task
                // (measured: 2.6 KB instead of 1.3 KB per connection).
                match gate.spawn(Box::pin(conn::serve(shard.clone(), stream, peer, tls))) {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(_) => return,
                }
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    shard.out_of_descriptors("accept", &e);
                }
                // Back off briefly rather than spin on a listening socket
                // that stays readable; a descriptor freed meanwhile (a
                // connection closing, or one reclaimed above) serves the
                // next client.
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
