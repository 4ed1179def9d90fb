//! Label sets: the identity of a series.
//!
//! A [`Labels`] is a set of `name=value` pairs sorted by name with unique names. It is
//! stored as one boxed byte string (`varint(len) name varint(len) value` repeated), so a
//! series in the head costs one allocation for its identity, whatever its label count.

use std::fmt;

/// The label name that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A sorted, duplicate-free set of labels in one allocation.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Labels {
    data: Box<[u8]>,
}

/// Errors building a label set from untrusted pairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("empty label name")]
    EmptyName,
    #[error("duplicate label name {0:?}")]
    DuplicateName(String),
}

impl Labels {
    /// Builds a label set from pairs in any order. Pairs with an empty value are dropped
    /// (an empty value means "label absent", as in Prometheus).
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Labels, LabelsError> {
        let mut v: Vec<(N, V)> = pairs
            .into_iter()
            .filter(|(_, val)| !val.as_ref().is_empty())
            .collect();
        v.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        for w in v.windows(2) {
            if w[0].0.as_ref() == w[1].0.as_ref() {
                return Err(LabelsError::DuplicateName(w[0].0.as_ref().to_string()));
            }
        }
        if v.iter().any(|(n, _)| n.as_ref().is_empty()) {
            return Err(LabelsError::EmptyName);
        }
        Ok(Self::from_sorted_unchecked(
            v.iter().map(|(n, val)| (n.as_ref(), val.as_ref())),
        ))
    }

    /// Builds a label set from pairs that the caller guarantees are sorted by name,
    /// unique and non-empty. Used on decoded on-disk data after validation.
    pub fn from_sorted_unchecked<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Labels {
        let mut data = Vec::with_capacity(64);
        for (n, v) in pairs {
            put_str(&mut data, n);
            put_str(&mut data, v);
        }
        Labels {
            data: data.into_boxed_slice(),
        }
    }

    /// Iterates the pairs in name order.
    pub fn iter(&self) -> LabelsIter<'_> {
        LabelsIter { rest: &self.data }
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Heap bytes used by this label set.
    pub fn heap_bytes(&self) -> usize {
        self.data.len()
    }

    /// A stable 64-bit hash of the pairs (xxh3 over `name 0xff value 0xff ...`); equal to
    /// [`hash_pairs`] over the same pairs. Safe to persist.
    pub fn stable_hash(&self) -> u64 {
        hash_pairs(self.iter())
    }

    /// True when these labels equal the given sorted pairs.
    pub fn eq_pairs<'a>(&self, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        let mut it = self.iter();
        loop {
            match (it.next(), pairs.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }

    /// The pairs as owned strings, for callers that need them.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }
}

impl Ord for Labels {
    /// Prometheus' order: pair by pair, by name, then by value, as strings; a set that is
    /// a prefix of another sorts first. Block indexes store series in this order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Hashes sorted label pairs the way [`Labels::stable_hash`] does.
pub fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (n, v) in pairs {
        h.update(n.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Iterator over the pairs of a [`Labels`].
pub struct LabelsIter<'a> {
    rest: &'a [u8],
}

impl<'a> LabelsIter<'a> {
    fn take_str(&mut self) -> &'a str {
        let mut n = 0usize;
        let mut shift = 0;
        let mut i = 0;
        loop {
            let b = self.rest[i];
            n |= ((b & 0x7f) as usize) << shift;
            i += 1;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        let bytes = &self.rest[i..i + n];
        self.rest = &self.rest[i + n..];
        // SAFETY-free: the bytes were copied from a `&str` by `put_str`, so they are UTF-8.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let n = self.take_str();
        let v = self.take_str();
        Some((n, v))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Labels {
    /// Prometheus notation: `name{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or("");
        write!(f, "{name}{{")?;
        let mut first = true;
        for (n, v) in self.iter().filter(|(n, _)| *n != METRIC_NAME) {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_sorted_and_empty_values_dropped() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "")]).unwrap();
        assert_eq!(
            l.to_vec(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
        assert_eq!(
            l.stable_hash(),
            hash_pairs([("a", "1"), ("b", "2")].into_iter())
        );
    }

    #[test]
    fn order_is_by_name_then_value_as_strings() {
        let a = Labels::from_pairs([("a", "10")]).unwrap();
        let b = Labels::from_pairs([("a", "9")]).unwrap();
        let c = Labels::from_pairs([("a", "9"), ("b", "1")]).unwrap();
        assert!(a < b);
        assert!(b < c);
        let long = Labels::from_pairs([("a", "x".repeat(200))]).unwrap();
        assert!(long < Labels::from_pairs([("a", "y")]).unwrap());
    }

    #[test]
    fn duplicate_names_are_rejected() {
        assert!(matches!(
            Labels::from_pairs([("a", "1"), ("a", "2")]),
            Err(LabelsError::DuplicateName(_))
        ));
    }

    #[test]
    fn long_values_round_trip() {
        let long = "x".repeat(100_000);
        let l = Labels::from_pairs([("__name__", "m"), ("v", long.as_str())]).unwrap();
        assert_eq!(l.get("v").unwrap().len(), 100_000);
        assert_eq!(l.metric_name(), Some("m"));
    }
}
