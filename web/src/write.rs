//! `POST /api/v1/write`: Prometheus remote_write 1.0 (snappy block + protobuf).
//!
//! Answers, as the remote_write specification asks:
//! - 204 once every sample of the request is in the write-ahead log;
//! - 400 with a message for a malformed request (nothing stored) or when some samples
//!   were refused (outside the time window; the others are stored): senders do not retry;
//! - 413 when the body or its decompressed size exceeds a limit;
//! - 500 when the log cannot be written (nothing acknowledged): senders retry;
//! - 503 while the server is still replaying its log at start.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use collector::remote_write::{self, ErrorKind};

use crate::AppState;

thread_local! {
    /// Decompression buffer reused by each blocking worker thread.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

enum Outcome {
    Ok,
    Bad(String),
    TooLarge(String),
    Failed(String),
}

/// The handler.
pub async fn remote_write(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let db = match st.db() {
        Ok(db) => db.clone(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.message).into_response(),
    };
    st.counters
        .write_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let limits = st.settings.remote_write;
    let res = tokio::task::spawn_blocking(move || {
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if let Err(e) = remote_write::decompress_into(&body, &limits, &mut buf) {
                return classify(e);
            }
            let req = match remote_write::decode(&buf, &limits) {
                Ok(r) => r,
                Err(e) => return classify(e),
            };
            match db.append(req.iter()) {
                Ok(rep) if rep.rejected_total() == 0 => Outcome::Ok,
                Ok(rep) => Outcome::Bad(format!(
                    "{} of {} samples rejected ({}); first: {}",
                    rep.rejected_total(),
                    req.num_samples(),
                    rep.rejected
                        .iter()
                        .map(|(r, n)| format!("{}: {n}", r.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    rep.first_rejection.unwrap_or_default()
                )),
                Err(tsdb::AppendError::InvalidLabels(m)) => Outcome::Bad(m),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        })
    })
    .await
    .unwrap_or_else(|e| Outcome::Failed(format!("worker failed: {e}")));
    let (idx, resp) = match res {
        Outcome::Ok => (0, StatusCode::NO_CONTENT.into_response()),
        Outcome::Bad(m) => (1, (StatusCode::BAD_REQUEST, m + "\n").into_response()),
        Outcome::TooLarge(m) => (2, (StatusCode::PAYLOAD_TOO_LARGE, m + "\n").into_response()),
        Outcome::Failed(m) => {
            tracing::error!("remote write failed: {m}");
            (
                3,
                (StatusCode::INTERNAL_SERVER_ERROR, m + "\n").into_response(),
            )
        }
    };
    st.counters.write_requests[idx].fetch_add(1, Ordering::Relaxed);
    resp
}

fn classify(e: remote_write::DecodeError) -> Outcome {
    match e.kind() {
        ErrorKind::TooLarge => Outcome::TooLarge(e.to_string()),
        _ => Outcome::Bad(e.to_string()),
    }
}
