//! HebbFF as the STPN reference implements it (Tyulmankov et al. 2022; docs/reference.md §1.7): a feedforward
//! plastic layer with scalar, reparameterised decay and rate and a sigmoid output.
//!
//! ```text
//! λ = σ(λ̃),  γ = −exp(γ̃)                       (forced anti-Hebbian)
//! a_t = (W + F_{t-1}) x_t + b,   h_t = σ(a_t)
//! F_t = λ · s(F_{t-1}) + γ · (h_t ⊗ x_t)
//! ```
//!
//! `s` is the identity, or the sigmoid with `squash_state` (the reference's associative-retrieval
//! runner). Initialisation: `W, b ~ U(±1/√I)`, `λ̃ = logit(0.99)`, `γ̃ = ln(5/H)` (the STPN
//! reference uses the hidden size here, where Tyulmankov's HebbNet uses the input size).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::RecurrentCell;
use crate::cells::init;
use crate::cells::plasticity::{
    SynapticState, batched, efficacy_product, energy_batched, outer, sigmoid,
};

/// Configuration of a [`HebbFf`] layer.
#[derive(Config, Debug)]
pub struct HebbFfConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of units `H`.
    pub hidden_size: usize,
    /// Apply the sigmoid to `F` before each update (the reference's associative-retrieval runner).
    #[config(default = false)]
    pub squash_state: bool,
}

/// The HebbFF layer; see the module documentation for its equations.
#[derive(Module, Debug)]
pub struct HebbFf {
    /// Slow weights `W`, `[H, I]`.
    pub weight: Param<Tensor<2>>,
    /// Bias `b`, `[H]`.
    pub bias: Param<Tensor<1>>,
    /// `λ̃`, with decay `λ = σ(λ̃)`, `[1]`.
    pub lambda_logit: Param<Tensor<1>>,
    /// `γ̃`, with rate `γ = −exp(γ̃)`, `[1]`.
    pub gamma_log_magnitude: Param<Tensor<1>>,
    /// Squash the plastic state with the activation before the update (the reference runner's quirk, docs/reference.md §1.10).
    pub squash_state: bool,
    /// Size `I` of the input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

impl HebbFfConfig {
    /// A layer initialised as in docs/reference.md §1.7.
    pub fn init(&self, device: &Device) -> HebbFf {
        let (hidden, input) = (self.hidden_size, self.input_size);
        let scale = 1.0 / (input as f64).sqrt();
        HebbFf {
            weight: init::symmetric([hidden, input], scale, device),
            bias: init::symmetric([hidden], scale, device),
            lambda_logit: init::constant([1], (0.99f64 / 0.01).ln(), device),
            gamma_log_magnitude: init::constant([1], (5.0 / hidden as f64).ln(), device),
            squash_state: self.squash_state,
            input_size: input,
            hidden_size: hidden,
        }
    }
}

impl RecurrentCell for HebbFf {
    type State = SynapticState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn init_state(&self, batch: usize) -> SynapticState {
        let weight = self.weight.val();
        SynapticState {
            synaptic: Tensor::zeros(
                [batch, self.hidden_size, self.input_size],
                (&weight.device(), weight.dtype()),
            ),
        }
    }

    fn step(&self, input: Tensor<2>, state: SynapticState) -> (Tensor<2>, SynapticState) {
        let drive = efficacy_product(self.weight.val(), state.synaptic.clone(), input.clone());
        let hidden = sigmoid(drive + self.bias.val().unsqueeze_dim::<2>(0));
        let decay = sigmoid(self.lambda_logit.val()).reshape([1, 1, 1]);
        let rate = self
            .gamma_log_magnitude
            .val()
            .exp()
            .neg()
            .reshape([1, 1, 1]);
        let decaying = if self.squash_state {
            sigmoid(state.synaptic)
        } else {
            state.synaptic
        };
        let synaptic = decay * decaying + rate * outer(hidden.clone(), input);
        (hidden, SynapticState { synaptic })
    }

    fn energy(&self, input: Tensor<2>, state: &SynapticState) -> Tensor<2> {
        let efficacy = batched(self.weight.val().detach()) + state.synaptic.clone().detach();
        energy_batched(efficacy, input.detach())
    }
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_hebbff() {
        assert_case("hebbff");
    }
}
