//! STPNf, the feedforward short-term plasticity neuron layer (docs/reference.md §1.4, §1.5): plastic synapses
//! on the input only, no neural recurrence; the synaptic state `F` (`[B, H, I]`) is the memory.
//!
//! ```text
//! normalised:      a_t = (W x_t + F_{t-1} x_t) / (‖W + F_{t-1}‖ + ε)     (no bias on this path)
//! not normalised:  a_t = (W + F_{t-1}) x_t + b
//! h_t = tanh(a_t)
//! F_t = clamp(Λ ⊙ s(F_{t-1}) + Γ ⊙ (h_t ⊗ x_t), ±c)
//! ```
//!
//! `s` is the identity, or `tanh` with `squash_state` (the reference's associative-retrieval
//! runner applies the activation to `F` before each update; the forward still uses the raw `F`).
//! The normalised path does not use `b`, which exists and is counted as a parameter, as in the
//! reference. Initialisation (docs/reference.md §1.2): `W, b ~ U(±1/√I)`, `Λ ~ U(0, 1)`, `Γ ~ U(±0.001/√I)`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::RecurrentCell;
use crate::cells::init;
use crate::cells::plasticity::{
    NORM_EPSILON, SynapticState, batched, efficacy_product, energy_batched, outer, row_norm,
};
use crate::kernel::{Activation, KernelConfig, Normalisation, Presynaptic, autodiff};

/// Configuration of a [`StpnF`] layer.
#[derive(Config, Debug)]
pub struct StpnFConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of units `H`.
    pub hidden_size: usize,
    /// Λ and Γ per synapse (`[H, I]`); false gives the scalar-STP ablation.
    #[config(default = true)]
    pub per_synapse: bool,
    /// Normalise the rows of `W + F` in the forward pass (no bias is added then).
    #[config(default = true)]
    pub normalised: bool,
    /// Clamp `c` of the plastic update, `None` for no clamp.
    #[config(default = "None")]
    pub clamp: Option<f64>,
    /// Apply tanh to `F` before each update (the reference's associative-retrieval runner).
    #[config(default = false)]
    pub squash_state: bool,
    /// Run whole sequences with the fused kernel ([`crate::kernel::autodiff`]) where it is available
    /// (float32 on flex and ndarray, and on wgpu as the CubeCL kernel of [`crate::kernel::cube`]);
    /// the op-by-op path (the reference) otherwise.
    #[config(default = true)]
    pub fused: bool,
}

/// The feedforward STPN layer; see the module documentation for its equations.
#[derive(Module, Debug)]
pub struct StpnF {
    /// Slow weights `W`, `[H, I]`.
    pub weight: Param<Tensor<2>>,
    /// Bias `b`, `[H]` (unused when normalised).
    pub bias: Param<Tensor<1>>,
    /// Decay Λ, `[H, I]` or `[1, 1]`.
    pub lambda: Param<Tensor<2>>,
    /// Plasticity rate Γ, `[H, I]` or `[1, 1]`.
    pub gamma: Param<Tensor<2>>,
    /// The drive is divided by the norm of the effective weights' row (docs/reference.md §1.5).
    pub normalised: bool,
    /// The update decays `tanh(F_{t-1})` instead of `F_{t-1}` (the reference runner's quirk).
    pub squash_state: bool,
    /// Bound of the synaptic state `F`, clipped to `[-c, c]` after each update (`None`: no clamp).
    #[module(skip)]
    pub clamp: Option<f64>,
    /// Run sequences on the fused kernel where it applies (float32 on flex, ndarray or wgpu).
    pub fused: bool,
    /// Size `I` of the input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

impl StpnFConfig {
    /// A layer initialised as in docs/reference.md §1.2.
    pub fn init(&self, device: &Device) -> StpnF {
        let (hidden, input) = (self.hidden_size, self.input_size);
        let scale = 1.0 / (input as f64).sqrt();
        let plastic_shape = if self.per_synapse {
            [hidden, input]
        } else {
            [1, 1]
        };
        StpnF {
            weight: init::symmetric([hidden, input], scale, device),
            bias: init::symmetric([hidden], scale, device),
            lambda: init::uniform(plastic_shape, 0.0, 1.0, device),
            gamma: init::symmetric(plastic_shape, 0.001 * scale, device),
            normalised: self.normalised,
            squash_state: self.squash_state,
            clamp: self.clamp,
            fused: self.fused,
            input_size: input,
            hidden_size: hidden,
        }
    }
}

impl StpnF {
    /// The denominator `‖W + F‖ + ε` of the normalised path, `[B, H, 1]`; `None` when not normalised.
    fn row_denominator(&self, synaptic: &Tensor<3>) -> Option<Tensor<3>> {
        self.normalised.then(|| {
            row_norm(batched(self.weight.val()) + synaptic.clone()).add_scalar(NORM_EPSILON)
        })
    }
}

impl RecurrentCell for StpnF {
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

    fn forward_sequence(
        &self,
        inputs: Tensor<3>,
        state: SynapticState,
    ) -> (Tensor<3>, SynapticState) {
        self.run(inputs, state, &[])
    }

    fn forward_padded(
        &self,
        inputs: Tensor<3>,
        state: SynapticState,
        lengths: &[usize],
    ) -> Tensor<3> {
        self.run(inputs, state, lengths).0
    }

    fn step(&self, input: Tensor<2>, state: SynapticState) -> (Tensor<2>, SynapticState) {
        let drive = efficacy_product(self.weight.val(), state.synaptic.clone(), input.clone());
        let preactivation = match self.row_denominator(&state.synaptic) {
            Some(denominator) => drive / denominator.squeeze_dim::<2>(2),
            None => drive + self.bias.val().unsqueeze_dim::<2>(0),
        };
        let hidden = preactivation.tanh();
        let decaying = if self.squash_state {
            state.synaptic.tanh()
        } else {
            state.synaptic
        };
        let synaptic = batched(self.lambda.val()) * decaying
            + batched(self.gamma.val()) * outer(hidden.clone(), input);
        let synaptic = match self.clamp {
            Some(limit) => synaptic.clamp(-limit, limit),
            None => synaptic,
        };
        (hidden, SynapticState { synaptic })
    }

    fn host_kernel(&self) -> Option<autodiff::KernelCell> {
        autodiff::KernelCell::if_on_host(self.fused, self.kernel_config(), self.kernel_tensors())
    }

    fn energy(&self, input: Tensor<2>, state: &SynapticState) -> Tensor<2> {
        let synaptic = state.synaptic.clone().detach();
        let efficacy = batched(self.weight.val().detach()) + synaptic.clone();
        let efficacy = match self.row_denominator(&synaptic) {
            Some(denominator) => efficacy / denominator.detach(),
            None => efficacy,
        };
        energy_batched(efficacy, input.detach())
    }
}

impl StpnF {
    /// The sequence on the fused kernel where it applies, each batch element stopping after
    /// its `lengths` steps (empty: all); op by op over every step otherwise.
    fn run(
        &self,
        inputs: Tensor<3>,
        state: SynapticState,
        lengths: &[usize],
    ) -> (Tensor<3>, SynapticState) {
        if autodiff::applies(self.fused, &self.weight.val()) {
            let (outputs, synaptic) = autodiff::run_feedforward_kernel(
                self.kernel_config(),
                self.kernel_tensors(),
                inputs,
                state.synaptic,
                lengths,
            );
            (outputs, SynapticState { synaptic })
        } else {
            crate::cell::step_by_step(self, inputs, state)
        }
    }

    /// The parameters the kernel computes with.
    fn kernel_tensors(&self) -> autodiff::KernelTensors {
        autodiff::KernelTensors {
            weight: self.weight.val(),
            bias: self.bias.val(),
            lambda: self.lambda.val(),
            gamma: self.gamma.val(),
        }
    }

    /// The kernel's view of this layer: not recurrent, the drive alone normalised, no bias then.
    pub fn kernel_config(&self) -> KernelConfig {
        KernelConfig {
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            normalisation: if self.normalised {
                Normalisation::Pre
            } else {
                Normalisation::Off
            },
            presynaptic: Presynaptic::PreviousHidden,
            clamp: self.clamp,
            recurrent: false,
            activation: Activation::Tanh,
            normalise_state: false,
            normalised_bias: false,
            squash_state: self.squash_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_stpn_f_norm() {
        assert_case("stpn_f_norm");
    }

    #[test]
    fn parity_stpn_f_nonorm_clamp() {
        assert_case("stpn_f_nonorm_clamp");
    }
}
