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
pub mod pushgw;
pub mod pushstore;
pub mod relabel;
pub mod remote_write;
pub mod textimport;
