//! What the agent benches (`agent_scale`, `task_scale`) share to play many agents
//! against one real `minos server`: starting the server on a fresh data directory and
//! reading the tokens it writes at first start, enrolling agents over HTTP, and opening
//! one agent's channel (WebSocket, `hello`, `welcome`).
//!
//! The frames are written as JSON by hand rather than through `agent::proto`: the
//! benches are clients of the wire protocol, as a foreign agent would be.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::harness::{Server, free_port};

pub const ENROLL_PATH: &str = "/api/agent/v1/enroll";
pub const CHANNEL_PATH: &str = "/api/agent/v1/channel";

/// The tokens a server writes to its data directory at first start.
pub struct Tokens {
    /// `enroll.token`: enrolls agents.
    pub enroll: String,
    /// `admin.token`: the ops API, tasks included.
    pub admin: String,
}

/// Starts `minos server` on a fresh data directory (a temporary directory named
/// `prefix…`) and a free loopback port, and waits until it is ready and has written its
/// tokens.
pub async fn start_server(minos: &Path, keep: bool, prefix: &str) -> Result<(Server, Tokens)> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating the data directory")?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let args: Vec<OsString> = vec![
        "server".into(),
        "--data".into(),
        data.clone().into(),
        "--listen".into(),
        format!("127.0.0.1:{port}").into(),
    ];
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server::spawn(minos, &args, base, dir, keep)?;
    let read = |file: &str| {
        std::fs::read_to_string(data.join(file))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let has_tokens = || read("enroll.token").is_some() && read("admin.token").is_some();
    server
        .wait_ready(Duration::from_secs(120), has_tokens)
        .await
        .context("minos server")?;
    let tokens = Tokens {
        enroll: read("enroll.token").context("reading enroll.token")?,
        admin: read("admin.token").context("reading admin.token")?,
    };
    Ok((server, tokens))
}

/// The host name simulated agent `i` enrolls with.
pub fn hostname(i: usize) -> String {
    format!("bench-agent-{i:05}")
}

/// Enrolls `n` agents ([`hostname`]`(0..n)`), `concurrency` requests at a time; returns
/// their secrets, in order.
pub async fn enroll(base: &str, token: &str, n: usize, concurrency: usize) -> Result<Vec<String>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        let url = format!("{base}{ENROLL_PATH}");
        let auth = format!("Bearer {token}");
        workers.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(got);
                }
                let hostname = hostname(i);
                let resp = client
                    .post(&url)
                    .header("authorization", &auth)
                    .json(&json!({"hostname": hostname, "facts": {}}))
                    .send()
                    .await
                    .with_context(|| format!("enrolling {hostname}"))?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    bail!("enrolling {hostname}: {status}: {body}");
                }
                let v: Value = serde_json::from_str(&body)
                    .with_context(|| format!("enrolling {hostname}: answer {body:?}"))?;
                let secret = v
                    .get("secret")
                    .and_then(Value::as_str)
                    .with_context(|| format!("enrolling {hostname}: no secret in {body:?}"))?;
                got.push((i, secret.to_string()));
            }
        });
    }
    let mut secrets = vec![String::new(); n];
    while let Some(r) = workers.join_next().await {
        for (i, s) in r.context("enrollment worker")?? {
            secrets[i] = s;
        }
    }
    Ok(secrets)
}

/// One agent's channel.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the channel at `url` (`ws://…/api/agent/v1/channel`) with the agent's secret,
/// says `hello` (heartbeat 10 s, no facts) and waits for `welcome`.
pub async fn connect(url: &str, secret: &str) -> Result<Ws> {
    let mut req = url.into_client_request().context("channel URL")?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {secret}")
            .parse()
            .context("secret is not a valid header")?,
    );
    // Small buffers: thousands of connections live in this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(r) => anyhow::anyhow!("upgrade refused: {}", r.status()),
            e => anyhow::anyhow!("connecting: {e}"),
        })?;
    let hello = json!({"type": "hello", "version": 1, "agent_version": "bench",
                       "heartbeat_ms": 10_000, "facts": null});
    ws.send(Message::text(hello.to_string()))
        .await
        .context("sending hello")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).context("a frame that is not JSON")?;
                if v.get("type").and_then(Value::as_str) == Some("welcome") {
                    return Ok(ws);
                }
                bail!("expected welcome, got {t}");
            }
            Some(Ok(Message::Close(c))) => bail!("closed before welcome: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("before welcome: {e}"),
            None => bail!("closed before welcome"),
        }
    }
}

/// A duration in whole µs, saturating.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The `q` quantile (nearest rank) of `sorted` µs values, in ms; NaN when empty.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}
