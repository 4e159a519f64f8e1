//! Storing a backend answer in the cache: the claim on its key
//! ([`Fill`], released when dropped), the copy taken while the answer is
//! relayed ([`Capture`]), and what may be stored and for how long.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::caching::validators_match;
use crate::cache::control::{expires_in, Storable};
use crate::cache::key;
use crate::cache::store::{CachedResponse, Claim, Lookup, HIT_FOR_MISS_NS};
use crate::cache::Cache;
use crate::http::response::ResponseHead;
use crate::http::{BodyKind, HeaderKind};

/// How to store the response to a miss. Holds the key's claim until
/// dropped.
pub(super) struct Fill {
    pub(super) cache: Arc<Cache>,
    pub(super) hash: u64,
    pub(super) key: Box<[u8]>,
    pub(super) ttl_ns: u64,
    pub(super) statuses: Vec<u16>,
    pub(super) ignore_backend: bool,
    /// An expired entry that may stand in if the backend fails; for a
    /// refresh, the expired entry that was served.
    pub(super) stale: Option<Arc<CachedResponse>>,
    /// The request's headers (lower-case names), in case the response
    /// varies by some of them.
    pub(super) req_headers: Vec<HeaderPair>,
    /// Set when the backend's answer proved not storable (not for a
    /// failed fetch): the key is then fetched without coalescing for a
    /// while.
    pub(super) unstorable: bool,
    /// The client's `If-None-Match` and `If-Modified-Since` (a GET), when
    /// it sent either: they are not forwarded (the cache needs the whole
    /// answer, as NGINX's `proxy_cache` does) and are evaluated against
    /// the backend's 200 instead.
    pub(super) validators: Option<Validators>,
    /// Whether this fill holds the key's claim (a refresh after a
    /// `stale_while_revalidate` answer claims only when it starts).
    pub(super) claimed: bool,
    /// Set while the fetch counts as failed (no response head yet, or a
    /// 5xx): requests waiting on the claim then answer from an expired
    /// entry (`stale_if_error`).
    pub(super) failed: bool,
    /// A refresh of a served expired entry: if the new answer may not be
    /// stored, the expired entry goes too (it must not keep being served).
    pub(super) revalidating: bool,
}

/// A conditional GET's validators (RFC 9110 §13.1.2, §13.1.3).
#[derive(Debug, Default)]
pub(super) struct Validators {
    pub(super) if_none_match: Option<Box<[u8]>>,
    pub(super) if_modified_since: Option<Box<[u8]>>,
}

impl Validators {
    /// Whether the client's copy is current, judged on the backend's
    /// response head (parsed from `buf`).
    pub(super) fn not_modified(&self, buf: &[u8], resp: &ResponseHead) -> bool {
        resp.status == 200
            && validators_match(
                |name| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.of(buf).eq_ignore_ascii_case(name))
                        .map(|h| h.value.of(buf))
                },
                self.if_none_match.as_deref(),
                self.if_modified_since.as_deref(),
            )
    }
}

/// A request header kept for `Vary`: lower-case name, value.
pub(super) type HeaderPair = (Box<[u8]>, Box<[u8]>);

impl Fill {
    /// Takes the key's claim for a refresh; false if another request holds
    /// it or the key is marked not storable (the refresh is then dropped).
    pub(super) fn claim(&mut self) -> bool {
        let now = self.cache.now_ns();
        self.claimed = self.cache.store.claim(self.hash, now) == Claim::Claimed;
        // Another connection that served the same expired entry may have
        // refreshed it already (its variant's key, for a `Vary` answer).
        let refreshed = self.stale.as_ref().is_some_and(|e| {
            let hash = self.cache.hasher.hash(&e.key);
            matches!(self.cache.store.get(hash, &e.key, now), Lookup::Fresh(_))
        });
        self.claimed && !refreshed
    }
}

impl Drop for Fill {
    /// Releases the claim; if the answer was not storable, marks the key
    /// so that requests for it stop waiting on one another for a while;
    /// if the fetch failed, marks that for the requests waiting on it.
    fn drop(&mut self) {
        if !self.claimed {
            return;
        }
        let now = self.cache.now_ns();
        let until = self.unstorable.then(|| now.saturating_add(HIT_FOR_MISS_NS));
        if self.unstorable && self.revalidating {
            self.cache.store.remove(self.hash, &self.key);
        }
        self.cache
            .store
            .release(self.hash, until, self.failed.then_some(now));
    }
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

/// Headers a stored response keeps: end-to-end ones, without framing,
/// Date (written fresh on every hit), Age (computed on every hit) or the
/// request id.
fn stored_headers(buf: &[u8], resp: &ResponseHead) -> Bytes {
    let kept = || {
        resp.headers.iter().filter(|h| match h.kind {
            HeaderKind::ContentLength | HeaderKind::RequestId => false,
            k if k.is_hop_by_hop() => false,
            _ => {
                let name = h.name.of(buf);
                !name.eq_ignore_ascii_case(b"date") && !name.eq_ignore_ascii_case(b"age")
            }
        })
    };
    // Sized exactly: the entry is charged for its length, so it must not
    // hold spare capacity.
    let len = kept().map(|h| h.name.len() + h.value.len() + 4).sum();
    let mut out = BytesMut::with_capacity(len);
    for h in kept() {
        out.put_slice(h.name.of(buf));
        out.put_slice(b": ");
        out.put_slice(h.value.of(buf));
        out.put_slice(b"\r\n");
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
) -> Option<Box<Capture>> {
    let capture = capture_of(&fill, buf, resp, max);
    match capture {
        Some(st) => Some(Box::new(Capture {
            initial_age: received_age(buf, resp),
            vary: st.vary,
            status: resp.status,
            headers: stored_headers(buf, resp),
            body: BytesMut::with_capacity(st.expect.min(max)),
            ttl_ns: st.ttl_ns,
            no_stale: st.no_stale,
            max,
            fill,
        })),
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
            let now = crate::clock::wall()
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
            // Too large to store: the next answer will be too.
            self.fill.unstorable = true;
            return false;
        }
        self.body.put_slice(data);
        true
    }

    /// Stores the captured response (then the claim is released). A
    /// response with `Vary` is stored under its variant's key, and the
    /// URL's key gets an entry naming the headers it varies by.
    pub(super) fn finish(mut self: Box<Self>, cache: &Cache) {
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
                // A body grown by doubling (chunked, or read until close)
                // keeps up to half its buffer spare; store an exact copy so
                // the entry holds what it is charged for. A Content-Length
                // body was reserved exactly and is kept as it is.
                if body.capacity() > body.len() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::caching::tests::{head, OK};

    fn validators(inm: Option<&str>, ims: Option<&str>) -> Validators {
        Validators {
            if_none_match: inm.map(|v| v.as_bytes().into()),
            if_modified_since: ims.map(|v| v.as_bytes().into()),
        }
    }

    #[test]
    fn validators_are_judged_on_the_backend_answer() {
        let resp = head(OK);
        // If-None-Match: weak comparison, lists, `*`.
        assert!(validators(Some("\"v1\""), None).not_modified(OK, &resp));
        assert!(validators(Some("\"v0\", W/\"v1\""), None).not_modified(OK, &resp));
        assert!(validators(Some("*"), None).not_modified(OK, &resp));
        assert!(!validators(Some("\"v2\""), None).not_modified(OK, &resp));
        // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        let late = Some("Wed, 25 Nov 2026 10:00:00 GMT");
        assert!(!validators(Some("\"v2\""), late).not_modified(OK, &resp));
        // If-Modified-Since: not modified at or after Last-Modified.
        assert!(validators(None, late).not_modified(OK, &resp));
        assert!(validators(None, Some("Tue, 24 Nov 2026 10:00:00 GMT")).not_modified(OK, &resp));
        assert!(!validators(None, Some("Mon, 23 Nov 2026 10:00:00 GMT")).not_modified(OK, &resp));
        assert!(!validators(None, Some("yesterday")).not_modified(OK, &resp));
        // Only a 200 is turned into a 304.
        let raw = b"HTTP/1.1 404 Not Found\r\nETag: \"v1\"\r\nContent-Length: 0\r\n\r\n";
        assert!(!validators(Some("\"v1\""), None).not_modified(raw, &head(raw)));
    }

    #[test]
    fn stored_headers_drop_per_response_fields_and_hold_no_spare_room() {
        let raw = b"HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\nAge: 3\r\nConnection: keep-alive\r\nx-request-id: abc\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n";
        let stored = stored_headers(raw, &head(raw));
        assert_eq!(&stored[..], &b"Content-Type: text/plain\r\nX-A: 1\r\n"[..]);
    }
}
