//! Scraping: the real node_exporter, in-test targets that misbehave (slow, huge,
//! malformed, flapping), relabeling, file and inventory discovery, and reloads.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{Server, client, json, send, urlencode};

/// What an in-test target answers.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    delay: Duration,
}

/// An HTTP target on loopback whose answer the test changes.
struct Target {
    port: u16,
    answer: Arc<Mutex<Answer>>,
}

impl Target {
    fn start(body: &str) -> Target {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
        }));
        let a = answer.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let a = a.clone();
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    let mut req = Vec::new();
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let ans = a.lock().map(|g| g.clone()).ok();
                    let Some(ans) = ans else { return };
                    std::thread::sleep(ans.delay);
                    let head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        ans.status,
                        ans.body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(ans.body.as_bytes());
                });
            }
        });
        Target { port, answer }
    }

    fn set(&self, f: impl FnOnce(&mut Answer)) {
        if let Ok(mut g) = self.answer.lock() {
            f(&mut g);
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn query(s: &Server, q: &str) -> serde_json::Value {
    let (code, body) = s.get(&format!("/api/v1/query?query={}", urlencode(q)));
    assert_eq!(code, 200, "{body}");
    json(&body)["data"]["result"].clone()
}

/// Polls `q` until `ok` holds for its result.
fn wait_until(s: &Server, q: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = query(s, q);
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{q}: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn value_is(v: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |r| r[0]["value"][1] == v
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

fn reload(s: &Server) -> (u16, String) {
    let r = client().post(s.url("/-/reload")).send().expect("reload");
    let code = r.status().as_u16();
    (code, r.text().unwrap_or_default())
}

struct NodeExporter(Child);

impl NodeExporter {
    /// The Debian package's node_exporter on a free loopback port, with `extra` flags.
    fn start(extra: &[String]) -> (NodeExporter, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let bin = ["prometheus-node-exporter", "node_exporter"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("node_exporter (apt-get install prometheus-node-exporter)");
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node_exporter");
        (NodeExporter(child), port)
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_real_node_exporter_is_scraped_with_up_and_scrape_metrics() {
    let (_ne, port) = NodeExporter::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("scrape.yml");
    write(
        &cfg,
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels: {{env: test}}\n"
        ),
    );
    let cfg_s = cfg.display().to_string();
    let s = Server::start(&dir.path().join("data"), &["--scrape.config", &cfg_s]);
    let instance = format!("127.0.0.1:{port}");
    wait_until(
        &s,
        &format!(r#"up{{job="node",instance="{instance}",env="test"}}"#),
        value_is("1"),
    );
    let load = query(&s, r#"node_load1{job="node",env="test"}"#);
    assert_eq!(load.as_array().map(Vec::len), Some(1), "{load}");
    let n: f64 = query(&s, r#"scrape_samples_scraped{job="node"}"#)[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(n > 300.0, "{n} samples");
    wait_until(&s, r#"scrape_series_added{job="node"}"#, value_is("0"));
    for name in [
        "scrape_duration_seconds",
        "scrape_samples_post_metric_relabeling",
    ] {
        assert_eq!(query(&s, name).as_array().map(Vec::len), Some(1), "{name}");
    }
    let (code, body) = s.get("/api/v1/targets");
    assert_eq!(code, 200);
    let t = &json(&body)["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{t}");
    assert_eq!(t["scrapePool"], "node");
    assert_eq!(t["labels"]["instance"], instance.as_str());
}

#[test]
fn misbehaving_targets_fail_cleanly_and_their_series_go_stale() {
    let good = Target::start(
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 2\njob_from_target{job=\"inner\"} 7\n",
    );
    let slow = Target::start("s 1\n");
    slow.set(|a| a.delay = Duration::from_secs(3));
    let huge = Target::start(&"h 1\n".repeat(50_000));
    let bad = Target::start("ok 1\nnot valid {\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("scrape.yml");
    write(
        &cfg,
        &format!(
            "scrape_configs:\n  - job_name: t\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n    body_size_limit: 100KB\n    sample_limit: 100\n    metric_relabel_configs:\n      - source_labels: [x]\n        regex: '2'\n        action: drop\n    static_configs:\n      - targets: ['{}', '{}', '{}', '{}']\n  - job_name: honor\n    honor_labels: true\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n    static_configs:\n      - targets: ['{}']\n",
            good.addr(),
            slow.addr(),
            huge.addr(),
            bad.addr(),
            good.addr()
        ),
    );
    let cfg_s = cfg.display().to_string();
    let s = Server::start(&dir.path().join("data"), &["--scrape.config", &cfg_s]);
    wait_until(
        &s,
        &format!(r#"up{{instance="{}"}}"#, good.addr()),
        value_is("1"),
    );
    for t in [&slow, &huge, &bad] {
        wait_until(
            &s,
            &format!(r#"up{{instance="{}"}}"#, t.addr()),
            value_is("0"),
        );
    }
    // Nothing of a failed scrape is stored.
    assert_eq!(query(&s, "ok").as_array().map(Vec::len), Some(0));
    assert_eq!(query(&s, "h").as_array().map(Vec::len), Some(0));
    // Relabeling dropped x="2"; the target's job wins, the scraped one is kept aside.
    assert_eq!(query(&s, r#"a{job="t"}"#).as_array().map(Vec::len), Some(1));
    let j = query(&s, r#"job_from_target{exported_job="inner"}"#);
    assert_eq!(j[0]["metric"]["job"], "t", "{j}");
    // With honor_labels the scraped job stays, and nothing is renamed.
    wait_until(&s, r#"up{job="honor"}"#, value_is("1"));
    let h = query(&s, r#"job_from_target{job="inner"}"#);
    assert_eq!(h.as_array().map(Vec::len), Some(1), "{h}");
    assert!(h[0]["metric"].get("exported_job").is_none(), "{h}");
    assert_eq!(
        query(&s, r#"a{job="honor"}"#).as_array().map(Vec::len),
        Some(2),
        "no metric relabeling in that job"
    );
    let (_, body) = s.get("/api/v1/targets");
    let targets = json(&body)["data"]["activeTargets"].clone();
    let err_of = |addr: &str| {
        targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["labels"]["instance"] == addr)
            .map(|t| t["lastError"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert!(
        err_of(&slow.addr()).contains("timed out") || err_of(&slow.addr()).contains("timeout"),
        "{targets}"
    );
    assert!(err_of(&huge.addr()).contains("limit"), "{targets}");
    assert!(err_of(&bad.addr()).contains("line 2"), "{targets}");
    // Flapping: a series that goes away is stale at once, not for five minutes.
    good.set(|a| a.body = "a{x=\"1\"} 1\n".into());
    wait_until(&s, "job_from_target", |r| {
        r.as_array().map(Vec::len) == Some(0)
    });
    good.set(|a| a.status = 500);
    wait_until(
        &s,
        &format!(r#"up{{instance="{}"}}"#, good.addr()),
        value_is("0"),
    );
    wait_until(&s, "a", |r| r.as_array().map(Vec::len) == Some(0));
}

#[test]
fn reloads_keep_the_old_config_when_the_new_one_is_invalid() {
    let t1 = Target::start("one 1\n");
    let t2 = Target::start("two 2\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("scrape.yml");
    let job = |name: &str, addr: &str| {
        format!(
            "  - job_name: {name}\n    scrape_interval: 300ms\n    scrape_timeout: 200ms\n    static_configs:\n      - targets: ['{addr}']\n"
        )
    };
    write(
        &cfg,
        &format!("scrape_configs:\n{}", job("first", &t1.addr())),
    );
    let cfg_s = cfg.display().to_string();
    let s = Server::start(&dir.path().join("data"), &["--scrape.config", &cfg_s]);
    wait_until(&s, r#"one{job="first"}"#, value_is("1"));
    // Invalid: a timeout longer than the interval, on line 5.
    write(
        &cfg,
        &format!(
            "scrape_configs:\n{}  - job_name: second\n    scrape_interval: 1s\n    scrape_timeout: 5s\n",
            job("first", &t1.addr())
        ),
    );
    let (code, text) = reload(&s);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("line"), "{text}");
    std::thread::sleep(Duration::from_millis(700));
    wait_until(&s, r#"up{job="first"}"#, value_is("1"));
    // Valid: the second job starts, by /-/reload...
    write(
        &cfg,
        &format!(
            "scrape_configs:\n{}{}",
            job("first", &t1.addr()),
            job("second", &t2.addr())
        ),
    );
    let (code, text) = reload(&s);
    assert_eq!(code, 200, "{text}");
    wait_until(&s, r#"two{job="second"}"#, value_is("2"));
    // ... and by SIGHUP; a removed job's series go stale.
    write(
        &cfg,
        &format!("scrape_configs:\n{}", job("second", &t2.addr())),
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    wait_until(&s, r#"up{job="first"}"#, |r| {
        r.as_array().map(Vec::len) == Some(0)
    });
    wait_until(&s, r#"one"#, |r| r.as_array().map(Vec::len) == Some(0));
}

#[test]
fn targets_come_from_files_and_from_the_inventory() {
    let t1 = Target::start("f 1\n");
    let t2 = Target::start("f 2\n");
    let inv_target = Target::start("from_inventory 1\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let targets = dir.path().join("targets.json");
    write(
        &targets,
        &format!(
            r#"[{{"targets": ["{}"], "labels": {{"dc": "eu"}}}}]"#,
            t1.addr()
        ),
    );
    let cfg = dir.path().join("scrape.yml");
    write(
        &cfg,
        &format!(
            "scrape_configs:\n  - job_name: files\n    scrape_interval: 300ms\n    scrape_timeout: 200ms\n    file_sd_configs:\n      - files: ['targets.json']\n  - job_name: inv\n    scrape_interval: 300ms\n    scrape_timeout: 200ms\n    inventory_sd_configs:\n      - selector: /sre\n        port: {}\n    relabel_configs:\n      - source_labels: [__meta_minos_team]\n        target_label: team\n      - source_labels: [__meta_minos_hostname]\n        target_label: host\n",
            inv_target.port
        ),
    );
    let data = dir.path().join("data");
    let cfg_s = cfg.display().to_string();
    let s = Server::start(&data, &["--scrape.config", &cfg_s]);
    wait_until(&s, r#"f{job="files",dc="eu"}"#, value_is("1"));
    // A second target in the file is picked up without a reload.
    write(
        &targets,
        &format!(
            r#"[{{"targets": ["{}", "{}"], "labels": {{"dc": "eu"}}}}]"#,
            t1.addr(),
            t2.addr()
        ),
    );
    wait_until(&s, r#"f{job="files"}"#, |r| {
        r.as_array().map(Vec::len) == Some(2)
    });
    // A host placed under /sre becomes a target, with its tree labels.
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .expect("token")
        .trim()
        .to_string();
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        "/api/ops/v1/tree/nodes",
        &admin,
        serde_json::json!({"name": "sre", "kind": "team"}),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        "/api/ops/v1/hosts",
        &admin,
        serde_json::json!({"hostname": "127.0.0.1", "nodes": ["/sre"]}),
    );
    assert!(code == 200 || code == 201, "{v}");
    let r = wait_until(&s, r#"from_inventory{job="inv"}"#, value_is("1"));
    assert_eq!(r[0]["metric"]["team"], "sre", "{r}");
    assert_eq!(r[0]["metric"]["host"], "127.0.0.1", "{r}");
}

#[test]
fn https_targets_are_scraped_with_the_jobs_tls_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    let ext = dir.path().join("ext.cnf");
    write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    );
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let web = dir.path().join("web.yml");
    write(
        &web,
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let (_ne, port) = NodeExporter::start(&[format!("--web.config.file={}", web.display())]);
    let cfg = dir.path().join("scrape.yml");
    let job = |name: &str, tls: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n{tls}    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        )
    };
    write(
        &cfg,
        &format!(
            "scrape_configs:\n{}{}{}",
            job("trusted", "    tls_config:\n      ca_file: ca.pem\n"),
            job("untrusted", ""),
            job(
                "skip",
                "    tls_config:\n      insecure_skip_verify: true\n"
            ),
        ),
    );
    let cfg_s = cfg.display().to_string();
    let s = Server::start(&dir.path().join("data"), &["--scrape.config", &cfg_s]);
    wait_until(&s, r#"up{job="trusted"}"#, value_is("1"));
    wait_until(&s, r#"up{job="skip"}"#, value_is("1"));
    wait_until(&s, r#"up{job="untrusted"}"#, value_is("0"));
    let (_, body) = s.get("/api/v1/targets");
    let v = json(&body);
    let untrusted = v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["scrapePool"] == "untrusted")
        .cloned()
        .unwrap_or_default();
    assert!(
        untrusted["lastError"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("certificate")),
        "{untrusted}"
    );
    assert_eq!(
        query(&s, r#"node_load1{job="trusted"}"#)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
