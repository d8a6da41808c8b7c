//! Evaluation of a trained agent on fresh episodes, without updates: returns, lengths and the
//! core's energy per step (docs/reference.md §2.3, RLlib aggregation: per environment step, the sum over the
//! units of the recurrent layer, from the state entering the step; for Pong the input is the conv
//! features). The paper evaluated Pong on one greedy episode and InvertedPendulum on 10 episodes
//! with stochastic actions.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use stpn_envs::env::{Env, Space};
use stpn_model::RecurrentCell;
use stpn_model::params::host_values;

use crate::ActorCritic;
use crate::maze_a2c::{most_probable, sample};
use crate::ppo::{normalize_action, policy_parameters, standard_normal};

/// What an evaluation found.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationResult {
    /// The return of every episode.
    pub returns: Vec<f64>,
    /// The length (steps) of every episode.
    pub lengths: Vec<usize>,
    /// The core's energy of a step summed over its units, mean over every step of every episode.
    pub energy_per_step: f64,
    /// The core's number of energy units (H, or 4H gate rows for an LSTM).
    pub energy_units: usize,
}

impl EvaluationResult {
    /// Mean and (population) standard deviation of the returns.
    pub fn return_mean_std(&self) -> (f64, f64) {
        let count = self.returns.len().max(1) as f64;
        let mean = self.returns.iter().sum::<f64>() / count;
        let variance = self.returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / count;
        (mean, variance.sqrt())
    }
}

/// Runs `episodes` episodes of `env` (reset with `seed`, `seed + 1`, ...) with the plain model
/// `agent`; `act` turns the heads' output row into the environment's action.
fn run_episodes<C, E>(
    agent: &ActorCritic<C>,
    env: &mut E,
    episodes: usize,
    seed: u64,
    observation_row: impl Fn(&E::Observation) -> Vec<f32>,
    mut act: impl FnMut(Tensor<2>) -> E::Action,
    device: &Device,
) -> EvaluationResult
where
    C: RecurrentCell,
    E: Env,
{
    let (mut returns, mut lengths) = (Vec::new(), Vec::new());
    let (mut energy, mut steps) = (0.0, 0usize);
    for episode in 0..episodes {
        let (mut observation, _) = env.reset(Some(seed.wrapping_add(episode as u64)));
        let mut state = agent.core.init_state(1);
        let (mut episode_return, mut length) = (0.0, 0);
        loop {
            let row = observation_row(&observation);
            let width = row.len();
            let input = Tensor::<2>::from_data(TensorData::new(row, [1, width]), device);
            let features = agent.features(input);
            // The energy of the step about to be made, from the state entering it.
            energy += host_values::<f64, 2>(agent.core.energy(features.clone(), &state))
                .iter()
                .sum::<f64>();
            steps += 1;
            let (hidden, next_state) = agent.core_step(features, state);
            state = next_state;
            let (output, _) = agent.heads(hidden);
            let outcome = env.step(&act(output));
            episode_return += outcome.reward;
            length += 1;
            if outcome.done() {
                break;
            }
            observation = outcome.observation;
        }
        returns.push(episode_return);
        lengths.push(length);
    }
    EvaluationResult {
        returns,
        lengths,
        energy_per_step: energy / steps.max(1) as f64,
        energy_units: agent.core.energy_units(),
    }
}

/// Evaluates a Gaussian-policy agent (PPO, box actions): the mean action when `greedy`, a draw
/// otherwise; actions mapped to the box as in training (`normalize_actions`).
pub fn evaluate_continuous<C, E>(
    agent: &ActorCritic<C>,
    env: &mut E,
    episodes: usize,
    greedy: bool,
    seed: u64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> EvaluationResult
where
    C: RecurrentCell,
    E: Env<Observation = Vec<f64>, Action = Vec<f64>>,
{
    let (low, high) = match env.action_space() {
        Space::Box { low, high, .. } => (low, high),
        other => panic!("a Gaussian policy needs a box action space, got {other:?}"),
    };
    let action_size = low.len();
    let act = |output: Tensor<2>| {
        let (mean, std) = policy_parameters(output, action_size);
        let (mean, std) = (host_values::<f64, 2>(mean), host_values::<f64, 2>(std));
        let action: Vec<f64> = if greedy {
            mean
        } else {
            mean.iter()
                .zip(&std)
                .map(|(m, s)| m + s * standard_normal(rng))
                .collect()
        };
        normalize_action(&action, &low, &high)
    };
    let row = |observation: &Vec<f64>| observation.iter().map(|&x| x as f32).collect();
    run_episodes(agent, env, episodes, seed, row, act, device)
}

/// Evaluates a categorical-policy agent (A2C, discrete actions): the most probable action when
/// `greedy`, a draw otherwise.
pub fn evaluate_discrete<C, E>(
    agent: &ActorCritic<C>,
    env: &mut E,
    episodes: usize,
    greedy: bool,
    seed: u64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> EvaluationResult
where
    C: RecurrentCell,
    E: Env<Observation = Vec<f32>, Action = usize>,
{
    let act = |logits: Tensor<2>| {
        let probabilities = host_values::<f32, 2>(softmax(logits, 1));
        if greedy {
            most_probable(&probabilities)
        } else {
            sample(&probabilities, rng)
        }
    };
    run_episodes(agent, env, episodes, seed, Vec::clone, act, device)
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use stpn_envs::env::{Info, Step};
    use stpn_model::{Backend, StpnFConfig, StpnRConfig};

    use super::*;
    use crate::ActorCriticConfig;

    /// Observation = the step count; the episode ends after `length` steps; reward 1 for action
    /// 1 (discrete) or the first action component (continuous).
    struct Counter<A> {
        length: usize,
        step: usize,
        action: std::marker::PhantomData<A>,
    }

    impl<A> Counter<A> {
        fn new(length: usize) -> Self {
            Self {
                length,
                step: 0,
                action: std::marker::PhantomData,
            }
        }
    }

    macro_rules! counter_env {
        ($observation:ty, $action:ty, $space:expr, $reward:expr) => {
            impl Env for Counter<$action> {
                type Observation = Vec<$observation>;
                type Action = $action;

                fn reset(
                    &mut self,
                    _: Option<u64>,
                ) -> (Self::Observation, Info<Self::Observation>) {
                    self.step = 0;
                    (vec![0.0, 1.0], Info::empty())
                }

                fn step(&mut self, action: &$action) -> Step<Self::Observation> {
                    self.step += 1;
                    Step {
                        observation: vec![self.step as $observation, 1.0],
                        reward: $reward(action),
                        terminated: false,
                        truncated: self.step == self.length,
                        info: Info::empty(),
                    }
                }

                fn observation_space(&self) -> Space {
                    Space::Box {
                        low: vec![0.0; 2],
                        high: vec![f64::INFINITY; 2],
                        shape: vec![2],
                    }
                }

                fn action_space(&self) -> Space {
                    $space
                }
            }
        };
    }

    counter_env!(f32, usize, Space::Discrete(2), |action: &usize| *action
        as f64);
    counter_env!(
        f64,
        Vec<f64>,
        Space::Box {
            low: vec![-3.0],
            high: vec![3.0],
            shape: vec![1],
        },
        |action: &Vec<f64>| action[0]
    );

    #[test]
    fn evaluation_counts_episodes_steps_and_energy() {
        let device = Backend::Flex.device().unwrap();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let discrete =
            ActorCriticConfig::new(2).init(StpnRConfig::new(2, 5).init(&device), &device);
        let mut env = Counter::<usize>::new(7);
        for greedy in [true, false] {
            let result = evaluate_discrete(&discrete, &mut env, 3, greedy, 0, &mut rng, &device);
            assert_eq!(result.lengths, vec![7; 3]);
            assert!(result.energy_per_step.is_finite() && result.energy_per_step > 0.0);
        }
        // A policy that always prefers action 1 (or 0) earns exactly 7 (or 0) per greedy episode:
        // the returns are the rewards of the actions the policy took.
        for (bias, expected) in [([-20.0f32, 20.0], 7.0), ([20.0, -20.0], 0.0)] {
            let forced = ActorCritic {
                policy_bias: Param::from_tensor(Tensor::from_data(
                    TensorData::new(bias.to_vec(), [2]),
                    &device,
                )),
                ..discrete.clone()
            };
            let result = evaluate_discrete(&forced, &mut env, 2, true, 0, &mut rng, &device);
            assert_eq!(result.returns, vec![expected; 2], "policy bias {bias:?}");
        }
        // Greedy is deterministic: the same returns twice.
        let once = evaluate_discrete(&discrete, &mut env, 2, true, 0, &mut rng, &device);
        let twice = evaluate_discrete(&discrete, &mut env, 2, true, 0, &mut rng, &device);
        assert_eq!(once, twice);

        let continuous = ActorCriticConfig::new(2).init(
            StpnFConfig::new(2, 5).with_normalised(false).init(&device),
            &device,
        );
        let mut env = Counter::<Vec<f64>>::new(4);
        let result = evaluate_continuous(&continuous, &mut env, 2, false, 0, &mut rng, &device);
        assert_eq!(result.lengths, vec![4; 2]);
        assert!(result.energy_per_step > 0.0);
        // A mean far above the box is clipped to its edge: the action 3 on each of the 4 steps,
        // return 12 (a mean far below: −12).
        for (mean, expected) in [(20.0f32, 12.0), (-20.0, -12.0)] {
            let forced = ActorCritic {
                policy_bias: Param::from_tensor(Tensor::from_data(
                    TensorData::new(vec![mean, 0.0], [2]),
                    &device,
                )),
                ..continuous.clone()
            };
            let result = evaluate_continuous(&forced, &mut env, 2, true, 0, &mut rng, &device);
            assert_eq!(result.returns, vec![expected; 2], "policy mean {mean}");
        }
    }
}
