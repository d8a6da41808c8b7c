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
use crate::kernel::autodiff;
use crate::kernel::{Activation, KernelConfig, Normalisation, Presynaptic};

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

    fn host_kernel(&self) -> Option<autodiff::KernelCell> {
        autodiff::KernelCell::if_on_host(true, self.kernel_config(), self.kernel_tensors())
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

impl HebbFf {
    /// The sequence on the fused STPN kernel where it applies (float32 on a backend that has
    /// it), each batch element stopping after its `lengths` steps (empty: all); op by op over
    /// every step otherwise.
    fn run(
        &self,
        inputs: Tensor<3>,
        state: SynapticState,
        lengths: &[usize],
    ) -> (Tensor<3>, SynapticState) {
        if !autodiff::applies(true, &self.weight.val()) {
            return crate::cell::step_by_step(self, inputs, state);
        }
        let (outputs, synaptic) = autodiff::run_feedforward_kernel(
            self.kernel_config(),
            self.kernel_tensors(),
            inputs,
            state.synaptic,
            lengths,
        );
        (outputs, SynapticState { synaptic })
    }

    /// The parameters the kernel computes with: `λ = σ(λ̃)` and `γ = −exp(γ̃)` as scalars,
    /// differentiable functions of the layer's parameters.
    fn kernel_tensors(&self) -> autodiff::KernelTensors {
        autodiff::KernelTensors {
            weight: self.weight.val(),
            bias: self.bias.val(),
            lambda: sigmoid(self.lambda_logit.val()).reshape([1, 1]),
            gamma: self.gamma_log_magnitude.val().exp().neg().reshape([1, 1]),
        }
    }

    /// The kernel's view of this layer: feedforward, unnormalised, the sigmoid, scalar λ and γ.
    pub fn kernel_config(&self) -> KernelConfig {
        KernelConfig {
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            normalisation: Normalisation::Off,
            presynaptic: Presynaptic::PreviousHidden,
            clamp: None,
            recurrent: false,
            activation: Activation::Sigmoid,
            normalise_state: false,
            normalised_bias: false,
            squash_state: self.squash_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::{HebbFf, HebbFfConfig};
    use crate::Backend;
    use crate::cell::{RecurrentCell, step_by_step};
    use crate::cells::plasticity::SynapticState;
    use crate::kernel::autodiff::tests::assert_close;
    use crate::params::{host_values, named_gradients};
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_hebbff() {
        assert_case("hebbff");
    }

    /// The outputs, final state and gradients (every parameter, the inputs, `F_0`) of a loss on
    /// a sequence, through the fused kernel or the op-by-op step in a loop.
    fn run(cell: &HebbFf, inputs: &Tensor<3>, state: &SynapticState, fused: bool) -> Vec<Vec<f32>> {
        let inputs = inputs.clone().require_grad();
        let synaptic = state.synaptic.clone().require_grad();
        let state = SynapticState {
            synaptic: synaptic.clone(),
        };
        let (outputs, last) = if fused {
            cell.forward_sequence(inputs.clone(), state)
        } else {
            step_by_step(cell, inputs.clone(), state)
        };
        let loss = (outputs.clone() * outputs.clone()).sum()
            + outputs.clone().narrow(0, 0, 1).sum()
            + (last.synaptic.clone() * last.synaptic.clone()).sum();
        let gradients = loss.backward();
        let mut found = vec![host_values(outputs), host_values(last.synaptic)];
        for (_, gradient) in named_gradients(cell, &gradients) {
            found.push(
                gradient
                    .unwrap()
                    .values
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
            );
        }
        found.push(host_values(inputs.grad(&gradients).unwrap()));
        found.push(host_values(synaptic.grad(&gradients).unwrap()));
        found
    }

    /// HebbFF on the fused kernel (feedforward, sigmoid, scalar λ and γ, with and without the
    /// runner's sigmoid on `F`) gives the op-by-op layer's values and gradients, on every
    /// compiled CPU backend.
    #[test]
    fn fused_kernel_matches_the_op_by_op_layer() {
        for backend in Backend::compiled_cpu() {
            for squash_state in [false, true] {
                let device = backend.device().unwrap().autodiff();
                device.seed(5);
                let (inputs_size, units, batch, steps) = (6, 5, 3, 9);
                let cell = HebbFfConfig::new(inputs_size, units)
                    .with_squash_state(squash_state)
                    .init(&device);
                let inputs = Tensor::<3>::random(
                    [steps, batch, inputs_size],
                    Distribution::Uniform(-1.0, 1.0),
                    &device,
                );
                let state = SynapticState {
                    synaptic: Tensor::random(
                        [batch, units, inputs_size],
                        Distribution::Uniform(-0.3, 0.3),
                        &device,
                    ),
                };
                let fused = run(&cell, &inputs, &state, true);
                let reference = run(&cell, &inputs, &state, false);
                assert_eq!(fused.len(), 8, "outputs, F_T, four parameters, inputs, F_0");
                for (index, (ours, theirs)) in fused.into_iter().zip(reference).enumerate() {
                    assert_close(
                        ours,
                        theirs,
                        &format!("{backend} squash {squash_state}, result {index}"),
                    );
                }
            }
        }
    }
}
