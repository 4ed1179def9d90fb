/*!
The small subset of Alertmanager's notification templates (Go `text/template` over
its `Data`) that a Minos config may use in text fields such as a Slack title or an
email `Subject` header. Anything outside the subset is refused when the config loads,
naming the action, rather than rendered wrongly.

Supported actions (with `{{-` / `-}}` whitespace trimming):
```text
.Status  .Status | toUpper  .Receiver  .ExternalURL  .GroupKey
.GroupLabels.NAME  .CommonLabels.NAME  .CommonAnnotations.NAME
index .CommonLabels "NAME" (likewise GroupLabels, CommonAnnotations)
.Alerts | len  .Alerts.Firing | len  .Alerts.Resolved | len  (or len X)
template "NAME" .   NAME: __subject, email.default.subject, email.default.html,
                    email.default.text, slack.default.title, slack.default.text,
                    slack.default.fallback, slack.default.titlelink,
                    slack.default.username, __alertmanagerURL
```
*/

use crate::notify::message::Notification;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Status { upper: bool },
    Receiver,
    ExternalUrl,
    GroupKey,
    GroupLabel(String),
    CommonLabel(String),
    CommonAnnotation(String),
    CountAll,
    CountFiring,
    CountResolved,
    Named(Named),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Subject,
    Html,
    Text,
    SlackText,
    Url,
    Username,
}

impl Template {
    /// Parses `text`; the error names the first unsupported action.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut lit = &rest[..open];
            if trim_next {
                lit = lit.trim_start();
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed action in template {text:?}"))?;
            let mut action = &after[..close];
            if let Some(a) = action.strip_prefix('-') {
                lit = lit.trim_end();
                action = a;
            }
            trim_next = false;
            if let Some(a) = action.strip_suffix('-') {
                trim_next = true;
                action = a;
            }
            if !lit.is_empty() {
                parts.push(Part::Text(lit.to_string()));
            }
            parts.push(Part::Expr(parse_action(action.trim())?));
            rest = &after[close + 2..];
        }
        let lit = if trim_next { rest.trim_start() } else { rest };
        if !lit.is_empty() {
            parts.push(Part::Text(lit.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders the template for a notification.
    pub(crate) fn render(&self, n: &Notification, external_url: &str) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => out.push_str(&eval(e, n, external_url)),
            }
        }
        out
    }
}

fn eval(e: &Expr, n: &Notification, external_url: &str) -> String {
    let get = |m: crate::notify::Labels, k: &str| m.get(k).cloned().unwrap_or_default();
    match e {
        Expr::Status { upper } => {
            let s = n.status().as_str();
            if *upper {
                s.to_uppercase()
            } else {
                s.to_string()
            }
        }
        Expr::Receiver => n.receiver.clone(),
        Expr::ExternalUrl => external_url.to_string(),
        Expr::GroupKey => n.group_key.clone(),
        Expr::GroupLabel(k) => n.group_labels.get(k).cloned().unwrap_or_default(),
        Expr::CommonLabel(k) => get(n.common_labels(), k),
        Expr::CommonAnnotation(k) => get(n.common_annotations(), k),
        Expr::CountAll => n.alerts.len().to_string(),
        Expr::CountFiring => n.firing().count().to_string(),
        Expr::CountResolved => n.resolved().count().to_string(),
        Expr::Named(Named::Subject) => n.subject(),
        Expr::Named(Named::Html) => n.html_body(external_url),
        Expr::Named(Named::Text) => n.text_body(external_url),
        Expr::Named(Named::SlackText) => n.markdown("*"),
        Expr::Named(Named::Url) => external_url.to_string(),
        Expr::Named(Named::Username) => "Minos".to_string(),
    }
}

fn parse_action(a: &str) -> Result<Expr, String> {
    let words: Vec<&str> = a.split_whitespace().collect();
    let unsupported = || {
        format!(
            "unsupported template action {{{{ {a} }}}}: Minos evaluates only the fields \
             and named templates listed in its documentation"
        )
    };
    let field = |w: &str| -> Option<Expr> {
        Some(match w {
            ".Status" => Expr::Status { upper: false },
            ".Receiver" => Expr::Receiver,
            ".ExternalURL" => Expr::ExternalUrl,
            ".GroupKey" => Expr::GroupKey,
            _ => {
                if let Some(k) = w.strip_prefix(".GroupLabels.") {
                    Expr::GroupLabel(k.to_string())
                } else if let Some(k) = w.strip_prefix(".CommonLabels.") {
                    Expr::CommonLabel(k.to_string())
                } else if let Some(k) = w.strip_prefix(".CommonAnnotations.") {
                    Expr::CommonAnnotation(k.to_string())
                } else {
                    return None;
                }
            }
        })
    };
    let count = |w: &str| match w {
        ".Alerts" => Some(Expr::CountAll),
        ".Alerts.Firing" => Some(Expr::CountFiring),
        ".Alerts.Resolved" => Some(Expr::CountResolved),
        _ => None,
    };
    let unquote = |w: &str| -> Option<String> {
        w.strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .map(str::to_string)
    };
    match words.as_slice() {
        [w] => field(w).ok_or_else(unsupported),
        [".Status", "|", "toUpper"] | ["toUpper", ".Status"] => Ok(Expr::Status { upper: true }),
        [w, "|", "len"] | ["len", w] => count(w).ok_or_else(unsupported),
        ["index", map, key] => {
            let k = unquote(key).ok_or_else(unsupported)?;
            match *map {
                ".GroupLabels" => Ok(Expr::GroupLabel(k)),
                ".CommonLabels" => Ok(Expr::CommonLabel(k)),
                ".CommonAnnotations" => Ok(Expr::CommonAnnotation(k)),
                _ => Err(unsupported()),
            }
        }
        ["template", name, "."] => {
            let name = unquote(name).ok_or_else(unsupported)?;
            let named = match name.as_str() {
                "__subject"
                | "email.default.subject"
                | "slack.default.title"
                | "slack.default.fallback" => Named::Subject,
                "email.default.html" => Named::Html,
                "email.default.text" => Named::Text,
                "slack.default.text" => Named::SlackText,
                "slack.default.titlelink" | "__alertmanagerURL" => Named::Url,
                "slack.default.username" => Named::Username,
                _ => return Err(unsupported()),
            };
            Ok(Expr::Named(named))
        }
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::sample;

    #[test]
    fn renders_fields_counts_and_named_templates() {
        let n = sample();
        let t = Template::parse(
            "{{ .Status | toUpper }}: {{ .Alerts.Firing | len }}/{{ len .Alerts }} \
             {{ .CommonLabels.severity }} {{ index .GroupLabels \"alertname\" }} \
             [{{ .CommonAnnotations.missing }}]",
        )
        .unwrap();
        assert_eq!(t.render(&n, "http://x"), "FIRING: 2/3 warning HighCPU []");
        let s = Template::parse("{{ template \"email.default.subject\" . }}").unwrap();
        assert_eq!(s.render(&n, ""), n.subject());
    }

    #[test]
    fn trims_whitespace_like_go() {
        let t = Template::parse("a  {{- .Receiver -}}  b").unwrap();
        assert_eq!(t.render(&sample(), ""), "ateamb");
    }

    #[test]
    fn unsupported_actions_are_refused_by_name() {
        for bad in [
            "{{ range .Alerts }}x{{ end }}",
            "{{ .Alerts.Firing }}",
            "{{ template \"custom\" . }}",
            "{{ .Status",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains("template"), "{bad}: {e}");
        }
    }
}
