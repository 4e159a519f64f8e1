//! Real clients, not only rustls: `tests/tls_clients.sh` drives curl and
//! openssl s_client against the tollgate binary (handshakes, SNI, base
//! path mappings, 421, mutual TLS, session resumption). Installs curl and
//! openssl from the distribution when they are missing.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the missing tools with apt-get (CI runs as root on Debian).
fn ensure(tools: &[&str]) {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return;
    }
    let status = Command::new("sh")
        .args([
            "-c",
            &format!(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {}",
                missing.join(" ")
            ),
        ])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()) && missing.iter().all(|t| have(t)),
        "this test needs {missing:?}; installing them with apt-get failed"
    );
}

#[test]
fn curl_and_openssl_against_tollgate() {
    ensure(&["curl", "openssl"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_clients.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .output()
        .expect("run tests/tls_clients.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tls_clients.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("all TLS client checks passed"), "{stdout}");
}
