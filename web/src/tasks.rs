//! The tasks API under `/api/ops/v1/`: batch execution (`/tasks…`), the recipe library
//! (`/recipes…`) and the audit trail (`/audit…`), plus the glue that connects the task
//! engine (`exec::engine`) to the agent channel and to the PromQL engine (health gates).
//!
//! Every route sits behind the ops API's token check; adding a recipe needs an admin
//! token. Requests are checked whole before anything runs: a bad selector, a selector
//! matching no host, an unknown recipe or parameter, a bad limit is a 400 naming the
//! problem, and no task is created.
//!
//! Limits: a script is at most [`MAX_SCRIPT_BYTES`]; at most [`MAX_ENV`] environment
//! variables; a task's timeout per host is 1 s to 7 days; kept output per host is at most
//! [`MAX_OUTPUT_BYTES`] (default `exec::engine::DEFAULT_MAX_OUTPUT`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use exec::engine::{
    Channel, Engine, EngineError, Gate, GateAnswer, HostId, NewTask, RecipeRef, TaskSpec,
};
use exec::recipe::{Origin, Recipe};
use exec::{HostState, Limit, Rollout};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, Params, success};

/// Longest script accepted, in bytes (the `run` message must fit an agent frame).
pub const MAX_SCRIPT_BYTES: usize = 256 << 10;
/// Environment variables a task may set, at most.
pub const MAX_ENV: usize = 100;
/// Largest per-host output bound a task may ask for.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Default timeout of a script on one host.
pub const DEFAULT_TIMEOUT_MS: u64 = 600_000;
/// Default concurrency: a tenth of the hosts (at least one).
pub const DEFAULT_CONCURRENCY: &str = "10%";

/// The server's task key: it signs every `run` message (see `agent::proto`, "Signed
/// work"); agents refuse work it did not sign.
pub struct Signer {
    key: ed25519_dalek::SigningKey,
    /// The public half, hex, as agents pin it.
    pub public_hex: String,
}

impl Signer {
    /// Reads the key from `path` (32 raw bytes, the Ed25519 seed), creating it (mode
    /// 0600) with 256 random bits from the operating system when it does not exist.
    pub fn load_or_create(path: &std::path::Path) -> Result<Signer, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let seed: [u8; 32] = match std::fs::read(path) {
            Ok(b) => b.try_into().map_err(|b: Vec<u8>| {
                format!(
                    "{}: {} bytes; a task key is 32 bytes (move the file away to make a new one, \
                     then re-enroll the agents)",
                    path.display(),
                    b.len()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| format!("random key: {e}"))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                f.write_all(&seed)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                seed
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public_hex = agent::proto::hex(key.verifying_key().as_bytes());
        Ok(Signer { key, public_hex })
    }

    /// Signs a `run` body for `host` in place.
    pub fn sign_run(&self, host: u64, body: &mut Value) -> Result<(), String> {
        let mut run: agent::proto::RunBody =
            serde_json::from_value(body.clone()).map_err(|e| format!("run message: {e}"))?;
        run.sign(&self.key, host);
        *body = serde_json::to_value(&run).map_err(|e| format!("run message: {e}"))?;
        Ok(())
    }
}

/// The engine and the recipe library.
pub struct Exec {
    pub engine: Arc<Engine>,
    pub signer: Arc<Signer>,
    shipped: Vec<Recipe>,
    /// User recipes by name, every version, oldest first.
    user: parking_lot::RwLock<BTreeMap<String, Vec<Recipe>>>,
}

impl Exec {
    /// The library: the shipped recipes and the user ones stored in the task database.
    pub async fn open(engine: Arc<Engine>, signer: Arc<Signer>) -> Result<Exec, String> {
        let shipped = exec::recipe::shipped().map_err(|e| e.to_string())?;
        let mut user: BTreeMap<String, Vec<Recipe>> = BTreeMap::new();
        let rows = exec::taskdb::recipes(engine.pool())
            .await
            .map_err(|e| e.to_string())?;
        for (name, version, _, _, body) in rows {
            let v: Value = serde_json::from_str(&body)
                .map_err(|e| format!("stored recipe {name} version {version}: {e}"))?;
            let version = u32::try_from(version).map_err(|_| format!("recipe {name}: version"))?;
            let r = exec::recipe::from_json(&v, version).map_err(|e| e.to_string())?;
            user.entry(name).or_default().push(r);
        }
        Ok(Exec {
            engine,
            signer,
            shipped,
            user: parking_lot::RwLock::new(user),
        })
    }

    /// `name` (the newest version) or `name@version`.
    fn recipe(&self, spec: &str) -> Result<Recipe, ApiError> {
        let (name, version) = match spec.split_once('@') {
            Some((n, v)) => (
                n,
                Some(v.parse::<u32>().map_err(|_| {
                    ApiError::bad_data(format!("recipe {spec:?}: the version must be a number"))
                })?),
            ),
            None => (spec, None),
        };
        let unknown = || {
            ApiError::with_status(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown recipe {spec:?} (GET /api/ops/v1/recipes lists them)"),
            )
        };
        if let Some(r) = self.shipped.iter().find(|r| r.name == name) {
            return match version {
                Some(v) if v != r.version => Err(ApiError::with_status(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "recipe {name} is shipped at version {}; version {v} is not available",
                        r.version
                    ),
                )),
                _ => Ok(r.clone()),
            };
        }
        let user = self.user.read();
        let versions = user.get(name).ok_or_else(unknown)?;
        match version {
            None => versions.last().cloned().ok_or_else(unknown),
            Some(v) => versions
                .iter()
                .find(|r| r.version == v)
                .cloned()
                .ok_or_else(unknown),
        }
    }
}

/// The agent channel, as the engine sees it.
pub struct HubChannel {
    pub hub: Arc<crate::channel::Hub>,
    pub store: Arc<inventory::Store>,
    pub signer: Arc<Signer>,
}

impl Channel for HubChannel {
    fn push(&self, host: HostId, kind: &str, mut body: Value) -> Result<(), String> {
        if kind == "run" {
            self.signer.sign_run(host, &mut body)?;
        }
        self.hub
            .push(&self.store, inventory::HostId(host), kind, body)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn reachable(&self, host: HostId) -> Result<(), String> {
        let h = inventory::HostId(host);
        if self.store.agent(h).is_none() {
            return Err("no agent is enrolled on this host".into());
        }
        match self.hub.status(h) {
            Some(inventory::AgentStatus::Lost) => Err("the host's agent is lost".into()),
            // Online, or not heard from since the server started: the work waits in
            // the agent's queue (for at most `ack_timeout`).
            _ => Ok(()),
        }
    }

    fn ack_timeout(&self) -> std::time::Duration {
        self.hub.limits.lost_after
    }

    fn connected(&self, host: HostId) -> bool {
        self.hub.is_connected(inventory::HostId(host))
    }
}

/// Health gates, evaluated by the PromQL engine at the current time.
pub struct QueryGate(pub Arc<AppState>);

impl Gate for QueryGate {
    fn check(&self, query: &str) -> GateAnswer {
        let st = self.0.clone();
        let query = query.to_string();
        Box::pin(async move {
            let db = st.db().map_err(|e| e.message)?.clone();
            let opts = st.settings.engine.clone();
            let q = query.clone();
            let res = tokio::task::spawn_blocking(move || {
                promql::Engine::new(opts).instant(db.as_ref(), &q, tsdb::now_ms())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            Ok(describe_gate(&res.value))
        })
    }
}

/// What a gate query returned, if anything: `None` when empty.
fn describe_gate(v: &promql::Value) -> Option<String> {
    match v {
        promql::Value::Vector(samples) if samples.is_empty() => None,
        promql::Value::Vector(samples) => {
            let first = &samples[0];
            Some(format!(
                "{} series returned, e.g. {} = {}",
                samples.len(),
                first.labels,
                first.v
            ))
        }
        promql::Value::Matrix(series) if series.is_empty() => None,
        promql::Value::Matrix(series) => Some(format!("{} series returned", series.len())),
        promql::Value::Scalar { v, .. } => Some(format!("scalar {v} returned")),
        promql::Value::String { v, .. } => Some(format!("string {v:?} returned")),
    }
}

fn exec_of(st: &AppState) -> Result<&Arc<Exec>, ApiError> {
    st.tasks()
        .ok_or_else(|| ApiError::unavailable("starting: opening the task database"))
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::NoTask(id) => {
            ApiError::with_status(StatusCode::NOT_FOUND, "not_found", format!("no task {id}"))
        }
        EngineError::Conflict(m) => ApiError::with_status(StatusCode::CONFLICT, "conflict", m),
        EngineError::Invalid(m) => ApiError::bad_data(m),
        EngineError::Db(e) => ApiError::internal(e.to_string()),
    }
}

fn db_error(e: exec::taskdb::DbError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn actor(caller: &inventory::TokenInfo) -> String {
    format!("{}:{}", caller.kind.as_str(), caller.name)
}

fn limit_str(l: Limit) -> String {
    match l {
        Limit::Count(n) => n.to_string(),
        Limit::Percent(p) => format!("{p}%"),
    }
}

/// A task as it is created: `POST /api/ops/v1/tasks`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTaskReq {
    /// A selector (see `inventory::selector`).
    target: String,
    script: Option<String>,
    interpreter: Option<String>,
    /// `name` or `name@version`.
    recipe: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    user: Option<String>,
    /// A duration (`90s`, `10m`).
    timeout: Option<String>,
    concurrency: Option<String>,
    batch: Option<usize>,
    canary: Option<usize>,
    max_fail: Option<String>,
    gate: Option<String>,
    max_output: Option<usize>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_data(msg)
}

fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && !u.starts_with('-')
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Checks a request and builds the task's spec; nothing is stored.
fn spec_of(ex: &Exec, req: NewTaskReq) -> Result<TaskSpec, ApiError> {
    let target = req.target.trim().to_string();
    if target.is_empty() {
        return Err(bad(
            "target: the selector is empty; name the hosts (`*` for every host)",
        ));
    }
    let (interpreter, script, recipe, params, mut env) = match (req.script, req.recipe) {
        (Some(_), Some(_)) => return Err(bad("give either a script or a recipe, not both")),
        (None, None) => return Err(bad("give a script or a recipe")),
        (Some(script), None) => {
            if !req.params.is_empty() {
                return Err(bad(
                    "params are for recipes; a script reads its environment",
                ));
            }
            let interpreter = req.interpreter.unwrap_or_else(|| "bash".into());
            (interpreter, script, None, BTreeMap::new(), Vec::new())
        }
        (None, Some(name)) => {
            let r = ex.recipe(&name)?;
            if req
                .interpreter
                .as_ref()
                .is_some_and(|i| *i != r.interpreter)
            {
                return Err(bad(format!(
                    "recipe {} runs with {}; do not give another interpreter",
                    r.name, r.interpreter
                )));
            }
            let bound = r.bind(&req.params).map_err(|e| bad(e.to_string()))?;
            (
                r.interpreter.clone(),
                r.script.clone(),
                Some(RecipeRef {
                    name: r.name.clone(),
                    version: r.version,
                }),
                bound.params,
                bound.env,
            )
        }
    };
    if !exec::engine::INTERPRETERS.contains(&interpreter.as_str()) {
        return Err(bad(format!(
            "interpreter {interpreter:?}: expected one of {}",
            exec::engine::INTERPRETERS.join(", ")
        )));
    }
    if script.trim().is_empty() {
        return Err(bad("the script is empty"));
    }
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(bad(format!(
            "the script is {} bytes; at most {MAX_SCRIPT_BYTES}",
            script.len()
        )));
    }
    if req.env.len() > MAX_ENV {
        return Err(bad(format!("at most {MAX_ENV} environment variables")));
    }
    for (k, v) in &req.env {
        if !valid_env_name(k) {
            return Err(bad(format!(
                "env: {k:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        if k.starts_with("MINOS_PARAM_") {
            return Err(bad(format!(
                "env: {k} is reserved for recipe parameters; use params"
            )));
        }
        if v.contains('\0') {
            return Err(bad(format!("env: the value of {k} contains a NUL byte")));
        }
    }
    let mut all_env: Vec<(String, String)> = req.env.into_iter().collect();
    all_env.append(&mut env);
    let user = match req.user.map(|u| u.trim().to_string()) {
        None => None,
        Some(u) if u.is_empty() => None,
        Some(u) if valid_user(&u) => Some(u),
        Some(u) => return Err(bad(format!("user {u:?} is not a valid user name"))),
    };
    let timeout_ms = match req.timeout.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_TIMEOUT_MS,
        Some(t) => {
            let ms = promql::parse_duration_ms(t).map_err(|_| {
                bad(format!(
                    "timeout {t:?}: expected a duration such as 90s or 10m"
                ))
            })?;
            if !(1_000..=7 * 86_400_000).contains(&ms) {
                return Err(bad(format!("timeout {t}: between 1s and 7d")));
            }
            ms as u64
        }
    };
    let concurrency = Limit::parse(req.concurrency.as_deref().unwrap_or(DEFAULT_CONCURRENCY))
        .map_err(|e| bad(format!("concurrency: {e}")))?;
    if concurrency == Limit::Count(0) || concurrency == Limit::Percent(0) {
        return Err(bad("concurrency: at least 1"));
    }
    if req.batch == Some(0) {
        return Err(bad("batch: at least 1 host per batch"));
    }
    let max_fail = Limit::parse(req.max_fail.as_deref().unwrap_or("0"))
        .map_err(|e| bad(format!("max_fail: {e}")))?;
    let gate = match req.gate.map(|g| g.trim().to_string()) {
        None => None,
        Some(g) if g.is_empty() => None,
        Some(g) => {
            promql::format_query(&g).map_err(|e| bad(format!("gate: {e}")))?;
            Some(g)
        }
    };
    let max_output = req.max_output.unwrap_or(exec::engine::DEFAULT_MAX_OUTPUT);
    if max_output > MAX_OUTPUT_BYTES {
        return Err(bad(format!(
            "max_output: at most {MAX_OUTPUT_BYTES} bytes per host"
        )));
    }
    Ok(TaskSpec {
        target,
        interpreter,
        script,
        recipe,
        params,
        env: all_env,
        user,
        timeout_ms,
        rollout: Rollout {
            concurrency,
            batch: req.batch,
            canary: req.canary.unwrap_or(0),
            max_fail,
            gated: gate.is_some(),
        },
        gate,
        max_output,
        retry_of: None,
    })
}

/// `POST /api/ops/v1/tasks`: creates a task and starts it; answers the task.
pub async fn create(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let store = st
            .inventory()
            .ok_or_else(|| ApiError::unavailable("starting: opening the metadata store"))?;
        let req: NewTaskReq =
            serde_json::from_slice(&body).map_err(|e| bad(format!("request body: {e}")))?;
        let spec = spec_of(ex, req)?;
        let sel =
            inventory::Selector::parse(&spec.target).map_err(|e| bad(format!("target: {e}")))?;
        let inv = store.snapshot();
        let ids = sel.resolve(&inv).map_err(|e| bad(format!("target: {e}")))?;
        if ids.is_empty() {
            return Err(bad(format!(
                "target: the selector {:?} matches no host; nothing was run",
                spec.target
            )));
        }
        crate::opsapi::require_hosts(&caller, &inv, ids.iter().copied(), inventory::Role::Run)?;
        let hosts: Vec<(HostId, String)> = ids
            .iter()
            .filter_map(|id| inv.host(*id).map(|h| (id.0, h.hostname.clone())))
            .collect();
        let id = ex
            .engine
            .create(NewTask {
                spec,
                hosts,
                creator: actor(&caller),
            })
            .await
            .map_err(engine_error)?;
        // The summary: a task of thousands of hosts is read with GET.
        task_json(ex, id, false).await.map(success)
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

fn host_json(h: &exec::taskdb::HostRow) -> Value {
    json!({
        "hostname": h.hostname,
        "host_id": h.host,
        "state": h.state,
        "attempt": h.attempt,
        "exit_code": h.exit_code,
        "signal": h.signal,
        "started_ms": h.started_ms,
        "duration_ms": h.duration_ms,
        "error": h.error,
        "truncated": h.truncated,
        "output_bytes": h.out_bytes,
        "updated_at": h.updated_at,
    })
}

fn summary_json(t: &exec::taskdb::TaskRow, spec: &TaskSpec, counts: Value, total: i64) -> Value {
    json!({
        "id": t.id,
        "state": t.state,
        "reason": t.reason,
        "created_at": t.created_at,
        "created_by": t.creator,
        "updated_at": t.updated_at,
        "finished_at": t.finished_at,
        "target": spec.target,
        "interpreter": spec.interpreter,
        "recipe": spec.recipe,
        "params": spec.params,
        "user": spec.user,
        "timeout_ms": spec.timeout_ms,
        "concurrency": limit_str(spec.rollout.concurrency),
        "batch": spec.rollout.batch,
        "canary": spec.rollout.canary,
        "max_fail": limit_str(spec.rollout.max_fail),
        "gate": spec.gate,
        "max_output": spec.max_output,
        "retry_of": spec.retry_of,
        "script_sha256": t.script_sha256,
        "hosts_total": total,
        "counts": counts,
    })
}

fn spec_of_row(t: &exec::taskdb::TaskRow) -> Result<TaskSpec, ApiError> {
    serde_json::from_str(&t.spec)
        .map_err(|e| ApiError::internal(format!("task {}: stored spec: {e}", t.id)))
}

async fn task_json(ex: &Exec, id: i64, with_hosts: bool) -> Result<Value, ApiError> {
    let pool = ex.engine.pool();
    let t = exec::taskdb::task(pool, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            ApiError::with_status(StatusCode::NOT_FOUND, "not_found", format!("no task {id}"))
        })?;
    let spec = spec_of_row(&t)?;
    let hosts = exec::taskdb::hosts(pool, id).await.map_err(db_error)?;
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for h in &hosts {
        *counts.entry(h.state.as_str()).or_insert(0) += 1;
    }
    let mut v = summary_json(&t, &spec, json!(counts), hosts.len() as i64);
    if with_hosts {
        v["script"] = json!(spec.script);
        v["env"] = json!(spec.env.iter().map(|(k, _)| k).collect::<Vec<_>>());
        v["hosts"] = hosts.iter().map(host_json).collect();
    }
    Ok(v)
}

fn task_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| bad(format!("task id {s:?}: expected a positive number")))
}

/// Whether `caller` may act as `role` on every host of task `id` (always, for an
/// unscoped token; see `crate::opsapi`). A task the token may not read is answered as
/// missing (404), so its hosts are not disclosed; one it may read but not run, 403.
async fn require_task(
    st: &AppState,
    ex: &Exec,
    caller: &inventory::TokenInfo,
    id: i64,
    role: inventory::Role,
) -> Result<(), ApiError> {
    if !caller.scoped() {
        return Ok(());
    }
    let store = st
        .inventory()
        .ok_or_else(|| ApiError::unavailable("starting: opening the metadata store"))?;
    let hosts = exec::taskdb::hosts(ex.engine.pool(), id)
        .await
        .map_err(db_error)?;
    let inv = store.snapshot();
    let ids = || {
        hosts
            .iter()
            .map(|h| inventory::HostId(u64::try_from(h.host).unwrap_or(u64::MAX)))
    };
    if crate::opsapi::require_hosts(caller, &inv, ids(), inventory::Role::Read).is_err() {
        return Err(ApiError::with_status(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {id}"),
        ));
    }
    crate::opsapi::require_hosts(caller, &inv, ids(), role)
}

/// `GET /api/ops/v1/tasks/{id}`: a task with every host's state.
pub async fn show(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let id = task_id(&id)?;
        require_task(&st, ex, &caller, id, inventory::Role::Read).await?;
        task_json(ex, id, true).await.map(success)
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/tasks[?state=running&before=ID&limit=N]`: newest first.
///
/// A scoped token sees the tasks whose hosts it may all read (a page may then hold
/// fewer than `limit`; `before` pages on).
pub async fn list(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let p = Params::parse(q.as_deref(), &[]);
        let state = p.get("state").filter(|s| !s.is_empty());
        if let Some(s) = state
            && ![
                "pending",
                "running",
                "paused",
                "succeeded",
                "failed",
                "cancelled",
            ]
            .contains(&s)
        {
            return Err(bad(format!("state {s:?}: not a task state")));
        }
        let before = match p.get("before").filter(|s| !s.is_empty()) {
            Some(b) => Some(task_id(b)?),
            None => None,
        };
        let limit = match p.get("limit").filter(|s| !s.is_empty()) {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| bad(format!("limit {l:?}: expected a number")))?
                .clamp(1, 1000),
            None => 50,
        };
        let rows = exec::taskdb::list(ex.engine.pool(), state, before, limit)
            .await
            .map_err(db_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (t, counts) in rows {
            if require_task(&st, ex, &caller, t.id, inventory::Role::Read)
                .await
                .is_err()
            {
                continue;
            }
            let spec = spec_of_row(&t)?;
            let total: i64 = counts.iter().map(|(_, n)| n).sum();
            let counts: BTreeMap<String, i64> = counts.into_iter().collect();
            out.push(summary_json(&t, &spec, json!(counts), total));
        }
        Ok::<_, ApiError>(success(json!({"tasks": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// Concatenates a host's chunks per stream; a gap (chunks lost on the way) is marked.
fn streams(chunks: Vec<(String, i64, Vec<u8>)>) -> (String, String) {
    let mut out = [Vec::new(), Vec::new()];
    let mut next = [0i64, 0i64];
    for (stream, offset, data) in chunks {
        let k = usize::from(stream == "stderr");
        if offset > next[k] {
            out[k].extend_from_slice(
                format!("\n[... {} bytes missing ...]\n", offset - next[k]).as_bytes(),
            );
        }
        out[k].extend_from_slice(&data);
        next[k] = offset + data.len() as i64;
    }
    let [o, e] = out;
    (
        String::from_utf8_lossy(&o).into_owned(),
        String::from_utf8_lossy(&e).into_owned(),
    )
}

/// Most output one `output` answer carries over all its hosts.
const MAX_OUTPUT_ANSWER: i64 = 64 << 20;

/// `GET /api/ops/v1/tasks/{id}/output[?host=NAME][&state=S]`: each host's stdout and
/// stderr (so far, while it runs).
pub async fn output(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let id = task_id(&id)?;
        require_task(&st, ex, &caller, id, inventory::Role::Read).await?;
        let pool = ex.engine.pool();
        if exec::taskdb::task(pool, id)
            .await
            .map_err(db_error)?
            .is_none()
        {
            return Err(ApiError::with_status(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no task {id}"),
            ));
        }
        let p = Params::parse(q.as_deref(), &[]);
        let want_host = p.get("host").filter(|s| !s.is_empty());
        let want_state = p.get("state").filter(|s| !s.is_empty());
        if let Some(s) = want_state
            && HostState::parse(s).is_none()
        {
            return Err(bad(format!("state {s:?}: not a host state")));
        }
        let hosts = match want_host {
            Some(h) => exec::taskdb::host_by_name(pool, id, h)
                .await
                .map_err(db_error)?
                .map(|r| vec![r])
                .ok_or_else(|| {
                    ApiError::with_status(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("host {h} is not part of task {id}"),
                    )
                })?,
            None => exec::taskdb::hosts(pool, id).await.map_err(db_error)?,
        };
        let mut out = Vec::new();
        let mut total = 0i64;
        let mut omitted = 0usize;
        for h in &hosts {
            if want_host.is_some_and(|w| w != h.hostname)
                || want_state.is_some_and(|s| s != h.state)
            {
                continue;
            }
            if total + h.out_bytes > MAX_OUTPUT_ANSWER {
                omitted += 1;
                continue;
            }
            total += h.out_bytes;
            let chunks = exec::taskdb::output(pool, id, h.idx, h.attempt)
                .await
                .map_err(db_error)?;
            let (stdout, stderr) = streams(chunks);
            out.push(json!({
                "hostname": h.hostname,
                "state": h.state,
                "exit_code": h.exit_code,
                "error": h.error,
                "truncated": h.truncated,
                "stdout": stdout,
                "stderr": stderr,
            }));
        }
        Ok::<_, ApiError>(success(json!({"hosts": out, "omitted": omitted})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

async fn act(st: Arc<AppState>, caller: inventory::TokenInfo, id: String, what: &str) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let id = task_id(&id)?;
        require_task(&st, ex, &caller, id, inventory::Role::Run).await?;
        let who = actor(&caller);
        match what {
            "pause" => ex.engine.pause(id, &who).await,
            "resume" => ex.engine.resume(id, &who).await,
            _ => ex.engine.cancel(id, &who).await,
        }
        .map_err(engine_error)?;
        task_json(ex, id, false).await.map(success)
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `POST /api/ops/v1/tasks/{id}/pause`.
pub async fn pause(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(id): Path<String>,
) -> Response {
    act(st, caller, id, "pause").await
}

/// `POST /api/ops/v1/tasks/{id}/resume`.
pub async fn resume(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(id): Path<String>,
) -> Response {
    act(st, caller, id, "resume").await
}

/// `POST /api/ops/v1/tasks/{id}/cancel`: skips what has not started, kills what runs.
pub async fn cancel(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(id): Path<String>,
) -> Response {
    act(st, caller, id, "cancel").await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryReq {
    /// Host states to run again; `all` for every host. Default: every failure state.
    #[serde(default)]
    states: Vec<String>,
}

/// The host states `retry` takes by default.
const RETRY_DEFAULT: [&str; 5] = ["failed", "timed_out", "killed", "agent_lost", "interrupted"];

/// `POST /api/ops/v1/tasks/{id}/retry` `{"states": ["failed", "agent_lost"]}`: a new
/// task with the original script, parameters and settings, on the hosts of a finished
/// task that ended in those states.
pub async fn retry(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let id = task_id(&id)?;
        require_task(&st, ex, &caller, id, inventory::Role::Run).await?;
        let req: RetryReq = if body.iter().all(u8::is_ascii_whitespace) {
            RetryReq { states: Vec::new() }
        } else {
            serde_json::from_slice(&body).map_err(|e| bad(format!("request body: {e}")))?
        };
        let pool = ex.engine.pool();
        let t = exec::taskdb::task(pool, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                ApiError::with_status(StatusCode::NOT_FOUND, "not_found", format!("no task {id}"))
            })?;
        if t.finished_at.is_none() {
            return Err(ApiError::with_status(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "task {id} is {}; retry a finished task (or resume or cancel this one)",
                    t.state
                ),
            ));
        }
        let states: Vec<String> = if req.states.is_empty() {
            RETRY_DEFAULT.iter().map(|s| s.to_string()).collect()
        } else {
            req.states
        };
        let all = states.iter().any(|s| s == "all");
        for s in &states {
            if s != "all" && HostState::parse(s).is_none_or(|h| !h.done()) {
                return Err(bad(format!(
                    "state {s:?}: expected all or a final host state (failed, timed_out, killed, agent_lost, interrupted, skipped, succeeded)"
                )));
            }
        }
        let hosts: Vec<(HostId, String)> = exec::taskdb::hosts(pool, id)
            .await
            .map_err(db_error)?
            .into_iter()
            .filter(|h| all || states.contains(&h.state))
            .filter_map(|h| u64::try_from(h.host).ok().map(|id| (id, h.hostname)))
            .collect();
        if hosts.is_empty() {
            return Err(bad(format!(
                "task {id} has no host in {}: nothing to run again",
                states.join(", ")
            )));
        }
        let mut spec = spec_of_row(&t)?;
        spec.retry_of = Some(id);
        let new = ex
            .engine
            .create(NewTask {
                spec,
                hosts,
                creator: actor(&caller),
            })
            .await
            .map_err(engine_error)?;
        task_json(ex, new, false).await.map(success)
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/recipes`: the library, without scripts.
pub async fn recipes(State(st): State<Arc<AppState>>) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let mut out: Vec<Value> = ex.shipped.iter().map(|r| r.to_json(false)).collect();
        for versions in ex.user.read().values() {
            if let Some(r) = versions.last() {
                let mut v = r.to_json(false);
                v["versions"] = json!(versions.iter().map(|r| r.version).collect::<Vec<_>>());
                out.push(v);
            }
        }
        Ok::<_, ApiError>(success(json!({"recipes": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/recipes/{name}[@version]`: one recipe with its script.
pub async fn recipe(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        Ok::<_, ApiError>(success(ex.recipe(&name)?.to_json(true)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `POST /api/ops/v1/recipes` (admin): a user recipe, or a new version of one.
pub async fn add_recipe(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        crate::opsapi::require_admin(&caller, "adding a recipe")?;
        let ex = exec_of(&st)?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("request body: {e}")))?;
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if ex.shipped.iter().any(|r| r.name == name) {
            return Err(ApiError::with_status(
                StatusCode::CONFLICT,
                "conflict",
                format!("{name} is a shipped recipe; choose another name"),
            ));
        }
        let version = ex
            .user
            .read()
            .get(&name)
            .and_then(|v| v.last())
            .map_or(1, |r| r.version + 1);
        let recipe = exec::recipe::from_json(&v, version).map_err(|e| bad(e.to_string()))?;
        debug_assert!(matches!(recipe.origin, Origin::User));
        let body = recipe.to_json(true);
        let audit = exec::audit::NewEntry {
            actor: actor(&caller),
            action: "recipe.add".into(),
            task: None,
            detail: body.clone(),
        };
        exec::taskdb::add_recipe(
            ex.engine.pool(),
            tsdb::now_ms(),
            &recipe.name,
            i64::from(version),
            &actor(&caller),
            &body.to_string(),
            audit,
        )
        .await
        .map_err(|e| match e {
            exec::taskdb::DbError::Db(sqlx_err) if sqlx_err.to_string().contains("UNIQUE") => {
                ApiError::with_status(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("recipe {name} was changed meanwhile; send it again"),
                )
            }
            other => db_error(other),
        })?;
        ex.user
            .write()
            .entry(recipe.name.clone())
            .or_default()
            .push(recipe.clone());
        Ok::<_, ApiError>(success(recipe.to_json(false)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/audit[?task=ID&actor=A&action=X&after=SEQ&since=MS&limit=N]`: the
/// first `limit` matching entries (1000), or with `last=N` the newest N; in seq order.
pub async fn audit(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        let p = Params::parse(q.as_deref(), &[]);
        let num = |k: &str| -> Result<Option<i64>, ApiError> {
            match p.get(k).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => s
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| bad(format!("{k} {s:?}: expected a number"))),
            }
        };
        let filter = exec::audit::Filter {
            task: num("task")?,
            actor: p.get("actor").filter(|s| !s.is_empty()).map(str::to_string),
            action: p
                .get("action")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            after_seq: num("after")?,
            since_ms: num("since")?,
            limit: num("limit")?.map_or(1000, |l| usize::try_from(l.max(1)).unwrap_or(1000)),
            newest: false,
        };
        // `last=N`: the newest N matching entries (in seq order).
        let filter = match num("last")? {
            Some(n) => exec::audit::Filter {
                limit: usize::try_from(n.max(1)).unwrap_or(1000),
                newest: true,
                ..filter
            },
            None => filter,
        };
        let entries = exec::audit::list(ex.engine.pool(), &filter)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok::<_, ApiError>(success(json!({"entries": entries})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/audit/verify`: walks the hash chain; 200 with the count and head,
/// or 409 naming the first entry that does not match.
pub async fn verify_audit(State(st): State<Arc<AppState>>) -> Response {
    let run = async {
        let ex = exec_of(&st)?;
        match exec::audit::verify(ex.engine.pool())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            Ok(v) => {
                if let Some((seen, at)) = witnessed(&st).await?
                    && seen > v.entries
                {
                    return Err(ApiError::with_status(
                        StatusCode::CONFLICT,
                        "tampered",
                        format!(
                            "the audit log ends at entry {}, but {seen} entries were \
                             recorded at {}: entries were removed from its end",
                            v.entries,
                            crate::status::format_rfc3339(at)
                        ),
                    ));
                }
                Ok(success(
                    json!({"ok": true, "entries": v.entries, "head": v.head}),
                ))
            }
            Err(b) => Err(ApiError::with_status(
                StatusCode::CONFLICT,
                "tampered",
                format!("audit entry {}: {}", b.seq, b.why),
            )),
        }
    };
    run.await.unwrap_or_else(|e: ApiError| e.into_response())
}

/// The series that keeps the audit log's length in the TSDB, a second place to compare
/// with: removing entries from the end of the log leaves a valid chain, but not this.
const AUDIT_WITNESS: &str = "minos_audit_entries";

/// The most entries the TSDB ever saw in the audit log (within its retention), and when.
async fn witnessed(st: &AppState) -> Result<Option<(i64, i64)>, ApiError> {
    let db = st.db()?.clone();
    let ms = [tsdb::Matcher::eq(tsdb::labels::METRIC_NAME, AUDIT_WITNESS)];
    let got = crate::api::blocking(move || {
        db.select(&ms, 0, tsdb::now_ms())
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    Ok(got
        .iter()
        .flat_map(|s| s.samples.iter())
        .filter(|smp| smp.v.is_finite())
        .max_by(|a, b| a.v.total_cmp(&b.v).then(b.t.cmp(&a.t)))
        .map(|smp| (smp.v as i64, smp.t)))
}

/// Writes the audit log's length into the TSDB as `minos_audit_entries`: when it
/// changes (checked every second) and at least every minute, once the log has an
/// entry. Runs until aborted.
pub async fn audit_witness(st: Arc<AppState>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(i64, std::time::Instant)> = None;
    loop {
        every.tick().await;
        let (Some(ex), Ok(db)) = (st.tasks(), st.db()) else {
            continue;
        };
        let n = match exec::audit::count(ex.engine.pool()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("audit witness: {e}");
                continue;
            }
        };
        // An empty log has nothing to protect, and leaves the TSDB empty.
        if n == 0
            || last
                .is_some_and(|(v, at)| v == n && at.elapsed() < std::time::Duration::from_secs(60))
        {
            continue;
        }
        let db = db.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let labels = [(tsdb::labels::METRIC_NAME, AUDIT_WITNESS)];
            let sample = [tsdb::Sample {
                t: tsdb::now_ms(),
                v: n as f64,
            }];
            db.append([(&labels[..], &sample[..])])
        })
        .await;
        match stored {
            Ok(Ok(_)) => last = Some((n, std::time::Instant::now())),
            Ok(Err(e)) => tracing::warn!("audit witness: {e}"),
            Err(e) => tracing::warn!("audit witness: {e}"),
        }
    }
}
