//! TLS parts of a snapshot: each TLS listener's sites (its default
//! certificate, or the development certificate, plus every custom
//! domain's), custom domains' base path mappings as mounts, and HTTPS
//! backends' client settings. Certificate files are read here, when the
//! snapshot is built: a reload (or a change of those files, which the
//! runtime watches) picks up new certificates.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::apis::{HostPattern, Mount};
use super::schema::{
    BackendTlsConfig, ClientCertHeadersConfig, Config, MtlsMode, UnknownSniConfig,
};
use super::snapshot::Api;
use crate::tls::dev_cert::{self, DevCert};
use crate::tls::{
    BackendTls, BackendTlsSpec, CertHeaders, CertKey, ClientAuth, MtlsSpec, ServerTls, Site,
    TlsError, UnknownSni,
};

/// What [`compile`] produces.
#[derive(Debug, Default)]
pub struct TlsSetup {
    /// Per TLS listener address, its sites.
    pub listeners: Vec<(SocketAddr, Arc<ServerTls>)>,
    /// The development certificate, if a listener presents it.
    pub dev_cert: Option<DevCert>,
    /// Every certificate, key and truststore file read, with its stamp
    /// when the snapshot was built (watched for changes by the runtime).
    pub files: Vec<(PathBuf, FileStamp)>,
    /// Every header name any domain forwards client certificate facts
    /// in (lowercase): dropped from every request, on every listener, so
    /// no client can forge them where no certificate was verified.
    pub cert_header_names: Box<[Box<[u8]>]>,
}

/// What identifies a file's content cheaply: modification time (ns),
/// size and inode; `None` if it cannot be read.
pub type FileStamp = Option<(i128, u64, u64)>;

/// The stamp of `path` now.
pub fn stamp(path: &std::path::Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.size(),
        m.ino(),
    ))
}

impl TlsSetup {
    /// The sites of the TLS listener on `addr` (`None`: plain HTTP).
    #[inline]
    pub fn for_listener(&self, addr: SocketAddr) -> Option<&Arc<ServerTls>> {
        self.listeners
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, t)| t)
    }
}

/// Builds the TLS sites of every TLS listener and the custom domains'
/// mounts (appended to `mounts`).
pub(super) fn compile(
    config: &Config,
    apis: &[Api],
    mounts: &mut Vec<Mount>,
    issue: &mut impl FnMut(String, String),
    warnings: &mut Vec<super::ConfigIssue>,
) -> TlsSetup {
    let mut setup = TlsSetup::default();
    // Stamped before reading: a change while the file is read is seen as
    // one (at worst one reload more).
    let mut files: Vec<(PathBuf, FileStamp)> = Vec::new();
    let stamped = |p: &PathBuf| (p.clone(), stamp(p));
    let mut header_names: Vec<Box<[u8]>> = Vec::new();
    let s = &config.server;
    let mut dev: Option<CertKey> = None;

    // Custom domains: their mappings, and their own sites (shared by all
    // listeners) when they carry a certificate.
    let mut domain_sites: Vec<Option<DomainSite>> = Vec::new();
    for (di, d) in config.domains.iter().enumerate() {
        let dpath = format!("domain[{di}]");
        let pattern = match HostPattern::parse(&d.name) {
            Some(HostPattern::Any) | None => {
                issue(
                    format!("{dpath}.name"),
                    format!("`{}` is not a host name or `*.suffix` wildcard", d.name),
                );
                domain_sites.push(None);
                continue;
            }
            Some(p) => p,
        };
        if config.domains[..di]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&d.name))
        {
            issue(
                format!("{dpath}.name"),
                format!("domain `{}` is listed twice", d.name),
            );
        }
        add_mappings(d, &dpath, &pattern, apis, mounts, issue);

        let mtls = d.mtls.as_ref().map(|m| MtlsSpec {
            truststore: m.truststore.clone(),
            mode: match m.mode {
                MtlsMode::Required => ClientAuth::Required,
                MtlsMode::Optional => ClientAuth::Optional,
            },
        });
        let headers = match d.mtls.as_ref().map(|m| cert_headers(&m.headers)) {
            Some(Ok(h)) => h,
            Some(Err((field, reason))) => {
                issue(format!("{dpath}.mtls.headers.{field}"), reason);
                None
            }
            None => None,
        };
        if let Some(h) = &headers {
            header_names.extend(h.names().map(Box::from));
        }
        if let Some(m) = &mtls {
            files.push(stamped(&m.truststore));
        }
        let own = match (&d.certificate, &d.key) {
            (Some(c), Some(k)) => {
                files.extend([stamped(c), stamped(k)]);
                match CertKey::load(c, k) {
                    Ok(ck) => Some(ck),
                    Err(e) => {
                        issue(format!("{dpath}.certificate"), e.to_string());
                        domain_sites.push(None);
                        continue;
                    }
                }
            }
            (None, None) => None,
            _ => {
                issue(
                    format!("{dpath}.certificate"),
                    "`certificate` and `key` go together".into(),
                );
                domain_sites.push(None);
                continue;
            }
        };
        let shared = match &own {
            Some(ck) => match Site::build(Some(&d.name), ck, mtls.as_ref(), headers.clone()) {
                Ok(site) => Some(Arc::new(site)),
                Err(e) => {
                    issue(site_field(&dpath, &e), e.to_string());
                    domain_sites.push(None);
                    continue;
                }
            },
            None => None,
        };
        domain_sites.push(Some(DomainSite {
            shared,
            mtls,
            headers,
        }));
    }

    for (i, l) in s.listen.iter().enumerate() {
        if !l.tls {
            if l.certificate.is_some() || l.key.is_some() {
                issue(
                    format!("server.listen[{i}].certificate"),
                    "a plain-HTTP listener (tls = false) takes no certificate".into(),
                );
            }
            continue;
        }
        let lpath = format!("server.listen[{i}]");
        let Ok(addr) = l.addr.parse::<SocketAddr>() else {
            continue;
        };
        let ck = match (&l.certificate, &l.key) {
            (Some(c), Some(k)) => {
                files.extend([stamped(c), stamped(k)]);
                match CertKey::load(c, k) {
                    Ok(ck) => ck,
                    Err(e) => {
                        issue(format!("{lpath}.certificate"), e.to_string());
                        continue;
                    }
                }
            }
            (None, None) => match &dev {
                Some(ck) => ck.clone(),
                None => match dev_cert::load_or_create(&s.state_dir) {
                    Ok((info, ck)) => {
                        setup.dev_cert = Some(info);
                        dev = Some(ck.clone());
                        ck
                    }
                    Err(e) => {
                        issue(format!("{lpath}.certificate"), e.to_string());
                        continue;
                    }
                },
            },
            _ => {
                issue(
                    format!("{lpath}.certificate"),
                    "`certificate` and `key` go together".into(),
                );
                continue;
            }
        };
        let unknown = match l.unknown_sni {
            UnknownSniConfig::Default => UnknownSni::Default,
            UnknownSniConfig::Refuse => UnknownSni::Refuse,
        };
        let default = match Site::build(None, &ck, None, None) {
            Ok(site) => site,
            Err(e) => {
                issue(format!("{lpath}.certificate"), e.to_string());
                continue;
            }
        };
        let mut table = ServerTls::new(default, unknown);
        for (di, (d, ds)) in config.domains.iter().zip(&domain_sites).enumerate() {
            let Some(ds) = ds else { continue };
            let site = match &ds.shared {
                Some(site) => site.clone(),
                None => match Site::build(Some(&d.name), &ck, ds.mtls.as_ref(), ds.headers.clone())
                {
                    Ok(site) => Arc::new(site),
                    Err(e) => {
                        issue(site_field(&format!("domain[{di}]"), &e), e.to_string());
                        continue;
                    }
                },
            };
            table.add(site);
        }
        setup.listeners.push((addr, Arc::new(table)));
    }
    warn_reachability(config, apis, mounts, warnings);
    for (i, l) in s.listen.iter().enumerate() {
        if l.tls && l.unknown_sni == UnknownSniConfig::Refuse && config.domains.is_empty() {
            warnings.push(super::ConfigIssue {
                path: format!("server.listen[{i}].unknown_sni"),
                reason: "\"refuse\" with no [[domain]]: every handshake is refused".into(),
            });
        }
    }
    if !config.domains.is_empty() && setup.listeners.is_empty() && !s.listen.is_empty() {
        issue(
            "domain".into(),
            "custom domains are served on TLS listeners; every listener has tls = false".into(),
        );
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    header_names.sort();
    header_names.dedup();
    setup.cert_header_names = header_names.into_boxed_slice();
    setup.files = files;
    setup
}

/// Warns about stages a domain protects with mutual TLS that are also
/// reachable without it (through their API's own `hosts`), and about APIs
/// reachable nowhere.
fn warn_reachability(
    config: &Config,
    apis: &[Api],
    mounts: &[Mount],
    warnings: &mut Vec<super::ConfigIssue>,
) {
    for (di, d) in config.domains.iter().enumerate() {
        if d.mtls.is_none() {
            continue;
        }
        for (mi, m) in d.mappings.iter().enumerate() {
            let Some(ai) = apis.iter().position(|a| a.name == m.api) else {
                continue;
            };
            let Some(si) = apis[ai].stages.iter().position(|s| s.name == m.stage) else {
                continue;
            };
            if mounts
                .iter()
                .any(|x| !x.tls_only && x.api as usize == ai && x.stage as usize == si)
            {
                warnings.push(super::ConfigIssue {
                    path: format!("domain[{di}].mapping[{mi}]"),
                    reason: format!(
                        "API `{}` stage `{}` requires client certificates on `{}` but is also reachable without them through the API's own hosts; set `hosts = []` on the API to serve it only through its domains",
                        m.api, m.stage, d.name
                    ),
                });
            }
        }
    }
    for (ai, a) in config.apis.iter().enumerate() {
        if a.hosts.is_empty() && !mounts.iter().any(|m| m.api as usize == ai) {
            warnings.push(super::ConfigIssue {
                path: format!("api[{ai}].hosts"),
                reason: format!(
                    "API `{}` has no hosts and no [[domain]] maps it: it is reachable nowhere",
                    a.name
                ),
            });
        }
    }
}

/// A custom domain's TLS settings while listeners are compiled.
struct DomainSite {
    /// Its own certificate's site, shared by every listener.
    shared: Option<Arc<Site>>,
    mtls: Option<MtlsSpec>,
    headers: Option<CertHeaders>,
}

/// The config field a site error is about.
fn site_field(dpath: &str, e: &TlsError) -> String {
    match e {
        TlsError::Truststore { .. } | TlsError::NoCertificate(_) | TlsError::Read { .. } => {
            format!("{dpath}.mtls.truststore")
        }
        _ => format!("{dpath}.certificate"),
    }
}

/// Adds a domain's base path mappings as mounts on its host name. A
/// domain without mappings only brings a certificate (and client
/// authentication) for its name; `[[api]] hosts` route its requests.
fn add_mappings(
    d: &super::schema::DomainConfig,
    dpath: &str,
    pattern: &HostPattern,
    apis: &[Api],
    mounts: &mut Vec<Mount>,
    issue: &mut impl FnMut(String, String),
) {
    for (mi, m) in d.mappings.iter().enumerate() {
        let mpath = format!("{dpath}.mapping[{mi}]");
        let base = m.base_path.trim_matches('/');
        if base.contains(['{', '}', '?', '#', ' ', '%']) || base.contains("//") {
            issue(
                format!("{mpath}.base_path"),
                format!("`{}` must be a literal path", m.base_path),
            );
            continue;
        }
        let prefix = if base.is_empty() {
            String::new()
        } else {
            format!("/{base}")
        };
        let Some(ai) = apis.iter().position(|a| a.name == m.api) else {
            issue(
                format!("{mpath}.api"),
                format!("no API is named `{}`", m.api),
            );
            continue;
        };
        let Some(si) = apis[ai].stages.iter().position(|s| s.name == m.stage) else {
            issue(
                format!("{mpath}.stage"),
                format!("API `{}` has no stage `{}`", m.api, m.stage),
            );
            continue;
        };
        if mounts
            .iter()
            .any(|x| x.host == *pattern && *x.prefix == *prefix.as_bytes())
        {
            issue(
                format!("{mpath}.base_path"),
                format!(
                    "`{}` with base path `{prefix}` is already mapped (or an API lists the same host and path)",
                    d.name
                ),
            );
            continue;
        }
        mounts.push(Mount {
            host: pattern.clone(),
            prefix: prefix.as_bytes().into(),
            api: ai as u32,
            stage: si as u32,
            tls_only: true,
        });
    }
}

/// Validates the client certificate header names.
fn cert_headers(
    c: &ClientCertHeadersConfig,
) -> Result<Option<CertHeaders>, (&'static str, String)> {
    let name = |field: &'static str, v: &Option<String>| -> Result<_, (&'static str, String)> {
        match v {
            None => Ok(None),
            Some(n) => {
                let lower = n.to_ascii_lowercase();
                if !crate::integration::valid_header_name(&lower) {
                    return Err((field, format!("`{n}` is not a valid header name")));
                }
                if matches!(
                    lower.as_str(),
                    "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "upgrade"
                        | "keep-alive"
                        | "proxy-connection"
                        | "te"
                        | "trailer"
                        | "expect"
                        | "x-forwarded-for"
                        | "x-forwarded-proto"
                        | "x-forwarded-host"
                        | "x-api-key"
                ) {
                    return Err((field, format!("`{n}` is a header the gateway manages")));
                }
                Ok(Some(lower.into_bytes().into_boxed_slice()))
            }
        }
    };
    let h = CertHeaders {
        subject: name("subject", &c.subject)?,
        issuer: name("issuer", &c.issuer)?,
        serial: name("serial", &c.serial)?,
        not_before: name("not_before", &c.not_before)?,
        not_after: name("not_after", &c.not_after)?,
    };
    Ok((h.names().count() > 0).then_some(h))
}

/// An HTTPS backend's client settings and its pool key; the error names
/// the `tls` field at fault.
pub(super) fn backend(
    host: &str,
    cfg: Option<&BackendTlsConfig>,
) -> Result<(Arc<BackendTls>, u64), (&'static str, TlsError)> {
    let mut spec = BackendTlsSpec::default();
    if let Some(c) = cfg {
        spec.ca = c.ca.clone();
        match (&c.client_certificate, &c.client_key) {
            (Some(cert), Some(key)) => {
                spec.client_cert =
                    Some(CertKey::load(cert, key).map_err(|e| ("tls.client_certificate", e))?);
            }
            (None, None) => {}
            _ => {
                return Err((
                    "tls.client_certificate",
                    TlsError::Mismatch("`client_certificate` and `client_key` go together".into()),
                ))
            }
        }
    }
    let config = BackendTls::client_config(&spec).map_err(|e| ("tls.ca", e))?;
    let tls = BackendTls::new(host, config).map_err(|e| ("uri", e))?;
    let mut h = DefaultHasher::new();
    host.hash(&mut h);
    if let Some(c) = cfg {
        c.ca.hash(&mut h);
        c.client_certificate.hash(&mut h);
    }
    // Never 0 (plain HTTP's key).
    Ok((Arc::new(tls), h.finish() | 1))
}
