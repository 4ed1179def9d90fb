//! Compaction: merging several blocks into one.
//!
//! [`merge_blocks`] reads its inputs' series in label order (a k-way merge over their
//! postings of all series), and writes each series once into a new block covering the
//! union of the inputs' time ranges. Chunks that overlap no other chunk of the same series
//! are copied byte for byte; chunks that overlap are decoded, merged and re-encoded into
//! chunks of at most [`MERGED_CHUNK_SAMPLES`] samples. When inputs hold samples with the
//! same timestamp for a series, the sample from the input listed last wins: callers list
//! blocks from oldest to newest, so newer data replaces older.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use crate::block::{Block, BlockMeta, BlockWriter, ChunkInput, ChunkMeta};
use crate::chunkenc::{Encoding, SampleIter, XorAppender};
use crate::error::StorageError;
use crate::postings::IndexReader;
use crate::{Labels, Sample};

/// Most samples in a chunk re-encoded by a merge.
///
/// Measured by `block::tests::chunk_size_bytes_per_sample` (one day of 80 series at a
/// 15 s interval, merged from two blocks: constants, integer counters, page-sized memory
/// gauges, two-decimal random walks), whole-block bytes per sample:
///
/// | samples per chunk | aligned timestamps | timestamps jittered by 0-4 ms |
/// |---|---|---|
/// | 120  | 2.637 | 3.367 |
/// | 480  | 2.540 | 3.278 |
/// | 1000 | 2.553 | 3.297 |
///
/// 480 is the smallest: it amortizes each chunk's header and first sample (a constant
/// series drops from 0.38 to 0.28 bytes per sample), while 1000 is slightly worse again
/// for the counters and random walks. At 15 s a chunk then spans 2 hours, which bounds
/// how much a short query decodes beyond what it needs.
pub const MERGED_CHUNK_SAMPLES: usize = 480;

/// Merges `inputs` (oldest first) into one new block under `blocks_dir` and returns its
/// metadata. The new block covers the union of the inputs' ranges, has level one more
/// than the highest input's, and lists the union of their sources.
///
/// Cost: O(S log k) for S series over k inputs, plus one copy per chunk, plus decoding
/// and re-encoding the chunks that overlap (O(n log n) in their samples). Memory: the
/// current series of each input, and the new block's index as it is built.
pub fn merge_blocks(blocks_dir: &Path, inputs: &[&Block]) -> Result<BlockMeta, StorageError> {
    merge_blocks_with(blocks_dir, inputs, MERGED_CHUNK_SAMPLES)
}

pub(crate) fn merge_blocks_with(
    blocks_dir: &Path,
    inputs: &[&Block],
    chunk_samples: usize,
) -> Result<BlockMeta, StorageError> {
    let chunk_samples = chunk_samples.clamp(1, crate::chunkenc::MAX_SAMPLES_PER_CHUNK);
    let Some(first) = inputs.first() else {
        return Err(StorageError::InvalidInput("no blocks to merge".into()));
    };
    let min_time = inputs
        .iter()
        .map(|b| b.meta().min_time)
        .min()
        .unwrap_or(first.meta().min_time);
    let max_time = inputs
        .iter()
        .map(|b| b.meta().max_time)
        .max()
        .unwrap_or(first.meta().max_time);
    let level = inputs
        .iter()
        .map(|b| b.meta().level)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let mut sources: Vec<String> = inputs
        .iter()
        .flat_map(|b| b.meta().sources.iter().cloned())
        .collect();
    sources.sort();
    sources.dedup();

    let mut w = BlockWriter::new(blocks_dir, min_time, max_time)?;
    let mut cursors = Vec::with_capacity(inputs.len());
    let mut heap = BinaryHeap::new();
    for (i, b) in inputs.iter().enumerate() {
        let mut c = Cursor::new(b)?;
        if let Some(l) = c.advance()? {
            heap.push(Reverse((l, i)));
        }
        cursors.push(c);
    }
    let mut parts: Vec<(usize, ChunkMeta)> = Vec::new();
    let mut scratch = Scratch::default();
    while let Some(Reverse((labels, i))) = heap.pop() {
        parts.clear();
        take_chunks(&mut cursors[i], i, &mut parts, &mut heap)?;
        while let Some(Reverse((l, j))) = heap.peek() {
            if *l != labels {
                break;
            }
            let j = *j;
            heap.pop();
            take_chunks(&mut cursors[j], j, &mut parts, &mut heap)?;
        }
        let chunks = scratch.merge_series(inputs, &mut parts, chunk_samples)?;
        if !chunks.is_empty() {
            w.add_series(&labels, &chunks)?;
        }
    }
    w.finish(level, sources)
}

/// Moves the current series' chunks of cursor `i` into `parts` and queues its next
/// series.
fn take_chunks(
    c: &mut Cursor<'_>,
    i: usize,
    parts: &mut Vec<(usize, ChunkMeta)>,
    heap: &mut BinaryHeap<Reverse<(Labels, usize)>>,
) -> Result<(), StorageError> {
    parts.extend(c.chunks.drain(..).map(|m| (i, m)));
    if let Some(l) = c.advance()? {
        heap.push(Reverse((l, i)));
    }
    Ok(())
}

/// Reads one block's series in order.
struct Cursor<'a> {
    block: &'a Block,
    refs: Vec<u64>,
    pos: usize,
    /// The label set and chunks of the series last returned by `advance`.
    labels: Option<Labels>,
    chunks: Vec<ChunkMeta>,
}

impl<'a> Cursor<'a> {
    fn new(block: &'a Block) -> Result<Self, StorageError> {
        Ok(Cursor {
            block,
            refs: block.index().all_postings()?,
            pos: 0,
            labels: None,
            chunks: Vec::new(),
        })
    }

    /// Loads the next series and returns its label set. Series refs increase in label
    /// order; a block where they do not is corrupt.
    fn advance(&mut self) -> Result<Option<Labels>, StorageError> {
        let Some(&r) = self.refs.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        let (labels, chunks) = self.block.series(r)?;
        if self.labels.as_ref().is_some_and(|p| *p >= labels) {
            return Err(StorageError::corrupt(
                self.block.dir().join(crate::block::INDEX_FILE),
                format!("series {r} out of label order"),
            ));
        }
        self.labels = Some(labels.clone());
        self.chunks = chunks;
        Ok(Some(labels))
    }
}

/// Buffers reused from series to series.
#[derive(Default)]
struct Scratch {
    /// Re-encoded chunks of the current series: min time, max time, samples, bytes.
    encoded: Vec<(i64, i64, u16, Vec<u8>)>,
    /// Decoded samples of one cluster: time, input, value.
    cluster: Vec<(i64, usize, f64)>,
    /// Merged samples of consecutive clusters, waiting to be re-encoded.
    pending: Vec<Sample>,
}

/// Where an output chunk's bytes come from.
enum Source {
    /// Copied from input `block` at this chunk.
    Copy(usize, ChunkMeta),
    /// Re-encoded, at this index of `Scratch::encoded`.
    Encoded(usize),
}

impl Scratch {
    /// Plans and builds one series' output chunks from the chunks of every input.
    ///
    /// The chunks are grouped into clusters of chunks that overlap, directly or through
    /// each other. A cluster of one chunk is copied. The samples of the other clusters
    /// are merged, and each run of such clusters between two copied chunks is
    /// re-encoded as one stream cut every `chunk_samples` samples.
    fn merge_series<'a>(
        &'a mut self,
        inputs: &[&'a Block],
        parts: &mut [(usize, ChunkMeta)],
        chunk_samples: usize,
    ) -> Result<Vec<ChunkInput<'a>>, StorageError> {
        self.encoded.clear();
        self.pending.clear();
        // By time, and by input among equal start times so that clusters are
        // deterministic.
        parts.sort_by_key(|(i, c)| (c.min_time, *i));
        let mut plan = Vec::with_capacity(parts.len());
        let mut start = 0;
        while start < parts.len() {
            let mut end = start + 1;
            let mut cluster_max = parts[start].1.max_time;
            while end < parts.len() && parts[end].1.min_time <= cluster_max {
                cluster_max = cluster_max.max(parts[end].1.max_time);
                end += 1;
            }
            if end - start == 1 {
                self.encode_pending(&mut plan, chunk_samples);
                plan.push(Source::Copy(parts[start].0, parts[start].1));
            } else {
                self.cluster.clear();
                for &(i, c) in &parts[start..end] {
                    for s in inputs[i].samples(&c)? {
                        self.cluster.push((s.t, i, s.v));
                    }
                }
                // Among equal timestamps the last input's sample sorts last: keep it.
                self.cluster.sort_unstable_by_key(|&(t, i, _)| (t, i));
                dedup_last(&self.cluster, &mut self.pending);
            }
            start = end;
        }
        self.encode_pending(&mut plan, chunk_samples);
        let mut out = Vec::with_capacity(plan.len());
        for p in plan {
            out.push(match p {
                Source::Copy(i, c) => {
                    let (enc, data) = inputs[i].chunk(c.chunk_ref)?;
                    let n = SampleIter::new(enc, data)
                        .ok()
                        .and_then(|it| u16::try_from(it.num_samples()).ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            StorageError::corrupt(
                                inputs[i].dir().join(crate::block::CHUNKS_DIR),
                                format!("chunk {:#x} has an unreadable header", c.chunk_ref.0),
                            )
                        })?;
                    (c.min_time, c.max_time, enc.as_u8(), n, data)
                }
                Source::Encoded(k) => {
                    let (mint, maxt, n, ref bytes) = self.encoded[k];
                    (mint, maxt, Encoding::Xor.as_u8(), n, bytes.as_slice())
                }
            });
        }
        Ok(out)
    }

    /// Encodes the pending samples into chunks and adds them to the plan.
    fn encode_pending(&mut self, plan: &mut Vec<Source>, chunk_samples: usize) {
        for piece in self.pending.chunks(chunk_samples) {
            let mut a = XorAppender::new();
            for s in piece {
                a.append(s.t, s.v);
            }
            plan.push(Source::Encoded(self.encoded.len()));
            self.encoded.push((
                piece[0].t,
                piece[piece.len() - 1].t,
                // `chunk_samples <= u16::MAX`.
                piece.len() as u16,
                a.into_bytes(),
            ));
        }
        self.pending.clear();
    }
}

/// Appends sorted `(t, input, v)` to `out` as samples, keeping the last entry of each
/// timestamp.
fn dedup_last(sorted: &[(i64, usize, f64)], out: &mut Vec<Sample>) {
    for &(t, _, v) in sorted {
        match out.last_mut() {
            Some(last) if last.t == t => last.v = v,
            _ => out.push(Sample { t, v }),
        }
    }
}
