//! The audit trail: an append-only log of every mutating action and every task (who,
//! when, the script and its hash, the resolved targets, each host's result), chained by
//! SHA-256 so that a rewritten, inserted or removed entry is found by [`verify`].
//!
//! The log is the table `audit` in the exec database; the caller owns the pool. Entries
//! are appended inside the caller's write transaction ([`append`]), so an action and its
//! audit entries are committed together or not at all. This module knows nothing about
//! tasks, tokens or HTTP: `actor`, `action` and `detail` are whatever the caller records.
//!
//! # Table
//! ```text
//! audit(seq BIGINT PRIMARY KEY,   1, 2, 3, ... without gaps
//!       at BIGINT NOT NULL,       Unix ms, taken by the writer
//!       actor TEXT NOT NULL,      who: a token's name, "system", "agent:<hostname>"
//!       action TEXT NOT NULL,     task.create, task.pause, host.result, recipe.add, ...
//!       task BIGINT NULL,         the task's id, if any
//!       detail TEXT NOT NULL,     JSON (an object by convention), compact, as given
//!       prev TEXT NOT NULL,       `hash` of entry seq - 1; 64 '0's for seq 1
//!       hash TEXT NOT NULL)       lowercase hex SHA-256 of the encoding below
//! index audit_task(task, seq)
//! ```
//! Triggers refuse every `UPDATE` and `DELETE` (`audit log is append-only`), and every
//! `INSERT` whose `seq` is not the last one plus 1 (which also stops an `INSERT OR
//! REPLACE` from overwriting an entry without a `DELETE`). They guard against the
//! application's own mistakes only: whoever edits the file by hand can drop them, and the
//! chain is what finds that.
//!
//! # Hash encoding (version 1)
//! `hash` is the lowercase hex SHA-256 of the concatenation of eight fields, each written
//! as its length in bytes (`u64`, 8 bytes, little-endian) followed by its bytes:
//! ```text
//! 1. the tag "minos-audit-v1"            (14 bytes of ASCII)
//! 2. seq                                 decimal ASCII, as Rust prints an i64: an
//! 3. at                                    optional '-', no '+', no leading zeros
//! 4. actor                               UTF-8, exactly as stored
//! 5. action                              UTF-8, exactly as stored
//! 6. task                                decimal ASCII as for seq; empty (length 0) if NULL
//! 7. detail                              UTF-8, the stored text itself (never re-serialized)
//! 8. prev                                the 64 ASCII hex digits as stored
//! ```
//! For example seq 1, at 1700000000000, actor `admin`, action `task.create`, task 7,
//! detail `{"script":"uptime"}` and prev 64 '0's hash to
//! `9d20b59695fdebbe12b60cfddf132db34e7ad64e6c4dd983509f71228ee29e4b`; the bytes start
//! `0e 00 00 00 00 00 00 00 'm' 'i' 'n' 'o' 's' ... 01 00 00 00 00 00 00 00 '1' 0d 00 ...`.
//! The length prefixes make the encoding unambiguous (no two different entries give the
//! same bytes, whatever their text contains). The tag is not in the table: it names the
//! encoding, so that a future version 2 cannot produce the hash of a version 1 entry.
//!
//! # What verification proves
//! [`verify`] recomputes the chain from seq 1: a changed field, a removed or inserted
//! entry in the middle, or a re-hashed entry (its successor's `prev` no longer matches)
//! is reported with the first seq where the chain breaks. Removing entries at the *end*
//! leaves a shorter valid chain; that is found only by comparing [`Verified::head`] (or
//! the count, [`count`]) with a copy kept elsewhere: the server keeps the count as the
//! series `minos_audit_entries` in its TSDB and compares at every verification, and an
//! earlier `minos audit verify` output can be kept elsewhere too.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection, SqlitePool};

/// The `prev` of the first entry, and the head of an empty log: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The most entries [`list`] returns at once.
pub const MAX_LIMIT: usize = 10_000;

/// Names the hash encoding (field 1); see the module doc.
const ENCODING_TAG: &[u8] = b"minos-audit-v1";

/// Rows per `INSERT`: 8 parameters each keeps a statement at 4,000 parameters, well under
/// SQLite's limit (32,766).
const INSERT_ROWS: usize = 500;

/// Rows [`verify`] holds in memory at a time.
const VERIFY_PAGE: i64 = 1_000;

const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS audit (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, \
     actor TEXT NOT NULL, action TEXT NOT NULL, task BIGINT NULL, detail TEXT NOT NULL, \
     prev TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_task ON audit (task, seq)",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit \
     BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit \
     BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_next_seq BEFORE INSERT ON audit \
     WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit) \
     BEGIN SELECT RAISE(ABORT, 'audit log is append-only: seq must follow the last entry'); END",
];

const COLUMNS: &str = "seq, at, actor, action, task, detail, prev, hash";

/// An entry to append; [`append`] gives it its seq, time and hashes.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Who: a token's name, `"system"`, `"agent:<hostname>"`.
    pub actor: String,
    /// What, as `noun.verb`: `task.create`, `host.result`, `recipe.add`, ...
    pub action: String,
    /// The task it concerns, if any.
    pub task: Option<i64>,
    /// The particulars (script, its hash, targets, a host's result); an object by
    /// convention. Stored compact, as given.
    pub detail: serde_json::Value,
}

/// An entry of the log, as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub task: Option<i64>,
    pub detail: serde_json::Value,
    /// The hash of entry `seq - 1` ([`GENESIS`] for seq 1).
    pub prev: String,
    /// The hash of this entry (see the module doc for the encoding).
    pub hash: String,
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed (or refused, e.g. a trigger); the caller's transaction should
    /// be rolled back.
    #[error("audit log: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored entry cannot be read as an entry; [`verify`] says more.
    #[error("audit log: {0}")]
    Corrupt(String),
}

/// Which entries [`list`] returns; the conditions that are set must all hold.
#[derive(Debug, Clone)]
pub struct Filter {
    pub task: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Only entries with a greater seq (to page on, or to follow the log).
    pub after_seq: Option<i64>,
    /// Only entries at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// The most entries to return; capped at [`MAX_LIMIT`].
    pub limit: usize,
    /// The last `limit` matching entries rather than the first (still in seq order).
    pub newest: bool,
}

impl Default for Filter {
    /// Every entry, up to [`MAX_LIMIT`].
    fn default() -> Filter {
        Filter {
            task: None,
            actor: None,
            action: None,
            after_seq: None,
            since_ms: None,
            limit: MAX_LIMIT,
            newest: false,
        }
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// How many entries (the last seq).
    pub entries: i64,
    /// The hash of the last entry, or [`GENESIS`] for an empty log. Keep it elsewhere to
    /// detect a truncated tail later.
    pub head: String,
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    /// The first seq that does not verify (a missing seq is named itself).
    pub seq: i64,
    pub why: String,
}

/// Creates the table, its index and its triggers if missing (idempotent).
pub async fn init(pool: &SqlitePool) -> Result<(), AuditError> {
    let mut tx = pool.begin().await?;
    for stmt in SCHEMA {
        sqlx::query(stmt).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Appends `entries`, all stamped `at`, inside the caller's transaction and returns them
/// as stored.
///
/// The transaction must be a write transaction (begun with `BEGIN IMMEDIATE`, e.g.
/// `pool.begin_with("BEGIN IMMEDIATE")`), so that reading the chain's tail and inserting
/// after it cannot race another writer. If the caller rolls back, nothing was appended.
/// On a connection outside any transaction, `append` wraps itself in one.
pub async fn append(
    conn: &mut SqliteConnection,
    at: i64,
    entries: Vec<NewEntry>,
) -> Result<Vec<Entry>, AuditError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if conn.is_in_transaction() {
        return append_in(conn, at, entries).await;
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let out = append_in(&mut tx, at, entries).await?;
    tx.commit().await?;
    Ok(out)
}

/// Appends `entries` in a transaction of their own, stamped with the current time.
pub async fn append_now(
    pool: &SqlitePool,
    entries: Vec<NewEntry>,
) -> Result<Vec<Entry>, AuditError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // Taken while holding the write lock, so `at` follows seq whenever the clock does.
    let at = now_ms();
    let out = append_in(&mut tx, at, entries).await?;
    tx.commit().await?;
    Ok(out)
}

/// [`append`]'s work; `conn` is in a write transaction.
async fn append_in(
    conn: &mut SqliteConnection,
    at: i64,
    entries: Vec<NewEntry>,
) -> Result<Vec<Entry>, AuditError> {
    let tail: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let (mut seq, mut prev) = match tail {
        None => (0, GENESIS.to_string()),
        Some((s, h)) if s >= 1 && is_hash(&h) => (s, h),
        Some((s, _)) => {
            return Err(AuditError::Corrupt(format!(
                "entry {s}: the last entry is malformed; nothing can be chained to it"
            )));
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut texts = Vec::with_capacity(entries.len());
    for e in entries {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| AuditError::Corrupt("the log is out of seq numbers".into()))?;
        let detail = e.detail.to_string();
        let hash = entry_hash(seq, at, &e.actor, &e.action, e.task, &detail, &prev);
        out.push(Entry {
            seq,
            at,
            actor: e.actor,
            action: e.action,
            task: e.task,
            detail: e.detail,
            prev: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
        texts.push(detail);
    }
    for (rows, details) in out.chunks(INSERT_ROWS).zip(texts.chunks(INSERT_ROWS)) {
        let mut sql = format!("INSERT INTO audit ({COLUMNS}) VALUES ");
        for i in 0..rows.len() {
            let sep = if i == 0 { "" } else { ", " };
            // Anonymous placeholders: SQLite binds them by position, where numbered
            // ones cost a lookup by name per value (quadratic in a long statement).
            let _ = write!(sql, "{sep}(?, ?, ?, ?, ?, ?, ?, ?)");
        }
        // Only placeholders are formatted into the statement; every value is bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (e, detail) in rows.iter().zip(details) {
            q = q
                .bind(e.seq)
                .bind(e.at)
                .bind(e.actor.as_str())
                .bind(e.action.as_str())
                .bind(e.task)
                .bind(detail.as_str())
                .bind(e.prev.as_str())
                .bind(e.hash.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(out)
}

/// A condition's value in [`list`].
enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

type EntryRow = (
    i64,
    i64,
    String,
    String,
    Option<i64>,
    String,
    String,
    String,
);

/// The entries matching `f`, in seq order, at most `f.limit` (capped at [`MAX_LIMIT`]).
pub async fn list(pool: &SqlitePool, f: &Filter) -> Result<Vec<Entry>, AuditError> {
    let limit = f.limit.min(MAX_LIMIT);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut conds: Vec<(&str, Arg<'_>)> = Vec::new();
    if let Some(t) = f.task {
        conds.push(("task =", Arg::Int(t)));
    }
    if let Some(a) = &f.actor {
        conds.push(("actor =", Arg::Text(a)));
    }
    if let Some(a) = &f.action {
        conds.push(("action =", Arg::Text(a)));
    }
    if let Some(s) = f.after_seq {
        conds.push(("seq >", Arg::Int(s)));
    }
    if let Some(t) = f.since_ms {
        conds.push(("at >=", Arg::Int(t)));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM audit");
    for (i, (cond, _)) in conds.iter().enumerate() {
        let join = if i == 0 { "WHERE" } else { "AND" };
        let _ = write!(sql, " {join} {cond} ${}", i + 1);
    }
    let order = if f.newest { "DESC" } else { "ASC" };
    let _ = write!(sql, " ORDER BY seq {order} LIMIT ${}", conds.len() + 1);
    // Only constant conditions and placeholders are formatted in; every value is bound.
    let mut q = sqlx::query_as::<_, EntryRow>(AssertSqlSafe(sql));
    for (_, arg) in &conds {
        q = match arg {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(s) => q.bind(*s),
        };
    }
    // At most MAX_LIMIT: fits an i64.
    let mut rows = q.bind(limit as i64).fetch_all(pool).await?;
    if f.newest {
        rows.reverse();
    }
    rows.into_iter()
        .map(|(seq, at, actor, action, task, detail, prev, hash)| {
            let detail = serde_json::from_str(&detail).map_err(|e| {
                AuditError::Corrupt(format!("entry {seq}: detail is not JSON: {e}"))
            })?;
            Ok(Entry {
                seq,
                at,
                actor,
                action,
                task,
                detail,
                prev,
                hash,
            })
        })
        .collect()
}

/// Walks the whole chain in seq order, 1,000 entries at a time inside one read
/// transaction (a consistent snapshot while others append), and recomputes every hash.
///
/// `Ok(Err(broken))` names the first seq that does not verify: a missing seq, a `prev`
/// that is not the previous entry's hash, a hash that does not match the entry, a
/// detail that is not JSON, a column of the wrong type. `Err` is for the database
/// failing.
/// The number of entries (the last seq; 0 for an empty log).
pub async fn count(pool: &SqlitePool) -> Result<i64, AuditError> {
    let row: (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM audit")
        .fetch_one(pool)
        .await?;
    Ok(row.0.unwrap_or(0))
}

pub async fn verify(pool: &SqlitePool) -> Result<Result<Verified, Broken>, AuditError> {
    let mut tx = pool.begin().await?;
    let mut next = 1i64;
    let mut prev = GENESIS.to_string();
    // The first page starts below 1 so that stray entries there are seen too.
    let mut from = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, task, detail, prev, hash FROM audit \
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(from)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        for row in rows {
            if let Err(broken) = check(&row, next, &mut prev) {
                tx.rollback().await?;
                return Ok(Err(broken));
            }
            next += 1;
        }
        if n < VERIFY_PAGE as usize {
            break;
        }
        from = next;
    }
    tx.rollback().await?;
    Ok(Ok(Verified {
        entries: next - 1,
        head: prev,
    }))
}

/// Checks one stored row against the chain so far: it must be entry `next`, chained to
/// `prev`; on success `prev` becomes its hash.
fn check(row: &sqlx::sqlite::SqliteRow, next: i64, prev: &mut String) -> Result<(), Broken> {
    let broken = |seq, why: String| Broken { seq, why };
    let seq: i64 = row
        .try_get("seq")
        .map_err(|e| broken(next, format!("seq is not an integer: {e}")))?;
    if seq > next {
        return Err(broken(
            next,
            format!("entry {next} is missing (the next is {seq})"),
        ));
    }
    if seq < next {
        return Err(broken(seq, format!("unexpected seq (expected {next})")));
    }
    let col = |name: &str, e: sqlx::Error| broken(seq, format!("column {name}: {e}"));
    let at: i64 = row.try_get("at").map_err(|e| col("at", e))?;
    let actor: String = row.try_get("actor").map_err(|e| col("actor", e))?;
    let action: String = row.try_get("action").map_err(|e| col("action", e))?;
    let task: Option<i64> = row.try_get("task").map_err(|e| col("task", e))?;
    let detail: String = row.try_get("detail").map_err(|e| col("detail", e))?;
    let stored_prev: String = row.try_get("prev").map_err(|e| col("prev", e))?;
    let hash: String = row.try_get("hash").map_err(|e| col("hash", e))?;
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&detail) {
        return Err(broken(seq, format!("detail is not JSON: {e}")));
    }
    if stored_prev != *prev {
        let why = if seq == 1 {
            "prev of the first entry is not 64 zeros".to_string()
        } else {
            format!("prev is not the hash of entry {}", seq - 1)
        };
        return Err(broken(seq, why));
    }
    let expected = entry_hash(seq, at, &actor, &action, task, &detail, &stored_prev);
    if hash != expected {
        return Err(broken(seq, "hash does not match the entry".to_string()));
    }
    *prev = hash;
    Ok(())
}

/// The hash of an entry: lowercase hex SHA-256 of the encoding in the module doc.
fn entry_hash(
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    task: Option<i64>,
    detail: &str,
    prev: &str,
) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(ENCODING_TAG);
    field(seq.to_string().as_bytes());
    field(at.to_string().as_bytes());
    field(actor.as_bytes());
    field(action.as_bytes());
    field(task.map(|t| t.to_string()).unwrap_or_default().as_bytes());
    field(detail.as_bytes());
    field(prev.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// 64 lowercase hex digits.
fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// A fresh exec database with the audit table, in a directory removed on drop.
    async fn db() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("exec.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .unwrap();
        init(&pool).await.unwrap();
        (dir, pool)
    }

    fn entry(actor: &str, action: &str, task: Option<i64>, detail: serde_json::Value) -> NewEntry {
        NewEntry {
            actor: actor.into(),
            action: action.into(),
            task,
            detail,
        }
    }

    /// `n` entries of task `task`, numbered in their detail.
    fn some(n: usize, task: i64) -> Vec<NewEntry> {
        (0..n)
            .map(|i| entry("admin", "host.result", Some(task), json!({"i": i})))
            .collect()
    }

    async fn exec(pool: &SqlitePool, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(pool).await.map(|_| ())
    }

    async fn drop_triggers(pool: &SqlitePool) {
        for t in ["audit_no_update", "audit_no_delete", "audit_next_seq"] {
            sqlx::query(AssertSqlSafe(format!("DROP TRIGGER {t}")))
                .execute(pool)
                .await
                .unwrap();
        }
    }

    async fn broken_at(pool: &SqlitePool) -> Broken {
        match verify(pool).await.unwrap() {
            Ok(v) => panic!("verified a tampered log: {v:?}"),
            Err(b) => b,
        }
    }

    #[test]
    fn hash_encoding_matches_the_documented_example() {
        assert_eq!(GENESIS.len(), 64);
        assert!(is_hash(GENESIS));
        let h = entry_hash(
            1,
            1_700_000_000_000,
            "admin",
            "task.create",
            Some(7),
            r#"{"script":"uptime"}"#,
            GENESIS,
        );
        assert_eq!(
            h,
            "9d20b59695fdebbe12b60cfddf132db34e7ad64e6c4dd983509f71228ee29e4b"
        );
        // Moving bytes between fields changes the hash.
        let a = entry_hash(1, 1, "ab", "c", None, "{}", GENESIS);
        let b = entry_hash(1, 1, "a", "bc", None, "{}", GENESIS);
        assert_ne!(a, b);
        // A null task is not task 0.
        assert_ne!(
            entry_hash(1, 1, "a", "b", None, "{}", GENESIS),
            entry_hash(1, 1, "a", "b", Some(0), "{}", GENESIS)
        );
    }

    #[tokio::test]
    async fn a_chain_of_entries_verifies() {
        let (_dir, pool) = db().await;
        init(&pool).await.unwrap(); // idempotent
        assert_eq!(
            verify(&pool).await.unwrap(),
            Ok(Verified {
                entries: 0,
                head: GENESIS.into()
            })
        );
        let first = append_now(
            &pool,
            vec![
                entry("admin", "task.create", Some(1), json!({"script": "uptime"})),
                entry("system", "task.finish", Some(1), json!({})),
            ],
        )
        .await
        .unwrap();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let second = append(
            &mut tx,
            42,
            vec![entry(
                "agent:web-01",
                "recipe.add",
                None,
                json!({"name": "x"}),
            )],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let all = list(&pool, &Filter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3],
            "seq has no gaps"
        );
        assert_eq!(all[0].prev, GENESIS);
        for w in all.windows(2) {
            assert_eq!(w[1].prev, w[0].hash);
        }
        // What append returned is what was stored.
        for (a, b) in first.iter().chain(&second).zip(&all) {
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::to_value(b).unwrap()
            );
        }
        assert_eq!(all[2].at, 42);
        assert_eq!(all[2].task, None);
        assert_eq!(
            verify(&pool).await.unwrap(),
            Ok(Verified {
                entries: 3,
                head: all[2].hash.clone()
            })
        );
    }

    #[tokio::test]
    async fn updates_and_deletes_are_refused() {
        let (_dir, pool) = db().await;
        append_now(&pool, some(3, 1)).await.unwrap();
        for sql in [
            "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
            "DELETE FROM audit WHERE seq = 3",
            "DELETE FROM audit",
            // Would replace entry 2 without a DELETE.
            "INSERT OR REPLACE INTO audit (seq, at, actor, action, task, detail, prev, hash) \
             VALUES (2, 0, 'mallory', 'x', NULL, '{}', '', '')",
            // Would leave a gap.
            "INSERT INTO audit (seq, at, actor, action, task, detail, prev, hash) \
             VALUES (9, 0, 'mallory', 'x', NULL, '{}', '', '')",
        ] {
            let e = exec(&pool, sql).await.expect_err(sql);
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
        assert!(verify(&pool).await.unwrap().is_ok());
        assert_eq!(
            list(&pool, &Filter::default()).await.unwrap()[1].actor,
            "admin"
        );
    }

    #[tokio::test]
    async fn tampering_is_found_at_the_first_bad_seq() {
        // (what is done to a log of 5 entries, the seq to be named, words of the reason)
        let cases: [(&str, i64, &str); 7] = [
            (
                "UPDATE audit SET detail = '{\"i\":9}' WHERE seq = 3",
                3,
                "hash",
            ),
            ("DELETE FROM audit WHERE seq = 3", 3, "missing"),
            (
                "UPDATE audit SET hash = '1111111111111111111111111111111111111111111111111111111111111111' WHERE seq = 3",
                3,
                "hash",
            ),
            ("UPDATE audit SET at = at + 1 WHERE seq = 1", 1, "hash"),
            ("UPDATE audit SET task = NULL WHERE seq = 5", 5, "hash"),
            ("UPDATE audit SET prev = hash WHERE seq = 1", 1, "64 zeros"),
            ("UPDATE audit SET seq = 0 WHERE seq = 1", 0, "unexpected"),
        ];
        for (sql, seq, why) in cases {
            let (_dir, pool) = db().await;
            append_now(&pool, some(5, 1)).await.unwrap();
            drop_triggers(&pool).await;
            exec(&pool, sql).await.unwrap();
            let b = broken_at(&pool).await;
            assert_eq!(b.seq, seq, "{sql}: {b:?}");
            assert!(b.why.contains(why), "{sql}: {b:?}");
        }
    }

    #[tokio::test]
    async fn a_consistently_rehashed_entry_is_found_at_its_successor() {
        let (_dir, pool) = db().await;
        append_now(&pool, some(5, 1)).await.unwrap();
        drop_triggers(&pool).await;
        let e = &list(&pool, &Filter::default()).await.unwrap()[2];
        let forged = r#"{"i":99}"#;
        let hash = entry_hash(e.seq, e.at, &e.actor, &e.action, e.task, forged, &e.prev);
        sqlx::query("UPDATE audit SET detail = $1, hash = $2 WHERE seq = 3")
            .bind(forged)
            .bind(hash)
            .execute(&pool)
            .await
            .unwrap();
        let b = broken_at(&pool).await;
        assert_eq!(b.seq, 4, "{b:?}");
        assert!(b.why.contains("prev"), "{b:?}");
    }

    #[tokio::test]
    async fn a_detail_that_is_not_json_is_found_even_with_a_matching_hash() {
        let (_dir, pool) = db().await;
        append_now(&pool, some(2, 1)).await.unwrap();
        drop_triggers(&pool).await;
        let e = &list(&pool, &Filter::default()).await.unwrap()[1];
        let hash = entry_hash(e.seq, e.at, &e.actor, &e.action, e.task, "{oops", &e.prev);
        sqlx::query("UPDATE audit SET detail = '{oops', hash = $1 WHERE seq = 2")
            .bind(hash)
            .execute(&pool)
            .await
            .unwrap();
        let b = broken_at(&pool).await;
        assert_eq!((b.seq, b.why.contains("not JSON")), (2, true), "{b:?}");
        let e = list(&pool, &Filter::default()).await.unwrap_err();
        assert!(matches!(e, AuditError::Corrupt(_)), "{e}");
    }

    #[tokio::test]
    async fn a_column_of_the_wrong_type_is_a_broken_chain() {
        let (_dir, pool) = db().await;
        append_now(&pool, some(3, 1)).await.unwrap();
        drop_triggers(&pool).await;
        exec(&pool, "UPDATE audit SET at = 'yesterday' WHERE seq = 2")
            .await
            .unwrap();
        let b = broken_at(&pool).await;
        assert_eq!(b.seq, 2, "{b:?}");
        assert!(b.why.contains("column at"), "{b:?}");
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_appends_nothing() {
        let (_dir, pool) = db().await;
        append_now(&pool, some(2, 1)).await.unwrap();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let gone = append(&mut tx, 1, some(3, 2)).await.unwrap();
        assert_eq!(gone.first().map(|e| e.seq), Some(3));
        tx.rollback().await.unwrap();
        // Dropping a transaction rolls it back too.
        {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            append(&mut tx, 1, some(1, 2)).await.unwrap();
        }
        assert_eq!(list(&pool, &Filter::default()).await.unwrap().len(), 2);
        let next = append_now(&pool, some(1, 3)).await.unwrap();
        assert_eq!(next[0].seq, 3);
        assert_ne!(next[0].hash, gone[0].hash);
        assert_eq!(verify(&pool).await.unwrap().map(|v| v.entries), Ok(3));
    }

    #[tokio::test]
    async fn append_on_a_bare_connection_is_its_own_transaction() {
        let (_dir, pool) = db().await;
        let mut conn = pool.acquire().await.unwrap();
        let out = append(&mut conn, 5, some(2, 1)).await.unwrap();
        assert_eq!(out.len(), 2);
        assert!(!conn.is_in_transaction());
        drop(conn);
        assert_eq!(verify(&pool).await.unwrap().map(|v| v.entries), Ok(2));
        assert!(
            append(&mut pool.acquire().await.unwrap(), 5, Vec::new())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn five_thousand_entries_in_one_append() {
        let (_dir, pool) = db().await;
        append_now(&pool, some(7, 1)).await.unwrap();
        let started = std::time::Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let out = append(&mut tx, 1, some(5_000, 2)).await.unwrap();
        tx.commit().await.unwrap();
        let took = started.elapsed();
        assert_eq!(out.len(), 5_000);
        assert_eq!(out.last().map(|e| e.seq), Some(5_007));
        // Generous for a debug build on a slow machine; it takes well under a second.
        assert!(took.as_secs() < 10, "{took:?}");
        let v = verify(&pool).await.unwrap().unwrap();
        assert_eq!(v.entries, 5_007);
        assert_eq!(v.head, out[4_999].hash);
        // A break deep in the chain (several verify pages in) is found too.
        drop_triggers(&pool).await;
        exec(&pool, "UPDATE audit SET actor = 'mallory' WHERE seq = 4321")
            .await
            .unwrap();
        assert_eq!(broken_at(&pool).await.seq, 4321);
    }

    #[tokio::test]
    async fn concurrent_appenders_keep_one_chain() {
        let (_dir, pool) = db().await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        append_now(&pool, some(2, w)).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(verify(&pool).await.unwrap().map(|v| v.entries), Ok(200));
    }

    #[tokio::test]
    async fn list_filters() {
        let (_dir, pool) = db().await;
        let mut conn = pool.acquire().await.unwrap();
        append(
            &mut conn,
            100,
            vec![
                entry("alice", "task.create", Some(1), json!({})),
                entry("agent:h1", "host.result", Some(1), json!({"code": 0})),
            ],
        )
        .await
        .unwrap();
        append(
            &mut conn,
            200,
            vec![
                entry("bob", "task.create", Some(2), json!({})),
                entry("alice", "recipe.add", None, json!({"name": "r"})),
                entry("alice", "task.cancel", Some(2), json!({})),
            ],
        )
        .await
        .unwrap();
        drop(conn);
        let seqs = |f: Filter| {
            let pool = pool.clone();
            async move {
                list(&pool, &f)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.seq)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(seqs(Filter::default()).await, [1, 2, 3, 4, 5]);
        let f = |g: fn(&mut Filter)| {
            let mut f = Filter::default();
            g(&mut f);
            f
        };
        assert_eq!(seqs(f(|f| f.task = Some(2))).await, [3, 5]);
        assert_eq!(seqs(f(|f| f.actor = Some("alice".into()))).await, [1, 4, 5]);
        assert_eq!(
            seqs(f(|f| f.action = Some("task.create".into()))).await,
            [1, 3]
        );
        assert_eq!(seqs(f(|f| f.after_seq = Some(3))).await, [4, 5]);
        assert_eq!(seqs(f(|f| f.since_ms = Some(150))).await, [3, 4, 5]);
        assert_eq!(seqs(f(|f| f.limit = 2)).await, [1, 2]);
        assert_eq!(seqs(f(|f| f.limit = 0)).await, Vec::<i64>::new());
        assert_eq!(seqs(f(|f| f.limit = usize::MAX)).await.len(), 5);
        assert_eq!(
            seqs(f(|f| {
                f.actor = Some("alice".into());
                f.task = Some(2);
                f.since_ms = Some(200);
                f.after_seq = Some(1);
                f.action = Some("task.cancel".into());
            }))
            .await,
            [5]
        );
        assert_eq!(
            seqs(f(|f| f.actor = Some("nobody".into()))).await,
            Vec::<i64>::new()
        );
        let e = &list(&pool, &f(|f| f.task = Some(1))).await.unwrap()[1];
        assert_eq!(e.detail, json!({"code": 0}));
        assert_eq!(e.actor, "agent:h1");
    }

    #[tokio::test]
    async fn limit_is_capped() {
        let (_dir, pool) = db().await;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        append(&mut tx, 1, some(MAX_LIMIT + 5, 1)).await.unwrap();
        tx.commit().await.unwrap();
        let all = list(&pool, &Filter::default()).await.unwrap();
        assert_eq!(all.len(), MAX_LIMIT);
        let rest = list(
            &pool,
            &Filter {
                after_seq: all.last().map(|e| e.seq),
                ..Filter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(rest.len(), 5);
    }
}
