//! Minos' PromQL engine.
//!
//! Parses a PromQL expression with `promql-parser` and evaluates it with Prometheus 3.x
//! semantics over anything that implements [`Queryable`], usually a [`tsdb::Db`]. The
//! engine returns values, never JSON: the HTTP layer renders them and maps
//! [`Error::kind`] to status codes.
//!
//! Every node of the expression is evaluated once per query, over all steps at once:
//! a selector loads its series with one `select` covering the whole query range and
//! walks each series' samples with a moving window over the steps.
//!
//! # Layout
//!
//! - `eval`: the evaluator: selectors, subqueries, `@`/`offset`, dispatch, limits.
//! - `binary`: arithmetic, comparison and set operators with vector matching.
//! - `aggregate`: `sum`, `avg`, `topk`, `quantile`, `count_values`, `limitk`, ...
//! - `functions`: the function library (range-vector and instant-vector functions).
//! - `labels`: label-set helpers (grouping keys, matching signatures, name dropping).
//! - `duration`: Prometheus duration strings.
//! - [`notation`]: the series notation of Prometheus' test scripts.

mod aggregate;
mod binary;
mod duration;
mod durexpr;
mod eval;
mod functions;
mod labels;
pub mod notation;

use std::time::Duration;

pub use duration::parse_duration_ms;

/// A source of series for the engine.
pub trait Queryable: Send + Sync {
    /// Series matching all matchers that may have samples in [mint, maxt] (inclusive ms),
    /// sorted by labels; the engine decodes each one when it evaluates it.
    fn select(
        &self,
        ms: &[tsdb::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<tsdb::SelectedSeries>, String>;
}

impl Queryable for tsdb::Db {
    fn select(
        &self,
        ms: &[tsdb::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<tsdb::SelectedSeries>, String> {
        tsdb::Db::select_lazy(self, ms, mint, maxt).map_err(|e| e.to_string())
    }
}

/// Limits and defaults of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample (ms).
    pub lookback_delta_ms: i64,
    /// Wall-clock budget of one query.
    pub timeout: Duration,
    /// Samples one query may load from storage.
    pub max_samples: usize,
    /// Steps a range query may have.
    pub max_points_per_series: usize,
    /// The step of a subquery that gives none (`x[1h:]`): Prometheus uses its global
    /// evaluation interval, so the server sets `--rules.evaluation-interval` here.
    pub default_subquery_step_ms: i64,
    /// When set and raised, the query stops at its next check with [`Error::Canceled`]
    /// (the HTTP layer raises it when the client goes away).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 300_000,
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
            default_subquery_step_ms: 60_000,
            cancel: None,
        }
    }
}

/// The PromQL engine. Stateless between queries; share one per process.
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `expr` at `t_ms`. Returns a scalar, string, vector or (for a range
    /// selector or subquery) matrix.
    pub fn instant(&self, q: &dyn Queryable, expr: &str, t_ms: i64) -> Result<QueryResult, Error> {
        let ast = parse(expr)?;
        eval::run_instant(q, &self.opts, &ast, t_ms)
    }

    /// Evaluates `expr` at every step from `start_ms` to `end_ms`. Returns a matrix
    /// sorted by labels.
    pub fn range(
        &self,
        q: &dyn Queryable,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, Error> {
        if step_ms <= 0 {
            return Err(Error::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
                    .into(),
            ));
        }
        if end_ms < start_ms {
            return Err(Error::Parse(
                "end timestamp must not be before start time".into(),
            ));
        }
        let points = (end_ms - start_ms) / step_ms + 1;
        if points > self.opts.max_points_per_series as i64 {
            return Err(Error::Parse(format!(
                "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                group_thousands(self.opts.max_points_per_series)
            )));
        }
        let ast = parse(expr)?;
        eval::run_range(q, &self.opts, &ast, start_ms, end_ms, step_ms)
    }
}

fn parse(expr: &str) -> Result<promql_parser::parser::Expr, Error> {
    // The parser is third-party code: a panic on some odd input must not take the
    // caller down, so it becomes a parse error.
    let expr = durexpr::rewrite(expr)?.into_owned();
    match std::panic::catch_unwind(move || promql_parser::parser::parse(&expr)) {
        Ok(r) => r.map_err(|e| Error::Parse(format!("parse error: {e}"))),
        Err(_) => Err(Error::Parse("parse error: malformed expression".into())),
    }
}

fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The outcome of a query: its value and the annotations Prometheus would attach.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub value: Value,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// A query's value.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<VectorSample>),
    Matrix(Vec<RangeSeries>),
}

/// One sample of an instant vector; `t` is the evaluation time.
#[derive(Debug, Clone)]
pub struct VectorSample {
    pub labels: tsdb::Labels,
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector.
#[derive(Debug, Clone)]
pub struct RangeSeries {
    pub labels: tsdb::Labels,
    pub samples: Vec<tsdb::Sample>,
}

/// Errors of parsing or evaluating a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query or its parameters are malformed (also: bad step, too many points).
    #[error("{0}")]
    Parse(String),
    /// The query is well-formed but cannot be evaluated on this data.
    #[error("{0}")]
    Execution(String),
    /// The query ran out of time; the text says where.
    #[error("query timed out in {0}")]
    Timeout(String),
    /// The query would load more samples than allowed.
    #[error("{0}")]
    TooManySamples(String),
    /// The query needs a feature the engine does not have (native histograms).
    #[error("{0}")]
    Unsupported(String),
    #[error("query was canceled")]
    Canceled,
}

/// How a caller should treat an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadData,
    Execution,
    Timeout,
    Canceled,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Parse(_) => ErrorKind::BadData,
            Error::Execution(_) | Error::TooManySamples(_) | Error::Unsupported(_) => {
                ErrorKind::Execution
            }
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Canceled => ErrorKind::Canceled,
        }
    }
}

/// The expression, prettified like Prometheus' `/api/v1/format_query`.
pub fn format_query(expr: &str) -> Result<String, Error> {
    Ok(parse(expr)?.prettify())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(11_000), "11,000");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }

    /// Series held in memory, filtered like the storage engine filters them.
    struct Mem(Vec<tsdb::SeriesSamples>);

    impl Queryable for Mem {
        fn select(
            &self,
            ms: &[tsdb::Matcher],
            mint: i64,
            maxt: i64,
        ) -> Result<Vec<tsdb::SelectedSeries>, String> {
            Ok(self
                .0
                .iter()
                .filter(|s| {
                    ms.iter()
                        .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
                })
                .filter(|s| s.samples.iter().any(|p| p.t >= mint && p.t <= maxt))
                .map(|s| tsdb::SelectedSeries::from_samples(s.labels.clone(), s.samples.clone()))
                .collect())
        }
    }

    fn series(name: &str, inst: &str, pts: &[(i64, f64)]) -> tsdb::SeriesSamples {
        tsdb::SeriesSamples {
            labels: tsdb::Labels::from_pairs([("__name__", name), ("instance", inst)]).unwrap(),
            samples: pts.iter().map(|&(t, v)| tsdb::Sample { t, v }).collect(),
        }
    }

    fn vector(r: QueryResult) -> Vec<(String, f64)> {
        match r.value {
            Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
            other => panic!("expected a vector, got {other:?}"),
        }
    }

    #[test]
    fn stale_marker_ends_a_series_before_lookback() {
        let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
        let db = Mem(vec![series("up", "a", &[(0, 1.0), (10_000, stale)])]);
        let e = Engine::new(EngineOptions::default());
        assert_eq!(vector(e.instant(&db, "up", 5_000).unwrap()).len(), 1);
        assert!(vector(e.instant(&db, "up", 20_000).unwrap()).is_empty());
    }

    #[test]
    fn range_selector_excludes_the_left_edge() {
        let db = Mem(vec![series(
            "c_total",
            "a",
            &[(0, 1.0), (60_000, 2.0), (120_000, 3.0)],
        )]);
        let e = Engine::new(EngineOptions::default());
        let v = vector(
            e.instant(&db, "count_over_time(c_total[1m])", 120_000)
                .unwrap(),
        );
        assert_eq!(v[0].1, 1.0);
    }

    #[test]
    fn topk_keeps_prometheus_order_and_names() {
        let db = Mem(vec![
            series("m", "a", &[(0, 1.0)]),
            series("m", "b", &[(0, 3.0)]),
            series("m", "c", &[(0, 2.0)]),
        ]);
        let e = Engine::new(EngineOptions::default());
        let v = vector(e.instant(&db, "topk(2, m)", 0).unwrap());
        assert_eq!(v[0], ("m{instance=\"b\"}".to_string(), 3.0));
        assert_eq!(v[1], ("m{instance=\"c\"}".to_string(), 2.0));
        let v = vector(e.instant(&db, "m * 2", 0).unwrap());
        assert!(v.iter().all(|(l, _)| l.starts_with('{')));
    }

    #[test]
    fn a_raised_cancel_flag_stops_the_query() {
        let db = Mem(vec![series("m", "a", &[(0, 1.0)])]);
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let e = Engine::new(EngineOptions {
            cancel: Some(flag),
            ..EngineOptions::default()
        });
        assert!(matches!(
            e.range(&db, "m", 0, 60_000, 1_000),
            Err(Error::Canceled)
        ));
    }

    #[test]
    fn limits_are_reported_not_panicked() {
        let db = Mem(vec![series("m", "a", &[(0, 1.0), (1, 2.0), (2, 3.0)])]);
        let e = Engine::new(EngineOptions {
            max_samples: 2,
            ..EngineOptions::default()
        });
        assert!(matches!(
            e.instant(&db, "m[1m]", 10),
            Err(Error::TooManySamples(_))
        ));
        let err = e.range(&db, "m", 0, 1_000_000, 1).unwrap_err();
        assert!(err.to_string().contains("11,000 points"), "{err}");
        assert_eq!(err.kind(), ErrorKind::BadData);
        assert!(e.instant(&db, "sum(", 0).is_err());
        assert!(e.instant(&db, "m offset 290000y", 0).is_ok());
    }

    #[test]
    fn range_query_matrix_is_sorted_by_labels() {
        let db = Mem(vec![
            series("m", "b", &[(0, 1.0), (60_000, 2.0)]),
            series("m", "a", &[(0, 1.0), (60_000, 2.0)]),
        ]);
        let e = Engine::new(EngineOptions::default());
        let Value::Matrix(m) = e.range(&db, "m", 0, 60_000, 30_000).unwrap().value else {
            panic!("expected a matrix");
        };
        assert_eq!(m.len(), 2);
        assert!(m[0].labels < m[1].labels);
        assert_eq!(m[0].samples.len(), 3);
    }

    #[test]
    fn error_kinds_map_like_prometheus() {
        assert_eq!(Error::Parse("x".into()).kind(), ErrorKind::BadData);
        assert_eq!(Error::Unsupported("x".into()).kind(), ErrorKind::Execution);
        assert_eq!(Error::Timeout("x".into()).kind(), ErrorKind::Timeout);
    }
}
