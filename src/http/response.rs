//! Backend response head parsing and framing (RFC 9112 §6.3).
//!
//! A response from a backend is trusted no more than a request from a
//! client: a head that does not parse, a bad status, or conflicting framing
//! makes the gateway answer 502 rather than guess.

use std::mem::MaybeUninit;

use super::{
    has_bare_lf, mark_connection_named, parse_content_length, tokens, BodyKind, Header, HeaderKind,
    Span, Version, MAX_HEADER_SLOTS,
};

/// Why a backend response head was rejected (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed response head from backend")]
    Malformed,
    #[error("response head from backend too large")]
    TooLarge,
    #[error("invalid Content-Length from backend")]
    ContentLength,
}

/// A parsed response head: spans into the upstream read buffer.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub reason: Span,
    pub version: Version,
    pub headers: Vec<Header>,
    pub body: BodyKind,
    /// Whether the backend lets us reuse the connection afterwards.
    pub keep_alive: bool,
}

impl Default for ResponseHead {
    fn default() -> Self {
        ResponseHead {
            head_len: 0,
            status: 0,
            reason: Span::default(),
            version: Version::Http11,
            headers: Vec::new(),
            body: BodyKind::None,
            keep_alive: true,
        }
    }
}

impl ResponseHead {
    /// 1xx other than 101: skipped by the proxy, the final response follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a response head at the start of `buf`. `head_request` tells
/// whether the request was HEAD (so the response has no body).
pub fn parse(
    buf: &[u8],
    max_bytes: usize,
    head_request: bool,
    request_id_header: &[u8],
    out: &mut ResponseHead,
) -> Result<Option<usize>, ResponseError> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADER_SLOTS] =
        [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => ResponseError::TooLarge,
            _ => ResponseError::Malformed,
        })?;
    let head_len = match status {
        httparse::Status::Partial => {
            if buf.len() > max_bytes {
                return Err(ResponseError::TooLarge);
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if head_len > max_bytes {
        return Err(ResponseError::TooLarge);
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(ResponseError::Malformed);
    };
    if !(100..=999).contains(&code) || has_bare_lf(&buf[..head_len]) {
        return Err(ResponseError::Malformed);
    }
    out.head_len = head_len;
    out.status = code;
    out.reason = resp
        .reason
        .map(|r| Span::within(buf, r.as_bytes()))
        .unwrap_or_default();
    out.version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    out.headers.clear();
    let mut content_length: Option<u64> = None;
    let mut chunked_last = false;
    let mut te_seen = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut names_others = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let kind = HeaderKind::classify(name, request_id_header);
        match kind {
            HeaderKind::ContentLength => {
                let n = parse_content_length(value).ok_or(ResponseError::ContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(ResponseError::ContentLength),
                    _ => content_length = Some(n),
                }
            }
            HeaderKind::TransferEncoding => {
                te_seen = true;
                for t in tokens(value) {
                    chunked_last = t.eq_ignore_ascii_case(b"chunked");
                }
            }
            HeaderKind::Connection => {
                for t in tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    } else {
                        names_others = true;
                    }
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
    if names_others {
        mark_connection_named(buf, &mut out.headers);
    }
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    out.body = if no_body {
        BodyKind::None
    } else if te_seen {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a
        // non-chunked final coding is read until close.
        if chunked_last {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else {
        match content_length {
            Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    out.keep_alive = !close
        && out.body != BodyKind::UntilClose
        // A message framed by both is suspicious: do not reuse the connection.
        && !(te_seen && content_length.is_some())
        && match out.version {
            Version::Http11 => true,
            Version::Http10 => keep_alive_token,
        };
    Ok(Some(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str, head: bool) -> Result<Option<ResponseHead>, ResponseError> {
        let mut out = ResponseHead::default();
        parse(raw.as_bytes(), 65536, head, b"x-request-id", &mut out).map(|r| r.map(|_| out))
    }

    #[test]
    fn framing_rules() {
        let r = p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false)
            .expect("ok")
            .expect("done");
        assert_eq!(
            (r.status, r.body, r.keep_alive),
            (200, BodyKind::Length(5), true)
        );
        let r = p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .expect("ok")
            .expect("done");
        assert_eq!(r.body, BodyKind::None);
        let r = p(
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            false,
        )
        .expect("ok")
        .expect("d");
        assert_eq!(r.body, BodyKind::None);
        let r = p("HTTP/1.1 304 Not Modified\r\n\r\n", false)
            .expect("ok")
            .expect("d");
        assert_eq!(r.body, BodyKind::None);
        let r = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .expect("ok")
        .expect("d");
        assert_eq!(r.body, BodyKind::Chunked);
        let r = p("HTTP/1.1 200 OK\r\n\r\n", false).expect("ok").expect("d");
        assert_eq!((r.body, r.keep_alive), (BodyKind::UntilClose, false));
        let r = p("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
            .expect("ok")
            .expect("d");
        assert!(!r.keep_alive);
        let r = p(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .expect("ok")
        .expect("d");
        assert!(!r.keep_alive);
        let r = p("HTTP/1.1 100 Continue\r\n\r\n", false)
            .expect("ok")
            .expect("d");
        assert!(r.is_interim());
    }

    #[test]
    fn rejects_malformed() {
        assert!(p("HTTP/1.1 abc OK\r\n\r\n", false).is_err());
        assert!(p("garbage\r\n\r\n", false).is_err());
        assert!(p("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(p(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(p("HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n", false).is_err());
        assert_eq!(
            p(
                &format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(70_000)),
                false
            )
            .unwrap_err(),
            ResponseError::TooLarge
        );
    }
}
