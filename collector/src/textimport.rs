//! Text-format bodies turned into series ready to store: what the import endpoint and
//! the Pushgateway-compatible endpoint share.
//!
//! Each sample line becomes a label set sorted by name with `__name__` first-class,
//! `extra` labels added (they win over the line's own), empty values dropped (an empty
//! label is no label, as in Prometheus). A line is rejected, with its number and the
//! reason, when it does not parse, names a label twice or sets `__name__` among its
//! labels; the other lines are kept.
//!
//! Each sample also gets its *family*: the name of the `# TYPE` line it belongs to
//! (`http_request_duration_seconds` for its `_bucket`, `_sum` and `_count` series), or its
//! own name without one. The Pushgateway replaces pushed metrics by family.

use std::collections::HashMap;

use crate::exposition::{Entry, Format, MetricType, Parser};
use crate::pushgw::LabelSet;

/// One stored-to-be sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    /// Sorted by name, unique, `__name__` included, no empty values.
    pub labels: LabelSet,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// 1-based line.
    pub line: usize,
    pub family: String,
    /// The family's type from its `# TYPE` line (`untyped` without one).
    pub kind: MetricType,
}

/// A body's samples and its rejected lines.
#[derive(Debug, Default)]
pub struct TextBody {
    pub samples: Vec<TextSample>,
    /// `line N[, column C]: why`, in line order.
    pub errors: Vec<String>,
}

/// The family `name` belongs to and its type, given the `# TYPE` lines seen so far.
fn family_of(name: &str, types: &HashMap<String, MetricType>) -> (String, MetricType) {
    if let Some(k) = types.get(name) {
        return (name.to_string(), *k);
    }
    for suffix in [
        "_bucket", "_sum", "_count", "_created", "_total", "_info", "_gsum", "_gcount",
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(k) = types.get(base)
        {
            return (base.to_string(), *k);
        }
    }
    (name.to_string(), MetricType::Untyped)
}

/// Parses `body` (`format`: from the request's content type, or detected when `None`) and
/// adds `extra` to every sample.
pub fn parse(body: &[u8], format: Option<Format>, extra: &[(String, String)]) -> TextBody {
    let mut parser = match format {
        Some(f) => Parser::with_format(body, f),
        None => Parser::new(body),
    };
    let mut out = TextBody::default();
    let mut types: HashMap<String, MetricType> = HashMap::new();
    while let Some(entry) = parser.next_entry() {
        let s = match entry {
            Err(e) => {
                out.errors.push(e.to_string());
                continue;
            }
            Ok(Entry::Type { name, kind }) => {
                types.insert(name.into_owned(), kind);
                continue;
            }
            Ok(Entry::Sample(s)) => s,
            Ok(_) => continue,
        };
        let mut labels: LabelSet = Vec::with_capacity(s.labels.len() + extra.len() + 1);
        labels.push(("__name__".to_string(), s.name.to_string()));
        let mut bad = None;
        for (k, v) in s.labels.iter() {
            if k == "__name__" {
                bad = Some("a __name__ label next to the metric name".to_string());
                break;
            }
            if extra.iter().any(|(ek, _)| ek == k) {
                continue;
            }
            labels.push((k.to_string(), v.to_string()));
        }
        for (k, v) in extra {
            labels.push((k.clone(), v.clone()));
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        if bad.is_none()
            && let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0)
        {
            bad = Some(format!("label {:?} twice", w[0].0));
        }
        if let Some(why) = bad {
            out.errors.push(format!("line {}: {why}", s.line));
            continue;
        }
        labels.retain(|(_, v)| !v.is_empty());
        let (family, kind) = family_of(&s.name, &types);
        out.samples.push(TextSample {
            family,
            kind,
            labels,
            value: s.value,
            timestamp_ms: s.timestamp_ms,
            line: s.line,
        });
    }
    out
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
    fn samples_get_sorted_labels_extra_labels_and_families() {
        let body = "# TYPE rq histogram\nrq_bucket{le=\"1\",b=\"x\"} 3\nrq_count 4\nup{job=\"\"} 1 1700000000000\n";
        let t = parse(body.as_bytes(), None, &[("job".into(), "imp".into())]);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(
            t.samples[0].labels,
            ls(&[
                ("__name__", "rq_bucket"),
                ("b", "x"),
                ("job", "imp"),
                ("le", "1")
            ])
        );
        assert_eq!(t.samples[0].family, "rq");
        assert_eq!(t.samples[1].family, "rq");
        assert_eq!(t.samples[2].family, "up");
        assert_eq!(
            t.samples[2].labels,
            ls(&[("__name__", "up"), ("job", "imp")])
        );
        assert_eq!(t.samples[2].timestamp_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn bad_lines_are_named_and_the_rest_kept() {
        let body = "a 1\nb{x=\"1\",x=\"2\"} 2\nc{ 3\n{\"__name__\"=\"q\"} 4\nd{e=\"\"} 5\n";
        let t = parse(body.as_bytes(), None, &[]);
        let names: Vec<&str> = t.samples.iter().map(|s| s.labels[0].1.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(t.samples[1].labels, ls(&[("__name__", "d")]));
        assert_eq!(t.errors.len(), 3, "{:?}", t.errors);
        assert!(t.errors[0].starts_with("line 2:"), "{:?}", t.errors);
        assert!(t.errors[1].starts_with("line 3"), "{:?}", t.errors);
        assert!(t.errors[2].starts_with("line 4"), "{:?}", t.errors);
    }
}
