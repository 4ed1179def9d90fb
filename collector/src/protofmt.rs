//! The protobuf exposition format (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`): what Go's and Java's
//! Pushgateway clients push by default.
//!
//! The body is a sequence of `MetricFamily` messages, each preceded by its length as a
//! varint. Families become samples the way Prometheus flattens them when it scrapes:
//! counters, gauges and untyped metrics one sample each under the family's name;
//! summaries `name{quantile="q"}`, `name_sum`, `name_count`; classic histograms
//! `name_bucket{le="b"}` (with a `+Inf` bucket holding the count when absent),
//! `name_sum`, `name_count`. Native histogram parts are not read. Numbers are written
//! as Go's `strconv.FormatFloat(v, 'g', -1, 64)` would, so `le` and `quantile` values
//! match what the text format carries.
//!
//! The messages are declared here with prost (a handful of fields, no `protoc`); an
//! unknown field is skipped, as protobuf readers do.

use crate::pushgw::LabelSet;
use prost::Message;

/// `io.prometheus.client.MetricFamily`, the fields Minos reads.
#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Quantile {
    #[prost(double, optional, tag = "1")]
    pub quantile: Option<f64>,
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
    #[prost(double, optional, tag = "4")]
    pub cumulative_count_float: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(double, optional, tag = "4")]
    pub sample_count_float: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Value>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Value>,
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Value>,
    #[prost(int64, optional, tag = "6")]
    pub timestamp_ms: Option<i64>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// One flattened sample: its family and type, sorted labels with `__name__`, value and
/// timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSample {
    pub family: String,
    pub kind: &'static str,
    pub labels: LabelSet,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// A float as Go's `FormatFloat(v, 'g', -1, 64)` writes it (`1`, `0.25`, `1e+06`, `+Inf`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    // Go's shortest 'g' switches to an exponent below 1e-4 and from 1e6 on.
    if (-4..6).contains(&exp) {
        // Shortest round-trip decimal, as Rust's Display gives it.
        format!("{v}")
    } else {
        let s = format!("{v:e}");
        // Rust writes `1e6`, `1.5e-7`; Go writes `1e+06`, `1.5e-07`.
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

const TYPES: [&str; 5] = ["counter", "gauge", "summary", "untyped", "histogram"];

/// Reads a delimited body. An error names the family (1-based) that could not be read.
pub fn parse(mut body: &[u8]) -> Result<Vec<FlatSample>, String> {
    let mut out = Vec::new();
    let mut n = 0usize;
    while !body.is_empty() {
        n += 1;
        let fam = MetricFamily::decode_length_delimited(&mut body)
            .map_err(|e| format!("metric family {n}: {e}"))?;
        let name = fam.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(format!("metric family {n}: no name"));
        }
        let kind = fam
            .r#type
            .and_then(|t| usize::try_from(t).ok())
            .and_then(|t| TYPES.get(t).copied())
            .unwrap_or("untyped");
        for m in &fam.metric {
            let mut base: LabelSet = Vec::with_capacity(m.label.len() + 2);
            for l in &m.label {
                base.push((
                    l.name.clone().unwrap_or_default(),
                    l.value.clone().unwrap_or_default(),
                ));
            }
            let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
                let mut labels = base.clone();
                labels.push(("__name__".into(), format!("{name}{suffix}")));
                if let Some((k, v)) = extra {
                    labels.push((k.into(), v));
                }
                labels.sort();
                out.push(FlatSample {
                    family: name.clone(),
                    kind,
                    labels,
                    value,
                    timestamp_ms: m.timestamp_ms,
                });
            };
            if let Some(s) = &m.summary {
                for q in &s.quantile {
                    push(
                        "",
                        Some(("quantile", go_float(q.quantile.unwrap_or(0.0)))),
                        q.value.unwrap_or(0.0),
                    );
                }
                push("_sum", None, s.sample_sum.unwrap_or(0.0));
                push("_count", None, s.sample_count.unwrap_or(0) as f64);
            } else if let Some(h) = &m.histogram {
                let count = h
                    .sample_count_float
                    .unwrap_or(h.sample_count.unwrap_or(0) as f64);
                let mut inf = false;
                for b in &h.bucket {
                    let ub = b.upper_bound.unwrap_or(f64::INFINITY);
                    inf |= ub == f64::INFINITY;
                    let c = b
                        .cumulative_count_float
                        .unwrap_or(b.cumulative_count.unwrap_or(0) as f64);
                    push("_bucket", Some(("le", go_float(ub))), c);
                }
                if !inf {
                    push("_bucket", Some(("le", "+Inf".into())), count);
                }
                push("_sum", None, h.sample_sum.unwrap_or(0.0));
                push("_count", None, count);
            } else {
                let v = m
                    .counter
                    .as_ref()
                    .or(m.gauge.as_ref())
                    .or(m.untyped.as_ref())
                    .and_then(|v| v.value)
                    .unwrap_or(0.0);
                push("", None, v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn floats_read_as_go_writes_them() {
        for (v, s) in [
            (1.0, "1"),
            (0.25, "0.25"),
            (1e6, "1e+06"),
            (1e21, "1e+21"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (f64::INFINITY, "+Inf"),
            (0.0, "0"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
    }

    #[test]
    fn delimited_families_flatten_as_prometheus_scrapes_them() {
        let fams = vec![
            MetricFamily {
                name: Some("jobs_total".into()),
                help: None,
                r#type: Some(0),
                metric: vec![Metric {
                    label: vec![LabelPair {
                        name: Some("kind".into()),
                        value: Some("a".into()),
                    }],
                    counter: Some(Value { value: Some(3.0) }),
                    ..Default::default()
                }],
            },
            MetricFamily {
                name: Some("latency".into()),
                help: None,
                r#type: Some(4),
                metric: vec![Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(4),
                        sample_sum: Some(2.5),
                        bucket: vec![Bucket {
                            cumulative_count: Some(3),
                            upper_bound: Some(1.0),
                            cumulative_count_float: None,
                        }],
                        sample_count_float: None,
                    }),
                    ..Default::default()
                }],
            },
        ];
        let mut body = Vec::new();
        for f in &fams {
            f.encode_length_delimited(&mut body).expect("encode");
        }
        let s = parse(&body).expect("parse");
        assert_eq!(
            s[0].labels,
            ls(&[("__name__", "jobs_total"), ("kind", "a")])
        );
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[0].kind, "counter");
        let names: Vec<String> = s[1..]
            .iter()
            .map(|x| format!("{:?}={}", x.labels, x.value))
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(
            s[1].labels,
            ls(&[("__name__", "latency_bucket"), ("le", "1")])
        );
        assert_eq!(
            s[2].labels,
            ls(&[("__name__", "latency_bucket"), ("le", "+Inf")])
        );
        assert_eq!(s[2].value, 4.0);
        assert_eq!(s[4].family, "latency");
        assert!(parse(&[0x05, 1, 2]).is_err());
    }
}
