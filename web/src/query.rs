//! The PromQL endpoints: `/api/v1/query`, `/api/v1/query_range`, `/api/v1/format_query`
//! and `/api/v1/query_exemplars`, with Prometheus' parameters, validations, error types
//! and JSON encoding.
//!
//! A query waits for a slot (see `slots`), then evaluates on the blocking pool with a
//! cancel flag of its own, raised when the request's handler is dropped: a client that
//! hangs up stops its query.
//!
//! Query results are written by hand rather than through `serde_json::Value` so that
//! numbers come out exactly as Prometheus writes them: timestamps as Unix seconds with
//! up to three decimals (`1435781451.781`), sample values as strings in Go's
//! `strconv.FormatFloat(v, 'f', -1, 64)` form (`"1"`, `"0.1"`, `"NaN"`, `"+Inf"`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use promql::{Engine, EngineOptions, ErrorKind, QueryResult, Value};

use crate::AppState;
use crate::api::{ApiError, Params, blocking, success};
use crate::params::parse_time;

/// Timestamps beyond about ±285,000 years are refused, so that the engine's time
/// arithmetic (ranges, offsets, lookback) cannot overflow.
const MAX_ABS_TIME_MS: i64 = 1 << 53;

impl ApiError {
    /// A well-formed query that failed while evaluating (422).
    pub fn execution(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error_type: "execution",
            message: msg.into(),
        }
    }

    /// The query ran out of time (503).
    pub fn timeout(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "timeout",
            message: msg.into(),
        }
    }

    /// The query was canceled (499, the status nginx and Prometheus use).
    pub fn canceled(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            error_type: "canceled",
            message: msg.into(),
        }
    }

    /// The requested thing does not exist (404).
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error_type: "not_found",
            message: msg.into(),
        }
    }

    /// The request cannot be answered in an acceptable form (406).
    pub fn not_acceptable(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_ACCEPTABLE,
            error_type: "not_acceptable",
            message: msg.into(),
        }
    }
}

/// Maps an engine error to Prometheus' error type and status code.
fn engine_error(e: promql::Error) -> ApiError {
    match e.kind() {
        ErrorKind::BadData => ApiError::bad_data(format!("invalid parameter \"query\": {e}")),
        ErrorKind::Execution => ApiError::execution(e.to_string()),
        ErrorKind::Timeout => ApiError::timeout(e.to_string()),
        ErrorKind::Canceled => ApiError::canceled(e.to_string()),
        ErrorKind::Internal => ApiError::internal(e.to_string()),
    }
}

fn invalid_param(name: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_data(format!("invalid parameter {name:?}: {msg}"))
}

/// A time parameter in ms; `default` when absent or empty.
fn time_param(p: &Params, name: &str, default: Option<i64>) -> Result<i64, ApiError> {
    let t = match (p.get(name), default) {
        (Some(s), _) if !s.is_empty() => parse_time(s).map_err(|e| invalid_param(name, e))?,
        (_, Some(d)) => d,
        (s, None) => {
            return Err(invalid_param(
                name,
                format!("cannot parse {:?} to a valid timestamp", s.unwrap_or("")),
            ));
        }
    };
    if t.unsigned_abs() > MAX_ABS_TIME_MS as u64 {
        return Err(invalid_param(name, "timestamp out of range"));
    }
    Ok(t)
}

/// A duration parameter as Prometheus parses it: float seconds (which may be negative)
/// or a duration string. Returns ms, rounded.
pub fn parse_duration_param(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        let ms = secs * 1000.0;
        if !ms.is_finite() || ms.abs() >= MAX_ABS_TIME_MS as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        // A positive sub-millisecond duration is not rounded down to zero.
        let r = ms.round() as i64;
        return Ok(if r == 0 && ms > 0.0 { 1 } else { r });
    }
    promql::parse_duration_ms(s).map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// The engine options of one request: the server's, with a shorter `timeout` or
/// another `lookback_delta` when the request asks for them.
fn options_for(st: &AppState, p: &Params) -> Result<EngineOptions, ApiError> {
    let mut o = st.settings.engine.clone();
    if let Some(s) = p.get("timeout").filter(|s| !s.is_empty()) {
        let ms = parse_duration_param(s).map_err(|e| invalid_param("timeout", e))?;
        if ms <= 0 {
            return Err(invalid_param(
                "timeout",
                "timeout must be a positive duration",
            ));
        }
        let t = Duration::from_millis(ms as u64);
        if t < o.timeout {
            o.timeout = t;
        }
    }
    if let Some(s) = p.get("lookback_delta").filter(|s| !s.is_empty()) {
        let ms = parse_duration_param(s).map_err(|e| invalid_param("lookback_delta", e))?;
        if ms < 0 {
            return Err(invalid_param(
                "lookback_delta",
                "lookback delta must not be negative",
            ));
        }
        if ms > 0 {
            o.lookback_delta_ms = ms;
        }
    }
    Ok(o)
}

/// Raises a query's cancel flag when dropped. The handler holds it while it waits for
/// the evaluation; axum drops the handler's future when the client disconnects, and
/// the evaluator, running on the blocking pool, stops at its next check.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `eval` with the request's options `opts` in a query slot, on the blocking
/// pool. The time spent waiting for the slot counts against the query's timeout, as in
/// Prometheus. The slot is held by the evaluation, so a query whose client went away
/// keeps it until the evaluator notices the cancellation.
async fn evaluate(
    st: &Arc<AppState>,
    mut opts: EngineOptions,
    eval: impl FnOnce(&Engine, &tsdb::Db) -> Result<QueryResult, promql::Error> + Send + 'static,
) -> Result<QueryResult, ApiError> {
    let db = st.db()?.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let queued = Instant::now();
    let slot = st.slots.acquire(opts.timeout).await?;
    opts.timeout = opts.timeout.saturating_sub(queued.elapsed());
    opts.cancel = Some(cancel);
    let engine = Engine::new(opts);
    let st = st.clone();
    blocking(move || {
        let res = eval(&engine, db.as_ref());
        drop(slot);
        if matches!(res, Err(promql::Error::Canceled)) {
            st.slots.count_canceled();
        }
        res.map_err(engine_error)
    })
    .await
}

fn query_param(p: &Params) -> String {
    p.get("query").unwrap_or("").to_string()
}

/// `GET|POST /api/v1/query`: an instant query at `time` (default: now).
pub async fn query(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &body);
        let expr = query_param(&p);
        let t = time_param(&p, "time", Some(tsdb::now_ms()))?;
        let opts = options_for(&st, &p)?;
        let res = evaluate(&st, opts, move |engine, db| engine.instant(db, &expr, t)).await?;
        Ok::<_, ApiError>(json_response(render(&res)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET|POST /api/v1/query_range`: `query` evaluated at every `step` from `start` to
/// `end`.
pub async fn query_range(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &body);
        let expr = query_param(&p);
        let start = time_param(&p, "start", None)?;
        let end = time_param(&p, "end", None)?;
        if end < start {
            return Err(invalid_param(
                "end",
                "end timestamp must not be before start time",
            ));
        }
        let step = match p.get("step").filter(|s| !s.is_empty()) {
            Some(s) => parse_duration_param(s).map_err(|e| invalid_param("step", e))?,
            None => {
                return Err(invalid_param(
                    "step",
                    "cannot parse \"\" to a valid duration",
                ));
            }
        };
        if step <= 0 {
            return Err(invalid_param(
                "step",
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        let opts = options_for(&st, &p)?;
        let max_points = opts.max_points_per_series as i64;
        // `end - start` cannot overflow: both are within ±2^53.
        if (end - start) / step >= max_points {
            return Err(ApiError::bad_data(format!(
                "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                group_thousands(max_points)
            )));
        }
        let res = evaluate(&st, opts, move |engine, db| {
            engine.range(db, &expr, start, end, step)
        })
        .await?;
        Ok::<_, ApiError>(json_response(render(&res)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET|POST /api/v1/format_query`: the expression, prettified.
pub async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    match promql::format_query(&query_param(&p)) {
        Ok(s) => success(serde_json::Value::String(s)),
        Err(e) => engine_error(e).into_response(),
    }
}

/// `GET|POST /api/v1/query_exemplars`: no exemplars are stored yet, so a valid query
/// gets an empty list. Times are parsed leniently: Grafana's availability probe sends
/// them in milliseconds.
pub async fn query_exemplars(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    match promql::format_query(&query_param(&p)) {
        Ok(_) => success(serde_json::Value::Array(Vec::new())),
        Err(e) => engine_error(e).into_response(),
    }
}

fn group_thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && c.is_ascii_digit() && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The success envelope of a query result, as Prometheus writes it.
pub fn render(res: &QueryResult) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r#"{"status":"success","data":{"resultType":"#);
    match &res.value {
        Value::Scalar { t, v } => {
            out.push_str(r#""scalar","result":"#);
            point(&mut out, *t, *v);
        }
        Value::String { t, v } => {
            out.push_str(r#""string","result":["#);
            timestamp(&mut out, *t);
            out.push(',');
            string(&mut out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str(r#""vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                labels(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                point(&mut out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push_str(r#""matrix","result":["#);
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                labels(&mut out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, x) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point(&mut out, x.t, x.v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    for (key, list) in [("warnings", &res.warnings), ("infos", &res.infos)] {
        if !list.is_empty() {
            let _ = write!(out, r#","{key}":["#);
            for (i, w) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(&mut out, w);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// `[<unix seconds>,"<value>"]`.
fn point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    timestamp(out, t);
    out.push_str(",\"");
    value(out, v);
    out.push_str("\"]");
}

/// A ms timestamp as Unix seconds: whole seconds, then `.` and three digits when the
/// milliseconds are not zero (Prometheus' `jsonutil.MarshalTimestamp`).
pub fn timestamp(out: &mut String, t: i64) {
    let (sign, t) = if t < 0 {
        ("-", t.unsigned_abs())
    } else {
        ("", t as u64)
    };
    let (secs, ms) = (t / 1000, t % 1000);
    if ms == 0 {
        let _ = write!(out, "{sign}{secs}");
    } else {
        let _ = write!(out, "{sign}{secs}.{ms:03}");
    }
}

/// A sample value as Prometheus writes it: shortest round-trip decimal without an
/// exponent, or `NaN`, `+Inf`, `-Inf`.
pub fn value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn labels(out: &mut String, l: &tsdb::Labels) {
    out.push('{');
    for (i, (n, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, n);
        out.push(':');
        string(out, v);
    }
    out.push('}');
}

/// A JSON string literal.
fn string(out: &mut String, s: &str) {
    out.push('"');
    // Runs of characters that need no escape are copied whole; every character that
    // does is ASCII, so the runs end on character boundaries.
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c >= 0x20 && c != b'"' && c != b'\\' {
            continue;
        }
        out.push_str(&s[start..i]);
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql::{RangeSeries, VectorSample};
    use tsdb::{Labels, Sample};

    fn v(x: f64) -> String {
        let mut s = String::new();
        value(&mut s, x);
        s
    }

    fn ts(t: i64) -> String {
        let mut s = String::new();
        timestamp(&mut s, t);
        s
    }

    #[test]
    fn values_are_written_like_go_format_float_f() {
        assert_eq!(v(1.0), "1");
        assert_eq!(v(0.1), "0.1");
        assert_eq!(v(-0.0), "-0");
        assert_eq!(v(1e21), "1000000000000000000000");
        assert_eq!(v(1.5e-7), "0.00000015");
        assert_eq!(v(f64::NAN), "NaN");
        assert_eq!(v(f64::INFINITY), "+Inf");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
        assert_eq!(v(123456.789), "123456.789");
    }

    #[test]
    fn strings_are_escaped_into_valid_json() {
        for raw in [
            "",
            "plain",
            "quote \" backslash \\ end",
            "\n\r\t\u{1}\u{1f}",
            "ünïcödé ✓ \"mixed\"\n",
            "\\",
        ] {
            let mut out = String::new();
            string(&mut out, raw);
            let back: String = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(back, raw, "{out}");
        }
    }

    #[test]
    fn timestamps_are_unix_seconds_with_milliseconds() {
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1_435_781_451_780), "1435781451.780");
        assert_eq!(ts(1_435_781_451_000), "1435781451");
        assert_eq!(ts(4_000), "4");
        assert_eq!(ts(5), "0.005");
        assert_eq!(ts(-1_500), "-1.500");
        assert_eq!(ts(i64::MIN), "-9223372036854775.808");
    }

    #[test]
    fn results_have_prometheus_shapes() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]).expect("labels");
        let scalar = QueryResult {
            value: Value::Scalar { t: 4000, v: 2.0 },
            warnings: vec![],
            infos: vec![],
        };
        assert_eq!(
            render(&scalar),
            r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#
        );
        let vector = QueryResult {
            value: Value::Vector(vec![VectorSample {
                labels: l.clone(),
                t: 1500,
                v: f64::NAN,
            }]),
            warnings: vec!["w".into()],
            infos: vec![],
        };
        assert_eq!(
            render(&vector),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1.500,"NaN"]}]},"warnings":["w"]}"#
        );
        let matrix = QueryResult {
            value: Value::Matrix(vec![RangeSeries {
                labels: l,
                samples: vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 0.25 }],
            }]),
            warnings: vec![],
            infos: vec!["i".into()],
        };
        let m = render(&matrix);
        assert_eq!(
            m,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1,"1"],[2,"0.25"]]}]},"infos":["i"]}"#
        );
        assert!(serde_json::from_str::<serde_json::Value>(&m).is_ok());
        let string = QueryResult {
            value: Value::String {
                t: 0,
                v: "a\nb".into(),
            },
            warnings: vec![],
            infos: vec![],
        };
        assert_eq!(
            render(&string),
            r#"{"status":"success","data":{"resultType":"string","result":[0,"a\nb"]}}"#
        );
    }

    #[test]
    fn durations_accept_float_seconds_and_prometheus_syntax() {
        assert_eq!(parse_duration_param("15"), Ok(15_000));
        assert_eq!(parse_duration_param("0.5"), Ok(500));
        assert_eq!(parse_duration_param("-1"), Ok(-1000));
        assert_eq!(parse_duration_param("0.0001"), Ok(1));
        assert_eq!(parse_duration_param("1m30s"), Ok(90_000));
        assert!(parse_duration_param("1e300").is_err());
        assert!(parse_duration_param("NaN").is_err());
        assert!(parse_duration_param("soon").is_err());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(11_000), "11,000");
        assert_eq!(group_thousands(100), "100");
    }
}
