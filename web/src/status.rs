//! Prometheus' status and catalogue endpoints: build information, runtime information,
//! flags, configuration, TSDB cardinality, and the rule, alert, target and metadata
//! lists, which answer empty until the subsystems that fill them exist.
//!
//! The shapes are Prometheus': Grafana reads `buildinfo` to decide which flavour of
//! Prometheus it talks to (no `features` key means Prometheus) and `rules` to expand
//! recording rules.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::api::{ApiError, Params, blocking, success};

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    success(build_info())
}

/// The build, in Prometheus' `buildinfo` shape (also Alertmanager's `versionInfo`).
pub(crate) fn build_info() -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("MINOS_BUILD_REVISION").unwrap_or("unknown"),
        "branch": option_env!("MINOS_BUILD_BRANCH").unwrap_or("unknown"),
        "buildUser": option_env!("MINOS_BUILD_USER").unwrap_or("minos"),
        "buildDate": option_env!("MINOS_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": "rustc",
    })
}

/// When the server started, in Unix ms.
pub(crate) fn started_ms(st: &AppState) -> i64 {
    st.started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Threads of this process, from `/proc/self/status`.
fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `GET /api/v1/status/runtimeinfo`.
pub async fn runtimeinfo(State(st): State<Arc<AppState>>) -> Response {
    let started = started_ms(&st);
    let corruptions = st
        .db()
        .map(|db| db.metrics().wal_corruptions.load(Ordering::Relaxed))
        .unwrap_or(0);
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    success(json!({
        "startTime": format_rfc3339(started),
        "CWD": cwd,
        "reloadConfigSuccess": true,
        "lastConfigTime": format_rfc3339(started),
        "corruptionCount": corruptions,
        "goroutineCount": thread_count(),
        "GOMAXPROCS": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": st.settings.storage_retention,
    }))
}

/// `GET /api/v1/status/flags`: the server's effective settings, by flag name.
pub async fn flags(State(st): State<Arc<AppState>>) -> Response {
    let m: Map<String, Value> = st
        .settings
        .flags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    success(Value::Object(m))
}

/// `GET /api/v1/status/config`: the effective settings as YAML.
pub async fn config(State(st): State<Arc<AppState>>) -> Response {
    let mut yaml = String::new();
    for (k, v) in &st.settings.flags {
        yaml.push_str(k);
        yaml.push_str(": ");
        // JSON strings are valid YAML scalars.
        yaml.push_str(&Value::String(v.clone()).to_string());
        yaml.push('\n');
    }
    success(json!({ "yaml": yaml }))
}

/// `GET /api/v1/status/walreplay`: the log is replayed before the API answers.
pub async fn walreplay() -> Response {
    success(json!({"min": 0, "max": 0, "current": 0}))
}

fn pairs(v: Vec<(String, u64)>) -> Value {
    Value::Array(
        v.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// `GET /api/v1/status/tsdb`: cardinality statistics, the `limit` (default 10) largest
/// entries of each list, over everything stored (head and blocks), as are `numSeries`
/// and `numLabelPairs`. The rest of `headStats` describes the head, as in Prometheus:
/// `chunkCount` is its chunks (full and open), `minTime` and `maxTime` its oldest and
/// newest sample; an empty head reports Prometheus' values for none, `minTime`
/// 2^63 - 1 and `maxTime` -2^63.
pub async fn tsdb(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &[]);
        let limit = match p.get("limit").filter(|s| !s.is_empty()) {
            None => 10,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(ApiError::bad_data("limit must be a positive number")),
            },
        };
        let db = st.db()?.clone();
        let (card, head) =
            blocking(move || Ok::<_, ApiError>((db.cardinality(limit)?, db.head_stats()))).await?;
        let (min_time, max_time) = head.time_range.unwrap_or((i64::MAX, i64::MIN));
        Ok::<_, ApiError>(success(json!({
            "headStats": {
                "numSeries": card.num_series,
                "numLabelPairs": card.num_label_pairs,
                "chunkCount": head.chunks,
                "minTime": min_time,
                "maxTime": max_time,
            },
            "seriesCountByMetricName": pairs(card.series_count_by_metric_name),
            "labelValueCountByLabelName": pairs(card.label_value_count_by_label_name),
            "memoryInBytesByLabelName": pairs(card.memory_in_bytes_by_label_name),
            "seriesCountByLabelValuePair": pairs(card.series_count_by_label_value_pair),
        })))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/v1/rules`: no rule groups until alerting exists. `type` is validated.
pub async fn rules(RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), &[]);
    match p.get("type") {
        None | Some("") | Some("alert") | Some("record") => success(json!({"groups": []})),
        Some(t) => ApiError::bad_data(format!(
            "invalid parameter \"type\": unsupported type {t:?}"
        ))
        .into_response(),
    }
}

/// `GET /api/v1/alerts`.
pub async fn alerts() -> Response {
    success(json!({"alerts": []}))
}

/// `GET /api/v1/targets`.
pub async fn targets(State(st): State<Arc<AppState>>) -> Response {
    let active: Vec<Value> = st
        .scrape()
        .map(|m| m.targets())
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let labels: serde_json::Map<String, Value> = t
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({
                "discoveredLabels": {},
                "labels": labels,
                "scrapePool": t.job,
                "scrapeUrl": t.url,
                "globalUrl": t.url,
                "lastError": t.last_error,
                "lastScrape": if t.last_scrape > 0 { format_rfc3339(t.last_scrape) } else { "0001-01-01T00:00:00Z".into() },
                "lastScrapeDuration": t.last_duration.as_secs_f64(),
                "health": t.health,
                "scrapeInterval": format!("{}s", t.interval.as_secs_f64()),
                "scrapeTimeout": format!("{}s", t.timeout.as_secs_f64()),
            })
        })
        .collect();
    success(json!({"activeTargets": active, "droppedTargets": []}))
}

/// `GET /api/v1/targets/metadata`.
pub async fn targets_metadata() -> Response {
    success(json!([]))
}

/// `GET /api/v1/alertmanagers`.
pub async fn alertmanagers() -> Response {
    success(json!({"activeAlertmanagers": [], "droppedAlertmanagers": []}))
}

/// `GET /api/v1/metadata`: metric TYPE and HELP by metric name. No metadata is stored
/// yet, so the answer is an empty object; `limit`, `limit_per_metric` and `metric` are
/// validated as Prometheus does.
pub async fn metadata(RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), &[]);
    for name in ["limit", "limit_per_metric"] {
        if let Some(s) = p.get(name).filter(|s| !s.is_empty())
            && s.parse::<i64>().is_err()
        {
            return ApiError::bad_data(format!("{name} must be a number")).into_response();
        }
    }
    success(json!({}))
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`2024-05-01T12:00:00.123Z`).
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since the epoch, after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_the_parser() {
        assert_eq!(format_rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_500), "2000-02-29T00:00:00.500Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        for t in [0, 1_700_000_000_123, 951_782_400_500, 4_102_444_800_000] {
            assert_eq!(crate::params::parse_time(&format_rfc3339(t)), Ok(t));
        }
    }
}
