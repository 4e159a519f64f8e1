//! The facts of a verified client certificate that the pipeline and
//! backends see (Amazon API Gateway's `clientCert`: subject DN, issuer DN,
//! serial number, validity).

use x509_parser::prelude::{FromDer, X509Certificate};

/// A client certificate rustls verified during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject distinguished name, RFC 4514 style (`CN=client,O=Example`).
    pub subject: String,
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// Validity bounds, RFC 3339 (UTC).
    pub not_before: String,
    pub not_after: String,
}

impl ClientCert {
    /// Reads a DER certificate; `None` if it cannot be parsed (rustls
    /// verified it, so that does not happen for accepted connections).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let time = |t: x509_parser::time::ASN1Time| {
            t.to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        Some(ClientCert {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }
}

/// The end of a DER certificate's validity, Unix seconds.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subject_issuer_serial_validity() {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client one");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0x1b]));
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 3, 4);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let c = ClientCert::from_der(cert.der()).expect("parse");
        assert!(c.subject.contains("CN=client one"), "{}", c.subject);
        assert!(c.subject.contains("O=Example"), "{}", c.subject);
        assert_eq!(c.subject, c.issuer);
        assert_eq!(c.serial, "0a:1b");
        assert_eq!(c.not_before, "2026-01-02T00:00:00Z");
        assert_eq!(c.not_after, "2030-03-04T00:00:00Z");
        assert!(ClientCert::from_der(b"junk").is_none());
        assert_eq!(not_after_unix(cert.der()), Some(1_898_812_800));
    }
}
