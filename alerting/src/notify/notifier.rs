/*!
Defines [`Notifier`]: the notification state (in memory and in its SQLite file), the
operations that change it (`put`, silences, acknowledgements, `reload`) and the
queries the server exposes. The loops that act on the state live in `dispatch`
(groups and timers) and `deliver` (the outbox); [`Notifier::run`] drives both.

Every change follows one path: take `writer`, compute the change from the in-memory
state, write it to the database in one transaction, and only then apply it to
memory. A refused or failed change leaves both as they were, and memory never holds
what the database does not.
*/

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::SqlitePool;

use crate::notify::config::Config;
use crate::notify::deliver::Outbox;
use crate::notify::integrations::Kind;
use crate::notify::matcher::{Matcher, all_match, format_matchers, parse_matchers};
use crate::notify::route::{group_key, group_labels, match_routes, time_muted_by};
use crate::notify::store::{self, AckRow, AlertRecord, Batch, HistoryRow, SilenceRow, State};
use crate::notify::{Alert, Error, Fingerprint, Labels, lock, ms, now_ms};

/// Settings of a [`Notifier`] that are not part of the notification config.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the alert history is kept.
    pub history_retention: Duration,
    /// How long the notification log, expired silences and ended acknowledgements
    /// are kept.
    pub log_retention: Duration,
    /// Where people reach Minos (links in messages, the webhook's `externalURL`).
    pub external_url: String,
    /// The first retry delay of a failed delivery; each further failure doubles it.
    pub retry_initial: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// A notification not delivered after this long is dropped (and logged).
    pub give_up_after: Duration,
    /// The limit on one delivery attempt.
    pub delivery_timeout: Duration,
    /// Deliveries in flight at once (one at a time per group and integration).
    pub max_parallel_deliveries: usize,
    /// Most alerts held (firing, and resolved ones not yet flushed): an alert with a
    /// new fingerprint past it is refused.
    pub max_alerts: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            history_retention: Duration::from_secs(30 * 86_400),
            log_retention: Duration::from_secs(30 * 86_400),
            external_url: String::new(),
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(86_400),
            delivery_timeout: Duration::from_secs(30),
            max_parallel_deliveries: 16,
            max_alerts: 100_000,
        }
    }
}

/// What [`Notifier::put`] did with a batch of alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResult {
    /// Alerts accepted (merged into what the notifier knows).
    pub accepted: usize,
    /// Alerts refused: their position in the batch and why.
    pub rejected: Vec<(usize, String)>,
}

/// Whether an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Firing,
    Resolved,
}

/// An alert with everything the notifier knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub fingerprint: Fingerprint,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: i64,
    /// When it ends (in the future while firing: its end without further updates).
    pub ends_at: i64,
    pub generator_url: String,
    pub updated_at: i64,
    pub state: AlertState,
    /// The active silences that mute it.
    pub silenced_by: Vec<String>,
    /// The firing alerts that inhibit it.
    pub inhibited_by: Vec<Fingerprint>,
    /// Its acknowledgement, if one holds.
    pub acked: Option<Ack>,
    /// The receivers of the routes it lands on.
    pub receivers: Vec<String>,
    /// The time intervals that keep some of those routes from sending now (a route's
    /// `mute_time_intervals` holding now, or all its `active_time_intervals` when none
    /// does), sorted: Alertmanager's `mutedBy`.
    pub muted_by: Vec<String>,
    /// The receivers of the routes those intervals mute now.
    pub muted_receivers: Vec<String>,
    /// When it was first notified in this firing episode.
    pub notified_at: Option<i64>,
}

/// A dispatch group with its firing alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertGroup {
    /// The group's labels (the route's `group_by` labels of its alerts).
    pub labels: Labels,
    /// The receiver of the group's route.
    pub receiver: String,
    pub alerts: Vec<AlertView>,
}

/// Whether a silence mutes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

/// A silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Silence {
    /// The silence's state at `now`.
    pub fn state(&self, now: i64) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }
}

/// A silence to create.
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub matchers: Vec<Matcher>,
    /// Unix ms; 0 means now.
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
}

/// An acknowledgement: someone took the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    pub fingerprint: Fingerprint,
    pub by: String,
    pub comment: String,
    pub at: i64,
    /// When it lapses by itself (`None`: when the alert resolves).
    pub expires_at: Option<i64>,
    /// When it ended (resolved, removed, replaced); `None` while open.
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

impl Ack {
    fn from_row(r: &AckRow) -> Ack {
        Ack {
            id: r.id,
            fingerprint: r.fingerprint,
            by: r.by.clone(),
            comment: r.comment.clone(),
            at: r.at,
            expires_at: r.expires_at,
            ended_at: None,
            end_reason: None,
        }
    }
}

/// Which history entries to return.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Entries whose alert labels match all of these.
    pub matchers: Vec<Matcher>,
    pub fingerprint: Option<Fingerprint>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, inclusive.
    pub until: Option<i64>,
    /// At most this many entries, newest first (0: 1,000).
    pub limit: usize,
}

/// One state change of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: i64,
    pub fingerprint: Fingerprint,
    pub labels: Labels,
    /// `inactive`, `firing`, `resolved` or `acknowledged`.
    pub from: String,
    pub to: String,
    pub at: i64,
    /// Who acknowledged, and why; empty for firing/resolved.
    pub detail: String,
}

/// Which notification-log entries to return.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub receiver: Option<String>,
    pub integration: Option<String>,
    pub group_key: Option<String>,
    pub only_failures: bool,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// At most this many entries, newest first (0: 1,000).
    pub limit: usize,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub id: i64,
    pub at: i64,
    pub receiver: String,
    /// The kind of integration (`email`, `slack`, `webhook`...).
    pub integration: String,
    /// The integration's position in its receiver.
    pub index: u32,
    pub group_key: String,
    pub escalation: bool,
    pub alerts: usize,
    pub ok: bool,
    pub error: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub duration_ms: i64,
}

/// Counters of one kind of integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegrationCounters {
    pub integration: &'static str,
    /// Notifications delivered.
    pub sent: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Notifications dropped (not retryable, too old, or receiver gone).
    pub dropped: u64,
}

/// The notifier's counters and gauges, for the server's `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Alerts received by `put` (accepted).
    pub alerts_received: u64,
    /// Alerts refused by `put`.
    pub alerts_invalid: u64,
    /// Alerts firing now.
    pub alerts_firing: u64,
    /// Aggregation groups.
    pub groups: u64,
    /// Silences active now.
    pub silences_active: u64,
    /// Notifications waiting in the outbox.
    pub outbox_pending: u64,
    /// Notifications queued since start.
    pub notifications_queued: u64,
    pub integrations: Vec<IntegrationCounters>,
}

/// Monotonic counters, shared with the loops.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) alerts_received: AtomicU64,
    pub(crate) alerts_invalid: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) sent: [AtomicU64; 7],
    pub(crate) failed: [AtomicU64; 7],
    pub(crate) dropped: [AtomicU64; 7],
}

/// An aggregation group: the alerts of one route with the same `group_by` values.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// Index of the route in the current config.
    pub(crate) route: usize,
    pub(crate) labels: Labels,
    pub(crate) alerts: BTreeSet<Fingerprint>,
    /// When the group is flushed next (Unix ms).
    pub(crate) next_flush: i64,
    /// Whether it was flushed once (after that it flushes every group_interval).
    pub(crate) flushed: bool,
}

/// The in-memory state; see the module documentation for how it changes.
#[derive(Debug)]
pub(crate) struct NotifyState {
    pub(crate) config: Arc<Config>,
    /// Firing alerts, and resolved ones until every group has flushed them.
    pub(crate) alerts: HashMap<Fingerprint, AlertRecord>,
    /// By group key.
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) nflog: HashMap<store::NflogKey, store::NflogEntry>,
    pub(crate) silences: BTreeMap<String, Silence>,
    /// Open acknowledgements (some may have expired: check `expires_at`).
    pub(crate) acks: HashMap<Fingerprint, AckRow>,
}

impl NotifyState {
    /// The acknowledgement holding for `f` at `now`.
    pub(crate) fn active_ack(&self, f: Fingerprint, now: i64) -> Option<&AckRow> {
        self.acks
            .get(&f)
            .filter(|a| a.expires_at.is_none_or(|e| e > now))
    }
}

/// Puts `rec` into the groups of the routes it lands on (a no-op for groups that
/// already hold it).
pub(crate) fn route_alert(st: &mut NotifyState, rec: &AlertRecord, now: i64) {
    let cfg = st.config.clone();
    for ri in match_routes(&cfg, &rec.labels) {
        let route = &cfg.routes()[ri];
        let gl = group_labels(route, &rec.labels);
        let key = group_key(route, &gl);
        let wait = ms(route.group_wait);
        let g = st.groups.entry(key).or_insert_with(|| Group {
            route: ri,
            labels: gl,
            alerts: BTreeSet::new(),
            next_flush: now.saturating_add(wait),
            flushed: false,
        });
        // Alertmanager: an alert older than group_wait does not wait again.
        if g.alerts.insert(rec.fingerprint)
            && !g.flushed
            && rec.starts_at.saturating_add(wait) < now
        {
            g.next_flush = g.next_flush.min(now);
        }
    }
}

/// The notifier: see the module documentation.
pub struct Notifier {
    pub(crate) pool: SqlitePool,
    pub(crate) opts: Options,
    /// Serializes every change of state (alerts, groups, notification log, outbox
    /// inserts, silences, acknowledgements) from its computation to its application,
    /// so that the database and memory change in the same order. A tokio mutex: it is
    /// held across the database write.
    pub(crate) writer: tokio::sync::Mutex<()>,
    /// The state queries read without waiting for the database. A std mutex: never
    /// held across an `.await`; sections are short (no I/O).
    pub(crate) state: Mutex<NotifyState>,
    /// The outbox as the delivery loop sees it (std mutex, same rules as `state`).
    pub(crate) outbox: Mutex<Outbox>,
    /// Wakes the dispatcher after a change (put, ack, silence, reload).
    pub(crate) dispatch_wake: tokio::sync::Notify,
    /// Wakes the delivery loop after new outbox rows or a finished delivery.
    pub(crate) deliver_wake: tokio::sync::Notify,
    /// `true` asks the loops to stop; `run` returns once they have.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// `true` once `run` has returned (or if it never started).
    pub(crate) stopped: tokio::sync::watch::Sender<bool>,
    /// Whether `run` was called (it may run only once).
    running: AtomicBool,
    pub(crate) http: reqwest::Client,
    pub(crate) counters: Counters,
}

impl Notifier {
    /// Opens (creating if missing) the notifier's SQLite file and loads its state.
    /// Nothing is sent until [`Notifier::run`] runs.
    pub async fn open(path: &Path, config: Config, opts: Options) -> Result<Arc<Notifier>, Error> {
        let pool = store::open(path).await?;
        let now = now_ms();
        let alerts = store::load_alerts(&pool).await?;
        let nflog = store::load_nflog(&pool).await?.into_iter().collect();
        let silences = store::load_silences(&pool)
            .await?
            .into_iter()
            .map(|r| {
                let matchers = parse_matchers(&r.matchers)
                    .map_err(|e| Error::Corrupt(format!("silence {}: {e}", r.id)))?;
                Ok((r.id.clone(), silence_from_row(r, matchers)))
            })
            .collect::<Result<BTreeMap<_, _>, Error>>()?;
        let acks = store::load_open_acks(&pool)
            .await?
            .into_iter()
            .map(|a| (a.fingerprint, a))
            .collect();
        let outbox = Outbox::new(store::load_outbox(&pool).await?);
        let mut st = NotifyState {
            config: Arc::new(config),
            alerts: HashMap::new(),
            groups: BTreeMap::new(),
            nflog,
            silences,
            acks,
        };
        for rec in alerts {
            route_alert(&mut st, &rec, now);
            st.alerts.insert(rec.fingerprint, rec);
        }
        let http = reqwest::Client::builder()
            .timeout(opts.delivery_timeout)
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Ok(Arc::new(Notifier {
            pool,
            opts,
            writer: tokio::sync::Mutex::new(()),
            state: Mutex::new(st),
            outbox: Mutex::new(outbox),
            dispatch_wake: tokio::sync::Notify::new(),
            deliver_wake: tokio::sync::Notify::new(),
            stop: tokio::sync::watch::channel(false).0,
            stopped: tokio::sync::watch::channel(true).0,
            running: AtomicBool::new(false),
            http,
            counters: Counters::default(),
        }))
    }

    /// Runs the dispatcher and the delivery loop until [`Notifier::shutdown`].
    /// Call it once (spawn it); a second call returns at once.
    pub async fn run(self: Arc<Self>) {
        if self.running.swap(true, Ordering::SeqCst) || *self.stop.borrow() {
            return;
        }
        self.stopped.send_replace(false);
        tokio::join!(
            crate::notify::dispatch::run(self.clone()),
            crate::notify::deliver::run(self.clone())
        );
        self.stopped.send_replace(true);
    }

    /// Stops [`Notifier::run`] and waits for it to return: in-flight deliveries
    /// finish (each within its timeout); queued ones stay in the outbox for the next
    /// start.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        self.dispatch_wake.notify_one();
        self.deliver_wake.notify_one();
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The configuration in use.
    pub fn config(&self) -> Arc<Config> {
        lock(&self.state).config.clone()
    }

    /// Receives alerts (Alertmanager's `POST /api/v2/alerts`): each is merged with
    /// what the notifier knows of the same label set, the history records every
    /// change of state, and new firing alerts join their groups.
    pub async fn put(&self, alerts: Vec<Alert>) -> Result<PutResult, Error> {
        let now = now_ms();
        let mut result = PutResult::default();
        let _w = self.writer.lock().await;
        let mut batch = Batch::default();
        let mut records: HashMap<Fingerprint, AlertRecord> = HashMap::new();
        let mut ended_acks: Vec<Fingerprint> = Vec::new();
        {
            let st = lock(&self.state);
            let resolve_timeout = ms(st.config.resolve_timeout);
            for (i, a) in alerts.into_iter().enumerate() {
                if let Err(e) = a.validate() {
                    result.rejected.push((i, e));
                    continue;
                }
                let f = a.fingerprint();
                if !st.alerts.contains_key(&f)
                    && !records.contains_key(&f)
                    && st.alerts.len() + records.len() >= self.opts.max_alerts
                {
                    result.rejected.push((
                        i,
                        format!(
                            "{} alerts are held already (the notifier's bound): \
                             a new alert is refused",
                            self.opts.max_alerts
                        ),
                    ));
                    continue;
                }
                result.accepted += 1;
                let starts_at = if a.starts_at == 0 { now } else { a.starts_at };
                let (ends_at, timeout) = match a.ends_at {
                    Some(e) => (e, false),
                    None => (now.saturating_add(resolve_timeout), true),
                };
                let incoming = AlertRecord {
                    fingerprint: f,
                    labels: a.labels,
                    annotations: a.annotations,
                    starts_at,
                    ends_at,
                    timeout,
                    generator_url: a.generator_url,
                    updated_at: now,
                    state: if ends_at <= now {
                        State::Resolved
                    } else {
                        State::Firing
                    },
                    notified_at: None,
                };
                let prev = records.get(&f).or_else(|| st.alerts.get(&f));
                let Some(rec) = merge(prev, incoming, now, &mut batch.history) else {
                    continue;
                };
                // An acknowledgement lasts until the alert resolves: it does not carry
                // over into a new firing episode.
                let ended =
                    rec.state == State::Resolved || prev.is_some_and(|p| p.resolved_at(now));
                if ended
                    && !ended_acks.contains(&f)
                    && let Some(ack) = st.acks.get(&f)
                {
                    batch.acks_end.push((ack.id, now, "resolved".into()));
                    ended_acks.push(f);
                }
                records.insert(f, rec);
            }
        }
        let n = u64::try_from(result.accepted).unwrap_or(u64::MAX);
        self.counters
            .alerts_received
            .fetch_add(n, Ordering::Relaxed);
        let bad = u64::try_from(result.rejected.len()).unwrap_or(u64::MAX);
        self.counters
            .alerts_invalid
            .fetch_add(bad, Ordering::Relaxed);
        if records.is_empty() {
            return Ok(result);
        }
        batch.alerts_upsert = records.values().cloned().collect();
        store::write(&self.pool, &batch).await?;
        {
            let mut st = lock(&self.state);
            for f in ended_acks {
                st.acks.remove(&f);
            }
            for (f, rec) in records {
                if rec.state == State::Firing {
                    route_alert(&mut st, &rec, now);
                }
                st.alerts.insert(f, rec);
            }
        }
        self.dispatch_wake.notify_one();
        Ok(result)
    }

    /// The alerts the notifier knows whose labels match all `matchers`, with their
    /// silences, inhibitions and acknowledgements; firing first, then by start.
    pub fn alerts(&self, matchers: &[Matcher]) -> Vec<AlertView> {
        let now = now_ms();
        let st = lock(&self.state);
        let mutes = crate::notify::dispatch::mutes(&st, now);
        let mut out: Vec<AlertView> = st
            .alerts
            .values()
            .filter(|a| all_match(matchers, &a.labels))
            .map(|a| view(&st, &mutes, a, now))
            .collect();
        out.sort_by(|a, b| {
            (a.state != AlertState::Firing, a.starts_at, a.fingerprint).cmp(&(
                b.state != AlertState::Firing,
                b.starts_at,
                b.fingerprint,
            ))
        });
        out
    }

    /// The dispatch groups holding firing alerts that match `matchers`, each with
    /// those alerts (Alertmanager's alert groups), by route then group labels.
    pub fn groups(&self, matchers: &[Matcher]) -> Vec<AlertGroup> {
        let now = now_ms();
        let st = lock(&self.state);
        let mutes = crate::notify::dispatch::mutes(&st, now);
        let routes = st.config.routes();
        let mut out: Vec<AlertGroup> = Vec::new();
        for g in st.groups.values() {
            let mut alerts: Vec<AlertView> = g
                .alerts
                .iter()
                .filter_map(|f| st.alerts.get(f))
                .filter(|a| !a.resolved_at(now) && all_match(matchers, &a.labels))
                .map(|a| view(&st, &mutes, a, now))
                .collect();
            if alerts.is_empty() {
                continue;
            }
            alerts.sort_by_key(|a| (a.starts_at, a.fingerprint));
            out.push(AlertGroup {
                labels: g.labels.clone(),
                receiver: routes
                    .get(g.route)
                    .map(|r| r.receiver.clone())
                    .unwrap_or_default(),
                alerts,
            });
        }
        out
    }

    /// One alert by fingerprint.
    pub fn alert(&self, f: Fingerprint) -> Option<AlertView> {
        let now = now_ms();
        let st = lock(&self.state);
        let mutes = crate::notify::dispatch::mutes(&st, now);
        st.alerts.get(&f).map(|a| view(&st, &mutes, a, now))
    }

    /// Every silence not yet pruned (pending, active, and expired within the log
    /// retention), newest first.
    pub fn silences(&self) -> Vec<Silence> {
        let st = lock(&self.state);
        let mut out: Vec<Silence> = st.silences.values().cloned().collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// One silence by id.
    pub fn silence(&self, id: &str) -> Option<Silence> {
        lock(&self.state).silences.get(id).cloned()
    }

    /// Checks a silence to create: refused without a matcher, with only matchers that
    /// match everything (an empty value), with an end not after the start or in the
    /// past, or without an author or a comment.
    pub fn check_silence(&self, s: &NewSilence) -> Result<(), Error> {
        let now = now_ms();
        if s.matchers.is_empty() {
            return Err(Error::Invalid(
                "silence: at least one matcher is required".into(),
            ));
        }
        if s.matchers.iter().all(|m| m.matches_value("")) {
            return Err(Error::Invalid(
                "silence: at least one matcher must not match the empty string \
                 (a silence of everything)"
                    .into(),
            ));
        }
        let starts_at = if s.starts_at == 0 { now } else { s.starts_at };
        if s.ends_at <= starts_at {
            return Err(Error::Invalid(
                "silence: ends_at must be after starts_at".into(),
            ));
        }
        if s.ends_at <= now {
            return Err(Error::Invalid("silence: ends_at is in the past".into()));
        }
        if s.created_by.trim().is_empty() {
            return Err(Error::Invalid("silence: created_by is required".into()));
        }
        if s.comment.trim().is_empty() {
            return Err(Error::Invalid("silence: a comment is required".into()));
        }
        Ok(())
    }

    /// Creates a silence and returns its id; refused as [`Notifier::check_silence`]
    /// says.
    pub async fn add_silence(&self, s: NewSilence) -> Result<String, Error> {
        self.check_silence(&s)?;
        let now = now_ms();
        let starts_at = if s.starts_at == 0 { now } else { s.starts_at };
        let id = new_id();
        let row = SilenceRow {
            id: id.clone(),
            matchers: format_matchers(&s.matchers),
            starts_at,
            ends_at: s.ends_at,
            created_by: s.created_by,
            comment: s.comment,
            created_at: now,
            updated_at: now,
        };
        let _w = self.writer.lock().await;
        let batch = Batch {
            silence_upsert: Some(row.clone()),
            ..Batch::default()
        };
        store::write(&self.pool, &batch).await?;
        lock(&self.state)
            .silences
            .insert(id.clone(), silence_from_row(row, s.matchers));
        self.dispatch_wake.notify_one();
        Ok(id)
    }

    /// Expires a silence now (a pending one is expired before it starts).
    pub async fn expire_silence(&self, id: &str) -> Result<(), Error> {
        let now = now_ms();
        let _w = self.writer.lock().await;
        let mut s = self
            .silence(id)
            .ok_or_else(|| Error::NotFound(format!("silence {id} not found")))?;
        if s.state(now) == SilenceState::Expired {
            return Err(Error::Invalid(format!("silence {id} already expired")));
        }
        s.ends_at = now;
        s.starts_at = s.starts_at.min(now);
        s.updated_at = now;
        let row = SilenceRow {
            id: s.id.clone(),
            matchers: format_matchers(&s.matchers),
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
            created_at: s.created_at,
            updated_at: now,
        };
        let batch = Batch {
            silence_upsert: Some(row),
            ..Batch::default()
        };
        store::write(&self.pool, &batch).await?;
        lock(&self.state).silences.insert(s.id.clone(), s);
        self.dispatch_wake.notify_one();
        Ok(())
    }

    /// Acknowledges a firing alert: until it resolves (or `ttl` passes) it is not
    /// notified again at `repeat_interval`, and it is not escalated. Replaces an
    /// earlier acknowledgement; recorded in the acknowledgements and the history.
    pub async fn ack(
        &self,
        f: Fingerprint,
        by: &str,
        comment: &str,
        ttl: Option<Duration>,
    ) -> Result<Ack, Error> {
        if by.trim().is_empty() {
            return Err(Error::Invalid("ack: who acknowledges is required".into()));
        }
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::Invalid("ack: the ttl must be positive".into()));
        }
        let now = now_ms();
        let _w = self.writer.lock().await;
        let mut batch = Batch::default();
        let (labels, was_acked) = {
            let st = lock(&self.state);
            let a = st
                .alerts
                .get(&f)
                .ok_or_else(|| Error::NotFound(format!("alert {f} not found")))?;
            if a.resolved_at(now) {
                return Err(Error::Invalid(format!("alert {f} is resolved")));
            }
            if let Some(prev) = st.acks.get(&f) {
                batch
                    .acks_end
                    .push((prev.id, now, format!("replaced by {by}")));
            }
            (a.labels.clone(), st.acks.contains_key(&f))
        };
        let expires_at = ttl.map(|t| now.saturating_add(ms(t)));
        let mut row = AckRow {
            id: 0,
            fingerprint: f,
            by: by.to_string(),
            comment: comment.to_string(),
            at: now,
            expires_at,
        };
        batch.ack_insert = Some(row.clone());
        let until = expires_at.map_or_else(String::new, |e| {
            format!(" until {}", crate::notify::time::format_rfc3339(e))
        });
        batch.history.push(HistoryRow {
            fingerprint: f,
            labels,
            from: if was_acked { "acknowledged" } else { "firing" },
            to: "acknowledged",
            at: now,
            detail: if comment.is_empty() {
                format!("by {by}{until}")
            } else {
                format!("by {by}{until}: {comment}")
            },
        });
        let written = store::write(&self.pool, &batch).await?;
        row.id = written.ack_id.unwrap_or_default();
        let ack = Ack::from_row(&row);
        lock(&self.state).acks.insert(f, row);
        self.dispatch_wake.notify_one();
        Ok(ack)
    }

    /// Removes the acknowledgement of an alert: notifications and escalation resume.
    pub async fn unack(&self, f: Fingerprint, by: &str) -> Result<(), Error> {
        let now = now_ms();
        let _w = self.writer.lock().await;
        let mut batch = Batch::default();
        {
            let st = lock(&self.state);
            let ack = st
                .acks
                .get(&f)
                .ok_or_else(|| Error::NotFound(format!("alert {f} is not acknowledged")))?;
            batch
                .acks_end
                .push((ack.id, now, format!("removed by {by}")));
            let labels = st
                .alerts
                .get(&f)
                .map(|a| a.labels.clone())
                .unwrap_or_default();
            batch.history.push(HistoryRow {
                fingerprint: f,
                labels,
                from: "acknowledged",
                to: "firing",
                at: now,
                detail: format!("acknowledgement removed by {by}"),
            });
        }
        store::write(&self.pool, &batch).await?;
        lock(&self.state).acks.remove(&f);
        self.dispatch_wake.notify_one();
        Ok(())
    }

    /// Every acknowledgement of an alert, newest first (open and ended).
    pub async fn acks(&self, f: Fingerprint) -> Result<Vec<Ack>, Error> {
        let now = now_ms();
        let mut all = store::acks_of(&self.pool, f).await?;
        // An open acknowledgement past its expiry ended then.
        for a in &mut all {
            if a.ended_at.is_none()
                && let Some(e) = a.expires_at
                && e <= now
            {
                a.ended_at = Some(e);
                a.end_reason = Some("expired".into());
            }
        }
        Ok(all)
    }

    /// The alert history, newest first.
    pub async fn history(&self, f: HistoryFilter) -> Result<Vec<HistoryEntry>, Error> {
        let limit = if f.limit == 0 { 1000 } else { f.limit };
        let since = f.since.unwrap_or(i64::MIN);
        let until = f.until.unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut before = (i64::MAX, i64::MAX);
        const PAGE: i64 = 1000;
        loop {
            let page =
                store::history_page(&self.pool, f.fingerprint, since, until, before, PAGE).await?;
            let n = page.len();
            for e in page {
                before = (e.at, e.id);
                if all_match(&f.matchers, &e.labels) {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if n < PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// The notification log (every delivery attempt), newest first.
    pub async fn notification_log(&self, f: LogFilter) -> Result<Vec<LogEntry>, Error> {
        let limit = if f.limit == 0 { 1000 } else { f.limit };
        let since = f.since.unwrap_or(i64::MIN);
        let until = f.until.unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut before = (i64::MAX, i64::MAX);
        const PAGE: i64 = 1000;
        loop {
            let page = store::log_page(&self.pool, since, until, before, PAGE).await?;
            let n = page.len();
            for e in page {
                before = (e.at, e.id);
                let keep = f.receiver.as_ref().is_none_or(|r| *r == e.receiver)
                    && f.integration.as_ref().is_none_or(|i| *i == e.integration)
                    && f.group_key.as_ref().is_none_or(|g| *g == e.group_key)
                    && (!f.only_failures || !e.ok);
                if keep {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if n < PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Records state changes the notifier does not see itself (an alert going pending,
    /// or a pending one going away without firing) in the history: `(labels, from, to,
    /// at)` with states `inactive` or `pending`.
    pub async fn record_changes(
        &self,
        changes: Vec<(Labels, &'static str, &'static str, i64)>,
    ) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let _w = self.writer.lock().await;
        let mut batch = Batch::default();
        for (labels, from, to, at) in changes {
            batch.history.push(HistoryRow {
                fingerprint: crate::notify::fingerprint(&labels),
                labels,
                from,
                to,
                at,
                detail: String::new(),
            });
        }
        store::write(&self.pool, &batch).await?;
        Ok(())
    }

    /// Replaces the configuration. Groups whose key survives keep their timers (so a
    /// reload neither delays nor repeats notifications); alerts are routed again.
    pub async fn reload(&self, config: Config) -> Result<(), Error> {
        let now = now_ms();
        let _w = self.writer.lock().await;
        {
            let mut st = lock(&self.state);
            let old = std::mem::take(&mut st.groups);
            st.config = Arc::new(config);
            let recs: Vec<AlertRecord> = st.alerts.values().cloned().collect();
            for rec in &recs {
                route_alert(&mut st, rec, now);
            }
            for (k, g) in st.groups.iter_mut() {
                if let Some(o) = old.get(k) {
                    g.next_flush = o.next_flush;
                    g.flushed = o.flushed;
                }
            }
        }
        self.dispatch_wake.notify_one();
        self.deliver_wake.notify_one();
        Ok(())
    }

    /// Counters and gauges for `/metrics`.
    pub fn metrics(&self) -> MetricsSnapshot {
        let now = now_ms();
        let (firing, groups, silences) = {
            let st = lock(&self.state);
            (
                st.alerts.values().filter(|a| !a.resolved_at(now)).count(),
                st.groups.len(),
                st.silences
                    .values()
                    .filter(|s| s.state(now) == SilenceState::Active)
                    .count(),
            )
        };
        let pending = lock(&self.outbox).len();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        MetricsSnapshot {
            alerts_received: get(&c.alerts_received),
            alerts_invalid: get(&c.alerts_invalid),
            alerts_firing: as_u64(firing),
            groups: as_u64(groups),
            silences_active: as_u64(silences),
            outbox_pending: as_u64(pending),
            notifications_queued: get(&c.queued),
            integrations: Kind::ALL
                .iter()
                .map(|k| IntegrationCounters {
                    integration: k.as_str(),
                    sent: get(&c.sent[k.index()]),
                    failed: get(&c.failed[k.index()]),
                    dropped: get(&c.dropped[k.index()]),
                })
                .collect(),
        }
    }
}

/// Merges an incoming alert with what is known of it (`prev`), Alertmanager's way:
/// a resolved alert that fires again after its end starts a new episode; otherwise
/// the update wins, keeping the earliest start. Appends the state changes to
/// `history`. Returns `None` for a resolved alert the notifier never saw firing.
fn merge(
    prev: Option<&AlertRecord>,
    mut inc: AlertRecord,
    now: i64,
    history: &mut Vec<HistoryRow>,
) -> Option<AlertRecord> {
    let f = inc.fingerprint;
    let mut change = |from: &'static str, to: &'static str, at: i64, labels: &Labels| {
        history.push(HistoryRow {
            fingerprint: f,
            labels: labels.clone(),
            from,
            to,
            at,
            detail: String::new(),
        });
    };
    let Some(p) = prev else {
        if inc.state == State::Resolved {
            return None;
        }
        change("inactive", "firing", now, &inc.labels);
        return Some(inc);
    };
    if p.resolved_at(now) && inc.starts_at > p.ends_at && inc.state == State::Firing {
        // A new episode: the old one ended (record it if the dispatcher has not yet).
        if p.state == State::Firing {
            change("firing", "resolved", p.ends_at, &p.labels);
        }
        change("resolved", "firing", now, &inc.labels);
        return Some(inc);
    }
    inc.starts_at = inc.starts_at.min(p.starts_at);
    inc.notified_at = p.notified_at;
    match (p.state, inc.state) {
        (State::Firing, State::Resolved) => {
            change("firing", "resolved", inc.ends_at.min(now), &inc.labels)
        }
        (State::Resolved, State::Firing) => change("resolved", "firing", now, &inc.labels),
        _ => {}
    }
    Some(inc)
}

fn view(
    st: &NotifyState,
    mutes: &crate::notify::dispatch::Mutes,
    a: &AlertRecord,
    now: i64,
) -> AlertView {
    let cfg = &st.config;
    let mut receivers: Vec<String> = Vec::new();
    let mut muted_by = BTreeSet::new();
    let mut muted_receivers: Vec<String> = Vec::new();
    for i in match_routes(cfg, &a.labels) {
        let route = &cfg.routes()[i];
        let by = time_muted_by(cfg, route, now);
        if !by.is_empty() && !muted_receivers.contains(&route.receiver) {
            muted_receivers.push(route.receiver.clone());
        }
        muted_by.extend(by.into_iter().map(str::to_string));
        receivers.push(route.receiver.clone());
    }
    receivers.dedup();
    AlertView {
        fingerprint: a.fingerprint,
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        starts_at: a.starts_at,
        ends_at: a.ends_at,
        generator_url: a.generator_url.clone(),
        updated_at: a.updated_at,
        state: if a.resolved_at(now) {
            AlertState::Resolved
        } else {
            AlertState::Firing
        },
        silenced_by: mutes
            .silenced
            .get(&a.fingerprint)
            .cloned()
            .unwrap_or_default(),
        inhibited_by: mutes
            .inhibited
            .get(&a.fingerprint)
            .cloned()
            .unwrap_or_default(),
        acked: st.active_ack(a.fingerprint, now).map(Ack::from_row),
        receivers,
        muted_by: muted_by.into_iter().collect(),
        muted_receivers,
        notified_at: a.notified_at,
    }
}

fn silence_from_row(r: SilenceRow, matchers: Vec<Matcher>) -> Silence {
    Silence {
        id: r.id,
        matchers,
        starts_at: r.starts_at,
        ends_at: r.ends_at,
        created_by: r.created_by,
        comment: r.comment,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// A random UUID (version 4), the form of Alertmanager's silence ids.
fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to the clock and a counter (ids stay unique).
        static N: AtomicU64 = AtomicU64::new(0);
        let t = now_ms().to_le_bytes();
        let n = N.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        b[..8].copy_from_slice(&t);
        b[8..].copy_from_slice(&n);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(f: u64, starts: i64, ends: i64, state: State) -> AlertRecord {
        AlertRecord {
            fingerprint: Fingerprint(f),
            labels: [("alertname".to_string(), "x".to_string())].into(),
            annotations: Labels::new(),
            starts_at: starts,
            ends_at: ends,
            timeout: false,
            generator_url: String::new(),
            updated_at: 0,
            state,
            notified_at: Some(5),
        }
    }

    #[test]
    fn merge_records_each_state_change() {
        let mut h = Vec::new();
        // New firing alert.
        let a = merge(None, rec(1, 100, 10_000, State::Firing), 1000, &mut h).unwrap();
        assert_eq!((h[0].from, h[0].to), ("inactive", "firing"));
        // An update keeps the earliest start and the first notification time.
        h.clear();
        let b = merge(Some(&a), rec(1, 200, 20_000, State::Firing), 2000, &mut h).unwrap();
        assert_eq!(b.starts_at, 100);
        assert_eq!(b.notified_at, Some(5));
        assert!(h.is_empty());
        // Resolved.
        let c = merge(Some(&b), rec(1, 200, 2500, State::Resolved), 3000, &mut h).unwrap();
        assert_eq!((h[0].from, h[0].to, h[0].at), ("firing", "resolved", 2500));
        // Fires again after its end: a new episode, not notified yet.
        h.clear();
        let mut again = rec(1, 4000, 90_000, State::Firing);
        again.notified_at = None;
        let d = merge(Some(&c), again, 5000, &mut h).unwrap();
        assert_eq!(d.starts_at, 4000);
        assert_eq!(d.notified_at, None);
        assert_eq!((h[0].from, h[0].to), ("resolved", "firing"));
        // A resolved alert never seen firing is ignored.
        assert!(merge(None, rec(2, 1, 2, State::Resolved), 10, &mut h).is_none());
        // A late resolved update (its start given as "now") is not a new episode.
        h.clear();
        let late = merge(Some(&c), rec(1, 9000, 8000, State::Resolved), 9000, &mut h).unwrap();
        assert!(h.is_empty(), "{h:?}");
        assert_eq!(late.starts_at, 100);
    }

    #[test]
    fn silence_ids_are_uuids() {
        let a = new_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_id());
    }
}
