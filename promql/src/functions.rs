//! The function library: range-vector functions (`rate`, `*_over_time`, ...), instant
//! functions (math, date, `clamp`, `round`), label functions, sorting, `absent`,
//! `scalar`/`vector`/`time`, and classic-bucket `histogram_quantile`/`histogram_fraction`.
//!
//! Range-vector functions walk each series once with a moving window over the steps;
//! series are processed in parallel when the work is large.

use std::collections::HashMap;

use promql_parser::parser::{Call, Expr};
use tsdb::labels::METRIC_NAME;
use tsdb::{Labels, Sample};

use crate::Error;
use crate::eval::{
    Ev, RangeInput, Scratch, Series, Sink, Val, for_each_window, par_map_batched, unparen,
};
use crate::labels;

/// Adds `inc` to `sum` with Kahan compensation `c`; returns the new `(sum, c)`.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The φ-quantile of `values` with linear interpolation (reorders `values`).
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A float formatted like Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub fn fmt_go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr, Error> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| Error::Execution(format!("missing argument {} of {}", i + 1, c.func.name)))
}

fn string_arg(c: &Call, i: usize) -> Result<String, Error> {
    match unparen(arg(c, i)?) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => Err(Error::Execution(format!(
            "expected string argument to {}, got {other}",
            c.func.name
        ))),
    }
}

/// When `c` is a range function (`rate(x[5m])`, `quantile_over_time(0.9, x[1h])`...),
/// evaluates it into `sink` a batch at a time and returns true; returns false, having
/// evaluated nothing, for any other function.
pub fn call_batched(ev: &Ev<'_>, c: &Call, sink: &mut Sink<'_>) -> Result<bool, Error> {
    let name = c.func.name;
    match name {
        "rate"
        | "increase"
        | "delta"
        | "irate"
        | "idelta"
        | "deriv"
        | "resets"
        | "changes"
        | "avg_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "min_over_time"
        | "max_over_time"
        | "last_over_time"
        | "first_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time" => range_fn(ev, name, arg(c, 0)?, &[], sink)?,
        "predict_linear" => {
            let s = ev.eval_scalar(arg(c, 1)?)?;
            range_fn(ev, name, arg(c, 0)?, &[s], sink)?
        }
        "quantile_over_time" => {
            let s = ev.eval_scalar(arg(c, 0)?)?;
            if let Some(q) = s.iter().find(|q| q.is_nan() || **q < 0.0 || **q > 1.0) {
                ev.ctx.warn(format!(
                    "PromQL warning: quantile value should be between 0 and 1, got {q}"
                ));
            }
            range_fn(ev, name, arg(c, 1)?, &[s], sink)?
        }
        "double_exponential_smoothing" => {
            let sf = ev.eval_scalar(arg(c, 1)?)?;
            let tf = ev.eval_scalar(arg(c, 2)?)?;
            range_fn(ev, name, arg(c, 0)?, &[sf, tf], sink)?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub fn call(ev: &Ev<'_>, c: &Call) -> Result<Val, Error> {
    let mut out = Vec::new();
    if call_batched(ev, c, &mut |b| {
        out.extend(b);
        Ok(())
    })? {
        return Ok(Val::Vector(out));
    }
    let name = c.func.name;
    match name {
        "absent_over_time" => absent_over_time(ev, arg(c, 0)?),
        "absent" => absent(ev, arg(c, 0)?),
        "timestamp" => {
            let a = unparen(arg(c, 0)?);
            let mut ss = if let Expr::VectorSelector(vs) = a {
                ev.vector_selector(vs, true)?
            } else {
                let mut ss = ev.eval_vector(a)?;
                for s in ss.iter_mut() {
                    s.pts.iter_mut().for_each(|p| p.v = p.t as f64 / 1000.0);
                }
                ss
            };
            ss.iter_mut().for_each(|s| s.drop_name = true);
            Ok(Val::Vector(ss))
        }
        "time" => Ok(Val::Scalar(
            (0..ev.n()).map(|i| ev.grid.ts(i) as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; ev.n()])),
        "vector" => {
            let s = ev.eval_scalar(arg(c, 0)?)?;
            Ok(Val::Vector(vec![Series {
                labels: Labels::default(),
                drop_name: false,
                pts: s
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Sample {
                        t: ev.grid.ts(i),
                        v: *v,
                    })
                    .collect(),
            }]))
        }
        "scalar" => {
            let ss = ev.eval_vector(arg(c, 0)?)?;
            let mut count = vec![0u32; ev.n()];
            let mut val = vec![f64::NAN; ev.n()];
            for s in &ss {
                for p in &s.pts {
                    let k = ev.grid.idx(p.t);
                    count[k] += 1;
                    val[k] = p.v;
                }
            }
            Ok(Val::Scalar(
                count
                    .iter()
                    .zip(val)
                    .map(|(c, v)| if *c == 1 { v } else { f64::NAN })
                    .collect(),
            ))
        }
        "label_replace" => label_replace(ev, c),
        "label_join" => label_join(ev, c),
        "sort" | "sort_desc" => {
            let mut ss = ev.eval_vector(arg(c, 0)?)?;
            if ev.n() == 1 {
                let desc = name == "sort_desc";
                ss.sort_by(|a, b| {
                    let x = a.pts.first().map_or(f64::NAN, |p| p.v);
                    let y = b.pts.first().map_or(f64::NAN, |p| p.v);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                        _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                    }
                });
            }
            Ok(Val::Vector(ss))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut ss = ev.eval_vector(arg(c, 0)?)?;
            let mut names = Vec::new();
            for i in 1..c.args.args.len() {
                names.push(string_arg(c, i)?);
            }
            let desc = name == "sort_by_label_desc";
            ss.sort_by(|a, b| {
                let mut o = std::cmp::Ordering::Equal;
                for n in &names {
                    let (x, y) = (a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                    if x != y {
                        o = natural_cmp(x, y);
                        break;
                    }
                }
                if o == std::cmp::Ordering::Equal {
                    o = a.labels.cmp(&b.labels);
                }
                if desc { o.reverse() } else { o }
            });
            Ok(Val::Vector(ss))
        }
        "histogram_quantile" => histogram_classic(ev, c, true),
        "histogram_fraction" => histogram_classic(ev, c, false),
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // These read native histograms only; float samples are ignored.
            ev.eval_vector(arg(c, 0)?)?;
            Ok(Val::Vector(Vec::new()))
        }
        "clamp" => {
            let (lo, hi) = (ev.eval_scalar(arg(c, 1)?)?, ev.eval_scalar(arg(c, 2)?)?);
            map_vector(ev, c, |k, v| {
                if hi[k] < lo[k] {
                    None
                } else {
                    Some(go_max(lo[k], go_min(hi[k], v)))
                }
            })
        }
        "clamp_min" => {
            let lo = ev.eval_scalar(arg(c, 1)?)?;
            map_vector(ev, c, |k, v| Some(go_max(lo[k], v)))
        }
        "clamp_max" => {
            let hi = ev.eval_scalar(arg(c, 1)?)?;
            map_vector(ev, c, |k, v| Some(go_min(hi[k], v)))
        }
        "round" => {
            let to = if c.args.args.len() > 1 {
                ev.eval_scalar(arg(c, 1)?)?
            } else {
                vec![1.0; ev.n()]
            };
            map_vector(ev, c, |k, v| {
                let inv = 1.0 / to[k];
                Some((v * inv + 0.5).floor() / inv)
            })
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v: f64| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
                _ => |v: f64| v * std::f64::consts::PI / 180.0,
            };
            map_vector(ev, c, |_, v| Some(f(v)))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => date_fn(ev, c),
        _ => Err(Error::Unsupported(format!(
            "function {name}() is not supported"
        ))),
    }
}

/// Applies `f(step, value)` to every point of the first argument, dropping the name.
fn map_vector(ev: &Ev<'_>, c: &Call, f: impl Fn(usize, f64) -> Option<f64>) -> Result<Val, Error> {
    let mut ss = ev.eval_vector(arg(c, 0)?)?;
    let grid = ev.grid;
    for s in ss.iter_mut() {
        s.drop_name = true;
        s.pts.retain_mut(|p| match f(grid.idx(p.t), p.v) {
            Some(v) => {
                p.v = v;
                true
            }
            None => false,
        });
    }
    ss.retain(|s| !s.pts.is_empty());
    Ok(Val::Vector(ss))
}

fn date_fn(ev: &Ev<'_>, c: &Call) -> Result<Val, Error> {
    let mut ss = if c.args.args.is_empty() {
        vec![Series {
            labels: Labels::default(),
            drop_name: false,
            pts: (0..ev.n())
                .map(|i| Sample {
                    t: ev.grid.ts(i),
                    v: ev.grid.ts(i) as f64 / 1000.0,
                })
                .collect(),
        }]
    } else {
        ev.eval_vector(arg(c, 0)?)?
    };
    let name = c.func.name;
    for s in ss.iter_mut() {
        s.drop_name = true;
        for p in s.pts.iter_mut() {
            if !p.v.is_finite() {
                p.v = f64::NAN;
                continue;
            }
            let secs = p.v as i64;
            let days = secs.div_euclid(86_400);
            let sod = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            p.v = match name {
                "day_of_month" => d as f64,
                "day_of_week" => (days + 4).rem_euclid(7) as f64,
                "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
                "days_in_month" => days_in_month(y, m) as f64,
                "hour" => (sod / 3600) as f64,
                "minute" => (sod % 3600 / 60) as f64,
                "month" => m as f64,
                _ => y as f64,
            };
        }
    }
    Ok(Val::Vector(ss))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Natural order: runs of digits compare as numbers, the rest as strings.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        if x == y {
            continue;
        }
        let xd = x.bytes().all(|c| c.is_ascii_digit());
        let yd = y.bytes().all(|c| c.is_ascii_digit());
        if xd && yd {
            let (xt, yt) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            let o = xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        } else {
            return x.cmp(y);
        }
    }
    ca.len().cmp(&cb.len())
}

fn matchers_of(e: &Expr) -> Option<&promql_parser::parser::VectorSelector> {
    match unparen(e) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    }
}

/// The labels `absent()` reports: the selector's equality matchers.
fn absent_labels(e: &Expr) -> Labels {
    let Some(vs) = matchers_of(e) else {
        return Labels::default();
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for m in vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
    {
        if m.name == METRIC_NAME {
            continue;
        }
        let eq = matches!(m.op, promql_parser::label::MatchOp::Equal);
        if eq && !seen.contains(&m.name) {
            pairs.push((m.name.clone(), m.value.clone()));
            seen.push(m.name.clone());
        } else {
            pairs.retain(|(n, _)| *n != m.name);
            seen.push(m.name.clone());
        }
    }
    Labels::from_pairs(pairs).unwrap_or_default()
}

fn absent(ev: &Ev<'_>, a: &Expr) -> Result<Val, Error> {
    let ss = ev.eval_vector(a)?;
    let mut present = vec![false; ev.n()];
    for s in &ss {
        for p in &s.pts {
            present[ev.grid.idx(p.t)] = true;
        }
    }
    Ok(Val::Vector(absent_series(ev, &present, absent_labels(a))))
}

fn absent_series(ev: &Ev<'_>, present: &[bool], labels: Labels) -> Vec<Series> {
    let pts: Vec<Sample> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(i, _)| Sample {
            t: ev.grid.ts(i),
            v: 1.0,
        })
        .collect();
    if pts.is_empty() {
        return Vec::new();
    }
    vec![Series {
        labels,
        drop_name: true,
        pts,
    }]
}

fn absent_over_time(ev: &Ev<'_>, a: &Expr) -> Result<Val, Error> {
    let ri = ev.range_input(a)?;
    let mut present = vec![false; ev.n()];
    let mut sc = Scratch::default();
    for s in &ri.series {
        let pts = ri.samples(ev.ctx, s, &mut sc)?;
        for_each_window(pts, ri.range, &ri.ends, |i, _, _| present[i] = true);
    }
    Ok(Val::Vector(absent_series(ev, &present, absent_labels(a))))
}

fn label_replace(ev: &Ev<'_>, c: &Call) -> Result<Val, Error> {
    let mut ss = ev.eval_vector(arg(c, 0)?)?;
    let dst = string_arg(c, 1)?;
    let repl = string_arg(c, 2)?;
    let src = string_arg(c, 3)?;
    let re_src = string_arg(c, 4)?;
    let re = regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|_| {
        Error::Execution(format!(
            "invalid regular expression in label_replace(): {re_src}"
        ))
    })?;
    if !labels::valid_label_name(&dst) {
        return Err(Error::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    for s in ss.iter_mut() {
        let v = s.labels.get(&src).unwrap_or("");
        if let Some(caps) = re.captures(v) {
            let mut out = String::new();
            caps.expand(&repl, &mut out);
            s.labels = labels::set(&s.labels, &dst, &out);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    Ok(Val::Vector(crate::binary::merge_same_labels(ev, ss)?))
}

fn label_join(ev: &Ev<'_>, c: &Call) -> Result<Val, Error> {
    let mut ss = ev.eval_vector(arg(c, 0)?)?;
    let dst = string_arg(c, 1)?;
    let sep = string_arg(c, 2)?;
    let mut srcs = Vec::new();
    for i in 3..c.args.args.len() {
        srcs.push(string_arg(c, i)?);
    }
    if !labels::valid_label_name(&dst) {
        return Err(Error::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    for s in ss.iter_mut() {
        let v: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
        let joined = v.join(&sep);
        s.labels = labels::set(&s.labels, &dst, &joined);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    Ok(Val::Vector(crate::binary::merge_same_labels(ev, ss)?))
}

/// Evaluates a range-vector function over every series and step, into `sink`.
fn range_fn(
    ev: &Ev<'_>,
    name: &str,
    a: &Expr,
    scalars: &[Vec<f64>],
    sink: &mut Sink<'_>,
) -> Result<(), Error> {
    let ri: RangeInput = ev.range_input(a)?;
    let fixed = match unparen(a) {
        Expr::MatrixSelector(ms) => ms.vs.at.is_some(),
        Expr::Subquery(sq) => sq.at.is_some(),
        _ => false,
    };
    let grid = ev.grid;
    let ctx = ev.ctx;
    if name == "double_exponential_smoothing" {
        for (i, v) in scalars[0].iter().enumerate() {
            if !ri.series.is_empty() && (v.is_nan() || *v <= 0.0 || *v >= 1.0) {
                let _ = i;
                return Err(Error::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {v:.6}"
                )));
            }
        }
        for v in scalars[1].iter() {
            if !ri.series.is_empty() && (v.is_nan() || *v <= 0.0 || *v >= 1.0) {
                return Err(Error::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {v:.6}"
                )));
            }
        }
    }
    if name == "rate" || name == "increase" {
        for s in &ri.series {
            if let Some(m) = s.labels.metric_name()
                && !["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|x| m.ends_with(x))
            {
                ctx.info(format!(
                    "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {m:?}"
                ));
            }
        }
    }
    let keep_name = name == "last_over_time" || name == "first_over_time";
    let range = ri.range;
    let ends = &ri.ends;
    let steps = ends.len();
    let ri = &ri;
    let counter = name == "rate" || name == "increase";
    par_map_batched(
        &ri.series,
        |s| s.cost() + steps,
        |(sc, resets): &mut (Scratch, Vec<u32>), s| {
            ctx.check()?;
            let samples = ri.samples(ctx, s, sc)?;
            // Counter resets up to each sample, so a window without one skips the scan;
            // empty when the series has none at all (the usual case).
            resets.clear();
            if counter && samples.windows(2).any(|w| w[1].v < w[0].v) {
                let mut n = 0u32;
                resets.push(0);
                for w in samples.windows(2) {
                    n += u32::from(w[1].v < w[0].v);
                    resets.push(n);
                }
            }
            let mut pts = Vec::with_capacity(steps.min(samples.len()));
            for_each_window(samples, range, ends, |i, lo, w| {
                let end = ends[i];
                if counter {
                    let any_reset = !resets.is_empty() && resets[lo + w.len() - 1] != resets[lo];
                    let start = end.saturating_sub(range);
                    if let Some(v) =
                        extrapolated_rate(w, start, end, range, true, name == "rate", any_reset)
                    {
                        pts.push(Sample { t: grid.ts(i), v });
                    }
                    return;
                }
                let step_ts = if fixed { grid.start } else { grid.ts(i) };
                let args: [f64; 2] = [
                    scalars.first().map(|v| v[i]).unwrap_or(f64::NAN),
                    scalars.get(1).map(|v| v[i]).unwrap_or(f64::NAN),
                ];
                if let Some(v) = window_fn(
                    name,
                    w,
                    end.saturating_sub(range),
                    end,
                    range,
                    step_ts,
                    args,
                ) {
                    pts.push(Sample { t: grid.ts(i), v });
                }
            });
            Ok((!pts.is_empty()).then(|| Series {
                labels: s.labels.clone(),
                drop_name: if keep_name { s.drop_name } else { true },
                pts,
            }))
        },
        sink,
    )
}

fn window_fn(
    name: &str,
    w: &[Sample],
    start: i64,
    end: i64,
    range: i64,
    step_ts: i64,
    args: [f64; 2],
) -> Option<f64> {
    let n = w.len();
    let first = w.first()?;
    let last = w.last()?;
    match name {
        "rate" => extrapolated_rate(w, start, end, range, true, true, true),
        "increase" => extrapolated_rate(w, start, end, range, true, false, true),
        "delta" => extrapolated_rate(w, start, end, range, false, false, false),
        "irate" | "idelta" => {
            if n < 2 {
                return None;
            }
            let prev = w[n - 2];
            let mut v = if name == "irate" && last.v < prev.v {
                last.v
            } else {
                last.v - prev.v
            };
            let dt = last.t - prev.t;
            if dt == 0 {
                return None;
            }
            if name == "irate" {
                v /= dt as f64 / 1000.0;
            }
            Some(v)
        }
        "deriv" => {
            if n < 2 {
                return None;
            }
            Some(linear_regression(w, first.t).0)
        }
        "predict_linear" => {
            if n < 2 {
                return None;
            }
            let (slope, intercept) = linear_regression(w, step_ts);
            Some(slope * args[0] + intercept)
        }
        "resets" => Some(w.windows(2).filter(|p| p[1].v < p[0].v).count() as f64),
        "changes" => Some(
            w.windows(2)
                .filter(|p| !(p[1].v == p[0].v || (p[1].v.is_nan() && p[0].v.is_nan())))
                .count() as f64,
        ),
        "avg_over_time" => {
            let (mut sum, mut mean, mut c) = (0.0, 0.0, 0.0);
            let mut incremental = false;
            for (i, p) in w.iter().enumerate() {
                let count = (i + 1) as f64;
                if !incremental {
                    let (ns, nc) = kahan_inc(p.v, sum, c);
                    if count == 1.0 || !ns.is_infinite() {
                        sum = ns;
                        c = nc;
                        continue;
                    }
                    incremental = true;
                    mean = sum / (count - 1.0);
                    c /= count - 1.0;
                }
                let q = (count - 1.0) / count;
                (mean, c) = kahan_inc(p.v / count, q * mean, q * c);
            }
            if incremental {
                Some(mean + c)
            } else {
                Some(sum / n as f64 + c / n as f64)
            }
        }
        "sum_over_time" => {
            let (mut s, mut c) = (0.0, 0.0);
            for p in w {
                (s, c) = kahan_inc(p.v, s, c);
            }
            Some(s + c)
        }
        "count_over_time" => Some(n as f64),
        "present_over_time" => Some(1.0),
        "min_over_time" | "max_over_time" => {
            let mut m = first.v;
            for p in &w[1..] {
                let better = if name == "max_over_time" {
                    p.v > m
                } else {
                    p.v < m
                };
                if better || m.is_nan() {
                    m = p.v;
                }
            }
            Some(m)
        }
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let mut m = first.v;
            let mut t = first.t;
            for p in &w[1..] {
                let better = if name == "ts_of_max_over_time" {
                    p.v > m
                } else {
                    p.v < m
                };
                if better || m.is_nan() {
                    m = p.v;
                    t = p.t;
                }
            }
            Some(t as f64 / 1000.0)
        }
        "last_over_time" => Some(last.v),
        "first_over_time" => Some(first.v),
        "ts_of_last_over_time" => Some(last.t as f64 / 1000.0),
        "ts_of_first_over_time" => Some(first.t as f64 / 1000.0),
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for p in w {
                count += 1.0;
                let delta = p.v - (mean + cm);
                (mean, cm) = kahan_inc(delta / count, mean, cm);
                (aux, ca) = kahan_inc(delta * (p.v - (mean + cm)), aux, ca);
            }
            let var = (aux + ca) / count;
            Some(if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            })
        }
        "quantile_over_time" => {
            let mut vals: Vec<f64> = w.iter().map(|p| p.v).collect();
            Some(quantile(args[0], &mut vals))
        }
        "mad_over_time" => {
            let mut vals: Vec<f64> = w.iter().map(|p| p.v).collect();
            let med = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }
        "double_exponential_smoothing" => {
            if n < 2 {
                return None;
            }
            let (sf, tf) = (args[0], args[1]);
            let mut s0 = 0.0;
            let mut s1 = w[0].v;
            let mut b = w[1].v - w[0].v;
            for (i, p) in w.iter().enumerate().skip(1) {
                let x = sf * p.v;
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let y = (1.0 - sf) * (s1 + b);
                s0 = s1;
                s1 = x + y;
            }
            Some(s1)
        }
        _ => None,
    }
}

/// `rate`, `increase` and `delta` over window `w`, extrapolated as Prometheus does.
/// `any_reset` false promises that no value in `w` is below the one before it, which
/// spares the counter-reset scan.
fn extrapolated_rate(
    w: &[Sample],
    range_start: i64,
    range_end: i64,
    range: i64,
    is_counter: bool,
    is_rate: bool,
    any_reset: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.v - first.v;
    if is_counter && any_reset {
        let mut prev = first.v;
        for p in &w[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (w.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.v >= 0.0 {
            to_zero = sampled * (first.v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Least-squares slope and intercept (at `intercept_t`) of the samples.
fn linear_regression(w: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].v;
    let mut const_y = true;
    for (i, p) in w.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

#[derive(Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

/// `histogram_quantile` (`quantile`) or `histogram_fraction` over classic `le` buckets.
fn histogram_classic(ev: &Ev<'_>, c: &Call, is_quantile: bool) -> Result<Val, Error> {
    let (p1, p2, vec_arg) = if is_quantile {
        (ev.eval_scalar(arg(c, 0)?)?, Vec::new(), arg(c, 1)?)
    } else {
        (
            ev.eval_scalar(arg(c, 0)?)?,
            ev.eval_scalar(arg(c, 1)?)?,
            arg(c, 2)?,
        )
    };
    let input = ev.eval_vector(vec_arg)?;
    if is_quantile && let Some(q) = p1.iter().find(|q| q.is_nan() || **q < 0.0 || **q > 1.0) {
        ev.ctx.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {q}"
        ));
    }
    // Group the bucket series by their labels without `le`.
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut idx: HashMap<Labels, usize> = HashMap::new();
    let le = ["le".to_string()];
    for (si, s) in input.iter().enumerate() {
        let Some(ub) = s.labels.get("le").and_then(parse_go_float) else {
            ev.ctx.warn(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value for metric name {:?}",
                s.labels.metric_name().unwrap_or("")
            ));
            continue;
        };
        let key = labels::without(&s.labels, &le, false);
        let gi = *idx.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push((ub, si));
    }
    let grid = ev.grid;
    let n = ev.n();
    let mut out = Vec::new();
    for (key, members) in groups {
        ev.ctx.check()?;
        let mut per_step: Vec<Vec<Bucket>> = vec![Vec::new(); n];
        for (ub, si) in members {
            for p in &input[si].pts {
                per_step[grid.idx(p.t)].push(Bucket {
                    upper: ub,
                    count: p.v,
                });
            }
        }
        let mut pts = Vec::new();
        for (k, mut b) in per_step.into_iter().enumerate() {
            if b.is_empty() {
                continue;
            }
            let v = if is_quantile {
                bucket_quantile(p1[k], &mut b)
            } else {
                bucket_fraction(p1[k], p2[k], &mut b)
            };
            pts.push(Sample { t: grid.ts(k), v });
        }
        if !pts.is_empty() {
            out.push(Series {
                labels: labels::drop_name(&key),
                drop_name: true,
                pts,
            });
        }
    }
    Ok(Val::Vector(out))
}

/// Parses a float like Go's `strconv.ParseFloat` does for bucket bounds.
fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t != s || t.is_empty() {
        return None;
    }
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => t.parse::<f64>().ok(),
    }
}

fn sort_coalesce(b: &mut Vec<Bucket>) {
    b.sort_by(|x, y| {
        x.upper
            .partial_cmp(&y.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out: Vec<Bucket> = Vec::with_capacity(b.len());
    for x in b.iter() {
        match out.last_mut() {
            Some(l) if l.upper == x.upper => l.count += x.count,
            _ => out.push(*x),
        }
    }
    *b = out;
}

fn bucket_quantile(q: f64, b: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    sort_coalesce(b);
    match b.last() {
        Some(l) if l.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Force monotonicity, ignoring tiny floating-point differences.
    let mut prev = b[0].count;
    for x in b.iter_mut().skip(1) {
        let cur = x.count;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) || cur < prev {
            x.count = prev;
            continue;
        }
        prev = cur;
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let total = b[b.len() - 1].count;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * total;
    let i = b[..b.len() - 1].partition_point(|x| x.count < rank);
    if i == b.len() - 1 {
        return b[b.len() - 2].upper;
    }
    if i == 0 && b[0].upper <= 0.0 {
        return b[0].upper;
    }
    let mut start = 0.0;
    let end = b[i].upper;
    let mut count = b[i].count;
    if i > 0 {
        start = b[i - 1].upper;
        count -= b[i - 1].count;
        rank -= b[i - 1].count;
    }
    start + (end - start) * (rank / count)
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || diff < min_normal {
        return diff < eps * min_normal;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < eps
}

fn bucket_fraction(lower: f64, upper: f64, b: &mut Vec<Bucket>) -> f64 {
    sort_coalesce(b);
    match b.last() {
        Some(l) if l.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    let total = b[b.len() - 1].count;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let rank_at = |x: f64| -> f64 {
        let mut prev_count = 0.0;
        for (i, bk) in b.iter().enumerate() {
            let lo = if i == 0 {
                if bk.upper > 0.0 {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            } else {
                b[i - 1].upper
            };
            if x <= lo {
                return prev_count;
            }
            if x < bk.upper {
                if bk.upper.is_infinite() || lo.is_infinite() {
                    return prev_count;
                }
                return prev_count + (bk.count - prev_count) * (x - lo) / (bk.upper - lo);
            }
            prev_count = bk.count;
        }
        prev_count
    };
    (rank_at(upper) - rank_at(lower)) / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, &mut [0.0, 4.0]), 1.0);
        assert!(quantile(0.5, &mut []).is_nan());
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
    }

    #[test]
    fn rate_extrapolates_to_zero_for_counters() {
        let w = [Sample { t: 60_000, v: 1.0 }, Sample { t: 120_000, v: 2.0 }];
        // Window (0, 120s]: start extrapolation is capped where the counter hits zero.
        let v = extrapolated_rate(&w, 0, 120_000, 120_000, true, false, true).unwrap();
        assert!((v - 2.0).abs() < 1e-12, "{v}");
    }

    #[test]
    fn natural_order_compares_numbers() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn classic_quantile_interpolates_inside_bucket() {
        let mut b = vec![
            Bucket {
                upper: 1.0,
                count: 1.0,
            },
            Bucket {
                upper: 2.0,
                count: 3.0,
            },
            Bucket {
                upper: f64::INFINITY,
                count: 4.0,
            },
        ];
        assert_eq!(bucket_quantile(0.5, &mut b), 1.5);
    }
}
