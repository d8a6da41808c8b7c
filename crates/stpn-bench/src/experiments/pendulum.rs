//! InvertedPendulum with PPO (paper §4.3; docs/reference.md §5.3): a recurrent or plastic core (STPNf by
//! default: per-synapse Λ Γ, no normalisation, clamp 0.1, H 64) on the 4-number observation,
//! a diagonal Gaussian policy, RLlib's PPO settings ([`stpn_rl::ppo`]).
//!
//! `metrics.csv` has one row per iteration (2 048 steps); `last/` is checkpointed every
//! `checkpoint_every` iterations with the optimiser and the progress. A resumed run continues
//! from the checkpoint's weights with a fresh episode (the simulator's mid-episode state is not
//! saved), so it is not bit-identical to an uninterrupted one.

// Without MuJoCo the driver is reached from the tests only.
#![cfg_attr(not(feature = "mujoco"), allow(dead_code))]

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stpn_envs::env::Env;
use stpn_model::{Backend, LstmConfig, MlpConfig, RecurrentCell, RnnConfig, StpnFConfig};
use stpn_rl::evaluate::evaluate_continuous;
use stpn_rl::ppo::{self, Collector, PpoConfig};
use stpn_rl::{ActorCritic, ActorCriticConfig};

use crate::experiments::{
    Actions, Evaluate, Experiment, ExperimentConfig, Session, checked, name_of,
};
use crate::run_dir::{Evaluation, Metrics, RlProgress, RlSummary, RunDir};
use stpn_rl::checks::positive;

/// The agent's core (docs/reference.md §5.3; all H = 64 in the paper).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum PendulumCore {
    /// STPNf ("stpmlp"): per-synapse Λ Γ, not normalised, bias, clamp 0.1.
    Stpnf,
    /// LSTM (two bias vectors, as PyTorch's).
    Lstm,
    /// Elman RNN (two bias vectors, as PyTorch's).
    Rnn,
    /// One tanh layer, no memory (RLlib's "mlp").
    Mlp,
}

/// One InvertedPendulum run; defaults are the paper's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendulumConfig {
    pub core: PendulumCore,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Environment steps to train for (10⁶ in the paper).
    #[serde(default = "default_total_steps")]
    pub total_steps: u64,
    #[serde(default)]
    pub ppo: PpoConfig,
    /// Gymnasium v5 rewards (0 on the terminating step) instead of v4's (the paper's v2).
    #[serde(default)]
    pub v5_rewards: bool,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_hidden_size() -> usize {
    64
}
fn default_total_steps() -> u64 {
    1_000_000
}
fn default_checkpoint_every() -> usize {
    10
}

impl PendulumConfig {
    pub fn paper(core: PendulumCore) -> Self {
        Self {
            core,
            hidden_size: default_hidden_size(),
            total_steps: default_total_steps(),
            ppo: PpoConfig::default(),
            v5_rewards: false,
            checkpoint_every: default_checkpoint_every(),
            seed: 0,
        }
    }

    pub fn iterations(&self) -> usize {
        (self.total_steps as usize).div_ceil(self.ppo.rollout_length)
    }
}

impl ExperimentConfig for PendulumConfig {
    fn validate(&self) -> Result<()> {
        checked(positive("hidden_size", self.hidden_size))?;
        checked(positive("total_steps", self.total_steps as usize))?;
        checked(positive("checkpoint_every", self.checkpoint_every))?;
        checked(self.ppo.validate())
    }

    fn run_name(&self) -> String {
        format!(
            "{}-h{}-s{}",
            name_of(self.core),
            self.hidden_size,
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
    pub core: PendulumCore,
    pub hidden_size: usize,
    pub params: usize,
    #[serde(flatten)]
    pub progress: RlSummary,
    /// Environment steps when the mean of the last 10 returns first reached 950 (the
    /// environment's reward threshold), if it did.
    pub solved_at_env_steps: Option<u64>,
    pub seed: u64,
    pub backend: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainingState {
    #[serde(flatten)]
    progress: RlProgress,
    solved_at_env_steps: Option<u64>,
    kl_coefficient: f64,
}

pub const METRICS_HEADER: &str = "iteration,env_steps,episodes,mean_return_last10,policy_loss,value_loss,entropy,kl,kl_coefficient,grad_norm,seconds";

/// The InvertedPendulum environment of the run, with its 1 000-step limit.
#[cfg(feature = "mujoco")]
fn environment(
    config: &PendulumConfig,
) -> Result<impl Env<Observation = Vec<f64>, Action = Vec<f64>>> {
    use stpn_envs::pendulum::{InvertedPendulum, RewardVersion};
    let version = if config.v5_rewards {
        RewardVersion::V5
    } else {
        RewardVersion::V4
    };
    InvertedPendulum::gymnasium(version).context("cannot start MuJoCo InvertedPendulum")
}

/// Builds the agent of `config` for `env` on `device` (its core per `config.core`) and evaluates
/// `$body` with it bound to `$agent` (each core is a different type).
macro_rules! with_agent {
    ($config:expr, $env:expr, $device:expr, |$agent:ident| $body:expr) => {{
        let (config, device) = ($config, $device);
        let inputs = $env.observation_space().size();
        // Mean and pre-scale per action dimension.
        let heads = ActorCriticConfig::new(2 * $env.action_space().size());
        let hidden = config.hidden_size;
        match config.core {
            PendulumCore::Stpnf => {
                let core = StpnFConfig::new(inputs, hidden)
                    .with_normalised(false)
                    .with_clamp(Some(0.1))
                    .init(device);
                let $agent = heads.init(core, device);
                $body
            }
            PendulumCore::Lstm => {
                let $agent = heads.init(
                    LstmConfig::new(inputs, hidden)
                        .with_two_biases(true)
                        .init(device),
                    device,
                );
                $body
            }
            PendulumCore::Rnn => {
                let $agent = heads.init(
                    RnnConfig::new(inputs, hidden)
                        .with_two_biases(true)
                        .init(device),
                    device,
                );
                $body
            }
            PendulumCore::Mlp => {
                let $agent = heads.init(MlpConfig::new(inputs, hidden).init(device), device);
                $body
            }
        }
    }};
}

impl Evaluate for Pendulum {
    const EPISODES: usize = 10;
    const ACTIONS: Actions = Actions::Sampled;

    /// Evaluates the last checkpoint of a run on `episodes` fresh episodes (no updates; the paper:
    /// 10 with sampled actions), writes `eval.json` and returns it.
    fn evaluate(
        run: &RunDir,
        backend: Backend,
        episodes: usize,
        greedy: bool,
        seed: u64,
    ) -> Result<Evaluation> {
        #[cfg(feature = "mujoco")]
        {
            let config: PendulumConfig = run.read_json("config.json")?;
            evaluate_on(environment(&config)?, run, backend, episodes, greedy, seed)
        }
        #[cfg(not(feature = "mujoco"))]
        {
            let _ = (run, backend, episodes, greedy, seed);
            bail!(MUJOCO_MISSING)
        }
    }
}

/// [`Evaluate::evaluate`] on `env` (any env with box observations and actions).
pub fn evaluate_on<E>(
    mut env: E,
    run: &RunDir,
    backend: Backend,
    episodes: usize,
    greedy: bool,
    seed: u64,
) -> Result<Evaluation>
where
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    let config: PendulumConfig = run.read_json("config.json")?;
    let device = backend.device()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (result, iteration) = with_agent!(&config, &env, &device, |agent| {
        let (agent, iteration) = run.load_last_model(agent)?;
        let result =
            evaluate_continuous(&agent, &mut env, episodes, greedy, seed, &mut rng, &device);
        (result, iteration)
    });
    let evaluation = Evaluation::of_checkpoint(&result, greedy, seed, iteration);
    run.write_json("eval.json", &evaluation)?;
    Ok(evaluation)
}

/// What a binary without MuJoCo says when asked for InvertedPendulum.
pub const MUJOCO_MISSING: &str = "InvertedPendulum needs MuJoCo, which this binary was built without: run scripts/setup-mujoco, then build stpn-bench with --features mujoco (scripts/stpn does both)";

/// The `pendulum` command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PendulumArgs {
    /// Core, with the paper's settings (without --config; default stpnf).
    #[arg(long, value_enum, conflicts_with = "config")]
    pub core: Option<PendulumCore>,
    /// Budget in environment steps (10⁶ in the paper); may extend a resumed run.
    #[arg(long, alias = "steps")]
    pub env_steps: Option<u64>,
    /// Gymnasium v5 rewards (0 on the terminating step) instead of v4's.
    #[arg(long)]
    pub v5: bool,
}

/// MuJoCo InvertedPendulum with PPO.
pub struct Pendulum;

impl Experiment for Pendulum {
    const NAME: &'static str = "pendulum";
    type Args = PendulumArgs;
    type Config = PendulumConfig;
    type Summary = Summary;

    fn available() -> Result<()> {
        if !cfg!(feature = "mujoco") {
            bail!(MUJOCO_MISSING);
        }
        Ok(())
    }

    fn paper_config(args: &PendulumArgs) -> Result<PendulumConfig> {
        Ok(PendulumConfig::paper(
            args.core.unwrap_or(PendulumCore::Stpnf),
        ))
    }

    fn override_config(args: &PendulumArgs, config: &mut PendulumConfig) {
        config.v5_rewards |= args.v5;
    }

    fn extend_config(args: &PendulumArgs, config: &mut PendulumConfig) {
        if let Some(steps) = args.env_steps {
            config.total_steps = steps;
        }
    }

    fn describe(config: &PendulumConfig) -> String {
        format!(
            "{}, {} environment steps",
            config.run_name(),
            config.total_steps
        )
    }

    /// Trains (or resumes) a run on MuJoCo and returns its summary (also in `summary.json`).
    fn train(config: &PendulumConfig, session: &Session) -> Result<Summary> {
        #[cfg(feature = "mujoco")]
        {
            let env = environment(config)?;
            train_on(env, config, session)
        }
        #[cfg(not(feature = "mujoco"))]
        {
            let _ = (config, session);
            bail!(MUJOCO_MISSING)
        }
    }

    fn summary_line(config: &PendulumConfig, summary: &Summary) -> String {
        format!(
            "{}: {} params, {} env steps ({:.0} steps/s), {} episodes, mean return of the last 10 {:.1}, solved (≥ 950) at {}",
            config.run_name(),
            summary.params,
            summary.progress.env_steps,
            summary.progress.steps_per_second,
            summary.progress.episodes,
            summary.progress.mean_return_last10,
            summary
                .solved_at_env_steps
                .map_or("—".to_string(), |steps| format!("{steps} steps")),
        )
    }
}

/// Trains on `env` (any env with box observations and actions).
pub fn train_on<E>(env: E, config: &PendulumConfig, session: &Session) -> Result<Summary>
where
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    let (device, host) = session.devices(config.seed)?;
    with_agent!(config, &env, &host, |agent| train(
        agent.fork(&device),
        env,
        config,
        session,
        &device
    ))
}

fn train<C, E>(
    agent: ActorCritic<C>,
    env: E,
    config: &PendulumConfig,
    session: &Session,
    device: &Device,
) -> Result<Summary>
where
    C: RecurrentCell,
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    let (run, quiet) = (&session.run, session.quiet);
    let params = agent.num_params();
    let mut agent = agent;
    let mut optimizer = stpn_rl::adam(config.ppo.adam_epsilon);
    let mut state = TrainingState {
        progress: RlProgress::default(),
        solved_at_env_steps: None,
        kl_coefficient: config.ppo.kl_coefficient,
    };
    (agent, optimizer, state) = run.resume_training(agent, optimizer, state, session.resume)?;
    let metrics = Metrics::open(run, METRICS_HEADER, state.progress.iteration)?;
    // Episodes and action draws continue from seeds of their own after a resume.
    let stream = config
        .seed
        .wrapping_mul(1_000_003)
        .wrapping_add(state.progress.iteration as u64);
    let mut collector = Collector::new(env, stream);
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
        (agent, stats) = ppo::iteration(
            agent,
            &mut optimizer,
            &mut collector,
            &config.ppo,
            &mut state.kl_coefficient,
            &mut rng,
            device,
        );
        let at = format_args!("iteration {}", state.progress.iteration + 1);
        session.ensure_finite("policy loss", stats.policy_loss, at)?;
        session.ensure_finite("value loss", stats.value_loss, at)?;
        let seconds = started.elapsed().as_secs_f64();
        let env_steps = state.progress.env_steps + config.ppo.rollout_length as u64;
        let returns: Vec<f64> = collector.finished[episodes_before..]
            .iter()
            .map(|&(episode_return, _)| episode_return)
            .collect();
        // Solved when the mean of the last 10 returns first reaches 950, after any episode.
        let mut window = state.progress.recent_returns.clone();
        for &episode_return in &returns {
            window.push(episode_return);
            if window.is_full() && window.mean() >= 950.0 {
                state.solved_at_env_steps.get_or_insert(env_steps);
            }
        }
        state.progress.record(env_steps, seconds, returns);
        let progress_now = &state.progress;
        let mean_recent = progress_now.recent_returns.mean();
        metrics.append(&format!(
            "{},{},{},{mean_recent:.3},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{seconds:.3}",
            progress_now.iteration,
            progress_now.env_steps,
            progress_now.episodes,
            stats.policy_loss,
            stats.value_loss,
            stats.entropy,
            stats.kl,
            state.kl_coefficient,
            stats.grad_norm
        ))?;
        progress.inc(1);
        progress.set_message(format!("return (last 10) {mean_recent:.1}"));
        let iteration = state.progress.iteration;
        if session.checkpoint_due(iteration, config.checkpoint_every, iterations) {
            run.save_training(&agent, &optimizer, &state)?;
            if quiet {
                tracing::info!("iteration {iteration} return {mean_recent:.1}");
            }
            session.stop_if_interrupted("iteration", iteration)?;
        }
    }
    progress.finish_and_clear();
    let summary = Summary {
        core: config.core,
        hidden_size: config.hidden_size,
        params,
        progress: state.progress.summary(),
        solved_at_env_steps: state.solved_at_env_steps,
        seed: config.seed,
        backend: session.backend.to_string(),
    };
    run.write_json("summary.json", &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every core's agent has the parameter count of docs/reference.md §5.3.
    #[test]
    fn paper_agents_have_the_paper_parameter_counts() {
        let _seeded = crate::seeded_device_lock();
        let device = Backend::Flex.device().unwrap();
        let env = SignTask::default();
        // docs/reference.md §5.3: STPNf 1 027, mlp 515, rnn 4 675, lstm 18 115 (PyTorch's two bias
        // vectors in the LSTM and the RNN).
        for (core, expected) in [
            (PendulumCore::Stpnf, 1_027),
            (PendulumCore::Mlp, 515),
            (PendulumCore::Rnn, 4_675),
            (PendulumCore::Lstm, 18_115),
        ] {
            let count = with_agent!(&PendulumConfig::paper(core), &env, &device, |agent| agent
                .num_params());
            assert_eq!(count, expected, "{core:?}");
        }
        assert_eq!(PendulumConfig::paper(PendulumCore::Stpnf).iterations(), 489);
    }

    /// `configs/pendulum/` holds the paper's settings for every core (10⁶ steps) and the CPU
    /// budget (300 000 steps).
    #[test]
    fn shipped_configs_are_the_papers_settings() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/pendulum");
        for core in [
            PendulumCore::Stpnf,
            PendulumCore::Lstm,
            PendulumCore::Rnn,
            PendulumCore::Mlp,
        ] {
            for (suffix, steps) in [("", 1_000_000), ("_scaled", 300_000)] {
                let file = root.join(format!("{}_h64{suffix}.json", name_of(core)));
                let config = PendulumConfig::load(&file).unwrap();
                let mut paper = PendulumConfig::paper(core);
                paper.total_steps = steps;
                assert_eq!(
                    serde_json::to_value(&config).unwrap(),
                    serde_json::to_value(&paper).unwrap(),
                    "{}",
                    file.display()
                );
            }
        }
    }

    /// PPO through the whole driver (metrics, checkpoint, summary) on a stand-in task with
    /// box observations and actions: the agent must push its action to the sign it is shown.
    #[test]
    fn driver_trains_and_writes_the_run() {
        let _seeded = crate::seeded_device_lock();
        let run = RunDir::create(
            &std::env::temp_dir().join(format!("stpn-pendulum-driver-{}", std::process::id())),
        )
        .unwrap();
        let mut config = PendulumConfig::paper(PendulumCore::Stpnf);
        config.hidden_size = 8;
        config.ppo.rollout_length = 256;
        config.ppo.epochs = 2;
        config.total_steps = 512;
        config.checkpoint_every = 1;
        run.write_json("config.json", &config).unwrap();
        let session = Session::new(run, Backend::Flex, false, true);
        let summary = train_on(SignTask::default(), &config, &session).unwrap();
        let run = session.run;
        assert_eq!(summary.progress.env_steps, 512);
        assert_eq!(summary.progress.episodes, 512 / 4);
        assert!(run.checkpoint("last").is_some());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.file("summary.json")).unwrap())
                .unwrap();
        for field in [
            "env_steps",
            "episodes",
            "mean_return_last10",
            "steps_per_second",
        ] {
            assert!(json.get(field).is_some(), "summary.json lacks {field}");
        }
        assert_eq!(
            std::fs::read_to_string(run.file("metrics.csv"))
                .unwrap()
                .lines()
                .count(),
            3
        );
        // The evaluation command's path: fresh episodes from the last checkpoint.
        let evaluation =
            evaluate_on(SignTask::default(), &run, Backend::Flex, 3, false, 7).unwrap();
        assert_eq!((evaluation.episodes, evaluation.mean_length), (3, 4.0));
        assert!(evaluation.energy_per_step > 0.0 && evaluation.mean_return.is_finite());
        // The evaluation follows the checkpoint: the same one twice gives the same numbers (a
        // freshly drawn model would not); an untrained one gives others.
        let again = evaluate_on(SignTask::default(), &run, Backend::Flex, 3, false, 7).unwrap();
        assert_eq!(evaluation.energy_per_step, again.energy_per_step);
        assert_eq!(evaluation.mean_return, again.mean_return);
        let device = Backend::Flex.device().unwrap();
        with_agent!(&config, &SignTask::default(), &device, |agent| run
            .save_training(&agent, &stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON), &0)
            .unwrap());
        let other = evaluate_on(SignTask::default(), &run, Backend::Flex, 3, false, 7).unwrap();
        assert_ne!(evaluation.energy_per_step, other.energy_per_step);
        let saved: Evaluation = crate::run_dir::read_json(&run.file("eval.json")).unwrap();
        assert_eq!(saved.episodes, 3);
        std::fs::remove_dir_all(&run.path).ok();
    }

    /// Every core trains (PPO updates included) and evaluates with energy above zero.
    #[test]
    fn every_core_trains_and_evaluates() {
        let _seeded = crate::seeded_device_lock();
        for core in [
            PendulumCore::Stpnf,
            PendulumCore::Lstm,
            PendulumCore::Rnn,
            PendulumCore::Mlp,
        ] {
            let run = RunDir::create(&crate::test_support::scratch(
                "pendulum",
                &format!("core-{}", name_of(core)),
            ))
            .unwrap();
            let mut config = PendulumConfig::paper(core);
            config.hidden_size = 8;
            config.ppo.rollout_length = 128;
            config.ppo.epochs = 1;
            config.total_steps = 256;
            run.write_json("config.json", &config).unwrap();
            let session = Session::new(run, Backend::Flex, false, true);
            let summary = train_on(SignTask::default(), &config, &session).unwrap();
            let run = session.run;
            assert_eq!(summary.progress.env_steps, 256, "{core:?}");
            let evaluation =
                evaluate_on(SignTask::default(), &run, Backend::Flex, 2, false, 0).unwrap();
            assert!(
                evaluation.energy_per_step > 0.0 && evaluation.mean_return.is_finite(),
                "{core:?}"
            );
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// Four-step episodes; reward −|a − 3s| for the sign s shown.
    #[derive(Default)]
    struct SignTask {
        step: usize,
        sign: f64,
    }

    impl Env for SignTask {
        type Observation = Vec<f64>;
        type Action = Vec<f64>;

        fn reset(&mut self, _: Option<u64>) -> (Vec<f64>, stpn_envs::env::Info<Vec<f64>>) {
            self.step = 0;
            self.sign = -self.sign.signum().max(0.0) * 2.0 + 1.0;
            (
                vec![self.sign, 0.0, 0.0, 0.0],
                stpn_envs::env::Info::empty(),
            )
        }

        fn step(&mut self, action: &Vec<f64>) -> stpn_envs::env::Step<Vec<f64>> {
            self.step += 1;
            stpn_envs::env::Step {
                observation: vec![self.sign, 0.0, 0.0, 0.0],
                reward: -(action[0] - 3.0 * self.sign).abs(),
                terminated: self.step == 4,
                truncated: false,
                info: stpn_envs::env::Info::empty(),
            }
        }

        fn observation_space(&self) -> stpn_envs::env::Space {
            stpn_envs::env::Space::uniform_box(-1.0, 1.0, vec![4])
        }

        fn action_space(&self) -> stpn_envs::env::Space {
            stpn_envs::env::Space::uniform_box(-3.0, 3.0, vec![1])
        }
    }
}
