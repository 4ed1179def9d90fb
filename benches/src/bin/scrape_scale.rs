//! Scale benchmark of scraping: one `minos server` pulling many Prometheus targets.
//!
//! `scrape_scale` serves `--targets` simulated node_exporter-like targets of `--series`
//! series each from this process (`minos_benches::scrape_sim`: one loopback port,
//! `GET /metrics?target=<i>`, about 80 KB a page for 1,000 series, counters growing
//! between scrapes), writes a scrape config (`scrape_interval` `--interval`,
//! `scrape_timeout` `--timeout`, the targets in a `file_sd_configs` file, relabeling
//! that turns each group's `target` label into the `target` URL parameter and an
//! `instance` label), and starts `minos server --scrape.config FILE` on a fresh data
//! directory. After `--warmup` (and once `count(up == 1)` is `--targets`) it measures for
//! `--duration`:
//!
//! - the server's CPU time (utime + stime from `/proc/<pid>/stat`) over the window, as a
//!   percentage of one core, and its RSS (`VmRSS`, and the peak `VmHWM`) at the end;
//! - samples appended per second (`minos_tsdb_samples_appended_total` from `/metrics`)
//!   and the head's series;
//! - through `/api/v1/query` after the window: `count(up == 1)`, `count(up == 0)`,
//!   `sum(scrape_samples_scraped)`, every `scrape_duration_seconds` and `up` sample of
//!   the window (p50/p90/p99/max duration, failed scrapes, scrapes per target);
//! - this process's CPU (the simulator) and the pages it served, and the machine's load.
//!
//! `--systems minos,prometheus` runs the same measurement against Prometheus
//! (`--prometheus`, default `prometheus` on PATH) after Minos, with the same simulator
//! and config, and prints the ratios. It exits non-zero when a system had a target down
//! or failed scrapes in the window or scraped fewer samples than targets × series. See
//! `benches/scrape_scale.md`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use minos_benches::harness::{
    Server, cpu_pct, default_minos, exit_with, free_port, machine_line, machine_ticks, metric,
    parse_duration, proc_sample, raise_fd_limit,
};
use minos_benches::scrape_sim::{self, Catalog, RELABEL_CONFIGS, Stats};
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(
    name = "scrape_scale",
    about = "One minos server scraping many simulated targets: server CPU, RSS and scrape durations"
)]
struct Cli {
    /// Simulated targets.
    #[arg(long, default_value_t = 1000)]
    targets: usize,
    /// Series each target exposes.
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// `scrape_interval` (`15s`, `500ms`, `1m`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// `scrape_timeout`; at most the interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Time after the server is ready before measuring (longer if not every target is up).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    warmup: Duration,
    /// The measurement window.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// The servers to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "minos")]
    systems: Vec<System>,
    /// The minos binary [default: $CARGO_TARGET_DIR/release/minos, else the workspace's
    /// target/release/minos, else `minos` on PATH].
    #[arg(long)]
    minos: Option<PathBuf>,
    /// The prometheus binary, for `--systems prometheus`.
    #[arg(long, default_value = "prometheus")]
    prometheus: PathBuf,
    /// Seed of the simulated values.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the servers' data directories and logs, and the scrape config.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

    /// Its counter of samples appended, in its own `/metrics`.
    fn appended_metric(self) -> &'static str {
        match self {
            System::Minos => "minos_tsdb_samples_appended_total",
            System::Prometheus => "prometheus_tsdb_head_samples_appended_total",
        }
    }

    fn head_series_metric(self) -> &'static str {
        match self {
            System::Minos => "minos_tsdb_head_series",
            System::Prometheus => "prometheus_tsdb_head_series",
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.targets == 0 || cli.series == 0 {
        bail!("--targets and --series must be positive");
    }
    if cli.timeout > cli.interval {
        bail!("--timeout must not be longer than --interval");
    }
    // The servers hold one connection per target at most; so does the simulator.
    let nofile = raise_fd_limit();
    if nofile < cli.targets as u64 + 256 {
        eprintln!(
            "warning: open-file limit {nofile} is low for {} targets",
            cli.targets
        );
    }
    exit_with(run(cli))
}

/// What one system's window showed.
struct Report {
    system: System,
    server_cpu: f64,
    rss_mb: f64,
    hwm_mb: f64,
    idle_rss_mb: f64,
    sim_cpu: f64,
    up: f64,
    down: f64,
    samples_scraped: f64,
    /// Durations of every scrape in the window, in seconds, sorted.
    durations: Vec<f64>,
    failed_scrapes: usize,
    scrapes_per_target: (usize, usize),
    appended_per_sec: f64,
    head_series: f64,
    pages: u64,
    page_bytes: u64,
    window_secs: f64,
    all_up_after: Option<f64>,
    /// The machine's load over the window (`harness::machine_line`).
    machine: Option<String>,
}

async fn run(cli: Cli) -> Result<bool> {
    // The simulator.
    let catalog = Arc::new(Catalog::new(cli.series, cli.seed));
    let stats = Arc::new(Stats::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the simulator's port")?;
    let address = listener.local_addr()?.to_string();
    let sim = tokio::spawn(scrape_sim::serve(
        listener,
        catalog.clone(),
        cli.targets as u64,
        stats.clone(),
    ));
    let mut page = String::new();
    catalog.render(0, &mut page);
    eprintln!(
        "simulating {} targets × {} series on {address} ({} bytes a page)",
        cli.targets,
        catalog.len(),
        page.len()
    );

    // The scrape config, shared by every system.
    let config_dir = tempfile::Builder::new()
        .prefix("scrape-scale-config-")
        .tempdir()
        .context("creating the config directory")?;
    std::fs::write(
        config_dir.path().join("targets.json"),
        scrape_sim::file_sd(&address, cli.targets),
    )?;
    let config = config_dir.path().join("scrape.yml");
    std::fs::write(&config, scrape_config(&cli))?;

    let mut reports = Vec::new();
    for &system in &cli.systems {
        reports.push(measure(&cli, system, &config, &stats).await?);
    }
    sim.abort();
    if cli.keep {
        eprintln!("kept the scrape config in {}", config_dir.keep().display());
    }

    let mut passed = true;
    for r in &reports {
        passed &= print_report(&cli, r, page.len());
    }
    if let [a, b] = &reports[..] {
        println!();
        println!(
            "{} / {}: server CPU {:.2}×, RSS at window end {:.2}×, p50 scrape duration {:.2}×, p99 {:.2}×",
            a.system.name(),
            b.system.name(),
            a.server_cpu / b.server_cpu,
            a.rss_mb / b.rss_mb,
            percentile(&a.durations, 0.5) / percentile(&b.durations, 0.5),
            percentile(&a.durations, 0.99) / percentile(&b.durations, 0.99),
        );
    }
    Ok(passed)
}

fn scrape_config(cli: &Cli) -> String {
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    format!(
        "# Written by scrape_scale: {} simulated targets.\nglobal:\n  scrape_interval: {}\n  scrape_timeout: {}\nscrape_configs:\n  - job_name: node\n    file_sd_configs:\n      - files: [targets.json]\n{RELABEL_CONFIGS}",
        cli.targets,
        secs(cli.interval),
        secs(cli.timeout),
    )
}

async fn start(cli: &Cli, system: System, config: &Path) -> Result<Server> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("scrape-scale-{}-", system.name()))
        .tempdir()
        .context("creating the data directory")?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let (program, args): (PathBuf, Vec<OsString>) = match system {
        System::Minos => (
            match &cli.minos {
                Some(p) => p.clone(),
                None => default_minos()?,
            },
            vec![
                "server".into(),
                "--data".into(),
                data.into(),
                "--listen".into(),
                listen.into(),
                "--scrape.config".into(),
                config.into(),
            ],
        ),
        System::Prometheus => (
            cli.prometheus.clone(),
            vec![
                "--config.file".into(),
                config.into(),
                "--storage.tsdb.path".into(),
                data.into(),
                "--web.listen-address".into(),
                listen.into(),
            ],
        ),
    };
    let mut server = Server::spawn(
        &program,
        &args,
        format!("http://127.0.0.1:{port}"),
        dir,
        cli.keep,
    )?;
    server
        .wait_ready(Duration::from_secs(120), || true)
        .await
        .with_context(|| format!("{} server", system.name()))?;
    eprintln!(
        "started {} on {} (pid {}); log: {}",
        program.display(),
        server.base,
        server.pid(),
        server.log.display()
    );
    Ok(server)
}

/// `GET /api/v1/query?query=q`: the `result` of its answer.
async fn query(client: &reqwest::Client, base: &str, q: &str) -> Result<Vec<Value>> {
    let resp = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .with_context(|| format!("query {q}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("query {q}: {status}: {body}");
    }
    let v: Value = serde_json::from_str(&body).with_context(|| format!("query {q}: {body}"))?;
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn sample_value(v: &Value) -> Option<f64> {
    v.get(1)?.as_str()?.parse().ok()
}

/// The value of a query that yields one sample (None for an empty answer).
async fn scalar(client: &reqwest::Client, base: &str, q: &str) -> Result<Option<f64>> {
    Ok(query(client, base, q)
        .await?
        .first()
        .and_then(|s| sample_value(&s["value"])))
}

/// The values of each series of a range-vector query.
async fn matrix(client: &reqwest::Client, base: &str, q: &str) -> Result<Vec<Vec<f64>>> {
    Ok(query(client, base, q)
        .await?
        .iter()
        .map(|s| {
            s["values"]
                .as_array()
                .map(|vs| vs.iter().filter_map(sample_value).collect())
                .unwrap_or_default()
        })
        .collect())
}

async fn measure(cli: &Cli, system: System, config: &Path, stats: &Stats) -> Result<Report> {
    let mut server = start(cli, system, config).await?;
    let (base, pid) = (server.base.clone(), server.pid().to_string());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let idle = proc_sample(&pid)?;
    let started = Instant::now();

    // Warmup, then wait (up to 4 more intervals) for every target to be up.
    eprintln!(
        "{}: warming up for {:?}, then measuring for {:?}…",
        system.name(),
        cli.warmup,
        cli.duration
    );
    let mut all_up_after = None;
    let warm_end = started + cli.warmup;
    let give_up = warm_end + cli.interval * 4;
    loop {
        let up = scalar(&http, &base, "count(up == 1)").await.ok().flatten();
        if all_up_after.is_none() && up == Some(cli.targets as f64) {
            all_up_after = Some(started.elapsed().as_secs_f64());
        }
        let now = Instant::now();
        if now >= warm_end && (all_up_after.is_some() || now >= give_up) {
            break;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!(
                "{} exited ({status}) during the warmup:\n{}",
                system.name(),
                server.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if all_up_after.is_none() {
        eprintln!(
            "{}: not every target up after the warmup; measuring anyway",
            system.name()
        );
    }

    // The window.
    let me0 = proc_sample("self")?;
    let m0 = machine_ticks();
    let appended0 = metric(&http, &base, system.appended_metric()).await.ok();
    let (pages0, bytes0) = (
        stats.pages.load(Ordering::Relaxed),
        stats.bytes.load(Ordering::Relaxed),
    );
    // Count the /metrics request's own cost out of the window: sample after it.
    let s0 = proc_sample(&pid)?;
    let w_start = Instant::now();
    tokio::time::sleep(cli.duration).await;
    let s1 = proc_sample(&pid)?;
    let me1 = proc_sample("self")?;
    let m1 = machine_ticks();
    let (pages1, bytes1) = (
        stats.pages.load(Ordering::Relaxed),
        stats.bytes.load(Ordering::Relaxed),
    );
    let appended1 = metric(&http, &base, system.appended_metric()).await.ok();
    let window_secs = w_start.elapsed().as_secs_f64();
    let head_series = metric(&http, &base, system.head_series_metric())
        .await
        .unwrap_or(f64::NAN);

    // What the server stored about its scrapes (after the window, not counted in it).
    let range = format!("[{}s]", cli.duration.as_secs().max(1));
    let up = scalar(&http, &base, "count(up == 1)").await?.unwrap_or(0.0);
    let down = scalar(&http, &base, "count(up == 0)").await?.unwrap_or(0.0);
    let samples_scraped = scalar(&http, &base, "sum(scrape_samples_scraped)")
        .await?
        .unwrap_or(0.0);
    let mut durations: Vec<f64> = matrix(&http, &base, &format!("scrape_duration_seconds{range}"))
        .await?
        .into_iter()
        .flatten()
        .collect();
    durations.sort_by(f64::total_cmp);
    let ups = matrix(&http, &base, &format!("up{range}")).await?;
    let failed_scrapes = ups.iter().flatten().filter(|&&v| v == 0.0).count();
    let counts: Vec<usize> = ups.iter().map(Vec::len).collect();
    let scrapes_per_target = (
        // A target without any `up` sample in the window was scraped 0 times.
        if counts.len() < cli.targets {
            0
        } else {
            counts.iter().copied().min().unwrap_or(0)
        },
        counts.iter().copied().max().unwrap_or(0),
    );

    let clean = server.stop(Duration::from_secs(60));
    let (warn, error, lines) = server.log_problems(5);
    eprintln!(
        "{}: {warn} WARN, {error} ERROR lines in the log; stopped {}",
        system.name(),
        if clean {
            "cleanly on SIGTERM"
        } else {
            "by SIGKILL"
        }
    );
    for l in lines {
        eprintln!("    {l}");
    }
    let server_cpu = cpu_pct(&s0, &s1);
    let sim_cpu = cpu_pct(&me0, &me1);
    let machine = machine_line(m0, m1, server_cpu + sim_cpu);
    Ok(Report {
        system,
        server_cpu,
        rss_mb: s1.rss_mb,
        hwm_mb: s1.hwm_mb,
        idle_rss_mb: idle.rss_mb,
        sim_cpu,
        up,
        down,
        samples_scraped,
        durations,
        failed_scrapes,
        scrapes_per_target,
        appended_per_sec: appended0
            .zip(appended1)
            .map_or(f64::NAN, |(a, b)| (b - a) / window_secs),
        head_series,
        pages: pages1 - pages0,
        page_bytes: bytes1 - bytes0,
        window_secs,
        all_up_after,
        machine,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Prints one system's report; returns whether it passed.
fn print_report(cli: &Cli, r: &Report, page_bytes: usize) -> bool {
    let expected_scrapes = cli.duration.as_secs_f64() / cli.interval.as_secs_f64();
    println!();
    println!(
        "scrape scale: {}, {} targets × {} series ({page_bytes} bytes a page), interval {:?}, timeout {:?}, {:?} window after {:?} warmup",
        r.system.name(),
        cli.targets,
        cli.series,
        cli.interval,
        cli.timeout,
        cli.duration,
        cli.warmup
    );
    println!(
        "targets          {} up, {} down at window end; all up {}",
        r.up,
        r.down,
        r.all_up_after
            .map_or("never during the warmup".to_string(), |s| format!(
                "{s:.0} s after start"
            ))
    );
    println!(
        "scrapes          {} in the window ({}..{} per target, {expected_scrapes:.1} expected), {} failed; sum(scrape_samples_scraped) {}",
        r.durations.len(),
        r.scrapes_per_target.0,
        r.scrapes_per_target.1,
        r.failed_scrapes,
        r.samples_scraped
    );
    let ms = |q: f64| percentile(&r.durations, q) * 1000.0;
    println!(
        "scrape duration  p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (every scrape in the window)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(1.0)
    );
    println!(
        "ingest           {:.0} samples/s appended; {} head series",
        r.appended_per_sec, r.head_series
    );
    println!(
        "server           CPU {:.1} % of one core over {:.1} s; RSS {:.0} MB at window end (peak {:.0} MB, {:.0} MB at start)",
        r.server_cpu, r.window_secs, r.rss_mb, r.hwm_mb, r.idle_rss_mb
    );
    println!(
        "simulator        CPU {:.1} % of one core (this process); {} pages served in the window ({:.1}/s, {:.2} MB/s)",
        r.sim_cpu,
        r.pages,
        r.pages as f64 / r.window_secs,
        r.page_bytes as f64 / r.window_secs / 1e6
    );
    if let Some(m) = &r.machine {
        println!("machine          {m}");
    }
    let passed = r.down == 0.0
        && r.up == cli.targets as f64
        && r.failed_scrapes == 0
        && r.samples_scraped >= (cli.targets * cli.series) as f64;
    if !passed {
        println!("FAILED: targets down, failed scrapes or missing samples");
    }
    passed
}
