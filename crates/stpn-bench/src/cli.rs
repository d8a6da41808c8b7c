//! The command line's types: every command, its flags and their help texts.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stpn_model::Backend;

use crate::experiments::art::ArtArgs;
use crate::experiments::familiarity::FamiliarityArgs;
use crate::experiments::maze::MazeArgs;
use crate::experiments::pendulum::PendulumArgs;
use crate::experiments::pong::PongArgs;
use crate::experiments::{EvalArgs, TrainArgs};

/// Short-term plasticity neurons (ICML 2022) in Rust: experiments, parity checks and benchmarks.
#[derive(Parser, Debug)]
#[command(name = "stpn-bench", version, about)]
pub struct Cli {
    /// Backend to run on: flex (CPU, default), ndarray (CPU), wgpu (GPU: Vulkan, Metal, DirectX) or
    /// cuda (NVIDIA GPU).
    #[arg(long, global = true, default_value = "flex", value_parser = parse_backend)]
    pub backend: Backend,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a network on the associative retrieval task (paper §4.1). Without --config or
    /// --core, a demonstration of about a minute on a 2-core CPU: STPN h11 (paper equations),
    /// 20 epochs.
    Art(TrainArgs<ArtArgs>),
    /// Train a network on the continual familiarity task (Tyulmankov et al. 2022; docs/reference.md §6):
    /// 5 000-item streams, full backpropagation through time, then the generalisation curve.
    Familiarity(TrainArgs<FamiliarityArgs>),
    /// Train an agent on the maze exploration task (paper §4.2) with the maze's A2C variant.
    /// Without --config: the paper's settings for --core, except the number of iterations.
    Maze(TrainArgs<MazeArgs>),
    /// Train an agent on MuJoCo InvertedPendulum with PPO (paper §4.3). Without --config: the
    /// paper's settings for --core.
    Pendulum(TrainArgs<PendulumArgs>),
    /// Train an agent on Atari Pong with A2C (paper §4.3), one frame per step, the paper's
    /// preprocessing, the conv encoder into the core. Without --config: the paper's settings for
    /// --core with 16 environments and 2 million frames.
    Pong(TrainArgs<PongArgs>),
    /// Evaluate a maze run's last checkpoint on fresh episodes without updates: mean reward and
    /// energy per step (docs/reference.md §2.3); writes eval.json into the run folder.
    MazeEval(EvalArgs),
    /// Evaluate an InvertedPendulum run's last checkpoint on fresh episodes without updates:
    /// mean return, length and energy per step (docs/reference.md §2.3); writes eval.json into the run folder.
    /// Defaults as the paper's evaluation: 10 episodes, sampled actions.
    PendulumEval(EvalArgs),
    /// Evaluate a Pong run's last checkpoint on fresh episodes without updates: mean return,
    /// length and energy per step (docs/reference.md §2.3); writes eval.json into the run folder. Defaults as
    /// the paper's evaluation: one episode, greedy actions.
    PongEval(EvalArgs),
    /// Milliseconds per STPN training step and peak memory, for the cases of the paper's
    /// experiments (art_h11, art_h64, pong_core, maze), on every compiled CPU backend.
    Perf {
        /// Cases to run (default: all): kernel steps art_h11, art_h64, pong_core, maze; the Pong
        /// encoder pong_encoder; whole training iterations pong_a2c_stpn, pong_a2c_lstm,
        /// pong_dm_a2c_stpn, pong_dm_a2c_lstm, pong_dm_ppo_stpn, pong_dm_ppo_lstm (the DeepMind
        /// setting, whose env steps are agent steps of 4 frames), maze_b64, maze_b512,
        /// pendulum_ppo_stpnf, pendulum_ppo_lstm.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// Backends (default: every compiled CPU backend).
        #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
        backends: Vec<Backend>,
        /// Paths: `fused` (the hand-written kernel) and `ops` (op by op, the reference), and
        /// on request `kernel` (the host kernel's forward and backward alone, without Burn).
        #[arg(long, value_delimiter = ',', default_value = "fused,ops")]
        paths: Vec<String>,
        /// Timed steps per measurement (default 20; 5 for the Pong core, 3 for the maze and whole iterations, 30 for the DeepMind-setting Pong A2C iterations).
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
        /// Run in float32 (the type models train in) even where the backend supports float64
        /// (always float32 on the GPU backends).
        #[arg(long)]
        float32: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
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
    /// (pong.md, pong_return.svg, and pong_ppo_return.svg for the PPO runs).
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
    /// The reproduction report: every result family of the paper beside our runs, with
    /// verdicts, from the raw run files under --results (art_200/, maze_proof/, pong_proof/,
    /// pong_deepmind/, pendulum_1m/, familiarity_runs/); regenerates each family's table and
    /// plots into --results on the way.
    Reproduction {
        /// Folder of the committed raw run files (and of the family tables and plots).
        #[arg(long, default_value = "docs/results")]
        results: PathBuf,
        /// The page to write.
        #[arg(long, default_value = "docs/reproduction.md")]
        page: PathBuf,
    },
}

/// `--backend` values, with the one-line error of an unknown one.
pub fn parse_backend(text: &str) -> Result<Backend, String> {
    text.parse()
        .map_err(|error: stpn_model::BackendError| error.to_string())
}
