//! The cache step of the pipeline: look a proxied GET/HEAD up, serve a
//! hit, and capture a storable miss while it is relayed.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::conn::Conn;
use super::conn::{RequestId, RequestInfo};
use super::shard::Shard;
use crate::cache::control::{expires_in, wants_fresh, Storable};
use crate::cache::key::{self, KeyInput};
use crate::cache::store::{CachedResponse, Claim, Lookup, HIT_FOR_MISS_NS};
use crate::cache::{Cache, TOKEN_HEADER};
use crate::config::schema::UnauthorizedInvalidation;
use crate::config::{Resolved, RouteCache, Snapshot, StageCache};
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::http::write::LocalResponse;
use crate::http::{BodyKind, HeaderKind};
use crate::observe::counters::Counters;

/// What the cache decided for a request.
pub(super) enum CacheStep {
    /// Serve this stored response.
    Hit(Hit),
    /// Go to the backend; store the answer if `fill` is set (it holds the
    /// key's claim: concurrent misses wait for this request).
    Miss(Option<Fill>),
    /// Another request is fetching this key: wait, then look again.
    Wait,
    /// An unauthorized `max-age=0` where the stage says fail: 403.
    Forbidden,
}

/// A stored response to serve, and how.
pub(super) struct Hit {
    pub entry: Arc<CachedResponse>,
    /// Add a `warning` header: an unauthorized `max-age=0` was ignored.
    pub warn: bool,
    /// The client's validator matches: answer 304 Not Modified.
    pub not_modified: bool,
}

impl Hit {
    pub(super) fn new(entry: Arc<CachedResponse>, warn: bool) -> Hit {
        Hit {
            entry,
            warn,
            not_modified: false,
        }
    }
}

/// The value of header `name` in a stored header block.
fn stored_header<'a>(block: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    block.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// RFC 9110 §13.1.1/§13.1.3: whether a request's `If-None-Match` (weak
/// comparison) or, without it, `If-Modified-Since` says the client's copy
/// of `entry` is current.
fn not_modified(
    entry: &CachedResponse,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
) -> bool {
    if entry.status != 200 {
        return false;
    }
    let weak = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    if let Some(inm) = if_none_match {
        let Some(etag) = stored_header(&entry.headers, b"etag") else {
            return false;
        };
        let etag = weak(etag);
        return crate::http::tokens(inm).any(|t| t == b"*" || weak(t) == etag);
    }
    let (Some(ims), Some(lm)) = (
        if_modified_since,
        stored_header(&entry.headers, b"last-modified"),
    ) else {
        return false;
    };
    let date = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    matches!((date(ims), date(lm)), (Some(ims), Some(lm)) if lm <= ims)
}

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [&[u8]; 5] = [
    b"etag",
    b"cache-control",
    b"expires",
    b"vary",
    b"content-location",
];

/// How to store the response to a miss. Holds the key's claim until
/// dropped.
pub(super) struct Fill {
    cache: Arc<Cache>,
    hash: u64,
    key: Box<[u8]>,
    ttl_ns: u64,
    statuses: Vec<u16>,
    ignore_backend: bool,
    /// An expired entry that may stand in if the backend fails.
    pub stale: Option<Arc<CachedResponse>>,
    /// The request's headers (lower-case names), in case the response
    /// varies by some of them.
    req_headers: Vec<HeaderPair>,
    /// Set when the backend's answer proved not storable (not for a
    /// failed fetch): the key is then fetched without coalescing for a
    /// while.
    unstorable: bool,
}

/// A request header kept for `Vary`: lower-case name, value.
type HeaderPair = (Box<[u8]>, Box<[u8]>);

impl Drop for Fill {
    /// Releases the claim; if the answer was not storable, marks the key
    /// so that requests for it stop waiting on one another for a while.
    fn drop(&mut self) {
        let until = self
            .unstorable
            .then(|| self.cache.now_ns().saturating_add(HIT_FOR_MISS_NS));
        self.cache.store.release(self.hash, until);
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A response being captured for the cache while it is relayed.
pub(super) struct Capture {
    fill: Fill,
    /// The response's `Vary` header names, if any.
    vary: Option<Vec<Box<[u8]>>>,
    /// `must-revalidate`: never served stale.
    no_stale: bool,
    /// The backend's Age, seconds.
    initial_age: u64,
    status: u16,
    headers: Bytes,
    body: BytesMut,
    ttl_ns: u64,
    max: usize,
}

/// How often a coalesced miss looks whether the fetch it waits for is
/// done. Waiting is rare (concurrent misses of one key) and works across
/// shards without a cross-thread wake-up.
const COALESCE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// The cache step for a proxied request to route `r`: `None` when the
/// route does not cache this method (or the request is a WebSocket
/// upgrade); else the decision, after waiting for another request that
/// is fetching the same key (request coalescing) for up to the cache's
/// `lock_timeout`, after which the request fetches without the cache.
#[allow(clippy::too_many_arguments)]
pub(super) async fn decide(
    shard: &Shard,
    r: &Resolved<'_, '_>,
    head: &RequestHead,
    buf: &[u8],
    method: &[u8],
    upgrade: bool,
    preserve_host: bool,
    kbuf: &mut Vec<u8>,
) -> Option<CacheStep> {
    let cache = shard.cache.as_ref()?;
    if upgrade {
        return None;
    }
    let stage = r.stage.cache.as_ref()?;
    let rc = r.stage.route_cache.get(r.route as usize)?.as_ref()?;
    let wanted = if method == b"HEAD" {
        &b"GET"[..]
    } else {
        method
    };
    if !rc.methods.iter().any(|m| **m == *wanted) {
        return None;
    }
    let look = |kbuf: &mut Vec<u8>| {
        lookup(
            cache,
            &shard.counters,
            r,
            stage,
            rc,
            head,
            buf,
            method,
            preserve_host,
            shard.coarse_now(),
            kbuf,
        )
    };
    let mut step = look(kbuf);
    if matches!(step, CacheStep::Wait) {
        let deadline = Instant::now() + cache.lock_timeout;
        while matches!(step, CacheStep::Wait) {
            if Instant::now() >= deadline {
                shard.counters.cache_lookup(r.metric, false);
                return Some(CacheStep::Miss(None));
            }
            glommio::timer::sleep(COALESCE_POLL).await;
            step = look(kbuf);
        }
    }
    if let CacheStep::Hit(hit) = &mut step {
        let header = |name: &[u8]| {
            head.headers
                .iter()
                .find(|h| h.name.of(buf).eq_ignore_ascii_case(name))
                .map(|h| h.value.of(buf))
        };
        hit.not_modified = not_modified(
            &hit.entry,
            header(b"if-none-match"),
            header(b"if-modified-since"),
        );
    }
    Some(step)
}

/// Looks a request up (`method` GET or HEAD) for route `r` with cache
/// settings `stage` / `rc`; `kbuf` is scratch for the key.
#[allow(clippy::too_many_arguments)]
pub(super) fn lookup(
    cache: &Arc<Cache>,
    counters: &Counters,
    r: &Resolved<'_, '_>,
    stage: &StageCache,
    rc: &RouteCache,
    head: &RequestHead,
    buf: &[u8],
    method: &[u8],
    host_in_key: bool,
    now: Instant,
    kbuf: &mut Vec<u8>,
) -> CacheStep {
    // HEAD reads what GET stored and fills nothing (its answer has no body).
    let fills = method != b"HEAD";
    let shared = method == b"GET" || method == b"HEAD";
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.of(buf))
    };
    let param = |i: usize| r.params.get(i).map(|range| &r.path[range]);
    let input = KeyInput {
        route: r.metric,
        method: (!shared).then_some(method),
        // Whole-URL keys include the Host (Varnish's default); parameter
        // keys too when the backend sees the client's Host.
        host: (rc.key.is_empty() || host_in_key)
            .then(|| head.host.map(|h| h.of(buf)))
            .flatten(),
        path: r.path,
        query: head.query.map(|q| q.of(buf)),
        param: &param,
        header: &header,
    };
    // A shared cache stores nothing for a request with credentials
    // (RFC 9111 §3.5) unless the stage ignores HTTP caching rules as
    // Amazon API Gateway does: one user's answer is not another's.
    if !stage.ignore_backend_cache_control && header("authorization").is_some() {
        return CacheStep::Miss(None);
    }
    key::build(kbuf, &stage.prefix, &rc.key, &input);
    let hash = cache.hasher.hash(kbuf);
    let counter = r.metric;

    let mut refresh = false;
    let mut warn = false;
    if header("cache-control").is_some_and(wants_fresh) {
        if !stage.require_authorization || cache.authorized(header(TOKEN_HEADER)) {
            refresh = true;
        } else {
            match stage.unauthorized {
                UnauthorizedInvalidation::Fail => return CacheStep::Forbidden,
                UnauthorizedInvalidation::IgnoreWithHeader => warn = true,
                UnauthorizedInvalidation::Ignore => {}
            }
        }
    }
    let now = cache.ns_at(now);
    let mut stale = None;
    if !refresh {
        let mut found = cache.store.get(hash, kbuf, now);
        // A URL whose response varies: look the request's variant up.
        if let Lookup::Fresh(e) | Lookup::Stale(e) = &found {
            if let Some(names) = e.vary.clone() {
                let base_len = kbuf.len();
                key::variant(kbuf, &names, |n: &[u8]| {
                    head.headers
                        .iter()
                        .find(|h| h.name.of(buf).eq_ignore_ascii_case(n))
                        .map(|h| h.value.of(buf))
                });
                found = cache.store.get(cache.hasher.hash(kbuf), kbuf, now);
                kbuf.truncate(base_len);
            }
        }
        match found {
            Lookup::Fresh(entry) => {
                counters.cache_lookup(counter, true);
                return CacheStep::Hit(Hit::new(entry, warn));
            }
            Lookup::Stale(entry) => stale = Some(entry),
            Lookup::Miss => {}
        }
    }
    let within = |e: &Arc<CachedResponse>, window| {
        !e.no_stale && now < e.expires_ns.saturating_add(nanos(window))
    };
    // A HEAD answer has no body to store; the next GET fills the entry.
    // Conditional and range requests are answered from the cache (a full
    // 200) but do not fill it: their answer may be a 304 or a 206.
    let conditional = [
        "range",
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
    ]
    .iter()
    .any(|h| header(h).is_some());
    let claim = if fills && !conditional {
        cache.store.claim(hash, now)
    } else {
        Claim::Uncacheable
    };
    if claim == Claim::Busy {
        // Another request is fetching it: serve the expired entry while
        // it does, if allowed, else wait for it.
        if let Some(entry) = stale.filter(|e| within(e, rc.stale_while_revalidate)) {
            counters.cache_lookup(counter, true);
            return CacheStep::Hit(Hit::new(entry, warn));
        }
        return CacheStep::Wait;
    }
    counters.cache_lookup(counter, false);
    if claim == Claim::Uncacheable {
        return CacheStep::Miss(None);
    }
    CacheStep::Miss(Some(Fill {
        cache: cache.clone(),
        hash,
        key: kbuf.as_slice().into(),
        ttl_ns: nanos(rc.ttl),
        statuses: rc.statuses.clone(),
        ignore_backend: stage.ignore_backend_cache_control,
        stale: stale.filter(|e| within(e, rc.stale_if_error) && e.vary.is_none()),
        req_headers: head
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.of(buf).to_ascii_lowercase().into_boxed_slice(),
                    h.value.of(buf).into(),
                )
            })
            .collect(),
        unstorable: false,
    }))
}

/// Headers a stored response keeps: end-to-end ones, without framing,
/// Date (written fresh on every hit), Age (computed on every hit) or the
/// request id.
fn stored_headers(buf: &[u8], resp: &ResponseHead) -> Bytes {
    let mut out = BytesMut::new();
    for h in &resp.headers {
        let keep = match h.kind {
            HeaderKind::ContentLength | HeaderKind::RequestId => false,
            k if k.is_hop_by_hop() => false,
            _ => {
                let name = h.name.of(buf);
                !name.eq_ignore_ascii_case(b"date") && !name.eq_ignore_ascii_case(b"age")
            }
        };
        if keep {
            out.put_slice(h.name.of(buf));
            out.put_slice(b": ");
            out.put_slice(h.value.of(buf));
            out.put_slice(b"\r\n");
        }
    }
    out.freeze()
}

/// Starts capturing a backend response (head parsed from `buf`) for
/// `fill`, if it may be stored.
pub(super) fn start(
    mut fill: Fill,
    buf: &[u8],
    resp: &ResponseHead,
    max: usize,
) -> Option<Capture> {
    let capture = capture_of(&fill, buf, resp, max);
    match capture {
        Some(st) => Some(Capture {
            initial_age: received_age(buf, resp),
            vary: st.vary,
            status: resp.status,
            headers: stored_headers(buf, resp),
            body: BytesMut::with_capacity(st.expect.min(max)),
            ttl_ns: st.ttl_ns,
            no_stale: st.no_stale,
            max,
            fill,
        }),
        None => {
            // A server error says nothing about the next answer; anything
            // else refused here will be refused again.
            fill.unstorable = resp.status < 500;
            None
        }
    }
}

/// Whether a response may be stored: its `Vary` names, TTL and expected
/// body size.
fn capture_of(fill: &Fill, buf: &[u8], resp: &ResponseHead, max: usize) -> Option<Storing> {
    if !fill.statuses.contains(&resp.status) {
        return None;
    }
    let mut ttl_ns = fill.ttl_ns;
    let mut vary = None;
    let mut no_stale = false;
    // A response that sets a cookie is one client's: never stored, not
    // even where the stage ignores the backend's other cache headers.
    if resp
        .headers
        .iter()
        .any(|h| h.name.of(buf).eq_ignore_ascii_case(b"set-cookie"))
    {
        return None;
    }
    if !fill.ignore_backend {
        let mut st = Storable::default();
        for h in &resp.headers {
            let name = h.name.of(buf);
            if name.eq_ignore_ascii_case(b"cache-control") {
                st.add_cache_control(h.value.of(buf));
            } else if name.eq_ignore_ascii_case(b"vary") {
                match key::vary_names(h.value.of(buf)) {
                    // `Vary: *`: every request differs.
                    None => st.forbidden = true,
                    Some(names) if !names.is_empty() => {
                        vary.get_or_insert_with(Vec::new).extend(names)
                    }
                    Some(_) => {}
                }
            }
        }
        if st.forbidden {
            return None;
        }
        // Without max-age/s-maxage, Expires (against the response's Date)
        // bounds the TTL, as in NGINX.
        let max_age = st.max_age.or_else(|| {
            let find = |n: &[u8]| {
                resp.headers
                    .iter()
                    .find(|h| h.name.of(buf).eq_ignore_ascii_case(n))
                    .map(|h| h.value.of(buf))
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            find(b"expires").map(|e| expires_in(e, find(b"date"), now))
        });
        // What the backend's Age already used of its freshness (RFC 9111
        // §4.2.3) does not count again.
        if let Some(age) = max_age {
            let left = age.saturating_sub(received_age(buf, resp));
            ttl_ns = ttl_ns.min(left.saturating_mul(1_000_000_000));
        }
        no_stale = st.no_stale;
    }
    if ttl_ns == 0 {
        return None;
    }
    let expect = match resp.body {
        BodyKind::Length(n) if n > max as u64 => return None,
        BodyKind::Length(n) => n as usize,
        BodyKind::None => 0,
        BodyKind::Chunked | BodyKind::UntilClose => 4096,
    };
    Some(Storing {
        vary,
        ttl_ns,
        expect,
        no_stale,
    })
}

/// The backend's `Age` header, seconds (0 when absent or invalid).
fn received_age(buf: &[u8], resp: &ResponseHead) -> u64 {
    resp.headers
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(b"age"))
        .and_then(|h| std::str::from_utf8(h.value.of(buf)).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// How a storable response is to be stored.
struct Storing {
    /// Its `Vary` header names, if any.
    vary: Option<Vec<Box<[u8]>>>,
    ttl_ns: u64,
    /// Body bytes to reserve.
    expect: usize,
    no_stale: bool,
}

impl Capture {
    /// Adds relayed body bytes; false once the body is too large to
    /// store (the capture is then dropped by the caller).
    pub(super) fn push(&mut self, data: &[u8]) -> bool {
        if self.body.len() + data.len() > self.max {
            return false;
        }
        self.body.put_slice(data);
        true
    }

    /// Stores the captured response (then the claim is released). A
    /// response with `Vary` is stored under its variant's key, and the
    /// URL's key gets an entry naming the headers it varies by.
    pub(super) fn finish(mut self, cache: &Cache) {
        let now = cache.now_ns();
        let expires_ns = now.saturating_add(self.ttl_ns);
        let mut key = std::mem::take(&mut self.fill.key).into_vec();
        let mut hash = self.fill.hash;
        if let Some(names) = self.vary.take() {
            let names: Box<[Box<[u8]>]> = names.into();
            let spec = CachedResponse {
                key: key.as_slice().into(),
                status: self.status,
                headers: Bytes::new(),
                body: Bytes::new(),
                stored_ns: now,
                expires_ns,
                vary: Some(names.clone()),
                no_stale: false,
                initial_age: 0,
            };
            cache.store.insert(hash, spec);
            let req = &self.fill.req_headers;
            key::variant(&mut key, &names, |n: &[u8]| {
                req.iter().find(|(k, _)| **k == *n).map(|(_, v)| &**v)
            });
            hash = cache.hasher.hash(&key);
        }
        let entry = CachedResponse {
            key: key.into_boxed_slice(),
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body: {
                let body = std::mem::take(&mut self.body);
                // A body grown by doubling keeps up to half its buffer
                // spare; store an exact copy so the entry holds what it is
                // charged for.
                if body.capacity() > body.len() + body.len() / 8 + 64 {
                    Bytes::copy_from_slice(&body)
                } else {
                    body.freeze()
                }
            },
            stored_ns: now,
            expires_ns,
            vary: None,
            no_stale: self.no_stale,
            initial_age: self.initial_age,
        };
        if !cache.store.insert(hash, entry) {
            self.fill.unstorable = true;
        }
    }
}

/// Cached bodies at least this large are written from the cache's bytes
/// rather than copied into the connection's write buffer.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// Added to a cache hit served despite an unauthorized `max-age=0`.
const CACHE_WARNING: &[u8] =
    b"warning: 199 tollgate \"Cache-Control max-age=0 ignored: not authorized\"\r\n";

impl Conn {
    /// Stores the captured response now that the backend's last byte is
    /// in, before the client has it all: a slow client does not hold the
    /// key's claim (and the requests waiting on it).
    pub(super) fn complete_capture(&mut self) {
        if let (Some(c), Some(cache)) = (self.capture.take(), self.shard.cache.as_ref()) {
            c.finish(cache);
        }
    }

    /// Queues a stored response for the current request.
    pub(super) fn serve_cached(
        &mut self,
        snap: &Snapshot,
        hit: &Hit,
        info: RequestInfo,
        rid: &RequestId,
    ) {
        let entry = &*hit.entry;
        let warn = hit.warn;
        // The stored headers plus `Age` (RFC 9111 §4: a response served
        // from a cache says how old it is) and the warning, assembled in
        // the connection's scratch buffer (free during a hit).
        let mut block = std::mem::take(&mut self.ubuf);
        block.clear();
        if hit.not_modified {
            for name in NOT_MODIFIED_FIELDS {
                if let Some(v) = stored_header(&entry.headers, name) {
                    block.put_slice(name);
                    block.put_slice(b": ");
                    block.put_slice(v);
                    block.put_slice(b"\r\n");
                }
            }
        } else {
            block.put_slice(&entry.headers);
        }
        if let Some(cache) = self.shard.cache.as_ref() {
            let now = cache.ns_at(self.shard.coarse_now());
            let age = now.saturating_sub(entry.stored_ns) / 1_000_000_000 + entry.initial_age;
            let mut n = itoa::Buffer::new();
            block.put_slice(b"age: ");
            block.put_slice(n.format(age).as_bytes());
            block.put_slice(b"\r\n");
        }
        if warn {
            block.put_slice(CACHE_WARNING);
        }
        let headers: &[u8] = &block;
        let resp = LocalResponse {
            status: if hit.not_modified { 304 } else { entry.status },
            headers,
            body: if hit.not_modified { &[] } else { &entry.body },
        };
        let has_body =
            !hit.not_modified && entry.status >= 200 && entry.status != 204 && entry.status != 304;
        if entry.body.len() >= ZERO_COPY_MIN && has_body && !info.head_request {
            // Head now (its Content-Length from the body), body straight
            // from the cache's shared bytes at the next flush.
            self.local_response(
                snap,
                &resp,
                RequestInfo {
                    head_request: true,
                    ..info
                },
                rid,
            );
            self.pending = Some(entry.body.clone());
        } else {
            self.local_response(snap, &resp, info, rid);
        }
        self.ubuf = block;
    }

    /// Feeds relayed body bytes to the capture, if one is running.
    pub(super) fn capture(&mut self, data: &[u8]) {
        if let Some(c) = self.capture.as_mut() {
            if !c.push(data) {
                // Too large to store: the next answer will be too.
                c.fill.unstorable = true;
                self.capture = None;
            }
        }
    }
}

/// Why an admin flush of one URL found nothing it could flush.
#[derive(Debug, thiserror::Error)]
pub enum FlushUrlError {
    #[error("no route answers GET {0}")]
    NoRoute(String),
    #[error("the route of {0} is not cached")]
    NotCached(String),
}

/// Removes the cached answer a GET of `target` (path and query as a client
/// sends them) with Host `host` (as sent, port included) would get, and
/// its `Vary` variants; `headers` (lower-case names) give values for
/// `header.NAME` key parameters. Returns how many entries went (the admin
/// API's "flush one key").
pub fn flush_url(
    cache: &Cache,
    snap: &Snapshot,
    host: Option<&[u8]>,
    target: &[u8],
    headers: &[(String, Vec<u8>)],
) -> Result<usize, FlushUrlError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    let text = || String::from_utf8_lossy(target).into_owned();
    // The TLS view first: it adds custom domains' mappings to what plain
    // connections reach (the same request resolves the same way in both
    // unless a domain maps it).
    let r = snap
        .resolve_on(host, b"GET", path, true)
        .or_else(|| snap.resolve(host, b"GET", path))
        .ok_or_else(|| FlushUrlError::NoRoute(text()))?;
    let rc = r
        .stage
        .route_cache
        .get(r.route as usize)
        .and_then(Option::as_ref);
    let (Some(stage), Some(rc)) = (r.stage.cache.as_ref(), rc) else {
        return Err(FlushUrlError::NotCached(text()));
    };
    let preserve_host = matches!(
        r.integration(),
        Some(crate::integration::Integration::Http(i)) if i.preserve_host
    );
    let param = |i: usize| r.params.get(i).map(|range| &r.path[range]);
    let input = KeyInput {
        route: r.metric,
        method: None,
        // As `lookup` builds it.
        host: (rc.key.is_empty() || preserve_host)
            .then_some(host)
            .flatten(),
        path: r.path,
        query,
        param: &param,
        header: &header,
    };
    let mut k = Vec::new();
    key::build(&mut k, &stage.prefix, &rc.key, &input);
    let mut removed = usize::from(cache.flush_key(&k));
    k.extend_from_slice(b"\0vary\0");
    removed += cache.store.remove_prefix(&k);
    Ok(removed)
}
