/*!
Alertmanager's notification templates in receivers' text fields (a Slack title, an
email subject or header, a DingTalk text...), run by the crate's template engine
([`crate::template`]) in its Alertmanager dialect: Go's `text/template` over
Alertmanager's `template.Data`, with Alertmanager's functions.

Three pieces:
- [`Template`]: one field's text, parsed when the config loads (unknown functions
  and syntax errors are refused then);
- the template set: the built-in named templates below, then the `{{ define }}`s of
  the config's `templates:` files ([`load_files`]), which may replace them;
- [`Render`]: renders the fields of one integration for one notification. A field
  whose template fails at send time falls back to the built-in text, and the error
  is kept for the notification log, so that a broken template never loses a
  notification.

At load time [`Template::check`] also refuses what the engine can tell is wrong
whatever the alerts: a `{{ template }}` of a name nobody defines, and, by rendering
the field once on a sample notification, fields that do not exist
(`.CommonLabels.SortedPairs.Foo`, `.Alerts.Firng`).

# Built-in named templates
Written for Minos, with Alertmanager's names, they render what a receiver sends
when the field is not set (the unit tests pin that they agree with [`Notification`]'s
renderings):
```text
__subject, email.default.subject, slack.default.title, slack.default.fallback,
dingtalk.default.title, feishu.default.title, wecom.default.title
                           [FIRING:2] HighCPU (warning)
email.default.text         Notification::text_body
email.default.html         Notification::html_body (in an HTML field)
slack.default.text         Notification::markdown("*")
dingtalk.default.text, feishu.default.text, wecom.default.text
                           Notification::markdown("**")
__text_alert_list          the per-alert blocks of the text body (dot: alerts)
__alertmanagerURL, slack.default.titlelink
                           the external URL
__alertmanager, slack.default.username
                           Minos
slack.default.pretext, .iconemoji, .iconurl, .footer, .callbackid, __description
                           empty
```
*/

use std::path::Path;
use std::sync::OnceLock;

use crate::notify::config::{ConfigError, invalid};
use crate::notify::message::{AlertStatus, Notification};
use crate::template::{NotificationAlert, NotificationData, TemplateSet};

/// A parsed text field.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    inner: crate::template::Template,
}

/// Template files larger than this are refused.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Expands a [`Template::check`] render error into "the config is wrong" only for
/// these messages; others (an index out of range...) depend on the alerts.
const STATIC_ERRORS: [&str; 3] = ["can't evaluate field", "not defined", "is not a method"];

impl Template {
    /// Parses `text`; the error names the position and the problem.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        crate::template::Template::parse_notification("field", text)
            .map(|inner| Template { inner })
            .map_err(|e| e.message)
    }

    /// Renders the template for `data` with the named templates of `set`.
    fn render(
        &self,
        data: &NotificationData,
        set: &TemplateSet,
        html: bool,
    ) -> Result<String, String> {
        self.inner
            .execute_notification(data, Some(set), html)
            .map_err(|e| e.message)
    }

    /// Refuses a template that cannot work whatever the alerts: one calling a
    /// template nobody defines, or using a field or method that does not exist
    /// (found by rendering it on a sample notification).
    pub(crate) fn check(&self, set: &TemplateSet, html: bool) -> Result<(), String> {
        if let Some(name) = self
            .inner
            .called_templates()
            .into_iter()
            .find(|n| !set.contains(n))
        {
            return Err(format!(
                "template {name:?} is not defined (in the text, the templates files or \
                 the built-in templates)"
            ));
        }
        match self.render(&sample_data(), set, html) {
            Err(e) if STATIC_ERRORS.iter().any(|s| e.contains(s)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Renders the template fields of one integration for one notification.
pub(crate) struct Render<'a> {
    data: NotificationData,
    set: &'a TemplateSet,
    /// Errors of fields that fell back to their built-in text.
    errors: Vec<String>,
}

impl<'a> Render<'a> {
    pub(crate) fn new(n: &Notification, external_url: &str, set: &'a TemplateSet) -> Render<'a> {
        Render {
            data: data(n, external_url, crate::notify::now_ms()),
            set,
            errors: Vec::new(),
        }
    }

    /// Field `name`: its template's output, or `default()` when the field is not
    /// set or its template fails (the error is kept, see [`Render::errors`]).
    pub(crate) fn text(
        &mut self,
        name: &str,
        t: Option<&Template>,
        default: impl FnOnce() -> String,
    ) -> String {
        self.field(name, t, false, default)
    }

    /// Like [`Render::text`] for an HTML field: what actions print is escaped.
    pub(crate) fn html(
        &mut self,
        name: &str,
        t: Option<&Template>,
        default: impl FnOnce() -> String,
    ) -> String {
        self.field(name, t, true, default)
    }

    fn field(
        &mut self,
        name: &str,
        t: Option<&Template>,
        html: bool,
        default: impl FnOnce() -> String,
    ) -> String {
        let Some(t) = t else {
            return default();
        };
        match t.render(&self.data, self.set, html) {
            Ok(s) => s,
            Err(e) => {
                self.errors.push(format!("template {name}: {e}"));
                default()
            }
        }
    }

    /// The errors of the fields that fell back to their built-in text.
    pub(crate) fn errors(self) -> Vec<String> {
        self.errors
    }
}

/// Alertmanager's `template.Data` for a notification.
pub(crate) fn data(n: &Notification, external_url: &str, now_ms: i64) -> NotificationData {
    NotificationData {
        receiver: n.receiver.clone(),
        status: n.status().as_str().to_string(),
        alerts: n
            .alerts
            .iter()
            .map(|a| NotificationAlert {
                status: a.status.as_str().to_string(),
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at_ms: a.starts_at,
                ends_at_ms: a.ends_at,
                generator_url: a.generator_url.clone(),
                fingerprint: a.fingerprint.to_string(),
                acked_by: a.acked_by.clone().unwrap_or_default(),
            })
            .collect(),
        group_labels: n.group_labels.clone(),
        common_labels: n.common_labels(),
        common_annotations: n.common_annotations(),
        external_url: external_url.to_string(),
        group_key: n.group_key.clone(),
        escalated: n.escalation,
        now_ms,
    }
}

/// The notification [`Template::check`] renders: one firing and one resolved alert.
fn sample_data() -> NotificationData {
    use crate::notify::message::NotifiedAlert;
    let alert = |instance: &str, status: AlertStatus| {
        let labels: crate::notify::Labels = [
            ("alertname", "Sample"),
            ("instance", instance),
            ("severity", "warning"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        NotifiedAlert {
            fingerprint: crate::notify::fingerprint(&labels),
            status,
            labels,
            annotations: [("summary".to_string(), "sample".to_string())].into(),
            starts_at: 1_700_000_000_000,
            ends_at: (status == AlertStatus::Resolved).then_some(1_700_000_300_000),
            generator_url: "http://prometheus.example/graph".into(),
            acked_by: None,
        }
    };
    let n = Notification {
        receiver: "sample".into(),
        group_key: "{}:{alertname=\"Sample\"}".into(),
        group_labels: [("alertname".to_string(), "Sample".to_string())].into(),
        alerts: vec![
            alert("a:9100", AlertStatus::Firing),
            alert("b:9100", AlertStatus::Resolved),
        ],
        escalation: false,
        created_at: 1_700_000_300_000,
        resend_ttl_ms: 0,
    };
    data(&n, "http://minos.example", 1_700_000_600_000)
}

/// The built-in named templates (see the module docs).
pub(crate) fn builtin() -> &'static TemplateSet {
    static SET: OnceLock<TemplateSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = TemplateSet::new();
        set.add_file("minos.tmpl", &builtin_text())
            .expect("the built-in templates parse");
        set
    })
}

/// How a time reads in the built-in messages (`notify::time::format_human`).
const HUMAN_TIME: &str = "2006-01-02 15:04:05 MST";

/// The Markdown list of alerts (`Notification::markdown`) with `b` as the strong
/// marker.
fn markdown_text(b: &str) -> String {
    // One alert: its name, the labels that set it apart from the others (all of them
    // when it is alone), its summary, since when or until when, who acknowledged it.
    let line = format!(
        r#"- {b}{{{{ or .Labels.alertname "alert" }}}}{b}{{{{ $shown := "" }}}}{{{{ range $k, $v := .Labels }}}}{{{{ if and (ne $k "alertname") (ne (index $common $k) $v) }}}}{{{{ $shown = printf "%s %s=%s" $shown $k $v }}}}{{{{ end }}}}{{{{ end }}}}{{{{ if and (not $shown) $one }}}}{{{{ range $k, $v := .Labels }}}}{{{{ if ne $k "alertname" }}}}{{{{ $shown = printf "%s %s=%s" $shown $k $v }}}}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}{{{{ $shown }}}}{{{{ with or .Annotations.summary .Annotations.description }}}}: {{{{ . }}}}{{{{ end }}}}{{{{ if .EndsAt.IsZero }}}} (since {{{{ .StartsAt.Format "{HUMAN_TIME}" }}}}){{{{ else }}}} (ended {{{{ .EndsAt.Format "{HUMAN_TIME}" }}}}){{{{ end }}}}{{{{ with .AckedBy }}}} [acknowledged by {{{{ . }}}}]{{{{ end }}}}
"#
    );
    format!(
        r#"{{{{ if .Escalated }}}}{b}Escalated{b}: not acknowledged in time.
{{{{ end }}}}{{{{ $common := .CommonLabels }}}}{{{{ $one := eq (len .Alerts) 1 }}}}{{{{ with .Alerts.Firing }}}}{b}Firing ({{{{ len . }}}}){b}
{{{{ range . }}}}{line}{{{{ end }}}}{{{{ end }}}}{{{{ with .Alerts.Resolved }}}}{b}Resolved ({{{{ len . }}}}){b}
{{{{ range . }}}}{line}{{{{ end }}}}{{{{ end }}}}"#
    )
}

/// The text of the built-in templates.
fn builtin_text() -> String {
    let subject = r#"{{ define "__subject" }}[{{ if eq .Status "firing" }}FIRING:{{ .Alerts.Firing | len }}{{ else }}RESOLVED{{ end }}]{{ if .Escalated }} [ESCALATED]{{ end }}{{ range .GroupLabels }} {{ . }}{{ end }}{{ with .CommonLabels.Remove .GroupLabels.Names }} ({{ $sep := "" }}{{ range . }}{{ $sep }}{{ . }}{{ $sep = " " }}{{ end }}){{ end }}{{ end }}
{{ define "__minos.pairs" }}{{ $sep := "" }}{{ range $k, $v := . }}{{ $sep }}{{ $k }}={{ $v }}{{ $sep = " " }}{{ end }}{{ end }}
{{ define "__alertmanager" }}Minos{{ end }}
{{ define "__alertmanagerURL" }}{{ .ExternalURL }}{{ end }}
{{ define "__description" }}{{ end }}
"#;
    let text_list = format!(
        r#"{{{{ define "__text_alert_list" }}}}{{{{ range . }}}}Labels:
{{{{ range $k, $v := .Labels }}}} - {{{{ $k }}}} = {{{{ $v }}}}
{{{{ end }}}}{{{{ if .Annotations }}}}Annotations:
{{{{ range $k, $v := .Annotations }}}} - {{{{ $k }}}} = {{{{ $v }}}}
{{{{ end }}}}{{{{ end }}}}Started: {{{{ .StartsAt.Format "{HUMAN_TIME}" }}}}
{{{{ if not .EndsAt.IsZero }}}}Ended: {{{{ .EndsAt.Format "{HUMAN_TIME}" }}}}
{{{{ end }}}}{{{{ with .AckedBy }}}}Acknowledged by: {{{{ . }}}}
{{{{ end }}}}{{{{ with .GeneratorURL }}}}Source: {{{{ . }}}}
{{{{ end }}}}
{{{{ end }}}}{{{{ end }}}}
"#
    );
    let text_section = |which: &str| {
        format!(
            r#"{{{{ with .Alerts.{which} }}}}
{{{{ $head := printf "{which} (%d)" (len .) }}}}{{{{ $head }}}}
{{{{ reReplaceAll "." "-" $head }}}}
{{{{ template "__text_alert_list" . }}}}{{{{ end }}}}"#
        )
    };
    let email_text = format!(
        r#"{{{{ define "email.default.text" }}}}{{{{ template "__subject" . }}}}

{{{{ len .Alerts }}}} alert{{{{ if ne (len .Alerts) 1 }}}}s{{{{ end }}}} for {{{{ template "__minos.pairs" .GroupLabels }}}}
{{{{ if .Escalated }}}}
Escalated: these alerts were not acknowledged in time.
{{{{ end }}}}{}{}{{{{ if .ExternalURL }}}}--
Sent by Minos: {{{{ .ExternalURL }}}}
{{{{ end }}}}{{{{ end }}}}
"#,
        text_section("Firing"),
        text_section("Resolved"),
    );
    let html_section = |which: &str| {
        format!(
            r#"{{{{ with .Alerts.{which} }}}}<h3>[{{{{ len . }}}}] {which}</h3>
{{{{ range . }}}}<table style="border-collapse: collapse; margin-bottom: 16px;">
<tr><th colspan="2" style="text-align: left;">Labels</th></tr>
{{{{ range $k, $v := .Labels }}}}<tr><td>{{{{ $k }}}}</td><td>{{{{ $v }}}}</td></tr>
{{{{ end }}}}{{{{ if .Annotations }}}}<tr><th colspan="2" style="text-align: left;">Annotations</th></tr>
{{{{ range $k, $v := .Annotations }}}}<tr><td>{{{{ $k }}}}</td><td>{{{{ $v }}}}</td></tr>
{{{{ end }}}}{{{{ end }}}}<tr><td>Started</td><td>{{{{ .StartsAt.Format "{HUMAN_TIME}" }}}}</td></tr>
{{{{ if not .EndsAt.IsZero }}}}<tr><td>Ended</td><td>{{{{ .EndsAt.Format "{HUMAN_TIME}" }}}}</td></tr>
{{{{ end }}}}{{{{ with .AckedBy }}}}<tr><td>Acknowledged by</td><td>{{{{ . }}}}</td></tr>
{{{{ end }}}}{{{{ with .GeneratorURL }}}}<tr><td colspan="2"><a href="{{{{ . }}}}">Source</a></td></tr>
{{{{ end }}}}</table>
{{{{ end }}}}{{{{ end }}}}"#
        )
    };
    let email_html = format!(
        r#"{{{{ define "email.default.html" }}}}<!DOCTYPE html>
<html><head><meta charset="UTF-8"><title>{{{{ template "__subject" . }}}}</title></head>
<body style="font-family: Helvetica, Arial, sans-serif; font-size: 14px;">
<h2 style="background-color: {{{{ if eq .Status "firing" }}}}#E6522C{{{{ else }}}}#2E9E4F{{{{ end }}}}; color: #fff; padding: 12px;">{{{{ template "__subject" . }}}}</h2>
<p>{{{{ len .Alerts }}}} alert{{{{ if ne (len .Alerts) 1 }}}}s{{{{ end }}}} for {{{{ template "__minos.pairs" .GroupLabels }}}}</p>
{{{{ if .Escalated }}}}<p><strong>Escalated:</strong> these alerts were not acknowledged in time.</p>
{{{{ end }}}}{}{}{{{{ with .ExternalURL }}}}<p style="color: #999;"><a href="{{{{ . }}}}">Sent by Minos</a></p>
{{{{ end }}}}</body></html>
{{{{ end }}}}
"#,
        html_section("Firing"),
        html_section("Resolved"),
    );
    let mut s = String::new();
    s.push_str(subject);
    s.push_str(&text_list);
    s.push_str(&email_text);
    s.push_str(&email_html);
    for (name, body) in [
        ("email.default.subject", r#"{{ template "__subject" . }}"#),
        ("slack.default.title", r#"{{ template "__subject" . }}"#),
        ("slack.default.fallback", r#"{{ template "__subject" . }}"#),
        (
            "slack.default.titlelink",
            r#"{{ template "__alertmanagerURL" . }}"#,
        ),
        (
            "slack.default.username",
            r#"{{ template "__alertmanager" . }}"#,
        ),
        ("slack.default.pretext", ""),
        ("slack.default.iconemoji", ""),
        ("slack.default.iconurl", ""),
        ("slack.default.footer", ""),
        ("slack.default.callbackid", ""),
        ("dingtalk.default.title", r#"{{ template "__subject" . }}"#),
        ("feishu.default.title", r#"{{ template "__subject" . }}"#),
        ("wecom.default.title", r#"{{ template "__subject" . }}"#),
    ] {
        s.push_str(&format!("{{{{ define \"{name}\" }}}}{body}{{{{ end }}}}\n"));
    }
    s.push_str(&format!(
        "{{{{ define \"slack.default.text\" }}}}{}{{{{ end }}}}\n",
        markdown_text("*")
    ));
    s.push_str(&format!(
        "{{{{ define \"__minos.markdown\" }}}}{}{{{{ end }}}}\n",
        markdown_text("**")
    ));
    for kind in ["dingtalk", "feishu", "wecom"] {
        s.push_str(&format!(
            "{{{{ define \"{kind}.default.text\" }}}}{{{{ template \"__minos.markdown\" . }}}}{{{{ end }}}}\n"
        ));
    }
    s
}

/// The template set of a config: the built-in templates, then the files matching
/// each glob of `templates:` in order (relative globs are taken from `base`, the
/// config file's directory, as in Alertmanager). A glob matching nothing is fine; a
/// file that cannot be read or parsed is an error naming it and the line.
pub(crate) fn load_files(
    globs: &[String],
    base: Option<&Path>,
) -> Result<TemplateSet, ConfigError> {
    let mut set = builtin().clone();
    for (i, g) in globs.iter().enumerate() {
        let path = format!("templates[{i}]");
        let pattern = match base {
            Some(b) if Path::new(g).is_relative() => b.join(g).to_string_lossy().into_owned(),
            _ => g.clone(),
        };
        let paths =
            glob::glob(&pattern).map_err(|e| invalid(&path, format!("invalid glob {g:?}: {e}")))?;
        for p in paths {
            let p = p.map_err(|e| invalid(&path, e.to_string()))?;
            if p.is_dir() {
                continue;
            }
            let size = std::fs::metadata(&p)
                .map_err(|e| invalid(&path, format!("{}: {e}", p.display())))?
                .len();
            if size > MAX_FILE_BYTES {
                return Err(invalid(
                    &path,
                    format!("{}: larger than {MAX_FILE_BYTES} bytes", p.display()),
                ));
            }
            let text = std::fs::read_to_string(&p)
                .map_err(|e| invalid(&path, format!("{}: {e}", p.display())))?;
            let name = p
                .file_name()
                .map_or_else(|| p.to_string_lossy(), |n| n.to_string_lossy());
            set.add_file(&name, &text)
                .map_err(|e| invalid(&path, format!("{}:{}", p.display(), e.message)))?;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    fn render(text: &str, n: &Notification, url: &str) -> String {
        Template::parse(text)
            .unwrap()
            .render(&data(n, url, 0), builtin(), false)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn renders_fields_counts_and_named_templates() {
        let n = sample();
        assert_eq!(
            render(
                "{{ .Status | toUpper }}: {{ .Alerts.Firing | len }}/{{ len .Alerts }} \
                 {{ .CommonLabels.severity }} {{ index .GroupLabels \"alertname\" }} \
                 [{{ .CommonAnnotations.missing }}]",
                &n,
                "http://x"
            ),
            "FIRING: 2/3 warning HighCPU []"
        );
        assert_eq!(
            render("{{ template \"email.default.subject\" . }}", &n, ""),
            n.subject()
        );
    }

    #[test]
    fn trims_whitespace_like_go() {
        assert_eq!(render("a  {{- .Receiver -}}  b", &sample(), ""), "ateamb");
    }

    /// Variations of the sample: escalated, acknowledged, resolved only, one alert,
    /// group labels that are not all common, no external URL.
    fn variants() -> Vec<Notification> {
        let n = sample();
        let mut escalated = n.clone();
        escalated.escalation = true;
        escalated.alerts[0].acked_by = Some("ann <ops>".into());
        let mut resolved = n.clone();
        resolved
            .alerts
            .retain(|a| a.status == AlertStatus::Resolved);
        let mut one = n.clone();
        one.alerts.truncate(1);
        one.alerts[0].annotations.clear();
        one.alerts[0].generator_url.clear();
        let mut grouped = n.clone();
        grouped
            .group_labels
            .insert("cluster".into(), "eu \"1\"".into());
        for a in &mut grouped.alerts {
            a.labels.insert("cluster".into(), "eu \"1\"".into());
        }
        grouped.alerts[1]
            .annotations
            .insert("description".into(), "x & y".into());
        let mut many = n.clone();
        for i in 0..11 {
            let mut a = n.alerts[0].clone();
            a.labels.insert("instance".into(), format!("h{i}"));
            many.alerts.push(a);
        }
        vec![n, escalated, resolved, one, grouped, many]
    }

    #[test]
    fn built_in_templates_render_the_built_in_messages() {
        for (i, n) in variants().into_iter().enumerate() {
            for url in ["http://minos", ""] {
                let d = data(&n, url, 0);
                let run = |name: &str, html: bool| {
                    Template::parse(&format!("{{{{ template \"{name}\" . }}}}"))
                        .unwrap()
                        .render(&d, builtin(), html)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                };
                assert_eq!(run("__subject", false), n.subject(), "{i}");
                assert_eq!(run("slack.default.title", false), n.subject(), "{i}");
                assert_eq!(
                    run("email.default.text", false),
                    n.text_body(url),
                    "{i} {url}"
                );
                assert_eq!(
                    run("email.default.html", true),
                    n.html_body(url),
                    "{i} {url}"
                );
                assert_eq!(run("slack.default.text", false), n.markdown("*"), "{i}");
                assert_eq!(run("dingtalk.default.text", false), n.markdown("**"), "{i}");
                assert_eq!(run("slack.default.titlelink", false), url);
                assert_eq!(run("slack.default.username", false), "Minos");
            }
        }
    }

    #[test]
    fn a_failing_field_falls_back_and_keeps_the_error() {
        let n = sample();
        let set = builtin();
        let mut r = Render::new(&n, "", set);
        let bad = Template::parse("{{ index .Alerts 9 }}").unwrap();
        let good = Template::parse("{{ .Receiver }}").unwrap();
        assert_eq!(r.text("title", Some(&good), || "x".into()), "team");
        assert_eq!(r.text("text", Some(&bad), || "default".into()), "default");
        assert_eq!(r.text("other", None, || "unset".into()), "unset");
        let errors = r.errors();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("template text: ") && errors[0].contains("index out of range"),
            "{errors:?}"
        );
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        let set = builtin();
        for (text, want) in [
            ("{{ template \"nope\" . }}", "\"nope\" is not defined"),
            ("{{ .Alerts.Firng }}", "can't evaluate field Firng"),
            (
                "{{ range .Alerts }}{{ .Lables.x }}{{ end }}",
                "can't evaluate field Lables",
            ),
            (
                "{{ .CommonLabels.SortedPairs.Foo }}",
                "can't evaluate field Foo",
            ),
        ] {
            let e = Template::parse(text)
                .unwrap()
                .check(set, false)
                .unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        for ok in [
            "{{ index .Alerts 5 }}",
            "{{ define \"mine\" }}x{{ end }}{{ template \"mine\" . }}",
            "{{ template \"slack.default.text\" . }}",
        ] {
            Template::parse(ok).unwrap().check(set, false).unwrap();
        }
        let e = Template::parse("{{ query \"up\" }}").unwrap_err();
        assert!(e.contains("function \"query\" not defined"), "{e}");
        // dict's arguments are checked when the config loads.
        let e = Template::parse("{{ dict \"a\" }}").unwrap_err();
        assert!(
            e.contains("dict requires an even number of arguments"),
            "{e}"
        );
        let e = Template::parse("{{ dict 1 2 }}").unwrap_err();
        assert!(e.contains("dict keys must be strings"), "{e}");
        let t = Template::parse("{{ toJson (dict \"a\" (append (list) .Status)) }}").unwrap();
        t.check(set, true).unwrap();
        assert_eq!(
            t.render(&sample_data(), set, false).unwrap(),
            r#"{"a":["firing"]}"#
        );
    }

    #[test]
    fn files_are_loaded_relative_to_the_base_and_may_override() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.tmpl"),
            "{{ define \"__subject\" }}custom {{ .Status }}{{ end }}\n{{ define \"mine\" }}M{{ end }}",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.txt"), "{{ define \"other\" }}{{ end }}").unwrap();
        let set = load_files(
            &["*.tmpl".into(), "missing/*.tmpl".into()],
            Some(dir.path()),
        )
        .unwrap();
        assert!(set.contains("mine") && set.contains("a.tmpl") && !set.contains("other"));
        let t =
            Template::parse("{{ template \"slack.default.title\" . }}/{{ template \"mine\" . }}")
                .unwrap();
        assert_eq!(
            t.render(&data(&sample(), "", 0), &set, false).unwrap(),
            "custom firing/M"
        );

        std::fs::write(
            dir.path().join("bad.tmpl"),
            "ok\n{{ define \"x\" }}{{ .Foo | nosuch }}{{ end }}\n",
        )
        .unwrap();
        let e = load_files(&["bad.tmpl".into()], Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("templates[0]: ")
                && e.contains("bad.tmpl:2:27: function \"nosuch\" not defined"),
            "{e}"
        );
    }
}
