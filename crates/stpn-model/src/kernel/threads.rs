//! The kernel on every core: the batch split into one contiguous share per thread, the AVX2
//! copy of the loops chosen at run time, and the sequence-level forward and backward, with the
//! states checkpointed every ⌈√T⌉ steps.

use super::cpu::{
    BackwardInputs, BackwardPart, BackwardShare, ForwardShare, Kernel, KernelFloat,
    ParameterGradients, StepShare, backward_chunk, checkpoint_interval, forward_chunk, step_chunk,
    with_fixed_width,
};
use super::lanes;
use super::options::{Checkpoints, ForwardOutput, Gradients, KernelConfig, Parameters, Sequence};

/// Element-steps (one row of `F` per unit) below which a share gets no thread of its own:
/// starting a thread cost more than that much of the kernel (PPO's minibatches of a few short
/// STPNf sequences spent a tenth of their time starting threads).
const MIN_WORK_PER_THREAD: usize = 1 << 17;

/// The cores this process may use.
pub fn cores() -> usize {
    // Asked once: the answer reads the cgroup's CPU quota from files, which took 5 % of a small
    // training step when asked on every call.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Threads for a batch whose elements each cost `work_per_element` element-steps.
pub(super) fn threads_for(batch: usize, work_per_element: usize) -> usize {
    let worth = batch.saturating_mul(work_per_element) / MIN_WORK_PER_THREAD;
    cores().min(batch).min(worth).max(1)
}

/// Runs `work` on every share, the first on the calling thread and each other on a thread of
/// its own; the results in order. The calling thread would otherwise only wait, and starting a
/// thread costs more than a whole step of a small cell (a rollout of one environment steps it
/// thousands of times per iteration).
pub fn on_threads<S: Send, R: Send>(shares: Vec<S>, work: impl Fn(S) -> R + Sync) -> Vec<R> {
    let mut shares = shares.into_iter();
    let Some(first) = shares.next() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = shares
            .map(|share| scope.spawn(move || work(share)))
            .collect();
        let mut results = Vec::with_capacity(handles.len() + 1);
        results.push(work(first));
        results.extend(
            handles
                .into_iter()
                .map(|handle| handle.join().expect("kernel thread")),
        );
        results
    })
}

/// Splits `0..batch` into contiguous chunks, one per thread (see [`threads_for`]).
pub(super) fn chunks(batch: usize, work_per_element: usize) -> Vec<std::ops::Range<usize>> {
    let threads = threads_for(batch, work_per_element);
    let size = batch.div_ceil(threads);
    (0..threads)
        .map(|thread| thread * size..((thread + 1) * size).min(batch))
        .filter(|range| !range.is_empty())
        .collect()
}

/// Splits a batch-major buffer of `row` values per batch element into the rows of each range.
pub(super) fn split_rows<'a, F>(
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

/// Subnormal numbers flushed to zero on this thread while the guard lives (x86-64: the FTZ and
/// DAZ bits of MXCSR), the thread's previous mode restored when it drops. A trained layer can
/// drive gradients through saturated `tanh`s into the subnormal range (below 1.2e-38 in float32),
/// where every operation on them takes the processor's slow path: without the flush, an epoch of
/// associative retrieval's scalar STPNf took 2.1–2.4× longer on trained parameters than on fresh
/// ones (docs/performance.md).
/// Numbers that small are zero at any tolerance the kernel is held to.
pub(super) struct FlushSubnormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const FLUSH_TO_ZERO_AND_DENORMALS_ARE_ZERO: u32 = 0x8040;

impl FlushSubnormals {
    pub(super) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved = 0u32;
            // SAFETY: stmxcsr/ldmxcsr read and write the SSE control register of this thread
            // only (SSE is part of x86-64), and the mode is restored on drop. Rust (LLVM)
            // compiles code as if subnormals were kept, so a constant it folded at compile time
            // could keep a subnormal that the same operation flushes at run time; the kernel's
            // loops never branch on a value being subnormal, so such a difference stays a
            // difference below 1.2e-38 in a result (TensorFlow runs its CPU kernels flushed;
            // PyTorch offers the same as `torch.set_flush_denormal`).
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack));
                let flushed = saved | FLUSH_TO_ZERO_AND_DENORMALS_ARE_ZERO;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flushed, options(nostack, readonly));
            }
            Self { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {}
    }
}

impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `new`, restoring the mode this thread had.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, readonly));
        }
    }
}

/// Whether the kernel may run its AVX2 copy (see [`forward_chunk_avx2`]).
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `work` on every share on its thread ([`on_threads`]) with subnormal numbers flushed
/// ([`FlushSubnormals`]), telling it whether the processor has AVX2 and FMA ([`has_avx2`]) for
/// [`avx2_or_portable`].
pub(super) fn on_kernel_threads<S: Send, R: Send>(
    shares: Vec<S>,
    work: impl Fn(S, bool) -> R + Sync,
) -> Vec<R> {
    let wide = has_avx2();
    on_threads(shares, |share| {
        let _flush = FlushSubnormals::new();
        work(share, wide)
    })
}

/// In an [`on_kernel_threads`] closure: returns `$avx2(args)`, a loop's AVX2 copy, where the
/// processor has AVX2 and FMA (`$wide`), else `$portable(args)`.
macro_rules! avx2_or_portable {
    ($wide:expr, $avx2:ident, $portable:ident ($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        if $wide {
            // SAFETY: the processor has AVX2 and FMA (`has_avx2`).
            return unsafe { $avx2($($arg),*) };
        }
        let _ = $wide;
        $portable($($arg),*)
    }};
}
pub(super) use avx2_or_portable;

/// [`forward_chunk`] compiled for AVX2: the kernel's loops are written to vectorise, and the
/// portable x86-64 baseline has 4-lane SSE only. Everything it calls in the kernel is
/// `#[inline(always)]`, so it is compiled into this copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn forward_chunk_avx2<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    share: ForwardShare<'_, F>,
) -> Vec<F> {
    forward_chunk(kernel, sequence, share)
}

/// [`backward_chunk`] compiled for AVX2 (as [`forward_chunk_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn backward_chunk_avx2<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    share: BackwardShare<'_, F>,
) -> BackwardPart<F> {
    backward_chunk(kernel, sequence, given, share)
}

/// [`step_chunk`] compiled for AVX2 (as [`forward_chunk_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn step_chunk_avx2<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    inputs: &[F],
    position: (usize, usize, usize),
    share: StepShare<'_, F>,
) {
    step_chunk(kernel, inputs, position, share)
}

/// One step of every share on its thread (`position`: the step, the steps, the checkpoint
/// interval), in the AVX2 copy where the processor has it.
pub(super) fn step_shares<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    inputs: &[F],
    position: (usize, usize, usize),
    shares: Vec<StepShare<'_, F>>,
) {
    on_kernel_threads(shares, |share, wide| {
        avx2_or_portable!(
            wide,
            step_chunk_avx2,
            step_chunk(kernel, inputs, position, share)
        )
    });
}

/// The forward of every share on its thread, in the AVX2 copy where the processor has it.
fn forward_shares<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    shares: Vec<ForwardShare<'_, F>>,
) -> Vec<Vec<F>> {
    on_kernel_threads(shares, |share, wide| {
        avx2_or_portable!(
            wide,
            forward_chunk_avx2,
            forward_chunk(kernel, sequence, share)
        )
    })
}

/// The backward of every share on its thread, in the AVX2 copy where the processor has it.
fn backward_shares<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    shares: Vec<BackwardShare<'_, F>>,
) -> Vec<BackwardPart<F>> {
    on_kernel_threads(shares, |share, wide| {
        avx2_or_portable!(
            wide,
            backward_chunk_avx2,
            backward_chunk(kernel, sequence, given, share)
        )
    })
}

/// Runs the sequence forward; with `checkpoints`, keeps what the backward starts from
/// ([`super::options::Checkpoints`], one state in ⌈√T⌉).
pub fn forward<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    checkpoints: bool,
) -> ForwardOutput<F> {
    let interval = if checkpoints {
        checkpoint_interval(sequence.steps)
    } else {
        0
    };
    forward_keeping(config, parameters, sequence, interval)
}

/// [`forward`], keeping the state entering every `interval`-th step and every step's record
/// (`interval` 0: nothing kept): batch elements in SIMD lanes ([`lanes`]) where that layout
/// covers the options and the sequence, else one element at a time.
pub(super) fn forward_keeping<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    interval: usize,
) -> ForwardOutput<F> {
    if lanes::covers(&config, &sequence) {
        lanes::forward(config, parameters, sequence, interval)
    } else {
        forward_rows(config, parameters, sequence, interval)
    }
}

/// [`forward_keeping`] one batch element at a time ([`super::cpu`]), whatever the options.
pub(super) fn forward_rows<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    interval: usize,
) -> ForwardOutput<F> {
    let kernel = Kernel::new(config, parameters);
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch) = (sequence.steps, sequence.batch);
    let (per_element, per_element_records) = if interval > 0 {
        (
            steps.div_ceil(interval) * (units + units * width),
            steps * kernel.record_size(),
        )
    } else {
        (0, 0)
    };
    let checkpoints = Checkpoints {
        interval,
        states: vec![F::zero(); batch * per_element],
        records: vec![F::zero(); batch * per_element_records],
        lanes: false,
    };
    let mut output = zeroed_output(config, (steps, batch), checkpoints);
    let (all_outputs, hidden, synaptic, checkpoints) = output.parts_mut();
    let ranges = chunks(batch, steps * units * width);
    let shares: Vec<ForwardShare<'_, F>> = ranges
        .iter()
        .zip(split_rows(&ranges, units, hidden))
        .zip(split_rows(&ranges, units * width, synaptic))
        .zip(split_rows(&ranges, per_element, &mut checkpoints.states))
        .zip(split_rows(
            &ranges,
            per_element_records,
            &mut checkpoints.records,
        ))
        .map(
            |((((range, hidden), synaptic), states), records)| ForwardShare {
                range: range.clone(),
                hidden,
                synaptic,
                interval,
                states,
                records,
            },
        )
        .collect();
    let outputs = with_fixed_width!(kernel, fixed => forward_shares(fixed, sequence, shares));
    interleave_steps(all_outputs, &ranges, &outputs, (steps, batch, units));
    output
}

/// The forward's output of a `(steps, batch)` sequence, zeroed, with its `checkpoints`.
pub(super) fn zeroed_output<F: KernelFloat>(
    config: KernelConfig,
    (steps, batch): (usize, usize),
    checkpoints: Checkpoints<F>,
) -> ForwardOutput<F> {
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (hidden_start, synaptic_start) = (steps * batch * units, (steps + 1) * batch * units);
    ForwardOutput {
        packed: vec![F::zero(); synaptic_start + batch * units * width],
        hidden_start,
        synaptic_start,
        checkpoints,
    }
}

impl<F> ForwardOutput<F> {
    /// The outputs, final hidden state, final synaptic state and checkpoints, to write.
    pub(super) fn parts_mut(&mut self) -> (&mut [F], &mut [F], &mut [F], &mut Checkpoints<F>) {
        let (outputs_and_hidden, synaptic) = self.packed.split_at_mut(self.synaptic_start);
        let (outputs, hidden) = outputs_and_hidden.split_at_mut(self.hidden_start);
        (outputs, hidden, synaptic, &mut self.checkpoints)
    }
}

/// Writes each thread's step-major rows, `[T, count, row]` for the batch elements `ranges[i]`,
/// into their places in `target`, `[T, B, row]`: each thread's rows interleave with the others'.
pub(super) fn interleave_steps<F: Copy>(
    target: &mut [F],
    ranges: &[std::ops::Range<usize>],
    parts: &[Vec<F>],
    (steps, batch, row): (usize, usize, usize),
) {
    for (range, part) in ranges.iter().zip(parts) {
        let count = range.len();
        for step in 0..steps {
            let source = step * count * row;
            let at = (step * batch + range.start) * row;
            target[at..at + count * row].copy_from_slice(&part[source..source + count * row]);
        }
    }
}

/// The batch's gradients from each thread's part (its batch elements `ranges[i]`): the
/// parameters' summed, the inputs' interleaved into `[T, B, I]`; with those of the initial state.
pub(super) fn gather_gradients<F: KernelFloat>(
    parameters: &Parameters<'_, F>,
    ranges: &[std::ops::Range<usize>],
    parts: Vec<BackwardPart<F>>,
    (steps, batch, inputs): (usize, usize, usize),
    (hidden, synaptic): (Vec<F>, Vec<F>),
) -> Gradients<F> {
    let mut total = ParameterGradients::zeros(parameters);
    let mut grad_inputs = vec![F::zero(); steps * batch * inputs];
    let (grads, input_parts): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    grads.iter().for_each(|part| total.add(part));
    interleave_steps(
        &mut grad_inputs,
        ranges,
        &input_parts,
        (steps, batch, inputs),
    );
    Gradients {
        weight: total.weight,
        bias: total.bias,
        lambda: total.lambda,
        gamma: total.gamma,
        inputs: grad_inputs,
        hidden,
        synaptic,
    }
}

/// Backpropagation through the whole sequence: the gradients of a loss with respect to the
/// parameters, the inputs and the initial state, given its gradients with respect to every
/// output (`[T, B, H]`) and to the final state (`None`: zero). It starts from the forward's
/// [`ForwardOutput::checkpoints`] when given, otherwise from a forward of its own.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: KernelFloat>(
    config: KernelConfig,
    parameters: Parameters<'_, F>,
    sequence: Sequence<'_, F>,
    checkpoints: Option<&Checkpoints<F>>,
    grad_outputs: &[F],
    grad_final_hidden: Option<&[F]>,
    grad_final_synaptic: Option<&[F]>,
) -> Gradients<F> {
    let own;
    let checkpoints = match checkpoints {
        Some(given) => {
            assert!(
                !given.is_empty(),
                "the backward needs a forward that kept its checkpoints"
            );
            given
        }
        None => {
            own = forward_keeping(
                config,
                parameters,
                sequence,
                checkpoint_interval(sequence.steps),
            )
            .checkpoints;
            &own
        }
    };
    if checkpoints.lanes {
        return lanes::backward(
            config,
            parameters,
            sequence,
            checkpoints,
            grad_outputs,
            (grad_final_hidden, grad_final_synaptic),
        );
    }
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
    let ranges = chunks(batch, steps * units * width);
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
    let parts = with_fixed_width!(kernel, fixed => backward_shares(fixed, sequence, given, shares));
    gather_gradients(
        &parameters,
        &ranges,
        parts,
        (steps, batch, inputs),
        (grad_hidden0, grad_synaptic0),
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::FlushSubnormals;
    use std::hint::black_box;

    fn product(a: f32, b: f32) -> f32 {
        black_box(a) * black_box(b)
    }

    #[test]
    fn subnormals_are_zero_inside_the_guard_only() {
        let subnormal = 1e-40f32;
        assert!(subnormal > 0.0 && subnormal < f32::MIN_POSITIVE);
        // A subnormal result (flush to zero) and a subnormal operand (denormals are zero).
        assert!(product(1e-30, 1e-10) > 0.0);
        assert!(product(subnormal, 1e10) > 1e-31);
        {
            let _flush = FlushSubnormals::new();
            assert_eq!(product(1e-30, 1e-10), 0.0);
            assert_eq!(product(subnormal, 1e10), 0.0);
            // Normal numbers are untouched.
            assert_eq!(product(1.5, 2.0), 3.0);
        }
        assert!(product(1e-30, 1e-10) > 0.0);
        assert!(product(subnormal, 1e10) > 1e-31);
    }
}
