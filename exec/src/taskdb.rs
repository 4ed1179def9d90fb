//! The task database: tasks, their hosts and their output, in SQLite (`<data>/exec.db`).
//!
//! The engine ([`crate::engine`]) keeps the tasks that are not finished in memory and
//! writes every change here in batches, one transaction each; everything the API reads
//! comes from here. The audit trail ([`crate::audit`]) and user recipes live in the same
//! file, so a task's state, its output and its audit entries commit together.
//!
//! # Schema (version 1)
//! ```text
//! schema_version(version)                       one row
//! tasks(id PK, created_at, creator,             times: Unix ms; creator: token name
//!       spec,                                   JSON of engine::TaskSpec (script included)
//!       script_sha256,                          hex SHA-256 of the script text
//!       state, reason,                          pending | running | paused | succeeded |
//!                                               failed | cancelled; reason: text or ''
//!       batch, gate_pending,                    the scheduler's position (sched::Sched)
//!       updated_at, finished_at NULL)
//! task_hosts(task, idx, host, hostname,         PK (task, idx); idx: position in the
//!       attempt, state,                         resolved host list; state: sched::HostState
//!       exit_code NULL, signal NULL,
//!       started_ms NULL, duration_ms NULL,      as the agent reported them
//!       error NULL, truncated, out_bytes,       output kept (bytes); truncated: 0 | 1
//!       updated_at)
//! task_output(task, idx, attempt, stream,       PK (task, idx, attempt, stream, offset);
//!       offset, data)                           stream: stdout | stderr; offset: of the
//!                                               chunk in its stream; data: BLOB
//! recipes(name, version, created_at, creator,   user recipes; PK (name, version); body:
//!       body)                                   the JSON the user sent
//! ```

use std::path::Path;

// The dynamic statements splice in only the constant column lists and `$n`
// placeholders: values are always bound.
use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqlitePool;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tasks (id BIGINT PRIMARY KEY, created_at BIGINT NOT NULL, \
     creator TEXT NOT NULL, spec TEXT NOT NULL, script_sha256 TEXT NOT NULL, \
     state TEXT NOT NULL, reason TEXT NOT NULL, batch BIGINT NOT NULL, \
     gate_pending BIGINT NOT NULL, updated_at BIGINT NOT NULL, finished_at BIGINT NULL)",
    "CREATE TABLE IF NOT EXISTS task_hosts (task BIGINT NOT NULL, idx BIGINT NOT NULL, \
     host BIGINT NOT NULL, hostname TEXT NOT NULL, attempt BIGINT NOT NULL, \
     state TEXT NOT NULL, exit_code BIGINT NULL, signal BIGINT NULL, \
     started_ms BIGINT NULL, duration_ms BIGINT NULL, error TEXT NULL, \
     truncated BIGINT NOT NULL, out_bytes BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
     PRIMARY KEY (task, idx))",
    "CREATE TABLE IF NOT EXISTS task_output (task BIGINT NOT NULL, idx BIGINT NOT NULL, \
     attempt BIGINT NOT NULL, stream TEXT NOT NULL, offset BIGINT NOT NULL, \
     data BLOB NOT NULL, PRIMARY KEY (task, idx, attempt, stream, offset))",
    "CREATE TABLE IF NOT EXISTS recipes (name TEXT NOT NULL, version BIGINT NOT NULL, \
     created_at BIGINT NOT NULL, creator TEXT NOT NULL, body TEXT NOT NULL, \
     PRIMARY KEY (name, version))",
    "CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks (finished_at)",
];

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("task database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("task database: {0}")]
    Invalid(String),
    #[error("task database: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Opens (creating if missing) the database at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, DbError> {
    // A result acknowledged to an agent survives a power cut.
    let pool = sqlstore::open(path, &SCHEMA, SCHEMA_VERSION)
        .await
        .map_err(|e| match e {
            sqlstore::OpenError::Db(e) => DbError::from(e),
            sqlstore::OpenError::Schema(m) => DbError::Invalid(m),
        })?;
    crate::audit::init(&pool).await?;
    Ok(pool)
}

/// A task row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: i64,
    pub created_at: i64,
    pub creator: String,
    pub spec: String,
    pub script_sha256: String,
    pub state: String,
    pub reason: String,
    pub batch: i64,
    pub gate_pending: bool,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// A row of `task_hosts`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub task: i64,
    pub idx: i64,
    pub host: i64,
    pub hostname: String,
    pub attempt: i64,
    pub state: String,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub started_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub truncated: bool,
    pub out_bytes: i64,
    pub updated_at: i64,
}

/// A chunk of output.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub task: i64,
    pub idx: i64,
    pub attempt: i64,
    pub stream: &'static str,
    pub offset: i64,
    pub data: Vec<u8>,
}

/// Everything one transaction writes.
#[derive(Debug, Default)]
pub struct Write {
    pub tasks: Vec<TaskRow>,
    pub hosts: Vec<HostRow>,
    pub output: Vec<Chunk>,
    pub audit: Vec<crate::audit::NewEntry>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.hosts.is_empty()
            && self.output.is_empty()
            && self.audit.is_empty()
    }
}

type TaskTuple = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
);

const TASK_COLS: &str = "id, created_at, creator, spec, script_sha256, state, reason, batch, \
                         gate_pending, updated_at, finished_at";

fn task_row(t: TaskTuple) -> TaskRow {
    TaskRow {
        id: t.0,
        created_at: t.1,
        creator: t.2,
        spec: t.3,
        script_sha256: t.4,
        state: t.5,
        reason: t.6,
        batch: t.7,
        gate_pending: t.8 != 0,
        updated_at: t.9,
        finished_at: t.10,
    }
}

type HostTuple = (
    i64,
    i64,
    i64,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    i64,
);

const HOST_COLS: &str = "task, idx, host, hostname, attempt, state, exit_code, signal, \
                         started_ms, duration_ms, error, truncated, out_bytes, updated_at";

fn host_row(t: HostTuple) -> HostRow {
    HostRow {
        task: t.0,
        idx: t.1,
        host: t.2,
        hostname: t.3,
        attempt: t.4,
        state: t.5,
        exit_code: t.6,
        signal: t.7,
        started_ms: t.8,
        duration_ms: t.9,
        error: t.10,
        truncated: t.11 != 0,
        out_bytes: t.12,
        updated_at: t.13,
    }
}

/// Rows per multi-row statement (SQLite allows 32,766 bound values).
const ROWS_PER_STATEMENT: usize = 500;

/// Writes `w` in one transaction: task and host rows replace what was there, output
/// chunks already stored are kept (a replayed chunk changes nothing), audit entries are
/// chained.
pub async fn write(pool: &SqlitePool, at: i64, w: &Write) -> Result<(), DbError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for t in &w.tasks {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT OR REPLACE INTO tasks ({TASK_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(t.id)
        .bind(t.created_at)
        .bind(&t.creator)
        .bind(&t.spec)
        .bind(&t.script_sha256)
        .bind(&t.state)
        .bind(&t.reason)
        .bind(t.batch)
        .bind(i64::from(t.gate_pending))
        .bind(t.updated_at)
        .bind(t.finished_at)
        .execute(&mut *tx)
        .await?;
    }
    for rows in w.hosts.chunks(ROWS_PER_STATEMENT) {
        let mut sql = format!("INSERT OR REPLACE INTO task_hosts ({HOST_COLS}) VALUES ");
        // Anonymous placeholders: SQLite binds them by position, where numbered ones
        // cost a lookup by name per value (quadratic in a statement of 7,000 values).
        for i in 0..rows.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for h in rows {
            q = q
                .bind(h.task)
                .bind(h.idx)
                .bind(h.host)
                .bind(&h.hostname)
                .bind(h.attempt)
                .bind(&h.state)
                .bind(h.exit_code)
                .bind(h.signal)
                .bind(h.started_ms)
                .bind(h.duration_ms)
                .bind(&h.error)
                .bind(i64::from(h.truncated))
                .bind(h.out_bytes)
                .bind(h.updated_at);
        }
        q.execute(&mut *tx).await?;
    }
    for c in &w.output {
        sqlx::query(
            "INSERT OR IGNORE INTO task_output (task, idx, attempt, stream, offset, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(c.task)
        .bind(c.idx)
        .bind(c.attempt)
        .bind(c.stream)
        .bind(c.offset)
        .bind(&c.data)
        .execute(&mut *tx)
        .await?;
    }
    if !w.audit.is_empty() {
        crate::audit::append(&mut tx, at, w.audit.clone()).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The next task id.
pub async fn next_task_id(pool: &SqlitePool) -> Result<i64, DbError> {
    let (max,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM tasks")
        .fetch_one(pool)
        .await?;
    Ok(max.unwrap_or(0) + 1)
}

/// Tasks not finished, with their hosts, in id order.
pub async fn unfinished(pool: &SqlitePool) -> Result<Vec<(TaskRow, Vec<HostRow>)>, DbError> {
    let tasks: Vec<TaskTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TASK_COLS} FROM tasks WHERE finished_at IS NULL ORDER BY id"
    )))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let hosts = hosts(pool, t.0).await?;
        out.push((task_row(t), hosts));
    }
    Ok(out)
}

/// One task.
pub async fn task(pool: &SqlitePool, id: i64) -> Result<Option<TaskRow>, DbError> {
    let t: Option<TaskTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TASK_COLS} FROM tasks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(t.map(task_row))
}

/// A task's hosts, in index order.
pub async fn hosts(pool: &SqlitePool, task: i64) -> Result<Vec<HostRow>, DbError> {
    let rows: Vec<HostTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {HOST_COLS} FROM task_hosts WHERE task = $1 ORDER BY idx"
    )))
    .bind(task)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(host_row).collect())
}

/// One host of a task, by name.
pub async fn host_by_name(
    pool: &SqlitePool,
    task: i64,
    hostname: &str,
) -> Result<Option<HostRow>, DbError> {
    let row: Option<HostTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {HOST_COLS} FROM task_hosts WHERE task = $1 AND hostname = $2"
    )))
    .bind(task)
    .bind(hostname)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(host_row))
}

/// The newest tasks first (ids below `before` if given), at most `limit`, with the
/// number of hosts in each state.
pub async fn list(
    pool: &SqlitePool,
    state: Option<&str>,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<(TaskRow, Vec<(String, i64)>)>, DbError> {
    let tasks: Vec<TaskTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TASK_COLS} FROM tasks WHERE ($1 IS NULL OR state = $1) \
         AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(state)
    .bind(before)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM task_hosts WHERE task = $1 GROUP BY state ORDER BY state",
        )
        .bind(t.0)
        .fetch_all(pool)
        .await?;
        out.push((task_row(t), counts));
    }
    Ok(out)
}

/// A host's output chunks of one attempt, per stream in offset order.
pub async fn output(
    pool: &SqlitePool,
    task: i64,
    idx: i64,
    attempt: i64,
) -> Result<Vec<(String, i64, Vec<u8>)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT stream, offset, data FROM task_output \
         WHERE task = $1 AND idx = $2 AND attempt = $3 ORDER BY stream, offset",
    )
    .bind(task)
    .bind(idx)
    .bind(attempt)
    .fetch_all(pool)
    .await?)
}

/// Where each stream's stored output of a task ends, per host and attempt: (idx,
/// attempt, stream, end offset).
pub async fn output_ends(
    pool: &SqlitePool,
    task: i64,
) -> Result<Vec<(i64, i64, String, i64)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT idx, attempt, stream, MAX(offset + length(data)) FROM task_output \
         WHERE task = $1 GROUP BY idx, attempt, stream",
    )
    .bind(task)
    .fetch_all(pool)
    .await?)
}

/// Every version of the user recipes, oldest first: (name, version, created_at,
/// creator, body).
pub async fn recipes(
    pool: &SqlitePool,
) -> Result<Vec<(String, i64, i64, String, String)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT name, version, created_at, creator, body FROM recipes ORDER BY name, version",
    )
    .fetch_all(pool)
    .await?)
}

/// Stores a new version of a user recipe, with its audit entry, in one transaction.
pub async fn add_recipe(
    pool: &SqlitePool,
    at: i64,
    name: &str,
    version: i64,
    creator: &str,
    body: &str,
    audit: crate::audit::NewEntry,
) -> Result<(), DbError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "INSERT INTO recipes (name, version, created_at, creator, body) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(version)
    .bind(at)
    .bind(creator)
    .bind(body)
    .execute(&mut *tx)
    .await?;
    crate::audit::append(&mut tx, at, vec![audit]).await?;
    tx.commit().await?;
    Ok(())
}
