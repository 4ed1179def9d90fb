//! Batch execution end to end: a real server and several real agents on loopback.
//! Tasks on every host within their concurrency (checked from the agents' own start and
//! end times), the failure tolerance, canaries, health gates, cancel and timeouts,
//! re-runs by host state, one task at a time per host, a lost agent, a server restart
//! mid-task, streaming output (whole and once across a server outage or kill), recipes,
//! the audit trail, and bad input refused with nothing run.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::{Agent, agent, eventually, started, wait_status};
use crate::util::{Server, call, cli, send};

/// A server and `n` agents `h1..hn`, all online.
fn cluster(dir: &Path, n: usize, extra: &[&str]) -> (Server, String, String, Vec<Agent>) {
    let (s, admin, enroll) = started(dir, extra);
    let url = s.url("");
    let agents: Vec<Agent> = (1..=n)
        .map(|i| agent(dir, &url, &format!("h{i}"), Some(&enroll)))
        .collect();
    for i in 1..=n {
        wait_status(&s, &admin, &format!("h{i}"), "online");
    }
    (s, admin, enroll, agents)
}

/// `POST /api/ops/v1/tasks`; status and body.
fn create(s: &Server, admin: &str, body: Value) -> (u16, Value) {
    send(s, reqwest::Method::POST, "/api/ops/v1/tasks", admin, body)
}

/// Creates a task that must be accepted; its id.
fn task(s: &Server, admin: &str, body: Value) -> i64 {
    let (code, v) = create(s, admin, body);
    assert_eq!(code, 200, "{v}");
    v["data"]["id"].as_i64().expect("task id")
}

fn show(s: &Server, admin: &str, id: i64) -> Value {
    let (code, v) = call(s, &format!("/api/ops/v1/tasks/{id}"), Some(admin));
    assert_eq!(code, 200, "{v}");
    v["data"].clone()
}

/// Waits until the task is in one of `states`; returns it.
fn wait_task(s: &Server, admin: &str, id: i64, states: &[&str]) -> Value {
    eventually(&format!("task {id} in {states:?}"), || {
        let t = show(s, admin, id);
        let finished = ["succeeded", "failed", "cancelled"];
        // A cancelled task is final once its killed scripts have reported.
        let settled = !finished.iter().any(|f| t["state"] == *f) || !t["finished_at"].is_null();
        if settled && states.iter().any(|st| t["state"] == *st) {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    })
}

fn act(s: &Server, admin: &str, id: i64, what: &str) -> (u16, Value) {
    send(
        s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/tasks/{id}/{what}"),
        admin,
        json!({}),
    )
}

fn host<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["hostname"] == name))
        .unwrap_or_else(|| panic!("no host {name} in {t}"))
}

fn states(t: &Value) -> Vec<String> {
    t["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["state"].as_str().unwrap_or("").to_string())
        .collect()
}

fn output(s: &Server, admin: &str, id: i64, hostname: &str) -> Value {
    let (code, v) = call(
        s,
        &format!("/api/ops/v1/tasks/{id}/output?host={hostname}"),
        Some(admin),
    );
    assert_eq!(code, 200, "{v}");
    v["data"]["hosts"][0].clone()
}

/// The most hosts running at the same time, from the agents' own start times and
/// durations.
fn max_overlap(t: &Value) -> usize {
    let mut edges = Vec::new();
    for h in t["hosts"].as_array().into_iter().flatten() {
        let start = h["started_ms"].as_i64().expect("started_ms");
        let end = start + h["duration_ms"].as_i64().expect("duration_ms");
        edges.push((start, 1i32));
        edges.push((end, -1i32));
    }
    // An end at the same millisecond as a start comes first.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

fn audit(s: &Server, admin: &str, query: &str) -> Vec<Value> {
    let (code, v) = call(s, &format!("/api/ops/v1/audit?{query}"), Some(admin));
    assert_eq!(code, 200, "{v}");
    v["data"]["entries"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_task_runs_on_every_host_within_its_concurrency_and_streams_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 4, &[]);
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "concurrency": "2",
            "script": "echo \"hello from $MINOS_HOSTNAME\"; echo warn >&2; sleep 0.4"}),
    );
    let t = wait_task(&s, &admin, id, &["succeeded", "failed"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(states(&t), vec!["succeeded"; 4]);
    assert!(max_overlap(&t) <= 2, "more than 2 at once: {t}");
    assert_eq!(t["created_by"], "admin:created at first start");
    for i in 1..=4 {
        let o = output(&s, &admin, id, &format!("h{i}"));
        assert_eq!(o["stdout"], format!("hello from h{i}\n"), "{o}");
        assert_eq!(o["stderr"], "warn\n", "{o}");
    }
    // A script printing a line a second is visible while it runs.
    let id = task(
        &s,
        &admin,
        json!({"target": "h1",
            "script": "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done"}),
    );
    let seen = eventually("output while running", || {
        let o = output(&s, &admin, id, "h1");
        if o["state"] == "running" && o["stdout"].as_str().unwrap_or("").contains("tick 2") {
            Ok(o)
        } else {
            Err(o.to_string())
        }
    });
    assert!(
        !seen["stdout"].as_str().unwrap_or("").contains("tick 6"),
        "{seen}"
    );
    let t = wait_task(&s, &admin, id, &["succeeded"]);
    assert_eq!(host(&t, "h1")["exit_code"], 0);
    // Output past the task's bound is cut and marked.
    let id = task(
        &s,
        &admin,
        json!({"target": "h2", "max_output": 1000,
            "script": "head -c 5000 /dev/zero | tr '\\0' x"}),
    );
    let t = wait_task(&s, &admin, id, &["succeeded"]);
    assert_eq!(host(&t, "h2")["truncated"], true, "{t}");
    let o = output(&s, &admin, id, "h2");
    assert_eq!(o["stdout"].as_str().map(str::len), Some(1000));
    // The list shows the newest first with counts.
    let (code, v) = call(&s, "/api/ops/v1/tasks?limit=2", Some(&admin));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["tasks"][0]["id"], id);
    assert_eq!(v["data"]["tasks"][0]["counts"]["succeeded"], 1);
    assert_eq!(v["data"]["tasks"].as_array().map(Vec::len), Some(2));
}

#[test]
fn failures_pause_at_the_tolerance_and_a_failed_canary_stops_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 4, &[]);
    // Every host fails; one failure is tolerated: the second pauses the task, and no
    // third host starts.
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "concurrency": "1", "max_fail": "1", "script": "exit 7"}),
    );
    let t = wait_task(&s, &admin, id, &["paused"]);
    assert!(
        t["reason"]
            .as_str()
            .unwrap_or("")
            .contains("failure tolerance"),
        "{t}"
    );
    std::thread::sleep(Duration::from_millis(800));
    let t = show(&s, &admin, id);
    assert_eq!(t["counts"]["failed"], 2, "{t}");
    assert_eq!(t["counts"]["queued"], 2, "{t}");
    assert_eq!(host(&t, "h1")["exit_code"], 7);
    let pauses = audit(&s, &admin, &format!("task={id}&action=task.pause"));
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(pauses[0]["actor"], "system");
    // Cancel: what never started is skipped.
    let (code, v) = act(&s, &admin, id, "cancel");
    assert_eq!(code, 200, "{v}");
    let t = wait_task(&s, &admin, id, &["cancelled"]);
    assert_eq!(t["counts"]["skipped"], 2, "{t}");
    // A cancelled task cannot be paused or resumed.
    let (code, v) = act(&s, &admin, id, "resume");
    assert_eq!(code, 409, "{v}");

    // A canary that fails: the rest never start.
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "canary": 1, "concurrency": "100%", "max_fail": "100%",
            "script": "[ \"$MINOS_HOSTNAME\" != h1 ]"}),
    );
    let t = wait_task(&s, &admin, id, &["failed"]);
    assert_eq!(states(&t), vec!["failed", "skipped", "skipped", "skipped"]);
    assert!(t["reason"].as_str().unwrap_or("").contains("canary"), "{t}");

    // Re-run by state: only the failed host, with the original script and settings.
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/tasks/{id}/retry"),
        &admin,
        json!({"states": ["failed"]}),
    );
    assert_eq!(code, 200, "{v}");
    let retry = v["data"]["id"].as_i64().expect("id");
    assert_eq!(v["data"]["retry_of"], id);
    assert_eq!(v["data"]["canary"], 1);
    let t = wait_task(&s, &admin, retry, &["failed"]);
    assert_eq!(t["hosts_total"], 1);
    assert_eq!(host(&t, "h1")["state"], "failed");
    // And the skipped ones: they succeed.
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/tasks/{id}/retry"),
        &admin,
        json!({"states": ["skipped"]}),
    );
    assert_eq!(code, 200, "{v}");
    let t = wait_task(
        &s,
        &admin,
        v["data"]["id"].as_i64().expect("id"),
        &["succeeded", "failed"],
    );
    // The canary (h2) succeeds, then the rest.
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["hosts_total"], 3);
    // Retrying a task still running is refused.
    let running = task(&s, &admin, json!({"target": "h4", "script": "sleep 5"}));
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/ops/v1/tasks/{running}/retry"),
        &admin,
        json!({}),
    );
    assert_eq!(code, 409, "{v}");
    act(&s, &admin, running, "cancel");
}

/// Writes one sample of `name` = `v` now through remote_write.
fn gauge(s: &Server, name: &str, v: f64) {
    let req = collector::remote_write::proto::WriteRequest {
        timeseries: vec![crate::util::series(
            &[("__name__", name)],
            &[(crate::util::now_ms(), v)],
        )],
    };
    let (code, body) = s.write(&req);
    assert_eq!(code, 204, "{body}");
}

#[test]
fn a_firing_gate_pauses_between_batches_and_resume_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 3, &[]);
    gauge(&s, "shop_errors", 9.0);
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "batch": 1, "concurrency": "100%",
            "gate": "shop_errors > 5", "script": "true"}),
    );
    let t = wait_task(&s, &admin, id, &["paused"]);
    let reason = t["reason"].as_str().unwrap_or("");
    assert!(reason.contains("health gate fired"), "{t}");
    assert!(reason.contains("shop_errors"), "{t}");
    assert_eq!(t["counts"]["succeeded"], 1, "{t}");
    assert_eq!(t["counts"]["queued"], 2, "{t}");
    // Healthy again: resuming counts the gate as passed; the next gate passes too.
    gauge(&s, "shop_errors", 0.0);
    let (code, v) = act(&s, &admin, id, "resume");
    assert_eq!(code, 200, "{v}");
    let t = wait_task(&s, &admin, id, &["succeeded", "paused"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    let actions: Vec<String> = audit(&s, &admin, &format!("task={id}"))
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(actions.contains(&"task.pause".to_string()), "{actions:?}");
    assert!(actions.contains(&"task.resume".to_string()), "{actions:?}");
    assert!(
        actions.contains(&"task.gate_passed".to_string()),
        "{actions:?}"
    );
}

/// Whether a process whose command line contains `marker` runs.
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
}

#[test]
fn cancel_kills_scripts_and_their_children_and_timeouts_end_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 2, &[]);
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "concurrency": "100%",
            "script": "sleep 600.417 & sleep 600.417; echo never"}),
    );
    eventually("both running", || {
        let t = show(&s, &admin, id);
        if t["counts"]["running"] == 2 && running("sleep 600.417") {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    let (code, v) = act(&s, &admin, id, "cancel");
    assert_eq!(code, 200, "{v}");
    let t = wait_task(&s, &admin, id, &["cancelled"]);
    assert_eq!(states(&t), vec!["killed", "killed"], "{t}");
    eventually("children gone", || {
        if running("sleep 600.417") {
            Err("a sleep survived".to_string())
        } else {
            Ok(())
        }
    });
    // A timeout ends the script (and the host is timed_out, the task failed).
    let id = task(
        &s,
        &admin,
        json!({"target": "h1", "timeout": "1s", "script": "sleep 30.417"}),
    );
    let t = wait_task(&s, &admin, id, &["failed"]);
    assert_eq!(host(&t, "h1")["state"], "timed_out", "{t}");
    assert!(!running("sleep 30.417"));
}

#[test]
fn two_tasks_on_one_host_run_one_after_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let a = task(&s, &admin, json!({"target": "h1", "script": "sleep 1"}));
    let b = task(&s, &admin, json!({"target": "h1", "script": "sleep 1"}));
    let ta = wait_task(&s, &admin, a, &["succeeded"]);
    let tb = wait_task(&s, &admin, b, &["succeeded"]);
    let (ha, hb) = (host(&ta, "h1"), host(&tb, "h1"));
    let a_end = ha["started_ms"].as_i64().expect("start") + ha["duration_ms"].as_i64().expect("d");
    let b_start = hb["started_ms"].as_i64().expect("start");
    assert!(
        b_start >= a_end,
        "b started at {b_start}, a ended at {a_end}"
    );
}

#[test]
fn an_agent_killed_mid_task_ends_agent_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, mut agents) = cluster(dir.path(), 2, &["--agent.lost-after", "2s"]);
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "concurrency": "100%", "max_fail": "100%",
            "script": "if [ \"$MINOS_HOSTNAME\" = h1 ]; then sleep 20.417; fi; echo ok"}),
    );
    eventually("h1 running", || {
        let t = show(&s, &admin, id);
        if host(&t, "h1")["state"] == "running" {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    drop(agents.remove(0));
    let t = wait_task(&s, &admin, id, &["failed"]);
    assert_eq!(host(&t, "h1")["state"], "agent_lost", "{t}");
    assert_eq!(host(&t, "h2")["state"], "succeeded", "{t}");
    // A new task on a lost host ends at once, saying why.
    let id = task(&s, &admin, json!({"target": "h1", "script": "true"}));
    let t = wait_task(&s, &admin, id, &["failed"]);
    assert_eq!(host(&t, "h1")["state"], "agent_lost", "{t}");
    assert!(
        host(&t, "h1")["error"]
            .as_str()
            .unwrap_or("")
            .contains("lost"),
        "{t}"
    );
}

#[test]
fn a_server_restarted_mid_task_continues_it_and_results_arrive_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 2, &[]);
    let addr = s.addr.clone();
    let id = task(
        &s,
        &admin,
        json!({"target": "*", "concurrency": "1", "script": "sleep 2; echo done"}),
    );
    eventually("first host running", || {
        let t = show(&s, &admin, id);
        if t["counts"]["running"] == 1 {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    // Down while the script runs: its result is sent while nobody listens.
    s.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let s = Server::start_on(&dir.path().join("data"), &addr, &[]);
    let t = wait_task(&s, &admin, id, &["succeeded", "failed"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(states(&t), vec!["succeeded", "succeeded"]);
    // Exactly one result per host in the audit trail.
    let results = audit(&s, &admin, &format!("task={id}&action=host.result"));
    assert_eq!(results.len(), 2, "{results:?}");
    let finished = audit(&s, &admin, &format!("task={id}&action=task.finish"));
    assert_eq!(finished.len(), 1, "{finished:?}");
    let (code, v) = call(&s, "/api/ops/v1/audit/verify", Some(&admin));
    assert_eq!(code, 200, "{v}");
}

/// Waits until `path` exists (a script reached a point).
fn wait_file(path: &Path) {
    eventually(&format!("{} exists", path.display()), || {
        if path.exists() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
}

#[test]
fn output_printed_before_during_and_after_a_server_outage_arrives_whole_and_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let addr = s.addr.clone();
    // The script moves on when the test says so: the first part is printed (and stored)
    // before the server dies, the second while it is down, the third once it is back.
    let (down, printed, up) = (
        dir.path().join("down"),
        dir.path().join("printed"),
        dir.path().join("up"),
    );
    let script = format!(
        "echo before; echo before-err >&2\n\
         while [ ! -e {down} ]; do sleep 0.05; done\n\
         echo during; seq 1 20000; echo during-err >&2\n\
         sleep 1; touch {printed}\n\
         while [ ! -e {up} ]; do sleep 0.05; done\n\
         echo after; echo after-err >&2\n",
        down = down.display(),
        printed = printed.display(),
        up = up.display(),
    );
    let id = task(&s, &admin, json!({"target": "h1", "script": script}));
    eventually("the first part stored", || {
        let o = output(&s, &admin, id, "h1");
        if o["stdout"] == "before\n" && o["stderr"] == "before-err\n" {
            Ok(())
        } else {
            Err(o.to_string())
        }
    });
    s.kill9();
    std::fs::write(&down, b"").expect("down");
    // Printed with nobody listening. The script lingers a second after it: time for the
    // agent to read it and queue it before the server is back (the assertions below hold
    // however that goes).
    wait_file(&printed);
    let s = Server::start_on(&dir.path().join("data"), &addr, &[]);
    std::fs::write(&up, b"").expect("up");
    let t = wait_task(&s, &admin, id, &["succeeded", "failed"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    let mut stdout = String::from("before\nduring\n");
    for i in 1..=20000 {
        stdout.push_str(&format!("{i}\n"));
    }
    stdout.push_str("after\n");
    let stderr = "before-err\nduring-err\nafter-err\n";
    let o = output(&s, &admin, id, "h1");
    assert_eq!(o["truncated"], false, "{}", o["truncated"]);
    let got = o["stdout"].as_str().unwrap_or("");
    assert!(
        got == stdout,
        "{} bytes stored, {} printed; gaps: {:?}",
        got.len(),
        stdout.len(),
        got.lines()
            .filter(|l| l.contains("missing"))
            .collect::<Vec<_>>()
    );
    assert_eq!(o["stderr"], stderr);
    // Every byte counted once against the output bound.
    assert_eq!(
        host(&t, "h1")["output_bytes"].as_u64(),
        Some((stdout.len() + stderr.len()) as u64),
        "{t}"
    );
}

#[test]
fn output_streaming_when_the_server_is_killed_is_stored_whole_and_once() {
    // Output streams fast while the server dies: chunks it had taken but not written
    // yet must not have been acknowledged (the agent would not send them again), and
    // chunks written but not acknowledged come again and must not be kept twice.
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let addr = s.addr.clone();
    let script = "for i in $(seq 0 99); do seq -f line-%.0f $((i*10000+1)) $((i*10000+10000)); \
                  sleep 0.02; done";
    let id = task(
        &s,
        &admin,
        json!({"target": "h1", "script": script, "max_output": 16 << 20}),
    );
    eventually("output streaming", || {
        let t = show(&s, &admin, id);
        if host(&t, "h1")["output_bytes"].as_u64().unwrap_or(0) > 2 << 20 {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    s.kill9();
    let s = Server::start_on(&dir.path().join("data"), &addr, &[]);
    let t = wait_task(&s, &admin, id, &["succeeded", "failed"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    let mut stdout = String::new();
    for i in 1..=1_000_000 {
        stdout.push_str(&format!("line-{i}\n"));
    }
    let o = output(&s, &admin, id, "h1");
    assert_eq!(o["truncated"], false, "{}", host(&t, "h1"));
    let got = o["stdout"].as_str().unwrap_or("");
    assert!(
        got == stdout,
        "{} bytes stored, {} printed; gaps: {:?}",
        got.len(),
        stdout.len(),
        got.lines()
            .filter(|l| l.contains("missing"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        host(&t, "h1")["output_bytes"].as_u64(),
        Some(stdout.len() as u64),
        "{t}"
    );
}

#[test]
fn recipes_run_with_their_parameters_and_versions_are_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let (code, v) = call(&s, "/api/ops/v1/recipes", Some(&admin));
    assert_eq!(code, 200, "{v}");
    let names: Vec<&str> = v["data"]["recipes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for want in [
        "mysql-install",
        "redis-install",
        "kafka-install",
        "diagnostics",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let id = task(&s, &admin, json!({"target": "h1", "recipe": "diagnostics"}));
    let t = wait_task(&s, &admin, id, &["succeeded", "failed"]);
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["recipe"]["name"], "diagnostics");
    assert!(
        t["recipe"]["version"].as_u64().is_some_and(|v| v >= 1),
        "{t}"
    );
    // A user recipe: version 1, then 2; each use records its version.
    let recipe = |greeting: &str| {
        json!({"name": "greet", "description": "says hello", "interpreter": "bash",
            "params": [{"name": "who", "type": "string", "required": true,
                        "description": "whom to greet"}],
            "script": format!("echo \"{greeting} $MINOS_PARAM_WHO\"")})
    };
    for (g, version) in [("hello", 1), ("bonjour", 2)] {
        let (code, v) = send(
            &s,
            reqwest::Method::POST,
            "/api/ops/v1/recipes",
            &admin,
            recipe(g),
        );
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["data"]["version"], version, "{v}");
    }
    for (r, want) in [("greet", "bonjour world\n"), ("greet@1", "hello world\n")] {
        let id = task(
            &s,
            &admin,
            json!({"target": "h1", "recipe": r, "params": {"who": "world"}}),
        );
        let t = wait_task(&s, &admin, id, &["succeeded", "failed"]);
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(output(&s, &admin, id, "h1")["stdout"], want);
        let created = audit(&s, &admin, &format!("task={id}&action=task.create"));
        assert_eq!(created[0]["detail"]["recipe"]["name"], "greet");
        assert_eq!(created[0]["detail"]["params"]["who"], "world");
    }
    // A shipped name cannot be taken; an api token cannot add recipes.
    let (code, v) = send(
        &s,
        reqwest::Method::POST,
        "/api/ops/v1/recipes",
        &admin,
        json!({"name": "diagnostics", "interpreter": "bash", "script": "true"}),
    );
    assert_eq!(code, 409, "{v}");
}

#[test]
fn bad_task_requests_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let cases = [
        (
            json!({"target": "", "script": script}),
            400,
            "selector is empty",
        ),
        (
            json!({"target": "nosuchhost", "script": script}),
            400,
            "nosuchhost",
        ),
        (
            json!({"target": "role=db", "script": script}),
            400,
            "matches no host",
        ),
        (
            json!({"target": "h1", "recipe": "no-such-recipe"}),
            404,
            "unknown recipe",
        ),
        (
            json!({"target": "h1", "recipe": "service-restart"}),
            400,
            "required",
        ),
        (
            json!({"target": "h1", "recipe": "diagnostics", "params": {"bogus": "1"}}),
            400,
            "bogus",
        ),
        (json!({"target": "h1"}), 400, "script or a recipe"),
        (
            json!({"target": "h1", "script": script, "concurrency": "x"}),
            400,
            "concurrency",
        ),
        (
            json!({"target": "h1", "script": script, "max_fail": "200%"}),
            400,
            "max_fail",
        ),
        (
            json!({"target": "h1", "script": script, "timeout": "soon"}),
            400,
            "timeout",
        ),
        (
            json!({"target": "h1", "script": script, "gate": "sum(("}),
            400,
            "gate",
        ),
        (
            json!({"target": "h1", "script": script, "interpreter": "perl"}),
            400,
            "interpreter",
        ),
        (
            json!({"target": "h1", "script": script, "user": "-x"}),
            400,
            "user",
        ),
        (
            json!({"target": "h1", "script": script, "env": {"1X": "y"}}),
            400,
            "env",
        ),
        (
            json!({"target": "h1", "script": script, "frobnicate": true}),
            400,
            "frobnicate",
        ),
        (json!({"target": "h1", "script": "  \n"}), 400, "empty"),
    ];
    for (body, status, says) in cases {
        let (code, v) = create(&s, &admin, body.clone());
        assert_eq!(code, status, "{body} -> {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(says),
            "{body} -> {v} (expected to mention {says:?})"
        );
    }
    let (_, v) = call(&s, "/api/ops/v1/tasks", Some(&admin));
    assert_eq!(v["data"]["tasks"], json!([]), "{v}");
    // A user that does not exist on the host: the agent refuses, nothing runs.
    let id = task(
        &s,
        &admin,
        json!({"target": "h1", "script": script, "user": "no-such-user-417"}),
    );
    let t = wait_task(&s, &admin, id, &["failed"]);
    let h = host(&t, "h1");
    assert_eq!(h["state"], "failed", "{t}");
    assert!(
        h["error"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-user-417"),
        "{t}"
    );
    assert!(!marker.exists(), "the script ran");
    // An agent whose configuration allows only some run-as users refuses the others.
    let url = s.url("");
    let enroll = std::fs::read_to_string(dir.path().join("data/enroll.token")).expect("token");
    let _strict = crate::agent::agent_with(
        dir.path(),
        &url,
        "strict",
        Some(enroll.trim()),
        &["--allow-user", "daemon"],
    );
    wait_status(&s, &admin, "strict", "online");
    let id = task(
        &s,
        &admin,
        json!({"target": "strict", "script": script, "user": "root"}),
    );
    let t = wait_task(&s, &admin, id, &["failed"]);
    let h = host(&t, "strict");
    assert!(h["error"].as_str().unwrap_or("").contains("root"), "{t}");
    assert!(!marker.exists(), "the script ran");
    // Unknown tasks, bad ids.
    let (code, _) = call(&s, "/api/ops/v1/tasks/999", Some(&admin));
    assert_eq!(code, 404);
    let (code, _) = call(&s, "/api/ops/v1/tasks/abc", Some(&admin));
    assert_eq!(code, 400);
    let (code, _) = act(&s, &admin, 999, "pause");
    assert_eq!(code, 404);
    // Without a token: 401.
    let (code, _) = call(&s, "/api/ops/v1/tasks", None);
    assert_eq!(code, 401);
}

#[test]
fn the_audit_trail_records_who_did_what_and_detects_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let script = "echo audited";
    let id = task(&s, &admin, json!({"target": "h1", "script": script}));
    wait_task(&s, &admin, id, &["succeeded"]);
    let entries = audit(&s, &admin, &format!("task={id}"));
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["task.create", "host.result", "task.finish"]);
    let c = &entries[0];
    assert_eq!(c["actor"], "admin:created at first start");
    assert_eq!(c["detail"]["script"], script);
    let sha = c["detail"]["script_sha256"].as_str().unwrap_or("");
    assert_eq!(sha.len(), 64);
    assert_eq!(show(&s, &admin, id)["script_sha256"], sha);
    assert_eq!(c["detail"]["hosts"], json!(["h1"]));
    assert_eq!(entries[1]["detail"]["state"], "succeeded");
    assert_eq!(entries[1]["detail"]["exit_code"], 0);
    // The newest entries, in order.
    let last = audit(&s, &admin, "last=2");
    let actions: Vec<&str> = last.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, vec!["host.result", "task.finish"]);
    let (code, v) = call(&s, "/api/ops/v1/audit/verify", Some(&admin));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["ok"], true);
    // The log's length is kept in the TSDB too.
    let n = v["data"]["entries"].as_i64().expect("entries");
    eventually("the audit log's length in the TSDB", || {
        let (_, q) = call(&s, "/api/v1/query?query=minos_audit_entries", None);
        if q["data"]["result"][0]["value"][1] == json!(n.to_string()) {
            Ok(())
        } else {
            Err(q.to_string())
        }
    });
    // The log refuses changes; someone who removes that guard is still found out.
    s.stop();
    let db = dir.path().join("data/exec.db");
    let sql = |q: &str| {
        std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(q)
            .output()
            .expect("sqlite3")
    };
    let refused = sql("UPDATE audit SET actor = 'nobody' WHERE seq = 1");
    assert!(!refused.status.success(), "the update went through");
    // The server puts the guard back at every start.
    let unguard = || {
        let triggers = sql("SELECT name FROM sqlite_master WHERE type = 'trigger'");
        for name in String::from_utf8_lossy(&triggers.stdout).lines() {
            assert!(sql(&format!("DROP TRIGGER {name}")).status.success());
        }
    };
    unguard();
    // Entries removed from the end leave a valid chain, but not the recorded length.
    assert!(
        sql(&format!("DELETE FROM audit WHERE seq > {}", n - 2))
            .status
            .success()
    );
    let s = Server::start(&dir.path().join("data"), &[]);
    let (code, v) = call(&s, "/api/ops/v1/audit/verify", Some(&admin));
    assert_eq!(code, 409, "{v}");
    let e = v["error"].as_str().unwrap_or("");
    assert!(
        e.contains(&format!("ends at entry {}, but {n} entries", n - 2)),
        "{v}"
    );
    s.stop();
    unguard();
    assert!(
        sql("UPDATE audit SET actor = 'nobody' WHERE seq = 1")
            .status
            .success()
    );
    let s = Server::start(&dir.path().join("data"), &[]);
    let (code, v) = call(&s, "/api/ops/v1/audit/verify", Some(&admin));
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("audit entry 1"),
        "{v}"
    );
}

#[test]
fn agents_refuse_work_the_server_they_enrolled_with_did_not_sign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 1, &[]);
    let addr = s.addr.clone();
    let id = task(&s, &admin, json!({"target": "h1", "script": "true"}));
    wait_task(&s, &admin, id, &["succeeded"]);
    // The same records, but another task key: as if someone else answered in the
    // server's place.
    let data = dir.path().join("data");
    s.stop();
    std::fs::remove_file(data.join("task-signing.key")).expect("remove key");
    let s = Server::start_on(&data, &addr, &[]);
    wait_status(&s, &admin, "h1", "online");
    let marker = dir.path().join("forged-ran");
    let id = task(
        &s,
        &admin,
        json!({"target": "h1", "script": format!("touch {}", marker.display())}),
    );
    let t = wait_task(&s, &admin, id, &["failed"]);
    let h = host(&t, "h1");
    assert_eq!(h["state"], "failed", "{t}");
    assert!(
        h["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not match the server's task key"),
        "{t}"
    );
    assert!(!marker.exists(), "the agent ran work signed by another key");
}

#[test]
fn minos_run_follows_a_task_prints_each_hosts_output_and_exits_by_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 3, &[]);
    let script = dir.path().join("hello.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\necho \"hi from $MINOS_HOSTNAME\"\n[ \"$MINOS_HOSTNAME\" != h3 ] || { echo bad >&2; exit 4; }\n",
    )
    .expect("script");
    let sp = script.to_str().expect("path");
    // One host fails (tolerated): exit status 1, every host's output under its name.
    let (code, out, err) = cli(
        &s,
        &admin,
        &[
            "run",
            "--target",
            "*",
            "--script",
            sp,
            "--max-fail",
            "1",
            "--concurrency",
            "100%",
        ],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    for h in ["h1", "h2"] {
        assert!(out.contains(&format!("── {h} ── succeeded")), "{out}");
        assert!(out.contains(&format!("hi from {h}")), "{out}");
    }
    assert!(out.contains("── h3 ── failed (exit 4"), "{out}");
    assert!(out.contains("bad"), "{out}");
    assert!(out.contains("2 succeeded, 1 failed"), "{out}");
    // All succeed: 0, and --quiet prints no output blocks.
    let (code, out, err) = cli(
        &s,
        &admin,
        &["run", "--target", "h1,h2", "--script", sp, "--quiet"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("hi from"), "{out}");
    // Paused at the failure tolerance: 3, with how to go on.
    let fail = dir.path().join("fail.sh");
    std::fs::write(&fail, "exit 5\n").expect("script");
    let (code, out, err) = cli(
        &s,
        &admin,
        &[
            "run",
            "--target",
            "h1,h2",
            "--script",
            fail.to_str().expect("path"),
            "--concurrency",
            "1",
        ],
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("minos tasks resume"), "{out}");
    assert!(out.contains("failure tolerance reached"), "{out}");
    // Refused: 2, the server's message, nothing created.
    let before = {
        let (_, v) = call(&s, "/api/ops/v1/tasks", Some(&admin));
        v["data"]["tasks"].as_array().map(Vec::len)
    };
    let (code, out, err) = cli(
        &s,
        &admin,
        &["run", "--target", "nosuchhost", "--script", sp],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("nosuchhost"), "{err}");
    let (code, _, err) = cli(
        &s,
        &admin,
        &["run", "--target", "h1", "--recipe", "service-restart"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("name"), "{err}");
    let (_, v) = call(&s, "/api/ops/v1/tasks", Some(&admin));
    assert_eq!(v["data"]["tasks"].as_array().map(Vec::len), before);
    // The other commands.
    let (code, out, err) = cli(&s, &admin, &["tasks", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("failed") && out.contains("succeeded"), "{out}");
    let (code, out, err) = cli(&s, &admin, &["tasks", "output", "1", "--host", "h2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hi from h2"), "{out}");
    let (code, out, err) = cli(&s, &admin, &["tasks", "show", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("h3") && out.contains("failed"), "{out}");
    let (code, out, err) = cli(&s, &admin, &["tasks", "retry", "1", "--follow"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("retry of task 1"), "{out}");
    let (code, out, err) = cli(&s, &admin, &["audit", "--task", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("task.create") && out.contains("host.result"),
        "{out}"
    );
    let (code, out, err) = cli(&s, &admin, &["audit", "--verify"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("audit chain intact"), "{out}");
}

/// Permissions on the service tree: a token scoped to `/sre/minos` (run) and `/shop`
/// (read) runs tasks below `/sre/minos` only, sees the hosts and tasks below both and
/// nothing else, and cannot change the inventory or read the audit trail.
#[test]
fn scoped_tokens_reach_only_the_hosts_below_their_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin, _, _agents) = cluster(dir.path(), 3, &[]);
    let post =
        |path: &str, token: &str, body: Value| send(&s, reqwest::Method::POST, path, token, body);
    for (parent, name, kind) in [
        ("", "sre", "team"),
        ("/sre", "minos", "service"),
        ("/sre/minos", "web", "module"),
        ("", "shop", "team"),
    ] {
        let (code, v) = post(
            "/api/ops/v1/tree/nodes",
            &admin,
            json!({"parent": parent, "name": name, "kind": kind}),
        );
        assert_eq!(code, 200, "{v}");
    }
    for (h, node) in [("h1", "/sre/minos/web"), ("h2", "/shop")] {
        let (code, v) = post(
            "/api/ops/v1/attach",
            &admin,
            json!({"host": h, "node": node}),
        );
        assert_eq!(code, 200, "{v}");
    }
    let (code, out, err) = cli(
        &s,
        &admin,
        &[
            "token",
            "create",
            "deployer",
            "--grant",
            "/sre/minos=run",
            "--grant",
            "/shop=read",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let scoped = out.trim().to_string();
    let (code, out, err) = cli(&s, &admin, &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("deployer") && out.contains("/sre/minos=run,/shop=read"),
        "{out}"
    );

    // Hosts: only those below a grant.
    let (code, v) = call(&s, "/api/ops/v1/hosts", Some(&scoped));
    assert_eq!(code, 200, "{v}");
    let names: Vec<&str> = v["data"]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["hostname"].as_str())
        .collect();
    assert_eq!(names, ["h1", "h2"]);

    // Run where the token may; refused, with nothing run, where it may not.
    let id = task(
        &s,
        &scoped,
        json!({"target": "h1", "script": "echo scoped"}),
    );
    let t = wait_task(&s, &scoped, id, &["succeeded"]);
    assert_eq!(t["created_by"], "api:deployer", "{t}");
    // Hosts the token cannot see are counted, not named.
    for (target, named) in [("h2", "host(s): h2"), ("*", "h2 and 1 more")] {
        let (code, v) = create(&s, &scoped, json!({"target": target, "script": "echo no"}));
        assert_eq!(code, 403, "{v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(named)),
            "{v}"
        );
    }
    let (code, v) = call(&s, "/api/ops/v1/tasks", Some(&admin));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["tasks"].as_array().map(Vec::len), Some(1), "{v}");

    // Another team's task is invisible (answered as missing) and out of reach.
    let other = task(&s, &admin, json!({"target": "h3", "script": "sleep 30"}));
    for path in [
        format!("/api/ops/v1/tasks/{other}"),
        format!("/api/ops/v1/tasks/{other}/output"),
    ] {
        let (code, v) = call(&s, &path, Some(&scoped));
        assert_eq!(code, 404, "{path}: {v}");
        assert!(!v.to_string().contains("h3"), "{v}");
    }
    let (code, v) = act(&s, &scoped, other, "cancel");
    assert_eq!(code, 404, "{v}");
    let (code, v) = call(&s, "/api/ops/v1/tasks", Some(&scoped));
    assert_eq!(code, 200, "{v}");
    let ids: Vec<i64> = v["data"]["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert_eq!(ids, [id], "{v}");
    let (code, v) = act(&s, &admin, other, "cancel");
    assert_eq!(code, 200, "{v}");

    // The inventory, the audit trail and tokens need an unscoped token.
    let (code, v) = post(
        "/api/ops/v1/tree/nodes",
        &scoped,
        json!({"parent": "/sre", "name": "x", "kind": "service"}),
    );
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("scoped token")),
        "{v}"
    );
    for path in ["/api/ops/v1/audit", "/api/ops/v1/tokens"] {
        let (code, v) = call(&s, path, Some(&scoped));
        assert_eq!(code, 403, "{path}: {v}");
    }
    // Nor may it send (or resolve) alerts through Alertmanager's API.
    let (code, v) = post(
        "/api/v2/alerts",
        &scoped,
        json!([{"labels": {"alertname": "Fake"}}]),
    );
    assert_eq!(code, 403, "{v}");

    // Bad grants are refused and create nothing.
    for (grants, what) in [
        (json!([{"node": "/nowhere", "role": "run"}]), "no such node"),
        (json!([{"node": "/shop", "role": "root"}]), "unknown role"),
        (
            json!([{"node": "/shop", "role": "read"}, {"node": "/shop", "role": "run"}]),
            "one role per node",
        ),
    ] {
        let (code, v) = post(
            "/api/ops/v1/tokens",
            &admin,
            json!({"kind": "api", "name": "bad", "grants": grants}),
        );
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(what)), "{v}");
    }
    let (code, v) = post(
        "/api/ops/v1/tokens",
        &admin,
        json!({"kind": "enroll", "name": "bad", "grants": [{"node": "/shop", "role": "read"}]}),
    );
    assert_eq!(code, 400, "{v}");
    let (code, v) = call(&s, "/api/ops/v1/tokens", Some(&admin));
    assert_eq!(code, 200, "{v}");
    assert!(!v.to_string().contains("\"bad\""), "{v}");
}
