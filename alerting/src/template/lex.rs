/*!
The lexer: template text into items, following Go's `text/template/parse`
lexer. Text outside `{{ }}` becomes `Text` items (with `{{-`/`-}}` trimming
already applied), comments vanish, and the inside of each action becomes
tokens, spaces included, because the parser needs them to tell `$x.y` from
`$x .y`.

Lexing stops at the first error, which becomes the last item.
*/

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Error,
    Eof,
    Text,
    LeftDelim,
    RightDelim,
    Space,
    /// `=`
    Assign,
    /// `:=`
    Declare,
    Pipe,
    /// Any other printable ASCII character inside an action (`,` in range
    /// declarations).
    Char,
    LeftParen,
    RightParen,
    Bool,
    CharConstant,
    Number,
    /// A complex number: lexed like Go, rejected by the parser.
    Complex,
    /// A quoted string, with its quotes.
    Str,
    /// A raw string, with its backquotes.
    RawStr,
    /// `$` or `$name`.
    Variable,
    /// `.name`
    Field,
    /// `.` alone.
    Dot,
    Identifier,
    Nil,
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Range,
    Template,
    With,
}

/// One lexed item. `start..end` is its text in the source; `Error` items
/// carry their message instead.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) msg: Option<String>,
}

impl Item {
    pub(super) fn val<'a>(&self, src: &'a str) -> &'a str {
        &src[self.start..self.end]
    }

    pub(super) fn is_keyword(&self) -> bool {
        matches!(
            self.kind,
            Kind::Block
                | Kind::Break
                | Kind::Continue
                | Kind::Define
                | Kind::Else
                | Kind::End
                | Kind::If
                | Kind::Range
                | Kind::Template
                | Kind::With
                | Kind::Nil
                | Kind::Dot
        )
    }

    /// Go's `item.String()`, used in "unexpected X in Y" errors.
    pub(super) fn describe(&self, src: &str) -> String {
        match self.kind {
            Kind::Eof => "EOF".into(),
            Kind::Error => self.msg.clone().unwrap_or_default(),
            _ if self.is_keyword() => format!("<{}>", self.val(src)),
            _ => {
                let v = self.val(src);
                if v.chars().count() > 10 {
                    let short: String = v.chars().take(10).collect();
                    format!("{}...", super::gofmt::quote(&short))
                } else {
                    super::gofmt::quote(v)
                }
            }
        }
    }
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

/// Go's `isSpace`: the white space allowed inside actions and trimmed by
/// trim markers.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

/// Lexes `src` into items ending with `Eof` or `Error`.
pub(super) fn lex(src: &str) -> Vec<Item> {
    let mut l = Lexer {
        src,
        pos: 0,
        items: Vec::new(),
        paren_depth: 0,
    };
    l.run();
    l.items
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    items: Vec<Item>,
    paren_depth: usize,
}

/// Lexing stopped at an error item.
struct Stop;

impl Lexer<'_> {
    fn emit(&mut self, kind: Kind, start: usize, end: usize) {
        self.items.push(Item {
            kind,
            start,
            end,
            msg: None,
        });
    }

    fn error(&mut self, at: usize, msg: String) -> Stop {
        self.items.push(Item {
            kind: Kind::Error,
            start: at,
            end: at,
            msg: Some(msg),
        });
        Stop
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn run(&mut self) {
        loop {
            // Text up to the next action.
            let start = self.pos;
            let Some(off) = self.rest().find(LEFT) else {
                if self.pos < self.src.len() {
                    self.emit(Kind::Text, start, self.src.len());
                }
                self.emit(Kind::Eof, self.src.len(), self.src.len());
                return;
            };
            let delim = start + off;
            let after = &self.src[delim + LEFT.len()..];
            let trim = has_left_trim_marker(after);
            let mut text_end = delim;
            if trim {
                text_end = start + self.src[start..delim].trim_end_matches(is_space).len();
            }
            if text_end > start {
                self.emit(Kind::Text, start, text_end);
            }
            self.pos = delim + LEFT.len();
            if trim {
                self.pos += 2;
            }
            if self.action(delim).is_err() {
                return;
            }
        }
    }

    /// Lexes one action whose `{{` is at `delim`; `self.pos` is just after
    /// it (and after its trim marker).
    fn action(&mut self, delim: usize) -> Result<(), Stop> {
        if self.rest().starts_with("/*") {
            return self.comment(delim);
        }
        self.emit(Kind::LeftDelim, delim, self.pos);
        self.paren_depth = 0;
        loop {
            // A right delimiter, possibly with its trim marker " -".
            let rest = self.rest();
            let trimmed_close = has_right_trim_marker(rest) && rest[2..].starts_with(RIGHT);
            if trimmed_close || rest.starts_with(RIGHT) {
                if self.paren_depth > 0 {
                    return Err(self.error(self.pos, "unclosed left paren".into()));
                }
                let start = self.pos;
                self.pos += RIGHT.len() + if trimmed_close { 2 } else { 0 };
                self.emit(Kind::RightDelim, start, self.pos);
                if trimmed_close {
                    let rest = self.rest();
                    self.pos += rest.len() - rest.trim_start_matches(is_space).len();
                }
                return Ok(());
            }
            self.token()?;
        }
    }

    /// `{{/* ... */}}`: emits nothing.
    fn comment(&mut self, delim: usize) -> Result<(), Stop> {
        let body = self.pos + 2;
        let Some(off) = self.src[body..].find("*/") else {
            return Err(self.error(delim, "unclosed comment".into()));
        };
        self.pos = body + off + 2;
        let rest = self.rest();
        if has_right_trim_marker(rest) && rest[2..].starts_with(RIGHT) {
            self.pos += 2 + RIGHT.len();
            let rest = self.rest();
            self.pos += rest.len() - rest.trim_start_matches(is_space).len();
        } else if rest.starts_with(RIGHT) {
            self.pos += RIGHT.len();
        } else {
            return Err(self.error(delim, "comment ends before closing delimiter".into()));
        }
        Ok(())
    }

    /// One token inside an action.
    fn token(&mut self) -> Result<(), Stop> {
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Err(self.error(start, "unclosed action".into()));
        };
        match c {
            c if is_space(c) => {
                // Stop before a space that starts a trimmed right delimiter.
                let mut end = start;
                for (i, ch) in self.src[start..].char_indices() {
                    if !is_space(ch) {
                        break;
                    }
                    let at = start + i;
                    let r = &self.src[at..];
                    if has_right_trim_marker(r) && r[2..].starts_with(RIGHT) {
                        break;
                    }
                    end = at + ch.len_utf8();
                }
                self.pos = end;
                if end > start {
                    self.emit(Kind::Space, start, end);
                }
            }
            '=' => {
                self.pos += 1;
                self.emit(Kind::Assign, start, self.pos);
            }
            ':' => {
                if !self.rest().starts_with(":=") {
                    return Err(self.error(start, "expected :=".into()));
                }
                self.pos += 2;
                self.emit(Kind::Declare, start, self.pos);
            }
            '|' => {
                self.pos += 1;
                self.emit(Kind::Pipe, start, self.pos);
            }
            '"' => self.quote(start)?,
            '`' => {
                let Some(off) = self.src[start + 1..].find('`') else {
                    return Err(self.error(start, "unterminated raw quoted string".into()));
                };
                self.pos = start + 1 + off + 1;
                self.emit(Kind::RawStr, start, self.pos);
            }
            '$' => {
                self.pos += 1;
                self.field_or_variable(start, Kind::Variable)?;
            }
            '\'' => self.char_constant(start)?,
            '.' => {
                let next = self.src[start + 1..].chars().next();
                if next.is_some_and(|n| n.is_ascii_digit()) {
                    self.number(start)?;
                } else {
                    self.pos += 1;
                    self.field_or_variable(start, Kind::Field)?;
                }
            }
            '+' | '-' | '0'..='9' => self.number(start)?,
            c if is_alnum(c) => self.identifier(start)?,
            '(' => {
                self.pos += 1;
                self.paren_depth += 1;
                self.emit(Kind::LeftParen, start, self.pos);
            }
            ')' => {
                self.pos += 1;
                // Emitted first, as in Go, so that the parser reports it.
                self.emit(Kind::RightParen, start, self.pos);
                if self.paren_depth == 0 {
                    return Err(self.error(start, "unexpected right paren".into()));
                }
                self.paren_depth -= 1;
            }
            c if c.is_ascii() && !c.is_ascii_control() => {
                self.pos += 1;
                self.emit(Kind::Char, start, self.pos);
            }
            c => {
                return Err(self.error(
                    start,
                    format!("unrecognized character in action: {}", unicode_name(c)),
                ));
            }
        }
        Ok(())
    }

    fn quote(&mut self, start: usize) -> Result<(), Stop> {
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\n')) | None => {
                        return Err(self.error(start, "unterminated quoted string".into()));
                    }
                    Some(_) => {}
                },
                '\n' => return Err(self.error(start, "unterminated quoted string".into())),
                '"' => {
                    self.pos = start + 1 + i + 1;
                    self.emit(Kind::Str, start, self.pos);
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(self.error(start, "unterminated quoted string".into()))
    }

    fn char_constant(&mut self, start: usize) -> Result<(), Stop> {
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\n')) | None => {
                        return Err(self.error(start, "unterminated character constant".into()));
                    }
                    Some(_) => {}
                },
                '\n' => {
                    return Err(self.error(start, "unterminated character constant".into()));
                }
                '\'' => {
                    self.pos = start + 1 + i + 1;
                    self.emit(Kind::CharConstant, start, self.pos);
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(self.error(start, "unterminated character constant".into()))
    }

    /// After `$` or `.`: the name, if any.
    fn field_or_variable(&mut self, start: usize, kind: Kind) -> Result<(), Stop> {
        if self.at_terminator() {
            let k = if kind == Kind::Variable {
                Kind::Variable
            } else {
                Kind::Dot
            };
            self.emit(k, start, self.pos);
            return Ok(());
        }
        let name_len = self.rest().len() - self.rest().trim_start_matches(is_alnum).len();
        self.pos += name_len;
        if !self.at_terminator() {
            let c = self.peek().unwrap_or(' ');
            return Err(self.error(self.pos, format!("bad character {}", unicode_name(c))));
        }
        self.emit(kind, start, self.pos);
        Ok(())
    }

    /// Go's `atTerminator`: what may follow a name.
    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) if is_space(c) => true,
            Some('.' | ',' | '|' | ':' | ')' | '(') => true,
            Some(_) => self.rest().starts_with(RIGHT),
        }
    }

    fn identifier(&mut self, start: usize) -> Result<(), Stop> {
        let len = self.rest().len() - self.rest().trim_start_matches(is_alnum).len();
        self.pos += len;
        if !self.at_terminator() {
            let c = self.peek().unwrap_or(' ');
            return Err(self.error(self.pos, format!("bad character {}", unicode_name(c))));
        }
        let kind = match &self.src[start..self.pos] {
            "block" => Kind::Block,
            "break" => Kind::Break,
            "continue" => Kind::Continue,
            "define" => Kind::Define,
            "else" => Kind::Else,
            "end" => Kind::End,
            "if" => Kind::If,
            "range" => Kind::Range,
            "nil" => Kind::Nil,
            "template" => Kind::Template,
            "with" => Kind::With,
            "true" | "false" => Kind::Bool,
            _ => Kind::Identifier,
        };
        self.emit(kind, start, self.pos);
        Ok(())
    }

    fn number(&mut self, start: usize) -> Result<(), Stop> {
        if !self.scan_number() {
            let text = self.src[start..self.pos].to_string();
            return Err(self.error(
                start,
                format!("bad number syntax: {}", super::gofmt::quote(&text)),
            ));
        }
        if matches!(self.peek(), Some('+' | '-')) {
            // Complex: 1+2i.
            if !self.scan_number() || !self.src[..self.pos].ends_with('i') {
                let text = self.src[start..self.pos].to_string();
                return Err(self.error(
                    start,
                    format!("bad number syntax: {}", super::gofmt::quote(&text)),
                ));
            }
            self.emit(Kind::Complex, start, self.pos);
            return Ok(());
        }
        let kind = if self.src[..self.pos].ends_with('i') {
            Kind::Complex
        } else {
            Kind::Number
        };
        self.emit(kind, start, self.pos);
        Ok(())
    }

    fn accept(&mut self, valid: &str) -> bool {
        match self.peek() {
            Some(c) if valid.contains(c) => {
                self.pos += c.len_utf8();
                true
            }
            _ => false,
        }
    }

    fn accept_run(&mut self, valid: &str) {
        while self.accept(valid) {}
    }

    /// Go's `scanNumber`: false if an alphanumeric follows.
    fn scan_number(&mut self) -> bool {
        self.accept("+-");
        let mut digits = "0123456789_";
        if self.accept("0") {
            if self.accept("xX") {
                digits = "0123456789abcdefABCDEF_";
            } else if self.accept("oO") {
                digits = "01234567_";
            } else if self.accept("bB") {
                digits = "01_";
            }
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if digits.len() == 11 && self.accept("eE") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        if digits.len() == 23 && self.accept("pP") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        self.accept("i");
        if self.peek().is_some_and(is_alnum) {
            self.pos += self.peek().map_or(1, char::len_utf8);
            return false;
        }
        true
    }
}

/// `{{- ` : a dash and a space after the left delimiter.
fn has_left_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(char::from(b[1]))
}

/// ` -}}` : a space and a dash before the right delimiter.
fn has_right_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && is_space(char::from(b[0])) && b[1] == b'-'
}

/// Go's `%#U`: `U+0041 'A'`.
fn unicode_name(c: char) -> String {
    if super::gofmt::is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}
