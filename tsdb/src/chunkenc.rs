//! Chunk encodings: compressed runs of samples of one series.
//!
//! A chunk is a byte string whose encoding is persisted next to it as one [`Encoding`]
//! byte. Open chunks (the head's) are built sample by sample with an appender
//! ([`XorAppender`]); immutable chunks (the blocks') are built whole with [`encode_best`],
//! which picks the smaller of XOR and DoD for each chunk. Readers decode chunks with an
//! iterator that borrows the bytes ([`XorIter`], [`DodIter`], or [`SampleIter`] to
//! dispatch on the encoding), so chunks can be read in place from a memory map.
//!
//! Decoding never panics and never loops: whatever the bytes, a chunk yields at most the
//! sample count in its header, and a chunk whose stream ends before that count is an
//! error, not fewer samples.
//!
//! The byte layout of each encoding is documented in `tsdb/docs/format/` (XOR:
//! `chunks-xor.md`, DoD: `chunks-dod.md`).
//!
//! ```
//! use tsdb::chunkenc::{Encoding, SampleIter, XorAppender};
//!
//! let mut chunk = XorAppender::new();
//! chunk.append(1_700_000_000_000, 1.0);
//! chunk.append(1_700_000_015_000, f64::from_bits(tsdb::STALE_NAN_BITS));
//! // An open chunk is readable: its bytes always hold the samples appended so far.
//! let mut it = SampleIter::new(Encoding::Xor, chunk.bytes())?;
//! assert_eq!(it.next().transpose()?.map(|s| s.v), Some(1.0));
//! assert_eq!(it.next().transpose()?.map(|s| s.v.to_bits()), Some(tsdb::STALE_NAN_BITS));
//! assert!(it.next().is_none());
//! # Ok::<(), tsdb::chunkenc::ChunkError>(())
//! ```

mod bstream;
mod dod;
mod intcode;
mod varint;
mod xor;

pub use dod::{DodIter, encode_dod};
pub use xor::{XorAppender, XorIter};

use crate::Sample;
use std::fmt;

/// The most samples one chunk can hold: the header stores the count in 16 bits.
pub const MAX_SAMPLES_PER_CHUNK: usize = u16::MAX as usize;

/// Chunk encodings; persisted as one byte. New ones are appended, never renumbered.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Gorilla-style delta-of-delta timestamps and XOR-compressed float values.
    Xor = 1,
    /// Timestamps against a grid and decimal values as integers, bit-packed with
    /// per-chunk parameters; written whole, for immutable chunks.
    Dod = 2,
}

impl Encoding {
    /// The persisted byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl From<Encoding> for u8 {
    fn from(e: Encoding) -> u8 {
        e.as_u8()
    }
}

impl TryFrom<u8> for Encoding {
    type Error = ChunkError;

    fn try_from(b: u8) -> Result<Self, ChunkError> {
        match b {
            1 => Ok(Encoding::Xor),
            2 => Ok(Encoding::Dod),
            other => Err(ChunkError::UnknownEncoding(other)),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Xor => f.write_str("XOR"),
            Encoding::Dod => f.write_str("DoD"),
        }
    }
}

/// Errors decoding a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The encoding byte names no known encoding.
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
    /// The bytes end before the samples the header announces.
    #[error("chunk truncated")]
    Truncated,
    /// The bytes contradict the encoding.
    #[error("chunk corrupt: {0}")]
    Corrupt(&'static str),
}

/// An iterator over the samples of a chunk of any encoding.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per chunk read, kept on the stack: boxing would allocate per chunk"
)]
pub enum SampleIter<'a> {
    Xor(XorIter<'a>),
    Dod(DodIter<'a>),
}

impl<'a> SampleIter<'a> {
    /// An iterator over the chunk `bytes` encoded as `enc`.
    pub fn new(enc: Encoding, bytes: &'a [u8]) -> Result<Self, ChunkError> {
        match enc {
            Encoding::Xor => XorIter::new(bytes).map(SampleIter::Xor),
            Encoding::Dod => DodIter::new(bytes).map(SampleIter::Dod),
        }
    }

    /// Number of samples the chunk holds, per its header.
    pub fn num_samples(&self) -> usize {
        match self {
            SampleIter::Xor(it) => it.num_samples(),
            SampleIter::Dod(it) => it.num_samples(),
        }
    }

    /// Appends the samples in `[mint, maxt]` to `out`, stopping after `maxt`: what
    /// iterating and filtering gives, faster. On an error `out` may hold samples of the
    /// damaged chunk; the caller discards them.
    pub fn decode_range(
        &mut self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), ChunkError> {
        match self {
            SampleIter::Dod(it) => it.decode_range(mint, maxt, out),
            SampleIter::Xor(it) => filter_into(it.by_ref(), mint, maxt, out),
        }
    }
}

/// Appends the samples of `it` in `[mint, maxt]` to `out`, stopping after `maxt`.
pub(crate) fn filter_into(
    it: impl Iterator<Item = Result<Sample, ChunkError>>,
    mint: i64,
    maxt: i64,
    out: &mut Vec<Sample>,
) -> Result<(), ChunkError> {
    for s in it {
        let s = s?;
        if s.t > maxt {
            break;
        }
        if s.t >= mint {
            out.push(s);
        }
    }
    Ok(())
}

impl Iterator for SampleIter<'_> {
    type Item = Result<Sample, ChunkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SampleIter::Xor(it) => it.next(),
            SampleIter::Dod(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            SampleIter::Xor(it) => it.size_hint(),
            SampleIter::Dod(it) => it.size_hint(),
        }
    }
}

impl std::iter::FusedIterator for SampleIter<'_> {}

/// Encodes an immutable chunk in the encoding that makes it smallest, XOR on a tie.
///
/// Samples are normally sorted by time (any order and any values round-trip). Costs an
/// XOR and a DoD encoding of the samples, about ten times an XOR encoding alone.
///
/// # Panics
///
/// If there are more than [`MAX_SAMPLES_PER_CHUNK`] samples.
pub fn encode_best(samples: &[Sample]) -> (Encoding, Vec<u8>) {
    let dod = encode_dod(samples);
    // An XOR chunk of n >= 2 samples takes at least 12 bytes (count, first timestamp,
    // first value, first delta, first XOR bit) and 2 bits per further sample.
    let xor_floor = match samples.len() {
        0 => 2,
        1 => 11,
        n => 12 + (2 * (n - 2)).div_ceil(8),
    };
    if dod.len() < xor_floor {
        return (Encoding::Dod, dod);
    }
    let mut xor = XorAppender::new();
    for s in samples {
        xor.append(s.t, s.v);
    }
    if dod.len() < xor.bytes().len() {
        (Encoding::Dod, dod)
    } else {
        (Encoding::Xor, xor.into_bytes())
    }
}

/// Decodes every sample of a chunk.
pub fn decode_all(encoding: Encoding, bytes: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let (mut out, it) = match SampleIter::new(encoding, bytes)? {
        SampleIter::Xor(it) => (
            Vec::with_capacity(it.capacity_hint(bytes.len())),
            SampleIter::Xor(it),
        ),
        // Any count is possible: a DoD sample can take zero bits.
        SampleIter::Dod(it) => (Vec::with_capacity(it.num_samples()), SampleIter::Dod(it)),
    };
    for s in it {
        out.push(s?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_bytes_are_stable() {
        assert_eq!(Encoding::Xor.as_u8(), 1);
        assert_eq!(u8::from(Encoding::Xor), 1);
        assert_eq!(Encoding::try_from(1), Ok(Encoding::Xor));
        assert_eq!(Encoding::Dod.as_u8(), 2);
        assert_eq!(Encoding::try_from(2), Ok(Encoding::Dod));
    }

    #[test]
    fn unknown_encoding_bytes_are_rejected() {
        for b in [0u8, 3, 0x7f, 0xff] {
            assert_eq!(Encoding::try_from(b), Err(ChunkError::UnknownEncoding(b)));
        }
    }

    #[test]
    fn decode_all_dispatches_on_encoding() {
        let mut a = XorAppender::new();
        a.append(1_000, 1.5);
        a.append(16_000, 2.5);
        let got = decode_all(Encoding::Xor, a.bytes()).unwrap();
        assert_eq!(
            got,
            vec![Sample { t: 1_000, v: 1.5 }, Sample { t: 16_000, v: 2.5 }]
        );
        let it = SampleIter::new(Encoding::Xor, a.bytes()).unwrap();
        assert_eq!(it.num_samples(), 2);
        assert_eq!(it.count(), 2);
    }

    #[test]
    fn decode_all_reports_truncation() {
        let mut a = XorAppender::new();
        a.append(1, 1.0);
        let bytes = a.bytes();
        assert_eq!(
            decode_all(Encoding::Xor, &bytes[..bytes.len() - 1]),
            Err(ChunkError::Truncated)
        );
        assert_eq!(decode_all(Encoding::Xor, &[]), Err(ChunkError::Truncated));
    }
}
