//! Immutable, memory-mapped blocks: the engine's persisted data.
//!
//! A block is a directory `<data>/blocks/<id>/` holding the samples of a time range:
//! `chunks/` (segment files of checksummed chunks), `index` (symbols, series, postings)
//! and `meta.json` (id, range, statistics, lineage). [`BlockWriter`] builds one and
//! publishes it atomically; [`Block`] opens it, maps its files and answers queries; the
//! blocks are never modified afterwards, only deleted as a whole. Formats:
//! `tsdb/docs/format/{index,block-chunks,meta}.md`.
//!
//! Reads never trust the bytes: opening a block validates `meta.json`, the index header,
//! table of contents and small sections, and checks `meta.json` against the index; each
//! series entry, postings list and chunk is checksummed when it is read. Corruption is
//! reported as [`StorageError::Corrupt`] naming the file, never as a panic or as samples
//! that were not written.

mod chunks;
mod id;
mod meta;
mod writer;

#[cfg(test)]
mod tests;

pub use crate::index::{BlockIndex, BlockSeriesRef};
pub use chunks::{BlockChunkRef, MAX_SEGMENT_SIZE};
pub use id::{ID_LEN, is_block_id, new_block_id};
pub use meta::{BlockMeta, META_FILE, META_VERSION};
pub use writer::{BlockWriter, ChunkInput, TMP_SUFFIX, remove_tmp_dirs};

use std::path::{Path, PathBuf};

use crate::chunkenc::{Encoding, SampleIter};
use crate::error::StorageError;
use crate::matcher::Matcher;
use crate::mmap::MappedFile;
use crate::postings::{IndexReader, postings_for_matchers};
use crate::{Labels, Sample};
use chunks::SegmentReader;

/// File name of a block's index.
pub const INDEX_FILE: &str = "index";
/// Directory name of a block's chunk segments.
pub const CHUNKS_DIR: &str = "chunks";

/// Where one chunk of a series is and which times it covers (inclusive, ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub min_time: i64,
    pub max_time: i64,
    pub chunk_ref: BlockChunkRef,
}

impl ChunkMeta {
    /// Whether the chunk may hold samples in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_time <= maxt && mint <= self.max_time
    }
}

/// An open block. Holds its files mapped until dropped; `Send + Sync`, and every method
/// takes `&self`, so one `Block` can serve concurrent queries.
///
/// Nothing may modify a block's files while it is open (they are mapped); the engine never
/// does, and removes a block only by deleting its whole directory, which is safe while
/// mapped.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: BlockIndex,
    chunks: SegmentReader,
    size: u64,
    /// Set when a read found damage; the database then quarantines the block.
    damaged: std::sync::atomic::AtomicBool,
}

// Queries share blocks across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Block>();
};

impl Block {
    /// Opens the block in `dir`, validating it as described in the module docs.
    pub fn open(dir: &Path) -> Result<Block, StorageError> {
        let meta = meta::read_meta(dir)?;
        let meta_path = dir.join(META_FILE);
        if dir.file_name().and_then(|n| n.to_str()) != Some(meta.id.as_str()) {
            return Err(StorageError::corrupt(
                &meta_path,
                format!("id {:?} does not match the block's directory name", meta.id),
            ));
        }
        let index_path = dir.join(INDEX_FILE);
        // SAFETY: a published block's files are never modified (see the type's docs).
        let index_file = unsafe { MappedFile::open(&index_path) }?;
        let index = BlockIndex::new(index_file)?;
        check_meta_against_index(&meta, &index)
            .map_err(|m| StorageError::corrupt(&meta_path, m))?;
        // SAFETY: as above.
        let chunks = unsafe { SegmentReader::open(&dir.join(CHUNKS_DIR)) }?;
        let meta_len = std::fs::metadata(&meta_path)
            .map_err(StorageError::io(&meta_path))?
            .len();
        let size = index.size_bytes() + chunks.size_bytes() + meta_len;
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            size,
            damaged: Default::default(),
        })
    }

    /// Records that a read of this block found damage (see [`Block::is_damaged`]).
    pub fn mark_damaged(&self) {
        self.damaged
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a read found this block damaged.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the block occupies on disk (index, chunk segments and metadata).
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// The block's index, for label matching.
    pub fn index(&self) -> &BlockIndex {
        &self.index
    }

    /// The label set and chunk metas of series `r` (a reference from the block's
    /// postings lists).
    pub fn series(
        &self,
        r: impl Into<BlockSeriesRef>,
    ) -> Result<(Labels, Vec<ChunkMeta>), StorageError> {
        self.index.series(r.into())
    }

    /// The encoding and bytes of a chunk, after checking its CRC32C. The bytes borrow
    /// the block's mapping.
    pub fn chunk(&self, r: BlockChunkRef) -> Result<(Encoding, &[u8]), StorageError> {
        self.chunks.chunk(r)
    }

    /// Decodes the chunk of `c`, checking that its samples are strictly increasing in
    /// time and lie within the meta's range.
    pub fn samples(&self, c: &ChunkMeta) -> Result<Vec<Sample>, StorageError> {
        let mut out = Vec::new();
        self.decode_range(c, i64::MIN, i64::MAX, &mut out)?;
        Ok(out)
    }

    /// Appends the samples of chunk `c` in `[mint, maxt]` to `out`, with the checks of
    /// [`Block::samples`] on every sample decoded; decoding stops after `maxt`.
    pub fn decode_range(
        &self,
        c: &ChunkMeta,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), StorageError> {
        let (enc, data) = self.chunk(c.chunk_ref)?;
        let fail = |msg: String| {
            StorageError::corrupt(
                self.chunks.segment_path(c.chunk_ref),
                format!("chunk at offset {}: {msg}", c.chunk_ref.offset()),
            )
        };
        let it = SampleIter::new(enc, data).map_err(|e| fail(e.to_string()))?;
        if it.num_samples() == 0 {
            return Err(fail("no samples".into()));
        }
        let before = out.len();
        let mut it = it;
        if let Err(e) = it.decode_range(mint, maxt, out) {
            out.truncate(before);
            return Err(fail(e.to_string()));
        }
        // Every sample kept lies within the meta's range, strictly increasing (samples
        // before `mint` are decoded but not kept, nor checked).
        let kept = &out[before..];
        let bad = kept
            .iter()
            .position(|s| s.t < c.min_time || s.t > c.max_time)
            .or_else(|| {
                kept.windows(2)
                    .position(|w| w[0].t >= w[1].t)
                    .map(|i| i + 1)
            });
        if let Some(i) = bad {
            let msg = format!(
                "sample at {} out of order or outside [{}, {}]",
                kept[i].t, c.min_time, c.max_time
            );
            out.truncate(before);
            return Err(fail(msg));
        }
        Ok(())
    }

    /// The series matching `ms` with the chunks that overlap `[mint, maxt]`, in the order
    /// of the index (sorted by label set); series without such chunks are left out.
    /// Nothing is decoded.
    pub fn select_chunks(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(Labels, Vec<ChunkMeta>)>, StorageError> {
        let mut out = Vec::new();
        if mint > maxt || maxt < self.meta.min_time || mint > self.meta.max_time {
            return Ok(out);
        }
        for r in postings_for_matchers(&self.index, ms)? {
            let (labels, mut chunks) = self.series(r)?;
            chunks.retain(|c| c.overlaps(mint, maxt));
            if !chunks.is_empty() {
                out.push((labels, chunks));
            }
        }
        Ok(out)
    }

    /// The series matching `ms` (see [`postings_for_matchers`]) with their samples in
    /// `[mint, maxt]`, sorted by label set; series without samples in the range are left
    /// out.
    ///
    /// Cost: the postings work of the matchers, then for each matching series one index
    /// entry plus the decoding of the chunks that overlap the range.
    pub fn select(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(Labels, Vec<Sample>)>, StorageError> {
        let mut out = Vec::new();
        if mint > maxt || maxt < self.meta.min_time || mint > self.meta.max_time {
            return Ok(out);
        }
        for r in postings_for_matchers(&self.index, ms)? {
            let (labels, chunks) = self.series(r)?;
            let mut samples = Vec::new();
            for c in chunks.iter().filter(|c| c.overlaps(mint, maxt)) {
                self.decode_range(c, mint, maxt, &mut samples)?;
            }
            if !samples.is_empty() {
                out.push((labels, samples));
            }
        }
        Ok(out)
    }

    /// Reads and checks every byte of the block: the whole-section checksums of the index
    /// and every chunk of every series. For offline checks; O(block size).
    pub fn verify(&self) -> Result<(), StorageError> {
        self.index.verify_sections()?;
        let refs = self.index.all_postings()?;
        let (mut chunks, mut samples) = (0u64, 0u64);
        for r in &refs {
            let (_, metas) = self.series(*r)?;
            for c in &metas {
                samples += self.samples(c)?.len() as u64;
                chunks += 1;
            }
        }
        let got = (refs.len() as u64, chunks, samples);
        let want = (
            self.meta.num_series,
            self.meta.num_chunks,
            self.meta.num_samples,
        );
        if got != want {
            return Err(StorageError::corrupt(
                self.dir.join(INDEX_FILE),
                format!("holds (series, chunks, samples) {got:?}, meta.json says {want:?}"),
            ));
        }
        Ok(())
    }
}

/// `meta.json` must agree with the summary the index carries in its table of contents.
fn check_meta_against_index(meta: &BlockMeta, index: &BlockIndex) -> Result<(), String> {
    let want = meta.summary();
    let have = index.summary();
    let fields = [
        ("min_time", want.min_time == have.min_time),
        ("max_time", want.max_time == have.max_time),
        ("num_series", want.num_series == have.num_series),
        ("num_chunks", want.num_chunks == have.num_chunks),
        ("num_samples", want.num_samples == have.num_samples),
        ("level", want.level == have.level),
        ("sources", want.sources_crc == have.sources_crc),
    ];
    let bad: Vec<&str> = fields
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{} disagree with the index", bad.join(", ")))
    }
}
