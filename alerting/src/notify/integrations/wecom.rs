/*!
WeCom (企业微信) group robots (`wecom_configs`, a Minos kind): a Markdown message
POSTed to the robot's webhook URL
(`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`). WeCom robots have no
signing: the key in the URL is the credential. The robot answers
`{"errcode": 0, "errmsg": "ok"}`; any other `errcode` is a failure.

# Format
```text
{"msgtype": "markdown", "markdown": {"content": "**<title>**\n<text>"}}
```
The content is limited to 4,096 bytes by WeCom and cut to fit. `title` and `text`
are optional Alertmanager notification templates (the `template` module); unset,
they are the built-in `wecom.default.title` (the subject line) and
`wecom.default.text` (the Markdown list of alerts).
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::ConfigError;
use crate::notify::config::{Secret, invalid};
use crate::notify::integrations::{
    Context, Kind, SendError, check_code, check_url, post_json, template_field,
};
use crate::notify::message::{AlertStatus, Notification, truncate};
use crate::notify::template::{Render, Template};

const MAX_CONTENT_BYTES: usize = 4096;

/// `wecom_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    url: Option<Secret>,
    title: Option<String>,
    text: Option<String>,
}

/// A validated WeCom robot.
#[derive(Debug, Clone)]
pub struct WeCom {
    pub send_resolved: bool,
    url: Secret,
    title: Option<Template>,
    text: Option<Template>,
}

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<WeCom, ConfigError> {
        let url = self
            .url
            .ok_or_else(|| invalid(format!("{path}.url"), "required"))?;
        check_url(&format!("{path}.url"), &url.0)?;
        Ok(WeCom {
            send_resolved: self.send_resolved.unwrap_or(true),
            url,
            title: template_field(path, "title", self.title.as_deref())?,
            text: template_field(path, "text", self.text.as_deref())?,
        })
    }
}

impl WeCom {
    /// The request body, with the built-in named templates.
    pub fn payload(&self, n: &Notification) -> Value {
        let set = crate::notify::template::builtin();
        self.render(n, &mut Render::new(n, "", set))
    }

    /// The template fields, for checking at load time.
    pub(crate) fn templates(&self) -> Vec<(String, &Template, bool)> {
        super::set_fields(&[("title", &self.title), ("text", &self.text)])
    }

    /// The request body, rendering the template fields with `r`.
    fn render(&self, n: &Notification, r: &mut Render<'_>) -> Value {
        // WeCom's Markdown colours: warning (orange-red), info (green).
        let color = match n.status() {
            AlertStatus::Firing => "warning",
            AlertStatus::Resolved => "info",
        };
        let title = r.text("title", self.title.as_ref(), || n.subject());
        let text = r.text("text", self.text.as_ref(), || n.markdown("**"));
        let content = format!("<font color=\"{color}\">**{title}**</font>\n{text}");
        json!({
            "msgtype": "markdown",
            "markdown": {"content": truncate(&content, MAX_CONTENT_BYTES)},
        })
    }

    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let mut r = Render::new(n, &cx.external_url, &cx.templates);
        let payload = self.render(n, &mut r);
        let body = post_json(cx, &self.url.0, &payload).await?;
        check_code(Kind::WeCom, &body, &["errcode"])?;
        Ok(r.errors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    #[test]
    fn markdown_message_within_limits() {
        let w = Raw {
            send_resolved: None,
            url: Some(Secret(
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k".into(),
            )),
            title: None,
            text: None,
        }
        .validate("w")
        .unwrap();
        let mut n = sample();
        for i in 0..200 {
            let mut a = n.alerts[0].clone();
            a.labels.insert("instance".into(), format!("host-{i:04}"));
            n.alerts.push(a);
        }
        let p = w.payload(&n);
        assert_eq!(p["msgtype"], "markdown");
        let c = p["markdown"]["content"].as_str().unwrap();
        assert!(c.len() <= MAX_CONTENT_BYTES);
        assert!(c.starts_with("<font color=\"warning\">**[FIRING:"));
    }
}
