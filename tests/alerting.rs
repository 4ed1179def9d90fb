//! Alerting end to end: rule files and API groups in a real server, alerts going
//! pending and firing on pushed data, the `ALERTS` series and recording rules in the
//! TSDB, a restart that neither forgets a firing alert nor starts its `for` again,
//! reloads that keep the running rules when a file is bad, and `HostLost` from the
//! agents' heartbeats.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::{agent, eventually, started, wait_status};
use crate::util::{Server, call, cli, free_port, send, urlencode};

fn write_rules(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).expect("rules dir");
    std::fs::write(dir.join(name), text).expect("rule file");
}

fn alerts(s: &Server) -> Vec<Value> {
    let (code, body) = s.get("/api/v1/alerts");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["data"]["alerts"].as_array().cloned().unwrap_or_default()
}

fn alert_state(s: &Server, name: &str) -> Option<(String, Value)> {
    alerts(s)
        .into_iter()
        .find(|a| a["labels"]["alertname"] == name)
        .map(|a| (a["state"].as_str().unwrap_or("").to_string(), a))
}

fn query(s: &Server, q: &str) -> Vec<Value> {
    let (code, body) = s.get(&format!("/api/v1/query?query={}", urlencode(q)));
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Pushes `stock_items{sku="A1"} LEVEL` (and `sku="B2"` at 7) every 200 ms, through the
/// text import endpoint, until dropped. LEVEL starts at 0.
struct Stock {
    level: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stock {
    fn feed(s: &Server) -> Stock {
        let level = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = s.url("/api/v1/import/prometheus");
        let (l, st) = (level.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let v = l.load(std::sync::atomic::Ordering::Relaxed);
                let _ = crate::util::client()
                    .post(&url)
                    .body(format!(
                        "stock_items{{sku=\"A1\"}} {v}\nstock_items{{sku=\"B2\"}} 7\n"
                    ))
                    .send();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Stock {
            level,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, v: u64) {
        self.level.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SHOP_RULES: &str = r#"groups:
  - name: shop
    interval: 1s
    rules:
      - record: shop:stock:min
        expr: min by (sku) (stock_items)
      - alert: OutOfStock
        expr: shop:stock:min == 0
        for: 3s
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.sku }} is out of stock"
"#;

#[test]
fn alerts_go_pending_then_firing_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    write_rules(&rules, "shop.yml", SHOP_RULES);
    let rd = rules.to_str().expect("path").to_string();
    let flags = ["--rules.dir", &rd, "--rules.alert.for-grace-period", "1s"];
    let (s, _, _) = started(dir.path(), &flags);
    let addr = s.addr.clone();
    // The stock stays at zero for the whole test.
    let _stock = Stock::feed(&s);
    let pending = eventually("OutOfStock pending", || {
        match alert_state(&s, "OutOfStock") {
            Some((st, a)) if st == "pending" => Ok(a),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(pending["labels"]["sku"], "A1");
    assert_eq!(pending["labels"]["severity"], "critical");
    let firing = eventually("OutOfStock firing", || {
        match alert_state(&s, "OutOfStock") {
            Some((st, a)) if st == "firing" => Ok(a),
            other => Err(format!("{other:?}")),
        }
    });
    let active_at = firing["activeAt"].as_str().unwrap_or("").to_string();
    // The recording rule and the ALERTS series are in the TSDB.
    let rec = query(&s, "shop:stock:min");
    assert_eq!(rec.len(), 2, "{rec:?}");
    let a = query(
        &s,
        "ALERTS{alertname=\"OutOfStock\", alertstate=\"firing\"}",
    );
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        query(&s, "ALERTS_FOR_STATE{alertname=\"OutOfStock\"}").len(),
        1
    );
    // /api/v1/rules shows the group, its health and the alert.
    let (code, body) = s.get("/api/v1/rules?type=alert");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    let shop = v["data"]["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "shop"))
        .cloned()
        .expect("shop group");
    assert_eq!(shop["rules"].as_array().map(Vec::len), Some(1), "{shop}");
    assert_eq!(shop["rules"][0]["health"], "ok");
    assert_eq!(shop["rules"][0]["state"], "firing");

    // A restart: the alert comes back firing with the same activeAt, never pending.
    s.stop();
    let s = Server::start_on(&dir.path().join("data"), &addr, &flags);
    let mut saw = Vec::new();
    let back = eventually("OutOfStock back", || {
        let st = alert_state(&s, "OutOfStock");
        if let Some((state, _)) = &st {
            saw.push(state.clone());
        }
        match st {
            Some((state, a)) if state == "firing" => Ok(a),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        !saw.iter().any(|st| st == "pending"),
        "went back to pending after the restart: {saw:?}"
    );
    // ALERTS_FOR_STATE keeps whole seconds, as in Prometheus.
    assert_eq!(
        back["activeAt"].as_str().map(|t| &t[..19]),
        Some(&active_at[..19])
    );
}

#[test]
fn bad_rules_are_refused_and_the_running_ones_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    write_rules(&rules, "shop.yml", SHOP_RULES);
    let rd = rules.to_str().expect("path").to_string();
    let (s, admin, _) = started(dir.path(), &["--rules.dir", &rd]);
    // A bad file next to the good one: the reload is refused, naming it.
    write_rules(
        &rules,
        "bad.yml",
        "groups:\n  - name: broken\n    rules:\n      - alert: Oops\n        expr: sum((\n",
    );
    let (code, body) = s.post("/-/reload");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad.yml"), "{body}");
    assert!(body.contains("Oops"), "{body}");
    let (_, body) = s.get("/api/v1/rules");
    assert!(body.contains("\"shop\""), "{body}");
    assert!(!body.contains("broken"), "{body}");
    std::fs::remove_file(rules.join("bad.yml")).expect("rm");
    // Through the API: checked before it is stored; a good one runs at once.
    let put = |name: &str, body: &str| {
        let r = crate::util::client()
            .put(s.url(&format!("/api/ops/v1/rules/{name}")))
            .bearer_auth(&admin)
            .body(body.to_string())
            .send()
            .expect("put");
        let code = r.status().as_u16();
        (code, r.text().unwrap_or_default())
    };
    for (bad, says) in [
        (
            "name: api\nrules:\n  - alert: X\n    expr: nosuchfunction(up)\n",
            "nosuchfunction",
        ),
        (
            "name: api\nrules:\n  - alert: X\n    expr: up\n    for: soon\n",
            "for",
        ),
        (
            "name: api\nrules:\n  - alert: X\n    expr: up\n    annotations:\n      a: \"{{ .Foo\"\n",
            "template",
        ),
        (
            "name: api\nrules:\n  - record: x\n    expr: up\n    for: 1m\n",
            "for",
        ),
        ("name: other\nrules: []\n", "other"),
    ] {
        let (code, body) = put("api", bad);
        assert_eq!(code, 400, "{bad} -> {body}");
        assert!(body.contains(says), "{bad} -> {body} (expected {says:?})");
    }
    let (code, body) = put(
        "api",
        "name: api\ninterval: 1s\nrules:\n  - record: api:up\n    expr: vector(42)\n",
    );
    assert_eq!(code, 200, "{body}");
    eventually("api:up recorded", || {
        let r = query(&s, "api:up");
        if r.len() == 1 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    let (code, v) = call(&s, "/api/ops/v1/rules", Some(&admin));
    assert_eq!(code, 200);
    assert_eq!(v["data"]["groups"][0]["name"], "api");
    let (code, _) = send(
        &s,
        reqwest::Method::DELETE,
        "/api/ops/v1/rules/api",
        &admin,
        json!({}),
    );
    assert_eq!(code, 200);
    let (_, body) = s.get("/api/v1/rules");
    assert!(!body.contains("api:up"), "{body}");
    // What the removed group recorded is marked stale: gone from queries two intervals
    // later, not after the five minutes of lookback.
    eventually("api:up marked stale", || {
        let r = query(&s, "api:up");
        if r.is_empty() {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    // A server does not start on a bad rule file, and says why.
    s.stop();
    write_rules(
        &rules,
        "dup.yml",
        "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_minos"))
        .args(["server", "--data"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--rules.dir", &rd])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dup.yml"), "{err}");
}

#[test]
fn a_lost_host_raises_host_lost_from_its_heartbeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(
        dir.path(),
        &[
            "--agent.lost-after",
            "1s",
            "--rules.evaluation-interval",
            "1s",
        ],
    );
    // A subquery without a step steps by the evaluation interval, as in Prometheus.
    let r = query(&s, "count_over_time(vector(1)[10s:])");
    assert_eq!(r.first().map(|x| x["value"][1].clone()), Some(json!("10")));
    let url = s.url("");
    let a = agent(dir.path(), &url, "web-07", Some(&enroll));
    wait_status(&s, &admin, "web-07", "online");
    eventually("minos_agent_up", || {
        let r = query(&s, "minos_agent_up{hostname=\"web-07\"}");
        if r.first().is_some_and(|x| x["value"][1] == "1") {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert!(alert_state(&s, "HostLost").is_none());
    drop(a);
    let lost = eventually("HostLost firing", || match alert_state(&s, "HostLost") {
        Some((st, a)) if st == "firing" => Ok(a),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(lost["labels"]["hostname"], "web-07");
    assert_eq!(lost["labels"]["severity"], "critical");
}

/// An HTTP server standing in for a chat webhook: keeps every JSON body POSTed to it,
/// answering 500 to the first `fail_first` requests (a receiver that is down).
struct Hook {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Hook {
    fn start(fail_first: usize) -> Hook {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, r) = (bodies.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut rd = BufReader::new(c.try_clone().expect("clone"));
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if rd.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = rd.read_exact(&mut body);
                let status = if r.load(std::sync::atomic::Ordering::SeqCst) < fail_first {
                    r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    "500 Internal Server Error"
                } else {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        b.lock().expect("lock").push(v);
                    }
                    "200 OK"
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Hook {
            url,
            bodies,
            refused,
        }
    }

    fn received(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

#[test]
fn notifications_reach_a_webhook_once_across_a_restart_and_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    write_rules(&rules, "shop.yml", SHOP_RULES);
    // The receiver is down for its first two requests.
    let hook = Hook::start(2);
    let config = dir.path().join("alerting.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: shop\n  group_by: [alertname]\n  group_wait: 100ms\n  \
             group_interval: 500ms\n  repeat_interval: 1h\nreceivers:\n  - name: shop\n    \
             webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            hook.url
        ),
    )
    .expect("config");
    let rd = rules.to_str().expect("path").to_string();
    let cf = config.to_str().expect("path").to_string();
    let flags = [
        "--rules.dir",
        &rd,
        "--alerting.config",
        &cf,
        "--rules.alert.for-grace-period",
        "1s",
        "--rules.alert.resend-delay",
        "1s",
    ];
    let (s, admin, _) = started(dir.path(), &flags);
    let addr = s.addr.clone();
    let stock = Stock::feed(&s);
    // Firing, delivered after the receiver came back.
    let firing = eventually("firing notification", || {
        hook.received()
            .into_iter()
            .find(|b| b["status"] == "firing")
            .ok_or_else(|| format!("{:?}", hook.received()))
    });
    assert!(hook.refused.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_eq!(firing["alerts"][0]["labels"]["alertname"], "OutOfStock");
    assert_eq!(firing["alerts"][0]["labels"]["sku"], "A1");
    assert_eq!(
        firing["alerts"][0]["annotations"]["summary"],
        "A1 is out of stock"
    );
    assert_eq!(firing["receiver"], "shop");
    // Acknowledged through the API: shown as such.
    let (code, v) = call(&s, "/api/ops/v1/alerts", Some(&admin));
    assert_eq!(code, 200, "{v}");
    let fp = v["data"]["alerts"][0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/alerts/{fp}/ack"),
        &admin,
        json!({"comment": "restocking"}),
    );
    assert_eq!(code, 200, "{v}");
    let (_, v) = call(&s, "/api/ops/v1/alerts", Some(&admin));
    assert_eq!(v["data"]["alerts"][0]["acked"]["comment"], "restocking");

    // A restart while it fires: nothing is sent again.
    let before = hook.received().len();
    s.stop();
    let s = Server::start_on(&dir.path().join("data"), &addr, &flags);
    eventually("firing again after the restart", || {
        match alert_state(&s, "OutOfStock") {
            Some((st, _)) if st == "firing" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.received().len(), before, "{:?}", hook.received());

    // Restocked: the resolution is delivered.
    stock.set(5);
    let resolved = eventually("resolved notification", || {
        hook.received()
            .into_iter()
            .find(|b| b["status"] == "resolved")
            .ok_or_else(|| format!("{:?}", hook.received()))
    });
    assert_eq!(resolved["alerts"][0]["labels"]["alertname"], "OutOfStock");
    // The history and the notification log say what happened.
    let (code, v) = call(
        &s,
        "/api/ops/v1/alerts/history?filter=%7Balertname%3D%22OutOfStock%22%7D",
        Some(&admin),
    );
    assert_eq!(code, 200, "{v}");
    let changes: Vec<String> = v["data"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["to"].as_str().unwrap_or("").to_string())
        .collect();
    for want in ["pending", "firing", "acknowledged", "resolved"] {
        assert!(changes.iter().any(|c| c == want), "{want} in {changes:?}");
    }
    let (_, v) = call(&s, "/api/ops/v1/notifications", Some(&admin));
    let log = v["data"]["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(log.iter().any(|e| e["ok"] == false), "{log:?}");
    assert!(log.iter().any(|e| e["ok"] == true), "{log:?}");
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The messages an aiosmtpd Mailbox handler stored in `dir` (a maildir).
fn mails(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    out.push(t);
                }
            }
        }
    }
    out
}

#[test]
fn alerts_reach_an_smtp_server_and_a_real_alertmanager_then_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A real SMTP server that keeps what it receives, and Debian's Alertmanager.
    let maildir = dir.path().join("mail");
    let smtp_port = free_port();
    let _smtp = Child(
        std::process::Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                "-l",
            ])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .arg(&maildir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd (Debian: python3-aiosmtpd)"),
    );
    let am_port = free_port();
    let am_config = dir.path().join("am.yml");
    std::fs::write(
        &am_config,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .expect("am config");
    let _am = Child(
        std::process::Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager"),
    );
    let am_alerts = || -> Vec<Value> {
        crate::util::client()
            .get(format!("http://127.0.0.1:{am_port}/api/v2/alerts"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let rules = dir.path().join("rules");
    write_rules(&rules, "shop.yml", SHOP_RULES);
    let config = dir.path().join("alerting.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: ops\n  group_by: [alertname]\n  group_wait: 100ms\n  \
             group_interval: 500ms\n  repeat_interval: 1h\nreceivers:\n  - name: ops\n    \
             email_configs:\n      - to: oncall@example.com\n        from: minos@example.com\n        \
             smarthost: 127.0.0.1:{smtp_port}\n        require_tls: false\n        \
             send_resolved: true\n    alertmanager_configs:\n      - url: http://127.0.0.1:{am_port}\n"
        ),
    )
    .expect("config");
    let rd = rules.to_str().expect("path").to_string();
    let cf = config.to_str().expect("path").to_string();
    let (s, _, _) = started(dir.path(), &["--rules.dir", &rd, "--alerting.config", &cf]);
    let stock = Stock::feed(&s);
    let mail = eventually("the firing email", || {
        mails(&maildir)
            .into_iter()
            .find(|m| m.contains("FIRING"))
            .ok_or_else(|| "no mail yet".to_string())
    });
    assert!(mail.contains("oncall@example.com"), "{mail}");
    assert!(mail.contains("OutOfStock"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    let am = eventually("the alert in Alertmanager", || {
        am_alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "OutOfStock")
            .ok_or_else(|| format!("{:?}", am_alerts()))
    });
    assert_eq!(am["labels"]["sku"], "A1");
    assert_eq!(am["annotations"]["summary"], "A1 is out of stock");
    // Restocked: the resolution is mailed, and Alertmanager lets the alert go.
    stock.set(9);
    eventually("the resolved email", || {
        mails(&maildir)
            .into_iter()
            .find(|m| m.contains("RESOLVED"))
            .ok_or_else(|| "no resolved mail yet".to_string())
    });
    eventually("resolved in Alertmanager", || {
        let active: Vec<Value> = am_alerts()
            .into_iter()
            .filter(|a| {
                a["labels"]["alertname"] == "OutOfStock" && a["status"]["state"] == "active"
            })
            .collect();
        if active.is_empty() {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    });
}

#[test]
fn an_alert_nobody_acknowledges_escalates_to_the_next_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    write_rules(&rules, "shop.yml", SHOP_RULES);
    let (oncall, boss) = (Hook::start(0), Hook::start(0));
    let config = dir.path().join("alerting.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: oncall\n  group_by: [alertname]\n  group_wait: 100ms\n  \
             group_interval: 500ms\n  repeat_interval: 1h\n  escalate_after: 2s\n  \
             escalate_to: boss\nreceivers:\n  - name: oncall\n    webhook_configs:\n      \
             - url: {}\n  - name: boss\n    webhook_configs:\n      - url: {}\n",
            oncall.url, boss.url
        ),
    )
    .expect("config");
    let rd = rules.to_str().expect("path").to_string();
    let cf = config.to_str().expect("path").to_string();
    let (s, _, _) = started(dir.path(), &["--rules.dir", &rd, "--alerting.config", &cf]);
    let _stock = Stock::feed(&s);
    eventually("oncall notified", || {
        if oncall.received().iter().any(|b| b["status"] == "firing") {
            Ok(())
        } else {
            Err(format!("{:?}", oncall.received()))
        }
    });
    // Nobody acknowledges: the boss hears of it.
    let escalated = eventually("escalated", || {
        boss.received()
            .into_iter()
            .find(|b| b["status"] == "firing")
            .ok_or_else(|| format!("{:?}", boss.received()))
    });
    assert_eq!(escalated["alerts"][0]["labels"]["alertname"], "OutOfStock");
}

#[test]
fn the_rules_alerts_and_silence_commands_work_as_a_user_runs_them() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerting/testdata");
    let p = |f: &str| testdata.join(f).to_string_lossy().to_string();
    // minos rules check / test, as promtool's.
    let (code, out, err) = crate::util::minos(&["rules", "check", &p("rules/business.rules.yml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (code, out, err) =
        crate::util::minos(&["rules", "check", &p("check/unknown_function.yml")]);
    assert_eq!(code, 1, "{out}{err}");
    let (code, out, err) = crate::util::minos(&["rules", "test", &p("business.test.yml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (code, out, err) = crate::util::minos(&["rules", "test", &p("failing.test.yml")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("FAILED"), "{out}{err}");

    // A firing alert, then the alerts and silence commands against a real server.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    write_rules(
        &rules,
        "now.yml",
        "groups:\n  - name: now\n    interval: 1s\n    rules:\n      - alert: DiskFull\n        \
         expr: vector(1)\n        labels:\n          severity: warning\n        annotations:\n          \
         summary: disk is full\n",
    );
    let rd = rules.to_str().expect("path").to_string();
    let (s, admin, _) = started(dir.path(), &["--rules.dir", &rd]);
    let listed = eventually("minos alerts lists DiskFull", || {
        let (code, out, err) = cli(&s, &admin, &["alerts", "--json"]);
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}{err}"))?;
        let a = v["alerts"].as_array().and_then(|a| {
            a.iter()
                .find(|a| a["labels"]["alertname"] == "DiskFull")
                .cloned()
        });
        match (code, a) {
            (0, Some(a)) => Ok(a),
            other => Err(format!("{other:?} {out}{err}")),
        }
    });
    let fp = listed["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let (code, out, err) = cli(&s, &admin, &["alerts"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DiskFull") && out.contains("disk is full"),
        "{out}"
    );
    // Acknowledged by a prefix of its fingerprint.
    let (code, out, err) = cli(&s, &admin, &["alerts", "ack", &fp[..8], "-c", "on it"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = cli(&s, &admin, &["alerts"]);
    assert!(out.contains("acked"), "{out}");
    let (code, out, err) = cli(&s, &admin, &["alerts", "history"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acknowledged"), "{out}");
    // A silence: added, listed, shown on the alert, expired.
    let (code, out, err) = cli(
        &s,
        &admin,
        &[
            "silence",
            "add",
            "alertname=DiskFull",
            "-d",
            "1h",
            "-c",
            "cleaning up",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_string();
    let (code, out, _) = cli(&s, &admin, &["silence", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("cleaning up"), "{out}");
    let (_, out, _) = cli(&s, &admin, &["alerts"]);
    assert!(out.contains("silenced"), "{out}");
    let (code, out, err) = cli(&s, &admin, &["silence", "expire", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = cli(&s, &admin, &["silence", "list", "--expired"]);
    assert!(out.contains(&id), "{out}");
    // Refused: a silence matching everything, an unknown fingerprint.
    let (code, _, err) = cli(
        &s,
        &admin,
        &["silence", "add", "alertname=~.*", "-c", "all"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&s, &admin, &["alerts", "ack", "ffffffffffffffff"]);
    assert_eq!(code, 2, "{err}");
}

/// Runs Debian's amtool against `s` with the HTTP client configuration `token_file`;
/// answers whether it succeeded and its output (with its errors when it failed).
fn amtool(s: &Server, token_file: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("/usr/bin/amtool")
        .arg(format!("--alertmanager.url={}", s.url("")))
        .arg(format!("--http.config.file={}", token_file.display()))
        .args(args)
        .output()
        .expect("amtool (Debian: prometheus-alertmanager)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text += &String::from_utf8_lossy(&out.stderr);
    }
    (out.status.success(), text)
}

/// The Alertmanager API of the notifier, used by the tools made for Alertmanager: a real
/// Prometheus sends its alerts to Minos as to an Alertmanager, they are delivered, and
/// amtool lists them, silences them, shows the silence and expires it.
#[test]
fn prometheus_and_amtool_use_minos_as_their_alertmanager() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = Hook::start(0);
    let config = dir.path().join("alerting.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: ops\n  group_by: [alertname]\n  group_wait: 100ms\n  \
             group_interval: 300ms\n  repeat_interval: 1h\nreceivers:\n  - name: ops\n    \
             webhook_configs:\n      - url: {}\n",
            hook.url
        ),
    )
    .expect("config");
    let cf = config.to_str().expect("path").to_string();
    let (s, admin, _) = started(dir.path(), &["--alerting.config", &cf]);
    let http_config = dir.path().join("http.yml");
    std::fs::write(
        &http_config,
        format!("authorization:\n  type: Bearer\n  credentials: {admin}\n"),
    )
    .expect("http config");

    // A real Prometheus, whose Alertmanager is Minos.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("dir");
    std::fs::write(
        prom_dir.join("rules.yml"),
        "groups:\n  - name: p\n    interval: 1s\n    rules:\n      - alert: FromPrometheus\n        \
         expr: vector(1)\n        labels: {severity: page, team: db}\n        \
         annotations: {summary: sent by Prometheus}\n",
    )
    .expect("rules");
    let target = s.addr.clone();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nalerting:\n  \
             alertmanagers:\n    - api_version: v2\n      authorization:\n        \
             credentials: {admin}\n      static_configs:\n        - targets: ['{target}']\n"
        ),
    )
    .expect("prometheus config");
    let _prom = Child(
        std::process::Command::new("/usr/bin/prometheus")
            .current_dir(&prom_dir)
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
            // Its first send comes before it knows its Alertmanager: resend soon.
            .arg("--rules.alert.resend-delay=1s")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("log")).expect("log"))
            .spawn()
            .expect("prometheus (Debian: prometheus)"),
    );

    // Delivered to the receiver, listed by amtool.
    eventually("Prometheus' alert at the webhook", || {
        hook.received()
            .into_iter()
            .find(|b| b["alerts"][0]["labels"]["alertname"] == "FromPrometheus")
            .ok_or_else(|| {
                std::fs::read_to_string(prom_dir.join("log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("level=error") || l.contains("level=warn"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    });
    let (ok, text) = amtool(&s, &http_config, &["alert", "query"]);
    assert!(ok && text.contains("FromPrometheus"), "{text}");
    assert!(text.contains("sent by Prometheus"), "{text}");
    let (ok, text) = amtool(
        &s,
        &http_config,
        &["-o", "json", "alert", "query", "team=db"],
    );
    assert!(ok, "{text}");
    let listed: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(listed[0]["status"]["state"], "active", "{listed}");
    assert_eq!(listed[0]["receivers"][0]["name"], "ops", "{listed}");
    let (ok, text) = amtool(&s, &http_config, &["alert", "query", "team=web"]);
    assert!(ok && !text.contains("FromPrometheus"), "{text}");

    // A silence made with amtool mutes it.
    let (ok, text) = amtool(
        &s,
        &http_config,
        &[
            "silence",
            "add",
            "alertname=FromPrometheus",
            "severity=~pa.e",
            "--author=alice",
            "--comment=planned maintenance",
            "--duration=1h",
        ],
    );
    assert!(ok, "{text}");
    let id = text.trim().to_string();
    let (ok, text) = amtool(&s, &http_config, &["silence", "query"]);
    assert!(ok && text.contains(&id) && text.contains("alice"), "{text}");
    assert!(text.contains("planned maintenance"), "{text}");
    let (ok, text) = amtool(
        &s,
        &http_config,
        &["-o", "json", "alert", "query", "--silenced"],
    );
    assert!(ok, "{text}");
    let listed: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(listed[0]["status"]["state"], "suppressed", "{listed}");
    assert_eq!(
        listed[0]["status"]["silencedBy"][0],
        id.as_str(),
        "{listed}"
    );
    let (ok, text) = amtool(&s, &http_config, &["alert", "query"]);
    assert!(
        ok && !text.contains("FromPrometheus"),
        "silenced alerts are hidden: {text}"
    );
    let (code, v) = call(&s, "/api/ops/v1/silences", Some(&admin));
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["data"]["silences"][0]["created_by"], "alice (admin:created at first start)",
        "{v}"
    );

    // Expired with amtool: the alert is active again.
    let (ok, text) = amtool(&s, &http_config, &["silence", "expire", &id]);
    assert!(ok, "{text}");
    let (ok, text) = amtool(&s, &http_config, &["silence", "query"]);
    assert!(ok && !text.contains(&id), "{text}");
    let (ok, text) = amtool(&s, &http_config, &["silence", "query", "--expired"]);
    assert!(ok && text.contains(&id), "{text}");
    let (ok, text) = amtool(&s, &http_config, &["alert", "query"]);
    assert!(ok && text.contains("FromPrometheus"), "{text}");

    // Bad input is refused with Alertmanager's error shape; no token, no access.
    let c = crate::util::client();
    let r = c
        .post(s.url("/api/v2/silences"))
        .bearer_auth(&admin)
        .body(r#"{"matchers": [], "endsAt": "2099-01-01T00:00:00Z", "comment": "x"}"#)
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let msg: Value = r.json().expect("json");
    assert!(msg.as_str().is_some_and(|m| m.contains("matcher")), "{msg}");
    let r = c
        .post(s.url("/api/v2/alerts"))
        .bearer_auth(&admin)
        .body(r#"[{"labels": {}}, {"labels": {"alertname": "Ok"}, "startsAt": "yesterday"}]"#)
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let msg: Value = r.json().expect("json");
    assert!(
        msg.as_str()
            .is_some_and(|m| m.contains("alert 0") && m.contains("alert 1")),
        "{msg}"
    );
    let r = c.get(s.url("/api/v2/alerts")).send().expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let (ok, text) = amtool(&s, &http_config, &["silence", "expire", "no-such-silence"]);
    assert!(!ok, "{text}");
}
