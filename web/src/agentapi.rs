//! The agents' endpoints under `/api/agent/v1/`: enrollment, the channel (a WebSocket)
//! and the agents' own remote_write; and the ops API's view of agents.
//!
//! `POST enroll` takes the enrollment token; everything else takes the agent's secret
//! (`Authorization: Bearer minos_agent_...`): 401 without a valid one, before anything
//! is read or changed. The frames are `agent::proto`'s; the state is [`crate::channel`]'s.
//!
//! # Acknowledgements
//! An agent's message is acknowledged only once what it changed is durable: a task
//! report (`run.started`, `run.output`, `run.finished`) once the task engine's batch
//! holding it is written; other messages need nothing written. The connection does not
//! wait for each batch in turn (a host's output would stream at the pace of database
//! commits): it keeps the acknowledgements it owes (`OwedAcks`) with their batch
//! numbers and sends them as the engine reports batches written. They leave in the order
//! the messages arrived, so none is acknowledged before one that came earlier. What a
//! killed server had not acknowledged, the agent sends again, and the engine takes it
//! once. Beyond `MAX_OWED_ACKS` owed, the connection waits for the oldest batch before
//! it reads on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agent::proto::{self, AgentFrame, EnrollRequest, EnrollResponse, MsgId, ServerFrame};
use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use inventory::{HostId, Store, TokenKind};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, success};
use crate::channel::{Hub, PushError, Record};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn unauthorized(msg: &str) -> Response {
    ApiError::with_status(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response()
}

fn parts(st: &AppState) -> Result<(&Arc<Store>, &Arc<Hub>), ApiError> {
    match (st.inventory(), st.hub()) {
        (Some(s), Some(h)) => Ok((s, h)),
        _ => Err(ApiError::unavailable(
            "starting: opening the metadata store",
        )),
    }
}

/// The host whose agent sent `headers`' secret.
fn agent_host(st: &AppState, headers: &HeaderMap) -> Result<HostId, ApiError> {
    let (store, hub) = parts(st)?;
    let Some(secret) = bearer(headers) else {
        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::with_status(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing agent secret: send Authorization: Bearer <secret>",
        ));
    };
    store.agent_by_secret(secret).ok_or_else(|| {
        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
        ApiError::with_status(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown agent secret: enroll again",
        )
    })
}

/// Facts as stored: the JSON object, bounded.
fn facts_json(f: &agent::facts::Facts) -> Result<String, String> {
    let s = serde_json::to_string(f).map_err(|e| e.to_string())?;
    if s.len() > proto::MAX_FACTS_BYTES {
        return Err(format!(
            "facts are {} bytes; at most {}",
            s.len(),
            proto::MAX_FACTS_BYTES
        ));
    }
    Ok(s)
}

/// `POST /api/agent/v1/enroll`: an agent with the enrollment token gets its secret.
pub async fn enroll(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (store, _) = match parts(&st) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let Some(token) = bearer(&headers) else {
        return unauthorized("missing enrollment token: send Authorization: Bearer <token>");
    };
    match store.check_token(token).await {
        Ok(Some(t)) if t.kind == TokenKind::Enroll || t.kind == TokenKind::Admin => {}
        Ok(Some(_)) => {
            return ApiError::with_status(
                StatusCode::FORBIDDEN,
                "forbidden",
                "enrollment needs an enrollment (or admin) token",
            )
            .into_response();
        }
        Ok(None) => return unauthorized("unknown or revoked enrollment token"),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    }
    if body.len() > proto::MAX_FACTS_BYTES + 1024 {
        return ApiError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "enrollment is {} bytes; at most {}",
                body.len(),
                proto::MAX_FACTS_BYTES + 1024
            ),
        )
        .into_response();
    }
    let req: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_data(format!("enrollment: {e}")).into_response(),
    };
    let facts = match facts_json(&req.facts) {
        Ok(f) => f,
        Err(e) => {
            return ApiError::with_status(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e)
                .into_response();
        }
    };
    match store
        .enroll_agent(req.hostname.trim(), &req.facts.machine_id, &facts)
        .await
    {
        Ok(e) => {
            tracing::info!(
                "agent of {} enrolled{}",
                req.hostname.trim(),
                if e.existing_host {
                    " (known host: record kept)"
                } else {
                    ""
                }
            );
            Json(EnrollResponse {
                host_id: e.host.0,
                hostname: req.hostname.trim().to_string(),
                secret: e.secret,
                task_key: st.tasks().map(|e| e.signer.public_hex.clone()),
            })
            .into_response()
        }
        Err(inventory::StoreError::Rule(e)) => ApiError::bad_data(e.to_string()).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// `POST /api/agent/v1/write`: remote_write from an enrolled agent.
pub async fn write(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = agent_host(&st, &headers) {
        return r.into_response();
    }
    crate::write::remote_write(State(st), body).await
}

/// `GET /api/agent/v1/channel`: the agent's WebSocket.
pub async fn channel(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let host = match agent_host(&st, &headers) {
        Ok(h) => h,
        Err(r) => return r.into_response(),
    };
    // A small read buffer: it grows for a large frame, and 5,000 idle agents otherwise
    // hold 128 KiB each (measured: 678 MB of RSS at 5,000 agents, 72 MB with 4 KiB).
    ws.max_message_size(proto::MAX_FRAME_BYTES)
        .max_frame_size(proto::MAX_FRAME_BYTES)
        .read_buffer_size(4096)
        .on_upgrade(move |socket| async move {
            if let Err(e) = serve(st, host, socket).await {
                tracing::debug!("agent channel of host {}: {e}", host.0);
            }
        })
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), String> {
    let text = serde_json::to_string(frame).map_err(|e| e.to_string())?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

async fn close(socket: &mut WebSocket, code: u16, reason: String) -> Result<(), String> {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.clone().into(),
        })))
        .await;
    Err(reason)
}

/// Stores facts that changed; an oversized object closes the channel.
async fn store_facts(
    store: &Store,
    host: HostId,
    facts: &agent::facts::Facts,
) -> Result<(), (u16, String)> {
    let json = facts_json(facts).map_err(|e| (close_code::SIZE, e))?;
    if store.agent(host).is_some_and(|r| r.facts == json) {
        return Ok(());
    }
    store
        .set_agent_facts(host, &json)
        .await
        .map_err(|e| (close_code::ERROR, e.to_string()))
}

/// One connection: hello first, then heartbeats, acks and messages both ways.
async fn serve(st: Arc<AppState>, host: HostId, mut socket: WebSocket) -> Result<(), String> {
    let (store, hub) = match parts(&st) {
        Ok((s, h)) => (s.clone(), h.clone()),
        Err(_) => return Err("not ready".into()),
    };
    // The first frame must be a hello, within a few seconds.
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    let heartbeat_ms = match first {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<AgentFrame>(&t) {
            Ok(AgentFrame::Hello {
                version,
                heartbeat_ms,
                facts,
                ..
            }) => {
                if version != proto::VERSION {
                    hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return close(
                        &mut socket,
                        close_code::PROTOCOL,
                        format!(
                            "protocol version {version}; this server speaks {}",
                            proto::VERSION
                        ),
                    )
                    .await;
                }
                if let Some(f) = facts
                    && let Err((code, why)) = store_facts(&store, host, &f).await
                {
                    hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return close(&mut socket, code, why).await;
                }
                heartbeat_ms.clamp(100, 3_600_000)
            }
            Ok(_) => {
                hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                return close(&mut socket, close_code::PROTOCOL, "expected hello".into()).await;
            }
            Err(e) => {
                hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                return close(&mut socket, close_code::INVALID, format!("bad frame: {e}")).await;
            }
        },
        Ok(_) => return close(&mut socket, close_code::PROTOCOL, "expected hello".into()).await,
        Err(_) => return close(&mut socket, close_code::POLICY, "no hello in 10s".into()).await,
    };
    let (conn, notify) = hub.connect(host, heartbeat_ms);
    hub.heartbeat(host);
    let res = converse(
        &st,
        &store,
        &hub,
        host,
        conn,
        heartbeat_ms,
        notify,
        &mut socket,
    )
    .await;
    hub.disconnect(host, conn);
    res
}

/// Acknowledgements a connection owes, in the order their messages arrived, each with
/// the task engine's batch that must be written first (0: none).
#[derive(Debug, Default)]
pub(crate) struct OwedAcks {
    owed: VecDeque<(u64, MsgId)>,
}

/// The most acknowledgements one connection owes before it stops reading.
pub(crate) const MAX_OWED_ACKS: usize = 4096;

impl OwedAcks {
    /// Message `id` may be acknowledged once batch `batch` is written.
    pub(crate) fn owe(&mut self, batch: u64, id: MsgId) {
        self.owed.push_back((batch, id));
    }

    /// The acknowledgements due now that every batch up to `written` is written, oldest
    /// first; they stop at the first one still waiting, so none overtakes an earlier one.
    pub(crate) fn due(&mut self, written: u64) -> Vec<MsgId> {
        let mut due = Vec::new();
        while let Some(&(batch, id)) = self.owed.front() {
            if batch > written {
                break;
            }
            self.owed.pop_front();
            due.push(id);
        }
        due
    }

    /// The batch the oldest owed acknowledgement waits for.
    pub(crate) fn first_batch(&self) -> Option<u64> {
        self.owed.front().map(|&(batch, _)| batch)
    }

    pub(crate) fn len(&self) -> usize {
        self.owed.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }
}

/// The next change of the engine's written batch; never, without an engine to watch.
async fn batch_written(
    written: &mut Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match written {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn converse(
    st: &AppState,
    store: &Arc<Store>,
    hub: &Hub,
    host: HostId,
    conn: u64,
    heartbeat_ms: u64,
    notify: Arc<tokio::sync::Notify>,
    socket: &mut WebSocket,
) -> Result<(), String> {
    send(
        socket,
        &ServerFrame::Welcome {
            boot: hub.boot,
            lost_after_ms: u64::try_from(hub.limits.lost_after.as_millis()).unwrap_or(u64::MAX),
            task_key: st.tasks().map(|e| e.signer.public_hex.clone()),
        },
    )
    .await?;
    // A connection silent for three heartbeats is dead even if TCP has not noticed.
    let silence = Duration::from_millis(heartbeat_ms.saturating_mul(3)).max(Duration::from_secs(1));
    let mut deadline = tokio::time::Instant::now() + silence;
    // Acknowledgements waiting for their batch, and the engine's last batch written
    // (watched from the first task report on).
    let mut owed = OwedAcks::default();
    let mut written: Option<tokio::sync::watch::Receiver<u64>> = None;
    loop {
        for f in hub.outgoing(host, conn) {
            send(socket, &f).await?;
        }
        tokio::select! {
            frame = socket.recv() => {
                let text = match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Binary(_))) => {
                        hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        return close(socket, close_code::UNSUPPORTED, "binary frames are not part of the protocol".into()).await;
                    }
                    Some(Ok(_)) => continue,
                };
                deadline = tokio::time::Instant::now() + silence;
                let frame = match serde_json::from_str::<AgentFrame>(&text) {
                    Ok(f) => f,
                    Err(e) => {
                        hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        return close(socket, close_code::INVALID, format!("bad frame: {e}")).await;
                    }
                };
                match frame {
                    AgentFrame::Heartbeat { seq, facts } => {
                        if let Some(f) = facts
                            && let Err((code, why)) = store_facts(store, host, &f).await
                        {
                            hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                            return close(socket, code, why).await;
                        }
                        hub.heartbeat(host);
                        send(socket, &ServerFrame::HeartbeatAck { seq }).await?;
                    }
                    AgentFrame::Ack { id } => {
                        if let Some(q) = hub.acked(host, id)
                            && q.kind == "run"
                            && let Some(exec) = st.exec()
                        {
                            exec.acknowledged(host.0, &q.body);
                        }
                    }
                    AgentFrame::Msg { id, kind, body } => {
                        let mut batch = 0;
                        if kind.starts_with("run.") {
                            // A task's report is acknowledged only once written: the
                            // agent replays what is not acknowledged.
                            let Some(exec) = st.exec() else {
                                continue;
                            };
                            if let Some(b) = exec.agent_message(host.0, &kind, &body) {
                                batch = b;
                                if written.is_none() {
                                    written = Some(exec.flushed_watch());
                                }
                            }
                        }
                        hub.received(host, id, kind, body);
                        owed.owe(batch, id);
                        if owed.len() > MAX_OWED_ACKS
                            && let (Some(rx), Some(first)) = (written.as_mut(), owed.first_batch())
                        {
                            // Bounded by the heartbeat deadline: a writer stuck for longer
                            // ends the connection (the agent sends the rest again later).
                            tokio::select! {
                                ok = async { rx.wait_for(|w| *w >= first).await.is_ok() } => if !ok {
                                    return Err("the task engine stopped".into());
                                },
                                _ = tokio::time::sleep_until(deadline) => {
                                    return close(
                                        socket,
                                        close_code::AGAIN,
                                        "the task database is not keeping up".into(),
                                    )
                                    .await;
                                }
                            }
                        }
                    }
                    AgentFrame::Hello { .. } => {
                        hub.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        return close(socket, close_code::PROTOCOL, "hello twice".into()).await;
                    }
                }
            }
            r = batch_written(&mut written), if !owed.is_empty() => {
                if r.is_err() {
                    // Shutting down: what is owed stays unacknowledged, and the agent
                    // sends it again to the next server.
                    return Err("the task engine stopped".into());
                }
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return close(socket, close_code::POLICY, "no heartbeat".into()).await;
            }
        }
        let done = written.as_mut().map_or(0, |rx| *rx.borrow_and_update());
        for id in owed.due(done) {
            send(socket, &ServerFrame::Ack { id }).await?;
        }
        if !hub.is_current(host, conn) {
            return close(
                socket,
                close_code::NORMAL,
                "replaced by a newer connection".into(),
            )
            .await;
        }
    }
}

fn id_json(id: proto::MsgId) -> Value {
    json!([id.0, id.1])
}

fn records(v: &[Record]) -> Vec<Value> {
    v.iter()
        .map(|r| json!({"id": id_json(r.id), "kind": r.kind, "body": r.body, "at": r.at}))
        .collect()
}

/// The agent part of a host's JSON (ops API): status, facts, channel state.
pub(crate) fn agent_json(st: &AppState, host: HostId) -> Value {
    let (Some(store), Some(hub)) = (st.inventory(), st.hub()) else {
        return Value::Null;
    };
    let Some(rec) = store.agent(host) else {
        return Value::Null;
    };
    let view = hub.view(host);
    let status = hub.status(host).unwrap_or(rec.status);
    let facts: Value = serde_json::from_str(&rec.facts).unwrap_or(Value::Null);
    json!({
        "status": status.as_str(),
        "connected": view.connected,
        "last_heartbeat": if view.last_seen > 0 { view.last_seen } else { rec.last_seen },
        "enrolled_at": rec.enrolled_at,
        "facts": facts,
        "facts_at": rec.facts_at,
        "queued": view.queued.len(),
    })
}

fn host_of(st: &AppState, name: &str) -> Result<HostId, ApiError> {
    let store = parts(st)?.0;
    store
        .snapshot()
        .host_by_name(name)
        .map(|h| h.id)
        .ok_or_else(|| {
            ApiError::with_status(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no host {name:?}"),
            )
        })
}

/// `GET /api/ops/v1/agents/{host}/messages`: what waits for the agent, what it
/// acknowledged lately, and what it sent lately.
pub async fn messages(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let host = match host_of(&st, &name) {
        Ok(h) => h,
        Err(r) => return r.into_response(),
    };
    let Some(hub) = st.hub() else {
        return ApiError::unavailable("starting").into_response();
    };
    let v = hub.view(host);
    let queued: Vec<Value> = v
        .queued
        .iter()
        .map(|q| json!({"id": id_json(q.id), "kind": q.kind, "body": q.body, "queued_at": q.queued_at}))
        .collect();
    success(json!({
        "connected": v.connected,
        "queued": queued,
        "delivered": records(&v.delivered),
        "received": records(&v.received),
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    kind: String,
    #[serde(default)]
    body: Value,
}

/// `POST /api/ops/v1/agents/{host}/messages` `{"kind":..., "body":...}`: queues a
/// message for the agent; 202 with its id. Admin tokens only (403 otherwise): a `run`
/// message runs a script on the host.
pub async fn push(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    // A message can make an agent run a script: admin tokens only.
    if let Err(e) = crate::opsapi::require_admin(&caller, "sending messages to agents") {
        return e.into_response();
    }
    let host = match host_of(&st, &name) {
        Ok(h) => h,
        Err(r) => return r.into_response(),
    };
    let (store, hub) = match parts(&st) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let req: PushBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_data(format!("message: {e}")).into_response(),
    };
    if req.kind.is_empty() || req.kind.len() > 64 {
        return ApiError::bad_data("kind: 1 to 64 bytes").into_response();
    }
    let mut body = req.body;
    // Work for an agent is signed (agents refuse it otherwise) and audited like a task's.
    if let Some(ex) = st.tasks() {
        if req.kind == "run"
            && let Err(e) = ex.signer.sign_run(host.0, &mut body)
        {
            return ApiError::bad_data(e).into_response();
        }
        let entry = exec::audit::NewEntry {
            actor: format!("{}:{}", caller.kind.as_str(), caller.name),
            action: "agent.message".into(),
            task: body["task"]
                .as_i64()
                .filter(|_| req.kind == "run" || req.kind == "kill"),
            detail: json!({"hostname": name, "kind": req.kind, "body": body}),
        };
        if let Err(e) = exec::audit::append_now(ex.engine.pool(), vec![entry]).await {
            return ApiError::internal(e.to_string()).into_response();
        }
    } else if req.kind == "run" {
        return ApiError::unavailable("starting: the task key is not loaded").into_response();
    }
    match hub.push(store, host, &req.kind, body) {
        Ok(id) => (StatusCode::ACCEPTED, success(json!({"id": id_json(id)}))).into_response(),
        Err(e @ PushError::NoAgent(_)) => {
            ApiError::with_status(StatusCode::NOT_FOUND, "not_found", e.to_string()).into_response()
        }
        Err(e @ PushError::Full(..)) => {
            ApiError::with_status(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
                .into_response()
        }
        Err(e @ PushError::TooLarge(..)) => {
            ApiError::with_status(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_wait_for_their_batch_and_leave_in_arrival_order() {
        let mut owed = OwedAcks::default();
        let id = |n| MsgId(9, n);
        // Output in batch 4, a pong (nothing to write), a result in batch 5, output in
        // batch 5.
        owed.owe(4, id(1));
        owed.owe(0, id(2));
        owed.owe(5, id(3));
        owed.owe(5, id(4));
        assert_eq!(owed.first_batch(), Some(4));
        // Nothing is acknowledged before its batch is written, and the pong does not
        // overtake the output that came before it.
        assert_eq!(owed.due(3), vec![]);
        assert_eq!(owed.len(), 4);
        assert_eq!(owed.due(4), vec![id(1), id(2)]);
        assert_eq!(owed.first_batch(), Some(5));
        assert_eq!(owed.due(4), vec![]);
        // Batches are written in order: a later one covers the earlier ones.
        assert_eq!(owed.due(9), vec![id(3), id(4)]);
        assert!(owed.is_empty());
        // A message with nothing to write, owed nothing else, is due at once.
        owed.owe(0, id(5));
        assert_eq!(owed.due(0), vec![id(5)]);
    }
}
