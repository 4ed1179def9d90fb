//! Durable state of pushed data: server-side counters and gauges, and Pushgateway groups.
//!
//! Stored in SQLite (`<data>/push.db`, WAL, `synchronous=FULL`): a change is on disk
//! before it is acknowledged, so a `kill -9` loses no acknowledged increment.
//!
//! # Counters and gauges (`POST /api/ops/v1/push`)
//! A series is its full label set (`__name__` included). An *increment* (`inc`, ≥ 0)
//! adds to a counter, which starts at 0; a *set* gives a gauge its value. A series is
//! a counter or a gauge for life: incrementing a gauge or setting a counter is refused.
//! Many stateless processes can increment one counter: concurrent requests are applied
//! one after the other, each exactly once, and committed together (group commit), so
//! throughput grows with concurrency instead of paying one disk sync per request.
//! A request is applied whole or not at all. Each committed batch's new values go to the
//! sink (the TSDB) at a time later than the previous batch's, before any request of the
//! batch is answered: an acknowledged increment is both durable and queryable.
//!
//! # Schema (version 1)
//! ```text
//! push_counters(series TEXT PK, kind TEXT, value DOUBLE, updated BIGINT)
//!     series: JSON array of [name, value] pairs, sorted; kind: counter | gauge;
//!     updated: Unix ms of the last change
//! push_groups(key TEXT PK, state TEXT)
//!     key: JSON of the grouping key; state: JSON of crate::pushgw::Group
//! ```

use std::collections::HashMap;
use std::path::Path;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use crate::pushgw::{Group, GroupKey, LabelSet};

/// What a push does to a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Adds to a counter (never negative).
    Inc(f64),
    /// Sets a gauge.
    Set(f64),
}

/// One change: a series and what to do to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Sorted, unique, `__name__` included.
    pub labels: LabelSet,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PushStoreError {
    /// The request breaks a rule; nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error("push store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("push store: {0}")]
    Closed(String),
}

/// The new values of a request's series.
type Values = Vec<(LabelSet, f64)>;
type Reply = oneshot::Sender<Result<Values, PushStoreError>>;

/// Where committed values go next (the TSDB): the batch's changed series with their new
/// values, and the batch's time.
pub type Sink = Box<dyn Fn(Vec<(LabelSet, f64)>, i64) + Send + Sync>;

/// The store: the counters in memory, every change written through one writer task.
pub struct PushStore {
    pool: SqlitePool,
    jobs: mpsc::Sender<(Vec<Update>, Reply)>,
    sink: std::sync::Arc<std::sync::OnceLock<Sink>>,
}

fn key_json(labels: &LabelSet) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Applies one request on top of `base` and the batch's earlier `changes`, recording its
/// own changes in `req`: the new values, or why not.
fn apply(
    base: &HashMap<LabelSet, (Kind, f64)>,
    changes: &HashMap<LabelSet, (Kind, f64)>,
    req: &mut HashMap<LabelSet, (Kind, f64)>,
    updates: &[Update],
) -> Result<Vec<(LabelSet, f64)>, String> {
    let mut out = Vec::with_capacity(updates.len());
    for u in updates {
        let name = crate::pushgw::show(&u.labels);
        let entry = req
            .get(&u.labels)
            .or_else(|| changes.get(&u.labels))
            .or_else(|| base.get(&u.labels))
            .copied();
        let next = match (u.op, entry) {
            (Op::Inc(d), _) if !(d >= 0.0 && d.is_finite()) => {
                return Err(format!(
                    "{name}: an increment must be a finite number ≥ 0, not {d}"
                ));
            }
            (Op::Set(v), _) if v.is_nan() => return Err(format!("{name}: NaN cannot be set")),
            (Op::Inc(_), Some((Kind::Gauge, _))) => {
                return Err(format!("{name} is a gauge: set it, do not increment it"));
            }
            (Op::Set(_), Some((Kind::Counter, _))) => {
                return Err(format!("{name} is a counter: increment it, do not set it"));
            }
            (Op::Inc(d), Some((_, v))) => (Kind::Counter, v + d),
            (Op::Inc(d), None) => (Kind::Counter, d),
            (Op::Set(v), _) => (Kind::Gauge, v),
        };
        req.insert(u.labels.clone(), next);
        out.push((u.labels.clone(), next.1));
    }
    Ok(out)
}

impl PushStore {
    /// Opens (creating) the database at `path`; starts the writer task (call from within
    /// a Tokio runtime).
    pub async fn open(path: &Path) -> Result<PushStore, PushStoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        for stmt in [
            "CREATE TABLE IF NOT EXISTS push_counters (series TEXT PRIMARY KEY, \
             kind TEXT NOT NULL, value DOUBLE NOT NULL, updated BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS push_groups (key TEXT PRIMARY KEY, state TEXT NOT NULL)",
        ] {
            sqlx::query(stmt).execute(&pool).await?;
        }
        let rows: Vec<(String, String, f64)> =
            sqlx::query_as("SELECT series, kind, value FROM push_counters")
                .fetch_all(&pool)
                .await?;
        let mut state = HashMap::with_capacity(rows.len());
        for (series, kind, value) in rows {
            let labels: LabelSet = serde_json::from_str(&series)
                .map_err(|e| PushStoreError::Invalid(format!("stored series {series:?}: {e}")))?;
            let kind = if kind == "gauge" {
                Kind::Gauge
            } else {
                Kind::Counter
            };
            state.insert(labels, (kind, value));
        }
        let (tx, rx) = mpsc::channel(4096);
        let sink = std::sync::Arc::new(std::sync::OnceLock::new());
        tokio::spawn(writer(pool.clone(), state, rx, sink.clone()));
        Ok(PushStore {
            pool,
            jobs: tx,
            sink,
        })
    }

    /// Sets where each committed batch's new values go, in commit order, before the
    /// requests are answered. Batch times increase strictly, so the last value of a
    /// series is also its newest sample.
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// Applies `updates` as one change and returns the series' new values once they are
    /// on disk.
    pub async fn apply(
        &self,
        updates: Vec<Update>,
    ) -> Result<Vec<(LabelSet, f64)>, PushStoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send((updates, reply))
            .await
            .map_err(|_| PushStoreError::Closed("the writer stopped".into()))?;
        rx.await
            .map_err(|_| PushStoreError::Closed("the writer stopped".into()))?
    }

    /// Every counter and gauge with its value.
    pub async fn values(&self) -> Result<Vec<(LabelSet, f64)>, PushStoreError> {
        let rows: Vec<(String, f64)> = sqlx::query_as("SELECT series, value FROM push_counters")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, v)| serde_json::from_str(&s).ok().map(|l| (l, v)))
            .collect())
    }

    /// Stores a Pushgateway group (replacing it).
    pub async fn save_group(&self, key: &GroupKey, group: &Group) -> Result<(), PushStoreError> {
        let k = serde_json::to_string(key).map_err(|e| PushStoreError::Invalid(e.to_string()))?;
        let v = serde_json::to_string(group).map_err(|e| PushStoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO push_groups (key, state) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET state = excluded.state",
        )
        .bind(k)
        .bind(v)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a Pushgateway group.
    pub async fn delete_group(&self, key: &GroupKey) -> Result<(), PushStoreError> {
        let k = serde_json::to_string(key).map_err(|e| PushStoreError::Invalid(e.to_string()))?;
        sqlx::query("DELETE FROM push_groups WHERE key = $1")
            .bind(k)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every stored Pushgateway group.
    pub async fn groups(&self) -> Result<Vec<(GroupKey, Group)>, PushStoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, state FROM push_groups")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let key: GroupKey = serde_json::from_str(&k)
                .map_err(|e| PushStoreError::Invalid(format!("stored group {k:?}: {e}")))?;
            let group: Group = serde_json::from_str(&v)
                .map_err(|e| PushStoreError::Invalid(format!("stored group {k:?}: {e}")))?;
            out.push((key, group));
        }
        Ok(out)
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The one writer: takes every request waiting, applies each to the in-memory state
/// (a refused one alone is answered with its error), commits them in one transaction,
/// and answers once the commit is on disk.
async fn writer(
    pool: SqlitePool,
    mut state: HashMap<LabelSet, (Kind, f64)>,
    mut rx: mpsc::Receiver<(Vec<Update>, Reply)>,
    sink: std::sync::Arc<std::sync::OnceLock<Sink>>,
) {
    let mut last_t = 0i64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut answers: Vec<(Reply, Result<Values, String>)> = Vec::new();
        let mut changed: HashMap<LabelSet, (Kind, f64)> = HashMap::new();
        for (updates, reply) in batch {
            let mut req = HashMap::new();
            let r = apply(&state, &changed, &mut req, &updates);
            if r.is_ok() {
                changed.extend(req);
            }
            answers.push((reply, r));
        }
        let committed = commit(&pool, &changed).await;
        match committed {
            Ok(()) => {
                let t = now_ms().max(last_t + 1);
                last_t = t;
                let values: Vec<(LabelSet, f64)> =
                    changed.iter().map(|(l, (_, v))| (l.clone(), *v)).collect();
                state.extend(changed);
                if !values.is_empty() {
                    let sink = sink.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(f) = sink.get() {
                            f(values, t);
                        }
                    })
                    .await;
                }
                for (reply, r) in answers {
                    let _ = reply.send(r.map_err(PushStoreError::Invalid));
                }
            }
            Err(e) => {
                tracing::error!("push store: {e}");
                for (reply, r) in answers {
                    let _ = reply.send(match r {
                        Ok(_) => Err(PushStoreError::Closed(format!("not stored: {e}"))),
                        Err(why) => Err(PushStoreError::Invalid(why)),
                    });
                }
            }
        }
    }
}

async fn commit(
    pool: &SqlitePool,
    changed: &HashMap<LabelSet, (Kind, f64)>,
) -> Result<(), sqlx::Error> {
    if changed.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let mut tx = pool.begin().await?;
    for (labels, (kind, value)) in changed {
        sqlx::query(
            "INSERT INTO push_counters (series, kind, value, updated) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (series) DO UPDATE SET kind = excluded.kind, value = excluded.value, \
             updated = excluded.updated",
        )
        .bind(key_json(labels))
        .bind(kind.as_str())
        .bind(*value)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn concurrent_increments_sum_exactly_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("push.db");
        let orders = ls(&[("__name__", "orders_total"), ("shop", "eu")]);
        rt().block_on(async {
            let store = std::sync::Arc::new(PushStore::open(&path).await.expect("open"));
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (s, o) = (store.clone(), orders.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..25 {
                        s.apply(vec![Update {
                            labels: o.clone(),
                            op: Op::Inc(1.0),
                        }])
                        .await
                        .expect("inc");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            store.close().await;
        });
        rt().block_on(async {
            let store = PushStore::open(&path).await.expect("reopen");
            let v = store.values().await.expect("values");
            assert_eq!(v, vec![(orders.clone(), 200.0)]);
            let r = store
                .apply(vec![Update {
                    labels: orders.clone(),
                    op: Op::Inc(2.5),
                }])
                .await
                .expect("inc");
            assert_eq!(r[0].1, 202.5);
        });
    }

    #[test]
    fn kinds_are_kept_and_refused_requests_change_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        rt().block_on(async {
            let store = PushStore::open(&dir.path().join("push.db"))
                .await
                .expect("open");
            let c = ls(&[("__name__", "c_total")]);
            let g = ls(&[("__name__", "stock")]);
            store
                .apply(vec![
                    Update {
                        labels: c.clone(),
                        op: Op::Inc(1.0),
                    },
                    Update {
                        labels: g.clone(),
                        op: Op::Set(42.0),
                    },
                ])
                .await
                .expect("first");
            // One bad update refuses its whole request.
            let e = store
                .apply(vec![
                    Update {
                        labels: c.clone(),
                        op: Op::Inc(5.0),
                    },
                    Update {
                        labels: g.clone(),
                        op: Op::Inc(1.0),
                    },
                ])
                .await
                .expect_err("gauge inc");
            assert!(e.to_string().contains("is a gauge"), "{e}");
            for (op, why) in [
                (Op::Set(1.0), "is a counter"),
                (Op::Inc(-1.0), "≥ 0"),
                (Op::Inc(f64::INFINITY), "≥ 0"),
            ] {
                let e = store
                    .apply(vec![Update {
                        labels: c.clone(),
                        op,
                    }])
                    .await
                    .expect_err("refused");
                assert!(e.to_string().contains(why), "{e}");
            }
            let mut v = store.values().await.expect("values");
            v.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(v, vec![(c, 1.0), (g, 42.0)]);
        });
    }

    #[test]
    fn groups_are_saved_and_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        rt().block_on(async {
            let store = PushStore::open(&dir.path().join("push.db"))
                .await
                .expect("open");
            let key = GroupKey::from_path(&["job", "j"]).expect("key");
            let group = Group {
                push_time: 5.0,
                ..Group::default()
            };
            store.save_group(&key, &group).await.expect("save");
            assert_eq!(
                store.groups().await.expect("groups"),
                vec![(key.clone(), group)]
            );
            store.delete_group(&key).await.expect("delete");
            assert!(store.groups().await.expect("groups").is_empty());
        });
    }
}
