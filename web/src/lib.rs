//! The HTTP server: the only crate that knows HTTP and JSON.
//!
//! It maps requests to the storage engine and the ingest decoders, and engine errors to
//! status codes, with Prometheus' and VictoriaMetrics' endpoint names and JSON shapes.
//!
//! # Layout
//! - `params`: parsing of times, durations and series selectors from query strings.
//! - `api`: the Prometheus JSON envelope and `/api/v1/{series,labels,label/*/values}`.
//! - `query`: PromQL over HTTP: `/api/v1/{query,query_range,format_query,query_exemplars}`.
//! - `slots`: admission of queries (`--query.max-concurrency`) and their counters.
//! - `status`: `/api/v1/status/*`, `/api/v1/{rules,alerts,targets,metadata}`.
//! - `write`: `POST /api/v1/write` (remote_write 1.0).
//! - `export`: `GET /api/v1/export`, raw samples as JSON lines.
//! - `ops`: health, readiness, `/metrics`, `/internal/force_flush`, `/internal/force_merge`.
//! - `opsapi`: the ops API under `/api/ops/v1/` (inventory), behind API tokens.
//! - `guard`: per-job limits on pushed series, and who pushes the most.
//! - `push`: `/api/v1/import/prometheus`, the Pushgateway-compatible `/metrics/job/...`,
//!   server-side counters (`/api/ops/v1/push`) and their refresh into the TSDB.
//! - `channel`: the agent channel's state (connections, queues, liveness), without HTTP.
//! - `agentapi`: `/api/agent/v1/` (enrollment, the channel's WebSocket, the agents'
//!   remote_write) and the ops API's view of agents.

pub mod agentapi;
pub mod alerts;
pub mod amapi;
pub mod api;
pub mod channel;
pub mod export;
pub mod forward;
pub mod guard;
pub mod ops;
pub mod opsapi;
pub mod params;
pub mod push;
pub mod query;
pub mod rules;
pub mod slots;
pub mod status;
pub mod tasks;
pub mod tls;
pub mod write;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::routing::{get, post};
use tsdb::Db;

pub use params::parse_duration;

/// Server settings that the HTTP layer enforces.
#[derive(Debug, Clone)]
pub struct Settings {
    pub remote_write: collector::remote_write::Limits,
    /// Limits and defaults of the PromQL engine (timeout, samples, lookback). Each
    /// query runs with a copy carrying its own cancel flag and timeout.
    pub engine: promql::EngineOptions,
    /// Queries evaluated at once; more wait for a slot, each at most its timeout.
    pub query_max_concurrency: usize,
    /// The server's effective settings by flag name, for `/api/v1/status/{flags,config}`.
    pub flags: Vec<(String, String)>,
    /// How long data is kept, as shown by `/api/v1/status/runtimeinfo` (`15d`).
    pub storage_retention: String,
    /// Per-job limits on pushed series.
    pub push_limits: guard::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            remote_write: Default::default(),
            engine: Default::default(),
            query_max_concurrency: slots::DEFAULT_MAX_CONCURRENCY,
            flags: Vec::new(),
            storage_retention: String::new(),
            push_limits: guard::Limits::default(),
        }
    }
}

/// A request to read the configuration again, answered with what happened.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// State shared by all handlers.
pub struct AppState {
    /// Set once the storage engine has opened (log replayed); until then every data
    /// endpoint answers 503 and `/-/ready` says why.
    db: OnceLock<Arc<Db>>,
    /// Set once the metadata store has opened; until then the ops API answers 503.
    inventory: OnceLock<Arc<inventory::Store>>,
    /// Set with the inventory: the agent channel.
    hub: OnceLock<Arc<channel::Hub>>,
    /// Set once the task engine has opened (before the agent channel).
    exec: OnceLock<Arc<tasks::Exec>>,
    /// Set once the rules are loaded.
    rules: OnceLock<Arc<rules::Rules>>,
    /// Set once the notifier has opened.
    notifier: OnceLock<Arc<alerting::notify::Notifier>>,
    /// Set once the push store has opened.
    push: OnceLock<Arc<push::PushState>>,
    /// Set once the scrape manager runs: its targets feed `/api/v1/targets`.
    scrape: OnceLock<Arc<collector::scrape::Manager>>,
    /// Where `/-/reload` asks for the configuration to be read again.
    reload: OnceLock<tokio::sync::mpsc::Sender<ReloadRequest>>,
    /// Set when samples are forwarded (`--remote-write.url`).
    forwarder: OnceLock<Arc<forward::Forwarder>>,
    settings: Settings,
    /// Query slots, sized by `settings.query_max_concurrency`.
    pub(crate) slots: slots::QuerySlots,
    started: std::time::SystemTime,
    pub(crate) counters: Counters,
    /// Accounting of pushed series per job.
    pub(crate) guard: guard::Guard,
}

/// Counters of the HTTP layer, exported at `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pub write_requests: [AtomicU64; 4],
    pub write_bytes: AtomicU64,
}

/// Index of `write_requests` by outcome.
pub(crate) const OUTCOMES: [&str; 4] = ["success", "bad_request", "too_large", "server_error"];

impl AppState {
    pub fn new(settings: Settings) -> Arc<AppState> {
        Arc::new(AppState {
            db: OnceLock::new(),
            inventory: OnceLock::new(),
            hub: OnceLock::new(),
            exec: OnceLock::new(),
            rules: OnceLock::new(),
            notifier: OnceLock::new(),
            push: OnceLock::new(),
            scrape: OnceLock::new(),
            reload: OnceLock::new(),
            forwarder: OnceLock::new(),
            slots: slots::QuerySlots::new(settings.query_max_concurrency),
            guard: guard::Guard::new(settings.push_limits),
            settings,
            started: std::time::SystemTime::now(),
            counters: Counters::default(),
        })
    }

    /// Makes the engine available to the handlers.
    pub fn set_db(&self, db: Arc<Db>) {
        let _ = self.db.set(db);
    }

    /// Makes the metadata store available to the ops API.
    pub fn set_inventory(&self, store: Arc<inventory::Store>) {
        let _ = self.inventory.set(store);
    }

    /// Makes the agent channel available.
    pub fn set_hub(&self, hub: Arc<channel::Hub>) {
        let _ = self.hub.set(hub);
    }

    /// Makes the scrape manager's targets available.
    pub fn set_scrape(&self, m: Arc<collector::scrape::Manager>) {
        let _ = self.scrape.set(m);
    }

    pub(crate) fn scrape(&self) -> Option<&Arc<collector::scrape::Manager>> {
        self.scrape.get()
    }

    /// Connects `/-/reload` to whoever reloads the configuration.
    pub fn set_reload(&self, tx: tokio::sync::mpsc::Sender<ReloadRequest>) {
        let _ = self.reload.set(tx);
    }

    pub(crate) fn reloader(&self) -> Option<&tokio::sync::mpsc::Sender<ReloadRequest>> {
        self.reload.get()
    }

    /// Shows the forwarder's queue and counters at `/metrics`.
    pub fn set_forwarder(&self, f: Arc<forward::Forwarder>) {
        let _ = self.forwarder.set(f);
    }

    pub(crate) fn forwarder(&self) -> Option<&Arc<forward::Forwarder>> {
        self.forwarder.get()
    }

    /// Makes pushed state (counters, Pushgateway groups) available.
    pub fn set_push(&self, push: Arc<push::PushState>) {
        let _ = self.push.set(push);
    }

    pub(crate) fn push(&self) -> Option<&Arc<push::PushState>> {
        self.push.get()
    }

    /// The pushed state, once set.
    pub fn push_state(&self) -> Option<&Arc<push::PushState>> {
        self.push.get()
    }

    /// Makes the task engine and the recipe library available.
    pub fn set_exec(&self, exec: Arc<tasks::Exec>) {
        let _ = self.exec.set(exec);
    }

    pub(crate) fn exec(&self) -> Option<&Arc<exec::engine::Engine>> {
        self.exec.get().map(|e| &e.engine)
    }

    /// Makes the rules available to the API.
    pub fn set_rules(&self, rules: Arc<rules::Rules>) {
        let _ = self.rules.set(rules);
    }

    /// Makes the notifier available to the API.
    pub fn set_notifier(&self, n: Arc<alerting::notify::Notifier>) {
        let _ = self.notifier.set(n);
    }

    pub(crate) fn notifier(&self) -> Option<&Arc<alerting::notify::Notifier>> {
        self.notifier.get()
    }

    pub(crate) fn rules(&self) -> Option<&Arc<rules::Rules>> {
        self.rules.get()
    }

    pub(crate) fn tasks(&self) -> Option<&Arc<tasks::Exec>> {
        self.exec.get()
    }

    pub(crate) fn hub(&self) -> Option<&Arc<channel::Hub>> {
        self.hub.get()
    }

    pub(crate) fn inventory(&self) -> Option<&Arc<inventory::Store>> {
        self.inventory.get()
    }

    pub(crate) fn db(&self) -> Result<&Arc<Db>, api::ApiError> {
        self.db
            .get()
            .ok_or_else(|| api::ApiError::unavailable("starting: replaying the write-ahead log"))
    }
}

/// The router with every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.settings.remote_write.max_body_bytes;
    Router::new()
        .route("/-/healthy", get(ops::healthy))
        .route("/-/ready", get(ops::ready))
        .route("/-/reload", post(ops::reload).put(ops::reload))
        .route("/metrics", get(ops::metrics))
        .route(
            "/internal/force_flush",
            post(ops::force_flush).get(ops::force_flush),
        )
        .route(
            "/internal/force_merge",
            post(ops::force_merge).get(ops::force_merge),
        )
        .route(
            "/api/v1/write",
            post(write::remote_write).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/api/v1/import/prometheus",
            post(push::import_prometheus).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/write",
            post(push::influx_write).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/api/v2/write",
            post(push::influx_write).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/metrics/{*rest}",
            axum::routing::put(push::pushgateway)
                .post(push::pushgateway)
                .delete(push::pushgateway),
        )
        .route("/api/v1/export", get(export::export).post(export::export))
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/query", get(query::query).post(query::query))
        .route(
            "/api/v1/query_range",
            get(query::query_range).post(query::query_range),
        )
        .route(
            "/api/v1/format_query",
            get(query::format_query).post(query::format_query),
        )
        .route(
            "/api/v1/query_exemplars",
            get(query::query_exemplars).post(query::query_exemplars),
        )
        .route("/api/v1/metadata", get(status::metadata))
        .route("/api/v1/rules", get(rules::api_rules))
        .route("/api/v1/alerts", get(rules::api_alerts))
        .route("/api/v1/targets", get(status::targets))
        .route("/api/v1/targets/metadata", get(status::targets_metadata))
        .route("/api/v1/alertmanagers", get(status::alertmanagers))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/runtimeinfo", get(status::runtimeinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/status/config", get(status::config))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .route("/api/v1/status/walreplay", get(status::walreplay))
        .route("/api/v1/status/push", get(push::status))
        .route(agent::proto::ENROLL_PATH, post(agentapi::enroll))
        .route(agent::proto::CHANNEL_PATH, get(agentapi::channel))
        .route(
            agent::proto::WRITE_PATH,
            post(agentapi::write).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .nest("/api/ops/v1", ops_router(state.clone()))
        .merge(alertmanager_router(state.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(state)
}

/// `/api/ops/v1/...`, every route behind a token.
fn ops_router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/hosts", get(opsapi::hosts).post(opsapi::add_host))
        .route("/hosts/import", post(opsapi::import_hosts))
        .route("/push", post(push::push_counters))
        .route("/tree", get(opsapi::tree))
        .route(
            "/tree/nodes",
            post(opsapi::add_node).delete(opsapi::remove_node),
        )
        .route("/tree/move", post(opsapi::move_node))
        .route("/tags", post(opsapi::tags))
        .route("/attach", post(opsapi::attach))
        .route("/detach", post(opsapi::detach))
        .route(
            "/tokens",
            get(opsapi::list_tokens).post(opsapi::create_token),
        )
        .route("/tokens/{id}", axum::routing::delete(opsapi::revoke_token))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/output", get(tasks::output))
        .route("/tasks/{id}/pause", post(tasks::pause))
        .route("/tasks/{id}/resume", post(tasks::resume))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/retry", post(tasks::retry))
        .route("/recipes", get(tasks::recipes).post(tasks::add_recipe))
        .route("/recipes/{name}", get(tasks::recipe))
        .route("/audit", get(tasks::audit))
        .route("/rules", get(rules::list_groups))
        .route("/alerts", get(alerts::list))
        .route("/alerts/history", get(alerts::history))
        .route(
            "/alerts/{fingerprint}/ack",
            post(alerts::ack).delete(alerts::unack),
        )
        .route("/notifications", get(alerts::notifications))
        .route("/silences", get(alerts::silences).post(alerts::add_silence))
        .route(
            "/silences/{id}",
            axum::routing::delete(alerts::expire_silence),
        )
        .route(
            "/rules/{group}",
            axum::routing::put(rules::put_group).delete(rules::delete_group),
        )
        .route("/audit/verify", get(tasks::verify_audit))
        .route(
            "/agents/{host}/messages",
            get(agentapi::messages).post(agentapi::push),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            inventory::import::MAX_BYTES,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            opsapi::require_token,
        ))
}

/// Alertmanager's API (`/api/v2/...`) over the notifier, every route behind a token.
fn alertmanager_router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v2/status", get(amapi::status))
        .route("/api/v2/receivers", get(amapi::receivers))
        .route(
            "/api/v2/alerts",
            get(amapi::alerts).post(amapi::post_alerts),
        )
        .route("/api/v2/alerts/groups", get(amapi::alert_groups))
        .route(
            "/api/v2/silences",
            get(amapi::silences).post(amapi::post_silence),
        )
        .route(
            "/api/v2/silence/{id}",
            get(amapi::silence).delete(amapi::delete_silence),
        )
        .layer(axum::middleware::from_fn_with_state(
            state,
            opsapi::require_token,
        ))
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
