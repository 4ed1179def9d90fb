//! Input series of rule unit tests: a metric with labels (`up{job="node"}`) and its
//! values in the series notation (`1+2x3 _ stale`), both read by
//! [`promql::notation`], which the engine's conformance tests use too.

use tsdb::Labels;

pub(crate) use promql::notation::parse_metric;

/// One input series: its labels and one value per interval step (`None`: no sample).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InputSeries {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// Parses `series` (a metric with labels) and its `values`.
pub(crate) fn parse_input(series: &str, values: &str) -> Result<InputSeries, String> {
    let labels = parse_metric(series)?;
    let values =
        promql::notation::parse_values(values).map_err(|e| format!("series {series:?}: {e}"))?;
    Ok(InputSeries { labels, values })
}
