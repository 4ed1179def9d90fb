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

pub mod remote_write;
