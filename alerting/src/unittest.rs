/*!
Defines the runner of Prometheus rule unit-test files, the format `promtool test rules`
reads (`rule_files`, `evaluation_interval`, `group_eval_order`, `tests` with
`input_series`, `alert_rule_test` and `promql_expr_test`), with promtool's semantics and
its output.

Each test group gets a fresh database in a temporary directory. Its input series are
written step by step: at every `evaluation_interval` tick from 0 to the largest
`eval_time`, the samples up to the tick are appended, then every rule group is evaluated
at the tick (in `group_eval_order`, otherwise in file order), writing recording rules,
`ALERTS` and `ALERTS_FOR_STATE` to the database. An `alert_rule_test` compares the
firing alerts of the last tick at or before its `eval_time` (pending ones do not count);
a `promql_expr_test` queries the database after the last tick. A rule that fails to
evaluate ends its test group, as in promtool.

Where it follows current Prometheus rather than promtool 2.42 (the version Debian
ships): a test group without `interval` has its samples `evaluation_interval` apart
(2.42 put them all at time 0); and the engine is Minos' (Prometheus 3 semantics: a
range or lookback window excludes its left end, where Prometheus 2 includes it).

Boundary: formats and runs; rule files are read by `rulefile`, evaluated by `eval`.
Output goes to the writers the caller passes (`minos rules test` passes stdout and
stderr, as promtool prints).
*/

mod gofmt;
mod series;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql::{Engine, EngineOptions, Value};
use serde::Deserialize;
use tsdb::{Labels, Sample};

use crate::eval::{EvalOptions, GroupState};
use crate::rulefile::{self, Text, format_model_duration, parse_model_duration};

/// The outcome of one unit-test file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub file: PathBuf,
    /// Not failures: `rule_files` patterns that matched nothing.
    pub warnings: Vec<String>,
    /// Failures of the file as a whole: unreadable, not valid YAML, a bad
    /// `group_eval_order`.
    pub errors: Vec<String>,
    /// One report per entry of `tests`, in order.
    pub tests: Vec<TestReport>,
}

/// The outcome of one test group (an entry of `tests`).
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// Its `name`, possibly empty.
    pub name: String,
    /// Failures, each formatted as promtool prints it (indented, possibly several lines).
    pub errors: Vec<String>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }
}

impl FileReport {
    /// True when the file and every test group passed.
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.tests.iter().all(TestReport::passed)
    }

    /// Every failure, the file's first.
    pub fn failures(&self) -> impl Iterator<Item = &String> {
        self.errors
            .iter()
            .chain(self.tests.iter().flat_map(|t| t.errors.iter()))
    }

    /// Writes the report as `promtool test rules` does: the file and `SUCCESS` to `out`,
    /// warnings, `FAILED:` and the failures to `err`, a blank line after each failure and
    /// after the file to `out`.
    pub fn write_to(&self, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "Unit Testing:  {}", self.file.display())?;
        out.flush()?;
        for w in &self.warnings {
            writeln!(err, "  WARNING: {w}")?;
        }
        if self.passed() {
            writeln!(out, "  SUCCESS")?;
        } else {
            writeln!(err, "  FAILED:")?;
            for e in self.failures() {
                writeln!(err, "{e}")?;
                err.flush()?;
                writeln!(out)?;
                out.flush()?;
            }
        }
        writeln!(out)?;
        out.flush()
    }
}

/// Runs every file, writing each report as it completes; true when all passed.
pub fn run_files<P: AsRef<Path>>(
    files: &[P],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<bool> {
    let mut ok = true;
    for f in files {
        let r = run_file(f.as_ref());
        r.write_to(out, err)?;
        ok &= r.passed();
    }
    Ok(ok)
}

/// Runs one unit-test file.
pub fn run_file(path: &Path) -> FileReport {
    let mut report = FileReport {
        file: path.to_path_buf(),
        ..FileReport::default()
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(format!("{}: {e}", path.display()));
            return report;
        }
    };
    let file = match parse_test_file(&text) {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut rule_files = Vec::new();
    for rf in &file.rule_files {
        let p = if rf.is_empty() || Path::new(rf).is_absolute() || base.as_os_str().is_empty() {
            PathBuf::from(rf)
        } else {
            base.join(rf)
        };
        let matched = glob(&p);
        if matched.is_empty() {
            report
                .warnings
                .push(format!("no file match pattern {}", p.display()));
        }
        rule_files.extend(matched);
    }
    let mut order = HashMap::new();
    for (i, g) in file.group_eval_order.iter().enumerate() {
        if order.insert(g.clone(), i).is_some() {
            report
                .errors
                .push(format!("group name repeated in evaluation order: {g}"));
            return report;
        }
    }
    for tg in &file.tests {
        let errors = run_group(tg, file.evaluation_interval, &order, &rule_files);
        report.tests.push(TestReport {
            name: tg.name.clone(),
            errors,
        });
    }
    report
}

// ---------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------

struct TestFile {
    rule_files: Vec<String>,
    evaluation_interval: i64,
    group_eval_order: Vec<String>,
    tests: Vec<TestGroup>,
}

struct TestGroup {
    interval: i64,
    input_series: Vec<(String, String)>,
    alert_tests: Vec<AlertTest>,
    promql_tests: Vec<PromqlTest>,
    external_labels: BTreeMap<String, String>,
    external_url: String,
    name: String,
}

struct AlertTest {
    eval_time: i64,
    alertname: String,
    exp_alerts: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>,
}

struct PromqlTest {
    expr: String,
    eval_time: i64,
    exp_samples: Vec<(String, f64)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rule_files: Option<Vec<Text>>,
    evaluation_interval: Option<Text>,
    group_eval_order: Option<Vec<Text>>,
    tests: Option<Vec<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    interval: Option<Text>,
    input_series: Option<Vec<RawSeries>>,
    alert_rule_test: Option<Vec<RawAlertTest>>,
    promql_expr_test: Option<Vec<RawPromqlTest>>,
    external_labels: Option<BTreeMap<String, Text>>,
    external_url: Option<Text>,
    name: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeries {
    series: Option<Text>,
    values: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertTest {
    eval_time: Option<Text>,
    alertname: Option<Text>,
    exp_alerts: Option<Vec<RawAlert>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    exp_labels: Option<BTreeMap<String, Text>>,
    exp_annotations: Option<BTreeMap<String, Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPromqlTest {
    expr: Option<Text>,
    eval_time: Option<Text>,
    exp_samples: Option<Vec<RawSample>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    labels: Option<Text>,
    value: Option<f64>,
}

fn text(t: Option<Text>) -> String {
    t.map(|t| t.0).unwrap_or_default()
}

fn map(m: Option<BTreeMap<String, Text>>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn duration(t: Option<Text>, field: &str) -> Result<i64, String> {
    match t {
        None => Ok(0),
        Some(t) if t.0.is_empty() => Ok(0),
        Some(t) => parse_model_duration(&t.0).map_err(|e| format!("{field}: {e}")),
    }
}

fn parse_test_file(yaml: &str) -> Result<TestFile, String> {
    let raw: RawFile = if rulefile::is_blank_yaml(yaml) {
        RawFile {
            rule_files: None,
            evaluation_interval: None,
            group_eval_order: None,
            tests: None,
        }
    } else {
        serde_saphyr::from_str(yaml).map_err(|e| {
            let msg = rulefile::yaml_message(&e);
            match e.location().filter(|l| l.line() > 0) {
                Some(l) => {
                    let key = rulefile::key_at_line(yaml, l.line())
                        .filter(|k| !msg.contains(&format!("`{k}`")))
                        .map(|k| format!("{k}: "))
                        .unwrap_or_default();
                    format!("line {}:{}: {key}{msg}", l.line(), l.column())
                }
                None => msg,
            }
        })?
    };
    let evaluation_interval = match duration(raw.evaluation_interval, "evaluation_interval")? {
        0 => 60_000,
        v => v,
    };
    let mut tests = Vec::new();
    for g in raw.tests.unwrap_or_default() {
        let interval = match duration(g.interval, "interval")? {
            0 => evaluation_interval,
            v => v,
        };
        let mut alert_tests = Vec::new();
        for a in g.alert_rule_test.unwrap_or_default() {
            alert_tests.push(AlertTest {
                eval_time: duration(a.eval_time, "eval_time")?,
                alertname: text(a.alertname),
                exp_alerts: a
                    .exp_alerts
                    .unwrap_or_default()
                    .into_iter()
                    .map(|x| (map(x.exp_labels), map(x.exp_annotations)))
                    .collect(),
            });
        }
        let mut promql_tests = Vec::new();
        for p in g.promql_expr_test.unwrap_or_default() {
            promql_tests.push(PromqlTest {
                expr: text(p.expr),
                eval_time: duration(p.eval_time, "eval_time")?,
                exp_samples: p
                    .exp_samples
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| (text(s.labels), s.value.unwrap_or(0.0)))
                    .collect(),
            });
        }
        tests.push(TestGroup {
            interval,
            input_series: g
                .input_series
                .unwrap_or_default()
                .into_iter()
                .map(|s| (text(s.series), text(s.values)))
                .collect(),
            alert_tests,
            promql_tests,
            external_labels: map(g.external_labels),
            external_url: text(g.external_url),
            name: text(g.name),
        });
    }
    Ok(TestFile {
        rule_files: raw
            .rule_files
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.0)
            .collect(),
        evaluation_interval,
        group_eval_order: raw
            .group_eval_order
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.0)
            .collect(),
        tests,
    })
}

// ---------------------------------------------------------------------------------------
// Running a test group
// ---------------------------------------------------------------------------------------

/// An alert as compared: sorted label pairs and sorted annotation pairs.
type Compared = (Vec<(String, String)>, Vec<(String, String)>);

fn run_group(
    tg: &TestGroup,
    eval_interval: i64,
    order: &HashMap<String, usize>,
    rule_files: &[PathBuf],
) -> Vec<String> {
    let mut inputs = Vec::new();
    for (s, v) in &tg.input_series {
        match series::parse_input(s, v) {
            Ok(i) => inputs.push(i),
            Err(e) => return vec![e],
        }
    }
    let files = match rulefile::parse_files(rule_files) {
        Ok(f) => f,
        Err(es) => return es.iter().map(ToString::to_string).collect(),
    };
    let mut groups: Vec<GroupState> = files
        .into_iter()
        .flat_map(|(_, f)| f.groups)
        .map(|g| GroupState::new(g, tg.interval).without_restore())
        .collect();
    groups.sort_by_key(|g| order.get(&g.group().name).copied().unwrap_or(0));

    let name_note = if tg.name.is_empty() {
        String::new()
    } else {
        format!(" (in TestGroup {})", tg.name)
    };
    for a in &tg.alert_tests {
        if a.alertname.is_empty() {
            return vec![format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{name_note}",
                format_model_duration(a.eval_time)
            )];
        }
    }

    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return vec![format!("creating a temporary database: {e}")],
    };
    let db = match tsdb::Db::open(tmp.path(), db_options()) {
        Ok(db) => db,
        Err(e) => return vec![format!("opening a temporary database: {e}")],
    };
    let errors = evaluate(tg, eval_interval, &mut groups, &inputs, &db);
    db.abandon();
    errors
}

fn db_options() -> tsdb::Options {
    tsdb::Options {
        retention: Duration::from_secs(200 * 365 * 24 * 3600),
        future_tolerance_ms: i64::MAX / 4,
        wal_sync: tsdb::SyncPolicy::Never,
        background: false,
        ..tsdb::Options::default()
    }
}

fn evaluate(
    tg: &TestGroup,
    eval_interval: i64,
    groups: &mut [GroupState],
    inputs: &[series::InputSeries],
    db: &tsdb::Db,
) -> Vec<String> {
    // As promtool: a subquery without a step steps by the evaluation interval.
    let engine = Engine::new(EngineOptions {
        default_subquery_step_ms: eval_interval,
        ..EngineOptions::default()
    });
    let opts = EvalOptions {
        external_labels: tg.external_labels.clone(),
        external_url: tg.external_url.clone(),
        ..EvalOptions::default()
    };
    let maxt = tg
        .alert_tests
        .iter()
        .map(|a| a.eval_time)
        .chain(tg.promql_tests.iter().map(|p| p.eval_time))
        .max()
        .unwrap_or(0);
    let mut alert_times: Vec<i64> = tg.alert_tests.iter().map(|a| a.eval_time).collect();
    alert_times.sort_unstable();
    alert_times.dedup();
    let mut curr = 0;
    let mut loaded = vec![0usize; inputs.len()];
    let mut errs = Vec::new();
    let test_name = if tg.name.is_empty() {
        String::new()
    } else {
        format!("    name: {},\n", tg.name)
    };

    let mut ts = 0;
    while ts <= maxt {
        if let Err(e) = load_until(db, inputs, &mut loaded, tg.interval, ts) {
            errs.push(e);
        } else {
            let mut eval_errs = Vec::new();
            for g in groups.iter_mut() {
                g.eval(db, db, &engine, ts, &opts);
                for r in g.rules() {
                    if let Some(e) = r.last_error() {
                        eval_errs.push(format!(
                            "    rule: {}, time: {}, err: {e}",
                            r.rule().name(),
                            gofmt::go_duration(ts)
                        ));
                    }
                }
            }
            if !eval_errs.is_empty() {
                errs.extend(eval_errs);
                return errs;
            }
        }

        while curr < alert_times.len()
            && ts <= alert_times[curr]
            && alert_times[curr] < ts + eval_interval
        {
            let t = alert_times[curr];
            for case in tg.alert_tests.iter().filter(|a| a.eval_time == t) {
                let mut got: Vec<Compared> = groups
                    .iter()
                    .flat_map(|g| g.rules())
                    .filter(|r| {
                        matches!(r.rule(), rulefile::Rule::Alerting(a) if a.name == case.alertname)
                    })
                    .flat_map(|r| r.active_alerts())
                    .filter(|a| a.state == crate::eval::AlertState::Firing)
                    .map(|a| (a.labels.to_vec(), pairs(&a.annotations)))
                    .collect();
                let mut exp: Vec<Compared> = case
                    .exp_alerts
                    .iter()
                    .map(|(l, a)| {
                        let mut l = l.clone();
                        l.insert("alertname".into(), case.alertname.clone());
                        (pairs(&l), pairs(a))
                    })
                    .collect();
                got.sort();
                exp.sort();
                if got != exp {
                    errs.push(format!(
                        "{test_name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        case.alertname,
                        format_model_duration(case.eval_time),
                        indent(&alerts_string(&exp), "            "),
                        indent(&alerts_string(&got), "            "),
                    ));
                }
            }
            curr += 1;
        }
        ts += eval_interval;
    }

    'cases: for case in &tg.promql_tests {
        let when = format_model_duration(case.eval_time);
        let got = match query(db, &engine, &case.expr, case.eval_time) {
            Ok(g) => g,
            Err(e) => {
                errs.push(format!(
                    "    expr: {}, time: {when}, err: {e}",
                    gofmt::quote(&case.expr)
                ));
                continue;
            }
        };
        let mut exp = Vec::new();
        for (l, v) in &case.exp_samples {
            match series::parse_metric(l) {
                Ok(labels) => exp.push((labels, *v)),
                Err(e) => {
                    errs.push(format!(
                        "    expr: {}, time: {when}, err: labels {}: {e}",
                        gofmt::quote(&case.expr),
                        gofmt::quote(l)
                    ));
                    continue 'cases;
                }
            }
        }
        let mut got = got;
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        // Exact equality, as promtool compares (a NaN never equals).
        let same =
            exp.len() == got.len() && exp.iter().zip(&got).all(|(e, g)| e.0 == g.0 && e.1 == g.1);
        if !same {
            errs.push(format!(
                "    expr: {}, time: {when},\n        exp: {}\n        got: {}",
                gofmt::quote(&case.expr),
                samples_string(&exp),
                samples_string(&got)
            ));
        }
    }
    errs
}

/// Appends the input samples at or before `ts` not appended yet.
fn load_until(
    db: &tsdb::Db,
    inputs: &[series::InputSeries],
    loaded: &mut [usize],
    interval: i64,
    ts: i64,
) -> Result<(), String> {
    for (s, done) in inputs.iter().zip(loaded.iter_mut()) {
        let mut samples = Vec::new();
        while *done < s.values.len() {
            let t = *done as i64 * interval;
            if t > ts {
                break;
            }
            if let Some(v) = s.values[*done] {
                samples.push(Sample { t, v });
            }
            *done += 1;
        }
        if samples.is_empty() {
            continue;
        }
        let pairs: Vec<(&str, &str)> = s.labels.iter().collect();
        let report = db
            .append([(pairs.as_slice(), samples.as_slice())])
            .map_err(|e| format!("loading {}: {e}", s.labels))?;
        if report.rejected_total() > 0 {
            return Err(format!(
                "loading {}: samples rejected: {}",
                s.labels,
                report.first_rejection.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn query(db: &tsdb::Db, engine: &Engine, expr: &str, t: i64) -> Result<Vec<(Labels, f64)>, String> {
    match engine
        .instant(db, expr, t)
        .map_err(|e| e.to_string())?
        .value
    {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Labels::default(), v)]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn pairs_string(p: &[(String, String)]) -> String {
    gofmt::labels(p.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// promtool's `labelsAndAnnotations.String`.
fn alerts_string(alerts: &[Compared]) -> String {
    if alerts.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[");
    for (i, (l, a)) in alerts.iter().enumerate() {
        let one = format!(
            "\nLabels:{}\nAnnotations:{}",
            pairs_string(l),
            pairs_string(a)
        );
        s.push_str(if i == 0 { "\n" } else { ",\n" });
        s.push_str(&format!("{i}:{}", indent(&one, "  ")));
    }
    s.push_str("\n]");
    s
}

/// promtool's `parsedSamplesString`.
fn samples_string(samples: &[(Labels, f64)]) -> String {
    if samples.is_empty() {
        return "nil".into();
    }
    samples
        .iter()
        .map(|(l, v)| format!("{} {}", gofmt::labels(l.iter()), gofmt::float_e(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prefixes every line but the first with `indent` (promtool's `indentLines`).
fn indent(s: &str, indent: &str) -> String {
    s.replace('\n', &format!("\n{indent}"))
}

// ---------------------------------------------------------------------------------------
// Globs
// ---------------------------------------------------------------------------------------

/// The paths matching `pattern` (Go's `filepath.Glob`: `*`, `?`, `[...]` in any
/// component; each directory's matches sorted; errors ignored). A pattern without
/// wildcards matches itself when it exists.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let is_meta = |s: &str| s.contains(['*', '?', '[']);
    if !is_meta(&pattern.to_string_lossy()) {
        return if std::fs::symlink_metadata(pattern).is_ok() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let mut current = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &current {
            if !is_meta(&part) {
                next.push(base.join(comp.as_os_str()));
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| wildcard(&part, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        current = next;
    }
    current
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect()
}

/// Go's `filepath.Match` on one path component.
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // `p` starts after '['; returns whether `c` matched and the length consumed.
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            i += 1;
            let mut hi = lo;
            if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&c| c != ']') {
                hi = p[i + 1];
                if hi == '\\' {
                    hi = *p.get(i + 2)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(&c) = n.first() else { return false };
                match class(&p[1..], c) {
                    Some((true, len)) => go(&p[1 + len..], &n[1..]),
                    _ => false,
                }
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: HostDown
        expr: up == 0
        for: 2m
        labels: {severity: page}
        annotations: {summary: host down}
"#;

    #[test]
    fn a_passing_file_passes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "rules.yml", RULES);
        let t = write(
            dir.path(),
            "t.yml",
            r#"
rule_files: [rules.yml]
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="node", instance="a"}'
        values: '1 1 0 0 0 0'
      - series: 'up{job="node", instance="b"}'
        values: '1x5'
    alert_rule_test:
      - eval_time: 3m
        alertname: HostDown
      - eval_time: 4m30s
        alertname: HostDown
        exp_alerts:
          - exp_labels: {severity: page, instance: a, job: node}
            exp_annotations: {summary: host down}
    promql_expr_test:
      - expr: job:up:sum
        eval_time: 4m
        exp_samples:
          - labels: 'job:up:sum{job="node"}'
            value: 1
      - expr: ALERTS_FOR_STATE
        eval_time: 4m
        exp_samples:
          - labels: 'ALERTS_FOR_STATE{alertname="HostDown", severity="page", instance="a", job="node"}'
            value: 120
"#,
        );
        let r = run_file(&t);
        assert!(r.passed(), "{:#?}", r.failures().collect::<Vec<_>>());
        let mut out = Vec::new();
        let mut err = Vec::new();
        r.write_to(&mut out, &mut err).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("Unit Testing:  {}\n  SUCCESS\n\n", t.display())
        );
        assert!(err.is_empty());
    }

    #[test]
    fn failures_print_like_promtool() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "rules.yml", RULES);
        let t = write(
            dir.path(),
            "t.yml",
            r#"
rule_files: [rules.yml, "missing*.yml"]
tests:
  - name: mytest
    input_series:
      - series: 'up{job="node", instance="a"}'
        values: '0x6'
    alert_rule_test:
      - eval_time: 5m
        alertname: HostDown
        exp_alerts:
          - exp_labels: {severity: page, instance: b, job: node}
    promql_expr_test:
      - expr: job:up:sum
        eval_time: 4m
        exp_samples:
          - labels: 'job:up:sum{job="node"}'
            value: 2
      - expr: 'sum(up'
        eval_time: 1m
      - expr: up
        eval_time: 1m
        exp_samples:
          - labels: 'up{'
"#,
        );
        let r = run_file(&t);
        assert!(!r.passed());
        assert_eq!(r.warnings.len(), 1);
        let f: Vec<&String> = r.failures().collect();
        assert_eq!(f.len(), 4, "{f:#?}");
        assert_eq!(
            f[0],
            r#"    name: mytest,
    alertname: HostDown, time: 5m, 
        exp:[
            0:
              Labels:{alertname="HostDown", instance="b", job="node", severity="page"}
              Annotations:{}
            ], 
        got:[
            0:
              Labels:{alertname="HostDown", instance="a", job="node", severity="page"}
              Annotations:{summary="host down"}
            ]"#
        );
        assert_eq!(
            f[1],
            "    expr: \"job:up:sum\", time: 4m,\n        exp: {__name__=\"job:up:sum\", job=\"node\"} 2E+00\n        got: {__name__=\"job:up:sum\", job=\"node\"} 0E+00"
        );
        assert!(
            f[2].starts_with("    expr: \"sum(up\", time: 1m, err: "),
            "{}",
            f[2]
        );
        assert!(
            f[3].starts_with("    expr: \"up\", time: 1m, err: labels \"up{\": "),
            "{}",
            f[3]
        );
        let mut out = Vec::new();
        let mut err = Vec::new();
        r.write_to(&mut out, &mut err).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("  WARNING: no file match pattern "),
            "{err}"
        );
        assert!(err.contains("  FAILED:\n    name: mytest,\n"), "{err}");
        assert_eq!(
            String::from_utf8(out).unwrap().matches('\n').count(),
            1 + 4 + 1
        );
    }

    #[test]
    fn an_evaluation_error_ends_the_test_group() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "rules.yml",
            "groups:\n  - name: g\n    rules:\n      - record: dup\n        expr: label_replace(up, \"instance\", \"x\", \"\", \"\")\n",
        );
        let t = write(
            dir.path(),
            "t.yml",
            r#"
rule_files: [rules.yml]
tests:
  - input_series:
      - series: up{instance="a"}
        values: 1 1 1
      - series: up{instance="b"}
        values: 1 1 1
    promql_expr_test:
      - expr: up
        eval_time: 2m
  - input_series: []
    alert_rule_test:
      - eval_time: 2m
"#,
        );
        let r = run_file(&t);
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests[0].errors.len(), 1, "{:?}", r.tests[0].errors);
        assert!(r.tests[0].errors[0].starts_with("    rule: dup, time: 0s, err: "));
        assert_eq!(
            r.tests[1].errors,
            ["an item under alert_rule_test misses required attribute alertname at eval_time 2m"]
        );
    }

    #[test]
    fn bad_files_fail_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let t = write(
            dir.path(),
            "t.yml",
            "rule_files: []\ntests:\n  - input_series: []\n    foo: 1\n",
        );
        let r = run_file(&t);
        assert!(!r.passed());
        assert!(
            r.errors[0].contains("unknown field `foo`"),
            "{:?}",
            r.errors
        );
        let t = write(dir.path(), "t2.yml", "group_eval_order: [a, a]\n");
        assert_eq!(
            run_file(&t).errors,
            ["group name repeated in evaluation order: a"]
        );
        let bad_rules = write(
            dir.path(),
            "bad.yml",
            "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: foo(up)\n",
        );
        let t = write(
            dir.path(),
            "t3.yml",
            "rule_files: [bad.yml]\ntests:\n  - input_series: []\n",
        );
        let r = run_file(&t);
        assert!(
            r.tests[0].errors[0].starts_with(&format!(
                "{}:5:15: group \"g\": rule 1 (\"X\"): could not parse expression",
                bad_rules.display()
            )),
            "{:?}",
            r.tests[0].errors
        );
    }

    #[test]
    fn globs_match_like_go() {
        assert!(wildcard("*.yml", "a.yml"));
        assert!(!wildcard("*.yml", "a.yaml"));
        assert!(wildcard("r?les.yml", "rules.yml"));
        assert!(wildcard("[a-c]x", "bx"));
        assert!(!wildcard("[^a-c]x", "bx"));
        assert!(wildcard("\\*", "*"));
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.yml", "");
        write(dir.path(), "a.yml", "");
        write(dir.path(), "c.txt", "");
        let got = glob(&dir.path().join("*.yml"));
        assert_eq!(got, [dir.path().join("a.yml"), dir.path().join("b.yml")]);
        assert_eq!(glob(&dir.path().join("c.txt")), [dir.path().join("c.txt")]);
        assert!(glob(&dir.path().join("none.txt")).is_empty());
    }
}
