//! Go's formatting of the values promtool prints, so that failures read the same:
//! `strconv.Quote`, `labels.Labels.String`, `strconv.FormatFloat(v, 'E', -1, 64)` and
//! `time.Duration.String` (at millisecond precision).

use std::fmt::Write as _;

/// Go's `strconv.Quote`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() => {
                let n = c as u32;
                let _ = if n < 0x80 {
                    write!(out, "\\x{n:02x}")
                } else if n <= 0xffff {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prometheus' `labels.Labels.String`: `{a="1", b="2"}`, every pair, `__name__` too.
pub(crate) fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (n, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(n);
        out.push('=');
        out.push_str(&quote(v));
    }
    out.push('}');
    out
}

/// Go's `strconv.FormatFloat(v, 'E', -1, 64)`: `2E+00`, `1.5E+10`, `+Inf`, `NaN`.
pub(crate) fn float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}E{sign}{:02}", exp.abs())
}

/// Go's `time.Duration.String` of a whole number of milliseconds: `0s`, `500ms`,
/// `1m0s`, `1h30m0s`, `1.5s`.
pub(crate) fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut ms = ms;
    if ms < 0 {
        out.push('-');
        ms = -ms;
    }
    if ms < 1000 {
        let _ = write!(out, "{ms}ms");
        return out;
    }
    let h = ms / 3_600_000;
    let m = ms / 60_000 % 60;
    let s = ms / 1000 % 60;
    let frac = ms % 1000;
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let f = format!("{frac:03}");
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(float_e(2.0), "2E+00");
        assert_eq!(float_e(1.5e10), "1.5E+10");
        assert_eq!(float_e(0.1), "1E-01");
        assert_eq!(float_e(-325.0), "-3.25E+02");
        assert_eq!(float_e(1e100), "1E+100");
        assert_eq!(float_e(0.0), "0E+00");
        assert_eq!(float_e(f64::INFINITY), "+Inf");
        assert_eq!(float_e(f64::NAN), "NaN");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(500), "500ms");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(90_500), "1m30.5s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
        assert_eq!(go_duration(1_500), "1.5s");
    }

    #[test]
    fn labels_print_like_prometheus() {
        assert_eq!(
            labels([("__name__", "x"), ("a", "q\"\n")]),
            r#"{__name__="x", a="q\"\n"}"#
        );
        assert_eq!(labels([]), "{}");
    }
}
