//! Writing heads: upstream requests, proxied responses, local responses.
//!
//! Writers append to a caller-owned `BytesMut` that is reused across
//! requests, so a head costs no allocation once the buffer has grown. Header
//! fields are copied from the spans of the parsed head; hop-by-hop fields are
//! dropped (RFC 9110 §7.6.1) and framing fields are written anew.

use bytes::{BufMut, BytesMut};

use super::request::RequestHead;
use super::response::ResponseHead;
use super::{BodyKind, HeaderKind, Version};

/// How the body that follows a written head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (`Content-Length: 0` is written for requests).
    Empty,
    Length(u64),
    Chunked,
    /// Delimited by closing the connection (responses to HTTP/1.0 only).
    Close,
    /// No body follows, and the backend's Content-Length is kept because
    /// it describes the representation (responses to HEAD, 304).
    Bodiless,
    /// No body and no length header at all (1xx, 204: RFC 9110 §8.6).
    NoBody,
}

/// What the gateway adds when forwarding a request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// Host header to send to the backend.
    pub backend_host: &'a [u8],
    /// Client address, appended to X-Forwarded-For.
    pub client_ip: &'a [u8],
    /// `http` or `https`.
    pub proto: &'a [u8],
    pub request_id_header: &'a [u8],
    pub request_id: &'a [u8],
    /// Complete header lines the gateway adds (a verified client
    /// certificate's facts).
    pub extra: &'a [u8],
    /// Lowercase names of client headers never forwarded (those `extra`
    /// may carry: a client must not forge them).
    pub strip: &'a [Box<[u8]>],
    /// Leave out `If-None-Match` and `If-Modified-Since`: a cache fill
    /// asks for the whole answer and evaluates them itself.
    pub strip_validators: bool,
}

fn header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn content_length(out: &mut BytesMut, n: u64) {
    let mut b = itoa::Buffer::new();
    header(out, b"content-length", b.format(n).as_bytes());
}

/// Writes the header section of an upstream request after its request line
/// (which the integration writes, since it owns the target URI).
pub fn forward_request_headers(
    out: &mut BytesMut,
    buf: &[u8],
    head: &RequestHead,
    fwd: &Forwarded<'_>,
    framing: Framing,
) {
    header(out, b"host", fwd.backend_host);
    let mut xff_written = false;
    for h in &head.headers {
        match h.kind {
            HeaderKind::Other | HeaderKind::ApiKey => {
                let name = h.name.of(buf);
                let validator = fwd.strip_validators
                    && (name.eq_ignore_ascii_case(b"if-none-match")
                        || name.eq_ignore_ascii_case(b"if-modified-since"));
                if !validator
                    && (fwd.strip.is_empty()
                        || !fwd.strip.iter().any(|s| same_header_name(name, s)))
                {
                    header(out, name, h.value.of(buf));
                }
            }
            // Of the client's Upgrade list only `websocket` goes on
            // (written once, below): a backend is never asked to switch
            // to a protocol the gateway cannot carry (h2c).
            HeaderKind::Upgrade => {}
            HeaderKind::XForwardedFor if !xff_written => {
                // Merge every X-Forwarded-For line, then append the client.
                out.put_slice(b"x-forwarded-for: ");
                for x in head
                    .headers
                    .iter()
                    .filter(|x| x.kind == HeaderKind::XForwardedFor)
                {
                    out.put_slice(x.value.of(buf));
                    out.put_slice(b", ");
                }
                out.put_slice(fwd.client_ip);
                out.put_slice(b"\r\n");
                xff_written = true;
            }
            // Hop-by-hop, framing, Host and Expect are never forwarded as
            // they came; X-Forwarded-Proto/Host and the request id are
            // replaced by the gateway's own values below; the cache's
            // invalidation token is the gateway's secret.
            _ => {}
        }
    }
    if !xff_written {
        header(out, b"x-forwarded-for", fwd.client_ip);
    }
    header(out, b"x-forwarded-proto", fwd.proto);
    if let Some(host) = head.host {
        header(out, b"x-forwarded-host", host.of(buf));
    }
    header(out, fwd.request_id_header, fwd.request_id);
    out.put_slice(fwd.extra);
    if head.websocket_upgrade {
        out.put_slice(b"upgrade: websocket\r\nconnection: upgrade\r\n");
    }
    match framing {
        Framing::Length(n) => content_length(out, n),
        Framing::Chunked => header(out, b"transfer-encoding", b"chunked"),
        Framing::Empty => {
            if requires_length(head.method.of(buf)) {
                content_length(out, 0);
            }
        }
        Framing::Close | Framing::Bodiless | Framing::NoBody => {}
    }
    out.put_slice(b"\r\n");
}

/// Header names equal ignoring case, with `_` and `-` the same: CGI,
/// WSGI and Rack backends fold both into one variable, so a forged
/// `X_Client_Subject` must be dropped like `x-client-subject`.
fn same_header_name(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// Methods whose requests conventionally carry a body: send an explicit
/// zero length for them (RFC 9110 §8.6).
fn requires_length(method: &[u8]) -> bool {
    matches!(method, b"POST" | b"PUT" | b"PATCH")
}

/// Picks how to frame a proxied response body for the client.
pub fn response_framing(resp: &ResponseHead, client: Version, head_request: bool) -> Framing {
    if resp.status == 204 || (100..200).contains(&resp.status) {
        return Framing::NoBody;
    }
    if resp.status == 304 || head_request {
        return Framing::Bodiless;
    }
    match resp.body {
        BodyKind::None => Framing::Length(0),
        BodyKind::Length(n) => Framing::Length(n),
        BodyKind::Chunked | BodyKind::UntilClose => match client {
            Version::Http11 => Framing::Chunked,
            Version::Http10 => Framing::Close,
        },
    }
}

/// What every response to a client carries besides its content.
#[derive(Debug, Clone, Copy)]
pub struct ResponseMeta<'a> {
    /// The client's HTTP version.
    pub client: Version,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
    pub request_id_header: &'a [u8],
    pub request_id: &'a [u8],
}

/// Writes a proxied response head for the client.
pub fn proxied_response_head(
    out: &mut BytesMut,
    buf: &[u8],
    resp: &ResponseHead,
    framing: Framing,
    meta: &ResponseMeta<'_>,
) {
    status_line(out, resp.status, resp.reason.of(buf));
    for h in &resp.headers {
        let keep = match h.kind {
            HeaderKind::ContentLength => framing == Framing::Bodiless,
            HeaderKind::RequestId => false,
            k => !k.is_hop_by_hop(),
        };
        if keep {
            header(out, h.name.of(buf), h.value.of(buf));
        }
    }
    header(out, meta.request_id_header, meta.request_id);
    finish_head(out, framing, meta.client, meta.keep_alive);
}

/// Writes a backend's `101 Switching Protocols` for a WebSocket upgrade:
/// end-to-end headers plus the backend's Upgrade and `connection: upgrade`.
pub fn switching_protocols_head(
    out: &mut BytesMut,
    buf: &[u8],
    resp: &ResponseHead,
    meta: &ResponseMeta<'_>,
) {
    status_line(out, resp.status, resp.reason.of(buf));
    for h in &resp.headers {
        let keep = match h.kind {
            HeaderKind::Upgrade => true,
            HeaderKind::RequestId | HeaderKind::ContentLength => false,
            k => !k.is_hop_by_hop(),
        };
        if keep {
            header(out, h.name.of(buf), h.value.of(buf));
        }
    }
    header(out, meta.request_id_header, meta.request_id);
    out.put_slice(b"connection: upgrade\r\n\r\n");
}

/// Writes framing and connection headers and the blank line.
fn finish_head(out: &mut BytesMut, framing: Framing, client: Version, keep_alive: bool) {
    match framing {
        Framing::Length(n) => content_length(out, n),
        Framing::Empty => content_length(out, 0),
        Framing::Chunked => header(out, b"transfer-encoding", b"chunked"),
        Framing::Close | Framing::Bodiless | Framing::NoBody => {}
    }
    if !keep_alive {
        out.put_slice(b"connection: close\r\n");
    } else if client == Version::Http10 {
        out.put_slice(b"connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
}

fn status_line(out: &mut BytesMut, status: u16, reason: &[u8]) {
    let mut b = itoa::Buffer::new();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(b.format(status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(if reason.is_empty() {
        reason_phrase(status).as_bytes()
    } else {
        reason
    });
    out.put_slice(b"\r\n");
}

/// A response the gateway produces itself (mock integration, errors).
#[derive(Debug, Clone, Copy)]
pub struct LocalResponse<'a> {
    pub status: u16,
    /// Pre-rendered header lines, each ending in CRLF.
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

/// Writes a complete local response (head and body).
pub fn local_response(
    out: &mut BytesMut,
    resp: &LocalResponse<'_>,
    date: &[u8],
    meta: &ResponseMeta<'_>,
    head_request: bool,
) {
    out.reserve(128 + resp.headers.len() + resp.body.len());
    status_line(out, resp.status, b"");
    header(out, b"date", date);
    out.put_slice(resp.headers);
    header(out, meta.request_id_header, meta.request_id);
    let bodiless = resp.status == 204 || resp.status == 304 || resp.status < 200;
    let framing = if bodiless {
        Framing::Bodiless
    } else {
        Framing::Length(resp.body.len() as u64)
    };
    finish_head(out, framing, meta.client, meta.keep_alive);
    if !head_request && !bodiless {
        out.put_slice(resp.body);
    }
}

/// Body of a 429 for an exhausted usage-plan quota (Amazon API Gateway's
/// `QUOTA_EXCEEDED`).
pub const QUOTA_EXCEEDED_BODY: &[u8] = br#"{"message":"Limit Exceeded"}"#;
/// Its message.
pub const QUOTA_EXCEEDED_MESSAGE: &str = "Limit Exceeded";

/// The message of a gateway error (what [`error_body`] carries).
pub fn error_message(status: u16) -> &'static str {
    let body = error_body(status);
    // Every body is `{"message":"..."}`.
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.strip_prefix(r#"{"message":""#))
        .and_then(|b| b.strip_suffix(r#""}"#))
        .unwrap_or("Internal Server Error")
}

/// Body of a gateway error in Amazon API Gateway's style.
pub fn error_body(status: u16) -> &'static [u8] {
    match status {
        400 => br#"{"message":"Bad Request"}"#,
        403 => br#"{"message":"Forbidden"}"#,
        404 => br#"{"message":"Not Found"}"#,
        408 => br#"{"message":"Request Timeout"}"#,
        413 => br#"{"message":"Request Entity Too Large"}"#,
        414 => br#"{"message":"URI Too Long"}"#,
        417 => br#"{"message":"Expectation Failed"}"#,
        421 => br#"{"message":"Misdirected Request"}"#,
        429 => br#"{"message":"Too Many Requests"}"#,
        431 => br#"{"message":"Request Header Fields Too Large"}"#,
        501 => br#"{"message":"Not Implemented"}"#,
        502 => br#"{"message":"Bad Gateway"}"#,
        503 => br#"{"message":"Service Unavailable"}"#,
        504 => br#"{"message":"Endpoint request timed out"}"#,
        505 => br#"{"message":"HTTP Version Not Supported"}"#,
        _ => br#"{"message":"Internal Server Error"}"#,
    }
}

/// The header block of a gateway error: JSON, and for a 429 when to retry
/// (leases refill within a second).
pub fn error_headers(status: u16) -> &'static [u8] {
    match status {
        429 => b"content-type: application/json\r\nretry-after: 1\r\n",
        _ => b"content-type: application/json\r\n",
    }
}

/// The header block of a 429 that says to retry after `secs` seconds,
/// written into `buf`.
pub fn retry_after_headers(buf: &mut [u8; 80], secs: u64) -> &[u8] {
    const HEAD: &[u8] = b"content-type: application/json\r\nretry-after: ";
    let mut n = itoa::Buffer::new();
    let digits = n.format(secs).as_bytes();
    let len = HEAD.len() + digits.len() + 2;
    buf[..HEAD.len()].copy_from_slice(HEAD);
    buf[HEAD.len()..len - 2].copy_from_slice(digits);
    buf[len - 2..len].copy_from_slice(b"\r\n");
    &buf[..len]
}

/// Canonical reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{request, response, Limits};

    #[test]
    fn forwards_end_to_end_headers_only() {
        let raw = &mut b"POST /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: ftp\r\nx-request-id: evil\r\nAccept: */*\r\nX-Cache-Invalidate-Token: secret\r\nIf-None-Match: \"v1\"\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".to_vec();
        let mut head = request::RequestHead::default();
        request::parse(raw, &Limits::default(), b"x-request-id", &mut head)
            .expect("valid")
            .expect("complete");
        let mut out = BytesMut::new();
        let fwd = Forwarded {
            backend_host: b"127.0.0.1:9000",
            client_ip: b"10.0.0.9",
            proto: b"http",
            request_id_header: b"x-request-id",
            request_id: b"rid-1",
            extra: b"",
            strip: &[],
            strip_validators: false,
        };
        forward_request_headers(&mut out, raw, &head, &fwd, Framing::Length(3));
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        assert_eq!(
            text,
            "host: 127.0.0.1:9000\r\nx-forwarded-for: 1.1.1.1, 10.0.0.9\r\nAccept: */*\r\n\
             If-None-Match: \"v1\"\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: api.example.com\r\n\
             x-request-id: rid-1\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn certificate_headers_are_never_taken_from_the_client() {
        let raw = &mut b"GET /x HTTP/1.1\r\nHost: a\r\nX-Client-Subject: forged\r\nX_Client_Subject: forged too\r\nx-client-subjects: kept\r\nIf-None-Match: \"v1\"\r\nif-modified-since: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n".to_vec();
        let mut head = request::RequestHead::default();
        request::parse(raw, &Limits::default(), b"x-request-id", &mut head)
            .expect("valid")
            .expect("complete");
        let mut out = BytesMut::new();
        let strip: [Box<[u8]>; 1] = [b"x-client-subject".to_vec().into()];
        let fwd = Forwarded {
            backend_host: b"b",
            client_ip: b"10.0.0.9",
            proto: b"https",
            request_id_header: b"x-request-id",
            request_id: b"rid-1",
            extra: b"x-client-subject: CN=real\r\n",
            strip: &strip,
            strip_validators: true,
        };
        forward_request_headers(&mut out, raw, &head, &fwd, Framing::Empty);
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        assert_eq!(
            text,
            "host: b\r\nx-client-subjects: kept\r\nx-forwarded-for: 10.0.0.9\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: a\r\nx-request-id: rid-1\r\n\
             x-client-subject: CN=real\r\n\r\n"
        );
    }

    #[test]
    fn proxied_head_drops_hop_by_hop_and_reframes() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n\r\n";
        let mut resp = response::ResponseHead::default();
        response::parse(raw, 65536, false, b"x-request-id", &mut resp)
            .expect("valid")
            .expect("complete");
        let mut out = BytesMut::new();
        let framing = response_framing(&resp, Version::Http10, false);
        assert_eq!(framing, Framing::Close);
        let meta = ResponseMeta {
            client: Version::Http10,
            keep_alive: false,
            request_id_header: b"x-request-id",
            request_id: b"r",
        };
        proxied_response_head(&mut out, raw, &resp, framing, &meta);
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-request-id: r\r\nconnection: close\r\n\r\n"[..]
        );
    }

    #[test]
    fn framing_of_bodiless_responses() {
        let parse = |raw: &[u8], head: bool| {
            let mut resp = response::ResponseHead::default();
            response::parse(raw, 65536, head, b"x-request-id", &mut resp)
                .expect("valid")
                .expect("complete");
            response_framing(&resp, Version::Http11, head)
        };
        assert_eq!(
            parse(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Framing::NoBody
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Framing::Bodiless
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true
            ),
            Framing::Bodiless
        );
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\n", false), Framing::Chunked);
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            Framing::Length(0)
        );
    }

    #[test]
    fn local_response_for_head_has_length_but_no_body() {
        let mut out = BytesMut::new();
        let r = LocalResponse {
            status: 200,
            headers: b"content-type: application/json\r\n",
            body: b"{}",
        };
        let meta = ResponseMeta {
            client: Version::Http11,
            keep_alive: true,
            request_id_header: b"x-request-id",
            request_id: b"id",
        };
        local_response(&mut out, &r, b"Thu, 01 Jan 1970 00:00:00 GMT", &meta, true);
        let s = String::from_utf8(out.to_vec()).expect("utf8");
        assert!(s.ends_with("content-length: 2\r\n\r\n"), "{s}");
    }
}
