/*!
The executor: walks a parsed template over the alert data (Prometheus) or
the notification data (Alertmanager), following Go's
`text/template/exec.go` with the `missingkey=zero` option both use (a
missing label is an empty string). Named templates come from the text
itself, then from a shared [`Library`] (Alertmanager's template files).

Execution is bounded so that no template can hang an evaluation or exhaust
memory or the stack: output and every string a function builds are capped
at [`MAX_OUTPUT`] bytes, evaluation steps at [`MAX_STEPS`] (functions that
copy lists or encode JSON count that work as steps), `{{template}}`
recursion at [`MAX_TEMPLATE_DEPTH`] and all nesting at [`MAX_EXEC_DEPTH`];
the lists and maps a template builds nest at most `MAX_VALUE_DEPTH` deep.

In an HTML field, the literal text written goes through an `html::Context`,
which escapes what actions print for where they print it.
*/

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::funcs::{self, Dialect, Func, Param, Sig};
use super::gofmt;
use super::html;
use super::json;
use super::parse::{Arg, Branch, List, Node, Pipe};
use super::value::{AlertV, DataV, Dot, LabelMap, Sample, Time, Value, sorted_pairs};
use super::{Data, QueryFn};

/// Largest output, and largest string any function may build, in bytes.
pub(super) const MAX_OUTPUT: usize = 1 << 20;
/// Deepest `{{template}}`/`tmpl` recursion.
pub(super) const MAX_TEMPLATE_DEPTH: usize = 100;
/// Deepest nesting of pipelines, control structures and template calls
/// together. This is what bounds the executor's stack: a level costs up to
/// about 5 KiB in a debug build (a parenthesized argument; far less in
/// release), so 250 levels stay well within the 2 MiB of a tokio worker or
/// test thread (`worst_case_nesting_fits_a_small_stack` checks it).
pub(super) const MAX_EXEC_DEPTH: usize = 250;
/// Most nodes and commands one execution may evaluate.
pub(super) const MAX_STEPS: u64 = 5_000_000;
/// Compiled regular expressions kept per execution.
const MAX_CACHED_REGEXES: usize = 64;

/// A named template of a shared set, with the file it was parsed from
/// (for the `line:col` of errors inside it).
#[derive(Debug, Clone)]
pub(super) struct LibEntry {
    pub(super) list: List,
    pub(super) file: Arc<str>,
    pub(super) text: Arc<str>,
}

/// Named templates shared by many texts, by name.
pub(super) type Library = BTreeMap<String, LibEntry>;

/// Where a named template's source is, when not in the executed text.
type Source = Option<(Arc<str>, Arc<str>)>;

/// What an execution runs: the main tree, its name and the defined ones.
pub(super) struct Program<'a> {
    pub(super) name: &'a str,
    pub(super) root: &'a List,
    pub(super) defs: &'a BTreeMap<String, List>,
    /// Named templates the text does not define itself.
    pub(super) lib: Option<&'a Library>,
    pub(super) dialect: Dialect,
    /// Escape what actions print for where they print it in HTML
    /// (Alertmanager's HTML fields), see `html.rs`.
    pub(super) html: bool,
}

impl Program<'_> {
    fn lookup(&self, name: &str) -> Option<(List, Source)> {
        if let Some(l) = self.defs.get(name) {
            return Some((l.clone(), None));
        }
        if name == self.name {
            return Some((self.root.clone(), None));
        }
        let e = self.lib?.get(name)?;
        Some((e.list.clone(), Some((e.file.clone(), e.text.clone()))))
    }
}

/// An execution error, located at the command that failed once known.
/// Boxed so that results stay small on the executor's recursive path.
#[derive(Debug)]
pub(super) struct ExecError(Box<ErrorInner>);

#[derive(Debug)]
struct ErrorInner {
    msg: String,
    /// Source range of the failing command.
    at: Option<(usize, usize)>,
    /// The file and text `at` is in, when not the executed text.
    src: Source,
}

impl ExecError {
    #[cold]
    #[inline(never)]
    fn new(msg: impl Into<String>) -> ExecError {
        ExecError(Box::new(ErrorInner {
            msg: msg.into(),
            at: None,
            src: None,
        }))
    }

    /// Records that the error's location is in `src`, unless already known.
    fn in_source(mut self, src: &Source) -> ExecError {
        if self.0.at.is_some() && self.0.src.is_none() {
            self.0.src = src.clone();
        }
        self
    }

    #[cold]
    #[inline(never)]
    fn locate(mut self, start: usize, end: usize) -> ExecError {
        if self.0.at.is_none() {
            self.0.at = Some((start, end));
        }
        self
    }

    /// `line:col: executing at <context>: message`, like Go's
    /// `ErrorContext` (contexts are cut at 20 characters).
    pub(super) fn render(&self, src: &str) -> String {
        let (file, src) = match &self.0.src {
            Some((file, text)) => (format!("{file}:"), &**text),
            None => (String::new(), src),
        };
        match self.0.at {
            Some((s, e)) => {
                let ctx = src.get(s..e).unwrap_or_default();
                let ctx = if ctx.chars().count() > 20 {
                    format!("{}...", ctx.chars().take(20).collect::<String>())
                } else {
                    ctx.to_string()
                };
                format!(
                    "{file}{}: executing at <{ctx}>: {}",
                    super::line_col(src, s),
                    self.0.msg
                )
            }
            None => self.0.msg.clone(),
        }
    }
}

type R<T> = Result<T, ExecError>;

/// How a list of nodes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) fn execute(
    prog: &Program<'_>,
    data: &Data,
    query: Option<&dyn QueryFn>,
) -> Result<String, ExecError> {
    let dot = Arc::new(Dot {
        labels: Arc::new(data.labels.clone()),
        external_labels: Arc::new(data.external_labels.clone()),
        external_url: Arc::from(data.external_url.as_str()),
        value: data.value,
    });
    let vars = vec![
        (Arc::from("$labels"), Value::Labels(dot.labels.clone())),
        (
            Arc::from("$externalLabels"),
            Value::Labels(dot.external_labels.clone()),
        ),
        (
            Arc::from("$externalURL"),
            Value::Str(dot.external_url.clone()),
        ),
        (Arc::from("$value"), Value::Float(dot.value)),
    ];
    let url = dot.external_url.clone();
    run(prog, Value::Dot(dot), vars, url, Time::ZERO, query)
}

/// Executes a notification template on `data` at `now` (for `since`).
pub(super) fn execute_notification(
    prog: &Program<'_>,
    data: Arc<DataV>,
    now: Time,
) -> Result<String, ExecError> {
    let url = data.external_url.clone();
    run(prog, Value::Data(data), Vec::new(), url, now, None)
}

fn run(
    prog: &Program<'_>,
    dot_value: Value,
    predeclared: Vec<(Arc<str>, Value)>,
    external_url: Arc<str>,
    now: Time,
    query: Option<&dyn QueryFn>,
) -> Result<String, ExecError> {
    let mut vars = vec![(Arc::from("$"), dot_value.clone())];
    vars.extend(predeclared);
    let mut st = State {
        prog,
        external_url,
        now,
        query,
        vars,
        out: String::new(),
        html: prog.html.then_some(html::Context::TEXT),
        depth: 0,
        tmpl_depth: 0,
        steps: 0,
        regexes: HashMap::new(),
    };
    // A text made only of definitions runs the definition of its own name,
    // as in Go.
    let main = match prog.defs.get(prog.name) {
        Some(def)
            if prog
                .root
                .iter()
                .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty())) =>
        {
            def.clone()
        }
        _ => prog.root.clone(),
    };
    st.walk_list(&dot_value, &main)?;
    Ok(st.out)
}

struct State<'a> {
    prog: &'a Program<'a>,
    external_url: Arc<str>,
    /// The time `since` counts from.
    now: Time,
    query: Option<&'a dyn QueryFn>,
    /// Variables in scope, innermost last; truncated when a scope ends.
    vars: Vec<(Arc<str>, Value)>,
    out: String,
    /// In an HTML field, where in the HTML the output is, after the
    /// template text written so far.
    html: Option<html::Context>,
    depth: usize,
    tmpl_depth: usize,
    steps: u64,
    regexes: HashMap<String, Result<regex::Regex, String>>,
}

impl State<'_> {
    fn step(&mut self) -> R<()> {
        self.charge(1)
    }

    /// Counts `n` steps of work (a function copying `n` elements counts
    /// them, so that loops of such calls stay bounded).
    fn charge(&mut self, n: u64) -> R<()> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > MAX_STEPS {
            return Err(ExecError::new(format!(
                "execution took more than {MAX_STEPS} steps"
            )));
        }
        Ok(())
    }

    fn enter(&mut self) -> R<()> {
        if self.depth >= MAX_EXEC_DEPTH {
            return Err(ExecError::new(format!(
                "execution nested deeper than {MAX_EXEC_DEPTH} levels"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn write(&mut self, s: &str) -> R<()> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(ExecError::new(format!("output exceeds {MAX_OUTPUT} bytes")));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn walk_list(&mut self, dot: &Value, list: &[Node]) -> R<Flow> {
        for n in list {
            let flow = self.walk(dot, n)?;
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Value, node: &Node) -> R<Flow> {
        self.step()?;
        match node {
            Node::Text(t) => {
                if let Some(ctx) = &mut self.html {
                    ctx.feed(t);
                }
                self.write(t)?
            }
            Node::Action(pipe) => {
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    self.print(&v)?;
                }
            }
            Node::If(b) => return self.walk_if_with(dot, b, false),
            Node::With(b) => return self.walk_if_with(dot, b, true),
            Node::Range(b) => return self.walk_range(dot, b),
            Node::Template { pos, name, pipe } => {
                let value = match pipe {
                    Some(p) => self.eval_pipeline(dot, p)?,
                    None => Value::Nil,
                };
                self.call_template(name, value)
                    .map_err(|e| e.locate(*pos, *pos + name.len() + 2))?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    /// Go's `printValue`: how an action shows its value.
    #[inline(never)]
    fn print(&mut self, v: &Value) -> R<()> {
        if let Some(ctx) = &mut self.html {
            let text = ctx.escape(v);
            return self.write(&text);
        }
        match v {
            Value::Str(s) | Value::Html(s) | Value::Url(s) => self.write(s),
            Value::Nil => self.write("<no value>"),
            // Go prints what a pointer points to.
            Value::Sample(_) => {
                let text = gofmt::sprint_value(v);
                self.write(text.strip_prefix('&').unwrap_or(&text))
            }
            other => self.write(&gofmt::sprint_value(other)),
        }
    }

    fn walk_if_with(&mut self, dot: &Value, b: &Branch, with: bool) -> R<Flow> {
        self.enter()?;
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let flow = if val.truth() {
            let dot = if with { &val } else { dot };
            self.walk_list(dot, &b.list)?
        } else if let Some(e) = &b.else_list {
            self.walk_list(dot, e)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        self.leave();
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Value, b: &Branch) -> R<Flow> {
        self.enter()?;
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let body = self.vars.len();
        let mut ran = false;
        let mut each = |st: &mut Self, index: Value, elem: Value| -> R<bool> {
            ran = true;
            let flow = st.one_iteration(b, body, index, elem)?;
            Ok(flow != Flow::Break)
        };
        match &val {
            Value::Samples(list) => {
                for (i, s) in list.iter().enumerate() {
                    if !each(self, Value::Int(i as i64), Value::Sample(s.clone()))? {
                        break;
                    }
                }
            }
            Value::Labels(m) | Value::Kv(m) => {
                for (k, v) in m.iter() {
                    if !each(self, Value::str(k), Value::str(v))? {
                        break;
                    }
                }
            }
            Value::Strings(list) => {
                for (i, e) in list.iter().enumerate() {
                    if !each(self, Value::Int(i as i64), Value::Str(e.clone()))? {
                        break;
                    }
                }
            }
            Value::Pairs(p) => {
                for i in 0..p.len() {
                    if !each(self, Value::Int(i as i64), Value::Pair(p.clone(), i))? {
                        break;
                    }
                }
            }
            Value::Alerts(list, _) => {
                for (i, a) in list.iter().enumerate() {
                    if !each(self, Value::Int(i as i64), Value::Alert(a.clone()))? {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                for (k, v) in m.iter() {
                    if !each(self, Value::str(k), v.clone())? {
                        break;
                    }
                }
            }
            Value::List(list) => {
                for (i, e) in list.iter().enumerate() {
                    if !each(self, Value::Int(i as i64), e.clone())? {
                        break;
                    }
                }
            }
            Value::Int(n) => {
                if b.pipe.decl.len() > 1 {
                    return Err(ExecError::new(format!(
                        "can't use {n} to iterate over more than one variable"
                    ))
                    .locate(b.pipe.pos, b.pipe.pos));
                }
                for i in 0..*n {
                    if !each(self, Value::Int(i), Value::Int(i))? {
                        break;
                    }
                }
            }
            Value::Nil => {}
            other => {
                let cmd = &b.pipe.cmds[0];
                return Err(ExecError::new(format!(
                    "range can't iterate over {}",
                    gofmt::sprint_value(other)
                ))
                .locate(cmd.start, cmd.end));
            }
        }
        let mut flow = Flow::Normal;
        if !ran && let Some(e) = &b.else_list {
            flow = self.walk_list(dot, e)?;
        }
        self.vars.truncate(mark);
        self.leave();
        Ok(flow)
    }

    /// One iteration of a range: sets the range's variables (Go's
    /// `setTopVar`: the element last, the index before it) and walks the
    /// body with the element as dot.
    fn one_iteration(&mut self, b: &Branch, body: usize, index: Value, elem: Value) -> R<Flow> {
        self.step()?;
        let decl = &b.pipe.decl;
        if b.pipe.is_assign {
            match decl.as_slice() {
                [v] => self.set_var(v, elem.clone())?,
                [k, v] => {
                    self.set_var(k, index)?;
                    self.set_var(v, elem.clone())?;
                }
                _ => {}
            }
        } else {
            if !decl.is_empty() {
                self.vars[body - 1].1 = elem.clone();
            }
            if decl.len() > 1 {
                self.vars[body - 2].1 = index;
            }
        }
        let flow = self.walk_list(&elem, &b.list);
        self.vars.truncate(body);
        Ok(match flow? {
            Flow::Continue => Flow::Normal,
            f => f,
        })
    }

    /// Runs template `name` with `value` as dot, in a fresh variable scope.
    fn call_template(&mut self, name: &str, value: Value) -> R<()> {
        let Some((tree, src)) = self.prog.lookup(name) else {
            return Err(ExecError::new(format!(
                "template {} not defined",
                gofmt::quote(name)
            )));
        };
        if self.tmpl_depth >= MAX_TEMPLATE_DEPTH {
            return Err(ExecError::new(format!(
                "exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})"
            )));
        }
        self.enter()?;
        let saved = std::mem::replace(&mut self.vars, vec![(Arc::from("$"), value.clone())]);
        self.tmpl_depth += 1;
        let r = self.walk_list(&value, &tree);
        self.tmpl_depth -= 1;
        self.vars = saved;
        self.leave();
        r.map(|_| ()).map_err(|e| e.in_source(&src))
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipe) -> R<Value> {
        self.enter()?;
        let mut value = None;
        for cmd in &pipe.cmds {
            self.step()?;
            let v = self
                .eval_command(dot, &cmd.args, value)
                .map_err(|e| e.locate(cmd.start, cmd.end))?;
            value = Some(v);
        }
        let value = value.unwrap_or(Value::Nil);
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(d, value.clone())
                    .map_err(|e| e.locate(pipe.pos, pipe.pos + d.len()))?;
            } else {
                self.vars.push((d.clone(), value.clone()));
            }
        }
        self.leave();
        Ok(value)
    }

    fn var_value(&self, name: &str) -> R<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ExecError::new(format!("undefined variable: {name}")))
    }

    fn set_var(&mut self, name: &str, value: Value) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| &**n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => Err(ExecError::new(format!("undefined variable: {name}"))),
        }
    }

    /// Go's `evalCommand`: `args[0]` decides; `fin` is the previous
    /// pipeline stage's value, passed as the last argument.
    fn eval_command(&mut self, dot: &Value, args: &[Arg], fin: Option<Value>) -> R<Value> {
        let rest = &args[1..];
        match &args[0] {
            Arg::Field(names) => self.eval_field_chain(dot, dot.clone(), names, rest, fin),
            Arg::Chain(node, names) => {
                let recv = self.eval_chain_head(dot, node)?;
                self.eval_field_chain(dot, recv, names, rest, fin)
            }
            Arg::Func(f) => self.eval_function(dot, *f, rest, fin),
            Arg::Variable(name, fields) => {
                let v = self.var_value(name)?;
                if fields.is_empty() {
                    not_a_function(args, fin.is_some())?;
                    return Ok(v);
                }
                self.eval_field_chain(dot, v, fields, rest, fin)
            }
            Arg::Pipe(p) => {
                not_a_function(args, fin.is_some())?;
                self.eval_pipeline(dot, p)
            }
            Arg::Nil => Err(ExecError::new("nil is not a command")),
            Arg::Dot => {
                not_a_function(args, fin.is_some())?;
                Ok(dot.clone())
            }
            Arg::Const(v) => {
                not_a_function(args, fin.is_some())?;
                Ok(v.clone())
            }
            Arg::Number(n) => {
                not_a_function(args, fin.is_some())?;
                Ok(n.ideal())
            }
        }
    }

    /// The value before the fields of `(pipeline).A` or `func.A`.
    fn eval_chain_head(&mut self, dot: &Value, node: &Arg) -> R<Value> {
        match node {
            Arg::Pipe(p) => self.eval_pipeline(dot, p),
            Arg::Func(f) => self.eval_function(dot, *f, &[], None),
            other => self.eval_arg(dot, other, Param::Any),
        }
    }

    fn eval_field_chain(
        &mut self,
        dot: &Value,
        receiver: Value,
        names: &[Arc<str>],
        args: &[Arg],
        fin: Option<Value>,
    ) -> R<Value> {
        let Some((last, path)) = names.split_last() else {
            return Ok(receiver);
        };
        let mut recv = receiver;
        // A missing entry of an `interface{}` map is a nil interface, which
        // Go refuses to walk through (a missing label is just "").
        let mut nil_interface = false;
        for name in path {
            if nil_interface {
                return Err(nil_interface_error(name));
            }
            let from_map = matches!(recv, Value::Map(_));
            recv = self.eval_field(dot, name, &[], None, recv)?;
            nil_interface = from_map && matches!(recv, Value::Nil);
        }
        if nil_interface {
            return Err(nil_interface_error(last));
        }
        self.eval_field(dot, last, args, fin, recv)
    }

    /// Go's `evalField`: a method of a time, a field of a struct or the
    /// entry of a map.
    fn eval_field(
        &mut self,
        dot: &Value,
        name: &str,
        args: &[Arg],
        fin: Option<Value>,
        recv: Value,
    ) -> R<Value> {
        let has_args = !args.is_empty() || fin.is_some();
        let field = |v: Option<Value>, recv: &Value| -> R<Value> {
            match v {
                None => Err(ExecError::new(format!(
                    "can't evaluate field {name} in type {}",
                    recv.type_name()
                ))),
                Some(_) if has_args => Err(ExecError::new(format!(
                    "{name} has arguments but cannot be invoked as function"
                ))),
                Some(v) => Ok(v),
            }
        };
        match &recv {
            // Prometheus' missingkey=zero: walking through a missing value
            // gives a missing value.
            Value::Nil => Ok(Value::Nil),
            Value::Time(t) => self.time_method(dot, *t, name, args, fin),
            Value::Dot(d) => {
                let v = match name {
                    "Labels" => Some(Value::Labels(d.labels.clone())),
                    "ExternalLabels" => Some(Value::Labels(d.external_labels.clone())),
                    "ExternalURL" => Some(Value::Str(d.external_url.clone())),
                    "Value" => Some(Value::Float(d.value)),
                    _ => None,
                };
                field(v, &recv)
            }
            Value::Data(d) => {
                let v = match name {
                    "Receiver" => Some(Value::Str(d.receiver.clone())),
                    "Status" => Some(Value::Str(d.status.clone())),
                    "Alerts" => Some(Value::Alerts(d.alerts.clone(), true)),
                    "GroupLabels" => Some(Value::Kv(d.group_labels.clone())),
                    "CommonLabels" => Some(Value::Kv(d.common_labels.clone())),
                    "CommonAnnotations" => Some(Value::Kv(d.common_annotations.clone())),
                    "ExternalURL" => Some(Value::Str(d.external_url.clone())),
                    "GroupKey" => Some(Value::Str(d.group_key.clone())),
                    "Escalated" => Some(Value::Bool(d.escalated)),
                    _ => None,
                };
                field(v, &recv)
            }
            Value::Alert(a) => {
                let v = match name {
                    "Status" => Some(Value::Str(a.status.clone())),
                    "Labels" => Some(Value::Kv(a.labels.clone())),
                    "Annotations" => Some(Value::Kv(a.annotations.clone())),
                    "StartsAt" => Some(Value::Time(a.starts_at)),
                    "EndsAt" => Some(Value::Time(a.ends_at)),
                    "GeneratorURL" => Some(Value::Str(a.generator_url.clone())),
                    "Fingerprint" => Some(Value::Str(a.fingerprint.clone())),
                    "AckedBy" => Some(Value::Str(a.acked_by.clone())),
                    _ => None,
                };
                field(v, &recv)
            }
            Value::Pair(p, i) => {
                let v = match name {
                    "Name" => Some(Value::Str(p[*i].0.clone())),
                    "Value" => Some(Value::Str(p[*i].1.clone())),
                    _ => None,
                };
                field(v, &recv)
            }
            Value::Kv(m) => self.kv_method(dot, m, name, args, fin),
            Value::Pairs(p) => {
                let v = match name {
                    "Names" => Value::Strings(p.iter().map(|(k, _)| k.clone()).collect()),
                    "Values" => Value::Strings(p.iter().map(|(_, v)| v.clone()).collect()),
                    "String" => Value::str(&gofmt::sprint_value(&recv)),
                    _ => return field(None, &recv),
                };
                self.collect_args(dot, &NO_ARGS, name, args, fin)?;
                Ok(v)
            }
            Value::Alerts(list, true) if matches!(name, "Firing" | "Resolved") => {
                self.collect_args(dot, &NO_ARGS, name, args, fin)?;
                let want = if name == "Firing" {
                    "firing"
                } else {
                    "resolved"
                };
                let sub: Vec<Arc<AlertV>> = list
                    .iter()
                    .filter(|a| &*a.status == want)
                    .cloned()
                    .collect();
                Ok(Value::Alerts(sub.into(), false))
            }
            Value::Duration(d) => {
                let d = *d;
                let v = match name {
                    "Seconds" => Value::Float(d as f64 / 1e9),
                    "Minutes" => Value::Float(d as f64 / 6e10),
                    "Hours" => Value::Float(d as f64 / 3.6e12),
                    "Milliseconds" => Value::Int(d / 1_000_000),
                    "Microseconds" => Value::Int(d / 1_000),
                    "Nanoseconds" => Value::Int(d),
                    "Abs" => Value::Duration(d.saturating_abs()),
                    "String" => Value::str(&gofmt::duration(d)),
                    _ => return field(None, &recv),
                };
                self.collect_args(dot, &NO_ARGS, name, args, fin)?;
                Ok(v)
            }
            Value::Sample(s) => {
                let v = match name {
                    "Labels" => Some(Value::Labels(s.labels.clone())),
                    "Value" => Some(Value::Float(s.value)),
                    _ => None,
                };
                field(v, &recv)
            }
            Value::Labels(m) => {
                if has_args {
                    return Err(ExecError::new(format!(
                        "{name} is not a method but has arguments"
                    )));
                }
                Ok(Value::str(m.get(name).map_or("", String::as_str)))
            }
            Value::Map(m) => {
                if has_args {
                    return Err(ExecError::new(format!(
                        "{name} is not a method but has arguments"
                    )));
                }
                Ok(m.get(name).cloned().unwrap_or(Value::Nil))
            }
            other => Err(ExecError::new(format!(
                "can't evaluate field {name} in type {}",
                other.type_name()
            ))),
        }
    }

    /// Alertmanager's `KV`: its methods, else the entry of the map (a
    /// missing one is `""`). `Remove` takes a `[]string` as in Go, or (a
    /// Minos extension) the names as separate strings.
    fn kv_method(
        &mut self,
        dot: &Value,
        m: &Arc<LabelMap>,
        name: &str,
        args: &[Arg],
        fin: Option<Value>,
    ) -> R<Value> {
        let v = match name {
            "SortedPairs" => Value::Pairs(sorted_pairs(m)),
            "Names" => Value::Strings(sorted_pairs(m).iter().map(|(k, _)| k.clone()).collect()),
            "Values" => Value::Strings(sorted_pairs(m).iter().map(|(_, v)| v.clone()).collect()),
            "String" => Value::str(&gofmt::sprint_value(&Value::Kv(m.clone()))),
            "Remove" => {
                let sig = Sig {
                    fixed: &[Param::Any],
                    variadic: Some(Param::Any),
                };
                let argv = self.collect_args(dot, &sig, name, args, fin)?;
                let keys: Vec<Arc<str>> = match argv.as_slice() {
                    [Value::Strings(l)] => l.to_vec(),
                    [Value::Nil] => Vec::new(),
                    list => {
                        let mut keys = Vec::new();
                        for v in list {
                            match v {
                                Value::Str(k) => keys.push(k.clone()),
                                other => {
                                    return Err(ExecError::new(format!(
                                        "wrong type for value; expected []string; got {}",
                                        other.type_name()
                                    )));
                                }
                            }
                        }
                        keys
                    }
                };
                let mut rest = (**m).clone();
                for k in keys {
                    rest.remove(&*k);
                }
                return Ok(Value::Kv(Arc::new(rest)));
            }
            _ => {
                if !args.is_empty() || fin.is_some() {
                    return Err(ExecError::new(format!(
                        "{name} is not a method but has arguments"
                    )));
                }
                return Ok(Value::str(m.get(name).map_or("", String::as_str)));
            }
        };
        self.collect_args(dot, &NO_ARGS, name, args, fin)?;
        Ok(v)
    }

    /// The methods of Go's `time.Time`.
    fn time_method(
        &mut self,
        dot: &Value,
        t: Time,
        name: &str,
        args: &[Arg],
        fin: Option<Value>,
    ) -> R<Value> {
        const NONE: Sig = NO_ARGS;
        const LAYOUT: Sig = Sig {
            fixed: &[Param::Str],
            variadic: None,
        };
        const TIME: Sig = Sig {
            fixed: &[Param::Time],
            variadic: None,
        };
        let sig = match name {
            "Format" => LAYOUT,
            "Sub" | "Before" | "After" | "Equal" => TIME,
            "Unix" | "UnixMilli" | "UnixNano" | "UTC" | "Local" | "String" | "Year" | "Month"
            | "Day" | "Hour" | "Minute" | "Second" | "Nanosecond" | "YearDay" | "Weekday"
            | "IsZero" => NONE,
            _ => {
                return Err(ExecError::new(format!(
                    "can't evaluate field {name} in type *time.Time"
                )));
            }
        };
        let argv = self.collect_args(dot, &sig, name, args, fin)?;
        let c = t.civil();
        let other = match argv.first() {
            Some(Value::Time(o)) => *o,
            _ => t,
        };
        let nanos = |t: Time| i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
        Ok(match name {
            "Sub" => {
                let d = nanos(t) - nanos(other);
                Value::Duration(d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
            }
            "Before" => Value::Bool(nanos(t) < nanos(other)),
            "After" => Value::Bool(nanos(t) > nanos(other)),
            "Equal" => Value::Bool(nanos(t) == nanos(other)),
            "Format" => {
                let layout = match &argv[0] {
                    Value::Str(s) => s.clone(),
                    _ => Arc::from(""),
                };
                if layout.len() > 1024 {
                    return Err(ExecError::new("error calling Format: layout too long"));
                }
                Value::str(&t.format(&layout))
            }
            "Unix" => Value::Int(t.secs),
            "UnixMilli" => Value::Int(t.secs.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)),
            "UnixNano" => Value::Int(
                t.secs
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.nanos)),
            ),
            "UTC" => Value::Time(t.in_zone(0, "UTC")),
            "Local" => Value::Time(t),
            "String" => Value::str(&t.to_string()),
            "Year" => Value::Int(c.year),
            "Month" => Value::str(super::value::MONTHS[c.month as usize - 1]),
            "Day" => Value::Int(i64::from(c.day)),
            "Hour" => Value::Int(i64::from(c.hour)),
            "Minute" => Value::Int(i64::from(c.minute)),
            "Second" => Value::Int(i64::from(c.second)),
            "Nanosecond" => Value::Int(i64::from(t.nanos)),
            "YearDay" => Value::Int(i64::from(c.yday + 1)),
            "Weekday" => Value::str(super::value::WEEKDAYS[c.weekday as usize]),
            _ => Value::Bool(t.is_zero()),
        })
    }

    /// Go's `evalCall` argument handling: arity, then each argument
    /// evaluated against its parameter type, the piped value last.
    fn collect_args(
        &mut self,
        dot: &Value,
        sig: &Sig,
        name: &str,
        args: &[Arg],
        fin: Option<Value>,
    ) -> R<Vec<Value>> {
        let num_in = args.len() + usize::from(fin.is_some());
        let nfixed = sig.fixed.len();
        let arity_ok = if sig.variadic.is_some() {
            num_in >= nfixed
        } else {
            num_in == nfixed
        };
        if !arity_ok {
            return Err(wrong_arg_count(name, sig, args.len(), num_in));
        }
        let mut argv = Vec::with_capacity(num_in);
        for (i, a) in args.iter().enumerate() {
            argv.push(self.eval_arg(dot, a, sig.param(i))?);
        }
        if let Some(v) = fin {
            argv.push(validate(v, sig.param(args.len()))?);
        }
        Ok(argv)
    }

    /// Go's `evalArg`: literals are checked against the parameter type
    /// directly, everything else is evaluated and then checked.
    fn eval_arg(&mut self, dot: &Value, arg: &Arg, p: Param) -> R<Value> {
        let v = match arg {
            Arg::Dot => dot.clone(),
            Arg::Nil => {
                return match p {
                    Param::Str => Err(ExecError::new("cannot assign nil to string")),
                    _ => Ok(Value::Nil),
                };
            }
            Arg::Field(names) => self.eval_field_chain(dot, dot.clone(), names, &[], None)?,
            Arg::Variable(name, fields) => {
                let v = self.var_value(name)?;
                self.eval_field_chain(dot, v, fields, &[], None)?
            }
            Arg::Pipe(pipe) => self.eval_pipeline(dot, pipe)?,
            Arg::Func(f) => self.eval_function(dot, *f, &[], None)?,
            Arg::Chain(node, fields) => {
                let recv = self.eval_chain_head(dot, node)?;
                self.eval_field_chain(dot, recv, fields, &[], None)?
            }
            Arg::Const(_) | Arg::Number(_) => return literal_arg(arg, p),
        };
        validate(v, p)
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        f: Func,
        args: &[Arg],
        fin: Option<Value>,
    ) -> R<Value> {
        if matches!(f, Func::And | Func::Or) {
            // Short-circuit: the first false (and) or true (or) argument,
            // else the last one.
            if args.is_empty() && fin.is_none() {
                return Err(wrong_arg_count(f.name(), &f.sig(), 0, 0));
            }
            let mut v = Value::Nil;
            for a in args {
                v = self.eval_arg(dot, a, Param::Any)?;
                if v.truth() == (f == Func::Or) {
                    return Ok(v);
                }
            }
            if let Some(fv) = fin {
                v = fv;
            }
            return Ok(v);
        }
        let argv = self.collect_args(dot, &f.sig(), f.name(), args, fin)?;
        if f == Func::Tmpl {
            // Recurses into the executor: kept off `call`'s large frame, and
            // its errors are reported where they happen, like `{{template}}`.
            return self.tmpl(argv);
        }
        match self.call(f, argv) {
            Ok(Value::Str(s)) if s.len() > MAX_OUTPUT => {
                Err(call_error(f, format!("result exceeds {MAX_OUTPUT} bytes")))
            }
            Ok(v) => Ok(v),
            Err(m) => Err(call_error(f, m)),
        }
    }

    /// Calls `f` with arguments already checked against its signature.
    #[inline(never)]
    fn call(&mut self, f: Func, argv: Vec<Value>) -> Result<Value, String> {
        use Func as F;
        let s = |i: usize| match argv.get(i) {
            Some(Value::Str(s)) => s.clone(),
            _ => Arc::from(""),
        };
        let arg = |i: usize| argv.get(i).cloned().unwrap_or(Value::Nil);
        let string = |s: String| Value::Str(Arc::from(s));
        match f {
            F::And | F::Or => Ok(arg(argv.len().saturating_sub(1))),
            F::Not => Ok(Value::Bool(!arg(0).truth())),
            F::Len => funcs::len(&arg(0)),
            F::Index => funcs::index(&argv),
            F::Slice => {
                // Slicing a built list copies it.
                if let Some(Value::List(l)) = argv.first() {
                    self.charge(l.len() as u64).map_err(|e| e.0.msg)?;
                }
                funcs::slice(&argv)
            }
            // Formatting costs its length; count it so loops over big values stay
            // bounded even when the text is thrown away (`len (print $x)`).
            F::Print | F::Println | F::Printf => {
                let text = match f {
                    F::Print => gofmt::sprint(&argv),
                    F::Println => gofmt::sprintln(&argv),
                    _ => gofmt::sprintf(&s(0), argv.get(1..).unwrap_or(&[]), MAX_OUTPUT)?,
                };
                self.charge(text.len() as u64 / 16).map_err(|e| e.0.msg)?;
                Ok(string(text))
            }
            F::Eq => funcs::eq(&argv),
            F::Ne | F::Lt | F::Le | F::Gt | F::Ge => funcs::compare(f, &arg(0), &arg(1)),
            F::Html | F::Js | F::Urlquery => {
                let text = funcs::eval_args(&argv);
                self.charge(text.len() as u64 / 16).map_err(|e| e.0.msg)?;
                Ok(string(match f {
                    F::Html => funcs::html_escape(&text),
                    F::Js => funcs::js_escape(&text),
                    _ => funcs::query_escape(&text),
                }))
            }
            F::Call => match arg(0) {
                Value::Nil => Err("call of nil".into()),
                v => Err(format!("non-function of type {}", v.type_name())),
            },
            F::Query => self.query(&s(0)),
            F::First => funcs::first(&arg(0)),
            F::Label => funcs::label(&s(0), &arg(1)),
            F::Value => funcs::value(&arg(0)),
            F::Strvalue => funcs::strvalue(&arg(0)),
            F::SortByLabel => funcs::sort_by_label(&s(0), &arg(1)),
            F::Args => funcs::args_map(&argv),
            F::ReReplaceAll => self.re_replace_all(&s(0), &s(1), &s(2)),
            F::SafeHtml if self.prog.dialect == Dialect::Alertmanager => Ok(Value::Html(s(0))),
            F::SafeHtml => Ok(arg(0)),
            F::Match => {
                let re = self.regex(&s(0))?;
                Ok(Value::Bool(re.is_match(&s(1))))
            }
            F::Title => Ok(string(funcs::title(
                &s(0),
                self.prog.dialect == Dialect::Alertmanager,
            ))),
            F::ToUpper => Ok(string(funcs::map_case(&s(0), true))),
            F::ToLower => Ok(string(funcs::map_case(&s(0), false))),
            F::GraphLink => Ok(string(funcs::graph_link(&s(0), 0))),
            F::TableLink => Ok(string(funcs::graph_link(&s(0), 1))),
            F::StripPort => Ok(string(funcs::strip_port(&s(0)))),
            F::StripDomain => Ok(string(funcs::strip_domain(&s(0)))),
            F::Humanize => funcs::humanize(&arg(0)),
            F::Humanize1024 => funcs::humanize1024(&arg(0)),
            F::HumanizeDuration => funcs::humanize_duration(&arg(0)),
            F::HumanizePercentage => funcs::humanize_percentage(&arg(0)),
            F::HumanizeTimestamp => funcs::humanize_timestamp(&arg(0)),
            F::ToTime => funcs::to_time(&arg(0)),
            F::PathPrefix => Ok(string(url_path(&self.external_url).to_string())),
            F::ExternalUrl => Ok(Value::Str(self.external_url.clone())),
            F::ParseDuration => funcs::parse_duration(&s(0)),
            F::Tmpl => Err("tmpl is called by eval_function".into()),
            F::TrimSpace => Ok(string(s(0).trim().to_string())),
            F::Join => funcs::join(&s(0), &arg(1)),
            F::SafeUrl => Ok(Value::Url(s(0))),
            F::UrlUnescape => funcs::url_unescape(&s(0)),
            F::StringSlice => Ok(Value::Strings(
                argv.iter()
                    .map(|v| match v {
                        Value::Str(s) => s.clone(),
                        _ => Arc::from(""),
                    })
                    .collect(),
            )),
            F::Date => {
                let (Some(Value::Time(t)), layout) = (argv.get(1), s(0)) else {
                    return Err("date needs a time".into());
                };
                if layout.len() > 1024 {
                    return Err("layout too long".into());
                }
                Ok(string(t.format(&layout)))
            }
            F::Tz => match argv.get(1) {
                Some(Value::Time(t)) => funcs::tz(&s(0), *t),
                _ => Err("tz needs a time".into()),
            },
            F::ToJson => {
                let text = json::to_json(&arg(0), MAX_OUTPUT)?;
                // Encoding costs its length; count it so loops stay bounded.
                self.charge(text.len() as u64 / 16).map_err(|e| e.0.msg)?;
                Ok(string(text))
            }
            F::List => funcs::list(&argv),
            F::Append => {
                let len = match argv.first() {
                    Some(Value::List(l)) => l.len(),
                    _ => 0,
                };
                self.charge((len + argv.len()) as u64)
                    .map_err(|e| e.0.msg)?;
                funcs::append(&argv)
            }
            F::Dict => funcs::dict(&argv),
            F::Since => match argv.first() {
                Some(Value::Time(t)) => {
                    let ns = |t: &Time| i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
                    let d = ns(&self.now) - ns(t);
                    Ok(Value::Duration(
                        d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
                    ))
                }
                _ => Err("since needs a time".into()),
            },
        }
    }

    fn query(&mut self, q: &str) -> Result<Value, String> {
        let Some(qf) = self.query else {
            return Err("queries are not available here".into());
        };
        let res = qf.query(q)?;
        let samples: Vec<Arc<Sample>> = res
            .into_iter()
            .map(|(labels, value)| {
                Arc::new(Sample {
                    labels: Arc::new(labels),
                    value,
                })
            })
            .collect();
        Ok(Value::Samples(samples.into()))
    }

    /// A compiled regular expression, cached for this execution; errors
    /// read like Go's `regexp` ones.
    fn regex(&mut self, pattern: &str) -> Result<regex::Regex, String> {
        if let Some(r) = self.regexes.get(pattern) {
            return r.clone();
        }
        let r = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| {
                let detail = match &e {
                    regex::Error::Syntax(s) => s
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                        .to_string(),
                    other => other.to_string(),
                };
                format!("error parsing regexp: {detail}: `{pattern}`")
            });
        if self.regexes.len() >= MAX_CACHED_REGEXES {
            self.regexes.clear();
        }
        self.regexes.insert(pattern.to_string(), r.clone());
        r
    }

    /// `Regexp.ReplaceAllString`, with Go's `$1`/`${name}` expansion.
    fn re_replace_all(&mut self, pattern: &str, repl: &str, text: &str) -> Result<Value, String> {
        let re = self.regex(pattern).map_err(|e| {
            let quoted = if pattern.contains('`') {
                gofmt::quote(pattern)
            } else {
                format!("`{pattern}`")
            };
            format!("regexp: Compile({quoted}): {e}")
        })?;
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in re.captures_iter(text) {
            let Some(m) = caps.get(0) else { continue };
            out.push_str(&text[last..m.start()]);
            caps.expand(repl, &mut out);
            last = m.end();
            if out.len() > MAX_OUTPUT {
                return Err(format!("result exceeds {MAX_OUTPUT} bytes"));
            }
        }
        out.push_str(&text[last..]);
        Ok(Value::Str(Arc::from(out)))
    }

    /// `tmpl "name" data`: a named template's output as a string.
    fn tmpl(&mut self, argv: Vec<Value>) -> R<Value> {
        let mut argv = argv.into_iter();
        let (Some(Value::Str(name)), Some(data)) = (argv.next(), argv.next()) else {
            return Err(ExecError::new("tmpl needs a name and data"));
        };
        let saved = std::mem::take(&mut self.out);
        let saved_html = self.html;
        let r = self.call_template(&name, data);
        self.html = saved_html;
        let produced = std::mem::replace(&mut self.out, saved);
        r?;
        Ok(Value::Str(Arc::from(produced)))
    }
}

/// The signature of a method without parameters.
const NO_ARGS: Sig = Sig {
    fixed: &[],
    variadic: None,
};

/// Go's `notAFunction`: only functions and methods take arguments.
fn not_a_function(args: &[Arg], has_final: bool) -> R<()> {
    if args.len() > 1 || has_final {
        return Err(ExecError::new(format!(
            "can't give argument to non-function {}",
            arg_text(&args[0])
        )));
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn wrong_arg_count(name: &str, sig: &Sig, nargs: usize, num_in: usize) -> ExecError {
    let want = sig.fixed.len();
    ExecError::new(if sig.variadic.is_some() {
        format!("wrong number of args for {name}: want at least {want} got {nargs}")
    } else {
        format!("wrong number of args for {name}: want {want} got {num_in}")
    })
}

#[cold]
#[inline(never)]
fn call_error(f: Func, msg: String) -> ExecError {
    ExecError::new(format!("error calling {}: {msg}", f.name()))
}

/// A literal argument checked against its parameter type, like Go's
/// `evalArg` does for constants.
#[inline(never)]
fn literal_arg(arg: &Arg, p: Param) -> R<Value> {
    let v = match arg {
        Arg::Const(c) => c.clone(),
        Arg::Number(n) => n.ideal(),
        _ => Value::Nil,
    };
    match (p, &v, arg) {
        (Param::Any, _, _) | (Param::Str, Value::Str(_), Arg::Const(_)) => Ok(v),
        (Param::Str, _, _) => Err(ExecError::new(format!(
            "expected string; found {}",
            arg_text(arg)
        ))),
        _ => Err(ExecError::new(format!(
            "can't handle {} for arg of type {}",
            arg_text(arg),
            p.go_type()
        ))),
    }
}

#[cold]
#[inline(never)]
fn nil_interface_error(field: &str) -> ExecError {
    ExecError::new(format!("nil pointer evaluating interface {{}}.{field}"))
}

/// Go's `validateType`: whether a value may be passed as a parameter.
#[inline(never)]
fn validate(v: Value, p: Param) -> R<Value> {
    match (p, &v) {
        (Param::Any, _)
        | (Param::Str, Value::Str(_))
        | (Param::Sample, Value::Sample(_) | Value::Nil)
        | (Param::Samples, Value::Samples(_) | Value::Nil)
        | (Param::Strings, Value::Strings(_))
        | (Param::List, Value::List(_))
        | (Param::Time, Value::Time(_)) => Ok(v),
        (Param::Strings, Value::Nil) => Ok(Value::Strings(Arc::from([]))),
        (Param::List, Value::Nil) => Value::list(Vec::new()).map_err(ExecError::new),
        (Param::Str, Value::Nil) => Err(ExecError::new("invalid value; expected string")),
        (Param::Time, Value::Nil) => Err(ExecError::new("invalid value; expected time.Time")),
        _ => Err(ExecError::new(format!(
            "wrong type for value; expected {}; got {}",
            p.go_type(),
            v.type_name()
        ))),
    }
}

/// Source-like text of an argument, for error messages.
fn arg_text(a: &Arg) -> String {
    let fields = |f: &[Arc<str>]| f.iter().map(|n| format!(".{n}")).collect::<String>();
    match a {
        Arg::Func(f) => f.name().to_string(),
        Arg::Dot => ".".into(),
        Arg::Nil => "nil".into(),
        Arg::Const(Value::Str(s)) => gofmt::quote(s),
        Arg::Const(v) => gofmt::sprint_value(v),
        Arg::Number(n) => n.text.to_string(),
        Arg::Field(f) => fields(f),
        Arg::Variable(name, f) => format!("{name}{}", fields(f)),
        Arg::Pipe(_) => "(...)".into(),
        Arg::Chain(head, f) => format!("{}{}", arg_text(head), fields(f)),
    }
}

/// The path of a URL (`http://host:9090/prom?x` → `/prom`), like Go's
/// `url.URL.Path`.
fn url_path(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => url,
    }
}
