//! The self-signed development certificate a TLS listener without a
//! configured certificate presents, so the demo configuration serves
//! HTTPS with no setup. Generated once (ECDSA P-256, valid for
//! `localhost`, `127.0.0.1` and `::1`) into the state directory and reused
//! on later starts; its SHA-256 fingerprint is printed at start so a
//! client can pin or trust it (`curl --cacert <path>`).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{CertKey, TlsError};

/// File names inside the state directory.
pub const CERT_FILE: &str = "dev-cert.pem";
pub const KEY_FILE: &str = "dev-key.pem";

/// Where the development certificate is, and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// SHA-256 of the DER certificate, uppercase hex pairs joined by `:`
    /// (the form `openssl x509 -fingerprint -sha256` prints).
    pub fingerprint: String,
}

/// Loads the development certificate from `dir/tls`, creating it first
/// if it does not exist.
pub fn load_or_create(dir: &Path) -> Result<(DevCert, CertKey), TlsError> {
    let tls_dir = dir.join("tls");
    let cert_path = tls_dir.join(CERT_FILE);
    let key_path = tls_dir.join(KEY_FILE);
    let fail = |reason: String| TlsError::DevCert {
        path: tls_dir.clone(),
        reason,
    };
    if !cert_path.exists() || !key_path.exists() {
        let params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .map_err(|e| fail(e.to_string()))?;
        let mut params = params;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "tollgate development certificate",
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| fail(e.to_string()))?;
        let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
        std::fs::create_dir_all(&tls_dir).map_err(|e| fail(e.to_string()))?;
        write_private(&key_path, key.serialize_pem().as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        std::fs::write(&cert_path, cert.pem()).map_err(|e| fail(e.to_string()))?;
    }
    let ck = CertKey::load(&cert_path, &key_path)?;
    let fingerprint = ck
        .chain
        .first()
        .map(|c| fingerprint(c.as_ref()))
        .unwrap_or_default();
    Ok((
        DevCert {
            cert_path,
            key_path,
            fingerprint,
        },
        ck,
    ))
}

/// SHA-256 fingerprint as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies to a new file only.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("tollgate-devcert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, ck) = load_or_create(&dir).expect("create");
        let (b, _) = load_or_create(&dir).expect("reuse");
        assert_eq!(a, b, "the second start reuses the first certificate");
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(a.fingerprint, fingerprint(ck.chain[0].as_ref()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.key_path)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
