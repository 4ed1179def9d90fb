//! Notifications end to end, against real servers on loopback:
//!
//! - an SMTP server (Python's aiosmtpd, from Debian's `python3-aiosmtpd`) that stores
//!   every message it accepts, in plain text, with STARTTLS and with implicit TLS, and
//!   requires authentication;
//! - an HTTP server standing in for the chat robots and webhooks, which checks the
//!   payload shapes and refuses bad DingTalk and Feishu signatures the way they do;
//! - a real `prometheus-alertmanager` (Debian's), to which alerts are forwarded, and
//!   whose own webhook payload is compared with ours.
//!
//! Timers are short (100 ms group waits) and every wait polls for the expected
//! outcome with a generous deadline; nothing asserts how long something took. The
//! few "nothing more arrives" checks wait several times the interval that would
//! cause a message.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alerting::notify::{
    Alert, Config, Fingerprint, HistoryFilter, LogFilter, NewSilence, Notifier, Options,
    parse_matchers,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// Support.
// ---------------------------------------------------------------------------------

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A firing alert that started now.
fn firing(pairs: &[(&str, &str)]) -> Alert {
    Alert {
        labels: labels(pairs),
        annotations: labels(&[("summary", "something is wrong")]),
        starts_at: now_ms(),
        ends_at: None,
        generator_url: "http://prometheus.test/graph?g0.expr=up".into(),
    }
}

/// The same alert, resolved now.
fn resolved(pairs: &[(&str, &str)]) -> Alert {
    Alert {
        starts_at: 0,
        ends_at: Some(now_ms()),
        ..firing(pairs)
    }
}

fn opts() -> Options {
    Options {
        external_url: "http://minos.test".into(),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        delivery_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

async fn start(db: &Path, yaml: &str) -> Arc<Notifier> {
    let cfg = Config::parse(yaml).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"));
    let n = Notifier::open(db, cfg, opts()).await.unwrap();
    tokio::spawn(n.clone().run());
    n
}

const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it holds; panics after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const DING_SECRET: &str = "SECdingtalk-test-secret";
const FEISHU_SECRET: &str = "feishu-test-secret";

/// A request the hook server accepted.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

/// An HTTP server standing in for chat robots and webhooks.
#[derive(Clone, Default)]
struct Hook {
    reqs: Arc<Mutex<Vec<Req>>>,
    /// Requests answered 503 while `down`.
    refused: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

impl Hook {
    async fn start() -> (Hook, SocketAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = Hook::default();
        h.serve(l);
        (h, addr)
    }

    async fn start_on(addr: SocketAddr) -> Hook {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let h = Hook::default();
        h.serve(l);
        h
    }

    fn serve(&self, l: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    }

    fn at(&self, path: &str) -> Vec<Req> {
        self.reqs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn count(&self, path: &str) -> usize {
        self.at(path).len()
    }
}

async fn handle(
    axum::extract::State(h): axum::extract::State<Hook>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    if h.down.load(Ordering::SeqCst) {
        h.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let path = uri.path().to_string();
    // The robots check signatures and answer errors with HTTP 200 and a code.
    let answer = match path.as_str() {
        "/dingtalk" => {
            let ts = query.get("timestamp").cloned().unwrap_or_default();
            let want = hmac_b64(
                DING_SECRET.as_bytes(),
                format!("{ts}\n{DING_SECRET}").as_bytes(),
            );
            let fresh = ts
                .parse::<i64>()
                .is_ok_and(|t| (now_ms() - t).abs() < 3_600_000);
            if query.get("sign") != Some(&want) || !fresh {
                return (
                    StatusCode::OK,
                    r#"{"errcode":310000,"errmsg":"sign not match"}"#.into(),
                );
            }
            r#"{"errcode":0,"errmsg":"ok"}"#
        }
        "/feishu" => {
            let ts = body["timestamp"].as_str().unwrap_or_default().to_string();
            let want = hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
            if body["sign"].as_str() != Some(want.as_str()) {
                return (
                    StatusCode::OK,
                    r#"{"code":19021,"msg":"sign match fail"}"#.into(),
                );
            }
            r#"{"code":0,"msg":"success","data":{}}"#
        }
        "/wecom" => r#"{"errcode":0,"errmsg":"ok"}"#,
        _ => "ok",
    };
    h.reqs.lock().unwrap().push(Req { path, query, body });
    (StatusCode::OK, answer.to_string())
}

/// The alerts of a webhook payload: (status, alertname, instance).
fn webhook_alerts(r: &Req) -> Vec<(String, String, String)> {
    r.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap().to_string(),
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["labels"]["instance"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A config whose receivers `team`, `db` and `boss` are webhooks to `addr`.
fn webhook_config(addr: SocketAddr, route_extra: &str, tail: &str) -> String {
    format!(
        r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 200ms
  repeat_interval: 1h
{route_extra}
receivers:
  - name: team
    webhook_configs:
      - url: 'http://{addr}/team'
  - name: db
    webhook_configs:
      - url: 'http://{addr}/db'
  - name: boss
    webhook_configs:
      - url: 'http://{addr}/boss'
{tail}
"#
    )
}

/// Email, against a real SMTP server.
mod notify_email {
    use super::*;

    /// An SMTP server (aiosmtpd) that requires authentication (user `minos`, password
    /// `s3cret`) and stores each accepted message as `NNNN.eml` plus `NNNN.json`: the
    /// envelope, whether the session was authenticated and encrypted, and the message
    /// parsed by Python's `email` package (decoded subject and parts).
    const SMTPD: &str = r#"
import email, json, logging, os, ssl, sys, warnings
from email import policy
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

class Store:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Store.n += 1
        base = os.path.join(out, "%04d" % Store.n)
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=policy.default)
        parts = {}
        for part in msg.walk():
            if part.get_content_type() in ("text/plain", "text/html"):
                parts[part.get_content_type()] = part.get_content()
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated": bool(session.authenticated),
            "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "starttls": session.ssl is not None,
            "subject": str(msg["subject"]),
            "to": str(msg["to"]),
            "from": str(msg["from"]),
            "content_type": msg.get_content_type(),
            "text": parts.get("text/plain"),
            "html": parts.get("text/html"),
        }
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK stored"

def auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"minos" and auth_data.password == b"s3cret"
    # handled=False: let aiosmtpd answer 535 on failure.
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

# aiosmtpd counts only STARTTLS as encryption for AUTH; SMTPS is encrypted too.
kw = dict(hostname="127.0.0.1", port=port, authenticator=auth, auth_required=True,
          auth_require_tls=(mode == "starttls"))
if mode in ("starttls", "tls"):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    if mode == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)
    else:
        kw.update(ssl_context=ctx)
c = Controller(Store(), **kw)
c.start()
print("READY", flush=True)
try:
    sys.stdin.read()
finally:
    c.stop()
"#;

    const PYTHON: &str = "/usr/bin/python3";

    struct Smtp {
        child: Child,
        dir: PathBuf,
        port: u16,
    }

    impl Smtp {
        /// Starts the server; `mode` is `plain`, `starttls` or `tls`. `None` when
        /// aiosmtpd is not installed.
        fn start(dir: &Path, mode: &str, cert: Option<(&Path, &Path)>) -> Option<Smtp> {
            let ok = Command::new(PYTHON)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!(
                    "SKIPPED: {PYTHON} with aiosmtpd (Debian: python3-aiosmtpd) is not installed"
                );
                return None;
            }
            let out = dir.join(format!("mail-{mode}"));
            std::fs::create_dir_all(&out).unwrap();
            let script = dir.join("smtpd.py");
            std::fs::write(&script, SMTPD).unwrap();
            let port = free_port();
            let mut cmd = Command::new(PYTHON);
            cmd.arg(&script).arg(&out).arg(port.to_string()).arg(mode);
            if let Some((c, k)) = cert {
                cmd.arg(c).arg(k);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "READY", "smtpd did not start");
            Some(Smtp {
                child,
                dir: out,
                port,
            })
        }

        /// The stored messages' metadata, in arrival order.
        fn messages(&self) -> Vec<Value> {
            let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            names.sort();
            names
                .iter()
                .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
                .collect()
        }
    }

    impl Drop for Smtp {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A self-signed certificate for 127.0.0.1 and localhost (cert, key).
    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req failed");
        (cert, key)
    }

    fn email_config(port: u16, extra: &str) -> String {
        format!(
            r#"
global:
  smtp_smarthost: '127.0.0.1:{port}'
  smtp_from: 'Minos <minos@example.org>'
  smtp_auth_username: minos
  smtp_auth_password: s3cret
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 200ms
receivers:
  - name: mail
    email_configs:
      - to: 'oncall@example.org, team@example.org'
        send_resolved: true
{extra}
"#
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn email_plain_with_auth_one_message_per_group_then_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let Some(smtp) = Smtp::start(dir.path(), "plain", None) else {
            return;
        };
        let n = start(
            &dir.path().join("n.db"),
            &email_config(smtp.port, "        require_tls: false"),
        )
        .await;
        let web01 = [
            ("alertname", "HighCPU"),
            ("instance", "web-01"),
            ("severity", "warning"),
        ];
        let web02 = [
            ("alertname", "HighCPU"),
            ("instance", "web-02"),
            ("severity", "warning"),
        ];
        n.put(vec![firing(&web01), firing(&web02)]).await.unwrap();
        eventually("the firing email", || async { smtp.messages().len() == 1 }).await;
        let m = &smtp.messages()[0];
        assert_eq!(m["subject"], "[FIRING:2] HighCPU (warning)");
        assert_eq!(m["authenticated"], true);
        assert_eq!(m["login"], "minos");
        assert_eq!(m["mail_from"], "minos@example.org");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["oncall@example.org", "team@example.org"])
        );
        assert_eq!(m["content_type"], "multipart/alternative");
        let text = m["text"].as_str().unwrap();
        assert!(text.contains("Firing (2)"), "{text}");
        assert!(text.contains(" - instance = web-01") && text.contains(" - instance = web-02"));
        assert!(text.contains("summary = something is wrong"));
        assert!(text.contains("Source: http://prometheus.test/graph"));
        let html = m["html"].as_str().unwrap();
        assert!(
            html.contains("<h3>[2] Firing</h3>") && html.contains("web-02"),
            "{html}"
        );

        n.put(vec![resolved(&web01), resolved(&web02)])
            .await
            .unwrap();
        eventually("the resolved email", || async {
            smtp.messages().len() == 2
        })
        .await;
        let m = &smtp.messages()[1];
        assert_eq!(m["subject"], "[RESOLVED] HighCPU (warning)");
        let text = m["text"].as_str().unwrap();
        assert!(
            text.contains("Resolved (2)") && text.contains("Ended: "),
            "{text}"
        );
        assert!(m["html"].as_str().unwrap().contains("[2] Resolved"));

        // The log is written right after each delivery.
        eventually("two deliveries in the log", || async {
            n.notification_log(LogFilter::default())
                .await
                .unwrap()
                .len()
                == 2
        })
        .await;
        let log = n.notification_log(LogFilter::default()).await.unwrap();
        assert!(
            log.iter().all(|e| e.ok && e.integration == "email"),
            "{log:?}"
        );
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn email_starttls_and_implicit_tls_with_a_private_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let Some(starttls) = Smtp::start(dir.path(), "starttls", Some((&cert, &key))) else {
            return;
        };
        let Some(tls) = Smtp::start(dir.path(), "tls", Some((&cert, &key))) else {
            return;
        };
        let yaml = format!(
            r#"
global:
  smtp_from: 'minos@example.org'
  smtp_auth_username: minos
  smtp_auth_password: s3cret
route:
  receiver: both
  group_wait: 100ms
  group_interval: 200ms
receivers:
  - name: both
    email_configs:
      - to: 'starttls@example.org'
        smarthost: '127.0.0.1:{}'
        tls_config: {{ca_file: '{c}'}}
      - to: 'tls@example.org'
        smarthost: 'localhost:{}'
        tls: true
        tls_config: {{ca_file: '{c}', server_name: localhost}}
"#,
            starttls.port,
            tls.port,
            c = cert.display()
        );
        let n = start(&dir.path().join("n.db"), &yaml).await;
        n.put(vec![firing(&[
            ("alertname", "CertExpiry"),
            ("instance", "lb-01"),
        ])])
        .await
        .unwrap();
        eventually("both emails", || async {
            starttls.messages().len() == 1 && tls.messages().len() == 1
        })
        .await;
        let a = &starttls.messages()[0];
        assert_eq!(a["starttls"], true, "upgraded with STARTTLS");
        assert_eq!(a["authenticated"], true);
        // No group_by: no group labels, every common label in parentheses.
        assert_eq!(a["subject"], "[FIRING:1] (CertExpiry lb-01)");
        let b = &tls.messages()[0];
        assert_eq!(b["authenticated"], true);
        assert_eq!(b["rcpt_tos"], serde_json::json!(["tls@example.org"]));
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn email_with_a_wrong_password_is_logged_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let Some(smtp) = Smtp::start(dir.path(), "plain", None) else {
            return;
        };
        let yaml = email_config(
            smtp.port,
            "        require_tls: false\n        auth_password: wrong",
        );
        let n = start(&dir.path().join("n.db"), &yaml).await;
        n.put(vec![firing(&[("alertname", "X")])]).await.unwrap();
        eventually("a failed attempt in the log", || async {
            let log = n.notification_log(LogFilter::default()).await.unwrap();
            log.iter()
                .any(|e| !e.ok && e.error.as_deref().is_some_and(|m| m.contains("email")))
        })
        .await;
        assert!(smtp.messages().is_empty());
        // 535 is a permanent answer: the notification is dropped, not retried forever.
        eventually("the outbox to drain", || async {
            n.metrics().outbox_pending == 0
        })
        .await;
        let m = n.metrics();
        let email = m
            .integrations
            .iter()
            .find(|c| c.integration == "email")
            .unwrap();
        assert_eq!(email.dropped, 1);
        n.shutdown().await;
    }
}

/// Chat robots and webhooks, against a local HTTP server checking payloads.
mod notify_chat {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_robots_and_webhook_get_their_payloads_then_the_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let yaml = format!(
            r#"
route:
  receiver: chat
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 200ms
receivers:
  - name: chat
    slack_configs:
      - api_url: 'http://{addr}/slack'
        channel: '#ops'
        send_resolved: true
    dingtalk_configs:
      - url: 'http://{addr}/dingtalk?access_token=tok'
        secret: '{DING_SECRET}'
    feishu_configs:
      - url: 'http://{addr}/feishu'
        secret: '{FEISHU_SECRET}'
    wecom_configs:
      - url: 'http://{addr}/wecom?key=wk'
    webhook_configs:
      - url: 'http://{addr}/webhook'
"#
        );
        let n = start(&dir.path().join("n.db"), &yaml).await;
        let disk = [
            ("alertname", "DiskFull"),
            ("instance", "db-01"),
            ("severity", "critical"),
        ];
        n.put(vec![firing(&disk)]).await.unwrap();
        let paths = ["/slack", "/dingtalk", "/feishu", "/wecom", "/webhook"];
        eventually("one request per integration", || async {
            paths.iter().all(|p| hook.count(p) == 1)
        })
        .await;
        let subject = "[FIRING:1] DiskFull (db-01 critical)";

        let slack = &hook.at("/slack")[0].body;
        assert_eq!(slack["channel"], "#ops");
        let att = &slack["attachments"][0];
        assert_eq!(att["title"], subject);
        assert_eq!(att["color"], "danger");
        assert_eq!(att["title_link"], "http://minos.test");
        assert!(att["text"].as_str().unwrap().contains("*DiskFull*"));
        assert_eq!(
            att["mrkdwn_in"],
            serde_json::json!(["fallback", "pretext", "text"])
        );

        // The server answered errcode 0 only because the signature checked out.
        let ding = &hook.at("/dingtalk")[0];
        assert_eq!(ding.query["access_token"], "tok");
        assert!(ding.query.contains_key("sign") && ding.query.contains_key("timestamp"));
        assert_eq!(ding.body["msgtype"], "markdown");
        assert_eq!(ding.body["markdown"]["title"], subject);
        assert!(
            ding.body["markdown"]["text"]
                .as_str()
                .unwrap()
                .contains("**DiskFull**")
        );

        let feishu = &hook.at("/feishu")[0].body;
        assert_eq!(feishu["msg_type"], "interactive");
        assert_eq!(feishu["card"]["header"]["title"]["content"], subject);
        assert_eq!(feishu["card"]["header"]["template"], "red");
        assert_eq!(feishu["card"]["elements"][0]["text"]["tag"], "lark_md");

        let wecom = &hook.at("/wecom")[0];
        assert_eq!(wecom.query["key"], "wk");
        assert_eq!(wecom.body["msgtype"], "markdown");
        assert!(
            wecom.body["markdown"]["content"]
                .as_str()
                .unwrap()
                .contains(subject)
        );

        let wh = &hook.at("/webhook")[0].body;
        assert_eq!(wh["version"], "4");
        assert_eq!(wh["status"], "firing");
        assert_eq!(wh["receiver"], "chat");
        assert_eq!(wh["groupKey"], "{}:{alertname=\"DiskFull\"}");
        assert_eq!(wh["externalURL"], "http://minos.test");
        assert_eq!(wh["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            wh["alerts"][0]["fingerprint"],
            alerting::notify::fingerprint(&labels(&disk)).to_string()
        );

        n.put(vec![resolved(&disk)]).await.unwrap();
        eventually("the resolution everywhere", || async {
            paths.iter().all(|p| hook.count(p) == 2)
        })
        .await;
        assert_eq!(hook.at("/slack")[1].body["attachments"][0]["color"], "good");
        assert_eq!(
            hook.at("/feishu")[1].body["card"]["header"]["template"],
            "green"
        );
        assert!(
            hook.at("/dingtalk")[1].body["markdown"]["title"]
                .as_str()
                .unwrap()
                .starts_with("[RESOLVED]")
        );
        let wh = &hook.at("/webhook")[1].body;
        assert_eq!(wh["status"], "resolved");
        assert_eq!(wh["alerts"][0]["status"], "resolved");
        assert_ne!(wh["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        eventually("ten deliveries in the log", || async {
            n.notification_log(LogFilter::default())
                .await
                .unwrap()
                .len()
                == 10
        })
        .await;
        let log = n.notification_log(LogFilter::default()).await.unwrap();
        assert!(log.iter().all(|e| e.ok), "{log:?}");
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_robot_signature_is_a_failed_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let yaml = format!(
            r#"
route:
  receiver: ding
  group_wait: 100ms
receivers:
  - name: ding
    dingtalk_configs:
      - url: 'http://{addr}/dingtalk?access_token=tok'
        secret: 'SECwrong'
"#
        );
        let n = start(&dir.path().join("n.db"), &yaml).await;
        n.put(vec![firing(&[("alertname", "X")])]).await.unwrap();
        eventually("failed attempts", || async {
            let log = n.notification_log(LogFilter::default()).await.unwrap();
            log.len() >= 2
                && log
                    .iter()
                    .all(|e| !e.ok && e.error.as_deref().is_some_and(|m| m.contains("310000")))
        })
        .await;
        assert_eq!(hook.count("/dingtalk"), 0);
        n.shutdown().await;
    }
}

/// A real Alertmanager.
mod notify_alertmanager {
    use super::*;

    const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

    struct Am {
        child: Child,
        port: u16,
    }

    impl Drop for Am {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts Debian's Alertmanager with a webhook receiver pointing at `hook`.
    async fn start_alertmanager(dir: &Path, hook: SocketAddr) -> Option<Am> {
        if !Path::new(ALERTMANAGER).exists() {
            eprintln!("SKIPPED: {ALERTMANAGER} (Debian: prometheus-alertmanager) is not installed");
            return None;
        }
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            format!(
                r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: 'http://{hook}/am-webhook'
        send_resolved: true
"#
            ),
        )
        .unwrap();
        let storage = dir.join("am-data");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let am = Am { child, port };
        let http = reqwest::Client::new();
        eventually("alertmanager ready", || {
            let http = http.clone();
            async move {
                http.get(format!("http://127.0.0.1:{port}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        Some(am)
    }

    /// The alerts Alertmanager lists (active, not resolved) with `alertname`.
    async fn am_alerts(port: u16, alertname: &str) -> Vec<Value> {
        let v: Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v2/alerts"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .cloned()
            .collect()
    }

    /// The shape of a JSON value: object keys (recursively), array element shapes; no
    /// values.
    fn shape(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        // Label and annotation maps hold data, not structure.
                        let s = if matches!(
                            k.as_str(),
                            "labels"
                                | "annotations"
                                | "groupLabels"
                                | "commonLabels"
                                | "commonAnnotations"
                        ) {
                            Value::String("map".into())
                        } else {
                            shape(v)
                        };
                        (k.clone(), s)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
            Value::String(_) => Value::String("string".into()),
            Value::Number(_) => Value::String("number".into()),
            Value::Bool(_) => Value::String("bool".into()),
            Value::Null => Value::Null,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_reach_a_real_alertmanager_then_resolve_and_our_webhook_matches_its() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, hook_addr) = Hook::start().await;
        let Some(am) = start_alertmanager(dir.path(), hook_addr).await else {
            return;
        };
        let yaml = format!(
            r#"
route:
  receiver: forward
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 300ms
receivers:
  - name: forward
    alertmanager_configs:
      - url: 'http://127.0.0.1:{}'
    webhook_configs:
      - url: 'http://{hook_addr}/minos-webhook'
"#,
            am.port
        );
        let n = start(&dir.path().join("n.db"), &yaml).await;
        let a = [
            ("alertname", "NodeDown"),
            ("instance", "node-7"),
            ("job", "node"),
        ];
        let mut alert = firing(&a);
        alert.annotations = labels(&[("summary", "node-7 is down"), ("runbook_url", "http://rb")]);
        n.put(vec![alert]).await.unwrap();

        eventually("the alert in alertmanager", || async {
            am_alerts(am.port, "NodeDown").await.len() == 1
        })
        .await;
        let got = &am_alerts(am.port, "NodeDown").await[0];
        assert_eq!(got["labels"], serde_json::json!(labels(&a)));
        assert_eq!(got["annotations"]["summary"], "node-7 is down");
        assert_eq!(got["status"]["state"], "active");
        assert_eq!(
            got["generatorURL"],
            "http://prometheus.test/graph?g0.expr=up"
        );
        // Both compute a fingerprint; ours is our own hash, so only the form is shared.
        assert_eq!(got["fingerprint"].as_str().unwrap().len(), 16);

        // Alertmanager's webhook and ours, for the same alert: the same shape and group.
        eventually("both webhooks", || async {
            hook.count("/am-webhook") >= 1 && hook.count("/minos-webhook") >= 1
        })
        .await;
        let theirs = hook.at("/am-webhook")[0].body.clone();
        let ours = hook.at("/minos-webhook")[0].body.clone();
        assert_eq!(
            shape(&ours),
            shape(&theirs),
            "ours: {ours:#}\ntheirs: {theirs:#}"
        );
        for k in [
            "status",
            "groupKey",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "version",
            "truncatedAlerts",
        ] {
            assert_eq!(ours[k], theirs[k], "{k}");
        }
        for k in ["status", "labels", "annotations", "endsAt", "generatorURL"] {
            assert_eq!(
                ours["alerts"][0][k], theirs["alerts"][0][k],
                "alerts[0].{k}"
            );
        }

        n.put(vec![resolved(&a)]).await.unwrap();
        eventually("the alert resolved in alertmanager", || async {
            am_alerts(am.port, "NodeDown").await.is_empty()
        })
        .await;
        eventually("alertmanager's resolved webhook", || async {
            hook.at("/am-webhook")
                .iter()
                .any(|r| r.body["status"] == "resolved")
        })
        .await;
        let theirs = hook
            .at("/am-webhook")
            .into_iter()
            .find(|r| r.body["status"] == "resolved")
            .unwrap()
            .body;
        eventually("our resolved webhook", || async {
            hook.at("/minos-webhook")
                .iter()
                .any(|r| r.body["status"] == "resolved")
        })
        .await;
        let ours = hook
            .at("/minos-webhook")
            .into_iter()
            .find(|r| r.body["status"] == "resolved")
            .unwrap()
            .body;
        assert_eq!(shape(&ours), shape(&theirs));
        assert_eq!(ours["alerts"][0]["status"], theirs["alerts"][0]["status"]);
        n.shutdown().await;
    }
}

/// Routing, grouping, timers, inhibition, silences, acknowledgements, escalation.
mod notify_routing {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_of_one_group_within_group_wait_make_one_notification() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let yaml = webhook_config(addr, "", "").replace("group_wait: 100ms", "group_wait: 2s");
        let n = start(&dir.path().join("n.db"), &yaml).await;
        n.put(vec![firing(&[("alertname", "Latency"), ("instance", "a")])])
            .await
            .unwrap();
        n.put(vec![firing(&[("alertname", "Latency"), ("instance", "b")])])
            .await
            .unwrap();
        n.put(vec![firing(&[("alertname", "Other"), ("instance", "a")])])
            .await
            .unwrap();
        eventually("two groups notified", || async { hook.count("/team") == 2 }).await;
        let reqs = hook.at("/team");
        let latency = reqs
            .iter()
            .find(|r| r.body["groupLabels"]["alertname"] == "Latency")
            .unwrap();
        assert_eq!(
            webhook_alerts(latency),
            [
                ("firing".to_string(), "Latency".to_string(), "a".to_string()),
                ("firing".to_string(), "Latency".to_string(), "b".to_string()),
            ]
        );
        // A third alert of the group comes with the next group_interval, together with
        // the two already sent.
        n.put(vec![firing(&[("alertname", "Latency"), ("instance", "c")])])
            .await
            .unwrap();
        eventually("the group's update", || async { hook.count("/team") == 3 }).await;
        assert_eq!(webhook_alerts(&hook.at("/team")[2]).len(), 3);
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeat_interval_resends_and_an_ack_stops_it_until_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let yaml =
            webhook_config(addr, "", "").replace("repeat_interval: 1h", "repeat_interval: 300ms");
        let n = start(&dir.path().join("n.db"), &yaml).await;
        let a = [("alertname", "Queue"), ("instance", "q1")];
        n.put(vec![firing(&a)]).await.unwrap();
        eventually("a repeat", || async { hook.count("/team") >= 2 }).await;

        let f = alerting::notify::fingerprint(&labels(&a));
        let ack = n.ack(f, "alice", "looking at it", None).await.unwrap();
        assert_eq!(ack.by, "alice");
        let seen = hook.count("/team");
        // Five repeat intervals without a reminder.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            hook.count("/team") <= seen + 1,
            "at most one in flight when acked"
        );
        let settled = hook.count("/team");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            hook.count("/team"),
            settled,
            "no reminders while acknowledged"
        );
        let v = n.alert(f).unwrap();
        assert_eq!(v.acked.unwrap().by, "alice");

        // Resolution is still notified, and ends the acknowledgement.
        n.put(vec![resolved(&a)]).await.unwrap();
        eventually("the resolution", || async {
            hook.at("/team")
                .last()
                .is_some_and(|r| r.body["status"] == "resolved")
        })
        .await;
        let acks = n.acks(f).await.unwrap();
        assert_eq!(acks[0].end_reason.as_deref(), Some("resolved"));
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn continue_sends_to_every_matching_route() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let routes = r#"  routes:
    - matchers: ['severity="critical"']
      receiver: boss
      continue: true
    - matchers: ['team=~"db|storage"']
      receiver: db
    - matchers: ['team="db"']
      receiver: team"#;
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, routes, "")).await;
        n.put(vec![firing(&[
            ("alertname", "Replication"),
            ("team", "db"),
            ("severity", "critical"),
        ])])
        .await
        .unwrap();
        eventually("boss and db", || async {
            hook.count("/boss") == 1 && hook.count("/db") == 1
        })
        .await;
        let boss = &hook.at("/boss")[0].body;
        assert_eq!(
            boss["groupKey"],
            "{}/{severity=\"critical\"}:{alertname=\"Replication\"}"
        );
        // The route after the first non-continue match is never tried.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(hook.count("/team"), 0);
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_critical_alert_inhibits_its_warning_twin_until_it_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let inhibit = r#"
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [instance]
"#;
        let yaml =
            webhook_config(addr, "", inhibit).replace("group_by: [alertname]", "group_by: ['...']");
        let n = start(&dir.path().join("n.db"), &yaml).await;
        let crit = [
            ("alertname", "DiskFull"),
            ("instance", "db-01"),
            ("severity", "critical"),
        ];
        let warn = [
            ("alertname", "DiskFull"),
            ("instance", "db-01"),
            ("severity", "warning"),
        ];
        let other = [
            ("alertname", "DiskFull"),
            ("instance", "db-02"),
            ("severity", "warning"),
        ];
        n.put(vec![firing(&crit), firing(&warn), firing(&other)])
            .await
            .unwrap();
        eventually("critical and the other warning", || async {
            hook.count("/team") == 2
        })
        .await;
        let sent: Vec<String> = hook
            .at("/team")
            .iter()
            .map(|r| {
                webhook_alerts(r)[0].2.clone()
                    + "/"
                    + r.body["alerts"][0]["labels"]["severity"].as_str().unwrap()
            })
            .collect();
        assert!(
            sent.contains(&"db-01/critical".to_string())
                && sent.contains(&"db-02/warning".to_string()),
            "{sent:?}"
        );
        let wf = alerting::notify::fingerprint(&labels(&warn));
        let cf = alerting::notify::fingerprint(&labels(&crit));
        assert_eq!(n.alert(wf).unwrap().inhibited_by, [cf]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(hook.count("/team"), 2, "the warning twin stays muted");

        n.put(vec![resolved(&crit)]).await.unwrap();
        eventually("the warning once the critical resolved", || async {
            hook.at("/team")
                .iter()
                .any(|r| r.body["alerts"][0]["labels"] == serde_json::json!(labels(&warn)))
        })
        .await;
        n.shutdown().await;
    }

    /// A route muted by a time interval sends nothing while its sibling sends, and the
    /// alert shows which intervals mute which receivers (Alertmanager's `mutedBy`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_time_muted_route_is_shown_on_the_alert() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let routes = r#"  routes:
    - receiver: db
      matchers: ['alertname="Backup"']
      mute_time_intervals: [always]
      continue: true
    - receiver: boss
      matchers: ['alertname="Backup"']
      active_time_intervals: [never]
      continue: true
    - receiver: team
      matchers: ['alertname="Backup"']
      mute_time_intervals: [never]"#;
        let tail = r#"time_intervals:
  - name: always
    time_intervals: [{}]
  - name: never
    time_intervals: [{years: ['2000']}]"#;
        let n = start(
            &dir.path().join("n.db"),
            &webhook_config(addr, routes, tail),
        )
        .await;
        let a = [("alertname", "Backup"), ("instance", "nas-1")];
        n.put(vec![firing(&a)]).await.unwrap();
        eventually("the unmuted route's notification", || async {
            hook.count("/team") == 1
        })
        .await;
        let view = n.alert(alerting::notify::fingerprint(&labels(&a))).unwrap();
        assert_eq!(view.receivers, ["db", "boss", "team"]);
        assert_eq!(view.muted_by, ["always", "never"]);
        assert_eq!(view.muted_receivers, ["db", "boss"]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!((hook.count("/db"), hook.count("/boss")), (0, 0), "muted");
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silence_mutes_until_it_is_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, "", "")).await;
        let id = n
            .add_silence(NewSilence {
                matchers: parse_matchers(r#"{alertname="Backup", instance=~"nas-.*"}"#).unwrap(),
                starts_at: 0,
                ends_at: now_ms() + 3_600_000,
                created_by: "bob".into(),
                comment: "maintenance window".into(),
            })
            .await
            .unwrap();
        let a = [("alertname", "Backup"), ("instance", "nas-1")];
        n.put(vec![firing(&a)]).await.unwrap();
        let f = alerting::notify::fingerprint(&labels(&a));
        assert_eq!(n.alert(f).unwrap().silenced_by, std::slice::from_ref(&id));
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(hook.count("/team"), 0, "silenced");

        n.expire_silence(&id).await.unwrap();
        eventually("the notification after the silence", || async {
            hook.count("/team") == 1
        })
        .await;
        assert!(n.expire_silence(&id).await.is_err(), "already expired");
        assert_eq!(
            n.silences()[0].state(now_ms()),
            alerting::notify::SilenceState::Expired
        );
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silences_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let (_hook, addr) = Hook::start().await;
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, "", "")).await;
        let base = NewSilence {
            matchers: parse_matchers("alertname=X").unwrap(),
            starts_at: 0,
            ends_at: now_ms() + 60_000,
            created_by: "bob".into(),
            comment: "c".into(),
        };
        assert!(n.add_silence(base.clone()).await.is_ok());
        let cases = [
            NewSilence {
                matchers: vec![],
                ..base.clone()
            },
            NewSilence {
                matchers: parse_matchers("a=~\".*\"").unwrap(),
                ..base.clone()
            },
            NewSilence {
                ends_at: now_ms() - 1,
                ..base.clone()
            },
            NewSilence {
                starts_at: now_ms() + 120_000,
                ..base.clone()
            },
            NewSilence {
                created_by: " ".into(),
                ..base.clone()
            },
        ];
        for c in cases {
            let e = n.add_silence(c.clone()).await.unwrap_err();
            assert_eq!(e.kind(), alerting::notify::ErrorKind::BadData, "{c:?}");
        }
        assert_eq!(
            n.expire_silence("nope").await.unwrap_err().kind(),
            alerting::notify::ErrorKind::NotFound
        );
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unacknowledged_alerts_escalate_and_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let routes = r#"  routes:
    - matchers: ['team="db"']
      receiver: db
      escalate_after: 300ms
      escalate_to: boss
    - matchers: ['team="web"']
      receiver: team
      escalate_after: 3s
      escalate_to: boss"#;
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, routes, "")).await;
        // The web alert is acknowledged as soon as it is notified, well before 3s.
        let web = [("alertname", "Errors"), ("team", "web")];
        n.put(vec![firing(&web)]).await.unwrap();
        eventually("the web team notified", || async {
            hook.count("/team") == 1
        })
        .await;
        n.ack(
            alerting::notify::fingerprint(&labels(&web)),
            "carol",
            "mine",
            None,
        )
        .await
        .unwrap();

        let db = [("alertname", "Deadlocks"), ("team", "db")];
        n.put(vec![firing(&db)]).await.unwrap();
        eventually("the db team notified", || async { hook.count("/db") == 1 }).await;
        eventually("the escalation", || async { hook.count("/boss") == 1 }).await;
        let esc = &hook.at("/boss")[0].body;
        assert_eq!(esc["receiver"], "boss");
        assert_eq!(webhook_alerts(&hook.at("/boss")[0])[0].1, "Deadlocks");

        // Well past the web route's 3s: the acknowledged alert never escalated.
        tokio::time::sleep(Duration::from_millis(4000)).await;
        assert_eq!(hook.count("/boss"), 1);
        assert!(
            hook.at("/boss")
                .iter()
                .all(|r| r.body["alerts"][0]["labels"]["team"] == "db")
        );

        // The escalation receiver hears of the resolution.
        n.put(vec![resolved(&db)]).await.unwrap();
        eventually("the boss hears it resolved", || async {
            hook.at("/boss")
                .iter()
                .any(|r| r.body["status"] == "resolved")
        })
        .await;
        let log = n
            .notification_log(LogFilter {
                receiver: Some("boss".into()),
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert!(log.iter().all(|e| e.escalation));
        n.shutdown().await;
    }
}

/// Delivery: retries and restarts.
mod notify_delivery {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_that_is_down_gets_the_notification_when_back() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on this port yet: connections are refused.
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, "", "")).await;
        n.put(vec![firing(&[("alertname", "Down"), ("instance", "x")])])
            .await
            .unwrap();
        eventually("three failed attempts", || async {
            let log = n
                .notification_log(LogFilter {
                    only_failures: true,
                    ..LogFilter::default()
                })
                .await
                .unwrap();
            log.len() >= 3
        })
        .await;
        let hook = Hook::start_on(addr).await;
        eventually("delivery once the receiver is back", || async {
            hook.count("/team") == 1
        })
        .await;
        eventually("the delivery in the log", || async {
            n.notification_log(LogFilter::default())
                .await
                .unwrap()
                .iter()
                .any(|e| e.ok)
        })
        .await;
        let log = n.notification_log(LogFilter::default()).await.unwrap();
        let ok = log.iter().find(|e| e.ok).unwrap();
        assert!(ok.attempt >= 4, "{log:?}");
        assert!(
            log.iter()
                .filter(|e| !e.ok)
                .all(|e| e.error.as_deref().is_some_and(|m| m.contains("/team")))
        );
        // Then a 503 phase: retried as well.
        hook.down.store(true, Ordering::SeqCst);
        n.put(vec![firing(&[("alertname", "Down"), ("instance", "y")])])
            .await
            .unwrap();
        eventually("refused attempts", || async {
            hook.refused.load(Ordering::SeqCst) >= 2
        })
        .await;
        hook.down.store(false, Ordering::SeqCst);
        eventually("the update delivered", || async {
            hook.count("/team") == 2
        })
        .await;
        eventually("the outbox drained", || async {
            n.metrics().outbox_pending == 0
        })
        .await;
        let m = n.metrics();
        let wh = m
            .integrations
            .iter()
            .find(|c| c.integration == "webhook")
            .unwrap();
        assert_eq!(wh.sent, 2);
        assert!(wh.failed >= 5);
        assert_eq!(m.outbox_pending, 0);
        n.shutdown().await;
    }

    /// The issue's scenario with the default backoff (2 s doubling, capped at 5 min): a
    /// receiver down for a whole minute (the slowest test: about 70 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_down_for_a_minute_with_default_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = Config::parse(&webhook_config(addr, "", "")).unwrap();
        let n = Notifier::open(&dir.path().join("n.db"), cfg, Options::default())
            .await
            .unwrap();
        tokio::spawn(n.clone().run());
        n.put(vec![firing(&[("alertname", "Down")])]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let hook = Hook::start_on(addr).await;
        let end = Instant::now() + Duration::from_secs(120);
        while hook.count("/team") == 0 {
            assert!(
                Instant::now() < end,
                "not delivered within 2 minutes of coming back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_while_firing_neither_resends_nor_loses() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("n.db");
        let (hook, addr) = Hook::start().await;
        let yaml = webhook_config(addr, "", "");
        let a = [("alertname", "Restart"), ("instance", "r1")];

        // Sent once, then a restart: not sent again within repeat_interval (1h).
        let n = start(&db, &yaml).await;
        n.put(vec![firing(&a)]).await.unwrap();
        eventually("the first notification", || async {
            hook.count("/team") == 1
        })
        .await;
        n.shutdown().await;
        drop(n);
        let n = start(&db, &yaml).await;
        assert_eq!(
            n.alerts(&[]).len(),
            1,
            "the firing alert survived the restart"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(hook.count("/team"), 1, "no re-send after the restart");

        // Its resolution, decided before a restart but not yet delivered (the receiver
        // is down), is delivered after it.
        hook.down.store(true, Ordering::SeqCst);
        n.put(vec![resolved(&a)]).await.unwrap();
        eventually("a refused attempt", || async {
            hook.refused.load(Ordering::SeqCst) >= 1
        })
        .await;
        n.shutdown().await;
        drop(n);
        hook.down.store(false, Ordering::SeqCst);
        let n = start(&db, &yaml).await;
        eventually("the resolution after the restart", || async {
            hook.count("/team") == 2
        })
        .await;
        assert_eq!(hook.at("/team")[1].body["status"], "resolved");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(hook.count("/team"), 2, "delivered once");
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_before_the_first_flush_still_notifies() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("n.db");
        let (hook, addr) = Hook::start().await;
        let yaml = webhook_config(addr, "", "").replace("group_wait: 100ms", "group_wait: 1h");
        let n = start(&db, &yaml).await;
        let mut a = firing(&[("alertname", "Early")]);
        a.starts_at = now_ms() - 7_200_000; // older than group_wait: flushed right away
        n.shutdown().await;
        // Accepted while the loops are stopped; the restart must notify it.
        n.put(vec![a]).await.unwrap();
        drop(n);
        let n = start(&db, &yaml).await;
        eventually("notified after the restart", || async {
            hook.count("/team") == 1
        })
        .await;
        n.shutdown().await;
    }
}

/// History, notification log, reload, metrics.
mod notify_state {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_records_every_state_change_and_is_queryable() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, "", "")).await;
        let t0 = now_ms();
        let a = [("alertname", "Hist"), ("instance", "h1")];
        let b = [("alertname", "Hist"), ("instance", "h2")];
        n.put(vec![firing(&a), firing(&b)]).await.unwrap();
        eventually("notified", || async { hook.count("/team") == 1 }).await;
        let fa = alerting::notify::fingerprint(&labels(&a));
        n.ack(fa, "dave", "on it", Some(Duration::from_secs(600)))
            .await
            .unwrap();
        n.put(vec![resolved(&a)]).await.unwrap();
        // An alert whose end passes without an update resolves by itself.
        let mut short = firing(&[("alertname", "Hist"), ("instance", "h3")]);
        short.ends_at = Some(now_ms() + 300);
        n.put(vec![short]).await.unwrap();

        eventually("h3 resolved by time", || async {
            let h = n
                .history(HistoryFilter {
                    matchers: parse_matchers("instance=h3").unwrap(),
                    ..HistoryFilter::default()
                })
                .await
                .unwrap();
            h.iter().any(|e| e.to == "resolved")
        })
        .await;
        let h = n
            .history(HistoryFilter {
                matchers: parse_matchers("instance=h1").unwrap(),
                since: Some(t0),
                ..HistoryFilter::default()
            })
            .await
            .unwrap();
        let steps: Vec<(String, String)> = h
            .iter()
            .rev()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        assert_eq!(
            steps,
            [
                ("inactive".to_string(), "firing".to_string()),
                ("firing".to_string(), "acknowledged".to_string()),
                ("firing".to_string(), "resolved".to_string()),
            ]
        );
        assert!(h[1].detail.contains("dave") && h[1].detail.contains("on it"));
        let all = n
            .history(HistoryFilter {
                fingerprint: None,
                ..HistoryFilter::default()
            })
            .await
            .unwrap();
        assert!(all.len() >= 6, "{all:?}");
        let none = n
            .history(HistoryFilter {
                until: Some(t0 - 1),
                ..HistoryFilter::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
        let limited = n
            .history(HistoryFilter {
                limit: 2,
                ..HistoryFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(limited.len(), 2);
        let fb = alerting::notify::fingerprint(&labels(&b));
        let only_b = n
            .history(HistoryFilter {
                fingerprint: Some(fb),
                ..HistoryFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(only_b.len(), 1);
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_and_log_are_pruned_past_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("n.db");
        let (hook, addr) = Hook::start().await;
        let yaml = webhook_config(addr, "", "");
        let n = start(&db, &yaml).await;
        n.put(vec![firing(&[("alertname", "Old")])]).await.unwrap();
        eventually("notified and logged", || async {
            hook.count("/team") == 1
                && n.notification_log(LogFilter::default())
                    .await
                    .unwrap()
                    .len()
                    == 1
        })
        .await;
        n.shutdown().await;
        drop(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Reopened with a 1 ms retention: pruning runs when the loops start.
        let short = Options {
            history_retention: Duration::from_millis(1),
            log_retention: Duration::from_millis(1),
            ..opts()
        };
        let n = Notifier::open(&db, Config::parse(&yaml).unwrap(), short)
            .await
            .unwrap();
        tokio::spawn(n.clone().run());
        eventually("history and log pruned", || async {
            n.history(HistoryFilter::default())
                .await
                .unwrap()
                .is_empty()
                && n.notification_log(LogFilter::default())
                    .await
                    .unwrap()
                    .is_empty()
        })
        .await;
        // The firing alert is state, not history: it stays, and is not re-sent.
        assert_eq!(n.alerts(&[]).len(), 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(hook.count("/team"), 1);
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_keeps_group_state_and_reroutes() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let yaml = webhook_config(addr, "", "");
        let n = start(&dir.path().join("n.db"), &yaml).await;
        let a = [("alertname", "Reload"), ("team", "db")];
        n.put(vec![firing(&a)]).await.unwrap();
        eventually("notified", || async { hook.count("/team") == 1 }).await;
        // The same config again: nothing is re-sent.
        n.reload(Config::parse(&yaml).unwrap()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(hook.count("/team"), 1);
        // A new route for team=db: the db receiver gets it.
        let routed = webhook_config(
            addr,
            "  routes:\n    - matchers: [team=db]\n      receiver: db",
            "",
        );
        n.reload(Config::parse(&routed).unwrap()).await.unwrap();
        eventually("the new route's receiver", || async {
            hook.count("/db") == 1
        })
        .await;
        assert_eq!(
            n.alert(alerting::notify::fingerprint(&labels(&a)))
                .unwrap()
                .receivers,
            ["db"]
        );
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_rejects_invalid_alerts_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (_hook, addr) = Hook::start().await;
        let n = start(&dir.path().join("n.db"), &webhook_config(addr, "", "")).await;
        let bad = Alert::default();
        let r = n
            .put(vec![firing(&[("alertname", "Ok")]), bad])
            .await
            .unwrap();
        assert_eq!(r.accepted, 1);
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].0, 1);
        // A resolved alert never seen firing is accepted but not kept.
        n.put(vec![resolved(&[("alertname", "Ghost")])])
            .await
            .unwrap();
        assert_eq!(n.alerts(&[]).len(), 1);
        let m = n.metrics();
        assert_eq!(m.alerts_received, 2);
        assert_eq!(m.alerts_invalid, 1);
        assert_eq!(m.alerts_firing, 1);
        assert!(n.ack(Fingerprint(42), "x", "", None).await.is_err());
        n.shutdown().await;
    }
}

/// Alertmanager's time intervals against the wall clock: intervals are built around
/// the current time, and "the interval ends" by reloading the same config with the
/// interval moved into the past (the exact end-of-interval timing is covered by the
/// dispatcher's unit test, which controls the clock).
mod notify_time_intervals {
    use super::*;

    /// `time_intervals` with `window`: today (UTC) from a minute before now to three
    /// minutes after (clamped to the day).
    fn intervals_around_now() -> String {
        let mut sod = now_ms().rem_euclid(86_400_000) / 1000;
        if sod > 86_400 - 20 {
            // Too close to midnight for a window that cannot cross it: wait.
            std::thread::sleep(Duration::from_secs((86_400 - sod + 1) as u64));
            sod = now_ms().rem_euclid(86_400_000) / 1000;
        }
        let minute = sod / 60;
        let hhmm = |m: i64| format!("{:02}:{:02}", m / 60, m % 60);
        format!(
            "time_intervals:\n  - name: window\n    time_intervals:\n      - times:\n          - start_time: '{}'\n            end_time: '{}'\n        location: UTC\n",
            hhmm((minute - 1).max(0)),
            hhmm((minute + 3).min(24 * 60)),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_muted_route_sends_nothing_while_muted_and_sends_after() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        let routes = r#"  routes:
    - matchers: [team="db"]
      receiver: db
      mute_time_intervals: [window]
    - matchers: [team="web"]
      receiver: boss
      active_time_intervals: [window]"#;
        let yaml = webhook_config(addr, routes, &intervals_around_now());
        let n = start(&dir.path().join("n.db"), &yaml).await;
        let db = [("alertname", "Replication"), ("team", "db")];
        n.put(vec![
            firing(&db),
            firing(&[("alertname", "Slow"), ("team", "web")]),
        ])
        .await
        .unwrap();
        // The active route sends; the muted one, flushed every 200 ms, does not.
        eventually("the active route's notification", || async {
            hook.count("/boss") == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(hook.count("/db"), 0, "nothing while muted");
        assert_eq!(hook.count("/team"), 0);

        // The interval is over: the alert goes out at the next flush, and once.
        let past = yaml.replace(
            "        location: UTC\n",
            "        location: UTC\n        years: ['2000']\n",
        );
        assert_ne!(past, yaml);
        n.reload(Config::parse(&past).unwrap()).await.unwrap();
        eventually("the muted route's notification", || async {
            hook.count("/db") == 1
        })
        .await;
        assert_eq!(
            webhook_alerts(&hook.at("/db")[0]),
            [(
                "firing".to_string(),
                "Replication".to_string(),
                String::new()
            )]
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(hook.count("/db"), 1);
        // Outside its active interval now, the web route stays quiet: nothing new
        // would be sent anyway, and the resolution is not sent either.
        n.put(vec![resolved(&[("alertname", "Slow"), ("team", "web")])])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(hook.count("/boss"), 1);
        n.shutdown().await;
    }
}

/// Alertmanager notification templates in receivers: a `templates:` file found
/// relative to the config file, templated Slack and DingTalk fields, and a template
/// that fails at send time (the notification still goes out, with the built-in text,
/// and the log says why).
mod notify_templates {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn templated_fields_are_rendered_and_a_failing_one_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, addr) = Hook::start().await;
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(
            dir.path().join("templates/team.tmpl"),
            r#"{{ define "team.text" }}{{ range .Alerts }}*{{ .Labels.severity }}* {{ .Annotations.summary }}
{{ range .Labels.SortedPairs }} • {{ .Name }}: `{{ .Value }}`
{{ end }}{{ end }}{{ end }}"#,
        )
        .unwrap();
        let yaml = format!(
            r#"
templates: ['templates/*.tmpl', 'nothing-here/*.tmpl']
route:
  receiver: chat
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 200ms
receivers:
  - name: chat
    slack_configs:
      - api_url: 'http://{addr}/slack'
        title: '[{{{{ .Status | toUpper }}}}{{{{ if eq .Status "firing" }}}}:{{{{ .Alerts.Firing | len }}}}{{{{ end }}}}] {{{{ .CommonLabels.alertname }}}}'
        text: '{{{{ template "team.text" . }}}}'
      - api_url: 'http://{addr}/broken'
        title: '{{{{ (index .Alerts 5).Labels.alertname }}}}'
    dingtalk_configs:
      - url: 'http://{addr}/dingtalk?access_token=tok'
        secret: '{DING_SECRET}'
        title: '{{{{ .CommonLabels.alertname }}}} on {{{{ .CommonLabels.instance }}}}'
        text: '{{{{ range .Alerts }}}}- {{{{ .Labels.instance }}}} since {{{{ .StartsAt.Format "15:04" }}}}{{{{ end }}}}'
"#
        );
        let cfg_path = dir.path().join("minos.yml");
        std::fs::write(&cfg_path, &yaml).unwrap();
        let cfg = Config::load(&cfg_path).unwrap_or_else(|e| panic!("config: {e}"));
        let n = Notifier::open(&dir.path().join("n.db"), cfg, opts())
            .await
            .unwrap();
        tokio::spawn(n.clone().run());

        n.put(vec![firing(&[
            ("alertname", "DiskFull"),
            ("instance", "db-01"),
            ("severity", "critical"),
        ])])
        .await
        .unwrap();
        eventually("one request per integration", || async {
            ["/slack", "/broken", "/dingtalk"]
                .iter()
                .all(|p| hook.count(p) == 1)
        })
        .await;

        let att = &hook.at("/slack")[0].body["attachments"][0];
        assert_eq!(att["title"], "[FIRING:1] DiskFull");
        assert_eq!(
            att["text"],
            "*critical* something is wrong\n • alertname: `DiskFull`\n • instance: `db-01`\n • severity: `critical`\n"
        );
        let ding = &hook.at("/dingtalk")[0].body["markdown"];
        assert_eq!(ding["title"], "DiskFull on db-01");
        assert!(
            ding["text"]
                .as_str()
                .unwrap()
                .starts_with("#### DiskFull on db-01\n\n- db-01 since "),
            "{ding}"
        );

        // The broken title fell back to the built-in one; the log says why.
        let broken = &hook.at("/broken")[0].body["attachments"][0];
        assert_eq!(broken["title"], "[FIRING:1] DiskFull (db-01 critical)");
        eventually("the deliveries are logged", || {
            let n = n.clone();
            async move {
                n.notification_log(LogFilter::default())
                    .await
                    .unwrap()
                    .len()
                    == 3
            }
        })
        .await;
        let log = n.notification_log(LogFilter::default()).await.unwrap();
        let failed: Vec<_> = log.iter().filter(|e| e.error.is_some()).collect();
        assert_eq!(failed.len(), 1, "{log:?}");
        let e = failed[0].error.as_deref().unwrap();
        assert!(
            e.contains("built-in text")
                && e.contains("template title")
                && e.contains("index out of range"),
            "{e}"
        );
        assert_eq!(
            (failed[0].integration.as_str(), failed[0].index),
            ("slack", 1)
        );
        assert_eq!(
            n.metrics()
                .integrations
                .iter()
                .find(|c| c.integration == "slack")
                .unwrap()
                .sent,
            2
        );
        n.shutdown().await;
    }

    #[test]
    fn bad_templates_are_refused_when_the_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.tmpl"),
            "\n{{ define \"x\" }}{{ if }}{{ end }}\n",
        )
        .unwrap();
        let base = "route:\n  receiver: r\nreceivers:\n  - name: r\n    slack_configs:\n      - api_url: http://127.0.0.1:1/x\n";
        let load = |yaml: &str| {
            let p = dir.path().join("c.yml");
            std::fs::write(&p, yaml).unwrap();
            Config::load(&p).unwrap_err().to_string()
        };
        let e = load(&format!("templates: ['*.tmpl']\n{base}"));
        assert!(
            e.contains("templates[0]") && e.contains("bad.tmpl:2:"),
            "{e}"
        );
        let e = load(&format!(
            "{base}        title: '{{{{ template \"nope\" . }}}}'\n"
        ));
        assert!(
            e.contains("receivers[0].slack_configs[0].title")
                && e.contains("\"nope\" is not defined"),
            "{e}"
        );
        let e = load(&format!(
            "{base}        text: '{{{{ .CommonLabels.SortedPairs.Nmae }}}}'\n"
        ));
        assert!(
            e.contains("receivers[0].slack_configs[0].text")
                && e.contains("can't evaluate field Nmae"),
            "{e}"
        );
        let e = load(&format!("{base}        text: '{{{{ humanize 1 }}}}'\n"));
        assert!(e.contains("function \"humanize\" not defined"), "{e}");
    }
}

/// Bounds on what the notifier takes: oversized labels and annotations are refused, and
/// past `max_alerts` held alerts a new one is refused while known ones still update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_alerts_and_alerts_past_the_bound_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "route:\n  receiver: none\nreceivers:\n  - name: none\n";
    let bounded = Options {
        max_alerts: 2,
        ..opts()
    };
    let n = Notifier::open(
        &dir.path().join("n.db"),
        Config::parse(yaml).unwrap(),
        bounded,
    )
    .await
    .unwrap();
    let long = "x".repeat(5000);
    let mut big = firing(&[("alertname", "Big")]);
    big.annotations
        .insert("description".into(), "y".repeat(70_000));
    let r = n
        .put(vec![
            firing(&[("alertname", "A")]),
            firing(&[("alertname", "B"), ("instance", &long)]),
            big,
            firing(&[("alertname", "C")]),
            firing(&[("alertname", "D")]),
            firing(&[("alertname", "A")]),
        ])
        .await
        .unwrap();
    let refused: Vec<usize> = r.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(refused, [1, 2, 4], "{r:?}");
    assert!(r.rejected[0].1.contains("instance"), "{r:?}");
    assert!(r.rejected[1].1.contains("description"), "{r:?}");
    assert!(r.rejected[2].1.contains("2 alerts are held"), "{r:?}");
    assert_eq!(n.alerts(&[]).len(), 2);
}
