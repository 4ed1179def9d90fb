//! Bit-level writer and reader for chunk payloads.
//!
//! Bits are packed most significant bit first: the first bit written is bit 7 of the first
//! byte. This is the order Gorilla and Prometheus use, and it lets a multi-bit field be read
//! as the top bits of one 64-bit load. The unused low bits of the last byte are always zero.
//!
//! [`BitWriter`] owns its buffer; after each [`BitWriter::commit`] its bytes are the
//! complete stream. [`BitReader`] borrows a slice (it works on a memory map) and reads
//! past the end as zero bits; the caller checks [`BitReader::overrun`] once per decoded
//! item instead of bounds-checking every field.

/// The 8 bytes of `w` with its most significant byte first.
///
/// The stream is MSB-first by definition of the format, so this order is required here;
/// it is spelled as a byte swap of the little-endian form because the workspace lints deny
/// the `*_be_bytes` helpers everywhere else.
#[inline(always)]
fn msb_first_bytes(w: u64) -> [u8; 8] {
    w.swap_bytes().to_le_bytes()
}

/// The inverse of [`msb_first_bytes`].
#[inline(always)]
fn msb_first_u64(b: [u8; 8]) -> u64 {
    u64::from_le_bytes(b).swap_bytes()
}

/// The widest field [`BitReader::read_bits`] reads from a single load: a load at bit
/// offset `o` in its first byte yields `64 - o >= 57` valid bits.
pub(crate) const MAX_SINGLE_READ: u32 = 57;

/// Appends bit fields to an owned byte buffer.
///
/// The bits not yet forming 8 whole bytes are kept in a 64-bit accumulator; a full
/// accumulator is stored to the buffer, and [`Self::commit`] stores a partial one, so
/// after a commit the buffer holds the complete stream. Writes never load from the buffer.
/// The buffer runs past the stream with zero bytes (up to its capacity) so the 8-byte
/// store always fits; [`Self::bytes`] is the exact stream.
#[derive(Debug, Clone)]
pub(crate) struct BitWriter {
    /// The stream, then zero bytes.
    buf: Vec<u8>,
    /// Byte offset in `buf` where `acc` is stored.
    acc_at: usize,
    /// The bits at `acc_at` onwards, most significant first; bits past `acc_len` are zero.
    acc: u64,
    /// Number of bits in `acc`, in `0..64`.
    acc_len: u32,
}

impl BitWriter {
    /// A writer whose stream starts with `prefix` (whole bytes, such as a header).
    pub(crate) fn with_prefix(prefix: &[u8], capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(prefix.len() + 8));
        buf.extend_from_slice(prefix);
        buf.resize(buf.capacity(), 0);
        BitWriter {
            acc_at: prefix.len(),
            buf,
            acc: 0,
            acc_len: 0,
        }
    }

    /// Length of the stream in bytes.
    #[inline]
    fn len(&self) -> usize {
        self.acc_at + self.acc_len.div_ceil(8) as usize
    }

    /// The stream up to the last [`Self::commit`]; its last byte's unused low bits are
    /// zero.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len()).unwrap_or(&self.buf)
    }

    /// Mutable access to whole bytes before the accumulator (such as a header prefix).
    #[inline]
    pub(crate) fn prefix_mut(&mut self) -> &mut [u8] {
        let at = self.acc_at;
        self.buf.get_mut(..at).unwrap_or(&mut [])
    }

    /// Bytes allocated for the stream.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The stream, with its allocation trimmed to its length.
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        self.commit();
        let len = self.len();
        let mut buf = self.buf;
        buf.truncate(len);
        buf.shrink_to_fit();
        buf
    }

    /// Writes one bit.
    #[inline]
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value`, most significant first; `n` is in `1..=64` and
    /// bits of `value` above `n` are ignored.
    #[inline(always)]
    pub(crate) fn write_bits(&mut self, value: u64, n: u32) {
        debug_assert!((1..=64).contains(&n));
        let free = 64 - self.acc_len;
        if n < free {
            self.acc |= (value << (64 - n)) >> self.acc_len;
            self.acc_len += n;
        } else {
            // Fill the accumulator with the top `free` bits, then start the next word
            // with the remaining `n - free` (in `0..64`).
            let value = value & (u64::MAX >> (64 - n));
            self.acc |= value >> (n - free);
            self.commit();
            self.acc_at += 8;
            if self.buf.len() < self.acc_at + 8 {
                self.grow();
            }
            self.acc_len = n - free;
            self.acc = value.checked_shl(64 - self.acc_len).unwrap_or(0);
        }
    }

    /// Stores the accumulator, making every bit written so far part of [`Self::bytes`].
    #[inline(always)]
    pub(crate) fn commit(&mut self) {
        if let Some(slot) = self
            .buf
            .get_mut(self.acc_at..)
            .and_then(|s| s.first_chunk_mut())
        {
            *slot = msb_first_bytes(self.acc);
        }
    }

    /// Extends the zero tail past the accumulator, using all the capacity.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.buf.resize(self.acc_at + 8, 0);
        self.buf.resize(self.buf.capacity(), 0);
    }
}

/// Reads bit fields from a borrowed byte slice.
///
/// Reads never fail: bits past the end of the slice read as zero and move the position
/// past the end, which [`Self::overrun`] reports. Callers check it after each decoded
/// item, so a stream that ends early is always detected.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Bit position of the next read, counted from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// True once a read has consumed bits past the end of the slice.
    #[inline]
    pub(crate) fn overrun(&self) -> bool {
        self.pos > self.data.len().saturating_mul(8)
    }

    /// The 64 bits starting at the current position, most significant first, without
    /// consuming them. At least the top 57 are stream bits (or zero past the end); the
    /// low `pos % 8` bits are zero filler.
    #[inline(always)]
    pub(crate) fn peek(&self) -> u64 {
        let byte = self.pos >> 3;
        let shift = self.pos & 7;
        let word = match self.data.get(byte..byte.saturating_add(8)) {
            Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
                msb_first_u64([b0, b1, b2, b3, b4, b5, b6, b7])
            }
            _ => Self::peek_tail(self.data, byte),
        };
        word << shift
    }

    /// [`Self::peek`] within 8 bytes of the end of `data`: the missing bytes read as
    /// zero. Takes the slice rather than `&self`, so that a reader's address is never
    /// taken and its position can live in a register.
    #[inline(never)]
    fn peek_tail(data: &[u8], byte: usize) -> u64 {
        let len = data.len();
        if byte >= len {
            return 0;
        }
        if let Some(last) = data.last_chunk::<8>() {
            // The 8 bytes ending the slice, shifted so that `byte` comes first.
            return msb_first_u64(*last) << (8 * (byte + 8 - len));
        }
        let mut b = [0u8; 8];
        for (dst, src) in b.iter_mut().zip(data.iter().skip(byte)) {
            *dst = *src;
        }
        msb_first_u64(b)
    }

    /// Consumes `n` bits already examined with [`Self::peek`].
    #[inline(always)]
    pub(crate) fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }

    /// Reads `n` bits (`1..=64`) as the low bits of the result.
    #[inline(always)]
    pub(crate) fn read_bits(&mut self, n: u32) -> u64 {
        debug_assert!((1..=64).contains(&n));
        if n <= MAX_SINGLE_READ {
            let v = self.peek() >> (64 - n);
            self.skip(n);
            v
        } else {
            let hi = self.peek() >> 32;
            self.skip(32);
            let lo_n = n - 32;
            let lo = self.peek() >> (64 - lo_n);
            self.skip(lo_n);
            (hi << lo_n) | lo
        }
    }
}

/// The bit-field reads a decoder needs, from [`BitReader`] or [`BitBuffer`].
pub(crate) trait ReadBits {
    /// The next 64 bits without consuming them; at least the top 57 are stream bits
    /// (zero past the end).
    fn peek(&mut self) -> u64;
    /// Consumes `n` bits (at most 57) already examined with [`Self::peek`].
    fn skip(&mut self, n: u32);
    /// Reads `n` bits (`1..=64`) as the low bits of the result.
    fn read_bits(&mut self, n: u32) -> u64;
    /// True once a read has consumed bits past the end of the stream.
    fn overrun(&self) -> bool;
}

impl ReadBits for BitReader<'_> {
    #[inline(always)]
    fn peek(&mut self) -> u64 {
        BitReader::peek(self)
    }

    #[inline(always)]
    fn skip(&mut self, n: u32) {
        BitReader::skip(self, n);
    }

    #[inline(always)]
    fn read_bits(&mut self, n: u32) -> u64 {
        BitReader::read_bits(self, n)
    }

    #[inline(always)]
    fn overrun(&self) -> bool {
        BitReader::overrun(self)
    }
}

/// Reads bit fields from a borrowed byte slice through a 64-bit buffer.
///
/// Same stream and results as [`BitReader`], but fields are shifted out of a register
/// that is refilled 8 bytes at a time, so the position of one field follows from the
/// previous one with a shift rather than a load: faster when each field's width depends
/// on the one before. Bits past the end of the slice read as zero.
#[derive(Debug, Clone)]
pub(crate) struct BitBuffer<'a> {
    data: &'a [u8],
    /// Offset of the first byte not yet loaded into `buf`.
    next: usize,
    /// The next `avail` bits of the stream, most significant first. The bits below are
    /// zero or the stream bits that follow (a refill ORs them in again, unchanged).
    buf: u64,
    /// Number of stream bits at the top of `buf`, `0..=64`.
    avail: u32,
    /// A refill has reached the last 8 bytes: only then can a read overrun.
    tail: bool,
}

impl<'a> BitBuffer<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitBuffer {
            data,
            next: 0,
            buf: 0,
            avail: 0,
            tail: false,
        }
    }

    /// Loads whole bytes into `buf` until at least 57 bits are available.
    #[inline(always)]
    fn refill(&mut self) {
        let word = match self.data.get(self.next..self.next.saturating_add(8)) {
            Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
                msb_first_u64([b0, b1, b2, b3, b4, b5, b6, b7])
            }
            _ => {
                self.tail = true;
                BitReader::peek_tail(self.data, self.next)
            }
        };
        // `avail < 57` here, so the shift is in range and at least one byte fits.
        self.buf |= word >> self.avail;
        let bytes = (64 - self.avail) >> 3;
        self.next += bytes as usize;
        self.avail += bytes << 3;
    }
}

impl ReadBits for BitBuffer<'_> {
    #[inline(always)]
    fn peek(&mut self) -> u64 {
        if self.avail < MAX_SINGLE_READ {
            self.refill();
        }
        self.buf
    }

    #[inline(always)]
    fn skip(&mut self, n: u32) {
        debug_assert!(n <= self.avail && n < 64);
        self.buf <<= n;
        self.avail -= n;
    }

    #[inline(always)]
    fn read_bits(&mut self, n: u32) -> u64 {
        debug_assert!((1..=64).contains(&n));
        if n <= MAX_SINGLE_READ {
            let v = self.peek() >> (64 - n);
            self.skip(n);
            v
        } else {
            let hi = self.peek() >> 32;
            self.skip(32);
            let lo_n = n - 32;
            let lo = self.peek() >> (64 - lo_n);
            self.skip(lo_n);
            (hi << lo_n) | lo
        }
    }

    #[inline(always)]
    fn overrun(&self) -> bool {
        self.tail
            && self.next.saturating_mul(8) - self.avail as usize > self.data.len().saturating_mul(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_every_width_read_back_at_every_alignment() {
        for lead in 0..8u32 {
            for n in 1..=64u32 {
                let value = 0xdead_beef_cafe_f00d_u64 & (u64::MAX >> (64 - n));
                let mut w = BitWriter::with_prefix(&[], 0);
                for _ in 0..lead {
                    w.write_bit(true);
                }
                w.write_bits(value, n);
                w.write_bit(true);
                w.commit();
                assert_eq!(w.bytes().len(), (lead + n + 1).div_ceil(8) as usize);

                let mut r = BitReader::new(w.bytes());
                for _ in 0..lead {
                    assert_eq!(r.read_bits(1), 1);
                }
                assert_eq!(r.read_bits(n), value, "lead {lead} width {n}");
                assert_eq!(r.read_bits(1), 1);
                assert!(!r.overrun());
            }
        }
    }

    #[test]
    fn peek_matches_a_bit_by_bit_reference_at_every_position() {
        let data: Vec<u8> = (0..20u8).map(|i| i.wrapping_mul(73) ^ 0x5a).collect();
        let bit = |d: &[u8], i: usize| d.get(i / 8).map_or(0, |b| u64::from(b >> (7 - i % 8)) & 1);
        for len in 0..data.len() {
            let d = &data[..len];
            for pos in 0..len * 8 + 16 {
                let mut r = BitReader::new(d);
                r.skip(pos as u32);
                let valid = 64 - pos % 8;
                let want = (0..valid).fold(0u64, |acc, i| acc | bit(d, pos + i) << (63 - i));
                assert_eq!(r.peek(), want, "len {len} pos {pos}");
            }
        }
    }

    #[test]
    fn bit_buffer_reads_what_bit_reader_reads() {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(151) ^ 0x3c).collect();
        // Field widths in a repeating pattern, past the end of the data.
        let widths = [1u32, 7, 57, 3, 64, 13, 0, 33, 2, 58, 5];
        for len in [0, 1, 7, 8, 9, 20, 40] {
            let d = &data[..len];
            let mut a = BitReader::new(d);
            let mut b = BitBuffer::new(d);
            for (i, &w) in widths.iter().cycle().take(40).enumerate() {
                if w == 0 {
                    assert_eq!(ReadBits::peek(&mut a) >> 7, ReadBits::peek(&mut b) >> 7);
                    continue;
                }
                assert_eq!(
                    a.read_bits(w),
                    ReadBits::read_bits(&mut b, w),
                    "len {len} field {i}"
                );
                assert_eq!(
                    ReadBits::overrun(&a),
                    ReadBits::overrun(&b),
                    "len {len} field {i}"
                );
            }
        }
    }

    #[test]
    fn unused_low_bits_of_last_byte_are_zero() {
        let mut w = BitWriter::with_prefix(&[0xaa], 0);
        w.write_bits(0b101, 3);
        w.commit();
        assert_eq!(w.bytes(), &[0xaa, 0b1010_0000]);
        w.write_bits(u64::MAX, 6);
        w.commit();
        assert_eq!(w.bytes(), &[0xaa, 0b1011_1111, 0b1000_0000]);
    }

    #[test]
    fn high_bits_above_width_are_ignored() {
        let mut w = BitWriter::with_prefix(&[], 0);
        w.write_bits(u64::MAX, 4);
        w.commit();
        assert_eq!(w.bytes(), &[0xf0]);
    }

    #[test]
    fn reading_past_the_end_yields_zeros_and_reports_overrun() {
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.read_bits(8), 0xff);
        assert!(!r.overrun());
        assert_eq!(r.read_bits(64), 0);
        assert!(r.overrun());
    }

    #[test]
    fn empty_slice_reads_zero_and_overruns() {
        let mut r = BitReader::new(&[]);
        assert!(!r.overrun());
        assert_eq!(r.read_bits(1), 0);
        assert!(r.overrun());
    }
}
