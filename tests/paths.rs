//! Path spellings of guarded routes (issue 18, item 1): normalised before
//! routing and forwarded normalised, refused where a backend would read a
//! separator, and refused where a lenient backend could read a guarded
//! route the exact match did not pick. The same matrix against real
//! decoding backends (WSGI, Node, Go, Tomcat) is in `path_backends.rs`.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use common::*;

fn send(gw: &TestGateway, method: &str, path: &str, key: bool) -> Resp {
    let mut c = gw.connect();
    let key = if key {
        format!("x-api-key: {QUOTA_KEY}\r\n")
    } else {
        String::new()
    };
    c.send(
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{key}content-length: 0\r\n\r\n").as_bytes(),
    );
    c.read_response(method == "HEAD").expect("response")
}

#[test]
fn spellings_of_guarded_paths_are_normalised_refused_or_guarded() {
    let origin = Origin::start(|req| ok(&format!("origin saw {}", req.target)));
    let gw = TestGateway::start(&guarded_config(origin.addr, ""));
    // Normalised, then guarded like the route they name.
    for (m, p, status) in [
        ("GET", "/%61ccount", 403),
        ("GET", "//account", 403),
        ("GET", "/%61%63%63%6f%75%6e%74", 403),
        ("POST", "/%70ay", 429),
        ("POST", "//pay", 429),
        ("GET", "//admin/users", 403),
        ("GET", "/%61dmin/users", 403),
        ("GET", "/admin//users", 403),
    ] {
        assert_eq!(send(&gw, m, p, false).status, status, "{m} {p}");
    }
    // What a backend would decode into a separator or terminator: 400.
    for (m, p) in [
        ("GET", "/account%2f"),
        ("GET", "/account%2F"),
        ("GET", "/account%00"),
        ("GET", "/admin%2fusers"),
        ("GET", "/admin%5cusers"),
        ("GET", "/account%zz"),
        ("get", "/account"),
        ("Get", "/account"),
        ("post", "/pay"),
    ] {
        assert_eq!(send(&gw, m, p, false).status, 400, "{m} {p}");
    }
    // Readings a lenient backend could take for a guarded route: 400.
    for (m, p) in [
        ("GET", "/account;jsessionid=1"),
        ("GET", "/account."),
        ("GET", "/ACCOUNT"),
        ("GET", "/Account/"),
        ("POST", "/PAY"),
        ("POST", "/pay;x"),
        ("GET", "/Admin/users"),
        ("GET", "/admin;x/users"),
    ] {
        assert_eq!(send(&gw, m, p, false).status, 400, "{m} {p}");
    }
    assert!(
        origin.requests().is_empty(),
        "guarded spellings reached the origin: {:?}",
        origin.requests()
    );
    // The guarded routes work with their key, forwarded normalised; paths
    // that read the same either way are not affected.
    let r = send(&gw, "GET", "/%61ccount", true);
    assert_eq!((r.status, r.text().as_str()), (200, "origin saw /account"));
    let r = send(&gw, "GET", "//admin//users", true);
    assert_eq!(r.text(), "origin saw /admin/users");
    let r = send(&gw, "GET", "/Public/File.TXT;v=1", false);
    assert_eq!(r.text(), "origin saw /Public/File.TXT;v=1");
    let r = send(&gw, "GET", "/caf%c3%a9/%7euser", false);
    assert_eq!(r.text(), "origin saw /caf%C3%A9/~user");
    // The query string is passed as it was sent.
    let r = send(&gw, "GET", "/a?x=%2F%2e//", false);
    assert_eq!(r.text(), "origin saw /a?x=%2F%2e//");
}

#[test]
fn literal_readings_compare_bytes_as_amazon_api_gateway_does() {
    let origin = Origin::start(|req| ok(&format!("origin saw {}", req.target)));
    let config = guarded_config(
        origin.addr,
        "[server.ambiguous_paths]\nparams = \"literal\"\ntrailing_dots = \"literal\"\ncase = \"literal\"",
    );
    let gw = TestGateway::start(&config);
    for p in ["/ACCOUNT", "/account.", "/account;x=1"] {
        let r = send(&gw, "GET", p, false);
        assert_eq!(
            (r.status, r.text()),
            (200, format!("origin saw {p}")),
            "{p}"
        );
    }
    // Normalisation and refusals do not depend on the option.
    assert_eq!(send(&gw, "GET", "/%61ccount", false).status, 403);
    assert_eq!(send(&gw, "GET", "/account%2f", false).status, 400);
    // One reading turned back on: only it is refused.
    let config = guarded_config(origin.addr, "[server.ambiguous_paths]\ncase = \"literal\"");
    let gw = TestGateway::start(&config);
    assert_eq!(send(&gw, "GET", "/ACCOUNT", false).status, 200);
    assert_eq!(send(&gw, "GET", "/account;x=1", false).status, 400);
}

/// Lenient spellings of a mount's prefix (a base path, here) that fall
/// through to a broader mount are refused too; so are spellings of a
/// mock route (often a block) that reach a proxied one; and a route
/// whose guards the exact match has as well is not refused.
#[test]
fn lenient_spellings_across_mounts_mocks_and_shared_guards() {
    let origin = Origin::start(|req| ok(&format!("origin saw {}", req.target)));
    let o = origin.addr;
    let gw = TestGateway::start(&format!(
        r#"
[server]
shards = 1
[[server.listen]]
addr = "LISTEN"
tls = false
[[api_key]]
name = "alice"
value = "{QUOTA_KEY}"
[[api]]
name = "admin"
base_path = "/admin"
[[api.stage]]
name = "$default"
api_key_required = true
[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http", uri = "http://{o}/admin/{{proxy}}" }}
[[api]]
name = "public"
[[api.stage]]
name = "$default"
[[api.route]]
key = "ANY /internal/{{proxy+}}"
integration = {{ type = "mock", status = 404, body = "no" }}
[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http", uri = "http://{o}/{{proxy}}" }}
[[api]]
name = "shop"
hosts = ["shop"]
[[api.stage]]
name = "$default"
api_key_required = true
[[api.route]]
key = "GET /account"
integration = {{ type = "http", uri = "http://{o}/account" }}
[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http", uri = "http://{o}/{{proxy}}" }}
[[usage_plan]]
name = "p"
stages = ["admin/$default", "shop/$default"]
keys = ["alice"]
"#
    ));
    for p in ["/ADMIN/users", "/admin;x/users", "/admin./users", "/Admin"] {
        assert_eq!(send(&gw, "GET", p, false).status, 400, "{p}");
    }
    for p in ["/Internal/x", "/internal;x/x", "/internal./x"] {
        assert_eq!(send(&gw, "GET", p, false).status, 400, "{p}");
    }
    assert_eq!(send(&gw, "GET", "/internal/x", false).status, 404);
    assert_eq!(send(&gw, "GET", "/admin/users", false).status, 403);
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
    let r = send(&gw, "GET", "/Public/x", false);
    assert_eq!(r.text(), "origin saw /Public/x");
    // Both routes need the same key: the spelling skips nothing.
    let mut c = gw.connect();
    c.send(
        format!("GET /ACCOUNT HTTP/1.1\r\nHost: shop\r\nx-api-key: {QUOTA_KEY}\r\n\r\n").as_bytes(),
    );
    let r = c.read_response(false).expect("response");
    assert_eq!(r.text(), "origin saw /ACCOUNT");
}
