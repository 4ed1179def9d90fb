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
{"msgtype": "markdown", "markdown": {"title": "<subject>", "text": "#### <subject>\n..."}}
```
*/

use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::config::{Secret, invalid};
use crate::notify::integrations::{
    Context, Kind, SendError, check_code, check_url, hmac_sha256_b64, post_json,
};
use crate::notify::message::{Notification, truncate};
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
}

/// A validated DingTalk robot.
#[derive(Debug, Clone)]
pub struct DingTalk {
    pub send_resolved: bool,
    url: Secret,
    secret: Option<Secret>,
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
        })
    }
}

impl DingTalk {
    /// The request body.
    pub fn payload(&self, n: &Notification) -> Value {
        let subject = n.subject();
        let text = truncate(
            &format!("#### {subject}\n\n{}", n.markdown("**")),
            MAX_TEXT_BYTES,
        );
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

    pub(crate) async fn send(&self, cx: &Context, n: &Notification) -> Result<(), SendError> {
        let body = post_json(cx, &self.signed_url(now_ms()), &self.payload(n)).await?;
        check_code(Kind::DingTalk, &body, &["errcode"])
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
