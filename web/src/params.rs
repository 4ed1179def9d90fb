//! Parsing of request parameters: times, durations and series selectors.
//!
//! Times are RFC 3339 or Unix seconds with an optional fraction, as Prometheus accepts
//! them; durations use Prometheus' syntax (`1h30m`, `90d`, `100y`) or plain seconds.

use tsdb::{MatchOp, Matcher};

/// Parses a non-negative Prometheus duration (`1h30m`, `90d`, `100y`; a plain number is
/// seconds) into milliseconds, with the query engine's parser so both read durations
/// alike.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    match promql::parse_duration_ms(s.trim()) {
        Ok(ms) if ms >= 0 => Ok(ms),
        Ok(_) => Err(format!("invalid duration {s:?}: must not be negative")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a time parameter: Unix seconds (fraction allowed) or RFC 3339. Returns ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("invalid time {s:?}"));
        }
        let ms = (f * 1000.0).round();
        return Ok(ms.clamp(i64::MIN as f64, i64::MAX as f64) as i64);
    }
    parse_rfc3339(s).ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp"))
}

/// RFC 3339 (`2006-01-02T15:04:05.999Z` or with `±hh:mm`) to ms since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        b'+' | b'-' if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if b[i] == b'-' { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // Days from civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// Parses a series selector (`metric{label="v", ...}`) into matchers. At least one
/// matcher must not match the empty string, as Prometheus requires.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, String> {
    let expr =
        promql_parser::parser::parse(s).map_err(|e| format!("invalid selector {s:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!(
            "invalid selector {s:?}: expected a series selector"
        ));
    };
    if !vs.matchers.or_matchers.is_empty() {
        return Err(format!(
            "invalid selector {s:?}: `or` in selectors is not supported here"
        ));
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::eq("__name__", name));
    }
    for m in &vs.matchers.matchers {
        use promql_parser::label::MatchOp as P;
        let op = match m.op {
            P::Equal => MatchOp::Equal,
            P::NotEqual => MatchOp::NotEqual,
            P::Re(_) => MatchOp::Regex,
            P::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(
            Matcher::new(op, &m.name, &m.value)
                .map_err(|e| format!("invalid regex in {s:?}: {e}"))?,
        );
    }
    if out.iter().all(|m| m.matches_empty()) {
        return Err(format!(
            "invalid selector {s:?}: match[] must contain at least one matcher that does not match the empty string"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_prometheus_syntax() {
        assert_eq!(parse_duration("15d").unwrap(), 15 * 86_400_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("100y").unwrap(), 100 * 365 * 86_400_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250);
        assert_eq!(parse_duration("30").unwrap(), 30_000);
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("30m1h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999y").is_err());
        assert!(parse_duration("-5").is_err());
    }

    #[test]
    fn times_as_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1700000000.123").unwrap(), 1_700_000_000_123);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00").unwrap(),
            1_700_000_000_500
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2023-13-14T22:13:20Z").is_err());
    }

    #[test]
    fn selectors_become_matchers() {
        let m = parse_selector(r#"up{job="api",env!~"dev|test"}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "__name__");
        assert!(parse_selector(r#"{job=~".*"}"#).is_err());
        assert!(parse_selector("rate(x[5m])").is_err());
        assert!(parse_selector("{").is_err());
    }
}
