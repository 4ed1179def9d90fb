/*!
Notifications: what happens to an alert after the rule engine fires it.

The rule engine hands alerts to a [`Notifier`] ([`Notifier::put`], the equivalent of
Alertmanager's `POST /api/v2/alerts`). The notifier routes each alert through the
route tree of its [`Config`] (an Alertmanager-compatible YAML subset), gathers alerts
into aggregation groups (route × `group_by` values), and flushes each group on its
timers (`group_wait`, `group_interval`, `repeat_interval`). At flush time the route's
time intervals, silences, inhibition rules and acknowledgements are applied, the
notification log decides what is new, and every notification to send is written to a
durable outbox in the same transaction that records it as sent. A delivery loop drains the outbox to the
receivers' integrations (email, Slack-compatible chat, DingTalk, Feishu/Lark, WeCom,
generic webhook, another Alertmanager) and retries with exponential backoff until the
notification is delivered or superseded.

Everything that must survive a restart lives in one SQLite file: active alerts, the
notification log, the outbox, silences, acknowledgements, the alert history and the
log of delivery attempts.

# Layout
- `config`: the YAML configuration, raw (serde) and validated ([`Config`]).
- `matcher`: label matchers in Alertmanager's syntax and their parser.
- `route`: matching an alert against the route tree; group labels and keys.
- `alert`: the [`Alert`] the rule engine sends and its [`Fingerprint`].
- `notifier`: the [`Notifier`]: its state, `put`, the query and change API.
- `dispatch`: the dispatcher loop: groups, timers, dedup, escalation, inhibition.
- `deliver`: the outbox delivery loop, backoff and the notification log.
- `store`: the SQLite schema and every statement.
- `message`: a notification as stored in the outbox, and its renderings (subject,
  text, HTML, Markdown) shared by the integrations.
- `template`: notification templates: receivers' text fields, `templates:` files and
  the built-in named templates.
- `integrations`: one file per kind of receiver, all of the same shape.
- `time`: RFC 3339 formatting of Unix milliseconds.
- `timeinterval`: Alertmanager's named time intervals (`time_intervals`), which mute
  routes (`mute_time_intervals`) or limit them to certain times
  (`active_time_intervals`).
*/

mod alert;
pub mod config;
mod deliver;
mod dispatch;
pub mod integrations;
mod matcher;
mod message;
mod notifier;
mod route;
mod store;
mod template;
mod time;
mod timeinterval;

pub use alert::{Alert, Fingerprint, Labels, fingerprint};
pub use config::{Config, ConfigError};
pub use matcher::{MatchOp, Matcher, MatcherError, format_matchers, parse_matchers};
pub use message::{AlertStatus as NotifiedStatus, Notification, NotifiedAlert};
pub use notifier::{
    Ack, AlertGroup, AlertState, AlertView, HistoryEntry, HistoryFilter, IntegrationCounters,
    LogEntry, LogFilter, MetricsSnapshot, NewSilence, Notifier, Options, PutResult, Silence,
    SilenceState,
};
pub use time::format_rfc3339;
pub use timeinterval::TimeInterval;

/// How a caller should treat an [`Error`]; only `web` maps kinds to HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is invalid (a bad matcher, an end before the start).
    BadData,
    /// The alert, silence or acknowledgement does not exist.
    NotFound,
    /// The database failed or holds something this build cannot read.
    Internal,
}

/// Why a notifier operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input is invalid; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist; nothing changed.
    #[error("{0}")]
    NotFound(String),
    /// The database failed; the in-memory state is unchanged.
    #[error("notifier database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database holds something this build cannot read.
    #[error("notifier database: {0}")]
    Corrupt(String),
}

impl Error {
    /// The class of the error, for picking a response status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) => ErrorKind::BadData,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Db(_) | Error::Corrupt(_) => ErrorKind::Internal,
        }
    }
}

/// The current wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Locks a std mutex, ignoring poisoning: every critical section in this module leaves
/// the data consistent before it can panic (no section calls out while half-done).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Milliseconds in a duration, saturating.
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
