/*!
Label matchers in Alertmanager's syntax: `name="v"`, `name!="v"`, `name=~"re"`,
`name!~"re"`, alone or as a list (`{a="b", c=~"d"}` or `a="b",c=~"d"`).

Values may be double-quoted (with `\"`, `\\` and `\n` escapes) or bare (up to the next
`,` or `}`, trimmed), as Alertmanager's matcher parser accepts. Regular expressions are
anchored at both ends; a label that is absent matches as the empty string.
*/

use std::fmt;

use regex::Regex;

use crate::notify::Labels;

/// The comparison a [`Matcher`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored expression, for the regex operators.
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

/// Why a matcher could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("matcher {input:?}: {message}")]
pub struct MatcherError {
    pub input: String,
    pub message: String,
}

impl Matcher {
    /// A matcher; compiles the expression of the regex operators.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        let err = |message: String| MatcherError {
            input: format!("{name}{}{value:?}", op.as_str()),
            message,
        };
        if !valid_label_name(name) {
            return Err(err(format!("invalid label name {name:?}")));
        }
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| err(format!("invalid regular expression: {e}")))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Whether the value `v` (empty when the label is absent) satisfies the matcher.
    pub fn matches_value(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// Whether `labels` satisfy the matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op.as_str())?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// `{a="b",c=~"d"}`, the way Alertmanager writes a list (route keys, group keys).
pub fn format_matchers(ms: &[Matcher]) -> String {
    let mut s = String::from("{");
    for (i, m) in ms.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&m.to_string());
    }
    s.push('}');
    s
}

/// Whether all matchers match `labels` (true for an empty list).
pub(crate) fn all_match(ms: &[Matcher], labels: &Labels) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

/// Whether `s` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a list of matchers: `{a="b", c=~"d"}`, `a="b",c=~"d"`, or one matcher.
/// An empty input (or `{}`) is an empty list.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, MatcherError> {
    let err = |message: &str| MatcherError {
        input: input.to_string(),
        message: message.to_string(),
    };
    let mut s = input.trim();
    if let Some(rest) = s.strip_prefix('{') {
        s = rest
            .strip_suffix('}')
            .ok_or_else(|| err("missing closing '}'"))?
            .trim();
    } else if s.ends_with('}') {
        return Err(err("missing opening '{'"));
    }
    let mut out = Vec::new();
    let mut p = Parser { s, pos: 0 };
    loop {
        p.skip_ws();
        if p.at_end() {
            break;
        }
        out.push(p.matcher().map_err(|m| err(&m))?);
        p.skip_ws();
        if p.at_end() {
            break;
        }
        if !p.eat(",") {
            return Err(err(&format!(
                "expected ',' at offset {} ({:?})",
                p.pos,
                p.rest()
            )));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, tok: &str) -> bool {
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn matcher(&mut self) -> Result<Matcher, String> {
        let r = self.rest();
        let name_len = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        let name = &r[..name_len];
        if name.is_empty() {
            return Err(format!("expected a label name at offset {}", self.pos));
        }
        self.pos += name_len;
        self.skip_ws();
        let op = if self.eat("=~") {
            MatchOp::Regex
        } else if self.eat("!~") {
            MatchOp::NotRegex
        } else if self.eat("!=") {
            MatchOp::NotEqual
        } else if self.eat("=") {
            MatchOp::Equal
        } else {
            return Err(format!(
                "expected one of =, !=, =~, !~ after {name:?} at offset {}",
                self.pos
            ));
        };
        self.skip_ws();
        let value = if self.eat("\"") {
            let mut v = String::new();
            let mut chars = self.rest().char_indices();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, 't')) => v.push('\t'),
                        Some((_, c @ ('"' | '\\'))) => v.push(c),
                        // Alertmanager keeps other escapes as written (`\d` in a regex).
                        Some((_, c)) => {
                            v.push('\\');
                            v.push(c);
                        }
                        None => break,
                    },
                    c => v.push(c),
                }
            }
            let n = closed.ok_or_else(|| format!("unterminated quoted value for {name:?}"))?;
            self.pos += n;
            v
        } else {
            let r = self.rest();
            let end = r.find(',').unwrap_or(r.len());
            let v = r[..end].trim();
            if let Some(c) = v.chars().find(|c| "{}=~!\"".contains(*c)) {
                return Err(format!(
                    "unexpected {c:?} in the unquoted value of {name:?} (quote the value)"
                ));
            }
            self.pos += end;
            v.to_string()
        };
        Matcher::new(name, op, &value).map_err(|e| e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator_and_form() {
        let ms = parse_matchers(r#"{a="b", c!="d",e=~"f|g" , h!~"i.*"}"#).unwrap();
        let ops: Vec<_> = ms.iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            [
                MatchOp::Equal,
                MatchOp::NotEqual,
                MatchOp::Regex,
                MatchOp::NotRegex
            ]
        );
        assert_eq!(format_matchers(&ms), r#"{a="b",c!="d",e=~"f|g",h!~"i.*"}"#);
        let bare = parse_matchers("severity=critical, team =~ db|web").unwrap();
        assert_eq!(bare[0].value, "critical");
        assert_eq!(bare[1].value, "db|web");
        assert!(parse_matchers("").unwrap().is_empty());
        assert!(parse_matchers("{}").unwrap().is_empty());
        assert_eq!(parse_matchers("a=\"b\",").unwrap().len(), 1);
    }

    #[test]
    fn escapes_round_trip() {
        let ms = parse_matchers(r#"msg="say \"hi\"\n", re=~"\d+""#).unwrap();
        assert_eq!(ms[0].value, "say \"hi\"\n");
        assert_eq!(ms[1].value, r"\d+");
        let again = parse_matchers(&format_matchers(&ms)).unwrap();
        assert_eq!(again, ms);
    }

    #[test]
    fn regexes_are_anchored_and_absent_labels_are_empty() {
        let m = Matcher::new("severity", MatchOp::Regex, "crit|page").unwrap();
        assert!(m.matches(&l(&[("severity", "crit")])));
        assert!(!m.matches(&l(&[("severity", "critical")])));
        let empty = Matcher::new("team", MatchOp::Equal, "").unwrap();
        assert!(empty.matches(&l(&[])));
        let ne = Matcher::new("team", MatchOp::NotEqual, "db").unwrap();
        assert!(ne.matches(&l(&[])));
        let nre = Matcher::new("team", MatchOp::NotRegex, "d.*").unwrap();
        assert!(!nre.matches(&l(&[("team", "db")])));
    }

    #[test]
    fn malformed_matchers_are_refused() {
        for bad in [
            "a",
            "a==",
            "=b",
            "{a=\"b\"",
            "a=\"b",
            "a=~\"(\"",
            "a=\"b\" c=\"d\"",
            "1a=b",
            "a=b\"c",
        ] {
            assert!(parse_matchers(bad).is_err(), "{bad} should fail");
        }
    }
}
