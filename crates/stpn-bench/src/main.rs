//! `stpn-bench`: the command line that runs every STPN experiment.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use stpn_model::Backend;
use stpn_model::parity::{ParityCase, Precision, run_case_in};

/// Short-term plasticity neurons (ICML 2022) in Rust: experiments, parity checks and benchmarks.
#[derive(Parser, Debug)]
#[command(name = "stpn-bench", version, about)]
struct Cli {
    /// Backend to run on: flex (CPU, default), ndarray (CPU) or wgpu (GPU).
    #[arg(long, global = true, default_value = "flex", value_parser = parse_backend)]
    backend: Backend,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the cells against parity cases produced by the authors' PyTorch code: prints the
    /// largest absolute and relative error of outputs, energy, final state, loss and gradients
    /// of every case, and fails if one exceeds its tolerance.
    Golden {
        /// Case files (JSON, the format of crates/stpn-model/tests/golden/README.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Run in float32 (the type models train in) even where the backend supports float64.
        #[arg(long)]
        float32: bool,
    },
}

fn parse_backend(text: &str) -> Result<Backend, String> {
    text.parse()
        .map_err(|error: stpn_model::BackendError| error.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Golden { files, float32 } => golden(cli.backend, &files, float32),
    }
}

fn golden(backend: Backend, files: &[PathBuf], float32: bool) -> Result<()> {
    let device = backend.device()?;
    let precision = if float32 {
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
