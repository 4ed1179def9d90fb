//! Scale benchmark of rule evaluation: one `minos server --rules.dir` evaluating
//! thousands of alerting rules over series pushed to it.
//!
//! `rule_scale` writes `--rules` alerting rules (default 2,000) in `--groups` groups
//! (20, one file each, `interval` `--interval`), starts `minos server --rules.dir DIR
//! --rules.evaluation-interval INTERVAL` on a fresh data directory and, from a thread of
//! its own, pushes `--series` series (10,000: 100 metrics × `--series`/100 instances,
//! gauges wandering around a per-series level, counters growing at wandering rates) every
//! `--interval` (15 s) through `POST /api/v1/import/prometheus`, one request carrying
//! every series. Rules are of five shapes (thresholds on a gauge, `rate()` thresholds,
//! per-instance aggregations over ten metrics, per-job aggregations, `absent()`), all
//! with `for: 1m`, labels and templated annotations; one in twenty (`--firing-pct`) is
//! given a threshold the data crosses, the rest one it never reaches.
//!
//! After `--warmup` it measures for `--window`:
//!
//! - every group evaluation, from `/metrics` polled every `--poll`
//!   (`minos_rule_evaluations_total` moves, `minos_rule_group_last_duration_seconds` is
//!   its duration): per round (the k-th evaluation of every group) the sum over groups,
//!   per group, and the share of one core spent inside evaluations;
//! - the server's CPU time (utime + stime from `/proc/<pid>/stat`) and RSS, this
//!   process's CPU, the feeder thread's CPU, the machine's load;
//! - failures and missed iterations from `/metrics`, samples appended.
//!
//! After the window (not counted in it): `GET /api/v1/rules` (every rule's
//! `evaluationTime`, state and alerts), and what one `GET /metrics` and one
//! `GET /api/v1/rules` cost the server. Before that run, unless `--no-baseline`, the
//! same feed goes to a server without rules for `--baseline-window`, to separate the CPU
//! of ingest from the CPU of evaluation.
//!
//! With `--peer prometheus`, after the Minos runs the same rule files and the same feed
//! go to a `prometheus` (`--prometheus`) in the same way: `global.evaluation_interval`
//! and `scrape_interval` are `--interval`, and the feed, instead of being pushed, is
//! served by the bench on a loopback port as one scrape target (`honor_labels`, so the
//! series keep their `job` and `instance`), its body advanced every `--interval` as for
//! the push. It is measured over the same warmup and window from Prometheus' own
//! `/metrics` (`prometheus_rule_*`, the same per-round logic), `/proc` and its API, with
//! a run without rule files first unless `--no-baseline`; a last block prints Minos'
//! figures against Prometheus' as ratios. Prometheus also stores the scrape's own series
//! (`up`, `scrape_*`: five) and ingests by scraping rather than by push.
//!
//! It exits non-zero when a push or a scrape failed, a rule evaluation failed, an
//! iteration was missed, an evaluation went unobserved, or fewer rules than `--rules`
//! were loaded, on either system. See `benches/rule_scale.md`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use minos_benches::harness::{
    Server, cpu_pct, default_minos, exit_with, free_port, machine_line, machine_ticks, metric,
    parse_duration, proc_sample,
};
use minos_benches::splitmix64;
use serde_json::Value;
use tokio::sync::watch;

/// Metrics per instance: `bench_metric_00`…`bench_metric_79` (gauges) and
/// `bench_counter_00`…`bench_counter_19`.
const METRICS: usize = 100;
const GAUGES: usize = 80;
const COUNTERS: usize = METRICS - GAUGES;

/// Gauges: an Ornstein–Uhlenbeck walk, `v += THETA·(level − v) + SIGMA·u` with `u`
/// uniform of variance 1, per series `level` uniform in `GAUGE_LEVEL`, clamped to
/// 0–100. Stationary standard deviation ≈ 9.2.
const GAUGE_LEVEL: (f64, f64) = (10.0, 50.0);
const GAUGE_THETA: f64 = 0.1;
const GAUGE_SIGMA: f64 = 4.0;
/// Counters: the rate (per second) walks the same way around a per-series level in
/// `RATE_LEVEL` (stationary sd ≈ 0.57), never below 0.
const RATE_LEVEL: (f64, f64) = (0.2, 2.5);
const RATE_SIGMA: f64 = 0.25;

#[derive(Parser, Debug)]
#[command(
    name = "rule_scale",
    about = "Thousands of alerting rules over pushed series in one minos server: evaluation time per round, CPU, RSS"
)]
struct Cli {
    /// Alerting rules.
    #[arg(long, default_value_t = 2000)]
    rules: usize,
    /// Rule groups (one file each); the rules are split evenly.
    #[arg(long, default_value_t = 20)]
    groups: usize,
    /// Series pushed: 100 metrics per instance, so a multiple of 100.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Evaluation interval of every group, and the interval between two pushes.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// Time from the server's start to the window (alerts with `for: 1m` fire after
    /// about 75 s).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    warmup: Duration,
    /// The measurement window (12 rounds at 15 s).
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    window: Duration,
    /// The window of the run without rules (after a 30 s warmup).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    baseline_window: Duration,
    /// Skip the run without rules.
    #[arg(long)]
    no_baseline: bool,
    /// How often `/metrics` is read; shorter than `--interval` so that every evaluation
    /// is seen.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    poll: Duration,
    /// Percentage of rules whose threshold the data crosses.
    #[arg(long, default_value_t = 5)]
    firing_pct: u32,
    /// The minos binary [default: $CARGO_TARGET_DIR/release/minos, else the workspace's
    /// target/release/minos, else `minos` on PATH].
    #[arg(long)]
    minos: Option<PathBuf>,
    /// Seed of the pushed values.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the servers' data directories, logs and the rule files.
    #[arg(long)]
    keep: bool,
    /// One more argument for `minos server`, repeatable (`--server-arg=--flush-interval
    /// --server-arg=2m`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// After the Minos runs, run the same rules and feed on this peer and compare.
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// The Prometheus binary for `--peer prometheus`.
    #[arg(long, default_value = "prometheus")]
    prometheus: PathBuf,
}

/// A system to compare Minos with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    Prometheus,
}

/// The server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Minos,
    Prometheus,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Minos => "minos",
            System::Prometheus => "prometheus",
        }
    }

    /// How its `/metrics` shows rule groups.
    fn rule_metrics(self) -> RuleMetrics {
        match self {
            System::Minos => RuleMetrics {
                prefix: "minos_rule_",
                label: "rule_group",
                stamped: false,
            },
            System::Prometheus => RuleMetrics {
                prefix: "prometheus_rule_",
                label: "rule_group",
                stamped: true,
            },
        }
    }

    /// Its `/metrics` names of samples appended, head series and blocks.
    fn tsdb_metrics(self) -> [&'static str; 3] {
        match self {
            System::Minos => [
                "minos_tsdb_samples_appended_total",
                "minos_tsdb_head_series",
                "minos_tsdb_blocks",
            ],
            System::Prometheus => [
                "prometheus_tsdb_head_samples_appended_total",
                "prometheus_tsdb_head_series",
                "prometheus_tsdb_blocks_loaded",
            ],
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.series == 0 || !cli.series.is_multiple_of(METRICS) {
        bail!("--series must be a positive multiple of {METRICS}");
    }
    if cli.rules == 0 || cli.groups == 0 || cli.groups > cli.rules {
        bail!("--rules and --groups must be positive, with at least one rule a group");
    }
    if cli.poll >= cli.interval {
        bail!("--poll must be shorter than --interval");
    }
    if cli.firing_pct > 100 {
        bail!("--firing-pct is a percentage");
    }
    exit_with(run(cli))
}

// ---------------------------------------------------------------------------------------
// The pushed series
// ---------------------------------------------------------------------------------------

fn instance_name(i: usize) -> String {
    format!("host-{i:03}")
}

/// Every series' state; [`Feed::render`] steps it and writes one push body.
struct Feed {
    /// Per series, the line up to its value:
    /// `bench_metric_07{instance="host-012",job="bench"} `. Series `m * instances + i`
    /// is metric `m` of instance `i`; metrics below [`GAUGES`] are gauges.
    prefixes: Vec<String>,
    instances: usize,
    /// Gauge value, or counter total.
    values: Vec<f64>,
    /// Gauges: the level the value reverts to. Counters: the rate's level.
    levels: Vec<f64>,
    /// Counters: the current rate per second (unused for gauges).
    rates: Vec<f64>,
    rng: u64,
}

fn uniform(rng: &mut u64) -> f64 {
    (splitmix64(rng) >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform noise of mean 0 and variance 1.
fn noise(rng: &mut u64) -> f64 {
    (uniform(rng) * 2.0 - 1.0) * 3f64.sqrt()
}

impl Feed {
    fn new(series: usize, seed: u64) -> Feed {
        let instances = series / METRICS;
        let mut rng = seed;
        let (mut prefixes, mut values, mut levels, mut rates) = (
            Vec::with_capacity(series),
            Vec::with_capacity(series),
            Vec::with_capacity(series),
            Vec::with_capacity(series),
        );
        for m in 0..METRICS {
            let name = if m < GAUGES {
                format!("bench_metric_{m:02}")
            } else {
                format!("bench_counter_{:02}", m - GAUGES)
            };
            for i in 0..instances {
                prefixes.push(format!(
                    "{name}{{instance=\"{}\",job=\"bench\"}} ",
                    instance_name(i)
                ));
                if m < GAUGES {
                    let level = GAUGE_LEVEL.0 + uniform(&mut rng) * (GAUGE_LEVEL.1 - GAUGE_LEVEL.0);
                    levels.push(level);
                    values.push((level + 9.0 * noise(&mut rng)).clamp(0.0, 100.0));
                    rates.push(0.0);
                } else {
                    let level = RATE_LEVEL.0 + uniform(&mut rng) * (RATE_LEVEL.1 - RATE_LEVEL.0);
                    levels.push(level);
                    rates.push(level);
                    values.push((uniform(&mut rng) * 1e6).floor());
                }
            }
        }
        Feed {
            prefixes,
            instances,
            values,
            levels,
            rates,
            rng,
        }
    }

    /// Advances every series by `dt` and writes their lines (no timestamps: the server
    /// stamps them with the request's time) into `out`.
    fn render(&mut self, dt: f64, out: &mut String) {
        out.clear();
        let gauges = GAUGES * self.instances;
        for s in 0..self.prefixes.len() {
            let v = if s < gauges {
                let v = self.values[s]
                    + GAUGE_THETA * (self.levels[s] - self.values[s])
                    + GAUGE_SIGMA * noise(&mut self.rng);
                v.clamp(0.0, 100.0)
            } else {
                let r = self.rates[s]
                    + GAUGE_THETA * (self.levels[s] - self.rates[s])
                    + RATE_SIGMA * noise(&mut self.rng);
                self.rates[s] = r.max(0.0);
                (self.values[s] + self.rates[s] * dt).round()
            };
            self.values[s] = v;
            out.push_str(&self.prefixes[s]);
            if s < gauges {
                let _ = writeln!(out, "{v:.2}");
            } else {
                let _ = writeln!(out, "{v}");
            }
        }
    }
}

/// One push (when the feed is served for scraping: one step of the feed, with a zero
/// `latency`).
#[derive(Debug, Clone, Copy)]
struct Push {
    at: Instant,
    /// Time to step the series and write the body.
    render: Duration,
    /// From sending to the answer.
    latency: Duration,
    /// The feeder thread's CPU time for this push: building the body, sending it,
    /// reading the answer.
    cpu: Duration,
    ok: bool,
}

/// What the feeder thread shares with the measurement.
struct FeedShared {
    pushes: Mutex<Vec<Push>>,
    /// The first failed push's answer (or the serving's first error).
    first_error: Mutex<Option<String>>,
    /// When the feed is served: every scrape answered.
    scrapes: Mutex<Vec<Scrape>>,
}

impl FeedShared {
    fn new() -> Arc<FeedShared> {
        Arc::new(FeedShared {
            pushes: Mutex::new(Vec::new()),
            first_error: Mutex::new(None),
            scrapes: Mutex::new(Vec::new()),
        })
    }
}

/// One scrape of the served feed.
#[derive(Debug, Clone, Copy)]
struct Scrape {
    at: Instant,
    /// Which step of the feed it got (0: before the first).
    step: u64,
    /// From the end of the request to the end of the answer.
    answer: Duration,
}

/// Where the feeder sends the feed.
enum Target {
    /// `POST` every step to this URL.
    Push(String),
    /// Serve the latest step as `GET /metrics` (any path) on this listener.
    Serve(std::net::TcpListener),
}

/// The latest step of the feed, for the scrape endpoint: its number and body.
type Latest = Arc<Mutex<(u64, Arc<String>)>>;

/// Answers every request on `conn` (HTTP/1.1, kept alive; requests have no body) with
/// the latest body, until the peer closes it.
async fn serve_conn(
    mut conn: tokio::net::TcpStream,
    latest: Latest,
    shared: Arc<FeedShared>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: up to the blank line after its headers.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..end);
        let t = Instant::now();
        let (step, body) = {
            let l = latest.lock().unwrap();
            (l.0, l.1.clone())
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body.as_bytes()).await?;
        shared.scrapes.lock().unwrap().push(Scrape {
            at: t,
            step,
            answer: t.elapsed(),
        });
    }
}

/// Accepts scrape connections until the runtime ends.
async fn serve(listener: tokio::net::TcpListener, latest: Latest, shared: Arc<FeedShared>) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let (latest, shared) = (latest.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_conn(conn, latest, shared.clone()).await {
                        shared
                            .first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(format!("serving a scrape: {e}"));
                    }
                });
            }
            Err(e) => {
                shared
                    .first_error
                    .lock()
                    .unwrap()
                    .get_or_insert(format!("accepting a scrape: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution,
/// where `/proc` counts 10 ms ticks).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec passed to it.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of this whole process (`getrusage`, microsecond resolution).
fn process_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Starts the feeder on a thread of its own, with a current-thread runtime, so that all
/// of its work (building the bodies, pushing them or answering the scrapes) is that
/// thread's CPU time and every push can measure its own.
fn start_feeder(
    cli: &Cli,
    target: Target,
    shared: Arc<FeedShared>,
    mut stop: watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>> {
    let (series, seed, interval) = (cli.series, cli.seed, cli.interval);
    std::thread::Builder::new()
        .name("feeder".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    *shared.first_error.lock().unwrap() = Some(format!("feeder runtime: {e}"));
                    return;
                }
            };
            rt.block_on(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("an HTTP client");
                let latest: Latest = Arc::new(Mutex::new((0, Arc::new(String::new()))));
                let url = match target {
                    Target::Push(url) => Some(url),
                    Target::Serve(listener) => {
                        let listener = listener
                            .set_nonblocking(true)
                            .and_then(|()| tokio::net::TcpListener::from_std(listener));
                        match listener {
                            Ok(l) => {
                                tokio::spawn(serve(l, latest.clone(), shared.clone()));
                            }
                            Err(e) => {
                                *shared.first_error.lock().unwrap() =
                                    Some(format!("scrape listener: {e}"));
                                return;
                            }
                        }
                        None
                    }
                };
                let mut feed = Feed::new(series, seed);
                let mut body = String::new();
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    let at = Instant::now();
                    let cpu0 = thread_cpu();
                    feed.render(interval.as_secs_f64(), &mut body);
                    let render = at.elapsed();
                    let Some(url) = &url else {
                        let mut l = latest.lock().unwrap();
                        *l = (l.0 + 1, Arc::new(body.clone()));
                        drop(l);
                        shared.pushes.lock().unwrap().push(Push {
                            at,
                            render,
                            latency: Duration::ZERO,
                            cpu: thread_cpu().saturating_sub(cpu0),
                            ok: true,
                        });
                        continue;
                    };
                    let sent = Instant::now();
                    let res = client
                        .post(url)
                        .header("Content-Type", "text/plain; version=0.0.4")
                        .body(body.clone())
                        .send()
                        .await;
                    let (ok, err) = match res {
                        Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => (true, None),
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            (false, Some(format!("{status}: {text}")))
                        }
                        Err(e) => (false, Some(format!("{e:#}"))),
                    };
                    let latency = sent.elapsed();
                    let cpu = thread_cpu().saturating_sub(cpu0);
                    if let Some(e) = err {
                        shared.first_error.lock().unwrap().get_or_insert(e);
                    }
                    shared.pushes.lock().unwrap().push(Push {
                        at,
                        render,
                        latency,
                        cpu,
                        ok,
                    });
                }
            });
        })
        .context("starting the feeder thread")
}

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

/// The five shapes of rule, by their name's prefix.
const KINDS: [(&str, &str); 7] = [
    ("BenchGaugeHigh", "threshold on a gauge"),
    ("BenchCounterRateHigh", "rate() threshold"),
    ("BenchInstanceAvgHigh", "avg by (instance) over 10 metrics"),
    ("BenchInstanceMaxHigh", "max by (instance) over 10 metrics"),
    ("BenchJobRateHigh", "sum by (job) (rate())"),
    ("BenchJobCountHigh", "count by (job) (gauge > N) > M"),
    ("BenchSeriesAbsent", "absent() of one series"),
];

fn kind_of(name: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(p, _)| name.strip_prefix(p).is_some_and(|r| r.starts_with('_')))
        .map_or("other", |(p, _)| p)
}

/// Rule `i`'s YAML (indented for a group's `rules:` list) and whether its threshold is
/// one the data crosses. Rules come in blocks of ten consecutive indexes (five gauge
/// thresholds, two `rate()`, one per-instance and one per-job aggregation, one
/// `absent()`); a `firing_pct` share of the blocks can fire.
fn rule_yaml(i: usize, instances: usize, firing_pct: u32) -> (String, bool) {
    let block = i / 10;
    let fire = (block as u64 * u64::from(firing_pct)) % 100 < u64::from(firing_pct);
    // Spread the rules over the metrics (and decades of metrics) and instances.
    let m = (i * 7 + block) % GAUGES;
    let c = (i * 3 + block) % COUNTERS;
    let decade = (i + block) % (GAUGES / 10);
    let n = instances as f64;
    let per_instance = "{{ $labels.instance }} is at {{ $value | humanize }}";
    // Kinds 7 and 8 each have two variants, alternating between blocks and, among the
    // blocks that can fire (every twentieth at 5 %), between those too.
    let variant = (block + block / 20) % 2;
    let (name, expr, summary, description) = match (i % 10, variant) {
        (0..=4, _) => {
            let t = if fire { 60 } else { 90 + block % 10 };
            (
                "BenchGaugeHigh",
                format!("bench_metric_{m:02}{{job=\"bench\"}} > {t}"),
                per_instance.to_string(),
                format!(
                    "bench_metric_{m:02} of {{{{ $labels.instance }}}} (job {{{{ $labels.job }}}}) has been above {t} for 1m."
                ),
            )
        }
        (5 | 6, _) => {
            let t = if fire { 2.5 } else { 6.0 };
            (
                "BenchCounterRateHigh",
                format!("rate(bench_counter_{c:02}{{job=\"bench\"}}[1m]) > {t}"),
                "{{ $labels.instance }} counts {{ $value | humanize }} a second".to_string(),
                format!(
                    "bench_counter_{c:02} of {{{{ $labels.instance }}}} has grown faster than {t}/s for 1m."
                ),
            )
        }
        (7, 0) => {
            let t = if fire { 38 } else { 80 };
            (
                "BenchInstanceAvgHigh",
                format!(
                    "avg by (instance) ({{__name__=~\"bench_metric_{decade}[0-9]\",job=\"bench\"}}) > {t}"
                ),
                per_instance.to_string(),
                format!(
                    "The average of bench_metric_{decade}0 to {decade}9 on {{{{ $labels.instance }}}} has been above {t} for 1m."
                ),
            )
        }
        (7, _) => {
            let t = if fire { 62 } else { 99 };
            (
                "BenchInstanceMaxHigh",
                format!(
                    "max by (instance) ({{__name__=~\"bench_metric_{decade}[0-9]\",job=\"bench\"}}) > {t}"
                ),
                per_instance.to_string(),
                format!(
                    "One of bench_metric_{decade}0 to {decade}9 on {{{{ $labels.instance }}}} has been above {t} for 1m."
                ),
            )
        }
        (8, 0) => {
            let t = if fire { 0.5 * n } else { 10.0 * n };
            (
                "BenchJobRateHigh",
                format!("sum by (job) (rate(bench_counter_{c:02}{{job=\"bench\"}}[1m])) > {t}"),
                "job {{ $labels.job }} counts {{ $value | humanize }} a second".to_string(),
                format!(
                    "bench_counter_{c:02} summed over job {{{{ $labels.job }}}} has grown faster than {t}/s for 1m."
                ),
            )
        }
        (8, _) => {
            let (level, t) = if fire { (60, 0) } else { (75, instances / 2) };
            (
                "BenchJobCountHigh",
                format!("count by (job) (bench_metric_{m:02}{{job=\"bench\"}} > {level}) > {t}"),
                format!(
                    "{{{{ $value | humanize }}}} instances of job {{{{ $labels.job }}}} above {level}"
                ),
                format!(
                    "More than {t} instances have had bench_metric_{m:02} above {level} for 1m."
                ),
            )
        }
        _ => {
            let k = (i * 13 + block) % instances;
            let instance = if fire {
                format!("host-retired-{k:03}")
            } else {
                instance_name(k)
            };
            (
                "BenchSeriesAbsent",
                format!("absent(bench_metric_{m:02}{{job=\"bench\",instance=\"{instance}\"}})"),
                format!("bench_metric_{m:02} of {{{{ $labels.instance }}}} is missing"),
                format!(
                    "No sample of bench_metric_{m:02} from {{{{ $labels.instance }}}} for 1m: the host or its exporter is down."
                ),
            )
        }
    };
    let severity = if i.is_multiple_of(3) {
        "critical"
    } else {
        "warning"
    };
    let yaml = format!(
        "      - alert: {name}_{i:04}\n        expr: '{expr}'\n        for: 1m\n        labels:\n          severity: {severity}\n          team: team-{}\n        annotations:\n          summary: '{summary}'\n          description: '{description}'\n          runbook_url: 'https://runbooks.example.com/bench/{name}'\n",
        i % 7
    );
    (yaml, fire)
}

/// Writes the rule files into `dir`: `bench-GG.yml`, one group `bench-GG` each. Returns
/// the rules in each group and how many can fire.
fn write_rules(cli: &Cli, dir: &Path) -> Result<(BTreeMap<String, usize>, usize)> {
    let instances = cli.series / METRICS;
    let mut sizes = BTreeMap::new();
    let mut firing = 0;
    let mut i = 0;
    for g in 0..cli.groups {
        // Spread the remainder over the first groups.
        let n = cli.rules / cli.groups + usize::from(g < cli.rules % cli.groups);
        let name = format!("bench-{g:02}");
        let mut text = format!(
            "# Written by rule_scale: {n} of {} alerting rules.\ngroups:\n  - name: {name}\n    interval: {}ms\n    rules:\n",
            cli.rules,
            cli.interval.as_millis()
        );
        for _ in 0..n {
            let (yaml, fire) = rule_yaml(i, instances, cli.firing_pct);
            text.push_str(&yaml);
            firing += usize::from(fire);
            i += 1;
        }
        std::fs::write(dir.join(format!("{name}.yml")), text)
            .with_context(|| format!("writing {name}.yml"))?;
        sizes.insert(name, n);
    }
    Ok((sizes, firing))
}

// ---------------------------------------------------------------------------------------
// Reading the server
// ---------------------------------------------------------------------------------------

/// One group's counters in `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct GroupCounters {
    evaluations: f64,
    failures: f64,
    last_duration: f64,
    missed: f64,
    /// When the latest evaluation started, Unix seconds (Prometheus only).
    last_evaluation: f64,
}

/// How a system's `/metrics` shows its rule groups: `{prefix}evaluations_total`,
/// `{prefix}evaluation_failures_total`, `{prefix}group_last_duration_seconds`,
/// `{prefix}group_iterations_missed_total` (and, `stamped`,
/// `{prefix}group_last_evaluation_timestamp_seconds`), each with one label `label` whose
/// value is `file;group`.
#[derive(Debug, Clone, Copy)]
struct RuleMetrics {
    prefix: &'static str,
    label: &'static str,
    /// A new evaluation is told by the timestamp of the latest one, not by
    /// `evaluations_total`. Prometheus counts a group's rules one by one during its
    /// evaluation and sets the duration and the timestamp after it, so a poll in the
    /// middle of one sees part of the count and the previous duration; Minos updates the
    /// three together.
    stamped: bool,
}

impl RuleMetrics {
    /// The samples of a `/metrics` page, by group name (the part of the label's value
    /// after the last `;`).
    fn parse(&self, text: &str) -> BTreeMap<String, GroupCounters> {
        let open = format!("{{{}=\"", self.label);
        let mut out: BTreeMap<String, GroupCounters> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(self.prefix) else {
                continue;
            };
            let Some((metric, rest)) = rest.split_once(open.as_str()) else {
                continue;
            };
            let Some((key, value)) = rest.split_once("\"}") else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let name = key.rsplit_once(';').map_or(key, |(_, n)| n).to_string();
            let c = out.entry(name).or_default();
            match metric {
                "evaluations_total" => c.evaluations = v,
                "evaluation_failures_total" => c.failures = v,
                "group_last_duration_seconds" => c.last_duration = v,
                "group_iterations_missed_total" => c.missed = v,
                "group_last_evaluation_timestamp_seconds" => c.last_evaluation = v,
                _ => {}
            }
        }
        out
    }

    /// Whether a group evaluated since the previous poll (`prev`), and if so how many
    /// times (1 unless the poller was too slow, or, for Minos, the first evaluation
    /// after start, which restores alerts and counts twice).
    fn new_evaluations(
        &self,
        prev: Option<&GroupCounters>,
        now: &GroupCounters,
        size: usize,
        interval: Duration,
    ) -> Option<f64> {
        if self.stamped {
            let before = prev.map_or(0.0, |p| p.last_evaluation);
            if now.last_evaluation <= before {
                return None;
            }
            if before == 0.0 {
                return Some(1.0);
            }
            Some(((now.last_evaluation - before) / interval.as_secs_f64()).round())
        } else {
            let before = prev.map_or(0.0, |p| p.evaluations);
            (now.evaluations > before).then(|| (now.evaluations - before) / size as f64)
        }
    }
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<String> {
    client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("GET {url}: body"))
}

/// One group evaluation seen by the poller.
#[derive(Debug, Clone)]
struct Evaluation {
    at: Instant,
    group: String,
    duration: f64,
    /// Evaluations since the previous poll (1 unless the poll was too slow, or the first
    /// evaluation after start, which restores alerts and evaluates twice).
    count: f64,
}

/// What the poller saw.
#[derive(Default)]
struct Polled {
    evals: Vec<Evaluation>,
    /// When each `GET /metrics` was sent, and how long its answer took.
    gets: Vec<(Instant, Duration)>,
}

/// Reads `/metrics` every `period` and records each group's new evaluations, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn poll_groups(
    client: reqwest::Client,
    base: String,
    period: Duration,
    interval: Duration,
    dialect: RuleMetrics,
    sizes: BTreeMap<String, usize>,
    seen: Arc<Mutex<Polled>>,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!("{base}/metrics");
    let mut prev: BTreeMap<String, GroupCounters> = BTreeMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let sent = Instant::now();
        let Ok(text) = get_text(&client, &url).await else {
            continue;
        };
        let at = Instant::now();
        let now = dialect.parse(&text);
        let mut seen = seen.lock().unwrap();
        seen.gets.push((sent, at - sent));
        for (group, c) in &now {
            let Some(&size) = sizes.get(group) else {
                continue;
            };
            if let Some(count) = dialect.new_evaluations(prev.get(group), c, size, interval) {
                seen.evals.push(Evaluation {
                    at,
                    group: group.clone(),
                    duration: c.last_duration,
                    count,
                });
            }
        }
        drop(seen);
        prev = now;
    }
}

/// The sums over the bench's groups of their `/metrics` counters.
async fn totals(
    client: &reqwest::Client,
    base: &str,
    dialect: RuleMetrics,
    sizes: &BTreeMap<String, usize>,
) -> Result<GroupCounters> {
    let text = get_text(client, &format!("{base}/metrics")).await?;
    let mut t = GroupCounters::default();
    for (g, c) in dialect.parse(&text) {
        if sizes.contains_key(&g) {
            t.evaluations += c.evaluations;
            t.failures += c.failures;
            t.missed += c.missed;
        }
    }
    Ok(t)
}

/// One rule from `GET /api/v1/rules`.
#[derive(Debug, Clone)]
struct RuleView {
    name: String,
    group: String,
    query: String,
    seconds: f64,
    healthy: bool,
    pending: usize,
    firing: usize,
}

/// The bench's rules from `GET /api/v1/rules`, and each group's `evaluationTime`.
fn rule_views(
    v: &Value,
    sizes: &BTreeMap<String, usize>,
) -> (Vec<RuleView>, BTreeMap<String, f64>) {
    let mut rules = Vec::new();
    let mut groups = BTreeMap::new();
    for g in v["data"]["groups"].as_array().into_iter().flatten() {
        let group = g["name"].as_str().unwrap_or_default().to_string();
        if !sizes.contains_key(&group) {
            continue;
        }
        groups.insert(group.clone(), g["evaluationTime"].as_f64().unwrap_or(0.0));
        for r in g["rules"].as_array().into_iter().flatten() {
            let alerts = r["alerts"].as_array();
            let count = |state: &str| {
                alerts
                    .into_iter()
                    .flatten()
                    .filter(|a| a["state"] == state)
                    .count()
            };
            rules.push(RuleView {
                name: r["name"].as_str().unwrap_or_default().to_string(),
                group: group.clone(),
                query: r["query"].as_str().unwrap_or_default().to_string(),
                seconds: r["evaluationTime"].as_f64().unwrap_or(0.0),
                healthy: r["health"] == "ok",
                pending: count("pending"),
                firing: count("firing"),
            });
        }
    }
    (rules, groups)
}

// ---------------------------------------------------------------------------------------
// A run
// ---------------------------------------------------------------------------------------

/// What one server run showed.
struct Report {
    system: System,
    rules: bool,
    window_secs: f64,
    server_cpu: f64,
    rss_mb: f64,
    hwm_mb: f64,
    idle_rss_mb: f64,
    bench_cpu: f64,
    pushes: Vec<Push>,
    push_error: Option<String>,
    /// Prometheus: the scrapes of the served feed in the window.
    scrapes: Vec<Scrape>,
    appended_per_sec: f64,
    head_series: f64,
    /// Blocks on disk at the window's end (a query reads every block its range overlaps).
    blocks: f64,
    machine: Option<String>,
    /// With rules:
    evals: Vec<Evaluation>,
    counters: (GroupCounters, GroupCounters),
    views: Vec<RuleView>,
    group_times: BTreeMap<String, f64>,
    metrics_get_cpu_ms: f64,
    /// Answer times of the poller's `GET /metrics` in the window, ms.
    metrics_gets: Vec<f64>,
    rules_get: (f64, f64),
    /// Size of the `GET /api/v1/rules` answer.
    rules_bytes: usize,
    api_alerts: usize,
    log: (usize, usize, Vec<String>),
    clean_stop: bool,
}

async fn start(cli: &Cli, rules_dir: Option<&Path>) -> Result<Server> {
    let dir = tempfile::Builder::new()
        .prefix(if rules_dir.is_some() {
            "rule-scale-"
        } else {
            "rule-scale-norules-"
        })
        .tempdir()
        .context("creating the data directory")?;
    let port = free_port()?;
    let program = match &cli.minos {
        Some(p) => p.clone(),
        None => default_minos()?,
    };
    let mut args: Vec<OsString> = vec![
        "server".into(),
        "--data".into(),
        dir.path().join("data").into(),
        "--listen".into(),
        format!("127.0.0.1:{port}").into(),
    ];
    if let Some(r) = rules_dir {
        args.extend([
            "--rules.dir".into(),
            r.into(),
            "--rules.evaluation-interval".into(),
            format!("{}ms", cli.interval.as_millis()).into(),
        ]);
    }
    args.extend(cli.server_args.iter().map(OsString::from));
    let mut server = Server::spawn(
        &program,
        &args,
        format!("http://127.0.0.1:{port}"),
        dir,
        cli.keep,
    )?;
    server.wait_ready(Duration::from_secs(120), || true).await?;
    eprintln!(
        "started {} on {} (pid {}){}; log: {}",
        program.display(),
        server.base,
        server.pid(),
        if rules_dir.is_some() {
            " with the rules"
        } else {
            " without rules"
        },
        server.log.display()
    );
    Ok(server)
}

/// Starts `prometheus` with `rules_dir`'s rule files (if any) and one scrape job on
/// `127.0.0.1:scrape_port`, on a fresh data directory and a free loopback port.
async fn start_prometheus(cli: &Cli, rules_dir: Option<&Path>, scrape_port: u16) -> Result<Server> {
    let dir = tempfile::Builder::new()
        .prefix(if rules_dir.is_some() {
            "rule-scale-prometheus-"
        } else {
            "rule-scale-prometheus-norules-"
        })
        .tempdir()
        .context("creating the data directory")?;
    let interval = cli.interval.as_millis();
    let rule_files = match rules_dir {
        Some(r) => format!("rule_files:\n  - '{}/*.yml'\n", r.display()),
        None => String::new(),
    };
    let config = format!(
        "# Written by rule_scale.\nglobal:\n  scrape_interval: {interval}ms\n  scrape_timeout: {}ms\n  evaluation_interval: {interval}ms\n{rule_files}scrape_configs:\n  - job_name: bench\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n",
        interval.min(10_000)
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).context("writing prometheus.yml")?;
    let port = free_port()?;
    let args: Vec<OsString> = vec![
        format!("--config.file={}", config_path.display()).into(),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()).into(),
        format!("--web.listen-address=127.0.0.1:{port}").into(),
    ];
    let mut server = Server::spawn(
        &cli.prometheus,
        &args,
        format!("http://127.0.0.1:{port}"),
        dir,
        cli.keep,
    )?;
    server.wait_ready(Duration::from_secs(120), || true).await?;
    eprintln!(
        "started {} on {} (pid {}){}, scraping 127.0.0.1:{scrape_port}; log: {}",
        cli.prometheus.display(),
        server.base,
        server.pid(),
        if rules_dir.is_some() {
            " with the rules"
        } else {
            " without rules"
        },
        server.log.display()
    );
    Ok(server)
}

/// The first line of `prometheus --version`.
fn prometheus_version(program: &Path) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| format!("{}: no version", program.display()))
}

async fn measure(
    cli: &Cli,
    system: System,
    rules_dir: Option<&Path>,
    sizes: &BTreeMap<String, usize>,
    warmup: Duration,
    window: Duration,
) -> Result<Report> {
    let dialect = system.rule_metrics();
    let [appended_metric, series_metric, blocks_metric] = system.tsdb_metrics();
    let (mut server, target) = match system {
        System::Minos => {
            let server = start(cli, rules_dir).await?;
            let url = format!("{}/api/v1/import/prometheus", server.base);
            (server, Target::Push(url))
        }
        System::Prometheus => {
            // Bound before Prometheus starts, so that its first scrapes wait in the
            // backlog rather than fail.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .context("binding the scrape endpoint")?;
            let port = listener.local_addr()?.port();
            let server = start_prometheus(cli, rules_dir, port).await?;
            (server, Target::Serve(listener))
        }
    };
    let started = Instant::now();
    let (base, pid) = (server.base.clone(), server.pid().to_string());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let idle = proc_sample(&pid)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = FeedShared::new();
    let feeder = start_feeder(cli, target, shared.clone(), stop_rx.clone())?;
    let seen = Arc::new(Mutex::new(Polled::default()));
    let poller = tokio::spawn(poll_groups(
        http.clone(),
        base.clone(),
        cli.poll,
        cli.interval,
        dialect,
        sizes.clone(),
        seen.clone(),
        stop_rx,
    ));

    eprintln!(
        "{} {}: warming up for {warmup:?}, then measuring for {window:?}…",
        system.name(),
        if rules_dir.is_some() {
            "rules"
        } else {
            "ingest alone"
        }
    );
    let warm_end = started + warmup;
    while Instant::now() < warm_end {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("the server exited ({status}):\n{}", server.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The window. Read /metrics before the CPU samples so that its cost is outside.
    let c0 = totals(&http, &base, dialect, sizes).await?;
    let appended0 = metric(&http, &base, appended_metric).await?;
    let s0 = proc_sample(&pid)?;
    let me0 = process_cpu_secs();
    let m0 = machine_ticks();
    let w_start = Instant::now();
    tokio::time::sleep(window).await;
    let s1 = proc_sample(&pid)?;
    let me1 = process_cpu_secs();
    let m1 = machine_ticks();
    let w_end = Instant::now();
    let window_secs = w_end.duration_since(w_start).as_secs_f64();
    let c1 = totals(&http, &base, dialect, sizes).await?;
    let appended1 = metric(&http, &base, appended_metric).await?;
    let head_series = metric(&http, &base, series_metric).await?;
    let blocks = metric(&http, &base, blocks_metric).await?;

    // After the window: the rules as the API shows them, and what reading them costs.
    let (mut views, mut group_times, mut rules_get, mut rules_bytes, mut api_alerts) =
        (Vec::new(), BTreeMap::new(), (0.0, 0.0), 0, 0);
    if rules_dir.is_some() {
        let a = proc_sample(&pid)?;
        let t = Instant::now();
        let text = get_text(&http, &format!("{base}/api/v1/rules")).await?;
        let wall = t.elapsed().as_secs_f64();
        let b = proc_sample(&pid)?;
        rules_get = (wall * 1000.0, (b.cpu_secs - a.cpu_secs) * 1000.0);
        let v: Value = serde_json::from_str(&text).context("/api/v1/rules: not JSON")?;
        (views, group_times) = rule_views(&v, sizes);
        rules_bytes = text.len();
        let alerts: Value =
            serde_json::from_str(&get_text(&http, &format!("{base}/api/v1/alerts")).await?)
                .context("/api/v1/alerts: not JSON")?;
        api_alerts = alerts["data"]["alerts"].as_array().map_or(0, Vec::len);
    }
    // Enough requests for /proc's 10 ms ticks to resolve a fraction of a millisecond.
    const GETS: u32 = 50;
    let a = proc_sample(&pid)?;
    for _ in 0..GETS {
        get_text(&http, &format!("{base}/metrics")).await?;
    }
    let b = proc_sample(&pid)?;
    let metrics_get_cpu_ms = (b.cpu_secs - a.cpu_secs) * 1000.0 / f64::from(GETS);

    let _ = stop_tx.send(true);
    let _ = poller.await;
    let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
    let clean_stop = server.stop(Duration::from_secs(60));
    let log = server.log_problems(5);

    let polled = std::mem::take(&mut *seen.lock().unwrap());
    let evals = polled
        .evals
        .into_iter()
        .filter(|e| e.at >= w_start && e.at <= w_end)
        .collect();
    let metrics_gets = polled
        .gets
        .into_iter()
        .filter(|(at, _)| *at >= w_start && *at <= w_end)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    let pushes = shared
        .pushes
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.at >= w_start && p.at <= w_end)
        .copied()
        .collect();
    let push_error = shared.first_error.lock().unwrap().clone();
    let scrapes = shared
        .scrapes
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.at >= w_start && p.at <= w_end)
        .copied()
        .collect();
    let server_cpu = cpu_pct(&s0, &s1);
    let bench_cpu = (me1 - me0) / window_secs * 100.0;
    Ok(Report {
        system,
        rules: rules_dir.is_some(),
        window_secs,
        server_cpu,
        rss_mb: s1.rss_mb,
        hwm_mb: s1.hwm_mb,
        idle_rss_mb: idle.rss_mb,
        bench_cpu,
        pushes,
        push_error,
        scrapes,
        appended_per_sec: (appended1 - appended0) / window_secs,
        head_series,
        blocks,
        machine: machine_line(m0, m1, server_cpu + bench_cpu),
        evals,
        counters: (c0, c1),
        views,
        group_times,
        metrics_get_cpu_ms,
        metrics_gets,
        rules_get,
        rules_bytes,
        api_alerts,
        log,
        clean_stop,
    })
}

async fn run(cli: Cli) -> Result<bool> {
    let rules_dir = tempfile::Builder::new()
        .prefix("rule-scale-rules-")
        .tempdir()
        .context("creating the rules directory")?;
    let (sizes, fire_capable) = write_rules(&cli, rules_dir.path())?;
    let mut probe = Feed::new(cli.series, cli.seed);
    let mut body = String::new();
    probe.render(cli.interval.as_secs_f64(), &mut body);
    eprintln!(
        "{} rules in {} groups ({fire_capable} with a threshold the data crosses) in {}; {} series, {} bytes a push",
        cli.rules,
        cli.groups,
        rules_dir.path().display(),
        cli.series,
        body.len()
    );

    // Each system: a run without rules (unless --no-baseline), then one with them.
    let runs = async |system: System| -> Result<(Option<Report>, Report)> {
        let baseline = if cli.no_baseline {
            None
        } else {
            Some(
                measure(
                    &cli,
                    system,
                    None,
                    &sizes,
                    Duration::from_secs(30),
                    cli.baseline_window,
                )
                .await?,
            )
        };
        let with_rules = measure(
            &cli,
            system,
            Some(rules_dir.path()),
            &sizes,
            cli.warmup,
            cli.window,
        )
        .await?;
        Ok((baseline, with_rules))
    };
    let (baseline, with_rules) = runs(System::Minos).await?;
    let peer = match cli.peer {
        Some(Peer::Prometheus) => Some((
            prometheus_version(&cli.prometheus),
            runs(System::Prometheus).await?,
        )),
        None => None,
    };
    if cli.keep {
        eprintln!("kept the rule files in {}", rules_dir.keep().display());
    }

    println!();
    println!(
        "rule scale: {} alerting rules in {} groups over {} series ({} instances × {METRICS} metrics), evaluated and pushed every {:?}; {:?} warmup, {:?} window",
        cli.rules,
        cli.groups,
        cli.series,
        cli.series / METRICS,
        cli.interval,
        cli.warmup,
        cli.window
    );
    if !cli.server_args.is_empty() {
        println!("server arguments {}", cli.server_args.join(" "));
    }
    let mut passed = true;
    if let Some(b) = &baseline {
        passed &= print_common(b, &cli);
    }
    passed &= print_common(&with_rules, &cli);
    passed &= print_rules(&with_rules, baseline.as_ref(), &cli, &sizes, fire_capable);
    if let Some((version, (p_baseline, p_rules))) = &peer {
        println!();
        println!(
            "peer: {version}, same rule files, same feed scraped every {:?} from the bench (honor_labels) instead of pushed; it also stores the scrape's own series (up, scrape_*)",
            cli.interval
        );
        if let Some(b) = p_baseline {
            passed &= print_common(b, &cli);
        }
        passed &= print_common(p_rules, &cli);
        passed &= print_rules(p_rules, p_baseline.as_ref(), &cli, &sizes, fire_capable);
        print_comparison(
            (&with_rules, baseline.as_ref()),
            (p_rules, p_baseline.as_ref()),
            &sizes,
        );
    }
    if !passed {
        println!("FAILED: see the lines above");
    }
    Ok(passed)
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The lines both runs have; returns whether the feed had no failure.
fn print_common(r: &Report, cli: &Cli) -> bool {
    let label = match (r.system, r.rules) {
        (System::Minos, true) => "with rules",
        (System::Minos, false) => "ingest alone",
        (System::Prometheus, true) => "prometheus with rules",
        (System::Prometheus, false) => "prometheus, ingest alone",
    };
    println!();
    println!("[{label}: {:.1} s window]", r.window_secs);
    let feed_ok = if r.system == System::Prometheus {
        print_scrapes(r, cli)
    } else {
        print_pushes(r, cli)
    };
    if let Some(e) = &r.push_error {
        println!("                 first failure: {e}");
    }
    println!(
        "ingest           {:.0} samples/s appended; {} head series, {} blocks at window end",
        r.appended_per_sec, r.head_series, r.blocks
    );
    println!(
        "server           CPU {:.2} % of one core; RSS {:.0} MB at window end (peak {:.0} MB, {:.0} MB at start)",
        r.server_cpu, r.rss_mb, r.hwm_mb, r.idle_rss_mb
    );
    let feeder_cpu: f64 = r.pushes.iter().map(|p| p.cpu.as_secs_f64()).sum();
    let (what, rest) = if r.system == System::Prometheus {
        ("building the bodies", "answering scrapes and reading")
    } else {
        ("the feeder thread", "reading")
    };
    println!(
        "bench process    CPU {:.3} % of one core; {what} {:.1} ms CPU a step ({:.3} % of one core); the rest is {rest} /metrics every {:?}",
        r.bench_cpu,
        feeder_cpu * 1000.0 / r.pushes.len().max(1) as f64,
        feeder_cpu / r.window_secs * 100.0,
        cli.poll
    );
    let gets = sorted(r.metrics_gets.clone());
    println!(
        "                 one GET /metrics costs the server {:.1} ms CPU ({:.2} % of one core at one every {:?}); answered in p50 {:.1} ms, max {:.1} ms",
        r.metrics_get_cpu_ms,
        r.metrics_get_cpu_ms / 10.0 / cli.poll.as_secs_f64(),
        cli.poll,
        percentile(&gets, 0.5),
        percentile(&gets, 1.0)
    );
    if let Some(m) = &r.machine {
        println!("machine          {m}");
    }
    let (warn, error, lines) = &r.log;
    println!(
        "server log       {warn} WARN, {error} ERROR lines; stopped {}",
        if r.clean_stop {
            "cleanly on SIGTERM"
        } else {
            "by SIGKILL"
        }
    );
    for l in lines {
        println!("                 {l}");
    }
    feed_ok && r.push_error.is_none()
}

/// The feed's line for a run whose feed was pushed; returns whether every push
/// succeeded.
fn print_pushes(r: &Report, cli: &Cli) -> bool {
    let failed = r.pushes.iter().filter(|p| !p.ok).count();
    let lat = sorted(
        r.pushes
            .iter()
            .map(|p| p.latency.as_secs_f64() * 1000.0)
            .collect(),
    );
    let render = sorted(
        r.pushes
            .iter()
            .map(|p| p.render.as_secs_f64() * 1000.0)
            .collect(),
    );
    println!(
        "pushes           {} in the window ({} series each), {failed} failed; answered in p50 {:.1} ms, max {:.1} ms; body built in p50 {:.2} ms",
        r.pushes.len(),
        cli.series,
        percentile(&lat, 0.5),
        percentile(&lat, 1.0),
        percentile(&render, 0.5)
    );
    failed == 0 && !r.pushes.is_empty()
}

/// The feed's line for a run whose feed was scraped; returns whether every step of
/// the feed was scraped once.
fn print_scrapes(r: &Report, cli: &Cli) -> bool {
    let answer = sorted(
        r.scrapes
            .iter()
            .map(|s| s.answer.as_secs_f64() * 1000.0)
            .collect(),
    );
    let render = sorted(
        r.pushes
            .iter()
            .map(|p| p.render.as_secs_f64() * 1000.0)
            .collect(),
    );
    // Steps scraped twice, or never, between the window's first and last scrape.
    let steps: Vec<u64> = r.scrapes.iter().map(|s| s.step).collect();
    let repeated = steps.windows(2).filter(|w| w[1] == w[0]).count();
    let skipped: u64 = steps
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
        .sum();
    println!(
        "scrapes          {} in the window ({} series each, {} steps of the feed), {repeated} got the same step as the one before, {skipped} steps never scraped; answered in p50 {:.1} ms, max {:.1} ms; body built in p50 {:.2} ms",
        r.scrapes.len(),
        cli.series,
        r.pushes.len(),
        percentile(&answer, 0.5),
        percentile(&answer, 1.0),
        percentile(&render, 0.5)
    );
    !r.scrapes.is_empty() && skipped == 0
}

/// Per round (the k-th evaluation of every group in the window), the sum over groups of
/// their evaluation's duration, sorted; empty unless every group was seen.
fn round_sums(r: &Report, sizes: &BTreeMap<String, usize>) -> Vec<f64> {
    let mut per_group: BTreeMap<&str, Vec<&Evaluation>> = BTreeMap::new();
    for e in &r.evals {
        per_group.entry(&e.group).or_default().push(e);
    }
    let rounds = if per_group.len() == sizes.len() {
        per_group.values().map(Vec::len).min().unwrap_or(0)
    } else {
        0
    };
    sorted(
        (0..rounds)
            .map(|k| per_group.values().map(|v| v[k].duration).sum::<f64>())
            .collect(),
    )
}

/// Minos against the peer, as ratios (peer ÷ Minos: above 1, Minos used less).
fn print_comparison(
    minos: (&Report, Option<&Report>),
    peer: (&Report, Option<&Report>),
    sizes: &BTreeMap<String, usize>,
) {
    let name = peer.0.system.name();
    let ratio = |m: f64, p: f64| {
        if m > 0.0 {
            format!("{:.2}×", p / m)
        } else {
            "–".to_string()
        }
    };
    let (mr, pr) = (round_sums(minos.0, sizes), round_sums(peer.0, sizes));
    println!();
    println!("[minos against {name}, same run: {name} ÷ minos, above 1 means minos took less]");
    println!("{:<40} {:>12} {:>12} {:>8}", "", "minos", name, "ratio");
    // Shares of a core with two decimals (rules' CPU can be a few tenths of a percent).
    let row = |what: &str, m: f64, p: f64, unit: &str| {
        let digits = if unit == "%" { 2 } else { 1 };
        println!(
            "{what:<40} {:>12} {:>12} {:>8}",
            format!("{m:.digits$} {unit}"),
            format!("{p:.digits$} {unit}"),
            ratio(m, p)
        );
    };
    for (what, q) in [
        ("evaluation per round, p50", 0.5),
        ("evaluation per round, max", 1.0),
    ] {
        row(
            what,
            percentile(&mr, q) * 1000.0,
            percentile(&pr, q) * 1000.0,
            "ms",
        );
    }
    println!("{:<40} {:>12} {:>12}", "rounds seen", mr.len(), pr.len());
    if let (Some(mb), Some(pb)) = (minos.1, peer.1) {
        row(
            "rules' CPU (% of one core)",
            minos.0.server_cpu - mb.server_cpu,
            peer.0.server_cpu - pb.server_cpu,
            "%",
        );
        row(
            "ingest alone CPU (% of one core)",
            mb.server_cpu,
            pb.server_cpu,
            "%",
        );
    }
    row(
        "server CPU with rules (% of one core)",
        minos.0.server_cpu,
        peer.0.server_cpu,
        "%",
    );
    row(
        "RSS at window end, with rules",
        minos.0.rss_mb,
        peer.0.rss_mb,
        "MB",
    );
    if let (Some(mb), Some(pb)) = (minos.1, peer.1) {
        row(
            "RSS at window end, ingest alone",
            mb.rss_mb,
            pb.rss_mb,
            "MB",
        );
    }
    row(
        "GET /api/v1/rules size",
        minos.0.rules_bytes as f64 / 1e6,
        peer.0.rules_bytes as f64 / 1e6,
        "MB",
    );
    let active = |r: &Report| r.views.iter().map(|v| v.pending + v.firing).sum::<usize>();
    println!(
        "{:<40} {:>12} {:>12}",
        "active alerts at window end",
        active(minos.0),
        active(peer.0)
    );
}

/// The rule evaluation lines; returns whether evaluation was clean.
fn print_rules(
    r: &Report,
    baseline: Option<&Report>,
    cli: &Cli,
    sizes: &BTreeMap<String, usize>,
    fire_capable: usize,
) -> bool {
    let ms = |s: f64| s * 1000.0;
    // Per group, its evaluations in the window in order; round k is every group's k-th.
    let mut per_group: BTreeMap<&str, Vec<&Evaluation>> = BTreeMap::new();
    for e in &r.evals {
        per_group.entry(&e.group).or_default().push(e);
    }
    let unobserved: f64 = r.evals.iter().map(|e| (e.count - 1.0).max(0.0)).sum();
    let round_sums = round_sums(r, sizes);
    let rounds = round_sums.len();
    let busy: f64 = r.evals.iter().map(|e| e.duration).sum();
    println!(
        "evaluation       per round (sum over the {} groups of their evaluation's duration): p50 {:.1} ms, max {:.1} ms, min {:.1} ms over {rounds} rounds",
        sizes.len(),
        ms(percentile(&round_sums, 0.5)),
        ms(percentile(&round_sums, 1.0)),
        ms(percentile(&round_sums, 0.0)),
    );
    let per_rule_us = percentile(&round_sums, 0.5) * 1e6 / cli.rules as f64;
    println!(
        "                 {:.0} µs a rule (p50 round / rules); inside evaluations {:.2} % of the window ({} group evaluations seen, {unobserved} missed by the poller)",
        per_rule_us,
        busy / r.window_secs * 100.0,
        r.evals.len()
    );
    // The slowest group: by its median evaluation in the window.
    let mut groups: Vec<(&str, f64, f64)> = per_group
        .iter()
        .map(|(g, v)| {
            let d = sorted(v.iter().map(|e| e.duration).collect());
            (*g, percentile(&d, 0.5), percentile(&d, 1.0))
        })
        .collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    let all = sorted(r.evals.iter().map(|e| e.duration).collect());
    if let (Some(slow), Some(fast)) = (groups.first(), groups.last()) {
        println!(
            "groups           one evaluation p50 {:.1} ms, max {:.1} ms; slowest group {} (p50 {:.1} ms, max {:.1} ms), fastest {} (p50 {:.1} ms)",
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 1.0)),
            slow.0,
            ms(slow.1),
            ms(slow.2),
            fast.0,
            ms(fast.1)
        );
    }
    let (c0, c1) = r.counters;
    let evals = c1.evaluations - c0.evaluations;
    let expected = cli.rules as f64 * r.window_secs / cli.interval.as_secs_f64();
    let failures = c1.failures - c0.failures;
    let missed = c1.missed - c0.missed;
    let prefix = r.system.rule_metrics().prefix;
    println!(
        "/metrics         {prefix}evaluations_total +{evals} ({expected:.0} expected), {prefix}evaluation_failures_total +{failures}, {prefix}group_iterations_missed_total +{missed} (total {} / {})",
        c1.failures, c1.missed
    );
    if let Some(b) = baseline {
        println!(
            "rules' CPU       {:.2} % of one core (server with rules {:.2} % − ingest alone {:.2} %); RSS +{:.0} MB",
            r.server_cpu - b.server_cpu,
            r.server_cpu,
            b.server_cpu,
            r.rss_mb - b.rss_mb
        );
    }

    // The API's view after the window.
    let loaded = r.views.len();
    let unhealthy = r.views.iter().filter(|v| !v.healthy).count();
    let with_alerts = r.views.iter().filter(|v| v.pending + v.firing > 0).count();
    let pending: usize = r.views.iter().map(|v| v.pending).sum();
    let firing: usize = r.views.iter().map(|v| v.firing).sum();
    println!(
        "/api/v1/rules    {loaded} rules loaded, {unhealthy} unhealthy; {with_alerts} rules ({:.1} %) with an active alert ({fire_capable} can fire); {firing} alerts firing, {pending} pending ({} in /api/v1/alerts)",
        with_alerts as f64 / loaded.max(1) as f64 * 100.0,
        r.api_alerts
    );
    println!(
        "                 GET ({} bytes) took {:.0} ms and {:.0} ms of server CPU; sum of the groups' evaluationTime {:.1} ms",
        r.rules_bytes,
        r.rules_get.0,
        r.rules_get.1,
        ms(r.group_times.values().sum::<f64>())
    );
    println!("by shape         (each rule's latest evaluationTime)");
    for (prefix, what) in KINDS {
        let d = sorted(
            r.views
                .iter()
                .filter(|v| kind_of(&v.name) == prefix)
                .map(|v| v.seconds)
                .collect(),
        );
        if d.is_empty() {
            continue;
        }
        let active = r
            .views
            .iter()
            .filter(|v| kind_of(&v.name) == prefix && v.pending + v.firing > 0)
            .count();
        println!(
            "  {:<22} {:>4} rules, p50 {:>6.0} µs, max {:>6.0} µs, sum {:>6.1} ms, {active} with alerts ({what})",
            prefix,
            d.len(),
            percentile(&d, 0.5) * 1e6,
            percentile(&d, 1.0) * 1e6,
            ms(d.iter().sum::<f64>()),
        );
    }
    let mut slow: Vec<&RuleView> = r.views.iter().collect();
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    println!("slowest rules");
    for v in slow.iter().take(5) {
        println!(
            "  {:>7.2} ms  {} ({}, {} alerts): {}",
            ms(v.seconds),
            v.name,
            v.group,
            v.pending + v.firing,
            v.query
        );
    }
    let clean = failures == 0.0
        && c1.failures == 0.0
        && c1.missed == 0.0
        && unobserved == 0.0
        && unhealthy == 0
        && loaded == cli.rules
        && rounds > 0;
    if !clean {
        println!(
            "rules not clean: a failure, a missed iteration, an evaluation the poller missed, an unhealthy rule, rules not all loaded, or no full round"
        );
    }
    clean
}
