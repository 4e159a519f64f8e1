//! Route matching: which route of an API answers `METHOD /path`.
//!
//! Routes follow Amazon API Gateway's route keys: `METHOD /path` where each
//! path segment is a literal, a `{param}` capturing one segment, or a final
//! greedy `{name+}` capturing the rest (one or more segments); the method may
//! be `ANY`; the key `$default` catches every request no other route takes.
//!
//! The table is compiled once per configuration snapshot into a segment trie.
//! Matching walks the request path segment by segment, trying at each step a
//! literal child, then the `{param}` child, then the greedy child, and
//! backtracks when a branch ends without a route for the method. So the most
//! specific route wins independent of order in the file: a literal segment
//! beats `{param}`, which beats `{proxy+}`, and the earliest segment decides
//! first. At the node where the path ends, the exact method wins, then `ANY`
//! (which therefore only catches methods not defined for that path), then, for
//! `HEAD`, a `GET` route. Nothing is allocated per request: captured
//! parameters are byte ranges into the request path, kept in a fixed array.
//!
//! Path handling: the path arrives normalised (`http::target`: unreserved
//! characters decoded, other percent-encodings upper-cased, slashes
//! merged), and route literals are kept in the same form, so bytes compare
//! exactly; a single trailing slash is ignored (`/pets/` matches `GET
//! /pets`), as Amazon API Gateway does. Spellings a lenient backend reads
//! differently (`;params`, trailing dots, letter case) are checked against
//! guarded routes in [`lenient`].
#![forbid(unsafe_code)]

use std::ops::Range;

pub mod lenient;
mod route_key;

pub use route_key::{RouteKey, RouteKeyError, Segment};

/// Most parameters one route may capture. Route keys with more are rejected
/// when the configuration is loaded.
pub const MAX_PARAMS: usize = 16;

/// Index of a route in the order it was added to the table.
pub type RouteId = u32;

/// Parameters captured by a match: byte ranges into the matched path, in the
/// order the parameters appear in the route key.
#[derive(Debug, Clone)]
pub struct Params {
    len: u8,
    spans: [(u32, u32); MAX_PARAMS],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            len: 0,
            spans: [(0, 0); MAX_PARAMS],
        }
    }
}

impl Params {
    /// Number of captured parameters.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Byte range of parameter `i` within the matched path.
    pub fn get(&self, i: usize) -> Option<Range<usize>> {
        if i < self.len as usize {
            let (s, e) = self.spans[i];
            Some(s as usize..e as usize)
        } else {
            None
        }
    }

    fn push(&mut self, start: usize, end: usize) {
        // The table never holds a route with more than MAX_PARAMS captures,
        // so a push beyond the array cannot happen; guard anyway.
        if (self.len as usize) < MAX_PARAMS {
            self.spans[self.len as usize] = (start as u32, end as u32);
            self.len += 1;
        }
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

/// The result of a successful match.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub route: RouteId,
    pub params: Params,
}

#[derive(Debug, Default)]
struct MethodSet {
    /// Exact methods, few per path: a linear scan beats hashing here.
    exact: Vec<(Box<str>, RouteId)>,
    any: Option<RouteId>,
}

impl MethodSet {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.any.is_none()
    }

    fn find(&self, method: &[u8]) -> Option<RouteId> {
        let exact = |m: &[u8]| {
            self.exact
                .iter()
                .find(|(name, _)| name.as_bytes() == m)
                .map(|&(_, id)| id)
        };
        exact(method).or(self.any).or_else(|| {
            if method == b"HEAD" {
                exact(b"GET")
            } else {
                None
            }
        })
    }

    fn insert(&mut self, method: &str, id: RouteId) -> bool {
        if method == "ANY" {
            if self.any.is_some() {
                return false;
            }
            self.any = Some(id);
            return true;
        }
        if self.exact.iter().any(|(m, _)| &**m == method) {
            return false;
        }
        self.exact.push((method.into(), id));
        true
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Literal children sorted by segment bytes (binary search).
    literals: Vec<(Box<[u8]>, u32)>,
    param: Option<u32>,
    greedy: MethodSet,
    methods: MethodSet,
}

/// Error adding a route to a table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteTableError {
    #[error("duplicate route key `{0}`")]
    Duplicate(String),
}

/// A compiled route table for one API.
#[derive(Debug)]
pub struct RouteTable {
    nodes: Vec<Node>,
    default_route: Option<RouteId>,
    len: u32,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            nodes: vec![Node::default()],
            default_route: None,
            len: 0,
        }
    }
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of routes added.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the table has no route.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a route; its id is the number of routes added before it.
    pub fn insert(&mut self, key: &RouteKey) -> Result<RouteId, RouteTableError> {
        let id = self.len;
        match key {
            RouteKey::Default => {
                if self.default_route.is_some() {
                    return Err(RouteTableError::Duplicate(key.to_string()));
                }
                self.default_route = Some(id);
            }
            RouteKey::Route { method, segments } => {
                let mut node = 0usize;
                let mut inserted = None;
                for seg in segments {
                    match seg {
                        Segment::Literal(lit) => node = self.literal_child(node, lit.as_bytes()),
                        Segment::Param(_) => node = self.param_child(node),
                        Segment::Greedy(_) => {
                            inserted = Some(self.nodes[node].greedy.insert(method, id));
                        }
                    }
                }
                let ok = match inserted {
                    Some(ok) => ok,
                    None => self.nodes[node].methods.insert(method, id),
                };
                if !ok {
                    return Err(RouteTableError::Duplicate(key.to_string()));
                }
            }
        }
        self.len += 1;
        Ok(id)
    }

    fn literal_child(&mut self, node: usize, lit: &[u8]) -> usize {
        match self.nodes[node]
            .literals
            .binary_search_by(|(l, _)| (**l).cmp(lit))
        {
            Ok(i) => self.nodes[node].literals[i].1 as usize,
            Err(i) => {
                let child = self.nodes.len();
                self.nodes.push(Node::default());
                self.nodes[node]
                    .literals
                    .insert(i, (lit.into(), child as u32));
                child
            }
        }
    }

    fn param_child(&mut self, node: usize) -> usize {
        if let Some(c) = self.nodes[node].param {
            return c as usize;
        }
        let child = self.nodes.len();
        self.nodes.push(Node::default());
        self.nodes[node].param = Some(child as u32);
        child
    }

    /// Finds the route for `method` and `path` (which starts with `/` and has
    /// no query string).
    pub fn find(&self, method: &[u8], path: &[u8]) -> Option<RouteMatch> {
        let mut params = Params::default();
        // Ignore one trailing slash, but keep "/" itself.
        let end = if path.len() > 1 && path.ends_with(b"/") {
            path.len() - 1
        } else {
            path.len()
        };
        if let Some(route) = self.walk(0, &path[..end], 0, method, &mut params, path.len()) {
            return Some(RouteMatch { route, params });
        }
        self.default_route.map(|route| RouteMatch {
            route,
            params: Params::default(),
        })
    }

    /// `pos` points at the `/` before the next segment, or at the end.
    /// `full_len` is the path length before the trailing slash was cut, so
    /// a greedy capture keeps it (`/a/b/` proxies as `a/b/`).
    fn walk(
        &self,
        node: usize,
        path: &[u8],
        pos: usize,
        method: &[u8],
        params: &mut Params,
        full_len: usize,
    ) -> Option<RouteId> {
        let n = &self.nodes[node];
        if pos >= path.len() || (pos + 1 == path.len() && node == 0) {
            // Path exhausted ("/" at the root counts as exhausted).
            return n.methods.find(method);
        }
        let start = pos + 1;
        let seg_end = memchr::memchr(b'/', &path[start..]).map_or(path.len(), |i| start + i);
        let seg = &path[start..seg_end];
        if let Ok(i) = n.literals.binary_search_by(|(l, _)| (**l).cmp(seg)) {
            if let Some(id) = self.walk(
                n.literals[i].1 as usize,
                path,
                seg_end,
                method,
                params,
                full_len,
            ) {
                return Some(id);
            }
        }
        if let Some(child) = n.param {
            if !seg.is_empty() {
                params.push(start, seg_end);
                if let Some(id) = self.walk(child as usize, path, seg_end, method, params, full_len)
                {
                    return Some(id);
                }
                params.pop();
            }
        }
        if !n.greedy.is_empty() && start < path.len() {
            if let Some(id) = n.greedy.find(method) {
                params.push(start, full_len);
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> RouteTable {
        let mut t = RouteTable::new();
        for k in keys {
            let key: RouteKey = k.parse().expect("valid key");
            t.insert(&key).expect("insert");
        }
        t
    }

    fn find<'a>(
        t: &RouteTable,
        keys: &[&'a str],
        m: &str,
        p: &str,
    ) -> Option<(&'a str, Vec<String>)> {
        t.find(m.as_bytes(), p.as_bytes()).map(|rm| {
            let params = (0..rm.params.len())
                .map(|i| p[rm.params.get(i).expect("param")].to_string())
                .collect();
            (keys[rm.route as usize], params)
        })
    }

    #[test]
    fn literal_beats_param_beats_greedy_regardless_of_order() {
        let keys = [
            "ANY /{proxy+}",
            "GET /pets/{id}",
            "GET /pets/dog",
            "$default",
        ];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "GET", "/pets/dog"),
            Some(("GET /pets/dog", vec![]))
        );
        assert_eq!(
            find(&t, &keys, "GET", "/pets/cat"),
            Some(("GET /pets/{id}", vec!["cat".into()]))
        );
        assert_eq!(
            find(&t, &keys, "GET", "/pets/cat/toys"),
            Some(("ANY /{proxy+}", vec!["pets/cat/toys".into()]))
        );
        assert_eq!(find(&t, &keys, "GET", "/"), Some(("$default", vec![])));
    }

    #[test]
    fn method_beats_any_and_any_catches_the_rest() {
        let keys = ["ANY /items", "POST /items"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "POST", "/items").map(|r| r.0),
            Some("POST /items")
        );
        assert_eq!(
            find(&t, &keys, "DELETE", "/items").map(|r| r.0),
            Some("ANY /items")
        );
    }

    #[test]
    fn a_literal_path_without_the_method_falls_back_to_less_specific_paths() {
        let keys = ["GET /pets/dog", "ANY /pets/{proxy+}"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "POST", "/pets/dog"),
            Some(("ANY /pets/{proxy+}", vec!["dog".into()]))
        );
    }

    #[test]
    fn earlier_segment_decides_specificity() {
        let keys = ["GET /{a}/b/c", "GET /a/{b}/c"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "GET", "/a/b/c"),
            Some(("GET /a/{b}/c", vec!["b".into()]))
        );
        assert_eq!(
            find(&t, &keys, "GET", "/x/b/c"),
            Some(("GET /{a}/b/c", vec!["x".into()]))
        );
    }

    #[test]
    fn backtracks_out_of_a_dead_literal_branch() {
        let keys = ["GET /a/x/y", "GET /{p}/x/z"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "GET", "/a/x/z"),
            Some(("GET /{p}/x/z", vec!["a".into()]))
        );
    }

    #[test]
    fn multiple_params_and_greedy_capture() {
        let keys = ["GET /u/{user}/repos/{repo}/{path+}"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "GET", "/u/ann/repos/tg/src/main.rs"),
            Some((
                keys[0],
                vec!["ann".into(), "tg".into(), "src/main.rs".into()]
            ))
        );
        // Greedy needs at least one segment.
        assert_eq!(find(&t, &keys, "GET", "/u/ann/repos/tg"), None);
    }

    #[test]
    fn no_route_without_default_is_none() {
        let keys = ["GET /hello"];
        let t = table(&keys);
        assert!(find(&t, &keys, "GET", "/nope").is_none());
        assert!(find(&t, &keys, "POST", "/hello").is_none());
        assert!(find(&t, &keys, "GET", "/hello/extra").is_none());
    }

    #[test]
    fn trailing_slash_is_ignored_and_empty_segments_do_not_match_params() {
        let keys = ["GET /hello", "GET /p/{id}"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "GET", "/hello/").map(|r| r.0),
            Some("GET /hello")
        );
        assert!(find(&t, &keys, "GET", "/p//").is_none());
        assert!(find(&t, &keys, "GET", "//hello").is_none());
        let keys = ["ANY /{proxy+}"];
        let t = table(&keys);
        assert_eq!(
            find(&t, &keys, "GET", "/a/b/"),
            Some(("ANY /{proxy+}", vec!["a/b/".into()])),
            "a greedy capture keeps the trailing slash"
        );
    }

    #[test]
    fn root_route() {
        let keys = ["GET /", "ANY /{proxy+}"];
        let t = table(&keys);
        assert_eq!(find(&t, &keys, "GET", "/").map(|r| r.0), Some("GET /"));
        assert_eq!(
            find(&t, &keys, "GET", "/a").map(|r| r.0),
            Some("ANY /{proxy+}")
        );
        assert_eq!(find(&t, &keys, "POST", "/").map(|r| r.0), None);
    }

    #[test]
    fn head_falls_back_to_get_after_any() {
        let keys = ["GET /a", "GET /b", "ANY /b"];
        let t = table(&keys);
        assert_eq!(find(&t, &keys, "HEAD", "/a").map(|r| r.0), Some("GET /a"));
        assert_eq!(find(&t, &keys, "HEAD", "/b").map(|r| r.0), Some("ANY /b"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut t = RouteTable::new();
        let k: RouteKey = "GET /a/{x}".parse().expect("key");
        let k2: RouteKey = "GET /a/{y}".parse().expect("key");
        t.insert(&k).expect("first");
        assert!(matches!(t.insert(&k2), Err(RouteTableError::Duplicate(_))));
        let d: RouteKey = "$default".parse().expect("key");
        t.insert(&d).expect("default");
        assert!(t.insert(&d).is_err());
    }
}
