/*!
Feishu / Lark custom bots (`feishu_configs`, a Minos kind): an interactive card POSTed
to the bot's webhook URL (`https://open.feishu.cn/open-apis/bot/v2/hook/...`, or
`open.larksuite.com` for Lark).

With `secret` (the bot's "signature verification" secret) the body carries
`timestamp` (Unix seconds, as a string) and
`sign = base64(HMAC-SHA256(key = timestamp + "\n" + secret, msg = ""))`, Feishu's
scheme (the key is the string to sign, the message is empty). The bot answers with
`{"code": 0}` (older deployments: `{"StatusCode": 0}`); anything else is a failure.

# Format
```text
{"timestamp": "1700000000", "sign": "...", "msg_type": "interactive",
 "card": {"config": {"wide_screen_mode": true},
          "header": {"title": {"tag": "plain_text", "content": "<subject>"},
                     "template": "red" | "green"},
          "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "..."}}]}}
```
`title` (the card's header) and `text` (its Markdown content) are optional
Alertmanager notification templates (the `template` module); unset, they are the
built-in `feishu.default.title` (the subject line) and `feishu.default.text` (the
Markdown list of alerts).

The config, the rendering of the fields and the delivery are the chat robots' shared
core (`robot`); this file holds what is Feishu's own.
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::ConfigError;
use crate::notify::config::Secret;
use crate::notify::integrations::robot::{RawRobot, Robot, Vendor};
use crate::notify::integrations::{Kind, hmac_sha256_b64};
use crate::notify::message::{AlertStatus, Notification, truncate};

/// Feishu limits a card to about 30 KB; keep a margin.
const MAX_TEXT_BYTES: usize = 24_000;

/// `feishu_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    url: Option<Secret>,
    secret: Option<Secret>,
    title: Option<String>,
    text: Option<String>,
}

/// A validated Feishu/Lark bot.
pub type Feishu = Robot<FeishuApi>;

/// Feishu's side of a [`Robot`]: the card and signing of the module doc.
#[derive(Debug, Clone)]
pub struct FeishuApi;

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<Feishu, ConfigError> {
        RawRobot {
            send_resolved: self.send_resolved,
            url: self.url,
            secret: self.secret,
            title: self.title,
            text: self.text,
        }
        .validate(path)
    }
}

impl Vendor for FeishuApi {
    const KIND: Kind = Kind::Feishu;
    const CODE_FIELDS: &'static [&'static str] = &["code", "StatusCode"];

    fn body(n: &Notification, title: String, text: String) -> Value {
        let template = match n.status() {
            AlertStatus::Firing => "red",
            AlertStatus::Resolved => "green",
        };
        json!({
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": true},
                "header": {
                    "title": {"tag": "plain_text", "content": title},
                    "template": template,
                },
                "elements": [
                    {"tag": "div", "text": {"tag": "lark_md",
                                            "content": truncate(&text, MAX_TEXT_BYTES)}},
                ],
            },
        })
    }

    /// The signature goes in the body, with the time in Unix seconds.
    fn sign_request(robot: &Feishu, body: &mut Value, now_ms: i64) -> String {
        robot.add_signature(body, now_ms / 1000);
        robot.url.0.clone()
    }
}

impl Feishu {
    /// The request body at `timestamp_s` (Unix seconds, used only when signing),
    /// with the built-in named templates.
    pub fn payload(&self, n: &Notification, timestamp_s: i64) -> Value {
        let mut body = self.unsigned_payload(n);
        self.add_signature(&mut body, timestamp_s);
        body
    }

    /// Adds `timestamp` and `sign` to `body` when a secret is configured.
    fn add_signature(&self, body: &mut Value, timestamp_s: i64) {
        if let Some(secret) = &self.secret {
            body["timestamp"] = json!(timestamp_s.to_string());
            body["sign"] = json!(sign(timestamp_s, &secret.0));
        }
    }
}

/// Feishu's signature.
pub fn sign(timestamp_s: i64, secret: &str) -> String {
    hmac_sha256_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    #[test]
    fn signed_card() {
        let f = Raw {
            send_resolved: None,
            url: Some(Secret(
                "https://open.feishu.cn/open-apis/bot/v2/hook/x".into(),
            )),
            secret: Some(Secret("s3cret".into())),
            title: None,
            text: None,
        }
        .validate("f")
        .unwrap();
        let p = f.payload(&sample(), 1_700_000_000);
        assert_eq!(p["timestamp"], "1700000000");
        assert_eq!(p["sign"], sign(1_700_000_000, "s3cret"));
        assert_eq!(p["msg_type"], "interactive");
        assert_eq!(p["card"]["header"]["template"], "red");
        assert_eq!(p["card"]["elements"][0]["text"]["tag"], "lark_md");
    }
}
