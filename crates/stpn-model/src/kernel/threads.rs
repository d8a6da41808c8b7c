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
    let wide = has_avx2();
    on_threads(shares, |share| {
        let _flush = FlushSubnormals::new();
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the processor has AVX2 and FMA (`has_avx2`).
            return unsafe { step_chunk_avx2(kernel, inputs, position, share) };
        }
        let _ = wide;
        step_chunk(kernel, inputs, position, share)
    });
}

/// The forward of every share on its thread, in the AVX2 copy where the processor has it.
fn forward_shares<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    shares: Vec<ForwardShare<'_, F>>,
) -> Vec<Vec<F>> {
    let wide = has_avx2();
    on_threads(shares, |share| {
        let _flush = FlushSubnormals::new();
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the processor has AVX2 and FMA (`has_avx2`).
            return unsafe { forward_chunk_avx2(kernel, sequence, share) };
        }
        let _ = wide;
        forward_chunk(kernel, sequence, share)
    })
}

/// The backward of every share on its thread, in the AVX2 copy where the processor has it.
fn backward_shares<F: KernelFloat, const W: usize>(
    kernel: &Kernel<'_, F, W>,
    sequence: Sequence<'_, F>,
    given: BackwardInputs<'_, F>,
    shares: Vec<BackwardShare<'_, F>>,
) -> Vec<BackwardPart<F>> {
    let wide = has_avx2();
    on_threads(shares, |share| {
        let _flush = FlushSubnormals::new();
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the processor has AVX2 and FMA (`has_avx2`).
            return unsafe { backward_chunk_avx2(kernel, sequence, given, share) };
        }
        let _ = wide;
        backward_chunk(kernel, sequence, given, share)
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
    let (hidden_start, synaptic_start) = (steps * batch * units, (steps + 1) * batch * units);
    let mut output = ForwardOutput {
        packed: vec![F::zero(); synaptic_start + batch * units * width],
        hidden_start,
        synaptic_start,
        checkpoints: Checkpoints {
            interval,
            states: vec![F::zero(); batch * per_element],
            records: vec![F::zero(); batch * per_element_records],
            lanes: false,
        },
    };
    let (outputs_and_hidden, synaptic) = output.packed.split_at_mut(synaptic_start);
    let (all_outputs, hidden) = outputs_and_hidden.split_at_mut(hidden_start);
    let ranges = chunks(batch, steps * units * width);
    let shares: Vec<ForwardShare<'_, F>> = ranges
        .iter()
        .zip(split_rows(&ranges, units, hidden))
        .zip(split_rows(&ranges, units * width, synaptic))
        .zip(split_rows(
            &ranges,
            per_element,
            &mut output.checkpoints.states,
        ))
        .zip(split_rows(
            &ranges,
            per_element_records,
            &mut output.checkpoints.records,
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
