//! `mock`: a fixed response from configuration (Amazon API Gateway's MOCK).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::IntegrationError;

/// A mock response, rendered once when the snapshot is built.
#[derive(Debug)]
pub struct MockIntegration {
    pub status: u16,
    /// Header lines, each `name: value\r\n`.
    pub headers: Bytes,
    pub body: Bytes,
}

impl MockIntegration {
    pub fn compile(
        status: u16,
        headers: &BTreeMap<String, String>,
        body: &str,
    ) -> Result<Self, IntegrationError> {
        // A 1xx is not a final response: a client would wait for another.
        if !(200..=599).contains(&status) {
            return Err(IntegrationError::Status);
        }
        let mut rendered = Vec::new();
        let mut has_type = false;
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let reserved = matches!(
                lower.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "date"
            );
            if reserved || !valid_token(name) || !valid_value(value) {
                return Err(IntegrationError::Header(name.clone()));
            }
            has_type |= lower == "content-type";
            rendered.extend_from_slice(name.as_bytes());
            rendered.extend_from_slice(b": ");
            rendered.extend_from_slice(value.as_bytes());
            rendered.extend_from_slice(b"\r\n");
        }
        if !has_type && !body.is_empty() {
            rendered.extend_from_slice(b"content-type: application/json\r\n");
        }
        Ok(MockIntegration {
            status,
            headers: Bytes::from(rendered),
            body: Bytes::copy_from_slice(body.as_bytes()),
        })
    }
}

/// RFC 9110 token characters.
pub(crate) fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(crate::http::is_tchar)
}

fn valid_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_headers_and_default_content_type() {
        let m = MockIntegration::compile(201, &BTreeMap::new(), "{}").expect("valid");
        assert_eq!(&m.headers[..], b"content-type: application/json\r\n");
        let mut h = BTreeMap::new();
        h.insert("Content-Length".to_string(), "3".to_string());
        assert!(MockIntegration::compile(200, &h, "").is_err());
        let mut h = BTreeMap::new();
        h.insert("X-A".to_string(), "a\r\nb".to_string());
        assert!(MockIntegration::compile(200, &h, "").is_err());
        assert!(MockIntegration::compile(600, &BTreeMap::new(), "").is_err());
        assert!(MockIntegration::compile(101, &BTreeMap::new(), "").is_err());
    }
}
