//! Paths a backend may read more leniently than the router does.
//!
//! The router compares normalised path bytes exactly (as Amazon API
//! Gateway does), but some backends resolve a path more loosely: Java
//! servlet containers drop `;params` from every segment (`/account;x=1`
//! is `/account` to Tomcat), IIS and some frameworks drop trailing dots
//! (`/account.`), and case-insensitive routers fold letter case
//! (`/ACCOUNT`). If such a spelling misses a route that carries an API key
//! requirement or a throttle of its own and lands on a broader one (an
//! `ANY /{proxy+}`), the backend serves the protected resource unguarded.
//!
//! [`LenientTable`] holds an API's routes with their literals read the
//! lenient way; the gateway matches a request's lenient reading against it
//! and refuses the request (400) when that reading lands on a guarded
//! route the exact match did not pick. [`Leniency`] says which readings
//! count (`server.ambiguous_paths`: each `"refuse"`, the default, or
//! `"literal"`, Amazon API Gateway's exact comparison). A path with none of
//! `;`, a dot ending a segment or an upper-case letter costs one scan.

use std::collections::HashMap;

use super::{RouteId, RouteKey, RouteTable, Segment};

/// Which lenient readings of a path are checked against guarded routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leniency {
    /// `;params` dropped from each segment.
    pub params: bool,
    /// Trailing dots dropped from each segment.
    pub trailing_dots: bool,
    /// ASCII letters compared without case.
    pub case: bool,
}

impl Leniency {
    /// Every lenient reading checked (the default).
    pub const ALL: Leniency = Leniency {
        params: true,
        trailing_dots: true,
        case: true,
    };

    /// No reading checked: paths compare exactly.
    pub fn is_off(self) -> bool {
        !(self.params || self.trailing_dots || self.case)
    }

    /// Whether `path` could read differently under this leniency: it has
    /// a `;`, a dot ending a segment, or an upper-case letter.
    #[inline]
    pub fn may_differ(self, path: &[u8]) -> bool {
        (self.params && memchr::memchr(b';', path).is_some())
            || (self.trailing_dots
                && memchr::memchr_iter(b'.', path)
                    .any(|i| matches!(path.get(i + 1), None | Some(b'/'))))
            || (self.case && path.iter().any(u8::is_ascii_uppercase))
    }

    /// The lenient reading of one segment.
    fn segment(self, seg: &[u8]) -> &[u8] {
        let mut s = seg;
        if self.params {
            if let Some(i) = memchr::memchr(b';', s) {
                s = &s[..i];
            }
        }
        if self.trailing_dots {
            while let Some(rest) = s.strip_suffix(b".") {
                s = rest;
            }
        }
        s
    }

    /// Writes the lenient reading of `path` (a normalised request path)
    /// into `out`: each segment read leniently, segments that become
    /// empty dropped, a trailing slash kept.
    pub fn reading(self, path: &[u8], out: &mut Vec<u8>) {
        out.clear();
        for seg in path.split(|&b| b == b'/').skip(1) {
            let s = self.segment(seg);
            if !s.is_empty() {
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
        if out.is_empty() || path.ends_with(b"/") {
            out.push(b'/');
        }
        if self.case {
            out.make_ascii_lowercase();
        }
    }

    /// A route key's literals read leniently; `None` when a literal reads
    /// as nothing (such a route cannot be told from its parent).
    fn key(self, key: &RouteKey) -> Option<RouteKey> {
        let RouteKey::Route { method, segments } = key else {
            return None;
        };
        let mut out = Vec::with_capacity(segments.len());
        for s in segments {
            out.push(match s {
                Segment::Literal(l) => {
                    let mut lit = self.segment(l.as_bytes()).to_vec();
                    if lit.is_empty() {
                        return None;
                    }
                    if self.case {
                        lit.make_ascii_lowercase();
                    }
                    Segment::Literal(String::from_utf8_lossy(&lit).into_owned())
                }
                other => other.clone(),
            });
        }
        Some(RouteKey::Route {
            method: method.clone(),
            segments: out,
        })
    }
}

/// An API's routes read leniently. Routes that read alike share one
/// entry, which names them all.
#[derive(Debug)]
pub struct LenientTable {
    table: RouteTable,
    /// Per lenient route: the API's routes it stands for.
    routes: Vec<Vec<RouteId>>,
    leniency: Leniency,
}

impl LenientTable {
    /// Builds the table for an API's route keys (indexed by route id;
    /// `None` for a key that did not parse).
    pub fn build(keys: &[Option<RouteKey>], leniency: Leniency) -> LenientTable {
        let mut table = RouteTable::new();
        let mut routes: Vec<Vec<RouteId>> = Vec::new();
        // Lenient key with parameter names blanked → its lenient id.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (id, key) in keys.iter().enumerate() {
            let Some(lenient) = key.as_ref().and_then(|k| leniency.key(k)) else {
                continue;
            };
            let shape = shape_of(&lenient);
            if let Some(&l) = seen.get(&shape) {
                routes[l].push(id as RouteId);
                continue;
            }
            if let Ok(l) = table.insert(&lenient) {
                seen.insert(shape, l as usize);
                routes.push(vec![id as RouteId]);
            }
        }
        LenientTable {
            table,
            routes,
            leniency,
        }
    }

    pub fn leniency(&self) -> Leniency {
        self.leniency
    }

    /// The routes `path` (normalised) reaches when read leniently, using
    /// `scratch` for the reading; `None` when the reading matches nothing
    /// or the path cannot read differently.
    pub fn find<'t>(
        &'t self,
        method: &[u8],
        path: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Option<&'t [RouteId]> {
        if !self.leniency.may_differ(path) {
            return None;
        }
        self.leniency.reading(path, scratch);
        let m = self.table.find(method, scratch)?;
        self.routes.get(m.route as usize).map(Vec::as_slice)
    }
}

/// A route key with its parameter names blanked: two keys of one shape
/// match the same requests.
fn shape_of(key: &RouteKey) -> String {
    match key {
        RouteKey::Default => "$default".into(),
        RouteKey::Route { method, segments } => {
            let mut s = method.clone();
            s.push(' ');
            for seg in segments {
                match seg {
                    Segment::Literal(l) => {
                        s.push('/');
                        s.push_str(l);
                    }
                    Segment::Param(_) => s.push_str("/{}"),
                    Segment::Greedy(_) => s.push_str("/{+}"),
                }
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str], l: Leniency) -> LenientTable {
        let keys: Vec<Option<RouteKey>> = keys.iter().map(|k| k.parse().ok()).collect();
        LenientTable::build(&keys, l)
    }

    fn find(t: &LenientTable, m: &str, p: &str) -> Option<Vec<RouteId>> {
        let mut scratch = Vec::new();
        t.find(m.as_bytes(), p.as_bytes(), &mut scratch)
            .map(<[RouteId]>::to_vec)
    }

    #[test]
    fn readings_drop_params_and_trailing_dots_and_fold_case() {
        let mut out = Vec::new();
        for (path, want) in [
            ("/account;jsessionid=1", "/account"),
            ("/account.", "/account"),
            ("/Account..", "/account"),
            ("/ADMIN;x/Users./", "/admin/users/"),
            ("/;x/account", "/account"),
            ("/", "/"),
            ("/...", "/"),
        ] {
            Leniency::ALL.reading(path.as_bytes(), &mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "{path}");
        }
    }

    #[test]
    fn only_paths_that_can_read_differently_are_looked_up() {
        let l = Leniency::ALL;
        assert!(!l.may_differ(b"/account/v1.2/file.txt"));
        assert!(l.may_differ(b"/account."));
        assert!(l.may_differ(b"/a./b"));
        assert!(l.may_differ(b"/a;b"));
        assert!(l.may_differ(b"/Account"));
        let only_case = Leniency {
            case: true,
            ..Leniency::default()
        };
        assert!(!only_case.may_differ(b"/account;x."));
    }

    #[test]
    fn lenient_spellings_find_the_routes_they_stand_for() {
        let keys = [
            "GET /account",
            "ANY /{proxy+}",
            "POST /pay",
            "GET /admin/{proxy+}",
            "GET /Account",
        ];
        let t = table(&keys, Leniency::ALL);
        assert_eq!(find(&t, "GET", "/ACCOUNT"), Some(vec![0, 4]));
        assert_eq!(find(&t, "GET", "/account;x=1"), Some(vec![0, 4]));
        assert_eq!(find(&t, "GET", "/account."), Some(vec![0, 4]));
        assert_eq!(find(&t, "POST", "/Pay"), Some(vec![2]));
        assert_eq!(find(&t, "GET", "/Admin/users"), Some(vec![3]));
        // Nothing to read differently: not looked up.
        assert_eq!(find(&t, "GET", "/account"), None);
        let literal = table(&keys, Leniency::default());
        assert_eq!(find(&literal, "GET", "/ACCOUNT"), None);
    }
}
