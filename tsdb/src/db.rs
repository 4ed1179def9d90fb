//! The database: the write-ahead log, the head and the blocks of one data directory,
//! and the background work that moves data between them.
//!
//! # Data directory
//! ```text
//! <data>/lock          held (flock) while a process has the directory open
//! <data>/wal/          write-ahead log segments
//! <data>/chunks_head/  memory-mapped full head chunks (a cache of the log)
//! <data>/blocks/<id>/  immutable blocks
//! <data>/quarantine/   files found corrupt, moved aside with their original name
//! ```
//!
//! # Life of a sample
//! [`Db::append`] checks each sample against the time window (retention behind, a small
//! tolerance ahead), stores it in the head and writes it to the log, all under the
//! commit lock, then answers. Every `flush_interval` (and on [`Db::flush`]) the head is
//! frozen: the log moves to a new segment and everything the head held becomes a
//! [`FrozenHead`] that readers still see; it is written into blocks (one per
//! `block_range` window it touches), which replace it atomically, and the log segments
//! from before the freeze are deleted. Compaction merges the blocks of a closed window
//! into one, level by level (2 h, 1 d, 7 d by default); retention drops whole blocks.
//!
//! # Consistency of reads
//! A reader reads the head first and then takes a snapshot of the blocks and frozen
//! heads (the "view"). Freezing moves data out of the head and publishes the frozen head
//! in one critical section under the view's write lock, so data is either still in the
//! head or already in the snapshot; where it is in both, equal timestamps are merged
//! (newer source wins), so a reader never sees a sample twice or misses one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::block::{Block, BlockWriter};
use crate::chunkenc::Encoding;
use crate::head::{FrozenHead, Head, HeadOptions, MemSeries, Outcome, Reject};
use crate::labels::Labels;
use crate::postings::IndexReader;
use crate::select::SelectedSeries;
use crate::wal::{self, SyncPolicy, Wal, record};
use crate::{Matcher, Sample, StorageError};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Settings of a database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data older than this (relative to now) is dropped, block by block, and refused.
    pub retention: Duration,
    /// When set, the oldest blocks are dropped while blocks and log exceed this size.
    pub max_bytes: Option<u64>,
    pub wal_sync: SyncPolicy,
    pub wal_segment_size: u64,
    /// The smallest block window (ms); larger levels are 1 d and 7 d, capped by retention/10.
    pub block_range_ms: i64,
    /// How often the head is written into blocks.
    pub flush_interval: Duration,
    /// Samples more than this far ahead of the clock are refused (ms).
    pub future_tolerance_ms: i64,
    /// Total out-of-order samples in the head that trigger an early flush.
    pub max_ooo_samples: u64,
    /// Bytes of head chunk files that trigger an early flush.
    pub max_head_chunk_bytes: usize,
    pub head: HeadOptions,
    /// Run flushing, compaction and retention in a background thread.
    pub background: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(15 * 24 * 3600),
            max_bytes: None,
            wal_sync: SyncPolicy::default(),
            wal_segment_size: wal::DEFAULT_SEGMENT_SIZE,
            block_range_ms: 2 * HOUR_MS,
            flush_interval: Duration::from_secs(15 * 60),
            future_tolerance_ms: 10 * 60 * 1000,
            max_ooo_samples: 4_000_000,
            max_head_chunk_bytes: 1 << 30,
            head: HeadOptions::default(),
            background: true,
        }
    }
}

/// Errors opening a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("{}: data directory is in use by another process", .0.display())]
    Locked(PathBuf),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Errors appending a batch. Rejected samples are not errors: see [`AppendReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The batch broke the label rules; nothing was stored.
    #[error("invalid labels: {0}")]
    InvalidLabels(String),
    /// The log could not be written: nothing of the batch is acknowledged, a retry can
    /// succeed.
    #[error("write-ahead log: {0}")]
    Wal(std::io::Error),
}

/// Errors reading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What happened to the samples of one [`Db::append`].
#[derive(Debug, Default, Clone)]
pub struct AppendReport {
    pub appended: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub rejected: Vec<(Reject, u64)>,
    /// The first rejected sample, described for the sender.
    pub first_rejection: Option<String>,
}

impl AppendReport {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    fn reject(&mut self, r: Reject) {
        match self.rejected.iter_mut().find(|(x, _)| *x == r) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((r, 1)),
        }
    }
}

/// One series and its samples, as returned by reads.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// Counters the server exports about the engine.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples_appended: AtomicU64,
    pub samples_out_of_order: AtomicU64,
    pub samples_duplicate: AtomicU64,
    pub rejected: [AtomicU64; 3],
    pub wal_corruptions: AtomicU64,
    pub wal_unknown_refs: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_failures: AtomicU64,
    pub quarantined: AtomicU64,
    pub blocks_deleted: AtomicU64,
}

/// A point-in-time summary for metrics and status pages.
#[derive(Debug, Clone)]
pub struct Stats {
    pub head_series: u64,
    pub head_ooo_samples: u64,
    pub head_chunk_bytes: usize,
    pub blocks: usize,
    pub block_bytes: u64,
    pub block_samples: u64,
    pub wal_bytes_written: u64,
    pub wal_disk_bytes: u64,
    pub min_time: Option<i64>,
}

struct WalWriter {
    wal: Wal,
    series_buf: Vec<u8>,
    series_count: usize,
    samples: Vec<(u64, Sample)>,
    framed: Vec<u8>,
}

#[derive(Clone, Default)]
struct View {
    /// Sorted by [`block_order`]: later entries win on equal timestamps.
    blocks: Vec<Arc<Block>>,
    frozen: Vec<Arc<FrozenHead>>,
}

struct Inner {
    dir: PathBuf,
    opts: Options,
    head: Head,
    /// The commit lock: the log writer and the order of head mutations.
    wal: Mutex<WalWriter>,
    view: RwLock<View>,
    /// Serialises flush, compaction and retention.
    maintenance: Mutex<()>,
    metrics: Metrics,
    last_flush: Mutex<Instant>,
    /// Told of every sample stored, once it is in the log ([`Db::set_sink`]).
    sink: std::sync::OnceLock<Arc<dyn AppendSink>>,
    _lock: File,
}

/// Something told of the samples each append stored (after they are in the log), such
/// as a forwarder to another store. Called outside the commit lock, once per append,
/// with each series' labels and the samples of it that were stored (rejected,
/// out-of-order and duplicate samples left out); it must not block for long.
pub trait AppendSink: Send + Sync {
    fn appended(&self, batch: Vec<StoredSeries>);
}

/// A series and the samples of it one append stored. It shares the head's copy of the
/// labels, so telling a sink costs no copy of them.
pub struct StoredSeries {
    series: Arc<crate::head::MemSeries>,
    /// The samples stored, in the order they were given.
    pub samples: Vec<Sample>,
}

impl StoredSeries {
    /// The series' labels.
    pub fn labels(&self) -> &Labels {
        &self.series.labels
    }
}

/// An open data directory.
pub struct Db {
    inner: Arc<Inner>,
    /// Background threads (maintenance, log sync): dropping a sender stops its thread.
    threads: Vec<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    closed: bool,
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn block_order(b: &Block) -> String {
    let m = b.meta();
    m.sources
        .iter()
        .max()
        .cloned()
        .unwrap_or_else(|| m.id.clone())
}

fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = File::create(&path).map_err(StorageError::io(&path))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(OpenError::Locked(dir.to_path_buf()));
    }
    Ok(f)
}

impl Db {
    /// Opens (creating if needed) the data directory `dir`: loads blocks (quarantining
    /// corrupt ones), replays the log into the head, and starts background work.
    pub fn open(dir: &Path, opts: Options) -> Result<Db, OpenError> {
        fs::create_dir_all(dir).map_err(StorageError::io(dir))?;
        let lock = lock_dir(dir)?;
        let metrics = Metrics::default();
        let blocks_dir = dir.join("blocks");
        fs::create_dir_all(&blocks_dir).map_err(StorageError::io(&blocks_dir))?;
        let mut blocks = Vec::new();
        let entries = fs::read_dir(&blocks_dir).map_err(StorageError::io(&blocks_dir))?;
        for e in entries {
            let e = e.map_err(StorageError::io(&blocks_dir))?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") || name.contains(".tmp") {
                let _ = fs::remove_dir_all(&p);
                continue;
            }
            if !p.is_dir() {
                continue;
            }
            match Block::open(&p) {
                Ok(b) => blocks.push(Arc::new(b)),
                Err(err) => {
                    tracing::error!(
                        "block {} is unreadable, quarantining it: {err}",
                        p.display()
                    );
                    quarantine(dir, &p);
                    metrics.quarantined.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        blocks.sort_by_cached_key(|b| block_order(b));

        let head = Head::new(&dir.join("chunks_head"), opts.head.clone())
            .map_err(StorageError::io(&dir.join("chunks_head")))?;
        let wal_dir = dir.join("wal");
        let started = Instant::now();
        let report = replay(&head, &wal_dir, &opts, &metrics)?;
        for c in &report.corruptions {
            tracing::error!(
                "{}: write-ahead log damaged at byte {}: {}; cut {} bytes",
                c.path.display(),
                c.offset,
                c.reason,
                c.bytes_dropped
            );
        }
        metrics
            .wal_corruptions
            .fetch_add(report.corruptions.len() as u64, Ordering::Relaxed);
        tracing::info!(
            segments = report.segments,
            records = report.records,
            series = head.num_series(),
            blocks = blocks.len(),
            "replayed write-ahead log in {:?}",
            started.elapsed()
        );
        let w = Wal::open(&wal_dir, opts.wal_segment_size).map_err(StorageError::io(&wal_dir))?;
        let background = opts.background;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts,
            head,
            wal: Mutex::new(WalWriter {
                wal: w,
                series_buf: Vec::new(),
                series_count: 0,
                samples: Vec::new(),
                framed: Vec::new(),
            }),
            view: RwLock::new(View {
                blocks,
                frozen: Vec::new(),
            }),
            maintenance: Mutex::new(()),
            metrics,
            last_flush: Mutex::new(Instant::now()),
            sink: std::sync::OnceLock::new(),
            _lock: lock,
        });
        let mut db = Db {
            inner,
            threads: Vec::new(),
            closed: false,
        };
        if background {
            db.start_background();
        }
        Ok(db)
    }

    fn start_background(&mut self) {
        let inner = self.inner.clone();
        self.spawn("tsdb-maintenance", Duration::from_secs(5), move || {
            inner.maintain()
        });
        if let SyncPolicy::Interval(every) = self.inner.opts.wal_sync {
            let inner = self.inner.clone();
            self.spawn("tsdb-wal-sync", every, move || {
                let f = inner.wal.lock().wal.sync_handle();
                if let Err(e) = f.sync_data() {
                    tracing::error!("syncing the write-ahead log: {e}");
                }
            });
        }
    }

    /// Runs `work` every `every` on a thread of its own until the database closes.
    fn spawn(&mut self, name: &str, every: Duration, work: impl Fn() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    work();
                }
            });
        match handle {
            Ok(h) => self.threads.push((tx, h)),
            Err(e) => tracing::error!("cannot start thread {name}: {e}"),
        }
    }

    fn stop_threads(&mut self) {
        for (tx, h) in self.threads.drain(..) {
            drop(tx);
            let _ = h.join();
        }
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stores a batch. Each item is a series' labels (sorted by name, unique, non-empty
    /// names and values) and its samples. Returns once every stored sample is in the
    /// log (and synced, under [`SyncPolicy::Always`]). Samples outside the time window are
    /// rejected and reported, the rest stored.
    pub fn append<'a, I>(&self, batch: I) -> Result<AppendReport, AppendError>
    where
        I: IntoIterator<Item = (&'a [(&'a str, &'a str)], &'a [Sample])>,
    {
        self.inner.append(batch)
    }

    /// Tells `sink` of every sample stored from now on. One sink per database; a
    /// second one is refused (returned).
    pub fn set_sink(&self, sink: Arc<dyn AppendSink>) -> Result<(), Arc<dyn AppendSink>> {
        self.inner.sink.set(sink)
    }

    /// Selects the series matching `ms` with their samples in `[mint, maxt]`, sorted by
    /// labels. Series with no samples in the range are left out.
    pub fn select(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, QueryError> {
        self.inner.select(ms, mint, maxt, true)
    }

    /// The in-memory head (for statistics).
    pub(crate) fn head(&self) -> &Head {
        &self.inner.head
    }

    /// The series matching `ms` that may have samples in `[mint, maxt]`, sorted by
    /// labels, with where their samples lie; nothing is decoded yet (see
    /// [`SelectedSeries::decode_into`]). A series whose chunks overlap the range without
    /// holding a sample in it decodes to nothing.
    pub fn select_lazy(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, QueryError> {
        self.inner.select_lazy(ms, mint, maxt)
    }

    /// Label sets of the series matching `ms` that have samples in `[mint, maxt]`.
    pub fn series(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Labels>, QueryError> {
        Ok(self
            .inner
            .select(ms, mint, maxt, false)?
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }

    /// Label names, of all series or of those matching `ms`, in `[mint, maxt]`.
    pub fn label_names(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, QueryError> {
        if ms.is_empty() {
            return self.inner.index_values(None, mint, maxt);
        }
        let mut set = std::collections::BTreeSet::new();
        for l in self.series(ms, mint, maxt)? {
            for (n, _) in l.iter() {
                if !set.contains(n) {
                    set.insert(n.to_string());
                }
            }
        }
        Ok(set.into_iter().collect())
    }

    /// Values of label `name`, of all series or of those matching `ms`, in `[mint, maxt]`.
    pub fn label_values(
        &self,
        name: &str,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, QueryError> {
        if ms.is_empty() {
            return self.inner.index_values(Some(name), mint, maxt);
        }
        let mut set = std::collections::BTreeSet::new();
        for l in self.series(ms, mint, maxt)? {
            if let Some(v) = l.get(name)
                && !set.contains(v)
            {
                set.insert(v.to_string());
            }
        }
        Ok(set.into_iter().collect())
    }

    /// Writes everything ingested so far into blocks (compressed, persistent) and
    /// returns when they are published.
    pub fn flush(&self) -> Result<(), StorageError> {
        let _m = self.inner.maintenance.lock();
        self.inner.flush()
    }

    /// Flushes, then merges every window's blocks into as few blocks as the levels allow,
    /// and returns when done.
    pub fn force_merge(&self) -> Result<(), StorageError> {
        let _m = self.inner.maintenance.lock();
        self.inner.flush()?;
        self.inner.compact(true)?;
        self.inner.apply_retention();
        Ok(())
    }

    /// Runs one round of background work now (flush if due, compaction, retention).
    pub fn maintain(&self) {
        self.inner.maintain();
    }

    /// A summary of what the engine holds.
    pub fn stats(&self) -> Stats {
        let view = self.inner.view.read().clone();
        let (wal_bytes_written, wal_disk_bytes) = {
            let w = self.inner.wal.lock();
            (w.wal.bytes_written(), 0)
        };
        let wal_disk_bytes = if wal_disk_bytes == 0 {
            dir_size(&self.inner.dir.join("wal"))
        } else {
            wal_disk_bytes
        };
        Stats {
            head_series: self.inner.head.num_series(),
            head_ooo_samples: self.inner.head.ooo_samples(),
            head_chunk_bytes: self.inner.head.chunk_file_bytes(),
            blocks: view.blocks.len(),
            block_bytes: view.blocks.iter().map(|b| b.size_bytes()).sum(),
            block_samples: view.blocks.iter().map(|b| b.meta().num_samples).sum(),
            wal_bytes_written,
            wal_disk_bytes,
            min_time: view.blocks.iter().map(|b| b.meta().min_time).min(),
        }
    }

    /// Stops background work, writes the head into blocks and closes the log.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.shutdown()
    }

    /// Drops the database without flushing the head or syncing the log, as a crash of
    /// the process would (what was written to the log stays there). For tests.
    pub fn abandon(mut self) {
        self.stop_threads();
        self.closed = true;
    }

    fn shutdown(&mut self) -> Result<(), StorageError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.stop_threads();
        let _m = self.inner.maintenance.lock();
        let res = self.inner.flush();
        let w = self.inner.wal.lock();
        w.wal
            .sync()
            .map_err(StorageError::io(&self.inner.dir.join("wal")))?;
        res
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("closing the database: {e}");
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Moves `path` into `<data>/quarantine/`, keeping its name.
fn quarantine(data: &Path, path: &Path) {
    let q = data.join("quarantine");
    let _ = fs::create_dir_all(&q);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "unknown".into());
    let target = q.join(format!("{name}.{}", now_ms()));
    match fs::rename(path, &target) {
        Ok(()) => tracing::error!("moved {} to {}", path.display(), target.display()),
        Err(e) => tracing::error!("cannot quarantine {}: {e}", path.display()),
    }
}

/// Replays the log in `dir` into the head.
fn replay(
    head: &Head,
    dir: &Path,
    opts: &Options,
    metrics: &Metrics,
) -> Result<wal::ReplayReport, StorageError> {
    let min_valid = now_ms().saturating_sub(opts.retention.as_millis() as i64);
    let mut refs: std::collections::HashMap<u64, Arc<MemSeries>> = std::collections::HashMap::new();
    let mut io_err = None;
    let report = wal::read_all(dir, true, |typ, payload| {
        let res = match typ {
            record::TYPE_SERIES => record::decode_series(payload, |r, pairs| {
                match Labels::from_pairs(pairs.iter().copied()) {
                    Ok(l) if !l.is_empty() => {
                        refs.insert(r, head.replay_series(r, l));
                    }
                    _ => {
                        metrics.wal_corruptions.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
            record::TYPE_SAMPLES => record::decode_samples(payload, |r, s| match refs.get(&r) {
                Some(series) if s.t >= min_valid => {
                    if let Err(e) = head.replay_sample(series, s) {
                        io_err.get_or_insert(e);
                    }
                }
                Some(_) => {}
                None => {
                    metrics.wal_unknown_refs.fetch_add(1, Ordering::Relaxed);
                }
            }),
            _ => Err(record::RecordError("unknown record type")),
        };
        if let Err(e) = res {
            tracing::error!("{}: skipping undecodable record: {e}", dir.display());
            metrics.wal_corruptions.fetch_add(1, Ordering::Relaxed);
        }
    })
    .map_err(StorageError::io(dir))?;
    if let Some(e) = io_err {
        return Err(StorageError::Io {
            path: dir.join("../chunks_head"),
            source: e,
        });
    }
    Ok(report)
}

fn check_pairs(pairs: &[(&str, &str)]) -> Result<(), AppendError> {
    if pairs.is_empty() {
        return Err(AppendError::InvalidLabels("series without labels".into()));
    }
    for (i, (n, v)) in pairs.iter().enumerate() {
        if n.is_empty() {
            return Err(AppendError::InvalidLabels("empty label name".into()));
        }
        if v.is_empty() {
            return Err(AppendError::InvalidLabels(format!(
                "label {n:?} has an empty value"
            )));
        }
        if i > 0 && pairs[i - 1].0 >= *n {
            return Err(AppendError::InvalidLabels(format!(
                "label names not sorted or duplicated: {:?} then {n:?}",
                pairs[i - 1].0
            )));
        }
    }
    Ok(())
}

/// A series of a batch, found or created in the head, with its labels and samples.
type Resolved<'a> = (Arc<MemSeries>, &'a [(&'a str, &'a str)], &'a [Sample]);

/// Records written per samples record, to keep records well under the size limit.
const SAMPLES_PER_RECORD: usize = 100_000;

impl Inner {
    fn append<'a, I>(&self, batch: I) -> Result<AppendReport, AppendError>
    where
        I: IntoIterator<Item = (&'a [(&'a str, &'a str)], &'a [Sample])>,
    {
        // Resolve series outside the commit lock: lookups run in parallel.
        let mut items: Vec<Resolved<'a>> = Vec::new();
        for (pairs, samples) in batch {
            check_pairs(pairs)?;
            if samples.is_empty() {
                continue;
            }
            let (s, _) = self.head.get_or_create(pairs);
            items.push((s, pairs, samples));
        }
        let now = now_ms();
        let max_t = now.saturating_add(self.opts.future_tolerance_ms);
        let min_t = now.saturating_sub(self.opts.retention.as_millis() as i64);
        let mut report = AppendReport::default();
        let mut w_guard = self.wal.lock();
        let w = &mut *w_guard;
        w.series_buf.clear();
        w.series_count = 0;
        w.samples.clear();
        w.framed.clear();
        let mut series_list: Vec<LoggedSeries> = Vec::new();
        let sink = self.sink.get();
        let mut stored: Vec<StoredSeries> = Vec::new();
        for (mut s, pairs, samples) in items {
            let first_stored = w.samples.len();
            if s.is_dead() {
                // Dropped by a freeze since it was resolved; resolve again (no freeze can
                // run while the commit lock is held).
                s = self.head.get_or_create(pairs).0;
            }
            let mut first_rej: Option<(Reject, Sample)> = None;
            self.head
                .append_series(
                    &s,
                    samples,
                    |ms| series_list.push(clone_labels(ms)),
                    |r, smp| w.samples.push((r, smp)),
                    |o| match o {
                        Outcome::Appended => report.appended += 1,
                        Outcome::OutOfOrder => report.out_of_order += 1,
                        Outcome::Duplicate => report.duplicates += 1,
                        Outcome::Rejected(r) => report.reject(r),
                    },
                    |smp| {
                        let r = if smp.t > max_t {
                            Some(Reject::TooFarInFuture)
                        } else if smp.t < min_t {
                            Some(Reject::TooOld)
                        } else {
                            None
                        };
                        if let Some(r) = r {
                            first_rej.get_or_insert((r, *smp));
                        }
                        r
                    },
                )
                .map_err(AppendError::Wal)?;
            if sink.is_some() && w.samples.len() > first_stored {
                stored.push(StoredSeries {
                    series: s.clone(),
                    samples: w.samples[first_stored..]
                        .iter()
                        .map(|(_, smp)| *smp)
                        .collect(),
                });
            }
            if report.first_rejection.is_none()
                && let Some((r, smp)) = first_rej
            {
                report.first_rejection = Some(format!(
                    "{}: sample at {} rejected: {}",
                    s.labels,
                    smp.t,
                    r.as_str().replace('_', " ")
                ));
            }
        }
        if !series_list.is_empty() {
            record::encode_series(
                &mut w.series_buf,
                series_list.iter().map(|m| (m.r, &m.labels)),
            );
            wal::frame(&mut w.framed, record::TYPE_SERIES, &w.series_buf);
        }
        let mut payload = Vec::new();
        for chunk in w.samples.chunks(SAMPLES_PER_RECORD) {
            payload.clear();
            record::encode_samples(&mut payload, chunk);
            wal::frame(&mut w.framed, record::TYPE_SAMPLES, &payload);
        }
        w.wal.write(&w.framed).map_err(AppendError::Wal)?;
        let sync = (self.opts.wal_sync == SyncPolicy::Always && !w.framed.is_empty())
            .then(|| w.wal.sync_handle());
        drop(w_guard);
        if let Some(f) = sync {
            // Outside the commit lock: batches committed meanwhile share this sync.
            f.sync_data().map_err(AppendError::Wal)?;
        }
        if let Some(sink) = sink
            && !stored.is_empty()
        {
            sink.appended(stored);
        }
        let m = &self.metrics;
        m.samples_appended
            .fetch_add(report.appended, Ordering::Relaxed);
        m.samples_out_of_order
            .fetch_add(report.out_of_order, Ordering::Relaxed);
        m.samples_duplicate
            .fetch_add(report.duplicates, Ordering::Relaxed);
        for (r, n) in &report.rejected {
            let i = Reject::ALL.iter().position(|x| x == r).unwrap_or(0);
            m.rejected[i].fetch_add(*n, Ordering::Relaxed);
        }
        Ok(report)
    }

    fn select(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        with_samples: bool,
    ) -> Result<Vec<SeriesSamples>, QueryError> {
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        let selected = self.select_lazy(ms, mint, maxt)?;
        for s in selected {
            s.decode_into(mint, maxt, &mut buf, &mut scratch)?;
            if buf.is_empty() {
                continue;
            }
            out.push(SeriesSamples {
                labels: s.labels,
                samples: if with_samples {
                    std::mem::take(&mut buf)
                } else {
                    Vec::new()
                },
            });
        }
        self.quarantine_damaged();
        Ok(out)
    }

    /// Moves blocks that a read found damaged to quarantine.
    fn quarantine_damaged(&self) {
        let damaged: Vec<Arc<Block>> = self
            .view
            .read()
            .blocks
            .iter()
            .filter(|b| b.is_damaged())
            .cloned()
            .collect();
        for b in &damaged {
            self.quarantine_block(b);
        }
    }

    fn select_lazy(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, QueryError> {
        self.quarantine_damaged();
        // Head first, then the view: see the module docs. Parts are gathered in the
        // order in which they win on equal timestamps: blocks, frozen heads, the head.
        let mut head_part = Vec::new();
        for r in self.head.select_refs(ms)? {
            if let Some(s) = self.head.series(r)
                && let Some(snap) = self.head.snapshot(&s, mint, maxt)?
            {
                let mut sel = SelectedSeries::new(s.labels.clone());
                sel.push_head(snap);
                head_part.push(sel);
            }
        }
        let view = self.view.read().clone();
        let mut all: Vec<SelectedSeries> = Vec::new();
        let mut sources = 0;
        for b in view.blocks.iter() {
            let m = b.meta();
            if m.max_time < mint || m.min_time > maxt {
                continue;
            }
            match b.select_chunks(ms, mint, maxt) {
                Ok(list) => {
                    sources += usize::from(!list.is_empty());
                    for (l, chunks) in list {
                        let mut sel = SelectedSeries::new(l);
                        sel.push_block(b.clone(), chunks);
                        all.push(sel);
                    }
                }
                Err(e) => {
                    tracing::error!("reading block {}: {e}", b.dir().display());
                    self.quarantine_block(b);
                }
            }
        }
        for f in view.frozen.iter() {
            if f.max_t < mint || f.min_t > maxt {
                continue;
            }
            let before = all.len();
            for (idx, s) in f.series.iter().enumerate() {
                if !FrozenHead::overlaps(s, mint, maxt)
                    || !ms
                        .iter()
                        .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
                {
                    continue;
                }
                let mut sel = SelectedSeries::new(s.labels.clone());
                sel.push_frozen(f.clone(), idx);
                all.push(sel);
            }
            sources += usize::from(all.len() > before);
        }
        if !head_part.is_empty() {
            head_part.sort_by(|a, b| a.labels.cmp(&b.labels));
            sources += 1;
        }
        all.extend(head_part);
        if sources > 1 || !all.is_sorted_by(|a, b| a.labels < b.labels) {
            // Stable: parts of one series stay in the order they win in.
            all.sort_by(|a, b| a.labels.cmp(&b.labels));
            let mut merged: Vec<SelectedSeries> = Vec::with_capacity(all.len());
            for s in all {
                match merged.last_mut() {
                    Some(last) if last.labels == s.labels => last.append_parts(s),
                    _ => merged.push(s),
                }
            }
            all = merged;
        }
        Ok(all)
    }

    /// Label names (`name == None`) or values of `name` from the indexes, for data in
    /// `[mint, maxt]` (block-granular: a block overlapping the range counts whole).
    fn index_values(
        &self,
        name: Option<&str>,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, QueryError> {
        let mut set = std::collections::BTreeSet::new();
        let get = |r: &dyn IndexReader| match name {
            Some(n) => r.label_values(n),
            None => r.label_names(),
        };
        set.extend(get(&self.head)?);
        let view = self.view.read().clone();
        for b in view.blocks.iter() {
            let m = b.meta();
            if m.max_time < mint || m.min_time > maxt {
                continue;
            }
            set.extend(get(b.index())?);
        }
        for f in view.frozen.iter() {
            for s in &f.series {
                match name {
                    Some(n) => set.extend(s.labels.get(n).map(|v| v.to_string())),
                    None => set.extend(s.labels.iter().map(|(n, _)| n.to_string())),
                }
            }
        }
        Ok(set.into_iter().collect())
    }

    fn quarantine_block(&self, b: &Arc<Block>) {
        let mut v = self.view.write();
        let before = v.blocks.len();
        v.blocks.retain(|x| !Arc::ptr_eq(x, b));
        if v.blocks.len() != before {
            quarantine(&self.dir, b.dir());
            self.metrics.quarantined.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn maintain(&self) {
        let _m = self.maintenance.lock();
        let due = self.last_flush.lock().elapsed() >= self.opts.flush_interval
            || self.head.ooo_samples() >= self.opts.max_ooo_samples
            || self.head.chunk_file_bytes() >= self.opts.max_head_chunk_bytes;
        if due && let Err(e) = self.flush() {
            tracing::error!("writing the head into blocks: {e}");
        }
        self.quarantine_damaged();
        if let Err(e) = self.compact(false) {
            tracing::error!("compaction: {e}");
        }
        self.apply_retention();
    }

    /// Freezes the head and writes it into blocks. The caller holds `maintenance`.
    fn flush(&self) -> Result<(), StorageError> {
        *self.last_flush.lock() = Instant::now();
        let wal_dir = self.dir.join("wal");
        let (frozen, first_kept_segment) = {
            let mut w = self.wal.lock();
            let seg = w.wal.rotate().map_err(StorageError::io(&wal_dir))?;
            let mut v = self.view.write();
            let f = Arc::new(self.head.freeze());
            v.frozen.push(f.clone());
            (f, seg)
        };
        let res = self.write_frozen(&frozen);
        match res {
            Ok(new_blocks) => {
                {
                    let mut v = self.view.write();
                    v.frozen.retain(|x| !Arc::ptr_eq(x, &frozen));
                    v.blocks.extend(new_blocks);
                    v.blocks.sort_by_cached_key(|b| block_order(b));
                }
                self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
                // Older frozen heads (from failed flushes) still need their segments.
                if self.view.read().frozen.is_empty() {
                    let w = self.wal.lock();
                    w.wal
                        .truncate_before(first_kept_segment)
                        .map_err(StorageError::io(&wal_dir))?;
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.flush_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Writes a frozen head into one block per `block_range` window it touches.
    fn write_frozen(&self, f: &FrozenHead) -> Result<Vec<Arc<Block>>, StorageError> {
        if f.is_empty() {
            return Ok(Vec::new());
        }
        let blocks_dir = self.dir.join("blocks");
        let range = self.opts.block_range_ms.max(1);
        let mut writers: BTreeMap<i64, BlockWriter> = BTreeMap::new();
        let mut encoded: Vec<(i64, i64, Vec<u8>, u16, Encoding)> = Vec::new();
        for s in &f.series {
            let samples = f.samples(s, i64::MIN, i64::MAX)?;
            let mut i = 0;
            while i < samples.len() {
                let w = samples[i].t.div_euclid(range);
                let end = samples[i..]
                    .iter()
                    .position(|x| x.t.div_euclid(range) != w)
                    .map_or(samples.len(), |p| i + p);
                encoded.clear();
                // Blocks are immutable: each chunk gets the smallest lossless encoding,
                // in the same chunk size as compaction writes.
                for chunk in samples[i..end].chunks(crate::compact::MERGED_CHUNK_SAMPLES) {
                    let (enc, bytes) = crate::chunkenc::encode_best(chunk);
                    let (lo, hi) = (chunk[0].t, chunk[chunk.len() - 1].t);
                    encoded.push((lo, hi, bytes, chunk.len() as u16, enc));
                }
                let writer = match writers.entry(w) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let lo = w.saturating_mul(range);
                        v.insert(BlockWriter::new(
                            &blocks_dir,
                            lo,
                            lo.saturating_add(range - 1),
                        )?)
                    }
                };
                let refs: Vec<(i64, i64, u8, u16, &[u8])> = encoded
                    .iter()
                    .map(|(lo, hi, b, n, enc)| (*lo, *hi, *enc as u8, *n, b.as_slice()))
                    .collect();
                writer.add_series(&s.labels, &refs)?;
                i = end;
            }
        }
        let mut out = Vec::new();
        for (_, w) in writers {
            let meta = w.finish(0, Vec::new())?;
            out.push(Arc::new(Block::open(&blocks_dir.join(&meta.id))?));
        }
        Ok(out)
    }

    /// Window sizes of the compaction levels.
    fn levels(&self) -> Vec<i64> {
        let base = self.opts.block_range_ms.max(1);
        let cap = (self.opts.retention.as_millis() as i64 / 10).max(base);
        let mut v = vec![base];
        for r in [DAY_MS, 7 * DAY_MS] {
            if r > base && r <= cap {
                v.push(r);
            }
        }
        v
    }

    /// Merges the blocks of each closed window (all windows when `force`), level by level.
    fn compact(&self, force: bool) -> Result<(), StorageError> {
        let now = now_ms();
        let base = self.opts.block_range_ms.max(1);
        let grace = self.opts.flush_interval.as_millis() as i64 + base;
        for range in self.levels() {
            loop {
                let blocks = self.view.read().blocks.clone();
                let mut groups: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
                for b in blocks {
                    let m = b.meta();
                    let w = m.min_time.div_euclid(range);
                    if m.max_time.div_euclid(range) == w {
                        groups.entry(w).or_default().push(b);
                    }
                }
                let pick = groups.into_iter().find(|(w, g)| {
                    let end = (w + 1).saturating_mul(range);
                    g.len() > 1 && (force || end.saturating_add(grace) <= now)
                });
                let Some((_, group)) = pick else { break };
                let refs: Vec<&Block> = group.iter().map(|b| b.as_ref()).collect();
                let meta = match crate::compact::merge_blocks(&self.dir.join("blocks"), &refs) {
                    Ok(m) => m,
                    Err(e) => {
                        self.metrics
                            .compaction_failures
                            .fetch_add(1, Ordering::Relaxed);
                        if e.is_corruption() {
                            let bad = group
                                .iter()
                                .find(|b| e.path().is_some_and(|p| p.starts_with(b.dir())));
                            if let Some(b) = bad {
                                tracing::error!("compaction found a corrupt block: {e}");
                                self.quarantine_block(b);
                                continue;
                            }
                        }
                        return Err(e);
                    }
                };
                let merged = Arc::new(Block::open(&self.dir.join("blocks").join(&meta.id))?);
                {
                    let mut v = self.view.write();
                    v.blocks
                        .retain(|x| !group.iter().any(|g| Arc::ptr_eq(g, x)));
                    v.blocks.push(merged);
                    v.blocks.sort_by_cached_key(|b| block_order(b));
                }
                for b in &group {
                    if let Err(e) = fs::remove_dir_all(b.dir()) {
                        tracing::warn!("{}: cannot remove compacted block: {e}", b.dir().display());
                    }
                }
                self.metrics.compactions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Drops blocks wholly older than the retention window, then the oldest blocks while
    /// the size limit is exceeded.
    fn apply_retention(&self) {
        let cutoff = now_ms().saturating_sub(self.opts.retention.as_millis() as i64);
        let blocks = self.view.read().blocks.clone();
        let mut drop: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| b.meta().max_time < cutoff)
            .cloned()
            .collect();
        if let Some(limit) = self.opts.max_bytes {
            let mut by_age: Vec<Arc<Block>> = blocks
                .iter()
                .filter(|b| !drop.iter().any(|d| Arc::ptr_eq(d, b)))
                .cloned()
                .collect();
            by_age.sort_by_key(|b| b.meta().min_time);
            let mut total: u64 = by_age.iter().map(|b| b.size_bytes()).sum::<u64>()
                + dir_size(&self.dir.join("wal"));
            for b in by_age {
                if total <= limit {
                    break;
                }
                total = total.saturating_sub(b.size_bytes());
                drop.push(b);
            }
        }
        if drop.is_empty() {
            return;
        }
        {
            let mut v = self.view.write();
            v.blocks.retain(|x| !drop.iter().any(|d| Arc::ptr_eq(d, x)));
        }
        for b in drop {
            tracing::info!("retention: deleting block {}", b.dir().display());
            if let Err(e) = fs::remove_dir_all(b.dir()) {
                tracing::warn!("{}: cannot remove block: {e}", b.dir().display());
            }
            self.metrics.blocks_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn clone_labels(s: &MemSeries) -> LoggedSeries {
    LoggedSeries {
        r: s.r,
        labels: s.labels.clone(),
    }
}

/// A series whose labels go into the log with the current batch.
struct LoggedSeries {
    r: u64,
    labels: Labels,
}
