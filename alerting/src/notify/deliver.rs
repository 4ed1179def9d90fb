/*!
The delivery loop: drains the outbox to the integrations.

Rows are delivered in order per (group, receiver, integration), one at a time, many
such keys in parallel (up to `Options::max_parallel_deliveries`). A failed attempt
is retried after `retry_initial`, doubling up to `retry_max`, until it succeeds, is
superseded, or is older than `give_up_after`; an error the receiver will give again
(HTTP 4xx, a permanent SMTP answer) drops the row at once. A row is superseded when
a later row of the same key covers all its alerts: the later one carries their newer
state. Every attempt, successful or not, is written to the notification log.

A template field that fails to render at send time does not stop the delivery: the
integration sends the built-in text for that field, the delivery counts as sent, and
its log entry carries the template error (so it reads as not ok: what people got is
not what the config asked for, and the template needs fixing). Retrying would not
help: the same data fails the same way.

A row leaves the outbox only after its delivery: a crash between sending and
recording means the notification is sent again at the next start (at least once,
never lost).
*/

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::notify::integrations::{Context, SendError};
use crate::notify::message::Notification;
use crate::notify::store::{self, LogRow, NflogKey, OutboxMeta};
use crate::notify::{Notifier, lock, ms, now_ms};

/// The outbox as the delivery loop sees it.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Every row, by id (ids grow: ascending is oldest first).
    rows: BTreeMap<i64, OutboxMeta>,
    /// Rows being delivered, or deleted, right now.
    busy: HashSet<i64>,
}

impl Outbox {
    pub(crate) fn new(rows: Vec<(i64, OutboxMeta)>) -> Outbox {
        Outbox {
            rows: rows.into_iter().collect(),
            busy: HashSet::new(),
        }
    }

    pub(crate) fn add(&mut self, id: i64, meta: OutboxMeta) {
        self.rows.insert(id, meta);
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Chooses what to start now: per key, drops heads a later row covers
    /// (returned as superseded), then starts the head if it is due. Marks both busy.
    /// Also returns when the next head falls due.
    fn pick(&mut self, now: i64, max_busy: usize) -> (Vec<i64>, Vec<i64>, Option<i64>) {
        let mut by_key: BTreeMap<&NflogKey, Vec<i64>> = BTreeMap::new();
        for (id, m) in &self.rows {
            by_key.entry(&m.key).or_default().push(*id);
        }
        let mut start = Vec::new();
        let mut superseded = Vec::new();
        let mut next: Option<i64> = None;
        for ids in by_key.values() {
            if ids.iter().any(|i| self.busy.contains(i)) {
                continue;
            }
            let mut i = 0;
            while i + 1 < ids.len() {
                let head = &self.rows[&ids[i]].fingerprints;
                let covered = ids[i + 1..]
                    .iter()
                    .any(|l| head.is_subset(&self.rows[l].fingerprints));
                if !covered {
                    break;
                }
                superseded.push(ids[i]);
                i += 1;
            }
            let head = ids[i];
            let due = self.rows[&head].next_attempt;
            if due <= now && self.busy.len() + start.len() < max_busy {
                start.push(head);
            } else {
                let at = due.max(now.saturating_add(50));
                next = Some(next.map_or(at, |n: i64| n.min(at)));
            }
        }
        self.busy.extend(start.iter().copied());
        self.busy.extend(superseded.iter().copied());
        (start, superseded, next)
    }

    fn forget(&mut self, id: i64) {
        self.rows.remove(&id);
        self.busy.remove(&id);
    }
}

/// The delay before attempt `attempt + 1` after `attempt` failures (1-based).
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    initial.saturating_mul(factor).min(max)
}

/// The delivery loop; returns when the notifier is asked to stop and in-flight
/// deliveries are done.
pub(crate) async fn run(n: Arc<Notifier>) {
    let mut stop = n.stop.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let now = now_ms();
        let (start, superseded, next) =
            lock(&n.outbox).pick(now, n.opts.max_parallel_deliveries.max(1));
        for id in superseded {
            match store::outbox_done(&n.pool, id, None).await {
                Ok(()) => lock(&n.outbox).forget(id),
                Err(e) => {
                    tracing::warn!("notifier: dropping superseded notification {id}: {e}");
                    lock(&n.outbox).busy.remove(&id);
                }
            }
        }
        for id in start {
            tasks.spawn(deliver_one(n.clone(), id));
        }
        let delay = next
            .map_or(60_000, |t| t.saturating_sub(now))
            .clamp(1, 60_000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::try_from(delay).unwrap_or(1))) => {}
            _ = n.deliver_wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Delivers one outbox row and records the outcome.
async fn deliver_one(n: Arc<Notifier>, id: i64) {
    let Some(meta) = lock(&n.outbox).rows.get(&id).cloned() else {
        return;
    };
    let attempt = meta.attempts.saturating_add(1);
    let outcome = attempt_delivery(&n, id, &meta, attempt).await;
    let now = now_ms();
    let result = match outcome {
        Outcome::Gone => {
            lock(&n.outbox).forget(id);
            Ok(())
        }
        Outcome::Delivered(log) => {
            n.counters.sent[kind_index(log.kind)].fetch_add(1, Ordering::Relaxed);
            store::outbox_done(&n.pool, id, Some(&log)).await.map(|()| {
                lock(&n.outbox).forget(id);
            })
        }
        Outcome::Failed(mut log, err) => {
            let k = kind_index(log.kind);
            n.counters.failed[k].fetch_add(1, Ordering::Relaxed);
            let too_old = now.saturating_sub(meta.created_at) >= ms(n.opts.give_up_after);
            if !err.retryable || too_old {
                n.counters.dropped[k].fetch_add(1, Ordering::Relaxed);
                let why = if err.retryable {
                    "gave up (too old)"
                } else {
                    "gave up (not retryable)"
                };
                tracing::warn!(
                    receiver = meta.key.receiver,
                    group = meta.key.group_key,
                    "notifier: {why}: {}",
                    err.message
                );
                log.error = Some(format!("{why}: {}", err.message));
                store::outbox_done(&n.pool, id, Some(&log)).await.map(|()| {
                    lock(&n.outbox).forget(id);
                })
            } else {
                let delay = backoff(n.opts.retry_initial, n.opts.retry_max, attempt);
                let next = now.saturating_add(ms(delay));
                tracing::info!(
                    receiver = meta.key.receiver,
                    group = meta.key.group_key,
                    attempt,
                    "notifier: delivery failed, retrying in {delay:?}: {}",
                    err.message
                );
                store::outbox_retry(&n.pool, id, attempt, next, &log)
                    .await
                    .map(|()| {
                        let mut ob = lock(&n.outbox);
                        if let Some(m) = ob.rows.get_mut(&id) {
                            m.attempts = attempt;
                            m.next_attempt = next;
                        }
                        ob.busy.remove(&id);
                    })
            }
        }
        Outcome::Dropped(log) => {
            n.counters.dropped[kind_index(log.kind)].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                receiver = meta.key.receiver,
                "notifier: dropping notification: {}",
                log.error.as_deref().unwrap_or("")
            );
            store::outbox_done(&n.pool, id, Some(&log)).await.map(|()| {
                lock(&n.outbox).forget(id);
            })
        }
    };
    if let Err(e) = result {
        // The row stays; it is delivered again later (at least once).
        tracing::error!("notifier: recording delivery {id} failed: {e}");
        let mut ob = lock(&n.outbox);
        if let Some(m) = ob.rows.get_mut(&id) {
            m.next_attempt = now.saturating_add(ms(n.opts.retry_initial));
        }
        ob.busy.remove(&id);
    }
    n.deliver_wake.notify_one();
}

enum Outcome {
    /// The row no longer exists.
    Gone,
    Delivered(LogRow),
    Failed(LogRow, SendError),
    /// Undeliverable: its receiver or integration is gone, or the row is unreadable.
    Dropped(LogRow),
}

fn kind_index(kind: &str) -> usize {
    crate::notify::integrations::Kind::ALL
        .iter()
        .position(|k| k.as_str() == kind)
        .unwrap_or(0)
}

fn static_kind(kind: &str) -> &'static str {
    crate::notify::integrations::Kind::ALL
        .iter()
        .find(|k| k.as_str() == kind)
        .map_or("unknown", |k| k.as_str())
}

async fn attempt_delivery(n: &Notifier, id: i64, meta: &OutboxMeta, attempt: u32) -> Outcome {
    let log = |kind: &'static str, alerts: usize, error: Option<String>, dur: i64| LogRow {
        at: now_ms(),
        key: meta.key.clone(),
        kind,
        alerts,
        error,
        attempt,
        duration_ms: dur,
    };
    let (kind, payload) = match store::outbox_payload(&n.pool, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Outcome::Gone,
        Err(e) => {
            return Outcome::Failed(
                log("unknown", 0, Some(e.to_string()), 0),
                SendError::retry(e.to_string()),
            );
        }
    };
    let kind = static_kind(&kind);
    let notification: Notification = match serde_json::from_str(&payload) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Dropped(log(kind, 0, Some(format!("unreadable payload: {e}")), 0));
        }
    };
    let (integration, templates) = {
        let st = lock(&n.state);
        let integration = st
            .config
            .receiver(&meta.key.receiver)
            .and_then(|r| r.integrations.get(meta.key.idx as usize))
            .filter(|i| i.kind().as_str() == kind)
            .cloned();
        (integration, st.config.templates().clone())
    };
    let Some(integration) = integration else {
        return Outcome::Dropped(log(
            kind,
            notification.alerts.len(),
            Some(format!(
                "receiver {:?} has no {kind} integration #{} any more",
                meta.key.receiver, meta.key.idx
            )),
            0,
        ));
    };
    let alerts = if integration.send_resolved() {
        notification.alerts.len()
    } else {
        notification.firing().count()
    };
    let cx = Context {
        http: n.http.clone(),
        external_url: n.opts.external_url.clone(),
        timeout: n.opts.delivery_timeout,
        templates,
    };
    let started = Instant::now();
    // The integrations bound their own I/O; this bounds everything else.
    let limit = n
        .opts
        .delivery_timeout
        .saturating_add(Duration::from_secs(5));
    let res = match tokio::time::timeout(limit, integration.send(&cx, &notification)).await {
        Ok(r) => r,
        Err(_) => Err(SendError::retry(format!("timed out after {limit:?}"))),
    };
    let dur = ms(started.elapsed());
    match res {
        Ok(errors) if errors.is_empty() => Outcome::Delivered(log(kind, alerts, None, dur)),
        Ok(errors) => {
            let msg = format!(
                "delivered with the built-in text in place of a failed template: {}",
                errors.join("; ")
            );
            tracing::warn!(receiver = meta.key.receiver, "notifier: {msg}");
            Outcome::Delivered(log(kind, alerts, Some(msg), dur))
        }
        Err(e) => Outcome::Failed(log(kind, alerts, Some(e.message.clone()), dur), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Fingerprint;

    fn meta(group: &str, fps: &[u64], next: i64) -> OutboxMeta {
        OutboxMeta {
            key: NflogKey {
                group_key: group.into(),
                receiver: "r".into(),
                idx: 0,
                escalation: false,
            },
            fingerprints: fps.iter().map(|f| Fingerprint(*f)).collect(),
            created_at: 0,
            attempts: 0,
            next_attempt: next,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), s(300), 1), s(1));
        assert_eq!(backoff(s(1), s(300), 2), s(2));
        assert_eq!(backoff(s(1), s(300), 5), s(16));
        assert_eq!(backoff(s(1), s(300), 20), s(300));
        assert_eq!(backoff(s(1), s(300), u32::MAX), s(300));
    }

    #[test]
    fn pick_keeps_order_per_key_and_drops_covered_rows() {
        let mut ob = Outbox::new(vec![
            (1, meta("a", &[1], 0)),
            (2, meta("a", &[1, 2], 0)),
            (3, meta("b", &[3], 0)),
            (4, meta("b", &[4], 0)),
            (5, meta("c", &[5], 500)),
        ]);
        let (start, superseded, next) = ob.pick(100, 10);
        assert_eq!(superseded, [1]);
        assert_eq!(start, [2, 3]);
        assert_eq!(next, Some(500));
        // Row 4 waits for row 3 of the same key.
        let (start, _, _) = ob.pick(100, 10);
        assert!(start.is_empty());
        ob.forget(3);
        let (start, _, _) = ob.pick(100, 10);
        assert_eq!(start, [4]);
    }

    #[test]
    fn pick_respects_the_parallelism_limit() {
        let mut ob = Outbox::new(vec![(1, meta("a", &[1], 0)), (2, meta("b", &[2], 0))]);
        let (start, _, next) = ob.pick(100, 1);
        assert_eq!(start, [1]);
        assert!(next.is_some());
    }
}
