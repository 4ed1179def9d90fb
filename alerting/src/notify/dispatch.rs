/*!
The dispatcher: the loop that acts on time. At each wake-up it

1. records the alerts whose end has passed as resolved (history, acknowledgements
   end);
2. flushes every aggregation group whose timer is due: silences and inhibition rules
   are applied, and for each integration of the route's receiver the notification
   log decides whether anything changed (Alertmanager's dedup: new firing alerts,
   newly resolved ones when `send_resolved`, everything resolved, or
   `repeat_interval` passed — and, in Minos, not the last one while every firing
   alert is acknowledged); what must be sent goes to the outbox;
3. escalates: firing alerts notified more than `escalate_after` ago and still
   unacknowledged are sent to the route's `escalate_to` receiver (with its own
   notification-log entry, so it is told once, then every `repeat_interval`, and
   when they resolve);
4. forgets resolved alerts every group has flushed.

A route whose time intervals mute it at that instant (inside one of its
`mute_time_intervals`, or outside all of its `active_time_intervals`) sends nothing,
as in Alertmanager: its due groups flush without a notification and without a
notification-log entry, so the first flush after the interval ends compares with
what was last really sent (new alerts go out then; alerts already notified wait for
`repeat_interval`). As in Alertmanager, a muted flush still drops the group's resolved
alerts, so a resolution that happens entirely inside a muted period is not sent. The
escalation of a muted route is muted too: it belongs to the route (`escalate_to`
names a receiver, which has no intervals of its own) and goes out, if still
unacknowledged, at the first wake-up after the interval ends.

The changes of one wake-up are written in one transaction (outbox rows together
with the notification-log entries that say they were sent), then applied to memory.
*/

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::notify::config::Route;
use crate::notify::matcher::all_match;
use crate::notify::message::{AlertStatus, Notification, NotifiedAlert};
use crate::notify::notifier::{NotifyState, SilenceState};
use crate::notify::route::time_muted_by;
use crate::notify::store::{
    self, AlertRecord, Batch, HistoryRow, NflogEntry, NflogKey, OutboxInsert, OutboxMeta, State,
};
use crate::notify::{Error, Fingerprint, Notifier, lock, ms, now_ms};

/// What mutes each alert now.
#[derive(Debug, Default)]
pub(crate) struct Mutes {
    /// Alert → the active silences matching it.
    pub(crate) silenced: HashMap<Fingerprint, Vec<String>>,
    /// Alert → the firing alerts inhibiting it.
    pub(crate) inhibited: HashMap<Fingerprint, Vec<Fingerprint>>,
}

impl Mutes {
    fn muted(&self, f: &Fingerprint) -> bool {
        self.silenced.contains_key(f) || self.inhibited.contains_key(f)
    }
}

/// Computes silences and inhibitions for every known alert at `now`.
///
/// Inhibition is Alertmanager's: a firing alert matching a rule's source mutes every
/// alert matching its target with equal values of the `equal` labels (absent labels
/// count as empty), except itself.
pub(crate) fn mutes(st: &NotifyState, now: i64) -> Mutes {
    let mut m = Mutes::default();
    let active: Vec<_> = st
        .silences
        .values()
        .filter(|s| s.state(now) == SilenceState::Active)
        .collect();
    if !active.is_empty() {
        for a in st.alerts.values() {
            let ids: Vec<String> = active
                .iter()
                .filter(|s| all_match(&s.matchers, &a.labels))
                .map(|s| s.id.clone())
                .collect();
            if !ids.is_empty() {
                m.silenced.insert(a.fingerprint, ids);
            }
        }
    }
    for rule in st.config.inhibit_rules() {
        let equal_values = |a: &AlertRecord| -> Vec<String> {
            rule.equal
                .iter()
                .map(|l| a.labels.get(l).cloned().unwrap_or_default())
                .collect()
        };
        let mut sources: HashMap<Vec<String>, Vec<Fingerprint>> = HashMap::new();
        for a in st.alerts.values() {
            if !a.resolved_at(now) && all_match(&rule.source, &a.labels) {
                sources
                    .entry(equal_values(a))
                    .or_default()
                    .push(a.fingerprint);
            }
        }
        if sources.is_empty() {
            continue;
        }
        for a in st.alerts.values() {
            if !all_match(&rule.target, &a.labels) {
                continue;
            }
            if let Some(srcs) = sources.get(&equal_values(a)) {
                let others = srcs.iter().filter(|f| **f != a.fingerprint).copied();
                let entry = m.inhibited.entry(a.fingerprint).or_default();
                entry.extend(others);
                if entry.is_empty() {
                    m.inhibited.remove(&a.fingerprint);
                }
            }
        }
    }
    m
}

/// Whether an integration must be told about a group (Alertmanager's `needsUpdate`,
/// plus acknowledgements and state mirroring).
#[allow(clippy::too_many_arguments)]
fn needs_update(
    entry: Option<&NflogEntry>,
    firing: &BTreeSet<Fingerprint>,
    resolved: &BTreeSet<Fingerprint>,
    repeat: i64,
    send_resolved: bool,
    all_acked: bool,
    mirror: bool,
    now: i64,
) -> bool {
    if mirror {
        // A mirror is sent the group at every flush so its copy does not expire.
        return !firing.is_empty()
            || entry.is_some_and(|e| !e.firing.is_empty() || !resolved.is_subset(&e.resolved));
    }
    let Some(e) = entry else {
        // Never notified: only firing alerts are news.
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        // Everything resolved: tell whoever heard it fire (send_resolved decides
        // whether the message has content; the log is cleared either way).
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    if all_acked {
        // Someone took every firing alert: no reminders until one resolves or an
        // acknowledgement lapses.
        return false;
    }
    e.sent_at.saturating_add(repeat) <= now
}

/// The changes one wake-up decides.
#[derive(Debug, Default)]
struct Plan {
    batch: Batch,
    /// Parallel to `batch.outbox_insert`.
    outbox_meta: Vec<OutboxMeta>,
    /// Alerts first notified now.
    notified: BTreeSet<Fingerprint>,
    /// Alerts whose end passed: now recorded resolved.
    resolved: Vec<Fingerprint>,
    ended_acks: Vec<Fingerprint>,
    /// (group key, next flush, resolved alerts to drop from it)
    flushed: Vec<(String, i64, Vec<Fingerprint>)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.flushed.is_empty()
    }
}

/// An alert as notifications show it at `now`.
fn notified_alert(st: &NotifyState, a: &AlertRecord, now: i64) -> NotifiedAlert {
    let resolved = a.resolved_at(now);
    NotifiedAlert {
        fingerprint: a.fingerprint,
        status: if resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        starts_at: a.starts_at,
        ends_at: resolved.then_some(a.ends_at),
        generator_url: a.generator_url.clone(),
        acked_by: if resolved {
            None
        } else {
            st.active_ack(a.fingerprint, now).map(|k| k.by.clone())
        },
    }
}

/// Plans the notifications of one group to one receiver's integrations.
#[allow(clippy::too_many_arguments)]
fn plan_receiver(
    st: &NotifyState,
    plan: &mut Plan,
    key: &str,
    group: &crate::notify::notifier::Group,
    route: &Route,
    receiver: &str,
    escalation: bool,
    firing: &BTreeSet<Fingerprint>,
    resolved: &BTreeSet<Fingerprint>,
    now: i64,
) {
    let Some(rcv) = st.config.receiver(receiver) else {
        return;
    };
    let all_acked = !firing.is_empty() && firing.iter().all(|f| st.active_ack(*f, now).is_some());
    for (idx, integ) in rcv.integrations.iter().enumerate() {
        let nkey = NflogKey {
            group_key: key.to_string(),
            receiver: receiver.to_string(),
            idx: u32::try_from(idx).unwrap_or(u32::MAX),
            escalation,
        };
        let entry = st.nflog.get(&nkey);
        // The escalation receiver hears only of resolutions of what it was told.
        let resolved_here: BTreeSet<Fingerprint> = if escalation {
            entry.map_or_else(BTreeSet::new, |e| {
                resolved.intersection(&e.firing).copied().collect()
            })
        } else {
            resolved.clone()
        };
        if !needs_update(
            entry,
            firing,
            &resolved_here,
            ms(route.repeat_interval),
            integ.send_resolved(),
            all_acked && !escalation,
            integ.mirrors_state(),
            now,
        ) {
            continue;
        }
        let nf = NflogEntry {
            firing: firing.clone(),
            resolved: resolved_here.clone(),
            sent_at: now,
        };
        plan.batch.nflog_upsert.push((nkey.clone(), nf));
        let mut alerts: Vec<NotifiedAlert> = firing
            .iter()
            .chain(resolved_here.iter().filter(|_| integ.send_resolved()))
            .filter_map(|f| st.alerts.get(f))
            .map(|a| notified_alert(st, a, now))
            .collect();
        if alerts.is_empty() {
            continue;
        }
        alerts.sort_by(|a, b| {
            (
                a.status == AlertStatus::Resolved,
                a.starts_at,
                a.fingerprint,
            )
                .cmp(&(
                    b.status == AlertStatus::Resolved,
                    b.starts_at,
                    b.fingerprint,
                ))
        });
        if !escalation {
            for a in &alerts {
                if a.status == AlertStatus::Firing
                    && st
                        .alerts
                        .get(&a.fingerprint)
                        .is_some_and(|r| r.notified_at.is_none())
                {
                    plan.notified.insert(a.fingerprint);
                }
            }
        }
        let fingerprints: BTreeSet<Fingerprint> = alerts.iter().map(|a| a.fingerprint).collect();
        let n = Notification {
            receiver: receiver.to_string(),
            group_key: key.to_string(),
            group_labels: group.labels.clone(),
            alerts,
            escalation,
            created_at: now,
            resend_ttl_ms: ms(route.group_interval).saturating_mul(3),
        };
        let payload = match serde_json::to_string(&n) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(group = key, "notification not encodable: {e}");
                continue;
            }
        };
        plan.outbox_meta.push(OutboxMeta {
            key: nkey.clone(),
            fingerprints: fingerprints.clone(),
            created_at: now,
            attempts: 0,
            next_attempt: now,
        });
        plan.batch.outbox_insert.push(OutboxInsert {
            key: nkey,
            kind: integ.kind().as_str(),
            fingerprints,
            payload,
            created_at: now,
        });
    }
}

/// Decides what this wake-up changes.
fn plan(st: &NotifyState, now: i64) -> Plan {
    let mut plan = Plan::default();
    // 1. Ends that passed without a word from the rule engine.
    for a in st.alerts.values() {
        if a.state == State::Firing && a.resolved_at(now) {
            let mut r = a.clone();
            r.state = State::Resolved;
            plan.batch.history.push(HistoryRow {
                fingerprint: a.fingerprint,
                labels: a.labels.clone(),
                from: "firing",
                to: "resolved",
                at: a.ends_at,
                detail: String::new(),
            });
            if let Some(ack) = st.acks.get(&a.fingerprint) {
                plan.batch.acks_end.push((ack.id, now, "resolved".into()));
                plan.ended_acks.push(a.fingerprint);
            }
            plan.batch.alerts_upsert.push(r);
            plan.resolved.push(a.fingerprint);
        }
    }
    let mutes = mutes(st, now);
    let cfg = st.config.clone();
    let mut removed: HashMap<&str, Vec<Fingerprint>> = HashMap::new();
    // 2 and 3. Flushes and escalations.
    for (key, g) in &st.groups {
        let Some(route) = cfg.routes().get(g.route) else {
            continue;
        };
        let due = g.next_flush <= now;
        if !due && route.escalation.is_none() {
            continue;
        }
        let muted_by = time_muted_by(&cfg, route, now);
        let time_muted = !muted_by.is_empty();
        if due && time_muted {
            tracing::debug!(
                group = key,
                "not notified: muted by time intervals {muted_by:?}"
            );
        }
        let mut firing = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        for f in &g.alerts {
            let Some(a) = st.alerts.get(f) else { continue };
            if mutes.muted(f) {
                continue;
            }
            if a.resolved_at(now) {
                resolved.insert(*f);
            } else {
                firing.insert(*f);
            }
        }
        if due {
            if !time_muted {
                plan_receiver(
                    st,
                    &mut plan,
                    key,
                    g,
                    route,
                    &route.receiver,
                    false,
                    &firing,
                    &resolved,
                    now,
                );
            }
            // Alertmanager drops the resolved alerts of a flushed group, muted or not.
            let gone: Vec<Fingerprint> = g
                .alerts
                .iter()
                .filter(|f| st.alerts.get(f).is_none_or(|a| a.resolved_at(now)))
                .copied()
                .collect();
            removed.insert(key, gone.clone());
            plan.flushed.push((
                key.clone(),
                now.saturating_add(ms(route.group_interval)),
                gone,
            ));
        }
        if let Some(esc) = &route.escalation
            && !time_muted
        {
            let after = ms(esc.after);
            let eligible: BTreeSet<Fingerprint> = firing
                .iter()
                .filter(|f| st.active_ack(**f, now).is_none())
                .filter(|f| {
                    st.alerts
                        .get(f)
                        .and_then(|a| a.notified_at)
                        .is_some_and(|t| t.saturating_add(after) <= now)
                })
                .copied()
                .collect();
            plan_receiver(
                st,
                &mut plan,
                key,
                g,
                route,
                &esc.receiver,
                true,
                &eligible,
                &resolved,
                now,
            );
        }
    }
    // 4. Resolved alerts that no group holds any more.
    let mut held: BTreeSet<Fingerprint> = BTreeSet::new();
    for (key, g) in &st.groups {
        let gone = removed.get(key.as_str());
        held.extend(
            g.alerts
                .iter()
                .filter(|f| gone.is_none_or(|r| !r.contains(f))),
        );
    }
    for a in st.alerts.values() {
        if a.resolved_at(now) && !held.contains(&a.fingerprint) {
            plan.batch.alerts_delete.push(a.fingerprint);
        }
    }
    plan
}

/// Applies a written plan to memory.
fn apply(n: &Notifier, plan: Plan, written: &store::Written, now: i64) {
    let outbox_meta = {
        let mut st = lock(&n.state);
        apply_to_state(&mut st, plan, now)
    };
    let queued = outbox_meta.len();
    if queued > 0 {
        let mut ob = lock(&n.outbox);
        for (id, meta) in written.outbox_ids.iter().zip(outbox_meta) {
            ob.add(*id, meta);
        }
        n.counters
            .queued
            .fetch_add(u64::try_from(queued).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The part of [`apply`] that changes [`NotifyState`]; returns the metadata of the
/// outbox rows the plan queued, parallel to the ids the write returned.
fn apply_to_state(st: &mut NotifyState, plan: Plan, now: i64) -> Vec<OutboxMeta> {
    for f in &plan.resolved {
        if let Some(a) = st.alerts.get_mut(f) {
            a.state = State::Resolved;
        }
    }
    for f in &plan.ended_acks {
        st.acks.remove(f);
    }
    for f in &plan.notified {
        if let Some(a) = st.alerts.get_mut(f)
            && a.notified_at.is_none()
        {
            a.notified_at = Some(now);
        }
    }
    for (k, e) in plan.batch.nflog_upsert {
        st.nflog.insert(k, e);
    }
    for (key, next, gone) in plan.flushed {
        let empty = match st.groups.get_mut(&key) {
            Some(g) => {
                g.next_flush = next;
                g.flushed = true;
                for f in &gone {
                    g.alerts.remove(f);
                }
                g.alerts.is_empty()
            }
            None => false,
        };
        if empty {
            st.groups.remove(&key);
        }
    }
    for f in &plan.batch.alerts_delete {
        st.alerts.remove(f);
    }
    plan.outbox_meta
}

/// One wake-up: plan, write, apply.
async fn tick(n: &Notifier) -> Result<(), Error> {
    let _w = n.writer.lock().await;
    let now = now_ms();
    let mut plan = {
        let st = lock(&n.state);
        plan(&st, now)
    };
    if plan.is_empty() {
        return Ok(());
    }
    // The notified-at times are part of the alert rows.
    if !plan.notified.is_empty() {
        let st = lock(&n.state);
        for f in &plan.notified {
            let already = plan
                .batch
                .alerts_upsert
                .iter_mut()
                .find(|r| r.fingerprint == *f);
            match already {
                Some(r) => r.notified_at = r.notified_at.or(Some(now)),
                None => {
                    if let Some(a) = st.alerts.get(f) {
                        let mut r = a.clone();
                        r.notified_at = Some(now);
                        plan.batch.alerts_upsert.push(r);
                    }
                }
            }
        }
    }
    let written = store::write(&n.pool, &plan.batch).await?;
    let queued = !plan.batch.outbox_insert.is_empty();
    apply(n, plan, &written, now);
    if queued {
        n.deliver_wake.notify_one();
    }
    Ok(())
}

/// When the dispatcher must look again (Unix ms).
fn next_wake(st: &NotifyState, now: i64) -> i64 {
    let mut t = now.saturating_add(60_000);
    for g in st.groups.values() {
        t = t.min(g.next_flush);
        let Some(route) = st.config.routes().get(g.route) else {
            continue;
        };
        if let Some(esc) = &route.escalation {
            for f in &g.alerts {
                let Some(a) = st.alerts.get(f) else { continue };
                if let Some(nt) = a.notified_at {
                    let d = nt.saturating_add(ms(esc.after));
                    if d > now && !a.resolved_at(now) {
                        t = t.min(d);
                    }
                }
            }
        }
    }
    for a in st.alerts.values() {
        if a.state == State::Firing && a.ends_at > now {
            t = t.min(a.ends_at);
        }
    }
    for k in st.acks.values() {
        if let Some(e) = k.expires_at
            && e > now
        {
            t = t.min(e);
        }
    }
    t
}

/// How long notification-log entries of vanished groups are kept: Alertmanager's
/// default (120h), or twice the longest repeat interval if that is longer.
fn nflog_retention(st: &NotifyState) -> i64 {
    let longest = st
        .config
        .routes()
        .iter()
        .map(|r| ms(r.repeat_interval))
        .max()
        .unwrap_or(0);
    (120 * 3600 * 1000_i64).max(longest.saturating_mul(2))
}

/// Deletes what is past its retention, in the database and in memory.
async fn maintain(n: &Notifier) -> Result<(), Error> {
    let _w = n.writer.lock().await;
    let now = now_ms();
    let (live, nflog_before) = {
        let st = lock(&n.state);
        let live: BTreeSet<String> = st.groups.keys().cloned().collect();
        (live, now.saturating_sub(nflog_retention(&st)))
    };
    let history_before = now.saturating_sub(ms(n.opts.history_retention));
    let log_before = now.saturating_sub(ms(n.opts.log_retention));
    store::prune(&n.pool, history_before, log_before, nflog_before, &live).await?;
    let mut st = lock(&n.state);
    st.nflog
        .retain(|k, e| live.contains(&k.group_key) || e.sent_at >= nflog_before);
    st.silences.retain(|_, s| s.ends_at >= log_before);
    st.acks.retain(|_, k| k.expires_at.is_none_or(|e| e > now));
    Ok(())
}

/// How often retention is enforced.
const MAINTENANCE_EVERY: i64 = 10 * 60 * 1000;

/// The dispatcher loop; returns when the notifier is asked to stop.
pub(crate) async fn run(n: Arc<Notifier>) {
    let mut stop = n.stop.subscribe();
    let mut next_maintenance = 0_i64;
    loop {
        if *stop.borrow() {
            break;
        }
        let mut delay = match tick(&n).await {
            Ok(()) => {
                let now = now_ms();
                let st = lock(&n.state);
                next_wake(&st, now).saturating_sub(now)
            }
            Err(e) => {
                tracing::error!("notifier: dispatch failed, retrying in 1s: {e}");
                1000
            }
        };
        let now = now_ms();
        if now >= next_maintenance {
            if let Err(e) = maintain(&n).await {
                tracing::warn!("notifier: pruning old entries failed: {e}");
            }
            next_maintenance = now.saturating_add(MAINTENANCE_EVERY);
        }
        delay = delay.clamp(1, 60_000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::try_from(delay).unwrap_or(1))) => {}
            _ = n.dispatch_wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u64]) -> BTreeSet<Fingerprint> {
        v.iter().map(|x| Fingerprint(*x)).collect()
    }

    fn entry(firing: &[u64], resolved: &[u64], sent_at: i64) -> NflogEntry {
        NflogEntry {
            firing: set(firing),
            resolved: set(resolved),
            sent_at,
        }
    }

    #[test]
    fn dedup_follows_alertmanager() {
        let nu = |e: Option<&NflogEntry>, f: &[u64], r: &[u64], sr: bool, acked: bool, now: i64| {
            needs_update(e, &set(f), &set(r), 100, sr, acked, false, now)
        };
        // Never notified: only firing alerts are news.
        assert!(nu(None, &[1], &[], false, false, 0));
        assert!(!nu(None, &[], &[1], true, false, 0));
        let e = entry(&[1], &[], 0);
        // Nothing new within repeat_interval.
        assert!(!nu(Some(&e), &[1], &[], true, false, 50));
        // A new firing alert.
        assert!(nu(Some(&e), &[1, 2], &[], false, false, 50));
        // Everything resolved, whether or not resolved alerts are sent.
        assert!(nu(Some(&e), &[], &[1], false, false, 50));
        // A newly resolved alert while others fire: only with send_resolved.
        let e2 = entry(&[1, 2], &[], 0);
        assert!(nu(Some(&e2), &[1], &[2], true, false, 50));
        assert!(!nu(Some(&e2), &[1], &[2], false, false, 50));
        // Repeat interval.
        assert!(nu(Some(&e), &[1], &[], false, false, 100));
        // ... but not while every firing alert is acknowledged.
        assert!(!nu(Some(&e), &[1], &[], false, true, 1000));
        // A mirror gets the group at every flush.
        assert!(needs_update(
            Some(&e),
            &set(&[1]),
            &set(&[]),
            100,
            true,
            false,
            true,
            1
        ));
    }

    /// A route muted at night (Europe/Berlin) with an escalation: the dispatcher is
    /// woken every 30 s over two days and must send nothing while muted, then send at
    /// the first flush after the interval ends, measured in Berlin's wall-clock time
    /// across the switch to summer time.
    #[test]
    fn a_time_muted_route_sends_nothing_until_its_interval_ends() {
        use crate::notify::config::Config;
        use crate::notify::notifier::route_alert;
        use crate::notify::{Labels, fingerprint};

        let yaml = r#"
route:
  receiver: team
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: [team="db"]
      receiver: db
      mute_time_intervals: [night]
      escalate_after: 30m
      escalate_to: boss
receivers:
  - name: team
    webhook_configs: [{url: 'http://127.0.0.1:9/team'}]
  - name: db
    webhook_configs: [{url: 'http://127.0.0.1:9/db'}]
  - name: boss
    webhook_configs: [{url: 'http://127.0.0.1:9/boss'}]
time_intervals:
  - name: night
    time_intervals:
      - times: [{start_time: '22:00', end_time: '24:00'}, {start_time: '00:00', end_time: '07:00'}]
        location: Europe/Berlin
"#;
        let config = Arc::new(Config::parse(yaml).unwrap());
        let mut st = NotifyState {
            config,
            alerts: HashMap::new(),
            groups: std::collections::BTreeMap::new(),
            nflog: HashMap::new(),
            silences: std::collections::BTreeMap::new(),
            acks: HashMap::new(),
        };
        let utc = |s: &str| {
            let dt: jiff::civil::DateTime = s.parse().unwrap();
            jiff::tz::TimeZone::UTC
                .to_timestamp(dt)
                .unwrap()
                .as_millisecond()
        };
        let fire = |st: &mut NotifyState, name: &str, now: i64| {
            let labels: Labels = [("alertname", name), ("team", "db")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let rec = AlertRecord {
                fingerprint: fingerprint(&labels),
                labels,
                annotations: Labels::new(),
                starts_at: now,
                ends_at: i64::MAX,
                timeout: false,
                generator_url: String::new(),
                updated_at: now,
                state: State::Firing,
                notified_at: None,
            };
            route_alert(st, &rec, now);
            st.alerts.insert(rec.fingerprint, rec);
        };
        // Wakes the dispatcher every 30 s in [from, to); returns every notification
        // planned: (when, receiver, alert names).
        let run = |st: &mut NotifyState, from: i64, to: i64| {
            let mut sent: Vec<(i64, String, Vec<String>)> = Vec::new();
            let mut now = from;
            while now < to {
                let p = plan(st, now);
                for o in &p.batch.outbox_insert {
                    let n: Notification = serde_json::from_str(&o.payload).unwrap();
                    let names = n.alerts.iter().map(|a| a.labels["alertname"].clone());
                    sent.push((now, o.key.receiver.clone(), names.collect()));
                }
                apply_to_state(st, p, now);
                now += 30_000;
            }
            sent
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // Saturday 2024-03-30, 20:45 UTC = 21:45 CET: notified after group_wait,
        // before the night starts; its escalation falls due at 22:15:30 CET, muted.
        let evening = utc("2024-03-30T20:45");
        fire(&mut st, "Replication", evening);
        let sent = run(&mut st, evening, utc("2024-03-30T21:30"));
        assert_eq!(
            sent,
            [(evening + 30_000, "db".into(), names(&["Replication"]))]
        );
        // 23:00 CET: a new alert in the night. The clocks go forward at 02:00 CET, and
        // the night ends at 07:00 CEST, 05:00 UTC.
        fire(&mut st, "DiskFull", utc("2024-03-30T22:00"));
        let sent = run(&mut st, utc("2024-03-30T21:30"), utc("2024-03-31T05:00"));
        assert_eq!(sent, [], "nothing while muted, escalation included");
        let key = NflogKey {
            group_key: st.groups.keys().next().unwrap().clone(),
            receiver: "db".into(),
            idx: 0,
            escalation: false,
        };
        assert_eq!(
            st.nflog[&key].sent_at,
            evening + 30_000,
            "muted flushes record nothing"
        );

        // At 05:00 UTC the overdue escalation goes out; the group, flushing every
        // 5 min from 20:45:30, sends the new alert with the old one at 05:00:30; the
        // new alert escalates 30 min later.
        let sent = run(&mut st, utc("2024-03-31T05:00"), utc("2024-03-31T05:31"));
        assert_eq!(
            sent,
            [
                (
                    utc("2024-03-31T05:00"),
                    "boss".into(),
                    names(&["Replication"])
                ),
                (
                    utc("2024-03-31T05:00:30"),
                    "db".into(),
                    names(&["Replication", "DiskFull"])
                ),
                (
                    utc("2024-03-31T05:30:30"),
                    "boss".into(),
                    names(&["Replication", "DiskFull"])
                ),
            ]
        );
    }
}
