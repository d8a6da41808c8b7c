//! `stpn-bench golden FILE...`: the cells against parity cases produced by the authors' PyTorch
//! code (the format of `crates/stpn-model/tests/golden/README.md`), any cell, size or seed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use stpn_model::Backend;
use stpn_model::parity::{ParityCase, Precision, run_case_in};

/// Prints the largest absolute and relative error of every quantity of every case, and fails if
/// one exceeds its tolerance.
pub fn run(backend: Backend, files: &[PathBuf], float32: bool) -> Result<()> {
    let device = backend.device()?;
    // GPU backends run float32 (lavapipe and most GPUs have no usable float64 in wgpu's shaders):
    // a float64 run there would compare garbage against tolerances meant for float64.
    let precision = if float32 || !backend.is_cpu() {
        Precision::Float32
    } else {
        Precision::Highest
    };
    let mut failed = Vec::new();
    for file in files {
        let case = ParityCase::from_file(file)?;
        let report = run_case_in(&case, &device, precision)
            .with_context(|| format!("running {}", file.display()))?;
        println!(
            "{}  ({}, {:?}, {})",
            report.case,
            backend,
            report.dtype,
            if report.passed() { "pass" } else { "FAIL" }
        );
        println!(
            "  {:<26} {:>11} {:>11} {:>9}",
            "quantity", "max abs", "relative", "tolerance"
        );
        for comparison in &report.comparisons {
            println!(
                "  {:<26} {:>11.3e} {:>11.3e} {:>9.0e}{}",
                comparison.quantity,
                comparison.max_abs,
                comparison.relative,
                comparison.tolerance,
                if comparison.passed() { "" } else { "  FAIL" }
            );
        }
        if !report.passed() {
            failed.push(report.case.clone());
        }
    }
    println!(
        "{} of {} cases pass on {backend}",
        files.len() - failed.len(),
        files.len()
    );
    if !failed.is_empty() {
        bail!(
            "{} case(s) exceed their tolerance: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
