//! Workloads shared by the benches: deterministic, realistic data generated in-project.
//!
//! - `workload`: node-exporter-like host metrics and business counters.
//! - `harness`: starting and measuring a server process, for the scale benches.
//! - `agent_sim`: playing agents (server start with its tokens, enrollment, the
//!   channel's hello), for `agent_scale` and `task_scale`.
//! - `scrape_sim`: many Prometheus scrape targets on one port, for `scrape_scale`.

pub mod agent_sim;
pub mod harness;
pub mod peers;
pub mod scrape_sim;
pub mod workload;

/// The splitmix64 generator: one step of a fast, well-mixed 64-bit sequence. Benches seed
/// it with a fixed constant so every run (and every added case) sees the same data.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
