//! The maze exploration experiment (paper §4.2; docs/reference.md §4): an agent starts at the centre of a
//! 13×13 maze, finds an invisible reward, is teleported away, and must return as often as it can
//! in 200 steps. Trained with the maze's A2C variant ([`stpn_rl::maze_a2c`]): a batch of
//! episodes per iteration, full backpropagation through each episode, Adam (ε 1e-4), clipping
//! by global norm 4, no update during the first 101 iterations.
//!
//! `metrics.csv` has one row per iteration; `last/` is checkpointed every `checkpoint_every`
//! iterations (model, optimiser, progress); every episode's reset seed and every action draw
//! derive from `seed` and the iteration, so a resumed run continues exactly.

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stpn_envs::maze;
use stpn_model::{
    Backend, HebbFfConfig, LstmConfig, ModplastConfig, Normalisation, RecurrentCell, RnnConfig,
    StpnFConfig, StpnRConfig,
};
use stpn_rl::maze_a2c::{self, LossConfig};
use stpn_rl::{ActorCritic, ActorCriticConfig, clip_by_global_norm};

use crate::experiments::{
    Actions, Evaluate, Experiment, ExperimentConfig, Session, checked, name_of,
};
use crate::run_dir::{Evaluation, Metrics, RlSummary, RunDir};
use stpn_rl::checks::{positive, positive_finite};

/// The maze agent's core.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum MazeCore {
    /// STPNr, per-synapse Λ Γ, post-normalisation, clamp 1 (the paper's main maze model, h55).
    Stpn,
    /// STPNr, per-synapse, pre-normalisation, no clamp (the ablation STPN_Maze_h30).
    StpnPre,
    /// STPNr with scalar Λ Γ, pre-normalisation (the ablation STPN_Maze_scalarSTP_h55).
    StpnScalar,
    /// STPNf, per-synapse, the drive normalised (the ablation STPNf_Maze_h76).
    Stpnf,
    /// STPNf with scalar Λ Γ (the ablation STPNf_Maze_scalarSTP_h181).
    StpnfScalar,
    /// HebbFF (the ablation HebbFF_Maze_h181).
    Hebbff,
    /// LSTM (two bias vectors, as PyTorch's `LSTMCell`), h47 in the paper.
    Lstm,
    /// Miconi's RNN (tanh, recurrent weights from U[0, 0.01)), h100 in the paper.
    Rnn,
    /// Neuromodulated plasticity, backpropamine (clamp 1), h73 in the paper.
    Modplast,
}

impl MazeCore {
    /// The hidden size of the paper's config for this core (docs/reference.md §4.4).
    pub fn paper_hidden_size(self) -> usize {
        match self {
            Self::Stpn | Self::StpnScalar => 55,
            Self::StpnPre => 30,
            Self::Stpnf => 76,
            Self::StpnfScalar | Self::Hebbff => 181,
            Self::Lstm => 47,
            Self::Rnn => 100,
            Self::Modplast => 73,
        }
    }
}

/// Builds the maze agent of `config` on `device` (its core per `config.core`) and evaluates
/// `$body` with it bound to `$agent` (each core is a different type).
macro_rules! with_agent {
    ($config:expr, $device:expr, |$agent:ident| $body:expr) => {{
        let (config, device) = ($config, $device);
        let heads = ActorCriticConfig::new(maze::ACTIONS);
        let (inputs, hidden) = (maze::OBSERVATION_SIZE, config.hidden_size);
        let stpn_r = StpnRConfig::new(inputs, hidden).with_fused(config.fused);
        let stpn_f = StpnFConfig::new(inputs, hidden).with_fused(config.fused);
        match config.core {
            MazeCore::Stpn => {
                let core = stpn_r
                    .with_normalisation(Normalisation::Post)
                    .with_clamp(Some(1.0));
                let $agent = heads.init(core.init(device), device);
                $body
            }
            MazeCore::StpnPre => {
                let $agent = heads.init(stpn_r.init(device), device);
                $body
            }
            MazeCore::StpnScalar => {
                let $agent = heads.init(stpn_r.with_per_synapse(false).init(device), device);
                $body
            }
            MazeCore::Stpnf => {
                let $agent = heads.init(stpn_f.init(device), device);
                $body
            }
            MazeCore::StpnfScalar => {
                let $agent = heads.init(stpn_f.with_per_synapse(false).init(device), device);
                $body
            }
            MazeCore::Hebbff => {
                let $agent = heads.init(HebbFfConfig::new(inputs, hidden).init(device), device);
                $body
            }
            MazeCore::Lstm => {
                let $agent = heads.init(
                    LstmConfig::new(inputs, hidden)
                        .with_two_biases(true)
                        .init(device),
                    device,
                );
                $body
            }
            MazeCore::Rnn => {
                let core = RnnConfig::new(inputs, hidden).with_miconi_init(true);
                let $agent = heads.init(core.init(device), device);
                $body
            }
            MazeCore::Modplast => {
                let $agent = heads.init(ModplastConfig::new(inputs, hidden).init(device), device);
                $body
            }
        }
    }};
}

/// One maze run. Defaults are the paper's (docs/reference.md §4.2), except `iterations`, which the
/// paper set to 50 000.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MazeConfig {
    pub core: MazeCore,
    pub hidden_size: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    pub iterations: usize,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "default_adam_epsilon")]
    pub adam_epsilon: f64,
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Iterations without an optimiser step at the start (the reference: 0–100).
    #[serde(default = "default_burn_in")]
    pub burn_in: usize,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// STPN on the fused kernel for the update (false: op by op; ~10 GB at the paper's batch).
    #[serde(default = "yes")]
    pub fused: bool,
    #[serde(default)]
    pub seed: u64,
}

fn default_batch_size() -> usize {
    512
}
fn default_learning_rate() -> f64 {
    1e-4
}
fn default_adam_epsilon() -> f64 {
    1e-4
}
fn default_grad_clip() -> f64 {
    4.0
}
fn default_burn_in() -> usize {
    101
}
fn default_checkpoint_every() -> usize {
    25
}
fn yes() -> bool {
    true
}

impl MazeConfig {
    pub fn paper(core: MazeCore) -> Self {
        Self {
            core,
            hidden_size: core.paper_hidden_size(),
            batch_size: default_batch_size(),
            iterations: 50_000,
            learning_rate: default_learning_rate(),
            adam_epsilon: default_adam_epsilon(),
            grad_clip: default_grad_clip(),
            burn_in: default_burn_in(),
            loss: LossConfig::default(),
            checkpoint_every: default_checkpoint_every(),
            fused: true,
            seed: 0,
        }
    }

    /// Iterations that a budget of environment steps buys.
    pub fn iterations_for(&self, env_steps: u64) -> usize {
        (env_steps as usize)
            .div_ceil(self.batch_size * maze::EPISODE_LENGTH)
            .max(1)
    }
}

impl ExperimentConfig for MazeConfig {
    fn validate(&self) -> Result<()> {
        checked(positive("hidden_size", self.hidden_size))?;
        checked(positive("batch_size", self.batch_size))?;
        checked(positive("iterations", self.iterations))?;
        checked(positive("checkpoint_every", self.checkpoint_every))?;
        checked(positive_finite("learning_rate", self.learning_rate))?;
        checked(positive_finite("adam_epsilon", self.adam_epsilon))?;
        checked(positive_finite("grad_clip", self.grad_clip))?;
        checked(self.loss.validate())
    }

    fn run_name(&self) -> String {
        format!(
            "{}-h{}-b{}-s{}",
            name_of(self.core),
            self.hidden_size,
            self.batch_size,
            self.seed
        )
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub core: MazeCore,
    pub hidden_size: usize,
    pub params: usize,
    pub batch_size: usize,
    pub iterations: usize,
    #[serde(flatten)]
    pub progress: RlSummary,
    /// The uniform random policy's mean episode reward, for comparison (docs/reference.md §4.5).
    pub random_policy_return: f64,
    pub seed: u64,
    pub backend: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainingState {
    iteration: usize,
    recent_rewards: crate::run_dir::LastTen,
    train_seconds: f64,
}

pub const METRICS_HEADER: &str =
    "iteration,mean_reward,loss_policy,loss_value,loss_penalty,grad_norm,seconds";

/// The uniform random policy's mean episode reward in our maze, measured over 2 000 episodes by
/// the test `random_policy_averages_about_5_5` of stpn-envs (docs/maze.md).
pub const RANDOM_POLICY_RETURN: f64 = 5.235;

/// The `maze` command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MazeArgs {
    /// Core, with the paper's settings (without --config; default stpn).
    #[arg(long, value_enum, conflicts_with = "config")]
    pub core: Option<MazeCore>,
    /// Iterations, one batch of episodes and one update each (default 300 without --config);
    /// may extend a resumed run.
    #[arg(long, conflicts_with = "env_steps")]
    pub iterations: Option<usize>,
    /// Budget in environment steps instead of --iterations (iterations = env steps / (batch · 200)).
    #[arg(long, alias = "steps")]
    pub env_steps: Option<u64>,
    /// Episodes per iteration (512 in the paper).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Adam learning rate (1e-4 in the paper).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Hidden size (default: the paper's for the core).
    #[arg(long)]
    pub hidden: Option<usize>,
}

/// The maze exploration experiment.
pub struct MazeExperiment;

impl Experiment for MazeExperiment {
    const NAME: &'static str = "maze";
    type Args = MazeArgs;
    type Config = MazeConfig;
    type Summary = Summary;

    fn paper_config(args: &MazeArgs) -> Result<MazeConfig> {
        let mut config = MazeConfig::paper(args.core.unwrap_or(MazeCore::Stpn));
        // A short default: about 10 minutes on a 2-core CPU.
        config.iterations = 300;
        Ok(config)
    }

    fn override_config(args: &MazeArgs, config: &mut MazeConfig) {
        if let Some(batch) = args.batch {
            config.batch_size = batch;
        }
        if let Some(lr) = args.lr {
            config.learning_rate = lr;
        }
        if let Some(hidden) = args.hidden {
            config.hidden_size = hidden;
        }
    }

    fn extend_config(args: &MazeArgs, config: &mut MazeConfig) {
        if let Some(iterations) = args.iterations {
            config.iterations = iterations;
        }
        if let Some(env_steps) = args.env_steps {
            config.iterations = config.iterations_for(env_steps);
        }
    }

    fn describe(config: &MazeConfig) -> String {
        format!(
            "{}, {} iterations of {} episodes",
            config.run_name(),
            config.iterations,
            config.batch_size
        )
    }

    /// Trains (or resumes) a run and returns its summary (also written to `summary.json`).
    fn train(config: &MazeConfig, session: &Session) -> Result<Summary> {
        let (device, host) = session.devices(config.seed)?;
        with_agent!(config, &host, |agent| train(
            agent.fork(&device),
            config,
            session,
            &device
        ))
    }

    fn summary_line(config: &MazeConfig, summary: &Summary) -> String {
        format!(
            "{}: {} params, {} env steps ({:.0} steps/s), mean reward of the last 10 iterations {:.2} (random policy {:.1})",
            config.run_name(),
            summary.params,
            summary.progress.env_steps,
            summary.progress.steps_per_second,
            summary.progress.mean_return_last10,
            summary.random_policy_return,
        )
    }
}

/// The seed of one episode (or, with index `u64::MAX`, of one iteration's action draws).
fn derived_seed(seed: u64, iteration: usize, index: u64) -> u64 {
    crate::run_dir::derive_seed(seed, iteration as u64, index)
}

fn train<C: RecurrentCell>(
    agent: ActorCritic<C>,
    config: &MazeConfig,
    session: &Session,
    device: &Device,
) -> Result<Summary> {
    let (run, quiet) = (&session.run, session.quiet);
    let params = agent.num_params();
    let mut agent = agent;
    let mut optimizer = stpn_rl::adam(config.adam_epsilon);
    let mut state = TrainingState {
        iteration: 0,
        recent_rewards: Default::default(),
        train_seconds: 0.0,
    };
    (agent, optimizer, state) = run.resume_training(agent, optimizer, state, session.resume)?;
    let metrics = Metrics::open(run, METRICS_HEADER, state.iteration)?;
    let progress = crate::run_dir::progress_bar(
        config.iterations.saturating_sub(state.iteration),
        "iterations",
        quiet,
    );
    let plain_device = agent.valid().policy_bias.val().device();
    for iteration in state.iteration..config.iterations {
        let started = Instant::now();
        // Rollout on the plain model: no graph is recorded.
        let mut rng = ChaCha8Rng::seed_from_u64(derived_seed(config.seed, iteration, u64::MAX));
        let mut rollout = maze_a2c::rollout(
            &agent.valid(),
            config.batch_size,
            |episode| derived_seed(config.seed, iteration, episode as u64),
            &mut rng,
            maze_a2c::RolloutOptions::default(),
            &plain_device,
        );
        // The update backpropagates through the episodes under autodiff, from the rollout's
        // forward where the core kept it (the same parameters: no step in between).
        let core_forward = rollout.core_forward.take();
        let (loss, parts) = maze_a2c::loss(&agent, &rollout, core_forward, &config.loss, device);
        let gradients = GradientsParams::from_grads(loss.backward(), &agent);
        let (gradients, grad_norm) = clip_by_global_norm(&agent, gradients, config.grad_clip);
        session.ensure_finite(
            "gradient norm",
            grad_norm,
            format_args!("iteration {}", iteration + 1),
        )?;
        // The reference computes (and clips) gradients during the burn-in, but does not step.
        if iteration >= config.burn_in {
            agent = optimizer.step(config.learning_rate, agent, gradients);
        }
        let reward = rollout.mean_episode_reward();
        let seconds = started.elapsed().as_secs_f64();
        state.iteration = iteration + 1;
        state.train_seconds += seconds;
        state.recent_rewards.push(reward);
        metrics.append(&format!(
            "{},{reward:.4},{:.6},{:.6},{:.6},{grad_norm:.6},{seconds:.3}",
            state.iteration, parts.policy, parts.value, parts.penalty
        ))?;
        progress.inc(1);
        let mean_recent = state.recent_rewards.mean();
        progress.set_message(format!("reward {reward:.1} (last 10: {mean_recent:.1})"));
        if session.checkpoint_due(state.iteration, config.checkpoint_every, config.iterations) {
            run.save_training(&agent, &optimizer, &state)?;
            if quiet {
                tracing::info!("iteration {} reward {mean_recent:.2}", state.iteration);
            }
            session.stop_if_interrupted("iteration", state.iteration)?;
        }
    }
    progress.finish_and_clear();
    let env_steps = (state.iteration * config.batch_size * maze::EPISODE_LENGTH) as u64;
    let summary = Summary {
        core: config.core,
        hidden_size: config.hidden_size,
        params,
        batch_size: config.batch_size,
        iterations: state.iteration,
        progress: RlSummary {
            env_steps,
            episodes: (state.iteration * config.batch_size) as u64,
            mean_return_last10: state.recent_rewards.mean(),
            steps_per_second: env_steps as f64 / state.train_seconds.max(1e-9),
            train_seconds: state.train_seconds,
        },
        random_policy_return: RANDOM_POLICY_RETURN,
        seed: config.seed,
        backend: session.backend.to_string(),
    };
    run.write_json("summary.json", &summary)?;
    Ok(summary)
}

impl Evaluate for MazeExperiment {
    const EPISODES: usize = 512;
    const ACTIONS: Actions = Actions::Sampled;

    /// Evaluates the last checkpoint of a run on `episodes` fresh episodes (no updates), writes
    /// `eval.json` and returns it.
    fn evaluate(
        run: &RunDir,
        backend: Backend,
        episodes: usize,
        greedy: bool,
        seed: u64,
    ) -> Result<Evaluation> {
        let config: MazeConfig = run.read_json("config.json")?;
        let device = backend.device()?;
        // Evaluation episodes have seeds of their own, apart from every training iteration's.
        let episode_seed = |episode: usize| derived_seed(seed, usize::MAX, episode as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(derived_seed(seed, usize::MAX, u64::MAX));
        let options = maze_a2c::RolloutOptions {
            greedy,
            energy: true,
        };
        let (rollout, energy_units, iteration) = with_agent!(&config, &device, |agent| {
            let (agent, iteration) = run.load_last_model(agent)?;
            let units = agent.core.energy_units();
            let rollout =
                maze_a2c::rollout(&agent, episodes, episode_seed, &mut rng, options, &device);
            (rollout, units, iteration)
        });
        let returns: Vec<f64> = (0..episodes)
            .map(|episode| {
                (0..rollout.steps)
                    .map(|step| rollout.rewards[step * episodes + episode] as f64)
                    .sum()
            })
            .collect();
        let result = stpn_rl::evaluate::EvaluationResult {
            returns,
            lengths: vec![rollout.steps; episodes],
            energy_per_step: rollout.energy_per_step.unwrap_or(f64::NAN),
            energy_units,
        };
        let evaluation = Evaluation::of_checkpoint(&result, greedy, seed, iteration);
        run.write_json("eval.json", &evaluation)?;
        Ok(evaluation)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn tiny(core: MazeCore) -> MazeConfig {
        let mut config = MazeConfig::paper(core);
        config.hidden_size = 6;
        config.batch_size = 3;
        config.iterations = 4;
        config.burn_in = 1;
        config.checkpoint_every = 2;
        config.learning_rate = 1e-2;
        config
    }

    fn scratch(name: &str) -> PathBuf {
        crate::test_support::scratch("maze", name)
    }

    fn train_fresh(config: &MazeConfig, name: &str) -> (Summary, RunDir) {
        let run = RunDir::create(&scratch(name)).unwrap();
        run.write_json("config.json", config).unwrap();
        let session = Session::new(run, Backend::Flex, false, true);
        let summary = MazeExperiment::train(config, &session).unwrap();
        (summary, session.run)
    }

    /// An interrupted run resumed from its checkpoint ends where an uninterrupted one does (the
    /// rows after the resume carry the losses and gradient norms of the same weights), and the
    /// summary carries the names scripts read.
    #[test]
    fn resume_equals_uninterrupted() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(MazeCore::Stpn);
        let (straight, straight_run) = train_fresh(&config, "straight");
        let mut first_part = config.clone();
        first_part.iterations = 2;
        let (_, resumed_run) = train_fresh(&first_part, "resumed");
        let session = Session::new(resumed_run, Backend::Flex, true, true);
        let resumed = MazeExperiment::train(&config, &session).unwrap();
        let resumed_run = session.run;
        assert_eq!(
            straight.progress.mean_return_last10,
            resumed.progress.mean_return_last10
        );
        let metrics = crate::test_support::metrics_without_timing;
        assert_eq!(metrics(&straight_run), metrics(&resumed_run));
        assert_eq!(metrics(&straight_run).len(), 5);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(straight_run.file("summary.json")).unwrap(),
        )
        .unwrap();
        for field in [
            "env_steps",
            "episodes",
            "mean_return_last10",
            "steps_per_second",
        ] {
            assert!(json.get(field).is_some(), "summary.json lacks {field}");
        }
        assert_eq!(json["env_steps"], 4 * 3 * 200);
        let evaluation =
            MazeExperiment::evaluate(&straight_run, Backend::Flex, 5, true, 1).unwrap();
        assert_eq!(evaluation.episodes, 5);
        assert!(straight_run.file("eval.json").exists());
        // eval.json names the checkpoint it measured: the last, after every iteration.
        assert_eq!(evaluation.checkpoint_iteration, Some(config.iterations));
        // The authors' maze aggregation: the mean over the core's units (H for STPN).
        assert_eq!(
            evaluation.energy_per_unit_per_step,
            evaluation.energy_per_step / config.hidden_size as f64
        );
        // The evaluation follows the checkpoint: the same one twice gives the same numbers (a
        // freshly drawn model would not), another one (untrained) gives others.
        let again = MazeExperiment::evaluate(&straight_run, Backend::Flex, 5, true, 1).unwrap();
        assert_eq!(evaluation.energy_per_step, again.energy_per_step);
        let untrained = RunDir::create(&scratch("untrained")).unwrap();
        untrained.write_json("config.json", &config).unwrap();
        let device = Backend::Flex.device().unwrap();
        with_agent!(&config, &device, |agent| untrained
            .save_training(&agent, &stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON), &0)
            .unwrap());
        let other = MazeExperiment::evaluate(&untrained, Backend::Flex, 5, true, 1).unwrap();
        assert_ne!(evaluation.energy_per_step, other.energy_per_step);
        std::fs::remove_dir_all(&untrained.path).ok();
        for run in [straight_run, resumed_run] {
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// Every core trains (updates included) and evaluates: finite losses, a checkpoint, an
    /// energy per step above zero.
    #[test]
    fn every_core_trains_and_evaluates() {
        let _seeded = crate::seeded_device_lock();
        for core in [
            MazeCore::Stpn,
            MazeCore::StpnPre,
            MazeCore::StpnScalar,
            MazeCore::Stpnf,
            MazeCore::StpnfScalar,
            MazeCore::Hebbff,
            MazeCore::Lstm,
            MazeCore::Rnn,
            MazeCore::Modplast,
        ] {
            let mut config = tiny(core);
            config.iterations = 2;
            let name = format!("core-{}", name_of(core));
            let (summary, run) = train_fresh(&config, &name);
            assert_eq!(summary.iterations, 2, "{core:?}");
            let evaluation = MazeExperiment::evaluate(&run, Backend::Flex, 2, false, 0).unwrap();
            assert!(
                evaluation.energy_per_step.is_finite() && evaluation.energy_per_step > 0.0,
                "{core:?}: energy {}",
                evaluation.energy_per_step
            );
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// The shipped configs load and build the paper's networks (docs/reference.md §4.4; the LSTM
    /// with PyTorch's two bias vectors, as `LSTMCell`).

    #[test]
    fn shipped_configs_have_the_paper_parameter_counts() {
        let _seeded = crate::seeded_device_lock();
        let device = Backend::Flex.device().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/maze");
        for (file, expected) in [
            ("stpn_h55.json", 12_215),
            ("stpn_h55_scaled.json", 12_215),
            ("stpn_h30_pre.json", 4_415),
            ("stpn_scalar_h55.json", 4_297),
            ("stpnf_h76.json", 4_337),
            ("stpnf_scalar_h181.json", 4_170),
            ("hebbff_h181.json", 4_170),
            ("lstm_h47.json", 12_648),
            ("lstm_h47_scaled.json", 12_648),
            ("rnn_h100.json", 12_305),
            ("modplast_h73.json", 12_416),
            ("stpn_h30_pre_scaled.json", 4_415),
            ("stpn_scalar_h55_scaled.json", 4_297),
            ("stpnf_h76_scaled.json", 4_337),
            ("stpnf_scalar_h181_scaled.json", 4_170),
            ("hebbff_h181_scaled.json", 4_170),
            ("rnn_h100_scaled.json", 12_305),
            ("modplast_h73_scaled.json", 12_416),
        ] {
            let config = MazeConfig::load(&root.join(file)).unwrap();
            assert_eq!(
                config.hidden_size,
                config.core.paper_hidden_size(),
                "{file}"
            );
            let params = with_agent!(&config, &device, |agent| agent.num_params());
            assert_eq!(params, expected, "{file}");
        }
        let bad = scratch("bad.json");
        std::fs::write(&bad, r#"{"core": "stpn", "hidden": 5}"#).unwrap();
        let error = format!("{:#}", MazeConfig::load(&bad).unwrap_err());
        assert!(error.contains("malformed"), "{error}");
        std::fs::remove_file(&bad).ok();
    }
}
