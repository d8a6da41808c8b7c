//! `stpn-bench`: the command line that runs every STPN experiment.

mod art;
mod familiarity;
mod maze;
mod pendulum;
mod perf;
mod pong;
mod report;
mod run_dir;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use stpn_model::Backend;
use stpn_model::parity::{ParityCase, Precision, run_case_in};

/// Held by tests that seed a device's generator and draw from it: the generator is shared by
/// every test thread of the process, so two such tests must not interleave.
#[cfg(test)]
pub(crate) fn seeded_device_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Helpers of the experiment drivers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    use crate::run_dir::RunDir;

    /// An empty scratch folder for `experiment`'s test `name`, unique to this process.
    pub fn scratch(experiment: &str, name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("stpn-{experiment}-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        path
    }

    /// The rows of a run's `metrics.csv` without their last column (the timing).
    pub fn metrics_without_timing(run: &RunDir) -> Vec<String> {
        std::fs::read_to_string(run.file("metrics.csv"))
            .unwrap()
            .lines()
            .map(|line| line.rsplit_once(',').unwrap().0.to_string())
            .collect()
    }
}

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
    /// Train a network on the associative retrieval task (paper §4.1). Without --config or
    /// --model, a demonstration of about a minute on a 2-core CPU: STPN h11 (paper equations),
    /// 20 epochs.
    Art(ArtArgs),
    /// Train a network on the continual familiarity task (Tyulmankov et al. 2022; spec §6):
    /// 5 000-item streams, full backpropagation through time, then the generalisation curve.
    Familiarity(FamiliarityArgs),
    /// Train an agent on the maze exploration task (paper §4.2) with the maze's A2C variant.
    /// Without --config: the paper's settings for --core, except the number of iterations.
    Maze(MazeArgs),
    /// Train an agent on MuJoCo InvertedPendulum with PPO (paper §4.3). Without --config: the
    /// paper's settings for --core.
    Pendulum(PendulumArgs),
    /// Train an agent on Atari Pong with A2C (paper §4.3), one frame per step, the paper's
    /// preprocessing, the conv encoder into the core. Without --config: the paper's settings for
    /// --core with 16 environments and 2 million frames.
    Pong(PongArgs),
    /// Evaluate a maze run's last checkpoint on fresh episodes without updates: mean reward and
    /// energy per step (spec §2.3); writes eval.json into the run folder.
    MazeEval {
        /// Run folder of `stpn-bench maze`.
        run: PathBuf,
        /// Number of episodes.
        #[arg(long, default_value_t = 512)]
        episodes: usize,
        /// Take the most probable action (the reference samples, also in evaluation).
        #[arg(long)]
        greedy: bool,
        /// Seed of the evaluation episodes and action draws.
        #[arg(long, default_value_t = 12345)]
        seed: u64,
    },
    /// Evaluate an InvertedPendulum run's last checkpoint on fresh episodes without updates:
    /// mean return, length and energy per step (spec §2.3); writes eval.json into the run folder.
    /// Defaults as the paper's evaluation: 10 episodes, sampled actions.
    PendulumEval {
        /// Run folder of `stpn-bench pendulum`.
        run: PathBuf,
        /// Number of episodes.
        #[arg(long, default_value_t = 10)]
        episodes: usize,
        /// How actions are chosen: `sampled` from the Gaussian policy, or `greedy` (its mean).
        #[arg(long, value_enum, default_value_t = Actions::Sampled)]
        actions: Actions,
        /// Seed of the evaluation episodes and action draws.
        #[arg(long, default_value_t = 12345)]
        seed: u64,
    },
    /// Evaluate a Pong run's last checkpoint on fresh episodes without updates: mean return,
    /// length and energy per step (spec §2.3); writes eval.json into the run folder. Defaults as
    /// the paper's evaluation: one episode, greedy actions.
    PongEval {
        /// Run folder of `stpn-bench pong`.
        run: PathBuf,
        /// Number of episodes.
        #[arg(long, default_value_t = 1)]
        episodes: usize,
        /// How actions are chosen: `greedy` (the most probable), or `sampled`.
        #[arg(long, value_enum, default_value_t = Actions::Greedy)]
        actions: Actions,
        /// Seed of the evaluation episodes and action draws.
        #[arg(long, default_value_t = 12345)]
        seed: u64,
    },
    /// Milliseconds per STPN training step and peak memory, for the cases of the paper's
    /// experiments (art_h11, art_h64, pong_core, maze), on every compiled CPU backend.
    Perf {
        /// Cases to run (default: all).
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// Backends (default: every compiled CPU backend).
        #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
        backends: Vec<Backend>,
        /// Paths: `fused` (the hand-written kernel) and `ops` (op by op, the reference).
        #[arg(long, value_delimiter = ',', default_value = "fused,ops")]
        paths: Vec<String>,
        /// Timed steps per measurement (default 20; 5 for the Pong core, 3 for the maze).
        #[arg(long)]
        repeats: Option<usize>,
        /// One JSON object per line (case, backend, path, ms_per_step, peak_rss_mb, ...).
        #[arg(long)]
        json: bool,
    },
    /// One measurement of `perf` (run by `perf` in a process of its own).
    #[command(hide = true)]
    PerfWorker {
        case: String,
        path: String,
        #[arg(long, default_value_t = 20)]
        repeats: usize,
    },
    /// Environment steps per second on one core, uniform random actions with resets: the maze and
    /// (with MuJoCo) InvertedPendulum.
    EnvsBench {
        /// Steps per environment.
        #[arg(long, default_value_t = 200_000)]
        steps: usize,
    },
    /// Tables and plots of finished runs.
    #[command(subcommand)]
    Report(ReportCommand),
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

/// How an evaluation chooses actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Actions {
    /// The policy's most probable action (the Gaussian's mean).
    Greedy,
    /// A draw from the policy.
    Sampled,
}

#[derive(Subcommand, Debug)]
enum ReportCommand {
    /// Associative retrieval: a markdown table (mean ± std over seeds of accuracy, energy,
    /// parameters per model) and SVG plots (accuracy curves, energy vs accuracy).
    Art {
        /// Run folders of `stpn-bench art`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Folder for art.md, art_accuracy.svg and art_energy.svg.
        #[arg(long, default_value = "docs/results")]
        out: PathBuf,
    },
    /// Maze: a markdown table of the runs and the reward curves (maze.md, maze_reward.svg).
    Maze {
        /// Run folders of `stpn-bench maze`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "docs/results")]
        out: PathBuf,
    },
    /// InvertedPendulum: a markdown table of the runs (return, evaluation, energy) and the
    /// return curves (pendulum.md, pendulum_return.svg).
    Pendulum {
        /// Run folders of `stpn-bench pendulum`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "docs/results")]
        out: PathBuf,
    },
    /// Pong: a markdown table of the runs (return, evaluation, energy) and the return curves
    /// (pong.md, pong_return.svg).
    Pong {
        /// Run folders of `stpn-bench pong`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "docs/results")]
        out: PathBuf,
    },
    /// Familiarity: a markdown table of the runs and SVG plots (generalisation curves,
    /// training accuracy).
    Familiarity {
        /// Run folders of `stpn-bench familiarity`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Folder for familiarity.md, familiarity_generalisation.svg, familiarity_training.svg.
        #[arg(long, default_value = "docs/results")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct PongArgs {
    /// A config file (the fields of a run's config.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Core, with the paper's settings (without --config).
    #[arg(long, value_enum, default_value = "stpn")]
    core: pong::PongCore,
    /// Budget in frames (= agent steps).
    #[arg(long)]
    steps: Option<u64>,
    /// Parallel environments (64 in the paper).
    #[arg(long)]
    envs: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder (default: runs/pong/<core>-h<H>-e<envs>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run in --out (--steps may extend it).
    #[arg(long, requires = "out")]
    resume: bool,
    #[arg(long)]
    quiet: bool,
}

/// The config and run folder of a training command. With `resume`: the run in `out` and its
/// `config.json`; otherwise `fresh()` (a config file or the paper's settings, with the command's
/// overrides) in a new folder at `out`, or at `default_out(config)`. Then `extend` applies what
/// may change on resume too (the budget) and checks the result, and the config is written back.
fn prepare_run<C: serde::Serialize + serde::de::DeserializeOwned>(
    resume: bool,
    out: Option<&PathBuf>,
    fresh: impl FnOnce() -> Result<C>,
    extend: impl FnOnce(&mut C) -> Result<()>,
    default_out: impl FnOnce(&C) -> PathBuf,
) -> Result<(C, run_dir::RunDir)> {
    let (mut config, run) = if resume {
        let run = run_dir::RunDir::open(out.expect("clap requires --out with --resume"))?;
        (run.read_json("config.json")?, Some(run))
    } else {
        (fresh()?, None)
    };
    extend(&mut config)?;
    let run = match run {
        Some(run) => run,
        None => run_dir::RunDir::create(&out.cloned().unwrap_or_else(|| default_out(&config)))?,
    };
    run.write_json("config.json", &config)?;
    Ok((config, run))
}

fn train_pong(backend: Backend, args: &PongArgs) -> Result<()> {
    // Before any folder is made.
    if !cfg!(feature = "atari") {
        bail!(pong::ATARI_MISSING);
    }
    let fresh = || {
        let mut config = match &args.config {
            Some(path) => pong::PongConfig::load(path)?,
            None => pong::PongConfig::paper(args.core),
        };
        if let Some(seed) = args.seed {
            config.seed = seed;
        }
        if let Some(envs) = args.envs {
            config.envs = envs;
        }
        Ok(config)
    };
    let extend = |config: &mut pong::PongConfig| {
        if let Some(steps) = args.steps {
            config.total_steps = steps;
        }
        Ok(())
    };
    let (config, run) = prepare_run(
        args.resume,
        args.out.as_ref(),
        fresh,
        extend,
        pong::default_out,
    )?;
    if !args.quiet {
        println!(
            "pong: {} on {backend}, {} frames -> {}",
            config.run_name(),
            config.total_steps,
            run.path.display()
        );
    }
    let summary = pong::run(&config, &run, backend, args.resume, args.quiet)?;
    println!(
        "{}: {} params, {} frames ({:.0} steps/s), {} episodes, mean return of the last 10 {:.1}  [{}]",
        config.run_name(),
        summary.params,
        summary.env_steps,
        summary.steps_per_second,
        summary.episodes,
        summary.mean_return_last10,
        run.file("summary.json").display()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
struct PendulumArgs {
    /// A config file (the fields of a run's config.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Core, with the paper's settings (without --config).
    #[arg(long, value_enum, default_value = "stpnf")]
    core: pendulum::PendulumCore,
    /// Budget in environment steps (10⁶ in the paper).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Gymnasium v5 rewards (0 on the terminating step) instead of v4's.
    #[arg(long)]
    v5: bool,
    /// Run folder (default: runs/pendulum/<core>-h<H>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run in --out (--steps may extend it).
    #[arg(long, requires = "out")]
    resume: bool,
    #[arg(long)]
    quiet: bool,
}

fn train_pendulum(backend: Backend, args: &PendulumArgs) -> Result<()> {
    // Before any folder is made.
    if !cfg!(feature = "mujoco") {
        bail!(pendulum::MUJOCO_MISSING);
    }
    let fresh = || {
        let mut config = match &args.config {
            Some(path) => pendulum::PendulumConfig::load(path)?,
            None => pendulum::PendulumConfig::paper(args.core),
        };
        if let Some(seed) = args.seed {
            config.seed = seed;
        }
        config.v5_rewards |= args.v5;
        Ok(config)
    };
    let extend = |config: &mut pendulum::PendulumConfig| {
        if let Some(steps) = args.steps {
            config.total_steps = steps;
        }
        Ok(())
    };
    let (config, run) = prepare_run(
        args.resume,
        args.out.as_ref(),
        fresh,
        extend,
        pendulum::default_out,
    )?;
    if !args.quiet {
        println!(
            "pendulum: {} on {backend}, {} environment steps -> {}",
            config.run_name(),
            config.total_steps,
            run.path.display()
        );
    }
    let summary = pendulum::run(&config, &run, backend, args.resume, args.quiet)?;
    println!(
        "{}: {} params, {} env steps ({:.0} steps/s), {} episodes, mean return of the last 10 {:.1}, solved (≥ 950) at {}  [{}]",
        config.run_name(),
        summary.params,
        summary.env_steps,
        summary.steps_per_second,
        summary.episodes,
        summary.mean_return_last10,
        summary
            .solved_at_env_steps
            .map_or("—".to_string(), |steps| format!("{steps} steps")),
        run.file("summary.json").display()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
struct MazeArgs {
    /// A config of configs/maze/ (unset settings take the paper's values).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Core, with the paper's settings (without --config).
    #[arg(long, value_enum, default_value = "stpn")]
    core: maze::MazeCore,
    /// Budget in environment steps (iterations = steps / (batch · 200)).
    #[arg(long, conflicts_with = "iterations")]
    steps: Option<u64>,
    /// Iterations (one batch of episodes each).
    #[arg(long)]
    iterations: Option<usize>,
    /// Episodes per iteration (512 in the paper).
    #[arg(long)]
    batch: Option<usize>,
    /// Adam learning rate (1e-4 in the paper).
    #[arg(long)]
    lr: Option<f64>,
    /// Hidden size (default: the paper's).
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder (default: runs/maze/<core>-h<H>-b<B>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run in --out (--iterations or --steps may extend it).
    #[arg(long, requires = "out")]
    resume: bool,
    #[arg(long)]
    quiet: bool,
}

fn train_maze(backend: Backend, args: &MazeArgs) -> Result<()> {
    let fresh = || {
        let mut config = match &args.config {
            Some(path) => maze::MazeConfig::load(path)?,
            None => {
                let mut config = maze::MazeConfig::paper(args.core);
                // A short default: about 10 minutes on a 2-core CPU.
                config.iterations = 300;
                config
            }
        };
        if let Some(batch) = args.batch {
            config.batch_size = batch;
        }
        if let Some(lr) = args.lr {
            config.learning_rate = lr;
        }
        if let Some(hidden) = args.hidden {
            config.hidden_size = hidden;
        }
        if let Some(seed) = args.seed {
            config.seed = seed;
        }
        Ok(config)
    };
    let extend = |config: &mut maze::MazeConfig| {
        if let Some(iterations) = args.iterations {
            config.iterations = iterations;
        }
        if let Some(steps) = args.steps {
            config.iterations = config.iterations_for(steps);
        }
        config.validate()
    };
    let (config, run) = prepare_run(
        args.resume,
        args.out.as_ref(),
        fresh,
        extend,
        maze::default_out,
    )?;
    if !args.quiet {
        println!(
            "maze: {} on {backend}, {} iterations of {} episodes -> {}",
            config.run_name(),
            config.iterations,
            config.batch_size,
            run.path.display()
        );
    }
    let summary = maze::run(&config, &run, backend, args.resume, args.quiet)?;
    println!(
        "{}: {} params, {} env steps ({:.0} steps/s), mean reward of the last 10 iterations {:.2} (random policy {:.1})  [{}]",
        config.run_name(),
        summary.params,
        summary.env_steps,
        summary.steps_per_second,
        summary.mean_return_last10,
        summary.random_policy_return,
        run.file("summary.json").display()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
struct FamiliarityArgs {
    /// A config file (JSON, the fields of a run's config.json) instead of --net/--mode/--repeat.
    #[arg(long, conflicts_with_all = ["net", "mode", "repeat"])]
    config: Option<PathBuf>,
    /// Network (spec §6.2), at the paper's size unless --hidden is given.
    #[arg(long, value_enum, default_value = "hebbnet")]
    net: familiarity::FamiliarityModel,
    /// `dat`: one fixed training stream; `inf`: a fresh stream every step.
    #[arg(long, value_enum, default_value = "inf")]
    mode: familiarity::Mode,
    /// Repeat interval R.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Training steps (default: the paper's, 3 000 dat, 1 600 inf at R 3, 3 500 inf at R 6).
    #[arg(long)]
    steps: Option<usize>,
    /// Hidden size (default: the paper's, ~10.2k parameters).
    #[arg(long)]
    hidden: Option<usize>,
    /// Items per stream (default 5 000).
    #[arg(long)]
    items: Option<usize>,
    /// Run the plastic networks op by op (the reference path) instead of on the fused kernel.
    #[arg(long)]
    ops: bool,
    /// Seed of the initialisation.
    #[arg(long)]
    seed: Option<u64>,
    /// Seed of the streams.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Run folder (default: runs/familiarity/<net>-h<H>-<mode>-r<R>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run in --out from its last checkpoint (--steps may extend it).
    #[arg(long, requires = "out")]
    resume: bool,
    /// No progress bar (for scripts).
    #[arg(long)]
    quiet: bool,
}

impl FamiliarityArgs {
    fn config(&self) -> Result<familiarity::FamiliarityConfig> {
        let mut config = match &self.config {
            Some(path) => familiarity::load_config(path)?,
            None => familiarity::FamiliarityConfig::paper(self.net, self.mode, self.repeat),
        };
        if let Some(steps) = self.steps {
            config.train_steps = steps;
        }
        if let Some(hidden) = self.hidden {
            config.hidden_size = hidden;
        }
        if let Some(items) = self.items {
            config.items = items;
        }
        if self.ops {
            config.fused = false;
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(seed) = self.data_seed {
            config.data_seed = seed;
        }
        config.validate()?;
        Ok(config)
    }
}

fn train_familiarity(backend: Backend, args: &FamiliarityArgs) -> Result<()> {
    let extend = |config: &mut familiarity::FamiliarityConfig| {
        if let Some(steps) = args.steps {
            config.train_steps = steps;
        }
        Ok(())
    };
    let (config, run) = prepare_run(
        args.resume,
        args.out.as_ref(),
        || args.config(),
        extend,
        familiarity::default_out,
    )?;
    if !args.quiet {
        println!(
            "familiarity: {} on {backend}, {} steps of {} items -> {}",
            config.run_name(),
            config.train_steps,
            config.items,
            run.path.display()
        );
    }
    let summary = familiarity::run(&config, &run, backend, args.resume, args.quiet)?;
    println!(
        "{}: {} params, {} steps ({:.2} s/step), train_acc {:.4}, test_acc {:.4} (TPR {:.3}, FPR {:.3}) at R {}, TPR − FPR ≥ 0.5 up to R {}  [{}]",
        config.run_name(),
        summary.params,
        summary.train_steps,
        summary.seconds_per_step,
        summary.final_train_acc,
        summary.test_acc,
        summary.test_tpr,
        summary.test_fpr,
        summary.repeat,
        summary.longest_repeat_half_detected,
        run.file("summary.json").display()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
struct ArtArgs {
    /// A config of configs/art/ (model and settings; unset settings take the paper's values).
    #[arg(long, conflicts_with_all = ["model", "hidden"])]
    config: Option<PathBuf>,
    /// Model to train with the paper's settings (instead of --config).
    #[arg(long, value_enum, requires = "hidden")]
    model: Option<art::ArtModel>,
    /// Hidden size, with --model.
    #[arg(long)]
    hidden: Option<usize>,
    /// Scalar Λ and Γ (the scalar-STP ablation), with --model stpn_r or stpn_f.
    #[arg(long)]
    scalar: bool,
    /// Equations of the plastic cells: the reference runner's or the paper's.
    #[arg(long, value_enum)]
    equations: Option<art::Equations>,
    /// Run STPNr op by op (the reference path) instead of on its fused kernel.
    #[arg(long)]
    ops: bool,
    /// Number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Number of training sequences (100 000 in the paper).
    #[arg(long)]
    train_size: Option<usize>,
    /// Seed of the model's initialisation.
    #[arg(long)]
    seed: Option<u64>,
    /// Seed of the data (separate from the model's).
    #[arg(long)]
    data_seed: Option<u64>,
    /// Run folder (default: runs/art/<model>-h<H>-<equations>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run in --out from its last checkpoint (--epochs may extend it).
    #[arg(long, requires = "out")]
    resume: bool,
    /// No progress bar and no per-epoch lines (for scripts).
    #[arg(long)]
    quiet: bool,
}

impl ArtArgs {
    /// The config this command line asks for.
    fn config(&self) -> Result<art::ArtConfig> {
        let mut config = match (&self.config, self.model) {
            (Some(path), _) => art::ArtConfig::load(path)?,
            (None, Some(model)) => {
                art::ArtConfig::paper(model, self.hidden.expect("clap requires it"))
            }
            (None, None) => {
                // The README's demonstration: about a minute on a 2-core CPU, validation accuracy ~0.99.
                let mut config = art::ArtConfig::paper(art::ArtModel::StpnR, 11);
                config.equations = art::Equations::Paper;
                config.epochs = 20;
                config
            }
        };
        if self.scalar {
            config.per_synapse = false;
        }
        if let Some(equations) = self.equations {
            config.equations = equations;
        }
        if self.ops {
            config.fused = false;
        }
        if let Some(epochs) = self.epochs {
            config.epochs = epochs;
        }
        if let Some(size) = self.train_size {
            config.train_size = size;
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(seed) = self.data_seed {
            config.data_seed = seed;
        }
        config.validate()?;
        Ok(config)
    }
}

fn train_art(backend: Backend, args: &ArtArgs) -> Result<()> {
    let extend = |config: &mut art::ArtConfig| {
        if let Some(epochs) = args.epochs {
            config.epochs = epochs;
        }
        Ok(())
    };
    let (config, run) = prepare_run(
        args.resume,
        args.out.as_ref(),
        || args.config(),
        extend,
        art::default_out,
    )?;
    if !args.quiet {
        println!(
            "associative retrieval: {} on {backend}, {} epochs, {} training sequences -> {}",
            config.run_name(),
            config.epochs,
            config.train_size,
            run.path.display()
        );
    }
    let summary = art::run(
        &config,
        &run,
        backend,
        args.resume,
        art::Reporting { quiet: args.quiet },
    )?;
    println!(
        "{}: {} params, {} epochs, val_acc {:.4} (best {:.4} at epoch {}), test_acc {:.4}, test_energy {:.3}  [{}]",
        config.run_name(),
        summary.params,
        summary.epochs,
        summary.final_val_acc,
        summary.best_val_acc,
        summary.best_epoch,
        summary.test_acc,
        summary.test_energy,
        run.file("summary.json").display()
    );
    Ok(())
}

/// Runs `env` for `steps` steps with actions from `action`, resetting at episode ends; returns
/// steps per second and the number of episodes finished.
fn time_env<E: stpn_envs::Env>(
    mut env: E,
    steps: usize,
    mut action: impl FnMut(&mut rand_chacha::ChaCha8Rng) -> E::Action,
) -> (f64, usize) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    env.reset(Some(0));
    let mut episodes = 0;
    let started = std::time::Instant::now();
    for _ in 0..steps {
        if env.step(&action(&mut rng)).done() {
            env.reset(None);
            episodes += 1;
        }
    }
    (steps as f64 / started.elapsed().as_secs_f64(), episodes)
}

fn envs_bench(steps: usize) -> Result<()> {
    use rand::Rng;
    println!("{:<34} {:>14} {:>10}", "environment", "steps/s", "episodes");
    let maze = stpn_envs::TimeLimit::new(
        stpn_envs::maze::Maze::new(),
        stpn_envs::maze::EPISODE_LENGTH,
    );
    let (rate, episodes) = time_env(maze, steps, |rng| rng.random_range(0..4usize));
    println!(
        "{:<34} {rate:>14.0} {episodes:>10}",
        "maze (13x13, 200 steps)"
    );
    #[cfg(feature = "mujoco")]
    {
        use stpn_envs::pendulum::{InvertedPendulum, RewardVersion};
        let pendulum = InvertedPendulum::gymnasium(RewardVersion::V4)?;
        let (rate, episodes) = time_env(pendulum, steps, |rng| vec![rng.random_range(-3.0..3.0)]);
        println!(
            "{:<34} {rate:>14.0} {episodes:>10}",
            "InvertedPendulum (MuJoCo 3.17)"
        );
    }
    #[cfg(not(feature = "mujoco"))]
    println!(
        "{:<34} {:>14}",
        "InvertedPendulum", "not built (scripts/setup-mujoco, --features mujoco)"
    );
    #[cfg(feature = "atari")]
    {
        let pong = stpn_atari::Pong::new()?;
        let (rate, episodes) = time_env(pong, steps.min(50_000), |rng| rng.random_range(0..6usize));
        println!(
            "{:<34} {rate:>14.0} {episodes:>10}",
            "Pong (ALE 0.12.1, paper preprocessing)"
        );
    }
    #[cfg(not(feature = "atari"))]
    println!(
        "{:<34} {:>14}",
        "Pong", "not built (scripts/setup-ale, --features atari)"
    );
    Ok(())
}

fn parse_backend(text: &str) -> Result<Backend, String> {
    text.parse()
        .map_err(|error: stpn_model::BackendError| error.to_string())
}

/// Keeps freed memory in the process for reuse instead of returning it to the system. A training
/// step allocates and frees buffers of megabytes (synaptic states, their gradients); by default
/// glibc maps and unmaps them each time, and the page faults of touching fresh pages took about a
/// fifth of a fused STPN step. The peak resident memory is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before any thread starts.
    unsafe {
        // The largest fixed threshold glibc accepts (32 MiB on 64-bit); larger blocks are mapped.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The evaluation commands: opens the run folder, evaluates, prints the result's line.
fn evaluate_and_print(
    run: &std::path::Path,
    evaluate: impl FnOnce(&run_dir::RunDir) -> Result<run_dir::Evaluation>,
) -> Result<()> {
    let run = run_dir::RunDir::open(run)?;
    println!("{}", evaluate(&run)?.line(&run));
    Ok(())
}

fn main() -> ExitCode {
    keep_freed_memory();
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
        Command::Art(args) => train_art(cli.backend, &args),
        Command::Familiarity(args) => train_familiarity(cli.backend, &args),
        Command::Maze(args) => train_maze(cli.backend, &args),
        Command::Pendulum(args) => train_pendulum(cli.backend, &args),
        Command::Pong(args) => train_pong(cli.backend, &args),
        Command::MazeEval {
            run,
            episodes,
            greedy,
            seed,
        } => evaluate_and_print(&run, |run| {
            maze::evaluate_run(run, cli.backend, episodes, greedy, seed)
        }),
        Command::PendulumEval {
            run,
            episodes,
            actions,
            seed,
        } => evaluate_and_print(&run, |run| {
            let greedy = actions == Actions::Greedy;
            pendulum::evaluate_run(run, cli.backend, episodes, greedy, seed)
        }),
        Command::PongEval {
            run,
            episodes,
            actions,
            seed,
        } => evaluate_and_print(&run, |run| {
            let greedy = actions == Actions::Greedy;
            pong::evaluate_run(run, cli.backend, episodes, greedy, seed)
        }),
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
            perf::run(&cases, &backends, &paths, repeats, json)
        }
        Command::PerfWorker {
            case,
            path,
            repeats,
        } => perf::worker(&case, cli.backend, &path, repeats),
        Command::Report(ReportCommand::Art { runs, out }) => {
            let table = report::report_art(&runs, &out)?;
            print!("{table}");
            println!("written to {}", out.display());
            Ok(())
        }
        Command::Report(ReportCommand::Maze { runs, out }) => {
            let table = report::report_maze(&runs, &out)?;
            print!("{table}");
            println!("written to {}", out.display());
            Ok(())
        }
        Command::Report(ReportCommand::Pendulum { runs, out }) => {
            let table = report::report_rl(&runs, &out, report::RlTask::Pendulum)?;
            print!("{table}");
            println!("written to {}", out.display());
            Ok(())
        }
        Command::Report(ReportCommand::Pong { runs, out }) => {
            let table = report::report_rl(&runs, &out, report::RlTask::Pong)?;
            print!("{table}");
            println!("written to {}", out.display());
            Ok(())
        }
        Command::Report(ReportCommand::Familiarity { runs, out }) => {
            let table = report::report_familiarity(&runs, &out)?;
            print!("{table}");
            println!("written to {}", out.display());
            Ok(())
        }
        Command::EnvsBench { steps } => envs_bench(steps),
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
