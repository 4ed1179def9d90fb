//! A realistic, deterministic metrics workload: node-exporter-like host metrics
//! (counters, gauges, constants) and business counters, as a company's hosts produce
//! them.
//!
//! Series `i` belongs to host `i / SERIES_PER_HOST` and is one of a fixed mix of kinds.
//! Every value and timestamp depends only on the seed, the series index and the step, so
//! Minos, Prometheus and VictoriaMetrics can be fed exactly the same data.

use crate::splitmix64;

/// Series one host contributes (the mix below repeats with this period).
pub const SERIES_PER_HOST: usize = 100;
/// Scrape interval of the workload, in milliseconds.
pub const INTERVAL_MS: i64 = 15_000;

/// What a series looks like over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CPU seconds: grows by about the interval times a share, in hundredths.
    CpuSeconds,
    /// Byte or packet counters: integer increments of varying size.
    ByteCounter,
    /// Gauges in bytes, multiples of 4096 that wander.
    MemoryBytes,
    /// Gauges with two decimals (load averages, temperatures).
    Load,
    /// Values that never change (filesystem sizes, info metrics).
    Constant,
    /// Business counters: small integer increments, often zero.
    Orders,
}

/// The labels and kind of series `i`.
pub fn series_labels(i: usize) -> (Kind, Vec<(String, String)>) {
    let host = i / SERIES_PER_HOST;
    let k = i % SERIES_PER_HOST;
    let instance = format!("host-{host:05}.dc1.example.com:9100");
    let mut l: Vec<(String, String)> = vec![
        ("instance".into(), instance),
        ("job".into(), "node".into()),
        ("dc".into(), format!("dc{}", host % 3 + 1)),
    ];
    let (kind, name) = match k {
        0..=39 => {
            let modes = [
                "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
            ];
            l.push(("cpu".into(), (k / 8).to_string()));
            l.push(("mode".into(), modes[k % 8].into()));
            (Kind::CpuSeconds, "node_cpu_seconds_total")
        }
        40..=59 => {
            let dev = ["eth0", "eth1", "lo", "bond0", "docker0"][k % 5];
            l.push(("device".into(), dev.into()));
            let n = [
                "node_network_receive_bytes_total",
                "node_network_transmit_bytes_total",
                "node_network_receive_packets_total",
                "node_network_transmit_packets_total",
            ][(k - 40) / 5];
            (Kind::ByteCounter, n)
        }
        60..=69 => {
            let n = [
                "node_memory_MemFree_bytes",
                "node_memory_Cached_bytes",
                "node_memory_Buffers_bytes",
                "node_memory_MemAvailable_bytes",
                "node_memory_Active_bytes",
                "node_memory_Inactive_bytes",
                "node_memory_Dirty_bytes",
                "node_memory_Slab_bytes",
                "node_memory_SwapFree_bytes",
                "node_memory_Shmem_bytes",
            ][k - 60];
            (Kind::MemoryBytes, n)
        }
        70..=79 => {
            let n = [
                "node_load1",
                "node_load5",
                "node_load15",
                "node_hwmon_temp_celsius",
                "node_pressure_cpu_waiting_seconds",
                "node_entropy_available_bits",
                "node_procs_running",
                "node_procs_blocked",
                "node_filefd_allocated",
                "node_sockstat_TCP_inuse",
            ][k - 70];
            (Kind::Load, n)
        }
        80..=89 => {
            l.push((
                "mountpoint".into(),
                ["/", "/var", "/home", "/data", "/boot"][k % 5].into(),
            ));
            let n = if k < 85 {
                "node_filesystem_size_bytes"
            } else {
                "node_filesystem_files"
            };
            (Kind::Constant, n)
        }
        _ => {
            l.push((
                "shop".into(),
                ["eu", "us", "asia", "uk", "de"][k % 5].into(),
            ));
            let n = if k < 95 {
                "orders_total"
            } else {
                "payments_failed_total"
            };
            (Kind::Orders, n)
        }
    };
    l.push(("__name__".into(), name.into()));
    l.sort();
    (kind, l)
}

/// Per-series state that walks through the steps.
#[derive(Debug, Clone)]
pub struct SeriesGen {
    pub kind: Kind,
    pub labels: Vec<(String, String)>,
    rng: u64,
    value: f64,
    /// Fixed per-series offset of the scrape time within the interval.
    phase_ms: i64,
}

impl SeriesGen {
    pub fn new(i: usize, seed: u64) -> SeriesGen {
        let (kind, labels) = series_labels(i);
        let mut rng = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let r = splitmix64(&mut rng);
        let value = match kind {
            Kind::CpuSeconds => ((r % 10_000_000) as f64) / 100.0,
            Kind::ByteCounter => (r % 1_000_000_000_000) as f64,
            Kind::MemoryBytes => ((r % 4_000_000) * 4096) as f64,
            Kind::Load => ((r % 800) as f64) / 100.0,
            Kind::Constant => ((r % 500_000) * 1_048_576) as f64,
            Kind::Orders => (r % 100_000) as f64,
        };
        SeriesGen {
            kind,
            labels,
            rng,
            value,
            phase_ms: (splitmix64(&mut rng) % INTERVAL_MS as u64) as i64,
        }
    }

    /// The next sample for step `step` (steps must be taken in order), starting at `t0`.
    pub fn next(&mut self, t0: i64, step: i64) -> (i64, f64) {
        let r = splitmix64(&mut self.rng);
        // Scrapes land a few milliseconds off schedule, as real ones do.
        let jitter = (r >> 60) as i64 % 3;
        let t = t0 + self.phase_ms + step * INTERVAL_MS + jitter;
        let r2 = r & 0xffff_ffff;
        self.value = match self.kind {
            Kind::CpuSeconds => ((self.value * 100.0).round() + (r2 % 1500) as f64) / 100.0,
            Kind::ByteCounter => self.value + (r2 % 5_000_000) as f64,
            Kind::MemoryBytes => {
                let delta = (r2 % 2001) as i64 - 1000;
                (self.value + (delta * 4096) as f64).max(0.0)
            }
            Kind::Load => {
                let delta = (r2 % 41) as i64 - 20;
                ((self.value * 100.0).round() + delta as f64).max(0.0) / 100.0
            }
            Kind::Constant => self.value,
            Kind::Orders => {
                self.value
                    + if r2.is_multiple_of(3) {
                        (r2 % 7) as f64
                    } else {
                        0.0
                    }
            }
        };
        (t, self.value)
    }
}

/// Generators for series `0..n`.
pub fn generators(n: usize, seed: u64) -> Vec<SeriesGen> {
    (0..n).map(|i| SeriesGen::new(i, seed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_and_sorted() {
        let mut a = generators(300, 7);
        let mut b = generators(300, 7);
        for step in 0..10 {
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                assert_eq!(x.next(0, step), y.next(0, step));
            }
        }
        for g in &a {
            assert!(g.labels.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
