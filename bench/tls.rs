//! TLS costs on the request path: choosing a site by SNI (once per
//! connection), the per-request Host check against the negotiated site,
//! and whole handshakes in memory (client and server sides together,
//! ECDSA P-256, TLS 1.3, full and resumed) to compare with the load
//! benchmark's per-connection CPU.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tollgate::server::stream::TlsInfo;
use tollgate::tls::{CertKey, ServerTls, Site, UnknownSni};

fn cert(names: &[&str]) -> (CertKey, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let c = params.self_signed(&key).expect("cert");
    (
        CertKey {
            chain: vec![c.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).expect("der"),
        },
        c,
    )
}

fn table() -> Arc<ServerTls> {
    let (ck, _) = cert(&["default.test"]);
    let mut t = ServerTls::new(
        Site::build(None, &ck, None, None).expect("site"),
        UnknownSni::Default,
    );
    for i in 0..100 {
        let name = format!("api{i}.example.com");
        t.add(Arc::new(
            Site::build(Some(&name), &ck, None, None).expect("site"),
        ));
    }
    for i in 0..10 {
        let name = format!("*.region{i}.example.net");
        t.add(Arc::new(
            Site::build(Some(&name), &ck, None, None).expect("site"),
        ));
    }
    Arc::new(t)
}

fn selection(c: &mut Criterion) {
    let t = table();
    c.bench_function("sni_select_exact_of_110", |b| {
        b.iter(|| t.select(black_box(Some("api57.example.com"))).is_some())
    });
    c.bench_function("sni_select_wildcard_of_110", |b| {
        b.iter(|| t.select(black_box(Some("x.region7.example.net"))).is_some())
    });
    let site = t.select(Some("api57.example.com")).expect("site").clone();
    let info = TlsInfo {
        sni: Some("api57.example.com".into()),
        site,
        table: t.clone(),
        client_cert: None,
        cert_lines: Box::default(),
        resumed: false,
    };
    c.bench_function("host_check_per_request", |b| {
        b.iter(|| info.misdirected(black_box(b"api57.example.com")))
    });
}

/// Drives a client and a server connection to the end of the handshake
/// through memory.
fn handshake(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server read");
            server.process_new_packets().expect("server process");
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read");
            client.process_new_packets().expect("client process");
        }
    }
}

fn handshakes(c: &mut Criterion) {
    let (ck, ca) = cert(&["localhost"]);
    let site = Site::build(None, &ck, None, None).expect("site");
    let server_config = site.config.clone();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(tollgate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let name = ServerName::try_from("localhost").expect("name");
    let mut once = (*client_config).clone();
    once.resumption = rustls::client::Resumption::disabled();
    let no_resume = Arc::new(once);
    c.bench_function("tls13_full_handshake_client_and_server", |b| {
        b.iter(|| {
            let mut cl =
                rustls::ClientConnection::new(no_resume.clone(), name.clone()).expect("client");
            let mut sv = rustls::ServerConnection::new(server_config.clone()).expect("server");
            handshake(&mut cl, &mut sv);
        })
    });
    c.bench_function("tls13_resumed_handshake_client_and_server", |b| {
        b.iter(|| {
            let mut cl =
                rustls::ClientConnection::new(client_config.clone(), name.clone()).expect("client");
            let mut sv = rustls::ServerConnection::new(server_config.clone()).expect("server");
            handshake(&mut cl, &mut sv);
            // Tickets arrive after the handshake: let the client take them.
            let mut buf = Vec::new();
            while sv.wants_write() {
                sv.write_tls(&mut buf).expect("tickets");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                cl.read_tls(&mut rd).expect("read");
                cl.process_new_packets().expect("process");
            }
        })
    });
}

criterion_group!(benches, selection, handshakes);
criterion_main!(benches);
