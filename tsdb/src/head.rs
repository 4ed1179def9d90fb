//! The head: the most recent data of every active series, in memory.
//!
//! Each series keeps one open chunk (Gorilla-encoded, appended in place), the list of
//! its full chunks (in memory-mapped files, see `head/chunks.rs`) and a small sorted
//! buffer of out-of-order samples. Series are found by the hash of their labels in one
//! of [`SHARDS`] shards, each behind its own lock, so lookups from concurrent writers
//! and readers rarely meet; an inverted index (label pair → series refs) serves
//! matchers.
//!
//! The head does not decide durability: the database writes the log and calls
//! [`Head::append_series`] under its commit lock, so the order of samples in the head
//! is the order in the log, and a replay rebuilds exactly this state.
//!
//! # Sample policy (per series)
//! - a timestamp after the latest one is appended to the open chunk;
//! - the same timestamp and the same value bits as a sample already held is a
//!   *duplicate*: dropped and counted, not an error (a sender's retry is harmless);
//! - any other sample at or before the latest timestamp is *out of order*: it goes to the
//!   series' out-of-order buffer and replaces a held sample with the same timestamp
//!   (the last write wins), up to [`HeadOptions::max_ooo_per_series`] samples; past that it
//!   is rejected with [`Reject::OutOfOrderFull`]. Backfilling a series' history is the
//!   normal use of this path.
//!
//! The database rejects samples outside the retention window or too far in the future
//! before they reach the head.

pub mod chunks;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::chunkenc::{Encoding, SampleIter, XorAppender};
use crate::labels::{Labels, hash_pairs};
use crate::{Sample, StorageError};
use chunks::{ChunkFile, HeadChunkRef, HeadChunks};

/// Number of shards of the series map (a power of two).
pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// Samples in a full head chunk.
pub const SAMPLES_PER_CHUNK: usize = 120;

type FoldMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Tunables of the head.
#[derive(Debug, Clone)]
pub struct HeadOptions {
    /// Out-of-order samples one series may hold in memory before further ones are refused.
    pub max_ooo_per_series: usize,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            max_ooo_per_series: 65_536,
        }
    }
}

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Later than the accepted future window.
    TooFarInFuture,
    /// Older than the retention window.
    TooOld,
    /// The series' out-of-order buffer is full.
    OutOfOrderFull,
}

impl Reject {
    pub const ALL: [Reject; 3] = [
        Reject::TooFarInFuture,
        Reject::TooOld,
        Reject::OutOfOrderFull,
    ];

    /// The reason as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooFarInFuture => "too_far_in_future",
            Reject::TooOld => "too_old",
            Reject::OutOfOrderFull => "out_of_order_buffer_full",
        }
    }
}

/// What happened to one sample offered to a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Appended,
    OutOfOrder,
    Duplicate,
    Rejected(Reject),
}

#[derive(Debug, Clone, Copy)]
struct FullChunk {
    min_t: i64,
    max_t: i64,
    r: HeadChunkRef,
}

/// The mutable part of a series.
struct SeriesData {
    full: Vec<FullChunk>,
    open: Option<XorAppender>,
    ooo: Vec<Sample>,
    /// Latest in-order timestamp and value bits; `i64::MIN` when none yet.
    last_t: i64,
    last_bits: u64,
    /// Head epoch in which this series' labels were last written to the log.
    logged_epoch: u64,
    /// Whether anything was stored since the head was last frozen.
    dirty: bool,
}

/// One series of the head.
pub struct MemSeries {
    pub labels: Labels,
    pub r: u64,
    data: Mutex<SeriesData>,
    /// Set when [`Head::freeze`] drops the series; a writer that resolved it earlier
    /// must resolve the labels again.
    dead: std::sync::atomic::AtomicBool,
}

impl MemSeries {
    /// Whether the series was dropped from the head.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Shard {
    by_hash: FoldMap<u64, Arc<MemSeries>>,
    /// Series whose label hash collides with another's (rare).
    collisions: FoldMap<u64, Vec<Arc<MemSeries>>>,
    by_ref: FoldMap<u64, Arc<MemSeries>>,
}

impl Shard {
    fn find(&self, hash: u64, eq: impl Fn(&Labels) -> bool) -> Option<&Arc<MemSeries>> {
        match self.by_hash.get(&hash) {
            Some(s) if eq(&s.labels) => Some(s),
            Some(_) => self.collisions.get(&hash)?.iter().find(|s| eq(&s.labels)),
            None => None,
        }
    }

    fn insert(&mut self, hash: u64, s: Arc<MemSeries>) {
        self.by_ref.insert(s.r, s.clone());
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(hash) {
            e.insert(s);
        } else {
            self.collisions.entry(hash).or_default().push(s);
        }
    }

    fn remove(&mut self, hash: u64, r: u64) {
        self.by_ref.remove(&r);
        if self.by_hash.get(&hash).is_some_and(|s| s.r == r) {
            self.by_hash.remove(&hash);
            if let Some(list) = self.collisions.get_mut(&hash) {
                if let Some(s) = list.pop() {
                    self.by_hash.insert(hash, s);
                }
                if list.is_empty() {
                    self.collisions.remove(&hash);
                }
            }
        } else if let Some(list) = self.collisions.get_mut(&hash) {
            list.retain(|s| s.r != r);
            if list.is_empty() {
                self.collisions.remove(&hash);
            }
        }
    }
}

/// Inverted index of the head: label name → value → sorted series refs.
#[derive(Default)]
struct MemPostings {
    map: HashMap<Box<str>, HashMap<Box<str>, Vec<u64>>>,
}

impl MemPostings {
    fn add(&mut self, labels: &Labels, r: u64) {
        for (n, v) in labels.iter() {
            let values = match self.map.get_mut(n) {
                Some(m) => m,
                None => self.map.entry(n.into()).or_default(),
            };
            let list = match values.get_mut(v) {
                Some(l) => l,
                None => values.entry(v.into()).or_default(),
            };
            // Refs grow monotonically, except during replay, which may revisit them.
            match list.last() {
                Some(&last) if last >= r => {
                    if let Err(i) = list.binary_search(&r) {
                        list.insert(i, r);
                    }
                }
                _ => list.push(r),
            }
        }
    }

    fn remove_all(&mut self, gone: &std::collections::HashSet<u64>) {
        for values in self.map.values_mut() {
            for list in values.values_mut() {
                list.retain(|r| !gone.contains(r));
            }
            values.retain(|_, l| !l.is_empty());
        }
        self.map.retain(|_, v| !v.is_empty());
    }
}

/// The in-memory head.
pub struct Head {
    opts: HeadOptions,
    shards: Box<[RwLock<Shard>]>,
    next_ref: AtomicU64,
    postings: RwLock<MemPostings>,
    chunks: HeadChunks,
    epoch: AtomicU64,
    num_series: AtomicU64,
    ooo_samples: AtomicU64,
}

fn shard_of(hash: u64) -> usize {
    (hash as usize) & (SHARDS - 1)
}

impl Head {
    /// Creates an empty head whose full chunks go to `chunks_dir`.
    pub fn new(chunks_dir: &std::path::Path, opts: HeadOptions) -> std::io::Result<Head> {
        Ok(Head {
            opts,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            next_ref: AtomicU64::new(1),
            postings: RwLock::new(MemPostings::default()),
            chunks: HeadChunks::open(chunks_dir)?,
            epoch: AtomicU64::new(1),
            num_series: AtomicU64::new(0),
            ooo_samples: AtomicU64::new(0),
        })
    }

    /// Number of series in the head.
    pub fn num_series(&self) -> u64 {
        self.num_series.load(Ordering::Relaxed)
    }

    /// Chunks held (full and open) and the time range of the samples held. Walks every
    /// series: O(series).
    pub fn stats(&self) -> crate::status::HeadStats {
        let mut chunks = 0u64;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for shard in self.shards.iter() {
            let sh = shard.read();
            for s in sh.by_ref.values() {
                let d = s.data.lock();
                chunks += d.full.len() as u64;
                for c in &d.full {
                    lo = lo.min(c.min_t);
                    hi = hi.max(c.max_t);
                }
                if let Some(o) = &d.open
                    && let (Some(first), Some((last, _))) = (o.first_t(), o.last())
                {
                    chunks += 1;
                    lo = lo.min(first);
                    hi = hi.max(last);
                }
                if let (Some(a), Some(b)) = (d.ooo.first(), d.ooo.last()) {
                    lo = lo.min(a.t);
                    hi = hi.max(b.t);
                }
            }
        }
        crate::status::HeadStats {
            chunks,
            time_range: (lo <= hi).then_some((lo, hi)),
        }
    }

    /// Out-of-order samples currently buffered.
    pub fn ooo_samples(&self) -> u64 {
        self.ooo_samples.load(Ordering::Relaxed)
    }

    /// Bytes in this generation's head chunk files.
    pub fn chunk_file_bytes(&self) -> usize {
        self.chunks.bytes()
    }

    /// The current log epoch (see [`Head::freeze`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Finds the series with these labels (sorted by name, unique, non-empty), creating
    /// it if needed. Returns the series and whether it was created.
    pub fn get_or_create(&self, pairs: &[(&str, &str)]) -> (Arc<MemSeries>, bool) {
        let hash = hash_pairs(pairs.iter().copied());
        let shard = &self.shards[shard_of(hash)];
        if let Some(s) = shard
            .read()
            .find(hash, |l| l.eq_pairs(pairs.iter().copied()))
        {
            return (s.clone(), false);
        }
        let labels = Labels::from_sorted_unchecked(pairs.iter().copied());
        self.insert_labels(hash, labels, None)
    }

    /// Finds or creates the series for `labels`; `want_ref` forces the ref (replay).
    fn insert_labels(
        &self,
        hash: u64,
        labels: Labels,
        want_ref: Option<u64>,
    ) -> (Arc<MemSeries>, bool) {
        let shard_idx = shard_of(hash);
        let mut shard = self.shards[shard_idx].write();
        if let Some(s) = shard.find(hash, |l| *l == labels) {
            return (s.clone(), false);
        }
        let r = match want_ref {
            Some(r) if shard_of_ref(r) == shard_idx && !shard.by_ref.contains_key(&r) => {
                self.next_ref
                    .fetch_max((r >> SHARD_BITS) + 1, Ordering::Relaxed);
                r
            }
            _ => (self.next_ref.fetch_add(1, Ordering::Relaxed) << SHARD_BITS) | shard_idx as u64,
        };
        let s = Arc::new(MemSeries {
            labels,
            r,
            data: Mutex::new(SeriesData {
                full: Vec::new(),
                open: None,
                ooo: Vec::new(),
                last_t: i64::MIN,
                last_bits: 0,
                logged_epoch: 0,
                dirty: false,
            }),
            dead: std::sync::atomic::AtomicBool::new(false),
        });
        shard.insert(hash, s.clone());
        drop(shard);
        self.postings.write().add(&s.labels, r);
        self.num_series.fetch_add(1, Ordering::Relaxed);
        (s, true)
    }

    /// Re-creates a series from a log record. Returns the series now holding these labels
    /// (its ref may differ from `r` if the labels were seen under another ref).
    pub fn replay_series(&self, r: u64, labels: Labels) -> Arc<MemSeries> {
        let hash = labels.stable_hash();
        self.insert_labels(hash, labels, Some(r)).0
    }

    /// The series with ref `r`.
    pub fn series(&self, r: u64) -> Option<Arc<MemSeries>> {
        self.shards[shard_of_ref(r)].read().by_ref.get(&r).cloned()
    }

    /// Stores samples into one series. `log_series` is called first if the series'
    /// labels are not in the log of the current epoch yet (and any sample is stored);
    /// `log_sample` for each stored sample. Returns what happened to each sample via
    /// `outcome`.
    pub fn append_series(
        &self,
        s: &MemSeries,
        samples: &[Sample],
        mut log_series: impl FnMut(&MemSeries),
        mut log_sample: impl FnMut(u64, Sample),
        mut outcome: impl FnMut(Outcome),
        mut filter: impl FnMut(&Sample) -> Option<Reject>,
    ) -> std::io::Result<()> {
        let epoch = self.epoch();
        let mut d = s.data.lock();
        for smp in samples {
            if let Some(rej) = filter(smp) {
                outcome(Outcome::Rejected(rej));
                continue;
            }
            let o = self.add_sample(&mut d, *smp)?;
            if matches!(o, Outcome::Appended | Outcome::OutOfOrder) {
                if d.logged_epoch != epoch {
                    log_series(s);
                    d.logged_epoch = epoch;
                }
                d.dirty = true;
                log_sample(s.r, *smp);
            }
            outcome(o);
        }
        Ok(())
    }

    /// Stores one replayed sample (no logging, no filtering).
    pub fn replay_sample(&self, s: &MemSeries, smp: Sample) -> std::io::Result<Outcome> {
        let mut d = s.data.lock();
        let o = self.add_sample(&mut d, smp)?;
        if matches!(o, Outcome::Appended | Outcome::OutOfOrder) {
            d.dirty = true;
        }
        Ok(o)
    }

    fn add_sample(&self, d: &mut SeriesData, s: Sample) -> std::io::Result<Outcome> {
        let bits = s.v.to_bits();
        if d.last_t == i64::MIN || s.t > d.last_t {
            let open = d.open.get_or_insert_with(XorAppender::new);
            open.append(s.t, s.v);
            if open.num_samples() >= SAMPLES_PER_CHUNK {
                self.cut_chunk(d)?;
            }
            d.last_t = s.t;
            d.last_bits = bits;
            return Ok(Outcome::Appended);
        }
        // A sample already overridden out of order: the override is what reads see, so
        // it decides (the in-order value below may differ from it).
        if let Ok(i) = d.ooo.binary_search_by(|x| x.t.cmp(&s.t)) {
            if d.ooo[i].v.to_bits() == bits {
                return Ok(Outcome::Duplicate);
            }
            d.ooo[i] = s;
            return Ok(Outcome::OutOfOrder);
        }
        if s.t == d.last_t && bits == d.last_bits {
            return Ok(Outcome::Duplicate);
        }
        // An exact copy of a sample still in the open chunk is a duplicate too.
        if let Some(open) = &d.open
            && open.first_t().is_some_and(|f| s.t >= f)
            && let Ok(it) = SampleIter::new(Encoding::Xor, open.bytes())
        {
            for x in it.flatten() {
                if x.t == s.t && x.v.to_bits() == bits {
                    return Ok(Outcome::Duplicate);
                }
                if x.t > s.t {
                    break;
                }
            }
        }
        if d.ooo.len() >= self.opts.max_ooo_per_series {
            return Ok(Outcome::Rejected(Reject::OutOfOrderFull));
        }
        // No buffered sample has this timestamp (checked above).
        let i = d.ooo.partition_point(|x| x.t < s.t);
        d.ooo.insert(i, s);
        self.ooo_samples.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::OutOfOrder)
    }

    fn cut_chunk(&self, d: &mut SeriesData) -> std::io::Result<()> {
        let Some(open) = d.open.take() else {
            return Ok(());
        };
        let (Some(min_t), Some((max_t, _))) = (open.first_t(), open.last()) else {
            return Ok(());
        };
        let n = open.num_samples() as u16;
        let r = self.chunks.write(Encoding::Xor, n, open.bytes())?;
        d.full.push(FullChunk { min_t, max_t, r });
        Ok(())
    }

    /// Series refs matching `ms`, sorted.
    pub fn select_refs(&self, ms: &[crate::Matcher]) -> Result<Vec<u64>, StorageError> {
        crate::postings::postings_for_matchers(self, ms)
    }

    /// What series `s` holds in `[mint, maxt]`, captured under its lock for decoding
    /// later without it; `None` when nothing it holds overlaps the range.
    pub fn snapshot(
        &self,
        s: &MemSeries,
        mint: i64,
        maxt: i64,
    ) -> Result<Option<HeadSeriesSnapshot>, StorageError> {
        let d = s.data.lock();
        let mut full = Vec::new();
        for c in &d.full {
            if c.max_t < mint || c.min_t > maxt {
                continue;
            }
            let f = self.chunks.file(c.r).ok_or_else(|| StorageError::Corrupt {
                path: "chunks_head".into(),
                msg: format!("head chunk file {} missing", c.r.file()),
            })?;
            full.push((f, c.r));
        }
        let open = d.open.as_ref().and_then(|o| {
            let (first, (last, _)) = (o.first_t()?, o.last()?);
            (first <= maxt && last >= mint).then(|| o.bytes().to_vec())
        });
        let ooo: Vec<Sample> = d
            .ooo
            .iter()
            .filter(|x| x.t >= mint && x.t <= maxt)
            .copied()
            .collect();
        if full.is_empty() && open.is_none() && ooo.is_empty() {
            return Ok(None);
        }
        Ok(Some(HeadSeriesSnapshot { full, open, ooo }))
    }

    /// The samples of series `s` in `[mint, maxt]`, out-of-order ones merged in.
    pub fn series_samples(
        &self,
        s: &MemSeries,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Sample>, StorageError> {
        let mut out = Vec::new();
        if let Some(snap) = self.snapshot(s, mint, maxt)? {
            snap.decode(mint, maxt, &mut out)?;
        }
        Ok(out)
    }

    /// Moves every sample held into a [`FrozenHead`] and starts a new log epoch: from
    /// now on every series writes its labels to the log again before its next sample,
    /// so the log segments written before the freeze can be deleted once the frozen data
    /// is in a block. Series that stored nothing since the previous freeze are dropped.
    ///
    /// The caller holds the commit lock, so no append runs concurrently.
    pub fn freeze(&self) -> FrozenHead {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut series = Vec::new();
        let mut gone = std::collections::HashSet::new();
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        for shard in self.shards.iter() {
            let mut sh = shard.write();
            let mut drop_list = Vec::new();
            for s in sh.by_ref.values() {
                let mut d = s.data.lock();
                if !d.dirty {
                    s.dead.store(true, Ordering::Release);
                    drop_list.push((s.labels.stable_hash(), s.r));
                    continue;
                }
                d.dirty = false;
                let full = std::mem::take(&mut d.full);
                let open = d.open.take().map(|o| o.into_bytes());
                let ooo = std::mem::take(&mut d.ooo);
                self.ooo_samples
                    .fetch_sub(ooo.len() as u64, Ordering::Relaxed);
                for c in &full {
                    min_t = min_t.min(c.min_t);
                    max_t = max_t.max(c.max_t);
                }
                if let Some(x) = ooo.first() {
                    min_t = min_t.min(x.t);
                }
                if let Some(x) = ooo.last() {
                    max_t = max_t.max(x.t);
                }
                max_t = max_t.max(d.last_t);
                series.push(FrozenSeries {
                    labels: s.labels.clone(),
                    full: full.iter().map(|c| (c.min_t, c.max_t, c.r)).collect(),
                    open,
                    ooo,
                });
            }
            for (hash, r) in drop_list {
                sh.remove(hash, r);
                gone.insert(r);
            }
        }
        // Open chunks' first timestamps were not tracked above; include them.
        for s in &series {
            if let Some(open) = &s.open
                && let Ok(mut it) = SampleIter::new(Encoding::Xor, open)
                && let Some(Ok(first)) = it.next()
            {
                min_t = min_t.min(first.t);
            }
        }
        if !gone.is_empty() {
            self.postings.write().remove_all(&gone);
            self.num_series
                .fetch_sub(gone.len() as u64, Ordering::Relaxed);
        }
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        // Taken last: until its data is taken, a series' chunk references must still
        // resolve for concurrent readers. No chunk is written meanwhile (the caller holds
        // the commit lock).
        let files = self.chunks.take_files();
        FrozenHead {
            series,
            files,
            min_t,
            max_t,
        }
    }
}

fn shard_of_ref(r: u64) -> usize {
    (r as usize) & (SHARDS - 1)
}

/// Appends the samples of one chunk that fall in `[mint, maxt]` to `out`.
pub(crate) fn decode_range(
    enc: Encoding,
    bytes: &[u8],
    mint: i64,
    maxt: i64,
    out: &mut Vec<Sample>,
) -> Result<(), StorageError> {
    let it = SampleIter::new(enc, bytes).map_err(|e| StorageError::Corrupt {
        path: "head chunk".into(),
        msg: e.to_string(),
    })?;
    for s in it {
        let s = s.map_err(|e| StorageError::Corrupt {
            path: "head chunk".into(),
            msg: e.to_string(),
        })?;
        if s.t > maxt {
            break;
        }
        if s.t >= mint {
            out.push(s);
        }
    }
    Ok(())
}

/// The data of one head series in a time range, captured by [`Head::snapshot`]: its
/// full chunks (whose files stay mapped while held), a copy of the open chunk, and its
/// out-of-order samples in the range. Decoding needs no lock.
pub struct HeadSeriesSnapshot {
    full: Vec<(Arc<ChunkFile>, HeadChunkRef)>,
    open: Option<Vec<u8>>,
    ooo: Vec<Sample>,
}

impl HeadSeriesSnapshot {
    /// Replaces `out` with the samples in `[mint, maxt]`, out-of-order ones merged in.
    pub fn decode(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<(), StorageError> {
        out.clear();
        for (f, r) in &self.full {
            let (enc, bytes) = f.read_ref(*r).map_err(|msg| StorageError::Corrupt {
                path: "chunks_head".into(),
                msg,
            })?;
            decode_range(enc, bytes, mint, maxt, out)?;
        }
        if let Some(open) = &self.open {
            decode_range(Encoding::Xor, open, mint, maxt, out)?;
        }
        if !self.ooo.is_empty() {
            *out = merge_newer_wins(std::mem::take(out), &self.ooo);
        }
        Ok(())
    }

    /// A rough count of the samples decoding will go through.
    pub fn cost(&self) -> usize {
        self.full.len() * 120 + self.open.as_ref().map_or(0, |_| 60) + self.ooo.len()
    }
}

/// Merges two timestamp-sorted lists; on equal timestamps the sample from `newer` wins.
pub fn merge_newer_wins(older: Vec<Sample>, newer: &[Sample]) -> Vec<Sample> {
    if newer.is_empty() {
        return older;
    }
    if older.is_empty() {
        return newer.to_vec();
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        match older[i].t.cmp(&newer[j].t) {
            std::cmp::Ordering::Less => {
                out.push(older[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(newer[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(newer[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

impl crate::postings::IndexReader for Head {
    fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError> {
        let p = self.postings.read();
        let mut v: Vec<String> = p
            .map
            .get(name)
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        Ok(v)
    }

    fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, StorageError> {
        let p = self.postings.read();
        Ok(p.map
            .get(name)
            .and_then(|m| m.get(value))
            .cloned()
            .unwrap_or_default())
    }

    fn all_postings(&self) -> Result<Vec<u64>, StorageError> {
        let mut v: Vec<u64> = Vec::with_capacity(self.num_series() as usize);
        for shard in self.shards.iter() {
            v.extend(shard.read().by_ref.keys().copied());
        }
        v.sort_unstable();
        Ok(v)
    }

    fn label_names(&self) -> Result<Vec<String>, StorageError> {
        let mut v: Vec<String> = self
            .postings
            .read()
            .map
            .keys()
            .map(|k| k.to_string())
            .collect();
        v.sort_unstable();
        Ok(v)
    }
}

/// One series' data taken out of the head by [`Head::freeze`].
pub struct FrozenSeries {
    pub labels: Labels,
    full: Vec<(i64, i64, HeadChunkRef)>,
    open: Option<Vec<u8>>,
    ooo: Vec<Sample>,
}

/// Everything the head held at a freeze, readable until it is written into blocks.
pub struct FrozenHead {
    /// Sorted by labels.
    pub series: Vec<FrozenSeries>,
    files: Vec<Arc<ChunkFile>>,
    pub min_t: i64,
    pub max_t: i64,
}

impl FrozenHead {
    /// True when the freeze took no samples.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Replaces `out` with the samples of frozen series `s` in `[mint, maxt]`,
    /// out-of-order ones merged in.
    pub fn decode(
        &self,
        s: &FrozenSeries,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), StorageError> {
        out.clear();
        for &(cmin, cmax, r) in &s.full {
            if cmax < mint || cmin > maxt {
                continue;
            }
            let (enc, bytes) =
                chunks::read_chunk(&self.files, r).map_err(|msg| StorageError::Corrupt {
                    path: "chunks_head".into(),
                    msg,
                })?;
            decode_range(enc, bytes, mint, maxt, out)?;
        }
        if let Some(open) = &s.open {
            decode_range(Encoding::Xor, open, mint, maxt, out)?;
        }
        if s.ooo.iter().any(|x| x.t >= mint && x.t <= maxt) {
            let ooo: Vec<Sample> = s
                .ooo
                .iter()
                .filter(|x| x.t >= mint && x.t <= maxt)
                .copied()
                .collect();
            *out = merge_newer_wins(std::mem::take(out), &ooo);
        }
        Ok(())
    }

    /// All samples of one frozen series in `[mint, maxt]`, out-of-order ones merged in.
    pub fn samples(
        &self,
        s: &FrozenSeries,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Sample>, StorageError> {
        let mut out = Vec::new();
        self.decode(s, mint, maxt, &mut out)?;
        Ok(out)
    }

    /// Whether frozen series `s` may hold samples in `[mint, maxt]`.
    pub fn overlaps(s: &FrozenSeries, mint: i64, maxt: i64) -> bool {
        s.full.iter().any(|&(a, b, _)| a <= maxt && b >= mint)
            || s.open.is_some()
            || s.ooo.iter().any(|x| x.t >= mint && x.t <= maxt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> (tempfile::TempDir, Head) {
        let d = tempfile::tempdir().unwrap();
        let h = Head::new(&d.path().join("chunks_head"), HeadOptions::default()).unwrap();
        (d, h)
    }

    fn add(h: &Head, s: &MemSeries, t: i64, v: f64) -> Outcome {
        let mut out = None;
        h.append_series(
            s,
            &[Sample { t, v }],
            |_| {},
            |_, _| {},
            |o| out = Some(o),
            |_| None,
        )
        .unwrap();
        out.unwrap()
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let (_d, h) = head();
        let (s, created) = h.get_or_create(&[("__name__", "m"), ("job", "a")]);
        assert!(created);
        for t in 0..300 {
            assert_eq!(add(&h, &s, t * 1000, t as f64), Outcome::Appended);
        }
        // Retry of the latest sample and of an older one: duplicates.
        assert_eq!(add(&h, &s, 299_000, 299.0), Outcome::Duplicate);
        assert_eq!(add(&h, &s, 290_000, 290.0), Outcome::Duplicate);
        // A different value for a held timestamp: last write wins.
        assert_eq!(add(&h, &s, 10_000, -1.0), Outcome::OutOfOrder);
        // A gap filled in.
        assert_eq!(add(&h, &s, 10_500, 7.0), Outcome::OutOfOrder);
        let got = h.series_samples(&s, 0, i64::MAX).unwrap();
        assert_eq!(got.len(), 301);
        assert_eq!(got[10], Sample { t: 10_000, v: -1.0 });
        assert_eq!(got[11], Sample { t: 10_500, v: 7.0 });
        assert!(got.windows(2).all(|w| w[0].t < w[1].t));
        // Two full chunks went to the mapped files.
        assert!(h.chunk_file_bytes() > 0);
        let (again, created) = h.get_or_create(&[("__name__", "m"), ("job", "a")]);
        assert!(!created);
        assert_eq!(again.r, s.r);
    }

    #[test]
    fn freeze_takes_everything_and_drops_idle_series() {
        let (_d, h) = head();
        let (a, _) = h.get_or_create(&[("__name__", "a")]);
        let (b, _) = h.get_or_create(&[("__name__", "b")]);
        for t in 0..250 {
            add(&h, &a, t, 1.0);
        }
        add(&h, &b, 5, 2.0);
        let f = h.freeze();
        assert_eq!(f.series.len(), 2);
        assert_eq!(f.samples(&f.series[0], 0, i64::MAX).unwrap().len(), 250);
        assert_eq!((f.min_t, f.max_t), (0, 249));
        assert!(h.series_samples(&a, 0, i64::MAX).unwrap().is_empty());
        // Only `a` writes again; a second freeze drops `b`.
        add(&h, &a, 1000, 1.0);
        let f2 = h.freeze();
        assert_eq!(f2.series.len(), 1);
        assert_eq!(h.num_series(), 1);
        assert!(h.series(b.r).is_none());
        use crate::postings::IndexReader;
        assert_eq!(h.label_values("__name__").unwrap(), vec!["a".to_string()]);
    }
}
