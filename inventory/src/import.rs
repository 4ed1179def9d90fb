//! Host import from CSV, for machines without an agent.
//!
//! ```text
//! hostname,nodes,tags
//! db-01,/ops/db,rack=r1;env=prod
//! "web-01",/sre/minos/web;/sre/minos/api,
//! ```
//! The header is required and names the columns (`hostname` required; `nodes` and `tags`
//! optional, in any order). `nodes` holds tree paths separated by `;`, `tags` holds
//! `key=value` pairs separated by `;`. Fields may be quoted (`"..."`, `""` for a quote).
//! Blank lines and lines starting with `#` are skipped.
//!
//! Every row is checked against the inventory before anything is written: a bad row is
//! an error naming its line, and the import changes nothing. A host that exists already
//! gets the row's nodes and tags added.

use std::collections::BTreeMap;

use crate::store::{Store, StoreError};
use crate::tree::{Inventory, valid_key};

/// Largest import accepted, in bytes.
pub const MAX_BYTES: usize = 8 << 20;

/// One row of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub line: usize,
    pub hostname: String,
    pub nodes: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// Splits one CSV line into fields.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                was_quoted = false;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur.trim().to_string());
    Ok(out)
}

/// Parses an import and checks it against `inv`; errors name the line.
pub fn parse(text: &str, inv: &Inventory) -> Result<Vec<ImportRow>, String> {
    if text.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((hl, header)) = lines.next() else {
        return Err("empty: expected a header line `hostname,nodes,tags`".into());
    };
    let cols = fields(header).map_err(|e| format!("line {hl}: {e}"))?;
    let col = |name: &str| cols.iter().position(|c| c.eq_ignore_ascii_case(name));
    let Some(h_col) = col("hostname") else {
        return Err(format!("line {hl}: the header has no `hostname` column"));
    };
    if let Some(c) = cols
        .iter()
        .find(|c| !["hostname", "nodes", "tags"].contains(&c.to_ascii_lowercase().as_str()))
    {
        return Err(format!(
            "line {hl}: unknown column {c:?} (hostname, nodes, tags)"
        ));
    }
    let (n_col, t_col) = (col("nodes"), col("tags"));
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (ln, line) in lines {
        let bad = |msg: String| format!("line {ln}: {msg}");
        let f = fields(line).map_err(bad)?;
        if f.len() != cols.len() {
            return Err(bad(format!(
                "{} fields where the header has {}",
                f.len(),
                cols.len()
            )));
        }
        let hostname = f[h_col].clone();
        if hostname.is_empty() || hostname.contains(['/', ',', '=']) {
            return Err(bad(format!("invalid host name {hostname:?}")));
        }
        if !seen.insert(hostname.clone()) {
            return Err(bad(format!("{hostname} appears twice")));
        }
        let nodes: Vec<String> = n_col
            .map(|c| {
                f[c].split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = nodes.iter().find(|p| inv.node_by_path(p).is_none()) {
            return Err(bad(format!("no tree node {p}")));
        }
        let mut tags = BTreeMap::new();
        for pair in t_col
            .map(|c| f[c].split(';').map(str::trim).filter(|p| !p.is_empty()))
            .into_iter()
            .flatten()
        {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(bad(format!("tag {pair:?}: expected key=value")));
            };
            if !valid_key(k) || v.is_empty() || v.contains([',', '=', '/']) {
                return Err(bad(format!("invalid tag {pair:?}")));
            }
            tags.insert(k.to_string(), v.to_string());
        }
        rows.push(ImportRow {
            line: ln,
            hostname,
            nodes,
            tags,
        });
    }
    Ok(rows)
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
}

impl Store {
    /// Imports hosts from CSV (see the module docs): all rows are checked first.
    pub async fn import_hosts(&self, text: &str) -> Result<ImportReport, StoreError> {
        let rows = parse(text, &self.snapshot()).map_err(StoreError::Invalid)?;
        let mut report = ImportReport::default();
        for r in rows {
            let inv = self.snapshot();
            let id = match inv.host_by_name(&r.hostname) {
                Some(h) => {
                    report.updated += 1;
                    h.id
                }
                None => {
                    report.added += 1;
                    self.add_host(&r.hostname).await?
                }
            };
            for p in &r.nodes {
                if let Some(n) = self.snapshot().node_by_path(p) {
                    self.attach(id, n).await?;
                }
            }
            for (k, v) in &r.tags {
                self.tag_host(id, k, Some(v)).await?;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        let mut inv = Inventory::new();
        let ops = inv.add_node(None, "ops", "team").unwrap();
        inv.add_node(Some(ops), "db", "service").unwrap();
        inv
    }

    #[test]
    fn rows_parse_with_quotes_comments_and_any_column_order() {
        let text = "# exported from the old CMDB\ntags,hostname,nodes\n\n\"rack=r1;env=prod\",db-01,/ops/db\n,\"db-02\",\n\"a \"\"b\"\"\",x,\n";
        let e = parse(text, &inv()).unwrap_err();
        assert!(e.starts_with("line 6: tag "), "{e}");
        let text = "tags,hostname,nodes\n\"rack=r1;env=prod\",db-01,/ops/db\n,\"db-02\",\n";
        let rows = parse(text, &inv()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].hostname, "db-01");
        assert_eq!(rows[0].nodes, ["/ops/db"]);
        assert_eq!(rows[0].tags["env"], "prod");
        assert_eq!(rows[1].hostname, "db-02");
        assert!(rows[1].nodes.is_empty() && rows[1].tags.is_empty());
    }

    #[test]
    fn bad_rows_name_their_line() {
        for (text, want) in [
            ("", "empty"),
            (
                "host,nodes\n",
                "line 1: the header has no `hostname` column",
            ),
            ("hostname,owner\n", "line 1: unknown column \"owner\""),
            ("hostname,nodes\na,/nope\n", "line 2: no tree node /nope"),
            ("hostname\na\n\nb\na\n", "line 5: a appears twice"),
            (
                "hostname,tags\na,rack\n",
                "line 2: tag \"rack\": expected key=value",
            ),
            ("hostname,tags\na,9x=1\n", "line 2: invalid tag"),
            (
                "hostname,nodes\na\n",
                "line 2: 1 fields where the header has 2",
            ),
            ("hostname\n\"a\n", "line 2: a quoted field is not closed"),
            ("hostname\na/b\n", "line 2: invalid host name"),
        ] {
            let e = parse(text, &inv()).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
