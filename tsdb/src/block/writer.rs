//! Builds a block and publishes it atomically.
//!
//! A [`BlockWriter`] creates `<blocks>/<id>.tmp/`, streams chunks into its segment files
//! as series are added, and on [`BlockWriter::finish`] writes the index, fsyncs every
//! file, writes `meta.json` last, fsyncs the directory and renames it to `<blocks>/<id>`.
//! Readers therefore see either no block or a complete one. A writer that fails or is
//! dropped before finishing removes its temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use super::chunks::{MAX_SEGMENT_SIZE, SegmentWriter, sync_dir};
use super::id::new_block_id;
use super::meta::{BlockMeta, write_meta};
use super::{CHUNKS_DIR, ChunkMeta, INDEX_FILE};
use crate::Labels;
use crate::chunkenc::{Encoding, SampleIter};
use crate::error::StorageError;
use crate::index::write_index;

/// Suffix of the directory a block is built in.
pub const TMP_SUFFIX: &str = ".tmp";

/// One chunk handed to [`BlockWriter::add_series`]: min time, max time, encoding byte,
/// number of samples, chunk bytes.
pub type ChunkInput<'a> = (i64, i64, u8, u16, &'a [u8]);

/// Writes one block. See the module docs for the publishing protocol.
pub struct BlockWriter {
    blocks_dir: PathBuf,
    id: String,
    /// `<blocks>/<id>.tmp`; removed on drop unless the block was published.
    tmp: PathBuf,
    min_time: i64,
    max_time: i64,
    /// The earliest and latest timestamps of the chunks added so far.
    data_range: Option<(i64, i64)>,
    segments: SegmentWriter,
    /// Every series added so far with its chunk metas, for the index. Label sets are one
    /// allocation each, so this costs about the size of the index being built.
    series: Vec<(Labels, Vec<ChunkMeta>)>,
    num_chunks: u64,
    num_samples: u64,
    /// Set once the directory has been renamed into place.
    published: bool,
}

impl BlockWriter {
    /// Starts a block whose chunks must lie within `[min_time, max_time]` (inclusive, ms)
    /// under `blocks_dir`, which is created if needed. The published block's range is
    /// that of the chunks it got (this range, if it got none).
    pub fn new(blocks_dir: &Path, min_time: i64, max_time: i64) -> Result<Self, StorageError> {
        if min_time > max_time {
            return Err(StorageError::InvalidInput(format!(
                "block time range [{min_time}, {max_time}] is empty"
            )));
        }
        fs::create_dir_all(blocks_dir).map_err(StorageError::io(blocks_dir))?;
        let mut attempts = 0;
        let (id, tmp) = loop {
            let id = new_block_id();
            let tmp = blocks_dir.join(format!("{id}{TMP_SUFFIX}"));
            let taken = blocks_dir.join(&id).exists();
            match fs::create_dir(&tmp) {
                Ok(()) if !taken => break (id, tmp),
                Ok(()) => {
                    let _ = fs::remove_dir(&tmp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StorageError::io(&tmp)(e)),
            }
            attempts += 1;
            if attempts == 8 {
                return Err(StorageError::io(blocks_dir)(std::io::Error::other(
                    "no unused block id found",
                )));
            }
        };
        let chunks_dir = tmp.join(CHUNKS_DIR);
        let w = BlockWriter {
            blocks_dir: blocks_dir.to_path_buf(),
            id,
            tmp,
            min_time,
            max_time,
            data_range: None,
            segments: SegmentWriter::new(chunks_dir.clone(), MAX_SEGMENT_SIZE),
            series: Vec::new(),
            num_chunks: 0,
            num_samples: 0,
            published: false,
        };
        // On failure, dropping `w` removes the temporary directory.
        fs::create_dir(&chunks_dir).map_err(StorageError::io(&chunks_dir))?;
        Ok(w)
    }

    /// The id the block will have.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Limits segment files to `n` bytes, to exercise segment cutting in tests.
    #[cfg(test)]
    pub(crate) fn set_max_segment_size(&mut self, n: u64) {
        self.segments = SegmentWriter::new(self.tmp.join(CHUNKS_DIR), n);
    }

    /// Adds a series and writes its chunks.
    ///
    /// Series must be added in strictly increasing [`Labels`] order, with at least one
    /// label. Each chunk is `(min_time, max_time, encoding, samples, bytes)`: its samples
    /// are sorted and lie within `[min_time, max_time]`, which lies within the block's
    /// range; chunks are sorted by time and do not overlap. A broken precondition is
    /// reported as [`StorageError::InvalidInput`] before anything is written for the series
    /// (as far as it can be checked without decoding the chunks).
    pub fn add_series(
        &mut self,
        labels: &Labels,
        chunks: &[ChunkInput<'_>],
    ) -> Result<(), StorageError> {
        let invalid = |msg: String| StorageError::InvalidInput(format!("series {labels}: {msg}"));
        if labels.is_empty() {
            return Err(invalid("no labels".into()));
        }
        if labels.iter().any(|(n, v)| n.is_empty() || v.is_empty()) {
            return Err(invalid("empty label name or value".into()));
        }
        if let Some((last, _)) = self.series.last()
            && last >= labels
        {
            return Err(invalid(format!("added after {last}")));
        }
        let mut prev_max: Option<i64> = None;
        for &(mint, maxt, enc, n, data) in chunks {
            if mint > maxt || mint < self.min_time || maxt > self.max_time {
                return Err(invalid(format!(
                    "chunk [{mint}, {maxt}] outside the block's [{}, {}]",
                    self.min_time, self.max_time
                )));
            }
            if prev_max.is_some_and(|p| p >= mint) {
                return Err(invalid("chunks overlap or are out of order".into()));
            }
            prev_max = Some(maxt);
            let enc = Encoding::try_from(enc).map_err(|e| invalid(e.to_string()))?;
            let header = SampleIter::new(enc, data).map_err(|e| invalid(e.to_string()))?;
            if n == 0 || header.num_samples() != usize::from(n) {
                return Err(invalid(format!(
                    "chunk says {} samples, caller says {n}",
                    header.num_samples()
                )));
            }
        }
        let mut metas = Vec::with_capacity(chunks.len());
        for &(min_time, max_time, enc, n, data) in chunks {
            let enc = Encoding::try_from(enc).map_err(|e| invalid(e.to_string()))?;
            let chunk_ref = self.segments.write(enc, data)?;
            metas.push(ChunkMeta {
                min_time,
                max_time,
                chunk_ref,
            });
            self.num_samples += u64::from(n);
            self.data_range = Some(match self.data_range {
                Some((lo, hi)) => (lo.min(min_time), hi.max(max_time)),
                None => (min_time, max_time),
            });
        }
        self.num_chunks += metas.len() as u64;
        self.series.push((labels.clone(), metas));
        Ok(())
    }

    /// Writes the index and `meta.json`, fsyncs, and publishes the block as
    /// `<blocks>/<id>`.
    ///
    /// `sources` are the ids of the level-1 blocks whose data the new block holds; if
    /// empty, the block is its own source. On error the temporary directory is removed,
    /// except when only the final fsync of `blocks_dir` failed: the block is then in
    /// place, but its rename may not survive a crash.
    pub fn finish(
        mut self,
        level: u32,
        mut sources: Vec<String>,
    ) -> Result<BlockMeta, StorageError> {
        self.segments.finish()?;
        if sources.is_empty() {
            sources.push(self.id.clone());
        }
        sources.sort();
        sources.dedup();
        // The meta records the range the data spans, not the window the block was cut
        // from: a reader skips a block whose data ends before its query starts, so a
        // block flushed a minute ago is not read by every query over the last five.
        let (min_time, max_time) = self.data_range.unwrap_or((self.min_time, self.max_time));
        let meta = BlockMeta {
            id: self.id.clone(),
            min_time,
            max_time,
            num_series: self.series.len() as u64,
            num_chunks: self.num_chunks,
            num_samples: self.num_samples,
            level,
            sources,
        };
        write_index(&self.tmp.join(INDEX_FILE), &self.series, meta.summary())?;
        self.series = Vec::new();
        write_meta(&self.tmp, &meta)?;
        sync_dir(&self.tmp)?;
        let dst = self.blocks_dir.join(&self.id);
        fs::rename(&self.tmp, &dst).map_err(StorageError::io(&dst))?;
        self.published = true;
        sync_dir(&self.blocks_dir)?;
        Ok(meta)
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        match fs::remove_dir_all(&self.tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(
                path = %self.tmp.display(),
                %err,
                "failed to remove unfinished block directory"
            ),
        }
    }
}

/// Removes the temporary directories of blocks whose writing was interrupted (by a crash:
/// a writer that returns or is dropped cleans up after itself). Call before any writer
/// is started in `blocks_dir`. Returns how many were removed.
pub fn remove_tmp_dirs(blocks_dir: &Path) -> Result<usize, StorageError> {
    let mut n = 0;
    let entries = match fs::read_dir(blocks_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io(blocks_dir)(e)),
    };
    for e in entries {
        let e = e.map_err(StorageError::io(blocks_dir))?;
        let name = e.file_name();
        let is_tmp = name
            .to_str()
            .and_then(|s| s.strip_suffix(TMP_SUFFIX))
            .is_some_and(super::id::is_block_id);
        if is_tmp {
            let p = e.path();
            fs::remove_dir_all(&p).map_err(StorageError::io(&p))?;
            n += 1;
        }
    }
    Ok(n)
}
