//! The client connection driver: reads request heads, runs the pipeline
//! for each request in order, and writes responses.
//!
//! Responses to pipelined requests are queued in one write buffer and sent
//! with one write when the driver would otherwise block for more input, so
//! a batch of pipelined requests costs one `send`.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::buf::ReadBuf;
use super::caching::{self, CacheStep};
pub(super) use super::exchange::{Exch, LogScratch};
use super::fill::Capture;
use super::proxy::Refresh;
pub(super) use super::respond::RequestId;
use super::shard::{Buffers, IdleState, Refusal, Shard};
use super::stream::{self, ClientStream, Stream, TlsInfo};
use crate::cache::store::CachedResponse;
use crate::config::Snapshot;
use crate::http::chunked::{Chunk, ChunkedDecoder};
use crate::http::request::{self, HeadError, RequestHead};
use crate::http::response::ResponseHead;
use crate::http::write::{self, LocalResponse};
use crate::http::{BodyKind, HeaderKind, Version};
use crate::integration::Integration;
use crate::observe::counters::Level;
use crate::observe::latency_clock;

/// Largest read while streaming a body.
pub(super) const BODY_CHUNK: usize = 64 * 1024;
/// Responses up to this size are copied into the head's write buffer so
/// head and body leave in one write.
pub(super) const COALESCE_LIMIT: usize = 16 * 1024;
/// After an error that leaves request bytes unread, the connection keeps
/// reading and discarding for at most this long before closing, so the
/// kernel does not answer those bytes with a reset that destroys the error
/// response in flight (NGINX's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(2);
/// ...and at most this many bytes.
const LINGER_BYTES: usize = 1 << 20;
/// How many times (1 ms apart) a request asks again for quota held back
/// by a durable mark being written before it gets a 503.
const MARK_WAITS: u32 = 200;
/// Longest wait to deliver a TLS close_notify when a connection closes.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// Why serving a connection stopped early; the connection just closes.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client i/o: {0}")]
    Io(#[from] io::Error),
    #[error("client timed out")]
    Timeout,
    #[error("client closed the connection mid-request")]
    Closed,
}

/// What the connection does after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// The facts about a request the pipeline needs after its head is consumed.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestInfo {
    pub version: Version,
    pub head_request: bool,
    pub keep_alive: bool,
    pub body: BodyKind,
    pub expect_continue: bool,
    pub idempotent: bool,
    /// A WebSocket upgrade the backend may accept with 101.
    pub upgrade: bool,
}

/// The client address, and as text for X-Forwarded-For.
pub(super) struct PeerIp {
    pub(super) ip: std::net::IpAddr,
    text: [u8; 48],
    len: usize,
}

pub(super) struct Conn {
    pub shard: Rc<Shard>,
    pub stream: ClientStream,
    /// What the TLS handshake established (`None`: plain HTTP).
    pub tls: Option<Box<TlsInfo>>,
    pub rbuf: ReadBuf,
    pub wbuf: BytesMut,
    /// Scratch buffer for upstream request heads and re-encoded bodies.
    pub ubuf: BytesMut,
    head: RequestHead,
    /// Reused for every backend response head.
    pub rhead: ResponseHead,
    pub(super) peer: PeerIp,
    idle: Rc<IdleState>,
    /// Set when closing may leave unread request bytes: close lingering.
    pub linger: bool,
    /// Scratch for cache keys.
    kbuf: Vec<u8>,
    /// A backend response being captured for the cache (boxed: only
    /// cache fills have one, and idle connections stay small).
    pub capture: Option<Box<Capture>>,
    /// An expired cache entry allowed to answer if the backend fails
    /// (`stale_if_error`), while a request is being forwarded.
    pub stale: Option<std::sync::Arc<CachedResponse>>,
    /// A large cached body to write straight from the cache after `wbuf`
    /// (which holds its head), without copying it.
    pub pending: Option<bytes::Bytes>,
    /// An expired entry just served (`stale_while_revalidate`) to refresh
    /// from the backend once the answer is out.
    pub refresh: Option<Box<Refresh>>,
    /// Bytes written to the client so far.
    pub sent: u64,
    /// What the current request did, for metrics and the access log.
    pub exch: Exch,
    /// The request's fields for its access log line (boxed, and only once
    /// a request of a logging stage came: idle connections stay small).
    pub(super) log: Option<Box<LogScratch>>,
}

/// Serves one accepted client connection until it closes; on a TLS
/// listener (`tls`) the handshake comes first.
pub async fn serve(
    shard: Rc<Shard>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
) {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let (stream, tls) = match tls {
        None => (Stream::Plain(tcp), None),
        Some(table) => {
            let wait = shard.snapshot().server.timeouts.client_header;
            // Boxed: the handshake's state would otherwise widen every
            // connection's future, plain ones included.
            match Box::pin(stream::accept(tcp, table, wait)).await {
                Ok((s, info)) => {
                    shard.counters.tls_handshake(info.resumed);
                    (s, Some(info))
                }
                Err(_) => {
                    shard.counters.tls_failed();
                    return;
                }
            }
        }
    };
    let mut text = [0u8; 48];
    let len = {
        let mut cur = io::Cursor::new(&mut text[..]);
        let _ = write!(cur, "{}", peer.ip());
        cur.position() as usize
    };
    let idle = Rc::new(IdleState::new(shard.coarse_now()));
    let slot = shard.register(stream.tcp().as_raw_fd(), idle.clone());
    let mut conn = Conn {
        shard: shard.clone(),
        stream,
        tls,
        rbuf: ReadBuf::empty(),
        wbuf: BytesMut::new(),
        ubuf: BytesMut::new(),
        head: RequestHead::default(),
        rhead: ResponseHead::default(),
        peer: PeerIp {
            ip: peer.ip(),
            text,
            len,
        },
        idle,
        linger: false,
        kbuf: Vec::new(),
        capture: None,
        stale: None,
        pending: None,
        refresh: None,
        sent: 0,
        exch: Exch::new(0, 0, 0),
        log: None,
    };
    let _ = conn.run().await;
    shard.unregister(slot);
}

enum HeadOutcome {
    Ready(usize),
    /// Clean end: EOF or idle timeout between requests, or draining.
    Done,
    Reject(HeadError),
    Timeout,
}

impl Conn {
    async fn run(&mut self) -> Result<(), ConnError> {
        let result = self.serve_requests().await;
        // Whatever happened, try to deliver what is queued.
        let flushed = self.flush().await;
        if self.linger && result.is_ok() && flushed.is_ok() {
            self.linger_close().await;
        } else if self.stream.is_tls() && flushed.is_ok() {
            // Say so before closing (TLS close_notify), so a client can
            // tell a complete response from a truncated one; bounded, a
            // client that reads nothing more does not hold the task.
            let stream = &mut self.stream;
            let _ = glommio::timer::timeout(CLOSE_NOTIFY_WAIT, async {
                stream.shutdown_write().await.map_err(Into::into)
            })
            .await;
        }
        result
    }

    /// Half-closes, then reads and drops what the client still sends,
    /// bounded by [`LINGER_TIME`] and [`LINGER_BYTES`].
    async fn linger_close(&mut self) {
        let deadline = self.shard.coarse_now() + LINGER_TIME;
        // TLS sends close_notify first, which may wait for the client to
        // read: within the linger time too.
        let stream = &mut self.stream;
        let _ = glommio::timer::timeout(LINGER_TIME, async {
            stream.shutdown_write().await.map_err(Into::into)
        })
        .await;
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let n = self.rbuf.len();
            self.rbuf.consume(n);
            let Some(left) = deadline.checked_duration_since(self.shard.coarse_now()) else {
                return;
            };
            match read_into(&mut self.stream, &mut self.rbuf, 4096, BODY_CHUNK, left).await {
                Ok(n) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }

    async fn serve_requests(&mut self) -> Result<(), ConnError> {
        loop {
            let snap = self.shard.snapshot();
            let head_len = match self.read_head(&snap).await? {
                HeadOutcome::Ready(n) => n,
                HeadOutcome::Done => return Ok(()),
                HeadOutcome::Reject(e) => {
                    self.linger = true;
                    self.exch = Exch::new(
                        latency_clock().raw(),
                        self.rbuf.len() as u64,
                        self.produced(),
                    );
                    self.error_response(&snap, e.status());
                    self.finish_exchange(&snap);
                    return Ok(());
                }
                HeadOutcome::Timeout => {
                    self.exch = Exch::new(
                        latency_clock().raw(),
                        self.rbuf.len() as u64,
                        self.produced(),
                    );
                    self.error_response(&snap, 408);
                    self.finish_exchange(&snap);
                    return Ok(());
                }
            };
            let body = match self.head.body {
                BodyKind::Length(n) => n,
                _ => 0,
            };
            self.exch = Exch::new(
                latency_clock().raw(),
                head_len as u64 + body,
                self.produced(),
            );
            // Boxed: the request path's state is large, and keeping it out
            // of the connection's own future keeps idle connections small.
            let next = Box::pin(self.exchange(&snap, head_len)).await;
            match next? {
                Next::KeepAlive if !self.shard.draining() => {
                    // Bound what a burst of pipelined requests can queue.
                    if self.wbuf.len() >= BODY_CHUNK || self.pending.is_some() {
                        self.flush().await?;
                    }
                }
                Next::KeepAlive | Next::Close => return Ok(()),
            }
        }
    }

    /// Reads until a complete request head is buffered.
    async fn read_head(&mut self, snap: &Snapshot) -> Result<HeadOutcome, ConnError> {
        let server = &snap.server;
        let limits = &server.limits;
        let mut started: Option<Instant> = None;
        loop {
            if !self.rbuf.is_empty() {
                match request::parse(
                    self.rbuf.filled_mut(),
                    limits,
                    &server.request_id_header,
                    &mut self.head,
                ) {
                    Ok(Some(n)) => {
                        self.idle.fresh.set(false);
                        return Ok(HeadOutcome::Ready(n));
                    }
                    Ok(None) => {}
                    Err(e) => return Ok(HeadOutcome::Reject(e)),
                }
            }
            self.flush().await?;
            let idle = self.rbuf.is_empty();
            // Draining: an idle keep-alive connection closes; one that has
            // not had its first request yet waits for it (bounded by the
            // drain's grace, see `Shard::begin_drain`).
            if idle && self.shard.draining() && !self.idle.fresh.get() {
                return Ok(HeadOutcome::Done);
            }
            let wait = if idle && self.shard.draining() {
                server.timeouts.keepalive.min(super::shard::FRESH_GRACE)
            } else if idle && self.idle.fresh.get() {
                // A new connection that has sent nothing yet: it has
                // `client_header` for its first request, not a keep-alive
                // timeout (it has had no request to keep alive).
                server.timeouts.client_header
            } else if idle {
                server.timeouts.keepalive
            } else {
                let start = *started.get_or_insert_with(|| self.shard.coarse_now());
                match (server.timeouts.client_header)
                    .checked_sub(self.shard.coarse_now().saturating_duration_since(start))
                {
                    Some(d) if !d.is_zero() => d,
                    _ => return Ok(HeadOutcome::Timeout),
                }
            };
            let max = limits.max_header_bytes + 1024;
            let n = if idle {
                // The shard's tick enforces the keep-alive deadline.
                self.idle.deadline.set(self.shard.coarse_now() + wait);
                self.idle.idle.set(true);
                let n = self.idle_read(max).await;
                self.idle.idle.set(false);
                n
            } else {
                read_into(&mut self.stream, &mut self.rbuf, 1024, max, wait).await
            };
            match n {
                Ok(0) if self.rbuf.is_empty() => return Ok(HeadOutcome::Done),
                Ok(0) => return Err(ConnError::Closed),
                Ok(_) => {
                    // The head's clock starts with its first bytes (the
                    // shard's coarse clock: no clock read per request).
                    if started.is_none() {
                        started = Some(self.shard.coarse_now());
                    }
                }
                Err(ConnError::Timeout) if idle => return Ok(HeadOutcome::Done),
                Err(ConnError::Timeout) => return Ok(HeadOutcome::Timeout),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for the next request on an idle connection without holding
    /// buffers: they go back to the shard while the socket has nothing to
    /// read, and are taken again when it does. No timer: the shard's tick
    /// ends the wait at the keep-alive deadline by shutting the read side.
    async fn idle_read(&mut self, max_total: usize) -> Result<usize, ConnError> {
        use futures_lite::AsyncRead;
        use std::pin::Pin;
        use std::task::Poll;
        futures_lite::future::poll_fn(|cx| {
            self.unpark();
            let spare = self.rbuf.spare(1024, max_total);
            match Pin::new(&mut self.stream).poll_read(cx, spare) {
                Poll::Pending => {
                    self.park();
                    Poll::Pending
                }
                Poll::Ready(Ok(n)) => {
                    self.rbuf.commit(n);
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(ConnError::Io(e))),
            }
        })
        .await
    }

    /// Returns this connection's buffers to the shard (nothing is pending).
    fn park(&mut self) {
        if self.rbuf.capacity() == 0 || !self.rbuf.is_empty() || !self.wbuf.is_empty() {
            return;
        }
        self.shard.give_buffers(Buffers {
            rbuf: std::mem::replace(&mut self.rbuf, ReadBuf::empty()),
            wbuf: std::mem::take(&mut self.wbuf),
            ubuf: std::mem::take(&mut self.ubuf),
            req_headers: std::mem::take(&mut self.head.headers),
            resp_headers: std::mem::take(&mut self.rhead.headers),
        });
    }

    /// Takes buffers from the shard if this connection has none.
    fn unpark(&mut self) {
        if self.rbuf.capacity() != 0 {
            return;
        }
        let b = self.shard.take_buffers();
        self.rbuf = b.rbuf;
        self.wbuf = b.wbuf;
        self.ubuf = b.ubuf;
        self.head.headers = b.req_headers;
        self.rhead.headers = b.resp_headers;
    }

    /// One request: the pipeline, its metrics and log line, then the
    /// refresh of an expired entry it was answered from, if any (in the
    /// request's own boxed future: idle connections do not carry it).
    async fn exchange(&mut self, snap: &Snapshot, head_len: usize) -> Result<Next, ConnError> {
        let next = self.handle(snap, head_len).await;
        self.finish_exchange(snap);
        if let Some(refresh) = self.refresh.take() {
            if matches!(next, Ok(Next::KeepAlive)) {
                // The stale answer goes out first; the connection's next
                // request waits for the refresh (NGINX's background
                // update does the same). A closing connection leaves the
                // refresh to a later request.
                self.flush().await?;
                self.refresh(snap, *refresh).await;
            }
        }
        next
    }

    /// Runs the pipeline for the request whose head is at the buffer front.
    async fn handle(&mut self, snap: &Snapshot, head_len: usize) -> Result<Next, ConnError> {
        let server = &snap.server;
        let buf = self.rbuf.filled();
        let head = &self.head;
        let method = head.method.of(buf);
        let info = RequestInfo {
            version: head.version,
            head_request: method == b"HEAD",
            keep_alive: head.keep_alive && !self.shard.draining(),
            body: head.body,
            expect_continue: head.expect_continue,
            idempotent: head.is_idempotent(buf),
            upgrade: head.websocket_upgrade,
        };
        let rid = self.request_id(snap);

        if let (Some(t), Some(host)) = (&self.tls, head.host) {
            if t.misdirected(crate::http::host_name(host.of(buf))) {
                // Another server's name than the handshake's (RFC 9110
                // §15.5.20): the client may retry on a new connection.
                self.rbuf.consume(head_len);
                self.linger = true;
                self.exch.error = Some(write::error_message(421));
                self.error_with_id(snap, 421, info.version, false, info.head_request, &rid);
                return Ok(Next::Close);
            }
        }

        let mut resolved = snap.resolve_on(
            head.host.map(|h| h.of(buf)),
            method,
            head.path(buf),
            self.tls.is_some(),
        );
        if let Some(r) = &mut resolved {
            // The stage's canary, if it has one, takes its share here: the
            // canary's integration, metric series and (the stage's) access
            // log counter from now on. Guards, keys and plans stay the
            // stage's; canary requests bypass the stage cache (Amazon API
            // Gateway's default, useStageCache = false), so the canary's
            // answers never reach the stage's clients through it. A stage
            // without a canary costs one branch.
            let shard = &self.shard;
            r.pick_canary(snap, self.peer.ip, || shard.random_u64());
            self.exch.metric = r.metric;
            self.exch.canary = r.canary;
            let counter = r.counter();
            if snap
                .route_logs
                .get(counter as usize)
                .is_some_and(Option::is_some)
            {
                self.exch.log = Some(counter);
                let l = self.log.get_or_insert_with(Box::default);
                l.capture(snap, head, buf, &rid);
            }
        }
        if let BodyKind::Length(n) = info.body {
            if n > server.limits.max_body_bytes {
                // Do not read a body we will refuse: answer and close
                // (counted and logged under its route).
                self.rbuf.consume(head_len);
                self.linger = true;
                self.error_with_id(snap, 413, info.version, false, info.head_request, &rid);
                return Ok(Next::Close);
            }
        }
        // A spelling a lenient backend could read as a guarded route the
        // exact match did not pick: a 400, guarded like a request that
        // matched no route (client IP and account limits only).
        let ambiguous = resolved.as_ref().is_some_and(|r| {
            snap.ambiguous(
                r,
                head.host.map(|h| h.of(buf)),
                method,
                head.path(buf),
                self.tls.is_some(),
                &mut self.kbuf,
            )
        });
        let api_key = head.header(HeaderKind::ApiKey).map(|h| h.value.of(buf));
        let guarded = resolved.as_ref().filter(|_| !ambiguous);
        let mut verdict = self
            .shard
            .guard(snap, guarded, api_key, self.peer.ip, false);
        // A quota not used up waits for its next durable mark (an fsync,
        // rare: its reserve covers 100 ms of traffic): asked again every
        // millisecond for a while, refused if the store is slower.
        let mut waited = 0;
        while let Err(r) = &mut verdict {
            if !r.awaiting_mark {
                break;
            }
            if waited == MARK_WAITS {
                // The store is too slow: a 503 (the quota is not used
                // up), counted as a quota refusal.
                self.shard.count_refusal(r.level, guarded.map(|g| g.metric));
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
            waited += 1;
            verdict = self.shard.guard(snap, guarded, api_key, self.peer.ip, true);
        }
        let local = match (verdict, resolved.as_ref().and_then(|r| r.integration())) {
            (Err(refusal), _) if refusal.awaiting_mark => Local::Error(503),
            (Err(refusal), _) => Local::Refused(refusal),
            (Ok(()), _) if ambiguous => Local::Error(400),
            (Ok(()), None) => Local::Error(404),
            (Ok(()), Some(Integration::Mock(m))) => Local::Mock(m),
            (Ok(()), Some(Integration::Http(integ))) => {
                let mut fill = None;
                let shard = self.shard.clone();
                let cached = match resolved.as_ref() {
                    Some(r) if r.stage.cache.is_some() && !r.canary && shard.cache.is_some() => {
                        let ask = caching::Ask {
                            r,
                            head,
                            buf,
                            method,
                            preserve_host: integ.preserve_host,
                            admin_token: snap.server.admin.as_ref().and_then(|a| a.token),
                            https: self.tls.is_some(),
                        };
                        caching::decide(&shard, &ask, info.upgrade, &mut self.kbuf).await
                    }
                    _ => None,
                };
                self.exch.cache = match &cached {
                    Some(CacheStep::Hit(_) | CacheStep::Revalidate(..)) => Some(true),
                    Some(CacheStep::Miss(_)) => Some(false),
                    _ => None,
                };
                let local = match cached {
                    Some(CacheStep::Hit(hit)) => Some(Local::Cached(hit)),
                    Some(CacheStep::Revalidate(hit, f)) => {
                        // Answered now; refreshed once the answer is out.
                        let mut head_out = BytesMut::new();
                        if let Some(r) = resolved.as_ref() {
                            self.upstream_head(&mut head_out, snap, integ, r, info, &rid, true);
                        }
                        self.refresh = Some(Box::new(Refresh::new(f, head_out, integ)));
                        Some(Local::Cached(hit))
                    }
                    Some(CacheStep::Forbidden) => Some(Local::Refused(Refusal {
                        level: Level::Forbidden,
                        retry_after: 1,
                        awaiting_mark: false,
                    })),
                    Some(CacheStep::Miss(f)) => {
                        fill = f;
                        None
                    }
                    Some(CacheStep::Wait(_) | CacheStep::Bypass) | None => None,
                };
                if let Some(local) = local {
                    local
                } else {
                    if let Some(r) = resolved.as_ref() {
                        let strip = fill.as_ref().is_some_and(|f| f.validators.is_some());
                        let mut out = std::mem::take(&mut self.ubuf);
                        out.clear();
                        self.upstream_head(&mut out, snap, integ, r, info, &rid, strip);
                        self.ubuf = out;
                    }
                    self.rbuf.consume(head_len);
                    return self.forward(snap, integ, info, &rid, fill).await;
                }
            }
        };
        self.rbuf.consume(head_len);

        let mut info = info;
        if info.expect_continue && !self.body_buffered(info.body) {
            // The client waits for 100 Continue before sending the body;
            // answer without it and close instead of reading a body we
            // never asked for.
            info.keep_alive = false;
            self.linger = true;
        } else {
            match self.discard_body(snap, info.body).await {
                Ok(()) => {}
                Err(BodyError::Conn(e)) => return Err(e),
                Err(BodyError::Reject(status)) => {
                    self.linger = status != 408;
                    self.error_with_id(snap, status, info.version, false, info.head_request, &rid);
                    return Ok(Next::Close);
                }
            }
        }
        match local {
            Local::Mock(m) => {
                let resp = LocalResponse {
                    status: m.status,
                    headers: &m.headers,
                    body: &m.body,
                };
                self.local_response(snap, &resp, info, &rid);
            }
            Local::Error(status) => self.gateway_error(snap, status, info, info.keep_alive, &rid),
            Local::Cached(hit) => self.serve_cached(snap, &hit, info, &rid),
            Local::Refused(refusal) => {
                let (status, body) = match refusal.level {
                    Level::Forbidden => (403, write::error_body(403)),
                    Level::Quota => (429, write::QUOTA_EXCEEDED_BODY),
                    _ => (429, write::error_body(429)),
                };
                self.exch.error = Some(match refusal.level {
                    Level::Quota => write::QUOTA_EXCEEDED_MESSAGE,
                    _ => write::error_message(status),
                });
                let mut headers = [0u8; 80];
                let headers = if status == 429 {
                    write::retry_after_headers(&mut headers, refusal.retry_after)
                } else {
                    write::error_headers(status)
                };
                let resp = LocalResponse {
                    status,
                    headers,
                    body,
                };
                self.local_response(snap, &resp, info, &rid);
            }
        }
        Ok(if info.keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        })
    }

    /// Writes the upstream request head for the current request (its head
    /// at the front of the read buffer) to route `r`'s integration into
    /// `out`; `strip_validators` leaves the client's `If-None-Match` and
    /// `If-Modified-Since` out (the cache wants the whole answer).
    #[allow(clippy::too_many_arguments)]
    fn upstream_head(
        &self,
        out: &mut BytesMut,
        snap: &Snapshot,
        integ: &crate::integration::HttpIntegration,
        r: &crate::config::Resolved<'_, '_>,
        info: RequestInfo,
        rid: &RequestId,
        strip_validators: bool,
    ) {
        let buf = self.rbuf.filled();
        let head = &self.head;
        integ.write_request_line(
            out,
            head.method.of(buf),
            r.path,
            &r.params,
            head.query.map(|q| q.of(buf)),
        );
        let backend_host = match head.host.map(|h| h.of(buf)) {
            Some(h) if integ.preserve_host => h,
            _ => &integ.host_header,
        };
        let framing = match info.body {
            BodyKind::Length(n) => write::Framing::Length(n),
            BodyKind::Chunked => write::Framing::Chunked,
            BodyKind::None | BodyKind::UntilClose => write::Framing::Empty,
        };
        let tls = self.tls.as_deref();
        let fwd = write::Forwarded {
            backend_host,
            client_ip: &self.peer.text[..self.peer.len],
            proto: if tls.is_some() { b"https" } else { b"http" },
            request_id_header: &snap.server.request_id_header,
            request_id: rid.as_bytes(),
            extra: tls.map_or(&[][..], |t| &t.cert_lines),
            strip: &snap.tls.cert_header_names,
            strip_validators,
        };
        write::forward_request_headers(out, buf, head, &fwd, framing);
    }

    /// The request id: the client's if trusted and sane, else a new one.
    fn request_id(&self, snap: &Snapshot) -> RequestId {
        if snap.server.trust_request_id {
            let buf = self.rbuf.filled();
            if let Some(id) = self
                .head
                .header(HeaderKind::RequestId)
                .and_then(|h| RequestId::from_client(h.value.of(buf)))
            {
                return id;
            }
        }
        RequestId::generated(&self.shard)
    }

    fn body_buffered(&self, body: BodyKind) -> bool {
        match body {
            BodyKind::None => true,
            BodyKind::Length(n) => self.rbuf.len() as u64 >= n,
            BodyKind::Chunked | BodyKind::UntilClose => false,
        }
    }

    /// Reads and drops a request body the gateway answers itself.
    async fn discard_body(&mut self, snap: &Snapshot, body: BodyKind) -> Result<(), BodyError> {
        let t = snap.server.timeouts.client_body;
        match body {
            BodyKind::None | BodyKind::UntilClose => Ok(()),
            BodyKind::Length(mut remaining) => loop {
                let take = (self.rbuf.len() as u64).min(remaining);
                self.rbuf.consume(take as usize);
                remaining -= take;
                if remaining == 0 {
                    return Ok(());
                }
                self.read_body(t).await?;
            },
            BodyKind::Chunked => {
                let mut dec = ChunkedDecoder::new();
                loop {
                    let (n, chunk) = dec
                        .decode(self.rbuf.filled())
                        .map_err(|_| BodyError::Reject(400))?;
                    self.rbuf.consume(n);
                    if dec.data_len > snap.server.limits.max_body_bytes {
                        return Err(BodyError::Reject(413));
                    }
                    match chunk {
                        Some(Chunk::End) => return Ok(()),
                        Some(Chunk::Data(_)) => continue,
                        None => self.read_body(t).await?,
                    }
                }
            }
        }
    }

    /// Reads more request body bytes into the read buffer.
    pub(super) async fn read_body(&mut self, wait: Duration) -> Result<(), BodyError> {
        self.flush().await.map_err(BodyError::Conn)?;
        match read_into(&mut self.stream, &mut self.rbuf, 4096, BODY_CHUNK, wait).await {
            Ok(0) => Err(BodyError::Conn(ConnError::Closed)),
            Ok(_) => Ok(()),
            Err(ConnError::Timeout) => Err(BodyError::Reject(408)),
            Err(e) => Err(BodyError::Conn(e)),
        }
    }

    /// Sends everything queued in the write buffer.
    pub(super) async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.sent += self.wbuf.len() as u64 + self.pending.as_ref().map_or(0, |p| p.len() as u64);
        let wait = self.shard.snapshot().server.timeouts.client_send;
        let result = write_all(&mut self.stream, &self.wbuf, wait).await;
        self.wbuf.clear();
        result?;
        match self.pending.take() {
            Some(body) => write_all(&mut self.stream, &body, wait).await,
            None => Ok(()),
        }
    }
}

enum Local<'a> {
    Mock(&'a crate::integration::MockIntegration),
    /// A cache hit.
    Cached(caching::Hit),
    Error(u16),
    /// Refused by a guard: 403, or 429 (quota: `Limit Exceeded`).
    Refused(Refusal),
}

/// A request body could not be read.
#[derive(Debug)]
pub(super) enum BodyError {
    /// Answer with this status and close.
    Reject(u16),
    Conn(ConnError),
}

/// Reads once into `buf` within `wait`.
pub(super) async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut ReadBuf,
    min: usize,
    max_total: usize,
    wait: Duration,
) -> Result<usize, ConnError> {
    let spare = buf.spare(min, max_total);
    if spare.is_empty() {
        return Err(ConnError::Io(io::Error::other("read buffer full")));
    }
    let mut read = stream.read(spare);
    // Bytes already waiting: no timer needed.
    if let Some(r) = futures_lite::future::poll_once(&mut read).await {
        let n = r?;
        buf.commit(n);
        return Ok(n);
    }
    match glommio::timer::timeout(wait, async { read.await.map_err(Into::into) }).await {
        Ok(n) => {
            buf.commit(n);
            Ok(n)
        }
        Err(glommio::GlommioError::TimedOut(_)) => Err(ConnError::Timeout),
        Err(e) => Err(ConnError::Io(e.into())),
    }
}

/// Writes all of `data` within `wait` (and flushes: a TLS stream may
/// hold encrypted bytes back otherwise).
pub(super) async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    wait: Duration,
) -> Result<(), ConnError> {
    let write = async {
        stream.write_all(data).await?;
        stream.flush().await
    };
    futures_lite::pin!(write);
    // The socket buffer usually takes it all at once: no timer needed.
    if let Some(r) = futures_lite::future::poll_once(&mut write).await {
        return r.map_err(ConnError::Io);
    }
    match glommio::timer::timeout(wait, async { write.await.map_err(Into::into) }).await {
        Ok(()) => Ok(()),
        Err(glommio::GlommioError::TimedOut(_)) => Err(ConnError::Timeout),
        Err(e) => Err(ConnError::Io(e.into())),
    }
}
