#![warn(missing_docs)]

//! On-policy reinforcement learning with recurrent, plastic cores, on Burn tensors and the
//! `stpn-envs` API (paper §4.2, §4.3; docs/reference.md §4.2, §5).
//!
//! | module | what |
//! |---|---|
//! | [`a2c`] | A2C over many environments with n-step fragments (Pong) |
//! | [`actor_critic`] | a recurrent core with a policy head and a value head |
//! | [`maze_a2c`] | the maze's A2C variant (Miconi's): whole episodes, full backpropagation through time |
//! | [`ppo`] | PPO with recurrent sequences and a diagonal Gaussian policy (InvertedPendulum) |
//! | [`returns`] | GAE advantages and value targets (RLlib's `compute_advantages`) |
//! | [`rmsprop`] | TensorFlow 1's RMSprop, the Atari A2C's optimiser |
//! | [`sequences`] | cutting rollouts into sequences with stored states, and packing them for the update |
//! | [`checks`] | range checks of config values, one message per bad field |
//! | [`clip`] | clipping of all gradients by their global L2 norm |
//! | [`evaluate`] | fresh episodes without updates: returns, lengths, energy per step |
//!
//! Rollouts run on the plain (non-autodiff) model, one step at a time; the update recomputes the
//! whole sequence of the recorded observations under autodiff (the fused kernel for STPN), which
//! gives the same outputs, because the core's state depends on the actions only through the
//! observations.
//!
//! Main entry points: [`ActorCriticConfig::init`] puts heads on a core from `stpn-model`;
//! [`a2c::iteration`] (with an [`a2c::VecCollector`]) and [`ppo::iteration`] (with a
//! [`ppo::Collector`]) each collect one rollout and update the agent; [`maze_a2c::rollout`] and
//! [`maze_a2c::loss`] are the maze's episode-level variant; [`evaluate`] runs fresh episodes.
//!
//! Two A2C iterations of an LSTM agent on four mazes:
//!
//! ```
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha8Rng;
//! use stpn_envs::SyncVectorEnv;
//! use stpn_envs::maze::{self, Maze};
//! use stpn_model::{Backend, LstmConfig};
//! use stpn_rl::ActorCriticConfig;
//! use stpn_rl::a2c::{self, A2cConfig, VecCollector};
//!
//! let device = Backend::Flex.device().unwrap().autodiff();
//! let core = LstmConfig::new(maze::OBSERVATION_SIZE, 16).init(&device);
//! let mut agent = ActorCriticConfig::new(maze::ACTIONS).init(core, &device);
//! let config = A2cConfig { fragment_length: 10, ..A2cConfig::default() };
//! let envs = SyncVectorEnv::new((0..4).map(|_| Maze::new()).collect());
//! let mut collector = VecCollector::new(envs, 0);
//! let mut optimizer = stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON);
//! let mut rng = ChaCha8Rng::seed_from_u64(0);
//! for _ in 0..2 {
//!     let stats;
//!     (agent, stats) =
//!         a2c::iteration(agent, &mut optimizer, &mut collector, &config, &mut rng, &device);
//!     assert!(stats.grad_norm.is_finite());
//! }
//! assert_eq!(collector.env_steps, 2 * 4 * 10);
//! ```

pub mod a2c;
pub mod actor_critic;
pub mod checks;
pub mod clip;
pub mod conv_encoder;
pub mod evaluate;
pub mod maze_a2c;
pub mod ppo;
pub mod returns;
pub mod rmsprop;
pub mod sequences;

pub use actor_critic::{ActorCritic, ActorCriticConfig};
pub use clip::clip_by_global_norm;
pub use conv_encoder::{ConvEncoder, ConvEncoderConfig};

/// Adam as the paper's runs used it: PyTorch's, whose ε defaults to 1e-8 (Burn's default is
/// 1e-5), unless a config sets its own (the maze: 1e-4). RLlib's A2C and PPO torch policies pass
/// only the learning rate (RLlib 1.10 `rllib/agents/a3c/a3c_torch_policy.py` lines 129–131,
/// `rllib/policy/torch_policy.py` line 797; docs/authors-rl.md §2). The one way every experiment
/// builds its optimiser.
pub fn adam(epsilon: f64) -> burn::optim::module_optimizer::ModuleOptimizer {
    burn::optim::AdamConfig::new()
        .with_epsilon(epsilon as f32)
        .init()
}

/// The mean of `field` over the statistics of an iteration's optimiser steps (0 for none).
pub(crate) fn mean_over<T>(steps: &[T], field: impl Fn(&T) -> f64) -> f64 {
    steps.iter().map(field).sum::<f64>() / steps.len().max(1) as f64
}

/// PyTorch's Adam ε, the paper's for every optimiser that does not set one.
pub const TORCH_ADAM_EPSILON: f64 = 1e-8;

#[cfg(test)]
mod tests {
    use burn::module::{Module, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::{Tensor, TensorData};
    use stpn_model::Backend;

    /// One parameter, to watch one Adam step.
    #[derive(Module, Debug)]
    struct Scalar {
        value: Param<Tensor<1>>,
    }

    /// The first Adam step moves a parameter by lr · g / (|g| + ε): with a gradient of 1e-6, ε
    /// = 1e-8 (PyTorch's, the paper's) moves it by 0.99 lr, Burn's default 1e-5 by 0.09 lr.
    #[test]
    fn adam_uses_the_epsilon_it_is_given() {
        let device = Backend::Flex.device().unwrap().autodiff();
        let step_of = |epsilon: f64| {
            let model = Scalar {
                value: Param::from_tensor(Tensor::from_data(
                    TensorData::new(vec![0f32], [1]),
                    &device,
                )),
            };
            let loss = model.value.val().mul_scalar(1e-6).sum();
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            let mut optimizer = crate::adam(epsilon);
            let model = optimizer.step(1.0, model, gradients);
            -model.value.val().into_scalar::<f64>()
        };
        let torch = step_of(crate::TORCH_ADAM_EPSILON);
        assert!((torch - 1e-6 / (1e-6 + 1e-8)).abs() < 1e-4, "{torch}");
        assert!((step_of(1e-5) - 1e-6 / (1e-6 + 1e-5)).abs() < 1e-4);
        // The paper's configs: PyTorch's ε for A2C (Pong) and PPO (InvertedPendulum).
        assert_eq!(crate::a2c::A2cConfig::default().adam_epsilon, 1e-8);
        assert_eq!(crate::ppo::PpoConfig::default().adam_epsilon, 1e-8);
    }
}
