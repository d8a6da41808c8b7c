//! PPO with a recurrent core and a diagonal Gaussian policy, as the paper ran it on
//! InvertedPendulum with RLlib (docs/reference.md §5.3).
//!
//! Per iteration: `rollout_length` steps of one environment with the current policy (episodes
//! continue across iterations), GAE(γ, λ), advantages standardised over the batch, then
//! `epochs` passes over minibatches of whole sequences:
//!
//! ```text
//! r = π(a|s) / π_old(a|s)
//! L = −mean min(r Â, clip(r, 1 ± ε) Â) + β·mean KL(π_old ‖ π)
//!     + c_v·mean max((V − R)², (V_old + clip(V − V_old, ±10) − R)²) − c_e·mean H(π)
//! ```
//!
//! β adapts after each iteration (×1.5 when the KL exceeds twice its target 0.01, ×0.5 below
//! half), as RLlib's. The policy head gives a mean and a pre-scale `s` per action dimension; the
//! standard deviation is `softplus(s)` (the reference's distribution, not `exp`). Samples are
//! scaled from [−1, 1] to the action box and clipped there before the env sees them; the
//! log-probabilities are those of the unclipped samples.
//!
//! Recurrence as RLlib's: the rollout is cut into sequences of at most `sequence_length` steps
//! that never cross an episode boundary; each starts from the core state stored when it began,
//! and the padding of short sequences is masked out of every mean. The rollout runs on the plain
//! model; the update on the autodiff one.

use burn::module::Module;
use burn::optim::module_optimizer::ModuleOptimizer;
use burn::tensor::activation::softplus;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
pub(crate) use rand_distr_free::standard_normal;
use serde::{Deserialize, Serialize};
use stpn_envs::env::Env;
use stpn_model::params::host_values;
use stpn_model::{CellState, RecurrentCell};

use crate::ActorCritic;
use crate::clip::clipped_step;
use crate::returns::{Next, gae};
use crate::sequences::{SequenceCutter, contiguous_minibatches, pack};

/// The algorithm's settings; defaults are the paper's (docs/reference.md §5.3).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Environment steps collected per iteration (RLlib's `rollout_fragment_length` and
    /// `train_batch_size`, 2048).
    pub rollout_length: usize,
    /// Steps per minibatch (whole sequences are taken until it is reached).
    pub minibatch_size: usize,
    /// Passes over the batch per iteration (RLlib's `num_sgd_iter`, 10).
    pub epochs: usize,
    /// Discount factor γ of the returns (0.99).
    pub gamma: f64,
    /// GAE's λ (RLlib's `lambda`, 0.95).
    pub gae_lambda: f64,
    /// Clip range ε of the probability ratio (RLlib's `clip_param`, 0.2).
    pub clip: f64,
    /// Clip range of the value change from the old value (RLlib's `vf_clip_param`, 10).
    pub value_clip: f64,
    /// Weight c_v of the value loss (RLlib's `vf_loss_coeff`, 1.0).
    pub value_coefficient: f64,
    /// Weight c_e of the entropy bonus (RLlib's `entropy_coeff`, 0.01).
    pub entropy_coefficient: f64,
    /// Initial KL penalty weight β (RLlib's `kl_coeff`, 0.2), adapted after each iteration.
    pub kl_coefficient: f64,
    /// KL divergence that β's adaptation aims at (RLlib's `kl_target`, 0.01).
    pub kl_target: f64,
    /// Maximum global L2 norm of the gradients (RLlib's `grad_clip`, 40).
    pub grad_clip: f64,
    /// Adam's learning rate, constant (3e-4).
    pub learning_rate: f64,
    /// The longest sequence of backpropagation through time (RLlib's `max_seq_len`).
    pub sequence_length: usize,
    /// Adam's ε: PyTorch's default, which the authors' RLlib used (docs/authors-rl.md §2).
    pub adam_epsilon: f64,
    /// Bootstrap an episode cut by the environment's time limit from the value of its last
    /// observation. Off: the authors' RLlib treated the limit as a termination (its sampler
    /// stores `done` at the limit and never reads `TimeLimit.truncated`, RLlib 1.10
    /// `rllib/evaluation/sampler.py` lines 885–888; docs/authors-rl.md §4).
    pub bootstrap_truncation: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            rollout_length: 2048,
            minibatch_size: 64,
            epochs: 10,
            gamma: 0.99,
            gae_lambda: 0.95,
            clip: 0.2,
            value_clip: 10.0,
            value_coefficient: 1.0,
            entropy_coefficient: 0.01,
            kl_coefficient: 0.2,
            kl_target: 0.01,
            grad_clip: 40.0,
            learning_rate: 3e-4,
            sequence_length: 20,
            adam_epsilon: crate::TORCH_ADAM_EPSILON,
            bootstrap_truncation: false,
        }
    }
}

impl PpoConfig {
    /// Every field in its range; the message names the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        use crate::checks::{non_negative_finite, positive, positive_finite, unit_interval};
        positive("ppo.rollout_length", self.rollout_length)?;
        positive("ppo.minibatch_size", self.minibatch_size)?;
        positive("ppo.epochs", self.epochs)?;
        positive("ppo.sequence_length", self.sequence_length)?;
        unit_interval("ppo.gamma", self.gamma)?;
        unit_interval("ppo.gae_lambda", self.gae_lambda)?;
        positive_finite("ppo.clip", self.clip)?;
        positive_finite("ppo.value_clip", self.value_clip)?;
        non_negative_finite("ppo.value_coefficient", self.value_coefficient)?;
        non_negative_finite("ppo.entropy_coefficient", self.entropy_coefficient)?;
        non_negative_finite("ppo.kl_coefficient", self.kl_coefficient)?;
        positive_finite("ppo.kl_target", self.kl_target)?;
        positive_finite("ppo.grad_clip", self.grad_clip)?;
        positive_finite("ppo.learning_rate", self.learning_rate)?;
        positive_finite("ppo.adam_epsilon", self.adam_epsilon)
    }
}

/// A standard normal draw (Box–Muller), so that no distribution crate is needed.
mod rand_distr_free {
    use rand::Rng;

    pub fn standard_normal(rng: &mut impl Rng) -> f64 {
        let uniform: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let angle: f64 = rng.random::<f64>() * std::f64::consts::TAU;
        (-2.0 * uniform.ln()).sqrt() * angle.cos()
    }
}

/// `log N(x; μ, σ)` summed over action dimensions.
fn gaussian_log_prob(action: &[f64], mean: &[f64], std: &[f64]) -> f64 {
    action
        .iter()
        .zip(mean)
        .zip(std)
        .map(|((a, m), s)| {
            -0.5 * ((a - m) / s).powi(2) - s.ln() - 0.5 * (std::f64::consts::TAU).ln()
        })
        .sum()
}

/// One iteration's experience, in step order, with what the update needs.
pub struct Batch<S> {
    /// Number of steps `N` (the rollout length).
    pub steps: usize,
    /// Numbers per observation `O`.
    pub observation_size: usize,
    /// Action dimensions `A`.
    pub action_size: usize,
    /// `[N, O]`.
    pub observations: Vec<f32>,
    /// Unclipped samples, `[N, A]`.
    pub actions: Vec<f32>,
    /// Log-probabilities of the samples under the old policy, `[N]`.
    pub log_probs: Vec<f32>,
    /// The old value estimates `V_old`, `[N]`.
    pub values: Vec<f32>,
    /// The old policy's means, `[N, A]` (for the KL term).
    pub means: Vec<f32>,
    /// The old policy's standard deviations, `[N, A]` (for the KL term).
    pub stds: Vec<f32>,
    /// GAE advantages, standardised over the batch, `[N]`.
    pub advantages: Vec<f32>,
    /// Value targets `R` (unstandardised advantage + `V_old`), `[N]`.
    pub value_targets: Vec<f32>,
    /// `(first step, length)` of every sequence, and the core state it starts from.
    pub sequences: Vec<(usize, usize)>,
    /// Core state entering each sequence (one row each), in the order of `sequences`.
    pub states: Vec<S>,
}

/// An environment with its running episode, and the core state of the agent in it.
pub struct Collector<E: Env, S> {
    /// The environment (with its time limit), reset by the collector when an episode ends.
    pub env: E,
    observation: Vec<f64>,
    state: Option<S>,
    episode_return: f64,
    episode_length: usize,
    /// Returns and lengths of the episodes finished so far.
    pub finished: Vec<(f64, usize)>,
    /// Environment steps taken so far.
    pub env_steps: u64,
}

impl<E, S> Collector<E, S>
where
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    /// Starts the first episode of `env` with a reset seeded by `seed`.
    pub fn new(mut env: E, seed: u64) -> Self {
        let observation = env.reset(Some(seed)).0;
        Self {
            env,
            observation,
            state: None,
            episode_return: 0.0,
            episode_length: 0,
            finished: Vec::new(),
            env_steps: 0,
        }
    }
}

/// The action box of an environment: low and high per dimension.
fn action_box<E: Env>(env: &E) -> (Vec<f64>, Vec<f64>) {
    match env.action_space() {
        stpn_envs::env::Space::Box { low, high, .. } => (low, high),
        other => panic!("PPO here needs a continuous (box) action space, got {other:?}"),
    }
}

/// RLlib's `normalize_actions`: the policy's action in [−1, 1] mapped to [low, high], then
/// clipped to the box.
pub(crate) fn normalize_action(action: &[f64], low: &[f64], high: &[f64]) -> Vec<f64> {
    action
        .iter()
        .zip(low.iter().zip(high))
        .map(|(a, (l, h))| (l + (a + 1.0) * (h - l) / 2.0).clamp(*l, *h))
        .collect()
}

/// Mean and standard deviation `[N, A]` of the policy from the heads' output `[N, 2A]`.
pub(crate) fn policy_parameters(output: Tensor<2>, action_size: usize) -> (Tensor<2>, Tensor<2>) {
    let mean = output.clone().narrow(1, 0, action_size);
    let std = softplus(output.narrow(1, action_size, action_size), 1.0);
    (mean, std)
}

/// Runs `config.rollout_length` steps with the plain model `agent` and returns the batch with
/// its advantages and value targets.
pub fn collect<C, E>(
    agent: &ActorCritic<C>,
    collector: &mut Collector<E, C::State>,
    config: &PpoConfig,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Batch<C::State>
where
    C: RecurrentCell,
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    let (low, high) = action_box(&collector.env);
    let action_size = low.len();
    let observation_size = collector.observation.len();
    let steps = config.rollout_length;
    let mut batch = Batch {
        steps,
        observation_size,
        action_size,
        observations: Vec::with_capacity(steps * observation_size),
        actions: Vec::with_capacity(steps * action_size),
        log_probs: Vec::with_capacity(steps),
        values: Vec::with_capacity(steps),
        means: Vec::with_capacity(steps * action_size),
        stds: Vec::with_capacity(steps * action_size),
        advantages: vec![0.0; steps],
        value_targets: vec![0.0; steps],
        sequences: Vec::new(),
        states: Vec::new(),
    };
    let rewards_and_next = {
        let mut rewards = Vec::with_capacity(steps);
        // What follows each step, for GAE.
        let mut next = Vec::with_capacity(steps);
        let evaluate = |observation: &[f64], state: C::State| {
            let input = Tensor::<2>::from_data(
                TensorData::new(
                    observation.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                    [1, observation.len()],
                ),
                device,
            );
            let (hidden, next_state) = agent.core_step(agent.features(input), state);
            let (output, value) = agent.heads(hidden);
            (output, value, next_state)
        };
        let mut cutter = SequenceCutter::new(config.sequence_length);
        for step in 0..steps {
            let state = collector
                .state
                .take()
                .unwrap_or_else(|| agent.core.init_state(1));
            if cutter.starts(step) {
                batch.states.push(state.clone());
            }
            let (output, value, next_state) = evaluate(&collector.observation, state);
            let (mean, std) = policy_parameters(output, action_size);
            let mean = host_values::<f64, 2>(mean);
            let std = host_values::<f64, 2>(std);
            let action: Vec<f64> = mean
                .iter()
                .zip(&std)
                .map(|(m, s)| m + s * standard_normal(rng))
                .collect();
            let env_action = normalize_action(&action, &low, &high);
            batch
                .observations
                .extend(collector.observation.iter().map(|&x| x as f32));
            batch.actions.extend(action.iter().map(|&a| a as f32));
            batch
                .log_probs
                .push(gaussian_log_prob(&action, &mean, &std) as f32);
            batch.values.push(host_values::<f32, 1>(value)[0]);
            batch.means.extend(mean.iter().map(|&m| m as f32));
            batch.stds.extend(std.iter().map(|&s| s as f32));

            let outcome = collector.env.step(&env_action);
            collector.env_steps += 1;
            collector.episode_return += outcome.reward;
            collector.episode_length += 1;
            rewards.push(outcome.reward);
            let ended = outcome.terminated || outcome.truncated;
            let bootstrap = if outcome.truncated {
                config.bootstrap_truncation
            } else {
                !outcome.terminated && step + 1 == steps
            };
            next.push(if bootstrap {
                // The value of the observation the episode (or the fragment) stopped at.
                let (_, value, _) = evaluate(&outcome.observation, next_state.clone());
                Next::Bootstrap(host_values::<f64, 1>(value)[0])
            } else if ended {
                Next::EpisodeEnd
            } else {
                Next::Step
            });
            if ended {
                collector
                    .finished
                    .push((collector.episode_return, collector.episode_length));
                collector.episode_return = 0.0;
                collector.episode_length = 0;
                collector.observation = collector.env.reset(None).0;
                collector.state = None;
            } else {
                collector.observation = outcome.observation;
                collector.state = Some(next_state);
            }
            batch
                .sequences
                .extend(cutter.closes(step, ended, step + 1 == steps));
        }
        (rewards, next)
    };
    let (rewards, next) = rewards_and_next;
    let values: Vec<f64> = batch.values.iter().map(|&v| v as f64).collect();
    let (advantages, targets) = gae(&rewards, &values, &next, config.gamma, config.gae_lambda);
    batch.advantages = advantages.iter().map(|&a| a as f32).collect();
    batch.value_targets = targets.iter().map(|&t| t as f32).collect();
    // Standardised over the batch, as RLlib's `standardize_fields`: (A − mean) / max(1e-4, std)
    // (RLlib 1.10 `rllib/utils/sgd.py` line 22).
    let count = steps as f64;
    let mean = batch.advantages.iter().map(|&a| a as f64).sum::<f64>() / count;
    let variance = batch
        .advantages
        .iter()
        .map(|&a| (a as f64 - mean).powi(2))
        .sum::<f64>()
        / count;
    let scale = 1.0 / variance.sqrt().max(1e-4);
    for advantage in &mut batch.advantages {
        *advantage = ((*advantage as f64 - mean) * scale) as f32;
    }
    batch
}

/// The statistics of one update.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Clipped surrogate loss `−mean min(r Â, clip(r, 1 ± ε) Â)`.
    pub policy_loss: f64,
    /// Clipped value loss, before the weight c_v.
    pub value_loss: f64,
    /// Mean entropy of the Gaussian policy (nats), before the weight c_e.
    pub entropy: f64,
    /// Mean `KL(π_old ‖ π)` over the real steps.
    pub kl: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Optimiser steps taken in the iteration.
    pub updates: usize,
}

/// The loss of one minibatch of sequences (indices into `batch.sequences`) under the autodiff
/// model `agent`, and its statistics.
pub fn minibatch_loss<C: RecurrentCell>(
    agent: &ActorCritic<C>,
    batch: &Batch<C::State>,
    chosen: &[usize],
    config: &PpoConfig,
    kl_coefficient: f64,
    device: &Device,
) -> (Tensor<1>, UpdateStats) {
    let length = config.sequence_length;
    let count = chosen.len();
    let (observation_size, action_size) = (batch.observation_size, batch.action_size);
    let (packed, mask) = pack(
        &batch.sequences,
        chosen,
        length,
        &[
            (&batch.observations, observation_size),
            (&batch.actions, action_size),
            (&batch.means, action_size),
            (&batch.stds, action_size),
            (&batch.log_probs, 1),
            (&batch.advantages, 1),
            (&batch.value_targets, 1),
            (&batch.values, 1),
        ],
    );
    let [
        observations,
        actions,
        old_means,
        old_stds,
        old_log_probs,
        advantages,
        value_targets,
        old_values,
    ]: [Vec<f32>; 8] = packed.try_into().expect("eight columns");
    // Padding gets σ = 1 so that the (masked) KL term stays finite.
    let old_stds: Vec<f32> = old_stds
        .iter()
        .zip(
            mask.iter()
                .flat_map(|&m| std::iter::repeat_n(m, action_size)),
        )
        .map(|(&s, valid)| if valid { s } else { 1.0 })
        .collect();
    let rows = length * count;
    let matrix = |values: Vec<f32>, width: usize| {
        Tensor::<2>::from_data(TensorData::new(values, [rows, width]), device)
    };
    let vector = |values: Vec<f32>| Tensor::<1>::from_data(TensorData::new(values, [rows]), device);
    let valid = Tensor::<1, Bool>::from_data(TensorData::new(mask.clone(), [rows]), device).float();
    let valid_count = mask.iter().filter(|&&m| m).count().max(1) as f64;
    // Not `div_scalar`: its backward takes the reciprocal in float32 (Burn 0.22).
    let masked_mean =
        |values: Tensor<1>| (values * valid.clone()).sum().mul_scalar(1.0 / valid_count);

    let state = C::State::cat(chosen.iter().map(|&s| batch.states[s].clone()).collect());
    let inputs = Tensor::<3>::from_data(
        TensorData::new(observations, [length, count, observation_size]),
        device,
    );
    // The padding of short sequences is masked out of every mean: cores that can skip it do.
    let lengths: Vec<usize> = chosen.iter().map(|&s| batch.sequences[s].1).collect();
    let outputs = agent.padded_sequence(inputs, state, &lengths);
    let (output, values) = agent.heads(outputs.reshape([rows, agent.core.hidden_size()]));
    let (mean, std) = policy_parameters(output, action_size);
    let actions = matrix(actions, action_size);
    let log_std = std.clone().log();
    let log_prob = ((actions - mean.clone()) / std.clone())
        .powi_scalar(2)
        .mul_scalar(-0.5)
        - log_std.clone()
        - (0.5 * std::f64::consts::TAU.ln());
    let log_prob: Tensor<1> = log_prob.sum_dim(1).reshape([rows]);
    let ratio = (log_prob - vector(old_log_probs)).exp();
    let advantages = vector(advantages);
    let surrogate = (ratio.clone() * advantages.clone())
        .min_pair(ratio.clamp(1.0 - config.clip, 1.0 + config.clip) * advantages);
    let policy_loss = masked_mean(surrogate).neg();
    // KL(old ‖ new) of diagonal Gaussians, summed over action dimensions.
    let (old_means, old_stds) = (
        matrix(old_means, action_size),
        matrix(old_stds, action_size),
    );
    let kl = (log_std.clone() - old_stds.clone().log()
        + (old_stds.powi_scalar(2) + (old_means - mean).powi_scalar(2))
            / std.powi_scalar(2).mul_scalar(2.0)
        - 0.5)
        .sum_dim(1)
        .reshape([rows]);
    let kl = masked_mean(kl);
    let entropy = (log_std + 0.5 * (1.0 + std::f64::consts::TAU.ln()))
        .sum_dim(1)
        .reshape([rows]);
    let entropy = masked_mean(entropy);
    let (value_targets, old_values) = (vector(value_targets), vector(old_values));
    let unclipped = (values.clone() - value_targets.clone()).powi_scalar(2);
    let clipped = (old_values.clone()
        + (values - old_values).clamp(-config.value_clip, config.value_clip)
        - value_targets)
        .powi_scalar(2);
    let value_loss = masked_mean(unclipped.max_pair(clipped));
    let stats = UpdateStats {
        policy_loss: policy_loss.clone().into_scalar::<f64>(),
        value_loss: value_loss.clone().into_scalar::<f64>(),
        entropy: entropy.clone().into_scalar::<f64>(),
        kl: kl.clone().into_scalar::<f64>(),
        grad_norm: 0.0,
        updates: 1,
    };
    let loss = policy_loss
        + kl.mul_scalar(kl_coefficient)
        + value_loss.mul_scalar(config.value_coefficient)
        - entropy.mul_scalar(config.entropy_coefficient);
    (loss, stats)
}

/// One PPO iteration: a rollout with the plain copy of `agent`, then `config.epochs` passes of
/// minibatch updates (gradients clipped by global norm), then the KL coefficient's adaptation.
/// Returns the updated agent and the mean statistics of all its optimiser steps.
pub fn iteration<C, E>(
    agent: ActorCritic<C>,
    optimizer: &mut ModuleOptimizer,
    collector: &mut Collector<E, C::State>,
    config: &PpoConfig,
    kl_coefficient: &mut f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> (ActorCritic<C>, UpdateStats)
where
    C: RecurrentCell,
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    let plain = agent.valid();
    let plain_device = plain.value_bias.val().device();
    let batch = collect(&plain, collector, config, rng, &plain_device);
    let mut agent = agent;
    // RLlib's minibatches: fixed runs of whole sequences, the same in every epoch, in a new
    // order each epoch, one Adam step each (RLlib 1.10 `rllib/execution/train_ops.py` lines
    // 253–266, 326–337; `rllib/policy/sample_batch.py` `_slice`, lines 886–904; docs/authors-rl.md §3).
    let mut groups = contiguous_minibatches(&batch.sequences, batch.steps, config.minibatch_size);
    let mut steps = Vec::new();
    for _ in 0..config.epochs {
        groups.shuffle(rng);
        for chosen in &groups {
            let (loss, mut stats) =
                minibatch_loss(&agent, &batch, chosen, config, *kl_coefficient, device);
            (agent, stats.grad_norm) = clipped_step(
                agent,
                optimizer,
                loss,
                config.learning_rate,
                config.grad_clip,
            );
            steps.push(stats);
        }
    }
    // Means over every step of the iteration; the KL one drives the coefficient, as RLlib's
    // learner statistics do (RLlib 1.10 `rllib/utils/metrics/learner_info.py` lines 56–67,
    // `rllib/agents/ppo/ppo.py` lines 104–131).
    let mean = |field: fn(&UpdateStats) -> f64| crate::mean_over(&steps, field);
    let stats = UpdateStats {
        policy_loss: mean(|s| s.policy_loss),
        value_loss: mean(|s| s.value_loss),
        entropy: mean(|s| s.entropy),
        kl: mean(|s| s.kl),
        grad_norm: mean(|s| s.grad_norm),
        updates: steps.len(),
    };
    *kl_coefficient = adapt_kl_coefficient(*kl_coefficient, stats.kl, config.kl_target);
    (agent, stats)
}

/// RLlib's adaptive KL coefficient, after an iteration whose mean KL was `kl`.
pub fn adapt_kl_coefficient(coefficient: f64, kl: f64, target: f64) -> f64 {
    if kl > 2.0 * target {
        coefficient * 1.5
    } else if kl < 0.5 * target {
        coefficient * 0.5
    } else {
        coefficient
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn gaussian_log_probability() {
        let value = gaussian_log_prob(&[0.5], &[0.0], &[1.0]);
        assert!((value - (-0.125 - 0.5 * std::f64::consts::TAU.ln())).abs() < 1e-12);
    }

    #[test]
    fn normal_draws_have_unit_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let draws: Vec<f64> = (0..40_000).map(|_| standard_normal(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let variance = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(
            mean.abs() < 0.02 && (variance - 1.0).abs() < 0.03,
            "{mean} {variance}"
        );
    }

    /// A two-step memory task: the sign shown at the first step must be answered at the second
    /// (reward 1 − |a − 3c| / 6). Only a recurrent agent can do better than 0.5 on average.
    struct Recall {
        rng: stpn_envs::env::EnvRng,
        sign: f64,
        step: usize,
    }

    impl Env for Recall {
        type Observation = Vec<f64>;
        type Action = Vec<f64>;

        fn reset(&mut self, seed: Option<u64>) -> (Vec<f64>, stpn_envs::env::Info<Vec<f64>>) {
            use rand::Rng;
            self.rng.reseed(seed);
            self.sign = if self.rng.0.random_bool(0.5) {
                1.0
            } else {
                -1.0
            };
            self.step = 0;
            (vec![self.sign, 1.0], stpn_envs::env::Info::empty())
        }

        fn step(&mut self, action: &Vec<f64>) -> stpn_envs::env::Step<Vec<f64>> {
            self.step += 1;
            let reward = if self.step == 2 {
                1.0 - (action[0] - 3.0 * self.sign).abs() / 6.0
            } else {
                0.0
            };
            stpn_envs::env::Step {
                observation: vec![0.0, 0.0],
                reward,
                terminated: self.step == 2,
                truncated: false,
                info: stpn_envs::env::Info::empty(),
            }
        }

        fn observation_space(&self) -> stpn_envs::env::Space {
            stpn_envs::env::Space::uniform_box(-1.0, 1.0, vec![2])
        }

        fn action_space(&self) -> stpn_envs::env::Space {
            stpn_envs::env::Space::uniform_box(-3.0, 3.0, vec![1])
        }
    }

    #[test]
    fn recurrent_ppo_learns_to_recall() {
        let device = stpn_model::Backend::Flex.device().unwrap().autodiff();
        device.seed(2);
        let core = stpn_model::LstmConfig::new(2, 8).init(&device);
        let mut agent = crate::ActorCriticConfig::new(2).init(core, &device);
        let config = PpoConfig {
            rollout_length: 256,
            epochs: 4,
            learning_rate: 3e-3,
            ..PpoConfig::default()
        };
        let mut optimizer = crate::adam(crate::TORCH_ADAM_EPSILON);
        let env = Recall {
            rng: Default::default(),
            sign: 1.0,
            step: 0,
        };
        let mut collector = Collector::new(env, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut kl_coefficient = config.kl_coefficient;
        let mean_return = |finished: &[(f64, usize)]| {
            finished.iter().map(|(r, _)| r).sum::<f64>() / finished.len() as f64
        };
        for _ in 0..40 {
            let stats;
            (agent, stats) = iteration(
                agent,
                &mut optimizer,
                &mut collector,
                &config,
                &mut kl_coefficient,
                &mut rng,
                &device,
            );
            // RLlib's count: rollout / minibatch size minibatches in every epoch.
            assert_eq!(stats.updates, 256 / 64 * 4);
        }
        let early = mean_return(&collector.finished[..128]);
        let late = mean_return(&collector.finished[collector.finished.len() - 128..]);
        assert!(collector.finished.iter().all(|&(_, length)| length == 2));
        assert!(
            late > 0.8 && late > early + 0.2,
            "early {early}, late {late}"
        );
    }

    #[test]
    fn kl_coefficient_adapts_like_rllib() {
        assert_eq!(adapt_kl_coefficient(0.2, 0.05, 0.01), 0.30000000000000004);
        assert_eq!(adapt_kl_coefficient(0.2, 0.001, 0.01), 0.1);
        assert_eq!(adapt_kl_coefficient(0.2, 0.01, 0.01), 0.2);
    }
}
