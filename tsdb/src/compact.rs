//! Compaction: merging several blocks into one.
//!
//! [`merge_blocks`] reads its inputs' series in label order (a k-way merge over their
//! postings of all series), and writes each series once into a new block covering the
//! union of the inputs' time ranges. Chunks that overlap no other chunk of the same series
//! keep their bounds: DoD chunks are copied byte for byte, XOR chunks re-encoded with
//! [`encode_best`] when that makes them smaller (XOR is the open-chunk encoding; DoD
//! usually takes a third to a quarter of it). Chunks that overlap, and DoD chunks of
//! fewer than half [`MERGED_CHUNK_SAMPLES`] samples (cut short by the end of a block's
//! range), are decoded, merged and re-encoded with [`encode_best`] into chunks of at most
//! [`MERGED_CHUNK_SAMPLES`] samples, so chunks grow as blocks are compacted into longer
//! ranges. When inputs hold samples with the same timestamp for a series, the sample from
//! the input listed last wins: callers list blocks from oldest to newest, so newer data
//! replaces older.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use crate::block::{Block, BlockMeta, BlockWriter, ChunkInput, ChunkMeta};
use crate::chunkenc::{Encoding, SampleIter, encode_best};
use crate::error::StorageError;
use crate::postings::IndexReader;
use crate::{Labels, Sample};

/// Most samples in a chunk re-encoded by a merge.
///
/// Measured by `block::tests::chunk_size_bytes_per_sample` (one day of 80 series at a
/// 15 s interval, merged from two blocks: constants, integer counters, page-sized memory
/// gauges, two-decimal random walks), whole-block bytes per sample, chunks written by
/// [`encode_best`] (nearly all DoD); XOR alone, for comparison, took 2.5 to 3.4:
///
/// | samples per chunk | aligned timestamps | timestamps jittered by 0-4 ms |
/// |---|---|---|
/// | 120  | 0.773 | 0.958 |
/// | 480  | 0.529 | 0.699 |
/// | 1000 | 0.485 | 0.654 |
///
/// On the node-exporter workload (`benches/benches/compression.rs`, 2,000 series × 2,000
/// points, whole blocks) the mix takes 1.596, 1.668 and 1.764 bytes per sample at 1000,
/// 480 and 240 samples per chunk. Queries pay the other way: samples are decoded from the
/// start of a chunk, so a query decodes on average half a chunk per series that it does
/// not need, plus the rest of the chunk its range ends in. At 15 s a chunk of 240 spans an
/// hour, the usual reach of dashboards and alert rules: an instant query at the end of a
/// chunk decodes at most an hour of one series instead of four, and a one-hour range query
/// decodes about 1.5 hours instead of up to 4. That is worth 10 % more disk (still below
/// the peers of `benches/peers`); the query benchmark (`benches/benches/query.rs`)
/// measures it.
pub const MERGED_CHUNK_SAMPLES: usize = 240;

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
    /// Re-encoded chunks of the current series: min time, max time, samples, encoding,
    /// bytes.
    encoded: Vec<(i64, i64, u16, Encoding, Vec<u8>)>,
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
    /// each other. A cluster of one chunk is mostly kept as a chunk of its own, copied or
    /// (if it is XOR) re-encoded; see [`Self::keep`]. The samples of the other clusters
    /// are merged, and each run of such clusters between two kept chunks is re-encoded
    /// as one stream cut every `chunk_samples` samples.
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
            let single = (end - start == 1).then(|| parts[start]);
            let kept = match single {
                Some((i, c)) => self.keep(inputs[i], i, c, chunk_samples)?,
                None => None,
            };
            if let Some(source) = kept {
                self.encode_pending(&mut plan, chunk_samples);
                plan.push(source);
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
                    let (enc, data, n) = read_chunk(inputs[i], &c)?;
                    (c.min_time, c.max_time, enc.as_u8(), n, data)
                }
                Source::Encoded(k) => {
                    let (mint, maxt, n, enc, ref bytes) = self.encoded[k];
                    (mint, maxt, enc.as_u8(), n, bytes.as_slice())
                }
            });
        }
        Ok(out)
    }

    /// How chunk `c` of input `i`, which overlaps no other, keeps its bounds: copied, or
    /// re-encoded if it is an XOR chunk that another encoding stores in fewer bytes.
    /// `None` for a DoD chunk of fewer than half `chunk_samples` samples, which is merged
    /// with its neighbours instead.
    fn keep(
        &mut self,
        block: &Block,
        i: usize,
        c: ChunkMeta,
        chunk_samples: usize,
    ) -> Result<Option<Source>, StorageError> {
        let (enc, data, n) = read_chunk(block, &c)?;
        match enc {
            Encoding::Dod if usize::from(n) * 2 < chunk_samples => Ok(None),
            Encoding::Dod => Ok(Some(Source::Copy(i, c))),
            Encoding::Xor => {
                let (best, bytes) = encode_best(&block.samples(&c)?);
                if best == Encoding::Xor || bytes.len() >= data.len() {
                    return Ok(Some(Source::Copy(i, c)));
                }
                self.encoded.push((c.min_time, c.max_time, n, best, bytes));
                Ok(Some(Source::Encoded(self.encoded.len() - 1)))
            }
        }
    }

    /// Encodes the pending samples into chunks and adds them to the plan.
    fn encode_pending(&mut self, plan: &mut Vec<Source>, chunk_samples: usize) {
        for piece in self.pending.chunks(chunk_samples) {
            let (enc, bytes) = encode_best(piece);
            plan.push(Source::Encoded(self.encoded.len()));
            self.encoded.push((
                piece[0].t,
                piece[piece.len() - 1].t,
                // `chunk_samples <= u16::MAX`.
                piece.len() as u16,
                enc,
                bytes,
            ));
        }
        self.pending.clear();
    }
}

/// The encoding, bytes and sample count of chunk `c` of `block`.
fn read_chunk<'a>(
    block: &'a Block,
    c: &ChunkMeta,
) -> Result<(Encoding, &'a [u8], u16), StorageError> {
    let (enc, data) = block.chunk(c.chunk_ref)?;
    let n = SampleIter::new(enc, data)
        .ok()
        .and_then(|it| u16::try_from(it.num_samples()).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            StorageError::corrupt(
                block.dir().join(crate::block::CHUNKS_DIR),
                format!("chunk {:#x} has an unreadable header", c.chunk_ref.0),
            )
        })?;
    Ok((enc, data, n))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkenc::XorAppender;

    /// Writes a block whose series `m` holds `chunks`, each encoded as XOR.
    fn xor_block(dir: &Path, chunks: &[&[Sample]]) -> Block {
        block(dir, chunks, Encoding::Xor)
    }

    /// Writes a block whose series `m` holds `chunks`, each encoded as `enc`.
    fn block(dir: &Path, chunks: &[&[Sample]], enc: Encoding) -> Block {
        let encoded: Vec<(i64, i64, u16, Vec<u8>)> = chunks
            .iter()
            .map(|c| {
                let bytes = match enc {
                    Encoding::Xor => {
                        let mut a = XorAppender::new();
                        for s in c.iter() {
                            a.append(s.t, s.v);
                        }
                        a.into_bytes()
                    }
                    Encoding::Dod => crate::chunkenc::encode_dod(c),
                };
                (c[0].t, c[c.len() - 1].t, c.len() as u16, bytes)
            })
            .collect();
        let inputs: Vec<ChunkInput<'_>> = encoded
            .iter()
            .map(|(lo, hi, n, b)| (*lo, *hi, enc.as_u8(), *n, b.as_slice()))
            .collect();
        let mut w = BlockWriter::new(dir, 0, 100_000_000).unwrap();
        let l = Labels::from_pairs([("__name__", "m")]).unwrap();
        w.add_series(&l, &inputs).unwrap();
        let meta = w.finish(1, Vec::new()).unwrap();
        Block::open(&dir.join(&meta.id)).unwrap()
    }

    fn scrapes(from: i64, n: i64) -> Vec<Sample> {
        (from..from + n)
            .map(|i| Sample {
                t: i * 15_000 + i % 3,
                v: (i * 37 % 1000) as f64 / 100.0,
            })
            .collect()
    }

    /// Every chunk of the merged block's only series: encoding, bounds and samples.
    fn chunks_of(b: &Block) -> Vec<(Encoding, i64, i64, Vec<Sample>)> {
        let r = b.index().all_postings().unwrap()[0];
        let (_, metas) = b.series(r).unwrap();
        metas
            .iter()
            .map(|c| {
                let (enc, _) = b.chunk(c.chunk_ref).unwrap();
                (enc, c.min_time, c.max_time, b.samples(c).unwrap())
            })
            .collect()
    }

    #[test]
    fn xor_chunks_that_overlap_nothing_are_re_encoded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (scrapes(0, 120), scrapes(120, 120));
        let first = xor_block(dir.path(), &[&a]);
        let second = xor_block(
            dir.path(),
            &[
                &b,
                &[Sample {
                    t: 10_000_000,
                    v: 1.0,
                }],
            ],
        );
        let meta = merge_blocks(dir.path(), &[&first, &second]).unwrap();
        let m = Block::open(&dir.path().join(&meta.id)).unwrap();
        let got = chunks_of(&m);
        let want = [
            (Encoding::Dod, 0, a[119].t, a.clone()),
            (Encoding::Dod, b[0].t, b[119].t, b.clone()),
            // One sample: XOR is smaller, so the chunk is copied.
            (
                Encoding::Xor,
                10_000_000,
                10_000_000,
                vec![Sample {
                    t: 10_000_000,
                    v: 1.0,
                }],
            ),
        ];
        assert_eq!(got, want);
        assert_eq!(meta.num_samples, 241);
        let before = first.size_bytes() + second.size_bytes();
        assert!(m.size_bytes() < before, "{} >= {before}", m.size_bytes());
    }

    #[test]
    fn short_dod_chunks_are_merged_with_their_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let all = scrapes(0, 2100);
        // Chunks of 300 and 600 samples, as block ranges might cut them.
        let first = block(dir.path(), &[&all[..300], &all[300..600]], Encoding::Dod);
        let second = block(dir.path(), &[&all[600..1200]], Encoding::Dod);
        let third = block(
            dir.path(),
            &[&all[1200..1500], &all[1500..2100]],
            Encoding::Dod,
        );
        let meta = merge_blocks_with(dir.path(), &[&first, &second, &third], 1000).unwrap();
        let m = Block::open(&dir.path().join(&meta.id)).unwrap();
        let got = chunks_of(&m);
        let t = |i: usize| all[i].t;
        // Consecutive short chunks join; chunks of at least half of 1000 stay as they are.
        let bounds: Vec<(i64, i64)> = got.iter().map(|c| (c.1, c.2)).collect();
        assert_eq!(
            bounds,
            [
                (t(0), t(599)),
                (t(600), t(1199)),
                (t(1200), t(1499)),
                (t(1500), t(2099))
            ]
        );
        assert!(got.iter().all(|c| c.0 == Encoding::Dod));
        let r = second.index().all_postings().unwrap()[0];
        let copied = second.series(r).unwrap().1[0].chunk_ref;
        let r = m.index().all_postings().unwrap()[0];
        let kept = m.series(r).unwrap().1[1].chunk_ref;
        assert_eq!(m.chunk(kept).unwrap(), second.chunk(copied).unwrap());
        let samples: Vec<Sample> = got.into_iter().flat_map(|c| c.3).collect();
        assert_eq!(samples, all);
    }

    #[test]
    fn overlapping_chunks_are_merged_into_the_smallest_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let all = scrapes(0, 1500);
        let even: Vec<Sample> = all.iter().step_by(2).copied().collect();
        let odd: Vec<Sample> = all.iter().skip(1).step_by(2).copied().collect();
        let first = xor_block(dir.path(), &[&even]);
        let second = xor_block(dir.path(), &[&odd]);
        let meta = merge_blocks_with(dir.path(), &[&first, &second], 1000).unwrap();
        let m = Block::open(&dir.path().join(&meta.id)).unwrap();
        let got = chunks_of(&m);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|c| c.0 == Encoding::Dod));
        let samples: Vec<Sample> = got.into_iter().flat_map(|c| c.3).collect();
        assert_eq!(samples, all);
    }
}
