/*!
The parser: items into a tree of nodes, following Go's `text/template/parse`
so that the same texts are accepted and rejected, with the same checks Go
makes before execution: functions must exist, variables must be declared,
`{{break}}`/`{{continue}}` must be inside `{{range}}`, and a later pipeline
stage must be something that can take the previous value. One check Go leaves
to execution is made here: `dict`'s argument count and constant keys.

Parse errors carry a byte offset, turned into `line:col` by the caller.
*/

use std::collections::BTreeMap;
use std::sync::Arc;

use super::funcs::{self, Dialect, Func};
use super::lex::{self, Item, Kind};
use super::value::Value;

/// A list of nodes: a template body or a branch.
pub(super) type List = Arc<[Node]>;

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(Arc<str>),
    /// `{{pipeline}}`: printed unless it declares variables.
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    /// `{{template "name" pipeline}}`
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// `if`, `with` and `range`: a pipeline, a body and an optional `else`.
#[derive(Debug, Clone)]
pub(super) struct Branch {
    pub(super) pipe: Pipe,
    pub(super) list: List,
    pub(super) else_list: Option<List>,
}

/// A pipeline, possibly declaring (`:=`) or assigning (`=`) variables.
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub(super) pos: usize,
    pub(super) decl: Vec<Arc<str>>,
    pub(super) is_assign: bool,
    pub(super) cmds: Vec<Cmd>,
}

/// One stage of a pipeline: a function, field or value and its arguments.
/// `start..end` is its source text, quoted in execution errors.
#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// A function name.
    Func(Func),
    Dot,
    Nil,
    /// A literal: bool, string or character.
    Const(Value),
    Number(Number),
    /// `.A.B`
    Field(Vec<Arc<str>>),
    /// `$x.A.B`
    Variable(Arc<str>, Vec<Arc<str>>),
    /// `(pipeline)`
    Pipe(Box<Pipe>),
    /// `(pipeline).A.B` or `func.A.B`.
    Chain(Box<Arg>, Vec<Arc<str>>),
}

/// A numeric literal, with Go's "ideal constant" typing: it is a float64
/// when written with `.`, `e` or `p`, an int otherwise.
#[derive(Debug, Clone)]
pub(super) struct Number {
    pub(super) text: Arc<str>,
    pub(super) int: Option<i64>,
    pub(super) float: Option<f64>,
    pub(super) is_float_literal: bool,
}

impl Number {
    /// The value passed where any type is accepted.
    pub(super) fn ideal(&self) -> Value {
        match (self.is_float_literal, self.int, self.float) {
            (false, Some(i), _) => Value::Int(i),
            (_, _, Some(f)) => Value::Float(f),
            (_, Some(i), None) => Value::Int(i),
            (_, None, None) => Value::Nil,
        }
    }
}

/// A parse error at a byte offset.
#[derive(Debug)]
pub(super) struct ParseError {
    pub(super) pos: usize,
    pub(super) msg: String,
}

/// What `parse` produces: the main body and the `{{define}}`d templates.
pub(super) struct Parsed {
    pub(super) root: List,
    pub(super) defs: BTreeMap<String, List>,
}

/// Nesting of parentheses and control structures beyond which a template
/// is rejected, so that neither parsing nor execution can exhaust the stack.
pub(super) const MAX_PARSE_DEPTH: usize = 100;

type Result<T> = std::result::Result<T, ParseError>;

/// Parses `src`; `predeclared` are the variables the main body may use
/// besides `$`, `dialect` says which functions exist.
pub(super) fn parse(src: &str, predeclared: &[&str], dialect: Dialect) -> Result<Parsed> {
    let mut p = Parser {
        src,
        dialect,
        items: lex::lex(src),
        i: 0,
        vars: std::iter::once("$")
            .chain(predeclared.iter().copied())
            .map(Arc::from)
            .collect(),
        range_depth: 0,
        depth: 0,
        defs: BTreeMap::new(),
    };
    let root = p.parse_root()?;
    Ok(Parsed { root, defs: p.defs })
}

struct Parser<'a> {
    src: &'a str,
    dialect: Dialect,
    items: Vec<Item>,
    /// Index of the next item.
    i: usize,
    /// Variables in scope, innermost last.
    vars: Vec<Arc<str>>,
    range_depth: usize,
    depth: usize,
    defs: BTreeMap<String, List>,
}

/// What `text_or_action` found.
enum Step {
    Node(Node),
    /// `{{end}}` at this offset.
    End(usize),
    /// `{{else}}` at this offset.
    Else(usize),
}

impl Parser<'_> {
    fn err<T>(&self, pos: usize, msg: impl Into<String>) -> Result<T> {
        Err(ParseError {
            pos,
            msg: msg.into(),
        })
    }

    /// The next item; past the end, the last one (`Eof` or `Error`) again.
    fn next(&mut self) -> Item {
        let it = self.items[self.i.min(self.items.len() - 1)].clone();
        self.i += 1;
        it
    }

    fn peek(&self) -> &Item {
        &self.items[self.i.min(self.items.len() - 1)]
    }

    fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let it = self.next();
            if it.kind != Kind::Space {
                return it;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let it = self.next_non_space();
        self.backup();
        it
    }

    /// Go's `unexpected`: lexer errors are reported as themselves.
    fn unexpected<T>(&self, it: &Item, context: &str) -> Result<T> {
        if it.kind == Kind::Error {
            return self.err(it.start, it.describe(self.src));
        }
        self.err(
            it.start,
            format!("unexpected {} in {context}", it.describe(self.src)),
        )
    }

    fn expect(&mut self, kind: Kind, context: &str) -> Result<Item> {
        let it = self.next_non_space();
        if it.kind != kind {
            return self.unexpected(&it, context);
        }
        Ok(it)
    }

    fn enter(&mut self, pos: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return self.err(pos, format!("nesting deeper than {MAX_PARSE_DEPTH} levels"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn parse_root(&mut self) -> Result<List> {
        let mut root = Vec::new();
        while self.peek().kind != Kind::Eof {
            if self.peek().kind == Kind::LeftDelim {
                let mark = self.i;
                self.next();
                if self.next_non_space().kind == Kind::Define {
                    self.definition()?;
                    continue;
                }
                self.i = mark;
            }
            match self.text_or_action()? {
                Step::Node(n) => root.push(n),
                Step::End(pos) => return self.err(pos, "unexpected {{end}}"),
                Step::Else(pos) => return self.err(pos, "unexpected {{else}}"),
            }
        }
        Ok(root.into())
    }

    /// `{{define "name"}} ... {{end}}`, after the `define` keyword.
    fn definition(&mut self) -> Result<()> {
        const CONTEXT: &str = "define clause";
        let it = self.next_non_space();
        if !matches!(it.kind, Kind::Str | Kind::RawStr) {
            return self.unexpected(&it, CONTEXT);
        }
        let name = unquote(it.val(self.src)).map_err(|msg| ParseError { pos: it.start, msg })?;
        self.expect(Kind::RightDelim, CONTEXT)?;
        let list = self.sub_tree(|p| {
            let (list, end) = p.item_list()?;
            match end {
                Step::End(_) => Ok(list),
                Step::Else(pos) => p.err(pos, format!("unexpected {{{{else}}}} in {CONTEXT}")),
                Step::Node(_) => p.err(it.start, "internal error"),
            }
        })?;
        self.add_def(it.start, name, list)
    }

    /// Go's `Tree.add`: a name may be defined twice only if one of the two
    /// bodies is empty.
    fn add_def(&mut self, pos: usize, name: String, list: List) -> Result<()> {
        match self.defs.get(&name) {
            Some(old) if !is_empty(old) && !is_empty(&list) => self.err(
                pos,
                format!(
                    "template: multiple definition of template {}",
                    super::gofmt::quote(&name)
                ),
            ),
            Some(old) if is_empty(&list) && !is_empty(old) => Ok(()),
            _ => {
                self.defs.insert(name, list);
                Ok(())
            }
        }
    }

    /// Parses a separate template body (`define`, `block`): it starts with
    /// only `$` in scope and outside any `range`.
    fn sub_tree<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let vars = std::mem::replace(&mut self.vars, vec![Arc::from("$")]);
        let range_depth = std::mem::replace(&mut self.range_depth, 0);
        let r = f(self);
        self.vars = vars;
        self.range_depth = range_depth;
        r
    }

    /// Nodes up to an `{{end}}` or `{{else}}`.
    fn item_list(&mut self) -> Result<(List, Step)> {
        let mut list = Vec::new();
        while self.peek_non_space().kind != Kind::Eof {
            match self.text_or_action()? {
                Step::Node(n) => list.push(n),
                other => return Ok((list.into(), other)),
            }
        }
        let it = self.peek().clone();
        self.err(it.start, "unexpected EOF")
    }

    fn text_or_action(&mut self) -> Result<Step> {
        let it = self.next_non_space();
        match it.kind {
            Kind::Text => Ok(Step::Node(Node::Text(Arc::from(it.val(self.src))))),
            Kind::LeftDelim => self.action(),
            _ => self.unexpected(&it, "input"),
        }
    }

    fn action(&mut self) -> Result<Step> {
        let it = self.next_non_space();
        match it.kind {
            Kind::Block => return self.block_control(),
            Kind::Break | Kind::Continue => return self.break_control(&it),
            Kind::Else => return self.else_control(it.start),
            Kind::End => {
                self.expect(Kind::RightDelim, "end")?;
                return Ok(Step::End(it.start));
            }
            Kind::If => return Ok(Step::Node(self.if_control()?)),
            Kind::Range => return Ok(Step::Node(self.range_control()?)),
            Kind::Template => return Ok(Step::Node(self.template_control()?)),
            Kind::With => return Ok(Step::Node(self.with_control()?)),
            _ => {}
        }
        self.backup();
        let pipe = self.pipeline("command", Kind::RightDelim)?;
        Ok(Step::Node(Node::Action(pipe)))
    }

    fn break_control(&mut self, it: &Item) -> Result<Step> {
        let word = it.val(self.src);
        if self.range_depth == 0 {
            return self.err(it.start, format!("{{{{{word}}}}} outside {{{{range}}}}"));
        }
        let next = self.next_non_space();
        if next.kind != Kind::RightDelim {
            return self.unexpected(&next, &format!("{{{{{word}}}}}"));
        }
        Ok(Step::Node(if it.kind == Kind::Break {
            Node::Break
        } else {
            Node::Continue
        }))
    }

    fn else_control(&mut self, pos: usize) -> Result<Step> {
        // "{{else if" and "{{else with": leave the keyword for the
        // enclosing control to chain.
        if matches!(self.peek_non_space().kind, Kind::If | Kind::With) {
            self.next_non_space();
            self.backup();
            return Ok(Step::Else(pos));
        }
        self.expect(Kind::RightDelim, "else")?;
        Ok(Step::Else(pos))
    }

    fn if_control(&mut self) -> Result<Node> {
        Ok(Node::If(self.control("if")?))
    }

    fn with_control(&mut self) -> Result<Node> {
        Ok(Node::With(self.control("with")?))
    }

    fn range_control(&mut self) -> Result<Node> {
        Ok(Node::Range(self.control("range")?))
    }

    /// Go's `parseControl`: variables declared in the pipeline stay in
    /// scope until the `{{end}}`.
    fn control(&mut self, context: &str) -> Result<Branch> {
        let start = self.peek().start;
        self.enter(start)?;
        let mark = self.vars.len();
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let else_list = match next {
            Step::Else(_) => {
                let chained = self.peek().kind;
                if context == "if" && chained == Kind::If {
                    self.next();
                    Some(Arc::from(vec![self.if_control()?]))
                } else if context == "with" && chained == Kind::With {
                    self.next();
                    Some(Arc::from(vec![self.with_control()?]))
                } else {
                    let (list, next) = self.item_list()?;
                    if let Step::Else(pos) = next {
                        return self.err(pos, "expected end; found {{else}}");
                    }
                    Some(list)
                }
            }
            _ => None,
        };
        self.vars.truncate(mark);
        self.leave();
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    fn template_name(&mut self, context: &str) -> Result<(usize, String)> {
        let it = self.next_non_space();
        if !matches!(it.kind, Kind::Str | Kind::RawStr) {
            return self.unexpected(&it, context);
        }
        let name = unquote(it.val(self.src)).map_err(|msg| ParseError { pos: it.start, msg })?;
        Ok((it.start, name))
    }

    fn template_control(&mut self) -> Result<Node> {
        const CONTEXT: &str = "template clause";
        let (pos, name) = self.template_name(CONTEXT)?;
        let pipe = if self.next_non_space().kind != Kind::RightDelim {
            self.backup();
            Some(self.pipeline(CONTEXT, Kind::RightDelim)?)
        } else {
            None
        };
        Ok(Node::Template { pos, name, pipe })
    }

    /// `{{block "name" pipeline}} body {{end}}`: defines `name` and
    /// executes it in place.
    fn block_control(&mut self) -> Result<Step> {
        const CONTEXT: &str = "block clause";
        let (pos, name) = self.template_name(CONTEXT)?;
        let pipe = self.pipeline(CONTEXT, Kind::RightDelim)?;
        self.enter(pos)?;
        let list = self.sub_tree(|p| {
            let (list, end) = p.item_list()?;
            match end {
                Step::End(_) => Ok(list),
                Step::Else(at) => p.err(at, format!("unexpected {{{{else}}}} in {CONTEXT}")),
                Step::Node(_) => p.err(pos, "internal error"),
            }
        })?;
        self.leave();
        self.add_def(pos, name.clone(), list)?;
        Ok(Step::Node(Node::Template {
            pos,
            name,
            pipe: Some(pipe),
        }))
    }

    /// Go's `pipeline`: optional declarations, then commands up to `end`.
    fn pipeline(&mut self, context: &str, end: Kind) -> Result<Pipe> {
        let pos = self.peek_non_space().start;
        let mut pipe = Pipe {
            pos,
            decl: Vec::new(),
            is_assign: false,
            cmds: Vec::new(),
        };
        loop {
            if self.peek_non_space().kind != Kind::Variable {
                break;
            }
            let var_index = {
                self.next_non_space();
                self.i - 1
            };
            let v = self.items[var_index].clone();
            let next = self.peek_non_space();
            match next.kind {
                Kind::Assign | Kind::Declare => {
                    pipe.is_assign = next.kind == Kind::Assign;
                    self.next_non_space();
                    let name: Arc<str> = Arc::from(v.val(self.src));
                    pipe.decl.push(name.clone());
                    self.vars.push(name);
                    break;
                }
                Kind::Char if next.val(self.src) == "," => {
                    self.next_non_space();
                    let name: Arc<str> = Arc::from(v.val(self.src));
                    pipe.decl.push(name.clone());
                    self.vars.push(name);
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().kind {
                            Kind::Variable | Kind::RightDelim | Kind::RightParen => continue,
                            _ => {
                                return self.err(next.start, "range can only initialize variables");
                            }
                        }
                    }
                    return self.err(next.start, format!("too many declarations in {context}"));
                }
                _ => {
                    self.i = var_index;
                    break;
                }
            }
        }
        loop {
            let it = self.next_non_space();
            if it.kind == end {
                self.check_pipeline(&pipe, context)?;
                return Ok(pipe);
            }
            match it.kind {
                Kind::Bool
                | Kind::CharConstant
                | Kind::Complex
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawStr
                | Kind::Str
                | Kind::Variable
                | Kind::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                _ => return self.unexpected(&it, context),
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str) -> Result<()> {
        if pipe.cmds.is_empty() {
            return self.err(pipe.pos, format!("missing value for {context}"));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Arg::Const(_) | Arg::Dot | Arg::Nil | Arg::Number(_)
            ) {
                return self.err(
                    c.start,
                    format!("non executable command in pipeline stage {}", i + 1),
                );
            }
        }
        for (i, c) in pipe.cmds.iter().enumerate() {
            if matches!(c.args[0], Arg::Func(Func::Dict)) {
                self.check_dict(c, i > 0)?;
            }
        }
        Ok(())
    }

    /// `dict`'s arguments as far as the text shows them: an odd number of
    /// them, or a constant key that is not a string, can never work, so the
    /// template is refused now rather than when it runs (as in Go).
    fn check_dict(&self, c: &Cmd, piped: bool) -> Result<()> {
        let args = &c.args[1..];
        let n = args.len() + usize::from(piped);
        if !n.is_multiple_of(2) {
            return self.err(c.start, format!("{}, got {n}", funcs::DICT_ODD));
        }
        for key in args.iter().step_by(2) {
            let constant = match key {
                Arg::Const(Value::Str(_)) => false,
                Arg::Const(_) | Arg::Number(_) | Arg::Nil => true,
                _ => false,
            };
            if constant {
                return self.err(c.start, funcs::DICT_KEY);
            }
        }
        Ok(())
    }

    fn command(&mut self) -> Result<Cmd> {
        let start = self.peek_non_space().start;
        let mut args = Vec::new();
        let end;
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let it = self.next();
            match it.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => {
                    self.backup();
                    end = it.start;
                }
                Kind::Pipe => end = it.start,
                _ => return self.unexpected(&it, "operand"),
            }
            break;
        }
        if args.is_empty() {
            return self.err(start, "empty command");
        }
        let end = self.src[start..end.max(start)]
            .trim_end_matches(lex::is_space)
            .len()
            + start;
        Ok(Cmd { start, end, args })
    }

    fn operand(&mut self) -> Result<Option<Arg>> {
        let start = self.peek().start;
        let Some(term) = self.term()? else {
            return Ok(None);
        };
        if self.peek().kind != Kind::Field {
            return Ok(Some(term));
        }
        let mut fields = Vec::new();
        while self.peek().kind == Kind::Field {
            let it = self.next();
            fields.push(Arc::from(&it.val(self.src)[1..]));
        }
        Ok(Some(match term {
            Arg::Field(mut f) => {
                f.extend(fields);
                Arg::Field(f)
            }
            Arg::Variable(name, mut f) => {
                f.extend(fields);
                Arg::Variable(name, f)
            }
            Arg::Const(_) | Arg::Number(_) | Arg::Nil | Arg::Dot => {
                let text = self.src[start..self.items[self.i.saturating_sub(1)].end].to_string();
                let term_text = text.split('.').next().unwrap_or_default();
                return self.err(
                    start,
                    format!("unexpected . after term {}", super::gofmt::quote(term_text)),
                );
            }
            other => Arg::Chain(Box::new(other), fields),
        }))
    }

    fn term(&mut self) -> Result<Option<Arg>> {
        let it = self.next_non_space();
        let text = it.val(self.src);
        let arg = match it.kind {
            Kind::Identifier => match Func::lookup(text, self.dialect) {
                Some(f) => Arg::Func(f),
                None => {
                    return self.err(
                        it.start,
                        format!("function {} not defined", super::gofmt::quote(text)),
                    );
                }
            },
            Kind::Dot => Arg::Dot,
            Kind::Nil => Arg::Nil,
            Kind::Variable => {
                if !self.vars.iter().any(|v| &**v == text) {
                    return self.err(
                        it.start,
                        format!("undefined variable {}", super::gofmt::quote(text)),
                    );
                }
                Arg::Variable(Arc::from(text), Vec::new())
            }
            Kind::Field => Arg::Field(vec![Arc::from(&text[1..])]),
            Kind::Bool => Arg::Const(Value::Bool(text == "true")),
            Kind::CharConstant => {
                let c = unquote_char(text).map_err(|msg| ParseError { pos: it.start, msg })?;
                Arg::Number(Number {
                    text: Arc::from(text),
                    int: Some(i64::from(c as u32)),
                    float: Some(f64::from(c as u32)),
                    is_float_literal: false,
                })
            }
            Kind::Complex => {
                return self.err(it.start, "complex numbers are not supported");
            }
            Kind::Number => {
                Arg::Number(parse_number(text).map_err(|msg| ParseError { pos: it.start, msg })?)
            }
            Kind::LeftParen => {
                self.enter(it.start)?;
                let pipe = self.pipeline("parenthesized pipeline", Kind::RightParen)?;
                self.leave();
                Arg::Pipe(Box::new(pipe))
            }
            Kind::Str | Kind::RawStr => {
                let s = unquote(text).map_err(|msg| ParseError { pos: it.start, msg })?;
                Arg::Const(Value::str(&s))
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        };
        Ok(Some(arg))
    }
}

/// Adds the names `{{ template }}` calls in `list` to `out`.
pub(super) fn called_templates(list: &[Node], out: &mut std::collections::BTreeSet<String>) {
    for n in list {
        match n {
            Node::Template { name, .. } => {
                out.insert(name.clone());
            }
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                called_templates(&b.list, out);
                if let Some(e) = &b.else_list {
                    called_templates(e, out);
                }
            }
            _ => {}
        }
    }
}

/// Go's `IsEmptyTree`: only white space.
fn is_empty(list: &[Node]) -> bool {
    list.iter().all(|n| match n {
        Node::Text(t) => t.trim().is_empty(),
        _ => false,
    })
}

/// `strconv.Unquote` for `"..."` and `` `...` `` strings.
pub(super) fn unquote(text: &str) -> std::result::Result<String, String> {
    let bad = || "invalid syntax".to_string();
    if let Some(raw) = text.strip_prefix('`') {
        let raw = raw.strip_suffix('`').ok_or_else(bad)?;
        return Ok(raw.replace('\r', ""));
    }
    let body = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next().ok_or_else(bad)?;
        match e {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            'x' => {
                let h: String = (0..2).filter_map(|_| chars.next()).collect();
                let v = u8::from_str_radix(&h, 16).map_err(|_| bad())?;
                if h.len() != 2 {
                    return Err(bad());
                }
                out.push(v);
            }
            '0'..='7' => {
                let mut s = String::from(e);
                for _ in 0..2 {
                    s.push(chars.next().ok_or_else(bad)?);
                }
                let v = u32::from_str_radix(&s, 8).map_err(|_| bad())?;
                out.push(u8::try_from(v).map_err(|_| bad())?);
            }
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let h: String = (0..n).filter_map(|_| chars.next()).collect();
                if h.len() != n || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                let v = u32::from_str_radix(&h, 16).map_err(|_| bad())?;
                let c = char::from_u32(v).ok_or_else(bad)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err(bad()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A character constant `'x'`.
fn unquote_char(text: &str) -> std::result::Result<char, String> {
    let bad = || "invalid syntax".to_string();
    let body = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .ok_or_else(bad)?;
    if body == "\"" {
        return Ok('"');
    }
    if body == "\\'" {
        return Ok('\'');
    }
    if body.contains('"') {
        return Err(bad());
    }
    let s = unquote(&format!("\"{body}\""))?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        (Some(_), Some(_)) => Err(format!("malformed character constant: {text}")),
        _ => Err(bad()),
    }
}

/// Go's `newNumber` for a number literal.
fn parse_number(text: &str) -> std::result::Result<Number, String> {
    let illegal = || format!("illegal number syntax: {}", super::gofmt::quote(text));
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let is_hex = lower.starts_with("0x");
    let is_float_literal = if is_hex {
        lower.contains('p')
    } else {
        body.contains(['.', 'e', 'E'])
    };
    let int = parse_int(body).and_then(|u| {
        if neg {
            0i64.checked_sub_unsigned(u)
        } else {
            i64::try_from(u).ok()
        }
    });
    let mut float = int.map(|i| i as f64);
    if int.is_none() {
        if let Some(u) = parse_int(body) {
            // Fits in a uint64 but not an int64.
            float = Some(if neg { -(u as f64) } else { u as f64 });
        } else {
            let f = parse_float(body).ok_or_else(illegal)?;
            if !is_float_literal {
                return Err(format!("integer overflow: {}", super::gofmt::quote(text)));
            }
            float = Some(if neg { -f } else { f });
        }
    }
    let mut int = int;
    if int.is_none()
        && let Some(f) = float
        && f.fract() == 0.0
        && f.abs() < 9.2e18
    {
        int = Some(f as i64);
    }
    Ok(Number {
        text: Arc::from(text),
        int,
        float,
        is_float_literal,
    })
}

/// Removes Go's digit-separating underscores, which must sit between
/// digits (or after a base prefix).
fn strip_underscores(s: &str) -> Option<String> {
    if !s.contains('_') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let prev_ok = i > 0 && (b[i - 1].is_ascii_alphanumeric());
            let next_ok = i + 1 < b.len() && b[i + 1].is_ascii_alphanumeric();
            if !prev_ok || !next_ok {
                return None;
            }
        }
    }
    Some(s.replace('_', ""))
}

/// `strconv.ParseUint(s, 0, 64)` for an unsigned literal.
fn parse_int(s: &str) -> Option<u64> {
    let s = strip_underscores(s)?;
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d.to_string(), 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d.to_string(), 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d.to_string(), 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (lower[1..].to_string(), 8)
    } else {
        (lower, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

/// `strconv.ParseFloat` for an unsigned literal, hexadecimal floats
/// included.
fn parse_float(s: &str) -> Option<f64> {
    let s = strip_underscores(s)?;
    let lower = s.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        let (mant, exp) = hex.split_once('p')?;
        let exp: i32 = exp.parse().ok()?;
        let (int_part, frac_part) = mant.split_once('.').unwrap_or((mant, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let mut v = 0f64;
        for c in int_part.chars() {
            v = v * 16.0 + f64::from(c.to_digit(16)?);
        }
        let mut scale = 1.0 / 16.0;
        for c in frac_part.chars() {
            v += f64::from(c.to_digit(16)?) * scale;
            scale /= 16.0;
        }
        return Some(v * 2f64.powi(exp));
    }
    if !lower
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'))
    {
        return None;
    }
    lower.parse::<f64>().ok()
}
