//! Little-endian integers and varints: appending them to a buffer, and reading them back
//! from untrusted bytes.
//!
//! [`Decbuf`] is the only way the block readers look at file bytes: every read is bounds
//! checked and reports a short static description on failure, which the caller turns
//! into a [`crate::error::StorageError::Corrupt`] naming the file. Nothing here panics,
//! whatever the input.

/// What was wrong with the bytes; the caller adds the path and the context.
pub(crate) type DecodeError = &'static str;

/// Appends `x` as 4 little-endian bytes.
pub(crate) fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// Appends `x` as 8 little-endian bytes.
pub(crate) fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// Appends `x` as an unsigned LEB128 varint: 7 bits per byte, low groups first, the high
/// bit set on every byte but the last. At most 10 bytes.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Appends `x` zigzag-encoded (0, -1, 1, -2, … map to 0, 1, 2, 3, …) as a uvarint.
pub(crate) fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, ((x << 1) ^ (x >> 63)) as u64);
}

/// Number of bytes [`put_uvarint`] writes for `x`.
pub(crate) fn uvarint_len(x: u64) -> usize {
    let bits = 64 - (x | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A bounds-checked reader over a byte slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decbuf<'a> {
    b: &'a [u8],
}

impl<'a> Decbuf<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Decbuf { b }
    }

    /// Bytes not yet consumed.
    pub(crate) fn len(&self) -> usize {
        self.b.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    /// The unconsumed bytes.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b
    }

    /// Consumes and returns the next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.b.len() {
            return Err("unexpected end of data");
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .b
            .split_first_chunk::<N>()
            .ok_or("unexpected end of data")?;
        self.b = tail;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads a uvarint; rejects encodings longer than 10 bytes or overflowing 64 bits.
    pub(crate) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut x = 0u64;
        for i in 0..10 {
            let Some(&b) = self.b.get(i) else {
                return Err("unexpected end of data in varint");
            };
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits");
            }
            x |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.b = &self.b[i + 1..];
                return Ok(x);
            }
        }
        Err("varint overflows 64 bits")
    }

    /// Reads a uvarint that must fit a `usize` (a length or a count).
    pub(crate) fn uvarint_usize(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.uvarint()?).map_err(|_| "length does not fit in memory")
    }

    /// Reads a zigzag-encoded varint.
    pub(crate) fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        let mut vals: Vec<u64> = (0..64).flat_map(|s| [1u64 << s, (1u64 << s) - 1]).collect();
        vals.push(u64::MAX);
        for x in vals {
            let mut b = Vec::new();
            put_uvarint(&mut b, x);
            assert_eq!(b.len(), uvarint_len(x), "{x}");
            let mut d = Decbuf::new(&b);
            assert_eq!(d.uvarint(), Ok(x));
            assert!(d.is_empty());
            let s = x as i64;
            b.clear();
            put_varint(&mut b, s);
            assert_eq!(Decbuf::new(&b).varint(), Ok(s));
        }
    }

    #[test]
    fn overlong_or_truncated_varints_are_errors() {
        assert!(Decbuf::new(&[0x80; 10]).uvarint().is_err());
        assert!(
            Decbuf::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .uvarint()
                .is_err()
        );
        assert!(Decbuf::new(&[0x80]).uvarint().is_err());
        assert!(Decbuf::new(&[]).uvarint().is_err());
        assert!(Decbuf::new(&[1, 2, 3]).u32().is_err());
        assert!(Decbuf::new(&[1, 2, 3]).bytes(4).is_err());
    }

    #[test]
    fn fixed_integers_are_little_endian() {
        let mut b = Vec::new();
        put_u32(&mut b, 0x0403_0201);
        put_u64(&mut b, 0x0c0b_0a09_0807_0605);
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let mut d = Decbuf::new(&b);
        assert_eq!(d.u32(), Ok(0x0403_0201));
        assert_eq!(d.u64(), Ok(0x0c0b_0a09_0807_0605));
    }
}
