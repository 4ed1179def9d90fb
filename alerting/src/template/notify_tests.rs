//! Tests of the Alertmanager dialect: the notification data model, its methods and
//! Alertmanager's functions. `tests/amtool.rs` compares the same engine with
//! Alertmanager's own `amtool template render`.

use std::collections::BTreeMap;

use super::*;

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Two firing alerts and a resolved one, at 2024-05-01 12:00 UTC.
fn data() -> NotificationData {
    let alert = |instance: &str, status: &str, ends: Option<i64>| NotificationAlert {
        status: status.into(),
        labels: kv(&[
            ("severity", "warning"),
            ("instance", instance),
            ("alertname", "HighCPU"),
            ("job", "node"),
        ]),
        annotations: kv(&[("summary", "CPU <high> on web")]),
        starts_at_ms: 1_714_564_800_000,
        ends_at_ms: ends,
        generator_url: "http://prom/graph?g0.expr=up".into(),
        fingerprint: format!("fp-{instance}"),
        acked_by: if instance == "web-01" {
            "ann".into()
        } else {
            String::new()
        },
    };
    NotificationData {
        receiver: "team-x".into(),
        status: "firing".into(),
        alerts: vec![
            alert("web-01", "firing", None),
            alert("web-02", "firing", None),
            alert("web-03", "resolved", Some(1_714_565_100_500)),
        ],
        group_labels: kv(&[("alertname", "HighCPU")]),
        common_labels: kv(&[
            ("alertname", "HighCPU"),
            ("job", "node"),
            ("severity", "warning"),
        ]),
        common_annotations: kv(&[("summary", "CPU <high> on web")]),
        external_url: "http://minos.example".into(),
        group_key: "{}:{alertname=\"HighCPU\"}".into(),
        escalated: false,
        now_ms: 1_714_568_400_000,
    }
}

fn run_with(text: &str, set: Option<&TemplateSet>, html: bool) -> Result<String, String> {
    Template::parse_notification("t", text)
        .map_err(|e| e.message)?
        .execute_notification(&data(), set, html)
        .map_err(|e| e.message)
}

fn ok(text: &str) -> String {
    run_with(text, None, false).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn err(text: &str) -> String {
    match run_with(text, None, false) {
        Ok(out) => panic!("{text:?}: expected an error, got {out:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_data_has_alertmanagers_fields() {
    assert_eq!(
        ok("{{ .Receiver }} {{ .Status }} {{ .ExternalURL }}"),
        "team-x firing http://minos.example"
    );
    assert_eq!(
        ok("{{ len .Alerts }} {{ len .Alerts.Firing }} {{ len .Alerts.Resolved }}"),
        "3 2 1"
    );
    assert_eq!(
        ok("{{ .GroupLabels.alertname }}|{{ .CommonLabels.missing }}|"),
        "HighCPU||"
    );
    assert_eq!(
        ok("{{ .GroupKey }} {{ .Escalated }}"),
        "{}:{alertname=\"HighCPU\"} false"
    );
    assert_eq!(
        ok(
            "{{ range .Alerts }}{{ .Status }} {{ .Fingerprint }} [{{ .AckedBy }}] {{ .GeneratorURL }}\n{{ end }}"
        ),
        "firing fp-web-01 [ann] http://prom/graph?g0.expr=up\n\
         firing fp-web-02 [] http://prom/graph?g0.expr=up\n\
         resolved fp-web-03 [] http://prom/graph?g0.expr=up\n"
    );
    assert_eq!(
        ok(
            "{{ range .Alerts.Resolved }}{{ .Labels.instance }} {{ .Annotations.summary }}{{ end }}"
        ),
        "web-03 CPU <high> on web"
    );
    assert_eq!(ok("{{ (index .Alerts 1).Labels.instance }}"), "web-02");
    assert_eq!(
        ok("{{ range slice .Alerts 2 }}{{ .Labels.instance }}{{ end }}"),
        "web-03"
    );
}

#[test]
fn kv_maps_have_their_methods() {
    // alertname first, then in order.
    assert_eq!(
        ok("{{ range .CommonLabels.SortedPairs }}{{ .Name }}={{ .Value }};{{ end }}"),
        "alertname=HighCPU;job=node;severity=warning;"
    );
    let labels = "{{ with index .Alerts 0 }}{{ .Labels.Names }} {{ .Labels.Values }}{{ end }}";
    assert_eq!(
        ok(labels),
        "[alertname instance job severity] [HighCPU web-01 node warning]"
    );
    assert_eq!(
        ok(
            "{{ .CommonLabels.SortedPairs.Names | join \",\" }} {{ .CommonLabels.SortedPairs.Values }}"
        ),
        "alertname,job,severity [HighCPU node warning]"
    );
    // Remove: Go's []string, or the names as separate strings.
    assert_eq!(
        ok("{{ (.CommonLabels.Remove (stringSlice \"job\" \"x\")).Names }}"),
        "[alertname severity]"
    );
    assert_eq!(
        ok("{{ (.CommonLabels.Remove \"job\" \"alertname\").Names }}"),
        "[severity]"
    );
    assert_eq!(
        ok("{{ len (.CommonLabels.Remove .GroupLabels.Names) }}"),
        "2"
    );
    // KV and Pairs print with their String methods; a Pair as a struct.
    assert_eq!(
        ok("{{ .GroupLabels }}|{{ .CommonLabels.SortedPairs }}"),
        "alertname=HighCPU|alertname=HighCPU, job=node, severity=warning"
    );
    assert_eq!(ok("{{ index .CommonLabels.SortedPairs 1 }}"), "{job node}");
    assert_eq!(
        ok("{{ printf \"%+v\" (index .CommonLabels.SortedPairs 1) }}"),
        "{Name:job Value:node}"
    );
    assert_eq!(
        ok("{{ range $k, $v := .CommonLabels }}{{ $k }}:{{ $v }} {{ end }}"),
        "alertname:HighCPU job:node severity:warning "
    );
    assert_eq!(ok("{{ index .CommonLabels \"job\" }}"), "node");
    // A method shadows a label of the same name, as in Go.
    assert!(ok("{{ .CommonLabels.Names }}").starts_with('['));
    assert!(err("{{ .CommonLabels.Remove 1 }}").contains("expected []string; got int"));
    assert!(err("{{ .CommonLabels.job 1 }}").contains("job is not a method but has arguments"));
}

#[test]
fn lists_and_fields_are_checked_like_go() {
    let e = err("{{ .Alerts.Firing.Firing }}");
    assert!(
        e.contains("can't evaluate field Firing in type []template.Alert"),
        "{e}"
    );
    let e = err("{{ .Nope }}");
    assert!(
        e.contains("can't evaluate field Nope in type *template.Data"),
        "{e}"
    );
    let e = err("{{ range .Alerts }}{{ .Lables }}{{ end }}");
    assert!(
        e.contains("can't evaluate field Lables in type template.Alert"),
        "{e}"
    );
    let e = err("{{ .Alerts.Firing 1 }}");
    assert!(
        e.contains("wrong number of args for Firing: want 0 got 1"),
        "{e}"
    );
}

#[test]
fn times_have_gos_methods() {
    let first = |expr: &str| {
        ok(&format!(
            "{{{{ with index .Alerts 2 }}}}{expr}{{{{ end }}}}"
        ))
    };
    assert_eq!(first("{{ .StartsAt }}"), "2024-05-01 12:00:00 +0000 UTC");
    assert_eq!(first("{{ .EndsAt }}"), "2024-05-01 12:05:00.5 +0000 UTC");
    assert_eq!(
        first("{{ .StartsAt.Format \"2006-01-02T15:04:05Z07:00\" }}"),
        "2024-05-01T12:00:00Z"
    );
    assert_eq!(first("{{ .EndsAt.Sub .StartsAt }}"), "5m0.5s");
    assert_eq!(first("{{ (.EndsAt.Sub .StartsAt).Seconds }}"), "300.5");
    assert_eq!(
        first("{{ .EndsAt.After .StartsAt }} {{ .StartsAt.Unix }}"),
        "true 1714564800"
    );
    assert_eq!(
        ok("{{ (index .Alerts 0).EndsAt }} {{ (index .Alerts 0).EndsAt.IsZero }}"),
        "0001-01-01 00:00:00 +0000 UTC true"
    );
}

#[test]
fn alertmanagers_functions() {
    assert_eq!(
        ok("{{ .Status | toUpper }} {{ toLower \"ÀB\" }}"),
        "FIRING àb"
    );
    // Alertmanager's title lower-cases the rest of each word (Prometheus' does not).
    assert_eq!(ok("{{ title \"hELLO wORLD don't\" }}"), "Hello World Don't");
    assert_eq!(ok("[{{ trimSpace \"  a b \\n\" }}]"), "[a b]");
    assert_eq!(
        ok("{{ join \", \" (stringSlice \"a\" \"b\") }}|{{ stringSlice }}"),
        "a, b|[]"
    );
    assert_eq!(
        ok("{{ match \"^web-0[12]$\" (index .Alerts 1).Labels.instance }}"),
        "true"
    );
    assert_eq!(
        ok("{{ reReplaceAll \"web-(\\\\d+)\" \"host$1\" \"web-01 web-02\" }}"),
        "host01 host02"
    );
    assert_eq!(
        ok("{{ urlUnescape \"a%20b+c%2F\" }} {{ safeUrl \"http://x/?a=b\" }}"),
        "a b c/ http://x/?a=b"
    );
    assert!(err("{{ urlUnescape \"%zz\" }}").contains("invalid URL escape \"%zz\""));
    assert!(err("{{ reReplaceAll \"(\" \"\" \"\" }}").contains("error calling reReplaceAll"));
    // date and tz.
    let t = "{{ with index .Alerts 0 }}{{ . .StartsAt }}{{ end }}";
    let at = |f: &str| ok(&t.replace(". .StartsAt", f));
    assert_eq!(at(".StartsAt | date \"15:04 MST\""), "12:00 UTC");
    assert_eq!(
        at(".StartsAt | tz \"Europe/Paris\" | date \"2006-01-02 15:04:05 -07:00 MST\""),
        "2024-05-01 14:00:00 +02:00 CEST"
    );
    assert_eq!(
        at("tz \"Asia/Kolkata\" .StartsAt"),
        "2024-05-01 17:30:00 +0530 IST"
    );
    assert_eq!(at("(tz \"America/New_York\" .StartsAt).Hour"), "8");
    assert_eq!(at("tz \"UTC\" .StartsAt"), "2024-05-01 12:00:00 +0000 UTC");
    assert!(
        err("{{ tz \"Mars/Base\" (index .Alerts 0).StartsAt }}")
            .contains("unknown time zone Mars/Base")
    );
    assert!(
        err("{{ tz \"../etc/passwd\" (index .Alerts 0).StartsAt }}")
            .contains("invalid location name")
    );
    assert!(err("{{ date \"x\" \"y\" }}").contains("can't handle \"y\" for arg of type time.Time"));
    assert!(err("{{ date \"x\" .Receiver }}").contains("expected time.Time; got string"));
    // since counts from the render time (an hour after the start here).
    assert_eq!(at("since .StartsAt"), "1h0m0s");
    assert_eq!(at("since .StartsAt | humanizeDuration"), "1h 0m 0s");
    assert_eq!(ok("{{ humanizeDuration 90 }}"), "1m 30s");
}

#[test]
fn each_dialect_has_its_own_functions() {
    for f in [
        "query \"up\"",
        "humanize 1",
        "toTime 1",
        "tmpl \"x\" .",
        "externalURL",
    ] {
        let e = Template::parse_notification("t", &format!("{{{{ {f} }}}}")).unwrap_err();
        assert!(e.message.contains("not defined"), "{f}: {e}");
    }
    for f in ["join \",\" .", "since .", "tz \"UTC\" .", "stringSlice"] {
        let e = Template::parse("t", &format!("{{{{ {f} }}}}")).unwrap_err();
        assert!(e.message.contains("not defined"), "{f}: {e}");
    }
    let e = Template::parse("t", "x")
        .unwrap()
        .execute_notification(&data(), None, false);
    assert!(e.is_err());
}

#[test]
fn html_fields_escape_what_actions_print() {
    let text = "<b>{{ .CommonAnnotations.summary }}</b> {{ safeHtml \"<i>ok</i>\" }} {{ printf \"%s\" \"&\" }}";
    assert_eq!(
        run_with(text, None, true).unwrap(),
        "<b>CPU &lt;high&gt; on web</b> <i>ok</i> &amp;"
    );
    assert_eq!(
        run_with(text, None, false).unwrap(),
        "<b>CPU <high> on web</b> <i>ok</i> &"
    );
}

#[test]
fn template_sets_share_definitions_between_texts() {
    let mut set = TemplateSet::new();
    set.add_file("a.tmpl", "{{ define \"title\" }}[{{ .Status }}] {{ template \"name\" . }}{{ end }}{{ define \"name\" }}A{{ end }}")
        .unwrap();
    // A later file replaces a definition; an empty one does not.
    set.add_file(
        "b.tmpl",
        "{{ define \"name\" }}{{ .GroupLabels.alertname }}{{ end }}{{ define \"title\" }}{{ end }}",
    )
    .unwrap();
    assert!(set.contains("a.tmpl") && set.contains("title"));
    assert_eq!(
        run_with("{{ template \"title\" . }}", Some(&set), false).unwrap(),
        "[firing] HighCPU"
    );
    // The text's own definitions come before the set's.
    assert_eq!(
        run_with(
            "{{ define \"name\" }}own{{ end }}{{ template \"title\" . }}",
            Some(&set),
            false
        )
        .unwrap(),
        "[firing] own"
    );
    // An error inside a file's template names the file and the line there.
    set.add_file("c.tmpl", "\n\n{{ define \"broken\" }}x{{ .Nope }}{{ end }}")
        .unwrap();
    let e = run_with("{{ template \"broken\" . }}", Some(&set), false).unwrap_err();
    assert!(
        e.starts_with("c.tmpl:3:") && e.contains("can't evaluate field Nope"),
        "{e}"
    );
    let e = set
        .add_file("d.tmpl", "{{ define \"x\" }}{{ end")
        .unwrap_err();
    assert_eq!(e.name, "d.tmpl");
    let called = Template::parse_notification("t", "{{ define \"own\" }}{{ end }}{{ if 1 }}{{ template \"own\" }}{{ template \"other\" . }}{{ end }}").unwrap();
    assert_eq!(
        called.called_templates().into_iter().collect::<Vec<_>>(),
        ["other"]
    );
}

#[test]
fn durations_print_like_go() {
    use super::gofmt::duration;
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(1), "1ns");
    assert_eq!(duration(1_500), "1.5µs");
    assert_eq!(duration(2_000_000), "2ms");
    assert_eq!(duration(90_000_000_000), "1m30s");
    assert_eq!(duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(duration(-5_250_000_000), "-5.25s");
}
