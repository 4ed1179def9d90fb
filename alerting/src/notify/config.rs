/*!
The notification configuration: an Alertmanager-compatible YAML subset, parsed into
raw serde structs (`Raw*`, as close to the file as possible) and then validated into a
[`Config`] whose routes are resolved (inheritance applied, receivers checked, matchers
compiled) and whose receivers hold ready-to-use integrations.

Supported, with Alertmanager's meaning and defaults:
```text
global:        resolve_timeout (5m), smtp_smarthost, smtp_from, smtp_hello (localhost),
               smtp_auth_username, smtp_auth_password, smtp_auth_identity,
               smtp_require_tls (true), slack_api_url
route:         receiver, group_by (['...'] = every label), group_wait (30s),
               group_interval (5m), repeat_interval (4h), matchers, match, match_re,
               continue, routes (nested, inheriting receiver, group_by, the three
               intervals and the escalation), mute_time_intervals and
               active_time_intervals (not on the root, not inherited);
               Minos: escalate_after + escalate_to
time_intervals: name, time_intervals: times (start_time, end_time), weekdays,
               days_of_month, months, years, location (IANA name, UTC, Local);
               the deprecated top-level mute_time_intervals (same shape)
receivers:     name, email_configs, slack_configs, webhook_configs;
               Minos: dingtalk_configs, feishu_configs, wecom_configs,
               alertmanager_configs
templates:     file globs, relative ones from the config file's directory; their
               {{ define }}s are callable from every receiver text field
inhibit_rules: source_matchers, target_matchers, source_match(_re),
               target_match(_re), equal
```
Durations use Prometheus' syntax (`1h30m`, `200ms`, `0`). Unknown keys are errors
naming the key and its line; keys Alertmanager knows but Minos does not implement
(`smtp_auth_secret`) are refused by name. Time intervals are validated
and matched in `timeinterval`; a route's mute or active intervals apply to everything
it sends, its escalation included (see `dispatch`). Validation reads the files a
config names (`tls_config.ca_file`, `templates`), so a missing file is found at load
time, not at 3 a.m.

Receiver text fields (Slack's title and text, email headers and bodies, the chat
robots' title and text) are Alertmanager notification templates, parsed and checked
here (see the `template` module); a glob of `templates:` that matches nothing is
fine, as in Alertmanager, and a file that does not parse is an error naming it and
the line.
*/

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::notify::integrations::{self, Integration};
use crate::notify::matcher::{self, MatchOp, Matcher};
use crate::notify::timeinterval::{self, TimeInterval};

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The YAML is malformed or has an unknown key (the message names line and key).
    #[error("{0}")]
    Yaml(String),
    /// A value is invalid; `path` names it (`route.routes[1].matchers[0]`).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// A string that is not shown by `Debug` (passwords, tokens, URLs holding a key).
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

// ---------------------------------------------------------------------------------
// Raw configuration: the file as written.
// ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    global: RawGlobal,
    route: Option<RawRoute>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    inhibit_rules: Vec<RawInhibitRule>,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    time_intervals: Vec<timeinterval::Raw>,
    /// Alertmanager's older name for `time_intervals`; both share one namespace.
    #[serde(default)]
    mute_time_intervals: Vec<timeinterval::Raw>,
}

/// `global:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    resolve_timeout: Option<String>,
    pub(crate) smtp_smarthost: Option<String>,
    pub(crate) smtp_from: Option<String>,
    pub(crate) smtp_hello: Option<String>,
    pub(crate) smtp_auth_username: Option<String>,
    pub(crate) smtp_auth_password: Option<Secret>,
    pub(crate) smtp_auth_identity: Option<String>,
    smtp_auth_secret: Option<Secret>,
    pub(crate) smtp_require_tls: Option<bool>,
    pub(crate) slack_api_url: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "match")]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    mute_time_intervals: Vec<String>,
    #[serde(default)]
    active_time_intervals: Vec<String>,
    escalate_after: Option<String>,
    escalate_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    #[serde(default)]
    email_configs: Vec<integrations::email::Raw>,
    #[serde(default)]
    slack_configs: Vec<integrations::slack::Raw>,
    #[serde(default)]
    webhook_configs: Vec<integrations::webhook::Raw>,
    #[serde(default)]
    dingtalk_configs: Vec<integrations::dingtalk::Raw>,
    #[serde(default)]
    feishu_configs: Vec<integrations::feishu::Raw>,
    #[serde(default)]
    wecom_configs: Vec<integrations::wecom::Raw>,
    #[serde(default)]
    alertmanager_configs: Vec<integrations::alertmanager::Raw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibitRule {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    equal: Vec<String>,
}

// ---------------------------------------------------------------------------------
// Validated configuration.
// ---------------------------------------------------------------------------------

/// A validated notification configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `global.resolve_timeout`: how long an alert without an end stays firing
    /// without an update.
    pub resolve_timeout: Duration,
    /// The route tree, flattened: index 0 is the root; each node names its children.
    routes: Vec<Route>,
    receivers: Vec<Receiver>,
    inhibit_rules: Vec<InhibitRule>,
    /// `time_intervals` and the deprecated top-level `mute_time_intervals`, by name.
    time_intervals: BTreeMap<String, TimeInterval>,
    /// The named templates receiver fields may call: built-in, then `templates:`.
    templates: crate::template::TemplateSet,
}

/// What a route groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `['...']`: every label; each alert is its own group.
    All,
    /// These labels (an empty list: one group for the whole route).
    Labels(Vec<String>),
}

/// Notify another receiver when a firing group stays unacknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// How long after an alert's first notification it must have been acknowledged.
    pub after: Duration,
    /// The receiver notified then.
    pub receiver: String,
}

/// One node of the route tree, with inherited settings resolved.
#[derive(Debug, Clone)]
pub struct Route {
    /// Alertmanager's route key (`{}/{severity="critical"}`), made unique among
    /// siblings; part of every group key.
    pub key: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// `continue`: after this route matched, keep trying its next siblings.
    pub continue_matching: bool,
    pub escalation: Option<Escalation>,
    /// Names of [`Config::time_interval`]s during which the route sends nothing
    /// (this route's own: Alertmanager does not pass them to child routes).
    pub mute_time_intervals: Vec<String>,
    /// Names of intervals outside all of which the route sends nothing; empty means
    /// always active. Not inherited either.
    pub active_time_intervals: Vec<String>,
    /// Indexes of the child routes in [`Config::routes`].
    pub children: Vec<usize>,
}

/// A receiver: a name and the integrations a notification to it goes to.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub integrations: Vec<Integration>,
}

/// An inhibition rule: a firing alert matching `source` mutes the alerts matching
/// `target` that have the same values of the `equal` labels.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// SMTP settings from `global`, the defaults of every email integration.
#[derive(Debug, Clone, Default)]
pub(crate) struct SmtpDefaults {
    pub(crate) smarthost: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) hello: Option<String>,
    pub(crate) auth_username: Option<String>,
    pub(crate) auth_password: Option<Secret>,
    pub(crate) auth_identity: Option<String>,
    pub(crate) require_tls: Option<bool>,
}

/// What the integrations inherit from `global`.
#[derive(Debug, Clone, Default)]
pub(crate) struct GlobalDefaults {
    pub(crate) smtp: SmtpDefaults,
    pub(crate) slack_api_url: Option<Secret>,
}

const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

impl Config {
    /// Parses and validates a configuration file's text; relative `templates:` globs
    /// are taken from the current directory.
    pub fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse_in(yaml, None)
    }

    /// Parses and validates a configuration's text; relative `templates:` globs are
    /// taken from `dir`.
    fn parse_in(yaml: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_saphyr::from_str(yaml).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        Config::from_raw(raw, dir)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), e.to_string()))?;
        Config::parse_in(&text, path.parent()).map_err(|e| match e {
            ConfigError::Yaml(m) => ConfigError::Yaml(format!("{}: {m}", path.display())),
            ConfigError::Invalid { path: p, message } => ConfigError::Invalid {
                path: format!("{}: {p}", path.display()),
                message,
            },
        })
    }

    fn from_raw(raw: RawConfig, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let templates = crate::notify::template::load_files(&raw.templates, dir)?;
        let time_intervals = time_intervals(raw.mute_time_intervals, raw.time_intervals)?;
        let g = raw.global;
        if g.smtp_auth_secret.is_some() {
            return Err(invalid(
                "global.smtp_auth_secret",
                "CRAM-MD5 is not supported; use smtp_auth_username/smtp_auth_password",
            ));
        }
        let resolve_timeout = match &g.resolve_timeout {
            Some(s) => parse_duration(s).map_err(|m| invalid("global.resolve_timeout", m))?,
            None => DEFAULT_RESOLVE_TIMEOUT,
        };
        if resolve_timeout.is_zero() {
            return Err(invalid("global.resolve_timeout", "must be positive"));
        }
        let defaults = GlobalDefaults {
            smtp: SmtpDefaults {
                smarthost: g.smtp_smarthost,
                from: g.smtp_from,
                hello: g.smtp_hello,
                auth_username: g.smtp_auth_username,
                auth_password: g.smtp_auth_password,
                auth_identity: g.smtp_auth_identity,
                require_tls: g.smtp_require_tls,
            },
            slack_api_url: g.slack_api_url,
        };

        let mut receivers = Vec::new();
        let mut names = BTreeSet::new();
        for (i, r) in raw.receivers.into_iter().enumerate() {
            let path = format!("receivers[{i}]");
            if r.name.is_empty() {
                return Err(invalid(format!("{path}.name"), "must not be empty"));
            }
            if !names.insert(r.name.clone()) {
                return Err(invalid(
                    format!("{path}.name"),
                    format!("receiver {:?} is defined twice", r.name),
                ));
            }
            let mut ints = Vec::new();
            for (j, c) in r.email_configs.into_iter().enumerate() {
                let p = format!("{path}.email_configs[{j}]");
                ints.push(Integration::Email(c.validate(&p, &defaults)?));
            }
            for (j, c) in r.slack_configs.into_iter().enumerate() {
                let p = format!("{path}.slack_configs[{j}]");
                ints.push(Integration::Slack(c.validate(&p, &defaults)?));
            }
            for (j, c) in r.webhook_configs.into_iter().enumerate() {
                let p = format!("{path}.webhook_configs[{j}]");
                ints.push(Integration::Webhook(c.validate(&p)?));
            }
            for (j, c) in r.dingtalk_configs.into_iter().enumerate() {
                let p = format!("{path}.dingtalk_configs[{j}]");
                ints.push(Integration::DingTalk(c.validate(&p)?));
            }
            for (j, c) in r.feishu_configs.into_iter().enumerate() {
                let p = format!("{path}.feishu_configs[{j}]");
                ints.push(Integration::Feishu(c.validate(&p)?));
            }
            for (j, c) in r.wecom_configs.into_iter().enumerate() {
                let p = format!("{path}.wecom_configs[{j}]");
                ints.push(Integration::WeCom(c.validate(&p)?));
            }
            for (j, c) in r.alertmanager_configs.into_iter().enumerate() {
                let p = format!("{path}.alertmanager_configs[{j}]");
                ints.push(Integration::Alertmanager(c.validate(&p)?));
            }
            receivers.push(Receiver {
                name: r.name,
                integrations: ints,
            });
        }

        integrations::check_templates(&receivers, &templates)?;

        let root = raw
            .route
            .ok_or_else(|| invalid("route", "a root route is required"))?;
        if root.receiver.is_none() {
            return Err(invalid("route.receiver", "the root route needs a receiver"));
        }
        if !root.matchers.is_empty() || !root.match_eq.is_empty() || !root.match_re.is_empty() {
            return Err(invalid(
                "route",
                "the root route must not have matchers: every alert enters there",
            ));
        }
        if root.continue_matching {
            return Err(invalid("route.continue", "not allowed on the root route"));
        }
        let inherited = Inherited {
            receiver: String::new(),
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            escalation_after: None,
            escalation_to: None,
        };
        let mut routes = Vec::new();
        build_route(
            root,
            "route",
            None,
            &inherited,
            &names,
            &time_intervals,
            &mut routes,
        )?;

        let mut inhibit_rules = Vec::new();
        for (i, r) in raw.inhibit_rules.into_iter().enumerate() {
            let path = format!("inhibit_rules[{i}]");
            let mut source =
                parse_matcher_list(&r.source_matchers, &format!("{path}.source_matchers"))?;
            source.extend(legacy_matchers(
                &r.source_match,
                &r.source_match_re,
                &format!("{path}.source_match"),
            )?);
            let mut target =
                parse_matcher_list(&r.target_matchers, &format!("{path}.target_matchers"))?;
            target.extend(legacy_matchers(
                &r.target_match,
                &r.target_match_re,
                &format!("{path}.target_match"),
            )?);
            for (j, l) in r.equal.iter().enumerate() {
                if !matcher::valid_label_name(l) {
                    return Err(invalid(
                        format!("{path}.equal[{j}]"),
                        format!("invalid label name {l:?}"),
                    ));
                }
            }
            inhibit_rules.push(InhibitRule {
                source,
                target,
                equal: r.equal,
            });
        }

        Ok(Config {
            resolve_timeout,
            routes,
            receivers,
            inhibit_rules,
            time_intervals,
            templates,
        })
    }

    /// The named templates receiver fields may call.
    pub(crate) fn templates(&self) -> &crate::template::TemplateSet {
        &self.templates
    }

    /// The route tree, flattened: `routes()[0]` is the root.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The receivers, in file order.
    pub fn receivers(&self) -> &[Receiver] {
        &self.receivers
    }

    /// The receiver named `name`.
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// The inhibition rules, in file order.
    pub fn inhibit_rules(&self) -> &[InhibitRule] {
        &self.inhibit_rules
    }

    /// The time interval named `name` (from `time_intervals` or the deprecated
    /// top-level `mute_time_intervals`).
    pub fn time_interval(&self, name: &str) -> Option<&TimeInterval> {
        self.time_intervals.get(name)
    }
}

/// Validates the named time intervals of both top-level lists (the deprecated
/// `mute_time_intervals` and `time_intervals`); names are unique across both.
fn time_intervals(
    deprecated: Vec<timeinterval::Raw>,
    current: Vec<timeinterval::Raw>,
) -> Result<BTreeMap<String, TimeInterval>, ConfigError> {
    let mut out = BTreeMap::new();
    let lists = [
        ("mute_time_intervals", deprecated),
        ("time_intervals", current),
    ];
    for (key, list) in lists {
        for (i, raw) in list.into_iter().enumerate() {
            let path = format!("{key}[{i}]");
            if out.contains_key(raw.name()) {
                return Err(invalid(
                    format!("{path}.name"),
                    format!("time interval {:?} is defined twice", raw.name()),
                ));
            }
            let t = raw.validate(&path)?;
            out.insert(t.name.clone(), t);
        }
    }
    Ok(out)
}

/// Settings a route passes down to its children.
struct Inherited {
    receiver: String,
    group_by: GroupBy,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    escalation_after: Option<Duration>,
    escalation_to: Option<String>,
}

fn build_route(
    raw: RawRoute,
    path: &str,
    parent_key: Option<&str>,
    up: &Inherited,
    receivers: &BTreeSet<String>,
    intervals: &BTreeMap<String, TimeInterval>,
    out: &mut Vec<Route>,
) -> Result<usize, ConfigError> {
    for (key, names) in [
        ("mute_time_intervals", &raw.mute_time_intervals),
        ("active_time_intervals", &raw.active_time_intervals),
    ] {
        if parent_key.is_none() && !names.is_empty() {
            return Err(invalid(
                format!("{path}.{key}"),
                "not allowed on the root route",
            ));
        }
        for (i, name) in names.iter().enumerate() {
            if !intervals.contains_key(name) {
                return Err(invalid(
                    format!("{path}.{key}[{i}]"),
                    format!("undefined time interval {name:?}"),
                ));
            }
        }
    }
    let receiver = raw.receiver.unwrap_or_else(|| up.receiver.clone());
    if !receivers.contains(&receiver) {
        return Err(invalid(
            format!("{path}.receiver"),
            format!("undefined receiver {receiver:?}"),
        ));
    }
    let group_by = match raw.group_by {
        None => up.group_by.clone(),
        Some(list) => {
            if list.iter().any(|l| l == "...") {
                if list.len() != 1 {
                    return Err(invalid(
                        format!("{path}.group_by"),
                        "'...' must be the only entry when present",
                    ));
                }
                GroupBy::All
            } else {
                let mut seen = BTreeSet::new();
                for (i, l) in list.iter().enumerate() {
                    if !matcher::valid_label_name(l) {
                        return Err(invalid(
                            format!("{path}.group_by[{i}]"),
                            format!("invalid label name {l:?}"),
                        ));
                    }
                    if !seen.insert(l) {
                        return Err(invalid(
                            format!("{path}.group_by[{i}]"),
                            format!("duplicated label {l:?}"),
                        ));
                    }
                }
                GroupBy::Labels(list)
            }
        }
    };
    let dur = |v: &Option<String>, name: &str, d: Duration| -> Result<Duration, ConfigError> {
        match v {
            Some(s) => parse_duration(s).map_err(|m| invalid(format!("{path}.{name}"), m)),
            None => Ok(d),
        }
    };
    let group_wait = dur(&raw.group_wait, "group_wait", up.group_wait)?;
    let group_interval = dur(&raw.group_interval, "group_interval", up.group_interval)?;
    let repeat_interval = dur(&raw.repeat_interval, "repeat_interval", up.repeat_interval)?;
    if group_interval.is_zero() {
        return Err(invalid(
            format!("{path}.group_interval"),
            "must be positive",
        ));
    }
    if repeat_interval.is_zero() {
        return Err(invalid(
            format!("{path}.repeat_interval"),
            "must be positive",
        ));
    }
    let escalation_after = match &raw.escalate_after {
        Some(s) => {
            Some(parse_duration(s).map_err(|m| invalid(format!("{path}.escalate_after"), m))?)
        }
        None => up.escalation_after,
    };
    let escalation_to = raw.escalate_to.clone().or_else(|| up.escalation_to.clone());
    let escalation = match (escalation_after, &escalation_to) {
        (None, None) => None,
        (Some(after), Some(to)) => {
            if !receivers.contains(to) {
                return Err(invalid(
                    format!("{path}.escalate_to"),
                    format!("undefined receiver {to:?}"),
                ));
            }
            if after.is_zero() {
                return Err(invalid(
                    format!("{path}.escalate_after"),
                    "must be positive",
                ));
            }
            Some(Escalation {
                after,
                receiver: to.clone(),
            })
        }
        (Some(_), None) => {
            return Err(invalid(
                format!("{path}.escalate_after"),
                "needs escalate_to (the receiver to notify)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                format!("{path}.escalate_to"),
                "needs escalate_after (how long to wait for an acknowledgement)",
            ));
        }
    };

    let mut matchers = parse_matcher_list(&raw.matchers, &format!("{path}.matchers"))?;
    matchers.extend(legacy_matchers(
        &raw.match_eq,
        &raw.match_re,
        &format!("{path}.match"),
    )?);
    matchers.sort_by(|a, b| (&a.name, a.op, &a.value).cmp(&(&b.name, b.op, &b.value)));
    let key = match parent_key {
        None => "{}".to_string(),
        Some(p) => format!("{p}/{}", matcher::format_matchers(&matchers)),
    };

    let index = out.len();
    out.push(Route {
        key,
        receiver: receiver.clone(),
        matchers,
        group_by: group_by.clone(),
        group_wait,
        group_interval,
        repeat_interval,
        continue_matching: raw.continue_matching,
        escalation,
        mute_time_intervals: raw.mute_time_intervals,
        active_time_intervals: raw.active_time_intervals,
        children: Vec::new(),
    });
    let down = Inherited {
        receiver,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
        escalation_after,
        escalation_to,
    };
    let my_key = out[index].key.clone();
    let mut children = Vec::new();
    let mut seen_keys: HashMap<String, usize> = HashMap::new();
    for (i, child) in raw.routes.into_iter().enumerate() {
        let c = build_route(
            child,
            &format!("{path}.routes[{i}]"),
            Some(&my_key),
            &down,
            receivers,
            intervals,
            out,
        )?;
        // Siblings with identical matchers get their position appended, so that
        // every route (and so every group) has its own key.
        let n = seen_keys.entry(out[c].key.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            let old = out[c].key.clone();
            let new = format!("{old}/{i}");
            rekey(out, c, &old, &new);
        }
        children.push(c);
    }
    out[index].children = children;
    Ok(index)
}

/// Replaces the key prefix `old` by `new` in route `i` and its descendants.
fn rekey(out: &mut [Route], i: usize, old: &str, new: &str) {
    if let Some(rest) = out[i].key.strip_prefix(old) {
        out[i].key = format!("{new}{rest}");
    }
    for c in out[i].children.clone() {
        rekey(out, c, old, new);
    }
}

fn parse_matcher_list(list: &[String], path: &str) -> Result<Vec<Matcher>, ConfigError> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let ms = matcher::parse_matchers(s)
            .map_err(|e| invalid(format!("{path}[{i}]"), e.to_string()))?;
        if ms.is_empty() {
            return Err(invalid(format!("{path}[{i}]"), "empty matcher"));
        }
        out.extend(ms);
    }
    Ok(out)
}

fn legacy_matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    path: &str,
) -> Result<Vec<Matcher>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in eq {
        out.push(
            Matcher::new(k, MatchOp::Equal, v)
                .map_err(|e| invalid(format!("{path}.{k}"), e.message))?,
        );
    }
    for (k, v) in re {
        out.push(
            Matcher::new(k, MatchOp::Regex, v)
                .map_err(|e| invalid(format!("{path}_re.{k}"), e.message))?,
        );
    }
    Ok(out)
}

/// Parses a Prometheus duration: `[0-9]+(ms|s|m|h|d|w|y)` units in decreasing order,
/// each at most once (`1h30m`, `200ms`), or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 30s, 5m, 1h30m, 200ms)");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = t;
    let mut total: u64 = 0;
    let mut last_unit = 0usize;
    let mut first = true;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        // "ms" must be tried before "m".
        let (idx, len) = if rest.starts_with("ms") {
            (6, 2)
        } else {
            match UNITS.iter().position(|(u, _)| rest.starts_with(u)) {
                Some(i) => (i, 1),
                None => return Err(bad()),
            }
        };
        if !first && idx <= last_unit {
            return Err(bad());
        }
        first = false;
        last_unit = idx;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[len..];
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_prometheus_syntax() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(
            parse_duration("1m1s1ms").unwrap(),
            Duration::from_millis(61_001)
        );
        for bad in ["", "5", "m", "1m1h", "1s1s", "1.5h", "-1s", "1x"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    const GOOD: &str = r#"
global:
  resolve_timeout: 1m
  smtp_smarthost: 'localhost:25'
  smtp_from: 'alerts@example.org'
  smtp_require_tls: false
route:
  receiver: team-mail
  group_by: ['alertname', 'cluster']
  group_wait: 10s
  routes:
    - matchers: ['severity=~"crit|page"']
      receiver: pager
      continue: true
      escalate_after: 15m
      escalate_to: boss
      routes:
        - match: {team: db}
          group_by: ['...']
    - match_re: {service: 'api|web'}
      repeat_interval: 1h
receivers:
  - name: team-mail
    email_configs:
      - to: 'team@example.org'
  - name: pager
    webhook_configs:
      - url: 'http://127.0.0.1:5001/hook'
  - name: boss
    slack_configs:
      - api_url: 'http://127.0.0.1:5002/slack'
        channel: '#ops'
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [instance]
"#;

    #[test]
    fn a_full_config_validates_with_inheritance() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.resolve_timeout, Duration::from_secs(60));
        let r = c.routes();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].key, "{}");
        assert_eq!(r[0].group_wait, Duration::from_secs(10));
        assert_eq!(r[0].group_interval, DEFAULT_GROUP_INTERVAL);
        assert_eq!(r[1].key, r#"{}/{severity=~"crit|page"}"#);
        assert_eq!(r[1].receiver, "pager");
        assert!(r[1].continue_matching);
        assert_eq!(r[1].group_wait, Duration::from_secs(10));
        let esc = r[1].escalation.as_ref().unwrap();
        assert_eq!(esc.after, Duration::from_secs(900));
        assert_eq!(esc.receiver, "boss");
        // The grandchild inherits receiver and escalation, overrides group_by.
        assert_eq!(r[2].receiver, "pager");
        assert_eq!(r[2].group_by, GroupBy::All);
        assert!(r[2].escalation.is_some());
        assert_eq!(r[2].key, r#"{}/{severity=~"crit|page"}/{team="db"}"#);
        assert_eq!(r[3].repeat_interval, Duration::from_secs(3600));
        assert_eq!(r[3].receiver, "team-mail");
        assert_eq!(c.inhibit_rules().len(), 1);
        assert_eq!(c.receivers().len(), 3);
    }

    fn err(yaml: &str) -> String {
        Config::parse(yaml).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = err("route:\n  receiver: a\n  recevier: b\nreceivers:\n  - name: a\n");
        assert!(e.contains("recevier") && e.contains("line 3"), "{e}");
        let e = err(
            "route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url: http://x\n        bogus: 1\n",
        );
        assert!(e.contains("bogus") && e.contains("line 7"), "{e}");
    }

    #[test]
    fn bad_configs_are_refused_with_the_path() {
        let base = "receivers:\n  - name: a\n";
        let cases = [
            (
                "route:\n  receiver: nope\n",
                "route.receiver: undefined receiver",
            ),
            ("route:\n  group_by: [a]\n", "route.receiver"),
            (
                "route:\n  receiver: a\n  routes:\n    - matchers: ['x=~\"(\"']\n",
                "route.routes[0].matchers[0]",
            ),
            (
                "route:\n  receiver: a\n  group_wait: 5 minutes\n",
                "route.group_wait",
            ),
            (
                "route:\n  receiver: a\n  group_by: ['...', 'x']\n",
                "route.group_by",
            ),
            (
                "route:\n  receiver: a\n  escalate_after: 5m\n",
                "route.escalate_after: needs escalate_to",
            ),
            (
                "route:\n  receiver: a\n  routes:\n    - escalate_after: 5m\n      escalate_to: zz\n",
                "route.routes[0].escalate_to: undefined receiver",
            ),
            (
                "route:\n  receiver: a\n  mute_time_intervals: [night]\n",
                "route.mute_time_intervals: not allowed on the root route",
            ),
            (
                "route:\n  receiver: a\n  matchers: ['a=b']\n",
                "root route must not have matchers",
            ),
            (
                "route:\n  receiver: a\ntemplates: ['[x.tmpl']\n",
                "templates[0]: invalid glob",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(&format!("{yaml}{base}"));
            assert!(e.contains(want), "{yaml}: got {e}, want {want}");
        }
        let e = err("route:\n  receiver: a\nreceivers:\n  - name: a\n  - name: a\n");
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn identical_siblings_get_distinct_keys() {
        let c = Config::parse(
            "route:\n  receiver: a\n  routes:\n    - match: {x: y}\n    - match: {x: y}\n      receiver: b\nreceivers:\n  - name: a\n  - name: b\n",
        )
        .unwrap();
        assert_ne!(c.routes()[1].key, c.routes()[2].key);
    }

    const INTERVALS: &str = r#"
route:
  receiver: team
  routes:
    - matchers: [team="db"]
      receiver: db-pager
      mute_time_intervals: [night, Holidays]
      routes:
        - matchers: [env="prod"]
    - matchers: [team="web"]
      active_time_intervals: [business-hours]
receivers:
  - name: team
  - name: db-pager
time_intervals:
  - name: business-hours
    time_intervals:
      - weekdays: ['monday:friday']
        times:
          - start_time: '09:00'
            end_time: '17:00'
        location: Europe/Berlin
  - name: night
    time_intervals:
      - times: [{start_time: '22:00', end_time: '24:00'}, {start_time: '00:00', end_time: '07:00'}]
mute_time_intervals:
  - name: Holidays
    time_intervals:
      - months: [december]
        days_of_month: ['24:26', '-1']
"#;

    #[test]
    fn time_intervals_validate_and_routes_reference_them_without_inheritance() {
        let c = Config::parse(INTERVALS).unwrap();
        let r = c.routes();
        assert_eq!(r[1].mute_time_intervals, ["night", "Holidays"]);
        assert!(r[1].active_time_intervals.is_empty());
        // Alertmanager does not pass a route's intervals to its children.
        assert!(r[2].mute_time_intervals.is_empty());
        assert_eq!(r[3].active_time_intervals, ["business-hours"]);
        // Both top-level lists define names; the deprecated one too.
        let holidays = c.time_interval("Holidays").unwrap();
        // 2024-12-31T12:00Z, the month's last day.
        assert!(holidays.contains(1_735_646_400_000));
        assert!(c.time_interval("holidays").is_none());
        // 2024-06-03 (a Monday) 07:30Z is 09:30 in Berlin.
        assert!(
            c.time_interval("business-hours")
                .unwrap()
                .contains(1_717_399_800_000)
        );
    }

    #[test]
    fn bad_time_intervals_are_refused_with_the_path() {
        let base = "receivers:\n  - name: a\n";
        let route = "route:\n  receiver: a\n";
        let night = "time_intervals:\n  - name: night\n    time_intervals:\n      - times: [{start_time: '22:00', end_time: '24:00'}]\n";
        let cases = [
            (
                format!("{route}  routes:\n    - mute_time_intervals: [nite]\n{night}"),
                "route.routes[0].mute_time_intervals[0]: undefined time interval \"nite\"",
            ),
            (
                // Interval names are case-sensitive, as in Alertmanager.
                format!("{route}  routes:\n    - active_time_intervals: [night, Night]\n{night}"),
                "route.routes[0].active_time_intervals[1]: undefined time interval \"Night\"",
            ),
            (
                format!("{route}  active_time_intervals: [night]\n{night}"),
                "route.active_time_intervals: not allowed on the root route",
            ),
            (
                format!("{route}{night}mute_time_intervals:\n  - name: night\n"),
                "time_intervals[0].name: time interval \"night\" is defined twice",
            ),
            (
                format!("{route}time_intervals:\n  - time_intervals: []\n"),
                "time_intervals[0].name: must not be empty",
            ),
            (
                format!(
                    "{route}time_intervals:\n  - name: x\n    time_intervals:\n      - {{}}\n      - weekdays: [monday, someday]\n"
                ),
                "time_intervals[0].time_intervals[1].weekdays[1]: invalid weekday \"someday\"",
            ),
            (
                format!(
                    "{route}mute_time_intervals:\n  - name: x\n    time_intervals:\n      - days_of_month: ['-3:2']\n"
                ),
                "mute_time_intervals[0].time_intervals[0].days_of_month[0]",
            ),
            (
                format!(
                    "{route}time_intervals:\n  - name: x\n    time_intervals:\n      - location: Europe/Atlantis\n"
                ),
                "time_intervals[0].time_intervals[0].location: unknown time zone",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(&format!("{yaml}{base}"));
            assert!(e.contains(want), "{yaml}: got {e}, want {want}");
        }
        // Unknown keys inside an interval are named with their line.
        let e = err(&format!(
            "{route}{base}time_intervals:\n  - name: x\n    time_intervals:\n      - weekdays: [monday]\n        timezone: UTC\n"
        ));
        assert!(e.contains("timezone") && e.contains("line 9"), "{e}");
    }
}
