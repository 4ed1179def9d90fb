/*!
`minos alerts` and `minos silence`: clients of the notifier's part of the ops API
(`/api/ops/v1/alerts…`, `/notifications`, `/silences…`, served by `web::alerts`).

`minos alerts` lists what the notifier holds, plus the alerts the rules hold as pending
(from the Prometheus API's `/api/v1/alerts`: the notifier only ever sees firing ones);
its subcommands show the alert history and the notification log, and acknowledge
alerts. `minos silence` adds, lists and expires silences. Fingerprints and silence ids
may be shortened to a unique prefix: it is resolved against the server's list first.

The connection flags, the HTTP client and the table helpers are `ops_cli`'s and
`tasks_cli`'s; every command exits 0, or 2 with the server's message when a call is
refused (or the server cannot be reached).
*/

use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::ops_cli::{Client, Conn, utc};
use crate::tasks_cli::{clip, columns, emit, query, since_ms, text};

/// The exit statuses, for the help texts (a macro: `concat!` takes only literals).
macro_rules! exit_status {
    () => {
        "Exit status: 0 done; 2 the call was refused (the server's message is printed), the \
         server could not be reached, or the arguments were wrong."
    };
}

/// `minos alerts`: the alerts, their history and notifications; acknowledgements.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = concat!("\
Without a subcommand: a table of the alerts, firing first, then pending, then (with --all) \
resolved. STATE is firing, pending or resolved, followed by `silenced`, `inhibited` and \
`acked by WHO` when they apply: a silenced, inhibited or acknowledged alert notifies nobody. \
Pending alerts are those whose rule's `for` has not elapsed yet; the notifier does not hold \
them, so they cannot be acknowledged.

Fingerprints identify an alert by its labels; any unique prefix of one will do.

", exit_status!()))]
pub struct AlertsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    list: ListOpts,
    #[command(subcommand)]
    cmd: Option<AlertsCmd>,
}

/// What `minos alerts` (or `minos alerts list`) shows.
#[derive(clap::Args, Debug, Clone)]
struct ListOpts {
    /// Only alerts whose labels match: `{severity="critical",instance=~"web-.*"}`
    /// (Alertmanager's matcher syntax; braces optional).
    #[arg(long, value_name = "MATCHERS")]
    filter: Option<String>,
    /// Resolved alerts too: the notifier keeps one only until its resolution is notified
    /// (`minos alerts history` keeps every change).
    #[arg(long)]
    all: bool,
    /// Print JSON instead of the table: `{"alerts": [the notifier's], "pending": [the
    /// rules' pending alerts, in /api/v1/alerts' shape]}`.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum AlertsCmd {
    /// The table of alerts (what `minos alerts` alone prints).
    List(ListOpts),
    /// State changes of alerts, newest first: fired, resolved, acknowledged.
    #[command(after_help = exit_status!())]
    History {
        /// Only alerts whose labels match these matchers (`{alertname="HighCPU"}`).
        #[arg(long, value_name = "MATCHERS")]
        filter: Option<String>,
        /// Only this alert (a fingerprint, or a unique prefix of one the notifier holds).
        #[arg(long, value_name = "FP")]
        fingerprint: Option<String>,
        /// Only changes since then: a duration ago (`1h`, `-30m`, `now-1d`), RFC 3339 or
        /// Unix seconds.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only changes until then: `now-1h`, RFC 3339 or Unix seconds.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the API's JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert: it stops notifying (and escalating) until it resolves, the
    /// acknowledgement expires (--ttl), or `minos alerts unack`.
    #[command(after_help = "\
Prints who acknowledged, when, and until when. The acknowledgement is recorded in the \
history; the person is the token's name.

Exit status: 0 done; 2 the call was refused (unknown or resolved alert: the server's message \
is printed), the server could not be reached, or the arguments were wrong.")]
    Ack {
        /// The alert's fingerprint, or a unique prefix of it.
        fingerprint: String,
        /// Why (shown in `minos alerts` and the history).
        #[arg(long, short = 'c', default_value = "")]
        comment: String,
        /// How long the acknowledgement holds (`30m`, `2h`) [default: until the alert
        /// resolves].
        #[arg(long, value_name = "DUR")]
        ttl: Option<String>,
    },
    /// Withdraw an alert's acknowledgement: it notifies again.
    #[command(after_help = exit_status!())]
    Unack {
        /// The alert's fingerprint, or a unique prefix of it.
        fingerprint: String,
    },
    /// The notification log: every delivery attempt, newest first.
    #[command(after_help = concat!("\
RESULT is `ok` or the error of that attempt (cut in the middle when long: --json has it \
whole); ATTEMPT counts the attempts of one \
notification (retries after failures). INTEGRATION is the integration's kind and its \
position in the receiver (`webhook[0]`).

", exit_status!()))]
    Notifications {
        /// Only this receiver's.
        #[arg(long)]
        receiver: Option<String>,
        /// Only this kind of integration (`email`, `slack`, `webhook`, …).
        #[arg(long)]
        integration: Option<String>,
        /// Only failed attempts.
        #[arg(long)]
        failed: bool,
        /// Only attempts since then: a duration ago (`1h`, `now-1d`), RFC 3339 or Unix
        /// seconds.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the API's JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// `minos silence`: mute alerts matching label matchers for a while.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!("\
A silence mutes every alert whose labels match all its matchers, from its start (now by \
default) to its end; the alerts still show in `minos alerts`, marked `silenced`. Silence ids \
may be shortened to a unique prefix.

", exit_status!()))]
pub struct SilenceArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: SilenceCmd,
}

#[derive(clap::Subcommand, Debug)]
enum SilenceCmd {
    /// Add a silence; prints its id.
    #[command(after_help = concat!("\
Examples:
  minos silence add alertname=HighCPU 'instance=~web-.*' --duration 2h -c 'reboots'
  minos silence add '{alertname=\"HostLost\",hostname=\"db-1\"}' --until 2030-01-01T00:00:00Z -c 'decommissioned'

Each MATCHER is one matcher, NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX: the value \
is taken as it is (quotes are added; a value already in double quotes is kept). Or give the \
whole list as one argument in Alertmanager's syntax, `{a=\"b\",c=~\"d\"}`. Regular \
expressions match whole values. At least one matcher must not match an empty value.

Prints the new silence's id on stdout, and what it does on stderr.

", exit_status!()))]
    Add {
        /// The matchers (see below).
        #[arg(required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long from its start [default: 1h].
        #[arg(long, short = 'd', value_name = "DUR", conflicts_with = "until")]
        duration: Option<String>,
        /// When it ends: `now+2h` (or `+2h`), RFC 3339 or Unix seconds.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// When it starts: `now+1h` (or `+1h`), RFC 3339 or Unix seconds [default: now].
        #[arg(long, value_name = "WHEN")]
        start: Option<String>,
        /// Why (required: whoever finds the alerts silenced reads it).
        #[arg(long, short = 'c')]
        comment: String,
    },
    /// List silences: active and pending ones (with --expired, the expired ones).
    #[command(after_help = exit_status!())]
    List {
        /// List the expired silences instead.
        #[arg(long)]
        expired: bool,
        /// Print JSON (`{"silences": [...]}`, the same silences) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Expire a silence now: the alerts it muted notify again.
    #[command(after_help = exit_status!())]
    Expire {
        /// The silence's id, or a unique prefix of it.
        id: String,
    },
}

/// An RFC 3339 time of the API as `utc()` shows times (seconds, `Z`); `-` if absent.
fn time_text(v: &Value) -> String {
    v.as_str()
        .and_then(|s| web::params::parse_time(s).ok())
        .map_or("-".into(), utc)
}

/// An RFC 3339 time of the API in ms.
fn time_ms(v: &Value) -> Option<i64> {
    v.as_str().and_then(|s| web::params::parse_time(s).ok())
}

/// A time of the API and, when it is ahead, how far: `T (in 2h59m)`.
fn until_text(v: &Value, now: i64) -> String {
    match time_ms(v) {
        Some(t) if t > now => format!("{} (in {})", utc(t), rough_duration(t - now)),
        Some(t) => utc(t),
        None => "-".into(),
    }
}

/// Milliseconds in at most two adjacent units, rounded to the second: `2h`, `9m19s`,
/// `1w` (for a week and five minutes).
fn rough_duration(ms: i64) -> String {
    const UNITS: [(&str, i64); 6] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    let mut rest = (ms + 500) / 1000 * 1000;
    let mut out = String::new();
    let mut units = 0;
    for (u, n) in UNITS {
        if rest >= n {
            let _ = write!(out, "{}{u}", rest / n);
            rest %= n;
        }
        if !out.is_empty() {
            units += 1;
            if units == 2 {
                break;
            }
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// `s` cut to `n` characters in the middle (`head…tail`): an error chain's first words
/// say what was tried, its last words why it failed.
fn clip_middle(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ");
    let len = s.chars().count();
    if len <= n {
        return s;
    }
    let head = n * 2 / 5;
    let tail = n.saturating_sub(head + 1);
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(len - tail));
    out
}

/// A time argument in ms: `now`, relative to now (`+2h`, `now-1h`), RFC 3339 or Unix
/// seconds (the query commands' parser).
fn when_ms(s: &str, now: i64, flag: &str) -> Result<i64> {
    crate::query::time_arg(s, now, flag)
}

/// Labels as `k=v,k=v`, leaving out `alertname`.
fn other_labels(labels: &Value) -> String {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "alertname")
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The alert's name and its other labels: `HighCPU{instance=web-1,severity=critical}`.
fn alert_name(labels: &Value) -> String {
    let others = other_labels(labels);
    let name = text(&labels["alertname"]);
    if others.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{others}}}")
    }
}

/// The annotation a person reads first: `summary`, else `description`.
fn summary(annotations: &Value) -> String {
    let s = text(&annotations["summary"]);
    let s = if s.is_empty() {
        text(&annotations["description"])
    } else {
        s
    };
    clip(s, 60)
}

/// An alert the notifier holds: its state and what mutes it.
fn held_state(a: &Value) -> String {
    let mut s = text(&a["state"]).to_string();
    if a["silenced_by"].as_array().is_some_and(|v| !v.is_empty()) {
        s.push_str(", silenced");
    }
    if a["inhibited_by"].as_array().is_some_and(|v| !v.is_empty()) {
        s.push_str(", inhibited");
    }
    if let Some(by) = a["muted_by"].as_array().filter(|v| !v.is_empty()) {
        let names: Vec<&str> = by.iter().map(text).collect();
        let receivers: Vec<&str> = a["muted_receivers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let _ = write!(
            s,
            ", muted by {} for {}",
            names.join("+"),
            receivers.join("+")
        );
    }
    if a["acked"].is_object() {
        let _ = write!(s, ", acked by {}", text(&a["acked"]["by"]));
    }
    s
}

/// The labels of a `/api/v1/alerts` alert as the notifier's label set.
fn label_set(labels: &Value) -> alerting::notify::Labels {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text(v).to_string()))
        .collect()
}

/// The table of `minos alerts`: the notifier's alerts (firing ones, then resolved ones
/// if `all`) with the rules' pending alerts between them.
fn alerts_table(held: &[Value], pending: &[Value], all: bool) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "FINGERPRINT",
            "STATE",
            "ALERTNAME",
            "LABELS",
            "STARTED",
            "SUMMARY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let row = |fp: String, state: String, a: &Value, started: &Value| {
        let others = other_labels(&a["labels"]);
        vec![
            fp,
            state,
            text(&a["labels"]["alertname"]).to_string(),
            if others.is_empty() {
                "-".into()
            } else {
                clip(&others, 60)
            },
            time_text(started),
            summary(&a["annotations"]),
        ]
    };
    let firing = |a: &&Value| a["state"] == "firing";
    for a in held.iter().filter(firing) {
        rows.push(row(
            text(&a["fingerprint"]).to_string(),
            held_state(a),
            a,
            &a["starts_at"],
        ));
    }
    let mut pending: Vec<&Value> = pending.iter().collect();
    pending.sort_by_key(|a| time_ms(&a["activeAt"]));
    for a in pending {
        let fp = alerting::notify::fingerprint(&label_set(&a["labels"]));
        rows.push(row(fp.to_string(), "pending".into(), a, &a["activeAt"]));
    }
    if all {
        for a in held.iter().filter(|a| !firing(a)) {
            rows.push(row(
                text(&a["fingerprint"]).to_string(),
                held_state(a),
                a,
                &a["starts_at"],
            ));
        }
    }
    rows
}

/// The one of `ids` that `given` names: itself, or the only one it is a prefix of.
/// `Ok(None)` when none matches; an error when several do.
fn resolve_prefix<'a>(
    given: &str,
    ids: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> Result<Option<String>> {
    let given = given.trim().to_ascii_lowercase();
    if given.is_empty() {
        bail!("no {what} given");
    }
    let mut found: Vec<&str> = Vec::new();
    for id in ids {
        if id == given {
            return Ok(Some(id.to_string()));
        }
        if id.starts_with(&given) && !found.contains(&id) {
            found.push(id);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        many => bail!(
            "{given:?} is the start of {} {what}s ({}{}): give more of it",
            many.len(),
            many[..many.len().min(4)].join(", "),
            if many.len() > 4 { ", …" } else { "" }
        ),
    }
}

/// A fingerprint as 16 hex digits: given whole, or a unique prefix of one of the alerts
/// the notifier holds.
fn resolve_fingerprint(c: &Client, given: &str) -> Result<String> {
    let g = given.trim().to_ascii_lowercase();
    if g.is_empty() || g.len() > 16 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("fingerprint {given:?}: expected up to 16 hex digits");
    }
    if g.len() == 16 {
        return Ok(g);
    }
    let d = c.call(Method::GET, "/alerts", None)?;
    let alerts = d["alerts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if let Some(fp) = resolve_prefix(
        &g,
        alerts.iter().map(|a| text(&a["fingerprint"])),
        "fingerprint",
    )? {
        return Ok(fp);
    }
    // Not held: say so plainly if it is one of the rules' pending alerts.
    let url = format!("{}/api/v1/alerts", c.base);
    let rules = c.send(c.http.get(&url), &url)?;
    let pending: Vec<(String, String)> = rules["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "pending")
        .map(|a| {
            let fp = alerting::notify::fingerprint(&label_set(&a["labels"]));
            (fp.to_string(), text(&a["labels"]["alertname"]).to_string())
        })
        .collect();
    if let Some(fp) = resolve_prefix(&g, pending.iter().map(|(f, _)| f.as_str()), "fingerprint")?
        && let Some((_, name)) = pending.iter().find(|(f, _)| *f == fp)
    {
        bail!(
            "{fp} ({name}) is pending: its rule's `for` has not elapsed, so the notifier does \
             not hold it yet"
        );
    }
    bail!(
        "fingerprint {given:?}: no alert the notifier holds starts with it (`minos alerts \
         --all` lists them; resolved alerts are dropped once notified)"
    )
}

/// A silence id: given whole, or a unique prefix of one the server keeps.
fn resolve_silence(c: &Client, given: &str) -> Result<String> {
    let g = given.trim().to_ascii_lowercase();
    if g.len() == 36 {
        return Ok(g);
    }
    let d = c.call(Method::GET, "/silences", None)?;
    let list = d["silences"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    resolve_prefix(&g, list.iter().map(|s| text(&s["id"])), "silence id")?.ok_or_else(|| {
        anyhow!("silence {given:?}: no silence id starts with it (`minos silence list` lists them)")
    })
}

/// One matcher argument (`name=value`, `name=~regex`, …) in Alertmanager's syntax, its
/// value quoted (a value already in double quotes is kept as written).
fn quote_matcher(arg: &str) -> Result<String> {
    let a = arg.trim();
    let name_len = a
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(a.len());
    let (name, rest) = a.split_at(name_len);
    let rest = rest.trim_start();
    let op = ["=~", "!~", "!=", "="]
        .into_iter()
        .find(|op| rest.starts_with(op));
    let (Some(op), false) = (op, name.is_empty()) else {
        bail!("matcher {arg:?}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX");
    };
    let value = rest[op.len()..].trim_start();
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return Ok(format!("{name}{op}{value}"));
    }
    let mut out = format!("{name}{op}\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The matcher arguments of `minos silence add` as one list, `{a="b",c=~"d"}`: a single
/// `{…}` argument as it is, else each argument quoted as one matcher. Checked with the
/// server's parser, so a mistake shows before anything is sent.
fn join_matchers(args: &[String]) -> Result<String> {
    let joined = match args {
        [one] if one.trim_start().starts_with('{') => one.trim().to_string(),
        _ => {
            if args.iter().any(|a| a.trim_start().starts_with('{')) {
                bail!("give the matchers as separate arguments, or all of them as one {{…}}");
            }
            let ms: Vec<String> = args
                .iter()
                .map(|a| quote_matcher(a))
                .collect::<Result<_>>()?;
            format!("{{{}}}", ms.join(","))
        }
    };
    let parsed = alerting::notify::parse_matchers(&joined).map_err(|e| anyhow!("{e}"))?;
    if parsed.is_empty() {
        bail!("no matcher given: a silence needs at least one");
    }
    Ok(joined)
}

/// `minos alerts …`.
pub fn alerts(a: AlertsArgs) -> Result<()> {
    let c = Client::new(&a.conn)?;
    match a.cmd {
        None => list(&c, &a.list),
        Some(AlertsCmd::List(l)) => list(&c, &l),
        Some(AlertsCmd::History {
            filter,
            fingerprint,
            since,
            until,
            limit,
            json,
        }) => {
            let now = tsdb::now_ms();
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(f) = filter {
                q.push(("filter", f));
            }
            if let Some(f) = fingerprint {
                q.push(("fingerprint", resolve_fingerprint(&c, &f)?));
            }
            if let Some(s) = since {
                q.push(("since", since_ms(&s, now)?.to_string()));
            }
            if let Some(u) = until {
                q.push(("until", when_ms(&u, now, "until")?.to_string()));
            }
            q.push(("limit", limit.to_string()));
            let d = c.call(Method::GET, &format!("/alerts/history{}", query(&q)), None)?;
            if json {
                emit(&format!("{d}\n"));
                return Ok(());
            }
            let entries = d["history"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let mut rows = vec![
                ["TIME", "ALERT", "FROM → TO", "DETAIL"]
                    .map(String::from)
                    .to_vec(),
            ];
            for e in entries {
                rows.push(vec![
                    time_text(&e["at"]),
                    clip(&alert_name(&e["labels"]), 70),
                    format!("{} → {}", text(&e["from"]), text(&e["to"])),
                    clip(text(&e["detail"]), 80),
                ]);
            }
            if entries.is_empty() {
                eprintln!("(no entry)");
            } else {
                emit(&columns(&rows));
            }
            if entries.len() >= limit {
                eprintln!("(older entries may exist: raise --limit, or narrow with --until)");
            }
            Ok(())
        }
        Some(AlertsCmd::Ack {
            fingerprint,
            comment,
            ttl,
        }) => {
            let fp = resolve_fingerprint(&c, &fingerprint)?;
            let mut body = json!({"comment": comment});
            if let Some(t) = ttl {
                body["ttl"] = json!(t);
            }
            let ack = c.call(Method::POST, &format!("/alerts/{fp}/ack"), Some(body))?;
            let now = tsdb::now_ms();
            let until = if ack["expires_at"].is_null() {
                "until it resolves".to_string()
            } else {
                format!("until {}", until_text(&ack["expires_at"], now))
            };
            emit(&format!(
                "acknowledged {fp} by {} at {}, {until}\n",
                text(&ack["by"]),
                time_text(&ack["at"])
            ));
            Ok(())
        }
        Some(AlertsCmd::Unack { fingerprint }) => {
            let fp = resolve_fingerprint(&c, &fingerprint)?;
            c.call(Method::DELETE, &format!("/alerts/{fp}/ack"), None)?;
            emit(&format!("withdrew the acknowledgement of {fp}\n"));
            Ok(())
        }
        Some(AlertsCmd::Notifications {
            receiver,
            integration,
            failed,
            since,
            limit,
            json,
        }) => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(r) = receiver {
                q.push(("receiver", r));
            }
            if let Some(i) = integration {
                q.push(("integration", i));
            }
            if failed {
                q.push(("failed", "1".into()));
            }
            if let Some(s) = since {
                q.push(("since", since_ms(&s, tsdb::now_ms())?.to_string()));
            }
            q.push(("limit", limit.to_string()));
            let d = c.call(Method::GET, &format!("/notifications{}", query(&q)), None)?;
            if json {
                emit(&format!("{d}\n"));
                return Ok(());
            }
            let entries = d["notifications"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            emit_or_none(&notifications_table(entries), "(no notification)");
            if entries.len() >= limit {
                eprintln!("(older entries may exist: raise --limit)");
            }
            Ok(())
        }
    }
}

/// Prints a table, or `none` on stderr when it has only its heading.
fn emit_or_none(rows: &[Vec<String>], none: &str) {
    if rows.len() <= 1 {
        eprintln!("{none}");
    } else {
        emit(&columns(rows));
    }
}

/// `minos alerts notifications`' table.
fn notifications_table(entries: &[Value]) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "TIME",
            "RECEIVER",
            "INTEGRATION",
            "ALERTS",
            "ATTEMPT",
            "RESULT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in entries {
        let result = if e["ok"] == true {
            "ok".to_string()
        } else {
            clip_middle(
                &format!("error: {}", e["error"].as_str().unwrap_or("(no message)")),
                110,
            )
        };
        let mut integration = format!("{}[{}]", text(&e["integration"]), e["index"]);
        if e["escalation"] == true {
            integration.push_str(" (escalation)");
        }
        rows.push(vec![
            time_text(&e["at"]),
            text(&e["receiver"]).to_string(),
            integration,
            e["alerts"].to_string(),
            e["attempt"].to_string(),
            result,
        ]);
    }
    rows
}

/// `minos alerts` / `minos alerts list`.
fn list(c: &Client, o: &ListOpts) -> Result<()> {
    let filter = match o.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => alerting::notify::parse_matchers(f).map_err(|e| anyhow!("--filter: {e}"))?,
        None => Vec::new(),
    };
    let path = match &o.filter {
        Some(f) => format!("/alerts{}", query(&[("filter", f.clone())])),
        None => "/alerts".into(),
    };
    let d = c.call(Method::GET, &path, None)?;
    let mut held: Vec<Value> = d["alerts"].as_array().cloned().unwrap_or_default();
    if !o.all {
        held.retain(|a| a["state"] == "firing");
    }
    // The rules' alerts come from the Prometheus API, which takes no filter.
    let url = format!("{}/api/v1/alerts", c.base);
    let rules = c.send(c.http.get(&url), &url)?;
    let pending: Vec<Value> = rules["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "pending")
        .filter(|a| {
            let ls = label_set(&a["labels"]);
            filter.iter().all(|m| m.matches(&ls))
        })
        .cloned()
        .collect();
    if o.json {
        emit(&format!(
            "{}\n",
            json!({"alerts": held, "pending": pending})
        ));
        return Ok(());
    }
    emit_or_none(&alerts_table(&held, &pending, o.all), "(no alert)");
    Ok(())
}

/// `minos silence …`.
pub fn silence(a: SilenceArgs) -> Result<()> {
    let c = Client::new(&a.conn)?;
    match a.cmd {
        SilenceCmd::Add {
            matchers,
            duration,
            until,
            start,
            comment,
        } => {
            let now = tsdb::now_ms();
            let mut body = json!({"matchers": join_matchers(&matchers)?, "comment": comment});
            if let Some(s) = start {
                body["starts_at"] = json!(when_ms(&s, now, "start")?.to_string());
            }
            match until {
                Some(u) => body["ends_at"] = json!(when_ms(&u, now, "until")?.to_string()),
                None => body["duration"] = json!(duration.unwrap_or_else(|| "1h".into())),
            }
            let s = c.call(Method::POST, "/silences", Some(body))?;
            emit(&format!("{}\n", text(&s["id"])));
            eprintln!(
                "silence {}: {} from {} until {}",
                text(&s["state"]),
                text(&s["matchers"]),
                time_text(&s["starts_at"]),
                until_text(&s["ends_at"], now)
            );
            Ok(())
        }
        SilenceCmd::List { expired, json } => {
            let d = c.call(Method::GET, "/silences", None)?;
            let mut list: Vec<Value> = d["silences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| (s["state"] == "expired") == expired)
                .cloned()
                .collect();
            if json {
                emit(&format!("{}\n", json!({"silences": list})));
                return Ok(());
            }
            list.sort_by_key(|s| {
                (
                    s["state"] != "active",
                    if expired {
                        -time_ms(&s["ends_at"]).unwrap_or(0)
                    } else {
                        time_ms(&s["ends_at"]).unwrap_or(0)
                    },
                )
            });
            emit_or_none(
                &silences_table(&list, tsdb::now_ms()),
                if expired {
                    "(no expired silence)"
                } else {
                    "(no active or pending silence)"
                },
            );
            Ok(())
        }
        SilenceCmd::Expire { id } => {
            let id = resolve_silence(&c, &id)?;
            c.call(Method::DELETE, &format!("/silences/{id}"), None)?;
            emit(&format!("expired silence {id}\n"));
            Ok(())
        }
    }
}

/// `minos silence list`'s table.
fn silences_table(list: &[Value], now: i64) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"]
            .map(String::from)
            .to_vec(),
    ];
    for s in list {
        let state = match text(&s["state"]) {
            "pending" => format!("pending, starts {}", time_text(&s["starts_at"])),
            st => st.to_string(),
        };
        rows.push(vec![
            text(&s["id"]).to_string(),
            state,
            clip(text(&s["matchers"]), 70),
            until_text(&s["ends_at"], now),
            text(&s["created_by"]).to_string(),
            clip(text(&s["comment"]), 50),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matcher_args_are_quoted_and_joined() {
        assert_eq!(
            join_matchers(&args(&["alertname=HighCPU", "instance=~web-.*"])).unwrap(),
            r#"{alertname="HighCPU",instance=~"web-.*"}"#
        );
        assert_eq!(
            join_matchers(&args(&["severity!=info", "job!~a|b"])).unwrap(),
            r#"{severity!="info",job!~"a|b"}"#
        );
        // A value in quotes stays as written; quotes and backslashes elsewhere are
        // escaped, so the server reads back exactly what was typed.
        assert_eq!(
            join_matchers(&args(&[r#"alertname="High CPU""#, r#"msg=say "hi" \d"#])).unwrap(),
            r#"{alertname="High CPU",msg="say \"hi\" \\d"}"#
        );
        let back = alerting::notify::parse_matchers(
            &join_matchers(&args(&[r#"msg=say "hi" \d"#, "a = b,c"])).unwrap(),
        )
        .unwrap();
        assert_eq!(back[0].value, r#"say "hi" \d"#);
        assert_eq!(
            (back[1].name.as_str(), back[1].value.as_str()),
            ("a", "b,c")
        );
    }

    #[test]
    fn one_braced_matcher_list_passes_as_is() {
        let l = r#"{alertname="X", instance=~"web-.*"}"#;
        assert_eq!(join_matchers(&args(&[l])).unwrap(), l);
        assert!(join_matchers(&args(&["{alertname=\"X\"", "a=b"])).is_err());
        assert!(join_matchers(&args(&["{alertname=X"])).is_err());
        assert!(join_matchers(&args(&["{}"])).is_err());
    }

    #[test]
    fn malformed_matcher_args_are_refused() {
        for bad in ["=x", "alertname", "alertname~x", "", "a=~("] {
            assert!(join_matchers(&args(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_resolve_to_the_one_id_they_start() {
        let ids = ["0a1b2c3d4e5f6071", "0a1bffffffffffff", "9999000011112222"];
        let r = |g| resolve_prefix(g, ids, "fingerprint");
        assert_eq!(r("9").unwrap().as_deref(), Some("9999000011112222"));
        assert_eq!(r("0A1B2").unwrap().as_deref(), Some("0a1b2c3d4e5f6071"));
        assert_eq!(
            r("0a1bffffffffffff").unwrap().as_deref(),
            Some("0a1bffffffffffff")
        );
        assert_eq!(r("7").unwrap(), None);
        let e = r("0a1b").unwrap_err().to_string();
        assert!(e.contains("2 fingerprints"), "{e}");
        assert!(r(" ").is_err());
        // An exact id wins over longer ids it is a prefix of.
        assert_eq!(
            resolve_prefix("ab", ["abc", "ab"], "id")
                .unwrap()
                .as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn times_are_absolute_or_relative_to_now() {
        let now = 1_700_000_000_000;
        assert_eq!(when_ms("now", now, "t").unwrap(), now);
        assert_eq!(when_ms("+2h", now, "t").unwrap(), now + 7_200_000);
        assert_eq!(when_ms("now+30m", now, "t").unwrap(), now + 1_800_000);
        assert_eq!(when_ms("now-1h", now, "t").unwrap(), now - 3_600_000);
        assert_eq!(when_ms("1700000000", now, "t").unwrap(), now);
        assert_eq!(
            when_ms("2023-11-14T22:13:20Z", now, "t").unwrap(),
            1_700_000_000_000
        );
        assert!(when_ms("tomorrow", now, "t").is_err());
    }

    #[test]
    fn alert_table_orders_firing_pending_resolved_with_markers() {
        let held = vec![
            json!({"fingerprint": "00000000000000aa", "state": "firing",
                   "labels": {"alertname": "A", "severity": "critical"},
                   "annotations": {"description": "the description"},
                   "starts_at": "2023-11-14T22:13:20.500Z",
                   "silenced_by": ["s1"], "inhibited_by": [],
                   "acked": {"by": "admin:ann"}}),
            json!({"fingerprint": "00000000000000bb", "state": "resolved",
                   "labels": {"alertname": "B"}, "annotations": {},
                   "starts_at": "2023-11-14T22:13:20Z",
                   "silenced_by": [], "inhibited_by": ["00000000000000aa"], "acked": null,
                   "muted_by": ["night", "weekend"], "muted_receivers": ["devs"]}),
        ];
        let pending = vec![json!({"labels": {"alertname": "C", "job": "j"},
                                  "annotations": {"summary": "soon"}, "state": "pending",
                                  "activeAt": "2023-11-14T22:13:20Z"})];
        let rows = alerts_table(&held, &pending, true);
        let c_fp = alerting::notify::fingerprint(
            &[("alertname", "C"), ("job", "j")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(
            rows[1..],
            [
                vec![
                    "00000000000000aa",
                    "firing, silenced, acked by admin:ann",
                    "A",
                    "severity=critical",
                    "2023-11-14T22:13:20Z",
                    "the description"
                ],
                vec![
                    &c_fp.to_string(),
                    "pending",
                    "C",
                    "job=j",
                    "2023-11-14T22:13:20Z",
                    "soon"
                ],
                vec![
                    "00000000000000bb",
                    "resolved, inhibited, muted by night+weekend for devs",
                    "B",
                    "-",
                    "2023-11-14T22:13:20Z",
                    ""
                ],
            ]
            .map(|r| r.into_iter().map(String::from).collect::<Vec<_>>())
        );
        assert_eq!(alerts_table(&held, &pending, false).len(), 3);
    }

    #[test]
    fn durations_round_to_two_units() {
        assert_eq!(rough_duration(10 * 3_600_000 - 2), "10h");
        assert_eq!(rough_duration(9 * 60_000 + 18_806), "9m19s");
        assert_eq!(rough_duration(7 * 86_400_000 + 5 * 60_000), "1w");
        assert_eq!(rough_duration(400), "0s");
    }

    #[test]
    fn long_errors_keep_their_start_and_their_cause() {
        let e = "POST http://h/x: error sending request: client error (Connect): refused";
        let c = clip_middle(e, 40);
        assert_eq!(c.chars().count(), 40);
        assert!(
            c.starts_with("POST http://h") && c.ends_with("(Connect): refused"),
            "{c}"
        );
        assert_eq!(clip_middle("short", 40), "short");
    }

    #[test]
    fn history_names_alerts_by_name_and_labels() {
        assert_eq!(
            alert_name(&json!({"alertname": "A", "job": "j", "severity": "x"})),
            "A{job=j,severity=x}"
        );
        assert_eq!(alert_name(&json!({"alertname": "A"})), "A");
    }
}
