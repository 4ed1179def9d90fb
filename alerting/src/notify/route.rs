/*!
Routing: which routes of the tree an alert lands on, and which aggregation group of
each route it joins (the route's key plus the values of its `group_by` labels).

The walk is Alertmanager's: a route that matches tries its children in order; the
first matching child stops the search unless it has `continue: true`; a route none of
whose children matched takes the alert itself.
*/

use crate::notify::Labels;
use crate::notify::config::{Config, GroupBy, Route};
use crate::notify::matcher::all_match;

/// The indexes (into [`Config::routes`]) of the routes `labels` land on.
pub(crate) fn match_routes(config: &Config, labels: &Labels) -> Vec<usize> {
    let mut out = Vec::new();
    walk(config.routes(), 0, labels, &mut out);
    out
}

/// Appends the routes under (and including) `i` that take `labels`; returns whether
/// route `i` matched at all.
fn walk(routes: &[Route], i: usize, labels: &Labels, out: &mut Vec<usize>) -> bool {
    let r = &routes[i];
    if !all_match(&r.matchers, labels) {
        return false;
    }
    let before = out.len();
    for &c in &r.children {
        let matched = walk(routes, c, labels, out);
        if matched && !routes[c].continue_matching {
            break;
        }
    }
    if out.len() == before {
        out.push(i);
    }
    true
}

/// The labels of `labels` that a route groups by (absent ones are left out).
pub(crate) fn group_labels(route: &Route, labels: &Labels) -> Labels {
    match &route.group_by {
        GroupBy::All => labels.clone(),
        GroupBy::Labels(names) => names
            .iter()
            .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    }
}

/// Alertmanager's group key: `{route key}:{a="b", c="d"}`.
pub(crate) fn group_key(route: &Route, group_labels: &Labels) -> String {
    let mut s = format!("{}:{{", route.key);
    for (i, (k, v)) in group_labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        // Go's %q: a double-quoted string with Go escapes.
        s.push_str(&format!("{v:?}"));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TREE: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: [severity="critical"]
      receiver: pager
      continue: true
    - matchers: [team="db"]
      receiver: db
      routes:
        - matchers: [env="prod"]
          receiver: db-prod
    - matchers: [team=~"db|web"]
      receiver: web
receivers:
  - name: default
  - name: pager
  - name: db
  - name: db-prod
  - name: web
"#;

    fn receivers(c: &Config, labels: &Labels) -> Vec<String> {
        match_routes(c, labels)
            .into_iter()
            .map(|i| c.routes()[i].receiver.clone())
            .collect()
    }

    #[test]
    fn routing_follows_alertmanager_order_and_continue() {
        let c = Config::parse(TREE).unwrap();
        assert_eq!(receivers(&c, &l(&[("alertname", "x")])), ["default"]);
        assert_eq!(
            receivers(&c, &l(&[("severity", "critical"), ("team", "db")])),
            ["pager", "db"]
        );
        assert_eq!(
            receivers(&c, &l(&[("team", "db"), ("env", "prod")])),
            ["db-prod"]
        );
        // The first match without continue stops: team=db never reaches "web".
        assert_eq!(receivers(&c, &l(&[("team", "db")])), ["db"]);
        assert_eq!(receivers(&c, &l(&[("team", "web")])), ["web"]);
        assert_eq!(receivers(&c, &l(&[("severity", "critical")])), ["pager"]);
    }

    #[test]
    fn group_keys_look_like_alertmanagers() {
        let c = Config::parse(TREE).unwrap();
        let r = &c.routes()[0];
        let labels = l(&[("alertname", "HighCPU"), ("instance", "a")]);
        let g = group_labels(r, &labels);
        assert_eq!(g, l(&[("alertname", "HighCPU")]));
        assert_eq!(group_key(r, &g), r#"{}:{alertname="HighCPU"}"#);
        let r1 = &c.routes()[1];
        let g1 = group_labels(r1, &labels);
        assert_eq!(
            group_key(r1, &g1),
            r#"{}/{severity="critical"}:{alertname="HighCPU"}"#
        );
    }
}
