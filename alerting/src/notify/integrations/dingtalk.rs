/*!
DingTalk custom robots (`dingtalk_configs`, a Minos kind): a Markdown message POSTed
to the robot's webhook URL (`https://oapi.dingtalk.com/robot/send?access_token=...`).

With `secret` (the robot's "加签" secret, `SEC...`), every request is signed:
`sign = urlencode(base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret)))`,
with `timestamp` in Unix milliseconds, both appended to the URL as
`&timestamp=...&sign=...`. The robot answers HTTP 200 with `{"errcode": 0}`; any
other `errcode` is a failure.

# Format
```text
{"msgtype": "markdown", "markdown": {"title": "<title>", "text": "#### <title>\n\n<text>"}}
```
`title` and `text` are optional Alertmanager notification templates (the `template`
module); unset, they are the built-in `dingtalk.default.title` (the subject line)
and `dingtalk.default.text` (the Markdown list of alerts).
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::config::{Secret, invalid};
use crate::notify::integrations::{
    Context, Kind, SendError, check_code, check_url, hmac_sha256_b64, post_json, template_field,
};
use crate::notify::message::{Notification, truncate};
use crate::notify::template::{Render, Template};
use crate::notify::{ConfigError, now_ms};

/// DingTalk limits a Markdown message to 20,000 bytes; keep a margin.
const MAX_TEXT_BYTES: usize = 18_000;

/// `dingtalk_configs` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    send_resolved: Option<bool>,
    url: Option<Secret>,
    secret: Option<Secret>,
    title: Option<String>,
    text: Option<String>,
}

/// A validated DingTalk robot.
#[derive(Debug, Clone)]
pub struct DingTalk {
    pub send_resolved: bool,
    url: Secret,
    secret: Option<Secret>,
    title: Option<Template>,
    text: Option<Template>,
}

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<DingTalk, ConfigError> {
        let url = self
            .url
            .ok_or_else(|| invalid(format!("{path}.url"), "required"))?;
        check_url(&format!("{path}.url"), &url.0)?;
        Ok(DingTalk {
            send_resolved: self.send_resolved.unwrap_or(true),
            url,
            secret: self.secret.filter(|s| !s.0.is_empty()),
            title: template_field(path, "title", self.title.as_deref())?,
            text: template_field(path, "text", self.text.as_deref())?,
        })
    }
}

impl DingTalk {
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
        let subject = r.text("title", self.title.as_ref(), || n.subject());
        let body = r.text("text", self.text.as_ref(), || n.markdown("**"));
        let text = truncate(&format!("#### {subject}\n\n{body}"), MAX_TEXT_BYTES);
        json!({
            "msgtype": "markdown",
            "markdown": {"title": subject, "text": text},
        })
    }

    /// The URL to POST to at `timestamp_ms`, signed when a secret is configured.
    pub fn signed_url(&self, timestamp_ms: i64) -> String {
        let Some(secret) = &self.secret else {
            return self.url.0.clone();
        };
        let sign = sign(timestamp_ms, &secret.0);
        let encoded: String = form_urlencoded::byte_serialize(sign.as_bytes()).collect();
        let sep = if self.url.0.contains('?') { '&' } else { '?' };
        format!("{}{sep}timestamp={timestamp_ms}&sign={encoded}", self.url.0)
    }

    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let mut r = Render::new(n, &cx.external_url, &cx.templates);
        let payload = self.render(n, &mut r);
        let body = post_json(cx, &self.signed_url(now_ms()), &payload).await?;
        check_code(Kind::DingTalk, &body, &["errcode"])?;
        Ok(r.errors())
    }
}

/// DingTalk's signature (before URL encoding).
pub fn sign(timestamp_ms: i64, secret: &str) -> String {
    hmac_sha256_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    #[test]
    fn signs_like_dingtalks_reference_code() {
        let d = Raw {
            send_resolved: None,
            url: Some(Secret(
                "https://oapi.dingtalk.com/robot/send?access_token=abc".into(),
            )),
            secret: Some(Secret("SECxyz".into())),
            title: None,
            text: None,
        }
        .validate("d")
        .unwrap();
        let url = d.signed_url(1_700_000_000_000);
        let sig = sign(1_700_000_000_000, "SECxyz");
        let enc: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        assert_eq!(
            url,
            format!(
                "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1700000000000&sign={enc}"
            )
        );
        assert!(!enc.contains('+') && !enc.contains('/') && !enc.contains('='));
        let p = d.payload(&sample());
        assert_eq!(p["msgtype"], "markdown");
        assert_eq!(p["markdown"]["title"], "[FIRING:2] HighCPU (warning)");
        assert!(
            p["markdown"]["text"]
                .as_str()
                .unwrap()
                .starts_with("#### [FIRING:2]")
        );
    }
}
