//! On-policy reinforcement learning with recurrent, plastic cores, on Burn tensors and the
//! `stpn-envs` API (paper §4.2, §4.3; docs/reference.md §4.2, §5).
//!
//! | module | what |
//! |---|---|
//! | [`a2c`] | A2C over many environments with n-step fragments (Pong) |
//! | [`actor_critic`] | a recurrent core with a policy head and a value head |
//! | [`maze_a2c`] | the maze's A2C variant (Miconi's): whole episodes, full backpropagation through time |
//! | [`ppo`] | PPO with recurrent sequences and a diagonal Gaussian policy (InvertedPendulum) |
//! | [`sequences`] | cutting rollouts into sequences with stored states, and packing them for the update |
//! | [`checks`] | range checks of config values, one message per bad field |
//! | [`clip`] | clipping of all gradients by their global L2 norm |
//! | [`evaluate`] | fresh episodes without updates: returns, lengths, energy per step |
//!
//! Rollouts run on the plain (non-autodiff) model, one step at a time; the update recomputes the
//! whole sequence of the recorded observations under autodiff (the fused kernel for STPN), which
//! gives the same outputs, because the core's state depends on the actions only through the
//! observations.

pub mod a2c;
pub mod actor_critic;
pub mod checks;
pub mod clip;
pub mod evaluate;
pub mod maze_a2c;
pub mod ppo;
pub mod sequences;

pub use actor_critic::{ActorCritic, ActorCriticConfig, ConvEncoder};
pub use clip::clip_by_global_norm;
