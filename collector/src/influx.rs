//! InfluxDB line protocol receiving (`POST /write`, `POST /api/v2/write`) and its mapping
//! to Prometheus-style series, following VictoriaMetrics' defaults.
//!
//! # Input
//!
//! The body is UTF-8 text (the caller rejects other bodies), one point per line:
//!
//! ```text
//! <measurement>[,<tag_key>=<tag_value>...] <field_key>=<field_value>[,<field_key>=<field_value>...] [<timestamp>]
//! ```
//!
//! - Lines end with `\n`; a `\r` before it is ignored. Empty lines, lines of only spaces
//!   or tabs, and lines whose first byte is `#` (comments) are skipped.
//! - The sections are separated by one or more spaces; spaces after the fields or the
//!   timestamp are ignored.
//! - Escapes in the measurement, tag keys, tag values and field keys: a backslash before a
//!   space, `,`, `=` or `\` stands for that character; a backslash before anything else is
//!   kept as it is. An unescaped space or `,` ends the measurement; an unescaped `=` ends a
//!   tag or field key; an unescaped space or `,` ends a tag value.
//! - The measurement may be empty (the line starts with `,` or a space).
//! - Tags with an empty value (`host=`) are dropped: in Prometheus an empty value means
//!   "no such label". A tag with an empty key is an error.
//! - Field values:
//!   - floats as Rust reads them (`1`, `-1.5`, `1e3`, `.5`, `inf`, `NaN`);
//!   - integers `123i` (64-bit signed) and unsigned integers `123u` (64-bit), converted to
//!     floats (exact up to 2^53);
//!   - booleans `t`, `T`, `true`, `True`, `TRUE` (1) and `f`, `F`, `false`, `False`,
//!     `FALSE` (0);
//!   - strings in double quotes, where `\"` is a quote and `\\` a backslash. A string that
//!     reads as a float (`"12.5"`) gives that number, as some agents send numbers as
//!     strings; any other string field is *skipped*: it makes no sample and no error.
//!
//!   Anything else (`abc`, `12.5i`, an empty value) makes the line invalid.
//! - The timestamp is an integer in the unit given by [`Precision`]; without one, the
//!   sample gets the caller's "now" (rounded down to the unit for `s`, `m` and `h`).
//!   Timestamps are converted to milliseconds, rounding down; one that does not fit in 64
//!   bits, before or after conversion, makes the line invalid.
//!
//! # Mapping
//!
//! Each line becomes one [`Row`]: a label set shared by one sample per numeric field.
//!
//! - The metric name (`__name__`) of a field's sample is `{measurement}_{field_key}`, or
//!   `{field_key}` alone when the measurement is empty. A field named `value` is not
//!   special (`cpu value=1` is `cpu_value`).
//! - Each tag becomes a label of the same name.
//! - A non-empty `db` (the query parameter of `/write`) becomes a `db` label unless the
//!   line has a `db` tag.
//! - `extra_labels` (e.g. from `extra_label` query parameters) are applied last and replace
//!   a tag or `db` label of the same name; one with an empty value removes that label.
//! - Names are made Prometheus-compatible, because Minos ingests only names of that
//!   grammar (the same rule [`crate::remote_write`] enforces): in metric names every
//!   character outside `[a-zA-Z0-9_:]`, and in label names every character outside
//!   `[a-zA-Z0-9_]`, becomes `_`, and a name starting with a digit gets a leading `_`
//!   (`disk.io-time` → `disk_io_time`, `1m` → `_1m`). Label values are kept as they are.
//! - A line is invalid if two of its tags or two of its fields have the same key, or
//!   become the same name once made compatible (`a-b` and `a.b`), or if a tag is named
//!   `__name__`.
//!
//! A line is taken whole or not at all: an invalid line yields no sample and a
//! [`LineError`] naming its number and what is wrong; the other lines are still parsed.
//! A line longer than [`MAX_LINE_BYTES`] is invalid without being parsed.
//!
//! # Use
//!
//! [`parse`] fills a `Vec<Row>`: one label set per line, not per sample, so memory stays
//! proportional to the body however many fields share a tag set. [`write_request`] then
//! lays the rows out as a [`WriteRequest`], one series per sample, for
//! `tsdb::Db::append(req.iter())`, as with remote_write.
//!
//! # Differences from VictoriaMetrics
//!
//! The rules above are VictoriaMetrics' (checked against its documentation and its
//! parser and insert handler) with its flags at their defaults:
//! `-influxMeasurementFieldSeparator=_`, `-influxSkipSingleField=false`,
//! `-influxSkipMeasurement=false`, `-influxDBLabel=db`, `-influxTrimTimestamp=1ms`, and
//! [`Precision::Auto`] when no `precision` is given. Minos differs where
//! VictoriaMetrics silently stores something surprising:
//! - VictoriaMetrics stores a non-numeric field value as 0 (strings and unparsable
//!   unquoted values alike); Minos skips string fields and rejects unparsable values.
//! - VictoriaMetrics keeps names as sent unless `-usePromCompatibleNaming` is set; Minos
//!   always makes them compatible, as described above.
//! - VictoriaMetrics skips tags with an empty key and accepts repeated tag or field keys;
//!   Minos rejects such lines, and lines with a `__name__` tag.
//! - VictoriaMetrics reads a timestamp of 0 as "now"; Minos reads it as the epoch.
//!   VictoriaMetrics truncates toward zero when converting; Minos rounds down (the two
//!   differ only before 1970).
//! - VictoriaMetrics treats an unknown `precision` as absent; [`Precision::parse`] returns
//!   `None` for it, so the caller can answer 400.

use std::borrow::Cow;
use std::fmt;
use std::num::IntErrorKind;

use crate::remote_write::{SeriesSpan, WriteRequest};

/// The longest line accepted, in bytes, not counting its `\n`.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// At most this many [`LineError`]s are kept in a [`LineErrors`]; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The label name holding the metric name.
const METRIC_NAME: &str = "__name__";

/// The label the `db` query parameter becomes.
const DB_LABEL: &str = "db";

/// The longest excerpt of the input quoted in an error message, in characters.
const MAX_QUOTED_CHARS: usize = 64;

/// The unit of the timestamps in a body (the `precision` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Guess the unit of each timestamp from its magnitude, as VictoriaMetrics (and
    /// InfluxDB 3) do when no precision is given: from 10^17 nanoseconds, from 10^14
    /// microseconds, from 10^11 milliseconds, below that (negatives included) seconds.
    /// Nanosecond timestamps before March 1973 are therefore misread; a sender that needs
    /// them must say `precision=ns`.
    #[default]
    Auto,
    /// Nanoseconds (`ns` or `n`), InfluxDB's default.
    Ns,
    /// Microseconds (`us`, `u`, `µ` or `μ`).
    Us,
    /// Milliseconds (`ms`).
    Ms,
    /// Seconds (`s`).
    S,
    /// Minutes (`m`; InfluxDB 1.x only).
    M,
    /// Hours (`h`; InfluxDB 1.x only).
    H,
}

impl Precision {
    /// Reads a `precision` query parameter: `ns`/`n`, `us`/`u`/`µ`/`μ`, `ms`, `s`, `m`,
    /// `h`, or the empty string for [`Precision::Auto`] (a request without the parameter
    /// should use `Auto` too). Anything else is `None`.
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "" => Precision::Auto,
            "ns" | "n" => Precision::Ns,
            "us" | "u" | "\u{b5}" | "\u{3bc}" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            "m" => Precision::M,
            "h" => Precision::H,
            _ => return None,
        })
    }

    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
            Precision::M => "m",
            Precision::H => "h",
        }
    }

    /// `ts` in milliseconds, rounded down; `None` if that overflows.
    fn to_ms(self, ts: i64) -> Option<i64> {
        match self {
            Precision::Auto => match ts {
                100_000_000_000_000_000.. => Some(ts.div_euclid(1_000_000)),
                100_000_000_000_000.. => Some(ts.div_euclid(1_000)),
                100_000_000_000.. => Some(ts),
                _ => ts.checked_mul(1_000),
            },
            Precision::Ns => Some(ts.div_euclid(1_000_000)),
            Precision::Us => Some(ts.div_euclid(1_000)),
            Precision::Ms => Some(ts),
            Precision::S => ts.checked_mul(1_000),
            Precision::M => ts.checked_mul(60_000),
            Precision::H => ts.checked_mul(3_600_000),
        }
    }

    /// The timestamp given to lines without one: `now_ms`, rounded down to whole units
    /// for the units coarser than a millisecond.
    fn default_timestamp(self, now_ms: i64) -> i64 {
        let unit = match self {
            Precision::S => 1_000,
            Precision::M => 60_000,
            Precision::H => 3_600_000,
            _ => 1,
        };
        now_ms - now_ms.rem_euclid(unit)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted line: its labels and one sample per numeric field, all at one timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The line's number in the body, from 1.
    pub line: usize,
    /// Tags, `db` and extra labels, sorted by name, names unique and non-empty, values
    /// non-empty. `__name__` is not among them: each sample has its own (see
    /// [`Row::series_labels`]).
    pub labels: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// `(metric name, value)` per numeric field, in line order; the names are unique.
    /// Never empty.
    pub samples: Vec<(String, f64)>,
}

impl Row {
    /// Replaces the contents of `out` with the full label set of sample `i`: the row's
    /// labels with `__name__` in its sorted place. Leaves `out` empty if there is no
    /// sample `i`.
    pub fn series_labels<'a>(&'a self, i: usize, out: &mut Vec<(&'a str, &'a str)>) {
        out.clear();
        let Some((name, _)) = self.samples.get(i) else {
            return;
        };
        push_series_labels(&self.labels, name, out);
    }
}

/// Appends `labels` with `("__name__", name)` inserted in sorted place.
fn push_series_labels<'a>(
    labels: &'a [(String, String)],
    name: &'a str,
    out: &mut Vec<(&'a str, &'a str)>,
) {
    let at = labels.partition_point(|(n, _)| n.as_str() < METRIC_NAME);
    let (before, after) = labels.split_at(at);
    out.extend(before.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    out.push((METRIC_NAME, name));
    out.extend(after.iter().map(|(n, v)| (n.as_str(), v.as_str())));
}

/// Why one line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line's number in the body, from 1.
    pub line: usize,
    /// What is wrong, for the sender.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

/// The rejected lines of one [`parse`]: the first [`MAX_REPORTED_ERRORS`] in body order,
/// and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineErrors {
    /// The first rejected lines, at most [`MAX_REPORTED_ERRORS`].
    pub errors: Vec<LineError>,
    /// How many lines were rejected, including those not in `errors`.
    pub invalid_lines: usize,
}

impl LineErrors {
    /// True when every line was accepted (or skipped as empty or a comment).
    pub fn is_empty(&self) -> bool {
        self.invalid_lines == 0
    }

    fn push(&mut self, line: usize, message: String) {
        self.invalid_lines += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError { line, message });
        }
    }
}

impl fmt::Display for LineErrors {
    /// `2 invalid lines: line 4: ...; line 9: ...`, with at most 10 lines spelled out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        let plural = if self.invalid_lines == 1 { "" } else { "s" };
        write!(f, "{} invalid line{plural}", self.invalid_lines)?;
        for (i, e) in self.errors.iter().take(SHOWN).enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{e}")?;
        }
        let shown = self.errors.len().min(SHOWN);
        if self.invalid_lines > shown {
            write!(f, "; and {} more", self.invalid_lines - shown)?;
        }
        Ok(())
    }
}

/// Parses an InfluxDB line protocol body, appending one [`Row`] per line that has at
/// least one numeric field to `out`, and returns the lines it rejected. See the module
/// documentation for the rules.
///
/// - `precision`: the unit of the timestamps in the body.
/// - `now_ms`: the timestamp, in milliseconds, of lines without one.
/// - `db`: the `db` query parameter, if any.
/// - `extra_labels`: labels added to every series, replacing tags of the same name. The
///   caller validates their names; entries with an empty name or named `__name__` are
///   ignored.
pub fn parse(
    body: &str,
    precision: Precision,
    now_ms: i64,
    db: Option<&str>,
    extra_labels: &[(String, String)],
    out: &mut Vec<Row>,
) -> LineErrors {
    let ctx = Context {
        precision,
        default_timestamp: precision.default_timestamp(now_ms),
        db: db.filter(|d| !d.is_empty()),
        extra_labels,
    };
    let mut errors = LineErrors::default();
    for (i, raw) in body.split('\n').enumerate() {
        let line_no = i + 1;
        if raw.len() > MAX_LINE_BYTES {
            errors.push(
                line_no,
                format!(
                    "line is {} bytes long; the limit is {MAX_LINE_BYTES} bytes (1 MiB)",
                    raw.len()
                ),
            );
            continue;
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with('#') || line.bytes().all(|b| b == b' ' || b == b'\t') {
            continue;
        }
        match parse_line(line, &ctx) {
            Ok(Some((labels, timestamp_ms, samples))) => out.push(Row {
                line: line_no,
                labels,
                timestamp_ms,
                samples,
            }),
            Ok(None) => {}
            Err(message) => errors.push(line_no, message),
        }
    }
    errors
}

/// Appends the samples of `rows` to `out` as series, one per sample, ready for
/// `tsdb::Db::append(out.iter())`. Each series' labels are its row's with `__name__` in
/// sorted place.
///
/// This holds one `(&str, &str)` per label per sample, so a caller short of memory can
/// convert and append a slice of rows at a time.
///
/// Fails, leaving the rows that fit in `out`, only if `out` would need more than
/// `u32::MAX` labels or samples.
pub fn write_request<'a>(rows: &'a [Row], out: &mut WriteRequest<'a>) -> Result<(), BatchTooLarge> {
    for row in rows {
        for (name, value) in &row.samples {
            let label_start = u32::try_from(out.labels.len()).map_err(|_| BatchTooLarge)?;
            let label_end = u32::try_from(out.labels.len() + row.labels.len() + 1)
                .map_err(|_| BatchTooLarge)?;
            let sample = u32::try_from(out.samples.len()).map_err(|_| BatchTooLarge)?;
            let sample_end = sample.checked_add(1).ok_or(BatchTooLarge)?;
            push_series_labels(&row.labels, name, &mut out.labels);
            out.samples.push(tsdb::Sample {
                t: row.timestamp_ms,
                v: *value,
            });
            out.series.push(SeriesSpan {
                labels: label_start..label_end,
                samples: sample..sample_end,
            });
        }
    }
    Ok(())
}

/// [`write_request`] would exceed the `u32` indexes of a [`WriteRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many samples in one request")]
pub struct BatchTooLarge;

/// What every line of one body is parsed with.
struct Context<'a> {
    precision: Precision,
    default_timestamp: i64,
    db: Option<&'a str>,
    extra_labels: &'a [(String, String)],
}

/// A parsed line: sorted labels without `__name__`, timestamp, samples.
type ParsedLine = (Vec<(String, String)>, i64, Vec<(String, f64)>);

/// A field's value once read.
enum FieldValue {
    Number(f64),
    /// A string that is not a number: skipped.
    Text,
}

/// One tag or field as found in the line, before the checks across the line.
struct Entry<'a> {
    /// The key as written (escapes removed), for messages.
    key: Cow<'a, str>,
    /// The label or metric name it becomes.
    name: String,
}

/// Parses one line that is neither empty nor a comment. `Ok(None)` if the line is valid
/// but has no numeric field.
fn parse_line(line: &str, ctx: &Context<'_>) -> Result<Option<ParsedLine>, String> {
    let mut cur = Cursor::new(line);

    // Measurement.
    let measurement = unescape(cur.scan_escaped(b", ")?);

    // Tags.
    let mut tags: Vec<(Entry<'_>, Cow<'_, str>)> = Vec::new();
    while cur.eat(b',') {
        let key_raw = cur.scan_escaped(b"=, ")?;
        if !cur.eat(b'=') {
            return Err(if key_raw.is_empty() {
                "expected a tag after ','".to_string()
            } else {
                format!("tag {} has no '=' (expected key=value)", quote(key_raw))
            });
        }
        let value = unescape(cur.scan_escaped(b", ")?);
        let key = unescape(key_raw);
        if key.is_empty() {
            return Err(format!("tag with value {} has an empty key", quote(&value)));
        }
        if value.is_empty() {
            continue;
        }
        let name = sanitize(&key, false).into_owned();
        if name == METRIC_NAME {
            return Err(format!(
                "tag key {} is reserved for the metric name",
                quote(&key)
            ));
        }
        tags.push((Entry { key, name }, value));
    }

    // The space before the fields.
    if !cur.eat(b' ') {
        return Err(match cur.peek() {
            None => "no fields: expected a space and key=value after the measurement and tags"
                .to_string(),
            // `scan_escaped` stops only at ',', ' ' or the end, and ',' was eaten.
            Some(b) => format!("unexpected {:?} after the tags", char::from(b)),
        });
    }
    cur.skip_spaces();
    if cur.at_end() {
        return Err("no fields: expected key=value after the measurement and tags".to_string());
    }

    // Fields.
    let mut fields: Vec<(Entry<'_>, FieldValue)> = Vec::new();
    loop {
        let key_raw = cur.scan_escaped(b"=, ")?;
        if !cur.eat(b'=') {
            return Err(if key_raw.is_empty() {
                "expected a field (key=value)".to_string()
            } else {
                format!("field {} has no '=' (expected key=value)", quote(key_raw))
            });
        }
        let key = unescape(key_raw);
        if key.is_empty() {
            return Err("field with an empty key".to_string());
        }
        let value = if cur.peek() == Some(b'"') {
            let text = cur.scan_quoted().map_err(|e| match e {
                QuoteError::Unterminated => {
                    format!("field {}: string value has no closing quote", quote(&key))
                }
                QuoteError::TrailingText(t) => format!(
                    "field {}: unexpected {} after the closing quote",
                    quote(&key),
                    quote(t)
                ),
                QuoteError::Internal => internal_error(),
            })?;
            match parse_float(&text) {
                Some(v) => FieldValue::Number(v),
                None => FieldValue::Text,
            }
        } else {
            let raw = cur.scan_plain(b", ")?;
            if raw.is_empty() {
                return Err(format!("field {} has an empty value", quote(&key)));
            }
            FieldValue::Number(parse_unquoted(raw)?)
        };
        let name = if measurement.is_empty() {
            sanitize(&key, true).into_owned()
        } else {
            sanitize(&format!("{measurement}_{key}"), true).into_owned()
        };
        fields.push((Entry { key, name }, value));
        if !cur.eat(b',') {
            break;
        }
    }

    // Timestamp.
    cur.skip_spaces();
    let timestamp_ms = match cur.rest()?.trim_end_matches(' ') {
        "" => ctx.default_timestamp,
        text => parse_timestamp(text, ctx.precision)?,
    };

    check_unique(tags.iter().map(|(e, _)| e), "tag", "label name")?;
    check_unique(fields.iter().map(|(e, _)| e), "field", "metric name")?;

    let samples: Vec<(String, f64)> = fields
        .into_iter()
        .filter_map(|(e, v)| match v {
            FieldValue::Number(v) => Some((e.name, v)),
            FieldValue::Text => None,
        })
        .collect();
    if samples.is_empty() {
        return Ok(None);
    }

    let mut labels: Vec<(String, String)> = tags
        .into_iter()
        .map(|(e, v)| (e.name, v.into_owned()))
        .collect();
    if let Some(db) = ctx.db
        && !labels.iter().any(|(n, _)| n == DB_LABEL)
    {
        labels.push((DB_LABEL.to_string(), db.to_string()));
    }
    for (name, value) in ctx.extra_labels {
        if name.is_empty() || name == METRIC_NAME {
            continue;
        }
        labels.retain(|(n, _)| n != name);
        if !value.is_empty() {
            labels.push((name.clone(), value.clone()));
        }
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Some((labels, timestamp_ms, samples)))
}

/// Fails if two entries have the same key or the same resulting name.
fn check_unique<'e, 'a: 'e>(
    entries: impl Iterator<Item = &'e Entry<'a>>,
    what: &str,
    name_kind: &str,
) -> Result<(), String> {
    let mut sorted: Vec<&Entry<'_>> = entries.collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for pair in sorted.windows(2) {
        let [a, b] = pair else { continue };
        if a.name != b.name {
            continue;
        }
        return Err(if a.key == b.key {
            format!("duplicate {what} key {}", quote(&a.key))
        } else {
            format!(
                "{what} keys {} and {} both become {name_kind} {}",
                quote(&a.key),
                quote(&b.key),
                quote(&a.name)
            )
        });
    }
    Ok(())
}

/// Reads an unquoted field value: boolean, `i` integer, `u` unsigned integer or float.
fn parse_unquoted(raw: &str) -> Result<f64, String> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    if let Some(digits) = raw.strip_suffix('i') {
        return digits
            .parse::<i64>()
            .map(|n| n as f64)
            .map_err(|e| match e.kind() {
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => format!(
                    "field value {} is out of range for a 64-bit integer",
                    quote(raw)
                ),
                _ => format!("field value {} is not a valid integer", quote(raw)),
            });
    }
    if let Some(digits) = raw.strip_suffix('u') {
        return digits
            .parse::<u64>()
            .map(|n| n as f64)
            .map_err(|e| match e.kind() {
                IntErrorKind::PosOverflow => format!(
                    "field value {} is out of range for a 64-bit unsigned integer",
                    quote(raw)
                ),
                _ => format!("field value {} is not a valid unsigned integer", quote(raw)),
            });
    }
    parse_float(raw).ok_or_else(|| {
        format!(
            "field value {} is not a number, boolean or quoted string",
            quote(raw)
        )
    })
}

/// A float as Rust reads it (`1`, `-1.5e3`, `.5`, `inf`, `NaN`), or `None`.
fn parse_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

/// Reads a timestamp and converts it to milliseconds.
fn parse_timestamp(text: &str, precision: Precision) -> Result<i64, String> {
    let ts = text.parse::<i64>().map_err(|e| match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
            format!("timestamp {} does not fit in 64 bits", quote(text))
        }
        _ => format!("timestamp {} is not an integer", quote(text)),
    })?;
    precision.to_ms(ts).ok_or_else(|| {
        format!(
            "timestamp {ts} (precision {precision}) is out of range once converted to milliseconds"
        )
    })
}

/// Removes the escapes of measurements, tag keys and values, and field keys.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, ' ' | ',' | '=' | '\\')
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Removes the escapes of a quoted string field value (`\"` and `\\`).
fn unescape_string(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, '"' | '\\')
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Makes `s` a Prometheus metric name (`metric`) or label name: characters outside the
/// grammar become `_`, and a leading digit gets a `_` before it.
fn sanitize(s: &str, metric: bool) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
    let starts_with_digit = s.starts_with(|c: char| c.is_ascii_digit());
    if !starts_with_digit && !s.is_empty() && s.chars().all(allowed) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 1);
    if starts_with_digit {
        out.push('_');
    }
    out.extend(s.chars().map(|c| if allowed(c) { c } else { '_' }));
    Cow::Owned(out)
}

/// `s` in double quotes with Rust escapes, cut to [`MAX_QUOTED_CHARS`] characters.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}...", s.get(..cut).unwrap_or(s)),
        None => format!("{s:?}"),
    }
}

fn internal_error() -> String {
    "internal error: cannot split the line".to_string()
}

/// Why [`Cursor::scan_quoted`] failed.
enum QuoteError<'a> {
    Unterminated,
    TrailingText(&'a str),
    Internal,
}

/// A position in one line. Every position it stops at is either the end or an ASCII
/// byte, so every slice it hands out is on character boundaries.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Self {
        Cursor { line, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.line.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.line.len()
    }

    /// Consumes `b` if it is next.
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.eat(b' ') {}
    }

    fn slice(&self, start: usize, end: usize) -> Result<&'a str, String> {
        self.line.get(start..end).ok_or_else(internal_error)
    }

    fn rest(&self) -> Result<&'a str, String> {
        self.slice(self.pos, self.line.len())
    }

    /// Consumes up to the first byte of `stops` not escaped by a backslash, or the end,
    /// and returns what it consumed, escapes included.
    fn scan_escaped(&mut self, stops: &[u8]) -> Result<&'a str, String> {
        let start = self.pos;
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if c == b'\\' {
                // The escaped byte, if any, is never a stop. A multi-byte character's
                // continuation bytes are never stops either, so the scan resumes safely.
                self.pos = (self.pos + 2).min(b.len());
                continue;
            }
            if stops.contains(&c) {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// Consumes up to the first byte of `stops`, or the end, without escapes.
    fn scan_plain(&mut self, stops: &[u8]) -> Result<&'a str, String> {
        let start = self.pos;
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if stops.contains(&c) {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// At an opening `"`: consumes the quoted string and returns its text with the
    /// escapes removed. The closing quote must be followed by `,`, a space or the end.
    fn scan_quoted(&mut self) -> Result<Cow<'a, str>, QuoteError<'a>> {
        let b = self.bytes();
        let start = self.pos + 1;
        let mut i = start;
        loop {
            match b.get(i) {
                None => return Err(QuoteError::Unterminated),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let text = self.line.get(start..i).ok_or(QuoteError::Internal)?;
        self.pos = i + 1;
        match self.peek() {
            None | Some(b',') | Some(b' ') => Ok(unescape_string(text)),
            Some(_) => {
                let after = self.line.get(self.pos..).ok_or(QuoteError::Internal)?;
                let end = after
                    .find([',', ' '])
                    .map_or(self.line.len(), |n| self.pos + n);
                let trailing = self.line.get(self.pos..end).ok_or(QuoteError::Internal)?;
                Err(QuoteError::TrailingText(trailing))
            }
        }
    }
}

#[cfg(test)]
mod tests;
