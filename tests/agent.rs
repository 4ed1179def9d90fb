//! `minos agent` against a real server: its host metrics become queryable with PromQL
//! under the host name it reports, two agents side by side stay apart, and an agent
//! started before its server delivers once the server is up.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Server, json, urlencode};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(server: &str, hostname: &str) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_minos"))
            .args(["agent", "--server", server, "--hostname", hostname])
            .args(["--interval", "300ms"])
            .env_remove("MINOS_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    )
}

/// Polls an instant query until its result has `n` series.
fn wait_for(s: &Server, q: &str, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = s.get(&format!("/api/v1/query?query={}", urlencode(q)));
        assert_eq!(code, 200, "{body}");
        let v = json(&body);
        if v["data"]["result"].as_array().map(Vec::len) == Some(n) {
            return v["data"]["result"].clone();
        }
        assert!(Instant::now() < deadline, "{q}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agents_push_host_metrics_queryable_by_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), &[]);
    let url = s.url("");
    let _a = agent(&url, "agent-a");
    let _b = agent(&url, "agent-b");
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
    // Rates work on what the agents push.
    wait_for(
        &s,
        r#"sum by (instance) (rate(node_cpu_seconds_total{job="node"}[5s]))"#,
        2,
    );
}

#[test]
fn an_agent_started_before_its_server_delivers_once_it_is_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Learn a free port from a first server, stop it, and point the agent there.
    let s = Server::start(&data, &[]);
    let addr = s.addr.clone();
    s.stop();
    let _a = agent(&format!("http://{addr}"), "early-agent");
    std::thread::sleep(Duration::from_millis(700));
    let s = Server::start_on(&data, &addr, &[]);
    wait_for(&s, r#"node_load1{instance="early-agent"}"#, 1);
}
