//! The LSTM baseline of the associative-retrieval experiment (the reference's `CustomLSTMCell`;
//! docs/reference.md §1.8): one weight on `[x_t ; h_{t-1}]` and one bias, gate blocks in the order input,
//! forget, candidate, output.
//!
//! ```text
//! [i; f; g; o] = W [x_t ; h_{t-1}] + b
//! c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
//! h_t = σ(o) ⊙ tanh(c_t)
//! ```
//!
//! No forget-gate bias offset. Initialisation: every parameter `U(±1/√H)`. The energy is reported
//! for the `4H` gate rows (docs/reference.md §2.2).
//!
//! With `two_biases`, a second bias vector is added to the gates: PyTorch's `nn.LSTM` and
//! `nn.LSTMCell` (`bias_ih` and `bias_hh`), which the authors' Pong, InvertedPendulum, maze and
//! familiarity baselines used, so that the parameter counts are the paper's (4H more). The
//! function family is the same; gradient steps and the initialisation's distribution of the sum
//! are not.
//!
//! Sequences on the CPU backends run fused: every step's input projection in one matrix product,
//! then the recurrence and its backward through time as one host operation
//! ([`crate::kernel::lstm`]); [`RecurrentCell::step`] stays the reference it is tested against.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor};

use crate::cell::{CellState, RecurrentCell, keep_rows, step_by_step};
use crate::cells::init;
use crate::cells::plasticity::{energy_shared, sigmoid};
use crate::kernel::autodiff::on_host;
use crate::kernel::lstm::lstm_recurrence;

/// Configuration of an [`Lstm`] layer.
#[derive(Config, Debug)]
pub struct LstmConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
    /// A second gate bias (PyTorch's `bias_hh`), as `nn.LSTM` has.
    #[config(default = false)]
    pub two_biases: bool,
}

/// The LSTM layer; see the module documentation for its equations.
#[derive(Module, Debug)]
pub struct Lstm {
    /// Gate weights, `[4H, I+H]`, blocks `i, f, g, o`.
    pub weight: Param<Tensor<2>>,
    /// Gate bias, `[4H]`.
    pub bias: Param<Tensor<1>>,
    /// The second gate bias of PyTorch's cells, `[4H]`, with `two_biases`.
    pub recurrent_bias: Option<Param<Tensor<1>>>,
    /// Size `I` of the input.
    pub input_size: usize,
    /// Number of hidden units `H` (the gates have `4H` rows).
    pub hidden_size: usize,
}

/// State of an [`Lstm`] layer.
#[derive(Clone, Debug)]
pub struct LstmState {
    /// `h`, `[B, H]`.
    pub hidden: Tensor<2>,
    /// `c`, the cell state, `[B, H]`.
    pub cell: Tensor<2>,
}

impl CellState for LstmState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        vec![
            ("h", self.hidden.clone().unsqueeze_dim(2)),
            ("c", self.cell.clone().unsqueeze_dim(2)),
        ]
    }

    fn detach(self) -> Self {
        Self {
            hidden: self.hidden.detach(),
            cell: self.cell.detach(),
        }
    }

    fn cat(states: Vec<Self>) -> Self {
        Self {
            hidden: Tensor::cat(states.iter().map(|s| s.hidden.clone()).collect(), 0),
            cell: Tensor::cat(states.iter().map(|s| s.cell.clone()).collect(), 0),
        }
    }

    fn row(&self, index: usize) -> Self {
        Self {
            hidden: self.hidden.clone().narrow(0, index, 1),
            cell: self.cell.clone().narrow(0, index, 1),
        }
    }

    fn zero_rows(self, keep: &Tensor<1>) -> Self {
        Self {
            hidden: keep_rows(self.hidden, keep),
            cell: keep_rows(self.cell, keep),
        }
    }
}

impl LstmConfig {
    /// A layer initialised as in docs/reference.md §1.8.
    pub fn init(&self, device: &Device) -> Lstm {
        let hidden = self.hidden_size;
        let scale = 1.0 / (hidden as f64).sqrt();
        Lstm {
            weight: init::symmetric([4 * hidden, self.input_size + hidden], scale, device),
            bias: init::symmetric([4 * hidden], scale, device),
            recurrent_bias: self
                .two_biases
                .then(|| init::symmetric([4 * hidden], scale, device)),
            input_size: self.input_size,
            hidden_size: hidden,
        }
    }
}

impl Lstm {
    /// A sequence on the CPU backends (float32): every step's input projection in one matrix
    /// product, then the recurrence as one host operation ([`lstm_recurrence`]). The same
    /// function as [`RecurrentCell::step`] in a loop, the sums in another order. `None` where
    /// the op-by-op path runs (other backends, an empty sequence).
    fn recurrence_on_host(
        &self,
        inputs: Tensor<3>,
        state: LstmState,
        lengths: &[usize],
    ) -> Option<(Tensor<3>, LstmState)> {
        let weight = self.weight.val();
        let [steps, batch, input_size] = inputs.dims();
        if steps == 0 || weight.dtype() != DType::F32 || !on_host(&weight) {
            return None;
        }
        let gate_size = 4 * self.hidden_size;
        let input_weight = weight.clone().narrow(1, 0, input_size);
        let recurrent_weight = weight.narrow(1, input_size, self.hidden_size);
        let mut bias = self.bias.val();
        if let Some(recurrent_bias) = &self.recurrent_bias {
            bias = bias + recurrent_bias.val();
        }
        let projected = (inputs
            .reshape([steps * batch, input_size])
            .matmul(input_weight.transpose())
            + bias.unsqueeze_dim::<2>(0))
        .reshape([steps, batch, gate_size]);
        let (outputs, hidden, cell) = lstm_recurrence(
            projected,
            state.hidden,
            state.cell,
            recurrent_weight,
            lengths,
        );
        Some((outputs, LstmState { hidden, cell }))
    }
}

impl RecurrentCell for Lstm {
    type State = LstmState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn energy_units(&self) -> usize {
        4 * self.hidden_size
    }

    fn init_state(&self, batch: usize) -> LstmState {
        let weight = self.weight.val();
        let options = (&weight.device(), weight.dtype());
        LstmState {
            hidden: Tensor::zeros([batch, self.hidden_size], options),
            cell: Tensor::zeros([batch, self.hidden_size], options),
        }
    }

    fn forward_sequence(&self, inputs: Tensor<3>, state: LstmState) -> (Tensor<3>, LstmState) {
        match self.recurrence_on_host(inputs.clone(), state.clone(), &[]) {
            Some(result) => result,
            None => step_by_step(self, inputs, state),
        }
    }

    fn forward_padded(&self, inputs: Tensor<3>, state: LstmState, lengths: &[usize]) -> Tensor<3> {
        match self.recurrence_on_host(inputs.clone(), state.clone(), lengths) {
            Some((outputs, _)) => outputs,
            None => step_by_step(self, inputs, state).0,
        }
    }

    fn step(&self, input: Tensor<2>, state: LstmState) -> (Tensor<2>, LstmState) {
        let presynaptic = Tensor::cat(vec![input, state.hidden], 1);
        let mut gates = presynaptic.matmul(self.weight.val().transpose())
            + self.bias.val().unsqueeze_dim::<2>(0);
        if let Some(recurrent_bias) = &self.recurrent_bias {
            gates = gates + recurrent_bias.val().unsqueeze_dim::<2>(0);
        }
        let [input_gate, forget_gate, candidate, output_gate]: [Tensor<2>; 4] =
            gates.chunk(4, 1).try_into().expect("four gate blocks");
        let cell = sigmoid(forget_gate) * state.cell + sigmoid(input_gate) * candidate.tanh();
        let hidden = sigmoid(output_gate) * cell.clone().tanh();
        (hidden.clone(), LstmState { hidden, cell })
    }

    fn energy(&self, input: Tensor<2>, state: &LstmState) -> Tensor<2> {
        let presynaptic = Tensor::cat(vec![input, state.hidden.clone()], 1).detach();
        energy_shared(self.weight.val().detach(), presynaptic)
    }
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_lstm_art() {
        assert_case("lstm_art");
    }
}
