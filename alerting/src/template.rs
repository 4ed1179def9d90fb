//! Templates of alert labels and annotations, in Prometheus' syntax: Go's
//! `text/template` with Prometheus' functions, so that rules from community
//! collections work unchanged.
//!
//! A template sees what Prometheus gives it: `.Labels`, `.ExternalLabels`,
//! `.ExternalURL` and `.Value`, also as `$labels`, `$externalLabels`,
//! `$externalURL` and `$value`. A missing label is an empty string
//! (Prometheus' `missingkey=zero`).
//!
//! ```
//! use alerting::template::{Data, Template};
//!
//! let t = Template::parse(
//!     "annotation summary",
//!     "{{ $labels.instance }} is {{ printf \"%.1f\" $value }}% full",
//! )
//! .unwrap();
//! let mut data = Data { value: 93.26, ..Data::default() };
//! data.labels.insert("instance".into(), "db1:9100".into());
//! assert_eq!(t.execute(&data, None).unwrap(), "db1:9100 is 93.3% full");
//! ```
//!
//! # Differences from Prometheus
//!
//! Deliberate:
//! - Comparisons (`eq`, `lt`, `gt`...) accept an int and a float together,
//!   so `gt $value 90` works; Go rejects it ("incompatible types for
//!   comparison") and only `gt $value 90.0` works there.
//! - `title` follows current Prometheus (`cases.Title`): `don't` → `Don't`
//!   (Prometheus 2.42 and older: `Don'T`).
//! - `tmpl` (console templates only, in Prometheus) is available.
//! - Execution is bounded (see `exec.rs`): output and any string at 1 MiB,
//!   5 million steps, `{{template}}` recursion at 100 levels, nesting at
//!   100 levels when parsing and 250 when executing.
//! - Newer Go features are accepted: `range` over an integer (Go 1.22),
//!   `{{else with}}` (Go 1.23).
//!
//! Not supported: complex numbers; methods other than those of the time
//! `toTime` returns (`Format`, `Unix`, `Year`...); `call` (templates have no
//! function values, so it always fails as it would in Go); `printf`'s `%x`
//! and `%b` of floats. Printing a whole query result shows its samples
//! where Go shows pointers.
//!
//! # Layout
//!
//! - `lex`: the text into items (text, delimiters, tokens).
//! - `parse`: items into a tree; unknown functions and undeclared variables
//!   are rejected here.
//! - `exec`: walks the tree over the data, within limits.
//! - `funcs`: Go's builtins and Prometheus' functions.
//! - `gofmt`: Go's `fmt`/`strconv` formatting (`%v`, `printf`, floats).
//! - `value`: the values templates compute with, and time formatting.

mod exec;
mod funcs;
mod gofmt;
mod lex;
mod parse;
#[cfg(test)]
mod tests;
mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

/// What a template sees: `$labels`, `$value`, `$externalLabels`, `$externalURL`.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
}

/// The samples of an instant vector: labels and value of each.
pub type QueryResult = Vec<(BTreeMap<String, String>, f64)>;

/// Runs an instant PromQL query at the evaluation time, for the `query` function.
pub trait QueryFn {
    fn query(&self, q: &str) -> Result<QueryResult, String>;
}

/// Why a template could not be parsed or executed. `message` starts with
/// the `line:col` of the problem where one is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

/// Output beyond this many bytes is an execution error.
pub const MAX_OUTPUT_BYTES: usize = exec::MAX_OUTPUT;

/// `{{template}}` calls nested deeper than this are an execution error.
pub const MAX_TEMPLATE_DEPTH: usize = exec::MAX_TEMPLATE_DEPTH;

/// The variables Prometheus declares before every alert template.
const PREDECLARED: [&str; 4] = ["$labels", "$externalLabels", "$externalURL", "$value"];

/// A parsed template. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    text: Arc<str>,
    root: parse::List,
    defs: Arc<BTreeMap<String, parse::List>>,
}

impl Template {
    /// Parses `text`; `name` names it in errors (e.g. `annotation summary`).
    ///
    /// Rejects what Go rejects before execution: syntax errors, unknown
    /// functions and undeclared variables.
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let parsed = parse::parse(text, &PREDECLARED).map_err(|e| TemplateError {
            name: name.to_string(),
            message: format!("{}: {}", line_col(text, e.pos), e.msg),
        })?;
        Ok(Template {
            name: name.to_string(),
            text: Arc::from(text),
            root: parsed.root,
            defs: Arc::new(parsed.defs),
        })
    }

    /// The name given to [`Template::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template's source text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Executes the template on `data`; `query` serves the `query` function
    /// (without it, `query` fails).
    pub fn execute(
        &self,
        data: &Data,
        query: Option<&dyn QueryFn>,
    ) -> Result<String, TemplateError> {
        let prog = exec::Program {
            name: &self.name,
            root: &self.root,
            defs: &self.defs,
        };
        exec::execute(&prog, data, query).map_err(|e| TemplateError {
            name: self.name.clone(),
            message: e.render(&self.text),
        })
    }
}

/// `line:col` (both 1-based, columns in characters) of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> String {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    format!("{line}:{col}")
}
