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

The config, the rendering of the fields and the delivery are the chat robots' shared
core (`robot`); this file holds what is DingTalk's own.
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::ConfigError;
use crate::notify::config::Secret;
use crate::notify::integrations::robot::{RawRobot, Robot, Vendor};
use crate::notify::integrations::{Kind, hmac_sha256_b64};
use crate::notify::message::{Notification, truncate};

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
pub type DingTalk = Robot<DingTalkApi>;

/// DingTalk's side of a [`Robot`]: the message format and signing of the module doc.
#[derive(Debug, Clone)]
pub struct DingTalkApi;

impl Raw {
    pub(crate) fn validate(self, path: &str) -> Result<DingTalk, ConfigError> {
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

impl Vendor for DingTalkApi {
    const KIND: Kind = Kind::DingTalk;
    const CODE_FIELDS: &'static [&'static str] = &["errcode"];

    fn body(_: &Notification, title: String, text: String) -> Value {
        let text = truncate(&format!("#### {title}\n\n{text}"), MAX_TEXT_BYTES);
        json!({
            "msgtype": "markdown",
            "markdown": {"title": title, "text": text},
        })
    }

    /// The signature goes in the URL.
    fn sign_request(robot: &DingTalk, _: &mut Value, now_ms: i64) -> String {
        robot.signed_url(now_ms)
    }
}

impl DingTalk {
    /// The request body, with the built-in named templates.
    pub fn payload(&self, n: &Notification) -> Value {
        self.unsigned_payload(n)
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
