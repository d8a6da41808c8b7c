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
//! Weight matrices are stored as in the paper, rows = postsynaptic units, columns = presynaptic
//! inputs (for recurrent cells the input first, then the previous hidden state).

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
