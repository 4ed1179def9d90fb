//! Tests of the template evaluator. The expected outputs of `REAL_RULES`
//! were produced by Prometheus 2.42's `promtool test rules` on the same
//! templates, labels and values, so they are Go's and Prometheus' output.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Labels of the alert the table's templates run on.
const LABELS: [(&str, &str); 12] = [
    ("instance", "db-1.example.com:9100"),
    ("job", "node"),
    ("mountpoint", "/var"),
    ("device", "/dev/sda1"),
    ("severity", "warning"),
    ("namespace", "prod"),
    ("pod", "api-7d9f"),
    ("container", "api"),
    ("node", "worker-3"),
    ("integration", "slack"),
    ("service", "kubelet"),
    ("fstype", "ext4"),
];

fn data(value: f64) -> Data {
    let mut d = Data {
        value,
        external_url: "http://example.com:9090/prom".into(),
        ..Data::default()
    };
    for (k, v) in LABELS {
        d.labels.insert(k.into(), v.into());
    }
    d.external_labels.insert("cluster".into(), "c1".into());
    d
}

/// Serves a few fixed queries, like the series of the promtool test.
struct Fake;

impl QueryFn for Fake {
    fn query(&self, q: &str) -> Result<QueryResult, String> {
        let s = |i: &str, j: &str, v: f64| {
            let mut m = BTreeMap::new();
            m.insert("__name__".to_string(), "up".to_string());
            m.insert("instance".to_string(), i.to_string());
            m.insert("job".to_string(), j.to_string());
            (m, v)
        };
        match q {
            "sort(up)" => Ok(vec![s("b:9100", "y", 0.0), s("a:9100", "x", 1.0)]),
            "nothing" => Ok(vec![]),
            _ => Err(format!("unknown query {q}")),
        }
    }
}

fn render(text: &str, value: f64) -> Result<String, TemplateError> {
    Template::parse("test", text)?.execute(&data(value), Some(&Fake))
}

fn ok(text: &str, value: f64) -> String {
    render(text, value).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn exec_err(text: &str) -> String {
    let t = Template::parse("test", text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    match t.execute(&data(1.0), Some(&Fake)) {
        Ok(out) => panic!("{text:?}: expected an error, got {out:?}"),
        Err(e) => e.message,
    }
}

fn parse_err(text: &str) -> String {
    match Template::parse("test", text) {
        Ok(_) => panic!("{text:?}: expected a parse error"),
        Err(e) => e.message,
    }
}

/// (what, template, `$value`, output of Prometheus 2.42)
const REAL_RULES: &[(&str, &str, &str, &str)] = &[
    (
        "awesome: host out of memory",
        "Host out of memory (instance {{ $labels.instance }})",
        "7.5",
        "Host out of memory (instance db-1.example.com:9100)",
    ),
    (
        "awesome: VALUE/LABELS description",
        "Node memory is filling up (< 10% left)\n  VALUE = {{ $value }}\n  LABELS = {{ $labels }}",
        "7.512345",
        "Node memory is filling up (< 10% left)\n  VALUE = 7.512345\n  LABELS = map[container:api device:/dev/sda1 fstype:ext4 instance:db-1.example.com:9100 integration:slack job:node mountpoint:/var namespace:prod node:worker-3 pod:api-7d9f service:kubelet severity:warning]",
    ),
    (
        "awesome: big value",
        "Host network interfaces are probably receiving too much data (> 100 MB/s)\n  VALUE = {{ $value }}",
        "123456789",
        "Host network interfaces are probably receiving too much data (> 100 MB/s)\n  VALUE = 1.23456789e+08",
    ),
    (
        "awesome: small value",
        "VALUE = {{ $value }}",
        "0.0000123",
        "VALUE = 1.23e-05",
    ),
    (
        "awesome: integral value",
        "VALUE = {{ $value }}",
        "3",
        "VALUE = 3",
    ),
    (
        "awesome: 1e6",
        "VALUE = {{ $value }}",
        "1000000",
        "VALUE = 1e+06",
    ),
    (
        "disk printf",
        "{{ $labels.instance }} disk {{ $labels.mountpoint }} is {{ printf \"%.2f\" $value }}% full",
        "93.456",
        "db-1.example.com:9100 disk /var is 93.46% full",
    ),
    (
        "node-mixin: filesystem space",
        "Filesystem on {{ $labels.device }}, mounted on {{ $labels.mountpoint }}, at {{ $labels.instance }} has only {{ printf \"%.2f\" $value }}% available space left.",
        "4.0049",
        "Filesystem on /dev/sda1, mounted on /var, at db-1.example.com:9100 has only 4.00% available space left.",
    ),
    (
        "node-mixin: memory",
        "Memory is filling up at {{ $labels.instance }}, has only {{ printf \"%.2f\" $value }}% left.",
        "9.999",
        "Memory is filling up at db-1.example.com:9100, has only 10.00% left.",
    ),
    (
        "kube-prometheus: crashloop",
        "Pod {{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) is in waiting state (reason: \"CrashLoopBackOff\").",
        "1",
        "Pod prod/api-7d9f (api) is in waiting state (reason: \"CrashLoopBackOff\").",
    ),
    (
        "kube-prometheus: targets down",
        "{{ printf \"%.4g\" $value }}% of the {{ $labels.job }}/{{ $labels.service }} targets in {{ $labels.namespace }} namespace are down.",
        "33.33333",
        "33.33% of the node/kubelet targets in prod namespace are down.",
    ),
    (
        "kube-prometheus: kubelet pods",
        "Kubelet '{{ $labels.node }}' is running at {{ $value | humanizePercentage }} of its Pod capacity.",
        "0.9545",
        "Kubelet 'worker-3' is running at 95.45% of its Pod capacity.",
    ),
    (
        "kube-prometheus: errors percentage",
        "The API server has {{ $value | humanizePercentage }} of requests failing.",
        "0.031415",
        "The API server has 3.141% of requests failing.",
    ),
    (
        "prometheus-mixin: rule failures",
        "Prometheus {{$labels.namespace}}/{{$labels.pod}} has failed to evaluate {{ printf \"%.0f\" $value }} rules in the last 5m.",
        "12.5",
        "Prometheus prod/api-7d9f has failed to evaluate 12 rules in the last 5m.",
    ),
    (
        "alertmanager-mixin",
        "Alertmanager {{ $labels.namespace }}/{{ $labels.pod}} failed to send {{ $value | humanizePercentage }} of notifications to {{ $labels.integration }}.",
        "0.015",
        "Alertmanager prod/api-7d9f failed to send 1.5% of notifications to slack.",
    ),
    (
        "cert expiry duration",
        "Client certificate for {{ $labels.job }} expires in {{ $value | humanizeDuration }}",
        "601234.5",
        "Client certificate for node expires in 6d 23h 0m 34s",
    ),
    (
        "humanizeDuration short",
        "{{ humanizeDuration $value }}",
        "3661",
        "1h 1m 1s",
    ),
    (
        "humanizeDuration sub-second",
        "{{ humanizeDuration $value }}",
        "0.0123",
        "12.3ms",
    ),
    (
        "disk IO humanize",
        "Disk is writing {{ $value | humanize }}B/s",
        "123456789",
        "Disk is writing 123.5MB/s",
    ),
    ("humanize small", "{{ humanize $value }}", "0.012", "12m"),
    (
        "humanize1024",
        "{{ $value | humanize1024 }}B",
        "1048576",
        "1MiB",
    ),
    (
        "humanize1024 fraction",
        "{{ $value | humanize1024 }}B",
        "1536000",
        "1.465MiB",
    ),
    (
        "humanizeTimestamp",
        "expires at {{ $value | humanizeTimestamp }}",
        "1735689600.25",
        "expires at 2025-01-01 00:00:00.249 +0000 UTC",
    ),
    (
        "severity by threshold high",
        "{{ if gt $value 90.0 }}critical{{ else }}warning{{ end }}",
        "95",
        "critical",
    ),
    (
        "severity by threshold low",
        "{{ if gt $value 90.0 }}critical{{ else }}warning{{ end }}",
        "50",
        "warning",
    ),
    (
        "else if chain",
        "{{ if lt $value 0.5 }}low{{ else if lt $value 2.0 }}medium{{ else }}high{{ end }}",
        "1.5",
        "medium",
    ),
    (
        "labels range",
        "{{ range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end }}",
        "1",
        "container=api device=/dev/sda1 fstype=ext4 instance=db-1.example.com:9100 integration=slack job=node mountpoint=/var namespace=prod node=worker-3 pod=api-7d9f service=kubelet severity=warning ",
    ),
    (
        "labels range trimmed",
        "Labels:\n{{- range $k, $v := $labels }}\n  - {{ $k }}: {{ $v }}\n{{- end }}",
        "1",
        "Labels:\n  - container: api\n  - device: /dev/sda1\n  - fstype: ext4\n  - instance: db-1.example.com:9100\n  - integration: slack\n  - job: node\n  - mountpoint: /var\n  - namespace: prod\n  - node: worker-3\n  - pod: api-7d9f\n  - service: kubelet\n  - severity: warning",
    ),
    (
        "strip port regex",
        "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
        "1",
        "db-1.example.com",
    ),
    (
        "stripPort",
        "{{ $labels.instance | stripPort }}",
        "1",
        "db-1.example.com",
    ),
    (
        "title/upper/lower",
        "{{ \"hello\" | title }} {{ toUpper \"abc\" }} {{ $labels.severity | title }} {{ toLower \"ABC\" }}",
        "1",
        "Hello ABC Warning abc",
    ),
    (
        "len and index",
        "{{ len $labels }} labels, job={{ index $labels \"job\" }}",
        "1",
        "12 labels, job=node",
    ),
    (
        "missing label is empty",
        "[{{ $labels.nope }}][{{ index $labels \"nope\" }}][{{ .Labels.nope }}]",
        "1",
        "[][][]",
    ),
    (
        "with label",
        "{{ with $labels.pod }}pod {{ . }}{{ else }}no pod{{ end }}; {{ with $labels.nope }}x{{ else }}no nope{{ end }}",
        "1",
        "pod api-7d9f; no nope",
    ),
    (
        "dot fields",
        "{{ .Labels.instance }} = {{ .Value }} ({{ .ExternalLabels.cluster }})",
        "0.25",
        "db-1.example.com:9100 = 0.25 (c1)",
    ),
    (
        "external labels",
        "cluster {{ $externalLabels.cluster }}",
        "1",
        "cluster c1",
    ),
    (
        "and/eq",
        "{{ if and (eq $labels.job \"node\") (lt $value 10.0) }}node low{{ end }}",
        "3",
        "node low",
    ),
    (
        "comments and trim",
        "a {{- /* a comment */ -}} b {{/* another */}}c\n  {{- \" d\" }}",
        "1",
        "ab c d",
    ),
    (
        "printf value pipe",
        "{{ $value | printf \"%.2f\" }}%",
        "12.345",
        "12.35%",
    ),
    (
        "printf widths",
        "[{{ printf \"%-10s|%8.3f|%05d\" $labels.job $value 42 }}]",
        "3.14159",
        "[node      |   3.142|00042]",
    ),
    (
        "match",
        "{{ if match \"^db-\" $labels.instance }}database{{ end }}",
        "1",
        "database",
    ),
    (
        "variables",
        "{{ $host := reReplaceAll \":[0-9]+$\" \"\" $labels.instance }}{{ $pct := printf \"%.1f\" $value }}{{ $host }} at {{ $pct }}%",
        "88.88",
        "db-1.example.com at 88.9%",
    ),
    (
        "stripDomain",
        "{{ $labels.instance | stripDomain }}",
        "1",
        "db-1:9100",
    ),
    (
        "graphLink",
        "{{ graphLink \"rate(http_requests_total{job=\\\"api\\\"}[5m])\" }}",
        "1",
        "/graph?g0.expr=rate%28http_requests_total%7Bjob%3D%22api%22%7D%5B5m%5D%29&g0.tab=0",
    ),
    (
        "parseDuration",
        "{{ parseDuration \"1h30m\" }}s",
        "1",
        "5400s",
    ),
    ("print map", "{{ $externalLabels }}", "1", "map[cluster:c1]"),
    (
        "value NaN",
        "{{ $value }} {{ humanize $value }}",
        "NaN",
        "NaN NaN",
    ),
    (
        "value Inf",
        "{{ $value }} {{ humanize $value }} {{ humanizePercentage $value }}",
        "Inf",
        "+Inf +Inf +Inf%",
    ),
    (
        "define/template",
        "{{ define \"host\" }}{{ .instance | stripPort }}{{ end }}host={{ template \"host\" $labels }}",
        "1",
        "host=db-1.example.com",
    ),
    (
        "query first value",
        "{{ with query \"sort(up)\" }}{{ . | first | value }}{{ end }}",
        "1",
        "0",
    ),
    (
        "query range",
        "{{ range query \"sort(up)\" }}{{ .Labels.instance }}={{ .Value }} {{ end }}",
        "1",
        "b:9100=0 a:9100=1 ",
    ),
    (
        "query empty",
        "{{ with query \"nothing\" }}some{{ else }}none{{ end }}",
        "1",
        "none",
    ),
    (
        "query label",
        "{{ query \"sort(up)\" | first | label \"job\" }}",
        "1",
        "y",
    ),
];

#[test]
fn real_rules_render_like_prometheus() {
    let mut failures = Vec::new();
    for (what, text, value, want) in REAL_RULES {
        let got = render(text, value.parse().unwrap());
        if got.as_deref() != Ok(*want) {
            failures.push(format!("{what}: {text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `$value` prints like Go's `%v` of a float64: the shortest digits that
/// read back exactly, in exponent form below 1e-4 and from 1e6 on (`%g`'s
/// rule, which decides with precision 6 even for the shortest digits).
#[test]
fn value_prints_like_go_float64() {
    let cases = [
        (0.5, "0.5"),
        (3.0, "3"),
        (100_000.0, "100000"),
        (1e6, "1e+06"),
        (1_234_567.0, "1.234567e+06"),
        (123_456_789.0, "1.23456789e+08"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e21, "1e+21"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-0.0, "-0"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::MAX, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
    ];
    for (v, want) in cases {
        assert_eq!(ok("{{ $value }}", v), want, "{v}");
        assert_eq!(ok("{{ .Value }}", v), want, "{v}");
    }
}

#[test]
fn humanize_functions_match_prometheus() {
    let cases = [
        ("humanize 1234567", "1.235M"),
        ("humanize 0.012", "12m"),
        ("humanize 0", "0"),
        ("humanize 999.99", "1000"),
        ("humanize 1000", "1k"),
        ("humanize -1234", "-1.234k"),
        ("humanize 1e30", "1e+06Y"),
        ("humanize 1e-30", "1e-06y"),
        ("humanize \"1234\"", "1.234k"),
        ("humanize1024 1048576", "1Mi"),
        ("humanize1024 1023", "1023"),
        ("humanize1024 0.5", "0.5"),
        ("humanizeDuration 3661", "1h 1m 1s"),
        ("humanizeDuration 0", "0s"),
        ("humanizeDuration 59.5", "59.5s"),
        ("humanizeDuration 60", "1m 0s"),
        ("humanizeDuration 86400", "1d 0h 0m 0s"),
        ("humanizeDuration -90061", "-1d 1h 1m 1s"),
        ("humanizeDuration 0.0012", "1.2ms"),
        ("humanizeDuration 0.000000001", "1ns"),
        ("humanizePercentage 0.1234", "12.34%"),
        ("humanizePercentage 1", "100%"),
        ("humanizePercentage 0.00001234", "0.001234%"),
        ("humanizeTimestamp 0", "1970-01-01 00:00:00 +0000 UTC"),
        (
            "humanizeTimestamp 1435065584.128",
            "2015-06-23 13:19:44.128 +0000 UTC",
        ),
        ("humanizeTimestamp -1.5", "1969-12-31 23:59:58.5 +0000 UTC"),
        ("toTime 1700000000", "2023-11-14 22:13:20 +0000 UTC"),
        ("(toTime 1700000000.5).Unix", "1700000000"),
    ];
    for (expr, want) in cases {
        assert_eq!(ok(&format!("{{{{ {expr} }}}}"), 1.0), want, "{expr}");
    }
}

#[test]
fn time_format_uses_go_layouts() {
    let t = "{{ (toTime 1700000000.5).Format \"2006-01-02T15:04:05.000Z07:00 Mon Jan _2 3:04PM 002 .999\" }}";
    assert_eq!(
        ok(t, 1.0),
        "2023-11-14T22:13:20.500Z Tue Nov 14 10:13PM 318 .5"
    );
    // Like Prometheus, times are cut to milliseconds of the float64 product.
    assert_eq!(
        ok("{{ humanizeTimestamp 1735689600.25 }}", 1.0),
        "2025-01-01 00:00:00.249 +0000 UTC"
    );
    assert_eq!(
        ok(
            "{{ (toTime 0).Format \"January 2, 2006 15:04:05 MST -0700\" }}",
            1.0
        ),
        "January 1, 1970 00:00:00 UTC +0000"
    );
    assert_eq!(
        ok(
            "{{ (toTime 951782400).YearDay }} {{ (toTime 951782400).Weekday }}",
            1.0
        ),
        "60 Tuesday"
    );
}

#[test]
fn printf_follows_go_fmt() {
    let cases = [
        (r#"printf "%.2f" 3.14159"#, "3.14"),
        (
            r#"printf "%5.1f|%-6d|%06.2f" 3.14159 42 -1.5"#,
            "  3.1|42    |-01.50",
        ),
        (
            r#"printf "%x %X %o %b %c %U %q" 255 255 8 5 65 9731 "a\"b""#,
            r#"ff FF 10 101 A U+2603 "a\"b""#,
        ),
        (
            r#"printf "%v %s %d" true 1.5 "x""#,
            "true %!s(float64=1.5) %!d(string=x)",
        ),
        (r#"printf "%s %d" 1"#, "%!s(int=1) %!d(MISSING)"),
        (r#"printf "%d" 1 2"#, "1%!(EXTRA int=2)"),
        (
            r#"printf "%e %E %.3e %g %G" 1234.5678 0.000123 0.0 1e21 1e-7"#,
            "1.234568e+03 1.230000E-04 0.000e+00 1e+21 1E-07",
        ),
        (
            r#"printf "%.4g %.2g %.10g %#g" 100000.0 0.000123 1.0 1.0"#,
            "1e+05 0.00012 1 1.00000",
        ),
        (
            r#"printf "%08.3f|%+d|% d|%.3d|%8.3d" 3.14159 5 5 7 7"#,
            "0003.142|+5| 5|007|     007",
        ),
        (r#"printf "%[2]s %[1]s" "a" "b""#, "b a"),
        (
            r#"printf "%*d|%.*f|%-*d|" 4 1 2 3.14159 -3 7"#,
            "   1|3.14|7  |",
        ),
        (
            r#"printf "%[2]s %[1]s %*d %.*f" "a" "b" 4 1 2 3.14159"#,
            "b a %!(BADWIDTH)4 %!f(int=2)",
        ),
        (
            r#"printf "%10.4v|%-10v|%.2s|%5t" 3.14159265 "ab" "abcdef" true"#,
            "     3.142|ab        |ab| true",
        ),
        (
            r#"printf "%v %T %T" $labels.job $value 1"#,
            "node float64 int",
        ),
        (
            r#"printf "%x % X %q %#q" "hi" "hi" 'x' "ab""#,
            "6869 68 69 'x' `ab`",
        ),
        (
            r#"printf "%.0f %.0f %.1f %.2f" 0.5 1.5 0.05 2.675"#,
            "0 2 0.1 2.67",
        ),
        (r#"printf "100%%" "#, "100%"),
        (r#"printf "%!""#, "%!!(MISSING)"),
        (r#"printf "%""#, "%!(NOVERB)"),
        (r#"printf "%z" 1"#, "%!z(int=1)"),
        (r#"print 1 2 "a" "b" 3 nil"#, "1 2ab3 <nil>"),
        (r#"println 1 "a""#, "1 a\n"),
        (
            r#"html "<a href='x'>&\"" "#,
            "&lt;a href=&#39;x&#39;&gt;&amp;&#34;",
        ),
        (
            r#"js "it's <b> \"q\" = \n""#,
            r#"it\'s \u003Cb\u003E \"q\" \u003D \u000A"#,
        ),
        (r#"urlquery "a b&c=d/é""#, "a+b%26c%3Dd%2F%C3%A9"),
    ];
    for (expr, want) in cases {
        assert_eq!(ok(&format!("{{{{ {expr} }}}}"), 1.0), want, "{expr}");
    }
}

#[test]
fn literals_are_go_constants() {
    assert_eq!(
        ok(
            "{{ 1e3 }} {{ 0x10 }} {{ 1_000 }} {{ 'a' }} {{ -0.0 }} {{ 010 }} {{ 0o17 }} {{ 1.0 }} {{ .5 }} {{ \"\\u00e9\\t|\" }} {{ `raw\\n` }}",
            1.0
        ),
        "1000 16 1000 97 -0 8 15 1 0.5 é\t| raw\\n"
    );
    assert_eq!(
        ok("{{ true }} {{ false }} {{ printf \"%v\" nil }}", 1.0),
        "true false <nil>"
    );
}

#[test]
fn control_structures() {
    let cases = [
        (
            "{{ range $i, $e := args \"a\" \"b\" }}{{ $i }}:{{ $e }} {{ end }}",
            "arg0:a arg1:b ",
        ),
        (
            "{{ range $v := args 1 2 3 }}{{ if eq $v 2 }}{{ continue }}{{ end }}{{ $v }}{{ end }}",
            "13",
        ),
        (
            "{{ range $v := args 1 2 3 }}{{ if eq $v 2 }}{{ break }}{{ end }}{{ $v }}{{ end }}",
            "1",
        ),
        (
            "{{ range $externalLabels }}[{{ . }}]{{ else }}none{{ end }}",
            "[c1]",
        ),
        ("{{ range args }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        (
            "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}",
            "2",
        ),
        (
            "{{ with $x := $labels.job }}{{ $x }}{{ . }}{{ end }}",
            "nodenode",
        ),
        (
            "{{ with $labels.nope }}x{{ else with $labels.job }}{{ . }}{{ end }}",
            "node",
        ),
        (
            "{{ if $labels.nope }}a{{ else if $labels.job }}b{{ else }}c{{ end }}",
            "b",
        ),
        (
            "{{ and 1 0 2 }} {{ or 0 \"\" \"x\" }} {{ not 0 }} {{ and 1 (lt 1 0) }}",
            "0 x true false",
        ),
        (
            "{{ eq 1 2 3 1 }} {{ ne \"a\" \"b\" }} {{ le 2 2 }} {{ ge \"b\" \"a\" }}",
            "true true true true",
        ),
        (
            "{{ block \"b\" $labels.job }}<{{ . }}>{{ end }} {{ template \"b\" \"x\" }}",
            "<node> <x>",
        ),
        (
            "{{ template \"t\" }}{{ define \"t\" }}[{{ . }}]{{ end }}",
            "[<no value>]",
        ),
        (
            "{{ $.Labels.job }} {{ $.Value }} {{ $ | printf \"%T\" | len | lt 50 }}",
            "node 1 true",
        ),
        (
            "{{ (args 1 2).arg1 }} {{ len (args 1 2) }} {{ index (args 1 \"x\") \"arg1\" }}",
            "2 2 x",
        ),
        (
            "{{ slice \"hello\" 1 3 }} {{ index \"abc\" 1 }} {{ len \"héllo\" }}",
            "el 98 6",
        ),
        (
            "{{ tmpl \"t\" $labels.job | toUpper }}{{ define \"t\" }}<{{ . }}>{{ end }}",
            "<NODE>",
        ),
        (
            "{{ (query \"sort(up)\" | sortByLabel \"instance\" | first).Labels.instance }}",
            "a:9100",
        ),
        (
            "{{ \"a\" | printf \"%s-%s\" \"b\" }} {{ 3 | printf \"%d %d\" 4 }}",
            "b-a 4 3",
        ),
        ("{{ $labels.nope | len }} {{ print .Labels.nope }}", "0 "),
    ];
    for (text, want) in cases {
        assert_eq!(ok(text, 1.0), want, "{text}");
    }
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(
        ok("a  {{- 1 -}}  b {{- /* c */ -}} c {{/* x */}} d", 1.0),
        "a1bc  d"
    );
    assert_eq!(ok("{{- \"a\" -}}\n\t \n{{- \"b\" }}", 1.0), "ab");
    assert_eq!(ok("{{-3}}|{{ 3 -}} x", 1.0), "-3|3x");
    assert_eq!(ok("{{/* multi\nline */}}x{{- /* t */}} y", 1.0), "x y");
}

/// Go rejects comparing a float64 with an int literal; accepting it lets
/// `gt $value 90` work as users expect.
#[test]
fn numbers_compare_across_int_and_float() {
    assert_eq!(
        ok(
            "{{ if gt $value 90 }}critical{{ else }}warning{{ end }}",
            95.0
        ),
        "critical"
    );
    assert_eq!(
        ok(
            "{{ if gt $value 90 }}critical{{ else }}warning{{ end }}",
            90.0
        ),
        "warning"
    );
    assert_eq!(
        ok("{{ if ge $value 90 }}critical{{ end }}", 90.0),
        "critical"
    );
    assert_eq!(ok("{{ if eq $value 3 }}three{{ end }}", 3.0), "three");
    assert_eq!(
        ok(
            "{{ lt 1 1.5 }} {{ lt 2.5 2 }} {{ eq 2 2.0 }} {{ gt $value 1 }}",
            f64::NAN
        ),
        "true false true true"
    );
    assert!(exec_err("{{ eq \"1\" 1 }}").contains("incompatible types for comparison"));
}

#[test]
fn title_keeps_apostrophes_inside_words() {
    assert_eq!(
        ok("{{ title \"don't stop the node-exporter_x\" }}", 1.0),
        "Don't Stop The Node-Exporter_x"
    );
}

#[test]
fn query_function() {
    assert_eq!(
        ok(
            "{{ with query \"sort(up)\" }}{{ . | first | value }}{{ end }}",
            1.0
        ),
        "0"
    );
    assert_eq!(
        ok("{{ range query \"sort(up)\" }}{{ . }};{{ end }}", 1.0),
        "{map[__name__:up instance:b:9100 job:y] 0};{map[__name__:up instance:a:9100 job:x] 1};"
    );
    assert_eq!(
        ok("{{ printf \"%+v\" (query \"sort(up)\" | first) }}", 1.0),
        "&{Labels:map[__name__:up instance:b:9100 job:y] Value:0}"
    );
    assert!(
        exec_err("{{ query \"nothing\" | first }}")
            .ends_with("error calling first: first() called on vector with no elements")
    );
    assert!(exec_err("{{ query \"bad(\" }}").ends_with("error calling query: unknown query bad("));
    let t = Template::parse("t", "{{ query \"up\" }}").unwrap();
    let e = t.execute(&data(1.0), None).unwrap_err();
    assert!(e.message.contains("queries are not available"), "{e}");
}

#[test]
fn parse_errors_name_the_problem_and_its_position() {
    let cases = [
        ("{{ .Foo.Bar", "1:12: unclosed action"),
        ("{{ foo }}", "1:4: function \"foo\" not defined"),
        (
            "a\n{{ if 1 }}\nb {{ foo }}",
            "3:6: function \"foo\" not defined",
        ),
        ("{{ end }}", "1:4: unexpected {{end}}"),
        ("{{ if }}x{{ end }}", "1:7: missing value for if"),
        ("{{ if 1 }}", "1:11: unexpected EOF"),
        ("{{ $x }}", "1:4: undefined variable \"$x\""),
        ("{{ break }}", "1:4: {{break}} outside {{range}}"),
        ("{{/* x", "1:1: unclosed comment"),
        ("{{ \"abc }}", "1:4: unterminated quoted string"),
        ("{{ ( 1 }}", "1:8: unclosed left paren"),
        ("{{ 1 ) }}", "1:6: unexpected \")\" in command"),
        ("{{ 3x }}", "1:4: bad number syntax: \"3x\""),
        (
            "{{ \"a\" | \"b\" }}",
            "1:10: non executable command in pipeline stage 2",
        ),
        (
            "{{ range $a, $b, $c := . }}{{ end }}",
            "1:16: too many declarations in range",
        ),
        (
            "{{ define \"a\" }}{{ $labels }}{{ end }}",
            "1:20: undefined variable \"$labels\"",
        ),
        (
            "{{ 99999999999999999999 }}",
            "1:4: integer overflow: \"99999999999999999999\"",
        ),
        ("{{ 1+2i }}", "1:4: complex numbers are not supported"),
        (
            "{{ ¢ }}",
            "1:4: unrecognized character in action: U+00A2 '¢'",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_err(text), want, "{text:?}");
    }
    let e = Template::parse("annotation summary", "{{ foo }}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "template annotation summary: 1:4: function \"foo\" not defined"
    );
}

#[test]
fn execution_errors_are_clear() {
    let cases = [
        (
            "{{ .Foo }}",
            "1:4: executing at <.Foo>: can't evaluate field Foo in type struct {",
        ),
        (
            "{{ $labels.job.x }}",
            "can't evaluate field x in type string",
        ),
        (
            "{{ printf }}",
            "wrong number of args for printf: want at least 1 got 0",
        ),
        (
            "{{ humanize \"abc\" }}",
            "error calling humanize: strconv.ParseFloat: parsing \"abc\": invalid syntax",
        ),
        (
            "{{ humanize $labels }}",
            "can't convert map[string]string to float",
        ),
        (
            "{{ index $labels 1 }}",
            "error calling index: value has type int; should be string",
        ),
        (
            "{{ index (query \"sort(up)\") 5 }}",
            "error calling index: index out of range: 5",
        ),
        ("{{ slice \"abc\" 2 1 }}", "invalid slice index: 2 > 1"),
        ("{{ len 3 }}", "len of type int"),
        (
            "{{ toUpper $value }}",
            "wrong type for value; expected string; got float64",
        ),
        ("{{ toUpper 1 }}", "expected string; found 1"),
        ("{{ lt true false }}", "invalid type for comparison"),
        ("{{ range 1.5 }}x{{ end }}", "range can't iterate over 1.5"),
        ("{{ template \"nope\" }}", "template \"nope\" not defined"),
        ("{{ 1 2 }}", "can't give argument to non-function 1"),
        (
            "{{ reReplaceAll \"(\" \"x\" \"y\" }}",
            "error calling reReplaceAll: regexp: Compile(`(`): error parsing regexp",
        ),
        (
            "{{ parseDuration \"1x\" }}",
            "not a valid duration string: \"1x\"",
        ),
        (
            "{{ call 1 }}",
            "error calling call: non-function of type int",
        ),
        ("{{ label \"x\" nil }}", "nil pointer dereference"),
        ("{{ $x = 1 }}", "undefined variable: $x"),
        ("{{ (args).a.b }}", "nil pointer evaluating interface {}.b"),
    ];
    for (text, want) in cases {
        let e = exec_err(text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn output_is_capped() {
    let big = "x".repeat(1000);
    let t = format!("{{{{ range 2000 }}}}{big}{{{{ end }}}}");
    assert!(exec_err(&t).contains("output exceeds 1048576 bytes"));
    // A string doubled in a loop is stopped once too large.
    let t = "{{ $s := \"xxxxxxxxxx\" }}{{ range 100 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}";
    assert!(
        exec_err(t).contains("exceeds 1048576 bytes"),
        "{}",
        exec_err(t)
    );
    let t =
        "{{ $s := \"xxxxxxxxxx\" }}{{ range 100 }}{{ $s = reReplaceAll \"x\" \"xx\" $s }}{{ end }}";
    assert!(exec_err(t).contains("exceeds 1048576 bytes"));
    assert!(exec_err("{{ printf \"%999999d%999999d\" 1 2 }}").contains("exceeds"));
}

#[test]
fn args_maps_nest_a_bounded_depth() {
    // Printing or dropping a deeper value would recurse once per level.
    let text = "{{ $x := args }}{{ range 100000 }}{{ $x = args $x }}{{ end }}{{ $x }}";
    let e = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || exec_err(text))
        .unwrap()
        .join()
        .unwrap();
    assert!(e.contains("value nested deeper than 100 levels"), "{e}");
}

#[test]
fn long_loops_are_stopped() {
    let e = exec_err("{{ range 1000000000000 }}{{ end }}");
    assert!(e.contains("execution took more than 5000000 steps"), "{e}");
    let e = exec_err("{{ range 100000 }}{{ range 100000 }}{{ end }}{{ end }}");
    assert!(e.contains("steps"), "{e}");
}

#[test]
fn recursion_is_bounded() {
    let e = exec_err("{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" . }}");
    assert!(e.contains("exceeded maximum template depth (100)"), "{e}");
    let e = exec_err("{{ define \"r\" }}{{ tmpl \"r\" . }}{{ end }}{{ template \"r\" . }}");
    assert!(e.contains("exceeded maximum template depth (100)"), "{e}");
    // Mutual recursion through nested structures, on a small stack.
    let body = "{{ if 1 }}{{ with 1 }}{{ range 1 }}{{ template \"r\" (print (print (print .))) }}{{ end }}{{ end }}{{ end }}";
    let text = format!("{{{{ define \"r\" }}}}{body}{{{{ end }}}}{{{{ template \"r\" . }}}}");
    let e = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || exec_err(&text))
        .unwrap()
        .join()
        .unwrap();
    assert!(
        e.contains("exceeded maximum") || e.contains("deeper than"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_rejected_at_parse_time() {
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(500), ")".repeat(500));
    assert!(parse_err(&deep).contains("nesting deeper than 100 levels"));
    let deep = format!("{}x{}", "{{ if 1 }}".repeat(500), "{{ end }}".repeat(500));
    assert!(parse_err(&deep).contains("nesting deeper than 100 levels"));
    // Within the limit, both parse and run on a small stack.
    let text = format!(
        "{}{{{{ {}1{} }}}}{}",
        "{{ if 1 }}{{ with 1 }}".repeat(24),
        "(print ".repeat(49),
        ")".repeat(49),
        "{{ end }}{{ end }}".repeat(24)
    );
    let out = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || ok(&text, 1.0))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(out, "1");
}

#[test]
fn template_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
    let t = Template::parse("n", "x").unwrap();
    assert_eq!((t.name(), t.text()), ("n", "x"));
}

/// Pieces that make up templates, for the fuzz test.
const PIECES: &[&str] = &[
    "{{",
    "}}",
    "{{-",
    "-}}",
    " ",
    "\n",
    "$labels",
    "$value",
    "$x",
    ":=",
    "=",
    "$x :=",
    "|",
    ".",
    ".Labels",
    ".Value",
    ".job",
    "(",
    ")",
    "\"s\"",
    "`r`",
    "1",
    "1.5",
    "-2",
    "'c'",
    "nil",
    "true",
    "if",
    "else",
    "end",
    "range",
    "with",
    "define \"t\"",
    "template \"t\"",
    "block \"t\" .",
    "break",
    "continue",
    ",",
    "$k, $v :=",
    "printf \"%v%s%d%.2f\"",
    "print",
    "len",
    "index",
    "slice",
    "eq",
    "lt",
    "gt",
    "and",
    "or",
    "not",
    "humanize",
    "humanizeDuration",
    "title",
    "query \"sort(up)\"",
    "first",
    "value",
    "label \"job\"",
    "args",
    "reReplaceAll \"(x*)\" \"$1$1\"",
    "tmpl \"t\"",
    "toTime",
    "js",
    "html",
    "urlquery",
    "/*",
    "*/",
    "é",
    "{{/* c */}}",
    "text",
];

fn run_any(text: &str) {
    if let Ok(t) = Template::parse("fuzz", text) {
        let _ = t.execute(&data(0.5), Some(&Fake));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        run_any(&text);
    }

    #[test]
    fn template_like_text_never_panics(pieces in prop::collection::vec(0..PIECES.len(), 0..40)) {
        let text: String = pieces.iter().map(|&i| PIECES[i]).collect::<Vec<_>>().join(" ");
        run_any(&text);
        let text: String = pieces.iter().map(|&i| PIECES[i]).collect();
        run_any(&text);
    }

    #[test]
    fn printf_never_panics(format in "[%0-9.*#+ \\-\\[\\]vdsqxXfegtcUTb]{0,30}", n in any::<i64>(), f in any::<f64>()) {
        let _ = gofmt::sprintf(&format, &[value::Value::Int(n), value::Value::Float(f), value::Value::str("s")], exec::MAX_OUTPUT);
    }

    #[test]
    fn floats_format_like_go_g(f in any::<f64>()) {
        // Round-trips: Go's shortest %v reads back as the same float.
        let s = gofmt::float_v(f);
        if f.is_finite() {
            prop_assert_eq!(s.parse::<f64>().unwrap(), f);
        }
    }
}

/// The deepest nesting the limits allow, in the shapes that use the most
/// stack per level, runs into a limit on a 2 MiB stack in a debug build.
#[test]
fn worst_case_nesting_fits_a_small_stack() {
    let shapes = [(0, 98, true), (48, 50, false), (97, 1, false), (0, 1, true)];
    for (ifs, parens, via_tmpl) in shapes {
        let inner = if via_tmpl { "(tmpl \"r\" .)" } else { "1" };
        let nested = format!("{}{inner}{}", "(print ".repeat(parens), ")".repeat(parens));
        let call = if via_tmpl {
            ""
        } else {
            "{{ template \"r\" . }}"
        };
        let text = format!(
            "{{{{ define \"r\" }}}}{}{{{{ print {nested} }}}}{call}{}{{{{ end }}}}{{{{ template \"r\" . }}}}",
            "{{ if 1 }}".repeat(ifs),
            "{{ end }}".repeat(ifs),
        );
        let e = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || exec_err(&text))
            .unwrap()
            .join()
            .unwrap();
        assert!(
            e.contains("nested deeper than 250 levels") || e.contains("maximum template depth"),
            "{ifs} {parens} {via_tmpl}: {e}"
        );
        assert!(e.len() < 200, "{e}");
    }
}
