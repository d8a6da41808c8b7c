//! Commands that are not experiments: parity checks, benchmarks.

pub mod envs_bench;
pub mod golden;
pub mod iteration_perf;
pub mod perf;
