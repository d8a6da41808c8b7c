//! The feedforward baseline of the RLlib experiments (the reference's `mlp` core; docs/reference.md §5.1):
//! `h_t = tanh(W x_t + b)`, no state. torch's `nn.Linear` initialisation, `W, b ~ U(±1/√I)`.
//! Energy (docs/reference.md §2.2, RLlib "mlp"): `E_i = Σ_j |W_ij| x_j²`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{CellState, RecurrentCell};
use crate::cells::init;
use crate::cells::plasticity::energy_shared;

/// Configuration of an [`Mlp`] layer.
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of units `H`.
    pub hidden_size: usize,
}

/// One tanh layer, as a cell without memory (so that it runs wherever a recurrent core does).
#[derive(Module, Debug)]
pub struct Mlp {
    /// Weights, `[H, I]`.
    pub weight: Param<Tensor<2>>,
    /// Bias, `[H]`.
    pub bias: Param<Tensor<1>>,
    /// Size `I` of the input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

/// The (empty) state of an [`Mlp`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoState;

impl CellState for NoState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        Vec::new()
    }

    fn detach(self) -> Self {
        self
    }

    fn cat(_: Vec<Self>) -> Self {
        NoState
    }

    fn row(&self, _: usize) -> Self {
        NoState
    }

    fn zero_rows(self, _: &Tensor<1>) -> Self {
        self
    }
}

impl MlpConfig {
    /// A layer initialised as torch's `nn.Linear`.
    pub fn init(&self, device: &Device) -> Mlp {
        let bound = 1.0 / (self.input_size as f64).sqrt();
        Mlp {
            weight: init::symmetric([self.hidden_size, self.input_size], bound, device),
            bias: init::symmetric([self.hidden_size], bound, device),
            input_size: self.input_size,
            hidden_size: self.hidden_size,
        }
    }
}

impl RecurrentCell for Mlp {
    type State = NoState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn init_state(&self, _: usize) -> NoState {
        NoState
    }

    fn step(&self, input: Tensor<2>, state: NoState) -> (Tensor<2>, NoState) {
        let hidden = (input.matmul(self.weight.val().transpose())
            + self.bias.val().unsqueeze_dim::<2>(0))
        .tanh();
        (hidden, state)
    }

    fn forward_sequence(&self, inputs: Tensor<3>, state: NoState) -> (Tensor<3>, NoState) {
        // No state: every step at once.
        let [steps, batch, width] = inputs.dims();
        let (outputs, _) = self.step(inputs.reshape([steps * batch, width]), state);
        (outputs.reshape([steps, batch, self.hidden_size]), state)
    }

    fn energy(&self, input: Tensor<2>, _: &NoState) -> Tensor<2> {
        energy_shared(self.weight.val().detach(), input.detach())
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::Backend;
    use crate::cell::step_by_step;

    #[test]
    fn the_sequence_is_the_steps_and_the_energy_is_the_weighted_squares() {
        let device = Backend::Flex.device().unwrap();
        let mlp = MlpConfig::new(3, 4).init(&device);
        let inputs: Tensor<3> =
            Tensor::random([5, 2, 3], Distribution::Uniform(-1.0, 1.0), &device);
        let (together, _) = mlp.forward_sequence(inputs.clone(), NoState);
        let (stepped, _) = step_by_step(&mlp, inputs.clone(), NoState);
        together
            .into_data()
            .assert_approx_eq::<f32>(&stepped.into_data(), Default::default());
        // One input with a single nonzero component: E_i = |W_i0| · x_0².
        let input = Tensor::<2>::from_data([[2.0, 0.0, 0.0]], &device);
        let energy = mlp.energy(input, &NoState);
        let expected = mlp
            .weight
            .val()
            .narrow(1, 0, 1)
            .abs()
            .mul_scalar(4.0)
            .reshape([1, 4]);
        energy
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    }
}
