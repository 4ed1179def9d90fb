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
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::config::{Secret, invalid};
use crate::notify::integrations::{
    Context, Kind, SendError, check_code, check_url, hmac_sha256_b64, post_json, template_field,
};
use crate::notify::message::{AlertStatus, Notification, truncate};
use crate::notify::template::{Render, Template};
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
    title: Option<String>,
    text: Option<String>,
}

/// A validated Feishu/Lark bot.
#[derive(Debug, Clone)]
pub struct Feishu {
    pub send_resolved: bool,
    url: Secret,
    secret: Option<Secret>,
    title: Option<Template>,
    text: Option<Template>,
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
            title: template_field(path, "title", self.title.as_deref())?,
            text: template_field(path, "text", self.text.as_deref())?,
        })
    }
}

impl Feishu {
    /// The request body at `timestamp_s` (Unix seconds, used only when signing),
    /// with the built-in named templates.
    pub fn payload(&self, n: &Notification, timestamp_s: i64) -> Value {
        let set = crate::notify::template::builtin();
        self.render(n, timestamp_s, &mut Render::new(n, "", set))
    }

    /// The template fields, for checking at load time.
    pub(crate) fn templates(&self) -> Vec<(String, &Template, bool)> {
        super::set_fields(&[("title", &self.title), ("text", &self.text)])
    }

    /// The request body, rendering the template fields with `r`.
    fn render(&self, n: &Notification, timestamp_s: i64, r: &mut Render<'_>) -> Value {
        let title = r.text("title", self.title.as_ref(), || n.subject());
        let text = r.text("text", self.text.as_ref(), || n.markdown("**"));
        let template = match n.status() {
            AlertStatus::Firing => "red",
            AlertStatus::Resolved => "green",
        };
        let mut body = json!({
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
        });
        if let Some(secret) = &self.secret {
            body["timestamp"] = json!(timestamp_s.to_string());
            body["sign"] = json!(sign(timestamp_s, &secret.0));
        }
        body
    }

    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let mut r = Render::new(n, &cx.external_url, &cx.templates);
        let payload = self.render(n, now_ms() / 1000, &mut r);
        let body = post_json(cx, &self.url.0, &payload).await?;
        check_code(Kind::Feishu, &body, &["code", "StatusCode"])?;
        Ok(r.errors())
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
