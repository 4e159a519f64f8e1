//! Client and backend byte streams: plain TCP, or TLS over TCP (rustls via
//! `futures-rustls` over glommio's futures-io streams), behind one type so
//! the connection driver and the proxy do not care which. A plain stream
//! costs one branch per read or write.
//!
//! Also the server handshake: the ClientHello is read first, its SNI picks
//! the site (certificate and client-authentication policy, see
//! [`crate::tls::ServerTls`]), then the handshake runs with that site's
//! configuration.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::tls::{ClientCert, ServerTls, Site};

/// The TLS half of a [`Stream`]: a rustls stream over TCP.
pub trait TlsIo: AsyncRead + AsyncWrite + Unpin {
    fn tcp(&self) -> &TcpStream;
    /// Queues a close_notify alert.
    fn close_notify(&mut self);
    /// TLS records wait to be sent (an alert rustls queued while reading,
    /// such as `no_renegotiation`).
    fn wants_write(&self) -> bool;
    /// True when the TLS layer holds nothing unread: no plaintext, no
    /// close_notify (checked before an idle connection is reused; the
    /// socket-level check cannot see what rustls already took in).
    fn idle_clean(&mut self) -> bool;
}

/// The same for both sides: server and client streams differ only in the
/// rustls connection type, which derefs to the common state.
macro_rules! tls_io {
    ($stream:ty) => {
        impl TlsIo for $stream {
            fn tcp(&self) -> &TcpStream {
                self.get_ref().0
            }
            fn close_notify(&mut self) {
                self.get_mut().1.send_close_notify();
            }
            fn wants_write(&self) -> bool {
                self.get_ref().1.wants_write()
            }
            fn idle_clean(&mut self) -> bool {
                clean(self.get_mut().1.process_new_packets())
            }
        }
    };
}

tls_io!(futures_rustls::server::TlsStream<TcpStream>);
tls_io!(futures_rustls::client::TlsStream<TcpStream>);

fn clean(state: Result<rustls::IoState, rustls::Error>) -> bool {
    state.is_ok_and(|s| s.plaintext_bytes_to_read() == 0 && !s.peer_has_closed())
}

/// Plain TCP or TLS. The TLS state is boxed: it is large (rustls buffers)
/// and plain connections should not pay for its space.
#[derive(Debug)]
pub enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A client connection.
pub type ClientStream = Stream<futures_rustls::server::TlsStream<TcpStream>>;
/// A backend connection.
pub type BackendStream = Stream<futures_rustls::client::TlsStream<TcpStream>>;

impl<T: TlsIo> Stream<T> {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.tcp(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// See [`TlsIo::idle_clean`]; always true for plain TCP.
    pub fn idle_clean(&mut self) -> bool {
        match self {
            Stream::Plain(_) => true,
            Stream::Tls(t) => t.idle_clean(),
        }
    }

    /// Half-closes the sending side; TLS sends close_notify first.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        if let Stream::Tls(t) = self {
            t.close_notify();
            t.flush().await?;
        }
        self.tcp()
            .shutdown(std::net::Shutdown::Write)
            .await
            .map_err(io::Error::from)
    }
}

impl<T: TlsIo> AsyncRead for Stream<T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => {
                let read = Pin::new(&mut **t).poll_read(cx, buf);
                // What rustls answered while reading (a TLS 1.2 client's
                // renegotiation gets a `no_renegotiation` alert) goes out
                // now, not with the next response: the client waits for
                // it. A write that would block is finished by the next
                // flush.
                if t.wants_write() {
                    let _ = Pin::new(&mut **t).poll_flush(cx);
                }
                read
            }
        }
    }
}

impl<T: TlsIo> AsyncWrite for Stream<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_close(cx),
        }
    }
}

/// What a client's TLS handshake established, kept for the connection.
#[derive(Debug)]
pub struct TlsInfo {
    /// The server name the client asked for (lowercase), if any.
    pub sni: Option<Box<str>>,
    /// The site whose certificate was presented.
    pub site: Arc<Site>,
    /// The listener's sites (to check a request's Host against).
    pub table: Arc<ServerTls>,
    /// The verified client certificate (mutual TLS), if one was sent.
    pub client_cert: Option<ClientCert>,
    /// Header lines carrying `client_cert` to backends (the site's
    /// configured names); empty when none.
    pub cert_lines: Box<[u8]>,
    /// The handshake resumed an earlier session.
    pub resumed: bool,
}

impl TlsInfo {
    /// Whether a request for `host` (Host header, port stripped) must be
    /// refused with 421: the site that serves `host` (by name, else the
    /// listener's default) is not the one this handshake negotiated, so
    /// the certificate presented may not be valid for the request's
    /// origin (RFC 9110 §7.4) or its client-certificate policy was not
    /// applied. Names served by one site (a wildcard's, or the default's)
    /// share connections.
    pub fn misdirected(&self, host: &[u8]) -> bool {
        // The common case, no lookup: the Host is the SNI's name, whose
        // site this is (the site table is the one the SNI chose from).
        if self
            .sni
            .as_deref()
            .is_some_and(|sni| host.eq_ignore_ascii_case(sni.as_bytes()))
        {
            return false;
        }
        let site = std::str::from_utf8(host)
            .ok()
            .and_then(|h| self.table.lookup(h))
            .unwrap_or_else(|| self.table.default_site());
        !Arc::ptr_eq(site, &self.site)
    }
}

/// Why a client handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("no certificate for the requested server name")]
    Refused,
    #[error("plain HTTP sent to a TLS listener")]
    PlainHttp,
    #[error("TLS handshake failed: {0}")]
    Io(#[from] io::Error),
}

/// Peeks at the first byte a client sent: a non-blocking `recv` first
/// (it is usually there already), else waits through the reactor.
async fn peek_first(tcp: &TcpStream, buf: &mut [u8; 1]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: recv writes at most 1 byte into `buf`, a valid 1-byte
    // buffer; the fd belongs to `tcp`, which outlives this call.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() != io::ErrorKind::WouldBlock {
        return Err(e);
    }
    tcp.peek(buf).await.map_err(io::Error::from)
}

/// Answers plain HTTP on a TLS listener with a 400, then closes after
/// reading (and dropping) what the client sent, so the kernel does not
/// answer unread bytes with a reset that could destroy the 400 (bounded:
/// 64 KiB, 1 s).
async fn refuse_plain_http(mut tcp: TcpStream) {
    use futures_lite::AsyncReadExt;
    if tcp.write_all(PLAIN_HTTP_RESPONSE).await.is_err() {
        return;
    }
    let _ = tcp.shutdown(std::net::Shutdown::Write).await;
    let mut sink = [0u8; 4096];
    let _ = glommio::timer::timeout(Duration::from_secs(1), async {
        let mut left = 64 * 1024usize;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
        Ok(())
    })
    .await;
}

/// The answer to plain HTTP on a TLS listener (then the connection
/// closes).
const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\ncontent-length: 62\r\nconnection: close\r\n\r\n\
{\"message\":\"The plain HTTP request was sent to an HTTPS port\"}";

/// Runs the server side of a TLS handshake on `tcp` within `wait`.
pub async fn accept(
    tcp: TcpStream,
    table: Arc<ServerTls>,
    wait: Duration,
) -> Result<(ClientStream, Box<TlsInfo>), HandshakeError> {
    let handshake = async {
        // A TLS client starts with a handshake record (0x16). Plain HTTP
        // on the TLS port gets a readable 400 instead of a bare close, as
        // NGINX does.
        let mut first = [0u8; 1];
        if peek_first(&tcp, &mut first).await? == 1 && first[0] != 0x16 {
            if first[0].is_ascii_uppercase() {
                refuse_plain_http(tcp).await;
            }
            return Err(HandshakeError::PlainHttp);
        }
        let start =
            futures_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                .await?;
        // Lowercase, without a final dot (the same name).
        let sni = start.client_hello().server_name().map(|s| {
            let s = s.strip_suffix('.').unwrap_or(s);
            s.to_ascii_lowercase().into_boxed_str()
        });
        let Some(site) = table.select(sni.as_deref()).cloned() else {
            return Err(HandshakeError::Refused);
        };
        let stream = start.into_stream(site.config.clone()).await?;
        Ok((stream, sni, site))
    };
    let (stream, sni, site) =
        match glommio::timer::timeout(wait, async { Ok(handshake.await) }).await {
            Ok(r) => r?,
            Err(_) => return Err(HandshakeError::Timeout),
        };
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| ClientCert::from_der(c.as_ref()));
    let mut lines = Vec::new();
    if let (Some(h), Some(c)) = (&site.cert_headers, &client_cert) {
        h.render(c, &mut lines);
    }
    let info = TlsInfo {
        sni,
        site,
        table,
        client_cert,
        cert_lines: lines.into_boxed_slice(),
        resumed,
    };
    Ok((Stream::Tls(Box::new(stream)), Box::new(info)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{CertKey, ClientAuth, MtlsSpec, UnknownSni};

    fn cert() -> (CertKey, String) {
        let c = rcgen::generate_simple_self_signed(vec!["x.test".to_string()]).expect("rcgen");
        let ck = CertKey {
            chain: vec![c.cert.der().clone()],
            key: rustls_pki_types::PrivateKeyDer::try_from(c.key_pair.serialize_der())
                .expect("key"),
        };
        (ck, c.cert.pem())
    }

    fn info(sni: Option<&str>) -> TlsInfo {
        let (ck, pem) = cert();
        let dir = std::env::temp_dir().join(format!("tollgate-stream-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let ca = dir.join(format!("ca-{}.pem", sni.unwrap_or("none")));
        std::fs::write(&ca, pem).expect("write ca");
        let mut table = ServerTls::new(
            Site::build(None, &ck, None, None).expect("default"),
            UnknownSni::Default,
        );
        table.add(Arc::new(
            Site::build(Some("open.example.com"), &ck, None, None).expect("open"),
        ));
        table.add(Arc::new(
            Site::build(Some("*.wild.example.com"), &ck, None, None).expect("wild"),
        ));
        let mtls = MtlsSpec {
            truststore: ca,
            mode: ClientAuth::Required,
        };
        table.add(Arc::new(
            Site::build(Some("mtls.example.com"), &ck, Some(&mtls), None).expect("mtls"),
        ));
        let table = Arc::new(table);
        let site = table.select(sni).expect("site").clone();
        TlsInfo {
            sni: sni.map(Into::into),
            site,
            table,
            client_cert: None,
            cert_lines: Box::default(),
            resumed: false,
        }
    }

    #[test]
    fn host_must_be_served_by_the_negotiated_site() {
        let i = info(Some("open.example.com"));
        assert!(!i.misdirected(b"open.example.com"));
        assert!(!i.misdirected(b"OPEN.example.com"));
        assert!(i.misdirected(b"mtls.example.com"));
        // Another name: the default site's, not this one.
        assert!(i.misdirected(b"other.example.com"));
        let wild = info(Some("a.wild.example.com"));
        assert!(
            !wild.misdirected(b"b.wild.example.com"),
            "one site, one certificate"
        );
        assert!(wild.misdirected(b"open.example.com"));
    }

    #[test]
    fn without_sni_only_default_site_names_are_served() {
        let i = info(None);
        assert!(!i.misdirected(b"127.0.0.1"));
        assert!(!i.misdirected(b"unknown.example.org"));
        assert!(i.misdirected(b"open.example.com"));
        assert!(i.misdirected(b"mtls.example.com"));
    }
}
