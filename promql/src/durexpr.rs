//! Duration expressions: arithmetic where PromQL takes a duration (`foo[26m+4m]`,
//! `foo[1h:30s*2]`, `foo offset (2*2)`), as Prometheus 3.5 accepts it.
//!
//! The parser crate takes only plain durations there, so [`rewrite`] runs first: it finds
//! the range and step of every `[...]` and every parenthesised offset in the query text,
//! evaluates each arithmetic one, and writes the result back as a plain duration in
//! milliseconds (`[1800000ms]`). Operands are numbers (seconds) and durations; operators
//! are `+ - * / % ^` with PromQL's precedence (`^` binds tighter than a unary minus and
//! is right-associative) and parentheses. Text that is not such an expression is left as
//! it is, for the parser to accept or report. String literals, comments and label
//! matchers are skipped, so `offset` used as a label name is untouched.
//!
//! The same pass checks byte escapes in string literals (`"\xc3\xa9"`, `"\303"`): as
//! in Prometheus, they stand for bytes, so a run of them must form valid UTF-8 (the
//! parser crate would read each as a character of its own). Valid runs are written back
//! as the characters they encode; an invalid one is a parse error.

use std::borrow::Cow;

use crate::Error;
use crate::duration::parse_duration_ms;

/// The query with every duration expression replaced by its value.
pub fn rewrite(q: &str) -> Result<Cow<'_, str>, Error> {
    if !q.contains('[') && !q.contains("offset") && !q.contains('\\') {
        return Ok(Cow::Borrowed(q));
    }
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    let mut copied = 0; // bytes of `q` already in `out`
    let mut changed = false;
    let mut i = 0;
    let mut braces = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' => {
                let end = skip_string(b, i);
                if let Some(fixed) = byte_escapes(&q[i..end])? {
                    out.push_str(&q[copied..i]);
                    out.push_str(&fixed);
                    copied = end;
                    changed = true;
                }
                i = end;
            }
            b'`' => i = skip_string(b, i),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            b'[' if braces == 0 => {
                let Some(end) = q[i + 1..].find(']').map(|k| i + 1 + k) else {
                    break;
                };
                let inner = &q[i + 1..end];
                if let Some(new) = rewrite_brackets(inner)? {
                    out.push_str(&q[copied..=i]);
                    out.push_str(&new);
                    copied = end;
                    changed = true;
                }
                i = end + 1;
            }
            c if braces == 0 && c.is_ascii_alphabetic() && (i == 0 || !is_ident(b[i - 1])) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                if &q[start..i] != "offset" {
                    continue;
                }
                if let Some((from, to, ms)) = offset_expr(q, i)? {
                    out.push_str(&q[copied..from]);
                    out.push_str(&format!(" {}", fmt_ms(ms)));
                    copied = to;
                    changed = true;
                    i = to;
                }
            }
            _ => i += 1,
        }
    }
    if !changed {
        return Ok(Cow::Borrowed(q));
    }
    out.push_str(&q[copied..]);
    Ok(Cow::Owned(out))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index after the string literal starting at `i`.
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' && quote != b'`' {
            j += 2;
            continue;
        }
        if b[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    j
}

/// `lit` (a quoted literal, quotes included) with its runs of byte escapes of 0x80 and
/// above written as the characters they encode, or `None` when it has none.
fn byte_escapes(lit: &str) -> Result<Option<String>, Error> {
    if !lit.contains('\\') {
        return Ok(None);
    }
    let b = lit.as_bytes();
    let mut out = String::with_capacity(lit.len());
    let mut run: Vec<u8> = Vec::new();
    let mut changed = false;
    let mut i = 0;
    let flush = |run: &mut Vec<u8>, out: &mut String| -> Result<(), Error> {
        if run.is_empty() {
            return Ok(());
        }
        let s = std::str::from_utf8(run).map_err(|_| {
            Error::Parse(format!(
                "parse error: invalid UTF-8 in string literal {lit}"
            ))
        })?;
        out.push_str(s);
        run.clear();
        Ok(())
    };
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let byte = match b[i + 1] {
                b'x' if i + 4 <= b.len() => u8::from_str_radix(&lit[i + 2..i + 4], 16)
                    .ok()
                    .map(|v| (v, 4)),
                b'0'..=b'3' if i + 4 <= b.len() => u8::from_str_radix(&lit[i + 1..i + 4], 8)
                    .ok()
                    .map(|v| (v, 4)),
                _ => None,
            };
            if let Some((v, len)) = byte.filter(|(v, _)| *v >= 0x80) {
                run.push(v);
                changed = true;
                i += len;
                continue;
            }
            flush(&mut run, &mut out)?;
            // Any other escape is copied whole, so `\\x` is never read as a byte.
            out.push_str(&lit[i..i + 2]);
            i += 2;
            continue;
        }
        flush(&mut run, &mut out)?;
        let ch_len = lit[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&lit[i..i + ch_len]);
        i += ch_len;
    }
    flush(&mut run, &mut out)?;
    Ok(changed.then_some(out))
}

/// The new text between `[` and `]` when the range or step is an expression.
fn rewrite_brackets(inner: &str) -> Result<Option<String>, Error> {
    let mut parts = inner.splitn(2, ':');
    let range = parts.next().unwrap_or("");
    let step = parts.next();
    let r = duration_part(range, false)?;
    let s = match step {
        Some(s) => duration_part(s, true)?,
        None => None,
    };
    if r.is_none() && s.is_none() {
        return Ok(None);
    }
    let mut new = r.unwrap_or_else(|| range.to_string());
    if let Some(step) = step {
        new.push(':');
        new.push_str(&s.unwrap_or_else(|| step.to_string()));
    }
    Ok(Some(new))
}

/// A plain duration when `text` is an arithmetic expression (else `None`). Ranges must be
/// positive; a step may be zero (Prometheus' default).
fn duration_part(text: &str, step: bool) -> Result<Option<String>, Error> {
    let t = text.trim();
    if t.is_empty() || parse_duration_ms(t).is_ok() {
        return Ok(None);
    }
    let Some(secs) = Expr::eval(t) else {
        return Ok(None);
    };
    let ms = to_ms(t, secs)?;
    if ms < 0 || (ms == 0 && !step) {
        return Err(Error::Parse(format!(
            "parse error: duration must be greater than 0, got {t} = {}",
            fmt_ms(ms)
        )));
    }
    Ok(Some(fmt_ms(ms)))
}

/// For `offset` ending at `i`: the span to replace and the offset in milliseconds, when
/// what follows is a parenthesised expression, optionally signed.
fn offset_expr(q: &str, i: usize) -> Result<Option<(usize, usize, i64)>, Error> {
    let b = q.as_bytes();
    let mut j = i;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    let mut sign = 1.0;
    let mut k = j;
    if k < b.len() && (b[k] == b'-' || b[k] == b'+') {
        if b[k] == b'-' {
            sign = -1.0;
        }
        k += 1;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
    }
    if k >= b.len() || b[k] != b'(' {
        return Ok(None);
    }
    let mut depth = 0usize;
    let mut end = None;
    for (n, &c) in b.iter().enumerate().skip(k) {
        match c {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(n);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return Ok(None);
    };
    let text = &q[k..=end];
    let Some(secs) = Expr::eval(text) else {
        return Ok(None);
    };
    Ok(Some((i, end + 1, to_ms(text, sign * secs)?)))
}

fn to_ms(text: &str, secs: f64) -> Result<i64, Error> {
    let ms = (secs * 1000.0).round();
    if !ms.is_finite() || ms.abs() >= i64::MAX as f64 {
        return Err(Error::Parse(format!(
            "parse error: duration expression {text} is out of range"
        )));
    }
    Ok(ms as i64)
}

fn fmt_ms(ms: i64) -> String {
    format!("{ms}ms")
}

/// A recursive-descent evaluator over the bytes of one expression; values in seconds.
struct Expr<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

impl<'a> Expr<'a> {
    /// The value of `s` in seconds, or `None` when it is not a duration expression.
    fn eval(s: &'a str) -> Option<f64> {
        let mut p = Expr {
            b: s.as_bytes(),
            s,
            i: 0,
        };
        let v = p.sum()?;
        p.ws();
        (p.i == p.b.len()).then_some(v)
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn sum(&mut self) -> Option<f64> {
        let mut v = self.product()?;
        loop {
            if self.eat(b'+') {
                v += self.product()?;
            } else if self.eat(b'-') {
                v -= self.product()?;
            } else {
                return Some(v);
            }
        }
    }

    fn product(&mut self) -> Option<f64> {
        let mut v = self.unary()?;
        loop {
            if self.eat(b'*') {
                v *= self.unary()?;
            } else if self.eat(b'/') {
                v /= self.unary()?;
            } else if self.eat(b'%') {
                v %= self.unary()?;
            } else {
                return Some(v);
            }
        }
    }

    fn unary(&mut self) -> Option<f64> {
        if self.eat(b'-') {
            return Some(-self.unary()?);
        }
        if self.eat(b'+') {
            return self.unary();
        }
        self.power()
    }

    fn power(&mut self) -> Option<f64> {
        let base = self.atom()?;
        if self.eat(b'^') {
            return Some(base.powf(self.unary()?));
        }
        Some(base)
    }

    fn atom(&mut self) -> Option<f64> {
        if self.eat(b'(') {
            let v = self.sum()?;
            return self.eat(b')').then_some(v);
        }
        self.ws();
        let start = self.i;
        while self.i < self.b.len()
            && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'.')
        {
            self.i += 1;
        }
        let tok = &self.s[start..self.i];
        if tok.is_empty() || !tok.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        if let Ok(v) = tok.parse::<f64>() {
            return Some(v);
        }
        parse_duration_ms(tok).ok().map(|ms| ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(q: &str) -> String {
        rewrite(q).unwrap().into_owned()
    }

    #[test]
    fn ranges_steps_and_offsets_are_evaluated() {
        assert_eq!(rw("changes(x[26m+4m])"), "changes(x[1800000ms])");
        assert_eq!(rw("x[24m+((1.5*2m)+2m)]"), "x[1740000ms]");
        assert_eq!(rw("x[1h30m % 1h]"), "x[1800000ms]");
        assert_eq!(rw("x[-5m+35m]"), "x[1800000ms]");
        assert_eq!(rw("s(x[29s+1s:5s+5s])"), "s(x[30000ms:10000ms])");
        assert_eq!(rw("x offset (2 ^ 2)"), "x offset 4000ms");
        assert_eq!(rw("x offset -(2 * 2)"), "x offset -4000ms");
        assert_eq!(rw("x offset (-2 ^ 2)"), "x offset -4000ms");
    }

    #[test]
    fn plain_text_is_left_alone() {
        for q in [
            "x[5m]",
            "x[5m:]",
            "x[1800]",
            "x offset 5m",
            "x offset 100 + 2",
            "sum by (offset) (x)",
            r#"x{offset="(1+2)"}"#,
            r#"label_replace(x, "a", "[1+2]", "b", "(.*)")"#,
            "x # offset (1+1)",
        ] {
            assert_eq!(rw(q), q);
        }
    }

    #[test]
    fn byte_escapes_must_form_utf8() {
        assert_eq!(rw(r#"x{a="\xc3\xa9"}"#), r#"x{a="é"}"#);
        assert_eq!(rw(r#"x{a="\303\251\n"}"#), "x{a=\"é\\n\"}");
        assert_eq!(rw(r#"x{a="\x41\\xff"}"#), r#"x{a="\x41\\xff"}"#);
        assert!(rewrite(r#"label_replace(x, "\xff", "", "a", "")"#).is_err());
    }

    #[test]
    fn bad_durations_are_errors_or_left_to_the_parser() {
        assert!(rewrite("x[5m-10m]").is_err());
        assert_eq!(rw("x[5m+]"), "x[5m+]");
        assert_eq!(rw("x[foo]"), "x[foo]");
        assert!(rewrite("x[1e400*2]").is_err());
    }
}
