use std::fs;

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn load_ok(text: &str) -> ScrapeFile {
    match load(text, Path::new("/nonexistent")) {
        Ok(f) => f,
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn load_err(text: &str) -> ConfigError {
    match load(text, Path::new("/nonexistent")) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn group(targets: &[&str], pairs: &[(&str, &str)]) -> TargetGroup {
    TargetGroup {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        source: "static/0".into(),
    }
}

/// The one job of `text`.
fn job(text: &str) -> ScrapeConfig {
    let mut f = load_ok(text);
    assert_eq!(f.scrape_configs.len(), 1);
    f.scrape_configs.remove(0)
}

const PROMETHEUS_YML: &str = r#"# my global config
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels:
    region: eu-west
    replica: 1

alerting:
  alertmanagers:
    - static_configs:
        - targets: ['alertmanager:9093']

rule_files:
  - "rules/*.yml"

remote_write:
  - url: http://remote.example:9201/write
    write_relabel_configs:
      - action: nonsense

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['localhost:9090']
        labels:
          env: prod
      - targets: [localhost:9091, localhost:9092]

  - job_name: node
    scrape_interval: 30s
    scrape_timeout: 20s
    metrics_path: /probe
    scheme: https
    params:
      module: [http_2xx]
    honor_labels: true
    honor_timestamps: false
    sample_limit: 5000
    body_size_limit: 10MB
    tls_config:
      insecure_skip_verify: true
    file_sd_configs:
      - files: ['targets/*.json', '/etc/minos/nodes.yml']
        refresh_interval: 1m
      - files: [more.yaml]
    relabel_configs:
      - source_labels: [__meta_filepath]
        regex: '.*/(.*)\.json'
        target_label: file
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop

  - job_name: mysql
    scrape_interval: 5s
    inventory_sd_configs:
      - selector: "service=mysql,env=prod"
        port: 9104
      - selector: /sre/minos
        port: 9100
        scheme: https
    relabel_configs:
      - source_labels: [__meta_minos_hostname]
        target_label: host
"#;

#[test]
fn a_full_prometheus_yml_loads_with_prometheus_defaults() {
    let f = load_ok(PROMETHEUS_YML);
    assert_eq!(f.global.scrape_interval, secs(15));
    assert_eq!(f.global.scrape_timeout, secs(10));
    assert_eq!(
        f.global.external_labels,
        BTreeMap::from([
            ("region".to_string(), "eu-west".to_string()),
            ("replica".to_string(), "1".to_string()),
        ])
    );
    assert_eq!(f.scrape_configs.len(), 3);

    let p = &f.scrape_configs[0];
    assert_eq!(p.job_name, "prometheus");
    assert_eq!(p.scrape_interval, secs(15), "from global");
    assert_eq!(p.scrape_timeout, secs(10), "from global");
    assert_eq!(p.metrics_path, "/metrics");
    assert_eq!(p.scheme, "http");
    assert!(p.params.is_empty());
    assert!(!p.honor_labels);
    assert!(p.honor_timestamps);
    assert_eq!(
        (p.sample_limit, p.label_limit, p.body_size_limit),
        (0, 0, 0)
    );
    assert!(p.auth.is_none());
    assert!(!p.tls_insecure_skip_verify);
    assert!(p.relabel.is_empty() && p.metric_relabel.is_empty());
    assert_eq!(
        p.static_configs,
        vec![
            TargetGroup {
                targets: vec!["localhost:9090".into()],
                labels: BTreeMap::from([("env".into(), "prod".into())]),
                source: "static/0".into(),
            },
            TargetGroup {
                targets: vec!["localhost:9091".into(), "localhost:9092".into()],
                labels: BTreeMap::new(),
                source: "static/1".into(),
            },
        ]
    );

    let n = &f.scrape_configs[1];
    assert_eq!(n.job_name, "node");
    assert_eq!((n.scrape_interval, n.scrape_timeout), (secs(30), secs(20)));
    assert_eq!(n.metrics_path, "/probe");
    assert_eq!(n.scheme, "https");
    assert_eq!(
        n.params,
        BTreeMap::from([("module".to_string(), vec!["http_2xx".to_string()])])
    );
    assert!(n.honor_labels);
    assert!(!n.honor_timestamps);
    assert_eq!(n.sample_limit, 5000);
    assert_eq!(n.body_size_limit, 10 << 20);
    assert!(n.tls_insecure_skip_verify);
    assert_eq!(
        n.file_sd_configs,
        vec![
            FileSd {
                files: vec!["targets/*.json".into(), "/etc/minos/nodes.yml".into()],
                refresh_interval: secs(60),
            },
            FileSd {
                files: vec!["more.yaml".into()],
                refresh_interval: secs(300),
            },
        ]
    );
    assert_eq!((n.relabel.len(), n.metric_relabel.len()), (1, 1));
    assert!(n.static_configs.is_empty());

    let m = &f.scrape_configs[2];
    assert_eq!(m.scrape_interval, secs(5));
    assert_eq!(
        m.scrape_timeout,
        secs(5),
        "the global 10s timeout is cut to the job's interval"
    );
    assert_eq!(
        m.inventory_sd_configs,
        vec![
            InventorySd {
                selector: "service=mysql,env=prod".into(),
                port: 9104,
                scheme: None,
            },
            InventorySd {
                selector: "/sre/minos".into(),
                port: 9100,
                scheme: Some("https".into()),
            },
        ]
    );
}

#[test]
fn empty_and_minimal_files_take_the_defaults() {
    for text in [
        "",
        "scrape_configs:\n",
        "global:\nscrape_configs: []\n",
        "# nothing\n",
    ] {
        let f = load_ok(text);
        assert_eq!(f.global, Global::default(), "{text:?}");
        assert!(f.scrape_configs.is_empty());
    }
    let j = job("scrape_configs:\n  - job_name: x\n");
    assert_eq!((j.scrape_interval, j.scrape_timeout), (secs(60), secs(10)));
    // A global interval shorter than the default timeout shortens the timeout.
    let f = load_ok("global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: x\n");
    assert_eq!(
        (f.global.scrape_timeout, f.scrape_configs[0].scrape_timeout),
        (secs(5), secs(5))
    );
    // 0 counts as unset; limits come from global unless the job sets them.
    let f = load_ok(
        "global:\n  sample_limit: 10\n  body_size_limit: 1KB\n  label_limit: 3\nscrape_configs:\n  - job_name: x\n    scrape_interval: 0\n    sample_limit: 0\n    label_limit: 7\n",
    );
    let j = &f.scrape_configs[0];
    assert_eq!(j.scrape_interval, secs(60));
    assert_eq!(
        (j.sample_limit, j.label_limit, j.body_size_limit),
        (10, 7, 1024)
    );
}

#[test]
fn other_top_level_sections_are_ignored() {
    let f = load_ok(
        "rule_files: ['a.yml']\nalerting: {alertmanagers: [{static_configs: [{targets: [x]}]}]}\nremote_write: [{url: 'http://x', anything: [1, 2]}]\nremote_read: []\nstorage: {tsdb: {out_of_order_time_window: 1h}}\ntracing: {endpoint: x}\nsomething_new: 1\nscrape_configs:\n  - job_name: a\n",
    );
    assert_eq!(f.scrape_configs[0].job_name, "a");
}

#[test]
fn a_typo_in_a_scrape_config_is_an_error_naming_it() {
    let e = load_err(
        "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: a\n  - job_name: node\n    scrape_intervall: 30s\n",
    );
    assert_eq!(e.line, Some(6), "{e}");
    assert_eq!(
        e.to_string(),
        "line 6: scrape_configs[1] (job \"node\"): unknown field `scrape_intervall` (did you mean `scrape_interval`?)"
    );
    let e = load_err("global:\n  scrape_intervl: 15s\n");
    assert_eq!(e.line, Some(2));
    assert!(
        e.message
            .starts_with("global: unknown field `scrape_intervl`"),
        "{e}"
    );
    assert!(e.message.contains("did you mean `scrape_interval`"), "{e}");
    // Deeper: a typo in a static config, a relabel rule, tls_config.
    let e =
        load_err("scrape_configs:\n  - job_name: a\n    static_configs:\n      - target: [x:1]\n");
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("scrape_configs[0] (job \"a\")"), "{e}");
    assert!(
        e.message.contains("`target`") && e.message.contains("`targets`"),
        "{e}"
    );
    let e = load_err(
        "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_label: [x]\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("source_label"), "{e}");
    let e = load_err("scrape_configs:\n  - job_name: a\n    tls_config:\n      insecure: true\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("`insecure`"), "{e}");
}

#[test]
fn prometheus_settings_minos_does_not_implement_are_refused() {
    for (text, line, needle) in [
        (
            "scrape_configs:\n  - job_name: k\n    kubernetes_sd_configs:\n      - role: pod\n",
            3,
            "kubernetes_sd_configs is not supported by Minos",
        ),
        (
            "scrape_configs:\n  - job_name: k\n    oauth2: {client_id: x}\n",
            3,
            "oauth2 is not supported by Minos",
        ),
        (
            "scrape_configs:\n  - job_name: k\n    tls_config:\n      ca: '-----BEGIN'\n",
            4,
            "ca is not supported by Minos",
        ),
        (
            "scrape_config_files: ['jobs/*.yml']\n",
            1,
            "scrape_config_files is not supported",
        ),
    ] {
        let e = load_err(text);
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains(needle), "{e}");
    }
    // Tuning knobs of Prometheus' scraper are accepted.
    let j = job(
        "scrape_configs:\n  - job_name: k\n    scrape_protocols: [PrometheusText0.0.4]\n    fallback_scrape_protocol: PrometheusText0.0.4\n    enable_http2: false\n    follow_redirects: true\n    enable_compression: false\n    track_timestamps_staleness: true\n    metric_name_validation_scheme: legacy\n",
    );
    assert_eq!(j.job_name, "k");
}

#[test]
fn every_validation_error_names_its_line() {
    let cases: &[(&str, u64, &str)] = &[
        // YAML syntax.
        (
            "scrape_configs:\n  - job_name: a\n    static_configs: [\n",
            3,
            "unclosed",
        ),
        // Duplicate key.
        (
            "scrape_configs:\n  - job_name: a\n    job_name: b\n",
            3,
            "duplicate",
        ),
        // Wrong type.
        (
            "scrape_configs:\n  - job_name: a\n    honor_labels: [1]\n",
            3,
            "scrape_configs[0]",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    sample_limit: -1\n",
            3,
            "",
        ),
        // job_name.
        (
            "scrape_configs:\n  - scrape_interval: 1s\n",
            2,
            "scrape_configs[0]: job_name is missing",
        ),
        (
            "scrape_configs:\n  - job_name: ''\n",
            2,
            "job_name is empty",
        ),
        (
            "scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
            4,
            "scrape_configs[2]: job_name \"a\" is already used by scrape_configs[0] (line 2)",
        ),
        // Durations and the timeout.
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 15 s\n",
            3,
            "scrape_configs[0] (job \"a\"): scrape_interval: not a valid duration string: \"15 s\"",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 1m30\n",
            3,
            "not a valid duration",
        ),
        (
            "scrape_configs:\n  - job_name: a\n  - job_name: b\n    scrape_interval: 15s\n    scrape_timeout: 30s\n",
            5,
            "scrape_configs[1] (job \"b\"): scrape_timeout 30s is longer than scrape_interval 15s",
        ),
        (
            "global:\n  scrape_interval: 10s\nscrape_configs:\n  - job_name: a\n    scrape_timeout: 1m\n",
            5,
            "scrape_timeout 1m is longer than scrape_interval 10s (global.scrape_interval)",
        ),
        (
            "global:\n  scrape_interval: 10s\n  scrape_timeout: 11s\n",
            3,
            "global.scrape_timeout 11s is longer than global.scrape_interval 10s",
        ),
        (
            "global:\n  evaluation_interval: soon\n",
            2,
            "global.evaluation_interval",
        ),
        // Other values.
        (
            "scrape_configs:\n  - job_name: a\n    scheme: ftp\n",
            3,
            "scheme: \"ftp\" is not http or https",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    body_size_limit: 10 megs\n",
            3,
            "body_size_limit: not a valid size",
        ),
        (
            "global:\n  external_labels:\n    ok: 1\n    bad-name: x\n",
            4,
            "global.external_labels: \"bad-name\" is not a valid label name",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [a:1]\n        labels:\n          1x: y\n",
            6,
            "static_configs[0].labels: \"1x\" is not a valid label name",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets:\n          - a:1\n          - http://b:2/metrics\n",
            6,
            "static_configs[0]: target \"http://b:2/metrics\" is not a valid host:port",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['a:99999']\n",
            4,
            "port",
        ),
        // Discovery.
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - refresh_interval: 1m\n",
            4,
            "file_sd_configs[0]: files must name at least one file",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files:\n          - ok.json\n          - targets.txt\n",
            6,
            "file_sd_configs[0].files: \"targets.txt\": the file name must end in .json, .yml or .yaml",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['*/x.json']\n",
            4,
            "last path element",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: [a.json]\n        refresh_interval: 0\n",
            5,
            "refresh_interval: must be longer than 0",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    inventory_sd_configs:\n      - selector: web-*\n        port: 70000\n",
            5,
            "inventory_sd_configs[0]: port 70000 is not in 1-65535",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    inventory_sd_configs:\n      - port: 80\n",
            4,
            "inventory_sd_configs[0]: selector is missing",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    inventory_sd_configs:\n      - selector: '*'\n",
            4,
            "port is missing",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    inventory_sd_configs:\n      - selector: '*'\n        port: 80\n        scheme: gopher\n",
            6,
            "inventory_sd_configs[0].scheme: \"gopher\" is not http or https",
        ),
        // Relabel rules (checked while deserializing, with the relabel module's messages).
        (
            "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: keep\n        regex: '(unclosed'\n",
            4,
            "scrape_configs[0] (job \"a\")",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    metric_relabel_configs:\n      - action: explode\n",
            4,
            "explode",
        ),
        // Credentials.
        (
            "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: p}\n    bearer_token: t\n",
            4,
            "basic_auth and bearer_token are both set",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    authorization:\n      credentials: c\n      credentials_file: f\n",
            5,
            "credentials and credentials_file are both set",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    authorization:\n      type: basic\n",
            4,
            "use basic_auth",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    basic_auth:\n      username: u\n      password_file: missing.txt\n",
            5,
            "basic_auth.password_file /nonexistent/missing.txt",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    tls_config:\n      ca_file: /nonexistent/ca.pem\n",
            4,
            "tls_config.ca_file /nonexistent/ca.pem",
        ),
    ];
    for (text, line, needle) in cases {
        let e = load_err(text);
        assert_eq!(e.line, Some(*line), "{e}\n{text}");
        assert!(e.message.contains(needle), "{e:?} lacks {needle:?}\n{text}");
        assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        assert!(!e.message.contains('\n'), "one line: {e:?}");
    }
}

#[test]
fn static_targets_are_not_checked_when_relabeling_may_fix_them() {
    let j = job(
        "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['http://x/y']\n    relabel_configs:\n      - source_labels: [__address__]\n        regex: 'http://([^/]*)/.*'\n        target_label: __address__\n",
    );
    let (targets, left_out) = build_targets(&j, &j.static_configs);
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(targets[0].url, "http://x/metrics");
}

#[test]
fn credentials_are_read_relative_to_the_config_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("pw"), "s3cret\n").expect("write");
    fs::create_dir(dir.path().join("sub")).expect("mkdir");
    fs::write(dir.path().join("sub/token"), "  tok\n").expect("write");
    let load_in = |text: &str| load(text, dir.path()).map(|mut f| f.scrape_configs.remove(0));

    let j = load_in("scrape_configs:\n  - job_name: a\n    basic_auth:\n      username: me\n      password_file: pw\n")
        .expect("load");
    assert_eq!(
        j.auth,
        Some(Auth::Basic {
            username: "me".into(),
            password: "s3cret".into()
        })
    );
    assert_eq!(
        j.auth.as_ref().map(Auth::header_value).as_deref(),
        Some("Basic bWU6czNjcmV0")
    );
    let j = load_in("scrape_configs:\n  - job_name: a\n    bearer_token_file: sub/token\n")
        .expect("load");
    assert_eq!(j.auth, Some(Auth::Bearer("tok".into())));
    let j = load_in(
        "scrape_configs:\n  - job_name: a\n    authorization:\n      credentials_file: sub/token\n",
    )
    .expect("load");
    assert_eq!(j.auth, Some(Auth::Bearer("tok".into())));
    let j = load_in(
        "scrape_configs:\n  - job_name: a\n    authorization:\n      type: Token\n      credentials: abc\n",
    )
    .expect("load");
    assert_eq!(
        j.auth.as_ref().map(Auth::header_value).as_deref(),
        Some("Token abc")
    );
    let j = load_in("scrape_configs:\n  - job_name: a\n    bearer_token: xyz\n").expect("load");
    assert_eq!(
        j.auth.as_ref().map(Auth::header_value).as_deref(),
        Some("Bearer xyz")
    );
    // Secrets stay out of debug output.
    let debug = format!("{j:?}");
    assert!(!debug.contains("xyz"), "{debug}");

    // TLS files.
    fs::write(dir.path().join("ca.pem"), "x").expect("write");
    fs::write(dir.path().join("c.pem"), "x").expect("write");
    fs::write(dir.path().join("k.pem"), "x").expect("write");
    let j = load_in(
        "scrape_configs:\n  - job_name: a\n    scheme: https\n    tls_config:\n      ca_file: ca.pem\n      cert_file: c.pem\n      key_file: k.pem\n      server_name: example.org\n",
    )
    .expect("load");
    assert_eq!(j.tls.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(j.tls.key_file, Some(dir.path().join("k.pem")));
    assert_eq!(j.tls.server_name.as_deref(), Some("example.org"));
    let e = load_in("scrape_configs:\n  - job_name: a\n    tls_config:\n      cert_file: c.pem\n")
        .expect_err("cert without key");
    assert!(
        e.to_string().contains("cert_file is set without key_file"),
        "{e}"
    );
}

#[test]
fn external_labels_expand_the_environment() {
    let env = |name: &str| match name {
        "DC" => Some("eu1".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    assert_eq!(expand_env("dc-$DC", &env), "dc-eu1");
    assert_eq!(expand_env("${DC}x", &env), "eu1x");
    assert_eq!(expand_env("$DCx", &env), "");
    assert_eq!(expand_env("cost $$5", &env), "cost $5");
    assert_eq!(expand_env("$UNSET-$", &env), "-$");
    assert_eq!(expand_env("a${}b", &env), "ab");
    assert_eq!(expand_env("a${DC", &env), "aDC");
    assert_eq!(expand_env("é$é", &env), "é$é");
    assert_eq!(expand_env("plain", &env), "plain");
    // Through the loader: an empty result drops the label.
    let f = load_ok(
        "global:\n  external_labels:\n    a: '$MINOS_SCFG_TEST_SURELY_UNSET'\n    b: 'x$$y'\n",
    );
    assert_eq!(
        f.global.external_labels,
        BTreeMap::from([("b".to_string(), "x$y".to_string())])
    );
}

#[test]
fn durations_and_sizes_parse_as_prometheus_does() {
    for (s, ms) in [
        ("0", 0),
        ("15s", 15_000),
        ("1m30s", 90_000),
        ("1h", 3_600_000),
        ("500ms", 500),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        ("1y", 31_536_000_000),
        ("1h0m5s", 3_605_000),
        ("0s", 0),
    ] {
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for s in [
        "", "15", "1.5s", "30m1h", "1s1s", "-1s", "1 s", "1S", "5mss", "1x", "s",
    ] {
        assert!(parse_duration(s).is_err(), "{s}");
    }
    assert!(parse_duration("99999999999999999999y").is_err());
    for (ms, s) in [
        (0, "0s"),
        (15_000, "15s"),
        (90_000, "1m30s"),
        (3_600_000, "1h"),
        (172_800_000, "2d"),
        (604_800_000, "1w"),
        (691_200_000, "8d"),
        (1_500, "1s500ms"),
    ] {
        assert_eq!(format_duration(Duration::from_millis(ms)), s);
    }
    for (s, n) in [
        ("0", 0),
        ("1024", 1024),
        ("1B", 1),
        ("1KB", 1024),
        ("10MB", 10 << 20),
        ("10MiB", 10 << 20),
        ("1.5GB", 3 << 29),
        ("1GB512MB", (1 << 30) + (512 << 20)),
    ] {
        assert_eq!(parse_size(s), Ok(n), "{s}");
    }
    for s in ["", "10mb", "MB", "10 MB", "1ZB", "-1KB", "99999999EB"] {
        assert!(parse_size(s).is_err(), "{s}");
    }
}

#[test]
fn addresses_are_checked() {
    for ok in [
        "localhost",
        "localhost:9100",
        "10.0.0.1:80",
        "my_host.example:65535",
        "[::1]:9100",
        "[fe80::1%eth0]:9100",
        "[::1]",
    ] {
        assert_eq!(check_address(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "http://x:80",
        "x:80/metrics",
        "x:",
        "x:0",
        "x:65536",
        "x:http",
        "::1",
        "::1:9100",
        "[::1",
        "[zz]:80",
        "[::1]x",
        ":80",
        "a b:80",
        "user@x:80",
        "x:+80",
    ] {
        assert!(check_address(bad).is_err(), "{bad}");
    }
}

#[test]
fn file_sd_reads_json_and_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("a.json");
    fs::write(
        &json,
        r#"[
  {"targets": ["10.0.0.1:9100", "10.0.0.2:9100"], "labels": {"env": "prod", "job": "custom"}},
  {"targets": ["10.0.0.3:9100"], "extra": "ignored"}
]"#,
    )
    .expect("write");
    let groups = read_file_sd(&json).expect("json");
    let path = json.display().to_string();
    assert_eq!(
        groups,
        vec![
            TargetGroup {
                targets: vec!["10.0.0.1:9100".into(), "10.0.0.2:9100".into()],
                labels: BTreeMap::from([
                    ("__meta_filepath".into(), path.clone()),
                    ("env".into(), "prod".into()),
                    ("job".into(), "custom".into()),
                ]),
                source: format!("file:{path}:0"),
            },
            TargetGroup {
                targets: vec!["10.0.0.3:9100".into()],
                labels: BTreeMap::from([("__meta_filepath".into(), path.clone())]),
                source: format!("file:{path}:1"),
            },
        ]
    );

    let yaml = dir.path().join("b.yml");
    fs::write(
        &yaml,
        "- targets:\n    - host1:9100\n    - host2:9100\n  labels:\n    rack: 12\n    empty: ~\n- targets: [host3:9100]\n",
    )
    .expect("write");
    let groups = read_file_sd(&yaml).expect("yaml");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].targets, vec!["host1:9100", "host2:9100"]);
    assert_eq!(groups[0].labels.get("rack").map(String::as_str), Some("12"));
    assert!(!groups[0].labels.contains_key("empty"));
    assert_eq!(groups[1].source, format!("file:{}:1", yaml.display()));

    // An empty YAML file is no groups; an empty JSON file is an error.
    let empty = dir.path().join("c.yaml");
    fs::write(&empty, "").expect("write");
    assert_eq!(read_file_sd(&empty), Ok(Vec::new()));
    let empty = dir.path().join("c.json");
    fs::write(&empty, "").expect("write");
    assert!(read_file_sd(&empty).is_err());

    // Errors.
    let bad = dir.path().join("bad.yml");
    fs::write(&bad, "- targets: [a:1]\n  lables: {x: y}\n").expect("write");
    let e = read_file_sd(&bad).expect_err("typo");
    assert!(e.starts_with("line 2: ") && e.contains("lables"), "{e}");
    fs::write(&bad, "- targets: [a:1]\n  labels: {bad-name: y}\n").expect("write");
    let e = read_file_sd(&bad).expect_err("label name");
    assert!(e.contains("\"bad-name\" is not a valid label name"), "{e}");
    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"[{"targets": ["a:1"]}, null]"#).expect("write");
    assert_eq!(read_file_sd(&bad), Err("group 1 is null".into()));
    fs::write(&bad, r#"[{"targets": ["a:1"], "labels": {"x": 1}}]"#).expect("write");
    assert!(
        read_file_sd(&bad).is_err(),
        "label values are strings in JSON"
    );
    assert!(read_file_sd(&dir.path().join("missing.json")).is_err());
    assert!(read_file_sd(&dir.path().join("x.txt")).is_err());
}

#[test]
fn file_sd_globs_expand_in_the_last_element() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sd = dir.path().join("sd");
    fs::create_dir(&sd).expect("mkdir");
    for name in [
        "a.json",
        "b.json",
        "ab.json",
        "c.yml",
        ".hidden.json",
        "x1.json",
    ] {
        fs::write(sd.join(name), "[]").expect("write");
    }
    fs::create_dir(sd.join("dir.json")).expect("mkdir");
    let names = |pattern: &str| -> Vec<String> {
        expand_file_sd(pattern, dir.path())
            .iter()
            .map(|p| {
                p.strip_prefix(&sd)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| p.display().to_string())
            })
            .collect()
    };
    assert_eq!(
        names("sd/*.json"),
        vec![".hidden.json", "a.json", "ab.json", "b.json", "x1.json"]
    );
    assert_eq!(names("sd/?.json"), vec!["a.json", "b.json"]);
    assert_eq!(names("sd/[ab].json"), vec!["a.json", "b.json"]);
    assert_eq!(
        names("sd/[^a]*.json"),
        vec![".hidden.json", "b.json", "x1.json"]
    );
    assert_eq!(names("sd/x[0-9].json"), vec!["x1.json"]);
    assert_eq!(names("sd/a*b.json"), vec!["ab.json"]);
    assert_eq!(
        names("sd/*"),
        vec![
            ".hidden.json",
            "a.json",
            "ab.json",
            "b.json",
            "c.yml",
            "x1.json"
        ]
    );
    assert_eq!(names("sd/c.yml"), vec!["c.yml"]);
    assert!(names("sd/missing.yml").is_empty());
    assert!(names("nodir/*.json").is_empty());
    assert!(names("sd/[a.json").is_empty());
    // Absolute patterns ignore the config directory.
    let abs = format!("{}/a.json", sd.display());
    assert_eq!(
        expand_file_sd(&abs, Path::new("/elsewhere")),
        vec![sd.join("a.json")]
    );
}

#[test]
fn glob_matching() {
    let m = |p: &str, n: &str| Glob::parse(p).map(|g| g.matches(n)).unwrap_or(false);
    assert!(m("*", ""));
    assert!(m("*", "abc"));
    assert!(m("a*c", "abbbc"));
    assert!(m("a*c*", "abcbc"));
    assert!(!m("a*c", "abcb"));
    assert!(m("*.json", "x.y.json"));
    assert!(m("??", "éa"));
    assert!(!m("?", ""));
    assert!(m("[a-c]x", "bx"));
    assert!(!m("[^a-c]x", "bx"));
    assert!(m(r"\*", "*"));
    assert!(!m(r"\*", "a"));
    assert!(m("[]]", "]"));
    assert!(m("*a*a*a*a*b", "aaaaaaaaaaaaaaab"));
    assert!(!m("*a*a*a*a*b", "aaaaaaaaaaaaaaaa"));
    assert!(Glob::parse("[abc").is_err());
    assert!(Glob::parse("[z-a]").is_err());
}

#[test]
fn targets_get_prometheus_labels_and_urls() {
    let j = job(
        "scrape_configs:\n  - job_name: node\n    scrape_interval: 30s\n    scrape_timeout: 5s\n    static_configs:\n      - targets: ['h1:9100', 'h2']\n        labels: {env: prod}\n",
    );
    let (targets, left_out) = build_targets(&j, &j.static_configs);
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(
        targets,
        vec![
            Target {
                labels: labels(&[("env", "prod"), ("instance", "h1:9100"), ("job", "node")]),
                url: "http://h1:9100/metrics".into(),
                interval: secs(30),
                timeout: secs(5),
            },
            Target {
                // Prometheus 3: no default port is added.
                labels: labels(&[("env", "prod"), ("instance", "h2"), ("job", "node")]),
                url: "http://h2/metrics".into(),
                interval: secs(30),
                timeout: secs(5),
            },
        ]
    );
}

#[test]
fn relabeling_drops_and_rewrites_targets() {
    let j = job(r#"scrape_configs:
  - job_name: node
    relabel_configs:
      - source_labels: [__address__]
        regex: 'skip-.*'
        action: drop
      - source_labels: [__address__]
        regex: '(.*):9100'
        target_label: __address__
        replacement: '${1}:9200'
      - source_labels: [__meta_rack]
        target_label: rack
"#);
    let groups = [group(
        &["keep:9100", "skip-me:9100", "other:80"],
        &[("__meta_rack", "r1")],
    )];
    let (targets, left_out) = build_targets(&j, &groups);
    assert_eq!(
        left_out,
        vec!["static/0: target \"skip-me:9100\": dropped by relabel_configs"]
    );
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0].url, "http://keep:9200/metrics");
    assert_eq!(
        targets[0].labels,
        labels(&[("instance", "keep:9200"), ("job", "node"), ("rack", "r1")]),
        "instance defaults to the rewritten address; meta labels are gone"
    );
    assert_eq!(targets[1].url, "http://other:80/metrics");
}

#[test]
fn params_and_param_labels_make_the_query() {
    let j = job(r#"scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx, second]
      other: ['a b&c']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: blackbox:9115
      - source_labels: [__meta_module]
        target_label: __param_module
"#);
    let groups = [
        group(&["https://example.org"], &[]),
        group(&["http://b.example/x?y=1"], &[("__meta_module", "icmp")]),
    ];
    let (targets, left_out) = build_targets(&j, &groups);
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(
        targets[0].url,
        "http://blackbox:9115/probe?module=http_2xx&module=second&other=a+b%26c&target=https%3A%2F%2Fexample.org"
    );
    assert_eq!(
        targets[0].labels,
        labels(&[("instance", "https://example.org"), ("job", "blackbox")])
    );
    assert_eq!(
        targets[1].url,
        "http://blackbox:9115/probe?module=icmp&module=second&other=a+b%26c&target=http%3A%2F%2Fb.example%2Fx%3Fy%3D1"
    );
}

#[test]
fn internal_labels_override_the_job_settings() {
    let j = job(r#"scrape_configs:
  - job_name: node
    scrape_interval: 1m
    relabel_configs:
      - source_labels: [__meta_fast]
        regex: 'yes'
        target_label: __scrape_interval__
        replacement: 15s
      - source_labels: [__meta_fast]
        regex: 'yes'
        target_label: __scrape_timeout__
        replacement: 5s
"#);
    let groups = [
        group(&["fast:1"], &[("__meta_fast", "yes")]),
        group(&["slow:1"], &[]),
        group(
            &["tls:1"],
            &[
                ("__scheme__", "https"),
                ("__metrics_path__", "/m e"),
                ("job", "other"),
            ],
        ),
    ];
    let (targets, left_out) = build_targets(&j, &groups);
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(
        (targets[0].interval, targets[0].timeout),
        (secs(15), secs(5))
    );
    assert_eq!(
        (targets[1].interval, targets[1].timeout),
        (secs(60), secs(10))
    );
    assert_eq!(targets[2].url, "https://tls:1/m%20e");
    assert_eq!(
        targets[2].labels,
        labels(&[("instance", "tls:1"), ("job", "other")]),
        "a group's job label wins over job_name"
    );
}

#[test]
fn invalid_targets_are_reported() {
    let j = job(r#"scrape_configs:
  - job_name: node
    scrape_interval: 10s
    relabel_configs:
      - source_labels: [__meta_interval]
        regex: '(.+)'
        target_label: __scrape_interval__
      - source_labels: [__meta_scheme]
        regex: '(.+)'
        target_label: __scheme__
      - source_labels: [__meta_noaddr]
        regex: 'yes'
        target_label: __address__
        replacement: ''
"#);
    let groups = [
        group(&["ok:1", "bad:port", "http://x:1/"], &[]),
        group(&["a:1"], &[("__meta_interval", "1s")]),
        group(&["b:1"], &[("__meta_interval", "soon")]),
        group(&["c:1"], &[("__meta_scheme", "ftp")]),
        group(&["d:1"], &[("__meta_noaddr", "yes")]),
        group(&["ok:1"], &[]),
    ];
    let (targets, left_out) = build_targets(&j, &groups);
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].url, "http://ok:1/metrics");
    assert_eq!(left_out.len(), 7, "{left_out:#?}");
    let expect = [
        "target \"bad:port\": \"bad:port\" is not a valid host:port",
        "target \"http://x:1/\": \"http://x:1/\" is not a valid host:port",
        "target \"a:1\": __scrape_timeout__ 10s is longer than __scrape_interval__ 1s",
        "target \"b:1\": __scrape_interval__: not a valid duration string",
        "target \"c:1\": __scheme__ \"ftp\" is not http or https",
        "target \"d:1\": no __address__ after relabeling",
    ];
    for (got, want) in left_out.iter().zip(expect) {
        assert!(
            got.starts_with("static/0: ") && got.contains(want),
            "{got} / {want}"
        );
    }
    assert!(
        left_out[6].contains("the same as an earlier target"),
        "{left_out:?}"
    );
}

#[test]
fn target_limit_fails_the_whole_job() {
    let j = job(
        "scrape_configs:\n  - job_name: a\n    target_limit: 2\n    static_configs:\n      - targets: [a:1, b:1, c:1]\n",
    );
    let (targets, left_out) = build_targets(&j, &j.static_configs);
    assert!(targets.is_empty());
    assert_eq!(
        left_out,
        vec!["target_limit exceeded: 3 targets, at most 2: none is scraped"]
    );
    let (targets, _) = build_targets(&j, &j.static_configs[..0]);
    assert!(targets.is_empty());
}

#[test]
fn file_groups_flow_through_build_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("nodes.json"),
        r#"[{"targets": ["n1:9100"], "labels": {"dc": "eu"}}]"#,
    )
    .expect("write");
    let f = load(
        "scrape_configs:\n  - job_name: files\n    file_sd_configs:\n      - files: ['*.json']\n    relabel_configs:\n      - source_labels: [__meta_filepath]\n        regex: '.*/([^/]*)\\.json'\n        target_label: file\n",
        dir.path(),
    )
    .expect("load");
    let cfg = &f.scrape_configs[0];
    let mut groups = Vec::new();
    for sd in &cfg.file_sd_configs {
        for pattern in &sd.files {
            for path in expand_file_sd(pattern, dir.path()) {
                groups.extend(read_file_sd(&path).expect("read"));
            }
        }
    }
    let (targets, left_out) = build_targets(cfg, &groups);
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(
        targets[0].labels,
        labels(&[
            ("dc", "eu"),
            ("file", "nodes"),
            ("instance", "n1:9100"),
            ("job", "files")
        ])
    );
}

#[test]
fn anchors_and_merge_keys_work() {
    let f = load_ok(
        "x-defaults: &defaults\n  scrape_interval: 30s\n  scrape_timeout: 20s\nscrape_configs:\n  - <<: *defaults\n    job_name: a\n  - <<: *defaults\n    job_name: b\n    scrape_timeout: 5s\n",
    );
    let got: Vec<_> = f
        .scrape_configs
        .iter()
        .map(|j| (j.job_name.as_str(), j.scrape_interval, j.scrape_timeout))
        .collect();
    assert_eq!(
        got,
        vec![("a", secs(30), secs(20)), ("b", secs(30), secs(5))]
    );
    let e = load_err(
        "x: &t\n  scrape_interval: 1s\n  scrape_timeout: 2s\nscrape_configs:\n  - job_name: a\n  - <<: *t\n    job_name: b\n",
    );
    assert!(e.message.contains("longer than"), "{e}");
    assert!(e.line.is_some(), "{e}");
}
