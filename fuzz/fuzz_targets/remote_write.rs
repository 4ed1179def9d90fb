//! Remote_write receiving on arbitrary bytes.
//!
//! The input is tried as a request body (snappy, then protobuf) and as raw protobuf.
//! Neither may panic. Whatever the decoder accepts must be well formed (spans inside the
//! vectors, labels sorted and unique, a metric name in every series) and must agree with
//! prost's decoding of the same bytes, sample values compared bit for bit.

#![no_main]

use collector::remote_write::proto::{self, Message as _};
use collector::remote_write::{self, Limits, WriteRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small caps keep each run fast; the code paths are the same as with the defaults.
    let limits = Limits {
        max_body_bytes: 1 << 20,
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    if let Ok(buf) = remote_write::decompress(data, &limits) {
        check(&buf, &limits);
    }
    check(data, &limits);
});

fn check(buf: &[u8], limits: &Limits) {
    let Ok(req) = remote_write::decode(buf, limits) else {
        return;
    };
    well_formed(&req);
    let reference = match proto::WriteRequest::decode(buf) {
        Ok(r) => r,
        Err(err) => panic!("prost rejects bytes the decoder accepted: {err}"),
    };
    let want: Vec<_> = reference
        .timeseries
        .iter()
        .filter(|ts| !ts.samples.is_empty())
        .map(|ts| {
            let labels: Vec<(&str, &str)> = ts
                .labels
                .iter()
                .filter(|l| !l.value.is_empty())
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let samples: Vec<(i64, u64)> = ts
                .samples
                .iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect();
            (labels, samples)
        })
        .collect();
    let got: Vec<_> = req
        .iter()
        .map(|(labels, samples)| {
            let samples: Vec<(i64, u64)> = samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
            (labels.to_vec(), samples)
        })
        .collect();
    assert_eq!(got, want);
}

fn well_formed(req: &WriteRequest<'_>) {
    let mut labels_end = 0;
    let mut samples_end = 0;
    for span in &req.series {
        assert_eq!(span.labels.start, labels_end);
        assert_eq!(span.samples.start, samples_end);
        assert!(span.samples.end > span.samples.start);
        labels_end = span.labels.end;
        samples_end = span.samples.end;
    }
    assert_eq!(labels_end as usize, req.labels.len());
    assert_eq!(samples_end as usize, req.samples.len());
    for (labels, _) in req.iter() {
        assert!(labels.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(labels.iter().all(|(n, v)| !n.is_empty() && !v.is_empty()));
        assert!(labels.iter().any(|&(n, _)| n == "__name__"));
    }
}
