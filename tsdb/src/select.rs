//! Lazy reads for queries.
//!
//! [`crate::Db::select_lazy`] finds the series that match and where their samples lie
//! (chunks of blocks, of frozen heads, of the head) without decoding anything. Each
//! [`SelectedSeries`] is then decoded on its own, on any thread, into a buffer the caller
//! reuses: a query decodes every chunk it needs once, in parallel, and never holds all
//! the samples of a selection at once.
//!
//! A chunk of a block that fails to decode is left out of the answer and marks its
//! block damaged; the database moves such blocks to quarantine on its next read.

use std::sync::Arc;

use crate::block::{Block, ChunkMeta};
use crate::head::{FrozenHead, HeadSeriesSnapshot, merge_newer_wins};
use crate::{Labels, QueryError, Sample};

/// Where one part of a series' data lies.
enum Part {
    Block {
        block: Arc<Block>,
        chunks: Vec<ChunkMeta>,
    },
    Frozen {
        head: Arc<FrozenHead>,
        idx: usize,
    },
    Head(HeadSeriesSnapshot),
    Samples(Vec<Sample>),
}

impl Part {
    /// Replaces `out` with this part's samples in `[mint, maxt]`.
    fn decode(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<(), QueryError> {
        out.clear();
        self.decode_append(mint, maxt, out)
    }

    /// The earliest time of a block part (its first chunk's), else `None`.
    fn block_min_time(&self) -> Option<i64> {
        match self {
            Part::Block { chunks, .. } => chunks.first().map(|c| c.min_time),
            _ => None,
        }
    }

    /// Appends this part's samples in `[mint, maxt]` to `out` (which the head parts,
    /// merging their out-of-order samples, replace instead).
    fn decode_append(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<(), QueryError> {
        match self {
            Part::Block { block, chunks } => {
                for c in chunks {
                    let before = out.len();
                    if let Err(e) = block.decode_range(c, mint, maxt, out) {
                        // A damaged chunk is never served: its samples are dropped, the
                        // block is marked and the database quarantines it.
                        tracing::error!("reading block {}: {e}", block.dir().display());
                        block.mark_damaged();
                        out.truncate(before);
                    }
                }
            }
            Part::Frozen { head, idx } => {
                if let Some(s) = head.series.get(*idx) {
                    head.decode(s, mint, maxt, out)?;
                }
            }
            Part::Head(snap) => snap.decode(mint, maxt, out)?,
            Part::Samples(v) => {
                let lo = v.partition_point(|s| s.t < mint);
                let hi = v.partition_point(|s| s.t <= maxt);
                out.extend_from_slice(&v[lo..hi.max(lo)]);
            }
        }
        Ok(())
    }

    fn cost(&self) -> usize {
        match self {
            // Block chunks hold up to `compact::MERGED_CHUNK_SAMPLES` (240) samples.
            Part::Block { chunks, .. } => chunks.len() * crate::compact::MERGED_CHUNK_SAMPLES,
            Part::Frozen { .. } => 240,
            Part::Head(s) => s.cost(),
            Part::Samples(v) => v.len(),
        }
    }
}

/// One series of a lazy selection: its labels and where its samples lie, in the order
/// in which sources win on equal timestamps (later parts win).
pub struct SelectedSeries {
    pub labels: Labels,
    parts: Vec<Part>,
}

impl SelectedSeries {
    /// A series whose samples are already in memory (sorted by time, unique timestamps).
    pub fn from_samples(labels: Labels, samples: Vec<Sample>) -> SelectedSeries {
        SelectedSeries {
            labels,
            parts: vec![Part::Samples(samples)],
        }
    }

    pub(crate) fn new(labels: Labels) -> SelectedSeries {
        SelectedSeries {
            labels,
            parts: Vec::new(),
        }
    }

    pub(crate) fn push_block(&mut self, block: Arc<Block>, chunks: Vec<ChunkMeta>) {
        self.parts.push(Part::Block { block, chunks });
    }

    pub(crate) fn push_frozen(&mut self, head: Arc<FrozenHead>, idx: usize) {
        self.parts.push(Part::Frozen { head, idx });
    }

    pub(crate) fn push_head(&mut self, snap: HeadSeriesSnapshot) {
        self.parts.push(Part::Head(snap));
    }

    pub(crate) fn append_parts(&mut self, other: SelectedSeries) {
        self.parts.extend(other.parts);
    }

    /// Replaces `out` with the series' samples in `[mint, maxt]`, sorted by time, where
    /// a later part wins over an earlier one on equal timestamps. `scratch` is a buffer
    /// for the second and later parts; pass the same one again to avoid allocating.
    pub fn decode_into(
        &self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
        scratch: &mut Vec<Sample>,
    ) -> Result<(), QueryError> {
        out.clear();
        let mut parts = self.parts.iter();
        if let Some(p) = parts.next() {
            p.decode(mint, maxt, out)?;
        }
        for p in parts {
            // A block part that starts after everything decoded so far (blocks of later
            // windows) decodes straight onto the end.
            if let (Some(l), Some(first)) = (out.last(), p.block_min_time())
                && first > l.t
            {
                p.decode_append(mint, maxt, out)?;
                continue;
            }
            p.decode(mint, maxt, scratch)?;
            match (out.last(), scratch.first()) {
                (_, None) => {}
                // Parts in time order (blocks of successive windows, then the head): append.
                (Some(l), Some(f)) if f.t > l.t => out.extend_from_slice(scratch),
                (None, Some(_)) => std::mem::swap(out, scratch),
                _ => *out = merge_newer_wins(std::mem::take(out), scratch),
            }
        }
        Ok(())
    }

    /// A rough count of the samples decoding will go through, for planning parallel work.
    pub fn cost(&self) -> usize {
        self.parts.iter().map(Part::cost).sum()
    }
}

impl std::fmt::Debug for SelectedSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectedSeries")
            .field("labels", &self.labels)
            .field("parts", &self.parts.len())
            .finish()
    }
}
