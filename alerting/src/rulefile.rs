/*!
Defines Prometheus rule files: their YAML (`groups`, `interval`, `limit`, `query_offset`,
group `labels`, alerting and recording rules), the checks Prometheus makes when it loads
them, and the typed [`RuleFile`] the evaluator runs.

Every problem is reported, not just the first, as a [`RuleError`] naming the file, the
line and column where serde-saphyr knows them, the group, the rule (1-based, as
Prometheus counts) and what is wrong. A file with any error yields no groups at all: a
caller reloading rules keeps the groups it has until every file is valid again.

Boundary: this file knows YAML and names; evaluation is in `eval`, templates in
`template` (only parsed here, to reject bad ones early).
*/

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, de::IgnoredAny};
use serde_saphyr::{MessageFormatter, Spanned};

use crate::template::Template;

/// One rule file, validated.
#[derive(Debug, Clone)]
pub struct RuleFile {
    /// The path as given; it is part of each group's key and of their evaluation offset.
    pub path: PathBuf,
    pub groups: Vec<Group>,
}

/// A rule group: rules evaluated together, in order, on one interval.
#[derive(Debug, Clone)]
pub struct Group {
    /// The file the group came from, as given (Prometheus' `file` of the group).
    pub file: String,
    pub name: String,
    /// `interval`, when the group sets one; otherwise the global evaluation interval
    /// applies (see [`Group::interval_or`]).
    pub interval_ms: Option<i64>,
    /// `query_offset`, when the group sets one: rules query (and write) at `ts - offset`.
    pub query_offset_ms: Option<i64>,
    /// `limit`: 0 is none. A rule returning more series (or alerts) fails as a whole.
    pub limit: usize,
    /// The group's `labels` (already merged into each rule's labels).
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
    /// Line of the group in its file (0 when unknown).
    pub line: u64,
}

impl Group {
    /// The key Prometheus identifies a group by: `file;name`.
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }

    /// The group's interval, or `default_ms` when it sets none.
    pub fn interval_or(&self, default_ms: i64) -> i64 {
        self.interval_ms.filter(|&i| i > 0).unwrap_or(default_ms)
    }
}

/// An alerting or a recording rule.
#[derive(Debug, Clone)]
pub enum Rule {
    Alerting(AlertingRule),
    Recording(RecordingRule),
}

impl Rule {
    /// The alert name or the recorded metric name.
    pub fn name(&self) -> &str {
        match self {
            Rule::Alerting(r) => &r.name,
            Rule::Recording(r) => &r.name,
        }
    }

    pub fn expr(&self) -> &str {
        match self {
            Rule::Alerting(r) => &r.expr,
            Rule::Recording(r) => &r.expr,
        }
    }

    /// The rule's labels (group labels included), as written (templates unexpanded).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            Rule::Alerting(r) => &r.labels,
            Rule::Recording(r) => &r.labels,
        }
    }

    /// Line of the rule in its file (0 when unknown).
    pub fn line(&self) -> u64 {
        match self {
            Rule::Alerting(r) => r.line,
            Rule::Recording(r) => r.line,
        }
    }
}

/// `record: NAME` with `expr` and `labels` (labels are not templates here).
#[derive(Debug, Clone)]
pub struct RecordingRule {
    pub name: String,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    pub line: u64,
}

/// `alert: NAME` with `expr`, `for`, `keep_firing_for`, `labels` and `annotations`
/// (the values of both may be templates).
#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub name: String,
    pub expr: String,
    /// `for`: how long the condition must hold before the alert fires (0: at once).
    pub for_ms: i64,
    /// `keep_firing_for`: how long a firing alert keeps firing once its condition is gone.
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub line: u64,
    /// The parsed templates of `labels` and `annotations`, in their maps' order.
    label_templates: Vec<Template>,
    annotation_templates: Vec<Template>,
}

impl AlertingRule {
    /// The labels with their parsed templates, in name order.
    pub fn label_templates(&self) -> impl Iterator<Item = (&str, &Template)> {
        self.labels
            .keys()
            .map(String::as_str)
            .zip(self.label_templates.iter())
    }

    /// The annotations with their parsed templates, in name order.
    pub fn annotation_templates(&self) -> impl Iterator<Item = (&str, &Template)> {
        self.annotations
            .keys()
            .map(String::as_str)
            .zip(self.annotation_templates.iter())
    }
}

/// Where in a rule file something is wrong, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(u64, u64)>,
    /// The group's name, when the problem is inside a group.
    pub group: Option<String>,
    /// The rule's 1-based index in its group and its name (`""` when it has none).
    pub rule: Option<(usize, String)>,
    pub message: String,
}

impl fmt::Display for RuleError {
    /// `FILE:LINE:COL: group "G": rule N ("NAME"): what is wrong`; the parts that do not
    /// apply are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(g) = &self.group {
            write!(f, "group {g:?}: ")?;
        }
        if let Some((i, name)) = &self.rule {
            write!(f, "rule {i} ({name:?}): ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for RuleError {}

/// Two or more rules of a file with the same name and the same labels, which
/// `promtool check rules` reports as a lint ("duplicate rule(s) found").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl RuleFile {
    /// How many rules the file has, over all groups.
    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }

    /// Rules of the whole file that share their name and labels, as `promtool check rules`
    /// lints them (each set once, sorted by name then labels). Recording rules repeated
    /// within one group are already errors; the rest (alerts with the same labels, a
    /// recording rule repeated in another group) are legal but suspicious.
    pub fn duplicate_rules(&self) -> Vec<Duplicate> {
        let mut all: Vec<(&str, &BTreeMap<String, String>)> = self
            .groups
            .iter()
            .flat_map(|g| g.rules.iter().map(|r| (r.name(), r.labels())))
            .collect();
        all.sort();
        let mut out: Vec<Duplicate> = Vec::new();
        for w in all.windows(2) {
            if w[0] == w[1]
                && out
                    .last()
                    .is_none_or(|d| (d.name.as_str(), &d.labels) != w[1])
            {
                out.push(Duplicate {
                    name: w[1].0.to_string(),
                    labels: w[1].1.clone(),
                });
            }
        }
        out
    }
}

/// Reads and validates one rule file.
pub fn parse_file(path: &Path) -> Result<RuleFile, Vec<RuleError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => Err(vec![RuleError {
            file: path.to_path_buf(),
            position: None,
            group: None,
            rule: None,
            message: format!("failed to read: {e}"),
        }]),
    }
}

/// Reads and validates every file; all errors of all files, or every file.
pub fn parse_files<P: AsRef<Path>>(
    paths: &[P],
) -> Result<Vec<(PathBuf, RuleFile)>, Vec<RuleError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match parse_file(p.as_ref()) {
            Ok(f) => files.push((p.as_ref().to_path_buf(), f)),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Validates the text of a rule file; `path` names it in errors and in group keys.
pub fn parse(path: &Path, text: &str) -> Result<RuleFile, Vec<RuleError>> {
    let err = |position, group: Option<&str>, rule: Option<(usize, &str)>, message| RuleError {
        file: path.to_path_buf(),
        position,
        group: group.map(str::to_string),
        rule: rule.map(|(i, n)| (i, n.to_string())),
        message,
    };
    // An empty file (or one of comments only) is a file without groups, as in Prometheus.
    let raw: RawFile = if is_blank_yaml(text) {
        RawFile { groups: None }
    } else {
        match serde_saphyr::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let (position, group, rule) = yaml_error_context(&e, text);
                let rule = rule.as_ref().map(|(i, n)| (*i, n.as_str()));
                let mut message = yaml_message(&e);
                if let Some(key) = position.and_then(|(l, _)| key_at_line(text, l))
                    && !message.contains(&format!("`{key}`"))
                {
                    message = format!("{key}: {message}");
                }
                return Err(vec![err(position, group.as_deref(), rule, message)]);
            }
        }
    };

    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut seen_groups = HashSet::new();
    for g in raw.groups.unwrap_or_default() {
        let gpos = pos(&g);
        let g = g.value;
        let name = g
            .name
            .as_ref()
            .map(|n| n.value.0.clone())
            .unwrap_or_default();
        let gname = Some(name.as_str());
        if name.is_empty() {
            errors.push(err(gpos, None, None, "group name must not be empty".into()));
        } else if !seen_groups.insert(name.clone()) {
            errors.push(err(
                gpos,
                None,
                None,
                format!("group name {name:?} is repeated in the same file"),
            ));
        }
        let interval_ms = match &g.interval {
            Some(s) => match parse_model_duration(&s.value.0) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(err(pos(s), gname, None, format!("invalid interval: {e}")));
                    None
                }
            },
            None => None,
        };
        let query_offset_ms = match &g.query_offset {
            Some(s) => match parse_model_duration(&s.value.0) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(err(
                        pos(s),
                        gname,
                        None,
                        format!("invalid query_offset: {e}"),
                    ));
                    None
                }
            },
            None => None,
        };
        let limit = match &g.limit {
            Some(l) if l.value < 0 => {
                errors.push(err(
                    pos(l),
                    gname,
                    None,
                    format!("invalid limit {}: must be 0 (no limit) or more", l.value),
                ));
                0
            }
            Some(l) => l.value as usize,
            None => 0,
        };
        let group_labels = texts(g.labels.unwrap_or_default());
        for k in group_labels.keys() {
            if !is_label_name(k) || k == "__name__" {
                errors.push(err(gpos, gname, None, format!("invalid label name: {k}")));
            }
        }

        let mut rules = Vec::new();
        let mut positions = Vec::new();
        for (i, r) in g.rules.unwrap_or_default().into_iter().enumerate() {
            let rpos = pos(&r);
            let r = r.value;
            let rname = r
                .alert
                .as_ref()
                .filter(|a| !a.value.0.is_empty())
                .or(r.record.as_ref())
                .map(|n| n.value.0.clone())
                .unwrap_or_default();
            let mut rule_errors = Vec::new();
            let mut bad = |position: Option<(u64, u64)>, message: String| {
                rule_errors.push(err(
                    position.or(rpos),
                    gname,
                    Some((i + 1, &rname)),
                    message,
                ));
            };
            match validate_rule(r, &group_labels, &mut bad) {
                Some(mut rule) => {
                    if let Rule::Recording(rec) = &mut rule {
                        rec.line = rpos.map_or(0, |p| p.0);
                    }
                    if let Rule::Alerting(a) = &mut rule {
                        a.line = rpos.map_or(0, |p| p.0);
                    }
                    if rule_errors.is_empty() {
                        rules.push(rule);
                        positions.push((i, rpos));
                    }
                }
                None => debug_assert!(!rule_errors.is_empty()),
            }
            errors.extend(rule_errors);
        }
        // Recording rules of one group writing the same series: always a mistake.
        for (i, r) in rules.iter().enumerate() {
            let Rule::Recording(r) = r else { continue };
            if let Some(j) = rules[..i].iter().position(
                |o| matches!(o, Rule::Recording(o) if o.name == r.name && o.labels == r.labels),
            ) {
                errors.push(err(
                    positions[i].1,
                    gname,
                    Some((positions[i].0 + 1, &r.name)),
                    format!(
                        "duplicate recording rule: rule {} of this group records the same \
                         name with the same labels",
                        positions[j].0 + 1
                    ),
                ));
            }
        }
        groups.push(Group {
            file: path.to_string_lossy().into_owned(),
            name,
            interval_ms,
            query_offset_ms,
            limit,
            labels: group_labels,
            rules,
            line: gpos.map_or(0, |p| p.0),
        });
    }
    if errors.is_empty() {
        Ok(RuleFile {
            path: path.to_path_buf(),
            groups,
        })
    } else {
        Err(errors)
    }
}

/// Checks one rule; reports every problem through `bad` and returns the rule when its
/// kind could be told.
fn validate_rule(
    r: RawRule,
    group_labels: &BTreeMap<String, String>,
    bad: &mut impl FnMut(Option<(u64, u64)>, String),
) -> Option<Rule> {
    let alert = r.alert.filter(|a| !a.value.0.is_empty());
    let record = r.record.filter(|a| !a.value.0.is_empty());
    let expr = match &r.expr {
        Some(e) if !e.value.0.is_empty() => {
            if let Err(msg) = promql::format_query(&e.value.0) {
                bad(pos(e), format!("could not parse expression: {msg}"));
            }
            e.value.0.clone()
        }
        _ => {
            bad(
                r.expr.as_ref().and_then(pos),
                "field 'expr' must be set in rule".into(),
            );
            String::new()
        }
    };
    let mut labels = group_labels.clone();
    let rule_labels = texts(r.labels.unwrap_or_default());
    for k in rule_labels.keys() {
        if !is_label_name(k) || k == "__name__" {
            bad(None, format!("invalid label name: {k}"));
        }
    }
    labels.extend(rule_labels);
    let annotations = texts(r.annotations.unwrap_or_default());
    let mut duration = |d: &Option<Spanned<Text>>, field: &str| -> i64 {
        let Some(d) = d else { return 0 };
        match parse_model_duration(&d.value.0) {
            Ok(v) => v,
            Err(e) => {
                bad(pos(d), format!("invalid '{field}': {e}"));
                0
            }
        }
    };
    let for_ms = duration(&r.for_, "for");
    let keep_firing_for_ms = duration(&r.keep_firing_for, "keep_firing_for");

    match (alert, record) {
        (Some(a), Some(rec)) => {
            bad(
                pos(&rec),
                format!(
                    "only one of 'record' and 'alert' must be set (alert at line {})",
                    a.referenced.line()
                ),
            );
            None
        }
        (None, None) => {
            bad(None, "one of 'record' or 'alert' must be set".into());
            None
        }
        (None, Some(rec)) => {
            let rpos = pos(&rec);
            if !annotations.is_empty() {
                bad(rpos, "invalid field 'annotations' in recording rule".into());
            }
            if r.for_.is_some() && for_ms != 0 {
                bad(rpos, "invalid field 'for' in recording rule".into());
            }
            if r.keep_firing_for.is_some() && keep_firing_for_ms != 0 {
                bad(
                    rpos,
                    "invalid field 'keep_firing_for' in recording rule".into(),
                );
            }
            if !is_metric_name(&rec.value.0) {
                bad(
                    rpos,
                    format!("invalid recording rule name: {}", rec.value.0),
                );
            }
            Some(Rule::Recording(RecordingRule {
                name: rec.value.0,
                expr,
                labels,
                line: 0,
            }))
        }
        (Some(a), None) => {
            for k in annotations.keys() {
                if !is_label_name(k) {
                    bad(None, format!("invalid annotation name: {k}"));
                }
            }
            let tmpl_name = format!("__alert_{}", a.value.0);
            let mut parse_all = |m: &BTreeMap<String, String>, what: &str| -> Vec<Template> {
                m.iter()
                    .filter_map(|(k, v)| match Template::parse(&tmpl_name, v) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            bad(None, format!("{what} {k:?}: {e}"));
                            None
                        }
                    })
                    .collect()
            };
            let label_templates = parse_all(&labels, "label");
            let annotation_templates = parse_all(&annotations, "annotation");
            Some(Rule::Alerting(AlertingRule {
                name: a.value.0,
                expr,
                for_ms,
                keep_firing_for_ms,
                labels,
                annotations,
                line: 0,
                label_templates,
                annotation_templates,
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw YAML
// ---------------------------------------------------------------------------------------

/// A scalar read as its text, whatever its YAML type (`80`, `true`, `1.5`), the way Go's
/// YAML decoder fills a string; `null` is the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Text(pub(crate) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(Option::<String>::deserialize(d)?.unwrap_or_default()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    groups: Option<Vec<Spanned<RawGroup>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<Spanned<Text>>,
    interval: Option<Spanned<Text>>,
    query_offset: Option<Spanned<Text>>,
    limit: Option<Spanned<i64>>,
    labels: Option<BTreeMap<String, Text>>,
    rules: Option<Vec<Spanned<RawRule>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<Spanned<Text>>,
    alert: Option<Spanned<Text>>,
    expr: Option<Spanned<Text>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<Text>>,
    keep_firing_for: Option<Spanned<Text>>,
    labels: Option<BTreeMap<String, Text>>,
    annotations: Option<BTreeMap<String, Text>>,
}

fn texts(m: BTreeMap<String, Text>) -> BTreeMap<String, String> {
    m.into_iter().map(|(k, v)| (k, v.0)).collect()
}

fn pos<T>(s: &Spanned<T>) -> Option<(u64, u64)> {
    let l = s.referenced;
    (l.line() > 0).then(|| (l.line(), l.column()))
}

/// True when the text holds no YAML node (empty, blank, comments, a bare `---`).
pub(crate) fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// serde-saphyr's message without its snippet, on one line, in the file's terms rather
/// than the parser's.
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    let msg: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let msg = msg
        .split_once(", set DuplicateKeyPolicy")
        .map_or(msg.as_str(), |(head, _)| head);
    match msg {
        "expected sequence start" => "expected a list".to_owned(),
        "expected mapping start" => "expected a mapping (key: value lines)".to_owned(),
        "expected string scalar" => "expected a single value".to_owned(),
        "invalid i64" => "expected a whole number".to_owned(),
        "invalid f64" => "expected a number".to_owned(),
        _ => msg.to_owned(),
    }
}

/// The mapping key written on line `line` (1-based), if the line starts with one.
pub(crate) fn key_at_line(text: &str, line: u64) -> Option<String> {
    let l = text
        .lines()
        .nth(line.checked_sub(1)? as usize)?
        .trim_start();
    let l = l.strip_prefix("- ").unwrap_or(l).trim_start();
    let (key, _) = l.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'))
        .then(|| key.to_string())
}

/// The position of a YAML error and the group and rule around it, found by reading the
/// file again leniently.
#[allow(clippy::type_complexity)]
fn yaml_error_context(
    e: &serde_saphyr::Error,
    text: &str,
) -> (Option<(u64, u64)>, Option<String>, Option<(usize, String)>) {
    #[derive(Deserialize)]
    struct LooseFile {
        groups: Option<Vec<Spanned<LooseGroup>>>,
    }
    #[derive(Deserialize)]
    struct LooseGroup {
        name: Option<Loose>,
        rules: Option<Vec<Spanned<LooseRule>>>,
    }
    #[derive(Deserialize)]
    struct LooseRule {
        alert: Option<Loose>,
        record: Option<Loose>,
    }
    let position = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line(), l.column()));
    let Some((line, _)) = position else {
        return (None, None, None);
    };
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::FirstWins;
    let Ok(loose) = serde_saphyr::from_str_with_options::<LooseFile>(text, options) else {
        return (position, None, None);
    };
    let Some(group) = loose
        .groups
        .iter()
        .flatten()
        .filter(|g| g.referenced.line() <= line)
        .max_by_key(|g| g.referenced.line())
    else {
        return (position, None, None);
    };
    let gname = group.value.name.as_ref().map(|n| n.0.clone());
    let rule = group
        .value
        .rules
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, r)| r.referenced.line() <= line)
        .max_by_key(|(_, r)| r.referenced.line())
        .map(|(i, r)| {
            let name = r
                .value
                .alert
                .as_ref()
                .filter(|a| !a.0.is_empty())
                .or(r.value.record.as_ref())
                .map(|n| n.0.clone())
                .unwrap_or_default();
            (i + 1, name)
        });
    (position, gname, rule)
}

/// Any YAML node: its text when it is a scalar, empty otherwise.
struct Loose(String);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
                Ok(Loose(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
                Ok(Loose(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Loose, E> {
                Ok(Loose(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Loose, E> {
                Ok(Loose(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose(String::new()))
            }
            fn visit_none<E>(self) -> Result<Loose, E> {
                Ok(Loose(String::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Loose, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(String::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Loose, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Names and durations
// ---------------------------------------------------------------------------------------

/// A legacy Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A legacy Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// A duration as Prometheus' configuration reads it (`model.ParseDuration`): units
/// `y w d h m s ms` in that order (`1h30m`), or `0`; a bare number other than 0 is an
/// error (unlike the HTTP API, where it means seconds).
pub fn parse_model_duration(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let bad = || format!("not a valid duration string: {s:?}");
    if s.is_empty() || !s.bytes().any(|c| c.is_ascii_alphabetic()) || s.contains('.') {
        return Err(bad());
    }
    promql::parse_duration_ms(s).map_err(|_| bad())
}

/// A duration in milliseconds as Prometheus prints a `model.Duration` (`1h30m`, `90d`, `0s`).
pub fn format_model_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut ms = ms;
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
        ms = -ms;
    }
    const UNITS: [(&str, i64, bool); 7] = [
        ("y", 365 * 86_400_000, true),
        ("w", 7 * 86_400_000, true),
        ("d", 86_400_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in UNITS {
        if exact && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
            ms -= v * mult;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<RuleFile, Vec<String>> {
        parse(Path::new("rules.yml"), text)
            .map_err(|es| es.into_iter().map(|e| e.to_string()).collect())
    }

    fn errors(text: &str) -> Vec<String> {
        match check(text) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_valid_file_gives_typed_groups() {
        let f = check(
            r#"
groups:
  - name: node
    interval: 30s
    limit: 10
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          team: infra
      - alert: HostDown
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
          priority: 1
        annotations:
          summary: "{{ $labels.instance }} is down"
  - name: other
    rules: []
"#,
        )
        .unwrap();
        assert_eq!(f.groups.len(), 2);
        assert_eq!(f.rule_count(), 2);
        let g = &f.groups[0];
        assert_eq!(g.key(), "rules.yml;node");
        assert_eq!(g.interval_ms, Some(30_000));
        assert_eq!(g.interval_or(60_000), 30_000);
        assert_eq!(f.groups[1].interval_or(60_000), 60_000);
        assert_eq!(g.limit, 10);
        let Rule::Alerting(a) = &g.rules[1] else {
            panic!("expected an alerting rule")
        };
        assert_eq!(a.for_ms, 300_000);
        assert_eq!(a.keep_firing_for_ms, 60_000);
        assert_eq!(a.labels["priority"], "1");
        assert_eq!(a.label_templates().count(), 2);
        assert_eq!(a.annotation_templates().count(), 1);
        assert_eq!(a.line, 11);
        assert!(matches!(&g.rules[0], Rule::Recording(r) if r.labels["team"] == "infra"));
    }

    #[test]
    fn empty_files_have_no_groups() {
        assert!(check("").unwrap().groups.is_empty());
        assert!(check("# nothing\n").unwrap().groups.is_empty());
        assert!(check("groups:\n").unwrap().groups.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_naming_group_and_rule() {
        let e = errors(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labls: {}\n",
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("rules.yml:6:"), "{e:?}");
        assert!(
            e[0].contains(r#"group "g": rule 1 ("A"): unknown field `labls`"#),
            "{e:?}"
        );
        let e = errors("groups:\n  - name: g\n    evaluation_interval: 1m\n");
        assert!(
            e[0].contains("group \"g\": unknown field `evaluation_interval`"),
            "{e:?}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let e = errors(
            r#"
groups:
  - name: g1
    rules:
      - record: job:up:sum
        expr: sum by (job) (up
      - alert: X
        expr: foo(up)
      - alert: Y
        expr: up
        labels:
          "0bad": x
      - record: "bad name"
        expr: up
        for: 1m
        annotations:
          a: b
      - expr: up
      - alert: Z
        record: z
        expr: up
      - alert: W
      - alert: V
        expr: up
        for: 5
  - name: g1
    rules: []
  - name: ""
"#,
        );
        let want = [
            r#"rules.yml:6:15: group "g1": rule 1 ("job:up:sum"): could not parse expression: "#,
            r#"rules.yml:8:15: group "g1": rule 2 ("X"): could not parse expression: "#,
            r#"group "g1": rule 3 ("Y"): invalid label name: 0bad"#,
            r#"group "g1": rule 4 ("bad name"): invalid field 'annotations' in recording rule"#,
            r#"group "g1": rule 4 ("bad name"): invalid field 'for' in recording rule"#,
            r#"group "g1": rule 4 ("bad name"): invalid recording rule name: bad name"#,
            r#"group "g1": rule 5 (""): one of 'record' or 'alert' must be set"#,
            r#"group "g1": rule 6 ("Z"): only one of 'record' and 'alert' must be set"#,
            r#"group "g1": rule 7 ("W"): field 'expr' must be set in rule"#,
            r#"group "g1": rule 8 ("V"): invalid 'for': not a valid duration string: "5""#,
            r#"group name "g1" is repeated in the same file"#,
            r#"group name must not be empty"#,
        ];
        for w in want {
            assert!(e.iter().any(|e| e.contains(w)), "missing {w:?} in {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
        assert!(e.iter().any(|e| e.contains("unknown function")), "{e:#?}");
    }

    #[test]
    fn duplicate_recording_rules_in_a_group_are_errors() {
        let e = errors(
            r#"
groups:
  - name: g
    rules:
      - record: a:b
        expr: up
      - record: a:b
        expr: up * 2
"#,
        );
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains(r#"rule 2 ("a:b"): duplicate recording rule"#),
            "{e:?}"
        );
        // Different labels, or different groups: legal, linted like promtool does.
        let f = check(
            r#"
groups:
  - name: g
    rules:
      - record: a:b
        expr: up
      - record: a:b
        expr: up
        labels: {x: y}
      - alert: A
        expr: up
      - alert: A
        expr: up > 1
  - name: h
    rules:
      - record: a:b
        expr: up
"#,
        )
        .unwrap();
        let d = f.duplicate_rules();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].name, "A");
        assert_eq!(d[1].name, "a:b");
        assert!(d[1].labels.is_empty());
    }

    #[test]
    fn group_labels_reach_every_rule_and_rule_labels_win() {
        let f = check(
            r#"
groups:
  - name: g
    labels: {team: a, env: prod}
    query_offset: 1m
    rules:
      - record: x:y
        expr: up
        labels: {team: b}
"#,
        )
        .unwrap();
        let g = &f.groups[0];
        assert_eq!(g.query_offset_ms, Some(60_000));
        let l = g.rules[0].labels();
        assert_eq!(l["team"], "b");
        assert_eq!(l["env"], "prod");
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let e = errors("groups:\n  - name: g\n    rules:\n      - alert: [\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("rules.yml:"), "{e:?}");
        let e = errors("groups:\n  - name: g\n    limit: lots\n");
        assert!(e[0].starts_with("rules.yml:3:"), "{e:?}");
        assert!(
            e[0].ends_with("group \"g\": limit: expected a whole number"),
            "{e:?}"
        );
    }

    #[test]
    fn negative_limits_are_rejected() {
        let e = errors("groups:\n  - name: g\n    limit: -1\n");
        assert!(e[0].contains("invalid limit -1"), "{e:?}");
    }

    #[test]
    fn durations_read_like_prometheus_config() {
        assert_eq!(parse_model_duration("0"), Ok(0));
        assert_eq!(parse_model_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_model_duration("250ms"), Ok(250));
        assert!(parse_model_duration("5").is_err());
        assert!(parse_model_duration("1.5h").is_err());
        assert!(parse_model_duration("").is_err());
        assert!(parse_model_duration("1m1h").is_err());
        assert_eq!(format_model_duration(0), "0s");
        assert_eq!(format_model_duration(5_400_000), "1h30m");
        assert_eq!(format_model_duration(90_000), "1m30s");
        assert_eq!(format_model_duration(14 * 86_400_000), "2w");
        assert_eq!(format_model_duration(15 * 86_400_000), "15d");
        assert_eq!(format_model_duration(1_500), "1s500ms");
    }

    #[test]
    fn names_follow_the_legacy_rules() {
        assert!(is_metric_name("job:up:sum"));
        assert!(!is_metric_name("bad name"));
        assert!(!is_metric_name("1x"));
        assert!(is_label_name("_x1"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name(""));
    }
}
