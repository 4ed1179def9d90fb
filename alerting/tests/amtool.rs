//! Agreement with Alertmanager's own renderer: each notification template below gives
//! the same text under Minos' engine (its Alertmanager dialect) and under
//! `amtool template render`, on the same data (`--template.data`, a JSON file this
//! test writes from the data it gives the engine) and the same template file
//! (`testdata/templates/crosscheck.tmpl`). amtool is Debian's `prometheus-alertmanager`
//! package (0.25); without it the comparison is skipped with a message
//! (`MINOS_REQUIRE_AMTOOL=1` makes a missing amtool a failure), and the expected
//! outputs written here are still checked against the engine.
//!
//! Alertmanager 0.25 predates `date`, `tz`, `since`, `trimSpace`, `urlUnescape`,
//! `safeUrl`, `toJson`, `list`, `append`, `dict` and the `String` methods of `KV` and
//! `Pairs` (so it prints a KV as `map[...]`, where newer versions and Minos print
//! `a=1, b=2`): the cases avoid those, which the engine's unit tests cover. Its HTML
//! fields are Go's `html/template`, so the HTML cases check the contextual escaping
//! (attributes, URL filtering and percent-encoding) too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use alerting::notify::format_rfc3339;
use alerting::template::{NotificationAlert, NotificationData, Template, TemplateSet};

fn template_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/templates/crosscheck.tmpl")
}

/// The amtool to compare with, if installed.
fn amtool() -> Option<PathBuf> {
    let p = std::env::var_os("AMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/amtool"));
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("MINOS_REQUIRE_AMTOOL").is_some() {
        panic!(
            "{}: amtool is required (MINOS_REQUIRE_AMTOOL) but missing",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found: install Debian's `prometheus-alertmanager` package to \
         compare with amtool",
        p.display()
    );
    None
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Two firing alerts and a resolved one.
fn data() -> NotificationData {
    let alert = |instance: &str, firing: bool, extra: &[(&str, &str)]| {
        let mut labels = kv(&[
            ("alertname", "HighCPU"),
            ("instance", instance),
            ("job", "node"),
            ("severity", "warning"),
        ]);
        labels.extend(kv(extra));
        NotificationAlert {
            status: if firing { "firing" } else { "resolved" }.into(),
            labels,
            annotations: kv(&[
                ("summary", "CPU <high> & \"hot\""),
                ("runbook", "http://wiki/cpu?host=web%2D01"),
            ]),
            starts_at_ms: 1_714_564_800_000,
            ends_at_ms: (!firing).then_some(1_714_565_100_000),
            generator_url: format!(
                "http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22{instance}%22%7D"
            ),
            fingerprint: format!("{:016x}", instance.len() * 7919),
            acked_by: String::new(),
        }
    };
    NotificationData {
        receiver: "team-x".into(),
        status: "firing".into(),
        alerts: vec![
            alert("web-01:9100", true, &[("zone", "eu-1")]),
            alert("web-02:9100", true, &[]),
            alert("db-01:9100", false, &[("zone", "us-2")]),
        ],
        group_labels: kv(&[("alertname", "HighCPU"), ("job", "node")]),
        common_labels: kv(&[
            ("alertname", "HighCPU"),
            ("job", "node"),
            ("severity", "warning"),
        ]),
        common_annotations: kv(&[("runbook", "http://wiki/cpu?host=web%2D01")]),
        external_url: "http://minos.example:9093".into(),
        ..NotificationData::default()
    }
}

/// The data as Alertmanager's `template.Data` JSON, for `--template.data`.
fn data_json(d: &NotificationData) -> String {
    let alerts: Vec<serde_json::Value> = d
        .alerts
        .iter()
        .map(|a| {
            serde_json::json!({
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": format_rfc3339(a.starts_at_ms),
                "endsAt": a.ends_at_ms.map_or("0001-01-01T00:00:00Z".to_string(), format_rfc3339),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "receiver": d.receiver,
        "status": d.status,
        "alerts": alerts,
        "groupLabels": d.group_labels,
        "commonLabels": d.common_labels,
        "commonAnnotations": d.common_annotations,
        "externalURL": d.external_url,
    })
    .to_string()
}

/// (template text, HTML field, expected output).
const CASES: &[(&str, bool, &str)] = &[
    // define/template from the file; range, SortedPairs, toUpper, len of Firing.
    (
        r#"{{ template "xc.text" . }}"#,
        false,
        "[FIRING:2] HighCPU\nFiring:\n* HighCPU on web-01:9100 (firing)\n  alertname: `HighCPU`\n  instance: `web-01:9100`\n  job: `node`\n  severity: `warning`\n  zone: `eu-1`\n* HighCPU on web-02:9100 (firing)\n  alertname: `HighCPU`\n  instance: `web-02:9100`\n  job: `node`\n  severity: `warning`\nResolved:\n* HighCPU on db-01:9100 (resolved)\n  alertname: `HighCPU`\n  instance: `db-01:9100`\n  job: `node`\n  severity: `warning`\n  zone: `us-2`\n",
    ),
    // The title of the brief's example.
    (
        r#"[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }}"#,
        false,
        "[FIRING:2] HighCPU",
    ),
    // Remove with stringSlice, then the remaining pairs.
    (
        r#"{{ range (.CommonLabels.Remove .GroupLabels.Names).SortedPairs }}{{ .Name }}={{ .Value }} {{ end }}|{{ range ((index .Alerts 0).Labels.Remove (stringSlice "job" "zone")).SortedPairs }}{{ .Name }} {{ end }}"#,
        false,
        "severity=warning |alertname instance severity ",
    ),
    // join over Names and Values.
    (
        r#"{{ .GroupLabels.Names | join ", " }} / {{ join "+" .CommonLabels.Values }} / {{ .CommonLabels.SortedPairs.Names | join "," }}"#,
        false,
        "alertname, job / HighCPU+node+warning / alertname,job,severity",
    ),
    // title (lower-casing the rest of each word), toLower, toUpper.
    (
        r#"{{ title "hELLO wORLD, it's web-01" }} {{ toLower "MiXeD" }} {{ toUpper .Receiver }}"#,
        false,
        "Hello World, It's Web-01 mixed TEAM-X",
    ),
    // match and reReplaceAll with a group.
    (
        r#"{{ range .Alerts }}{{ if match "^web-" .Labels.instance }}{{ reReplaceAll "^([^:]+):(\\d+)$" "$1 port $2" .Labels.instance }};{{ end }}{{ end }}"#,
        false,
        "web-01 port 9100;web-02 port 9100;",
    ),
    // HTML field: escaped annotation, safeHtml unescaped.
    (
        r#"<p>{{ .CommonAnnotations.runbook }} {{ (index .Alerts 0).Annotations.summary }}</p>{{ "<b>x</b>" | safeHtml }}"#,
        true,
        "<p>http://wiki/cpu?host=web%2D01 CPU &lt;high&gt; &amp; &#34;hot&#34;</p><b>x</b>",
    ),
    // Text field: nothing escaped.
    (
        r#"{{ (index .Alerts 0).Annotations.summary }} {{ "<b>" | safeHtml }}"#,
        false,
        "CPU <high> & \"hot\" <b>",
    ),
    // Times: Go's String, Format, and the zero end of a firing alert.
    (
        r#"{{ range .Alerts }}{{ .StartsAt.Format "2006-01-02 15:04 MST" }} {{ .EndsAt }} {{ .EndsAt.IsZero }}|{{ end }}"#,
        false,
        "2024-05-01 12:00 UTC 0001-01-01 00:00:00 +0000 UTC true|2024-05-01 12:00 UTC 0001-01-01 00:00:00 +0000 UTC true|2024-05-01 12:00 UTC 2024-05-01 12:05:00 +0000 UTC false|",
    ),
    // printf, index, slice, with/else, range/else, and/or/not.
    (
        r#"{{ printf "%-8s|%q|%d" .Receiver .Status (len .Alerts) }} {{ index .CommonLabels "job" }} {{ range slice .Alerts 2 }}{{ .Labels.instance }}{{ end }} {{ with .CommonLabels.nothing }}x{{ else }}none{{ end }} {{ range .Alerts.Resolved }}{{ .Fingerprint }}{{ else }}empty{{ end }} {{ and .Receiver (not .CommonLabels.zone) }} {{ or .CommonLabels.zone "no zone" }}"#,
        false,
        "team-x  |\"firing\"|3 node db-01:9100 none 0000000000013556 true no zone",
    ),
    // Variables, KV ranges, eq with several values, whitespace trimming.
    (
        "{{- $n := 0 }}{{ range $k, $v := (index .Alerts 2).Labels -}}\n  {{ if eq $k \"zone\" \"job\" }}{{ $k }}={{ $v }};{{ end -}}\n{{ end }} {{ .ExternalURL }}/#/alerts",
        false,
        "job=node;zone=us-2; http://minos.example:9093/#/alerts",
    ),
    // Links: generator URLs, pipes into printf, len of a string.
    (
        r#"{{ range .Alerts.Firing }}<{{ .GeneratorURL }}|{{ .Labels.instance | printf "%.6s" }}> {{ end }}{{ len .Receiver }}"#,
        false,
        "<http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22web-01:9100%22%7D|web-01> <http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22web-02:9100%22%7D|web-02> 6",
    ),
    // A text's own definitions next to the file's.
    (
        r#"{{ define "own" }}<{{ . }}>{{ end }}{{ template "own" .Status }}{{ template "xc.title" . }}"#,
        false,
        "<firing>[FIRING:2] HighCPU",
    ),
    // HTML field, URL attributes: unsafe schemes refused, URLs percent-encoded
    // (reserved characters too in the query), `+` escaped in text.
    (
        r##"<a href="{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver }}&amp;q={{ "a b+c/é" }}">{{ .CommonLabels.alertname }}</a>{{ range .Alerts.Firing }} <a href='{{ .GeneratorURL }}'>{{ .Labels.instance }}</a> <a href="{{ .Annotations.runbook }}">rb</a>{{ end }} <a href="{{ "javascript:alert(1)" }}">x</a> <img src={{ "data:image/png,x" }}> <a HREF=" {{ "JavaScript:x" }}">y</a> <a href="/p/{{ "a b&c?d" }}">z</a> 1+1={{ "1+1" }}"##,
        true,
        r##"<a href="http://minos.example:9093/#/alerts?receiver=team-x&amp;q=a%20b%2bc%2f%c3%a9">HighCPU</a> <a href='http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22web-01:9100%22%7D'>web-01:9100</a> <a href="http://wiki/cpu?host=web%2D01">rb</a> <a href='http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22web-02:9100%22%7D'>web-02:9100</a> <a href="http://wiki/cpu?host=web%2D01">rb</a> <a href="#ZgotmplZ">x</a> <img src=#ZgotmplZ> <a HREF=" #ZgotmplZ">y</a> <a href="/p/a%20b&amp;c?d">z</a> 1+1=1&#43;1"##,
    ),
    // HTML field: safeHtml without its tags in an attribute, escaped in a
    // textarea; an unquoted attribute value.
    (
        r##"<p title="{{ "<b>bold</b> &amp; x" | safeHtml }}" data-x={{ "a b=c" }}>{{ "<b>bold</b>" | safeHtml }}</p><textarea>{{ "<i>x</i>" | safeHtml }}</textarea><a href="/search?q={{ .CommonLabels.alertname }} {{ "é/?" }}">s</a>"##,
        true,
        r##"<p title="bold &amp; x" data-x=a&#32;b&#61;c><b>bold</b></p><textarea>&lt;i&gt;x&lt;/i&gt;</textarea><a href="/search?q=HighCPU %c3%a9%2f%3f">s</a>"##,
    ),
    // A missing value: `<no value>` in text, nothing in HTML.
    (
        r#"{{ define "nil" }}[{{ . }}]<a href="{{ . }}">{{ end }}{{ template "nil" }}"#,
        true,
        r#"[]<a href="">"#,
    ),
    (
        r#"{{ define "nil" }}[{{ . }}]{{ end }}{{ template "nil" }}"#,
        false,
        "[<no value>]",
    ),
    // HTML field: a file's definition called in HTML, attribute values included.
    (
        r#"{{ template "xc.html" . }}"#,
        true,
        concat!(
            "<table>\n",
            r##"<tr><td title="CPU &lt;high&gt; &amp; &#34;hot&#34;"><a href="http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22web-01:9100%22%7D">web-01:9100</a></td><td class=firing>CPU &lt;high&gt; &amp; &#34;hot&#34;</td></tr>"##,
            "\n",
            r##"<tr><td title="CPU &lt;high&gt; &amp; &#34;hot&#34;"><a href="http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22web-02:9100%22%7D">web-02:9100</a></td><td class=firing>CPU &lt;high&gt; &amp; &#34;hot&#34;</td></tr>"##,
            "\n",
            r##"<tr><td title="CPU &lt;high&gt; &amp; &#34;hot&#34;"><a href="http://prom:9090/graph?g0.expr=cpu%7Binstance%3D%22db-01:9100%22%7D">db-01:9100</a></td><td class=resolved>CPU &lt;high&gt; &amp; &#34;hot&#34;</td></tr>"##,
            "\n",
            "</table>"
        ),
    ),
];

fn render_minos(text: &str, html: bool, set: &TemplateSet) -> String {
    Template::parse_notification("case", text)
        .and_then(|t| t.execute_notification(&data(), Some(set), html))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn render_amtool(amtool: &Path, data_file: &Path, text: &str, html: bool) -> String {
    let out = Command::new(amtool)
        .arg("template")
        .arg("render")
        .arg(format!("--template.glob={}", template_file().display()))
        .arg(format!("--template.data={}", data_file.display()))
        .arg(format!(
            "--template.type={}",
            if html { "html" } else { "text" }
        ))
        .arg(format!("--template.text={text}"))
        .output()
        .expect("amtool runs");
    assert!(
        out.status.success(),
        "amtool failed on {text}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("amtool prints UTF-8")
}

#[test]
fn templates_render_as_amtool_renders_them() {
    let mut set = TemplateSet::new();
    let file = std::fs::read_to_string(template_file()).unwrap();
    set.add_file("crosscheck.tmpl", &file).unwrap();
    let mut failures = Vec::new();
    for (text, html, want) in CASES {
        let got = render_minos(text, *html, &set);
        if got != *want {
            failures.push(format!("{text}\n  minos:    {got:?}\n  expected: {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let Some(amtool) = amtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data_file = dir.path().join("data.json");
    std::fs::write(&data_file, data_json(&data())).unwrap();
    for (text, html, _) in CASES {
        let got = render_minos(text, *html, &set);
        let am = render_amtool(&amtool, &data_file, text, *html);
        if got != am {
            failures.push(format!("{text}\n  minos:  {got:?}\n  amtool: {am:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
