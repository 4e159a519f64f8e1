//! `Cache-Control` as the cache reads it: what a backend response allows
//! to be stored and for how long, and whether a client asks for a fresh
//! answer. Directive names are case-insensitive (RFC 9111 §5.2).

use crate::http::tokens;

/// What a backend response's headers allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Storable {
    /// `no-store`, `private` or `no-cache`: not stored.
    pub forbidden: bool,
    /// `s-maxage`, else `max-age`, in seconds.
    pub max_age: Option<u64>,
    /// `must-revalidate` or `proxy-revalidate`: not to be served stale.
    pub no_stale: bool,
}

impl Storable {
    /// Reads one `Cache-Control` header value into `self`.
    pub fn add_cache_control(&mut self, value: &[u8]) {
        let mut s_maxage = None;
        for t in tokens(value) {
            let (name, arg) = match memchr::memchr(b'=', t) {
                Some(i) => (&t[..i], Some(&t[i + 1..])),
                None => (t, None),
            };
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if is("no-store") || is("private") || is("no-cache") {
                self.forbidden = true;
            } else if is("must-revalidate") || is("proxy-revalidate") {
                self.no_stale = true;
            } else if is("max-age") {
                // Invalid freshness information (`max-age=-1`, `max-age`
                // without a value) means stale (RFC 9111 §4.2.1): 0.
                let v = arg.and_then(seconds).unwrap_or(0);
                self.max_age = Some(self.max_age.map_or(v, |m: u64| m.min(v)));
            } else if is("s-maxage") {
                s_maxage = Some(arg.and_then(seconds).unwrap_or(0));
            }
        }
        if s_maxage.is_some() {
            self.max_age = s_maxage;
            // RFC 9111 §5.2.2.10: s-maxage implies proxy-revalidate.
            self.no_stale = true;
        }
    }
}

/// Seconds an `Expires` date leaves after the response's `Date` (or
/// `now_unix` without one): 0 when invalid or past (RFC 9111 §5.3: an
/// invalid date means already expired).
pub fn expires_in(expires: &[u8], date: Option<&[u8]>, now_unix: u64) -> u64 {
    let parse = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let Some(exp) = parse(expires) else {
        return 0;
    };
    let base = date.and_then(parse).unwrap_or(now_unix);
    exp.saturating_sub(base)
}

fn seconds(v: &[u8]) -> Option<u64> {
    let v = v.strip_prefix(b"\"").unwrap_or(v);
    let v = v.strip_suffix(b"\"").unwrap_or(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Larger than any TTL: saturate.
    Some(std::str::from_utf8(v).ok()?.parse().unwrap_or(u64::MAX))
}

/// True when a request's `Cache-Control` asks for a fresh answer:
/// `max-age=0`, the one directive Amazon API Gateway reacts to. `no-cache`
/// (a browser's hard reload) is ignored as there, and as NGINX and Varnish
/// do by default: it must not be a 403 under `unauthorized = "fail"`.
pub fn wants_fresh(value: &[u8]) -> bool {
    tokens(value).any(|t| {
        t.len() > 8 && t[..8].eq_ignore_ascii_case(b"max-age=") && seconds(&t[8..]) == Some(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &str) -> Storable {
        let mut s = Storable::default();
        s.add_cache_control(v.as_bytes());
        s
    }

    #[test]
    fn backend_directives() {
        assert!(read("no-store").forbidden);
        assert!(read("Private, max-age=60").forbidden);
        assert!(read("no-cache").forbidden);
        assert_eq!(
            read("public, max-age=60"),
            Storable {
                forbidden: false,
                max_age: Some(60),
                no_stale: false
            }
        );
        assert_eq!(read("max-age=60, s-maxage=10").max_age, Some(10));
        assert_eq!(read("max-age=\"30\"").max_age, Some(30));
        // Invalid freshness information: stale (RFC 9111 §4.2.1).
        assert_eq!(read("max-age=abc").max_age, Some(0));
        assert_eq!(read("max-age=-1").max_age, Some(0));
        assert_eq!(read("max-age").max_age, Some(0));
        assert_eq!(read("max-age=60, s-maxage=-5").max_age, Some(0));
        assert_eq!(read("public").max_age, None);
        assert_eq!(
            read("max-age=99999999999999999999999").max_age,
            Some(u64::MAX)
        );
    }

    #[test]
    fn expires_counts_from_the_response_date() {
        let date = b"Tue, 24 Nov 2026 10:00:00 GMT";
        assert_eq!(
            expires_in(b"Tue, 24 Nov 2026 10:01:00 GMT", Some(date), 0),
            60
        );
        assert_eq!(
            expires_in(b"Tue, 24 Nov 2026 09:00:00 GMT", Some(date), 0),
            0
        );
        assert_eq!(expires_in(b"0", Some(date), 0), 0);
        assert!(read("must-revalidate, max-age=5").no_stale);
        assert!(!read("max-age=5").no_stale);
    }

    #[test]
    fn client_asks_for_fresh() {
        assert!(wants_fresh(b"max-age=0"));
        assert!(wants_fresh(b"Max-Age=0"));
        assert!(!wants_fresh(b"No-Cache"));
        assert!(!wants_fresh(b"no-cache, no-store"));
        assert!(wants_fresh(b"foo, max-age=0"));
        assert!(!wants_fresh(b"max-age=10"));
        assert!(!wants_fresh(b"max-age=00x"));
        assert!(!wants_fresh(b""));
    }
}
