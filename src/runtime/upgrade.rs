//! Zero-downtime binary upgrade: the running process starts its successor
//! with its listening sockets, waits until the successor serves, then
//! drains and exits (NGINX's `USR2` upgrade, in one step).
//!
//! Sockets are handed over rather than bound again beside the old ones:
//! with `SO_REUSEPORT` alone, connections waiting in the accept queue of a
//! socket that closes are reset unless `net.ipv4.tcp_migrate_req` is set.
//! A socket the successor inherited stays open when the old process closes
//! its descriptor, so nothing queued is lost and no new connection is
//! refused: both processes accept from the same sockets until the old
//! one stops.
//!
//! The hand-over is three environment variables read at start:
//! `TOLLGATE_LISTEN_FDS` (`ADDR=FD,FD;ADDR=FD...`, one socket per old
//! shard for each listen address), `TOLLGATE_ADMIN_FD` (the admin
//! listener) and `TOLLGATE_READY_FD` (a pipe the successor writes `ok` to
//! once it listens; the old process drains only then, so a successor that
//! fails to start leaves the old one serving).

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

const LISTEN_FDS: &str = "TOLLGATE_LISTEN_FDS";
const ADMIN_FD: &str = "TOLLGATE_ADMIN_FD";
const READY_FD: &str = "TOLLGATE_READY_FD";

/// Why an upgrade did not happen; the old process keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot create the readiness pipe: {0}")]
    Pipe(std::io::Error),
    #[error("cannot start {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("the gateway is stopping (an upgrade may already have happened)")]
    Stopping,
    #[error("a reload is in progress; try again")]
    Busy,
    #[error("the new process (pid {pid}) exited before it was ready")]
    Exited { pid: u32 },
    #[error("the new process (pid {pid}) was not ready within {secs} s; it was stopped")]
    Timeout { pid: u32, secs: u64 },
}

/// Sockets inherited from a predecessor (empty when started normally).
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
    admin: Option<std::net::TcpListener>,
    ready: Option<OwnedFd>,
}

/// Parses `ADDR=FD,FD;ADDR=FD` into descriptors by address.
fn parse_listen_fds(text: &str) -> Vec<(SocketAddr, Vec<RawFd>)> {
    text.split(';')
        .filter_map(|entry| {
            let (addr, fds) = entry.rsplit_once('=')?;
            let addr = addr.parse().ok()?;
            let fds = fds.split(',').filter_map(|f| f.parse().ok()).collect();
            Some((addr, fds))
        })
        .collect()
}

fn render_listen_fds(listeners: &[(SocketAddr, Vec<RawFd>)]) -> String {
    listeners
        .iter()
        .map(|(a, fds)| {
            let fds: Vec<String> = fds.iter().map(ToString::to_string).collect();
            format!("{a}={}", fds.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Takes ownership of descriptor `fd` named in our environment, if it is
/// open and not one of stdin/stdout/stderr, and makes it close-on-exec
/// again (it was made inheritable for us only).
fn own(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only queries whether `fd` is open.
    let open = fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    if !open {
        return None;
    }
    // SAFETY: setting FD_CLOEXEC on an open descriptor changes nothing
    // but what a later exec inherits.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: the predecessor passed this descriptor to us for this
    // purpose and it is open (checked above); nothing else in this process
    // refers to it: the variables are read and removed once, at start. A
    // descriptor that turns out not to be what was announced is released
    // again without being closed (see `listener`).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening TCP socket bound to `addr`, or nothing. A descriptor that
/// is not one is left open (released, not closed): it may be something
/// the environment variable named by mistake that another part of the
/// process owns.
fn listener(fd: OwnedFd, addr: Option<SocketAddr>) -> Option<std::net::TcpListener> {
    use std::os::fd::IntoRawFd;
    let sock = socket2::Socket::from(fd);
    let local = sock.local_addr().ok().and_then(|a| a.as_socket());
    let listening = sock.is_listener().unwrap_or(false);
    match local {
        Some(local) if listening && addr.is_none_or(|a| a == local) => Some(sock.into()),
        _ => {
            let _ = sock.into_raw_fd();
            None
        }
    }
}

impl Inherited {
    /// Reads (and removes) the hand-over variables.
    pub fn from_env() -> Inherited {
        let mut inh = Inherited::default();
        if let Ok(text) = std::env::var(LISTEN_FDS) {
            for (addr, fds) in parse_listen_fds(&text) {
                let socks = fds
                    .into_iter()
                    .filter_map(own)
                    .filter_map(|fd| listener(fd, Some(addr)))
                    .collect();
                inh.listeners.insert(addr, socks);
            }
        }
        inh.admin = std::env::var(ADMIN_FD)
            .ok()
            .and_then(|v| v.parse().ok())
            .and_then(own)
            .and_then(|fd| listener(fd, None));
        inh.ready = std::env::var(READY_FD)
            .ok()
            .and_then(|v| v.parse().ok())
            .and_then(own);
        // SAFETY: called at start, before any other thread exists that
        // could read the environment concurrently.
        unsafe {
            std::env::remove_var(LISTEN_FDS);
            std::env::remove_var(ADMIN_FD);
            std::env::remove_var(READY_FD);
        }
        inh
    }

    /// The inherited sockets for listen address `configured` (port 0
    /// matches any inherited port on the same IP).
    pub(super) fn take(&mut self, configured: SocketAddr) -> Vec<std::net::TcpListener> {
        let key =
            self.listeners.keys().copied().find(|a| {
                *a == configured || (configured.port() == 0 && a.ip() == configured.ip())
            });
        key.and_then(|k| self.listeners.remove(&k))
            .unwrap_or_default()
    }

    /// The inherited admin listener, if it is bound to `addr`.
    pub fn take_admin(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let l = self.admin.take()?;
        let local = l.local_addr().ok()?;
        (local == addr || (addr.port() == 0 && local.ip() == addr.ip())).then_some(l)
    }

    /// Tells the predecessor this process serves (it then drains).
    pub fn signal_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let mut f = std::fs::File::from(fd);
            let _ = std::io::Write::write_all(&mut f, b"ok\n");
        }
    }

    /// Whether this process was started by a predecessor.
    pub fn is_successor(&self) -> bool {
        self.ready.is_some()
    }
}

/// A successor process started, not yet known to serve.
pub struct Successor {
    child: std::process::Child,
    ready: std::fs::File,
}

/// Starts `exe` with `args`, handing it `listeners` (descriptors per
/// address) and `admin`. The descriptors are duplicated into the child
/// when this returns; [`Successor::wait_ready`] then waits for it.
pub fn spawn_successor(
    exe: &Path,
    args: &[std::ffi::OsString],
    listeners: &[(SocketAddr, Vec<RawFd>)],
    admin: Option<RawFd>,
) -> Result<Successor, UpgradeError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UpgradeError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just created both descriptors; each is owned once.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut pass: Vec<RawFd> = listeners
        .iter()
        .flat_map(|(_, f)| f.iter().copied())
        .collect();
    pass.extend(admin);
    pass.push(write_end.as_raw_fd());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(LISTEN_FDS, render_listen_fds(listeners))
        .env(READY_FD, write_end.as_raw_fd().to_string())
        .env_remove(ADMIN_FD);
    if let Some(a) = admin {
        cmd.env(ADMIN_FD, a.to_string());
    }
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl is one. It clears
    // close-on-exec on exactly the descriptors handed over.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &pass {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| UpgradeError::Spawn {
        exe: exe.display().to_string(),
        source,
    })?;
    // Our copy of the write end must close, so the read sees EOF if the
    // child exits without writing.
    drop(write_end);
    Ok(Successor {
        child,
        ready: std::fs::File::from(read_end),
    })
}

impl Successor {
    /// Waits up to `wait` for the successor to say it serves; returns its
    /// pid. A successor that exits first or is late is stopped (SIGTERM,
    /// so connections it accepted are answered; SIGKILL after 5 s).
    pub fn wait_ready(mut self, wait: Duration) -> Result<u32, UpgradeError> {
        let pid = self.child.id();
        let deadline = crate::clock::now() + wait;
        let mut got = Vec::new();
        loop {
            if got.starts_with(b"ok") {
                // The successor outlives us; its exit status is not ours
                // to collect.
                std::mem::forget(self.child);
                return Ok(pid);
            }
            let left = deadline.saturating_duration_since(crate::clock::now());
            if left.is_zero() {
                self.stop();
                return Err(UpgradeError::Timeout {
                    pid,
                    secs: wait.as_secs(),
                });
            }
            let mut pfd = libc::pollfd {
                fd: self.ready.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: poll(2) on one pollfd that lives on this stack frame.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 16];
            match self.ready.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => {
                    self.stop();
                    return Err(UpgradeError::Exited { pid });
                }
            }
        }
    }

    fn stop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) of our own child, not yet reaped (so the pid is
        // still its).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = crate::clock::now() + Duration::from_secs(5);
        while crate::clock::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_round_trip() {
        let v = vec![
            ("127.0.0.1:8080".parse().expect("addr"), vec![5, 6]),
            ("[::1]:8443".parse().expect("addr"), vec![7]),
        ];
        let text = render_listen_fds(&v);
        assert_eq!(text, "127.0.0.1:8080=5,6;[::1]:8443=7");
        assert_eq!(parse_listen_fds(&text), v);
        assert!(parse_listen_fds("garbage;=;x=1").is_empty());
    }

    #[test]
    fn only_open_listening_sockets_are_taken() {
        // A closed descriptor number and stdio are refused.
        assert!(own(-1).is_none());
        assert!(own(1).is_none());
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let fd = OwnedFd::from(l);
        let back = listener(fd, Some(addr)).expect("listener");
        assert_eq!(back.local_addr().expect("addr"), addr);
        // The wrong address: refused, and left open (released, not closed).
        let fd = OwnedFd::from(back);
        let raw = fd.as_raw_fd();
        assert!(listener(fd, Some("127.0.0.1:1".parse().expect("addr"))).is_none());
        assert!(still_open_then_close(raw));
        // A connected (not listening) socket: refused, left open.
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = std::net::TcpStream::connect(server.local_addr().expect("a")).expect("connect");
        let fd = OwnedFd::from(s);
        let raw = fd.as_raw_fd();
        assert!(listener(fd, None).is_none());
        assert!(still_open_then_close(raw));
    }

    fn still_open_then_close(fd: RawFd) -> bool {
        // SAFETY: fcntl(F_GETFD) only queries; the descriptor was released
        // by `listener` and is owned again here, once.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
        if open {
            // SAFETY: see above.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        open
    }
}
