//! The one experiment runner. Every training command (`art`, `familiarity`, `maze`, `pendulum`,
//! `pong`) is an [`Experiment`]: its config type with defaults and validation, its command-line
//! overrides, its training loop and its summary. [`command`] is the single path from a command
//! line to a finished run:
//!
//! 1. refuse early what this binary cannot run (a missing engine), before any folder is made;
//! 2. a fresh run: the config file or the paper's settings, with the overrides; a resumed run:
//!    the run's own `config.json` (unknown keys rejected) and its last checkpoint (without one,
//!    it says so and starts the run from the beginning);
//! 3. what may change on resume too (the budget), then every field validated;
//! 4. the run folder: a new or empty folder for a fresh run, never one that holds anything else;
//! 5. `config.json` written, the loop run, `summary.json` written, one summary line printed.
//!
//! Inside the loops, [`Session`] is the one place for what every loop does alike: when to
//! checkpoint (every N units, at the end, and at Ctrl-C), stopping cleanly after a Ctrl-C, and the
//! divergence guard that stops with a one-line error before a bad update reaches a checkpoint.
//! A new task is one file with an `impl Experiment` and its configs.

pub mod art;
pub mod familiarity;
pub mod maze;
pub mod pendulum;
pub mod pong;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stpn_model::Backend;

use crate::run_dir::{Evaluation, RunDir};

/// The flags every training command has.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// A config file: the fields of a run's config.json (`configs/<task>/` holds the paper's);
    /// fields it leaves out take the paper's values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed of the model's initialisation and of the run's random draws.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder: new or empty (default: `runs/<task>/<run name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the interrupted run in --out from its last checkpoint; a larger budget extends it.
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// No progress bar and no per-epoch lines (for scripts).
    #[arg(long)]
    pub quiet: bool,
}

/// A training command's line: the shared flags and the task's own.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrainArgs<T: clap::Args> {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub task: T,
}

/// A run's settings, as `config.json` holds them (unknown keys are rejected by serde).
pub trait ExperimentConfig: Serialize + DeserializeOwned {
    /// Every field in its range: sizes, counts and intervals above 0, learning rates finite and
    /// above 0, probabilities in [0, 1], combinations that exist.
    fn validate(&self) -> Result<()>;

    /// A short name of the run, the default folder's.
    fn run_name(&self) -> String;

    /// The seed of the model's initialisation and of the run's draws.
    fn set_seed(&mut self, seed: u64);

    /// Reads a config file and validates it.
    fn load(path: &Path) -> Result<Self> {
        let config: Self = crate::run_dir::read_json(path)?;
        config
            .validate()
            .with_context(|| path.display().to_string())?;
        Ok(config)
    }
}

/// A training command.
pub trait Experiment {
    /// The command's name, also the folder under `runs/`.
    const NAME: &'static str;
    /// The task's own flags (beside [`RunArgs`]).
    type Args: clap::Args + std::fmt::Debug;
    type Config: ExperimentConfig;
    /// What `summary.json` holds.
    type Summary: Serialize;

    /// Fails before anything is written when this binary cannot run the experiment.
    fn available() -> Result<()> {
        Ok(())
    }

    /// The paper's settings for what the command line names (its core), without a config file.
    fn paper_config(args: &Self::Args) -> Result<Self::Config>;

    /// The overrides of a fresh run (sizes, options).
    fn override_config(args: &Self::Args, config: &mut Self::Config);

    /// The overrides that apply on resume as well: the budget.
    fn extend_config(args: &Self::Args, config: &mut Self::Config);

    /// What will run, for the first line (`stpn_r-h11-paper-s0, 20 epochs of 100000 sequences`).
    fn describe(config: &Self::Config) -> String;

    /// Trains (or continues) the run, writes `summary.json` and returns the summary.
    fn train(config: &Self::Config, session: &Session) -> Result<Self::Summary>;

    /// The line printed at the end.
    fn summary_line(config: &Self::Config, summary: &Self::Summary) -> String;
}

/// The name of a core or option as configs spell it (`stpn_r`, `reference`).
pub fn name_of(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

/// A config value out of range, as an error.
pub fn checked(result: Result<(), String>) -> Result<()> {
    result.map_err(anyhow::Error::msg)
}

/// The config and folder of the run a command line asks for (steps 2–4 of the module docs).
pub fn prepare<E: Experiment>(args: &TrainArgs<E::Args>) -> Result<(E::Config, RunDir)> {
    let common = &args.run;
    let (config, run) = if common.resume {
        let out = common.out.as_ref().context("--resume needs --out")?;
        let run = RunDir::open(out).context("nothing to resume; drop --resume to start a run")?;
        if run.checkpoint("last").is_none() {
            // Nothing to lose: the run stopped before its first checkpoint. Say so, and start
            // it from the beginning with its own config.
            eprintln!(
                "note: {} has no checkpoint yet; starting the run from the beginning with its config.json",
                out.display()
            );
        }
        let mut config: E::Config = run.read_json("config.json")?;
        E::extend_config(&args.task, &mut config);
        config
            .validate()
            .with_context(|| format!("{}", run.file("config.json").display()))?;
        (config, run)
    } else {
        let mut config = match &common.config {
            Some(path) => E::Config::load(path)?,
            None => E::paper_config(&args.task)?,
        };
        if let Some(seed) = common.seed {
            config.set_seed(seed);
        }
        E::override_config(&args.task, &mut config);
        E::extend_config(&args.task, &mut config);
        match &common.config {
            Some(path) => config
                .validate()
                .with_context(|| path.display().to_string())?,
            None => config.validate()?,
        }
        let out = common
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(E::NAME).join(config.run_name()));
        (config, RunDir::create(&out)?)
    };
    Ok((config, run))
}

/// Runs a training command from its command line to its summary line.
pub fn command<E: Experiment>(backend: Backend, args: &TrainArgs<E::Args>) -> Result<()> {
    E::available()?;
    let common = &args.run;
    let (config, run) = prepare::<E>(args)?;
    run.write_json("config.json", &config)?;
    if !common.quiet {
        println!(
            "{}: {} on {backend} -> {}",
            E::NAME,
            E::describe(&config),
            run.path.display()
        );
    }
    let session = Session::new(run, backend, common.resume, common.quiet);
    let summary = E::train(&config, &session)?;
    println!(
        "{}  [{}]",
        E::summary_line(&config, &summary),
        session.run.file("summary.json").display()
    );
    Ok(())
}

/// How an evaluation chooses actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Actions {
    /// The policy's most probable action (the Gaussian's mean).
    Greedy,
    /// A draw from the policy.
    Sampled,
}

/// The flags of the evaluation commands (`maze-eval`, `pendulum-eval`, `pong-eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Run folder of the training command.
    pub run: PathBuf,
    /// Number of episodes (default: the paper's evaluation of the task).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// How actions are chosen (default: the paper's evaluation of the task).
    #[arg(long, value_enum)]
    pub actions: Option<Actions>,
    /// Same as --actions greedy.
    #[arg(long, conflicts_with = "actions")]
    pub greedy: bool,
    /// Seed of the evaluation episodes and action draws.
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,
}

/// An experiment whose runs can be evaluated on fresh episodes (the RL tasks).
pub trait Evaluate: Experiment {
    /// The paper's evaluation: how many episodes, with which actions.
    const EPISODES: usize;
    const ACTIONS: Actions;

    /// Evaluates the last checkpoint of `run`, writes `eval.json` and returns it.
    fn evaluate(
        run: &RunDir,
        backend: Backend,
        episodes: usize,
        greedy: bool,
        seed: u64,
    ) -> Result<Evaluation>;
}

/// An evaluation command: opens the run folder, evaluates, prints the result's line.
pub fn evaluate_command<E: Evaluate>(backend: Backend, args: &EvalArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    let actions = if args.greedy {
        Actions::Greedy
    } else {
        args.actions.unwrap_or(E::ACTIONS)
    };
    let episodes = args.episodes.unwrap_or(E::EPISODES);
    checked(stpn_rl::checks::positive("--episodes", episodes))?;
    let evaluation = E::evaluate(
        &run,
        backend,
        episodes,
        actions == Actions::Greedy,
        args.seed,
    )?;
    println!("{}", evaluation.line(&run));
    Ok(())
}

/// Set by the Ctrl-C handler; the loops stop at their next checkpoint.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C stop training cleanly: the running loop writes a checkpoint at the end of its
/// current unit (epoch, step or iteration) and the command exits with [`Interrupted`]. A second
/// Ctrl-C exits at once.
pub fn handle_ctrl_c() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once (second Ctrl-C); the last checkpoint is intact");
            std::process::exit(130);
        }
        eprintln!(
            "\nCtrl-C: stopping at the end of this epoch, update or iteration, with a checkpoint (Ctrl-C again to stop at once)"
        );
    });
    if let Err(error) = installed {
        tracing::warn!("Ctrl-C will stop without a checkpoint: {error}");
    }
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error of a run stopped by Ctrl-C after its checkpoint was written.
#[derive(Debug, thiserror::Error)]
#[error("interrupted after {unit} {done}, checkpoint saved; continue with --resume --out {folder}")]
pub struct Interrupted {
    pub unit: &'static str,
    pub done: usize,
    pub folder: String,
}

/// What a training loop needs from the command: its run folder, backend, whether it resumes,
/// whether it reports progress; and the loop's shared rules.
pub struct Session {
    pub run: RunDir,
    pub backend: Backend,
    pub resume: bool,
    pub quiet: bool,
}

impl Session {
    /// The run's autodiff device and the device its initial network is drawn on, both seeded
    /// with `seed`. The network is drawn on flex when flex is compiled in (else on the run's own
    /// device) and then forked to the run's device (`Module::fork`): Burn's random numbers differ
    /// between backends, so one seed gives one network on the CPU and on a GPU. On flex both are
    /// the run's own device, so CPU runs are unchanged.
    pub fn devices(&self, seed: u64) -> Result<(Device, Device)> {
        let device = self.backend.device()?.autodiff();
        device.seed(seed);
        #[cfg(feature = "flex")]
        let initialisation = Backend::Flex;
        #[cfg(not(feature = "flex"))]
        let initialisation = self.backend;
        let host = initialisation.device()?.autodiff();
        host.seed(seed);
        Ok((device, host))
    }

    pub fn new(run: RunDir, backend: Backend, resume: bool, quiet: bool) -> Self {
        Self {
            run,
            backend,
            resume,
            quiet,
        }
    }

    /// Whether to write the checkpoint after `done` of `total` units: every `every`, at the end,
    /// and when Ctrl-C was pressed.
    pub fn checkpoint_due(&self, done: usize, every: usize, total: usize) -> bool {
        done % every.max(1) == 0 || done >= total || interrupted()
    }

    /// After a checkpoint: stops the run if Ctrl-C was pressed.
    pub fn stop_if_interrupted(&self, unit: &'static str, done: usize) -> Result<()> {
        if interrupted() {
            return Err(Interrupted {
                unit,
                done,
                folder: self.run.path.display().to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// The divergence guard: a NaN or infinite `value` (a loss, a gradient norm) stops the run
    /// with a one-line error. Called before the update's checkpoint, so the last checkpoint
    /// holds the last good model.
    pub fn ensure_finite(&self, what: &str, value: f64, at: impl Display) -> Result<()> {
        if !value.is_finite() {
            bail!(
                "the {what} diverged ({value}) at {at}; the last checkpoint in {} is from before it: lower the learning rate",
                self.run.path.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::ExperimentConfig;
    use super::art::ArtConfig;
    use super::familiarity::FamiliarityConfig;
    use super::maze::MazeConfig;
    use super::pendulum::PendulumConfig;
    use super::pong::PongConfig;

    /// Parses a config of `task` and validates it, as `--config` and `--resume` do.
    fn load(task: &str, json: Value) -> anyhow::Result<()> {
        match task {
            "art" => serde_json::from_value::<ArtConfig>(json)?.validate(),
            "familiarity" => serde_json::from_value::<FamiliarityConfig>(json)?.validate(),
            "maze" => serde_json::from_value::<MazeConfig>(json)?.validate(),
            "pendulum" => serde_json::from_value::<PendulumConfig>(json)?.validate(),
            _ => serde_json::from_value::<PongConfig>(json)?.validate(),
        }
    }

    /// Every shipped config, with its task.
    fn shipped() -> Vec<(String, Value)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut configs = Vec::new();
        for task in ["art", "maze", "pendulum", "pong"] {
            for entry in std::fs::read_dir(root.join(task)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|ext| ext == "json") {
                    let json =
                        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                    configs.push((task.to_string(), json));
                }
            }
        }
        let familiarity = FamiliarityConfig::paper(
            super::familiarity::FamiliarityModel::Stpnr,
            super::familiarity::Mode::Inf,
            3,
        );
        configs.push((
            "familiarity".into(),
            serde_json::to_value(familiarity).unwrap(),
        ));
        configs
    }

    #[test]
    fn shipped_configs_are_valid() {
        for (task, json) in shipped() {
            load(&task, json.clone()).unwrap_or_else(|error| panic!("{task} {json}: {error:#}"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("STPN_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
            // A fixed seed, so CI runs the same cases every time; STPN_PROPTEST_CASES=N searches
            // N random ones (by hand).
            rng_seed: if std::env::var_os("STPN_PROPTEST_CASES").is_some() {
                proptest::test_runner::RngSeed::Random
            } else {
                proptest::test_runner::RngSeed::Fixed(5)
            },
            ..ProptestConfig::default()
        })]
        /// A config with one field replaced by a random value, or removed, or a key added, loads
        /// or gives an error: never a panic.
        #[test]
        fn damaged_configs_never_panic(
            pick in any::<prop::sample::Index>(),
            field in any::<prop::sample::Index>(),
            kind in 0u8..12,
            number in prop_oneof![Just(f64::NAN), Just(0.0), Just(-1.0), Just(1e300), any::<f64>()],
        ) {
            let configs = shipped();
            let (task, mut json) = pick.get(&configs).clone();
            let object = json.as_object_mut().unwrap();
            let keys: Vec<String> = object.keys().cloned().collect();
            let key = field.get(&keys).clone();
            let replacement = match kind {
                0 => { object.remove(&key); None }
                1 => { object.insert("unexpected_key".into(), Value::from(1)); None }
                2 => Some(Value::Null),
                3 => Some(Value::from("text")),
                4 => Some(Value::from(-7)),
                5 => Some(Value::from(0)),
                6 => Some(serde_json::json!({ "nested": true })),
                7 => Some(Value::from(vec![1, 2])),
                8 => Some(serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)),
                9 => Some(Value::from(u64::MAX)),
                10 => Some(Value::from(true)),
                _ => Some(serde_json::json!({ "learning_rate": number.to_string() })),
            };
            if let Some(value) = replacement {
                object.insert(key.clone(), value);
            }
            let outcome = std::panic::catch_unwind(|| load(&task, json.clone()).is_ok());
            prop_assert!(outcome.is_ok(), "{task}: {key} → panic");
        }
    }
}
