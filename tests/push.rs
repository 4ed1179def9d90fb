//! Pushed data: the text import, the Pushgateway-compatible endpoint compared with the
//! real Pushgateway, and server-side counters under concurrency and `kill -9`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Server, client, json, urlencode};

fn post(url: &str, method: reqwest::Method, body: &str) -> (u16, String) {
    let r = client()
        .request(method, url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body.to_string())
        .send()
        .expect("request");
    let code = r.status().as_u16();
    (code, r.text().unwrap_or_default())
}

fn query(s: &Server, q: &str) -> serde_json::Value {
    let (code, body) = s.get(&format!("/api/v1/query?query={}", urlencode(q)));
    assert_eq!(code, 200, "{body}");
    json(&body)["data"]["result"].clone()
}

/// `{labels} -> value` of an instant query's result.
fn by_labels(result: &serde_json::Value) -> BTreeMap<String, String> {
    result
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["metric"].to_string(),
                r["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn the_text_import_stores_good_lines_and_names_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), &[]);
    let now = crate::util::now_ms();
    let body = format!(
        "# HELP orders_total Orders.\n# TYPE orders_total counter\n\
         orders_total{{shop=\"eu\",note=\"a \\\"quoted\\\" \\\\ value\"}} 3\n\
         stock{{sku=\"A1\"}} 42 {now}\n\
         temp NaN\n\
         broken{{ 1\n\
         job:req:rate5m 2.5\n"
    );
    let (code, text) = post(
        &s.url("/api/v1/import/prometheus?extra_label=team=shop&extra_label=env=prod"),
        reqwest::Method::POST,
        &body,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("stored 4 samples"), "{text}");
    assert!(text.contains("line 6"), "{text}");
    let r = by_labels(&query(&s, r#"{team="shop",env="prod"}"#));
    assert_eq!(r.len(), 4, "{r:?}");
    let orders = query(&s, "orders_total");
    assert_eq!(orders[0]["metric"]["note"], r#"a "quoted" \ value"#);
    assert_eq!(orders[0]["value"][1], "3");
    assert_eq!(query(&s, "stock")[0]["value"][1], "42");
    assert_eq!(query(&s, "job:req:rate5m")[0]["value"][1], "2.5");
    // A clean body is 204; a bad extra label or compressed body is refused.
    let (code, _) = post(
        &s.url("/api/v1/import/prometheus"),
        reqwest::Method::POST,
        "ok_metric 1\n",
    );
    assert_eq!(code, 204);
    let (code, text) = post(
        &s.url("/api/v1/import/prometheus?extra_label=1x=y"),
        reqwest::Method::POST,
        "a 1\n",
    );
    assert_eq!(code, 400, "{text}");
    let r = client()
        .post(s.url("/api/v1/import/prometheus"))
        .header("Content-Encoding", "br")
        .body("a 1\n")
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
}

struct Pushgateway(Child, String);

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pushgateway() -> Pushgateway {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus-pushgateway")
        .arg(format!("--web.listen-address={addr}"))
        // Debian's build persists to /var/lib by default: keep this one in memory.
        .arg("--persistence.file=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-pushgateway (apt-get install prometheus-pushgateway)");
    let pg = Pushgateway(child, format!("http://{addr}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while client().get(format!("{}/-/ready", pg.1)).send().is_err() {
        assert!(Instant::now() < deadline, "pushgateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    pg
}

/// The series a Prometheus scraping the Pushgateway with `honor_labels: true` stores:
/// the pushed groups' series, empty labels dropped, as `{labels} -> value`.
fn pushgateway_series(pg: &Pushgateway) -> BTreeMap<String, f64> {
    let body = client()
        .get(format!("{}/metrics", pg.1))
        .send()
        .expect("scrape")
        .text()
        .expect("body");
    let parsed = collector::textimport::parse(body.as_bytes(), None, &[]);
    parsed
        .samples
        .into_iter()
        .filter(|s| {
            let name = &s.labels[0].1;
            !(name.starts_with("go_")
                || name.starts_with("process_")
                || name.starts_with("pushgateway_")
                || name.starts_with("promhttp_"))
        })
        .map(|s| (canonical(&s.labels), s.value))
        .collect()
}

fn canonical(labels: &[(String, String)]) -> String {
    let m: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&m).unwrap_or_default()
}

/// The same as stored by Minos: the last value of every series of the pushed jobs.
fn minos_series(s: &Server) -> BTreeMap<String, f64> {
    query(s, r#"{job=~"j.*|job/x"}"#)
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let labels: Vec<(String, String)> = r["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let v: f64 = r["value"][1]
                .as_str()
                .unwrap_or("nan")
                .parse()
                .unwrap_or(f64::NAN);
            (canonical(&labels), v)
        })
        .collect()
}

#[test]
fn pushgateway_pushes_give_the_series_the_pushgateway_gives() {
    let pg = pushgateway();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), &[]);
    use reqwest::Method;
    let steps: Vec<(Method, &str, &str)> = vec![
        (
            Method::PUT,
            "/metrics/job/j1",
            "# TYPE a gauge\na 1\nb{x=\"1\"} 2\n",
        ),
        (
            Method::POST,
            "/metrics/job/j1/inst/i1",
            "# TYPE rq histogram\nrq_bucket{le=\"1\"} 3\nrq_bucket{le=\"+Inf\"} 4\nrq_sum 2\nrq_count 4\nc{job=\"other\",inst=\"zz\"} 5\n",
        ),
        (Method::POST, "/metrics/job/j1", "a 10\n"),
        (Method::PUT, "/metrics/job/j2", "gone 1\n"),
        (Method::DELETE, "/metrics/job/j2", ""),
        (
            Method::PUT,
            "/metrics/job@base64/am9iL3g=/path@base64/L3Zhci90bXA",
            "f 1\n",
        ),
        (Method::PUT, "/metrics/job/j4/instance/", "f 2\n"),
        (Method::PUT, "/metrics/job/j5/instance/web-1", "f 3\n"),
        (Method::PUT, "/metrics/job/j3", "e 7 1700000000000\n"),
        (Method::PUT, "/metrics/job/j6", "g 1\ng 2\n"),
        (Method::POST, "/metrics/job/j1/inst/i1", "rq_sum 3\n"),
    ];
    for (method, path, body) in &steps {
        let (a, ta) = post(&format!("{}{path}", pg.1), method.clone(), body);
        let (b, tb) = post(&s.url(path), method.clone(), body);
        // The same outcome class: accepted or refused.
        assert_eq!(
            a / 100,
            b / 100,
            "{method} {path}: pushgateway {a} {ta}; minos {b} {tb}"
        );
    }
    // The delimited protobuf format Go and Java clients push by default.
    let proto = {
        use collector::protofmt::{Bucket, Histogram, LabelPair, Metric, MetricFamily, Value};
        use prost::Message;
        let fams = [
            MetricFamily {
                name: Some("jproto_runs_total".into()),
                help: Some("Runs.".into()),
                r#type: Some(0),
                metric: vec![Metric {
                    label: vec![LabelPair {
                        name: Some("kind".into()),
                        value: Some("full".into()),
                    }],
                    counter: Some(Value { value: Some(3.0) }),
                    ..Default::default()
                }],
            },
            MetricFamily {
                name: Some("jproto_seconds".into()),
                help: Some("Durations.".into()),
                r#type: Some(4),
                metric: vec![Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(4),
                        sample_sum: Some(2.5),
                        bucket: vec![
                            Bucket {
                                cumulative_count: Some(1),
                                upper_bound: Some(0.5),
                                cumulative_count_float: None,
                            },
                            Bucket {
                                cumulative_count: Some(3),
                                upper_bound: Some(1e6),
                                cumulative_count_float: None,
                            },
                        ],
                        sample_count_float: None,
                    }),
                    ..Default::default()
                }],
            },
        ];
        let mut body = Vec::new();
        for f in &fams {
            f.encode_length_delimited(&mut body).expect("encode");
        }
        body
    };
    for url in [
        format!("{}/metrics/job/jproto", pg.1),
        s.url("/metrics/job/jproto"),
    ] {
        let r = client()
            .put(url)
            .header(
                "Content-Type",
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            )
            .body(proto.clone())
            .send()
            .expect("push");
        assert_eq!(r.status().as_u16(), 200);
    }
    let want = pushgateway_series(&pg);
    let got = minos_series(&s);
    assert!(want.len() >= 12, "{want:?}");
    let keys = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(&want), "the same series");
    for (k, v) in &want {
        if k.contains("push_time_seconds") || k.contains("push_failure_time_seconds") {
            // Times of the pushes: both set (or both zero).
            assert_eq!(*v == 0.0, got[k] == 0.0, "{k}: {v} vs {}", got[k]);
        } else {
            assert_eq!(got[k], *v, "{k}");
        }
    }
}

#[test]
fn pushgateway_groups_with_a_ttl_go_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        &dir.path().join("data"),
        &["--push.refresh-interval", "200ms"],
    );
    let (code, t) = post(
        &s.url("/metrics/job/nightly?ttl=1s"),
        reqwest::Method::PUT,
        "last_success 1\n",
    );
    assert_eq!(code, 200, "{t}");
    post(
        &s.url("/metrics/job/forever"),
        reqwest::Method::PUT,
        "kept 1\n",
    );
    assert_eq!(query(&s, "last_success").as_array().map(Vec::len), Some(1));
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(
        query(&s, "last_success").as_array().map(Vec::len),
        Some(0),
        "stale once the TTL passed"
    );
    assert_eq!(query(&s, "kept").as_array().map(Vec::len), Some(1));
    // Groups survive a restart.
    let addr = s.addr.clone();
    s.stop();
    let s = Server::start_on(
        &dir.path().join("data"),
        &addr,
        &["--push.refresh-interval", "200ms"],
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(query(&s, "kept").as_array().map(Vec::len), Some(1));
}

fn push_counter(s: &Server, token: &str, body: &str) -> Result<u16, String> {
    client()
        .post(s.url("/api/ops/v1/push"))
        .bearer_auth(token)
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[test]
fn concurrent_increments_sum_exactly_and_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]);
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .expect("token")
        .trim()
        .to_string();
    // Exactly: 8 clients × 40 increments, JSON and text forms mixed.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (url, admin) = (s.url(""), admin.clone());
            std::thread::spawn(move || {
                let c = client();
                for n in 0..40 {
                    let body = if (i + n) % 2 == 0 {
                        r#"[{"metric":"orders_total","labels":{"shop":"eu"},"inc":1}]"#.to_string()
                    } else {
                        "orders_total{shop=\"eu\"} +1\n".to_string()
                    };
                    let r = c
                        .post(format!("{url}/api/ops/v1/push"))
                        .bearer_auth(&admin)
                        .body(body)
                        .send()
                        .expect("push");
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client");
    }
    assert_eq!(
        query(&s, r#"orders_total{shop="eu"}"#)[0]["value"][1],
        "320"
    );
    // Gauges are set; kinds are kept; bad requests change nothing.
    assert_eq!(push_counter(&s, &admin, "stock{sku=\"A1\"} 42\n"), Ok(200));
    assert_eq!(push_counter(&s, &admin, "stock{sku=\"A1\"} +1\n"), Ok(400));
    assert_eq!(
        push_counter(&s, &admin, "orders_total{shop=\"eu\"} 5\n"),
        Ok(400)
    );
    assert_eq!(
        push_counter(&s, &admin, "orders_total{shop=\"eu\"} +-1\n"),
        Ok(400)
    );
    assert_eq!(push_counter(&s, "nope", "a +1\n"), Ok(401));
    assert_eq!(
        query(&s, r#"orders_total{shop="eu"}"#)[0]["value"][1],
        "320"
    );
    assert_eq!(query(&s, "stock")[0]["value"][1], "42");

    // Under kill -9: every acknowledged increment is counted, once.
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, admin, acked, sent) = (s.url(""), admin.clone(), acked.clone(), sent.clone());
            std::thread::spawn(move || {
                let c = client();
                loop {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let r = c
                        .post(format!("{url}/api/ops/v1/push"))
                        .bearer_auth(&admin)
                        .body("crash_total +1\n")
                        .timeout(Duration::from_secs(5))
                        .send();
                    match r {
                        Ok(r) if r.status().as_u16() == 200 => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let addr = s.addr.clone();
    s.kill9();
    for h in handles {
        h.join().expect("client");
    }
    let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    assert!(acked > 10, "only {acked} increments acknowledged");
    let s = Server::start_on(&data, &addr, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let value = loop {
        let r = query(&s, "crash_total");
        if let Some(v) = r[0]["value"][1].as_str() {
            break v.parse::<u64>().expect("integer");
        }
        assert!(Instant::now() < deadline, "crash_total not back: {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        (acked..=sent).contains(&value),
        "counted {value}; acknowledged {acked}, sent {sent}"
    );
    assert_eq!(
        query(&s, r#"orders_total{shop="eu"}"#)[0]["value"][1],
        "320"
    );
}

#[test]
fn influx_line_protocol_maps_to_measurement_field_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), &[]);
    let now_s = crate::util::now_ms() / 1000;
    let body = format!(
        "cpu,host=a,region=eu usage_idle=91.5,usage_user=3i {now_s}000000000\n\
         # a comment\n\
         disk,host=a,path=/var\\ data free=12u,ok=true,label=\"x\"\n\
         bad line here\n"
    );
    let (code, text) = post(&s.url("/write?db=telegraf"), reqwest::Method::POST, &body);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("line 4"), "{text}");
    let r = query(&s, r#"cpu_usage_idle{host="a",region="eu",db="telegraf"}"#);
    assert_eq!(r[0]["value"][1], "91.5", "{r}");
    assert_eq!(query(&s, "cpu_usage_user")[0]["value"][1], "3");
    assert_eq!(
        query(&s, r#"disk_free{path="/var data"}"#)[0]["value"][1],
        "12"
    );
    assert_eq!(query(&s, "disk_ok")[0]["value"][1], "1");
    assert_eq!(query(&s, "disk_label").as_array().map(Vec::len), Some(0));
    let (code, text) = post(
        &s.url("/api/v2/write?bucket=b2&precision=s"),
        reqwest::Method::POST,
        &format!("mem used=5 {now_s}\n"),
    );
    assert_eq!(code, 204, "{text}");
    assert_eq!(query(&s, r#"mem_used{db="b2"}"#)[0]["value"][1], "5");
    let (code, _) = post(
        &s.url("/write?precision=weeks"),
        reqwest::Method::POST,
        "m f=1\n",
    );
    assert_eq!(code, 400);
}

#[test]
fn a_jobs_label_explosion_is_capped_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        &dir.path().join("data"),
        &["--push.max-series-per-job", "3"],
    );
    let body: String = (0..5)
        .map(|i| format!("orders_total{{job=\"shop\",order_id=\"{i}\"}} 1\n"))
        .collect();
    let (code, text) = post(
        &s.url("/api/v1/import/prometheus"),
        reqwest::Method::POST,
        &body,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("--push.max-series-per-job"), "{text}");
    assert!(text.contains("\"shop\""), "{text}");
    assert_eq!(
        query(&s, r#"orders_total{job="shop"}"#)
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    // Other jobs still push; the known series of the capped job still update.
    let (code, text) = post(
        &s.url("/api/v1/import/prometheus"),
        reqwest::Method::POST,
        "ok{job=\"billing\"} 1\norders_total{job=\"shop\",order_id=\"0\"} 2\n",
    );
    assert_eq!(code, 204, "{text}");
    // The Pushgateway path refuses the whole push.
    let (code, text) = post(
        &s.url("/metrics/job/shop"),
        reqwest::Method::PUT,
        "new_series 1\n",
    );
    assert_eq!(code, 429, "{text}");
    let (code, body) = s.get("/api/v1/status/push");
    assert_eq!(code, 200);
    let v = json(&body);
    let top = &v["data"]["seriesCountByJob"][0];
    assert_eq!(top["job"], "shop", "{v}");
    assert_eq!(top["series"], 3, "{v}");
    assert!(top["refusedSeriesTotal"].as_u64().unwrap_or(0) >= 2, "{v}");
    assert_eq!(v["data"]["limits"]["maxSeriesPerJob"], 3);
}
