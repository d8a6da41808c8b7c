//! A fused STPNr sequence kernel on host memory: the forward of a whole sequence and its exact,
//! hand-written backward, with the synaptic state checkpointed every `k ≈ √T` steps and recomputed
//! in between, so that backpropagation through time needs memory in `√T`, not `T`. Batch elements
//! are independent and run on threads.
//!
//! The equations are those of [`crate::stpn_r`] (every option: per-synapse or scalar Λ Γ,
//! normalisation off / pre / post, clamp, presynaptic term from `h_{t-1}` or `h_t`); the op-by-op
//! cell is the reference it is tested against.
//!
//! Layouts (row-major): inputs `[T, B, I]`, outputs `[T, B, H]`, hidden `[B, H]`, synaptic state
//! `[B, H, P]` with `P = I + H`, weights `[H, P]`, Λ and Γ `[H, P]` or `[1]`.

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
}

impl KernelConfig {
    /// `P`, the length of the presynaptic vector: `I + H`, or `I` when not recurrent.
    pub fn presynaptic_size(&self) -> usize {
        self.input_size + if self.recurrent { self.hidden_size } else { 0 }
    }
}

impl Activation {
    fn apply<F: Float>(self, preactivation: F) -> F {
        match self {
            Activation::Tanh => preactivation.tanh(),
            // The same form as `plasticity::sigmoid`, so that both paths round alike.
            Activation::Sigmoid => {
                let half = constant::<F>(0.5);
                (F::one() + (preactivation * half).tanh()) * half
            }
        }
    }

    /// The derivative, from the activation's output.
    fn derivative<F: Float>(self, output: F) -> F {
        match self {
            Activation::Tanh => F::one() - output * output,
            Activation::Sigmoid => output * (F::one() - output),
        }
    }
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
    pub outputs: Vec<F>,
    pub hidden: Vec<F>,
    pub synaptic: Vec<F>,
    /// The state `[h ; F]` entering every ⌈√T⌉-th step, `[B, checkpoints, H + H·P]`: what
    /// [`backward`] starts from, so that it need not run the forward again.
    pub checkpoints: Vec<F>,
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

/// Buffers of one step's backward, reused from step to step.
struct BackwardScratch<F> {
    grad_hidden: Vec<F>,
    grad_update_presynaptic: Vec<F>,
    grad_presynaptic: Vec<F>,
    grad_denominator: Vec<F>,
    /// The gradient reaching `F'` (after the clamp's mask) of one row.
    grad_row: Vec<F>,
    /// `F_{t-1} / scale` of one row.
    decaying_row: Vec<F>,
}

impl<'a, F: Float + Send + Sync> Kernel<'a, F> {
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
            unclamped: vec![F::zero(); units * width],
            post_norm: vec![F::one(); units],
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
            decaying_row: vec![F::zero(); width],
        }
    }

    /// One step for one batch element: writes `h_t` and `F_t`, and into `trace` what the
    /// backward of the step needs.
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
            let preactivation = if self.normalised() {
                let norm = (squares + floor).sqrt();
                trace.norm[unit] = norm;
                trace.denominator[unit] = norm + epsilon;
                drive / trace.denominator[unit] + self.parameters.bias[unit]
            } else {
                drive + self.parameters.bias[unit]
            };
            trace.hidden[unit] = self.config.activation.apply(preactivation);
        }
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
            let inverse_scale = if self.config.normalisation == Normalisation::Pre {
                F::one() / trace.denominator[unit]
            } else {
                F::one()
            };
            let (lambda, gamma) = self.rows(unit);
            let post = trace.hidden[unit];
            let unclamped = &mut trace.unclamped[row.clone()];
            let previous = &synaptic_prev[row.clone()];
            for j in 0..width {
                unclamped[j] = lambda[j] * (previous[j] * inverse_scale)
                    + gamma[j] * post * trace.update_presynaptic[j];
            }
            let out = &mut synaptic[row.clone()];
            out.copy_from_slice(unclamped);
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
            let unclamped = &trace.unclamped[row.clone()];
            let grad_out = &grad_synaptic[row.clone()];
            let grad_row = &mut scratch.grad_row;
            if self.config.normalisation == Normalisation::Post {
                // F_t = F'' / (‖W + F''‖ + ε), F'' = clamp(F')
                let norm = trace.post_norm[unit];
                let denominator = norm + epsilon;
                let clamp = |value: F| match limit {
                    Some(limit) => value.max(-limit).min(limit),
                    None => value,
                };
                let mut weighted = F::zero();
                for j in 0..width {
                    weighted = weighted + grad_out[j] * clamp(unclamped[j]);
                }
                let through_norm = weighted / (denominator * denominator * norm);
                let weight_row = &weight[row.clone()];
                let grad_weight = &mut grads.weight[row.clone()];
                for j in 0..width {
                    let efficacy = weight_row[j] + clamp(unclamped[j]);
                    grad_row[j] = grad_out[j] / denominator - efficacy * through_norm;
                    grad_weight[j] = grad_weight[j] - efficacy * through_norm;
                }
            } else {
                grad_row.copy_from_slice(grad_out);
            }
            if let Some(limit) = limit {
                for j in 0..width {
                    if unclamped[j] < -limit || unclamped[j] > limit {
                        grad_row[j] = F::zero();
                    }
                }
            }
            let pre = self.config.normalisation == Normalisation::Pre;
            let scale = if pre {
                trace.denominator[unit]
            } else {
                F::one()
            };
            let inverse_scale = F::one() / scale;
            let previous = &synaptic_prev[row.clone()];
            for (decaying, previous) in scratch.decaying_row.iter_mut().zip(previous) {
                *decaying = *previous * inverse_scale;
            }
            let (lambda, gamma) = self.rows(unit);
            let post = trace.hidden[unit];
            let presynaptic = &trace.update_presynaptic;
            // Λ and Γ
            if scalar_lambda {
                grads.lambda[0] = grads.lambda[0] + dot(grad_row, &scratch.decaying_row);
            } else {
                let grad_lambda = &mut grads.lambda[row.clone()];
                for j in 0..width {
                    grad_lambda[j] = grad_lambda[j] + grad_row[j] * scratch.decaying_row[j];
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
            // Through Γ ⊙ (h ⊗ p): to h_t and to p.
            let mut grad_post = F::zero();
            for j in 0..width {
                let grad_hebbian = grad_row[j] * gamma[j];
                grad_post = grad_post + grad_hebbian * presynaptic[j];
                scratch.grad_update_presynaptic[j] =
                    scratch.grad_update_presynaptic[j] + grad_hebbian * post;
            }
            scratch.grad_hidden[unit] = scratch.grad_hidden[unit] + grad_post;
            // Through Λ ⊙ F/scale: to F_{t-1} and to the scale.
            let grad_previous = &mut grad_synaptic_prev[row.clone()];
            let mut grad_scale = F::zero();
            for j in 0..width {
                let grad_decaying = grad_row[j] * lambda[j];
                grad_previous[j] = grad_decaying * inverse_scale;
                grad_scale = grad_scale - grad_decaying * scratch.decaying_row[j];
            }
            if pre {
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
            grads.bias[unit] = grads.bias[unit] + grad_preactivation;
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
            let presynaptic = &trace.presynaptic;
            for j in 0..width {
                let efficacy = weight_row[j] + previous[j];
                let grad_efficacy = grad_drive * presynaptic[j] + grad_norm * efficacy;
                grad_weight[j] = grad_weight[j] + grad_efficacy;
                grad_previous[j] = grad_previous[j] + grad_efficacy;
                scratch.grad_presynaptic[j] = scratch.grad_presynaptic[j] + grad_drive * efficacy;
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
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(batch)
        .max(1)
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

/// Runs the sequence forward.
pub fn forward<F: Float + Send + Sync>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
) -> ForwardOutput<F> {
    let kernel = Kernel::new(config, parameters);
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let interval = checkpoint_interval(steps);
    let state_size = units + units * width;
    let per_element = steps.div_ceil(interval) * state_size;
    type Part<F> = (std::ops::Range<usize>, Vec<F>, Vec<F>, Vec<F>, Vec<F>);
    let results: Vec<Part<F>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks(batch)
            .into_iter()
            .map(|range| {
                let kernel = &kernel;
                scope.spawn(move || {
                    let count = range.len();
                    let mut outputs = vec![F::zero(); steps * count * units];
                    let mut hidden_out = vec![F::zero(); count * units];
                    let mut synaptic_out = vec![F::zero(); count * units * width];
                    let mut checkpoints = Vec::with_capacity(count * per_element);
                    let mut trace = kernel.trace();
                    for (local, element) in range.clone().enumerate() {
                        let mut hidden =
                            sequence.hidden[element * units..(element + 1) * units].to_vec();
                        let mut synaptic = sequence.synaptic
                            [element * units * width..(element + 1) * units * width]
                            .to_vec();
                        let mut next_hidden = vec![F::zero(); units];
                        let mut next_synaptic = vec![F::zero(); units * width];
                        for step in 0..steps {
                            if step % interval == 0 {
                                checkpoints.extend_from_slice(&hidden);
                                checkpoints.extend_from_slice(&synaptic);
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
                        hidden_out[local * units..(local + 1) * units].copy_from_slice(&hidden);
                        synaptic_out[local * units * width..(local + 1) * units * width]
                            .copy_from_slice(&synaptic);
                    }
                    (range, outputs, hidden_out, synaptic_out, checkpoints)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("kernel thread"))
            .collect()
    });
    let mut output = ForwardOutput {
        outputs: vec![F::zero(); steps * batch * units],
        hidden: vec![F::zero(); batch * units],
        synaptic: vec![F::zero(); batch * units * width],
        checkpoints: vec![F::zero(); batch * per_element],
    };
    for (range, outputs, hidden, synaptic, checkpoints) in results {
        output.checkpoints[range.start * per_element..range.end * per_element]
            .copy_from_slice(&checkpoints);
        let count = range.len();
        for step in 0..steps {
            let source = step * count * units;
            let target = (step * batch + range.start) * units;
            output.outputs[target..target + count * units]
                .copy_from_slice(&outputs[source..source + count * units]);
        }
        output.hidden[range.start * units..range.end * units].copy_from_slice(&hidden);
        output.synaptic[range.start * units * width..range.end * units * width]
            .copy_from_slice(&synaptic);
    }
    output
}

/// Backpropagation through the whole sequence: the gradients of a loss with respect to the
/// parameters, the inputs and the initial state, given its gradients with respect to every
/// output (`[T, B, H]`) and to the final state (`None`: zero). States are recomputed from
/// checkpoints every ⌈√T⌉ steps: those of [`ForwardOutput::checkpoints`] when given, otherwise
/// from a forward pass of its own.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float + Send + Sync>(
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
    let interval = checkpoint_interval(steps);
    let state_size = units + units * width;
    let per_element = steps.div_ceil(interval) * state_size;
    type Part<F> = (
        std::ops::Range<usize>,
        ParameterGradients<F>,
        Vec<F>,
        Vec<F>,
        Vec<F>,
    );
    let parts: Vec<Part<F>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks(batch)
            .into_iter()
            .map(|range| {
                let kernel = &kernel;
                scope.spawn(move || {
                    let count = range.len();
                    let mut grads = ParameterGradients::zeros(&parameters);
                    let mut grad_inputs = vec![F::zero(); steps * count * inputs];
                    let mut grad_hidden0 = vec![F::zero(); count * units];
                    let mut grad_synaptic0 = vec![F::zero(); count * units * width];
                    let mut scratch_hidden = vec![F::zero(); units];
                    let mut scratch_synaptic = vec![F::zero(); units * width];
                    // Per segment: the state entering every step and every step's trace.
                    let mut scratch = kernel.scratch();
                    let mut traces: Vec<StepTrace<F>> =
                        (0..interval).map(|_| kernel.trace()).collect();
                    let mut segment_hidden = vec![vec![F::zero(); units]; interval + 1];
                    let mut segment_synaptic = vec![vec![F::zero(); units * width]; interval + 1];
                    for (local, element) in range.clone().enumerate() {
                        let input_at = |step: usize| {
                            let offset = (step * batch + element) * inputs;
                            &sequence.inputs[offset..offset + inputs]
                        };
                        // The state entering every `interval`-th step: given, or from a forward.
                        let element_checkpoints = match checkpoints {
                            Some(all) => {
                                all[element * per_element..(element + 1) * per_element].to_vec()
                            }
                            None => {
                                let mut own = Vec::with_capacity(per_element);
                                let mut hidden = sequence.hidden
                                    [element * units..(element + 1) * units]
                                    .to_vec();
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
                                own
                            }
                        };
                        // Backward, segment by segment from the last.
                        let mut grad_hidden = grad_final_hidden
                            .map_or(vec![F::zero(); units], |g| {
                                g[element * units..(element + 1) * units].to_vec()
                            });
                        let mut grad_synaptic = grad_final_synaptic
                            .map_or(vec![F::zero(); units * width], |g| {
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
                                    grad_hidden[unit] =
                                        grad_hidden[unit] + grad_outputs[out + unit];
                                }
                                let grad_input = &mut grad_inputs[(step * count + local) * inputs
                                    ..(step * count + local + 1) * inputs];
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
                        grad_hidden0[local * units..(local + 1) * units]
                            .copy_from_slice(&grad_hidden);
                        grad_synaptic0[local * units * width..(local + 1) * units * width]
                            .copy_from_slice(&grad_synaptic);
                    }
                    (range, grads, grad_inputs, grad_hidden0, grad_synaptic0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("kernel thread"))
            .collect()
    });
    let mut total = ParameterGradients::zeros(&parameters);
    let mut gradients = Gradients {
        weight: Vec::new(),
        bias: Vec::new(),
        lambda: Vec::new(),
        gamma: Vec::new(),
        inputs: vec![F::zero(); steps * batch * inputs],
        hidden: vec![F::zero(); batch * units],
        synaptic: vec![F::zero(); batch * units * width],
    };
    for (range, grads, grad_inputs, grad_hidden0, grad_synaptic0) in parts {
        total.add(&grads);
        let count = range.len();
        for step in 0..steps {
            let source = step * count * inputs;
            let target = (step * batch + range.start) * inputs;
            gradients.inputs[target..target + count * inputs]
                .copy_from_slice(&grad_inputs[source..source + count * inputs]);
        }
        gradients.hidden[range.start * units..range.end * units].copy_from_slice(&grad_hidden0);
        gradients.synaptic[range.start * units * width..range.end * units * width]
            .copy_from_slice(&grad_synaptic0);
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
        };
        let kernel_parameters = Parameters {
            weight: &parameters["weight"],
            bias: &parameters["bias"],
            lambda: &parameters["lambda"],
            gamma: &parameters["gamma"],
        };
        let sequence_in = Sequence {
            steps,
            batch,
            inputs: &x,
            hidden: &hidden0,
            synaptic: &synaptic0,
        };
        let forward = forward(config, kernel_parameters, sequence_in);
        let gradients = backward(
            config,
            kernel_parameters,
            sequence_in,
            Some(&forward.checkpoints),
            &grad_outputs,
            Some(&grad_hidden),
            Some(&grad_synaptic),
        );
        // Without the forward's checkpoints the backward makes its own: the same numbers.
        let recomputed = backward(
            config,
            kernel_parameters,
            sequence_in,
            None,
            &grad_outputs,
            Some(&grad_hidden),
            Some(&grad_synaptic),
        );
        assert_eq!(recomputed, gradients);

        let label = format!(
            "{normalisation:?} {presynaptic:?} per_synapse={per_synapse} clamp={clamp:?} \
             recurrent={recurrent} {activation:?}"
        );
        let comparisons = [
            (
                "outputs",
                forward.outputs.clone(),
                host_values::<f64, _>(sequence.outputs),
            ),
            (
                "final h",
                forward.hidden.clone(),
                host_values::<f64, _>(sequence.final_state.hidden),
            ),
            (
                "final F",
                forward.synaptic.clone(),
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
                forward.synaptic.iter().any(|v| v.abs() >= limit * 0.999)
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

    #[test]
    fn checkpoint_interval_is_the_rounded_up_square_root() {
        assert_eq!(checkpoint_interval(1), 1);
        assert_eq!(checkpoint_interval(9), 3);
        assert_eq!(checkpoint_interval(200), 15);
    }
}
