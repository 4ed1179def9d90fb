//! Prometheus relabeling: `relabel_configs`, `metric_relabel_configs` and their kin.
//!
//! A [`RelabelConfig`] is one entry of such a list, deserialized from exactly the YAML that
//! Prometheus accepts (same field names, same defaults, unknown fields rejected, the action
//! name case-insensitive) and validated while it is deserialized, with Prometheus' checks and
//! messages. A [`Relabeler`] is a compiled list of them; [`Relabeler::apply`] runs it over
//! one label set, in order, and reports whether the set survived.
//!
//! # Semantics (Prometheus' `model/relabel`)
//!
//! The *source value* of a rule is the values of `source_labels` joined with `separator`,
//! a missing label counting as the empty string. `regex` is fully anchored, as
//! `^(?s:regex)$` (`.` matches a newline too, as in current Prometheus), and written in
//! Go's RE2 syntax, which is translated where the `regex` crate differs (`\d` is ASCII-only,
//! `\Q..\E`, ...; see `re2`).
//!
//! | action | effect |
//! |---|---|
//! | `replace` | if `regex` matches the source value, expand `target_label` and `replacement` with the match's groups (Go's `Regexp.Expand`: `$1`, `${1}`, `$name`, `${name}`, `$$`; `$1x` is the group *named* `1x`); an expanded name that is not a valid label name changes nothing; an empty value deletes the label; no match changes nothing |
//! | `keep` / `drop` | drop the set if `regex` does not match / matches the source value |
//! | `keepequal` / `dropequal` | drop the set if the source value differs from / equals `target_label`'s value |
//! | `hashmod` | set `target_label` to the MD5 of the source value, its last 8 bytes read as a big-endian `u64`, modulo `modulus` |
//! | `labelmap` | for every label whose *name* matches `regex`, copy its value to the name `replacement` expands to |
//! | `labeldrop` / `labelkeep` | remove every label whose name matches / does not match `regex` |
//! | `lowercase` / `uppercase` | set `target_label` to the source value in lower / upper case (Go's per-character simple case mapping) |
//!
//! Setting a label to the empty value deletes it. Label names are Minos' (Prometheus'
//! legacy) `[a-zA-Z_][a-zA-Z0-9_]*`.
//!
//! Two corners where the result could depend on Prometheus' internal label-builder order are
//! fixed here: when one `labelmap` rule maps several labels to the same name, the label whose
//! name sorts last wins (Prometheus: the last in its builder's order, which is name order
//! except for labels set by earlier rules of the same list); and a `labelmap` result that is
//! not a valid label name is skipped (Prometheus would set it and fail the scrape later).
//!
//! # Cost
//!
//! Compilation does the work once: regexes are compiled, templates are parsed into literal
//! and group pieces, and `(.*)`, `(.+)` and alternations of literals with an optional `.*`
//! at either end (`up`, `a|b|c`, `go_.*|process_.*`) skip the regex engine. On the
//! per-sample path a `keep`/`drop` on one source label (the common `metric_relabel_configs`
//! "drop by `__name__`") is a label lookup and one match, with no allocation: about 15-25 ns
//! in a release build. No rule allocates when it changes nothing; joined values, expansions
//! and capture positions live in per-thread scratch buffers.

mod re2;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use md5::{Digest, Md5};
use regex::{CaptureLocations, Regex, RegexBuilder};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use re2::Template;

/// `regex` when the field is omitted.
pub const DEFAULT_REGEX: &str = "(.*)";
/// `separator` when the field is omitted.
pub const DEFAULT_SEPARATOR: &str = ";";
/// `replacement` when the field is omitted.
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// What a relabel rule does; the YAML `action` field (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    /// The action's name as Prometheus spells it in messages (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    /// Parses an action name, ignoring case as Prometheus does.
    pub fn parse(name: &str) -> Option<Action> {
        let mut lower = String::with_capacity(name.len());
        go_lowercase(name, &mut lower);
        Some(match lower.as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Option::<StringLike>::deserialize(deserializer)? {
            None => Err(de::Error::custom("relabel action cannot be empty")),
            Some(StringLike(s)) => Action::parse(&s)
                .ok_or_else(|| de::Error::custom(format!("unknown relabel action {s:?}"))),
        }
    }
}

/// One relabel rule as written in a Prometheus config: an entry of `relabel_configs`,
/// `metric_relabel_configs`, `write_relabel_configs` or `alert_relabel_configs`.
///
/// Fields hold the values with Prometheus' defaults applied ([`Default`] gives those).
/// Deserializing one validates it ([`RelabelConfig::validate`]), as Prometheus does while
/// loading, so a YAML loader's error carries the entry's position. As in Prometheus' YAML
/// loader, an explicit `null` is the field's zero value, not its default (`separator: null`
/// is the empty separator, `regex: null` the empty regex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelabelConfig {
    /// Labels whose values, joined with `separator`, form the source value.
    pub source_labels: Vec<String>,
    /// Put between the source labels' values; default `;`.
    pub separator: String,
    /// The regex as written, unanchored; `None` when omitted, meaning [`DEFAULT_REGEX`].
    /// (The difference matters: `keepequal`/`dropequal` reject any explicit `regex`.)
    pub regex: Option<String>,
    /// For `hashmod`; 0 when omitted.
    pub modulus: u64,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`, or compared by
    /// `keepequal`/`dropequal`. Only `replace` expands `$` references in it.
    pub target_label: String,
    /// The value `replace` writes, or the name `labelmap` writes; default `$1`.
    pub replacement: String,
    /// Default `replace`.
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            regex: None,
            modulus: 0,
            target_label: String::new(),
            replacement: DEFAULT_REPLACEMENT.to_owned(),
            action: Action::Replace,
        }
    }
}

impl RelabelConfig {
    /// Checks the rule as Prometheus does when loading it: label names, the regex, and the
    /// fields each action requires or forbids. The message names the offending field and
    /// value; a config loader can prefix it with the entry's position.
    pub fn validate(&self) -> Result<(), String> {
        Rule::compile(self).map(drop)
    }

    /// The regex as written, the default if omitted.
    pub fn regex_str(&self) -> &str {
        self.regex.as_deref().unwrap_or(DEFAULT_REGEX)
    }
}

/// The YAML shape; absent fields take Prometheus' defaults, `null` the zero value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "de_string_list")]
    source_labels: Vec<String>,
    #[serde(default = "default_separator", deserialize_with = "de_string")]
    separator: String,
    #[serde(default, deserialize_with = "de_regex")]
    regex: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    modulus: u64,
    #[serde(default, deserialize_with = "de_string")]
    target_label: String,
    #[serde(default = "default_replacement", deserialize_with = "de_string")]
    replacement: String,
    #[serde(default)]
    action: Action,
}

fn default_separator() -> String {
    DEFAULT_SEPARATOR.to_owned()
}

fn default_replacement() -> String {
    DEFAULT_REPLACEMENT.to_owned()
}

impl<'de> Deserialize<'de> for RelabelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawConfig::deserialize(deserializer)?;
        let config = RelabelConfig {
            source_labels: raw.source_labels,
            separator: raw.separator,
            regex: raw.regex,
            modulus: raw.modulus,
            target_label: raw.target_label,
            replacement: raw.replacement,
            action: raw.action,
        };
        config.validate().map_err(de::Error::custom)?;
        Ok(config)
    }
}

/// A string field that also takes a YAML scalar of another type as its text, the way Go's
/// YAML decoder fills a string (`regex: true`, `replacement: 1`).
struct StringLike(String);

impl<'de> Deserialize<'de> for StringLike {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StringLike;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringLike, E> {
                Ok(StringLike(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<StringLike, E> {
                Ok(StringLike(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<StringLike, E> {
                Ok(StringLike(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StringLike, E> {
                Ok(StringLike(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StringLike, E> {
                Ok(StringLike(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StringLike, E> {
                Ok(StringLike(v.to_string()))
            }
        }
        deserializer.deserialize_string(V)
    }
}

fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<StringLike>::deserialize(d)?
        .map(|s| s.0)
        .unwrap_or_default())
}

fn de_regex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    // Present: the text, or the empty regex for `null` (Prometheus' behaviour).
    Ok(Some(de_string(d)?))
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

fn de_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of label names")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(StringLike(s)) = seq.next_element()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    struct Nullable;
    impl<'de> Visitor<'de> for Nullable {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of label names")
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
            d.deserialize_seq(V)
        }
    }
    d.deserialize_option(Nullable)
}

/// A rule list that failed to compile: which entry (0-based, in list order) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relabel config {index}: {message}")]
pub struct RelabelError {
    pub index: usize,
    pub message: String,
}

/// A compiled list of relabel rules, applied in order by [`Relabeler::apply`].
///
/// Cheap to share by reference across threads (`Send + Sync`); cloning copies the rule list
/// (regexes are shared).
#[derive(Debug, Clone, Default)]
pub struct Relabeler {
    rules: Box<[Rule]>,
}

impl Relabeler {
    /// Validates and compiles `configs`; the error names the first bad entry.
    pub fn new(configs: &[RelabelConfig]) -> Result<Relabeler, RelabelError> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                Rule::compile(config).map_err(|message| RelabelError { index, message })
            })
            .collect::<Result<_, _>>()?;
        Ok(Relabeler { rules })
    }

    /// Whether there are no rules (so [`Relabeler::apply`] would change nothing).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Relabels `labels` in place; returns `false` if a `keep`, `drop`, `keepequal` or
    /// `dropequal` rule dropped the set, in which case `labels` holds whatever the rules
    /// before it left and should be discarded.
    ///
    /// `labels` must be sorted by name with unique names, and stays so. A label with an
    /// empty value counts as absent. Labels starting with `__` are left in place: removing
    /// them after target relabeling is the caller's step ([`remove_internal_labels`]).
    pub fn apply(&self, labels: &mut Vec<(String, String)>) -> bool {
        debug_assert!(
            labels.windows(2).all(|w| w[0].0 < w[1].0),
            "labels must be sorted by name and unique"
        );
        let mut scratch = ScratchSlot(None);
        self.rules
            .iter()
            .all(|rule| rule.apply(labels, &mut scratch))
    }
}

/// Removes every label whose name starts with `__`, as Prometheus does to a target's labels
/// once `relabel_configs` ran (`__address__`, `__meta_*`, `__tmp*`, ...).
///
/// Not for samples after `metric_relabel_configs`: their `__name__` must stay.
pub fn remove_internal_labels(labels: &mut Vec<(String, String)>) {
    labels.retain(|(name, _)| !name.starts_with("__"));
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Prometheus' check of a templated name (`target_label` of `replace`, `replacement` of
/// `labelmap`) under legacy label names: name characters and `$name`/`${name}` references,
/// not starting with a digit.
static TEMPLATED_NAME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{[a-zA-Z0-9_]+\}|[a-zA-Z0-9_]+))+[a-zA-Z0-9_]*)+$").ok()
});

fn is_valid_templated_name(name: &str) -> bool {
    TEMPLATED_NAME.as_ref().is_some_and(|re| re.is_match(name))
}

/// Source of unique rule ids, keying the per-thread capture-position cache.
static NEXT_RULE_ID: AtomicU64 = AtomicU64::new(0);

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    id: u64,
    sources: Box<[String]>,
    separator: String,
    matcher: Matcher,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Replace {
        target: Template,
        replacement: Template,
        subgroups: bool,
    },
    Keep,
    Drop,
    KeepEqual {
        target: String,
    },
    DropEqual {
        target: String,
    },
    HashMod {
        target: String,
        modulus: u64,
    },
    LabelMap {
        replacement: Template,
        subgroups: bool,
    },
    LabelDrop,
    LabelKeep,
    Lowercase {
        target: String,
    },
    Uppercase {
        target: String,
    },
}

impl Rule {
    fn compile(c: &RelabelConfig) -> Result<Rule, String> {
        if let Some(bad) = c.source_labels.iter().find(|n| !is_valid_label_name(n)) {
            return Err(format!(
                "{bad:?} is not a valid label name in 'source_labels'"
            ));
        }
        let matcher = Matcher::compile(c.regex_str())?;
        check_fields(c)?;
        let target = || c.target_label.clone();
        let op = match c.action {
            Action::Replace => {
                let target = Template::parse(&c.target_label, &matcher.regex);
                let replacement = Template::parse(&c.replacement, &matcher.regex);
                let subgroups = target.uses_subgroups() || replacement.uses_subgroups();
                Op::Replace {
                    target,
                    replacement,
                    subgroups,
                }
            }
            Action::Keep => Op::Keep,
            Action::Drop => Op::Drop,
            Action::KeepEqual => Op::KeepEqual { target: target() },
            Action::DropEqual => Op::DropEqual { target: target() },
            Action::HashMod => Op::HashMod {
                target: target(),
                modulus: c.modulus,
            },
            Action::LabelMap => {
                let replacement = Template::parse(&c.replacement, &matcher.regex);
                let subgroups = replacement.uses_subgroups();
                Op::LabelMap {
                    replacement,
                    subgroups,
                }
            }
            Action::LabelDrop => Op::LabelDrop,
            Action::LabelKeep => Op::LabelKeep,
            Action::Lowercase => Op::Lowercase { target: target() },
            Action::Uppercase => Op::Uppercase { target: target() },
        };
        Ok(Rule {
            id: NEXT_RULE_ID.fetch_add(1, Ordering::Relaxed),
            sources: c.source_labels.clone().into_boxed_slice(),
            separator: c.separator.clone(),
            matcher,
            op,
        })
    }

    /// Runs the rule; `false` if it drops the set.
    fn apply(&self, labels: &mut Vec<(String, String)>, slot: &mut ScratchSlot) -> bool {
        match &self.op {
            Op::Keep | Op::Drop | Op::KeepEqual { .. } | Op::DropEqual { .. } => {
                let mut unused = String::new();
                let join = if self.sources.len() > 1 {
                    &mut slot.get().join
                } else {
                    &mut unused
                };
                let val = self.source_value(labels, join);
                match &self.op {
                    Op::Keep => self.matcher.is_match(val),
                    Op::Drop => !self.matcher.is_match(val),
                    Op::KeepEqual { target } => get_label(labels, target).unwrap_or("") == val,
                    Op::DropEqual { target } => get_label(labels, target).unwrap_or("") != val,
                    _ => true,
                }
            }
            Op::Replace {
                target,
                replacement,
                subgroups,
            } => {
                let Scratch {
                    join,
                    name,
                    value,
                    locs,
                } = slot.get();
                let val = self.source_value(labels, join);
                let Some(groups) = self.matcher.matches(val, *subgroups, self.id, locs) else {
                    return true;
                };
                name.clear();
                target.expand(name, |i| groups.get(val, i));
                if !is_valid_label_name(name) {
                    return true;
                }
                value.clear();
                replacement.expand(value, |i| groups.get(val, i));
                set_label(labels, name, value);
                true
            }
            Op::HashMod { target, modulus } => {
                let Scratch { join, value, .. } = slot.get();
                let val = self.source_value(labels, join);
                let digest = Md5::digest(val.as_bytes());
                // The last 8 bytes, big-endian, as Prometheus has always done.
                let tail = digest
                    .iter()
                    .skip(8)
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                value.clear();
                let _ = write!(value, "{}", tail % modulus);
                set_label(labels, target, value);
                true
            }
            Op::Lowercase { target } | Op::Uppercase { target } => {
                let Scratch { join, value, .. } = slot.get();
                let val = self.source_value(labels, join);
                value.clear();
                if matches!(self.op, Op::Lowercase { .. }) {
                    go_lowercase(val, value);
                } else {
                    go_uppercase(val, value);
                }
                set_label(labels, target, value);
                true
            }
            Op::LabelMap {
                replacement,
                subgroups,
            } => {
                let Scratch { name, locs, .. } = slot.get();
                // All names are matched against the set as it was before the rule (Prometheus
                // iterates a snapshot); writes are collected, then applied in order.
                let mut pending: Vec<(String, String)> = Vec::new();
                for (label, value) in labels.iter() {
                    let Some(groups) = self.matcher.matches(label, *subgroups, self.id, locs)
                    else {
                        continue;
                    };
                    name.clear();
                    replacement.expand(name, |i| groups.get(label, i));
                    if !is_valid_label_name(name) {
                        continue;
                    }
                    // Skip a write that changes nothing, unless an earlier write of this rule
                    // to the same name makes it count.
                    let unchanged = get_label(labels, name).unwrap_or("") == value.as_str();
                    if unchanged && !pending.iter().any(|(n, _)| n == name.as_str()) {
                        continue;
                    }
                    pending.push((name.clone(), value.clone()));
                }
                for (name, value) in pending {
                    set_label_owned(labels, name, value);
                }
                true
            }
            Op::LabelDrop => {
                labels.retain(|(name, _)| !self.matcher.is_match(name));
                true
            }
            Op::LabelKeep => {
                labels.retain(|(name, _)| self.matcher.is_match(name));
                true
            }
        }
    }

    /// The source labels' values joined with the separator; borrows `labels` when there is
    /// one source label, `join` when there are several.
    fn source_value<'a>(&self, labels: &'a [(String, String)], join: &'a mut String) -> &'a str {
        match &*self.sources {
            [] => "",
            [one] => get_label(labels, one).unwrap_or(""),
            many => {
                join.clear();
                for (i, name) in many.iter().enumerate() {
                    if i > 0 {
                        join.push_str(&self.separator);
                    }
                    join.push_str(get_label(labels, name).unwrap_or(""));
                }
                join
            }
        }
    }
}

/// Prometheus' per-action field rules, in Prometheus' order and words.
fn check_fields(c: &RelabelConfig) -> Result<(), String> {
    use Action::*;
    let action = c.action;
    let invalid_target = || {
        format!(
            "{:?} is invalid 'target_label' for {action} action",
            c.target_label
        )
    };
    if action == HashMod && c.modulus == 0 {
        return Err("relabel configuration for hashmod requires non-zero modulus".to_owned());
    }
    let needs_target = matches!(
        action,
        Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
    );
    if needs_target && c.target_label.is_empty() {
        return Err(format!(
            "relabel configuration for {action} action requires 'target_label' value"
        ));
    }
    if action == Replace {
        let ok = if c.target_label.contains('$') {
            is_valid_templated_name(&c.target_label)
        } else {
            is_valid_label_name(&c.target_label)
        };
        if !ok {
            return Err(invalid_target());
        }
    }
    let plain_target = matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual);
    if plain_target && !is_valid_label_name(&c.target_label) {
        return Err(invalid_target());
    }
    if plain_target && c.replacement != DEFAULT_REPLACEMENT {
        return Err(format!("'replacement' can not be set for {action} action"));
    }
    if action == LabelMap && !is_valid_templated_name(&c.replacement) {
        return Err(format!(
            "{:?} is invalid 'replacement' for {action} action",
            c.replacement
        ));
    }
    if action == HashMod && !is_valid_label_name(&c.target_label) {
        return Err(invalid_target());
    }
    if matches!(action, KeepEqual | DropEqual)
        && (c.regex.is_some()
            || c.modulus != 0
            || c.separator != DEFAULT_SEPARATOR
            || c.replacement != DEFAULT_REPLACEMENT)
    {
        return Err(format!(
            "{action} action requires only 'source_labels' and 'target_label', and no other fields"
        ));
    }
    if matches!(action, LabelDrop | LabelKeep)
        && (!c.source_labels.is_empty()
            || !c.target_label.is_empty()
            || c.modulus != 0
            || c.separator != DEFAULT_SEPARATOR
            || c.replacement != DEFAULT_REPLACEMENT)
    {
        return Err(format!(
            "{action} action requires only 'regex', and no other fields"
        ));
    }
    Ok(())
}

/// A compiled `regex`, with shortcuts for the patterns that need no regex engine.
#[derive(Debug, Clone)]
struct Matcher {
    kind: MatchKind,
    /// Always compiled: it validates the pattern and resolves template group names.
    regex: Regex,
}

#[derive(Debug, Clone)]
enum MatchKind {
    /// `.*` or `(.*)`: everything; group 1, if any, is the whole input.
    Any,
    /// `.+` or `(.+)`: every non-empty input; group 1, if any, is the whole input.
    NonEmpty,
    /// Alternatives that are each a literal, optionally with `.*` before and/or after
    /// (`up`, `go_.*|process_.*`, `a|b|c`), possibly wrapped in one group, which then is the
    /// whole input.
    Alternatives(Alternatives),
    Regex,
}

/// The [`MatchKind::Alternatives`] shortcut.
#[derive(Debug, Clone, Default)]
struct Alternatives {
    /// Plain literals, sorted.
    exact: Box<[String]>,
    /// The rest, in pattern order.
    partial: Box<[Partial]>,
}

#[derive(Debug, Clone)]
enum Partial {
    /// `lit.*`
    Prefix(String),
    /// `.*lit`
    Suffix(String),
    /// `.*lit.*`
    Contains(String),
}

impl Alternatives {
    /// Recognizes the shape; `None` if the pattern needs the regex engine.
    fn parse(pattern: &str) -> Option<Alternatives> {
        const META: &[char] = &[
            '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
        ];
        let inner = match pattern.strip_prefix('(').and_then(|p| p.strip_suffix(')')) {
            Some(inner) if !inner.starts_with('?') => inner,
            _ => pattern,
        };
        if inner.contains(['(', ')']) {
            return None;
        }
        let mut exact = Vec::new();
        let mut partial = Vec::new();
        for alt in inner.split('|') {
            let (lead, rest) = match alt.strip_prefix(".*") {
                Some(rest) => (true, rest),
                None => (false, alt),
            };
            let (trail, lit) = match rest.strip_suffix(".*") {
                Some(lit) => (true, lit),
                None => (false, rest),
            };
            if lit.contains(META) {
                return None;
            }
            let lit = lit.to_owned();
            match (lead, trail) {
                (false, false) => exact.push(lit),
                (false, true) => partial.push(Partial::Prefix(lit)),
                (true, false) => partial.push(Partial::Suffix(lit)),
                (true, true) => partial.push(Partial::Contains(lit)),
            }
        }
        exact.sort_unstable();
        Some(Alternatives {
            exact: exact.into(),
            partial: partial.into(),
        })
    }

    fn is_match(&self, input: &str) -> bool {
        let exact = if self.exact.len() <= SMALL {
            self.exact.iter().any(|l| l == input)
        } else {
            self.exact
                .binary_search_by(|l| l.as_str().cmp(input))
                .is_ok()
        };
        exact
            || self.partial.iter().any(|p| match p {
                Partial::Prefix(l) => input.starts_with(l.as_str()),
                Partial::Suffix(l) => input.ends_with(l.as_str()),
                Partial::Contains(l) => input.contains(l.as_str()),
            })
    }
}

/// The groups of a successful match.
enum Groups<'a> {
    /// Only the whole input is needed (or is every group there is).
    Whole,
    Captured(&'a CaptureLocations),
}

impl Groups<'_> {
    fn get<'v>(&self, input: &'v str, i: usize) -> Option<&'v str> {
        match self {
            // Template parsing only yields indexes the regex has; with a shortcut pattern
            // they are 0 and, if the pattern is wrapped in a group, 1: both the whole input.
            Groups::Whole => Some(input),
            Groups::Captured(locs) => locs.get(i).and_then(|(s, e)| input.get(s..e)),
        }
    }
}

impl Matcher {
    fn compile(pattern: &str) -> Result<Matcher, String> {
        let invalid = |why: String| format!("invalid regex {pattern:?}: {why}");
        let translated = re2::translate(pattern).map_err(invalid)?;
        let regex = RegexBuilder::new(&format!("^(?s:{translated})$"))
            .build()
            .map_err(|e| invalid(regex_error_message(&e)))?;
        let kind = match pattern {
            ".*" | "(.*)" => MatchKind::Any,
            ".+" | "(.+)" => MatchKind::NonEmpty,
            p => Alternatives::parse(p).map_or(MatchKind::Regex, MatchKind::Alternatives),
        };
        Ok(Matcher { kind, regex })
    }

    fn is_match(&self, input: &str) -> bool {
        match &self.kind {
            MatchKind::Any => true,
            MatchKind::NonEmpty => !input.is_empty(),
            MatchKind::Alternatives(a) => a.is_match(input),
            MatchKind::Regex => self.regex.is_match(input),
        }
    }

    /// Matches `input`; with `subgroups`, also records capture positions (in `cache`).
    fn matches<'c>(
        &self,
        input: &str,
        subgroups: bool,
        rule_id: u64,
        cache: &'c mut LocsCache,
    ) -> Option<Groups<'c>> {
        if !subgroups || !matches!(self.kind, MatchKind::Regex) {
            return self.is_match(input).then_some(Groups::Whole);
        }
        let locs = cache.get(rule_id, &self.regex);
        self.regex.captures_read(locs, input)?;
        Some(Groups::Captured(locs))
    }
}

/// The short reason from a `regex` error (its syntax errors quote the translated pattern).
fn regex_error_message(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(s)
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => {
            format!("compiled regex exceeds the size limit of {limit} bytes")
        }
        other => other.to_string(),
    }
}

/// Up to this many entries, a linear scan (a length compare rules most out without reading
/// the bytes) beats a binary search.
const SMALL: usize = 8;

/// The same for label lookups (label sets are sorted: a scan could stop early, but the
/// comparison costs more than it saves at these sizes).
const SMALL_LABELS: usize = 32;

/// The value of label `name`, if present.
fn get_label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    if labels.len() <= SMALL_LABELS {
        return labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
    }
    labels
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// Sets `name` to `value` (an empty value deletes), allocating only for a new label or a
/// longer value.
fn set_label(labels: &mut Vec<(String, String)>, name: &str, value: &str) {
    match labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => {
            let current = &mut labels[i].1;
            if current != value {
                current.clear();
                current.push_str(value);
            }
        }
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, (name.to_owned(), value.to_owned())),
    }
}

fn set_label_owned(labels: &mut Vec<(String, String)>, name: String, value: String) {
    match labels.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => labels[i].1 = value,
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, (name, value)),
    }
}

/// Go's `strings.ToLower`: each character by its simple (one-to-one) case mapping.
fn go_lowercase(s: &str, out: &mut String) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        return;
    }
    for c in s.chars() {
        let mut lower = c.to_lowercase();
        match (lower.next(), lower.next()) {
            (Some(l), None) => out.push(l),
            // The one multi-character lowercase mapping: U+0130 'İ', simply 'i'.
            _ if c == '\u{130}' => out.push('i'),
            _ => out.push(c),
        }
    }
}

/// Go's `strings.ToUpper`: each character by its simple (one-to-one) case mapping.
fn go_uppercase(s: &str, out: &mut String) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_uppercase())));
        return;
    }
    for c in s.chars() {
        let mut upper = c.to_uppercase();
        match (upper.next(), upper.next()) {
            (Some(u), None) => out.push(u),
            // Multi-character full mappings (ß → SS, ﬁ → FI, ...) have no simple mapping,
            // except Greek letters with ypogegrammeni, which map to their titlecase form.
            _ => {
                let simple = match u32::from(c) {
                    cp @ (0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7) => cp + 8,
                    0x1FB3 => 0x1FBC,
                    0x1FC3 => 0x1FCC,
                    0x1FF3 => 0x1FFC,
                    cp => cp,
                };
                out.push(char::from_u32(simple).unwrap_or(c));
            }
        }
    }
}

/// Per-thread reusable buffers, taken for the duration of one [`Relabeler::apply`].
#[derive(Default)]
struct Scratch {
    join: String,
    name: String,
    value: String,
    locs: LocsCache,
}

/// Capture-position buffers of the rules this thread ran recently, in a direct-mapped table
/// indexed by rule id (ids are never reused, so a buffer always belongs to the regex it was
/// made for; consecutive ids, the rules of one list, take distinct slots).
#[derive(Default)]
struct LocsCache(Vec<Option<(u64, CaptureLocations)>>);

impl LocsCache {
    const SLOTS: usize = 64;

    fn get(&mut self, rule_id: u64, regex: &Regex) -> &mut CaptureLocations {
        if self.0.len() < Self::SLOTS {
            self.0.resize_with(Self::SLOTS, || None);
        }
        let slot = &mut self.0[(rule_id % Self::SLOTS as u64) as usize];
        if slot.as_ref().is_none_or(|(id, _)| *id != rule_id) {
            *slot = Some((rule_id, regex.capture_locations()));
        }
        let (_, locs) = slot.get_or_insert_with(|| (rule_id, regex.capture_locations()));
        locs
    }
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Holds the thread's [`Scratch`] while relabeling, taking it on first use and giving it
/// back on drop.
struct ScratchSlot(Option<Box<Scratch>>);

impl ScratchSlot {
    /// Buffers above this capacity are not kept between calls.
    const KEEP_CAPACITY: usize = 64 * 1024;

    fn get(&mut self) -> &mut Scratch {
        self.0.get_or_insert_with(|| {
            SCRATCH
                .try_with(Cell::take)
                .ok()
                .flatten()
                .unwrap_or_default()
        })
    }
}

impl Drop for ScratchSlot {
    fn drop(&mut self) {
        if let Some(scratch) = self.0.take() {
            let small = [&scratch.join, &scratch.name, &scratch.value]
                .iter()
                .all(|s| s.capacity() <= Self::KEEP_CAPACITY);
            if small {
                let _ = SCRATCH.try_with(|cell| cell.set(Some(scratch)));
            }
        }
    }
}
