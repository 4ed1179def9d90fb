/*!
The functions a template can call: Go's builtins, Prometheus' template
functions and Alertmanager's notification template functions. This file
names them, says which [`Dialect`] has each, gives their signatures (checked
by the executor like Go checks a `FuncMap` function's parameter types) and
implements those that need nothing but their arguments; `query`, `tmpl`,
`since`, the regexp functions and the external URL ones are in `exec.rs`,
which has the state they need, and `toJson`'s encoder is in `json.rs`.
*/

use std::collections::BTreeMap;
use std::sync::Arc;

use super::gofmt;
use super::value::{Sample, Time, Value};

/// Which function set, and which data, a template is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Alert labels and annotations: Prometheus' functions and data.
    Prometheus,
    /// Notifications: Alertmanager's functions and `template.Data`.
    Alertmanager,
}

/// A function known to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    And,
    Or,
    Not,
    Len,
    Index,
    Slice,
    Print,
    Printf,
    Println,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Html,
    Js,
    Urlquery,
    Call,
    Query,
    First,
    Label,
    Value,
    Strvalue,
    SortByLabel,
    Args,
    ReReplaceAll,
    SafeHtml,
    Match,
    Title,
    ToUpper,
    ToLower,
    GraphLink,
    TableLink,
    StripPort,
    StripDomain,
    Humanize,
    Humanize1024,
    HumanizeDuration,
    HumanizePercentage,
    HumanizeTimestamp,
    ToTime,
    PathPrefix,
    ExternalUrl,
    ParseDuration,
    Tmpl,
    TrimSpace,
    Join,
    SafeUrl,
    UrlUnescape,
    StringSlice,
    Date,
    Tz,
    Since,
    ToJson,
    List,
    Append,
    Dict,
}

/// The Go type a parameter has, which decides what an argument may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    /// `interface{}` or `reflect.Value`: anything.
    Any,
    /// `string`.
    Str,
    /// `*sample`: a sample or nil.
    Sample,
    /// `queryResult`: a query result or nil.
    Samples,
    /// `[]string`: a string list or nil.
    Strings,
    /// `time.Time`.
    Time,
    /// `[]interface {}`: a list or nil.
    List,
}

impl Param {
    pub(super) fn go_type(self) -> &'static str {
        match self {
            Param::Any => "interface {}",
            Param::Str => "string",
            Param::Sample => "*template.sample",
            Param::Samples => "template.queryResult",
            Param::Strings => "[]string",
            Param::Time => "time.Time",
            Param::List => "[]interface {}",
        }
    }
}

/// Fixed parameters, then optionally a variadic one.
pub(super) struct Sig {
    pub(super) fixed: &'static [Param],
    pub(super) variadic: Option<Param>,
}

impl Sig {
    /// The type of the `i`th argument.
    pub(super) fn param(&self, i: usize) -> Param {
        self.fixed
            .get(i)
            .copied()
            .unwrap_or(self.variadic.unwrap_or(Param::Any))
    }
}

const ANY: Param = Param::Any;
const STR: Param = Param::Str;

const fn sig(fixed: &'static [Param], variadic: Option<Param>) -> Sig {
    Sig { fixed, variadic }
}

impl Func {
    const ALL: [(&'static str, Func); 58] = [
        ("and", Func::And),
        ("or", Func::Or),
        ("not", Func::Not),
        ("len", Func::Len),
        ("index", Func::Index),
        ("slice", Func::Slice),
        ("print", Func::Print),
        ("printf", Func::Printf),
        ("println", Func::Println),
        ("eq", Func::Eq),
        ("ne", Func::Ne),
        ("lt", Func::Lt),
        ("le", Func::Le),
        ("gt", Func::Gt),
        ("ge", Func::Ge),
        ("html", Func::Html),
        ("js", Func::Js),
        ("urlquery", Func::Urlquery),
        ("call", Func::Call),
        ("query", Func::Query),
        ("first", Func::First),
        ("label", Func::Label),
        ("value", Func::Value),
        ("strvalue", Func::Strvalue),
        ("sortByLabel", Func::SortByLabel),
        ("args", Func::Args),
        ("reReplaceAll", Func::ReReplaceAll),
        ("safeHtml", Func::SafeHtml),
        ("match", Func::Match),
        ("title", Func::Title),
        ("toUpper", Func::ToUpper),
        ("toLower", Func::ToLower),
        ("graphLink", Func::GraphLink),
        ("tableLink", Func::TableLink),
        ("stripPort", Func::StripPort),
        ("stripDomain", Func::StripDomain),
        ("humanize", Func::Humanize),
        ("humanize1024", Func::Humanize1024),
        ("humanizeDuration", Func::HumanizeDuration),
        ("humanizePercentage", Func::HumanizePercentage),
        ("humanizeTimestamp", Func::HumanizeTimestamp),
        ("toTime", Func::ToTime),
        ("pathPrefix", Func::PathPrefix),
        ("externalURL", Func::ExternalUrl),
        ("parseDuration", Func::ParseDuration),
        ("tmpl", Func::Tmpl),
        ("trimSpace", Func::TrimSpace),
        ("join", Func::Join),
        ("safeUrl", Func::SafeUrl),
        ("urlUnescape", Func::UrlUnescape),
        ("stringSlice", Func::StringSlice),
        ("date", Func::Date),
        ("tz", Func::Tz),
        ("since", Func::Since),
        ("toJson", Func::ToJson),
        ("list", Func::List),
        ("append", Func::Append),
        ("dict", Func::Dict),
    ];

    /// The function called `name` in `dialect`, if it has one.
    pub(super) fn lookup(name: &str, dialect: Dialect) -> Option<Func> {
        Func::ALL
            .iter()
            .find(|(n, f)| *n == name && f.in_dialect(dialect))
            .map(|(_, f)| *f)
    }

    /// Whether templates of `d` have this function: Go's builtins are
    /// everywhere, the rest as Prometheus and Alertmanager define them.
    fn in_dialect(self, d: Dialect) -> bool {
        use Func as F;
        match self {
            F::And
            | F::Or
            | F::Not
            | F::Len
            | F::Index
            | F::Slice
            | F::Print
            | F::Printf
            | F::Println
            | F::Eq
            | F::Ne
            | F::Lt
            | F::Le
            | F::Gt
            | F::Ge
            | F::Html
            | F::Js
            | F::Urlquery
            | F::Call
            | F::ReReplaceAll
            | F::SafeHtml
            | F::Match
            | F::Title
            | F::ToUpper
            | F::ToLower
            | F::HumanizeDuration => true,
            F::TrimSpace
            | F::Join
            | F::SafeUrl
            | F::UrlUnescape
            | F::StringSlice
            | F::Date
            | F::Tz
            | F::Since
            | F::ToJson
            | F::List
            | F::Append
            | F::Dict => d == Dialect::Alertmanager,
            _ => d == Dialect::Prometheus,
        }
    }

    pub(super) fn name(self) -> &'static str {
        Func::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    pub(super) fn sig(self) -> Sig {
        use Func as F;
        match self {
            F::And | F::Or | F::Eq | F::Index | F::Slice | F::Call => sig(&[ANY], Some(ANY)),
            F::Not | F::Len => sig(&[ANY], None),
            F::Print | F::Println | F::Html | F::Js | F::Urlquery | F::Args => sig(&[], Some(ANY)),
            F::Printf => sig(&[STR], Some(ANY)),
            F::Ne | F::Lt | F::Le | F::Gt | F::Ge => sig(&[ANY, ANY], None),
            F::Query
            | F::SafeHtml
            | F::Title
            | F::ToUpper
            | F::ToLower
            | F::GraphLink
            | F::TableLink
            | F::StripPort
            | F::StripDomain
            | F::ParseDuration => sig(&[STR], None),
            F::First => sig(&[Param::Samples], None),
            F::Label => sig(&[STR, Param::Sample], None),
            F::Value | F::Strvalue => sig(&[Param::Sample], None),
            F::SortByLabel => sig(&[STR, Param::Samples], None),
            F::ReReplaceAll => sig(&[STR, STR, STR], None),
            F::Match => sig(&[STR, STR], None),
            F::Humanize
            | F::Humanize1024
            | F::HumanizeDuration
            | F::HumanizePercentage
            | F::HumanizeTimestamp
            | F::ToTime => sig(&[ANY], None),
            F::PathPrefix | F::ExternalUrl => sig(&[], None),
            F::Tmpl => sig(&[STR, ANY], None),
            F::TrimSpace | F::SafeUrl | F::UrlUnescape => sig(&[STR], None),
            F::Join => sig(&[STR, Param::Strings], None),
            F::StringSlice => sig(&[], Some(STR)),
            F::Date | F::Tz => sig(&[STR, Param::Time], None),
            F::Since => sig(&[Param::Time], None),
            F::ToJson => sig(&[ANY], None),
            F::List | F::Dict => sig(&[], Some(ANY)),
            F::Append => sig(&[Param::List], Some(ANY)),
        }
    }
}

type FResult = Result<Value, String>;

// ---- Comparisons (Go's eq, lt and friends) ----

/// Go's `basicKind`, with int and float merged into one numeric kind so
/// that `gt $value 90` works (Go rejects comparing float64 with int).
enum Basic<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

fn basic(v: &Value) -> Option<Basic<'_>> {
    match v {
        Value::Bool(b) => Some(Basic::Bool(*b)),
        Value::Int(n) | Value::Duration(n) => Some(Basic::Int(*n)),
        Value::Float(f) => Some(Basic::Float(*f)),
        Value::Str(s) | Value::Html(s) | Value::Url(s) => Some(Basic::Str(s)),
        _ => None,
    }
}

const BAD_COMPARISON: &str = "incompatible types for comparison";
const BAD_COMPARISON_TYPE: &str = "invalid type for comparison";

/// Compares an int with a float exactly.
fn cmp_int_float(i: i64, f: f64) -> Option<std::cmp::Ordering> {
    (i as f64).partial_cmp(&f)
}

fn eq2(a: &Value, b: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    match (basic(a), basic(b)) {
        (Some(x), Some(y)) => match (x, y) {
            (Basic::Bool(x), Basic::Bool(y)) => Ok(x == y),
            (Basic::Int(x), Basic::Int(y)) => Ok(x == y),
            (Basic::Float(x), Basic::Float(y)) => Ok(x == y),
            (Basic::Int(x), Basic::Float(y)) | (Basic::Float(y), Basic::Int(x)) => {
                Ok(cmp_int_float(x, y) == Some(Ordering::Equal))
            }
            (Basic::Str(x), Basic::Str(y)) => Ok(x == y),
            _ => Err(BAD_COMPARISON.into()),
        },
        _ => match (a, b) {
            (Value::Nil, Value::Nil) => Ok(true),
            (Value::Nil, _) | (_, Value::Nil) => Ok(false),
            (Value::Sample(x), Value::Sample(y)) => Ok(Arc::ptr_eq(x, y)),
            (Value::Time(x), Value::Time(y)) => Ok(x == y),
            (x, y) if basic(x).is_some() || basic(y).is_some() => {
                if std::mem::discriminant(x) == std::mem::discriminant(y) {
                    Ok(false)
                } else {
                    Err(BAD_COMPARISON.into())
                }
            }
            (x, _) => Err(format!("non-comparable type {}", x.type_name())),
        },
    }
}

/// `eq a b c...`: whether `a` equals any of the others.
pub(super) fn eq(args: &[Value]) -> FResult {
    let (first, rest) = args
        .split_first()
        .ok_or("missing argument for comparison")?;
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    for b in rest {
        if eq2(first, b)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn lt2(a: &Value, b: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let (Some(x), Some(y)) = (basic(a), basic(b)) else {
        return Err(BAD_COMPARISON_TYPE.into());
    };
    match (x, y) {
        (Basic::Bool(_), Basic::Bool(_)) => Err(BAD_COMPARISON_TYPE.into()),
        (Basic::Int(x), Basic::Int(y)) => Ok(x < y),
        (Basic::Float(x), Basic::Float(y)) => Ok(x < y),
        (Basic::Int(x), Basic::Float(y)) => Ok(cmp_int_float(x, y) == Some(Ordering::Less)),
        (Basic::Float(x), Basic::Int(y)) => Ok(cmp_int_float(y, x) == Some(Ordering::Greater)),
        (Basic::Str(x), Basic::Str(y)) => Ok(x < y),
        _ => Err(BAD_COMPARISON.into()),
    }
}

/// `lt`, `le`, `gt`, `ge` and `ne` as Go defines them from `lt` and `eq`
/// (so `gt NaN 1` is true, like in Go).
pub(super) fn compare(f: Func, a: &Value, b: &Value) -> FResult {
    let le = |a: &Value, b: &Value| -> Result<bool, String> {
        if lt2(a, b)? {
            return Ok(true);
        }
        eq2(a, b)
    };
    let r = match f {
        Func::Ne => !eq2(a, b)?,
        Func::Lt => lt2(a, b)?,
        Func::Le => le(a, b)?,
        Func::Gt => !le(a, b)?,
        _ => !lt2(a, b)?,
    };
    Ok(Value::Bool(r))
}

// ---- Collections ----

pub(super) fn len(v: &Value) -> FResult {
    let n = match v {
        Value::Str(s) | Value::Html(s) | Value::Url(s) => s.len(),
        Value::Labels(m) | Value::Kv(m) => m.len(),
        Value::Map(m) => m.len(),
        Value::List(l) => l.len(),
        Value::Samples(s) => s.len(),
        Value::Strings(l) => l.len(),
        Value::Pairs(p) => p.len(),
        Value::Alerts(l, _) => l.len(),
        Value::Nil => return Err("len of nil pointer".into()),
        other => return Err(format!("len of type {}", other.type_name())),
    };
    Ok(Value::Int(n as i64))
}

/// Go's `indexArg`: an integer index below `cap`.
fn index_arg(v: &Value, cap: usize) -> Result<usize, String> {
    let x = match v {
        Value::Int(n) => *n,
        Value::Nil => return Err("cannot index slice/array with nil".into()),
        other => {
            return Err(format!(
                "cannot index slice/array with type {}",
                other.type_name()
            ));
        }
    };
    match usize::try_from(x) {
        Ok(i) if i <= cap => Ok(i),
        _ => Err(format!("index out of range: {x}")),
    }
}

pub(super) fn index(args: &[Value]) -> FResult {
    let (item, indexes) = args.split_first().ok_or("index of untyped nil")?;
    let mut item = item.clone();
    if matches!(item, Value::Nil) {
        return Err("index of untyped nil".into());
    }
    for ix in indexes {
        item = match &item {
            Value::Str(s) => {
                let i = index_arg(ix, s.len())?;
                let b = *s
                    .as_bytes()
                    .get(i)
                    .ok_or_else(|| format!("index out of range: {i}"))?;
                Value::Int(i64::from(b))
            }
            Value::Samples(list) => {
                let i = index_arg(ix, list.len())?;
                Value::Sample(
                    list.get(i)
                        .ok_or_else(|| format!("index out of range: {i}"))?
                        .clone(),
                )
            }
            Value::Strings(list) => {
                let i = index_arg(ix, list.len())?;
                Value::Str(
                    list.get(i)
                        .ok_or_else(|| format!("index out of range: {i}"))?
                        .clone(),
                )
            }
            Value::List(list) => {
                let i = index_arg(ix, list.len())?;
                list.get(i)
                    .ok_or_else(|| format!("index out of range: {i}"))?
                    .clone()
            }
            Value::Pairs(p) => {
                let i = index_arg(ix, p.len())?;
                if i >= p.len() {
                    return Err(format!("index out of range: {i}"));
                }
                Value::Pair(p.clone(), i)
            }
            Value::Alerts(list, _) => {
                let i = index_arg(ix, list.len())?;
                Value::Alert(
                    list.get(i)
                        .ok_or_else(|| format!("index out of range: {i}"))?
                        .clone(),
                )
            }
            Value::Labels(m) | Value::Kv(m) => match ix {
                Value::Str(k) => Value::str(m.get(&**k).map_or("", String::as_str)),
                Value::Nil => return Err("value is nil; should be of type string".into()),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ));
                }
            },
            Value::Map(m) => match ix {
                Value::Str(k) => m.get(&**k).cloned().unwrap_or(Value::Nil),
                Value::Nil => return Err("value is nil; should be of type string".into()),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ));
                }
            },
            Value::Nil => return Err("index of nil pointer".into()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

pub(super) fn slice(args: &[Value]) -> FResult {
    let (item, indexes) = args.split_first().ok_or("slice of untyped nil")?;
    if matches!(item, Value::Nil) {
        return Err("slice of untyped nil".into());
    }
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match item {
        Value::Str(s) => {
            if indexes.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::Samples(s) => s.len(),
        Value::Strings(l) => l.len(),
        Value::List(l) => l.len(),
        Value::Pairs(p) => p.len(),
        Value::Alerts(l, _) => l.len(),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    let mut idx = [0, len, len];
    for (i, ix) in indexes.iter().enumerate() {
        idx[i] = index_arg(ix, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    Ok(match item {
        Value::Str(s) => {
            let bytes = &s.as_bytes()[idx[0]..idx[1]];
            Value::str(&String::from_utf8_lossy(bytes))
        }
        Value::Samples(list) => Value::Samples(list[idx[0]..idx[1]].into()),
        Value::Strings(l) => Value::Strings(l[idx[0]..idx[1]].into()),
        Value::List(l) => Value::list(l[idx[0]..idx[1]].to_vec())?,
        Value::Pairs(p) => Value::Pairs(p[idx[0]..idx[1]].into()),
        Value::Alerts(l, typed) => Value::Alerts(l[idx[0]..idx[1]].into(), *typed),
        _ => Value::Nil,
    })
}

// ---- Escaping ----

/// Go's `evalArgs` for `html`, `js` and `urlquery`: a single string as is,
/// anything else as `fmt.Sprint` prints it.
pub(super) fn eval_args(args: &[Value]) -> String {
    if let [Value::Str(s)] = args {
        return s.to_string();
    }
    let printable: Vec<Value> = args
        .iter()
        .map(|a| match a {
            Value::Nil => Value::str("<no value>"),
            other => other.clone(),
        })
        .collect();
    gofmt::sprint(&printable)
}

/// `template.HTMLEscapeString`.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `template.JSEscapeString`.
pub(super) fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if c.is_ascii() || gofmt::is_print(c) => out.push(c),
            c => out.push_str(&format!("\\u{:04X}", c as u32)),
        }
    }
    out
}

/// `url.QueryEscape`.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---- Prometheus' functions ----

/// Prometheus' `convertToFloat`.
pub(super) fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(n) => Ok(*n as f64),
        Value::Duration(ns) => Ok(*ns as f64 / 1e9),
        Value::Str(s) => parse_go_float(s).ok_or_else(|| {
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                gofmt::quote(s)
            )
        }),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

/// `strconv.ParseFloat(s, 64)` for decimal numbers, infinities and NaN.
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    let special = matches!(lower.as_str(), "inf" | "infinity" | "nan");
    if !special
        && !lower
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-' | '_'))
    {
        return None;
    }
    if lower == "nan" && body.len() != s.len() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// `fmt.Sprintf("%.4g", v)`.
fn g4(v: f64) -> String {
    gofmt::format_float(v, 'g', Some(4))
}

pub(super) fn humanize(v: &Value) -> FResult {
    let mut v = to_float(v)?;
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return Ok(Value::str(&g4(v)));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    Ok(Value::str(&format!("{}{prefix}", g4(v))))
}

pub(super) fn humanize1024(v: &Value) -> FResult {
    let mut v = to_float(v)?;
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return Ok(Value::str(&g4(v)));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    Ok(Value::str(&format!("{}{prefix}", g4(v))))
}

pub(super) fn humanize_duration(v: &Value) -> FResult {
    let mut v = to_float(v)?;
    if v.is_nan() || v.is_infinite() {
        return Ok(Value::str(&g4(v)));
    }
    if v == 0.0 {
        return Ok(Value::str(&format!("{}s", g4(v))));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        // Go's int64(v): truncation, saturating here instead of wrapping.
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
        let s = if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", g4(v))
        };
        return Ok(Value::str(&s));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    Ok(Value::str(&format!("{}{prefix}s", g4(v))))
}

pub(super) fn humanize_percentage(v: &Value) -> FResult {
    let v = to_float(v)?;
    Ok(Value::str(&format!("{}%", g4(v * 100.0))))
}

pub(super) fn humanize_timestamp(v: &Value) -> FResult {
    let v = to_float(v)?;
    if v.is_nan() || v.is_infinite() {
        return Ok(Value::str(&g4(v)));
    }
    Ok(Value::str(&Time::from_float_secs(v)?.to_string()))
}

pub(super) fn to_time(v: &Value) -> FResult {
    Ok(Value::Time(Time::from_float_secs(to_float(v)?)?))
}

/// `cases.Title(language.AmericanEnglish, cases.NoLower)`, which current
/// Prometheus uses: the first cased letter of each word is upper-cased;
/// words break at white space and punctuation, except that a single `'`,
/// `.`, `:` or `’` between letters does not break a word (`don't` →
/// `Don't`, where older Prometheus' `strings.Title` gave `Don'T`).
/// With `lower_rest` (Alertmanager's `cases.Title(language.AmericanEnglish)`)
/// the other letters of each word are lower-cased: `hELLO` → `Hello`.
pub(super) fn title(s: &str, lower_rest: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut mid_word = false;
    let mut prev_mid = false;
    for c in s.chars() {
        let is_mid = matches!(
            c,
            '\'' | '.' | ':' | '\u{2019}' | '\u{2018}' | '\u{B7}' | '\u{2024}' | '\u{FE52}'
        );
        if prev_mid && is_mid {
            mid_word = false;
        }
        if c.is_lowercase() || c.is_uppercase() {
            if mid_word {
                if lower_rest {
                    out.push_str(&map_case(&c.to_string(), false));
                } else {
                    out.push(c);
                }
            } else {
                let mut up = c.to_uppercase();
                match (up.next(), up.next()) {
                    (Some(u), None) => out.push(u),
                    _ => out.push(c),
                }
                mid_word = true;
            }
        } else {
            out.push(c);
            let word_char = c.is_alphanumeric() || c == '_' || is_mid || is_mark(c);
            if !word_char {
                mid_word = false;
            }
        }
        prev_mid = is_mid;
    }
    out
}

/// Combining marks, which continue a word.
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x300..=0x36F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// `strings.ToUpper`/`ToLower`: rune by rune, keeping runes whose mapping
/// is not a single rune.
pub(super) fn map_case(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            let mapped: Vec<char> = if upper {
                c.to_uppercase().collect()
            } else {
                c.to_lowercase().collect()
            };
            match mapped.as_slice() {
                [m] => *m,
                _ => c,
            }
        })
        .collect()
}

/// `net.SplitHostPort`.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    let i = hp.rfind(':')?;
    let (host, j, k);
    if hp.starts_with('[') {
        let end = hp.find(']')?;
        if end + 1 != i {
            return None;
        }
        host = &hp[1..end];
        (j, k) = (1, end + 1);
    } else {
        host = &hp[..i];
        if host.contains(':') {
            return None;
        }
        (j, k) = (0, 0);
    }
    if hp[j..].contains('[') || hp[k..].contains(']') {
        return None;
    }
    Some((host, &hp[i + 1..]))
}

pub(super) fn strip_port(hp: &str) -> String {
    match split_host_port(hp) {
        Some((host, _)) => host.to_string(),
        None => hp.to_string(),
    }
}

pub(super) fn strip_domain(hp: &str) -> String {
    let (host, port) = split_host_port(hp).unwrap_or((hp, ""));
    if host.parse::<std::net::IpAddr>().is_ok() {
        return hp.to_string();
    }
    let host = host.split('.').next().unwrap_or_default();
    if port.is_empty() {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Prometheus' `model.ParseDuration` (`1h30m`, `5m`, `1w`, `250ms`...) in
/// seconds.
pub(super) fn parse_duration(s: &str) -> FResult {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    if s == "0" {
        return Ok(Value::Float(0.0));
    }
    let invalid = || format!("not a valid duration string: {}", gofmt::quote(s));
    let mut rest = s;
    let mut next_unit = 0;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "duration out of range")?;
        rest = &rest[digits..];
        // "ms" before "m" so that "5ms" is not read as minutes.
        let unit = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .ok_or_else(invalid)?;
        let (i, (u, ms)) = unit;
        rest = &rest[u.len()..];
        next_unit = i + 1;
        total_ms = n
            .checked_mul(*ms)
            .and_then(|v| total_ms.checked_add(v))
            .filter(|v| *v <= i64::MAX as u64 / 1_000_000)
            .ok_or("duration out of range")?;
    }
    Ok(Value::Float(total_ms as f64 / 1000.0))
}

pub(super) fn graph_link(expr: &str, tab: u8) -> String {
    format!("/graph?g0.expr={}&g0.tab={tab}", query_escape(expr))
}

/// `args`: `map[arg0:... arg1:...]`.
pub(super) fn args_map(args: &[Value]) -> FResult {
    let m: BTreeMap<String, Value> = args
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("arg{i}"), a.clone()))
        .collect();
    Value::map(m)
}

pub(super) fn first(v: &Value) -> FResult {
    match v {
        Value::Samples(list) if !list.is_empty() => Ok(Value::Sample(list[0].clone())),
        _ => Err("first() called on vector with no elements".into()),
    }
}

const NIL_DEREF: &str = "runtime error: invalid memory address or nil pointer dereference";

fn sample(v: &Value) -> Result<&Sample, String> {
    match v {
        Value::Sample(s) => Ok(s),
        _ => Err(NIL_DEREF.into()),
    }
}

pub(super) fn label(name: &str, v: &Value) -> FResult {
    let s = sample(v)?;
    Ok(Value::str(s.labels.get(name).map_or("", String::as_str)))
}

pub(super) fn value(v: &Value) -> FResult {
    Ok(Value::Float(sample(v)?.value))
}

pub(super) fn strvalue(v: &Value) -> FResult {
    let s = sample(v)?;
    Ok(Value::str(
        s.labels.get("__value__").map_or("", String::as_str),
    ))
}

pub(super) fn sort_by_label(name: &str, v: &Value) -> FResult {
    let Value::Samples(list) = v else {
        return Ok(Value::Nil);
    };
    let mut sorted: Vec<Arc<Sample>> = list.to_vec();
    let key = |s: &Arc<Sample>| s.labels.get(name).cloned().unwrap_or_default();
    sorted.sort_by_key(key);
    Ok(Value::Samples(sorted.into()))
}

// ---- Alertmanager's functions ----

/// `list a b c`: a `[]interface {}` of the arguments.
pub(super) fn list(args: &[Value]) -> FResult {
    Value::list(args.to_vec())
}

/// `append list a b`: a new list of `list`'s elements, then the others
/// (`list` is a `[]interface {}` or nil, as its parameter type says).
pub(super) fn append(args: &[Value]) -> FResult {
    let (head, rest) = args.split_first().ok_or("append needs a list")?;
    let mut items = match head {
        Value::List(l) => l.to_vec(),
        _ => Vec::new(),
    };
    items.extend_from_slice(rest);
    Value::list(items)
}

/// `dict k1 v1 k2 v2`: a `map[string]interface {}`; a later key replaces
/// an earlier one, as in Go. The messages are Alertmanager's.
pub(super) fn dict(args: &[Value]) -> FResult {
    if !args.len().is_multiple_of(2) {
        return Err(DICT_ODD.into());
    }
    let mut m = BTreeMap::new();
    for kv in args.chunks_exact(2) {
        let Value::Str(k) = &kv[0] else {
            return Err(DICT_KEY.into());
        };
        m.insert(k.to_string(), kv[1].clone());
    }
    Value::map(m)
}

/// `dict`'s error for an odd number of arguments.
pub(super) const DICT_ODD: &str = "dict requires an even number of arguments";
/// `dict`'s error for a key that is not a string.
pub(super) const DICT_KEY: &str = "dict keys must be strings";

/// `join sep list`: `strings.Join` with the separator first.
pub(super) fn join(sep: &str, list: &Value) -> FResult {
    let Value::Strings(l) = list else {
        return Ok(Value::str(""));
    };
    let mut out = String::new();
    for (i, e) in l.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(e);
        if out.len() > super::exec::MAX_OUTPUT {
            return Err(format!("result exceeds {} bytes", super::exec::MAX_OUTPUT));
        }
    }
    Ok(Value::Str(Arc::from(out)))
}

/// `url.QueryUnescape`: `%XX` escapes and `+` as a space.
pub(super) fn url_unescape(s: &str) -> FResult {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| char::from(c).to_digit(16);
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        let esc = String::from_utf8_lossy(&b[i..end]);
                        return Err(format!("invalid URL escape {}", gofmt::quote(&esc)));
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Value::str(&String::from_utf8_lossy(&out)))
}

/// `tz name t`: `t` shown in the IANA zone `name` (Go's `LoadLocation`:
/// `""` and `UTC` are UTC, `Local` is the system's zone).
pub(super) fn tz(name: &str, t: Time) -> FResult {
    let zone = match name {
        "" | "UTC" => return Ok(Value::Time(t.in_zone(0, "UTC"))),
        "Local" => jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        _ => {
            if name.contains("..") || name.starts_with(['/', '\\']) {
                return Err("time: invalid location name".into());
            }
            jiff::tz::TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))?
        }
    };
    let ts = jiff::Timestamp::new(t.secs, t.nanos as i32)
        .map_err(|e| format!("time out of range: {e}"))?;
    let info = zone.to_offset_info(ts);
    Ok(Value::Time(
        t.in_zone(info.offset().seconds(), info.abbreviation()),
    ))
}
