//! The ops API under `/api/ops/v1/`: the inventory (hosts, the service tree, selector
//! resolution), for `minos hosts|tree` and for people and programs.
//!
//! Every call needs `Authorization: Bearer <token>` with an admin or api token (see
//! `inventory::tokens`): 401 without one or with an unknown or revoked one, 403 with an
//! enrollment token. Errors use the same JSON envelope as the Prometheus API.
//!
//! A *scoped* api token (grants on nodes of the service tree) is let through only to
//! what [`scoped_may_call`] lists: reading hosts, the tree, tasks, recipes, alerts and
//! silences; running and steering tasks; acknowledging alerts and silencing them. The
//! handlers then keep it to the hosts below its grants (`read` to see a host and its
//! tasks, `run` to run and steer tasks on it). Changing the inventory, the rules, the
//! recipes or the tokens, and reading the audit trail, need an unscoped token.

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
pub async fn require_token(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
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
            let path = req.uri().path();
            if t.scoped() && !scoped_may_call(req.method(), path) {
                return ApiError::with_status(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "{} {path}: a scoped token (grants on parts of the service tree) \
                         cannot do this; it needs an unscoped api token",
                        req.method()
                    ),
                )
                .into_response();
            }
            // Handlers that need more (token management, scopes) look at the caller's
            // token.
            req.extensions_mut().insert(t);
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

/// What a scoped token may call (the path with or without the `/api/ops/v1` prefix).
pub(crate) fn scoped_may_call(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let p = path.strip_prefix("/api/ops/v1").unwrap_or(path);
    let seg: Vec<&str> = p.trim_matches('/').split('/').collect();
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    match seg.as_slice() {
        ["hosts"] | ["tree"] | ["recipes"] | ["recipes", _] | ["rules"] => get,
        ["tasks"] => get || post,
        ["tasks", _] | ["tasks", _, "output"] => get,
        ["tasks", _, "pause" | "resume" | "cancel" | "retry"] => post,
        ["alerts"] | ["alerts", "history"] | ["notifications"] => get,
        ["alerts", _, "ack"] => post || *method == Method::DELETE,
        ["silences"] => get || post,
        ["silences", _] => *method == Method::DELETE,
        // Alertmanager's API.
        ["api", "v2", "status" | "receivers" | "alerts"] => get,
        ["api", "v2", "silences"] => get || post,
        ["api", "v2", "alerts", "groups"] => get,
        ["api", "v2", "silence", _] => get || *method == Method::DELETE,
        _ => false,
    }
}

/// 403 unless `caller` may act as `role` on every host of `hosts` (by id); names up to
/// five hosts it may not.
pub(crate) fn require_hosts(
    caller: &inventory::TokenInfo,
    inv: &Inventory,
    hosts: impl IntoIterator<Item = inventory::HostId>,
    role: inventory::Role,
) -> Result<(), ApiError> {
    if !caller.scoped() {
        return Ok(());
    }
    // Hosts the token may not even see are counted, never named.
    let mut outside: Vec<String> = Vec::new();
    let mut n = 0usize;
    for id in hosts {
        let host = inv.host(id);
        if host.is_some_and(|h| caller.may(inv, h, role)) {
            continue;
        }
        n += 1;
        if let Some(h) = host.filter(|h| caller.may(inv, h, inventory::Role::Read))
            && outside.len() < 5
        {
            outside.push(h.hostname.clone());
        }
    }
    if n == 0 {
        return Ok(());
    }
    let unnamed = n - outside.len();
    let mut what = outside.join(", ");
    if unnamed > 0 {
        if !what.is_empty() {
            what.push_str(" and ");
        }
        what.push_str(&format!("{unnamed} more"));
    }
    Err(ApiError::with_status(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the token's grants do not give {} on {n} host(s): {what}",
            role.as_str()
        ),
    ))
}

fn host_json(st: &AppState, inv: &Inventory, h: &inventory::tree::Host) -> Value {
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
        "agent": crate::agentapi::agent_json(st, h.id),
    })
}

/// `GET /api/ops/v1/hosts[?selector=...]`: hosts, sorted by name; every host without a
/// selector.
pub async fn hosts(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    RawQuery(q): RawQuery,
) -> Response {
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
        .filter(|h| caller.may(&inv, h, inventory::Role::Read))
        .map(|h| host_json(&st, &inv, h))
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

/// A store error as an HTTP error: rule violations are the client's (400, 404, 409).
fn store_error(e: inventory::StoreError) -> ApiError {
    use inventory::TreeError as T;
    match e {
        inventory::StoreError::Rule(r) => {
            let (status, kind) = match &r {
                T::Exists(_) | T::NotEmpty(..) => (StatusCode::CONFLICT, "conflict"),
                T::NoNode | T::NoHost => (StatusCode::NOT_FOUND, "not_found"),
                T::InvalidName(..) | T::InvalidKey(_) | T::Cycle(_) => {
                    (StatusCode::BAD_REQUEST, "bad_data")
                }
            };
            ApiError::with_status(status, kind, r.to_string())
        }
        inventory::StoreError::Refused(msg) => {
            ApiError::with_status(StatusCode::CONFLICT, "conflict", msg)
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// The JSON body of a request, or a 400 naming what is wrong with it.
fn body_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_data(format!("request body: {e}")))
}

fn node_at(inv: &Inventory, path: &str) -> Result<inventory::NodeId, ApiError> {
    inv.node_by_path(path).ok_or_else(|| {
        ApiError::with_status(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tree node {path}"),
        )
    })
}

fn host_named(inv: &Inventory, name: &str) -> Result<inventory::HostId, ApiError> {
    inv.host_by_name(name).map(|h| h.id).ok_or_else(|| {
        ApiError::with_status(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no host named {name}"),
        )
    })
}

/// A parent path: `/` or empty for the top level.
fn parent_at(inv: &Inventory, path: &str) -> Result<Option<inventory::NodeId>, ApiError> {
    if path.trim_matches('/').is_empty() {
        Ok(None)
    } else {
        node_at(inv, path).map(Some)
    }
}

fn store_of(st: &AppState) -> Result<&Arc<inventory::Store>, ApiError> {
    st.inventory()
        .ok_or_else(|| ApiError::unavailable("starting: opening the metadata store"))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    /// `/` or empty for a top-level node.
    #[serde(default)]
    parent: String,
    name: String,
    kind: String,
}

/// `POST /api/ops/v1/tree/nodes` `{"parent": "/sre", "name": "minos", "kind": "service"}`.
pub async fn add_node(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let req: NewNode = body_json(&body)?;
        let parent = parent_at(&store.snapshot(), &req.parent)?;
        let id = store
            .add_node(parent, &req.name, &req.kind)
            .await
            .map_err(store_error)?;
        Ok::<_, ApiError>(success(
            json!({"id": id.0, "path": store.snapshot().path(id)}),
        ))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveNode {
    path: String,
    /// The new parent: `/` or empty for the top level.
    to: String,
}

/// `POST /api/ops/v1/tree/move` `{"path": "/sre/minos", "to": "/ops"}`.
pub async fn move_node(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let req: MoveNode = body_json(&body)?;
        let inv = store.snapshot();
        let node = node_at(&inv, &req.path)?;
        let parent = parent_at(&inv, &req.to)?;
        store.move_node(node, parent).await.map_err(store_error)?;
        Ok::<_, ApiError>(success(json!({"path": store.snapshot().path(node)})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `DELETE /api/ops/v1/tree/nodes?path=/sre/minos`: an empty node.
pub async fn remove_node(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let p = Params::parse(q.as_deref(), &[]);
        let path = p
            .get("path")
            .ok_or_else(|| ApiError::bad_data("missing parameter path"))?;
        let node = node_at(&store.snapshot(), path)?;
        store.remove_node(node).await.map_err(store_error)?;
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHost {
    hostname: String,
    /// Tree paths to attach the host to.
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
}

/// `POST /api/ops/v1/hosts` `{"hostname": "web-01", "nodes": ["/sre/minos/web"],
/// "tags": {"rack": "r1"}}`: a host without an agent, added whole or (on any refusal)
/// not at all.
pub async fn add_host(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let req: NewHost = body_json(&body)?;
        let inv = store.snapshot();
        let nodes = req
            .nodes
            .iter()
            .map(|p| node_at(&inv, p))
            .collect::<Result<Vec<_>, _>>()?;
        for (k, v) in &req.tags {
            if !inventory::tree::valid_key(k) || v.is_empty() {
                return Err(ApiError::bad_data(format!("invalid tag {k}={v}")));
            }
        }
        let id = store
            .add_host_with(&req.hostname, &nodes, &req.tags)
            .await
            .map_err(store_error)?;
        let inv = store.snapshot();
        let h = inv
            .host(id)
            .ok_or_else(|| ApiError::internal("host vanished"))?;
        Ok::<_, ApiError>(success(host_json(&st, &inv, h)))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TagChange {
    /// A host name, or (with `node`) nothing.
    #[serde(default)]
    host: Option<String>,
    /// A tree path.
    #[serde(default)]
    node: Option<String>,
    /// `key: value` sets, `key: null` removes.
    tags: std::collections::BTreeMap<String, Option<String>>,
}

/// `POST /api/ops/v1/tags` `{"host": "web-01", "tags": {"rack": "r1", "old": null}}` or
/// `{"node": "/sre", "tags": {...}}`. Every key is checked before anything is written.
pub async fn tags(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let req: TagChange = body_json(&body)?;
        for (k, v) in &req.tags {
            if !inventory::tree::valid_key(k) || v.as_deref() == Some("") {
                return Err(ApiError::bad_data(format!("invalid tag {k}")));
            }
        }
        let inv = store.snapshot();
        match (&req.host, &req.node) {
            (Some(h), None) => {
                let id = host_named(&inv, h)?;
                for (k, v) in &req.tags {
                    store
                        .tag_host(id, k, v.as_deref())
                        .await
                        .map_err(store_error)?;
                }
            }
            (None, Some(p)) => {
                let id = node_at(&inv, p)?;
                for (k, v) in &req.tags {
                    store
                        .tag_node(id, k, v.as_deref())
                        .await
                        .map_err(store_error)?;
                }
            }
            _ => return Err(ApiError::bad_data("give exactly one of host and node")),
        }
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Attachment {
    host: String,
    node: String,
}

/// `POST /api/ops/v1/attach` `{"host": "web-01", "node": "/sre/minos/web"}`.
pub async fn attach(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    attachment(st, body, true).await
}

/// `POST /api/ops/v1/detach` `{"host": "web-01", "node": "/sre/minos/web"}`.
pub async fn detach(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    attachment(st, body, false).await
}

async fn attachment(st: Arc<AppState>, body: axum::body::Bytes, on: bool) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let req: Attachment = body_json(&body)?;
        let inv = store.snapshot();
        let (h, n) = (host_named(&inv, &req.host)?, node_at(&inv, &req.node)?);
        if on {
            store.attach(h, n).await
        } else {
            store.detach(h, n).await
        }
        .map_err(store_error)?;
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// 403 unless the caller holds an admin token; `what` names the action refused.
pub(crate) fn require_admin(caller: &inventory::TokenInfo, what: &str) -> Result<(), ApiError> {
    if caller.kind == TokenKind::Admin {
        Ok(())
    } else {
        Err(ApiError::with_status(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs an admin token"),
        ))
    }
}

fn token_json(inv: &Inventory, t: &inventory::TokenInfo) -> Value {
    let grants: Vec<Value> = t
        .grants
        .iter()
        .map(|g| json!({"node": inv.path(g.node), "role": g.role.as_str()}))
        .collect();
    json!({
        "id": t.id,
        "kind": t.kind.as_str(),
        "name": t.name,
        "created": t.created,
        "revoked": t.revoked,
        "grants": grants,
    })
}

/// `GET /api/ops/v1/tokens` (admin): every token, without secrets.
pub async fn list_tokens(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
) -> Response {
    let run = async {
        require_admin(&caller, "managing tokens")?;
        let store = store_of(&st)?;
        let list = store.list_tokens().await.map_err(store_error)?;
        let inv = store.snapshot();
        Ok::<_, ApiError>(success(json!({
            "tokens": list.iter().map(|t| token_json(&inv, t)).collect::<Vec<_>>()
        })))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    kind: String,
    name: String,
    /// For an api token: `[{"node": "/sre/minos", "role": "run"}]` scopes it.
    #[serde(default)]
    grants: Vec<NewGrant>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    node: String,
    role: String,
}

/// `POST /api/ops/v1/tokens` (admin) `{"kind": "api"|"enroll"|"admin", "name": "..."}`:
/// the new token, shown this once.
pub async fn create_token(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        require_admin(&caller, "managing tokens")?;
        let store = store_of(&st)?;
        let req: NewToken = body_json(&body)?;
        let kind = TokenKind::parse(&req.kind).ok_or_else(|| {
            ApiError::bad_data(format!(
                "unknown token kind {:?} (admin, api, enroll)",
                req.kind
            ))
        })?;
        if req.name.trim().is_empty() || req.name.len() > 200 {
            return Err(ApiError::bad_data("a token needs a name of 1 to 200 bytes"));
        }
        let token = if req.grants.is_empty() {
            store
                .create_token(kind, req.name.trim())
                .await
                .map_err(store_error)?
        } else {
            if kind != TokenKind::Api {
                return Err(ApiError::bad_data("only api tokens take grants"));
            }
            let inv = store.snapshot();
            let mut grants = Vec::with_capacity(req.grants.len());
            for g in &req.grants {
                let node = inv.node_by_path(&g.node).ok_or_else(|| {
                    ApiError::bad_data(format!("grant on {:?}: no such node of the tree", g.node))
                })?;
                let role = inventory::Role::parse(&g.role).ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "grant on {:?}: unknown role {:?} (read, run)",
                        g.node, g.role
                    ))
                })?;
                if grants.iter().any(|o: &inventory::Grant| o.node == node) {
                    return Err(ApiError::bad_data(format!(
                        "two grants on {:?}: give one role per node",
                        g.node
                    )));
                }
                grants.push(inventory::Grant { node, role });
            }
            store
                .create_scoped_token(req.name.trim(), &grants)
                .await
                .map_err(store_error)?
        };
        Ok::<_, ApiError>(success(json!({"token": token, "kind": kind.as_str()})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `DELETE /api/ops/v1/tokens/{id}` (admin): revokes a token; the last valid admin token
/// cannot be revoked, so the API never locks everyone out.
pub async fn revoke_token(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    let run = async {
        require_admin(&caller, "managing tokens")?;
        let store = store_of(&st)?;
        if !store.revoke_token(id).await.map_err(store_error)? {
            return Err(ApiError::with_status(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no valid token {id}"),
            ));
        }
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `POST /api/ops/v1/hosts/import`: hosts from CSV (`hostname,nodes,tags`; see
/// `inventory::import`). Every row is checked first; a bad one is a 400 naming its line
/// and nothing is imported.
pub async fn import_hosts(State(st): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let run = async {
        let store = store_of(&st)?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_data("the import is not UTF-8 text"))?;
        let r = store.import_hosts(text).await.map_err(|e| match e {
            inventory::StoreError::Invalid(msg) => ApiError::bad_data(msg),
            other => store_error(other),
        })?;
        Ok::<_, ApiError>(success(json!({"added": r.added, "updated": r.updated})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}
