//! The recurrent cells of the paper, one file each: a `#[derive(Config)]` + `#[derive(Module)]`
//! pair whose doc comment states its update equations, with its parity test beside it. Every cell
//! implements [`crate::RecurrentCell`]. `plasticity` holds the arithmetic the plastic cells share
//! (row norms, outer products, the energy sums), `init` the initialisations of Appendix B.

pub mod fast_weights;
pub mod hebbff;
pub mod init;
pub mod lstm;
pub mod mlp;
pub mod modplast;
pub mod plasticity;
pub mod rnn;
pub mod stpn_f;
pub mod stpn_r;
