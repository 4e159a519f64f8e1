//! Cache keys. A key starts with the stage's prefix (`api/stage` and a
//! NUL, so a stage can be flushed by prefix), then the route's metric id
//! (stable for the process's life and the same across reloads for the
//! same route key, so a reload that reorders routes never mixes their
//! entries, and entries of unchanged routes stay valid), then the scheme. Without
//! configured key parameters the Host, the full request path and the
//! query string follow (what an NGINX or Varnish user expects: two URLs
//! never share an entry). With `cache_key` parameters (Amazon API Gateway's
//! cacheKeyParameters) only those follow: `path.NAME` (a route
//! parameter), `query.NAME` (first occurrence, as sent) and
//! `header.NAME` (first occurrence), each as `name=value` and a NUL; an
//! absent one is marked absent, so it never equals an empty value.

/// One configured key parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParam {
    /// Index of the route's parameter.
    Path {
        name: String,
        index: usize,
    },
    Query(String),
    /// Lower-case header name.
    Header(String),
}

/// Why a key parameter was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParamError {
    #[error("`{0}` must be `path.NAME`, `query.NAME` or `header.NAME`")]
    Form(String),
    #[error("the route has no path parameter `{0}`")]
    NoSuchPathParam(String),
}

impl KeyParam {
    /// Parses `path.NAME` / `query.NAME` / `header.NAME`; `route_params`
    /// are the route's parameter names in order.
    pub fn parse(text: &str, route_params: &[String]) -> Result<KeyParam, KeyParamError> {
        let form = || KeyParamError::Form(text.to_string());
        let (kind, name) = text.split_once('.').ok_or_else(form)?;
        if name.is_empty() {
            return Err(form());
        }
        match kind {
            "path" => route_params
                .iter()
                .position(|p| p == name)
                .map(|index| KeyParam::Path {
                    name: name.to_string(),
                    index,
                })
                .ok_or_else(|| KeyParamError::NoSuchPathParam(name.to_string())),
            "query" => Ok(KeyParam::Query(name.to_string())),
            "header" => Ok(KeyParam::Header(name.to_ascii_lowercase())),
            _ => Err(form()),
        }
    }
}

/// What a request contributes to its key.
pub struct KeyInput<'a> {
    /// The route's stable id (its metric id).
    pub route: u32,
    /// The method, for methods other than GET and HEAD (which share).
    pub method: Option<&'a [u8]>,
    /// The request came over TLS: an answer built for an `http` request
    /// (with `http` links or redirects in it) is not served to `https`
    /// clients, nor the other way round.
    pub https: bool,
    /// The Host, where it is part of the key (compared case-blind).
    pub host: Option<&'a [u8]>,
    pub path: &'a [u8],
    pub query: Option<&'a [u8]>,
    /// Route parameter values by index.
    pub param: &'a dyn Fn(usize) -> Option<&'a [u8]>,
    /// Header lookup by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

/// Writes the key for `input` after `prefix` into `out`.
pub fn build(out: &mut Vec<u8>, prefix: &[u8], spec: &[KeyParam], input: &KeyInput<'_>) {
    out.clear();
    out.extend_from_slice(prefix);
    out.extend_from_slice(&input.route.to_le_bytes());
    out.push(if input.https { b's' } else { b'p' });
    if let Some(m) = input.method {
        out.push(b'M');
        out.extend_from_slice(m);
        out.push(0);
    }
    if let Some(h) = input.host {
        out.push(b'H');
        out.extend(h.iter().map(u8::to_ascii_lowercase));
        out.push(0);
    }
    if spec.is_empty() {
        out.extend_from_slice(input.path);
        if let Some(q) = input.query {
            out.push(b'?');
            out.extend_from_slice(q);
        }
        return;
    }
    for p in spec {
        let (tag, name, value) = match p {
            KeyParam::Path { name, index } => (b'p', name.as_str(), (input.param)(*index)),
            KeyParam::Query(name) => (
                b'q',
                name.as_str(),
                input.query.and_then(|q| query_value(q, name)),
            ),
            KeyParam::Header(name) => (b'h', name.as_str(), (input.header)(name)),
        };
        out.push(tag);
        out.extend_from_slice(name.as_bytes());
        match value {
            Some(v) => {
                out.push(b'=');
                out.extend_from_slice(v);
            }
            None => out.push(b'!'),
        }
        out.push(0);
    }
}

/// Extends a URL's key (in `out`) into the key of one `Vary` variant: the
/// request's values of the `names` headers (absent marked as absent).
pub fn variant<'a>(
    out: &mut Vec<u8>,
    names: &[Box<[u8]>],
    header: impl Fn(&[u8]) -> Option<&'a [u8]>,
) {
    out.extend_from_slice(b"\0vary\0");
    for n in names {
        out.extend_from_slice(n);
        match header(n) {
            Some(v) => {
                out.push(b'=');
                out.extend_from_slice(v);
            }
            None => out.push(b'!'),
        }
        out.push(0);
    }
}

/// Parses a `Vary` value into lower-case header names; `None` for `*`
/// (never stored).
pub fn vary_names(value: &[u8]) -> Option<Vec<Box<[u8]>>> {
    let mut names = Vec::new();
    for t in crate::http::tokens(value) {
        if t == b"*" {
            return None;
        }
        names.push(t.to_ascii_lowercase().into_boxed_slice());
    }
    Some(names)
}

/// The first value of `name` in a query string, as sent.
fn query_value<'a>(query: &'a [u8], name: &str) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (k == name.as_bytes()).then_some(v)
    })
}

/// Hashes keys for the store: ahash, keyed per process.
#[derive(Debug, Default, Clone)]
pub struct KeyHasher(ahash::RandomState);

impl KeyHasher {
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.0.hash_one(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        spec: &[KeyParam],
        path: &str,
        query: Option<&str>,
        accept: Option<&'static str>,
    ) -> Vec<u8> {
        let param = |i: usize| (i == 0).then_some(&b"7"[..]);
        let header = move |n: &str| (n == "accept").then_some(()).and(accept.map(str::as_bytes));
        let input = KeyInput {
            route: 3,
            method: None,
            https: false,
            host: None,
            path: path.as_bytes(),
            query: query.map(str::as_bytes),
            param: &param,
            header: &header,
        };
        let mut out = Vec::new();
        build(&mut out, b"api/prod\0", spec, &input);
        out
    }

    #[test]
    fn default_keys_are_the_whole_url() {
        assert_ne!(
            key(&[], "/pets/7", None, None),
            key(&[], "/pets/8", None, None)
        );
        assert_ne!(
            key(&[], "/pets", Some("a=1"), None),
            key(&[], "/pets", Some("a=2"), None)
        );
        assert_eq!(
            key(&[], "/pets", None, Some("x")),
            key(&[], "/pets", None, Some("y"))
        );
        assert!(key(&[], "/pets", None, None).starts_with(b"api/prod\0"));
    }

    #[test]
    fn configured_parameters_only() {
        let names = vec!["id".to_string()];
        let spec = vec![
            KeyParam::parse("path.id", &names).expect("path"),
            KeyParam::parse("query.type", &names).expect("query"),
            KeyParam::parse("header.Accept", &names).expect("header"),
        ];
        // Other query parameters and the path text do not matter.
        assert_eq!(
            key(&spec, "/pets/7", Some("type=dog&page=1"), Some("json")),
            key(&spec, "/other", Some("page=2&type=dog"), Some("json"))
        );
        assert_ne!(
            key(&spec, "/pets/7", Some("type=dog"), Some("json")),
            key(&spec, "/pets/7", Some("type=cat"), Some("json"))
        );
        assert_ne!(
            key(&spec, "/pets/7", Some("type=dog"), Some("json")),
            key(&spec, "/pets/7", Some("type=dog"), Some("xml"))
        );
        // Absent is not the same as empty.
        assert_ne!(
            key(&spec, "/p", Some("type="), None),
            key(&spec, "/p", None, None)
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        let names = vec!["id".to_string()];
        assert_eq!(
            KeyParam::parse("path.nope", &names),
            Err(KeyParamError::NoSuchPathParam("nope".into()))
        );
        assert!(matches!(
            KeyParam::parse("cookie.x", &names),
            Err(KeyParamError::Form(_))
        ));
        assert!(matches!(
            KeyParam::parse("query.", &names),
            Err(KeyParamError::Form(_))
        ));
        assert!(matches!(
            KeyParam::parse("query", &names),
            Err(KeyParamError::Form(_))
        ));
    }

    #[test]
    fn variants_differ_by_the_named_headers() {
        let names = vary_names(b"Accept-Encoding, accept").expect("names");
        assert_eq!(names.len(), 2);
        assert_eq!(&*names[0], b"accept-encoding");
        assert!(vary_names(b"*").is_none());
        let k = |enc: Option<&'static [u8]>| {
            let mut out = b"base".to_vec();
            variant(&mut out, &names, |n: &[u8]| {
                if n == b"accept-encoding" {
                    enc
                } else {
                    None
                }
            });
            out
        };
        assert_ne!(k(Some(b"gzip")), k(Some(b"br")));
        assert_ne!(k(Some(b"")), k(None));
        assert_eq!(k(Some(b"gzip")), k(Some(b"gzip")));
    }

    #[test]
    fn query_values_are_found_as_sent() {
        assert_eq!(query_value(b"a=1&b=2&a=3", "a"), Some(&b"1"[..]));
        assert_eq!(query_value(b"flag&b=2", "flag"), Some(&b""[..]));
        assert_eq!(query_value(b"ab=1", "a"), None);
    }
}
