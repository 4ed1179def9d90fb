//! The Prometheus text exposition format (0.0.4, with Prometheus 3's quoted UTF-8 names)
//! and OpenMetrics 1.0 text: a zero-copy, line-at-a-time parser.
//!
//! One parser serves the import endpoint, the Pushgateway-compatible endpoint and the
//! scrape manager. [`Parser`] walks a borrowed body and yields one [`Entry`] per sample or
//! metadata line. Names, label names and label values borrow from the body; only a value
//! holding an escape sequence is copied (see [`Cow`]). [`Parser::next_entry`] lends the
//! labels from a buffer the parser reuses, so a sample costs no allocation; the
//! [`Iterator`] implementation copies them out for convenience.
//!
//! A line that cannot be parsed yields a [`ParseError`] naming its 1-based line and column
//! and what is wrong; parsing resumes on the next line, so a caller can ingest the good
//! lines and report the rejected ones.
//!
//! # Grammar
//!
//! Lines end at `\n`; one `\r` before it is dropped, and the last line needs no newline.
//! `ws` is one or more spaces or tabs. Lines may start with `ws`.
//!
//! ```text
//! line        = ws? ( sample | comment )? ws?
//! sample      = series ws? value ( ws timestamp )? ( ws "#" exemplar-ignored )?
//! series      = metric-name ( ws? "{" label-list "}" )?   -- a bare name needs ws or "{" after it
//!             | "{" label-list "}"                         -- with the name quoted inside
//! label-list  = ws? ( item ( ws? ","? ws? item )* ws? ","? )? ws?
//! item        = label-name ws? "=" ws? quoted             -- a label
//!             | quoted                                     -- the metric name, once
//! label-name  = [a-zA-Z_][a-zA-Z0-9_]* | quoted
//! metric-name = [a-zA-Z_:][a-zA-Z0-9_:]*
//! quoted      = '"' ( '\' any-char | [^"\] )* '"'
//! value       = Go ParseFloat syntax without hex: [+-]? digits with optional '.' and
//!               exponent; NaN; [+-]?Inf; [+-]?Infinity (special names in any case)
//! timestamp   = [+-]?[0-9]+ milliseconds           (Prometheus text)
//!             | value in seconds, finite           (OpenMetrics)
//! comment     = "#" ws "HELP" ws name ( ws-char text )?
//!             | "#" ws "TYPE" ws name ws type ws?
//!             | "#" ws "UNIT" ws name ( ws unit )?   -- OpenMetrics only
//!             | "#" ws "EOF" ws?                      -- OpenMetrics only
//!             | "#" anything-else                     -- ignored
//! name        = metric-name | quoted
//! type        = counter | gauge | histogram | summary | untyped
//!             | unknown | info | stateset | gaugehistogram
//! ```
//!
//! Escapes in quoted strings (label values, quoted names): `\\`, `\"` and `\n` are
//! unescaped; any other backslash pair is kept as written (`\t` stays two characters), as
//! Prometheus does. In HELP text only `\\` and `\n` are unescaped (OpenMetrics adds `\"`).
//! The HELP text starts after the single space or tab that ends the name; further spaces
//! are part of it.
//!
//! # Formats
//!
//! [`Format::Prometheus`] and [`Format::OpenMetrics`] differ in three things: OpenMetrics
//! timestamps are seconds (converted exactly to milliseconds, truncating below the
//! millisecond), `# UNIT` and `# EOF` are recognized (both are plain comments in
//! Prometheus text), and content after `# EOF`, or a missing `# EOF`, is an error.
//! [`Parser::new`] picks OpenMetrics when the body's last line is `# EOF`
//! ([`Format::detect`]); [`Format::from_content_type`] maps a `Content-Type` header.
//!
//! # Output
//!
//! - Labels come in text order, without the metric name. Duplicate label names in one line,
//!   a `__name__` label, empty label values and duplicate series are passed through: what
//!   to do with them is the caller's decision.
//! - `NaN` parses to [`f64::NAN`]; no text can produce tsdb's stale marker
//!   ([`tsdb::STALE_NAN_BITS`]).
//! - A value or timestamp out of range (`1e400`) is an error, as in Go's `ParseFloat`;
//!   underflow (`1e-400`) gives zero.
//! - Invalid UTF-8 is an error on the lines that hold it (ignored comments excepted); the
//!   rest of the body parses. [`Parser::line_bytes`] gives a rejected line's raw bytes.
//!
//! Cost is linear in the input: line ends and long quoted strings are found with memchr,
//! and nothing is rescanned.
//!
//! # Deviations
//!
//! From Prometheus' `textparse` (3.x):
//! - Lenient where it is strict: OpenMetrics types (`info`, `stateset`...) and exemplars
//!   are accepted in Prometheus text; whitespace may be repeated anywhere between tokens
//!   in both formats; timestamps may carry a sign; a leading UTF-8 byte order mark is
//!   skipped; trailing spaces after `# TYPE name type` are allowed.
//! - Strict where it is lenient: a bare metric name must be followed by whitespace or `{`
//!   (Prometheus reads `foo-1` as `foo` with value `-1`); a name inside braces must be
//!   quoted (`{foo}` is an error); the HELP name must be followed by whitespace or the end
//!   of the line.
//! - Line-based: a raw newline inside a quoted string ends the line (an unterminated
//!   string); Prometheus' lexer would carry on onto the next line.
//! - OpenMetrics seconds are converted from their decimal digits, so `1.001` is 1001 ms
//!   (Prometheus multiplies a float: 1000 ms).
//! - Hex floats are rejected, as Prometheus does (it rejects `p`, `P` and `_`).
//! - Prometheus 3 rewrites `le`/`quantile` values of classic histograms and summaries to
//!   OpenMetrics float form (`le="1"` becomes `1.0`); that depends on the family's type and
//!   is left to the caller.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memchr2};

/// A label name and value, in the order they appear.
pub type Label<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Which text format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The Prometheus text format, 0.0.4 (`text/plain; version=0.0.4`).
    #[default]
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header names: OpenMetrics for
    /// `application/openmetrics-text` (any parameters, any case), Prometheus text for
    /// anything else, including `text/plain` and a missing header.
    pub fn from_content_type(content_type: &str) -> Format {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// OpenMetrics if the body's last non-blank line is `# EOF`, else Prometheus text.
    /// Looks only at the end of the body.
    pub fn detect(input: &[u8]) -> Format {
        let mut end = input.len();
        while end > 0 && matches!(input[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
            end -= 1;
        }
        let body = &input[..end];
        let Some(head) = body.strip_suffix(b"EOF") else {
            return Format::Prometheus;
        };
        let mut i = head.len();
        while i > 0 && matches!(head[i - 1], b' ' | b'\t') {
            i -= 1;
        }
        if i == head.len() || i == 0 || head[i - 1] != b'#' {
            return Format::Prometheus;
        }
        let mut j = i - 1;
        while j > 0 && matches!(head[j - 1], b' ' | b'\t') {
            j -= 1;
        }
        if j == 0 || head[j - 1] == b'\n' {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The type a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
    /// OpenMetrics' name for untyped.
    Unknown,
    Info,
    StateSet,
    GaugeHistogram,
}

impl MetricType {
    /// The type as written in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
            MetricType::Unknown => "unknown",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::GaugeHistogram => "gaugehistogram",
        }
    }

    /// The type a `# TYPE` line names (lower case, as both formats write it).
    pub fn from_name(name: &str) -> Option<MetricType> {
        Some(match name {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            "unknown" => MetricType::Unknown,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "gaugehistogram" => MetricType::GaugeHistogram,
            _ => return None,
        })
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample line. `'a` is the body's lifetime; `'b` that of the label list, which
/// [`Parser::next_entry`] lends from its reusable buffer (see [`Sample::detach`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a, 'b> {
    /// The metric name, unescaped if it was quoted.
    pub name: Cow<'a, str>,
    /// The labels in text order, without the metric name.
    pub labels: Cow<'b, [Label<'a>]>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, if the line has a timestamp.
    pub timestamp_ms: Option<i64>,
    /// 1-based line number.
    pub line: usize,
}

impl<'a> Sample<'a, '_> {
    /// Copies the label list out of the parser's buffer; names and values still borrow
    /// from the body.
    pub fn detach(self) -> Sample<'a, 'a> {
        Sample {
            name: self.name,
            labels: Cow::Owned(self.labels.into_owned()),
            value: self.value,
            timestamp_ms: self.timestamp_ms,
            line: self.line,
        }
    }
}

/// One parsed line. Blank lines and ordinary comments yield nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a, 'b> {
    Sample(Sample<'a, 'b>),
    /// `# HELP name text`, the text unescaped.
    Help {
        name: Cow<'a, str>,
        text: Cow<'a, str>,
    },
    /// `# TYPE name type`.
    Type {
        name: Cow<'a, str>,
        kind: MetricType,
    },
    /// `# UNIT name unit` (OpenMetrics only).
    Unit {
        name: Cow<'a, str>,
        unit: &'a str,
    },
    /// `# EOF` (OpenMetrics only).
    Eof,
}

impl<'a> Entry<'a, '_> {
    /// Copies a sample's label list out of the parser's buffer (see [`Sample::detach`]).
    pub fn detach(self) -> Entry<'a, 'a> {
        match self {
            Entry::Sample(s) => Entry::Sample(s.detach()),
            Entry::Help { name, text } => Entry::Help { name, text },
            Entry::Type { name, kind } => Entry::Type { name, kind },
            Entry::Unit { name, unit } => Entry::Unit { name, unit },
            Entry::Eof => Entry::Eof,
        }
    }
}

/// A line that could not be parsed. Displays as `line 3, column 12: expected '=' ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte offset in the line where the problem was found.
    pub column: usize,
    /// What is wrong, quoting the offending token (shortened if long).
    pub message: String,
}

/// A streaming parser over one body. See the [module documentation](self).
#[derive(Debug)]
pub struct Parser<'a> {
    input: &'a [u8],
    /// The whole body as text, when it is valid UTF-8 (the usual case): lines are then
    /// sliced from it without checking each one.
    text: Option<&'a str>,
    pos: usize,
    line: usize,
    /// Where the last line read starts, for [`Parser::line_bytes`].
    line_start: usize,
    format: Format,
    after_eof: bool,
    finished: bool,
    labels: Vec<Label<'a>>,
}

impl<'a> Parser<'a> {
    /// A parser over `input`, in the format [`Format::detect`] picks.
    pub fn new<T: AsRef<[u8]> + ?Sized>(input: &'a T) -> Parser<'a> {
        let input = input.as_ref();
        Parser::with_format(input, Format::detect(input))
    }

    /// A parser over `input` in a given format.
    pub fn with_format<T: AsRef<[u8]> + ?Sized>(input: &'a T, format: Format) -> Parser<'a> {
        let input = input.as_ref();
        // A leading UTF-8 byte order mark is skipped; columns on line 1 count from after it.
        let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        Parser {
            input,
            text: std::str::from_utf8(input).ok(),
            pos: 0,
            line: 0,
            line_start: 0,
            format,
            after_eof: false,
            finished: false,
            labels: Vec::new(),
        }
    }

    /// A parser over another body that keeps this one's label buffer.
    pub fn recycle<'c, T: AsRef<[u8]> + ?Sized>(self, input: &'c T, format: Format) -> Parser<'c> {
        let mut labels = self.labels;
        labels.clear();
        // Collecting an empty vector into one of the same layout reuses its allocation;
        // only the borrowed lifetime changes.
        let labels = labels
            .into_iter()
            .map(|_| -> Label<'c> { (Cow::Borrowed(""), Cow::Borrowed("")) })
            .collect();
        Parser {
            labels,
            ..Parser::with_format(input, format)
        }
    }

    /// The format being parsed.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The 1-based number of the last line read: that of the entry or error just returned.
    /// (The error for a missing OpenMetrics `# EOF` names the line after the last.)
    pub fn line(&self) -> usize {
        self.line
    }

    /// The raw bytes of the last line read, without its line ending: the line an error just
    /// returned is about, for quoting it back to the sender.
    pub fn line_bytes(&self) -> &'a [u8] {
        let rest = self.input.get(self.line_start..).unwrap_or_default();
        let line = match memchr(b'\n', rest) {
            Some(k) => &rest[..k],
            None => rest,
        };
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// The next entry or error, lending the sample's labels from the parser's buffer.
    /// Returns `None` at the end of the body. After an error, the next call continues with
    /// the following line.
    pub fn next_entry(&mut self) -> Option<Result<Entry<'a, '_>, ParseError>> {
        let parsed = loop {
            let Some((start, end)) = self.next_line() else {
                return self.finish().map(Err);
            };
            let line = match self.line_text(start, end) {
                Ok(line) => line,
                Err(column) => {
                    let bytes = &self.input[start..end];
                    if self.after_eof && is_blank(bytes) {
                        continue;
                    }
                    if !self.after_eof && is_plain_comment(bytes, self.format) {
                        continue;
                    }
                    return Some(Err(self.error(column, "invalid UTF-8".to_string())));
                }
            };
            if self.after_eof {
                if is_blank(line.as_bytes()) {
                    continue;
                }
                let column = first_non_ws(line.as_bytes());
                return Some(Err(
                    self.error(column, "unexpected content after # EOF".to_string())
                ));
            }
            self.labels.clear();
            match parse_line(line, self.format, &mut self.labels) {
                Ok(None) => continue,
                Ok(Some(parsed)) => break parsed,
                Err(e) => return Some(Err(self.error(e.at, e.message))),
            }
        };
        Some(Ok(match parsed {
            Parsed::Sample {
                name,
                value,
                timestamp_ms,
            } => Entry::Sample(Sample {
                name,
                labels: Cow::Borrowed(&self.labels),
                value,
                timestamp_ms,
                line: self.line,
            }),
            Parsed::Help { name, text } => Entry::Help { name, text },
            Parsed::Type { name, kind } => Entry::Type { name, kind },
            Parsed::Unit { name, unit } => Entry::Unit { name, unit },
            Parsed::Eof => {
                self.after_eof = true;
                Entry::Eof
            }
        }))
    }

    /// The byte range of the next line without its `\r\n` or `\n`.
    #[inline]
    fn next_line(&mut self) -> Option<(usize, usize)> {
        let start = self.pos;
        let rest = self.input.get(start..).filter(|r| !r.is_empty())?;
        let end = match memchr(b'\n', rest) {
            Some(k) => start + k,
            None => self.input.len(),
        };
        self.pos = end + 1;
        self.line_start = start;
        self.line += 1;
        if end > start && self.input[end - 1] == b'\r' {
            Some((start, end - 1))
        } else {
            Some((start, end))
        }
    }

    /// The line as text, or the 0-based column of its first invalid UTF-8 byte.
    #[inline]
    fn line_text(&self, start: usize, end: usize) -> Result<&'a str, usize> {
        match self.text {
            // `start` follows a '\n' (or is 0); `end` is at '\r', '\n' or the end: both are
            // character boundaries.
            Some(text) => Ok(&text[start..end]),
            None => std::str::from_utf8(&self.input[start..end]).map_err(|e| e.valid_up_to()),
        }
    }

    /// Called once the body is consumed: an OpenMetrics body must have ended with `# EOF`.
    fn finish(&mut self) -> Option<ParseError> {
        if self.finished {
            return None;
        }
        self.finished = true;
        if self.format == Format::OpenMetrics && !self.after_eof {
            self.line += 1;
            return Some(self.error(0, "OpenMetrics input does not end with # EOF".to_string()));
        }
        None
    }

    fn error(&self, at: usize, message: String) -> ParseError {
        ParseError {
            line: self.line,
            column: at + 1,
            message,
        }
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a, 'a>, ParseError>;

    /// Like [`Parser::next_entry`], with each sample's labels copied into their own vector.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().map(|r| r.map(Entry::detach))
    }
}

/// Parses a whole body (format detected as by [`Parser::new`]) into its entries and the
/// errors of the lines that were rejected.
pub fn parse_all(input: &str) -> (Vec<Entry<'_, '_>>, Vec<ParseError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for r in Parser::new(input) {
        match r {
            Ok(e) => entries.push(e),
            Err(e) => errors.push(e),
        }
    }
    (entries, errors)
}

// ---------------------------------------------------------------------------------------
// Line parsing

/// What one line holds; a sample's labels are left in the parser's buffer.
enum Parsed<'a> {
    Sample {
        name: Cow<'a, str>,
        value: f64,
        timestamp_ms: Option<i64>,
    },
    Help {
        name: Cow<'a, str>,
        text: Cow<'a, str>,
    },
    Type {
        name: Cow<'a, str>,
        kind: MetricType,
    },
    Unit {
        name: Cow<'a, str>,
        unit: &'a str,
    },
    Eof,
}

/// A problem at a 0-based byte offset in the line.
struct LineError {
    at: usize,
    message: String,
}

type LineResult<T> = Result<T, LineError>;

/// An error at `at`. The message is built by a closure so that its formatting code stays
/// out of the hot parsing functions.
#[cold]
#[inline(never)]
fn fail<T>(at: usize, message: impl FnOnce() -> String) -> LineResult<T> {
    Err(LineError {
        at,
        message: message(),
    })
}

const METRIC_START: u8 = 1;
const METRIC_CHAR: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL_CHAR: u8 = 8;

/// Character classes of name bytes.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let digit = b.is_ascii_digit();
        let mut v = 0;
        if alpha || b == b':' {
            v |= METRIC_START | METRIC_CHAR;
        }
        if digit {
            v |= METRIC_CHAR | LABEL_CHAR;
        }
        if alpha {
            v |= LABEL_START | LABEL_CHAR;
        }
        t[c] = v;
        c += 1;
    }
    t
};

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// The end of the token at `i`: the next space, tab or the end of the line.
#[inline]
fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_ws(b[i]) {
        i += 1;
    }
    i
}

/// The end of the run of bytes in `class` starting at `i`.
#[inline]
fn scan_class(b: &[u8], mut i: usize, class: u8) -> usize {
    while i < b.len() && CLASS[b[i] as usize] & class != 0 {
        i += 1;
    }
    i
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|&c| is_ws(c))
}

fn first_non_ws(b: &[u8]) -> usize {
    skip_ws(b, 0)
}

/// `'x'` for the character at `i`, or `end of line`.
fn found(line: &str, i: usize) -> String {
    match line.get(i..).and_then(|s| s.chars().next()) {
        Some(c) => format!("{c:?}"),
        None if i >= line.len() => "end of line".to_string(),
        None => "a byte inside a character".to_string(),
    }
}

/// A name or value quoted for a message, shortened to 64 characters.
fn quote(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// What comes after `#` (at `i`) when it is not a plain comment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Help,
    Type,
    Unit,
    Eof,
}

/// The keyword of a `# KEYWORD ...` line and the offset just past it; `None` for a plain
/// comment. `i` is the offset just past `#`.
fn keyword(b: &[u8], i: usize, format: Format) -> Option<(Keyword, usize)> {
    if i < b.len() && !is_ws(b[i]) {
        return None; // "#foo": Prometheus' lexer needs whitespace after '#'
    }
    let ks = skip_ws(b, i);
    let ke = token_end(b, ks);
    let kw = match &b[ks..ke] {
        b"HELP" => Keyword::Help,
        b"TYPE" => Keyword::Type,
        b"UNIT" if format == Format::OpenMetrics => Keyword::Unit,
        b"EOF" if format == Format::OpenMetrics => Keyword::Eof,
        _ => return None,
    };
    match kw {
        // "# EOF trailing words" is an ordinary comment.
        Keyword::Eof => (skip_ws(b, ke) == b.len()).then_some((kw, ke)),
        // "# HELP" alone is an ordinary comment, as in Prometheus.
        _ => (ke < b.len()).then_some((kw, ke)),
    }
}

/// A line that is nothing but a comment that would be ignored.
fn is_plain_comment(b: &[u8], format: Format) -> bool {
    let i = skip_ws(b, 0);
    i < b.len() && b[i] == b'#' && keyword(b, i + 1, format).is_none()
}

/// Parses one line (without its line ending); `None` for a blank line or a comment.
fn parse_line<'a>(
    line: &'a str,
    format: Format,
    labels: &mut Vec<Label<'a>>,
) -> LineResult<Option<Parsed<'a>>> {
    let b = line.as_bytes();
    let i = skip_ws(b, 0);
    match b.get(i) {
        None => Ok(None),
        Some(b'#') => match keyword(b, i + 1, format) {
            None => Ok(None),
            Some((kw, ke)) => parse_metadata(line, kw, ke, format).map(Some),
        },
        Some(_) => parse_sample(line, i, format, labels).map(Some),
    }
}

/// Parses a HELP, TYPE, UNIT or EOF line from just past its keyword (`ke`).
fn parse_metadata(line: &str, kw: Keyword, ke: usize, format: Format) -> LineResult<Parsed<'_>> {
    let b = line.as_bytes();
    let kw_name = match kw {
        Keyword::Help => "HELP",
        Keyword::Type => "TYPE",
        Keyword::Unit => "UNIT",
        Keyword::Eof => return Ok(Parsed::Eof),
    };
    let ns = skip_ws(b, ke);
    let (name, ne) = match b.get(ns) {
        Some(b'"') => {
            let (name, ne) = parse_quoted(line, ns)?;
            if name.is_empty() {
                return fail(ns, || format!("empty metric name after {kw_name}"));
            }
            (name, ne)
        }
        Some(&c) if CLASS[c as usize] & METRIC_START != 0 => {
            let ne = scan_class(b, ns, METRIC_CHAR);
            (Cow::Borrowed(&line[ns..ne]), ne)
        }
        _ => {
            return fail(ns, || {
                format!(
                    "expected metric name after {kw_name}, found {}",
                    found(line, ns)
                )
            });
        }
    };
    // The text starts after the one space or tab that ends the name.
    let text_start = match b.get(ne) {
        None => ne,
        Some(&c) if is_ws(c) => ne + 1,
        Some(_) => {
            return fail(ne, || {
                format!(
                    "invalid character {} after metric name {} in {kw_name}",
                    found(line, ne),
                    quote(&name)
                )
            });
        }
    };
    let text = &line[text_start..];
    match kw {
        Keyword::Help => {
            let text = unescape_help(text, format == Format::OpenMetrics);
            Ok(Parsed::Help { name, text })
        }
        Keyword::Type => {
            let at = skip_ws(b, text_start);
            let kind = line[at..].trim_end_matches([' ', '\t']);
            match MetricType::from_name(kind) {
                Some(kind) => Ok(Parsed::Type { name, kind }),
                None if kind.is_empty() => fail(at, || {
                    format!("missing metric type after TYPE {}", quote(&name))
                }),
                None => fail(at, || format!("unknown metric type {}", quote(kind))),
            }
        }
        Keyword::Unit => {
            let unit = text.trim_matches([' ', '\t']);
            Ok(Parsed::Unit { name, unit })
        }
        Keyword::Eof => Ok(Parsed::Eof),
    }
}

fn parse_sample<'a>(
    line: &'a str,
    start: usize,
    format: Format,
    labels: &mut Vec<Label<'a>>,
) -> LineResult<Parsed<'a>> {
    let b = line.as_bytes();
    let mut name = None;
    let mut i = start;
    if CLASS[b[i] as usize] & METRIC_START != 0 {
        let end = scan_class(b, i, METRIC_CHAR);
        let bare = &line[i..end];
        i = end;
        match b.get(i) {
            Some(b'{') => i = parse_labels(line, i + 1, &mut name, labels)?,
            Some(&c) if is_ws(c) => {
                i = skip_ws(b, i);
                if b.get(i) == Some(&b'{') {
                    i = parse_labels(line, i + 1, &mut name, labels)?;
                }
            }
            Some(_) => {
                return fail(i, || {
                    format!(
                        "invalid character {} after metric name {} (expected whitespace or '{{')",
                        found(line, i),
                        quote(bare)
                    )
                });
            }
            None => {
                return fail(i, || {
                    format!("expected a value after metric name {}", quote(bare))
                });
            }
        }
        if name.is_some() {
            return fail(start, || {
                format!(
                    "metric name {} given twice: before the braces and quoted inside them",
                    quote(bare)
                )
            });
        }
        name = Some(Cow::Borrowed(bare));
    } else if b[i] == b'{' {
        i = parse_labels(line, i + 1, &mut name, labels)?;
    } else {
        return fail(i, || {
            format!("expected a metric name, found {}", found(line, i))
        });
    }
    let Some(name) = name else {
        return fail(start, || {
            "missing metric name: write it before '{' or quoted inside the braces".to_string()
        });
    };

    i = skip_ws(b, i);
    if i == b.len() {
        return fail(i, || format!("expected a value after {}", quote(&name)));
    }
    let value_end = token_end(b, i);
    let value_text = &line[i..value_end];
    let value = match parse_float(value_text) {
        Ok(v) => v,
        Err(FloatError::Range) => {
            return fail(i, || format!("value {} out of range", quote(value_text)));
        }
        Err(FloatError::Syntax) => {
            return fail(i, || {
                format!(
                    "invalid value {} (expected a number, NaN, +Inf or -Inf)",
                    quote(value_text)
                )
            });
        }
    };

    i = skip_ws(b, value_end);
    let mut timestamp_ms = None;
    if i < b.len() && b[i] != b'#' {
        let ts_end = token_end(b, i);
        let ts_text = &line[i..ts_end];
        timestamp_ms = Some(match format {
            Format::Prometheus => parse_timestamp_ms(ts_text).map_err(|e| LineError {
                at: i,
                message: match e {
                    FloatError::Range => format!("timestamp {} out of range", quote(ts_text)),
                    FloatError::Syntax if ts_text.contains(['.', 'e', 'E']) => format!(
                        "invalid timestamp {} (expected integer milliseconds; \
                         seconds with a fraction are OpenMetrics)",
                        quote(ts_text)
                    ),
                    FloatError::Syntax => format!(
                        "invalid timestamp {} (expected integer milliseconds)",
                        quote(ts_text)
                    ),
                },
            })?,
            Format::OpenMetrics => parse_timestamp_seconds(ts_text).map_err(|e| LineError {
                at: i,
                message: match e {
                    FloatError::Range => format!("timestamp {} out of range", quote(ts_text)),
                    FloatError::Syntax => {
                        format!("invalid timestamp {} (expected seconds)", quote(ts_text))
                    }
                },
            })?,
        });
        i = skip_ws(b, ts_end);
        if i < b.len() && b[i] != b'#' {
            return fail(i, || {
                format!(
                    "expected end of line or an exemplar after the timestamp, found {}",
                    found(line, i)
                )
            });
        }
    }
    // Anything from '#' on is an exemplar (OpenMetrics); it is skipped.
    Ok(Parsed::Sample {
        name,
        value,
        timestamp_ms,
    })
}

/// Parses a label list from just past `{` to just past `}`, returning that offset. A
/// quoted string standing alone is the metric name, stored in `name`.
fn parse_labels<'a>(
    line: &'a str,
    mut i: usize,
    name: &mut Option<Cow<'a, str>>,
    labels: &mut Vec<Label<'a>>,
) -> LineResult<usize> {
    let b = line.as_bytes();
    loop {
        i = skip_ws(b, i);
        let item_start = i;
        let (label, quoted) = match b.get(i) {
            Some(b'}') => return Ok(i + 1),
            Some(b'"') => {
                let (s, end) = parse_quoted(line, i)?;
                i = end;
                (s, true)
            }
            Some(&c) if CLASS[c as usize] & LABEL_START != 0 => {
                let end = scan_class(b, i, LABEL_CHAR);
                let s = &line[i..end];
                i = end;
                (Cow::Borrowed(s), false)
            }
            _ => {
                return fail(i, || {
                    format!("expected a label name or '}}', found {}", found(line, i))
                });
            }
        };
        let name_end = i;
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'=') => {}
            Some(&c @ (b',' | b'}')) if quoted => {
                if label.is_empty() {
                    return fail(item_start, || "empty metric name".to_string());
                }
                if let Some(first) = name {
                    return fail(item_start, || {
                        format!(
                            "metric name given twice: {} and {}",
                            quote(first),
                            quote(&label)
                        )
                    });
                }
                *name = Some(label);
                if c == b'}' {
                    return Ok(i + 1);
                }
                i += 1;
                continue;
            }
            Some(&c) if !quoted && i == name_end && !matches!(c, b',' | b'}') => {
                return fail(i, || {
                    format!(
                        "invalid character {} in label name {} (quote names outside \
                         [a-zA-Z_][a-zA-Z0-9_]*)",
                        found(line, i),
                        quote(&label)
                    )
                });
            }
            _ => {
                return fail(i, || {
                    format!(
                        "expected '=' after label name {}, found {}",
                        quote(&label),
                        found(line, i)
                    )
                });
            }
        }
        if label.is_empty() {
            return fail(item_start, || "empty label name".to_string());
        }
        i = skip_ws(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return fail(i, || {
                format!(
                    "expected '\"' to open the value of label {}, found {}",
                    quote(&label),
                    found(line, i)
                )
            });
        }
        let q = match scan_quoted(b, i) {
            Ok(q) => q,
            Err(e) => return quote_error(i, e),
        };
        // Pushing a constant and then filling it in lets the compiler write the fields in
        // place; pushing the finished pair spilled it to the stack and copied it with wider
        // loads than the stores that wrote it, a store-forwarding stall per label.
        labels.push((label, q.text(line, i)));
        i = skip_ws(b, q.close + 1);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            // Prometheus accepts pairs separated by whitespace alone.
            Some(&c) if c == b'"' || CLASS[c as usize] & LABEL_START != 0 => {}
            _ => {
                let label = labels.last().map_or("", |(k, _)| k.as_ref());
                return fail(i, || {
                    format!(
                        "expected ',' or '}}' after the value of label {}, found {}",
                        quote(label),
                        found(line, i)
                    )
                });
            }
        }
    }
}

/// Parses the quoted string whose opening quote is at `open`, returning its unescaped
/// content and the offset just past the closing quote.
#[inline(always)]
fn parse_quoted(line: &str, open: usize) -> LineResult<(Cow<'_, str>, usize)> {
    match scan_quoted(line.as_bytes(), open) {
        Ok(q) => Ok((q.text(line, open), q.close + 1)),
        Err(e) => quote_error(open, e),
    }
}

/// Where a quoted string ends, and whether it holds an escape to replace.
#[derive(Clone, Copy)]
struct Quoted {
    /// Offset of the closing quote.
    close: usize,
    escaped: bool,
}

impl Quoted {
    /// The content of the string opened at `open`, unescaped.
    #[inline(always)]
    fn text(self, line: &str, open: usize) -> Cow<'_, str> {
        // `open + 1` follows and `close` is an ASCII quote: both are character boundaries.
        let raw = &line[open + 1..self.close];
        if self.escaped {
            Cow::Owned(unescape(raw, true))
        } else {
            Cow::Borrowed(raw)
        }
    }
}

#[derive(Clone, Copy)]
enum QuoteError {
    Unterminated,
    LoneBackslash,
}

#[cold]
#[inline(never)]
fn quote_error<T>(open: usize, e: QuoteError) -> LineResult<T> {
    fail(open, || {
        match e {
            QuoteError::Unterminated => {
                "unterminated quoted string: no closing '\"' before the end of the line"
            }
            QuoteError::LoneBackslash => {
                "unterminated quoted string: it ends with a lone backslash"
            }
        }
        .to_string()
    })
}

/// Finds the end of the quoted string opened at `open`. Scalars only, so that the result
/// stays in registers.
#[inline(always)]
fn scan_quoted(b: &[u8], open: usize) -> Result<Quoted, QuoteError> {
    let mut j = open + 1;
    let mut escaped = false;
    loop {
        // Most values are short: look at the first bytes one by one before calling memchr.
        let short_end = b.len().min(j + 32);
        let mut p = j;
        while p < short_end && b[p] != b'"' && b[p] != b'\\' {
            p += 1;
        }
        if p == short_end {
            match b.get(p..).and_then(|rest| memchr2(b'"', b'\\', rest)) {
                Some(k) => p += k,
                None => return Err(QuoteError::Unterminated),
            }
        }
        if b[p] == b'"' {
            return Ok(Quoted { close: p, escaped });
        }
        // A backslash escapes the next byte, whatever it is.
        match b.get(p + 1) {
            Some(b'\\' | b'"' | b'n') => escaped = true,
            Some(_) => {}
            None => return Err(QuoteError::LoneBackslash),
        }
        j = p + 2;
    }
}

/// Replaces `\\` and `\n`, and `\"` when `quote` is set; keeps other backslashes as
/// they are.
#[inline(never)]
fn unescape(raw: &str, quote: bool) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut from = 0;
    let mut i = 0;
    while let Some(k) = memchr(b'\\', &b[i..]) {
        let p = i + k;
        let replacement = match b.get(p + 1) {
            Some(b'\\') => '\\',
            Some(b'n') => '\n',
            Some(b'"') if quote => '"',
            _ => {
                i = p + 1;
                continue;
            }
        };
        out.push_str(&raw[from..p]);
        out.push(replacement);
        from = p + 2;
        i = p + 2;
    }
    out.push_str(&raw[from..]);
    out
}

fn unescape_help(text: &str, open_metrics: bool) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(k) = memchr(b'\\', &b[i..]) {
        let p = i + k;
        match b.get(p + 1) {
            Some(b'\\' | b'n') => return Cow::Owned(unescape(text, open_metrics)),
            Some(b'"') if open_metrics => return Cow::Owned(unescape(text, open_metrics)),
            _ => i = p + 1,
        }
    }
    Cow::Borrowed(text)
}

// ---------------------------------------------------------------------------------------
// Numbers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatError {
    Syntax,
    Range,
}

/// A sample value as Go's `strconv.ParseFloat` reads it, without hex (Prometheus rejects
/// `p`, `P` and `_`): decimal with optional fraction and exponent; `NaN` (unsigned), `Inf`
/// and `Infinity` (signed or not), in any case. Values beyond `f64::MAX` are a range
/// error; underflow gives zero.
#[inline]
fn parse_float(s: &str) -> Result<f64, FloatError> {
    let b = s.as_bytes();
    // Fast path: a short integer, the commonest value, is exact in f64.
    if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        let mut n = 0u64;
        for &d in b {
            n = n * 10 + u64::from(d - b'0');
        }
        return Ok(n as f64);
    }
    let (negative, unsigned) = match b.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    match unsigned.as_bytes().first() {
        Some(b'0'..=b'9' | b'.') => {}
        Some(b'i' | b'I') => {
            return if unsigned.eq_ignore_ascii_case("inf")
                || unsigned.eq_ignore_ascii_case("infinity")
            {
                Ok(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            } else {
                Err(FloatError::Syntax)
            };
        }
        Some(b'n' | b'N') if unsigned.len() == s.len() => {
            return if unsigned.eq_ignore_ascii_case("nan") {
                Ok(f64::NAN)
            } else {
                Err(FloatError::Syntax)
            };
        }
        _ => return Err(FloatError::Syntax),
    }
    // Rust's grammar for the remaining digits, '.', exponent and sign is Go's decimal one.
    // Neither accepts '_'; Rust does not take hex.
    match s.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err(FloatError::Range),
        Ok(v) => Ok(v),
        Err(_) => Err(FloatError::Syntax),
    }
}

/// A Prometheus-text timestamp: a signed 64-bit integer of milliseconds.
#[inline]
fn parse_timestamp_ms(s: &str) -> Result<i64, FloatError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(FloatError::Syntax);
    }
    s.parse::<i64>().map_err(|_| FloatError::Range)
}

/// An OpenMetrics timestamp in seconds, as milliseconds. Plain decimals are converted from
/// their digits (exact, truncated toward zero below the millisecond); other forms
/// (exponents) through f64.
fn parse_timestamp_seconds(s: &str) -> Result<i64, FloatError> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if !(int.is_empty() && frac.is_empty()) && all_digits(int) && all_digits(frac) {
        let secs: i64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| FloatError::Range)?
        };
        let mut millis = 0i64;
        for k in 0..3 {
            let d = frac.as_bytes().get(k).map_or(0, |&c| i64::from(c - b'0'));
            millis = millis * 10 + d;
        }
        let ms = secs
            .checked_mul(1000)
            .and_then(|v| v.checked_add(millis))
            .ok_or(FloatError::Range)?;
        return Ok(if negative { -ms } else { ms });
    }
    let v = parse_float(s)?;
    if !v.is_finite() {
        return Err(FloatError::Syntax);
    }
    let ms = (v * 1000.0).trunc();
    // i64::MAX as f64 rounds up to 2^63, which is out of range.
    if ms >= -(2f64.powi(63)) && ms < 2f64.powi(63) {
        Ok(ms as i64)
    } else {
        Err(FloatError::Range)
    }
}

#[cfg(test)]
mod tests;
