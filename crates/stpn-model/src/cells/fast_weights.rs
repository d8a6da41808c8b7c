//! Fast weights (Ba et al. 2016) as the STPN reference implements them (docs/reference.md §1.6).
//!
//! Fixed decay λ and rate η (0.9 and 0.5 in the paper's configuration), `S` inner steps, layer
//! norm on. With `z_t = [x_t ; h_{t-1}]`:
//!
//! ```text
//! A ← λ A_{t-1} + η (h_{t-1} ⊗ h_{t-1})
//! u = W z_t + b
//! h⁽⁰⁾ = tanh(LN(u)),   h⁽ˢ⁾ = tanh(LN(u + A h⁽ˢ⁻¹⁾)),  s = 1..S
//! h_t = h⁽ᔆ⁾
//! ```
//!
//! With `double_update` (the reference's associative-retrieval runner, which calls the generic
//! STPN update after the cell) the matrix is updated a second time after the step:
//! `A_t = clamp(λ A + η (h_t ⊗ h_t), ±1000)`.
//! Layer norm uses the biased variance and ε = 1e-5. Initialisation: `W`, `b` **and the layer
//! norm's gain and bias** all `U(±1/√H)` (the reference's generic STPN initialisation overwrites
//! the usual 1/0).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{CellState, RecurrentCell, keep_rows};
use crate::cells::init;
use crate::cells::plasticity::{energy_batched, energy_shared, outer};

const LAYER_NORM_EPSILON: f64 = 1e-5;
/// Clamp of the reference's second (generic STPN) update: its default `plastic_weight_clamp_val`.
const DOUBLE_UPDATE_CLAMP: f64 = 1000.0;

/// Configuration of a [`FastWeights`] layer.
#[derive(Config, Debug)]
pub struct FastWeightsConfig {
    /// Size of the input `I`.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
    /// Decay λ of the fast-weight matrix.
    #[config(default = 0.9)]
    pub decay: f64,
    /// Rate η of the fast-weight matrix.
    #[config(default = 0.5)]
    pub rate: f64,
    /// Number of inner-loop steps `S`.
    #[config(default = 1)]
    pub inner_steps: usize,
    /// Update the fast-weight matrix a second time after each step (the reference's ART runner).
    #[config(default = false)]
    pub double_update: bool,
}

/// The fast-weights layer; see the module documentation for its equations.
#[derive(Module, Debug)]
pub struct FastWeights {
    /// Slow weights `W`, `[H, I+H]`.
    pub weight: Param<Tensor<2>>,
    /// Bias `b`, `[H]`.
    pub bias: Param<Tensor<1>>,
    /// Layer-norm gain, `[H]`.
    pub ln_gain: Param<Tensor<1>>,
    /// Layer-norm bias, `[H]`.
    pub ln_bias: Param<Tensor<1>>,
    /// Decay λ of the fast-weight matrix `A` per step.
    pub decay: f64,
    /// Learning rate η of the fast-weight (outer-product) update.
    pub rate: f64,
    /// Inner-loop steps `S` of the layer-normalised iteration.
    pub inner_steps: usize,
    /// Update `A` twice per step, as the reference runner does (docs/reference.md §1.10).
    pub double_update: bool,
    /// Size `I` of the external input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

/// State of a [`FastWeights`] layer.
#[derive(Clone, Debug)]
pub struct FastWeightsState {
    /// `h`, the output of the previous step, `[B, H]`.
    pub hidden: Tensor<2>,
    /// `A`, the fast-weight matrix, `[B, H, H]`.
    pub fast_weights: Tensor<3>,
}

impl CellState for FastWeightsState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        vec![
            ("h", self.hidden.clone().unsqueeze_dim(2)),
            ("F", self.fast_weights.clone()),
        ]
    }

    fn detach(self) -> Self {
        Self {
            hidden: self.hidden.detach(),
            fast_weights: self.fast_weights.detach(),
        }
    }

    fn cat(states: Vec<Self>) -> Self {
        Self {
            hidden: Tensor::cat(states.iter().map(|s| s.hidden.clone()).collect(), 0),
            fast_weights: Tensor::cat(states.iter().map(|s| s.fast_weights.clone()).collect(), 0),
        }
    }

    fn row(&self, index: usize) -> Self {
        Self {
            hidden: self.hidden.clone().narrow(0, index, 1),
            fast_weights: self.fast_weights.clone().narrow(0, index, 1),
        }
    }

    fn zero_rows(self, keep: &Tensor<1>) -> Self {
        Self {
            hidden: keep_rows(self.hidden, keep),
            fast_weights: keep_rows(self.fast_weights, keep),
        }
    }
}

impl FastWeightsConfig {
    /// A layer initialised as in docs/reference.md §1.6.
    pub fn init(&self, device: &Device) -> FastWeights {
        let hidden = self.hidden_size;
        let scale = 1.0 / (hidden as f64).sqrt();
        FastWeights {
            weight: init::symmetric([hidden, self.input_size + hidden], scale, device),
            bias: init::symmetric([hidden], scale, device),
            ln_gain: init::symmetric([hidden], scale, device),
            ln_bias: init::symmetric([hidden], scale, device),
            decay: self.decay,
            rate: self.rate,
            inner_steps: self.inner_steps,
            double_update: self.double_update,
            input_size: self.input_size,
            hidden_size: hidden,
        }
    }
}

impl FastWeights {
    fn layer_norm(&self, x: Tensor<2>) -> Tensor<2> {
        // Mean and biased variance as products with 1/H: Burn 0.22's `div_scalar` (inside
        // `var_mean_bias`) backpropagates through the reciprocal taken in float32, which put the
        // float64 gradients off by ~1e-8 relative wherever H is not a power of two.
        let scale = 1.0 / self.hidden_size as f64;
        let mean = x.clone().sum_dim(1).mul_scalar(scale);
        let centred = x - mean;
        let variance = centred.clone().square().sum_dim(1).mul_scalar(scale);
        let normalised = centred / variance.add_scalar(LAYER_NORM_EPSILON).sqrt();
        normalised * self.ln_gain.val().unsqueeze_dim::<2>(0)
            + self.ln_bias.val().unsqueeze_dim::<2>(0)
    }

    /// The in-step update of the fast-weight matrix from the previous output.
    fn decayed(&self, state: &FastWeightsState) -> Tensor<3> {
        state.fast_weights.clone().mul_scalar(self.decay)
            + outer(state.hidden.clone(), state.hidden.clone()).mul_scalar(self.rate)
    }

    /// `A h` for every batch element: `[B, H, H]` × `[B, H]` → `[B, H]`.
    fn fast_product(fast_weights: Tensor<3>, hidden: Tensor<2>) -> Tensor<2> {
        (fast_weights * hidden.unsqueeze_dim::<3>(1))
            .sum_dim(2)
            .squeeze_dim::<2>(2)
    }

    /// The inner loop: `h⁽⁰⁾ … h⁽ᔆ⁾` from the boundary term `u` and the updated matrix `A`.
    fn inner_loop(&self, boundary: Tensor<2>, fast_weights: &Tensor<3>) -> Vec<Tensor<2>> {
        let mut iterates = vec![self.layer_norm(boundary.clone()).tanh()];
        for _ in 0..self.inner_steps {
            let previous = iterates.last().unwrap().clone();
            let recurrent = Self::fast_product(fast_weights.clone(), previous);
            iterates.push(self.layer_norm(boundary.clone() + recurrent).tanh());
        }
        iterates
    }

    fn boundary(&self, input: Tensor<2>, hidden: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let presynaptic = Tensor::cat(vec![input, hidden], 1);
        let boundary = presynaptic.clone().matmul(self.weight.val().transpose())
            + self.bias.val().unsqueeze_dim::<2>(0);
        (presynaptic, boundary)
    }
}

impl RecurrentCell for FastWeights {
    type State = FastWeightsState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn init_state(&self, batch: usize) -> FastWeightsState {
        let weight = self.weight.val();
        let options = (&weight.device(), weight.dtype());
        FastWeightsState {
            hidden: Tensor::zeros([batch, self.hidden_size], options),
            fast_weights: Tensor::zeros([batch, self.hidden_size, self.hidden_size], options),
        }
    }

    fn step(&self, input: Tensor<2>, state: FastWeightsState) -> (Tensor<2>, FastWeightsState) {
        let fast_weights = self.decayed(&state);
        let (_, boundary) = self.boundary(input, state.hidden);
        let hidden = self.inner_loop(boundary, &fast_weights).pop().unwrap();
        let fast_weights = if self.double_update {
            (fast_weights.mul_scalar(self.decay)
                + outer(hidden.clone(), hidden.clone()).mul_scalar(self.rate))
            .clamp(-DOUBLE_UPDATE_CLAMP, DOUBLE_UPDATE_CLAMP)
        } else {
            fast_weights
        };
        (
            hidden.clone(),
            FastWeightsState {
                hidden,
                fast_weights,
            },
        )
    }

    /// `Σ_j |W_ij| z_j²` for the boundary term plus `Σ_j |A_ij| (h⁽ˢ⁾_j)²` for every inner
    /// iteration `s = 0..S−1`, with `A` after the in-step update (docs/reference.md §2.2).
    fn energy(&self, input: Tensor<2>, state: &FastWeightsState) -> Tensor<2> {
        let state = state.clone().detach();
        let fast_weights = self.decayed(&state);
        let (presynaptic, boundary) = self.boundary(input.detach(), state.hidden);
        let mut energy = energy_shared(self.weight.val().detach(), presynaptic);
        let iterates = self.inner_loop(boundary.detach(), &fast_weights);
        for iterate in iterates.into_iter().take(self.inner_steps) {
            energy = energy + energy_batched(fast_weights.clone(), iterate);
        }
        energy.detach()
    }
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_fast_weights() {
        assert_case("fast_weights");
    }
}
