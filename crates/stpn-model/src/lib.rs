//! Burn modules for short-term plasticity neurons (STPN) and the baselines of
//! Garcia Rodriguez, Guo & Moraitis, "Short-Term Plasticity Neurons Learning to Learn and Forget"
//! (ICML 2022).
//!
//! Every recurrent cell implements [`RecurrentCell`]: an initial state for a batch, one step
//! `(input, state) -> (output, state)` and the per-unit energy of a step computed from the state
//! entering it (paper §2; docs/reference.md §2). [`run_sequence`] runs a cell over a time-major sequence.
//!
//! The folders show the architecture: `cells/` (one file per cell, its parity test beside it),
//! `networks/` (a cell with the readout of a task), `kernel/` (the fused STPN sequence kernel:
//! options, CPU loops, threads, autodiff node), `parity` (runs the authors' parity cases),
//! `compare` (NaN-safe comparisons), `params` (parameters by name), `backend` (choosing a device).
//!
//! | cell | file | definition |
//! |---|---|---|
//! | [`StpnR`] recurrent STPN | `cells/stpn_r.rs` | docs/reference.md §1.3, §1.5 |
//! | [`StpnF`] feedforward STPN | `cells/stpn_f.rs` | docs/reference.md §1.4, §1.5 |
//! | [`HebbFf`] HebbFF (Tyulmankov et al.) | `cells/hebbff.rs` | docs/reference.md §1.7 |
//! | [`FastWeights`] (Ba et al. 2016) | `cells/fast_weights.rs` | docs/reference.md §1.6 |
//! | [`Modplast`] backpropamine (Miconi et al.) | `cells/modplast.rs` | docs/reference.md §1.9 |
//! | [`Lstm`], [`Rnn`] | `cells/lstm.rs`, `cells/rnn.rs` | docs/reference.md §1.8 |
//! | [`Mlp`] one tanh layer (RLlib "mlp") | `cells/mlp.rs` | docs/reference.md §5.1 |
//!
//! [`ArtNet`] (`networks/art_net.rs`) and [`FamiliarityNet`] (`networks/familiarity_net.rs`,
//! docs/reference.md §6.2) wrap a cell with the readout of their task.
//!
//! # Quick start
//!
//! An STPN layer is a Burn module: build it from its config, run a time-major sequence
//! `[T, B, I]` from the zero state, read its energy, and train it with any Burn optimiser. The
//! same code runs on every backend compiled in ([`Backend`]: flex, ndarray, wgpu, cuda); `.autodiff()`
//! gives the device that records gradients.
//!
//! ```
//! use burn::optim::{AdamConfig, GradientsParams};
//! use burn::tensor::{Distribution, Tensor};
//! use stpn_model::{Backend, RecurrentCell, StpnRConfig, run_sequence};
//!
//! # fn main() -> Result<(), stpn_model::BackendError> {
//! let device = Backend::Flex.device()?.autodiff();
//! let (steps, batch, inputs, hidden) = (9, 4, 37, 11);
//! // STPNr with the paper's defaults: per-synapse Λ and Γ, pre-normalisation, no clamp.
//! let layer = StpnRConfig::new(inputs, hidden).init(&device);
//! let sequence = Tensor::<3>::random([steps, batch, inputs], Distribution::Default, &device);
//!
//! // Outputs [T, B, H], the energy of every unit at every step [T, B, H] (paper §2: computed
//! // from the state entering the step), and the final state (h and the synaptic state F).
//! let run = run_sequence(&layer, sequence.clone(), layer.init_state(batch), true);
//! assert_eq!(run.outputs.dims(), [steps, batch, hidden]);
//! let energy = run.energy.expect("asked for").sum_dim(2).mean(); // per step, summed over units
//! println!("energy per step {}", energy.into_scalar::<f32>());
//!
//! // One training step: any loss on the outputs, Burn's Adam. Without energy, whole sequences
//! // run on the fused kernel (float32 on flex or ndarray).
//! let outputs = layer.forward_sequence(sequence, layer.init_state(batch)).0;
//! let loss = outputs.powi_scalar(2).mean();
//! let gradients = GradientsParams::from_grads(loss.backward(), &layer);
//! let mut optimizer = AdamConfig::new().with_epsilon(1e-8).init();
//! let layer = optimizer.step(1e-3, layer, gradients);
//! assert_eq!(layer.hidden_size(), hidden);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/stpn_layer.rs` puts an STPN layer inside a model of one's own and trains it on a toy
//! sequence task; `stpn-rl`'s `examples/custom_env_ppo.rs` trains an STPN agent with PPO on an
//! environment of one's own.
//!
//! Weight matrices are stored as in the paper, rows = postsynaptic units, columns = presynaptic
//! inputs (for recurrent cells the input first, then the previous hidden state).

#![warn(missing_docs)]

pub mod backend;
pub mod cell;
pub mod cells;
pub mod compare;
pub mod kernel;
pub mod networks;
pub mod params;
pub mod parity;

pub use backend::{Backend, BackendError};
pub use cell::{CellState, RecurrentCell, SequenceOutput, run_sequence};
pub use cells::fast_weights::{FastWeights, FastWeightsConfig, FastWeightsState};
pub use cells::hebbff::{HebbFf, HebbFfConfig};
pub use cells::lstm::{Lstm, LstmConfig, LstmState};
pub use cells::mlp::{Mlp, MlpConfig, NoState};
pub use cells::modplast::{Modplast, ModplastConfig, ModplastState};
pub use cells::plasticity::SynapticState;
pub use cells::rnn::{Rnn, RnnConfig};
pub use cells::stpn_f::{StpnF, StpnFConfig};
pub use cells::stpn_r::{Activation, Normalisation, Presynaptic, StpnR, StpnRConfig, StpnRState};
pub use networks::art_net::{ArtNet, ArtNetConfig};
pub use networks::familiarity_net::{FamiliarityNet, FamiliarityNetConfig};
