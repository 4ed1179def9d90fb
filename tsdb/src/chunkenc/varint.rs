//! Byte-aligned fields of chunk headers: base-128 varints, zigzag mapping and
//! little-endian fixed-width integers, with a reader that borrows the chunk.
//!
//! Varints are base-128, low 7-bit group first, the high bit of each byte set when more
//! follow (as in protobuf and Go's `encoding/binary`); at most 10 bytes. Signed values
//! are zigzag-mapped first.

use super::ChunkError;

/// Longest varint of a 64-bit value.
const MAX_VARINT_LEN: usize = 10;

/// Maps signed to unsigned so that small magnitudes stay small (as Go's `PutVarint`).
#[inline(always)]
pub(super) fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline(always)]
pub(super) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Appends `x` as an unsigned varint.
pub(super) fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Appends `x` as a signed (zigzag) varint.
pub(super) fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, zigzag(x));
}

/// Reads header fields from the front of a borrowed slice. Running out of bytes is
/// [`ChunkError::Truncated`]; a malformed varint is [`ChunkError::Corrupt`].
#[derive(Debug, Clone)]
pub(super) struct ByteReader<'a> {
    rest: &'a [u8],
}

impl<'a> ByteReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        ByteReader { rest: data }
    }

    /// The bytes not read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkError> {
        if n > self.rest.len() {
            return Err(ChunkError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, ChunkError> {
        let (&b, tail) = self.rest.split_first().ok_or(ChunkError::Truncated)?;
        self.rest = tail;
        Ok(b)
    }

    pub(super) fn u16_le(&mut self) -> Result<u16, ChunkError> {
        let (b, tail) = self
            .rest
            .split_first_chunk::<2>()
            .ok_or(ChunkError::Truncated)?;
        self.rest = tail;
        Ok(u16::from_le_bytes(*b))
    }

    pub(super) fn uvarint(&mut self) -> Result<u64, ChunkError> {
        let mut x = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let b = u64::from(self.u8()?);
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(ChunkError::Corrupt("varint overflows 64 bits"));
            }
            x |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(ChunkError::Corrupt("varint overflows 64 bits"))
    }

    pub(super) fn varint(&mut self) -> Result<i64, ChunkError> {
        self.uvarint().map(unzigzag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_length() {
        let mut vals = vec![0u64, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX, u64::MAX - 1];
        vals.extend((0..64).map(|s| 1u64 << s));
        for x in vals {
            let mut out = Vec::new();
            put_uvarint(&mut out, x);
            assert!(out.len() <= MAX_VARINT_LEN);
            let mut r = ByteReader::new(&out);
            assert_eq!(r.uvarint(), Ok(x));
            assert!(r.rest().is_empty());
            for cut in 0..out.len() {
                assert_eq!(
                    ByteReader::new(&out[..cut]).uvarint(),
                    Err(ChunkError::Truncated)
                );
            }
        }
        for x in [0i64, -1, 1, i64::MIN, i64::MAX, -64, 64] {
            let mut out = Vec::new();
            put_varint(&mut out, x);
            assert_eq!(ByteReader::new(&out).varint(), Ok(x));
        }
    }

    #[test]
    fn overlong_varints_are_corrupt() {
        let eleven = [0xffu8; 11];
        assert_eq!(
            ByteReader::new(&eleven).uvarint(),
            Err(ChunkError::Corrupt("varint overflows 64 bits"))
        );
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(
            ByteReader::new(&ten).uvarint(),
            Err(ChunkError::Corrupt("varint overflows 64 bits"))
        );
    }

    #[test]
    fn zigzag_keeps_small_magnitudes_small() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
        for x in [0, 1, -1, i64::MIN, i64::MAX, 12345, -98765] {
            assert_eq!(unzigzag(zigzag(x)), x);
        }
    }

    #[test]
    fn fixed_width_fields_are_little_endian() {
        let mut r = ByteReader::new(&[0x34, 0x12, 0xaa]);
        assert_eq!(r.u16_le(), Ok(0x1234));
        assert_eq!(r.u16_le(), Err(ChunkError::Truncated));
        assert_eq!(r.take(2), Err(ChunkError::Truncated));
        assert_eq!(r.take(1), Ok(&[0xaa][..]));
        assert_eq!(r.u8(), Err(ChunkError::Truncated));
    }
}
