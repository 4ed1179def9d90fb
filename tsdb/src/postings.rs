//! Postings: sorted lists of series references, and label matching over them.
//!
//! An index (a block's on-disk index, or the head's in-memory one) answers four questions
//! through [`IndexReader`]: which label names exist, which values a name takes, which
//! series carry one `name=value` pair, and which series exist at all. Each answer that
//! names series is a *postings list*: series references in strictly increasing order.
//! [`postings_for_matchers`] turns a set of label matchers into one postings list with
//! Prometheus' semantics, using only those questions and the set operations
//! [`intersect`], [`merge`] and [`subtract`] defined here. What a reference means is up to
//! the index that produced it.

use crate::error::StorageError;
use crate::matcher::{MatchOp, Matcher};

/// The questions label matching asks of an index.
///
/// Every list returned is sorted and duplicate-free; references are opaque numbers that
/// the same index resolves to series.
pub trait IndexReader {
    /// The values label `name` takes in at least one series, sorted; empty if none.
    fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError>;

    /// The series carrying `name=value`, sorted; empty if none.
    fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, StorageError>;

    /// Every series in the index, sorted.
    fn all_postings(&self) -> Result<Vec<u64>, StorageError>;

    /// The label names used by at least one series, sorted.
    fn label_names(&self) -> Result<Vec<String>, StorageError>;
}

/// The series that satisfy every matcher in `ms`, sorted.
///
/// Semantics are Prometheus': a series lacking a label has the value `""` for it, so a
/// matcher that matches the empty string (`l=""`, `l!="x"`, `l=~"x|"`, `l!~"x"`) also
/// selects series without the label. An empty matcher list selects nothing; a list whose
/// matchers all match the empty string selects from every series. (Rejecting the latter
/// as a query, as Prometheus does, is the API layer's business.)
///
/// Cost: one postings list per `=` matcher on a non-empty value; for other matchers, one
/// scan of the label's values plus one postings list per value that decides membership.
/// Matchers that must be set are intersected first (smallest list first), and the result
/// short-circuits to empty as soon as one of them selects nothing; matchers that match the
/// empty string are applied last by subtracting the series they reject.
pub fn postings_for_matchers(
    r: &dyn IndexReader,
    ms: &[Matcher],
) -> Result<Vec<u64>, StorageError> {
    if ms.is_empty() {
        return Ok(Vec::new());
    }
    // Matchers that reject "" can only select series that have the label: each gives a
    // positive list to intersect.
    let mut positive: Vec<Vec<u64>> = Vec::new();
    for m in ms.iter().filter(|m| !m.matches_empty()) {
        let list = match m.op {
            // A non-empty value (the empty one would match "").
            MatchOp::Equal => r.postings(&m.name, &m.value)?,
            _ => postings_for_values(r, &m.name, |v| m.matches(v))?,
        };
        if list.is_empty() {
            return Ok(Vec::new());
        }
        positive.push(list);
    }
    positive.sort_by_key(Vec::len);
    let mut acc = match positive.split_first() {
        Some((first, rest)) => {
            let mut acc = first.clone();
            for l in rest {
                acc = intersect(&acc, l);
                if acc.is_empty() {
                    return Ok(acc);
                }
            }
            acc
        }
        None => r.all_postings()?,
    };
    // Matchers that accept "" keep series without the label: remove the series whose
    // value they reject instead.
    for m in ms.iter().filter(|m| m.matches_empty()) {
        if acc.is_empty() {
            break;
        }
        let rejected = match m.op {
            // `l!="v"` with a non-empty v rejects exactly the series with l="v".
            MatchOp::NotEqual => r.postings(&m.name, &m.value)?,
            // `=~".*"` rejects nothing.
            MatchOp::Regex if m.value == ".*" => continue,
            _ => postings_for_values(r, &m.name, |v| !m.matches(v))?,
        };
        acc = subtract(&acc, &rejected);
    }
    Ok(acc)
}

/// The union of the postings of every value of `name` that `pred` accepts.
fn postings_for_values(
    r: &dyn IndexReader,
    name: &str,
    pred: impl Fn(&str) -> bool,
) -> Result<Vec<u64>, StorageError> {
    let mut lists = Vec::new();
    for v in r.label_values(name)? {
        if pred(&v) {
            lists.push(r.postings(name, &v)?);
        }
    }
    Ok(merge(&lists))
}

/// The references in both sorted lists, sorted.
///
/// O(min(a, b) · log(max(a, b) / min(a, b))): the shorter list drives and the longer one
/// is searched by galloping.
pub fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (small, mut large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    for &x in small {
        large = gallop(large, x);
        match large.first() {
            None => break,
            Some(&y) if y == x => {
                out.push(x);
                large = &large[1..];
            }
            Some(_) => {}
        }
    }
    out
}

/// The references in `a` that are not in `b`, sorted. Both inputs sorted.
pub fn subtract(a: &[u64], mut b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len());
    for &x in a {
        b = gallop(b, x);
        if b.first() != Some(&x) {
            out.push(x);
        }
    }
    out
}

/// The union of sorted lists, sorted and duplicate-free. O(n log n) in the total length.
pub fn merge<L: AsRef<[u64]>>(lists: &[L]) -> Vec<u64> {
    match lists {
        [] => Vec::new(),
        [one] => one.as_ref().to_vec(),
        _ => {
            let mut out: Vec<u64> = lists.iter().flat_map(|l| l.as_ref()).copied().collect();
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

/// The suffix of sorted `s` starting at the first element `>= x`: exponential search
/// from the front, then binary search within the last step.
fn gallop(s: &[u64], x: u64) -> &[u64] {
    if s.first().is_none_or(|&f| f >= x) {
        return s;
    }
    // Invariant: s[lo] < x.
    let mut lo = 0;
    let mut step = 1;
    while lo + step < s.len() && s[lo + step] < x {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(s.len());
    let idx = lo + 1 + s[lo + 1..hi].partition_point(|&y| y < x);
    &s[idx..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Labels;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// An index over a list of label sets; the reference of a series is its position.
    pub(crate) struct MemIndex {
        pub series: Vec<Labels>,
    }

    impl MemIndex {
        fn pairs(&self) -> BTreeMap<(String, String), Vec<u64>> {
            let mut m: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
            for (i, l) in self.series.iter().enumerate() {
                for (n, v) in l.iter() {
                    m.entry((n.into(), v.into())).or_default().push(i as u64);
                }
            }
            m
        }
    }

    impl IndexReader for MemIndex {
        fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError> {
            let set: BTreeSet<String> = self
                .pairs()
                .into_keys()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v)
                .collect();
            Ok(set.into_iter().collect())
        }
        fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, StorageError> {
            Ok(self
                .pairs()
                .remove(&(name.into(), value.into()))
                .unwrap_or_default())
        }
        fn all_postings(&self) -> Result<Vec<u64>, StorageError> {
            Ok((0..self.series.len() as u64).collect())
        }
        fn label_names(&self) -> Result<Vec<String>, StorageError> {
            let set: BTreeSet<String> = self.pairs().into_keys().map(|(n, _)| n).collect();
            Ok(set.into_iter().collect())
        }
    }

    /// The model of matcher semantics: a series is selected when every matcher accepts
    /// its value (`""` if absent); no matchers select nothing.
    pub(crate) fn brute_force(series: &[Labels], ms: &[Matcher]) -> Vec<u64> {
        if ms.is_empty() {
            return Vec::new();
        }
        (0..series.len())
            .filter(|&i| {
                ms.iter()
                    .all(|m| m.matches(series[i].get(&m.name).unwrap_or("")))
            })
            .map(|i| i as u64)
            .collect()
    }

    /// Random label sets over a small alphabet, so that matchers hit often.
    pub(crate) fn arb_labels() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map(
            prop::sample::select(vec!["__name__", "a", "b", "job", "é"]),
            prop::sample::select(vec!["x", "y", "xy", "1", "ñ", "long-value-0123456789"]),
            1..4,
        )
        .prop_map(|m| Labels::from_pairs(m).unwrap())
    }

    /// Random matchers, including ones that match the empty string.
    pub(crate) fn arb_matcher() -> impl Strategy<Value = Matcher> {
        let op = prop::sample::select(vec![
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::Regex,
            MatchOp::NotRegex,
        ]);
        let name = prop::sample::select(vec!["__name__", "a", "b", "job", "é", "missing"]);
        let value = prop::sample::select(vec![
            "", "x", "y", "xy", "ñ", ".*", ".+", "x.*", "x|", "x|y", "[xy]", "1|ñ", "z",
        ]);
        (op, name, value).prop_map(|(op, n, v)| Matcher::new(op, n, v).unwrap())
    }

    proptest! {
        #[test]
        fn matchers_select_what_the_model_selects(
            series in prop::collection::btree_set(arb_labels(), 0..30),
            ms in prop::collection::vec(arb_matcher(), 0..4),
        ) {
            let series: Vec<Labels> = series.into_iter().collect();
            let idx = MemIndex { series };
            let got = postings_for_matchers(&idx, &ms).unwrap();
            prop_assert_eq!(got, brute_force(&idx.series, &ms), "matchers {:?}", ms);
        }

        #[test]
        fn set_operations_agree_with_btreeset(
            a in prop::collection::btree_set(0u64..200, 0..80),
            b in prop::collection::btree_set(0u64..200, 0..80),
        ) {
            let av: Vec<u64> = a.iter().copied().collect();
            let bv: Vec<u64> = b.iter().copied().collect();
            prop_assert_eq!(intersect(&av, &bv), a.intersection(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(subtract(&av, &bv), a.difference(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(merge(&[&av, &bv]), a.union(&b).copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn empty_matcher_list_selects_nothing() {
        let idx = MemIndex {
            series: vec![Labels::from_pairs([("a", "1")]).unwrap()],
        };
        assert!(postings_for_matchers(&idx, &[]).unwrap().is_empty());
    }

    #[test]
    fn empty_value_matcher_selects_series_without_the_label() {
        let idx = MemIndex {
            series: vec![
                Labels::from_pairs([("a", "1")]).unwrap(),
                Labels::from_pairs([("a", "1"), ("b", "2")]).unwrap(),
            ],
        };
        let ms = [Matcher::eq("a", "1"), Matcher::eq("b", "")];
        assert_eq!(postings_for_matchers(&idx, &ms).unwrap(), vec![0]);
        let ms = [Matcher::new(MatchOp::NotEqual, "b", "2").unwrap()];
        assert_eq!(postings_for_matchers(&idx, &ms).unwrap(), vec![0]);
    }

    #[test]
    fn gallop_finds_first_not_less() {
        let s: Vec<u64> = (0..100).map(|x| x * 2).collect();
        for x in 0..202 {
            let rest = gallop(&s, x);
            assert_eq!(rest.len(), s.iter().filter(|&&y| y >= x).count(), "x={x}");
        }
    }
}
