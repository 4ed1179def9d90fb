//! The Prometheus HTTP API's envelope, errors and metadata endpoints.
//!
//! Every answer is `{"status":"success","data":…}` or `{"status":"error","errorType":…,
//! "error":…}` with the status code Prometheus uses for the error type.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tsdb::Matcher;

use crate::AppState;
use crate::params::{parse_selector, parse_time};

/// An API error with Prometheus' `errorType`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: msg.into(),
        }
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: msg.into(),
        }
    }

    /// An error with any status and error type.
    pub fn with_status(
        status: StatusCode,
        error_type: &'static str,
        msg: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error_type,
            message: msg.into(),
        }
    }

    pub fn unavailable(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "unavailable",
            message: msg.into(),
        }
    }
}

impl From<tsdb::QueryError> for ApiError {
    fn from(e: tsdb::QueryError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// A success envelope around `data`.
pub fn success(data: Value) -> Response {
    let body = json!({"status": "success", "data": data});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Parameters from the query string and, for form POSTs, the body.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        v.extend(form_urlencoded::parse(body).into_owned());
        Params(v)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// `start` and `end` in ms; missing means unbounded.
    pub fn range(&self) -> Result<(i64, i64), ApiError> {
        let start = match self.get("start") {
            Some(s) if !s.is_empty() => parse_time(s).map_err(ApiError::bad_data)?,
            _ => i64::MIN,
        };
        let end = match self.get("end") {
            Some(s) if !s.is_empty() => parse_time(s).map_err(ApiError::bad_data)?,
            _ => i64::MAX,
        };
        if end < start {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        Ok((start, end))
    }

    /// Every `match[]` selector, parsed.
    pub fn selectors(&self) -> Result<Vec<Vec<Matcher>>, ApiError> {
        self.all("match[]")
            .map(|s| parse_selector(s).map_err(ApiError::bad_data))
            .collect()
    }

    /// `limit` (0 or absent: none).
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(usize::MAX),
            Some(s) => match s.parse::<usize>() {
                Ok(0) => Ok(usize::MAX),
                Ok(n) => Ok(n),
                Err(_) => Err(ApiError::bad_data(format!("invalid limit {s:?}"))),
            },
        }
    }
}

/// Runs blocking engine work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

fn labels_json(l: &tsdb::Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|(n, v)| (n.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// `GET|POST /api/v1/series`.
pub async fn series(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &body);
        let sels = p.selectors()?;
        if sels.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (start, end) = p.range()?;
        let limit = p.limit()?;
        let db = st.db()?.clone();
        let list = blocking(move || {
            let mut set = std::collections::BTreeSet::new();
            for ms in &sels {
                set.extend(db.series(ms, start, end)?);
            }
            Ok(set)
        })
        .await?;
        Ok::<_, ApiError>(success(Value::Array(
            list.iter().take(limit).map(labels_json).collect(),
        )))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    values_endpoint(st, q, body, None).await
}

/// `GET /api/v1/label/<name>/values`.
pub async fn label_values(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    values_endpoint(st, q, Bytes::new(), Some(name)).await
}

async fn values_endpoint(
    st: Arc<AppState>,
    q: Option<String>,
    body: Bytes,
    name: Option<String>,
) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &body);
        let sels = p.selectors()?;
        let (start, end) = p.range()?;
        let limit = p.limit()?;
        let db = st.db()?.clone();
        let list = blocking(move || {
            let mut set = std::collections::BTreeSet::new();
            let sels = if sels.is_empty() {
                vec![Vec::new()]
            } else {
                sels
            };
            for ms in &sels {
                let v = match &name {
                    Some(n) => db.label_values(n, ms, start, end)?,
                    None => db.label_names(ms, start, end)?,
                };
                set.extend(v);
            }
            Ok(set)
        })
        .await?;
        Ok::<_, ApiError>(success(Value::Array(
            list.into_iter().take(limit).map(Value::String).collect(),
        )))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}
