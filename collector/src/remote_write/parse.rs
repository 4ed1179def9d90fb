//! The remote_write message walk: fills a [`WriteRequest`] and validates every label.
//!
//! This decoder is written by hand rather than with prost's generated `Message::decode`
//! because prost allocates a `String` per label name and value and a `Vec` per series,
//! which dominates the cost of ingest. Here names and values are `&str` borrowed from the
//! decompressed buffer, and all series share three flat vectors, so a request costs a few
//! amortised allocations however many series it holds. Validation runs in the same pass,
//! while each label is hot in cache. The prost types in `proto` remain the reference: the
//! tests check this decoder against them.

use tsdb::Sample;

use super::error::{DecodeError, SeriesError, snippet};
use super::wire::{Cursor, I64, LEN, VARINT, varint_at};
use super::{Limits, SeriesSpan, WriteRequest};

/// The label that holds the metric name.
const METRIC_NAME: [u8; 8] = *b"__name__";
const _: () = assert!(tsdb::labels::METRIC_NAME.len() == METRIC_NAME.len());

/// Decodes a whole `WriteRequest` message into `req` (which the caller has cleared).
pub(super) fn write_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
    req: &mut WriteRequest<'a>,
) -> Result<(), DecodeError> {
    // Sized for typical requests (about 30 bytes of protobuf per sample, 60 per label,
    // 300 per series), so a fresh request is not regrown a dozen times. Reserving only
    // claims address space; pages are touched as entries are written.
    req.samples.reserve(buf.len() / 24);
    req.labels.reserve(buf.len() / 48);
    req.series.reserve(buf.len() / 256);
    let mut cur = Cursor::new(buf);
    let mut index = 0usize;
    while cur.has_more() {
        let (field, wire_type) = cur.key()?;
        match (field, wire_type) {
            (1, LEN) => {
                if index >= limits.max_series_per_request {
                    return Err(DecodeError::TooManySeries {
                        limit: limits.max_series_per_request,
                    });
                }
                let series = cur.message()?;
                time_series(series, index, limits, req)?;
                index += 1;
            }
            (1, _) => return Err(cur.wrong_wire_type("WriteRequest", 1, wire_type, LEN)),
            // 3 is metadata; anything else is unknown to remote_write 1.0.
            _ => cur.skip(field, wire_type)?,
        }
    }
    Ok(())
}

/// Decodes one `TimeSeries`, appending its labels and samples to `req`, and validates its
/// labels. A series without samples is validated and then removed again.
fn time_series<'a>(
    mut cur: Cursor<'a>,
    index: usize,
    limits: &Limits,
    req: &mut WriteRequest<'a>,
) -> Result<(), DecodeError> {
    let bad = |problem| DecodeError::Series { index, problem };
    let labels_start = req.labels.len();
    let samples_start = req.samples.len();
    // The previous label name in wire order, kept or dropped. Valid names are non-empty, so
    // the empty string sorts before any of them.
    let mut prev: &[u8] = b"";
    let mut has_metric_name = false;

    while cur.has_more() {
        let (field, wire_type) = cur.key()?;
        match (field, wire_type) {
            (1, LEN) => {
                let payload = cur.bytes()?;
                let raw = match canonical_label(payload) {
                    Some((name, value)) => RawLabel {
                        name,
                        value,
                        overwritten_name_not_utf8: false,
                        overwritten_value_not_utf8: false,
                    },
                    None => label(cur.nested(payload))?,
                };
                let name = raw.name;
                if name.is_empty() {
                    return Err(bad(SeriesError::EmptyLabelName));
                }
                if name.len() > limits.max_label_name_len {
                    return Err(bad(SeriesError::LabelNameTooLong {
                        name: snippet(name),
                        len: name.len(),
                        limit: limits.max_label_name_len,
                    }));
                }
                if raw.overwritten_name_not_utf8 || !is_label_name(name) {
                    return Err(bad(SeriesError::InvalidLabelName {
                        name: snippet(name),
                    }));
                }
                match compare(name, prev) {
                    std::cmp::Ordering::Greater => {}
                    std::cmp::Ordering::Equal => {
                        return Err(bad(SeriesError::DuplicateLabelName {
                            name: snippet(name),
                        }));
                    }
                    std::cmp::Ordering::Less => {
                        return Err(bad(SeriesError::LabelsNotSorted {
                            name: snippet(name),
                            prev: snippet(prev),
                        }));
                    }
                }
                prev = name;

                let value = raw.value;
                if value.len() > limits.max_label_value_len {
                    return Err(bad(SeriesError::LabelValueTooLong {
                        name: snippet(name),
                        len: value.len(),
                        limit: limits.max_label_value_len,
                    }));
                }
                if raw.overwritten_value_not_utf8 {
                    return Err(bad(SeriesError::LabelValueNotUtf8 {
                        name: snippet(name),
                    }));
                }
                if value.is_empty() {
                    // An empty value means the label is absent.
                    continue;
                }
                if <[u8; 8]>::try_from(name).is_ok_and(|n| n == METRIC_NAME) {
                    if !is_metric_name(value) {
                        return Err(bad(SeriesError::InvalidMetricName {
                            name: snippet(value),
                        }));
                    }
                    has_metric_name = true;
                }
                let Some(value) = utf8(value) else {
                    return Err(bad(SeriesError::LabelValueNotUtf8 {
                        name: snippet(name),
                    }));
                };
                // `is_label_name` admits ASCII only, so this cannot fail.
                let Some(name) = ascii(name) else {
                    return Err(bad(SeriesError::InvalidLabelName {
                        name: snippet(name),
                    }));
                };
                if req.labels.len() - labels_start >= limits.max_labels_per_series {
                    return Err(bad(SeriesError::TooManyLabels {
                        limit: limits.max_labels_per_series,
                    }));
                }
                req.labels.push((name, value));
            }
            (2, LEN) => {
                let payload = cur.bytes()?;
                let s = match canonical_sample(payload) {
                    Some(s) => s,
                    None => sample(cur.nested(payload))?,
                };
                req.samples.push(s);
            }
            (1 | 2, _) => return Err(cur.wrong_wire_type("TimeSeries", field, wire_type, LEN)),
            // 3 is exemplars, 4 native histograms: not ingested through remote_write 1.0.
            _ => cur.skip(field, wire_type)?,
        }
    }

    if !has_metric_name {
        return Err(bad(SeriesError::MissingMetricName));
    }
    if req.samples.len() == samples_start {
        req.labels.truncate(labels_start);
        return Ok(());
    }
    req.series.push(SeriesSpan {
        labels: index_u32(labels_start)?..index_u32(req.labels.len())?,
        samples: index_u32(samples_start)?..index_u32(req.samples.len())?,
    });
    Ok(())
}

/// A vector index as stored in a [`SeriesSpan`]. The decompressed buffer is capped at
/// `u32::MAX` bytes and every label and sample takes at least two of them, so this only
/// fails if that cap is broken.
fn index_u32(i: usize) -> Result<u32, DecodeError> {
    u32::try_from(i).map_err(|_| DecodeError::DecompressedTooLarge {
        len: i,
        limit: u32::MAX as usize,
    })
}

/// Orders label names byte-wise. Names are short and usually differ in their first bytes,
/// where an inlined loop beats a call to `memcmp`.
#[inline]
fn compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// `bytes` as a string if they are ASCII, checked inline.
#[inline]
fn ascii(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        None
    }
}

/// `bytes` as a string if they are UTF-8; label values are nearly always ASCII, which is
/// checked inline before the general validation.
#[inline]
fn utf8(bytes: &[u8]) -> Option<&str> {
    ascii(bytes).or_else(|| std::str::from_utf8(bytes).ok())
}

/// The fields of a `Label` in the layout every encoder writes: name then value, each
/// shorter than 128 bytes, nothing else. `None` sends the label to the general path.
#[inline]
fn canonical_label(d: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&[k1, n1], rest) = d.split_first_chunk::<2>()?;
    if k1 != 0x0a || n1 >= 0x80 {
        return None;
    }
    let (name, rest) = rest.split_at_checked(usize::from(n1))?;
    let (&[k2, n2], value) = rest.split_first_chunk::<2>()?;
    if k2 != 0x12 || n2 >= 0x80 || usize::from(n2) != value.len() {
        return None;
    }
    Some((name, value))
}

/// The fields of a `Sample` in the layout every encoder writes: the value, then the
/// timestamp, nothing else. `None` sends the sample to the general path.
#[inline]
fn canonical_sample(d: &[u8]) -> Option<Sample> {
    let (head, rest) = d.split_first_chunk::<10>()?;
    let [k1, v @ .., k2] = *head;
    if k1 != 0x09 || k2 != 0x10 {
        return None;
    }
    let t = match rest.len() {
        // The timestamp ends the message: read it as the last 8 bytes, shifted.
        n @ 1..=8 => varint_tail(u64::from_le_bytes(*d.last_chunk::<8>()?), n)?,
        n => match varint_at(rest) {
            Ok((t, len)) if len == n => t,
            _ => return None,
        },
    };
    Some(Sample {
        // int64 is two's complement in a varint.
        t: t as i64,
        v: f64::from_bits(u64::from_le_bytes(v)),
    })
}

/// Decodes a varint of exactly `n` bytes (1 to 8) held in the top bytes of `word`
/// (little-endian), without a loop: every byte but the last must have its continuation
/// bit set, and the 7-bit groups are then packed together by halving steps.
#[inline]
pub(super) fn varint_tail(word: u64, n: usize) -> Option<u64> {
    let x = word >> (8 * (8 - n));
    let continuation = 0x8080_8080_8080_8080u64 & ((1u64 << (8 * (n - 1))) - 1);
    if x & 0x8080_8080_8080_8080 != continuation {
        return None;
    }
    let x = x & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    Some((x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4))
}

/// A `Label` message as found on the wire, before validation.
struct RawLabel<'a> {
    name: &'a [u8],
    value: &'a [u8],
    /// A repeated `name` field replaced an earlier one that was not UTF-8. Protobuf keeps
    /// the last occurrence, but prost rejects the whole message; so does this decoder.
    overwritten_name_not_utf8: bool,
    /// The same for `value`.
    overwritten_value_not_utf8: bool,
}

fn label(mut cur: Cursor<'_>) -> Result<RawLabel<'_>, DecodeError> {
    let mut raw = RawLabel {
        name: b"",
        value: b"",
        overwritten_name_not_utf8: false,
        overwritten_value_not_utf8: false,
    };
    let mut seen_name = false;
    let mut seen_value = false;
    while cur.has_more() {
        let (field, wire_type) = cur.key()?;
        match (field, wire_type) {
            (1, LEN) => {
                if seen_name && std::str::from_utf8(raw.name).is_err() {
                    raw.overwritten_name_not_utf8 = true;
                }
                raw.name = cur.bytes()?;
                seen_name = true;
            }
            (2, LEN) => {
                if seen_value && std::str::from_utf8(raw.value).is_err() {
                    raw.overwritten_value_not_utf8 = true;
                }
                raw.value = cur.bytes()?;
                seen_value = true;
            }
            (1 | 2, _) => return Err(cur.wrong_wire_type("Label", field, wire_type, LEN)),
            _ => cur.skip(field, wire_type)?,
        }
    }
    Ok(raw)
}

fn sample(mut cur: Cursor<'_>) -> Result<Sample, DecodeError> {
    let mut s = Sample { t: 0, v: 0.0 };
    while cur.has_more() {
        let (field, wire_type) = cur.key()?;
        match (field, wire_type) {
            (1, I64) => s.v = f64::from_bits(cur.fixed64()?),
            // int64 is two's complement in a varint.
            (2, VARINT) => s.t = cur.varint()? as i64,
            (1, _) => return Err(cur.wrong_wire_type("Sample", 1, wire_type, I64)),
            (2, _) => return Err(cur.wrong_wire_type("Sample", 2, wire_type, VARINT)),
            _ => cur.skip(field, wire_type)?,
        }
    }
    Ok(s)
}

/// Character classes for the name grammars, one bit each.
const LABEL_START: u8 = 1;
const LABEL_REST: u8 = 2;
const METRIC_START: u8 = 4;
const METRIC_REST: u8 = 8;

static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() || c == b'_' {
            LABEL_START | LABEL_REST | METRIC_START | METRIC_REST
        } else if c.is_ascii_digit() {
            LABEL_REST | METRIC_REST
        } else if c == b':' {
            METRIC_START | METRIC_REST
        } else {
            0
        };
        i += 1;
    }
    t
}

fn matches(s: &[u8], start: u8, rest: u8) -> bool {
    match s.split_first() {
        Some((&first, tail)) => {
            CLASSES[first as usize] & start != 0
                && tail.iter().all(|&b| CLASSES[b as usize] & rest != 0)
        }
        None => false,
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_label_name(s: &[u8]) -> bool {
    matches(s, LABEL_START, LABEL_REST)
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(s: &[u8]) -> bool {
    matches(s, METRIC_START, METRIC_REST)
}
