//! Test harness: a tollgate started in-process on ephemeral loopback ports,
//! a scriptable origin server on std threads, and a raw HTTP/1.1 client.
//!
//! The client and origin are written against the byte level on purpose:
//! the tests check framing, so they must not share the gateway's codec.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tollgate::config::{self, Host};
use tollgate::runtime::{self, Gateway};

/// A gateway running in this process; stopped and joined on drop.
pub struct TestGateway {
    gw: Option<Gateway>,
    pub addr: SocketAddr,
}

impl TestGateway {
    /// Starts a gateway from a config whose listener is written as
    /// `LISTEN` (replaced with an ephemeral port); one shard by default.
    pub fn start(config_text: &str) -> TestGateway {
        let mut text = config_text.replace("LISTEN", "127.0.0.1:0");
        if !text.contains("shards") {
            text = format!("[server]\nshards = 1\n{text}");
        }
        let snap = config::from_str(&text, "test.toml", &Host::detect())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let gw = runtime::start(Arc::new(snap)).expect("gateway starts");
        let addr = gw.addrs()[0];
        TestGateway { gw: Some(gw), addr }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The running gateway (counters, quota usage).
    pub fn gateway(&self) -> &Gateway {
        self.gw.as_ref().expect("running")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop();
            gw.join();
        }
    }
}

/// The first value of header `name` (case-insensitive).
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Index of the origin connection it came on, and its position there.
    pub conn: usize,
    pub nth_on_conn: usize,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// What the origin does with a request.
pub enum Reply {
    /// Write these bytes and keep reading requests.
    Raw(Vec<u8>),
    /// Write these bytes, then close.
    RawThenClose(Vec<u8>),
    /// Wait, then do the inner reply.
    After(Duration, Box<Reply>),
    /// Close without answering.
    Close,
    /// Write the head, then `n` bytes of body in 64 KiB pieces.
    Stream { head: Vec<u8>, len: usize },
}

/// `200 OK` with a Content-Length body.
pub fn ok(body: &str) -> Reply {
    Reply::Raw(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// A scriptable origin server.
pub struct Origin {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Req>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    pub fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, conns) = (requests.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let (reqs, handler) = (reqs.clone(), handler.clone());
                thread::spawn(move || serve_origin(stream, n, reqs, handler));
            }
        });
        Origin {
            addr,
            requests,
            connections,
        }
    }

    /// Origin for bulk transfers: a POST gets the received body length
    /// back, anything else gets `down` bytes of `x`.
    pub fn bulk(down: usize) -> Origin {
        Origin::start(move |req| {
            if req.method == "POST" {
                ok(&req.body.len().to_string())
            } else {
                Reply::Stream {
                    head: format!("HTTP/1.1 200 OK\r\nContent-Length: {down}\r\n\r\n").into_bytes(),
                    len: down,
                }
            }
        })
    }

    /// Origin that answers every request with `ok(body)`.
    pub fn ok(body: &'static str) -> Origin {
        Origin::start(move |_| ok(body))
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve_origin(stream: TcpStream, conn: usize, reqs: Arc<Mutex<Vec<Req>>>, handler: Arc<Handler>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut nth = 0;
    loop {
        let Some(req) = read_request(&mut reader, conn, nth) else {
            return;
        };
        nth += 1;
        let reply = handler(&req);
        reqs.lock().expect("lock").push(req);
        if !do_reply(&mut writer, reply) {
            return;
        }
    }
}

fn do_reply(w: &mut TcpStream, reply: Reply) -> bool {
    match reply {
        Reply::Raw(b) => w.write_all(&b).is_ok(),
        Reply::RawThenClose(b) => {
            let _ = w.write_all(&b);
            let _ = w.shutdown(std::net::Shutdown::Both);
            false
        }
        Reply::After(d, inner) => {
            thread::sleep(d);
            do_reply(w, *inner)
        }
        Reply::Close => {
            let _ = w.shutdown(std::net::Shutdown::Both);
            false
        }
        Reply::Stream { head, len } => {
            if w.write_all(&head).is_err() {
                return false;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                if w.write_all(&chunk[..n]).is_err() {
                    return false;
                }
                left -= n;
            }
            true
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

fn read_head(r: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let first = read_line(r)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Some((first, headers));
        }
        let (n, v) = line.split_once(':')?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
}

fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers until the empty line.
            while !read_line(r)?.is_empty() {}
            return Some(body);
        }
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk);
        read_line(r)?;
    }
}

fn read_request(r: &mut impl BufRead, conn: usize, nth: usize) -> Option<Req> {
    let (line, headers) = read_head(r)?;
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let find = |n: &str| header_value(&headers, n).map(str::to_string);
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(r)?
    } else if let Some(len) = find("content-length") {
        let mut b = vec![0; len.parse().ok()?];
        r.read_exact(&mut b).ok()?;
        b
    } else {
        Vec::new()
    };
    Some(Req {
        method,
        target,
        headers,
        body,
        chunked,
        conn,
        nth_on_conn: nth,
    })
}

/// A parsed response as the client saw it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.1 client over one connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect to gateway");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            writer: s.try_clone().expect("clone"),
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).expect("write request");
    }

    /// Sends a GET with Host and returns the response.
    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response(false).expect("response")
    }

    /// Reads one response; `head_request` means no body follows.
    pub fn read_response(&mut self, head_request: bool) -> Option<Resp> {
        let (line, headers) = read_head(&mut self.reader)?;
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let find = |n: &str| header_value(&headers, n).map(str::to_string);
        let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let no_body =
            head_request || status == 204 || status == 304 || (100..200).contains(&status);
        let body = if no_body {
            Vec::new()
        } else if chunked {
            read_chunked(&mut self.reader)?
        } else if let Some(len) = find("content-length") {
            let mut b = vec![0; len.parse().ok()?];
            self.reader.read_exact(&mut b).ok()?;
            b
        } else {
            let mut b = Vec::new();
            self.reader.read_to_end(&mut b).ok()?;
            b
        };
        Some(Resp {
            status,
            headers,
            body,
            chunked,
        })
    }

    /// Reads whatever arrives until the server closes (or the read times out).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut b = Vec::new();
        let _ = self.reader.read_to_end(&mut b);
        b
    }

    /// One read of whatever the server sends (an error on a timeout).
    pub fn read_raw(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }

    /// True when the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.writer.set_read_timeout(Some(d)).expect("timeout");
    }
}

/// A config with one http route to `origin` and a mock route.
pub fn proxy_config(origin: SocketAddr, extra_server: &str) -> String {
    format!(
        r#"
[server]
shards = 1
{extra_server}
[[server.listen]]
addr = "LISTEN"
tls = false

[[api]]
name = "t"
[[api.route]]
key = "GET /mock"
integration = {{ type = "mock", status = 200, body = "mocked" }}
[[api.route]]
key = "ANY /api/{{proxy+}}"
integration = {{ type = "http", uri = "http://{origin}/{{proxy}}" }}
"#
    )
}

impl Client {
    /// Reads exactly `n` raw bytes (after a response head) into `out`.
    pub fn read_exact_into(&mut self, out: &mut Vec<u8>, n: usize) {
        let mut b = vec![0; n];
        self.reader.read_exact(&mut b).expect("read raw bytes");
        out.extend_from_slice(&b);
    }
}

impl Client {
    /// Writes raw bytes, reporting failure instead of panicking.
    pub fn try_send(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(raw)
    }
}

impl Client {
    /// Half-closes the client's sending side.
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// Reads until EOF; an error (e.g. a reset) is returned as such.
    pub fn read_until_eof(&mut self) -> std::io::Result<Vec<u8>> {
        let mut b = Vec::new();
        self.reader.read_to_end(&mut b).map(|_| b)
    }
}

/// A one-connection origin at the byte level: accepts one connection,
/// reads the request head (through the blank line), and hands the socket
/// and the head to `then` on its own thread.
pub fn raw_origin(then: impl FnOnce(TcpStream, Vec<u8>) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        then(s, head);
    });
    addr
}

/// The API key the quota configs below accept.
pub const QUOTA_KEY: &str = "alice-key-0123456789abcdef";

/// One mock route `GET /prod/x` that requires an API key (`QUOTA_KEY`,
/// named `alice`), in a usage plan `p` with a quota of `limit` per
/// `period`; counters kept in `state`.
pub fn quota_config(state: &std::path::Path, shards: usize, limit: u64, period: &str) -> String {
    format!(
        r#"
[server]
shards = {shards}
state_dir = "{}"
[[server.listen]]
addr = "LISTEN"
tls = false
[[api_key]]
name = "alice"
value = "{QUOTA_KEY}"
[[api]]
name = "q"
[[api.stage]]
name = "prod"
api_key_required = true
[[api.route]]
key = "GET /x"
integration = {{ type = "mock", body = "ok" }}
[[usage_plan]]
name = "p"
stages = ["q/prod"]
keys = ["alice"]
quota = {{ limit = {limit}, period = "{period}" }}
"#,
        state.display()
    )
}

/// `GET /prod/x` with `QUOTA_KEY` on a connection of its own.
pub fn keyed_get(addr: SocketAddr) -> Resp {
    let mut c = Client::connect(addr);
    c.send(format!("GET /prod/x HTTP/1.1\r\nHost: t\r\nx-api-key: {QUOTA_KEY}\r\n\r\n").as_bytes());
    c.read_response(false).expect("response")
}

/// An empty state directory for a test, unique to this process.
pub fn state_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `GET /account` needs a key, `POST /pay` is blocked by its own
/// throttle, `GET /admin/{proxy+}` needs a key, and everything else goes
/// through `ANY /{proxy+}` to the same origin without a key.
pub fn guarded_config(origin: std::net::SocketAddr, ambiguous: &str) -> String {
    format!(
        r#"
[server]
shards = 1
{ambiguous}
[[server.listen]]
addr = "LISTEN"
tls = false
[[api_key]]
name = "alice"
value = "{QUOTA_KEY}"
[[api]]
name = "t"
[[api.stage]]
name = "$default"
[[api.route]]
key = "GET /account"
api_key_required = true
integration = {{ type = "http", uri = "http://{origin}/account" }}
[[api.route]]
key = "POST /pay"
throttle = {{ rate = 0, burst = 0 }}
integration = {{ type = "http", uri = "http://{origin}/pay" }}
[[api.route]]
key = "GET /admin/{{proxy+}}"
api_key_required = true
integration = {{ type = "http", uri = "http://{origin}/admin/{{proxy}}" }}
[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http", uri = "http://{origin}/{{proxy}}" }}
[[usage_plan]]
name = "p"
stages = ["t/$default"]
keys = ["alice"]
"#
    )
}
