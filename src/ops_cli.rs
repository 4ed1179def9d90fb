//! `minos hosts`, `minos tree`, `minos tag` and `minos token`: clients of the ops API
//! (`/api/ops/v1/`). Each reads the server address and token from `--server`/`--token`
//! or `MINOS_SERVER`/`MINOS_TOKEN`, prints a readable table (or `--json`), and exits with
//! status 2 and the server's message when a call is refused.

use std::fmt::Write as _;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// Where the ops API is and the token to use.
#[derive(clap::Args, Debug)]
pub struct Conn {
    /// The server to ask.
    #[arg(
        long,
        global = true,
        env = "MINOS_SERVER",
        default_value = "http://127.0.0.1:9797"
    )]
    server: String,
    /// An admin or api token (the server's first start wrote one to
    /// `<data>/admin.token`).
    #[arg(long, global = true, env = "MINOS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A private CA's certificates (PEM) to trust for an `https://` server, besides the
    /// public web PKI roots.
    #[arg(long = "tls.ca-file", global = true, env = "MINOS_TLS_CA_FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
}

/// A blocking HTTP client for the server at `--server`, trusting `ca_file` besides the
/// public web PKI roots; through the environment's proxy unless `no_proxy`.
pub(crate) fn http_client(
    ca_file: Option<&std::path::Path>,
    timeout: Option<std::time::Duration>,
    no_proxy: bool,
) -> Result<reqwest::blocking::Client> {
    let tls = agent::tls::client_config(ca_file).map_err(|e| anyhow!("--tls.ca-file {e}"))?;
    let mut b = reqwest::blocking::Client::builder().use_preconfigured_tls(tls);
    if no_proxy {
        b = b.no_proxy();
    }
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().context("cannot build the HTTP client")
}

#[derive(clap::Args, Debug)]
pub struct HostsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: HostsCmd,
}

#[derive(clap::Subcommand, Debug)]
enum HostsCmd {
    /// List the hosts a selector names (all without one).
    List {
        /// `key=value`, `/tree/path`, host names and globs, joined with `,`.
        selector: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one host: its placements, labels and tags.
    Show { host: String },
    /// Import hosts from a CSV file (`hostname,nodes,tags`; nodes and tags `;`-separated).
    Import { file: std::path::PathBuf },
    /// Add a host without an agent.
    Add {
        hostname: String,
        /// A tree node to attach it to (repeatable).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A tag `key=value` (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct TreeArgs {
    #[command(flatten)]
    conn: Conn,
    /// Print the API's JSON instead of the tree.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<TreeCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum TreeCmd {
    /// Add a node: `minos tree add /sre/minos --kind service`.
    Add {
        path: String,
        #[arg(long)]
        kind: String,
    },
    /// Move a node (and what is below it) under another (`/` for the top level).
    Move { path: String, to: String },
    /// Remove an empty node.
    Rm { path: String },
}

#[derive(clap::Args, Debug)]
pub struct TagArgs {
    #[command(flatten)]
    conn: Conn,
    /// Tag a tree node (a path) instead of a host.
    #[arg(long)]
    node: bool,
    /// The host name (or, with --node, the tree path).
    target: String,
    /// `key=value` to set, `key=` to remove.
    #[arg(required = true)]
    pairs: Vec<String>,
}

/// A blocking client of the ops API.
pub(crate) struct Client {
    pub(crate) base: String,
    token: String,
    pub(crate) http: reqwest::blocking::Client,
}

impl Client {
    pub(crate) fn new(c: &Conn) -> Result<Client> {
        let token = c.token.clone().ok_or_else(|| {
            anyhow!(
                "no token: pass --token or set MINOS_TOKEN (the server's first start wrote \
                 one to <data>/admin.token)"
            )
        })?;
        let http = http_client(
            c.tls_ca_file.as_deref(),
            Some(std::time::Duration::from_secs(60)),
            false,
        )?;
        Ok(Client {
            base: c.server.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Calls the API; the `data` of a success, else the server's message as the error.
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/api/ops/v1{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send(req, &url)
    }

    /// Posts a text body (a CSV import).
    fn call_text(&self, path: &str, body: String) -> Result<Value> {
        let url = format!("{}/api/ops/v1{path}", self.base);
        let req = self
            .http
            .post(&url)
            .header("content-type", "text/csv")
            .body(body);
        self.send(req, &url)
    }

    pub(crate) fn send(&self, req: reqwest::blocking::RequestBuilder, url: &str) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("{url}: cannot connect"))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let v: Value =
            serde_json::from_str(&text).map_err(|_| anyhow!("{url}: {status}: {}", text.trim()))?;
        if v["status"] != "success" {
            return Err(Refused {
                error_type: v["errorType"].as_str().unwrap_or("").to_string(),
                message: v["error"].as_str().unwrap_or(text.trim()).to_string(),
            }
            .into());
        }
        Ok(v["data"].clone())
    }
}

/// The server answered a call with an error: its message is what is shown; the
/// `errorType` lets a caller tell one refusal from another (a `downcast_ref`).
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error_type: String,
    pub(crate) message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

fn tags_text(tags: &Value) -> String {
    tags.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn pairs(list: &[String], allow_empty: bool) -> Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for p in list {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("{p:?}: expected key=value"))?;
        if v.is_empty() && !allow_empty {
            bail!("{p:?}: a tag needs a value");
        }
        let v = if v.is_empty() {
            Value::Null
        } else {
            Value::String(v.to_string())
        };
        m.insert(k.to_string(), v);
    }
    Ok(m)
}

/// Splits `/a/b/c` into (`/a/b`, `c`).
fn split_path(path: &str) -> Result<(String, String)> {
    let p = path.trim_end_matches('/');
    let (parent, name) = p
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("{path:?}: a tree path starts with /"))?;
    if name.is_empty() {
        bail!("{path:?}: no node name");
    }
    Ok((
        if parent.is_empty() { "/" } else { parent }.to_string(),
        name.to_string(),
    ))
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time.
pub(crate) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The agent part of `minos hosts show`.
fn agent_text(a: &serde_json::Value) -> String {
    if a.is_null() {
        return "agent: none\n".into();
    }
    let f = &a["facts"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let gib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agent: {}{}, last heartbeat {}",
        s(&a["status"]),
        if a["connected"] == true {
            " (connected)"
        } else {
            ""
        },
        a["last_heartbeat"]
            .as_i64()
            .filter(|t| *t > 0)
            .map_or("never".into(), utc)
    );
    let _ = writeln!(out, "os: {}", s(&f["os"]["pretty_name"]));
    let _ = writeln!(out, "kernel: {} ({})", s(&f["kernel"]), s(&f["arch"]));
    let _ = writeln!(
        out,
        "cpu: {} x {}",
        f["cpu_count"].as_u64().unwrap_or(0),
        s(&f["cpu_model"])
    );
    let _ = writeln!(
        out,
        "memory: {:.1} GiB, swap {:.1} GiB",
        gib(&f["memory_bytes"]),
        gib(&f["swap_bytes"])
    );
    let ips: Vec<String> = f["ips"].as_array().into_iter().flatten().map(s).collect();
    let _ = writeln!(out, "addresses: {}", ips.join(" "));
    for d in f["disks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "disk {}: {:.1} GiB",
            s(&d["name"]),
            gib(&d["size_bytes"])
        );
    }
    for m in f["filesystems"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "filesystem {} ({} on {}): {:.1} GiB",
            s(&m["mountpoint"]),
            s(&m["fstype"]),
            s(&m["device"]),
            gib(&m["size_bytes"])
        );
    }
    let _ = writeln!(out, "machine id: {}", s(&f["machine_id"]));
    let _ = writeln!(out, "agent version: {}", s(&f["agent_version"]));
    out
}

pub fn hosts(a: HostsArgs) -> Result<()> {
    let c = Client::new(&a.conn)?;
    match a.cmd {
        HostsCmd::List { selector, json } => {
            let sel = selector.unwrap_or_else(|| "*".into());
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("selector", &sel)
                .finish();
            let data = c.call(reqwest::Method::GET, &format!("/hosts?{q}"), None)?;
            if json {
                println!("{data}");
                return Ok(());
            }
            let mut out = String::from("HOST\tSTATUS\tPLACEMENTS\tTAGS\n");
            for h in data["hosts"].as_array().into_iter().flatten() {
                let places: Vec<&str> = h["placements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["path"].as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    h["hostname"].as_str().unwrap_or(""),
                    h["agent"]["status"].as_str().unwrap_or("no agent"),
                    if places.is_empty() {
                        "-".to_string()
                    } else {
                        places.join(",")
                    },
                    tags_text(&h["tags"])
                );
            }
            print!("{out}");
        }
        HostsCmd::Show { host } => {
            if host.contains([',', '=', '*', '?', '[']) || host.starts_with('/') {
                bail!("{host:?}: give one host name (minos hosts list takes selectors)");
            }
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("selector", &host)
                .finish();
            let data = c.call(reqwest::Method::GET, &format!("/hosts?{q}"), None)?;
            let h = &data["hosts"][0];
            println!("host: {}", h["hostname"].as_str().unwrap_or(""));
            println!("tags: {}", tags_text(&h["tags"]));
            for p in h["placements"].as_array().into_iter().flatten() {
                println!(
                    "at {}: {}",
                    p["path"].as_str().unwrap_or("(nowhere)"),
                    tags_text(&p["labels"])
                );
            }
            print!("{}", agent_text(&h["agent"]));
        }
        HostsCmd::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let d = c.call_text("/hosts/import", text)?;
            println!(
                "imported {}: {} added, {} updated",
                file.display(),
                d["added"],
                d["updated"]
            );
        }
        HostsCmd::Add {
            hostname,
            nodes,
            tags,
        } => {
            let body = json!({"hostname": hostname, "nodes": nodes, "tags": pairs(&tags, false)?});
            c.call(reqwest::Method::POST, "/hosts", Some(body))?;
            println!("added {hostname}");
        }
    }
    Ok(())
}

pub fn tree(a: TreeArgs) -> Result<()> {
    let c = Client::new(&a.conn)?;
    match a.cmd {
        None => {
            let data = c.call(reqwest::Method::GET, "/tree", None)?;
            if a.json {
                println!("{data}");
                return Ok(());
            }
            // Nodes come sorted by path, so parents precede their children.
            for n in data["nodes"].as_array().into_iter().flatten() {
                let path = n["path"].as_str().unwrap_or("");
                let depth = path.matches('/').count().saturating_sub(1);
                let tags = tags_text(&n["tags"]);
                println!(
                    "{}{} ({}){}",
                    "  ".repeat(depth),
                    n["name"].as_str().unwrap_or(""),
                    n["kind"].as_str().unwrap_or(""),
                    if tags.is_empty() {
                        String::new()
                    } else {
                        format!("  {tags}")
                    }
                );
            }
        }
        Some(TreeCmd::Add { path, kind }) => {
            let (parent, name) = split_path(&path)?;
            let d = c.call(
                reqwest::Method::POST,
                "/tree/nodes",
                Some(json!({"parent": parent, "name": name, "kind": kind})),
            )?;
            println!("added {}", d["path"].as_str().unwrap_or(&path));
        }
        Some(TreeCmd::Move { path, to }) => {
            let d = c.call(
                reqwest::Method::POST,
                "/tree/move",
                Some(json!({"path": path, "to": to})),
            )?;
            println!("moved to {}", d["path"].as_str().unwrap_or(""));
        }
        Some(TreeCmd::Rm { path }) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("path", &path)
                .finish();
            c.call(reqwest::Method::DELETE, &format!("/tree/nodes?{q}"), None)?;
            println!("removed {path}");
        }
    }
    Ok(())
}

pub fn tag(a: TagArgs) -> Result<()> {
    let c = Client::new(&a.conn)?;
    let tags = pairs(&a.pairs, true)?;
    let body = if a.node {
        json!({"node": a.target, "tags": tags})
    } else {
        json!({"host": a.target, "tags": tags})
    };
    c.call(reqwest::Method::POST, "/tags", Some(body))?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: TokenCmd,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCmd {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// admin, api or enroll.
        #[arg(long, default_value = "api")]
        kind: String,
        /// Scope an api token to a node of the service tree and what is below it:
        /// `/sre/minos=run` (run and steer tasks there) or `/shop=read` (see hosts and
        /// tasks); repeatable. Without any, an api token reaches every host.
        #[arg(long = "grant", value_name = "PATH=ROLE")]
        grants: Vec<String>,
        /// What the token is for.
        name: String,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

pub fn token(a: TokenArgs) -> Result<()> {
    let c = Client::new(&a.conn)?;
    match a.cmd {
        TokenCmd::Create { kind, grants, name } => {
            let mut body = json!({"kind": kind, "name": name});
            if !grants.is_empty() {
                let mut list = Vec::with_capacity(grants.len());
                for g in &grants {
                    let (node, role) = g.rsplit_once('=').ok_or_else(|| {
                        anyhow!("--grant {g:?}: expected PATH=ROLE, e.g. /sre/minos=run")
                    })?;
                    list.push(json!({"node": node, "role": role}));
                }
                body["grants"] = json!(list);
            }
            let d = c.call(reqwest::Method::POST, "/tokens", Some(body))?;
            println!("{}", d["token"].as_str().unwrap_or(""));
        }
        TokenCmd::List { json } => {
            let d = c.call(reqwest::Method::GET, "/tokens", None)?;
            if json {
                println!("{d}");
                return Ok(());
            }
            let mut out = String::from("ID\tKIND\tSTATE\tNAME\tGRANTS\n");
            for t in d["tokens"].as_array().into_iter().flatten() {
                let grants: Vec<String> = t["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        format!(
                            "{}={}",
                            g["node"].as_str().unwrap_or(""),
                            g["role"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    t["id"],
                    t["kind"].as_str().unwrap_or(""),
                    if t["revoked"].is_null() {
                        "valid"
                    } else {
                        "revoked"
                    },
                    t["name"].as_str().unwrap_or(""),
                    if grants.is_empty() {
                        "-".to_string()
                    } else {
                        grants.join(",")
                    }
                );
            }
            print!("{out}");
        }
        TokenCmd::Revoke { id } => {
            c.call(reqwest::Method::DELETE, &format!("/tokens/{id}"), None)?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}
