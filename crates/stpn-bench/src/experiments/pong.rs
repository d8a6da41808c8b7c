//! Atari Pong with A2C (paper §4.3; docs/reference.md §5.2): the conv encoder (16×8×8/4, 32×4×4/2 → 2 592
//! features) into a recurrent core (STPNr H 64 by default: per-synapse, pre-normalised, no clamp,
//! on the fused kernel; or LSTM H 48), RLlib's A2C ([`stpn_rl::a2c`]) over many Pong envs with
//! fragments of 50 frames, one frame per step and the paper's preprocessing. The DeepMind
//! preprocessing comes with the Atari A2C ([`PongConfig::deepmind`]) or with PPO
//! ([`PongConfig::deepmind_ppo`]), both run by the same loop.
//!
//! `metrics.csv` has one row per iteration; `last/` is checkpointed every `checkpoint_every`
//! iterations. A resumed run continues from the checkpoint's weights with fresh episodes (the
//! emulators' mid-episode states are not saved). Needs the `atari` feature (ALE, GPL-2.0).

// Without ALE the driver is reached from nowhere but its own types.
#![cfg_attr(not(feature = "atari"), allow(dead_code))]

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stpn_envs::env::{Env, SyncVectorEnv};
use stpn_model::{Backend, LstmConfig, MlpConfig, RecurrentCell, StpnRConfig};
use stpn_rl::a2c::{self, A2cConfig, VecCollector};
use stpn_rl::evaluate::evaluate_discrete;
use stpn_rl::{ActorCritic, ActorCriticConfig, ConvEncoder, ConvEncoderConfig};

use crate::experiments::{
    Actions, Evaluate, Experiment, ExperimentConfig, Session, checked, name_of,
};
use crate::run_dir::{Evaluation, Metrics, RlProgress, RlSummary, RunDir};
use stpn_rl::checks::positive;

/// The agent's core.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum PongCore {
    /// STPNr H 64 (519 735 parameters with the encoder and heads).
    Stpn,
    /// LSTM H 48 (two bias vectors, as PyTorch's).
    Lstm,
    /// A control without memory, not in the paper: one tanh layer of 256 units on the encoder's
    /// features (the 256-unit layer of Mnih et al. 2013's Atari network). With the DeepMind
    /// preprocessing's 4 stacked frames it can see the ball move, so it tells whether the
    /// pipeline (emulator, preprocessing, encoder, A2C) learns Pong apart from the memory cores.
    Mlp,
}

/// How observations are made from the emulator.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
pub enum PongPreprocessing {
    /// The paper's: one frame per agent step, RLlib's pixel preprocessing (one 84×84 frame).
    #[default]
    #[serde(rename = "paper")]
    #[value(name = "paper")]
    Paper,
    /// DeepMind's: frame skip 4 with max-pooling, no-op starts, 84×84, a stack of 4 frames,
    /// rewards clipped to their sign (`stpn_atari::deepmind`). One agent step is 4 frames.
    #[serde(rename = "deepmind")]
    #[value(name = "deepmind")]
    DeepMind,
}

impl PongPreprocessing {
    /// Frames the encoder reads per observation.
    pub fn channels(self) -> usize {
        match self {
            PongPreprocessing::Paper => 1,
            PongPreprocessing::DeepMind => DEEPMIND_STACK,
        }
    }

    /// Emulator frames per agent step.
    pub fn frame_skip(self) -> u64 {
        match self {
            PongPreprocessing::Paper => 1,
            PongPreprocessing::DeepMind => 4,
        }
    }
}

/// Frames stacked by the DeepMind preprocessing (`stpn_atari::DeepMindConfig::default().stack`,
/// restated so that a build without ALE knows the agent's shape).
const DEEPMIND_STACK: usize = 4;

/// One Pong run. Defaults are the paper's except the number of environments (64 workers in the
/// paper) and the budget (10⁸ frames in the paper).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PongConfig {
    pub core: PongCore,
    pub hidden_size: usize,
    #[serde(default = "default_envs")]
    pub envs: usize,
    /// Agent steps to train for (frames = agent steps × the preprocessing's frame skip).
    pub total_steps: u64,
    /// The observation pipeline (default: the paper's).
    #[serde(default)]
    pub preprocessing: PongPreprocessing,
    #[serde(default)]
    pub a2c: A2cConfig,
    /// Baselines' Atari initialisation of the encoder and heads (orthogonal, zero biases) instead
    /// of PyTorch's default; the core keeps its own (the paper's).
    #[serde(default)]
    pub orthogonal_init: bool,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_envs() -> usize {
    16
}
fn default_checkpoint_every() -> usize {
    50
}

impl PongConfig {
    pub fn paper(core: PongCore) -> Self {
        let a2c = match core {
            PongCore::Stpn => A2cConfig::default(),
            PongCore::Lstm => A2cConfig {
                learning_rate: 1e-4,
                ..A2cConfig::default()
            },
            PongCore::Mlp => A2cConfig::default(),
        };
        Self {
            core,
            hidden_size: match core {
                PongCore::Stpn => 64,
                PongCore::Lstm => 48,
                PongCore::Mlp => 256,
            },
            envs: default_envs(),
            total_steps: 2_000_000,
            preprocessing: PongPreprocessing::Paper,
            a2c,
            orthogonal_init: false,
            checkpoint_every: default_checkpoint_every(),
            seed: 0,
        }
    }

    /// The same cores and A2C on the DeepMind preprocessing, for a Pong agent in hours rather
    /// than days: 10⁷ agent steps (4·10⁷ frames) in 16 environments, with the settings of the
    /// Atari A2C (Mnih et al. 2016, as OpenAI Baselines' `a2c`) for every core: 5-step
    /// fragments, one step on each iteration's 80 steps of TensorFlow's RMSprop (α 0.99,
    /// ε 10⁻⁵) on the mean loss, clipped to norm 0.5, learning rate 7·10⁻⁴ decaying linearly to 0
    /// over the run, and Baselines' orthogonal initialisation of the encoder and heads. With
    /// Adam, summed losses and PyTorch's initialisation, every core's encoder died (all its
    /// ReLUs negative on every frame) and no run left the floor (docs/rl.md).
    pub fn deepmind(core: PongCore) -> Self {
        let paper = Self::paper(core);
        let total_steps = 10_000_000;
        Self {
            preprocessing: PongPreprocessing::DeepMind,
            total_steps,
            a2c: A2cConfig {
                fragment_length: 5,
                sequence_length: 5,
                minibatch_size: 80,
                learning_rate: 7e-4,
                decay_steps: total_steps as f64,
                grad_clip: 0.5,
                // Baselines' vf_coef 0.5 weighs the mean squared error, which has no ½.
                value_coefficient: 1.0,
                optimizer: a2c::A2cOptimizer::TfRmsprop {
                    alpha: 0.99,
                    epsilon: 1e-5,
                },
                reduction: a2c::LossReduction::Mean,
                ..paper.a2c
            },
            orthogonal_init: true,
            // An iteration is 80 agent steps here: a checkpoint every 40 000.
            checkpoint_every: 500,
            ..paper
        }
    }

    /// The DeepMind preprocessing with PPO as CleanRL's `ppo_atari` trains Pong (Huang et al.
    /// 2022): 8 environments, 128-step fragments, 4 epochs of 4 minibatches of 256 steps, clip
    /// 0.1 of the ratio and of the value, advantages standardised per minibatch, GAE λ 0.95,
    /// Adam (ε 10⁻⁵) at 2.5·10⁻⁴ decaying linearly to 0 over 10⁷ agent steps, norm clip 0.5.
    /// Recurrent cores learn on sequences of 32 steps; the memoryless control on whole fragments.
    pub fn deepmind_ppo(core: PongCore) -> Self {
        let deepmind = Self::deepmind(core);
        Self {
            envs: 8,
            a2c: A2cConfig {
                fragment_length: 128,
                sequence_length: if core == PongCore::Mlp { 128 } else { 32 },
                minibatch_size: 256,
                gae_lambda: 0.95,
                learning_rate: 2.5e-4,
                adam_epsilon: 1e-5,
                optimizer: a2c::A2cOptimizer::Adam,
                // CleanRL's vf_coef 0.5 weighs ½ of the mean squared error, as our loss does.
                value_coefficient: 0.5,
                ppo_clip: Some(0.1),
                epochs: 4,
                normalize_advantages: true,
                ..deepmind.a2c
            },
            // An iteration is 1 024 agent steps here: a checkpoint every 25 600.
            checkpoint_every: 25,
            ..deepmind
        }
    }

    pub fn iterations(&self) -> usize {
        (self.total_steps as usize).div_ceil(self.envs * self.a2c.fragment_length)
    }
}

impl ExperimentConfig for PongConfig {
    fn validate(&self) -> Result<()> {
        checked(positive("envs", self.envs))?;
        checked(positive("hidden_size", self.hidden_size))?;
        checked(positive("total_steps", self.total_steps as usize))?;
        checked(positive("checkpoint_every", self.checkpoint_every))?;
        checked(self.a2c.validate())
    }

    fn run_name(&self) -> String {
        let preprocessing = match self.preprocessing {
            PongPreprocessing::Paper => "",
            PongPreprocessing::DeepMind => "-deepmind",
        };
        format!(
            "{}-h{}-e{}{preprocessing}-s{}",
            name_of(self.core),
            self.hidden_size,
            self.envs,
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
    pub core: PongCore,
    pub hidden_size: usize,
    pub params: usize,
    #[serde(flatten)]
    pub progress: RlSummary,
    pub seed: u64,
    pub backend: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainingState {
    #[serde(flatten)]
    progress: RlProgress,
}

/// `active_features`: the fraction of the encoder's features above zero (0: a dead encoder).
pub const METRICS_HEADER: &str = "iteration,env_steps,episodes,mean_return_last10,policy_loss,value_loss,entropy,grad_norm,learning_rate,active_features,seconds";

/// What a binary without ALE says when asked for Pong.
pub const ATARI_MISSING: &str = "Pong needs the Arcade Learning Environment, which this binary was built without: run scripts/setup-ale, then build stpn-bench with --features atari (scripts/stpn does both; the binary is then GPL-2.0)";

/// The `pong` command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PongArgs {
    /// Core, with the paper's settings (without --config; default stpn).
    #[arg(long, value_enum, conflicts_with = "config")]
    pub core: Option<PongCore>,
    /// Budget in environment steps (frames: one frame per step); may extend a resumed run.
    #[arg(long, alias = "steps")]
    pub env_steps: Option<u64>,
    /// Parallel environments (64 in the paper).
    #[arg(long)]
    pub envs: Option<usize>,
    /// Observation pipeline, with its settings (without --config; default paper): `deepmind`
    /// is frame skip 4, no-op starts, a stack of 4, clipped rewards, 10⁷ agent steps.
    #[arg(long, value_enum, conflicts_with = "config")]
    pub preprocessing: Option<PongPreprocessing>,
}

/// Atari Pong with A2C.
pub struct PongExperiment;

impl Experiment for PongExperiment {
    const NAME: &'static str = "pong";
    type Args = PongArgs;
    type Config = PongConfig;
    type Summary = Summary;

    fn available() -> Result<()> {
        if !cfg!(feature = "atari") {
            bail!(ATARI_MISSING);
        }
        Ok(())
    }

    fn paper_config(args: &PongArgs) -> Result<PongConfig> {
        let core = args.core.unwrap_or(PongCore::Stpn);
        Ok(match args.preprocessing.unwrap_or_default() {
            PongPreprocessing::Paper => PongConfig::paper(core),
            PongPreprocessing::DeepMind => PongConfig::deepmind(core),
        })
    }

    fn override_config(args: &PongArgs, config: &mut PongConfig) {
        if let Some(envs) = args.envs {
            config.envs = envs;
        }
    }

    fn extend_config(args: &PongArgs, config: &mut PongConfig) {
        if let Some(steps) = args.env_steps {
            config.total_steps = steps;
        }
    }

    fn describe(config: &PongConfig) -> String {
        format!(
            "{}, {} agent steps ({} frames) in {} environments",
            config.run_name(),
            config.total_steps,
            config.total_steps * config.preprocessing.frame_skip(),
            config.envs
        )
    }

    /// Trains (or resumes) a run on ALE Pong and returns its summary (also in `summary.json`).
    fn train(config: &PongConfig, session: &Session) -> Result<Summary> {
        #[cfg(feature = "atari")]
        match config.preprocessing {
            PongPreprocessing::Paper => {
                let envs = (0..config.envs)
                    .map(|_| stpn_atari::Pong::new())
                    .collect::<Result<Vec<_>, _>>()?;
                train_on(vector_env(envs), config, session)
            }
            PongPreprocessing::DeepMind => {
                let envs = (0..config.envs)
                    .map(|_| deepmind_env())
                    .collect::<Result<Vec<_>, _>>()?;
                train_on(vector_env(envs), config, session)
            }
        }
        #[cfg(not(feature = "atari"))]
        {
            let _ = (config, session);
            bail!(ATARI_MISSING)
        }
    }

    fn summary_line(config: &PongConfig, summary: &Summary) -> String {
        format!(
            "{}: {} params, {} agent steps = {} frames ({:.0} steps/s), {} episodes, mean return of the last 10 {:.1}",
            config.run_name(),
            summary.params,
            summary.progress.env_steps,
            summary.progress.env_steps * config.preprocessing.frame_skip(),
            summary.progress.steps_per_second,
            summary.progress.episodes,
            summary.progress.mean_return_last10,
        )
    }
}

/// The emulators step on every core: a frame costs ~0.1 ms, starting the threads a few µs.
#[cfg(feature = "atari")]
fn vector_env<E: Env>(envs: Vec<E>) -> SyncVectorEnv<E> {
    SyncVectorEnv::new(envs).with_threads(stpn_model::kernel::threads::cores())
}

/// Pong with the DeepMind preprocessing, as the agent reads it.
#[cfg(feature = "atari")]
fn deepmind_env() -> Result<stpn_atari::ScaledDeepMindPong, stpn_atari::AleError> {
    let config = stpn_atari::DeepMindConfig::default();
    debug_assert_eq!(config.stack, DEEPMIND_STACK);
    Ok(stpn_atari::ScaledDeepMindPong(
        stpn_atari::DeepMindPong::new(config)?,
    ))
}

/// Builds the agent of `config` with `actions` outputs on `device` (the conv encoder into the
/// core per `config.core`) and evaluates `$body` with it bound to `$agent`.
macro_rules! with_agent {
    ($config:expr, $actions:expr, $device:expr, |$agent:ident| $body:expr) => {{
        let (config, device) = ($config, $device);
        let heads = ActorCriticConfig::new($actions).with_orthogonal_init(config.orthogonal_init);
        let encoder = ConvEncoderConfig::new()
            .with_channels(config.preprocessing.channels())
            .with_orthogonal_init(config.orthogonal_init);
        let (features, hidden) = (ConvEncoder::FEATURES, config.hidden_size);
        match config.core {
            PongCore::Stpn => {
                let $agent = heads
                    .init(StpnRConfig::new(features, hidden).init(device), device)
                    .with_conv_encoder_of(&encoder, device);
                $body
            }
            PongCore::Lstm => {
                let $agent = heads
                    .init(
                        LstmConfig::new(features, hidden)
                            .with_two_biases(true)
                            .init(device),
                        device,
                    )
                    .with_conv_encoder_of(&encoder, device);
                $body
            }
            PongCore::Mlp => {
                let $agent = heads
                    .init(MlpConfig::new(features, hidden).init(device), device)
                    .with_conv_encoder_of(&encoder, device);
                $body
            }
        }
    }};
}

/// Trains on `envs` (any vector of envs with flat observations and discrete actions).
pub fn train_on<E>(
    envs: SyncVectorEnv<E>,
    config: &PongConfig,
    session: &Session,
) -> Result<Summary>
where
    E: Env<Observation = Vec<f32>, Action = usize>,
{
    let (device, host) = session.devices(config.seed)?;
    let actions = envs.envs[0].action_space().size();
    with_agent!(config, actions, &host, |agent| train(
        agent.fork(&device),
        envs,
        config,
        session,
        &device
    ))
}

impl Evaluate for PongExperiment {
    const EPISODES: usize = 1;
    const ACTIONS: Actions = Actions::Greedy;

    /// Evaluates the last checkpoint of a run on `episodes` fresh episodes (no updates; the paper:
    /// one greedy episode), writes `eval.json` and returns it.
    fn evaluate(
        run: &RunDir,
        backend: Backend,
        episodes: usize,
        greedy: bool,
        seed: u64,
    ) -> Result<Evaluation> {
        #[cfg(feature = "atari")]
        {
            let config: PongConfig = run.read_json("config.json")?;
            match config.preprocessing {
                PongPreprocessing::Paper => {
                    let env = stpn_atari::Pong::new()?;
                    evaluate_on(env, run, backend, episodes, greedy, seed)
                }
                PongPreprocessing::DeepMind => {
                    evaluate_on(deepmind_env()?, run, backend, episodes, greedy, seed)
                }
            }
        }
        #[cfg(not(feature = "atari"))]
        {
            let _ = (run, backend, episodes, greedy, seed);
            bail!(ATARI_MISSING)
        }
    }
}

/// [`Evaluate::evaluate`] on `env` (any env with flat observations and discrete actions).
pub fn evaluate_on<E>(
    mut env: E,
    run: &RunDir,
    backend: Backend,
    episodes: usize,
    greedy: bool,
    seed: u64,
) -> Result<Evaluation>
where
    E: Env<Observation = Vec<f32>, Action = usize>,
{
    let config: PongConfig = run.read_json("config.json")?;
    let device = backend.device()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let actions = env.action_space().size();
    let (result, encoder, iteration) = with_agent!(&config, actions, &device, |agent| {
        let (agent, iteration) = run.load_last_model(agent)?;
        let result = evaluate_discrete(&agent, &mut env, episodes, greedy, seed, &mut rng, &device);
        let encoder = agent
            .encoder
            .as_ref()
            .map(|encoder| encoder.activity(random_play_frames(&mut env, &mut rng, &device)));
        (result, encoder, iteration)
    });
    let evaluation = Evaluation {
        encoder,
        ..Evaluation::of_checkpoint(&result, greedy, seed, iteration)
    };
    run.write_json("eval.json", &evaluation)?;
    Ok(evaluation)
}

/// Every 10th observation of 2 000 steps of uniformly random play from a fresh episode, as
/// `[200, observation size]`: the frames on which `pong-eval` probes the encoder.
fn random_play_frames<E>(env: &mut E, rng: &mut ChaCha8Rng, device: &Device) -> Tensor<2>
where
    E: Env<Observation = Vec<f32>, Action = usize>,
{
    const STEPS: usize = 2_000;
    const EVERY: usize = 10;
    let actions = env.action_space().size();
    let (mut observation, _) = env.reset(Some(rng.next_u64()));
    let width = observation.len();
    let mut frames = Vec::with_capacity(STEPS / EVERY * width);
    for step in 0..STEPS {
        if step % EVERY == 0 {
            frames.extend_from_slice(&observation);
        }
        let outcome = env.step(&rng.random_range(0..actions));
        observation = if outcome.done() {
            env.reset(Some(rng.next_u64())).0
        } else {
            outcome.observation
        };
    }
    Tensor::from_data(TensorData::new(frames, [STEPS / EVERY, width]), device)
}

fn train<C, E>(
    agent: ActorCritic<C>,
    envs: SyncVectorEnv<E>,
    config: &PongConfig,
    session: &Session,
    device: &Device,
) -> Result<Summary>
where
    C: RecurrentCell,
    E: Env<Observation = Vec<f32>, Action = usize>,
{
    let (run, quiet) = (&session.run, session.quiet);
    let params = agent.num_params();
    let state = TrainingState {
        progress: RlProgress::default(),
    };
    let (mut agent, mut optimizer, mut state) =
        run.resume_training(agent, config.a2c.build_optimizer(), state, session.resume)?;
    let metrics = Metrics::open(run, METRICS_HEADER, state.progress.iteration)?;
    // Episodes and action draws continue from seeds of their own after a resume.
    let stream = crate::run_dir::derive_seed(config.seed, state.progress.iteration as u64, 0);
    let mut collector = VecCollector::new(envs, stream);
    collector.env_steps = state.progress.env_steps; // the learning-rate schedule follows the whole run
    let mut rng = ChaCha8Rng::seed_from_u64(stream);
    let iterations = config.iterations();
    let progress = crate::run_dir::progress_bar(
        iterations.saturating_sub(state.progress.iteration),
        "iterations",
        quiet,
    );
    while state.progress.iteration < iterations {
        let started = Instant::now();
        let episodes_before = collector.finished.len();
        let stats;
        (agent, stats) = a2c::iteration(
            agent,
            &mut optimizer,
            &mut collector,
            &config.a2c,
            &mut rng,
            device,
        );
        let at = format_args!("iteration {}", state.progress.iteration + 1);
        session.ensure_finite("policy loss", stats.policy_loss, at)?;
        session.ensure_finite("value loss", stats.value_loss, at)?;
        let seconds = started.elapsed().as_secs_f64();
        let returns = collector.finished[episodes_before..]
            .iter()
            .map(|&(r, _)| r);
        state.progress.record(collector.env_steps, seconds, returns);
        let mean_recent = state.progress.recent_returns.mean();
        metrics.append(&format!(
            "{},{},{},{mean_recent:.3},{:.6},{:.6},{:.6},{:.6},{:e},{:.4},{seconds:.3}",
            state.progress.iteration,
            state.progress.env_steps,
            state.progress.episodes,
            stats.policy_loss,
            stats.value_loss,
            stats.entropy,
            stats.grad_norm,
            stats.learning_rate,
            stats.active_features
        ))?;
        progress.inc(1);
        progress.set_message(format!(
            "{} frames, return (last 10) {mean_recent:.1}, {:.0} steps/s",
            state.progress.env_steps,
            state.progress.env_steps as f64 / state.progress.train_seconds
        ));
        if session.checkpoint_due(
            state.progress.iteration,
            config.checkpoint_every,
            iterations,
        ) {
            run.save_training(&agent, &optimizer, &state)?;
            session.stop_if_interrupted("iteration", state.progress.iteration)?;
        }
    }
    progress.finish_and_clear();
    let summary = Summary {
        core: config.core,
        hidden_size: config.hidden_size,
        params,
        progress: state.progress.summary(),
        seed: config.seed,
        backend: session.backend.to_string(),
    };
    run.write_json("summary.json", &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/reference.md §5.2: the STPN agent has 519 735 parameters (core 510 016), the LSTM
    /// agent 516 871 (PyTorch's two bias vectors).
    #[test]
    fn paper_agents_have_the_paper_parameter_counts() {
        let _seeded = crate::seeded_device_lock();
        let device = Backend::Flex.device().unwrap();
        for (core, expected) in [(PongCore::Stpn, 519_735), (PongCore::Lstm, 516_871)] {
            let count = with_agent!(&PongConfig::paper(core), 6, &device, |agent| agent
                .num_params());
            assert_eq!(count, expected, "{core:?}");
        }
        assert_eq!(PongConfig::paper(PongCore::Stpn).iterations(), 2_500);
        // The DeepMind encoder reads 4 stacked frames: 3 more input channels of 16 8×8 kernels.
        for (core, expected) in [(PongCore::Stpn, 519_735), (PongCore::Lstm, 516_871)] {
            let count = with_agent!(&PongConfig::deepmind(core), 6, &device, |agent| agent
                .num_params());
            assert_eq!(count, expected + 3 * 16 * 8 * 8, "{core:?}");
        }
    }

    /// `configs/pong/*_deepmind.json` are [`PongConfig::deepmind`], `*_ppo.json`
    /// [`PongConfig::deepmind_ppo`].
    #[test]
    fn shipped_deepmind_configs_are_the_deepmind_settings() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/pong");
        for (core, hidden) in [
            (PongCore::Stpn, 64),
            (PongCore::Lstm, 48),
            (PongCore::Mlp, 256),
        ] {
            for (suffix, expected) in [
                ("deepmind", PongConfig::deepmind(core)),
                ("ppo", PongConfig::deepmind_ppo(core)),
            ] {
                let file = root.join(format!("{}_h{hidden}_{suffix}.json", name_of(core)));
                let config = PongConfig::load(&file).unwrap();
                assert_eq!(
                    serde_json::to_value(&config).unwrap(),
                    serde_json::to_value(expected).unwrap(),
                    "{}",
                    file.display()
                );
            }
        }
    }

    /// `configs/pong/` holds the paper's settings (64 environments, 10⁸ frames) and the CPU
    /// budget (16 environments, 2·10⁶ frames) for both cores.
    #[test]
    fn shipped_configs_are_the_papers_settings() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/pong");
        for (core, hidden) in [(PongCore::Stpn, 64), (PongCore::Lstm, 48)] {
            for (suffix, envs, steps) in [("", 64, 100_000_000), ("_scaled", 16, 2_000_000)] {
                let name = name_of(core);
                let file = root.join(format!("{name}_h{hidden}{suffix}.json"));
                let config = PongConfig::load(&file).unwrap();
                let mut paper = PongConfig::paper(core);
                (paper.envs, paper.total_steps) = (envs, steps);
                assert_eq!(
                    serde_json::to_value(&config).unwrap(),
                    serde_json::to_value(&paper).unwrap(),
                    "{}",
                    file.display()
                );
            }
        }
    }

    /// Blank 84×84 frames, 6 actions, 5-step episodes with reward 1 for action 0.
    struct Blank(usize);

    impl Env for Blank {
        type Observation = Vec<f32>;
        type Action = usize;

        fn reset(&mut self, _: Option<u64>) -> (Vec<f32>, stpn_envs::env::Info<Vec<f32>>) {
            self.0 = 0;
            (vec![0.0; 84 * 84], stpn_envs::env::Info::empty())
        }

        fn step(&mut self, action: &usize) -> stpn_envs::env::Step<Vec<f32>> {
            self.0 += 1;
            stpn_envs::env::Step {
                observation: vec![0.0; 84 * 84],
                reward: f64::from(*action == 0),
                terminated: self.0 == 5,
                truncated: false,
                info: stpn_envs::env::Info::empty(),
            }
        }

        fn observation_space(&self) -> stpn_envs::env::Space {
            stpn_envs::env::Space::Box {
                low: vec![-1.0; 84 * 84],
                high: vec![1.0; 84 * 84],
                shape: vec![84 * 84],
            }
        }

        fn action_space(&self) -> stpn_envs::env::Space {
            stpn_envs::env::Space::Discrete(6)
        }
    }

    /// The evaluation command's path: the checkpoint's agent on fresh episodes, `eval.json`.
    #[test]
    fn evaluation_loads_the_checkpoint_and_writes_eval_json() {
        let _seeded = crate::seeded_device_lock();
        let run = RunDir::create(
            &std::env::temp_dir().join(format!("stpn-pong-eval-{}", std::process::id())),
        )
        .unwrap();
        let mut config = PongConfig::paper(PongCore::Stpn);
        config.hidden_size = 4;
        run.write_json("config.json", &config).unwrap();
        let device = Backend::Flex.device().unwrap();
        // Checkpoints whose policies prefer action 0 (reward 1 on each of the 5 steps) or
        // action 2 (reward 0): the evaluation follows the checkpoint's weights.
        for (favourite, expected) in [(0usize, 5.0), (2, 0.0)] {
            let mut bias = vec![-20.0f32; 6];
            bias[favourite] = 20.0;
            with_agent!(&config, 6, &device, |agent| {
                let agent = ActorCritic {
                    policy_bias: burn::module::Param::from_tensor(burn::tensor::Tensor::from_data(
                        burn::tensor::TensorData::new(bias, [6]),
                        &device,
                    )),
                    ..agent
                };
                run.save_training(&agent, &stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON), &0)
                    .unwrap()
            });
            let evaluation = evaluate_on(Blank(0), &run, Backend::Flex, 2, true, 0).unwrap();
            assert_eq!((evaluation.episodes, evaluation.mean_length), (2, 5.0));
            assert!(evaluation.greedy && evaluation.energy_per_step > 0.0);
            // Blank frames: the encoder is probed on 200 of them, and no feature varies.
            let encoder = evaluation.encoder.expect("Pong agents have an encoder");
            assert_eq!((encoder.frames, encoder.features_varying), (200, 0.0));
            assert_eq!(
                (evaluation.mean_return, evaluation.std_return),
                (expected, 0.0)
            );
        }
        assert!(run.file("eval.json").exists());
        std::fs::remove_dir_all(&run.path).ok();
    }
}
