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
        create(&tls_dir, &cert_path, &key_path).map_err(fail)?;
    }
    // A process that lost a creation race may read the old certificate
    // beside the new key for a moment: retry a mismatch briefly.
    let deadline = crate::clock::now() + CREATE_WAIT;
    let ck = loop {
        match CertKey::load(&cert_path, &key_path) {
            Err(TlsError::Mismatch(_)) if crate::clock::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r?,
        }
    };
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

/// How long a process that lost the race to create the certificate waits
/// for the winner to finish writing it.
const CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Generates the pair and publishes it without a race: several processes
/// may start at once on one state directory (`tollgate check` beside a
/// `tollgate run`). Each writes its pair to temporary files; the key is
/// published with `link` (which fails if the name exists), so exactly one
/// process wins and then renames its certificate into place; the others
/// wait for that certificate.
fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "tollgate development certificate",
    );
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // Unique per process and call (threads of one process may race too).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tag = format!(
        "{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let key_tmp = dir.join(format!(".{KEY_FILE}.{tag}"));
    let cert_tmp = dir.join(format!(".{CERT_FILE}.{tag}"));
    let cleanup = || {
        let _ = std::fs::remove_file(&key_tmp);
        let _ = std::fs::remove_file(&cert_tmp);
    };
    let written = write_private(&key_tmp, key.serialize_pem().as_bytes())
        .and_then(|()| std::fs::write(&cert_tmp, cert.pem()));
    if let Err(e) = written {
        cleanup();
        return Err(e.to_string());
    }
    match std::fs::hard_link(&key_tmp, key_path) {
        Ok(()) => {
            let renamed = std::fs::rename(&cert_tmp, cert_path);
            cleanup();
            renamed.map_err(|e| e.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            cleanup();
            let deadline = crate::clock::now() + CREATE_WAIT;
            while !cert_path.exists() {
                if crate::clock::now() >= deadline {
                    return Err(format!(
                        "`{}` exists without `{}`; remove it to have a new pair made",
                        key_path.display(),
                        cert_path.display()
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(())
        }
        Err(e) => {
            cleanup();
            Err(e.to_string())
        }
    }
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
    fn processes_starting_together_agree_on_one_pair() {
        let dir = std::env::temp_dir().join(format!("tollgate-devrace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || load_or_create(&dir).map(|(d, _)| d.fingerprint))
            })
            .collect();
        let prints: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("pair loads"))
            .collect();
        assert!(prints.windows(2).all(|w| w[0] == w[1]), "{prints:?}");
        let left: Vec<_> = std::fs::read_dir(dir.join("tls"))
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "no temporary files left: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
