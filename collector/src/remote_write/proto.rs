//! Remote_write 1.0 messages as prost types, and the encoder senders use.
//!
//! These follow Prometheus' `prompb/types.proto` and `remote.proto`, restricted to what
//! remote_write 1.0 carries: field numbers are part of the wire format and must not change.
//! They serve senders (tests, load generators, benches) and are the reference the
//! hand-written decoder is checked against; the receiving path does not use them.

pub use prost::Message;

/// `prometheus.WriteRequest`. Field 3 (metadata) is not modelled; decoders skip it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`. Fields 3 (exemplars) and 4 (histograms) are not modelled.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, unique names, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// Proto3 leaves out a field equal to its default, and prost compares with `== 0.0`,
    /// so -0.0 is sent as 0.0. Every other value, NaN payloads included, is sent bit-exact.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Encodes a request as a remote_write body: protobuf, then snappy block format.
///
/// # Panics
///
/// If the encoded protobuf exceeds snappy's maximum block input (about 4 GiB), far beyond
/// what any receiver accepts.
pub fn encode_snappy(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("remote_write request exceeds snappy's maximum block size")
}
