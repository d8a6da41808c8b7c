//! A fused STPN sequence kernel on host memory: the forward of a whole sequence and its exact,
//! hand-written backward, with the synaptic state checkpointed every `k ≈ √T` steps and rebuilt
//! in between from each step's record (the drive, norm and output of every unit: elementwise
//! updates, no reductions), so that backpropagation through time keeps states in `√T`, not `T`.
//! Batch elements are independent and run on threads; for sequences of one length and the options
//! with nothing between the plastic update and `F_t`, 8 of them step together in SIMD lanes
//! ([`lanes`], the same numbers).
//!
//! The equations are those of the op-by-op `StpnR` (every option: per-synapse or scalar Λ Γ,
//! normalisation off / pre / post, clamp, presynaptic term from `h_{t-1}` or `h_t`, tanh or
//! sigmoid, with or without `h_{t-1}` in the presynaptic vector) and of `StpnF` (the
//! drive alone normalised and no bias then, the squashed state); the op-by-op cells are the
//! reference it is tested against.
//!
//! Speed: each thread runs a copy of the loops compiled for AVX2 where the processor has it
//! (detected at run time); the loops are written so that they vectorise (reductions in lanes,
//! selects instead of branches, slices of known length), and float32 `tanh` is a rational
//! approximation that vectorises too.
//!
//! Layouts (row-major): inputs `[T, B, I]`, outputs `[T, B, H]`, hidden `[B, H]`, synaptic state
//! `[B, H, P]` with `P = I + H` (`P = I` without recurrence), weights `[H, P]`, Λ and Γ `[H, P]`
//! or `[1]`.
//!
//! | module | what |
//! |---|---|
//! | [`options`] | the layer's options (normalisation, presynaptic term, activation, …) and the kernel's interface types |
//! | [`cpu`] | the step and its backward, one thread's share of the batch |
//! | [`lanes`] | the same with a group of batch elements side by side in SIMD lanes, for sequences of one length |
//! | [`threads`] | the batch split over cores, SIMD dispatch, the sequence-level [`forward`] and [`backward`] |
//! | [`recording`] | the forward driven one step at a time (a rollout), kept for the update's backward |
//! | [`autodiff`] | the kernel as one node of Burn's autodiff graph, on any backend's host data |
//! | [`cube`] | the same sequence forward and backward as CubeCL kernels on Burn's cube backend (wgpu) |
//! | [`cube_node`] | the CubeCL kernels as one node of the autodiff graph on the cube backend, on device tensors |
//! | [`lstm`] | the LSTM baseline's recurrence, a host operation of the autodiff graph of its own |

pub mod autodiff;
pub mod cpu;
#[cfg(feature = "wgpu")]
pub mod cube;
#[cfg(feature = "wgpu")]
pub mod cube_node;
pub mod lanes;
pub mod lstm;
pub mod options;
pub mod recording;
pub mod threads;

pub use cpu::KernelFloat;
pub use cpu::checkpoint_interval;
pub use options::{
    Activation, Checkpoints, ForwardOutput, Gradients, KernelConfig, Normalisation, Parameters,
    Presynaptic, Sequence,
};
pub use recording::Recording;
pub use threads::{backward, forward};

#[cfg(all(test, feature = "wgpu"))]
mod cube_tests;
#[cfg(test)]
mod tests;
