//! `GET /api/v1/export`: raw samples as JSON lines, as VictoriaMetrics exports them.
//!
//! One line per series: `{"metric":{…},"values":[…],"timestamps":[…]}` with timestamps
//! in milliseconds. Finite values are JSON numbers printed with the shortest text that
//! reads back to the same `f64`, so an export is lossless; NaN and infinities, which JSON
//! cannot hold as numbers, are the strings `"NaN"`, `"+Inf"` and `"-Inf"`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::AppState;
use crate::api::{ApiError, Params, blocking};

/// Appends a float as export JSON.
pub fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "\"+Inf\"" } else { "\"-Inf\"" });
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// The handler.
pub async fn export(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &body);
        let sels = p.selectors()?;
        if sels.is_empty() {
            return Err(ApiError::bad_data("missing match[] parameter"));
        }
        let (start, end) = p.range()?;
        let db = st.db()?.clone();
        let text = blocking(move || {
            let mut seen = std::collections::BTreeMap::new();
            for ms in &sels {
                for s in db.select(ms, start, end)? {
                    seen.entry(s.labels.clone()).or_insert(s);
                }
            }
            let mut out = String::new();
            for s in seen.into_values() {
                let metric: serde_json::Map<String, serde_json::Value> = s
                    .labels
                    .iter()
                    .map(|(n, v)| (n.to_string(), serde_json::Value::String(v.to_string())))
                    .collect();
                out.push_str("{\"metric\":");
                out.push_str(&serde_json::Value::Object(metric).to_string());
                out.push_str(",\"values\":[");
                for (i, x) in s.samples.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_value(&mut out, x.v);
                }
                out.push_str("],\"timestamps\":[");
                for (i, x) in s.samples.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{}", x.t);
                }
                out.push_str("]}\n");
            }
            Ok(out)
        })
        .await?;
        Ok::<_, ApiError>(
            ([(header::CONTENT_TYPE, "application/stream+json")], text).into_response(),
        )
    };
    run.await.unwrap_or_else(|e| e.into_response())
}
