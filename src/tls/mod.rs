//! TLS settings: rustls server configurations per listener and custom
//! domain, certificate selection by SNI, mutual TLS, the verified client
//! certificate's facts, and client configurations for HTTPS backends.
//!
//! Everything here is built when a snapshot is built (off the hot path)
//! and is immutable afterwards; shards share it through `Arc`. The socket
//! side (handshakes over glommio streams) is in `server/` and `upstream/`.
//!
//! rustls does the protocol (TLS 1.2 and 1.3 only, the `ring` provider's
//! safe defaults); this module only decides which configuration a
//! connection gets. SNI selection is ours rather than a rustls
//! `ResolvesServerCert`, because a custom domain may also require a client
//! certificate, and client authentication is a property of the whole
//! `ServerConfig`: the server reads the ClientHello first and then picks a
//! configuration (rustls' `Acceptor`).

pub mod dev_cert;
pub mod peer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use peer::ClientCert;

/// Sessions remembered for TLS 1.2 session-id resumption, per process.
const SESSION_CACHE_ENTRIES: usize = 32 * 1024;
/// ... and per mutual-TLS site configuration.
const MTLS_SESSION_CACHE_ENTRIES: usize = 4 * 1024;

/// Why a TLS setting could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("`{path}` holds no usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not go together: {0}")]
    Mismatch(String),
    #[error("`{path}`: {reason}")]
    Truststore { path: PathBuf, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot create the development certificate in `{path}`: {reason}")]
    DevCert { path: PathBuf, reason: String },
}

/// The one crypto provider: ring (builds with a C compiler only).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Session ticket keys shared by every configuration of this process, so
/// tickets stay valid across domains' configurations and reloads (the
/// ticketer rotates its keys every 6 hours).
fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
    static T: OnceLock<Option<Arc<dyn ProducesTickets>>> = OnceLock::new();
    T.get_or_init(|| rustls::crypto::ring::Ticketer::new().ok())
        .clone()
}

/// TLS 1.2 session-id cache shared the same way.
fn session_cache() -> Arc<dyn StoresServerSessions + Send + Sync> {
    static C: OnceLock<Arc<dyn StoresServerSessions + Send + Sync>> = OnceLock::new();
    C.get_or_init(|| rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES))
        .clone()
}

/// A certificate chain and its private key, read from PEM files.
#[derive(Debug)]
pub struct CertKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for CertKey {
    fn clone(&self) -> Self {
        CertKey {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

impl CertKey {
    /// Reads a chain (leaf first) and its key (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<CertKey, TlsError> {
        let chain = load_certs(cert)?;
        let pem = read(key)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
        let ck = CertKey { chain, key };
        ck.check()?;
        Ok(ck)
    }

    /// Fails unless the key is the leaf certificate's.
    fn check(&self) -> Result<(), TlsError> {
        let signing = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| TlsError::Mismatch(e.to_string()))?;
        let certified = rustls::sign::CertifiedKey::new(self.chain.clone(), signing);
        certified
            .keys_match()
            .map_err(|e| TlsError::Mismatch(e.to_string()))
    }
}

/// Client certificates: required (the handshake fails without a valid
/// one) or optional (verified when sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

/// Mutual TLS for a site: the truststore its client certificates must
/// chain to.
#[derive(Debug, Clone)]
pub struct MtlsSpec {
    pub truststore: PathBuf,
    pub mode: ClientAuth,
}

/// Header names a verified client certificate's facts are forwarded to
/// backends in (each optional). Requests' own headers of these names are
/// dropped on the site's connections, so a client cannot forge them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertHeaders {
    pub subject: Option<Box<[u8]>>,
    pub issuer: Option<Box<[u8]>>,
    pub serial: Option<Box<[u8]>>,
    pub not_before: Option<Box<[u8]>>,
    pub not_after: Option<Box<[u8]>>,
}

impl CertHeaders {
    /// The configured names, lowercase.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        [
            &self.subject,
            &self.issuer,
            &self.serial,
            &self.not_before,
            &self.not_after,
        ]
        .into_iter()
        .filter_map(|n| n.as_deref())
    }

    /// Renders `name: value\r\n` lines for a verified certificate.
    pub fn render(&self, cert: &ClientCert, out: &mut Vec<u8>) {
        let fields: [(&Option<Box<[u8]>>, &str); 5] = [
            (&self.subject, &cert.subject),
            (&self.issuer, &cert.issuer),
            (&self.serial, &cert.serial),
            (&self.not_before, &cert.not_before),
            (&self.not_after, &cert.not_after),
        ];
        for (name, value) in fields {
            if let Some(name) = name {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                // Values come from a verified certificate but may still hold
                // bytes a header must not: keep printable ASCII only.
                out.extend(
                    value
                        .bytes()
                        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' }),
                );
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// One certificate (and client-authentication policy) a TLS listener can
/// present: its own default, or a custom domain's.
#[derive(Debug)]
pub struct Site {
    /// The domain name it serves (`None`: the listener's default).
    pub name: Option<Box<str>>,
    pub config: Arc<ServerConfig>,
    pub client_auth: Option<ClientAuth>,
    /// Where verified client certificates' facts go.
    pub cert_headers: Option<CertHeaders>,
    /// When the presented certificate expires (Unix seconds).
    pub not_after: Option<i64>,
}

impl Site {
    /// Builds a site presenting `cert`, with optional mutual TLS.
    pub fn build(
        name: Option<&str>,
        cert: &CertKey,
        mtls: Option<&MtlsSpec>,
        cert_headers: Option<CertHeaders>,
    ) -> Result<Site, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match mtls {
            None => builder.with_no_client_auth(),
            Some(m) => {
                let mut roots = RootCertStore::empty();
                for c in load_certs(&m.truststore)? {
                    roots.add(c).map_err(|e| TlsError::Truststore {
                        path: m.truststore.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                );
                let v = match m.mode {
                    ClientAuth::Required => v,
                    ClientAuth::Optional => v.allow_unauthenticated(),
                };
                let v = v.build().map_err(|e| TlsError::Truststore {
                    path: m.truststore.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(v)
            }
        };
        let mut config = builder.with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
        // HTTP/1.1, and HTTP/1.0 for clients that offer only that (curl
        // -0): offering ALPN with no protocol in common fails the
        // handshake. Clients that send no ALPN are served too.
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
        if mtls.is_some() {
            // A resumed session skips client-certificate verification and
            // carries the certificate it was first made with: sessions of
            // a site that authenticates clients must not outlive its
            // policy, so each build (each reload) gets its own keys and
            // cache, and no other site's session resumes here.
            if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
                config.ticketer = t;
            }
            config.session_storage =
                rustls::server::ServerSessionMemoryCache::new(MTLS_SESSION_CACHE_ENTRIES);
        } else {
            if let Some(t) = ticketer() {
                config.ticketer = t;
            }
            config.session_storage = session_cache();
        }
        Ok(Site {
            name: name.map(Into::into),
            config: Arc::new(config),
            client_auth: mtls.map(|m| m.mode),
            cert_headers,
            not_after: cert
                .chain
                .first()
                .and_then(|c| peer::not_after_unix(c.as_ref())),
        })
    }
}

/// What a client without SNI, or with a name no site serves, gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// The listener's default certificate.
    Default,
    /// No handshake: the connection is closed.
    Refuse,
}

/// A TLS listener's sites, selected by SNI: exact names first, then the
/// longest matching `*.suffix` wildcard, then the default.
#[derive(Debug)]
pub struct ServerTls {
    exact: HashMap<Box<str>, Arc<Site>>,
    /// `(".example.com", site)`, longest suffix first.
    wildcard: Vec<(Box<str>, Arc<Site>)>,
    default: Arc<Site>,
    unknown: UnknownSni,
}

impl ServerTls {
    pub fn new(default: Site, unknown: UnknownSni) -> ServerTls {
        ServerTls {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            default: Arc::new(default),
            unknown,
        }
    }

    /// Adds a site for `name` (exact, or `*.suffix`); the site's own name.
    pub fn add(&mut self, site: Arc<Site>) {
        let Some(name) = site
            .name
            .as_deref()
            .map(|n| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase())
        else {
            return;
        };
        match name.strip_prefix('*') {
            Some(suffix) => {
                self.wildcard.push((suffix.into(), site));
                self.wildcard
                    .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            }
            None => {
                self.exact.insert(name.into(), site);
            }
        }
    }

    /// The site for a ClientHello's server name (`None`: no SNI); `None`
    /// when the handshake is to be refused.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<Site>> {
        let Some(name) = sni else {
            return (self.unknown == UnknownSni::Default).then_some(&self.default);
        };
        self.lookup(name).or(match self.unknown {
            UnknownSni::Default => Some(&self.default),
            UnknownSni::Refuse => None,
        })
    }

    /// The site serving `host` by name, if one does (no default).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Site>> {
        // rustls hands server names over lowercased; Host headers are not.
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(s) = self.exact.get(host) {
            return Some(s);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
            .map(|(_, s)| s)
    }

    /// Every site: the default first, then by name.
    pub fn sites(&self) -> impl Iterator<Item = &Arc<Site>> {
        std::iter::once(&self.default)
            .chain(self.exact.values())
            .chain(self.wildcard.iter().map(|(_, s)| s))
    }

    /// The site a connection without SNI (or with an unknown name) gets.
    pub fn default_site(&self) -> &Arc<Site> {
        &self.default
    }
}

/// How the gateway connects to an HTTPS backend.
#[derive(Debug)]
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
}

/// An HTTPS backend's trust and identity settings.
#[derive(Debug, Clone, Default)]
pub struct BackendTlsSpec {
    /// PEM CA certificates to trust instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    /// A client certificate to present (mutual TLS to the backend).
    pub client_cert: Option<CertKey>,
}

impl BackendTls {
    /// The client configuration for `spec`. The common one (web roots, no
    /// client certificate) is built once per process.
    pub fn client_config(spec: &BackendTlsSpec) -> Result<Arc<ClientConfig>, TlsError> {
        static WEB: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        if spec.ca.is_none() && spec.client_cert.is_none() {
            if let Some(c) = WEB.get() {
                return Ok(c.clone());
            }
        }
        let mut roots = RootCertStore::empty();
        match &spec.ca {
            Some(path) => {
                for c in load_certs(path)? {
                    roots.add(c).map_err(|e| TlsError::Truststore {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let mut config = match &spec.client_cert {
            Some(ck) => builder.with_client_auth_cert(ck.chain.clone(), ck.key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if spec.ca.is_none() && spec.client_cert.is_none() {
            return Ok(WEB.get_or_init(|| config).clone());
        }
        Ok(config)
    }

    /// Connects to backend host `host` (a DNS name or IP literal).
    pub fn new(host: &str, config: Arc<ClientConfig>) -> Result<BackendTls, TlsError> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|_| {
            TlsError::Rustls(rustls::Error::General(format!(
                "`{host}` is not a valid TLS server name"
            )))
        })?;
        Ok(BackendTls {
            config,
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for(names: &[&str]) -> CertKey {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        CertKey {
            chain: vec![c.cert.der().clone()],
            key: PrivateKeyDer::try_from(c.key_pair.serialize_der()).expect("key"),
        }
    }

    fn site(name: Option<&str>) -> Site {
        Site::build(name, &cert_for(&["x.test"]), None, None).expect("site")
    }

    #[test]
    fn sni_selects_exact_then_longest_wildcard_then_default() {
        let mut t = ServerTls::new(site(None), UnknownSni::Default);
        t.add(Arc::new(site(Some("api.example.com"))));
        t.add(Arc::new(site(Some("*.example.com"))));
        t.add(Arc::new(site(Some("*.eu.example.com"))));
        let name = |s: Option<&str>| t.select(s).map(|s| s.name.as_deref().map(String::from));
        assert_eq!(
            name(Some("api.example.com")),
            Some(Some("api.example.com".into()))
        );
        assert_eq!(
            name(Some("x.example.com")),
            Some(Some("*.example.com".into()))
        );
        assert_eq!(
            name(Some("a.eu.example.com")),
            Some(Some("*.eu.example.com".into()))
        );
        // A wildcard covers subdomains, not the bare domain.
        assert_eq!(name(Some("example.com")), Some(None));
        assert_eq!(name(None), Some(None));
        assert_eq!(
            t.lookup("API.Example.COM")
                .and_then(|s| s.name.clone())
                .as_deref(),
            Some("api.example.com")
        );
    }

    #[test]
    fn refusing_unknown_names() {
        let mut t = ServerTls::new(site(None), UnknownSni::Refuse);
        t.add(Arc::new(site(Some("api.example.com"))));
        assert!(t.select(Some("other.example.com")).is_none());
        assert!(t.select(None).is_none());
        assert!(t.select(Some("api.example.com")).is_some());
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = cert_for(&["a.test"]);
        let b = cert_for(&["b.test"]);
        let mixed = CertKey {
            chain: a.chain.clone(),
            key: b.key.clone_key(),
        };
        assert!(matches!(mixed.check(), Err(TlsError::Mismatch(_))));
        assert!(a.check().is_ok());
    }

    #[test]
    fn cert_headers_render_only_configured_and_printable() {
        let h = CertHeaders {
            subject: Some(b"x-client-subject".to_vec().into()),
            serial: Some(b"x-client-serial".to_vec().into()),
            ..CertHeaders::default()
        };
        let cert = ClientCert {
            subject: "CN=a\r\nx: y".into(),
            issuer: "CN=ca".into(),
            serial: "0a:0b".into(),
            not_before: String::new(),
            not_after: String::new(),
        };
        let mut out = Vec::new();
        h.render(&cert, &mut out);
        assert_eq!(
            out,
            b"x-client-subject: CN=a??x: y\r\nx-client-serial: 0a:0b\r\n".to_vec()
        );
        assert_eq!(h.names().count(), 2);
    }
}
