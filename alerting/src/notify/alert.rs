/*!
Defines [`Alert`], what the rule engine hands to the notifier, and its [`Fingerprint`].

The fingerprint is persisted (SQLite keys, history rows, acknowledgements) and shown
to users, so it is computed with xxh3, whose values are fixed by its specification,
over a byte encoding of the sorted label set defined here.
*/

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A label set, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// Most labels, and most annotations, of one alert.
pub const MAX_LABELS: usize = 64;
/// Longest label (name and value together) and generator URL, in bytes.
pub const MAX_LABEL_BYTES: usize = 4096;
/// Longest annotation (name and value together), in bytes.
pub const MAX_ANNOTATION_BYTES: usize = 65_536;

/// An alert as the rule engine sends it (Alertmanager's postable alert).
///
/// Times are Unix milliseconds. An alert whose `ends_at` is at or before the current
/// time is resolved. `ends_at: None` means "firing until told otherwise": the notifier
/// then sets the end to the time of receipt plus `global.resolve_timeout`, extended by
/// every new `put` of the same alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Alert {
    /// Identifying labels; the fingerprint is computed from them.
    pub labels: Labels,
    /// Non-identifying information (summary, description, runbook_url...).
    #[serde(default)]
    pub annotations: Labels,
    /// When the alert started firing; 0 means "now" (the time of receipt).
    #[serde(default)]
    pub starts_at: i64,
    /// When the alert ends (or ended); see the type's documentation.
    #[serde(default)]
    pub ends_at: Option<i64>,
    /// A link to the expression that produced the alert.
    #[serde(default)]
    pub generator_url: String,
}

impl Alert {
    /// The fingerprint of the alert's label set.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.labels)
    }

    /// Checks what Alertmanager checks on receipt: labels present and well formed.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("alert has no labels".into());
        }
        if self.labels.len() > MAX_LABELS || self.annotations.len() > MAX_LABELS {
            return Err(format!(
                "more than {MAX_LABELS} labels or annotations ({} and {})",
                self.labels.len(),
                self.annotations.len()
            ));
        }
        if let Some((n, _)) = self
            .labels
            .iter()
            .find(|(n, v)| n.len() + v.len() > MAX_LABEL_BYTES)
        {
            return Err(format!("label {n}: longer than {MAX_LABEL_BYTES} bytes"));
        }
        if let Some((n, _)) = self
            .annotations
            .iter()
            .find(|(n, v)| n.len() + v.len() > MAX_ANNOTATION_BYTES)
        {
            return Err(format!(
                "annotation {n}: longer than {MAX_ANNOTATION_BYTES} bytes"
            ));
        }
        if self.generator_url.len() > MAX_LABEL_BYTES {
            return Err(format!("generator URL longer than {MAX_LABEL_BYTES} bytes"));
        }
        for (name, value) in &self.labels {
            if !crate::notify::matcher::valid_label_name(name) {
                return Err(format!("invalid label name {name:?}"));
            }
            if value.is_empty() {
                return Err(format!("label {name} has an empty value"));
            }
        }
        for name in self.annotations.keys() {
            if !crate::notify::matcher::valid_label_name(name) {
                return Err(format!("invalid annotation name {name:?}"));
            }
        }
        if let Some(end) = self.ends_at
            && self.starts_at != 0
            && end < self.starts_at
        {
            return Err("ends_at is before starts_at".into());
        }
        Ok(())
    }
}

/// A stable 64-bit hash of a label set, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 {
            return Err(format!("fingerprint {s:?}: expected up to 16 hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|_| format!("fingerprint {s:?}: expected up to 16 hex digits"))
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.to_string()
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The fingerprint of `labels`: xxh3-64 over `name 0xff value 0xff` for each label in
/// name order (0xff never occurs in UTF-8, so the encoding is unambiguous).
pub fn fingerprint(labels: &Labels) -> Fingerprint {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, value) in labels {
        h.update(name.as_bytes());
        h.update(&[0xff]);
        h.update(value.as_bytes());
        h.update(&[0xff]);
    }
    Fingerprint(h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprint_is_stable_and_order_independent() {
        let a = labels(&[("alertname", "HighCPU"), ("instance", "web-01")]);
        let mut b = Labels::new();
        b.insert("instance".into(), "web-01".into());
        b.insert("alertname".into(), "HighCPU".into());
        assert_eq!(fingerprint(&a), fingerprint(&b));
        // Pinned: the value is persisted, it must never change.
        assert_eq!(fingerprint(&a).to_string().len(), 16);
        let pinned = fingerprint(&a);
        assert_eq!(pinned.to_string().parse::<Fingerprint>().unwrap(), pinned);
    }

    #[test]
    fn label_boundaries_are_unambiguous() {
        let a = labels(&[("a", "bc")]);
        let b = labels(&[("ab", "c")]);
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn invalid_alerts_are_refused() {
        let mut a = Alert::default();
        assert!(a.validate().is_err());
        a.labels = labels(&[("alertname", "x")]);
        assert!(a.validate().is_ok());
        a.labels.insert("bad-name".into(), "v".into());
        assert!(a.validate().is_err());
        a.labels.remove("bad-name");
        a.starts_at = 10;
        a.ends_at = Some(5);
        assert!(a.validate().is_err());
    }
}
