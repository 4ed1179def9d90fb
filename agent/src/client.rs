//! The running agent: enrollment, the channel to the server, and the metrics loop.
//!
//! # State directory
//! ```text
//! identity.json   {"server","host_id","hostname","secret"}   mode 0600; written at enrollment
//! delivered.json  {"incarnation","last"}                      the last server message delivered
//! spool/          metric pushes waiting for the server (crate::spool)
//! ```
//! Both files are replaced whole (written to a temporary name, synced, renamed).
//!
//! # Behaviour
//! - No identity: enroll with the enrollment token (`POST /api/agent/v1/enroll`). The
//!   server answering 401 to the agent's secret later (its database was reset, or the
//!   host was enrolled again elsewhere) makes the agent enroll again if it still has a
//!   token, and otherwise keep trying with backoff, saying why.
//! - The channel: hello with the facts, a heartbeat every `heartbeat` carrying the facts
//!   when they changed, messages both ways with acknowledgements (`crate::proto`). A
//!   channel that gets no heartbeat acknowledgement for three heartbeats is dropped and
//!   opened again. Reconnects wait a random time up to a backoff that starts at half a
//!   heartbeat and doubles to six heartbeats or 15 s, whichever is less, so agents cut
//!   off by a server restart come back spread out instead of in the same second, and
//!   within the server's default `--agent.lost-after` (30 s) of its return.
//! - Metrics: collected every `interval`, pushed to `POST /api/agent/v1/write`; a push
//!   the server does not take is kept in the spool (bounded by `spool_max_bytes`, oldest
//!   dropped first) and the spool is drained oldest first before anything newer is sent,
//!   so samples arrive in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use std::collections::HashMap;

use crate::exec::{Outcome, Policy, RunEvent, RunHandle, RunRequest, Stream};
use crate::facts::{self, Facts};
use crate::outbox::Outbox;
use crate::proto::{
    self, AgentFrame, Cursor, EnrollRequest, EnrollResponse, MsgId, RunBody, ServerFrame,
};
use crate::spool::Spool;

/// What `minos agent` was told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's base URL (`http://minos:9797`).
    pub server: String,
    /// The enrollment token (needed until the agent has enrolled).
    pub enroll_token: Option<String>,
    pub state_dir: PathBuf,
    pub hostname: String,
    pub heartbeat: Duration,
    /// How often host metrics are collected and pushed.
    pub interval: Duration,
    pub spool_max_bytes: u64,
    pub roots: facts::Roots,
    /// The users tasks may run as (empty: any).
    pub allowed_users: Vec<String>,
    /// A private CA's certificates (PEM) to trust for an `https://` server, besides
    /// the public web PKI roots.
    pub tls_ca_file: Option<PathBuf>,
}

/// The agent's credential, as stored in `identity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub server: String,
    pub host_id: u64,
    pub hostname: String,
    pub secret: String,
    /// The server's task key (hex Ed25519 public key), pinned at enrollment: work not
    /// signed by it is refused.
    #[serde(default)]
    pub task_key: Option<String>,
}

/// A value behind a mutex whose guard never escapes a call (so never crosses an await).
#[derive(Default)]
struct Shared<T>(std::sync::Mutex<T>);

impl<T: Clone> Shared<T> {
    fn new(v: T) -> Self {
        Shared(std::sync::Mutex::new(v))
    }

    fn get(&self) -> T {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, v: T) {
        match self.0.lock() {
            Ok(mut g) => *g = v,
            Err(p) => *p.into_inner() = v,
        }
    }
}

/// Writes `bytes` to `path` whole: a temporary file, synced, renamed, directory synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A script running: task, attempt, process id, process start time.
type RunningEntry = (u64, u32, u32, u64);

/// A process's start time (clock ticks after boot, `/proc/<pid>/stat` field 22).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A random number in `0..n` (0 when `n` is 0).
fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: the clock's nanoseconds still spread agents apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = u64::from(nanos).to_le_bytes();
    }
    u64::from_le_bytes(b) % n.max(1)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The longest reconnect backoff (a delay is at most 1.1 times it).
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(15);

/// Reconnect delays: full jitter over an exponential backoff.
struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(heartbeat: Duration) -> Backoff {
        let base = (heartbeat / 2).max(Duration::from_millis(50));
        Backoff {
            base,
            // Bounded so that an agent comes back within the server's default
            // `--agent.lost-after` (30 s) of the server's return: a longer wait would
            // end the agent's running work `agent_lost` after a server restart.
            max: (heartbeat * 6).min(MAX_RECONNECT_WAIT).max(base),
            current: base,
        }
    }

    fn next(&mut self) -> Duration {
        let ms = u64::try_from(self.current.as_millis()).unwrap_or(u64::MAX);
        let d = Duration::from_millis(ms / 10 + random_below(ms));
        self.current = (self.current * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.current = self.base;
    }
}

/// Why the channel ended.
enum Ended {
    /// The server does not know our secret.
    Unauthorized,
    /// Anything else: reconnect after a while.
    Other(String),
}

struct Agent {
    cfg: Config,
    http: reqwest::Client,
    /// The TLS configuration of the channel (`wss://`).
    tls: Arc<rustls::ClientConfig>,
    identity: Shared<Option<Identity>>,
    /// Messages to the server not yet acknowledged, in order.
    outbox: Arc<Outbox>,
    /// Scripts running, by task and attempt.
    runs: Arc<std::sync::Mutex<HashMap<(u64, u32), RunHandle>>>,
    /// The same, on disk (`running.json`: task, attempt, pid, process start time), so a
    /// restart reports them interrupted and stops what is left of them.
    running: Arc<Shared<Vec<RunningEntry>>>,
    /// The last [`SEEN_RUNS`] runs started (task, attempt), also on disk
    /// (`runs_seen.json`): a `run` sent again (by a server that restarted before it
    /// knew we had it) is not run twice.
    seen: Shared<std::collections::VecDeque<(u64, u32)>>,
    policy: Policy,
}

/// How many started runs the agent remembers, to run each (task, attempt) once.
const SEEN_RUNS: usize = 4096;

/// Runs the agent until the process is stopped.
pub async fn run(cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| format!("{}: {e}", cfg.state_dir.display()))?;
    let identity: Option<Identity> = read_json(&cfg.state_dir.join("identity.json"))?;
    let identity = identity.filter(|i| {
        let same = i.server == cfg.server && i.hostname == cfg.hostname;
        if !same {
            tracing::info!(
                "the stored identity is for another server or host name: enrolling again"
            );
        }
        same
    });
    if identity.is_none() && cfg.enroll_token.is_none() {
        return Err(format!(
            "not enrolled ({} holds no identity): pass --token with the server's enrollment token",
            cfg.state_dir.display()
        ));
    }
    let spool = Spool::open(&cfg.state_dir.join("spool"), cfg.spool_max_bytes)
        .map_err(|e| format!("{}: {e}", cfg.state_dir.join("spool").display()))?;
    if !spool.is_empty() {
        tracing::info!(
            "{} metric pushes ({} bytes) wait in the spool",
            spool.len(),
            spool.bytes()
        );
    }
    let tls = crate::tls::client_config(cfg.tls_ca_file.as_deref())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .use_preconfigured_tls(tls.clone())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let tls = Arc::new(tls);
    let incarnation = now_ms();
    let outbox = Arc::new(Outbox::open(&cfg.state_dir, incarnation)?);
    // Scripts that were running when the agent stopped: their results are lost, say so.
    let running_path = cfg.state_dir.join("running.json");
    let was_running: Vec<RunningEntry> = read_json(&running_path)
        .unwrap_or_else(|e| {
            tracing::error!("{e}");
            None
        })
        .unwrap_or_default();
    for (task, attempt, pid, started) in &was_running {
        tracing::warn!("task {task} attempt {attempt} was running when the agent stopped");
        // Nobody supervises what is left of it: stop its process group, if that process
        // is still the one we started (same start time).
        if *pid > 1 && process_start(*pid) == Some(*started) {
            // SAFETY: signalling a process group we created; checked against its start time.
            unsafe {
                libc::kill(-(*pid as libc::pid_t), libc::SIGKILL);
            }
        }
        outbox.push(
            "run.finished",
            serde_json::json!({"task": task, "attempt": attempt, "outcome": "interrupted",
                "error": "the agent restarted while the script ran"}),
            true,
        );
    }
    if let Err(e) = write_atomic(&running_path, b"[]", 0o600) {
        tracing::error!("{}: {e}", running_path.display());
    }
    let seen: std::collections::VecDeque<(u64, u32)> =
        read_json(&cfg.state_dir.join("runs_seen.json"))
            .unwrap_or_else(|e| {
                tracing::error!("{e}");
                None
            })
            .unwrap_or_default();
    let policy = Policy {
        allowed_users: cfg.allowed_users.clone(),
        work_dir: cfg.state_dir.join("run"),
    };
    let agent = Arc::new(Agent {
        http,
        tls,
        identity: Shared::new(identity),
        outbox,
        runs: Arc::default(),
        running: Arc::new(Shared::new(Vec::new())),
        seen: Shared::new(seen),
        policy,
        cfg,
    });
    let metrics = tokio::spawn(agent.clone().metrics_loop(spool));
    let channel = agent.clone().channel_loop();
    tokio::select! {
        r = metrics => r.map_err(|e| e.to_string()),
        () = channel => Ok(()),
    }
}

impl Agent {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.server.trim_end_matches('/'))
    }

    fn facts(&self) -> Facts {
        let (f, errors) = facts::collect(
            &self.cfg.roots,
            &self.cfg.hostname,
            env!("CARGO_PKG_VERSION"),
        );
        for e in errors {
            tracing::debug!("facts: {e}");
        }
        f
    }

    /// Enrolls (again) and stores the identity.
    async fn enroll(&self) -> Result<Identity, String> {
        let Some(token) = &self.cfg.enroll_token else {
            return Err(
                "the server refused our secret and there is no --token to enroll again".into(),
            );
        };
        let req = EnrollRequest {
            hostname: self.cfg.hostname.clone(),
            facts: self.facts(),
        };
        let resp = self
            .http
            .post(self.url(proto::ENROLL_PATH))
            .bearer_auth(token)
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("enrolling: {}", crate::tls::error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("enrolling: {status}: {text}"));
        }
        let r: EnrollResponse = resp
            .json()
            .await
            .map_err(|e| format!("enrolling: bad answer: {e}"))?;
        let id = Identity {
            server: self.cfg.server.clone(),
            host_id: r.host_id,
            hostname: r.hostname,
            secret: r.secret,
            task_key: r.task_key,
        };
        let bytes = serde_json::to_vec_pretty(&id).map_err(|e| e.to_string())?;
        write_atomic(&self.cfg.state_dir.join("identity.json"), &bytes, 0o600)
            .map_err(|e| format!("storing the identity: {e}"))?;
        tracing::info!("enrolled as {} (host {})", id.hostname, id.host_id);
        self.identity.set(Some(id.clone()));
        Ok(id)
    }

    /// The channel, forever: connect, converse, back off, again.
    async fn channel_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(self.cfg.heartbeat);
        let mut cursor: Cursor = read_json(&self.cfg.state_dir.join("delivered.json"))
            .unwrap_or_else(|e| {
                tracing::warn!("{e}; starting without a delivery cursor");
                None
            })
            .unwrap_or_default();
        loop {
            let identity = match self.identity.get() {
                Some(i) => Ok(i),
                None => self.enroll().await,
            };
            let ended = match identity {
                Err(e) => Ended::Other(e),
                Ok(id) => {
                    let started = tokio::time::Instant::now();
                    let r = self.converse(&id, &mut cursor).await;
                    if started.elapsed() > self.cfg.heartbeat * 3 {
                        backoff.reset();
                    }
                    r
                }
            };
            match ended {
                Ended::Unauthorized => {
                    tracing::warn!("the server does not know this agent's secret");
                    if self.cfg.enroll_token.is_some() {
                        self.identity.set(None);
                    }
                }
                Ended::Other(e) => tracing::warn!("channel: {e}"),
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    /// One connection, until it breaks.
    async fn converse(&self, id: &Identity, cursor: &mut Cursor) -> Ended {
        let base = self.url(proto::CHANNEL_PATH);
        let ws_url = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            return Ended::Other(format!("--server {}: not an http(s) URL", self.cfg.server));
        };
        let mut req = match ws_url.into_client_request() {
            Ok(r) => r,
            Err(e) => return Ended::Other(e.to_string()),
        };
        match format!("Bearer {}", id.secret).parse() {
            Ok(v) => {
                req.headers_mut().insert("authorization", v);
            }
            Err(_) => return Ended::Other("the stored secret is not a valid header".into()),
        }
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(proto::MAX_FRAME_BYTES))
            .max_frame_size(Some(proto::MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            req,
            Some(config),
            true,
            Some(tokio_tungstenite::Connector::Rustls(self.tls.clone())),
        );
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Err(_) => return Ended::Other("connecting: timed out".into()),
            Ok(Err(tungstenite::Error::Http(resp))) if resp.status() == 401 => {
                return Ended::Unauthorized;
            }
            Ok(Err(e)) => return Ended::Other(format!("connecting: {e}")),
            Ok(Ok((ws, _))) => ws,
        };
        let mut facts = self.facts();
        let hello = AgentFrame::Hello {
            version: proto::VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            heartbeat_ms: u64::try_from(self.cfg.heartbeat.as_millis()).unwrap_or(u64::MAX),
            facts: Some(Box::new(facts.clone())),
        };
        macro_rules! send {
            ($frame:expr) => {
                match serde_json::to_string(&$frame) {
                    Ok(t) => {
                        if let Err(e) = ws.send(Message::Text(t.into())).await {
                            return Ended::Other(format!("sending: {e}"));
                        }
                    }
                    Err(e) => return Ended::Other(e.to_string()),
                }
            };
        }
        send!(hello);
        // Whatever the server did not acknowledge before goes again, in order; then what
        // is queued while the connection lasts.
        self.outbox.reconnected();
        tracing::info!("channel open to {}", self.cfg.server);
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut seq = 0u64;
        let mut last_ack = tokio::time::Instant::now();
        loop {
            for (mid, kind, body) in self.outbox.take_unsent() {
                send!(AgentFrame::Msg {
                    id: mid,
                    kind,
                    body
                });
            }
            tokio::select! {
                _ = self.outbox.changed() => {}
                _ = tick.tick() => {
                    if last_ack.elapsed() > self.cfg.heartbeat * 3 {
                        return Ended::Other("no heartbeat acknowledgement for three heartbeats".into());
                    }
                    seq += 1;
                    let now = self.facts();
                    let changed = now != facts;
                    if changed {
                        facts = now.clone();
                    }
                    send!(AgentFrame::Heartbeat { seq, facts: changed.then(|| Box::new(now)) });
                }
                frame = ws.next() => {
                    let text = match frame {
                        None => return Ended::Other("the server closed the channel".into()),
                        Some(Err(e)) => return Ended::Other(e.to_string()),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => {
                            return Ended::Other(format!(
                                "the server closed the channel: {}",
                                c.map(|c| c.reason.to_string()).unwrap_or_default()
                            ));
                        }
                        Some(Ok(_)) => continue,
                    };
                    let frame: ServerFrame = match serde_json::from_str(&text) {
                        Ok(f) => f,
                        Err(e) => return Ended::Other(format!("bad frame from the server: {e}")),
                    };
                    match frame {
                        ServerFrame::Welcome { task_key, .. } => {
                            last_ack = tokio::time::Instant::now();
                            self.pin_task_key(task_key);
                        }
                        ServerFrame::HeartbeatAck { .. } => last_ack = tokio::time::Instant::now(),
                        ServerFrame::Ack { id } => self.outbox.ack(id),
                        ServerFrame::Msg { id: mid, kind, body } => {
                            let mut next = *cursor;
                            if next.accept(mid) {
                                // Recorded before the acknowledgement: a restart in between
                                // does not deliver it twice.
                                let bytes = serde_json::to_vec(&next).unwrap_or_default();
                                if let Err(e) = write_atomic(&self.cfg.state_dir.join("delivered.json"), &bytes, 0o600) {
                                    return Ended::Other(format!("recording a delivery: {e}"));
                                }
                                *cursor = next;
                                self.handle(mid, &kind, body);
                            }
                            send!(AgentFrame::Ack { id: mid });
                        }
                    }
                }
            }
        }
    }

    /// Acts on a message from the server; answers go to the outbox.
    fn handle(&self, id: MsgId, kind: &str, body: serde_json::Value) {
        let re = serde_json::json!([id.0, id.1]);
        match kind {
            "ping" => {
                self.outbox
                    .push("pong", serde_json::json!({"re": re, "body": body}), false);
            }
            "run" => self.start_run(body),
            "kill" => {
                let key = (
                    body["task"].as_u64().unwrap_or(0),
                    u32::try_from(body["attempt"].as_u64().unwrap_or(0)).unwrap_or(0),
                );
                let handle = match self.runs.lock() {
                    Ok(g) => g.get(&key).cloned(),
                    Err(p) => p.into_inner().get(&key).cloned(),
                };
                if let Some(h) = handle {
                    h.kill();
                }
            }
            _ => {
                self.outbox.push(
                    "error",
                    serde_json::json!({"re": re, "error": format!("unknown message kind {kind:?}")}),
                    false,
                );
            }
        }
    }

    /// Pins the server's task key from `welcome` when the identity has none (an agent
    /// enrolled before the server signed work); a different key is refused loudly.
    fn pin_task_key(&self, offered: Option<String>) {
        let Some(offered) = offered else { return };
        let Some(mut id) = self.identity.get() else {
            return;
        };
        match &id.task_key {
            Some(k) if *k == offered => {}
            Some(_) => tracing::error!(
                "the server offers another task key than the one pinned at enrollment: its work \
                 will be refused (enroll again, with --token, if the server's key really changed)"
            ),
            None => {
                id.task_key = Some(offered);
                match serde_json::to_vec_pretty(&id) {
                    Ok(bytes) => {
                        if let Err(e) =
                            write_atomic(&self.cfg.state_dir.join("identity.json"), &bytes, 0o600)
                        {
                            tracing::error!("storing the task key: {e}");
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!("storing the task key: {e}");
                        return;
                    }
                }
                tracing::info!("pinned the server's task key (first use)");
                self.identity.set(Some(id));
            }
        }
    }

    /// Starts a script (`run`): its events become `run.started`, `run.output` and
    /// `run.finished` messages; a refusal is a `run.finished` with outcome `rejected`.
    fn start_run(&self, body: serde_json::Value) {
        let task = body["task"].as_u64().unwrap_or(0);
        let attempt = u32::try_from(body["attempt"].as_u64().unwrap_or(0)).unwrap_or(0);
        let refuse = |why: String| {
            self.outbox.push(
                "run.finished",
                serde_json::json!({"task": task, "attempt": attempt, "outcome": "rejected", "error": why}),
                true,
            );
        };
        let req: RunBody = match serde_json::from_value(body.clone()) {
            Ok(r) => r,
            Err(e) => return refuse(format!("bad run request: {e}")),
        };
        // Only work the server we enrolled with signed, for this host.
        match self.identity.get() {
            Some(Identity {
                task_key: Some(key),
                host_id,
                ..
            }) => {
                if let Err(why) = req.verify(&key, host_id) {
                    tracing::warn!("refused task {task} attempt {attempt}: {why}");
                    return refuse(format!("refused: {why}"));
                }
            }
            _ => {
                tracing::warn!(
                    "task {task}: no task key pinned (the server did not send one): running unsigned work"
                );
            }
        }
        // Each (task, attempt) runs once: its report is already on its way (the outbox
        // replays it until the server acknowledges it).
        let mut seen = self.seen.get();
        if seen.contains(&(task, attempt)) {
            tracing::info!("task {task} attempt {attempt} was already started: not again");
            return;
        }
        seen.push_back((task, attempt));
        while seen.len() > SEEN_RUNS {
            seen.pop_front();
        }
        self.seen.set(seen.clone());
        let seen_path = self.cfg.state_dir.join("runs_seen.json");
        if let Err(e) = write_atomic(
            &seen_path,
            &serde_json::to_vec(&seen).unwrap_or_default(),
            0o600,
        ) {
            tracing::error!("{}: {e}", seen_path.display());
        }
        let request = RunRequest {
            task,
            attempt,
            interpreter: req.interpreter,
            script: req.script,
            user: req.user.filter(|u| !u.is_empty()),
            timeout: Duration::from_millis(req.timeout_ms.max(1)),
            env: {
                // The script knows which task and host it runs for.
                let mut env = req.env;
                env.push(("MINOS_TASK_ID".into(), task.to_string()));
                env.push(("MINOS_ATTEMPT".into(), attempt.to_string()));
                env.push(("MINOS_HOSTNAME".into(), self.cfg.hostname.clone()));
                env
            },
            max_output: usize::try_from(req.max_output).unwrap_or(usize::MAX),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let handle = match crate::exec::start(request, &self.policy, tx) {
            Ok(h) => h,
            Err(e) => return refuse(e.to_string()),
        };
        let pid = handle.pid();
        match self.runs.lock() {
            Ok(mut g) => g.insert((task, attempt), handle),
            Err(p) => p.into_inner().insert((task, attempt), handle),
        };
        let mut running = self.running.get();
        running.push((task, attempt, pid, process_start(pid).unwrap_or(0)));
        self.running.set(running.clone());
        let running_path = self.cfg.state_dir.join("running.json");
        if let Err(e) = write_atomic(
            &running_path,
            &serde_json::to_vec(&running).unwrap_or_default(),
            0o600,
        ) {
            tracing::error!("{}: {e}", running_path.display());
        }
        let (outbox, runs, running) =
            (self.outbox.clone(), self.runs.clone(), self.running.clone());
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev {
                    RunEvent::Started { pid, started_ms } => {
                        outbox.push(
                            "run.started",
                            serde_json::json!({"task": task, "attempt": attempt, "pid": pid, "started_ms": started_ms}),
                            true,
                        );
                    }
                    RunEvent::Output {
                        stream,
                        offset,
                        data,
                    } => {
                        let stream = match stream {
                            Stream::Stdout => "stdout",
                            Stream::Stderr => "stderr",
                        };
                        outbox.push_output(task, attempt, stream, offset, &data);
                    }
                    RunEvent::Finished {
                        outcome,
                        exit_code,
                        signal,
                        started_ms,
                        duration_ms,
                        truncated,
                    } => {
                        let outcome = match outcome {
                            Outcome::Succeeded => "succeeded",
                            Outcome::Failed => "failed",
                            Outcome::TimedOut => "timed_out",
                            Outcome::Killed => "killed",
                        };
                        outbox.push(
                            "run.finished",
                            serde_json::json!({"task": task, "attempt": attempt, "outcome": outcome,
                                "exit_code": exit_code, "signal": signal, "started_ms": started_ms,
                                "duration_ms": duration_ms, "truncated": truncated}),
                            true,
                        );
                        match runs.lock() {
                            Ok(mut g) => g.remove(&(task, attempt)),
                            Err(p) => p.into_inner().remove(&(task, attempt)),
                        };
                        let mut r = running.get();
                        r.retain(|k| (k.0, k.1) != (task, attempt));
                        running.set(r.clone());
                        if let Err(e) = write_atomic(
                            &running_path,
                            &serde_json::to_vec(&r).unwrap_or_default(),
                            0o600,
                        ) {
                            tracing::error!("{}: {e}", running_path.display());
                        }
                    }
                }
            }
        });
    }

    /// Collects and pushes host metrics every interval, through the spool.
    async fn metrics_loop(self: Arc<Self>, mut spool: Spool) {
        let collector = crate::hostmetrics::HostCollector::new(&self.cfg.roots.proc_root);
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = collector.collect();
            for e in &c.errors {
                tracing::debug!("collecting {e}");
            }
            let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
            let body = crate::push::write_request(&c.metrics, &self.cfg.hostname, now);
            if spool.is_empty() {
                match self.push(&body).await {
                    Pushed::Done => continue,
                    Pushed::Refused(why) => {
                        tracing::warn!("the server refused host metrics: {why}");
                        continue;
                    }
                    Pushed::Later(why) if self.identity.get().is_some() => {
                        tracing::warn!("pushing host metrics: {why}; spooling");
                    }
                    Pushed::Later(_) => {}
                }
            }
            if let Err(e) = spool.push(&body) {
                tracing::error!("spooling host metrics: {e}");
            }
            self.drain(&mut spool).await;
        }
    }

    /// Sends the spool oldest first until it is empty or the server stops taking it.
    async fn drain(&self, spool: &mut Spool) {
        loop {
            let front = match spool.front() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("reading the spool: {e}");
                    return;
                }
            };
            match self.push(&front).await {
                Pushed::Later(_) => return,
                Pushed::Refused(why) => tracing::warn!("the server refused spooled metrics: {why}"),
                Pushed::Done => {}
            }
            if let Err(e) = spool.pop_front() {
                tracing::error!("removing from the spool: {e}");
                return;
            }
        }
    }

    async fn push(&self, body: &[u8]) -> Pushed {
        let Some(id) = self.identity.get() else {
            return Pushed::Later("not enrolled yet".into());
        };
        let sent = self
            .http
            .post(self.url(proto::WRITE_PATH))
            .bearer_auth(&id.secret)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Pushed::Done,
            // Our secret is unknown: keep the data until the channel has enrolled again.
            Ok(r) if r.status() == 401 || r.status() == 429 => {
                Pushed::Later(r.status().to_string())
            }
            Ok(r) if r.status().is_client_error() => {
                let s = r.status();
                Pushed::Refused(format!("{s}: {}", r.text().await.unwrap_or_default()))
            }
            Ok(r) => Pushed::Later(r.status().to_string()),
            Err(e) => Pushed::Later(crate::tls::error_chain(&e)),
        }
    }
}

enum Pushed {
    Done,
    /// The server took the request and refused its content: sending it again is useless.
    Refused(String),
    /// Not now: keep it.
    Later(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_spreads_and_grows_to_its_bound() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let firsts: Vec<Duration> = (0..50)
            .map(|_| {
                b.reset();
                b.next()
            })
            .collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_millis(5500)));
        assert!(
            firsts.iter().any(|d| *d != firsts[0]),
            "jittered: {firsts:?}"
        );
        for _ in 0..20 {
            assert!(b.next() <= Duration::from_millis(16_500));
        }
        // A slow heartbeat keeps its half-heartbeat start.
        let mut slow = Backoff::new(Duration::from_secs(60));
        assert!(slow.next() <= Duration::from_secs(33));
    }

    #[test]
    fn identity_files_are_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("identity.json");
        write_atomic(&p, b"{}", 0o600).expect("write");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("identity.tmp").exists());
        let back: Option<serde_json::Value> = read_json(&p).expect("read");
        assert_eq!(back, Some(serde_json::json!({})));
        assert!(
            read_json::<serde_json::Value>(&dir.path().join("none"))
                .expect("none")
                .is_none()
        );
        std::fs::write(&p, b"{").expect("write");
        assert!(read_json::<serde_json::Value>(&p).is_err());
    }
}
