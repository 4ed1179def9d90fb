//! Remote_write load generator for the peer comparison (`benches/peers/`).
//!
//! `loadgen --url URL --series N --points P` generates the node-exporter-like workload
//! in memory (all requests encoded before the clock starts), sends it with
//! `--concurrency` keep-alive connections and prints one JSON object:
//! `{"samples","seconds","samples_per_sec","requests","retries",…}`.
//!
//! Requests are sent time-major, and a request waits until the one before it for the
//! same series has been answered, so each series' samples arrive in order whatever the
//! concurrency. 5xx and 429 answers and connection errors are retried with a short
//! backoff; any other answer but 2xx stops the run with an error.
//!
//! `loadgen verify --url BASE --api export|prometheus …` reads back the series of a few
//! hosts and counts values that differ, bit for bit, from what was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use minos_benches::peers::{
    Batch, Comparison, Plan, build_batches, host_instance, hosts_to_check, parse_export_line,
    parse_prometheus_matrix,
};
use minos_benches::workload::INTERVAL_MS;
use tokio::sync::Notify;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Sends a deterministic node-exporter-like remote_write load and reads it back",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reads back the series of a few hosts and compares them with what was sent.
    Verify(VerifyArgs),
}

/// The load: the same flags describe it when sending and when verifying.
#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Number of series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Points per series, 15 s apart.
    #[arg(long, default_value_t = 1_000)]
    points: usize,
    /// Seed of the workload's values.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Timestamp of the first step, in ms since the epoch [default: now - points × 15 s].
    #[arg(long)]
    t0: Option<i64>,
}

#[derive(Args, Debug, Clone)]
struct SendArgs {
    /// remote_write URL.
    #[arg(long, default_value = "http://127.0.0.1:9797/api/v1/write")]
    url: String,
    #[command(flatten)]
    load: LoadArgs,
    /// Series per request.
    #[arg(long, default_value_t = 1_000)]
    series_per_request: usize,
    /// Points per series per request.
    #[arg(long, default_value_t = 10)]
    points_per_request: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Give up on a request after this many retries.
    #[arg(long, default_value_t = 30)]
    max_retries: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Api {
    /// `/api/v1/export` JSON lines (Minos, VictoriaMetrics).
    Export,
    /// Prometheus `/api/v1/query` with a range selector.
    Prometheus,
}

#[derive(Args, Debug, Clone)]
struct VerifyArgs {
    /// Base URL of the server (`http://127.0.0.1:PORT`).
    #[arg(long)]
    url: String,
    /// How to read back.
    #[arg(long, value_enum)]
    api: Api,
    #[command(flatten)]
    load: LoadArgs,
    /// Hosts to read back (100 series each), spread over the load.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
}

impl LoadArgs {
    fn plan(&self, series_per_request: usize, points_per_request: usize) -> Result<Plan> {
        if self.series == 0 || self.points == 0 {
            bail!("--series and --points must be positive");
        }
        let t0 = match self.t0 {
            Some(t) => t,
            None => now_ms() - self.points as i64 * INTERVAL_MS,
        };
        Ok(Plan {
            series: self.series,
            points: self.points,
            series_per_request,
            points_per_request,
            seed: self.seed,
            t0,
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// CPU time (user and system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points
    // to one; RUSAGE_SELF is a valid `who`.
    let ru = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) != 0 {
            return 0.0;
        }
        ru.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        None => rt.block_on(send(cli.send)),
        Some(Cmd::Verify(v)) => rt.block_on(verify(v)),
    }
}

/// Sending state shared by the workers.
struct Shared {
    batches: Vec<(Batch, Bytes)>,
    next: AtomicUsize,
    /// Per series chunk, how many windows have been answered.
    done: Vec<AtomicUsize>,
    answered: Notify,
    retries: AtomicU64,
}

async fn send(args: SendArgs) -> Result<()> {
    if args.series_per_request == 0 || args.points_per_request == 0 || args.concurrency == 0 {
        bail!("--series-per-request, --points-per-request and --concurrency must be positive");
    }
    let plan = args
        .load
        .plan(args.series_per_request, args.points_per_request)?;
    let gen_start = Instant::now();
    let batches: Vec<(Batch, Bytes)> = build_batches(&plan)
        .into_iter()
        .map(|mut b| {
            let body = Bytes::from(std::mem::take(&mut b.body));
            (b, body)
        })
        .collect();
    let gen_seconds = gen_start.elapsed().as_secs_f64();
    let body_bytes: usize = batches.iter().map(|(_, b)| b.len()).sum();
    let requests = batches.len();
    let shared = Arc::new(Shared {
        done: (0..plan.chunks()).map(|_| AtomicUsize::new(0)).collect(),
        batches,
        next: AtomicUsize::new(0),
        answered: Notify::new(),
        retries: AtomicU64::new(0),
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(120))
        .build()?;

    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let shared = shared.clone();
        let client = client.clone();
        let url = args.url.clone();
        let max_retries = args.max_retries;
        workers.spawn(async move { worker(shared, client, url, max_retries).await });
    }
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r.context("worker panicked")? {
            workers.abort_all();
            return Err(e);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let samples = plan.samples();
    let out = serde_json::json!({
        "samples": samples,
        "seconds": seconds,
        "samples_per_sec": samples as f64 / seconds,
        "requests": requests,
        "retries": shared.retries.load(Ordering::Relaxed),
        "series": plan.series,
        "points": plan.points,
        "series_per_request": plan.series_per_request,
        "points_per_request": plan.points_per_request,
        "concurrency": args.concurrency,
        "seed": plan.seed,
        "t0": plan.t0,
        "max_time": plan.max_time(),
        "body_bytes": body_bytes,
        "generate_seconds": gen_seconds,
        "loadgen_cpu_seconds": cpu,
    });
    println!("{out}");
    Ok(())
}

async fn worker(
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: String,
    max_retries: u32,
) -> Result<()> {
    loop {
        let idx = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some((batch, body)) = shared.batches.get(idx) else {
            return Ok(());
        };
        // Wait for the previous window of the same series to be answered.
        loop {
            let answered = shared.answered.notified();
            if shared.done[batch.chunk].load(Ordering::Acquire) >= batch.window {
                break;
            }
            answered.await;
        }
        let mut attempt = 0u32;
        loop {
            let res = client
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("User-Agent", "minos-loadgen/0.1")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone())
                .send()
                .await;
            let retry_why = match res {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    let status = r.status();
                    format!("{status}: {}", r.text().await.unwrap_or_default())
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    bail!(
                        "request {idx} (series chunk {}, window {}) refused by {url}: {status}: {}",
                        batch.chunk,
                        batch.window,
                        text.trim()
                    );
                }
                Err(e) => format!("{e}"),
            };
            attempt += 1;
            shared.retries.fetch_add(1, Ordering::Relaxed);
            if attempt > max_retries {
                bail!("request {idx} failed {attempt} times, last: {retry_why}");
            }
            let backoff = Duration::from_millis((50u64 << attempt.min(6)).min(2_000));
            tokio::time::sleep(backoff).await;
        }
        shared.done[batch.chunk].store(batch.window + 1, Ordering::Release);
        shared.answered.notify_waiters();
    }
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let plan = args.load.plan(1, 1)?;
    let Some(t0) = args.load.t0 else {
        bail!("verify needs --t0, as printed by the sending run");
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let base = args.url.trim_end_matches('/');
    // Seconds, with a minute of margin either side.
    let start = (t0 - 60_000) as f64 / 1000.0;
    let end = (plan.max_time() + 60_000) as f64 / 1000.0;
    let mut cmp = Comparison::default();
    let mut first_difference = None;
    for host in hosts_to_check(plan.series, args.hosts) {
        let selector = format!("{{instance=\"{}\"}}", host_instance(host));
        let got = match args.api {
            Api::Export => {
                let r = client
                    .get(format!("{base}/api/v1/export"))
                    .query(&[
                        ("match[]", selector.clone()),
                        ("start", format!("{start:.3}")),
                        ("end", format!("{end:.3}")),
                    ])
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                if !status.is_success() {
                    bail!("export of {selector}: {status}: {}", text.trim());
                }
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(parse_export_line)
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("export of {selector}"))?
            }
            Api::Prometheus => {
                let range = (end - start).ceil() as i64;
                let r = client
                    .get(format!("{base}/api/v1/query"))
                    .query(&[
                        ("query", format!("{selector}[{range}s]")),
                        ("time", format!("{end:.3}")),
                    ])
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                if !status.is_success() {
                    bail!("query of {selector}: {status}: {}", text.trim());
                }
                parse_prometheus_matrix(&text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("query of {selector}"))?
            }
        };
        if let Some(d) = cmp.add_host(&plan, host, &got) {
            first_difference.get_or_insert(d);
        }
    }
    let out = serde_json::json!({
        "series": cmp.series,
        "series_missing": cmp.series_missing,
        "expected": cmp.expected,
        "exact": cmp.exact,
        "differ": cmp.differ,
        "missing": cmp.missing,
        "extra": cmp.extra,
        "first_difference": first_difference,
    });
    println!("{out}");
    Ok(())
}
