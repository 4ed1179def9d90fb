//! The XOR chunk: Gorilla compression with Prometheus' bit layout.
//!
//! Timestamps are stored as a delta of deltas in variable-width buckets, values as the XOR
//! with the previous value inside a window of meaningful bits. The layout, bit by bit, is
//! in `tsdb/docs/format/chunks-xor.md`; the constants below are the single copy of it in
//! code. All timestamp arithmetic wraps and the widest bucket holds any 64-bit
//! delta of deltas, so every `i64` sequence and every `f64` bit pattern round-trips.

use super::bstream::{BitReader, BitWriter, ReadBits};
use super::varint::{unzigzag, zigzag};
use super::{ChunkError, MAX_SAMPLES_PER_CHUNK};
use crate::Sample;

/// Length of the sample count header that precedes the bit stream.
const HEADER_LEN: usize = 2;

/// Initial allocation of an appender: a typical 120-sample chunk fits.
const INITIAL_CAPACITY: usize = 128;

/// Delta-of-delta buckets after the `0` (unchanged delta) case: the prefix bits and their
/// count, then the payload width. A delta of delta `d` fits a payload width `w` when
/// `-(2^(w-1) - 1) <= d <= 2^(w-1)` (Prometheus' range, one more on the positive side).
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// Prefix of the 64-bit delta-of-delta escape.
const DOD_ESCAPE: (u64, u32) = (0b1111, 4);

/// Width of the leading-zero count in a new XOR window; counts are clamped to 31.
const LEADING_BITS: u32 = 5;

/// Width of the meaningful-bit count in a new XOR window; 64 is written as 0.
const SIGBITS_BITS: u32 = 6;

/// Marks "no XOR window yet" in the appender.
const NO_WINDOW: u32 = u32::MAX;

/// Builds an XOR chunk one sample at a time.
///
/// The buffer is a complete chunk after every append: the count header is rewritten
/// each time, so [`Self::bytes`] of an open chunk can be read while it is being filled.
#[derive(Debug, Clone)]
pub struct XorAppender {
    /// Header plus bit stream.
    w: BitWriter,
    /// Samples appended so far; also stored in the header.
    count: usize,
    /// Timestamp of the first sample.
    first_t: i64,
    /// Timestamp of the last sample.
    t: i64,
    /// Last timestamp delta, as a wrapping `u64`.
    t_delta: u64,
    /// The last value and the current XOR window.
    vals: XorValues,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// An empty chunk (its bytes already decode, to no samples).
    pub fn new() -> Self {
        XorAppender {
            w: BitWriter::with_prefix(&[0; HEADER_LEN], INITIAL_CAPACITY),
            count: 0,
            first_t: 0,
            t: 0,
            t_delta: 0,
            vals: XorValues::writer(0),
        }
    }

    /// Appends a sample. Any timestamp is accepted (order and gaps are the caller's
    /// business) and any value bit pattern is kept exactly.
    ///
    /// # Panics
    ///
    /// If the chunk already holds [`MAX_SAMPLES_PER_CHUNK`] samples: callers cut a new
    /// chunk before that.
    pub fn append(&mut self, t: i64, v: f64) {
        assert!(
            self.count < MAX_SAMPLES_PER_CHUNK,
            "chunk already holds {MAX_SAMPLES_PER_CHUNK} samples"
        );
        let v = v.to_bits();
        match self.count {
            0 => {
                self.write_varint(zigzag(t));
                self.w.write_bits(v, 64);
                self.vals.v = v;
                self.first_t = t;
            }
            1 => {
                let delta = (t as u64).wrapping_sub(self.t as u64);
                self.write_varint(delta);
                self.vals.write(&mut self.w, v);
                self.t_delta = delta;
            }
            _ => {
                let delta = (t as u64).wrapping_sub(self.t as u64);
                self.write_dod(delta.wrapping_sub(self.t_delta) as i64);
                self.vals.write(&mut self.w, v);
                self.t_delta = delta;
            }
        }
        self.w.commit();
        self.t = t;
        self.count += 1;
        // `count <= MAX_SAMPLES_PER_CHUNK == u16::MAX`, so the cast is exact.
        if let Some(header) = self.w.prefix_mut().first_chunk_mut::<HEADER_LEN>() {
            *header = (self.count as u16).to_le_bytes();
        }
    }

    /// Number of samples appended.
    pub fn num_samples(&self) -> usize {
        self.count
    }

    /// The chunk as it stands: header and bit stream, decodable at any moment.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Timestamp of the first sample, if any.
    pub fn first_t(&self) -> Option<i64> {
        (self.count > 0).then_some(self.first_t)
    }

    /// The last sample appended, if any.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.count > 0).then(|| (self.t, f64::from_bits(self.vals.v)))
    }

    /// Heap bytes held (the buffer's capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.w.capacity()
    }

    /// The finished chunk, its allocation trimmed to its length.
    pub fn into_bytes(self) -> Vec<u8> {
        self.w.into_bytes()
    }

    /// Writes a base-128 varint, low groups first, as whole bytes.
    fn write_varint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.w.write_bits((x & 0x7f) | 0x80, 8);
            x >>= 7;
        }
        self.w.write_bits(x, 8);
    }

    #[inline(always)]
    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.w.write_bit(false);
            return;
        }
        for (prefix, prefix_len, width) in DOD_BUCKETS {
            if fits_dod(dod, width) {
                let payload = (dod as u64) & low_mask(width);
                self.w
                    .write_bits((prefix << width) | payload, prefix_len + width);
                return;
            }
        }
        self.w.write_bits(DOD_ESCAPE.0, DOD_ESCAPE.1);
        self.w.write_bits(dod as u64, 64);
    }
}

/// Reads the samples of an XOR chunk, borrowing its bytes (which may be a memory map).
///
/// Yields exactly the number of samples in the header. If the stream ends before them or
/// is inconsistent, it yields one `Err` and then `None`. Bytes after the last sample's
/// bits are ignored.
#[derive(Debug, Clone)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    /// Samples in the header.
    total: usize,
    /// Samples yielded so far; set to `total` after an error.
    read: usize,
    t: i64,
    t_delta: u64,
    vals: XorValues,
}

impl<'a> XorIter<'a> {
    /// An iterator over the chunk in `bytes` (header included).
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let (header, stream) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(ChunkError::Truncated)?;
        Ok(XorIter {
            r: BitReader::new(stream),
            total: usize::from(u16::from_le_bytes(*header)),
            read: 0,
            t: 0,
            t_delta: 0,
            vals: XorValues::reader(0),
        })
    }

    /// Number of samples the chunk holds, per its header.
    pub fn num_samples(&self) -> usize {
        self.total
    }

    /// An allocation bound for decoding: the header count, capped by what the stream
    /// could hold (every sample after the second takes at least 2 bits).
    pub(crate) fn capacity_hint(&self, stream_len: usize) -> usize {
        self.total
            .min(stream_len.saturating_mul(4).saturating_add(2))
    }

    #[inline(never)]
    fn read_first(&mut self) -> Result<(), ChunkError> {
        self.t = unzigzag(self.read_varint()?);
        self.vals.v = self.r.read_bits(64);
        Ok(())
    }

    #[inline(never)]
    fn read_second(&mut self) -> Result<(), ChunkError> {
        self.t_delta = self.read_varint()?;
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.vals.read(&mut self.r).map(drop)
    }

    #[inline(always)]
    fn read_next(&mut self) -> Result<(), ChunkError> {
        let w = self.r.peek();
        let dod = if w >> 63 == 0 {
            self.r.skip(1);
            0
        } else {
            match (!w).leading_zeros() {
                1 => self.read_dod_bucket(w, 0),
                2 => self.read_dod_bucket(w, 1),
                3 => self.read_dod_bucket(w, 2),
                _ => {
                    self.r.skip(DOD_ESCAPE.1);
                    self.r.read_bits(64)
                }
            }
        };
        self.t_delta = self.t_delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.vals.read(&mut self.r).map(drop)
    }

    /// Decodes bucket `i` of [`DOD_BUCKETS`] from `w`, the peeked bits starting at its
    /// prefix.
    #[inline(always)]
    fn read_dod_bucket(&mut self, w: u64, i: usize) -> u64 {
        let (_, prefix_len, width) = DOD_BUCKETS[i];
        let len = prefix_len + width;
        self.r.skip(len);
        let bits = (w >> (64 - len)) & low_mask(width);
        // Payloads above 2^(width-1) are negative.
        if bits > 1 << (width - 1) {
            bits.wrapping_sub(1 << width)
        } else {
            bits
        }
    }

    /// Reads a base-128 varint of at most 10 bytes.
    fn read_varint(&mut self) -> Result<u64, ChunkError> {
        let mut x = 0u64;
        for i in 0..10 {
            let b = self.r.read_bits(8);
            if self.r.overrun() {
                return Err(ChunkError::Truncated);
            }
            if i == 9 && b > 1 {
                return Err(ChunkError::Corrupt("varint overflows 64 bits"));
            }
            x |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(ChunkError::Corrupt("varint overflows 64 bits"))
    }
}

impl Iterator for XorIter<'_> {
    type Item = Result<Sample, ChunkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.read >= self.total {
            return None;
        }
        let res = match self.read {
            0 => self.read_first(),
            1 => self.read_second(),
            _ => self.read_next(),
        };
        let res = res.and_then(|()| {
            if self.r.overrun() {
                Err(ChunkError::Truncated)
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => {
                self.read += 1;
                Some(Ok(Sample {
                    t: self.t,
                    v: f64::from_bits(self.vals.v),
                }))
            }
            Err(e) => {
                self.read = self.total;
                // A field decoded from zero filler past the end is a truncation.
                let e = if self.r.overrun() {
                    ChunkError::Truncated
                } else {
                    e
                };
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.read;
        (left.min(1), Some(left))
    }
}

impl std::iter::FusedIterator for XorIter<'_> {}

/// The `<xor>` value field's state (see `chunks-xor.md`): the previous value and the
/// current window. Shared by the XOR chunk and the DoD chunk's XOR values.
#[derive(Debug, Clone)]
pub(super) struct XorValues {
    /// Bits of the previous value.
    pub(super) v: u64,
    /// Current window: leading zeros (`NO_WINDOW` in a writer before its first window)
    /// and trailing zeros.
    leading: u32,
    trailing: u32,
}

impl XorValues {
    /// A writer's state after value `v`: no window yet.
    pub(super) const fn writer(v: u64) -> Self {
        XorValues {
            v,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// A reader's state after value `v`. Its window is the full 64 bits, which a writer
    /// never reuses before setting one, so readers need no "unset" case.
    pub(super) const fn reader(v: u64) -> Self {
        XorValues {
            v,
            leading: 0,
            trailing: 0,
        }
    }

    /// Writes value bits `v` as the XOR with the previous value.
    #[inline(always)]
    pub(super) fn write(&mut self, w: &mut BitWriter, v: u64) {
        let delta = v ^ self.v;
        self.v = v;
        if delta == 0 {
            w.write_bit(false);
            return;
        }
        let leading = delta.leading_zeros().min(31);
        let trailing = delta.trailing_zeros();
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            // `10`: the value fits the current window.
            let sig = 64 - self.leading - self.trailing;
            let payload = delta >> self.trailing;
            if sig + 2 <= 64 {
                w.write_bits((0b10 << sig) | payload, sig + 2);
            } else {
                w.write_bits(0b10, 2);
                w.write_bits(payload, sig);
            }
            return;
        }
        // `11`: a new window. `leading + trailing <= 63` because `delta != 0`.
        self.leading = leading;
        self.trailing = trailing;
        let sig = 64 - leading - trailing;
        let head = (0b11 << (LEADING_BITS + SIGBITS_BITS))
            | (u64::from(leading) << SIGBITS_BITS)
            | (u64::from(sig) & low_mask(SIGBITS_BITS));
        let head_len = 2 + LEADING_BITS + SIGBITS_BITS;
        let payload = delta >> trailing;
        if head_len + sig <= 64 {
            w.write_bits((head << sig) | payload, head_len + sig);
        } else {
            w.write_bits(head, head_len);
            w.write_bits(payload, sig);
        }
    }

    /// Reads the next value's bits.
    #[inline(always)]
    pub(super) fn read(&mut self, r: &mut impl ReadBits) -> Result<u64, ChunkError> {
        let w = r.peek();
        if w >> 63 == 0 {
            r.skip(1);
            return Ok(self.v);
        }
        if (w >> 62) & 1 != 0 {
            // `11`: a new window.
            let leading = ((w >> (62 - LEADING_BITS)) & low_mask(LEADING_BITS)) as u32;
            let sig = ((w >> (62 - LEADING_BITS - SIGBITS_BITS)) & low_mask(SIGBITS_BITS)) as u32;
            let sig = if sig == 0 { 64 } else { sig };
            r.skip(2 + LEADING_BITS + SIGBITS_BITS);
            if leading + sig > 64 {
                return Err(ChunkError::Corrupt("xor window wider than 64 bits"));
            }
            self.leading = leading;
            self.trailing = 64 - leading - sig;
        } else {
            r.skip(2);
        }
        // `leading + trailing <= 63` holds for every window accepted above (and for the
        // initial full one), so `sig` is in `1..=64` and `trailing` below 64.
        let sig = 64 - self.leading - self.trailing;
        self.v ^= r.read_bits(sig) << self.trailing;
        Ok(self.v)
    }
}

/// True when `dod` fits a delta-of-delta payload of `width` bits.
#[inline(always)]
fn fits_dod(dod: i64, width: u32) -> bool {
    let half = 1i64 << (width - 1);
    -(half - 1) <= dod && dod <= half
}

#[inline(always)]
fn low_mask(width: u32) -> u64 {
    u64::MAX >> (64 - width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(samples: &[(i64, u64)]) -> XorAppender {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, f64::from_bits(v));
        }
        a
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(i64, u64)>, ChunkError> {
        XorIter::new(bytes)?
            .map(|s| s.map(|s| (s.t, s.v.to_bits())))
            .collect()
    }

    fn assert_round_trip(samples: &[(i64, u64)]) {
        let a = encode(samples);
        assert_eq!(a.num_samples(), samples.len());
        assert_eq!(decode(a.bytes()).as_deref(), Ok(samples));
        assert_eq!(decode(&a.into_bytes()).as_deref(), Ok(samples));
    }

    const SPECIAL_BITS: [u64; 12] = [
        crate::STALE_NAN_BITS,
        0x7ff8_0000_0000_0000, // canonical quiet NaN
        0x7ff0_0000_0000_0001, // signalling NaN, smallest payload
        0xfff8_dead_beef_0001, // negative NaN with payload
        0x7ff0_0000_0000_0000, // +Inf
        0xfff0_0000_0000_0000, // -Inf
        0x8000_0000_0000_0000, // -0.0
        0,                     // +0.0
        1,                     // smallest subnormal
        0x000f_ffff_ffff_ffff, // largest subnormal
        0x8000_0000_0000_0001, // negative subnormal
        0x7fef_ffff_ffff_ffff, // f64::MAX
    ];

    #[test]
    fn empty_chunk_is_a_header_that_decodes_to_nothing() {
        let a = XorAppender::new();
        assert_eq!(a.bytes(), &[0, 0]);
        assert_eq!(a.first_t(), None);
        assert_eq!(a.last(), None);
        assert_eq!(decode(a.bytes()), Ok(vec![]));
    }

    #[test]
    fn layout_matches_the_format_document() {
        // Worked example from tsdb/docs/format/chunks-xor.md.
        let mut a = XorAppender::new();
        a.append(1000, 1.0);
        a.append(2000, 1.0);
        a.append(3000, 1.0);
        #[rustfmt::skip]
        let three = [
            0x03, 0x00,                                     // count, little-endian
            0xd0, 0x0f,                                     // varint(zigzag(1000))
            0x3f, 0xf0, 0, 0, 0, 0, 0, 0,                   // bits of 1.0
            0xe8, 0x07,                                     // uvarint(1000)
            0x00,                                           // 0 | 0 0 | padding
        ];
        assert_eq!(a.bytes(), &three);
        a.append(4000, 2.0);
        #[rustfmt::skip]
        let four = [
            0x04, 0x00,
            0xd0, 0x0f,
            0x3f, 0xf0, 0, 0, 0, 0, 0, 0,
            0xe8, 0x07,
            // 0 | 0 0 | 0 11 00001 001011 11111111111 | padding
            0x0c, 0x25, 0xff, 0xf0,
        ];
        assert_eq!(a.bytes(), &four);
    }

    #[test]
    fn special_float_bit_patterns_round_trip() {
        let samples: Vec<(i64, u64)> = SPECIAL_BITS
            .iter()
            .chain(SPECIAL_BITS.iter().rev())
            .enumerate()
            .map(|(i, &v)| (i as i64 * 15_000, v))
            .collect();
        assert_round_trip(&samples);
        for &v in &SPECIAL_BITS {
            assert_round_trip(&[(0, v)]);
            assert_round_trip(&[(0, v), (1, v), (2, v)]);
        }
    }

    #[test]
    fn extreme_timestamps_round_trip() {
        let ts = [
            i64::MIN,
            i64::MAX,
            0,
            i64::MIN,
            i64::MIN + 1,
            -1,
            i64::MAX,
            i64::MAX - 1,
            i64::MIN,
        ];
        let samples: Vec<(i64, u64)> = ts.iter().map(|&t| (t, 1.0f64.to_bits())).collect();
        assert_round_trip(&samples);
        assert_round_trip(&[(i64::MIN, 0)]);
        assert_round_trip(&[(i64::MAX, 0), (i64::MIN, 0)]);
    }

    #[test]
    fn delta_of_delta_bucket_edges_round_trip() {
        let mut dods = vec![0i64, 1, -1, i64::MIN, i64::MAX];
        for (_, _, width) in DOD_BUCKETS {
            let half = 1i64 << (width - 1);
            dods.extend([half, half + 1, -(half - 1), -half, half - 1, -(half + 1)]);
        }
        for dod in dods {
            // Two samples fix the first delta; the third has the chosen delta of delta.
            let t2 = 2_000i64.wrapping_add(1_000).wrapping_add(dod);
            let samples = [(1_000, 0), (2_000, 0), (t2, 0), (t2.wrapping_add(7), 0)];
            assert_round_trip(&samples);
        }
    }

    #[test]
    fn delta_of_delta_buckets_use_the_smallest_width() {
        // Bits after the third sample's timestamp field, with an unchanged value (`0`).
        let sizes: [(i64, usize); 6] = [
            (0, 1),
            (8192, 16),
            (-8191, 16),
            (-8192, 20),
            (1 << 19, 24),
            ((1 << 19) + 1, 68),
        ];
        let base = encode(&[(0, 0), (10, 0)]);
        let base_bits = 8 * (base.bytes().len() - HEADER_LEN) - 7; // ends with `0`
        for (dod, bits) in sizes {
            let a = encode(&[(0, 0), (10, 0), (20 + dod, 0)]);
            let stream_bits = base_bits + bits + 1;
            assert_eq!(
                a.bytes().len() - HEADER_LEN,
                stream_bits.div_ceil(8),
                "dod {dod}"
            );
        }
    }

    #[test]
    fn xor_window_is_reused_and_replaced() {
        let vals = [
            1.0f64, 1.5, 1.25, 3.0, -3.0, 1e300, 1e-300, 0.0, 0.0, 2.0, 2.0,
        ];
        let samples: Vec<(i64, u64)> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, v.to_bits()))
            .collect();
        assert_round_trip(&samples);
    }

    #[test]
    fn open_chunk_decodes_to_its_prefix_after_every_append() {
        let mut a = XorAppender::new();
        let mut want = Vec::new();
        for i in 0..500i64 {
            let s = (i * 15_000 + (i % 7) * 3, ((i * i) as f64 / 3.0).to_bits());
            a.append(s.0, f64::from_bits(s.1));
            want.push(s);
            assert_eq!(decode(a.bytes()).as_deref(), Ok(&want[..]));
            assert_eq!(a.first_t(), Some(0));
            assert_eq!(a.last().map(|(t, v)| (t, v.to_bits())), Some(s));
        }
    }

    #[test]
    fn every_strict_prefix_of_a_chunk_is_truncated() {
        let a = encode(&[
            (1_000, 1.0f64.to_bits()),
            (16_000, 2.5f64.to_bits()),
            (31_000, 2.5f64.to_bits()),
            (46_001, 7.75f64.to_bits()),
            (-5, crate::STALE_NAN_BITS),
        ]);
        let bytes = a.bytes();
        for len in 0..bytes.len() {
            let got = decode(&bytes[..len]);
            assert_eq!(got, Err(ChunkError::Truncated), "prefix of {len} bytes");
        }
    }

    #[test]
    fn header_count_above_the_stream_is_truncated() {
        let a = encode(&[(1, 0), (2, 0), (3, 0)]);
        let mut bytes = a.bytes().to_vec();
        bytes[..2].copy_from_slice(&1000u16.to_le_bytes());
        let results: Vec<_> = XorIter::new(&bytes).unwrap().collect();
        // Zero padding decodes as unchanged samples until the stream runs out; then one
        // error, then nothing.
        assert!(results.len() < 1000);
        assert_eq!(results.last(), Some(&Err(ChunkError::Truncated)));
        assert!(results[..results.len() - 1].iter().all(Result::is_ok));
    }

    #[test]
    fn header_count_below_the_stream_is_honoured() {
        let a = encode(&[(1, 0), (2, 0), (3, 0), (4, 0)]);
        let mut bytes = a.bytes().to_vec();
        bytes[..2].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(decode(&bytes), Ok(vec![(1, 0), (2, 0)]));
    }

    #[test]
    fn trailing_bytes_after_the_last_sample_are_ignored() {
        let a = encode(&[(1, 0), (2, 0)]);
        let mut bytes = a.bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 16]);
        assert_eq!(decode(&bytes), Ok(vec![(1, 0), (2, 0)]));
    }

    #[test]
    fn oversized_xor_window_is_corrupt_and_ends_iteration() {
        let a = encode(&[(1, 0), (2, 0)]);
        let mut bytes = a.bytes().to_vec();
        // Second sample's value: replace `0` with `11`, leading 31, sig 63 (31+63 > 64).
        let n = bytes.len();
        bytes.truncate(n - 1);
        // 1 11 11111 111111 then zeros (the `1` flags a changed value).
        bytes.extend_from_slice(&[0b1111_1111, 0b1111_1000, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut it = XorIter::new(&bytes).unwrap();
        assert!(it.next().unwrap().is_ok());
        assert_eq!(
            it.next(),
            Some(Err(ChunkError::Corrupt("xor window wider than 64 bits")))
        );
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn overlong_varint_is_corrupt() {
        let mut bytes = vec![1, 0];
        bytes.extend_from_slice(&[0xff; 10]);
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&bytes),
            Err(ChunkError::Corrupt("varint overflows 64 bits"))
        );
    }

    #[test]
    fn header_shorter_than_two_bytes_is_truncated() {
        assert_eq!(XorIter::new(&[]).err(), Some(ChunkError::Truncated));
        assert_eq!(XorIter::new(&[1]).err(), Some(ChunkError::Truncated));
    }

    #[test]
    fn regular_chunk_compresses_to_under_two_bytes_per_sample() {
        let samples: Vec<(i64, u64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i as f64).to_bits()))
            .collect();
        let a = encode(&samples);
        assert!(a.bytes().len() < 2 * 120, "{} bytes", a.bytes().len());
        assert!(a.heap_bytes() >= a.bytes().len());
        let trimmed = a.into_bytes();
        assert_eq!(trimmed.capacity(), trimmed.len());
    }

    #[test]
    fn full_chunk_holds_max_samples() {
        let mut a = XorAppender::new();
        for i in 0..MAX_SAMPLES_PER_CHUNK as i64 {
            a.append(i, i as f64);
        }
        assert_eq!(&a.bytes()[..2], &[0xff, 0xff]);
        let it = XorIter::new(a.bytes()).unwrap();
        assert_eq!(it.num_samples(), MAX_SAMPLES_PER_CHUNK);
        let mut n = 0;
        for (i, s) in it.enumerate() {
            assert_eq!(
                s,
                Ok(Sample {
                    t: i as i64,
                    v: i as f64
                })
            );
            n += 1;
        }
        assert_eq!(n, MAX_SAMPLES_PER_CHUNK);
    }

    #[test]
    #[should_panic(expected = "chunk already holds")]
    fn appending_past_the_limit_panics() {
        let mut a = XorAppender::new();
        for i in 0..=MAX_SAMPLES_PER_CHUNK as i64 {
            a.append(i, 0.0);
        }
    }

    fn value_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            proptest::sample::select(SPECIAL_BITS.to_vec()),
            (-1000i32..1000).prop_map(|i| f64::from(i).to_bits()),
            (-100_000i64..100_000).prop_map(|c| (c as f64 / 100.0).to_bits()),
        ]
    }

    fn timestamp_step() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(15_000i64),
            14_990i64..15_010,
            -100i64..100,
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
        ]
    }

    fn samples() -> impl Strategy<Value = Vec<(i64, u64)>> {
        prop_oneof![
            proptest::collection::vec((any::<i64>(), value_bits()), 0..300),
            (
                any::<i64>(),
                proptest::collection::vec((timestamp_step(), value_bits()), 0..300)
            )
                .prop_map(|(start, steps)| {
                    let mut t = start;
                    steps
                        .into_iter()
                        .map(|(step, v)| {
                            t = t.wrapping_add(step);
                            (t, v)
                        })
                        .collect()
                }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_samples_round_trip_bit_exactly(samples in samples()) {
            let a = encode(&samples);
            prop_assert_eq!(decode(a.bytes()), Ok(samples));
        }

        #[test]
        fn open_chunk_bytes_decode_to_the_appended_prefix(samples in samples()) {
            let mut a = XorAppender::new();
            for (i, &(t, v)) in samples.iter().enumerate() {
                a.append(t, f64::from_bits(v));
                let got = decode(a.bytes());
                prop_assert_eq!(got.as_deref(), Ok(&samples[..=i]));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(it) = XorIter::new(&bytes) {
                let total = it.num_samples();
                let mut n = 0;
                let mut failed = false;
                for s in it {
                    prop_assert!(!failed, "item after an error");
                    failed = s.is_err();
                    n += 1;
                }
                prop_assert!(n <= total);
            }
        }

        #[test]
        fn truncated_chunks_are_errors(samples in samples(), cut in any::<proptest::sample::Index>()) {
            prop_assume!(!samples.is_empty());
            let a = encode(&samples);
            let bytes = a.bytes();
            let len = cut.index(bytes.len());
            prop_assert_eq!(decode(&bytes[..len]), Err(ChunkError::Truncated));
        }
    }
}
