//! Scale benchmark of the agent channel: one process plays many agents against one
//! real `minos server`.
//!
//! `agent_scale` starts `minos server` on a fresh data directory and a free loopback port
//! (or uses `--server URL`), enrolls `--agents` agents through `POST /api/agent/v1/enroll`
//! (16 in flight), opens one WebSocket per agent on `GET /api/agent/v1/channel` at
//! `--connect-rate` connections a second, says `hello` on each and then sends a
//! `heartbeat` every `--heartbeat`, each agent with its own random phase. After the ramp
//! and `--warmup`, it measures for `--duration`:
//!
//! - heartbeat latency: from sending a `heartbeat` to receiving its `heartbeat_ack`, for
//!   every heartbeat sent in the window (p50, p90, p99, max);
//! - the server's CPU time (utime + stime from `/proc/<pid>/stat`) over the window, as a
//!   percentage of one core, and its RSS (`VmRSS`) at the end of the window;
//! - `minos_agents_connected` and `minos_agent_heartbeats_total` from `/metrics`;
//! - this process's own CPU, since it shares the machine with the server.
//!
//! It also reports how long enrollment and the connection ramp took and the server's CPU
//! during each. It exits non-zero when fewer than `--agents` agents connected, when a
//! connection was lost, or when any heartbeat went unanswered (no ack within one
//! heartbeat interval). The targets it prints against (server under 10 % of a core, p99
//! under 50 ms) are reported, not enforced. See `benches/agent_scale.md`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use minos_benches::agent_sim::{
    CHANNEL_PATH, Ws, connect, enroll, micros, percentile, start_server,
};
use minos_benches::harness::{
    ProcSample, cpu_pct, default_minos, exit_with, machine_line, machine_ticks, metric,
    parse_duration, proc_sample, raise_fd_limit,
};
use minos_benches::splitmix64;
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
const TARGET_CPU_PCT: f64 = 10.0;
const TARGET_P99_MS: f64 = 50.0;

#[derive(Parser, Debug)]
#[command(
    name = "agent_scale",
    about = "Many simulated agents heartbeating against one minos server: server CPU, RSS and heartbeat latency"
)]
struct Cli {
    /// The minos binary [default: $CARGO_TARGET_DIR/release/minos, else the workspace's
    /// target/release/minos, else `minos` on PATH].
    #[arg(long)]
    minos: Option<PathBuf>,
    /// Use this already running server (`http://HOST:PORT`) instead of starting one.
    #[arg(long, requires = "token")]
    server: Option<String>,
    /// With --server: the enrollment (or admin) token.
    #[arg(long)]
    token: Option<String>,
    /// With --server: the server's pid, to measure its CPU and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Simulated agents.
    #[arg(long, default_value_t = 5000)]
    agents: usize,
    /// Interval between an agent's heartbeats (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Time after the last agent connected before measuring.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    warmup: Duration,
    /// The measurement window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Channel connections opened per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// Enrollment requests in flight.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// Seed of the agents' heartbeat phases.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the started server's data directory and log.
    #[arg(long)]
    keep: bool,
}

/// State shared by the agent tasks.
struct Shared {
    /// The measurement window, set once every agent connected (or failed to).
    window: OnceLock<(Instant, Instant)>,
    connected: AtomicUsize,
    failed: AtomicUsize,
}

/// What one simulated agent saw.
#[derive(Default)]
struct AgentResult {
    /// Heartbeat latencies in µs, for heartbeats sent in the window.
    latencies: Vec<u32>,
    /// Connection + hello → welcome, in µs.
    connect_us: Option<u32>,
    /// Heartbeats sent (any time).
    sent: u64,
    /// Heartbeats not acknowledged within one interval (any time).
    unanswered: u64,
    /// Heartbeats sent in the window and not acknowledged.
    unanswered_in_window: u64,
    /// Acks that arrived after their heartbeat was given up on.
    late: u64,
    /// Why the agent could not connect, or lost its connection before the end.
    error: Option<String>,
}

/// Waits for the ack of heartbeat `seq` until `deadline`: Ok(true) when it came, Ok(false)
/// at the deadline, Err when the connection ended.
async fn wait_ack(
    ws: &mut Ws,
    seq: u64,
    deadline: tokio::time::Instant,
    late: &mut u64,
) -> Result<bool> {
    loop {
        let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(false),
            Ok(f) => f,
        };
        match frame {
            Some(Ok(Message::Text(t))) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    bail!("a frame that is not JSON: {t}");
                };
                if v.get("type").and_then(Value::as_str) == Some("heartbeat_ack") {
                    match v.get("seq").and_then(Value::as_u64) {
                        Some(s) if s == seq => return Ok(true),
                        Some(s) if s < seq => *late += 1,
                        _ => bail!("unexpected ack: {t}"),
                    }
                }
                // Other frames (messages) are not part of this bench; ignore them.
            }
            Some(Ok(Message::Close(c))) => bail!("closed by the server: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("{e}"),
            None => bail!("connection ended"),
        }
    }
}

async fn run_agent(
    url: String,
    secret: String,
    heartbeat: Duration,
    phase: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> AgentResult {
    let mut res = AgentResult::default();
    let t0 = Instant::now();
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), connect(&url, &secret)).await {
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
    res.connect_us = Some(micros(t0.elapsed()));
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut next = tokio::time::Instant::now() + phase;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        seq += 1;
        let frame = format!(r#"{{"type":"heartbeat","seq":{seq},"facts":null}}"#);
        let sent_at = Instant::now();
        if let Err(e) = ws.send(Message::text(frame)).await {
            res.error = Some(format!("sending heartbeat {seq}: {e}"));
            return res;
        }
        res.sent += 1;
        next += heartbeat;
        let in_window = shared
            .window
            .get()
            .is_some_and(|(a, b)| sent_at >= *a && sent_at < *b);
        match wait_ack(&mut ws, seq, next, &mut res.late).await {
            Ok(true) => {
                if in_window {
                    res.latencies.push(micros(sent_at.elapsed()));
                }
            }
            Ok(false) => {
                res.unanswered += 1;
                if in_window {
                    res.unanswered_in_window += 1;
                }
            }
            Err(e) => {
                res.error = Some(format!("waiting for ack {seq}: {e:#}"));
                return res;
            }
        }
    }
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    res
}

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "MISSED" }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.agents == 0 || cli.connect_rate <= 0.0 {
        bail!("--agents and --connect-rate must be positive");
    }
    let nofile = raise_fd_limit();
    // Each agent takes one descriptor here (and one in the server), plus some slack.
    let need = cli.agents as u64 + 256;
    if nofile < need {
        bail!(
            "open-file limit is {nofile}; {} agents need about {need} (raise `ulimit -Hn` or pass fewer --agents)",
            cli.agents
        );
    }
    exit_with(run(cli))
}

async fn run(cli: Cli) -> Result<bool> {
    let (mut server, base, token, pid) = match &cli.server {
        Some(url) => {
            let token = cli.token.clone().context("--server needs --token")?;
            (
                None,
                url.trim_end_matches('/').to_string(),
                token,
                cli.server_pid.map(|p| p.to_string()),
            )
        }
        None => {
            let minos = match &cli.minos {
                Some(p) => p.clone(),
                None => default_minos()?,
            };
            let (s, tokens) = start_server(&minos, cli.keep, "minos-agent-scale-").await?;
            let token = tokens.enroll;
            let base = s.base.clone();
            let pid = s.pid().to_string();
            eprintln!(
                "started {} server on {base} (pid {pid}); log: {}",
                minos.display(),
                s.log.display()
            );
            (Some(s), base, token, Some(pid))
        }
    };
    let sample = |pid: &Option<String>| pid.as_deref().and_then(|p| proc_sample(p).ok());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // Enrollment.
    let idle = sample(&pid);
    let t = Instant::now();
    eprintln!(
        "enrolling {} agents ({} in flight)…",
        cli.agents, cli.enroll_concurrency
    );
    let secrets = enroll(&base, &token, cli.agents, cli.enroll_concurrency).await?;
    let enroll_secs = t.elapsed().as_secs_f64();
    let enrolled = sample(&pid);

    // The connection ramp.
    eprintln!(
        "enrolled in {enroll_secs:.1} s; connecting at {}/s…",
        cli.connect_rate
    );
    let ws_base = base.replacen("http://", "ws://", 1);
    let url = format!("{ws_base}{CHANNEL_PATH}");
    let shared = Arc::new(Shared {
        window: OnceLock::new(),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let ramp_start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / cli.connect_rate);
    let mut rng = cli.seed;
    let hb_us = u64::try_from(cli.heartbeat.as_micros()).unwrap_or(u64::MAX);
    for (i, secret) in secrets.into_iter().enumerate() {
        let at = ramp_start + gap.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        let phase = Duration::from_micros(splitmix64(&mut rng) % hb_us.max(1));
        tasks.spawn(run_agent(
            url.clone(),
            secret,
            cli.heartbeat,
            phase,
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
    let connected_after_ramp = shared.connected.load(Ordering::Relaxed);
    let ramped = sample(&pid);
    eprintln!(
        "{connected_after_ramp}/{} connected in {ramp_secs:.1} s; warming up for {:?}, then measuring for {:?}…",
        cli.agents, cli.warmup, cli.duration
    );

    // Warmup, then the window.
    let w_start = Instant::now() + cli.warmup;
    let w_end = w_start + cli.duration;
    let _ = shared.window.set((w_start, w_end));
    tokio::time::sleep_until(w_start.into()).await;
    let s0 = sample(&pid);
    let me0 = proc_sample("self").ok();
    let m0 = machine_ticks();
    let hb0 = metric(&http, &base, "minos_agent_heartbeats_total")
        .await
        .ok();
    let conn0 = metric(&http, &base, "minos_agents_connected").await.ok();
    // Count the scrape's own cost out of the window: sample again after it.
    let s0 = sample(&pid).or(s0);
    tokio::time::sleep_until(w_end.into()).await;
    let s1 = sample(&pid);
    let me1 = proc_sample("self").ok();
    let m1 = machine_ticks();
    let hb1 = metric(&http, &base, "minos_agent_heartbeats_total")
        .await
        .ok();
    let conn1 = metric(&http, &base, "minos_agents_connected").await.ok();

    // Stop the agents and collect what they saw.
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(cli.agents);
    while let Some(r) = tasks.join_next().await {
        results.push(r.context("agent task")?);
    }
    let server_clean = server.as_mut().map(|s| s.stop(Duration::from_secs(30)));
    let server_log = server.as_ref().map(|s| s.log_problems(5));

    // The report.
    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    let mut conn_lat: Vec<u32> = results.iter().filter_map(|r| r.connect_us).collect();
    conn_lat.sort_unstable();
    let sum = |f: fn(&AgentResult) -> u64| results.iter().map(f).sum::<u64>();
    let (sent, unanswered, unanswered_w, late) = (
        sum(|r| r.sent),
        sum(|r| r.unanswered),
        sum(|r| r.unanswered_in_window),
        sum(|r| r.late),
    );
    let connected = conn_lat.len();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();
    let lost = results
        .iter()
        .filter(|r| r.connect_us.is_some() && r.error.is_some())
        .count();
    let window_secs = match (&s0, &s1) {
        (Some(a), Some(b)) => b.at.duration_since(a.at).as_secs_f64(),
        _ => cli.duration.as_secs_f64(),
    };

    println!();
    println!(
        "agent channel scale: {} agents, heartbeat {:?}, {:?} window after {:?} warmup",
        cli.agents, cli.heartbeat, cli.duration, cli.warmup
    );
    println!("server           {base}");
    let pct = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1} % of one core", cpu_pct(a, b)),
        _ => "n/a (no server pid)".into(),
    };
    println!(
        "enrollment       {} agents in {enroll_secs:.1} s ({:.0}/s, {} in flight); server CPU {}",
        cli.agents,
        cli.agents as f64 / enroll_secs,
        cli.enroll_concurrency,
        pct(&idle, &enrolled)
    );
    println!(
        "connect ramp     {connected_after_ramp}/{} connected in {ramp_secs:.1} s at {}/s; connect→welcome p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {}",
        cli.agents,
        cli.connect_rate,
        percentile(&conn_lat, 0.5),
        percentile(&conn_lat, 0.99),
        percentile(&conn_lat, 1.0),
        pct(&enrolled, &ramped)
    );
    let fmt_opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    println!(
        "/metrics         minos_agents_connected {} at window start, {} at end; minos_agent_heartbeats_total +{} in the window ({:.0}/s)",
        fmt_opt(conn0),
        fmt_opt(conn1),
        fmt_opt(hb0.zip(hb1).map(|(a, b)| b - a)),
        hb0.zip(hb1)
            .map_or(f64::NAN, |(a, b)| (b - a) / window_secs)
    );
    println!(
        "heartbeats       {} measured in the window ({sent} sent in all); {unanswered} unanswered ({unanswered_w} in the window), {late} acked late; {lost} connections lost, {} failed to connect",
        lat.len(),
        cli.agents - connected
    );
    let (p50, p90, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    println!("latency          p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    let server_cpu = match (&s0, &s1) {
        (Some(a), Some(b)) => Some(cpu_pct(a, b)),
        _ => None,
    };
    match (&s1, server_cpu) {
        (Some(b), Some(c)) => println!(
            "server           CPU {c:.2} % of one core over {window_secs:.1} s; RSS {:.1} MB at window end (peak {:.1} MB; {:.1} MB idle before enrollment, {:.1} MB after)",
            b.rss_mb,
            b.hwm_mb,
            idle.map_or(f64::NAN, |s| s.rss_mb),
            enrolled.map_or(f64::NAN, |s| s.rss_mb),
        ),
        _ => println!("server           CPU and RSS n/a (pass --server-pid)"),
    }
    if let (Some(a), Some(b)) = (&me0, &me1) {
        println!(
            "this process     CPU {:.2} % of one core over the window; RSS {:.1} MB",
            cpu_pct(a, b),
            b.rss_mb
        );
    }
    let ours = match (&s0, &s1, &me0, &me1) {
        (Some(a), Some(b), Some(c), Some(d)) => cpu_pct(a, b) + cpu_pct(c, d),
        _ => f64::NAN,
    };
    if let Some(line) = machine_line(m0, m1, ours) {
        println!("machine          {line}");
    }
    if let Some((warn, error, lines)) = &server_log {
        println!(
            "server log       {warn} WARN, {error} ERROR lines; stopped {}",
            if server_clean == Some(true) {
                "cleanly on SIGTERM"
            } else {
                "by SIGKILL"
            }
        );
        for l in lines {
            println!("                 {l}");
        }
    }
    println!(
        "targets          server CPU < {TARGET_CPU_PCT} % of a core: {}; p99 < {TARGET_P99_MS} ms: {}",
        server_cpu.map_or("n/a", |c| ok(c < TARGET_CPU_PCT)),
        ok(p99 < TARGET_P99_MS)
    );
    for e in errors.iter().take(5) {
        println!("agent error      {e}");
    }
    let passed = connected == cli.agents
        && connected_after_ramp == cli.agents
        && lost == 0
        && unanswered == 0
        // Our own server holds exactly our agents; a shared one may hold others too.
        && match (&server, conn1) {
            (Some(_), c) => c == Some(cli.agents as f64),
            (None, c) => c.is_some_and(|c| c >= cli.agents as f64),
        };
    if !passed {
        println!(
            "FAILED: {connected}/{} agents connected, {lost} connections lost, {unanswered} heartbeats unanswered, minos_agents_connected {}",
            cli.agents,
            fmt_opt(conn1)
        );
    }
    Ok(passed)
}
