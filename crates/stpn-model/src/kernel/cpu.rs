//! The STPN step and its backward on host memory, one batch element at a time: the float types
//! the kernel runs in (with a vectorising float32 `tanh`), the step's forward and its exact
//! backward, and the loops over the steps of one thread's share of the batch.
//!
//! The loops are written so that they vectorise (reductions in lanes, selects instead of
//! branches, slices of known length); `threads` runs them on every core, in an AVX2 copy where
//! the processor has it.

use num_traits::Float;

use super::options::{Activation, KernelConfig, Normalisation, Parameters, Presynaptic, Sequence};

impl Activation {
    /// Applies the activation to a row of preactivations, in place.
    #[inline(always)]
    pub(super) fn apply_in_place<F: KernelFloat>(self, values: &mut [F]) {
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
    pub(super) fn derivative<F: Float>(self, output: F) -> F {
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
pub(super) fn tanh_f32(x: f32) -> f32 {
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

pub(super) fn constant<F: Float>(value: f64) -> F {
    F::from(value).expect("representable constant")
}

/// Per-row quantities of one forward step, kept for its backward.
pub(super) struct StepTrace<F> {
    /// `Σ_j G_ij z_j`.
    pub(super) drive: Vec<F>,
    /// `‖G_i‖` (1 when not normalised).
    pub(super) norm: Vec<F>,
    /// `‖G_i‖ + ε` (1 when not normalised).
    pub(super) denominator: Vec<F>,
    /// `h_t`.
    pub(super) hidden: Vec<F>,
    /// The presynaptic vector of the update.
    pub(super) update_presynaptic: Vec<F>,
    /// `z_t = [x_t ; h_{t-1}]`.
    pub(super) presynaptic: Vec<F>,
    /// The post-normalisation norm of `W + F''` per row (post mode).
    pub(super) post_norm: Vec<F>,
    /// `φ` of a row of `F_{t-1}` (with `squash_state`; not kept for the backward).
    pub(super) squashed: Vec<F>,
}

/// The kernel of one layer. `W` is the presynaptic width `P` when it is known at compile time
/// ([`with_fixed_width`]), 0 when read from the config: with a constant width the loops along a row
/// unroll, where rows of a few numbers otherwise spend their time in loop overhead.
pub(super) struct Kernel<'a, F, const W: usize = 0> {
    pub(super) config: KernelConfig,
    pub(super) parameters: Parameters<'a, F>,
    /// Λ and Γ of one row: the parameters' own rows, or the scalar repeated along a row.
    pub(super) lambda_row: Vec<F>,
    pub(super) gamma_row: Vec<F>,
}

/// `Σ term(a_j, b_j, c_j)` over a row, in independent lanes so that the compiler vectorises the
/// loop (float addition is not reassociated otherwise). One accumulator per loop: with two, LLVM's
/// SLP vectoriser pairs them into 2-wide vectors with shuffles, which ran the forward's row sums
/// at several instructions per element.
#[inline(always)]
fn lanes_sum<F: Float>(a: &[F], b: &[F], c: &[F], term: impl Fn(F, F, F) -> F) -> F {
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
            sums[lane] = sums[lane] + term(a[lane], b[lane], c[lane]);
        }
    }
    let mut sum = sums.iter().fold(F::zero(), |total, lane| total + *lane);
    for ((a, b), c) in a_rest.iter().zip(b_rest).zip(c_rest) {
        sum = sum + term(*a, *b, *c);
    }
    sum
}

/// A row of the plastic update before any clamp or post-normalisation,
/// `F'_j = Λ_j·(s_j / scale) + Γ_j·h·p_j` (`s`: the decayed row, `F_{t-1}` or `φ(F_{t-1})`), into
/// `out`. One function for the forward and the backward's recomputation, so that both give the
/// same numbers to the bit.
#[inline(always)]
fn plastic_update<F: Float>(
    out: &mut [F],
    (lambda, gamma): (&[F], &[F]),
    decaying: &[F],
    inverse_scale: F,
    post: F,
    presynaptic: &[F],
) {
    let width = out.len();
    let (lambda, gamma) = (&lambda[..width], &gamma[..width]);
    let (decaying, presynaptic) = (&decaying[..width], &presynaptic[..width]);
    for j in 0..width {
        out[j] = lambda[j] * (decaying[j] * inverse_scale) + gamma[j] * post * presynaptic[j];
    }
}

/// The drive `Σ (w + f)·z` over a row (see [`lanes_sum`]).
#[inline(always)]
pub(super) fn drive<F: Float>(weight: &[F], synaptic: &[F], presynaptic: &[F]) -> F {
    lanes_sum(weight, synaptic, presynaptic, |w, f, z| (w + f) * z)
}

/// The row norm `‖w + f‖`, its square under a floor of 1e-30 (see [`lanes_sum`]).
#[inline(always)]
pub(super) fn efficacy_norm<F: Float>(weight: &[F], synaptic: &[F]) -> F {
    let squares = lanes_sum(weight, synaptic, synaptic, |w, f, _| {
        let efficacy = w + f;
        efficacy * efficacy
    });
    (squares + constant::<F>(1e-30)).sqrt()
}

/// `Σ a·b` in independent lanes.
#[inline(always)]
pub(super) fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    lanes_sum(a, b, b, |a, b, _| a * b)
}

/// `Σ a·b·c` in independent lanes.
#[inline(always)]
pub(super) fn dot3<F: Float>(a: &[F], b: &[F], c: &[F]) -> F {
    lanes_sum(a, b, c, |a, b, c| a * b * c)
}

/// Buffers of one step's backward, reused from step to step.
pub(super) struct BackwardScratch<F> {
    pub(super) grad_hidden: Vec<F>,
    pub(super) grad_update_presynaptic: Vec<F>,
    pub(super) grad_presynaptic: Vec<F>,
    pub(super) grad_denominator: Vec<F>,
    /// The gradient reaching `F'` (after the clamp's mask) of one row.
    pub(super) grad_row: Vec<F>,
    /// `F'` of one row, recomputed (with a clamp or the post-normalisation).
    pub(super) unclamped: Vec<F>,
    /// `φ` of a row of `F_{t-1}` (with `squash_state`).
    pub(super) squashed: Vec<F>,
}

/// A presynaptic width that gets a kernel of its own ([`Kernel`]'s `W`): STPNf on
/// InvertedPendulum's 4 observations, whose update runs thousands of short sequences per
/// iteration.
pub(super) const NARROW_WIDTH: usize = 4;

/// Another: the feedforward cells of associative retrieval (STPNf, HebbFF) on its 37 one-hot
/// symbols, rows of 4 AVX2 vectors and 5 numbers. Fixed, the 5 unroll: 2–20 % off an STPNf
/// epoch (docs/performance.md).
pub(super) const ONE_HOT_WIDTH: usize = 37;

/// `$run` with `$name` bound to the kernel `$kernel`, as the copy of its width fixed at compile
/// time when that width has one ([`NARROW_WIDTH`], [`ONE_HOT_WIDTH`]).
macro_rules! with_fixed_width {
    ($kernel:ident, $name:ident => $run:expr) => {
        match $kernel.width() {
            $crate::kernel::cpu::NARROW_WIDTH => {
                let $name = &$kernel.with_width::<{ $crate::kernel::cpu::NARROW_WIDTH }>();
                $run
            }
            $crate::kernel::cpu::ONE_HOT_WIDTH => {
                let $name = &$kernel.with_width::<{ $crate::kernel::cpu::ONE_HOT_WIDTH }>();
                $run
            }
            _ => {
                let $name = &$kernel;
                $run
            }
        }
    };
}
pub(super) use with_fixed_width;

impl<'a, F: KernelFloat> Kernel<'a, F> {
    pub(super) fn new(config: KernelConfig, parameters: Parameters<'a, F>) -> Self {
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

    /// The same kernel with its width `W` fixed at compile time; panics unless the config's
    /// width is `W`.
    pub(super) fn with_width<const W: usize>(self) -> Kernel<'a, F, W> {
        assert_eq!(self.config.presynaptic_size(), W, "the kernel's width");
        Kernel {
            config: self.config,
            parameters: self.parameters,
            lambda_row: self.lambda_row,
            gamma_row: self.gamma_row,
        }
    }
}

impl<'a, F: KernelFloat, const W: usize> Kernel<'a, F, W> {
    /// The presynaptic width `P`: the constant `W`, or the config's.
    #[inline(always)]
    pub(super) fn width(&self) -> usize {
        if W == 0 {
            self.config.presynaptic_size()
        } else {
            W
        }
    }

    #[inline(always)]
    fn rows(&self, unit: usize) -> (&[F], &[F]) {
        let width = self.width();
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

    /// The row that the update decays: `F_{t-1}` itself, or `φ(F_{t-1})` (the activation)
    /// written into `squashed`.
    #[inline(always)]
    fn decaying<'r>(&self, previous: &'r [F], squashed: &'r mut [F]) -> &'r [F] {
        if self.config.squash_state {
            squashed.copy_from_slice(previous);
            self.config.activation.apply_in_place(squashed);
            squashed
        } else {
            previous
        }
    }

    /// A trace with room for one step, reused from step to step.
    fn trace(&self) -> StepTrace<F> {
        let units = self.config.hidden_size;
        let width = self.width();
        StepTrace {
            drive: vec![F::zero(); units],
            norm: vec![F::one(); units],
            denominator: vec![F::one(); units],
            hidden: vec![F::zero(); units],
            update_presynaptic: vec![F::zero(); width],
            presynaptic: vec![F::zero(); width],
            post_norm: vec![F::one(); units],
            squashed: vec![F::zero(); if self.config.squash_state { width } else { 0 }],
        }
    }

    fn scratch(&self) -> BackwardScratch<F> {
        let units = self.config.hidden_size;
        let width = self.width();
        BackwardScratch {
            grad_hidden: vec![F::zero(); units],
            grad_update_presynaptic: vec![F::zero(); width],
            grad_presynaptic: vec![F::zero(); width],
            grad_denominator: vec![F::zero(); units],
            grad_row: vec![F::zero(); width],
            unclamped: vec![F::zero(); width],
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
        let units = self.config.hidden_size;
        let epsilon = constant::<F>(super::options::NORM_EPSILON);
        self.fill_presynaptic(input, hidden_prev, trace);
        if self.config.update_sees_drive_presynaptic() {
            // Each row's update follows its drive while the row of F_{t-1} is still in the
            // L1 cache: one pass over the state from memory instead of two (the same numbers).
            trace.update_presynaptic.copy_from_slice(&trace.presynaptic);
            for unit in 0..units {
                self.row_sums(unit, synaptic_prev, trace);
                self.neuron(trace, unit, epsilon);
                self.update_row(unit, synaptic_prev, synaptic, trace, false);
            }
            hidden.copy_from_slice(&trace.hidden);
            return;
        }
        for unit in 0..units {
            self.row_sums(unit, synaptic_prev, trace);
        }
        self.neurons(trace, epsilon);
        hidden.copy_from_slice(&trace.hidden);
        self.fill_update_presynaptic(input, trace);
        self.update(synaptic_prev, synaptic, trace, false);
    }

    /// The drive `Σ_j G_ij z_j` of one unit, and its row norm `‖G_i‖` when normalised, into the
    /// trace. (A method, not a closure: a closure was not inlined into the AVX2 copy.)
    #[inline(always)]
    fn row_sums(&self, unit: usize, synaptic_prev: &[F], trace: &mut StepTrace<F>) {
        let width = self.width();
        let row = unit * width..(unit + 1) * width;
        let (weight, previous) = (&self.parameters.weight[row.clone()], &synaptic_prev[row]);
        trace.drive[unit] = drive(weight, previous, &trace.presynaptic);
        if self.config.normalised() {
            trace.norm[unit] = efficacy_norm(weight, previous);
        }
    }

    /// `z_t = [x_t ; h_{t-1}]` (`x_t` alone without recurrence) into `trace.presynaptic`.
    #[inline(always)]
    fn fill_presynaptic(&self, input: &[F], hidden_prev: &[F], trace: &mut StepTrace<F>) {
        let inputs = self.config.input_size;
        trace.presynaptic[..inputs].copy_from_slice(input);
        if self.config.recurrent {
            trace.presynaptic[inputs..].copy_from_slice(hidden_prev);
        }
    }

    /// `h_t = φ(drive / (‖G‖ + ε) + b)` (or `φ(drive + b)`) from the trace's drive and norm; the
    /// denominators too.
    #[inline(always)]
    fn neurons(&self, trace: &mut StepTrace<F>, epsilon: F) {
        for unit in 0..self.config.hidden_size {
            trace.hidden[unit] = self.preactivation(trace, unit, epsilon);
        }
        self.config.activation.apply_in_place(&mut trace.hidden);
    }

    /// [`Self::neurons`] for one unit.
    #[inline(always)]
    fn neuron(&self, trace: &mut StepTrace<F>, unit: usize, epsilon: F) {
        trace.hidden[unit] = self.preactivation(trace, unit, epsilon);
        self.config
            .activation
            .apply_in_place(&mut trace.hidden[unit..unit + 1]);
    }

    /// `drive / (‖G‖ + ε) + b` (or `drive + b`) of one unit; its denominator into the trace.
    #[inline(always)]
    fn preactivation(&self, trace: &mut StepTrace<F>, unit: usize, epsilon: F) -> F {
        let drive = trace.drive[unit];
        if self.config.normalised() {
            trace.denominator[unit] = trace.norm[unit] + epsilon;
            let bias = if self.config.normalised_bias {
                self.parameters.bias[unit]
            } else {
                F::zero()
            };
            drive / trace.denominator[unit] + bias
        } else {
            drive + self.parameters.bias[unit]
        }
    }

    /// The presynaptic vector of the plastic update, from `trace.hidden` (`h_t`) or
    /// `trace.presynaptic`.
    #[inline(always)]
    fn fill_update_presynaptic(&self, input: &[F], trace: &mut StepTrace<F>) {
        let inputs = self.config.input_size;
        match self.config.presynaptic {
            Presynaptic::CurrentHidden if self.config.recurrent => {
                trace.update_presynaptic[..inputs].copy_from_slice(input);
                trace.update_presynaptic[inputs..].copy_from_slice(&trace.hidden);
            }
            _ => trace.update_presynaptic.copy_from_slice(&trace.presynaptic),
        }
    }

    /// The plastic update `F_t` from `F_{t-1}` and the trace's neurons. A `replay` takes the
    /// post-normalisation norms from the trace (the forward stored them), so that it computes
    /// no reduction and gives the forward's `F_t` to the bit.
    #[inline(always)]
    fn update(
        &self,
        synaptic_prev: &[F],
        synaptic: &mut [F],
        trace: &mut StepTrace<F>,
        replay: bool,
    ) {
        for unit in 0..self.config.hidden_size {
            self.update_row(unit, synaptic_prev, synaptic, trace, replay);
        }
    }

    /// [`Self::update`] for the row of one unit.
    #[inline(always)]
    fn update_row(
        &self,
        unit: usize,
        synaptic_prev: &[F],
        synaptic: &mut [F],
        trace: &mut StepTrace<F>,
        replay: bool,
    ) {
        let width = self.width();
        let weight = self.parameters.weight;
        let epsilon = constant::<F>(super::options::NORM_EPSILON);
        let limit = self.config.clamp.map(constant::<F>);
        let row = unit * width..(unit + 1) * width;
        let inverse_scale = if self.config.scales_state() {
            F::one() / trace.denominator[unit]
        } else {
            F::one()
        };
        let (lambda, gamma) = self.rows(unit);
        let post = trace.hidden[unit];
        let previous = self.decaying(&synaptic_prev[row.clone()], &mut trace.squashed);
        let presynaptic = &trace.update_presynaptic;
        let out = &mut synaptic[row.clone()];
        plastic_update(
            out,
            (lambda, gamma),
            previous,
            inverse_scale,
            post,
            presynaptic,
        );
        if let Some(limit) = limit {
            for value in out.iter_mut() {
                *value = value.max(-limit).min(limit);
            }
        }
        if self.config.normalisation == Normalisation::Post {
            if !replay {
                trace.post_norm[unit] = efficacy_norm(&weight[row.clone()], out);
            }
            let inverse = F::one() / (trace.post_norm[unit] + epsilon);
            for value in out.iter_mut() {
                *value = *value * inverse;
            }
        }
    }

    /// Numbers per step that the forward records for the backward: the drive, the norm and
    /// `h_t` of every unit, and the post-normalisation norms in post mode. With them the
    /// backward rebuilds a step's trace without its reductions ([`Self::replay`]).
    pub(super) fn record_size(&self) -> usize {
        let units = self.config.hidden_size;
        units
            * if self.config.normalisation == Normalisation::Post {
                4
            } else {
                3
            }
    }

    /// Writes the step's record (see [`Self::record_size`]) from its trace.
    #[inline(always)]
    fn record(&self, trace: &StepTrace<F>, record: &mut [F]) {
        let units = self.config.hidden_size;
        record[..units].copy_from_slice(&trace.drive);
        record[units..2 * units].copy_from_slice(&trace.norm);
        record[2 * units..3 * units].copy_from_slice(&trace.hidden);
        if self.config.normalisation == Normalisation::Post {
            record[3 * units..].copy_from_slice(&trace.post_norm);
        }
    }

    /// Rebuilds a step's trace from its record, its input and `h_{t-1}`, and with `synaptic`
    /// given, `F_t` from `F_{t-1}` (the forward's `F_t` to the bit: the same operations on the
    /// same numbers), without the step's reductions.
    #[inline(always)]
    fn replay(
        &self,
        input: &[F],
        hidden_prev: &[F],
        record: &[F],
        states: Option<(&[F], &mut [F])>,
        trace: &mut StepTrace<F>,
    ) {
        let units = self.config.hidden_size;
        let epsilon = constant::<F>(super::options::NORM_EPSILON);
        self.fill_presynaptic(input, hidden_prev, trace);
        trace.drive.copy_from_slice(&record[..units]);
        trace.norm.copy_from_slice(&record[units..2 * units]);
        trace.hidden.copy_from_slice(&record[2 * units..3 * units]);
        if self.config.normalised() {
            for unit in 0..units {
                trace.denominator[unit] = trace.norm[unit] + epsilon;
            }
        }
        if self.config.normalisation == Normalisation::Post {
            trace.post_norm.copy_from_slice(&record[3 * units..]);
        }
        self.fill_update_presynaptic(input, trace);
        if let Some((synaptic_prev, synaptic)) = states {
            self.update(synaptic_prev, synaptic, trace, true);
        }
    }

    /// Backward of one step for one batch element (`trace` from its forward) whose update sees
    /// `[x_t ; h_t]` (the other cells' steps run row by row over a block of elements in
    /// [`backward_chunk`]). `grad_hidden` and `grad_synaptic` are the gradients with respect to
    /// `h_t` and `F_t`; writes those with respect to `h_{t-1}`, `F_{t-1}` and the input, and
    /// accumulates the parameters'.
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
        self.backward_begin(grad_hidden, scratch);
        let rows = BackwardRows {
            trace,
            synaptic_prev,
            grad_synaptic,
        };
        debug_assert!(!self.config.update_sees_drive_presynaptic());
        for unit in 0..units {
            self.update_row_backward(unit, &rows, grad_synaptic_prev, grads, scratch);
        }
        // z_t = [x_t ; h_{t-1}] drove the neurons, [x_t ; h_t] the update: the update's
        // gradient of h_t joins that of the output.
        scratch.grad_presynaptic[..inputs]
            .copy_from_slice(&scratch.grad_update_presynaptic[..inputs]);
        scratch.grad_presynaptic[inputs..]
            .iter_mut()
            .for_each(|g| *g = F::zero());
        for unit in 0..units {
            scratch.grad_hidden[unit] =
                scratch.grad_hidden[unit] + scratch.grad_update_presynaptic[inputs + unit];
        }
        for unit in 0..units {
            self.neuron_row_backward(unit, &rows, grad_synaptic_prev, grads, scratch, false);
        }
        self.backward_end(scratch, grad_input, grad_hidden_prev, false);
    }

    /// Starts a step's backward: the gradient of `h_t` into the scratch, its sums zeroed.
    #[inline(always)]
    fn backward_begin(&self, grad_hidden: &[F], scratch: &mut BackwardScratch<F>) {
        scratch.grad_hidden.copy_from_slice(grad_hidden);
        scratch
            .grad_update_presynaptic
            .iter_mut()
            .for_each(|g| *g = F::zero());
        scratch
            .grad_denominator
            .iter_mut()
            .for_each(|g| *g = F::zero());
    }

    /// Ends a step's backward: the presynaptic vector's gradient split into the input's and
    /// `h_{t-1}`'s (`shared`: it was summed into `grad_update_presynaptic`).
    #[inline(always)]
    fn backward_end(
        &self,
        scratch: &BackwardScratch<F>,
        grad_input: &mut [F],
        grad_hidden_prev: &mut [F],
        shared: bool,
    ) {
        let inputs = self.config.input_size;
        let grad_presynaptic = if shared {
            &scratch.grad_update_presynaptic
        } else {
            &scratch.grad_presynaptic
        };
        grad_input.copy_from_slice(&grad_presynaptic[..inputs]);
        if self.config.recurrent {
            grad_hidden_prev.copy_from_slice(&grad_presynaptic[inputs..]);
        } else {
            grad_hidden_prev.iter_mut().for_each(|g| *g = F::zero());
        }
    }

    /// The backward of one row of the plastic update: the gradients of Λ and Γ, of `F_{t-1}`
    /// (written), of the update's presynaptic vector and of the row's neuron and denominator.
    #[inline(always)]
    fn update_row_backward(
        &self,
        unit: usize,
        rows: &BackwardRows<'_, F>,
        grad_synaptic_prev: &mut [F],
        grads: &mut ParameterGradients<F>,
        scratch: &mut BackwardScratch<F>,
    ) {
        let BackwardRows {
            trace,
            synaptic_prev,
            grad_synaptic,
        } = *rows;
        let width = self.width();
        let weight = self.parameters.weight;
        let epsilon = constant::<F>(super::options::NORM_EPSILON);
        let limit = self.config.clamp.map(constant::<F>);
        let row = unit * width..(unit + 1) * width;
        let grad_out = &grad_synaptic[row.clone()];
        let pre = self.config.scales_state();
        let scale = if pre {
            trace.denominator[unit]
        } else {
            F::one()
        };
        let inverse_scale = F::one() / scale;
        // What the update decayed: F_{t-1}, or φ(F_{t-1}).
        let decaying = self.decaying(&synaptic_prev[row.clone()], &mut scratch.squashed);
        let decaying = &decaying[..width];
        let (lambda, gamma) = self.rows(unit);
        let (lambda, gamma) = (&lambda[..width], &gamma[..width]);
        let post = trace.hidden[unit];
        let presynaptic = &trace.update_presynaptic[..width];
        // The gradient reaching F': that of F_t itself unless a clamp or the
        // post-normalisation lies between them.
        let grad_row: &[F] = if self.config.transforms_update() {
            // F' again, from F_{t-1} (the forward's function, so the forward's numbers to the
            // bit): recomputing a row here costs less than storing every step's F' and
            // streaming it back.
            let unclamped = &mut scratch.unclamped[..width];
            plastic_update(
                unclamped,
                (lambda, gamma),
                decaying,
                inverse_scale,
                post,
                presynaptic,
            );
            let unclamped = &scratch.unclamped[..width];
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
        // Λ and Γ
        if !self.lambda_row.is_empty() {
            grads.lambda[0] = grads.lambda[0] + dot(grad_row, decaying) * inverse_scale;
        } else {
            let grad_lambda = &mut grads.lambda[row.clone()];
            for j in 0..width {
                grad_lambda[j] = grad_lambda[j] + grad_row[j] * (decaying[j] * inverse_scale);
            }
        }
        if !self.gamma_row.is_empty() {
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
            grad_update_presynaptic[j] = grad_update_presynaptic[j] + grad_row[j] * gamma[j] * post;
        }
        scratch.grad_hidden[unit] = scratch.grad_hidden[unit] + grad_post;
        // Through Λ ⊙ s(F_{t-1})/scale: to F_{t-1} and to the scale.
        let grad_previous = &mut grad_synaptic_prev[row];
        for j in 0..width {
            grad_previous[j] = grad_row[j] * lambda[j] * inverse_scale;
        }
        if self.config.squash_state {
            let activation = self.config.activation;
            for j in 0..width {
                grad_previous[j] = grad_previous[j] * activation.derivative(decaying[j]);
            }
        }
        if pre {
            let grad_scale = -dot3(grad_row, lambda, decaying) * inverse_scale;
            scratch.grad_denominator[unit] = grad_scale * inverse_scale;
        }
    }

    /// The backward of one row's neuron, `h = φ(drive / (‖G‖ + ε) + b)`, `G = W + F_{t-1}`:
    /// the gradients of `W`, `b`, `F_{t-1}` (added) and of the drive's presynaptic vector
    /// (into `grad_update_presynaptic` when `shared`, the update's and the drive's being one).
    #[inline(always)]
    fn neuron_row_backward(
        &self,
        unit: usize,
        rows: &BackwardRows<'_, F>,
        grad_synaptic_prev: &mut [F],
        grads: &mut ParameterGradients<F>,
        scratch: &mut BackwardScratch<F>,
        shared: bool,
    ) {
        let BackwardRows {
            trace,
            synaptic_prev,
            ..
        } = *rows;
        let width = self.width();
        let row = unit * width..(unit + 1) * width;
        let hidden = trace.hidden[unit];
        let grad_preactivation =
            scratch.grad_hidden[unit] * self.config.activation.derivative(hidden);
        if !self.config.normalised() || self.config.normalised_bias {
            grads.bias[unit] = grads.bias[unit] + grad_preactivation;
        }
        let (grad_drive, grad_norm) = if self.config.normalised() {
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
        let weight_row = &self.parameters.weight[row.clone()];
        let previous = &synaptic_prev[row.clone()];
        let grad_weight = &mut grads.weight[row.clone()];
        let grad_previous = &mut grad_synaptic_prev[row];
        let presynaptic = &trace.presynaptic[..width];
        let grad_presynaptic = if shared {
            &mut scratch.grad_update_presynaptic[..width]
        } else {
            &mut scratch.grad_presynaptic[..width]
        };
        for j in 0..width {
            let efficacy = weight_row[j] + previous[j];
            let grad_efficacy = grad_drive * presynaptic[j] + grad_norm * efficacy;
            grad_weight[j] = grad_weight[j] + grad_efficacy;
            grad_previous[j] = grad_previous[j] + grad_efficacy;
            grad_presynaptic[j] = grad_presynaptic[j] + grad_drive * efficacy;
        }
    }
}

/// What the backward of a step reads row by row: the forward's trace, `F_{t-1}` and the
/// gradient of `F_t`.
#[derive(Clone, Copy)]
struct BackwardRows<'a, F> {
    trace: &'a StepTrace<F>,
    synaptic_prev: &'a [F],
    grad_synaptic: &'a [F],
}

/// Gradient accumulators of the parameters.
#[derive(Clone, Debug)]
pub(super) struct ParameterGradients<F> {
    pub(super) weight: Vec<F>,
    pub(super) bias: Vec<F>,
    pub(super) lambda: Vec<F>,
    pub(super) gamma: Vec<F>,
}

impl<F: Float> ParameterGradients<F> {
    pub(super) fn zeros(parameters: &Parameters<'_, F>) -> Self {
        Self {
            weight: vec![F::zero(); parameters.weight.len()],
            bias: vec![F::zero(); parameters.bias.len()],
            lambda: vec![F::zero(); parameters.lambda.len()],
            gamma: vec![F::zero(); parameters.gamma.len()],
        }
    }

    pub(super) fn add(&mut self, other: &Self) {
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

/// One thread's share of the forward's results, `[count, ...]` rows of the batch-major ones:
/// it writes them in place (copying megabytes of states after the threads was a measurable part
/// of a step).
pub(super) struct ForwardShare<'a, F> {
    pub(super) range: std::ops::Range<usize>,
    pub(super) hidden: &'a mut [F],
    pub(super) synaptic: &'a mut [F],
    /// Steps between two kept states; 0 keeps nothing.
    pub(super) interval: usize,
    /// The share's rows of [`super::options::Checkpoints::states`] and `records`.
    pub(super) states: &'a mut [F],
    pub(super) records: &'a mut [F],
}

/// One thread's share of the backward's results: the gradients of its batch elements' initial
/// states, written in place.
pub(super) struct BackwardShare<'a, F> {
    pub(super) range: std::ops::Range<usize>,
    pub(super) grad_hidden: &'a mut [F],
    pub(super) grad_synaptic: &'a mut [F],
}

/// What one thread's backward returns: its parameter gradients and the gradients of its inputs,
/// `[T, count, I]`.
pub(super) type BackwardPart<F> = (ParameterGradients<F>, Vec<F>);

/// What the backward of every batch element shares.
#[derive(Clone, Copy)]
pub(super) struct BackwardInputs<'a, F> {
    pub(super) checkpoints: &'a super::options::Checkpoints<F>,
    pub(super) grad_outputs: &'a [F],
    pub(super) grad_final_hidden: Option<&'a [F]>,
    pub(super) grad_final_synaptic: Option<&'a [F]>,
}

/// Where a synaptic state of the forward lives: the element's initial state, a kept state
/// (checkpoint slot), one of two working buffers, or the element's final state.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StateAt {
    Initial,
    Slot(usize),
    Buffer(usize),
    Final,
}

/// The places of one batch element's synaptic states in the forward ([`StateAt`]).
struct StatePlaces<'s, F> {
    initial: &'s [F],
    /// The element's kept states, `[slots, H + H·P]`.
    slots: &'s mut [F],
    buffers: &'s mut [Vec<F>; 2],
    final_state: &'s mut [F],
    /// `H`, where `F` starts in a slot, and `H + H·P`.
    units: usize,
    state_size: usize,
}

impl<F> StatePlaces<'_, F> {
    /// `F_{t-1}` to read and `F_t` to write, at two different places.
    fn pair(&mut self, from: StateAt, to: StateAt) -> (&[F], &mut [F]) {
        use StateAt::{Buffer, Final, Initial, Slot};
        let (units, size) = (self.units, self.state_size);
        let range = |slot: usize| slot * size + units..(slot + 1) * size;
        let Self {
            initial,
            slots,
            buffers,
            final_state,
            ..
        } = self;
        let [first, second] = buffers;
        let (first, second) = (&mut first[..], &mut second[..]);
        match (from, to) {
            (Slot(source), Slot(target)) => {
                // Every state kept: the step reads one slot and writes the next.
                assert!(source < target, "a step writes a later slot than it reads");
                let (before, after) = slots.split_at_mut(target * size);
                (&before[range(source)], &mut after[units..size])
            }
            (Buffer(source), Buffer(target)) => {
                assert_ne!(source, target, "a step reads and writes one buffer");
                if source == 0 {
                    (first, second)
                } else {
                    (second, first)
                }
            }
            (Initial, Slot(target)) => (initial, &mut slots[range(target)]),
            (Initial, Buffer(0)) => (initial, first),
            (Initial, Buffer(_)) => (initial, second),
            (Initial, Final) => (initial, final_state),
            (Slot(source), Buffer(0)) => (&slots[range(source)], first),
            (Slot(source), Buffer(_)) => (&slots[range(source)], second),
            (Slot(source), Final) => (&slots[range(source)], final_state),
            (Buffer(0), Slot(target)) => (first, &mut slots[range(target)]),
            (Buffer(_), Slot(target)) => (second, &mut slots[range(target)]),
            (Buffer(0), Final) => (first, final_state),
            (Buffer(_), Final) => (second, final_state),
            (_, Initial) | (Final, _) => {
                unreachable!("the forward reads F_t only after writing it")
            }
        }
    }
}

/// The forward of the batch elements of `share`, on one thread: writes their final states,
/// kept states and records into `share` and returns their outputs, `[T, count, H]`. States
/// are written where they are kept (no copies): a step's `F_t` goes to its checkpoint slot, to
/// the final state after the last step, else to a working buffer.
#[inline(always)]
pub(super) fn forward_chunk<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    share: ForwardShare<'_, F>,
) -> Vec<F> {
    let config = kernel.config;
    let (units, width) = (config.hidden_size, kernel.width());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let interval = share.interval;
    let keep = interval > 0;
    let state_size = units + units * width;
    let (per_element, record_size) = if keep {
        (steps.div_ceil(interval) * state_size, kernel.record_size())
    } else {
        (0, 0)
    };
    let count = share.range.len();
    let mut outputs = vec![F::zero(); steps * count * units];
    let mut trace = kernel.trace();
    let mut buffers = [
        vec![F::zero(); units * width],
        vec![F::zero(); units * width],
    ];
    let (mut hidden, mut next_hidden) = (vec![F::zero(); units], vec![F::zero(); units]);
    for (local, element) in share.range.clone().enumerate() {
        let length = sequence.length(element);
        hidden.copy_from_slice(&sequence.hidden[element * units..(element + 1) * units]);
        let initial = &sequence.synaptic[element * units * width..(element + 1) * units * width];
        let final_state = &mut share.synaptic[local * units * width..(local + 1) * units * width];
        let records =
            &mut share.records[local * steps * record_size..(local + 1) * steps * record_size];
        let mut places = StatePlaces {
            initial,
            slots: &mut share.states[local * per_element..(local + 1) * per_element],
            buffers: &mut buffers,
            final_state,
            units,
            state_size,
        };
        if length == 0 {
            places.final_state.copy_from_slice(initial);
        } else if keep {
            places.slots[units..state_size].copy_from_slice(initial);
        }
        let mut current = if keep {
            StateAt::Slot(0)
        } else {
            StateAt::Initial
        };
        for step in 0..length {
            if keep && step % interval == 0 {
                let at = step / interval * state_size;
                places.slots[at..at + units].copy_from_slice(&hidden);
            }
            let next = if step + 1 == length {
                StateAt::Final
            } else if keep && (step + 1) % interval == 0 {
                StateAt::Slot((step + 1) / interval)
            } else {
                StateAt::Buffer(step % 2)
            };
            let (synaptic_prev, synaptic) = places.pair(current, next);
            let offset = (step * batch + element) * inputs;
            kernel.step(
                &sequence.inputs[offset..offset + inputs],
                &hidden,
                synaptic_prev,
                &mut next_hidden,
                synaptic,
                &mut trace,
            );
            if keep {
                kernel.record(
                    &trace,
                    &mut records[step * record_size..(step + 1) * record_size],
                );
            }
            current = next;
            std::mem::swap(&mut hidden, &mut next_hidden);
            let out = (step * count + local) * units;
            outputs[out..out + units].copy_from_slice(&hidden);
        }
        share.hidden[local * units..(local + 1) * units].copy_from_slice(&hidden);
    }
    outputs
}

/// One thread's share of one step driven from outside ([`super::recording`]): every element
/// of `range` steps from its own state, and the step leaves what [`forward_chunk`] leaves for the
/// backward (the entering state at a kept step, the step's record).
pub(super) struct StepShare<'a, F> {
    pub(super) range: std::ops::Range<usize>,
    /// `h_{t-1}` in, `h_t` out, `[count, H]`.
    pub(super) hidden: &'a mut [F],
    /// `F_{t-1}`, `[count, H·P]`.
    pub(super) synaptic_prev: &'a [F],
    /// `F_t`, `[count, H·P]`.
    pub(super) synaptic: &'a mut [F],
    /// The share's rows of [`super::options::Checkpoints::states`], `[count, slots, H + H·P]`.
    pub(super) states: &'a mut [F],
    /// The share's rows of [`super::options::Checkpoints::records`], `[count, T, record]`.
    pub(super) records: &'a mut [F],
}

/// Step `step` of `steps` (checkpoints every `interval`) for the elements of `share`, on one
/// thread, from the step's inputs `[B, I]`: the loop body of [`forward_chunk`], with each
/// element's states where its caller keeps them between steps.
#[inline(always)]
pub(super) fn step_chunk<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    inputs: &[F],
    (step, steps, interval): (usize, usize, usize),
    share: StepShare<'_, F>,
) {
    let config = kernel.config;
    let (units, width, input_size) = (config.hidden_size, kernel.width(), config.input_size);
    let (row, state_size, record_size) =
        (units * width, units + units * width, kernel.record_size());
    let slots = steps.div_ceil(interval);
    let mut trace = kernel.trace();
    let mut next_hidden = vec![F::zero(); units];
    for (local, element) in share.range.clone().enumerate() {
        let hidden = &mut share.hidden[local * units..(local + 1) * units];
        let synaptic_prev = &share.synaptic_prev[local * row..(local + 1) * row];
        if step % interval == 0 {
            let at = (local * slots + step / interval) * state_size;
            let slot = &mut share.states[at..at + state_size];
            slot[..units].copy_from_slice(hidden);
            slot[units..].copy_from_slice(synaptic_prev);
        }
        kernel.step(
            &inputs[element * input_size..(element + 1) * input_size],
            hidden,
            synaptic_prev,
            &mut next_hidden,
            &mut share.synaptic[local * row..(local + 1) * row],
            &mut trace,
        );
        let at = (local * steps + step) * record_size;
        kernel.record(&trace, &mut share.records[at..at + record_size]);
        hidden.copy_from_slice(&next_hidden);
    }
}

/// Batch elements whose backward steps run together, row by row, so that the rows of the
/// parameters and of their gradients are read from memory once for all of them. Measured on
/// Pong's sizes (docs/performance.md, "Rows in one pass"): 4 took 18 % less CPU time in the
/// backward of the `pong_core` case (20 steps) but made whole Pong iterations (50 steps) slower,
/// the block's rebuilt states (4 × 9 × 680 KB per thread) leaving the caches. A block size
/// chosen from the working set (as many elements as fill 1 MB: 8 at the associative-retrieval
/// sizes, 2 on the maze) measured no faster on `art_h64` and the maze
/// (docs/results/perf/backward_block_by_working_set_2026-12-02.jsonl), so 1.
const BACKWARD_BLOCK: usize = 1;

/// What the backward keeps for one batch element of a block.
struct ElementBackward<F> {
    element: usize,
    local: usize,
    length: usize,
    /// Every step's trace of the current segment.
    traces: Vec<StepTrace<F>>,
    /// The states the segment's steps produce (`rebuilt[k]` after step `start + k`; the state
    /// entering the first step is the checkpoint itself, and the last step's is not needed).
    rebuilt: Vec<Vec<F>>,
    grad_hidden: Vec<F>,
    grad_synaptic: Vec<F>,
    grad_hidden_prev: Vec<F>,
    grad_synaptic_prev: Vec<F>,
    scratch: BackwardScratch<F>,
}

/// `F_{t-1}` of a segment's step `offset`: the segment's checkpoint for its first step, else the
/// state the step before rebuilt (`rebuilt`, see [`ElementBackward::rebuilt`]).
#[inline(always)]
fn state_entering<'s, F>(rebuilt: &'s [Vec<F>], offset: usize, checkpoint: &'s [F]) -> &'s [F] {
    if offset == 0 {
        checkpoint
    } else {
        &rebuilt[offset - 1]
    }
}

/// The backward of the batch elements `range`, on one thread, [`BACKWARD_BLOCK`] elements at a
/// time: segment by segment from the last, the states between two checkpoints rebuilt from the
/// records ([`Kernel::replay`]), then the steps' backward in reverse.
#[inline(always)]
pub(super) fn backward_chunk<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
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
    let (units, width) = (config.hidden_size, kernel.width());
    let (steps, batch, inputs) = (sequence.steps, sequence.batch, config.input_size);
    let interval = checkpoints.interval;
    let state_size = units + units * width;
    let per_element = steps.div_ceil(interval) * state_size;
    let record_size = kernel.record_size();
    let count = range.len();
    let shared = kernel.config.update_sees_drive_presynaptic();
    let mut grads = ParameterGradients::zeros(&parameters);
    let mut grad_inputs = vec![F::zero(); steps * count * inputs];
    let mut slots: Vec<ElementBackward<F>> = (0..BACKWARD_BLOCK.min(count))
        .map(|_| ElementBackward {
            element: 0,
            local: 0,
            length: 0,
            traces: (0..interval).map(|_| kernel.trace()).collect(),
            rebuilt: vec![vec![F::zero(); units * width]; interval - 1],
            grad_hidden: vec![F::zero(); units],
            grad_synaptic: vec![F::zero(); units * width],
            grad_hidden_prev: vec![F::zero(); units],
            grad_synaptic_prev: vec![F::zero(); units * width],
            scratch: kernel.scratch(),
        })
        .collect();
    let states_of =
        |element: usize| &checkpoints.states[element * per_element..(element + 1) * per_element];
    let record_at = |element: usize, step: usize| {
        let at = (element * steps + step) * record_size;
        &checkpoints.records[at..at + record_size]
    };
    let input_at = |element: usize, step: usize| {
        let offset = (step * batch + element) * inputs;
        &sequence.inputs[offset..offset + inputs]
    };
    let locals: Vec<usize> = (0..count).collect();
    for block in locals.chunks(BACKWARD_BLOCK) {
        let slots = &mut slots[..block.len()];
        for (slot, &local) in slots.iter_mut().zip(block) {
            let element = range.start + local;
            (slot.element, slot.local) = (element, local);
            slot.length = sequence.length(element);
            match grad_final_hidden {
                Some(g) => slot
                    .grad_hidden
                    .copy_from_slice(&g[element * units..(element + 1) * units]),
                None => slot.grad_hidden.iter_mut().for_each(|g| *g = F::zero()),
            }
            match grad_final_synaptic {
                Some(g) => slot
                    .grad_synaptic
                    .copy_from_slice(&g[element * units * width..(element + 1) * units * width]),
                None => slot.grad_synaptic.iter_mut().for_each(|g| *g = F::zero()),
            }
        }
        // Segments past an element's own steps (padding) have nothing to give back.
        let segments = slots
            .iter()
            .map(|slot| slot.length.div_ceil(interval))
            .max()
            .unwrap_or(0);
        for segment in (0..segments).rev() {
            let start = segment * interval;
            let segment_state = |slot: &ElementBackward<F>| {
                let state = &states_of(slot.element)[segment * state_size..][..state_size];
                state.split_at(units)
            };
            let end_of = |slot: &ElementBackward<F>| (start + interval).min(slot.length);
            for slot in slots.iter_mut().filter(|slot| slot.length > start) {
                let (hidden_start, synaptic_start) = segment_state(slot);
                let end = end_of(slot);
                for offset in 0..end - start {
                    let step = start + offset;
                    let hidden_prev = if offset == 0 {
                        hidden_start
                    } else {
                        &record_at(slot.element, step - 1)[2 * units..3 * units]
                    };
                    // F_t is needed as the next step's F_{t-1} within the segment.
                    let states = if offset + 1 < end - start {
                        let (before, after) = slot.rebuilt.split_at_mut(offset);
                        let previous = state_entering(before, offset, synaptic_start);
                        Some((previous, &mut after[0][..]))
                    } else {
                        None
                    };
                    kernel.replay(
                        input_at(slot.element, step),
                        hidden_prev,
                        record_at(slot.element, step),
                        states,
                        &mut slot.traces[offset],
                    );
                }
            }
            let end = slots.iter().map(end_of).max().unwrap_or(start);
            for step in (start..end).rev() {
                let active = |slot: &&mut ElementBackward<F>| step < slot.length;
                for slot in slots.iter_mut().filter(active) {
                    let out = (step * batch + slot.element) * units;
                    for unit in 0..units {
                        slot.grad_hidden[unit] = slot.grad_hidden[unit] + grad_outputs[out + unit];
                    }
                    if shared {
                        kernel.backward_begin(&slot.grad_hidden, &mut slot.scratch);
                    }
                }
                if shared {
                    // Row by row over the block: the parameters' rows stay in cache.
                    for unit in 0..units {
                        for slot in slots.iter_mut().filter(active) {
                            let synaptic_prev =
                                state_entering(&slot.rebuilt, step - start, segment_state(slot).1);
                            let rows = BackwardRows {
                                trace: &slot.traces[step - start],
                                synaptic_prev,
                                grad_synaptic: &slot.grad_synaptic,
                            };
                            let (grad_previous, scratch) =
                                (&mut slot.grad_synaptic_prev, &mut slot.scratch);
                            kernel.update_row_backward(
                                unit,
                                &rows,
                                grad_previous,
                                &mut grads,
                                scratch,
                            );
                            kernel.neuron_row_backward(
                                unit,
                                &rows,
                                grad_previous,
                                &mut grads,
                                scratch,
                                true,
                            );
                        }
                    }
                }
                for slot in slots.iter_mut().filter(active) {
                    let at = (step * count + slot.local) * inputs;
                    let grad_input = &mut grad_inputs[at..at + inputs];
                    if shared {
                        kernel.backward_end(
                            &slot.scratch,
                            grad_input,
                            &mut slot.grad_hidden_prev,
                            true,
                        );
                    } else {
                        let synaptic_prev =
                            state_entering(&slot.rebuilt, step - start, segment_state(slot).1);
                        kernel.step_backward(
                            &slot.traces[step - start],
                            synaptic_prev,
                            &slot.grad_hidden,
                            &slot.grad_synaptic,
                            grad_input,
                            &mut slot.grad_hidden_prev,
                            &mut slot.grad_synaptic_prev,
                            &mut grads,
                            &mut slot.scratch,
                        );
                    }
                    std::mem::swap(&mut slot.grad_hidden, &mut slot.grad_hidden_prev);
                    std::mem::swap(&mut slot.grad_synaptic, &mut slot.grad_synaptic_prev);
                }
            }
        }
        for slot in slots.iter() {
            let local = slot.local;
            grad_hidden0[local * units..(local + 1) * units].copy_from_slice(&slot.grad_hidden);
            grad_synaptic0[local * units * width..(local + 1) * units * width]
                .copy_from_slice(&slot.grad_synaptic);
        }
    }
    (grads, grad_inputs)
}
