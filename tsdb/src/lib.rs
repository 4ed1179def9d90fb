//! Minos' storage engine.
//!
//! Samples are `(i64 milliseconds, f64)`; a series is a sorted label set. Writes go to the
//! write-ahead log, then to the head (recent data in memory as compressed chunks, full
//! chunks memory-mapped from disk); the head is persisted into immutable, memory-mapped
//! blocks that background compaction merges into larger ranges, and retention drops whole
//! blocks. The engine knows nothing of HTTP, of who feeds it, or of rules.
//!
//! # Layout
//!
//! - `block`: immutable, memory-mapped blocks: [`block::BlockWriter`] and [`block::Block`].
//! - `chunkenc`: chunk encodings; the XOR appender and zero-copy sample iterators.
//! - `compact`: merging blocks into one, newer samples winning.
//! - `error`: [`error::StorageError`], what reading and writing the engine's files reports.
//! - `index`: a block's index file (symbols, series, postings), read in place.
//! - `labels`: [`Labels`], the identity of a series, in one allocation.
//! - `matcher`: label matchers with Prometheus semantics.
//! - `mmap`: read-only memory maps of the engine's files, with a read() fallback.
//! - `postings`: postings lists and label matching over any [`postings::IndexReader`].
//! - `wal`: the segmented, checksummed write-ahead log and its record payloads.

pub mod block;
pub mod chunkenc;
pub mod compact;
pub mod db;
pub mod error;
pub mod head;
pub mod index;
pub mod labels;
pub mod matcher;
pub mod mmap;
pub mod postings;
pub mod select;
pub mod status;
pub mod wal;

pub use db::{
    AppendError, AppendReport, AppendSink, Db, OpenError, Options, QueryError, SeriesSamples,
    StoredSeries, now_ms,
};
pub use error::StorageError;
pub use head::Reject;
pub use labels::Labels;
pub use matcher::{MatchOp, Matcher};
pub use select::SelectedSeries;
pub use wal::SyncPolicy;

/// One sample: a timestamp in milliseconds since the Unix epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// The NaN bit pattern Prometheus uses to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
