//! The scrape manager: pulls Prometheus endpoints on their interval and stores what
//! they expose, as Prometheus does.
//!
//! [`config`] reads the `scrape_configs` of a Prometheus-style YAML file and builds
//! targets; [`Manager::apply`] runs one loop per target and stops the loops of targets
//! that went away (a reload or a discovery change), writing staleness markers for their
//! series.
//!
//! Each scrape:
//! - starts at a fixed offset within the interval derived from the target's identity, so
//!   1,000 targets on a 15 s interval spread over the 15 s instead of starting together;
//! - `GET`s the target's URL with the scrape timeout as a deadline (also announced in
//!   `X-Prometheus-Scrape-Timeout-Seconds`), its credentials, and reads at most
//!   `body_size_limit` bytes ([`DEFAULT_BODY_LIMIT`] when the config sets none);
//! - parses the text format (`crate::exposition`), adds the target's labels (a scraped
//!   label that clashes is renamed `exported_<name>`, or kept with `honor_labels`),
//!   applies `metric_relabel_configs`, and keeps sample timestamps only with
//!   `honor_timestamps`;
//! - fails whole (nothing stored, `up` 0) when the target does not answer 200 in time,
//!   the body is too large or does not parse, or `sample_limit`/`label_limit` is
//!   exceeded;
//! - writes `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling` and `scrape_series_added` with the target's
//!   labels, and a staleness marker for every series the previous scrape had and this
//!   one has not (all of them when the scrape failed).
//!
//! Duplicate series within one scrape keep their first sample.

pub mod config;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tsdb::Db;

use crate::exposition::{Entry, Format, Parser};
use crate::relabel::Relabeler;
use config::{Auth, ScrapeConfig, Target};

/// The body size limit when the config sets none.
pub const DEFAULT_BODY_LIMIT: u64 = 64 << 20;

/// What every loop of one job shares.
pub struct Job {
    pub name: String,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub sample_limit: usize,
    pub label_limit: usize,
    pub body_size_limit: u64,
    pub auth: Option<Auth>,
    pub metric_relabel: Relabeler,
    /// The HTTP client with the job's TLS settings.
    client: reqwest::Client,
}

/// A client for a job's `tls_config`: its CA alone when `ca_file` is given, a client
/// certificate when `cert_file` and `key_file` are, no verification with
/// `insecure_skip_verify`.
fn client_for(c: &ScrapeConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!("Minos/", env!("CARGO_PKG_VERSION")));
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("job {}: {}: {e}", c.job_name, p.display()))
    };
    if let Some(ca) = &c.tls.ca_file {
        let pem = read(ca)?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("job {}: {}: {e}", c.job_name, ca.display()))?;
        b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&c.tls.cert_file, &c.tls.key_file) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("job {}: client certificate: {e}", c.job_name))?;
        b = b.identity(id);
    }
    if c.tls_insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("job {}: HTTP client: {e}", c.job_name))
}

impl Job {
    /// The job's settings; fails when its TLS files cannot be used.
    pub fn from_config(c: &ScrapeConfig) -> Result<Job, String> {
        Ok(Job {
            client: client_for(c)?,
            name: c.job_name.clone(),
            honor_labels: c.honor_labels,
            honor_timestamps: c.honor_timestamps,
            sample_limit: c.sample_limit,
            label_limit: c.label_limit,
            body_size_limit: if c.body_size_limit == 0 {
                DEFAULT_BODY_LIMIT
            } else {
                c.body_size_limit
            },
            auth: c.auth.clone(),
            metric_relabel: c.metric_relabel.clone(),
        })
    }
}

/// The state of one target, for `/api/v1/targets`.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub job: String,
    pub url: String,
    pub labels: Vec<(String, String)>,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: &'static str,
    pub last_error: String,
    /// Unix ms of the last scrape (0: none).
    pub last_scrape: i64,
    pub last_duration: Duration,
    pub interval: Duration,
    pub timeout: Duration,
}

struct Running {
    job: Arc<Job>,
    target: Target,
    status: Arc<Mutex<TargetStatus>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Identity of a running target: job, URL and labels.
type Key = (String, String, Vec<(String, String)>);

/// Runs the scrape loops.
pub struct Manager {
    db: Arc<Db>,
    running: Mutex<HashMap<Key, Running>>,
}

impl Manager {
    pub fn new(db: Arc<Db>) -> Result<Arc<Manager>, String> {
        Ok(Arc::new(Manager {
            db,
            running: Mutex::new(HashMap::new()),
        }))
    }

    /// Makes the running loops those of `jobs`: new targets start, missing ones stop
    /// (their series get staleness markers), unchanged ones keep running. A target whose
    /// job settings changed is restarted.
    pub fn apply(self: &Arc<Self>, jobs: Vec<(Arc<Job>, Vec<Target>)>) {
        let mut wanted: HashMap<Key, (Arc<Job>, Target)> = HashMap::new();
        for (job, targets) in jobs {
            for t in targets {
                wanted.insert(
                    (job.name.clone(), t.url.clone(), t.labels.clone()),
                    (job.clone(), t),
                );
            }
        }
        let mut running = self.running.lock();
        running.retain(|k, r| {
            let keep = wanted.get(k).is_some_and(|(j, t)| {
                Arc::ptr_eq(j, &r.job)
                    || (t.interval == r.target.interval
                        && t.timeout == r.target.timeout
                        && same_job(j, &r.job))
            });
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for (k, (job, target)) in wanted {
            if running.contains_key(&k) {
                // Later scrapes use the new settings object.
                if let Some(r) = running.get_mut(&k) {
                    r.job = job;
                }
                continue;
            }
            let status = Arc::new(Mutex::new(TargetStatus {
                job: job.name.clone(),
                url: target.url.clone(),
                labels: target.labels.clone(),
                health: "unknown",
                last_error: String::new(),
                last_scrape: 0,
                last_duration: Duration::ZERO,
                interval: target.interval,
                timeout: target.timeout,
            }));
            let (stop, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(scrape_loop(
                self.clone(),
                job.clone(),
                target.clone(),
                status.clone(),
                rx,
            ));
            running.insert(
                k,
                Running {
                    job,
                    target,
                    status,
                    stop,
                },
            );
        }
    }

    /// Every target's state, by job then URL.
    pub fn targets(&self) -> Vec<TargetStatus> {
        let mut v: Vec<TargetStatus> = self
            .running
            .lock()
            .values()
            .map(|r| r.status.lock().clone())
            .collect();
        v.sort_by(|a, b| (&a.job, &a.url).cmp(&(&b.job, &b.url)));
        v
    }

    /// Stops every loop (their series go stale).
    pub fn stop_all(&self) {
        for (_, r) in self.running.lock().drain() {
            let _ = r.stop.send(true);
        }
    }
}

fn same_job(a: &Job, b: &Job) -> bool {
    a.name == b.name
        && a.honor_labels == b.honor_labels
        && a.honor_timestamps == b.honor_timestamps
        && a.sample_limit == b.sample_limit
        && a.label_limit == b.label_limit
        && a.body_size_limit == b.body_size_limit
}

/// Where in its interval a target scrapes: a stable hash of its identity.
fn offset(target: &Target) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.url.hash(&mut h);
    target.labels.hash(&mut h);
    let ms = u64::try_from(target.interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(h.finish() % ms)
}

async fn scrape_loop(
    m: Arc<Manager>,
    job: Arc<Job>,
    target: Target,
    status: Arc<Mutex<TargetStatus>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now() + offset(&target);
    let mut tick = tokio::time::interval_at(start, target.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The series of the last successful scrape, by id, and the cache from a scraped
    // series' text to its stored labels.
    let mut last: SeriesMap = SeriesMap::default();
    let mut cache = Cache::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let job = {
            // Settings may have been swapped by a reload.
            let running = m.running.lock();
            running
                .get(&(job.name.clone(), target.url.clone(), target.labels.clone()))
                .map_or_else(|| job.clone(), |r| r.job.clone())
        };
        if !Arc::ptr_eq(&job, &cache.job) {
            // New relabeling or target settings: labels must be worked out again.
            cache = Cache {
                job: job.clone(),
                ..Cache::default()
            };
        }
        let t = tsdb::now_ms();
        let began = Instant::now();
        let (result, back) = scrape_once(&job, &target, t, cache).await;
        cache = back;
        let took = began.elapsed();
        let (rows, seen, scraped, kept, error) = match result {
            Ok(s) => (s.rows, s.seen, s.scraped, s.kept, None),
            Err(e) => (Vec::new(), SeriesMap::default(), 0, 0, Some(e)),
        };
        let added = seen.keys().filter(|id| !last.contains_key(*id)).count();
        let mut out = rows;
        let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
        for (id, labels) in &last {
            if !seen.contains_key(id) {
                out.push((labels.clone(), t, stale));
            }
        }
        let up = if error.is_none() { 1.0 } else { 0.0 };
        for (name, v) in [
            ("up", up),
            ("scrape_duration_seconds", took.as_secs_f64()),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", kept as f64),
            ("scrape_series_added", added as f64),
        ] {
            out.push((report_labels(&target, name), t, v));
        }
        last = seen;
        if let Err(e) = append(&m.db, out).await {
            tracing::error!("storing the scrape of {}: {e}", target.url);
        }
        let mut st = status.lock();
        st.health = if error.is_none() { "up" } else { "down" };
        st.last_error = error.unwrap_or_default();
        st.last_scrape = t;
        st.last_duration = took;
    }
    // Stopped: everything this target exposed goes stale.
    let t = tsdb::now_ms();
    let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
    let mut out: Vec<SharedRow> = last.into_values().map(|l| (l, t, stale)).collect();
    for name in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        out.push((report_labels(&target, name), t, stale));
    }
    if let Err(e) = append(&m.db, out).await {
        tracing::error!("marking {} stale: {e}", target.url);
    }
}

fn report_labels(target: &Target, name: &str) -> Labels {
    let mut l = target.labels.clone();
    l.push(("__name__".into(), name.into()));
    l.sort();
    l.into()
}

/// A stored series' labels, shared between the cache, the rows and the stale set.
type Labels = Arc<[(String, String)]>;
/// A row to store with shared labels.
type SharedRow = (Labels, i64, f64);
/// Series by id (the xxh3 of their stored labels).
type SeriesMap = HashMap<u64, Labels, foldhash::fast::RandomState>;

/// What a scraped series text turned into: its stored labels and id, or dropped by
/// relabeling.
#[derive(Clone)]
struct Cached {
    stored: Option<(u64, Labels)>,
    /// The scrape that last saw it.
    seen: u64,
}

/// Per target: scraped series text (xxh3 of the name and labels as exposed) to stored
/// labels, so a series seen before costs a hash and a lookup instead of building,
/// sorting and relabeling its labels again. Entries not seen in a scrape are dropped.
/// Keys are 64-bit hashes of at most a target's series (a collision among a few
/// thousand series is about 1 in 10^12); the job's settings are part of the cache's
/// identity.
struct Cache {
    job: Arc<Job>,
    map: HashMap<u64, Cached, foldhash::fast::RandomState>,
    scrape: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            job: Arc::new(Job {
                name: String::new(),
                honor_labels: false,
                honor_timestamps: false,
                sample_limit: 0,
                label_limit: 0,
                body_size_limit: 0,
                auth: None,
                metric_relabel: Relabeler::default(),
                client: reqwest::Client::new(),
            }),
            map: HashMap::default(),
            scrape: 0,
        }
    }
}

fn series_id(labels: &[(String, String)]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xfe]);
    }
    h.digest()
}

struct Scraped {
    rows: Vec<SharedRow>,
    seen: SeriesMap,
    scraped: usize,
    kept: usize,
}

async fn fetch(job: &Job, target: &Target) -> Result<(Vec<u8>, Option<Format>), String> {
    let mut req = job
        .client
        .get(&target.url)
        .timeout(target.timeout)
        .header(
            reqwest::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
        )
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", target.timeout.as_secs_f64()),
        );
    if let Some(a) = &job.auth {
        req = req.header(reqwest::header::AUTHORIZATION, a.header_value());
    }
    let work = async {
        let mut resp = req.send().await.map_err(|e| describe(&e, target))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("server returned HTTP status {}", resp.status()));
        }
        let format = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(Format::from_content_type);
        if let Some(len) = resp.content_length()
            && len > job.body_size_limit
        {
            return Err(format!(
                "body size {len} bytes exceeds the limit of {} bytes",
                job.body_size_limit
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, target))? {
            if (body.len() + chunk.len()) as u64 > job.body_size_limit {
                return Err(format!(
                    "body exceeds the limit of {} bytes",
                    job.body_size_limit
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, format))
    };
    match tokio::time::timeout(target.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "scrape timed out after {}s",
            target.timeout.as_secs_f64()
        )),
    }
}

/// A request error with its causes (reqwest's own message hides them).
fn describe(e: &reqwest::Error, target: &Target) -> String {
    if e.is_timeout() {
        return format!("scrape timed out after {}s", target.timeout.as_secs_f64());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

async fn scrape_once(
    job: &Arc<Job>,
    target: &Target,
    t: i64,
    mut cache: Cache,
) -> (Result<Scraped, String>, Cache) {
    let (body, format) = match fetch(job, target).await {
        Ok(b) => b,
        Err(e) => return (Err(e), cache),
    };
    let (job, target) = (job.clone(), target.clone());
    let keep_job = job.clone();
    match tokio::task::spawn_blocking(move || {
        let r = process(&job, &target, &body, format, t, &mut cache);
        (r, cache)
    })
    .await
    {
        Ok(pair) => pair,
        Err(e) => (
            Err(e.to_string()),
            Cache {
                job: keep_job,
                ..Cache::default()
            },
        ),
    }
}

/// Turns a scraped body into rows to store (see the module documentation).
fn process(
    job: &Job,
    target: &Target,
    body: &[u8],
    format: Option<Format>,
    t: i64,
    cache: &mut Cache,
) -> Result<Scraped, String> {
    let mut parser = match format {
        Some(f) => Parser::with_format(body, f),
        None => Parser::new(body),
    };
    cache.scrape += 1;
    let scrape = cache.scrape;
    let mut rows = Vec::new();
    let mut seen = SeriesMap::default();
    let mut scraped = 0usize;
    while let Some(entry) = parser.next_entry() {
        let s = match entry {
            Err(e) => return Err(format!("parsing the scrape: {e}")),
            Ok(Entry::Sample(s)) => s,
            Ok(_) => continue,
        };
        scraped += 1;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(s.name.as_bytes());
        for (k, v) in s.labels.iter() {
            h.update(&[0xff]);
            h.update(k.as_bytes());
            h.update(&[0xfe]);
            h.update(v.as_bytes());
        }
        let key = h.digest();
        let stored = match cache.map.get_mut(&key) {
            Some(c) => {
                c.seen = scrape;
                c.stored.clone()
            }
            None => {
                let stored = build_labels(job, target, &s.name, &s.labels, s.line)?
                    .map(|l| (series_id(&l), Labels::from(l)));
                cache.map.insert(
                    key,
                    Cached {
                        stored: stored.clone(),
                        seen: scrape,
                    },
                );
                stored
            }
        };
        let Some((id, labels)) = stored else { continue };
        if job.label_limit > 0 && labels.len() - 1 > job.label_limit {
            return Err(format!(
                "label_limit exceeded: a series has {} labels, at most {}",
                labels.len() - 1,
                job.label_limit
            ));
        }
        if seen.insert(id, labels.clone()).is_some() {
            // The same series twice: the first sample stays.
            continue;
        }
        if job.sample_limit > 0 && seen.len() > job.sample_limit {
            return Err(format!(
                "sample_limit exceeded: more than {} samples",
                job.sample_limit
            ));
        }
        let ts = match s.timestamp_ms {
            Some(ts) if job.honor_timestamps => ts,
            _ => t,
        };
        rows.push((labels, ts, s.value));
    }
    cache.map.retain(|_, c| c.seen == scrape);
    let kept = rows.len();
    Ok(Scraped {
        rows,
        seen,
        scraped,
        kept,
    })
}

/// A scraped series' stored labels: its own, the target's (see the module
/// documentation for clashes), empty ones dropped, sorted, relabeled; `None` when
/// `metric_relabel_configs` drop it.
fn build_labels(
    job: &Job,
    target: &Target,
    name: &str,
    scraped: &[crate::exposition::Label<'_>],
    line: usize,
) -> Result<Option<Vec<(String, String)>>, String> {
    let mut labels: Vec<(String, String)> =
        Vec::with_capacity(scraped.len() + target.labels.len() + 1);
    labels.push(("__name__".into(), name.to_string()));
    for (k, v) in scraped {
        if k == "__name__" {
            return Err(format!(
                "line {line}: a __name__ label next to the metric name"
            ));
        }
        labels.push((k.to_string(), v.to_string()));
    }
    for (k, v) in &target.labels {
        match labels.iter().position(|(n, _)| n == k) {
            Some(i) if job.honor_labels => {
                if labels[i].1.is_empty() {
                    labels[i].1 = v.clone();
                }
            }
            Some(i) => {
                let scraped_value = std::mem::replace(&mut labels[i].1, v.clone());
                if !scraped_value.is_empty() {
                    labels.push((format!("exported_{k}"), scraped_value));
                }
            }
            None => labels.push((k.clone(), v.clone())),
        }
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels.retain(|(_, v)| !v.is_empty());
    if !job.metric_relabel.is_empty() && !job.metric_relabel.apply(&mut labels) {
        return Ok(None);
    }
    Ok(Some(labels))
}

async fn append(db: &Arc<Db>, rows: Vec<SharedRow>) -> Result<(), String> {
    if rows.is_empty() {
        return Ok(());
    }
    let db = db.clone();
    match tokio::task::spawn_blocking(move || crate::append_rows(&db, &rows))
        .await
        .map_err(|e| e.to_string())??
    {
        Some(m) => Err(m),
        None => Ok(()),
    }
}
