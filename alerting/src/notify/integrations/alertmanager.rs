/*!
Forwarding to an existing Alertmanager (`alertmanager_configs`, a Minos kind): the
group's alerts are POSTed to `<url>/api/v2/alerts` as Alertmanager's postable alerts,
the way Prometheus sends them.

This integration mirrors state rather than notifying: it is sent the group at every
flush (each `group_interval`), with each firing alert's `endsAt` set a few group
intervals ahead (the notification's `resend_ttl_ms`, counted from the moment of
delivery), so the other Alertmanager keeps the alert active while Minos does and
resolves it by itself if Minos goes silent. Resolved alerts carry their real end.

# Format
```text
[{"labels": {..}, "annotations": {..}, "startsAt": "...", "endsAt": "...",
  "generatorURL": "..."}]
```
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::config::invalid;
use crate::notify::integrations::{Context, SendError, check_url, post_json};
use crate::notify::message::Notification;
use crate::notify::time::format_rfc3339;
use crate::notify::{ConfigError, now_ms};

/// `alertmanager_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    url: Option<String>,
}

/// A validated forward to another Alertmanager.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    /// The full endpoint, `<url>/api/v2/alerts`.
    endpoint: String,
}

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<Alertmanager, ConfigError> {
        let url = self.url.ok_or_else(|| {
            invalid(
                format!("{path}.url"),
                "required (e.g. http://127.0.0.1:9093)",
            )
        })?;
        check_url(&format!("{path}.url"), &url)?;
        let base = url.trim_end_matches('/');
        let endpoint = if base.ends_with("/api/v2/alerts") {
            base.to_string()
        } else {
            format!("{base}/api/v2/alerts")
        };
        Ok(Alertmanager { endpoint })
    }
}

impl Alertmanager {
    /// The endpoint alerts are POSTed to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The request body at `now` (Unix ms).
    pub fn payload(&self, n: &Notification, now: i64) -> Value {
        let ttl = n.resend_ttl_ms.max(60_000);
        let alerts: Vec<Value> = n
            .alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": format_rfc3339(a.starts_at),
                    "endsAt": format_rfc3339(a.ends_at.unwrap_or(now + ttl)),
                    "generatorURL": a.generator_url,
                })
            })
            .collect();
        Value::Array(alerts)
    }

    pub(crate) async fn send(&self, cx: &Context, n: &Notification) -> Result<(), SendError> {
        post_json(cx, &self.endpoint, &self.payload(n, now_ms()))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    #[test]
    fn postable_alerts() {
        let a = Raw {
            url: Some("http://127.0.0.1:9093/".into()),
        }
        .validate("a")
        .unwrap();
        assert_eq!(a.endpoint(), "http://127.0.0.1:9093/api/v2/alerts");
        let mut n = sample();
        n.resend_ttl_ms = 600_000;
        let p = a.payload(&n, 1_714_564_800_000);
        let list = p.as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["endsAt"], "2024-05-01T12:10:00.000Z");
        assert_eq!(list[2]["endsAt"], "2024-05-01T12:03:20.000Z");
        assert!(list[0].get("status").is_none());
    }
}
