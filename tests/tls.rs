//! HTTPS end to end: a server with a certificate from a private CA (made here with
//! rcgen), an agent that enrolls and takes work over `https://` and `wss://` trusting
//! that CA, the `minos` client commands over HTTPS, plain HTTP refused, an agent that
//! does not trust the CA refused, a bad certificate refused at start and on reload.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{agent_with, eventually};
use crate::util::{free_port, minos};

/// A CA and a server certificate for 127.0.0.1 and localhost that it signed, written
/// as PEM files in `dir`: `ca.pem`, `cert.pem`, `key.pem`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Minos test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("ca.pem");
    std::fs::write(&paths.1, cert.pem()).expect("cert.pem");
    std::fs::write(&paths.2, key.serialize_pem()).expect("key.pem");
    paths
}

/// A `minos server` over HTTPS; killed when dropped.
struct TlsServer {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
    log: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsServer {
    fn start(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> TlsServer {
        let port = free_port();
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_minos"))
            .args(["server", "--data"])
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls.cert-file")
            .arg(cert)
            .arg("--tls.key-file")
            .arg(key)
            .env("MINOS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn minos");
        let ca_pem = std::fs::read(ca).expect("ca");
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca"))
            .build()
            .expect("client");
        let s = TlsServer {
            child,
            base: format!("https://127.0.0.1:{port}"),
            client,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = s.client.get(format!("{}/-/ready", s.base)).send()
                && r.status().is_success()
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the HTTPS server did not become ready:\n{}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn token(&self, dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join("data").join(name))
            .expect("token")
            .trim()
            .to_string()
    }

    fn hosts(&self, admin: &str) -> Value {
        self.client
            .get(format!("{}/api/ops/v1/hosts", self.base))
            .bearer_auth(admin)
            .send()
            .and_then(|r| r.json::<Value>())
            .unwrap_or(Value::Null)
    }
}

#[test]
fn agents_and_clients_work_over_https_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let s = TlsServer::start(dir.path(), &ca, &cert, &key);
    let admin = s.token(dir.path(), "admin.token");
    let enroll = s.token(dir.path(), "enroll.token");
    let ca_arg = ca.to_str().expect("path").to_string();

    // An agent that trusts the CA enrolls, heartbeats and pushes over HTTPS.
    let _good = agent_with(
        dir.path(),
        &s.base,
        "tls-web-1",
        Some(&enroll),
        &["--tls.ca-file", &ca_arg],
    );
    eventually("the agent online over wss://", || {
        let v = s.hosts(&admin);
        let online = v["data"]["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["hostname"] == "tls-web-1" && h["agent"]["status"] == "online");
        if online { Ok(()) } else { Err(v.to_string()) }
    });
    // An agent that does not trust it never enrolls, and says why.
    let _bad = agent_with(dir.path(), &s.base, "tls-web-2", Some(&enroll), &[]);
    eventually("the untrusting agent's certificate error", || {
        let log = std::fs::read_to_string(dir.path().join("tls-web-2.log")).unwrap_or_default();
        if log.to_ascii_lowercase().contains("certificate") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let v = s.hosts(&admin);
    assert!(!v.to_string().contains("tls-web-2"), "{v}");

    // A task over the channel; `minos run` follows it over HTTPS.
    let script = dir.path().join("hello.sh");
    std::fs::write(&script, "echo over-tls\n").expect("script");
    let (code, out, err) = minos(&[
        "run",
        "--server",
        &s.base,
        "--token",
        &admin,
        "--tls.ca-file",
        &ca_arg,
        "--target",
        "tls-web-1",
        "--script",
        script.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("over-tls"), "{out}");
    // Metrics pushed by the agent are queryable over HTTPS.
    eventually("the agent's metrics", || {
        let (code, out, err) = minos(&[
            "query",
            "--server",
            &s.base,
            "--tls.ca-file",
            &ca_arg,
            "node_load1{instance=\"tls-web-1\"}",
        ]);
        if code == 0 && out.contains("tls-web-1") {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    });
    // Without the CA the client refuses the server's certificate.
    let (code, _, err) = minos(&["hosts", "list", "--server", &s.base, "--token", &admin]);
    assert_ne!(code, 0);
    assert!(err.to_ascii_lowercase().contains("certificate"), "{err}");

    // Plain HTTP on the HTTPS port gets no answer.
    let plain = crate::util::client()
        .get(s.base.replace("https://", "http://") + "/-/ready")
        .send();
    assert!(
        plain.is_err() || !plain.is_ok_and(|r| r.status().is_success()),
        "plain HTTP answered"
    );

    // A reload with a broken key is refused and the running certificate stays.
    std::fs::write(&key, "not a key\n").expect("key");
    let r = s
        .client
        .post(format!("{}/-/reload", s.base))
        .send()
        .expect("reload");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().unwrap_or_default();
    assert!(text.contains("--tls.key-file"), "{text}");
    let r = s
        .client
        .get(format!("{}/-/ready", s.base))
        .send()
        .expect("ready");
    assert!(r.status().is_success());

    // A renewed pair (from another CA here) is taken by a reload: new connections get
    // it.
    let renewed = dir.path().join("renewed");
    std::fs::create_dir_all(&renewed).expect("dir");
    let (ca2, cert2, key2) = certificates(&renewed);
    std::fs::copy(&cert2, &cert).expect("cert");
    std::fs::copy(&key2, &key).expect("key");
    let r = s
        .client
        .post(format!("{}/-/reload", s.base))
        .send()
        .expect("reload");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    let trusting = |ca: &Path| {
        let pem = std::fs::read(ca).expect("ca");
        reqwest::blocking::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca"))
            .tls_built_in_root_certs(false)
            .build()
            .expect("client")
            .get(format!("{}/-/ready", s.base))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    };
    assert!(trusting(&ca2), "the renewed certificate is served");
    assert!(!trusting(&ca), "the old one is not");
}

#[test]
fn a_bad_certificate_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "junk\n").expect("cert");
    let data = dir.path().join("data");
    let (code, _, err) = minos(&[
        "server",
        "--data",
        data.to_str().expect("path"),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--tls.cert-file",
        cert.to_str().expect("path"),
        "--tls.key-file",
        dir.path().join("key.pem").to_str().expect("path"),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--tls.cert-file") && err.contains("cert.pem"),
        "{err}"
    );
    let (code, _, err) = minos(&[
        "server",
        "--data",
        data.to_str().expect("path"),
        "--tls.cert-file",
        cert.to_str().expect("path"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--tls.key-file"), "{err}");
}
