//! `minos_host_info`: the inventory as a metric, so PromQL can join it with any series.
//!
//! For every placement of every host (see `inventory::tree`) the server writes
//! `minos_host_info{hostname, instance, <kind>=<name>..., <tag>=<value>...} 1` into the
//! storage engine: at start, after every inventory change, and every 60 s so the series
//! stays within the query lookback. A series that no longer exists (host removed, moved,
//! retagged) gets a staleness marker, as Prometheus writes when a target drops a series,
//! so it ends at once instead of lingering for the lookback.
//!
//! Label names follow Prometheus' rules: characters other than letters, digits and `_`
//! become `_`, names starting with `__` are left out, and `hostname` and `instance`
//! cannot be overridden by tags. `instance` is the host name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tsdb::{Db, Sample};

/// How often the series are written again without a change.
const REFRESH: Duration = Duration::from_secs(60);

type LabelSet = BTreeMap<String, String>;

fn label_name(k: &str) -> Option<String> {
    if k.starts_with("__") || k == "hostname" || k == "instance" {
        return None;
    }
    Some(
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// The label sets of the inventory's placements.
fn series(inv: &inventory::Inventory) -> BTreeSet<LabelSet> {
    let mut out = BTreeSet::new();
    for h in inv.hosts() {
        for (_, labels) in inv.placements(h) {
            let mut l: LabelSet = labels
                .into_iter()
                .filter_map(|(k, v)| label_name(&k).map(|k| (k, v)))
                .collect();
            l.insert("__name__".into(), "minos_host_info".into());
            l.insert("hostname".into(), h.hostname.clone());
            l.insert("instance".into(), h.hostname.clone());
            out.insert(l);
        }
    }
    out
}

fn write(db: &Db, sets: &BTreeSet<LabelSet>, value: f64, t: i64) {
    if sets.is_empty() {
        return;
    }
    let pairs: Vec<Vec<(&str, &str)>> = sets
        .iter()
        .map(|l| l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let sample = [Sample { t, v: value }];
    if let Err(e) = db.append(pairs.iter().map(|p| (p.as_slice(), &sample[..]))) {
        tracing::warn!("writing minos_host_info: {e}");
    }
}

/// Writes the series until the process ends.
pub async fn run(db: Arc<Db>, store: Arc<inventory::Store>) {
    let mut changes = store.subscribe();
    let mut previous: BTreeSet<LabelSet> = BTreeSet::new();
    loop {
        let now = series(&store.snapshot());
        let gone: BTreeSet<LabelSet> = previous.difference(&now).cloned().collect();
        let t = tsdb::now_ms();
        let db2 = db.clone();
        let now2 = now.clone();
        let _ = tokio::task::spawn_blocking(move || {
            write(&db2, &gone, f64::from_bits(tsdb::STALE_NAN_BITS), t);
            write(&db2, &now2, 1.0, t);
        })
        .await;
        previous = now;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// How often `minos_agent_up` is written.
const AGENT_UP_EVERY: Duration = Duration::from_secs(5);

/// Writes `minos_agent_up{hostname, instance} 1|0` for every enrolled agent (1 online,
/// 0 lost; an agent enrolled but never connected since is left out) every
/// [`AGENT_UP_EVERY`], so liveness comes from the heartbeats and the built-in `HostLost`
/// rule can alert on it.
pub async fn agent_up(db: Arc<Db>, store: Arc<inventory::Store>) {
    let mut every = tokio::time::interval(AGENT_UP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let inv = store.snapshot();
        let mut up: BTreeSet<LabelSet> = BTreeSet::new();
        let mut down: BTreeSet<LabelSet> = BTreeSet::new();
        for a in store.agents() {
            let Some(h) = inv.host(a.host) else { continue };
            let set = |to: &mut BTreeSet<LabelSet>| {
                to.insert(LabelSet::from([
                    ("__name__".to_string(), "minos_agent_up".to_string()),
                    ("hostname".to_string(), h.hostname.clone()),
                    ("instance".to_string(), h.hostname.clone()),
                ]));
            };
            match a.status {
                inventory::AgentStatus::Online => set(&mut up),
                inventory::AgentStatus::Lost => set(&mut down),
                inventory::AgentStatus::Enrolled => {}
            }
        }
        let t = tsdb::now_ms();
        let db2 = db.clone();
        let _ = tokio::task::spawn_blocking(move || {
            write(&db2, &up, 1.0, t);
            write(&db2, &down, 0.0, t);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_prometheus_rules() {
        assert_eq!(label_name("rack.row-2").as_deref(), Some("rack_row_2"));
        assert_eq!(label_name("__name__"), None);
        assert_eq!(label_name("instance"), None);
        let mut inv = inventory::Inventory::new();
        let sre = inv.add_node(None, "sre", "team").unwrap();
        let h = inv.add_host("web-01").unwrap();
        inv.attach(h, sre).unwrap();
        inv.tag_host(h, "instance", Some("x")).unwrap();
        inv.tag_host(h, "rack.row", Some("r1")).unwrap();
        let s = series(&inv);
        assert_eq!(s.len(), 1);
        let l = s.iter().next().unwrap();
        assert_eq!(l["instance"], "web-01");
        assert_eq!(l["team"], "sre");
        assert_eq!(l["rack_row"], "r1");
    }
}
