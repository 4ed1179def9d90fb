/*!
Defines the evaluation of one rule group with Prometheus' semantics, over any
[`promql::Queryable`] and writing through a [`Sink`]: recording rules, alert states
(pending → firing → resolved, with `for` and `keep_firing_for`), the `ALERTS` and
`ALERTS_FOR_STATE` series, staleness markers, `limit`, the alerts to send, per-rule
health, and the restore of `for` state after a restart.

Boundary: no clock, no threads, no I/O of its own. The caller owns the schedule
([`Schedule`] computes Prometheus' slots), runs the evaluations of one group one after
the other, appends through the [`Sink`] it passes (usually the `tsdb::Db` it queries) and
delivers the alerts an evaluation returns.

# What survives a restart

Only what is in the database. Each evaluation writes, for every pending or firing alert,
`ALERTS{alertname, alertstate, ...}` = 1 and `ALERTS_FOR_STATE{alertname, ...}` = the
Unix second the alert became active. After a restart the group starts with no alerts and
with restore pending: its evaluations find the alerts again (as new, pending ones) but
write neither series, so the last samples from before the restart stay the latest. Then
[`GroupState::restore`] reads, for each alert found, its last `ALERTS_FOR_STATE` sample
within the outage tolerance and gives the alert back its `active_at`, so the `for` clock
continues where it stopped (Prometheus' `for_grace_period` rule applies: an alert never
fires sooner than the grace period after the restart unless it was already firing). An
alert that was firing fires again at the next evaluation, with a new `fired_at`; its
labels are those it had, so a receiver that keys alerts by labels (Alertmanager does)
sees the same alert, not a new one. Not kept: resolved alerts waiting to be re-sent, the
time of the last notification, `keep_firing_for` clocks, rule health.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use promql::{Engine, Queryable, Value};
use tsdb::{Labels, MatchOp, Matcher, Sample};

use crate::rulefile::{AlertingRule, Group, RecordingRule, Rule};
use crate::template::{self, QueryFn};

/// How long a resolved alert is kept (and re-sent) after it resolved (Prometheus'
/// `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;
/// Prometheus' default `--rules.alert.resend-delay`.
pub const DEFAULT_RESEND_DELAY_MS: i64 = 60_000;
/// Prometheus' default `--rules.alert.for-outage-tolerance`.
pub const DEFAULT_OUTAGE_TOLERANCE_MS: i64 = 3_600_000;
/// Prometheus' default `--rules.alert.for-grace-period`.
pub const DEFAULT_FOR_GRACE_PERIOD_MS: i64 = 600_000;

/// The metric of the alert series.
pub const ALERTS_METRIC: &str = "ALERTS";
/// The metric of the `for` state series.
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";

// ---------------------------------------------------------------------------------------
// Schedule
// ---------------------------------------------------------------------------------------

/// The offset of a group's evaluations within its interval, in nanoseconds: Prometheus'
/// hash of the labels `{file, name}` (xxHash64 over `file\xff<file>\xffname\xff<name>\xff`)
/// modulo the interval, so a group evaluates at the same phase on every server.
pub fn eval_offset_ns(file: &str, name: &str, interval_ms: i64) -> i64 {
    let mut b = Vec::with_capacity(file.len() + name.len() + 12);
    for (n, v) in [("file", file), ("name", name)] {
        b.extend_from_slice(n.as_bytes());
        b.push(0xff);
        b.extend_from_slice(v.as_bytes());
        b.push(0xff);
    }
    let h = xxhash_rust::xxh64::xxh64(&b, 0);
    let interval_ns = interval_ms.max(1) as u64 * 1_000_000;
    (h % interval_ns) as i64
}

/// Prometheus' `EvalTimestamp`: the latest of the group's evaluation slots at or before
/// `now_ms`. Slots are `interval` apart, shifted by [`eval_offset_ns`]. (Prometheus takes
/// the file and the name, not the `file;name` key: the key cannot be split back when a
/// name holds a `;`.)
pub fn group_eval_time(file: &str, name: &str, interval_ms: i64, now_ms: i64) -> i64 {
    let interval = interval_ms.max(1) * 1_000_000;
    let offset = eval_offset_ns(file, name, interval_ms);
    let adj = now_ms * 1_000_000 - offset;
    let base = adj - adj.rem_euclid(interval);
    (base + offset).div_euclid(1_000_000)
}

/// When a group evaluates, as Prometheus' group loop decides: the first evaluation at
/// the group's first slot after it started, then one per slot; when an evaluation ran
/// long, the slots it overran are skipped (and counted), never run late or at once.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval_ms: i64,
    next_ms: i64,
}

impl Schedule {
    /// The schedule of a group started at `now_ms`.
    pub fn new(file: &str, name: &str, interval_ms: i64, now_ms: i64) -> Schedule {
        let interval_ms = interval_ms.max(1);
        Schedule {
            interval_ms,
            next_ms: group_eval_time(file, name, interval_ms, now_ms) + interval_ms,
        }
    }

    /// The next slot: wait until then.
    pub fn next_ms(&self) -> i64 {
        self.next_ms
    }

    /// At `now_ms`: `None` before the next slot; otherwise the timestamp to evaluate at
    /// (the latest slot reached) and how many slots were missed before it.
    pub fn due(&mut self, now_ms: i64) -> Option<(i64, u64)> {
        if now_ms < self.next_ms {
            return None;
        }
        let missed = (now_ms - self.next_ms) / self.interval_ms;
        let ts = self.next_ms + missed * self.interval_ms;
        self.next_ms = ts + self.interval_ms;
        Some((ts, missed as u64))
    }
}

// ---------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------

/// Where an evaluation writes its samples. Rules of a group are evaluated in order and
/// each rule's samples are appended before the next rule runs, so a rule sees what the
/// rules before it recorded at the same timestamp (as in Prometheus).
pub trait Sink {
    /// Appends the samples (each of its own series). An error fails the rule that wrote
    /// them.
    fn append(&self, samples: &[(Labels, Sample)]) -> Result<(), String>;
}

impl Sink for tsdb::Db {
    fn append(&self, samples: &[(Labels, Sample)]) -> Result<(), String> {
        if samples.is_empty() {
            return Ok(());
        }
        let pairs: Vec<Vec<(&str, &str)>> =
            samples.iter().map(|(l, _)| l.iter().collect()).collect();
        let batch = pairs
            .iter()
            .zip(samples)
            .map(|(p, (_, s))| (p.as_slice(), std::slice::from_ref(s)));
        let report = tsdb::Db::append(self, batch).map_err(|e| e.to_string())?;
        match report.rejected_total() {
            0 => Ok(()),
            n => Err(format!(
                "{n} rule samples rejected: {}",
                report.first_rejection.unwrap_or_default()
            )),
        }
    }
}

/// What every evaluation of a server shares.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// `$externalLabels` of templates (never added to alerts here).
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL` of templates.
    pub external_url: String,
    /// How often a firing alert is sent again (`--rules.alert.resend-delay`).
    pub resend_delay_ms: i64,
    /// The query offset of groups that set none (`global.rule_query_offset`).
    pub default_query_offset_ms: i64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            external_labels: BTreeMap::new(),
            external_url: String::new(),
            resend_delay_ms: DEFAULT_RESEND_DELAY_MS,
            default_query_offset_ms: 0,
        }
    }
}

/// The state of one alert. Ordered as Prometheus orders states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    /// Resolved: kept for [`RESOLVED_RETENTION_MS`] so its resolution is sent.
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    /// `inactive`, `pending` or `firing` (the `alertstate` label and the API's words).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule: one label set its expression returned. Times are
/// milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The sample's labels without `__name__`, the rule's labels (expanded), `alertname`.
    pub labels: Labels,
    /// The rule's annotations, expanded at the latest evaluation that returned the alert.
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    /// The value of the sample at the latest evaluation that returned the alert.
    pub value: f64,
    /// When the condition started to hold (restored after a restart, see the module doc).
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    /// When the last notification sent for it expires if not renewed.
    pub valid_until: Option<i64>,
    /// When its condition went away while it kept firing (`keep_firing_for`).
    pub keep_firing_since: Option<i64>,
}

/// An alert to deliver, as Prometheus hands it to its notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub rule: String,
    /// The rule's expression (Prometheus' generator URL links to it).
    pub expr: String,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    /// When it fired.
    pub starts_at: i64,
    /// For a resolved alert, when it resolved; for a firing one, when this notification
    /// expires: `ts + 4 × max(group interval, resend delay)`.
    pub ends_at: i64,
}

/// The health of a rule after its latest evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    Ok,
    Err,
}

impl Health {
    /// `unknown`, `ok` or `err`, the words of Prometheus' rules API.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// One rule and what its evaluations left.
#[derive(Debug, Clone)]
pub struct RuleState {
    rule: Rule,
    health: Health,
    last_error: Option<String>,
    last_eval_ts: Option<i64>,
    last_duration: Duration,
    evaluations: u64,
    failures: u64,
    /// The series the latest successful evaluation wrote: those missing from the next
    /// one get a staleness marker.
    prev_series: BTreeSet<Labels>,
    /// Alerting rules: alerts by label set, including resolved ones still retained.
    active: BTreeMap<Labels, Alert>,
    /// Alerting rules: false until the `for` state was restored; no `ALERTS` or
    /// `ALERTS_FOR_STATE` samples are written before.
    restored: bool,
}

impl RuleState {
    fn new(rule: Rule) -> RuleState {
        RuleState {
            rule,
            health: Health::Unknown,
            last_error: None,
            last_eval_ts: None,
            last_duration: Duration::ZERO,
            evaluations: 0,
            failures: 0,
            prev_series: BTreeSet::new(),
            active: BTreeMap::new(),
            restored: false,
        }
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    pub fn health(&self) -> Health {
        self.health
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The timestamp of the latest evaluation.
    pub fn last_eval_ts(&self) -> Option<i64> {
        self.last_eval_ts
    }

    pub fn last_duration(&self) -> Duration {
        self.last_duration
    }

    /// Evaluations so far, and how many failed.
    pub fn evaluations(&self) -> (u64, u64) {
        (self.evaluations, self.failures)
    }

    /// Pending and firing alerts (Prometheus' `ActiveAlerts`), in label order.
    pub fn active_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().filter(|a| a.resolved_at.is_none())
    }

    /// Every alert held, resolved ones still retained included.
    pub fn all_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// The highest state of its alerts (`Inactive` when none is active).
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }
}

/// What one evaluation of a group did.
#[derive(Debug, Clone, Default)]
pub struct EvalResult {
    pub ts: i64,
    /// Samples written (staleness markers included).
    pub samples: usize,
    /// Rules whose evaluation failed.
    pub failed_rules: usize,
    /// Firing alerts due for (re)sending.
    pub firing: Vec<Notification>,
    /// Resolved alerts due for (re)sending.
    pub resolved: Vec<Notification>,
    pub duration: Duration,
}

/// A group and the state of its rules between evaluations.
#[derive(Debug, Clone)]
pub struct GroupState {
    group: Group,
    interval_ms: i64,
    rules: Vec<RuleState>,
    /// Series of rules removed by a reload: marked stale at the next evaluation.
    stale_series: Vec<Labels>,
    restore_pending: bool,
    last_eval_ts: Option<i64>,
    last_duration: Duration,
    last_samples: usize,
    evaluations: u64,
}

impl GroupState {
    /// A group as it starts with the server: `default_interval_ms` applies when the
    /// group sets no interval; its alerts wait for [`GroupState::restore`] before their
    /// series are written (see the module doc). Use [`GroupState::without_restore`] for
    /// a group added later, which has nothing to restore.
    pub fn new(group: Group, default_interval_ms: i64) -> GroupState {
        let interval_ms = group.interval_or(default_interval_ms);
        let rules = group.rules.iter().cloned().map(RuleState::new).collect();
        GroupState {
            group,
            interval_ms,
            rules,
            stale_series: Vec::new(),
            restore_pending: true,
            last_eval_ts: None,
            last_duration: Duration::ZERO,
            last_samples: 0,
            evaluations: 0,
        }
    }

    /// Marks the group as having nothing to restore: alerts are written from the first
    /// evaluation on.
    pub fn without_restore(mut self) -> GroupState {
        self.mark_restored();
        self
    }

    fn mark_restored(&mut self) {
        self.restore_pending = false;
        for r in &mut self.rules {
            r.restored = true;
        }
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// The interval the group is evaluated at.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    pub fn rules(&self) -> &[RuleState] {
        &self.rules
    }

    /// True until [`GroupState::restore`] ran (or the group was made without restore).
    pub fn restore_pending(&self) -> bool {
        self.restore_pending
    }

    pub fn last_eval_ts(&self) -> Option<i64> {
        self.last_eval_ts
    }

    /// How long the latest evaluation of the whole group took.
    pub fn last_duration(&self) -> Duration {
        self.last_duration
    }

    /// Samples the latest evaluation wrote.
    pub fn last_samples(&self) -> usize {
        self.last_samples
    }

    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// The series the group's latest evaluations wrote and has not yet marked stale.
    pub fn written_series(&self) -> impl Iterator<Item = &Labels> {
        self.rules
            .iter()
            .flat_map(|r| r.prev_series.iter())
            .chain(self.stale_series.iter())
    }

    /// Takes over the state of the group this one replaces on a reload (Prometheus'
    /// `CopyState`): rules are matched by name and labels (duplicates in order); a
    /// matched rule keeps its alerts and its series, and the series of old rules left
    /// unmatched are marked stale at the next evaluation. A reloaded group has nothing
    /// to restore.
    pub fn copy_state_from(&mut self, old: &GroupState) {
        self.last_eval_ts = old.last_eval_ts;
        self.last_duration = old.last_duration;
        let key = |r: &Rule| (r.name().to_string(), r.labels().clone());
        let mut by_key: BTreeMap<_, Vec<usize>> = BTreeMap::new();
        for (i, r) in old.rules.iter().enumerate() {
            by_key.entry(key(&r.rule)).or_default().push(i);
        }
        let mut used = vec![false; old.rules.len()];
        for r in &mut self.rules {
            let Some(idx) = by_key.get_mut(&key(&r.rule)) else {
                continue;
            };
            if idx.is_empty() {
                continue;
            }
            let i = idx.remove(0);
            used[i] = true;
            let o = &old.rules[i];
            r.prev_series = o.prev_series.clone();
            if matches!((&r.rule, &o.rule), (Rule::Alerting(_), Rule::Alerting(_))) {
                r.active = o.active.clone();
            }
        }
        self.stale_series = old.stale_series.clone();
        for (i, o) in old.rules.iter().enumerate() {
            if !used[i] {
                self.stale_series.extend(o.prev_series.iter().cloned());
            }
        }
        self.mark_restored();
    }

    /// Evaluates every rule at `ts`, in order, appending each rule's samples through
    /// `sink` before the next rule runs. Failures are recorded per rule (health, last
    /// error, count) and do not stop the others.
    pub fn eval(
        &mut self,
        q: &dyn Queryable,
        sink: &dyn Sink,
        engine: &Engine,
        ts: i64,
        opts: &EvalOptions,
    ) -> EvalResult {
        let start = Instant::now();
        let offset = self
            .group
            .query_offset_ms
            .unwrap_or(opts.default_query_offset_ms);
        let qts = ts - offset;
        let limit = self.group.limit;
        let mut res = EvalResult {
            ts,
            ..EvalResult::default()
        };
        for rs in &mut self.rules {
            let rule_start = Instant::now();
            rs.evaluations += 1;
            let out = match &rs.rule {
                Rule::Recording(r) => eval_recording(r, q, engine, qts, limit),
                Rule::Alerting(r) => eval_alerting(
                    r,
                    &mut rs.active,
                    rs.restored,
                    q,
                    engine,
                    ts,
                    qts,
                    limit,
                    opts,
                ),
            };
            rs.last_eval_ts = Some(ts);
            match out {
                Err(e) => {
                    rs.health = Health::Err;
                    rs.last_error = Some(e);
                    rs.failures += 1;
                    res.failed_rules += 1;
                }
                Ok(samples) => {
                    rs.health = Health::Ok;
                    rs.last_error = None;
                    if let Rule::Alerting(r) = &rs.rule {
                        let delta = self.interval_ms.max(opts.resend_delay_ms);
                        send_alerts(r, &mut rs.active, ts, opts.resend_delay_ms, delta, &mut res);
                    }
                    let returned: BTreeSet<Labels> =
                        samples.iter().map(|(l, _)| l.clone()).collect();
                    let mut batch = samples;
                    let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
                    for l in rs.prev_series.difference(&returned) {
                        batch.push((l.clone(), Sample { t: qts, v: stale }));
                    }
                    match sink.append(&batch) {
                        Ok(()) => {
                            res.samples += batch.len();
                            rs.prev_series = returned;
                        }
                        Err(e) => {
                            rs.health = Health::Err;
                            rs.last_error = Some(e);
                            rs.failures += 1;
                            res.failed_rules += 1;
                        }
                    }
                }
            }
            rs.last_duration = rule_start.elapsed();
        }
        if !self.stale_series.is_empty() {
            let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
            let batch: Vec<(Labels, Sample)> = self
                .stale_series
                .iter()
                .map(|l| (l.clone(), Sample { t: qts, v: stale }))
                .collect();
            if sink.append(&batch).is_ok() {
                res.samples += batch.len();
                self.stale_series.clear();
            }
        }
        res.duration = start.elapsed();
        self.evaluations += 1;
        self.last_eval_ts = Some(ts);
        self.last_duration = res.duration;
        self.last_samples = res.samples;
        res
    }

    /// Restores the `for` state of the alerts found so far from `ALERTS_FOR_STATE`
    /// (Prometheus' `RestoreForState`; `ts` is the current time). For each pending or
    /// firing alert, the last sample of its series within `outage_tolerance_ms` before
    /// `ts` gives back its `active_at`:
    ///
    /// - it had been active for its whole `for` already (it was firing): unchanged, it
    ///   fires at the next evaluation;
    /// - less than `grace_ms` of its `for` remained: it fires `grace_ms` after `ts`;
    /// - otherwise its `for` clock resumes, the time the server was down not counted.
    ///
    /// Rules whose `for` is shorter than the grace period are not restored. Prometheus
    /// calls this once, after the second evaluation following start-up (so that the
    /// data and recording rules have caught up); after the first works too. From then on
    /// the alert series are written.
    pub fn restore(&mut self, q: &dyn Queryable, ts: i64, outage_tolerance_ms: i64, grace_ms: i64) {
        let mint = ts - outage_tolerance_ms;
        for rs in &mut self.rules {
            let Rule::Alerting(rule) = &rs.rule else {
                rs.restored = true;
                continue;
            };
            if rule.for_ms < grace_ms || rs.active.is_empty() {
                rs.restored = true;
                continue;
            }
            let matchers = match (
                Matcher::new(MatchOp::Equal, "__name__", ALERTS_FOR_STATE_METRIC),
                Matcher::new(MatchOp::Equal, "alertname", &rule.name),
            ) {
                (Ok(a), Ok(b)) => [a, b],
                _ => {
                    rs.restored = true;
                    continue;
                }
            };
            let Ok(found) = q.select(&matchers, mint, ts) else {
                // Prometheus cannot retry either: the alerts wait their full `for`.
                rs.restored = true;
                continue;
            };
            let mut buf = Vec::new();
            let mut scratch = Vec::new();
            for a in rs.active.values_mut() {
                let want = for_state_labels(rule, a, ALERTS_FOR_STATE_METRIC, None);
                let Some(series) = found.iter().find(|s| s.labels == want) else {
                    continue;
                };
                if series
                    .decode_into(mint, ts, &mut buf, &mut scratch)
                    .is_err()
                {
                    continue;
                }
                let Some(last) = buf.last() else { continue };
                if last.v.to_bits() == tsdb::STALE_NAN_BITS {
                    continue;
                }
                // Prometheus works in whole seconds here.
                let down_at = last.t.div_euclid(1000) * 1000;
                let mut active_at = (last.v as i64) * 1000;
                let remaining = rule.for_ms - (down_at - active_at);
                if remaining <= 0 {
                    // It was firing: it fires again at the next evaluation.
                } else if remaining < grace_ms {
                    active_at = ts + grace_ms - rule.for_ms;
                } else {
                    active_at += ts - down_at;
                }
                a.active_at = active_at;
            }
            rs.restored = true;
        }
        self.restore_pending = false;
    }
}

// ---------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------

/// Runs `expr` at `t` and returns its samples; a scalar is one sample without labels.
fn query(
    q: &dyn Queryable,
    engine: &Engine,
    expr: &str,
    t: i64,
) -> Result<Vec<(Labels, f64)>, String> {
    match engine.instant(q, expr, t).map_err(|e| e.to_string())?.value {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Labels::default(), v)]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

fn eval_recording(
    r: &RecordingRule,
    q: &dyn Queryable,
    engine: &Engine,
    t: i64,
    limit: usize,
) -> Result<Vec<(Labels, Sample)>, String> {
    let res = query(q, engine, &r.expr, t)?;
    let mut out = Vec::with_capacity(res.len());
    let mut seen = BTreeSet::new();
    for (labels, v) in res {
        let mut m: BTreeMap<String, String> = labels.to_vec().into_iter().collect();
        m.insert("__name__".into(), r.name.clone());
        for (k, val) in &r.labels {
            set(&mut m, k, val.clone());
        }
        let l = to_labels(m)?;
        if !seen.insert(l.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((l, Sample { t, v }));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

/// The template `query` function: an instant query at the evaluation's time.
struct TemplateQuery<'a> {
    q: &'a dyn Queryable,
    engine: &'a Engine,
    t: i64,
}

impl QueryFn for TemplateQuery<'_> {
    fn query(&self, expr: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        Ok(query(self.q, self.engine, expr, self.t)?
            .into_iter()
            .map(|(l, v)| (l.to_vec().into_iter().collect(), v))
            .collect())
    }
}

#[allow(clippy::too_many_arguments)]
fn eval_alerting(
    r: &AlertingRule,
    active: &mut BTreeMap<Labels, Alert>,
    restored: bool,
    q: &dyn Queryable,
    engine: &Engine,
    ts: i64,
    qts: i64,
    limit: usize,
    opts: &EvalOptions,
) -> Result<Vec<(Labels, Sample)>, String> {
    let res = query(q, engine, &r.expr, qts)?;
    let tq = TemplateQuery { q, engine, t: qts };
    let mut found: BTreeMap<Labels, Alert> = BTreeMap::new();
    for (labels, v) in res {
        let data = template::Data {
            labels: labels.to_vec().into_iter().collect(),
            value: v,
            external_labels: opts.external_labels.clone(),
            external_url: opts.external_url.clone(),
        };
        let expand = |t: &template::Template| match t.execute(&data, Some(&tq)) {
            Ok(s) => s,
            Err(e) => format!("<error expanding template: {e}>"),
        };
        let mut m: BTreeMap<String, String> = labels
            .iter()
            .filter(|(n, _)| *n != "__name__")
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        for (k, t) in r.label_templates() {
            set(&mut m, k, expand(t));
        }
        m.insert("alertname".into(), r.name.clone());
        let annotations: BTreeMap<String, String> = r
            .annotation_templates()
            .map(|(k, t)| (k.to_string(), expand(t)))
            .collect();
        let l = to_labels(m)?;
        if found.contains_key(&l) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
        found.insert(
            l.clone(),
            Alert {
                labels: l,
                annotations,
                state: AlertState::Pending,
                value: v,
                active_at: ts,
                fired_at: None,
                resolved_at: None,
                last_sent_at: None,
                valid_until: None,
                keep_firing_since: None,
            },
        );
    }

    for (l, a) in &found {
        match active.get_mut(l) {
            Some(old) if old.state != AlertState::Inactive => {
                old.value = a.value;
                old.annotations = a.annotations.clone();
            }
            _ => {
                active.insert(l.clone(), a.clone());
            }
        }
    }

    let mut out = Vec::new();
    let mut n_active = 0usize;
    let mut gone = Vec::new();
    for (l, a) in active.iter_mut() {
        if !found.contains_key(l) {
            let mut keep_firing = false;
            if a.state == AlertState::Firing && r.keep_firing_for_ms > 0 {
                let since = *a.keep_firing_since.get_or_insert(ts);
                keep_firing = ts - since < r.keep_firing_for_ms;
            }
            if a.state == AlertState::Pending
                || a.resolved_at
                    .is_some_and(|at| ts - at > RESOLVED_RETENTION_MS)
            {
                gone.push(l.clone());
            }
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(ts);
            }
            if !keep_firing {
                continue;
            }
        } else {
            a.keep_firing_since = None;
        }
        n_active += 1;
        if a.state == AlertState::Pending && ts - a.active_at >= r.for_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(ts);
        }
        // `for` lengthened by a reload: back to pending until it has held long enough.
        if a.state == AlertState::Firing && ts - a.active_at < r.for_ms {
            a.state = AlertState::Pending;
            a.fired_at = None;
            a.last_sent_at = None;
            a.keep_firing_since = None;
        }
        if restored {
            let mut alerts = for_state_labels(r, a, ALERTS_METRIC, Some(a.state));
            out.push((alerts.clone(), Sample { t: qts, v: 1.0 }));
            alerts = for_state_labels(r, a, ALERTS_FOR_STATE_METRIC, None);
            out.push((
                alerts,
                Sample {
                    t: qts,
                    v: a.active_at.div_euclid(1000) as f64,
                },
            ));
        }
    }
    for l in gone {
        active.remove(&l);
    }
    if limit > 0 && n_active > limit {
        active.clear();
        return Err(format!("exceeded limit of {limit} with {n_active} alerts"));
    }
    Ok(out)
}

/// The labels of an alert's `ALERTS` (with `state`) or `ALERTS_FOR_STATE` series: the
/// rule's labels as written, overridden by the alert's, then name and state.
fn for_state_labels(
    r: &AlertingRule,
    a: &Alert,
    metric: &str,
    state: Option<AlertState>,
) -> Labels {
    let mut m: BTreeMap<String, String> = r.labels.clone();
    for (n, v) in a.labels.iter() {
        m.insert(n.to_string(), v.to_string());
    }
    m.insert("__name__".into(), metric.into());
    m.insert("alertname".into(), r.name.clone());
    if let Some(s) = state {
        m.insert("alertstate".into(), s.as_str().into());
    }
    m.retain(|_, v| !v.is_empty());
    Labels::from_sorted_unchecked(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Sets a label; an empty value removes it (Prometheus' label builder).
fn set(m: &mut BTreeMap<String, String>, k: &str, v: String) {
    if v.is_empty() {
        m.remove(k);
    } else {
        m.insert(k.to_string(), v);
    }
}

fn to_labels(m: BTreeMap<String, String>) -> Result<Labels, String> {
    Labels::from_pairs(m).map_err(|e| e.to_string())
}

/// Prometheus' `sendAlerts`: firing alerts every resend delay, a resolved one as soon as
/// it resolved and then every resend delay while it is retained.
fn send_alerts(
    r: &AlertingRule,
    active: &mut BTreeMap<Labels, Alert>,
    ts: i64,
    resend_delay_ms: i64,
    delta_ms: i64,
    res: &mut EvalResult,
) {
    for a in active.values_mut() {
        if a.state == AlertState::Pending {
            continue;
        }
        let resolved_since_sent = match (a.resolved_at, a.last_sent_at) {
            (Some(r), Some(s)) => r > s,
            (Some(_), None) => true,
            _ => false,
        };
        let resend = a.last_sent_at.is_none_or(|s| s + resend_delay_ms < ts);
        if !(resolved_since_sent || resend) {
            continue;
        }
        a.last_sent_at = Some(ts);
        let valid_until = ts + 4 * delta_ms;
        a.valid_until = Some(valid_until);
        let n = Notification {
            rule: r.name.clone(),
            expr: r.expr.clone(),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.fired_at.unwrap_or(a.active_at),
            ends_at: a.resolved_at.unwrap_or(valid_until),
        };
        if a.resolved_at.is_some() {
            res.resolved.push(n);
        } else {
            res.firing.push(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::rulefile;

    const MIN: i64 = 60_000;

    /// Series in memory, read like the storage engine reads them and appended to by
    /// evaluations.
    #[derive(Default)]
    struct Mem(Mutex<Vec<tsdb::SeriesSamples>>);

    impl Mem {
        fn put(&self, labels: &[(&str, &str)], t: i64, v: f64) {
            let l = Labels::from_pairs(labels.iter().copied()).unwrap();
            self.push(l, Sample { t, v });
        }

        fn push(&self, labels: Labels, s: Sample) {
            let mut all = self.0.lock().unwrap();
            match all.iter_mut().find(|x| x.labels == labels) {
                Some(x) => {
                    x.samples.retain(|p| p.t != s.t);
                    x.samples.push(s);
                    x.samples.sort_by_key(|p| p.t);
                }
                None => all.push(tsdb::SeriesSamples {
                    labels,
                    samples: vec![s],
                }),
            }
        }

        /// The samples of the series whose labels print as `name`.
        fn samples(&self, name: &str) -> Vec<(i64, f64)> {
            let all = self.0.lock().unwrap();
            all.iter()
                .find(|s| s.labels.to_string() == name)
                .map(|s| s.samples.iter().map(|p| (p.t, p.v)).collect())
                .unwrap_or_default()
        }
    }

    impl Queryable for Mem {
        fn select(
            &self,
            ms: &[tsdb::Matcher],
            mint: i64,
            maxt: i64,
        ) -> Result<Vec<tsdb::SelectedSeries>, String> {
            let all = self.0.lock().unwrap();
            let mut v: Vec<_> = all
                .iter()
                .filter(|s| {
                    ms.iter()
                        .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
                })
                .filter(|s| s.samples.iter().any(|p| p.t >= mint && p.t <= maxt))
                .map(|s| tsdb::SelectedSeries::from_samples(s.labels.clone(), s.samples.clone()))
                .collect();
            v.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(v)
        }
    }

    impl Sink for Mem {
        fn append(&self, samples: &[(Labels, Sample)]) -> Result<(), String> {
            for (l, s) in samples {
                self.push(l.clone(), *s);
            }
            Ok(())
        }
    }

    fn group(yaml: &str) -> Group {
        let mut f = rulefile::parse(Path::new("t.yml"), yaml).unwrap();
        f.groups.remove(0)
    }

    fn engine() -> Engine {
        Engine::new(promql::EngineOptions::default())
    }

    fn is_stale(v: f64) -> bool {
        v.to_bits() == tsdb::STALE_NAN_BITS
    }

    const HOST_DOWN: &str = r#"
groups:
  - name: g
    rules:
      - alert: HostDown
        expr: up == 0
        for: 2m
        labels: {severity: page}
        annotations: {summary: down}
"#;

    #[test]
    fn alerts_go_pending_firing_resolved_and_write_their_series() {
        let db = Mem::default();
        let mut gs = GroupState::new(group(HOST_DOWN), MIN).without_restore();
        let e = engine();
        let o = EvalOptions::default();
        let up = [("__name__", "up"), ("instance", "a")];
        let alert =
            r#"ALERTS{alertname="HostDown", alertstate="firing", instance="a", severity="page"}"#;
        let pending =
            r#"ALERTS{alertname="HostDown", alertstate="pending", instance="a", severity="page"}"#;
        let for_state = r#"ALERTS_FOR_STATE{alertname="HostDown", instance="a", severity="page"}"#;
        for m in 0..=3 {
            db.put(&up, m * MIN, 0.0);
        }
        let r0 = gs.eval(&db, &db, &e, 0, &o);
        assert!(r0.firing.is_empty());
        let rs = &gs.rules()[0];
        assert_eq!(rs.health(), Health::Ok);
        assert_eq!(rs.state(), AlertState::Pending);
        gs.eval(&db, &db, &e, MIN, &o);
        assert_eq!(gs.rules()[0].state(), AlertState::Pending);
        let r2 = gs.eval(&db, &db, &e, 2 * MIN, &o);
        assert_eq!(gs.rules()[0].state(), AlertState::Firing);
        assert_eq!(r2.firing.len(), 1);
        let n = &r2.firing[0];
        assert_eq!(n.starts_at, 2 * MIN);
        assert_eq!(
            n.ends_at,
            2 * MIN + 4 * MIN,
            "4 × max(interval, resend delay)"
        );
        assert_eq!(n.annotations["summary"], "down");
        // Not re-sent before the resend delay has passed.
        let r3 = gs.eval(&db, &db, &e, 3 * MIN, &o);
        assert!(r3.firing.is_empty());
        let p = db.samples(pending);
        assert_eq!(&p[..2], &[(0, 1.0), (MIN, 1.0)]);
        assert!(
            p[2].0 == 2 * MIN && is_stale(p[2].1),
            "pending series goes stale: {p:?}"
        );
        assert_eq!(db.samples(alert), vec![(2 * MIN, 1.0), (3 * MIN, 1.0)]);
        assert_eq!(db.samples(for_state)[0], (0, 0.0));

        // The host comes back: resolved, sent at once and kept 15 minutes.
        db.put(&up, 4 * MIN, 1.0);
        let r4 = gs.eval(&db, &db, &e, 4 * MIN, &o);
        assert_eq!(r4.resolved.len(), 1);
        assert_eq!(r4.resolved[0].ends_at, 4 * MIN);
        assert_eq!(gs.rules()[0].active_alerts().count(), 0);
        assert_eq!(gs.rules()[0].all_alerts().count(), 1);
        let a = db.samples(alert);
        assert!(is_stale(a.last().unwrap().1));
        // Re-sent every resend delay while retained, then forgotten.
        let r5 = gs.eval(&db, &db, &e, 5 * MIN + 1, &o);
        assert_eq!(r5.resolved.len(), 1);
        for m in 6..=19 {
            db.put(&up, m * MIN, 1.0);
            gs.eval(&db, &db, &e, m * MIN, &o);
        }
        assert_eq!(gs.rules()[0].all_alerts().count(), 1);
        db.put(&up, 20 * MIN, 1.0);
        gs.eval(&db, &db, &e, 20 * MIN, &o);
        assert_eq!(gs.rules()[0].all_alerts().count(), 0);
    }

    #[test]
    fn a_pending_alert_that_clears_is_dropped_unsent() {
        let db = Mem::default();
        let mut gs = GroupState::new(group(HOST_DOWN), MIN).without_restore();
        let (e, o) = (engine(), EvalOptions::default());
        let up = [("__name__", "up"), ("instance", "a")];
        db.put(&up, 0, 0.0);
        gs.eval(&db, &db, &e, 0, &o);
        db.put(&up, MIN, 1.0);
        let r = gs.eval(&db, &db, &e, MIN, &o);
        assert!(r.firing.is_empty() && r.resolved.is_empty());
        assert_eq!(gs.rules()[0].all_alerts().count(), 0);
    }

    #[test]
    fn keep_firing_for_holds_a_cleared_alert() {
        let db = Mem::default();
        let g = group(
            r#"
groups:
  - name: g
    rules:
      - alert: Flappy
        expr: x > 0
        keep_firing_for: 2m
"#,
        );
        let mut gs = GroupState::new(g, MIN).without_restore();
        let (e, o) = (engine(), EvalOptions::default());
        let x = [("__name__", "x")];
        db.put(&x, 0, 1.0);
        gs.eval(&db, &db, &e, 0, &o);
        assert_eq!(gs.rules()[0].state(), AlertState::Firing);
        for m in 1..=3 {
            db.put(&x, m * MIN, 0.0);
            gs.eval(&db, &db, &e, m * MIN, &o);
            let want = if m < 3 {
                AlertState::Firing
            } else {
                AlertState::Inactive
            };
            assert_eq!(gs.rules()[0].state(), want, "at {m}m");
        }
        let a = gs.rules()[0].all_alerts().next().unwrap();
        assert_eq!(a.resolved_at, Some(3 * MIN));
        assert_eq!(a.keep_firing_since, Some(MIN));
    }

    #[test]
    fn recording_rules_write_and_a_later_rule_sees_them_at_the_same_time() {
        let db = Mem::default();
        let g = group(
            r#"
groups:
  - name: g
    labels: {source: rules}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: FewUp
        expr: job:up:sum < 2
"#,
        );
        let mut gs = GroupState::new(g, MIN).without_restore();
        let (e, o) = (engine(), EvalOptions::default());
        db.put(
            &[("__name__", "up"), ("job", "n"), ("instance", "a")],
            0,
            1.0,
        );
        let r = gs.eval(&db, &db, &e, 0, &o);
        assert_eq!(r.firing.len(), 1, "{r:?}");
        assert_eq!(
            r.firing[0].labels.to_string(),
            r#"{alertname="FewUp", job="n", source="rules"}"#
        );
        assert_eq!(
            db.samples(r#"job:up:sum{job="n", source="rules"}"#),
            vec![(0, 1.0)]
        );
        // The input goes away: the recorded series gets a staleness marker.
        gs.eval(&db, &db, &e, 10 * MIN, &o);
        let s = db.samples(r#"job:up:sum{job="n", source="rules"}"#);
        assert_eq!(s.len(), 2);
        assert!(s[1].0 == 10 * MIN && is_stale(s[1].1));
    }

    #[test]
    fn limit_fails_the_whole_rule_and_failures_are_counted() {
        let db = Mem::default();
        let g = group(
            r#"
groups:
  - name: g
    limit: 1
    rules:
      - record: two
        expr: up
      - alert: Two
        expr: up
      - record: bad
        expr: label_replace(up, "instance", "x", "", "")
"#,
        );
        let mut gs = GroupState::new(g, MIN).without_restore();
        let (e, o) = (engine(), EvalOptions::default());
        db.put(&[("__name__", "up"), ("instance", "a")], 0, 1.0);
        db.put(&[("__name__", "up"), ("instance", "b")], 0, 1.0);
        let r = gs.eval(&db, &db, &e, 0, &o);
        assert_eq!(r.failed_rules, 3);
        let rs = gs.rules();
        assert_eq!(
            rs[0].last_error(),
            Some("exceeded limit of 1 with 2 series")
        );
        assert_eq!(
            rs[1].last_error(),
            Some("exceeded limit of 1 with 2 alerts")
        );
        assert_eq!(rs[1].all_alerts().count(), 0);
        assert!(rs[2].last_error().is_some());
        assert_eq!(rs[2].health(), Health::Err);
        assert_eq!(rs[2].evaluations(), (1, 1));
        assert!(db.samples(r#"two{instance="a"}"#).is_empty());
    }

    #[test]
    fn restore_brings_back_the_for_clock() {
        // Before the restart: `for: 30m`, active since 1000 s.
        let yaml = r#"
groups:
  - name: g
    rules:
      - alert: Slow
        expr: x > 0
        for: 30m
"#;
        let fs = r#"ALERTS_FOR_STATE{alertname="Slow"}"#;
        let cases = [
            // (down at, restart at, expected active_at after restore)
            // Was firing (active 40 min when down): unchanged, fires at once.
            (1_000_000 + 40 * MIN, 1_000_000 + 45 * MIN, 1_000_000),
            // 5 of 30 min left (< 10 min grace): fires 10 min after restart.
            (
                1_000_000 + 25 * MIN,
                1_000_000 + 50 * MIN,
                1_000_000 + 50 * MIN + 10 * MIN - 30 * MIN,
            ),
            // 20 min left: the clock resumes, downtime not counted.
            (
                1_000_000 + 10 * MIN,
                1_000_000 + 30 * MIN,
                1_000_000 + 20 * MIN,
            ),
        ];
        for (down, restart, want) in cases {
            let db = Mem::default();
            db.put(
                &[("__name__", "ALERTS_FOR_STATE"), ("alertname", "Slow")],
                down,
                1000.0,
            );
            db.put(&[("__name__", "x")], restart, 1.0);
            let mut gs = GroupState::new(group(yaml), MIN);
            let (e, o) = (engine(), EvalOptions::default());
            assert!(gs.restore_pending());
            gs.eval(&db, &db, &e, restart, &o);
            assert_eq!(
                db.samples(fs).len(),
                1,
                "nothing written before the restore"
            );
            gs.restore(
                &db,
                restart,
                DEFAULT_OUTAGE_TOLERANCE_MS,
                DEFAULT_FOR_GRACE_PERIOD_MS,
            );
            assert!(!gs.restore_pending());
            let a = gs.rules()[0].active_alerts().next().unwrap();
            assert_eq!(a.active_at, want, "down {down} restart {restart}");
            db.put(&[("__name__", "x")], restart + MIN, 1.0);
            gs.eval(&db, &db, &e, restart + MIN, &o);
            let firing = restart + MIN - want >= 30 * MIN;
            assert_eq!(gs.rules()[0].state() == AlertState::Firing, firing);
            assert_eq!(
                db.samples(fs).last().unwrap(),
                &(restart + MIN, want.div_euclid(1000) as f64)
            );
        }
    }

    #[test]
    fn restore_ignores_old_and_stale_state() {
        let yaml = "groups:\n  - name: g\n    rules:\n      - alert: Slow\n        expr: x > 0\n        for: 30m\n";
        let l = [("__name__", "ALERTS_FOR_STATE"), ("alertname", "Slow")];
        let t = 10 * 3_600_000;
        for (at, v) in [
            (t - 2 * 3_600_000, 1000.0),
            (t - MIN, f64::from_bits(tsdb::STALE_NAN_BITS)),
        ] {
            let db = Mem::default();
            db.put(&l, at, v);
            db.put(&[("__name__", "x")], t, 1.0);
            let mut gs = GroupState::new(group(yaml), MIN);
            let (e, o) = (engine(), EvalOptions::default());
            gs.eval(&db, &db, &e, t, &o);
            gs.restore(
                &db,
                t,
                DEFAULT_OUTAGE_TOLERANCE_MS,
                DEFAULT_FOR_GRACE_PERIOD_MS,
            );
            assert_eq!(gs.rules()[0].active_alerts().next().unwrap().active_at, t);
        }
    }

    #[test]
    fn a_reload_keeps_alerts_and_marks_removed_rules_stale() {
        let db = Mem::default();
        let (e, o) = (engine(), EvalOptions::default());
        let old_yaml = r#"
groups:
  - name: g
    rules:
      - record: a:x
        expr: x
      - alert: X
        expr: x > 0
        for: 5m
"#;
        let new_yaml = r#"
groups:
  - name: g
    rules:
      - alert: X
        expr: x > 0
        for: 5m
"#;
        db.put(&[("__name__", "x")], 0, 1.0);
        let mut old = GroupState::new(group(old_yaml), MIN).without_restore();
        old.eval(&db, &db, &e, 0, &o);
        let mut new = GroupState::new(group(new_yaml), MIN);
        new.copy_state_from(&old);
        assert!(!new.restore_pending());
        db.put(&[("__name__", "x")], MIN, 1.0);
        new.eval(&db, &db, &e, MIN, &o);
        assert_eq!(new.rules()[0].active_alerts().next().unwrap().active_at, 0);
        let s = db.samples("a:x{}");
        assert!(s.len() == 2 && is_stale(s[1].1), "{s:?}");
    }

    #[test]
    fn query_offset_moves_queries_and_samples() {
        let db = Mem::default();
        let g = group(
            "groups:\n  - name: g\n    query_offset: 1m\n    rules:\n      - record: y\n        expr: x\n",
        );
        let mut gs = GroupState::new(g, MIN).without_restore();
        let (e, o) = (engine(), EvalOptions::default());
        db.put(&[("__name__", "x")], 0, 1.0);
        db.put(&[("__name__", "x")], MIN, 2.0);
        gs.eval(&db, &db, &e, MIN, &o);
        assert_eq!(db.samples("y{}"), vec![(0, 1.0)]);
    }

    #[test]
    fn templates_expand_and_failures_show_in_the_text() {
        let db = Mem::default();
        let g = group(
            r#"
groups:
  - name: g
    rules:
      - alert: Full
        expr: disk > 90
        labels:
          severity: '{{ if gt $value 95.0 }}page{{ else }}ticket{{ end }}'
          gone: '{{ if false }}x{{ end }}'
        annotations:
          summary: '{{ $labels.instance }} at {{ $value }} in {{ $externalLabels.dc }}'
          broken: '{{ query "sum(" }}'
"#,
        );
        let mut gs = GroupState::new(g, MIN).without_restore();
        let e = engine();
        let mut o = EvalOptions::default();
        o.external_labels.insert("dc".into(), "eu".into());
        db.put(&[("__name__", "disk"), ("instance", "db1")], 0, 97.0);
        let r = gs.eval(&db, &db, &e, 0, &o);
        let n = &r.firing[0];
        // A label expanding to nothing is dropped.
        assert_eq!(
            n.labels.to_string(),
            r#"{alertname="Full", instance="db1", severity="page"}"#
        );
        assert_eq!(n.annotations["summary"], "db1 at 97 in eu");
        assert!(
            n.annotations["broken"].starts_with("<error expanding template: "),
            "{}",
            n.annotations["broken"]
        );
    }

    #[test]
    fn evaluation_slots_follow_prometheus() {
        // The hash is xxHash64, as Prometheus' labels.Hash.
        assert_eq!(xxhash_rust::xxh64::xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        let iv = MIN;
        let off = eval_offset_ns("rules.yml", "node", iv);
        assert!((0..iv * 1_000_000).contains(&off));
        for now in [1, 1_700_000_000_123, 1_700_000_060_000] {
            let t = group_eval_time("rules.yml", "node", iv, now);
            assert!(t <= now && now - t < iv, "{t} {now}");
            let from_slot = (t * 1_000_000 - off).rem_euclid(iv * 1_000_000);
            assert!(
                from_slot == 0 || from_slot > (iv - 1) * 1_000_000,
                "{from_slot}"
            );
            assert_eq!(group_eval_time("rules.yml", "node", iv, t + iv - 1), t);
            // Slots sit on nanoseconds; a millisecond after the floored one is past it.
            assert_eq!(group_eval_time("rules.yml", "node", iv, t + iv + 1), t + iv);
        }
        assert_ne!(
            eval_offset_ns("rules.yml", "node", iv),
            eval_offset_ns("rules.yml", "other", iv)
        );
    }

    #[test]
    fn a_schedule_skips_missed_slots() {
        let mut s = Schedule::new("f", "g", 10_000, 1_000_000);
        let first = s.next_ms();
        assert!(first > 1_000_000 && first <= 1_010_000);
        assert_eq!(s.due(first - 1), None);
        assert_eq!(s.due(first), Some((first, 0)));
        assert_eq!(s.due(first + 5_000), None);
        assert_eq!(s.due(first + 35_000), Some((first + 30_000, 2)));
        assert_eq!(s.next_ms(), first + 40_000);
    }
}
