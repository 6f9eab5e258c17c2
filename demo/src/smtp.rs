//! A small real SMTP server on tokio, for the tests and as the local demo's
//! mail catcher: `EHLO`/`HELO`, `AUTH PLAIN`, `MAIL FROM`, `RCPT TO`,
//! `DATA`, `RSET`, `NOOP`, `QUIT`. It stores every message it accepts (the
//! envelope and the raw RFC 5322 text, dot-unstuffed) and can require given
//! credentials and refuse the next messages with a scripted reply code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The raw message: headers, blank line, body.
    pub data: String,
    /// The user name that authenticated, if any.
    pub user: Option<String>,
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
#[derive(Clone, Default)]
pub struct SmtpServer {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
}

impl SmtpServer {
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
    pub async fn serve(
        &self,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
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
                        r = server.session(stream) => {
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

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 mlwatch-smtp ready\r\n").await?;
        let mut from: Option<String> = None;
        let mut to: Vec<String> = Vec::new();
        let mut user: Option<String> = None;
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let cmd = line.trim_end_matches(['\r', '\n']);
            let upper = cmd.to_ascii_uppercase();
            let needs_auth = self.lock().credentials.is_some() && user.is_none();
            let reply: String = if upper.starts_with("EHLO") {
                "250-mlwatch-smtp\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8".into()
            } else if upper.starts_with("HELO") {
                "250 mlwatch-smtp".into()
            } else if let Some(arg) = upper.strip_prefix("AUTH PLAIN") {
                let arg = cmd[cmd.len() - arg.len()..].trim().to_string();
                let arg = if arg.is_empty() {
                    write.write_all(b"334 \r\n").await?;
                    line.clear();
                    lines.read_line(&mut line).await?;
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
                    write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
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
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                "502 5.5.2 command not implemented".into()
            };
            write.write_all(reply.as_bytes()).await?;
            write.write_all(b"\r\n").await?;
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
        };
        assert_eq!(m.header("subject").as_deref(), Some("a b"));
        assert_eq!(m.body(), "body\r\n");
    }
}
