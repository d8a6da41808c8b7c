//! `stpn-bench`: the command line that runs every STPN experiment. This file only dispatches:
//! the command line's types are in `cli`, the experiments (one [`experiments::Experiment`] each)
//! in `experiments/`, the other tools in `tools/`, tables and plots in `report` and `plot`.

mod cli;
mod experiments;
mod plot;
mod report;
mod reproduction;
mod run_dir;
mod tensorboard;
#[cfg(test)]
mod testing;
mod tools;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use stpn_model::Backend;

use crate::cli::{Cli, Command, ReportCommand};
use crate::experiments::{Experiment, Interrupted, TrainArgs, command, evaluate_command};

#[cfg(test)]
pub(crate) use testing::{seeded_device_lock, test_support};

/// Keeps freed memory in the process for reuse instead of returning it to the system. A training
/// step allocates and frees buffers of megabytes (synaptic states, their gradients); by default
/// glibc maps and unmaps them each time, and the page faults of touching fresh pages took about a
/// fifth of a fused STPN step. Blocks above 32 MiB (the largest threshold glibc accepts) would
/// still be mapped each time, and Pong's PPO update allocates such blocks every iteration (a
/// 1 024-step fragment's stacked frames are 115 MB), so no block is mapped at all: Pong's
/// iterations then take 8–14 times fewer page faults and 17–39 % less time (docs/performance.md).
/// The peak resident memory is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// A panic is a bug of ours: one line that says so and where to report it, not a backtrace
/// (`RUST_BACKTRACE=1` brings the backtrace back).
fn report_panics_in_one_line() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let location = info
            .location()
            .map(|location| format!(" at {}:{}", location.file(), location.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error ({message}{location}); this is a bug of stpn-bench: please report it with the command line at {}/issues (RUST_BACKTRACE=1 shows a backtrace)",
            env!("CARGO_PKG_REPOSITORY")
        );
    }));
}

/// On a machine without a display session, Mesa's Vulkan drivers (lavapipe, the software GPU the
/// wgpu tests run on) print `error: XDG_RUNTIME_DIR is invalid or not set` while probing for a
/// Wayland display, which reads like an error of ours. Pointing the variable at the temporary
/// folder quiets the probe; nothing is written there.
fn quiet_display_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called first in `main`, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

fn main() -> ExitCode {
    quiet_display_probe();
    keep_freed_memory();
    report_panics_in_one_line();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
        // The hook has printed the one line.
        Err(_) => ExitCode::from(101),
    }
}

/// Runs a training command with Ctrl-C stopping it at its next checkpoint.
fn train<E: Experiment>(backend: Backend, args: &TrainArgs<E::Args>) -> Result<()> {
    experiments::handle_ctrl_c();
    command::<E>(backend, args)
}

fn run(cli: Cli) -> Result<()> {
    use experiments::{art::Art, familiarity::Familiarity, maze::MazeExperiment};
    use experiments::{pendulum::Pendulum, pong::PongExperiment};
    let backend = cli.backend;
    match cli.command {
        Command::Art(args) => train::<Art>(backend, &args),
        Command::Familiarity(args) => train::<Familiarity>(backend, &args),
        Command::Maze(args) => train::<MazeExperiment>(backend, &args),
        Command::Pendulum(args) => train::<Pendulum>(backend, &args),
        Command::Pong(args) => train::<PongExperiment>(backend, &args),
        Command::MazeEval(args) => evaluate_command::<MazeExperiment>(backend, &args),
        Command::PendulumEval(args) => evaluate_command::<Pendulum>(backend, &args),
        Command::PongEval(args) => evaluate_command::<PongExperiment>(backend, &args),
        Command::Perf {
            cases,
            backends,
            paths,
            repeats,
            json,
        } => {
            let backends = if backends.is_empty() {
                Backend::compiled_cpu()
            } else {
                backends
            };
            tools::perf::run(&cases, &backends, &paths, repeats, json)
        }
        Command::PerfWorker {
            case,
            path,
            repeats,
        } => tools::perf::worker(&case, backend, &path, repeats),
        Command::Report(report) => {
            let (table, out) = match report {
                ReportCommand::Art { runs, out } => (report::report_art(&runs, &out)?, out),
                ReportCommand::Maze { runs, out } => (report::report_maze(&runs, &out)?, out),
                ReportCommand::Pendulum { runs, out } => (
                    report::report_rl(&runs, &out, report::RlTask::Pendulum)?,
                    out,
                ),
                ReportCommand::Pong { runs, out } => {
                    (report::report_rl(&runs, &out, report::RlTask::Pong)?, out)
                }
                ReportCommand::Familiarity { runs, out } => {
                    (report::report_familiarity(&runs, &out)?, out)
                }
                ReportCommand::Reproduction { results, page } => {
                    if !results.is_dir() {
                        anyhow::bail!(
                            "{} is not a folder: pass --results with the folder of the committed run files (docs/results)",
                            results.display()
                        );
                    }
                    let text = reproduction::report_reproduction(&results, &results)?;
                    run_dir::write_atomically(&page, text.as_bytes())?;
                    (text, page)
                }
            };
            print!("{table}");
            println!("written to {}", out.display());
            Ok(())
        }
        Command::EnvsBench { steps } => tools::envs_bench::run(steps),
        Command::Golden { files, float32 } => tools::golden::run(backend, &files, float32),
    }
}
