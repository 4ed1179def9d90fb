//! The server's scraping: reads `--scrape.config` (Prometheus' `scrape_configs`
//! format), discovers targets (static, `file_sd_configs`, and the inventory), and keeps
//! the scrape manager's loops in step with them.
//!
//! The configuration is read again on SIGHUP and on `POST /-/reload`; a new file that
//! does not load (its error names the line) leaves the running one in place. Target
//! files of `file_sd_configs` are checked for changes every 5 s (and re-read at least
//! every `refresh_interval`); inventory targets follow every change of the inventory.
//!
//! `inventory_sd_configs: [{selector: "service=mysql", port: 9104}]` makes one target
//! `<hostname>:<port>` per host the selector names, with the meta labels
//! `__meta_minos_hostname`, `__meta_minos_<label>` for every label of its first place
//! in the tree (node kinds and inherited tags, as in `minos_host_info`), and
//! `__meta_minos_paths` (its tree paths, comma-separated), for relabeling.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use collector::scrape::config::{self, ScrapeFile, TargetGroup};
use collector::scrape::{Job, Manager};

/// The loaded configuration and what its discovery last found.
struct Loaded {
    file: ScrapeFile,
    jobs: Vec<Arc<Job>>,
}

pub struct Scraping {
    path: PathBuf,
    manager: Arc<Manager>,
    store: Arc<inventory::Store>,
    loaded: Option<Loaded>,
    /// Last good contents and modification time of each target file.
    files: HashMap<PathBuf, (Option<SystemTime>, Vec<TargetGroup>, Instant)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Scraping {
    /// Loads `path` (an error names the line) and starts its targets.
    pub fn start(
        path: PathBuf,
        manager: Arc<Manager>,
        store: Arc<inventory::Store>,
    ) -> Result<Scraping, String> {
        let mut s = Scraping {
            path,
            manager,
            store,
            loaded: None,
            files: HashMap::new(),
        };
        s.reload()?;
        Ok(s)
    }

    /// Reads the file again; keeps the running configuration when it does not load.
    pub fn reload(&mut self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let file =
            config::load(&text, &dir).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let jobs = file
            .scrape_configs
            .iter()
            .map(|c| Job::from_config(c).map(Arc::new))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let n = file.scrape_configs.len();
        self.loaded = Some(Loaded { file, jobs });
        self.files.clear();
        self.apply();
        Ok(format!(
            "loaded {} ({n} scrape configs)",
            self.path.display()
        ))
    }

    /// The target groups of one target file, re-read when it changed or its refresh
    /// interval passed; the last good ones when it cannot be read.
    fn file_groups(&mut self, path: &Path, refresh: Duration) -> Vec<TargetGroup> {
        let now = mtime(path);
        if let Some((seen, groups, at)) = self.files.get(path)
            && *seen == now
            && at.elapsed() < refresh
        {
            return groups.clone();
        }
        match config::read_file_sd(path) {
            Ok(groups) => {
                self.files
                    .insert(path.to_path_buf(), (now, groups.clone(), Instant::now()));
                groups
            }
            Err(e) => {
                tracing::warn!("{}: {e}; keeping its last targets", path.display());
                self.files
                    .get(path)
                    .map(|(_, g, _)| g.clone())
                    .unwrap_or_default()
            }
        }
    }

    fn inventory_groups(
        &self,
        selector: &str,
        port: u16,
        scheme: Option<&str>,
    ) -> Vec<TargetGroup> {
        let inv = self.store.snapshot();
        let hosts = match inventory::Selector::parse(selector).and_then(|s| s.resolve(&inv)) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("inventory_sd_configs selector {selector:?}: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for id in hosts {
            let Some(h) = inv.host(id) else { continue };
            let mut labels: BTreeMap<String, String> = BTreeMap::new();
            labels.insert("__meta_minos_hostname".into(), h.hostname.clone());
            let placements = inv.placements(h);
            if let Some((_, first)) = placements.first() {
                for (k, v) in first {
                    labels.insert(format!("__meta_minos_{k}"), v.clone());
                }
            }
            let paths: Vec<String> = placements
                .iter()
                .filter_map(|(n, _)| n.map(|n| inv.path(n)))
                .collect();
            labels.insert("__meta_minos_paths".into(), paths.join(","));
            if let Some(sc) = scheme {
                labels.insert("__scheme__".into(), sc.to_string());
            }
            out.push(TargetGroup {
                targets: vec![format!("{}:{port}", h.hostname)],
                labels,
                source: format!("inventory:{selector}"),
            });
        }
        out
    }

    /// Discovers every job's targets and hands them to the manager.
    pub fn apply(&mut self) {
        let Some(loaded) = self.loaded.take() else {
            return;
        };
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut all = Vec::new();
        for (cfg, job) in loaded.file.scrape_configs.iter().zip(&loaded.jobs) {
            let mut groups = cfg.static_configs.clone();
            for sd in &cfg.file_sd_configs {
                for pattern in &sd.files {
                    for path in config::expand_file_sd(pattern, &dir) {
                        groups.extend(self.file_groups(&path, sd.refresh_interval));
                    }
                }
            }
            for sd in &cfg.inventory_sd_configs {
                groups.extend(self.inventory_groups(&sd.selector, sd.port, sd.scheme.as_deref()));
            }
            let (targets, dropped) = config::build_targets(cfg, &groups);
            for d in dropped {
                tracing::debug!("job {}: {d}", cfg.job_name);
            }
            all.push((job.clone(), targets));
        }
        self.manager.apply(all);
        self.loaded = Some(loaded);
    }
}

/// Runs discovery and reloads until the task is dropped: SIGHUP and `/-/reload`
/// requests reload; target files and the inventory are watched.
pub async fn run(mut s: Scraping, mut reloads: tokio::sync::mpsc::Receiver<web::ReloadRequest>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut changes = s.store.subscribe();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hangup => {
                match s.reload() {
                    Ok(m) => tracing::info!("SIGHUP: {m}"),
                    Err(e) => tracing::error!("SIGHUP: not reloaded, the running configuration stays: {e}"),
                }
            }
            req = reloads.recv() => {
                let Some(reply) = req else { return };
                let r = s.reload();
                match &r {
                    Ok(m) => tracing::info!("reload: {m}"),
                    Err(e) => tracing::error!("reload: not reloaded, the running configuration stays: {e}"),
                }
                let _ = reply.send(r);
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                s.apply();
            }
            // Target files: a changed one is read again, the others come from memory.
            _ = every.tick() => s.apply(),
        }
    }
}
