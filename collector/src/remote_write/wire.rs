//! A protobuf wire-format reader over a borrowed buffer.
//!
//! A [`Cursor`] walks the fields of one message: `data` is exactly that message's bytes and
//! `base` is where they start in the whole buffer, so every error carries an absolute byte
//! offset. A length-delimited field yields a sub-slice or a nested cursor; nothing is
//! copied. Every read is bounds-checked against the message, never the buffer, so a nested
//! field cannot run into its parent's bytes.

use super::error::{DecodeError, WireError};

/// Wire type of varint fields (`int64`, `bool`, ...).
pub(super) const VARINT: u8 = 0;
/// Wire type of 8-byte fields (`double`, `fixed64`).
pub(super) const I64: u8 = 1;
/// Wire type of length-delimited fields (`string`, `bytes`, messages).
pub(super) const LEN: u8 = 2;
/// Wire type that opens a (deprecated) group.
const SGROUP: u8 = 3;
/// Wire type that closes a group.
const EGROUP: u8 = 4;
/// Wire type of 4-byte fields (`float`, `fixed32`).
const I32: u8 = 5;

/// Deepest nesting of groups inside an unknown field that [`Cursor::skip`] follows. Kept
/// well under prost's recursion limit of 100, so anything skipped here prost can skip too.
pub(super) const MAX_GROUP_DEPTH: u32 = 32;

/// Reads the fields of one message.
pub(super) struct Cursor<'a> {
    /// The message's bytes, and nothing after them.
    data: &'a [u8],
    /// Next byte to read; never past `data.len()`.
    pos: usize,
    /// Offset of `data[0]` in the whole buffer, for error messages.
    base: usize,
    /// Where the last key read starts, for wire-type errors.
    key_at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over a whole buffer.
    pub(super) fn new(data: &'a [u8]) -> Self {
        Cursor {
            data,
            pos: 0,
            base: 0,
            key_at: 0,
        }
    }

    /// True while fields remain.
    #[inline]
    pub(super) fn has_more(&self) -> bool {
        self.pos < self.data.len()
    }

    fn fail(&self, at: usize, problem: WireError) -> DecodeError {
        DecodeError::Protobuf {
            offset: self.base + at,
            problem,
        }
    }

    /// Reads a base-128 varint of at most 10 bytes.
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, DecodeError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        match rest.first() {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => match varint_at(rest) {
                Ok((value, n)) => {
                    self.pos += n;
                    Ok(value)
                }
                Err(problem) => Err(self.fail(self.pos, problem)),
            },
        }
    }

    /// Reads a field key: the field number and the wire type.
    #[inline]
    pub(super) fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        self.key_at = self.pos;
        let key = self.varint()?;
        let Ok(key32) = u32::try_from(key) else {
            return Err(self.fail(self.key_at, WireError::KeyOutOfRange { key }));
        };
        let field = key32 >> 3;
        let wire_type = (key32 & 7) as u8;
        if field == 0 {
            return Err(self.fail(self.key_at, WireError::FieldNumberZero));
        }
        if wire_type > I32 {
            return Err(self.fail(self.key_at, WireError::InvalidWireType { field, wire_type }));
        }
        Ok((field, wire_type))
    }

    /// The error for a known field that arrived with the wrong wire type; points at the
    /// field's key.
    #[cold]
    pub(super) fn wrong_wire_type(
        &self,
        message: &'static str,
        field: u32,
        wire_type: u8,
        expected: u8,
    ) -> DecodeError {
        self.fail(
            self.key_at,
            WireError::UnexpectedWireType {
                message,
                field,
                wire_type,
                expected,
            },
        )
    }

    /// Reads the payload of a length-delimited field.
    #[inline]
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.varint()?;
        let available = self.data.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= available => {
                let start = self.pos;
                self.pos += n;
                Ok(&self.data[start..self.pos])
            }
            _ => Err(self.fail(at, WireError::LengthPastEnd { len, available })),
        }
    }

    /// Reads a length-delimited field as a nested message.
    #[inline]
    pub(super) fn message(&mut self) -> Result<Cursor<'a>, DecodeError> {
        let data = self.bytes()?;
        Ok(self.nested(data))
    }

    /// A cursor over `data`, which must be the payload [`Cursor::bytes`] just returned.
    #[inline]
    pub(super) fn nested(&self, data: &'a [u8]) -> Cursor<'a> {
        Cursor {
            data,
            pos: 0,
            base: self.base + self.pos - data.len(),
            key_at: 0,
        }
    }

    /// Reads an 8-byte little-endian field.
    #[inline]
    pub(super) fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.fixed::<8>()?;
        Ok(u64::from_le_bytes(bytes))
    }

    #[inline]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        match self
            .data
            .get(self.pos..self.pos + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
        {
            Some(bytes) => {
                self.pos += N;
                Ok(bytes)
            }
            None => Err(self.fail(self.pos, WireError::TruncatedFixed { width: N as u8 })),
        }
    }

    /// Skips the value of a field whose key was just read.
    pub(super) fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), DecodeError> {
        self.skip_nested(field, wire_type, 0)
    }

    fn skip_nested(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), DecodeError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.fixed::<8>().map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.fixed::<4>().map(drop),
            SGROUP => {
                let open_at = self.key_at;
                if depth >= MAX_GROUP_DEPTH {
                    return Err(self.fail(
                        open_at,
                        WireError::GroupsTooDeep {
                            limit: MAX_GROUP_DEPTH,
                        },
                    ));
                }
                loop {
                    if !self.has_more() {
                        return Err(self.fail(open_at, WireError::UnterminatedGroup { field }));
                    }
                    let (inner, inner_type) = self.key()?;
                    if inner_type == EGROUP {
                        if inner == field {
                            return Ok(());
                        }
                        return Err(
                            self.fail(self.key_at, WireError::UnmatchedEndGroup { field: inner })
                        );
                    }
                    self.skip_nested(inner, inner_type, depth + 1)?;
                }
            }
            // EGROUP outside a group; `key` rejects wire types above I32.
            _ => Err(self.fail(self.key_at, WireError::UnmatchedEndGroup { field })),
        }
    }
}

/// Decodes the varint at the start of `bytes`: its value and length.
#[inline]
pub(super) fn varint_at(bytes: &[u8]) -> Result<(u64, usize), WireError> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The 10th byte carries bit 63 only.
            if i == 9 && b > 1 {
                return Err(WireError::VarintOverflow);
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() >= 10 {
        Err(WireError::VarintOverflow)
    } else {
        Err(WireError::TruncatedVarint)
    }
}
