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

The config, the rendering of the fields and the delivery are the chat robots' shared
core (`robot`); this file holds what is WeCom's own.
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::ConfigError;
use crate::notify::config::Secret;
use crate::notify::integrations::Kind;
use crate::notify::integrations::robot::{RawRobot, Robot, Vendor};
use crate::notify::message::{AlertStatus, Notification, truncate};

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
pub type WeCom = Robot<WeComApi>;

/// WeCom's side of a [`Robot`]: the message format of the module doc.
#[derive(Debug, Clone)]
pub struct WeComApi;

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<WeCom, ConfigError> {
        RawRobot {
            send_resolved: self.send_resolved,
            url: self.url,
            secret: None,
            title: self.title,
            text: self.text,
        }
        .validate(path)
    }
}

impl Vendor for WeComApi {
    const KIND: Kind = Kind::WeCom;
    const CODE_FIELDS: &'static [&'static str] = &["errcode"];

    fn body(n: &Notification, title: String, text: String) -> Value {
        // WeCom's Markdown colours: warning (orange-red), info (green).
        let color = match n.status() {
            AlertStatus::Firing => "warning",
            AlertStatus::Resolved => "info",
        };
        let content = format!("<font color=\"{color}\">**{title}**</font>\n{text}");
        json!({
            "msgtype": "markdown",
            "markdown": {"content": truncate(&content, MAX_CONTENT_BYTES)},
        })
    }

    /// No signing: the key in the URL is the credential.
    fn sign_request(robot: &WeCom, _: &mut Value, _: i64) -> String {
        robot.url.0.clone()
    }
}

impl WeCom {
    /// The request body, with the built-in named templates.
    pub fn payload(&self, n: &Notification) -> Value {
        self.unsigned_payload(n)
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
