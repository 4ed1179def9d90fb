/*!
The receivers' integrations: one file per kind, all of the same shape:

- `Raw`: the YAML block as written (`deny_unknown_fields`);
- the validated config (`Email`, `Slack`, ...), built by `Raw::validate(path, ..)`;
- `payload(..)`: the request body for a notification, a pure function the unit tests
  pin; integrations with text fields render them through a template `Render`
  (`render(..)`), which falls back to the built-in text for a field whose template
  fails;
- `send(..)`: delivers one notification, returning a [`SendError`] that says whether
  trying again could help, or on success the errors of the template fields that fell
  back (for the notification log);
- `templates()`: the integration's template fields, checked when the config loads.

The chat robots (DingTalk, Feishu/Lark, WeCom) differ only in their message format,
signing and error code, so they share one core, `robot`: their validated config is a
`robot::Robot` (with `send(..)` and `templates()`), and each vendor's file keeps its
`Raw`, its body builder and signing (a `robot::Vendor`), and `payload(..)`.

[`Integration`] holds one of them and has the one `match` that dispatches.
*/

pub mod alertmanager;
pub mod dingtalk;
pub mod email;
pub mod feishu;
pub mod robot;
pub mod slack;
pub mod webhook;
pub mod wecom;

use std::time::Duration;

use crate::notify::message::Notification;
use crate::notify::template::Template;

/// The kinds of integration, for counters and the notification log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Slack,
    Webhook,
    DingTalk,
    Feishu,
    WeCom,
    Alertmanager,
}

impl Kind {
    /// Every kind, in a fixed order (the index of the counters).
    pub const ALL: [Kind; 7] = [
        Kind::Email,
        Kind::Slack,
        Kind::Webhook,
        Kind::DingTalk,
        Kind::Feishu,
        Kind::WeCom,
        Kind::Alertmanager,
    ];

    /// The name used in logs, metrics and the notification log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Slack => "slack",
            Kind::Webhook => "webhook",
            Kind::DingTalk => "dingtalk",
            Kind::Feishu => "feishu",
            Kind::WeCom => "wecom",
            Kind::Alertmanager => "alertmanager",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One configured integration of a receiver.
#[derive(Debug, Clone)]
pub enum Integration {
    Email(email::Email),
    Slack(slack::Slack),
    Webhook(webhook::Webhook),
    DingTalk(dingtalk::DingTalk),
    Feishu(feishu::Feishu),
    WeCom(wecom::WeCom),
    Alertmanager(alertmanager::Alertmanager),
}

impl Integration {
    pub fn kind(&self) -> Kind {
        match self {
            Integration::Email(_) => Kind::Email,
            Integration::Slack(_) => Kind::Slack,
            Integration::Webhook(_) => Kind::Webhook,
            Integration::DingTalk(_) => Kind::DingTalk,
            Integration::Feishu(_) => Kind::Feishu,
            Integration::WeCom(_) => Kind::WeCom,
            Integration::Alertmanager(_) => Kind::Alertmanager,
        }
    }

    /// Whether resolved alerts are sent (a forward to another Alertmanager always
    /// sends them: that is how the other side learns the alert ended).
    pub fn send_resolved(&self) -> bool {
        match self {
            Integration::Email(c) => c.send_resolved,
            Integration::Slack(c) => c.send_resolved,
            Integration::Webhook(c) => c.send_resolved,
            Integration::DingTalk(c) => c.send_resolved,
            Integration::Feishu(c) => c.send_resolved,
            Integration::WeCom(c) => c.send_resolved,
            Integration::Alertmanager(_) => true,
        }
    }

    /// Whether the integration mirrors state rather than notifying people: it is sent
    /// the group at every flush, so that the other side's copy does not expire.
    pub(crate) fn mirrors_state(&self) -> bool {
        matches!(self, Integration::Alertmanager(_))
    }

    /// Delivers one notification. On success, returns the errors of the template
    /// fields that fell back to their built-in text (empty when all rendered).
    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let n = if self.send_resolved() {
            std::borrow::Cow::Borrowed(n)
        } else {
            std::borrow::Cow::Owned(n.without_resolved())
        };
        if n.alerts.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Integration::Email(c) => c.send(cx, &n).await,
            Integration::Slack(c) => c.send(cx, &n).await,
            Integration::Webhook(c) => c.send(cx, &n).await.map(|()| Vec::new()),
            Integration::DingTalk(c) => c.send(cx, &n).await,
            Integration::Feishu(c) => c.send(cx, &n).await,
            Integration::WeCom(c) => c.send(cx, &n).await,
            Integration::Alertmanager(c) => c.send(cx, &n).await.map(|()| Vec::new()),
        }
    }

    /// The template fields, by name, and whether each is HTML.
    pub(crate) fn templates(&self) -> Vec<(String, &Template, bool)> {
        match self {
            Integration::Email(c) => c.templates(),
            Integration::Slack(c) => c.templates(),
            Integration::DingTalk(c) => c.templates(),
            Integration::Feishu(c) => c.templates(),
            Integration::WeCom(c) => c.templates(),
            Integration::Webhook(_) | Integration::Alertmanager(_) => Vec::new(),
        }
    }
}

/// The set fields of `fields` (name, template), as text fields.
fn set_fields<'a>(fields: &[(&str, &'a Option<Template>)]) -> Vec<(String, &'a Template, bool)> {
    fields
        .iter()
        .filter_map(|(name, t)| t.as_ref().map(|t| (name.to_string(), t, false)))
        .collect()
}

/// What a delivery needs besides the notification.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) http: reqwest::Client,
    /// Where people find Minos' alerts page (links in messages, `externalURL`).
    pub(crate) external_url: String,
    /// The limit on one delivery attempt.
    pub(crate) timeout: Duration,
    /// The named templates text fields may call: the built-in ones and the
    /// config's `templates:` files.
    pub(crate) templates: crate::template::TemplateSet,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// Whether a later attempt could succeed (connection refused, 5xx, 429) or not
    /// (4xx: the request itself is wrong).
    pub retryable: bool,
}

impl SendError {
    pub(crate) fn retry(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retryable: true,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// The most of a response body kept for an error message.
const ERROR_BODY_BYTES: usize = 512;

/// POSTs `body` as JSON to `url` and returns the response body of a 2xx answer.
/// 408, 429 and 5xx answers and transport errors are retryable; other statuses not.
pub(crate) async fn post_json(
    cx: &Context,
    url: &str,
    body: &serde_json::Value,
) -> Result<String, SendError> {
    let resp = cx
        .http
        .post(url)
        .timeout(cx.timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::retry(format!("POST {}: {}", redact(url), chain(&e))))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(text);
    }
    let msg = format!(
        "POST {}: HTTP {status}: {}",
        redact(url),
        crate::notify::message::truncate(text.trim(), ERROR_BODY_BYTES)
    );
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        Err(SendError::retry(msg))
    } else {
        Err(SendError::permanent(msg))
    }
}

/// Checks the JSON answer of a chat robot, which reports errors with HTTP 200 and a
/// non-zero code in one of `fields` (`errcode` for DingTalk and WeCom; `code` or
/// `StatusCode` for Feishu). A body that is not JSON, or has none of the fields,
/// counts as success.
pub(crate) fn check_code(kind: Kind, body: &str, fields: &[&str]) -> Result<(), SendError> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Ok(());
    };
    for f in fields {
        if let Some(code) = v.get(*f).and_then(serde_json::Value::as_i64)
            && code != 0
        {
            let msg = v
                .get("errmsg")
                .or_else(|| v.get("msg"))
                .or_else(|| v.get("StatusMessage"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            // Rate limits and signature/timestamp skew can pass: try again later.
            return Err(SendError::retry(format!(
                "{}: robot answered {f} {code}: {msg}",
                kind.as_str()
            )));
        }
    }
    Ok(())
}

/// `url` without its query string (robot URLs carry their tokens there).
pub(crate) fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// An error and its sources, joined by ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// HMAC-SHA256 of `msg` under `key`, base64-encoded (the robots' signatures).
pub(crate) fn hmac_sha256_b64(key: &[u8], msg: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks that `url` is an absolute http(s) URL.
pub(crate) fn check_url(path: &str, url: &str) -> Result<(), crate::notify::ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(crate::notify::config::invalid(
            path,
            "must be an http:// or https:// URL",
        )),
        Err(e) => Err(crate::notify::config::invalid(
            path,
            format!("invalid URL: {e}"),
        )),
    }
}

/// Parses an optional template field, naming it in the error.
pub(crate) fn template_field(
    path: &str,
    name: &str,
    text: Option<&str>,
) -> Result<Option<Template>, crate::notify::ConfigError> {
    text.map(|t| {
        Template::parse(t).map_err(|m| crate::notify::config::invalid(format!("{path}.{name}"), m))
    })
    .transpose()
}

/// Checks the template fields of every integration of `receivers` against `set`
/// (see [`Template::check`]), naming the field in the error
/// (`receivers[0].slack_configs[1].title`).
pub(crate) fn check_templates(
    receivers: &[crate::notify::config::Receiver],
    set: &crate::template::TemplateSet,
) -> Result<(), crate::notify::ConfigError> {
    for (i, r) in receivers.iter().enumerate() {
        let mut seen = [0usize; Kind::ALL.len()];
        for int in &r.integrations {
            let k = int.kind();
            let j = seen[k.index()];
            seen[k.index()] += 1;
            for (field, t, html) in int.templates() {
                t.check(set, html).map_err(|m| {
                    crate::notify::config::invalid(
                        format!("receivers[{i}].{}_configs[{j}].{field}", k.as_str()),
                        m,
                    )
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_codes_are_checked() {
        assert!(
            check_code(
                Kind::DingTalk,
                r#"{"errcode":0,"errmsg":"ok"}"#,
                &["errcode"]
            )
            .is_ok()
        );
        let e = check_code(
            Kind::DingTalk,
            r#"{"errcode":310000,"errmsg":"sign not match"}"#,
            &["errcode"],
        )
        .unwrap_err();
        assert!(e.message.contains("310000") && e.message.contains("sign not match"));
        assert!(
            check_code(
                Kind::Feishu,
                r#"{"code":19021,"msg":"bad"}"#,
                &["code", "StatusCode"]
            )
            .is_err()
        );
        assert!(check_code(Kind::WeCom, "ok", &["errcode"]).is_ok());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        use base64::Engine;
        let b64 = hmac_sha256_b64(b"Jefe", b"what do ya want for nothing?");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_lose_their_query_in_messages() {
        assert_eq!(
            redact("https://oapi.dingtalk.com/robot/send?access_token=SECRET"),
            "https://oapi.dingtalk.com/robot/send"
        );
    }
}
