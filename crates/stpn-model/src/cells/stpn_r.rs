//! STPNr, the recurrent short-term plasticity neuron layer (paper §3; docs/reference.md §1.3, §1.5).
//!
//! Presynaptic vector `z_t = [x_t ; h_{t-1}]` (input first), efficacy `G = W + F_{t-1}`, row norm
//! `n = ‖G_i‖₂` per batch element and postsynaptic unit. With the paper's normalisation:
//!
//! ```text
//! a_t = (W z_t + F_{t-1} z_t) / (n + ε) + b          (bias added after normalisation)
//! h_t = tanh(a_t)
//! pre:  F_t = clamp(Λ ⊙ F_{t-1}/(n + ε) + Γ ⊙ (h_t ⊗ p_t), ±c)
//! post: F' = clamp(Λ ⊙ F_{t-1} + Γ ⊙ (h_t ⊗ p_t), ±c),  F_t = F' / (‖W + F'‖ + ε)
//! ```
//!
//! Without normalisation `a_t = (W + F_{t-1}) z_t + b` and `F_t = clamp(Λ ⊙ F_{t-1} + Γ ⊙ (h_t ⊗ p_t))`.
//! The presynaptic term of the update is `p_t = z_t = [x_t ; h_{t-1}]` (the paper's equation, used
//! by the maze, Pong and the authors' single-file demo), or `[x_t ; h_t]` as in the reference's
//! associative-retrieval runner ([`Presynaptic::CurrentHidden`]). Λ and Γ are per synapse
//! (`[H, I+H]`) or single scalars (the "scalar STP" ablation). ε = 1e-16.
//!
//! Two options serve the familiarity code of docs/reference.md §6.2, whose networks are this layer with
//! other presynaptic vectors and activations: `recurrent: false` drops `h_{t-1}` from `z_t`
//! (its feedforward "STPNfNet": bias and stored-`F` normalisation as here, unlike [`crate::StpnF`],
//! the STPLayers cell), and [`Activation::Sigmoid`] gives Tyulmankov's HebbNet
//! (`h = σ((W + A) x + b)`, `A ← λA + η h ⊗ x`) with `Normalisation::Off` and scalar Λ, Γ.
//!
//! Initialisation (docs/reference.md §1.2): `W, b ~ U(±1/√H)`, `Λ ~ U(0, 1)`, `Γ ~ U(±0.001/√H)`; states zero.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{CellState, RecurrentCell, keep_rows};
use crate::cells::init;
use crate::cells::plasticity::{
    NORM_EPSILON, batched, efficacy_product, energy_batched, outer, row_norm, sigmoid,
};
pub use crate::kernel::options::{Activation, Normalisation, Presynaptic};
use crate::kernel::{KernelConfig, autodiff};

/// The activation on the op-by-op path (the kernel has its own, on host slices).
impl Activation {
    fn tensor(self, preactivation: Tensor<2>) -> Tensor<2> {
        match self {
            Activation::Tanh => preactivation.tanh(),
            Activation::Sigmoid => sigmoid(preactivation),
        }
    }
}

/// Configuration of a [`StpnR`] layer.
#[derive(Config, Debug)]
pub struct StpnRConfig {
    /// Size of the external input `I`.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
    /// Λ and Γ per synapse (`[H, I+H]`); false gives the scalar-STP ablation.
    #[config(default = true)]
    pub per_synapse: bool,
    /// Normalisation of the efficacy matrix.
    #[config(default = "Normalisation::Pre")]
    pub normalisation: Normalisation,
    /// Clamp `c` of the plastic update, `None` for no clamp.
    #[config(default = "None")]
    pub clamp: Option<f64>,
    /// Presynaptic term of the plastic update.
    #[config(default = "Presynaptic::PreviousHidden")]
    pub presynaptic: Presynaptic,
    /// `h_{t-1}` is part of the presynaptic vector `z_t`; false: `z_t = x_t` (docs/reference.md §6.2).
    #[config(default = true)]
    pub recurrent: bool,
    /// The neuron's nonlinearity.
    #[config(default = "Activation::Tanh")]
    pub activation: Activation,
    /// Run whole sequences with the fused kernel ([`crate::kernel::autodiff`]) where it is available
    /// (float32 on flex and ndarray, and on wgpu as the CubeCL kernel of [`crate::kernel::cube`]);
    /// the op-by-op path (the reference) otherwise.
    #[config(default = true)]
    pub fused: bool,
}

/// The recurrent STPN layer; see the module documentation for its equations.
#[derive(Module, Debug)]
pub struct StpnR {
    /// Slow weights `W`, `[H, P]` (`P = I + H`, or `I` when not recurrent).
    pub weight: Param<Tensor<2>>,
    /// Bias `b`, `[H]`.
    pub bias: Param<Tensor<1>>,
    /// Decay Λ, `[H, P]` or `[1, 1]`.
    pub lambda: Param<Tensor<2>>,
    /// Plasticity rate Γ, `[H, P]` or `[1, 1]`.
    pub gamma: Param<Tensor<2>>,
    /// How the drive (and the state entering the update) is normalised.
    #[module(skip)]
    pub normalisation: Normalisation,
    /// Which vector the plastic update uses as presynaptic activity.
    #[module(skip)]
    pub presynaptic: Presynaptic,
    /// `h_{t-1}` is part of the presynaptic vector (false: the input alone).
    pub recurrent: bool,
    /// The output nonlinearity.
    #[module(skip)]
    pub activation: Activation,
    /// Bound of the synaptic state `F`, clipped to `[-c, c]` after each update (`None`: no clamp).
    #[module(skip)]
    pub clamp: Option<f64>,
    /// Run sequences on the fused kernel where it applies (float32 on flex, ndarray or wgpu).
    pub fused: bool,
    /// Size `I` of the external input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
}

/// State of a [`StpnR`] layer.
#[derive(Clone, Debug)]
pub struct StpnRState {
    /// `h`, the activated output of the previous step, `[B, H]`.
    pub hidden: Tensor<2>,
    /// `F`, the plastic component of every synapse, `[B, H, P]`.
    pub synaptic: Tensor<3>,
}

impl CellState for StpnRState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        vec![
            ("h", self.hidden.clone().unsqueeze_dim(2)),
            ("F", self.synaptic.clone()),
        ]
    }

    fn detach(self) -> Self {
        Self {
            hidden: self.hidden.detach(),
            synaptic: self.synaptic.detach(),
        }
    }

    fn cat(states: Vec<Self>) -> Self {
        Self {
            hidden: Tensor::cat(states.iter().map(|s| s.hidden.clone()).collect(), 0),
            synaptic: Tensor::cat(states.iter().map(|s| s.synaptic.clone()).collect(), 0),
        }
    }

    fn row(&self, index: usize) -> Self {
        Self {
            hidden: self.hidden.clone().narrow(0, index, 1),
            synaptic: self.synaptic.clone().narrow(0, index, 1),
        }
    }

    fn zero_rows(self, keep: &Tensor<1>) -> Self {
        Self {
            hidden: keep_rows(self.hidden, keep),
            synaptic: keep_rows(self.synaptic, keep),
        }
    }
}

impl StpnRConfig {
    /// A layer initialised as in docs/reference.md §1.2.
    pub fn init(&self, device: &Device) -> StpnR {
        let hidden = self.hidden_size;
        let presynaptic = self.input_size + if self.recurrent { hidden } else { 0 };
        let scale = 1.0 / (hidden as f64).sqrt();
        let plastic_shape = if self.per_synapse {
            [hidden, presynaptic]
        } else {
            [1, 1]
        };
        StpnR {
            weight: init::symmetric([hidden, presynaptic], scale, device),
            bias: init::symmetric([hidden], scale, device),
            lambda: init::uniform(plastic_shape, 0.0, 1.0, device),
            gamma: init::symmetric(plastic_shape, 0.001 * scale, device),
            normalisation: self.normalisation,
            presynaptic: self.presynaptic,
            recurrent: self.recurrent,
            activation: self.activation,
            clamp: self.clamp,
            fused: self.fused,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
        }
    }
}

impl StpnR {
    /// `P`, the length of the presynaptic vector.
    pub fn presynaptic_size(&self) -> usize {
        self.input_size + if self.recurrent { self.hidden_size } else { 0 }
    }

    /// `z_t`: `[x_t ; h_{t-1}]`, or `x_t` when not recurrent.
    fn presynaptic_vector(&self, input: Tensor<2>, hidden: Tensor<2>) -> Tensor<2> {
        if self.recurrent {
            Tensor::cat(vec![input, hidden], 1)
        } else {
            input
        }
    }

    fn clamped(&self, plastic: Tensor<3>) -> Tensor<3> {
        match self.clamp {
            Some(limit) => plastic.clamp(-limit, limit),
            None => plastic,
        }
    }
}

impl RecurrentCell for StpnR {
    type State = StpnRState;

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn init_state(&self, batch: usize) -> StpnRState {
        let weight = self.weight.val();
        let options = (&weight.device(), weight.dtype());
        StpnRState {
            hidden: Tensor::zeros([batch, self.hidden_size], options),
            synaptic: Tensor::zeros([batch, self.hidden_size, self.presynaptic_size()], options),
        }
    }

    fn forward_sequence(&self, inputs: Tensor<3>, state: StpnRState) -> (Tensor<3>, StpnRState) {
        let weight = self.weight.val();
        if autodiff::applies(self.fused, &weight) {
            run_fused(self, inputs, state, &[])
        } else {
            crate::cell::step_by_step(self, inputs, state)
        }
    }

    fn forward_padded(&self, inputs: Tensor<3>, state: StpnRState, lengths: &[usize]) -> Tensor<3> {
        if autodiff::applies(self.fused, &self.weight.val()) {
            run_fused(self, inputs, state, lengths).0
        } else {
            crate::cell::step_by_step(self, inputs, state).0
        }
    }

    fn step(&self, input: Tensor<2>, state: StpnRState) -> (Tensor<2>, StpnRState) {
        let weight = self.weight.val();
        let presynaptic = self.presynaptic_vector(input.clone(), state.hidden);
        let drive = efficacy_product(weight.clone(), state.synaptic.clone(), presynaptic.clone());
        let bias = self.bias.val().unsqueeze_dim::<2>(0);

        let (hidden, decaying) = match self.normalisation {
            Normalisation::Off => (self.activation.tensor(drive + bias), state.synaptic),
            Normalisation::Pre | Normalisation::Post => {
                let denominator = row_norm(batched(weight.clone()) + state.synaptic.clone())
                    .add_scalar(NORM_EPSILON);
                let hidden = self
                    .activation
                    .tensor(drive / denominator.clone().squeeze_dim::<2>(2) + bias);
                let decaying = match self.normalisation {
                    Normalisation::Pre => state.synaptic / denominator,
                    _ => state.synaptic,
                };
                (hidden, decaying)
            }
        };

        let update_presynaptic = match self.presynaptic {
            Presynaptic::CurrentHidden => self.presynaptic_vector(input, hidden.clone()),
            Presynaptic::PreviousHidden => presynaptic,
        };
        let hebbian = outer(hidden.clone(), update_presynaptic);
        let mut synaptic = self
            .clamped(batched(self.lambda.val()) * decaying + batched(self.gamma.val()) * hebbian);
        if self.normalisation == Normalisation::Post {
            let denominator = row_norm(batched(weight) + synaptic.clone()).add_scalar(NORM_EPSILON);
            synaptic = synaptic / denominator;
        }
        (hidden.clone(), StpnRState { hidden, synaptic })
    }

    fn host_kernel(&self) -> Option<autodiff::KernelCell> {
        autodiff::KernelCell::if_on_host(self.fused, self.kernel_config(), self.kernel_tensors())
    }

    fn energy(&self, input: Tensor<2>, state: &StpnRState) -> Tensor<2> {
        let presynaptic = self
            .presynaptic_vector(input, state.hidden.clone())
            .detach();
        let efficacy = batched(self.weight.val().detach()) + state.synaptic.clone().detach();
        let efficacy = match self.normalisation {
            Normalisation::Off => efficacy,
            Normalisation::Pre | Normalisation::Post => {
                let denominator = row_norm(efficacy.clone()).add_scalar(NORM_EPSILON);
                efficacy / denominator
            }
        };
        energy_batched(efficacy, presynaptic)
    }
}

impl StpnR {
    /// The parameters the kernel computes with.
    fn kernel_tensors(&self) -> autodiff::KernelTensors {
        autodiff::KernelTensors {
            weight: self.weight.val(),
            bias: self.bias.val(),
            lambda: self.lambda.val(),
            gamma: self.gamma.val(),
        }
    }

    /// The kernel's view of this layer's options.
    pub fn kernel_config(&self) -> KernelConfig {
        KernelConfig {
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            normalisation: self.normalisation,
            presynaptic: self.presynaptic,
            clamp: self.clamp,
            recurrent: self.recurrent,
            activation: self.activation,
            normalise_state: true,
            normalised_bias: true,
            squash_state: false,
        }
    }
}

/// Runs `cell` over `inputs` (`[T, B, I]`) from `state` with the fused kernel, each batch
/// element stopping after its `lengths` steps (empty: all); returns the outputs `[T, B, H]` and
/// the final state, all differentiable on an autodiff device.
fn run_fused(
    cell: &StpnR,
    inputs: Tensor<3>,
    state: StpnRState,
    lengths: &[usize],
) -> (Tensor<3>, StpnRState) {
    let (outputs, hidden, synaptic) = autodiff::run_kernel(
        cell.kernel_config(),
        cell.kernel_tensors(),
        inputs,
        state.hidden,
        state.synaptic,
        lengths,
    );
    (outputs, StpnRState { hidden, synaptic })
}

#[cfg(test)]
mod tests {
    use crate::parity::golden::assert_case;

    #[test]
    fn parity_stpn_r_pre() {
        assert_case("stpn_r_pre");
    }

    #[test]
    fn parity_stpn_r_scalar() {
        assert_case("stpn_r_scalar");
    }

    #[test]
    fn parity_stpn_r_post_clamp() {
        assert_case("stpn_r_post_clamp");
    }

    #[test]
    fn parity_stpn_r_post_clamp_strong() {
        assert_case("stpn_r_post_clamp_strong");
    }
}
