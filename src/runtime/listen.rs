//! Listening sockets: one SO_REUSEPORT socket per shard and listen
//! address, built with socket2 (backlog, TCP_NODELAY inherited by accepted
//! sockets, non-blocking, TCP_DEFER_ACCEPT), or taken over from a
//! predecessor at a binary upgrade; and the open-files limit they need.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Listener;

/// One SO_REUSEPORT socket per shard on `addr` (port 0: every shard binds
/// the port the first one got), each with its bound address.
#[allow(clippy::type_complexity)]
pub(super) fn bind_shards(
    l: &Listener,
    shards: usize,
) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, (SocketAddr, std::io::Error)> {
    let mut addr = l.addr;
    let mut out = Vec::with_capacity(shards);
    for i in 0..shards {
        let sock = bind(addr, l).map_err(|e| (addr, e))?;
        if i == 0 {
            addr = sock.local_addr().map_err(|e| (addr, e))?;
        }
        out.push((addr, sock));
    }
    Ok(out)
}

/// At least one socket per shard on `addr`: the inherited ones, then new
/// SO_REUSEPORT sockets beside them for shards that got none.
#[allow(clippy::type_complexity)]
pub(super) fn inherit_or_bind(
    l: &Listener,
    shards: usize,
    inherited: Vec<std::net::TcpListener>,
) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, (SocketAddr, std::io::Error)> {
    let addr = l.addr;
    if inherited.is_empty() {
        return bind_shards(l, shards);
    }
    let mut out: Vec<(SocketAddr, std::net::TcpListener)> = Vec::new();
    for s in inherited {
        let local = s.local_addr().map_err(|e| (addr, e))?;
        // The predecessor's build or configuration may have set it the
        // other way; a listening socket takes the option at any time.
        set_defer_accept(&s, l.defer_accept).map_err(|e| (local, e))?;
        out.push((local, s));
    }
    let bound = out[0].0;
    while out.len() < shards {
        out.push((bound, bind(bound, l).map_err(|e| (bound, e))?));
    }
    Ok(out)
}

/// Raises the soft open-files limit to the hard limit: every client and
/// backend connection is a descriptor, and the soft default (often 1024)
/// is far below what an edge gateway holds. What the hard limit allows is
/// the operator's decision (LimitNOFILE= in tuning/tollgate.service).
pub(super) fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct at the
    // pointer given, which points at `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A listening socket with SO_REUSEPORT and the configured backlog (glommio's
/// own `bind` hard-codes 1024).
fn bind(addr: SocketAddr, l: &Listener) -> std::io::Result<std::net::TcpListener> {
    let backlog = l.backlog;
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, so
    // responses are never held back by Nagle and no per-connection
    // setsockopt is needed.
    sock.set_nodelay(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Non-blocking, so glommio's speculative accept needs no fcntl calls
    // (vendor/glommio/TOLLGATE-PATCH.md, change 3).
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    let sock: std::net::TcpListener = sock.into();
    if l.defer_accept {
        set_defer_accept(&sock, true)?;
    }
    Ok(sock)
}

/// Accept only once the client's first bytes are in (TCP_DEFER_ACCEPT,
/// NGINX's `listen ... deferred`): the first read of a new connection then
/// finds its request and never waits through the reactor. The value is
/// seconds of waiting for those bytes before the kernel hands the
/// connection over anyway; 0 turns it off.
fn set_defer_accept(sock: &std::net::TcpListener, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = if on { 1 } else { 0 };
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `secs`, which
    // lives across the call; the fd is the socket's own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn deferred_seconds(sock: &std::net::TcpListener) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`, which
        // lives across the call; the fd is the listener's own.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        v
    }

    #[test]
    fn listeners_defer_accept_only_when_configured() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        for defer in [true, false] {
            let l = Listener {
                addr,
                backlog: 16,
                defer_accept: defer,
            };
            let socks = bind_shards(&l, 2).expect("bind");
            assert_eq!(socks.len(), 2);
            assert_eq!(socks[0].0, socks[1].0, "shards share the port");
            for (_, s) in &socks {
                assert_eq!(deferred_seconds(s) > 0, defer, "defer_accept = {defer}");
            }
        }
    }

    #[test]
    fn inherited_listeners_take_the_configured_defer_accept() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        for (before, after) in [(true, false), (false, true)] {
            let old = Listener {
                addr,
                backlog: 16,
                defer_accept: before,
            };
            let inherited: Vec<_> = bind_shards(&old, 1)
                .expect("bind")
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            let new = Listener {
                defer_accept: after,
                ..old
            };
            // Two shards: the inherited socket plus one bound beside it.
            let socks = inherit_or_bind(&new, 2, inherited).expect("inherit");
            assert_eq!(socks.len(), 2);
            for (_, s) in &socks {
                assert_eq!(deferred_seconds(s) > 0, after, "{before} -> {after}");
            }
        }
    }
}
