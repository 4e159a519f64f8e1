//! Byte ranges (RFC 9110 §14) of a representation the gateway holds
//! whole: a cache hit. Hand-written: a few lines of the RFC's grammar,
//! and the one consumer needs only a single range.

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeAsk {
    /// Send it whole: no range, another unit, several ranges (a server
    /// may ignore a Range header, RFC 9110 §14.2) or a malformed one.
    #[default]
    Whole,
    /// Bytes `start..end` (end exclusive, never empty): a 206.
    Part(u64, u64),
    /// No byte of it is in range: a 416.
    Unsatisfiable,
}

/// A decimal `u64` of ASCII digits only.
fn number(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(t.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Reads a `Range` header value against a representation of `len` bytes.
pub fn single(value: &[u8], len: u64) -> RangeAsk {
    let value = value.trim_ascii();
    let Some(spec) = value
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case(b"bytes="))
        .map(|_| value[6..].trim_ascii())
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(&b',') {
        return RangeAsk::Whole;
    }
    let Some(dash) = memchr::memchr(b'-', spec) else {
        return RangeAsk::Whole;
    };
    let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    if first.is_empty() {
        // A suffix: the last `n` bytes.
        return match number(last) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len),
        };
    }
    let Some(first) = number(first) else {
        return RangeAsk::Whole;
    };
    let last = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(l) if l >= first => Some(l),
            _ => return RangeAsk::Whole,
        }
    };
    if first >= len {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(first, last.map_or(len, |l| l.saturating_add(1).min(len)))
}

/// RFC 9110 §13.1.5: whether an `If-Range` value names the stored
/// representation (its strong `etag`, or exactly its `last_modified`
/// date), so that the range applies; otherwise it is sent whole.
pub fn if_range_matches(value: &[u8], etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> bool {
    let value = value.trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        // Strong comparison: weak tags never match.
        return !value.starts_with(b"W/") && etag.is_some_and(|e| e.trim_ascii() == value);
    }
    let date = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
    };
    matches!((date(value), last_modified.and_then(date)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAsk::{Part, Unsatisfiable, Whole};

    #[test]
    fn single_ranges() {
        assert_eq!(single(b"bytes=1-3", 5), Part(1, 4));
        assert_eq!(single(b"Bytes = 0-", 5), Whole, "no spaces inside the unit");
        assert_eq!(single(b"bytes=0-", 5), Part(0, 5));
        assert_eq!(single(b"bytes=3-100", 5), Part(3, 5));
        assert_eq!(single(b"bytes=-2", 5), Part(3, 5));
        assert_eq!(single(b"bytes=-9", 5), Part(0, 5));
        assert_eq!(single(b"bytes=4-4", 5), Part(4, 5));
        assert_eq!(single(b"BYTES=1-1", 5), Part(1, 2));
        // Not satisfiable: 416.
        assert_eq!(single(b"bytes=5-", 5), Unsatisfiable);
        assert_eq!(single(b"bytes=9-10", 5), Unsatisfiable);
        assert_eq!(single(b"bytes=-0", 5), Unsatisfiable);
        assert_eq!(single(b"bytes=-1", 0), Unsatisfiable);
        // Ignored: sent whole.
        assert_eq!(single(b"bytes=0-1,3-4", 5), Whole);
        assert_eq!(single(b"bytes=3-1", 5), Whole);
        assert_eq!(single(b"bytes=a-1", 5), Whole);
        assert_eq!(single(b"bytes=-", 5), Whole);
        assert_eq!(single(b"items=0-1", 5), Whole);
        assert_eq!(single(b"bytes=1", 5), Whole);
        assert_eq!(single(b"bytes=99999999999999999999-", 5), Whole);
    }

    #[test]
    fn if_range_is_strong_or_an_exact_date() {
        let lm = Some(&b"Tue, 24 Nov 2026 10:00:00 GMT"[..]);
        assert!(if_range_matches(b"\"v1\"", Some(b"\"v1\""), None));
        assert!(!if_range_matches(b"\"v2\"", Some(b"\"v1\""), None));
        assert!(!if_range_matches(b"W/\"v1\"", Some(b"W/\"v1\""), None));
        assert!(!if_range_matches(b"\"v1\"", None, lm));
        assert!(if_range_matches(b"Tue, 24 Nov 2026 10:00:00 GMT", None, lm));
        assert!(!if_range_matches(
            b"Wed, 25 Nov 2026 10:00:00 GMT",
            None,
            lm
        ));
        assert!(!if_range_matches(b"garbage", None, lm));
    }
}
