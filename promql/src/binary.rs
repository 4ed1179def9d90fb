//! Binary operators: arithmetic, comparison (filtering or `bool`) and the set operators
//! `and`, `or`, `unless`, between scalars and instant vectors, with `on`/`ignoring` and
//! `group_left`/`group_right` vector matching.
//!
//! Vector operands are matched series by series: each side is grouped by its matching
//! signature once, then points are paired step by step through dense per-step tables.

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use tsdb::{Labels, Sample};

use crate::Error;
use crate::eval::{Ev, Series, Val};
use crate::labels;

pub fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Operators after which the result is no longer the named metric.
fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

/// `(value, keep)` of `l op r`; comparisons return the left value.
fn elem(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

pub fn eval(ev: &Ev<'_>, b: &BinaryExpr) -> Result<Val, Error> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(r.iter())
                .map(|(&a, &c)| {
                    let (v, keep) = elem(op, a, c);
                    if is_comparison(op) {
                        if keep { 1.0 } else { 0.0 }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Val::Vector(l), Val::Scalar(r)) => Ok(Val::Vector(vector_scalar(
            ev,
            op,
            l,
            &r,
            false,
            return_bool,
        ))),
        (Val::Scalar(l), Val::Vector(r)) => {
            Ok(Val::Vector(vector_scalar(ev, op, r, &l, true, return_bool)))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let (on, names) = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                None => (false, Vec::new()),
            };
            let card = b
                .modifier
                .as_ref()
                .map(|m| m.card.clone())
                .unwrap_or(VectorMatchCardinality::OneToOne);
            let m = Matching { on, names, card };
            let out = match op {
                T_LAND => and_unless(ev, l, r, &m, true),
                T_LUNLESS => and_unless(ev, l, r, &m, false),
                T_LOR => or(ev, l, r, &m)?,
                _ => vector_vector(ev, op, l, r, &m, return_bool)?,
            };
            Ok(Val::Vector(out))
        }
        _ => Err(Error::Execution(format!(
            "binary operator {} not allowed between these operands",
            b.op
        ))),
    }
}

fn vector_scalar(
    _ev: &Ev<'_>,
    op: TokenId,
    mut vec: Vec<Series>,
    sc: &[f64],
    swap: bool,
    return_bool: bool,
) -> Vec<Series> {
    let grid = _ev.grid;
    for s in vec.iter_mut() {
        s.pts.retain_mut(|p| {
            let k = grid.idx(p.t);
            let x = sc.get(k).copied().unwrap_or(f64::NAN);
            let (l, r) = if swap { (x, p.v) } else { (p.v, x) };
            let (mut v, mut keep) = elem(op, l, r);
            if is_comparison(op) && swap {
                v = r;
            }
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            p.v = v;
            keep
        });
        if drops_name(op) || return_bool {
            s.drop_name = true;
        }
    }
    vec.retain(|s| !s.pts.is_empty());
    vec
}

struct Matching {
    on: bool,
    names: Vec<String>,
    card: VectorMatchCardinality,
}

impl Matching {
    fn sig(&self, l: &Labels) -> Labels {
        labels::signature(l, self.on, &self.names)
    }
}

/// Per signature, which steps have at least one sample.
fn presence(ev: &Ev<'_>, ss: &[Series], m: &Matching) -> (Vec<Labels>, HashMap<Labels, Vec<bool>>) {
    let n = ev.n();
    let mut sigs = Vec::with_capacity(ss.len());
    let mut map: HashMap<Labels, Vec<bool>> = HashMap::new();
    for s in ss {
        let sig = m.sig(&s.labels);
        let e = map.entry(sig.clone()).or_insert_with(|| vec![false; n]);
        for p in &s.pts {
            e[ev.grid.idx(p.t)] = true;
        }
        sigs.push(sig);
    }
    (sigs, map)
}

fn and_unless(ev: &Ev<'_>, l: Vec<Series>, r: Vec<Series>, m: &Matching, and: bool) -> Vec<Series> {
    let (_, rmap) = presence(ev, &r, m);
    let grid = ev.grid;
    let mut out = Vec::with_capacity(l.len());
    for mut s in l {
        let sig = m.sig(&s.labels);
        let pres = rmap.get(&sig);
        s.pts.retain(|p| {
            let present = pres.is_some_and(|v| v[grid.idx(p.t)]);
            present == and
        });
        if !s.pts.is_empty() {
            out.push(s);
        }
    }
    out
}

fn or(ev: &Ev<'_>, l: Vec<Series>, r: Vec<Series>, m: &Matching) -> Result<Vec<Series>, Error> {
    let (_, lmap) = presence(ev, &l, m);
    let grid = ev.grid;
    let mut out = l;
    for mut s in r {
        let sig = m.sig(&s.labels);
        if let Some(pres) = lmap.get(&sig) {
            s.pts.retain(|p| !pres[grid.idx(p.t)]);
        }
        if !s.pts.is_empty() {
            out.push(s);
        }
    }
    merge_same_labels(ev, out)
}

/// Joins series that ended up with identical labels (as a step-by-step evaluation
/// would), failing if two of them have a value at the same step of a range evaluation.
pub fn merge_same_labels(ev: &Ev<'_>, ss: Vec<Series>) -> Result<Vec<Series>, Error> {
    if ss.len() < 2 || ev.n() == 1 {
        return Ok(ss);
    }
    let mut idx: HashMap<Labels, usize> = HashMap::with_capacity(ss.len());
    let mut out: Vec<Series> = Vec::with_capacity(ss.len());
    let mut merged = false;
    for s in ss {
        match idx.get(&s.labels) {
            Some(&i) => {
                out[i].pts.extend(s.pts);
                merged = true;
            }
            None => {
                idx.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    if merged {
        for s in out.iter_mut() {
            s.pts.sort_by_key(|p| p.t);
            if s.pts.windows(2).any(|w| w[0].t == w[1].t) {
                return Err(Error::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// Prometheus' rendering of a label set: `{a="1", b="2"}`, `__name__` included.
pub fn go_labels(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{n}={v:?}"));
    }
    s.push('}');
    s
}

fn result_metric(
    op: TokenId,
    many: &Labels,
    one: &Labels,
    m: &Matching,
    include: &[String],
) -> Labels {
    let mut l = if drops_name(op) {
        labels::drop_name(many)
    } else {
        many.clone()
    };
    if matches!(m.card, VectorMatchCardinality::OneToOne) {
        l = if m.on {
            labels::keep_only(&l, &m.names)
        } else {
            labels::without(&l, &m.names, false)
        };
    }
    for ln in include {
        l = labels::set(&l, ln, one.get(ln).unwrap_or(""));
    }
    l
}

fn vector_vector(
    ev: &Ev<'_>,
    op: TokenId,
    l: Vec<Series>,
    r: Vec<Series>,
    m: &Matching,
    return_bool: bool,
) -> Result<Vec<Series>, Error> {
    if l.is_empty() || r.is_empty() {
        return Ok(Vec::new());
    }
    let n = ev.n();
    let grid = ev.grid;
    let (many, one, swapped, include) = match &m.card {
        VectorMatchCardinality::OneToMany(ls) => (r, l, true, ls.labels.clone()),
        VectorMatchCardinality::ManyToOne(ls) => (l, r, false, ls.labels.clone()),
        _ => (l, r, false, Vec::new()),
    };
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    // Per signature of the "one" side: which series has a value at each step (index+1).
    let mut one_map: HashMap<Labels, Vec<(u32, f64)>> = HashMap::new();
    for (ri, s) in one.iter().enumerate() {
        let sig = m.sig(&s.labels);
        let arr = one_map
            .entry(sig.clone())
            .or_insert_with(|| vec![(0, 0.0); n]);
        for p in &s.pts {
            let k = grid.idx(p.t);
            if arr[k].0 != 0 {
                let other = &one[arr[k].0 as usize - 1];
                let side = if swapped { "left" } else { "right" };
                return Err(Error::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    go_labels(&sig),
                    go_labels(&s.labels),
                    go_labels(&other.labels)
                )));
            }
            arr[k] = (ri as u32 + 1, p.v);
        }
    }
    let mut matched: HashMap<Labels, Vec<bool>> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    let mut out_idx: HashMap<Labels, usize> = HashMap::new();
    for s in &many {
        ev.ctx.check()?;
        let sig = m.sig(&s.labels);
        let Some(arr) = one_map.get(&sig) else {
            continue;
        };
        let mut cache: Vec<(u32, usize)> = Vec::new();
        for p in &s.pts {
            let k = grid.idx(p.t);
            let (ri, ov) = arr[k];
            if ri == 0 {
                continue;
            }
            let o = &one[ri as usize - 1];
            let (a, c) = if swapped { (ov, p.v) } else { (p.v, ov) };
            let (mut v, keep) = elem(op, a, c);
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            if one_to_one {
                let mm = matched.entry(sig.clone()).or_insert_with(|| vec![false; n]);
                if mm[k] {
                    return Err(Error::Execution("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into()));
                }
                mm[k] = true;
            }
            let oi = match cache.iter().find(|(r, _)| *r == ri) {
                Some(&(_, oi)) => oi,
                None => {
                    let lbl = result_metric(op, &s.labels, &o.labels, m, &include);
                    let oi = *out_idx.entry(lbl.clone()).or_insert_with(|| {
                        out.push(Series {
                            labels: lbl,
                            drop_name: return_bool,
                            pts: Vec::new(),
                        });
                        out.len() - 1
                    });
                    cache.push((ri, oi));
                    oi
                }
            };
            out[oi].pts.push(Sample { t: p.t, v });
        }
    }
    for s in out.iter_mut() {
        if !s.pts.is_sorted_by_key(|p| p.t) {
            s.pts.sort_by_key(|p| p.t);
        }
        if s.pts.windows(2).any(|w| w[0].t == w[1].t) {
            return Err(Error::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
    }
    Ok(out)
}
