//! The sequence kernel with batch elements side by side in SIMD lanes.
//!
//! [`super::cpu`] steps one batch element at a time: its loops run along a row of `P` synapses,
//! each row's reductions (the drive, the norm, the backward's dot products) end in a horizontal
//! sum, and rows of a few dozen numbers spend much of their time at the loops' edges. Here a
//! group of `LANES` (8) batch elements steps together: every per-element number of the step is a
//! vector of `LANES` numbers, one per element (a group's synaptic state is `[H, P, LANES]`,
//! its presynaptic vector `[P, LANES]`), a reduction along a row is `LANES` sums side by side,
//! and each parameter is read once for the group.
//!
//! Each element sees the operations of [`super::cpu`] in the same order (a row's sums in the
//! same 8 partial sums), so outputs, states and the gradients of inputs and initial states are
//! the same to the bit; parameter gradients, summed over the batch in another order, agree to
//! rounding (tested).
//!
//! It covers sequences of one length and the options with nothing between the plastic update
//! and `F_t` (no clamp, no post-normalisation, no squashed state): the associative-retrieval
//! STPNr and STPNf, the maze and Pong ablations. [`super::threads`] chooses it for those
//! (`covers`); the checkpoints it keeps are in its own layout (`Checkpoints::lanes`).

use num_traits::Float;

use super::cpu::{BackwardInputs, BackwardPart, KernelFloat, ParameterGradients, constant};
use super::options::{Checkpoints, ForwardOutput, Gradients, KernelConfig, Parameters, Sequence};
use super::threads::{
    avx2_or_portable, chunks, gather_gradients, interleave_steps, on_kernel_threads, split_rows,
    zeroed_output,
};

/// Batch elements per group: one AVX2 vector of float32.
pub(super) const LANES: usize = 8;

/// One number per element of a group.
type Lane<F> = [F; LANES];

/// Partial sums of a row's reductions, as in [`super::cpu`]'s `lanes_sum`.
const PARTIAL_SUMS: usize = 8;

/// Largest synaptic state of one group, in bytes, that the layout is used for: the group's
/// states, rebuilt in the backward, must stay in the core's cache (Pong's STPN over 2 592
/// features, 5.4 MB a group, stays with one element at a time).
const MAX_GROUP_STATE_BYTES: usize = 1 << 20;

/// Whether this layout computes `config` on `sequence` (see the module's documentation).
pub(super) fn covers<F>(config: &KernelConfig, sequence: &Sequence<'_, F>) -> bool {
    let width = config.presynaptic_size();
    let group_state = config.hidden_size * width * LANES * std::mem::size_of::<F>();
    !config.transforms_update()
        && !config.squash_state
        && sequence.batch >= LANES
        && group_state <= MAX_GROUP_STATE_BYTES
        && (0..sequence.batch).all(|element| sequence.length(element) == sequence.steps)
}

/// The lane `index` of a `[.., LANES]` buffer.
#[inline(always)]
fn lane<F: Copy>(values: &[F], index: usize) -> Lane<F> {
    values[index * LANES..(index + 1) * LANES]
        .try_into()
        .expect("a lane")
}

/// Writes the lane `index` of a `[.., LANES]` buffer. (Lanes are computed in local arrays and
/// stored whole: written in place through several slices, LLVM did not vectorise the loops.)
#[inline(always)]
fn store<F: Copy>(values: &mut [F], index: usize, lane: Lane<F>) {
    values[index * LANES..(index + 1) * LANES].copy_from_slice(&lane);
}

/// `[value(0), …, value(LANES - 1)]` for an expression of the lane `l`, as a loop over a local
/// array (`std::array::from_fn` was not vectorised).
macro_rules! per_lane {
    (|$l:ident| $value:expr) => {{
        let mut lanes = [F::zero(); LANES];
        for $l in 0..LANES {
            lanes[$l] = $value;
        }
        lanes
    }};
}

/// `Σ_j term(j)` over a row of `width`, per lane, in [`PARTIAL_SUMS`] partial sums then the rest
/// in order: the order of [`super::cpu`]'s `lanes_sum`, so the same number to the bit.
#[inline(always)]
fn row_sum<F: Float>(width: usize, term: impl Fn(usize) -> Lane<F>) -> Lane<F> {
    let mut partial = [[F::zero(); LANES]; PARTIAL_SUMS];
    let full = width / PARTIAL_SUMS * PARTIAL_SUMS;
    for chunk in (0..full).step_by(PARTIAL_SUMS) {
        for (offset, sums) in partial.iter_mut().enumerate() {
            let value = term(chunk + offset);
            for l in 0..LANES {
                sums[l] = sums[l] + value[l];
            }
        }
    }
    let mut sum = [F::zero(); LANES];
    for sums in &partial {
        for l in 0..LANES {
            sum[l] = sum[l] + sums[l];
        }
    }
    for j in full..width {
        let value = term(j);
        for l in 0..LANES {
            sum[l] = sum[l] + value[l];
        }
    }
    sum
}

/// The layer's parameters with Λ and Γ as full `[H·P]` rows (a scalar repeated), and the sizes.
struct LaneKernel<'a, F> {
    config: KernelConfig,
    weight: &'a [F],
    bias: &'a [F],
    lambda: Vec<F>,
    gamma: Vec<F>,
    /// Λ and Γ as given, `[H·P]` or `[1]`.
    lambda_parameter: &'a [F],
    gamma_parameter: &'a [F],
    units: usize,
    width: usize,
    inputs: usize,
}

impl<'a, F: KernelFloat> LaneKernel<'a, F> {
    fn new(config: KernelConfig, parameters: Parameters<'a, F>) -> Self {
        let width = config.presynaptic_size();
        let size = config.hidden_size * width;
        let full = |values: &[F]| {
            if values.len() == 1 {
                vec![values[0]; size]
            } else {
                values.to_vec()
            }
        };
        Self {
            config,
            weight: parameters.weight,
            bias: parameters.bias,
            lambda: full(parameters.lambda),
            gamma: full(parameters.gamma),
            lambda_parameter: parameters.lambda,
            gamma_parameter: parameters.gamma,
            units: config.hidden_size,
            width,
            inputs: config.input_size,
        }
    }

    /// Numbers of one group's synaptic state, `H·P·LANES`.
    fn synaptic_size(&self) -> usize {
        self.units * self.width * LANES
    }

    /// A kept state of a group: `h` `[H, LANES]` then `F` `[H, P, LANES]`.
    fn state_size(&self) -> usize {
        self.units * LANES + self.synaptic_size()
    }

    /// A step's record of a group: the drive, the norm and `h_t`, each `[H, LANES]`.
    fn record_size(&self) -> usize {
        3 * self.units * LANES
    }
}

/// One step of a group, the per-element numbers of [`super::cpu`]'s `StepTrace`, `[.., LANES]`.
struct LaneTrace<F> {
    drive: Vec<F>,
    norm: Vec<F>,
    denominator: Vec<F>,
    hidden: Vec<F>,
    /// `z_t = [x_t ; h_{t-1}]`, `[P, LANES]`.
    presynaptic: Vec<F>,
    /// The update's presynaptic vector, `[P, LANES]`.
    update_presynaptic: Vec<F>,
}

impl<F: KernelFloat> LaneTrace<F> {
    fn new(kernel: &LaneKernel<'_, F>) -> Self {
        let (units, width) = (kernel.units * LANES, kernel.width * LANES);
        Self {
            drive: vec![F::zero(); units],
            norm: vec![F::one(); units],
            denominator: vec![F::one(); units],
            hidden: vec![F::zero(); units],
            presynaptic: vec![F::zero(); width],
            update_presynaptic: vec![F::zero(); width],
        }
    }
}

/// The batch elements of group `group` (fewer than [`LANES`] in a last, padded group).
fn members(group: usize, batch: usize) -> std::ops::Range<usize> {
    group * LANES..((group + 1) * LANES).min(batch)
}

impl<F: KernelFloat> LaneKernel<'_, F> {
    /// `z_t` from the group's inputs of step `step` and `h_{t-1}`.
    #[inline(always)]
    fn fill_presynaptic(
        &self,
        sequence: &Sequence<'_, F>,
        (group, step): (usize, usize),
        hidden_prev: &[F],
        trace: &mut LaneTrace<F>,
    ) {
        let inputs = self.inputs;
        let group_members = members(group, sequence.batch);
        if group_members.len() < LANES {
            // A padded group: its extra lanes see zeros.
            trace.presynaptic[..inputs * LANES].fill(F::zero());
        }
        for (l, element) in group_members.enumerate() {
            let offset = (step * sequence.batch + element) * inputs;
            for (j, value) in sequence.inputs[offset..offset + inputs].iter().enumerate() {
                trace.presynaptic[j * LANES + l] = *value;
            }
        }
        if self.config.recurrent {
            trace.presynaptic[inputs * LANES..].copy_from_slice(hidden_prev);
        }
    }

    /// The update's presynaptic vector: `[x_t ; h_t]` or `z_t`.
    #[inline(always)]
    fn fill_update_presynaptic(&self, trace: &mut LaneTrace<F>) {
        let inputs = self.inputs * LANES;
        if self.config.update_sees_drive_presynaptic() {
            trace.update_presynaptic.copy_from_slice(&trace.presynaptic);
        } else {
            trace.update_presynaptic[..inputs].copy_from_slice(&trace.presynaptic[..inputs]);
            trace.update_presynaptic[inputs..].copy_from_slice(&trace.hidden);
        }
    }

    /// The forward of one step of a group: `h_t` into the trace, `F_t` into `synaptic`.
    #[inline(always)]
    fn step(&self, synaptic_prev: &[F], synaptic: &mut [F], trace: &mut LaneTrace<F>) {
        let (units, width) = (self.units, self.width);
        let epsilon = constant::<F>(super::options::NORM_EPSILON);
        let floor = constant::<F>(1e-30);
        for unit in 0..units {
            let weight = &self.weight[unit * width..(unit + 1) * width];
            let previous = &synaptic_prev[unit * width * LANES..(unit + 1) * width * LANES];
            let presynaptic = &trace.presynaptic;
            let drive = row_sum(width, |j| {
                let (f, z) = (lane(previous, j), lane(presynaptic, j));
                per_lane!(|l| (weight[j] + f[l]) * z[l])
            });
            store(&mut trace.drive, unit, drive);
            let preactivation = if self.config.normalised() {
                let squares = row_sum(width, |j| {
                    let f = lane(previous, j);
                    per_lane!(|l| {
                        let efficacy = weight[j] + f[l];
                        efficacy * efficacy
                    })
                });
                let norm: Lane<F> = per_lane!(|l| (squares[l] + floor).sqrt());
                let denominator: Lane<F> = per_lane!(|l| norm[l] + epsilon);
                store(&mut trace.norm, unit, norm);
                store(&mut trace.denominator, unit, denominator);
                let bias = if self.config.normalised_bias {
                    self.bias[unit]
                } else {
                    F::zero()
                };
                per_lane!(|l| drive[l] / denominator[l] + bias)
            } else {
                let bias = self.bias[unit];
                per_lane!(|l| drive[l] + bias)
            };
            store(&mut trace.hidden, unit, preactivation);
        }
        self.config.activation.apply_in_place(&mut trace.hidden);
        self.fill_update_presynaptic(trace);
        self.update(synaptic_prev, synaptic, trace);
    }

    /// `F_t = Λ ⊙ F_{t-1} / scale + Γ ⊙ (h_t ⊗ p)` from the trace, row by row.
    #[inline(always)]
    fn update(&self, synaptic_prev: &[F], synaptic: &mut [F], trace: &LaneTrace<F>) {
        let width = self.width;
        for unit in 0..self.units {
            let row = unit * width..(unit + 1) * width;
            let (lambda, gamma) = (&self.lambda[row.clone()], &self.gamma[row]);
            let inverse_scale: Lane<F> = if self.config.scales_state() {
                let denominator = lane(&trace.denominator, unit);
                per_lane!(|l| F::one() / denominator[l])
            } else {
                [F::one(); LANES]
            };
            let post = lane(&trace.hidden, unit);
            let span = unit * width * LANES..(unit + 1) * width * LANES;
            let previous = &synaptic_prev[span.clone()];
            let out = &mut synaptic[span];
            for j in 0..width {
                let (f, p) = (lane(previous, j), lane(&trace.update_presynaptic, j));
                let (lambda, gamma) = (lambda[j], gamma[j]);
                let value =
                    per_lane!(|l| lambda * (f[l] * inverse_scale[l]) + gamma * post[l] * p[l]);
                store(out, j, value);
            }
        }
    }

    /// The trace of step `step` from its record and `h_{t-1}` (no reductions).
    #[inline(always)]
    fn replay(
        &self,
        sequence: &Sequence<'_, F>,
        position: (usize, usize),
        hidden_prev: &[F],
        record: &[F],
        trace: &mut LaneTrace<F>,
    ) {
        let size = self.units * LANES;
        let epsilon = constant::<F>(super::options::NORM_EPSILON);
        self.fill_presynaptic(sequence, position, hidden_prev, trace);
        trace.drive.copy_from_slice(&record[..size]);
        trace.norm.copy_from_slice(&record[size..2 * size]);
        trace.hidden.copy_from_slice(&record[2 * size..3 * size]);
        if self.config.normalised() {
            for (denominator, norm) in trace.denominator.iter_mut().zip(&trace.norm) {
                *denominator = *norm + epsilon;
            }
        }
        self.fill_update_presynaptic(trace);
    }
}

/// Gradient accumulators of one thread, per lane: the parameters' `[.., LANES]`.
struct LaneGradients<F> {
    weight: Vec<F>,
    bias: Vec<F>,
    lambda: Vec<F>,
    gamma: Vec<F>,
}

/// The buffers of one step's backward of a group, `[.., LANES]`.
struct LaneScratch<F> {
    grad_hidden: Vec<F>,
    grad_update_presynaptic: Vec<F>,
    grad_presynaptic: Vec<F>,
    grad_denominator: Vec<F>,
}

impl<F: KernelFloat> LaneKernel<'_, F> {
    /// The backward of one row of the plastic update (see [`super::cpu`]'s
    /// `update_row_backward`, without a clamp or post-normalisation).
    #[inline(always)]
    fn update_row_backward(
        &self,
        unit: usize,
        (trace, synaptic_prev, grad_synaptic): (&LaneTrace<F>, &[F], &[F]),
        grad_synaptic_prev: &mut [F],
        grads: &mut LaneGradients<F>,
        scratch: &mut LaneScratch<F>,
    ) {
        let width = self.width;
        let row = unit * width..(unit + 1) * width;
        let span = unit * width * LANES..(unit + 1) * width * LANES;
        let pre = self.config.scales_state();
        let inverse_scale: Lane<F> = if pre {
            let denominator = lane(&trace.denominator, unit);
            per_lane!(|l| F::one() / denominator[l])
        } else {
            [F::one(); LANES]
        };
        let (lambda, gamma) = (&self.lambda[row.clone()], &self.gamma[row]);
        let post = lane(&trace.hidden, unit);
        let presynaptic = &trace.update_presynaptic;
        let (decaying, grad_row) = (&synaptic_prev[span.clone()], &grad_synaptic[span.clone()]);
        let grad_lambda = &mut grads.lambda[span.clone()];
        let grad_gamma = &mut grads.gamma[span.clone()];
        let grad_previous = &mut grad_synaptic_prev[span];
        for j in 0..width {
            let (grad, f, p) = (lane(grad_row, j), lane(decaying, j), lane(presynaptic, j));
            let (lambda, gamma) = (lambda[j], gamma[j]);
            let (sum_lambda, sum_gamma) = (lane(grad_lambda, j), lane(grad_gamma, j));
            let sum_p = lane(&scratch.grad_update_presynaptic, j);
            store(
                grad_lambda,
                j,
                per_lane!(|l| sum_lambda[l] + grad[l] * (f[l] * inverse_scale[l])),
            );
            store(
                grad_gamma,
                j,
                per_lane!(|l| sum_gamma[l] + grad[l] * post[l] * p[l]),
            );
            store(
                &mut scratch.grad_update_presynaptic,
                j,
                per_lane!(|l| sum_p[l] + grad[l] * gamma * post[l]),
            );
            store(
                grad_previous,
                j,
                per_lane!(|l| grad[l] * lambda * inverse_scale[l]),
            );
        }
        let grad_post = row_sum(width, |j| {
            let (grad, p) = (lane(grad_row, j), lane(presynaptic, j));
            per_lane!(|l| grad[l] * gamma[j] * p[l])
        });
        let grad_hidden = lane(&scratch.grad_hidden, unit);
        store(
            &mut scratch.grad_hidden,
            unit,
            per_lane!(|l| grad_hidden[l] + grad_post[l]),
        );
        if pre {
            let weighted = row_sum(width, |j| {
                let (grad, f) = (lane(grad_row, j), lane(decaying, j));
                per_lane!(|l| grad[l] * lambda[j] * f[l])
            });
            store(
                &mut scratch.grad_denominator,
                unit,
                per_lane!(|l| -weighted[l] * inverse_scale[l] * inverse_scale[l]),
            );
        }
    }

    /// The backward of one row's neuron (see [`super::cpu`]'s `neuron_row_backward`), its
    /// presynaptic gradient into `grad_update_presynaptic` when `shared`.
    #[inline(always)]
    fn neuron_row_backward(
        &self,
        unit: usize,
        (trace, synaptic_prev): (&LaneTrace<F>, &[F]),
        grad_synaptic_prev: &mut [F],
        grads: &mut LaneGradients<F>,
        scratch: &mut LaneScratch<F>,
        shared: bool,
    ) {
        let width = self.width;
        let span = unit * width * LANES..(unit + 1) * width * LANES;
        let hidden = lane(&trace.hidden, unit);
        let grad_hidden = lane(&scratch.grad_hidden, unit);
        let activation = self.config.activation;
        let grad_preactivation: Lane<F> =
            per_lane!(|l| grad_hidden[l] * activation.derivative(hidden[l]));
        if !self.config.normalised() || self.config.normalised_bias {
            let grad_bias = lane(&grads.bias, unit);
            store(
                &mut grads.bias,
                unit,
                per_lane!(|l| grad_bias[l] + grad_preactivation[l]),
            );
        }
        let (grad_drive, grad_norm): (Lane<F>, Lane<F>) = if self.config.normalised() {
            let (denominator, drive, norm) = (
                lane(&trace.denominator, unit),
                lane(&trace.drive, unit),
                lane(&trace.norm, unit),
            );
            let grad_denominator = lane(&scratch.grad_denominator, unit);
            let through_denominator: Lane<F> = per_lane!(|l| {
                grad_denominator[l]
                    - grad_preactivation[l] * drive[l] / (denominator[l] * denominator[l])
            });
            (
                per_lane!(|l| grad_preactivation[l] / denominator[l]),
                per_lane!(|l| through_denominator[l] / norm[l]),
            )
        } else {
            (grad_preactivation, [F::zero(); LANES])
        };
        let weight = &self.weight[unit * width..(unit + 1) * width];
        let previous = &synaptic_prev[span.clone()];
        let grad_weight = &mut grads.weight[span.clone()];
        let grad_previous = &mut grad_synaptic_prev[span];
        let grad_presynaptic = if shared {
            &mut scratch.grad_update_presynaptic
        } else {
            &mut scratch.grad_presynaptic
        };
        for j in 0..width {
            let (f, z) = (lane(previous, j), lane(&trace.presynaptic, j));
            let (sum_weight, sum_previous) = (lane(grad_weight, j), lane(grad_previous, j));
            let sum_presynaptic = lane(grad_presynaptic, j);
            let weight = weight[j];
            let efficacy = per_lane!(|l| weight + f[l]);
            let grad_efficacy = per_lane!(|l| grad_drive[l] * z[l] + grad_norm[l] * efficacy[l]);
            store(
                grad_weight,
                j,
                per_lane!(|l| sum_weight[l] + grad_efficacy[l]),
            );
            store(
                grad_previous,
                j,
                per_lane!(|l| sum_previous[l] + grad_efficacy[l]),
            );
            store(
                grad_presynaptic,
                j,
                per_lane!(|l| sum_presynaptic[l] + grad_drive[l] * efficacy[l]),
            );
        }
    }

    /// The backward of one step of a group, from `grad_hidden` (`h_t`) and `grad_synaptic`
    /// (`F_t`): writes the gradients of `F_{t-1}` and `h_{t-1}` and returns the presynaptic
    /// vector's (its first `I` lanes are the input's).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn step_backward<'s>(
        &self,
        trace: &LaneTrace<F>,
        synaptic_prev: &[F],
        grad_hidden: &[F],
        grad_synaptic: &[F],
        grad_hidden_prev: &mut [F],
        grad_synaptic_prev: &mut [F],
        grads: &mut LaneGradients<F>,
        scratch: &'s mut LaneScratch<F>,
    ) -> &'s [F] {
        let (inputs, units) = (self.inputs * LANES, self.units);
        scratch.grad_hidden.copy_from_slice(grad_hidden);
        scratch.grad_update_presynaptic.fill(F::zero());
        scratch.grad_denominator.fill(F::zero());
        let shared = self.config.update_sees_drive_presynaptic();
        let rows = (trace, synaptic_prev, grad_synaptic);
        if shared {
            for unit in 0..units {
                self.update_row_backward(unit, rows, grad_synaptic_prev, grads, scratch);
                self.neuron_row_backward(
                    unit,
                    (trace, synaptic_prev),
                    grad_synaptic_prev,
                    grads,
                    scratch,
                    true,
                );
            }
        } else {
            for unit in 0..units {
                self.update_row_backward(unit, rows, grad_synaptic_prev, grads, scratch);
            }
            // z_t drove the neurons, [x_t ; h_t] the update: the update's gradient of h_t
            // joins that of the output.
            scratch.grad_presynaptic[..inputs]
                .copy_from_slice(&scratch.grad_update_presynaptic[..inputs]);
            scratch.grad_presynaptic[inputs..].fill(F::zero());
            for (grad, from_update) in scratch
                .grad_hidden
                .iter_mut()
                .zip(&scratch.grad_update_presynaptic[inputs..])
            {
                *grad = *grad + *from_update;
            }
            for unit in 0..units {
                self.neuron_row_backward(
                    unit,
                    (trace, synaptic_prev),
                    grad_synaptic_prev,
                    grads,
                    scratch,
                    false,
                );
            }
        }
        let grad_presynaptic = if shared {
            &scratch.grad_update_presynaptic
        } else {
            &scratch.grad_presynaptic
        };
        if self.config.recurrent {
            grad_hidden_prev.copy_from_slice(&grad_presynaptic[inputs..]);
        } else {
            grad_hidden_prev.fill(F::zero());
        }
        grad_presynaptic
    }
}

/// One thread's groups and its share of the forward's results.
struct ForwardGroups<'a, F> {
    groups: std::ops::Range<usize>,
    hidden: &'a mut [F],
    synaptic: &'a mut [F],
    states: &'a mut [F],
    records: &'a mut [F],
}

/// The forward of one thread's groups; returns their outputs, `[T, count, H]` (`count`: the
/// share's batch elements).
#[inline(always)]
fn forward_groups<F: KernelFloat>(
    kernel: &LaneKernel<'_, F>,
    sequence: Sequence<'_, F>,
    interval: usize,
    share: ForwardGroups<'_, F>,
) -> Vec<F> {
    let (units, width, steps, batch) = (kernel.units, kernel.width, sequence.steps, sequence.batch);
    let first = share.groups.start * LANES;
    let count = members(share.groups.end - 1, batch).end - first;
    let (synaptic_size, state_size, record_size) = (
        kernel.synaptic_size(),
        kernel.state_size(),
        kernel.record_size(),
    );
    let keep = interval > 0;
    let (per_group, per_group_records) = if keep {
        (steps.div_ceil(interval) * state_size, steps * record_size)
    } else {
        (0, 0)
    };
    let mut outputs = vec![F::zero(); steps * count * units];
    let mut trace = LaneTrace::new(kernel);
    let mut states = [
        vec![F::zero(); synaptic_size],
        vec![F::zero(); synaptic_size],
    ];
    let mut hidden = vec![F::zero(); units * LANES];
    for (local, group) in share.groups.clone().enumerate() {
        // Gather the group's initial state; a padded group's extra lanes start at zero.
        hidden.fill(F::zero());
        states[0].fill(F::zero());
        for (l, element) in members(group, batch).enumerate() {
            for unit in 0..units {
                hidden[unit * LANES + l] = sequence.hidden[element * units + unit];
            }
            let initial =
                &sequence.synaptic[element * units * width..(element + 1) * units * width];
            for (synapse, value) in initial.iter().enumerate() {
                states[0][synapse * LANES + l] = *value;
            }
        }
        let slots = &mut share.states[local * per_group..(local + 1) * per_group];
        let records =
            &mut share.records[local * per_group_records..(local + 1) * per_group_records];
        for step in 0..steps {
            let (before, after) = states.split_at_mut(1);
            let (previous, next) = if step % 2 == 0 {
                (&before[0], &mut after[0])
            } else {
                (&after[0], &mut before[0])
            };
            if keep && step % interval == 0 {
                let slot = &mut slots[step / interval * state_size..][..state_size];
                slot[..units * LANES].copy_from_slice(&hidden);
                slot[units * LANES..].copy_from_slice(previous);
            }
            kernel.fill_presynaptic(&sequence, (group, step), &hidden, &mut trace);
            kernel.step(previous, next, &mut trace);
            hidden.copy_from_slice(&trace.hidden);
            if keep {
                let record = &mut records[step * record_size..(step + 1) * record_size];
                let size = units * LANES;
                record[..size].copy_from_slice(&trace.drive);
                record[size..2 * size].copy_from_slice(&trace.norm);
                record[2 * size..].copy_from_slice(&trace.hidden);
            }
            for (l, element) in members(group, batch).enumerate() {
                let out = (step * count + element - first) * units;
                for unit in 0..units {
                    outputs[out + unit] = hidden[unit * LANES + l];
                }
            }
        }
        let last = &states[steps % 2];
        for (l, element) in members(group, batch).enumerate() {
            let local_element = element - first;
            for unit in 0..units {
                share.hidden[local_element * units + unit] = hidden[unit * LANES + l];
            }
            let target = &mut share.synaptic[local_element * units * width..][..units * width];
            for (synapse, value) in target.iter_mut().enumerate() {
                *value = last[synapse * LANES + l];
            }
        }
    }
    outputs
}

/// [`forward_groups`] compiled for AVX2 (see [`super::threads::forward_chunk_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_groups_avx2<F: KernelFloat>(
    kernel: &LaneKernel<'_, F>,
    sequence: Sequence<'_, F>,
    interval: usize,
    share: ForwardGroups<'_, F>,
) -> Vec<F> {
    forward_groups(kernel, sequence, interval, share)
}

/// The groups of `batch` split over threads, and each thread's batch elements.
fn group_ranges(
    kernel: &LaneKernel<'_, impl KernelFloat>,
    steps: usize,
    batch: usize,
) -> (Vec<std::ops::Range<usize>>, Vec<std::ops::Range<usize>>) {
    let groups = batch.div_ceil(LANES);
    let ranges = chunks(groups, steps * kernel.synaptic_size());
    let elements = ranges
        .iter()
        .map(|range| range.start * LANES..(range.end * LANES).min(batch))
        .collect();
    (ranges, elements)
}

/// The forward of a sequence in this layout ([`super::threads::forward_keeping`]'s, whose
/// checkpoints, every `interval`-th state, are in this layout).
pub(super) fn forward<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    interval: usize,
) -> ForwardOutput<F> {
    let kernel = LaneKernel::new(config, parameters);
    let (units, width) = (kernel.units, kernel.width);
    let (steps, batch) = (sequence.steps, sequence.batch);
    let (ranges, elements) = group_ranges(&kernel, steps, batch);
    let groups = batch.div_ceil(LANES);
    let (per_group, per_group_records) = if interval > 0 {
        (
            steps.div_ceil(interval) * kernel.state_size(),
            steps * kernel.record_size(),
        )
    } else {
        (0, 0)
    };
    let checkpoints = Checkpoints {
        interval,
        states: vec![F::zero(); groups * per_group],
        records: vec![F::zero(); groups * per_group_records],
        lanes: true,
    };
    let mut output = zeroed_output(config, (steps, batch), checkpoints);
    let (all_outputs, hidden, synaptic, checkpoints) = output.parts_mut();
    let shares: Vec<ForwardGroups<'_, F>> = ranges
        .iter()
        .zip(split_rows(&elements, units, hidden))
        .zip(split_rows(&elements, units * width, synaptic))
        .zip(split_rows(&ranges, per_group, &mut checkpoints.states))
        .zip(split_rows(
            &ranges,
            per_group_records,
            &mut checkpoints.records,
        ))
        .map(
            |((((groups, hidden), synaptic), states), records)| ForwardGroups {
                groups: groups.clone(),
                hidden,
                synaptic,
                states,
                records,
            },
        )
        .collect();
    let kernel = &kernel;
    let outputs = on_kernel_threads(shares, |share, wide| {
        avx2_or_portable!(
            wide,
            forward_groups_avx2,
            forward_groups(kernel, sequence, interval, share)
        )
    });
    interleave_steps(all_outputs, &elements, &outputs, (steps, batch, units));
    output
}

/// One thread's groups and the gradients of its elements' initial states.
struct BackwardGroups<'a, F> {
    groups: std::ops::Range<usize>,
    grad_hidden: &'a mut [F],
    grad_synaptic: &'a mut [F],
}

/// The backward of one thread's groups: segment by segment from the last, the states between
/// two checkpoints rebuilt from the records, then the steps in reverse. Returns the parameter
/// gradients and the inputs' `[T, count, I]`.
#[inline(always)]
fn backward_groups<F: KernelFloat>(
    kernel: &LaneKernel<'_, F>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    share: BackwardGroups<'_, F>,
) -> BackwardPart<F> {
    let (units, width, inputs) = (kernel.units, kernel.width, kernel.inputs);
    let (steps, batch) = (sequence.steps, sequence.batch);
    let interval = given.checkpoints.interval;
    let (synaptic_size, state_size, record_size) = (
        kernel.synaptic_size(),
        kernel.state_size(),
        kernel.record_size(),
    );
    let per_group = steps.div_ceil(interval) * state_size;
    let first = share.groups.start * LANES;
    let count = members(share.groups.end - 1, batch).end - first;
    let mut grads = LaneGradients {
        weight: vec![F::zero(); synaptic_size],
        bias: vec![F::zero(); units * LANES],
        lambda: vec![F::zero(); synaptic_size],
        gamma: vec![F::zero(); synaptic_size],
    };
    let mut scratch = LaneScratch {
        grad_hidden: vec![F::zero(); units * LANES],
        grad_update_presynaptic: vec![F::zero(); width * LANES],
        grad_presynaptic: vec![F::zero(); width * LANES],
        grad_denominator: vec![F::zero(); units * LANES],
    };
    let mut grad_inputs = vec![F::zero(); steps * count * inputs];
    let mut traces: Vec<LaneTrace<F>> = (0..interval).map(|_| LaneTrace::new(kernel)).collect();
    let mut rebuilt = vec![vec![F::zero(); synaptic_size]; interval.saturating_sub(1)];
    let (mut grad_hidden, mut grad_hidden_prev) = (
        vec![F::zero(); units * LANES],
        vec![F::zero(); units * LANES],
    );
    let (mut grad_synaptic, mut grad_synaptic_prev) = (
        vec![F::zero(); synaptic_size],
        vec![F::zero(); synaptic_size],
    );
    for group in share.groups.clone() {
        let group_members = members(group, batch);
        grad_hidden.fill(F::zero());
        grad_synaptic.fill(F::zero());
        for (l, element) in group_members.clone().enumerate() {
            if let Some(g) = given.grad_final_hidden {
                for unit in 0..units {
                    grad_hidden[unit * LANES + l] = g[element * units + unit];
                }
            }
            if let Some(g) = given.grad_final_synaptic {
                let rows = &g[element * units * width..(element + 1) * units * width];
                for (synapse, value) in rows.iter().enumerate() {
                    grad_synaptic[synapse * LANES + l] = *value;
                }
            }
        }
        let slots = &given.checkpoints.states[group * per_group..][..per_group];
        let records =
            &given.checkpoints.records[group * steps * record_size..][..steps * record_size];
        let record_at = |step: usize| &records[step * record_size..(step + 1) * record_size];
        for segment in (0..steps.div_ceil(interval)).rev() {
            let start = segment * interval;
            let end = (start + interval).min(steps);
            let slot = &slots[segment * state_size..(segment + 1) * state_size];
            let (hidden_start, synaptic_start) = slot.split_at(units * LANES);
            for step in start..end {
                let offset = step - start;
                let hidden_prev = if offset == 0 {
                    hidden_start
                } else {
                    &record_at(step - 1)[2 * units * LANES..]
                };
                let trace = &mut traces[offset];
                kernel.replay(
                    &sequence,
                    (group, step),
                    hidden_prev,
                    record_at(step),
                    trace,
                );
                // F_t is needed as the next step's F_{t-1} within the segment.
                if step + 1 < end {
                    let (before, after) = rebuilt.split_at_mut(offset);
                    let previous = if offset == 0 {
                        synaptic_start
                    } else {
                        &before[offset - 1][..]
                    };
                    kernel.update(previous, &mut after[0], trace);
                }
            }
            for step in (start..end).rev() {
                let offset = step - start;
                for (l, element) in group_members.clone().enumerate() {
                    let out = (step * batch + element) * units;
                    for unit in 0..units {
                        let at = unit * LANES + l;
                        grad_hidden[at] = grad_hidden[at] + given.grad_outputs[out + unit];
                    }
                }
                let synaptic_prev = if offset == 0 {
                    synaptic_start
                } else {
                    &rebuilt[offset - 1][..]
                };
                let grad_presynaptic = kernel.step_backward(
                    &traces[offset],
                    synaptic_prev,
                    &grad_hidden,
                    &grad_synaptic,
                    &mut grad_hidden_prev,
                    &mut grad_synaptic_prev,
                    &mut grads,
                    &mut scratch,
                );
                for (l, element) in group_members.clone().enumerate() {
                    let at = (step * count + element - first) * inputs;
                    for (j, grad) in grad_inputs[at..at + inputs].iter_mut().enumerate() {
                        *grad = grad_presynaptic[j * LANES + l];
                    }
                }
                std::mem::swap(&mut grad_hidden, &mut grad_hidden_prev);
                std::mem::swap(&mut grad_synaptic, &mut grad_synaptic_prev);
            }
        }
        for (l, element) in group_members.enumerate() {
            let local_element = element - first;
            for unit in 0..units {
                share.grad_hidden[local_element * units + unit] = grad_hidden[unit * LANES + l];
            }
            let target = &mut share.grad_synaptic[local_element * units * width..][..units * width];
            for (synapse, value) in target.iter_mut().enumerate() {
                *value = grad_synaptic[synapse * LANES + l];
            }
        }
    }
    // The lanes' sums, into the parameters' shapes (a scalar Λ or Γ: the sum of its row).
    let lanes_total = |values: &[F]| -> Vec<F> {
        values
            .chunks_exact(LANES)
            .map(|lanes| lanes.iter().fold(F::zero(), |total, value| total + *value))
            .collect()
    };
    let scalar_or_full = |values: Vec<F>, parameter: &[F]| -> Vec<F> {
        if parameter.len() == 1 {
            vec![values.iter().fold(F::zero(), |total, value| total + *value)]
        } else {
            values
        }
    };
    (
        ParameterGradients {
            weight: lanes_total(&grads.weight),
            bias: lanes_total(&grads.bias),
            lambda: scalar_or_full(lanes_total(&grads.lambda), &kernel.lambda_parameter),
            gamma: scalar_or_full(lanes_total(&grads.gamma), &kernel.gamma_parameter),
        },
        grad_inputs,
    )
}

/// [`backward_groups`] compiled for AVX2 (see [`super::threads::forward_chunk_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_groups_avx2<F: KernelFloat>(
    kernel: &LaneKernel<'_, F>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    share: BackwardGroups<'_, F>,
) -> BackwardPart<F> {
    backward_groups(kernel, sequence, given, share)
}

/// The backward of a sequence from checkpoints kept in this layout ([`super::threads::backward`]'s).
pub(super) fn backward<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    checkpoints: &Checkpoints<F>,
    grad_outputs: &[F],
    (grad_final_hidden, grad_final_synaptic): (Option<&[F]>, Option<&[F]>),
) -> Gradients<F> {
    let kernel = LaneKernel::new(config, parameters);
    let (units, width, inputs) = (kernel.units, kernel.width, kernel.inputs);
    let (steps, batch) = (sequence.steps, sequence.batch);
    let (ranges, elements) = group_ranges(&kernel, steps, batch);
    let given = BackwardInputs {
        checkpoints,
        grad_outputs,
        grad_final_hidden,
        grad_final_synaptic,
    };
    let mut grad_hidden0 = vec![F::zero(); batch * units];
    let mut grad_synaptic0 = vec![F::zero(); batch * units * width];
    let shares: Vec<BackwardGroups<'_, F>> = ranges
        .iter()
        .zip(split_rows(&elements, units, &mut grad_hidden0))
        .zip(split_rows(&elements, units * width, &mut grad_synaptic0))
        .map(|((groups, grad_hidden), grad_synaptic)| BackwardGroups {
            groups: groups.clone(),
            grad_hidden,
            grad_synaptic,
        })
        .collect();
    let kernel = &kernel;
    let parts = on_kernel_threads(shares, |share, wide| {
        avx2_or_portable!(
            wide,
            backward_groups_avx2,
            backward_groups(kernel, sequence, given, share)
        )
    });
    gather_gradients(
        &parameters,
        &elements,
        parts,
        (steps, batch, inputs),
        (grad_hidden0, grad_synaptic0),
    )
}
