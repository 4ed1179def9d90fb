//! Runs Prometheus' own PromQL test scripts (`testdata/promqltest/*.test`, the format is
//! described in `FORMAT.md` there) against the engine over a real on-disk database.
//!
//! Each `eval` is one case, named `file:line`. Cases that need native histograms are
//! skipped. Cases listed in `testdata/known_failures.txt` may fail; any other failure
//! fails the test, and a listed case that passes is reported so the list can shrink.
//! `expect warn`/`expect info` lines are not checked (the engine reports only a few
//! annotations); `expect fail`, `expect ordered` and expected error messages are.
//!
//! Set `PROMQLTEST_FILTER=substring` to run matching files only and
//! `PROMQLTEST_VERBOSE=1` to print every failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql::{Engine, EngineOptions, Value};
use tsdb::{Db, Labels, Options, Sample};

const EPSILON: f64 = 0.000001;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// One series of a `load` block or an expected result.
struct SeriesDef {
    labels: Labels,
    /// `None` is a missing point (`_`).
    values: Vec<Option<f64>>,
    histogram: bool,
}

struct Eval {
    line: usize,
    expr: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    expected: Vec<SeriesDef>,
    scalar: Option<f64>,
    string: Option<String>,
    histogram: bool,
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

fn parse_time(s: &str) -> Result<i64, String> {
    promql::parse_duration_ms(s).map_err(|e| format!("bad time {s:?}: {e}"))
}

/// Splits `metric{a="b"} 1 2 3` into the series part and the values part.
fn split_series(line: &str) -> (&str, &str) {
    let b = line.as_bytes();
    let mut i = 0;
    let mut depth = 0;
    let mut in_str: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = in_str {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                in_str = None;
            }
        } else if c == b'"' || c == b'\'' || c == b'`' {
            in_str = Some(c);
        } else if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
            if depth == 0 {
                return (&line[..=i], line[i + 1..].trim());
            }
        } else if depth == 0 && c.is_ascii_whitespace() {
            return (&line[..i], line[i..].trim());
        }
        i += 1;
    }
    (line, "")
}

fn parse_series_line(line: &str) -> Result<SeriesDef, String> {
    let (series, vals) = split_series(line.trim());
    let labels = promql::notation::parse_metric(series)?;
    let histogram = vals.contains("{{");
    let values = if histogram {
        Vec::new()
    } else {
        promql::notation::parse_values(vals)?
    };
    Ok(SeriesDef {
        labels,
        values,
        histogram,
    })
}

struct Case {
    eval: Eval,
}

enum Cmd {
    Load {
        interval: i64,
        series: Vec<SeriesDef>,
        nhcb: bool,
    },
    Clear,
    Eval(Box<Case>),
}

fn parse_file(text: &str) -> Result<Vec<Cmd>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    let body = |i: &mut usize| -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        while *i + 1 < lines.len() {
            let l = lines[*i + 1];
            let t = l.trim();
            if t.is_empty() || ["eval", "load", "clear"].iter().any(|k| l.starts_with(k)) {
                break;
            }
            *i += 1;
            if l.trim_start().starts_with('#') {
                continue;
            }
            out.push((*i + 1, l));
        }
        out
    };
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let lineno = i + 1;
        if let Some(rest) = line
            .strip_prefix("load_with_nhcb ")
            .map(|r| (r, true))
            .or_else(|| line.strip_prefix("load ").map(|r| (r, false)))
        {
            let (iv, nhcb) = rest;
            let interval = parse_time(iv.trim())?;
            let mut series = Vec::new();
            for (ln, l) in body(&mut i) {
                series.push(parse_series_line(l).map_err(|e| format!("line {ln}: {e}"))?);
            }
            cmds.push(Cmd::Load {
                interval,
                series,
                nhcb,
            });
        } else if line == "clear" {
            cmds.push(Cmd::Clear);
        } else if line.starts_with("eval") {
            let (kw, rest) = line.split_once(' ').unwrap_or((line, ""));
            let mut ev = Eval {
                line: lineno,
                expr: String::new(),
                range: None,
                at: 0,
                fail: kw == "eval_fail",
                fail_msg: None,
                fail_regex: None,
                ordered: kw == "eval_ordered",
                expected: Vec::new(),
                scalar: None,
                string: None,
                histogram: false,
            };
            if let Some(r) = rest.strip_prefix("instant at ") {
                let (t, expr) = r
                    .split_once(' ')
                    .ok_or(format!("line {lineno}: bad eval"))?;
                ev.at = parse_time(t)?;
                ev.expr = expr.trim().to_string();
            } else if let Some(r) = rest.strip_prefix("range from ") {
                let parts: Vec<&str> = r.splitn(6, ' ').collect();
                if parts.len() < 6 || parts[1] != "to" || parts[3] != "step" {
                    return Err(format!("line {lineno}: bad range eval"));
                }
                ev.range = Some((
                    parse_time(parts[0])?,
                    parse_time(parts[2])?,
                    parse_time(parts[4])?,
                ));
                ev.expr = parts[5].trim().to_string();
            } else {
                return Err(format!("line {lineno}: bad eval {line:?}"));
            }
            for (_, l) in body(&mut i) {
                let t = l.trim();
                if let Some(e) = t.strip_prefix("expect ") {
                    let (kind, msg) = match e.split_once(':') {
                        Some((k, m)) => (k.trim(), Some(m.trim().to_string())),
                        None => (e.trim(), None),
                    };
                    match kind {
                        "fail" => ev.fail = true,
                        "fail msg" => {
                            ev.fail = true;
                            ev.fail_msg = msg.map(|m| m.trim_matches('"').to_string());
                        }
                        "fail regex" => {
                            ev.fail = true;
                            ev.fail_regex = msg.map(|m| m.trim_matches('"').to_string());
                        }
                        "ordered" => ev.ordered = true,
                        _ => {}
                    }
                } else if let Some(m) = t.strip_prefix("expected_fail_message ") {
                    ev.fail_msg = Some(m.to_string());
                } else if let Some(m) = t.strip_prefix("expected_fail_regexp ") {
                    ev.fail_regex = Some(m.to_string());
                } else if t.starts_with('"') {
                    ev.string = Some(t.trim_matches('"').to_string());
                } else if let Ok(v) = promql::notation::parse_number(t) {
                    ev.scalar = Some(v);
                } else {
                    let s = parse_series_line(t)?;
                    ev.histogram |= s.histogram;
                    ev.expected.push(s);
                }
            }
            cmds.push(Cmd::Eval(Box::new(Case { eval: ev })));
        } else {
            return Err(format!("line {lineno}: unknown command {line:?}"));
        }
        i += 1;
    }
    Ok(cmds)
}

fn open_db(dir: &Path) -> Db {
    let opts = Options {
        retention: Duration::from_secs(200 * 365 * 24 * 3600),
        future_tolerance_ms: i64::MAX / 4,
        background: false,
        ..Options::default()
    };
    match Db::open(dir, opts) {
        Ok(db) => db,
        Err(e) => panic!("opening test database: {e}"),
    }
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < EPSILON * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn run_eval(engine: &Engine, db: &Db, ev: &Eval) -> Outcome {
    if ev.histogram {
        return Outcome::Skip("expects native histogram samples".into());
    }
    let res = match ev.range {
        Some((s, e, st)) => engine.range(db, &ev.expr, s, e, st),
        None => engine.instant(db, &ev.expr, ev.at),
    };
    let res = match (res, ev.fail) {
        (Err(e), true) => {
            let msg = e.to_string();
            if let Some(m) = &ev.fail_msg
                && !msg.contains(m.as_str())
            {
                return Outcome::Fail(format!("error {msg:?}, expected message {m:?}"));
            }
            if let Some(r) = &ev.fail_regex {
                match regex::Regex::new(r) {
                    Ok(re) if re.is_match(&msg) => {}
                    _ => return Outcome::Fail(format!("error {msg:?} does not match /{r}/")),
                }
            }
            return Outcome::Pass;
        }
        (Err(e), false) => return Outcome::Fail(format!("unexpected error: {e}")),
        (Ok(_), true) => return Outcome::Fail("expected an error, got a result".into()),
        (Ok(r), false) => r,
    };
    if let Err(e) = compare(ev, &res.value) {
        return Outcome::Fail(e);
    }
    // Like Prometheus' runner: an instant query must agree with the same query in range
    // mode at that step.
    if ev.range.is_none() && ev.string.is_none() && !ev.expr.contains('[') {
        let r = engine.range(db, &ev.expr, ev.at - 60_000, ev.at + 60_000, 60_000);
        match r {
            Ok(r) => {
                if let Err(e) = compare_range_point(ev, &r.value) {
                    return Outcome::Fail(format!("range mode: {e}"));
                }
            }
            Err(e) => return Outcome::Fail(format!("range mode: unexpected error: {e}")),
        }
    }
    Outcome::Pass
}

fn fmt_series(l: &Labels) -> String {
    format!("{l}")
}

fn compare(ev: &Eval, got: &Value) -> Result<(), String> {
    if let Some(s) = &ev.string {
        return match got {
            Value::String { v, .. } if v == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    if let Some(x) = ev.scalar {
        return match got {
            Value::Scalar { v, .. } if almost_equal(*v, x) => Ok(()),
            other => Err(format!("expected scalar {x}, got {other:?}")),
        };
    }
    match (ev.range, got) {
        (Some((s, _, st)), Value::Matrix(m)) => {
            let mut exp: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
            for e in &ev.expected {
                let pts = e
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        v.map(|v| Sample {
                            t: s + i as i64 * st,
                            v,
                        })
                    })
                    .collect();
                exp.insert(e.labels.clone(), pts);
            }
            if m.len() != exp.len() {
                return Err(format!(
                    "expected {} series, got {}: {:?}",
                    exp.len(),
                    m.len(),
                    m.iter().map(|s| fmt_series(&s.labels)).collect::<Vec<_>>()
                ));
            }
            for s in m {
                let Some(e) = exp.get(&s.labels) else {
                    return Err(format!("unexpected series {}", fmt_series(&s.labels)));
                };
                if e.len() != s.samples.len()
                    || e.iter()
                        .zip(&s.samples)
                        .any(|(a, b)| a.t != b.t || !almost_equal(a.v, b.v))
                {
                    return Err(format!(
                        "series {}: expected {:?}, got {:?}",
                        fmt_series(&s.labels),
                        e,
                        s.samples
                    ));
                }
            }
            Ok(())
        }
        (None, Value::Vector(v)) => {
            if v.len() != ev.expected.len() {
                return Err(format!(
                    "expected {} samples, got {}: {:?}",
                    ev.expected.len(),
                    v.len(),
                    v.iter()
                        .map(|s| format!("{} {}", fmt_series(&s.labels), s.v))
                        .collect::<Vec<_>>()
                ));
            }
            for (i, e) in ev.expected.iter().enumerate() {
                let want = e.values.first().copied().flatten();
                let found = if ev.ordered {
                    v.get(i).filter(|s| s.labels == e.labels)
                } else {
                    v.iter().find(|s| s.labels == e.labels)
                };
                let Some(s) = found else {
                    return Err(format!(
                        "expected series {} not found{}: got {:?}",
                        fmt_series(&e.labels),
                        if ev.ordered { " at its position" } else { "" },
                        v.iter().map(|s| fmt_series(&s.labels)).collect::<Vec<_>>()
                    ));
                };
                match want {
                    Some(w) if almost_equal(w, s.v) => {}
                    _ => {
                        return Err(format!(
                            "series {}: expected {:?}, got {}",
                            fmt_series(&e.labels),
                            want,
                            s.v
                        ));
                    }
                }
            }
            Ok(())
        }
        (None, Value::Matrix(m)) => {
            if m.len() != ev.expected.len() {
                return Err(format!(
                    "expected {} series, got {}",
                    ev.expected.len(),
                    m.len()
                ));
            }
            for e in &ev.expected {
                let Some(s) = m.iter().find(|s| s.labels == e.labels) else {
                    return Err(format!(
                        "expected series {} not found",
                        fmt_series(&e.labels)
                    ));
                };
                let want: Vec<f64> = e.values.iter().flatten().copied().collect();
                if want.len() != s.samples.len()
                    || want
                        .iter()
                        .zip(&s.samples)
                        .any(|(a, b)| !almost_equal(*a, b.v))
                {
                    return Err(format!(
                        "series {}: expected {:?}, got {:?}",
                        fmt_series(&e.labels),
                        want,
                        s.samples
                    ));
                }
            }
            Ok(())
        }
        (_, other) => Err(format!("unexpected result type: {other:?}")),
    }
}

fn compare_range_point(ev: &Eval, got: &Value) -> Result<(), String> {
    let Value::Matrix(m) = got else {
        return Err("range query did not return a matrix".into());
    };
    let at_t: Vec<(&Labels, f64)> = m
        .iter()
        .filter_map(|s| {
            s.samples
                .iter()
                .find(|p| p.t == ev.at)
                .map(|p| (&s.labels, p.v))
        })
        .collect();
    if let Some(x) = ev.scalar {
        return match at_t.as_slice() {
            [(_, v)] if almost_equal(*v, x) => Ok(()),
            other => Err(format!("expected scalar {x}, got {other:?}")),
        };
    }
    if at_t.len() != ev.expected.len() {
        return Err(format!(
            "expected {} samples at the step, got {}",
            ev.expected.len(),
            at_t.len()
        ));
    }
    for e in &ev.expected {
        let want = e.values.first().copied().flatten();
        match (at_t.iter().find(|(l, _)| **l == e.labels), want) {
            (Some((_, v)), Some(w)) if almost_equal(w, *v) => {}
            (got, _) => {
                return Err(format!(
                    "series {}: expected {want:?}, got {got:?}",
                    fmt_series(&e.labels)
                ));
            }
        }
    }
    Ok(())
}

fn load(db: &Db, interval: i64, series: &[SeriesDef]) -> Result<(), String> {
    for s in series {
        if s.histogram {
            continue;
        }
        let pairs: Vec<(&str, &str)> = s.labels.iter().collect();
        let samples: Vec<Sample> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.map(|v| Sample {
                    t: i as i64 * interval,
                    v,
                })
            })
            .collect();
        if samples.is_empty() {
            continue;
        }
        let report = db
            .append([(pairs.as_slice(), samples.as_slice())])
            .map_err(|e| format!("append: {e}"))?;
        if report.rejected_total() > 0 {
            return Err(format!(
                "append rejected samples of {}: {:?}",
                s.labels, report.first_rejection
            ));
        }
    }
    Ok(())
}

struct FileReport {
    passed: usize,
    failed: Vec<(String, String)>,
    skipped: Vec<(String, String)>,
}

fn run_file(engine: &Engine, path: &Path, name: &str) -> Result<FileReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let cmds = parse_file(&text).map_err(|e| format!("{name}: {e}"))?;
    let mut report = FileReport {
        passed: 0,
        failed: Vec::new(),
        skipped: Vec::new(),
    };
    let mut tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut db = open_db(tmp.path());
    let mut histograms_loaded = false;
    for cmd in cmds {
        match cmd {
            Cmd::Load {
                interval,
                series,
                nhcb,
            } => {
                histograms_loaded |= nhcb || series.iter().any(|s| s.histogram);
                load(&db, interval, &series).map_err(|e| format!("{name}: {e}"))?;
            }
            Cmd::Clear => {
                db.abandon();
                tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
                db = open_db(tmp.path());
                histograms_loaded = false;
            }
            Cmd::Eval(c) => {
                let id = format!("{name}:{}", c.eval.line);
                match run_eval(engine, &db, &c.eval) {
                    Outcome::Pass => report.passed += 1,
                    Outcome::Skip(r) => report.skipped.push((id, r)),
                    Outcome::Fail(r) if histograms_loaded => report
                        .skipped
                        .push((id, format!("depends on native histogram samples ({r})"))),
                    Outcome::Fail(r) => report.failed.push((id, format!("{}: {r}", c.eval.expr))),
                }
            }
        }
    }
    db.abandon();
    Ok(report)
}

fn known_failures() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(data_dir().join("known_failures.txt")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((id, why)) => (id.to_string(), why.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn prometheus_conformance_scripts() {
    let dir = data_dir().join("promqltest");
    let filter = std::env::var("PROMQLTEST_FILTER").unwrap_or_default();
    let verbose = std::env::var("PROMQLTEST_VERBOSE").is_ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "test"));
    files.sort();
    assert!(!files.is_empty(), "no test scripts in {}", dir.display());
    let engine = Engine::new(EngineOptions::default());
    let known = known_failures();
    let (mut tp, mut tf, mut ts) = (0, 0, 0);
    let mut regressions = Vec::new();
    let mut fixed = Vec::new();
    let mut all_failed = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(&filter) {
            continue;
        }
        let r = match run_file(&engine, &f, &name) {
            Ok(r) => r,
            Err(e) => {
                regressions.push((name.clone(), e));
                continue;
            }
        };
        println!(
            "{name:28} passed {:4}  failed {:4}  skipped {:4}",
            r.passed,
            r.failed.len(),
            r.skipped.len()
        );
        if verbose {
            for (id, why) in &r.skipped {
                println!("  skip {id}: {why}");
            }
        }
        tp += r.passed;
        tf += r.failed.len();
        ts += r.skipped.len();
        for (id, why) in &r.failed {
            if verbose {
                println!("  FAIL {id}: {why}");
            }
            if !known.contains_key(id) {
                regressions.push((id.clone(), why.clone()));
            }
            all_failed.push(id.clone());
        }
    }
    for id in known.keys() {
        if (filter.is_empty() || id.contains(&filter)) && !all_failed.contains(id) {
            fixed.push(id.clone());
        }
    }
    println!(
        "{:28} passed {tp:4}  failed {tf:4}  skipped {ts:4}",
        "TOTAL"
    );
    if !fixed.is_empty() {
        println!(
            "note: {} case(s) in known_failures.txt no longer fail; remove them: {fixed:?}",
            fixed.len()
        );
    }
    if !regressions.is_empty() {
        for (id, why) in &regressions {
            println!("REGRESSION {id}: {why}");
        }
        panic!("{} unexpected conformance failure(s)", regressions.len());
    }
}
