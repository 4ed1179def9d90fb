//! The peer comparison's load and its losslessness check (`benches/peers/`).
//!
//! The load is the node-exporter-like [`workload`](crate::workload), cut into remote_write
//! requests of `series_per_request` series × `points_per_request` points each and ordered
//! time-major: every series' steps `[s, s + k)` come before any series' step `s + k`, so
//! no receiver sees a sample far behind the newest one it holds (Prometheus refuses
//! samples more than about an hour older than its head). The check reads series back and
//! compares every value bit for bit with what was sent.

use std::collections::HashMap;

use collector::remote_write::encode_snappy;
use collector::remote_write::proto;

use crate::workload::{INTERVAL_MS, SERIES_PER_HOST, SeriesGen, generators, series_labels};

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub series: usize,
    pub points: usize,
    pub series_per_request: usize,
    pub points_per_request: usize,
    pub seed: u64,
    /// Start of the data, in milliseconds since the epoch; the last point lies about
    /// `points × 15 s` later.
    pub t0: i64,
}

impl Plan {
    /// Number of series chunks (requests per time window).
    pub fn chunks(&self) -> usize {
        self.series.div_ceil(self.series_per_request.max(1))
    }

    /// Number of time windows.
    pub fn windows(&self) -> usize {
        self.points.div_ceil(self.points_per_request.max(1))
    }

    /// Samples the whole load holds.
    pub fn samples(&self) -> u64 {
        self.series as u64 * self.points as u64
    }

    /// The latest timestamp any sample can have (phase and jitter included).
    pub fn max_time(&self) -> i64 {
        self.t0 + self.points as i64 * INTERVAL_MS + 2
    }
}

/// One encoded remote_write request.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Which block of `series_per_request` series it carries.
    pub chunk: usize,
    /// Which block of `points_per_request` steps it carries.
    pub window: usize,
    pub samples: u64,
    /// Protobuf, snappy-compressed.
    pub body: Vec<u8>,
}

/// Generates and encodes the whole load, in sending order (window by window, and within
/// a window chunk by chunk).
pub fn build_batches(plan: &Plan) -> Vec<Batch> {
    let mut gens = generators(plan.series, plan.seed);
    let labels: Vec<Vec<proto::Label>> = gens.iter().map(proto_labels).collect();
    let spr = plan.series_per_request.max(1);
    let ppr = plan.points_per_request.max(1);
    let mut out = Vec::with_capacity(plan.chunks() * plan.windows());
    for window in 0..plan.windows() {
        let steps = (window * ppr) as i64..((window + 1) * ppr).min(plan.points) as i64;
        for chunk in 0..plan.chunks() {
            let range = chunk * spr..((chunk + 1) * spr).min(plan.series);
            let timeseries: Vec<proto::TimeSeries> = range
                .map(|i| proto::TimeSeries {
                    labels: labels[i].clone(),
                    samples: steps
                        .clone()
                        .map(|step| {
                            let (timestamp, value) = gens[i].next(plan.t0, step);
                            proto::Sample { value, timestamp }
                        })
                        .collect(),
                })
                .collect();
            let samples = timeseries.iter().map(|s| s.samples.len() as u64).sum();
            out.push(Batch {
                chunk,
                window,
                samples,
                body: encode_snappy(&proto::WriteRequest { timeseries }),
            });
        }
    }
    out
}

fn proto_labels(g: &SeriesGen) -> Vec<proto::Label> {
    g.labels
        .iter()
        .map(|(name, value)| proto::Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// The samples series `i` of the load holds, in order.
pub fn expected_samples(plan: &Plan, i: usize) -> Vec<(i64, f64)> {
    let mut g = SeriesGen::new(i, plan.seed);
    (0..plan.points as i64)
        .map(|s| g.next(plan.t0, s))
        .collect()
}

/// Hosts whose series the check reads back: `count` of them spread evenly over the load
/// (first and last included), each contributing [`SERIES_PER_HOST`] series.
pub fn hosts_to_check(series: usize, count: usize) -> Vec<usize> {
    let hosts = series.div_ceil(SERIES_PER_HOST);
    if hosts == 0 || count == 0 {
        return Vec::new();
    }
    if count == 1 || hosts == 1 {
        return vec![0];
    }
    let mut v: Vec<usize> = (0..count.min(hosts))
        .map(|j| j * (hosts - 1) / (count.min(hosts) - 1))
        .collect();
    v.dedup();
    v
}

/// The `instance` label value of host `h`.
pub fn host_instance(h: usize) -> String {
    let (_, labels) = series_labels(h * SERIES_PER_HOST);
    labels
        .into_iter()
        .find(|(n, _)| n == "instance")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// Label pairs, sorted by name.
pub type Labels = Vec<(String, String)>;
/// `(timestamp ms, value)` pairs.
pub type Samples = Vec<(i64, f64)>;
/// A series as read back: sorted labels and samples.
pub type ReadSeries = (Labels, Samples);

/// How the values read back compare with those sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    /// Series expected.
    pub series: u64,
    /// Series expected but not found.
    pub series_missing: u64,
    /// Samples sent.
    pub expected: u64,
    /// Samples read back at their timestamp with the same value bits.
    pub exact: u64,
    /// Samples read back at their timestamp with other value bits.
    pub differ: u64,
    /// Samples not read back.
    pub missing: u64,
    /// Samples read back at a timestamp that was not sent.
    pub extra: u64,
}

impl Comparison {
    /// Compares the series of host `host` read back with what was sent, and adds the
    /// counts to `self`. Returns a description of the first difference, if any.
    pub fn add_host(&mut self, plan: &Plan, host: usize, got: &[ReadSeries]) -> Option<String> {
        let by_labels: HashMap<&Labels, &Samples> = got.iter().map(|(l, s)| (l, s)).collect();
        let mut first = None;
        let end = ((host + 1) * SERIES_PER_HOST).min(plan.series);
        for i in host * SERIES_PER_HOST..end {
            let (_, labels) = series_labels(i);
            let want = expected_samples(plan, i);
            self.series += 1;
            self.expected += want.len() as u64;
            let Some(have) = by_labels.get(&labels) else {
                self.series_missing += 1;
                self.missing += want.len() as u64;
                first.get_or_insert_with(|| format!("series {i} {labels:?} not found"));
                continue;
            };
            let have: HashMap<i64, f64> = have.iter().copied().collect();
            for &(t, v) in &want {
                match have.get(&t) {
                    Some(x) if x.to_bits() == v.to_bits() => self.exact += 1,
                    Some(x) => {
                        self.differ += 1;
                        first.get_or_insert_with(|| {
                            format!("series {i} at {t}: sent {v:?}, read {x:?}")
                        });
                    }
                    None => {
                        self.missing += 1;
                        first.get_or_insert_with(|| format!("series {i}: sample at {t} missing"));
                    }
                }
            }
            let sent: std::collections::HashSet<i64> = want.iter().map(|&(t, _)| t).collect();
            self.extra += have.keys().filter(|t| !sent.contains(t)).count() as u64;
        }
        first
    }
}

/// Parses a value as text: a decimal number in any notation, or `NaN`, `Inf`, `+Inf`,
/// `-Inf` (with or without JSON quotes).
pub fn parse_value(s: &str) -> Result<f64, String> {
    let s = s.trim().trim_matches('"');
    match s {
        "NaN" => Ok(f64::NAN),
        "Inf" | "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

fn labels_of(metric: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let obj = metric.as_object().ok_or("\"metric\" is not an object")?;
    let mut l: Vec<(String, String)> = obj
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    l.sort();
    Ok(l)
}

/// Parses one line of `/api/v1/export` (`{"metric":{…},"values":[…],"timestamps":[…]}`).
///
/// Values are read from the text of the line with Rust's float parsing (correctly
/// rounded), not through a JSON number type that could round them.
pub fn parse_export_line(line: &str) -> Result<ReadSeries, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let labels = labels_of(&v["metric"])?;
    let ts: Vec<i64> = v["timestamps"]
        .as_array()
        .ok_or("no \"timestamps\" array")?
        .iter()
        .map(|t| t.as_i64().ok_or_else(|| format!("timestamp {t}")))
        .collect::<Result<_, _>>()?;
    let start = line.find("\"values\":[").ok_or("no \"values\" array")? + "\"values\":[".len();
    let len = line[start..].find(']').ok_or("unterminated \"values\"")?;
    let text = &line[start..start + len];
    let values: Vec<f64> = if text.trim().is_empty() {
        Vec::new()
    } else {
        text.split(',').map(parse_value).collect::<Result<_, _>>()?
    };
    if values.len() != ts.len() {
        return Err(format!(
            "{} values but {} timestamps",
            values.len(),
            ts.len()
        ));
    }
    Ok((labels, ts.into_iter().zip(values).collect()))
}

/// Parses a Prometheus `/api/v1/query` answer whose result is a matrix (a range
/// selector): values are strings, timestamps seconds with millisecond decimals.
pub fn parse_prometheus_matrix(body: &str) -> Result<Vec<ReadSeries>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("query failed: {body:.300}"));
    }
    if v["data"]["resultType"] != "matrix" {
        return Err(format!("result is not a matrix: {body:.300}"));
    }
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().ok_or("no result array")? {
        let labels = labels_of(&s["metric"])?;
        let mut samples = Vec::new();
        for p in s["values"].as_array().ok_or("no values array")? {
            let t = p[0].as_f64().ok_or("bad timestamp")?;
            let x = parse_value(p[1].as_str().ok_or("value is not a string")?)?;
            samples.push(((t * 1000.0).round() as i64, x));
        }
        out.push((labels, samples));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::remote_write::proto::Message as _;

    fn plan() -> Plan {
        Plan {
            series: 250,
            points: 25,
            series_per_request: 100,
            points_per_request: 10,
            seed: 3,
            t0: 1_700_000_000_000,
        }
    }

    #[test]
    fn batches_are_time_major_and_hold_the_whole_load() {
        let p = plan();
        let b = build_batches(&p);
        assert_eq!(b.len(), p.chunks() * p.windows());
        assert_eq!(b.iter().map(|x| x.samples).sum::<u64>(), p.samples());
        let order: Vec<(usize, usize)> = b.iter().map(|x| (x.window, x.chunk)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        // The last window of series 249 holds its last 5 expected samples.
        let last = b.last().unwrap();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&last.body)
            .unwrap();
        let req = proto::WriteRequest::decode(raw.as_slice()).unwrap();
        let s = req.timeseries.last().unwrap();
        let want = expected_samples(&p, 249);
        let got: Vec<(i64, f64)> = s.samples.iter().map(|x| (x.timestamp, x.value)).collect();
        assert_eq!(got, want[20..]);
        assert!(want.iter().all(|&(t, _)| t <= p.max_time()));
    }

    #[test]
    fn comparison_counts_exact_differing_and_missing() {
        let p = plan();
        let mut got: Vec<ReadSeries> = (100..200)
            .map(|i| (series_labels(i).1, expected_samples(&p, i)))
            .collect();
        got[0].1[0].1 = f64::from_bits(got[0].1[0].1.to_bits() ^ 1);
        got[1].1.pop();
        got.pop();
        let mut c = Comparison::default();
        assert!(c.add_host(&p, 1, &got).is_some());
        assert_eq!(c.series, 100);
        assert_eq!(c.series_missing, 1);
        assert_eq!(c.expected, 2500);
        assert_eq!(c.differ, 1);
        assert_eq!(c.missing, 1 + 25);
        assert_eq!(c.exact, 2500 - 1 - 26);
    }

    #[test]
    fn parses_export_and_prometheus_answers() {
        let line = r#"{"metric":{"job":"node","__name__":"up"},"values":[0.1,1e+21,"NaN",-3],"timestamps":[1,2,3,4]}"#;
        let (l, s) = parse_export_line(line).unwrap();
        assert_eq!(l[0], ("__name__".into(), "up".into()));
        assert_eq!(s[0], (1, 0.1));
        assert_eq!(s[1], (2, 1e21));
        assert!(s[2].1.is_nan());
        assert_eq!(s[3], (4, -3.0));
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1700000000.123,"12345.67"]]}]}}"#;
        let m = parse_prometheus_matrix(body).unwrap();
        assert_eq!(m[0].1, vec![(1_700_000_000_123, 12345.67)]);
    }

    #[test]
    fn hosts_are_spread() {
        assert_eq!(hosts_to_check(10_000, 3), vec![0, 49, 99]);
        assert_eq!(hosts_to_check(100, 3), vec![0]);
        assert_eq!(host_instance(7), "host-00007.dc1.example.com:9100");
    }
}
