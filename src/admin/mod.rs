//! The admin listener: `GET /metrics` (Prometheus text format),
//! `GET /status`, `GET /config` (effective configuration, secrets
//! redacted), `POST /reload`, `POST /cache/flush`. JSON answers and JSON
//! errors (`{"message": ...}`).
//!
//! It runs on threads of its own, never on a shard: its traffic is a
//! scrape every few seconds and an operator's commands, and a slow admin
//! client must not cost a shard anything. One thread reads requests from
//! up to 256 connections at once (`listen.rs`: 2 s for a request head,
//! the oldest incomplete connection dropped when full), workers answer. Loopback by
//! default (`server.admin.addr`), with an optional bearer token.

mod listen;
pub mod metrics;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::auth::api_key::KeyDigest;
use crate::config::AdminSettings;
use crate::runtime::Control;

/// Largest admin request head or body.
const MAX_REQUEST: usize = 64 * 1024;
/// `tollgate reload` waits this long to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running admin listener; stops when dropped.
pub struct Admin {
    addr: SocketAddr,
    fd: std::os::fd::RawFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening socket's descriptor (handed over at a binary upgrade).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // The loop looks at the flag at least every 100 ms (a connection
        // of our own could not wake it: after a binary upgrade the socket
        // is shared with the successor, which may take it).
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `settings.addr` and serves the admin API for `control`.
pub fn start(control: Arc<Control>, settings: &AdminSettings) -> io::Result<Admin> {
    start_on(control, TcpListener::bind(settings.addr)?, settings)
}

/// Serves the admin API for `control` on `listener` (bound already, e.g.
/// inherited from the process this one replaces).
pub fn start_on(
    control: Arc<Control>,
    listener: TcpListener,
    settings: &AdminSettings,
) -> io::Result<Admin> {
    use std::os::fd::AsRawFd;
    let addr = listener.local_addr()?;
    let fd = listener.as_raw_fd();
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let token = settings.token;
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tollgate-admin".into())
        .spawn(move || {
            let c = control.clone();
            let answer =
                Arc::new(move |parsed: listen::Parsed| respond(&c, token.as_ref(), parsed));
            // Stops with the gateway too: after a binary upgrade the
            // successor shares this socket and must get every request.
            listen::run(listener, stop2, || control.stopping(), answer);
        })?;
    Ok(Admin {
        addr,
        fd,
        stop,
        thread: Some(thread),
    })
}

/// An admin request, parsed.
pub(crate) struct Request {
    method: String,
    path: String,
    query: String,
    authorization: Option<Vec<u8>>,
}

/// An admin answer.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    extra: &'static str,
}

impl Response {
    fn json(status: u16, v: &Value) -> Response {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            extra: "",
        }
    }

    fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "message": message }))
    }
}

/// The bytes answering one request (or what made it no request).
fn respond(control: &Control, token: Option<&KeyDigest>, parsed: listen::Parsed) -> Vec<u8> {
    let mut head_only = false;
    let resp = match parsed {
        Ok(req) => {
            head_only = req.method == "HEAD";
            if authorized(token, req.authorization.as_deref()) {
                route(control, &req)
            } else {
                Response {
                    extra: "www-authenticate: Bearer\r\n",
                    ..Response::error(401, "Unauthorized")
                }
            }
        }
        Err(ReadError::TooLarge) => Response::error(413, "Request Entity Too Large"),
        Err(ReadError::Bad) => Response::error(400, "Bad Request"),
    };
    render(&resp, head_only)
}

/// The answer when every worker is busy and their queue is full.
fn busy(head_only: bool) -> Vec<u8> {
    let resp = Response {
        extra: "retry-after: 1\r\n",
        ..Response::error(503, "Service Unavailable")
    };
    render(&resp, head_only)
}

/// The answer when answering a request panicked.
fn internal_error() -> Vec<u8> {
    render(&Response::error(500, "Internal Server Error"), false)
}

fn render(resp: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n{}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        resp.extra
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn authorized(token: Option<&KeyDigest>, header: Option<&[u8]>) -> bool {
    use sha2::Digest;
    let Some(token) = token else {
        return true;
    };
    let Some(presented) = header.and_then(|h| {
        h.strip_prefix(b"Bearer ")
            .or_else(|| h.strip_prefix(b"bearer "))
    }) else {
        return false;
    };
    <[u8; 32]>::from(sha2::Sha256::digest(presented.trim_ascii())) == *token
}

/// Why bytes received are not an admin request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("admin request larger than 64 KiB")]
    TooLarge,
    #[error("malformed admin request")]
    Bad,
}

/// Parses one request from the bytes received so far: `Ok(None)` while
/// incomplete. Sans-I/O; `listen.rs` reads.
pub(crate) fn parse_request(buf: &[u8]) -> Result<Option<Request>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let mut length = 0usize;
            let mut authorization = None;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or(ReadError::Bad)?;
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(ReadError::Bad);
                } else if h.name.eq_ignore_ascii_case("authorization") {
                    authorization = Some(h.value.to_vec());
                }
            }
            if length > MAX_REQUEST {
                return Err(ReadError::TooLarge);
            }
            // The body is read (so the client is not reset) and unused:
            // every endpoint takes its arguments from the query.
            if buf.len() < head_len + length {
                return Ok(None);
            }
            let target = req.path.unwrap_or("/").to_string();
            let method = req.method.unwrap_or("GET").to_string();
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target, String::new()),
            };
            Ok(Some(Request {
                method,
                path,
                query,
                authorization,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST => Err(ReadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ReadError::Bad),
    }
}

fn route(control: &Control, req: &Request) -> Response {
    let allowed = match req.path.as_str() {
        "/metrics" | "/status" | "/config" => "GET",
        "/reload" | "/cache/flush" => "POST",
        _ => return Response::error(404, "Not Found"),
    };
    let method_ok = req.method == allowed || (allowed == "GET" && req.method == "HEAD");
    if !method_ok {
        return Response {
            extra: if allowed == "GET" {
                "allow: GET, HEAD\r\n"
            } else {
                "allow: POST\r\n"
            },
            ..Response::error(405, "Method Not Allowed")
        };
    }
    match req.path.as_str() {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(control).into_bytes(),
            extra: "",
        },
        "/status" => Response::json(200, &status_json(control)),
        "/config" => Response::json(200, &config_json(control)),
        "/reload" => reload(control),
        "/cache/flush" => flush(control, req),
        _ => Response::error(404, "Not Found"),
    }
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn status_json(control: &Control) -> Value {
    let s = control.status();
    json!({
        "version": s.version,
        "pid": std::process::id(),
        "uptime_seconds": s.uptime.as_secs(),
        "started_at": unix(s.started),
        "shards": s.cores.iter().enumerate()
            .map(|(i, c)| json!({"shard": i, "core": c}))
            .collect::<Vec<_>>(),
        "config": {
            "file": s.source.map(|p| p.display().to_string()),
            "generation": s.generation,
            "loaded_at": unix(s.loaded_at),
            "reloads": s.reloads,
            "failed_reloads": s.failed_reloads,
            "last_error": s.last_error,
        },
        "listeners": s.listeners.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// Keys whose values are secrets, wherever they appear.
const SECRET_KEYS: [&str; 4] = ["value", "invalidation_token", "token", "authorization"];

/// Whether a configuration key holds a secret: the keys above and any
/// `*_sha256` digest (brute-forceable for short tokens).
fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key) || key.ends_with("_sha256")
}

/// Whether a stage variable's name says it is a secret (variables often
/// carry backend credentials).
fn is_secret_variable(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "credential",
        "apikey",
        "api_key",
        "private",
        "auth",
    ]
    .iter()
    .any(|w| n.contains(w))
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret(k) && !v.is_null() {
                    *v = Value::String("<redacted>".into());
                } else if k == "variables" {
                    if let Value::Object(vars) = v {
                        for (name, value) in vars.iter_mut() {
                            if is_secret_variable(name) {
                                *value = Value::String("<redacted>".into());
                            } else if let Value::String(text) = value {
                                redact_userinfo(text);
                            }
                        }
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => redact_userinfo(text),
        _ => {}
    }
}

/// `scheme://user:pass@host/...` → `scheme://<redacted>@host/...`.
fn redact_userinfo(text: &mut String) {
    if let Some(start) = text.find("://").map(|i| i + 3) {
        let authority_end = text[start..]
            .find(['/', '?', '#'])
            .map_or(text.len(), |i| start + i);
        if let Some(at) = text[start..authority_end].rfind('@') {
            text.replace_range(start..start + at, "<redacted>");
        }
    }
}

fn config_json(control: &Control) -> Value {
    let snap = control.snapshot();
    let mut v = serde_json::to_value(&snap.config).unwrap_or(Value::Null);
    redact(&mut v);
    v
}

fn reload(control: &Control) -> Response {
    match control.reload_from_source() {
        Ok(r) => Response::json(
            200,
            &json!({
                "message": "reloaded",
                "generation": r.generation,
                "restart_needed": r.restart_needed,
                "listeners_opened": r.listeners_opened.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "listeners_closed": r.listeners_closed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "throttle_rebuilt": r.throttle_rebuilt,
                "warnings": r.warnings,
            }),
        ),
        Err(e) => Response::json(
            400,
            &json!({
                "message": "reload refused; the running configuration stays",
                "errors": e.issues(),
            }),
        ),
    }
}

/// `POST /cache/flush` flushes everything; `?stage=API/STAGE` one stage;
/// `?url=/path?query&host=HOST` the entry a GET of that URL would get
/// (with `header.NAME=value` for header key parameters), `Vary` variants
/// included.
fn flush(control: &Control, req: &Request) -> Response {
    let Some(cache) = control.cache() else {
        return Response::json(200, &json!({"flushed": 0}));
    };
    let mut stage = None;
    let mut url = None;
    let mut host = None;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for pair in req.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "stage" => stage = Some(v),
            "url" => url = Some(v),
            "host" => host = Some(v),
            k => match k.strip_prefix("header.") {
                Some(name) if !name.is_empty() => {
                    headers.push((name.to_ascii_lowercase(), v.into_bytes()));
                }
                _ => {
                    return Response::error(
                        400,
                        "unknown parameter; use ?stage=API/STAGE, ?url=/path&host=HOST[&header.NAME=value], or none",
                    )
                }
            },
        }
    }
    let snap = control.snapshot();
    let flushed = match (stage, url) {
        (None, None) => cache.flush_all(),
        (Some(s), None) => {
            let Some((api, st)) = s.split_once('/') else {
                return Response::error(400, "stage must be API/STAGE");
            };
            let known = snap
                .apis
                .iter()
                .any(|a| a.name == api && a.stages.iter().any(|x| x.name == st));
            if !known {
                return Response::error(404, &format!("no stage {api}/{st}"));
            }
            cache.flush_stage(api, st)
        }
        (None, Some(u)) => {
            if !u.starts_with('/') {
                return Response::error(400, "url must be a path, e.g. /prod/items?id=1");
            }
            match crate::server::flush_url(
                cache,
                &snap,
                host.as_deref().map(str::as_bytes),
                u.as_bytes(),
                &headers,
            ) {
                Ok(n) => n,
                Err(e) => return Response::error(404, &e.to_string()),
            }
        }
        (Some(_), Some(_)) => return Response::error(400, "give stage or url, not both"),
    };
    Response::json(200, &json!({ "flushed": flushed }))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks the admin listener at `addr` to reload (`tollgate reload`).
pub fn request_reload(addr: SocketAddr, token: Option<&str>) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /reload HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n{auth}\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}
