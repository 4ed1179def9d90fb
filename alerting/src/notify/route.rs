/*!
Routing: which routes of the tree an alert lands on, which aggregation group of each
route it joins (the route's key plus the values of its `group_by` labels), and whether
a route's time intervals let it send at a given instant.

The walk is Alertmanager's: a route that matches tries its children in order; the
first matching child stops the search unless it has `continue: true`; a route none of
whose children matched takes the alert itself. Time intervals play no part in the walk:
a muted route still takes its alerts (and stops the search), it only sends nothing.
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

/// The time intervals that keep `route` from sending at `now` (Unix ms), in
/// Alertmanager's order: the mute intervals that contain `now`; else, if the route has
/// active intervals and none contains `now`, all of those. Empty: the route may send.
pub(crate) fn time_muted_by<'a>(config: &'a Config, route: &'a Route, now: i64) -> Vec<&'a str> {
    let holds = |name: &String| config.time_interval(name).is_some_and(|t| t.contains(now));
    let muting: Vec<&str> = route
        .mute_time_intervals
        .iter()
        .filter(|n| holds(n))
        .map(String::as_str)
        .collect();
    if !muting.is_empty() || route.active_time_intervals.iter().any(holds) {
        return muting;
    }
    route
        .active_time_intervals
        .iter()
        .map(String::as_str)
        .collect()
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

    #[test]
    fn mute_intervals_win_over_active_ones() {
        let c = Config::parse(
            r#"
route:
  receiver: a
  routes:
    - matchers: [x="1"]
      mute_time_intervals: [never, always]
      active_time_intervals: [always]
    - matchers: [x="2"]
      active_time_intervals: [never, past]
    - matchers: [x="3"]
      mute_time_intervals: [never]
      active_time_intervals: [never, always]
    - matchers: [x="4"]
receivers:
  - name: a
time_intervals:
  - name: always
    time_intervals: [{}]
  - name: never
  - name: past
    time_intervals: [{years: ['2000']}]
"#,
        )
        .unwrap();
        let now = 1_717_399_800_000;
        let by = |i: usize| time_muted_by(&c, &c.routes()[i], now);
        assert_eq!(by(1), ["always"]);
        // Outside every active interval: muted by all of them.
        assert_eq!(by(2), ["never", "past"]);
        assert!(by(3).is_empty());
        assert!(by(4).is_empty());
        // Muted routes still take their alerts.
        assert_eq!(match_routes(&c, &l(&[("x", "1")])), [1]);
    }
}
