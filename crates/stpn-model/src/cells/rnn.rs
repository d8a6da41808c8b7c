//! The Elman RNN baseline of the associative-retrieval experiment (the reference's
//! `CustomRNNCell`; docs/reference.md §1.8): `h_t = tanh(W [x_t ; h_{t-1}] + b)`, every parameter `U(±1/√H)`.
//! (The reference stores `W` transposed, `[I+H, H]`; here rows are postsynaptic units as for
//! every other cell.) The maze's RNN (`MiconiNetwork`, type `rnn`) has the same equations and
//! parameter count with another initialisation: the input part and the bias as torch's
//! `Linear(I, H)`, `U(±1/√I)`, the recurrent part `U[0, 0.01)` (`miconi_init`).
//!
//! With `two_biases`, a second bias vector is added before the tanh: PyTorch's `nn.RNN`
//! (`bias_ih` and `bias_hh`), which the authors' InvertedPendulum baseline used, so that the
//! parameter count is the paper's (H more).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{CellState, RecurrentCell, keep_rows};
use crate::cells::init;
use crate::cells::plasticity::energy_shared;

/// Configuration of an [`Rnn`] layer.
#[derive(Config, Debug)]
pub struct RnnConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
    /// The maze reference's initialisation (see the module documentation).
    #[config(default = false)]
    pub miconi_init: bool,
    /// A second bias (PyTorch's `bias_hh`), as `nn.RNN` has.
    #[config(default = false)]
    pub two_biases: bool,
}

/// The Elman RNN layer.
#[derive(Module, Debug)]
pub struct Rnn {
    /// Weights on `[x_t ; h_{t-1}]`, `[H, I+H]`.
    pub weight: Param<Tensor<2>>,
    /// Bias, `[H]`.
    pub bias: Param<Tensor<1>>,
    /// The second bias of PyTorch's `nn.RNN`, `[H]`, with `two_biases`.
    pub recurrent_bias: Option<Param<Tensor<1>>>,
    /// Size `I` of the input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

/// State of an [`Rnn`] layer: the previous output `h`, `[B, H]`.
#[derive(Clone, Debug)]
pub struct RnnState {
    /// The previous output `h_{t-1}`, `[B, H]`.
    pub hidden: Tensor<2>,
}

impl CellState for RnnState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        vec![("h", self.hidden.clone().unsqueeze_dim(2))]
    }

    fn detach(self) -> Self {
        Self {
            hidden: self.hidden.detach(),
        }
    }

    fn cat(states: Vec<Self>) -> Self {
        Self {
            hidden: Tensor::cat(states.iter().map(|s| s.hidden.clone()).collect(), 0),
        }
    }

    fn row(&self, index: usize) -> Self {
        Self {
            hidden: self.hidden.clone().narrow(0, index, 1),
        }
    }

    fn zero_rows(self, keep: &Tensor<1>) -> Self {
        Self {
            hidden: keep_rows(self.hidden, keep),
        }
    }
}

impl RnnConfig {
    /// A layer initialised as in docs/reference.md §1.8.
    pub fn init(&self, device: &Device) -> Rnn {
        let hidden = self.hidden_size;
        let (weight, bias) = if self.miconi_init {
            let input_scale = 1.0 / (self.input_size as f64).sqrt();
            let input: Param<Tensor<2>> =
                init::symmetric([hidden, self.input_size], input_scale, device);
            let recurrent: Param<Tensor<2>> = init::uniform([hidden, hidden], 0.0, 0.01, device);
            (
                Param::from_tensor(Tensor::cat(vec![input.val(), recurrent.val()], 1).detach()),
                init::symmetric([hidden], input_scale, device),
            )
        } else {
            let scale = 1.0 / (hidden as f64).sqrt();
            (
                init::symmetric([hidden, self.input_size + hidden], scale, device),
                init::symmetric([hidden], scale, device),
            )
        };
        let scale = 1.0 / (hidden as f64).sqrt();
        Rnn {
            weight,
            bias,
            recurrent_bias: self
                .two_biases
                .then(|| init::symmetric([hidden], scale, device)),
            input_size: self.input_size,
            hidden_size: hidden,
        }
    }
}

impl RecurrentCell for Rnn {
    type State = RnnState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn init_state(&self, batch: usize) -> RnnState {
        let weight = self.weight.val();
        RnnState {
            hidden: Tensor::zeros(
                [batch, self.hidden_size],
                (&weight.device(), weight.dtype()),
            ),
        }
    }

    fn step(&self, input: Tensor<2>, state: RnnState) -> (Tensor<2>, RnnState) {
        let presynaptic = Tensor::cat(vec![input, state.hidden], 1);
        let mut preactivation = presynaptic.matmul(self.weight.val().transpose())
            + self.bias.val().unsqueeze_dim::<2>(0);
        if let Some(recurrent_bias) = &self.recurrent_bias {
            preactivation = preactivation + recurrent_bias.val().unsqueeze_dim::<2>(0);
        }
        let hidden = preactivation.tanh();
        (hidden.clone(), RnnState { hidden })
    }

    fn energy(&self, input: Tensor<2>, state: &RnnState) -> Tensor<2> {
        let presynaptic = Tensor::cat(vec![input, state.hidden.clone()], 1).detach();
        energy_shared(self.weight.val().detach(), presynaptic)
    }
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_rnn_art() {
        assert_case("rnn_art");
    }

    /// The maze initialisation: input part and bias within ±1/√I, recurrent part in [0, 0.01).
    #[test]
    fn miconi_init_has_the_maze_references_ranges() {
        // On an autodiff device, where the parameters must be trainable leaves.
        let device = crate::Backend::Flex.device().unwrap().autodiff();
        let rnn = super::RnnConfig::new(17, 100)
            .with_miconi_init(true)
            .init(&device);
        let gradients = rnn.weight.val().sum().backward();
        assert!(rnn.weight.val().grad(&gradients).is_some());
        let weight = rnn.weight.val();
        let bound = 1.0 / 17f32.sqrt();
        let input_max = weight
            .clone()
            .narrow(1, 0, 17)
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(input_max <= bound && input_max > 0.9 * bound);
        let recurrent = weight.narrow(1, 17, 100);
        assert!(recurrent.clone().min().into_scalar::<f32>() >= 0.0);
        assert!(recurrent.max().into_scalar::<f32>() < 0.01);
        assert!(rnn.bias.val().abs().max().into_scalar::<f32>() <= bound);
    }
}
