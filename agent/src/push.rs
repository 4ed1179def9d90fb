//! Sending collected metrics to the server as a Prometheus remote_write request
//! (protobuf, snappy), with `instance=<hostname>` and `job="node"` added to every series,
//! as a Prometheus scraping node_exporter would label them.

use collector::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest, encode_snappy};

use crate::hostmetrics::Metric;

/// The remote_write body for `metrics` taken at `t` (Unix ms) on host `instance`.
pub fn write_request(metrics: &[Metric], instance: &str, t: i64) -> Vec<u8> {
    let timeseries = metrics
        .iter()
        .map(|m| {
            let mut labels: Vec<Label> = m
                .labels
                .iter()
                .filter(|(k, _)| *k != "instance" && *k != "job")
                .map(|(k, v)| Label {
                    name: k.to_string(),
                    value: v.clone(),
                })
                .collect();
            labels.push(Label {
                name: "__name__".into(),
                value: m.name.clone(),
            });
            labels.push(Label {
                name: "instance".into(),
                value: instance.into(),
            });
            labels.push(Label {
                name: "job".into(),
                value: "node".into(),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            TimeSeries {
                labels,
                samples: vec![Sample {
                    value: m.value,
                    timestamp: t,
                }],
            }
        })
        .collect();
    encode_snappy(&WriteRequest { timeseries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_with_sorted_labels_and_the_instance() {
        let m = vec![Metric {
            name: "node_load1".into(),
            labels: vec![("instance", "spoofed".into())],
            value: 0.5,
        }];
        let body = write_request(&m, "web-01", 1_700_000_000_000);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        let names: Vec<(&str, &str)> = req.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("__name__", "node_load1"),
                ("instance", "web-01"),
                ("job", "node")
            ]
        );
        assert_eq!(req.timeseries[0].samples[0].value, 0.5);
    }
}
