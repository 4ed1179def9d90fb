//! Remote_write receive throughput: protobuf decoding with validation, and snappy
//! decompression plus decoding, in samples per second.
//!
//! The request is 2,000 series × 10 samples of the node-exporter-like workload (4 to 6
//! labels per series, 15 s apart), about what one Prometheus shard sends per request. The
//! prost-generated decoder on the same bytes is measured as a reference point.

use collector::remote_write::proto::{self, Message as _};
use collector::remote_write::{Limits, WriteRequest, decode, decode_into, decompress_into};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use minos_benches::workload::generators;

const SERIES: usize = 2000;
const PER_SERIES: i64 = 10;

fn request() -> proto::WriteRequest {
    let t0 = 1_700_000_000_000;
    let timeseries = generators(SERIES, 42)
        .into_iter()
        .map(|mut g| proto::TimeSeries {
            labels: g
                .labels
                .iter()
                .map(|(name, value)| proto::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            samples: (0..PER_SERIES)
                .map(|step| {
                    let (timestamp, value) = g.next(t0, step);
                    proto::Sample { value, timestamp }
                })
                .collect(),
        })
        .collect();
    proto::WriteRequest { timeseries }
}

fn remote_write(c: &mut Criterion) {
    let req = request();
    let raw = req.encode_to_vec();
    let body = proto::encode_snappy(&req);
    let samples = SERIES as u64 * PER_SERIES as u64;
    eprintln!(
        "request: {SERIES} series, {samples} samples, {} bytes protobuf, {} bytes snappy",
        raw.len(),
        body.len()
    );
    let limits = Limits::default();

    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(samples));

    g.bench_function("decode", |b| {
        b.iter(|| {
            let req = decode(std::hint::black_box(&raw), &limits).expect("decode");
            std::hint::black_box(req.num_samples())
        })
    });

    let mut reused = WriteRequest::default();
    g.bench_function("decode_reused", |b| {
        b.iter(|| {
            decode_into(std::hint::black_box(&raw), &limits, &mut reused).expect("decode");
            std::hint::black_box(reused.num_samples())
        })
    });

    let mut buf = Vec::new();
    g.bench_function("decompress_decode", |b| {
        b.iter(|| {
            decompress_into(std::hint::black_box(&body), &limits, &mut buf).expect("snappy");
            let req = decode(&buf, &limits).expect("decode");
            std::hint::black_box(req.num_samples())
        })
    });

    g.bench_function("prost_decode_reference", |b| {
        b.iter(|| {
            let req = proto::WriteRequest::decode(std::hint::black_box(&raw[..])).expect("prost");
            std::hint::black_box(req.timeseries.len())
        })
    });
    g.finish();
}

criterion_group!(benches, remote_write);
criterion_main!(benches);
