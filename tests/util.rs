//! Helpers shared by the end-to-end tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector::remote_write::proto;

/// A running `minos server`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Server {
    /// Starts a server on `data` with extra flags and waits until it is ready.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        for _ in 0..5 {
            let mut s = Server::spawn(data, &format!("127.0.0.1:{}", free_port()), extra);
            if s.wait_ready(Duration::from_secs(60)) {
                return s;
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        panic!("minos server did not become ready");
    }

    /// Starts a server on `data` listening on `addr` (for a restart on the same port).
    pub fn start_on(data: &Path, addr: &str, extra: &[&str]) -> Server {
        let mut s = Server::spawn(data, addr, extra);
        assert!(
            s.wait_ready(Duration::from_secs(60)),
            "minos server on {addr} did not become ready"
        );
        s
    }

    fn spawn(data: &Path, addr: &str, extra: &[&str]) -> Server {
        let log = data.with_extension(format!("log.{}", addr.replace([':', '.'], "_")));
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_minos"))
            .args(["server", "--data"])
            .arg(data)
            .args(["--listen", addr])
            .args(extra)
            .env("MINOS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn minos");
        Server {
            child,
            addr: addr.to_string(),
            log,
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = client().get(self.url("/-/ready")).send()
                && r.status().is_success()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one remote_write request; returns status and body.
    pub fn write(&self, req: &proto::WriteRequest) -> (u16, String) {
        self.post_raw("/api/v1/write", collector::remote_write::encode_snappy(req))
    }

    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let r = client()
            .post(self.url(path))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .expect("request");
        let st = r.status().as_u16();
        (st, r.text().unwrap_or_default())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().expect("request");
        let st = r.status().as_u16();
        (st, r.text().unwrap_or_default())
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        let r = client().post(self.url(path)).send().expect("request");
        let st = r.status().as_u16();
        (st, r.text().unwrap_or_default())
    }

    /// `/api/v1/export` for `selector`: (labels JSON, timestamps, values) per series.
    pub fn export(&self, selector: &str) -> Vec<Exported> {
        let (st, body) = self.get(&format!("/api/v1/export?match[]={}", urlencode(selector)));
        assert_eq!(st, 200, "{body}");
        body.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                let ts = v["timestamps"]
                    .as_array()
                    .expect("timestamps")
                    .iter()
                    .map(|x| x.as_i64().expect("ts"))
                    .collect();
                // Parse the numbers' text ourselves: serde_json's f64 reads "-0.0" as 0.
                let raw = l
                    .split("\"values\":[")
                    .nth(1)
                    .and_then(|r| r.split(']').next())
                    .expect("values");
                let vals = raw
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| match x {
                        "\"+Inf\"" => f64::INFINITY,
                        "\"-Inf\"" => f64::NEG_INFINITY,
                        "\"NaN\"" => f64::NAN,
                        n => n.parse::<f64>().expect("number"),
                    })
                    .collect();
                Exported {
                    metric: v["metric"].clone(),
                    timestamps: ts,
                    values: vals,
                }
            })
            .collect()
    }

    /// Reads one metric's value from `/metrics`.
    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Exported {
    pub metric: serde_json::Value,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .expect("client")
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A series for remote_write; `labels` need not be sorted.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> proto::TimeSeries {
    let mut l: Vec<proto::Label> = labels
        .iter()
        .map(|(n, v)| proto::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    proto::TimeSeries {
        labels: l,
        samples: samples
            .iter()
            .map(|&(t, v)| proto::Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A form-encoded POST, as Grafana sends queries; returns status and body.
pub fn post_form(s: &Server, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = client()
        .post(s.url(path))
        .form(form)
        .send()
        .expect("request");
    let st = r.status().as_u16();
    (st, r.text().unwrap_or_default())
}

/// Parses a response body as JSON, naming the body when it is not.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Runs the `minos` binary; returns exit code, stdout and stderr.
pub fn minos(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_minos"))
        .args(args)
        .env_remove("MINOS_SERVER")
        .output()
        .expect("run minos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `minos` against server `s` with `token` (`--server`, `--token` appended).
pub fn cli(s: &Server, token: &str, args: &[&str]) -> (i32, String, String) {
    let url = s.url("");
    let mut all = args.to_vec();
    all.extend(["--server", url.trim_end_matches('/'), "--token", token]);
    minos(&all)
}

/// `GET path` with an optional bearer token; status and JSON body.
pub fn call(s: &Server, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().get(s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().expect("request");
    let status = r.status().as_u16();
    let body = r.text().expect("body");
    (status, json(&body))
}

/// A request with a bearer token and a JSON body; status and JSON body.
pub fn send(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = client()
        .request(method, s.url(path))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .expect("request");
    let status = r.status().as_u16();
    (status, json(&r.text().expect("body")))
}
