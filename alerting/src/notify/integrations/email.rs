/*!
Email over SMTP (`email_configs`): one message per notification (one per group),
`multipart/alternative` with a plain-text and an HTML part, subject
`[FIRING:2] HighCPU (web-01 warning)` by default.

Transport security follows Alertmanager: port 465 (or `tls: true`, a Minos key) means
TLS from the first byte; otherwise `require_tls` (default true, from
`global.smtp_require_tls`) demands STARTTLS, and `require_tls: false` sends in plain
text (for a local relay). `tls_config` takes `ca_file`, `server_name` and
`insecure_skip_verify`. Authentication (PLAIN or LOGIN, whichever the server offers)
is used when `auth_username` is set. `headers` may set `Subject`, `To`, `From` and
any other header; `html` and `text` replace the bodies (an empty one drops that
part). `html`, `text` and every header are Alertmanager notification templates (the
`template` module; `html` escapes what its actions print, as Alertmanager's HTML
fields do); unset, they are the built-in `email.default.*` texts.
*/

use std::collections::BTreeMap;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::notify::ConfigError;
use crate::notify::config::{GlobalDefaults, Secret, invalid};
use crate::notify::integrations::{Context, SendError, chain, template_field};
use crate::notify::message::Notification;
use crate::notify::template::{Render, Template};

/// `email_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    to: Option<String>,
    from: Option<String>,
    smarthost: Option<String>,
    hello: Option<String>,
    auth_username: Option<String>,
    auth_password: Option<Secret>,
    /// Accepted for compatibility; PLAIN's authorization identity is not sent.
    auth_identity: Option<String>,
    auth_secret: Option<Secret>,
    require_tls: Option<bool>,
    tls: Option<bool>,
    tls_config: Option<RawTls>,
    html: Option<String>,
    text: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// `tls_config` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<String>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// STARTTLS, required.
    StartTls,
    /// No TLS (a local relay).
    None,
}

/// A validated email integration.
#[derive(Debug, Clone)]
pub struct Email {
    pub send_resolved: bool,
    to: Vec<Mailbox>,
    from: Mailbox,
    host: String,
    port: u16,
    hello: String,
    auth: Option<(String, Secret)>,
    pub security: Security,
    ca_pem: Option<Vec<u8>>,
    server_name: Option<String>,
    insecure_skip_verify: bool,
    subject: Option<Template>,
    html: Option<Template>,
    text: Option<Template>,
    /// Other headers, with validated names.
    headers: Vec<(String, Template)>,
}

fn mailboxes(path: &str, s: &str) -> Result<Vec<Mailbox>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(
            part.parse::<Mailbox>()
                .map_err(|e| invalid(path, format!("invalid address {part:?}: {e}")))?,
        );
    }
    if out.is_empty() {
        return Err(invalid(path, "no address"));
    }
    Ok(out)
}

/// Splits `host:port` (`[v6]:port` for IPv6).
fn host_port(path: &str, s: &str) -> Result<(String, u16), ConfigError> {
    let bad = || invalid(path, format!("{s:?}: expected host:port"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port.parse().map_err(|_| bad())?))
}

impl Raw {
    pub(crate) fn validate(self, path: &str, g: &GlobalDefaults) -> Result<Email, ConfigError> {
        if self.auth_secret.is_some() {
            return Err(invalid(
                format!("{path}.auth_secret"),
                "CRAM-MD5 is not supported; use auth_username/auth_password",
            ));
        }
        let _ = (&self.auth_identity, &g.smtp.auth_identity);
        let mut headers_in = self.headers;
        let mut take = |name: &str| -> Option<String> {
            let key = headers_in
                .keys()
                .find(|k| k.eq_ignore_ascii_case(name))
                .cloned()?;
            headers_in.remove(&key)
        };
        let to_text = take("To")
            .or(self.to)
            .ok_or_else(|| invalid(format!("{path}.to"), "required"))?;
        let to = mailboxes(&format!("{path}.to"), &to_text)?;
        let from_text = take("From")
            .or(self.from)
            .or_else(|| g.smtp.from.clone())
            .ok_or_else(|| invalid(format!("{path}.from"), "required (or global.smtp_from)"))?;
        let from = mailboxes(&format!("{path}.from"), &from_text)?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(format!("{path}.from"), "no address"))?;
        let subject = template_field(path, "headers.Subject", take("Subject").as_deref())?;
        let smarthost = self
            .smarthost
            .or_else(|| g.smtp.smarthost.clone())
            .ok_or_else(|| {
                invalid(
                    format!("{path}.smarthost"),
                    "required (or global.smtp_smarthost)",
                )
            })?;
        let (host, port) = host_port(&format!("{path}.smarthost"), &smarthost)?;
        let username = self.auth_username.or_else(|| g.smtp.auth_username.clone());
        let password = self.auth_password.or_else(|| g.smtp.auth_password.clone());
        let auth = match (username, password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
            (Some(u), None) if !u.is_empty() => Some((u, Secret::default())),
            _ => None,
        };
        let require_tls = self.require_tls.or(g.smtp.require_tls).unwrap_or(true);
        let security = if self.tls.unwrap_or(port == 465) {
            Security::Implicit
        } else if require_tls {
            Security::StartTls
        } else {
            Security::None
        };
        let (ca_pem, server_name, insecure) = match self.tls_config {
            None => (None, None, false),
            Some(t) => {
                let pem = match &t.ca_file {
                    Some(f) => {
                        let bytes = std::fs::read(f).map_err(|e| {
                            invalid(format!("{path}.tls_config.ca_file"), format!("{f}: {e}"))
                        })?;
                        Certificate::from_pem(&bytes).map_err(|e| {
                            invalid(format!("{path}.tls_config.ca_file"), format!("{f}: {e}"))
                        })?;
                        Some(bytes)
                    }
                    None => None,
                };
                (pem, t.server_name, t.insecure_skip_verify)
            }
        };
        let mut headers = Vec::new();
        for (k, v) in headers_in {
            HeaderName::new_from_ascii(k.clone()).map_err(|_| {
                invalid(
                    format!("{path}.headers"),
                    format!("invalid header name {k:?}"),
                )
            })?;
            let t = template_field(path, &format!("headers.{k}"), Some(&v))?
                .expect("a template was given");
            headers.push((k, t));
        }
        Ok(Email {
            send_resolved: self.send_resolved.unwrap_or(false),
            to,
            from,
            host,
            port,
            hello: self
                .hello
                .or_else(|| g.smtp.hello.clone())
                .unwrap_or_else(|| "localhost".to_string()),
            auth,
            security,
            ca_pem,
            server_name,
            insecure_skip_verify: insecure,
            subject,
            html: template_field(path, "html", self.html.as_deref())?,
            text: template_field(path, "text", self.text.as_deref())?,
            headers,
        })
    }
}

impl Email {
    /// The message for a notification, with the built-in named templates.
    pub fn message(&self, n: &Notification, external_url: &str) -> Result<Message, SendError> {
        let set = crate::notify::template::builtin();
        self.render(n, &mut Render::new(n, external_url, set), external_url)
    }

    /// The template fields, for checking at load time.
    pub(crate) fn templates(&self) -> Vec<(String, &Template, bool)> {
        let mut out =
            super::set_fields(&[("headers.Subject", &self.subject), ("text", &self.text)]);
        if let Some(t) = &self.html {
            out.push(("html".to_string(), t, true));
        }
        for (k, t) in &self.headers {
            out.push((format!("headers.{k}"), t, false));
        }
        out
    }

    /// The message, rendering the template fields with `r`.
    fn render(
        &self,
        n: &Notification,
        r: &mut Render<'_>,
        external_url: &str,
    ) -> Result<Message, SendError> {
        let subject = r.text("headers.Subject", self.subject.as_ref(), || n.subject());
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .date_now();
        for to in &self.to {
            b = b.to(to.clone());
        }
        for (k, t) in &self.headers {
            let name = HeaderName::new_from_ascii(k.clone())
                .map_err(|_| SendError::permanent(format!("invalid header name {k:?}")))?;
            let value = r.text(&format!("headers.{k}"), Some(t), String::new);
            b = b.raw_header(HeaderValue::new(name, value));
        }
        let text = r.text("text", self.text.as_ref(), || n.text_body(external_url));
        let html = r.html("html", self.html.as_ref(), || n.html_body(external_url));
        let built = match (text.is_empty(), html.is_empty()) {
            (false, false) => b.multipart(MultiPart::alternative_plain_html(text, html)),
            (true, false) => b.singlepart(SinglePart::html(html)),
            _ => b.singlepart(SinglePart::plain(text)),
        };
        built.map_err(|e| SendError::permanent(format!("email: building the message: {e}")))
    }

    fn tls_parameters(&self) -> Result<TlsParameters, SendError> {
        let mut b = TlsParameters::builder(
            self.server_name
                .clone()
                .unwrap_or_else(|| self.host.clone()),
        );
        if let Some(pem) = &self.ca_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| SendError::permanent(format!("email: ca_file: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        if self.insecure_skip_verify {
            b = b
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        }
        b.build_rustls()
            .map_err(|e| SendError::permanent(format!("email: TLS settings: {e}")))
    }

    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let mut r = Render::new(n, &cx.external_url, &cx.templates);
        let msg = self.render(n, &mut r, &cx.external_url)?;
        let tls = match self.security {
            Security::Implicit => Tls::Wrapper(self.tls_parameters()?),
            Security::StartTls => Tls::Required(self.tls_parameters()?),
            Security::None => Tls::None,
        };
        let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.clone())
            .port(self.port)
            .tls(tls)
            .hello_name(ClientId::Domain(self.hello.clone()))
            .timeout(Some(cx.timeout));
        if let Some((user, pass)) = &self.auth {
            t = t.credentials(Credentials::new(user.clone(), pass.0.clone()));
        }
        let transport = t.build();
        match transport.send(msg).await {
            Ok(_) => Ok(r.errors()),
            Err(e) => {
                let what = format!("email to {}:{}: {}", self.host, self.port, chain(&e));
                // A permanent SMTP answer (5xx: unknown recipient, authentication
                // refused) will not change by itself.
                if e.is_permanent() {
                    Err(SendError::permanent(what))
                } else {
                    Err(SendError::retry(what))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::config::SmtpDefaults;
    use crate::notify::message::tests::sample;

    fn raw(yaml: &str) -> Raw {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn globals() -> GlobalDefaults {
        GlobalDefaults {
            smtp: SmtpDefaults {
                smarthost: Some("mail.example.org:587".into()),
                from: Some("Minos <alerts@example.org>".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn security_follows_port_and_require_tls() {
        let e = raw("to: a@example.org\n")
            .validate("e", &globals())
            .unwrap();
        assert_eq!(e.security, Security::StartTls);
        assert_eq!(e.port, 587);
        let e = raw("to: a@example.org\nsmarthost: 'smtp.example.org:465'\n")
            .validate("e", &globals())
            .unwrap();
        assert_eq!(e.security, Security::Implicit);
        let e = raw("to: a@example.org\nrequire_tls: false\n")
            .validate("e", &globals())
            .unwrap();
        assert_eq!(e.security, Security::None);
        let e = raw("to: a@example.org\nsmarthost: '[::1]:2525'\ntls: true\n")
            .validate("e", &globals())
            .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.security),
            ("::1", 2525, Security::Implicit)
        );
    }

    #[test]
    fn message_is_multipart_with_alertmanagers_subject() {
        let e = raw("to: 'a@example.org, b@example.org'\nheaders:\n  X-Team: '{{ .CommonLabels.severity }}'\n")
            .validate("e", &globals())
            .unwrap();
        let m = e.message(&sample(), "http://minos").unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            raw.contains("Subject: [FIRING:2] HighCPU (warning)"),
            "{raw}"
        );
        assert!(raw.contains("To: a@example.org, b@example.org"), "{raw}");
        assert!(raw.contains("X-Team: warning"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
    }

    #[test]
    fn bad_email_configs_are_named() {
        let e = raw("from: x@y\n").validate("e", &globals()).unwrap_err();
        assert!(e.to_string().starts_with("e.to"), "{e}");
        let e = raw("to: 'not an address'\n")
            .validate("e", &globals())
            .unwrap_err();
        assert!(e.to_string().starts_with("e.to"), "{e}");
        let e = raw("to: a@b.c\nsmarthost: nohost\n")
            .validate("e", &globals())
            .unwrap_err();
        assert!(e.to_string().starts_with("e.smarthost"), "{e}");
        let e = raw("to: a@b.c\ntls_config:\n  ca_file: /nonexistent/ca.pem\n")
            .validate("e", &globals())
            .unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
        let e = raw("to: a@b.c\nheaders:\n  'Bad Header': x\n")
            .validate("e", &globals())
            .unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
    }
}
