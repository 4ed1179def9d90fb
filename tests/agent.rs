//! `minos agent` against a real server: enrollment, facts, host metrics queryable with
//! PromQL, a killed agent going `lost` and coming back, re-enrollment keeping the host's
//! record, a server restart during which agents spool and then deliver, and messages
//! pushed to a chosen agent delivered exactly once across a cut connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{Server, call, json, send, urlencode};

pub struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server on a fresh data directory with `extra` flags, its admin and enrollment tokens.
pub fn started(dir: &Path, extra: &[&str]) -> (Server, String, String) {
    let data = dir.join("data");
    let s = Server::start(&data, extra);
    let read = |f: &str| {
        std::fs::read_to_string(data.join(f))
            .expect("token")
            .trim()
            .to_string()
    };
    (s, read("admin.token"), read("enroll.token"))
}

/// An agent for `hostname` with its own state directory under `dir`, heartbeating every
/// 200ms and pushing metrics every 300ms.
pub fn agent(dir: &Path, server: &str, hostname: &str, token: Option<&str>) -> Agent {
    agent_with(dir, server, hostname, token, &[])
}

/// [`agent`] with extra flags.
pub fn agent_with(
    dir: &Path,
    server: &str,
    hostname: &str,
    token: Option<&str>,
    extra: &[&str],
) -> Agent {
    let state = state_dir(dir, hostname);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{hostname}.log")))
        .expect("agent log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_minos"));
    cmd.args(["agent", "--server", server, "--hostname", hostname])
        .arg("--state-dir")
        .arg(&state)
        .args(["--interval", "300ms", "--heartbeat", "200ms"])
        .env_remove("MINOS_SERVER")
        .env_remove("MINOS_ENROLL_TOKEN")
        .env("MINOS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(extra);
    Agent(cmd.spawn().expect("spawn agent"))
}

fn state_dir(dir: &Path, hostname: &str) -> PathBuf {
    dir.join(format!("state-{hostname}"))
}

/// Polls until `f` gives a value, failing after 30s with the last thing seen.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls an instant query until its result has `n` series.
fn wait_for(s: &Server, q: &str, n: usize) -> serde_json::Value {
    eventually(q, || {
        let (code, body) = s.get(&format!("/api/v1/query?query={}", urlencode(q)));
        let v = json(&body);
        if code == 200 && v["data"]["result"].as_array().map(Vec::len) == Some(n) {
            Ok(v["data"]["result"].clone())
        } else {
            Err(body)
        }
    })
}

/// The host `name` as the ops API shows it.
pub fn host(s: &Server, admin: &str, name: &str) -> serde_json::Value {
    let (code, v) = call(s, "/api/ops/v1/hosts", Some(admin));
    assert_eq!(code, 200, "{v}");
    v["data"]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["hostname"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until `name`'s agent has status `status`; returns the host.
pub fn wait_status(s: &Server, admin: &str, name: &str, status: &str) -> serde_json::Value {
    eventually(&format!("{name} {status}"), || {
        let h = host(s, admin, name);
        if h["agent"]["status"] == status {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    })
}

#[test]
fn agents_enroll_report_facts_and_push_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &[]);
    let url = s.url("");
    let _a = agent(dir.path(), &url, "agent-a", Some(&enroll));
    let _b = agent(dir.path(), &url, "agent-b", Some(&enroll));
    for name in ["agent-a", "agent-b"] {
        let h = wait_status(&s, &admin, name, "online");
        let facts = &h["agent"]["facts"];
        assert_eq!(facts["hostname"], name, "{h}");
        let uname = Command::new("uname").arg("-r").output().expect("uname");
        let kernel = String::from_utf8_lossy(&uname.stdout).trim().to_string();
        assert_eq!(facts["kernel"], kernel.as_str(), "{h}");
        assert!(facts["cpu_count"].as_u64().unwrap_or(0) >= 1, "{h}");
        assert!(facts["memory_bytes"].as_u64().unwrap_or(0) > 0, "{h}");
        assert!(!facts["os"]["id"].as_str().unwrap_or("").is_empty(), "{h}");
        assert_eq!(h["agent"]["connected"], true, "{h}");
        let identity = state_dir(dir.path(), name).join("identity.json");
        let mode = std::fs::metadata(&identity)
            .expect("identity")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    // The CLI shows the agents' status and facts.
    let (code, out, err) =
        crate::util::minos(&["hosts", "list", "--server", &url, "--token", &admin]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("agent-a\tonline\t"), "{out}");
    let (code, out, err) = crate::util::minos(&[
        "hosts", "show", "agent-b", "--server", &url, "--token", &admin,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("agent: online (connected)"), "{out}");
    assert!(out.contains("cpu: "), "{out}");
    let r = wait_for(&s, r#"node_memory_MemTotal_bytes{job="node"}"#, 2);
    let mut instances: Vec<&str> = r
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["metric"]["instance"].as_str())
        .collect();
    instances.sort();
    assert_eq!(instances, ["agent-a", "agent-b"]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = wait_for(
        &s,
        r#"count(node_cpu_seconds_total{instance="agent-a",mode="idle"})"#,
        1,
    );
    assert_eq!(r[0]["value"][1], cpus.to_string(), "{r}");
    wait_for(&s, r#"node_uname_info{instance="agent-b"}"#, 1);
    wait_for(
        &s,
        r#"sum by (instance) (rate(node_cpu_seconds_total{job="node"}[5s]))"#,
        2,
    );
    // Inventory joins with metrics: the enrolled hosts have minos_host_info.
    wait_for(&s, r#"minos_host_info{hostname=~"agent-a|agent-b"}"#, 2);
    // The channel's own metrics.
    let connected = eventually("2 connected", || match s.metric("minos_agents_connected") {
        Some(v) if v == 2.0 => Ok(v),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(connected, 2.0);
    assert!(s.metric("minos_agent_heartbeats_total").unwrap_or(0.0) > 0.0);
    assert_eq!(s.metric("minos_agents{status=\"online\"}"), Some(2.0));
    // An agent without an identity and without a token says what it needs.
    let out = Command::new(env!("CARGO_BIN_EXE_minos"))
        .args(["agent", "--server", &url, "--hostname", "x", "--state-dir"])
        .arg(dir.path().join("empty-state"))
        .env_remove("MINOS_ENROLL_TOKEN")
        .output()
        .expect("agent");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_killed_agent_is_lost_and_comes_back_without_enrolling_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &["--agent.lost-after", "1s"]);
    let url = s.url("");
    let a = agent(dir.path(), &url, "web-1", Some(&enroll));
    let first = wait_status(&s, &admin, "web-1", "online");
    drop(a);
    let lost = wait_status(&s, &admin, "web-1", "lost");
    assert_eq!(lost["agent"]["connected"], false, "{lost}");
    assert!(s.log_text().contains("web-1 is lost"), "{}", s.log_text());
    assert_eq!(s.metric("minos_agents{status=\"lost\"}"), Some(1.0));
    // The same state directory, no token: the stored identity is enough.
    let _a = agent(dir.path(), &url, "web-1", None);
    let back = wait_status(&s, &admin, "web-1", "online");
    assert_eq!(back["id"], first["id"]);
    // The status survives a server restart.
    drop(_a);
    wait_status(&s, &admin, "web-1", "lost");
    let addr = s.addr.clone();
    s.stop();
    let s = Server::start_on(
        &dir.path().join("data"),
        &addr,
        &["--agent.lost-after", "1s"],
    );
    let h = host(&s, &admin, "web-1");
    assert_eq!(h["agent"]["status"], "lost", "{h}");
}

#[test]
fn reenrollment_keeps_the_hosts_record_and_retires_the_old_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &[]);
    let url = s.url("");
    // The host exists before its agent: added by hand, placed in the tree, tagged.
    let post = |path: &str, body: serde_json::Value| {
        let (code, v) = send(&s, reqwest::Method::POST, path, &admin, body);
        assert!(code == 200 || code == 201, "{path}: {v}");
        v
    };
    post(
        "/api/ops/v1/tree/nodes",
        serde_json::json!({"name": "sre", "kind": "team"}),
    );
    post(
        "/api/ops/v1/hosts",
        serde_json::json!({"hostname": "db-1", "nodes": ["/sre"], "tags": {"role": "db"}}),
    );
    let before = host(&s, &admin, "db-1");
    let a = agent(dir.path(), &url, "db-1", Some(&enroll));
    let online = wait_status(&s, &admin, "db-1", "online");
    assert_eq!(online["id"], before["id"]);
    assert_eq!(online["tags"], before["tags"]);
    assert_eq!(online["placements"], before["placements"]);
    drop(a);
    let identity = state_dir(dir.path(), "db-1").join("identity.json");
    let old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&identity).expect("identity")).expect("json");
    let old_secret = old["secret"].as_str().expect("secret").to_string();
    // Reinstalled: the state directory is gone.
    std::fs::remove_dir_all(state_dir(dir.path(), "db-1")).expect("wipe");
    let _a = agent(dir.path(), &url, "db-1", Some(&enroll));
    eventually("a new identity", || {
        let v: serde_json::Value = std::fs::read(&identity)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("no identity yet")?;
        if v["secret"] != old["secret"] {
            Ok(())
        } else {
            Err("same secret".into())
        }
    });
    let again = wait_status(&s, &admin, "db-1", "online");
    assert_eq!(again["id"], before["id"]);
    assert_eq!(again["placements"], before["placements"]);
    let (code, _) = call(&s, "/api/ops/v1/hosts", Some(&admin));
    assert_eq!(code, 200);
    // The old secret opens nothing.
    let r = crate::util::client()
        .post(s.url("/api/agent/v1/write"))
        .bearer_auth(&old_secret)
        .body(Vec::new())
        .send()
        .expect("write");
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn agents_spool_through_a_server_restart_and_deliver_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &[]);
    let url = s.url("");
    let _a = agent(dir.path(), &url, "spooler", Some(&enroll));
    wait_status(&s, &admin, "spooler", "online");
    wait_for(&s, r#"node_load1{instance="spooler"}"#, 1);
    let addr = s.addr.clone();
    let down_from = crate::util::now_ms();
    s.stop();
    std::thread::sleep(Duration::from_millis(2000));
    let down_to = crate::util::now_ms();
    let s = Server::start_on(&dir.path().join("data"), &addr, &[]);
    wait_status(&s, &admin, "spooler", "online");
    let during = eventually("samples from the downtime", || {
        let got: Vec<i64> = s
            .export(r#"node_load1{instance="spooler"}"#)
            .into_iter()
            .flat_map(|e| e.timestamps)
            .filter(|t| (down_from + 300..down_to - 300).contains(t))
            .collect();
        // Collections every 300ms over a gap of ~2s.
        if got.len() >= 3 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    });
    assert!(during.windows(2).all(|w| w[0] < w[1]), "{during:?}");
}

/// A TCP proxy on loopback that the test can cut, and make deaf in one direction.
struct Proxy {
    addr: String,
    /// Bytes from the client (the agent) are dropped instead of forwarded.
    deaf: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let deaf = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, c) = (deaf.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let pump =
                    |mut from: TcpStream, mut to: TcpStream, deaf: Option<Arc<AtomicBool>>| {
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 16384];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                if deaf.as_ref().is_some_and(|d| d.load(Ordering::SeqCst)) {
                                    continue;
                                }
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut g) = c.lock() {
                        g.push(c2);
                        g.push(s2);
                    }
                    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    pump(c3, server, Some(d.clone()));
                    pump(s3, client, None);
                }
            }
        });
        Proxy { addr, deaf, conns }
    }

    /// Closes every connection through the proxy; new ones are heard again.
    fn cut(&self) {
        if let Ok(mut g) = self.conns.lock() {
            for c in g.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
            self.deaf.store(false, Ordering::SeqCst);
        }
    }
}

fn push(s: &Server, admin: &str, host: &str, n: u64) -> serde_json::Value {
    let (code, v) = send(
        s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/agents/{host}/messages"),
        admin,
        serde_json::json!({"kind": "ping", "body": {"n": n}}),
    );
    assert_eq!(code, 202, "{v}");
    v["data"]["id"].clone()
}

fn messages(s: &Server, admin: &str, host: &str) -> serde_json::Value {
    let (code, v) = call(
        s,
        &format!("/api/ops/v1/agents/{host}/messages"),
        Some(admin),
    );
    assert_eq!(code, 200, "{v}");
    v["data"].clone()
}

#[test]
fn messages_reach_the_chosen_agent_exactly_once_across_a_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &[]);
    let proxy = Proxy::start(s.addr.clone());
    let _a = agent(
        dir.path(),
        &format!("http://{}", proxy.addr),
        "chosen",
        Some(&enroll),
    );
    let _b = agent(dir.path(), &s.url(""), "other", Some(&enroll));
    wait_status(&s, &admin, "chosen", "online");
    wait_status(&s, &admin, "other", "online");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(push(&s, &admin, "chosen", n));
    }
    eventually("3 pongs", || {
        let m = messages(&s, &admin, "chosen");
        match m["received"].as_array().map(Vec::len) {
            Some(3) => Ok(()),
            _ => Err(m.to_string()),
        }
    });
    // The server stops hearing the agent: it delivers the next messages, but neither its
    // acknowledgements nor its answers get through; then the connection is cut.
    proxy.deaf.store(true, Ordering::SeqCst);
    for n in 3..6 {
        ids.push(push(&s, &admin, "chosen", n));
    }
    let delivered = state_dir(dir.path(), "chosen").join("delivered.json");
    let want_last = ids[5][1].as_u64().expect("counter");
    eventually("the agent got the last message", || {
        let v: serde_json::Value = std::fs::read(&delivered)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("none")?;
        if v["last"].as_u64() == Some(want_last) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(
        messages(&s, &admin, "chosen")["queued"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "unacknowledged on the server"
    );
    proxy.cut();
    // After the reconnect the server sends the three again; the agent acknowledges them
    // without running them twice, and its answers arrive once.
    let m = eventually("all acknowledged and answered", || {
        let m = messages(&s, &admin, "chosen");
        let queued = m["queued"].as_array().map_or(99, Vec::len);
        let received = m["received"].as_array().map_or(0, Vec::len);
        if queued == 0 && received >= 6 {
            Ok(m)
        } else {
            Err(m.to_string())
        }
    });
    // Let any duplicate that would come arrive.
    std::thread::sleep(Duration::from_millis(600));
    let m2 = messages(&s, &admin, "chosen");
    assert_eq!(m2["received"], m["received"]);
    let mut answered: Vec<serde_json::Value> = m2["received"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            assert_eq!(r["kind"], "pong", "{r}");
            r["body"]["re"].clone()
        })
        .collect();
    answered.sort_by_key(|v| v[1].as_u64());
    assert_eq!(answered, ids, "each message answered exactly once");
    assert_eq!(m2["delivered"].as_array().map(Vec::len), Some(6));
    // The other agent got nothing.
    let other = messages(&s, &admin, "other");
    assert_eq!(
        other["received"].as_array().map(Vec::len),
        Some(0),
        "{other}"
    );
    let dups = s
        .metric("minos_agent_messages_duplicate_total")
        .unwrap_or(0.0);
    assert_eq!(dups, 0.0, "the agent resent only unacknowledged answers");
}

/// Enrolls `hostname` over HTTP with `token`; status and JSON answer.
fn enroll_raw(s: &Server, token: Option<&str>, body: String) -> (u16, serde_json::Value) {
    let mut r = crate::util::client().post(s.url("/api/agent/v1/enroll"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.body(body).send().expect("enroll");
    let code = r.status().as_u16();
    (code, json(&r.text().expect("body")))
}

/// Opens the channel with `secret`: the socket, or the HTTP status that refused it.
fn open_channel(
    s: &Server,
    secret: &str,
) -> Result<
    tokio_tungstenite::tungstenite::WebSocket<
        tokio_tungstenite::tungstenite::stream::MaybeTlsStream<TcpStream>,
    >,
    u16,
> {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let mut req = format!("ws://{}/api/agent/v1/channel", s.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    match tungstenite::connect(req) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// Sends `frames` and returns the close code the server answers with.
fn close_code_for(
    s: &Server,
    secret: &str,
    frames: Vec<tokio_tungstenite::tungstenite::Message>,
) -> u16 {
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = open_channel(s, secret).expect("open");
    for f in frames {
        ws.send(f).expect("send");
    }
    loop {
        match ws.read() {
            Ok(Message::Close(Some(c))) => return u16::from(c.code),
            Ok(Message::Close(None)) => return 0,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn agent_endpoints_refuse_bad_input_and_change_nothing() {
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &["--agent.max-queued", "2"]);
    let hosts = || call(&s, "/api/ops/v1/hosts", Some(&admin)).1["data"]["hosts"].clone();
    let good = r#"{"hostname":"h1","facts":{"kernel":"6.1"}}"#.to_string();
    // Enrollment.
    assert_eq!(enroll_raw(&s, None, good.clone()).0, 401);
    assert_eq!(
        enroll_raw(&s, Some("minos_enroll_nope"), good.clone()).0,
        401
    );
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        "/api/ops/v1/tokens",
        &admin,
        serde_json::json!({"kind": "api", "name": "ci"}),
    );
    assert_eq!(code, 200, "{v}");
    let api = v["data"]["token"].as_str().expect("token").to_string();
    let (code, v) = enroll_raw(&s, Some(&api), good.clone());
    assert_eq!(code, 403, "{v}");
    for (body, want) in [
        ("{".to_string(), 400),
        (r#"{"hostname":"h1"}"#.to_string(), 400),
        (r#"{"hostname":"h1","facts":{},"extra":1}"#.to_string(), 400),
        (r#"{"hostname":"","facts":{}}"#.to_string(), 400),
        (r#"{"hostname":"a b/c","facts":{}}"#.to_string(), 400),
        (
            format!(
                r#"{{"hostname":"h1","facts":{{"cpu_model":"{}"}}}}"#,
                "x".repeat(70_000)
            ),
            413,
        ),
    ] {
        let (code, v) = enroll_raw(&s, Some(&enroll), body.clone());
        assert_eq!(code, want, "{}: {v}", &body[..body.len().min(60)]);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    assert_eq!(
        hosts(),
        serde_json::json!([]),
        "refused enrollments change nothing"
    );
    let (code, v) = enroll_raw(&s, Some(&enroll), good);
    assert_eq!(code, 200, "{v}");
    let secret = v["secret"].as_str().expect("secret").to_string();
    // The channel and the agents' write endpoint need the agent's secret.
    assert_eq!(open_channel(&s, "").err(), Some(401));
    assert_eq!(open_channel(&s, "minos_agent_0000").err(), Some(401));
    assert_eq!(open_channel(&s, &enroll).err(), Some(401));
    for secret in [None, Some("minos_agent_nope"), Some(admin.as_str())] {
        let mut r = crate::util::client().post(s.url("/api/agent/v1/write"));
        if let Some(t) = secret {
            r = r.bearer_auth(t);
        }
        assert_eq!(
            r.body(Vec::new()).send().expect("write").status().as_u16(),
            401
        );
    }
    // Frames outside the protocol close the channel with a reason, and store nothing.
    let hello =
        r#"{"type":"hello","version":1,"agent_version":"t","heartbeat_ms":1000,"facts":null}"#;
    let big = format!(
        r#"{{"type":"heartbeat","seq":1,"facts":{{"cpu_model":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    for (frames, want) in [
        (vec![Message::text("{")], 1007),
        (
            vec![Message::text(
                r#"{"type":"heartbeat","seq":1,"facts":null}"#,
            )],
            1002,
        ),
        (
            vec![Message::text(
                r#"{"type":"hello","version":99,"agent_version":"t","heartbeat_ms":1000,"facts":null}"#,
            )],
            1002,
        ),
        (
            vec![Message::text(hello), Message::binary(vec![1u8, 2, 3])],
            1003,
        ),
        (
            vec![
                Message::text(hello),
                Message::text(r#"{"type":"ack","id":"x"}"#),
            ],
            1007,
        ),
        (vec![Message::text(hello), Message::text(big)], 1009),
        (vec![Message::text(hello), Message::text(hello)], 1002),
    ] {
        assert_eq!(close_code_for(&s, &secret, frames), want);
    }
    let h = host(&s, &admin, "h1");
    assert_eq!(h["agent"]["facts"]["kernel"], "6.1", "facts unchanged: {h}");
    assert!(s.metric("minos_agent_bad_frames_total").unwrap_or(0.0) >= 7.0);
    // Pushing messages: unknown hosts, hosts without an agent, bad bodies, full queues.
    let post = |host: &str, body: &str, token: &str| {
        let r = crate::util::client()
            .post(s.url(&format!("/api/ops/v1/agents/{host}/messages")))
            .bearer_auth(token)
            .body(body.to_string())
            .send()
            .expect("push");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    send(
        &s,
        reqwest::Method::POST,
        "/api/ops/v1/hosts",
        &admin,
        serde_json::json!({"hostname": "manual"}),
    );
    let ping = r#"{"kind":"ping","body":{}}"#;
    assert_eq!(post("nowhere", ping, &admin).0, 404);
    assert_eq!(post("manual", ping, &admin).0, 404);
    assert_eq!(post("h1", ping, "wrong").0, 401);
    assert_eq!(post("h1", ping, &api).0, 403, "admin tokens only");
    assert_eq!(post("h1", "{", &admin).0, 400);
    assert_eq!(post("h1", r#"{"kind":""}"#, &admin).0, 400);
    assert_eq!(post("h1", ping, &admin).0, 202);
    assert_eq!(post("h1", ping, &admin).0, 202);
    let (code, body) = post("h1", ping, &admin);
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("queue"), "{body}");
    assert_eq!(
        messages(&s, &admin, "h1")["queued"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (code, _) = call(&s, "/api/ops/v1/agents/nowhere/messages", Some(&admin));
    assert_eq!(code, 404);
}

/// The messages `host`'s agent sent of `kind`, bodies only.
fn received(s: &Server, admin: &str, host: &str, kind: &str) -> Vec<serde_json::Value> {
    messages(s, admin, host)["received"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["kind"] == kind)
        .map(|m| m["body"].clone())
        .collect()
}

fn send_kind(s: &Server, admin: &str, host: &str, kind: &str, body: serde_json::Value) {
    let (code, v) = send(
        s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/agents/{host}/messages"),
        admin,
        serde_json::json!({"kind": kind, "body": body}),
    );
    assert_eq!(code, 202, "{v}");
}

/// The `run.finished` of `task`, once it arrived.
fn finished(s: &Server, admin: &str, host: &str, task: u64) -> serde_json::Value {
    eventually(&format!("task {task} finished"), || {
        received(s, admin, host, "run.finished")
            .into_iter()
            .find(|b| b["task"] == task)
            .ok_or_else(|| messages(s, admin, host).to_string())
    })
}

#[test]
fn agents_run_scripts_stream_output_and_report_each_result_once() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, enroll) = started(dir.path(), &[]);
    let url = s.url("");
    let a = agent(dir.path(), &url, "runner", Some(&enroll));
    wait_status(&s, &admin, "runner", "online");
    let run = |task: u64, script: &str, extra: serde_json::Value| {
        let mut body = serde_json::json!({"task": task, "attempt": 1, "interpreter": "bash",
            "script": script, "timeout_ms": 20_000});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        send_kind(&s, &admin, "runner", "run", body);
    };
    run(
        1,
        "echo out; echo err >&2; for i in 1 2 3; do echo line $i; sleep 0.3; done; exit 3",
        serde_json::json!({}),
    );
    // Output arrives while the script runs, before its result.
    let first_output = eventually("streamed output", || {
        let outs = received(&s, &admin, "runner", "run.output");
        let done = received(&s, &admin, "runner", "run.finished");
        if !outs.is_empty() {
            Ok(done.is_empty())
        } else {
            Err("no output yet".into())
        }
    });
    assert!(first_output, "output was seen only after the result");
    let f = finished(&s, &admin, "runner", 1);
    assert_eq!(f["outcome"], "failed", "{f}");
    assert_eq!(f["exit_code"], 3, "{f}");
    let mut stdout = Vec::new();
    for o in received(&s, &admin, "runner", "run.output") {
        if o["stream"] == "stdout" {
            let data = base64::engine::general_purpose::STANDARD
                .decode(o["data"].as_str().unwrap_or(""))
                .expect("base64");
            stdout.extend(data);
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "out\nline 1\nline 2\nline 3\n"
    );
    // A user that does not exist: refused, nothing run.
    run(
        2,
        "touch /tmp/should-not-exist",
        serde_json::json!({"user": "no-such-user-here"}),
    );
    let f = finished(&s, &admin, "runner", 2);
    assert_eq!(f["outcome"], "rejected", "{f}");
    assert!(
        f["error"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-user-here"),
        "{f}"
    );
    // Kill: the script and its children.
    run(3, "sleep 600 & sleep 600", serde_json::json!({}));
    eventually("task 3 started", || {
        received(&s, &admin, "runner", "run.started")
            .into_iter()
            .find(|b| b["task"] == 3)
            .ok_or_else(|| "not yet".to_string())
    });
    send_kind(
        &s,
        &admin,
        "runner",
        "kill",
        serde_json::json!({"task": 3, "attempt": 1}),
    );
    let f = finished(&s, &admin, "runner", 3);
    assert_eq!(f["outcome"], "killed", "{f}");
    // Timeouts.
    run(4, "sleep 600", serde_json::json!({"timeout_ms": 300}));
    assert_eq!(finished(&s, &admin, "runner", 4)["outcome"], "timed_out");
    // An agent killed mid-script reports the script interrupted when it is back.
    run(5, "sleep 600", serde_json::json!({}));
    eventually("task 5 started", || {
        received(&s, &admin, "runner", "run.started")
            .into_iter()
            .find(|b| b["task"] == 5)
            .ok_or_else(|| "not yet".to_string())
    });
    let pid: u32 = received(&s, &admin, "runner", "run.started")
        .into_iter()
        .find(|b| b["task"] == 5)
        .and_then(|b| b["pid"].as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .expect("pid");
    drop(a);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the script outlives its agent"
    );
    let _a = agent(dir.path(), &url, "runner", None);
    let f = finished(&s, &admin, "runner", 5);
    assert_eq!(f["outcome"], "interrupted", "{f}");
    // The restarted agent stopped what was left of it.
    eventually("the orphan stopped", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its parent.
        if stat.is_empty() || stat.contains(") Z") {
            Ok(())
        } else {
            Err(stat)
        }
    });
    // Each result arrived once.
    std::thread::sleep(Duration::from_millis(500));
    let tasks: Vec<u64> = received(&s, &admin, "runner", "run.finished")
        .iter()
        .filter_map(|b| b["task"].as_u64())
        .collect();
    assert_eq!(tasks, vec![1, 2, 3, 4, 5]);
}
