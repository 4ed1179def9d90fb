/*!
The notifier's SQLite file: the schema and every statement. Nothing here decides
anything: the notifier and the dispatcher compute a [`Batch`] of changes and this
module writes it in one `BEGIN IMMEDIATE` transaction, so that a notification's
outbox row and the notification-log entry saying it was sent commit together.

Times are Unix milliseconds; fingerprints are 16 hex digits; label sets are JSON
objects; sets of fingerprints are comma-separated.

# Schema (version 1)
```text
schema_version(version)                          one row
alerts(fingerprint PK, labels, annotations,      the alerts the notifier knows: firing,
       starts_at, ends_at, timeout,              or resolved and not yet notified;
       generator_url, updated_at, state,         timeout: 1 if ends_at came from
       notified_at NULL)                         resolve_timeout; state: firing | resolved;
                                                 notified_at: first notification (escalation)
nflog(group_key, receiver, idx, escalation,      what was last sent to each integration
      firing, resolved, sent_at)                 of each group; PK (group_key, receiver,
                                                 idx, escalation)
outbox(id PK, created_at, group_key, receiver,   notifications to deliver; payload: JSON
       idx, escalation, kind, fingerprints,      of message::Notification
       payload, attempts, next_attempt,
       last_error NULL)
silences(id PK, matchers, starts_at, ends_at,    matchers: Alertmanager syntax, {a="b"}
         created_by, comment, created_at,
         updated_at)
acks(id PK, fingerprint, by_user, comment, at,   ended_at: resolved, removed or replaced
     expires_at NULL, ended_at NULL,
     end_reason NULL)
history(id PK, fingerprint, labels, from_state,  every state change of every alert
        to_state, at, detail)
notification_log(id PK, at, receiver, kind,      every delivery attempt
        idx, group_key, escalation, alerts, ok,
        error NULL, attempt, duration_ms)
```
*/

use std::collections::BTreeSet;
use std::path::Path;

use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqlitePool;

use crate::notify::{Error, Fingerprint, Labels};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: [&str; 13] = [
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alerts (fingerprint TEXT PRIMARY KEY, labels TEXT NOT NULL, \
     annotations TEXT NOT NULL, starts_at BIGINT NOT NULL, ends_at BIGINT NOT NULL, \
     timeout BIGINT NOT NULL, generator_url TEXT NOT NULL, updated_at BIGINT NOT NULL, \
     state TEXT NOT NULL, notified_at BIGINT NULL)",
    "CREATE TABLE IF NOT EXISTS nflog (group_key TEXT NOT NULL, receiver TEXT NOT NULL, \
     idx BIGINT NOT NULL, escalation BIGINT NOT NULL, firing TEXT NOT NULL, \
     resolved TEXT NOT NULL, sent_at BIGINT NOT NULL, \
     PRIMARY KEY (group_key, receiver, idx, escalation))",
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     created_at BIGINT NOT NULL, group_key TEXT NOT NULL, receiver TEXT NOT NULL, \
     idx BIGINT NOT NULL, escalation BIGINT NOT NULL, kind TEXT NOT NULL, \
     fingerprints TEXT NOT NULL, payload TEXT NOT NULL, attempts BIGINT NOT NULL, \
     next_attempt BIGINT NOT NULL, last_error TEXT NULL)",
    "CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, matchers TEXT NOT NULL, \
     starts_at BIGINT NOT NULL, ends_at BIGINT NOT NULL, created_by TEXT NOT NULL, \
     comment TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS acks (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     fingerprint TEXT NOT NULL, by_user TEXT NOT NULL, comment TEXT NOT NULL, \
     at BIGINT NOT NULL, expires_at BIGINT NULL, ended_at BIGINT NULL, end_reason TEXT NULL)",
    "CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     fingerprint TEXT NOT NULL, labels TEXT NOT NULL, from_state TEXT NOT NULL, \
     to_state TEXT NOT NULL, at BIGINT NOT NULL, detail TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notification_log (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     at BIGINT NOT NULL, receiver TEXT NOT NULL, kind TEXT NOT NULL, idx BIGINT NOT NULL, \
     group_key TEXT NOT NULL, escalation BIGINT NOT NULL, alerts BIGINT NOT NULL, \
     ok BIGINT NOT NULL, error TEXT NULL, attempt BIGINT NOT NULL, \
     duration_ms BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS history_at ON history (at)",
    "CREATE INDEX IF NOT EXISTS history_fingerprint ON history (fingerprint, at)",
    "CREATE INDEX IF NOT EXISTS notification_log_at ON notification_log (at)",
    "CREATE INDEX IF NOT EXISTS acks_open ON acks (ended_at)",
    "CREATE INDEX IF NOT EXISTS outbox_key ON outbox (group_key, receiver, idx, escalation)",
];

/// Opens (creating if missing) the database at `path`.
pub(crate) async fn open(path: &Path) -> Result<SqlitePool, Error> {
    // A notification recorded as sent (and queued) survives a power cut.
    sqlstore::open(path, &SCHEMA, SCHEMA_VERSION)
        .await
        .map_err(|e| match e {
            sqlstore::OpenError::Db(e) => e.into(),
            sqlstore::OpenError::Schema(m) => Error::Corrupt(m),
        })
}

// ---------------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------------

/// Whether an alert was last recorded firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Firing,
    Resolved,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// An alert the notifier knows, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlertRecord {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) labels: Labels,
    pub(crate) annotations: Labels,
    pub(crate) starts_at: i64,
    pub(crate) ends_at: i64,
    /// `ends_at` was set from `resolve_timeout` (the sender gave no end).
    pub(crate) timeout: bool,
    pub(crate) generator_url: String,
    pub(crate) updated_at: i64,
    /// The state last written to the history.
    pub(crate) state: State,
    /// When the alert was first sent to its route's receiver in this firing episode.
    pub(crate) notified_at: Option<i64>,
}

impl AlertRecord {
    pub(crate) fn resolved_at(&self, now: i64) -> bool {
        self.ends_at <= now
    }
}

/// Identifies one integration of one receiver for one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NflogKey {
    pub(crate) group_key: String,
    pub(crate) receiver: String,
    pub(crate) idx: u32,
    /// The escalation receiver's entry, kept apart from the route receiver's.
    pub(crate) escalation: bool,
}

/// What was last sent to an integration for a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NflogEntry {
    pub(crate) firing: BTreeSet<Fingerprint>,
    pub(crate) resolved: BTreeSet<Fingerprint>,
    pub(crate) sent_at: i64,
}

/// A new outbox row.
#[derive(Debug, Clone)]
pub(crate) struct OutboxInsert {
    pub(crate) key: NflogKey,
    pub(crate) kind: &'static str,
    pub(crate) fingerprints: BTreeSet<Fingerprint>,
    pub(crate) payload: String,
    pub(crate) created_at: i64,
}

/// What the delivery loop keeps in memory about an outbox row.
#[derive(Debug, Clone)]
pub(crate) struct OutboxMeta {
    pub(crate) key: NflogKey,
    pub(crate) fingerprints: BTreeSet<Fingerprint>,
    pub(crate) created_at: i64,
    pub(crate) attempts: u32,
    pub(crate) next_attempt: i64,
}

/// A history row.
#[derive(Debug, Clone)]
pub(crate) struct HistoryRow {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) labels: Labels,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) at: i64,
    pub(crate) detail: String,
}

/// A notification-log row.
#[derive(Debug, Clone)]
pub(crate) struct LogRow {
    pub(crate) at: i64,
    pub(crate) key: NflogKey,
    pub(crate) kind: &'static str,
    pub(crate) alerts: usize,
    pub(crate) error: Option<String>,
    pub(crate) attempt: u32,
    pub(crate) duration_ms: i64,
}

/// An acknowledgement row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckRow {
    pub(crate) id: i64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) by: String,
    pub(crate) comment: String,
    pub(crate) at: i64,
    pub(crate) expires_at: Option<i64>,
}

/// A silence row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SilenceRow {
    pub(crate) id: String,
    pub(crate) matchers: String,
    pub(crate) starts_at: i64,
    pub(crate) ends_at: i64,
    pub(crate) created_by: String,
    pub(crate) comment: String,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// Changes written in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) alerts_upsert: Vec<AlertRecord>,
    pub(crate) alerts_delete: Vec<Fingerprint>,
    pub(crate) history: Vec<HistoryRow>,
    pub(crate) nflog_upsert: Vec<(NflogKey, NflogEntry)>,
    pub(crate) nflog_delete: Vec<NflogKey>,
    pub(crate) outbox_insert: Vec<OutboxInsert>,
    /// (ack id, ended_at, reason)
    pub(crate) acks_end: Vec<(i64, i64, String)>,
    pub(crate) ack_insert: Option<AckRow>,
    pub(crate) silence_upsert: Option<SilenceRow>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.alerts_upsert.is_empty()
            && self.alerts_delete.is_empty()
            && self.history.is_empty()
            && self.nflog_upsert.is_empty()
            && self.nflog_delete.is_empty()
            && self.outbox_insert.is_empty()
            && self.acks_end.is_empty()
            && self.ack_insert.is_none()
            && self.silence_upsert.is_none()
    }
}

/// What writing a batch assigned.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// The ids of `outbox_insert`, in order.
    pub(crate) outbox_ids: Vec<i64>,
    /// The id of `ack_insert`.
    pub(crate) ack_id: Option<i64>,
}

fn fps_to_text(s: &BTreeSet<Fingerprint>) -> String {
    s.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn fps_from_text(s: &str) -> Result<BTreeSet<Fingerprint>, Error> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(Error::Corrupt))
        .collect()
}

fn labels_json(l: &Labels) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "{}".into())
}

fn labels_from_json(s: &str) -> Result<Labels, Error> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("label set {s:?}: {e}")))
}

fn fp(s: &str) -> Result<Fingerprint, Error> {
    s.parse().map_err(Error::Corrupt)
}

/// Rows per multi-row statement (SQLite allows 32,766 bound values).
const ROWS_PER_STATEMENT: usize = 500;

/// `INSERT ... VALUES (?,..),(?,..)` for `rows` rows of `cols` columns. Anonymous
/// placeholders: SQLite binds them by position, where numbered ones cost a lookup by
/// name per value.
fn values(prefix: &str, cols: usize, rows: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    let mut s = String::with_capacity(prefix.len() + rows * (one.len() + 1));
    s.push_str(prefix);
    s.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&one);
    }
    s
}

/// Writes `b` in one write transaction.
pub(crate) async fn write(pool: &SqlitePool, b: &Batch) -> Result<Written, Error> {
    let mut w = Written::default();
    if b.is_empty() {
        return Ok(w);
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for rows in b.alerts_upsert.chunks(ROWS_PER_STATEMENT) {
        // The statement text is built from constants only; values are bound.
        let sql = values(
            "INSERT OR REPLACE INTO alerts (fingerprint, labels, annotations, starts_at, \
             ends_at, timeout, generator_url, updated_at, state, notified_at)",
            10,
            rows.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in rows {
            q = q
                .bind(a.fingerprint.to_string())
                .bind(labels_json(&a.labels))
                .bind(labels_json(&a.annotations))
                .bind(a.starts_at)
                .bind(a.ends_at)
                .bind(i64::from(a.timeout))
                .bind(a.generator_url.clone())
                .bind(a.updated_at)
                .bind(a.state.as_str())
                .bind(a.notified_at);
        }
        q.execute(&mut *tx).await?;
    }
    for f in &b.alerts_delete {
        sqlx::query("DELETE FROM alerts WHERE fingerprint = ?")
            .bind(f.to_string())
            .execute(&mut *tx)
            .await?;
    }
    for rows in b.history.chunks(ROWS_PER_STATEMENT) {
        let sql = values(
            "INSERT INTO history (fingerprint, labels, from_state, to_state, at, detail)",
            6,
            rows.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for h in rows {
            q = q
                .bind(h.fingerprint.to_string())
                .bind(labels_json(&h.labels))
                .bind(h.from)
                .bind(h.to)
                .bind(h.at)
                .bind(h.detail.clone());
        }
        q.execute(&mut *tx).await?;
    }
    for (k, e) in &b.nflog_upsert {
        sqlx::query(
            "INSERT OR REPLACE INTO nflog (group_key, receiver, idx, escalation, firing, \
             resolved, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.group_key)
        .bind(&k.receiver)
        .bind(i64::from(k.idx))
        .bind(i64::from(k.escalation))
        .bind(fps_to_text(&e.firing))
        .bind(fps_to_text(&e.resolved))
        .bind(e.sent_at)
        .execute(&mut *tx)
        .await?;
    }
    for k in &b.nflog_delete {
        sqlx::query(
            "DELETE FROM nflog WHERE group_key = ? AND receiver = ? AND idx = ? AND escalation = ?",
        )
        .bind(&k.group_key)
        .bind(&k.receiver)
        .bind(i64::from(k.idx))
        .bind(i64::from(k.escalation))
        .execute(&mut *tx)
        .await?;
    }
    for o in &b.outbox_insert {
        let id: (i64,) = sqlx::query_as(
            "INSERT INTO outbox (created_at, group_key, receiver, idx, escalation, kind, \
             fingerprints, payload, attempts, next_attempt, last_error) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL) RETURNING id",
        )
        .bind(o.created_at)
        .bind(&o.key.group_key)
        .bind(&o.key.receiver)
        .bind(i64::from(o.key.idx))
        .bind(i64::from(o.key.escalation))
        .bind(o.kind)
        .bind(fps_to_text(&o.fingerprints))
        .bind(&o.payload)
        .bind(o.created_at)
        .fetch_one(&mut *tx)
        .await?;
        w.outbox_ids.push(id.0);
    }
    for (id, at, reason) in &b.acks_end {
        sqlx::query(
            "UPDATE acks SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(a) = &b.ack_insert {
        let id: (i64,) = sqlx::query_as(
            "INSERT INTO acks (fingerprint, by_user, comment, at, expires_at, ended_at, \
             end_reason) VALUES (?, ?, ?, ?, ?, NULL, NULL) RETURNING id",
        )
        .bind(a.fingerprint.to_string())
        .bind(&a.by)
        .bind(&a.comment)
        .bind(a.at)
        .bind(a.expires_at)
        .fetch_one(&mut *tx)
        .await?;
        w.ack_id = Some(id.0);
    }
    if let Some(s) = &b.silence_upsert {
        sqlx::query(
            "INSERT OR REPLACE INTO silences (id, matchers, starts_at, ends_at, created_by, \
             comment, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.matchers)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(&s.created_by)
        .bind(&s.comment)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(w)
}

// ---------------------------------------------------------------------------------
// Loading at open.
// ---------------------------------------------------------------------------------

type AlertTuple = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    i64,
    String,
    Option<i64>,
);

pub(crate) async fn load_alerts(pool: &SqlitePool) -> Result<Vec<AlertRecord>, Error> {
    let rows: Vec<AlertTuple> = sqlx::query_as(
        "SELECT fingerprint, labels, annotations, starts_at, ends_at, timeout, generator_url, \
         updated_at, state, notified_at FROM alerts",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AlertRecord {
                fingerprint: fp(&r.0)?,
                labels: labels_from_json(&r.1)?,
                annotations: labels_from_json(&r.2)?,
                starts_at: r.3,
                ends_at: r.4,
                timeout: r.5 != 0,
                generator_url: r.6,
                updated_at: r.7,
                state: match r.8.as_str() {
                    "firing" => State::Firing,
                    "resolved" => State::Resolved,
                    s => return Err(Error::Corrupt(format!("alert {}: state {s:?}", r.0))),
                },
                notified_at: r.9,
            })
        })
        .collect()
}

pub(crate) async fn load_nflog(pool: &SqlitePool) -> Result<Vec<(NflogKey, NflogEntry)>, Error> {
    let rows: Vec<(String, String, i64, i64, String, String, i64)> = sqlx::query_as(
        "SELECT group_key, receiver, idx, escalation, firing, resolved, sent_at FROM nflog",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                NflogKey {
                    group_key: r.0,
                    receiver: r.1,
                    idx: u32::try_from(r.2).map_err(|_| Error::Corrupt("nflog idx".into()))?,
                    escalation: r.3 != 0,
                },
                NflogEntry {
                    firing: fps_from_text(&r.4)?,
                    resolved: fps_from_text(&r.5)?,
                    sent_at: r.6,
                },
            ))
        })
        .collect()
}

pub(crate) async fn load_outbox(pool: &SqlitePool) -> Result<Vec<(i64, OutboxMeta)>, Error> {
    type Row = (i64, i64, String, String, i64, i64, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, created_at, group_key, receiver, idx, escalation, fingerprints, attempts, \
         next_attempt FROM outbox ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.0,
                OutboxMeta {
                    key: NflogKey {
                        group_key: r.2,
                        receiver: r.3,
                        idx: u32::try_from(r.4).map_err(|_| Error::Corrupt("outbox idx".into()))?,
                        escalation: r.5 != 0,
                    },
                    created_at: r.1,
                    fingerprints: fps_from_text(&r.6)?,
                    attempts: u32::try_from(r.7).unwrap_or(u32::MAX),
                    next_attempt: r.8,
                },
            ))
        })
        .collect()
}

/// The payload and kind of an outbox row, if it still exists.
pub(crate) async fn outbox_payload(
    pool: &SqlitePool,
    id: i64,
) -> Result<Option<(String, String)>, Error> {
    Ok(
        sqlx::query_as("SELECT kind, payload FROM outbox WHERE id = ?")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Removes an outbox row (delivered, superseded or given up) and logs the attempt.
pub(crate) async fn outbox_done(
    pool: &SqlitePool,
    id: i64,
    log: Option<&LogRow>,
) -> Result<(), Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("DELETE FROM outbox WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if let Some(l) = log {
        insert_log(&mut tx, l).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records a failed attempt and when to try again.
pub(crate) async fn outbox_retry(
    pool: &SqlitePool,
    id: i64,
    attempts: u32,
    next_attempt: i64,
    log: &LogRow,
) -> Result<(), Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?")
        .bind(i64::from(attempts))
        .bind(next_attempt)
        .bind(log.error.clone())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    insert_log(&mut tx, log).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_log(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, l: &LogRow) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO notification_log (at, receiver, kind, idx, group_key, escalation, alerts, \
         ok, error, attempt, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(l.at)
    .bind(&l.key.receiver)
    .bind(l.kind)
    .bind(i64::from(l.key.idx))
    .bind(&l.key.group_key)
    .bind(i64::from(l.key.escalation))
    .bind(i64::try_from(l.alerts).unwrap_or(i64::MAX))
    .bind(i64::from(l.error.is_none()))
    .bind(l.error.clone())
    .bind(i64::from(l.attempt))
    .bind(l.duration_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn load_silences(pool: &SqlitePool) -> Result<Vec<SilenceRow>, Error> {
    type Row = (String, String, i64, i64, String, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at \
         FROM silences",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SilenceRow {
            id: r.0,
            matchers: r.1,
            starts_at: r.2,
            ends_at: r.3,
            created_by: r.4,
            comment: r.5,
            created_at: r.6,
            updated_at: r.7,
        })
        .collect())
}

/// The acknowledgements that have not ended (some may have expired).
pub(crate) async fn load_open_acks(pool: &SqlitePool) -> Result<Vec<AckRow>, Error> {
    let rows: Vec<(i64, String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, fingerprint, by_user, comment, at, expires_at FROM acks \
         WHERE ended_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AckRow {
                id: r.0,
                fingerprint: fp(&r.1)?,
                by: r.2,
                comment: r.3,
                at: r.4,
                expires_at: r.5,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Queries.
// ---------------------------------------------------------------------------------

/// History rows newest first, with `at` in `[since, until]` and `id < before_id`.
pub(crate) async fn history_page(
    pool: &SqlitePool,
    fingerprint: Option<Fingerprint>,
    since: i64,
    until: i64,
    before: (i64, i64),
    limit: i64,
) -> Result<Vec<crate::notify::HistoryEntry>, Error> {
    type Row = (i64, String, String, String, String, i64, String);
    let rows: Vec<Row> = match fingerprint {
        Some(f) => {
            sqlx::query_as(
                "SELECT id, fingerprint, labels, from_state, to_state, at, detail FROM history \
                 WHERE fingerprint = ? AND at >= ? AND at <= ? AND (at < ? OR (at = ? AND id < ?)) \
                 ORDER BY at DESC, id DESC LIMIT ?",
            )
            .bind(f.to_string())
            .bind(since)
            .bind(until)
            .bind(before.0)
            .bind(before.0)
            .bind(before.1)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT id, fingerprint, labels, from_state, to_state, at, detail FROM history \
                 WHERE at >= ? AND at <= ? AND (at < ? OR (at = ? AND id < ?)) \
                 ORDER BY at DESC, id DESC LIMIT ?",
            )
            .bind(since)
            .bind(until)
            .bind(before.0)
            .bind(before.0)
            .bind(before.1)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    rows.into_iter()
        .map(|r| {
            Ok(crate::notify::HistoryEntry {
                id: r.0,
                fingerprint: fp(&r.1)?,
                labels: labels_from_json(&r.2)?,
                from: r.3,
                to: r.4,
                at: r.5,
                detail: r.6,
            })
        })
        .collect()
}

/// Notification-log rows newest first.
pub(crate) async fn log_page(
    pool: &SqlitePool,
    since: i64,
    until: i64,
    before: (i64, i64),
    limit: i64,
) -> Result<Vec<crate::notify::LogEntry>, Error> {
    type Row = (
        i64,
        i64,
        String,
        String,
        i64,
        String,
        i64,
        i64,
        i64,
        Option<String>,
        i64,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, at, receiver, kind, idx, group_key, escalation, alerts, ok, error, attempt, \
         duration_ms FROM notification_log \
         WHERE at >= ? AND at <= ? AND (at < ? OR (at = ? AND id < ?)) \
         ORDER BY at DESC, id DESC LIMIT ?",
    )
    .bind(since)
    .bind(until)
    .bind(before.0)
    .bind(before.0)
    .bind(before.1)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| crate::notify::LogEntry {
            id: r.0,
            at: r.1,
            receiver: r.2,
            integration: r.3,
            index: u32::try_from(r.4).unwrap_or(0),
            group_key: r.5,
            escalation: r.6 != 0,
            alerts: usize::try_from(r.7).unwrap_or(0),
            ok: r.8 != 0,
            error: r.9,
            attempt: u32::try_from(r.10).unwrap_or(0),
            duration_ms: r.11,
        })
        .collect())
}

/// The acknowledgements of an alert, newest first (open and ended).
pub(crate) async fn acks_of(
    pool: &SqlitePool,
    f: Fingerprint,
) -> Result<Vec<crate::notify::Ack>, Error> {
    type Row = (
        i64,
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, by_user, comment, at, expires_at, ended_at, end_reason FROM acks \
         WHERE fingerprint = ? ORDER BY id DESC",
    )
    .bind(f.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| crate::notify::Ack {
            id: r.0,
            fingerprint: f,
            by: r.1,
            comment: r.2,
            at: r.3,
            expires_at: r.4,
            ended_at: r.5,
            end_reason: r.6,
        })
        .collect())
}

/// Deletes what is older than the retention periods.
pub(crate) async fn prune(
    pool: &SqlitePool,
    history_before: i64,
    log_before: i64,
    nflog_before: i64,
    live_groups: &BTreeSet<String>,
) -> Result<(), Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("DELETE FROM history WHERE at < ?")
        .bind(history_before)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM notification_log WHERE at < ?")
        .bind(log_before)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM silences WHERE ends_at < ?")
        .bind(log_before)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM acks WHERE ended_at IS NOT NULL AND ended_at < ?")
        .bind(log_before)
        .execute(&mut *tx)
        .await?;
    let old: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT group_key FROM nflog WHERE sent_at < ?")
            .bind(nflog_before)
            .fetch_all(&mut *tx)
            .await?;
    for (g,) in old {
        if !live_groups.contains(&g) {
            sqlx::query("DELETE FROM nflog WHERE group_key = ? AND sent_at < ?")
                .bind(&g)
                .bind(nflog_before)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_uses_anonymous_placeholders() {
        assert_eq!(
            values("INSERT INTO t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES (?,?),(?,?)"
        );
    }

    #[test]
    fn fingerprint_sets_round_trip() {
        let s: BTreeSet<Fingerprint> = [Fingerprint(1), Fingerprint(u64::MAX)].into();
        assert_eq!(fps_from_text(&fps_to_text(&s)).unwrap(), s);
        assert!(fps_from_text("").unwrap().is_empty());
        assert!(fps_from_text("zz").is_err());
    }
}
