//! Workloads shared by the benches: deterministic, realistic data generated in-project.
