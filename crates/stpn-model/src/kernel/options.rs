//! The options of an STPN layer that the kernel computes, shared by the op-by-op cells
//! (`StpnR`, `StpnF`) and the kernel; and the kernel's host-memory interface:
//! the parameters and the sequence as slices, and what the forward and backward return.

use burn::config::Config;

/// Added to a row norm before dividing by it (the reference's value).
pub const NORM_EPSILON: f64 = 1e-16;

/// How the efficacy matrix `W + F` is normalised (docs/reference.md §1.1 `weight_norm`, `plastic_weight_norm.time`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Normalisation {
    /// No normalisation: `a = (W + F) z + b`.
    Off,
    /// Rows of `W + F` normalised in the forward pass, and the stored `F` divided by the same
    /// norm before its decay (ART, Pong, maze ablations).
    Pre,
    /// Rows of `W + F` normalised in the forward pass, and the updated `F` divided by the row norm
    /// of `W + F_new` (the main maze model).
    Post,
}

/// Which hidden state the plastic update sees as presynaptic activity.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Presynaptic {
    /// `[x_t ; h_{t-1}]`, the vector that drove the neuron (the paper's equation).
    PreviousHidden,
    /// `[x_t ; h_t]`, the new hidden state (the reference's associative-retrieval runner).
    CurrentHidden,
}

/// The neuron's nonlinearity `h = φ(a)`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `tanh`, every STPN of the paper.
    Tanh,
    /// The logistic function, Tyulmankov's HebbNet.
    Sigmoid,
}

/// The options of the cell the kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelConfig {
    /// Size `I` of the external input.
    pub input_size: usize,
    /// Number of hidden units `H`.
    pub hidden_size: usize,
    /// How the drive is normalised.
    pub normalisation: Normalisation,
    /// Which vector the plastic update uses as presynaptic activity.
    pub presynaptic: Presynaptic,
    /// Bound of `F`, clipped to `[-c, c]` after each update (`None`: no clamp).
    pub clamp: Option<f64>,
    /// `h_{t-1}` is part of the presynaptic vector (false: the input alone).
    pub recurrent: bool,
    /// The output nonlinearity.
    pub activation: Activation,
    /// With pre-normalisation, the update also divides `F_{t-1}` by the row norm (STPNr);
    /// STPNf normalises the drive only.
    pub normalise_state: bool,
    /// A normalised drive gets the bias (STPNr); STPNf's normalised path has none.
    pub normalised_bias: bool,
    /// The update decays `φ(F_{t-1})`, the activation of it, instead of `F_{t-1}` (the
    /// associative-retrieval runner's `squash_state`: `tanh` in STPNf, the sigmoid in HebbFF).
    pub squash_state: bool,
}

impl KernelConfig {
    /// `P`, the length of the presynaptic vector: `I + H`, or `I` when not recurrent.
    pub fn presynaptic_size(&self) -> usize {
        self.input_size + if self.recurrent { self.hidden_size } else { 0 }
    }

    /// Whether the rows of `W + F` are normalised in the forward pass.
    #[inline(always)]
    pub(super) fn normalised(&self) -> bool {
        self.normalisation != Normalisation::Off
    }

    /// Whether the update divides `F_{t-1}` by the row's norm.
    #[inline(always)]
    pub(super) fn scales_state(&self) -> bool {
        self.normalisation == Normalisation::Pre && self.normalise_state
    }

    /// Whether a clamp or the post-normalisation lies between the update `F'` and `F_t`: the
    /// backward then recomputes `F'` (for the clamp's mask and the norm) from `F_{t-1}`.
    #[inline(always)]
    pub(super) fn transforms_update(&self) -> bool {
        self.clamp.is_some() || self.normalisation == Normalisation::Post
    }

    /// Whether the update's presynaptic vector is the drive's `z_t` (not `[x_t ; h_t]`), so
    /// that a row's update needs no other row's neuron.
    #[inline(always)]
    pub(super) fn update_sees_drive_presynaptic(&self) -> bool {
        !(self.recurrent && self.presynaptic == Presynaptic::CurrentHidden)
    }
}

/// The parameters, as host slices.
#[derive(Clone, Copy, Debug)]
pub struct Parameters<'a, F> {
    /// Slow weights `W`, `[H·P]` row-major.
    pub weight: &'a [F],
    /// Bias `b`, `[H]`.
    pub bias: &'a [F],
    /// `[H·P]` per synapse, or `[1]`.
    pub lambda: &'a [F],
    /// `[H·P]` per synapse, or `[1]`.
    pub gamma: &'a [F],
}

/// A sequence's input and initial state, as host slices.
#[derive(Clone, Copy, Debug)]
pub struct Sequence<'a, F> {
    /// Number of time steps `T`.
    pub steps: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// Inputs `[T, B, I]`, time-major.
    pub inputs: &'a [F],
    /// Initial hidden state `h_0`, `[B, H]`.
    pub hidden: &'a [F],
    /// Initial synaptic state `F_0`, `[B, H, P]`.
    pub synaptic: &'a [F],
    /// Steps of each batch element, `[B]`, each at most `T`, for sequences padded at their
    /// ends: an element stops after its own steps (its outputs beyond stay zero, its final
    /// state is the one after its last step, the gradients reaching its padded outputs are
    /// ignored). Empty: every element runs all `T` steps.
    pub lengths: &'a [usize],
}

impl<F> Sequence<'_, F> {
    /// The number of steps batch element `element` runs.
    pub fn length(&self, element: usize) -> usize {
        self.lengths.get(element).copied().unwrap_or(self.steps)
    }
}

/// Outputs of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput<F> {
    /// The outputs `[T, B, H]`, the final hidden state `[B, H]` and the final synaptic state
    /// `[B, H, P]`, one after the other in one buffer (the autodiff node's single output).
    pub packed: Vec<F>,
    /// Where the final hidden and synaptic states start in `packed`.
    pub(super) hidden_start: usize,
    pub(super) synaptic_start: usize,
    /// What [`super::backward`] starts from, so that it need not run the forward again (empty
    /// when not asked for: a forward without backward).
    pub checkpoints: Checkpoints<F>,
}

/// What the forward keeps for the backward: the state `[h ; F]` entering every `interval`-th
/// step, and every step's record (per unit: the drive, the norm, `h_t`, and the
/// post-normalisation norm in post mode). The backward rebuilds the states between two
/// checkpoints from the records with elementwise updates only, without the steps' reductions
/// (memory in √T with the interval ⌈√T⌉ of [`super::forward`]; keeping every state instead,
/// measured on the associative-retrieval step, was slower: the states leave the caches).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoints<F> {
    /// Steps between two kept states (0: nothing kept).
    pub(super) interval: usize,
    /// `[B, ⌈T / interval⌉, H + H·P]`.
    pub(super) states: Vec<F>,
    /// `[B, T, record]`.
    pub(super) records: Vec<F>,
    /// States and records are in the layout of `lanes` (batch elements in groups side by side,
    /// `[groups, ...]`), not one element after another.
    pub(super) lanes: bool,
}

impl<F> Checkpoints<F> {
    /// Whether nothing is kept (a forward without backward).
    pub fn is_empty(&self) -> bool {
        self.interval == 0
    }
}

impl<F> ForwardOutput<F> {
    /// The outputs, `[T, B, H]`.
    pub fn outputs(&self) -> &[F] {
        &self.packed[..self.hidden_start]
    }

    /// The final hidden state, `[B, H]`.
    pub fn hidden(&self) -> &[F] {
        &self.packed[self.hidden_start..self.synaptic_start]
    }

    /// The final synaptic state, `[B, H, P]`.
    pub fn synaptic(&self) -> &[F] {
        &self.packed[self.synaptic_start..]
    }
}

/// Gradients of the backward pass, each in the layout of what it is the gradient of.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<F> {
    /// Gradient of the slow weights, `[H·P]`.
    pub weight: Vec<F>,
    /// Gradient of the bias, `[H]`.
    pub bias: Vec<F>,
    /// Gradient of Λ, `[H·P]` or `[1]`.
    pub lambda: Vec<F>,
    /// Gradient of Γ, `[H·P]` or `[1]`.
    pub gamma: Vec<F>,
    /// Gradient of the inputs, `[T, B, I]`.
    pub inputs: Vec<F>,
    /// Gradient of the initial hidden state, `[B, H]`.
    pub hidden: Vec<F>,
    /// Gradient of the initial synaptic state, `[B, H, P]`.
    pub synaptic: Vec<F>,
}
