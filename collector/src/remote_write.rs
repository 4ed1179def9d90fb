//! Prometheus remote_write 1.0 receiving: decompression, decoding and validation.
//!
//! A request body is a snappy *block* (not framed) compressing a protobuf
//! `WriteRequest { repeated TimeSeries timeseries = 1; }`, with
//! `TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }`,
//! `Label { string name = 1; string value = 2; }` and
//! `Sample { double value = 1; int64 timestamp = 2; }` (milliseconds).
//!
//! The receiving path is [`decompress`] (or [`decompress_into`] to reuse a buffer) and then
//! [`decode`]. Both enforce [`Limits`] before allocating for them. Decoding is all or
//! nothing: every series is validated before [`decode`] returns, so a caller never ingests
//! part of a request that is then answered with an error.
//!
//! # Validation
//!
//! Per series, in wire order:
//! - label names are non-empty, match `[a-zA-Z_][a-zA-Z0-9_]*`, and are strictly increasing
//!   (sorted, no duplicates);
//! - label values are valid UTF-8; a label whose value is empty is *dropped*, as Prometheus
//!   does (an empty value means "label absent"), after its name has been checked;
//! - `__name__` is present with a non-empty value matching `[a-zA-Z_:][a-zA-Z0-9_:]*`;
//! - the label count, name lengths and value lengths are within [`Limits`].
//!
//! A series without samples is validated and then left out of the result. Unknown protobuf
//! fields (metadata, exemplars, histograms, anything newer) are skipped by wire type.
//!
//! # Layout
//!
//! - `error`: [`DecodeError`] and its [`ErrorKind`] classification.
//! - `wire`: the protobuf reader: varints, keys, fixed-width fields, skipping.
//! - `parse`: the message walk that fills a [`WriteRequest`] and validates labels.
//! - `proto`: prost message types and [`encode_snappy`], for senders and tests.

mod error;
mod parse;
pub mod proto;
mod wire;

#[cfg(test)]
mod tests;

use std::ops::Range;

pub use error::{DecodeError, ErrorKind, SeriesError, WireError};
pub use proto::encode_snappy;

/// Size caps applied while receiving one request. Every cap is checked before the memory it
/// protects is allocated.
///
/// Worst case, decoding allocates about 8 bytes per decompressed byte (a 2-byte empty
/// sample on the wire becomes a 16-byte [`tsdb::Sample`]); realistic requests need about 1
/// to 2 bytes per decompressed byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed body accepted. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Largest decompressed protobuf accepted, checked against the length the snappy header
    /// announces. Default 32 MiB, the size VictoriaMetrics accepts by default; Prometheus
    /// sends 2,000 samples per request by default, well under 1 MiB. Values above
    /// `u32::MAX` act as `u32::MAX`.
    pub max_decompressed_bytes: usize,
    /// Most `TimeSeries` messages in one request, counting those without samples.
    /// Default 1,000,000.
    pub max_series_per_request: usize,
    /// Most labels in one series, counted after empty-valued labels are dropped.
    /// Default 64 (VictoriaMetrics allows 40 and Mimir 30 by default).
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes. Default 1024.
    pub max_label_name_len: usize,
    /// Longest label value, in bytes. Default 4096.
    pub max_label_value_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 32 << 20,
            max_series_per_request: 1_000_000,
            max_labels_per_series: 64,
            max_label_name_len: 1024,
            max_label_value_len: 4096,
        }
    }
}

/// Decompresses a snappy block-format body into a new buffer.
///
/// Fails with [`ErrorKind::TooLarge`] when the body exceeds
/// [`Limits::max_body_bytes`] or announces more than [`Limits::max_decompressed_bytes`].
pub fn decompress(body: &[u8], limits: &Limits) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    decompress_into(body, limits, &mut out)?;
    Ok(out)
}

/// Decompresses a snappy block-format body into `out`, replacing its contents and reusing
/// its allocation. On error `out` is left empty.
pub fn decompress_into(body: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let res = decompress_inner(body, limits, out);
    if res.is_err() {
        out.clear();
    }
    res
}

fn decompress_inner(body: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeError::BodyTooLarge {
            len: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    // An empty input is not a snappy block (an empty block is the single byte 0x00), and
    // `decompress_len` would report it as 0 bytes long.
    let len = snap::raw::decompress_len(body).map_err(DecodeError::Snappy)?;
    let limit = decompressed_limit(limits);
    if len > limit {
        return Err(DecodeError::DecompressedTooLarge { len, limit });
    }
    // Only the part beyond the current length is zero-filled; the decoder overwrites all
    // `len` bytes or fails.
    out.resize(len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(DecodeError::Snappy)?;
    out.truncate(written);
    Ok(())
}

/// The effective decompressed-size cap. Capping at `u32::MAX` lets [`SeriesSpan`] hold
/// `u32` indexes: every label and sample takes at least one byte of the buffer.
fn decompressed_limit(limits: &Limits) -> usize {
    limits.max_decompressed_bytes.min(u32::MAX as usize)
}

/// A decoded, validated request in flat vectors: one entry in `series` per series that has
/// samples, pointing into the shared `labels` and `samples` vectors. Label names and values
/// borrow from the decompressed buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteRequest<'a> {
    /// The labels of every kept series, each series' labels sorted by name, empty-valued
    /// labels dropped.
    pub labels: Vec<(&'a str, &'a str)>,
    /// The samples of every kept series, in wire order.
    pub samples: Vec<tsdb::Sample>,
    /// One span per series with at least one sample, in wire order.
    pub series: Vec<SeriesSpan>,
}

/// Where one series' labels and samples are in a [`WriteRequest`]'s flat vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSpan {
    /// Indexes into [`WriteRequest::labels`].
    pub labels: Range<u32>,
    /// Indexes into [`WriteRequest::samples`].
    pub samples: Range<u32>,
}

impl<'a> WriteRequest<'a> {
    /// The series in wire order: sorted labels and samples of each.
    ///
    /// A span that does not fit the vectors (possible only if the public fields were
    /// edited by hand) yields empty slices rather than panicking.
    pub fn iter(&self) -> impl Iterator<Item = (&[(&'a str, &'a str)], &[tsdb::Sample])> {
        self.series.iter().map(|s| {
            let labels = self
                .labels
                .get(s.labels.start as usize..s.labels.end as usize)
                .unwrap_or_default();
            let samples = self
                .samples
                .get(s.samples.start as usize..s.samples.end as usize)
                .unwrap_or_default();
            (labels, samples)
        })
    }

    /// Total samples across all series.
    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// Number of series with at least one sample.
    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    /// True when no series has samples.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Empties the request, keeping its allocations.
    pub fn clear(&mut self) {
        self.labels.clear();
        self.samples.clear();
        self.series.clear();
    }

    /// Empties the request and rebinds it to another buffer's lifetime, keeping its
    /// allocations, so one request value can serve a loop over many bodies.
    pub fn recycle<'b>(self) -> WriteRequest<'b> {
        let WriteRequest {
            mut labels,
            mut samples,
            mut series,
        } = self;
        samples.clear();
        series.clear();
        labels.clear();
        // Collecting an empty vector into one of the same size and alignment reuses its
        // allocation; only the borrowed lifetime changes.
        let labels = labels
            .into_iter()
            .map(|(_, _)| -> (&'b str, &'b str) { ("", "") })
            .collect();
        WriteRequest {
            labels,
            samples,
            series,
        }
    }
}

/// Decodes and validates a decompressed remote_write protobuf.
///
/// Fails on the first malformed field or invalid series; nothing is returned for a request
/// that fails, so a caller cannot ingest part of it.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Result<WriteRequest<'a>, DecodeError> {
    let mut req = WriteRequest::default();
    decode_into(buf, limits, &mut req)?;
    Ok(req)
}

/// Like [`decode`], but fills `req`, replacing its contents and reusing its allocations. On
/// error `req` is left empty.
pub fn decode_into<'a>(
    buf: &'a [u8],
    limits: &Limits,
    req: &mut WriteRequest<'a>,
) -> Result<(), DecodeError> {
    req.clear();
    let limit = decompressed_limit(limits);
    if buf.len() > limit {
        return Err(DecodeError::DecompressedTooLarge {
            len: buf.len(),
            limit,
        });
    }
    let res = parse::write_request(buf, limits, req);
    if res.is_err() {
        req.clear();
    }
    res
}
