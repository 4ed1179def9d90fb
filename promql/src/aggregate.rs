//! Aggregation operators: `sum avg min max count group stddev stdvar quantile`,
//! `topk bottomk limitk limit_ratio` and `count_values`, with `by`/`without`.
//!
//! Input series are mapped to their group once; values are then combined step by step
//! with a cursor per series, in input order, so results match Prometheus' step-wise
//! evaluation including its floating-point (Kahan) summation.

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use tsdb::{Labels, Sample};

use crate::Error;
use crate::eval::{Ev, Series, Val, unparen};
use crate::functions::{kahan_inc, quantile};
use crate::labels;

pub fn eval(ev: &Ev<'_>, a: &AggregateExpr) -> Result<Val, Error> {
    let op = a.op.id();
    let (without, mut grouping) = match &a.modifier {
        Some(LabelModifier::Include(ls)) => (false, ls.labels.clone()),
        Some(LabelModifier::Exclude(ls)) => (true, ls.labels.clone()),
        None => (false, Vec::new()),
    };
    grouping.sort();
    if op == T_COUNT_VALUES {
        let label = match a.param.as_deref().map(unparen) {
            Some(Expr::StringLiteral(s)) => s.val.clone(),
            _ => {
                return Err(Error::Execution(
                    "count_values expects a string parameter".into(),
                ));
            }
        };
        if !labels::valid_label_name(&label) {
            return Err(Error::Execution(format!("invalid label name {label:?}")));
        }
        if !without {
            grouping.push(label.clone());
            grouping.sort();
        }
        let input = ev.eval_vector(&a.expr)?;
        return Ok(Val::Vector(count_values(
            ev, &input, &label, without, &grouping,
        )));
    }
    let param = match &a.param {
        Some(p) => ev.eval_scalar(p)?,
        None => vec![f64::NAN; ev.n()],
    };
    let group_of = |l: &Labels| {
        if without {
            labels::without(l, &grouping, true)
        } else {
            labels::keep_only(l, &grouping)
        }
    };
    if !matches!(
        op,
        T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO | T_QUANTILE
    ) {
        return streamed(ev, op, &a.expr, group_of);
    }
    let input = ev.eval_vector(&a.expr)?;
    let mut group_idx: HashMap<Labels, usize> = HashMap::new();
    let mut group_labels: Vec<Labels> = Vec::new();
    let mut series_group = Vec::with_capacity(input.len());
    for s in &input {
        let g = group_of(&s.labels);
        let next = group_labels.len();
        let gi = *group_idx.entry(g.clone()).or_insert_with(|| {
            group_labels.push(g);
            next
        });
        series_group.push(gi);
    }
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO => {
            aggregate_k(ev, op, &param, &input, &series_group, group_labels.len())
        }
        _ => {
            if op == T_QUANTILE
                && let Some(q) = param
                    .iter()
                    .find(|q| q.is_nan() || !(0.0..=1.0).contains(*q))
            {
                ev.ctx.warn(format!(
                    "PromQL warning: quantile value should be between 0 and 1, got {}",
                    crate::functions::fmt_go_float(*q)
                ));
            }
            quantiles(ev, &param, &input, &series_group, group_labels)
        }
    }
}

/// Every operator but `quantile` and the `k` ones: the input arrives in batches (see
/// [`Ev::eval_vector_batched`]) and each series is added, point by point, into one
/// accumulator per group and step, in input order; only the accumulators are held.
fn streamed(
    ev: &Ev<'_>,
    op: TokenId,
    e: &Expr,
    group_of: impl Fn(&Labels) -> Labels,
) -> Result<Val, Error> {
    let n = ev.n();
    let grid = ev.grid;
    let mut group_idx: HashMap<Labels, usize> = HashMap::new();
    let mut group_labels: Vec<Labels> = Vec::new();
    let mut cells: Vec<Acc> = Vec::new();
    // Prometheus takes a group's `drop_name` from the input series at the group's index.
    let mut drop_flags: Vec<bool> = Vec::new();
    ev.eval_vector_batched(e, &mut |batch| {
        ev.ctx.check()?;
        for s in batch {
            drop_flags.push(s.drop_name);
            let g = group_of(&s.labels);
            let gi = match group_idx.get(&g) {
                Some(&gi) => gi,
                None => {
                    // The accumulators are held like samples.
                    ev.ctx.count_loaded(n)?;
                    let gi = group_labels.len();
                    group_idx.insert(g.clone(), gi);
                    group_labels.push(g);
                    cells.resize(cells.len() + n, Acc::default());
                    gi
                }
            };
            let row = &mut cells[gi * n..][..n];
            for p in &s.pts {
                if let Some(g) = row.get_mut(grid.idx(p.t)) {
                    acc_add(op, g, p.v);
                }
            }
        }
        Ok(())
    })?;
    let mut out = Vec::with_capacity(group_labels.len());
    for (gi, labels) in group_labels.into_iter().enumerate() {
        let pts: Vec<Sample> = cells[gi * n..][..n]
            .iter()
            .enumerate()
            .filter(|(_, g)| g.seen)
            .map(|(i, g)| Sample {
                t: grid.ts(i),
                v: acc_value(op, g),
            })
            .collect();
        if !pts.is_empty() {
            out.push(Series {
                labels,
                drop_name: drop_flags.get(gi).copied().unwrap_or(false),
                pts,
            });
        }
    }
    Ok(Val::Vector(out))
}

#[derive(Clone, Copy, Default)]
struct Acc {
    seen: bool,
    v: f64,
    mean: f64,
    c: f64,
    count: f64,
    incremental: bool,
}

/// `quantile`: step by step, the values of each group gathered and ranked.
fn quantiles(
    ev: &Ev<'_>,
    q: &[f64],
    input: &[Series],
    series_group: &[usize],
    group_labels: Vec<Labels>,
) -> Result<Val, Error> {
    let mut out: Vec<Series> = group_labels
        .into_iter()
        .enumerate()
        .map(|(gi, labels)| Series {
            labels,
            // Prometheus takes this flag from the input series at the group's index.
            drop_name: input.get(gi).is_some_and(|s| s.drop_name),
            pts: Vec::new(),
        })
        .collect();
    by_step(ev, T_QUANTILE, q, input, series_group, &mut out)?;
    out.retain(|s| !s.pts.is_empty());
    Ok(Val::Vector(out))
}

/// Adds `f` to accumulator `g` (every operator but `quantile`). Per group and step,
/// values are added in input order, as Prometheus does.
#[inline]
fn acc_add(op: TokenId, g: &mut Acc, f: f64) {
    if !g.seen {
        *g = Acc {
            seen: true,
            v: f,
            mean: f,
            c: 0.0,
            count: 1.0,
            incremental: false,
        };
        match op {
            T_STDVAR | T_STDDEV => {
                g.v = if f.is_finite() { 0.0 } else { f64::NAN };
            }
            T_GROUP => g.v = 1.0,
            _ => {}
        }
        return;
    }
    match op {
        T_SUM => (g.v, g.c) = kahan_inc(f, g.v, g.c),
        T_AVG => {
            g.count += 1.0;
            if !g.incremental {
                let (nv, nc) = kahan_inc(f, g.v, g.c);
                if !nv.is_infinite() {
                    g.v = nv;
                    g.c = nc;
                    return;
                }
                g.incremental = true;
                g.mean = g.v / (g.count - 1.0);
                g.c /= g.count - 1.0;
            }
            if g.mean.is_infinite() {
                if f.is_infinite() && (g.mean > 0.0) == (f > 0.0) {
                    return;
                }
                if !f.is_infinite() && !f.is_nan() {
                    return;
                }
            }
            let cur = g.mean + g.c;
            (g.mean, g.c) = kahan_inc(f / g.count - cur / g.count, g.mean, g.c);
        }
        T_MAX if g.v < f || g.v.is_nan() => g.v = f,
        T_MIN if g.v > f || g.v.is_nan() => g.v = f,
        T_COUNT => g.count += 1.0,
        T_STDVAR | T_STDDEV => {
            g.count += 1.0;
            let delta = f - g.mean;
            g.mean += delta / g.count;
            g.v += delta * (f - g.mean);
        }
        _ => {}
    }
}

/// The result of a seen accumulator (every operator but `quantile`).
#[inline]
fn acc_value(op: TokenId, g: &Acc) -> f64 {
    match op {
        T_AVG => {
            if g.incremental {
                g.mean + g.c
            } else {
                (g.v + g.c) / g.count
            }
        }
        T_COUNT => g.count,
        T_STDVAR => g.v / g.count,
        T_STDDEV => (g.v / g.count).sqrt(),
        T_SUM => g.v + g.c,
        _ => g.v,
    }
}

/// Step by step with a cursor per series (`quantile`).
fn by_step(
    ev: &Ev<'_>,
    op: TokenId,
    q: &[f64],
    input: &[Series],
    series_group: &[usize],
    out: &mut [Series],
) -> Result<(), Error> {
    let n = ev.n();
    let grid = ev.grid;
    let ng = out.len();
    let mut accs = vec![Acc::default(); ng];
    let mut heaps: Vec<Vec<f64>> = if op == T_QUANTILE {
        vec![Vec::new(); ng]
    } else {
        Vec::new()
    };
    let mut cursors = vec![0usize; input.len()];
    for (i, &qi) in q.iter().enumerate().take(n) {
        if i % 256 == 0 {
            ev.ctx.check()?;
        }
        let ts = grid.ts(i);
        accs.iter_mut().for_each(|a| a.seen = false);
        for (si, s) in input.iter().enumerate() {
            let c = cursors[si];
            let Some(p) = s.pts.get(c) else { continue };
            if p.t != ts {
                continue;
            }
            cursors[si] = c + 1;
            let gi = series_group[si];
            if op == T_QUANTILE {
                let g = &mut accs[gi];
                if !g.seen {
                    g.seen = true;
                    heaps[gi].clear();
                }
                heaps[gi].push(p.v);
            } else {
                acc_add(op, &mut accs[gi], p.v);
            }
        }
        for (gi, g) in accs.iter().enumerate() {
            if !g.seen {
                continue;
            }
            let v = if op == T_QUANTILE {
                quantile(qi, &mut heaps[gi])
            } else {
                acc_value(op, g)
            };
            out[gi].pts.push(Sample { t: ts, v });
        }
    }
    Ok(())
}

fn aggregate_k(
    ev: &Ev<'_>,
    op: TokenId,
    param: &[f64],
    input: &[Series],
    series_group: &[usize],
    ng: usize,
) -> Result<Val, Error> {
    let n = ev.n();
    let grid = ev.grid;
    // Per step: how many to keep (topk, bottomk, limitk) or the ratio (limit_ratio);
    // `None` when the step produces nothing.
    let mut ks: Vec<Option<usize>> = vec![None; n];
    let mut ratios: Vec<f64> = vec![0.0; n];
    for (i, &p) in param.iter().enumerate().take(n) {
        if op == T_LIMIT_RATIO {
            if p.is_nan() {
                return Err(Error::Execution(format!("Ratio value {p} is NaN")));
            }
            if p == 0.0 {
                continue;
            }
            let r = p.clamp(-1.0, 1.0);
            if r != p {
                ev.ctx.warn(format!(
                    "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
                    crate::functions::fmt_go_float(p),
                    crate::functions::fmt_go_float(r)
                ));
            }
            ratios[i] = r;
            ks[i] = Some(input.len());
        } else {
            if !(p.is_finite() && p > -9.223_372_036_854_775e18 && p < 9.223_372_036_854_775e18) {
                return Err(Error::Execution(format!(
                    "Scalar value {} overflows int64",
                    crate::functions::fmt_go_float(p)
                )));
            }
            let kk = p.trunc() as i64;
            if kk >= 1 {
                ks[i] = Some((kk as usize).min(input.len()));
            }
        }
    }
    let instant = n == 1;
    let mut out: Vec<Series> = Vec::new();
    let mut out_of_series: Vec<Option<usize>> = vec![None; input.len()];
    let mut cursors = vec![0usize; input.len()];
    let mut cands: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ng];
    let offsets: Vec<f64> = if op == T_LIMIT_RATIO {
        input.iter().map(|s| ratio_offset(&s.labels)).collect()
    } else {
        Vec::new()
    };
    for i in 0..n {
        if i % 256 == 0 {
            ev.ctx.check()?;
        }
        let ts = grid.ts(i);
        cands.iter_mut().for_each(|c| c.clear());
        let Some(k) = ks[i] else {
            // Still advance the cursors past this step.
            for (si, s) in input.iter().enumerate() {
                if s.pts.get(cursors[si]).is_some_and(|p| p.t == ts) {
                    cursors[si] += 1;
                }
            }
            continue;
        };
        let ratio = ratios[i];
        for (si, s) in input.iter().enumerate() {
            let c = cursors[si];
            let Some(p) = s.pts.get(c) else { continue };
            if p.t != ts {
                continue;
            }
            cursors[si] = c + 1;
            let gi = series_group[si];
            match op {
                T_LIMITK => {
                    if cands[gi].len() < k {
                        cands[gi].push((si, p.v));
                    }
                }
                T_LIMIT_RATIO => {
                    let o = offsets[si];
                    if (ratio >= 0.0 && o < ratio) || (ratio < 0.0 && o >= 1.0 + ratio) {
                        cands[gi].push((si, p.v));
                    }
                }
                _ => cands[gi].push((si, p.v)),
            }
        }
        for c in cands.iter_mut() {
            if op == T_TOPK || op == T_BOTTOMK {
                let top = op == T_TOPK;
                // Stable: among equal values the earlier series wins, NaN sorts last.
                c.sort_by(|a, b| {
                    let (x, y) = (a.1, b.1);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => {
                            if top {
                                y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal)
                            } else {
                                x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
                            }
                        }
                    }
                });
                c.truncate(k);
            }
            for &(si, v) in c.iter() {
                let oi = if instant { None } else { out_of_series[si] };
                let oi = match oi {
                    Some(oi) => oi,
                    None => {
                        out.push(Series {
                            labels: input[si].labels.clone(),
                            drop_name: input[si].drop_name,
                            pts: Vec::new(),
                        });
                        out_of_series[si] = Some(out.len() - 1);
                        out.len() - 1
                    }
                };
                out[oi].pts.push(Sample { t: ts, v });
            }
        }
    }
    Ok(Val::Vector(out))
}

/// Where a series falls in `[0, 1)` for `limit_ratio`: a stable hash of its labels.
fn ratio_offset(l: &Labels) -> f64 {
    l.stable_hash() as f64 / u64::MAX as f64
}

fn count_values(
    ev: &Ev<'_>,
    input: &[Series],
    label: &str,
    without: bool,
    grouping: &[String],
) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut idx: HashMap<Labels, usize> = HashMap::new();
    let mut counts: HashMap<(usize, i64), f64> = HashMap::new();
    for s in input {
        for p in &s.pts {
            let m = labels::set(&s.labels, label, &crate::functions::fmt_go_float(p.v));
            let g = if without {
                labels::without(&m, grouping, true)
            } else {
                labels::keep_only(&m, grouping)
            };
            let gi = *idx.entry(g.clone()).or_insert_with(|| {
                out.push(Series {
                    labels: g,
                    drop_name: false,
                    pts: Vec::new(),
                });
                out.len() - 1
            });
            *counts.entry((gi, p.t)).or_insert(0.0) += 1.0;
        }
    }
    for ((gi, t), c) in counts {
        out[gi].pts.push(Sample { t, v: c });
    }
    for s in out.iter_mut() {
        s.pts.sort_by_key(|p| p.t);
    }
    let _ = ev;
    out
}
