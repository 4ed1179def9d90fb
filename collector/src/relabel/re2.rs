//! Go (RE2) regular-expression syntax on top of the `regex` crate, and Go's `Regexp.Expand`
//! template language.
//!
//! Prometheus compiles relabel regexes with Go's `regexp`, whose syntax is RE2's. The `regex`
//! crate accepts almost the same language; [`translate`] rewrites the constructs whose meaning
//! differs, so that a pattern matches here exactly what it matches in Prometheus:
//!
//! - `\d \D \w \W \s \S` are ASCII classes in RE2 but Unicode-aware in `regex`: they become
//!   explicit ASCII classes; `\b \B` become `(?-u:\b) (?-u:\B)`.
//! - An escaped ASCII punctuation character is always a literal in RE2 (`\<` is `<`, `\_` is
//!   `_`); in `regex` some are assertions (`\<`, `\>`) or errors. They become plain literals.
//! - `\Q...\E` quoting and octal escapes (`\012`) exist only in RE2: they become escaped
//!   literals.
//! - Inside a class, `[` (other than `[:alpha:]`), `&&`, `--` and `~~` are literal text in RE2
//!   but nested classes or set operations in `regex`: they are escaped.
//! - A `{` that does not start a valid repetition (`{n}`, `{n,}`, `{n,m}`) is a literal in
//!   RE2 and an error in `regex`; repetition counts above 1000 are an error in RE2.
//!
//! What remains different is outside relabeling's reach: Unicode tables follow the Rust
//! toolchain's Unicode version, and the `regex` crate accepts a few things RE2 rejects (the
//! `x` flag, nested repetition like `a**`).

use std::sync::LazyLock;

use regex::Regex;

/// Largest repetition count RE2 accepts in `{n,m}`.
const MAX_REPEAT: u32 = 1000;

/// Rewrites an RE2 pattern into `regex` syntax with the same meaning (see the module doc).
///
/// Only the error RE2 raises and `regex` would not (a repetition count above 1000) is reported
/// here; every other syntax error is left for the `regex` parser to find.
pub(super) fn translate(pattern: &str) -> Result<String, String> {
    let cs: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '\\' => i = escape(&cs, i, false, &mut out),
            '[' => i = class(&cs, i, &mut out),
            '{' => match repetition(&cs, i)? {
                Some(end) => {
                    out.extend(&cs[i..end]);
                    i = end;
                }
                None => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str("\\}");
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Pushes `c` as a literal, escaped if `regex` gives it a meaning in or out of a class.
fn push_literal(out: &mut String, c: char) {
    if matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    ) {
        out.push('\\');
    }
    out.push(c);
}

/// What an escape sequence stands for.
enum Escape {
    /// A single character (usable as a class range end).
    Char(char),
    /// Text to emit as it is: a class, an assertion, or something for `regex` to judge.
    Raw(String),
}

/// Translates the escape at `cs[i]` (a backslash) and returns the index after it.
fn escape(cs: &[char], i: usize, in_class: bool, out: &mut String) -> usize {
    let (esc, next) = parse_escape(cs, i, in_class);
    match esc {
        Escape::Char(c) => push_literal(out, c),
        Escape::Raw(s) => out.push_str(&s),
    }
    next
}

fn parse_escape(cs: &[char], i: usize, in_class: bool) -> (Escape, usize) {
    let Some(&c) = cs.get(i + 1) else {
        // Trailing backslash: an error in both dialects; let `regex` report it.
        return (Escape::Raw("\\".to_owned()), i + 1);
    };
    let raw = |s: &str| Escape::Raw(s.to_owned());
    match c {
        'd' => (raw("[0-9]"), i + 2),
        'D' => (raw("[^0-9]"), i + 2),
        'w' => (raw("[0-9A-Za-z_]"), i + 2),
        'W' => (raw("[^0-9A-Za-z_]"), i + 2),
        's' => (raw("[\\t\\n\\f\\r ]"), i + 2),
        'S' => (raw("[^\\t\\n\\f\\r ]"), i + 2),
        'b' if !in_class => (raw("(?-u:\\b)"), i + 2),
        'B' if !in_class => (raw("(?-u:\\B)"), i + 2),
        'C' if !in_class => (raw("(?s:.)"), i + 2),
        'Q' if !in_class => {
            let mut lit = String::new();
            let mut j = i + 2;
            while j < cs.len() {
                if cs[j] == '\\' && cs.get(j + 1) == Some(&'E') {
                    j += 2;
                    return (Escape::Raw(lit), j);
                }
                push_literal(&mut lit, cs[j]);
                j += 1;
            }
            (Escape::Raw(lit), j)
        }
        'a' => (Escape::Char('\x07'), i + 2),
        'f' => (Escape::Char('\x0c'), i + 2),
        't' => (Escape::Char('\t'), i + 2),
        'n' => (Escape::Char('\n'), i + 2),
        'r' => (Escape::Char('\r'), i + 2),
        'v' => (Escape::Char('\x0b'), i + 2),
        '0'..='7' => {
            // RE2: `\0` and `\1`..`\7` followed by an octal digit start an octal escape of
            // up to three digits; a lone `\1`..`\7` is a backreference (unsupported).
            let is_octal = |k: usize| cs.get(k).is_some_and(|d| ('0'..='7').contains(d));
            if c != '0' && !is_octal(i + 2) {
                return (Escape::Raw(format!("\\{c}")), i + 2);
            }
            let mut value = 0u32;
            let mut j = i + 1;
            while j < i + 4 && is_octal(j) {
                value = value * 8 + (cs[j] as u32 - '0' as u32);
                j += 1;
            }
            match char::from_u32(value) {
                Some(ch) => (Escape::Char(ch), j),
                None => (Escape::Raw(format!("\\x{{{value:x}}}")), j),
            }
        }
        'x' => {
            // `\xHH` or `\x{H...}`: decode it so it can serve as a class range end.
            let (hex, next) = if cs.get(i + 2) == Some(&'{') {
                match cs[i + 3..].iter().position(|&c| c == '}') {
                    Some(p) => (cs[i + 3..i + 3 + p].iter().collect::<String>(), i + 4 + p),
                    None => return (raw("\\x"), i + 2),
                }
            } else {
                let end = (i + 4).min(cs.len());
                (cs[i + 2..end].iter().collect::<String>(), end)
            };
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(ch) if !hex.is_empty() => (Escape::Char(ch), next),
                _ => (raw("\\x"), i + 2),
            }
        }
        'p' | 'P' => {
            // `\pL`, `\p{Greek}`, `\p{^Greek}` (RE2's negation, spelled `\P{Greek}` here).
            if cs.get(i + 2) == Some(&'{') {
                let Some(p) = cs[i + 3..].iter().position(|&c| c == '}') else {
                    return (Escape::Raw(cs[i..].iter().collect()), cs.len());
                };
                let body: String = cs[i + 3..i + 3 + p].iter().collect();
                let next = i + 4 + p;
                match body.strip_prefix('^') {
                    Some(name) => {
                        let flipped = if c == 'p' { 'P' } else { 'p' };
                        (Escape::Raw(format!("\\{flipped}{{{name}}}")), next)
                    }
                    None => (Escape::Raw(format!("\\{c}{{{body}}}")), next),
                }
            } else {
                let end = (i + 3).min(cs.len());
                (Escape::Raw(cs[i..end].iter().collect()), end)
            }
        }
        // RE2: an escaped ASCII non-alphanumeric character is always that character.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => (Escape::Char(c), i + 2),
        // Anything else (`\A`, `\z`, or an invalid escape): `regex` decides.
        c => (Escape::Raw(format!("\\{c}")), i + 2),
    }
}

/// Translates the character class starting at `cs[i]` (a `[`); returns the index after it.
fn class(cs: &[char], mut i: usize, out: &mut String) -> usize {
    out.push('[');
    i += 1;
    if cs.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    while i < cs.len() {
        let c = cs[i];
        if c == ']' && !first {
            out.push(']');
            return i + 1;
        }
        first = false;
        // POSIX class `[:alpha:]` / `[:^alpha:]`: same syntax and meaning in both.
        if c == '['
            && cs.get(i + 1) == Some(&':')
            && let Some(p) = find_seq(cs, i + 2, &[':', ']'])
        {
            out.extend(&cs[i..p + 2]);
            i = p + 2;
            continue;
        }
        let (lo, next) = class_char(cs, i);
        i = next;
        let lo = match lo {
            Escape::Char(c) => c,
            Escape::Raw(s) => {
                out.push_str(&s);
                continue;
            }
        };
        // A range `lo-hi`, unless the `-` is the last thing before `]`.
        if cs.get(i) == Some(&'-') && cs.get(i + 1).is_some_and(|&c| c != ']') {
            let (hi, next) = class_char(cs, i + 1);
            i = next;
            push_literal(out, lo);
            match hi {
                Escape::Char(hi) => {
                    out.push('-');
                    push_literal(out, hi);
                }
                // `[a-\d]`: an error in RE2; emit something `regex` rejects as well.
                Escape::Raw(s) => {
                    out.push('-');
                    out.push_str(&s);
                }
            }
        } else {
            push_literal(out, lo);
        }
    }
    // Unterminated class: `regex` reports it.
    i
}

/// One class member at `cs[i]`: a character or an escape.
fn class_char(cs: &[char], i: usize) -> (Escape, usize) {
    if cs[i] == '\\' {
        parse_escape(cs, i, true)
    } else {
        (Escape::Char(cs[i]), i + 1)
    }
}

fn find_seq(cs: &[char], from: usize, seq: &[char]) -> Option<usize> {
    (from..cs.len()).find(|&k| cs[k..].starts_with(seq))
}

/// If `cs[i]` (a `{`) starts an RE2 repetition `{n}`, `{n,}` or `{n,m}`, returns the index
/// after its `}`; `None` if RE2 reads the `{` as a literal.
fn repetition(cs: &[char], i: usize) -> Result<Option<usize>, String> {
    let Some((min, min_end)) = repeat_count(cs, i + 1) else {
        return Ok(None);
    };
    // `max` is `None` for `{n,}`.
    let (max, end) = match cs.get(min_end) {
        Some('}') => (Some(min), min_end + 1),
        Some(',') if cs.get(min_end + 1) == Some(&'}') => (None, min_end + 2),
        Some(',') => match repeat_count(cs, min_end + 1) {
            Some((max, max_end)) if cs.get(max_end) == Some(&'}') => (Some(max), max_end + 1),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let too_big = |n: Option<u32>| n.is_none_or(|n| n > MAX_REPEAT);
    if too_big(min) || max.is_some_and(too_big) {
        let text: String = cs[i..end].iter().collect();
        return Err(format!("invalid repeat count `{text}`"));
    }
    Ok(Some(end))
}

/// RE2's repetition count at `cs[from]`: digits without a leading zero. Returns the value
/// (`None` if it is absurdly large) and the index after it; `None` if there is no count.
fn repeat_count(cs: &[char], from: usize) -> Option<(Option<u32>, usize)> {
    let mut end = from;
    while cs.get(end).is_some_and(char::is_ascii_digit) {
        end += 1;
    }
    if end == from || (end - from >= 2 && cs[from] == '0') {
        return None;
    }
    let text: String = cs[from..end].iter().collect();
    Some((text.parse().ok(), end))
}

/// One piece of a compiled replacement template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Literal(String),
    Group(usize),
}

/// A replacement template in Go's `Regexp.Expand` syntax, with names resolved to group
/// indexes against one regex.
///
/// `$name` takes the longest run of letters, digits and `_` as the name (so `$1x` is the
/// group *named* `1x`, not group 1 followed by `x`); `${name}` delimits it; a name made of
/// digits only (no leading zero) is a group index; `$$` is a literal `$`; a `$` not followed
/// by a valid name is a literal `$`. An unknown name, an index out of range and a group that
/// did not take part in the match all expand to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    parts: Vec<Part>,
}

/// Go's `extract`: letters (`\p{L}`), decimal digits (`\p{Nd}`) and `_`.
static NAME_PREFIX: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[\p{L}\p{Nd}_]+").ok());

impl Template {
    /// Parses `src`, resolving names and indexes against `regex`'s groups.
    pub(super) fn parse(src: &str, regex: &Regex) -> Template {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                lit.push('$');
                rest = stripped;
                continue;
            }
            let Some((name, remaining)) = extract(after) else {
                lit.push('$');
                rest = after;
                continue;
            };
            rest = remaining;
            if let Some(index) = resolve(name, regex) {
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(Part::Group(index));
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Template { parts }
    }

    /// Whether expansion needs a group other than the whole match (group 0).
    pub(super) fn uses_subgroups(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Group(i) if *i > 0))
    }

    /// Appends the expansion to `out`; `group(i)` is group `i`'s text, `None` if it did not
    /// take part in the match.
    pub(super) fn expand<'v>(&self, out: &mut String, group: impl Fn(usize) -> Option<&'v str>) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Group(i) => out.push_str(group(*i).unwrap_or("")),
            }
        }
    }

    #[cfg(test)]
    pub(super) fn parts(&self) -> &[Part] {
        &self.parts
    }
}

/// Go's `extract`: the name after a `$` (braced or not) and the text after it.
fn extract(s: &str) -> Option<(&str, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let len = NAME_PREFIX.as_ref()?.find(body).map_or(0, |m| m.end());
    if len == 0 {
        return None;
    }
    let (name, rest) = body.split_at(len);
    if brace {
        return Some((name, rest.strip_prefix('}')?));
    }
    Some((name, rest))
}

/// The group a template name refers to, if the regex has it.
fn resolve(name: &str, regex: &Regex) -> Option<usize> {
    // Go: digits only, no leading zero, at most nine digits make an index.
    let numeric = name.bytes().all(|b| b.is_ascii_digit())
        && (name.len() == 1 || !name.starts_with('0'))
        && name.len() <= 9;
    if numeric {
        let index: usize = name.parse().ok()?;
        return (index < regex.captures_len()).then_some(index);
    }
    regex.capture_names().position(|n| n == Some(name))
}
