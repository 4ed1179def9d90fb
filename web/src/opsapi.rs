//! The ops API under `/api/ops/v1/`: the inventory (hosts, the service tree, selector
//! resolution), for `minos hosts|tree` and for people and programs.
//!
//! Every call needs `Authorization: Bearer <token>` with an admin or api token (see
//! `inventory::tokens`): 401 without one or with an unknown or revoked one, 403 with an
//! enrollment token. Errors use the same JSON envelope as the Prometheus API.

use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use inventory::{Inventory, Selector, TokenKind};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, Params, success};

fn unauthorized(msg: &str) -> Response {
    ApiError::with_status(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response()
}

/// Lets a request through with an admin or api token.
pub async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(store) = st.inventory() else {
        return ApiError::unavailable("starting: opening the metadata store").into_response();
    };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return unauthorized("missing token: send Authorization: Bearer <token>");
    };
    match store.check_token(token).await {
        Ok(Some(t)) if t.kind == TokenKind::Admin || t.kind == TokenKind::Api => {
            next.run(req).await
        }
        Ok(Some(_)) => ApiError::with_status(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an enrollment token cannot use the ops API",
        )
        .into_response(),
        Ok(None) => unauthorized("unknown or revoked token"),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

fn host_json(inv: &Inventory, h: &inventory::tree::Host) -> Value {
    let placements: Vec<Value> = inv
        .placements(h)
        .into_iter()
        .map(|(node, labels)| {
            json!({
                "path": node.map(|n| inv.path(n)),
                "labels": labels,
            })
        })
        .collect();
    json!({
        "id": h.id.0,
        "hostname": h.hostname,
        "tags": h.tags,
        "placements": placements,
    })
}

/// `GET /api/ops/v1/hosts[?selector=...]`: hosts, sorted by name; every host without a
/// selector.
pub async fn hosts(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let Some(store) = st.inventory() else {
        return ApiError::unavailable("starting").into_response();
    };
    let inv = store.snapshot();
    let p = Params::parse(q.as_deref(), &[]);
    let sel = p.get("selector").filter(|s| !s.is_empty()).unwrap_or("*");
    let ids = match Selector::parse(sel).and_then(|s| s.resolve(&inv)) {
        Ok(ids) => ids,
        Err(e) => return ApiError::bad_data(e.to_string()).into_response(),
    };
    let hosts: Vec<Value> = ids
        .into_iter()
        .filter_map(|id| inv.host(id))
        .map(|h| host_json(&inv, h))
        .collect();
    success(json!({ "hosts": hosts }))
}

/// `GET /api/ops/v1/tree`: every node with its path, sorted by path.
pub async fn tree(State(st): State<Arc<AppState>>) -> Response {
    let Some(store) = st.inventory() else {
        return ApiError::unavailable("starting").into_response();
    };
    let inv = store.snapshot();
    let mut nodes: Vec<(String, Value)> = inv
        .nodes()
        .map(|n| {
            let path = inv.path(n.id);
            let v = json!({
                "id": n.id.0,
                "path": path,
                "name": n.name,
                "kind": n.kind,
                "parent": n.parent.map(|p| p.0),
                "owners": n.owners,
                "tags": n.tags,
            });
            (path, v)
        })
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    success(json!({ "nodes": nodes.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }))
}
