//! HTTPS end to end, with certificates made in the test (rcgen) and a
//! rustls client: TLS 1.3 and 1.2, SNI certificate selection, unknown
//! names, custom domains with base path mappings, Host/SNI mismatch,
//! mutual TLS (required and optional; good, missing and wrong-CA client
//! certificates; the certificate's facts forwarded and not forgeable),
//! session resumption, HTTPS backends, and certificate reload while a
//! connection stays open.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{state_dir, Origin};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tollgate::config::{self, Host};
use tollgate::runtime;

/// A test CA that signs server and client certificates into files.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    ca_path: PathBuf,
}

/// A certificate and key written to files, with their DER forms.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca = p.self_signed(&ca_key).expect("ca");
        let ca_path = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
            ca_path,
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.ca_path.clone()
    }

    fn roots(&self) -> RootCertStore {
        let mut r = RootCertStore::empty();
        r.add(self.ca.der().clone()).expect("root");
        r
    }

    fn leaf(&self, file: &str, names: &[&str], cn: &str, client: bool) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "Tollgate Tests");
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting `roots`, limited to `versions`, with an optional
/// client certificate.
fn client(
    roots: RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut c = match identity {
        Some(l) => b
            .with_client_auth_cert(vec![l.der.clone()], l.key_der.clone_key())
            .expect("client cert"),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake; `name` is sent as SNI unless it
/// is an IP address.
fn connect(addr: SocketAddr, name: &str, cfg: Arc<ClientConfig>) -> std::io::Result<Tls> {
    let server = ServerName::try_from(name.to_string()).expect("name");
    let conn = ClientConnection::new(cfg, server).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// A response: status, headers, body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, n: &str) -> Option<&str> {
        common::header_value(&self.headers, n)
    }
}

/// Sends `GET path` with `Host: host` (and `extra` header lines) and
/// reads a Content-Length-framed response.
fn get(s: &mut impl ReadWrite, host: &str, path: &str, extra: &str) -> std::io::Result<Resp> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes())?;
    s.flush()?;
    read_response(s)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_response(s: &mut impl Read) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = common::header_value(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A gateway started from `text` (`LISTEN_TLS` / `LISTEN` become
/// ephemeral ports); its addresses in listener order.
struct Gw {
    gw: Option<runtime::Gateway>,
    addrs: Vec<SocketAddr>,
}

impl Gw {
    fn start(text: &str) -> Gw {
        let text = text
            .replace("LISTEN_TLS", "127.0.0.1:0")
            .replace("LISTEN", "127.0.0.1:0");
        let snap = config::from_str(&text, "tls-test.toml", &Host::detect())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let gw = runtime::start(Arc::new(snap)).expect("gateway starts");
        let addrs = gw.addrs();
        Gw {
            gw: Some(gw),
            addrs,
        }
    }

    fn control(&self) -> Arc<runtime::Control> {
        self.gw.as_ref().expect("running").control()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop();
            gw.join();
        }
    }
}

fn base(state: &Path) -> String {
    format!(
        r#"
[server]
shards = 1
state_dir = "{}"
[server.admin]
enabled = false
"#,
        state.display()
    )
}

const APIS: &str = r#"
[[api]]
name = "root"
[[api.route]]
key = "GET /hello"
integration = { type = "mock", status = 200, body = "root hello" }

[[api]]
name = "orders"
hosts = ["orders.internal"]
[[api.stage]]
name = "prod"
[[api.route]]
key = "GET /items"
integration = { type = "mock", status = 200, body = "orders items" }

[[api]]
name = "users"
hosts = ["users.internal"]
[[api.route]]
key = "GET /items"
integration = { type = "mock", status = 200, body = "users items" }
"#;

/// A gateway with one TLS listener presenting `srv`, then `rest` (APIs,
/// domains).
fn tls_gateway(dir: &Path, srv: &Leaf, rest: &str) -> Gw {
    Gw::start(&format!(
        r#"{}
[[server.listen]]
addr = "LISTEN_TLS"
certificate = "{}"
key = "{}"
{rest}"#,
        base(dir),
        srv.cert.display(),
        srv.key.display()
    ))
}

/// Presented certificate of a connection.
fn peer_cert(s: &Tls) -> CertificateDer<'static> {
    s.conn.peer_certificates().expect("certs")[0].clone()
}

#[test]
fn tls13_and_tls12_serve_requests_with_alpn() {
    let dir = state_dir("tls-versions");
    let pki = Pki::new(&dir, "ca-versions");
    let srv = pki.leaf("srv", &["localhost", "127.0.0.1"], "localhost", false);
    let gw = tls_gateway(&dir, &srv, APIS);
    let addr = gw.addrs[0];
    for (versions, expect) in [
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ] {
        let mut s = connect(addr, "localhost", client(pki.roots(), versions, None)).expect("tls");
        assert_eq!(s.conn.protocol_version(), Some(expect));
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        // Keep-alive: two requests on the connection.
        for _ in 0..2 {
            let r = get(&mut s, "localhost", "/hello", "").expect("response");
            assert_eq!((r.status, r.body.as_str()), (200, "root hello"));
            assert!(r.header("x-request-id").is_some());
        }
    }
    // Plain HTTP on a TLS port: 400 and close (NGINX's answer too).
    let mut plain = TcpStream::connect(addr).expect("tcp");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("plain HTTP request"),
        "plain HTTP gets a readable 400, never the route: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sni_selects_certificates_and_unknown_names_get_the_default_or_nothing() {
    let dir = state_dir("tls-sni");
    let pki = Pki::new(&dir, "ca-sni");
    let default = pki.leaf("default", &["default.test", "127.0.0.1"], "default", false);
    let api = pki.leaf("api", &["api.example.com"], "api", false);
    let wild = pki.leaf("wild", &["*.apps.example.com"], "wild", false);
    let domains = format!(
        r#"
[[domain]]
name = "api.example.com"
certificate = "{}"
key = "{}"
[[domain.mapping]]
api = "root"
stage = "$default"

[[domain]]
name = "*.apps.example.com"
certificate = "{}"
key = "{}"
[[domain.mapping]]
api = "root"
stage = "$default"
"#,
        api.cert.display(),
        api.key.display(),
        wild.cert.display(),
        wild.key.display()
    );
    let gw = Gw::start(&format!(
        r#"{}
[[server.listen]]
addr = "LISTEN_TLS"
certificate = "{}"
key = "{}"
[[server.listen]]
addr = "127.0.0.2:0"
certificate = "{}"
key = "{}"
unknown_sni = "refuse"
{APIS}{domains}"#,
        base(&dir),
        default.cert.display(),
        default.key.display(),
        default.cert.display(),
        default.key.display(),
    ));
    let (open, strict) = (gw.addrs[0], gw.addrs[1]);
    let cfg = client(pki.roots(), BOTH, None);
    for (name, want) in [
        ("api.example.com", &api.der),
        ("x.apps.example.com", &wild.der),
        ("default.test", &default.der),
        ("127.0.0.1", &default.der),
    ] {
        let mut s = connect(open, name, cfg.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&peer_cert(&s), want, "{name}");
        let r = get(&mut s, name, "/hello", "").expect("response");
        assert_eq!(r.status, 200, "{name}");
    }
    // An unknown name on the default listener gets the default
    // certificate (which then fails verification for that name).
    let unknown = connect(open, "nope.example.org", cfg.clone());
    assert!(
        unknown.is_err(),
        "default certificate does not cover the name"
    );
    // The strict listener refuses unknown names and clients without SNI,
    // and still serves known ones.
    assert!(connect(strict, "nope.example.org", cfg.clone()).is_err());
    assert!(connect(strict, "127.0.0.1", cfg.clone()).is_err());
    let mut s = connect(strict, "api.example.com", cfg).expect("known name");
    assert_eq!(peer_cert(&s), api.der);
    assert_eq!(
        get(&mut s, "api.example.com", "/hello", "")
            .expect("r")
            .status,
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn base_path_mappings_route_and_host_must_match_sni() {
    let dir = state_dir("tls-mapping");
    let pki = Pki::new(&dir, "ca-mapping");
    let srv = pki.leaf("srv", &["api.example.com", "127.0.0.1"], "srv", false);
    let gw = tls_gateway(
        &dir,
        &srv,
        &format!(
            r#"{APIS}
[[domain]]
name = "api.example.com"
[[domain.mapping]]
base_path = "v1"
api = "orders"
stage = "prod"
[[domain.mapping]]
base_path = "/people/v2/"
api = "users"
stage = "$default"
[[domain.mapping]]
api = "root"
stage = "$default"
"#
        ),
    );
    let addr = gw.addrs[0];
    let cfg = client(pki.roots(), BOTH, None);
    let mut s = connect(addr, "api.example.com", cfg.clone()).expect("tls");
    let host = "api.example.com";
    let body = |s: &mut Tls, path: &str| {
        let r = get(s, host, path, "").expect("response");
        (r.status, r.body)
    };
    // The base path is stripped; the stage name is not in the path.
    assert_eq!(body(&mut s, "/v1/items"), (200, "orders items".into()));
    assert_eq!(
        body(&mut s, "/people/v2/items"),
        (200, "users items".into())
    );
    assert_eq!(body(&mut s, "/hello"), (200, "root hello".into()));
    // Longest base path wins; a path outside every mapping's routes is 404.
    assert_eq!(body(&mut s, "/v1/hello").0, 404);
    assert_eq!(body(&mut s, "/v1x/items").0, 404);
    // With a port in Host, still the same server.
    let r = get(&mut s, "api.example.com:443", "/v1/items", "").expect("r");
    assert_eq!(r.status, 200);
    // Another host than the SNI: 421, and the connection closes.
    let r = get(&mut s, "orders.internal", "/prod/items", "").expect("r");
    assert_eq!(r.status, 421);
    assert_eq!(r.body, r#"{"message":"Misdirected Request"}"#);
    let mut b = [0u8; 1];
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "closed after 421");
    // The API's own host still reaches it through the same listener when
    // SNI and Host agree (the certificate here only covers api.example.com
    // and 127.0.0.1, so connect by IP: no SNI).
    let mut s = connect(addr, "127.0.0.1", cfg).expect("tls");
    let r = get(&mut s, "orders.internal", "/prod/items", "").expect("r");
    assert_eq!((r.status, r.body.as_str()), (200, "orders items"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway with an mTLS domain (`mode`) proxying to `origin`.
fn mtls_gateway(dir: &Path, pki: &Pki, srv: &Leaf, mode: &str, origin: SocketAddr) -> Gw {
    Gw::start(&format!(
        r#"{}
[[server.listen]]
addr = "LISTEN_TLS"
certificate = "{}"
key = "{}"
[[server.listen]]
addr = "127.0.0.2:0"
tls = false
[[api]]
name = "secure"
hosts = ["secure.internal"]
[[api.route]]
key = "GET /who"
integration = {{ type = "http", uri = "http://{origin}/who" }}
[[domain]]
name = "mtls.example.com"
mtls = {{ truststore = "{}", mode = "{mode}", headers = {{ subject = "X-Client-Subject", serial = "x-client-serial", not_after = "x-client-not-after" }} }}
[[domain.mapping]]
api = "secure"
stage = "$default"
"#,
        base(dir),
        srv.cert.display(),
        srv.key.display(),
        pki.ca_path().display(),
    ))
}

#[test]
fn mutual_tls_required_accepts_only_certificates_from_the_truststore() {
    let dir = state_dir("tls-mtls-req");
    let pki = Pki::new(&dir, "ca-mtls");
    let other = Pki::new(&dir.join("other"), "ca-other");
    let srv = pki.leaf("srv", &["mtls.example.com", "127.0.0.1"], "srv", false);
    let good = pki.leaf("good", &["client.test"], "client one", true);
    let wrong = other.leaf("wrong", &["client.test"], "intruder", true);
    let origin = Origin::ok("secret");
    let gw = mtls_gateway(&dir, &pki, &srv, "required", origin.addr);
    let addr = gw.addrs[0];
    let host = "mtls.example.com";

    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let mut s =
            connect(addr, host, client(pki.roots(), versions, Some(&good))).expect("good cert");
        let r = get(&mut s, host, "/who", "X-Client-Subject: CN=forged\r\n").expect("response");
        assert_eq!((r.status, r.body.as_str()), (200, "secret"));
        let seen = origin.requests().pop().expect("origin saw the request");
        let subject = seen.header("x-client-subject").expect("subject forwarded");
        assert!(subject.contains("CN=client one"), "{subject}");
        assert_eq!(
            seen.header_count("x-client-subject"),
            1,
            "forged copy dropped"
        );
        assert!(seen
            .header("x-client-serial")
            .is_some_and(|v| !v.is_empty()));
        assert!(seen
            .header("x-client-not-after")
            .is_some_and(|v| v.ends_with('Z')));
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }
    let before = origin.requests().len();
    // No client certificate, or one from another CA: no request gets
    // through (TLS 1.3 clients learn it at their first read).
    for identity in [None, Some(&wrong)] {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let outcome = connect(addr, host, client(pki.roots(), versions, identity))
                .and_then(|mut s| get(&mut s, host, "/who", ""));
            assert!(outcome.is_err(), "{versions:?}: {outcome:?}");
        }
    }
    assert_eq!(
        origin.requests().len(),
        before,
        "refused clients reached nothing"
    );
    // On the plain listener the domain's mapping does not exist, and a
    // forged certificate header is dropped on the API's own host too.
    let mut plain = common::Client::connect(gw.addrs[1]);
    plain.send(b"GET /who HTTP/1.1\r\nHost: mtls.example.com\r\n\r\n");
    assert_eq!(plain.read_response(false).expect("r").status, 404);
    let before = origin.requests().len();
    plain.send(
        b"GET /who HTTP/1.1\r\nHost: secure.internal\r\nX-Client-Subject: CN=forged\r\nx_client_serial: 1\r\n\r\n",
    );
    assert_eq!(plain.read_response(false).expect("r").status, 200);
    let seen = origin.requests().pop().expect("request");
    assert_eq!(seen.header("x-client-subject"), None);
    assert_eq!(seen.header("x_client_serial"), None);
    assert_eq!(origin.requests().len(), before + 1);
    let before = origin.requests().len();

    // Without SNI (the listener's default certificate, no client
    // certificate asked for), naming the mTLS host is misdirected.
    let mut s = connect(addr, "127.0.0.1", client(pki.roots(), BOTH, None)).expect("no sni");
    assert_eq!(get(&mut s, host, "/who", "").expect("r").status, 421);
    assert_eq!(
        origin.requests().len(),
        before,
        "nothing reached the origin"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mutual_tls_optional_verifies_when_sent() {
    let dir = state_dir("tls-mtls-opt");
    let pki = Pki::new(&dir, "ca-mtls-opt");
    let other = Pki::new(&dir.join("other"), "ca-other-opt");
    let srv = pki.leaf("srv", &["mtls.example.com"], "srv", false);
    let good = pki.leaf("good", &["client.test"], "client two", true);
    let wrong = other.leaf("wrong", &["client.test"], "intruder", true);
    let origin = Origin::ok("open");
    let gw = mtls_gateway(&dir, &pki, &srv, "optional", origin.addr);
    let addr = gw.addrs[0];
    let host = "mtls.example.com";

    let mut s = connect(addr, host, client(pki.roots(), BOTH, None)).expect("no cert");
    let r = get(&mut s, host, "/who", "x-client-subject: CN=forged\r\n").expect("r");
    assert_eq!(r.status, 200);
    let seen = origin.requests().pop().expect("request");
    assert_eq!(
        seen.header("x-client-subject"),
        None,
        "forged header dropped"
    );

    let mut s = connect(addr, host, client(pki.roots(), BOTH, Some(&good))).expect("cert");
    assert_eq!(get(&mut s, host, "/who", "").expect("r").status, 200);
    let seen = origin.requests().pop().expect("request");
    assert!(seen
        .header("x-client-subject")
        .is_some_and(|v| v.contains("CN=client two")));

    // A certificate that does not verify is refused even when optional.
    let outcome = connect(addr, host, client(pki.roots(), BOTH, Some(&wrong)))
        .and_then(|mut s| get(&mut s, host, "/who", ""));
    assert!(outcome.is_err(), "{outcome:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sessions_resume_with_tls13_tickets_and_tls12_ids() {
    let dir = state_dir("tls-resume");
    let pki = Pki::new(&dir, "ca-resume");
    let srv = pki.leaf("srv", &["localhost"], "srv", false);
    let gw = tls_gateway(&dir, &srv, APIS);
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        // One config: its session store carries the session over.
        let cfg = client(pki.roots(), versions, None);
        let mut first = connect(gw.addrs[0], "localhost", cfg.clone()).expect("first");
        // TLS 1.3 tickets arrive after the handshake: read a response.
        assert_eq!(
            get(&mut first, "localhost", "/hello", "")
                .expect("r")
                .status,
            200
        );
        assert_eq!(
            first.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        let mut second = connect(gw.addrs[0], "localhost", cfg).expect("second");
        assert_eq!(
            second.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{versions:?}"
        );
        assert_eq!(
            get(&mut second, "localhost", "/hello", "")
                .expect("r")
                .status,
            200
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS origin: answers `GET` with its body, keep-alive; counts
/// connections and records request heads.
struct TlsOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl TlsOrigin {
    fn start(leaf: &Leaf, client_ca: Option<&Pki>, body: &'static str) -> TlsOrigin {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(BOTH)
            .expect("versions");
        let b = match client_ca {
            Some(ca) => b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider(),
                )
                .build()
                .expect("verifier"),
            ),
            None => b.with_no_client_auth(),
        };
        let cfg = Arc::new(
            b.with_single_cert(vec![leaf.der.clone()], leaf.key_der.clone_key())
                .expect("origin cert"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (conns, hs) = (connections.clone(), heads.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let (cfg, hs) = (cfg.clone(), hs.clone());
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    let mut s = StreamOwned::new(conn, tcp);
                    loop {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match s.read(&mut byte) {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        hs.lock()
                            .expect("lock")
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).is_err() || s.flush().is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsOrigin {
            addr,
            connections,
            heads,
        }
    }
}

#[test]
fn https_backends_verify_reuse_and_fail_with_502() {
    let dir = state_dir("tls-backend");
    let pki = Pki::new(&dir, "ca-backend");
    let other = Pki::new(&dir.join("other"), "ca-backend-other");
    let origin_cert = pki.leaf("origin", &["backend.test", "127.0.0.1"], "origin", false);
    let gw_client = pki.leaf("gwclient", &["gateway.test"], "gateway", true);
    let plain = TlsOrigin::start(&origin_cert, None, "from https origin");
    let mutual = TlsOrigin::start(&origin_cert, Some(&pki), "from mtls origin");
    let gw = Gw::start(&format!(
        r#"{}
[[server.listen]]
addr = "LISTEN"
tls = false
[[api]]
name = "b"
[[api.stage]]
name = "$default"
variables = {{ backend = "https://127.0.0.1:{}" }}
[[api.route]]
key = "GET /ip"
integration = {{ type = "http", uri = "https://127.0.0.1:{}/x", tls = {{ ca = "{ca}" }} }}
[[api.route]]
key = "GET /via-variable"
integration = {{ type = "http", uri = "${{stageVariables.backend}}/x", tls = {{ ca = "{ca}" }} }}
[[api.route]]
key = "GET /wrong-ca"
integration = {{ type = "http", uri = "https://127.0.0.1:{}/x", tls = {{ ca = "{other_ca}" }} }}
[[api.route]]
key = "GET /mutual"
integration = {{ type = "http", uri = "https://127.0.0.1:{}/x", tls = {{ ca = "{ca}", client_certificate = "{}", client_key = "{}" }} }}
[[api.route]]
key = "GET /mutual-anon"
integration = {{ type = "http", uri = "https://127.0.0.1:{}/x", tls = {{ ca = "{ca}" }} }}
"#,
        base(&dir),
        plain.addr.port(),
        plain.addr.port(),
        plain.addr.port(),
        mutual.addr.port(),
        gw_client.cert.display(),
        gw_client.key.display(),
        mutual.addr.port(),
        ca = pki.ca_path().display(),
        other_ca = other.ca_path().display(),
    ));
    let mut c = common::Client::connect(gw.addrs[0]);
    for _ in 0..3 {
        let r = c.get("/ip");
        assert_eq!((r.status, r.text().as_str()), (200, "from https origin"));
    }
    assert_eq!(
        plain.connections.load(Ordering::SeqCst),
        1,
        "pooled and reused"
    );
    let head = plain.heads.lock().expect("lock")[0].clone();
    assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("host: 127.0.0.1:"),
        "{head}"
    );

    // The scheme may come from a stage variable: still TLS.
    let r = c.get("/via-variable");
    assert_eq!((r.status, r.text().as_str()), (200, "from https origin"));
    let before = plain.heads.lock().expect("lock").len();
    assert_eq!(c.get("/wrong-ca").status, 502, "untrusted backend");
    assert_eq!(plain.heads.lock().expect("lock").len(), before);

    let mut c = common::Client::connect(gw.addrs[0]);
    let r = c.get("/mutual");
    assert_eq!((r.status, r.text().as_str()), (200, "from mtls origin"));
    let mut c = common::Client::connect(gw.addrs[0]);
    assert_eq!(
        c.get("/mutual-anon").status,
        502,
        "origin requires a client cert"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificates_reload_and_open_connections_keep_theirs() {
    let dir = state_dir("tls-reload");
    let pki = Pki::new(&dir, "ca-reload");
    let first = pki.leaf("first", &["localhost"], "first", false);
    let second = pki.leaf("second", &["localhost"], "second", false);
    let live_cert = dir.join("live.pem");
    let live_key = dir.join("live-key.pem");
    std::fs::copy(&first.cert, &live_cert).expect("copy");
    std::fs::copy(&first.key, &live_key).expect("copy");
    let config_path = dir.join("gw.toml");
    let text = format!(
        r#"{}
[[server.listen]]
addr = "127.0.0.1:0"
certificate = "{}"
key = "{}"
{APIS}"#,
        base(&dir),
        live_cert.display(),
        live_key.display()
    );
    let gw = Gw::start(&text);
    let addr = gw.addrs[0];
    // Reloads keep the bound port: rewrite the file with it.
    std::fs::write(&config_path, text.replace("127.0.0.1:0", &addr.to_string()))
        .expect("write config");
    let control = gw.control();
    control.set_source(config_path.clone(), None);
    let cfg = client(pki.roots(), BOTH, None);
    let mut old = connect(addr, "localhost", cfg.clone()).expect("tls");
    assert_eq!(peer_cert(&old), first.der);

    std::fs::copy(&second.cert, &live_cert).expect("copy");
    std::fs::copy(&second.key, &live_key).expect("copy");
    control.reload_from_source().expect("reload");
    let mut new = connect(addr, "localhost", cfg).expect("tls");
    assert_eq!(
        peer_cert(&new),
        second.der,
        "new connections get the new certificate"
    );
    assert_eq!(
        get(&mut new, "localhost", "/hello", "").expect("r").status,
        200
    );
    // The connection opened before the reload still serves.
    assert_eq!(
        get(&mut old, "localhost", "/hello", "").expect("r").status,
        200
    );

    // Changed files alone are enough: the watcher reloads within a few
    // seconds (it waits for the change to hold for two looks).
    std::fs::copy(&first.cert, &live_cert).expect("copy");
    std::fs::copy(&first.key, &live_key).expect("copy");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = connect(addr, "localhost", client(pki.roots(), BOTH, None)).expect("tls");
        if peer_cert(&s) == first.der {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher did not reload"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A broken certificate file refuses the reload; the old one stays.
    std::fs::write(&live_cert, "not a certificate").expect("write");
    let e = control.reload_from_source().expect_err("invalid");
    assert!(
        e.issues()
            .iter()
            .any(|i| i.contains("server.listen[0].certificate")),
        "{:?}",
        e.issues()
    );
    let s = connect(addr, "localhost", client(pki.roots(), BOTH, None)).expect("still serving");
    assert_eq!(peer_cert(&s), first.der);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dev_certificate_is_made_once_and_served() {
    let dir = state_dir("tls-dev");
    let text = format!(
        r#"{}
[[server.listen]]
addr = "LISTEN_TLS"
{APIS}"#,
        base(&dir)
    );
    let gw = Gw::start(&text);
    let cert = dir.join("tls").join("dev-cert.pem");
    let pem = std::fs::read(&cert).expect("dev cert written");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).expect("pem");
    let mut roots = RootCertStore::empty();
    roots.add(der).expect("root");
    let mut s = connect(gw.addrs[0], "localhost", client(roots, BOTH, None)).expect("tls");
    assert_eq!(
        get(&mut s, "localhost", "/hello", "").expect("r").status,
        200
    );
    let snap = gw.control().snapshot();
    let dev = snap.tls.dev_cert.clone().expect("dev cert reported");
    assert_eq!(dev.cert_path, cert);
    // Its expiry is exported for monitoring.
    let metrics = tollgate::admin::metrics::render(&gw.control());
    let expiry = metrics
        .lines()
        .find(|l| l.starts_with("tollgate_tls_certificate_expiry_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("expiry metric");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(expiry > now, "{expiry} vs {now}");
    drop(s);
    drop(gw);
    // The next start reuses it.
    let gw = Gw::start(&text);
    assert_eq!(std::fs::read(&cert).expect("cert"), pem);
    assert_eq!(gw.control().snapshot().tls.dev_cert, Some(dev));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_that_requires_client_certificates_is_not_skipped_by_resumption() {
    let dir = state_dir("tls-mtls-resume");
    let pki = Pki::new(&dir, "ca-mtls-resume");
    let srv = pki.leaf("srv", &["mtls.example.com"], "srv", false);
    let origin = Origin::ok("ok");
    let text = |mode: &str| {
        format!(
            r#"{}
[[server.listen]]
addr = "127.0.0.1:0"
certificate = "{}"
key = "{}"
[[api]]
name = "secure"
hosts = []
[[api.route]]
key = "GET /who"
integration = {{ type = "http", uri = "http://{}/who" }}
[[domain]]
name = "mtls.example.com"
mtls = {{ truststore = "{}", mode = "{mode}" }}
[[domain.mapping]]
api = "secure"
stage = "$default"
"#,
            base(&dir),
            srv.cert.display(),
            srv.key.display(),
            origin.addr,
            pki.ca_path().display(),
        )
    };
    let gw = Gw::start(&text("optional"));
    let addr = gw.addrs[0];
    let path = dir.join("gw.toml");
    let host = "mtls.example.com";
    // One client config for every connection: it keeps the session.
    let cfg = client(pki.roots(), &[&rustls::version::TLS13], None);
    let mut first = connect(addr, host, cfg.clone()).expect("optional: no cert needed");
    assert_eq!(get(&mut first, host, "/who", "").expect("r").status, 200);
    let mut again = connect(addr, host, cfg.clone()).expect("resumes");
    assert_eq!(
        again.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(get(&mut again, host, "/who", "").expect("r").status, 200);

    // The domain now requires a client certificate: the session made
    // without one must not carry a new connection past that.
    std::fs::write(
        &path,
        text("required").replace("127.0.0.1:0", &addr.to_string()),
    )
    .expect("write");
    let control = gw.control();
    control.set_source(path, None);
    control.reload_from_source().expect("reload");
    let before = origin.requests().len();
    let outcome = connect(addr, host, cfg).and_then(|mut s| get(&mut s, host, "/who", ""));
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(origin.requests().len(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cached_answers_on_a_custom_domain_are_flushed_by_url() {
    let dir = state_dir("tls-flush");
    let pki = Pki::new(&dir, "ca-flush");
    let srv = pki.leaf("srv", &["api.example.com"], "srv", false);
    let origin = Origin::ok("fresh");
    let gw = tls_gateway(
        &dir,
        &srv,
        &format!(
            r#"
[server.cache]
capacity = "16MB"
[[api]]
name = "orders"
hosts = []
[[api.stage]]
name = "prod"
cache = {{ ttl = "300s" }}
[[api.route]]
key = "GET /items"
integration = {{ type = "http", uri = "http://{}/items" }}
[[domain]]
name = "api.example.com"
[[domain.mapping]]
base_path = "v1"
api = "orders"
stage = "prod"
"#,
            origin.addr
        ),
    );
    let host = "api.example.com";
    let mut s = connect(gw.addrs[0], host, client(pki.roots(), BOTH, None)).expect("tls");
    for _ in 0..3 {
        let r = get(&mut s, host, "/v1/items", "").expect("r");
        assert_eq!((r.status, r.body.as_str()), (200, "fresh"));
    }
    assert_eq!(origin.requests().len(), 1, "answered from the cache");
    let g = gw.gw.as_ref().expect("running");
    let snap = g.control().snapshot();
    let flushed = tollgate::server::flush_url(
        g.cache().expect("cache"),
        &snap,
        Some(host.as_bytes()),
        b"/v1/items",
        &[],
    )
    .expect("the domain's URL resolves");
    assert_eq!(flushed, 1);
    assert_eq!(get(&mut s, host, "/v1/items", "").expect("r").status, 200);
    assert_eq!(origin.requests().len(), 2, "fetched again after the flush");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scheme is part of the cache key (issue 18, item 7): an answer
/// built for a plain-HTTP request (its links say `http://`) is never
/// served to HTTPS clients of the same stage, nor the other way round.
#[test]
fn cached_answers_are_kept_apart_by_scheme() {
    let dir = state_dir("tls-scheme-key");
    let pki = Pki::new(&dir, "ca-scheme");
    let srv = pki.leaf("srv", &["localhost", "127.0.0.1"], "localhost", false);
    let origin = Origin::start(|req| {
        common::ok(&format!(
            "link {}://x/",
            req.header("x-forwarded-proto").unwrap_or("?")
        ))
    });
    // Two listeners: fixed free ports (two `:0` addresses would be one
    // address listed twice).
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
    };
    let (plain_addr, tls_addr) = (free(), free());
    let gw = Gw::start(&format!(
        r#"{}
[server.cache]
capacity = "16MB"
[[server.listen]]
addr = "{plain_addr}"
tls = false
[[server.listen]]
addr = "{tls_addr}"
certificate = "{}"
key = "{}"
[[api]]
name = "a"
[[api.stage]]
name = "prod"
cache = {{ ttl = "300s" }}
[[api.route]]
key = "GET /page"
integration = {{ type = "http", uri = "http://{}/page" }}
"#,
        base(&dir),
        srv.cert.display(),
        srv.key.display(),
        origin.addr
    ));
    let plain = || {
        let mut c = common::Client::connect(gw.addrs[0]);
        c.send(b"GET /prod/page HTTP/1.1\r\nHost: localhost\r\n\r\n");
        c.read_response(false).expect("response").text()
    };
    let tls = || {
        let mut s =
            connect(gw.addrs[1], "localhost", client(pki.roots(), BOTH, None)).expect("tls");
        get(&mut s, "localhost", "/prod/page", "").expect("r").body
    };
    assert_eq!(plain(), "link http://x/");
    assert_eq!(tls(), "link https://x/");
    assert_eq!(plain(), "link http://x/");
    assert_eq!(tls(), "link https://x/");
    assert_eq!(origin.requests().len(), 2, "each scheme's answer is cached");
    let g = gw.gw.as_ref().expect("running");
    let flushed = tollgate::server::flush_url(
        g.cache().expect("cache"),
        &g.control().snapshot(),
        Some(b"localhost"),
        b"/prod/page",
        &[],
    )
    .expect("flush");
    assert_eq!(flushed, 2, "a URL flush takes both schemes' entries");
    let _ = std::fs::remove_dir_all(&dir);
}
