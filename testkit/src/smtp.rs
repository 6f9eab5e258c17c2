//! A small real SMTP server on tokio, for the tests and as the local demo's
//! mail catcher: `EHLO`/`HELO`, `STARTTLS`, `AUTH PLAIN`, `MAIL FROM`,
//! `RCPT TO`, `DATA`, `RSET`, `NOOP`, `QUIT`, optionally TLS from the first
//! byte (SMTPS). It stores every message it accepts (the envelope, the raw
//! RFC 5322 text dot-unstuffed, whether it came over TLS) and can require
//! given credentials and refuse the next messages with a scripted reply
//! code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How the server offers TLS.
#[derive(Clone)]
pub enum TlsMode {
    /// Plain SMTP only.
    None,
    /// Plain SMTP that offers `STARTTLS`.
    StartTls(TlsAcceptor),
    /// TLS from the first byte (SMTPS, port 465 style).
    Implicit(TlsAcceptor),
}

/// A TLS acceptor from a PEM certificate chain and PEM private key.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How a session on one stream ended.
enum End<S> {
    Closed,
    /// The client asked for STARTTLS: the plain stream, to be upgraded.
    StartTls(S),
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The raw message: headers, blank line, body.
    pub data: String,
    /// The user name that authenticated, if any.
    pub user: Option<String>,
    /// Whether the message came over TLS.
    pub tls: bool,
}

impl Mail {
    /// A header's value (first occurrence, unfolded), case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = out.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                out = Some(v.trim().to_string());
            }
        }
        out
    }

    /// The body after the blank line.
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    mails: Vec<Mail>,
    /// Reply codes for the next DATA commands (e.g. 451 transient, 554 permanent).
    refuse: VecDeque<u16>,
    credentials: Option<(String, String)>,
    auth_failures: usize,
}

/// The server's shared state; clone it to inspect what arrived.
#[derive(Clone)]
pub struct SmtpServer {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
    tls: TlsMode,
}

impl Default for SmtpServer {
    fn default() -> Self {
        Self::with_tls(TlsMode::None)
    }
}

impl SmtpServer {
    /// A server offering TLS as `tls` says.
    pub fn with_tls(tls: TlsMode) -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::default(),
            tls,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requires `AUTH PLAIN` with these credentials before `MAIL FROM`.
    pub fn require_auth(&self, user: &str, password: &str) {
        self.lock().credentials = Some((user.into(), password.into()));
    }

    /// Answers the next messages' end of `DATA` with these codes.
    pub fn refuse_next(&self, codes: impl IntoIterator<Item = u16>) {
        self.lock().refuse.extend(codes);
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.lock().mails.clone()
    }

    pub fn auth_failures(&self) -> usize {
        self.lock().auth_failures
    }

    /// Waits until more than `seen` messages were accepted; returns them all.
    pub async fn wait_mails(&self, seen: usize) -> Vec<Mail> {
        loop {
            let notified = self.changed.notified();
            let mails = self.mails();
            if mails.len() > seen {
                return mails;
            }
            notified.await;
        }
    }

    /// Listens on `listen` until `shutdown` fires.
    pub async fn serve(&self, listen: SocketAddr, shutdown: CancellationToken) -> crate::Served {
        let (listener, addr) = crate::bind(listen).await?;
        let server = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                let server = server.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        r = server.connection(stream) => {
                            if let Err(error) = r {
                                tracing::debug!(%error, "smtp session ended");
                            }
                        }
                    }
                });
            }
        });
        Ok((addr, task))
    }

    /// [`Self::serve`] on a loopback port the OS picks; returns the address.
    pub async fn start(&self, shutdown: &CancellationToken) -> SocketAddr {
        crate::started(self.serve(crate::loopback(), shutdown.clone()).await)
    }

    async fn connection(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        match &self.tls {
            TlsMode::None => self.session(stream, false, false).await.map(|_| ()),
            TlsMode::Implicit(acceptor) => {
                let tls = acceptor.accept(stream).await?;
                self.session(tls, true, false).await.map(|_| ())
            }
            TlsMode::StartTls(acceptor) => match self.session(stream, false, true).await? {
                End::Closed => Ok(()),
                End::StartTls(plain) => {
                    let tls = acceptor.accept(plain).await?;
                    self.session(tls, true, false).await.map(|_| ())
                }
            },
        }
    }

    /// One SMTP session; after a successful greeting over TLS (`secure`)
    /// the client must say EHLO again, as RFC 3207 wants.
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        secure: bool,
        offer_starttls: bool,
    ) -> std::io::Result<End<S>> {
        let mut io = BufReader::new(stream);
        if !secure || matches!(self.tls, TlsMode::Implicit(_)) {
            io.write_all(b"220 mlwatch-smtp ready\r\n").await?;
        }
        let mut from: Option<String> = None;
        let mut to: Vec<String> = Vec::new();
        let mut user: Option<String> = None;
        let mut line = String::new();
        loop {
            line.clear();
            if io.read_line(&mut line).await? == 0 {
                return Ok(End::Closed);
            }
            let cmd = line.trim_end_matches(['\r', '\n']);
            let upper = cmd.to_ascii_uppercase();
            let needs_auth = self.lock().credentials.is_some() && user.is_none();
            let reply: String = if upper.starts_with("EHLO") {
                let starttls = if offer_starttls { "250-STARTTLS\r\n" } else { "" };
                format!("250-mlwatch-smtp\r\n{starttls}250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8")
            } else if upper == "STARTTLS" && offer_starttls {
                io.write_all(b"220 2.0.0 ready to start TLS\r\n").await?;
                io.flush().await?;
                return Ok(End::StartTls(io.into_inner()));
            } else if upper.starts_with("HELO") {
                "250 mlwatch-smtp".into()
            } else if let Some(arg) = upper.strip_prefix("AUTH PLAIN") {
                let arg = cmd[cmd.len() - arg.len()..].trim().to_string();
                let arg = if arg.is_empty() {
                    io.write_all(b"334 \r\n").await?;
                    io.flush().await?;
                    line.clear();
                    io.read_line(&mut line).await?;
                    line.trim().to_string()
                } else {
                    arg
                };
                match self.check_plain(&arg) {
                    Some(u) => {
                        user = Some(u);
                        "235 2.7.0 authentication succeeded".into()
                    }
                    None => {
                        self.lock().auth_failures += 1;
                        "535 5.7.8 authentication credentials invalid".into()
                    }
                }
            } else if upper.starts_with("MAIL FROM:") {
                if needs_auth {
                    "530 5.7.0 authentication required".into()
                } else {
                    from = Some(address(&cmd[10..]));
                    to.clear();
                    "250 2.1.0 ok".into()
                }
            } else if upper.starts_with("RCPT TO:") {
                if from.is_none() {
                    "503 5.5.1 need MAIL first".into()
                } else {
                    to.push(address(&cmd[8..]));
                    "250 2.1.5 ok".into()
                }
            } else if upper == "DATA" {
                if from.is_none() || to.is_empty() {
                    "503 5.5.1 need MAIL and RCPT first".into()
                } else {
                    io.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                    io.flush().await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if io.read_line(&mut line).await? == 0 {
                            return Ok(End::Closed);
                        }
                        if line == ".\r\n" || line == ".\n" {
                            break;
                        }
                        let l = line.strip_prefix('.').unwrap_or(&line);
                        data.push_str(l.trim_end_matches(['\r', '\n']));
                        data.push_str("\r\n");
                    }
                    let refuse = self.lock().refuse.pop_front();
                    match refuse {
                        Some(code) => format!("{code} scripted refusal"),
                        None => {
                            let mail = Mail {
                                from: from.take().unwrap_or_default(),
                                to: std::mem::take(&mut to),
                                data,
                                user: user.clone(),
                                tls: secure,
                            };
                            self.lock().mails.push(mail);
                            self.changed.notify_waiters();
                            "250 2.0.0 queued".into()
                        }
                    }
                }
            } else if upper == "RSET" {
                from = None;
                to.clear();
                "250 ok".into()
            } else if upper == "NOOP" {
                "250 ok".into()
            } else if upper == "QUIT" {
                io.write_all(b"221 bye\r\n").await?;
                io.flush().await?;
                return Ok(End::Closed);
            } else {
                "502 5.5.2 command not implemented".into()
            };
            io.write_all(reply.as_bytes()).await?;
            io.write_all(b"\r\n").await?;
            io.flush().await?;
        }
    }

    /// Checks `AUTH PLAIN` (base64 of `authzid\0user\0password`); returns
    /// the user when the credentials are right (or none are required).
    fn check_plain(&self, arg: &str) -> Option<String> {
        let raw = base64_decode(arg)?;
        let mut parts = raw.split(|b| *b == 0);
        let _authzid = parts.next()?;
        let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
        let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
        match &self.lock().credentials {
            Some((u, p)) if *u != user || *p != pass => None,
            _ => Some(user),
        }
    }
}

fn address(arg: &str) -> String {
    let a = arg.trim();
    let a = a.split_whitespace().next().unwrap_or_default();
    a.trim_start_matches('<').trim_end_matches('>').to_string()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("AHVzZXIAcGFzcw==").unwrap(), b"\0user\0pass");
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert!(base64_decode("@@").is_none());
    }

    #[test]
    fn reads_folded_headers() {
        let m = Mail {
            from: String::new(),
            to: vec![],
            data: "Subject: a\r\n b\r\nFrom: x\r\n\r\nbody\r\n".into(),
            user: None,
            tls: false,
        };
        assert_eq!(m.header("subject").as_deref(), Some("a b"));
        assert_eq!(m.body(), "body\r\n");
    }
}
