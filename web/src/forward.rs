//! Forwarding every stored sample to another store with Prometheus remote_write
//! (`--remote-write.url`): how a Minos server feeds a VictoriaMetrics cluster, Mimir,
//! Thanos or a central Prometheus, and keeps doing so across outages of the receiver
//! and restarts of its own.
//!
//! The path of a sample:
//! 1. The TSDB tells the forwarder ([`tsdb::AppendSink`]) of each append's stored
//!    samples, once they are in its log, whatever the source (remote_write, pushes,
//!    scrapes, agents, recording rules). The forwarder hands them to its writer thread
//!    over a bounded channel; when the writer is too far behind, samples are dropped
//!    and counted rather than slowing ingest down.
//! 2. The writer gathers them for up to `flush_interval` (or [`MAX_SAMPLES_PER_REQUEST`])
//!    into one remote_write request (snappy-compressed protobuf) and appends it to the
//!    queue: the on-disk spool of `agent::spool` in `<data>/remote-write/`, each record
//!    written whole and synced. The queue is bounded (`max_bytes`): past it the oldest
//!    requests are dropped, and counted.
//! 3. The sender posts the oldest request to the receiver. A 2xx answer removes it. A
//!    4xx other than 429 (the receiver refuses the data: retrying cannot help) drops it,
//!    counted and logged. Anything else (5xx, 429, connection refused, timeout) keeps
//!    it and retries after a backoff doubling from 1 s to 30 s. Requests leave in order.
//!
//! Delivery is at least once: a request sent just before a crash may be sent again.
//! Samples stored in the last `flush_interval` before a crash (not yet in the queue)
//! are not forwarded; a clean stop queues them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent::spool::Spool;
use collector::remote_write::proto;
use parking_lot::Mutex;

/// Most samples in one request.
pub const MAX_SAMPLES_PER_REQUEST: usize = 10_000;

/// Appends waiting for the writer before new ones are dropped.
const CHANNEL_BATCHES: usize = 4096;

/// How to forward.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The receiver's remote_write endpoint (`http://vm:8428/api/v1/write`).
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub bearer_token: Option<String>,
    /// A private CA's certificates (PEM) for an `https://` receiver.
    pub ca_file: Option<PathBuf>,
    /// The queue's directory.
    pub dir: PathBuf,
    /// The queue's bound in bytes.
    pub max_bytes: u64,
    /// Longest a sample waits before it is queued.
    pub flush_interval: Duration,
}

/// Counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Samples written to the queue.
    pub samples_queued: AtomicU64,
    /// Samples delivered (in requests the receiver accepted).
    pub samples_sent: AtomicU64,
    /// Samples dropped because the writer was behind.
    pub samples_dropped_behind: AtomicU64,
    /// Requests the receiver refused (4xx): dropped.
    pub requests_refused: AtomicU64,
    /// Attempts that failed and will be retried.
    pub requests_retried: AtomicU64,
    /// Requests delivered.
    pub requests_sent: AtomicU64,
    /// Unix ms of the last delivery.
    pub last_success_ms: AtomicI64,
}

/// One append's stored samples, owned.
type Batch = Vec<(Vec<(String, String)>, Vec<tsdb::Sample>)>;

/// What the writer thread is sent.
enum Msg {
    Batch(Batch),
    /// Queue what is held and end.
    Close,
}

/// The forwarder: the TSDB's sink, the writer thread and the sender task.
pub struct Forwarder {
    config: ForwardConfig,
    tx: std::sync::mpsc::SyncSender<Msg>,
    rx: Mutex<Option<std::sync::mpsc::Receiver<Msg>>>,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<tokio::sync::Notify>,
    http: reqwest::Client,
    stats: Arc<ForwardStats>,
}

impl Forwarder {
    /// Opens the queue and checks the configuration; nothing runs until
    /// [`Forwarder::start`].
    pub fn open(config: ForwardConfig) -> Result<Arc<Forwarder>, String> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("--remote-write.url {:?}: {e}", config.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--remote-write.url {:?}: not an http(s) URL",
                config.url
            ));
        }
        let spool = Spool::open(&config.dir, config.max_bytes)
            .map_err(|e| format!("{}: {e}", config.dir.display()))?;
        if !spool.is_empty() {
            tracing::info!(
                "remote write: {} requests ({} bytes) wait in the queue",
                spool.len(),
                spool.bytes()
            );
        }
        let tls = agent::tls::client_config(config.ca_file.as_deref())
            .map_err(|e| format!("--remote-write.ca-file {e}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| format!("remote write HTTP client: {e}"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_BATCHES);
        Ok(Arc::new(Forwarder {
            config,
            tx,
            rx: Mutex::new(Some(rx)),
            spool: Arc::new(Mutex::new(spool)),
            wake: Arc::new(tokio::sync::Notify::new()),
            http,
            stats: Arc::new(ForwardStats::default()),
        }))
    }

    pub fn stats(&self) -> &ForwardStats {
        &self.stats
    }

    /// Requests and bytes in the queue, and requests dropped at its bound.
    pub fn queue(&self) -> (usize, u64, u64) {
        let s = self.spool.lock();
        (s.len(), s.bytes(), s.dropped())
    }

    /// Starts the writer thread and the sender task; they run until `stop` fires. The
    /// writer queues what it holds before it ends; wait for the returned thread.
    pub fn start(
        self: &Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let rx = self.rx.lock().take()?;
        let f = self.clone();
        let writer = std::thread::Builder::new()
            .name("remote-write".into())
            .spawn(move || f.write_loop(rx))
            .ok()?;
        tokio::spawn(self.clone().send_loop(stop));
        Some(writer)
    }

    /// Has the writer queue what it holds and end (the thread [`Forwarder::start`]
    /// returned ends then). Samples stored after this are not forwarded.
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Close);
    }

    /// Gathers batches into requests and queues them, until [`Forwarder::close`].
    fn write_loop(&self, rx: std::sync::mpsc::Receiver<Msg>) {
        let mut pending = proto::WriteRequest::default();
        let mut samples = 0usize;
        let mut since: Option<Instant> = None;
        loop {
            let wait = since.map_or(Duration::from_secs(3600), |t| {
                self.config.flush_interval.saturating_sub(t.elapsed())
            });
            let got = rx.recv_timeout(wait);
            let closed = matches!(
                got,
                Ok(Msg::Close) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            );
            if let Ok(Msg::Batch(batch)) = got {
                for (labels, ss) in batch {
                    samples += ss.len();
                    pending.timeseries.push(proto::TimeSeries {
                        labels: labels
                            .into_iter()
                            .map(|(name, value)| proto::Label { name, value })
                            .collect(),
                        samples: ss
                            .iter()
                            .map(|s| proto::Sample {
                                value: s.v,
                                timestamp: s.t,
                            })
                            .collect(),
                    });
                }
                since.get_or_insert_with(Instant::now);
            }
            let due = since.is_some_and(|t| t.elapsed() >= self.config.flush_interval);
            if samples > 0 && (due || closed || samples >= MAX_SAMPLES_PER_REQUEST) {
                let body = proto::encode_snappy(&pending);
                match self.spool.lock().push(&body) {
                    Ok(()) => {
                        self.stats
                            .samples_queued
                            .fetch_add(samples as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::error!("remote write: queueing {samples} samples: {e}");
                        self.stats
                            .samples_dropped_behind
                            .fetch_add(samples as u64, Ordering::Relaxed);
                    }
                }
                pending.timeseries.clear();
                samples = 0;
                since = None;
                self.wake.notify_one();
            }
            if closed {
                return;
            }
        }
    }

    /// Sends the queue oldest first until `stop` fires.
    async fn send_loop(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if *stop.borrow() {
                return;
            }
            let spool = self.spool.clone();
            let front = tokio::task::spawn_blocking(move || spool.lock().front())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            let body = match front {
                Ok(Some(b)) => b,
                Ok(None) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!("remote write: reading the queue: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let samples = count_samples(&body);
            let mut req = self
                .http
                .post(&self.config.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .header("User-Agent", concat!("minos/", env!("CARGO_PKG_VERSION")))
                .body(body);
            if let Some(t) = &self.config.bearer_token {
                req = req.bearer_auth(t);
            }
            let outcome = tokio::select! {
                r = req.send() => r,
                _ = stop.changed() => return,
            };
            let drop_front = match outcome {
                Ok(r) if r.status().is_success() => {
                    self.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .samples_sent
                        .fetch_add(samples, Ordering::Relaxed);
                    self.stats
                        .last_success_ms
                        .store(tsdb::now_ms(), Ordering::Relaxed);
                    backoff = Duration::from_secs(1);
                    true
                }
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tracing::error!(
                        "remote write: {} refused {samples} samples ({status}): {}; dropped",
                        self.config.url,
                        text.chars().take(300).collect::<String>()
                    );
                    self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                    true
                }
                other => {
                    let why = match other {
                        Ok(r) => r.status().to_string(),
                        Err(e) => agent::tls::error_chain(&e),
                    };
                    tracing::warn!(
                        "remote write: {}: {why}; retrying in {}s",
                        self.config.url,
                        backoff.as_secs()
                    );
                    self.stats.requests_retried.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    false
                }
            };
            if drop_front {
                let spool = self.spool.clone();
                let popped = tokio::task::spawn_blocking(move || spool.lock().pop_front()).await;
                if let Ok(Err(e)) = popped {
                    tracing::error!("remote write: removing a delivered request: {e}");
                }
            }
        }
    }
}

/// The samples of an encoded request (0 if it does not decode: it is ours, so it does).
fn count_samples(body: &[u8]) -> u64 {
    use prost::Message as _;
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .ok()
        .and_then(|raw| proto::WriteRequest::decode(raw.as_slice()).ok())
        .map_or(0, |r| {
            r.timeseries.iter().map(|t| t.samples.len() as u64).sum()
        })
}

impl tsdb::AppendSink for Forwarder {
    fn appended(&self, batch: &[tsdb::StoredSeries<'_>]) {
        let owned: Batch = batch
            .iter()
            .map(|(labels, samples)| {
                (
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    samples.clone(),
                )
            })
            .collect();
        let n: usize = batch.iter().map(|(_, s)| s.len()).sum();
        if self.tx.try_send(Msg::Batch(owned)).is_err() {
            self.stats
                .samples_dropped_behind
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
