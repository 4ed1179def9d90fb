//! The packed integer code of DoD chunks: a run of `i64` residuals, bit-packed with
//! parameters chosen for that run.
//!
//! Each residual is stored as `r = offset + factor * q` (wrapping), `q` is mapped to an
//! unsigned `u` (as is, or zigzag) and `u` is written in one of up to three *buckets*:
//! bucket `j` holds the `2^w_j` values that follow the previous bucket's, behind a short
//! prefix. [`IntCode::plan`] finds the offset, factor, mapping and widths that take the
//! fewest bits for a given run; the layout is in `tsdb/docs/format/chunks-dod.md`
//! ("Packed integers"), and the constants below are its single copy in code.

use super::ChunkError;
#[cfg(test)]
use super::bstream::BitReader;
use super::bstream::{BitWriter, MAX_SINGLE_READ, ReadBits};
use super::varint::{ByteReader, put_uvarint, put_varint, unzigzag, zigzag};

/// Most buckets a code has.
pub(super) const MAX_BUCKETS: usize = 3;

/// `PREFIX[b - 1][j]`: the prefix bits and their count that select bucket `j` of a code
/// with `b` buckets: none for one bucket; `0`, `1` for two; `0`, `10`, `11` for three.
const PREFIX: [[(u64, u32); MAX_BUCKETS]; MAX_BUCKETS] = [
    [(0, 0), (0, 0), (0, 0)],
    [(0b0, 1), (0b1, 1), (0, 0)],
    [(0b0, 1), (0b10, 2), (0b11, 2)],
];

/// Low two bits of the flags byte: the number of buckets minus one.
const FLAG_BUCKETS: u8 = 0b011;
/// Flag: `u` is the zigzag mapping of `q` (otherwise `u` is the bits of `q`).
const FLAG_ZIGZAG: u8 = 0b100;

/// The parameters of one packed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IntCode {
    /// `u = zigzag(q)` rather than `u = q as u64`.
    pub(super) zigzag: bool,
    /// Added to every residual.
    pub(super) offset: i64,
    /// Multiplies every `q` (wrapping); at least 1 in codes the encoder writes.
    pub(super) factor: u64,
    /// Number of buckets, `1..=MAX_BUCKETS`.
    pub(super) buckets: usize,
    /// Payload width of each bucket, `0..=64`; entries past `buckets` are zero.
    pub(super) widths: [u32; MAX_BUCKETS],
}

impl IntCode {
    /// The code that stores `res` in the fewest bits, and that number of bits.
    ///
    /// The bucket layout is the best for the mapping, offset and factor; of those, two
    /// candidates are tried: the minimum as offset with `u = q`, and (an estimate of)
    /// the median with zigzag. Cost: four passes over `res` per candidate and a search
    /// over at most 64 × 64 bucket layouts.
    pub(super) fn plan(res: &[i64]) -> (IntCode, u64) {
        let Some(&min) = res.iter().min() else {
            return (IntCode::constant(0), 0);
        };
        let factor = common_factor(res);
        let mut scratch = Vec::with_capacity(res.len());
        let mut best = evaluate(res, min, factor, false, &mut scratch);
        // The median is a residual, so its difference from every other one is a
        // multiple of the factor too.
        let median = approx_median(res);
        if median != min {
            let z = evaluate(res, median, factor, true, &mut scratch);
            if z.1 < best.1 {
                best = z;
            }
        }
        best
    }

    /// A quick estimate of what [`Self::plan`] would cost, to compare candidate runs:
    /// the bit lengths of the zigzagged distances from the median, summed.
    pub(super) fn estimate(res: &[i64]) -> u64 {
        let median = approx_median(res);
        res.iter()
            .map(|&r| u64::from(bit_len(zigzag(r.wrapping_sub(median)))))
            .sum()
    }

    /// The code of a run where every residual is `r`: zero bits each.
    pub(super) fn constant(r: i64) -> IntCode {
        IntCode {
            zigzag: false,
            offset: r,
            factor: 1,
            buckets: 1,
            widths: [0; MAX_BUCKETS],
        }
    }

    /// Appends the parameters: flags, widths, offset, factor.
    pub(super) fn write_params(&self, out: &mut Vec<u8>) {
        let mut flags = (self.buckets as u8 - 1) & FLAG_BUCKETS;
        if self.zigzag {
            flags |= FLAG_ZIGZAG;
        }
        out.push(flags);
        out.extend(self.widths[..self.buckets].iter().map(|&w| w as u8));
        put_varint(out, self.offset);
        put_uvarint(out, self.factor);
    }

    /// Reads parameters written by [`Self::write_params`].
    pub(super) fn read_params(r: &mut ByteReader<'_>) -> Result<IntCode, ChunkError> {
        let flags = r.u8()?;
        if flags & !(FLAG_BUCKETS | FLAG_ZIGZAG) != 0 {
            return Err(ChunkError::Corrupt("unknown packed code flags"));
        }
        let buckets = usize::from(flags & FLAG_BUCKETS) + 1;
        if buckets > MAX_BUCKETS {
            return Err(ChunkError::Corrupt("packed code with more than 3 buckets"));
        }
        let mut widths = [0; MAX_BUCKETS];
        for w in &mut widths[..buckets] {
            *w = u32::from(r.u8()?);
            if *w > 64 {
                return Err(ChunkError::Corrupt("packed bucket wider than 64 bits"));
            }
        }
        Ok(IntCode {
            zigzag: flags & FLAG_ZIGZAG != 0,
            buckets,
            widths,
            offset: r.varint()?,
            factor: r.uvarint()?,
        })
    }

    /// First value of each bucket: bucket `j + 1` starts `2^w_j` after bucket `j`.
    fn starts(&self) -> [u64; MAX_BUCKETS] {
        let mut s = [0u64; MAX_BUCKETS];
        for j in 1..self.buckets {
            s[j] = s[j - 1].wrapping_add(1u64.checked_shl(self.widths[j - 1]).unwrap_or(0));
        }
        s
    }

    /// Writes `res` with this code; `self` must come from [`Self::plan`] of the same
    /// residuals (or hold them all).
    pub(super) fn write(&self, res: &[i64], w: &mut BitWriter) {
        let div = Divider::new(self.offset, self.factor);
        let starts = self.starts();
        let prefixes = &PREFIX[self.buckets - 1];
        for &r in res {
            let q = div.quotient(r);
            let u = if self.zigzag { zigzag(q) } else { q as u64 };
            let j = (1..self.buckets).take_while(|&j| u >= starts[j]).count();
            let (prefix, prefix_len) = prefixes[j];
            let width = self.widths[j];
            let payload = u.wrapping_sub(starts[j]);
            debug_assert!(
                width == 64 || payload >> width == 0,
                "{u} outside bucket {j}"
            );
            let len = prefix_len + width;
            if len == 0 {
                continue;
            }
            if len <= 64 {
                let head = prefix.checked_shl(width).unwrap_or(0);
                w.write_bits(head | payload, len);
            } else {
                w.write_bits(prefix, prefix_len);
                w.write_bits(payload, width);
            }
        }
    }

    /// The decoder of this code.
    pub(super) fn decoder(&self) -> IntDecoder {
        let starts = self.starts();
        let mut d = IntDecoder {
            lens: 0,
            prefix_lens: 0,
            widths: 0,
            starts: [0; 4],
            single: self.buckets == 1,
            long: false,
            zigzag: self.zigzag,
            offset: self.offset,
            factor: self.factor as i64,
        };
        // Every prefix is at most two bits, so the top two bits of the stream select the
        // bucket: `0x` bucket 0; `1x` bucket 1 of two; `10`, `11` buckets 1, 2 of three.
        for top in 0..4usize {
            let j = match self.buckets {
                1 => 0,
                2 => top >> 1,
                _ => (top >> 1) + (top & (top >> 1)),
            };
            let prefix_len = PREFIX[self.buckets - 1][j].1;
            let width = self.widths[j];
            d.lens |= (prefix_len + width) << (8 * top);
            d.prefix_lens |= prefix_len << (8 * top);
            d.widths |= width << (8 * top);
            d.starts[top] = starts[j];
            d.long |= prefix_len + width > MAX_SINGLE_READ;
        }
        d
    }
}

/// Reads residuals of one [`IntCode`]. Reads never fail: past the end of the stream they
/// decode zero bits, which the caller detects with [`ReadBits::overrun`].
///
/// The bucket fields are indexed by the top two bits of the stream (which hold every
/// prefix) and packed one byte per index into registers: finding where the next code
/// starts is the critical path of decoding, and this keeps it to a few shifts.
#[derive(Debug, Clone)]
pub(super) struct IntDecoder {
    /// Byte `i`: code length (prefix and payload, at most 66) when the next two bits
    /// are `i`.
    lens: u32,
    /// Byte `i`: prefix length when the next two bits are `i`.
    prefix_lens: u32,
    /// Byte `i`: payload width when the next two bits are `i`.
    widths: u32,
    /// First value of the bucket when the next two bits are `i`.
    starts: [u64; 4],
    /// One bucket: the code length does not depend on the data.
    single: bool,
    /// Some code is longer than one [`ReadBits::peek`] holds.
    long: bool,
    zigzag: bool,
    offset: i64,
    factor: i64,
}

/// [`IntDecoder::mode`]: every residual is the offset.
pub(super) const MODE_CONSTANT: u8 = 0;
/// One bucket whose codes fit one peek: a fixed-width field.
pub(super) const MODE_FIXED: u8 = 1;
/// Several buckets whose codes fit one peek.
pub(super) const MODE_BUCKETS: u8 = 3;
/// Anything else (a code longer than one peek).
pub(super) const MODE_GENERAL: u8 = 2;

impl IntDecoder {
    /// Which of the specialised readers of [`Self::read_mode`] applies to this code.
    pub(super) fn mode(&self) -> u8 {
        if self.lens == 0 {
            MODE_CONSTANT
        } else if self.single && !self.long {
            MODE_FIXED
        } else if !self.long {
            MODE_BUCKETS
        } else {
            MODE_GENERAL
        }
    }

    /// [`Self::read`] for a code of mode `M` (see [`Self::mode`]): the same value, with
    /// the branches that do not apply to the mode compiled out.
    #[inline(always)]
    pub(super) fn read_mode<const M: u8>(&self, r: &mut impl ReadBits) -> i64 {
        match M {
            MODE_CONSTANT => self.offset,
            MODE_FIXED => {
                // One bucket: no prefix, and the code is its payload, `1..=57` bits.
                let len = self.lens & 0xff;
                let w = r.peek();
                r.skip(len);
                let u = w >> (64 - len);
                let q = if self.zigzag { unzigzag(u) } else { u as i64 };
                self.offset.wrapping_add(self.factor.wrapping_mul(q))
            }
            MODE_BUCKETS => {
                // The top two bits select the bucket; every code is `1..=57` bits.
                let w = r.peek();
                let top = (w >> 62) as usize;
                let shift = 8 * top as u32;
                let len = (self.lens >> shift) & 0xff;
                let width = (self.widths >> shift) & 0xff;
                r.skip(len);
                let bits = (w >> (64 - len)) & !(u64::MAX << width);
                let u = self.starts[top & 3].wrapping_add(bits);
                let q = if self.zigzag { unzigzag(u) } else { u as i64 };
                self.offset.wrapping_add(self.factor.wrapping_mul(q))
            }
            _ => self.read(r),
        }
    }

    /// Reads one residual.
    #[inline(always)]
    pub(super) fn read(&self, r: &mut impl ReadBits) -> i64 {
        if self.lens == 0 {
            // One bucket of width 0: every residual is the offset.
            return self.offset;
        }
        let w = r.peek();
        // With one bucket, the branch keeps the position independent of the data.
        let top = if self.single { 0 } else { (w >> 62) as u32 };
        let shift = 8 * top;
        let len = (self.lens >> shift) & 0xff;
        let width = (self.widths >> shift) & 0xff;
        let bits = if !self.long || len <= MAX_SINGLE_READ {
            r.skip(len);
            // `len >= 1` here: a code of length 0 is a single bucket of width 0.
            (w >> (64 - len)) & !(u64::MAX << width)
        } else {
            let prefix_len = (self.prefix_lens >> shift) & 0xff;
            // `len > 57` and `prefix_len <= 2`, so `width >= 1`.
            r.skip(prefix_len);
            r.read_bits(width)
        };
        let u = self.starts[(top & 3) as usize].wrapping_add(bits);
        let q = if self.zigzag { unzigzag(u) } else { u as i64 };
        self.offset.wrapping_add(self.factor.wrapping_mul(q))
    }
}

/// The median of `xs` if it is short, else the median of an evenly spaced sample of it
/// (an element of `xs` either way); 0 if it is empty.
pub(super) fn approx_median(xs: &[i64]) -> i64 {
    const SAMPLE: usize = 63;
    let mut buf = [0i64; SAMPLE];
    let k = xs.len().min(SAMPLE);
    if xs.len() <= SAMPLE {
        buf[..k].copy_from_slice(xs);
    } else {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = xs.get(j * xs.len() / SAMPLE).copied().unwrap_or(0);
        }
    }
    let sample = &mut buf[..k];
    if sample.is_empty() {
        return 0;
    }
    *sample.select_nth_unstable(k / 2).1
}

/// The largest factor that divides the difference of every two residuals (1 when there
/// is none larger).
fn common_factor(res: &[i64]) -> u64 {
    let Some(&first) = res.first() else {
        return 1;
    };
    let mut g = 0u64;
    for &r in res {
        // |r - first| < 2^64.
        let d = (i128::from(r) - i128::from(first)).unsigned_abs() as u64;
        g = gcd(g, d);
        if g == 1 {
            return 1;
        }
    }
    g.max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// Computes `q` with `offset + factor * q == r` (wrapping) for residuals whose difference
/// from `offset` is a multiple of `factor`, without a 128-bit division.
struct Divider {
    offset: i64,
    /// `factor = odd << shift`.
    shift: u32,
    /// Inverse of the odd part of `factor` modulo 2^64.
    inverse: u64,
    one: bool,
}

impl Divider {
    fn new(offset: i64, factor: u64) -> Divider {
        let factor = factor.max(1);
        let shift = factor.trailing_zeros();
        let odd = factor >> shift;
        // Newton's iteration doubles the correct low bits each step: 3, 6, 12, 24, 48, 96.
        let mut inverse = odd;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        Divider {
            offset,
            shift,
            inverse,
            one: factor == 1,
        }
    }

    #[inline]
    fn quotient(&self, r: i64) -> i64 {
        if self.one {
            return r.wrapping_sub(self.offset);
        }
        // The exact difference, divided by the power of two; then by the odd part, which
        // is exact modulo 2^64 because the quotient fits in 63 bits.
        let d = (i128::from(r) - i128::from(self.offset)) >> self.shift;
        (d as u64).wrapping_mul(self.inverse) as i64
    }
}

/// Counts of `u` values by bit length, for the bucket search.
struct Histogram {
    n: u64,
    max: u64,
    /// Bit length of `max`.
    bits: u32,
    /// `below_pow2[w]`: number of values below `2^w`, for `w` in `0..=64`.
    below_pow2: [u64; 65],
    /// `rows[a * 64 + k]`, for values of bit length `a >= 1`: how many have
    /// `u - 2^(a-1) < 2^k`, i.e. lie in the first `2^k` of their bit length's range.
    rows: Vec<u32>,
}

impl Histogram {
    fn new(us: &[u64]) -> Histogram {
        let max = us.iter().copied().max().unwrap_or(0);
        let bits = bit_len(max);
        let mut rows = vec![0u32; (bits as usize + 1) * 64];
        let mut by_len = [0u64; 65];
        for &u in us {
            let a = bit_len(u);
            by_len[a as usize] += 1;
            // `u` without its top bit; row 0 (for `u == 0`) is never read.
            let top = (1u64 << 63).checked_shr(u.leading_zeros()).unwrap_or(0);
            let b = bit_len(u ^ top);
            if let Some(c) = rows.get_mut(a as usize * 64 + b as usize) {
                *c += 1;
            }
        }
        let n = us.len() as u64;
        for row in rows.chunks_exact_mut(64) {
            for k in 1..64 {
                row[k] += row[k - 1];
            }
        }
        let mut below_pow2 = [0u64; 65];
        let mut acc = 0;
        for (w, count) in by_len.iter().enumerate() {
            acc += count;
            below_pow2[w] = acc;
        }
        Histogram {
            n,
            max,
            bits,
            below_pow2,
            rows,
        }
    }

    /// Number of values below `2^w0 + 2^w1` (both below 64, the sum at most `max`).
    fn below_two_pow2(&self, w0: u32, w1: u32) -> u64 {
        if w0 == w1 {
            return self.below_pow2[w0 as usize + 1];
        }
        let (hi, lo) = (w0.max(w1), w0.min(w1));
        let row = (hi as usize + 1) * 64 + lo as usize;
        self.below_pow2[hi as usize] + self.rows.get(row).map_or(0, |&c| u64::from(c))
    }

    /// The cheapest bucket layout: number of buckets, widths and total bits.
    fn best_layout(&self) -> (usize, [u32; MAX_BUCKETS], u64) {
        let (n, max, bits) = (self.n, self.max, self.bits);
        let mut best = (1, [bits, 0, 0], n * u64::from(bits));
        for w0 in 0..bits {
            let s1 = 1u64 << w0;
            let n0 = self.below_pow2[w0 as usize];
            let head = n0 * u64::from(1 + w0);
            let w1 = bit_len(max - s1);
            let cost = head + (n - n0) * u64::from(1 + w1);
            if cost < best.2 {
                best = (2, [w0, w1, 0], cost);
            }
            // Three buckets pay when the first holds a good share of the values; skipping
            // the others bounds the search on wide random values.
            if n0 * 64 < n {
                continue;
            }
            for w1 in 0..64 {
                let Some(s2) = s1.checked_add(1 << w1).filter(|&s| s <= max) else {
                    break;
                };
                let n01 = self.below_two_pow2(w0, w1);
                let w2 = bit_len(max - s2);
                let cost = head + (n01 - n0) * u64::from(2 + w1) + (n - n01) * u64::from(2 + w2);
                if cost < best.2 {
                    best = (3, [w0, w1, w2], cost);
                }
            }
        }
        best
    }
}

/// The cheapest code for `res` with the given offset, factor and mapping. `scratch` is
/// reused for the mapped values.
fn evaluate(
    res: &[i64],
    offset: i64,
    factor: u64,
    zz: bool,
    scratch: &mut Vec<u64>,
) -> (IntCode, u64) {
    let div = Divider::new(offset, factor);
    scratch.clear();
    scratch.extend(res.iter().map(|&r| {
        let q = div.quotient(r);
        if zz { zigzag(q) } else { q as u64 }
    }));
    let (buckets, widths, bits) = Histogram::new(scratch).best_layout();
    (
        IntCode {
            zigzag: zz,
            offset,
            factor,
            buckets,
            widths,
        },
        bits,
    )
}

#[inline]
fn bit_len(u: u64) -> u32 {
    64 - u.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(res: &[i64]) -> (IntCode, u64) {
        let (code, bits) = IntCode::plan(res);
        let mut w = BitWriter::with_prefix(&[], 0);
        code.write(res, &mut w);
        w.commit();
        assert_eq!(w.bytes().len() as u64, bits.div_ceil(8), "{code:?}");

        let mut params = Vec::new();
        code.write_params(&mut params);
        let mut pr = ByteReader::new(&params);
        assert_eq!(IntCode::read_params(&mut pr), Ok(code));
        assert!(pr.rest().is_empty());

        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        let d = code.decoder();
        let got: Vec<i64> = res.iter().map(|_| d.read(&mut r)).collect();
        assert!(!r.overrun());
        assert_eq!(got, res);
        (code, bits)
    }

    /// Total bits of `us` in a layout, or `None` if some value fits no bucket.
    fn layout_cost(us: &[u64], buckets: usize, widths: [u32; 3]) -> Option<u64> {
        let code = IntCode {
            zigzag: false,
            offset: 0,
            factor: 1,
            buckets,
            widths,
        };
        let starts = code.starts();
        let mut total = 0;
        for &u in us {
            let j = (1..buckets).take_while(|&j| u >= starts[j]).count();
            let payload = u - starts[j];
            if widths[j] < 64 && payload >> widths[j] != 0 {
                return None;
            }
            total += u64::from(PREFIX[buckets - 1][j].1 + widths[j]);
        }
        Some(total)
    }

    #[test]
    fn constant_runs_take_no_bits() {
        for r in [0, 7, -3, i64::MIN, i64::MAX] {
            let (code, bits) = round_trip(&[r; 100]);
            assert_eq!(bits, 0);
            assert_eq!(code, IntCode::constant(r));
        }
        assert_eq!(IntCode::plan(&[]).1, 0);
    }

    #[test]
    fn skewed_small_values_use_an_offset_bucket() {
        // 0 three times out of eight, 1 and 2 otherwise: `0` and `1x` cost 1.625 bits.
        let res: Vec<i64> = (0..800).map(|i| [0, 1, 2, 0, 1, 2, 0, 1][i % 8]).collect();
        let (code, bits) = round_trip(&res);
        assert_eq!((code.buckets, &code.widths[..2]), (2, &[0, 1][..]));
        assert_eq!(bits, 1300);
    }

    #[test]
    fn common_factors_are_divided_out() {
        let res: Vec<i64> = (0..500)
            .map(|i| 1_000_000 + 4096 * ((i * 37) % 64))
            .collect();
        let (code, bits) = round_trip(&res);
        assert_eq!(code.factor, 4096);
        assert_eq!(bits, 500 * 6);
        // An odd factor too, with negative residuals.
        let res: Vec<i64> = (0..100).map(|i| -15 * ((i * 7) % 16) - 3).collect();
        let (code, _) = round_trip(&res);
        assert_eq!(code.factor, 15);
    }

    #[test]
    fn extreme_residuals_round_trip() {
        round_trip(&[i64::MIN, i64::MAX]);
        round_trip(&[i64::MIN, i64::MAX, 0, -1, 1]);
        round_trip(&[i64::MAX, i64::MIN + 2, i64::MIN + 4]);
        round_trip(&[0, 1, 2, 3, i64::MIN]);
        round_trip(&[5, 5, 5, 5, 5, 5, 5, 5, 5, i64::MAX]);
    }

    #[test]
    fn bucket_search_matches_exhaustive_search() {
        let sets: [&[u64]; 6] = [
            &[0, 0, 0, 1, 2, 3, 900],
            &[5, 6, 7, 8, 100, 100, 100, 65_000],
            &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
            &[0, 1, 1, 1, 3, 3, 3, 3, 7, 1 << 20],
            &[u64::MAX, 0, 0, 0, 1],
            &[3, 3, 3],
        ];
        for us in sets {
            let h = Histogram::new(us);
            let (b, w, bits) = h.best_layout();
            assert_eq!(layout_cost(us, b, w), Some(bits), "{us:?}");
            let mut best = u64::MAX;
            for w0 in 0..=64 {
                best = best.min(layout_cost(us, 1, [w0, 0, 0]).unwrap_or(u64::MAX));
                for w1 in 0..=64 {
                    best = best.min(layout_cost(us, 2, [w0, w1, 0]).unwrap_or(u64::MAX));
                    if w0 < 64 && w1 < 64 {
                        for w2 in 0..=64 {
                            let c = layout_cost(us, 3, [w0, w1, w2]);
                            best = best.min(c.unwrap_or(u64::MAX));
                        }
                    }
                }
            }
            assert_eq!(bits, best, "{us:?}");
        }
    }

    #[test]
    fn malformed_params_are_corrupt_or_truncated() {
        let read = |b: &[u8]| IntCode::read_params(&mut ByteReader::new(b));
        assert_eq!(
            read(&[0b011]),
            Err(ChunkError::Corrupt("packed code with more than 3 buckets"))
        );
        assert_eq!(
            read(&[0b1000]),
            Err(ChunkError::Corrupt("unknown packed code flags"))
        );
        assert_eq!(
            read(&[0, 65, 0, 1]),
            Err(ChunkError::Corrupt("packed bucket wider than 64 bits"))
        );
        assert_eq!(read(&[0b010, 1, 2]), Err(ChunkError::Truncated));
        assert_eq!(read(&[]), Err(ChunkError::Truncated));
    }

    #[test]
    fn divider_inverts_every_factor() {
        for factor in [1u64, 2, 3, 5, 4096, 1000, u64::MAX, 1 << 63, 3 << 40] {
            let div = Divider::new(-17, factor);
            for q in [0i64, 1, -1, 1000, -1000] {
                let r = (-17i64).wrapping_add((factor as i64).wrapping_mul(q));
                let back = (-17i64).wrapping_add((factor as i64).wrapping_mul(div.quotient(r)));
                assert_eq!(back, r, "factor {factor} q {q}");
                if factor < 1 << 40 {
                    assert_eq!(div.quotient(r), q, "factor {factor} q {q}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_residuals_round_trip(res in proptest::collection::vec(any::<i64>(), 0..200)) {
            round_trip(&res);
        }

        #[test]
        fn small_residuals_round_trip(
            base in any::<i64>(),
            scale in prop_oneof![Just(1i64), Just(10), Just(4096), 1i64..1_000_000],
            steps in proptest::collection::vec(-40i64..40, 0..300),
        ) {
            let res: Vec<i64> = steps
                .iter()
                .map(|&s| base.wrapping_add(s.wrapping_mul(scale)))
                .collect();
            round_trip(&res);
        }

        #[test]
        fn bucket_search_is_exact(us in proptest::collection::vec(
            prop_oneof![0u64..4, 0u64..300, any::<u64>()], 1..60)
        ) {
            let (b, w, bits) = Histogram::new(&us).best_layout();
            prop_assert_eq!(layout_cost(&us, b, w), Some(bits));
        }
    }
}
