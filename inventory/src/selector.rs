//! The selector language: which hosts a command, a task or a query targets.
//!
//! A selector is terms joined by `,`, all of which must hold:
//!
//! | term | selects hosts |
//! |---|---|
//! | `key=value`, `key!=value` | whose labels (tree position and tags, see [`crate::tree`]) have, or lack, `key=value` |
//! | `/sre/minos/web` | attached to that node or below it |
//! | `web-01`, `web-*`, `db-0[1-3]` | with that host name, or one matching the glob |
//! | `*` | every host |
//!
//! Label and path terms must hold in the same placement of a host: `team=sre,module=web`
//! selects a host attached under `/sre/.../web`, not one attached to `/sre/x` and
//! `/ops/web`. Several host-name terms are alternatives (`web-01,web-02` selects both);
//! every other term narrows. Spaces around terms are ignored.
//!
//! Errors name the 1-based character position of the problem. Resolution fails when a
//! path or an exact host name does not exist, so a typo never silently selects nothing.

use std::fmt;

use crate::glob;
use crate::tree::{HostId, Inventory, valid_key};

/// Longest selector accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Label {
        key: String,
        value: String,
        negate: bool,
    },
    Path(String),
    Host(String),
    All,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub terms: Vec<Term>,
}

/// A selector that does not parse or does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// `pos` is the 1-based character position.
    #[error("selector {selector:?}, position {pos}: {msg}")]
    Syntax {
        selector: String,
        pos: usize,
        msg: String,
    },
    #[error("selector {selector:?}: {msg}")]
    Resolve { selector: String, msg: String },
}

impl Selector {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let err = |pos: usize, msg: String| SelectorError::Syntax {
            selector: text.to_string(),
            pos,
            msg,
        };
        if text.len() > MAX_LEN {
            return Err(err(MAX_LEN, format!("longer than {MAX_LEN} bytes")));
        }
        if text.trim().is_empty() {
            return Err(err(1, "empty selector (use * for every host)".into()));
        }
        let mut terms = Vec::new();
        // Character position (1-based) of each term's first character.
        let mut start_char = 1;
        for raw in text.split(',') {
            let lead = raw.chars().take_while(|c| c.is_whitespace()).count();
            let pos = start_char + lead;
            start_char += raw.chars().count() + 1;
            let t = raw.trim();
            if t.is_empty() {
                return Err(err(
                    pos,
                    "empty term (two commas, or a comma at an end)".into(),
                ));
            }
            terms.push(parse_term(t).map_err(|(off, msg)| err(pos + off, msg))?);
        }
        Ok(Selector { terms })
    }

    /// The hosts selected in `inv`, sorted by host name.
    pub fn resolve(&self, inv: &Inventory) -> Result<Vec<HostId>, SelectorError> {
        let fail = |msg: String| SelectorError::Resolve {
            selector: self.to_string(),
            msg,
        };
        let mut paths = Vec::new();
        for t in &self.terms {
            match t {
                Term::Path(p) => paths.push(
                    inv.node_by_path(p)
                        .ok_or_else(|| fail(format!("no tree node {p}")))?,
                ),
                Term::Host(h) if !glob::is_glob(h) && inv.host_by_name(h).is_none() => {
                    return Err(fail(format!("no host named {h}")));
                }
                _ => {}
            }
        }
        let names: Vec<&str> = self
            .terms
            .iter()
            .filter_map(|t| match t {
                Term::Host(h) => Some(h.as_str()),
                _ => None,
            })
            .collect();
        let labels: Vec<(&str, &str, bool)> = self
            .terms
            .iter()
            .filter_map(|t| match t {
                Term::Label { key, value, negate } => Some((key.as_str(), value.as_str(), *negate)),
                _ => None,
            })
            .collect();
        let mut out: Vec<(&str, HostId)> = Vec::new();
        for h in inv.hosts() {
            if !names.is_empty() && !names.iter().any(|n| glob::matches(n, &h.hostname)) {
                continue;
            }
            let placed = inv.placements(h).into_iter().any(|(node, l)| {
                paths
                    .iter()
                    .all(|&p| node.is_some_and(|n| inv.is_within(n, p)))
                    && labels
                        .iter()
                        .all(|&(k, v, negate)| (l.get(k).map(String::as_str) == Some(v)) != negate)
            });
            if placed {
                out.push((&h.hostname, h.id));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }
}

/// One trimmed term; errors carry the character offset within it.
fn parse_term(t: &str) -> Result<Term, (usize, String)> {
    if t == "*" {
        return Ok(Term::All);
    }
    if t.starts_with('/') {
        if let Some((i, c)) = t
            .chars()
            .enumerate()
            .find(|&(_, c)| c == '=' || c.is_control())
        {
            return Err((i, format!("{c:?} in a tree path")));
        }
        if let Some(b) = t.find("//") {
            return Err((t[..b].chars().count() + 1, "empty path segment".into()));
        }
        if t == "/" {
            return Err((0, "a path needs at least one node (/team/...)".into()));
        }
        return Ok(Term::Path(t.to_string()));
    }
    if let Some(eq) = t.find('=') {
        let (negate, key_end) = match t[..eq].strip_suffix('!') {
            Some(k) => (true, k.len()),
            None => (false, eq),
        };
        let key = t[..key_end].trim();
        let value = t[eq + 1..].trim();
        if key.is_empty() {
            return Err((0, "missing label name before '='".into()));
        }
        if !valid_key(key) {
            return Err((
                0,
                format!("invalid label name {key:?} (letters, digits, '_', '.', '-')"),
            ));
        }
        if value.is_empty() {
            return Err((
                t[..=eq].chars().count(),
                format!("missing value after '{key}='"),
            ));
        }
        if let Some(i) = value.find('=') {
            let at = t[..eq + 1].chars().count() + value[..i].chars().count();
            return Err((at, "a second '=' in one term (join terms with ',')".into()));
        }
        return Ok(Term::Label {
            key: key.to_string(),
            value: value.to_string(),
            negate,
        });
    }
    if let Some((i, c)) = t
        .chars()
        .enumerate()
        .find(|&(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err((
            i,
            format!("{c:?} in a host name (terms are joined with ',')"),
        ));
    }
    Ok(Term::Host(t.to_string()))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match t {
                Term::Label { key, value, negate } => {
                    write!(f, "{key}{}={value}", if *negate { "!" } else { "" })?
                }
                Term::Path(p) | Term::Host(p) => f.write_str(p)?,
                Term::All => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /sre/minos/{web,api}, /ops/db; web-01..03 in web (web-03 also in api), api-01 in
    /// api, db-01 in db, spare-01 nowhere.
    fn inv() -> Inventory {
        let mut inv = Inventory::new();
        let sre = inv.add_node(None, "sre", "team").unwrap();
        let minos = inv.add_node(Some(sre), "minos", "service").unwrap();
        let web = inv.add_node(Some(minos), "web", "module").unwrap();
        let api = inv.add_node(Some(minos), "api", "module").unwrap();
        let ops = inv.add_node(None, "ops", "team").unwrap();
        let db = inv.add_node(Some(ops), "db", "service").unwrap();
        inv.tag_node(sre, "env", Some("prod")).unwrap();
        for (h, at) in [
            ("web-01", vec![web]),
            ("web-02", vec![web]),
            ("web-03", vec![web, api]),
            ("api-01", vec![api]),
            ("db-01", vec![db]),
            ("spare-01", vec![]),
        ] {
            let id = inv.add_host(h).unwrap();
            for n in at {
                inv.attach(id, n).unwrap();
            }
        }
        let w2 = inv.host_by_name("web-02").unwrap().id;
        inv.tag_host(w2, "env", Some("canary")).unwrap();
        inv
    }

    fn names(inv: &Inventory, sel: &str) -> Vec<String> {
        Selector::parse(sel)
            .unwrap()
            .resolve(inv)
            .unwrap()
            .into_iter()
            .map(|id| inv.host(id).unwrap().hostname.clone())
            .collect()
    }

    #[test]
    fn terms_select_and_narrow() {
        let inv = inv();
        assert_eq!(names(&inv, "*").len(), 6);
        assert_eq!(
            names(&inv, "/sre/minos/web"),
            ["web-01", "web-02", "web-03"]
        );
        assert_eq!(
            names(&inv, "/sre"),
            ["api-01", "web-01", "web-02", "web-03"]
        );
        assert_eq!(names(&inv, "team=sre, module=api"), ["api-01", "web-03"]);
        assert_eq!(names(&inv, "env=prod"), ["api-01", "web-01", "web-03"]);
        assert_eq!(names(&inv, "team=sre,env!=prod"), ["web-02"]);
        assert_eq!(names(&inv, "web-*"), ["web-01", "web-02", "web-03"]);
        assert_eq!(names(&inv, "web-01,db-01"), ["db-01", "web-01"]);
        assert_eq!(names(&inv, "web-0[2-3],module=api"), ["web-03"]);
        assert_eq!(names(&inv, "/sre,module=web,env=canary"), ["web-02"]);
        assert_eq!(names(&inv, "team!=sre"), ["db-01", "spare-01"]);
    }

    #[test]
    fn label_and_path_terms_hold_in_one_placement() {
        let inv = inv();
        // web-03 sits in web and in api: no single placement is in web with module=api.
        assert_eq!(
            names(&inv, "/sre/minos/web,module=api"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn typos_do_not_select_nothing_silently() {
        let inv = inv();
        for (sel, want) in [
            ("/sre/minus", "no tree node /sre/minus"),
            ("web-1", "no host named web-1"),
        ] {
            let e = Selector::parse(sel).unwrap().resolve(&inv).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn syntax_errors_name_the_position() {
        for (sel, pos) in [
            ("", 1),
            ("team=sre,,module=web", 10),
            ("team=sre, =web", 11),
            ("team=", 6),
            ("team=sre,9x=1", 10),
            ("a=b=c", 4),
            ("/sre//web", 6),
            ("/sre//web/", 6),
            ("web 01", 4),
            ("team=sre,", 10),
        ] {
            match Selector::parse(sel) {
                Err(SelectorError::Syntax { pos: p, msg, .. }) => {
                    assert_eq!(p, pos, "{sel:?}: {msg}")
                }
                other => panic!("{sel:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn selectors_print_back() {
        let s = Selector::parse(" team=sre , env!=prod,/sre/minos, web-* ").unwrap();
        assert_eq!(s.to_string(), "team=sre,env!=prod,/sre/minos,web-*");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errors_without_panicking(text in "\\PC{0,40}") {
            if let Ok(s) = Selector::parse(&text) {
                let _ = s.resolve(&inv());
            }
        }
    }
}
