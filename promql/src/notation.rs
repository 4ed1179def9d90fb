//! The series notation of Prometheus' test scripts (`promqltest` files and the rule
//! unit tests `promtool test rules` runs): values such as `1+2x3 _ stale` and metrics
//! with labels such as `up{job="node"}`.
//!
//! Kept here, next to the evaluator those scripts exercise, so that the engine's
//! conformance tests and `minos rules test` read the notation the same way.
//!
//! # Values
//!
//! Tokens separated by white space, one or more points each:
//!
//! | token | points |
//! |---|---|
//! | `1`, `-2.5`, `1e3`, `0x1f`, `Inf`, `NaN` | that value |
//! | `_` | a missing point |
//! | `stale` | a staleness marker |
//! | `AxN` | `N + 1` times `A` |
//! | `A+BxN`, `A-BxN` | `A`, `A±B`, … `N + 1` points |
//! | `_xN`, `stalexN` | `N` missing points, `N` markers |

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, parse};
use tsdb::Labels;

/// Expands the tokens of `values` (`1+2x3 _ stale`): one entry per point, `None` for
/// a missing one.
pub fn parse_values(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in values.split_whitespace() {
        expand(tok, &mut out)?;
    }
    Ok(out)
}

/// A metric with labels, `name{a="b"}`, `{__name__="name", a="b"}` or `{}`, as Prometheus'
/// `parser.ParseMetric` reads it.
pub fn parse_metric(s: &str) -> Result<Labels, String> {
    let t = s.trim();
    if t.starts_with('{') && t[1..].trim() == "}" {
        return Ok(Labels::default());
    }
    let e = std::panic::catch_unwind(|| parse(t))
        .map_err(|_| "parse error: malformed metric".to_string())?
        .map_err(|e| format!("parse error: {e}"))?;
    let Expr::VectorSelector(vs) = e else {
        return Err(format!("parse error: {s:?} is not a metric with labels"));
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(format!("parse error: {s:?} is not a metric with labels"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(n) = vs.name {
        pairs.push(("__name__".into(), n));
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(format!("parse error: {s:?}: only `=` may give a label"));
        }
        if m.name == "__name__" && pairs.iter().any(|(n, v)| n == "__name__" && *v == m.value) {
            continue;
        }
        pairs.push((m.name, m.value));
    }
    Labels::from_pairs(pairs).map_err(|e| format!("parse error: {s:?}: {e}"))
}

/// A number as the scripts write one: Go's float syntax, `0x` hex integers, `Inf`, `NaN`.
pub fn parse_number(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => {
            if let Some(h) = s.strip_prefix("0x") {
                return i64::from_str_radix(h, 16)
                    .map(|v| v as f64)
                    .map_err(|e| format!("{s}: {e}"));
            }
            s.parse::<f64>().map_err(|_| format!("bad number {s:?}"))
        }
    }
}

/// Expands one token: `1`, `_`, `stale`, `1x3` (four ones), `1+2x3` (1 3 5 7), `-2-1x4`,
/// `_x3` (three missing), `1e3+1e2x2`.
fn expand(tok: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    let stale = f64::from_bits(tsdb::STALE_NAN_BITS);
    if let Some((head, n)) = tok.rsplit_once('x')
        && let Ok(n) = n.parse::<usize>()
    {
        if n > 1_000_000 {
            return Err(format!("{tok:?}: too many repetitions"));
        }
        if head == "_" {
            out.extend(std::iter::repeat_n(None, n));
            return Ok(());
        }
        if head == "stale" {
            out.extend(std::iter::repeat_n(Some(stale), n));
            return Ok(());
        }
        let b = head.as_bytes();
        let mut split = None;
        for i in 1..b.len() {
            if (b[i] == b'+' || b[i] == b'-') && !matches!(b[i - 1], b'e' | b'E') {
                split = Some(i);
            }
        }
        let (start, step) = match split {
            Some(i) => {
                let st = parse_number(&head[i + 1..])?;
                (
                    parse_number(&head[..i])?,
                    if b[i] == b'-' { -st } else { st },
                )
            }
            None => (parse_number(head)?, 0.0),
        };
        let mut v = start;
        out.push(Some(v));
        for _ in 0..n {
            v += step;
            out.push(Some(v));
        }
        return Ok(());
    }
    match tok {
        "_" => out.push(None),
        "stale" => out.push(Some(stale)),
        _ => out.push(Some(parse_number(tok)?)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(s: &str) -> Vec<Option<f64>> {
        parse_values(s).unwrap()
    }

    #[test]
    fn the_notation_expands_like_promtool() {
        let some = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        assert_eq!(vals("1+2x3"), some(&[1.0, 3.0, 5.0, 7.0]));
        assert_eq!(vals("-1-1x2"), some(&[-1.0, -2.0, -3.0]));
        assert_eq!(vals("1x2"), some(&[1.0, 1.0, 1.0]));
        assert_eq!(vals("1e3+1e2x1"), some(&[1000.0, 1100.0]));
        assert_eq!(vals("1 _ 3"), vec![Some(1.0), None, Some(3.0)]);
        assert_eq!(vals("_x2 4"), vec![None, None, Some(4.0)]);
        let s = vals("stale");
        assert_eq!(s[0].unwrap().to_bits(), tsdb::STALE_NAN_BITS);
        assert!(parse_values("1 y").is_err());
        assert!(parse_values("1x2000000").is_err());
    }

    #[test]
    fn metrics_parse_like_parse_metric() {
        let l = parse_metric(r#"up{job="node", instance="a"}"#).unwrap();
        assert_eq!(l.to_string(), r#"up{instance="a", job="node"}"#);
        let l = parse_metric(r#"{__name__="up", job="x"}"#).unwrap();
        assert_eq!(l.metric_name(), Some("up"));
        assert!(parse_metric("{}").unwrap().is_empty());
        assert!(parse_metric("up{").is_err());
        assert!(parse_metric(r#"up{a=~"x"}"#).is_err());
        assert!(parse_metric("rate(x[1m])").is_err());
    }
}
