//! Operator endpoints: health, readiness, the server's own metrics, and the
//! VictoriaMetrics-named `force_flush` and `force_merge`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, blocking};
use crate::{AppState, OUTCOMES};

/// `GET /-/healthy`: the process is up.
pub async fn healthy() -> &'static str {
    "Minos is Healthy.\n"
}

/// `GET /-/ready`: the storage engine is open and accepting data.
pub async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.db() {
        // The reloader is set last, once the rules and scraping run.
        Ok(_) if st.reloader().is_none() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: loading the rules\n",
        )
            .into_response(),
        Ok(_) => "Minos is Ready.\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.message + "\n").into_response(),
    }
}

/// `POST /internal/force_flush`: returns once everything ingested so far is in blocks.
pub async fn force_flush(State(st): State<Arc<AppState>>) -> Response {
    let run = async {
        let db = st.db()?.clone();
        blocking(move || db.flush().map_err(|e| ApiError::internal(e.to_string()))).await?;
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `POST /internal/force_merge`: returns once compaction of what exists has finished.
pub async fn force_merge(State(st): State<Arc<AppState>>) -> Response {
    let run = async {
        let db = st.db()?.clone();
        blocking(move || {
            db.force_merge()
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// Resident memory of this process in bytes, from `/proc/self/statm`.
fn resident_bytes() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

/// `GET /metrics`: the server's own metrics in the Prometheus text format.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let c = &st.counters;
    let reqs: Vec<(String, f64)> = OUTCOMES
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                format!("{{outcome=\"{o}\"}}"),
                c.write_requests[i].load(Ordering::Relaxed) as f64,
            )
        })
        .collect();
    let reqs: Vec<(&str, f64)> = reqs.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        &mut out,
        "minos_remote_write_requests_total",
        "counter",
        "Remote write requests by outcome.",
        &reqs,
    );
    metric(
        &mut out,
        "minos_remote_write_bytes_total",
        "counter",
        "Compressed remote write bytes received.",
        &[("", c.write_bytes.load(Ordering::Relaxed) as f64)],
    );
    if let Some(f) = st.forwarder() {
        let fs = f.stats();
        let (records, bytes, dropped) = f.queue();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        metric(
            &mut out,
            "minos_forward_samples_total",
            "counter",
            "Samples forwarded with remote_write, by what became of them.",
            &[
                ("{result=\"queued\"}", get(&fs.samples_queued)),
                ("{result=\"sent\"}", get(&fs.samples_sent)),
                (
                    "{result=\"dropped_behind\"}",
                    get(&fs.samples_dropped_behind),
                ),
            ],
        );
        metric(
            &mut out,
            "minos_forward_requests_total",
            "counter",
            "Remote write requests to the receiver, by outcome.",
            &[
                ("{result=\"sent\"}", get(&fs.requests_sent)),
                ("{result=\"retried\"}", get(&fs.requests_retried)),
                ("{result=\"refused\"}", get(&fs.requests_refused)),
                ("{result=\"dropped_queue_full\"}", dropped as f64),
            ],
        );
        metric(
            &mut out,
            "minos_forward_queue_requests",
            "gauge",
            "Requests waiting in the forwarding queue.",
            &[("", records as f64)],
        );
        metric(
            &mut out,
            "minos_forward_queue_bytes",
            "gauge",
            "Bytes in the forwarding queue.",
            &[("", bytes as f64)],
        );
        metric(
            &mut out,
            "minos_forward_last_success_timestamp_seconds",
            "gauge",
            "When the receiver last accepted a request.",
            &[(
                "",
                fs.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            )],
        );
    }
    if let Some(rss) = resident_bytes() {
        metric(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &[("", rss)],
        );
    }
    let start = st
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metric(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process.",
        &[("", start)],
    );
    if let Some(hub) = st.hub() {
        channel_metrics(&mut out, &st, hub);
    }
    rule_metrics(&mut out, &st);
    let slots = &st.slots;
    metric(
        &mut out,
        "minos_queries",
        "gauge",
        "PromQL queries holding a query slot (running) or waiting for one.",
        &[
            ("{state=\"running\"}", slots.running() as f64),
            ("{state=\"waiting\"}", slots.waiting() as f64),
        ],
    );
    metric(
        &mut out,
        "minos_queries_concurrent_max",
        "gauge",
        "Query slots: PromQL queries evaluated at once (--query.max-concurrency).",
        &[("", slots.max() as f64)],
    );
    metric(
        &mut out,
        "minos_queries_queue_timeouts_total",
        "counter",
        "PromQL queries refused after waiting their timeout for a query slot.",
        &[("", slots.queue_timeouts() as f64)],
    );
    metric(
        &mut out,
        "minos_queries_canceled_total",
        "counter",
        "PromQL queries stopped because their client went away.",
        &[("", slots.canceled() as f64)],
    );
    if let Ok(db) = st.db() {
        let m = db.metrics();
        let stats = db.stats();
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        metric(
            &mut out,
            "minos_tsdb_samples_appended_total",
            "counter",
            "Samples stored in order.",
            &[("", g(&m.samples_appended))],
        );
        metric(
            &mut out,
            "minos_tsdb_samples_out_of_order_total",
            "counter",
            "Samples stored out of order (backfill).",
            &[("", g(&m.samples_out_of_order))],
        );
        metric(
            &mut out,
            "minos_tsdb_samples_duplicate_total",
            "counter",
            "Samples dropped as exact duplicates.",
            &[("", g(&m.samples_duplicate))],
        );
        let rej: Vec<(String, f64)> = tsdb::Reject::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{{reason=\"{}\"}}", r.as_str()), g(&m.rejected[i])))
            .collect();
        let rej: Vec<(&str, f64)> = rej.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            &mut out,
            "minos_tsdb_samples_rejected_total",
            "counter",
            "Samples refused, by reason.",
            &rej,
        );
        metric(
            &mut out,
            "minos_tsdb_head_series",
            "gauge",
            "Active series in the head.",
            &[("", stats.head_series as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_head_out_of_order_samples",
            "gauge",
            "Out-of-order samples buffered in the head.",
            &[("", stats.head_ooo_samples as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_head_chunk_file_bytes",
            "gauge",
            "Bytes of memory-mapped head chunks.",
            &[("", stats.head_chunk_bytes as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_wal_bytes_written_total",
            "counter",
            "Bytes written to the write-ahead log since start.",
            &[("", stats.wal_bytes_written as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_wal_disk_bytes",
            "gauge",
            "Bytes of write-ahead log segments on disk.",
            &[("", stats.wal_disk_bytes as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_wal_corruptions_total",
            "counter",
            "Damaged log records found and cut at replay.",
            &[("", g(&m.wal_corruptions))],
        );
        metric(
            &mut out,
            "minos_tsdb_blocks",
            "gauge",
            "Blocks loaded.",
            &[("", stats.blocks as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_block_bytes",
            "gauge",
            "Bytes of all blocks.",
            &[("", stats.block_bytes as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_block_samples",
            "gauge",
            "Samples in all blocks.",
            &[("", stats.block_samples as f64)],
        );
        metric(
            &mut out,
            "minos_tsdb_flushes_total",
            "counter",
            "Head flushes into blocks.",
            &[("", g(&m.flushes))],
        );
        metric(
            &mut out,
            "minos_tsdb_flush_failures_total",
            "counter",
            "Failed head flushes.",
            &[("", g(&m.flush_failures))],
        );
        metric(
            &mut out,
            "minos_tsdb_compactions_total",
            "counter",
            "Block compactions.",
            &[("", g(&m.compactions))],
        );
        metric(
            &mut out,
            "minos_tsdb_compaction_failures_total",
            "counter",
            "Failed block compactions.",
            &[("", g(&m.compaction_failures))],
        );
        metric(
            &mut out,
            "minos_tsdb_quarantined_total",
            "counter",
            "Corrupt files moved to quarantine.",
            &[("", g(&m.quarantined))],
        );
        metric(
            &mut out,
            "minos_tsdb_blocks_deleted_total",
            "counter",
            "Blocks deleted by retention.",
            &[("", g(&m.blocks_deleted))],
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The rule groups' evaluation counters.
fn rule_metrics(out: &mut String, st: &AppState) {
    let groups = crate::rules::metric_samples(st);
    for (i, (name, kind, help)) in [
        (
            "minos_rule_evaluations_total",
            "counter",
            "Rule evaluations, by group.",
        ),
        (
            "minos_rule_evaluation_failures_total",
            "counter",
            "Rule evaluations that failed, by group.",
        ),
        (
            "minos_rule_group_last_duration_seconds",
            "gauge",
            "How long the group's latest evaluation took.",
        ),
        (
            "minos_rule_group_iterations_missed_total",
            "counter",
            "Evaluations skipped because the previous one ran long.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let samples: Vec<(&str, f64)> = groups.iter().map(|(l, v)| (l.as_str(), v[i])).collect();
        metric(out, name, kind, help, &samples);
    }
}

/// The agent channel's gauges and counters.
fn channel_metrics(out: &mut String, st: &AppState, hub: &crate::channel::Hub) {
    let c = &hub.counters;
    let (connected, queued) = hub.gauges();
    let (mut online, mut lost) = (0usize, 0usize);
    if let Some(store) = st.inventory() {
        for r in store.agents() {
            match hub.status(r.host).unwrap_or(r.status) {
                inventory::AgentStatus::Online => online += 1,
                inventory::AgentStatus::Lost => lost += 1,
                inventory::AgentStatus::Enrolled => {}
            }
        }
    }
    metric(
        out,
        "minos_agents_connected",
        "gauge",
        "Agents holding the channel open.",
        &[("", connected as f64)],
    );
    metric(
        out,
        "minos_agents",
        "gauge",
        "Enrolled agents by status.",
        &[
            ("{status=\"online\"}", online as f64),
            ("{status=\"lost\"}", lost as f64),
        ],
    );
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    for (name, help, v) in [
        (
            "minos_agent_heartbeats_total",
            "Heartbeats received from agents.",
            &c.heartbeats,
        ),
        (
            "minos_agent_connections_total",
            "Channel connections accepted.",
            &c.connects,
        ),
        (
            "minos_agent_auth_failures_total",
            "Agent requests refused for a missing or unknown secret.",
            &c.refused,
        ),
        (
            "minos_agent_bad_frames_total",
            "Connections closed for a frame outside the protocol.",
            &c.bad_frames,
        ),
        (
            "minos_agent_messages_sent_total",
            "Messages sent to agents, resends included.",
            &c.sent,
        ),
        (
            "minos_agent_messages_acked_total",
            "Messages agents acknowledged.",
            &c.acked,
        ),
        (
            "minos_agent_messages_received_total",
            "Messages received from agents, each once.",
            &c.received,
        ),
        (
            "minos_agent_messages_duplicate_total",
            "Messages from agents received again and dropped.",
            &c.duplicates,
        ),
    ] {
        metric(out, name, "counter", help, &[("", load(v))]);
    }
    let snap = st.inventory().map(|s| s.snapshot());
    let per_agent: Vec<(String, f64)> = queued
        .iter()
        .map(|(h, n)| {
            let name = snap
                .as_ref()
                .and_then(|i| i.host(*h).map(|x| x.hostname.clone()))
                .unwrap_or_else(|| h.0.to_string());
            (
                format!("{{hostname=\"{}\"}}", escape_label(&name)),
                *n as f64,
            )
        })
        .collect();
    let total: usize = queued.iter().map(|(_, n)| n).sum();
    metric(
        out,
        "minos_agents_queued_messages",
        "gauge",
        "Messages waiting for agents, all agents together.",
        &[("", total as f64)],
    );
    let per: Vec<(&str, f64)> = per_agent.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        out,
        "minos_agent_queued_messages",
        "gauge",
        "Messages waiting for one agent (agents with none are not listed).",
        &per,
    );
    metric(
        out,
        "minos_agent_queue_limit_messages",
        "gauge",
        "Most messages that may wait for one agent (--agent.max-queued).",
        &[("", hub.limits.max_queued as f64)],
    );
}

/// A label value as the text exposition format writes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `POST /-/reload`: reads the configuration again; the old one stays when the new one
/// is invalid (400 with the reason, naming the line).
pub async fn reload(State(st): State<Arc<AppState>>) -> Response {
    let Some(tx) = st.reloader() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the reloader stopped\n").into_response();
    }
    match rx.await {
        Ok(Ok(msg)) => (StatusCode::OK, msg + "\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the reloader stopped\n").into_response(),
    }
}
