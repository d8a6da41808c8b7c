//! Burn modules for short-term plasticity neurons (STPN) and the baselines of
//! Garcia Rodriguez, Guo & Moraitis, "Short-Term Plasticity Neurons Learning to Learn and Forget"
//! (ICML 2022).
//!
//! Every recurrent cell implements [`RecurrentCell`]: an initial state for a batch, one step
//! `(input, state) -> (output, state)` and the per-unit energy of a step computed from the state
//! entering it (paper §2 / spec §2). [`run_sequence`] runs a cell over a time-major sequence.
//!
//! | cell | file | paper / spec |
//! |---|---|---|
//! | [`StpnR`] recurrent STPN | `stpn_r.rs` | spec §1.3, §1.5 |
//! | [`StpnF`] feedforward STPN | `stpn_f.rs` | spec §1.4, §1.5 |
//! | [`HebbFf`] HebbFF (Tyulmankov et al.) | `hebbff.rs` | spec §1.7 |
//! | [`FastWeights`] (Ba et al. 2016) | `fast_weights.rs` | spec §1.6 |
//! | [`Modplast`] backpropamine (Miconi et al.) | `modplast.rs` | spec §1.9 |
//! | [`Lstm`], [`Rnn`] | `lstm.rs`, `rnn.rs` | spec §1.8 |
//! | [`Mlp`] one tanh layer (RLlib "mlp") | `mlp.rs` | spec §5.1 |
//!
//! [`ArtNet`] and [`FamiliarityNet`] (`familiarity_net.rs`, spec §6.2) wrap a cell with the readout of
//! their task.
//!
//! Weight matrices are stored as in the paper, rows = postsynaptic units, columns = presynaptic
//! inputs (for recurrent cells the input first, then the previous hidden state).

pub mod art_net;
pub mod backend;
pub mod cell;
pub mod familiarity_net;
pub mod fast_weights;
pub mod fused;
pub mod fused_op;
pub mod hebbff;
pub mod init;
pub mod lstm;
pub mod mlp;
pub mod modplast;
pub mod params;
pub mod parity;
pub mod plasticity;
pub mod rnn;
pub mod stpn_f;
pub mod stpn_r;

pub use art_net::{ArtNet, ArtNetConfig};
pub use backend::{Backend, BackendError};
pub use cell::{CellState, RecurrentCell, SequenceOutput, run_sequence};
pub use familiarity_net::{FamiliarityNet, FamiliarityNetConfig};
pub use fast_weights::{FastWeights, FastWeightsConfig, FastWeightsState};
pub use hebbff::{HebbFf, HebbFfConfig};
pub use lstm::{Lstm, LstmConfig, LstmState};
pub use mlp::{Mlp, MlpConfig, NoState};
pub use modplast::{Modplast, ModplastConfig, ModplastState};
pub use plasticity::SynapticState;
pub use rnn::{Rnn, RnnConfig};
pub use stpn_f::{StpnF, StpnFConfig};
pub use stpn_r::{Activation, Normalisation, Presynaptic, StpnR, StpnRConfig, StpnRState};
