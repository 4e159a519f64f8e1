//! Hot-path micro benchmarks: request-head parsing, route matching, and
//! both together as the pipeline runs them, for a typical 400-byte GET.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tollgate::config::{self, Host};
use tollgate::http::request::{self, RequestHead};
use tollgate::http::Limits;
use tollgate::router::{RouteKey, RouteTable};

/// A realistic browser-ish GET, 400 bytes give or take.
fn typical_get() -> Vec<u8> {
    let head = "GET /v1/prod/users/12345/orders?limit=20&cursor=abc HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc\r\n\
X-Forwarded-For: 198.51.100.7\r\n\
Cookie: session=3f2a9c1e7b\r\n\
Connection: keep-alive\r\n\
\r\n";
    head.as_bytes().to_vec()
}

const ROUTES: &[&str] = &[
    "GET /users",
    "POST /users",
    "GET /users/{id}",
    "PUT /users/{id}",
    "DELETE /users/{id}",
    "GET /users/{id}/orders",
    "POST /users/{id}/orders",
    "GET /users/{id}/orders/{order}",
    "GET /products",
    "GET /products/{sku}",
    "GET /products/{sku}/reviews",
    "POST /products/{sku}/reviews",
    "GET /health",
    "ANY /admin/{proxy+}",
    "GET /static/{proxy+}",
    "$default",
];

fn config_text() -> String {
    let mut s = String::from("[server]\nshards = 1\n[[server.listen]]\naddr = \"127.0.0.1:0\"\ntls = false\n[[api]]\nname = \"bench\"\nhosts = [\"api.example.com\"]\nbase_path = \"/v1\"\n[[api.stage]]\nname = \"prod\"\n");
    for k in ROUTES {
        s.push_str(&format!(
            "[[api.route]]\nkey = \"{k}\"\nintegration = {{ type = \"mock\" }}\n"
        ));
    }
    s
}

fn benches(c: &mut Criterion) {
    let mut raw = typical_get();
    let limits = Limits::default();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));

    let mut head = RequestHead::default();
    g.bench_function(format!("parse_head_{}b", raw.len()), |b| {
        b.iter(|| {
            let r = request::parse(black_box(&mut raw), &limits, b"x-request-id", &mut head);
            black_box(r.is_ok())
        })
    });

    let mut table = RouteTable::new();
    for k in ROUTES {
        let key: RouteKey = k.parse().expect("route key");
        table.insert(&key).expect("insert");
    }
    g.bench_function("route_match_16_routes", |b| {
        b.iter(|| {
            black_box(table.find(black_box(b"GET"), black_box(b"/users/12345/orders"))).is_some()
        })
    });

    let host = Host::with_cpus(vec![0]);
    let snap = config::from_str(&config_text(), "bench.toml", &host).expect("bench config");
    g.bench_function(format!("parse_and_resolve_{}b", raw.len()), |b| {
        b.iter(|| {
            let n = request::parse(black_box(&mut raw[..]), &limits, b"x-request-id", &mut head)
                .ok()
                .flatten()
                .unwrap_or(0);
            let buf = &raw[..];
            let r = snap.resolve(
                head.host.map(|h| h.of(buf)),
                head.method.of(buf),
                head.path(buf),
            );
            black_box((n, r.map(|r| r.route)))
        })
    });
    g.finish();
}

criterion_group!(hot, benches);
criterion_main!(hot);
