//! The evaluator.
//!
//! Every expression node is evaluated once per query over a [`Grid`] of steps and yields
//! a [`Val`]: a scalar per step, or series whose points sit on the grid. A selector loads
//! its data with one `select` covering every step's lookback window and walks each
//! series' samples with a moving pointer; range-vector arguments (`foo[5m]`, subqueries)
//! become a [`RangeInput`] that functions window step by step. Subqueries evaluate their
//! inner expression once on their own grid.
//!
//! Metric names are removed lazily, as Prometheus 3 does: a series that lost its name
//! carries `drop_name` and keeps `__name__` until the result is assembled.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};
use tsdb::{Labels, Sample};

use crate::{EngineOptions, Error, QueryResult, Queryable, RangeSeries, Value, VectorSample};

/// The steps a node is evaluated at: `start, start+step, ..., end`.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Grid {
    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The step index of a grid timestamp.
    pub fn idx(&self, t: i64) -> usize {
        ((t - self.start) / self.step) as usize
    }
}

/// One series of an instant-vector value: points on the grid, sorted by time.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    /// The metric name is to be removed when the result is assembled.
    pub drop_name: bool,
    pub pts: Vec<Sample>,
}

/// The value of a node over all steps.
#[derive(Debug)]
pub enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Series>),
    /// Raw samples of a range selector or subquery (instant queries only).
    Matrix(Vec<Series>),
}

/// A range-vector argument: series with their samples (in memory, or still in storage
/// and decoded by [`RangeInput::samples`]) and, per step, the end of the window
/// `(end - range, end]`.
pub struct RangeInput {
    pub series: Vec<InputSeries>,
    pub range: i64,
    pub ends: Vec<i64>,
    /// The span stored series are decoded over.
    mint: i64,
    maxt: i64,
}

/// One series of a [`RangeInput`].
pub struct InputSeries {
    pub labels: Labels,
    pub drop_name: bool,
    data: RangeData,
}

enum RangeData {
    /// Sorted samples without stale markers (a subquery's points).
    Pts(Vec<Sample>),
    Stored(tsdb::SelectedSeries),
}

impl InputSeries {
    /// A rough count of the samples the series holds, for planning parallel work.
    pub fn cost(&self) -> usize {
        match &self.data {
            RangeData::Pts(p) => p.len(),
            RangeData::Stored(s) => s.cost(),
        }
    }
}

/// Per-thread buffers for decoding stored series.
#[derive(Default)]
pub struct Scratch {
    pub buf: Vec<Sample>,
    tmp: Vec<Sample>,
}

impl RangeInput {
    fn empty(range: i64, ends: Vec<i64>) -> RangeInput {
        RangeInput {
            series: Vec::new(),
            range,
            ends,
            mint: 0,
            maxt: -1,
        }
    }

    /// The samples of `s` (one of `self.series`), stale markers removed; stored series
    /// are decoded into `sc`.
    pub fn samples<'s>(
        &self,
        ctx: &Ctx<'_>,
        s: &'s InputSeries,
        sc: &'s mut Scratch,
    ) -> Result<&'s [Sample], Error> {
        match &s.data {
            RangeData::Pts(p) => Ok(p),
            RangeData::Stored(st) => {
                ctx.decode(st, self.mint, self.maxt, sc)?;
                sc.buf.retain(|p| !is_stale(p.v));
                Ok(&sc.buf)
            }
        }
    }
}

/// State shared by every node of one query.
pub struct Ctx<'a> {
    q: &'a dyn Queryable,
    pub opts: &'a EngineOptions,
    deadline: Instant,
    loaded: AtomicUsize,
    pub query_start: i64,
    pub query_end: i64,
    pub warnings: Mutex<Vec<String>>,
    pub infos: Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// Fails once the query's time is up.
    pub fn check(&self) -> Result<(), Error> {
        if let Some(c) = &self.opts.cancel
            && c.load(Ordering::Relaxed)
        {
            return Err(Error::Canceled);
        }
        if Instant::now() > self.deadline {
            return Err(Error::Timeout("expression evaluation".into()));
        }
        Ok(())
    }

    pub fn info(&self, msg: String) {
        if let Ok(mut v) = self.infos.lock()
            && !v.contains(&msg)
        {
            v.push(msg);
        }
    }

    pub fn warn(&self, msg: String) {
        if let Ok(mut v) = self.warnings.lock()
            && !v.contains(&msg)
        {
            v.push(msg);
        }
    }

    /// Decodes stored series `s` over `[mint, maxt]` into `sc.buf` (stale markers kept),
    /// counting the samples against the query's limit.
    pub fn decode(
        &self,
        s: &tsdb::SelectedSeries,
        mint: i64,
        maxt: i64,
        sc: &mut Scratch,
    ) -> Result<(), Error> {
        s.decode_into(mint, maxt, &mut sc.buf, &mut sc.tmp)
            .map_err(|e| Error::Execution(e.to_string()))?;
        self.count_loaded(sc.buf.len())
    }

    /// Counts `n` samples held against the query's limit.
    pub fn count_loaded(&self, n: usize) -> Result<(), Error> {
        let total = self.loaded.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.opts.max_samples {
            return Err(Error::TooManySamples(
                "query processing would load too many samples into memory in query execution"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// An evaluator for one grid.
#[derive(Clone, Copy)]
pub struct Ev<'a> {
    pub ctx: &'a Ctx<'a>,
    pub grid: Grid,
}

pub fn run_instant(
    q: &dyn Queryable,
    opts: &EngineOptions,
    e: &Expr,
    t: i64,
) -> Result<QueryResult, Error> {
    let ctx = new_ctx(q, opts, t, t);
    let ev = Ev {
        ctx: &ctx,
        grid: Grid {
            start: t,
            end: t,
            step: 1,
        },
    };
    let val = ev.eval(e)?;
    let value = match val {
        Val::Scalar(v) => Value::Scalar {
            t,
            v: v.first().copied().unwrap_or(f64::NAN),
        },
        Val::Str(s) => Value::String { t, v: s },
        Val::Vector(series) => {
            let series = finish_names(series)?;
            Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        s.pts.first().map(|p| VectorSample {
                            labels: s.labels,
                            t,
                            v: p.v,
                        })
                    })
                    .collect(),
            )
        }
        Val::Matrix(series) => {
            let series = finish_names(series)?;
            Value::Matrix(
                series
                    .into_iter()
                    .map(|s| RangeSeries {
                        labels: s.labels,
                        samples: s.pts,
                    })
                    .collect(),
            )
        }
    };
    Ok(finish(ctx, value))
}

pub fn run_range(
    q: &dyn Queryable,
    opts: &EngineOptions,
    e: &Expr,
    start: i64,
    end: i64,
    step: i64,
) -> Result<QueryResult, Error> {
    use promql_parser::parser::value::ValueType;
    let vt = e.value_type();
    if vt != ValueType::Scalar && vt != ValueType::Vector {
        return Err(Error::Parse(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            match vt {
                ValueType::Matrix => "range vector",
                ValueType::String => "string",
                _ => "unknown",
            }
        )));
    }
    let ctx = new_ctx(q, opts, start, end);
    let grid = Grid { start, end, step };
    let ev = Ev { ctx: &ctx, grid };
    let val = ev.eval(e)?;
    let mut out = match val {
        Val::Scalar(v) => vec![RangeSeries {
            labels: Labels::default(),
            samples: v
                .iter()
                .enumerate()
                .map(|(i, v)| Sample {
                    t: grid.ts(i),
                    v: *v,
                })
                .collect(),
        }],
        Val::Vector(series) | Val::Matrix(series) => finish_names(series)?
            .into_iter()
            .filter(|s| !s.pts.is_empty())
            .map(|s| RangeSeries {
                labels: s.labels,
                samples: s.pts,
            })
            .collect(),
        Val::Str(_) => {
            return Err(Error::Parse(
                "invalid expression type \"string\" for range query, must be Scalar or instant Vector"
                    .into(),
            ));
        }
    };
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(finish(ctx, Value::Matrix(out)))
}

fn new_ctx<'a>(q: &'a dyn Queryable, opts: &'a EngineOptions, start: i64, end: i64) -> Ctx<'a> {
    let now = Instant::now();
    Ctx {
        q,
        opts,
        deadline: now.checked_add(opts.timeout).unwrap_or(now),
        loaded: AtomicUsize::new(0),
        query_start: start,
        query_end: end,
        warnings: Mutex::new(Vec::new()),
        infos: Mutex::new(Vec::new()),
    }
}

fn finish(ctx: Ctx<'_>, value: Value) -> QueryResult {
    QueryResult {
        value,
        warnings: ctx.warnings.into_inner().unwrap_or_default(),
        infos: ctx.infos.into_inner().unwrap_or_default(),
    }
}

/// Removes names marked for dropping and rejects results where two series end up with
/// the same labels.
fn finish_names(mut series: Vec<Series>) -> Result<Vec<Series>, Error> {
    for s in series.iter_mut() {
        if s.drop_name {
            s.labels = crate::labels::drop_name(&s.labels);
            s.drop_name = false;
        }
    }
    check_duplicates(&series)?;
    Ok(series)
}

pub fn check_duplicates(series: &[Series]) -> Result<(), Error> {
    if series.len() < 2 {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(series.len());
    for s in series {
        if !seen.insert(&s.labels) {
            return Err(Error::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == tsdb::STALE_NAN_BITS
}

/// Runs `f` over `items` on up to all cores when `work` (an estimate of the elementary
/// operations) makes it worthwhile; results keep the order of `items`. Each thread owns a
/// scratch value `S` that `f` may reuse between items (decode buffers). Threads take small batches of items in turn, so uneven items
/// spread out.
pub fn par_map_with<T: Sync, R: Send, S: Default>(
    items: &[T],
    work: usize,
    f: impl Fn(&mut S, &T) -> Result<R, Error> + Sync,
) -> Result<Vec<R>, Error> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len());
    if threads < 2 || work < 100_000 {
        let mut sc = S::default();
        return items.iter().map(|t| f(&mut sc, t)).collect();
    }
    let batch = items.len().div_ceil(threads * 16).max(1);
    let batches = items.len().div_ceil(batch);
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (f, next, failed) = (&f, &next, &failed);
    type Batches<R> = Vec<(usize, Vec<R>)>;
    let parts: Vec<Result<Batches<R>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut sc = S::default();
                    let mut done = Vec::new();
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= batches || failed.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        let lo = b * batch;
                        let hi = (lo + batch).min(items.len());
                        let mut out = Vec::with_capacity(hi - lo);
                        for t in &items[lo..hi] {
                            match f(&mut sc, t) {
                                Ok(r) => out.push(r),
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                        done.push((b, out));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Execution("evaluation thread failed".into())))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(batches);
    for p in parts {
        all.extend(p?);
    }
    all.sort_unstable_by_key(|(b, _)| *b);
    let mut out = Vec::with_capacity(items.len());
    for (_, v) in all {
        out.extend(v);
    }
    Ok(out)
}

/// Receives the series of an instant vector, a batch at a time, in order.
pub type Sink<'s> = dyn FnMut(Vec<Series>) -> Result<(), Error> + 's;

/// Input series per batch of [`par_map_batched`]: enough to keep both cores busy, few
/// enough that a batch's results stay small (2,048 series of 240 points: 8 MB).
const BATCH: usize = 2048;

/// Maps `items` in parallel (see [`par_map_with`]) a batch at a time and hands each
/// batch's `Some` results to `sink`, in order. `work` estimates one item's operations.
pub fn par_map_batched<T: Sync, R: Send, S: Default>(
    items: &[T],
    work: impl Fn(&T) -> usize,
    f: impl Fn(&mut S, &T) -> Result<Option<R>, Error> + Sync,
    sink: &mut dyn FnMut(Vec<R>) -> Result<(), Error>,
) -> Result<(), Error> {
    for batch in items.chunks(BATCH) {
        let w = batch.iter().map(&work).sum();
        let out = par_map_with(batch, w, &f)?;
        sink(out.into_iter().flatten().collect())?;
    }
    Ok(())
}

pub fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Strips any number of parentheses.
pub fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

impl<'a> Ev<'a> {
    pub fn n(&self) -> usize {
        self.grid.len()
    }

    pub fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => self.ctx.query_start,
            AtModifier::End => self.ctx.query_end,
            AtModifier::At(t) => system_time_ms(t),
        })
    }

    /// Per step, the reference time of a selector: the `@` time or the step time, minus
    /// the offset.
    pub fn ref_times(&self, at: &Option<AtModifier>, offset: &Option<Offset>) -> Vec<i64> {
        let off = offset_ms(offset);
        let at = self.at_ms(at);
        (0..self.n())
            .map(|i| at.unwrap_or_else(|| self.grid.ts(i)).saturating_sub(off))
            .collect()
    }

    pub fn eval(&self, e: &Expr) -> Result<Val, Error> {
        self.ctx.check()?;
        match e {
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; self.n()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Val::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Ok(Val::Scalar(v))
                }
                Val::Vector(mut ss) => {
                    for s in ss.iter_mut() {
                        s.drop_name = true;
                        s.pts.iter_mut().for_each(|p| p.v = -p.v);
                    }
                    Ok(Val::Vector(ss))
                }
                _ => Err(Error::Execution(
                    "unary expression only allowed on expressions of type scalar or instant vector"
                        .into(),
                )),
            },
            Expr::Binary(b) => crate::binary::eval(self, b),
            Expr::Aggregate(a) => crate::aggregate::eval(self, a),
            Expr::Call(c) => crate::functions::call(self, c),
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let ri = self.range_input(e)?;
                Ok(Val::Matrix(window_matrix(self.ctx, ri)?))
            }
            Expr::Extension(_) => Err(Error::Unsupported(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// Evaluates an expression that must be a scalar.
    pub fn eval_scalar(&self, e: &Expr) -> Result<Vec<f64>, Error> {
        match self.eval(e)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(Error::Execution(format!("expected scalar, got {e}"))),
        }
    }

    /// Evaluates an expression that must be an instant vector.
    pub fn eval_vector(&self, e: &Expr) -> Result<Vec<Series>, Error> {
        match self.eval(e)? {
            Val::Vector(v) => Ok(v),
            _ => Err(Error::Execution(format!(
                "expected instant vector, got {e}"
            ))),
        }
    }

    /// Loads the series a selector matches in `[mint, maxt]`.
    pub fn select(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<tsdb::SelectedSeries>, Error> {
        let mut groups: Vec<Vec<tsdb::Matcher>> = Vec::new();
        let base: Vec<tsdb::Matcher> = match &vs.name {
            Some(n) => vec![tsdb::Matcher::eq(tsdb::labels::METRIC_NAME, n)],
            None => Vec::new(),
        };
        let conv = |m: &promql_parser::label::Matcher| -> Result<tsdb::Matcher, Error> {
            let op = match m.op {
                PMatchOp::Equal => tsdb::MatchOp::Equal,
                PMatchOp::NotEqual => tsdb::MatchOp::NotEqual,
                PMatchOp::Re(_) => tsdb::MatchOp::Regex,
                PMatchOp::NotRe(_) => tsdb::MatchOp::NotRegex,
            };
            tsdb::Matcher::new(op, &m.name, &m.value)
                .map_err(|e| Error::Parse(format!("invalid regular expression {:?}: {e}", m.value)))
        };
        if vs.matchers.or_matchers.is_empty() {
            let mut g = base.clone();
            for m in &vs.matchers.matchers {
                g.push(conv(m)?);
            }
            groups.push(g);
        } else {
            for og in &vs.matchers.or_matchers {
                let mut g = base.clone();
                for m in og.iter().chain(vs.matchers.matchers.iter()) {
                    g.push(conv(m)?);
                }
                groups.push(g);
            }
        }
        let mut out: Vec<tsdb::SelectedSeries> = Vec::new();
        for g in &groups {
            let got = self.ctx.q.select(g, mint, maxt).map_err(Error::Execution)?;
            out.extend(got);
        }
        if groups.len() > 1 {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.dedup_by(|a, b| a.labels == b.labels);
        }
        self.ctx.check()?;
        Ok(out)
    }

    /// An instant-vector selector over the grid. With `timestamps`, each point's value
    /// is the selected sample's timestamp in seconds (for `timestamp()`).
    pub fn vector_selector(
        &self,
        vs: &VectorSelector,
        timestamps: bool,
    ) -> Result<Vec<Series>, Error> {
        let mut out = Vec::new();
        self.vector_selector_into(vs, timestamps, &mut |b| {
            out.extend(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Ev::vector_selector`], handing the series to `sink` a batch at a time.
    pub fn vector_selector_into(
        &self,
        vs: &VectorSelector,
        timestamps: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), Error> {
        let refs = self.ref_times(&vs.at, &vs.offset);
        let lookback = self.ctx.opts.lookback_delta_ms;
        let (lo, hi) = min_max(&refs);
        let mint = lo.saturating_sub(lookback).saturating_add(1);
        let data = self.select(vs, mint, hi)?;
        let grid = self.grid;
        let ctx = self.ctx;
        let steps = refs.len();
        par_map_batched(
            &data,
            |s| s.cost() + steps,
            |sc: &mut Scratch, s| {
                ctx.check()?;
                ctx.decode(s, mint, hi, sc)?;
                let smp = &sc.buf;
                let mut pts = Vec::with_capacity(steps.min(smp.len()));
                let mut j = 0;
                for (i, &r) in refs.iter().enumerate() {
                    while j < smp.len() && smp[j].t <= r {
                        j += 1;
                    }
                    if j > 0 {
                        let c = smp[j - 1];
                        if c.t > r.saturating_sub(lookback) && !is_stale(c.v) {
                            pts.push(Sample {
                                t: grid.ts(i),
                                v: if timestamps { c.t as f64 / 1000.0 } else { c.v },
                            });
                        }
                    }
                }
                Ok((!pts.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    drop_name: false,
                    pts,
                }))
            },
            sink,
        )
    }

    /// Evaluates instant-vector expression `e` and hands its series to `sink` in order,
    /// a batch at a time. Selectors and range functions of them produce one output
    /// series per stored series, so a caller that consumes the batches (an aggregation)
    /// never holds all of them; other expressions are evaluated whole, as one batch.
    pub fn eval_vector_batched(&self, e: &Expr, sink: &mut Sink<'_>) -> Result<(), Error> {
        match unparen(e) {
            Expr::VectorSelector(vs) => self.vector_selector_into(vs, false, sink),
            Expr::Call(c) => {
                if !crate::functions::call_batched(self, c, sink)? {
                    sink(self.eval_vector(e)?)?;
                }
                Ok(())
            }
            _ => sink(self.eval_vector(e)?),
        }
    }

    /// Prepares a range-vector argument: a range selector or a subquery.
    pub fn range_input(&self, e: &Expr) -> Result<RangeInput, Error> {
        match unparen(e) {
            Expr::MatrixSelector(ms) => {
                let range = ms.range.as_millis() as i64;
                let ends = self.ref_times(&ms.vs.at, &ms.vs.offset);
                let (lo, hi) = min_max(&ends);
                let mint = lo.saturating_sub(range).saturating_add(1);
                let data = self.select(&ms.vs, mint, hi)?;
                let series = data
                    .into_iter()
                    .map(|s| InputSeries {
                        labels: s.labels.clone(),
                        drop_name: false,
                        data: RangeData::Stored(s),
                    })
                    .collect();
                Ok(RangeInput {
                    series,
                    range,
                    ends,
                    mint,
                    maxt: hi,
                })
            }
            Expr::Subquery(sq) => {
                let range = sq.range.as_millis() as i64;
                let ends = self.ref_times(&sq.at, &sq.offset);
                let (lo, hi) = min_max(&ends);
                let step = match sq.step {
                    Some(d) if d.as_millis() > 0 => d.as_millis() as i64,
                    _ => self.ctx.opts.default_subquery_step_ms.max(1),
                };
                let s0 = lo.saturating_sub(range);
                let mut start = step * (s0 / step);
                if start <= s0 {
                    start = start.saturating_add(step);
                }
                // Every step of the subquery holds at least one value per series.
                if (hi.saturating_sub(start) / step) as u128 >= self.ctx.opts.max_samples as u128 {
                    return Err(Error::TooManySamples(
                        "query processing would load too many samples into memory in subquery evaluation"
                            .into(),
                    ));
                }
                if start > hi {
                    return Ok(RangeInput::empty(range, ends));
                }
                let grid = Grid {
                    start,
                    end: hi,
                    step,
                };
                let inner = Ev {
                    ctx: self.ctx,
                    grid,
                };
                let series = match inner.eval(&sq.expr)? {
                    Val::Vector(ss) => ss,
                    Val::Scalar(v) => vec![Series {
                        labels: Labels::default(),
                        drop_name: false,
                        pts: v
                            .iter()
                            .enumerate()
                            .map(|(i, v)| Sample {
                                t: grid.ts(i),
                                v: *v,
                            })
                            .collect(),
                    }],
                    _ => {
                        return Err(Error::Execution(
                            "subquery is only allowed on instant vector".into(),
                        ));
                    }
                };
                Ok(RangeInput {
                    series: series
                        .into_iter()
                        .filter(|s| !s.pts.is_empty())
                        .map(|s| InputSeries {
                            labels: s.labels,
                            drop_name: s.drop_name,
                            data: RangeData::Pts(s.pts),
                        })
                        .collect(),
                    range,
                    ends,
                    mint: i64::MIN,
                    maxt: i64::MAX,
                })
            }
            other => Err(Error::Execution(format!(
                "expected range vector, got {other}"
            ))),
        }
    }
}

pub fn min_max(v: &[i64]) -> (i64, i64) {
    let lo = v.iter().copied().min().unwrap_or(0);
    let hi = v.iter().copied().max().unwrap_or(0);
    (lo, hi)
}

/// The raw samples of a range input in its first window (an instant query's matrix).
fn window_matrix(ctx: &Ctx<'_>, ri: RangeInput) -> Result<Vec<Series>, Error> {
    let Some(&end) = ri.ends.first() else {
        return Ok(Vec::new());
    };
    let start = end.saturating_sub(ri.range);
    let mut sc = Scratch::default();
    let mut out = Vec::new();
    for s in &ri.series {
        let pts: Vec<Sample> = ri
            .samples(ctx, s, &mut sc)?
            .iter()
            .filter(|p| p.t > start && p.t <= end)
            .copied()
            .collect();
        if !pts.is_empty() {
            out.push(Series {
                labels: s.labels.clone(),
                drop_name: s.drop_name,
                pts,
            });
        }
    }
    Ok(out)
}

/// Walks the windows `(end - range, end]` of one series over the steps, calling `f`
/// with the step index, the index in `pts` of the window's first sample, and the samples
/// in the window.
pub fn for_each_window(
    pts: &[Sample],
    range: i64,
    ends: &[i64],
    mut f: impl FnMut(usize, usize, &[Sample]),
) {
    let mut lo = 0;
    let mut hi = 0;
    for (i, &end) in ends.iter().enumerate() {
        let start = end.saturating_sub(range);
        // Windows move forward, but with `@` they may repeat; reset if one moves back.
        if lo > 0 && pts[lo - 1].t > start {
            lo = 0;
            hi = 0;
        }
        while lo < pts.len() && pts[lo].t <= start {
            lo += 1;
        }
        if hi < lo {
            hi = lo;
        }
        while hi < pts.len() && pts[hi].t <= end {
            hi += 1;
        }
        if hi > lo {
            f(i, lo, &pts[lo..hi]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    #[test]
    fn windows_are_left_open() {
        let pts = [s(0, 1.0), s(10, 2.0), s(20, 3.0)];
        let mut got = Vec::new();
        for_each_window(&pts, 10, &[0, 10, 20, 30], |i, _, w| got.push((i, w.len())));
        assert_eq!(got, vec![(0, 1), (1, 1), (2, 1)]);
        let mut got = Vec::new();
        for_each_window(&pts, 15, &[20, 20], |i, lo, w| got.push((i, lo, w[0].t)));
        assert_eq!(got, vec![(0, 1, 10), (1, 1, 10)]);
    }

    #[test]
    fn grid_indexes_round_trip() {
        let g = Grid {
            start: -100,
            end: 200,
            step: 50,
        };
        assert_eq!(g.len(), 7);
        assert_eq!(g.idx(g.ts(5)), 5);
    }
}
