//! A block's `meta.json`: its id, time range, statistics and compaction lineage.
//!
//! [`BlockMeta`] serializes to exactly the document described in
//! `tsdb/docs/format/meta.md`. `meta.json` is the last file written into a block, so its
//! presence marks the block as complete; its content must agree with the summary in the
//! block's index (checked by [`crate::block::Block::open`]).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::index::IndexSummary;

/// The `meta.json` format version this code writes and reads.
pub const META_VERSION: u32 = 1;
/// The file name of a block's metadata.
pub const META_FILE: &str = "meta.json";

/// What a block holds, as recorded in its `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "MetaFile", try_from = "MetaFile")]
pub struct BlockMeta {
    /// The block's id, also its directory name: 26 characters, sortable by creation time.
    pub id: String,
    /// Earliest sample timestamp the block may hold, in ms (inclusive).
    pub min_time: i64,
    /// Latest sample timestamp the block may hold, in ms (inclusive).
    pub max_time: i64,
    pub num_series: u64,
    pub num_chunks: u64,
    pub num_samples: u64,
    /// 1 for a block persisted from the head, one more than its highest input for a
    /// compacted block.
    pub level: u32,
    /// Ids of the level-1 blocks whose data this block holds (itself, for a level-1
    /// block), sorted.
    pub sources: Vec<String>,
}

impl BlockMeta {
    /// The summary the index stores to vouch for this metadata.
    pub(crate) fn summary(&self) -> IndexSummary {
        IndexSummary {
            min_time: self.min_time,
            max_time: self.max_time,
            num_series: self.num_series,
            num_chunks: self.num_chunks,
            num_samples: self.num_samples,
            level: self.level,
            sources_crc: IndexSummary::sources_crc(&self.sources),
        }
    }
}

/// The document as it is on disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    id: String,
    version: u32,
    min_time: i64,
    max_time: i64,
    stats: Stats,
    compaction: Compaction,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stats {
    num_series: u64,
    num_chunks: u64,
    num_samples: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Compaction {
    level: u32,
    sources: Vec<String>,
}

impl From<BlockMeta> for MetaFile {
    fn from(m: BlockMeta) -> MetaFile {
        MetaFile {
            id: m.id,
            version: META_VERSION,
            min_time: m.min_time,
            max_time: m.max_time,
            stats: Stats {
                num_series: m.num_series,
                num_chunks: m.num_chunks,
                num_samples: m.num_samples,
            },
            compaction: Compaction {
                level: m.level,
                sources: m.sources,
            },
        }
    }
}

impl TryFrom<MetaFile> for BlockMeta {
    type Error = String;

    fn try_from(f: MetaFile) -> Result<BlockMeta, String> {
        if f.version != META_VERSION {
            return Err(format!("unsupported version {}", f.version));
        }
        if f.min_time > f.max_time {
            return Err(format!(
                "min_time {} after max_time {}",
                f.min_time, f.max_time
            ));
        }
        Ok(BlockMeta {
            id: f.id,
            min_time: f.min_time,
            max_time: f.max_time,
            num_series: f.stats.num_series,
            num_chunks: f.stats.num_chunks,
            num_samples: f.stats.num_samples,
            level: f.compaction.level,
            sources: f.compaction.sources,
        })
    }
}

/// Writes `meta` to `dir/meta.json` and fsyncs it. The file must not exist yet.
pub(crate) fn write_meta(dir: &Path, meta: &BlockMeta) -> Result<(), StorageError> {
    let path = dir.join(META_FILE);
    let mut json = serde_json::to_vec_pretty(meta)
        .map_err(|e| StorageError::InvalidInput(format!("cannot serialize block meta: {e}")))?;
    json.push(b'\n');
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(StorageError::io(&path))?;
    f.write_all(&json).map_err(StorageError::io(&path))?;
    f.sync_all().map_err(StorageError::io(&path))
}

/// Reads and validates `dir/meta.json`.
pub(crate) fn read_meta(dir: &Path) -> Result<BlockMeta, StorageError> {
    let path = dir.join(META_FILE);
    let b = fs::read(&path).map_err(StorageError::io(&path))?;
    serde_json::from_slice(&b).map_err(|e| StorageError::corrupt(&path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlockMeta {
        BlockMeta {
            id: "01JAAAAAAAAAAAAAAAAAAAAAAA".into(),
            min_time: 1000,
            max_time: 1999,
            num_series: 2,
            num_chunks: 3,
            num_samples: 400,
            level: 2,
            sources: vec!["01J0".into(), "01J1".into()],
        }
    }

    #[test]
    fn meta_serializes_as_the_documented_document() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "01JAAAAAAAAAAAAAAAAAAAAAAA",
                "version": 1,
                "min_time": 1000,
                "max_time": 1999,
                "stats": {"num_series": 2, "num_chunks": 3, "num_samples": 400},
                "compaction": {"level": 2, "sources": ["01J0", "01J1"]},
            })
        );
        let back: BlockMeta = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn unknown_version_and_fields_are_rejected() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = 2.into();
        assert!(serde_json::from_value::<BlockMeta>(v.clone()).is_err());
        v["version"] = 1.into();
        v["extra"] = 1.into();
        assert!(serde_json::from_value::<BlockMeta>(v).is_err());
    }
}
