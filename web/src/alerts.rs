//! The notifier in the server: the alerts the rules hand it, and the ops API over its
//! state: active alerts with their silences, inhibitions and acknowledgements, the
//! alert history, the notification log, silences and acknowledgements.
//!
//! ```text
//! GET    /api/ops/v1/alerts[?filter={severity="critical"}]
//! POST   /api/ops/v1/alerts/{fingerprint}/ack      {"comment": "...", "ttl": "2h"}
//! DELETE /api/ops/v1/alerts/{fingerprint}/ack
//! GET    /api/ops/v1/alerts/history[?filter=&fingerprint=&since=&until=&limit=]
//! GET    /api/ops/v1/notifications[?receiver=&integration=&failed=1&since=&limit=]
//! GET    /api/ops/v1/silences
//! POST   /api/ops/v1/silences                      {"matchers": "{a=\"b\"}", "ends_at"|"duration", "comment"}
//! DELETE /api/ops/v1/silences/{id}
//! ```
//! Times are Unix ms or RFC 3339; durations Prometheus durations. The person acting is
//! the token's name.

use std::sync::Arc;
use std::time::Duration;

use alerting::notify::{self, Fingerprint, Notifier};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, Params, success};
use crate::status::format_rfc3339;

/// The alerts an evaluation hands over, as the notifier takes them: identifying labels,
/// annotations, start, end (a firing alert's end is when it expires unless renewed),
/// and a link to its expression.
pub fn to_notify(n: &alerting::eval::Notification, external_url: &str) -> notify::Alert {
    let expr: String = form_urlencoded::byte_serialize(n.expr.as_bytes()).collect();
    notify::Alert {
        labels: n
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: n.annotations.clone(),
        starts_at: n.starts_at,
        ends_at: Some(n.ends_at),
        generator_url: format!(
            "{}/graph?g0.expr={expr}&g0.tab=1",
            external_url.trim_end_matches('/')
        ),
    }
}

/// Reads a notifier configuration (`--alerting.config`); without one, alerts are kept,
/// shown and recorded in the history, and notify nobody.
pub fn config(path: Option<&std::path::Path>) -> Result<notify::Config, String> {
    match path {
        Some(p) => notify::Config::load(p).map_err(|e| e.to_string()),
        None => notify::Config::parse("route:\n  receiver: none\nreceivers:\n  - name: none\n")
            .map_err(|e| e.to_string()),
    }
}

fn notifier(st: &AppState) -> Result<&Arc<Notifier>, ApiError> {
    st.notifier()
        .ok_or_else(|| ApiError::unavailable("starting: opening the notifier"))
}

fn error(e: notify::Error) -> ApiError {
    match e.kind() {
        notify::ErrorKind::BadData => ApiError::bad_data(e.to_string()),
        notify::ErrorKind::NotFound => {
            ApiError::with_status(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        notify::ErrorKind::Internal => ApiError::internal(e.to_string()),
    }
}

fn who(caller: &inventory::TokenInfo) -> String {
    format!("{}:{}", caller.kind.as_str(), caller.name)
}

/// A time: Unix ms, or RFC 3339.
fn time_param(p: &Params, k: &str) -> Result<Option<i64>, ApiError> {
    match p.get(k).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse_time(s)
            .map(Some)
            .map_err(|e| ApiError::bad_data(format!("{k}: {e}"))),
    }
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    crate::params::parse_time(s)
        .map_err(|_| format!("{s:?}: expected Unix milliseconds or RFC 3339"))
}

fn matchers(p: &Params) -> Result<Vec<notify::Matcher>, ApiError> {
    match p.get("filter").filter(|s| !s.is_empty()) {
        None => Ok(Vec::new()),
        Some(f) => notify::parse_matchers(f)
            .map_err(|e| ApiError::bad_data(format!("filter: {}", e.message))),
    }
}

fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit").filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(l) => l
            .parse::<usize>()
            .map(|n| n.min(10_000))
            .map_err(|_| ApiError::bad_data(format!("limit {l:?}: expected a number"))),
    }
}

fn ack_json(a: &notify::Ack) -> Value {
    json!({
        "id": a.id,
        "fingerprint": a.fingerprint.to_string(),
        "by": a.by,
        "comment": a.comment,
        "at": format_rfc3339(a.at),
        "expires_at": a.expires_at.map(format_rfc3339),
        "ended_at": a.ended_at.map(format_rfc3339),
        "end_reason": a.end_reason,
    })
}

fn alert_json(a: &notify::AlertView) -> Value {
    json!({
        "fingerprint": a.fingerprint.to_string(),
        "labels": a.labels,
        "annotations": a.annotations,
        "state": match a.state {
            notify::AlertState::Firing => "firing",
            notify::AlertState::Resolved => "resolved",
        },
        "starts_at": format_rfc3339(a.starts_at),
        "ends_at": format_rfc3339(a.ends_at),
        "generator_url": a.generator_url,
        "silenced_by": a.silenced_by,
        "inhibited_by": a.inhibited_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "acked": a.acked.as_ref().map(ack_json),
        "receivers": a.receivers,
        "muted_by": a.muted_by,
        "muted_receivers": a.muted_receivers,
        "notified_at": a.notified_at.map(format_rfc3339),
    })
}

fn silence_json(s: &notify::Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "matchers": notify::format_matchers(&s.matchers),
        "starts_at": format_rfc3339(s.starts_at),
        "ends_at": format_rfc3339(s.ends_at),
        "created_by": s.created_by,
        "comment": s.comment,
        "created_at": format_rfc3339(s.created_at),
        "state": match s.state(now) {
            notify::SilenceState::Pending => "pending",
            notify::SilenceState::Active => "active",
            notify::SilenceState::Expired => "expired",
        },
    })
}

/// `GET /api/ops/v1/alerts[?filter=…]`: what the notifier holds, firing first.
pub async fn list(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let n = notifier(&st)?;
        let p = Params::parse(q.as_deref(), &[]);
        let ms = matchers(&p)?;
        let mut alerts = n.alerts(&ms);
        alerts.sort_by_key(|a| (a.state != notify::AlertState::Firing, a.starts_at));
        let out: Vec<Value> = alerts.iter().map(alert_json).collect();
        Ok::<_, ApiError>(success(json!({"alerts": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

fn fingerprint(s: &str) -> Result<Fingerprint, ApiError> {
    s.parse().map_err(ApiError::bad_data)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckReq {
    #[serde(default)]
    comment: String,
    /// How long the acknowledgement holds (`2h`); without, until the alert resolves.
    ttl: Option<String>,
}

/// `POST /api/ops/v1/alerts/{fingerprint}/ack`.
pub async fn ack(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(fp): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let n = notifier(&st)?;
        let f = fingerprint(&fp)?;
        let req: AckReq = if body.iter().all(u8::is_ascii_whitespace) {
            AckReq::default()
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_data(format!("request body: {e}")))?
        };
        let ttl = match req.ttl.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(Duration::from_millis(
                promql::parse_duration_ms(t)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .and_then(|ms| u64::try_from(ms).ok())
                    .ok_or_else(|| ApiError::bad_data(format!("ttl {t:?}: expected a duration")))?,
            )),
        };
        let a = n
            .ack(f, &who(&caller), &req.comment, ttl)
            .await
            .map_err(error)?;
        Ok::<_, ApiError>(success(ack_json(&a)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `DELETE /api/ops/v1/alerts/{fingerprint}/ack`.
pub async fn unack(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(fp): Path<String>,
) -> Response {
    let run = async {
        let n = notifier(&st)?;
        n.unack(fingerprint(&fp)?, &who(&caller))
            .await
            .map_err(error)?;
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/alerts/history`: state changes, newest first.
pub async fn history(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let n = notifier(&st)?;
        let p = Params::parse(q.as_deref(), &[]);
        let f = notify::HistoryFilter {
            matchers: matchers(&p)?,
            fingerprint: match p.get("fingerprint").filter(|s| !s.is_empty()) {
                Some(s) => Some(fingerprint(s)?),
                None => None,
            },
            since: time_param(&p, "since")?,
            until: time_param(&p, "until")?,
            limit: limit(&p)?,
        };
        let entries = n.history(f).await.map_err(error)?;
        let out: Vec<Value> = entries
            .iter()
            .map(|h| {
                json!({"id": h.id, "fingerprint": h.fingerprint.to_string(), "labels": h.labels,
                       "from": h.from, "to": h.to, "at": format_rfc3339(h.at), "detail": h.detail})
            })
            .collect();
        Ok::<_, ApiError>(success(json!({"history": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/notifications`: delivery attempts, newest first.
pub async fn notifications(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let n = notifier(&st)?;
        let p = Params::parse(q.as_deref(), &[]);
        let f = notify::LogFilter {
            receiver: p
                .get("receiver")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            integration: p
                .get("integration")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            group_key: p.get("group").filter(|s| !s.is_empty()).map(str::to_string),
            only_failures: matches!(p.get("failed"), Some("1" | "true")),
            since: time_param(&p, "since")?,
            until: time_param(&p, "until")?,
            limit: limit(&p)?,
        };
        let entries = n.notification_log(f).await.map_err(error)?;
        let out: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({"id": e.id, "at": format_rfc3339(e.at), "receiver": e.receiver,
                       "integration": e.integration, "index": e.index, "group": e.group_key,
                       "escalation": e.escalation, "alerts": e.alerts, "ok": e.ok,
                       "error": e.error, "attempt": e.attempt, "duration_ms": e.duration_ms})
            })
            .collect();
        Ok::<_, ApiError>(success(json!({"notifications": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/ops/v1/silences`.
pub async fn silences(State(st): State<Arc<AppState>>) -> Response {
    let run = async {
        let n = notifier(&st)?;
        let now = tsdb::now_ms();
        let out: Vec<Value> = n.silences().iter().map(|s| silence_json(s, now)).collect();
        Ok::<_, ApiError>(success(json!({"silences": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceReq {
    /// `{alertname="X", instance=~"web-.*"}` (braces optional).
    matchers: String,
    starts_at: Option<String>,
    ends_at: Option<String>,
    /// Instead of `ends_at`: how long from its start (`2h`).
    duration: Option<String>,
    #[serde(default)]
    comment: String,
}

/// `POST /api/ops/v1/silences`: answers the new silence's id.
pub async fn add_silence(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let n = notifier(&st)?;
        let req: SilenceReq = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_data(format!("request body: {e}")))?;
        let ms = notify::parse_matchers(&req.matchers)
            .map_err(|e| ApiError::bad_data(format!("matchers: {}", e.message)))?;
        let now = tsdb::now_ms();
        let starts_at = match req.starts_at.as_deref().filter(|s| !s.is_empty()) {
            None => now,
            Some(s) => parse_time(s).map_err(|e| ApiError::bad_data(format!("starts_at: {e}")))?,
        };
        let ends_at = match (req.ends_at.as_deref(), req.duration.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_data("give ends_at or duration, not both"));
            }
            (Some(e), None) => {
                parse_time(e).map_err(|e| ApiError::bad_data(format!("ends_at: {e}")))?
            }
            (None, Some(d)) => {
                let ms = promql::parse_duration_ms(d)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        ApiError::bad_data(format!("duration {d:?}: expected a duration"))
                    })?;
                starts_at.saturating_add(ms)
            }
            (None, None) => return Err(ApiError::bad_data("give ends_at or duration")),
        };
        let id = n
            .add_silence(notify::NewSilence {
                matchers: ms,
                starts_at,
                ends_at,
                created_by: who(&caller),
                comment: req.comment,
            })
            .await
            .map_err(error)?;
        let s = n
            .silence(&id)
            .ok_or_else(|| ApiError::internal("the new silence is gone"))?;
        Ok::<_, ApiError>(success(silence_json(&s, now)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `DELETE /api/ops/v1/silences/{id}`: expires it now.
pub async fn expire_silence(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let run = async {
        let n = notifier(&st)?;
        n.expire_silence(&id).await.map_err(error)?;
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}
