use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

/// Owned copy of a sample, for comparisons.
#[derive(Debug, Clone, PartialEq)]
struct S {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts: Option<i64>,
    line: usize,
}

fn s(name: &str, labels: &[(&str, &str)], value: f64, ts: Option<i64>, line: usize) -> S {
    S {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
        ts,
        line,
    }
}

fn own(x: &Sample<'_, '_>) -> S {
    S {
        name: x.name.to_string(),
        labels: x
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value: x.value,
        ts: x.timestamp_ms,
        line: x.line,
    }
}

/// Every entry and error of a body in the given format.
fn parse_with(text: &str, format: Format) -> (Vec<Entry<'_, '_>>, Vec<ParseError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for r in Parser::with_format(text, format) {
        match r {
            Ok(e) => entries.push(e),
            Err(e) => errors.push(e),
        }
    }
    (entries, errors)
}

fn samples_of(entries: &[Entry<'_, '_>]) -> Vec<S> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Sample(x) => Some(own(x)),
            _ => None,
        })
        .collect()
}

/// The only sample of a one-line Prometheus-text body, which must parse without error.
fn one(line: &str) -> S {
    one_in(line, Format::Prometheus)
}

fn one_in(line: &str, format: Format) -> S {
    let (entries, errors) = parse_with(line, format);
    let errors: Vec<_> = errors
        .into_iter()
        .filter(|e| !e.message.contains("# EOF"))
        .collect();
    assert!(errors.is_empty(), "{line:?}: {errors:?}");
    let samples = samples_of(&entries);
    assert_eq!(samples.len(), 1, "{line:?}: {entries:?}");
    samples.into_iter().next().unwrap_or_else(|| unreachable!())
}

/// The only error of a one-line Prometheus-text body: (column, message).
fn err(line: &str) -> (usize, String) {
    let (entries, errors) = parse_with(line, Format::Prometheus);
    assert!(entries.is_empty(), "{line:?}: {entries:?}");
    assert_eq!(errors.len(), 1, "{line:?}: {errors:?}");
    assert_eq!(errors[0].line, 1);
    (errors[0].column, errors[0].message.clone())
}

fn value(v: &str) -> f64 {
    one(&format!("m {v}")).value
}

fn value_err(v: &str) -> String {
    err(&format!("m {v}")).1
}

// --- samples -----------------------------------------------------------------------------

#[test]
fn simple_samples() {
    assert_eq!(one("foo 1"), s("foo", &[], 1.0, None, 1));
    assert_eq!(
        one("foo 1 1700000000000"),
        s("foo", &[], 1.0, Some(1_700_000_000_000), 1)
    );
    assert_eq!(
        one(r#"http_requests_total{method="post",code="200"} 1027 1395066363000"#),
        s(
            "http_requests_total",
            &[("method", "post"), ("code", "200")],
            1027.0,
            Some(1_395_066_363_000),
            1
        )
    );
    assert_eq!(one("foo{} 2"), s("foo", &[], 2.0, None, 1));
    assert_eq!(one("_ 2"), s("_", &[], 2.0, None, 1));
}

#[test]
fn names_may_hold_colons_and_digits() {
    assert_eq!(
        one(r#"job:http_requests:rate5m{job="api"} 0.5"#),
        s("job:http_requests:rate5m", &[("job", "api")], 0.5, None, 1)
    );
    assert_eq!(one(":a1:_9 3"), s(":a1:_9", &[], 3.0, None, 1));
    assert_eq!(
        one(r#"a{_b9="x",A_="y"} 3"#),
        s("a", &[("_b9", "x"), ("A_", "y")], 3.0, None, 1)
    );
}

#[test]
fn labels_keep_text_order_and_duplicates() {
    assert_eq!(
        one(r#"m{z="1",a="2",z="3",__name__="other"} 1"#),
        s(
            "m",
            &[("z", "1"), ("a", "2"), ("z", "3"), ("__name__", "other")],
            1.0,
            None,
            1
        )
    );
}

#[test]
fn whitespace_between_tokens_and_trailing_comma() {
    let want = s("m", &[("a", "1"), ("b", "2")], 3.0, Some(4), 1);
    for line in [
        r#"m{a="1",b="2"} 3 4"#,
        r#"m{a="1",b="2",} 3 4"#,
        r#"m { a = "1" , b = "2" , } 3 4"#,
        "m\t{\ta\t=\t\"1\",b=\"2\"\t}\t3\t4",
        "  \tm{a=\"1\",b=\"2\"}   3   4   ",
        r#"m{a="1",b="2"}3 4"#,
        // Prometheus takes pairs separated by whitespace alone, or nothing at all.
        r#"m{a="1" b="2"} 3 4"#,
        r#"m{a="1"b="2"} 3 4"#,
    ] {
        assert_eq!(one(line), want, "{line:?}");
    }
}

#[test]
fn label_value_escapes() {
    let x = one(r#"m{a="x\\y\"z\nw"} 1"#);
    assert_eq!(x.labels, vec![("a".into(), "x\\y\"z\nw".into())]);
    // Other backslash pairs stay as written.
    let x = one(r#"m{a="\t\q\x41\é"} 1"#);
    assert_eq!(x.labels, vec![("a".into(), r"\t\q\x41\é".into())]);
    // `\\n` is a backslash and an 'n'.
    let x = one(r#"m{a="\\n"} 1"#);
    assert_eq!(x.labels, vec![("a".into(), r"\n".into())]);
    // A value ending in an escaped backslash.
    let x = one(r#"m{a="C:\\"} 1"#);
    assert_eq!(x.labels, vec![("a".into(), r"C:\".into())]);
    let x = one(r#"m{a="",b="}{,=\" #"} 1"#);
    assert_eq!(
        x.labels,
        vec![("a".into(), "".into()), ("b".into(), "}{,=\" #".into())]
    );
}

#[test]
fn borrowed_unless_escaped() {
    let text = "m{a=\"plain\",b=\"x\\ty\",c=\"x\\\\y\"} 1\n";
    let mut p = Parser::new(text);
    let Some(Ok(Entry::Sample(x))) = p.next_entry() else {
        panic!("no sample");
    };
    assert!(matches!(x.name, Cow::Borrowed("m")));
    assert!(matches!(x.labels[0].1, Cow::Borrowed("plain")));
    // An unrecognized escape changes nothing: still borrowed.
    assert!(matches!(x.labels[1].1, Cow::Borrowed("x\\ty")));
    assert!(matches!(&x.labels[2].1, Cow::Owned(v) if v == "x\\y"));
    assert!(matches!(x.labels, Cow::Borrowed(_)));
}

#[test]
fn utf8_values() {
    assert_eq!(
        one(r#"m{a="héllo ☃ 𝄞"} 1"#),
        s("m", &[("a", "héllo ☃ 𝄞")], 1.0, None, 1)
    );
}

#[test]
fn quoted_utf8_names() {
    assert_eq!(
        one(r#"{"my.metric", "label.name"="v"} 1"#),
        s("my.metric", &[("label.name", "v")], 1.0, None, 1)
    );
    assert_eq!(one(r#"{"my.metric"} 1"#), s("my.metric", &[], 1.0, None, 1));
    assert_eq!(
        one(r#"{"my.metric",} 1"#),
        s("my.metric", &[], 1.0, None, 1)
    );
    // The name may come after labels.
    assert_eq!(
        one(r#"{"a"="b", "ü.x" , c="d"} 1"#),
        s("ü.x", &[("a", "b"), ("c", "d")], 1.0, None, 1)
    );
    // Quoted label names after a bare metric name; legacy names may be quoted too.
    assert_eq!(
        one(r#"foo{"label.name"="v","job"="j"} 1"#),
        s("foo", &[("label.name", "v"), ("job", "j")], 1.0, None, 1)
    );
    // Escapes in quoted names.
    assert_eq!(
        one(r#"{"a\"b\\c", "d\ne"="v"} 1"#),
        s("a\"b\\c", &[("d\ne", "v")], 1.0, None, 1)
    );
    // A legacy name quoted.
    assert_eq!(one(r#"{"foo"} 1"#), s("foo", &[], 1.0, None, 1));
}

// --- values and timestamps ----------------------------------------------------------------

#[test]
fn values() {
    let cases: &[(&str, f64)] = &[
        ("0", 0.0),
        ("1", 1.0),
        ("-1", -1.0),
        ("+1", 1.0),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("1.5e+06", 1.5e6),
        (".5", 0.5),
        ("5.", 5.0),
        ("+.5e1", 5.0),
        ("007", 7.0),
        ("123456789012345", 123_456_789_012_345.0),
        ("9007199254740993", 9_007_199_254_740_992.0),
        ("123456789012345678901234567890", 1.2345678901234568e29),
        ("1.7976931348623157e308", f64::MAX),
        ("4.9e-324", 5e-324),
        ("1e-400", 0.0),
        ("+Inf", f64::INFINITY),
        ("-Inf", f64::NEG_INFINITY),
        ("Inf", f64::INFINITY),
        ("inf", f64::INFINITY),
        ("+inf", f64::INFINITY),
        ("INF", f64::INFINITY),
        ("Infinity", f64::INFINITY),
        ("-infinity", f64::NEG_INFINITY),
    ];
    for &(text, want) in cases {
        let got = value(text);
        assert_eq!(got.to_bits(), want.to_bits(), "{text}: {got}");
    }
    assert_eq!(value("-0").to_bits(), (-0.0f64).to_bits());
    for text in ["NaN", "nan", "NAN", "nAn"] {
        let v = value(text);
        assert!(v.is_nan(), "{text}");
        assert_ne!(v.to_bits(), tsdb::STALE_NAN_BITS);
    }
}

#[test]
fn invalid_values() {
    for text in [
        "+NaN",
        "-nan",
        "0x1p-2",
        "0x10",
        "1_000",
        "abc",
        "1e",
        "--1",
        "+-1",
        "infinit",
        "infinityy",
        "1.2.3",
        ".",
        "+",
        "1,5",
        "١",
        "0b1",
        "1e5x",
        "nanx",
    ] {
        let msg = value_err(text);
        assert!(msg.starts_with("invalid value"), "{text}: {msg}");
    }
    assert_eq!(value_err("1e400"), r#"value "1e400" out of range"#);
    assert_eq!(value_err("-1e400"), r#"value "-1e400" out of range"#);
    assert_eq!(
        err("m 0x10"),
        (
            3,
            r#"invalid value "0x10" (expected a number, NaN, +Inf or -Inf)"#.to_string()
        )
    );
}

#[test]
fn prometheus_timestamps() {
    let ts = |t: &str| one(&format!("m 1 {t}")).ts;
    assert_eq!(ts("0"), Some(0));
    assert_eq!(ts("1700000000000"), Some(1_700_000_000_000));
    assert_eq!(ts("-5"), Some(-5));
    assert_eq!(ts("+5"), Some(5));
    assert_eq!(ts("9223372036854775807"), Some(i64::MAX));
    assert_eq!(ts("-9223372036854775808"), Some(i64::MIN));
    assert_eq!(
        err("m 1 1.5"),
        (
            5,
            "invalid timestamp \"1.5\" (expected integer milliseconds; seconds with a fraction \
             are OpenMetrics)"
                .to_string()
        )
    );
    assert_eq!(
        err("m 1 abc").1,
        r#"invalid timestamp "abc" (expected integer milliseconds)"#
    );
    assert_eq!(
        err("m 1 9223372036854775808").1,
        r#"timestamp "9223372036854775808" out of range"#
    );
    assert_eq!(
        err("m 1 2 3"),
        (
            7,
            "expected end of line or an exemplar after the timestamp, found '3'".to_string()
        )
    );
}

#[test]
fn openmetrics_timestamps_are_seconds() {
    let ts = |t: &str| one_in(&format!("m 1 {t}\n# EOF\n"), Format::OpenMetrics).ts;
    assert_eq!(ts("1700000000"), Some(1_700_000_000_000));
    assert_eq!(ts("1700000000.123"), Some(1_700_000_000_123));
    assert_eq!(ts("1700000000.1"), Some(1_700_000_000_100));
    // Exact from the digits: f64 would make 1.001 * 1000 = 1000.9999999999999.
    assert_eq!(ts("1.001"), Some(1001));
    assert_eq!(ts("1.0019"), Some(1001));
    assert_eq!(ts("-1.5"), Some(-1500));
    assert_eq!(ts(".5"), Some(500));
    assert_eq!(ts("5."), Some(5000));
    assert_eq!(ts("+2"), Some(2000));
    assert_eq!(ts("1.7e9"), Some(1_700_000_000_000));
    for bad in ["NaN", "+Inf", "abc", "1,5", "."] {
        let (_, errors) = parse_with(&format!("m 1 {bad}\n# EOF\n"), Format::OpenMetrics);
        assert_eq!(errors.len(), 1, "{bad}");
        assert_eq!(
            errors[0].message,
            format!("invalid timestamp {bad:?} (expected seconds)")
        );
    }
    let (_, errors) = parse_with("m 1 9223372036854776\n# EOF\n", Format::OpenMetrics);
    assert_eq!(
        errors[0].message,
        r#"timestamp "9223372036854776" out of range"#
    );
    let (_, errors) = parse_with("m 1 1e300\n# EOF\n", Format::OpenMetrics);
    assert_eq!(errors[0].message, r#"timestamp "1e300" out of range"#);
}

#[test]
fn exemplars_are_skipped() {
    let om = "foo_bucket{le=\"0.5\"} 3 # {trace_id=\"abc\"} 0.4 1700000000.5\n\
              foo_total 7 1700000000 # {trace_id=\"x y\"} 1\n\
              # EOF\n";
    let (entries, errors) = parse_with(om, Format::OpenMetrics);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        samples_of(&entries),
        vec![
            s("foo_bucket", &[("le", "0.5")], 3.0, None, 1),
            s("foo_total", &[], 7.0, Some(1_700_000_000_000), 2),
        ]
    );
    // Also in Prometheus text (Prometheus itself rejects them).
    assert_eq!(
        one(r#"foo 3 # {trace_id="abc"} 1"#),
        s("foo", &[], 3.0, None, 1)
    );
    assert_eq!(one("foo 3 17 #"), s("foo", &[], 3.0, Some(17), 1));
}

// --- metadata and comments ----------------------------------------------------------------

fn meta(text: &str, format: Format) -> Entry<'_, '_> {
    let (mut entries, errors) = parse_with(text, format);
    assert!(errors.is_empty(), "{text:?}: {errors:?}");
    entries.retain(|e| *e != Entry::Eof);
    assert_eq!(entries.len(), 1, "{text:?}: {entries:?}");
    entries.into_iter().next().unwrap_or_else(|| unreachable!())
}

fn help(name: &str, text: &str) -> Entry<'static, 'static> {
    Entry::Help {
        name: Cow::Owned(name.to_string()),
        text: Cow::Owned(text.to_string()),
    }
}

#[test]
fn help_lines() {
    let p = Format::Prometheus;
    assert_eq!(meta("# HELP foo Some text.", p), help("foo", "Some text."));
    assert_eq!(
        meta("#\tHELP\tfoo\tSome text.", p),
        help("foo", "Some text.")
    );
    assert_eq!(meta("   #  HELP   foo x", p), help("foo", "x"));
    // One separator is dropped; the rest of the text is kept as is.
    assert_eq!(meta("# HELP foo  two  ", p), help("foo", " two  "));
    assert_eq!(meta("# HELP foo", p), help("foo", ""));
    assert_eq!(meta("# HELP foo ", p), help("foo", ""));
    assert_eq!(meta("# HELP a:b_c x", p), help("a:b_c", "x"));
    assert_eq!(
        meta(r#"# HELP "my.metric" dotted"#, p),
        help("my.metric", "dotted")
    );
    // Prometheus text unescapes \\ and \n only; OpenMetrics also \".
    assert_eq!(
        meta(r#"# HELP foo a\\b\nc\"d\te"#, p),
        help("foo", "a\\b\nc\\\"d\\te")
    );
    assert_eq!(
        meta(
            "# HELP foo a\\\\b\\nc\\\"d\\te\n# EOF\n",
            Format::OpenMetrics
        ),
        help("foo", "a\\b\nc\"d\\te")
    );
    assert_eq!(
        meta(r#"# HELP foo trailing \"#, p),
        help("foo", r"trailing \")
    );
    let Entry::Help { text, .. } = meta("# HELP foo plain \\t", p) else {
        panic!()
    };
    assert!(matches!(text, Cow::Borrowed("plain \\t")));
}

#[test]
fn type_lines() {
    let p = Format::Prometheus;
    for kind in [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Histogram,
        MetricType::Summary,
        MetricType::Untyped,
        MetricType::Unknown,
        MetricType::Info,
        MetricType::StateSet,
        MetricType::GaugeHistogram,
    ] {
        let line = format!("# TYPE foo {kind}");
        assert_eq!(
            meta(&line, p),
            Entry::Type {
                name: "foo".into(),
                kind
            }
        );
        assert_eq!(MetricType::from_name(kind.as_str()), Some(kind));
    }
    assert_eq!(
        meta("# TYPE foo  counter \t", p),
        Entry::Type {
            name: "foo".into(),
            kind: MetricType::Counter
        }
    );
    assert_eq!(
        meta(r#"# TYPE "a.b" gauge"#, p),
        Entry::Type {
            name: "a.b".into(),
            kind: MetricType::Gauge
        }
    );
    assert_eq!(
        err("# TYPE foo Counter"),
        (12, r#"unknown metric type "Counter""#.into())
    );
    assert_eq!(
        err("# TYPE foo counter x").1,
        r#"unknown metric type "counter x""#
    );
    assert_eq!(
        err("# TYPE foo").1,
        r#"missing metric type after TYPE "foo""#
    );
    assert_eq!(
        err("# TYPE foo  ").1,
        r#"missing metric type after TYPE "foo""#
    );
}

#[test]
fn unit_and_eof_are_openmetrics_only() {
    let om = "# UNIT foo_seconds seconds\nfoo_seconds 1\n# EOF\n";
    let (entries, errors) = parse_with(om, Format::OpenMetrics);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        entries,
        vec![
            Entry::Unit {
                name: "foo_seconds".into(),
                unit: "seconds"
            },
            Entry::Sample(Sample {
                name: "foo_seconds".into(),
                labels: Cow::Owned(vec![]),
                value: 1.0,
                timestamp_ms: None,
                line: 2
            }),
            Entry::Eof,
        ]
    );
    // Comments in Prometheus text.
    let (entries, errors) = parse_with(om, Format::Prometheus);
    assert!(errors.is_empty());
    assert_eq!(samples_of(&entries).len(), 1);
    assert_eq!(entries.len(), 1);
}

#[test]
fn comments_and_blank_lines_are_ignored() {
    let text = "# a comment\n#\n##\n#HELP foo not metadata\n# HELP\n# TYPE\n  # indented\n\n \t \n\
                # HELPfoo x\n# EOF trailing\n# UNIT foo bar\nfoo 1\n";
    let (entries, errors) = parse_with(text, Format::Prometheus);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(samples_of(&entries), vec![s("foo", &[], 1.0, None, 13)]);
    assert_eq!(entries.len(), 1);
}

#[test]
fn metadata_errors() {
    assert_eq!(
        err("# HELP "),
        (
            8,
            "expected metric name after HELP, found end of line".into()
        )
    );
    assert_eq!(
        err("# TYPE 1a counter"),
        (8, "expected metric name after TYPE, found '1'".into())
    );
    assert_eq!(
        err("# HELP foo,bar x"),
        (
            11,
            r#"invalid character ',' after metric name "foo" in HELP"#.into()
        )
    );
    assert_eq!(
        err(r#"# HELP "" x"#),
        (8, "empty metric name after HELP".into())
    );
    assert_eq!(
        err(r#"# HELP "foo x"#).1,
        "unterminated quoted string: no closing '\"' before the end of the line"
    );
}

// --- lines ----------------------------------------------------------------------------------

#[test]
fn line_endings_and_numbers() {
    let text = "a 1\r\n\r\n# HELP b The b.\r\nb 2\r\nc{x=\"y\"} 3 4\r\nd 5";
    let (entries, errors) = parse_with(text, Format::Prometheus);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        samples_of(&entries),
        vec![
            s("a", &[], 1.0, None, 1),
            s("b", &[], 2.0, None, 4),
            s("c", &[("x", "y")], 3.0, Some(4), 5),
            s("d", &[], 5.0, None, 6),
        ]
    );
    assert_eq!(entries[1], help("b", "The b."));
    // Only one '\r' belongs to the line ending.
    let (_, errors) = parse_with("a 1\r\r\n", Format::Prometheus);
    assert_eq!(errors.len(), 1);
    // Empty input, only newlines.
    assert_eq!(parse_all(""), (vec![], vec![]));
    assert_eq!(parse_all("\n\n\r\n"), (vec![], vec![]));
}

#[test]
fn byte_order_mark_is_skipped() {
    let (entries, errors) = parse_all("\u{feff}a 1\n");
    assert!(errors.is_empty());
    assert_eq!(samples_of(&entries), vec![s("a", &[], 1.0, None, 1)]);
}

#[test]
fn duplicate_series_pass_through() {
    let (entries, errors) = parse_all("a{x=\"1\"} 1\na{x=\"1\"} 2\n");
    assert!(errors.is_empty());
    assert_eq!(
        samples_of(&entries),
        vec![
            s("a", &[("x", "1")], 1.0, None, 1),
            s("a", &[("x", "1")], 2.0, None, 2)
        ]
    );
}

#[test]
fn long_lines_are_linear() {
    // A 4 MiB label value, one with an escape every other byte, and 100k labels.
    let big = "v".repeat(4 << 20);
    let text = format!("m{{a=\"{big}\"}} 1\n");
    let x = one(&text);
    assert_eq!(x.labels[0].1.len(), 4 << 20);

    let escaped = "\\\"".repeat(1 << 20);
    let text = format!("m{{a=\"{escaped}\"}} 1\n");
    let x = one(&text);
    assert_eq!(x.labels[0].1, "\"".repeat(1 << 20));

    let unknown = "\\t".repeat(1 << 20);
    let text = format!("m{{a=\"{unknown}\"}} 1\n");
    assert_eq!(one(&text).labels[0].1.len(), 2 << 20);

    let many: String = (0..100_000).map(|i| format!("l{i}=\"{i}\",")).collect();
    let text = format!("m{{{many}}} 1\n");
    let x = one(&text);
    assert_eq!(x.labels.len(), 100_000);
    assert_eq!(x.labels[99_999], ("l99999".into(), "99999".into()));

    let help = "h".repeat(1 << 20);
    let text = format!("# HELP m {help}\n");
    let (entries, _) = parse_all(&text);
    assert!(matches!(&entries[0], Entry::Help { text, .. } if text.len() == 1 << 20));

    // An unterminated 4 MiB string is one error, with a short message.
    let (col, msg) = err(&format!("m{{a=\"{big} 1"));
    assert_eq!(col, 5);
    assert!(msg.len() < 100, "{msg}");
}

// --- errors ---------------------------------------------------------------------------------

#[test]
fn error_messages() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "foo{job} 1",
            8,
            r#"expected '=' after label name "job", found '}'"#,
        ),
        (
            "foo{job,a=\"b\"} 1",
            8,
            r#"expected '=' after label name "job", found ','"#,
        ),
        (
            "foo{job \"x\"} 1",
            9,
            r#"expected '=' after label name "job", found '"'"#,
        ),
        (
            "foo{job=x} 1",
            9,
            r#"expected '"' to open the value of label "job", found 'x'"#,
        ),
        (
            "foo{job=} 1",
            9,
            r#"expected '"' to open the value of label "job", found '}'"#,
        ),
        (
            "foo{job=\"x\";a=\"b\"} 1",
            12,
            r#"expected ',' or '}' after the value of label "job", found ';'"#,
        ),
        (
            "foo{job=\"x\" 1",
            13,
            r#"expected ',' or '}' after the value of label "job", found '1'"#,
        ),
        (
            "foo{job=\"x\"",
            12,
            r#"expected ',' or '}' after the value of label "job", found end of line"#,
        ),
        (
            "foo{job=\"x",
            9,
            "unterminated quoted string: no closing '\"' before the end of the line",
        ),
        (
            "foo{job=\"x\\",
            9,
            "unterminated quoted string: it ends with a lone backslash",
        ),
        (
            "foo{job=\"x\\\"} 1",
            9,
            "unterminated quoted string: no closing '\"' before the end of the line",
        ),
        (
            "foo{a:b=\"x\"} 1",
            6,
            r#"invalid character ':' in label name "a" (quote names outside [a-zA-Z_][a-zA-Z0-9_]*)"#,
        ),
        (
            "foo{a.b=\"x\"} 1",
            6,
            r#"invalid character '.' in label name "a" (quote names outside [a-zA-Z_][a-zA-Z0-9_]*)"#,
        ),
        (
            "foo{=\"x\"} 1",
            5,
            "expected a label name or '}', found '='",
        ),
        ("foo{,} 1", 5, "expected a label name or '}', found ','"),
        (
            "foo{a=\"x\",,b=\"y\"} 1",
            11,
            "expected a label name or '}', found ','",
        ),
        (
            "foo{1a=\"x\"} 1",
            5,
            "expected a label name or '}', found '1'",
        ),
        ("foo{", 5, "expected a label name or '}', found end of line"),
        ("foo{\"\"=\"x\"} 1", 5, "empty label name"),
        ("{\"\"} 1", 2, "empty metric name"),
        (
            "{job=\"x\"} 1",
            1,
            "missing metric name: write it before '{' or quoted inside the braces",
        ),
        (
            "{} 1",
            1,
            "missing metric name: write it before '{' or quoted inside the braces",
        ),
        (
            "foo{\"bar\"} 1",
            1,
            r#"metric name "foo" given twice: before the braces and quoted inside them"#,
        ),
        (
            "{\"a\", \"b\"} 1",
            7,
            r#"metric name given twice: "a" and "b""#,
        ),
        (
            "{foo} 1",
            5,
            r#"expected '=' after label name "foo", found '}'"#,
        ),
        ("foo", 4, r#"expected a value after metric name "foo""#),
        ("foo   ", 7, r#"expected a value after "foo""#),
        ("foo{a=\"b\"}", 11, r#"expected a value after "foo""#),
        (
            "foo bar",
            5,
            r#"invalid value "bar" (expected a number, NaN, +Inf or -Inf)"#,
        ),
        (
            "foo-bar 1",
            4,
            r#"invalid character '-' after metric name "foo" (expected whitespace or '{')"#,
        ),
        (
            "foo.bar 1",
            4,
            r#"invalid character '.' after metric name "foo" (expected whitespace or '{')"#,
        ),
        (
            "foo-1",
            4,
            r#"invalid character '-' after metric name "foo" (expected whitespace or '{')"#,
        ),
        ("1foo 1", 1, "expected a metric name, found '1'"),
        ("  ü 1", 3, "expected a metric name, found 'ü'"),
        ("\"foo\" 1", 1, "expected a metric name, found '\"'"),
    ];
    for &(line, col, msg) in cases {
        assert_eq!(err(line), (col, msg.to_string()), "{line:?}");
    }
    let e = ParseError {
        line: 3,
        column: 8,
        message: r#"expected '=' after label name "job", found '}'"#.into(),
    };
    assert_eq!(
        e.to_string(),
        r#"line 3, column 8: expected '=' after label name "job", found '}'"#
    );
}

#[test]
fn long_tokens_are_shortened_in_messages() {
    let name = "x".repeat(1000);
    let (_, msg) = err(&format!("m{{{name}}} 1"));
    assert_eq!(
        msg,
        format!(
            "expected '=' after label name \"{}\"... (1000 bytes), found '}}'",
            "x".repeat(64)
        )
    );
}

#[test]
fn parsing_resumes_after_a_bad_line() {
    let text = "good 1\n\
                bad{ 2\n\
                # HELP good2 ok\n\
                good2{a=\"b\"} 3\n\
                \n\
                worse 1 2 3\n\
                good3 4";
    let (entries, errors) = parse_all(text);
    assert_eq!(
        samples_of(&entries),
        vec![
            s("good", &[], 1.0, None, 1),
            s("good2", &[("a", "b")], 3.0, None, 4),
            s("good3", &[], 4.0, None, 7),
        ]
    );
    let lines: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(lines, vec![(2, 6), (6, 11)]);

    // The parser can quote the rejected line back.
    let crlf = text.replace('\n', "\r\n");
    let mut p = Parser::new(&crlf);
    let mut rejected = Vec::new();
    while let Some(r) = p.next_entry() {
        if r.is_err() {
            rejected.push(String::from_utf8_lossy(p.line_bytes()).into_owned());
        }
    }
    assert_eq!(rejected, vec!["bad{ 2", "worse 1 2 3"]);
    assert_eq!(
        errors[0].to_string(),
        "line 2, column 6: expected a label name or '}', found '2'"
    );
}

#[test]
fn invalid_utf8_rejects_only_its_line() {
    let text: &[u8] =
        b"a{x=\"\xff\"} 1\nb 2\n# \xff plain comment\n# HELP c \xfe\nc{x=\"\xc3\xa9\"} 3\n";
    let mut p = Parser::new(text);
    let mut got = Vec::new();
    while let Some(r) = p.next_entry() {
        got.push(r.map(|e| e.detach()));
    }
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[0],
        Err(ParseError {
            line: 1,
            column: 6,
            message: "invalid UTF-8".into()
        })
    );
    assert!(matches!(&got[1], Ok(Entry::Sample(x)) if x.name == "b" && x.line == 2));
    assert_eq!(
        got[2],
        Err(ParseError {
            line: 4,
            column: 10,
            message: "invalid UTF-8".into()
        })
    );
    assert!(matches!(&got[3], Ok(Entry::Sample(x)) if x.labels[0].1 == "é" && x.line == 5));
}

// --- OpenMetrics ----------------------------------------------------------------------------

#[test]
fn format_detection() {
    assert_eq!(Format::detect(b"a 1\n# EOF\n"), Format::OpenMetrics);
    assert_eq!(Format::detect(b"a 1\n# EOF"), Format::OpenMetrics);
    assert_eq!(Format::detect(b"# EOF"), Format::OpenMetrics);
    assert_eq!(
        Format::detect(b"a 1\r\n  #\tEOF \r\n\n"),
        Format::OpenMetrics
    );
    assert_eq!(Format::detect(b"a 1\n"), Format::Prometheus);
    assert_eq!(Format::detect(b""), Format::Prometheus);
    assert_eq!(Format::detect(b"EOF"), Format::Prometheus);
    assert_eq!(Format::detect(b"a 1\n#EOF\n"), Format::Prometheus);
    assert_eq!(Format::detect(b"a 1\nx # EOF\n"), Format::Prometheus);
    assert_eq!(Format::detect(b"a 1\n# NOEOF\n"), Format::Prometheus);
    assert_eq!(Format::detect(b"# EOF\na 1\n"), Format::Prometheus);
    assert_eq!(Parser::new("a 1\n# EOF\n").format(), Format::OpenMetrics);

    for (ct, f) in [
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::OpenMetrics,
        ),
        ("Application/OpenMetrics-Text", Format::OpenMetrics),
        (
            "text/plain; version=0.0.4; charset=utf-8",
            Format::Prometheus,
        ),
        ("text/plain", Format::Prometheus),
        ("", Format::Prometheus),
        ("application/openmetrics-textx", Format::Prometheus),
    ] {
        assert_eq!(Format::from_content_type(ct), f, "{ct}");
    }
}

#[test]
fn openmetrics_eof_rules() {
    // Detected from the trailing # EOF: seconds, and an Eof entry.
    let (entries, errors) = parse_all("a 1 2.5\n# EOF\n\n");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(samples_of(&entries), vec![s("a", &[], 1.0, Some(2500), 1)]);
    assert_eq!(entries.last(), Some(&Entry::Eof));

    // Content after # EOF is rejected line by line; blank lines are not.
    let (entries, errors) = parse_with("a 1\n# EOF\n\nb 2\n  # comment\n", Format::OpenMetrics);
    assert_eq!(samples_of(&entries).len(), 1);
    assert_eq!(
        errors,
        vec![
            ParseError {
                line: 4,
                column: 1,
                message: "unexpected content after # EOF".into()
            },
            ParseError {
                line: 5,
                column: 3,
                message: "unexpected content after # EOF".into()
            },
        ]
    );

    // A missing # EOF is reported once, after the last line.
    let (entries, errors) = parse_with("a 1\nb 2\n", Format::OpenMetrics);
    assert_eq!(samples_of(&entries).len(), 2);
    assert_eq!(
        errors,
        vec![ParseError {
            line: 3,
            column: 1,
            message: "OpenMetrics input does not end with # EOF".into()
        }]
    );
    let mut p = Parser::with_format("", Format::OpenMetrics);
    assert!(matches!(p.next_entry(), Some(Err(_))));
    assert!(p.next_entry().is_none());
    assert!(p.next_entry().is_none());

    // In Prometheus text, # EOF is a comment.
    let (entries, errors) = parse_with("a 1\n# EOF\nb 2\n", Format::Prometheus);
    assert!(errors.is_empty());
    assert_eq!(entries.len(), 2);
}

// --- realistic pages ------------------------------------------------------------------------

const NODE_PAGE: &str = r##"# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.3906e-05
go_gc_duration_seconds{quantile="0.25"} 3.5226e-05
go_gc_duration_seconds{quantile="0.5"} 4.0567e-05
go_gc_duration_seconds{quantile="0.75"} 5.2337e-05
go_gc_duration_seconds{quantile="1"} 0.000200383
go_gc_duration_seconds_sum 0.013457372
go_gc_duration_seconds_count 273
# HELP go_info Information about the Go environment.
# TYPE go_info gauge
go_info{version="go1.19.8"} 1
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 19258.05
node_cpu_seconds_total{cpu="0",mode="iowait"} 58.17
node_cpu_seconds_total{cpu="0",mode="user"} 9549.66
node_cpu_seconds_total{cpu="1",mode="idle"} 17267.32
# HELP node_disk_io_time_seconds_total Total seconds spent doing I/Os.
# TYPE node_disk_io_time_seconds_total counter
node_disk_io_time_seconds_total{device="nvme0n1"} 1126.924
node_disk_io_time_seconds_total{device="dm-0"} 1117.776
# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/mapper/vg-root",fstype="ext4",mountpoint="/"} 1.2440551424e+11
node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run/user/1000"} 3.3400832e+09
# HELP node_hwmon_temp_celsius Hardware monitor for temperature (input)
# TYPE node_hwmon_temp_celsius gauge
node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp1"} 45
# HELP node_network_info Non-numeric data from /sys/class/net/<iface>, value is always 1.
# TYPE node_network_info gauge
node_network_info{address="00:00:00:00:00:00",broadcast="00:00:00:00:00:00",device="lo",duplex="",ifalias="",operstate="unknown"} 1
# HELP node_scrape_collector_success node_exporter: Whether a collector succeeded.
# TYPE node_scrape_collector_success gauge
node_scrape_collector_success{collector="arp"} 1
node_scrape_collector_success{collector="thermal_zone"} 0
# HELP node_textfile_scrape_error 1 if there was an error opening or reading a file, 0 otherwise
# TYPE node_textfile_scrape_error gauge
node_textfile_scrape_error 0
# HELP node_uname_info Labeled system information as provided by the uname system call.
# TYPE node_uname_info gauge
node_uname_info{domainname="(none)",machine="x86_64",nodename="host-1",release="6.1.0-13-amd64",sysname="Linux",version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)"} 1
# HELP prometheus_http_request_duration_seconds Histogram of latencies for HTTP requests.
# TYPE prometheus_http_request_duration_seconds histogram
prometheus_http_request_duration_seconds_bucket{handler="/metrics",le="0.1"} 24054
prometheus_http_request_duration_seconds_bucket{handler="/metrics",le="+Inf"} 24061
prometheus_http_request_duration_seconds_sum{handler="/metrics"} 1070.2
prometheus_http_request_duration_seconds_count{handler="/metrics"} 24061
# HELP textfile_custom A value from the textfile collector with "quotes" and a \\ backslash.
# TYPE textfile_custom untyped
textfile_custom{path="C:\\tmp\\x",msg="said \"hi\"\nbye"} -Inf 1700000000000
process_start_time_seconds 1.70000000012e+09
"##;

#[test]
fn node_exporter_page() {
    let (entries, errors) = parse_all(NODE_PAGE);
    assert!(errors.is_empty(), "{errors:?}");
    let samples = samples_of(&entries);
    assert_eq!(samples.len(), 28);
    let helps = entries
        .iter()
        .filter(|e| matches!(e, Entry::Help { .. }))
        .count();
    let types: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Type { name, kind } => Some((name.to_string(), *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(helps, 12);
    assert_eq!(types.len(), 12);
    assert_eq!(
        types[0],
        ("go_gc_duration_seconds".to_string(), MetricType::Summary)
    );
    assert_eq!(
        samples[0],
        s(
            "go_gc_duration_seconds",
            &[("quantile", "0")],
            2.3906e-05,
            None,
            3
        )
    );
    let uname = samples
        .iter()
        .find(|x| x.name == "node_uname_info")
        .unwrap_or_else(|| panic!("no uname"));
    assert_eq!(uname.labels.len(), 6);
    assert_eq!(
        uname.labels[5],
        (
            "version".to_string(),
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)".to_string()
        )
    );
    let custom = &samples[samples.len() - 2];
    assert_eq!(
        custom,
        &s(
            "textfile_custom",
            &[("path", r"C:\tmp\x"), ("msg", "said \"hi\"\nbye")],
            f64::NEG_INFINITY,
            Some(1_700_000_000_000),
            51
        )
    );
    assert_eq!(samples[samples.len() - 1].value, 1_700_000_000.12);
    assert!(entries.contains(&help(
        "textfile_custom",
        r#"A value from the textfile collector with "quotes" and a \ backslash."#
    )));

    // The lending API sees the same samples, and a recycled parser too.
    let mut p = Parser::new(NODE_PAGE);
    let mut lent = Vec::new();
    while let Some(r) = p.next_entry() {
        if let Ok(Entry::Sample(x)) = r {
            lent.push(own(&x));
        }
    }
    assert_eq!(lent, samples);
    let copy = NODE_PAGE.to_string();
    let mut p = p.recycle(copy.as_bytes(), Format::Prometheus);
    let mut n = 0;
    while let Some(r) = p.next_entry() {
        if let Ok(Entry::Sample(_)) = r {
            n += 1;
        }
    }
    assert_eq!(n, 28);
    assert_eq!(p.line(), 52);
}

// --- properties -----------------------------------------------------------------------------

fn drain(p: &mut Parser<'_>) -> usize {
    let mut n = 0;
    while let Some(r) = p.next_entry() {
        if let Ok(Entry::Sample(x)) = r {
            n += x.labels.len() + x.name.len();
        }
    }
    n
}

/// Bytes drawn mostly from the characters the grammar cares about.
fn syntax_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(vec![
                "{", "}", "\"", "=", ",", " ", "\t", "\n", "\r\n", "\\", "#", " # ", "HELP",
                "TYPE", "UNIT", "EOF", "# HELP ", "# TYPE ", "# EOF\n", "1", "-", "+", ".",
                "e", "Inf", "NaN", "foo", "a", ":", "_", "ü", "0x", "\\n", "\\\"", "1e400",
            ])
            .prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..60,
    )
    .prop_map(|v| v.concat())
}

/// A metric or label name: legacy or needing quotes.
fn name(legacy: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![3 => legacy.prop_map(|s: String| s), 1 => "\\PC{1,12}"]
}

fn quote_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_legacy(s: &str, metric: bool) -> bool {
    let mut chars = s.chars();
    let ok_start = |c: char| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':');
    let ok = |c: char| ok_start(c) || c.is_ascii_digit();
    chars.next().is_some_and(ok_start) && chars.all(ok)
}

#[derive(Debug, Clone)]
struct Gen {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts: Option<i64>,
    /// Layout choices: name inside braces, separator, trailing comma, CRLF, help line.
    name_inside: bool,
    ws: &'static str,
    trailing_comma: bool,
    crlf: bool,
    help: Option<String>,
}

fn gen_sample() -> impl Strategy<Value = Gen> {
    (
        name("[a-zA-Z_:][a-zA-Z0-9_:]{0,15}"),
        proptest::collection::vec(
            (name("[a-zA-Z_][a-zA-Z0-9_]{0,10}"), "\\PC{0,12}|.{0,6}"),
            0..6,
        ),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-1000i64..1000).prop_map(|v| v as f64),
        ],
        proptest::option::of(any::<i64>()),
        any::<bool>(),
        proptest::sample::select(vec!["", " ", "\t", "  \t"]),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of("[^\r\n]{0,20}"),
    )
        .prop_map(
            |(name, labels, value, ts, name_inside, ws, trailing_comma, crlf, help)| Gen {
                name,
                labels,
                value,
                ts,
                name_inside,
                ws,
                trailing_comma,
                crlf,
                help,
            },
        )
}

fn render(g: &Gen, out: &mut String) -> usize {
    let mut lines = 0;
    let nl = if g.crlf { "\r\n" } else { "\n" };
    let legacy_name = is_legacy(&g.name, true);
    if let Some(h) = &g.help {
        let name = if legacy_name {
            g.name.clone()
        } else {
            quote_str(&g.name)
        };
        let text = h.replace('\\', "\\\\").replace('\n', "\\n");
        out.push_str(&format!("# HELP {name} {text}{nl}"));
        lines += 1;
    }
    let ws = g.ws;
    let inside = g.name_inside || !legacy_name;
    let mut items = Vec::new();
    if inside {
        items.push(quote_str(&g.name));
    } else {
        out.push_str(&g.name);
    }
    for (k, v) in &g.labels {
        let k = if is_legacy(k, false) {
            k.clone()
        } else {
            quote_str(k)
        };
        items.push(format!("{k}{ws}={ws}{}", quote_str(v)));
    }
    if !items.is_empty() || g.trailing_comma {
        out.push('{');
        out.push_str(ws);
        out.push_str(&items.join(&format!("{ws},{ws}")));
        if g.trailing_comma && !items.is_empty() {
            out.push(',');
        }
        out.push_str(ws);
        out.push('}');
    }
    out.push_str(&format!(" {ws}{:?}", g.value));
    if let Some(ts) = g.ts {
        out.push_str(&format!(" {ws}{ts}"));
    }
    out.push_str(ws);
    out.push_str(nl);
    lines + 1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut p = Parser::with_format(&bytes, format);
            drain(&mut p);
            for r in Parser::with_format(&bytes, format) {
                if let Err(e) = r {
                    prop_assert!(e.line >= 1 && e.column >= 1);
                }
            }
        }
        drain(&mut Parser::new(&bytes));
    }

    #[test]
    fn never_panics_on_text(text in syntax_soup()) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            drain(&mut Parser::with_format(&text, format));
            for r in Parser::with_format(&text, format) {
                match r {
                    Err(e) => prop_assert!(e.line >= 1 && e.line <= text.split('\n').count() + 1),
                    Ok(Entry::Sample(x)) => prop_assert!(x.line >= 1),
                    Ok(_) => {}
                }
            }
        }
        let _ = parse_all(&text);
    }

    #[test]
    fn never_panics_on_any_string(text in "\\PC{0,80}|[ -~\t\n]{0,80}") {
        let _ = parse_all(&text);
        drain(&mut Parser::with_format(&text, Format::OpenMetrics));
    }

    #[test]
    fn valid_lines_round_trip(gens in proptest::collection::vec(gen_sample(), 1..8)) {
        let mut text = String::new();
        let mut want = Vec::new();
        let mut line = 0;
        for g in &gens {
            line += render(g, &mut text);
            want.push((g.clone(), line));
        }
        let mut p = Parser::with_format(&text, Format::Prometheus);
        let mut got = Vec::new();
        let mut helps = Vec::new();
        while let Some(r) = p.next_entry() {
            match r {
                Ok(Entry::Sample(x)) => got.push(own(&x)),
                Ok(Entry::Help { name, text }) => helps.push((name.to_string(), text.to_string())),
                Ok(e) => prop_assert!(false, "unexpected {e:?}"),
                Err(e) => prop_assert!(false, "{e} in {text:?}"),
            }
        }
        prop_assert_eq!(got.len(), want.len());
        for (x, (g, line)) in got.iter().zip(&want) {
            prop_assert_eq!(&x.name, &g.name);
            prop_assert_eq!(&x.labels, &g.labels);
            if g.value.is_nan() {
                prop_assert!(x.value.is_nan());
            } else {
                prop_assert_eq!(x.value.to_bits(), g.value.to_bits());
            }
            prop_assert_eq!(x.ts, g.ts);
            prop_assert_eq!(x.line, *line);
        }
        let want_helps: Vec<_> = gens
            .iter()
            .filter_map(|g| g.help.as_ref().map(|h| (g.name.clone(), h.clone())))
            .collect();
        prop_assert_eq!(helps, want_helps);
    }

    /// A bad line costs exactly itself: the good lines around it parse unchanged.
    #[test]
    fn errors_stay_on_their_line(
        gens in proptest::collection::vec(gen_sample(), 1..6),
        bad in proptest::collection::vec("[^\n]{0,30}", 1..4),
    ) {
        let mut text = String::new();
        let mut good_lines = 0;
        let mut bad_lines = Vec::new();
        let mut line = 0;
        for (i, g) in gens.iter().enumerate() {
            line += render(g, &mut text);
            good_lines += 1;
            if let Some(b) = bad.get(i) {
                // "{=" can never start a valid line.
                text.push_str("{=");
                text.push_str(b);
                text.push('\n');
                line += 1;
                bad_lines.push(line);
            }
        }
        let (entries, errors) = parse_with(&text, Format::Prometheus);
        prop_assert_eq!(samples_of(&entries).len(), good_lines);
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        prop_assert_eq!(lines, bad_lines);
    }
}
