//! The `minos` binary: subcommands only. `minos server` runs everything central.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "minos",
    version,
    about = "Monitoring, inventory and batch execution in one program"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: storage engine, ingest and HTTP API.
    Server(ServerArgs),
}

#[derive(clap::Args, Default)]
struct ServerArgs {
    /// Optional TOML config file; flags given on the command line override it.
    #[arg(long, env = "MINOS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9797].
    #[arg(long)]
    listen: Option<String>,
    /// How long to keep data, in Prometheus' duration syntax (`15d`, `90d`, `100y`) [default: 15d].
    #[arg(long)]
    retention: Option<String>,
    /// Largest size of blocks and log; the oldest blocks are dropped past it (`500GB`, `2TiB`, bytes).
    #[arg(long)]
    retention_size: Option<String>,
    /// When the write-ahead log is synced to disk: `always` (survives power loss), a
    /// duration such as `1s` (default), or `never`.
    #[arg(long)]
    wal_sync: Option<String>,
    /// How often the head is written into blocks [default: 15m].
    #[arg(long)]
    flush_interval: Option<String>,
}

/// The config file; every key is optional and named like its flag.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<String>,
    retention: Option<String>,
    retention_size: Option<String>,
    wal_sync: Option<String>,
    flush_interval: Option<String>,
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024f64.powi(3),
        "TIB" => 1024f64.powi(4),
        u => bail!("invalid size {s:?}: unknown unit {u:?}"),
    };
    Ok((n * mult) as u64)
}

fn duration(s: &str, what: &str) -> Result<Duration> {
    let ms = web::parse_duration(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))?;
    Ok(Duration::from_millis(ms as u64))
}

fn server(args: ServerArgs) -> Result<()> {
    let file: FileConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: invalid config", p.display()))?
        }
        None => FileConfig::default(),
    };
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from("./data"));
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:9797".into());
    let mut opts = tsdb::Options {
        retention: duration(
            &args
                .retention
                .or(file.retention)
                .unwrap_or_else(|| "15d".into()),
            "retention",
        )?,
        ..Default::default()
    };
    if let Some(s) = args.retention_size.or(file.retention_size) {
        opts.max_bytes = Some(parse_size(&s)?);
    }
    if let Some(s) = args.flush_interval.or(file.flush_interval) {
        opts.flush_interval = duration(&s, "flush-interval")?;
    }
    opts.wal_sync = match args.wal_sync.or(file.wal_sync).as_deref() {
        None => tsdb::SyncPolicy::default(),
        Some("always") => tsdb::SyncPolicy::Always,
        Some("never") => tsdb::SyncPolicy::Never,
        Some(d) => tsdb::SyncPolicy::Interval(duration(d, "wal-sync")?),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!("listening on {}", listener.local_addr()?);
        let state = web::AppState::new(web::Settings::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut rx = stop_rx.clone();
        let server = tokio::spawn(web::serve(listener, state.clone(), async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
        let db_dir = data.clone();
        let db = tokio::task::spawn_blocking(move || tsdb::Db::open(&db_dir, opts))
            .await?
            .with_context(|| format!("{}: cannot open the data directory", data.display()))?;
        let db = Arc::new(db);
        state.set_db(db.clone());
        tracing::info!("ready; data in {}", data.display());
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = server.await;
        drop(state);
        tokio::task::spawn_blocking(move || match Arc::try_unwrap(db) {
            Ok(db) => db.close(),
            Err(db) => {
                // Handlers still hold it: flush, and let the last drop close the log.
                db.flush()
            }
        })
        .await?
        .context("closing the storage engine")?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server can only be killed; wait forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Server(a) => server(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minos: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("500GB").unwrap(), 500_000_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").is_err());
    }
}
