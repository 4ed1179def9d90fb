//! Templates of alert labels and annotations, in Prometheus' syntax: Go's
//! `text/template` with Prometheus' functions, so that rules from community
//! collections work unchanged; and, with the same engine, notification
//! templates in Alertmanager's dialect (see [Notifications](#notifications)).
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
//! # Notifications
//!
//! [`Template::parse_notification`] parses a receiver's text field (a Slack
//! title, an email subject) with Alertmanager's functions instead of
//! Prometheus': `toUpper`, `toLower`, `title`, `trimSpace`, `join`,
//! `match`, `safeHtml`, `safeUrl`, `urlUnescape`, `reReplaceAll`,
//! `stringSlice`, `date`, `tz`, `since`, `humanizeDuration`, `toJson`,
//! `list`, `append`, `dict` and Go's builtins. `toJson` encodes any value as
//! Go's `json.Marshal` does (see `json.rs`); `list a b` is a
//! `[]interface {}`, `append (list a) b` a new one with more elements (its
//! first argument must be such a list, as in Go), and `dict "k" v "k2" v2` a
//! `map[string]interface {}`; `range`, `index`, `len` and `slice` work on
//! them. Lists and maps nest at most 100 levels deep. Prometheus' rule
//! templates have none of these four. [`Template::execute_notification`]
//! runs it on a [`NotificationData`], Alertmanager's `template.Data`:
//! `.Receiver`, `.Status`, `.Alerts` (with `.Firing` and `.Resolved`),
//! `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations` (`KV` maps with `.SortedPairs`,
//! `.Names`, `.Values`, `.Remove`), `.ExternalURL`; each alert has
//! `.Status`, `.Labels`, `.Annotations`, `.StartsAt`, `.EndsAt` (times, with
//! Go's `time.Time` methods), `.GeneratorURL` and `.Fingerprint`. A
//! [`TemplateSet`] holds the `{{ define }}`s of template files, which every
//! text may call with `{{ template "name" . }}`; a text's own definitions
//! come first, then the set's.
//!
//! Minos additions: `.GroupKey` and `.Escalated` (the group was not
//! acknowledged in time) on the data, `.AckedBy` (who acknowledged the
//! alert, or empty) on each alert; `KV.Remove` also takes the names as
//! separate strings (`.Remove "a" "b"`), where Go takes only a `[]string`.
//!
//! HTML fields (an email's `html`) escape what actions print for where they
//! print it, after Go's `html/template`: text, attribute values and, in URL
//! attributes such as `href` and `src`, the URL filter (`#ZgotmplZ` for a
//! scheme other than `http`, `https` or `mailto`, unless from `safeUrl`) and
//! percent-encoding; `safeHtml`'s values are written as they are in text.
//! `html.rs` lists what it does not cover (JavaScript and CSS contexts).
//!
//! Differences from Alertmanager: `.Receiver` is the receiver's name as is
//! (Alertmanager escapes regular expression characters in it); HTML fields
//! follow the text actually written (Go decides each action's context from
//! the template alone and rejects branches that end in different contexts),
//! keep HTML comments (Go removes them) and escape actions in scripts and
//! styles as HTML; `dict` with an odd number of arguments or a constant key
//! that is not a string is refused when the template is parsed (Go fails when
//! it runs); `append` always copies; a firing alert's `.EndsAt` is Go's zero
//! time.
//!
//! # Layout
//!
//! - `lex`: the text into items (text, delimiters, tokens).
//! - `parse`: items into a tree; unknown functions and undeclared variables
//!   are rejected here.
//! - `exec`: walks the tree over the data, within limits.
//! - `funcs`: Go's builtins, Prometheus' and Alertmanager's functions.
//! - `html`: the contexts of HTML fields and their escaping.
//! - `json`: `toJson`, Go's JSON encoding of template values.
//! - `gofmt`: Go's `fmt`/`strconv` formatting (`%v`, `printf`, floats).
//! - `value`: the values templates compute with (for both dialects), and
//!   time formatting.

mod exec;
mod funcs;
mod gofmt;
mod html;
mod json;
mod lex;
#[cfg(test)]
mod notify_tests;
mod parse;
#[cfg(test)]
mod tests;
mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

use funcs::Dialect;
use value::{AlertV, DataV, Time};

/// What a template sees: `$labels`, `$value`, `$externalLabels`, `$externalURL`.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
}

/// What a notification template sees: Alertmanager's `template.Data`, plus
/// Minos' `GroupKey` and `Escalated`.
#[derive(Debug, Clone, Default)]
pub struct NotificationData {
    pub receiver: String,
    /// `firing` if any alert fires, else `resolved`.
    pub status: String,
    pub alerts: Vec<NotificationAlert>,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
    pub group_key: String,
    /// Sent because the group was not acknowledged in time.
    pub escalated: bool,
    /// When the notification is rendered (Unix milliseconds): what `since`
    /// counts from.
    pub now_ms: i64,
}

/// One alert of a [`NotificationData`]: Alertmanager's `template.Alert`, plus
/// Minos' `AckedBy`.
#[derive(Debug, Clone, Default)]
pub struct NotificationAlert {
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub starts_at_ms: i64,
    /// Unix milliseconds; `None` is Go's zero time (a firing alert).
    pub ends_at_ms: Option<i64>,
    pub generator_url: String,
    pub fingerprint: String,
    /// Who acknowledged the alert; empty if nobody did.
    pub acked_by: String,
}

impl NotificationData {
    fn to_value(&self) -> Arc<DataV> {
        let kv = |m: &BTreeMap<String, String>| Arc::new(m.clone());
        let alerts: Vec<Arc<AlertV>> = self
            .alerts
            .iter()
            .map(|a| {
                Arc::new(AlertV {
                    status: Arc::from(a.status.as_str()),
                    labels: kv(&a.labels),
                    annotations: kv(&a.annotations),
                    starts_at: Time::from_millis(a.starts_at_ms),
                    ends_at: a.ends_at_ms.map_or(Time::ZERO, Time::from_millis),
                    generator_url: Arc::from(a.generator_url.as_str()),
                    fingerprint: Arc::from(a.fingerprint.as_str()),
                    acked_by: Arc::from(a.acked_by.as_str()),
                })
            })
            .collect();
        Arc::new(DataV {
            receiver: Arc::from(self.receiver.as_str()),
            status: Arc::from(self.status.as_str()),
            alerts: alerts.into(),
            group_labels: kv(&self.group_labels),
            common_labels: kv(&self.common_labels),
            common_annotations: kv(&self.common_annotations),
            external_url: Arc::from(self.external_url.as_str()),
            group_key: Arc::from(self.group_key.as_str()),
            escalated: self.escalated,
        })
    }
}

/// Named templates shared by notification texts: the `{{ define }}`s of
/// Alertmanager's template files. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    lib: Arc<exec::Library>,
}

impl TemplateSet {
    pub fn new() -> TemplateSet {
        TemplateSet::default()
    }

    /// Parses a template file named `name` (its base name, as Go names it)
    /// in Alertmanager's dialect and adds its definitions, replacing those
    /// of the same name already in the set (as Go's later `Parse` calls
    /// do), except that an empty definition never replaces a non-empty
    /// one. The file's text outside definitions becomes template `name`.
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<(), TemplateError> {
        let parsed = parse::parse(text, &[], Dialect::Alertmanager).map_err(|e| TemplateError {
            name: name.to_string(),
            message: format!("{}: {}", line_col(text, e.pos), e.msg),
        })?;
        let file: Arc<str> = Arc::from(name);
        let src: Arc<str> = Arc::from(text);
        let lib = Arc::make_mut(&mut self.lib);
        let defs = parsed
            .defs
            .into_iter()
            .chain(std::iter::once((name.to_string(), parsed.root)));
        for (def, list) in defs {
            let empty = list
                .iter()
                .all(|n| matches!(n, parse::Node::Text(t) if t.trim().is_empty()));
            if empty && lib.contains_key(&def) {
                continue;
            }
            lib.insert(
                def,
                exec::LibEntry {
                    list,
                    file: file.clone(),
                    text: src.clone(),
                },
            );
        }
        Ok(())
    }

    /// Whether the set defines template `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.lib.contains_key(name)
    }

    /// The names of the set's templates, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.lib.keys().map(String::as_str)
    }
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
    dialect: Dialect,
}

impl Template {
    /// Parses `text`; `name` names it in errors (e.g. `annotation summary`).
    ///
    /// Rejects what Go rejects before execution: syntax errors, unknown
    /// functions and undeclared variables.
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        Template::parse_dialect(name, text, &PREDECLARED, Dialect::Prometheus)
    }

    /// Parses a notification text in Alertmanager's dialect (its functions,
    /// no predeclared variables); `name` names it in errors.
    pub fn parse_notification(name: &str, text: &str) -> Result<Template, TemplateError> {
        Template::parse_dialect(name, text, &[], Dialect::Alertmanager)
    }

    fn parse_dialect(
        name: &str,
        text: &str,
        predeclared: &[&str],
        dialect: Dialect,
    ) -> Result<Template, TemplateError> {
        let parsed = parse::parse(text, predeclared, dialect).map_err(|e| TemplateError {
            name: name.to_string(),
            message: format!("{}: {}", line_col(text, e.pos), e.msg),
        })?;
        Ok(Template {
            name: name.to_string(),
            text: Arc::from(text),
            root: parsed.root,
            defs: Arc::new(parsed.defs),
            dialect,
        })
    }

    /// The names of the templates this text calls with `{{ template }}`
    /// that it does not define itself.
    pub fn called_templates(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let lists = std::iter::once(&self.root).chain(self.defs.values());
        for l in lists {
            parse::called_templates(l, &mut out);
        }
        out.retain(|n| !self.defs.contains_key(n) && *n != self.name);
        out
    }

    /// Executes a notification template (from
    /// [`Template::parse_notification`]) on `data`, with the named
    /// templates of `set`; `html` escapes what actions print, as
    /// Alertmanager's HTML fields do.
    pub fn execute_notification(
        &self,
        data: &NotificationData,
        set: Option<&TemplateSet>,
        html: bool,
    ) -> Result<String, TemplateError> {
        if self.dialect != Dialect::Alertmanager {
            return Err(TemplateError {
                name: self.name.clone(),
                message: "not a notification template".into(),
            });
        }
        let prog = exec::Program {
            name: &self.name,
            root: &self.root,
            defs: &self.defs,
            lib: set.map(|s| &*s.lib),
            dialect: self.dialect,
            html,
        };
        exec::execute_notification(&prog, data.to_value(), Time::from_millis(data.now_ms)).map_err(
            |e| TemplateError {
                name: self.name.clone(),
                message: e.render(&self.text),
            },
        )
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
        if self.dialect != Dialect::Prometheus {
            return Err(TemplateError {
                name: self.name.clone(),
                message: "a notification template runs on notification data".into(),
            });
        }
        let prog = exec::Program {
            name: &self.name,
            root: &self.root,
            defs: &self.defs,
            lib: None,
            dialect: self.dialect,
            html: false,
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
