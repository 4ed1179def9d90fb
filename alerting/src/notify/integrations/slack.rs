/*!
Slack-compatible incoming webhooks (`slack_configs`): Slack, and Mattermost and
Rocket.Chat, which accept the same message with attachments.

# Format
```text
{"channel": "#ops", "username": "Minos", "icon_emoji": ":fire:",
 "attachments": [{"title": "[FIRING:2] HighCPU", "title_link": "...",
                  "text": "...", "fallback": "...", "color": "danger",
                  "mrkdwn_in": ["fallback", "pretext", "text"]}]}
```
`color` is `danger` while anything fires and `good` once everything resolved, as
Alertmanager's default. `title`, `text`, `title_link` and `username` are
Alertmanager notification templates (the `template` module); unset, they are the
built-in `slack.default.*` texts. `fallback` is the title.
*/

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::notify::ConfigError;
use crate::notify::config::{GlobalDefaults, Secret, invalid};
use crate::notify::integrations::{Context, SendError, check_url, post_json, template_field};
use crate::notify::message::{AlertStatus, Notification};
use crate::notify::template::{Render, Template};

/// `slack_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    api_url: Option<Secret>,
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
    icon_url: Option<String>,
    title: Option<String>,
    title_link: Option<String>,
    text: Option<String>,
    color: Option<String>,
}

/// A validated Slack-compatible integration.
#[derive(Debug, Clone)]
pub struct Slack {
    pub send_resolved: bool,
    api_url: Secret,
    channel: Option<String>,
    username: Option<Template>,
    icon_emoji: Option<String>,
    icon_url: Option<String>,
    title: Option<Template>,
    title_link: Option<Template>,
    text: Option<Template>,
    color: Option<String>,
}

impl Raw {
    pub(crate) fn validate(self, path: &str, g: &GlobalDefaults) -> Result<Slack, ConfigError> {
        let api_url = self
            .api_url
            .or_else(|| g.slack_api_url.clone())
            .ok_or_else(|| {
                invalid(
                    format!("{path}.api_url"),
                    "required (or global.slack_api_url)",
                )
            })?;
        check_url(&format!("{path}.api_url"), &api_url.0)?;
        Ok(Slack {
            send_resolved: self.send_resolved.unwrap_or(false),
            api_url,
            channel: self.channel,
            username: template_field(path, "username", self.username.as_deref())?,
            icon_emoji: self.icon_emoji,
            icon_url: self.icon_url,
            title: template_field(path, "title", self.title.as_deref())?,
            title_link: template_field(path, "title_link", self.title_link.as_deref())?,
            text: template_field(path, "text", self.text.as_deref())?,
            color: self.color,
        })
    }
}

impl Slack {
    /// The request body, with the built-in named templates.
    pub fn payload(&self, n: &Notification, external_url: &str) -> Value {
        let set = crate::notify::template::builtin();
        self.render(n, &mut Render::new(n, external_url, set), external_url)
    }

    /// The template fields, for checking at load time.
    pub(crate) fn templates(&self) -> Vec<(String, &Template, bool)> {
        super::set_fields(&[
            ("username", &self.username),
            ("title", &self.title),
            ("title_link", &self.title_link),
            ("text", &self.text),
        ])
    }

    /// The request body, rendering the template fields with `r`.
    fn render(&self, n: &Notification, r: &mut Render<'_>, external_url: &str) -> Value {
        let title = r.text("title", self.title.as_ref(), || n.subject());
        let text = r.text("text", self.text.as_ref(), || n.markdown("*"));
        let title_link = r.text("title_link", self.title_link.as_ref(), || {
            external_url.to_string()
        });
        let color = self.color.clone().unwrap_or_else(|| {
            match n.status() {
                AlertStatus::Firing => "danger",
                AlertStatus::Resolved => "good",
            }
            .to_string()
        });
        let mut attachment = Map::new();
        attachment.insert("title".into(), json!(title));
        if !title_link.is_empty() {
            attachment.insert("title_link".into(), json!(title_link));
        }
        attachment.insert("text".into(), json!(text));
        attachment.insert("fallback".into(), json!(title));
        attachment.insert("color".into(), json!(color));
        attachment.insert("mrkdwn_in".into(), json!(["fallback", "pretext", "text"]));
        let mut body = Map::new();
        if let Some(c) = &self.channel {
            body.insert("channel".into(), json!(c));
        }
        let username = r.text("username", self.username.as_ref(), || "Minos".to_string());
        body.insert("username".into(), json!(username));
        if let Some(e) = &self.icon_emoji {
            body.insert("icon_emoji".into(), json!(e));
        }
        if let Some(u) = &self.icon_url {
            body.insert("icon_url".into(), json!(u));
        }
        body.insert("attachments".into(), json!([Value::Object(attachment)]));
        Value::Object(body)
    }

    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let mut r = Render::new(n, &cx.external_url, &cx.templates);
        let body = self.render(n, &mut r, &cx.external_url);
        post_json(cx, &self.api_url.0, &body).await?;
        Ok(r.errors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    fn raw(yaml: &str) -> Raw {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn payload_is_a_standard_attachment() {
        let s = raw("api_url: http://127.0.0.1:1/hooks/x\nchannel: '#ops'\ntitle: '{{ .CommonLabels.alertname }} is {{ .Status }}'\n")
            .validate("s", &GlobalDefaults::default())
            .unwrap();
        let p = s.payload(&sample(), "http://minos");
        assert_eq!(p["channel"], "#ops");
        assert_eq!(p["username"], "Minos");
        let a = &p["attachments"][0];
        assert_eq!(a["title"], "HighCPU is firing");
        assert_eq!(a["color"], "danger");
        assert_eq!(a["title_link"], "http://minos");
        assert!(a["text"].as_str().unwrap().contains("*Firing (2)*"));
    }

    #[test]
    fn the_global_url_is_the_default() {
        let g = GlobalDefaults {
            slack_api_url: Some(Secret("http://127.0.0.1:1/g".into())),
            ..Default::default()
        };
        assert!(raw("channel: x\n").validate("s", &g).is_ok());
        let e = raw("channel: x\n")
            .validate("s", &GlobalDefaults::default())
            .unwrap_err();
        assert!(e.to_string().contains("s.api_url"));
        let e = raw("api_url: http://x/\ntext: '{{ range .Alerts }}{{ nosuch }}{{ end }}'\n")
            .validate("s", &GlobalDefaults::default())
            .unwrap_err();
        assert!(e.to_string().contains("s.text"));
    }
}
