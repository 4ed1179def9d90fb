/*!
`toJson`: a template value as Go's `json.Marshal` encodes it, which is what
Alertmanager's `toJson` returns.

The shapes follow the Go types behind each value: maps (labels, `KV`,
`dict`'s) are objects with their keys sorted; `Pairs` is an array of
`{"Name":…,"Value":…}`; an alert and the notification data use
Alertmanager's JSON field names (`status`, `labels`, `startsAt`…, and
`receiver`, `groupLabels`, `externalURL`…) and leave out Minos' own fields
(`AckedBy`, `GroupKey`, `Escalated`), as Alertmanager has none of them;
times are RFC 3339 strings with nanoseconds; durations are integers of
nanoseconds. Strings are escaped as Go does by default: `<`, `>` and `&`
become `\u003c`, `\u003e` and `\u0026`, as do U+2028 and U+2029.

Encoding stops with an error once the text is longer than `limit` bytes,
which bounds the work for values that share their elements.
*/

use super::gofmt;
use super::value::{AlertV, DataV, LabelMap, Time, Value};

/// The JSON text of `v`, at most about `limit` bytes.
pub(super) fn to_json(v: &Value, limit: usize) -> Result<String, String> {
    let mut enc = Encoder {
        out: String::new(),
        limit,
    };
    enc.value(v)?;
    Ok(enc.out)
}

struct Encoder {
    out: String,
    limit: usize,
}

type R = Result<(), String>;

impl Encoder {
    /// Fails once the text is over the limit; called before each element.
    fn check(&self) -> R {
        if self.out.len() > self.limit {
            return Err(format!("result exceeds {} bytes", self.limit));
        }
        Ok(())
    }

    fn value(&mut self, v: &Value) -> R {
        self.check()?;
        match v {
            Value::Nil => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) | Value::Duration(n) => self.out.push_str(&n.to_string()),
            Value::Float(f) => self.float(*f)?,
            Value::Str(s) | Value::Html(s) | Value::Url(s) => self.string(s),
            Value::Labels(m) | Value::Kv(m) => self.labels(m)?,
            Value::Map(m) => {
                self.out.push('{');
                for (i, (k, val)) in m.iter().enumerate() {
                    self.check()?;
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.string(k);
                    self.out.push(':');
                    self.value(val)?;
                }
                self.out.push('}');
            }
            Value::List(l) => self.array(l.iter(), |e, v| e.value(v))?,
            Value::Strings(l) => self.array(l.iter(), |e, s| {
                e.string(s);
                Ok(())
            })?,
            Value::Time(t) => self.time(t)?,
            Value::Sample(s) => {
                self.out.push_str("{\"Labels\":");
                self.labels(&s.labels)?;
                self.out.push_str(",\"Value\":");
                self.float(s.value)?;
                self.out.push('}');
            }
            Value::Samples(list) => {
                self.array(list.iter(), |e, s| e.value(&Value::Sample(s.clone())))?
            }
            Value::Dot(d) => {
                self.out.push_str("{\"Labels\":");
                self.labels(&d.labels)?;
                self.out.push_str(",\"ExternalLabels\":");
                self.labels(&d.external_labels)?;
                self.out.push_str(",\"ExternalURL\":");
                self.string(&d.external_url);
                self.out.push_str(",\"Value\":");
                self.float(d.value)?;
                self.out.push('}');
            }
            Value::Pairs(p) => self.array(p.iter(), |e, (k, v)| {
                e.pair(k, v);
                Ok(())
            })?,
            Value::Pair(p, i) => {
                let (k, v) = &p[*i];
                self.pair(k, v);
            }
            Value::Alerts(list, _) => self.array(list.iter(), |e, a| e.alert(a))?,
            Value::Alert(a) => self.alert(a)?,
            Value::Data(d) => self.data(d)?,
        }
        Ok(())
    }

    fn array<T>(
        &mut self,
        items: impl Iterator<Item = T>,
        mut each: impl FnMut(&mut Self, T) -> R,
    ) -> R {
        self.out.push('[');
        for (i, item) in items.enumerate() {
            self.check()?;
            if i > 0 {
                self.out.push(',');
            }
            each(self, item)?;
        }
        self.out.push(']');
        Ok(())
    }

    fn labels(&mut self, m: &LabelMap) -> R {
        self.out.push('{');
        for (i, (k, v)) in m.iter().enumerate() {
            self.check()?;
            if i > 0 {
                self.out.push(',');
            }
            self.string(k);
            self.out.push(':');
            self.string(v);
        }
        self.out.push('}');
        Ok(())
    }

    /// Alertmanager's `template.Pair`, a struct without JSON tags.
    fn pair(&mut self, name: &str, value: &str) {
        self.out.push_str("{\"Name\":");
        self.string(name);
        self.out.push_str(",\"Value\":");
        self.string(value);
        self.out.push('}');
    }

    /// Alertmanager's `template.Alert`.
    fn alert(&mut self, a: &AlertV) -> R {
        self.out.push_str("{\"status\":");
        self.string(&a.status);
        self.out.push_str(",\"labels\":");
        self.labels(&a.labels)?;
        self.out.push_str(",\"annotations\":");
        self.labels(&a.annotations)?;
        self.out.push_str(",\"startsAt\":");
        self.time(&a.starts_at)?;
        self.out.push_str(",\"endsAt\":");
        self.time(&a.ends_at)?;
        self.out.push_str(",\"generatorURL\":");
        self.string(&a.generator_url);
        self.out.push_str(",\"fingerprint\":");
        self.string(&a.fingerprint);
        self.out.push('}');
        Ok(())
    }

    /// Alertmanager's `template.Data`.
    fn data(&mut self, d: &DataV) -> R {
        self.out.push_str("{\"receiver\":");
        self.string(&d.receiver);
        self.out.push_str(",\"status\":");
        self.string(&d.status);
        self.out.push_str(",\"alerts\":");
        self.array(d.alerts.iter(), |e, a| e.alert(a))?;
        self.out.push_str(",\"groupLabels\":");
        self.labels(&d.group_labels)?;
        self.out.push_str(",\"commonLabels\":");
        self.labels(&d.common_labels)?;
        self.out.push_str(",\"commonAnnotations\":");
        self.labels(&d.common_annotations)?;
        self.out.push_str(",\"externalURL\":");
        self.string(&d.external_url);
        self.out.push('}');
        Ok(())
    }

    /// `time.Time.MarshalJSON`: RFC 3339 with the nanoseconds that are not
    /// zero, in the time's own offset.
    fn time(&mut self, t: &Time) -> R {
        let year = t.civil().year;
        if !(0..=9999).contains(&year) {
            return Err("json: error calling MarshalJSON for type time.Time: \
                 Time.MarshalJSON: year outside of range [0,9999]"
                .into());
        }
        self.out.push('"');
        self.out
            .push_str(&t.format("2006-01-02T15:04:05.999999999Z07:00"));
        self.out.push('"');
        Ok(())
    }

    /// A float64 as Go's encoder writes it: `%f`-like digits between 1e-6
    /// and 1e21, exponent form outside, always the shortest that round-trips.
    fn float(&mut self, f: f64) -> R {
        if f.is_nan() || f.is_infinite() {
            return Err(format!(
                "json: unsupported value: {}",
                gofmt::format_float(f, 'g', None)
            ));
        }
        let abs = f.abs();
        if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            let text = gofmt::format_float(f, 'e', None);
            // Go's encoder writes `1e-07` as `1e-7`.
            match text.split_once("e-0") {
                Some((mantissa, exp)) => {
                    self.out.push_str(mantissa);
                    self.out.push_str("e-");
                    self.out.push_str(exp);
                }
                None => self.out.push_str(&text),
            }
        } else {
            self.out.push_str(&gofmt::format_float(f, 'f', None));
        }
        Ok(())
    }

    /// A JSON string, escaped as Go's encoder does with HTML escaping on.
    fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                    let n = c as u32;
                    self.out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        self.out
                            .push(char::from(HEX[((n >> shift) & 0xf) as usize]));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: Value) -> Result<String, String> {
        to_json(&v, 1 << 20)
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (f, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (123456.789, "123456.789"),
            (1e-6, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (1e-10, "1e-10"),
            (1e-100, "1e-100"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (-2.5e300, "-2.5e+300"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ] {
            assert_eq!(json(Value::Float(f)).unwrap(), want, "{f}");
        }
    }

    #[test]
    fn values_json_cannot_hold_are_errors() {
        for (f, name) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(
                json(Value::Float(f)).unwrap_err(),
                format!("json: unsupported value: {name}")
            );
        }
        let e = json(Value::Time(Time::utc(-70_000_000_000, 0))).unwrap_err();
        assert!(e.contains("year outside of range [0,9999]"), "{e}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let s: String = (0u8..0x20).map(char::from).collect();
        let out = json(Value::str(&s)).unwrap();
        assert!(out.starts_with(r#""\u0000\u0001"#), "{out}");
        assert!(out.contains(r#"\u0007\b\t\n\u000b\f\r\u000e"#), "{out}");
        assert!(out.ends_with(r#"\u001f""#), "{out}");
    }

    #[test]
    fn encoding_stops_at_the_limit() {
        let big = Value::str(&"x".repeat(100));
        let list = Value::list(vec![big; 100]).unwrap();
        assert!(
            to_json(&list, 1000)
                .unwrap_err()
                .contains("exceeds 1000 bytes")
        );
        assert!(to_json(&list, 20_000).is_ok());
    }
}
