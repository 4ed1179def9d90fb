//! The rule manager: every loaded group evaluated on its own schedule, results written
//! to the storage engine, alerts handed to the notifier.
//!
//! Each group runs in a loop of its own ([`crate::eval::Schedule`]: aligned slots,
//! overrun slots skipped and counted), so evaluations of one group never overlap and a
//! slow group does not delay the others. An evaluation runs on the blocking pool. After
//! the first evaluation following start-up, the alerts are restored from
//! `ALERTS_FOR_STATE` ([`GroupState::restore`]) before their series are written.
//!
//! [`Manager::update`] replaces the set of groups (a reload, or a group changed through
//! the API): a group whose definition did not change keeps running untouched; a changed
//! one takes over the old one's alerts and series ([`GroupState::copy_state_from`]); a
//! removed one stops, and two of its intervals later (time for a renamed group to write
//! the same series) the series it wrote that no running group writes get a staleness
//! marker, timestamped when it was removed, so they leave query results at once rather
//! than after the lookback, as in Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::eval::{AlertState, EvalOptions, GroupState, Notification, Schedule};
use crate::rulefile::Group;

/// What the manager needs from the server.
#[derive(Clone)]
pub struct Settings {
    /// Interval of groups that set none (`--rules.evaluation-interval`).
    pub default_interval_ms: i64,
    pub engine: promql::EngineOptions,
    pub eval: EvalOptions,
    /// How far back alerts are restored from (`--rules.alert.for-outage-tolerance`).
    pub outage_tolerance_ms: i64,
    /// `--rules.alert.for-grace-period`.
    pub for_grace_ms: i64,
}

/// Receives the alerts due for sending after each evaluation.
pub type Send = Arc<dyn Fn(Vec<Notification>) + std::marker::Send + Sync>;

/// An alert that went pending, or stopped pending without firing: the changes the
/// notifier does not see (it sees firing and resolved alerts), for the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub labels: BTreeMap<String, String>,
    pub from: AlertState,
    pub to: AlertState,
    /// The evaluation's timestamp (Unix ms).
    pub at: i64,
}

/// Receives the pending changes of each evaluation.
pub type OnChange = Arc<dyn Fn(Vec<Change>) + std::marker::Send + Sync>;

/// The state of every alert of a group, by label set.
fn states(g: &GroupState) -> BTreeMap<String, (AlertState, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    for r in g.rules() {
        for a in r.all_alerts() {
            let state = if a.resolved_at.is_some() {
                AlertState::Inactive
            } else {
                a.state
            };
            let labels = a
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.insert(a.labels.to_string(), (state, labels));
        }
    }
    out
}

/// Alerts that went pending, and pending ones that went away without firing.
fn pending_changes(
    before: &BTreeMap<String, (AlertState, BTreeMap<String, String>)>,
    after: &BTreeMap<String, (AlertState, BTreeMap<String, String>)>,
    at: i64,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (k, (to, labels)) in after {
        let from = before.get(k).map_or(AlertState::Inactive, |(s, _)| *s);
        if *to == AlertState::Pending && from == AlertState::Inactive {
            out.push(Change {
                labels: labels.clone(),
                from,
                to: *to,
                at,
            });
        }
    }
    for (k, (from, labels)) in before {
        let to = after.get(k).map_or(AlertState::Inactive, |(s, _)| *s);
        if *from == AlertState::Pending && to == AlertState::Inactive {
            out.push(Change {
                labels: labels.clone(),
                from: *from,
                to,
                at,
            });
        }
    }
    out
}

struct Running {
    /// The definition it runs (its debug form), to tell a changed group.
    definition: String,
    state: Arc<Mutex<GroupState>>,
    task: tokio::task::JoinHandle<()>,
    missed: Arc<std::sync::atomic::AtomicU64>,
}

/// The rule manager. See the module documentation.
pub struct Manager {
    db: Arc<tsdb::Db>,
    settings: Settings,
    send: Send,
    on_change: OnChange,
    groups: Mutex<BTreeMap<String, Running>>,
}

fn now_ms() -> i64 {
    tsdb::now_ms()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock is a bug; the state stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A group as the API shows it: its state (cloned) and its counters.
pub struct GroupView {
    pub state: GroupState,
    pub missed: u64,
}

impl Manager {
    pub fn new(
        db: Arc<tsdb::Db>,
        settings: Settings,
        send: Send,
        on_change: OnChange,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            db,
            settings,
            send,
            on_change,
            groups: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs exactly these groups from now on. `first` says whether they come with the
    /// server's start (their alerts are restored) or later (nothing to restore).
    pub fn update(self: &Arc<Self>, groups: Vec<Group>, first: bool) {
        let mut running = lock(&self.groups);
        let mut next: BTreeMap<String, Running> = BTreeMap::new();
        for g in groups {
            let key = g.key();
            let definition = format!("{g:?}");
            if let Some(old) = running.remove(&key) {
                if old.definition == definition {
                    next.insert(key, old);
                    continue;
                }
                old.task.abort();
                let mut state = GroupState::new(g, self.settings.default_interval_ms);
                state.copy_state_from(&lock(&old.state));
                next.insert(key, self.start(state, definition));
                continue;
            }
            let state = GroupState::new(g, self.settings.default_interval_ms);
            let state = if first {
                state
            } else {
                state.without_restore()
            };
            next.insert(key, self.start(state, definition));
        }
        let mut gone: BTreeSet<tsdb::Labels> = BTreeSet::new();
        let mut wait_ms = 0;
        for (key, old) in std::mem::take(&mut *running) {
            tracing::info!("rule group {key} removed");
            old.task.abort();
            let st = lock(&old.state);
            gone.extend(st.written_series().cloned());
            wait_ms = wait_ms.max(2 * st.interval_ms());
        }
        *running = next;
        drop(running);
        if !gone.is_empty() {
            let me = self.clone();
            let at = now_ms();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait_ms.unsigned_abs())).await;
                me.mark_stale(gone, at).await;
            });
        }
    }

    /// Writes a staleness marker at `at` for each of `series` that no running group
    /// wrote in its latest evaluation.
    async fn mark_stale(self: Arc<Self>, mut series: BTreeSet<tsdb::Labels>, at: i64) {
        for r in lock(&self.groups).values() {
            for l in lock(&r.state).written_series() {
                series.remove(l);
            }
        }
        if series.is_empty() {
            return;
        }
        let stale = tsdb::Sample {
            t: at,
            v: f64::from_bits(tsdb::STALE_NAN_BITS),
        };
        let samples: Vec<(tsdb::Labels, tsdb::Sample)> =
            series.into_iter().map(|l| (l, stale)).collect();
        let db = self.db.clone();
        let n = samples.len();
        let res =
            tokio::task::spawn_blocking(move || crate::eval::Sink::append(db.as_ref(), &samples))
                .await;
        match res {
            Ok(Ok(())) => tracing::info!("{n} series of removed rule groups marked stale"),
            Ok(Err(e)) => tracing::warn!("marking series of removed rule groups stale: {e}"),
            Err(e) => tracing::warn!("marking series of removed rule groups stale: {e}"),
        }
    }

    fn start(self: &Arc<Self>, state: GroupState, definition: String) -> Running {
        let state = Arc::new(Mutex::new(state));
        let missed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn(self.clone().group_loop(state.clone(), missed.clone()));
        Running {
            definition,
            state,
            task,
            missed,
        }
    }

    async fn group_loop(
        self: Arc<Self>,
        state: Arc<Mutex<GroupState>>,
        missed: Arc<std::sync::atomic::AtomicU64>,
    ) {
        let (file, name, interval) = {
            let g = lock(&state);
            (
                g.group().file.clone(),
                g.group().name.clone(),
                g.interval_ms(),
            )
        };
        let mut schedule = Schedule::new(&file, &name, interval, now_ms());
        loop {
            let wait = schedule.next_ms() - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
            }
            let Some((ts, skipped)) = schedule.due(now_ms()) else {
                continue;
            };
            if skipped > 0 {
                missed.fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("rule group {name} ({file}): {skipped} evaluations missed");
            }
            let (db, settings, st) = (self.db.clone(), self.settings.clone(), state.clone());
            let done = tokio::task::spawn_blocking(move || {
                let engine = promql::Engine::new(settings.engine.clone());
                let mut g = lock(&st);
                // Compared with the states before; the first evaluation after start
                // (which restores them) with nothing, once restored.
                let before = if g.restore_pending() {
                    BTreeMap::new()
                } else {
                    states(&g)
                };
                let mut res = g.eval(db.as_ref(), db.as_ref(), &engine, ts, &settings.eval);
                if g.restore_pending() {
                    g.restore(
                        db.as_ref(),
                        ts,
                        settings.outage_tolerance_ms,
                        settings.for_grace_ms,
                    );
                    // Evaluated again at once, so restored alerts take their state (a
                    // firing one fires again) without a pending interval in between;
                    // samples of the same timestamp are dropped as duplicates. What the
                    // first evaluation had due for sending is sent too (it counts as
                    // sent for the second).
                    let again = g.eval(db.as_ref(), db.as_ref(), &engine, ts, &settings.eval);
                    res.firing.extend(again.firing);
                    res.resolved.extend(again.resolved);
                }
                let changes = pending_changes(&before, &states(&g), ts);
                (res, changes)
            })
            .await;
            match done {
                Ok((res, changes)) => {
                    if !changes.is_empty() {
                        (self.on_change)(changes);
                    }
                    let mut out = res.firing;
                    out.extend(res.resolved);
                    if !out.is_empty() {
                        (self.send)(out);
                    }
                }
                Err(e) => tracing::error!("rule group {name} ({file}): evaluation failed: {e}"),
            }
        }
    }

    /// Every group, by key: a copy of its state.
    pub fn groups(&self) -> Vec<GroupView> {
        lock(&self.groups)
            .values()
            .map(|r| GroupView {
                state: lock(&r.state).clone(),
                missed: r.missed.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }

    /// Stops every group.
    pub fn stop(&self) {
        for (_, r) in std::mem::take(&mut *lock(&self.groups)) {
            r.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(
        entries: &[(&str, AlertState)],
    ) -> BTreeMap<String, (AlertState, BTreeMap<String, String>)> {
        entries
            .iter()
            .map(|(k, s)| {
                (
                    k.to_string(),
                    (
                        *s,
                        BTreeMap::from([("alertname".to_string(), k.to_string())]),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn only_changes_into_and_out_of_pending_are_reported() {
        use AlertState::*;
        let before = set(&[
            ("a", Pending),
            ("b", Pending),
            ("c", Firing),
            ("e", Inactive),
        ]);
        let after = set(&[("a", Firing), ("d", Pending), ("e", Pending)]);
        let mut got: Vec<(String, AlertState, AlertState)> = pending_changes(&before, &after, 7)
            .into_iter()
            .map(|c| (c.labels["alertname"].clone(), c.from, c.to))
            .collect();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                ("b".to_string(), Pending, Inactive),
                ("d".to_string(), Inactive, Pending),
                ("e".to_string(), Inactive, Pending),
            ]
        );
    }
}
