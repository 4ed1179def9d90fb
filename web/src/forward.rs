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

/// Most samples in one request (and one record of the queue, each written and synced
/// on its own).
pub const MAX_SAMPLES_PER_REQUEST: usize = 50_000;

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

/// One append's stored samples (sharing the head's labels).
type Batch = Vec<tsdb::StoredSeries>;

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
        // The request, protobuf-encoded as it grows.
        let mut pending: Vec<u8> = Vec::new();
        let mut scratch: Vec<u8> = Vec::new();
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
                for s in &batch {
                    samples += s.samples.len();
                    encode_series(&mut pending, &mut scratch, s.labels(), &s.samples);
                }
                since.get_or_insert_with(Instant::now);
            }
            let due = since.is_some_and(|t| t.elapsed() >= self.config.flush_interval);
            if samples > 0 && (due || closed || samples >= MAX_SAMPLES_PER_REQUEST) {
                let body = snap::raw::Encoder::new()
                    .compress_vec(&pending)
                    .map_err(|e| std::io::Error::other(e.to_string()));
                match body.and_then(|b| self.spool.lock().push(&b)) {
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
                pending.clear();
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

/// Appends one `TimeSeries` (field 1 of `WriteRequest`) to `out`, encoded as
/// `collector::remote_write::proto` defines it, straight from the head's labels:
/// labels (field 1: `Label { name = 1, value = 2 }`), then samples (field 2:
/// `Sample { value = 1 (double), timestamp = 2 (int64) }`). Encoded here rather than
/// through the prost types so that forwarding copies no label into a `String`.
fn encode_series(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    labels: &tsdb::Labels,
    samples: &[tsdb::Sample],
) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    scratch.clear();
    for (name, value) in labels.iter() {
        let len = 1
            + varint_len(name.len() as u64)
            + name.len()
            + 1
            + varint_len(value.len() as u64)
            + value.len();
        encode_key(1, WireType::LengthDelimited, scratch);
        encode_varint(len as u64, scratch);
        encode_key(1, WireType::LengthDelimited, scratch);
        encode_varint(name.len() as u64, scratch);
        scratch.extend_from_slice(name.as_bytes());
        encode_key(2, WireType::LengthDelimited, scratch);
        encode_varint(value.len() as u64, scratch);
        scratch.extend_from_slice(value.as_bytes());
    }
    for smp in samples {
        // The timestamp as int64: negative values take ten bytes, as protobuf says.
        let ts = smp.t as u64;
        encode_key(2, WireType::LengthDelimited, scratch);
        encode_varint((1 + 8 + 1 + varint_len(ts)) as u64, scratch);
        encode_key(1, WireType::SixtyFourBit, scratch);
        scratch.extend_from_slice(&smp.v.to_bits().to_le_bytes());
        encode_key(2, WireType::Varint, scratch);
        encode_varint(ts, scratch);
    }
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(scratch.len() as u64, out);
    out.extend_from_slice(scratch);
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

impl tsdb::AppendSink for Forwarder {
    fn appended(&self, batch: Vec<tsdb::StoredSeries>) {
        let n: usize = batch.iter().map(|s| s.samples.len()).sum();
        if self.tx.try_send(Msg::Batch(batch)).is_err() {
            self.stats
                .samples_dropped_behind
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// The hand encoding decodes, with prost, to the request the prost types make.
    #[test]
    fn series_encode_like_the_prost_types() {
        let labels =
            tsdb::Labels::from_pairs([("__name__", "up"), ("job", "node"), ("z", "é")]).unwrap();
        let samples = [
            tsdb::Sample {
                t: 1_700_000_000_123,
                v: 1.5,
            },
            tsdb::Sample { t: -5, v: 0.0 },
            tsdb::Sample {
                t: 0,
                v: f64::from_bits(tsdb::STALE_NAN_BITS),
            },
        ];
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        encode_series(&mut out, &mut scratch, &labels, &samples);
        encode_series(&mut out, &mut scratch, &labels, &samples[..1]);
        let got = proto::WriteRequest::decode(out.as_slice()).unwrap();
        let series = |n: usize| proto::TimeSeries {
            labels: labels
                .iter()
                .map(|(k, v)| proto::Label {
                    name: k.into(),
                    value: v.into(),
                })
                .collect(),
            samples: samples[..n]
                .iter()
                .map(|s| proto::Sample {
                    value: s.v,
                    timestamp: s.t,
                })
                .collect(),
        };
        assert_eq!(got.timeseries.len(), 2);
        assert_eq!(got.timeseries[0].labels, series(3).labels);
        assert_eq!(got.timeseries[1], series(1));
        let bits: Vec<(u64, i64)> = got.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.value.to_bits(), s.timestamp))
            .collect();
        let want: Vec<(u64, i64)> = samples.iter().map(|s| (s.v.to_bits(), s.t)).collect();
        assert_eq!(
            bits, want,
            "values bit for bit, negative timestamps included"
        );
    }
}
