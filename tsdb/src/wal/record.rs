//! Payloads of write-ahead log records.
//!
//! - Type 1, series: `count uvarint`, then per series `ref uvarint`, `labels uvarint`,
//!   and per label `len uvarint, name bytes, len uvarint, value bytes`.
//! - Type 2, samples: `count uvarint`, `base_ref uvarint`, `base_t varint`, then per
//!   sample `ref - base_ref` as zigzag varint, `t - base_t` as zigzag varint, and the
//!   value's IEEE-754 bits as 8 bytes little-endian.
//!
//! Decoding never trusts a count or a length: every read is bounds-checked and a
//! payload with bytes left over is corrupt.

use crate::Sample;

pub const TYPE_SERIES: u8 = 1;
pub const TYPE_SAMPLES: u8 = 2;

/// A record payload that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt wal record: {0}")]
pub struct RecordError(pub &'static str);

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// A bounds-checked cursor over a payload.
pub struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }

    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    pub fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for (i, &byte) in self.b.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                return Err(RecordError("varint overflows 64 bits"));
            }
            v |= ((byte & 0x7f) as u64) << (7 * i);
            if byte < 0x80 {
                self.b = &self.b[i + 1..];
                return Ok(v);
            }
        }
        Err(RecordError("truncated varint"))
    }

    pub fn varint(&mut self) -> Result<i64, RecordError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.b.len() < n {
            return Err(RecordError("truncated bytes"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    pub fn str(&mut self) -> Result<&'a str, RecordError> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| RecordError("length too large"))?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| RecordError("label is not utf-8"))
    }

    pub fn u64_le(&mut self) -> Result<u64, RecordError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Encodes one series record holding `(ref, labels)` pairs.
pub fn encode_series<'a>(
    out: &mut Vec<u8>,
    series: impl ExactSizeIterator<Item = (u64, &'a crate::Labels)>,
) {
    put_uvarint(out, series.len() as u64);
    for (r, labels) in series {
        put_uvarint(out, r);
        put_uvarint(out, labels.len() as u64);
        for (n, v) in labels.iter() {
            put_uvarint(out, n.len() as u64);
            out.extend_from_slice(n.as_bytes());
            put_uvarint(out, v.len() as u64);
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// Decodes a series record, calling `f(ref, pairs)` for each series. Label pairs are
/// returned as found; the caller validates them.
pub fn decode_series<'a>(
    payload: &'a [u8],
    mut f: impl FnMut(u64, &[(&'a str, &'a str)]),
) -> Result<(), RecordError> {
    let mut c = Cursor::new(payload);
    let n = c.uvarint()?;
    let mut pairs = Vec::new();
    for _ in 0..n {
        let r = c.uvarint()?;
        let nl = c.uvarint()?;
        pairs.clear();
        for _ in 0..nl {
            let name = c.str()?;
            let value = c.str()?;
            pairs.push((name, value));
        }
        f(r, &pairs);
    }
    if !c.is_empty() {
        return Err(RecordError("trailing bytes after series"));
    }
    Ok(())
}

/// Encodes one samples record.
pub fn encode_samples(out: &mut Vec<u8>, samples: &[(u64, Sample)]) {
    put_uvarint(out, samples.len() as u64);
    let (base_ref, base_t) = samples.first().map(|(r, s)| (*r, s.t)).unwrap_or((0, 0));
    put_uvarint(out, base_ref);
    put_varint(out, base_t);
    for (r, s) in samples {
        put_varint(out, r.wrapping_sub(base_ref) as i64);
        put_varint(out, s.t.wrapping_sub(base_t));
        out.extend_from_slice(&s.v.to_bits().to_le_bytes());
    }
}

/// Decodes a samples record, calling `f(ref, sample)` for each sample.
pub fn decode_samples(payload: &[u8], mut f: impl FnMut(u64, Sample)) -> Result<(), RecordError> {
    let mut c = Cursor::new(payload);
    let n = c.uvarint()?;
    let base_ref = c.uvarint()?;
    let base_t = c.varint()?;
    for _ in 0..n {
        let r = base_ref.wrapping_add(c.varint()? as u64);
        let t = base_t.wrapping_add(c.varint()?);
        let v = f64::from_bits(c.u64_le()?);
        f(r, Sample { t, v });
    }
    if !c.is_empty() {
        return Err(RecordError("trailing bytes after samples"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn samples_round_trip(v in proptest::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 0..200)) {
            let samples: Vec<(u64, Sample)> = v.iter().map(|&(r, t, b)| (r, Sample { t, v: f64::from_bits(b) })).collect();
            let mut buf = Vec::new();
            encode_samples(&mut buf, &samples);
            let mut got = Vec::new();
            decode_samples(&buf, |r, s| got.push((r, s.t, s.v.to_bits()))).unwrap();
            let want: Vec<_> = v.clone();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn series_round_trip(v in proptest::collection::vec((any::<u64>(), proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{1,12}", 0..6)), 0..20)) {
            let labels: Vec<(u64, Labels)> = v.iter().map(|(r, m)| (*r, Labels::from_pairs(m.iter()).unwrap())).collect();
            let mut buf = Vec::new();
            encode_series(&mut buf, labels.iter().map(|(r, l)| (*r, l)));
            let mut got = Vec::new();
            decode_series(&buf, |r, pairs| got.push((r, Labels::from_pairs(pairs.iter().copied()).unwrap()))).unwrap();
            prop_assert_eq!(got, labels);
        }

        #[test]
        fn arbitrary_payloads_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_samples(&b, |_, _| {});
            let _ = decode_series(&b, |_, _| {});
        }
    }
}
