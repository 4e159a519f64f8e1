//! Parsing route keys: `METHOD /path/{param}/{proxy+}` or `$default`.

use std::fmt;
use std::str::FromStr;

use super::MAX_PARAMS;

/// One path segment of a route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// `{name+}`: one or more remaining segments; only last.
    Greedy(String),
}

/// A parsed route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKey {
    /// `$default`: catches requests no other route matches.
    Default,
    Route {
        /// Upper-case method token, or `ANY`.
        method: String,
        segments: Vec<Segment>,
    },
}

/// Why a route key was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteKeyError {
    #[error("expected `METHOD /path` or `$default`")]
    Shape,
    #[error("method `{0}` must be an upper-case HTTP method token or ANY")]
    Method(String),
    #[error("path must start with `/`")]
    PathStart,
    #[error("greedy parameter `{{{0}+}}` must be the last segment")]
    GreedyNotLast(String),
    #[error("segment `{0}` is not a literal, `{{name}}` or `{{name+}}`")]
    BadSegment(String),
    #[error("parameter `{0}` appears twice")]
    DuplicateParam(String),
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("literal segment `{0}` contains a character not allowed in a path")]
    BadLiteral(String),
    #[error(
        "literal segment `{0}`: {1} (such a request is refused, so the route could never match)"
    )]
    Encoding(String, String),
}

impl RouteKey {
    /// Names of the captured parameters, in capture order.
    pub fn param_names(&self) -> Vec<&str> {
        match self {
            RouteKey::Default => Vec::new(),
            RouteKey::Route { segments, .. } => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(n) | Segment::Greedy(n) => Some(n.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect(),
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn valid_literal(l: &str) -> bool {
    // RFC 3986 pchar: unreserved / pct-encoded / sub-delims / ":" / "@".
    !l.is_empty()
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&b))
        && l != "."
        && l != ".."
}

impl FromStr for RouteKey {
    type Err = RouteKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "$default" {
            return Ok(RouteKey::Default);
        }
        let (method, path) = s.split_once(' ').ok_or(RouteKeyError::Shape)?;
        let path = path.trim();
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            return Err(RouteKeyError::Method(method.to_string()));
        }
        if !path.starts_with('/') {
            return Err(RouteKeyError::PathStart);
        }
        let mut segments = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let trimmed = path.trim_end_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed[1..].split('/').collect()
        };
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                if let Some(name) = inner.strip_suffix('+') {
                    if !valid_name(name) {
                        return Err(RouteKeyError::BadSegment(part.to_string()));
                    }
                    if i != last {
                        return Err(RouteKeyError::GreedyNotLast(name.to_string()));
                    }
                    Segment::Greedy(name.to_string())
                } else {
                    if !valid_name(inner) {
                        return Err(RouteKeyError::BadSegment(part.to_string()));
                    }
                    Segment::Param(inner.to_string())
                }
            } else if part.contains('{') || part.contains('}') {
                return Err(RouteKeyError::BadSegment(part.to_string()));
            } else if !valid_literal(part) {
                return Err(RouteKeyError::BadLiteral(part.to_string()));
            } else {
                // The form request paths are normalised to (`%7e` is `~`,
                // `%c3` is `%C3`), so the literal matches every spelling.
                let normal = crate::http::normal_form(part)
                    .map_err(|why| RouteKeyError::Encoding(part.to_string(), why.to_string()))?;
                if normal == "." || normal == ".." {
                    return Err(RouteKeyError::BadLiteral(part.to_string()));
                }
                Segment::Literal(normal)
            };
            if let Segment::Param(n) | Segment::Greedy(n) = &seg {
                if names.contains(n) {
                    return Err(RouteKeyError::DuplicateParam(n.clone()));
                }
                names.push(n.clone());
                if names.len() > MAX_PARAMS {
                    return Err(RouteKeyError::TooManyParams);
                }
            }
            segments.push(seg);
        }
        Ok(RouteKey::Route {
            method: method.to_string(),
            segments,
        })
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Default => f.write_str("$default"),
            RouteKey::Route { method, segments } => {
                write!(f, "{method} ")?;
                if segments.is_empty() {
                    return f.write_str("/");
                }
                for s in segments {
                    match s {
                        Segment::Literal(l) => write!(f, "/{l}")?,
                        Segment::Param(p) => write!(f, "/{{{p}}}")?,
                        Segment::Greedy(p) => write!(f, "/{{{p}+}}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_keys() {
        for k in ["GET /", "ANY /{proxy+}", "POST /pets/{id}/toys", "$default"] {
            let key: RouteKey = k.parse().expect(k);
            assert_eq!(key.to_string(), k);
        }
        let key: RouteKey = "GET /a/{b}/{c+}".parse().expect("key");
        assert_eq!(key.param_names(), vec!["b", "c"]);
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!("GET".parse::<RouteKey>(), Err(RouteKeyError::Shape));
        assert_eq!(
            "get /a".parse::<RouteKey>(),
            Err(RouteKeyError::Method("get".into()))
        );
        assert_eq!("GET a".parse::<RouteKey>(), Err(RouteKeyError::PathStart));
        assert_eq!(
            "GET /{p+}/x".parse::<RouteKey>(),
            Err(RouteKeyError::GreedyNotLast("p".into()))
        );
        assert_eq!(
            "GET /{a}/{a}".parse::<RouteKey>(),
            Err(RouteKeyError::DuplicateParam("a".into()))
        );
        assert!(matches!(
            "GET /a{b}".parse::<RouteKey>(),
            Err(RouteKeyError::BadSegment(_))
        ));
        assert!(matches!(
            "GET /a b".parse::<RouteKey>(),
            Err(RouteKeyError::BadLiteral(_))
        ));
        assert!(matches!(
            "GET /../x".parse::<RouteKey>(),
            Err(RouteKeyError::BadLiteral(_))
        ));
        for k in ["GET /a%2fb", "GET /a%00", "GET /a%zz", "GET /%2e%2e"] {
            assert!(k.parse::<RouteKey>().is_err(), "{k}");
        }
    }

    #[test]
    fn literals_take_the_normal_form_of_request_paths() {
        let key: RouteKey = "GET /%61ccount/caf%c3%a9".parse().expect("key");
        assert_eq!(key.to_string(), "GET /account/caf%C3%A9");
    }
}
