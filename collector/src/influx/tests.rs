//! Tests of the line protocol parser: the documented examples, each syntax and mapping
//! rule, the limits, and property tests (no panic on any input; generated lines read
//! back as written).

use proptest::prelude::*;

use super::*;

/// "Now" in the tests: 2023-11-14T22:13:20.123Z.
const NOW: i64 = 1_700_000_000_123;

/// One sample as a test sees it: full sorted labels, timestamp, value.
type Flat = (Vec<(String, String)>, i64, f64);

fn parse_with(
    body: &str,
    precision: Precision,
    db: Option<&str>,
    extra: &[(&str, &str)],
) -> (Vec<Flat>, LineErrors) {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let mut rows = Vec::new();
    let errors = parse(body, precision, NOW, db, &extra, &mut rows);
    (flatten(&rows), errors)
}

/// Parses with `precision=ns`, no `db`, no extra labels.
fn parse_ns(body: &str) -> (Vec<Flat>, LineErrors) {
    parse_with(body, Precision::Ns, None, &[])
}

/// Every sample of `rows` through [`write_request`], as owned values.
fn flatten(rows: &[Row]) -> Vec<Flat> {
    let mut req = WriteRequest::default();
    write_request(rows, &mut req).expect("fits");
    req.iter()
        .map(|(labels, samples)| {
            assert_eq!(samples.len(), 1);
            (
                labels
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                samples[0].t,
                samples[0].v,
            )
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Parses a body that must be valid.
fn ok(body: &str) -> Vec<Flat> {
    let (flat, errors) = parse_ns(body);
    assert!(errors.is_empty(), "{body:?}: {errors}");
    flat
}

/// Parses a one-line body that must be rejected, returning the message.
fn err(body: &str) -> String {
    let (flat, errors) = parse_ns(body);
    assert!(flat.is_empty(), "{body:?} gave {flat:?}");
    assert_eq!(errors.invalid_lines, 1, "{body:?}: {errors}");
    errors.errors[0].message.clone()
}

/// The metric name of a sample.
fn name(f: &Flat) -> &str {
    f.0.iter()
        .find(|(n, _)| n == "__name__")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// The value of the only sample of a one-field line `m f=<value>`.
fn value_of(value: &str) -> f64 {
    let flat = ok(&format!("m f={value}"));
    assert_eq!(flat.len(), 1, "{value}");
    flat[0].2
}

// ---------------------------------------------------------------------------------------
// The documented examples.

#[test]
fn influx_vm_documented_example_maps_fields_to_measurement_prefixed_names() {
    let flat = ok("measurement,tag1=value1,tag2=value2 field1=123,field2=1.23");
    assert_eq!(
        flat,
        vec![
            (
                labels(&[
                    ("__name__", "measurement_field1"),
                    ("tag1", "value1"),
                    ("tag2", "value2")
                ]),
                NOW,
                123.0
            ),
            (
                labels(&[
                    ("__name__", "measurement_field2"),
                    ("tag1", "value1"),
                    ("tag2", "value2")
                ]),
                NOW,
                1.23
            ),
        ]
    );
}

#[test]
fn influx_vm_transformation_example() {
    let flat = ok("foo,tag1=value1,tag2=value2 field1=12,field2=40");
    let names: Vec<(&str, f64)> = flat.iter().map(|(l, _, v)| (l[0].1.as_str(), *v)).collect();
    assert_eq!(names, vec![("foo_field1", 12.0), ("foo_field2", 40.0)]);
    assert!(flat.iter().all(|(l, _, _)| l.len() == 3));
}

#[test]
fn influx_line_protocol_reference_example() {
    // From the InfluxDB line protocol reference: a string field and an integer field.
    let flat = ok(
        "myMeasurement,tag1=value1,tag2=value2 fieldKey=\"fieldValue\",n=2i 1556813561098000000",
    );
    assert_eq!(
        flat,
        vec![(
            labels(&[
                ("__name__", "myMeasurement_n"),
                ("tag1", "value1"),
                ("tag2", "value2")
            ]),
            1_556_813_561_098,
            2.0
        )]
    );
}

#[test]
fn influx_telegraf_style_body() {
    let body = "cpu,cpu=cpu-total,host=web-1 usage_idle=97.5,usage_user=1.25 1700000000000000000\n\
                mem,host=web-1 available=123456789i,available_percent=42.1 1700000000000000000\n";
    let flat = ok(body);
    assert_eq!(flat.len(), 4);
    assert_eq!(
        flat[0].0,
        labels(&[
            ("__name__", "cpu_usage_idle"),
            ("cpu", "cpu-total"),
            ("host", "web-1")
        ])
    );
    assert_eq!(flat[0].1, 1_700_000_000_000);
    assert_eq!(flat[2].0[0].1, "mem_available");
    assert_eq!(flat[2].2, 123_456_789.0);
}

// ---------------------------------------------------------------------------------------
// Names and labels.

#[test]
fn influx_field_named_value_is_not_special() {
    assert_eq!(ok("cpu value=1")[0].0, labels(&[("__name__", "cpu_value")]));
}

#[test]
fn influx_empty_measurement_uses_the_field_key() {
    assert_eq!(
        ok(",host=a load=1")[0].0,
        labels(&[("__name__", "load"), ("host", "a")])
    );
    assert_eq!(ok(" load=1")[0].0, labels(&[("__name__", "load")]));
}

#[test]
fn influx_names_are_made_prometheus_compatible() {
    let flat = ok("disk.io-time,dev/name=sda,1x=y,ok:no=z used%=1,1m=2,a:b=3");
    assert_eq!(
        flat[0].0,
        labels(&[
            ("_1x", "y"),
            ("__name__", "disk_io_time_used_"),
            ("dev_name", "sda"),
            ("ok_no", "z"),
        ])
    );
    assert_eq!(name(&flat[1]), "disk_io_time_1m");
    // ':' is allowed in metric names.
    assert_eq!(name(&flat[2]), "disk_io_time_a:b");
    // A leading digit in the whole name gets a '_'.
    assert_eq!(ok("1m f=1")[0].0[0].1, "_1m_f");
    assert_eq!(ok(" 1m=1")[0].0[0].1, "_1m");
    // Non-ASCII characters become one '_' each; label values are kept.
    assert_eq!(
        ok("température,région=Île-de-France f=1")[0].0,
        labels(&[("__name__", "temp_rature_f"), ("r_gion", "Île-de-France")])
    );
}

#[test]
fn influx_labels_are_sorted_with_name_in_place() {
    // Uppercase sorts before '_', lowercase after.
    let flat = ok("m,zone=z,Host=h,_a=1,a=2 f=1");
    assert_eq!(
        flat[0].0,
        labels(&[
            ("Host", "h"),
            ("__name__", "m_f"),
            ("_a", "1"),
            ("a", "2"),
            ("zone", "z"),
        ])
    );
}

#[test]
fn influx_empty_tag_values_are_dropped() {
    assert_eq!(
        ok("m,a=,b=2 f=1")[0].0,
        labels(&[("__name__", "m_f"), ("b", "2")])
    );
}

#[test]
fn influx_tag_values_may_contain_unescaped_equals() {
    assert_eq!(
        ok("m,q=a=b f=1")[0].0,
        labels(&[("__name__", "m_f"), ("q", "a=b")])
    );
}

// ---------------------------------------------------------------------------------------
// db and extra labels.

#[test]
fn influx_db_parameter_becomes_a_label() {
    let (flat, errors) = parse_with("m,host=a f=1", Precision::Ns, Some("telegraf"), &[]);
    assert!(errors.is_empty());
    assert_eq!(
        flat[0].0,
        labels(&[("__name__", "m_f"), ("db", "telegraf"), ("host", "a")])
    );
}

#[test]
fn influx_db_tag_wins_over_db_parameter() {
    let (flat, _) = parse_with("m,db=mine f=1", Precision::Ns, Some("telegraf"), &[]);
    assert_eq!(flat[0].0, labels(&[("__name__", "m_f"), ("db", "mine")]));
    // An empty db tag is no tag: the parameter applies.
    let (flat, _) = parse_with("m,db= f=1", Precision::Ns, Some("telegraf"), &[]);
    assert_eq!(
        flat[0].0,
        labels(&[("__name__", "m_f"), ("db", "telegraf")])
    );
}

#[test]
fn influx_empty_db_parameter_adds_nothing() {
    let (flat, _) = parse_with("m f=1", Precision::Ns, Some(""), &[]);
    assert_eq!(flat[0].0, labels(&[("__name__", "m_f")]));
}

#[test]
fn influx_extra_labels_replace_tags_and_db() {
    let (flat, errors) = parse_with(
        "m,host=a,env=dev f=1",
        Precision::Ns,
        Some("telegraf"),
        &[
            ("env", "prod"),
            ("db", "forced"),
            ("host", ""),
            ("dc", "eu"),
            ("__name__", "ignored"),
            ("", "ignored"),
        ],
    );
    assert!(errors.is_empty());
    assert_eq!(
        flat[0].0,
        labels(&[
            ("__name__", "m_f"),
            ("db", "forced"),
            ("dc", "eu"),
            ("env", "prod"),
        ])
    );
}

// ---------------------------------------------------------------------------------------
// Escaping.

#[test]
fn influx_escapes_in_measurement() {
    assert_eq!(ok(r"my\ cpu\,1 f=1")[0].0[0].1, "my_cpu_1_f");
    // '=' needs no escape in a measurement but an escaped one is read as '='.
    assert_eq!(ok(r"a=b\=c f=1")[0].0[0].1, "a_b_c_f");
}

#[test]
fn influx_escapes_in_tags() {
    let flat = ok(r#"m,tag\ key\,x\=y=val\ ue\,1\=2\\ f=1"#);
    assert_eq!(
        flat[0].0,
        labels(&[("__name__", "m_f"), ("tag_key_x_y", r"val ue,1=2\")])
    );
    // A backslash before any other character is kept, with that character.
    let flat = ok(r"m,path=C:\temp\n f=1");
    assert_eq!(flat[0].0[1], ("path".to_string(), r"C:\temp\n".to_string()));
    // An escaped backslash just before a separator.
    let flat = ok(r"m,t=a\\,u=b f=1");
    assert_eq!(
        flat[0].0,
        labels(&[("__name__", "m_f"), ("t", r"a\"), ("u", "b")])
    );
}

#[test]
fn influx_escaped_space_in_tag_value_does_not_end_the_tags() {
    let flat = ok(r"m,host=a\ b f=1");
    assert_eq!(flat[0].0[1].1, "a b");
}

#[test]
fn influx_escapes_in_field_keys() {
    let flat = ok(r"m fi\ eld\,a\=b=1");
    assert_eq!(flat[0].0[0].1, "m_fi_eld_a_b");
}

#[test]
fn influx_quoted_strings_may_hold_separators_and_escapes() {
    let flat = ok(r#"m s="a, b c=d \"q\" \\",v=2 1700000000000000000"#);
    assert_eq!(flat.len(), 1);
    assert_eq!(flat[0].0[0].1, "m_v");
    assert_eq!(flat[0].1, 1_700_000_000_000);
    // An escaped backslash just before the closing quote.
    let flat = ok(r#"m s="dir\\",v=3"#);
    assert_eq!(flat[0].2, 3.0);
}

// ---------------------------------------------------------------------------------------
// Field values.

#[test]
fn influx_float_values() {
    assert_eq!(value_of("1"), 1.0);
    assert_eq!(value_of("-1.5"), -1.5);
    assert_eq!(value_of("+2.5"), 2.5);
    assert_eq!(value_of("1e3"), 1000.0);
    assert_eq!(value_of("1.5E-3"), 0.0015);
    assert_eq!(value_of(".5"), 0.5);
    assert_eq!(value_of("5."), 5.0);
    assert_eq!(value_of("inf"), f64::INFINITY);
    assert_eq!(value_of("-Inf"), f64::NEG_INFINITY);
    assert!(value_of("NaN").is_nan());
}

#[test]
fn influx_integer_values() {
    assert_eq!(value_of("123i"), 123.0);
    assert_eq!(value_of("-123i"), -123.0);
    assert_eq!(value_of("0i"), 0.0);
    assert_eq!(
        value_of("9223372036854775807i"),
        9_223_372_036_854_775_807.0
    );
    assert_eq!(
        value_of("-9223372036854775808i"),
        -9_223_372_036_854_775_808.0
    );
    assert_eq!(
        err("m f=9223372036854775808i"),
        "field value \"9223372036854775808i\" is out of range for a 64-bit integer"
    );
    assert_eq!(
        err("m f=12.5i"),
        "field value \"12.5i\" is not a valid integer"
    );
    assert_eq!(err("m f=i"), "field value \"i\" is not a valid integer");
}

#[test]
fn influx_unsigned_values() {
    assert_eq!(value_of("123u"), 123.0);
    assert_eq!(
        value_of("18446744073709551615u"),
        18_446_744_073_709_551_615.0
    );
    assert_eq!(
        err("m f=18446744073709551616u"),
        "field value \"18446744073709551616u\" is out of range for a 64-bit unsigned integer"
    );
    assert_eq!(
        err("m f=-1u"),
        "field value \"-1u\" is not a valid unsigned integer"
    );
}

#[test]
fn influx_boolean_values() {
    for t in ["t", "T", "true", "True", "TRUE"] {
        assert_eq!(value_of(t), 1.0, "{t}");
    }
    for f in ["f", "F", "false", "False", "FALSE"] {
        assert_eq!(value_of(f), 0.0, "{f}");
    }
    assert_eq!(
        err("m f=tRUE"),
        "field value \"tRUE\" is not a number, boolean or quoted string"
    );
}

#[test]
fn influx_string_values_are_skipped_unless_numeric() {
    // A numeric string is a number.
    assert_eq!(value_of("\"12.5\""), 12.5);
    // Other strings make no sample and no error.
    let flat = ok("m status=\"ok\",up=1,msg=\"true\"");
    assert_eq!(flat.len(), 1);
    assert_eq!(flat[0].0[0].1, "m_up");
    // A line of only string fields is valid and yields nothing.
    let (flat, errors) = parse_ns("m status=\"ok\"\nm s=\"\"");
    assert!(flat.is_empty());
    assert!(errors.is_empty());
}

#[test]
fn influx_bad_field_values_are_errors() {
    assert_eq!(
        err("m f=abc"),
        "field value \"abc\" is not a number, boolean or quoted string"
    );
    assert_eq!(err("m f="), "field \"f\" has an empty value");
    assert_eq!(err("m f=,g=1"), "field \"f\" has an empty value");
    assert_eq!(
        err("m f=\"abc"),
        "field \"f\": string value has no closing quote"
    );
    assert_eq!(
        err("m f=\"abc\"def,g=1"),
        "field \"f\": unexpected \"def\" after the closing quote"
    );
    assert_eq!(
        err("m f=0x10"),
        "field value \"0x10\" is not a number, boolean or quoted string"
    );
}

// ---------------------------------------------------------------------------------------
// Timestamps.

#[test]
fn influx_missing_timestamp_uses_now() {
    let flat = ok("m f=1\nm f=2   \nm,t=1 f=3,g=4");
    assert!(flat.iter().all(|(_, t, _)| *t == NOW), "{flat:?}");
}

#[test]
fn influx_default_timestamp_is_rounded_to_coarse_precisions() {
    let at = |p| parse_with("m f=1", p, None, &[]).0[0].1;
    assert_eq!(at(Precision::Ns), NOW);
    assert_eq!(at(Precision::Auto), NOW);
    assert_eq!(at(Precision::Ms), NOW);
    assert_eq!(at(Precision::S), 1_700_000_000_000);
    assert_eq!(at(Precision::M), 1_699_999_980_000);
    assert_eq!(at(Precision::H), 1_699_999_200_000);
}

#[test]
fn influx_precision_conversions() {
    let at = |body: &str, p| {
        let (flat, errors) = parse_with(body, p, None, &[]);
        assert!(errors.is_empty(), "{body} {p}: {errors}");
        flat[0].1
    };
    assert_eq!(
        at("m f=1 1700000000123456789", Precision::Ns),
        1_700_000_000_123
    );
    assert_eq!(
        at("m f=1 1700000000123456", Precision::Us),
        1_700_000_000_123
    );
    assert_eq!(at("m f=1 1700000000123", Precision::Ms), 1_700_000_000_123);
    assert_eq!(at("m f=1 1700000000", Precision::S), 1_700_000_000_000);
    assert_eq!(at("m f=1 28333333", Precision::M), 1_699_999_980_000);
    assert_eq!(at("m f=1 472222", Precision::H), 1_699_999_200_000);
    // Rounding is down, also before the epoch.
    assert_eq!(at("m f=1 -1", Precision::Ns), -1);
    assert_eq!(at("m f=1 -1500", Precision::Us), -2);
    assert_eq!(at("m f=1 0", Precision::Ns), 0);
    assert_eq!(at("m f=1 -5", Precision::S), -5_000);
}

#[test]
fn influx_auto_precision_guesses_the_unit() {
    let at = |body: &str| {
        let (flat, errors) = parse_with(body, Precision::Auto, None, &[]);
        assert!(errors.is_empty(), "{body}: {errors}");
        flat[0].1
    };
    assert_eq!(at("m f=1 1700000000123456789"), 1_700_000_000_123);
    assert_eq!(at("m f=1 1700000000123456"), 1_700_000_000_123);
    assert_eq!(at("m f=1 1700000000123"), 1_700_000_000_123);
    assert_eq!(at("m f=1 1700000000"), 1_700_000_000_000);
    // The thresholds.
    assert_eq!(at("m f=1 100000000000000000"), 100_000_000_000);
    assert_eq!(at("m f=1 99999999999999999"), 99_999_999_999_999);
    assert_eq!(at("m f=1 100000000000000"), 100_000_000_000);
    assert_eq!(at("m f=1 99999999999999"), 99_999_999_999_999);
    assert_eq!(at("m f=1 100000000000"), 100_000_000_000);
    assert_eq!(at("m f=1 99999999999"), 99_999_999_999_000);
    // Zero is the epoch, negatives are seconds.
    assert_eq!(at("m f=1 0"), 0);
    assert_eq!(at("m f=1 -1"), -1_000);
}

#[test]
fn influx_timestamps_that_overflow_are_errors() {
    let msg = |body: &str, p| {
        let (flat, errors) = parse_with(body, p, None, &[]);
        assert!(flat.is_empty());
        errors.errors[0].message.clone()
    };
    assert_eq!(
        msg("m f=1 9223372036854775807", Precision::S),
        "timestamp 9223372036854775807 (precision s) is out of range once converted to milliseconds"
    );
    assert!(msg("m f=1 153722867280913", Precision::M).contains("precision m"));
    assert!(msg("m f=1 2562047788016", Precision::H).contains("precision h"));
    assert!(msg("m f=1 -99999999999999999", Precision::Auto).contains("precision auto"));
    assert_eq!(
        msg("m f=1 99999999999999999999", Precision::Ns),
        "timestamp \"99999999999999999999\" does not fit in 64 bits"
    );
    assert_eq!(
        msg("m f=1 -99999999999999999999", Precision::Ms),
        "timestamp \"-99999999999999999999\" does not fit in 64 bits"
    );
    // The largest values that do fit.
    let (flat, errors) = parse_with("m f=1 9223372036854775", Precision::S, None, &[]);
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(flat[0].1, 9_223_372_036_854_775_000);
    let (flat, _) = parse_with("m f=1 9223372036854775807", Precision::Ns, None, &[]);
    assert_eq!(flat[0].1, 9_223_372_036_854);
}

#[test]
fn influx_bad_timestamps_are_errors() {
    assert_eq!(err("m f=1 12.5"), "timestamp \"12.5\" is not an integer");
    assert_eq!(
        err("m f=1 123 456"),
        "timestamp \"123 456\" is not an integer"
    );
    assert_eq!(err("m f=1 1e9"), "timestamp \"1e9\" is not an integer");
}

#[test]
fn influx_precision_parse() {
    for (s, p) in [
        ("", Precision::Auto),
        ("ns", Precision::Ns),
        ("n", Precision::Ns),
        ("us", Precision::Us),
        ("u", Precision::Us),
        ("\u{b5}", Precision::Us),
        ("\u{3bc}", Precision::Us),
        ("ms", Precision::Ms),
        ("s", Precision::S),
        ("m", Precision::M),
        ("h", Precision::H),
    ] {
        assert_eq!(Precision::parse(s), Some(p), "{s:?}");
    }
    for s in ["NS", "sec", "rfc3339", " s", "d"] {
        assert_eq!(Precision::parse(s), None, "{s:?}");
    }
    assert_eq!(Precision::default(), Precision::Auto);
}

// ---------------------------------------------------------------------------------------
// Several fields, duplicates.

#[test]
fn influx_multiple_fields_make_multiple_samples_sharing_labels() {
    let mut rows = Vec::new();
    let errors = parse(
        "m,host=a x=1,y=2i,z=true 1700000000000000000",
        Precision::Ns,
        NOW,
        None,
        &[],
        &mut rows,
    );
    assert!(errors.is_empty());
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.line, 1);
    assert_eq!(row.labels, labels(&[("host", "a")]));
    assert_eq!(row.timestamp_ms, 1_700_000_000_000);
    assert_eq!(
        row.samples,
        vec![
            ("m_x".to_string(), 1.0),
            ("m_y".to_string(), 2.0),
            ("m_z".to_string(), 1.0)
        ]
    );
    let mut buf = Vec::new();
    row.series_labels(1, &mut buf);
    assert_eq!(buf, vec![("__name__", "m_y"), ("host", "a")]);
    row.series_labels(3, &mut buf);
    assert!(buf.is_empty());
}

#[test]
fn influx_duplicate_keys_are_errors() {
    assert_eq!(err("m,a=1,a=2 f=1"), "duplicate tag key \"a\"");
    assert_eq!(err("m f=1,f=2"), "duplicate field key \"f\"");
    // A string field still counts.
    assert_eq!(err("m f=1,f=\"x\""), "duplicate field key \"f\"");
    assert_eq!(
        err("m,a-b=1,a.b=2 f=1"),
        "tag keys \"a-b\" and \"a.b\" both become label name \"a_b\""
    );
    assert_eq!(
        err("m a-b=1,a.b=2"),
        "field keys \"a-b\" and \"a.b\" both become metric name \"m_a_b\""
    );
    assert_eq!(
        err("m,__name__=x f=1"),
        "tag key \"__name__\" is reserved for the metric name"
    );
}

#[test]
fn influx_duplicate_series_across_lines_are_kept() {
    let flat = ok("m f=1 1000000\nm f=2 2000000\nm f=3 1000000");
    assert_eq!(flat.len(), 3);
    assert_eq!(flat[2], (labels(&[("__name__", "m_f")]), 1, 3.0));
}

// ---------------------------------------------------------------------------------------
// Lines: skipping, syntax errors, numbering, limits.

#[test]
fn influx_comments_empty_lines_and_crlf() {
    let body = "# a comment\r\n\r\nm f=1\r\n   \n\t\nm f=2 1000000\r\n\n";
    let (flat, errors) = parse_ns(body);
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(flat.len(), 2);
    assert_eq!(flat[1].1, 1);
    assert!(parse_ns("").0.is_empty());
    assert!(parse_ns("\n\n").1.is_empty());
}

#[test]
fn influx_extra_spaces_between_sections() {
    let flat = ok("m,host=a   f=1,g=2    1000000   ");
    assert_eq!(flat.len(), 2);
    assert_eq!(flat[0].1, 1);
}

#[test]
fn influx_syntax_errors() {
    assert_eq!(
        err("cpu"),
        "no fields: expected a space and key=value after the measurement and tags"
    );
    assert_eq!(
        err("cpu,host=a"),
        "no fields: expected a space and key=value after the measurement and tags"
    );
    assert_eq!(
        err("cpu "),
        "no fields: expected key=value after the measurement and tags"
    );
    assert_eq!(
        err("cpu,host f=1"),
        "tag \"host\" has no '=' (expected key=value)"
    );
    assert_eq!(err("cpu, f=1"), "expected a tag after ','");
    assert_eq!(err("cpu,=a f=1"), "tag with value \"a\" has an empty key");
    assert_eq!(err("cpu f"), "field \"f\" has no '=' (expected key=value)");
    assert_eq!(err("cpu f=1,"), "expected a field (key=value)");
    assert_eq!(err("cpu f=1, 5"), "expected a field (key=value)");
    assert_eq!(err("cpu =1"), "field with an empty key");
}

#[test]
fn influx_bad_lines_are_reported_and_the_others_kept() {
    let body = "m f=1\n# c\nm g=2\nm f=abc\nm h=3\ncpu\n";
    let (flat, errors) = parse_ns(body);
    let names: Vec<&str> = flat.iter().map(|(l, _, _)| l[0].1.as_str()).collect();
    assert_eq!(names, vec!["m_f", "m_g", "m_h"]);
    assert_eq!(errors.invalid_lines, 2);
    assert_eq!(
        errors.errors[0].to_string(),
        "line 4: field value \"abc\" is not a number, boolean or quoted string"
    );
    assert_eq!(errors.errors[1].line, 6);
    assert_eq!(
        errors.to_string(),
        "2 invalid lines: line 4: field value \"abc\" is not a number, boolean or quoted \
         string; line 6: no fields: expected a space and key=value after the measurement \
         and tags"
    );
}

#[test]
fn influx_a_bad_field_rejects_the_whole_line() {
    let (flat, errors) = parse_ns("m a=1,b=x,c=3");
    assert!(flat.is_empty());
    assert_eq!(errors.invalid_lines, 1);
}

#[test]
fn influx_rows_remember_their_line() {
    let mut rows = Vec::new();
    parse(
        "\n# x\nm f=1\n\nm g=1",
        Precision::Ns,
        NOW,
        None,
        &[],
        &mut rows,
    );
    assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![3, 5]);
}

#[test]
fn influx_overlong_lines_are_errors() {
    let long = format!("m,t={} f=1", "x".repeat(MAX_LINE_BYTES));
    let body = format!("m f=1\n{long}\nm g=2");
    let (flat, errors) = parse_ns(&body);
    assert_eq!(flat.len(), 2);
    assert_eq!(errors.invalid_lines, 1);
    assert_eq!(errors.errors[0].line, 2);
    assert_eq!(
        errors.errors[0].message,
        format!(
            "line is {} bytes long; the limit is 1048576 bytes (1 MiB)",
            long.len()
        )
    );
    // A line of exactly the limit is parsed.
    let fill = MAX_LINE_BYTES - "m,t= f=1".len();
    let exact = format!("m,t={} f=1", "x".repeat(fill));
    assert_eq!(exact.len(), MAX_LINE_BYTES);
    assert_eq!(ok(&exact).len(), 1);
}

#[test]
fn influx_error_list_is_capped_but_counted() {
    let body = "bad\n".repeat(MAX_REPORTED_ERRORS + 50);
    let (_, errors) = parse_ns(&body);
    assert_eq!(errors.invalid_lines, MAX_REPORTED_ERRORS + 50);
    assert_eq!(errors.errors.len(), MAX_REPORTED_ERRORS);
    assert_eq!(
        errors.errors[MAX_REPORTED_ERRORS - 1].line,
        MAX_REPORTED_ERRORS
    );
    assert!(errors.to_string().ends_with("; and 140 more"), "{errors}");
}

#[test]
fn influx_long_excerpts_are_cut_in_messages() {
    let value = "é".repeat(200);
    let msg = err(&format!("m f={value}"));
    assert!(
        msg.contains(&format!("\"{}\"...", "é".repeat(MAX_QUOTED_CHARS))),
        "{msg}"
    );
    assert!(msg.chars().count() < 150);
}

#[test]
fn influx_write_request_matches_rows() {
    let mut rows = Vec::new();
    parse(
        "a,h=1 x=1,y=2 1000000\nb z=3 2000000",
        Precision::Ns,
        NOW,
        Some("d"),
        &[],
        &mut rows,
    );
    let mut req = WriteRequest::default();
    write_request(&rows, &mut req).expect("fits");
    assert_eq!(req.num_series(), 3);
    assert_eq!(req.num_samples(), 3);
    let all: Vec<_> = req.iter().collect();
    assert_eq!(all[0].0, &[("__name__", "a_x"), ("db", "d"), ("h", "1")]);
    assert_eq!(all[1].0, &[("__name__", "a_y"), ("db", "d"), ("h", "1")]);
    assert_eq!(all[2].0, &[("__name__", "b_z"), ("db", "d")]);
    assert_eq!(all[2].1, &[tsdb::Sample { t: 2, v: 3.0 }]);
    // The labels are what tsdb accepts.
    for (labels, _) in req.iter() {
        tsdb::Labels::from_pairs(labels.iter().copied()).expect("valid labels");
    }
}

// ---------------------------------------------------------------------------------------
// Properties.

fn is_label_name(s: &str, metric: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':'));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':'))
}

/// Checks what every parse result must satisfy, whatever the input.
fn check_invariants(body: &str, rows: &[Row], errors: &LineErrors) {
    let lines = body.split('\n').count();
    assert!(errors.errors.len() <= MAX_REPORTED_ERRORS);
    assert!(errors.errors.len() <= errors.invalid_lines);
    assert!(errors.errors.windows(2).all(|w| w[0].line < w[1].line));
    for e in &errors.errors {
        assert!(e.line >= 1 && e.line <= lines);
        assert!(!e.message.is_empty());
    }
    for row in rows {
        assert!(row.line >= 1 && row.line <= lines);
        assert!(!row.samples.is_empty());
        assert!(row.labels.windows(2).all(|w| w[0].0 < w[1].0));
        for (n, v) in &row.labels {
            assert!(is_label_name(n, false), "{n:?}");
            assert_ne!(n, METRIC_NAME);
            assert!(!v.is_empty());
        }
        let mut names: Vec<&str> = row.samples.iter().map(|(n, _)| n.as_str()).collect();
        for n in &names {
            assert!(is_label_name(n, true), "{n:?}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), row.samples.len());
    }
    let mut req = WriteRequest::default();
    write_request(rows, &mut req).expect("fits");
    for (labels, samples) in req.iter() {
        assert_eq!(samples.len(), 1);
        tsdb::Labels::from_pairs(labels.iter().copied()).expect("valid labels");
    }
}

fn arb_precision() -> impl Strategy<Value = Precision> {
    prop_oneof![
        Just(Precision::Auto),
        Just(Precision::Ns),
        Just(Precision::Us),
        Just(Precision::Ms),
        Just(Precision::S),
        Just(Precision::M),
        Just(Precision::H),
    ]
}

/// Text made mostly of the protocol's special characters.
fn arb_protocol_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec![
                ' ', ',', '=', '\\', '"', '\n', '\r', '#', 'i', 'u', 't', 'f', 'e', '-', '.',
                '0', '1', '9', 'a', 'm', '\t', 'é',
            ]),
            1 => any::<char>(),
        ],
        0..120,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// Escapes a measurement, tag key, tag value or field key.
fn escape_key(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, ' ' | ',' | '=' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A numeric field value as written, and the value it must read as.
fn arb_field_value() -> impl Strategy<Value = (String, f64)> {
    prop_oneof![
        any::<i64>().prop_map(|v| (format!("{v}i"), v as f64)),
        any::<u64>().prop_map(|v| (format!("{v}u"), v as f64)),
        any::<f64>().prop_map(|v| (format!("{v:?}"), v)),
        any::<f64>().prop_map(|v| (format!("\"{v}\""), v)),
        prop::sample::select(vec!["t", "T", "true", "True", "TRUE"])
            .prop_map(|v| (v.to_string(), 1.0)),
        prop::sample::select(vec!["f", "F", "false", "False", "FALSE"])
            .prop_map(|v| (v.to_string(), 0.0)),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ ,=\\\\.é:-]{1,12}"
}

/// A generated line: measurement, tags, fields (as written, expected value), timestamp.
type GenLine = (
    String,
    Vec<(String, String)>,
    Vec<(String, (String, f64))>,
    i64,
);

fn arb_line() -> impl Strategy<Value = GenLine> {
    (
        "[a-zA-Z0-9_ ,=\\\\.é-]{0,10}",
        proptest::collection::btree_map(
            "[a-z][a-z0-9_]{0,6}",
            "[a-zA-Z0-9 ,=\\\\\"é.-]{1,10}",
            0..5,
        ),
        proptest::collection::btree_map("[a-z][a-z0-9_]{0,6}", arb_field_value(), 1..5),
        any::<i64>(),
    )
        .prop_map(|(m, tags, fields, ts)| {
            (
                m,
                tags.into_iter().collect(),
                fields.into_iter().collect(),
                ts,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn influx_never_panics_on_arbitrary_text(
        body in arb_protocol_text(),
        precision in arb_precision(),
        now in any::<i64>(),
    ) {
        let mut rows = Vec::new();
        let errors = parse(&body, precision, now, Some("db0"), &[], &mut rows);
        check_invariants(&body, &rows, &errors);
    }

    #[test]
    fn influx_never_panics_on_arbitrary_unicode(body in any::<String>(), now in any::<i64>()) {
        let mut rows = Vec::new();
        let errors = parse(&body, Precision::Auto, now, None, &[], &mut rows);
        check_invariants(&body, &rows, &errors);
    }

    #[test]
    fn influx_generated_lines_read_back(
        (measurement, tags, fields, ts) in arb_line(),
        key in arb_key(),
    ) {
        // One line with escaped names, integer fields, one string field and a timestamp.
        let mut line = escape_key(&measurement);
        for (k, v) in &tags {
            line.push(',');
            line.push_str(&escape_key(k));
            line.push('=');
            line.push_str(&escape_key(v));
        }
        line.push(' ');
        let mut parts: Vec<String> =
            fields.iter().map(|(k, (v, _))| format!("{}={v}", escape_key(k))).collect();
        // Its key starts with an uppercase letter: no clash with the numeric fields.
        let text_key = escape_key(&format!("S{key}!"));
        parts.push(format!("{text_key}=\"a \\\"b\\\\ c,d=e\""));
        line.push_str(&parts.join(","));
        line.push_str(&format!(" {ts}"));

        let mut rows = Vec::new();
        let errors = parse(&line, Precision::Ms, NOW, None, &[], &mut rows);
        prop_assert!(errors.is_empty(), "{line:?}: {errors}");
        prop_assert_eq!(rows.len(), 1);
        let row = &rows[0];
        prop_assert_eq!(row.timestamp_ms, ts);
        let want_labels: Vec<(String, String)> = tags.clone();
        prop_assert_eq!(&row.labels, &want_labels);
        prop_assert_eq!(row.samples.len(), fields.len());
        for ((name, got), (k, (_, want))) in row.samples.iter().zip(&fields) {
            let want_name = if measurement.is_empty() {
                k.clone()
            } else {
                sanitize(&format!("{measurement}_{k}"), true).into_owned()
            };
            prop_assert_eq!(name, &want_name);
            prop_assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{} read as {} instead of {}", k, got, want
            );
        }
        check_invariants(&line, &rows, &errors);
    }
}
