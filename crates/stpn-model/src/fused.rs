//! A fused STPN sequence kernel on host memory: the forward of a whole sequence and its exact,
//! hand-written backward, with the synaptic state checkpointed every `k ≈ √T` steps and recomputed
//! in between, so that backpropagation through time needs memory in `√T`, not `T`. Batch elements
//! are independent and run on threads.
//!
//! The equations are those of [`crate::stpn_r`] (every option: per-synapse or scalar Λ Γ,
//! normalisation off / pre / post, clamp, presynaptic term from `h_{t-1}` or `h_t`, tanh or
//! sigmoid, with or without `h_{t-1}` in the presynaptic vector) and of [`crate::stpn_f`] (the
//! drive alone normalised and no bias then, the squashed state); the op-by-op cells are the
//! reference it is tested against.
//!
//! Speed: each thread runs a copy of the loops compiled for AVX2 where the processor has it
//! (detected at run time); the loops are written so that they vectorise (reductions in lanes,
//! selects instead of branches, slices of known length), and float32 `tanh` is a rational
//! approximation that vectorises too.
//!
//! Layouts (row-major): inputs `[T, B, I]`, outputs `[T, B, H]`, hidden `[B, H]`, synaptic state
//! `[B, H, P]` with `P = I + H` (`P = I` without recurrence), weights `[H, P]`, Λ and Γ `[H, P]`
//! or `[1]`.

use num_traits::Float;

use crate::stpn_r::{Activation, Normalisation, Presynaptic};

/// The options of the cell the kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelConfig {
    pub input_size: usize,
    pub hidden_size: usize,
    pub normalisation: Normalisation,
    pub presynaptic: Presynaptic,
    pub clamp: Option<f64>,
    /// `h_{t-1}` is part of the presynaptic vector (false: the input alone).
    pub recurrent: bool,
    pub activation: Activation,
    /// With pre-normalisation, the update also divides `F_{t-1}` by the row norm (STPNr);
    /// STPNf normalises the drive only.
    pub normalise_state: bool,
    /// A normalised drive gets the bias (STPNr); STPNf's normalised path has none.
    pub normalised_bias: bool,
    /// The update decays `tanh(F_{t-1})` instead of `F_{t-1}` (STPNf's `squash_state`).
    pub squash_state: bool,
}

impl KernelConfig {
    /// `P`, the length of the presynaptic vector: `I + H`, or `I` when not recurrent.
    pub fn presynaptic_size(&self) -> usize {
        self.input_size + if self.recurrent { self.hidden_size } else { 0 }
    }
}

impl Activation {
    /// Applies the activation to a row of preactivations, in place.
    #[inline(always)]
    fn apply_in_place<F: KernelFloat>(self, values: &mut [F]) {
        match self {
            Activation::Tanh => F::tanh_in_place(values),
            // The same form as `plasticity::sigmoid`: σ(x) = (1 + tanh(x/2)) / 2.
            Activation::Sigmoid => {
                let half = constant::<F>(0.5);
                values.iter_mut().for_each(|value| *value = *value * half);
                F::tanh_in_place(values);
                values
                    .iter_mut()
                    .for_each(|value| *value = (F::one() + *value) * half);
            }
        }
    }

    /// The derivative, from the activation's output.
    #[inline(always)]
    fn derivative<F: Float>(self, output: F) -> F {
        match self {
            Activation::Tanh => F::one() - output * output,
            Activation::Sigmoid => output * (F::one() - output),
        }
    }
}

/// The float types the kernel runs in.
pub trait KernelFloat: Float + Send + Sync {
    /// `tanh` of every value, in place.
    fn tanh_in_place(values: &mut [Self]);
}

/// float64, the precision the kernel is tested in against the op-by-op cell: the exact `tanh`.
impl KernelFloat for f64 {
    #[inline(always)]
    fn tanh_in_place(values: &mut [Self]) {
        values.iter_mut().for_each(|value| *value = value.tanh());
    }
}

/// float32, the precision training runs in: a rational approximation that vectorises (glibc's
/// scalar `tanhf` took an eighth of a training step); within 5e-7 of the exact value, a few
/// float32 steps near ±1 (tested).
impl KernelFloat for f32 {
    #[inline(always)]
    fn tanh_in_place(values: &mut [Self]) {
        values
            .iter_mut()
            .for_each(|value| *value = tanh_f32(*value));
    }
}

/// `tanh(x)` for float32 as the ratio of an odd degree-13 and an even degree-6 polynomial, the
/// minimax fit on [-7.9053, 7.9053] that Eigen uses (beyond that range tanh rounds to ±1 in
/// float32); `x` itself below 4e-4, where tanh(x) = x in float32.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    const LIMIT: f32 = 7.905_311;
    const NUMERATOR: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const DENOMINATOR: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let clamped = x.clamp(-LIMIT, LIMIT);
    let square = clamped * clamped;
    let mut numerator = NUMERATOR[6];
    for coefficient in NUMERATOR[..6].iter().rev() {
        numerator = numerator * square + coefficient;
    }
    numerator *= clamped;
    let mut denominator = DENOMINATOR[3];
    for coefficient in DENOMINATOR[..3].iter().rev() {
        denominator = denominator * square + coefficient;
    }
    let ratio = numerator / denominator;
    if x.abs() < 4e-4 { x } else { ratio }
}

/// The parameters, as host slices.
#[derive(Clone, Copy, Debug)]
pub struct Parameters<'a, F> {
    pub weight: &'a [F],
    pub bias: &'a [F],
    /// `[H·P]` per synapse, or `[1]`.
    pub lambda: &'a [F],
    /// `[H·P]` per synapse, or `[1]`.
    pub gamma: &'a [F],
}

/// A sequence's input and initial state, as host slices.
#[derive(Clone, Copy, Debug)]
pub struct Sequence<'a, F> {
    pub steps: usize,
    pub batch: usize,
    pub inputs: &'a [F],
    pub hidden: &'a [F],
    pub synaptic: &'a [F],
}

/// Outputs of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput<F> {
    /// The outputs `[T, B, H]`, the final hidden state `[B, H]` and the final synaptic state
    /// `[B, H, P]`, one after the other in one buffer (the autodiff node's single output).
    pub packed: Vec<F>,
    /// Where the final hidden and synaptic states start in `packed`.
    hidden_start: usize,
    synaptic_start: usize,
    /// The state `[h ; F]` entering every ⌈√T⌉-th step, `[B, checkpoints, H + H·P]`: what
    /// [`backward`] starts from, so that it need not run the forward again. Empty when not
    /// asked for (a forward without backward).
    pub checkpoints: Vec<F>,
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
    pub weight: Vec<F>,
    pub bias: Vec<F>,
    pub lambda: Vec<F>,
    pub gamma: Vec<F>,
    pub inputs: Vec<F>,
    pub hidden: Vec<F>,
    pub synaptic: Vec<F>,
}

fn constant<F: Float>(value: f64) -> F {
    F::from(value).expect("representable constant")
}

/// Per-row quantities of one forward step, kept for its backward.
struct StepTrace<F> {
    /// `Σ_j G_ij z_j`.
    drive: Vec<F>,
    /// `‖G_i‖` (1 when not normalised).
    norm: Vec<F>,
    /// `‖G_i‖ + ε` (1 when not normalised).
    denominator: Vec<F>,
    /// `h_t`.
    hidden: Vec<F>,
    /// The presynaptic vector of the update.
    update_presynaptic: Vec<F>,
    /// `z_t = [x_t ; h_{t-1}]`.
    presynaptic: Vec<F>,
    /// `F'` before the clamp, `[H, P]`.
    unclamped: Vec<F>,
    /// The post-normalisation norm of `W + F''` per row (post mode).
    post_norm: Vec<F>,
    /// `tanh` of a row of `F_{t-1}` (with `squash_state`; not kept for the backward).
    squashed: Vec<F>,
}

struct Kernel<'a, F> {
    config: KernelConfig,
    parameters: Parameters<'a, F>,
    /// Λ and Γ of one row: the parameters' own rows, or the scalar repeated along a row.
    lambda_row: Vec<F>,
    gamma_row: Vec<F>,
}

/// Sums `Σ (w + f)·z` and `Σ (w + f)²` over a row, in independent lanes so that the compiler
/// vectorises the loop (float addition is not reassociated otherwise).
#[inline(always)]
fn drive_and_squares<F: Float>(weight: &[F], synaptic: &[F], presynaptic: &[F]) -> (F, F) {
    const LANES: usize = 8;
    let mut drive = [F::zero(); LANES];
    let mut squares = [F::zero(); LANES];
    let (w_chunks, f_chunks, z_chunks) = (
        weight.chunks_exact(LANES),
        synaptic.chunks_exact(LANES),
        presynaptic.chunks_exact(LANES),
    );
    let (w_rest, f_rest, z_rest) = (
        w_chunks.remainder(),
        f_chunks.remainder(),
        z_chunks.remainder(),
    );
    for ((w, f), z) in w_chunks.zip(f_chunks).zip(z_chunks) {
        for lane in 0..LANES {
            let efficacy = w[lane] + f[lane];
            drive[lane] = drive[lane] + efficacy * z[lane];
            squares[lane] = squares[lane] + efficacy * efficacy;
        }
    }
    let (mut drive_sum, mut squares_sum) = (F::zero(), F::zero());
    for lane in 0..LANES {
        drive_sum = drive_sum + drive[lane];
        squares_sum = squares_sum + squares[lane];
    }
    for ((w, f), z) in w_rest.iter().zip(f_rest).zip(z_rest) {
        let efficacy = *w + *f;
        drive_sum = drive_sum + efficacy * *z;
        squares_sum = squares_sum + efficacy * efficacy;
    }
    (drive_sum, squares_sum)
}

/// `Σ a·b` in independent lanes.
#[inline(always)]
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    const LANES: usize = 8;
    let mut sums = [F::zero(); LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (a, b) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            sums[lane] = sums[lane] + a[lane] * b[lane];
        }
    }
    let mut sum = sums.iter().fold(F::zero(), |total, lane| total + *lane);
    for (a, b) in a_rest.iter().zip(b_rest) {
        sum = sum + *a * *b;
    }
    sum
}

/// `Σ a·b·c` in independent lanes.
#[inline(always)]
fn dot3<F: Float>(a: &[F], b: &[F], c: &[F]) -> F {
    const LANES: usize = 8;
    let mut sums = [F::zero(); LANES];
    let (a_chunks, b_chunks, c_chunks) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (a_rest, b_rest, c_rest) = (
        a_chunks.remainder(),
        b_chunks.remainder(),
        c_chunks.remainder(),
    );
    for ((a, b), c) in a_chunks.zip(b_chunks).zip(c_chunks) {
        for lane in 0..LANES {
            sums[lane] = sums[lane] + a[lane] * b[lane] * c[lane];
        }
    }
    let mut sum = sums.iter().fold(F::zero(), |total, lane| total + *lane);
    for ((a, b), c) in a_rest.iter().zip(b_rest).zip(c_rest) {
        sum = sum + *a * *b * *c;
    }
    sum
}

/// Buffers of one step's backward, reused from step to step.
struct BackwardScratch<F> {
    grad_hidden: Vec<F>,
    grad_update_presynaptic: Vec<F>,
    grad_presynaptic: Vec<F>,
    grad_denominator: Vec<F>,
    /// The gradient reaching `F'` (after the clamp's mask) of one row.
    grad_row: Vec<F>,
    /// `tanh` of a row of `F_{t-1}` (with `squash_state`).
    squashed: Vec<F>,
}

impl<'a, F: KernelFloat> Kernel<'a, F> {
    fn new(config: KernelConfig, parameters: Parameters<'a, F>) -> Self {
        let width = config.presynaptic_size();
        let broadcast = |values: &[F]| {
            if values.len() == 1 {
                vec![values[0]; width]
            } else {
                Vec::new()
            }
        };
        Self {
            lambda_row: broadcast(parameters.lambda),
            gamma_row: broadcast(parameters.gamma),
            config,
            parameters,
        }
    }

    #[inline(always)]
    fn rows(&self, unit: usize) -> (&[F], &[F]) {
        let width = self.config.presynaptic_size();
        let range = unit * width..(unit + 1) * width;
        let lambda = if self.lambda_row.is_empty() {
            &self.parameters.lambda[range.clone()]
        } else {
            &self.lambda_row[..]
        };
        let gamma = if self.gamma_row.is_empty() {
            &self.parameters.gamma[range]
        } else {
            &self.gamma_row[..]
        };
        (lambda, gamma)
    }

    /// Whether the update divides `F_{t-1}` by the row's norm.
    #[inline(always)]
    fn scales_state(&self) -> bool {
        self.config.normalisation == Normalisation::Pre && self.config.normalise_state
    }

    /// The row that the update decays: `F_{t-1}` itself, or `tanh(F_{t-1})` written into
    /// `squashed`.
    #[inline(always)]
    fn decaying<'r>(&self, previous: &'r [F], squashed: &'r mut [F]) -> &'r [F] {
        if self.config.squash_state {
            squashed.copy_from_slice(previous);
            F::tanh_in_place(squashed);
            squashed
        } else {
            previous
        }
    }

    /// Whether the backward needs `F'` before the clamp: for the clamp's mask and the
    /// post-normalisation; otherwise `F'` is `F_t` itself and is not stored twice.
    #[inline(always)]
    fn keeps_unclamped(&self) -> bool {
        self.config.clamp.is_some() || self.config.normalisation == Normalisation::Post
    }

    #[inline(always)]
    fn normalised(&self) -> bool {
        self.config.normalisation != Normalisation::Off
    }

    /// A trace with room for one step, reused from step to step.
    fn trace(&self) -> StepTrace<F> {
        let units = self.config.hidden_size;
        let width = self.config.presynaptic_size();
        StepTrace {
            drive: vec![F::zero(); units],
            norm: vec![F::one(); units],
            denominator: vec![F::one(); units],
            hidden: vec![F::zero(); units],
            update_presynaptic: vec![F::zero(); width],
            presynaptic: vec![F::zero(); width],
            unclamped: if self.keeps_unclamped() {
                vec![F::zero(); units * width]
            } else {
                Vec::new()
            },
            post_norm: vec![F::one(); units],
            squashed: vec![F::zero(); if self.config.squash_state { width } else { 0 }],
        }
    }

    fn scratch(&self) -> BackwardScratch<F> {
        let units = self.config.hidden_size;
        let width = self.config.presynaptic_size();
        BackwardScratch {
            grad_hidden: vec![F::zero(); units],
            grad_update_presynaptic: vec![F::zero(); width],
            grad_presynaptic: vec![F::zero(); width],
            grad_denominator: vec![F::zero(); units],
            grad_row: vec![F::zero(); width],
            squashed: vec![F::zero(); if self.config.squash_state { width } else { 0 }],
        }
    }

    /// One step for one batch element: writes `h_t` and `F_t`, and into `trace` what the
    /// backward of the step needs.
    #[inline(always)]
    fn step(
        &self,
        input: &[F],
        hidden_prev: &[F],
        synaptic_prev: &[F],
        hidden: &mut [F],
        synaptic: &mut [F],
        trace: &mut StepTrace<F>,
    ) {
        let (inputs, units) = (self.config.input_size, self.config.hidden_size);
        let width = self.config.presynaptic_size();
        let weight = self.parameters.weight;
        let epsilon = constant::<F>(crate::plasticity::NORM_EPSILON);
        let floor = constant::<F>(1e-30);
        trace.presynaptic[..inputs].copy_from_slice(input);
        if self.config.recurrent {
            trace.presynaptic[inputs..].copy_from_slice(hidden_prev);
        }
        for unit in 0..units {
            let row = unit * width..(unit + 1) * width;
            let (drive, squares) = drive_and_squares(
                &weight[row.clone()],
                &synaptic_prev[row],
                &trace.presynaptic,
            );
            trace.drive[unit] = drive;
            trace.hidden[unit] = if self.normalised() {
                let norm = (squares + floor).sqrt();
                trace.norm[unit] = norm;
                trace.denominator[unit] = norm + epsilon;
                let bias = if self.config.normalised_bias {
                    self.parameters.bias[unit]
                } else {
                    F::zero()
                };
                drive / trace.denominator[unit] + bias
            } else {
                drive + self.parameters.bias[unit]
            };
        }
        self.config.activation.apply_in_place(&mut trace.hidden);
        hidden.copy_from_slice(&trace.hidden);
        match self.config.presynaptic {
            Presynaptic::CurrentHidden if self.config.recurrent => {
                trace.update_presynaptic[..inputs].copy_from_slice(input);
                trace.update_presynaptic[inputs..].copy_from_slice(&trace.hidden);
            }
            _ => trace.update_presynaptic.copy_from_slice(&trace.presynaptic),
        }
        let limit = self.config.clamp.map(constant::<F>);
        for unit in 0..units {
            let row = unit * width..(unit + 1) * width;
            let inverse_scale = if self.scales_state() {
                F::one() / trace.denominator[unit]
            } else {
                F::one()
            };
            let (lambda, gamma) = self.rows(unit);
            let post = trace.hidden[unit];
            let previous = self.decaying(&synaptic_prev[row.clone()], &mut trace.squashed);
            let (lambda, gamma) = (&lambda[..width], &gamma[..width]);
            let presynaptic = &trace.update_presynaptic[..width];
            let out = &mut synaptic[row.clone()];
            for j in 0..width {
                out[j] =
                    lambda[j] * (previous[j] * inverse_scale) + gamma[j] * post * presynaptic[j];
            }
            if self.keeps_unclamped() {
                trace.unclamped[row.clone()].copy_from_slice(out);
            }
            if let Some(limit) = limit {
                for value in out.iter_mut() {
                    *value = value.max(-limit).min(limit);
                }
            }
            if self.config.normalisation == Normalisation::Post {
                let (_, squares) =
                    drive_and_squares(&weight[row.clone()], out, &trace.update_presynaptic);
                let norm = (squares + floor).sqrt();
                trace.post_norm[unit] = norm;
                let inverse = F::one() / (norm + epsilon);
                for value in out.iter_mut() {
                    *value = *value * inverse;
                }
            }
        }
    }

    /// Backward of one step for one batch element (`trace` from its forward). `grad_hidden` and
    /// `grad_synaptic` are the gradients with respect to `h_t` and `F_t`; writes those with
    /// respect to `h_{t-1}`, `F_{t-1}` and the input, and accumulates the parameters'.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn step_backward(
        &self,
        trace: &StepTrace<F>,
        synaptic_prev: &[F],
        grad_hidden: &[F],
        grad_synaptic: &[F],
        grad_input: &mut [F],
        grad_hidden_prev: &mut [F],
        grad_synaptic_prev: &mut [F],
        grads: &mut ParameterGradients<F>,
        scratch: &mut BackwardScratch<F>,
    ) {
        let (inputs, units) = (self.config.input_size, self.config.hidden_size);
        let width = self.config.presynaptic_size();
        let weight = self.parameters.weight;
        let epsilon = constant::<F>(crate::plasticity::NORM_EPSILON);
        let limit = self.config.clamp.map(constant::<F>);
        let scalar_lambda = !self.lambda_row.is_empty();
        let scalar_gamma = !self.gamma_row.is_empty();
        scratch.grad_hidden.copy_from_slice(grad_hidden);
        scratch
            .grad_update_presynaptic
            .iter_mut()
            .for_each(|g| *g = F::zero());
        scratch
            .grad_denominator
            .iter_mut()
            .for_each(|g| *g = F::zero());

        // The plastic update, row by row.
        for unit in 0..units {
            let row = unit * width..(unit + 1) * width;
            let grad_out = &grad_synaptic[row.clone()];
            // The gradient reaching F': that of F_t itself unless a clamp or the
            // post-normalisation lies between them.
            let grad_row: &[F] = if self.keeps_unclamped() {
                let unclamped = &trace.unclamped[row.clone()];
                let grad_row = &mut scratch.grad_row;
                if self.config.normalisation == Normalisation::Post {
                    // F_t = F'' / (‖W + F''‖ + ε), F'' = clamp(F')
                    let norm = trace.post_norm[unit];
                    let denominator = norm + epsilon;
                    let clamp = |value: F| match limit {
                        Some(limit) => value.max(-limit).min(limit),
                        None => value,
                    };
                    // grad_row holds F'' until it is overwritten below.
                    for (clamped, value) in grad_row.iter_mut().zip(unclamped) {
                        *clamped = clamp(*value);
                    }
                    let weighted = dot(grad_out, grad_row);
                    let through_norm = weighted / (denominator * denominator * norm);
                    let weight_row = &weight[row.clone()];
                    let grad_weight = &mut grads.weight[row.clone()];
                    for j in 0..width {
                        let efficacy = weight_row[j] + grad_row[j];
                        grad_row[j] = grad_out[j] / denominator - efficacy * through_norm;
                        grad_weight[j] = grad_weight[j] - efficacy * through_norm;
                    }
                } else {
                    grad_row.copy_from_slice(grad_out);
                }
                if let Some(limit) = limit {
                    // A select rather than a branch, so that the loop vectorises.
                    for (grad, value) in grad_row.iter_mut().zip(unclamped) {
                        let outside = *value < -limit || *value > limit;
                        *grad = if outside { F::zero() } else { *grad };
                    }
                }
                &scratch.grad_row[..width]
            } else {
                &grad_out[..width]
            };
            let pre = self.scales_state();
            let scale = if pre {
                trace.denominator[unit]
            } else {
                F::one()
            };
            let inverse_scale = F::one() / scale;
            // What the update decayed: F_{t-1}, or tanh(F_{t-1}).
            let decaying = self.decaying(&synaptic_prev[row.clone()], &mut scratch.squashed);
            let decaying = &decaying[..width];
            let (lambda, gamma) = self.rows(unit);
            let (lambda, gamma) = (&lambda[..width], &gamma[..width]);
            let post = trace.hidden[unit];
            let presynaptic = &trace.update_presynaptic[..width];
            // Λ and Γ
            if scalar_lambda {
                grads.lambda[0] = grads.lambda[0] + dot(grad_row, decaying) * inverse_scale;
            } else {
                let grad_lambda = &mut grads.lambda[row.clone()];
                for j in 0..width {
                    grad_lambda[j] = grad_lambda[j] + grad_row[j] * (decaying[j] * inverse_scale);
                }
            }
            if scalar_gamma {
                grads.gamma[0] = grads.gamma[0] + dot(grad_row, presynaptic) * post;
            } else {
                let grad_gamma = &mut grads.gamma[row.clone()];
                for j in 0..width {
                    grad_gamma[j] = grad_gamma[j] + grad_row[j] * post * presynaptic[j];
                }
            }
            // Through Γ ⊙ (h ⊗ p): to h_t and to p. (Reductions apart from the elementwise
            // loops, in lanes, so that both vectorise.)
            let grad_post = dot3(grad_row, gamma, presynaptic);
            let grad_update_presynaptic = &mut scratch.grad_update_presynaptic[..width];
            for j in 0..width {
                grad_update_presynaptic[j] =
                    grad_update_presynaptic[j] + grad_row[j] * gamma[j] * post;
            }
            scratch.grad_hidden[unit] = scratch.grad_hidden[unit] + grad_post;
            // Through Λ ⊙ s(F_{t-1})/scale: to F_{t-1} and to the scale.
            let grad_previous = &mut grad_synaptic_prev[row.clone()];
            for j in 0..width {
                grad_previous[j] = grad_row[j] * lambda[j] * inverse_scale;
            }
            if self.config.squash_state {
                for j in 0..width {
                    grad_previous[j] = grad_previous[j] * (F::one() - decaying[j] * decaying[j]);
                }
            }
            if pre {
                let grad_scale = -dot3(grad_row, lambda, decaying) * inverse_scale;
                scratch.grad_denominator[unit] = grad_scale * inverse_scale;
            }
        }

        scratch
            .grad_presynaptic
            .iter_mut()
            .for_each(|g| *g = F::zero());
        match self.config.presynaptic {
            Presynaptic::CurrentHidden if self.config.recurrent => {
                scratch.grad_presynaptic[..inputs]
                    .copy_from_slice(&scratch.grad_update_presynaptic[..inputs]);
                for unit in 0..units {
                    scratch.grad_hidden[unit] =
                        scratch.grad_hidden[unit] + scratch.grad_update_presynaptic[inputs + unit];
                }
            }
            _ => scratch
                .grad_presynaptic
                .copy_from_slice(&scratch.grad_update_presynaptic),
        }

        // The neuron: h = φ(drive / (‖G‖ + ε) + b), G = W + F_{t-1}.
        for unit in 0..units {
            let row = unit * width..(unit + 1) * width;
            let hidden = trace.hidden[unit];
            let grad_preactivation =
                scratch.grad_hidden[unit] * self.config.activation.derivative(hidden);
            if !self.normalised() || self.config.normalised_bias {
                grads.bias[unit] = grads.bias[unit] + grad_preactivation;
            }
            let (grad_drive, grad_norm) = if self.normalised() {
                let denominator = trace.denominator[unit];
                let grad_denominator = scratch.grad_denominator[unit]
                    - grad_preactivation * trace.drive[unit] / (denominator * denominator);
                (
                    grad_preactivation / denominator,
                    grad_denominator / trace.norm[unit],
                )
            } else {
                (grad_preactivation, F::zero())
            };
            let weight_row = &weight[row.clone()];
            let previous = &synaptic_prev[row.clone()];
            let grad_weight = &mut grads.weight[row.clone()];
            let grad_previous = &mut grad_synaptic_prev[row];
            let presynaptic = &trace.presynaptic[..width];
            let grad_presynaptic = &mut scratch.grad_presynaptic[..width];
            for j in 0..width {
                let efficacy = weight_row[j] + previous[j];
                let grad_efficacy = grad_drive * presynaptic[j] + grad_norm * efficacy;
                grad_weight[j] = grad_weight[j] + grad_efficacy;
                grad_previous[j] = grad_previous[j] + grad_efficacy;
                grad_presynaptic[j] = grad_presynaptic[j] + grad_drive * efficacy;
            }
        }
        grad_input.copy_from_slice(&scratch.grad_presynaptic[..inputs]);
        if self.config.recurrent {
            grad_hidden_prev.copy_from_slice(&scratch.grad_presynaptic[inputs..]);
        } else {
            grad_hidden_prev.iter_mut().for_each(|g| *g = F::zero());
        }
    }
}

/// Gradient accumulators of the parameters.
#[derive(Clone, Debug)]
struct ParameterGradients<F> {
    weight: Vec<F>,
    bias: Vec<F>,
    lambda: Vec<F>,
    gamma: Vec<F>,
}

impl<F: Float> ParameterGradients<F> {
    fn zeros(parameters: &Parameters<'_, F>) -> Self {
        Self {
            weight: vec![F::zero(); parameters.weight.len()],
            bias: vec![F::zero(); parameters.bias.len()],
            lambda: vec![F::zero(); parameters.lambda.len()],
            gamma: vec![F::zero(); parameters.gamma.len()],
        }
    }

    fn add(&mut self, other: &Self) {
        for (mine, theirs) in [
            (&mut self.weight, &other.weight),
            (&mut self.bias, &other.bias),
            (&mut self.lambda, &other.lambda),
            (&mut self.gamma, &other.gamma),
        ] {
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a = *a + *b);
        }
    }
}

/// Number of steps between two stored states: ⌈√T⌉.
pub fn checkpoint_interval(steps: usize) -> usize {
    (steps as f64).sqrt().ceil().max(1.0) as usize
}

fn threads_for(batch: usize) -> usize {
    // Asked once: the answer reads the cgroup's CPU quota from files, which took 5 % of a small
    // training step when asked on every call.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cores.min(batch).max(1)
}

/// Runs `work` on every share, each on a thread of its own; the results in order.
fn on_threads<S: Send, R: Send>(shares: Vec<S>, work: impl Fn(S) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || work(share)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("kernel thread"))
            .collect()
    })
}

/// Splits `0..batch` into contiguous chunks, one per thread.
fn chunks(batch: usize) -> Vec<std::ops::Range<usize>> {
    let threads = threads_for(batch);
    let size = batch.div_ceil(threads);
    (0..threads)
        .map(|thread| thread * size..((thread + 1) * size).min(batch))
        .filter(|range| !range.is_empty())
        .collect()
}

/// One thread's share of the forward's results, `[count, ...]` rows of the batch-major ones:
/// it writes them in place (copying megabytes of states after the threads was a measurable part
/// of a step).
struct ForwardShare<'a, F> {
    range: std::ops::Range<usize>,
    hidden: &'a mut [F],
    synaptic: &'a mut [F],
    checkpoints: &'a mut [F],
}

/// Splits a batch-major buffer of `row` values per batch element into the rows of each range.
fn split_rows<'a, F>(
    ranges: &[std::ops::Range<usize>],
    row: usize,
    buffer: &'a mut [F],
) -> Vec<&'a mut [F]> {
    let mut rest = buffer;
    ranges
        .iter()
        .map(|range| {
            let (share, after) = std::mem::take(&mut rest).split_at_mut(range.len() * row);
            rest = after;
            share
        })
        .collect()
}

/// One thread's share of the backward's results: the gradients of its batch elements' initial
/// states, written in place.
struct BackwardShare<'a, F> {
    range: std::ops::Range<usize>,
    grad_hidden: &'a mut [F],
    grad_synaptic: &'a mut [F],
}

/// What one thread's backward returns: its parameter gradients and the gradients of its inputs,
/// `[T, count, I]`.
type BackwardPart<F> = (ParameterGradients<F>, Vec<F>);

/// What the backward of every batch element shares.
#[derive(Clone, Copy)]
struct BackwardInputs<'a, F> {
    checkpoints: Option<&'a [F]>,
    grad_outputs: &'a [F],
    grad_final_hidden: Option<&'a [F]>,
    grad_final_synaptic: Option<&'a [F]>,
}

/// Whether the kernel may run its AVX2 copy (see [`forward_chunk_avx2`]).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`forward_chunk`] compiled for AVX2: the kernel's loops are written to vectorise, and the
/// portable x86-64 baseline has 4-lane SSE only. Everything it calls in the kernel is
/// `#[inline(always)]`, so it is compiled into this copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_chunk_avx2<F: KernelFloat>(
    kernel: &Kernel<'_, F>,
    sequence: Sequence<'_, F>,
    share: ForwardShare<'_, F>,
) -> Vec<F> {
    forward_chunk(kernel, sequence, share)
}

/// [`backward_chunk`] compiled for AVX2 (as [`forward_chunk_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_chunk_avx2<F: KernelFloat>(
    kernel: &Kernel<'_, F>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    share: BackwardShare<'_, F>,
) -> BackwardPart<F> {
    backward_chunk(kernel, sequence, given, share)
}

/// The forward of the batch elements of `share`, on one thread: writes their final states and
/// checkpoints into `share` and returns their outputs, `[T, count, H]`.
#[inline(always)]
fn forward_chunk<F: KernelFloat>(
    kernel: &Kernel<'_, F>,
    sequence: Sequence<'_, F>,
    share: ForwardShare<'_, F>,
) -> Vec<F> {
    let config = kernel.config;
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let interval = checkpoint_interval(steps);
    let state_size = units + units * width;
    let per_element = steps.div_ceil(interval) * state_size;
    let count = share.range.len();
    let mut outputs = vec![F::zero(); steps * count * units];
    let mut trace = kernel.trace();
    let (mut hidden, mut synaptic) = (vec![F::zero(); units], vec![F::zero(); units * width]);
    let (mut next_hidden, mut next_synaptic) = (hidden.clone(), synaptic.clone());
    for (local, element) in share.range.clone().enumerate() {
        hidden.copy_from_slice(&sequence.hidden[element * units..(element + 1) * units]);
        synaptic.copy_from_slice(
            &sequence.synaptic[element * units * width..(element + 1) * units * width],
        );
        let keep = !share.checkpoints.is_empty();
        let checkpoints = if keep {
            &mut share.checkpoints[local * per_element..(local + 1) * per_element]
        } else {
            &mut []
        };
        for step in 0..steps {
            if keep && step % interval == 0 {
                let at = step / interval * state_size;
                checkpoints[at..at + units].copy_from_slice(&hidden);
                checkpoints[at + units..at + state_size].copy_from_slice(&synaptic);
            }
            let offset = (step * batch + element) * inputs;
            kernel.step(
                &sequence.inputs[offset..offset + inputs],
                &hidden,
                &synaptic,
                &mut next_hidden,
                &mut next_synaptic,
                &mut trace,
            );
            std::mem::swap(&mut hidden, &mut next_hidden);
            std::mem::swap(&mut synaptic, &mut next_synaptic);
            let out = (step * count + local) * units;
            outputs[out..out + units].copy_from_slice(&hidden);
        }
        share.hidden[local * units..(local + 1) * units].copy_from_slice(&hidden);
        share.synaptic[local * units * width..(local + 1) * units * width]
            .copy_from_slice(&synaptic);
    }
    outputs
}

/// Runs the sequence forward; with `checkpoints`, keeps the states the backward starts from.
pub fn forward<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    checkpoints: bool,
) -> ForwardOutput<F> {
    let kernel = Kernel::new(config, parameters);
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch) = (sequence.steps, sequence.batch);
    let interval = checkpoint_interval(steps);
    let per_element = if checkpoints {
        steps.div_ceil(interval) * (units + units * width)
    } else {
        0
    };
    let (hidden_start, synaptic_start) = (steps * batch * units, (steps + 1) * batch * units);
    let mut output = ForwardOutput {
        packed: vec![F::zero(); synaptic_start + batch * units * width],
        hidden_start,
        synaptic_start,
        checkpoints: vec![F::zero(); batch * per_element],
    };
    let (outputs_and_hidden, synaptic) = output.packed.split_at_mut(synaptic_start);
    let (all_outputs, hidden) = outputs_and_hidden.split_at_mut(hidden_start);
    let ranges = chunks(batch);
    let shares: Vec<ForwardShare<'_, F>> = ranges
        .iter()
        .zip(split_rows(&ranges, units, hidden))
        .zip(split_rows(&ranges, units * width, synaptic))
        .zip(split_rows(&ranges, per_element, &mut output.checkpoints))
        .map(|(((range, hidden), synaptic), checkpoints)| ForwardShare {
            range: range.clone(),
            hidden,
            synaptic,
            checkpoints,
        })
        .collect();
    let wide = has_avx2();
    let outputs = on_threads(shares, |share| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the processor has AVX2 and FMA (`has_avx2`).
            return unsafe { forward_chunk_avx2(&kernel, sequence, share) };
        }
        let _ = wide;
        forward_chunk(&kernel, sequence, share)
    });
    // Outputs are step-major: each thread's rows interleave with the others'.
    for (range, outputs) in ranges.iter().zip(outputs) {
        let count = range.len();
        for step in 0..steps {
            let source = step * count * units;
            let target = (step * batch + range.start) * units;
            all_outputs[target..target + count * units]
                .copy_from_slice(&outputs[source..source + count * units]);
        }
    }
    output
}

/// The backward of the batch elements `range`, on one thread.
#[inline(always)]
fn backward_chunk<F: KernelFloat>(
    kernel: &Kernel<'_, F>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    share: BackwardShare<'_, F>,
) -> BackwardPart<F> {
    let BackwardShare {
        range,
        grad_hidden: grad_hidden0,
        grad_synaptic: grad_synaptic0,
    } = share;
    let BackwardInputs {
        checkpoints,
        grad_outputs,
        grad_final_hidden,
        grad_final_synaptic,
    } = given;
    let parameters = kernel.parameters;
    let config = kernel.config;
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let interval = checkpoint_interval(steps);
    let state_size = units + units * width;
    let per_element = steps.div_ceil(interval) * state_size;
    let count = range.len();
    let mut grads = ParameterGradients::zeros(&parameters);
    let mut grad_inputs = vec![F::zero(); steps * count * inputs];
    let mut own_checkpoints = Vec::new();
    let mut scratch_hidden = vec![F::zero(); units];
    let mut scratch_synaptic = vec![F::zero(); units * width];
    // Per segment: the state entering every step and every step's trace.
    let mut scratch = kernel.scratch();
    let mut traces: Vec<StepTrace<F>> = (0..interval).map(|_| kernel.trace()).collect();
    let mut segment_hidden = vec![vec![F::zero(); units]; interval + 1];
    let mut segment_synaptic = vec![vec![F::zero(); units * width]; interval + 1];
    for (local, element) in range.clone().enumerate() {
        let input_at = |step: usize| {
            let offset = (step * batch + element) * inputs;
            &sequence.inputs[offset..offset + inputs]
        };
        // The state entering every `interval`-th step: given, or from a forward.
        let element_checkpoints = match checkpoints {
            Some(all) => &all[element * per_element..(element + 1) * per_element],
            None => {
                let own = &mut own_checkpoints;
                own.clear();
                let mut hidden = sequence.hidden[element * units..(element + 1) * units].to_vec();
                let mut synaptic = sequence.synaptic
                    [element * units * width..(element + 1) * units * width]
                    .to_vec();
                for step in 0..steps {
                    if step % interval == 0 {
                        own.extend_from_slice(&hidden);
                        own.extend_from_slice(&synaptic);
                    }
                    kernel.step(
                        input_at(step),
                        &hidden,
                        &synaptic,
                        &mut scratch_hidden,
                        &mut scratch_synaptic,
                        &mut traces[0],
                    );
                    std::mem::swap(&mut hidden, &mut scratch_hidden);
                    std::mem::swap(&mut synaptic, &mut scratch_synaptic);
                }
                &own[..]
            }
        };
        // Backward, segment by segment from the last.
        let mut grad_hidden = grad_final_hidden.map_or(vec![F::zero(); units], |g| {
            g[element * units..(element + 1) * units].to_vec()
        });
        let mut grad_synaptic = grad_final_synaptic.map_or(vec![F::zero(); units * width], |g| {
            g[element * units * width..(element + 1) * units * width].to_vec()
        });
        let mut grad_hidden_prev = vec![F::zero(); units];
        let mut grad_synaptic_prev = vec![F::zero(); units * width];
        for (segment, state) in element_checkpoints
            .chunks_exact(state_size)
            .enumerate()
            .rev()
        {
            let start = segment * interval;
            let end = (start + interval).min(steps);
            segment_hidden[0].copy_from_slice(&state[..units]);
            segment_synaptic[0].copy_from_slice(&state[units..]);
            for offset in 0..end - start {
                let (before_h, after_h) = segment_hidden.split_at_mut(offset + 1);
                let (before_f, after_f) = segment_synaptic.split_at_mut(offset + 1);
                kernel.step(
                    input_at(start + offset),
                    &before_h[offset],
                    &before_f[offset],
                    &mut after_h[0],
                    &mut after_f[0],
                    &mut traces[offset],
                );
            }
            for step in (start..end).rev() {
                let synaptic_prev = &segment_synaptic[step - start];
                let out = (step * batch + element) * units;
                for unit in 0..units {
                    grad_hidden[unit] = grad_hidden[unit] + grad_outputs[out + unit];
                }
                let grad_input = &mut grad_inputs
                    [(step * count + local) * inputs..(step * count + local + 1) * inputs];
                kernel.step_backward(
                    &traces[step - start],
                    synaptic_prev,
                    &grad_hidden,
                    &grad_synaptic,
                    grad_input,
                    &mut grad_hidden_prev,
                    &mut grad_synaptic_prev,
                    &mut grads,
                    &mut scratch,
                );
                std::mem::swap(&mut grad_hidden, &mut grad_hidden_prev);
                std::mem::swap(&mut grad_synaptic, &mut grad_synaptic_prev);
            }
        }
        grad_hidden0[local * units..(local + 1) * units].copy_from_slice(&grad_hidden);
        grad_synaptic0[local * units * width..(local + 1) * units * width]
            .copy_from_slice(&grad_synaptic);
    }
    (grads, grad_inputs)
}

/// Backpropagation through the whole sequence: the gradients of a loss with respect to the
/// parameters, the inputs and the initial state, given its gradients with respect to every
/// output (`[T, B, H]`) and to the final state (`None`: zero). States are recomputed from
/// checkpoints every ⌈√T⌉ steps: those of [`ForwardOutput::checkpoints`] when given, otherwise
/// from a forward pass of its own.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    checkpoints: Option<&[F]>,
    grad_outputs: &[F],
    grad_final_hidden: Option<&[F]>,
    grad_final_synaptic: Option<&[F]>,
) -> Gradients<F> {
    let kernel = Kernel::new(config, parameters);
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let given = BackwardInputs {
        checkpoints,
        grad_outputs,
        grad_final_hidden,
        grad_final_synaptic,
    };
    let mut grad_hidden0 = vec![F::zero(); batch * units];
    let mut grad_synaptic0 = vec![F::zero(); batch * units * width];
    let ranges = chunks(batch);
    let shares: Vec<BackwardShare<'_, F>> = ranges
        .iter()
        .zip(split_rows(&ranges, units, &mut grad_hidden0))
        .zip(split_rows(&ranges, units * width, &mut grad_synaptic0))
        .map(|((range, grad_hidden), grad_synaptic)| BackwardShare {
            range: range.clone(),
            grad_hidden,
            grad_synaptic,
        })
        .collect();
    let wide = has_avx2();
    let parts = on_threads(shares, |share| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the processor has AVX2 and FMA (`has_avx2`).
            return unsafe { backward_chunk_avx2(&kernel, sequence, given, share) };
        }
        let _ = wide;
        backward_chunk(&kernel, sequence, given, share)
    });
    let mut total = ParameterGradients::zeros(&parameters);
    let mut gradients = Gradients {
        weight: Vec::new(),
        bias: Vec::new(),
        lambda: Vec::new(),
        gamma: Vec::new(),
        inputs: vec![F::zero(); steps * batch * inputs],
        hidden: grad_hidden0,
        synaptic: grad_synaptic0,
    };
    for (range, (grads, grad_inputs)) in ranges.iter().zip(parts) {
        total.add(&grads);
        let count = range.len();
        for step in 0..steps {
            let source = step * count * inputs;
            let target = (step * batch + range.start) * inputs;
            gradients.inputs[target..target + count * inputs]
                .copy_from_slice(&grad_inputs[source..source + count * inputs]);
        }
    }
    gradients.weight = total.weight;
    gradients.bias = total.bias;
    gradients.lambda = total.lambda;
    gradients.gamma = total.gamma;
    gradients
}

impl crate::StpnR {
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

impl crate::StpnF {
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
    use std::collections::BTreeMap;

    use burn::tensor::{DType, Tensor, TensorData};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::cell::run_sequence;
    use crate::params::{host_values, load_named, named_gradients};
    use crate::{Backend, StpnRConfig, StpnRState};

    fn random(rng: &mut ChaCha8Rng, count: usize, scale: f64) -> Vec<f64> {
        (0..count)
            .map(|_| rng.random_range(-scale..scale))
            .collect()
    }

    fn max_relative_error(ours: &[f64], reference: &[f64]) -> f64 {
        assert_eq!(ours.len(), reference.len());
        let scale = reference
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()))
            .max(1e-300);
        ours.iter()
            .zip(reference)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
            / scale
    }

    /// The kernel's forward and backward (given the gradients of the outputs, the final hidden
    /// and the final synaptic state); the backward without the forward's checkpoints gives the
    /// same numbers.
    fn run_kernel(
        config: KernelConfig,
        parameters: &BTreeMap<String, Vec<f64>>,
        (x, hidden0, synaptic0): (&[f64], &[f64], &[f64]),
        (grad_outputs, grad_hidden, grad_synaptic): (&[f64], &[f64], &[f64]),
        (steps, batch): (usize, usize),
    ) -> (ForwardOutput<f64>, Gradients<f64>) {
        let kernel_parameters = Parameters {
            weight: &parameters["weight"],
            bias: &parameters["bias"],
            lambda: &parameters["lambda"],
            gamma: &parameters["gamma"],
        };
        let sequence = Sequence {
            steps,
            batch,
            inputs: x,
            hidden: hidden0,
            synaptic: synaptic0,
        };
        let forward = forward(config, kernel_parameters, sequence, true);
        let backward_with = |checkpoints| {
            backward(
                config,
                kernel_parameters,
                sequence,
                checkpoints,
                grad_outputs,
                Some(grad_hidden),
                Some(grad_synaptic),
            )
        };
        let gradients = backward_with(Some(&forward.checkpoints));
        assert_eq!(backward_with(None), gradients);
        (forward, gradients)
    }

    /// The fused kernel against the op-by-op cell, in float64, for one option combination:
    /// outputs, final state, and gradients to every parameter, the inputs and the initial state.
    fn check(
        normalisation: Normalisation,
        presynaptic: Presynaptic,
        per_synapse: bool,
        clamp: Option<f64>,
        recurrent: bool,
        activation: Activation,
        seed: u64,
    ) {
        let (inputs, units, batch, steps) = (3, 4, 3, 7);
        let width = inputs + if recurrent { units } else { 0 };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let plastic = if per_synapse { units * width } else { 1 };
        let mut parameters = BTreeMap::new();
        parameters.insert("weight".to_string(), random(&mut rng, units * width, 1.0));
        parameters.insert("bias".to_string(), random(&mut rng, units, 1.0));
        // Scalar plasticity gets a large rate, so that the clamp is reached in those cases too.
        let (lambda, gamma) = if per_synapse {
            (
                random(&mut rng, plastic, 1.0),
                random(&mut rng, plastic, 1.0),
            )
        } else {
            (vec![0.9], vec![1.5])
        };
        parameters.insert("lambda".to_string(), lambda);
        parameters.insert("gamma".to_string(), gamma);
        let x = random(&mut rng, steps * batch * inputs, 1.0);
        let hidden0 = random(&mut rng, batch * units, 0.5);
        let synaptic0 = random(&mut rng, batch * units * width, 0.3);
        let grad_outputs = random(&mut rng, steps * batch * units, 1.0);
        let grad_hidden = random(&mut rng, batch * units, 1.0);
        let grad_synaptic = random(&mut rng, batch * units * width, 1.0);

        // Reference: the op-by-op cell under autodiff.
        let device = Backend::Flex.device().unwrap().autodiff();
        let options = (&device, DType::F64);
        // The reference is the op-by-op cell.
        let cell = StpnRConfig::new(inputs, units)
            .with_per_synapse(per_synapse)
            .with_normalisation(normalisation)
            .with_presynaptic(presynaptic)
            .with_clamp(clamp)
            .with_recurrent(recurrent)
            .with_activation(activation)
            .with_fused(false)
            .init(&device);
        let cell = load_named(
            cell,
            &parameters,
            &|name| name.to_string(),
            &device,
            DType::F64,
        )
        .unwrap();
        let tensor3 = |data: &[f64], shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(data.to_vec(), shape), options)
        };
        let x_tensor = tensor3(&x, [steps, batch, inputs]).require_grad();
        let state = StpnRState {
            hidden: Tensor::<2>::from_data(
                TensorData::new(hidden0.clone(), [batch, units]),
                options,
            )
            .require_grad(),
            synaptic: tensor3(&synaptic0, [batch, units, width]).require_grad(),
        };
        let sequence = run_sequence(&cell, x_tensor.clone(), state.clone(), false);
        let loss = (sequence.outputs.clone() * tensor3(&grad_outputs, [steps, batch, units])).sum()
            + (sequence.final_state.hidden.clone()
                * Tensor::<2>::from_data(
                    TensorData::new(grad_hidden.clone(), [batch, units]),
                    options,
                ))
            .sum()
            + (sequence.final_state.synaptic.clone()
                * tensor3(&grad_synaptic, [batch, units, width]))
            .sum();
        let autodiff = loss.backward();
        let reference_grads = named_gradients(&cell, &autodiff);

        // The fused kernel.
        let config = KernelConfig {
            input_size: inputs,
            hidden_size: units,
            normalisation,
            presynaptic,
            clamp,
            recurrent,
            activation,
            normalise_state: true,
            normalised_bias: true,
            squash_state: false,
        };
        let (forward, gradients) = run_kernel(
            config,
            &parameters,
            (&x, &hidden0, &synaptic0),
            (&grad_outputs, &grad_hidden, &grad_synaptic),
            (steps, batch),
        );

        let label = format!(
            "{normalisation:?} {presynaptic:?} per_synapse={per_synapse} clamp={clamp:?} \
             recurrent={recurrent} {activation:?}"
        );
        let comparisons = [
            (
                "outputs",
                forward.outputs().to_vec(),
                host_values::<f64, _>(sequence.outputs),
            ),
            (
                "final h",
                forward.hidden().to_vec(),
                host_values::<f64, _>(sequence.final_state.hidden),
            ),
            (
                "final F",
                forward.synaptic().to_vec(),
                host_values::<f64, _>(sequence.final_state.synaptic),
            ),
            (
                "grad weight",
                gradients.weight.clone(),
                reference_grads["weight"].clone().unwrap().values,
            ),
            (
                "grad bias",
                gradients.bias.clone(),
                reference_grads["bias"].clone().unwrap().values,
            ),
            (
                "grad lambda",
                gradients.lambda.clone(),
                reference_grads["lambda"].clone().unwrap().values,
            ),
            (
                "grad gamma",
                gradients.gamma.clone(),
                reference_grads["gamma"].clone().unwrap().values,
            ),
            (
                "grad inputs",
                gradients.inputs.clone(),
                host_values::<f64, _>(x_tensor.grad(&autodiff).unwrap()),
            ),
            (
                "grad h0",
                gradients.hidden.clone(),
                // Without recurrence h0 reaches nothing: no gradient in the graph.
                state.hidden.grad(&autodiff).map_or_else(
                    || {
                        assert!(!recurrent, "{label}: h0 has no gradient");
                        vec![0.0; batch * units]
                    },
                    host_values::<f64, _>,
                ),
            ),
            (
                "grad F0",
                gradients.synaptic.clone(),
                host_values::<f64, _>(state.synaptic.grad(&autodiff).unwrap()),
            ),
        ];
        for (what, ours, reference) in comparisons {
            let error = max_relative_error(&ours, &reference);
            assert!(error < 1e-10, "{label}: {what} relative error {error:e}");
        }
        if let Some(limit) = clamp {
            assert!(
                forward.synaptic().iter().any(|v| v.abs() >= limit * 0.999)
                    || normalisation == Normalisation::Post,
                "{label}: the clamp was never active"
            );
        }
    }

    #[test]
    fn fused_matches_the_op_by_op_cell_for_every_option() {
        let mut seed = 0;
        for normalisation in [Normalisation::Off, Normalisation::Pre, Normalisation::Post] {
            for presynaptic in [Presynaptic::PreviousHidden, Presynaptic::CurrentHidden] {
                for per_synapse in [true, false] {
                    for clamp in [None, Some(0.3)] {
                        for recurrent in [true, false] {
                            for activation in [Activation::Tanh, Activation::Sigmoid] {
                                seed += 1;
                                check(
                                    normalisation,
                                    presynaptic,
                                    per_synapse,
                                    clamp,
                                    recurrent,
                                    activation,
                                    seed,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The kernel in STPNf's configuration against the op-by-op STPNf cell, in float64:
    /// outputs, final state, gradients to every parameter, the inputs and the initial state.
    fn check_stpn_f(normalised: bool, per_synapse: bool, clamp: Option<f64>, squash_state: bool) {
        let (inputs, units, batch, steps) = (5, 4, 3, 7);
        let mut rng =
            ChaCha8Rng::seed_from_u64(u64::from(normalised) * 8 + u64::from(squash_state));
        let plastic = if per_synapse { units * inputs } else { 1 };
        let mut parameters = BTreeMap::new();
        parameters.insert("weight".to_string(), random(&mut rng, units * inputs, 1.0));
        parameters.insert("bias".to_string(), random(&mut rng, units, 1.0));
        parameters.insert("lambda".to_string(), random(&mut rng, plastic, 1.0));
        parameters.insert("gamma".to_string(), random(&mut rng, plastic, 1.5));
        let x = random(&mut rng, steps * batch * inputs, 1.0);
        let synaptic0 = random(&mut rng, batch * units * inputs, 0.8);
        let grad_outputs = random(&mut rng, steps * batch * units, 1.0);
        let grad_synaptic = random(&mut rng, batch * units * inputs, 1.0);

        let device = Backend::Flex.device().unwrap().autodiff();
        let options = (&device, DType::F64);
        let cell = crate::StpnFConfig::new(inputs, units)
            .with_per_synapse(per_synapse)
            .with_normalised(normalised)
            .with_clamp(clamp)
            .with_squash_state(squash_state)
            .with_fused(false)
            .init(&device);
        let cell = load_named(
            cell,
            &parameters,
            &|name| name.to_string(),
            &device,
            DType::F64,
        )
        .unwrap();
        let tensor3 = |data: &[f64], shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(data.to_vec(), shape), options)
        };
        let x_tensor = tensor3(&x, [steps, batch, inputs]).require_grad();
        let state = crate::SynapticState {
            synaptic: tensor3(&synaptic0, [batch, units, inputs]).require_grad(),
        };
        let sequence = run_sequence(&cell, x_tensor.clone(), state.clone(), false);
        let loss = (sequence.outputs.clone() * tensor3(&grad_outputs, [steps, batch, units])).sum()
            + (sequence.final_state.synaptic.clone()
                * tensor3(&grad_synaptic, [batch, units, inputs]))
            .sum();
        let autodiff = loss.backward();
        let reference_grads = named_gradients(&cell, &autodiff);

        let (forward, gradients) = run_kernel(
            cell.kernel_config(),
            &parameters,
            (&x, &vec![0.0; batch * units], &synaptic0),
            (&grad_outputs, &vec![0.0; batch * units], &grad_synaptic),
            (steps, batch),
        );
        let label = format!(
            "STPNf normalised={normalised} per_synapse={per_synapse} clamp={clamp:?} \
             squash_state={squash_state}"
        );
        let reference = |name: &str| reference_grads[name].clone().map(|g| g.values);
        let comparisons = [
            (
                "outputs",
                forward.outputs().to_vec(),
                host_values::<f64, _>(sequence.outputs),
            ),
            (
                "final F",
                forward.synaptic().to_vec(),
                host_values::<f64, _>(sequence.final_state.synaptic),
            ),
            (
                "grad weight",
                gradients.weight,
                reference("weight").unwrap(),
            ),
            // The normalised path has no bias: no gradient reaches it.
            (
                "grad bias",
                gradients.bias,
                reference("bias").unwrap_or(vec![0.0; units]),
            ),
            (
                "grad lambda",
                gradients.lambda,
                reference("lambda").unwrap(),
            ),
            ("grad gamma", gradients.gamma, reference("gamma").unwrap()),
            (
                "grad inputs",
                gradients.inputs,
                host_values::<f64, _>(x_tensor.grad(&autodiff).unwrap()),
            ),
            (
                "grad F0",
                gradients.synaptic,
                host_values::<f64, _>(state.synaptic.grad(&autodiff).unwrap()),
            ),
        ];
        for (what, ours, reference) in comparisons {
            let error = max_relative_error(&ours, &reference);
            assert!(error < 1e-10, "{label}: {what} relative error {error:e}");
        }
        assert_eq!(
            reference("bias").is_none(),
            normalised,
            "{label}: the bias gets a gradient exactly when it is used"
        );
    }

    #[test]
    fn fused_matches_the_op_by_op_stpn_f_for_every_option() {
        for normalised in [true, false] {
            for per_synapse in [true, false] {
                for clamp in [None, Some(0.3)] {
                    for squash_state in [false, true] {
                        check_stpn_f(normalised, per_synapse, clamp, squash_state);
                    }
                }
            }
        }
    }

    #[test]
    fn float32_tanh_is_within_5e_7_of_the_exact_value() {
        let grid = (-400_000..=400_000).map(|i| i as f32 * 2.5e-5);
        let tiny = (-1000..=1000).map(|i| i as f32 * 1e-6);
        let mut values: Vec<f32> = grid.chain(tiny).chain([-1e6, -20.0, 20.0, 1e6]).collect();
        let exact: Vec<f64> = values.iter().map(|x| (*x as f64).tanh()).collect();
        f32::tanh_in_place(&mut values);
        let worst = values
            .iter()
            .zip(&exact)
            .map(|(ours, exact)| (*ours as f64 - exact).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "largest error {worst:e}");
        let relative_near_zero = values[400_001..402_002]
            .iter()
            .zip(&exact[400_001..402_002])
            .filter(|(_, exact)| **exact != 0.0)
            .map(|(ours, exact)| ((*ours as f64 - exact) / exact).abs())
            .fold(0.0, f64::max);
        assert!(
            relative_near_zero < 1e-6,
            "relative error near 0: {relative_near_zero:e}"
        );
        let mut nan = [f32::NAN];
        f32::tanh_in_place(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn checkpoint_interval_is_the_rounded_up_square_root() {
        assert_eq!(checkpoint_interval(1), 1);
        assert_eq!(checkpoint_interval(9), 3);
        assert_eq!(checkpoint_interval(200), 15);
    }
}
