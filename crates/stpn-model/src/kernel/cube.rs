//! The fused STPN sequence kernel in CubeCL, for Burn's cube backend (wgpu here; the same code
//! compiles for CUDA, ROCm and Metal): the forward of a whole sequence and its exact backward,
//! each one kernel launch, with the time loop inside the kernel.
//!
//! # Equations
//!
//! Those of the host kernel ([`super::cpu`]) and of the op-by-op `StpnR`, for every option of
//! [`KernelConfig`]: with `z_t = [x_t ; h_{t-1}]` (or `x_t` when not recurrent), `G = W + F_{t-1}`
//! and `n_i = ‖G_i‖₂` (√(Σ G² + 1e-30), as the host kernel),
//!
//! ```text
//! a_t = G z_t / (n + ε) + b        (normalised; the bias only with `normalised_bias`)
//! a_t = G z_t + b                  (not normalised)
//! h_t = φ(a_t)                     (tanh or the logistic function)
//! F'  = Λ ⊙ s(F_{t-1}) / (n + ε) + Γ ⊙ (h_t ⊗ p_t)   (the division with pre-normalisation of the state)
//! F_t = clamp(F', ±c)              (with a clamp), then / (‖W + F_t‖ + ε) per row (post-normalisation)
//! ```
//!
//! where `s` is the identity or the activation (`squash_state`), `p_t = z_t` or `[x_t ; h_t]`
//! ([`super::Presynaptic::CurrentHidden`]), Λ and Γ per synapse or one scalar each, ε = 1e-16.
//! The backward is the exact gradient of these steps (the same formulas as
//! `cpu::Kernel::step_backward`), to `W`, `b`, Λ, Γ, the inputs and the initial state.
//!
//! # Mapping onto the device
//!
//! One cube per batch element; its units share the `H·P` synapses (unit `u` owns synapses
//! `u, u + D, u + 2D, …` for a cube of `D` units), the `H` rows (the reductions of one row:
//! drive, norm, the gradients of `h`) and the `P` columns (the reductions over rows: the gradient
//! of the presynaptic vector). Phases are separated by a cube barrier. Because a unit always owns
//! the same synapses, the per-synapse gradient accumulators need no atomics.
//!
//! # Memory
//!
//! Each cube's working state (`F`, `z`, `h`, the per-row drive and norms, and in the backward
//! `∂L/∂F` and the per-row gradients; [`KernelShape::backward_work_size`] floats) lives in shared
//! memory when it fits the device's limit, in a global buffer (one slice per batch element)
//! otherwise. Layouts are row-major and contiguous: inputs `[T, B, I]`, hidden `[B, H]`, synaptic
//! state `[B, H, P]`, weights, Λ and Γ `[H, P]` (Λ, Γ: or `[1]`).
//!
//! Memory in `T` is bounded as on the host: the forward stores the state `[h ; F]` entering every
//! ⌈√T⌉-th step (`[B, ⌈T/k⌉, H + H·P]`); the backward recomputes one segment of `k` steps at a
//! time from its checkpoint into a segment buffer (`[B, k, H + H·P]`), then runs the segment's
//! steps backward. The parameter gradients are accumulated per batch element (`[B, 3·H·P + H]`)
//! and summed over the batch by one reduction on the device.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::options::{Activation, KernelConfig, Normalisation};

/// The options and sizes a kernel is compiled for (one compilation per distinct value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelShape {
    /// `I`.
    pub inputs: usize,
    /// `H`.
    pub units: usize,
    /// `P`, the length of the presynaptic vector.
    pub width: usize,
    /// The drive is divided by the row norm (pre or post).
    pub normalised: bool,
    /// The updated state is divided by the row norm of `W + F_t`.
    pub post: bool,
    /// The update divides `F_{t-1}` by the row norm (STPNr with pre-normalisation).
    pub scales_state: bool,
    /// The bias enters the preactivation.
    pub bias_applies: bool,
    /// The update's presynaptic vector holds `h_t` rather than `h_{t-1}`.
    pub update_from_current: bool,
    /// `h_{t-1}` is part of `z_t`.
    pub recurrent: bool,
    /// The logistic activation (tanh otherwise).
    pub sigmoid: bool,
    /// `F` is clipped to `[-c, c]`.
    pub clamped: bool,
    /// The update decays `tanh(F_{t-1})`.
    pub squash_state: bool,
    /// Λ is one scalar.
    pub scalar_lambda: bool,
    /// Γ is one scalar.
    pub scalar_gamma: bool,
    /// The working state lives in shared memory (global memory otherwise).
    pub in_shared: bool,
    /// The forward stores checkpoints for a backward.
    pub keep_checkpoints: bool,
}

impl KernelShape {
    /// The shape of `config`'s kernels, with Λ and Γ scalar or not.
    pub fn new(config: &KernelConfig, scalar_lambda: bool, scalar_gamma: bool) -> Self {
        let normalised = config.normalised();
        Self {
            inputs: config.input_size,
            units: config.hidden_size,
            width: config.presynaptic_size(),
            normalised,
            post: config.normalisation == Normalisation::Post,
            scales_state: config.scales_state(),
            bias_applies: !normalised || config.normalised_bias,
            update_from_current: !config.update_sees_drive_presynaptic(),
            recurrent: config.recurrent,
            sigmoid: config.activation == Activation::Sigmoid,
            clamped: config.clamp.is_some(),
            squash_state: config.squash_state,
            scalar_lambda,
            scalar_gamma,
            in_shared: true,
            keep_checkpoints: true,
        }
    }

    /// `H·P`.
    pub fn synapses(&self) -> usize {
        self.units * self.width
    }

    /// `H + H·P`, one stored state.
    pub fn state_size(&self) -> usize {
        self.units + self.synapses()
    }

    // The working state of one cube: [F | z | h | drive | norm | denominator | post-norm], then in
    // the backward [∂L/∂F | ∂L/∂p | Σ ∂L/∂F·F'' | ∂L/∂h | ∂L/∂drive | ∂L/∂norm].
    fn presynaptic_at(&self) -> usize {
        self.synapses()
    }
    fn hidden_at(&self) -> usize {
        self.presynaptic_at() + self.width
    }
    fn drive_at(&self) -> usize {
        self.hidden_at() + self.units
    }
    fn norm_at(&self) -> usize {
        self.drive_at() + self.units
    }
    fn denominator_at(&self) -> usize {
        self.norm_at() + self.units
    }
    fn post_norm_at(&self) -> usize {
        self.denominator_at() + self.units
    }

    /// Floats of a forward cube's working state.
    pub fn forward_work_size(&self) -> usize {
        self.post_norm_at() + self.units
    }

    fn grad_synaptic_at(&self) -> usize {
        self.forward_work_size()
    }
    fn grad_update_at(&self) -> usize {
        self.grad_synaptic_at() + self.synapses()
    }
    fn weighted_at(&self) -> usize {
        self.grad_update_at() + self.width
    }
    fn grad_hidden_at(&self) -> usize {
        self.weighted_at() + self.units
    }
    fn grad_drive_at(&self) -> usize {
        self.grad_hidden_at() + self.units
    }
    fn grad_norm_at(&self) -> usize {
        self.grad_drive_at() + self.units
    }

    /// Floats of a backward cube's working state.
    pub fn backward_work_size(&self) -> usize {
        self.grad_norm_at() + self.units
    }

    /// Floats of one batch element's parameter gradients: `W`, Λ, Γ (per synapse) and `b`.
    pub fn parameter_gradient_size(&self) -> usize {
        3 * self.synapses() + self.units
    }
}

/// A barrier between two phases: over shared memory, or over global memory as well when the
/// working state lives there.
#[cube]
fn barrier(#[comptime] in_shared: bool) {
    if comptime!(in_shared) {
        sync_cube();
    } else {
        sync_storage();
    }
}

/// `φ(a)`: tanh, or the logistic function as `(1 + tanh(a/2)) / 2` (the host kernel's form).
#[cube]
fn activate(preactivation: f32, #[comptime] sigmoid: bool) -> f32 {
    let mut hidden = preactivation.tanh();
    if comptime!(sigmoid) {
        hidden = (1.0f32 + (preactivation * 0.5f32).tanh()) * 0.5f32;
    }
    hidden
}

/// `φ'(a)` from `φ(a)`.
#[cube]
fn activation_derivative(hidden: f32, #[comptime] sigmoid: bool) -> f32 {
    let mut derivative = 1.0f32 - hidden * hidden;
    if comptime!(sigmoid) {
        derivative = hidden * (1.0f32 - hidden);
    }
    derivative
}

/// Λ or Γ of synapse `synapse` (the scalar for every synapse).
#[cube]
fn plastic_parameter(values: &[f32], synapse: usize, #[comptime] scalar: bool) -> f32 {
    let mut value = values[0];
    if comptime!(!scalar) {
        value = values[synapse];
    }
    value
}

/// `p_j`, the update's presynaptic value for column `column`: `z_j`, or `h_t` for the recurrent
/// columns when the update sees the current hidden state.
#[cube]
fn update_presynaptic(
    work: &mut [f32],
    base: usize,
    column: usize,
    #[comptime] shape: KernelShape,
) -> f32 {
    let inputs = comptime!(shape.inputs);
    let mut value = work[base + comptime!(shape.presynaptic_at()) + column];
    if comptime!(shape.update_from_current) {
        if column >= inputs {
            value = work[base + comptime!(shape.hidden_at()) + column - inputs];
        }
    }
    value
}

/// `s(F_{t-1})`, what the update decays: `F_{t-1}`, or the activation of it.
#[cube]
fn decaying(previous: f32, #[comptime] shape: KernelShape) -> f32 {
    let mut value = previous;
    if comptime!(shape.squash_state) {
        value = activate(previous, comptime!(shape.sigmoid));
    }
    value
}

/// `1 / (n + ε)` of row `row` when the update scales the state, 1 otherwise.
#[cube]
fn inverse_scale(work: &mut [f32], base: usize, row: usize, #[comptime] shape: KernelShape) -> f32 {
    let mut value = 1.0f32;
    if comptime!(shape.scales_state) {
        value = 1.0f32 / work[base + comptime!(shape.denominator_at()) + row];
    }
    value
}

/// `F'` of synapse `synapse` (row `row`, column `column`) before the clamp, from the working
/// state after the neuron phase.
#[cube]
#[allow(clippy::too_many_arguments)]
fn unclamped_update(
    lambda: &[f32],
    gamma: &[f32],
    work: &mut [f32],
    base: usize,
    synapse: usize,
    row: usize,
    column: usize,
    #[comptime] shape: KernelShape,
) -> f32 {
    let lambda_value = plastic_parameter(lambda, synapse, comptime!(shape.scalar_lambda));
    let gamma_value = plastic_parameter(gamma, synapse, comptime!(shape.scalar_gamma));
    let post = work[base + comptime!(shape.hidden_at()) + row];
    let presynaptic = update_presynaptic(work, base, column, shape);
    let scale = inverse_scale(work, base, row, shape);
    lambda_value * (decaying(work[base + synapse], shape) * scale)
        + gamma_value * post * presynaptic
}

/// `clamp(value, ±limit)` when the layer clamps.
#[cube]
fn clamp_state(value: f32, limit: f32, #[comptime] clamped: bool) -> f32 {
    let mut result = value;
    if comptime!(clamped) {
        result = select(result > limit, limit, result);
        result = select(result < -limit, -limit, result);
    }
    result
}

/// The neuron phase for the rows this unit owns: drive, norm and `h_t` from `z_t` and
/// `F_{t-1}`, into the working state.
#[cube]
fn neuron_rows(
    weight: &[f32],
    bias: &[f32],
    work: &mut [f32],
    base: usize,
    #[comptime] shape: KernelShape,
) {
    let units = comptime!(shape.units);
    let width = comptime!(shape.width);
    let presynaptic_at = base + comptime!(shape.presynaptic_at());
    let stride = CUBE_DIM as usize;
    let mut row = UNIT_POS as usize;
    while row < units {
        let start = row * width;
        let mut drive = 0.0f32;
        let mut squares = 0.0f32;
        for column in 0..width {
            let efficacy = weight[start + column] + work[base + start + column];
            drive += efficacy * work[presynaptic_at + column];
            squares += efficacy * efficacy;
        }
        let mut norm = 1.0f32;
        let mut denominator = 1.0f32;
        let mut preactivation = drive + bias[row];
        if comptime!(shape.normalised) {
            norm = (squares + 1e-30f32).sqrt();
            denominator = norm + 1e-16f32;
            preactivation = drive / denominator;
            if comptime!(shape.bias_applies) {
                preactivation += bias[row];
            }
        }
        work[base + comptime!(shape.hidden_at()) + row] =
            activate(preactivation, comptime!(shape.sigmoid));
        work[base + comptime!(shape.drive_at()) + row] = drive;
        work[base + comptime!(shape.norm_at()) + row] = norm;
        work[base + comptime!(shape.denominator_at()) + row] = denominator;
        row += stride;
    }
}

/// One forward step of one batch element. Before: the working state holds `F_{t-1}` and
/// `h_{t-1}`; after: `F_t`, `h_t`, `z_t` and the step's per-row drive and norms.
#[cube]
#[allow(clippy::too_many_arguments)]
fn forward_step(
    inputs: &[f32],
    weight: &[f32],
    bias: &[f32],
    lambda: &[f32],
    gamma: &[f32],
    work: &mut [f32],
    base: usize,
    input_at: usize,
    limit: f32,
    #[comptime] shape: KernelShape,
) {
    let input_size = comptime!(shape.inputs);
    let units = comptime!(shape.units);
    let width = comptime!(shape.width);
    let synapses = comptime!(shape.synapses());
    let presynaptic_at = base + comptime!(shape.presynaptic_at());
    let hidden_at = base + comptime!(shape.hidden_at());
    let stride = CUBE_DIM as usize;

    // z_t = [x_t ; h_{t-1}]
    let mut column = UNIT_POS as usize;
    while column < width {
        if column < input_size {
            work[presynaptic_at + column] = inputs[input_at + column];
        } else {
            work[presynaptic_at + column] = work[hidden_at + column - input_size];
        }
        column += stride;
    }
    barrier(comptime!(shape.in_shared));

    neuron_rows(weight, bias, work, base, shape);
    barrier(comptime!(shape.in_shared));

    // The plastic update, in place: F_{t-1} is read by its own synapse only.
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        let row = synapse / width;
        let column = synapse % width;
        let updated = unclamped_update(lambda, gamma, work, base, synapse, row, column, shape);
        work[base + synapse] = clamp_state(updated, limit, comptime!(shape.clamped));
        synapse += stride;
    }
    barrier(comptime!(shape.in_shared));

    if comptime!(shape.post) {
        // F_t = F'' / (‖W + F''‖ + ε), row by row.
        let post_norm_at = base + comptime!(shape.post_norm_at());
        let mut row = UNIT_POS as usize;
        while row < units {
            let start = row * width;
            let mut squares = 0.0f32;
            for column in 0..width {
                let efficacy = weight[start + column] + work[base + start + column];
                squares += efficacy * efficacy;
            }
            work[post_norm_at + row] = (squares + 1e-30f32).sqrt();
            row += stride;
        }
        barrier(comptime!(shape.in_shared));
        let mut synapse = UNIT_POS as usize;
        while synapse < synapses {
            let row = synapse / width;
            work[base + synapse] = work[base + synapse] / (work[post_norm_at + row] + 1e-16f32);
            synapse += stride;
        }
        barrier(comptime!(shape.in_shared));
    }
}

/// The forward of one batch element over the whole sequence (see the module documentation).
#[cube]
#[allow(clippy::too_many_arguments)]
fn forward_sequence(
    inputs: &[f32],
    hidden0: &[f32],
    synaptic0: &[f32],
    weight: &[f32],
    bias: &[f32],
    lambda: &[f32],
    gamma: &[f32],
    packed: &mut [f32],
    checkpoints: &mut [f32],
    work: &mut [f32],
    base: usize,
    steps: usize,
    batch: usize,
    interval: usize,
    limit: f32,
    #[comptime] shape: KernelShape,
) {
    let units = comptime!(shape.units);
    let synapses = comptime!(shape.synapses());
    let state_size = comptime!(shape.state_size());
    let input_size = comptime!(shape.inputs);
    let hidden_at = base + comptime!(shape.hidden_at());
    let element = CUBE_POS as usize;
    let stride = CUBE_DIM as usize;

    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        work[base + synapse] = synaptic0[element * synapses + synapse];
        synapse += stride;
    }
    let mut row = UNIT_POS as usize;
    while row < units {
        work[hidden_at + row] = hidden0[element * units + row];
        row += stride;
    }
    barrier(comptime!(shape.in_shared));

    let checkpoint_count = (steps + interval - 1) / interval;
    for step in 0..steps {
        if comptime!(shape.keep_checkpoints) {
            // Each unit copies the values it owns, before the step changes them.
            if step % interval == 0 {
                let at = (element * checkpoint_count + step / interval) * state_size;
                let mut row = UNIT_POS as usize;
                while row < units {
                    checkpoints[at + row] = work[hidden_at + row];
                    row += stride;
                }
                let mut synapse = UNIT_POS as usize;
                while synapse < synapses {
                    checkpoints[at + units + synapse] = work[base + synapse];
                    synapse += stride;
                }
            }
        }
        let input_at = (step * batch + element) * input_size;
        forward_step(
            inputs, weight, bias, lambda, gamma, work, base, input_at, limit, shape,
        );
        let output_at = (step * batch + element) * units;
        let mut row = UNIT_POS as usize;
        while row < units {
            packed[output_at + row] = work[hidden_at + row];
            row += stride;
        }
    }

    let hidden_end = steps * batch * units;
    let synaptic_end = hidden_end + batch * units;
    let mut row = UNIT_POS as usize;
    while row < units {
        packed[hidden_end + element * units + row] = work[hidden_at + row];
        row += stride;
    }
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        packed[synaptic_end + element * synapses + synapse] = work[base + synapse];
        synapse += stride;
    }
}

/// The forward kernel: one cube per batch element. Writes `packed` = outputs `[T, B, H]`, final
/// hidden `[B, H]` and final synaptic state `[B, H, P]` one after the other, and the checkpoints.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn stpn_forward_kernel(
    inputs: &[f32],
    hidden0: &[f32],
    synaptic0: &[f32],
    weight: &[f32],
    bias: &[f32],
    lambda: &[f32],
    gamma: &[f32],
    packed: &mut [f32],
    checkpoints: &mut [f32],
    global_work: &mut [f32],
    steps: u32,
    batch: u32,
    interval: u32,
    limit: f32,
    #[comptime] shape: KernelShape,
) {
    let steps = steps as usize;
    let batch = batch as usize;
    let interval = interval as usize;
    if comptime!(shape.in_shared) {
        let mut work = Shared::<[f32]>::new_slice(comptime!(shape.forward_work_size()));
        forward_sequence(
            inputs,
            hidden0,
            synaptic0,
            weight,
            bias,
            lambda,
            gamma,
            packed,
            checkpoints,
            &mut work,
            0,
            steps,
            batch,
            interval,
            limit,
            shape,
        );
    } else {
        let base = CUBE_POS as usize * comptime!(shape.forward_work_size());
        forward_sequence(
            inputs,
            hidden0,
            synaptic0,
            weight,
            bias,
            lambda,
            gamma,
            packed,
            checkpoints,
            global_work,
            base,
            steps,
            batch,
            interval,
            limit,
            shape,
        );
    }
}

/// One backward step of one batch element, for step `step` whose entering state is stored at
/// `segment_at`. Before: the working state holds `∂L/∂h_t` (without the output's own gradient)
/// and `∂L/∂F_t`; after: `∂L/∂h_{t-1}` and `∂L/∂F_{t-1}`. Writes `∂L/∂x_t` and accumulates the
/// parameter gradients at `parameters_at`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn backward_step(
    inputs: &[f32],
    weight: &[f32],
    bias: &[f32],
    lambda: &[f32],
    gamma: &[f32],
    grad_packed: &[f32],
    segment: &mut [f32],
    grad_inputs: &mut [f32],
    parameter_grads: &mut [f32],
    work: &mut [f32],
    base: usize,
    segment_at: usize,
    parameters_at: usize,
    step: usize,
    batch: usize,
    limit: f32,
    #[comptime] shape: KernelShape,
) {
    let input_size = comptime!(shape.inputs);
    let units = comptime!(shape.units);
    let width = comptime!(shape.width);
    let synapses = comptime!(shape.synapses());
    let presynaptic_at = base + comptime!(shape.presynaptic_at());
    let hidden_at = base + comptime!(shape.hidden_at());
    let drive_at = base + comptime!(shape.drive_at());
    let norm_at = base + comptime!(shape.norm_at());
    let denominator_at = base + comptime!(shape.denominator_at());
    let post_norm_at = base + comptime!(shape.post_norm_at());
    let grad_synaptic_at = base + comptime!(shape.grad_synaptic_at());
    let grad_update_at = base + comptime!(shape.grad_update_at());
    let weighted_at = base + comptime!(shape.weighted_at());
    let grad_hidden_at = base + comptime!(shape.grad_hidden_at());
    let grad_drive_at = base + comptime!(shape.grad_drive_at());
    let grad_norm_at = base + comptime!(shape.grad_norm_at());
    let grad_weight_at = parameters_at;
    let grad_lambda_at = parameters_at + synapses;
    let grad_gamma_at = parameters_at + 2 * synapses;
    let grad_bias_at = parameters_at + 3 * synapses;
    let element = CUBE_POS as usize;
    let stride = CUBE_DIM as usize;
    let input_at = (step * batch + element) * input_size;

    // The state entering the step, z_t, and the output's gradient added to ∂L/∂h_t.
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        work[base + synapse] = segment[segment_at + units + synapse];
        synapse += stride;
    }
    let mut column = UNIT_POS as usize;
    while column < width {
        if column < input_size {
            work[presynaptic_at + column] = inputs[input_at + column];
        } else {
            work[presynaptic_at + column] = segment[segment_at + column - input_size];
        }
        column += stride;
    }
    let output_at = (step * batch + element) * units;
    let mut row = UNIT_POS as usize;
    while row < units {
        work[grad_hidden_at + row] += grad_packed[output_at + row];
        row += stride;
    }
    barrier(comptime!(shape.in_shared));

    // The step's forward quantities: drive, norms, h_t.
    neuron_rows(weight, bias, work, base, shape);
    barrier(comptime!(shape.in_shared));

    if comptime!(shape.post) {
        // Per row: ‖W + F''‖ and Σ ∂L/∂F_t · F'' (F'' = clamp(F')).
        let mut row = UNIT_POS as usize;
        while row < units {
            let start = row * width;
            let mut squares = 0.0f32;
            let mut weighted = 0.0f32;
            for column in 0..width {
                let synapse = start + column;
                let clamped = clamp_state(
                    unclamped_update(lambda, gamma, work, base, synapse, row, column, shape),
                    limit,
                    comptime!(shape.clamped),
                );
                let efficacy = weight[synapse] + clamped;
                squares += efficacy * efficacy;
                weighted += work[grad_synaptic_at + synapse] * clamped;
            }
            work[post_norm_at + row] = (squares + 1e-30f32).sqrt();
            work[weighted_at + row] = weighted;
            row += stride;
        }
        barrier(comptime!(shape.in_shared));
    }

    // Per synapse: the gradient reaching F' (through the post-normalisation and the clamp), and
    // the gradients of Λ and Γ.
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        let row = synapse / width;
        let column = synapse % width;
        let unclamped = unclamped_update(lambda, gamma, work, base, synapse, row, column, shape);
        let mut grad = work[grad_synaptic_at + synapse];
        if comptime!(shape.post) {
            let norm = work[post_norm_at + row];
            let denominator = norm + 1e-16f32;
            let through_norm = work[weighted_at + row] / (denominator * denominator * norm);
            let efficacy =
                weight[synapse] + clamp_state(unclamped, limit, comptime!(shape.clamped));
            grad = grad / denominator - efficacy * through_norm;
            parameter_grads[grad_weight_at + synapse] -= efficacy * through_norm;
        }
        if comptime!(shape.clamped) {
            let outside = unclamped < -limit || unclamped > limit;
            grad = select(outside, 0.0f32, grad);
        }
        let scale = inverse_scale(work, base, row, shape);
        let decayed = decaying(work[base + synapse], shape);
        let post = work[hidden_at + row];
        let presynaptic = update_presynaptic(work, base, column, shape);
        parameter_grads[grad_lambda_at + synapse] += grad * (decayed * scale);
        parameter_grads[grad_gamma_at + synapse] += grad * post * presynaptic;
        work[grad_synaptic_at + synapse] = grad;
        synapse += stride;
    }
    barrier(comptime!(shape.in_shared));

    // Per column: ∂L/∂p_j = Σ_i g_ij Γ_ij h_i.
    let mut column = UNIT_POS as usize;
    while column < width {
        let mut sum = 0.0f32;
        for row in 0..units {
            let synapse = row * width + column;
            let gamma_value = plastic_parameter(gamma, synapse, comptime!(shape.scalar_gamma));
            sum += work[grad_synaptic_at + synapse] * gamma_value * work[hidden_at + row];
        }
        work[grad_update_at + column] = sum;
        column += stride;
    }
    barrier(comptime!(shape.in_shared));

    // Per row: ∂L/∂h_t in full, then through the neuron to the drive and the norm.
    let mut row = UNIT_POS as usize;
    while row < units {
        let start = row * width;
        let scale = inverse_scale(work, base, row, shape);
        let mut grad_post = 0.0f32;
        let mut grad_scaled = 0.0f32;
        for column in 0..width {
            let synapse = start + column;
            let grad = work[grad_synaptic_at + synapse];
            let gamma_value = plastic_parameter(gamma, synapse, comptime!(shape.scalar_gamma));
            grad_post += grad * gamma_value * update_presynaptic(work, base, column, shape);
            if comptime!(shape.scales_state) {
                let lambda_value =
                    plastic_parameter(lambda, synapse, comptime!(shape.scalar_lambda));
                grad_scaled += grad * lambda_value * decaying(work[base + synapse], shape);
            }
        }
        let mut grad_hidden = work[grad_hidden_at + row] + grad_post;
        if comptime!(shape.update_from_current) {
            grad_hidden += work[grad_update_at + input_size + row];
        }
        let hidden = work[hidden_at + row];
        let grad_preactivation =
            grad_hidden * activation_derivative(hidden, comptime!(shape.sigmoid));
        if comptime!(shape.bias_applies) {
            parameter_grads[grad_bias_at + row] += grad_preactivation;
        }
        let mut grad_drive = grad_preactivation;
        let mut grad_norm = 0.0f32;
        if comptime!(shape.normalised) {
            let denominator = work[denominator_at + row];
            // Through the update's division of F_{t-1} by the same denominator.
            let grad_denominator_state = -grad_scaled * scale * scale;
            let grad_denominator = grad_denominator_state
                - grad_preactivation * work[drive_at + row] / (denominator * denominator);
            grad_drive = grad_preactivation / denominator;
            grad_norm = grad_denominator / work[norm_at + row];
        }
        work[grad_drive_at + row] = grad_drive;
        work[grad_norm_at + row] = grad_norm;
        row += stride;
    }
    barrier(comptime!(shape.in_shared));

    // Per synapse: ∂L/∂F_{t-1} and ∂L/∂W.
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        let row = synapse / width;
        let column = synapse % width;
        let grad = work[grad_synaptic_at + synapse];
        let lambda_value = plastic_parameter(lambda, synapse, comptime!(shape.scalar_lambda));
        let previous = work[base + synapse];
        let mut grad_previous = grad * lambda_value * inverse_scale(work, base, row, shape);
        if comptime!(shape.squash_state) {
            let squashed = activate(previous, comptime!(shape.sigmoid));
            grad_previous *= activation_derivative(squashed, comptime!(shape.sigmoid));
        }
        let efficacy = weight[synapse] + previous;
        let grad_efficacy = work[grad_drive_at + row] * work[presynaptic_at + column]
            + work[grad_norm_at + row] * efficacy;
        parameter_grads[grad_weight_at + synapse] += grad_efficacy;
        work[grad_synaptic_at + synapse] = grad_previous + grad_efficacy;
        synapse += stride;
    }
    // Per column (same phase: it reads none of what the synapse loop writes): ∂L/∂z_t, split
    // into ∂L/∂x_t and ∂L/∂h_{t-1}.
    let mut column = UNIT_POS as usize;
    while column < width {
        let mut sum = 0.0f32;
        for row in 0..units {
            let synapse = row * width + column;
            sum += work[grad_drive_at + row] * (weight[synapse] + work[base + synapse]);
        }
        if comptime!(shape.update_from_current) {
            if column < input_size {
                sum += work[grad_update_at + column];
            }
        } else {
            sum += work[grad_update_at + column];
        }
        if column < input_size {
            grad_inputs[input_at + column] = sum;
        } else {
            work[grad_hidden_at + column - input_size] = sum;
        }
        column += stride;
    }
    if comptime!(!shape.recurrent) {
        let mut row = UNIT_POS as usize;
        while row < units {
            work[grad_hidden_at + row] = 0.0f32;
            row += stride;
        }
    }
    barrier(comptime!(shape.in_shared));
}

/// The backward of one batch element over the whole sequence, segment by segment from the last.
#[cube]
#[allow(clippy::too_many_arguments)]
fn backward_sequence(
    inputs: &[f32],
    weight: &[f32],
    bias: &[f32],
    lambda: &[f32],
    gamma: &[f32],
    checkpoints: &[f32],
    grad_packed: &[f32],
    grad_inputs: &mut [f32],
    grad_initial: &mut [f32],
    parameter_grads: &mut [f32],
    segment: &mut [f32],
    work: &mut [f32],
    base: usize,
    steps: usize,
    batch: usize,
    interval: usize,
    limit: f32,
    #[comptime] shape: KernelShape,
) {
    let units = comptime!(shape.units);
    let synapses = comptime!(shape.synapses());
    let state_size = comptime!(shape.state_size());
    let input_size = comptime!(shape.inputs);
    let hidden_at = base + comptime!(shape.hidden_at());
    let grad_synaptic_at = base + comptime!(shape.grad_synaptic_at());
    let grad_hidden_at = base + comptime!(shape.grad_hidden_at());
    let element = CUBE_POS as usize;
    let stride = CUBE_DIM as usize;
    let parameters_at = element * comptime!(shape.parameter_gradient_size());

    // Zero this element's parameter gradients; each unit the entries it will accumulate into.
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        parameter_grads[parameters_at + synapse] = 0.0f32;
        parameter_grads[parameters_at + synapses + synapse] = 0.0f32;
        parameter_grads[parameters_at + 2 * synapses + synapse] = 0.0f32;
        synapse += stride;
    }
    let mut row = UNIT_POS as usize;
    while row < units {
        parameter_grads[parameters_at + 3 * synapses + row] = 0.0f32;
        row += stride;
    }
    // ∂L/∂F_T and ∂L/∂h_T from the packed gradient.
    let hidden_end = steps * batch * units;
    let synaptic_end = hidden_end + batch * units;
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        work[grad_synaptic_at + synapse] = grad_packed[synaptic_end + element * synapses + synapse];
        synapse += stride;
    }
    let mut row = UNIT_POS as usize;
    while row < units {
        work[grad_hidden_at + row] = grad_packed[hidden_end + element * units + row];
        row += stride;
    }

    let checkpoint_count = (steps + interval - 1) / interval;
    let mut segment_index = checkpoint_count;
    while segment_index > 0 {
        segment_index -= 1;
        let start = segment_index * interval;
        let mut end = start + interval;
        if end > steps {
            end = steps;
        }
        // The segment's first state, then the state entering each of its steps.
        let at = (element * checkpoint_count + segment_index) * state_size;
        let mut row = UNIT_POS as usize;
        while row < units {
            work[hidden_at + row] = checkpoints[at + row];
            row += stride;
        }
        let mut synapse = UNIT_POS as usize;
        while synapse < synapses {
            work[base + synapse] = checkpoints[at + units + synapse];
            synapse += stride;
        }
        barrier(comptime!(shape.in_shared));
        for offset in 0..end - start {
            let segment_at = (element * interval + offset) * state_size;
            let mut row = UNIT_POS as usize;
            while row < units {
                segment[segment_at + row] = work[hidden_at + row];
                row += stride;
            }
            let mut synapse = UNIT_POS as usize;
            while synapse < synapses {
                segment[segment_at + units + synapse] = work[base + synapse];
                synapse += stride;
            }
            let input_at = ((start + offset) * batch + element) * input_size;
            forward_step(
                inputs, weight, bias, lambda, gamma, work, base, input_at, limit, shape,
            );
        }
        // The segment buffer is global memory, read back by other units than wrote it.
        sync_storage();
        let mut step = end;
        while step > start {
            step -= 1;
            let segment_at = (element * interval + step - start) * state_size;
            backward_step(
                inputs,
                weight,
                bias,
                lambda,
                gamma,
                grad_packed,
                segment,
                grad_inputs,
                parameter_grads,
                work,
                base,
                segment_at,
                parameters_at,
                step,
                batch,
                limit,
                shape,
            );
        }
    }

    // ∂L/∂h_0 and ∂L/∂F_0, `[B, H + H·P]`.
    let mut row = UNIT_POS as usize;
    while row < units {
        grad_initial[element * state_size + row] = work[grad_hidden_at + row];
        row += stride;
    }
    let mut synapse = UNIT_POS as usize;
    while synapse < synapses {
        grad_initial[element * state_size + units + synapse] = work[grad_synaptic_at + synapse];
        synapse += stride;
    }
}

/// The backward kernel: one cube per batch element.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn stpn_backward_kernel(
    inputs: &[f32],
    weight: &[f32],
    bias: &[f32],
    lambda: &[f32],
    gamma: &[f32],
    checkpoints: &[f32],
    grad_packed: &[f32],
    grad_inputs: &mut [f32],
    grad_initial: &mut [f32],
    parameter_grads: &mut [f32],
    segment: &mut [f32],
    global_work: &mut [f32],
    steps: u32,
    batch: u32,
    interval: u32,
    limit: f32,
    #[comptime] shape: KernelShape,
) {
    let steps = steps as usize;
    let batch = batch as usize;
    let interval = interval as usize;
    if comptime!(shape.in_shared) {
        let mut work = Shared::<[f32]>::new_slice(comptime!(shape.backward_work_size()));
        backward_sequence(
            inputs,
            weight,
            bias,
            lambda,
            gamma,
            checkpoints,
            grad_packed,
            grad_inputs,
            grad_initial,
            parameter_grads,
            segment,
            &mut work,
            0,
            steps,
            batch,
            interval,
            limit,
            shape,
        );
    } else {
        let base = CUBE_POS as usize * comptime!(shape.backward_work_size());
        backward_sequence(
            inputs,
            weight,
            bias,
            lambda,
            gamma,
            checkpoints,
            grad_packed,
            grad_inputs,
            grad_initial,
            parameter_grads,
            segment,
            global_work,
            base,
            steps,
            batch,
            interval,
            limit,
            shape,
        );
    }
}

/// Where a cube's working state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Shared memory when it fits the device's limit, global memory otherwise.
    Automatic,
    /// Global memory (to test that path at small sizes).
    Global,
}

/// The parameters and the sequence, as contiguous float32 device tensors.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Options of the layer.
    pub config: KernelConfig,
    /// `T`.
    pub steps: usize,
    /// `B`.
    pub batch: usize,
    /// Inputs `[T, B, I]`.
    pub inputs: CubeTensor,
    /// `W`, `[H, P]`.
    pub weight: CubeTensor,
    /// `b`, `[H]`.
    pub bias: CubeTensor,
    /// Λ, `[H, P]` or `[1, 1]`.
    pub lambda: CubeTensor,
    /// Γ, `[H, P]` or `[1, 1]`.
    pub gamma: CubeTensor,
    /// Where the working state lives.
    pub placement: Placement,
}

/// What the forward returns.
#[derive(Debug)]
pub struct Forward {
    /// Outputs `[T·B·H]`, final hidden `[B·H]` and final synaptic state `[B·H·P]`, one flat
    /// tensor.
    pub packed: CubeTensor,
    /// `[B, ⌈T/k⌉, H + H·P]` (one float when not kept).
    pub checkpoints: CubeTensor,
}

/// What the backward returns, each in the shape of what it is the gradient of.
#[derive(Debug)]
pub struct Backward {
    /// `[T, B, I]`.
    pub inputs: CubeTensor,
    /// `[B, H]`.
    pub hidden: CubeTensor,
    /// `[B, H, P]`.
    pub synaptic: CubeTensor,
    /// `[H, P]`.
    pub weight: CubeTensor,
    /// `[H]`.
    pub bias: CubeTensor,
    /// `[H, P]` or `[1, 1]`.
    pub lambda: CubeTensor,
    /// `[H, P]` or `[1, 1]`.
    pub gamma: CubeTensor,
}

/// A contiguous float32 tensor, the layout the kernels index.
pub fn prepared(tensor: CubeTensor) -> CubeTensor {
    assert_eq!(
        tensor.dtype,
        DType::F32,
        "the cube STPN kernel runs in float32"
    );
    into_contiguous(tensor)
}

fn empty(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    let elements: usize = shape.iter().product();
    let shape = if elements == 0 { vec![1] } else { shape };
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        DType::F32,
    )
}

impl Launch {
    fn shape(&self, keep_checkpoints: bool, work_size: fn(&KernelShape) -> usize) -> KernelShape {
        let scalar = |tensor: &CubeTensor| tensor.meta.shape().num_elements() == 1;
        let mut shape = KernelShape::new(&self.config, scalar(&self.lambda), scalar(&self.gamma));
        shape.keep_checkpoints = keep_checkpoints;
        let limit = self
            .inputs
            .client
            .properties()
            .hardware
            .max_shared_memory_size;
        shape.in_shared = self.placement == Placement::Automatic
            && work_size(&shape) * std::mem::size_of::<f32>() <= limit;
        shape
    }

    /// Units per cube: enough to cover the synapses, at most 256 (and the device's limit).
    fn cube_dim(&self, shape: &KernelShape) -> CubeDim {
        let limit = self.inputs.client.properties().hardware.max_units_per_cube;
        let wanted = shape.synapses().max(shape.width).next_multiple_of(32) as u32;
        CubeDim::new_1d(wanted.min(256).min(limit))
    }

    fn limit(&self) -> f32 {
        self.config.clamp.unwrap_or(0.0) as f32
    }

    fn interval(&self) -> usize {
        super::checkpoint_interval(self.steps)
    }

    /// The forward from `hidden` (`[B, H]`) and `synaptic` (`[B, H, P]`); checkpoints only when
    /// a backward will follow.
    pub fn forward(
        &self,
        hidden: CubeTensor,
        synaptic: CubeTensor,
        keep_checkpoints: bool,
    ) -> Forward {
        let shape = self.shape(keep_checkpoints, KernelShape::forward_work_size);
        let (steps, batch) = (self.steps, self.batch);
        let (units, synapses) = (shape.units, shape.synapses());
        let hidden = prepared(hidden);
        let synaptic = prepared(synaptic);
        let packed = empty(
            &self.inputs,
            vec![steps * batch * units + batch * units + batch * synapses],
        );
        let checkpoints = if keep_checkpoints {
            empty(
                &self.inputs,
                vec![batch, steps.div_ceil(self.interval()), shape.state_size()],
            )
        } else {
            empty(&self.inputs, vec![1])
        };
        let global_work = if shape.in_shared {
            empty(&self.inputs, vec![1])
        } else {
            empty(&self.inputs, vec![batch, shape.forward_work_size()])
        };
        let client = self.inputs.client.clone();
        stpn_forward_kernel::launch(
            &client,
            CubeCount::Static(batch as u32, 1, 1),
            self.cube_dim(&shape),
            self.inputs.clone().into_buffer_arg(),
            hidden.into_buffer_arg(),
            synaptic.into_buffer_arg(),
            self.weight.clone().into_buffer_arg(),
            self.bias.clone().into_buffer_arg(),
            self.lambda.clone().into_buffer_arg(),
            self.gamma.clone().into_buffer_arg(),
            packed.clone().into_buffer_arg(),
            checkpoints.clone().into_buffer_arg(),
            global_work.into_buffer_arg(),
            steps as u32,
            batch as u32,
            self.interval() as u32,
            self.limit(),
            shape,
        );
        Forward {
            packed,
            checkpoints,
        }
    }

    /// The backward from the forward's `checkpoints` and the gradient of its packed output.
    pub fn backward(&self, checkpoints: CubeTensor, grad_packed: CubeTensor) -> Backward {
        use burn::backend::Slice;
        use burn::backend::ops::FloatTensorOps;
        type Cube = burn_cubecl::CubeBackend;

        let shape = self.shape(true, KernelShape::backward_work_size);
        let (steps, batch, interval) = (self.steps, self.batch, self.interval());
        let (inputs, units, width) = (shape.inputs, shape.units, shape.width);
        let synapses = shape.synapses();
        let grad_packed = prepared(grad_packed);
        let grad_inputs = empty(&self.inputs, vec![steps, batch, inputs]);
        let grad_initial = empty(&self.inputs, vec![batch, shape.state_size()]);
        let parameter_grads = empty(&self.inputs, vec![batch, shape.parameter_gradient_size()]);
        let segment = empty(&self.inputs, vec![batch, interval, shape.state_size()]);
        let global_work = if shape.in_shared {
            empty(&self.inputs, vec![1])
        } else {
            empty(&self.inputs, vec![batch, shape.backward_work_size()])
        };
        let client = self.inputs.client.clone();
        stpn_backward_kernel::launch(
            &client,
            CubeCount::Static(batch as u32, 1, 1),
            self.cube_dim(&shape),
            self.inputs.clone().into_buffer_arg(),
            self.weight.clone().into_buffer_arg(),
            self.bias.clone().into_buffer_arg(),
            self.lambda.clone().into_buffer_arg(),
            self.gamma.clone().into_buffer_arg(),
            checkpoints.into_buffer_arg(),
            grad_packed.into_buffer_arg(),
            grad_inputs.clone().into_buffer_arg(),
            grad_initial.clone().into_buffer_arg(),
            parameter_grads.clone().into_buffer_arg(),
            segment.into_buffer_arg(),
            global_work.into_buffer_arg(),
            steps as u32,
            batch as u32,
            interval as u32,
            self.limit(),
            shape,
        );

        // Sum the per-element parameter gradients over the batch, on the device.
        let summed = Cube::float_sum_dim(parameter_grads, 0);
        let part = |tensor: &CubeTensor, dim1: std::ops::Range<usize>| {
            Cube::float_slice(
                tensor.clone(),
                &[Slice::from(0..tensor.meta.shape()[0]), Slice::from(dim1)],
            )
        };
        let plastic = |start: usize| {
            let per_synapse = part(&summed, start..start + synapses);
            if shape.scalar_lambda && start == synapses
                || shape.scalar_gamma && start == 2 * synapses
            {
                Cube::float_reshape(Cube::float_sum(per_synapse), Shape::from(vec![1, 1]))
            } else {
                Cube::float_reshape(per_synapse, Shape::from(vec![units, width]))
            }
        };
        let weight =
            Cube::float_reshape(part(&summed, 0..synapses), Shape::from(vec![units, width]));
        let lambda = plastic(synapses);
        let gamma = plastic(2 * synapses);
        let bias = Cube::float_reshape(
            part(&summed, 3 * synapses..3 * synapses + units),
            Shape::from(vec![units]),
        );
        let hidden = part(&grad_initial, 0..units);
        let synaptic = Cube::float_reshape(
            part(&grad_initial, units..units + synapses),
            Shape::from(vec![batch, units, width]),
        );
        Backward {
            inputs: grad_inputs,
            hidden,
            synaptic,
            weight,
            bias,
            lambda,
            gamma,
        }
    }
}
