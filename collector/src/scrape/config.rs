//! Prometheus-compatible scrape configuration: the `global` and `scrape_configs` sections
//! of a `prometheus.yml`, file-based discovery, and the targets a job makes of what its
//! discovery found.
//!
//! [`load`] reads the YAML (with serde-saphyr), applies Prometheus' defaults and checks,
//! and compiles each job's relabel rules; every error names its line and, when it is
//! inside a job, the job (`line 12: scrape_configs[1] (job "node"): scrape_timeout 30s is
//! longer than scrape_interval 15s`). [`build_targets`] turns a job's target groups into
//! [`Target`]s as Prometheus' `PopulateLabels` does. [`expand_file_sd`] and
//! [`read_file_sd`] are the two halves of `file_sd_configs`; the caller decides when to
//! call them again (every `refresh_interval`, or on a change).
//!
//! # What is read
//!
//! `global`: `scrape_interval` (default `1m`), `scrape_timeout` (`10s`), `external_labels`
//! (Prometheus 3 expands `$VAR`, `${VAR}` and `$$` in their values from the environment;
//! a label left empty is dropped), and the defaults of the per-job limits
//! (`body_size_limit`, `sample_limit`, `label_limit`, `label_name_length_limit`,
//! `label_value_length_limit`, `target_limit`).
//!
//! A scrape config: `job_name` (required, unique), `scrape_interval`, `scrape_timeout`,
//! `metrics_path` (`/metrics`), `params`, `scheme` (`http` or `https`), `honor_labels`
//! (false), `honor_timestamps` (true), the limits above (0 is none, unset takes the global
//! value), credentials (`basic_auth` with `username`/`username_file` and
//! `password`/`password_file`; `authorization` with `type`, default `Bearer`, and
//! `credentials`/`credentials_file`; the legacy `bearer_token`/`bearer_token_file`: at
//! most one of the three), `tls_config` (`insecure_skip_verify`, `ca_file`, `cert_file`,
//! `key_file`, `server_name`), `static_configs`, `file_sd_configs`,
//! `inventory_sd_configs` (below), `relabel_configs` and `metric_relabel_configs`.
//!
//! Prometheus' rules apply: a job without `scrape_interval` takes the global one; a job
//! without `scrape_timeout` takes the global one, or its own interval when that is
//! shorter; a timeout longer than its interval is an error (in `global` too); `0` counts as
//! unset. Durations are Prometheus' (`1h30m`, `90s`, `500ms`, `2d`, `1w`, `1y`, `0`);
//! sizes are base-2 (`512KB`, `10MB` = `10MiB` = 10·2²⁰ bytes, `0`; a plain integer is
//! bytes, a Minos leniency). Label names are `[a-zA-Z_][a-zA-Z0-9_]*`. When a job has no
//! `relabel_configs`, its static targets must be valid addresses (`host`, `host:port`,
//! `[v6]:port`; a URL is refused), as in Prometheus.
//!
//! Files named in the config (`password_file`, `credentials_file`, `bearer_token_file`,
//! `tls_config` files, `file_sd_configs` paths) are relative to the directory of the
//! config file. Credentials are read once, by [`load`], trimmed of surrounding white
//! space (Prometheus reads them again for each scrape: here a reload picks up a new one).
//!
//! # What is ignored, what is refused
//!
//! Top-level sections other than `global` and `scrape_configs` (`rule_files`,
//! `alerting`, `remote_write`, `remote_read`, `storage`, `tracing`, `otlp`, `runtime`,
//! ...) are ignored without a word. Inside `global` and a scrape config an unknown key is
//! an error naming it (with the closest known key: `scrape_intervall` suggests
//! `scrape_interval`). Keys Prometheus knows that only tune its own scraper are accepted
//! and ignored: `evaluation_interval`, `rule_query_offset`, `query_log_file`,
//! `scrape_failure_log_file`, `scrape_protocols`, `fallback_scrape_protocol`, the
//! native-histogram settings, `track_timestamps_staleness`, `enable_compression`,
//! `enable_http2`, `follow_redirects`, `keep_dropped_targets`,
//! `metric_name_validation_scheme` and `metric_name_escaping_scheme` (Minos always checks
//! the legacy name syntax). Keys whose meaning Minos does not implement are refused, so a
//! config never silently does less than it says: every `*_sd_configs` but the three
//! above, `oauth2`, `proxy_url` and the other proxy settings, `http_headers`,
//! `scrape_config_files`, and inline TLS material (`ca`, `cert`, `key`) or TLS versions
//! in `tls_config`.
//!
//! # `inventory_sd_configs` (Minos extension)
//!
//! ```yaml
//! inventory_sd_configs:
//!   - selector: "service=mysql"   # the inventory's selector language
//!     port: 9104                  # required, 1-65535
//!     scheme: https               # optional: sets __scheme__ for these targets
//! ```
//!
//! The hosts of the inventory that the selector names become targets
//! `<hostname>:<port>`. Resolving the selector is the caller's work (this crate does not
//! depend on the inventory); the caller hands [`build_targets`] one [`TargetGroup`] per
//! host, carrying these meta labels for `relabel_configs` (removed after relabeling, like
//! every `__` label):
//!
//! - `__meta_minos_hostname`: the host's name;
//! - `__meta_minos_<label>`: each label of the host's first place in the service tree:
//!   the node kinds above it (`__meta_minos_team`, `__meta_minos_service`, ...) and its
//!   inherited tags;
//! - `__meta_minos_paths`: its tree paths, comma-separated;
//! - `__scheme__`, when the entry sets `scheme`.
//!
//! # Targets
//!
//! [`build_targets`] starts each target from its group's labels, `__address__` (the
//! target), and, where not set already, `job`, `__scheme__`, `__metrics_path__`,
//! `__scrape_interval__`, `__scrape_timeout__` and `__param_<name>` (the first value of
//! each `params` entry). Then `relabel_configs` run; a dropped target is left out. The
//! result must have a valid `__address__` (Prometheus 3 adds no default port: `host`
//! alone is scraped on the scheme's port and shows as `instance="host"`), a scheme
//! `http`/`https`, and interval and timeout labels that parse, are not zero, and keep the
//! timeout within the interval; they become the target's interval and timeout. The URL
//! is `scheme://address` + `__metrics_path__` + the query of `params`, each
//! `__param_<name>` replacing the first value of `<name>`. `instance` defaults to the
//! address; then every label starting with `__` is removed. A target identical to an
//! earlier one (same labels and URL) is kept once. With `target_limit` set and exceeded,
//! the job gets no target at all (Prometheus fails them all).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use crate::relabel::{RelabelConfig, Relabeler, is_valid_label_name, remove_internal_labels};

/// `global.scrape_interval` when unset.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
/// `global.scrape_timeout` when unset.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// `metrics_path` when unset.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";
/// `file_sd_configs[].refresh_interval` when unset.
pub const DEFAULT_FILE_SD_REFRESH: Duration = Duration::from_secs(300);
/// The meta label `file_sd_configs` puts on each group: the file it came from.
pub const FILE_PATH_LABEL: &str = "__meta_filepath";

// ---------------------------------------------------------------------------------------
// The loaded configuration
// ---------------------------------------------------------------------------------------

/// A loaded scrape configuration file.
#[derive(Debug, Clone, Default)]
pub struct ScrapeFile {
    pub global: Global,
    pub scrape_configs: Vec<ScrapeConfig>,
}

/// The `global` section, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    /// Environment references expanded; labels left empty dropped.
    pub external_labels: BTreeMap<String, String>,
    /// Defaults of the jobs' limits (0: none).
    pub sample_limit: usize,
    pub label_limit: usize,
    pub label_name_length_limit: usize,
    pub label_value_length_limit: usize,
    pub target_limit: usize,
    pub body_size_limit: u64,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
            external_labels: BTreeMap::new(),
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            target_limit: 0,
            body_size_limit: 0,
        }
    }
}

/// One entry of `scrape_configs`: a job, defaults applied and relabel rules compiled.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub metrics_path: String,
    pub params: BTreeMap<String, Vec<String>>,
    /// `http` or `https`.
    pub scheme: String,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    /// Per-scrape limits; 0 is none.
    pub sample_limit: usize,
    pub label_limit: usize,
    pub label_name_length_limit: usize,
    pub label_value_length_limit: usize,
    /// Applied by [`build_targets`].
    pub target_limit: usize,
    /// Bytes of uncompressed body; 0 is none.
    pub body_size_limit: u64,
    pub auth: Option<Auth>,
    pub tls_insecure_skip_verify: bool,
    /// The other `tls_config` settings, paths resolved against the config's directory.
    pub tls: TlsFiles,
    pub static_configs: Vec<TargetGroup>,
    pub file_sd_configs: Vec<FileSd>,
    pub inventory_sd_configs: Vec<InventorySd>,
    /// Compiled `relabel_configs`.
    pub relabel: Relabeler,
    /// Compiled `metric_relabel_configs`.
    pub metric_relabel: Relabeler,
}

impl Default for ScrapeConfig {
    /// Prometheus' defaults for a job without a name or targets.
    fn default() -> Self {
        ScrapeConfig {
            job_name: String::new(),
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
            metrics_path: DEFAULT_METRICS_PATH.to_owned(),
            params: BTreeMap::new(),
            scheme: "http".to_owned(),
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            target_limit: 0,
            body_size_limit: 0,
            auth: None,
            tls_insecure_skip_verify: false,
            tls: TlsFiles::default(),
            static_configs: Vec::new(),
            file_sd_configs: Vec::new(),
            inventory_sd_configs: Vec::new(),
            relabel: Relabeler::default(),
            metric_relabel: Relabeler::default(),
        }
    }
}

/// `tls_config` settings besides `insecure_skip_verify`. The files existed at load time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// Scrape credentials, read at load time.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `basic_auth`.
    Basic { username: String, password: String },
    /// `authorization` of type `Bearer` (any case), or `bearer_token[_file]`.
    Bearer(String),
    /// `authorization` of another type: `Authorization: <kind> <credentials>`.
    Authorization { kind: String, credentials: String },
}

impl Auth {
    /// The value of the `Authorization` header these credentials send.
    pub fn header_value(&self) -> String {
        use base64::Engine as _;
        match self {
            Auth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
            Auth::Bearer(token) => format!("Bearer {token}"),
            Auth::Authorization { kind, credentials } => format!("{kind} {credentials}"),
        }
    }
}

impl fmt::Debug for Auth {
    /// Secrets are not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<secret>")
                .finish(),
            Auth::Bearer(_) => f.write_str("Bearer(<secret>)"),
            Auth::Authorization { kind, .. } => f
                .debug_struct("Authorization")
                .field("kind", kind)
                .field("credentials", &"<secret>")
                .finish(),
        }
    }
}

/// A group of targets sharing labels: a `static_configs` entry, a group of a
/// `file_sd_configs` file, or what the caller makes of an `inventory_sd_configs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetGroup {
    /// Addresses (`host:port`), each becoming a target's `__address__`.
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Where the group came from, for messages: `static/0`, `file:/etc/sd/a.json:2`.
    pub source: String,
}

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSd {
    /// Paths as written: relative ones are relative to the config's directory; the last
    /// path element may hold `*`, `?` and `[...]` (see [`expand_file_sd`]).
    pub files: Vec<String>,
    pub refresh_interval: Duration,
}

/// One `inventory_sd_configs` entry (Minos extension; see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventorySd {
    /// A selector of the inventory's language; the caller parses and resolves it.
    pub selector: String,
    pub port: u16,
    /// `http` or `https`: the `__scheme__` of these targets, when set.
    pub scheme: Option<String>,
}

/// A target ready to scrape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Final labels (relabeled, `__` labels removed, `job` and `instance` included),
    /// sorted by name.
    pub labels: Vec<(String, String)>,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why a config did not load: a message, and the 1-based line it is about when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<u64>,
    pub message: String,
}

impl ConfigError {
    fn new(line: Option<u64>, message: impl Into<String>) -> Self {
        ConfigError {
            line,
            message: message.into(),
        }
    }

    fn at(loc: Location, message: impl Into<String>) -> Self {
        ConfigError::new(line_of(loc), message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn line_of(loc: Location) -> Option<u64> {
    Some(loc.line()).filter(|&l| l > 0)
}

// ---------------------------------------------------------------------------------------
// The YAML shapes
// ---------------------------------------------------------------------------------------

/// A scalar read as its text, whatever its YAML type (`80`, `true`, `1.5`), the way Go's
/// YAML decoder fills a string; `null` is the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(Option::<String>::deserialize(d)?.unwrap_or_default()))
    }
}

type SpannedText = Spanned<Text>;
type LabelMap = BTreeMap<String, SpannedText>;

/// The top level: other sections are ignored (no `deny_unknown_fields`).
#[derive(Deserialize)]
struct RawFile {
    global: Option<Spanned<RawGlobal>>,
    scrape_configs: Option<Vec<Spanned<RawScrapeConfig>>>,
    scrape_config_files: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    scrape_interval: Option<SpannedText>,
    scrape_timeout: Option<SpannedText>,
    external_labels: Option<LabelMap>,
    body_size_limit: Option<SpannedText>,
    sample_limit: Option<usize>,
    label_limit: Option<usize>,
    label_name_length_limit: Option<usize>,
    label_value_length_limit: Option<usize>,
    target_limit: Option<usize>,
    // Checked, then ignored.
    evaluation_interval: Option<SpannedText>,
    rule_query_offset: Option<SpannedText>,
    // Accepted and ignored.
    #[serde(rename = "query_log_file")]
    _query_log_file: Option<IgnoredAny>,
    #[serde(rename = "scrape_failure_log_file")]
    _scrape_failure_log_file: Option<IgnoredAny>,
    #[serde(rename = "scrape_protocols")]
    _scrape_protocols: Option<IgnoredAny>,
    #[serde(rename = "keep_dropped_targets")]
    _keep_dropped_targets: Option<IgnoredAny>,
    #[serde(rename = "metric_name_validation_scheme")]
    _metric_name_validation_scheme: Option<IgnoredAny>,
    #[serde(rename = "metric_name_escaping_scheme")]
    _metric_name_escaping_scheme: Option<IgnoredAny>,
    #[serde(rename = "scrape_native_histograms")]
    _scrape_native_histograms: Option<IgnoredAny>,
    #[serde(rename = "always_scrape_classic_histograms")]
    _always_scrape_classic_histograms: Option<IgnoredAny>,
    #[serde(rename = "convert_classic_histograms_to_nhcb")]
    _convert_classic_histograms_to_nhcb: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrapeConfig {
    job_name: Option<SpannedText>,
    scrape_interval: Option<SpannedText>,
    scrape_timeout: Option<SpannedText>,
    metrics_path: Option<SpannedText>,
    params: Option<BTreeMap<String, Option<Vec<Text>>>>,
    scheme: Option<SpannedText>,
    honor_labels: Option<bool>,
    honor_timestamps: Option<bool>,
    sample_limit: Option<usize>,
    label_limit: Option<usize>,
    label_name_length_limit: Option<usize>,
    label_value_length_limit: Option<usize>,
    target_limit: Option<usize>,
    body_size_limit: Option<SpannedText>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
    authorization: Option<Spanned<RawAuthorization>>,
    bearer_token: Option<SpannedText>,
    bearer_token_file: Option<SpannedText>,
    tls_config: Option<Spanned<RawTls>>,
    static_configs: Option<Vec<Spanned<RawGroup>>>,
    file_sd_configs: Option<Vec<Spanned<RawFileSd>>>,
    inventory_sd_configs: Option<Vec<Spanned<RawInventorySd>>>,
    relabel_configs: Option<Vec<Spanned<RelabelConfig>>>,
    metric_relabel_configs: Option<Vec<Spanned<RelabelConfig>>>,
    // Accepted and ignored: tuning of Prometheus' own scraper.
    #[serde(rename = "scrape_protocols")]
    _scrape_protocols: Option<IgnoredAny>,
    #[serde(rename = "fallback_scrape_protocol")]
    _fallback_scrape_protocol: Option<IgnoredAny>,
    #[serde(rename = "scrape_classic_histograms")]
    _scrape_classic_histograms: Option<IgnoredAny>,
    #[serde(rename = "always_scrape_classic_histograms")]
    _always_scrape_classic_histograms: Option<IgnoredAny>,
    #[serde(rename = "convert_classic_histograms_to_nhcb")]
    _convert_classic_histograms_to_nhcb: Option<IgnoredAny>,
    #[serde(rename = "scrape_native_histograms")]
    _scrape_native_histograms: Option<IgnoredAny>,
    #[serde(rename = "native_histogram_bucket_limit")]
    _native_histogram_bucket_limit: Option<IgnoredAny>,
    #[serde(rename = "native_histogram_min_bucket_factor")]
    _native_histogram_min_bucket_factor: Option<IgnoredAny>,
    #[serde(rename = "track_timestamps_staleness")]
    _track_timestamps_staleness: Option<IgnoredAny>,
    #[serde(rename = "enable_compression")]
    _enable_compression: Option<IgnoredAny>,
    #[serde(rename = "enable_http2")]
    _enable_http2: Option<IgnoredAny>,
    #[serde(rename = "follow_redirects")]
    _follow_redirects: Option<IgnoredAny>,
    #[serde(rename = "keep_dropped_targets")]
    _keep_dropped_targets: Option<IgnoredAny>,
    #[serde(rename = "metric_name_validation_scheme")]
    _metric_name_validation_scheme: Option<IgnoredAny>,
    #[serde(rename = "metric_name_escaping_scheme")]
    _metric_name_escaping_scheme: Option<IgnoredAny>,
    #[serde(rename = "scrape_failure_log_file")]
    _scrape_failure_log_file: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: Option<SpannedText>,
    username_file: Option<SpannedText>,
    password: Option<SpannedText>,
    password_file: Option<SpannedText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(rename = "type")]
    kind: Option<SpannedText>,
    credentials: Option<SpannedText>,
    credentials_file: Option<SpannedText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<SpannedText>,
    cert_file: Option<SpannedText>,
    key_file: Option<SpannedText>,
    server_name: Option<SpannedText>,
    insecure_skip_verify: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    targets: Option<Vec<SpannedText>>,
    labels: Option<LabelMap>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSd {
    files: Option<Vec<SpannedText>>,
    refresh_interval: Option<SpannedText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventorySd {
    selector: Option<SpannedText>,
    port: Option<Spanned<i64>>,
    scheme: Option<SpannedText>,
}

/// A group of a `file_sd_configs` YAML file (strict, as Prometheus reads YAML).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileGroupYaml {
    targets: Option<Vec<Text>>,
    labels: Option<BTreeMap<String, Text>>,
}

/// A group of a `file_sd_configs` JSON file (unknown keys ignored, as Go's JSON decoder
/// does).
#[derive(Deserialize)]
struct RawFileGroupJson {
    targets: Option<Vec<String>>,
    labels: Option<BTreeMap<String, Text>>,
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Loads a scrape configuration. `config_dir` is the directory of the file, against which
/// relative file names in it are resolved.
pub fn load(text: &str, config_dir: &Path) -> Result<ScrapeFile, ConfigError> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, Some(text)))?;
    if let Some(s) = &raw.scrape_config_files {
        return Err(ConfigError::at(
            s.referenced,
            "scrape_config_files is not supported by Minos: put the scrape configs in this file",
        ));
    }
    let global = match &raw.global {
        Some(g) => build_global(&g.value, g.referenced, &|name| std::env::var(name).ok())?,
        None => Global::default(),
    };
    let mut scrape_configs: Vec<ScrapeConfig> = Vec::new();
    let mut names: HashMap<String, (usize, Option<u64>)> = HashMap::new();
    for (index, job) in raw.scrape_configs.unwrap_or_default().iter().enumerate() {
        let cfg = build_job(index, &job.value, job.referenced, &global, config_dir)?;
        let line = job
            .value
            .job_name
            .as_ref()
            .and_then(|n| line_of(n.referenced));
        if let Some((first, first_line)) = names.get(&cfg.job_name) {
            let where_ = first_line.map_or_else(String::new, |l| format!(" (line {l})"));
            return Err(ConfigError::new(
                line,
                format!(
                    "scrape_configs[{index}]: job_name {:?} is already used by scrape_configs[{first}]{where_}",
                    cfg.job_name
                ),
            ));
        }
        names.insert(cfg.job_name.clone(), (index, line));
        scrape_configs.push(cfg);
    }
    Ok(ScrapeFile {
        global,
        scrape_configs,
    })
}

fn build_global(
    raw: &RawGlobal,
    at: Location,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Global, ConfigError> {
    let mut g = Global::default();
    let interval = opt_duration(raw.scrape_interval.as_ref(), "global.scrape_interval")?;
    let timeout = opt_duration(raw.scrape_timeout.as_ref(), "global.scrape_timeout")?;
    opt_duration(
        raw.evaluation_interval.as_ref(),
        "global.evaluation_interval",
    )?;
    opt_duration(raw.rule_query_offset.as_ref(), "global.rule_query_offset")?;
    if let Some(i) = interval {
        g.scrape_interval = i;
    }
    match timeout {
        Some(t) if t > g.scrape_interval => {
            let loc = raw.scrape_timeout.as_ref().map_or(at, |s| s.referenced);
            return Err(ConfigError::at(
                loc,
                format!(
                    "global.scrape_timeout {} is longer than global.scrape_interval {}",
                    format_duration(t),
                    format_duration(g.scrape_interval)
                ),
            ));
        }
        Some(t) => g.scrape_timeout = t,
        None => g.scrape_timeout = DEFAULT_SCRAPE_TIMEOUT.min(g.scrape_interval),
    }
    for (name, value) in raw.external_labels.iter().flatten() {
        if !is_valid_label_name(name) {
            return Err(ConfigError::at(
                value.referenced,
                format!("global.external_labels: {name:?} is not a valid label name"),
            ));
        }
        let expanded = expand_env(&value.value.0, env);
        if !expanded.is_empty() {
            g.external_labels.insert(name.clone(), expanded);
        }
    }
    if let Some(size) = &raw.body_size_limit {
        g.body_size_limit = parse_size(&size.value.0).map_err(|e| {
            ConfigError::at(size.referenced, format!("global.body_size_limit: {e}"))
        })?;
    }
    g.sample_limit = raw.sample_limit.unwrap_or(0);
    g.label_limit = raw.label_limit.unwrap_or(0);
    g.label_name_length_limit = raw.label_name_length_limit.unwrap_or(0);
    g.label_value_length_limit = raw.label_value_length_limit.unwrap_or(0);
    g.target_limit = raw.target_limit.unwrap_or(0);
    Ok(g)
}

/// A duration field: `None` when unset, `null` or `0` (Prometheus' "unset").
fn opt_duration(field: Option<&SpannedText>, what: &str) -> Result<Option<Duration>, ConfigError> {
    let Some(f) = field else { return Ok(None) };
    let d = parse_duration(&f.value.0)
        .map_err(|e| ConfigError::at(f.referenced, format!("{what}: {e}")))?;
    Ok(Some(d).filter(|d| !d.is_zero()))
}

/// What a job's messages start with: `scrape_configs[1] (job "node")`.
struct JobCtx<'a> {
    index: usize,
    name: Option<&'a str>,
}

impl fmt::Display for JobCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scrape_configs[{}]", self.index)?;
        if let Some(name) = self.name {
            write!(f, " (job {name:?})")?;
        }
        Ok(())
    }
}

fn build_job(
    index: usize,
    raw: &RawScrapeConfig,
    at: Location,
    global: &Global,
    dir: &Path,
) -> Result<ScrapeConfig, ConfigError> {
    let job_name = match &raw.job_name {
        Some(n) if !n.value.0.is_empty() => n.value.0.clone(),
        Some(n) => {
            return Err(ConfigError::at(
                n.referenced,
                format!("scrape_configs[{index}]: job_name is empty"),
            ));
        }
        None => {
            return Err(ConfigError::at(
                at,
                format!("scrape_configs[{index}]: job_name is missing"),
            ));
        }
    };
    let ctx = JobCtx {
        index,
        name: Some(&job_name),
    };
    let err = |loc: Location, msg: String| ConfigError::at(loc, format!("{ctx}: {msg}"));
    let field_err =
        |f: &SpannedText, what: &str, e: String| err(f.referenced, format!("{what}: {e}"));

    let mut cfg = ScrapeConfig {
        job_name: job_name.clone(),
        ..ScrapeConfig::default()
    };

    // Interval and timeout, as Prometheus' ScrapeConfig.Validate.
    let interval = opt_duration(raw.scrape_interval.as_ref(), "scrape_interval")
        .map_err(|e| prefix(e, &ctx))?;
    let timeout =
        opt_duration(raw.scrape_timeout.as_ref(), "scrape_timeout").map_err(|e| prefix(e, &ctx))?;
    cfg.scrape_interval = interval.unwrap_or(global.scrape_interval);
    cfg.scrape_timeout = match timeout {
        Some(t) if t > cfg.scrape_interval => {
            let loc = raw.scrape_timeout.as_ref().map_or(at, |s| s.referenced);
            let whence = if interval.is_some() {
                ""
            } else {
                " (global.scrape_interval)"
            };
            return Err(err(
                loc,
                format!(
                    "scrape_timeout {} is longer than scrape_interval {}{whence}",
                    format_duration(t),
                    format_duration(cfg.scrape_interval)
                ),
            ));
        }
        Some(t) => t,
        None => global.scrape_timeout.min(cfg.scrape_interval),
    };

    if let Some(p) = &raw.metrics_path {
        cfg.metrics_path = p.value.0.clone();
    }
    if let Some(s) = &raw.scheme {
        let scheme = s.value.0.as_str();
        if scheme != "http" && scheme != "https" {
            return Err(field_err(
                s,
                "scheme",
                format!("{scheme:?} is not http or https"),
            ));
        }
        cfg.scheme = scheme.to_owned();
    }
    for (name, values) in raw.params.iter().flatten() {
        let values = values.iter().flatten().map(|t| t.0.clone()).collect();
        cfg.params.insert(name.clone(), values);
    }
    cfg.honor_labels = raw.honor_labels.unwrap_or(false);
    cfg.honor_timestamps = raw.honor_timestamps.unwrap_or(true);

    let or_global = |v: Option<usize>, g: usize| v.filter(|&v| v != 0).unwrap_or(g);
    cfg.sample_limit = or_global(raw.sample_limit, global.sample_limit);
    cfg.label_limit = or_global(raw.label_limit, global.label_limit);
    cfg.label_name_length_limit =
        or_global(raw.label_name_length_limit, global.label_name_length_limit);
    cfg.label_value_length_limit = or_global(
        raw.label_value_length_limit,
        global.label_value_length_limit,
    );
    cfg.target_limit = or_global(raw.target_limit, global.target_limit);
    cfg.body_size_limit = match &raw.body_size_limit {
        Some(s) => parse_size(&s.value.0).map_err(|e| field_err(s, "body_size_limit", e))?,
        None => 0,
    };
    if cfg.body_size_limit == 0 {
        cfg.body_size_limit = global.body_size_limit;
    }

    cfg.auth = build_auth(raw, dir).map_err(|e| prefix(e, &ctx))?;
    if let Some(tls) = &raw.tls_config {
        cfg.tls_insecure_skip_verify = tls.value.insecure_skip_verify.unwrap_or(false);
        cfg.tls = build_tls(&tls.value, tls.referenced, dir).map_err(|e| prefix(e, &ctx))?;
    }

    let has_relabel = raw.relabel_configs.as_ref().is_some_and(|r| !r.is_empty());
    for (i, group) in raw.static_configs.iter().flatten().enumerate() {
        let what = format!("static_configs[{i}]");
        let mut targets = Vec::new();
        for t in group.value.targets.iter().flatten() {
            if !has_relabel && let Err(e) = check_address(&t.value.0) {
                return Err(err(t.referenced, format!("{what}: target {e}")));
            }
            targets.push(t.value.0.clone());
        }
        let labels = label_map(group.value.labels.as_ref())
            .map_err(|(loc, e)| err(loc, format!("{what}.labels: {e}")))?;
        cfg.static_configs.push(TargetGroup {
            targets,
            labels,
            source: format!("static/{i}"),
        });
    }

    for (i, sd) in raw.file_sd_configs.iter().flatten().enumerate() {
        let what = format!("file_sd_configs[{i}]");
        let files = sd.value.files.as_deref().unwrap_or_default();
        if files.is_empty() {
            return Err(err(
                sd.referenced,
                format!("{what}: files must name at least one file"),
            ));
        }
        for f in files {
            check_file_sd_pattern(&f.value.0)
                .map_err(|e| err(f.referenced, format!("{what}.files: {e}")))?;
        }
        let refresh_interval = match &sd.value.refresh_interval {
            Some(r) => {
                let d = parse_duration(&r.value.0)
                    .map_err(|e| field_err(r, &format!("{what}.refresh_interval"), e))?;
                if d.is_zero() {
                    return Err(field_err(
                        r,
                        &format!("{what}.refresh_interval"),
                        "must be longer than 0".into(),
                    ));
                }
                d
            }
            None => DEFAULT_FILE_SD_REFRESH,
        };
        cfg.file_sd_configs.push(FileSd {
            files: files.iter().map(|f| f.value.0.clone()).collect(),
            refresh_interval,
        });
    }

    for (i, sd) in raw.inventory_sd_configs.iter().flatten().enumerate() {
        let what = format!("inventory_sd_configs[{i}]");
        let selector = match &sd.value.selector {
            Some(s) if !s.value.0.trim().is_empty() => s.value.0.clone(),
            Some(s) => return Err(field_err(s, &what, "selector is empty".into())),
            None => return Err(err(sd.referenced, format!("{what}: selector is missing"))),
        };
        let port = match &sd.value.port {
            Some(p) => u16::try_from(p.value)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| {
                    err(
                        p.referenced,
                        format!("{what}: port {} is not in 1-65535", p.value),
                    )
                })?,
            None => return Err(err(sd.referenced, format!("{what}: port is missing"))),
        };
        let scheme = match &sd.value.scheme {
            Some(s) if s.value.0 == "http" || s.value.0 == "https" => Some(s.value.0.clone()),
            Some(s) => {
                return Err(field_err(
                    s,
                    &format!("{what}.scheme"),
                    format!("{:?} is not http or https", s.value.0),
                ));
            }
            None => None,
        };
        cfg.inventory_sd_configs.push(InventorySd {
            selector,
            port,
            scheme,
        });
    }

    cfg.relabel = compile_relabel(raw.relabel_configs.as_deref(), at, "relabel_configs", &ctx)?;
    cfg.metric_relabel = compile_relabel(
        raw.metric_relabel_configs.as_deref(),
        at,
        "metric_relabel_configs",
        &ctx,
    )?;
    Ok(cfg)
}

fn prefix(e: ConfigError, ctx: &JobCtx<'_>) -> ConfigError {
    ConfigError::new(e.line, format!("{ctx}: {}", e.message))
}

/// Label names checked; empty values (absent labels) left out.
fn label_map(raw: Option<&LabelMap>) -> Result<BTreeMap<String, String>, (Location, String)> {
    let mut out = BTreeMap::new();
    for (name, value) in raw.into_iter().flatten() {
        if !is_valid_label_name(name) {
            return Err((
                value.referenced,
                format!("{name:?} is not a valid label name"),
            ));
        }
        if !value.value.0.is_empty() {
            out.insert(name.clone(), value.value.0.clone());
        }
    }
    Ok(out)
}

fn compile_relabel(
    list: Option<&[Spanned<RelabelConfig>]>,
    at: Location,
    what: &str,
    ctx: &JobCtx<'_>,
) -> Result<Relabeler, ConfigError> {
    let list = list.unwrap_or_default();
    let configs: Vec<RelabelConfig> = list.iter().map(|s| s.value.clone()).collect();
    Relabeler::new(&configs).map_err(|e| {
        let loc = list.get(e.index).map_or(at, |s| s.referenced);
        ConfigError::at(loc, format!("{ctx}: {what}[{}]: {}", e.index, e.message))
    })
}

/// Resolves `name` against the config's directory.
fn resolve(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Reads a secret file, trimmed; the error names the field and the file.
fn read_secret(dir: &Path, field: &SpannedText, what: &str) -> Result<String, ConfigError> {
    let path = resolve(dir, &field.value.0);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| ConfigError::at(field.referenced, format!("{what} {}: {e}", path.display())))
}

fn build_auth(raw: &RawScrapeConfig, dir: &Path) -> Result<Option<Auth>, ConfigError> {
    let legacy = raw.bearer_token.as_ref().or(raw.bearer_token_file.as_ref());
    let given: Vec<(&str, Location)> = [
        ("basic_auth", raw.basic_auth.as_ref().map(|s| s.referenced)),
        (
            "authorization",
            raw.authorization.as_ref().map(|s| s.referenced),
        ),
        ("bearer_token", legacy.map(|s| s.referenced)),
    ]
    .into_iter()
    .filter_map(|(name, loc)| loc.map(|l| (name, l)))
    .collect();
    if let [(a, _), (b, loc), ..] = given.as_slice() {
        return Err(ConfigError::at(
            *loc,
            format!("{a} and {b} are both set: at most one kind of credentials can be"),
        ));
    }
    if let (Some(_), Some(f)) = (&raw.bearer_token, &raw.bearer_token_file) {
        return Err(ConfigError::at(
            f.referenced,
            "bearer_token and bearer_token_file are both set: at most one can be",
        ));
    }
    if let Some(t) = &raw.bearer_token {
        return Ok(Some(Auth::Bearer(t.value.0.clone())));
    }
    if let Some(f) = &raw.bearer_token_file {
        return Ok(Some(Auth::Bearer(read_secret(
            dir,
            f,
            "bearer_token_file",
        )?)));
    }
    if let Some(b) = &raw.basic_auth {
        let b = &b.value;
        let username = match (&b.username, &b.username_file) {
            (Some(_), Some(f)) => {
                return Err(ConfigError::at(
                    f.referenced,
                    "basic_auth: username and username_file are both set: at most one can be",
                ));
            }
            (Some(u), None) => u.value.0.clone(),
            (None, Some(f)) => read_secret(dir, f, "basic_auth.username_file")?,
            (None, None) => String::new(),
        };
        let password = match (&b.password, &b.password_file) {
            (Some(_), Some(f)) => {
                return Err(ConfigError::at(
                    f.referenced,
                    "basic_auth: password and password_file are both set: at most one can be",
                ));
            }
            (Some(p), None) => p.value.0.clone(),
            (None, Some(f)) => read_secret(dir, f, "basic_auth.password_file")?,
            (None, None) => String::new(),
        };
        return Ok(Some(Auth::Basic { username, password }));
    }
    if let Some(a) = &raw.authorization {
        let loc = a.referenced;
        let a = &a.value;
        let kind = a
            .kind
            .as_ref()
            .map(|k| k.value.0.trim())
            .filter(|k| !k.is_empty())
            .unwrap_or("Bearer")
            .to_owned();
        if kind.eq_ignore_ascii_case("basic") {
            let loc = a.kind.as_ref().map_or(loc, |k| k.referenced);
            return Err(ConfigError::at(
                loc,
                "authorization: type cannot be \"Basic\": use basic_auth instead",
            ));
        }
        let credentials = match (&a.credentials, &a.credentials_file) {
            (Some(_), Some(f)) => {
                return Err(ConfigError::at(
                    f.referenced,
                    "authorization: credentials and credentials_file are both set: at most one can be",
                ));
            }
            (Some(c), None) => c.value.0.clone(),
            (None, Some(f)) => read_secret(dir, f, "authorization.credentials_file")?,
            (None, None) => String::new(),
        };
        return Ok(Some(if kind.eq_ignore_ascii_case("bearer") {
            Auth::Bearer(credentials)
        } else {
            Auth::Authorization { kind, credentials }
        }));
    }
    Ok(None)
}

fn build_tls(raw: &RawTls, at: Location, dir: &Path) -> Result<TlsFiles, ConfigError> {
    let file = |f: &Option<SpannedText>, what: &str| -> Result<Option<PathBuf>, ConfigError> {
        let Some(f) = f else { return Ok(None) };
        if f.value.0.is_empty() {
            return Ok(None);
        }
        let path = resolve(dir, &f.value.0);
        std::fs::metadata(&path).map_err(|e| {
            ConfigError::at(
                f.referenced,
                format!("tls_config.{what} {}: {e}", path.display()),
            )
        })?;
        Ok(Some(path))
    };
    let tls = TlsFiles {
        ca_file: file(&raw.ca_file, "ca_file")?,
        cert_file: file(&raw.cert_file, "cert_file")?,
        key_file: file(&raw.key_file, "key_file")?,
        server_name: raw
            .server_name
            .as_ref()
            .map(|s| s.value.0.clone())
            .filter(|s| !s.is_empty()),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => Err(ConfigError::at(
            at,
            "tls_config: cert_file is set without key_file",
        )),
        (None, Some(_)) => Err(ConfigError::at(
            at,
            "tls_config: key_file is set without cert_file",
        )),
        _ => Ok(tls),
    }
}

// ---------------------------------------------------------------------------------------
// YAML errors
// ---------------------------------------------------------------------------------------

/// Keys Prometheus knows whose meaning Minos does not implement, with what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("oauth2", "use authorization or basic_auth"),
    ("proxy_url", "Minos scrapes targets directly"),
    ("no_proxy", "Minos scrapes targets directly"),
    ("proxy_from_environment", "Minos scrapes targets directly"),
    ("proxy_connect_header", "Minos scrapes targets directly"),
    ("http_headers", "use authorization for credentials"),
    ("ca", "put the certificate in a file and use ca_file"),
    ("cert", "put the certificate in a file and use cert_file"),
    ("key", "put the key in a file and use key_file"),
    ("min_version", "Minos uses its TLS library's defaults"),
    ("max_version", "Minos uses its TLS library's defaults"),
];

/// A serde-saphyr error as a [`ConfigError`]: its line, where in the scrape config `text`
/// it is (global, which job), and a friendlier text for unknown and unsupported keys.
fn yaml_error(e: &serde_saphyr::Error, text: Option<&str>) -> ConfigError {
    let line = e.location().and_then(line_of);
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    let raw: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let message = match unknown_field(&raw) {
        Some((field, expected)) => unknown_field_message(field, &expected),
        None => plain_words(&raw),
    };
    let message = match line.zip(text).and_then(|(l, text)| section_at(text, l)) {
        Some(section) => format!("{section}: {message}"),
        None => message,
    };
    ConfigError::new(line, message)
}

/// serde-saphyr's wording where it speaks of its parser or API rather than of the file.
fn plain_words(msg: &str) -> String {
    let msg = msg
        .split_once(", set DuplicateKeyPolicy")
        .map_or(msg, |(head, _)| head);
    match msg {
        "expected sequence start" => "expected a list".to_owned(),
        "expected mapping start" => "expected a mapping (key: value lines)".to_owned(),
        "expected string scalar" => "expected a single value".to_owned(),
        "invalid u64" | "invalid usize" => "expected a whole number, 0 or more".to_owned(),
        "invalid i64" => "expected a whole number".to_owned(),
        "invalid boolean" => "expected true or false".to_owned(),
        _ => msg.to_owned(),
    }
}

/// The field name and the expected ones of serde's "unknown field" message.
fn unknown_field(msg: &str) -> Option<(&str, Vec<&str>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split_once("expected one of ")
        .map(|(_, list)| {
            list.split(',')
                .map(|s| s.trim().trim_matches('`'))
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some((field, expected))
}

fn unknown_field_message(field: &str, expected: &[&str]) -> String {
    if let Some((_, hint)) = UNSUPPORTED.iter().find(|(name, _)| *name == field) {
        return format!("{field} is not supported by Minos ({hint})");
    }
    if field.ends_with("_sd_configs") {
        return format!(
            "{field} is not supported by Minos: targets come from static_configs, \
             file_sd_configs or inventory_sd_configs"
        );
    }
    let best = expected
        .iter()
        .filter(|name| !name.starts_with('_'))
        .map(|name| (edit_distance(field, name), *name))
        .min();
    match best {
        Some((d, name)) if d <= 2.max(field.len() / 4) => {
            format!("unknown field `{field}` (did you mean `{name}`?)")
        }
        _ => format!("unknown field `{field}`"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where line `line` is: `scrape_configs[i] (job "x")`, the top-level section (`global`,
/// ...), or `None` (before any, or a file too broken to tell).
fn section_at(text: &str, line: u64) -> Option<String> {
    #[derive(Deserialize)]
    struct LooseFile {
        scrape_configs: Option<Vec<Spanned<LooseJob>>>,
    }
    #[derive(Deserialize)]
    struct LooseJob {
        job_name: Option<Text>,
    }
    // Where each top-level section starts, and where each job does.
    let mut starts: Vec<(u64, Option<String>)> = Vec::new();
    // Lenient about what the error may be about: duplicate keys.
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::FirstWins;
    let sections: BTreeMap<String, Spanned<IgnoredAny>> =
        serde_saphyr::from_str_with_options(text, options.clone()).ok()?;
    for (name, value) in &sections {
        starts.extend(line_of(value.referenced).map(|l| (l, Some(name.clone()))));
    }
    if let Ok(loose) = serde_saphyr::from_str_with_options::<LooseFile>(text, options) {
        for (i, job) in loose.scrape_configs.iter().flatten().enumerate() {
            let name = job.value.job_name.as_ref().map(|t| t.0.as_str());
            let label = JobCtx { index: i, name }.to_string();
            starts.extend(line_of(job.referenced).map(|l| (l, Some(label))));
        }
    }
    starts.sort_by_key(|(l, _)| *l);
    starts
        .into_iter()
        .rev()
        .find(|(l, _)| *l <= line)
        .and_then(|(_, label)| label)
}

// ---------------------------------------------------------------------------------------
// Values: durations, sizes, addresses, environment references
// ---------------------------------------------------------------------------------------

/// Parses a Prometheus duration: `[0-9]+` followed by a unit, units in the order
/// `y w d h m s ms`, each at most once (`1h30m`, `90s`, `1w2d`), or `0`. A year is 365
/// days, a week 7.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let bad = || format!("not a valid duration string: {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration string".to_owned());
    }
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let k = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .map(|k| k + next_unit)
            .ok_or_else(bad)?;
        next_unit = k + 1;
        total = n
            .checked_mul(UNITS[k].1)
            .and_then(|ms| total.checked_add(ms))
            .filter(|&ms| i64::try_from(ms).is_ok())
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration as Prometheus does (`1m30s`, `2d`, `0s`); sub-millisecond parts are
/// dropped. Years and weeks are used only when they divide the duration exactly.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, mult, exact) in [
        ("y", 365 * 24 * 3_600_000, true),
        ("w", 7 * 24 * 3_600_000, true),
        ("d", 24 * 3_600_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ] {
        if exact && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
            ms -= v * mult;
        }
    }
    out
}

/// Parses a base-2 size as Prometheus' `body_size_limit` (`100MB`, `1.5GiB`, `1GB512MB`):
/// units `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`, `EB`/`EiB`, all
/// powers of 1024. `0` is zero; a plain integer is bytes (Minos accepts it too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("not a valid size: {s:?} (use B, KB, MB, GB...: 10MB)");
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let n: f64 = rest[..num].parse().map_err(|_| bad())?;
        rest = &rest[num..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let power = match unit {
            "B" => 0,
            "KB" | "KiB" => 1,
            "MB" | "MiB" => 2,
            "GB" | "GiB" => 3,
            "TB" | "TiB" => 4,
            "PB" | "PiB" => 5,
            "EB" | "EiB" => 6,
            _ => return Err(bad()),
        };
        total += n * 1024f64.powi(power);
    }
    if !total.is_finite() || total >= u64::MAX as f64 {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(total as u64)
}

/// Checks a target address: `host`, `host:port` or `[ipv6]:port`, the port in 1-65535 when
/// given. A URL (anything with `/`) is refused, as in Prometheus.
pub fn check_address(addr: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{addr:?} is not a valid host:port: {why}"));
    if addr.is_empty() {
        return Err("the address is empty".to_owned());
    }
    if addr.contains('/') {
        return bad("a URL? set scheme and metrics_path in the job and give host:port");
    }
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\'))
    {
        return bad("it has a space or one of ?#@\\");
    }
    let port = if let Some(rest) = addr.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return bad("no closing ]");
        };
        let ip = host.split_once('%').map_or(host, |(ip, _zone)| ip);
        if ip.parse::<Ipv6Addr>().is_err() {
            return bad("not an IPv6 address between [ and ]");
        }
        if after.is_empty() {
            None
        } else if let Some(p) = after.strip_prefix(':') {
            Some(p)
        } else {
            return bad("text after ]");
        }
    } else {
        if addr.contains('%') || addr.contains('[') || addr.contains(']') {
            return bad("it has one of %[]");
        }
        match addr.split_once(':') {
            None => None,
            Some((_, p)) if p.contains(':') => {
                return bad("an IPv6 address needs brackets: [::1]:9100");
            }
            Some(("", _)) => return bad("no host"),
            Some((_, p)) => Some(p),
        }
    };
    match port {
        None => Ok(()),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && matches!(p.parse::<u16>(), Ok(1..)) => {
            Ok(())
        }
        Some(_) => bad("the port is not a number in 1-65535"),
    }
}

/// Go's `os.Expand` with Prometheus 3's mapping for `external_labels`: `$name` and
/// `${name}` are replaced by `env(name)` (missing: empty), `$$` by `$`.
fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    fn special(b: u8) -> bool {
        matches!(b, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || b.is_ascii_digit()
    }
    /// The name after a `$` and how many bytes it takes; `None` with a width is bad syntax
    /// (eaten), `None` with 0 is a lone `$`.
    fn name(s: &str) -> (Option<&str>, usize) {
        let b = s.as_bytes();
        if b[0] == b'{' {
            if b.len() > 2 && special(b[1]) && b[2] == b'}' {
                return (Some(&s[1..2]), 3);
            }
            return match b.iter().skip(1).position(|&c| c == b'}') {
                Some(0) => (None, 2),
                Some(i) => (Some(&s[1..=i]), i + 2),
                None => (None, 1),
            };
        }
        if special(b[0]) {
            return (Some(&s[..1]), 1);
        }
        let n = b
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        if n == 0 {
            (None, 0)
        } else {
            (Some(&s[..n]), n)
        }
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&s[copied..j]);
            let (n, w) = name(&s[j + 1..]);
            match n {
                None if w > 0 => {}
                None => out.push('$'),
                Some("$") => out.push('$'),
                Some(n) => out.push_str(&env(n).unwrap_or_default()),
            }
            j += w;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&s[copied.min(s.len())..]);
    out
}

// ---------------------------------------------------------------------------------------
// file_sd_configs
// ---------------------------------------------------------------------------------------

const FILE_SD_EXTENSIONS: [&str; 6] = [".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML"];

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Prometheus' check of a `file_sd_configs` path (a `.json`, `.yml` or `.yaml` name), and
/// Minos' (wildcards only in the last element, well-formed).
fn check_file_sd_pattern(pattern: &str) -> Result<(), String> {
    let (dir, base) = split_last(pattern);
    if !FILE_SD_EXTENSIONS.iter().any(|ext| base.ends_with(ext)) {
        return Err(format!(
            "{pattern:?}: the file name must end in .json, .yml or .yaml"
        ));
    }
    if has_wildcard(dir) {
        return Err(format!(
            "{pattern:?}: wildcards are supported in the last path element only"
        ));
    }
    Glob::parse(base)
        .map(drop)
        .map_err(|e| format!("{pattern:?}: {e}"))
}

/// `(directory part, last element)`.
fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The files a `file_sd_configs` pattern names now, sorted: the path itself when it has no
/// wildcard and exists, else the regular files of its directory whose name matches the
/// last element (`*` any run of characters, `?` one, `[a-z]`/`[^a-z]` one of / none of
/// a set, `\` escapes). Relative patterns are relative to `config_dir`. A pattern that is
/// invalid or whose directory cannot be read names nothing.
pub fn expand_file_sd(pattern: &str, config_dir: &Path) -> Vec<PathBuf> {
    let full = resolve(config_dir, pattern);
    let (dir_part, base) = split_last(pattern);
    if !has_wildcard(base) {
        return if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        };
    }
    if has_wildcard(dir_part) {
        return Vec::new();
    }
    let Ok(glob) = Glob::parse(base) else {
        return Vec::new();
    };
    let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob.matches(n)))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// A glob of one path element.
struct Glob(Vec<GlobTok>);

enum GlobTok {
    Star,
    Any,
    Char(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    fn parse(pattern: &str) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            toks.push(match c {
                '*' => GlobTok::Star,
                '?' => GlobTok::Any,
                '\\' => GlobTok::Char(chars.next().ok_or("a trailing \\")?),
                '[' => {
                    let mut negated = false;
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let mut c = chars.next().ok_or("a [ without ]")?;
                        if first && c == '^' {
                            negated = true;
                            first = false;
                            continue;
                        }
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        if c == '\\' {
                            c = chars.next().ok_or("a trailing \\")?;
                        }
                        let mut rest = chars.clone();
                        if rest.next() == Some('-')
                            && let Some(hi) = rest.next()
                            && hi != ']'
                        {
                            let hi = if hi == '\\' {
                                rest.next().ok_or("a trailing \\")?
                            } else {
                                hi
                            };
                            if hi < c {
                                return Err(format!("bad range {c}-{hi}"));
                            }
                            ranges.push((c, hi));
                            chars = rest;
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    GlobTok::Class { negated, ranges }
                }
                c => GlobTok::Char(c),
            });
        }
        Ok(Glob(toks))
    }

    fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let one = |t: &GlobTok, c: char| match t {
            GlobTok::Any => true,
            GlobTok::Char(x) => *x == c,
            GlobTok::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
            GlobTok::Star => false,
        };
        // Backtracking over the last star only: enough, since stars match any run.
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.0.get(p) {
                Some(GlobTok::Star) => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(t) if one(t, name[n]) => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.0[p..].iter().all(|t| matches!(t, GlobTok::Star))
    }
}

/// Reads a `file_sd_configs` file: a list of `{targets: [...], labels: {...}}` in JSON
/// (`.json`) or YAML (`.yml`, `.yaml`). Each group gets the label `__meta_filepath` (the
/// path) and the source `file:<path>:<index>`. An empty YAML file is no groups.
pub fn read_file_sd(path: &Path) -> Result<Vec<TargetGroup>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let groups: Vec<(Vec<String>, BTreeMap<String, Text>)> = match ext.as_str() {
        "json" => {
            let raw: Vec<Option<RawFileGroupJson>> =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            raw.into_iter()
                .enumerate()
                .map(|(i, g)| {
                    g.map(|g| (g.targets.unwrap_or_default(), g.labels.unwrap_or_default()))
                        .ok_or_else(|| format!("group {i} is null"))
                })
                .collect::<Result<_, _>>()?
        }
        "yml" | "yaml" => {
            let raw: Option<Vec<Option<RawFileGroupYaml>>> =
                serde_saphyr::from_str(&text).map_err(|e| yaml_error(&e, None).to_string())?;
            raw.unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, g)| {
                    g.map(|g| {
                        (
                            g.targets
                                .unwrap_or_default()
                                .into_iter()
                                .map(|t| t.0)
                                .collect(),
                            g.labels.unwrap_or_default(),
                        )
                    })
                    .ok_or_else(|| format!("group {i} is null"))
                })
                .collect::<Result<_, _>>()?
        }
        _ => return Err("not a .json, .yml or .yaml file".to_owned()),
    };
    let display = path.display().to_string();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (targets, raw_labels))| {
            let mut labels = BTreeMap::new();
            for (name, value) in raw_labels {
                if !is_valid_label_name(&name) {
                    return Err(format!("group {i}: {name:?} is not a valid label name"));
                }
                if !value.0.is_empty() {
                    labels.insert(name, value.0);
                }
            }
            labels.insert(FILE_PATH_LABEL.to_owned(), display.clone());
            Ok(TargetGroup {
                targets,
                labels,
                source: format!("file:{display}:{i}"),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

/// Builds the targets of a job from its groups (see the module documentation). The second
/// value says, for each target left out, which and why: dropped by relabeling, an invalid
/// address, interval or scheme, a duplicate, or the job's `target_limit`.
pub fn build_targets(cfg: &ScrapeConfig, groups: &[TargetGroup]) -> (Vec<Target>, Vec<String>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut seen: HashSet<(Vec<(String, String)>, String)> = HashSet::new();
    let mut left_out = Vec::new();
    let interval = format_duration(cfg.scrape_interval);
    let timeout = format_duration(cfg.scrape_timeout);
    for (gi, group) in groups.iter().enumerate() {
        let source = if group.source.is_empty() {
            format!("group {gi}")
        } else {
            group.source.clone()
        };
        for addr in &group.targets {
            match populate(cfg, group, addr, &interval, &timeout) {
                Ok(Some(t)) => {
                    if seen.insert((t.labels.clone(), t.url.clone())) {
                        targets.push(t);
                    } else {
                        left_out.push(format!(
                            "{source}: target {addr:?}: the same as an earlier target"
                        ));
                    }
                }
                Ok(None) => left_out.push(format!(
                    "{source}: target {addr:?}: dropped by relabel_configs"
                )),
                Err(e) => left_out.push(format!("{source}: target {addr:?}: {e}")),
            }
        }
    }
    if cfg.target_limit > 0 && targets.len() > cfg.target_limit {
        left_out.push(format!(
            "target_limit exceeded: {} targets, at most {}: none is scraped",
            targets.len(),
            cfg.target_limit
        ));
        targets.clear();
    }
    (targets, left_out)
}

/// Prometheus' `PopulateLabels` and `Target.URL` for one target: `Ok(None)` when relabeling
/// dropped it.
fn populate(
    cfg: &ScrapeConfig,
    group: &TargetGroup,
    addr: &str,
    interval: &str,
    timeout: &str,
) -> Result<Option<Target>, String> {
    let mut labels: BTreeMap<String, String> = group
        .labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert("__address__".to_owned(), addr.to_owned());
    let defaults = [
        ("job", cfg.job_name.as_str()),
        ("__scheme__", cfg.scheme.as_str()),
        ("__metrics_path__", cfg.metrics_path.as_str()),
        ("__scrape_interval__", interval),
        ("__scrape_timeout__", timeout),
    ];
    for (name, value) in defaults {
        if !value.is_empty() {
            labels
                .entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    for (name, values) in &cfg.params {
        if let Some(first) = values.first().filter(|v| !v.is_empty()) {
            labels
                .entry(format!("__param_{name}"))
                .or_insert_with(|| first.clone());
        }
    }
    let mut labels: Vec<(String, String)> = labels.into_iter().collect();
    if !cfg.relabel.is_empty() && !cfg.relabel.apply(&mut labels) {
        return Ok(None);
    }
    let get = |name: &str| -> &str {
        labels
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or("", |i| labels[i].1.as_str())
    };

    let address = get("__address__").to_owned();
    if address.is_empty() {
        return Err("no __address__ after relabeling".to_owned());
    }
    check_address(&address)?;
    let scheme = get("__scheme__");
    if scheme != "http" && scheme != "https" {
        return Err(format!("__scheme__ {scheme:?} is not http or https"));
    }
    let interval_label = get("__scrape_interval__");
    let interval =
        parse_duration(interval_label).map_err(|e| format!("__scrape_interval__: {e}"))?;
    if interval.is_zero() {
        return Err("__scrape_interval__ cannot be 0".to_owned());
    }
    let timeout_label = get("__scrape_timeout__");
    let timeout = parse_duration(timeout_label).map_err(|e| format!("__scrape_timeout__: {e}"))?;
    if timeout.is_zero() {
        return Err("__scrape_timeout__ cannot be 0".to_owned());
    }
    if timeout > interval {
        return Err(format!(
            "__scrape_timeout__ {timeout_label} is longer than __scrape_interval__ {interval_label}"
        ));
    }

    // The URL: params of the config, the first value of each replaced by __param_<name>.
    let mut params = cfg.params.clone();
    for (name, value) in &labels {
        if let Some(key) = name.strip_prefix("__param_") {
            let values = params.entry(key.to_owned()).or_default();
            match values.first_mut() {
                Some(first) => first.clone_from(value),
                None => values.push(value.clone()),
            }
        }
    }
    let mut url = format!("{scheme}://{address}");
    let path = get("__metrics_path__");
    if !path.is_empty() && !path.starts_with('/') {
        url.push('/');
    }
    escape_into(&mut url, path, is_path_byte);
    let mut sep = '?';
    for (key, values) in &params {
        for value in values {
            url.push(sep);
            sep = '&';
            escape_query_into(&mut url, key);
            url.push('=');
            escape_query_into(&mut url, value);
        }
    }

    let has_instance = !get("instance").is_empty();
    labels.retain(|(name, _)| !name.starts_with("__meta_"));
    if !has_instance {
        labels.push(("instance".to_owned(), address));
        labels.sort();
    }
    remove_internal_labels(&mut labels);
    labels.retain(|(_, v)| !v.is_empty());
    Ok(Some(Target {
        labels,
        url,
        interval,
        timeout,
    }))
}

/// Bytes Go's `url.URL` leaves as they are in a path.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'~'
                | b'$'
                | b'&'
                | b'+'
                | b','
                | b'/'
                | b':'
                | b';'
                | b'='
                | b'@'
        )
}

fn escape_into(out: &mut String, s: &str, keep: fn(u8) -> bool) {
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX`.
fn escape_query_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') => {
                out.push(char::from(b));
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
