//! Relabeling tests: one table per action, written from Prometheus' documented behaviour,
//! plus validation, deserialization, the RE2 translation and allocation checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::{Value, json};

use super::re2::{Part, Template};
use super::*;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn config(v: Value) -> RelabelConfig {
    match serde_json::from_value(v.clone()) {
        Ok(c) => c,
        Err(e) => panic!("config {v} did not load: {e}"),
    }
}

fn config_err(v: Value) -> String {
    match serde_json::from_value::<RelabelConfig>(v.clone()) {
        Ok(c) => panic!("config {v} loaded: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn relabeler(configs: &[Value]) -> Relabeler {
    let configs: Vec<RelabelConfig> = configs.iter().cloned().map(config).collect();
    match Relabeler::new(&configs) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// A case: rules, input labels, expected labels (`None`: dropped).
struct Case {
    name: &'static str,
    rules: Vec<Value>,
    input: &'static [(&'static str, &'static str)],
    output: Option<&'static [(&'static str, &'static str)]>,
}

fn run(cases: Vec<Case>) {
    for case in cases {
        let r = relabeler(&case.rules);
        let mut ls = labels(case.input);
        let kept = r.apply(&mut ls);
        match case.output {
            None => assert!(!kept, "{}: expected a drop, got {ls:?}", case.name),
            Some(want) => {
                assert!(kept, "{}: dropped", case.name);
                assert_eq!(ls, labels(want), "{}", case.name);
            }
        }
    }
}

#[test]
fn replace() {
    run(vec![
        Case {
            name: "defaults copy one label to another",
            rules: vec![json!({"source_labels": ["a"], "target_label": "b"})],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo"), ("b", "foo")]),
        },
        Case {
            name: "groups in the replacement",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "f(.*)", "target_label": "d",
                "replacement": "ch${1}-ch$1"
            })],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo"), ("d", "choo-choo")]),
        },
        Case {
            name: "missing source labels join as empty strings",
            rules: vec![json!({"source_labels": ["a", "missing", "c"], "target_label": "t"})],
            input: &[("a", "x"), ("c", "z")],
            output: Some(&[("a", "x"), ("c", "z"), ("t", "x;;z")]),
        },
        Case {
            name: "custom separator, several groups",
            rules: vec![json!({
                "source_labels": ["a", "b"], "separator": "|", "regex": "f(.*)\\|(.*)r",
                "target_label": "a", "replacement": "b${1}${2}m"
            })],
            input: &[("a", "foo"), ("b", "bar")],
            output: Some(&[("a", "boobam"), ("b", "bar")]),
        },
        Case {
            name: "no match, no change",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar"
            })],
            input: &[("a", "boo")],
            output: Some(&[("a", "boo")]),
        },
        Case {
            name: "the regex is anchored at both ends",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "o", "target_label": "b", "replacement": "hit"
            })],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo")]),
        },
        Case {
            name: "named groups, braced and not",
            rules: vec![json!({
                "source_labels": ["__address__"],
                "regex": "(?P<host>[^:]+):(?P<port>\\d+)",
                "target_label": "instance", "replacement": "${host}-$port"
            })],
            input: &[("__address__", "node1:9100")],
            output: Some(&[("__address__", "node1:9100"), ("instance", "node1-9100")]),
        },
        Case {
            name: "$1x is the group named 1x (absent): empty, so the label is deleted",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "(.*)", "target_label": "t", "replacement": "$1x"
            })],
            input: &[("a", "v"), ("t", "old")],
            output: Some(&[("a", "v")]),
        },
        Case {
            name: "${1}x is group 1 then x",
            rules: vec![json!({
                "source_labels": ["a"], "target_label": "t", "replacement": "${1}x"
            })],
            input: &[("a", "v")],
            output: Some(&[("a", "v"), ("t", "vx")]),
        },
        Case {
            name: "$$ is a literal dollar; a $ without a name is literal",
            rules: vec![json!({
                "source_labels": ["a"], "target_label": "t", "replacement": "$$1 ${ $- $"
            })],
            input: &[("a", "v")],
            output: Some(&[("a", "v"), ("t", "$1 ${ $- $")]),
        },
        Case {
            name: "$0 is the whole value; out-of-range and unmatched groups are empty",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "(x)?(b.*)", "target_label": "t",
                "replacement": "[$0][$1][$2][$3][${9}]"
            })],
            input: &[("a", "bar")],
            output: Some(&[("a", "bar"), ("t", "[bar][][bar][][]")]),
        },
        Case {
            name: "an empty expansion deletes the target (missing source)",
            rules: vec![json!({"source_labels": ["missing"], "target_label": "b"})],
            input: &[("a", "x"), ("b", "y")],
            output: Some(&[("a", "x")]),
        },
        Case {
            name: "a constant replacement is set whatever the value",
            rules: vec![json!({"target_label": "env", "replacement": "prod"})],
            input: &[("a", "x")],
            output: Some(&[("a", "x"), ("env", "prod")]),
        },
        Case {
            name: "target_label is expanded too",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)",
                "target_label": "${1}", "replacement": "${2}"
            })],
            input: &[("a", "some-name-value")],
            output: Some(&[("a", "some-name-value"), ("name", "value")]),
        },
        Case {
            name: "an expanded target that is not a label name changes nothing",
            rules: vec![
                json!({
                    "source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)",
                    "target_label": "${3}", "replacement": "${1}"
                }),
                json!({
                    "source_labels": ["a"], "regex": "(\\d+)-(.*)",
                    "target_label": "${1}", "replacement": "${2}"
                }),
            ],
            input: &[("a", "some-name-0")],
            output: Some(&[("a", "some-name-0")]),
        },
        Case {
            name: "dot matches a newline",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "foo.bar", "target_label": "t",
                "replacement": "yes"
            })],
            input: &[("a", "foo\nbar")],
            output: Some(&[("a", "foo\nbar"), ("t", "yes")]),
        },
        Case {
            name: "\\d is ASCII only, as in Go",
            rules: vec![json!({
                "source_labels": ["a"], "regex": "\\d+", "target_label": "t", "replacement": "digits"
            })],
            input: &[("a", "١٢٣")],
            output: Some(&[("a", "١٢٣")]),
        },
        Case {
            name: "sd tags, several rules in order",
            rules: vec![
                json!({
                    "source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)path:(/[^,]+).*",
                    "target_label": "__metrics_path__"
                }),
                json!({
                    "source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)job:([^,]+).*",
                    "target_label": "job"
                }),
                json!({
                    "source_labels": ["__meta_sd_tags"],
                    "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*",
                    "target_label": "${1}", "replacement": "${2}"
                }),
            ],
            input: &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
            output: Some(&[
                ("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar"),
                ("__metrics_path__", "/secret"),
                ("foo", "bar"),
                ("job", "some-job"),
            ]),
        },
        Case {
            name: "a later rule sees an earlier rule's result",
            rules: vec![
                json!({"regex": "^__meta_port$", "action": "labeldrop"}),
                json!({
                    "source_labels": ["__meta_annotation_port"], "regex": "(.+)",
                    "target_label": "__meta_port", "replacement": "metrics"
                }),
                json!({"source_labels": ["__meta_port"], "regex": "metrics", "action": "keep"}),
            ],
            input: &[("__meta_port", "foo"), ("__meta_annotation_port", "9091")],
            output: Some(&[
                ("__meta_annotation_port", "9091"),
                ("__meta_port", "metrics"),
            ]),
        },
    ]);
}

#[test]
fn keep_and_drop() {
    run(vec![
        Case {
            name: "keep on match",
            rules: vec![json!({"source_labels": ["a"], "regex": "f.*", "action": "keep"})],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo")]),
        },
        Case {
            name: "keep drops on no match",
            rules: vec![json!({"source_labels": ["a"], "regex": "no-match", "action": "keep"})],
            input: &[("a", "foo")],
            output: None,
        },
        Case {
            name: "keep on a missing label matches the empty string",
            rules: vec![json!({"source_labels": ["missing"], "regex": "", "action": "keep"})],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo")]),
        },
        Case {
            name: "drop on match",
            rules: vec![json!({"source_labels": ["a"], "regex": ".*o.*", "action": "drop"})],
            input: &[("a", "foo"), ("b", "bar")],
            output: None,
        },
        Case {
            name: "drop is anchored: a partial match keeps",
            rules: vec![json!({"source_labels": ["a"], "regex": "f|o", "action": "drop"})],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo")]),
        },
        Case {
            name: "drop by metric name alternation",
            rules: vec![json!({
                "source_labels": ["__name__"], "regex": "go_.*|process_.*", "action": "drop"
            })],
            input: &[("__name__", "go_goroutines"), ("job", "x")],
            output: None,
        },
        Case {
            name: "drop by metric name: other metrics stay",
            rules: vec![json!({
                "source_labels": ["__name__"], "regex": "go_.*|process_.*", "action": "drop"
            })],
            input: &[("__name__", "http_requests_total"), ("job", "x")],
            output: Some(&[("__name__", "http_requests_total"), ("job", "x")]),
        },
        Case {
            name: "drop on a joined value",
            rules: vec![json!({
                "source_labels": ["__name__", "le"], "regex": "h_bucket;\\+Inf", "action": "drop"
            })],
            input: &[("__name__", "h_bucket"), ("le", "+Inf")],
            output: None,
        },
        Case {
            // YAML `regex: true` reaches serde as the string "true" through a YAML
            // deserializer's string hint (serde-saphyr does this).
            name: "keep with a regex that YAML would read as a boolean",
            rules: vec![json!({
                "source_labels": ["__meta_scrape"], "regex": "true", "action": "keep"
            })],
            input: &[("__meta_scrape", "true")],
            output: Some(&[("__meta_scrape", "true")]),
        },
        Case {
            name: "keep with no source labels and the default regex keeps",
            rules: vec![json!({"action": "keep"})],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo")]),
        },
        Case {
            name: "drop with no source labels and the default regex drops",
            rules: vec![json!({"action": "drop"})],
            input: &[("a", "foo")],
            output: None,
        },
        Case {
            name: "processing stops at the first drop",
            rules: vec![
                json!({"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}),
                json!({"source_labels": ["a"], "target_label": "d"}),
            ],
            input: &[("a", "foo")],
            output: None,
        },
        Case {
            name: "keep sees labels set by earlier rules",
            rules: vec![
                json!({"target_label": "x", "replacement": "1"}),
                json!({"source_labels": ["x"], "regex": "1", "action": "keep"}),
            ],
            input: &[("a", "foo")],
            output: Some(&[("a", "foo"), ("x", "1")]),
        },
    ]);
}

#[test]
fn keepequal_and_dropequal() {
    let input: &[(&str, &str)] = &[
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    run(vec![
        Case {
            name: "keepequal, equal",
            rules: vec![json!({
                "source_labels": ["__tmp_port"], "target_label": "__port1", "action": "keepequal"
            })],
            input,
            output: Some(input),
        },
        Case {
            name: "keepequal, different",
            rules: vec![json!({
                "source_labels": ["__tmp_port"], "target_label": "__port2", "action": "keepequal"
            })],
            input,
            output: None,
        },
        Case {
            name: "dropequal, equal",
            rules: vec![json!({
                "source_labels": ["__tmp_port"], "target_label": "__port1", "action": "dropequal"
            })],
            input,
            output: None,
        },
        Case {
            name: "dropequal, different",
            rules: vec![json!({
                "source_labels": ["__tmp_port"], "target_label": "__port2", "action": "DropEqual"
            })],
            input,
            output: Some(input),
        },
        Case {
            name: "a missing target equals a missing source (both empty)",
            rules: vec![json!({
                "source_labels": ["nope"], "target_label": "absent", "action": "keepequal"
            })],
            input,
            output: Some(input),
        },
        Case {
            name: "joined sources compare as one string",
            rules: vec![json!({
                "source_labels": ["__port1", "__port2"], "target_label": "both",
                "action": "dropequal"
            })],
            input: &[("__port1", "1"), ("__port2", "2"), ("both", "1;2")],
            output: None,
        },
    ]);
}

#[test]
fn hashmod() {
    // Expected values: `printf %s VALUE | md5sum`, last 16 hex digits as a big-endian u64,
    // modulo the modulus (checked in the shell: baz -> 0xe44cf984c85f6e88).
    run(vec![
        Case {
            name: "baz mod 1000",
            rules: vec![json!({
                "source_labels": ["c"], "target_label": "d", "modulus": 1000, "action": "hashmod"
            })],
            input: &[("c", "baz")],
            output: Some(&[("c", "baz"), ("d", "976")]),
        },
        Case {
            name: "the last 8 bytes, big-endian",
            rules: vec![json!({
                "source_labels": ["c"], "target_label": "d", "modulus": u64::MAX,
                "action": "hashmod"
            })],
            input: &[("c", "baz")],
            output: Some(&[("c", "baz"), ("d", "16450797887570275976")]),
        },
        Case {
            name: "a value with a newline",
            rules: vec![json!({
                "source_labels": ["a"], "target_label": "b", "modulus": 1000, "action": "HASHMOD"
            })],
            input: &[("a", "foo\nbar")],
            output: Some(&[("a", "foo\nbar"), ("b", "734")]),
        },
        Case {
            name: "a missing source hashes the empty string and overwrites the target",
            rules: vec![json!({
                "source_labels": ["missing"], "target_label": "shard", "modulus": 1000,
                "action": "hashmod"
            })],
            input: &[("shard", "1")],
            output: Some(&[("shard", "958")]),
        },
        Case {
            name: "sharding: keep one shard",
            rules: vec![
                json!({
                    "source_labels": ["__address__"], "target_label": "__tmp_hash",
                    "modulus": 1, "action": "hashmod"
                }),
                json!({"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"}),
            ],
            input: &[("__address__", "a:1")],
            output: Some(&[("__address__", "a:1"), ("__tmp_hash", "0")]),
        },
    ]);
}

#[test]
fn labelmap() {
    run(vec![
        Case {
            name: "meta labels to plain labels, default replacement",
            rules: vec![json!({"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"})],
            input: &[
                ("__meta_kubernetes_pod_label_app", "web"),
                ("__meta_kubernetes_pod_label_tier", "front"),
                ("__meta_kubernetes_namespace", "default"),
            ],
            output: Some(&[
                ("__meta_kubernetes_namespace", "default"),
                ("__meta_kubernetes_pod_label_app", "web"),
                ("__meta_kubernetes_pod_label_tier", "front"),
                ("app", "web"),
                ("tier", "front"),
            ]),
        },
        Case {
            name: "a prefix in the replacement",
            rules: vec![json!({"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"})],
            input: &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            output: Some(&[
                ("a", "foo"),
                ("b1", "bar"),
                ("b2", "baz"),
                ("bar_b1", "bar"),
                ("bar_b2", "baz"),
            ]),
        },
        Case {
            name: "an existing label is overwritten",
            rules: vec![json!({"regex": "__meta_(.+)", "action": "labelmap"})],
            input: &[("__meta_job", "sd"), ("job", "static")],
            output: Some(&[("__meta_job", "sd"), ("job", "sd")]),
        },
        Case {
            name: "names are matched against the set before the rule",
            rules: vec![json!({"regex": "(a+)", "replacement": "${1}a", "action": "labelmap"})],
            input: &[("a", "1"), ("aa", "2")],
            output: Some(&[("a", "1"), ("aa", "1"), ("aaa", "2")]),
        },
        Case {
            name: "several labels to one name: the name sorting last wins",
            rules: vec![json!({"regex": "(a|b)", "replacement": "b", "action": "labelmap"})],
            input: &[("a", "1"), ("b", "2")],
            output: Some(&[("a", "1"), ("b", "2")]),
        },
        Case {
            name: "several labels to one name, other direction",
            rules: vec![json!({"regex": "(a|b)", "replacement": "a", "action": "labelmap"})],
            input: &[("a", "1"), ("b", "2")],
            output: Some(&[("a", "2"), ("b", "2")]),
        },
        Case {
            name: "an invalid resulting name is skipped",
            rules: vec![json!({"regex": "__meta_(.+)", "action": "labelmap"})],
            input: &[("__meta_1x", "v"), ("__meta_ok", "w")],
            output: Some(&[("__meta_1x", "v"), ("__meta_ok", "w"), ("ok", "w")]),
        },
        Case {
            name: "no matching name, no change",
            rules: vec![json!({"regex": "__meta_(.+)", "action": "labelmap"})],
            input: &[("a", "1")],
            output: Some(&[("a", "1")]),
        },
    ]);
}

#[test]
fn labeldrop_and_labelkeep() {
    run(vec![
        Case {
            name: "labeldrop",
            rules: vec![json!({"regex": "(b.*)", "action": "labeldrop"})],
            input: &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            output: Some(&[("a", "foo")]),
        },
        Case {
            name: "labelkeep",
            rules: vec![json!({"regex": "(b.*)", "action": "labelkeep"})],
            input: &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            output: Some(&[("b1", "bar"), ("b2", "baz")]),
        },
        Case {
            name: "labeldrop is anchored",
            rules: vec![json!({"regex": "b", "action": "labeldrop"})],
            input: &[("a", "foo"), ("b", "x"), ("bb", "y")],
            output: Some(&[("a", "foo"), ("bb", "y")]),
        },
        Case {
            name: "labelkeep of a literal list",
            rules: vec![json!({"regex": "__name__|job|instance", "action": "labelkeep"})],
            input: &[
                ("__name__", "up"),
                ("instance", "i"),
                ("job", "j"),
                ("pod", "p"),
            ],
            output: Some(&[("__name__", "up"), ("instance", "i"), ("job", "j")]),
        },
        Case {
            name: "labeldrop with the default regex removes everything",
            rules: vec![json!({"action": "labeldrop"})],
            input: &[("a", "foo")],
            output: Some(&[]),
        },
    ]);
}

#[test]
fn lowercase_and_uppercase() {
    run(vec![
        Case {
            name: "ASCII",
            rules: vec![
                json!({"source_labels": ["foo"], "target_label": "foo_upper", "action": "uppercase"}),
                json!({"source_labels": ["foo"], "target_label": "foo_lower", "action": "lowercase"}),
            ],
            input: &[("foo", "bAr123Foo")],
            output: Some(&[
                ("foo", "bAr123Foo"),
                ("foo_lower", "bar123foo"),
                ("foo_upper", "BAR123FOO"),
            ]),
        },
        Case {
            name: "joined sources",
            rules: vec![json!({
                "source_labels": ["a", "b"], "separator": "-", "target_label": "a",
                "action": "lowercase"
            })],
            input: &[("a", "X"), ("b", "Y")],
            output: Some(&[("a", "x-y"), ("b", "Y")]),
        },
        Case {
            name: "an empty source deletes the target",
            rules: vec![
                json!({"source_labels": ["missing"], "target_label": "a", "action": "lowercase"}),
            ],
            input: &[("a", "X")],
            output: Some(&[]),
        },
        Case {
            // Go maps character by character (simple case mapping): no final sigma, İ is i,
            // ß and ligatures have no one-character upper case.
            name: "Unicode, Go's simple case mapping",
            rules: vec![
                json!({"source_labels": ["v"], "target_label": "lower", "action": "lowercase"}),
                json!({"source_labels": ["v"], "target_label": "upper", "action": "uppercase"}),
            ],
            input: &[("v", "ΟΔΟΣ İ Straße ﬁ ᾳ Ä")],
            output: Some(&[
                ("lower", "οδοσ i straße ﬁ ᾳ ä"),
                ("upper", "ΟΔΟΣ İ STRAßE ﬁ ᾼ Ä"),
                ("v", "ΟΔΟΣ İ Straße ﬁ ᾳ Ä"),
            ]),
        },
    ]);
}

#[test]
fn defaults_applied_when_omitted() {
    let c = config(json!({"target_label": "t"}));
    assert_eq!(
        c,
        RelabelConfig {
            target_label: "t".to_owned(),
            ..RelabelConfig::default()
        }
    );
    assert_eq!(c.action, Action::Replace);
    assert_eq!(c.separator, ";");
    assert_eq!(c.regex, None);
    assert_eq!(c.regex_str(), "(.*)");
    assert_eq!(c.replacement, "$1");
    assert_eq!(c.modulus, 0);
    assert!(c.source_labels.is_empty());

    // An explicit null is the zero value, as in Prometheus' YAML loading.
    let c = config(json!({
        "source_labels": null, "separator": null, "regex": null, "action": "keep"
    }));
    assert_eq!(c.separator, "");
    assert_eq!(c.regex.as_deref(), Some(""));
    assert!(c.source_labels.is_empty());

    // The action name ignores case.
    let c = config(json!({"action": "LabelMap", "regex": "1", "replacement": "x"}));
    assert_eq!(c.action, Action::LabelMap);
    assert_eq!(c.regex.as_deref(), Some("1"));
    assert_eq!(config(json!({"action": "KEEP"})).action, Action::Keep);
}

#[test]
fn invalid_configs_are_rejected() {
    let cases: &[(Value, &str)] = &[
        (json!({"action": null}), "relabel action cannot be empty"),
        (
            json!({"action": "frobnicate"}),
            "unknown relabel action \"frobnicate\"",
        ),
        (json!({"action": ""}), "unknown relabel action \"\""),
        (
            json!({"action": "keep", "regexp": "x"}),
            "unknown field `regexp`",
        ),
        (
            json!({}),
            "relabel configuration for replace action requires 'target_label' value",
        ),
        (
            json!({"action": "hashmod", "target_label": "t"}),
            "relabel configuration for hashmod requires non-zero modulus",
        ),
        (
            json!({"action": "hashmod", "target_label": "1t", "modulus": 2}),
            "\"1t\" is invalid 'target_label' for hashmod action",
        ),
        (
            json!({"action": "lowercase"}),
            "relabel configuration for lowercase action requires 'target_label' value",
        ),
        (
            json!({"action": "uppercase", "target_label": "${1}"}),
            "\"${1}\" is invalid 'target_label' for uppercase action",
        ),
        (
            json!({"action": "lowercase", "target_label": "t", "replacement": "x"}),
            "'replacement' can not be set for lowercase action",
        ),
        (
            json!({"action": "keepequal", "target_label": "a-b"}),
            "\"a-b\" is invalid 'target_label' for keepequal action",
        ),
        (
            json!({"target_label": "-foo"}),
            "\"-foo\" is invalid 'target_label' for replace action",
        ),
        (
            json!({"target_label": "0${3}"}),
            "\"0${3}\" is invalid 'target_label' for replace action",
        ),
        (
            json!({"target_label": "-${3}"}),
            "\"-${3}\" is invalid 'target_label' for replace action",
        ),
        (
            json!({"target_label": "foo${"}),
            "\"foo${\" is invalid 'target_label'",
        ),
        (
            json!({"target_label": "a$$b"}),
            "\"a$$b\" is invalid 'target_label'",
        ),
        (
            json!({"action": "labelmap", "replacement": "1abc"}),
            "\"1abc\" is invalid 'replacement' for labelmap action",
        ),
        (
            json!({"action": "keepequal", "target_label": "t", "regex": "(.*)"}),
            "keepequal action requires only 'source_labels' and 'target_label', and no other fields",
        ),
        (
            json!({"action": "dropequal", "target_label": "t", "separator": ","}),
            "dropequal action requires only 'source_labels' and 'target_label'",
        ),
        (
            json!({"action": "labeldrop", "source_labels": ["a"]}),
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            json!({"action": "labelkeep", "regex": "a", "target_label": "b"}),
            "labelkeep action requires only 'regex', and no other fields",
        ),
        (
            json!({"source_labels": ["a-b"], "target_label": "t"}),
            "\"a-b\" is not a valid label name in 'source_labels'",
        ),
        (
            json!({"action": "keep", "regex": "a(b"}),
            "invalid regex \"a(b\": unclosed group",
        ),
        (
            json!({"action": "keep", "regex": "a{1001}"}),
            "invalid regex \"a{1001}\": invalid repeat count",
        ),
        (
            json!({"action": "keep", "regex": "(a)\\1"}),
            "invalid regex \"(a)\\\\1\"",
        ),
        (
            json!({"action": "hashmod", "target_label": "t", "modulus": -1}),
            "invalid value",
        ),
    ];
    for (v, want) in cases {
        let err = config_err(v.clone());
        assert!(
            err.contains(want),
            "{v}: error {err:?} does not contain {want:?}"
        );
    }

    // Templated names that Prometheus accepts.
    for target in [
        "label",
        "label${1}",
        "${1}label",
        "${1}",
        "$1",
        "asd$2asd",
        "_${1}_",
        "foo${bar}foo",
    ] {
        config(json!({"target_label": target}));
    }
    for target in ["${", "$", "${}", "-foo${1}bar-"] {
        config_err(json!({"target_label": target}));
    }

    // Relabeler::new names the entry; programmatic configs are checked the same way.
    let configs = [
        RelabelConfig {
            action: Action::Keep,
            ..RelabelConfig::default()
        },
        RelabelConfig {
            action: Action::HashMod,
            target_label: "t".into(),
            ..RelabelConfig::default()
        },
    ];
    let err = Relabeler::new(&configs).err();
    assert_eq!(
        err,
        Some(RelabelError {
            index: 1,
            message: "relabel configuration for hashmod requires non-zero modulus".into()
        })
    );
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("relabel config 1: relabel configuration for hashmod requires non-zero modulus")
    );
    assert!(configs[0].validate().is_ok());
}

#[test]
fn go_template_parsing() {
    let re = Regex::new("^(?s:(?P<name>a)(b))$").ok();
    let Some(re) = re else { panic!("test regex") };
    let parse = |s: &str| Template::parse(s, &re).parts().to_vec();
    let lit = |s: &str| Part::Literal(s.to_owned());
    assert_eq!(parse("$1"), vec![Part::Group(1)]);
    assert_eq!(parse("$1x"), vec![]); // the group named "1x": none
    assert_eq!(parse("${1}x"), vec![Part::Group(1), lit("x")]);
    assert_eq!(
        parse("$name-$2"),
        vec![Part::Group(1), lit("-"), Part::Group(2)]
    );
    assert_eq!(parse("${name}"), vec![Part::Group(1)]);
    assert_eq!(parse("$nam"), vec![]);
    assert_eq!(parse("$01"), vec![]); // a leading zero makes it a name
    assert_eq!(parse("$3"), vec![]); // out of range
    assert_eq!(parse("$$1"), vec![lit("$1")]);
    assert_eq!(parse("a$"), vec![lit("a$")]);
    assert_eq!(parse("${1"), vec![lit("${1")]);
    assert_eq!(parse("$.x"), vec![lit("$.x")]);
    assert_eq!(parse("$0"), vec![Part::Group(0)]);
}

/// RE2 constructs whose meaning the translation keeps: (pattern, input, matches).
#[test]
fn re2_syntax() {
    let cases: &[(&str, &str, bool)] = &[
        ("\\d+", "123", true),
        ("\\d+", "١٢٣", false),
        ("\\w+", "abc_1", true),
        ("\\w+", "é", false),
        ("\\W", "é", true),
        ("\\s", "\u{a0}", false),
        ("\\s", "\t", true),
        ("[\\d.]+", "1.2", true),
        ("[^\\d]+", "ab", true),
        ("a\\b", "a", true),
        ("\\Q.*+\\E", ".*+", true),
        ("\\Q.*+\\E", "ab", false),
        ("a\\<b\\>", "a<b>", true),
        ("\\_x", "_x", true),
        ("a{", "a{", true),
        ("a{,2}", "a{,2}", true),
        ("a{01}", "a{01}", true),
        ("a{2}", "aa", true),
        ("a{2,}", "aaa", true),
        ("a{1,2}b}", "aab}", true),
        ("[[]", "[", true),
        ("[a&&b]", "&", true),
        ("[a~~b]", "~", true),
        ("[+--]", ",", true),
        ("[]a]+", "]a", true),
        ("[^]a]", "b", true),
        ("[a-]", "-", true),
        ("[\\d-z]", "-", true),
        ("[[:alpha:]]+", "abc", true),
        ("[[:^alpha:]]", "1", true),
        ("\\012", "\n", true),
        ("[\\x41-\\x{43}]+", "ABC", true),
        ("\\pL+", "é", true),
        ("\\p{^Greek}", "a", true),
        ("\\p{^Greek}", "α", false),
        ("(?i)abc", "ABC", true),
        ("a.c", "a\nc", true),
        ("", "", true),
        ("", "a", false),
        // Shapes the alternatives shortcut takes; checked against the regex engine below.
        ("up", "up", true),
        ("up", "upp", false),
        ("a-b c#d", "a-b c#d", true),
        ("go_.*|process_.*", "go_goroutines", true),
        ("go_.*|process_.*", "process_", true),
        ("go_.*|process_.*", "xgo_", false),
        ("(go_.*|up)", "up", true),
        (".*_total|up|a|b|c", "x_total", true),
        (".*_total|up|a|b|c", "b", true),
        (".*_total|up|a|b|c", "d", false),
        (".*_bucket.*", "a_bucket_b", true),
        (".*_bucket.*", "a_buckeb", false),
        (".*|x", "", true),
        ("a|", "", true),
        ("go_.*", "go_\nx", true),
    ];
    for &(pattern, input, want) in cases {
        let m = match Matcher::compile(pattern) {
            Ok(m) => m,
            Err(e) => panic!("{pattern:?}: {e}"),
        };
        assert_eq!(m.is_match(input), want, "{pattern:?} on {input:?}");
        assert_eq!(
            m.regex.is_match(input),
            want,
            "{pattern:?} on {input:?} (regex engine)"
        );
    }
}

#[test]
fn shortcut_patterns_skip_the_regex_engine() {
    let kind = |p: &str| match Matcher::compile(p) {
        Ok(m) => m.kind,
        Err(e) => panic!("{p:?}: {e}"),
    };
    for p in ["(.*)", ".*"] {
        assert!(matches!(kind(p), MatchKind::Any), "{p}");
    }
    for p in ["(.+)", ".+"] {
        assert!(matches!(kind(p), MatchKind::NonEmpty), "{p}");
    }
    for p in ["up", "go_.*|process_.*", "(a|b.*)", ".*x.*|y", ""] {
        assert!(matches!(kind(p), MatchKind::Alternatives(_)), "{p}");
    }
    for p in [
        "(?i)up", "a.b", "(a)|(b)", "a\\.b", "a+", "[ab]", "a.*b", "(a|b", "^a$",
    ] {
        if let Ok(m) = Matcher::compile(p) {
            assert!(matches!(m.kind, MatchKind::Regex), "{p}");
        }
    }
    // A wrapping group is the whole value.
    run(vec![Case {
        name: "wrapped alternatives in a replacement",
        rules: vec![json!({
            "source_labels": ["__name__"], "regex": "(go_.*|up)", "target_label": "t",
            "replacement": "[$0][$1][$2]"
        })],
        input: &[("__name__", "go_x")],
        output: Some(&[("__name__", "go_x"), ("t", "[go_x][go_x][]")]),
    }]);
}

#[test]
fn remove_internal_labels_keeps_the_rest() {
    let mut ls = labels(&[
        ("__address__", "a"),
        ("__meta_x", "b"),
        ("_a", "c"),
        ("job", "j"),
    ]);
    remove_internal_labels(&mut ls);
    assert_eq!(ls, labels(&[("_a", "c"), ("job", "j")]));
}

#[test]
fn relabeler_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Relabeler>();
    let r = Relabeler::default();
    assert!(r.is_empty());
    let mut ls = labels(&[("a", "b")]);
    assert!(r.apply(&mut ls));
    assert_eq!(ls, labels(&[("a", "b")]));
}

// Counting allocator: allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn no_allocation_when_nothing_changes() {
    let r = relabeler(&[
        json!({"source_labels": ["__name__"], "regex": "go_.*|process_.*", "action": "drop"}),
        json!({"source_labels": ["__name__", "job"], "regex": "up;.*", "action": "drop"}),
        json!({"source_labels": ["job"], "regex": "node", "action": "keep"}),
        json!({"source_labels": ["job"], "target_label": "job"}),
        json!({
            "source_labels": ["instance"], "regex": "([^:]+):\\d+", "target_label": "host",
            "replacement": "${1}"
        }),
        json!({"source_labels": ["host"], "target_label": "host", "action": "lowercase"}),
        json!({"source_labels": ["instance"], "target_label": "shard", "modulus": 4, "action": "hashmod"}),
        json!({"regex": "__meta_(.+)", "action": "labelmap"}),
        json!({"regex": "tmp_.*", "action": "labeldrop"}),
        json!({"source_labels": ["job"], "target_label": "job", "action": "keepequal"}),
    ]);
    let mut ls = labels(&[
        ("__name__", "http_requests_total"),
        ("instance", "web1:9100"),
        ("job", "node"),
    ]);
    // The first run sets `host` and `shard` and warms the per-thread buffers.
    assert!(r.apply(&mut ls));
    let after_first = ls.clone();
    assert_eq!(
        ls.iter()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| v.as_str()),
        Some("web1")
    );
    let n = allocations(|| assert!(r.apply(&mut ls)));
    assert_eq!(ls, after_first);
    assert_eq!(n, 0, "a run that changes nothing allocated");

    // The regex crate's lazy DFA grows its per-thread cache on input it has not seen: the
    // steady state is what counts.
    let mut dropped = labels(&[("__name__", "go_goroutines"), ("job", "node")]);
    assert!(!r.apply(&mut dropped));
    let n = allocations(|| assert!(!r.apply(&mut dropped)));
    assert_eq!(n, 0, "a drop allocated");
}
