//! PromQL over HTTP when things go wrong: bad queries and parameters get Prometheus'
//! error JSON, type and status with a useful message, never a 500 or a hang; query
//! limits apply; a query whose client hangs up stops; and `minos query` prints tables,
//! JSON, and errors with exit code 2.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use collector::remote_write::proto;

use crate::util::{Server, json, minos, now_ms, post_form, series, urlencode};

/// A range query that needs no data and runs for minutes in a debug build:
/// `count_values` turns a 30-day subquery at 1 s into 1,000 series, and
/// `quantile_over_time` walks each series' 30-day window at each of 3,000 steps,
/// checking the query's deadline and cancel flag before each series. Should the engine
/// ever answer it within seconds, the tests using it fail (it ends before its client
/// leaves): make it heavier.
const SLOW_QUERY: &str =
    r#"quantile_over_time(0.5, (count_values("k", vector(time() % 1000)))[30d:1s])"#;

const RUNNING: &str = r#"minos_queries{state="running"}"#;
const WAITING: &str = r#"minos_queries{state="waiting"}"#;

/// Sends [`SLOW_QUERY`] as a form POST on a connection of its own and returns the
/// connection unread: the caller decides when the client goes away (by dropping it).
fn start_slow_query(s: &Server) -> TcpStream {
    let body = format!(
        "query={}&start=1700000000&end=1700600000&step=200",
        urlencode(SLOW_QUERY)
    );
    let mut conn = TcpStream::connect(&s.addr).expect("connect");
    let req = format!(
        "POST /api/v1/query_range HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        s.addr,
        body.len()
    );
    conn.write_all(req.as_bytes()).expect("send query");
    conn
}

/// Polls `cond` until it holds; fails naming `what` after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn server_with(extra: &[&str]) -> (tempfile::TempDir, Server, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), extra);
    let last = (now_ms() - 60_000) / 1000 * 1000;
    let samples: Vec<(i64, f64)> = (0..600)
        .map(|i| (last - (599 - i) * 1000, i as f64))
        .collect();
    let req = proto::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "api")], &samples),
            series(&[("__name__", "up"), ("job", "db")], &samples),
        ],
    };
    let (st, body) = s.write(&req);
    assert_eq!(st, 204, "{body}");
    (dir, s, last)
}

/// Asserts a Prometheus error answer; returns its message.
fn error(st: u16, body: &str, status: u16, error_type: &str) -> String {
    assert_eq!(st, status, "{body}");
    let v = json(body);
    assert_eq!(v["status"], "error", "{body}");
    assert_eq!(v["errorType"], error_type, "{body}");
    let msg = v["error"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "{body}");
    msg
}

fn instant(s: &Server, q: &str) -> (u16, String) {
    s.get(&format!(
        "/api/v1/query?query={}&time=1700000000",
        urlencode(q)
    ))
}

fn range(s: &Server, q: &str, start: &str, end: &str, step: &str) -> (u16, String) {
    post_form(
        s,
        "/api/v1/query_range",
        &[("query", q), ("start", start), ("end", end), ("step", step)],
    )
}

#[test]
fn malformed_queries_are_bad_data() {
    let (_d, s, _) = server_with(&[]);
    let cases: [(&str, &str); 7] = [
        ("sum(up", "parse error"),
        ("up{job=", "parse error"),
        ("rate(up)", "expected type"),
        ("no_such_function(up)", "no_such_function"),
        (r#"up{job=~"("}"#, ""),
        ("", ""),
        ("up[5m] + 1", ""),
    ];
    for (q, needle) in cases {
        let (st, body) = instant(&s, q);
        let msg = error(st, &body, 400, "bad_data");
        assert!(msg.contains(needle), "{q:?}: {msg}");
        assert!(
            msg.starts_with("invalid parameter \"query\""),
            "{q:?}: {msg}"
        );
        // The same through query_range.
        let (st, body) = range(&s, q, "1700000000", "1700000600", "60");
        error(st, &body, 400, "bad_data");
    }
}

#[test]
fn range_parameters_are_validated_like_prometheus() {
    let (_d, s, _) = server_with(&[]);
    let (st, body) = range(&s, "up", "1700000600", "1700000000", "60");
    let msg = error(st, &body, 400, "bad_data");
    assert!(
        msg.contains("end timestamp must not be before start time"),
        "{msg}"
    );
    for step in ["0", "-15", "0.0"] {
        let (st, body) = range(&s, "up", "1700000000", "1700000600", step);
        let msg = error(st, &body, 400, "bad_data");
        assert!(
            msg.contains(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
            ),
            "{step}: {msg}"
        );
    }
    let (st, body) = range(&s, "up", "1700000000", "1700086400", "1");
    let msg = error(st, &body, 400, "bad_data");
    assert_eq!(
        msg,
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    // Just under the limit is fine.
    let (st, body) = range(&s, "1", "0", "10999", "1");
    assert_eq!(st, 200, "{body}");
    for (start, end, step, param) in [
        ("yesterday", "1700000600", "60", "start"),
        ("1700000000", "", "60", "end"),
        ("1700000000", "1700000600", "often", "step"),
        ("1700000000", "1700000600", "", "step"),
        ("1e300", "1e301", "60", "start"),
    ] {
        let (st, body) = range(&s, "up", start, end, step);
        let msg = error(st, &body, 400, "bad_data");
        assert!(
            msg.starts_with(&format!("invalid parameter \"{param}\"")),
            "{start} {end} {step}: {msg}"
        );
    }
    let (st, body) = s.get("/api/v1/query?query=up&time=soon");
    let msg = error(st, &body, 400, "bad_data");
    assert!(msg.contains("\"time\""), "{msg}");
    let (st, body) = s.get("/api/v1/query?query=up&timeout=later");
    error(st, &body, 400, "bad_data");
}

#[test]
fn huge_ranges_answer_without_failing() {
    let (_d, s, last) = server_with(&[]);
    let t = (last / 1000).to_string();
    for q in [
        "count_over_time(up[100000d])",
        "sum_over_time(up[1000y])",
        "max_over_time(up[100y:1d])",
        "up offset 100y",
        "up @ 0",
        "timestamp(up @ 9999999999)",
    ] {
        let (st, body) = s.get(&format!("/api/v1/query?query={}&time={t}", urlencode(q)));
        assert!(st == 200 || st == 400 || st == 422, "{q}: {st} {body}");
        assert_eq!(
            json(&body)["status"],
            if st == 200 { "success" } else { "error" }
        );
    }
    let (st, body) = s.get(&format!(
        "/api/v1/query?query={}&time={t}",
        urlencode("count_over_time(up[100000d])")
    ));
    let v = json(&body);
    assert_eq!(st, 200, "{body}");
    assert_eq!(v["data"]["result"][0]["value"][1], "600", "{body}");
    // A request's timeout shorter than the server's applies.
    let heavy = urlencode("max_over_time(vector(1)[30d:1s])");
    let (st, body) = s.get(&format!("/api/v1/query?query={heavy}&time={t}&timeout=1ms"));
    let msg = error(st, &body, 503, "timeout");
    assert!(msg.contains("timed out"), "{msg}");
    let (st, body) = s.get(&format!("/api/v1/query?query={heavy}&time={t}&timeout=5m"));
    assert_eq!(st, 200, "{body}");
    // A wide range at a coarse step.
    let (st, body) = range(&s, "sum(up)", "0", &t, "1y");
    assert_eq!(st, 200, "{body}");
}

#[test]
fn query_limits_map_to_execution_errors() {
    let (_d, s, last) = server_with(&["--query.max-samples", "1000"]);
    let t = (last / 1000).to_string();
    let (st, body) = s.get(&format!(
        "/api/v1/query?query={}&time={t}",
        urlencode("sum_over_time(up[10m])")
    ));
    let msg = error(st, &body, 422, "execution");
    assert!(msg.contains("sample"), "{msg}");
    // Small queries still work.
    let (st, body) = s.get(&format!("/api/v1/query?query=up&time={t}"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body)["data"]["result"].as_array().map(Vec::len),
        Some(2)
    );
    drop(s);

    // The server's timeout caps a request's longer one.
    let (_d, s, last) = server_with(&["--query.timeout", "1ms"]);
    let (st, body) = s.get(&format!(
        "/api/v1/query?query={}&time={}&timeout=5m",
        urlencode("max_over_time(vector(1)[30d:1s])"),
        last / 1000
    ));
    error(st, &body, 503, "timeout");
    let (_, body) = s.get("/api/v1/status/flags");
    assert_eq!(json(&body)["data"]["query.timeout"], "1ms", "{body}");
}

#[test]
fn a_query_stops_when_its_client_disconnects() {
    let (_d, s, _) = server_with(&[]);
    assert_eq!(s.metric("minos_queries_canceled_total"), Some(0.0));
    let conn = start_slow_query(&s);
    wait_for("the query to start", Duration::from_secs(30), || {
        s.metric(RUNNING) == Some(1.0)
    });
    drop(conn);
    wait_for("the query to be canceled", Duration::from_secs(60), || {
        s.metric("minos_queries_canceled_total") == Some(1.0)
    });
    assert_eq!(s.metric(RUNNING), Some(0.0));
    // The server answers queries as before.
    let (st, body) = instant(&s, "1+1");
    assert_eq!(st, 200, "{body}");
}

#[test]
fn queries_wait_for_a_free_slot_then_time_out() {
    let (_d, s, last) = server_with(&["--query.max-concurrency", "1"]);
    let (_, body) = s.get("/api/v1/status/flags");
    assert_eq!(json(&body)["data"]["query.max-concurrency"], "1", "{body}");
    assert_eq!(s.metric("minos_queries_concurrent_max"), Some(1.0));
    let slow = start_slow_query(&s);
    wait_for("the slow query to start", Duration::from_secs(30), || {
        s.metric(RUNNING) == Some(1.0)
    });
    let t = (last / 1000).to_string();
    let waiter = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            post_form(
                &s,
                "/api/v1/query",
                &[("query", "up"), ("time", &t), ("timeout", "5s")],
            )
        });
        wait_for(
            "a query waiting for a slot",
            Duration::from_secs(30),
            || s.metric(WAITING) == Some(1.0),
        );
        waiter.join().expect("waiting query")
    });
    let msg = error(waiter.0, &waiter.1, 503, "timeout");
    assert!(
        msg.starts_with("query timed out in query queue") && msg.contains("free query slot"),
        "{msg}"
    );
    let (st, body) = post_form(
        &s,
        "/api/v1/query_range",
        &[
            ("query", "up"),
            ("start", "1700000000"),
            ("end", "1700000600"),
            ("step", "60"),
            ("timeout", "100ms"),
        ],
    );
    error(st, &body, 503, "timeout");
    assert_eq!(s.metric("minos_queries_queue_timeouts_total"), Some(2.0));
    assert_eq!(s.metric(WAITING), Some(0.0));
    // Once the slow query's client leaves, its slot frees up for the next query.
    drop(slow);
    let (st, body) = post_form(
        &s,
        "/api/v1/query",
        &[("query", "up"), ("time", &t), ("timeout", "1m")],
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body)["data"]["result"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn cli_prints_tables_json_and_errors() {
    let (_d, s, last) = server_with(&[]);
    let url = format!("http://{}", s.addr);
    let t = (last / 1000).to_string();

    let (code, out, err) = minos(&["query", "--server", &url, "--time", &t, "up"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("SERIES"), "{out}");
    assert!(lines[1].starts_with(r#"up{job="api"}"#), "{out}");
    assert!(lines[1].contains(" 599 "), "{out}");
    assert!(lines[2].starts_with(r#"up{job="db"}"#), "{out}");

    let (code, out, err) = minos(&["query", "--server", &url, "--time", &t, "--json", "up"]);
    assert_eq!(code, 0, "{err}");
    let v = json(out.trim());
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");

    let (code, out, err) = minos(&["query", "--server", &url, "1+1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "2\n");

    let start = ((last - 120_000) / 1000).to_string();
    let (code, out, err) = minos(&[
        "query",
        "--server",
        &url,
        "--start",
        &start,
        "--end",
        &t,
        "--step",
        "60",
        r#"up{job="api"}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#"up{job="api"}"#, "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[3].trim_end().ends_with(" 599"), "{out}");

    let (code, out, err) = minos(&["query", "--server", &url, "sum(up"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("bad_data") && err.contains("parse error"),
        "{err}"
    );

    // No server there.
    let (code, _, err) = minos(&["query", "--server", "http://127.0.0.1:1", "up"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach"), "{err}");
}
