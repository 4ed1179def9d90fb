//! Pushgateway-compatible groups: what batch jobs push to `/metrics/job/<job>{/<l>/<v>}`.
//!
//! The semantics are the Prometheus Pushgateway's, checked against the real one:
//! - A *grouping key* is the job and the label pairs of the URL path; a value may be
//!   given as `<label>@base64/<url-safe base64>` (padding optional; `=` alone is the
//!   empty value), so values can hold `/`.
//! - `PUT` replaces every metric of the group; `POST` replaces only the metric families
//!   (same name) it pushes; `DELETE` removes the group.
//! - Every pushed sample gets the grouping labels, which win over the sample's own
//!   labels of the same name (`job` included), and `instance=""` unless the key sets it.
//!   Labels with empty values are dropped from the stored series, as Prometheus does when
//!   it scrapes a Pushgateway with `honor_labels: true`.
//! - A push with a sample timestamp, a series twice, or a line that does not parse is
//!   refused whole (400) and changes no metric; the group's
//!   `push_failure_time_seconds` is set (the group is created if it did not exist).
//!   A successful push sets `push_time_seconds`. Both are exported per group.
//!
//! Beyond the Pushgateway: a group may carry a time to live. A group not pushed again
//! within its TTL is removed (its series go stale), instead of reporting the last value
//! of a job that stopped running forever.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Sorted, unique label pairs.
pub type LabelSet = Vec<(String, String)>;

/// The grouping key: `job` and the URL's other labels, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey(pub LabelSet);

fn decode_b64(v: &str) -> Result<String, String> {
    if v == "=" {
        return Ok(String::new());
    }
    let trimmed = v.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|e| format!("invalid base64 value {v:?}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("base64 value {v:?} is not UTF-8"))
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl GroupKey {
    /// Reads the path after `/metrics/`: `job/<job>{/<label>/<value>}`, each name optionally
    /// suffixed `@base64`. Segments are already percent-decoded.
    pub fn from_path(segments: &[&str]) -> Result<GroupKey, String> {
        if segments.len() < 2 || !segments.len().is_multiple_of(2) {
            return Err("expected /metrics/job/<job>{/<label>/<value>}".into());
        }
        let mut pairs: BTreeMap<String, String> = BTreeMap::new();
        for (i, kv) in segments.chunks(2).enumerate() {
            let (name, value) = (kv[0], kv[1]);
            let (name, value) = match name.strip_suffix("@base64") {
                Some(n) => (n, decode_b64(value)?),
                None => (name, value.to_string()),
            };
            if i == 0 && name != "job" {
                return Err(format!("the path must start with job/, not {name}/"));
            }
            if !valid_label_name(name) || name.starts_with("__") {
                return Err(format!("invalid label name {name:?} in the grouping key"));
            }
            if name == "job" && value.is_empty() {
                return Err("the job name must not be empty".into());
            }
            if pairs.insert(name.to_string(), value).is_some() {
                return Err(format!("label {name:?} twice in the grouping key"));
            }
        }
        Ok(GroupKey(pairs.into_iter().collect()))
    }

    /// The value of `job`.
    pub fn job(&self) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == "job")
            .map_or("", |(_, v)| v.as_str())
    }
}

/// One pushed sample: the metric name and its own labels (the name not among them).
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub name: String,
    pub labels: LabelSet,
    pub value: f64,
    /// The sample came with a timestamp (which the Pushgateway refuses).
    pub timestamped: bool,
    /// The family it belongs to (the name of its `# TYPE`, else its own name).
    pub family: String,
    /// The family's type as its `# TYPE` line gives it (`untyped` without one).
    pub kind: String,
    /// 1-based line in the pushed text, for errors.
    pub line: usize,
}

/// A group's stored metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Family name → its type and its series (full label sets with `__name__`, sorted)
    /// and values.
    pub families: BTreeMap<String, Family>,
    /// Unix seconds of the last successful push (0: none).
    pub push_time: f64,
    /// Unix seconds of the last refused push (0: none).
    pub push_failure_time: f64,
    /// Milliseconds without a push after which the group is removed.
    pub ttl_ms: Option<i64>,
    /// Unix ms of the last push, successful or not.
    pub last_push_ms: i64,
}

/// One metric family of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Family {
    pub kind: String,
    pub series: Vec<(LabelSet, f64)>,
}

/// How a push treats what the group already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `PUT`: everything is replaced.
    Replace,
    /// `POST`: the pushed families are replaced.
    Merge,
}

/// Builds the stored label set of a pushed sample.
fn series_labels(key: &GroupKey, p: &Pushed) -> LabelSet {
    let mut m: BTreeMap<&str, &str> = BTreeMap::new();
    m.insert("instance", "");
    for (k, v) in &p.labels {
        m.insert(k, v);
    }
    for (k, v) in &key.0 {
        m.insert(k, v);
    }
    m.insert("__name__", &p.name);
    m.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Group {
    /// Applies a push at `now_ms`; on refusal only `push_failure_time` changes.
    pub fn push(
        &mut self,
        key: &GroupKey,
        method: Method,
        samples: &[Pushed],
        now_ms: i64,
        ttl_ms: Option<i64>,
    ) -> Result<(), String> {
        self.last_push_ms = now_ms;
        let now_s = now_ms as f64 / 1000.0;
        let refuse = |g: &mut Group, why: String| {
            g.push_failure_time = now_s;
            Err(why)
        };
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for p in samples {
            if p.timestamped {
                return refuse(
                    self,
                    format!("line {}: pushed metrics must not have timestamps", p.line),
                );
            }
            if p.name == "push_time_seconds" || p.name == "push_failure_time_seconds" {
                return refuse(
                    self,
                    format!("line {}: {} is set by the server", p.line, p.name),
                );
            }
            let labels = series_labels(key, p);
            if !seen.insert(labels.clone()) {
                return refuse(
                    self,
                    format!("line {}: series {} pushed twice", p.line, show(&labels)),
                );
            }
            let f = families.entry(p.family.clone()).or_insert_with(|| Family {
                kind: p.kind.clone(),
                series: Vec::new(),
            });
            f.series.push((labels, p.value));
        }
        match method {
            Method::Replace => self.families = families,
            Method::Merge => self.families.extend(families),
        }
        self.push_time = now_s;
        self.ttl_ms = ttl_ms;
        Ok(())
    }

    /// Every series of the group with its value, `push_time_seconds` and
    /// `push_failure_time_seconds` included.
    pub fn series(&self, key: &GroupKey) -> Vec<(LabelSet, f64)> {
        let mut out: Vec<(LabelSet, f64)> = self
            .families
            .values()
            .flat_map(|f| f.series.iter().cloned())
            .collect();
        for (name, v) in [
            ("push_time_seconds", self.push_time),
            ("push_failure_time_seconds", self.push_failure_time),
        ] {
            let p = Pushed {
                name: name.into(),
                labels: Vec::new(),
                value: v,
                timestamped: false,
                family: name.into(),
                kind: "gauge".into(),
                line: 0,
            };
            out.push((series_labels(key, &p), v));
        }
        out
    }

    /// Whether the group outlived its TTL at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.ttl_ms
            .is_some_and(|ttl| now_ms.saturating_sub(self.last_push_ms) > ttl)
    }
}

/// Checks what the Pushgateway checks across all groups before it accepts a push: a
/// metric name has one type everywhere; no family is named like a series of a histogram
/// or summary (`rq_sum` next to histogram `rq`); no series appears twice.
pub fn consistent<'a>(
    groups: impl Iterator<Item = (&'a GroupKey, &'a Group)>,
) -> Result<(), String> {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    let mut series: BTreeSet<&LabelSet> = BTreeSet::new();
    let mut all: Vec<(&GroupKey, &Group)> = Vec::new();
    for (key, g) in groups {
        all.push((key, g));
        for (name, f) in &g.families {
            match kinds.get(name.as_str()) {
                Some(k) if *k != f.kind => {
                    return Err(format!(
                        "metric {name} is a {} in one group and a {} in another",
                        k, f.kind
                    ));
                }
                _ => {
                    kinds.insert(name, &f.kind);
                }
            }
            for (labels, _) in &f.series {
                if !series.insert(labels) {
                    return Err(format!(
                        "series {} pushed before in another group",
                        show(labels)
                    ));
                }
            }
        }
    }
    for (name, kind) in &kinds {
        let suffixes: &[&str] = match *kind {
            "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["_sum", "_count", "_created"],
            _ => &[],
        };
        for suffix in suffixes {
            let clash = format!("{name}{suffix}");
            if kinds.contains_key(clash.as_str()) {
                return Err(format!("metric {clash} collides with the {kind} {name}"));
            }
        }
    }
    Ok(())
}

/// `{a="b",...}` for messages.
pub fn show(labels: &LabelSet) -> String {
    let name = labels
        .iter()
        .find(|(k, _)| k == "__name__")
        .map_or("", |(_, v)| v.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, labels: &[(&str, &str)], value: f64, line: usize) -> Pushed {
        Pushed {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamped: false,
            family: name.into(),
            kind: "untyped".into(),
            line,
        }
    }

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grouping_keys_read_plain_and_base64_values() {
        let k = GroupKey::from_path(&["job", "j1", "inst", "i1"]).expect("key");
        assert_eq!(k.0, ls(&[("inst", "i1"), ("job", "j1")]));
        let k = GroupKey::from_path(&["job@base64", "am9iL3g=", "path@base64", "L3Zhci90bXA"])
            .expect("b64");
        assert_eq!(k.0, ls(&[("job", "job/x"), ("path", "/var/tmp")]));
        let k = GroupKey::from_path(&["job", "j", "instance@base64", "="]).expect("empty");
        assert_eq!(k.0, ls(&[("instance", ""), ("job", "j")]));
        for bad in [
            &["job"][..],
            &["inst", "x"],
            &["job", ""],
            &["job", "j", "1x", "v"],
            &["job", "j", "job", "k"],
            &["job", "j", "a@base64", "!!"],
        ] {
            assert!(GroupKey::from_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grouping_labels_win_and_empty_labels_go() {
        let key = GroupKey::from_path(&["job", "j1", "inst", "i1"]).expect("key");
        let mut g = Group::default();
        g.push(
            &key,
            Method::Replace,
            &[
                p("c", &[("job", "other")], 5.0, 1),
                p("d", &[("inst", "zz"), ("x", "1")], 7.0, 2),
            ],
            1000,
            None,
        )
        .expect("push");
        let s = g.series(&key);
        assert!(s.contains(&(ls(&[("__name__", "c"), ("inst", "i1"), ("job", "j1")]), 5.0)));
        assert!(s.contains(&(
            ls(&[("__name__", "d"), ("inst", "i1"), ("job", "j1"), ("x", "1")]),
            7.0
        )));
        assert!(s.contains(&(
            ls(&[
                ("__name__", "push_time_seconds"),
                ("inst", "i1"),
                ("job", "j1")
            ]),
            1.0
        )));
    }

    #[test]
    fn put_replaces_post_merges_and_refusals_change_nothing() {
        let key = GroupKey::from_path(&["job", "j"]).expect("key");
        let mut g = Group::default();
        g.push(
            &key,
            Method::Replace,
            &[p("a", &[], 1.0, 1), p("b", &[], 2.0, 2)],
            1000,
            None,
        )
        .expect("put");
        g.push(&key, Method::Merge, &[p("a", &[], 10.0, 1)], 2000, None)
            .expect("post");
        assert_eq!(g.families.len(), 2);
        assert_eq!(g.families["a"].series[0].1, 10.0);
        let before = g.families.clone();
        let mut ts = p("a", &[], 3.0, 4);
        ts.timestamped = true;
        let e = g
            .push(&key, Method::Replace, &[ts], 3000, None)
            .expect_err("timestamps");
        assert!(e.contains("line 4") && e.contains("timestamps"), "{e}");
        let e = g
            .push(
                &key,
                Method::Replace,
                &[p("g", &[], 1.0, 1), p("g", &[], 2.0, 2)],
                3000,
                None,
            )
            .expect_err("duplicate");
        assert!(e.contains("line 2"), "{e}");
        assert_eq!(g.families, before);
        assert_eq!(g.push_failure_time, 3.0);
        assert_eq!(g.push_time, 2.0);
        g.push(&key, Method::Replace, &[p("z", &[], 1.0, 1)], 4000, None)
            .expect("put");
        assert_eq!(g.families.keys().collect::<Vec<_>>(), ["z"]);
    }

    #[test]
    fn groups_are_checked_against_each_other() {
        let k1 = GroupKey::from_path(&["job", "a"]).expect("key");
        let k2 = GroupKey::from_path(&["job", "b"]).expect("key");
        let mut g1 = Group::default();
        let mut hist = p("rq_sum", &[], 1.0, 1);
        hist.family = "rq".into();
        hist.kind = "histogram".into();
        g1.push(&k1, Method::Replace, &[hist], 1, None)
            .expect("push");
        let mut g2 = Group::default();
        g2.push(&k2, Method::Replace, &[p("rq_sum", &[], 1.0, 1)], 1, None)
            .expect("push");
        let e = consistent([(&k1, &g1), (&k2, &g2)].into_iter()).expect_err("clash");
        assert!(e.contains("collides"), "{e}");
        let mut g3 = Group::default();
        let mut typed = p("rq", &[], 1.0, 1);
        typed.kind = "gauge".into();
        g3.push(&k2, Method::Replace, &[typed], 1, None)
            .expect("push");
        let e = consistent([(&k1, &g1), (&k2, &g3)].into_iter()).expect_err("types");
        assert!(e.contains("histogram"), "{e}");
        let mut g4 = Group::default();
        g4.push(&k2, Method::Replace, &[p("other", &[], 1.0, 1)], 1, None)
            .expect("push");
        assert!(consistent([(&k1, &g1), (&k2, &g4)].into_iter()).is_ok());
    }

    #[test]
    fn groups_expire_after_their_ttl() {
        let key = GroupKey::from_path(&["job", "j"]).expect("key");
        let mut g = Group::default();
        g.push(
            &key,
            Method::Replace,
            &[p("a", &[], 1.0, 1)],
            1000,
            Some(500),
        )
        .expect("push");
        assert!(!g.expired(1400));
        assert!(g.expired(1600));
        let mut forever = Group::default();
        forever
            .push(&key, Method::Replace, &[p("a", &[], 1.0, 1)], 1000, None)
            .expect("push");
        assert!(!forever.expired(i64::MAX));
    }
}
