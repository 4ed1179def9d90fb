//! Grafana's Prometheus data source, replayed: the requests it sends (methods, form
//! bodies, parameter encodings) and the shapes of the answers it reads, against data
//! written with remote_write.

use collector::remote_write::proto;
use serde_json::{Value, json};

use crate::util::{Server, json, now_ms, post_form, series, urlencode};

const STEP_MS: i64 = 15_000;

/// A server holding `up` for two targets and a counter that grows by 1.5 a step, over
/// the last 30 minutes at 15 s intervals. Returns the last sample's time.
fn server_with_data() -> (tempfile::TempDir, Server, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), &[]);
    let last = (now_ms() - 60_000) / STEP_MS * STEP_MS;
    let times: Vec<i64> = (0..120).map(|i| last - (119 - i) * STEP_MS).collect();
    let up_a: Vec<(i64, f64)> = times.iter().map(|&t| (t, 1.0)).collect();
    let up_b: Vec<(i64, f64)> = times.iter().map(|&t| (t, 0.0)).collect();
    let counter: Vec<(i64, f64)> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, i as f64 * 1.5))
        .collect();
    let req = proto::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "up"), ("job", "api"), ("instance", "a:9100")],
                &up_a,
            ),
            series(
                &[("__name__", "up"), ("job", "db"), ("instance", "b:9100")],
                &up_b,
            ),
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "200"),
                ],
                &counter,
            ),
        ],
    };
    let (st, body) = s.write(&req);
    assert_eq!(st, 204, "{body}");
    (dir, s, last)
}

fn success(st: u16, body: &str) -> Value {
    assert_eq!(st, 200, "{body}");
    let v = json(body);
    assert_eq!(v["status"], "success", "{body}");
    v
}

/// `[<float seconds>, "<value>"]`, as Prometheus encodes a point.
fn point(p: &Value) -> (f64, f64) {
    let t = p[0].as_f64().unwrap_or_else(|| panic!("timestamp in {p}"));
    let v = p[1]
        .as_str()
        .unwrap_or_else(|| panic!("string value in {p}"))
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("value in {p}: {e}"));
    (t, v)
}

#[test]
fn health_check_is_one_plus_one_at_time_four() {
    let (_d, s, _) = server_with_data();
    // GET, as the backend's health check sends it, and POST, the data source's default.
    let (st, body) = s.get("/api/v1/query?query=1%2B1&time=4");
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#
    );
    let (st, body) = post_form(&s, "/api/v1/query", &[("query", "1+1"), ("time", "4")]);
    let v = success(st, &body);
    assert_eq!(
        v["data"],
        json!({"resultType": "scalar", "result": [4, "2"]})
    );
}

#[test]
fn buildinfo_identifies_a_prometheus_flavour() {
    let (_d, s, _) = server_with_data();
    let (st, body) = s.get("/api/v1/status/buildinfo");
    let v = success(st, &body);
    let d = &v["data"];
    for k in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(d[k].is_string(), "{k} in {body}");
    }
    // Grafana takes a non-empty `features` for Mimir.
    assert!(d.get("features").is_none(), "{body}");
}

#[test]
fn metric_browser_calls() {
    let (_d, s, last) = server_with_data();
    let start = ((last - 3_600_000) / 1000).to_string();
    let end = (last / 1000 + 60).to_string();

    // Label names: POST with a form body, match[] optional.
    let (st, body) = post_form(
        &s,
        "/api/v1/labels",
        &[
            ("start", &start),
            ("end", &end),
            ("match[]", r#"{__name__="up"}"#),
        ],
    );
    let v = success(st, &body);
    assert_eq!(v["data"], json!(["__name__", "instance", "job"]));
    let (st, body) = post_form(&s, "/api/v1/labels", &[("start", &start), ("end", &end)]);
    let v = success(st, &body);
    assert_eq!(v["data"], json!(["__name__", "code", "instance", "job"]));

    // The metric list.
    let (st, body) = s.get(&format!(
        "/api/v1/label/__name__/values?start={start}&end={end}"
    ));
    let v = success(st, &body);
    assert_eq!(v["data"], json!(["http_requests_total", "up"]));

    // Label values with a selector; GET only, as in Prometheus.
    let (st, body) = s.get(&format!(
        "/api/v1/label/job/values?match[]={}&start={start}&end={end}",
        urlencode(r#"up{instance=~".+"}"#)
    ));
    let v = success(st, &body);
    assert_eq!(v["data"], json!(["api", "db"]));
    let (st, _) = post_form(&s, "/api/v1/label/job/values", &[]);
    assert_eq!(st, 405, "Grafana falls back to GET on 405");

    // Series, POSTed with several match[] and Grafana's default limit.
    let (st, body) = post_form(
        &s,
        "/api/v1/series",
        &[
            ("match[]", r#"up{job="api"}"#),
            ("match[]", "http_requests_total"),
            ("start", &start),
            ("end", &end),
            ("limit", "40000"),
        ],
    );
    let v = success(st, &body);
    assert_eq!(
        v["data"],
        json!([
            {"__name__": "http_requests_total", "code": "200", "job": "api"},
            {"__name__": "up", "instance": "a:9100", "job": "api"},
        ])
    );

    // Metadata: GET only, with or without parameters.
    let (st, body) = s.get("/api/v1/metadata");
    assert_eq!(success(st, &body)["data"], json!({}));
    let (st, body) = s.get("/api/v1/metadata?limit=10&metric=up");
    assert_eq!(success(st, &body)["data"], json!({}));
    assert_eq!(s.post("/api/v1/metadata").0, 405);
}

#[test]
fn panel_range_query_posted_as_a_form() {
    let (_d, s, last) = server_with_data();
    let step = 60_000;
    let end = last / step * step;
    let start = end - 20 * step;
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let (st, body) = post_form(
        &s,
        "/api/v1/query_range",
        &[
            ("query", "rate(http_requests_total[5m])"),
            ("start", &secs(start)),
            ("end", &secs(end)),
            ("step", "60"),
            ("timeout", "30s"),
        ],
    );
    let v = success(st, &body);
    assert_eq!(v["data"]["resultType"], "matrix", "{body}");
    let result = v["data"]["result"].as_array().expect("result");
    assert_eq!(result.len(), 1, "{body}");
    // The metric name is dropped by rate().
    assert_eq!(result[0]["metric"], json!({"code": "200", "job": "api"}));
    let values = result[0]["values"].as_array().expect("values");
    assert_eq!(values.len(), 21, "{body}");
    for (i, p) in values.iter().enumerate() {
        let (t, v) = point(p);
        assert_eq!(t, (start + i as i64 * step) as f64 / 1000.0);
        // 1.5 per 15 s.
        assert!((v - 0.1).abs() < 1e-9, "rate {v} at {t}");
    }

    // The same with GET and fractional seconds; values stay strings.
    let (st, body) = s.get(&format!(
        "/api/v1/query_range?query=up&start={}&end={}&step=30.5",
        secs(start) + ".25",
        secs(end)
    ));
    let v = success(st, &body);
    let result = v["data"]["result"].as_array().expect("result");
    assert_eq!(result.len(), 2);
    assert_eq!(result[0]["metric"]["job"], "api");
    let first = point(&result[0]["values"][0]);
    assert_eq!(first.0, (start as f64 + 250.0) / 1000.0);
    assert_eq!(result[0]["values"][0][1], "1");
    assert_eq!(result[1]["values"][0][1], "0");
}

#[test]
fn instant_queries_and_variables() {
    let (_d, s, last) = server_with_data();
    let t = format!("{}", last as f64 / 1000.0);
    // `query_result()` and instant panels.
    let (st, body) = post_form(&s, "/api/v1/query", &[("query", "up"), ("time", &t)]);
    let v = success(st, &body);
    assert_eq!(v["data"]["resultType"], "vector");
    let r = v["data"]["result"].as_array().expect("result");
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0]["metric"],
        json!({"__name__": "up", "instance": "a:9100", "job": "api"})
    );
    assert_eq!(point(&r[0]["value"]), (last as f64 / 1000.0, 1.0));
    // Special values are strings.
    let (st, body) = s.get(&format!(
        "/api/v1/query?query={}&time={t}",
        urlencode("up / 0")
    ));
    let v = success(st, &body);
    let vals: Vec<&str> = v["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|x| x["value"][1].as_str().expect("value"))
        .collect();
    assert_eq!(vals, ["+Inf", "NaN"]);
    // A string result.
    let (st, body) = s.get("/api/v1/query?query=%22hello%22&time=10.5");
    let v = success(st, &body);
    assert_eq!(
        v["data"],
        json!({"resultType": "string", "result": [10.5, "hello"]})
    );
    // RFC 3339 times.
    let (st, body) = s.get("/api/v1/query?query=2*3&time=2023-11-14T22:13:20.5Z");
    let v = success(st, &body);
    assert_eq!(v["data"]["result"], json!([1_700_000_000.5, "6"]));
}

#[test]
fn exemplars_rules_and_other_probes() {
    let (_d, s, last) = server_with_data();
    // The exemplar probe sends milliseconds.
    let (st, body) = s.get(&format!(
        "/api/v1/query_exemplars?query=test&start={}&end={}",
        last - 3_600_000,
        last
    ));
    assert_eq!(success(st, &body)["data"], json!([]));
    let (st, body) = post_form(
        &s,
        "/api/v1/query_exemplars",
        &[
            ("query", "http_requests_total"),
            ("start", "1"),
            ("end", "2"),
        ],
    );
    assert_eq!(success(st, &body)["data"], json!([]));
    // Only the built-in group (HostLost), in the shape Grafana reads.
    let (st, body) = s.get("/api/v1/rules");
    let rules = success(st, &body)["data"]["groups"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules[0]["name"], "minos");
    assert_eq!(rules[0]["rules"][0]["name"], "HostLost");
    assert_eq!(rules[0]["rules"][0]["type"], "alerting");
    assert_eq!(rules[0]["rules"][0]["alerts"], json!([]));
    let (st, body) = s.get("/api/v1/alerts");
    assert_eq!(success(st, &body)["data"], json!({"alerts": []}));
    let (st, body) = s.get("/api/v1/targets");
    assert_eq!(
        success(st, &body)["data"],
        json!({"activeTargets": [], "droppedTargets": []})
    );
    let (st, body) = post_form(&s, "/api/v1/format_query", &[("query", "sum(up)by(job)")]);
    assert_eq!(success(st, &body)["data"], "sum by (job) (up)");
    for path in ["runtimeinfo", "flags", "config"] {
        let (st, body) = s.get(&format!("/api/v1/status/{path}"));
        success(st, &body);
    }
    let (st, body) = s.get("/api/v1/status/runtimeinfo");
    assert_eq!(success(st, &body)["data"]["storageRetention"], "15d");
    let (st, body) = s.get("/api/v1/status/tsdb?limit=1");
    let v = success(st, &body);
    let d = &v["data"];
    assert_eq!(d["headStats"]["numSeries"], 3, "{body}");
    // 120 samples a series make one full chunk each; the head spans first to last.
    assert_eq!(d["headStats"]["chunkCount"], 3, "{body}");
    assert_eq!(d["headStats"]["minTime"], last - 119 * STEP_MS, "{body}");
    assert_eq!(d["headStats"]["maxTime"], last, "{body}");
    assert_eq!(
        d["seriesCountByMetricName"],
        json!([{"name": "up", "value": 2}])
    );
    assert_eq!(
        d["seriesCountByLabelValuePair"],
        json!([{"name": "__name__=up", "value": 2}])
    );
    assert_eq!(s.get("/api/v1/status/tsdb?limit=0").0, 400);
    // Once everything is in blocks the head is empty, reported as Prometheus does;
    // the cardinality still covers the blocks.
    assert_eq!(s.post("/internal/force_flush").0, 200);
    let (st, body) = s.get("/api/v1/status/tsdb");
    let v = success(st, &body);
    let h = &v["data"]["headStats"];
    assert_eq!(h["chunkCount"], 0, "{body}");
    assert_eq!(h["minTime"], i64::MAX, "{body}");
    assert_eq!(h["maxTime"], i64::MIN, "{body}");
    assert_eq!(h["numSeries"], 3, "{body}");
}
