/*!
The values a template computes with, one variant per Go type that Prometheus'
and Alertmanager's templates can produce: Go's basic kinds, label maps, the
alert data struct, query samples and timestamps (Prometheus); the
notification data, its alerts, `KV` maps, pairs, string lists, durations and
`safeHtml`/`safeUrl` strings (Alertmanager); and the lists and maps templates
build (`list`, `append`, `dict`, `args`), whose nesting is bounded.

Go's type names are kept (`float64`, `map[string]string`,
`*template.sample`...) because they appear in error messages and in
`printf`'s `%!verb(type=value)` markers, which users compare with
Prometheus'.
*/

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

/// A label set, Go's `map[string]string`.
pub(super) type LabelMap = BTreeMap<String, String>;

/// One element of a `query` result (Prometheus' `*sample`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub(super) labels: Arc<LabelMap>,
    pub(super) value: f64,
}

/// The data an alert template runs on (`.`): Prometheus'
/// `struct { Labels; ExternalLabels; ExternalURL; Value }`.
#[derive(Debug, Clone)]
pub(super) struct Dot {
    pub(super) labels: Arc<LabelMap>,
    pub(super) external_labels: Arc<LabelMap>,
    pub(super) external_url: Arc<str>,
    pub(super) value: f64,
}

/// A point in time and the zone it is shown in (Go's `time.Time`): UTC
/// unless `tz` moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Time {
    /// Seconds since the Unix epoch.
    pub(super) secs: i64,
    /// Nanoseconds within the second, `0..1e9`.
    pub(super) nanos: u32,
    /// Seconds east of UTC of the zone.
    pub(super) offset: i32,
    /// The zone's abbreviation (`UTC`, `CEST`, `+0530`), `abbr_len` bytes.
    abbr: [u8; 6],
    abbr_len: u8,
}

/// One alert of a notification: Alertmanager's `template.Alert`, plus
/// Minos' `AckedBy`.
#[derive(Debug)]
pub(super) struct AlertV {
    pub(super) status: Arc<str>,
    pub(super) labels: Arc<LabelMap>,
    pub(super) annotations: Arc<LabelMap>,
    pub(super) starts_at: Time,
    pub(super) ends_at: Time,
    pub(super) generator_url: Arc<str>,
    pub(super) fingerprint: Arc<str>,
    pub(super) acked_by: Arc<str>,
}

/// The data a notification template runs on: Alertmanager's
/// `template.Data`, plus Minos' `GroupKey` and `Escalated`.
#[derive(Debug)]
pub(super) struct DataV {
    pub(super) receiver: Arc<str>,
    pub(super) status: Arc<str>,
    pub(super) alerts: Arc<[Arc<AlertV>]>,
    pub(super) group_labels: Arc<LabelMap>,
    pub(super) common_labels: Arc<LabelMap>,
    pub(super) common_annotations: Arc<LabelMap>,
    pub(super) external_url: Arc<str>,
    pub(super) group_key: Arc<str>,
    pub(super) escalated: bool,
}

/// Alertmanager's `template.Pairs`: name/value pairs in `SortedPairs` order.
pub(super) type Pairs = Arc<[(Arc<str>, Arc<str>)]>;

/// `KV.SortedPairs`: `alertname` first, then the other names in order.
pub(super) fn sorted_pairs(m: &LabelMap) -> Pairs {
    let first = m.get_key_value("alertname");
    first
        .into_iter()
        .chain(m.iter().filter(|(k, _)| k.as_str() != "alertname"))
        .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
        .collect()
}

/// Deepest nesting of the lists and maps a template builds (`list`,
/// `append`, `dict`, `args`). Printing, encoding and dropping them recurse,
/// so this keeps a template from building one that would overflow the stack.
pub(super) const MAX_VALUE_DEPTH: usize = 100;

/// A list or map built by a template, with how deeply it nests (1 plus the
/// deepest list or map inside), known when it is built so that checking
/// [`MAX_VALUE_DEPTH`] does not walk the value.
#[derive(Debug)]
pub(super) struct Nested<T> {
    items: T,
    depth: usize,
}

impl<T> Deref for Nested<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.items
    }
}

/// A value during execution.
#[derive(Debug, Clone)]
pub(super) enum Value {
    /// Go's untyped nil / invalid value (a missing map entry of an
    /// `interface{}` map, `nil`, the dot of a `{{template}}` without data).
    Nil,
    Bool(bool),
    /// Go's `int`.
    Int(i64),
    /// Go's `float64`.
    Float(f64),
    Str(Arc<str>),
    /// `map[string]string`: `$labels`, `$externalLabels`, a sample's labels.
    Labels(Arc<LabelMap>),
    /// `map[string]interface {}`: the result of `args` and `dict`.
    Map(Arc<Nested<BTreeMap<String, Value>>>),
    /// `[]interface {}`: the result of `list` and `append`.
    List(Arc<Nested<Vec<Value>>>),
    Sample(Arc<Sample>),
    /// `query`'s result (`template.queryResult`).
    Samples(Arc<[Arc<Sample>]>),
    Time(Time),
    Dot(Arc<Dot>),
    /// `time.Duration`, in nanoseconds (`since`, `Time.Sub`).
    Duration(i64),
    /// `template.HTML`: `safeHtml`'s result, printed unescaped in HTML fields.
    Html(Arc<str>),
    /// `template.URL`: `safeUrl`'s result, which HTML fields do not filter
    /// for unsafe schemes.
    Url(Arc<str>),
    /// `[]string`: `stringSlice`, `KV.Names`, `KV.Values`.
    Strings(Arc<[Arc<str>]>),
    /// `template.KV`: the label and annotation maps of notifications.
    Kv(Arc<LabelMap>),
    /// `template.Pairs`.
    Pairs(Pairs),
    /// `template.Pair`: element `.1` of the pairs.
    Pair(Pairs, usize),
    /// `template.Alerts` (with the `Firing` and `Resolved` methods) when the
    /// flag is set, else `[]template.Alert` (what those methods return).
    Alerts(Arc<[Arc<AlertV>]>, bool),
    Alert(Arc<AlertV>),
    /// The notification data, `*template.Data`.
    Data(Arc<DataV>),
}

impl Value {
    pub(super) fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    /// How deeply lists and maps nest in this value (0 for anything else).
    pub(super) fn depth(&self) -> usize {
        match self {
            Value::List(l) => l.depth,
            Value::Map(m) => m.depth,
            _ => 0,
        }
    }

    /// A `[]interface {}` of `items`, unless it would nest deeper than
    /// [`MAX_VALUE_DEPTH`].
    pub(super) fn list(items: Vec<Value>) -> Result<Value, String> {
        let depth = nested_depth(items.iter())?;
        Ok(Value::List(Arc::new(Nested { items, depth })))
    }

    /// A `map[string]interface {}` of `entries`, unless it would nest deeper
    /// than [`MAX_VALUE_DEPTH`].
    pub(super) fn map(entries: BTreeMap<String, Value>) -> Result<Value, String> {
        let depth = nested_depth(entries.values())?;
        Ok(Value::Map(Arc::new(Nested {
            items: entries,
            depth,
        })))
    }

    /// Go's `%T`.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Labels(_) => "map[string]string",
            Value::Map(_) => "map[string]interface {}",
            Value::List(_) => "[]interface {}",
            Value::Sample(_) => "*template.sample",
            Value::Samples(_) => "template.queryResult",
            Value::Time(_) => "*time.Time",
            Value::Dot(_) => {
                "struct { Labels map[string]string; ExternalLabels map[string]string; \
                 ExternalURL string; Value interface {} }"
            }
            Value::Duration(_) => "time.Duration",
            Value::Html(_) => "template.HTML",
            Value::Url(_) => "template.URL",
            Value::Strings(_) => "[]string",
            Value::Kv(_) => "template.KV",
            Value::Pairs(_) => "template.Pairs",
            Value::Pair(..) => "template.Pair",
            Value::Alerts(_, true) => "template.Alerts",
            Value::Alerts(_, false) => "[]template.Alert",
            Value::Alert(_) => "template.Alert",
            Value::Data(_) => "*template.Data",
        }
    }

    /// Go's `isTrue`: the zero value of each type, and empty collections,
    /// are false.
    pub(super) fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Labels(m) => !m.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Samples(s) => !s.is_empty(),
            Value::Duration(d) => *d != 0,
            Value::Html(s) | Value::Url(s) => !s.is_empty(),
            Value::Strings(l) => !l.is_empty(),
            Value::Kv(m) => !m.is_empty(),
            Value::Pairs(p) => !p.is_empty(),
            Value::Alerts(l, _) => !l.is_empty(),
            Value::Sample(_)
            | Value::Time(_)
            | Value::Dot(_)
            | Value::Pair(..)
            | Value::Alert(_)
            | Value::Data(_) => true,
        }
    }
}

/// The depth of a list or map holding `items`.
fn nested_depth<'a>(items: impl Iterator<Item = &'a Value>) -> Result<usize, String> {
    let depth = 1 + items.map(Value::depth).max().unwrap_or(0);
    if depth > MAX_VALUE_DEPTH {
        return Err(format!(
            "value nested deeper than {MAX_VALUE_DEPTH} levels of lists and maps"
        ));
    }
    Ok(depth)
}

/// A date and time of day in UTC.
pub(super) struct Civil {
    pub(super) year: i64,
    pub(super) month: u32,
    pub(super) day: u32,
    pub(super) hour: u32,
    pub(super) minute: u32,
    pub(super) second: u32,
    /// Days since January 1st, 0-based.
    pub(super) yday: u32,
    /// 0 = Sunday.
    pub(super) weekday: u32,
}

pub(super) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub(super) const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

impl Time {
    /// Go's zero `time.Time` (January 1st of year 1, UTC), which Minos shows
    /// as the end of a firing alert, like Alertmanager.
    pub(super) const ZERO: Time = Time::utc(-62_135_596_800, 0);

    /// An instant shown in UTC.
    pub(super) const fn utc(secs: i64, nanos: u32) -> Time {
        Time {
            secs,
            nanos,
            offset: 0,
            abbr: *b"UTC\0\0\0",
            abbr_len: 3,
        }
    }

    /// An instant from Unix milliseconds, in UTC.
    pub(super) fn from_millis(ms: i64) -> Time {
        Time::utc(
            ms.div_euclid(1000),
            (ms.rem_euclid(1000) as u32) * 1_000_000,
        )
    }

    /// The same instant shown in a zone `offset` seconds east of UTC whose
    /// abbreviation is `abbr` (cut at 6 bytes).
    pub(super) fn in_zone(self, offset: i32, abbr: &str) -> Time {
        let mut end = abbr.len().min(6);
        while !abbr.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; 6];
        buf[..end].copy_from_slice(&abbr.as_bytes()[..end]);
        Time {
            offset,
            abbr: buf,
            abbr_len: end as u8,
            ..self
        }
    }

    /// The zone's abbreviation.
    pub(super) fn abbr(&self) -> &str {
        std::str::from_utf8(&self.abbr[..usize::from(self.abbr_len)]).unwrap_or("")
    }

    /// Whether this is Go's zero time (`Time.IsZero`).
    pub(super) fn is_zero(&self) -> bool {
        self.secs == Time::ZERO.secs && self.nanos == 0
    }

    /// Prometheus' `floatToTime`: seconds, truncated to milliseconds like
    /// `model.TimeFromUnixNano`.
    pub(super) fn from_float_secs(v: f64) -> Result<Time, String> {
        if v.is_nan() || v.is_infinite() {
            return Err("value is NaN or Inf".into());
        }
        let ns = v * 1e9;
        if !(i64::MIN as f64..i64::MAX as f64).contains(&ns) {
            return Err(format!(
                "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
                super::gofmt::float_v(v)
            ));
        }
        let ms = (ns as i64) / 1_000_000;
        Ok(Time::from_millis(ms))
    }

    /// The date and time of day in the time's zone.
    pub(super) fn civil(&self) -> Civil {
        let local = self.secs.saturating_add(i64::from(self.offset));
        let days = local.div_euclid(86_400);
        let rem = local.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = BEFORE[month as usize - 1] + day - 1 + u32::from(leap && month > 2);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            yday,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// Go's `Time.Format` with a reference-time layout
    /// (`2006-01-02T15:04:05Z07:00`).
    pub(super) fn format(&self, layout: &str) -> String {
        let c = self.civil();
        let mut out = String::new();
        let b = layout.as_bytes();
        let mut i = 0;
        // Literal text between elements is copied as is.
        let mut lit_start = 0;
        while i < b.len() {
            let rest = &layout[i..];
            let std = std_chunk(rest);
            let Some((len, chunk)) = std else {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            };
            out.push_str(&layout[lit_start..i]);
            let hour12 = match c.hour % 12 {
                0 => 12,
                h => h,
            };
            match chunk {
                Chunk::LongMonth => out.push_str(MONTHS[c.month as usize - 1]),
                Chunk::Month => out.push_str(&MONTHS[c.month as usize - 1][..3]),
                Chunk::NumMonth => out.push_str(&c.month.to_string()),
                Chunk::ZeroMonth => out.push_str(&format!("{:02}", c.month)),
                Chunk::LongWeekDay => out.push_str(WEEKDAYS[c.weekday as usize]),
                Chunk::WeekDay => out.push_str(&WEEKDAYS[c.weekday as usize][..3]),
                Chunk::Day => out.push_str(&c.day.to_string()),
                Chunk::UnderDay => out.push_str(&format!("{:>2}", c.day)),
                Chunk::ZeroDay => out.push_str(&format!("{:02}", c.day)),
                Chunk::UnderYearDay => out.push_str(&format!("{:>3}", c.yday + 1)),
                Chunk::ZeroYearDay => out.push_str(&format!("{:03}", c.yday + 1)),
                Chunk::Hour => out.push_str(&format!("{:02}", c.hour)),
                Chunk::Hour12 => out.push_str(&hour12.to_string()),
                Chunk::ZeroHour12 => out.push_str(&format!("{hour12:02}")),
                Chunk::Minute => out.push_str(&c.minute.to_string()),
                Chunk::ZeroMinute => out.push_str(&format!("{:02}", c.minute)),
                Chunk::Second => out.push_str(&c.second.to_string()),
                Chunk::ZeroSecond => out.push_str(&format!("{:02}", c.second)),
                Chunk::LongYear => out.push_str(&format!("{:04}", c.year)),
                Chunk::Year => out.push_str(&format!("{:02}", c.year.rem_euclid(100))),
                Chunk::PM => out.push_str(if c.hour >= 12 { "PM" } else { "AM" }),
                Chunk::Pm => out.push_str(if c.hour >= 12 { "pm" } else { "am" }),
                Chunk::Tz if self.abbr_len > 0 => out.push_str(self.abbr()),
                Chunk::Tz => self.push_offset(&mut out, false, false, false, false),
                Chunk::NumTz {
                    iso,
                    colon,
                    short,
                    secs,
                } => self.push_offset(&mut out, iso, colon, short, secs),
                Chunk::Frac { sep, digits, trim } => {
                    let frac = format!("{:09}", self.nanos);
                    let mut f = &frac[..digits.min(9)];
                    if trim {
                        f = f.trim_end_matches('0');
                    }
                    if !trim || !f.is_empty() {
                        out.push(sep);
                        out.push_str(f);
                        if !trim {
                            push_zeros(&mut out, digits.saturating_sub(9));
                        }
                    }
                }
            }
            i += len;
            lit_start = i;
        }
        out.push_str(&layout[lit_start..]);
        out
    }
}

impl Time {
    /// Go's numeric zone elements (`-0700`, `Z07:00`...): `Z` for UTC in
    /// the ISO forms, else the sign, hours and, unless `short`, minutes and
    /// with `secs` seconds, separated by `:` with `colon`.
    fn push_offset(&self, out: &mut String, iso: bool, colon: bool, short: bool, secs: bool) {
        if iso && self.offset == 0 {
            out.push('Z');
            return;
        }
        let abs = self.offset.unsigned_abs();
        out.push(if self.offset < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", abs / 3600));
        if !short {
            if colon {
                out.push(':');
            }
            out.push_str(&format!("{:02}", abs / 60 % 60));
        }
        if secs {
            if colon {
                out.push(':');
            }
            out.push_str(&format!("{:02}", abs % 60));
        }
    }
}

fn push_zeros(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n('0', n));
}

/// One element of a Go time layout.
enum Chunk {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    /// `-07:00`, `Z07:00` and friends.
    NumTz {
        iso: bool,
        colon: bool,
        short: bool,
        secs: bool,
    },
    Frac {
        sep: char,
        digits: usize,
        trim: bool,
    },
}

fn starts_lower(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// Go's `nextStdChunk`, for a layout element at the start of `s`: its
/// length and kind.
fn std_chunk(s: &str) -> Option<(usize, Chunk)> {
    let b = s.as_bytes();
    let at = |p: &str| s.starts_with(p);
    match b[0] {
        b'J' if at("Jan") => {
            if at("January") {
                Some((7, Chunk::LongMonth))
            } else if !starts_lower(&s[3..]) {
                Some((3, Chunk::Month))
            } else {
                None
            }
        }
        b'M' if at("Mon") => {
            if at("Monday") {
                Some((6, Chunk::LongWeekDay))
            } else if !starts_lower(&s[3..]) {
                Some((3, Chunk::WeekDay))
            } else {
                None
            }
        }
        b'M' if at("MST") => Some((3, Chunk::Tz)),
        b'0' if b.len() >= 2 && (b'1'..=b'6').contains(&b[1]) => Some((
            2,
            match b[1] {
                b'1' => Chunk::ZeroMonth,
                b'2' => Chunk::ZeroDay,
                b'3' => Chunk::ZeroHour12,
                b'4' => Chunk::ZeroMinute,
                b'5' => Chunk::ZeroSecond,
                _ => Chunk::Year,
            },
        )),
        b'0' if at("002") => Some((3, Chunk::ZeroYearDay)),
        b'1' if at("15") => Some((2, Chunk::Hour)),
        b'1' => Some((1, Chunk::NumMonth)),
        b'2' if at("2006") => Some((4, Chunk::LongYear)),
        b'2' => Some((1, Chunk::Day)),
        b'_' if at("_2") => {
            if at("_2006") {
                // A literal `_` followed by the year: the `_` is copied by
                // the caller's literal handling.
                None
            } else {
                Some((2, Chunk::UnderDay))
            }
        }
        b'_' if at("__2") => Some((3, Chunk::UnderYearDay)),
        b'3' => Some((1, Chunk::Hour12)),
        b'4' => Some((1, Chunk::Minute)),
        b'5' => Some((1, Chunk::Second)),
        b'P' if at("PM") => Some((2, Chunk::PM)),
        b'p' if at("pm") => Some((2, Chunk::Pm)),
        b'-' | b'Z' => {
            let iso = b[0] == b'Z';
            // (pattern after the sign, colon, short, secs)
            [
                ("070000", false, false, true),
                ("07:00:00", true, false, true),
                ("0700", false, false, false),
                ("07:00", true, false, false),
                ("07", false, true, false),
            ]
            .into_iter()
            .find(|(p, ..)| s[1..].starts_with(p))
            .map(|(p, colon, short, secs)| {
                (
                    p.len() + 1,
                    Chunk::NumTz {
                        iso,
                        colon,
                        short,
                        secs,
                    },
                )
            })
        }
        b'.' | b',' if b.len() >= 2 && (b[1] == b'0' || b[1] == b'9') => {
            let ch = b[1];
            let mut j = 1;
            while j < b.len() && b[j] == ch {
                j += 1;
            }
            if j < b.len() && b[j].is_ascii_digit() {
                return None;
            }
            Some((
                j,
                Chunk::Frac {
                    sep: char::from(b[0]),
                    digits: j - 1,
                    trim: ch == b'9',
                },
            ))
        }
        _ => None,
    }
}
