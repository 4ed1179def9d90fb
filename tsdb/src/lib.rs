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
//! - `labels`: [`Labels`], the identity of a series, in one allocation.
//! - `matcher`: label matchers with Prometheus semantics.

pub mod labels;
pub mod matcher;

pub use labels::Labels;
pub use matcher::{MatchOp, Matcher};

/// One sample: a timestamp in milliseconds since the Unix epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// The NaN bit pattern Prometheus uses to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
