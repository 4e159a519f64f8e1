//! `http`: proxy to a backend URI with `{param}` / `{proxy}` placeholders.
//!
//! The URI template is split once into literal byte runs and parameter
//! slots; per request the request line is written by copying literals and
//! the captured byte ranges of the request path. The backend address is
//! resolved when the snapshot is built, not per request.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::IntegrationError;
use crate::router::Params;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    /// Index of a route parameter.
    Param(u8),
}

/// A compiled HTTP proxy integration.
#[derive(Debug)]
pub struct HttpIntegration {
    pub addr: SocketAddr,
    /// Host header value for the backend (`host[:port]` as written).
    pub host_header: Box<[u8]>,
    path: Vec<Part>,
    query: Option<Vec<Part>>,
    pub timeout: Duration,
    pub preserve_host: bool,
    /// The URI (stage variables substituted) is `https://`.
    pub https: bool,
    /// `https://` backends: how to connect (set by the config compiler).
    pub tls: Option<std::sync::Arc<crate::tls::BackendTls>>,
    /// Distinguishes pooled connections to `addr`: 0 for plain HTTP,
    /// otherwise a digest of the TLS settings (server name, trust,
    /// identity), so a connection is only reused for the same ones.
    pub pool_key: u64,
}

impl HttpIntegration {
    /// Compiles `uri` (stage variables already substituted) for a route
    /// whose parameters are `param_names`.
    pub fn compile(
        uri: &str,
        param_names: &[&str],
        timeout: Duration,
        preserve_host: bool,
    ) -> Result<Self, IntegrationError> {
        if let Some(c) = uri
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(IntegrationError::BadChar(c));
        }
        let https = uri.starts_with("https://");
        let (rest, default_port) = match uri.strip_prefix("http://") {
            Some(rest) => (rest, 80),
            None => (
                uri.strip_prefix("https://")
                    .ok_or(IntegrationError::Scheme)?,
                443,
            ),
        };
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        if authority.contains(['{', '}']) {
            return Err(IntegrationError::PlaceholderInAuthority);
        }
        if authority.contains('@') {
            return Err(IntegrationError::Userinfo);
        }
        if authority.is_empty() {
            return Err(IntegrationError::NoHost);
        }
        let (host, port) = split_host_port(authority, default_port)?;
        let addr = resolve(host, port)?;
        let path_and_query = &rest[auth_end..];
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        Ok(HttpIntegration {
            addr,
            host_header: authority.as_bytes().into(),
            path: template(path, param_names)?,
            query: query.map(|q| template(q, param_names)).transpose()?,
            timeout,
            preserve_host,
            https,
            tls: None,
            pool_key: 0,
        })
    }

    /// Bytes of the request target the template writes before any
    /// parameter or client query is added.
    pub fn literal_len(&self) -> usize {
        let len = |parts: &[Part]| -> usize {
            parts
                .iter()
                .map(|p| match p {
                    Part::Literal(l) => l.len(),
                    Part::Param(_) => 0,
                })
                .sum()
        };
        len(&self.path) + self.query.as_deref().map_or(0, |q| 1 + len(q))
    }

    /// The backend's host name (or IP literal) from `host_header`, for
    /// TLS server name and certificate verification.
    pub fn host_name(&self) -> &str {
        let a = std::str::from_utf8(&self.host_header).unwrap_or_default();
        split_host_port(a, 0).map(|(h, _)| h).unwrap_or(a)
    }

    /// Writes `METHOD /backend/path?query HTTP/1.1\r\n`, filling parameters
    /// from `req_path` and appending the client's query string.
    pub fn write_request_line(
        &self,
        out: &mut BytesMut,
        method: &[u8],
        req_path: &[u8],
        params: &Params,
        client_query: Option<&[u8]>,
    ) {
        out.put_slice(method);
        out.put_u8(b' ');
        write_parts(out, &self.path, req_path, params, false);
        let mut has_query = false;
        if let Some(q) = &self.query {
            out.put_u8(b'?');
            write_parts(out, q, req_path, params, true);
            has_query = true;
        }
        if let Some(q) = client_query.filter(|q| !q.is_empty()) {
            out.put_u8(if has_query { b'&' } else { b'?' });
            out.put_slice(q);
        }
        out.put_slice(b" HTTP/1.1\r\n");
    }
}

/// Writes the template, filling parameters from the (normalised) request
/// path. A value substituted into the query string is percent-encoded
/// for a query value (`7&role=admin` becomes `7%26role%3Dadmin`), so it
/// can never add a parameter; in the path it is a path segment already.
fn write_parts(out: &mut BytesMut, parts: &[Part], req_path: &[u8], params: &Params, query: bool) {
    for p in parts {
        match p {
            Part::Literal(l) => out.put_slice(l),
            Part::Param(i) => {
                if let Some(r) = params.get(*i as usize) {
                    if query {
                        encode_query_value(out, &req_path[r]);
                    } else {
                        out.put_slice(&req_path[r]);
                    }
                }
            }
        }
    }
}

/// Copies `v` (bytes of a normalised path) as a query value: unreserved
/// characters, percent-encodings already in it, and `! $ ' ( ) * , : @ /`
/// as they are; everything else (`&`, `=`, `+`, `;`, `#`, ...) encoded.
fn encode_query_value(out: &mut BytesMut, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~%!$'()*,:@/".contains(&b) {
            out.put_u8(b);
        } else {
            out.put_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn template(s: &str, names: &[&str]) -> Result<Vec<Part>, IntegrationError> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(rest.as_bytes()[..open].into()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or(IntegrationError::UnterminatedPlaceholder)?
            + open;
        let name = rest[open + 1..close].trim_end_matches('+');
        let idx = names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| IntegrationError::UnknownParam(name.to_string()))?;
        parts.push(Part::Param(idx as u8));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(IntegrationError::UnterminatedPlaceholder);
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.as_bytes().into()));
    }
    Ok(parts)
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16), IntegrationError> {
    let (host, port) = if let Some(end) = authority.strip_prefix('[').and_then(|a| a.find(']')) {
        // [v6]:port
        let host = &authority[1..end + 1];
        let after = &authority[end + 2..];
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(IntegrationError::NoHost);
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| IntegrationError::Port(p.to_string()))?,
    };
    Ok((host, port))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, IntegrationError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| IntegrationError::Resolve(host.to_string(), e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| IntegrationError::Resolve(host.to_string(), "no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{RouteKey, RouteTable};

    fn line(uri: &str, key: &str, method: &str, path: &str, query: Option<&str>) -> String {
        let k: RouteKey = key.parse().expect("key");
        let mut t = RouteTable::new();
        t.insert(&k).expect("insert");
        let m = t.find(method.as_bytes(), path.as_bytes()).expect("match");
        let names = k.param_names();
        let i =
            HttpIntegration::compile(uri, &names, Duration::from_secs(1), false).expect("compile");
        let mut out = BytesMut::new();
        i.write_request_line(
            &mut out,
            method.as_bytes(),
            path.as_bytes(),
            &m.params,
            query.map(str::as_bytes),
        );
        String::from_utf8(out.to_vec()).expect("utf8")
    }

    #[test]
    fn substitutes_params_and_query() {
        assert_eq!(
            line(
                "http://127.0.0.1:9000/{proxy}",
                "ANY /{proxy+}",
                "GET",
                "/a/b",
                Some("x=1")
            ),
            "GET /a/b?x=1 HTTP/1.1\r\n"
        );
        assert_eq!(
            line(
                "http://127.0.0.1:9000/users/{id}?v=2",
                "GET /u/{id}",
                "GET",
                "/u/7",
                Some("x=1")
            ),
            "GET /users/7?v=2&x=1 HTTP/1.1\r\n"
        );
        assert_eq!(
            line("http://127.0.0.1:9000", "GET /u", "GET", "/u", None),
            "GET / HTTP/1.1\r\n"
        );
    }

    #[test]
    fn a_parameter_in_the_query_cannot_add_parameters() {
        assert_eq!(
            line(
                "http://127.0.0.1:9000/pets?id={id}&role=user",
                "GET /pets/{id}",
                "GET",
                "/pets/7&role=admin",
                None
            ),
            "GET /pets?id=7%26role%3Dadmin&role=user HTTP/1.1\r\n"
        );
        assert_eq!(
            line(
                "http://127.0.0.1:9000/p/{id}?q={id}",
                "GET /x/{id}",
                "GET",
                "/x/a;b+c=d%20e",
                None
            ),
            "GET /p/a;b+c=d%20e?q=a%3Bb%2Bc%3Dd%20e HTTP/1.1\r\n",
            "in the path as it is, in the query encoded"
        );
    }

    #[test]
    fn rejects_bad_uris() {
        let c = |u: &str| {
            HttpIntegration::compile(u, &["id"], Duration::from_secs(1), false).map(|_| ())
        };
        assert_eq!(c("ftp://a/"), Err(IntegrationError::Scheme));
        let https =
            HttpIntegration::compile("https://127.0.0.1/x", &[], Duration::from_secs(1), false)
                .expect("https");
        assert_eq!(https.addr.port(), 443);
        assert_eq!(https.host_name(), "127.0.0.1");
        let v6 =
            HttpIntegration::compile("https://[::1]:8443/", &[], Duration::from_secs(1), false)
                .expect("v6");
        assert_eq!((v6.addr.port(), v6.host_name()), (8443, "::1"));
        assert_eq!(c("http:///x"), Err(IntegrationError::NoHost));
        assert_eq!(
            c("http://user:pw@127.0.0.1/x"),
            Err(IntegrationError::Userinfo)
        );
        assert_eq!(
            c("http://a:99999/"),
            Err(IntegrationError::Port("99999".into()))
        );
        assert_eq!(
            c("http://127.0.0.1/{nope}"),
            Err(IntegrationError::UnknownParam("nope".into()))
        );
        assert_eq!(
            c("http://{id}/x"),
            Err(IntegrationError::PlaceholderInAuthority)
        );
        assert_eq!(
            c("http://127.0.0.1/a b"),
            Err(IntegrationError::BadChar(' '))
        );
        assert!(c("http://[::1]:8080/{id}").is_ok());
    }
}
