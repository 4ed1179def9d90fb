//! The task engine: tasks in flight, their dispatch over the agent channel, the agents'
//! reports, and the writes that make all of it durable.
//!
//! The engine holds the tasks that are not finished in memory (each with its
//! [`Sched`]) and is driven by events: a task created, paused, resumed or cancelled by
//! a user; a message from an agent (`run.started`, `run.output`, `run.finished`); a
//! `run` message acknowledged by an agent; an agent lost; a health gate answered.
//! Every change is recorded in the open batch; one writer ([`Engine::run`]) writes the
//! batch in one transaction ([`taskdb::write`]), then lets the scheduler dispatch what
//! may start. Callers that must not answer before the change is durable wait for their
//! batch: [`Engine::flushed`] for one, or [`Engine::flushed_watch`] to follow the
//! batches as they are written. Every agent report (results and output alike) is
//! acknowledged only once its batch is written, so the agent replays it otherwise.
//!
//! Rules kept here:
//! - A task is written (with its audit entry) before anything of it is dispatched.
//! - A host runs one task at a time: a host busy with another task waits.
//! - A final host state never moves: a replayed or late report changes nothing.
//! - A report is accepted only from the host it is about (the channel authenticates
//!   the agent), for the attempt that was sent.
//! - Output is taken once per byte: each stream's chunks are placed by their offset, and
//!   what lies below the end already taken (a chunk replayed after a reconnect or a
//!   restart) is dropped, so it is neither stored nor counted against `max_output`
//!   twice. The end is kept per host and stream, and after a restart read back from the
//!   stored chunks.
//! - After a restart, hosts that were sent work but had not acknowledged it are sent it
//!   again (same task and attempt: the agent runs each once); hosts whose agent is
//!   lost end `agent_lost`; the rest wait for the agents' replayed reports.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use crate::audit::NewEntry;
use crate::sched::{HostState, Rollout, Sched, Step, TaskState};
use crate::taskdb::{self, Chunk, DbError, HostRow, TaskRow, Write};

/// A host, by its inventory id.
pub type HostId = u64;

/// The engine's way to the agents.
pub trait Channel: Send + Sync + 'static {
    /// Queues a message for the host's agent.
    fn push(&self, host: HostId, kind: &str, body: serde_json::Value) -> Result<(), String>;
    /// Whether the host's agent can take work: `Err` says why not (no agent enrolled,
    /// agent lost). An agent momentarily disconnected can: its work waits in its queue.
    fn reachable(&self, host: HostId) -> Result<(), String>;
    /// How long work sent may wait for the agent to acknowledge it before the host
    /// counts as `agent_lost`.
    fn ack_timeout(&self) -> Duration;
    /// Whether the host's agent is connected now.
    fn connected(&self, host: HostId) -> bool;
}

/// The answer of a health gate: `Ok(None)` healthy, `Ok(Some(what))` the query returned
/// something (the task pauses and says what), `Err` the query failed (the task pauses).
pub type GateAnswer = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>;

/// Evaluates health gates (a PromQL query at the current time).
pub trait Gate: Send + Sync + 'static {
    fn check(&self, query: &str) -> GateAnswer;
}

/// The default bound of one host's kept output (stdout and stderr together).
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;

/// Interpreters the agent knows.
pub const INTERPRETERS: [&str; 3] = ["bash", "sh", "python3"];

/// The recipe a task's script came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeRef {
    pub name: String,
    pub version: u32,
}

/// Everything a task runs with, as created; a retry reuses it whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The selector as the user wrote it.
    pub target: String,
    pub interpreter: String,
    pub script: String,
    pub recipe: Option<RecipeRef>,
    /// The recipe's parameters after defaults were filled in.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Environment of the script (the user's, then the recipe's parameters).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Run-as user (`None`: the agent's own user).
    pub user: Option<String>,
    pub timeout_ms: u64,
    pub rollout: Rollout,
    pub gate: Option<String>,
    pub max_output: usize,
    /// The task this one re-runs, and the host states it took.
    #[serde(default)]
    pub retry_of: Option<i64>,
}

/// Why the engine refused something. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no task {0}")]
    NoTask(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A host's run within a task.
#[derive(Debug, Clone)]
struct HostRun {
    host: HostId,
    hostname: String,
    attempt: u32,
    exit_code: Option<i64>,
    signal: Option<i64>,
    started_ms: Option<i64>,
    duration_ms: Option<i64>,
    error: Option<String>,
    truncated: bool,
    out_bytes: u64,
    /// Per stream (stdout, stderr): where the output taken so far ends. A chunk below it
    /// was taken already.
    out_end: [u64; 2],
    updated_at: i64,
    /// When the work was (last) sent, while it waits for the agent's acknowledgement.
    sent_at: Option<std::time::Instant>,
    /// Acknowledged or running when the server restarted, and not heard of since.
    restored_at: Option<std::time::Instant>,
}

struct Task {
    id: i64,
    created_at: i64,
    creator: String,
    spec: TaskSpec,
    spec_json: String,
    sha: String,
    sched: Sched,
    hosts: Vec<HostRun>,
    index: HashMap<HostId, usize>,
    gate_running: bool,
    /// Hosts in flight when the server stopped: sent again if never acknowledged,
    /// `agent_lost` if their agent is gone.
    resend: Vec<usize>,
    updated_at: i64,
    finished_at: Option<i64>,
    dirty: bool,
    dirty_hosts: Vec<usize>,
}

impl Task {
    fn state_name(&self) -> &'static str {
        if matches!(self.sched.state, TaskState::Running)
            && self.sched.hosts.iter().all(|h| *h == HostState::Queued)
        {
            "pending"
        } else {
            self.sched.state.as_str()
        }
    }

    fn reason(&self) -> String {
        match &self.sched.state {
            TaskState::Paused(r) | TaskState::Failed(r) => r.clone(),
            _ => String::new(),
        }
    }

    fn row(&self) -> TaskRow {
        TaskRow {
            id: self.id,
            created_at: self.created_at,
            creator: self.creator.clone(),
            spec: self.spec_json.clone(),
            script_sha256: self.sha.clone(),
            state: self.state_name().to_string(),
            reason: self.reason(),
            batch: i64::try_from(self.sched.batch).unwrap_or(i64::MAX),
            gate_pending: self.sched.gate_pending,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        }
    }

    fn host_row(&self, i: usize) -> HostRow {
        let h = &self.hosts[i];
        HostRow {
            task: self.id,
            idx: i as i64,
            host: h.host as i64,
            hostname: h.hostname.clone(),
            attempt: i64::from(h.attempt),
            state: self.sched.hosts[i].as_str().to_string(),
            exit_code: h.exit_code,
            signal: h.signal,
            started_ms: h.started_ms,
            duration_ms: h.duration_ms,
            error: h.error.clone(),
            truncated: h.truncated,
            out_bytes: i64::try_from(h.out_bytes).unwrap_or(i64::MAX),
            updated_at: h.updated_at,
        }
    }

    fn touch(&mut self, i: usize, now: i64) {
        self.hosts[i].updated_at = now;
        self.dirty_hosts.push(i);
    }

    fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for h in &self.sched.hosts {
            *m.entry(h.as_str()).or_insert(0) += 1;
        }
        m
    }
}

struct Inner {
    tasks: BTreeMap<i64, Task>,
    /// Host -> the task it is busy with.
    busy: HashMap<HostId, i64>,
    next_id: i64,
    /// Output chunks and audit entries of the open batch (rows are taken from the
    /// dirty tasks when the batch is written).
    output: Vec<Chunk>,
    audit: Vec<NewEntry>,
    /// The open batch's number.
    batch: u64,
    /// The open batch holds something.
    changed: bool,
    /// When work waiting for acknowledgement was last checked.
    swept: std::time::Instant,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            tasks: BTreeMap::new(),
            busy: HashMap::new(),
            next_id: 1,
            output: Vec::new(),
            audit: Vec::new(),
            batch: 1,
            changed: false,
            swept: std::time::Instant::now(),
        }
    }
}

/// The task engine. See the module documentation.
pub struct Engine {
    pool: SqlitePool,
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    /// The last batch written.
    flushed: tokio::sync::watch::Sender<u64>,
    channel: Arc<dyn Channel>,
    gate: Arc<dyn Gate>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A task to create: its spec and resolved hosts (id, hostname), in order.
pub struct NewTask {
    pub spec: TaskSpec,
    pub hosts: Vec<(HostId, String)>,
    pub creator: String,
}

impl Engine {
    /// Opens the engine on the task database: unfinished tasks are taken up again.
    pub async fn open(
        pool: SqlitePool,
        channel: Arc<dyn Channel>,
        gate: Arc<dyn Gate>,
    ) -> Result<Arc<Engine>, DbError> {
        let next_id = taskdb::next_task_id(&pool).await?;
        let mut inner = Inner {
            next_id,
            batch: 1,
            ..Inner::default()
        };
        for (row, hosts) in taskdb::unfinished(&pool).await? {
            let mut task = restore(row, hosts)?;
            // Where each stream's stored output ends: replayed chunks below it are in.
            for (idx, attempt, stream, end) in taskdb::output_ends(&pool, task.id).await? {
                let (Some(h), Some(k)) = (
                    usize::try_from(idx)
                        .ok()
                        .and_then(|i| task.hosts.get_mut(i)),
                    stream_index(&stream),
                ) else {
                    continue;
                };
                if i64::from(h.attempt) == attempt {
                    h.out_end[k] = u64::try_from(end).unwrap_or(0);
                }
            }
            for (i, st) in task.sched.hosts.iter().enumerate() {
                if st.in_flight() {
                    inner.busy.insert(task.hosts[i].host, task.id);
                }
            }
            tracing::info!(
                "task {} taken up again: {} ({} hosts)",
                task.id,
                task.state_name(),
                task.hosts.len()
            );
            inner.tasks.insert(task.id, task);
        }
        Ok(Arc::new(Engine {
            pool,
            inner: Mutex::new(inner),
            wake: tokio::sync::Notify::new(),
            flushed: tokio::sync::watch::channel(0).0,
            channel,
            gate,
        }))
    }

    /// The database (for reads and recipes).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the data stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until batch `n` is written.
    pub async fn flushed(&self, n: u64) {
        let mut rx = self.flushed.subscribe();
        // The sender lives as long as the engine.
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// The number of the last batch written, as it changes: batch `n` (and every batch
    /// before it) is durable once the value is `n` or more. For a caller that owes
    /// answers for many batches and must not wait for each in turn.
    pub fn flushed_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.flushed.subscribe()
    }

    /// Marks the open batch changed and returns its number.
    fn changed(&self, inner: &mut Inner) -> u64 {
        inner.changed = true;
        self.wake.notify_one();
        inner.batch
    }

    /// Creates a task: written with its audit entry before it returns; dispatch
    /// starts right after.
    pub async fn create(&self, t: NewTask) -> Result<i64, EngineError> {
        if t.hosts.is_empty() {
            return Err(EngineError::Invalid("the target matches no host".into()));
        }
        let now = now_ms();
        let id = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            id
        };
        let spec_json = serde_json::to_string(&t.spec)
            .map_err(|e| EngineError::Invalid(format!("task spec: {e}")))?;
        let sha = sha256_hex(t.spec.script.as_bytes());
        let n = t.hosts.len();
        let mut index = HashMap::with_capacity(n);
        let mut hosts = Vec::with_capacity(n);
        for (i, (host, hostname)) in t.hosts.into_iter().enumerate() {
            if index.insert(host, i).is_some() {
                return Err(EngineError::Invalid(format!(
                    "host {hostname} is listed twice"
                )));
            }
            hosts.push(HostRun {
                host,
                hostname,
                attempt: 1,
                exit_code: None,
                signal: None,
                started_ms: None,
                duration_ms: None,
                error: None,
                truncated: false,
                out_bytes: 0,
                out_end: [0, 0],
                updated_at: now,
                sent_at: None,
                restored_at: None,
            });
        }
        let task = Task {
            id,
            created_at: now,
            creator: t.creator.clone(),
            sched: Sched::new(t.spec.rollout.clone(), n),
            spec: t.spec,
            spec_json,
            sha: sha.clone(),
            hosts,
            index,
            gate_running: false,
            resend: Vec::new(),
            updated_at: now,
            finished_at: None,
            dirty: false,
            dirty_hosts: Vec::new(),
        };
        let audit = NewEntry {
            actor: t.creator,
            action: if task.spec.retry_of.is_some() {
                "task.retry".into()
            } else {
                "task.create".into()
            },
            task: Some(id),
            detail: serde_json::json!({
                "target": task.spec.target,
                "interpreter": task.spec.interpreter,
                "script": task.spec.script,
                "script_sha256": sha,
                "recipe": task.spec.recipe,
                "params": task.spec.params,
                "env": task.spec.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "user": task.spec.user,
                "timeout_ms": task.spec.timeout_ms,
                "rollout": task.spec.rollout,
                "gate": task.spec.gate,
                "retry_of": task.spec.retry_of,
                "hosts": task.hosts.iter().map(|h| h.hostname.as_str()).collect::<Vec<_>>(),
            }),
        };
        let w = Write {
            tasks: vec![task.row()],
            hosts: (0..n).map(|i| task.host_row(i)).collect(),
            output: Vec::new(),
            audit: vec![audit],
        };
        taskdb::write(&self.pool, now, &w).await?;
        let mut inner = self.lock();
        inner.tasks.insert(id, task);
        drop(inner);
        self.wake.notify_one();
        Ok(id)
    }

    /// Pauses a running task: nothing more starts; what runs finishes.
    pub async fn pause(&self, id: i64, actor: &str) -> Result<(), EngineError> {
        self.act(id, actor, "task.pause", |t| match t.sched.state {
            TaskState::Running => {
                t.sched.pause(format!("paused by {actor}"));
                Ok(())
            }
            ref s => Err(format!("the task is {}, not running", s.as_str())),
        })
        .await
    }

    /// Resumes a paused task.
    pub async fn resume(&self, id: i64, actor: &str) -> Result<(), EngineError> {
        self.act(id, actor, "task.resume", |t| t.sched.resume())
            .await
    }

    /// Cancels a task: hosts not started are skipped, running scripts are killed.
    pub async fn cancel(&self, id: i64, actor: &str) -> Result<(), EngineError> {
        let channel = self.channel.clone();
        self.act(id, actor, "task.cancel", move |t| {
            let kill = t.sched.cancel()?;
            for i in kill {
                let h = &t.hosts[i];
                if let Err(e) = channel.push(
                    h.host,
                    "kill",
                    serde_json::json!({"task": t.id, "attempt": h.attempt}),
                ) {
                    tracing::warn!("task {}: kill on {}: {e}", t.id, h.hostname);
                }
            }
            Ok(())
        })
        .await
    }

    /// Applies a user's action to an unfinished task and waits until it is written.
    async fn act(
        &self,
        id: i64,
        actor: &str,
        action: &str,
        f: impl FnOnce(&mut Task) -> Result<(), String>,
    ) -> Result<(), EngineError> {
        let batch: Option<u64> = {
            let mut inner = self.lock();
            match inner.tasks.get_mut(&id) {
                None => None,
                Some(t) => {
                    let before = t.sched.hosts.clone();
                    f(t).map_err(EngineError::Conflict)?;
                    let now = now_ms();
                    t.updated_at = now;
                    t.dirty = true;
                    for (i, was) in before.iter().enumerate() {
                        if *was != t.sched.hosts[i] {
                            t.touch(i, now);
                        }
                    }
                    let state = t.state_name();
                    inner.audit.push(NewEntry {
                        actor: actor.to_string(),
                        action: action.to_string(),
                        task: Some(id),
                        detail: serde_json::json!({"state": state}),
                    });
                    Some(self.changed(&mut inner))
                }
            }
        };
        match batch {
            Some(b) => {
                self.flushed(b).await;
                Ok(())
            }
            None => match taskdb::task(&self.pool, id).await? {
                Some(row) => Err(EngineError::Conflict(format!(
                    "task {id} is already {}",
                    row.state
                ))),
                None => Err(EngineError::NoTask(id)),
            },
        }
    }

    /// A `run` message was acknowledged by the host's agent.
    pub fn acknowledged(&self, host: HostId, body: &serde_json::Value) {
        let (Some(task), Some(attempt)) = (body["task"].as_i64(), body["attempt"].as_u64()) else {
            return;
        };
        let mut inner = self.lock();
        let Some(t) = inner.tasks.get_mut(&task) else {
            return;
        };
        let Some(&i) = t.index.get(&host) else {
            return;
        };
        if u64::from(t.hosts[i].attempt) == attempt && t.sched.hosts[i] == HostState::Sent {
            t.sched.set(i, HostState::Acknowledged);
            t.touch(i, now_ms());
            self.changed(&mut inner);
        }
    }

    /// A message from a host's agent. Returns the batch to wait for before the message
    /// may be acknowledged; `None` when it is no task report (no task and attempt).
    ///
    /// Every report waits for the batch open now, taken or not: what it was judged
    /// against may itself not be written yet (a final state, output taken from an
    /// earlier copy of the same message, a task that just finished and left memory), and
    /// batches are written in order.
    pub fn agent_message(&self, host: HostId, kind: &str, body: &serde_json::Value) -> Option<u64> {
        let (Some(task), Some(attempt)) = (body["task"].as_i64(), body["attempt"].as_u64()) else {
            return None;
        };
        let mut inner = self.lock();
        self.report(&mut inner, host, task, attempt, kind, body);
        Some(self.changed(&mut inner))
    }

    /// Takes a report into the open batch, or ignores it (see [`Engine::agent_message`]).
    fn report(
        &self,
        inner: &mut Inner,
        host: HostId,
        task: i64,
        attempt: u64,
        kind: &str,
        body: &serde_json::Value,
    ) -> Option<()> {
        let Some(t) = inner.tasks.get_mut(&task) else {
            // A finished task (or one that never was): its hosts' states are final.
            return None;
        };
        let Some(&i) = t.index.get(&host) else {
            tracing::warn!("host {host} reported on task {task}, which it is not part of");
            return None;
        };
        if u64::from(t.hosts[i].attempt) != attempt || t.sched.hosts[i].done() {
            return None;
        }
        t.hosts[i].restored_at = None;
        let now = now_ms();
        match kind {
            "run.started" => {
                t.hosts[i].started_ms = body["started_ms"].as_i64();
                t.sched.set(i, HostState::Running);
                t.touch(i, now);
            }
            "run.output" => {
                use base64::Engine as _;
                let (stream, k) = match body["stream"].as_str() {
                    Some("stdout") => ("stdout", 0),
                    Some("stderr") => ("stderr", 1),
                    _ => return None,
                };
                let mut offset = body["offset"].as_u64()?;
                let Ok(mut data) = base64::engine::general_purpose::STANDARD
                    .decode(body["data"].as_str().unwrap_or_default())
                else {
                    return None;
                };
                let end = offset.checked_add(data.len() as u64)?;
                i64::try_from(end).ok()?;
                let taken = t.hosts[i].out_end[k];
                if end <= taken {
                    // Taken already (a replay).
                    return None;
                }
                if offset < taken {
                    data.drain(..usize::try_from(taken - offset).unwrap_or(data.len()));
                    offset = taken;
                }
                t.hosts[i].out_end[k] = end;
                let room = (t.spec.max_output as u64).saturating_sub(t.hosts[i].out_bytes);
                if data.len() as u64 > room {
                    data.truncate(usize::try_from(room).unwrap_or(0));
                    t.hosts[i].truncated = true;
                }
                if t.sched.hosts[i] != HostState::Running {
                    t.sched.set(i, HostState::Running);
                }
                t.hosts[i].out_bytes += data.len() as u64;
                t.touch(i, now);
                if !data.is_empty() {
                    inner.output.push(Chunk {
                        task,
                        idx: i as i64,
                        attempt: i64::from(t.hosts[i].attempt),
                        stream,
                        // Below `end`, checked above.
                        offset: i64::try_from(offset).unwrap_or(i64::MAX),
                        data,
                    });
                }
            }
            "run.finished" => {
                let h = &mut t.hosts[i];
                h.exit_code = body["exit_code"].as_i64();
                h.signal = body["signal"].as_i64();
                if let Some(s) = body["started_ms"].as_i64() {
                    h.started_ms = Some(s);
                }
                h.duration_ms = body["duration_ms"].as_i64();
                h.truncated |= body["truncated"].as_bool().unwrap_or(false);
                h.error = body["error"].as_str().map(str::to_string);
                let state = match body["outcome"].as_str() {
                    Some("succeeded") => HostState::Succeeded,
                    Some("timed_out") => HostState::TimedOut,
                    Some("killed") => HostState::Killed,
                    Some("interrupted") => HostState::Interrupted,
                    Some("rejected") => HostState::Failed,
                    _ => HostState::Failed,
                };
                finish_host(inner, task, i, state, now);
            }
            _ => return None,
        }
        Some(())
    }

    /// A host's agent is lost: its work in flight ends `agent_lost`.
    pub fn host_lost(&self, host: HostId) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(&task) = inner.busy.get(&host) else {
            return;
        };
        let Some(t) = inner.tasks.get_mut(&task) else {
            return;
        };
        let Some(&i) = t.index.get(&host) else {
            return;
        };
        if t.sched.hosts[i].in_flight() {
            t.hosts[i].error = Some("the agent stopped heartbeating while it had the work".into());
            finish_host(inner, task, i, HostState::AgentLost, now_ms());
            self.changed(inner);
        }
    }

    /// Runs the engine: writes batches and dispatches, until the task is dropped.
    pub async fn run(self: Arc<Engine>) {
        let mut retry: Option<(Write, u64)> = None;
        loop {
            if retry.is_none() {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            let (w, batch) = match retry.take() {
                Some(r) => r,
                None => {
                    let mut inner = self.lock();
                    self.pump(&mut inner);
                    let w = take_batch(&mut inner);
                    let b = inner.batch;
                    inner.batch += 1;
                    inner.changed = false;
                    (w, b)
                }
            };
            if !w.is_empty()
                && let Err(e) = taskdb::write(&self.pool, now_ms(), &w).await
            {
                tracing::error!("writing task changes (retrying in 1 s): {e}");
                retry = Some((w, batch));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            self.flushed.send_replace(batch);
        }
    }

    /// Writes what is not written yet (at shutdown, after [`Engine::run`] stopped):
    /// output chunks and states changed since the last batch. Their messages were not
    /// acknowledged (the agents would replay them); writing them spares the replay.
    pub async fn flush(&self) -> Result<(), DbError> {
        let w = {
            let mut inner = self.lock();
            inner.batch += 1;
            take_batch(&mut inner)
        };
        if !w.is_empty() {
            taskdb::write(&self.pool, now_ms(), &w).await?;
        }
        Ok(())
    }

    /// Lets every unfinished task start what it may, oldest task first.
    fn pump(self: &Arc<Self>, inner: &mut Inner) {
        let ids: Vec<i64> = inner.tasks.keys().copied().collect();
        let now = now_ms();
        if inner.swept.elapsed() >= Duration::from_secs(1) {
            inner.swept = std::time::Instant::now();
            self.sweep(inner, now);
        }
        for id in ids {
            // Work sent before a restart and never acknowledged: send it again.
            let resend = inner
                .tasks
                .get_mut(&id)
                .map(|t| std::mem::take(&mut t.resend))
                .unwrap_or_default();
            for i in resend {
                let Some(t) = inner.tasks.get_mut(&id) else {
                    break;
                };
                if matches!(t.sched.state, TaskState::Cancelled) {
                    // Cancelled before the restart: the kills may have been lost with the
                    // channel's queues. Send them again; work never acknowledged is not
                    // sent again (the sweep settles it).
                    let h = &mut t.hosts[i];
                    if t.sched.hosts[i] == HostState::Sent {
                        h.sent_at = Some(std::time::Instant::now());
                    }
                    if let Err(e) = self.channel.push(
                        h.host,
                        "kill",
                        serde_json::json!({"task": id, "attempt": h.attempt}),
                    ) {
                        tracing::warn!("task {id}: kill on {}: {e}", h.hostname);
                    }
                    continue;
                }
                match t.sched.hosts[i] {
                    HostState::Sent => self.dispatch(inner, id, i, now),
                    // Acknowledged or running: the agent will report, unless it is gone.
                    _ => {
                        if let Err(why) = self.channel.reachable(t.hosts[i].host) {
                            if let Some(t) = inner.tasks.get_mut(&id) {
                                t.hosts[i].error = Some(why);
                            }
                            finish_host(inner, id, i, HostState::AgentLost, now);
                        }
                    }
                }
            }
            loop {
                let Inner { tasks, busy, .. } = &mut *inner;
                let Some(t) = tasks.get_mut(&id) else { break };
                let step = {
                    let list = &t.hosts;
                    let busy_with_other =
                        |i: usize| busy.get(&list[i].host).is_some_and(|other| *other != id);
                    t.sched.step(&busy_with_other)
                };
                match step {
                    Step::Dispatch(list) => {
                        t.dirty = true;
                        t.updated_at = now;
                        for i in list {
                            inner.busy.insert(
                                inner.tasks.get(&id).map(|t| t.hosts[i].host).unwrap_or(0),
                                id,
                            );
                            self.dispatch(inner, id, i, now);
                        }
                    }
                    Step::CheckGate => {
                        if !t.gate_running {
                            t.gate_running = true;
                            let query = t.spec.gate.clone().unwrap_or_default();
                            let (engine, gate) = (self.clone(), self.gate.clone());
                            tokio::spawn(async move {
                                let answer = gate.check(&query).await;
                                engine.gate_answered(id, answer);
                            });
                        }
                        break;
                    }
                    Step::Wait => break,
                    Step::Finished => {
                        // Finishing may have skipped the hosts that never started.
                        for i in 0..t.hosts.len() {
                            if t.sched.hosts[i] == HostState::Skipped {
                                t.touch(i, now);
                            }
                        }
                        t.finished_at = Some(now);
                        t.updated_at = now;
                        t.dirty = true;
                        let (state, reason, counts) = (t.state_name(), t.reason(), t.counts());
                        inner.audit.push(NewEntry {
                            actor: "system".into(),
                            action: "task.finish".into(),
                            task: Some(id),
                            detail: serde_json::json!({"state": state, "reason": reason, "hosts": counts}),
                        });
                        inner.changed = true;
                        break;
                    }
                }
            }
        }
    }

    /// Work sent and never acknowledged within the channel's bound: the agent is gone
    /// (or never came), the host ends `agent_lost`.
    fn sweep(&self, inner: &mut Inner, now: i64) {
        let bound = self.channel.ack_timeout();
        let mut stale = Vec::new();
        let mut never = Vec::new();
        for t in inner.tasks.values() {
            for (i, h) in t.hosts.iter().enumerate() {
                // A cancelled task's work that no agent reported within the bound was
                // never run: an agent reports every run it starts (and keeps the report
                // until the server has it).
                if matches!(t.sched.state, TaskState::Cancelled)
                    && t.sched.hosts[i] == HostState::Sent
                    && h.sent_at.is_some_and(|at| at.elapsed() > bound)
                {
                    never.push((t.id, i));
                    continue;
                }
                let waited = match t.sched.hosts[i] {
                    HostState::Sent => h.sent_at,
                    HostState::Acknowledged | HostState::Running => h.restored_at,
                    _ => None,
                };
                if waited.is_some_and(|at| at.elapsed() > bound) && !self.channel.connected(h.host)
                {
                    stale.push((t.id, i));
                }
            }
        }
        for (id, i) in never {
            if let Some(t) = inner.tasks.get_mut(&id) {
                t.hosts[i].error = Some(format!(
                    "cancelled; the agent did not report the work within {} s",
                    bound.as_secs()
                ));
            }
            finish_host(inner, id, i, HostState::Skipped, now);
        }
        for (id, i) in stale {
            if let Some(t) = inner.tasks.get_mut(&id) {
                t.hosts[i].error = Some(format!(
                    "the agent did not report within {} s and is not connected",
                    bound.as_secs()
                ));
            }
            finish_host(inner, id, i, HostState::AgentLost, now);
        }
    }

    /// Sends host `i` of task `id` its work (it is `Sent` already), or ends it
    /// `agent_lost` when its agent cannot take it.
    fn dispatch(&self, inner: &mut Inner, id: i64, i: usize, now: i64) {
        let Some(t) = inner.tasks.get_mut(&id) else {
            return;
        };
        let h = &t.hosts[i];
        let body = serde_json::json!({
            "task": id,
            "attempt": h.attempt,
            "interpreter": t.spec.interpreter,
            "script": t.spec.script,
            "user": t.spec.user,
            "timeout_ms": t.spec.timeout_ms,
            "env": t.spec.env,
            "max_output": t.spec.max_output,
        });
        let sent = self
            .channel
            .reachable(h.host)
            .and_then(|()| self.channel.push(h.host, "run", body));
        t.hosts[i].sent_at = Some(std::time::Instant::now());
        t.touch(i, now);
        inner.changed = true;
        if let Err(why) = sent {
            t.hosts[i].error = Some(why);
            finish_host(inner, id, i, HostState::AgentLost, now);
        }
    }

    /// A gate's answer: the next batch may start, or the task pauses and says why.
    fn gate_answered(&self, id: i64, answer: Result<Option<String>, String>) {
        let mut inner = self.lock();
        let Some(t) = inner.tasks.get_mut(&id) else {
            return;
        };
        t.gate_running = false;
        if !t.sched.gate_pending {
            // Resumed (or cancelled) while the gate was being checked.
            return;
        }
        let batch = t.sched.batch;
        let (action, detail) = match answer {
            Ok(None) => {
                t.sched.gate_passed();
                ("task.gate_passed", String::new())
            }
            Ok(Some(what)) => {
                let why = format!("health gate fired before batch {}: {what}", batch + 1);
                t.sched.pause(why.clone());
                ("task.pause", why)
            }
            Err(e) => {
                let why = format!(
                    "health gate could not be checked before batch {}: {e}",
                    batch + 1
                );
                t.sched.pause(why.clone());
                ("task.pause", why)
            }
        };
        t.dirty = true;
        t.updated_at = now_ms();
        let state = t.state_name();
        inner.audit.push(NewEntry {
            actor: "gate".into(),
            action: action.into(),
            task: Some(id),
            detail: serde_json::json!({"state": state, "reason": detail}),
        });
        self.changed(&mut inner);
    }

    /// Tasks in memory (unfinished), for metrics: (running hosts, queued hosts).
    pub fn gauges(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let mut running = 0;
        let mut queued = 0;
        for t in inner.tasks.values() {
            for h in &t.sched.hosts {
                if h.in_flight() {
                    running += 1;
                } else if *h == HostState::Queued {
                    queued += 1;
                }
            }
        }
        (inner.tasks.len(), running, queued)
    }
}

/// Host `i` of task `id` reached a final state: recorded, audited, its host freed.
fn finish_host(inner: &mut Inner, id: i64, i: usize, state: HostState, now: i64) {
    let Some(t) = inner.tasks.get_mut(&id) else {
        return;
    };
    let was_running = matches!(t.sched.state, TaskState::Running);
    t.sched.set(i, state);
    // `set` keeps a final state: report what the host ended as.
    let state = t.sched.hosts[i];
    let paused = was_running && matches!(t.sched.state, TaskState::Paused(_));
    t.touch(i, now);
    t.dirty = true;
    t.updated_at = now;
    let h = &t.hosts[i];
    let host = h.host;
    inner.audit.push(NewEntry {
        actor: format!("agent:{}", h.hostname),
        action: "host.result".into(),
        task: Some(id),
        detail: serde_json::json!({
            "hostname": h.hostname,
            "attempt": h.attempt,
            "state": state.as_str(),
            "exit_code": h.exit_code,
            "signal": h.signal,
            "duration_ms": h.duration_ms,
            "error": h.error,
            "truncated": h.truncated,
        }),
    });
    if paused {
        inner.audit.push(NewEntry {
            actor: "system".into(),
            action: "task.pause".into(),
            task: Some(id),
            detail: serde_json::json!({"state": "paused", "reason": t.reason()}),
        });
    }
    if inner.busy.get(&host) == Some(&id) {
        inner.busy.remove(&host);
    }
    inner.changed = true;
}

/// Takes the open batch: rows of the dirty tasks and hosts, output, audit entries.
/// Finished tasks leave memory with it.
fn take_batch(inner: &mut Inner) -> Write {
    let mut w = Write {
        output: std::mem::take(&mut inner.output),
        audit: std::mem::take(&mut inner.audit),
        ..Write::default()
    };
    let mut done = Vec::new();
    for t in inner.tasks.values_mut() {
        if t.dirty || !t.dirty_hosts.is_empty() {
            w.tasks.push(t.row());
            t.dirty = false;
        }
        let mut dirty = std::mem::take(&mut t.dirty_hosts);
        dirty.sort_unstable();
        dirty.dedup();
        for i in dirty {
            w.hosts.push(t.host_row(i));
        }
        if t.finished_at.is_some() {
            done.push(t.id);
        }
    }
    for id in done {
        inner.tasks.remove(&id);
    }
    w
}

/// Index of an output stream in [`HostRun::out_end`].
fn stream_index(stream: &str) -> Option<usize> {
    match stream {
        "stdout" => Some(0),
        "stderr" => Some(1),
        _ => None,
    }
}

/// Rebuilds an unfinished task from its rows.
fn restore(row: TaskRow, rows: Vec<HostRow>) -> Result<Task, DbError> {
    let bad = |why: String| DbError::Invalid(format!("task {}: {why}", row.id));
    let spec: TaskSpec = serde_json::from_str(&row.spec).map_err(|e| bad(format!("spec: {e}")))?;
    let n = rows.len();
    let mut sched = Sched::new(spec.rollout.clone(), n);
    sched.batch = usize::try_from(row.batch).map_err(|_| bad("batch".into()))?;
    sched.gate_pending = row.gate_pending;
    sched.state = match row.state.as_str() {
        "pending" | "running" => TaskState::Running,
        "paused" => TaskState::Paused(row.reason.clone()),
        "cancelled" => TaskState::Cancelled,
        other => return Err(bad(format!("unfinished task in state {other:?}"))),
    };
    let mut hosts = Vec::with_capacity(n);
    let mut index = HashMap::with_capacity(n);
    let mut resend = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        if r.idx != i as i64 {
            return Err(bad(format!("host rows: index {} at {i}", r.idx)));
        }
        let st = HostState::parse(&r.state)
            .ok_or_else(|| bad(format!("host {}: state {:?}", r.hostname, r.state)))?;
        sched.hosts[i] = st;
        if st.in_flight() {
            resend.push(i);
        }
        let host = u64::try_from(r.host).map_err(|_| bad("host id".into()))?;
        index.insert(host, i);
        hosts.push(HostRun {
            host,
            hostname: r.hostname,
            attempt: u32::try_from(r.attempt).map_err(|_| bad("attempt".into()))?,
            exit_code: r.exit_code,
            signal: r.signal,
            started_ms: r.started_ms,
            duration_ms: r.duration_ms,
            error: r.error,
            truncated: r.truncated,
            out_bytes: u64::try_from(r.out_bytes).unwrap_or(0),
            // Read from the stored output by `Engine::open`.
            out_end: [0, 0],
            updated_at: r.updated_at,
            sent_at: None,
            restored_at: st.in_flight().then(std::time::Instant::now),
        });
    }
    let spec_json = row.spec.clone();
    Ok(Task {
        id: row.id,
        created_at: row.created_at,
        creator: row.creator,
        spec,
        spec_json,
        sha: row.script_sha256,
        sched,
        hosts,
        index,
        gate_running: false,
        resend,
        updated_at: row.updated_at,
        finished_at: None,
        dirty: false,
        dirty_hosts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::Limit;

    /// A channel to one always connected agent, recording what is pushed to it.
    #[derive(Default)]
    struct Agents {
        pushed: Mutex<Vec<(HostId, String)>>,
    }

    impl Channel for Agents {
        fn push(&self, host: HostId, kind: &str, _body: serde_json::Value) -> Result<(), String> {
            self.pushed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((host, kind.to_string()));
            Ok(())
        }
        fn reachable(&self, _host: HostId) -> Result<(), String> {
            Ok(())
        }
        fn ack_timeout(&self) -> Duration {
            Duration::from_secs(3600)
        }
        fn connected(&self, _host: HostId) -> bool {
            true
        }
    }

    struct NoGate;

    impl Gate for NoGate {
        fn check(&self, _query: &str) -> GateAnswer {
            Box::pin(async { Ok(None) })
        }
    }

    fn spec(max_output: usize) -> TaskSpec {
        TaskSpec {
            target: "h1".into(),
            interpreter: "bash".into(),
            script: "echo hi".into(),
            recipe: None,
            params: BTreeMap::new(),
            env: Vec::new(),
            user: None,
            timeout_ms: 60_000,
            rollout: Rollout {
                concurrency: Limit::Count(1),
                batch: None,
                canary: 0,
                max_fail: Limit::Count(0),
                gated: false,
            },
            gate: None,
            max_output,
            retry_of: None,
        }
    }

    fn chunk(stream: &str, offset: u64, data: &[u8]) -> serde_json::Value {
        use base64::Engine as _;
        serde_json::json!({"task": 1, "attempt": 1, "stream": stream, "offset": offset,
            "data": base64::engine::general_purpose::STANDARD.encode(data)})
    }

    /// An engine on `pool`, running, whose task 1 (on host 7) has been sent to its agent
    /// and acknowledged; the writer is stopped again, so nothing is written until the
    /// caller starts it.
    async fn engine_with_a_running_host(
        pool: &SqlitePool,
        create: bool,
    ) -> (Arc<Engine>, Arc<Agents>) {
        let agents = Arc::new(Agents::default());
        let engine = Engine::open(pool.clone(), agents.clone(), Arc::new(NoGate))
            .await
            .expect("open");
        if create {
            let id = engine
                .create(NewTask {
                    spec: spec(30),
                    hosts: vec![(7, "h1".into())],
                    creator: "test".into(),
                })
                .await
                .expect("create");
            assert_eq!(id, 1);
            let writer = tokio::spawn(engine.clone().run());
            let mut written = engine.flushed_watch();
            while agents.pushed.lock().expect("lock").is_empty() {
                tokio::task::yield_now().await;
            }
            // Batches are written in order: once the report's is, so is the dispatch.
            engine.acknowledged(7, &serde_json::json!({"task": 1, "attempt": 1}));
            let b = engine
                .agent_message(
                    7,
                    "run.started",
                    &serde_json::json!({"task": 1, "attempt": 1}),
                )
                .expect("a batch");
            written.wait_for(|w| *w >= b).await.expect("written");
            writer.abort();
            let _ = writer.await;
        }
        (engine, agents)
    }

    async fn stored(pool: &SqlitePool) -> (String, String, i64, bool) {
        let mut out = (String::new(), String::new());
        for (stream, _, data) in taskdb::output(pool, 1, 0, 1).await.expect("output") {
            let s = if stream == "stdout" {
                &mut out.0
            } else {
                &mut out.1
            };
            s.push_str(&String::from_utf8_lossy(&data));
        }
        let h = taskdb::host_by_name(pool, 1, "h1")
            .await
            .expect("host")
            .expect("h1");
        (out.0, out.1, h.out_bytes, h.truncated)
    }

    #[tokio::test]
    async fn output_is_durable_once_its_batch_is_written_and_replays_are_taken_once() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = taskdb::open(&dir.path().join("exec.db")).await.expect("db");
        let (engine, _agents) = engine_with_a_running_host(&pool, true).await;
        let written = engine.flushed_watch();

        // Taken into the open batch: not written, and the batch to wait for is ahead of
        // the last one written.
        let b1 = engine
            .agent_message(7, "run.output", &chunk("stdout", 0, b"hello "))
            .expect("a batch");
        assert!(*written.borrow() < b1);
        assert_eq!(stored(&pool).await.0, "");
        // The same chunk again (sent again after a reconnect), and one overlapping it:
        // only the new bytes are taken.
        let b2 = engine
            .agent_message(7, "run.output", &chunk("stdout", 0, b"hello "))
            .expect("a batch for a replay too");
        assert!(b2 >= b1);
        engine
            .agent_message(7, "run.output", &chunk("stdout", 3, b"lo world\n"))
            .expect("a batch");
        engine
            .agent_message(7, "run.output", &chunk("stderr", 0, b"oops\n"))
            .expect("a batch");

        // Once the batch is written, so is everything taken with it.
        let writer = tokio::spawn(engine.clone().run());
        let mut w = engine.flushed_watch();
        w.wait_for(|v| *v >= b2).await.expect("written");
        assert_eq!(
            stored(&pool).await,
            ("hello world\n".into(), "oops\n".into(), 17, false)
        );
        writer.abort();
        let _ = writer.await;
        drop(engine);

        // A restarted server: the agent replays what it had no acknowledgement for.
        let (engine, _agents) = engine_with_a_running_host(&pool, false).await;
        for (stream, offset, data) in [
            ("stdout", 0, &b"hello "[..]),
            ("stdout", 6, b"world\n"),
            ("stderr", 0, b"oops\n"),
            ("stdout", 12, b"more\n"),
        ] {
            engine
                .agent_message(7, "run.output", &chunk(stream, offset, data))
                .expect("a batch");
        }
        // Beyond `max_output` (30 bytes): kept up to it, marked truncated.
        let last = engine
            .agent_message(7, "run.output", &chunk("stdout", 17, b"0123456789abcdef"))
            .expect("a batch");
        let writer = tokio::spawn(engine.clone().run());
        let mut w = engine.flushed_watch();
        w.wait_for(|v| *v >= last).await.expect("written");
        assert_eq!(
            stored(&pool).await,
            (
                "hello world\nmore\n01234567".into(),
                "oops\n".into(),
                30,
                true
            )
        );
        // Reports judged against what may not be written yet wait for the open batch too;
        // only a message that is no task report has nothing to wait for.
        let open = engine.lock().batch;
        let finished = serde_json::json!({"task": 99, "attempt": 1, "outcome": "succeeded"});
        assert!(engine.agent_message(7, "run.finished", &finished) >= Some(open));
        assert_eq!(
            engine.agent_message(7, "run.output", &serde_json::json!({})),
            None
        );
        writer.abort();
    }
}
