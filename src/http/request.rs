//! Request head parsing and validation (RFC 9112 §2–§7).
//!
//! [`parse`] turns the bytes at the front of a connection buffer into a
//! [`RequestHead`] of spans, or says more bytes are needed, or rejects the
//! request with the status a client should see. Every framing rule that a
//! smuggling attack relies on is enforced here: Content-Length with
//! Transfer-Encoding, differing Content-Lengths, a Transfer-Encoding whose
//! final coding is not `chunked`, obs-fold, bare LF, control bytes,
//! whitespace before the colon, a missing or repeated Host. (Control bytes
//! in values, obs-fold and whitespace before the colon are rejected by
//! httparse itself; the tests pin that.)

use std::mem::MaybeUninit;

use super::target::{parse_target, valid_host};
use super::{
    has_bare_lf, mark_connection_named, parse_content_length, tokens, BodyKind, Header, HeaderKind,
    Limits, Span, Version, MAX_HEADER_SLOTS,
};

/// Why a request head was rejected; each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request header block too large")]
    HeaderTooLarge,
    #[error("request URI too long")]
    UriTooLong,
    #[error("HTTP version not supported")]
    VersionNotSupported,
    #[error("transfer coding not implemented")]
    NotImplemented,
    #[error("expectation not supported")]
    ExpectationFailed,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl HeadError {
    /// Status code a client gets for this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::BadRequest(_) => 400,
            HeadError::HeaderTooLarge => 431,
            HeadError::UriTooLong => 414,
            HeadError::VersionNotSupported => 505,
            HeadError::NotImplemented => 501,
            HeadError::ExpectationFailed => 417,
            HeadError::MethodNotAllowed => 405,
        }
    }
}

/// A parsed request head: spans into the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Length of the head including the blank line.
    pub head_len: usize,
    pub method: Span,
    /// The request target as sent (the path inside it is rewritten in
    /// place when normalised: read [`RequestHead::path`] and `query`).
    pub target: Span,
    /// Path part of the target; empty for an absolute-form target without
    /// a path, which means `/` (see [`RequestHead::path`]).
    pub path: Span,
    /// Query string without the `?`, if any.
    pub query: Option<Span>,
    pub version: Version,
    pub headers: Vec<Header>,
    /// Host header value, or the authority of an absolute-form target.
    pub host: Option<Span>,
    pub body: BodyKind,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// A WebSocket upgrade (`Connection: upgrade` + `Upgrade: websocket`
    /// on an HTTP/1.1 GET): the Upgrade header is forwarded and a 101 from
    /// the backend turns the connection into a tunnel.
    pub websocket_upgrade: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            head_len: 0,
            method: Span::default(),
            target: Span::default(),
            path: Span::default(),
            query: None,
            version: Version::Http11,
            headers: Vec::new(),
            host: None,
            body: BodyKind::None,
            keep_alive: true,
            expect_continue: false,
            websocket_upgrade: false,
        }
    }
}

impl RequestHead {
    /// The request path (`/` when an absolute-form target had none).
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        if self.path.is_empty() {
            b"/"
        } else {
            self.path.of(buf)
        }
    }

    /// True for methods RFC 9110 §9.2.2 calls idempotent (safe to retry).
    pub fn is_idempotent(&self, buf: &[u8]) -> bool {
        matches!(
            self.method.of(buf),
            b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"
        )
    }

    /// First header of `kind`.
    pub fn header(&self, kind: HeaderKind) -> Option<&Header> {
        self.headers.iter().find(|h| h.kind == kind)
    }
}

/// Parses the request head at the start of `buf` into `out` (whose header
/// vector is reused). Returns `Ok(None)` when the head is incomplete and
/// still within limits. The path is normalised in place (see
/// [`super::target`]): `out.path` covers the normalised bytes.
pub fn parse(
    buf: &mut [u8],
    limits: &Limits,
    request_id_header: &[u8],
    out: &mut RequestHead,
) -> Result<Option<usize>, HeadError> {
    let parsed = parse_head(buf, limits, request_id_header, out)?;
    if parsed.is_some() {
        let path = out.path.range();
        let len = super::target::normalize(&mut buf[path.clone()]);
        out.path = Span::new(path.start, path.start + len);
    }
    Ok(parsed)
}

/// Standard methods (RFC 9110 §9 and PATCH): one of these in another
/// letter case is refused, since a backend that compares methods without
/// regard to case would take `get` for a GET the router never saw.
const STANDARD_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

fn check_method(method: &[u8]) -> Result<(), HeadError> {
    if STANDARD_METHODS.contains(&method) {
        return Ok(());
    }
    if STANDARD_METHODS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
    {
        return Err(HeadError::BadRequest(
            "a standard method in the wrong letter case",
        ));
    }
    Ok(())
}

fn parse_head(
    buf: &[u8],
    limits: &Limits,
    request_id_header: &[u8],
    out: &mut RequestHead,
) -> Result<Option<usize>, HeadError> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADER_SLOTS] =
        [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeaderTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => {
            if buf.len() > limits.max_header_bytes {
                return Err(too_large(buf, limits));
            }
            return Err(HeadError::BadRequest("malformed request head"));
        }
    };
    let head_len = match status {
        httparse::Status::Partial => {
            if buf.len() > limits.max_header_bytes {
                return Err(too_large(buf, limits));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::BadRequest("incomplete request line"));
    };
    if target.len() > limits.max_uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    if head_len > limits.max_header_bytes {
        return Err(HeadError::HeaderTooLarge);
    }
    if req.headers.len() > limits.max_headers {
        return Err(HeadError::HeaderTooLarge);
    }
    // Empty lines before the request line are ignored (RFC 9112 §2.2),
    // CRLF or bare LF alike, as httparse and NGINX do; bare LF anywhere
    // in the head itself is refused.
    let skip = buf[..head_len]
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head_len);
    if has_bare_lf(&buf[skip..head_len]) {
        return Err(HeadError::BadRequest("bare LF in request head"));
    }

    check_method(method.as_bytes())?;
    out.head_len = head_len;
    out.method = Span::within(buf, method.as_bytes());
    out.target = Span::within(buf, target.as_bytes());
    out.version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    out.host = None;
    out.query = None;
    parse_target(buf, out)?;

    out.headers.clear();
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked_last = false;
    let mut te_chunked_count = 0u32;
    let mut te_other = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_names_others = false;
    let mut conn_upgrade = false;
    let mut upgrade_websocket = false;
    let mut host_count = 0u32;
    out.expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let kind = HeaderKind::classify(name, request_id_header);
        match kind {
            HeaderKind::Host => {
                host_count += 1;
                if host_count > 1 {
                    return Err(HeadError::BadRequest("duplicate Host header"));
                }
                if !valid_host(value) {
                    return Err(HeadError::BadRequest("invalid Host header"));
                }
                if out.host.is_none() {
                    out.host = Some(Span::within(buf, value));
                }
            }
            HeaderKind::ContentLength => {
                let n = parse_content_length(value)
                    .ok_or(HeadError::BadRequest("invalid Content-Length"))?;
                match content_length {
                    Some(prev) if prev != n => {
                        return Err(HeadError::BadRequest("conflicting Content-Length headers"))
                    }
                    _ => content_length = Some(n),
                }
            }
            HeaderKind::TransferEncoding => {
                te_seen = true;
                for t in tokens(value) {
                    if te_chunked_last {
                        // Something follows `chunked`: it is no longer final.
                        te_chunked_last = false;
                    }
                    if t.eq_ignore_ascii_case(b"chunked") {
                        te_chunked_count += 1;
                        te_chunked_last = true;
                    } else {
                        te_other = true;
                    }
                }
            }
            HeaderKind::Connection => {
                for t in tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        conn_upgrade = true;
                    } else {
                        conn_names_others = true;
                    }
                }
            }
            HeaderKind::Upgrade => {
                upgrade_websocket |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
            }
            HeaderKind::Expect => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    out.expect_continue = true;
                } else {
                    return Err(HeadError::ExpectationFailed);
                }
            }
            _ => {}
        }
        out.headers.push(Header {
            name: Span::within(buf, name),
            value: Span::within(buf, value),
            kind,
        });
    }

    if conn_names_others {
        mark_connection_named(buf, &mut out.headers);
    }

    // RFC 9112 §3.2: every HTTP/1.1 request carries Host, absolute-form too.
    if out.version == Version::Http11 && host_count == 0 {
        return Err(HeadError::BadRequest("missing Host header"));
    }
    // A gateway neither opens CONNECT tunnels nor reflects TRACE (which
    // would echo credentials back); Amazon API Gateway supports neither.
    if matches!(out.method.of(buf), b"CONNECT" | b"TRACE") {
        return Err(HeadError::MethodNotAllowed);
    }

    out.body = if te_seen {
        if content_length.is_some() {
            return Err(HeadError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if out.version == Version::Http10 {
            return Err(HeadError::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !te_chunked_last || te_chunked_count != 1 {
            return Err(HeadError::BadRequest(
                "chunked is not the final transfer coding",
            ));
        }
        if te_other {
            return Err(HeadError::NotImplemented);
        }
        BodyKind::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    out.keep_alive = match out.version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };
    // RFC 9110 §10.1.1: ignore 100-continue from HTTP/1.0 clients, which
    // must never be sent a 1xx response.
    if out.body == BodyKind::None || out.version == Version::Http10 {
        out.expect_continue = false;
    }
    out.websocket_upgrade = conn_upgrade
        && upgrade_websocket
        && out.version == Version::Http11
        && out.method.of(buf) == b"GET";
    Ok(Some(head_len))
}

/// 414 when the request line alone is over the URI limit, else 431.
fn too_large(buf: &[u8], limits: &Limits) -> HeadError {
    match memchr::memchr(b'\n', buf) {
        None => HeadError::UriTooLong,
        Some(line_end) if line_end > limits.max_uri_bytes => HeadError::UriTooLong,
        Some(_) => HeadError::HeaderTooLarge,
    }
}

/// A well-formed `HTTP/x.y` we do not speak is 505; anything else 400.
fn version_error(buf: &[u8]) -> HeadError {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HeadError::VersionNotSupported
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            HeadError::VersionNotSupported
        }
        _ => HeadError::BadRequest("malformed request line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> Result<Option<RequestHead>, HeadError> {
        let mut head = RequestHead::default();
        parse(
            &mut raw.as_bytes().to_vec(),
            &Limits::default(),
            b"x-request-id",
            &mut head,
        )
        .map(|r| r.map(|_| head))
    }

    fn ok(raw: &str) -> RequestHead {
        p(raw).expect("valid").expect("complete")
    }

    fn err(raw: &str) -> u16 {
        p(raw).expect_err("must be rejected").status()
    }

    #[test]
    fn parses_a_simple_get() {
        let raw = "GET /pets/1?x=1&y=2 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n";
        let h = ok(raw);
        let b = raw.as_bytes();
        assert_eq!(h.method.of(b), b"GET");
        assert_eq!(h.path(b), b"/pets/1");
        assert_eq!(h.query.map(|q| q.of(b)), Some(&b"x=1&y=2"[..]));
        assert_eq!(h.host.map(|s| s.of(b)), Some(&b"api.example.com"[..]));
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
        assert_eq!(h.head_len, raw.len());
        assert_eq!(h.headers.len(), 2);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(p("GET / HTTP/1.1\r\nHost: a\r\n").expect("ok").is_none());
        assert!(p("GET / HT").expect("ok").is_none());
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn framing() {
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").body,
            BodyKind::Length(5)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").body,
            BodyKind::Chunked
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").body,
            BodyKind::Length(3)
        );
    }

    #[test]
    fn smuggling_vectors_are_rejected() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A : b\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a/%2e%2E/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /./b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a/..;x/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a/..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a/..%5Cadmin HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a/x\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a/.. HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/x HTTP/1.1\r\n\r\n",
            "GET a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / FOO/1.1\r\nHost: a\r\n\r\n",
            "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for c in cases {
            assert_eq!(err(c), 400, "{c:?}");
        }
    }

    /// The raw path and what the parser leaves in `path` for it.
    fn normalized(path: &str) -> Result<String, u16> {
        let raw = format!("GET {path}?q=%2F HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut buf = raw.into_bytes();
        let mut head = RequestHead::default();
        match parse(&mut buf, &Limits::default(), b"x-request-id", &mut head) {
            Ok(Some(_)) => {
                assert_eq!(head.query.map(|q| q.of(&buf)), Some(&b"q=%2F"[..]));
                Ok(String::from_utf8_lossy(head.path(&buf)).into_owned())
            }
            Ok(None) => panic!("incomplete"),
            Err(e) => Err(e.status()),
        }
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        for (raw, want) in [
            ("/account", "/account"),
            ("/%61ccount", "/account"),
            ("/%41CCOUNT", "/ACCOUNT"),
            ("//account", "/account"),
            ("/a///b//", "/a/b/"),
            ("/%70ay", "/pay"),
            ("/a%7e%2D%5f%2E1", "/a~-_.1"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ] {
            assert_eq!(normalized(raw).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(normalized("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(normalized("/a%3bb").as_deref(), Ok("/a%3Bb"));
    }

    #[test]
    fn encodings_a_backend_would_read_as_separators_are_refused() {
        for raw in [
            "/account%2f",
            "/account%2F",
            "/admin%2fusers",
            "/account%00",
            "/account%0a",
            "/account%0D",
            "/account%1f",
            "/account%7F",
            "/a%5cb",
            "/a%5C",
            "/a%zz",
            "/a%2",
            "/a%",
            "/%2e%2e/admin",
            "/a/%2E",
            "/a/.%2e/b",
        ] {
            assert_eq!(normalized(raw), Err(400), "{raw}");
        }
    }

    #[test]
    fn host_values_must_name_a_host() {
        for good in [
            "api.example.com",
            "api.example.com:8443",
            "api.example.com.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::7]:8080",
            "localhost:",
            "a_b-c",
        ] {
            ok(&format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n"));
        }
        // An empty Host is legal (RFC 9112 §3.2).
        ok("GET / HTTP/1.1\r\nHost: \r\n\r\n");
        for bad in [
            "::1", "a..b", ".a", "a.b..", "[::1", "[::1]x", "[nope]", "a:b", "a:99999", "a:1:2",
            ":80", "a/b", "a@b",
        ] {
            assert_eq!(
                err(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
                400,
                "{bad}"
            );
        }
        assert_eq!(err("GET http://a..b/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn standard_methods_in_another_case_are_refused() {
        for m in ["get", "Get", "pOST", "delete", "patch", "Options"] {
            assert_eq!(
                err(&format!("{m} /account HTTP/1.1\r\nHost: a\r\n\r\n")),
                400,
                "{m}"
            );
        }
        // Extension methods are case-sensitive tokens of their own.
        ok("PROPFIND /a HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("purge /a HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn dots_inside_names_are_fine() {
        for p in [
            "/a/.well-known/x",
            "/a/v1.2/b",
            "/a/...",
            "/a/file.txt",
            "/a/%2e%2e%2e",
            "/a;v=1/b",
            "/a/b;..x",
        ] {
            ok(&format!("GET {p} HTTP/1.1\r\nHost: a\r\n\r\n"));
        }
    }

    #[test]
    fn connect_and_trace_are_405() {
        assert_eq!(err("TRACE / HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
        assert_eq!(err("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), 400);
        assert_eq!(err("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
    }

    #[test]
    fn expect_is_ignored_for_http_1_0() {
        let h = ok("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn gzip_then_chunked_is_not_implemented() {
        assert_eq!(
            err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
    }

    #[test]
    fn unknown_versions_get_505() {
        assert_eq!(err("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(err("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(err("GET / HTTP/3\r\nHost: a\r\n\r\n"), 505);
    }

    #[test]
    fn limits_map_to_414_and_431() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(err(&long_uri), 414);
        let partial_uri = format!("GET /{}", "a".repeat(11_000));
        assert_eq!(err(&partial_uri), 414);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(11_000)
        );
        assert_eq!(err(&big), 431);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            err(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        let too_many: String = (0..300).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            err(&format!("GET / HTTP/1.1\r\nHost: a\r\n{too_many}\r\n")),
            431
        );
    }

    #[test]
    fn expect_handling() {
        let h =
            ok("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.expect_continue);
        assert_eq!(
            err("POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"),
            417
        );
    }

    #[test]
    fn absolute_form_overrides_host() {
        let raw = "GET http://Example.com:8080/x?q HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = ok(raw);
        let b = raw.as_bytes();
        assert_eq!(h.host.map(|s| s.of(b)), Some(&b"Example.com:8080"[..]));
        assert_eq!(h.path(b), b"/x");
        let raw = "GET http://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n";
        assert_eq!(
            ok(raw).host.map(|s| s.of(raw.as_bytes())),
            Some(&b"a.b"[..])
        );
        assert_eq!(ok(raw).path(raw.as_bytes()), b"/");
    }

    #[test]
    fn connection_named_headers_become_hop_by_hop() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Other: 2\r\n\r\n";
        let h = ok(raw);
        let kinds: Vec<_> = h.headers.iter().map(|h| h.kind).collect();
        assert_eq!(
            kinds,
            vec![
                HeaderKind::Host,
                HeaderKind::Connection,
                HeaderKind::NamedByConnection,
                HeaderKind::Other
            ]
        );
    }

    #[test]
    fn websocket_upgrade_is_recognised_only_when_complete() {
        let ws = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(ok(ws).websocket_upgrade);
        assert!(!ok("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").websocket_upgrade);
        assert!(
            !ok("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n")
                .websocket_upgrade
        );
        assert!(
            !ok(
                "POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .websocket_upgrade
        );
    }

    #[test]
    fn empty_lines_before_a_request_are_ignored() {
        for raw in [
            "\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            "\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            "\r\n\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let h = ok(raw);
            assert_eq!(h.path(raw.as_bytes()), b"/a");
            assert_eq!(h.head_len, raw.len());
        }
        assert_eq!(err("\nGET /a HTTP/1.1\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn pipelined_heads_parse_one_at_a_time() {
        let raw = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = ok(raw);
        assert_eq!(h.head_len, raw.len() / 2);
    }

    #[test]
    fn tabs_and_obs_text_are_allowed_in_values() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc ✓\r\n\r\n";
        ok(raw);
    }
}
