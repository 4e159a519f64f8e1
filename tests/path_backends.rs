//! The path matrix of issue 18 against real decoding backends: a stock
//! WSGI app on Python's wsgiref (PEP 3333 decoding), Express 4 on Node
//! (case-insensitive routing), Go's net/http ServeMux (decodes and cleans
//! paths) and embedded Tomcat 10 (decodes, drops `;params`, merges
//! slashes). Each serves `GET /account`, `POST /pay`, `GET /admin/*` and a
//! catch-all, and answers which handler ran. Behind tollgate (`GET
//! /account` and `GET /admin/{proxy+}` need a key, `POST /pay` is blocked
//! by its own throttle, `ANY /{proxy+}` is open), no spelling of a guarded
//! path sent without a key may reach a guarded handler. Parts are
//! installed by `tests/support/deps.sh` (pinned) when missing.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BACKENDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/backends");

/// Spellings of the guarded routes, each sent without a key.
const ATTACKS: &[(&str, &str)] = &[
    ("GET", "/account"),
    ("GET", "/%61ccount"),
    ("GET", "/%61%63%63%6F%75%6E%74"),
    ("GET", "//account"),
    ("GET", "///account"),
    ("GET", "/account/"),
    ("GET", "/account%2f"),
    ("GET", "/account%2F"),
    ("GET", "/%2faccount"),
    ("GET", "/account%00"),
    ("GET", "/account%5c"),
    ("GET", "/account;x=1"),
    ("GET", "/account;"),
    ("GET", "/;x/account"),
    ("GET", "/account%3bx"),
    ("GET", "/account."),
    ("GET", "/account.."),
    ("GET", "/account%2e"),
    ("GET", "/ACCOUNT"),
    ("GET", "/Account"),
    ("GET", "/%41ccount"),
    ("GET", "/x/../account"),
    ("GET", "/x/%2e%2e/account"),
    ("GET", "/./account"),
    ("GET", "/account%20"),
    ("GET", "/account%09"),
    ("GET", "/account%0a"),
    ("get", "/account"),
    ("Get", "/account"),
    ("HEAD", "/account"),
    ("POST", "/pay"),
    ("POST", "/%70ay"),
    ("POST", "//pay"),
    ("POST", "/pay;x"),
    ("POST", "/PAY"),
    ("POST", "/pay."),
    ("POST", "/pay/"),
    ("post", "/pay"),
    ("GET", "/admin/users"),
    ("GET", "//admin/users"),
    ("GET", "/%61dmin/users"),
    ("GET", "/admin%2fusers"),
    ("GET", "/admin//users"),
    ("GET", "/ADMIN/users"),
    ("GET", "/Admin/users"),
    ("GET", "/admin;x/users"),
    ("GET", "/admin./users"),
    ("GET", "/admin%2e/users"),
    ("GET", "/admin/%2e%2e/admin/users"),
];

/// A backend process; killed on drop.
struct Backend {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deps(parts: &[&str]) {
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/deps.sh"
        ))
        .args(parts)
        .status()
        .expect("run tests/support/deps.sh");
    assert!(status.success(), "tests/support/deps.sh {parts:?} failed");
}

/// Starts `cmd` and waits for its `PORT n` line.
fn spawn(mut cmd: Command) -> Backend {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("PORT ") {
                let _ = tx.send(p.trim().parse::<u16>().ok());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(port)) => Backend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        },
        _ => {
            let _ = child.kill();
            panic!("{cmd:?} did not print its port within 60 s");
        }
    }
}

fn send(gw: &TestGateway, method: &str, path: &str) -> Resp {
    let mut c = gw.connect();
    c.send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\ncontent-length: 0\r\n\r\n").as_bytes());
    c.read_response(method == "HEAD").expect("response")
}

/// Runs the matrix against `backend`; prints each answer (for the record)
/// and fails on any spelling that reached a guarded handler.
fn matrix(name: &str, backend: &Backend) {
    let gw = TestGateway::start(&guarded_config(backend.addr, ""));
    // The backend tells its handlers apart: the test can fail.
    let mut c = gw.connect();
    c.send(
        format!("GET /account HTTP/1.1\r\nHost: t\r\nx-api-key: {QUOTA_KEY}\r\n\r\n").as_bytes(),
    );
    let r = c.read_response(false).expect("response");
    assert!(
        r.text().starts_with("handler=account"),
        "{name}: GET /account with the key: {} {}",
        r.status,
        r.text()
    );
    let r = send(&gw, "GET", "/public");
    assert!(
        r.text().starts_with("handler=other"),
        "{name}: {}",
        r.text()
    );
    let mut bypassed = Vec::new();
    for &(method, path) in ATTACKS {
        let r = send(&gw, method, path);
        let text = r.text();
        println!("{name:8} {method:4} {path:28} -> {} {text}", r.status);
        let handler = text
            .strip_prefix("handler=")
            .and_then(|t| t.split(' ').next())
            .unwrap_or("");
        if matches!(handler, "account" | "pay" | "admin") {
            bypassed.push(format!("{method} {path} -> {} {text}", r.status));
        }
    }
    assert!(
        bypassed.is_empty(),
        "{name}: guarded handlers reached without a key:\n{}",
        bypassed.join("\n")
    );
}

#[test]
fn wsgi_backend() {
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{BACKENDS}/wsgi_backend.py"));
    matrix("wsgi", &spawn(cmd));
}

#[test]
fn express_backend() {
    deps(&["express"]);
    let mut cmd = Command::new("node");
    cmd.arg(format!("{BACKENDS}/express/server.js"));
    matrix("express", &spawn(cmd));
}

#[test]
fn go_backend() {
    deps(&["go"]);
    let out = format!("{}/path-backend-go", env!("CARGO_TARGET_TMPDIR"));
    let status = Command::new("go")
        .args(["build", "-o", &out, &format!("{BACKENDS}/go/main.go")])
        .env(
            "GOCACHE",
            format!("{}/gocache", env!("CARGO_TARGET_TMPDIR")),
        )
        .env("GO111MODULE", "off")
        .status()
        .expect("go build");
    assert!(status.success(), "go build failed");
    matrix("go", &spawn(Command::new(out)));
}

#[test]
fn tomcat_backend() {
    deps(&["tomcat"]);
    let jars = [
        "api",
        "catalina",
        "coyote",
        "juli",
        "util",
        "util-scan",
        "servlet-api",
        "jaspic-api",
        "annotations-api",
        "jni",
    ];
    let cp = jars
        .iter()
        .map(|j| format!("/usr/share/java/tomcat10-{j}.jar"))
        .collect::<Vec<_>>()
        .join(":");
    let classes = format!("{}/path-backend-tomcat", env!("CARGO_TARGET_TMPDIR"));
    let status = Command::new("javac")
        .args(["-d", &classes, "-cp", &cp])
        .arg(format!("{BACKENDS}/PathServlets.java"))
        .status()
        .expect("javac");
    assert!(status.success(), "javac failed");
    let mut cmd = Command::new("java");
    cmd.args(["-cp", &format!("{classes}:{cp}"), "PathServlets"]);
    matrix("tomcat", &spawn(cmd));
}
