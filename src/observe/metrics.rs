//! Route identities for metrics, and the Prometheus text exposition format
//! (version 0.0.4) the admin listener serves.
//!
//! Every route gets a metric id that stays the same for the life of the
//! process: the [`Registry`] maps (api, stage, route key, canary) to ids
//! when a snapshot is installed, so a reload that keeps a route keeps its
//! counters (Prometheus counters must never go back) and a new route gets
//! the next id. Id 0 is requests that matched no route. Label values are
//! route keys from the configuration, never raw request paths, so the
//! number of series is bounded by the configuration.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::counters::{HistogramCounts, LATENCY_BOUNDS_NS};

/// What a route's series are labelled with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    pub api: String,
    pub stage: String,
    /// The route key as written (`GET /pets/{id}`).
    pub route: String,
    /// Requests sent to the stage's canary.
    pub canary: bool,
}

impl RouteLabels {
    /// `api/stage METHOD /path` (with ` canary` for the canary).
    pub fn name(&self) -> String {
        let canary = if self.canary { " canary" } else { "" };
        format!("{}/{} {}{canary}", self.api, self.stage, self.route)
    }
}

/// Metric id of requests that matched no route.
pub const UNMATCHED: u32 = 0;

/// Stable metric ids for routes (see the module doc). Locked only when a
/// snapshot is installed and when metrics are read.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    ids: HashMap<RouteLabels, u32>,
    labels: Vec<RouteLabels>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let unmatched = RouteLabels {
            api: String::new(),
            stage: String::new(),
            route: "unmatched".into(),
            canary: false,
        };
        Registry {
            inner: Mutex::new(RegistryInner {
                ids: HashMap::from([(unmatched.clone(), UNMATCHED)]),
                labels: vec![unmatched],
            }),
        }
    }

    /// Ids for `routes`, in order: existing ids for known labels, new ids
    /// for the others.
    pub fn assign(&self, routes: &[RouteLabels]) -> Box<[u32]> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        routes
            .iter()
            .map(|l| {
                *inner.ids.entry(l.clone()).or_insert_with(|| {
                    inner.labels.push(l.clone());
                    (inner.labels.len() - 1) as u32
                })
            })
            .collect()
    }

    /// Every route ever registered, indexed by id.
    pub fn labels(&self) -> Vec<RouteLabels> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .labels
            .clone()
    }

    /// Number of ids handed out.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .labels
            .len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Writes the Prometheus text format: each family's `# HELP` and `# TYPE`
/// once, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value (`\`, `"` and newline).
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// One sample with an integer value.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample with a float value.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {}", fmt_f64(value));
    }

    /// A histogram in seconds: cumulative `_bucket`s with `le`, `_sum`,
    /// `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramCounts) {
        let bucket = format!("{name}_bucket");
        let bounds = bound_labels();
        let mut cumulative = 0;
        for (n, le) in h.buckets.iter().zip(bounds) {
            cumulative += n;
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", le));
            self.out.push_str(&bucket);
            self.labels(&with_le);
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.sample_f64(&format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The `le` label of each bucket, rendered once.
fn bound_labels() -> &'static [String] {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LABELS.get_or_init(|| {
        (0..=LATENCY_BOUNDS_NS.len())
            .map(|i| {
                LATENCY_BOUNDS_NS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |&b| fmt_f64(b as f64 / 1e9))
            })
            .collect()
    })
}

/// A float as Prometheus writes it (`+Inf`, no exponent for our ranges).
fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(api: &str, route: &str, canary: bool) -> RouteLabels {
        RouteLabels {
            api: api.into(),
            stage: "prod".into(),
            route: route.into(),
            canary,
        }
    }

    #[test]
    fn ids_are_stable_across_assignments() {
        let r = Registry::new();
        let a = r.assign(&[labels("a", "GET /x", false), labels("a", "GET /y", false)]);
        assert_eq!(&*a, &[1, 2]);
        // A reload that reorders, drops and adds routes.
        let b = r.assign(&[
            labels("a", "GET /z", false),
            labels("a", "GET /y", false),
            labels("a", "GET /y", true),
        ]);
        assert_eq!(&*b, &[3, 2, 4]);
        assert_eq!(r.len(), 5);
        assert_eq!(r.labels()[0].route, "unmatched");
        assert_eq!(r.labels()[4].name(), "a/prod GET /y canary");
    }

    #[test]
    fn exposition_escapes_and_accumulates() {
        let mut e = Exposition::new();
        e.family("t_total", "counter", "A test.");
        e.sample("t_total", &[("route", "GET /a\"b\\c\nd")], 3);
        let mut h = HistogramCounts::default();
        h.buckets[0] = 2;
        h.buckets[3] = 1;
        h.buckets[LATENCY_BOUNDS_NS.len()] = 1;
        h.sum_ns = 1_500_000_000;
        e.family("t_seconds", "histogram", "Latency.");
        e.histogram("t_seconds", &[("api", "x")], &h);
        let text = e.finish();
        assert!(text.contains("t_total{route=\"GET /a\\\"b\\\\c\\nd\"} 3\n"));
        assert!(text.contains("t_seconds_bucket{api=\"x\",le=\"0.00001\"} 2\n"));
        assert!(text.contains("t_seconds_bucket{api=\"x\",le=\"0.0001\"} 3\n"));
        assert!(text.contains("t_seconds_bucket{api=\"x\",le=\"60\"} 3\n"));
        assert!(text.contains("t_seconds_bucket{api=\"x\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("t_seconds_sum{api=\"x\"} 1.5\n"));
        assert!(text.contains("t_seconds_count{api=\"x\"} 4\n"));
        assert_eq!(text.matches("# TYPE").count(), 2);
    }
}
