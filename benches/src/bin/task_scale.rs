//! Scale benchmark of task execution: one task on every host of a 5,000-agent fleet,
//! played by this process against one real `minos server`.
//!
//! `task_scale` starts `minos server` on a fresh data directory and a free loopback
//! port, enrolls `--agents` agents and connects them as `agent_scale` does
//! (`minos_benches::agent_sim`), waits `--settle`, then creates one task through
//! `POST /api/ops/v1/tasks` (admin token) on `*` with `--concurrency` and `max_fail`
//! 100 %. Each simulated agent answers a `run` message as the real agent does, without
//! running anything: it acknowledges the message, sends `run.started` at once, and after
//! `--script-ms` sends `run.output` (`hello from <hostname>\n` on stdout) and
//! `run.finished` (succeeded, exit code 0), each an upward message the server
//! acknowledges once it is written. It measures, from just before the POST:
//!
//! - (a) the first `run` received by any agent;
//! - (b) that host's output visible through `GET /api/ops/v1/tasks/N/output?host=H`
//!   (polled every `--poll` from when the POST answered with the task's id, so never
//!   earlier than that answer);
//! - (c) the last `run.finished` acknowledged by the server;
//! - (d) the API reporting the task finished (`GET /api/ops/v1/tasks?limit=1`: polled
//!   every second while the task runs, every `--poll` once (c) is reached; the task is
//!   written finished in the same transaction as its last result, so it cannot be
//!   reported before (c) minus one acknowledgement's trip);
//! - the most hosts in flight at the agents at once: from `run` received to
//!   `run.finished` sent (within the server's own count, so at most `--concurrency`),
//!   and to `run.finished` acknowledged (the server may dispatch the next host before
//!   the result that freed its slot is written, so this one may exceed it);
//! - how long the server took to acknowledge `run.started` and `run.finished` (they wait
//!   for the engine's next write), and each host's `run` → `run.finished` acknowledged;
//! - the server's CPU time (`/proc/<pid>/stat`) from the POST to (d), its RSS before the
//!   task and the most seen while it ran (sampled every 100 ms), this process's CPU and
//!   the machine's load.
//!
//! It then checks through `GET /api/ops/v1/tasks/N` that every host succeeded with its
//! output kept. It exits non-zero when an agent did not connect or lost its connection,
//! an agent got no `run`, got one twice or got one without a signature (it does not
//! verify signatures: that is the agent's cost, not the server's), a result went
//! unacknowledged, the task did
//! not end `succeeded` with every host succeeded within `--timeout`, an output is not
//! what was sent, or more hosts than `--concurrency` ran at once. The targets (whole
//! task under 30 s, first output within 1 s) are reported, not enforced. See
//! `benches/task_scale.md`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use minos_benches::agent_sim::{
    CHANNEL_PATH, Ws, connect, enroll, hostname, micros, percentile, start_server,
};
use minos_benches::harness::{
    ProcSample, cpu_pct, default_minos, exit_with, machine_line, machine_ticks, parse_duration,
    proc_sample, raise_fd_limit,
};
use minos_benches::splitmix64;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;

const TASKS_PATH: &str = "/api/ops/v1/tasks";
const TARGET_TOTAL: Duration = Duration::from_secs(30);
const TARGET_FIRST_OUTPUT: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(
    name = "task_scale",
    about = "One task on thousands of simulated agents against one minos server: time to the last result, server CPU and RSS"
)]
struct Cli {
    /// The minos binary [default: $CARGO_TARGET_DIR/release/minos, else the workspace's
    /// target/release/minos, else `minos` on PATH].
    #[arg(long)]
    minos: Option<PathBuf>,
    /// Simulated agents (the task runs on all of them).
    #[arg(long, default_value_t = 5000)]
    agents: usize,
    /// The task's concurrency: a count or a percentage of the hosts.
    #[arg(long, default_value = "500")]
    concurrency: String,
    /// The task's script (sent to the agents, which do not run it).
    #[arg(long, default_value = "echo hello")]
    script: String,
    /// How long the simulated script runs, in ms: from `run.started` to `run.output`
    /// and `run.finished`.
    #[arg(long, default_value_t = 10)]
    script_ms: u64,
    /// Channel connections opened per second before the task.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// Enrollment requests in flight.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// Interval between an agent's heartbeats.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Wait between the last connection and the task (long enough to attach a profiler
    /// to the server's pid, printed before).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// How often the API is polled for the first output, and for the task's end once
    /// every result is acknowledged.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    poll: Duration,
    /// Give up on the task after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
    /// Seed of the agents' heartbeat phases.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the server's data directory and log.
    #[arg(long)]
    keep: bool,
}

/// State shared by the agent tasks and the pollers.
struct Shared {
    /// Just before the task's POST: the origin of every time reported.
    t0: OnceLock<Instant>,
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// The first `run` received by any agent: when, and by which agent.
    first_run: OnceLock<(Instant, usize)>,
    first_run_seen: Notify,
    /// Hosts between `run` received and `run.finished` sent, and the most at once.
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Hosts between `run` received and `run.finished` acknowledged, and the most.
    unacked: AtomicUsize,
    max_unacked: AtomicUsize,
    /// `run.finished` acknowledged, and the last time one was.
    finished: AtomicUsize,
    last_finished_us: AtomicU64,
    all_finished: Notify,
    agents: usize,
}

impl Shared {
    fn since_t0(&self, at: Instant) -> Duration {
        self.t0
            .get()
            .map_or(Duration::ZERO, |t0| at.saturating_duration_since(*t0))
    }
}

/// How a simulated agent behaves.
struct Behaviour {
    url: String,
    heartbeat: Duration,
    script: Duration,
    /// This process's start, in Unix ms: every simulated agent's incarnation.
    incarnation: u64,
}

/// What one simulated agent saw.
#[derive(Default)]
struct AgentResult {
    /// `run` messages received (each new id once).
    runs: u32,
    /// `run` messages received again (an id already delivered).
    repeated: u32,
    /// `run` messages without a 64-byte hex `signature` (the real agent refuses them; this
    /// one does not check the signature itself).
    unsigned: u32,
    /// The first `run`, since t0, in µs.
    run_us: Option<u32>,
    /// `run` received → `run.finished` acknowledged, in µs.
    cycle_us: Option<u32>,
    /// Sent → acknowledged by the server, in µs.
    started_ack_us: Option<u32>,
    output_ack_us: Option<u32>,
    finished_ack_us: Option<u32>,
    /// Upward messages the server never acknowledged.
    unacked: usize,
    connected: bool,
    /// Why the agent could not connect, or lost its connection before the end.
    error: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Standard base64 with padding (`run.output`'s `data`).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The output a simulated host prints.
fn output_of(i: usize) -> String {
    format!("hello from {}\n", hostname(i))
}

/// A message id as `[incarnation, counter]`.
fn msg_id(v: &Value) -> Option<(u64, u64)> {
    Some((v.get(0)?.as_u64()?, v.get(1)?.as_u64()?))
}

/// A `run` this agent is "running": due to finish at `due`.
struct Running {
    due: tokio::time::Instant,
    task: u64,
    attempt: u64,
    started_ms: u64,
    received: Instant,
}

/// One simulated agent: connects, heartbeats, and answers `run` messages until `stop`.
async fn run_agent(
    i: usize,
    secret: String,
    phase: Duration,
    how: Arc<Behaviour>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> AgentResult {
    let mut res = AgentResult::default();
    let mut ws =
        match tokio::time::timeout(Duration::from_secs(30), connect(&how.url, &secret)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                res.error = Some(format!("{e:#}"));
                return res;
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                res.error = Some("connecting: no welcome within 30 s".into());
                return res;
            }
        };
    res.connected = true;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut sim = Sim {
        i,
        ws: &mut ws,
        how: &how,
        shared: &shared,
        res: &mut res,
        delivered: (0, 0),
        running: VecDeque::new(),
        next: 0,
        waiting: HashMap::new(),
    };
    if let Err(e) = sim.converse(phase, &mut stop).await {
        res.error = Some(format!("{e:#}"));
        return res;
    }
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    res
}

/// One connected simulated agent.
struct Sim<'a> {
    i: usize,
    ws: &'a mut Ws,
    how: &'a Behaviour,
    shared: &'a Shared,
    res: &'a mut AgentResult,
    /// The last server message delivered (ids of one incarnation arrive in order).
    delivered: (u64, u64),
    /// Runs "running", in the order they finish.
    running: VecDeque<Running>,
    /// The counter of the last upward message.
    next: u64,
    /// Upward messages waiting for the server's acknowledgement: counter → (kind, sent
    /// at, when the `run` they report on was received).
    waiting: HashMap<u64, (&'static str, Instant, Instant)>,
}

/// What woke a simulated agent.
enum Event {
    Stop,
    Heartbeat,
    ScriptDone,
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

impl Sim<'_> {
    /// Heartbeats and answers the server until `stop`.
    async fn converse(&mut self, phase: Duration, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let start = tokio::time::Instant::now() + phase;
        let mut beat = tokio::time::interval_at(start, self.how.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        while !*stop.borrow() {
            let due = self.running.front().map(|r| r.due);
            let event = tokio::select! {
                _ = stop.changed() => Event::Stop,
                _ = beat.tick() => Event::Heartbeat,
                () = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Event::ScriptDone,
                frame = self.ws.next() => Event::Frame(frame),
            };
            match event {
                Event::Stop => break,
                Event::Heartbeat => {
                    seq += 1;
                    let frame = format!(r#"{{"type":"heartbeat","seq":{seq},"facts":null}}"#);
                    self.ws
                        .send(Message::text(frame))
                        .await
                        .context("sending a heartbeat")?;
                }
                Event::ScriptDone => self.script_done().await?,
                Event::Frame(frame) => match frame {
                    Some(Ok(Message::Text(t))) => self.on_frame(&t).await?,
                    Some(Ok(Message::Close(c))) => bail!("closed by the server: {c:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("{e}"),
                    None => bail!("connection ended"),
                },
            }
        }
        self.res.unacked = self.waiting.len();
        Ok(())
    }

    /// Sends an upward message.
    async fn send(&mut self, kind: &'static str, body: Value, received: Instant) -> Result<()> {
        self.next += 1;
        let id = [self.how.incarnation, self.next];
        let frame = json!({"type": "msg", "id": id, "kind": kind, "body": body});
        self.waiting
            .insert(self.next, (kind, Instant::now(), received));
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .with_context(|| format!("sending {kind}"))
    }

    /// The oldest run's script is done: its output, then its result.
    async fn script_done(&mut self) -> Result<()> {
        let Some(r) = self.running.pop_front() else {
            return Ok(());
        };
        let (task, attempt) = (r.task, r.attempt);
        let data = base64(output_of(self.i).as_bytes());
        let output = json!({"task": task, "attempt": attempt, "stream": "stdout", "offset": 0,
                            "data": data});
        self.send("run.output", output, r.received).await?;
        let duration_ms = u64::try_from(self.how.script.as_millis()).unwrap_or(u64::MAX);
        let finished = json!({"task": task, "attempt": attempt, "outcome": "succeeded",
                              "exit_code": 0, "signal": null, "started_ms": r.started_ms,
                              "duration_ms": duration_ms, "truncated": false});
        self.send("run.finished", finished, r.received).await?;
        self.shared.running.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_frame(&mut self, text: &str) -> Result<()> {
        let v: Value = serde_json::from_str(text)
            .with_context(|| format!("a frame that is not JSON: {text}"))?;
        match v.get("type").and_then(Value::as_str) {
            Some("heartbeat_ack") => Ok(()),
            Some("msg") => self.on_message(&v, text).await,
            Some("ack") => {
                let Some((inc, n)) = msg_id(&v["id"]) else {
                    bail!("an ack without an id: {text}");
                };
                if inc != self.how.incarnation {
                    bail!("an ack for another incarnation: {text}");
                }
                // A repeated ack finds nothing.
                if let Some((kind, sent, received)) = self.waiting.remove(&n) {
                    self.acked(kind, sent, received);
                }
                Ok(())
            }
            _ => bail!("unexpected frame: {text}"),
        }
    }

    /// A message from the server: acknowledged, then (a new `run`) started.
    async fn on_message(&mut self, v: &Value, text: &str) -> Result<()> {
        let id = msg_id(&v["id"]).with_context(|| format!("a message without an id: {text}"))?;
        let new = id > self.delivered;
        if new {
            self.delivered = id;
        } else {
            self.res.repeated += 1;
        }
        // As the real agent: acknowledge, then report what the message started.
        let ack = json!({"type": "ack", "id": [id.0, id.1]});
        self.ws
            .send(Message::text(ack.to_string()))
            .await
            .context("sending an ack")?;
        if !new {
            return Ok(());
        }
        if v["kind"] != "run" {
            bail!("unexpected message: {text}");
        }
        let received = Instant::now();
        let shared = self.shared;
        self.res.runs += 1;
        if v["body"]["signature"]
            .as_str()
            .is_none_or(|s| s.len() != 128)
        {
            self.res.unsigned += 1;
        }
        if self.res.run_us.is_none() {
            self.res.run_us = Some(micros(shared.since_t0(received)));
        }
        if shared.first_run.set((received, self.i)).is_ok() {
            shared.first_run_seen.notify_waiters();
        }
        let n = shared.running.fetch_add(1, Ordering::Relaxed) + 1;
        shared.max_running.fetch_max(n, Ordering::Relaxed);
        let n = shared.unacked.fetch_add(1, Ordering::Relaxed) + 1;
        shared.max_unacked.fetch_max(n, Ordering::Relaxed);
        let task = v["body"]["task"].as_u64().unwrap_or(0);
        let attempt = v["body"]["attempt"].as_u64().unwrap_or(0);
        let started_ms = now_ms();
        let started =
            json!({"task": task, "attempt": attempt, "pid": 1234, "started_ms": started_ms});
        self.send("run.started", started, received).await?;
        self.running.push_back(Running {
            due: tokio::time::Instant::now() + self.how.script,
            task,
            attempt,
            started_ms,
            received,
        });
        Ok(())
    }

    /// The server acknowledged upward message `kind`, sent at `sent`, about the `run`
    /// received at `received`.
    fn acked(&mut self, kind: &str, sent: Instant, received: Instant) {
        let took = Some(micros(sent.elapsed()));
        match kind {
            "run.started" => self.res.started_ack_us = took,
            "run.output" => self.res.output_ack_us = took,
            _ => {
                let shared = self.shared;
                self.res.finished_ack_us = took;
                self.res.cycle_us = Some(micros(received.elapsed()));
                shared.unacked.fetch_sub(1, Ordering::Relaxed);
                let at = micros(shared.since_t0(Instant::now()));
                shared
                    .last_finished_us
                    .fetch_max(u64::from(at), Ordering::Relaxed);
                if shared.finished.fetch_add(1, Ordering::Relaxed) + 1 == shared.agents {
                    shared.all_finished.notify_waiters();
                }
            }
        }
    }
}

/// `GET {base}{path}` with the admin token: the answer's `data`.
async fn get_data(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Result<Value> {
    let resp = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {path}: {status}: {body}");
    }
    let mut v: Value =
        serde_json::from_str(&body).with_context(|| format!("GET {path}: answer {body:?}"))?;
    Ok(v["data"].take())
}

/// Polls the first output: once the first `run` went out and the task's id is known,
/// `GET …/output?host=H` every `poll` until that host's stdout is not empty. Returns
/// when it was seen, and how many requests it took.
async fn first_output(
    http: reqwest::Client,
    base: String,
    token: String,
    id: u64,
    shared: Arc<Shared>,
    poll: Duration,
) -> Result<(Instant, usize)> {
    let agent = loop {
        let wait = shared.first_run_seen.notified();
        if let Some((_, i)) = shared.first_run.get() {
            break *i;
        }
        wait.await;
    };
    let path = format!("{TASKS_PATH}/{id}/output?host={}", hostname(agent));
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = 0;
    loop {
        tick.tick().await;
        requests += 1;
        let data = get_data(&http, &base, &token, &path).await?;
        let stdout = data["hosts"][0]["stdout"].as_str().unwrap_or_default();
        if !stdout.is_empty() {
            let want = output_of(agent);
            if stdout != want {
                bail!("{}: stdout {stdout:?}, sent {want:?}", hostname(agent));
            }
            return Ok((Instant::now(), requests));
        }
    }
}

/// The task's row as the list shows it, when it is finished.
struct Finished {
    at: Instant,
    state: String,
    counts: Value,
    requests: usize,
}

/// Polls `GET /api/ops/v1/tasks?limit=1` until task `id` has a `finished_at`: every
/// second (printing progress) until every result is acknowledged, then every `poll`.
async fn task_end(
    http: reqwest::Client,
    base: String,
    token: String,
    id: u64,
    shared: Arc<Shared>,
    poll: Duration,
) -> Result<Finished> {
    let path = format!("{TASKS_PATH}?limit=1");
    let mut requests = 0;
    let mut last_progress = Instant::now();
    loop {
        requests += 1;
        let data = get_data(&http, &base, &token, &path).await?;
        let at = Instant::now();
        let t = data["tasks"]
            .as_array()
            .and_then(|v| v.iter().find(|t| t["id"].as_u64() == Some(id)))
            .with_context(|| format!("task {id} is not the newest task: {data}"))?;
        if !t["finished_at"].is_null() {
            return Ok(Finished {
                at,
                state: t["state"].as_str().unwrap_or_default().to_string(),
                counts: t["counts"].clone(),
                requests,
            });
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "  +{:.1} s: {} {}",
                shared.since_t0(at).as_secs_f64(),
                t["state"].as_str().unwrap_or("?"),
                t["counts"]
            );
        }
        // Registered before the check: the last acknowledgement cannot slip between.
        let wait = shared.all_finished.notified();
        if shared.finished.load(Ordering::Relaxed) >= shared.agents {
            tokio::time::sleep(poll).await;
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        }
    }
}

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "MISSED" }
}

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.agents == 0 || cli.connect_rate <= 0.0 {
        bail!("--agents and --connect-rate must be positive");
    }
    let nofile = raise_fd_limit();
    let need = cli.agents as u64 + 256;
    if nofile < need {
        bail!(
            "open-file limit is {nofile}; {} agents need about {need} (raise `ulimit -Hn` or pass fewer --agents)",
            cli.agents
        );
    }
    exit_with(run(cli))
}

/// The concurrency `spec` allows for `n` hosts (`500` or `10%`, rounded up).
fn concurrency_of(spec: &str, n: usize) -> Result<usize> {
    let s = spec.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => {
            let p: usize = p.trim().parse().context("--concurrency: a count or N%")?;
            (n * p).div_ceil(100)
        }
        None => s.parse().context("--concurrency: a count or N%")?,
    };
    Ok(v.max(1))
}

async fn run(cli: Cli) -> Result<bool> {
    let limit = concurrency_of(&cli.concurrency, cli.agents)?;
    let minos = match &cli.minos {
        Some(p) => p.clone(),
        None => default_minos()?,
    };
    let (mut server, tokens) = start_server(&minos, cli.keep, "minos-task-scale-").await?;
    let base = server.base.clone();
    let pid = server.pid().to_string();
    eprintln!(
        "started {} server on {base} (pid {pid}); log: {}",
        minos.display(),
        server.log.display()
    );
    let sample = || proc_sample(&pid).ok();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;

    // Enrollment and the connection ramp.
    let t = Instant::now();
    eprintln!(
        "enrolling {} agents ({} in flight)…",
        cli.agents, cli.enroll_concurrency
    );
    let secrets = enroll(&base, &tokens.enroll, cli.agents, cli.enroll_concurrency).await?;
    let enroll_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "enrolled in {enroll_secs:.1} s; connecting at {}/s…",
        cli.connect_rate
    );
    let shared = Arc::new(Shared {
        t0: OnceLock::new(),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_run: OnceLock::new(),
        first_run_seen: Notify::new(),
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
        unacked: AtomicUsize::new(0),
        max_unacked: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        last_finished_us: AtomicU64::new(0),
        all_finished: Notify::new(),
        agents: cli.agents,
    });
    let how = Arc::new(Behaviour {
        url: format!("{}{CHANNEL_PATH}", base.replacen("http://", "ws://", 1)),
        heartbeat: cli.heartbeat,
        script: Duration::from_millis(cli.script_ms),
        incarnation: now_ms(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let ramp_start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / cli.connect_rate);
    let mut rng = cli.seed;
    let hb_us = u64::try_from(cli.heartbeat.as_micros()).unwrap_or(u64::MAX);
    for (i, secret) in secrets.into_iter().enumerate() {
        tokio::time::sleep_until(ramp_start + gap.mul_f64(i as f64)).await;
        let phase = Duration::from_micros(splitmix64(&mut rng) % hb_us.max(1));
        tasks.spawn(run_agent(
            i,
            secret,
            phase,
            how.clone(),
            shared.clone(),
            stop_rx.clone(),
        ));
    }
    let ramp_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < cli.agents
        && tokio::time::Instant::now() < ramp_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    eprintln!(
        "{connected}/{} connected in {ramp_secs:.1} s; creating the task in {:?} (server pid {pid})…",
        cli.agents, cli.settle
    );
    tokio::time::sleep(cli.settle).await;

    // The task.
    let s0 = sample();
    let me0 = proc_sample("self").ok();
    let m0 = machine_ticks();
    let t0 = Instant::now();
    let _ = shared.t0.set(t0);
    let rss_peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, rss_peak) = (pid.clone(), rss_peak.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Ok(s) = proc_sample(&pid) {
                    rss_peak.fetch_max((s.rss_mb * 1024.0) as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let req = json!({"target": "*", "script": cli.script, "concurrency": cli.concurrency,
                     "max_fail": "100%"});
    let resp = http
        .post(format!("{base}{TASKS_PATH}"))
        .bearer_auth(&tokens.admin)
        .json(&req)
        .send()
        .await
        .context("POST /api/ops/v1/tasks")?;
    let post_took = t0.elapsed();
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST /api/ops/v1/tasks: {status}: {body}");
    }
    let created: Value = serde_json::from_str(&body).context("POST /api/ops/v1/tasks: answer")?;
    let id = created["data"]["id"]
        .as_u64()
        .with_context(|| format!("POST /api/ops/v1/tasks: no id in {body:.200}"))?;
    eprintln!(
        "task {id} created (answered in {}); waiting for it…",
        fmt_dur(post_took)
    );
    let output_poll = tokio::spawn(first_output(
        http.clone(),
        base.clone(),
        tokens.admin.clone(),
        id,
        shared.clone(),
        cli.poll,
    ));
    let ended = tokio::time::timeout(
        cli.timeout,
        task_end(
            http.clone(),
            base.clone(),
            tokens.admin.clone(),
            id,
            shared.clone(),
            cli.poll,
        ),
    )
    .await;
    let s1 = sample();
    let me1 = proc_sample("self").ok();
    let m1 = machine_ticks();
    sampler.abort();
    let ended = match ended {
        Ok(r) => Some(r?),
        Err(_) => {
            eprintln!("the task did not finish within {:?}", cli.timeout);
            None
        }
    };
    let first_output = match tokio::time::timeout(Duration::from_secs(5), output_poll).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(format!("{e:#}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no output seen".to_string()),
    };

    // What the API holds at the end.
    let full = get_data(&http, &base, &tokens.admin, &format!("{TASKS_PATH}/{id}")).await?;
    let mut problems: Vec<String> = Vec::new();
    if let Some(hosts) = full["hosts"].as_array() {
        if hosts.len() != cli.agents {
            problems.push(format!("the task has {} hosts", hosts.len()));
        }
        for h in hosts {
            let name = h["hostname"].as_str().unwrap_or("?");
            let want = name
                .strip_prefix("bench-agent-")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|i| output_of(i).len() as u64);
            if h["state"] != "succeeded" || h["output_bytes"].as_u64() != want {
                problems.push(format!(
                    "{name}: {} with {} bytes of output",
                    h["state"], h["output_bytes"]
                ));
            }
        }
    } else {
        problems.push(format!("GET task {id}: no hosts"));
    }
    let after = sample();

    // Stop the agents and collect what they saw.
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(cli.agents);
    while let Some(r) = tasks.join_next().await {
        results.push(r.context("agent task")?);
    }
    let server_clean = server.stop(Duration::from_secs(30));
    let (warn, error, log_lines) = server.log_problems(5);

    // The report.
    let sorted = |f: fn(&AgentResult) -> Option<u32>| {
        let mut v: Vec<u32> = results.iter().filter_map(f).collect();
        v.sort_unstable();
        v
    };
    let run_us = sorted(|r| r.run_us);
    let cycle = sorted(|r| r.cycle_us);
    let started_ack = sorted(|r| r.started_ack_us);
    let output_ack = sorted(|r| r.output_ack_us);
    let finished_ack = sorted(|r| r.finished_ack_us);
    let no_run = results
        .iter()
        .filter(|r| r.connected && r.runs == 0)
        .count();
    let twice = results.iter().filter(|r| r.runs > 1).count();
    let repeated: u32 = results.iter().map(|r| r.repeated).sum();
    let unsigned: u32 = results.iter().map(|r| r.unsigned).sum();
    let unacked: usize = results.iter().map(|r| r.unacked).sum();
    let lost = results
        .iter()
        .filter(|r| r.connected && r.error.is_some())
        .count();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();
    let finished_acked = shared.finished.load(Ordering::Relaxed);
    let last_result = Duration::from_micros(shared.last_finished_us.load(Ordering::Relaxed));
    let first_run = shared.first_run.get().map(|(at, i)| (*at - t0, *i));
    let end = ended.as_ref().map(|e| e.at - t0);
    let max_running = shared.max_running.load(Ordering::Relaxed);
    let max_unacked = shared.max_unacked.load(Ordering::Relaxed);

    println!();
    println!(
        "task scale: {} agents, one task on `*` with concurrency {} ({limit}), script {:?} simulated as {} ms",
        cli.agents, cli.concurrency, cli.script, cli.script_ms
    );
    println!("server           {base} (pid {pid})");
    println!(
        "setup            {} agents enrolled in {enroll_secs:.1} s ({} in flight); {connected} connected in {ramp_secs:.1} s at {}/s",
        cli.agents, cli.enroll_concurrency, cli.connect_rate
    );
    println!(
        "creation         task {id}: POST answered in {}",
        fmt_dur(post_took)
    );
    let at = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("+{}", fmt_dur(d)));
    println!(
        "(a) first run    {} ({})",
        at(first_run.map(|f| f.0)),
        first_run.map_or("-".into(), |f| hostname(f.1))
    );
    match &first_output {
        Ok((seen, n)) => println!(
            "(b) first output {} through GET …/output?host= ({n} requests, every {:?})",
            at(Some(*seen - t0)),
            cli.poll
        ),
        Err(e) => println!("(b) first output not seen: {e}"),
    }
    let q = |v: &[u32], p: f64| Duration::from_secs_f64(percentile(v, p).max(0.0) / 1000.0);
    if !run_us.is_empty() {
        println!(
            "runs received    10 % +{}, 50 % +{}, 90 % +{}, all +{} ({} of {})",
            fmt_dur(q(&run_us, 0.1)),
            fmt_dur(q(&run_us, 0.5)),
            fmt_dur(q(&run_us, 0.9)),
            fmt_dur(q(&run_us, 1.0)),
            run_us.len(),
            cli.agents
        );
    }
    println!(
        "(c) last result  {} (the last run.finished acknowledged; {finished_acked} of {})",
        at((finished_acked > 0).then_some(last_result)),
        cli.agents
    );
    match &ended {
        Some(e) => println!(
            "(d) API finished {}: {} {} ({} list requests)",
            at(end),
            e.state,
            e.counts,
            e.requests
        ),
        None => println!("(d) API finished never (within {:?})", cli.timeout),
    }
    if let Some(d) = end.filter(|d| !d.is_zero()) {
        println!(
            "throughput       {:.0} hosts/s over the whole task",
            cli.agents as f64 / d.as_secs_f64()
        );
    }
    println!(
        "concurrency      at most {max_running} hosts between run received and run.finished sent (limit {limit}); {max_unacked} until run.finished acknowledged"
    );
    let dist = |v: &[u32]| {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            percentile(v, 1.0)
        )
    };
    println!(
        "per host         run received → run.finished acknowledged {}",
        dist(&cycle)
    );
    println!("server acks      run.started {}", dist(&started_ack));
    println!("                 run.output  {}", dist(&output_ack));
    println!("                 run.finished {}", dist(&finished_ack));
    let server_cpu = match (&s0, &s1) {
        (Some(a), Some(b)) => Some((cpu_pct(a, b), b.cpu_secs - a.cpu_secs)),
        _ => None,
    };
    let peak = rss_peak.load(Ordering::Relaxed) as f64 / 1024.0;
    match (server_cpu, &s0, &s1) {
        (Some((pct, cpu_s)), Some(a), Some(b)) => println!(
            "server           CPU {pct:.1} % of one core from the POST to (d) ({cpu_s:.2} CPU-seconds over {:.2} s); RSS {:.1} MB before the task, peak {:.1} MB during it (sampled every 100 ms), {:.1} MB at (d), {:.1} MB after the final GET (VmHWM {:.1} MB)",
            b.at.duration_since(a.at).as_secs_f64(),
            a.rss_mb,
            peak.max(b.rss_mb),
            b.rss_mb,
            after.map_or(f64::NAN, |s: ProcSample| s.rss_mb),
            after.map_or(b.hwm_mb, |s| s.hwm_mb),
        ),
        _ => println!("server           CPU and RSS n/a"),
    }
    let ours = match (&me0, &me1) {
        (Some(a), Some(b)) => {
            println!(
                "this process     CPU {:.1} % of one core over the same span; RSS {:.1} MB",
                cpu_pct(a, b),
                b.rss_mb
            );
            cpu_pct(a, b) + server_cpu.map_or(0.0, |c| c.0)
        }
        _ => f64::NAN,
    };
    if let Some(line) = machine_line(m0, m1, ours) {
        println!("machine          {line}");
    }
    println!(
        "server log       {warn} WARN, {error} ERROR lines; stopped {}",
        if server_clean {
            "cleanly on SIGTERM"
        } else {
            "by SIGKILL"
        }
    );
    for l in &log_lines {
        println!("                 {l}");
    }
    let first_output_at = first_output.as_ref().ok().map(|(seen, _)| *seen - t0);
    println!(
        "targets          whole task < {TARGET_TOTAL:?}: {}; first output < {TARGET_FIRST_OUTPUT:?}: {}",
        ok(end.is_some_and(|d| d < TARGET_TOTAL)),
        ok(first_output_at.is_some_and(|d| d < TARGET_FIRST_OUTPUT))
    );
    for e in errors.iter().take(5) {
        println!("agent error      {e}");
    }
    for p in problems.iter().take(5) {
        println!("task problem     {p}");
    }
    let succeeded = ended.as_ref().is_some_and(|e| {
        e.state == "succeeded" && e.counts["succeeded"].as_u64() == Some(cli.agents as u64)
    });
    let passed = connected == cli.agents
        && lost == 0
        && no_run == 0
        && twice == 0
        && unsigned == 0
        && unacked == 0
        && finished_acked == cli.agents
        && succeeded
        && problems.is_empty()
        && first_output.is_ok()
        && max_running <= limit;
    if !passed {
        println!(
            "FAILED: {connected}/{} connected, {lost} connections lost, {no_run} agents without a run, {twice} with two, {repeated} run messages repeated, {unsigned} unsigned, {unacked} upward messages unacknowledged, {finished_acked} results acknowledged, task {}, {} host problems, max in flight {max_running} (limit {limit})",
            cli.agents,
            ended
                .as_ref()
                .map_or("unfinished".to_string(), |e| e.state.clone()),
            problems.len()
        );
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello\n"), "aGVsbG8K");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn concurrency_counts_and_percentages() {
        assert_eq!(concurrency_of("500", 5000).expect("count"), 500);
        assert_eq!(concurrency_of("10%", 5001).expect("pct"), 501);
        assert!(concurrency_of("x", 10).is_err());
    }
}
