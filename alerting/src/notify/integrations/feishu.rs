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
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::config::{Secret, invalid};
use crate::notify::integrations::{
    Context, Kind, SendError, check_code, check_url, hmac_sha256_b64, post_json,
};
use crate::notify::message::{AlertStatus, Notification, truncate};
use crate::notify::{ConfigError, now_ms};

/// Feishu limits a card to about 30 KB; keep a margin.
const MAX_TEXT_BYTES: usize = 24_000;

/// `feishu_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    url: Option<Secret>,
    secret: Option<Secret>,
}

/// A validated Feishu/Lark bot.
#[derive(Debug, Clone)]
pub struct Feishu {
    pub send_resolved: bool,
    url: Secret,
    secret: Option<Secret>,
}

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<Feishu, ConfigError> {
        let url = self
            .url
            .ok_or_else(|| invalid(format!("{path}.url"), "required"))?;
        check_url(&format!("{path}.url"), &url.0)?;
        Ok(Feishu {
            send_resolved: self.send_resolved.unwrap_or(true),
            url,
            secret: self.secret.filter(|s| !s.0.is_empty()),
        })
    }
}

impl Feishu {
    /// The request body at `timestamp_s` (Unix seconds, used only when signing).
    pub fn payload(&self, n: &Notification, timestamp_s: i64) -> Value {
        let template = match n.status() {
            AlertStatus::Firing => "red",
            AlertStatus::Resolved => "green",
        };
        let mut body = json!({
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": true},
                "header": {
                    "title": {"tag": "plain_text", "content": n.subject()},
                    "template": template,
                },
                "elements": [
                    {"tag": "div", "text": {"tag": "lark_md",
                                            "content": truncate(&n.markdown("**"), MAX_TEXT_BYTES)}},
                ],
            },
        });
        if let Some(secret) = &self.secret {
            body["timestamp"] = json!(timestamp_s.to_string());
            body["sign"] = json!(sign(timestamp_s, &secret.0));
        }
        body
    }

    pub(crate) async fn send(&self, cx: &Context, n: &Notification) -> Result<(), SendError> {
        let body = post_json(cx, &self.url.0, &self.payload(n, now_ms() / 1000)).await?;
        check_code(Kind::Feishu, &body, &["code", "StatusCode"])
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
