//! Pushed data over HTTP: `POST /api/v1/import/prometheus` (text format, as
//! VictoriaMetrics takes it), InfluxDB line protocol at `POST /write` and
//! `/api/v2/write`, the Pushgateway-compatible `/metrics/job/...`, and server-side
//! counters at `POST /api/ops/v1/push`.
//!
//! Answers: 204 (import) or 200 (pushes) once stored; 400 naming every rejected line
//! (at most [`MAX_REPORTED`] quoted; an import stores its good lines, a Pushgateway push
//! or a counter request is refused whole); 413 over the body limit; 415 for a format
//! that is not supported; 503 while starting.
//!
//! Pushgateway groups and counters are rewritten into the TSDB at every refresh
//! ([`refresh`], `--push.refresh-interval`, 15 s by default), as if scraped, so their
//! series stay current; a group or series that goes away gets a staleness marker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use collector::append_rows;
use collector::exposition::Format;
use collector::pushgw::{Group, GroupKey, LabelSet, Method, Pushed};
use collector::pushstore::{Op, PushStore, PushStoreError, Update};
use collector::textimport::{self, TextSample};
use serde_json::{Value, json};
use tsdb::Db;

use crate::AppState;
use crate::api::{ApiError, success};

/// Rejected lines quoted in an answer, at most.
pub const MAX_REPORTED: usize = 20;

/// Pushgateway groups and counters.
pub struct PushState {
    pub store: PushStore,
    groups: tokio::sync::Mutex<BTreeMap<GroupKey, Group>>,
}

/// Writes committed counter values into `db` (the push store's sink).
pub fn counter_sink(db: Arc<Db>) -> collector::pushstore::Sink {
    Box::new(move |values, t| {
        let rows: Vec<(LabelSet, i64, f64)> = values.into_iter().map(|(l, v)| (l, t, v)).collect();
        match append_rows(&db, &rows) {
            Ok(None) => {}
            Ok(Some(m)) => tracing::warn!("pushed counters: {m}"),
            Err(e) => tracing::error!("writing pushed counters: {e}"),
        }
    })
}

impl PushState {
    /// Loads the stored groups.
    pub async fn open(store: PushStore) -> Result<PushState, PushStoreError> {
        let groups = store.groups().await?.into_iter().collect();
        Ok(PushState {
            store,
            groups: tokio::sync::Mutex::new(groups),
        })
    }
}

fn now_ms() -> i64 {
    tsdb::now_ms()
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into() + "\n").into_response()
}

/// [`collector::append_rows`] on the blocking pool.
async fn store(db: Arc<Db>, rows: Vec<(LabelSet, i64, f64)>) -> Result<Option<String>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    tokio::task::spawn_blocking(move || append_rows(&db, &rows))
        .await
        .map_err(|e| format!("worker failed: {e}"))?
}

fn format_of(headers: &HeaderMap) -> Result<Option<Format>, (StatusCode, String)> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc.as_bytes() != b"identity"
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {:?} is not supported: send the body uncompressed",
                String::from_utf8_lossy(enc.as_bytes())
            ),
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.contains("protobuf") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the protobuf exposition format is not supported: push the text format \
             (Content-Type: text/plain; version=0.0.4)"
                .into(),
        ));
    }
    Ok(if ct.is_empty() {
        None
    } else {
        Some(Format::from_content_type(ct))
    })
}

fn rejected(errors: &[String]) -> String {
    let mut s = errors
        .iter()
        .take(MAX_REPORTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if errors.len() > MAX_REPORTED {
        s.push_str(&format!("\n... and {} more", errors.len() - MAX_REPORTED));
    }
    s
}

/// `extra_label=name=value` query parameters.
fn extra_labels(q: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        if k == "extra_label" {
            let Some((n, val)) = v.split_once('=') else {
                return Err(format!("extra_label={v:?}: expected name=value"));
            };
            let ok = n
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || n == "__name__" {
                return Err(format!("extra_label={v:?}: invalid label name {n:?}"));
            }
            out.retain(|(k, _): &(String, String)| k != n);
            out.push((n.to_string(), val.to_string()));
        }
    }
    Ok(out)
}

/// `POST /api/v1/import/prometheus`: the text format; samples without a timestamp get
/// the time of the request.
pub async fn import_prometheus(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let db = match st.db() {
        Ok(db) => db.clone(),
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.message),
    };
    let format = match format_of(&headers) {
        Ok(f) => f,
        Err((code, why)) => return text(code, why),
    };
    let extra = match extra_labels(q.as_deref()) {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let parsed = tokio::task::spawn_blocking(move || textimport::parse(&body, format, &extra))
        .await
        .unwrap_or_default();
    let now = now_ms();
    let mut rows: Vec<(LabelSet, i64, f64)> = parsed
        .samples
        .into_iter()
        .map(|s| (s.labels, s.timestamp_ms.unwrap_or(now), s.value))
        .collect();
    let mut problems = parsed.errors;
    problems.extend(st.guard.admit(&mut rows, |r| &r.0, now, false));
    let n = rows.len();
    match store(db, rows).await {
        Ok(None) => {}
        Ok(Some(m)) => problems.push(m),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    if problems.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "stored {n} samples; rejected {} lines:\n{}",
                problems.len(),
                rejected(&problems)
            ),
        )
    }
}

/// `POST /write`, `POST /api/v2/write`: InfluxDB line protocol, mapped as
/// VictoriaMetrics maps it (`collector::influx`); `db`, `precision` (v1) or `bucket`
/// (v2, kept as `db`) and `extra_label` query parameters.
pub async fn influx_write(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let db = match st.db() {
        Ok(db) => db.clone(),
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.message),
    };
    if let Err((code, why)) = format_of(&headers) {
        return text(code, why);
    }
    let extra = match extra_labels(q.as_deref()) {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let mut precision = String::new();
    let mut dbname: Option<String> = None;
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "precision" => precision = v.into_owned(),
            "db" | "bucket" if !v.is_empty() => dbname = Some(v.into_owned()),
            _ => {}
        }
    }
    let Some(precision) = collector::influx::Precision::parse(&precision) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("precision={precision:?}: expected ns, us, ms, s, m or h"),
        );
    };
    let limits = st.settings.remote_write;
    let st2 = st.clone();
    let res = tokio::task::spawn_blocking(move || {
        let guard = &st2.guard;
        let Ok(body) = std::str::from_utf8(&body) else {
            return Err((StatusCode::BAD_REQUEST, "the body is not UTF-8".to_string()));
        };
        let mut rows = Vec::new();
        let errors = collector::influx::parse(
            body,
            precision,
            now_ms(),
            dbname.as_deref(),
            &extra,
            &mut rows,
        );
        let mut out: Vec<(LabelSet, i64, f64)> = Vec::new();
        for row in &rows {
            for (name, v) in &row.samples {
                let mut labels = row.labels.clone();
                labels.push(("__name__".to_string(), name.clone()));
                labels.sort();
                out.push((labels, row.timestamp_ms, *v));
            }
        }
        if out.len() > limits.max_series_per_request {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} samples in one request; at most {}",
                    out.len(),
                    limits.max_series_per_request
                ),
            ));
        }
        let mut problems: Vec<String> = errors.errors.iter().map(|e| e.to_string()).collect();
        if errors.invalid_lines > errors.errors.len() {
            problems.push(format!("... {} invalid lines in all", errors.invalid_lines));
        }
        problems.extend(guard.admit(&mut out, |r| &r.0, now_ms(), false));
        let stored = out.len();
        match append_rows(&db, &out) {
            Ok(Some(m)) => problems.push(m),
            Ok(None) => {}
            Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e)),
        }
        Ok((stored, problems))
    })
    .await
    .unwrap_or_else(|e| Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())));
    match res {
        Ok((_, problems)) if problems.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok((stored, problems)) => text(
            StatusCode::BAD_REQUEST,
            format!(
                "stored {stored} samples; rejected:\n{}",
                rejected(&problems)
            ),
        ),
        Err((code, why)) => text(code, why),
    }
}

fn to_pushed(s: TextSample) -> Pushed {
    let mut name = String::new();
    let labels = s
        .labels
        .into_iter()
        .filter(|(k, v)| {
            if k == "__name__" {
                name = v.clone();
                false
            } else {
                true
            }
        })
        .collect();
    Pushed {
        name,
        labels,
        value: s.value,
        timestamped: s.timestamp_ms.is_some(),
        family: s.family,
        kind: match s.kind {
            collector::exposition::MetricType::Unknown => "untyped".into(),
            k => k.as_str().into(),
        },
        line: s.line,
    }
}

/// `ttl=<duration>` in the query.
fn ttl_of(q: Option<&str>) -> Result<Option<i64>, String> {
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        if k == "ttl" {
            let ms = crate::params::parse_duration(&v).map_err(|e| format!("ttl: {e}"))?;
            if ms <= 0 {
                return Err("ttl: must be positive".into());
            }
            return Ok(Some(ms));
        }
    }
    Ok(None)
}

/// Stale markers for what was in `before` and is not in `after`, then `after` at `t`.
fn changes(
    before: &[(LabelSet, f64)],
    after: &[(LabelSet, f64)],
    t: i64,
) -> Vec<(LabelSet, i64, f64)> {
    let kept: BTreeSet<&LabelSet> = after.iter().map(|(l, _)| l).collect();
    let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
    before
        .iter()
        .filter(|(l, _)| !kept.contains(l))
        .map(|(l, _)| (l.clone(), t, stale))
        .chain(after.iter().map(|(l, v)| (l.clone(), t, *v)))
        .collect()
}

/// `PUT|POST|DELETE /metrics/job/<job>{/<label>/<value>}[?ttl=10m]`.
pub async fn pushgateway(
    State(st): State<Arc<AppState>>,
    method: HttpMethod,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Ok(db), Some(push)) = (st.db(), st.push()) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting");
    };
    let (db, push) = (db.clone(), push.clone());
    let segments: Vec<&str> = rest.split('/').collect();
    let key = match GroupKey::from_path(&segments) {
        Ok(k) => k,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let now = now_ms();
    let mut groups = push.groups.lock().await;
    if method == HttpMethod::DELETE {
        if let Some(g) = groups.remove(&key) {
            if let Err(e) = push.store.delete_group(&key).await {
                groups.insert(key, g);
                return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
            if let Err(e) = store(db, changes(&g.series(&key), &[], now)).await {
                tracing::error!("writing stale markers: {e}");
            }
        }
        return StatusCode::ACCEPTED.into_response();
    }
    let how = if method == HttpMethod::PUT {
        Method::Replace
    } else {
        Method::Merge
    };
    let ttl = match ttl_of(q.as_deref()) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("protobuf") && ct.contains("delimited"));
    let parsed: Result<Vec<Pushed>, String> = if protobuf {
        collector::protofmt::parse(&body).map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, s)| {
                    to_pushed(TextSample {
                        labels: s.labels,
                        value: s.value,
                        timestamp_ms: s.timestamp_ms,
                        line: i + 1,
                        family: s.family,
                        kind: collector::exposition::MetricType::from_name(s.kind)
                            .unwrap_or(collector::exposition::MetricType::Untyped),
                    })
                })
                .collect()
        })
    } else {
        let format = match format_of(&headers) {
            Ok(f) => f,
            Err((code, why)) => return text(code, why),
        };
        let t = textimport::parse(&body, format, &[]);
        if t.errors.is_empty() {
            Ok(t.samples.into_iter().map(to_pushed).collect())
        } else {
            Err(rejected(&t.errors))
        }
    };
    let existed = groups.contains_key(&key);
    let previous = groups.get(&key).cloned().unwrap_or_default();
    let before = if existed {
        previous.series(&key)
    } else {
        Vec::new()
    };
    let mut next = previous.clone();
    let outcome = if let Ok(pushed) = parsed {
        let mut trial = previous.clone();
        let checked = trial.push(&key, how, &pushed, now, ttl).and_then(|()| {
            collector::pushgw::consistent(
                groups
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .chain(std::iter::once((&key, &trial))),
            )
        });
        match checked {
            Ok(()) => {
                next = trial;
                Ok(())
            }
            Err(e) => Err(e),
        }
    } else {
        parsed.map(|_| ())
    };
    if outcome.is_err() {
        next.last_push_ms = now;
        next.push_failure_time = now as f64 / 1000.0;
    } else {
        let mut series = next.series(&key);
        let refused = st.guard.admit(&mut series, |r| &r.0, now, true);
        if !refused.is_empty() {
            return text(StatusCode::TOO_MANY_REQUESTS, refused.join("\n"));
        }
    }
    if let Err(e) = push.store.save_group(&key, &next).await {
        return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let after = next.series(&key);
    groups.insert(key.clone(), next);
    drop(groups);
    if let Err(e) = store(db, changes(&before, &after, now)).await {
        return text(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    match outcome {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("pushed metrics are invalid; nothing was changed:\n{e}"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonUpdate {
    metric: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    inc: Option<f64>,
    set: Option<f64>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Most updates in one counter request.
pub const MAX_UPDATES: usize = 10_000;

/// The JSON form: `[{"metric","labels","inc"|"set"}]`.
fn parse_json_updates(body: &[u8]) -> Result<Vec<Update>, String> {
    let items: Vec<JsonUpdate> =
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
    if items.len() > MAX_UPDATES {
        return Err(format!("{} updates; at most {MAX_UPDATES}", items.len()));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let at = format!("item {}", i + 1);
        if !valid_metric_name(&it.metric) {
            return Err(format!("{at}: invalid metric name {:?}", it.metric));
        }
        let mut labels: LabelSet = vec![("__name__".into(), it.metric)];
        for (k, v) in it.labels {
            if !valid_label_name(&k) || k.starts_with("__") {
                return Err(format!("{at}: invalid label name {k:?}"));
            }
            if !v.is_empty() {
                labels.push((k, v));
            }
        }
        labels.sort();
        let op = match (it.inc, it.set) {
            (Some(d), None) => Op::Inc(d),
            (None, Some(v)) => Op::Set(v),
            _ => return Err(format!("{at}: give exactly one of \"inc\" and \"set\"")),
        };
        out.push(Update { labels, op });
    }
    Ok(out)
}

/// The text form: `name{labels} +3` increments, `name{labels} 42` sets.
fn parse_text_updates(body: &[u8]) -> Result<Vec<Update>, String> {
    let parsed = textimport::parse(body, Some(Format::Prometheus), &[]);
    let mut errors = parsed.errors;
    let text = String::from_utf8_lossy(body);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(parsed.samples.len());
    for s in parsed.samples {
        if s.timestamp_ms.is_some() {
            errors.push(format!("line {}: timestamps are not taken here", s.line));
            continue;
        }
        if s.labels
            .iter()
            .any(|(k, _)| k.starts_with("__") && k != "__name__")
        {
            errors.push(format!(
                "line {}: labels starting with __ are reserved",
                s.line
            ));
            continue;
        }
        let raw = lines.get(s.line - 1).copied().unwrap_or("");
        let value_token = raw.split_whitespace().last().unwrap_or("");
        let op = if value_token.starts_with('+') {
            Op::Inc(s.value)
        } else {
            Op::Set(s.value)
        };
        out.push(Update {
            labels: s.labels,
            op,
        });
    }
    if !errors.is_empty() {
        return Err(rejected(&errors));
    }
    if out.len() > MAX_UPDATES {
        return Err(format!("{} updates; at most {MAX_UPDATES}", out.len()));
    }
    Ok(out)
}

/// `POST /api/ops/v1/push`: increments counters and sets gauges, durably; answers with
/// the new values.
pub async fn push_counters(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Ok(_), Some(push)) = (st.db(), st.push()) else {
        return ApiError::unavailable("starting").into_response();
    };
    let push = push.clone();
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let updates = if json_body {
        parse_json_updates(&body)
    } else {
        parse_text_updates(&body)
    };
    let updates = match updates {
        Ok(u) if u.is_empty() => return ApiError::bad_data("no updates").into_response(),
        Ok(u) => u,
        Err(e) => return ApiError::bad_data(e).into_response(),
    };
    let mut updates = updates;
    let refused = st.guard.admit(&mut updates, |u| &u.labels, now_ms(), true);
    if !refused.is_empty() {
        return ApiError::with_status(StatusCode::TOO_MANY_REQUESTS, "limit", refused.join("; "))
            .into_response();
    }
    let values = match push.store.apply(updates).await {
        Ok(v) => v,
        Err(PushStoreError::Invalid(e)) => return ApiError::bad_data(e).into_response(),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let data: Vec<Value> = values
        .into_iter()
        .map(|(l, v)| {
            let name = l
                .iter()
                .find(|(k, _)| k == "__name__")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let labels: BTreeMap<String, String> =
                l.into_iter().filter(|(k, _)| k != "__name__").collect();
            json!({"metric": name, "labels": labels, "value": v})
        })
        .collect();
    success(json!(data)).into_response()
}

/// Rewrites every group and counter into the TSDB every `every`, and removes groups past
/// their TTL (their series go stale). Runs until the task is dropped.
pub async fn refresh(st: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Ok(db), Some(push)) = (st.db(), st.push()) else {
            continue;
        };
        let (db, push) = (db.clone(), push.clone());
        let now = now_ms();
        st.guard.prune(now);
        let mut rows = Vec::new();
        {
            let mut groups = push.groups.lock().await;
            let expired: Vec<GroupKey> = groups
                .iter()
                .filter(|(_, g)| g.expired(now))
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Err(e) = push.store.delete_group(&key).await {
                    tracing::error!("removing an expired push group: {e}");
                    continue;
                }
                if let Some(g) = groups.remove(&key) {
                    tracing::info!("push group {} expired", collector::pushgw::show(&key.0));
                    rows.extend(changes(&g.series(&key), &[], now));
                }
            }
            for (key, g) in groups.iter() {
                rows.extend(g.series(key).into_iter().map(|(l, v)| (l, now, v)));
            }
        }
        match push.store.values().await {
            Ok(v) => rows.extend(v.into_iter().map(|(l, v)| (l, now, v))),
            Err(e) => tracing::error!("reading pushed counters: {e}"),
        }
        if let Err(e) = store(db, rows).await {
            tracing::error!("refreshing pushed series: {e}");
        }
    }
}

/// `GET /api/v1/status/push`: the jobs pushing the most series (`limit`, default 10),
/// and the limits.
pub async fn status(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let mut limit = 10usize;
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        if k == "limit" {
            match v.parse() {
                Ok(n) => limit = n,
                Err(_) => return ApiError::bad_data("limit must be a number").into_response(),
            }
        }
    }
    let jobs: Vec<Value> = st
        .guard
        .top(limit, now_ms())
        .into_iter()
        .map(|j| {
            json!({
                "job": j.job,
                "series": j.series,
                "newSeriesThisMinute": j.new_this_minute,
                "newSeriesTotal": j.new_total,
                "refusedSeriesTotal": j.refused_total,
                "samplesTotal": j.samples_total,
            })
        })
        .collect();
    success(json!({
        "seriesCountByJob": jobs,
        "limits": {
            "maxSeriesPerJob": st.guard.limits.max_series_per_job,
            "maxNewSeriesPerMinute": st.guard.limits.max_new_series_per_minute,
        },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_requests_read_both_forms() {
        let u = parse_json_updates(
            br#"[{"metric":"orders_total","labels":{"shop":"eu"},"inc":3},
                 {"metric":"inventory_items","labels":{"sku":"A1"},"set":42}]"#,
        )
        .expect("json");
        assert_eq!(u[0].op, Op::Inc(3.0));
        assert_eq!(
            u[0].labels,
            vec![
                ("__name__".to_string(), "orders_total".to_string()),
                ("shop".to_string(), "eu".to_string())
            ]
        );
        assert_eq!(u[1].op, Op::Set(42.0));
        for bad in [
            &br#"[{"metric":"a","inc":1,"set":2}]"#[..],
            br#"[{"metric":"a"}]"#,
            br#"[{"metric":"1a","inc":1}]"#,
            br#"[{"metric":"a","labels":{"__x":"1"},"inc":1}]"#,
            br#"[{"metric":"a","inc":1,"extra":true}]"#,
            br#"{"#,
        ] {
            assert!(
                parse_json_updates(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let u = parse_text_updates(b"orders_total{shop=\"eu\"} +3\nstock{sku=\"A1\"} 42\nt -2\n")
            .expect("text");
        assert_eq!(u[0].op, Op::Inc(3.0));
        assert_eq!(u[1].op, Op::Set(42.0));
        assert_eq!(u[2].op, Op::Set(-2.0));
        let e = parse_text_updates(b"a +1\nb{ 2\nc 1 1700000000000\n").expect_err("bad");
        assert!(e.contains("line 2") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn extra_labels_are_read_and_checked() {
        assert_eq!(
            extra_labels(Some("extra_label=a=1&extra_label=b=x%3Dy&x=1")).expect("ok"),
            vec![("a".into(), "1".into()), ("b".into(), "x=y".into())]
        );
        assert!(extra_labels(Some("extra_label=a")).is_err());
        assert!(extra_labels(Some("extra_label=1a=b")).is_err());
    }
}
