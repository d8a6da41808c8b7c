//! The maze's A2C variant, as Miconi's backpropamine code and the STPN reference run it (docs/reference.md
//! §4.2): a batch of independent 200-step episodes, backpropagation through each whole episode,
//!
//! ```text
//! R_t = r_t + γ R_{t+1}  (R_T = 0, γ = 0.9)        δ_{b,t} = R_{b,t} − V_{·,t}
//! L_v   = Σ_t Σ_b δ²_{b,t} / B
//! L_pg  = −Σ_t Σ_b log π(a_{b,t}) · stopgrad(δ_{b,t}) / B
//! L_pen = c Σ_t Σ_b Σ_a π(a)² / B                   (a concentration penalty, c = 0.03)
//! L     = (L_pen + L_pg + 0.1 L_v) / T
//! ```
//!
//! The reference's baseline `V_{·,t}` is the value of batch element 0, for every episode
//! ([`Baseline::Shared`], the paper's); [`Baseline::PerEpisode`] uses each episode's own value.
//! The optimiser (Adam ε 1e-4, global-norm clipping 4, no update in the first 101 iterations)
//! belongs to the caller.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stpn_envs::env::Env;
use stpn_envs::maze::{self, Maze};
use stpn_model::RecurrentCell;
use stpn_model::kernel::Recording;
use stpn_model::params::host_values;

use crate::ActorCritic;

/// Which value the advantage subtracts.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The value of batch element 0 for every episode (the reference; only `V_0` is trained).
    Shared,
    /// Each episode's own value (the textbook advantage).
    PerEpisode,
}

/// The loss's constants (docs/reference.md §4.2).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Discount factor γ of the returns (the reference's `--gr`, 0.9).
    pub gamma: f64,
    /// Weight of the value loss L_v (0.1).
    pub value_coefficient: f64,
    /// Weight c of the concentration penalty Σ π(a)², which the reference calls "entropy" (0.03).
    pub concentration_penalty: f64,
    /// Which value the advantage subtracts (the reference's: [`Baseline::Shared`]).
    pub baseline: Baseline,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            gamma: 0.9,
            value_coefficient: 0.1,
            concentration_penalty: 0.03,
            baseline: Baseline::Shared,
        }
    }
}

impl LossConfig {
    /// Every field in its range; the message names the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        use crate::checks::{non_negative_finite, unit_interval};
        unit_interval("loss.gamma", self.gamma)?;
        non_negative_finite("loss.value_coefficient", self.value_coefficient)?;
        non_negative_finite("loss.concentration_penalty", self.concentration_penalty)
    }
}

/// One batch of episodes, time-major `[T, B, ·]`.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Steps per episode `T` (200).
    pub steps: usize,
    /// Episodes `B`, one per maze.
    pub batch: usize,
    /// Observations the actions were chosen on, `[T, B, 17]`.
    pub observations: Vec<f32>,
    /// Actions taken (0 up, 1 down, 2 left, 3 right), `[T, B]`.
    pub actions: Vec<i64>,
    /// Rewards received (0 or 10), `[T, B]`.
    pub rewards: Vec<f32>,
    /// The policy's probabilities during the rollout, `[T, B, A]`.
    pub probabilities: Vec<f32>,
    /// Energy of a step summed over the units (docs/reference.md §2.3), mean over steps and episodes, when
    /// asked for.
    pub energy_per_step: Option<f64>,
    /// The core's forward over the episodes, kept for the update's backward, when the core runs on
    /// the host kernel and the energy was not asked for ([`RecurrentCell::host_kernel`]).
    pub core_forward: Option<Recording<f32>>,
}

/// How a rollout acts and what it measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct RolloutOptions {
    /// The most probable action instead of a sample (evaluation only; training samples).
    pub greedy: bool,
    /// Measure the energy of every step.
    pub energy: bool,
}

impl Rollout {
    /// Mean over the batch of each episode's total reward.
    pub fn mean_episode_reward(&self) -> f64 {
        self.rewards.iter().map(|&r| r as f64).sum::<f64>() / self.batch as f64
    }
}

/// Samples an index from probabilities by inverse CDF.
pub(crate) fn sample(probabilities: &[f32], rng: &mut ChaCha8Rng) -> usize {
    let draw: f32 = rng.random();
    let mut cumulative = 0.0;
    for (index, probability) in probabilities.iter().enumerate() {
        cumulative += probability;
        if draw < cumulative {
            return index;
        }
    }
    probabilities.len() - 1
}

/// The most probable action.
pub(crate) fn most_probable(probabilities: &[f32]) -> usize {
    (0..probabilities.len())
        .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        .unwrap_or(0)
}

/// Runs one episode in each of `batch` mazes with the policy of `agent` (a plain, non-autodiff
/// model), the mazes reset with seeds `episode_seed(b)`, actions drawn from `rng`.
pub fn rollout<C: RecurrentCell>(
    agent: &ActorCritic<C>,
    batch: usize,
    episode_seed: impl Fn(usize) -> u64,
    rng: &mut ChaCha8Rng,
    options: RolloutOptions,
    device: &Device,
) -> Rollout {
    let steps = maze::EPISODE_LENGTH;
    let width = maze::OBSERVATION_SIZE;
    let mut envs: Vec<Maze> = (0..batch).map(|_| Maze::new()).collect();
    let mut observations: Vec<f32> = Vec::with_capacity(steps * batch * width);
    let mut current: Vec<f32> = envs
        .iter_mut()
        .enumerate()
        .flat_map(|(index, env)| env.reset(Some(episode_seed(index))).0)
        .collect();
    let mut actions = Vec::with_capacity(steps * batch);
    let mut rewards = Vec::with_capacity(steps * batch);
    let mut all_probabilities = Vec::with_capacity(steps * batch * maze::ACTIONS);
    let mut state = agent.core.init_state(batch);
    // The energy reads the state as tensors: measured rollouts step the core as tensors.
    let mut core_forward = match (options.energy, agent.core.host_kernel()) {
        (false, Some(kernel)) => Some(kernel.recording(steps, batch)),
        _ => None,
    };
    let mut energy = 0f64;
    for _ in 0..steps {
        observations.extend_from_slice(&current);
        let input =
            Tensor::<2>::from_data(TensorData::new(current.clone(), [batch, width]), device);
        let input = agent.features(input);
        let hidden = if let Some(recording) = core_forward.as_mut() {
            let features = host_values::<f32, 2>(input);
            let hidden = recording.step(&features).to_vec();
            Tensor::<2>::from_data(
                TensorData::new(hidden, [batch, agent.core.hidden_size()]),
                device,
            )
        } else {
            if options.energy {
                energy += agent
                    .core
                    .energy(input.clone(), &state)
                    .sum()
                    .into_scalar::<f64>();
            }
            let (hidden, next_state) = agent.core_step(input, state);
            state = next_state;
            hidden
        };
        let (logits, _) = agent.heads(hidden);
        let probabilities = host_values::<f32, 2>(softmax(logits, 1));
        all_probabilities.extend_from_slice(&probabilities);
        current.clear();
        for (index, env) in envs.iter_mut().enumerate() {
            let policy = &probabilities[index * maze::ACTIONS..(index + 1) * maze::ACTIONS];
            let action = if options.greedy {
                most_probable(policy)
            } else {
                sample(policy, rng)
            };
            let step = env.step(&action);
            actions.push(action as i64);
            rewards.push(step.reward as f32);
            current.extend_from_slice(&step.observation);
        }
    }
    Rollout {
        steps,
        batch,
        observations,
        actions,
        rewards,
        probabilities: all_probabilities,
        energy_per_step: options.energy.then(|| energy / (steps * batch) as f64),
        core_forward,
    }
}

/// `R_t = r_t + γ R_{t+1}`, `R_T = 0`, per episode, `[T, B]`.
pub fn discounted_returns(rollout: &Rollout, gamma: f64) -> Vec<f32> {
    let (steps, batch) = (rollout.steps, rollout.batch);
    let mut returns = vec![0f32; steps * batch];
    let mut running = vec![0f64; batch];
    for step in (0..steps).rev() {
        for episode in 0..batch {
            let at = step * batch + episode;
            running[episode] = rollout.rewards[at] as f64 + gamma * running[episode];
            returns[at] = running[episode] as f32;
        }
    }
    returns
}

/// Logits `[T·B, A]` and values `[T·B]` of the rollout's observations run through the core as
/// one sequence from the zero state; the backward starts from `core_forward` (the rollout's,
/// [`Rollout::core_forward`]) when given.
pub fn sequence_heads<C: RecurrentCell>(
    agent: &ActorCritic<C>,
    rollout: &Rollout,
    core_forward: Option<Recording<f32>>,
    device: &Device,
) -> (Tensor<2>, Tensor<1>) {
    let (steps, batch) = (rollout.steps, rollout.batch);
    let observations = Tensor::<3>::from_data(
        TensorData::new(
            rollout.observations.clone(),
            [steps, batch, maze::OBSERVATION_SIZE],
        ),
        device,
    );
    let outputs = match core_forward {
        Some(recording) => agent.recorded_sequence(observations, recording),
        None => agent.sequence(observations, agent.core.init_state(batch)),
    };
    let hidden = agent.core.hidden_size();
    agent.heads(outputs.reshape([steps * batch, hidden]))
}

/// The terms of the loss, for logging.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LossParts {
    /// Policy-gradient term L_pg, before the division by `T`.
    pub policy: f64,
    /// Value term L_v, before its weight and the division by `T`.
    pub value: f64,
    /// Concentration penalty L_pen (weighted by c), before the division by `T`.
    pub penalty: f64,
}

/// The loss of `rollout` under `agent` (an autodiff model with the rollout's parameters): the
/// recorded observations are run through the core as one sequence (the fused kernel where
/// available), whose backward starts from the rollout's `core_forward` when given.
pub fn loss<C: RecurrentCell>(
    agent: &ActorCritic<C>,
    rollout: &Rollout,
    core_forward: Option<Recording<f32>>,
    config: &LossConfig,
    device: &Device,
) -> (Tensor<1>, LossParts) {
    let (steps, batch) = (rollout.steps, rollout.batch);
    let (logits, values) = sequence_heads(agent, rollout, core_forward, device);
    let log_probabilities = log_softmax(logits.clone(), 1);
    let actions = Tensor::<2, Int>::from_data(
        TensorData::new(rollout.actions.clone(), [steps * batch, 1]),
        device,
    );
    let chosen = log_probabilities.gather(1, actions).reshape([steps, batch]);
    let values = values.reshape([steps, batch]);
    let baseline = match config.baseline {
        Baseline::Shared => values.narrow(1, 0, 1).expand([steps, batch]),
        Baseline::PerEpisode => values,
    };
    let returns = Tensor::<2>::from_data(
        TensorData::new(discounted_returns(rollout, config.gamma), [steps, batch]),
        device,
    );
    let advantage = returns - baseline;
    let scale = 1.0 / batch as f64;
    let value_loss = advantage.clone().powi_scalar(2).sum().mul_scalar(scale);
    let policy_loss = (chosen * advantage.detach()).sum().mul_scalar(-scale);
    let penalty = softmax(logits, 1)
        .powi_scalar(2)
        .sum()
        .mul_scalar(config.concentration_penalty * scale);
    let parts = LossParts {
        policy: policy_loss.clone().into_scalar::<f64>(),
        value: value_loss.clone().into_scalar::<f64>(),
        penalty: penalty.clone().into_scalar::<f64>(),
    };
    let total = (penalty + policy_loss + value_loss.mul_scalar(config.value_coefficient))
        // Not `div_scalar`: its backward takes the reciprocal in float32 (Burn 0.22).
        .mul_scalar(1.0 / steps as f64);
    (total, parts)
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use rand::SeedableRng;

    use super::*;

    fn tiny_rollout(rewards: Vec<f32>, steps: usize, batch: usize) -> Rollout {
        Rollout {
            steps,
            batch,
            observations: vec![0.0; steps * batch * maze::OBSERVATION_SIZE],
            actions: vec![0; steps * batch],
            rewards,
            probabilities: vec![0.25; steps * batch * maze::ACTIONS],
            energy_per_step: None,
            core_forward: None,
        }
    }

    #[test]
    fn returns_are_discounted_backwards_per_episode() {
        // Two episodes, three steps: [[0, 10], [10, 0], [0, 0]] (time-major).
        let rollout = tiny_rollout(vec![0.0, 10.0, 10.0, 0.0, 0.0, 0.0], 3, 2);
        let returns = discounted_returns(&rollout, 0.9);
        assert_eq!(returns, vec![9.0, 10.0, 10.0, 0.0, 0.0, 0.0]);
    }

    /// An STPN core of the maze's input size whose plasticity matters within a few steps.
    fn plastic_core(device: &Device) -> stpn_model::StpnR {
        use stpn_model::{Normalisation, StpnRConfig};
        let core = StpnRConfig::new(maze::OBSERVATION_SIZE, 8)
            .with_normalisation(Normalisation::Post)
            .with_clamp(Some(1.0))
            .init(device);
        stpn_model::StpnR {
            gamma: burn::module::Param::from_tensor(core.gamma.val().mul_scalar(500.0).detach()),
            ..core
        }
    }

    /// The update's premise: the recorded observations, run through the core as one sequence
    /// (the fused kernel), give the policy the rollout acted with, step by step, whether the
    /// rollout stepped the core as tensors (measuring the energy) or drove the kernel itself.
    #[test]
    fn the_update_recomputes_the_rollouts_policy() {
        let device = stpn_model::Backend::Flex.device().unwrap();
        let agent =
            crate::ActorCriticConfig::new(maze::ACTIONS).init(plastic_core(&device), &device);
        assert!(
            agent.core.fused && stpn_model::kernel::autodiff::available(&agent.core.weight.val())
        );
        for energy in [true, false] {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let rollout = rollout(
                &agent,
                3,
                |episode| episode as u64,
                &mut rng,
                RolloutOptions {
                    greedy: false,
                    energy,
                },
                &device,
            );
            assert_eq!(rollout.energy_per_step.is_some_and(|e| e > 0.0), energy);
            assert_eq!(rollout.core_forward.is_some(), !energy);
            let (logits, _) = sequence_heads(&agent, &rollout, None, &device);
            let recomputed = host_values::<f32, 2>(softmax(logits, 1));
            let error = stpn_model::compare::max_abs_difference(
                recomputed,
                rollout.probabilities.iter().copied(),
            );
            assert!(
                stpn_model::compare::within(error, 1e-5),
                "probabilities differ by {error} (energy {energy})"
            );
            assert!(rollout.rewards.iter().all(|&r| r == 0.0 || r == 10.0));
        }
    }

    /// The update's backward from the rollout's recorded forward gives the gradients of the
    /// update that runs the forward again; a recording of other parameters is not used.
    #[test]
    fn the_recorded_forward_gives_the_recomputed_gradients() {
        let device = stpn_model::Backend::Flex.device().unwrap().autodiff();
        let agent =
            crate::ActorCriticConfig::new(maze::ACTIONS).init(plastic_core(&device), &device);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let plain = agent.valid();
        let plain_device = plain.policy_bias.val().device();
        let mut rollout = rollout(
            &plain,
            3,
            |episode| episode as u64 + 10,
            &mut rng,
            RolloutOptions::default(),
            &plain_device,
        );
        let recording = rollout
            .core_forward
            .take()
            .expect("the STPN core's forward");
        let observations = |rollout: &Rollout| {
            Tensor::<3>::from_data(
                TensorData::new(
                    rollout.observations.clone(),
                    [rollout.steps, rollout.batch, maze::OBSERVATION_SIZE],
                ),
                &device,
            )
        };
        let ran_with = |agent: &ActorCritic<stpn_model::StpnR>, recording: &Recording<f32>| {
            let kernel = agent.core.host_kernel().expect("the host kernel");
            recording.ran_with(&kernel.parameters, &observations(&rollout))
        };
        let gradients = |agent: &ActorCritic<stpn_model::StpnR>, core_forward| {
            let (loss, _) = loss(
                agent,
                &rollout,
                core_forward,
                &LossConfig::default(),
                &device,
            );
            stpn_model::params::named_gradients(agent, &loss.backward())
        };
        assert!(ran_with(&agent, &recording));
        let recomputed = gradients(&agent, None);
        let missing: Vec<&String> = recomputed
            .iter()
            .filter_map(|(name, gradient)| gradient.is_none().then_some(name))
            .collect();
        assert!(missing.is_empty(), "no gradient for {missing:?}");
        assert_eq!(gradients(&agent, Some(recording.clone())), recomputed);

        let changed = ActorCritic {
            core: stpn_model::StpnR {
                bias: burn::module::Param::from_tensor(
                    agent.core.bias.val().add_scalar(0.01).detach(),
                ),
                ..agent.core.clone()
            },
            ..agent.clone()
        };
        assert!(!ran_with(&changed, &recording));
        assert_eq!(
            gradients(&changed, Some(recording)),
            gradients(&changed, None)
        );
    }

    #[test]
    fn sampling_follows_the_probabilities() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[sample(&[0.1, 0.2, 0.3, 0.4], &mut rng)] += 1;
        }
        for (count, expected) in counts.iter().zip([0.1, 0.2, 0.3, 0.4]) {
            assert!(
                (*count as f64 / 40_000.0 - expected).abs() < 0.01,
                "{counts:?}"
            );
        }
    }
}
