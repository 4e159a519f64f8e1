//! Integrations: what answers a matched route.
//!
//! Compiled once per configuration snapshot and per stage (stage variables
//! are substituted at compile time, so the per-request work is only placing
//! captured path parameters into the backend URI). The pipeline calls
//! [`Integration`] through a plain enum; Lambda and WebSocket integrations
//! are future variants of it.
#![forbid(unsafe_code)]

mod http;
mod mock;

pub use http::HttpIntegration;
pub use mock::MockIntegration;

use std::collections::BTreeMap;

/// A compiled integration.
#[derive(Debug)]
pub enum Integration {
    Http(HttpIntegration),
    Mock(MockIntegration),
}

/// Why an integration could not be compiled from configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntegrationError {
    #[error("stage variable `{0}` is not defined for this stage")]
    UnknownStageVariable(String),
    #[error("unterminated `${{stageVariables.…}}` reference")]
    UnterminatedVariable,
    #[error("uri must start with http:// or https://")]
    Scheme,
    #[error("uri has no host")]
    NoHost,
    #[error(
        "uri must not carry userinfo (`user:password@`): send credentials in a header instead"
    )]
    Userinfo,
    #[error("{what} is {len} bytes, over {limit} ({why})")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
        why: &'static str,
    },
    #[error("{0}")]
    Tls(String),
    #[error("tls settings need an https:// uri")]
    TlsOnPlain,
    #[error("uri port `{0}` is not a number from 1 to 65535")]
    Port(String),
    #[error("cannot resolve backend host `{0}`: {1}")]
    Resolve(String, String),
    #[error("path placeholder `{{{0}}}` is not a parameter of the route key")]
    UnknownParam(String),
    #[error("placeholders are only allowed in the path and query of the uri")]
    PlaceholderInAuthority,
    #[error("unterminated `{{` placeholder in uri")]
    UnterminatedPlaceholder,
    #[error("uri contains a character not allowed in a URI: {0:?}")]
    BadChar(char),
    #[error("status must be between 200 and 599")]
    Status,
    #[error("header `{0}` has an invalid name or value")]
    Header(String),
}

/// Replaces `${stageVariables.NAME}` with the stage's value.
pub fn substitute_stage_variables(
    input: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, IntegrationError> {
    const OPEN: &str = "${stageVariables.";
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or(IntegrationError::UnterminatedVariable)?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .ok_or_else(|| IntegrationError::UnknownStageVariable(name.to_string()))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// True for a valid HTTP header field name (an RFC 9110 token).
pub fn valid_header_name(s: &str) -> bool {
    mock::valid_token(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_variables_are_substituted() {
        let mut vars = BTreeMap::new();
        vars.insert("host".to_string(), "10.0.0.1:81".to_string());
        assert_eq!(
            substitute_stage_variables("http://${stageVariables.host}/x", &vars),
            Ok("http://10.0.0.1:81/x".to_string())
        );
        assert_eq!(
            substitute_stage_variables("http://${stageVariables.nope}/x", &vars),
            Err(IntegrationError::UnknownStageVariable("nope".into()))
        );
        assert_eq!(
            substitute_stage_variables("http://${stageVariables.host", &vars),
            Err(IntegrationError::UnterminatedVariable)
        );
    }
}
