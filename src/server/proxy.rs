//! The `http` integration's I/O: send the request to a pooled backend
//! connection, relay the response back.
//!
//! Failure handling (what the client sees):
//! * connect refused or reset, malformed response head: 502;
//! * connect timeout or no response head within the integration timeout: 504;
//! * a reused connection that fails before any response byte, for an
//!   idempotent request whose body was fully buffered: retried once on a
//!   fresh connection (the backend may have closed it while idle);
//! * a backend that stops mid-body: the client's response is cut short and
//!   its connection closed, never left hanging;
//! * a backend that answers before the request body is all sent: its answer
//!   is relayed, the connection closes after it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::buf::ReadBuf;
use super::caching;
use super::conn::{
    read_into, write_all, BodyError, Conn, ConnError, Next, RequestId, RequestInfo, BODY_CHUNK,
    COALESCE_LIMIT,
};
use super::fill::{self, Capture, Fill};
use super::shard::Shard;
use crate::config::Snapshot;
use crate::http::chunked::{write_chunk_size, Chunk, ChunkedDecoder};
use crate::http::response::{self, ResponseHead};
use crate::http::write::{self, Framing};
use crate::http::{BodyKind, Version};
use crate::integration::HttpIntegration;
use crate::tls::BackendTls;
use crate::upstream::{ConnectError, UpConn};

/// What is left of the request body after the buffered part.
enum ReqBody {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Failure while sending the request body.
enum SendError {
    Client(BodyError),
    Upstream,
    /// The backend answered before the whole body was sent (e.g. a 401 or
    /// 413 for an upload): relay its answer, then close the client.
    EarlyResponse,
}

/// Failure while waiting for the response head.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The backend closed or reset before sending a byte.
    NothingReceived,
    Timeout,
    Bad,
}

/// Failure while relaying a response body.
enum RelayError {
    Client(ConnError),
    Upstream,
}

/// A refresh of an expired entry that was just served
/// (`stale_while_revalidate`): the upstream request and where it goes.
pub(super) struct Refresh {
    fill: Fill,
    /// The upstream request head (the client's GET, validators left out).
    head: BytesMut,
    addr: SocketAddr,
    pool_key: u64,
    tls: Option<Arc<BackendTls>>,
    timeout: Duration,
}

impl Refresh {
    pub(super) fn new(fill: Fill, head: BytesMut, integ: &HttpIntegration) -> Refresh {
        Refresh {
            fill,
            head,
            addr: integ.addr,
            pool_key: integ.pool_key,
            tls: integ.tls.clone(),
            timeout: integ.timeout,
        }
    }
}

impl Conn {
    /// Proxies the current request; its upstream head is in `self.ubuf`
    /// and its client head has been consumed from the read buffer.
    pub(super) async fn forward(
        &mut self,
        snap: &Snapshot,
        integ: &HttpIntegration,
        info: RequestInfo,
        rid: &RequestId,
        mut fill: Option<Fill>,
    ) -> Result<Next, ConnError> {
        self.stale = fill.as_mut().and_then(|f| f.stale.take());
        let validators = fill.as_mut().and_then(|f| f.validators.take());
        if let Some(f) = fill.as_mut() {
            // Failed until a response head says otherwise (see below).
            f.failed = true;
        }
        let max_body = snap.server.limits.max_body_bytes;
        let body = match info.body {
            BodyKind::None | BodyKind::UntilClose => ReqBody::Done,
            BodyKind::Length(n) => {
                let take = (self.rbuf.len() as u64).min(n) as usize;
                self.ubuf.extend_from_slice(&self.rbuf.filled()[..take]);
                self.rbuf.consume(take);
                if n == take as u64 {
                    ReqBody::Done
                } else {
                    ReqBody::Length(n - take as u64)
                }
            }
            BodyKind::Chunked => {
                let mut dec = ChunkedDecoder::new();
                match encode_chunks(&mut dec, &mut self.rbuf, &mut self.ubuf, max_body) {
                    Ok(true) => ReqBody::Done,
                    Ok(false) => ReqBody::Chunked(dec),
                    Err(status) => return Ok(self.fail(snap, status, info, false, rid)),
                }
            }
        };
        let complete = matches!(body, ReqBody::Done);
        let retryable = complete && info.idempotent;
        let shard = self.shard.clone();
        let pool = &shard.pool;
        let mut body = Some(body);
        let mut retried = false;
        // Set when the backend answered before the request body was all
        // sent: the rest of the body is not read, so the client connection
        // closes after the response and the backend connection is dropped.
        let mut body_cut = false;

        let clock = crate::observe::latency_clock();
        let integration_start = clock.raw();
        let mut up = loop {
            // A retry always goes to a fresh connection: another pooled one
            // may be just as stale.
            let pooled = if retried {
                None
            } else {
                pool.checkout((integ.addr, integ.pool_key), shard.coarse_now())
            };
            let mut up = match pooled {
                Some(c) => c,
                None => match pool
                    .connect(
                        (integ.addr, integ.pool_key),
                        integ.tls.as_deref(),
                        snap.server.timeouts.backend_connect,
                    )
                    .await
                {
                    Ok(c) => c,
                    Err(ConnectError::Timeout(_)) => {
                        return Ok(self.fail(snap, 504, info, complete, rid))
                    }
                    Err(ConnectError::Io(_, e))
                        if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
                    {
                        // Freed for the next requests; this one gets 502.
                        self.shard.out_of_descriptors("backend connect", &e);
                        return Ok(self.fail(snap, 502, info, complete, rid));
                    }
                    Err(ConnectError::Io(..) | ConnectError::Tls(..)) => {
                        return Ok(self.fail(snap, 502, info, complete, rid))
                    }
                },
            };
            let reused = up.reused;
            if write_all(&mut up.stream, &self.ubuf, integ.timeout)
                .await
                .is_err()
            {
                if reused && retryable && !retried {
                    retried = true;
                    continue;
                }
                return Ok(self.fail(snap, 502, info, complete, rid));
            }
            if let Some(rest) = body.take() {
                if !matches!(rest, ReqBody::Done) {
                    if info.expect_continue {
                        self.wbuf
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    match self.send_body(&mut up, rest, snap, integ.timeout).await {
                        Ok(()) => {}
                        Err(SendError::Client(BodyError::Conn(e))) => return Err(e),
                        Err(SendError::Client(BodyError::Reject(status))) => {
                            return Ok(self.fail(snap, status, info, false, rid))
                        }
                        Err(SendError::Upstream) => {
                            return Ok(self.fail(snap, 502, info, false, rid))
                        }
                        Err(SendError::EarlyResponse) => body_cut = true,
                    }
                }
            }
            // Responses queued for earlier pipelined requests go out now,
            // not after this backend answers.
            self.flush().await?;
            // The integration timeout covers the backend's work, which
            // starts once the whole request has been sent.
            let deadline = self.shard.coarse_now() + integ.timeout;
            match read_response_head(&shard, &mut up, &mut self.rhead, snap, info, deadline).await {
                Ok(()) => {
                    let took = clock.delta(integration_start, clock.raw());
                    self.exch.integration = Some((took, self.rhead.status));
                    break up;
                }
                Err(HeadError::NothingReceived) if reused && retryable && !retried => {
                    retried = true;
                    body = Some(ReqBody::Done);
                    continue;
                }
                Err(HeadError::Timeout) => return Ok(self.fail(snap, 504, info, true, rid)),
                Err(_) => return Ok(self.fail(snap, 502, info, true, rid)),
            }
        };

        if let Some(f) = fill.as_mut() {
            f.failed = self.rhead.status >= 500;
        }
        // stale_if_error also covers the backend's own 5xx: the expired
        // entry answers, and this backend connection (its error body
        // unread) is dropped.
        if let Some(entry) = self.stale.take() {
            if matches!(self.rhead.status, 500 | 502 | 503 | 504) {
                drop(up);
                let keep_alive = info.keep_alive && !body_cut && !self.shard.draining();
                self.linger |= body_cut;
                let info = RequestInfo { keep_alive, ..info };
                self.serve_cached(snap, &caching::Hit::new(entry, false), info, rid);
                return Ok(if keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                });
            }
        }
        if self.rhead.status == 101 {
            // Nothing to store; release the key at once.
            drop(fill.take());
            let meta = write::ResponseMeta {
                client: info.version,
                keep_alive: false,
                request_id_header: &snap.server.request_id_header,
                request_id: rid.as_bytes(),
            };
            self.exch.status = 101;
            write::switching_protocols_head(&mut self.wbuf, up.rbuf.filled(), &self.rhead, &meta);
            up.rbuf.consume(self.rhead.head_len);
            self.tunnel(&mut up, snap.server.timeouts.tunnel_idle)
                .await?;
            return Ok(Next::Close);
        }
        let shard_cache = shard.cache.clone();
        self.capture = match (fill, &shard_cache) {
            (Some(f), Some(c)) => fill::start(f, up.rbuf.filled(), &self.rhead, c.max_entry),
            _ => None,
        };
        if self.capture.is_some()
            && validators.is_some_and(|v| v.not_modified(up.rbuf.filled(), &self.rhead))
        {
            // A conditional GET whose validators the cache kept back: the
            // client's copy is current, so it gets a 304 while the whole
            // answer goes to the cache (an answer the cache may not store
            // is relayed as the 200 it is, `Set-Cookie` and all).
            let keep_alive = info.keep_alive && !self.shard.draining() && !body_cut;
            self.linger |= body_cut;
            let info = RequestInfo { keep_alive, ..info };
            let mut block = std::mem::take(&mut self.ubuf);
            block.clear();
            caching::not_modified_fields(&mut block, up.rbuf.filled(), &self.rhead);
            let resp = write::LocalResponse {
                status: 304,
                headers: &block,
                body: &[],
            };
            self.local_response(snap, &resp, info, rid);
            self.ubuf = block;
            up.rbuf.consume(self.rhead.head_len);
            let (body, pool_ok) = (self.rhead.body, self.rhead.keep_alive);
            // The body first, then the client: the claim is not held
            // while a slow client reads.
            if let (Some(c), Some(cache)) = (self.capture.take(), shard_cache.as_ref()) {
                if let Some(c) = capture_body(&shard, &mut up, body, c, integ.timeout).await {
                    c.finish(cache);
                    if pool_ok && up.rbuf.is_empty() && !body_cut {
                        pool.checkin(up, shard.coarse_now());
                    }
                }
            }
            return Ok(if keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            });
        }
        let framing = write::response_framing(&self.rhead, info.version, info.head_request);
        // Draining may have begun while the backend worked: tell the client.
        let keep_alive =
            info.keep_alive && framing != Framing::Close && !self.shard.draining() && !body_cut;
        self.linger |= body_cut;
        let meta = write::ResponseMeta {
            client: info.version,
            keep_alive,
            request_id_header: &snap.server.request_id_header,
            request_id: rid.as_bytes(),
        };
        self.exch.status = self.rhead.status;
        write::proxied_response_head(
            &mut self.wbuf,
            up.rbuf.filled(),
            &self.rhead,
            framing,
            &meta,
        );
        up.rbuf.consume(self.rhead.head_len);
        let relayed = match self.rhead.body {
            BodyKind::None => {
                self.complete_capture();
                Ok(())
            }
            BodyKind::Length(n) => self.relay_length(&mut up, n, integ.timeout).await,
            BodyKind::Chunked => self.relay_chunked(&mut up, framing, integ.timeout).await,
            BodyKind::UntilClose => {
                self.relay_until_close(&mut up, framing, integ.timeout)
                    .await
            }
        };
        // Relays store a complete capture as soon as the backend's last
        // byte is in; what is left here was cut short.
        self.capture = None;
        match relayed {
            Ok(()) => {
                if self.rhead.keep_alive && up.rbuf.is_empty() && !body_cut {
                    pool.checkin(up, shard.coarse_now());
                }
                Ok(if keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                })
            }
            Err(RelayError::Client(e)) => Err(e),
            // The head is out: cut the response short by closing.
            Err(RelayError::Upstream) => Ok(Next::Close),
        }
    }

    /// Refreshes an expired entry this connection just served: fetches it
    /// and stores the answer if it may be stored. A failure leaves the
    /// entry as it was (and its claim released); nothing reaches the client.
    pub(super) async fn refresh(&mut self, snap: &Snapshot, mut r: Refresh) {
        if self.shard.draining() || !r.fill.claim() {
            return;
        }
        r.fill.failed = true;
        let shard = self.shard.clone();
        let Some(cache) = shard.cache.clone() else {
            return;
        };
        let pool = &shard.pool;
        let target = (r.addr, r.pool_key);
        let info = RequestInfo {
            version: Version::Http11,
            head_request: false,
            keep_alive: true,
            body: BodyKind::None,
            expect_continue: false,
            idempotent: true,
            upgrade: false,
        };
        let mut retried = false;
        let mut up = loop {
            let pooled = if retried {
                None
            } else {
                pool.checkout(target, shard.coarse_now())
            };
            let mut up = match pooled {
                Some(c) => c,
                None => {
                    let connect = pool.connect(
                        target,
                        r.tls.as_deref(),
                        snap.server.timeouts.backend_connect,
                    );
                    match connect.await {
                        Ok(c) => c,
                        Err(_) => return,
                    }
                }
            };
            // A pooled connection the backend closed while idle: once more
            // on a fresh one, as for a client's idempotent request.
            let retry = up.reused && !retried;
            if write_all(&mut up.stream, &r.head, r.timeout).await.is_err() {
                if retry {
                    retried = true;
                    continue;
                }
                return;
            }
            let deadline = shard.coarse_now() + r.timeout;
            match read_response_head(&shard, &mut up, &mut self.rhead, snap, info, deadline).await {
                Ok(()) => break up,
                Err(HeadError::NothingReceived) if retry => retried = true,
                Err(_) => return,
            }
        };
        r.fill.failed = self.rhead.status >= 500;
        let Some(capture) = fill::start(r.fill, up.rbuf.filled(), &self.rhead, cache.max_entry)
        else {
            return;
        };
        up.rbuf.consume(self.rhead.head_len);
        let (body, pool_ok) = (self.rhead.body, self.rhead.keep_alive);
        if let Some(c) = capture_body(&shard, &mut up, body, capture, r.timeout).await {
            c.finish(&cache);
            if pool_ok && up.rbuf.is_empty() {
                pool.checkin(up, shard.coarse_now());
            }
        }
    }

    /// Queues a gateway error; the connection stays open only if the whole
    /// request was read (`request_done`) and the client wants keep-alive.
    fn fail(
        &mut self,
        snap: &Snapshot,
        status: u16,
        info: RequestInfo,
        request_done: bool,
        rid: &RequestId,
    ) -> Next {
        let keep_alive = info.keep_alive && request_done;
        self.linger |= !request_done;
        match self.stale.take() {
            // stale_if_error: an expired entry answers for an unreachable
            // or timed-out backend.
            Some(entry) if matches!(status, 502 | 504) => {
                let info = RequestInfo { keep_alive, ..info };
                self.serve_cached(snap, &caching::Hit::new(entry, false), info, rid);
            }
            _ => self.gateway_error(snap, status, info, keep_alive, rid),
        }
        if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Streams the rest of the request body from the client to the backend.
    async fn send_body(
        &mut self,
        up: &mut UpConn,
        mut body: ReqBody,
        snap: &Snapshot,
        wait: Duration,
    ) -> Result<(), SendError> {
        let client_wait = snap.server.timeouts.client_body;
        let max_body = snap.server.limits.max_body_bytes;
        loop {
            match &mut body {
                ReqBody::Done => return Ok(()),
                ReqBody::Length(remaining) => {
                    if self.rbuf.is_empty() {
                        self.read_body_or_response(up, client_wait).await?;
                    }
                    let take = (self.rbuf.len() as u64).min(*remaining) as usize;
                    if write_all(&mut up.stream, &self.rbuf.filled()[..take], wait)
                        .await
                        .is_err()
                    {
                        return Err(backend_spoke(up).await);
                    }
                    self.rbuf.consume(take);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        body = ReqBody::Done;
                    }
                }
                ReqBody::Chunked(dec) => {
                    self.ubuf.clear();
                    let done = encode_chunks(dec, &mut self.rbuf, &mut self.ubuf, max_body)
                        .map_err(|s| SendError::Client(BodyError::Reject(s)))?;
                    if !self.ubuf.is_empty()
                        && write_all(&mut up.stream, &self.ubuf, wait).await.is_err()
                    {
                        return Err(backend_spoke(up).await);
                    }
                    if done {
                        return Ok(());
                    }
                    self.read_body_or_response(up, client_wait).await?;
                }
            }
        }
    }

    /// Waits for more request body from the client while watching the
    /// backend: response bytes arriving first end the upload early.
    async fn read_body_or_response(
        &mut self,
        up: &mut UpConn,
        client_wait: Duration,
    ) -> Result<(), SendError> {
        enum Side {
            Client(Result<usize, ConnError>),
            Backend(Result<usize, ConnError>),
        }
        self.flush()
            .await
            .map_err(|e| SendError::Client(BodyError::Conn(e)))?;
        let (cs, cb) = (&mut self.stream, &mut self.rbuf);
        let (us, ub) = (&mut up.stream, &mut up.rbuf);
        // Readiness-based reads: the one that loses the race loses no data.
        let side = futures_lite::future::or(
            async { Side::Client(read_into(cs, cb, 4096, BODY_CHUNK, client_wait).await) },
            async { Side::Backend(read_into(us, ub, 4096, BODY_CHUNK, client_wait).await) },
        )
        .await;
        match side {
            Side::Client(Ok(0)) => Err(SendError::Client(BodyError::Conn(ConnError::Closed))),
            Side::Client(Ok(_)) => Ok(()),
            Side::Client(Err(ConnError::Timeout)) => Err(SendError::Client(BodyError::Reject(408))),
            Side::Client(Err(e)) => Err(SendError::Client(BodyError::Conn(e))),
            Side::Backend(Ok(n)) if n > 0 => Err(SendError::EarlyResponse),
            Side::Backend(_) => Err(SendError::Upstream),
        }
    }

    async fn relay_length(
        &mut self,
        up: &mut UpConn,
        n: u64,
        wait: Duration,
    ) -> Result<(), RelayError> {
        let mut remaining = n;
        let take = (up.rbuf.len() as u64).min(remaining) as usize;
        self.capture(&up.rbuf.filled()[..take]);
        if take as u64 == remaining {
            self.complete_capture();
        }
        if self.wbuf.len() + take <= COALESCE_LIMIT {
            self.wbuf.extend_from_slice(&up.rbuf.filled()[..take]);
        } else {
            self.flush().await.map_err(RelayError::Client)?;
            self.send(&up.rbuf.filled()[..take]).await?;
        }
        up.rbuf.consume(take);
        remaining -= take as u64;
        while remaining > 0 {
            self.flush().await.map_err(RelayError::Client)?;
            read_upstream(&self.shard, up, wait).await?;
            let take = (up.rbuf.len() as u64).min(remaining) as usize;
            self.capture(&up.rbuf.filled()[..take]);
            if take as u64 == remaining {
                self.complete_capture();
            }
            self.send(&up.rbuf.filled()[..take]).await?;
            up.rbuf.consume(take);
            remaining -= take as u64;
        }
        Ok(())
    }

    async fn relay_chunked(
        &mut self,
        up: &mut UpConn,
        framing: Framing,
        wait: Duration,
    ) -> Result<(), RelayError> {
        let mut dec = ChunkedDecoder::new();
        loop {
            let (n, chunk) = dec
                .decode(up.rbuf.filled())
                .map_err(|_| RelayError::Upstream)?;
            match chunk {
                Some(Chunk::Data(r)) => {
                    self.capture(&up.rbuf.filled()[r.clone()]);
                    queue_body(&mut self.wbuf, &up.rbuf.filled()[r], framing);
                    up.rbuf.consume(n);
                    if self.wbuf.len() >= BODY_CHUNK {
                        self.flush().await.map_err(RelayError::Client)?;
                    }
                }
                Some(Chunk::End) => {
                    self.complete_capture();
                    up.rbuf.consume(n);
                    if framing == Framing::Chunked {
                        self.wbuf.extend_from_slice(b"0\r\n\r\n");
                    }
                    return Ok(());
                }
                None => {
                    up.rbuf.consume(n);
                    self.flush().await.map_err(RelayError::Client)?;
                    read_upstream(&self.shard, up, wait).await?;
                }
            }
        }
    }

    async fn relay_until_close(
        &mut self,
        up: &mut UpConn,
        framing: Framing,
        wait: Duration,
    ) -> Result<(), RelayError> {
        loop {
            let data = up.rbuf.filled();
            if !data.is_empty() {
                self.capture(data);
                queue_body(&mut self.wbuf, data, framing);
                let n = data.len();
                up.rbuf.consume(n);
            }
            self.flush().await.map_err(RelayError::Client)?;
            let deadline = self.shard.coarse_now() + wait;
            match read_backend(&self.shard, up, 16 * 1024, BODY_CHUNK, deadline).await {
                Ok(0) => {
                    self.complete_capture();
                    if framing == Framing::Chunked {
                        self.wbuf.extend_from_slice(b"0\r\n\r\n");
                    }
                    return Ok(());
                }
                Ok(_) => {}
                Err(_) => return Err(RelayError::Upstream),
            }
        }
    }

    /// Relays bytes both ways after a 101 until either side closes or
    /// neither sends anything for `idle`.
    async fn tunnel(&mut self, up: &mut UpConn, idle: Duration) -> Result<(), ConnError> {
        enum Side {
            Client(Result<usize, ConnError>),
            Backend(Result<usize, ConnError>),
        }
        self.flush().await?;
        loop {
            if !self.rbuf.is_empty() {
                if write_all(&mut up.stream, self.rbuf.filled(), idle)
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                let n = self.rbuf.len();
                self.rbuf.consume(n);
            }
            if !up.rbuf.is_empty() {
                self.sent += up.rbuf.len() as u64;
                write_all(&mut self.stream, up.rbuf.filled(), idle).await?;
                let n = up.rbuf.len();
                up.rbuf.consume(n);
            }
            let (cs, cb) = (&mut self.stream, &mut self.rbuf);
            let (us, ub) = (&mut up.stream, &mut up.rbuf);
            // Reads are readiness-based, so the read that loses the race is
            // dropped without losing data.
            let side = futures_lite::future::or(
                async { Side::Client(read_into(cs, cb, 4096, BODY_CHUNK, idle).await) },
                async { Side::Backend(read_into(us, ub, 4096, BODY_CHUNK, idle).await) },
            )
            .await;
            match side {
                Side::Client(Ok(n)) | Side::Backend(Ok(n)) if n > 0 => {}
                _ => return Ok(()),
            }
        }
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), RelayError> {
        let wait = self.shard.snapshot().server.timeouts.client_send;
        self.sent += data.len() as u64;
        write_all(&mut self.stream, data, wait)
            .await
            .map_err(RelayError::Client)
    }
}

/// Queues response body data for the client, as a chunk when the client's
/// response is chunked.
fn queue_body(out: &mut bytes::BytesMut, data: &[u8], framing: Framing) {
    if framing == Framing::Chunked {
        write_chunk_size(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Decodes chunked body bytes buffered in `rbuf` and re-encodes them into
/// `out` (dropping extensions and trailers). Returns true at the end of the
/// body; `Err(status)` for a malformed (400) or oversized (413) body.
fn encode_chunks(
    dec: &mut ChunkedDecoder,
    rbuf: &mut ReadBuf,
    out: &mut bytes::BytesMut,
    max_body: u64,
) -> Result<bool, u16> {
    loop {
        let (n, chunk) = dec.decode(rbuf.filled()).map_err(|_| 400u16)?;
        if dec.data_len > max_body {
            return Err(413);
        }
        match chunk {
            Some(Chunk::Data(r)) => {
                write_chunk_size(out, r.len());
                out.extend_from_slice(&rbuf.filled()[r]);
                out.extend_from_slice(b"\r\n");
                rbuf.consume(n);
            }
            Some(Chunk::End) => {
                out.extend_from_slice(b"0\r\n\r\n");
                rbuf.consume(n);
                return Ok(true);
            }
            None => {
                rbuf.consume(n);
                return Ok(false);
            }
        }
    }
}

/// After a failed write to the backend: did it send a response first (an
/// early answer to an upload it refused)?
async fn backend_spoke(up: &mut UpConn) -> SendError {
    if !up.rbuf.is_empty() {
        return SendError::EarlyResponse;
    }
    let read = read_into(
        &mut up.stream,
        &mut up.rbuf,
        4096,
        BODY_CHUNK,
        Duration::from_millis(50),
    );
    match read.await {
        Ok(n) if n > 0 => SendError::EarlyResponse,
        _ => SendError::Upstream,
    }
}

/// Reads a backend response body (framed as `kind`) into `capture` alone,
/// for a client that gets no body (a 304) or no answer at all (a
/// refresh). `None` when the backend fails or the body outgrows the
/// capture; the backend connection is then not reusable.
async fn capture_body(
    shard: &Shard,
    up: &mut UpConn,
    kind: BodyKind,
    mut capture: Box<Capture>,
    wait: Duration,
) -> Option<Box<Capture>> {
    match kind {
        BodyKind::None => Some(capture),
        BodyKind::Length(mut remaining) => loop {
            let take = (up.rbuf.len() as u64).min(remaining) as usize;
            if !capture.push(&up.rbuf.filled()[..take]) {
                return None;
            }
            up.rbuf.consume(take);
            remaining -= take as u64;
            if remaining == 0 {
                return Some(capture);
            }
            read_upstream(shard, up, wait).await.ok()?;
        },
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let (n, chunk) = dec.decode(up.rbuf.filled()).ok()?;
                match chunk {
                    Some(Chunk::Data(r)) => {
                        if !capture.push(&up.rbuf.filled()[r]) {
                            return None;
                        }
                        up.rbuf.consume(n);
                    }
                    Some(Chunk::End) => {
                        up.rbuf.consume(n);
                        return Some(capture);
                    }
                    None => {
                        up.rbuf.consume(n);
                        read_upstream(shard, up, wait).await.ok()?;
                    }
                }
            }
        }
        BodyKind::UntilClose => loop {
            let n = up.rbuf.len();
            if !capture.push(up.rbuf.filled()) {
                return None;
            }
            up.rbuf.consume(n);
            let deadline = shard.coarse_now() + wait;
            match read_backend(shard, up, 16 * 1024, BODY_CHUNK, deadline).await {
                Ok(0) => return Some(capture),
                Ok(_) => {}
                Err(_) => return None,
            }
        },
    }
}

async fn read_upstream(shard: &Shard, up: &mut UpConn, wait: Duration) -> Result<(), RelayError> {
    let deadline = shard.coarse_now() + wait;
    match read_backend(shard, up, 16 * 1024, BODY_CHUNK, deadline).await {
        Ok(0) | Err(_) => Err(RelayError::Upstream),
        Ok(_) => Ok(()),
    }
}

/// Reads from a backend into its buffer, failing with a timeout once
/// `deadline` passes; bytes already waiting are read at once. No timer:
/// the shard's tick enforces the deadline ([`Shard::watch_backend`]).
async fn read_backend(
    shard: &Shard,
    up: &mut UpConn,
    min: usize,
    max_total: usize,
    deadline: Instant,
) -> Result<usize, ConnError> {
    use futures_lite::AsyncReadExt;
    use std::os::fd::AsRawFd;
    let fd = up.stream.tcp().as_raw_fd();
    let spare = up.rbuf.spare(min, max_total);
    if spare.is_empty() {
        return Err(ConnError::Io(std::io::Error::other("read buffer full")));
    }
    let mut read = up.stream.read(spare);
    let ready = futures_lite::future::poll_once(&mut read).await;
    let result = match ready {
        Some(r) => r,
        None => {
            if shard.coarse_now() >= deadline {
                return Err(ConnError::Timeout);
            }
            let watch = shard.watch_backend(fd, deadline);
            let r = read.await;
            // Shut down by the tick: a timeout, even if bytes came in
            // with it (the connection is dropped, never pooled).
            if watch.fired() {
                return Err(ConnError::Timeout);
            }
            r
        }
    };
    match result {
        Ok(n) => {
            up.rbuf.commit(n);
            Ok(n)
        }
        Err(e) => Err(ConnError::Io(e)),
    }
}

/// Whether a backend's 101 names `websocket` as the protocol it switches
/// to, and nothing else.
fn switches_to_websocket(buf: &[u8], rhead: &ResponseHead) -> bool {
    let mut protocols = rhead
        .headers
        .iter()
        .filter(|h| h.kind == crate::http::HeaderKind::Upgrade)
        .flat_map(|h| crate::http::tokens(h.value.of(buf)));
    let first = protocols.next();
    first.is_some_and(|p| p.eq_ignore_ascii_case(b"websocket")) && protocols.next().is_none()
}

/// Reads until a final (non-1xx) response head is buffered in `up.rbuf`.
async fn read_response_head(
    shard: &Shard,
    up: &mut UpConn,
    rhead: &mut ResponseHead,
    snap: &Snapshot,
    info: RequestInfo,
    deadline: Instant,
) -> Result<(), HeadError> {
    let head_request = info.head_request;
    let server = &snap.server;
    let max = server.limits.max_response_header_bytes;
    let mut received = false;
    loop {
        if !up.rbuf.is_empty() {
            received = true;
            match response::parse(
                up.rbuf.filled(),
                max,
                head_request,
                &server.request_id_header,
                rhead,
            ) {
                Ok(Some(n)) => {
                    if rhead.is_interim() {
                        up.rbuf.consume(n);
                        continue;
                    }
                    if rhead.status == 101
                        && !(info.upgrade && switches_to_websocket(up.rbuf.filled(), rhead))
                    {
                        // Only a WebSocket upgrade forwards Upgrade, and
                        // only a switch to WebSocket is tunnelled; a 101
                        // to anything else (h2c) is a backend error.
                        return Err(HeadError::Bad);
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(_) => return Err(HeadError::Bad),
            }
        }
        // read_backend times out once the deadline has passed.
        match read_backend(shard, up, 4096, max + 4096, deadline).await {
            Ok(0) | Err(ConnError::Io(_)) | Err(ConnError::Closed) if !received => {
                return Err(HeadError::NothingReceived)
            }
            Ok(0) | Err(ConnError::Io(_)) | Err(ConnError::Closed) => return Err(HeadError::Bad),
            Err(ConnError::Timeout) => return Err(HeadError::Timeout),
            Ok(_) => {}
        }
    }
}
