//! Tests of remote_write receiving: each validation rule, the wire-format edge cases, and
//! property tests that check the hand-written decoder against prost.

use proptest::prelude::*;

use super::proto::{self, Message as _};
use super::*;

/// Builds protobuf bytes field by field, for encodings prost would never produce.
#[derive(Default, Clone)]
struct Pb(Vec<u8>);

impl Pb {
    fn new() -> Self {
        Pb::default()
    }
    fn varint(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn key(self, field: u32, wire_type: u8) -> Self {
        self.varint(u64::from(field) << 3 | u64::from(wire_type))
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn bytes(self, field: u32, b: &[u8]) -> Self {
        self.key(field, 2).varint(b.len() as u64).raw(b)
    }
    fn msg(self, field: u32, m: Pb) -> Self {
        self.bytes(field, &m.0)
    }
    fn uint(self, field: u32, v: u64) -> Self {
        self.key(field, 0).varint(v)
    }
    fn fixed64(self, field: u32, v: u64) -> Self {
        self.key(field, 1).raw(&v.to_le_bytes())
    }
    fn fixed32(self, field: u32, v: u32) -> Self {
        self.key(field, 5).raw(&v.to_le_bytes())
    }
    fn label(self, name: &str, value: &str) -> Self {
        self.msg(
            1,
            Pb::new()
                .bytes(1, name.as_bytes())
                .bytes(2, value.as_bytes()),
        )
    }
    fn sample(self, t: i64, v: f64) -> Self {
        self.msg(2, Pb::new().fixed64(1, v.to_bits()).uint(2, t as u64))
    }
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> proto::TimeSeries {
    proto::TimeSeries {
        labels: labels
            .iter()
            .map(|&(n, v)| proto::Label {
                name: n.into(),
                value: v.into(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| proto::Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
    }
}

fn request(series: Vec<proto::TimeSeries>) -> Vec<u8> {
    proto::WriteRequest { timeseries: series }.encode_to_vec()
}

/// One series as plain data: labels and `(timestamp, value bits)` samples.
type Plain = (Vec<(String, String)>, Vec<(i64, u64)>);

/// What decoding `req` must produce: series with samples, empty-valued labels dropped.
/// Prost does not encode a value equal to 0.0, so -0.0 arrives as 0.0: this is the
/// content of `req` after an encoding round trip through prost.
fn expected(req: &proto::WriteRequest) -> Vec<Plain> {
    req.timeseries
        .iter()
        .filter(|ts| !ts.samples.is_empty())
        .map(|ts| {
            (
                ts.labels
                    .iter()
                    .filter(|l| !l.value.is_empty())
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                ts.samples
                    .iter()
                    .map(|s| {
                        let v = if s.value == 0.0 { 0.0 } else { s.value };
                        (s.timestamp, v.to_bits())
                    })
                    .collect(),
            )
        })
        .collect()
}

fn content(req: &WriteRequest<'_>) -> Vec<Plain> {
    req.iter()
        .map(|(labels, samples)| {
            (
                labels
                    .iter()
                    .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
                samples.iter().map(|s| (s.t, s.v.to_bits())).collect(),
            )
        })
        .collect()
}

fn decode_default(buf: &[u8]) -> Result<WriteRequest<'_>, DecodeError> {
    decode(buf, &Limits::default())
}

/// Decodes one series with the given labels and one sample, expecting a series error.
fn series_error(labels: &[(&str, &str)]) -> SeriesError {
    series_error_with(labels, &Limits::default())
}

fn series_error_with(labels: &[(&str, &str)], limits: &Limits) -> SeriesError {
    let buf = request(vec![series(labels, &[(1, 1.0)])]);
    match decode(&buf, limits) {
        Err(DecodeError::Series { index: 0, problem }) => problem,
        other => panic!("expected a series error, got {other:?}"),
    }
}

fn wire_error(buf: &[u8]) -> (usize, WireError) {
    match decode_default(buf) {
        Err(DecodeError::Protobuf { offset, problem }) => (offset, problem),
        other => panic!("expected a protobuf error, got {other:?}"),
    }
}

const UP: (&str, &str) = ("__name__", "up");

// ---- decoding -------------------------------------------------------------------------

#[test]
fn single_series_decodes_with_borrowed_labels() {
    let buf = request(vec![series(
        &[UP, ("instance", "h:9100"), ("job", "node")],
        &[(1000, 1.0), (2000, 0.0)],
    )]);
    let req = decode_default(&buf).unwrap();
    assert_eq!(req.num_samples(), 2);
    assert_eq!(req.num_series(), 1);
    let (labels, samples) = req.iter().next().unwrap();
    assert_eq!(labels, &[UP, ("instance", "h:9100"), ("job", "node")]);
    assert_eq!(
        samples,
        &[
            tsdb::Sample { t: 1000, v: 1.0 },
            tsdb::Sample { t: 2000, v: 0.0 }
        ]
    );
    let range = buf.as_ptr_range();
    assert!(
        range.contains(&labels[1].1.as_ptr()),
        "values borrow from the buffer"
    );
}

#[test]
fn snappy_body_round_trips() {
    let req = proto::WriteRequest {
        timeseries: vec![series(&[UP, ("job", "a")], &[(5, 2.5)])],
    };
    let body = encode_snappy(&req);
    let buf = decompress(&body, &Limits::default()).unwrap();
    assert_eq!(content(&decode_default(&buf).unwrap()), expected(&req));
}

#[test]
fn empty_request_decodes_to_nothing() {
    let req = decode_default(&[]).unwrap();
    assert!(req.is_empty());
    assert_eq!(req.num_samples(), 0);
}

#[test]
fn special_floats_and_negative_timestamps_are_bit_exact() {
    let values = [
        f64::from_bits(tsdb::STALE_NAN_BITS),
        f64::NAN,
        f64::from_bits(0xfff8_0000_0000_0001),
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        f64::from_bits(1),
    ];
    let samples: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i64::MIN + i as i64, v))
        .collect();
    // By hand: prost leaves out a value equal to 0.0, which includes -0.0.
    let mut ts = Pb::new().label("__name__", "up");
    for &(t, v) in &samples {
        ts = ts.sample(t, v);
    }
    let buf = Pb::new().msg(1, ts).0;
    let req = decode_default(&buf).unwrap();
    let got: Vec<(i64, u64)> = req.samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
    let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(got, want);
}

#[test]
fn series_without_samples_are_skipped() {
    let buf = request(vec![
        series(&[UP, ("job", "a")], &[]),
        series(&[UP, ("job", "b")], &[(1, 1.0)]),
        series(&[UP, ("job", "c")], &[]),
    ]);
    let req = decode_default(&buf).unwrap();
    assert_eq!(req.num_series(), 1);
    assert_eq!(req.labels, vec![UP, ("job", "b")]);
}

#[test]
fn series_without_samples_are_still_validated() {
    let buf = request(vec![series(&[("job", "a")], &[])]);
    assert!(matches!(
        decode_default(&buf),
        Err(DecodeError::Series {
            index: 0,
            problem: SeriesError::MissingMetricName
        })
    ));
}

#[test]
fn error_index_counts_every_series_on_the_wire() {
    let buf = request(vec![
        series(&[UP], &[]),
        series(&[UP], &[(1, 1.0)]),
        series(&[UP, ("b", "1"), ("a", "1")], &[(1, 1.0)]),
    ]);
    let err = decode_default(&buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "series 2: label names not sorted: \"a\" after \"b\""
    );
}

#[test]
fn one_bad_series_rejects_the_whole_request() {
    let buf = request(vec![
        series(&[UP], &[(1, 1.0)]),
        series(&[("job", "x")], &[(1, 1.0)]),
    ]);
    let mut req = WriteRequest::default();
    assert!(decode_into(&buf, &Limits::default(), &mut req).is_err());
    assert!(req.labels.is_empty() && req.samples.is_empty() && req.series.is_empty());
}

#[test]
fn decode_into_replaces_previous_contents() {
    let a = request(vec![series(&[UP, ("job", "a")], &[(1, 1.0), (2, 2.0)])]);
    let b = request(vec![series(&[UP, ("job", "b")], &[(3, 3.0)])]);
    let mut req = WriteRequest::default();
    decode_into(&a, &Limits::default(), &mut req).unwrap();
    decode_into(&b, &Limits::default(), &mut req).unwrap();
    assert_eq!(req.labels, vec![UP, ("job", "b")]);
    assert_eq!(req.samples, vec![tsdb::Sample { t: 3, v: 3.0 }]);
}

#[test]
fn recycle_rebinds_a_request_to_a_new_buffer() {
    let mut req = WriteRequest::default();
    for job in ["a", "b", "c"] {
        let buf = request(vec![series(&[UP, ("job", job)], &[(1, 1.0)])]);
        let mut current = req.recycle();
        decode_into(&buf, &Limits::default(), &mut current).unwrap();
        assert_eq!(current.labels[1], ("job", job));
        req = current.recycle();
    }
    assert!(req.is_empty());
}

#[test]
fn clear_empties_the_request() {
    let buf = request(vec![series(&[UP], &[(1, 1.0)])]);
    let mut req = decode_default(&buf).unwrap();
    req.clear();
    assert_eq!(req, WriteRequest::default());
}

#[test]
fn iter_tolerates_hand_edited_spans() {
    let mut req = WriteRequest::default();
    req.series.push(SeriesSpan {
        labels: 0..5,
        samples: 3..9,
    });
    let (labels, samples) = req.iter().next().unwrap();
    assert!(labels.is_empty() && samples.is_empty());
}

// ---- label validation ----------------------------------------------------------------

#[test]
fn unsorted_label_names_are_rejected() {
    let err = series_error(&[UP, ("zone", "a"), ("job", "b")]);
    assert_eq!(
        err.to_string(),
        "label names not sorted: \"job\" after \"zone\""
    );
}

#[test]
fn duplicate_label_names_are_rejected() {
    assert_eq!(
        series_error(&[UP, ("job", "a"), ("job", "b")]),
        SeriesError::DuplicateLabelName { name: "job".into() }
    );
}

#[test]
fn empty_label_name_is_rejected() {
    assert_eq!(series_error(&[("", "x"), UP]), SeriesError::EmptyLabelName);
}

#[test]
fn label_names_outside_the_grammar_are_rejected() {
    for name in ["0abc", "a-b", "a:b", "a b", "é", "a.b"] {
        assert_eq!(
            series_error(&[UP, (name, "x")]),
            SeriesError::InvalidLabelName { name: name.into() },
            "{name}"
        );
    }
}

#[test]
fn label_names_inside_the_grammar_are_accepted() {
    let buf = request(vec![series(
        &[("A9", "1"), ("Z_", "1"), ("_", "1"), UP, ("a0", "1")],
        &[(1, 1.0)],
    )]);
    assert_eq!(decode_default(&buf).unwrap().labels.len(), 5);
}

#[test]
fn missing_metric_name_is_rejected() {
    assert_eq!(
        series_error(&[("job", "a")]),
        SeriesError::MissingMetricName
    );
    assert_eq!(
        SeriesError::MissingMetricName.to_string(),
        "missing metric name (label __name__)"
    );
}

#[test]
fn empty_metric_name_counts_as_missing() {
    assert_eq!(
        series_error(&[("__name__", ""), ("job", "a")]),
        SeriesError::MissingMetricName
    );
}

#[test]
fn metric_names_outside_the_grammar_are_rejected() {
    for name in ["0up", "up-time", "up time", "ü"] {
        assert_eq!(
            series_error(&[("__name__", name)]),
            SeriesError::InvalidMetricName { name: name.into() },
            "{name}"
        );
    }
}

#[test]
fn metric_names_may_contain_colons() {
    for name in ["job:rate:5m", ":a", "_x9"] {
        let buf = request(vec![series(&[("__name__", name)], &[(1, 1.0)])]);
        assert_eq!(
            decode_default(&buf).unwrap().labels,
            vec![("__name__", name)]
        );
    }
}

#[test]
fn empty_label_values_are_dropped() {
    let buf = request(vec![series(
        &[UP, ("a", ""), ("job", "x"), ("z", "")],
        &[(1, 1.0)],
    )]);
    assert_eq!(decode_default(&buf).unwrap().labels, vec![UP, ("job", "x")]);
}

#[test]
fn empty_valued_labels_still_count_for_order_and_name_checks() {
    assert!(matches!(
        series_error(&[UP, ("b", ""), ("a", "1")]),
        SeriesError::LabelsNotSorted { .. }
    ));
    assert!(matches!(
        series_error(&[UP, ("a-b", "")]),
        SeriesError::InvalidLabelName { .. }
    ));
}

#[test]
fn invalid_utf8_value_is_rejected() {
    let buf = Pb::new()
        .msg(
            1,
            Pb::new()
                .label("__name__", "up")
                .msg(1, Pb::new().bytes(1, b"job").bytes(2, b"a\xffb"))
                .sample(1, 1.0),
        )
        .0;
    let err = decode_default(&buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "series 0: value of label \"job\" is not valid utf-8"
    );
}

#[test]
fn repeated_label_fields_keep_the_last_occurrence() {
    let label = Pb::new()
        .bytes(1, b"x")
        .bytes(2, b"first")
        .bytes(1, b"job")
        .bytes(2, b"last");
    let buf = Pb::new()
        .msg(
            1,
            Pb::new()
                .label("__name__", "up")
                .msg(1, label)
                .sample(1, 1.0),
        )
        .0;
    assert_eq!(
        decode_default(&buf).unwrap().labels,
        vec![UP, ("job", "last")]
    );
}

#[test]
fn overwritten_fields_that_are_not_utf8_are_rejected() {
    for label in [
        Pb::new().bytes(1, b"\xff").bytes(1, b"job").bytes(2, b"v"),
        Pb::new().bytes(1, b"job").bytes(2, b"\xff").bytes(2, b"v"),
    ] {
        let buf = Pb::new()
            .msg(
                1,
                Pb::new()
                    .label("__name__", "up")
                    .msg(1, label)
                    .sample(1, 1.0),
            )
            .0;
        assert!(matches!(
            decode_default(&buf),
            Err(DecodeError::Series {
                problem: SeriesError::InvalidLabelName { .. }
                    | SeriesError::LabelValueNotUtf8 { .. },
                ..
            })
        ));
    }
}

#[test]
fn too_many_labels_are_rejected_and_empty_values_do_not_count() {
    let limits = Limits {
        max_labels_per_series: 3,
        ..Limits::default()
    };
    let at_limit = request(vec![series(
        &[UP, ("a", "1"), ("b", ""), ("c", "1")],
        &[(1, 1.0)],
    )]);
    assert_eq!(decode(&at_limit, &limits).unwrap().labels.len(), 3);
    let err = series_error_with(&[UP, ("a", "1"), ("b", "1"), ("c", "1")], &limits);
    assert_eq!(err, SeriesError::TooManyLabels { limit: 3 });
    assert_eq!(err.to_string(), "more than 3 labels");
}

#[test]
fn long_label_names_are_rejected() {
    let limits = Limits {
        max_label_name_len: 8,
        ..Limits::default()
    };
    let ok = request(vec![series(&[UP, ("abcdefgh", "1")], &[(1, 1.0)])]);
    assert!(decode(&ok, &limits).is_ok());
    assert_eq!(
        series_error_with(&[UP, ("abcdefghi", "1")], &limits).to_string(),
        "label name \"abcdefghi\" of 9 bytes exceeds limit of 8"
    );
}

#[test]
fn long_label_values_are_rejected() {
    let limits = Limits {
        max_label_value_len: 4,
        ..Limits::default()
    };
    let ok = request(vec![series(&[UP, ("job", "abcd")], &[(1, 1.0)])]);
    assert!(decode(&ok, &limits).is_ok());
    assert_eq!(
        series_error_with(&[UP, ("job", "abcde")], &limits).to_string(),
        "value of label \"job\" of 5 bytes exceeds limit of 4"
    );
}

#[test]
fn error_messages_quote_at_most_a_snippet_of_the_input() {
    let long = format!("0{}", "x".repeat(10_000));
    let msg = series_error(&[UP, (long.as_str(), "1")]).to_string();
    assert!(msg.len() < 3 * error::SNIPPET_LEN, "{msg}");
    assert!(msg.contains("…\""), "{msg}");
    assert_eq!(
        error::snippet("é".repeat(40).as_bytes()).chars().count(),
        33
    );
    assert_eq!(error::snippet(b"\xff\xfe"), "\u{fffd}\u{fffd}");
}

// ---- request limits ------------------------------------------------------------------

#[test]
fn too_many_series_is_too_large() {
    let limits = Limits {
        max_series_per_request: 2,
        ..Limits::default()
    };
    let two = request(vec![series(&[UP], &[]), series(&[UP], &[(1, 1.0)])]);
    assert!(decode(&two, &limits).is_ok());
    let three = request(vec![
        series(&[UP], &[]),
        series(&[UP], &[]),
        series(&[UP], &[(1, 1.0)]),
    ]);
    let err = decode(&three, &limits).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(err.to_string(), "request has more than 2 series");
}

#[test]
fn body_over_limit_is_too_large() {
    let limits = Limits {
        max_body_bytes: 10,
        ..Limits::default()
    };
    let err = decompress(&[0u8; 11], &limits).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(err.to_string(), "body of 11 bytes exceeds limit of 10");
}

#[test]
fn announced_decompressed_size_over_limit_is_rejected_before_allocating() {
    // A snappy header announcing 70,000,000 bytes, and nothing else.
    let mut header = Pb::new().varint(70_000_000).0;
    header.push(0);
    let mut out = Vec::new();
    let err = decompress_into(&header, &Limits::default(), &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(
        err.to_string(),
        "decompressed body of 70000000 bytes exceeds limit of 33554432"
    );
    assert_eq!(out.capacity(), 0);
}

#[test]
fn decode_rejects_buffers_over_the_decompressed_limit() {
    let limits = Limits {
        max_decompressed_bytes: 4,
        ..Limits::default()
    };
    let err = decode(&[0u8; 5], &limits).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}

#[test]
fn corrupt_snappy_is_bad_data() {
    let body = encode_snappy(&proto::WriteRequest {
        timeseries: vec![series(&[UP], &[(1, 1.0)])],
    });
    for bad in [&[][..], &body[..body.len() - 1], &[0x05, 0xff][..]] {
        let err = decompress(bad, &Limits::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadData, "{err}");
        assert!(err.to_string().starts_with("snappy: "), "{err}");
    }
}

#[test]
fn decompress_into_reuses_and_replaces_the_buffer() {
    let small = encode_snappy(&proto::WriteRequest {
        timeseries: vec![series(&[UP], &[(1, 1.0)])],
    });
    let mut out = vec![7u8; 4096];
    let cap = out.capacity();
    decompress_into(&small, &Limits::default(), &mut out).unwrap();
    assert_eq!(out, decompress(&small, &Limits::default()).unwrap());
    assert_eq!(out.capacity(), cap);
    assert!(decompress_into(b"\x05\xff", &Limits::default(), &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn every_error_has_a_kind() {
    let bad = [
        decode_default(&[0x08]).unwrap_err(),
        decode_default(&request(vec![series(&[], &[])])).unwrap_err(),
        decompress(&[0x05, 0xff], &Limits::default()).unwrap_err(),
    ];
    for err in bad {
        assert_eq!(err.kind(), ErrorKind::BadData, "{err}");
    }
}

// ---- wire format ---------------------------------------------------------------------

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let unknown = |pb: Pb, field: u32| {
        pb.uint(field, u64::MAX)
            .fixed64(field + 1, 7)
            .fixed32(field + 2, 7)
            .bytes(field + 3, b"\xff\x00anything")
            .key(field + 4, 3)
            .uint(1, 5)
            .bytes(2, b"x")
            .key(3, 3)
            .fixed32(1, 1)
            .key(3, 4)
            .key(field + 4, 4)
    };
    let label =
        |n: &str, v: &str| unknown(Pb::new().bytes(1, n.as_bytes()), 10).bytes(2, v.as_bytes());
    let sample = unknown(Pb::new().fixed64(1, 2.5f64.to_bits()), 3).uint(2, 42);
    // Exemplars (3) and native histograms (4) inside a series.
    let exemplar = Pb::new()
        .label("trace_id", "abc")
        .fixed64(2, 1.0f64.to_bits());
    let histogram = Pb::new().uint(1, 3).fixed64(3, 0).uint(15, 1000);
    let ts = Pb::new()
        .msg(1, label("__name__", "up"))
        .msg(3, exemplar)
        .msg(2, sample)
        .msg(4, histogram);
    let ts = unknown(ts, 5).msg(1, label("job", "x"));
    // Metadata (3) in the request, before and after the series.
    let metadata = Pb::new().uint(1, 1).bytes(2, b"up").bytes(4, b"help");
    let buf = unknown(Pb::new().msg(3, metadata.clone()), 4)
        .msg(1, ts)
        .msg(3, metadata)
        .0;
    let req = decode_default(&buf).unwrap();
    assert_eq!(req.labels, vec![UP, ("job", "x")]);
    assert_eq!(req.samples, vec![tsdb::Sample { t: 42, v: 2.5 }]);
}

#[test]
fn fields_may_arrive_in_any_order() {
    let sample = Pb::new().uint(2, 7).fixed64(1, 1.5f64.to_bits());
    let ts = Pb::new()
        .msg(2, sample)
        .msg(1, Pb::new().bytes(2, b"up").bytes(1, b"__name__"))
        .sample(8, 2.0)
        .label("job", "x");
    let buf = Pb::new().msg(1, ts).0;
    let req = decode_default(&buf).unwrap();
    assert_eq!(req.labels, vec![UP, ("job", "x")]);
    assert_eq!(
        req.samples,
        vec![tsdb::Sample { t: 7, v: 1.5 }, tsdb::Sample { t: 8, v: 2.0 }]
    );
}

#[test]
fn missing_sample_fields_default_to_zero() {
    let ts = Pb::new().label("__name__", "up").msg(2, Pb::new());
    let buf = Pb::new().msg(1, ts).0;
    let req = decode_default(&buf).unwrap();
    assert_eq!(req.samples, vec![tsdb::Sample { t: 0, v: 0.0 }]);
}

#[test]
fn known_field_with_wrong_wire_type_is_rejected() {
    let ts = Pb::new().label("__name__", "up").uint(2, 1);
    let buf = Pb::new().msg(1, ts).0;
    let err = decode_default(&buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protobuf: TimeSeries.2 has wire type 0, expected 2 at byte 18"
    );
    let sample = Pb::new().fixed32(1, 0);
    let buf = Pb::new()
        .msg(1, Pb::new().label("__name__", "up").msg(2, sample))
        .0;
    assert!(matches!(
        wire_error(&buf).1,
        WireError::UnexpectedWireType {
            message: "Sample",
            field: 1,
            wire_type: 5,
            expected: 1
        }
    ));
    assert!(matches!(
        wire_error(&Pb::new().uint(1, 1).0).1,
        WireError::UnexpectedWireType {
            message: "WriteRequest",
            ..
        }
    ));
}

#[test]
fn truncated_varint_is_rejected_with_its_offset() {
    let buf = Pb::new().fixed64(9, 0).raw(&[0x80, 0x80]).0;
    let err = decode_default(&buf).unwrap_err();
    assert_eq!(err.to_string(), "protobuf: truncated varint at byte 9");
}

#[test]
fn varint_longer_than_64_bits_is_rejected() {
    let mut buf = Pb::new().key(9, 0).0;
    buf.extend_from_slice(&[0xff; 9]);
    buf.push(0x02);
    assert_eq!(wire_error(&buf), (1, WireError::VarintOverflow));
    let mut buf = Pb::new().key(9, 0).0;
    buf.extend_from_slice(&[0xff; 11]);
    assert_eq!(wire_error(&buf).1, WireError::VarintOverflow);
    // The largest 10-byte varint is fine.
    let mut buf = Pb::new().key(9, 0).0;
    buf.extend_from_slice(&[0xff; 9]);
    buf.push(0x01);
    assert!(decode_default(&buf).is_ok());
}

#[test]
fn field_number_zero_is_rejected() {
    assert_eq!(wire_error(&[0x00]), (0, WireError::FieldNumberZero));
}

#[test]
fn field_key_beyond_32_bits_is_rejected() {
    let buf = Pb::new().varint(1 << 35).0;
    assert!(matches!(
        wire_error(&buf).1,
        WireError::KeyOutOfRange { .. }
    ));
}

#[test]
fn wire_types_6_and_7_are_rejected() {
    for wt in [6, 7] {
        let buf = Pb::new().key(9, wt).0;
        assert_eq!(
            wire_error(&buf).1,
            WireError::InvalidWireType {
                field: 9,
                wire_type: wt
            }
        );
    }
}

#[test]
fn length_past_end_of_message_is_rejected() {
    let buf = Pb::new().key(1, 2).varint(10).raw(&[0; 3]).0;
    assert_eq!(
        wire_error(&buf),
        (
            1,
            WireError::LengthPastEnd {
                len: 10,
                available: 3
            }
        )
    );
    // A label whose length runs past its series, though not past the buffer.
    let inner = Pb::new().key(1, 2).varint(20).raw(b"__name__");
    let buf = Pb::new().msg(1, inner).raw(&[0; 30]).0;
    assert!(matches!(
        wire_error(&buf).1,
        WireError::LengthPastEnd { .. }
    ));
}

#[test]
fn truncated_fixed_fields_are_rejected() {
    assert_eq!(
        wire_error(&Pb::new().key(9, 1).raw(&[0; 7]).0).1,
        WireError::TruncatedFixed { width: 8 }
    );
    assert_eq!(
        wire_error(&Pb::new().key(9, 5).raw(&[0; 3]).0).1,
        WireError::TruncatedFixed { width: 4 }
    );
}

#[test]
fn groups_must_be_balanced() {
    let unmatched = Pb::new().key(9, 4).0;
    assert_eq!(
        wire_error(&unmatched).1,
        WireError::UnmatchedEndGroup { field: 9 }
    );
    let mismatched = Pb::new().key(9, 3).key(8, 4).0;
    assert_eq!(
        wire_error(&mismatched).1,
        WireError::UnmatchedEndGroup { field: 8 }
    );
    let unterminated = Pb::new().key(9, 3).uint(1, 1).0;
    assert_eq!(
        wire_error(&unterminated),
        (0, WireError::UnterminatedGroup { field: 9 })
    );
    // A group may not close outside the message it opened in.
    let ts = Pb::new().label("__name__", "up").key(9, 3);
    let buf = Pb::new().msg(1, ts).key(9, 4).0;
    assert!(matches!(
        wire_error(&buf).1,
        WireError::UnterminatedGroup { field: 9 }
    ));
}

#[test]
fn nested_groups_are_skipped_up_to_a_depth_limit() {
    let nest = |depth: u32| {
        let mut pb = Pb::new();
        for _ in 0..depth {
            pb = pb.key(9, 3);
        }
        for _ in 0..depth {
            pb = pb.key(9, 4);
        }
        pb.0
    };
    assert!(decode_default(&nest(wire::MAX_GROUP_DEPTH)).is_ok());
    assert_eq!(
        wire_error(&nest(wire::MAX_GROUP_DEPTH + 1)).1,
        WireError::GroupsTooDeep {
            limit: wire::MAX_GROUP_DEPTH
        }
    );
}

#[test]
fn prost_decodes_what_encode_snappy_writes() {
    let req = proto::WriteRequest {
        timeseries: vec![series(&[UP], &[(1, 1.0)])],
    };
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&encode_snappy(&req))
        .unwrap();
    assert_eq!(proto::WriteRequest::decode(&raw[..]).unwrap(), req);
}

// ---- properties ----------------------------------------------------------------------

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::from_bits(tsdb::STALE_NAN_BITS)),
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        any::<f64>(),
    ]
}

fn arb_series() -> impl Strategy<Value = proto::TimeSeries> {
    let labels = proptest::collection::btree_map(
        "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
        prop_oneof![Just(String::new()), "\\PC{0,12}"],
        0..8,
    );
    let metric = "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}";
    let samples = proptest::collection::vec((any::<i64>(), arb_value()), 0..6);
    (labels, metric, samples).prop_map(|(mut labels, metric, samples)| {
        labels.insert("__name__".to_owned(), metric);
        proto::TimeSeries {
            labels: labels
                .into_iter()
                .map(|(name, value)| proto::Label { name, value })
                .collect(),
            samples: samples
                .into_iter()
                .map(|(timestamp, value)| proto::Sample { value, timestamp })
                .collect(),
        }
    })
}

fn arb_request() -> impl Strategy<Value = proto::WriteRequest> {
    proptest::collection::vec(arb_series(), 0..8)
        .prop_map(|timeseries| proto::WriteRequest { timeseries })
}

/// If this decoder accepts bytes, prost accepts them too and they mean the same.
fn agrees_with_prost(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(req) = decode_default(buf) {
        let reference = proto::WriteRequest::decode(buf);
        prop_assert!(
            reference.is_ok(),
            "prost rejects accepted bytes: {reference:?}"
        );
        if let Ok(reference) = reference {
            prop_assert_eq!(content(&req), expected(&reference));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn prop_prost_encoding_decodes_to_the_same_content(req in arb_request()) {
        let buf = req.encode_to_vec();
        let decoded = decode_default(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(content(&decoded), expected(&req));
        prop_assert_eq!(decoded.num_samples(), req.timeseries.iter().map(|t| t.samples.len()).sum::<usize>());
    }

    #[test]
    fn prop_snappy_bodies_decode_to_the_same_content(req in arb_request()) {
        let body = encode_snappy(&req);
        let buf = decompress(&body, &Limits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = decode_default(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(content(&decoded), expected(&req));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_default(&bytes);
        if let Ok(buf) = decompress(&bytes, &Limits::default()) {
            let _ = decode_default(&buf);
        }
        agrees_with_prost(&bytes)?;
    }

    #[test]
    fn prop_mutated_requests_never_panic_and_agree_with_prost(
        req in arb_request(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = req.encode_to_vec();
        if !buf.is_empty() {
            for (at, byte) in edits {
                let i = at.index(buf.len());
                buf[i] = byte;
            }
        }
        agrees_with_prost(&buf)?;
    }

    #[test]
    fn prop_truncated_bodies_are_errors_or_whole_series_prefixes(req in arb_request()) {
        let buf = req.encode_to_vec();
        // Protobuf has no end marker: cutting between two series leaves a valid request.
        let boundaries: Vec<usize> = (0..=req.timeseries.len())
            .map(|n| proto::WriteRequest { timeseries: req.timeseries[..n].to_vec() }.encoded_len())
            .collect();
        for cut in 0..buf.len() {
            match decode_default(&buf[..cut]) {
                Err(_) => prop_assert!(!boundaries.contains(&cut), "cut at boundary {} rejected", cut),
                Ok(got) => {
                    let n = boundaries.iter().position(|&b| b == cut);
                    prop_assert!(n.is_some(), "cut at {} inside a series accepted", cut);
                    let prefix = proto::WriteRequest { timeseries: req.timeseries[..n.unwrap_or(0)].to_vec() };
                    prop_assert_eq!(content(&got), expected(&prefix));
                }
            }
        }
        let body = encode_snappy(&req);
        for cut in 0..body.len() {
            prop_assert!(decompress(&body[..cut], &Limits::default()).is_err(), "snappy cut at {}", cut);
        }
    }
}

#[test]
fn varint_tail_agrees_with_the_loop_decoder() {
    let mut values: Vec<u64> = (0..64).map(|b| 1u64 << b).collect();
    values.extend((0..64).map(|b| (1u64 << b) - 1));
    values.extend([
        1_700_000_000_000,
        0x00ff_ffff_ffff_ffff,
        127,
        128,
        16_383,
        16_384,
    ]);
    for v in values {
        let enc = Pb::new().varint(v).0;
        if enc.len() > 8 {
            continue;
        }
        let mut padded = vec![0xaa; 8 - enc.len()];
        padded.extend_from_slice(&enc);
        let word = u64::from_le_bytes(padded.try_into().unwrap());
        assert_eq!(parse::varint_tail(word, enc.len()), Some(v), "{v}");
    }
    // A non-final byte without its continuation bit, or a final byte with one.
    assert_eq!(parse::varint_tail(0x0101_0000_0000_0000, 2), None);
    assert_eq!(parse::varint_tail(0x8181_0000_0000_0000, 2), None);
}
