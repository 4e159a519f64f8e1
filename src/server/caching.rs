//! The cache step of the pipeline: look a proxied request up (request
//! coalescing, stale answers, validators), serve a hit, and flush URLs for
//! the admin API. Storing an answer is `fill.rs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};

use super::conn::Conn;
use super::conn::{RequestId, RequestInfo};
use super::fill::{Fill, Validators};
use super::shard::Shard;
use crate::auth::api_key::KeyDigest;
use crate::cache::control::wants_fresh;
use crate::cache::key::{self, KeyInput};
use crate::cache::store::{CachedResponse, Claim, Lookup};
use crate::cache::Cache;
use crate::config::schema::UnauthorizedInvalidation;
use crate::config::{Resolved, RouteCache, Snapshot, StageCache};
use crate::http::range::{self, RangeAsk};
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
    /// Serve this expired entry now (within `stale_while_revalidate`),
    /// then refresh it from the backend with `fill` (which holds the key's
    /// claim) once the answer is out.
    Revalidate(Hit, Fill),
    /// Another request is fetching this key: wait, then look again. Holds
    /// the expired entry that may answer instead (`stale_if_error`) if
    /// that fetch fails or the wait times out.
    Wait(Option<Arc<CachedResponse>>),
    /// An unauthorized `max-age=0` where the stage says fail: 403.
    Forbidden,
    /// The cache is not used for this request (credentials on a stage
    /// that follows HTTP caching rules): neither a hit nor a miss.
    Bypass,
}

/// A stored response to serve, and how.
pub(super) struct Hit {
    pub entry: Arc<CachedResponse>,
    /// Add a `warning` header: an unauthorized `max-age=0` was ignored.
    pub warn: bool,
    /// The client's validator matches: answer 304 Not Modified.
    pub not_modified: bool,
    /// The part of the body a GET's `Range` asks for (206 or 416).
    pub range: RangeAsk,
}

impl Hit {
    pub(super) fn new(entry: Arc<CachedResponse>, warn: bool) -> Hit {
        Hit {
            entry,
            warn,
            not_modified: false,
            range: RangeAsk::Whole,
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
    entry.status == 200
        && validators_match(
            |name| stored_header(&entry.headers, name),
            if_none_match,
            if_modified_since,
        )
}

/// The comparison behind [`not_modified`], for a 200 whose header `name`
/// is `field(name)`.
pub(super) fn validators_match<'a>(
    field: impl Fn(&[u8]) -> Option<&'a [u8]>,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
) -> bool {
    let weak = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    if let Some(inm) = if_none_match {
        let Some(etag) = field(b"etag") else {
            return false;
        };
        let etag = weak(etag);
        return crate::http::tokens(inm).any(|t| t == b"*" || weak(t) == etag);
    }
    let (Some(ims), Some(lm)) = (if_modified_since, field(b"last-modified")) else {
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

/// Writes the header lines of a 304 answering a conditional GET whose
/// validators match the backend's 200 (head `resp` parsed from `buf`):
/// the fields RFC 9110 §15.4.5 asks for, taken from that 200.
pub(super) fn not_modified_fields(out: &mut BytesMut, buf: &[u8], resp: &ResponseHead) {
    for h in &resp.headers {
        let name = h.name.of(buf);
        if NOT_MODIFIED_FIELDS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            out.put_slice(name);
            out.put_slice(b": ");
            out.put_slice(h.value.of(buf));
            out.put_slice(b"\r\n");
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How often a coalesced miss looks whether the fetch it waits for is
/// done. Waiting is rare (concurrent misses of one key) and works across
/// shards without a cross-thread wake-up.
const COALESCE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// A proxied request as the cache looks at it.
pub(super) struct Ask<'r, 'a, 's> {
    pub r: &'r Resolved<'a, 's>,
    pub head: &'r RequestHead,
    /// The buffer `head`'s spans point into.
    pub buf: &'r [u8],
    pub method: &'r [u8],
    /// The backend sees the client's Host, so it is part of the key.
    pub preserve_host: bool,
    /// The admin token: it may refresh entries like the invalidation token.
    pub admin_token: Option<KeyDigest>,
    /// The request came over TLS (the scheme is part of the key).
    pub https: bool,
}

impl Ask<'_, '_, '_> {
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.head
            .headers
            .iter()
            .find(|h| h.name.of(self.buf).eq_ignore_ascii_case(name))
            .map(|h| h.value.of(self.buf))
    }
}

/// The cache step for a proxied request: `None` when its route does not
/// cache this method (or the request is a WebSocket upgrade); else the
/// decision, after waiting for another request that is fetching the same
/// key (request coalescing) for up to the cache's `lock_timeout`. A wait
/// that times out, or whose fetch fails, is answered by the expired entry
/// if `stale_if_error` allows, else fetches without the cache.
pub(super) async fn decide(
    shard: &Shard,
    ask: &Ask<'_, '_, '_>,
    upgrade: bool,
    kbuf: &mut Vec<u8>,
) -> Option<CacheStep> {
    let cache = shard.cache.as_ref()?;
    if upgrade {
        return None;
    }
    let r = ask.r;
    let stage = r.stage.cache.as_ref()?;
    let rc = r.stage.route_cache.get(r.route as usize)?.as_ref()?;
    let wanted = if ask.method == b"HEAD" {
        &b"GET"[..]
    } else {
        ask.method
    };
    if !rc.methods.iter().any(|m| **m == *wanted) {
        return None;
    }
    // A GET or HEAD with a body ("fat GET"): the key does not cover the
    // body, and a backend that reflects it would poison the entry. It is
    // passed through, neither answered from the cache nor stored (NGINX
    // caches it; Varnish drops the body).
    if wanted == b"GET" && ask.head.body != crate::http::BodyKind::None {
        return None;
    }
    let look = |kbuf: &mut Vec<u8>, waited: Option<u64>| {
        lookup(
            cache,
            &shard.counters,
            ask,
            stage,
            rc,
            shard.coarse_now(),
            waited,
            kbuf,
        )
    };
    let mut step = look(kbuf, None);
    if let CacheStep::Wait(stale) = &mut step {
        let mut fallback = stale.take();
        let since = cache.now_ns();
        let deadline = shard.coarse_now() + cache.lock_timeout;
        loop {
            if shard.coarse_now() >= deadline {
                shard.counters.cache_lookup(r.metric, fallback.is_some());
                step = match fallback {
                    Some(entry) => CacheStep::Hit(Hit::new(entry, wants_warning(ask, stage))),
                    None => CacheStep::Miss(None),
                };
                break;
            }
            glommio::timer::sleep(COALESCE_POLL).await;
            match look(kbuf, Some(since)) {
                CacheStep::Wait(stale) => fallback = stale,
                other => {
                    step = other;
                    break;
                }
            }
        }
    }
    if let CacheStep::Hit(hit) | CacheStep::Revalidate(hit, _) = &mut step {
        hit.not_modified = not_modified(
            &hit.entry,
            ask.header(b"if-none-match"),
            ask.header(b"if-modified-since"),
        );
        // A GET's byte range of a stored 200, unless `If-Range` names
        // another representation (as NGINX serves ranges from its cache).
        if let (false, 200, b"GET", Some(value)) = (
            hit.not_modified,
            hit.entry.status,
            ask.method,
            ask.header(b"range"),
        ) {
            let headers = &hit.entry.headers;
            let current = ask.header(b"if-range").is_none_or(|v| {
                range::if_range_matches(
                    v,
                    stored_header(headers, b"etag"),
                    stored_header(headers, b"last-modified"),
                )
            });
            if current {
                hit.range = range::single(value, hit.entry.body.len() as u64);
            }
        }
    }
    Some(step)
}

/// Whether an answer from the cache to this request carries the warning
/// of an ignored, unauthorized `max-age=0` (`unauthorized =
/// "ignore_with_header"`).
fn wants_warning(ask: &Ask<'_, '_, '_>, stage: &StageCache) -> bool {
    stage.require_authorization
        && stage.unauthorized == UnauthorizedInvalidation::IgnoreWithHeader
        && ask.header(b"cache-control").is_some_and(wants_fresh)
}

/// Looks a request up (`method` GET or HEAD, or one its route opts in)
/// with cache settings `stage` / `rc`; `waited` is when (cache clock) it
/// began waiting for another request's fetch of the key, if it did;
/// `kbuf` is scratch for the key.
#[allow(clippy::too_many_arguments)]
fn lookup(
    cache: &Arc<Cache>,
    counters: &Counters,
    ask: &Ask<'_, '_, '_>,
    stage: &StageCache,
    rc: &RouteCache,
    now: Instant,
    waited: Option<u64>,
    kbuf: &mut Vec<u8>,
) -> CacheStep {
    let (r, head, buf, method) = (ask.r, ask.head, ask.buf, ask.method);
    // HEAD reads what GET stored and fills nothing (its answer has no body).
    let fills = method != b"HEAD";
    let shared = method == b"GET" || method == b"HEAD";
    let header = |name: &str| ask.header(name.as_bytes());
    let param = |i: usize| r.params.get(i).map(|range| &r.path[range]);
    let input = KeyInput {
        route: r.metric,
        method: (!shared).then_some(method),
        https: ask.https,
        // Whole-URL keys include the Host (Varnish's default); parameter
        // keys too when the backend sees the client's Host.
        host: (rc.key.is_empty() || ask.preserve_host)
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
        return CacheStep::Bypass;
    }
    key::build(kbuf, &stage.prefix, &rc.key, &input);
    let hash = cache.hasher.hash(kbuf);
    let counter = r.metric;

    let mut refresh = false;
    let mut warn = false;
    if header("cache-control").is_some_and(wants_fresh) {
        let token = head.header(HeaderKind::CacheToken).map(|h| h.value.of(buf));
        if !stage.require_authorization || cache.authorized(token, ask.admin_token) {
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
    let find = |kbuf: &mut Vec<u8>| {
        let found = cache.store.get(hash, kbuf, now);
        // A URL whose response varies: look the request's variant up.
        match &found {
            Lookup::Fresh(e) | Lookup::Stale(e) if e.vary.is_some() => {
                let names = e.vary.clone().unwrap_or_default();
                let base_len = kbuf.len();
                key::variant(kbuf, &names, |n: &[u8]| ask.header(n));
                let variant = cache.store.get(cache.hasher.hash(kbuf), kbuf, now);
                kbuf.truncate(base_len);
                variant
            }
            _ => found,
        }
    };
    let mut stale = None;
    if !refresh {
        match find(kbuf) {
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
    // Range and If-Match-style requests are answered from the cache (a
    // full 200) but do not fill it: their answer may be a 206 or a 412.
    // If-None-Match / If-Modified-Since do fill: the backend is asked for
    // the whole answer and the validators are evaluated here.
    let unfillable = ["range", "if-match", "if-unmodified-since", "if-range"]
        .iter()
        .any(|h| header(h).is_some());
    let claim = if fills && !unfillable {
        cache.store.claim(hash, now)
    } else {
        Claim::Uncacheable
    };
    let if_error = stale
        .as_ref()
        .filter(|e| within(e, rc.stale_if_error) && e.vary.is_none())
        .cloned();
    if claim == Claim::Busy {
        // Another request is fetching it: serve the expired entry while
        // it does, if allowed, else wait for it.
        if let Some(entry) = stale.filter(|e| within(e, rc.stale_while_revalidate)) {
            counters.cache_lookup(counter, true);
            return CacheStep::Hit(Hit::new(entry, warn));
        }
        return CacheStep::Wait(if_error);
    }
    if claim == Claim::Claimed && !refresh {
        // The fetch of another request may have stored the answer and
        // released the key between the look above and this claim.
        if let Lookup::Fresh(entry) = find(kbuf) {
            cache.store.release(hash, None, None);
            counters.cache_lookup(counter, true);
            return CacheStep::Hit(Hit::new(entry, warn));
        }
    }
    if let (Some(since), Claim::Claimed, Some(entry)) = (waited, claim, &if_error) {
        if cache.store.failed_since(hash, since) {
            // The fetch this request waited for failed, and its own
            // client got the expired entry: so does this one, rather than
            // each waiting request trying the failing backend in turn.
            cache.store.release(hash, None, None);
            counters.cache_lookup(counter, true);
            return CacheStep::Hit(Hit::new(entry.clone(), warn));
        }
    }
    if claim == Claim::Uncacheable {
        counters.cache_lookup(counter, false);
        return CacheStep::Miss(None);
    }

    // Only a GET's validators are evaluated here (RFC 9110 §13.1.2: for
    // other methods a failed condition is a 412, the backend's call).
    let conditional = header("if-none-match").is_some() || header("if-modified-since").is_some();
    let validators = (conditional && method == b"GET").then(|| Validators {
        if_none_match: header("if-none-match").map(Into::into),
        if_modified_since: header("if-modified-since").map(Into::into),
    });
    let mut fill = Fill {
        cache: cache.clone(),
        hash,
        key: kbuf.as_slice().into(),
        ttl_ns: nanos(rc.ttl),
        statuses: rc.statuses.clone(),
        ignore_backend: stage.ignore_backend_cache_control,
        stale: None,
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
        validators,
        claimed: true,
        failed: false,
        revalidating: false,
    };
    let revalidate = stale
        .as_ref()
        .filter(|e| within(e, rc.stale_while_revalidate) && head.body == BodyKind::None);
    if let Some(entry) = revalidate {
        // stale-while-revalidate (RFC 5861): the expired entry answers at
        // once and this request's connection refreshes it afterwards, as
        // NGINX's `proxy_cache_background_update` does. The claim is
        // given back until then (a slow client must not hold it) and taken
        // again by the refresh, which gives up if another request has it.
        cache.store.release(hash, None, None);
        fill.claimed = false;
        fill.revalidating = true;
        fill.stale = Some(entry.clone());
        counters.cache_lookup(counter, true);
        return CacheStep::Revalidate(Hit::new(entry.clone(), warn), fill);
    }
    counters.cache_lookup(counter, false);
    fill.stale = if_error;
    CacheStep::Miss(Some(fill))
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
        let total = entry.body.len();
        // The status and the part of the body it sends (`range::single`
        // keeps a part within the body).
        let (status, span) = match hit.range {
            _ if hit.not_modified => (304, 0..0),
            RangeAsk::Whole => (entry.status, 0..total),
            RangeAsk::Part(start, end) => (206, start as usize..(end as usize).min(total)),
            RangeAsk::Unsatisfiable => (416, 0..0),
        };
        let body = entry.body.get(span.clone()).unwrap_or_default();
        if status == 416 {
            // RFC 9110 §15.5.17: the representation's length, no body.
            let mut n = itoa::Buffer::new();
            block.put_slice(b"content-range: bytes */");
            block.put_slice(n.format(total).as_bytes());
            block.put_slice(b"\r\n");
            let resp = LocalResponse {
                status,
                headers: &block,
                body: &[],
            };
            self.local_response(snap, &resp, info, rid);
            self.ubuf = block;
            return;
        }
        if let RangeAsk::Part(start, end) = hit.range {
            if !hit.not_modified {
                let mut n = itoa::Buffer::new();
                block.put_slice(b"content-range: bytes ");
                block.put_slice(n.format(start).as_bytes());
                block.put_slice(b"-");
                block.put_slice(n.format(end - 1).as_bytes());
                block.put_slice(b"/");
                block.put_slice(n.format(total).as_bytes());
                block.put_slice(b"\r\n");
            }
        }
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
            status,
            headers,
            body,
        };
        let has_body = status >= 200 && status != 204 && status != 304;
        if body.len() >= ZERO_COPY_MIN && has_body && !info.head_request {
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
            self.pending = Some(entry.body.slice(span));
        } else {
            self.local_response(snap, &resp, info, rid);
        }
        self.ubuf = block;
    }

    /// Feeds relayed body bytes to the capture, if one is running.
    pub(super) fn capture(&mut self, data: &[u8]) {
        if let Some(c) = self.capture.as_mut() {
            if !c.push(data) {
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
    let (raw_path, query) = match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    let text = || String::from_utf8_lossy(target).into_owned();
    // The path in the form requests are keyed by (`/%61` is `/a`).
    let normal = crate::http::normal_form(&String::from_utf8_lossy(raw_path))
        .map_err(|_| FlushUrlError::NoRoute(text()))?;
    let path = normal.as_bytes();
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
    let mut removed = 0;
    // The entries for both schemes.
    for https in [false, true] {
        let input = KeyInput {
            route: r.metric,
            method: None,
            https,
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
        // Variants live in any segment: every segment is scanned for them
        // (an admin operation, not a request path).
        removed += usize::from(cache.flush_key(&k));
        k.extend_from_slice(b"\0vary\0");
        removed += cache.store.remove_prefix(&k);
    }
    Ok(removed)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::http::response;

    /// A response head parsed from `raw` (for this module's and
    /// `fill.rs`'s tests).
    pub(in crate::server) fn head(raw: &[u8]) -> ResponseHead {
        let mut out = ResponseHead::default();
        response::parse(raw, 65536, false, b"x-request-id", &mut out)
            .expect("valid")
            .expect("complete");
        out
    }

    pub(in crate::server) const OK: &[u8] = b"HTTP/1.1 200 OK\r\nETag: W/\"v1\"\r\nLast-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\nCache-Control: max-age=60\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";

    #[test]
    fn a_304_carries_only_the_fields_rfc_9110_lists() {
        let mut out = BytesMut::new();
        not_modified_fields(&mut out, OK, &head(OK));
        assert_eq!(
            &out[..],
            &b"ETag: W/\"v1\"\r\nCache-Control: max-age=60\r\n"[..]
        );
    }
}
