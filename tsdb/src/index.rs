//! The block index: symbols, series, postings and label-value tables in one file.
//!
//! A block's `index` file maps label matchers to series and series to the chunks that hold
//! their samples. [`BlockIndex`] reads it in place from a memory map and implements
//! [`crate::postings::IndexReader`]; the writer is crate-private and used by
//! [`crate::block::BlockWriter`]. The byte layout is documented in
//! `tsdb/docs/format/index.md`; the constants below are its single copy in code.
//!
//! On open, the header, the table of contents and the small sections (symbols, label-value
//! tables, label names) are checksummed and validated in full. The series and postings
//! sections can be large, so each of their entries carries its own CRC32C, verified every
//! time the entry is read.

pub(crate) mod encoding;
mod reader;
mod writer;

pub use reader::BlockIndex;
pub(crate) use writer::write_index;

use encoding::{Decbuf, DecodeError, put_u32, put_u64};

/// `"MBIX"` read as a little-endian u32: the first four bytes of an index file.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MBIX");
/// The index format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Magic, version and padding.
pub const HEADER_LEN: usize = 4 + 1 + 3;

/// Every section but the TOC is `len <8 byte> | body <len> | crc32c(body) <4 byte>`.
pub const SECTION_LEN_LEN: usize = 8;
/// Length of a CRC32C (sections, series entries, postings lists).
pub const CRC_LEN: usize = 4;

/// Series entries start at file offsets that are multiples of this; a series reference is
/// the entry's offset divided by it.
pub const SERIES_ALIGN: u64 = 16;

/// One entry of a label-value table: `value ref <4> | postings offset <8>`.
pub const LABEL_VALUE_ENTRY_LEN: usize = 4 + 8;
/// Header of a label-value table: `name ref <4> | count <4>`.
pub const LABEL_VALUE_TABLE_HEADER_LEN: usize = 4 + 4;
/// One entry of the label-name table: `name ref <4> | table offset <8>`.
pub const LABEL_NAME_ENTRY_LEN: usize = 4 + 8;

// The table of contents, at the very end of the file. Offsets within it:
const TOC_SYMBOLS: usize = 0;
const TOC_SERIES: usize = TOC_SYMBOLS + 8;
const TOC_POSTINGS: usize = TOC_SERIES + 8;
const TOC_LABEL_VALUES: usize = TOC_POSTINGS + 8;
const TOC_LABEL_NAMES: usize = TOC_LABEL_VALUES + 8;
const TOC_ALL_POSTINGS: usize = TOC_LABEL_NAMES + 8;
const TOC_MIN_TIME: usize = TOC_ALL_POSTINGS + 8;
const TOC_MAX_TIME: usize = TOC_MIN_TIME + 8;
const TOC_NUM_SERIES: usize = TOC_MAX_TIME + 8;
const TOC_NUM_CHUNKS: usize = TOC_NUM_SERIES + 8;
const TOC_NUM_SAMPLES: usize = TOC_NUM_CHUNKS + 8;
const TOC_LEVEL: usize = TOC_NUM_SAMPLES + 8;
const TOC_SOURCES_CRC: usize = TOC_LEVEL + 4;
const TOC_CRC: usize = TOC_SOURCES_CRC + 4;
/// Length of the table of contents, its CRC32C included.
pub const TOC_LEN: usize = TOC_CRC + CRC_LEN;

/// Where a series' entry lives in a block's index: the entry's byte offset divided by
/// [`SERIES_ALIGN`]. Postings lists of a block hold these (as plain `u64`s, since the
/// head's postings share [`crate::postings::IndexReader`]); they are ordered like the
/// series' label sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockSeriesRef(pub u64);

impl BlockSeriesRef {
    /// The byte offset of the entry in the index file, if it fits in 64 bits.
    pub fn offset(self) -> Option<u64> {
        self.0.checked_mul(SERIES_ALIGN)
    }
}

impl From<u64> for BlockSeriesRef {
    fn from(r: u64) -> Self {
        BlockSeriesRef(r)
    }
}

/// What the index records about its block, so that `meta.json` can be checked against
/// it: the TOC fields after the section offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexSummary {
    pub min_time: i64,
    pub max_time: i64,
    pub num_series: u64,
    pub num_chunks: u64,
    pub num_samples: u64,
    pub level: u32,
    /// CRC32C of the block's compaction sources, each followed by a `\n` byte.
    pub sources_crc: u32,
}

impl IndexSummary {
    /// The checksum stored in `sources_crc` for a list of source block ids.
    pub(crate) fn sources_crc(sources: &[String]) -> u32 {
        sources.iter().fold(0, |crc, s| {
            crc32c::crc32c_append(crc32c::crc32c_append(crc, s.as_bytes()), b"\n")
        })
    }
}

/// The decoded table of contents: absolute file offsets of each section's `len` field,
/// of the all-series postings list, and the block summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Toc {
    pub symbols: u64,
    pub series: u64,
    pub postings: u64,
    pub label_values: u64,
    pub label_names: u64,
    pub all_postings: u64,
    pub summary: IndexSummary,
}

impl Toc {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(TOC_LEN);
        for off in [
            self.symbols,
            self.series,
            self.postings,
            self.label_values,
            self.label_names,
            self.all_postings,
        ] {
            put_u64(&mut b, off);
        }
        let s = &self.summary;
        b.extend_from_slice(&s.min_time.to_le_bytes());
        b.extend_from_slice(&s.max_time.to_le_bytes());
        put_u64(&mut b, s.num_series);
        put_u64(&mut b, s.num_chunks);
        put_u64(&mut b, s.num_samples);
        put_u32(&mut b, s.level);
        put_u32(&mut b, s.sources_crc);
        debug_assert_eq!(b.len(), TOC_CRC);
        let crc = crc32c::crc32c(&b);
        put_u32(&mut b, crc);
        b
    }

    /// Decodes and checksums the last [`TOC_LEN`] bytes of a file.
    pub(crate) fn decode(b: &[u8]) -> Result<Toc, DecodeError> {
        if b.len() != TOC_LEN {
            return Err("table of contents has the wrong length");
        }
        let mut d = Decbuf::new(&b[TOC_CRC..]);
        if d.u32()? != crc32c::crc32c(&b[..TOC_CRC]) {
            return Err("table of contents checksum mismatch");
        }
        let mut d = Decbuf::new(&b[..TOC_CRC]);
        Ok(Toc {
            symbols: d.u64()?,
            series: d.u64()?,
            postings: d.u64()?,
            label_values: d.u64()?,
            label_names: d.u64()?,
            all_postings: d.u64()?,
            summary: IndexSummary {
                min_time: d.i64()?,
                max_time: d.i64()?,
                num_series: d.u64()?,
                num_chunks: d.u64()?,
                num_samples: d.u64()?,
                level: d.u32()?,
                sources_crc: d.u32()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_offsets_match_the_documented_layout() {
        // tsdb/docs/format/index.md: six 8-byte offsets, five 8-byte summary fields, two
        // 4-byte fields, then the CRC32C.
        assert_eq!(TOC_MIN_TIME, 48);
        assert_eq!(TOC_LEVEL, 88);
        assert_eq!(TOC_LEN, 100);
    }

    #[test]
    fn toc_round_trips_and_detects_flips() {
        let toc = Toc {
            symbols: 8,
            series: 100,
            postings: 200,
            label_values: 300,
            label_names: 400,
            all_postings: 212,
            summary: IndexSummary {
                min_time: -5,
                max_time: 7,
                num_series: 3,
                num_chunks: 4,
                num_samples: 5,
                level: 2,
                sources_crc: 9,
            },
        };
        let b = toc.encode();
        assert_eq!(Toc::decode(&b), Ok(toc));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(Toc::decode(&c).is_err(), "flip at {i}");
        }
    }
}
