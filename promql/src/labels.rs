//! Label-set helpers: grouping keys, matching signatures and metric-name dropping.
//!
//! Everything here works on [`tsdb::Labels`] and keeps the pairs sorted, so results can
//! be compared and hashed directly.

use tsdb::Labels;
use tsdb::labels::METRIC_NAME;

/// Labels that describe the metric rather than the series (`__type__` and `__unit__`
/// from Prometheus' type-and-unit labels); they go wherever the name goes.
const METRIC_META: [&str; 2] = ["__type__", "__unit__"];

/// The labels without `__name__` (and the metric's `__type__`/`__unit__`).
pub fn drop_name(ls: &Labels) -> Labels {
    if !ls
        .iter()
        .any(|(n, _)| n == METRIC_NAME || METRIC_META.contains(&n))
    {
        return ls.clone();
    }
    Labels::from_sorted_unchecked(
        ls.iter()
            .filter(|(n, _)| *n != METRIC_NAME && !METRIC_META.contains(n)),
    )
}

/// Only the labels named in `names`.
pub fn keep_only(ls: &Labels, names: &[String]) -> Labels {
    Labels::from_sorted_unchecked(ls.iter().filter(|(n, _)| names.iter().any(|x| x == n)))
}

/// The labels not named in `names`, also without `__name__` when `and_name`.
pub fn without(ls: &Labels, names: &[String], and_name: bool) -> Labels {
    Labels::from_sorted_unchecked(ls.iter().filter(|(n, _)| {
        let named = names.iter().any(|x| x == n);
        !(named || (and_name && *n == METRIC_NAME))
    }))
}

/// The labels with `name` set to `value`; an empty value removes the label.
pub fn set(ls: &Labels, name: &str, value: &str) -> Labels {
    let mut v: Vec<(&str, &str)> = ls.iter().filter(|(n, _)| *n != name).collect();
    if !value.is_empty() {
        let pos = v.partition_point(|(n, _)| *n < name);
        v.insert(pos, (name, value));
    }
    Labels::from_sorted_unchecked(v.into_iter())
}

/// The key vector matching compares: the `on` labels, or all labels except the
/// `ignoring` ones and `__name__`.
pub fn signature(ls: &Labels, on: bool, names: &[String]) -> Labels {
    if on {
        keep_only(ls, names)
    } else {
        without(ls, names, true)
    }
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, or any UTF-8 in
/// Prometheus 3 when quoted; we accept any non-empty UTF-8 string like Prometheus 3).
pub fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn set_inserts_in_order_and_empty_deletes() {
        let a = l(&[("a", "1"), ("c", "3")]);
        assert_eq!(set(&a, "b", "2"), l(&[("a", "1"), ("b", "2"), ("c", "3")]));
        assert_eq!(set(&a, "a", ""), l(&[("c", "3")]));
        assert_eq!(set(&a, "c", "9"), l(&[("a", "1"), ("c", "9")]));
    }

    #[test]
    fn signature_ignores_name_unless_on() {
        let a = l(&[("__name__", "x"), ("a", "1"), ("b", "2")]);
        assert_eq!(signature(&a, false, &["b".into()]), l(&[("a", "1")]));
        assert_eq!(
            signature(&a, true, &["__name__".into()]),
            l(&[("__name__", "x")])
        );
    }
}
