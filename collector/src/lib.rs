//! Ingest: decoding and validating what senders push into Minos.
//!
//! The collector turns the bytes a sender pushes into validated label sets and samples,
//! ready for tsdb's appender. It knows nothing of HTTP: the `web` crate reads the body,
//! calls in here, and maps [`remote_write::ErrorKind`] to a status code.
//!
//! # Layout
//!
//! - `remote_write`: Prometheus remote_write 1.0: snappy block decompression with size
//!   caps, a zero-copy protobuf decoder that validates labels as it goes, and (in
//!   `remote_write::proto`) prost message types and an encoder for senders and tests.
//! - `exposition`: the Prometheus text format and OpenMetrics text: a zero-copy streaming
//!   parser that reports each rejected line with its number and reason.
//! - `protofmt`: the delimited protobuf exposition format Go and Java Pushgateway
//!   clients push, flattened into samples.
//! - `pushgw`: Pushgateway-compatible groups (grouping keys, PUT/POST/DELETE semantics,
//!   optional time to live).
//! - `pushstore`: the durable state of pushed data (server-side counters and gauges,
//!   Pushgateway groups) in SQLite, with group commit.
//! - `textimport`: text-format bodies to sorted label sets with extra labels and metric
//!   families, bad lines named.
//! - `relabel`: Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`): the
//!   config entries as Prometheus' YAML has them, validated, compiled and applied.
//! - `influx`: InfluxDB line protocol (`/write`, `/api/v2/write`) mapped to series as
//!   VictoriaMetrics maps it (`{measurement}_{field}`, tags as labels, `db` label), each
//!   rejected line named with its number and reason.

pub mod exposition;
pub mod influx;
pub mod protofmt;
pub mod pushgw;
pub mod pushstore;
pub mod relabel;
pub mod remote_write;
pub mod scrape;
pub mod textimport;

/// A sample to store with its owned labels: sorted label pairs (`__name__` included),
/// time in Unix ms, value.
pub type Row = (Vec<(String, String)>, i64, f64);

/// Appends `rows` to `db`; the refusals the engine reported (samples outside the time
/// window, invalid labels), if any. Blocks on the write-ahead log.
pub fn append_rows<L: std::borrow::Borrow<[(String, String)]>>(
    db: &tsdb::Db,
    rows: &[(L, i64, f64)],
) -> Result<Option<String>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let labels: Vec<Vec<(&str, &str)>> = rows
        .iter()
        .map(|(l, _, _)| {
            l.borrow()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let samples: Vec<[tsdb::Sample; 1]> = rows
        .iter()
        .map(|(_, t, v)| [tsdb::Sample { t: *t, v: *v }])
        .collect();
    let batch = labels
        .iter()
        .zip(&samples)
        .map(|(l, s)| (l.as_slice(), s.as_slice()));
    match db.append(batch) {
        Ok(rep) if rep.rejected_total() == 0 => Ok(None),
        Ok(rep) => Ok(Some(format!(
            "{} samples refused by the store; first: {}",
            rep.rejected_total(),
            rep.first_rejection.unwrap_or_default()
        ))),
        Err(tsdb::AppendError::InvalidLabels(m)) => Ok(Some(m)),
        Err(e) => Err(e.to_string()),
    }
}
