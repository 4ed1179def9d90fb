/*!
Go's `fmt` and `strconv` formatting, as far as templates can reach it: `%v` of
every template value, `print`/`println`'s spacing rules, and `printf` with its
flags, widths, precisions, argument indexes and `%!verb(type=value)` error
markers.

Floats are formatted like `strconv.FormatFloat`: the shortest digits that
round-trip (`%v`, `%g`) or correctly rounded fixed digits (`%e`, `%f`,
`%.4g`), with ties to even on the exact binary value. Rust's own formatter
produces the same digit strings, so it is used for the digits and Go's layout
rules are applied on top.
*/

use super::value::{Time, Value};

/// Go's `fmt` flags and sizes of one verb.
#[derive(Debug, Clone, Copy, Default)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    /// `%+v`: print struct field names.
    plus_v: bool,
    wid: Option<usize>,
    prec: Option<usize>,
}

/// Go's `tooLarge`: widths and precisions above this are rejected.
const MAX_WIDTH: usize = 1_000_000;

/// Printing a list or map stops once the text is longer than this: lists
/// and maps may share their elements, so a small value can print as a huge
/// text. The text is then over the caller's output limit, which reports it.
const MAX_NESTED_OUTPUT: usize = super::exec::MAX_OUTPUT;

/// `fmt.Sprint(v)`: the `%v` form of one value, as an action prints it
/// (the caller turns a missing value into `<no value>`).
pub(super) fn sprint_value(v: &Value) -> String {
    let mut out = String::new();
    print_arg(&mut out, v, 'v', &Spec::default());
    out
}

/// `fmt.Sprint(args...)`: spaces between operands when neither is a string.
pub(super) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::Str(_) | Value::Html(_) | Value::Url(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        print_arg(&mut out, a, 'v', &Spec::default());
        prev_string = is_string;
    }
    out
}

/// `fmt.Sprintln(args...)`: spaces between all operands, then a newline.
pub(super) fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        print_arg(&mut out, a, 'v', &Spec::default());
    }
    out.push('\n');
    out
}

/// `fmt.Sprintf(format, args...)`. Fails only when the result would exceed
/// `limit` bytes.
pub(super) fn sprintf(format: &str, args: &[Value], limit: usize) -> Result<String, String> {
    let b = format.as_bytes();
    let end = b.len();
    let mut out = String::new();
    let mut arg_num = 0usize;
    let mut reordered = false;
    let mut i = 0usize;
    while i < end {
        let lasti = i;
        while i < end && b[i] != b'%' {
            i += 1;
        }
        out.push_str(&format[lasti..i]);
        if i >= end {
            break;
        }
        i += 1; // skip '%'
        let mut s = Spec::default();
        let mut good_arg_num = true;
        while i < end {
            match b[i] {
                b'#' => s.sharp = true,
                b'0' => s.zero = !s.minus,
                b'+' => s.plus = true,
                b'-' => {
                    s.minus = true;
                    s.zero = false;
                }
                b' ' => s.space = true,
                _ => break,
            }
            i += 1;
        }
        // Argument index, then width.
        let mut after_index;
        (arg_num, i, after_index) = arg_number(
            arg_num,
            format,
            i,
            args.len(),
            &mut good_arg_num,
            &mut reordered,
        );
        if i < end && b[i] == b'*' {
            i += 1;
            let (w, ok, next) = int_from_arg(args, arg_num);
            arg_num = next;
            if !ok {
                out.push_str("%!(BADWIDTH)");
            } else if w < 0 {
                s.wid = Some(w.unsigned_abs() as usize);
                s.minus = true;
                s.zero = false;
            } else {
                s.wid = Some(w as usize);
            }
            after_index = false;
        } else {
            let (w, present, next) = parse_num(b, i, end);
            i = next;
            if present {
                s.wid = Some(w);
                if after_index {
                    good_arg_num = false;
                }
            }
        }
        // Precision.
        if i < end && b[i] == b'.' {
            i += 1;
            if after_index {
                good_arg_num = false;
            }
            (arg_num, i, after_index) = arg_number(
                arg_num,
                format,
                i,
                args.len(),
                &mut good_arg_num,
                &mut reordered,
            );
            if i < end && b[i] == b'*' {
                i += 1;
                let (p, ok, next) = int_from_arg(args, arg_num);
                arg_num = next;
                if !ok || p < 0 {
                    s.prec = None;
                    out.push_str("%!(BADPREC)");
                } else {
                    s.prec = Some(p as usize);
                }
                after_index = false;
            } else {
                let (p, present, next) = parse_num(b, i, end);
                i = next;
                s.prec = Some(if present { p } else { 0 });
            }
        }
        if !after_index {
            (arg_num, i, _) = arg_number(
                arg_num,
                format,
                i,
                args.len(),
                &mut good_arg_num,
                &mut reordered,
            );
        }
        if i >= end {
            out.push_str("%!(NOVERB)");
            break;
        }
        let verb = format[i..].chars().next().unwrap_or('?');
        i += verb.len_utf8();
        if verb == '%' {
            out.push('%');
        } else if !good_arg_num {
            out.push_str("%!");
            out.push(verb);
            out.push_str("(BADINDEX)");
        } else if arg_num >= args.len() {
            out.push_str("%!");
            out.push(verb);
            out.push_str("(MISSING)");
        } else {
            if verb == 'v' {
                s.plus_v = s.plus;
                s.plus = false;
                // `%#v` (Go syntax) is printed as `%v`.
                s.sharp = false;
            }
            print_arg(&mut out, &args[arg_num], verb, &s);
            arg_num += 1;
        }
        if out.len() > limit {
            return Err(format!("printf output exceeds {limit} bytes"));
        }
    }
    if !reordered && arg_num < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, a) in args[arg_num..].iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            if matches!(a, Value::Nil) {
                out.push_str("<nil>");
            } else {
                out.push_str(a.type_name());
                out.push('=');
                print_arg(&mut out, a, 'v', &Spec::default());
            }
        }
        out.push(')');
    }
    if out.len() > limit {
        return Err(format!("printf output exceeds {limit} bytes"));
    }
    Ok(out)
}

/// Go's `parsenum`: digits at `b[start..end]`. A number above the limit
/// consumes the rest of the format, as in Go.
fn parse_num(b: &[u8], start: usize, end: usize) -> (usize, bool, usize) {
    if start >= end {
        return (0, false, end);
    }
    let mut num = 0usize;
    let mut present = false;
    let mut i = start;
    while i < end && b[i].is_ascii_digit() {
        if num > MAX_WIDTH {
            return (0, false, end);
        }
        num = num * 10 + usize::from(b[i] - b'0');
        present = true;
        i += 1;
    }
    (num, present, i)
}

/// Go's `argNumber`: an explicit `[n]` argument index at `format[i..]`.
fn arg_number(
    arg_num: usize,
    format: &str,
    i: usize,
    num_args: usize,
    good: &mut bool,
    reordered: &mut bool,
) -> (usize, usize, bool) {
    let b = format.as_bytes();
    if i >= b.len() || b[i] != b'[' {
        return (arg_num, i, false);
    }
    *reordered = true;
    let rest = &b[i..];
    if rest.len() < 3 {
        *good = false;
        return (arg_num, i + 1, false);
    }
    // Find the closing bracket.
    for j in 1..rest.len() {
        if rest[j] == b']' {
            let (n, ok, newj) = parse_num(rest, 1, j);
            if !ok || newj != j || n == 0 || n > num_args {
                *good = false;
                return (arg_num, i + j + 1, ok && newj == j);
            }
            return (n - 1, i + j + 1, true);
        }
    }
    *good = false;
    (arg_num, i + 1, false)
}

/// Go's `intFromArg`: a `*` width or precision taken from an argument.
fn int_from_arg(args: &[Value], arg_num: usize) -> (i64, bool, usize) {
    match args.get(arg_num) {
        Some(Value::Int(n)) if n.unsigned_abs() <= MAX_WIDTH as u64 => (*n, true, arg_num + 1),
        Some(_) => (0, false, arg_num + 1),
        None => (0, false, arg_num),
    }
}

/// Go's `printArg`/`printValue`: formats `v` with `verb` into `out`.
fn print_arg(out: &mut String, v: &Value, verb: char, s: &Spec) {
    if verb == 'T' {
        pad(out, v.type_name(), s);
        return;
    }
    match v {
        Value::Nil => match verb {
            'v' => pad(out, "<nil>", s),
            _ => bad_verb(out, v, verb, s),
        },
        Value::Bool(b) => match verb {
            't' | 'v' => pad(out, if *b { "true" } else { "false" }, s),
            _ => bad_verb(out, v, verb, s),
        },
        Value::Int(n) => fmt_int(out, *n, verb, s, v),
        Value::Float(f) => match verb {
            'v' => fmt_float(out, *f, 'g', None, s),
            'g' | 'G' => fmt_float(out, *f, verb, None, s),
            'e' | 'E' | 'f' => fmt_float(out, *f, verb, Some(6), s),
            'F' => fmt_float(out, *f, 'f', Some(6), s),
            _ => bad_verb(out, v, verb, s),
        },
        Value::Str(text) => fmt_string(out, text, verb, s, v),
        Value::Time(t) => match verb {
            'v' | 's' | 'x' | 'X' | 'q' => fmt_string(out, &t.to_string(), verb, s, v),
            _ => bad_verb(out, v, verb, s),
        },
        Value::Labels(m) => {
            out.push_str("map[");
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_string(out, k, verb, s, &Value::Nil);
                out.push(':');
                fmt_string(out, val, verb, s, &Value::Nil);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, val)) in m.iter().enumerate() {
                if out.len() > MAX_NESTED_OUTPUT {
                    break;
                }
                if i > 0 {
                    out.push(' ');
                }
                fmt_string(out, k, verb, s, &Value::Nil);
                out.push(':');
                print_arg(out, val, verb, s);
            }
            out.push(']');
        }
        Value::List(l) => {
            out.push('[');
            for (i, val) in l.iter().enumerate() {
                if out.len() > MAX_NESTED_OUTPUT {
                    break;
                }
                if i > 0 {
                    out.push(' ');
                }
                print_arg(out, val, verb, s);
            }
            out.push(']');
        }
        Value::Sample(smp) => {
            // Go prints `&{...}` for a pointer to a struct at the top level
            // and an address deeper down; the contents are more useful.
            out.push_str("&{");
            if s.plus_v {
                out.push_str("Labels:");
            }
            print_arg(out, &Value::Labels(smp.labels.clone()), verb, s);
            out.push(' ');
            if s.plus_v {
                out.push_str("Value:");
            }
            print_arg(out, &Value::Float(smp.value), verb, s);
            out.push('}');
        }
        Value::Samples(list) => {
            out.push('[');
            for (i, smp) in list.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_arg(out, &Value::Sample(smp.clone()), verb, s);
            }
            out.push(']');
        }
        Value::Dot(d) => {
            let fields = [
                ("Labels", Value::Labels(d.labels.clone())),
                ("ExternalLabels", Value::Labels(d.external_labels.clone())),
                ("ExternalURL", Value::Str(d.external_url.clone())),
                ("Value", Value::Float(d.value)),
            ];
            print_struct(out, &fields, verb, s);
        }
        Value::Duration(d) => match verb {
            'v' | 's' | 'q' | 'x' | 'X' => fmt_string(out, &duration(*d), verb, s, v),
            _ => fmt_int(out, *d, verb, s, v),
        },
        Value::Html(text) | Value::Url(text) => fmt_string(out, text, verb, s, v),
        Value::Strings(list) => {
            out.push('[');
            for (i, e) in list.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_string(out, e, verb, s, &Value::Nil);
            }
            out.push(']');
        }
        // `KV` and `Pairs` have a `String` method: `a=1, b=2`.
        Value::Kv(m) => {
            let text = pairs_string(&super::value::sorted_pairs(m));
            fmt_string(out, &text, verb, s, v);
        }
        Value::Pairs(p) => fmt_string(out, &pairs_string(p), verb, s, v),
        Value::Pair(p, i) => {
            let (name, value) = &p[*i];
            let fields = [
                ("Name", Value::Str(name.clone())),
                ("Value", Value::Str(value.clone())),
            ];
            print_struct(out, &fields, verb, s);
        }
        Value::Alerts(list, _) => {
            out.push('[');
            for (i, a) in list.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_arg(out, &Value::Alert(a.clone()), verb, s);
            }
            out.push(']');
        }
        Value::Alert(a) => {
            let fields = [
                ("Status", Value::Str(a.status.clone())),
                ("Labels", Value::Kv(a.labels.clone())),
                ("Annotations", Value::Kv(a.annotations.clone())),
                ("StartsAt", Value::Time(a.starts_at)),
                ("EndsAt", Value::Time(a.ends_at)),
                ("GeneratorURL", Value::Str(a.generator_url.clone())),
                ("Fingerprint", Value::Str(a.fingerprint.clone())),
            ];
            print_struct(out, &fields, verb, s);
        }
        Value::Data(d) => {
            let fields = [
                ("Receiver", Value::Str(d.receiver.clone())),
                ("Status", Value::Str(d.status.clone())),
                ("Alerts", Value::Alerts(d.alerts.clone(), true)),
                ("GroupLabels", Value::Kv(d.group_labels.clone())),
                ("CommonLabels", Value::Kv(d.common_labels.clone())),
                ("CommonAnnotations", Value::Kv(d.common_annotations.clone())),
                ("ExternalURL", Value::Str(d.external_url.clone())),
            ];
            out.push('&');
            print_struct(out, &fields, verb, s);
        }
    }
}

/// A struct's fields, `{a b}` (`{A:a B:b}` with `%+v`).
fn print_struct(out: &mut String, fields: &[(&str, Value)], verb: char, s: &Spec) {
    out.push('{');
    for (i, (name, val)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if s.plus_v {
            out.push_str(name);
            out.push(':');
        }
        print_arg(out, val, verb, s);
    }
    out.push('}');
}

/// Alertmanager's `Pairs.String`: `a=1, b=2`.
fn pairs_string(p: &[(std::sync::Arc<str>, std::sync::Arc<str>)]) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `%!verb(type=value)`.
fn bad_verb(out: &mut String, v: &Value, verb: char, s: &Spec) {
    out.push_str("%!");
    out.push(verb);
    out.push('(');
    if matches!(v, Value::Nil) {
        out.push_str("<nil>");
    } else {
        out.push_str(v.type_name());
        out.push('=');
        print_arg(out, v, 'v', s);
    }
    out.push(')');
}

/// Go's `fmt.pad`: pads `text` to the width, counted in runes.
fn pad(out: &mut String, text: &str, s: &Spec) {
    let Some(wid) = s.wid else {
        out.push_str(text);
        return;
    };
    let n = text.chars().count();
    let fill = wid.saturating_sub(n);
    if s.minus {
        out.push_str(text);
        push_n(out, ' ', fill);
    } else {
        push_n(out, if s.zero { '0' } else { ' ' }, fill);
        out.push_str(text);
    }
}

fn push_n(out: &mut String, c: char, n: usize) {
    out.extend(std::iter::repeat_n(c, n));
}

fn fmt_string(out: &mut String, text: &str, verb: char, s: &Spec, orig: &Value) {
    match verb {
        'v' | 's' => {
            let t = match s.prec {
                Some(p) => match text.char_indices().nth(p) {
                    Some((i, _)) => &text[..i],
                    None => text,
                },
                None => text,
            };
            pad(out, t, s);
        }
        'q' => {
            let q = if s.sharp && can_backquote(text) {
                format!("`{text}`")
            } else {
                quote_with(text, '"', s.plus)
            };
            pad(out, &q, s);
        }
        'x' | 'X' => fmt_hex_bytes(out, text.as_bytes(), verb == 'X', s),
        _ => {
            if matches!(orig, Value::Nil) {
                bad_verb(out, &Value::Str(text.into()), verb, s)
            } else {
                bad_verb(out, orig, verb, s)
            }
        }
    }
}

/// Go's `fmtSbx`: hexadecimal bytes of a string.
fn fmt_hex_bytes(out: &mut String, bytes: &[u8], upper: bool, s: &Spec) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let x = if upper { 'X' } else { 'x' };
    let length = s.prec.map_or(bytes.len(), |p| p.min(bytes.len()));
    let mut width = 2 * length;
    if width == 0 {
        if let Some(w) = s.wid {
            push_n(out, ' ', w);
        }
        return;
    }
    if s.space {
        if s.sharp {
            width *= 2;
        }
        width += length - 1;
    } else if s.sharp {
        width += 2;
    }
    let fill = s.wid.map_or(0, |w| w.saturating_sub(width));
    if !s.minus {
        push_n(out, ' ', fill);
    }
    if s.sharp {
        out.push('0');
        out.push(x);
    }
    for (i, &c) in bytes[..length].iter().enumerate() {
        if s.space && i > 0 {
            out.push(' ');
            if s.sharp {
                out.push('0');
                out.push(x);
            }
        }
        out.push(char::from(digits[usize::from(c >> 4)]));
        out.push(char::from(digits[usize::from(c & 0xF)]));
    }
    if s.minus {
        push_n(out, ' ', fill);
    }
}

fn fmt_int(out: &mut String, n: i64, verb: char, s: &Spec, orig: &Value) {
    match verb {
        'v' | 'd' => fmt_integer(out, n, 10, verb, false, s),
        'b' => fmt_integer(out, n, 2, verb, false, s),
        'o' | 'O' => fmt_integer(out, n, 8, verb, false, s),
        'x' => fmt_integer(out, n, 16, verb, false, s),
        'X' => fmt_integer(out, n, 16, verb, true, s),
        'c' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            pad(out, c.encode_utf8(&mut [0; 4]), s);
        }
        'q' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let q = quote_rune(c, s.plus);
            pad(out, &q, s);
        }
        'U' => {
            let u = n as u64;
            let mut t = format!("U+{u:04X}");
            if s.sharp
                && let Some(c) = u32::try_from(n).ok().and_then(char::from_u32)
                && is_print(c)
            {
                t.push_str(" '");
                t.push(c);
                t.push('\'');
            }
            pad(out, &t, s);
        }
        _ => bad_verb(out, orig, verb, s),
    }
}

/// Go's `fmtInteger`.
fn fmt_integer(out: &mut String, n: i64, base: u32, verb: char, upper: bool, s: &Spec) {
    let negative = n < 0;
    let u = n.unsigned_abs();
    let mut prec = 0usize;
    if let Some(p) = s.prec {
        prec = p;
        if p == 0 && u == 0 {
            push_n(out, ' ', s.wid.unwrap_or(0));
            return;
        }
    } else if s.zero && !s.minus && s.wid.is_some() {
        prec = s.wid.unwrap_or(0);
        if negative || s.plus || s.space {
            prec = prec.saturating_sub(1);
        }
    }
    let mut digits = match base {
        2 => format!("{u:b}"),
        8 => format!("{u:o}"),
        16 if upper => format!("{u:X}"),
        16 => format!("{u:x}"),
        _ => u.to_string(),
    };
    if digits.len() < prec {
        digits = "0".repeat(prec - digits.len()) + &digits;
    }
    let mut prefix = String::new();
    if s.sharp {
        match base {
            2 => prefix.push_str("0b"),
            8 if !digits.starts_with('0') => prefix.push('0'),
            16 => prefix.push_str(if upper { "0X" } else { "0x" }),
            _ => {}
        }
    }
    if verb == 'O' {
        prefix = "0o".to_string();
    }
    let sign = if negative {
        "-"
    } else if s.plus {
        "+"
    } else if s.space {
        " "
    } else {
        ""
    };
    let text = format!("{sign}{prefix}{digits}");
    let unzero = Spec { zero: false, ..*s };
    pad(out, &text, &unzero);
}

/// Go's `fmt.fmtFloat`: sign handling and padding around
/// [`format_float`].
fn fmt_float(out: &mut String, f: f64, verb: char, default_prec: Option<usize>, s: &Spec) {
    let prec = s.prec.or(default_prec);
    let mut num = format_float(f, verb, prec);
    if !num.starts_with(['-', '+']) {
        num.insert(0, '+');
    }
    if s.space && num.starts_with('+') && !s.plus {
        num.replace_range(0..1, " ");
    }
    if f.is_infinite() || f.is_nan() {
        if f.is_nan() && !s.space && !s.plus {
            num.remove(0);
        }
        let unzero = Spec { zero: false, ..*s };
        pad(out, &num, &unzero);
        return;
    }
    if s.sharp {
        num = sharp_float(num, verb, prec);
    }
    if s.plus || !num.starts_with('+') {
        if s.zero
            && !s.minus
            && let Some(w) = s.wid
            && w > num.len()
        {
            out.push_str(&num[..1]);
            push_n(out, '0', w - num.len());
            out.push_str(&num[1..]);
            return;
        }
        pad(out, &num, s);
        return;
    }
    pad(out, &num[1..], s);
}

/// Go's `#` flag for floats: always a decimal point, and for `%g` the
/// trailing zeros up to the precision (6 by default). `num` starts with its
/// sign.
fn sharp_float(num: String, verb: char, prec: Option<usize>) -> String {
    let mut digits: i64 = match verb {
        'g' | 'G' => prec.map_or(6, |p| p as i64),
        _ => 0,
    };
    let (body, tail) = match num[1..].find(['e', 'E']) {
        Some(i) => (&num[..i + 1], &num[i + 1..]),
        None => (num.as_str(), ""),
    };
    let mut saw_nonzero = false;
    let mut has_point = false;
    for c in body[1..].chars() {
        if c == '.' {
            has_point = true;
            continue;
        }
        if c != '0' {
            saw_nonzero = true;
        }
        if saw_nonzero {
            digits -= 1;
        }
    }
    let mut out = body.to_string();
    if !has_point {
        if body.len() == 2 && body.ends_with('0') {
            digits -= 1;
        }
        out.push('.');
    }
    while digits > 0 {
        out.push('0');
        digits -= 1;
    }
    out.push_str(tail);
    out
}

/// Decimal digits of a finite, non-negative float: `digits` without leading
/// or trailing zeros, and the decimal point position `dp` (value =
/// 0.digits × 10^dp). Zero has no digits.
struct Decimal {
    digits: Vec<u8>,
    dp: i32,
}

impl Decimal {
    /// From Rust's `{:e}` rendering, e.g. `1.2345e-7`.
    fn from_exp(text: &str) -> Decimal {
        let (mant, exp) = text.split_once('e').unwrap_or((text, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Decimal { digits, dp: 0 };
        }
        Decimal {
            digits,
            dp: exp + 1,
        }
    }

    /// Shortest digits that round-trip.
    fn shortest(a: f64) -> Decimal {
        Decimal::from_exp(&format!("{a:e}"))
    }

    /// Correctly rounded to `n` (≥ 1) significant digits.
    fn significant(a: f64, n: usize) -> Decimal {
        Decimal::from_exp(&format!("{:.*e}", n - 1, a))
    }

    fn nd(&self) -> i32 {
        self.digits.len() as i32
    }

    /// Go's `fmtE` with `prec` digits after the point.
    fn fmt_e(&self, out: &mut String, prec: i32, e: char) {
        out.push(char::from(*self.digits.first().unwrap_or(&b'0')));
        if prec > 0 {
            out.push('.');
            for i in 1..=prec {
                let c = self.digits.get(i as usize).copied().unwrap_or(b'0');
                out.push(char::from(c));
            }
        }
        out.push(e);
        let exp = if self.digits.is_empty() {
            0
        } else {
            self.dp - 1
        };
        out.push(if exp < 0 { '-' } else { '+' });
        let exp = exp.unsigned_abs();
        if exp < 10 {
            out.push('0');
        }
        out.push_str(&exp.to_string());
    }

    /// Go's `fmtF` with `prec` digits after the point.
    fn fmt_f(&self, out: &mut String, prec: i32) {
        if self.dp > 0 {
            let m = self.nd().min(self.dp);
            for &d in &self.digits[..m as usize] {
                out.push(char::from(d));
            }
            for _ in m..self.dp {
                out.push('0');
            }
        } else {
            out.push('0');
        }
        if prec > 0 {
            out.push('.');
            for i in 1..=prec {
                let j = self.dp + i - 1;
                let c = if j >= 0 && j < self.nd() {
                    self.digits[j as usize]
                } else {
                    b'0'
                };
                out.push(char::from(c));
            }
        }
    }
}

/// `strconv.FormatFloat(f, verb, prec, 64)` for verbs `e E f g G`
/// (`None` precision = shortest).
pub(super) fn format_float(f: f64, verb: char, prec: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    let a = f.abs();
    // Precisions beyond what a float64 can carry only add zeros; Go caps
    // the width at 1e6 anyway.
    let prec = prec.map(|p| p.min(MAX_WIDTH));
    match verb {
        'f' => match prec {
            Some(p) => out.push_str(&format!("{a:.p$}")),
            None => {
                let d = Decimal::shortest(a);
                d.fmt_f(&mut out, (d.nd() - d.dp).max(0));
            }
        },
        'e' | 'E' => match prec {
            Some(p) => Decimal::significant(a, p.min(800) + 1).fmt_e(&mut out, p as i32, verb),
            None => {
                let d = Decimal::shortest(a);
                d.fmt_e(&mut out, (d.nd() - 1).max(0), verb);
            }
        },
        _ => {
            let e = if verb == 'G' { 'E' } else { 'e' };
            let (d, mut p, shortest) = match prec {
                None => {
                    let d = Decimal::shortest(a);
                    let nd = d.nd();
                    (d, nd, true)
                }
                Some(p) => {
                    let p = p.clamp(1, 800);
                    (Decimal::significant(a, p), p as i32, false)
                }
            };
            let mut eprec = p;
            if eprec > d.nd() && d.nd() >= d.dp {
                eprec = d.nd();
            }
            if shortest {
                eprec = 6;
            }
            let exp = d.dp - 1;
            if exp < -4 || exp >= eprec {
                if p > d.nd() {
                    p = d.nd();
                }
                d.fmt_e(&mut out, (p - 1).max(0), e);
            } else {
                if p > d.dp {
                    p = d.nd();
                }
                d.fmt_f(&mut out, (p - d.dp).max(0));
            }
        }
    }
    out
}

/// Go's `%v` of a float64.
pub(super) fn float_v(f: f64) -> String {
    format_float(f, 'g', None)
}

/// `strconv.Quote`.
pub(super) fn quote(s: &str) -> String {
    quote_with(s, '"', false)
}

fn quote_with(s: &str, q: char, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        push_escaped(&mut out, c, q, ascii_only);
    }
    out.push(q);
    out
}

fn quote_rune(c: char, ascii_only: bool) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'', ascii_only);
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, q: char, ascii_only: bool) {
    if c == q || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if (!ascii_only || c.is_ascii()) && is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// An approximation of Go's `unicode.IsPrint`: graphic characters and the
/// ASCII space, but no other spaces, controls or format characters.
pub(super) fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xD800..=0xDFFF | 0xE000..=0xF8FF
        | 0xFEFF | 0xFFF9..=0xFFFB | 0xFFFE | 0xFFFF | 0xF0000..=0x10FFFF)
}

/// `strconv.CanBackquote`.
fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c != '`' && c != '\u{FEFF}' && (c == '\t' || !c.is_control()))
}

impl std::fmt::Display for Time {
    /// Go's `Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.format("2006-01-02 15:04:05.999999999 -0700 MST"))
    }
}

/// Go's `Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub(super) fn duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let frac = |v: u64, digits: u32| -> String {
        // `v` in units of 10^-digits, without trailing zeros.
        let p = 10u64.pow(digits);
        let (int, rem) = (v / p, v % p);
        if rem == 0 {
            int.to_string()
        } else {
            let f = format!("{rem:0width$}", width = digits as usize);
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if u < 1_000 {
        out.push_str(&format!("{u}ns"));
    } else if u < 1_000_000 {
        out.push_str(&format!("{}µs", frac(u, 3)));
    } else if u < 1_000_000_000 {
        out.push_str(&format!("{}ms", frac(u, 6)));
    } else {
        let secs = u / 1_000_000_000;
        let (h, m) = (secs / 3600, secs / 60 % 60);
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", frac(u % 60_000_000_000, 9)));
    }
    out
}
