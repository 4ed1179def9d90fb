//! Errors from receiving a remote_write request, and their classification.
//!
//! [`DecodeError::kind`] sorts every error into [`ErrorKind::BadData`] (the sender must not
//! retry the same bytes) or [`ErrorKind::TooLarge`] (the request exceeded a size cap); the
//! HTTP layer maps those kinds to status codes. Messages are lowercase, name the subject
//! first, and quote at most [`SNIPPET_LEN`] bytes of any name or value taken from the input.

/// How much of a name or value from the input an error message quotes.
pub(crate) const SNIPPET_LEN: usize = 64;

/// The class of a [`DecodeError`], for picking a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed or invalid content (HTTP 400).
    BadData,
    /// The body, its decompressed size, or its series count exceeded a cap (HTTP 413).
    TooLarge,
}

/// Why a remote_write body was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The compressed body exceeds [`super::Limits::max_body_bytes`].
    #[error("body of {len} bytes exceeds limit of {limit}")]
    BodyTooLarge { len: usize, limit: usize },
    /// The decompressed size exceeds [`super::Limits::max_decompressed_bytes`].
    #[error("decompressed body of {len} bytes exceeds limit of {limit}")]
    DecompressedTooLarge { len: usize, limit: usize },
    /// The body is not a valid snappy block.
    #[error("snappy: {0}")]
    Snappy(snap::Error),
    /// The protobuf encoding is malformed; `offset` is a byte offset into the
    /// decompressed buffer.
    #[error("protobuf: {problem} at byte {offset}")]
    Protobuf { offset: usize, problem: WireError },
    /// The request holds more series than [`super::Limits::max_series_per_request`].
    #[error("request has more than {limit} series")]
    TooManySeries { limit: usize },
    /// A series is invalid; `index` counts `TimeSeries` messages from 0, in wire order.
    #[error("series {index}: {problem}")]
    Series { index: usize, problem: SeriesError },
}

impl DecodeError {
    /// Whether the request was bad or merely too large.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::BodyTooLarge { .. }
            | DecodeError::DecompressedTooLarge { .. }
            | DecodeError::TooManySeries { .. } => ErrorKind::TooLarge,
            DecodeError::Snappy(_) | DecodeError::Protobuf { .. } | DecodeError::Series { .. } => {
                ErrorKind::BadData
            }
        }
    }
}

/// A malformed protobuf encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("truncated varint")]
    TruncatedVarint,
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("field key {key} out of range")]
    KeyOutOfRange { key: u64 },
    #[error("field number 0")]
    FieldNumberZero,
    #[error("invalid wire type {wire_type} in field {field}")]
    InvalidWireType { field: u32, wire_type: u8 },
    #[error("{message}.{field} has wire type {wire_type}, expected {expected}")]
    UnexpectedWireType {
        message: &'static str,
        field: u32,
        wire_type: u8,
        expected: u8,
    },
    #[error("field of {len} bytes overruns its message ({available} bytes left)")]
    LengthPastEnd { len: u64, available: usize },
    #[error("truncated {width}-byte fixed field")]
    TruncatedFixed { width: u8 },
    #[error("end-group for field {field} without a matching start-group")]
    UnmatchedEndGroup { field: u32 },
    #[error("unterminated group in field {field}")]
    UnterminatedGroup { field: u32 },
    #[error("groups nested deeper than {limit}")]
    GroupsTooDeep { limit: u32 },
}

/// An invalid series. Names and values are quoted lossily and cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesError {
    #[error("empty label name")]
    EmptyLabelName,
    #[error("invalid label name {name:?}")]
    InvalidLabelName { name: String },
    #[error("label names not sorted: {name:?} after {prev:?}")]
    LabelsNotSorted { name: String, prev: String },
    #[error("duplicate label name {name:?}")]
    DuplicateLabelName { name: String },
    #[error("value of label {name:?} is not valid utf-8")]
    LabelValueNotUtf8 { name: String },
    #[error("missing metric name (label __name__)")]
    MissingMetricName,
    #[error("invalid metric name {name:?}")]
    InvalidMetricName { name: String },
    #[error("more than {limit} labels")]
    TooManyLabels { limit: usize },
    #[error("label name {name:?} of {len} bytes exceeds limit of {limit}")]
    LabelNameTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
    #[error("value of label {name:?} of {len} bytes exceeds limit of {limit}")]
    LabelValueTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
}

/// Quotes input bytes for an error message: lossy UTF-8, cut to at most [`SNIPPET_LEN`]
/// bytes on a character boundary, with `…` marking a cut.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    // Lossy decoding never shortens its input, so the first SNIPPET_LEN output bytes come
    // from at most the first SNIPPET_LEN input bytes, plus up to 3 to finish a character.
    let prefix = bytes.get(..SNIPPET_LEN + 4).unwrap_or(bytes);
    let s = String::from_utf8_lossy(prefix);
    if s.len() <= SNIPPET_LEN && prefix.len() == bytes.len() {
        return s.into_owned();
    }
    let mut end = SNIPPET_LEN.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    out.push('…');
    out
}
