/*!
Defines what the chat robots (DingTalk, Feishu/Lark, WeCom) share. Each is a webhook
URL, an optional signing secret, `title` and `text` template fields and
`send_resolved`, validated into one [`Robot`], and each delivers the same way: render
the two fields (unset, the subject line and the Markdown list of alerts, which the
built-in `<kind>.default.title` and `<kind>.default.text` templates reproduce), build
the vendor's body, sign the request, POST it, and read the vendor's error code from
the answer (robots report errors with HTTP 200 and a code).

What differs is a [`Vendor`], implemented by a marker type in each vendor's file next
to the module doc that gives its message format and signing. Each vendor's file also
keeps its own `Raw`, the YAML block as written, because the key sets differ (WeCom
has no `secret`) and `deny_unknown_fields` lists them in its error.
*/

use std::marker::PhantomData;

use serde_json::Value;

use crate::notify::config::{Secret, invalid};
use crate::notify::integrations::{
    Context, Kind, SendError, check_code, check_url, post_json, template_field,
};
use crate::notify::message::Notification;
use crate::notify::template::{Render, Template};
use crate::notify::{ConfigError, now_ms};

/// What one vendor's robots do their own way.
pub trait Vendor: Sized {
    /// The kind, for counters, the notification log and error messages.
    const KIND: Kind;

    /// The fields of the answer that carry the error code (see `check_code`).
    const CODE_FIELDS: &'static [&'static str];

    /// The unsigned request body for the rendered `title` and `text`, cut to the
    /// vendor's size limit.
    fn body(n: &Notification, title: String, text: String) -> Value;

    /// Signs the request at `now_ms` (Unix milliseconds) when `robot` has a secret,
    /// adding to `body` what the vendor wants there, and returns the URL to POST to.
    fn sign_request(robot: &Robot<Self>, body: &mut Value, now_ms: i64) -> String;
}

/// The fields every robot's YAML block has, as written: each vendor's `Raw` hands
/// them over to be validated.
pub(super) struct RawRobot {
    pub(super) send_resolved: Option<bool>,
    pub(super) url: Option<Secret>,
    pub(super) secret: Option<Secret>,
    pub(super) title: Option<String>,
    pub(super) text: Option<String>,
}

/// A validated chat robot of vendor `V` (`dingtalk::DingTalk`, `feishu::Feishu`,
/// `wecom::WeCom`).
#[derive(Debug, Clone)]
pub struct Robot<V> {
    pub send_resolved: bool,
    /// The webhook URL; its query string may carry the robot's token.
    pub(super) url: Secret,
    /// The signing secret, never empty: an empty `secret` is no secret.
    pub(super) secret: Option<Secret>,
    title: Option<Template>,
    text: Option<Template>,
    vendor: PhantomData<fn() -> V>,
}

impl RawRobot {
    /// Checks the fields at `path` (`receivers[0].dingtalk_configs[1]`): `url` is
    /// required and must be an http(s) URL, `title` and `text` must parse.
    pub(super) fn validate<V>(self, path: &str) -> Result<Robot<V>, ConfigError> {
        let url = self
            .url
            .ok_or_else(|| invalid(format!("{path}.url"), "required"))?;
        check_url(&format!("{path}.url"), &url.0)?;
        Ok(Robot {
            send_resolved: self.send_resolved.unwrap_or(true),
            url,
            secret: self.secret.filter(|s| !s.0.is_empty()),
            title: template_field(path, "title", self.title.as_deref())?,
            text: template_field(path, "text", self.text.as_deref())?,
            vendor: PhantomData,
        })
    }
}

impl<V: Vendor> Robot<V> {
    /// The unsigned request body, with the built-in named templates.
    pub(super) fn unsigned_payload(&self, n: &Notification) -> Value {
        let set = crate::notify::template::builtin();
        self.render(n, &mut Render::new(n, "", set))
    }

    /// The template fields, for checking at load time.
    pub(crate) fn templates(&self) -> Vec<(String, &Template, bool)> {
        super::set_fields(&[("title", &self.title), ("text", &self.text)])
    }

    /// The unsigned request body, rendering the template fields with `r`.
    fn render(&self, n: &Notification, r: &mut Render<'_>) -> Value {
        let title = r.text("title", self.title.as_ref(), || n.subject());
        let text = r.text("text", self.text.as_ref(), || n.markdown("**"));
        V::body(n, title, text)
    }

    pub(crate) async fn send(
        &self,
        cx: &Context,
        n: &Notification,
    ) -> Result<Vec<String>, SendError> {
        let mut r = Render::new(n, &cx.external_url, &cx.templates);
        let mut payload = self.render(n, &mut r);
        let url = V::sign_request(self, &mut payload, now_ms());
        let body = post_json(cx, &url, &payload).await?;
        check_code(V::KIND, &body, V::CODE_FIELDS)?;
        Ok(r.errors())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::message::tests::sample;

    /// A vendor that sends the rendered fields as they are, unsigned.
    #[derive(Debug, Clone)]
    struct Echo;

    impl Vendor for Echo {
        const KIND: Kind = Kind::WeCom;
        const CODE_FIELDS: &'static [&'static str] = &["errcode"];

        fn body(_: &Notification, title: String, text: String) -> Value {
            json!({"title": title, "text": text})
        }

        fn sign_request(robot: &Robot<Echo>, _: &mut Value, _: i64) -> String {
            robot.url.0.clone()
        }
    }

    fn raw(url: Option<&str>, secret: &str, title: Option<&str>) -> RawRobot {
        RawRobot {
            send_resolved: None,
            url: url.map(|u| Secret(u.into())),
            secret: Some(Secret(secret.into())),
            title: title.map(String::from),
            text: None,
        }
    }

    #[test]
    fn validation_names_the_field_and_drops_an_empty_secret() {
        let e = raw(None, "", None).validate::<Echo>("r").unwrap_err();
        assert!(e.to_string().contains("r.url"), "{e}");
        let e = raw(Some("ftp://x"), "", None)
            .validate::<Echo>("r")
            .unwrap_err();
        assert!(e.to_string().contains("r.url"), "{e}");
        let e = raw(Some("http://x/"), "", Some("{{ nosuch }}"))
            .validate::<Echo>("r")
            .unwrap_err();
        assert!(e.to_string().contains("r.title"), "{e}");

        let r = raw(Some("http://x/"), "", None)
            .validate::<Echo>("r")
            .unwrap();
        assert!(r.send_resolved, "robots send resolved alerts by default");
        assert!(r.secret.is_none());
        assert!(r.templates().is_empty());
        let r = raw(Some("http://x/"), "s", Some("{{ .Status }}"))
            .validate::<Echo>("r")
            .unwrap();
        assert_eq!(r.secret.as_ref().map(|s| s.0.as_str()), Some("s"));
        assert_eq!(r.templates().len(), 1);
    }

    #[test]
    fn unset_fields_are_the_subject_and_the_markdown_list() {
        let r = raw(Some("http://x/"), "", None)
            .validate::<Echo>("r")
            .unwrap();
        let n = sample();
        assert_eq!(
            r.unsigned_payload(&n),
            json!({"title": n.subject(), "text": n.markdown("**")})
        );
    }

    #[test]
    fn a_failing_field_falls_back_and_is_reported() {
        let r = raw(Some("http://x/"), "", Some("{{ template \"nosuch\" . }}"))
            .validate::<Echo>("r")
            .unwrap();
        let n = sample();
        let mut render = Render::new(&n, "", crate::notify::template::builtin());
        let body = r.render(&n, &mut render);
        assert_eq!(body["title"], n.subject());
        let errors = render.errors();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("template title:"), "{errors:?}");
    }
}
