//! Guard rails for pushed data: per-job limits on live series and on new series per
//! minute, so one team's label explosion cannot take the server down for everybody.
//!
//! A series belongs to the job in its `job` label (`""` without one). A series is *live*
//! while it was pushed within the last hour. A push whose new series would take its job
//! past `--push.max-series-per-job` live series, or past
//! `--push.max-new-series-per-minute` new series in the current minute, has those new
//! series refused (series the job already has are always taken), and the answer names
//! the limit. `GET /api/v1/status/push` reports the jobs with the most series.
//!
//! Applies to the import, InfluxDB, Pushgateway and counter endpoints; remote_write
//! senders (Prometheus, agents) are not limited here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;

/// The limits; 0 means none.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_series_per_job: usize,
    pub max_new_series_per_minute: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series_per_job: 100_000,
            max_new_series_per_minute: 20_000,
        }
    }
}

/// How long a series stays live without a push.
const LIVE_MS: i64 = 3_600_000;

#[derive(Default)]
struct JobStats {
    /// Series hash → Unix ms of its last push.
    series: HashMap<u64, i64>,
    minute: i64,
    new_this_minute: usize,
    new_total: u64,
    refused_total: u64,
    samples_total: u64,
}

/// One job's figures, for the status endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job: String,
    pub series: usize,
    pub new_this_minute: usize,
    pub new_total: u64,
    pub refused_total: u64,
    pub samples_total: u64,
}

/// The per-job accounting.
pub struct Guard {
    pub limits: Limits,
    jobs: Mutex<HashMap<String, JobStats>>,
}

fn series_hash(labels: &[(String, String)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

fn job_of(labels: &[(String, String)]) -> &str {
    labels
        .iter()
        .find(|(k, _)| k == "job")
        .map_or("", |(_, v)| v.as_str())
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Admits the series of `rows` (labels first): keeps the admitted rows and returns
    /// one message per job that had series refused. With `all_or_nothing`, a single
    /// refusal refuses every row and records nothing.
    pub fn admit<T>(
        &self,
        rows: &mut Vec<T>,
        labels_of: impl Fn(&T) -> &[(String, String)],
        now_ms: i64,
        all_or_nothing: bool,
    ) -> Vec<String> {
        let minute = now_ms.div_euclid(60_000);
        let mut jobs = self.jobs.lock();
        let mut refused: HashMap<String, (usize, &'static str)> = HashMap::new();
        let mut keep = Vec::with_capacity(rows.len());
        let mut touched: Vec<(String, u64, bool)> = Vec::with_capacity(rows.len());
        // Decide first, on a view that counts this request's own new series.
        let mut pending_new: HashMap<String, (usize, Vec<u64>)> = HashMap::new();
        for r in rows.iter() {
            let labels = labels_of(r);
            let job = job_of(labels).to_string();
            let h = series_hash(labels);
            let stats = jobs.entry(job.clone()).or_default();
            let known = stats.series.contains_key(&h)
                || pending_new.get(&job).is_some_and(|(_, v)| v.contains(&h));
            if known {
                keep.push(true);
                touched.push((job, h, false));
                continue;
            }
            let new_now = if stats.minute == minute {
                stats.new_this_minute
            } else {
                0
            };
            let pend = pending_new.entry(job.clone()).or_default();
            let why = if self.limits.max_series_per_job > 0
                && stats.series.len() + pend.0 >= self.limits.max_series_per_job
            {
                Some("--push.max-series-per-job")
            } else if self.limits.max_new_series_per_minute > 0
                && new_now + pend.0 >= self.limits.max_new_series_per_minute
            {
                Some("--push.max-new-series-per-minute")
            } else {
                None
            };
            match why {
                Some(limit) => {
                    let e = refused.entry(job.clone()).or_insert((0, limit));
                    e.0 += 1;
                    keep.push(false);
                }
                None => {
                    pend.0 += 1;
                    pend.1.push(h);
                    keep.push(true);
                    touched.push((job, h, true));
                }
            }
        }
        let messages: Vec<String> = refused
            .iter()
            .map(|(job, (n, limit))| {
                let stats = jobs.get(job);
                format!(
                    "job {job:?}: {n} new series refused by {limit} ({}; the job has {} live series, {} new this minute)",
                    match *limit {
                        "--push.max-series-per-job" => self.limits.max_series_per_job,
                        _ => self.limits.max_new_series_per_minute,
                    },
                    stats.map_or(0, |s| s.series.len()),
                    stats.map_or(0, |s| if s.minute == minute { s.new_this_minute } else { 0 }),
                )
            })
            .collect();
        for (job, (n, _)) in &refused {
            if let Some(s) = jobs.get_mut(job) {
                s.refused_total += *n as u64;
            }
        }
        if all_or_nothing && !refused.is_empty() {
            rows.clear();
            return messages;
        }
        for (job, h, new) in touched {
            let s = jobs.entry(job).or_default();
            if s.minute != minute {
                s.minute = minute;
                s.new_this_minute = 0;
            }
            if new && !s.series.contains_key(&h) {
                s.new_this_minute += 1;
                s.new_total += 1;
            }
            s.series.insert(h, now_ms);
            s.samples_total += 1;
        }
        let mut i = 0;
        rows.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        messages
    }

    /// Forgets series not pushed for an hour.
    pub fn prune(&self, now_ms: i64) {
        let mut jobs = self.jobs.lock();
        for s in jobs.values_mut() {
            s.series.retain(|_, t| now_ms - *t < LIVE_MS);
        }
        jobs.retain(|_, s| !s.series.is_empty() || s.refused_total > 0);
    }

    /// The `n` jobs with the most live series.
    pub fn top(&self, n: usize, now_ms: i64) -> Vec<JobReport> {
        let minute = now_ms.div_euclid(60_000);
        let jobs = self.jobs.lock();
        let mut v: Vec<JobReport> = jobs
            .iter()
            .map(|(job, s)| JobReport {
                job: job.clone(),
                series: s.series.len(),
                new_this_minute: if s.minute == minute {
                    s.new_this_minute
                } else {
                    0
                },
                new_total: s.new_total,
                refused_total: s.refused_total,
                samples_total: s.samples_total,
            })
            .collect();
        v.sort_by(|a, b| b.series.cmp(&a.series).then(a.job.cmp(&b.job)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(job: &str, i: usize) -> (Vec<(String, String)>, ()) {
        (
            vec![
                ("__name__".into(), "m".into()),
                ("i".into(), i.to_string()),
                ("job".into(), job.into()),
            ],
            (),
        )
    }

    #[test]
    fn a_job_past_its_series_limit_gets_only_its_known_series() {
        let g = Guard::new(Limits {
            max_series_per_job: 3,
            max_new_series_per_minute: 0,
        });
        let mut rows: Vec<_> = (0..5).map(|i| row("shop", i)).collect();
        let msgs = g.admit(&mut rows, |r| &r.0, 0, false);
        assert_eq!(rows.len(), 3);
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].contains("shop") && msgs[0].contains("max-series-per-job"),
            "{msgs:?}"
        );
        // Known series still pass; other jobs are not affected.
        let mut rows: Vec<_> = vec![row("shop", 0), row("shop", 9), row("other", 1)];
        let msgs = g.admit(&mut rows, |r| &r.0, 1000, false);
        assert_eq!(rows.len(), 2);
        assert_eq!(msgs.len(), 1);
        let top = g.top(10, 1000);
        assert_eq!(top[0].job, "shop");
        assert_eq!(top[0].series, 3);
        assert_eq!(top[0].refused_total, 3);
    }

    #[test]
    fn new_series_per_minute_are_limited_and_the_budget_renews() {
        let g = Guard::new(Limits {
            max_series_per_job: 0,
            max_new_series_per_minute: 2,
        });
        let mut rows: Vec<_> = (0..3).map(|i| row("j", i)).collect();
        g.admit(&mut rows, |r| &r.0, 0, false);
        assert_eq!(rows.len(), 2);
        let mut rows: Vec<_> = (3..6).map(|i| row("j", i)).collect();
        let msgs = g.admit(&mut rows, |r| &r.0, 59_000, true);
        assert!(rows.is_empty() && !msgs.is_empty(), "all or nothing");
        let mut rows: Vec<_> = (3..5).map(|i| row("j", i)).collect();
        assert!(
            g.admit(&mut rows, |r| &r.0, 61_000, false).is_empty(),
            "next minute"
        );
        assert_eq!(rows.len(), 2);
        g.prune(61_000 + LIVE_MS);
        let top = g.top(10, 0);
        assert_eq!(top[0].series, 0, "an hour without pushes: no live series");
        assert_eq!(top[0].refused_total, 4, "refusals stay reported");
    }
}
