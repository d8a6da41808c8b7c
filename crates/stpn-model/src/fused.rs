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

use crate::stpn_r::{Normalisation, Presynaptic};

/// The options of the cell the kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelConfig {
    pub input_size: usize,
    pub hidden_size: usize,
    pub normalisation: Normalisation,
    pub presynaptic: Presynaptic,
    pub clamp: Option<f64>,
}

impl KernelConfig {
    fn presynaptic_size(&self) -> usize {
        self.input_size + self.hidden_size
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
}

impl<F: Float + Send + Sync> Kernel<'_, F> {
    fn lambda(&self, index: usize) -> F {
        self.parameters.lambda[if self.parameters.lambda.len() == 1 {
            0
        } else {
            index
        }]
    }

    fn gamma(&self, index: usize) -> F {
        self.parameters.gamma[if self.parameters.gamma.len() == 1 {
            0
        } else {
            index
        }]
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
        let width = inputs + units;
        let weight = self.parameters.weight;
        let epsilon = constant::<F>(crate::plasticity::NORM_EPSILON);
        let floor = constant::<F>(1e-30);
        trace.presynaptic[..inputs].copy_from_slice(input);
        trace.presynaptic[inputs..].copy_from_slice(hidden_prev);

        for unit in 0..units {
            let row = unit * width;
            let (mut drive, mut squares) = (F::zero(), F::zero());
            for j in 0..width {
                let efficacy = weight[row + j] + synaptic_prev[row + j];
                drive = drive + efficacy * trace.presynaptic[j];
                squares = squares + efficacy * efficacy;
            }
            trace.drive[unit] = drive;
            let preactivation = if self.normalised() {
                let norm = (squares + floor).sqrt();
                trace.norm[unit] = norm;
                trace.denominator[unit] = norm + epsilon;
                drive / trace.denominator[unit] + self.parameters.bias[unit]
            } else {
                drive + self.parameters.bias[unit]
            };
            trace.hidden[unit] = preactivation.tanh();
        }
        hidden.copy_from_slice(&trace.hidden);
        match self.config.presynaptic {
            Presynaptic::PreviousHidden => {
                trace.update_presynaptic.copy_from_slice(&trace.presynaptic)
            }
            Presynaptic::CurrentHidden => {
                trace.update_presynaptic[..inputs].copy_from_slice(input);
                trace.update_presynaptic[inputs..].copy_from_slice(&trace.hidden);
            }
        }
        let limit = self.config.clamp.map(constant::<F>);
        for unit in 0..units {
            let row = unit * width;
            let scale = if self.config.normalisation == Normalisation::Pre {
                trace.denominator[unit]
            } else {
                F::one()
            };
            let mut squares = F::zero();
            for j in 0..width {
                let index = row + j;
                let value = self.lambda(index) * (synaptic_prev[index] / scale)
                    + self.gamma(index) * trace.hidden[unit] * trace.update_presynaptic[j];
                trace.unclamped[index] = value;
                let clamped = match limit {
                    Some(limit) => value.max(-limit).min(limit),
                    None => value,
                };
                synaptic[index] = clamped;
                let efficacy = weight[index] + clamped;
                squares = squares + efficacy * efficacy;
            }
            if self.config.normalisation == Normalisation::Post {
                let norm = (squares + floor).sqrt();
                trace.post_norm[unit] = norm;
                let denominator = norm + epsilon;
                for value in &mut synaptic[row..row + width] {
                    *value = *value / denominator;
                }
            }
        }
    }

    /// Backward of one step for one batch element. `grad_hidden` and `grad_synaptic` are the
    /// gradients with respect to `h_t` and `F_t`; returns those with respect to `h_{t-1}` and
    /// `F_{t-1}`, writes the input's, and accumulates the parameters'.
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
    ) {
        let (inputs, units) = (self.config.input_size, self.config.hidden_size);
        let width = inputs + units;
        let weight = self.parameters.weight;
        let epsilon = constant::<F>(crate::plasticity::NORM_EPSILON);
        let limit = self.config.clamp.map(constant::<F>);

        let mut grad_h = grad_hidden.to_vec();
        let mut grad_update_presynaptic = vec![F::zero(); width];
        let mut grad_denominator = vec![F::zero(); units];
        grad_synaptic_prev.iter_mut().for_each(|g| *g = F::zero());
        let scalar_lambda = self.parameters.lambda.len() == 1;
        let scalar_gamma = self.parameters.gamma.len() == 1;

        // The plastic update, row by row.
        let mut grad_clamped = vec![F::zero(); width];
        for unit in 0..units {
            let row = unit * width;
            let clamp = |value: F| match limit {
                Some(limit) => value.max(-limit).min(limit),
                None => value,
            };
            if self.config.normalisation == Normalisation::Post {
                // F_t = F'' / (‖W + F''‖ + ε)
                let norm = trace.post_norm[unit];
                let denominator = norm + epsilon;
                let mut weighted = F::zero();
                for j in 0..width {
                    weighted = weighted + grad_synaptic[row + j] * clamp(trace.unclamped[row + j]);
                }
                let through_norm = weighted / (denominator * denominator * norm);
                for j in 0..width {
                    let index = row + j;
                    let efficacy = weight[index] + clamp(trace.unclamped[index]);
                    grad_clamped[j] = grad_synaptic[index] / denominator - efficacy * through_norm;
                    grads.weight[index] = grads.weight[index] - efficacy * through_norm;
                }
            } else {
                grad_clamped.copy_from_slice(&grad_synaptic[row..row + width]);
            }
            let scale = if self.config.normalisation == Normalisation::Pre {
                trace.denominator[unit]
            } else {
                F::one()
            };
            let mut grad_scale = F::zero();
            for j in 0..width {
                let index = row + j;
                let value = trace.unclamped[index];
                let passes = limit.is_none_or(|limit| value >= -limit && value <= limit);
                let grad = if passes { grad_clamped[j] } else { F::zero() };
                let decaying = synaptic_prev[index] / scale;
                let hebbian = trace.hidden[unit] * trace.update_presynaptic[j];
                grads.lambda[if scalar_lambda { 0 } else { index }] =
                    grads.lambda[if scalar_lambda { 0 } else { index }] + grad * decaying;
                grads.gamma[if scalar_gamma { 0 } else { index }] =
                    grads.gamma[if scalar_gamma { 0 } else { index }] + grad * hebbian;
                let grad_decaying = grad * self.lambda(index);
                let grad_hebbian = grad * self.gamma(index);
                grad_h[unit] = grad_h[unit] + grad_hebbian * trace.update_presynaptic[j];
                grad_update_presynaptic[j] =
                    grad_update_presynaptic[j] + grad_hebbian * trace.hidden[unit];
                grad_synaptic_prev[index] = grad_synaptic_prev[index] + grad_decaying / scale;
                grad_scale = grad_scale - grad_decaying * synaptic_prev[index] / (scale * scale);
            }
            if self.config.normalisation == Normalisation::Pre {
                grad_denominator[unit] = grad_denominator[unit] + grad_scale;
            }
        }

        let mut grad_presynaptic = vec![F::zero(); width];
        match self.config.presynaptic {
            Presynaptic::PreviousHidden => {
                grad_presynaptic.copy_from_slice(&grad_update_presynaptic)
            }
            Presynaptic::CurrentHidden => {
                grad_presynaptic[..inputs].copy_from_slice(&grad_update_presynaptic[..inputs]);
                for unit in 0..units {
                    grad_h[unit] = grad_h[unit] + grad_update_presynaptic[inputs + unit];
                }
            }
        }

        // The neuron: h = tanh(drive / (‖G‖ + ε) + b), G = W + F_{t-1}.
        for unit in 0..units {
            let row = unit * width;
            let hidden = trace.hidden[unit];
            let grad_preactivation = grad_h[unit] * (F::one() - hidden * hidden);
            grads.bias[unit] = grads.bias[unit] + grad_preactivation;
            let (grad_drive, grad_norm) = if self.normalised() {
                let denominator = trace.denominator[unit];
                let grad_denominator = grad_denominator[unit]
                    - grad_preactivation * trace.drive[unit] / (denominator * denominator);
                (
                    grad_preactivation / denominator,
                    grad_denominator / trace.norm[unit],
                )
            } else {
                (grad_preactivation, F::zero())
            };
            for j in 0..width {
                let index = row + j;
                let efficacy = weight[index] + synaptic_prev[index];
                let grad_efficacy = grad_drive * trace.presynaptic[j] + grad_norm * efficacy;
                grads.weight[index] = grads.weight[index] + grad_efficacy;
                grad_synaptic_prev[index] = grad_synaptic_prev[index] + grad_efficacy;
                grad_presynaptic[j] = grad_presynaptic[j] + grad_drive * efficacy;
            }
        }
        grad_input.copy_from_slice(&grad_presynaptic[..inputs]);
        grad_hidden_prev.copy_from_slice(&grad_presynaptic[inputs..]);
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
    let kernel = Kernel { config, parameters };
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let results: Vec<(std::ops::Range<usize>, Vec<F>, Vec<F>, Vec<F>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks(batch)
                .into_iter()
                .map(|range| {
                    let kernel = &kernel;
                    scope.spawn(move || {
                        let count = range.len();
                        let mut outputs = vec![F::zero(); steps * count * units];
                        let mut hidden_out = vec![F::zero(); count * units];
                        let mut synaptic_out = vec![F::zero(); count * units * width];
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
                        (range, outputs, hidden_out, synaptic_out)
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
    };
    for (range, outputs, hidden, synaptic) in results {
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
/// checkpoints every ⌈√T⌉ steps.
pub fn backward<F: Float + Send + Sync>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    grad_outputs: &[F],
    grad_final_hidden: Option<&[F]>,
    grad_final_synaptic: Option<&[F]>,
) -> Gradients<F> {
    let kernel = Kernel { config, parameters };
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let interval = checkpoint_interval(steps);
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
                    let mut traces: Vec<StepTrace<F>> =
                        (0..interval).map(|_| kernel.trace()).collect();
                    let mut segment_hidden = vec![vec![F::zero(); units]; interval + 1];
                    let mut segment_synaptic = vec![vec![F::zero(); units * width]; interval + 1];
                    for (local, element) in range.clone().enumerate() {
                        let input_at = |step: usize| {
                            let offset = (step * batch + element) * inputs;
                            &sequence.inputs[offset..offset + inputs]
                        };
                        // Forward, keeping the state entering every `interval`-th step.
                        let mut checkpoints = Vec::with_capacity(steps.div_ceil(interval));
                        let mut hidden =
                            sequence.hidden[element * units..(element + 1) * units].to_vec();
                        let mut synaptic = sequence.synaptic
                            [element * units * width..(element + 1) * units * width]
                            .to_vec();
                        for step in 0..steps {
                            if step % interval == 0 {
                                checkpoints.push((hidden.clone(), synaptic.clone()));
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
                        for (segment, (hidden0, synaptic0)) in checkpoints.iter().enumerate().rev()
                        {
                            let start = segment * interval;
                            let end = (start + interval).min(steps);
                            segment_hidden[0].copy_from_slice(hidden0);
                            segment_synaptic[0].copy_from_slice(synaptic0);
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
    use crate::params::{load_named, named_gradients};
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

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
        tensor
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap()
    }

    /// The fused kernel against the op-by-op cell, in float64, for one option combination:
    /// outputs, final state, and gradients to every parameter, the inputs and the initial state.
    fn check(
        normalisation: Normalisation,
        presynaptic: Presynaptic,
        per_synapse: bool,
        clamp: Option<f64>,
        seed: u64,
    ) {
        let (inputs, units, batch, steps) = (3, 4, 3, 7);
        let width = inputs + units;
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
        let cell = StpnRConfig::new(inputs, units)
            .with_per_synapse(per_synapse)
            .with_normalisation(normalisation)
            .with_presynaptic(presynaptic)
            .with_clamp(clamp)
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
            Tensor::<3>::from_data(TensorData::new(data.to_vec(), shape), options.clone())
        };
        let x_tensor = tensor3(&x, [steps, batch, inputs]).require_grad();
        let state = StpnRState {
            hidden: Tensor::<2>::from_data(
                TensorData::new(hidden0.clone(), [batch, units]),
                options.clone(),
            )
            .require_grad(),
            synaptic: tensor3(&synaptic0, [batch, units, width]).require_grad(),
        };
        let sequence = run_sequence(&cell, x_tensor.clone(), state.clone(), false);
        let loss = (sequence.outputs.clone() * tensor3(&grad_outputs, [steps, batch, units])).sum()
            + (sequence.final_state.hidden.clone()
                * Tensor::<2>::from_data(
                    TensorData::new(grad_hidden.clone(), [batch, units]),
                    options.clone(),
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
            &grad_outputs,
            Some(&grad_hidden),
            Some(&grad_synaptic),
        );

        let label =
            format!("{normalisation:?} {presynaptic:?} per_synapse={per_synapse} clamp={clamp:?}");
        let comparisons = [
            ("outputs", forward.outputs.clone(), values(sequence.outputs)),
            (
                "final h",
                forward.hidden.clone(),
                values(sequence.final_state.hidden),
            ),
            (
                "final F",
                forward.synaptic.clone(),
                values(sequence.final_state.synaptic),
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
                values(x_tensor.grad(&autodiff).unwrap()),
            ),
            (
                "grad h0",
                gradients.hidden.clone(),
                values(state.hidden.grad(&autodiff).unwrap()),
            ),
            (
                "grad F0",
                gradients.synaptic.clone(),
                values(state.synaptic.grad(&autodiff).unwrap()),
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
                        seed += 1;
                        check(normalisation, presynaptic, per_synapse, clamp, seed);
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
