//! Alertmanager's HTTP API (v2) over Minos' notifier, so that the tools built for
//! Alertmanager work against Minos unchanged: `amtool` (alerts, silences), Grafana's
//! Alertmanager data source, karma, and Prometheus servers that send their alerts to
//! an Alertmanager (`alerting.alertmanagers`, `api_version: v2`).
//!
//! ```text
//! GET    /api/v2/status
//! GET    /api/v2/receivers
//! GET    /api/v2/alerts[?filter=M&filter=…&active=&silenced=&inhibited=&receiver=RE]
//! POST   /api/v2/alerts                     [{"labels", "annotations", "startsAt", "endsAt", "generatorURL"}]
//! GET    /api/v2/alerts/groups[?same parameters]
//! GET    /api/v2/silences[?filter=M&…]
//! POST   /api/v2/silences                   {"id"?, "matchers", "startsAt", "endsAt", "createdBy", "comment"}
//! GET    /api/v2/silence/{id}
//! DELETE /api/v2/silence/{id}
//! ```
//!
//! The shapes are Alertmanager's OpenAPI ones; errors answer 4xx with a JSON string, as
//! Alertmanager does. Every endpoint needs an API token (`Authorization: Bearer`,
//! amtool's `--http.config.file` with `authorization: {credentials: TOKEN}`,
//! Prometheus' `authorization` in its `alertmanagers` entry).
//!
//! Differences from Alertmanager:
//! - `POST /api/v2/silences` with the `id` of an existing silence creates a new one
//!   and then expires the old (a new id is answered); Alertmanager keeps the id when
//!   only the times or the comment change.
//! - A silence's `createdBy` is the author the client gives followed by the token that
//!   made it (`alice (api:oncall)`), so the record says who really acted.
//! - At most 10,000 alerts per `POST /api/v2/alerts`; each alert within the notifier's
//!   bounds (64 labels, 4 KiB per label, 64 KiB per annotation).
//! - An alert is `suppressed` when silenced, inhibited, or when every route it lands on
//!   is muted by a time interval (`mutedBy`, as in Alertmanager 0.28).
//! - `/api/v2/status` does not show the configuration (`config.original` is empty):
//!   it may hold secrets.

use std::sync::Arc;

use alerting::notify::{self, AlertView, MatchOp, Matcher, Notifier};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::Params;
use crate::status::format_rfc3339;

/// An error as Alertmanager answers one: the status and a JSON string.
pub struct AmError(StatusCode, String);

impl IntoResponse for AmError {
    fn into_response(self) -> Response {
        (self.0, Json(Value::String(self.1))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> AmError {
    AmError(StatusCode::BAD_REQUEST, msg.into())
}

fn notifier(st: &AppState) -> Result<Arc<Notifier>, AmError> {
    st.notifier().cloned().ok_or_else(|| {
        AmError(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: no notifier yet".into(),
        )
    })
}

fn notify_error(e: notify::Error) -> AmError {
    let status = match e.kind() {
        notify::ErrorKind::BadData => StatusCode::BAD_REQUEST,
        notify::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        notify::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    AmError(status, e.to_string())
}

pub type Answer = Result<Response, AmError>;

/// Alertmanager's JSON form of a matcher.
fn matcher_json(m: &Matcher) -> Value {
    json!({
        "name": m.name,
        "value": m.value,
        "isRegex": matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
        "isEqual": matches!(m.op, MatchOp::Equal | MatchOp::Regex),
    })
}

/// The `filter` parameters (each one or more matchers, `a="b"` or `{a="b",c=~"d"}`).
fn filters(p: &Params) -> Result<Vec<Matcher>, AmError> {
    let mut out = Vec::new();
    for f in p.all("filter").filter(|f| !f.trim().is_empty()) {
        let ms = notify::parse_matchers(f)
            .map_err(|e| bad(format!("bad matcher format: {f:?}: {}", e.message)))?;
        out.extend(ms);
    }
    Ok(out)
}

/// A boolean parameter, `default` when absent.
fn flag(p: &Params, k: &str, default: bool) -> Result<bool, AmError> {
    match p.get(k).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(bad(format!("{k}: {v:?} is not a boolean"))),
    }
}

/// Which alerts a listing shows: Alertmanager's `active`, `silenced`, `inhibited` and
/// `receiver` parameters.
struct AlertFilter {
    active: bool,
    silenced: bool,
    inhibited: bool,
    receiver: Option<regex::Regex>,
}

impl AlertFilter {
    fn parse(p: &Params) -> Result<AlertFilter, AmError> {
        let receiver = match p.get("receiver").filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => Some(
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| bad(format!("receiver: bad regular expression: {e}")))?,
            ),
        };
        Ok(AlertFilter {
            active: flag(p, "active", true)?,
            silenced: flag(p, "silenced", true)?,
            inhibited: flag(p, "inhibited", true)?,
            receiver,
        })
    }

    fn keeps(&self, a: &AlertView) -> bool {
        let silenced = !a.silenced_by.is_empty();
        let inhibited = !a.inhibited_by.is_empty();
        if (silenced && !self.silenced)
            || (inhibited && !self.inhibited)
            || (!silenced && !inhibited && !self.active)
        {
            return false;
        }
        self.receiver
            .as_ref()
            .is_none_or(|re| a.receivers.iter().any(|r| re.is_match(r)))
    }
}

/// Whether the alert is `suppressed` in Alertmanager's terms.
fn suppressed(a: &AlertView) -> bool {
    !a.silenced_by.is_empty()
        || !a.inhibited_by.is_empty()
        || (!a.receivers.is_empty() && a.receivers.iter().all(|r| a.muted_receivers.contains(r)))
}

/// Alertmanager's `gettableAlert`.
fn alert_json(a: &AlertView) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": format_rfc3339(a.starts_at),
        "endsAt": format_rfc3339(a.ends_at),
        "updatedAt": format_rfc3339(a.updated_at),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint.to_string(),
        "receivers": a.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": if suppressed(a) { "suppressed" } else { "active" },
            "silencedBy": a.silenced_by,
            "inhibitedBy": a.inhibited_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mutedBy": a.muted_by,
        },
    })
}

/// Alertmanager's `gettableSilence`.
fn silence_json(s: &notify::Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers.iter().map(matcher_json).collect::<Vec<_>>(),
        "startsAt": format_rfc3339(s.starts_at),
        "endsAt": format_rfc3339(s.ends_at),
        "updatedAt": format_rfc3339(s.updated_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": {"state": match s.state(now) {
            notify::SilenceState::Pending => "pending",
            notify::SilenceState::Active => "active",
            notify::SilenceState::Expired => "expired",
        }},
    })
}

/// `GET /api/v2/status`.
pub async fn status(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "versionInfo": crate::status::build_info(),
        "config": {"original": ""},
        "uptime": format_rfc3339(crate::status::started_ms(&st)),
    }))
    .into_response()
}

/// `GET /api/v2/receivers`.
pub async fn receivers(State(st): State<Arc<AppState>>) -> Answer {
    let n = notifier(&st)?;
    let out: Vec<Value> = n
        .config()
        .receivers()
        .iter()
        .map(|r| json!({"name": r.name}))
        .collect();
    Ok(Json(out).into_response())
}

/// `GET /api/v2/alerts`: the firing alerts, oldest first.
pub async fn alerts(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Answer {
    let n = notifier(&st)?;
    let p = Params::parse(q.as_deref(), &[]);
    let ms = filters(&p)?;
    let keep = AlertFilter::parse(&p)?;
    let out: Vec<Value> = n
        .alerts(&ms)
        .iter()
        .filter(|a| a.state == notify::AlertState::Firing && keep.keeps(a))
        .map(alert_json)
        .collect();
    Ok(Json(out).into_response())
}

/// `GET /api/v2/alerts/groups`.
pub async fn alert_groups(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Answer {
    let n = notifier(&st)?;
    let p = Params::parse(q.as_deref(), &[]);
    let ms = filters(&p)?;
    let keep = AlertFilter::parse(&p)?;
    let out: Vec<Value> = n
        .groups(&ms)
        .into_iter()
        .filter_map(|g| {
            let alerts: Vec<Value> = g
                .alerts
                .iter()
                .filter(|a| keep.keeps(a))
                .map(alert_json)
                .collect();
            (!alerts.is_empty()).then(
                || json!({"labels": g.labels, "receiver": {"name": g.receiver}, "alerts": alerts}),
            )
        })
        .collect();
    Ok(Json(out).into_response())
}

/// Alertmanager's `postableAlert`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: Option<notify::Labels>,
    #[serde(default)]
    annotations: notify::Labels,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    generator_url: String,
}

/// An optional time of a postable alert or silence: absent, empty or Go's zero time is
/// unset (`None`).
fn opt_time(what: &str, s: Option<&str>) -> Result<Option<i64>, String> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => {
            let ms = crate::params::parse_time(s).map_err(|e| format!("{what}: {e}"))?;
            Ok((ms > 0).then_some(ms))
        }
    }
}

/// Most alerts in one `POST /api/v2/alerts` (Prometheus sends at most
/// `--alertmanager.notification-queue-capacity`, 10,000, and batches of 256).
const MAX_ALERTS_PER_REQUEST: usize = 10_000;

/// `POST /api/v2/alerts`: alerts from a Prometheus (or anything that speaks to an
/// Alertmanager). Valid alerts are taken even when others in the batch are refused;
/// the refused ones are listed in the 400 answer.
pub async fn post_alerts(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Answer {
    let n = notifier(&st)?;
    let posted: Vec<PostableAlert> =
        serde_json::from_slice(&body).map_err(|e| bad(format!("request body: {e}")))?;
    if posted.len() > MAX_ALERTS_PER_REQUEST {
        return Err(bad(format!(
            "{} alerts in one request: at most {MAX_ALERTS_PER_REQUEST}",
            posted.len()
        )));
    }
    let mut errors: Vec<String> = Vec::new();
    let mut batch: Vec<notify::Alert> = Vec::new();
    // The position in the request of each alert of `batch`.
    let mut orig: Vec<usize> = Vec::new();
    for (i, a) in posted.into_iter().enumerate() {
        let times = opt_time("startsAt", a.starts_at.as_deref())
            .and_then(|s| Ok((s, opt_time("endsAt", a.ends_at.as_deref())?)));
        let (starts, ends) = match times {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("alert {i}: {e}"));
                continue;
            }
        };
        orig.push(i);
        batch.push(notify::Alert {
            labels: a.labels.unwrap_or_default(),
            annotations: a.annotations,
            starts_at: starts.unwrap_or(0),
            ends_at: ends,
            generator_url: a.generator_url,
        });
    }
    if !batch.is_empty() {
        let r = n.put(batch).await.map_err(notify_error)?;
        errors.extend(
            r.rejected
                .into_iter()
                .map(|(i, why)| format!("alert {}: {why}", orig.get(i).copied().unwrap_or(i))),
        );
    }
    if errors.is_empty() {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(bad(errors.join("; ")))
    }
}

/// Alertmanager's JSON matcher, as posted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableMatcher {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

/// Alertmanager's `postableSilence`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    #[serde(default)]
    id: String,
    matchers: Vec<PostableMatcher>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// Whether a silence shows under the `filter` matchers: they must match the labels its
/// equality matchers name (Alertmanager's rule).
fn silence_shown(s: &notify::Silence, filter: &[Matcher]) -> bool {
    let labels: notify::Labels = s
        .matchers
        .iter()
        .filter(|m| m.op == MatchOp::Equal)
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    filter
        .iter()
        .all(|m| m.matches_value(labels.get(&m.name).map_or("", String::as_str)))
}

/// `GET /api/v2/silences`.
pub async fn silences(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Answer {
    let n = notifier(&st)?;
    let p = Params::parse(q.as_deref(), &[]);
    let ms = filters(&p)?;
    let now = tsdb::now_ms();
    let out: Vec<Value> = n
        .silences()
        .iter()
        .filter(|s| silence_shown(s, &ms))
        .map(|s| silence_json(s, now))
        .collect();
    Ok(Json(out).into_response())
}

/// `GET /api/v2/silence/{id}`.
pub async fn silence(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Answer {
    let n = notifier(&st)?;
    let s = n
        .silence(&id)
        .ok_or_else(|| AmError(StatusCode::NOT_FOUND, format!("silence {id} not found")))?;
    Ok(Json(silence_json(&s, tsdb::now_ms())).into_response())
}

/// `DELETE /api/v2/silence/{id}`: expires it.
pub async fn delete_silence(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Answer {
    let n = notifier(&st)?;
    n.expire_silence(&id).await.map_err(notify_error)?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /api/v2/silences`: creates a silence (or replaces the one named by `id`) and
/// answers `{"silenceID": ...}`.
pub async fn post_silence(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    body: axum::body::Bytes,
) -> Answer {
    let n = notifier(&st)?;
    let req: PostableSilence =
        serde_json::from_slice(&body).map_err(|e| bad(format!("request body: {e}")))?;
    let mut matchers = Vec::with_capacity(req.matchers.len());
    for m in &req.matchers {
        let op = match (m.is_regex, m.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        matchers.push(
            Matcher::new(&m.name, op, &m.value)
                .map_err(|e| bad(format!("matcher {:?}: {}", m.name, e.message)))?,
        );
    }
    let now = tsdb::now_ms();
    let starts = opt_time("startsAt", req.starts_at.as_deref()).map_err(bad)?;
    let ends = opt_time("endsAt", req.ends_at.as_deref())
        .map_err(bad)?
        .ok_or_else(|| bad("endsAt is required"))?;
    // The author a client names is kept, with the token that really acted.
    let token = format!("{}:{}", caller.kind.as_str(), caller.name);
    let created_by = match req.created_by.trim() {
        "" => token,
        who if who == token => token,
        who => format!("{who} ({token})"),
    };
    let new = notify::NewSilence {
        matchers,
        // A start in the past is now, as in Alertmanager.
        starts_at: starts.map_or(0, |s| s.max(now)),
        ends_at: ends,
        created_by,
        comment: req.comment,
    };
    if !req.id.is_empty() {
        let old = n.silence(&req.id).ok_or_else(|| {
            AmError(
                StatusCode::NOT_FOUND,
                format!("silence {} not found", req.id),
            )
        })?;
        // The new silence first: if it cannot be made, the old one still holds; if the
        // old one then cannot be expired, both hold (nothing is unmuted).
        let id = n.add_silence(new).await.map_err(notify_error)?;
        if old.state(now) != notify::SilenceState::Expired {
            n.expire_silence(&req.id).await.map_err(notify_error)?;
        }
        return Ok(Json(json!({"silenceID": id})).into_response());
    }
    let id = n.add_silence(new).await.map_err(notify_error)?;
    Ok(Json(json!({"silenceID": id})).into_response())
}
