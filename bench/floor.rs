//! The kernel floor for a keep-alive HTTP answer: a reference server for
//! `bench/compare.sh`, not part of tollgate.
//!
//! It does the least a server can do per request on Linux sockets: epoll
//! (level-triggered) says a connection is readable, one `recv`, a count of
//! the complete request heads (`\r\n\r\n`) received, one `send` of a fixed
//! answer per head. No parsing, no routing, no clock, no allocation per
//! request. Its CPU per request is what the kernel's loopback TCP costs
//! (the receive, the send and the client's receive processing, which the
//! sender's context runs on loopback) plus a few hundred instructions: no
//! proxy can answer for less with one `recv` and one `send` per request.
//! A variant that queued every `recv` and `send` on an io_uring and
//! submitted them in batches measured the same (5.5–6.1 vs 5.6 µs a
//! request, schedstat): batching saves syscall entries, not TCP work.
//!
//! The answer has the size and headers of tollgate's cache hit in the
//! benchmark (236 bytes: `hello world\n` with date, server, content-type,
//! cache-control, age, request id and length), so the two compare like
//! for like.
//!
//! Run: `cargo run --release --example floor -- 127.0.0.1:18086`
//! (pin it with `taskset` as the benchmark does).
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n\
date: Tue, 01 Dec 2026 17:11:13 GMT\r\n\
Server: nginx/1.22.1\r\n\
Content-Type: text/plain\r\n\
Cache-Control: public, max-age=86400\r\n\
age: 84\r\n\
x-request-id: ab5df1c0-eb78-4ce2-b06a-237877857efd\r\n\
content-length: 12\r\n\
\r\n\
hello world\n";

/// Bytes a connection may hold of an unfinished request head.
const MAX_HEAD: usize = 16 * 1024;

/// One connection: its unfinished head bytes and unsent answer bytes.
#[derive(Default)]
struct Conn {
    head: Vec<u8>,
    out: Vec<u8>,
    open: bool,
    /// Watching for EPOLLOUT (the socket was full) instead of EPOLLIN.
    waiting_out: bool,
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18086".to_string())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("address: {e}")))?;
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: plain syscall; the result is checked.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    watch(ep, lfd, libc::EPOLLIN as u32)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `events` is a valid buffer of the given length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter().take(n as usize) {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                accept_all(ep, lfd, &mut conns);
                continue;
            }
            let Some(c) = conns.get_mut(fd as usize) else {
                continue;
            };
            let ok = if ev.events & libc::EPOLLOUT as u32 != 0 {
                flush(ep, fd, c)
            } else {
                serve(ep, fd, c, &mut buf)
            };
            if !ok && c.open {
                c.head.clear();
                c.out.clear();
                c.open = false;
                c.waiting_out = false;
                // SAFETY: `fd` is an open socket this loop accepted.
                unsafe { libc::close(fd) };
            }
        }
    }
}

fn check(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Adds `fd` to the epoll set (`op` EPOLL_CTL_ADD) or changes its events
/// (EPOLL_CTL_MOD).
fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `ev` lives across the call; the result is checked.
    check(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(drop)
}

fn watch(ep: RawFd, fd: RawFd, events: u32) -> io::Result<()> {
    ctl(ep, libc::EPOLL_CTL_ADD, fd, events)
}

fn rewatch(ep: RawFd, fd: RawFd, events: u32) -> bool {
    ctl(ep, libc::EPOLL_CTL_MOD, fd, events).is_ok()
}

fn accept_all(ep: RawFd, lfd: RawFd, conns: &mut Vec<Conn>) {
    loop {
        // SAFETY: null address pointers are allowed (peer not wanted).
        let fd = unsafe {
            libc::accept4(
                lfd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        let one: libc::c_int = 1;
        // SAFETY: `one` outlives the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let i = fd as usize;
        if conns.len() <= i {
            conns.resize_with(i + 1, Conn::default);
        }
        if watch(ep, fd, libc::EPOLLIN as u32).is_err() {
            // SAFETY: `fd` was just accepted.
            unsafe { libc::close(fd) };
            continue;
        }
        if let Some(c) = conns.get_mut(i) {
            c.open = true;
        }
    }
}

/// One `recv`, then one `send` of an answer per complete head. False: the
/// connection is done (closed by the client, an error, a head too long).
fn serve(ep: RawFd, fd: RawFd, c: &mut Conn, buf: &mut [u8]) -> bool {
    if !c.open {
        return false;
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 0 {
        return false;
    }
    if n < 0 {
        return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
    }
    let got = buf.get(..n as usize).unwrap_or_default();
    // Heads end in "\r\n\r\n"; bytes after the last end wait for more.
    // The usual case (nothing left over, one head) copies nothing.
    let answers = if c.head.is_empty() {
        let (answers, used) = heads(got);
        c.head
            .extend_from_slice(got.get(used..).unwrap_or_default());
        answers
    } else {
        c.head.extend_from_slice(got);
        let (answers, used) = heads(&c.head);
        c.head.drain(..used);
        answers
    };
    if c.head.len() > MAX_HEAD {
        return false;
    }
    if answers == 1 && c.out.is_empty() {
        // SAFETY: `ANSWER` is valid for its length.
        let n = unsafe { libc::send(fd, ANSWER.as_ptr().cast(), ANSWER.len(), libc::MSG_NOSIGNAL) };
        if n == ANSWER.len() as isize {
            return true;
        }
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
            return false;
        }
        c.out
            .extend_from_slice(ANSWER.get(n.max(0) as usize..).unwrap_or_default());
        return flush(ep, fd, c);
    }
    for _ in 0..answers {
        c.out.extend_from_slice(ANSWER);
    }
    flush(ep, fd, c)
}

/// The number of complete heads in `b` and the bytes they span.
fn heads(b: &[u8]) -> (usize, usize) {
    let (mut n, mut used) = (0, 0);
    while let Some(at) = b
        .get(used..)
        .and_then(|rest| rest.windows(4).position(|w| w == b"\r\n\r\n"))
    {
        n += 1;
        used += at + 4;
    }
    (n, used)
}

/// Sends what is queued; waits for EPOLLOUT while the socket is full.
fn flush(ep: RawFd, fd: RawFd, c: &mut Conn) -> bool {
    while !c.out.is_empty() {
        // SAFETY: `c.out` is valid for its length.
        let n = unsafe { libc::send(fd, c.out.as_ptr().cast(), c.out.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                return false;
            }
            if !c.waiting_out {
                c.waiting_out = true;
                return rewatch(ep, fd, libc::EPOLLOUT as u32);
            }
            return true;
        }
        c.out.drain(..n as usize);
    }
    if std::mem::take(&mut c.waiting_out) {
        return rewatch(ep, fd, libc::EPOLLIN as u32);
    }
    true
}
