//! The inventory model: hosts, the service tree, tags, and the labels a host gets from
//! where it sits.
//!
//! Every rule lives here, so the store behind it (embedded or PostgreSQL) only persists
//! what these operations decide:
//!
//! - node names are unique among their siblings, and a path (`/sre/minos/web`) names at
//!   most one node;
//! - a node cannot move under itself or its descendants, and only an empty node (no
//!   children, no hosts) can be removed;
//! - host names are unique;
//! - a host attached to a node gets, for each node from the root down to it, the label
//!   `<kind>=<name>` and the node's tags; deeper nodes override shallower ones, and the
//!   host's own tags override them all. A host attached to several nodes has one such
//!   label set per attachment (its *placements*); an unattached host has one placement
//!   with its own tags.

use std::collections::{BTreeMap, BTreeSet};

/// A tree node's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A host's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u64);

/// Why an inventory operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error(
        "invalid tag key {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or '_'"
    )]
    InvalidKey(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("no such node")]
    NoNode,
    #[error("no such host")]
    NoHost,
    #[error("cannot move {0} under itself or one of its descendants")]
    Cycle(String),
    #[error("{0} is not empty: it has {1} child node(s) and {2} host(s)")]
    NotEmpty(String, usize, usize),
}

/// A node of the service tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub parent: Option<NodeId>,
    pub name: String,
    /// `team`, `service`, `module`... any label name.
    pub kind: String,
    pub owners: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// A machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: HostId,
    pub hostname: String,
    pub tags: BTreeMap<String, String>,
    /// The nodes the host is attached to.
    pub nodes: BTreeSet<NodeId>,
}

/// Hosts and the service tree, in memory.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    nodes: BTreeMap<NodeId, Node>,
    hosts: BTreeMap<HostId, Host>,
    next_id: u64,
}

/// Node names: what a path segment and a label value can hold.
fn check_name(name: &str) -> Result<(), TreeError> {
    let bad = |why| Err(TreeError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 128 {
        return bad("longer than 128 bytes");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ',' || c == '=' || c.is_control())
    {
        return bad("'/', ',', '=' and control characters are not allowed");
    }
    if name.trim() != name {
        return bad("leading or trailing spaces");
    }
    Ok(())
}

/// Tag keys and node kinds: label names.
pub fn valid_key(key: &str) -> bool {
    let mut cs = key.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && key.len() <= 128
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// An inventory from stored nodes and hosts, checked against every rule: parents and
    /// attached nodes exist, no cycles, unique sibling and host names, valid names, kinds
    /// and tags. New ids continue after the largest one given.
    pub fn from_parts(nodes: Vec<Node>, hosts: Vec<Host>) -> Result<Inventory, String> {
        let mut inv = Inventory::new();
        for n in nodes {
            check_name(&n.name).map_err(|e| format!("node {}: {e}", n.id.0))?;
            if !valid_key(&n.kind) {
                return Err(format!("node {}: invalid kind {:?}", n.id.0, n.kind));
            }
            for (k, v) in &n.tags {
                if !valid_key(k) || check_name(v).is_err() {
                    return Err(format!("node {}: invalid tag {k}={v}", n.id.0));
                }
            }
            inv.next_id = inv.next_id.max(n.id.0);
            if inv.nodes.insert(n.id, n.clone()).is_some() {
                return Err(format!("node {}: duplicate id", n.id.0));
            }
        }
        for n in inv.nodes.values() {
            if let Some(p) = n.parent
                && !inv.nodes.contains_key(&p)
            {
                return Err(format!("node {}: parent {} does not exist", n.id.0, p.0));
            }
            // Walking up must reach a root within as many steps as there are nodes.
            let mut at = n.parent;
            let mut steps = 0;
            while let Some(p) = at {
                steps += 1;
                if p == n.id || steps > inv.nodes.len() {
                    return Err(format!("node {}: its parents form a cycle", n.id.0));
                }
                at = inv.nodes.get(&p).and_then(|x| x.parent);
            }
            if inv.sibling_exists(n.parent, &n.name, Some(n.id)) {
                return Err(format!("node {}: {} exists twice", n.id.0, inv.path(n.id)));
            }
        }
        for h in hosts {
            check_name(&h.hostname).map_err(|e| format!("host {}: {e}", h.id.0))?;
            if inv.host_by_name(&h.hostname).is_some() {
                return Err(format!("host {}: name {} exists twice", h.id.0, h.hostname));
            }
            if let Some(n) = h.nodes.iter().find(|n| !inv.nodes.contains_key(n)) {
                return Err(format!("host {}: attached to missing node {}", h.id.0, n.0));
            }
            for (k, v) in &h.tags {
                if !valid_key(k) || check_name(v).is_err() {
                    return Err(format!("host {}: invalid tag {k}={v}", h.id.0));
                }
            }
            inv.next_id = inv.next_id.max(h.id.0);
            if inv.hosts.insert(h.id, h.clone()).is_some() {
                return Err(format!("host {}: duplicate id", h.id.0));
            }
        }
        Ok(inv)
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    pub fn host(&self, id: HostId) -> Option<&Host> {
        self.hosts.get(&id)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The children of `parent` (`None`: the roots), sorted by name.
    pub fn children(&self, parent: Option<NodeId>) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.nodes.values().filter(|n| n.parent == parent).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn host_by_name(&self, hostname: &str) -> Option<&Host> {
        self.hosts.values().find(|h| h.hostname == hostname)
    }

    /// The node at `path` (`/sre/minos/web`; `/` alone is no node).
    pub fn node_by_path(&self, path: &str) -> Option<NodeId> {
        let mut at: Option<NodeId> = None;
        let mut any = false;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            any = true;
            at = Some(
                self.nodes
                    .values()
                    .find(|n| n.parent == at && n.name == seg)?
                    .id,
            );
        }
        if any { at } else { None }
    }

    /// The nodes from the root down to `id`.
    pub fn ancestry(&self, id: NodeId) -> Vec<&Node> {
        let mut v = Vec::new();
        let mut at = self.nodes.get(&id);
        // The tree has no cycles (moves refuse them), so this ends; the bound guards
        // against a store that was edited by hand.
        while let Some(n) = at {
            v.push(n);
            if v.len() > self.nodes.len() {
                break;
            }
            at = n.parent.and_then(|p| self.nodes.get(&p));
        }
        v.reverse();
        v
    }

    /// `/sre/minos/web` for a node.
    pub fn path(&self, id: NodeId) -> String {
        let mut s = String::new();
        for n in self.ancestry(id) {
            s.push('/');
            s.push_str(&n.name);
        }
        s
    }

    /// Whether `id` is `ancestor` or lies below it.
    pub fn is_within(&self, id: NodeId, ancestor: NodeId) -> bool {
        self.ancestry(id).iter().any(|n| n.id == ancestor)
    }

    fn sibling_exists(&self, parent: Option<NodeId>, name: &str, except: Option<NodeId>) -> bool {
        self.nodes
            .values()
            .any(|n| n.parent == parent && n.name == name && Some(n.id) != except)
    }

    /// Adds a node named `name` of kind `kind` under `parent` (`None`: a root).
    pub fn add_node(
        &mut self,
        parent: Option<NodeId>,
        name: &str,
        kind: &str,
    ) -> Result<NodeId, TreeError> {
        check_name(name)?;
        if !valid_key(kind) {
            return Err(TreeError::InvalidKey(kind.to_string()));
        }
        if let Some(p) = parent
            && !self.nodes.contains_key(&p)
        {
            return Err(TreeError::NoNode);
        }
        if self.sibling_exists(parent, name, None) {
            let prefix = parent.map(|p| self.path(p)).unwrap_or_default();
            return Err(TreeError::Exists(format!("{prefix}/{name}")));
        }
        let id = NodeId(self.next());
        self.nodes.insert(
            id,
            Node {
                id,
                parent,
                name: name.to_string(),
                kind: kind.to_string(),
                owners: Vec::new(),
                tags: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// Moves `id` (with everything below it) under `new_parent` (`None`: to the roots).
    pub fn move_node(&mut self, id: NodeId, new_parent: Option<NodeId>) -> Result<(), TreeError> {
        let name = self.nodes.get(&id).ok_or(TreeError::NoNode)?.name.clone();
        if let Some(p) = new_parent {
            if !self.nodes.contains_key(&p) {
                return Err(TreeError::NoNode);
            }
            if self.is_within(p, id) {
                return Err(TreeError::Cycle(self.path(id)));
            }
        }
        if self.sibling_exists(new_parent, &name, Some(id)) {
            let prefix = new_parent.map(|p| self.path(p)).unwrap_or_default();
            return Err(TreeError::Exists(format!("{prefix}/{name}")));
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.parent = new_parent;
        }
        Ok(())
    }

    /// Removes an empty node.
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), TreeError> {
        if !self.nodes.contains_key(&id) {
            return Err(TreeError::NoNode);
        }
        let children = self.nodes.values().filter(|n| n.parent == Some(id)).count();
        let hosts = self
            .hosts
            .values()
            .filter(|h| h.nodes.contains(&id))
            .count();
        if children > 0 || hosts > 0 {
            return Err(TreeError::NotEmpty(self.path(id), children, hosts));
        }
        self.nodes.remove(&id);
        Ok(())
    }

    /// Adds a host.
    pub fn add_host(&mut self, hostname: &str) -> Result<HostId, TreeError> {
        check_name(hostname)?;
        if self.host_by_name(hostname).is_some() {
            return Err(TreeError::Exists(format!("host {hostname}")));
        }
        let id = HostId(self.next());
        self.hosts.insert(
            id,
            Host {
                id,
                hostname: hostname.to_string(),
                tags: BTreeMap::new(),
                nodes: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    /// Attaches `host` to `node` (a host may sit under several nodes).
    pub fn attach(&mut self, host: HostId, node: NodeId) -> Result<(), TreeError> {
        if !self.nodes.contains_key(&node) {
            return Err(TreeError::NoNode);
        }
        self.hosts
            .get_mut(&host)
            .ok_or(TreeError::NoHost)?
            .nodes
            .insert(node);
        Ok(())
    }

    pub fn detach(&mut self, host: HostId, node: NodeId) -> Result<(), TreeError> {
        self.hosts
            .get_mut(&host)
            .ok_or(TreeError::NoHost)?
            .nodes
            .remove(&node);
        Ok(())
    }

    /// Sets (or with `None` removes) tag `key` of a host.
    pub fn tag_host(
        &mut self,
        host: HostId,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), TreeError> {
        let tags = &mut self.hosts.get_mut(&host).ok_or(TreeError::NoHost)?.tags;
        set_tag(tags, key, value)
    }

    /// Sets (or with `None` removes) tag `key` of a node; hosts below inherit it.
    pub fn tag_node(
        &mut self,
        node: NodeId,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), TreeError> {
        let tags = &mut self.nodes.get_mut(&node).ok_or(TreeError::NoNode)?.tags;
        set_tag(tags, key, value)
    }

    /// The labels a host has at `node`: `<kind>=<name>` and the tags of each node from
    /// the root down (deeper wins), then the host's own tags.
    pub fn labels_at(&self, host: &Host, node: Option<NodeId>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if let Some(node) = node {
            for n in self.ancestry(node) {
                labels.insert(n.kind.clone(), n.name.clone());
                for (k, v) in &n.tags {
                    labels.insert(k.clone(), v.clone());
                }
            }
        }
        for (k, v) in &host.tags {
            labels.insert(k.clone(), v.clone());
        }
        labels
    }

    /// A host's placements: the node of each attachment with the labels it has there;
    /// one placement without a node when the host is attached nowhere.
    pub fn placements(&self, host: &Host) -> Vec<(Option<NodeId>, BTreeMap<String, String>)> {
        if host.nodes.is_empty() {
            return vec![(None, self.labels_at(host, None))];
        }
        host.nodes
            .iter()
            .filter(|n| self.nodes.contains_key(n))
            .map(|&n| (Some(n), self.labels_at(host, Some(n))))
            .collect()
    }
}

fn set_tag(
    tags: &mut BTreeMap<String, String>,
    key: &str,
    value: Option<&str>,
) -> Result<(), TreeError> {
    if !valid_key(key) {
        return Err(TreeError::InvalidKey(key.to_string()));
    }
    match value {
        Some(v) => {
            check_name(v)?;
            tags.insert(key.to_string(), v.to_string());
        }
        None => {
            tags.remove(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Inventory, NodeId, NodeId, NodeId) {
        let mut inv = Inventory::new();
        let sre = inv.add_node(None, "sre", "team").unwrap();
        let minos = inv.add_node(Some(sre), "minos", "service").unwrap();
        let web = inv.add_node(Some(minos), "web", "module").unwrap();
        (inv, sre, minos, web)
    }

    #[test]
    fn paths_name_nodes() {
        let (inv, _, minos, web) = sample();
        assert_eq!(inv.path(web), "/sre/minos/web");
        assert_eq!(inv.node_by_path("/sre/minos/web"), Some(web));
        assert_eq!(inv.node_by_path("/sre/minos/"), Some(minos));
        assert_eq!(inv.node_by_path("/sre/nope"), None);
        assert_eq!(inv.node_by_path("/"), None);
    }

    #[test]
    fn sibling_names_are_unique_and_names_are_checked() {
        let (mut inv, sre, _, _) = sample();
        assert_eq!(
            inv.add_node(Some(sre), "minos", "service"),
            Err(TreeError::Exists("/sre/minos".into()))
        );
        assert!(
            inv.add_node(None, "minos", "service").is_ok(),
            "same name elsewhere"
        );
        for bad in ["", "a/b", "a,b", "a=b", " a"] {
            assert!(matches!(
                inv.add_node(None, bad, "team"),
                Err(TreeError::InvalidName(..))
            ));
        }
        assert!(matches!(
            inv.add_node(None, "x", "9kind"),
            Err(TreeError::InvalidKey(_))
        ));
    }

    #[test]
    fn moves_refuse_cycles_and_clashes() {
        let (mut inv, sre, minos, web) = sample();
        assert_eq!(
            inv.move_node(sre, Some(web)),
            Err(TreeError::Cycle("/sre".into()))
        );
        assert_eq!(
            inv.move_node(minos, Some(minos)),
            Err(TreeError::Cycle("/sre/minos".into()))
        );
        let ops = inv.add_node(None, "ops", "team").unwrap();
        inv.add_node(Some(ops), "web", "module").unwrap();
        assert_eq!(
            inv.move_node(web, Some(ops)),
            Err(TreeError::Exists("/ops/web".into()))
        );
        inv.move_node(minos, Some(ops)).unwrap();
        assert_eq!(inv.path(web), "/ops/minos/web");
        inv.move_node(minos, None).unwrap();
        assert_eq!(inv.path(web), "/minos/web");
    }

    #[test]
    fn only_empty_nodes_are_removed() {
        let (mut inv, sre, minos, web) = sample();
        let h = inv.add_host("web-01").unwrap();
        inv.attach(h, web).unwrap();
        assert_eq!(
            inv.remove_node(minos),
            Err(TreeError::NotEmpty("/sre/minos".into(), 1, 0))
        );
        assert_eq!(
            inv.remove_node(web),
            Err(TreeError::NotEmpty("/sre/minos/web".into(), 0, 1))
        );
        inv.detach(h, web).unwrap();
        inv.remove_node(web).unwrap();
        inv.remove_node(minos).unwrap();
        inv.remove_node(sre).unwrap();
        assert_eq!(inv.nodes().count(), 0);
        assert_eq!(inv.remove_node(sre), Err(TreeError::NoNode));
    }

    #[test]
    fn tags_are_inherited_and_overridden() {
        let (mut inv, sre, minos, web) = sample();
        inv.tag_node(sre, "env", "prod".into()).unwrap();
        inv.tag_node(sre, "dc", "dc1".into()).unwrap();
        inv.tag_node(minos, "dc", "dc2".into()).unwrap();
        let h = inv.add_host("web-01").unwrap();
        inv.attach(h, web).unwrap();
        inv.tag_host(h, "env", Some("canary")).unwrap();
        let host = inv.host(h).unwrap().clone();
        let p = inv.placements(&host);
        assert_eq!(p.len(), 1);
        let l = &p[0].1;
        assert_eq!(l["team"], "sre");
        assert_eq!(l["service"], "minos");
        assert_eq!(l["module"], "web");
        assert_eq!(l["dc"], "dc2", "the deeper node wins");
        assert_eq!(l["env"], "canary", "the host's own tag wins");
        inv.tag_host(h, "env", None).unwrap();
        let host = inv.host(h).unwrap().clone();
        assert_eq!(inv.placements(&host)[0].1["env"], "prod");
    }

    #[test]
    fn hosts_have_one_placement_per_attachment() {
        let (mut inv, sre, _, web) = sample();
        let h = inv.add_host("web-01").unwrap();
        let host = inv.host(h).unwrap().clone();
        assert_eq!(inv.placements(&host), vec![(None, BTreeMap::new())]);
        inv.attach(h, web).unwrap();
        inv.attach(h, sre).unwrap();
        let host = inv.host(h).unwrap().clone();
        assert_eq!(inv.placements(&host).len(), 2);
        assert_eq!(
            inv.add_host("web-01"),
            Err(TreeError::Exists("host web-01".into()))
        );
    }
}
