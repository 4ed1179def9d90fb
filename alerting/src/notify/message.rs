/*!
Defines [`Notification`], one message about one aggregation group to one receiver, as
stored in the outbox, and the renderings every integration draws from: the subject
line (Alertmanager's default `[FIRING:2] HighCPU (web-01 warning)`), a plain-text body,
an HTML body, and a Markdown list for chat robots. The built-in named templates of
the `template` module render the same texts; a unit test there keeps the two in step.
*/

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::notify::time::format_human;
use crate::notify::{Fingerprint, Labels};

/// Whether an alert in a notification is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// An alert as a notification shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: i64,
    /// When a resolved alert ended; `None` while firing (Alertmanager shows Go's zero
    /// time then, so that a firing alert never appears to end).
    pub ends_at: Option<i64>,
    pub generator_url: String,
    /// Who acknowledged the alert, if someone did and the acknowledgement holds.
    #[serde(default)]
    pub acked_by: Option<String>,
}

/// One notification about one group to one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// Firing alerts first, then resolved ones; each list by start time.
    pub alerts: Vec<NotifiedAlert>,
    /// Sent because the group's alerts went unacknowledged (`escalate_after`).
    #[serde(default)]
    pub escalation: bool,
    /// When the dispatcher decided to send it (Unix ms).
    pub created_at: i64,
    /// How long a forwarded firing alert stays valid at its destination (another
    /// Alertmanager): a few group intervals, renewed by the next flush.
    #[serde(default)]
    pub resend_ttl_ms: i64,
}

impl Notification {
    /// `firing` if any alert fires, else `resolved`.
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }

    pub fn firing(&self) -> impl Iterator<Item = &NotifiedAlert> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
    }

    pub fn resolved(&self) -> impl Iterator<Item = &NotifiedAlert> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
    }

    /// The labels every alert has with the same value.
    pub fn common_labels(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    /// The annotations every alert has with the same value.
    pub fn common_annotations(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.annotations))
    }

    /// The same notification keeping only firing alerts (for integrations that do
    /// not send resolved ones).
    pub(crate) fn without_resolved(&self) -> Notification {
        let mut n = self.clone();
        n.alerts.retain(|a| a.status == AlertStatus::Firing);
        n
    }

    /// Alertmanager's default subject: `[FIRING:2] HighCPU (web-01 warning)`: the
    /// group label values, then the values of the other common labels.
    pub fn subject(&self) -> String {
        let mut s = String::new();
        let firing = self.firing().count();
        match self.status() {
            AlertStatus::Firing => write!(s, "[FIRING:{firing}]").ok(),
            AlertStatus::Resolved => write!(s, "[RESOLVED]").ok(),
        };
        if self.escalation {
            s.push_str(" [ESCALATED]");
        }
        for v in self.group_labels.values() {
            s.push(' ');
            s.push_str(v);
        }
        let common = self.common_labels();
        let rest: Vec<&str> = common
            .iter()
            .filter(|(k, _)| !self.group_labels.contains_key(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        if !rest.is_empty() {
            write!(s, " ({})", rest.join(" ")).ok();
        }
        s
    }

    /// The plain-text body of an email.
    pub fn text_body(&self, external_url: &str) -> String {
        let mut s = String::new();
        let n = self.alerts.len();
        writeln!(s, "{}", self.subject()).ok();
        writeln!(
            s,
            "\n{n} alert{} for {}",
            if n == 1 { "" } else { "s" },
            pairs(&self.group_labels)
        )
        .ok();
        if self.escalation {
            writeln!(
                s,
                "\nEscalated: these alerts were not acknowledged in time."
            )
            .ok();
        }
        for (title, status) in [
            ("Firing", AlertStatus::Firing),
            ("Resolved", AlertStatus::Resolved),
        ] {
            let list: Vec<&NotifiedAlert> =
                self.alerts.iter().filter(|a| a.status == status).collect();
            if list.is_empty() {
                continue;
            }
            let head = format!("{title} ({})", list.len());
            writeln!(s, "\n{head}\n{}", "-".repeat(head.len())).ok();
            for a in list {
                s.push_str("Labels:\n");
                for (k, v) in &a.labels {
                    writeln!(s, " - {k} = {v}").ok();
                }
                if !a.annotations.is_empty() {
                    s.push_str("Annotations:\n");
                    for (k, v) in &a.annotations {
                        writeln!(s, " - {k} = {v}").ok();
                    }
                }
                writeln!(s, "Started: {}", format_human(a.starts_at)).ok();
                if let Some(e) = a.ends_at {
                    writeln!(s, "Ended: {}", format_human(e)).ok();
                }
                if let Some(by) = &a.acked_by {
                    writeln!(s, "Acknowledged by: {by}").ok();
                }
                if !a.generator_url.is_empty() {
                    writeln!(s, "Source: {}", a.generator_url).ok();
                }
                s.push('\n');
            }
        }
        if !external_url.is_empty() {
            writeln!(s, "--\nSent by Minos: {external_url}").ok();
        }
        s
    }

    /// The HTML body of an email: the same content as [`Notification::text_body`].
    pub fn html_body(&self, external_url: &str) -> String {
        let mut s = String::new();
        let n = self.alerts.len();
        let subject = esc(&self.subject());
        write!(
            s,
            "<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\"><title>{subject}</title></head>\n\
             <body style=\"font-family: Helvetica, Arial, sans-serif; font-size: 14px;\">\n\
             <h2 style=\"background-color: {}; color: #fff; padding: 12px;\">{subject}</h2>\n\
             <p>{n} alert{} for {}</p>\n",
            if self.status() == AlertStatus::Firing {
                "#E6522C"
            } else {
                "#2E9E4F"
            },
            if n == 1 { "" } else { "s" },
            esc(&pairs(&self.group_labels)),
        )
        .ok();
        if self.escalation {
            s.push_str(
                "<p><strong>Escalated:</strong> these alerts were not acknowledged in time.</p>\n",
            );
        }
        for (title, status) in [
            ("Firing", AlertStatus::Firing),
            ("Resolved", AlertStatus::Resolved),
        ] {
            let list: Vec<&NotifiedAlert> =
                self.alerts.iter().filter(|a| a.status == status).collect();
            if list.is_empty() {
                continue;
            }
            writeln!(s, "<h3>[{}] {title}</h3>", list.len()).ok();
            for a in list {
                s.push_str("<table style=\"border-collapse: collapse; margin-bottom: 16px;\">\n");
                s.push_str("<tr><th colspan=\"2\" style=\"text-align: left;\">Labels</th></tr>\n");
                for (k, v) in &a.labels {
                    writeln!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v)).ok();
                }
                if !a.annotations.is_empty() {
                    s.push_str(
                        "<tr><th colspan=\"2\" style=\"text-align: left;\">Annotations</th></tr>\n",
                    );
                    for (k, v) in &a.annotations {
                        writeln!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v)).ok();
                    }
                }
                writeln!(
                    s,
                    "<tr><td>Started</td><td>{}</td></tr>",
                    format_human(a.starts_at)
                )
                .ok();
                if let Some(e) = a.ends_at {
                    writeln!(s, "<tr><td>Ended</td><td>{}</td></tr>", format_human(e)).ok();
                }
                if let Some(by) = &a.acked_by {
                    writeln!(s, "<tr><td>Acknowledged by</td><td>{}</td></tr>", esc(by)).ok();
                }
                if !a.generator_url.is_empty() {
                    writeln!(
                        s,
                        "<tr><td colspan=\"2\"><a href=\"{}\">Source</a></td></tr>",
                        esc(&a.generator_url)
                    )
                    .ok();
                }
                s.push_str("</table>\n");
            }
        }
        if !external_url.is_empty() {
            writeln!(
                s,
                "<p style=\"color: #999;\"><a href=\"{0}\">Sent by Minos</a></p>",
                esc(external_url)
            )
            .ok();
        }
        s.push_str("</body></html>\n");
        s
    }

    /// A Markdown list of the alerts for chat robots; `bold` is the strong marker of
    /// the dialect (`*` for Slack's mrkdwn, `**` elsewhere).
    pub fn markdown(&self, bold: &str) -> String {
        let mut s = String::new();
        let common = self.common_labels();
        if self.escalation {
            writeln!(s, "{bold}Escalated{bold}: not acknowledged in time.").ok();
        }
        for (title, status) in [
            ("Firing", AlertStatus::Firing),
            ("Resolved", AlertStatus::Resolved),
        ] {
            let list: Vec<&NotifiedAlert> =
                self.alerts.iter().filter(|a| a.status == status).collect();
            if list.is_empty() {
                continue;
            }
            writeln!(s, "{bold}{title} ({}){bold}", list.len()).ok();
            for a in list {
                let name = a.labels.get("alertname").map_or("alert", String::as_str);
                write!(s, "- {bold}{name}{bold}").ok();
                let distinct: Vec<String> = a
                    .labels
                    .iter()
                    .filter(|(k, v)| k.as_str() != "alertname" && common.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let shown = if distinct.is_empty() && self.alerts.len() == 1 {
                    a.labels
                        .iter()
                        .filter(|(k, _)| k.as_str() != "alertname")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect()
                } else {
                    distinct
                };
                if !shown.is_empty() {
                    write!(s, " {}", shown.join(" ")).ok();
                }
                if let Some(t) = a
                    .annotations
                    .get("summary")
                    .or_else(|| a.annotations.get("description"))
                {
                    write!(s, ": {t}").ok();
                }
                match a.ends_at {
                    Some(e) => write!(s, " (ended {})", format_human(e)).ok(),
                    None => write!(s, " (since {})", format_human(a.starts_at)).ok(),
                };
                if let Some(by) = &a.acked_by {
                    write!(s, " [acknowledged by {by}]").ok();
                }
                s.push('\n');
            }
        }
        s
    }
}

fn common<'a>(mut sets: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = sets.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for l in sets {
        out.retain(|k, v| l.get(k) == Some(v));
    }
    out
}

/// `a=b c=d`.
fn pairs(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes text for HTML, as Go's `template.HTMLEscapeString` does (so that the
/// built-in `email.default.html` template renders the same bytes).
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&#34;"),
            '\0' => o.push('\u{FFFD}'),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const MARK: &str = "\n…(truncated)";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &s[..end])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert(pairs: &[(&str, &str)], status: AlertStatus) -> NotifiedAlert {
        let labels: Labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NotifiedAlert {
            fingerprint: crate::notify::fingerprint(&labels),
            status,
            labels,
            annotations: [("summary".to_string(), "CPU <high>".to_string())].into(),
            starts_at: 1_714_564_800_000,
            ends_at: (status == AlertStatus::Resolved).then_some(1_714_565_000_000),
            generator_url: "http://prom/graph".into(),
            acked_by: None,
        }
    }

    pub(crate) fn sample() -> Notification {
        Notification {
            receiver: "team".into(),
            group_key: "{}:{alertname=\"HighCPU\"}".into(),
            group_labels: [("alertname".to_string(), "HighCPU".to_string())].into(),
            alerts: vec![
                alert(
                    &[
                        ("alertname", "HighCPU"),
                        ("instance", "web-01"),
                        ("severity", "warning"),
                    ],
                    AlertStatus::Firing,
                ),
                alert(
                    &[
                        ("alertname", "HighCPU"),
                        ("instance", "web-02"),
                        ("severity", "warning"),
                    ],
                    AlertStatus::Firing,
                ),
                alert(
                    &[
                        ("alertname", "HighCPU"),
                        ("instance", "web-03"),
                        ("severity", "warning"),
                    ],
                    AlertStatus::Resolved,
                ),
            ],
            escalation: false,
            created_at: 1_714_565_000_000,
            resend_ttl_ms: 0,
        }
    }

    #[test]
    fn subject_is_alertmanagers_default() {
        let n = sample();
        assert_eq!(n.subject(), "[FIRING:2] HighCPU (warning)");
        let mut one = n.clone();
        one.alerts.truncate(1);
        assert_eq!(one.subject(), "[FIRING:1] HighCPU (web-01 warning)");
        let mut res = n.clone();
        res.alerts.retain(|a| a.status == AlertStatus::Resolved);
        assert_eq!(res.subject(), "[RESOLVED] HighCPU (web-03 warning)");
    }

    #[test]
    fn bodies_list_firing_and_resolved_alerts() {
        let n = sample();
        let t = n.text_body("http://minos");
        assert!(
            t.contains("Firing (2)") && t.contains("Resolved (1)"),
            "{t}"
        );
        assert!(t.contains(" - instance = web-03"));
        assert!(t.contains("Ended: 2024-05-01 12:03:20 UTC"));
        let h = n.html_body("http://minos");
        assert!(h.contains("[2] Firing") && h.contains("[1] Resolved"));
        assert!(h.contains("CPU &lt;high&gt;"), "HTML is escaped");
        let md = n.markdown("**");
        assert!(
            md.contains("- **HighCPU** instance=web-01: CPU <high> (since"),
            "{md}"
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(100);
        let t = truncate(&s, 51);
        assert!(t.len() <= 51 && t.ends_with("(truncated)"));
        assert_eq!(truncate("short", 10), "short");
    }
}
