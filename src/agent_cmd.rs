//! `minos agent`: the flags of the host agent; the agent itself is `agent::client`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The server's base URL.
    #[arg(long, env = "MINOS_SERVER", default_value = "http://127.0.0.1:9797")]
    server: String,
    /// The server's enrollment token (`<data>/enroll.token` on the server); needed
    /// until the agent has enrolled.
    #[arg(long, env = "MINOS_ENROLL_TOKEN")]
    token: Option<String>,
    /// Where the agent keeps its identity and its spool of unsent metrics.
    #[arg(long, default_value = "/var/lib/minos-agent")]
    state_dir: PathBuf,
    /// The host name to report (default: the kernel's); lets several agents share a
    /// machine in tests.
    #[arg(long)]
    hostname: Option<String>,
    /// How often to heartbeat (`10s`).
    #[arg(long, default_value = "10s")]
    heartbeat: String,
    /// How often to collect and push host metrics (`15s`, `1m`).
    #[arg(long, default_value = "15s")]
    interval: String,
    /// Most bytes of metrics kept on disk while the server is unreachable; the oldest
    /// go first past it.
    #[arg(long, default_value_t = 256 << 20)]
    spool_max_bytes: u64,
    /// Users tasks may run as (repeat, or comma-separated); none given: any user.
    #[arg(long = "allow-user", value_delimiter = ',')]
    allow_user: Vec<String>,
    /// A private CA's certificates (PEM) to trust when `--server` is `https://`, besides
    /// the public web PKI roots.
    #[arg(long = "tls.ca-file", env = "MINOS_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// The proc file system to read.
    #[arg(long, default_value = "/proc", hide = true)]
    proc_root: PathBuf,
}

fn duration(s: &str, what: &str) -> Result<Duration> {
    let ms = web::parse_duration(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))?;
    if ms < 100 {
        bail!("--{what}: at least 100ms");
    }
    Ok(Duration::from_millis(ms as u64))
}

pub fn run(a: AgentArgs) -> Result<()> {
    let interval = duration(&a.interval, "interval")?;
    let heartbeat = duration(&a.heartbeat, "heartbeat")?;
    let hostname = match a.hostname {
        Some(h) if !h.trim().is_empty() => h.trim().to_string(),
        Some(_) => bail!("--hostname: empty"),
        None => std::fs::read_to_string(a.proc_root.join("sys/kernel/hostname"))
            .context("cannot read the host name; pass --hostname")?
            .trim()
            .to_string(),
    };
    let cfg = agent::client::Config {
        server: a.server.trim_end_matches('/').to_string(),
        enroll_token: a.token.filter(|t| !t.trim().is_empty()),
        state_dir: a.state_dir,
        hostname,
        heartbeat,
        interval,
        spool_max_bytes: a.spool_max_bytes,
        roots: agent::facts::Roots {
            proc_root: a.proc_root,
            ..Default::default()
        },
        allowed_users: a.allow_user,
        tls_ca_file: a.tls_ca_file,
    };
    tracing::info!(
        "agent for {}: server {}, heartbeat {}, metrics every {}",
        cfg.hostname,
        cfg.server,
        a.heartbeat,
        a.interval
    );
    // One thread: the agent waits on the network almost all the time.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(agent::client::run(cfg))
        .map_err(|e| anyhow::anyhow!(e))
}
