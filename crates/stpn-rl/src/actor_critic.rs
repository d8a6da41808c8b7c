//! A recurrent core followed by two linear heads: action logits and a state value (spec §4.2,
//! §5.1). Heads are initialised as PyTorch's `Linear`: `U(±1/√H)`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use stpn_model::RecurrentCell;
use stpn_model::init;

/// Configuration of the heads of an [`ActorCritic`].
#[derive(Config, Debug)]
pub struct ActorCriticConfig {
    /// Number of discrete actions.
    pub actions: usize,
}

/// A core with a policy head and a value head on its output.
#[derive(Module, Debug)]
pub struct ActorCritic<C> {
    pub core: C,
    /// Policy weights, `[A, H]`.
    pub policy_weight: Param<Tensor<2>>,
    /// Policy bias, `[A]`.
    pub policy_bias: Param<Tensor<1>>,
    /// Value weights, `[1, H]`.
    pub value_weight: Param<Tensor<2>>,
    /// Value bias, `[1]`.
    pub value_bias: Param<Tensor<1>>,
}

impl ActorCriticConfig {
    pub fn init<C: RecurrentCell>(&self, core: C, device: &Device) -> ActorCritic<C> {
        let hidden = core.hidden_size();
        let bound = 1.0 / (hidden as f64).sqrt();
        ActorCritic {
            core,
            policy_weight: init::symmetric([self.actions, hidden], bound, device),
            policy_bias: init::symmetric([self.actions], bound, device),
            value_weight: init::symmetric([1, hidden], bound, device),
            value_bias: init::symmetric([1], bound, device),
        }
    }
}

impl<C: RecurrentCell> ActorCritic<C> {
    /// Action logits `[N, A]` and values `[N]` of the core's outputs `[N, H]`.
    pub fn heads(&self, hidden: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let logits = hidden.clone().matmul(self.policy_weight.val().transpose())
            + self.policy_bias.val().unsqueeze_dim::<2>(0);
        let values = hidden.matmul(self.value_weight.val().transpose())
            + self.value_bias.val().unsqueeze_dim::<2>(0);
        let [rows, _] = values.dims();
        (logits, values.reshape([rows]))
    }
}
