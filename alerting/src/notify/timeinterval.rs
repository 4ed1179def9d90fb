/*!
Alertmanager's time intervals: named, recurring sets of instants ("weekdays 09:00 to
17:00 in Europe/Berlin") that routes reference in `mute_time_intervals` and
`active_time_intervals`. This file defines the raw YAML shape, its validation (with
Alertmanager's rules and error paths in Minos' style), and [`TimeInterval::contains`].

Semantics, as Alertmanager documents them: a named interval holds a list of specs and
contains an instant when any spec does. A spec contains an instant when every field it
sets does (a field left out or empty matches everything). Within a field, one entry
must match. The instant is first converted to the spec's `location` (UTC when absent,
`Local` for the server's zone, otherwise an IANA name read from the system's tz
database); fields then compare the local wall-clock time at minute resolution:

- `times`: `start_time` inclusive, `end_time` exclusive, `HH:MM`, `24:00` allowed as
  an end; a range never crosses midnight (write two ranges).
- `weekdays`: names, case-insensitive; `monday:friday` ranges run from Sunday to
  Saturday and do not wrap (`saturday:sunday` is refused).
- `days_of_month`: 1..31 or -31..-1 counted from the month's end (`-1` is the last
  day); a bound past the month's end is clamped to it.
- `months`: names (case-insensitive) or 1..12; `years`: numbers; both inclusive.

On a daylight-saving change the wall clock skips or repeats an hour: an interval
inside the skipped hour matches nothing that day, one inside the repeated hour matches
both passes, as with Alertmanager (which uses Go's local wall clock the same way).
*/

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::notify::config::{ConfigError, invalid};

// ---------------------------------------------------------------------------------
// Raw: as written.
// ---------------------------------------------------------------------------------

/// One entry of `time_intervals` (or of the deprecated top-level
/// `mute_time_intervals`) as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    #[serde(default)]
    name: String,
    #[serde(default)]
    time_intervals: Vec<RawSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    times: Vec<RawTimeRange>,
    #[serde(default)]
    weekdays: Vec<String>,
    #[serde(default)]
    days_of_month: Vec<String>,
    #[serde(default)]
    months: Vec<String>,
    #[serde(default)]
    years: Vec<String>,
    location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeRange {
    start_time: Option<String>,
    end_time: Option<String>,
}

// ---------------------------------------------------------------------------------
// Validated.
// ---------------------------------------------------------------------------------

/// A named time interval: the union of its specs.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    /// The name routes use (case-sensitive, as in Alertmanager).
    pub name: String,
    specs: Vec<Spec>,
}

/// One `time_intervals[i]` entry of a named interval. Every list holds inclusive
/// `(first, last)` pairs except `times`, whose end is exclusive.
#[derive(Debug, Clone)]
struct Spec {
    /// Minutes of the day, `[start, end)`.
    times: Vec<(u16, u16)>,
    /// 0 = Sunday .. 6 = Saturday.
    weekdays: Vec<(i8, i8)>,
    /// 1..=31, or -31..=-1 from the month's end.
    days_of_month: Vec<(i8, i8)>,
    /// 1 = January.
    months: Vec<(i8, i8)>,
    years: Vec<(i32, i32)>,
    /// Resolved once at load; `TimeZone` is a cheap reference-counted handle.
    location: TimeZone,
}

impl Raw {
    /// The name as written (checked for uniqueness by the caller).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Validates one named interval; `path` names it (`time_intervals[0]`).
    pub(crate) fn validate(self, path: &str) -> Result<TimeInterval, ConfigError> {
        if self.name.is_empty() {
            return Err(invalid(format!("{path}.name"), "must not be empty"));
        }
        let mut specs = Vec::with_capacity(self.time_intervals.len());
        for (i, s) in self.time_intervals.into_iter().enumerate() {
            specs.push(s.validate(&format!("{path}.time_intervals[{i}]"))?);
        }
        Ok(TimeInterval {
            name: self.name,
            specs,
        })
    }
}

impl RawSpec {
    fn validate(self, path: &str) -> Result<Spec, ConfigError> {
        let mut times = Vec::new();
        for (i, t) in self.times.iter().enumerate() {
            times.push(
                t.validate()
                    .map_err(|m| invalid(format!("{path}.times[{i}]"), m))?,
            );
        }
        let weekdays = each(&self.weekdays, path, "weekdays", weekday_range)?;
        let days_of_month = each(&self.days_of_month, path, "days_of_month", day_range)?;
        let months = each(&self.months, path, "months", month_range)?;
        let years = each(&self.years, path, "years", year_range)?;
        let location = match self.location.as_deref() {
            // Go's time.LoadLocation: "" and "UTC" are UTC, "Local" the server's zone.
            None | Some("") | Some("UTC") => TimeZone::UTC,
            Some("Local") => TimeZone::system(),
            Some(name) => TimeZone::get(name).map_err(|e| {
                invalid(
                    format!("{path}.location"),
                    format!("unknown time zone {name:?}: {e}"),
                )
            })?,
        };
        Ok(Spec {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
        })
    }
}

impl RawTimeRange {
    fn validate(&self) -> Result<(u16, u16), String> {
        let (Some(start), Some(end)) = (&self.start_time, &self.end_time) else {
            return Err("both start_time and end_time must be given".into());
        };
        let s = minute_of_day(start)?;
        let e = minute_of_day(end)?;
        if s >= e {
            return Err(format!(
                "start_time {start:?} must be before end_time {end:?} (a range cannot \
                 cross midnight: write two)"
            ));
        }
        Ok((s, e))
    }
}

/// Validates every entry of one list field, naming the entry in errors.
fn each<T>(
    list: &[String],
    path: &str,
    field: &str,
    parse: fn(&str) -> Result<(T, T), String>,
) -> Result<Vec<(T, T)>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| parse(s).map_err(|m| invalid(format!("{path}.{field}[{i}]"), m)))
        .collect()
}

/// `HH:MM` (two digits each, 00:00 to 23:59) or `24:00`, as minutes of the day.
fn minute_of_day(s: &str) -> Result<u16, String> {
    let bad = || format!("invalid time {s:?} (want HH:MM, from 00:00 to 24:00)");
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return Err(bad());
    }
    let digits = [b[0], b[1], b[3], b[4]];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let [h1, h2, m1, m2] = digits.map(|d| u16::from(d - b'0'));
    let (h, m) = (h1 * 10 + h2, m1 * 10 + m2);
    if (h < 24 && m < 60) || (h == 24 && m == 0) {
        Ok(h * 60 + m)
    } else {
        Err(bad())
    }
}

/// Splits `a:b` (or a single `a`) after lower-casing, parsing both ends with `member`.
fn split_range<T: Copy>(
    s: &str,
    member: impl Fn(&str) -> Result<T, String>,
) -> Result<(T, T), String> {
    let lower = s.to_ascii_lowercase();
    let mut parts = lower.split(':');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => {
            let v = member(first)?;
            Ok((v, v))
        }
        (Some(second), None) => Ok((member(first)?, member(second)?)),
        (Some(_), Some(_)) => Err(format!("invalid range {s:?} (want a or a:b)")),
    }
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn weekday_range(s: &str) -> Result<(i8, i8), String> {
    let (a, b) = split_range(s, |w| {
        WEEKDAYS
            .iter()
            .position(|d| *d == w)
            .and_then(|i| i8::try_from(i).ok())
            .ok_or_else(|| format!("invalid weekday {w:?} (want a name such as monday)"))
    })?;
    if a > b {
        return Err(format!(
            "range {s:?} ends before it starts (weeks run from sunday to saturday; \
             list the days on both sides of the week's end separately)"
        ));
    }
    Ok((a, b))
}

fn day_range(s: &str) -> Result<(i8, i8), String> {
    let (a, b) = split_range(s, |d| {
        d.parse::<i8>()
            .ok()
            .filter(|n| *n != 0 && (-31..=31).contains(n))
            .ok_or_else(|| format!("invalid day of month {d:?} (want 1 to 31, or -31 to -1)"))
    })?;
    if a < 0 && b > 0 {
        return Err(format!(
            "range {s:?}: a negative start needs a negative end"
        ));
    }
    // Alertmanager's check: with negative days counted in a 28-day month, the range
    // must not be empty (it cannot know longer months here).
    let in_short_month = |d: i8| if d < 0 { 28 + d } else { d };
    if in_short_month(a) > in_short_month(b) {
        return Err(format!("range {s:?} ends before it starts"));
    }
    Ok((a, b))
}

fn month_range(s: &str) -> Result<(i8, i8), String> {
    let (a, b) = split_range(s, |m| {
        let by_name = MONTHS.iter().position(|n| *n == m).map(|i| i + 1);
        let by_number = m.parse::<usize>().ok().filter(|n| (1..=12).contains(n));
        by_name
            .or(by_number)
            .and_then(|i| i8::try_from(i).ok())
            .ok_or_else(|| format!("invalid month {m:?} (want a name or 1 to 12)"))
    })?;
    if a > b {
        return Err(format!("range {s:?} ends before it starts"));
    }
    Ok((a, b))
}

fn year_range(s: &str) -> Result<(i32, i32), String> {
    let (a, b) = split_range(s, |y| {
        y.parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("invalid year {y:?}"))
    })?;
    if a > b {
        return Err(format!("range {s:?} ends before it starts"));
    }
    Ok((a, b))
}

// ---------------------------------------------------------------------------------
// Matching.
// ---------------------------------------------------------------------------------

impl TimeInterval {
    /// Whether the instant `unix_ms` falls in this interval.
    pub fn contains(&self, unix_ms: i64) -> bool {
        let Ok(ts) = Timestamp::from_millisecond(unix_ms) else {
            return false;
        };
        self.specs.iter().any(|s| s.contains(ts))
    }
}

fn any_in<T: PartialOrd + Copy>(ranges: &[(T, T)], v: T) -> bool {
    ranges.is_empty() || ranges.iter().any(|&(a, b)| a <= v && v <= b)
}

impl Spec {
    fn contains(&self, ts: Timestamp) -> bool {
        let dt = self.location.to_datetime(ts);
        let minute = i32::from(dt.hour()) * 60 + i32::from(dt.minute());
        let in_times = self.times.is_empty()
            || self
                .times
                .iter()
                .any(|&(s, e)| i32::from(s) <= minute && minute < i32::from(e));
        if !in_times {
            return false;
        }
        if !self.days_of_month.is_empty() {
            let dim = dt.date().days_in_month();
            let day = dt.day();
            let resolve = |d: i8| if d < 0 { dim + d + 1 } else { d };
            let hit = self.days_of_month.iter().any(|&(a, b)| {
                let (first, last) = (resolve(a), resolve(b).min(dim));
                // A start past this month's end (`31` in April) matches nothing.
                first <= dim && first <= day && day <= last
            });
            if !hit {
                return false;
            }
        }
        any_in(&self.months, dt.month())
            && any_in(&self.weekdays, dt.weekday().to_sunday_zero_offset())
            && any_in(&self.years, i32::from(dt.year()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the `time_intervals` list of one named interval.
    fn interval(yaml: &str) -> TimeInterval {
        let raw: Raw = serde_saphyr::from_str(&format!("name: t\ntime_intervals:\n{yaml}"))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        raw.validate("time_intervals[0]")
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    fn err(yaml: &str) -> String {
        let raw: Raw = match serde_saphyr::from_str(&format!("name: t\ntime_intervals:\n{yaml}")) {
            Ok(r) => r,
            Err(e) => return e.to_string(),
        };
        raw.validate("time_intervals[0]").unwrap_err().to_string()
    }

    /// Unix ms of a civil time in `zone`.
    fn at(zone: &str, civil: &str) -> i64 {
        let dt: jiff::civil::DateTime = civil.parse().unwrap();
        TimeZone::get(zone)
            .unwrap()
            .to_timestamp(dt)
            .unwrap()
            .as_millisecond()
    }

    fn utc(civil: &str) -> i64 {
        at("UTC", civil)
    }

    #[test]
    fn weekday_ranges_cover_the_week_from_sunday() {
        let t = interval("  - weekdays: ['Monday:FRIDAY', 'sunday']\n");
        // 2024-06-02 is a Sunday.
        let want = [true, true, true, true, true, true, false];
        for (i, w) in want.iter().enumerate() {
            let ms = utc(&format!("2024-06-{:02}T12:00", 2 + i));
            assert_eq!(t.contains(ms), *w, "day {i} of the week");
        }
        let all = interval("  - weekdays: ['sunday:saturday']\n");
        assert!((0..7).all(|i| all.contains(utc(&format!("2024-06-{:02}T00:00", 2 + i)))));
        let e = err("  - weekdays: ['saturday:sunday']\n");
        assert!(
            e.contains("weekdays[0]") && e.contains("ends before"),
            "{e}"
        );
    }

    #[test]
    fn negative_days_of_month_count_from_each_months_end() {
        let t = interval("  - days_of_month: ['-3:-1']\n");
        // (month, first matching day, days in month)
        for (m, first, dim) in [
            ("2023-02", 26, 28),
            ("2024-02", 27, 29),
            ("2024-04", 28, 30),
            ("2024-05", 29, 31),
        ] {
            for d in 1..=dim {
                let ms = utc(&format!("{m}-{d:02}T08:00"));
                assert_eq!(t.contains(ms), d >= first, "{m}-{d}");
            }
        }
        // A bound past the month's end is clamped; a start past it matches nothing.
        let t = interval("  - days_of_month: ['25:31']\n");
        assert!(t.contains(utc("2023-02-28T00:00")));
        let t = interval("  - days_of_month: ['31']\n");
        assert!(!t.contains(utc("2024-04-30T00:00")));
        assert!(t.contains(utc("2024-05-31T00:00")));
        // Positive start, negative end: the first to the second-to-last day.
        let t = interval("  - days_of_month: ['1:-2']\n");
        assert!(t.contains(utc("2024-02-28T00:00")));
        assert!(!t.contains(utc("2024-02-29T00:00")));
    }

    #[test]
    fn months_by_name_or_number_and_years() {
        let t = interval("  - months: ['1:3', 'December']\n    years: ['2020:2022']\n");
        assert!(t.contains(utc("2021-02-10T00:00")));
        assert!(t.contains(utc("2020-12-31T23:59")));
        assert!(!t.contains(utc("2021-04-01T00:00")));
        assert!(!t.contains(utc("2023-01-01T00:00")));
        let t = interval("  - months: ['may:august']\n");
        assert!(t.contains(utc("2024-08-31T23:59")));
        assert!(!t.contains(utc("2024-09-01T00:00")));
    }

    #[test]
    fn times_are_inclusive_exclusive_and_24_00_ends_the_day() {
        let t = interval(
            "  - times:\n      - start_time: '17:00'\n        end_time: '24:00'\n      - {start_time: '00:00', end_time: '06:30'}\n",
        );
        assert!(t.contains(utc("2024-06-03T17:00")));
        assert!(t.contains(utc("2024-06-03T23:59:59")));
        assert!(t.contains(utc("2024-06-04T00:00")));
        assert!(t.contains(utc("2024-06-04T06:29:59")));
        assert!(!t.contains(utc("2024-06-04T06:30")));
        assert!(!t.contains(utc("2024-06-03T16:59:59")));
    }

    #[test]
    fn an_empty_spec_matches_always_and_no_spec_never() {
        assert!(interval("  - {}\n").contains(utc("2024-06-03T12:00")));
        let raw: Raw = serde_saphyr::from_str("name: never\n").unwrap();
        assert!(!raw.validate("x").unwrap().contains(utc("2024-06-03T12:00")));
    }

    #[test]
    fn locations_follow_daylight_saving_time() {
        let t = interval(
            "  - times: [{start_time: '09:00', end_time: '17:00'}]\n    weekdays: ['monday:friday']\n    location: Europe/Berlin\n",
        );
        // Winter: UTC+1; summer: UTC+2.
        assert!(t.contains(utc("2024-01-15T08:00")));
        assert!(!t.contains(utc("2024-01-15T07:59")));
        assert!(t.contains(utc("2024-07-15T07:00")));
        assert!(!t.contains(utc("2024-07-15T15:00")));
        // Friday 16:30 in Berlin is still in; Saturday never is.
        assert!(t.contains(at("Europe/Berlin", "2024-03-29T16:30")));
        assert!(!t.contains(at("Europe/Berlin", "2024-03-30T10:00")));

        // 2024-03-31, the last Sunday of March: 02:00 CET jumps to 03:00 CEST.
        let night = interval(
            "  - times: [{start_time: '01:00', end_time: '04:00'}]\n    location: Europe/Berlin\n",
        );
        assert!(night.contains(utc("2024-03-31T00:00"))); // 01:00 CET
        assert!(night.contains(utc("2024-03-31T00:59"))); // 01:59 CET
        assert!(night.contains(utc("2024-03-31T01:00"))); // 03:00 CEST
        assert!(night.contains(utc("2024-03-31T01:59"))); // 03:59 CEST
        assert!(!night.contains(utc("2024-03-31T02:00"))); // 04:00 CEST
        // The skipped hour matches nothing that day.
        let gap = interval(
            "  - times: [{start_time: '02:00', end_time: '03:00'}]\n    location: Europe/Berlin\n",
        );
        let day: Vec<i64> = (0..24 * 60)
            .map(|m| utc("2024-03-30T22:00") + m * 60_000)
            .collect();
        assert!(!day.iter().any(|ms| gap.contains(*ms)));
        assert!(gap.contains(utc("2024-03-30T01:30")));
        // 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice.
        assert!(gap.contains(utc("2024-10-27T00:30"))); // 02:30 CEST
        assert!(gap.contains(utc("2024-10-27T01:30"))); // 02:30 CET
    }

    #[test]
    fn utc_and_local_locations() {
        let t =
            interval("  - times: [{start_time: '10:00', end_time: '11:00'}]\n    location: UTC\n");
        assert!(t.contains(utc("2024-06-03T10:30")));
        // Local resolves to the server's zone: it must load, whatever it is.
        let now = interval("  - location: Local\n");
        assert!(now.contains(utc("2024-06-03T10:30")));
    }

    #[test]
    fn bad_values_are_refused_with_the_path() {
        let cases = [
            (
                "  - times: [{start_time: '9:00', end_time: '17:00'}]\n",
                "time_intervals[0].time_intervals[0].times[0]: invalid time \"9:00\"",
            ),
            (
                "  - times: [{start_time: '10:00', end_time: '24:01'}]\n",
                "times[0]: invalid time \"24:01\"",
            ),
            (
                "  - times: [{start_time: '22:00', end_time: '06:00'}]\n",
                "times[0]: start_time \"22:00\" must be before",
            ),
            (
                "  - times: [{start_time: '24:00', end_time: '24:00'}]\n",
                "must be before",
            ),
            (
                "  - times: [{start_time: '10:00'}]\n",
                "both start_time and end_time",
            ),
            (
                "  - {}\n  - weekdays: [monday, funday]\n",
                "time_intervals[1].weekdays[1]: invalid weekday \"funday\"",
            ),
            ("  - weekdays: ['monday:tuesday:friday']\n", "invalid range"),
            (
                "  - days_of_month: ['0']\n",
                "days_of_month[0]: invalid day of month \"0\"",
            ),
            ("  - days_of_month: ['32']\n", "invalid day of month"),
            ("  - days_of_month: ['-32:-1']\n", "invalid day of month"),
            (
                "  - days_of_month: ['-1:5']\n",
                "negative start needs a negative end",
            ),
            ("  - days_of_month: ['10:5']\n", "ends before"),
            ("  - days_of_month: ['5:-25']\n", "ends before"),
            ("  - months: ['13']\n", "months[0]: invalid month \"13\""),
            ("  - months: ['march:january']\n", "ends before"),
            (
                "  - years: ['2022:2020']\n",
                "years[0]: range \"2022:2020\" ends before",
            ),
            ("  - years: ['twenty']\n", "invalid year"),
            (
                "  - location: Mars/Olympus_Mons\n",
                "time_intervals[0].location: unknown time zone",
            ),
            ("  - weekday: [monday]\n", "weekday"),
        ];
        for (yaml, want) in cases {
            let e = err(yaml);
            assert!(e.contains(want), "{yaml}: got {e}, want {want}");
        }
        let raw: Raw = serde_saphyr::from_str("time_intervals: []\n").unwrap();
        let e = raw.validate("time_intervals[3]").unwrap_err().to_string();
        assert_eq!(e, "time_intervals[3].name: must not be empty");
    }

    #[test]
    fn unquoted_yaml_values_read_as_text() {
        // YAML 1.1 readers may take 09:00 for a sexagesimal number; ours must not.
        let t = interval(
            "  - times: [{start_time: 09:00, end_time: 17:30}]\n    years: [2024]\n    days_of_month: [-1]\n",
        );
        assert!(t.contains(utc("2024-01-31T09:00")));
        assert!(!t.contains(utc("2024-01-31T17:30")));
    }
}
