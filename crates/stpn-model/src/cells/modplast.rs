//! Neuromodulated differentiable plasticity, "backpropamine" (Miconi et al. 2019), as the STPN
//! reference runs it (docs/reference.md §1.9): one tanh neuromodulator, purely additive Hebbian trace with a
//! hard clamp, no decay.
//!
//! ```text
//! h_t    = tanh(W_in x_t + b_in + (w + α ⊙ Hebb_{t-1}) h_{t-1})
//! M_t    = tanh(w_M · h_t + b_M)                       (one scalar per batch element)
//! Hebb_t = clamp(Hebb_{t-1} + M_t (h_t ⊗ h_{t-1}), ±c)
//! ```
//!
//! `c = 1` (the reference's associative-retrieval class ignores its `clamp_val` and always uses
//! 1). Initialisation: `W_in, b_in ~ U(±1/√I)` and `w_M, b_M ~ U(±1/√H)` (PyTorch `Linear`),
//! `w, α ~ U[0, 0.01)`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{CellState, RecurrentCell, keep_rows};
use crate::cells::init;
use crate::cells::plasticity::{batched, energy_batched, energy_shared, outer};

/// Configuration of a [`Modplast`] layer.
#[derive(Config, Debug)]
pub struct ModplastConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
    /// Clamp `c` of the Hebbian trace.
    #[config(default = 1.0)]
    pub clamp: f64,
}

/// The backpropamine layer; see the module documentation for its equations.
#[derive(Module, Debug)]
pub struct Modplast {
    /// Input weights `W_in`, `[H, I]`.
    pub w_in: Param<Tensor<2>>,
    /// Input bias `b_in`, `[H]`.
    pub b_in: Param<Tensor<1>>,
    /// Fixed recurrent weights `w`, `[H, H]` (rows postsynaptic).
    pub w_rec: Param<Tensor<2>>,
    /// Plasticity coefficients α, `[H, H]`.
    pub alpha: Param<Tensor<2>>,
    /// Neuromodulator weights `w_M`, `[1, H]`.
    pub w_mod: Param<Tensor<2>>,
    /// Neuromodulator bias `b_M`, `[1]`.
    pub b_mod: Param<Tensor<1>>,
    /// Bound `c` of the Hebbian trace, clipped to `[-c, c]` after each update.
    pub clamp: f64,
    /// Size `I` of the input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

/// State of a [`Modplast`] layer.
#[derive(Clone, Debug)]
pub struct ModplastState {
    /// `h`, `[B, H]`.
    pub hidden: Tensor<2>,
    /// `Hebb`, the Hebbian trace, `[B, H, H]` (rows postsynaptic).
    pub hebbian: Tensor<3>,
}

impl CellState for ModplastState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        vec![
            ("h", self.hidden.clone().unsqueeze_dim(2)),
            ("hebb", self.hebbian.clone()),
        ]
    }

    fn detach(self) -> Self {
        Self {
            hidden: self.hidden.detach(),
            hebbian: self.hebbian.detach(),
        }
    }

    fn cat(states: Vec<Self>) -> Self {
        Self {
            hidden: Tensor::cat(states.iter().map(|s| s.hidden.clone()).collect(), 0),
            hebbian: Tensor::cat(states.iter().map(|s| s.hebbian.clone()).collect(), 0),
        }
    }

    fn row(&self, index: usize) -> Self {
        Self {
            hidden: self.hidden.clone().narrow(0, index, 1),
            hebbian: self.hebbian.clone().narrow(0, index, 1),
        }
    }

    fn zero_rows(self, keep: &Tensor<1>) -> Self {
        Self {
            hidden: keep_rows(self.hidden, keep),
            hebbian: keep_rows(self.hebbian, keep),
        }
    }
}

impl ModplastConfig {
    /// A layer initialised as in docs/reference.md §1.9.
    pub fn init(&self, device: &Device) -> Modplast {
        let (hidden, input) = (self.hidden_size, self.input_size);
        let input_scale = 1.0 / (input as f64).sqrt();
        let hidden_scale = 1.0 / (hidden as f64).sqrt();
        Modplast {
            w_in: init::symmetric([hidden, input], input_scale, device),
            b_in: init::symmetric([hidden], input_scale, device),
            w_rec: init::uniform([hidden, hidden], 0.0, 0.01, device),
            alpha: init::uniform([hidden, hidden], 0.0, 0.01, device),
            w_mod: init::symmetric([1, hidden], hidden_scale, device),
            b_mod: init::symmetric([1], hidden_scale, device),
            clamp: self.clamp,
            input_size: input,
            hidden_size: hidden,
        }
    }
}

impl Modplast {
    /// `w + α ⊙ Hebb` for every batch element, `[B, H, H]`.
    fn recurrent_efficacy(&self, hebbian: Tensor<3>) -> Tensor<3> {
        batched(self.w_rec.val()) + batched(self.alpha.val()) * hebbian
    }
}

impl RecurrentCell for Modplast {
    type State = ModplastState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn init_state(&self, batch: usize) -> ModplastState {
        let weight = self.w_in.val();
        let options = (&weight.device(), weight.dtype());
        ModplastState {
            hidden: Tensor::zeros([batch, self.hidden_size], options),
            hebbian: Tensor::zeros([batch, self.hidden_size, self.hidden_size], options),
        }
    }

    fn step(&self, input: Tensor<2>, state: ModplastState) -> (Tensor<2>, ModplastState) {
        let recurrent = (self.recurrent_efficacy(state.hebbian.clone())
            * state.hidden.clone().unsqueeze_dim::<3>(1))
        .sum_dim(2)
        .squeeze_dim::<2>(2);
        let hidden = (input.matmul(self.w_in.val().transpose())
            + self.b_in.val().unsqueeze_dim::<2>(0)
            + recurrent)
            .tanh();
        let modulation = (hidden.clone().matmul(self.w_mod.val().transpose())
            + self.b_mod.val().unsqueeze_dim::<2>(0))
        .tanh();
        let hebbian = (state.hebbian
            + outer(hidden.clone(), state.hidden) * modulation.unsqueeze_dim::<3>(2))
        .clamp(-self.clamp, self.clamp);
        (hidden.clone(), ModplastState { hidden, hebbian })
    }

    fn energy(&self, input: Tensor<2>, state: &ModplastState) -> Tensor<2> {
        let state = state.clone().detach();
        energy_shared(self.w_in.val().detach(), input.detach())
            + energy_batched(
                self.recurrent_efficacy(state.hebbian).detach(),
                state.hidden,
            )
    }
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_modplast() {
        assert_case("modplast");
    }

    #[test]
    fn parity_modplast_strong() {
        assert_case("modplast_strong");
    }
}
