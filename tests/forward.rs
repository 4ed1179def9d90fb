//! Forwarding with remote_write (`--remote-write.url`) to a real Prometheus from
//! Debian's package, started with its remote-write receiver on loopback: samples pushed
//! to Minos are queryable there; samples stored while the receiver is down, and across
//! a restart of Minos, arrive once it is back; a bad URL stops the server from
//! starting.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::agent::eventually;
use crate::util::{Server, free_port, minos};

/// A Prometheus that receives remote_write on `port`, keeping its data in `dir`;
/// killed when dropped.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Receiver {
    fn start(dir: &Path, port: u16) -> Receiver {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join("prometheus.yml"), "global: {}\n").expect("config");
        let child = Command::new("/usr/bin/prometheus")
            .current_dir(dir)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("prometheus (Debian: prometheus)");
        Receiver(child)
    }
}

/// The values of an instant query at Prometheus, by `instance`.
fn prom_query(port: u16, q: &str) -> Result<Vec<(String, String)>, String> {
    let v: Value = crate::util::client()
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/query?query={}",
            crate::util::urlencode(q)
        ))
        .send()
        .and_then(|r| r.json())
        .map_err(|e| e.to_string())?;
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["metric"]["instance"].as_str().unwrap_or("").to_string(),
                r["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

fn push(s: &Server, text: &str) {
    let r = crate::util::client()
        .post(s.url("/api/v1/import/prometheus"))
        .body(text.to_string())
        .send()
        .expect("push");
    assert!(r.status().is_success(), "{:?}", r.text());
}

#[test]
fn stored_samples_reach_a_prometheus_through_outages_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = Receiver::start(&dir.path().join("prom"), port);
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--remote-write.url", &url]);
    let addr = s.addr.clone();

    push(
        &s,
        "orders_total{instance=\"shop-1\"} 10\norders_total{instance=\"shop-2\"} 20\n",
    );
    eventually("the pushed samples at Prometheus", || {
        let got = prom_query(port, "orders_total")?;
        if got
            == [
                ("shop-1".into(), "10".into()),
                ("shop-2".into(), "20".into()),
            ]
        {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    eventually("the delivery counted", || {
        match s.metric("minos_forward_samples_total{result=\"sent\"}") {
            Some(n) if n >= 2.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // The receiver goes down; what is stored meanwhile waits in the queue, also across
    // a restart of Minos.
    drop(receiver);
    push(&s, "stock_items{instance=\"shop-1\"} 7\n");
    eventually("the failed attempt counted", || {
        match s.metric("minos_forward_requests_total{result=\"retried\"}") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(s.stop(), Some(0));
    let s = Server::start_on(&data, &addr, &["--remote-write.url", &url]);
    assert!(
        s.metric("minos_forward_queue_requests").unwrap_or(0.0) >= 1.0,
        "the queue survived the restart"
    );
    let _receiver = Receiver::start(&dir.path().join("prom"), port);
    eventually("the queued sample at Prometheus", || {
        let got = prom_query(port, "stock_items")?;
        if got == [("shop-1".into(), "7".into())] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    eventually("the queue drained", || {
        match s.metric("minos_forward_queue_requests") {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The first samples were not sent twice into a different value.
    assert_eq!(
        prom_query(port, "count_over_time(orders_total[1h])").expect("query"),
        [("shop-1".into(), "1".into()), ("shop-2".into(), "1".into())]
    );
}

#[test]
fn a_bad_remote_write_url_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = minos(&[
        "server",
        "--data",
        dir.path().join("data").to_str().expect("path"),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--remote-write.url",
        "ftp://example.com/write",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--remote-write.url") && err.contains("not an http(s) URL"),
        "{err}"
    );
}
