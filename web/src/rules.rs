//! Alert and recording rules in the server: where they come from (rule files in
//! `--rules.dir`, groups created through the API and kept in the metadata store, and
//! the built-in group), their reload, and the endpoints that show them
//! (`/api/v1/rules`, `/api/v1/alerts`, in Prometheus' JSON shapes) and change them
//! (`/api/ops/v1/rules…`).
//!
//! A reload reads and checks everything first: one bad file or group refuses the whole
//! reload with the errors (file, group, rule and what is wrong), and the running rules
//! stay. A group created through the API is checked the same way before it is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alerting::eval::{AlertState, Health};
use alerting::manager::Manager;
use alerting::rulefile::{Group, Rule};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{ApiError, Params, success};
use crate::status::format_rfc3339;

/// The kind of the metadata store's documents holding API rule groups.
const DOCUMENT_KIND: &str = "rule_group";

/// The file name API groups are reported under (`/api/v1/rules` `file`).
const API_FILE: &str = "api";

/// The file name of the built-in group.
const BUILTIN_FILE: &str = "builtin";

/// The built-in rules: host liveness from the agents' heartbeats (`minos_agent_up` is
/// written by the server from the channel's view of each enrolled agent). Evaluated at
/// `--rules.evaluation-interval`.
const BUILTIN_RULES: &str = r#"groups:
  - name: minos
    rules:
      - alert: HostLost
        expr: minos_agent_up == 0
        labels:
          severity: critical
        annotations:
          summary: "Host {{ $labels.hostname }} is lost: its agent stopped heartbeating"
          description: "The Minos agent on {{ $labels.hostname }} has not heartbeated within --agent.lost-after. The machine may be down, cut off the network, or the agent stopped."
"#;

/// Where rules come from, and the manager that runs them.
pub struct Rules {
    pub dir: Option<PathBuf>,
    pub store: Arc<inventory::Store>,
    pub manager: Arc<Manager>,
    /// Serializes reloads (a reload and an API change never interleave).
    reload_lock: tokio::sync::Mutex<()>,
}

/// Every rule file in `dir` (`*.yml`, `*.yaml`, `*.rules`, not recursive), sorted.
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = e.path();
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
        if p.is_file() && matches!(ext, "yml" | "yaml" | "rules") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one group sent through the API (YAML or JSON, the shape of one entry of a
/// rule file's `groups`), named `name`.
fn parse_api_group(name: &str, body: &str) -> Result<Group, String> {
    // A group is checked as the only group of a file, so its errors read the same.
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => {
            // YAML: indent it under `groups:`.
            let mut text = String::from("groups:\n");
            for (i, line) in body.lines().enumerate() {
                text.push_str(if i == 0 { "  - " } else { "    " });
                text.push_str(line);
                text.push('\n');
            }
            return single_group(name, &text);
        }
    };
    let text = json!({"groups": [v]}).to_string();
    single_group(name, &text)
}

fn single_group(name: &str, text: &str) -> Result<Group, String> {
    let file = alerting::rulefile::parse(Path::new(API_FILE), text).map_err(join_errors)?;
    let [g] = <[Group; 1]>::try_from(file.groups)
        .map_err(|g| format!("expected one group, got {}", g.len()))?;
    if g.name != name {
        return Err(format!(
            "the group is named {:?} but was sent to /rules/{name}",
            g.name
        ));
    }
    Ok(g)
}

fn join_errors(errs: Vec<alerting::rulefile::RuleError>) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Rules {
    pub fn new(dir: Option<PathBuf>, store: Arc<inventory::Store>, manager: Arc<Manager>) -> Rules {
        Rules {
            dir,
            store,
            manager,
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads and checks every source: the built-in group, the files, the API groups.
    async fn load(&self) -> Result<Vec<Group>, String> {
        let mut groups = Vec::new();
        let builtin = alerting::rulefile::parse(Path::new(BUILTIN_FILE), BUILTIN_RULES)
            .map_err(join_errors)?;
        groups.extend(builtin.groups);
        if let Some(dir) = &self.dir {
            let files = rule_files(dir)?;
            let parsed = tokio::task::spawn_blocking(move || {
                alerting::rulefile::parse_files(&files).map_err(join_errors)
            })
            .await
            .map_err(|e| e.to_string())??;
            for (_, f) in parsed {
                groups.extend(f.groups);
            }
        }
        let docs = self
            .store
            .documents(DOCUMENT_KIND)
            .await
            .map_err(|e| e.to_string())?;
        for d in docs {
            groups.push(
                parse_api_group(&d.name, &d.body)
                    .map_err(|e| format!("rule group {} (API): {e}", d.name))?,
            );
        }
        Ok(groups)
    }

    /// Loads every source and runs it (at start: alerts are restored).
    pub async fn start(&self) -> Result<String, String> {
        let _l = self.reload_lock.lock().await;
        let groups = self.load().await?;
        let msg = summary(&groups);
        self.manager.update(groups, true);
        Ok(msg)
    }

    /// Reads everything again; on any error the running rules stay.
    pub async fn reload(&self) -> Result<String, String> {
        let _l = self.reload_lock.lock().await;
        let groups = self.load().await?;
        let msg = summary(&groups);
        self.manager.update(groups, false);
        Ok(msg)
    }
}

fn summary(groups: &[Group]) -> String {
    let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
    format!("{} rule groups, {rules} rules", groups.len())
}

/// Prometheus formats alert values with Go's `FormatFloat(v, 'e', -1, 64)`.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    // Rust writes `1.5e3`; Go writes `1.5e+03`.
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn labels_json(l: &tsdb::Labels) -> Value {
    let m: serde_json::Map<String, Value> = l
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Value::Object(m)
}

fn alert_json(a: &alerting::eval::Alert) -> Value {
    let mut v = json!({
        "labels": labels_json(&a.labels),
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": format_rfc3339(a.active_at),
        "value": format_value(a.value),
    });
    if let Some(t) = a.keep_firing_since {
        v["keepFiringSince"] = json!(format_rfc3339(t));
    }
    v
}

fn health(h: Health) -> &'static str {
    h.as_str()
}

fn rules_of(st: &AppState) -> Result<&Arc<Rules>, ApiError> {
    st.rules()
        .ok_or_else(|| ApiError::unavailable("starting: the rules are not loaded yet"))
}

/// `GET /api/v1/rules[?type=alert|record&rule_name[]=&rule_group[]=&file[]=]`.
pub async fn api_rules(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &[]);
        let kind = match p.get("type") {
            None | Some("") => None,
            Some("alert") => Some(true),
            Some("record") => Some(false),
            Some(t) => {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"type\": unsupported type {t:?}"
                )));
            }
        };
        let names: Vec<&str> = p.all("rule_name[]").collect();
        let groups_f: Vec<&str> = p.all("rule_group[]").collect();
        let files: Vec<&str> = p.all("file[]").collect();
        let Some(rules) = st.rules() else {
            return Ok(success(json!({"groups": []})));
        };
        let mut out = Vec::new();
        for view in rules.manager.groups() {
            let g = &view.state;
            let group = g.group();
            if (!groups_f.is_empty() && !groups_f.contains(&group.name.as_str()))
                || (!files.is_empty() && !files.contains(&group.file.as_str()))
            {
                continue;
            }
            let mut rs = Vec::new();
            for r in g.rules() {
                let rule = r.rule();
                let alerting = matches!(rule, Rule::Alerting(_));
                if kind.is_some_and(|k| k != alerting)
                    || (!names.is_empty() && !names.contains(&rule.name()))
                {
                    continue;
                }
                let (total, failed) = r.evaluations();
                let mut v = json!({
                    "name": rule.name(),
                    "query": rule.expr(),
                    "labels": rule.labels(),
                    "health": health(r.health()),
                    "lastError": r.last_error().unwrap_or(""),
                    "evaluationTime": r.last_duration().as_secs_f64(),
                    "lastEvaluation": r.last_eval_ts().map_or("0001-01-01T00:00:00Z".into(), format_rfc3339),
                    "evaluations": total,
                    "evaluationFailures": failed,
                });
                if let Rule::Alerting(a) = rule {
                    v["type"] = json!("alerting");
                    v["state"] = json!(r.state().as_str());
                    v["duration"] = json!(a.for_ms as f64 / 1000.0);
                    v["keepFiringFor"] = json!(a.keep_firing_for_ms as f64 / 1000.0);
                    v["annotations"] = json!(a.annotations);
                    v["alerts"] = r.active_alerts().map(alert_json).collect();
                } else {
                    v["type"] = json!("recording");
                }
                rs.push(v);
            }
            if rs.is_empty() && (kind.is_some() || !names.is_empty()) {
                continue;
            }
            out.push(json!({
                "name": group.name,
                "file": group.file,
                "rules": rs,
                "interval": g.interval_ms() as f64 / 1000.0,
                "limit": group.limit,
                "evaluationTime": g.last_duration().as_secs_f64(),
                "lastEvaluation": g.last_eval_ts().map_or("0001-01-01T00:00:00Z".into(), format_rfc3339),
                "missedIterations": view.missed,
            }));
        }
        Ok::<_, ApiError>(success(json!({"groups": out})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `GET /api/v1/alerts`: pending and firing alerts of every alerting rule.
pub async fn api_alerts(State(st): State<Arc<AppState>>) -> Response {
    let mut out = Vec::new();
    if let Some(rules) = st.rules() {
        for view in rules.manager.groups() {
            for r in view.state.rules() {
                for a in r.active_alerts() {
                    if a.state != AlertState::Inactive {
                        out.push(alert_json(a));
                    }
                }
            }
        }
    }
    success(json!({"alerts": out}))
}

/// `GET /api/ops/v1/rules`: the groups created through the API, as stored.
pub async fn list_groups(State(st): State<Arc<AppState>>) -> Response {
    let run = async {
        let rules = rules_of(&st)?;
        let docs = rules
            .store
            .documents(DOCUMENT_KIND)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let groups: Vec<Value> = docs
            .iter()
            .map(|d| {
                json!({"name": d.name, "body": d.body, "updated_at": d.updated_at,
                       "updated_by": d.updated_by})
            })
            .collect();
        Ok::<_, ApiError>(success(json!({"groups": groups})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// Largest rule group accepted through the API.
pub const MAX_GROUP_BYTES: usize = 1 << 20;

/// `PUT /api/ops/v1/rules/{group}` with one group (YAML or JSON, as one entry of a rule
/// file's `groups`): checked, stored, running from the answer on.
pub async fn put_group(
    State(st): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<inventory::TokenInfo>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let rules = rules_of(&st)?;
        if body.len() > MAX_GROUP_BYTES {
            return Err(ApiError::with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a rule group is at most {MAX_GROUP_BYTES} bytes"),
            ));
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_data("the rule group is not UTF-8"))?;
        let g = parse_api_group(&name, text).map_err(ApiError::bad_data)?;
        let _l = rules.reload_lock.lock().await;
        let existed = rules
            .store
            .put_document(
                DOCUMENT_KIND,
                &name,
                text,
                &format!("{}:{}", caller.kind.as_str(), caller.name),
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        drop(_l);
        if let Err(e) = rules.reload().await {
            return Err(ApiError::internal(format!(
                "stored, but the rules could not be reloaded: {e}"
            )));
        }
        Ok::<_, ApiError>(success(json!({
            "name": g.name, "rules": g.rules.len(), "created": !existed,
        })))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// `DELETE /api/ops/v1/rules/{group}`.
pub async fn delete_group(
    State(st): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let run = async {
        let rules = rules_of(&st)?;
        let _l = rules.reload_lock.lock().await;
        let existed = rules
            .store
            .delete_document(DOCUMENT_KIND, &name)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        drop(_l);
        if !existed {
            return Err(ApiError::with_status(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no rule group {name} was created through the API"),
            ));
        }
        rules
            .reload()
            .await
            .map_err(|e| ApiError::internal(format!("deleted, but not reloaded: {e}")))?;
        Ok::<_, ApiError>(success(json!({})))
    };
    run.await.unwrap_or_else(|e| e.into_response())
}

/// Per group: its labels (`{rule_group="file;name"}`), evaluations, failed
/// evaluations, the latest evaluation's duration (s), missed evaluations; for
/// `/metrics`.
pub(crate) fn metric_samples(st: &AppState) -> Vec<(String, [f64; 4])> {
    let Some(rules) = st.rules() else {
        return Vec::new();
    };
    rules
        .manager
        .groups()
        .iter()
        .map(|v| {
            let g = v.state.group();
            let key = format!("{};{}", g.file, g.name)
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            let (mut total, mut failed) = (0u64, 0u64);
            for r in v.state.rules() {
                let (t, f) = r.evaluations();
                total += t;
                failed += f;
            }
            (
                format!("{{rule_group=\"{key}\"}}"),
                [
                    total as f64,
                    failed as f64,
                    v.state.last_duration().as_secs_f64(),
                    v.missed as f64,
                ],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_as_go_does() {
        assert_eq!(format_value(1.0), "1e+00");
        assert_eq!(format_value(1500.0), "1.5e+03");
        assert_eq!(format_value(0.25), "2.5e-01");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e100), "1e+100");
    }

    #[test]
    fn builtin_rules_parse() {
        let f = alerting::rulefile::parse(Path::new(BUILTIN_FILE), BUILTIN_RULES)
            .expect("builtin rules");
        assert_eq!(f.groups.len(), 1);
    }

    #[test]
    fn api_groups_are_read_as_yaml_or_json() {
        let y = "name: shop\nrules:\n  - alert: NoOrders\n    expr: sum(rate(orders_total[5m])) == 0\n    for: 10m\n";
        let g = parse_api_group("shop", y).expect("yaml");
        assert_eq!(g.rules.len(), 1);
        let j = r#"{"name":"shop","rules":[{"record":"shop:orders:rate5m","expr":"sum(rate(orders_total[5m]))"}]}"#;
        assert!(parse_api_group("shop", j).is_ok());
        assert!(parse_api_group("other", j).is_err());
        let bad = r#"{"name":"shop","rules":[{"alert":"X","expr":"sum(("}]}"#;
        assert!(parse_api_group("shop", bad).is_err());
    }
}
