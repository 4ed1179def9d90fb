/*!
The generic webhook: Alertmanager's `webhook_config`, POSTing Alertmanager's webhook
JSON (version 4) so that every existing webhook consumer works unchanged.

# Format
```text
{"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing",
 "receiver": "...", "groupLabels": {..}, "commonLabels": {..},
 "commonAnnotations": {..}, "externalURL": "...",
 "alerts": [{"status", "labels", "annotations", "startsAt", "endsAt",
             "generatorURL", "fingerprint"}]}
```
A firing alert's `endsAt` is Go's zero time, as Alertmanager sends it.
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::ConfigError;
use crate::notify::config::Secret;
use crate::notify::integrations::{Context, SendError, check_url, post_json};
use crate::notify::message::Notification;
use crate::notify::time::{GO_ZERO_TIME, format_rfc3339};

/// `webhook_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    url: Option<Secret>,
    #[serde(default)]
    max_alerts: u64,
}

/// A validated webhook integration.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub send_resolved: bool,
    url: Secret,
    /// At most this many alerts per request (0: no limit); the rest are counted in
    /// `truncatedAlerts`.
    pub max_alerts: u64,
}

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<Webhook, ConfigError> {
        let url = self
            .url
            .ok_or_else(|| crate::notify::config::invalid(format!("{path}.url"), "required"))?;
        check_url(&format!("{path}.url"), &url.0)?;
        Ok(Webhook {
            send_resolved: self.send_resolved.unwrap_or(true),
            url,
            max_alerts: self.max_alerts,
        })
    }
}

impl Webhook {
    /// The request body.
    pub fn payload(&self, n: &Notification, external_url: &str) -> Value {
        alertmanager_payload(n, external_url, self.max_alerts)
    }

    pub(crate) async fn send(&self, cx: &Context, n: &Notification) -> Result<(), SendError> {
        post_json(cx, &self.url.0, &self.payload(n, &cx.external_url))
            .await
            .map(|_| ())
    }
}

/// Alertmanager's webhook message (version 4).
pub(crate) fn alertmanager_payload(n: &Notification, external_url: &str, max: u64) -> Value {
    let limit = if max == 0 {
        n.alerts.len()
    } else {
        usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(n.alerts.len())
    };
    let alerts: Vec<Value> = n.alerts[..limit]
        .iter()
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": format_rfc3339(a.starts_at),
                "endsAt": a.ends_at.map_or_else(|| GO_ZERO_TIME.to_string(), format_rfc3339),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint.to_string(),
            })
        })
        .collect();
    json!({
        "receiver": n.receiver,
        "status": n.status().as_str(),
        "alerts": alerts,
        "groupLabels": n.group_labels,
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": external_url,
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": n.alerts.len() - limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    #[test]
    fn payload_has_alertmanagers_shape() {
        let w = Raw {
            send_resolved: None,
            url: Some(Secret("http://127.0.0.1:1/x".into())),
            max_alerts: 2,
        }
        .validate("w")
        .unwrap();
        assert!(w.send_resolved, "webhooks send resolved alerts by default");
        let p = w.payload(&sample(), "http://minos");
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["truncatedAlerts"], 1);
        assert_eq!(p["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(p["alerts"][0]["endsAt"], GO_ZERO_TIME);
        assert_eq!(p["alerts"][0]["startsAt"], "2024-05-01T12:00:00.000Z");
        assert_eq!(p["groupLabels"]["alertname"], "HighCPU");
        assert_eq!(p["commonLabels"]["severity"], "warning");
        assert_eq!(p["externalURL"], "http://minos");
    }

    #[test]
    fn url_is_required_and_checked() {
        let r = Raw {
            send_resolved: None,
            url: None,
            max_alerts: 0,
        };
        assert!(r.validate("w").is_err());
        let r = Raw {
            send_resolved: None,
            url: Some(Secret("ftp://x".into())),
            max_alerts: 0,
        };
        assert!(r.validate("w").unwrap_err().to_string().contains("w.url"));
    }
}
