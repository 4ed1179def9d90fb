//! The DoD chunk: an immutable chunk whose timestamps and values are each reduced to a
//! run of small integers and bit-packed with parameters chosen for the chunk.
//!
//! Timestamps are stored as their distance from a grid of the chunk's most common
//! interval (or from the previous timestamp plus that interval, whichever is smaller);
//! values, when every one is a decimal `m / 10^e` with a common `e`, as the integers `m`,
//! their deltas or their deltas of deltas, and otherwise XOR-compressed as in the XOR
//! chunk. Both integer runs use the packed code of [`super::intcode`]. The layout, bit by
//! bit, is in `tsdb/docs/format/chunks-dod.md`; the constants below are its single copy
//! in code.
//!
//! Unlike an XOR chunk, a DoD chunk is written whole by [`encode_dod`] and cannot be
//! appended to: the parameters depend on every sample. Every `i64` timestamp sequence and
//! every `f64` bit pattern round-trips.

use super::bstream::{BitBuffer, BitWriter, ReadBits};
use super::intcode::{IntCode, IntDecoder, approx_median};
use super::varint::{ByteReader, put_uvarint, put_varint};
use super::xor::XorValues;
use super::{ChunkError, MAX_SAMPLES_PER_CHUNK};
use crate::Sample;

/// Value kinds, the byte after the timestamp parameters.
const VALUES_XOR: u8 = 0;
const VALUES_DECIMAL: u8 = 1;

/// Largest decimal exponent: `10^22` is the largest power of ten an `f64` holds exactly.
const MAX_EXPONENT: usize = 22;

/// `10^e` for every exponent, as exact `f64` values.
const POW10: [f64; MAX_EXPONENT + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Highest order of differences taken of decimal integers (2: deltas of deltas).
const MAX_ORDER: u8 = 2;

/// Bytes of one exception record: sample index (`u16`) and value bits (`u64`).
const EXCEPTION_LEN: usize = 10;

/// Encodes `samples` as a DoD chunk, choosing the parameters that make it smallest.
///
/// Samples are normally sorted by time, but any order and any values round-trip.
///
/// # Panics
///
/// If there are more than [`MAX_SAMPLES_PER_CHUNK`] samples.
pub fn encode_dod(samples: &[Sample]) -> Vec<u8> {
    assert!(
        samples.len() <= MAX_SAMPLES_PER_CHUNK,
        "a chunk holds at most {MAX_SAMPLES_PER_CHUNK} samples"
    );
    // `len <= u16::MAX`, so the cast is exact.
    let mut out = (samples.len() as u16).to_le_bytes().to_vec();
    if samples.is_empty() {
        return out;
    }
    let times = TimePlan::new(samples);
    let values = ValuePlan::new(samples);
    times.write_params(&mut out);
    values.write_params(&mut out);
    let mut ts = BitWriter::with_prefix(&[], times.bits.div_ceil(8) as usize + 8);
    times.code.write(&times.residuals, &mut ts);
    let ts = ts.into_bytes();
    put_uvarint(&mut out, ts.len() as u64);
    out.extend_from_slice(&ts);
    values.write_stream(&mut out);
    out.shrink_to_fit();
    out
}

/// How the timestamps are stored.
struct TimePlan {
    /// The grid point before the first sample: the first timestamp minus the stride.
    base: i64,
    stride: i64,
    tolerance: u64,
    code: IntCode,
    /// Bits the code takes.
    bits: u64,
    residuals: Vec<i64>,
}

impl TimePlan {
    fn new(samples: &[Sample]) -> TimePlan {
        let first = samples.first().map_or(0, |s| s.t);
        let mut residuals: Vec<i64> = samples
            .windows(2)
            .map(|w| w[1].t.wrapping_sub(w[0].t))
            .collect();
        let stride = approx_median(&residuals);
        // Tolerance 0 stores deltas minus the stride; half the stride follows the grid
        // through jitter of up to half an interval. Keep the smaller.
        time_residuals(samples, stride, 0, &mut residuals);
        let half = if stride > 2 {
            (stride as u64 - 1) / 2
        } else {
            0
        };
        let mut grid = Vec::new();
        let (estimate, mut grid_estimate) = (IntCode::estimate(&residuals), u64::MAX);
        if half > 0 && estimate > 0 {
            time_residuals(samples, stride, half, &mut grid);
            grid_estimate = IntCode::estimate(&grid);
        }
        let mut tolerance = 0;
        let (mut code, mut bits) = (IntCode::constant(0), u64::MAX);
        let best_estimate = estimate.min(grid_estimate);
        if near(estimate, best_estimate) {
            (code, bits) = IntCode::plan(&residuals);
        }
        if near(grid_estimate, best_estimate) {
            let (c, b) = IntCode::plan(&grid);
            if b < bits {
                (code, bits, tolerance, residuals) = (c, b, half, grid);
            }
        }
        TimePlan {
            base: first.wrapping_sub(stride),
            stride,
            tolerance,
            code,
            bits,
            residuals,
        }
    }

    fn write_params(&self, out: &mut Vec<u8>) {
        put_varint(out, self.base);
        put_varint(out, self.stride);
        put_uvarint(out, self.tolerance);
        self.code.write_params(out);
    }
}

/// True when a candidate's estimated cost is close enough to the best estimate to be
/// worth planning exactly.
fn near(estimate: u64, best: u64) -> bool {
    estimate <= best.saturating_add(best / 8 + 16)
}

/// Fills `out` with the residual of every timestamp against the grid, as the decoder
/// walks it (see [`DodIter::next`]).
fn time_residuals(samples: &[Sample], stride: i64, tolerance: u64, out: &mut Vec<i64>) {
    out.clear();
    let mut grid = samples.first().map_or(0, |s| s.t).wrapping_sub(stride);
    for s in samples {
        let pred = grid.wrapping_add(stride);
        let e = s.t.wrapping_sub(pred);
        out.push(e);
        grid = if e.unsigned_abs() <= tolerance {
            pred
        } else {
            s.t
        };
    }
}

/// How the values are stored.
enum ValuePlan {
    Xor(Vec<u8>),
    Decimal(DecimalPlan),
}

struct DecimalPlan {
    exponent: u8,
    order: u8,
    m_base: i64,
    d_base: i64,
    code: IntCode,
    bits: u64,
    residuals: Vec<i64>,
    /// Samples stored as raw bits: index and bits, by index.
    exceptions: Vec<(u16, u64)>,
}

impl DecimalPlan {
    fn write_params(&self, out: &mut Vec<u8>) {
        out.push(VALUES_DECIMAL);
        out.push(self.exponent);
        out.push(self.order);
        if self.order >= 1 {
            put_varint(out, self.m_base);
        }
        if self.order >= 2 {
            put_varint(out, self.d_base);
        }
        self.code.write_params(out);
        put_uvarint(out, self.exceptions.len() as u64);
        for &(i, bits) in &self.exceptions {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }

    /// Bytes of the parameters and the stream.
    fn size(&self) -> usize {
        let mut params = Vec::new();
        self.write_params(&mut params);
        params.len() + self.bits.div_ceil(8) as usize
    }
}

impl ValuePlan {
    fn new(samples: &[Sample]) -> ValuePlan {
        let decimal = match decimal_plan(samples) {
            // XOR values take at least a bit each: no need to write them to know they lose.
            Some(d) if d.size() <= samples.len().div_ceil(8) => return ValuePlan::Decimal(d),
            Some(d) => Some((d.size(), d)),
            None => None,
        };
        let mut w = BitWriter::with_prefix(&[], samples.len() * 2 + 16);
        let mut xor = XorValues::writer(0);
        for s in samples {
            xor.write(&mut w, s.v.to_bits());
        }
        let xor = w.into_bytes();
        match decimal {
            // The XOR kind's parameters are its kind byte.
            Some((size, d)) if size < xor.len() + 1 => ValuePlan::Decimal(d),
            _ => ValuePlan::Xor(xor),
        }
    }

    fn write_params(&self, out: &mut Vec<u8>) {
        match self {
            ValuePlan::Xor(_) => out.push(VALUES_XOR),
            ValuePlan::Decimal(d) => d.write_params(out),
        }
    }

    fn write_stream(&self, out: &mut Vec<u8>) {
        match self {
            ValuePlan::Xor(bytes) => out.extend_from_slice(bytes),
            ValuePlan::Decimal(d) => {
                let mut w = BitWriter::with_prefix(&[], d.bits.div_ceil(8) as usize + 8);
                d.code.write(&d.residuals, &mut w);
                out.extend_from_slice(&w.into_bytes());
            }
        }
    }
}

/// Largest mantissa of a decimal with a fractional exponent (`e >= 1`), exclusive: below
/// it, `round(v * 10^e)` is the mantissa whenever there is one (the product is off by
/// less than 1/2), and a decimal at `e` is one at `e + 1` while the mantissa stays below.
const MAX_FRACTIONAL_MANTISSA: f64 = (1u64 << 51) as f64;

/// First `f64` that `as i64` cannot hold.
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// `m` with `(m as f64) / 10^e` bit-identical to `v`, if there is one (with `|m| < 2^51`
/// for `e >= 1`).
#[inline]
fn decimal_mantissa(v: f64, e: usize) -> Option<i64> {
    let p = *POW10.get(e)?;
    let x = v * p;
    let end = if e == 0 {
        I64_END
    } else {
        MAX_FRACTIONAL_MANTISSA
    };
    if x.is_nan() || x.abs() >= end {
        return None;
    }
    let m = round_to_i64(x);
    ((m as f64 / p).to_bits() == v.to_bits()).then_some(m)
}

/// `x.round() as i64` for `|x| < 2^63`, without the library call `round` is on targets
/// without SSE4.1: truncate, then correct by the fraction (exact below 2^52; above, `x`
/// is an integer).
#[inline(always)]
fn round_to_i64(x: f64) -> i64 {
    let t = x as i64;
    let frac = x - t as f64;
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// The smallest exponent `e` with `v == m / 10^e` exactly for an integer `m`; `hint` is
/// tried first (the previous value's).
fn min_exponent(v: f64, hint: usize) -> Option<usize> {
    // Integers: no division needed. Excludes -0.0, which `0 as f64` does not give back.
    if v.abs() < I64_END && ((v as i64) as f64).to_bits() == v.to_bits() {
        return Some(0);
    }
    let ok = |e: usize| decimal_mantissa(v, e).is_some();
    if hint >= 1 && ok(hint) && (hint == 1 || !ok(hint - 1)) {
        return Some(hint);
    }
    // Decimals at `e` stay decimals up to the last exponent below the mantissa limit,
    // `top`: if `v` is none there it is none at all, else binary search.
    let top = POW10.partition_point(|&p| v.abs() * p < MAX_FRACTIONAL_MANTISSA);
    let top = top.checked_sub(1).filter(|&t| t >= 1)?;
    if !ok(top) {
        return None;
    }
    let (mut lo, mut hi) = (1, top);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The cheapest decimal form of the values, if enough of them are decimals.
fn decimal_plan(samples: &[Sample]) -> Option<DecimalPlan> {
    let n = samples.len();
    // Past this many exceptions XOR values are smaller anyway; stop looking.
    let budget = n / 4 + 1;
    let mut by_exponent = [0usize; MAX_EXPONENT + 1];
    let mut none = 0;
    let mut hint = 0;
    for s in samples {
        match min_exponent(s.v, hint) {
            Some(e) => {
                by_exponent[e] += 1;
                hint = e;
            }
            None => {
                none += 1;
                if none > budget {
                    return None;
                }
            }
        }
    }
    let max_e = by_exponent.iter().rposition(|&c| c > 0)?;
    // The exponent every decimal needs, and the smallest one that leaves at most a few
    // values (say one needing more digits than the rest) as exceptions.
    let few = (n / 32).max(1);
    let mut above = 0;
    let mut low_e = max_e;
    for e in (0..max_e).rev() {
        above += by_exponent[e + 1];
        if above > few {
            break;
        }
        low_e = e;
    }
    let mut best = decimal_plan_at(samples, max_e, budget);
    if low_e < max_e
        && let Some(p) = decimal_plan_at(samples, low_e, budget)
        && best.as_ref().is_none_or(|b| p.size() < b.size())
    {
        best = Some(p);
    }
    best
}

/// The cheapest decimal form with exponent `e`, or `None` past `budget` exceptions.
fn decimal_plan_at(samples: &[Sample], e: usize, budget: usize) -> Option<DecimalPlan> {
    let mut ms = Vec::with_capacity(samples.len());
    let mut exceptions = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match decimal_mantissa(s.v, e) {
            Some(m) => ms.push(m),
            None => {
                if exceptions.len() == budget {
                    return None;
                }
                // `i < MAX_SAMPLES_PER_CHUNK <= u16::MAX`.
                exceptions.push((i as u16, s.v.to_bits()));
            }
        }
    }
    // Estimate every order, plan the ones close to the best estimate.
    let mut runs: Vec<(u8, i64, i64, Vec<i64>, u64)> = (0..=MAX_ORDER)
        .map(|order| {
            let mut res = Vec::with_capacity(ms.len());
            let (m_base, d_base) = order_residuals(&ms, order, &mut res);
            let estimate = IntCode::estimate(&res);
            (order, m_base, d_base, res, estimate)
        })
        .collect();
    let best_estimate = runs.iter().map(|r| r.4).min().unwrap_or(0);
    runs.retain(|r| near(r.4, best_estimate));
    let mut best: Option<(DecimalPlan, usize)> = None;
    for (order, m_base, d_base, residuals, _) in runs {
        let (code, bits) = IntCode::plan(&residuals);
        let plan = DecimalPlan {
            // `e <= MAX_EXPONENT < 256`.
            exponent: e as u8,
            order,
            m_base,
            d_base,
            code,
            bits,
            residuals,
            exceptions: Vec::new(),
        };
        let size = plan.size();
        if best.as_ref().is_none_or(|b| size < b.1) {
            best = Some((plan, size));
        }
    }
    best.map(|(mut b, _)| {
        b.exceptions = exceptions;
        b
    })
}

/// Fills `out` with the residuals of `ms` at difference order `order`, and returns the
/// decoder's starting integer and delta. The first `order` residuals have no
/// predecessors to be taken from: the start is chosen so that they equal the median of
/// the others, which costs the least in the packed code.
fn order_residuals(ms: &[i64], order: u8, out: &mut Vec<i64>) -> (i64, i64) {
    out.clear();
    let order = usize::from(order.min(MAX_ORDER));
    let (m0, m1) = match *ms {
        [] => return (0, 0),
        [a] => (a, a),
        [a, b, ..] => (a, b),
    };
    out.extend(ms.iter().take(order).map(|_| 0));
    match order {
        0 => out.extend_from_slice(ms),
        1 => out.extend(ms.windows(2).map(|w| w[1].wrapping_sub(w[0]))),
        _ => out.extend(ms.windows(3).map(|w| {
            w[2].wrapping_sub(w[1])
                .wrapping_sub(w[1].wrapping_sub(w[0]))
        })),
    }
    let c = out.get(order..).map_or(0, approx_median);
    for r in out.iter_mut().take(order) {
        *r = c;
    }
    match order {
        0 => (0, 0),
        // m_base + c == m0.
        1 => (m0.wrapping_sub(c), 0),
        // d0 = d_base + c, m0 = m_base + d0, m1 = m0 + d0 + c.
        _ => {
            let d0 = if ms.len() > 1 {
                m1.wrapping_sub(m0).wrapping_sub(c)
            } else {
                0
            };
            (m0.wrapping_sub(d0), d0.wrapping_sub(c))
        }
    }
}

/// How the iterator rebuilds values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Xor,
    /// Decimal integers, from residuals of the order given by `keep_m` and `keep_d`.
    Decimal,
}

/// Reads the samples of a DoD chunk, borrowing its bytes (which may be a memory map).
///
/// Yields exactly the number of samples in the header. If the streams end before them or
/// the bytes are inconsistent, it yields one `Err` and then `None`. Bytes after the last
/// sample's value bits are ignored.
#[derive(Debug, Clone)]
pub struct DodIter<'a> {
    /// Timestamp residuals.
    ts: BitBuffer<'a>,
    /// Value residuals or XOR values.
    vs: BitBuffer<'a>,
    /// Samples in the header.
    total: usize,
    /// Samples yielded so far; set to `total` after an error.
    read: usize,
    t_code: IntDecoder,
    stride: i64,
    tolerance: u64,
    /// The grid point of the last timestamp.
    grid: i64,
    kind: ValueKind,
    v_code: IntDecoder,
    /// `10^e` of decimal values.
    scale: f64,
    /// `e == 0`.
    integers: bool,
    /// Last decimal integer and its delta (as the residual order uses it).
    m: i64,
    d: i64,
    /// All ones where the order keeps the last integer (1 and 2), and its delta (2).
    keep_m: i64,
    keep_d: i64,
    xor: XorValues,
    exceptions: Exceptions<'a>,
    /// `min(total, exceptions.next)`: where the common case ends.
    stop: usize,
}

impl<'a> DodIter<'a> {
    /// An iterator over the chunk in `bytes`. Fails if the parameters are cut short or
    /// invalid; the streams are checked as they are read.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let mut r = ByteReader::new(bytes);
        let total = usize::from(r.u16_le()?);
        let mut it = DodIter {
            ts: BitBuffer::new(&[]),
            vs: BitBuffer::new(&[]),
            total,
            read: 0,
            t_code: IntCode::constant(0).decoder(),
            stride: 0,
            tolerance: 0,
            grid: 0,
            kind: ValueKind::Xor,
            v_code: IntCode::constant(0).decoder(),
            scale: 1.0,
            integers: true,
            m: 0,
            d: 0,
            keep_m: 0,
            keep_d: 0,
            xor: XorValues::reader(0),
            exceptions: Exceptions::new(&[]),
            stop: total,
        };
        if total == 0 {
            return Ok(it);
        }
        it.grid = r.varint()?;
        it.stride = r.varint()?;
        it.tolerance = r.uvarint()?;
        it.t_code = IntCode::read_params(&mut r)?.decoder();
        match r.u8()? {
            VALUES_XOR => {}
            VALUES_DECIMAL => {
                let e = usize::from(r.u8()?);
                it.scale = *POW10
                    .get(e)
                    .ok_or(ChunkError::Corrupt("decimal exponent above 22"))?;
                it.integers = e == 0;
                let order = r.u8()?;
                if order > MAX_ORDER {
                    return Err(ChunkError::Corrupt("difference order above 2"));
                }
                it.kind = ValueKind::Decimal;
                it.keep_m = if order >= 1 { -1 } else { 0 };
                it.keep_d = if order >= 2 { -1 } else { 0 };
                if order >= 1 {
                    it.m = r.varint()?;
                }
                if order >= 2 {
                    it.d = r.varint()?;
                }
                it.v_code = IntCode::read_params(&mut r)?.decoder();
                let count = r.uvarint()?;
                if count > total as u64 {
                    return Err(ChunkError::Corrupt("more exceptions than samples"));
                }
                // `count <= total <= u16::MAX`.
                let records = r.take(count as usize * EXCEPTION_LEN)?;
                let mut prev = None;
                for rec in records.chunks_exact(EXCEPTION_LEN) {
                    let i = exception_index(rec);
                    if i >= total || prev.is_some_and(|p| p >= i) {
                        return Err(ChunkError::Corrupt("exception indexes out of order"));
                    }
                    prev = Some(i);
                }
                it.exceptions = Exceptions::new(records);
                it.stop = total.min(it.exceptions.next);
            }
            _ => return Err(ChunkError::Corrupt("unknown value kind")),
        }
        let ts_len = r.uvarint()?;
        let ts = r.take(usize::try_from(ts_len).map_err(|_| ChunkError::Truncated)?)?;
        it.ts = BitBuffer::new(ts);
        it.vs = BitBuffer::new(r.rest());
        Ok(it)
    }

    /// Number of samples the chunk holds, per its header.
    pub fn num_samples(&self) -> usize {
        self.total
    }

    /// Appends the remaining samples up to the first after `maxt` that lie in
    /// `[mint, maxt]` to `out`; the same samples as the iterator yields, in one loop.
    /// The streams are checked for overrun once, at the end: on an error, `out` may hold
    /// samples decoded from the damaged chunk, which the caller discards.
    pub fn decode_range(
        &mut self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), ChunkError> {
        out.reserve(self.total - self.read);
        match self.kind {
            ValueKind::Decimal => {
                use super::intcode::{
                    MODE_BUCKETS as B, MODE_CONSTANT as C, MODE_FIXED as F, MODE_GENERAL as G,
                };
                match (self.t_code.mode(), self.v_code.mode()) {
                    (C, C) => self.decimal_range::<C, C>(mint, maxt, out),
                    (C, F) => self.decimal_range::<C, F>(mint, maxt, out),
                    (C, B) => self.decimal_range::<C, B>(mint, maxt, out),
                    (C, _) => self.decimal_range::<C, G>(mint, maxt, out),
                    (F, C) => self.decimal_range::<F, C>(mint, maxt, out),
                    (F, F) => self.decimal_range::<F, F>(mint, maxt, out),
                    (F, B) => self.decimal_range::<F, B>(mint, maxt, out),
                    (F, _) => self.decimal_range::<F, G>(mint, maxt, out),
                    (B, C) => self.decimal_range::<B, C>(mint, maxt, out),
                    (B, F) => self.decimal_range::<B, F>(mint, maxt, out),
                    (B, B) => self.decimal_range::<B, B>(mint, maxt, out),
                    (B, _) => self.decimal_range::<B, G>(mint, maxt, out),
                    (_, C) => self.decimal_range::<G, C>(mint, maxt, out),
                    (_, F) => self.decimal_range::<G, F>(mint, maxt, out),
                    (_, B) => self.decimal_range::<G, B>(mint, maxt, out),
                    (_, _) => self.decimal_range::<G, G>(mint, maxt, out),
                }
            }
            ValueKind::Xor => super::filter_into(self.by_ref(), mint, maxt, out),
        }
    }

    /// The decimal-values loop of [`DodIter::decode_range`], for timestamp and value
    /// codes of modes `TM` and `VM` (see `IntDecoder::mode`). The state lives in locals
    /// for the loop, so that it stays in registers from one sample to the next.
    fn decimal_range<const TM: u8, const VM: u8>(
        &mut self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), ChunkError> {
        let (t_code, v_code) = (self.t_code.clone(), self.v_code.clone());
        let (mut ts, mut vs) = (self.ts.clone(), self.vs.clone());
        let (mut grid, mut m, mut d) = (self.grid, self.m, self.d);
        let (stride, tolerance) = (self.stride, self.tolerance);
        let (keep_m, keep_d) = (self.keep_m, self.keep_d);
        let (scale, integers, total) = (self.scale, self.integers, self.total);
        let mut read = self.read;
        while read < total {
            let e = t_code.read_mode::<TM>(&mut ts);
            let pred = grid.wrapping_add(stride);
            let t = pred.wrapping_add(e);
            grid = if e.unsigned_abs() <= tolerance {
                pred
            } else {
                t
            };
            let v = if read >= self.stop {
                let v = f64::from_bits(self.exceptions.take());
                self.stop = total.min(self.exceptions.next);
                v
            } else {
                let r = v_code.read_mode::<VM>(&mut vs);
                d = (d & keep_d).wrapping_add(r);
                m = (m & keep_m).wrapping_add(d);
                if integers { m as f64 } else { m as f64 / scale }
            };
            read += 1;
            if t > maxt {
                break;
            }
            if t >= mint {
                out.push(Sample { t, v });
            }
        }
        (self.ts, self.vs) = (ts, vs);
        (self.grid, self.m, self.d, self.read) = (grid, m, d, read);
        if self.ts.overrun() || self.vs.overrun() {
            self.read = self.total;
            return Err(ChunkError::Truncated);
        }
        Ok(())
    }

    /// Decodes the next timestamp.
    #[inline(always)]
    fn next_t(&mut self) -> i64 {
        let e = self.t_code.read(&mut self.ts);
        let pred = self.grid.wrapping_add(self.stride);
        let t = pred.wrapping_add(e);
        self.grid = if e.unsigned_abs() <= self.tolerance {
            pred
        } else {
            t
        };
        t
    }

    /// The sample, unless a stream ran out while decoding it.
    #[inline(always)]
    fn finish(&mut self, t: i64, v: f64) -> Result<Sample, ChunkError> {
        if self.ts.overrun() || self.vs.overrun() {
            return Err(self.fail(ChunkError::Truncated));
        }
        self.read += 1;
        Ok(Sample { t, v })
    }

    /// The current decimal value. Dividing by 1 changes nothing, so integers skip the
    /// division, the slowest step of decoding.
    #[inline(always)]
    fn decimal(&self) -> f64 {
        if self.integers {
            self.m as f64
        } else {
            self.m as f64 / self.scale
        }
    }

    /// Ends the iteration with `e`, or with a truncation if a stream ran out. Inlined,
    /// like everything the loop calls with `self`, so that the iterator's state can stay
    /// in registers.
    #[inline(always)]
    fn fail(&mut self, e: ChunkError) -> ChunkError {
        self.read = self.total;
        if self.ts.overrun() || self.vs.overrun() {
            ChunkError::Truncated
        } else {
            e
        }
    }
}

/// Exception records not reached yet, validated by [`DodIter::new`].
#[derive(Debug, Clone)]
struct Exceptions<'a> {
    rest: &'a [u8],
    /// Index of the sample of the first record in `rest`, or `usize::MAX`.
    next: usize,
}

impl<'a> Exceptions<'a> {
    fn new(records: &'a [u8]) -> Self {
        Exceptions {
            rest: records,
            next: records.get(..2).map_or(usize::MAX, exception_index),
        }
    }

    /// Value bits of the first record; moves to the next one.
    #[inline(never)]
    fn take(&mut self) -> u64 {
        let (rec, rest) = self
            .rest
            .split_first_chunk::<EXCEPTION_LEN>()
            .unwrap_or((&[0; EXCEPTION_LEN], &[]));
        let bits = rec.last_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
        *self = Exceptions::new(rest);
        bits
    }
}

/// The sample index at the start of an exception record.
fn exception_index(rec: &[u8]) -> usize {
    match rec {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => usize::MAX,
    }
}

impl Iterator for DodIter<'_> {
    type Item = Result<Sample, ChunkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // One comparison for both the end and the next exception.
        if self.read >= self.stop {
            if self.read >= self.total {
                return None;
            }
            let t = self.next_t();
            let v = f64::from_bits(self.exceptions.take());
            self.stop = self.total.min(self.exceptions.next);
            return Some(self.finish(t, v));
        }
        let t = self.next_t();
        let v = {
            match self.kind {
                ValueKind::Xor => match self.xor.read(&mut self.vs) {
                    Ok(bits) => f64::from_bits(bits),
                    Err(e) => return Some(Err(self.fail(e))),
                },
                ValueKind::Decimal => {
                    // Order 0: m = r; 1: m += r; 2: d += r, m += d. Masks, not branches.
                    let r = self.v_code.read(&mut self.vs);
                    self.d = (self.d & self.keep_d).wrapping_add(r);
                    self.m = (self.m & self.keep_m).wrapping_add(self.d);
                    self.decimal()
                }
            }
        };
        Some(self.finish(t, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.read;
        (left.min(1), Some(left))
    }
}

impl std::iter::FusedIterator for DodIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples_of(pairs: &[(i64, u64)]) -> Vec<Sample> {
        pairs
            .iter()
            .map(|&(t, v)| Sample {
                t,
                v: f64::from_bits(v),
            })
            .collect()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(i64, u64)>, ChunkError> {
        DodIter::new(bytes)?
            .map(|s| s.map(|s| (s.t, s.v.to_bits())))
            .collect()
    }

    fn assert_round_trip(pairs: &[(i64, u64)]) -> Vec<u8> {
        let bytes = encode_dod(&samples_of(pairs));
        assert_eq!(decode(&bytes).as_deref(), Ok(pairs));
        assert_eq!(DodIter::new(&bytes).unwrap().num_samples(), pairs.len());
        // The bulk decoder gives what iterating and filtering gives, for any range.
        let mut ts: Vec<i64> = pairs.iter().map(|p| p.0).collect();
        ts.sort_unstable();
        let mid = ts.get(ts.len() / 3).copied().unwrap_or(0);
        let high = ts.get(2 * ts.len() / 3).copied().unwrap_or(0);
        for (lo, hi) in [(i64::MIN, i64::MAX), (mid, high), (mid, mid)] {
            let mut got = Vec::new();
            DodIter::new(&bytes)
                .unwrap()
                .decode_range(lo, hi, &mut got)
                .unwrap();
            let mut want = Vec::new();
            for &(t, v) in pairs {
                if t > hi {
                    break;
                }
                if t >= lo {
                    want.push((t, v));
                }
            }
            let got: Vec<(i64, u64)> = got.iter().map(|s| (s.t, s.v.to_bits())).collect();
            assert_eq!(got, want, "range [{lo}, {hi}]");
        }
        bytes
    }

    /// Offset of the value kind byte of a chunk with at least one sample.
    fn kind_offset(bytes: &[u8]) -> usize {
        let mut r = ByteReader::new(bytes);
        r.u16_le().unwrap();
        r.varint().unwrap();
        r.varint().unwrap();
        r.uvarint().unwrap();
        IntCode::read_params(&mut r).unwrap();
        bytes.len() - r.rest().len()
    }

    fn value_kind(bytes: &[u8]) -> u8 {
        bytes[kind_offset(bytes)]
    }

    fn scrapes(
        n: i64,
        jitter: impl Fn(i64) -> i64,
        mut v: impl FnMut(i64) -> f64,
    ) -> Vec<(i64, u64)> {
        (0..n)
            .map(|i| (1_700_000_000_000 + i * 15_000 + jitter(i), v(i).to_bits()))
            .collect()
    }

    /// A small deterministic generator for test data.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
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
    fn empty_chunk_is_the_count_alone() {
        let bytes = assert_round_trip(&[]);
        assert_eq!(bytes, [0, 0]);
    }

    #[test]
    fn layout_matches_the_format_document() {
        // Worked example from tsdb/docs/format/chunks-dod.md.
        let pairs = [
            (1_000, 36.6f64.to_bits()),
            (16_000, 36.6f64.to_bits()),
            (31_002, 36.7f64.to_bits()),
            (46_000, 36.6f64.to_bits()),
        ];
        let bytes = assert_round_trip(&pairs);
        #[rustfmt::skip]
        let want = [
            0x04, 0x00,             // num_samples = 4, little-endian
            0xdf, 0xda, 0x01,       // t_base = 1000 - 15000: varint(-14000)
            0xb0, 0xea, 0x01,       // stride = varint(15000)
            0xcb, 0x3a,             // tolerance = uvarint(7499)
            0x00, 0x01, 0x00, 0x02, // t_code: 1 bucket of 1 bit, offset 0, factor 2
            0x01,                   // value_kind = decimal
            0x01,                   // exponent 1
            0x00,                   // order 0
            0x00, 0x01, 0xdc, 0x05, // v_code: 1 bucket of 1 bit, offset 366,
            0x01,                   //   factor 1
            0x00,                   // num_exceptions = 0
            0x01,                   // ts_len = 1
            0x20,                   // timestamps: 0 0 1 0, padding
            0x20,                   // values: 0 0 1 0, padding
        ];
        assert_eq!(bytes, want);
        let mut xor = crate::chunkenc::XorAppender::new();
        for (t, v) in pairs {
            xor.append(t, f64::from_bits(v));
        }
        assert_eq!(xor.bytes().len(), 32);
    }

    #[test]
    fn special_float_bit_patterns_round_trip() {
        let pairs: Vec<(i64, u64)> = SPECIAL_BITS
            .iter()
            .chain(SPECIAL_BITS.iter().rev())
            .enumerate()
            .map(|(i, &v)| (i as i64 * 15_000, v))
            .collect();
        assert_round_trip(&pairs);
        for &v in &SPECIAL_BITS {
            assert_round_trip(&[(0, v)]);
            assert_round_trip(&[(0, v), (1, v), (2, v)]);
            // Among decimals: a single odd value becomes an exception.
            let mut pairs = scrapes(100, |_| 0, |i| i as f64 / 4.0);
            pairs[37].1 = v;
            assert_round_trip(&pairs);
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
        let pairs: Vec<(i64, u64)> = ts.iter().map(|&t| (t, 1.0f64.to_bits())).collect();
        assert_round_trip(&pairs);
        assert_round_trip(&[(i64::MIN, 0)]);
        assert_round_trip(&[(i64::MAX, 0), (i64::MIN, 0)]);
        assert_round_trip(&[(i64::MIN, 0), (i64::MAX, 0), (i64::MIN, 0)]);
    }

    #[test]
    fn extreme_decimals_round_trip() {
        let vals = [
            9_007_199_254_740_993.0, // 2^53 + 1 rounds to 2^53
            -9_223_372_036_854_775_808.0,
            9.223_372_036_854_775e18,
            1e22,
            1e-22,
            0.1 + 0.2,
            123_456.789_012_345,
            -0.000_001,
            5e-324,
        ];
        for v in vals {
            let pairs: Vec<(i64, u64)> = (0..10).map(|i| (i, f64::to_bits(v))).collect();
            assert_round_trip(&pairs);
            let pairs: Vec<(i64, u64)> = (0..10)
                .map(|i| (i, if i % 3 == 0 { v } else { 1.5f64 }.to_bits()))
                .collect();
            assert_round_trip(&pairs);
        }
    }

    #[test]
    fn constants_on_time_take_no_bits_per_sample() {
        let pairs = scrapes(480, |_| 0, |_| 1.0);
        let bytes = assert_round_trip(&pairs);
        assert!(bytes.len() < 30, "{} bytes", bytes.len());
        assert_eq!(value_kind(&bytes), VALUES_DECIMAL);
    }

    #[test]
    fn jittered_timestamps_cost_about_two_bits() {
        let mut seed = 7u64;
        let jitter: Vec<i64> = (0..480).map(|_| (rng(&mut seed) % 3) as i64).collect();
        let pairs = scrapes(480, |i| jitter[i as usize], |_| 1.0);
        let bytes = assert_round_trip(&pairs);
        assert!(bytes.len() < 30 + 480 * 2 / 8, "{} bytes", bytes.len());
    }

    #[test]
    fn missed_scrapes_and_phase_changes_round_trip() {
        let mut pairs = scrapes(300, |i| i % 3, |i| i as f64);
        pairs.remove(100);
        pairs.remove(100);
        for p in &mut pairs[200..] {
            p.0 += 4_321;
        }
        assert_round_trip(&pairs);
    }

    #[test]
    fn decimal_gauges_take_a_few_bits_per_value() {
        // A two-decimal random walk, steps within ±0.20: 41 values, about 5.4 bits.
        let mut seed = 11u64;
        let mut walk = 5_000i64;
        let pairs = scrapes(
            480,
            |_| 0,
            |_| {
                walk += (rng(&mut seed) % 41) as i64 - 20;
                walk as f64 / 100.0
            },
        );
        let bytes = assert_round_trip(&pairs);
        assert_eq!(value_kind(&bytes), VALUES_DECIMAL);
        assert!(bytes.len() < 30 + 480 * 6 / 8, "{} bytes", bytes.len());
    }

    #[test]
    fn counters_with_steady_increments_take_almost_nothing() {
        let pairs = scrapes(480, |_| 0, |i| 1_000_000.0 + 15.0 * i as f64);
        let bytes = assert_round_trip(&pairs);
        assert!(bytes.len() < 30, "{} bytes", bytes.len());
        // A smooth curve is cheapest as deltas of deltas.
        let pairs = scrapes(480, |_| 0, |i| (i * i) as f64);
        let bytes = assert_round_trip(&pairs);
        assert!(bytes.len() < 30, "{} bytes", bytes.len());
    }

    #[test]
    fn page_multiples_divide_out() {
        let mut seed = 3u64;
        let mut mem = 1i64 << 33;
        let pairs = scrapes(
            480,
            |_| 0,
            |_| {
                mem += 4096 * ((rng(&mut seed) % 9) as i64 - 4);
                mem as f64
            },
        );
        let bytes = assert_round_trip(&pairs);
        // 9 steps: under 4 bits each.
        assert!(bytes.len() < 30 + 480 * 4 / 8, "{} bytes", bytes.len());
    }

    #[test]
    fn one_value_with_more_digits_is_an_exception() {
        let mut pairs = scrapes(480, |_| 0, |i| (i % 10) as f64 / 10.0);
        pairs[200].1 = 0.123_456_789f64.to_bits();
        let bytes = assert_round_trip(&pairs);
        let it = DodIter::new(&bytes).unwrap();
        assert_eq!(it.scale, 10.0);
        assert_eq!(it.exceptions.rest.len(), EXCEPTION_LEN);
    }

    #[test]
    fn a_stale_marker_keeps_the_chunk_decimal() {
        let mut pairs = scrapes(120, |_| 0, |i| 100.0 + i as f64);
        pairs.push((pairs[119].0 + 15_000, crate::STALE_NAN_BITS));
        let bytes = assert_round_trip(&pairs);
        assert_eq!(value_kind(&bytes), VALUES_DECIMAL);
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
    }

    #[test]
    fn random_bit_patterns_fall_back_to_xor_values() {
        let mut seed = 5u64;
        let pairs = scrapes(200, |_| 0, |_| f64::from_bits(rng(&mut seed)));
        let bytes = assert_round_trip(&pairs);
        assert_eq!(value_kind(&bytes), VALUES_XOR);
    }

    #[test]
    fn fifteen_digit_decimals_are_decimals() {
        // 15 significant digits: `m` takes 50 bits, XOR about 60.
        let mut seed = 5u64;
        let pairs = scrapes(
            200,
            |_| 0,
            |_| (rng(&mut seed) % 1_000_000_000_000_000) as f64 / 1e15,
        );
        let bytes = assert_round_trip(&pairs);
        assert_eq!(value_kind(&bytes), VALUES_DECIMAL);
        assert!(bytes.len() < 30 + 200 * 51 / 8, "{} bytes", bytes.len());
    }

    #[test]
    fn rounding_matches_the_library() {
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999999999999994,
            -0.49999999999999994,
        ];
        xs.extend([
            4503599627370495.5,
            -4503599627370495.5,
            4503599627370497.0,
            9.2e18,
            -9.2e18,
        ]);
        let mut seed = 9u64;
        for _ in 0..10_000 {
            let x = f64::from_bits(rng(&mut seed));
            if x.abs() < I64_END {
                xs.push(x);
            }
            xs.push((rng(&mut seed) % 2_000_000) as f64 / 7.0 - 100_000.0);
        }
        for x in xs {
            assert_eq!(round_to_i64(x), x.round() as i64, "{x:e}");
        }
    }

    #[test]
    fn min_exponent_finds_the_fewest_digits() {
        let cases = [
            (0.0, Some(0)),
            (-0.0, None),
            (3.0, Some(0)),
            (-1e18, Some(0)),
            (9_007_199_254_740_993.0, Some(0)),
            (0.5, Some(1)),
            (36.6, Some(1)),
            (-0.25, Some(2)),
            (0.1 + 0.2, None),
            (1e-22, Some(22)),
            (1.5e-21, Some(22)),
            (1e-23, None),
            (123_456.789, Some(3)),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (f64::from_bits(1), None),
        ];
        for (v, want) in cases {
            for hint in [0, 1, 2, 5, 22] {
                assert_eq!(min_exponent(v, hint), want, "{v:e} hint {hint}");
            }
        }
    }

    #[test]
    fn every_strict_prefix_of_a_chunk_is_truncated() {
        let cases = [
            scrapes(50, |i| i % 3, |i| i as f64 / 100.0),
            scrapes(50, |_| 0, |_| 1.0),
            scrapes(50, |i| i * 7, |i| (i as f64).sqrt()),
            vec![(5, crate::STALE_NAN_BITS)],
            vec![(5, 0), (6, 1.5f64.to_bits()), (-7, crate::STALE_NAN_BITS)],
        ];
        for pairs in cases {
            let bytes = assert_round_trip(&pairs);
            for len in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..len]),
                    Err(ChunkError::Truncated),
                    "{pairs:?} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_after_the_last_sample_are_ignored() {
        let pairs = scrapes(30, |i| i % 2, |i| i as f64);
        let mut bytes = encode_dod(&samples_of(&pairs));
        bytes.extend_from_slice(&[0xff; 16]);
        assert_eq!(decode(&bytes).as_deref(), Ok(&pairs[..]));
    }

    #[test]
    fn invalid_parameters_are_corrupt() {
        let pairs = [(1_000, 36.6f64.to_bits()), (16_000, 36.6f64.to_bits())];
        let good = encode_dod(&samples_of(&pairs));
        let kind_at = kind_offset(&good);
        assert_eq!(good[kind_at], VALUES_DECIMAL);
        let corrupt = |at: usize, b: u8| {
            let mut bytes = good.clone();
            bytes[at] = b;
            DodIter::new(&bytes).err()
        };
        assert_eq!(
            corrupt(kind_at, 7),
            Some(ChunkError::Corrupt("unknown value kind"))
        );
        assert_eq!(
            corrupt(kind_at + 1, 23),
            Some(ChunkError::Corrupt("decimal exponent above 22"))
        );
        assert_eq!(
            corrupt(kind_at + 2, 3),
            Some(ChunkError::Corrupt("difference order above 2"))
        );
    }

    #[test]
    fn exceptions_out_of_order_are_corrupt() {
        let mut pairs = scrapes(40, |_| 0, |i| i as f64);
        pairs[10].1 = crate::STALE_NAN_BITS;
        pairs[20].1 = crate::STALE_NAN_BITS;
        let bytes = encode_dod(&samples_of(&pairs));
        let rec = bytes
            .windows(EXCEPTION_LEN)
            .position(|w| {
                w[..2] == 10u16.to_le_bytes() && w[2..] == crate::STALE_NAN_BITS.to_le_bytes()
            })
            .unwrap();
        let mut swapped = bytes.clone();
        swapped[rec..rec + 2].copy_from_slice(&20u16.to_le_bytes());
        assert_eq!(
            DodIter::new(&swapped).err(),
            Some(ChunkError::Corrupt("exception indexes out of order"))
        );
        let mut beyond = bytes;
        beyond[rec + EXCEPTION_LEN..rec + EXCEPTION_LEN + 2].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(
            DodIter::new(&beyond).err(),
            Some(ChunkError::Corrupt("exception indexes out of order"))
        );
    }

    #[test]
    fn full_chunk_holds_max_samples() {
        let pairs: Vec<(i64, u64)> = (0..MAX_SAMPLES_PER_CHUNK as i64)
            .map(|i| (i * 1000, ((i % 1000) as f64 / 8.0).to_bits()))
            .collect();
        let bytes = assert_round_trip(&pairs);
        assert_eq!(&bytes[..2], &[0xff, 0xff]);
    }

    #[test]
    #[should_panic(expected = "a chunk holds at most")]
    fn encoding_past_the_limit_panics() {
        let samples = vec![Sample { t: 0, v: 0.0 }; MAX_SAMPLES_PER_CHUNK + 1];
        encode_dod(&samples);
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

    fn walk(start: i64, steps: &[i64]) -> Vec<i64> {
        let mut t = start;
        steps
            .iter()
            .map(|&s| {
                t = t.wrapping_add(s);
                t
            })
            .collect()
    }

    /// Arbitrary samples: any bits, or steps of typical and extreme sizes.
    fn samples() -> impl Strategy<Value = Vec<(i64, u64)>> {
        prop_oneof![
            proptest::collection::vec((any::<i64>(), value_bits()), 0..300),
            (
                any::<i64>(),
                proptest::collection::vec((timestamp_step(), value_bits()), 0..300)
            )
                .prop_map(|(start, steps)| {
                    let (ts, vs): (Vec<i64>, Vec<u64>) = steps.into_iter().unzip();
                    walk(start, &ts).into_iter().zip(vs).collect()
                }),
        ]
    }

    /// Samples that look like monitoring data: jittered scrapes; integers over `10^k`
    /// that are constant, count up, or wander; now and then a special value.
    fn decimal_samples() -> impl Strategy<Value = Vec<(i64, u64)>> {
        let jitter = prop_oneof![Just(0i64), 0i64..3, 0i64..50, -5i64..5];
        let shape = prop_oneof![
            Just(0i64..1),
            Just(0i64..10),
            Just(-20i64..21),
            Just(0i64..5_000_000),
            Just(-1_000_000_000i64..1_000_000_000),
        ];
        (
            any::<i64>(),
            prop_oneof![Just(15_000i64), Just(1_000), 1i64..100_000],
            proptest::collection::vec(jitter, 0..500),
            0usize..=6,
            any::<i32>(),
            shape,
            proptest::collection::vec(any::<u64>(), 500),
            proptest::collection::vec((0usize..500, value_bits()), 0..3),
        )
            .prop_map(|(t0, step, jitter, k, m0, shape, rnd, odd)| {
                let scale = 10f64.powi(k as i32);
                let mut m = i64::from(m0);
                let span = (shape.end - shape.start) as u64;
                let mut pairs: Vec<(i64, u64)> = jitter
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| {
                        let t = t0.wrapping_add(step.wrapping_mul(i as i64)).wrapping_add(j);
                        m = m.wrapping_add(shape.start + (rnd[i] % span) as i64);
                        (t, (m as f64 / scale).to_bits())
                    })
                    .collect();
                for (i, v) in odd {
                    if let Some(p) = pairs.get_mut(i) {
                        p.1 = v;
                    }
                }
                pairs
            })
    }

    proptest! {
        #[test]
        fn arbitrary_samples_round_trip_bit_exactly(pairs in samples()) {
            let bytes = encode_dod(&samples_of(&pairs));
            prop_assert_eq!(decode(&bytes), Ok(pairs));
        }

        #[test]
        fn decimal_looking_samples_round_trip_bit_exactly(pairs in decimal_samples()) {
            let bytes = encode_dod(&samples_of(&pairs));
            prop_assert_eq!(decode(&bytes), Ok(pairs));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(it) = DodIter::new(&bytes) {
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
        fn mutated_chunks_never_panic(
            pairs in decimal_samples(),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode_dod(&samples_of(&pairs));
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            if let Ok(it) = DodIter::new(&bytes) {
                let total = it.num_samples();
                prop_assert!(it.count() <= total);
            }
        }

        #[test]
        fn truncated_chunks_are_errors(
            pairs in prop_oneof![samples(), decimal_samples()],
            cut in any::<proptest::sample::Index>(),
        ) {
            prop_assume!(!pairs.is_empty());
            let bytes = encode_dod(&samples_of(&pairs));
            let len = cut.index(bytes.len());
            prop_assert_eq!(decode(&bytes[..len]), Err(ChunkError::Truncated));
            let bulk = DodIter::new(&bytes[..len])
                .and_then(|mut it| it.decode_range(i64::MIN, i64::MAX, &mut Vec::new()));
            prop_assert_eq!(bulk, Err(ChunkError::Truncated));
        }
    }
}
