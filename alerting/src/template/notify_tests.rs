//! Tests of the Alertmanager dialect: the notification data model, its methods and
//! Alertmanager's functions. `tests/amtool.rs` compares the same engine with
//! Alertmanager's own `amtool template render`.

use std::collections::BTreeMap;

use proptest::prelude::*;

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

/// The output of `text` in an HTML field.
fn html(text: &str) -> String {
    run_with(text, None, true).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn parse_err(text: &str) -> String {
    match Template::parse_notification("t", text) {
        Ok(_) => panic!("{text:?}: expected a parse error"),
        Err(e) => e.message,
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
    // Prometheus has none of Alertmanager's list and map functions either.
    for f in [
        "join \",\" .",
        "since .",
        "tz \"UTC\" .",
        "stringSlice",
        "toJson .",
        "list",
        "append nil 1",
        "dict",
    ] {
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

#[test]
fn to_json_encodes_like_gos_json_marshal() {
    assert_eq!(
        ok("{{ toJson .GroupLabels }}"),
        r#"{"alertname":"HighCPU"}"#
    );
    assert_eq!(
        ok("{{ .CommonLabels.SortedPairs | toJson }}"),
        r#"[{"Name":"alertname","Value":"HighCPU"},{"Name":"job","Value":"node"},{"Name":"severity","Value":"warning"}]"#
    );
    assert_eq!(
        ok("{{ toJson (index .CommonLabels.SortedPairs 1) }} {{ toJson .GroupLabels.Names }}"),
        r#"{"Name":"job","Value":"node"} ["alertname"]"#
    );
    // An alert as Alertmanager marshals it: its JSON names, RFC 3339 times
    // with the nanoseconds that are not zero, Go's zero time for a firing
    // alert's end, and none of Minos' own fields.
    assert_eq!(
        ok("{{ toJson (index .Alerts 2) }}"),
        concat!(
            r#"{"status":"resolved","labels":{"alertname":"HighCPU","instance":"web-03","#,
            r#""job":"node","severity":"warning"},"annotations":{"summary":"CPU \u003chigh\u003e on web"},"#,
            r#""startsAt":"2024-05-01T12:00:00Z","endsAt":"2024-05-01T12:05:00.5Z","#,
            r#""generatorURL":"http://prom/graph?g0.expr=up","fingerprint":"fp-web-03"}"#
        )
    );
    assert!(ok("{{ toJson .Alerts.Firing }}").contains(r#""endsAt":"0001-01-01T00:00:00Z""#));
    assert!(!ok("{{ toJson .Alerts }}").contains("acked"));
    let all = ok("{{ toJson . }}");
    assert!(
        all.starts_with(r#"{"receiver":"team-x","status":"firing","alerts":[{"status":"firing","#),
        "{all}"
    );
    assert!(
        all.ends_with(concat!(
            r#""groupLabels":{"alertname":"HighCPU"},"commonLabels":{"alertname":"HighCPU","#,
            r#""job":"node","severity":"warning"},"commonAnnotations":{"summary":"CPU \u003chigh\u003e on web"},"#,
            r#""externalURL":"http://minos.example"}"#
        )),
        "{all}"
    );
    assert!(
        !all.contains("groupKey") && !all.contains("scalated"),
        "{all}"
    );
    // Strings are escaped as Go does, HTML characters included.
    assert_eq!(
        ok(r#"{{ toJson "<a & \"b\">\\\n\t\u2028é\x7f" }}"#),
        concat!(r#""\u003ca \u0026 \"b\"\u003e\\\n\t\u2028é"#, "\x7f\"")
    );
    // Numbers, booleans, nil, durations, times in a zone, safeHtml's values.
    assert_eq!(
        ok("{{ toJson (list 1 -2 1.5 1e21 1e20 0.000001 0.0000001 -0.0 true nil) }}"),
        "[1,-2,1.5,1e+21,100000000000000000000,0.000001,1e-7,-0,true,null]"
    );
    let t = "{{ with index .Alerts 0 }}{{ toJson (since .StartsAt) }} {{ tz \"Europe/Paris\" .StartsAt | toJson }}{{ end }}";
    assert_eq!(ok(t), r#"3600000000000 "2024-05-01T14:00:00+02:00""#);
    assert_eq!(ok("{{ safeHtml \"<b>\" | toJson }}"), r#""\u003cb\u003e""#);
    // dict's maps are objects with sorted keys, nested values included.
    assert_eq!(
        ok("{{ toJson (dict \"b\" 1 \"a\" (list \"x\" (dict)) \"c\" .GroupLabels) }}"),
        r#"{"a":["x",{}],"b":1,"c":{"alertname":"HighCPU"}}"#
    );
    assert!(err("{{ toJson }}").contains("wrong number of args for toJson: want 1 got 0"));
    assert!(err("{{ toJson 1 2 }}").contains("wrong number of args for toJson: want 1 got 2"));
    // In an HTML field the JSON is a string like any other.
    assert_eq!(
        html("{{ toJson .GroupLabels }}"),
        "{&#34;alertname&#34;:&#34;HighCPU&#34;}"
    );
}

#[test]
fn list_and_append_build_lists() {
    assert_eq!(
        ok("{{ range $i, $e := list \"a\" 1 true }}{{ $i }}={{ $e }} {{ end }}"),
        "0=a 1=1 2=true "
    );
    assert_eq!(
        ok(
            "{{ len (list 1 2 3) }} {{ index (list \"a\" \"b\") 1 }} {{ slice (list 1 2 3) 1 }} {{ list }} {{ list 1 \"a\" nil }}"
        ),
        "3 b [2 3] [] [1 a <nil>]"
    );
    assert_eq!(
        ok(
            "{{ if list }}x{{ else }}empty{{ end }} {{ range list }}x{{ else }}none{{ end }} {{ printf \"%v %T\" (list 1) (list) }}"
        ),
        "empty none [1] []interface {}"
    );
    // append copies: the original list is unchanged.
    assert_eq!(
        ok(
            "{{ $l := list 1 }}{{ $m := append $l 2 3 }}{{ $l }} {{ $m }} {{ append nil \"x\" }} {{ append (list) }} {{ list 1 | append (list 0) }}"
        ),
        "[1] [1 2 3] [x] [] [0 [1]]"
    );
    // Collecting in a loop, the reason these functions exist.
    assert_eq!(
        ok(
            "{{ $l := list }}{{ range .Alerts.Firing }}{{ $l = append $l .Labels.instance }}{{ end }}{{ $l }} {{ len $l }}"
        ),
        "[web-01 web-02] 2"
    );
    // append's first argument is a []interface {}, as in Alertmanager.
    assert!(
        err("{{ append (stringSlice \"a\") \"b\" }}")
            .contains("wrong type for value; expected []interface {}; got []string")
    );
    assert!(
        err("{{ append \"a\" \"b\" }}")
            .contains("can't handle \"a\" for arg of type []interface {}")
    );
    assert!(err("{{ append }}").contains("wrong number of args for append: want at least 1 got 0"));
    assert!(err("{{ index (list 1) 1 }}").contains("index out of range: 1"));
    assert!(err("{{ (list 1).Foo }}").contains("can't evaluate field Foo in type []interface {}"));
    assert!(err("{{ join \",\" (list \"a\") }}").contains("expected []string; got []interface {}"));
}

#[test]
fn dict_builds_maps() {
    assert_eq!(
        ok(
            "{{ $d := dict \"b\" 2 \"a\" (list 1) }}{{ $d.b }} {{ index $d \"a\" }} {{ len $d }} {{ $d }} {{ range $k, $v := $d }}{{ $k }}:{{ $v }};{{ end }} {{ $d.missing }}"
        ),
        "2 [1] 2 map[a:[1] b:2] a:[1];b:2; <no value>"
    );
    assert_eq!(
        ok("{{ dict \"a\" 1 \"a\" 2 }} {{ dict }}"),
        "map[a:2] map[]"
    );
    assert_eq!(ok("{{ \"v\" | dict \"k\" }}"), "map[k:v]");
    // Named arguments for a template, the other reason.
    assert_eq!(
        ok(
            "{{ define \"row\" }}{{ .name }}={{ .value }}{{ end }}{{ template \"row\" (dict \"name\" .Receiver \"value\" (len .Alerts)) }}"
        ),
        "team-x=3"
    );
    // Arguments the text shows to be wrong are refused when parsing...
    let e = parse_err("{{ dict \"a\" 1 \"b\" }}");
    assert!(
        e.contains("dict requires an even number of arguments, got 3"),
        "{e}"
    );
    assert!(e.starts_with("1:4:"), "{e}");
    let e = parse_err("{{ if 1 }}{{ dict \"a\" 1 | dict }}{{ end }}");
    assert!(e.contains("even number of arguments, got 1"), "{e}");
    for bad in [
        "dict 1 2",
        "dict nil 2",
        "dict true 2",
        "dict \"a\" 1 2.5 3",
    ] {
        let e = parse_err(&format!("{{{{ {bad} }}}}"));
        assert!(e.contains("dict keys must be strings"), "{bad}: {e}");
    }
    // ...the others when it runs.
    let e = err("{{ $k := 1 }}{{ dict $k 2 }}");
    assert!(
        e.contains("error calling dict: dict keys must be strings"),
        "{e}"
    );
    let e = err("{{ dict (safeHtml \"k\") 2 }}");
    assert!(e.contains("dict keys must be strings"), "{e}");
}

#[test]
fn built_lists_and_maps_stay_bounded() {
    // Nesting is capped, so printing, encoding and dropping stay shallow.
    let e = err("{{ $x := list }}{{ range 1000 }}{{ $x = list $x }}{{ end }}");
    assert!(e.contains("value nested deeper than 100 levels"), "{e}");
    let e = err("{{ $x := dict }}{{ range 1000 }}{{ $x = dict \"a\" $x }}{{ end }}");
    assert!(e.contains("value nested deeper than 100 levels"), "{e}");
    let e = err("{{ $x := list }}{{ range 1000 }}{{ $x = append (list) $x }}{{ end }}");
    assert!(e.contains("value nested deeper than 100 levels"), "{e}");
    // A list of itself twice, 40 times over, is small but prints huge.
    let doubled = "{{ $x := list 1 }}{{ range 40 }}{{ $x = list $x $x }}{{ end }}";
    assert!(err(&format!("{doubled}{{{{ $x }}}}")).contains("output exceeds 1048576 bytes"));
    assert!(err(&format!("{doubled}{{{{ toJson $x }}}}")).contains("result exceeds 1048576 bytes"));
    assert!(err(&format!("{doubled}{{{{ print $x }}}}")).contains("exceeds 1048576 bytes"));
    // append copies, and the copies count as steps.
    let e = err("{{ $x := list }}{{ range 100000 }}{{ $x = append $x 1 }}{{ end }}");
    assert!(e.contains("execution took more than 5000000 steps"), "{e}");
    // Formatting counts its length, even when the text is thrown away (the other
    // formatting functions charge the same way).
    let wide = "{{ $x := list 1 }}{{ range 16 }}{{ $x = list $x $x }}{{ end }}";
    let e = err(&format!(
        "{wide}{{{{ range 100000 }}}}{{{{ len (print $x) }}}}{{{{ end }}}}"
    ));
    assert!(e.contains("steps"), "{e}");
}

#[test]
fn html_fields_escape_for_their_context() {
    // Text: Go's html/template escapes `+` too.
    assert_eq!(
        html("<p>{{ \"1+1 <b> & 'q' \\\"\" }}</p>"),
        "<p>1&#43;1 &lt;b&gt; &amp; &#39;q&#39; &#34;</p>"
    );
    // A URL attribute refuses unsafe schemes, in any quoting and case.
    assert_eq!(
        html(
            "<a href=\"{{ \"javascript:alert(1)\" }}\">x</a><a HREF = '{{ \"JavaScript:x\" }}'><img src={{ \"data:x\" }}>"
        ),
        "<a href=\"#ZgotmplZ\">x</a><a HREF = '#ZgotmplZ'><img src=#ZgotmplZ>"
    );
    // ...unless the value comes from safeUrl; safeHtml does not help.
    assert_eq!(
        html(
            "<a href=\"{{ safeUrl \"javascript:x\" }}\"><a href=\"{{ safeHtml \"javascript:x\" }}\">"
        ),
        "<a href=\"javascript:x\"><a href=\"#ZgotmplZ\">"
    );
    // Safe schemes and relative URLs pass, percent-encoded where needed.
    assert_eq!(
        html(
            "<a href=\"{{ \"http://x/a b?c=d&e=f#g\" }}\"><a href=\"{{ \"HTTPS://x/ä%20\\\"\" }}\"><a href=\"{{ \"mailto:a b@c\" }}\"><a href=\"{{ \"/rel:x\" }}\"><a href=\"{{ \"//cdn/x.png\" }}\">"
        ),
        "<a href=\"http://x/a%20b?c=d&amp;e=f#g\"><a href=\"HTTPS://x/%c3%a4%20%22\"><a href=\"mailto:a%20b@c\"><a href=\"/rel:x\"><a href=\"//cdn/x.png\">"
    );
    // After the start of the URL nothing is filtered; in the query or
    // fragment every reserved character is encoded.
    assert_eq!(
        html(
            "<a href=\"/p/{{ \"a b&c=d/é%?x\" }}\"><a href=\"/p?q={{ \"a b&c=d/é%\" }}\"><a href=\"http://{{ \"javascript:x\" }}\">"
        ),
        "<a href=\"/p/a%20b&amp;c=d/%c3%a9%25?x\"><a href=\"/p?q=a%20b%26c%3dd%2f%c3%a9%25\"><a href=\"http://javascript:x\">"
    );
    assert_eq!(
        html("<a href=\"{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver }}&x={{ \"a+b\" }}\">"),
        "<a href=\"http://minos.example/#/alerts?receiver=team-x&x=a%2bb\">"
    );
    // Every action at the start of the URL is filtered, white space aside.
    assert_eq!(
        html("<a href=\"{{ \"a\" }}{{ \"javascript:x\" }}\"><a href=\" {{ \"javascript:x\" }}\">"),
        "<a href=\"a#ZgotmplZ\"><a href=\" #ZgotmplZ\">"
    );
    // Go's URL attributes: known names, and names with src, uri or url.
    assert_eq!(
        html(
            "<a data-url=\"{{ \"javascript:x\" }}\" xmlns:foo=\"{{ \"javascript:y\" }}\" myuri=\"{{ \"javascript:z\" }}\" title=\"{{ \"javascript:t\" }}\" srcset=\"{{ \"javascript:s\" }}\"><form action=\"{{ \"javascript:a\" }}\">"
        ),
        "<a data-url=\"#ZgotmplZ\" xmlns:foo=\"#ZgotmplZ\" myuri=\"#ZgotmplZ\" title=\"javascript:t\" srcset=\"#ZgotmplZ\"><form action=\"#ZgotmplZ\">"
    );
    // Other attribute values: escaped; unquoted ones also at white space,
    // `=` and backquotes; safeHtml's values lose their tags.
    assert_eq!(
        html(
            "<a title={{ \"a b=c`d\" }} alt='{{ \"a b=c`d\" }}' class=\"{{ safeHtml \"<b>x</b> &amp; y\" }}\">{{ safeHtml \"<b>x</b>\" }}</a>"
        ),
        "<a title=a&#32;b&#61;c&#96;d alt='a b=c`d' class=\"x &amp; y\"><b>x</b></a>"
    );
    // RCDATA elements escape safeHtml's values too (keeping their entities).
    assert_eq!(
        html(
            "<textarea>{{ safeHtml \"<i>a&amp;b</i>\" }}</textarea><TITLE>{{ \"<t>\" }}</TITLE>{{ safeHtml \"<i>\" }}"
        ),
        "<textarea>&lt;i&gt;a&amp;b&lt;/i&gt;</textarea><TITLE>&lt;t&gt;</TITLE><i>"
    );
    // Markup inside comments and special elements is not read as tags.
    assert_eq!(
        html(
            "<!-- <a href=\" -->{{ \"javascript:<x>\" }}<textarea><a href=\"</textarea>{{ \"javascript:y\" }}"
        ),
        "<!-- <a href=\" -->javascript:&lt;x&gt;<textarea><a href=\"</textarea>javascript:y"
    );
    // The context follows the text written, through template calls...
    assert_eq!(
        html(
            "{{ define \"u\" }}{{ . }}{{ end }}<a href=\"{{ template \"u\" \"javascript:x\" }}\">{{ template \"u\" \"javascript:x\" }}"
        ),
        "<a href=\"#ZgotmplZ\">javascript:x"
    );
    // ...and ranges, where each element starts a new attribute.
    assert_eq!(
        html(
            "{{ range list \"http://a\" \"vbscript:b\" }}<a href=\"{{ . }}\">{{ . }}</a>{{ end }}"
        ),
        "<a href=\"http://a\">http://a</a><a href=\"#ZgotmplZ\">vbscript:b</a>"
    );
    // A missing value prints as nothing, as in Go's html/template.
    assert_eq!(
        html("[{{ (dict).x }}]<a title=\"{{ (dict).x }}\">{{ list nil }}"),
        "[]<a title=\"\">[&lt;nil&gt;]"
    );
    // Text fields are not escaped at all.
    assert_eq!(
        ok("<a href=\"{{ \"javascript:x\" }}\">{{ \"1+1\" }}"),
        "<a href=\"javascript:x\">1+1"
    );
}

/// Pieces of notification templates, for the fuzz tests below.
const PIECES: [&str; 40] = [
    "{{",
    "}}",
    "{{ end }}",
    "{{ range",
    "{{ if",
    "{{ with",
    "{{ else }}",
    "(",
    ")",
    "|",
    ".",
    ".Alerts",
    ".CommonLabels",
    "$x :=",
    "$x =",
    "toJson",
    "list",
    "append",
    "dict",
    "\"k\"",
    "1",
    "nil",
    "index",
    "len",
    "slice",
    "safeHtml",
    "safeUrl",
    "\"javascript:x\"",
    "<a href=\"",
    "\"",
    "'",
    "<",
    ">",
    "=",
    "<!--",
    "-->",
    "<textarea>",
    "</textarea>",
    " ",
    "$x",
];

fn run_any(text: &str) {
    if let Ok(t) = Template::parse_notification("fuzz", text) {
        let _ = t.execute_notification(&data(), None, true);
        let _ = t.execute_notification(&data(), None, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn notification_templates_never_panic(pieces in prop::collection::vec(0..PIECES.len(), 0..40)) {
        let text: String = pieces.iter().map(|&i| PIECES[i]).collect::<Vec<_>>().join(" ");
        run_any(&text);
        let text: String = pieces.iter().map(|&i| PIECES[i]).collect();
        run_any(&text);
    }
}
