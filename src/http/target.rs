//! The request target (RFC 9112 §3.2): origin-form or absolute-form, split
//! into path and query, and the path normalised (RFC 3986 §6.2.2) so that
//! routing and the backend can never disagree about which resource is
//! meant:
//!
//! * percent-encoded unreserved characters are decoded (`/%61ccount` is
//!   `/account`) and the hex digits of every other triplet are upper-cased
//!   (`%c3%a9` is `%C3%A9`), the forms RFC 3986 §6.2.2.1–2 call equivalent;
//! * empty segments are merged (`//account` is `/account`), as NGINX's
//!   `merge_slashes` and Java servlet containers do;
//! * what some backend would decode into a separator, a terminator or a
//!   control character is refused with 400: `%2F`, `%5C`, `%00`–`%1F`,
//!   `%7F`, a `%` not followed by two hex digits, a literal backslash, a
//!   fragment;
//! * dot-segments in any spelling (`.`, `..`, `%2e`, `..;x`) are refused,
//!   not resolved.
//!
//! The normalised path is written over the raw one in the connection's
//! buffer (it is never longer), so the router, the cache key, the access
//! log and the request line sent to the backend all see the same bytes.
//! What this cannot settle, a backend that ignores `;params`, trailing dots
//! or letter case, is decided against the routes in `router::lenient`.

use super::request::{HeadError, RequestHead};
use super::{hex_digit, Span};

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
    check_percent_encoding(path)?;
    if has_dot_segment(path) {
        return Err(HeadError::BadRequest("dot-segment in request path"));
    }
    out.path = Span::new(base + path_start, base + path_start + path_len);
    out.query = query;
    out.host = host;
    Ok(())
}

/// Refuses percent-encodings that are malformed or that a backend would
/// decode into a path separator (`%2F`, `%5C`), a string terminator
/// (`%00`) or another control character (`%0A` ends a line for a regex
/// router's `$`): no route can be matched against what such a path means.
/// (`%3F` and `%23` stay: they are data in a path, as in Amazon API
/// Gateway, until something decodes the path and splits it again.)
fn check_percent_encoding(path: &[u8]) -> Result<(), HeadError> {
    for i in memchr::memchr_iter(b'%', path) {
        let (Some(&h), Some(&l)) = (path.get(i + 1), path.get(i + 2)) else {
            return Err(HeadError::BadRequest(
                "invalid percent-encoding in request path",
            ));
        };
        match (hex_digit(h), hex_digit(l)) {
            (Some(h), Some(l)) => {
                let v = h << 4 | l;
                if matches!(v, b'/' | b'\\' | 0x7f) || v < 0x20 {
                    return Err(HeadError::BadRequest(
                        "encoded slash, backslash or control character in request path",
                    ));
                }
            }
            _ => {
                return Err(HeadError::BadRequest(
                    "invalid percent-encoding in request path",
                ))
            }
        }
    }
    Ok(())
}

/// RFC 3986 §2.3 unreserved characters: their percent-encoded forms mean
/// the same resource as the characters themselves.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether [`normalize`] would change `path` (a path [`parse_target`]
/// accepted): one pass of two vectorised scans, so a clean path costs
/// next to nothing.
fn needs_normalizing(path: &[u8]) -> bool {
    memchr::memchr(b'%', path).is_some() || memchr::memmem::find(path, b"//").is_some()
}

/// Normalises `path` (accepted by [`parse_target`]) in place and returns
/// its new length: percent-encoded unreserved characters decoded, other
/// triplets' hex digits upper-cased, runs of `/` merged into one. The
/// result is never longer, so it is written over the input front to back.
pub(crate) fn normalize(path: &mut [u8]) -> usize {
    if !needs_normalizing(path) {
        return path.len();
    }
    let (mut r, mut w) = (0, 0);
    while r < path.len() {
        let c = path[r];
        if c == b'%' && r + 2 < path.len() {
            let v = match (hex_digit(path[r + 1]), hex_digit(path[r + 2])) {
                (Some(h), Some(l)) => h << 4 | l,
                // Refused by parse_target; kept as it is if ever reached.
                _ => {
                    path[w] = c;
                    w += 1;
                    r += 1;
                    continue;
                }
            };
            if unreserved(v) {
                path[w] = v;
                w += 1;
            } else {
                path[w] = b'%';
                path[w + 1] = path[r + 1].to_ascii_uppercase();
                path[w + 2] = path[r + 2].to_ascii_uppercase();
                w += 3;
            }
            r += 3;
        } else if c == b'/' && w > 0 && path[w - 1] == b'/' {
            r += 1;
        } else {
            path[w] = c;
            w += 1;
            r += 1;
        }
    }
    w
}

/// A path written in configuration (a route key's literal segments) in
/// the form request paths are normalised to, so the two compare byte for
/// byte; the reason when a request path spelled so would be refused.
pub fn normal_form(path: &str) -> Result<String, HeadError> {
    check_percent_encoding(path.as_bytes())?;
    let mut bytes = path.as_bytes().to_vec();
    let len = normalize(&mut bytes);
    bytes.truncate(len);
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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

/// Host per RFC 3986 §3.2.2–3: an IP-literal (`[v6]`, which must parse as
/// an IPv6 address) or a reg-name / IPv4 address, then an optional
/// `:port` of digits, without userinfo. A reg-name's labels are not empty
/// (`a..b` and `.a` are refused; one final dot is the same name), its
/// characters RFC 3986's. Empty is allowed (RFC 9112 §3.2: a target
/// without authority). NGINX refuses the same hosts with 400.
pub(super) fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    let (host, port) = if v[0] == b'[' {
        let Some(end) = memchr::memchr(b']', v) else {
            return false;
        };
        let literal = &v[1..end];
        let ok = std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_some();
        if !ok {
            return false;
        }
        match &v[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], Some(port)),
            _ => return false,
        }
    } else {
        match memchr::memchr(b':', v) {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        }
    };
    if let Some(p) = port {
        let digits = p.len() <= 5 && p.iter().all(u8::is_ascii_digit);
        if !digits
            || (!p.is_empty() && p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) > 65_535)
        {
            return false;
        }
    }
    if host.is_empty() {
        // `[v6]:port` was handled above; `:80` names no host.
        return v[0] == b'[';
    }
    let name = host.strip_suffix(b".").unwrap_or(host);
    !name.is_empty()
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-_~!$&'()*+,;=%".contains(&b))
        })
}
