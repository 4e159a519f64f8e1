//! The request target (RFC 9112 §3.2): origin-form or absolute-form, split
//! into path and query, with paths that could mean different resources to
//! the router and to a backend (dot-segments in any encoding, backslashes,
//! fragments) rejected rather than normalised.

use super::request::{HeadError, RequestHead};
use super::Span;

/// Splits the target into path and query; accepts origin-form and
/// absolute-form (RFC 9112 §3.2), rejects the rest and dot-segments.
pub(super) fn parse_target(buf: &[u8], out: &mut RequestHead) -> Result<(), HeadError> {
    let target = out.target.of(buf);
    let base = out.target.start as usize;
    let (path_start, host) = if target.first() == Some(&b'/') {
        (0, None)
    } else {
        let rest = strip_prefix_ci(target, b"http://")
            .or_else(|| strip_prefix_ci(target, b"https://"))
            .ok_or(HeadError::BadRequest("request target is not origin-form"))?;
        let scheme_len = target.len() - rest.len();
        let auth_len = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let auth = &rest[..auth_len];
        if auth.is_empty() || auth.contains(&b'@') || !valid_host(auth) {
            return Err(HeadError::BadRequest("invalid authority in request target"));
        }
        (
            scheme_len + auth_len,
            Some(Span::new(base + scheme_len, base + scheme_len + auth_len)),
        )
    };
    let rest = &target[path_start..];
    let (path_len, query) = match memchr::memchr(b'?', rest) {
        Some(q) => (
            q,
            Some(Span::new(base + path_start + q + 1, base + target.len())),
        ),
        None => (rest.len(), None),
    };
    let path = &rest[..path_len];
    if path.contains(&b'#') {
        return Err(HeadError::BadRequest("fragment in request target"));
    }
    if path.contains(&b'\\') {
        return Err(HeadError::BadRequest("backslash in request path"));
    }
    if has_dot_segment(path) {
        return Err(HeadError::BadRequest("dot-segment in request path"));
    }
    out.path = Span::new(base + path_start, base + path_start + path_len);
    out.query = query;
    out.host = host;
    Ok(())
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// A `.` or `..` segment, literal or percent-encoded (`%2e`), where
/// segments are also split at the encoded separators `%2f` and `%5c` that
/// some backends decode, and a `;` parameter does not hide the dots
/// (`..;x`, which Tomcat treats as `..`). Such paths are rejected rather
/// than normalised, so routing and the backend can never disagree about
/// which resource is meant.
fn has_dot_segment(path: &[u8]) -> bool {
    // Per segment: number of dots seen, and whether anything else was.
    let mut dots = 0u32;
    let mut other = false;
    let mut in_params = false;
    let mut i = 0;
    let is_dots = |dots: u32, other: bool| !other && (dots == 1 || dots == 2);
    while i < path.len() {
        let enc = |c: u8, lower: u8| {
            path.len() - i >= 3
                && path[i] == b'%'
                && path[i + 1] == c
                && (path[i + 2] | 0x20) == lower
        };
        let (step, separator) = match path[i] {
            b'/' => (1, true),
            _ if enc(b'2', b'f') || enc(b'5', b'c') => (3, true),
            _ => (
                if path[i] == b'%' {
                    3.min(path.len() - i)
                } else {
                    1
                },
                false,
            ),
        };
        if separator {
            if is_dots(dots, other) {
                return true;
            }
            dots = 0;
            other = false;
            in_params = false;
        } else if in_params {
            // Inside `;params`: the segment's name was already judged.
        } else if path[i] == b';' {
            if is_dots(dots, other) {
                return true;
            }
            in_params = true;
        } else if path[i] == b'.' || enc(b'2', b'e') {
            dots += 1;
        } else {
            other = true;
        }
        i += step;
    }
    !in_params && is_dots(dots, other)
}

/// Host per RFC 3986 reg-name / IP-literal with optional port, without
/// userinfo. Empty is allowed (RFC 9112 §3.2: a target without authority).
pub(super) fn valid_host(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(&b))
}
