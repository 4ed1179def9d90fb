//! Statistics for status pages: how many series and label pairs the database holds,
//! which metric names and labels account for most of them ([`Db::cardinality`]), and
//! what the head holds ([`Db::head_stats`]).
//!
//! Cardinality is computed from one pass over the label sets of every stored series
//! (head and blocks), so its cost grows with the number of series, not with samples.
//! Head statistics visit every head series once, under its lock, without decoding.

use std::collections::HashMap;

use crate::db::{Db, QueryError};
use crate::labels::METRIC_NAME;
use crate::matcher::{MatchOp, Matcher};

/// What [`Db::cardinality`] reports. Each list holds at most `limit` entries, largest
/// first (ties by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cardinality {
    /// Series with a metric name.
    pub num_series: u64,
    /// Distinct `name=value` pairs over those series.
    pub num_label_pairs: u64,
    /// Series per metric name.
    pub series_count_by_metric_name: Vec<(String, u64)>,
    /// Distinct values per label name.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Bytes of the distinct values of each label name.
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    /// Series per `name=value` pair.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

/// What the head (the live, in-memory part of the database) holds, as Prometheus
/// reports it under `headStats`. Data frozen for a flush but not yet in a block is
/// not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Chunks: every series' full (memory-mapped) chunks and its open chunk.
    pub chunks: u64,
    /// The oldest and newest sample held, out-of-order samples included; `None` when
    /// the head holds no sample (before the first append, right after a flush).
    pub time_range: Option<(i64, i64)>,
}

fn top(map: HashMap<String, u64>, limit: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(limit);
    v
}

impl Db {
    /// What the head holds now: its chunks and the time range of its samples.
    pub fn head_stats(&self) -> HeadStats {
        self.head().stats()
    }

    /// Cardinality of everything stored, with the `limit` largest entries of each list.
    pub fn cardinality(&self, limit: usize) -> Result<Cardinality, QueryError> {
        let all = match Matcher::new(MatchOp::Regex, METRIC_NAME, ".+") {
            Ok(m) => m,
            // The pattern is a constant that compiles; no series can match otherwise.
            Err(_) => return Ok(Cardinality::default()),
        };
        let series = self.series(&[all], i64::MIN, i64::MAX)?;
        let mut by_name: HashMap<&str, u64> = HashMap::new();
        let mut by_pair: HashMap<(&str, &str), u64> = HashMap::new();
        for l in &series {
            if let Some(n) = l.metric_name() {
                *by_name.entry(n).or_default() += 1;
            }
            for pair in l.iter() {
                *by_pair.entry(pair).or_default() += 1;
            }
        }
        let mut values: HashMap<String, u64> = HashMap::new();
        let mut bytes: HashMap<String, u64> = HashMap::new();
        for (n, v) in by_pair.keys() {
            *values.entry(n.to_string()).or_default() += 1;
            *bytes.entry(n.to_string()).or_default() += v.len() as u64;
        }
        Ok(Cardinality {
            num_series: series.len() as u64,
            num_label_pairs: by_pair.len() as u64,
            series_count_by_metric_name: top(
                by_name
                    .into_iter()
                    .map(|(k, c)| (k.to_string(), c))
                    .collect(),
                limit,
            ),
            label_value_count_by_label_name: top(values, limit),
            memory_in_bytes_by_label_name: top(bytes, limit),
            series_count_by_label_value_pair: top(
                by_pair
                    .into_iter()
                    .map(|((n, v), c)| (format!("{n}={v}"), c))
                    .collect(),
                limit,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Db, Options, Sample};

    #[test]
    fn counts_series_pairs_and_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(
            dir.path(),
            Options {
                background: false,
                ..Default::default()
            },
        )
        .expect("open");
        let t = crate::now_ms();
        let s = [Sample { t, v: 1.0 }];
        let a: [(&str, &str); 2] = [("__name__", "up"), ("job", "api")];
        let b: [(&str, &str); 2] = [("__name__", "up"), ("job", "db")];
        let c: [(&str, &str); 2] = [("__name__", "x"), ("job", "api")];
        db.append([(&a[..], &s[..]), (&b[..], &s[..]), (&c[..], &s[..])])
            .expect("append");
        let card = db.cardinality(10).expect("cardinality");
        assert_eq!(card.num_series, 3);
        assert_eq!(card.num_label_pairs, 4);
        assert_eq!(
            card.series_count_by_metric_name,
            vec![("up".to_string(), 2), ("x".to_string(), 1)]
        );
        assert_eq!(
            card.label_value_count_by_label_name,
            vec![("__name__".to_string(), 2), ("job".to_string(), 2)]
        );
        assert_eq!(
            card.memory_in_bytes_by_label_name,
            vec![("job".to_string(), 5), ("__name__".to_string(), 3)]
        );
        assert_eq!(
            card.series_count_by_label_value_pair[0],
            ("__name__=up".to_string(), 2)
        );
        assert_eq!(
            db.cardinality(1)
                .expect("cardinality")
                .series_count_by_metric_name
                .len(),
            1
        );
        db.close().expect("close");
    }

    #[test]
    fn head_stats_count_full_and_open_chunks_until_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(
            dir.path(),
            Options {
                background: false,
                ..Default::default()
            },
        )
        .expect("open");
        assert_eq!(db.head_stats(), super::HeadStats::default());
        let t0 = crate::now_ms() - 3_600_000;
        // 250 samples: two full chunks of 120 and an open one of 10.
        let a: Vec<Sample> = (0..250)
            .map(|i| Sample {
                t: t0 + i * 1000,
                v: 1.0,
            })
            .collect();
        // An out-of-order sample older than everything else.
        let b = [
            Sample {
                t: t0 + 10_000,
                v: 1.0,
            },
            Sample {
                t: t0 - 5000,
                v: 2.0,
            },
        ];
        let la: [(&str, &str); 1] = [("__name__", "a")];
        let lb: [(&str, &str); 1] = [("__name__", "b")];
        db.append([(&la[..], &a[..]), (&lb[..], &b[..])])
            .expect("append");
        let st = db.head_stats();
        assert_eq!(st.chunks, 3 + 1);
        assert_eq!(st.time_range, Some((t0 - 5000, t0 + 249_000)));
        db.flush().expect("flush");
        assert_eq!(db.head_stats(), super::HeadStats::default());
        db.close().expect("close");
    }
}
