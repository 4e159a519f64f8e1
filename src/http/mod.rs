//! Zero-copy HTTP/1.1 codec, sans-I/O.
//!
//! The connection driver in `server/` reads bytes into a per-connection
//! buffer and hands them here. Heads are parsed with `httparse`; what we keep
//! are byte ranges ([`Span`]) into that buffer, never owned strings, and the
//! upstream request head is written from those ranges. Framing follows
//! RFC 9112 strictly, because a proxy that disagrees with its backend about
//! where a message ends is a request-smuggling hole:
//!
//! * [`request`] parses and validates a request head and decides its framing;
//! * [`response`] parses a backend's response head and decides its framing;
//! * [`chunked`] decodes chunked bodies incrementally;
//! * [`write`](mod@write) writes heads (upstream requests, client responses, errors).
//!
//! Everything here is written by hand because it is the core of the hot path
//! (see DESIGN.md); `httparse` does the tokenising.
#![forbid(unsafe_code)]

pub mod chunked;
pub mod range;
pub mod request;
pub mod response;
mod target;
pub use target::normal_form;
pub mod write;

use std::ops::Range;

/// A byte range into the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes this span covers in `buf`.
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Span of `inner`, a sub-slice of `base`, relative to `base`. A slice
    /// that does not lie inside `base` (httparse returns a static `""` for
    /// an absent reason phrase) becomes an empty span.
    fn within(base: &[u8], inner: &[u8]) -> Span {
        let (b, i) = (base.as_ptr() as usize, inner.as_ptr() as usize);
        match i.checked_sub(b) {
            Some(start) if start + inner.len() <= base.len() => {
                Span::new(start, start + inner.len())
            }
            _ => Span::default(),
        }
    }
}

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Request limits, checked while parsing and while reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Request target, in bytes (414 above it).
    pub max_uri_bytes: usize,
    /// Number of header fields (431 above it).
    pub max_headers: usize,
    /// Request body, in bytes (413 above it).
    pub max_body_bytes: u64,
    /// A backend's response head, in bytes (502 above it).
    pub max_response_header_bytes: usize,
}

/// Hard ceiling on the configurable header count: the parser's slot array.
pub const MAX_HEADER_SLOTS: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 10_240,
            max_uri_bytes: 8_192,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            max_response_header_bytes: 64 * 1024,
        }
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (Content-Length: 0, absent, or a message that cannot have one).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Header fields the proxy treats specially, classified once at parse time
/// so the writers can skip or rewrite them without comparing names again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    /// The configured request-id header.
    RequestId,
    /// `x-api-key`: the client's API key (forwarded like any header).
    ApiKey,
    /// Named by a `Connection` header: hop-by-hop.
    NamedByConnection,
    /// `x-cache-invalidate-token`: the cache's invalidation secret, read
    /// by the gateway and never forwarded.
    CacheToken,
}

impl HeaderKind {
    /// True for headers never forwarded from one hop to the next as they are.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            HeaderKind::Connection
                | HeaderKind::KeepAlive
                | HeaderKind::ProxyConnection
                | HeaderKind::Te
                | HeaderKind::Trailer
                | HeaderKind::Upgrade
                | HeaderKind::TransferEncoding
                | HeaderKind::NamedByConnection
        )
    }

    /// Classifies a header name; `request_id` is the configured id header
    /// name in lower case.
    pub fn classify(name: &[u8], request_id: &[u8]) -> HeaderKind {
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        let kind = match name.len() {
            2 if eq("te") => HeaderKind::Te,
            4 if eq("host") => HeaderKind::Host,
            6 if eq("expect") => HeaderKind::Expect,
            7 if eq("trailer") => HeaderKind::Trailer,
            7 if eq("upgrade") => HeaderKind::Upgrade,
            9 if eq("x-api-key") => HeaderKind::ApiKey,
            10 if eq("connection") => HeaderKind::Connection,
            10 if eq("keep-alive") => HeaderKind::KeepAlive,
            14 if eq("content-length") => HeaderKind::ContentLength,
            15 if eq("x-forwarded-for") => HeaderKind::XForwardedFor,
            16 if eq("proxy-connection") => HeaderKind::ProxyConnection,
            16 if eq("x-forwarded-host") => HeaderKind::XForwardedHost,
            17 if eq("transfer-encoding") => HeaderKind::TransferEncoding,
            17 if eq("x-forwarded-proto") => HeaderKind::XForwardedProto,
            n if n == crate::cache::TOKEN_HEADER.len() && eq(crate::cache::TOKEN_HEADER) => {
                HeaderKind::CacheToken
            }
            _ => HeaderKind::Other,
        };
        if kind == HeaderKind::Other && name.eq_ignore_ascii_case(request_id) {
            HeaderKind::RequestId
        } else {
            kind
        }
    }
}

/// One header field of a parsed head.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    pub kind: HeaderKind,
}

/// Splits a comma-separated header value into trimmed, non-empty tokens.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Parses a Content-Length value strictly: digits only, no sign, no spaces;
/// a list of identical values (`5, 5`) is accepted as one, per RFC 9110 §8.6.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        match result {
            Some(prev) if prev != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

/// Marks headers named by a `Connection` header as hop-by-hop.
pub(crate) fn mark_connection_named(buf: &[u8], headers: &mut [Header]) {
    let named: Vec<Span> = headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Connection)
        .flat_map(|h| tokens(h.value.of(buf)).map(|t| Span::within(buf, t)))
        .collect();
    for h in headers.iter_mut() {
        if h.kind == HeaderKind::Other || h.kind == HeaderKind::RequestId {
            let name = h.name.of(buf);
            if named.iter().any(|n| n.of(buf).eq_ignore_ascii_case(name)) {
                h.kind = HeaderKind::NamedByConnection;
            }
        }
    }
}

/// The value of one hex digit.
pub(crate) fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 token characters (field names, methods).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Rejects bare LF line endings in a head (httparse accepts them).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// The name a `Host` value selects by: `host:port` → `host`,
/// `[v6]:port` → `[v6]`, and a fully qualified `host.` → `host` (the same
/// name, as NGINX treats it).
pub fn host_name(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match memchr::memchr(b']', host) {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    let name = match memchr::memrchr(b':', host) {
        Some(i) => &host[..i],
        None => host,
    };
    match name.strip_suffix(b".") {
        Some(n) if !n.is_empty() => n,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_drop_port_and_final_dot() {
        assert_eq!(
            super::host_name(b"api.example.com:8443"),
            b"api.example.com"
        );
        assert_eq!(super::host_name(b"api.example.com."), b"api.example.com");
        assert_eq!(
            super::host_name(b"api.example.com.:443"),
            b"api.example.com"
        );
        assert_eq!(super::host_name(b"[::1]:443"), b"[::1]");
        assert_eq!(super::host_name(b"."), b".");
        assert_eq!(super::host_name(b"localhost"), b"localhost");
    }

    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b"1 2"), None);
        assert_eq!(parse_content_length(b"0x10"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn classifies_headers_case_insensitively() {
        assert_eq!(
            HeaderKind::classify(b"Content-LENGTH", b"x-request-id"),
            HeaderKind::ContentLength
        );
        assert_eq!(
            HeaderKind::classify(b"X-Request-Id", b"x-request-id"),
            HeaderKind::RequestId
        );
        assert_eq!(
            HeaderKind::classify(b"Accept", b"x-request-id"),
            HeaderKind::Other
        );
        assert!(HeaderKind::classify(b"TE", b"x").is_hop_by_hop());
    }

    #[test]
    fn detects_bare_lf() {
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }
}
