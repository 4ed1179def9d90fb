//! `minos agent`: collects host metrics every interval and pushes them to the server's
//! remote_write endpoint.
//!
//! This first form pushes over plain remote_write; a push that fails is retried with
//! jittered exponential backoff (up to the interval) and dropped when the next
//! collection is due. Enrollment, the authenticated channel and the on-disk buffer come
//! with the agent channel.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The server's base URL.
    #[arg(long, env = "MINOS_SERVER", default_value = "http://127.0.0.1:9797")]
    server: String,
    /// The host name to report (default: the kernel's); lets several agents share a
    /// machine in tests.
    #[arg(long)]
    hostname: Option<String>,
    /// How often to collect and push (`15s`, `1m`).
    #[arg(long, default_value = "15s")]
    interval: String,
    /// The proc file system to read.
    #[arg(long, default_value = "/proc", hide = true)]
    proc_root: PathBuf,
}

fn jitter(max_ms: u64) -> u64 {
    // Spread retries of many agents: low bits of the clock are random enough here.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    nanos % max_ms.max(1)
}

pub fn run(a: AgentArgs) -> Result<()> {
    let interval_ms =
        web::parse_duration(&a.interval).map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
    if interval_ms < 100 {
        bail!("--interval: at least 100ms");
    }
    let interval = Duration::from_millis(interval_ms as u64);
    let hostname = match a.hostname {
        Some(h) if !h.trim().is_empty() => h.trim().to_string(),
        Some(_) => bail!("--hostname: empty"),
        None => std::fs::read_to_string(a.proc_root.join("sys/kernel/hostname"))
            .context("cannot read the host name; pass --hostname")?
            .trim()
            .to_string(),
    };
    let url = format!("{}/api/v1/write", a.server.trim_end_matches('/'));
    let http = reqwest::blocking::Client::builder()
        .timeout(interval.min(Duration::from_secs(30)))
        .build()
        .context("cannot build the HTTP client")?;
    let collector = agent::hostmetrics::HostCollector::new(&a.proc_root);
    tracing::info!(
        "agent for {hostname}: pushing to {url} every {}",
        a.interval
    );
    let mut next = Instant::now();
    loop {
        let c = collector.collect();
        for e in &c.errors {
            tracing::warn!("collecting {e}");
        }
        let body = agent::push::write_request(&c.metrics, &hostname, tsdb::now_ms());
        next += interval;
        let mut backoff = 250u64;
        loop {
            let sent = http
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone())
                .send();
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().is_client_error() => {
                    // The server refuses the data itself: retrying will not help.
                    tracing::warn!("{url}: {}: {}", r.status(), r.text().unwrap_or_default());
                    break;
                }
                Ok(r) => tracing::warn!("{url}: {}", r.status()),
                Err(e) => tracing::warn!("{url}: {e}"),
            }
            let wait = Duration::from_millis(backoff + jitter(backoff));
            if Instant::now() + wait >= next {
                tracing::warn!("dropping one collection: the server did not take it in time");
                break;
            }
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(interval_ms as u64);
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}
