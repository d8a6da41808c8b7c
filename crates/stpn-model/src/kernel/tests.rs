//! The kernel against the op-by-op cells in float64: every option combination.

use std::collections::BTreeMap;

use burn::tensor::{DType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::threads::forward_keeping;
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
    crate::compare::relative_difference(ours.iter().copied(), reference.iter().copied())
}

/// The kernel's forward and backward (given the gradients of the outputs, the final hidden
/// and the final synaptic state). The backward from the forward's checkpoints (one state in
/// ⌈√T⌉, the others rebuilt from the records), from a forward of its own, and from a forward
/// that kept every state (nothing rebuilt) give the same numbers to the bit.
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
        lengths: &[],
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
    let every_state = forward_keeping(config, kernel_parameters, sequence, 1);
    assert_eq!(every_state.packed, forward.packed);
    assert_eq!(backward_with(Some(&every_state.checkpoints)), gradients);
    assert_eq!(
        recorded(config, kernel_parameters, sequence),
        forward,
        "the forward driven step by step"
    );
    (forward, gradients)
}

/// The forward of `sequence` driven one step at a time by a [`Recording`].
fn recorded(
    config: KernelConfig,
    parameters: Parameters<'_, f64>,
    sequence: Sequence<'_, f64>,
) -> ForwardOutput<f64> {
    let mut recording = Recording::new(
        config,
        parameters,
        sequence.steps,
        sequence.hidden.to_vec(),
        sequence.synaptic.to_vec(),
    );
    let step_inputs = sequence.batch * config.input_size;
    for step in sequence.inputs.chunks_exact(step_inputs) {
        recording.step(step);
    }
    recording.finish().1
}

/// Random parameters (`W`, `b`, per-synapse Λ Γ), inputs `[T, B, I]` and initial state of a
/// kernel of `units` units over `width` synapses, drawn in that order.
struct RandomCase {
    weight: Vec<f64>,
    bias: Vec<f64>,
    lambda: Vec<f64>,
    gamma: Vec<f64>,
    inputs: Vec<f64>,
    hidden0: Vec<f64>,
    synaptic0: Vec<f64>,
}

impl RandomCase {
    fn draw(
        rng: &mut ChaCha8Rng,
        (units, width, input_size): (usize, usize, usize),
        (steps, batch): (usize, usize),
    ) -> Self {
        Self {
            weight: random(rng, units * width, 0.2),
            bias: random(rng, units, 0.5),
            lambda: random(rng, units * width, 1.0),
            gamma: random(rng, units * width, 1.0),
            inputs: random(rng, steps * batch * input_size, 1.0),
            hidden0: random(rng, batch * units, 0.5),
            synaptic0: random(rng, batch * units * width, 0.3),
        }
    }

    fn parameters(&self) -> Parameters<'_, f64> {
        Parameters {
            weight: &self.weight,
            bias: &self.bias,
            lambda: &self.lambda,
            gamma: &self.gamma,
        }
    }
}

/// A recording split over two threads per step gives the sequence forward's outputs, state,
/// checkpoints and records to the bit.
#[test]
fn a_recording_over_threads_matches_the_sequence_forward() {
    let (units, inputs, steps, batch) = (32, 2048, 5, 4);
    let width = inputs + units;
    let config = KernelConfig {
        input_size: inputs,
        hidden_size: units,
        normalisation: Normalisation::Pre,
        presynaptic: Presynaptic::PreviousHidden,
        clamp: None,
        recurrent: true,
        activation: Activation::Tanh,
        normalise_state: true,
        normalised_bias: true,
        squash_state: false,
    };
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        super::threads::threads_for(batch, units * width),
        available.min(2),
        "one step of the case must be large enough for two threads"
    );
    let case = RandomCase::draw(
        &mut ChaCha8Rng::seed_from_u64(12),
        (units, width, inputs),
        (steps, batch),
    );
    let sequence = Sequence {
        steps,
        batch,
        inputs: &case.inputs,
        hidden: &case.hidden0,
        synaptic: &case.synaptic0,
        lengths: &[],
    };
    assert_eq!(
        recorded(config, case.parameters(), sequence),
        forward(config, case.parameters(), sequence, true)
    );
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
    (inputs, seed): (usize, u64),
) {
    let (units, batch, steps) = (4, 3, 7);
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
        hidden: Tensor::<2>::from_data(TensorData::new(hidden0.clone(), [batch, units]), options)
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
        + (sequence.final_state.synaptic.clone() * tensor3(&grad_synaptic, [batch, units, width]))
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
         recurrent={recurrent} {activation:?} inputs={inputs}"
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
                            // Without recurrence, the last two sizes run the fixed-width
                            // kernels (the one-hot width on seeds of its own, so that the
                            // others keep theirs).
                            for inputs in [3, cpu::NARROW_WIDTH, cpu::ONE_HOT_WIDTH] {
                                let seed = if inputs == cpu::ONE_HOT_WIDTH {
                                    10_000 + seed
                                } else {
                                    seed += 1;
                                    seed
                                };
                                check(
                                    normalisation,
                                    presynaptic,
                                    per_synapse,
                                    clamp,
                                    recurrent,
                                    activation,
                                    (inputs, seed),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The kernel in STPNf's configuration against the op-by-op STPNf cell, in float64:
/// outputs, final state, gradients to every parameter, the inputs and the initial state.
fn check_stpn_f(
    normalised: bool,
    per_synapse: bool,
    clamp: Option<f64>,
    squash_state: bool,
    inputs: usize,
) {
    let (units, batch, steps) = (4, 3, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(normalised) * 8 + u64::from(squash_state));
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
        + (sequence.final_state.synaptic.clone() * tensor3(&grad_synaptic, [batch, units, inputs]))
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
         squash_state={squash_state} inputs={inputs}"
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
                    // The last two sizes run the fixed-width kernels.
                    for inputs in [5, cpu::NARROW_WIDTH, cpu::ONE_HOT_WIDTH] {
                        check_stpn_f(normalised, per_synapse, clamp, squash_state, inputs);
                    }
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
    let worst = crate::compare::max_abs_difference(values.iter().copied(), exact.iter().copied());
    assert!(worst < 5e-7, "largest error {worst:e}");
    let relative_near_zero = crate::compare::nan_max(
        values[400_001..402_002]
            .iter()
            .zip(&exact[400_001..402_002])
            .filter(|(_, exact)| **exact != 0.0)
            .map(|(ours, exact)| ((*ours as f64 - exact) / exact).abs()),
    );
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

/// A batch large enough for two threads gives for each element what that element gives alone
/// (on one thread): outputs and final states to the bit, the gradients of its inputs and initial
/// state to the bit, and the parameters' gradients (each thread's summed apart, then added) as
/// the sum of the elements' to float64 rounding.
#[test]
fn a_batch_split_over_threads_matches_its_elements_one_by_one() {
    let (units, inputs, steps, batch) = (16, 200, 20, 4);
    let width = inputs + units;
    let config = KernelConfig {
        input_size: inputs,
        hidden_size: units,
        normalisation: Normalisation::Post,
        presynaptic: Presynaptic::PreviousHidden,
        clamp: Some(1.0),
        recurrent: true,
        activation: Activation::Tanh,
        normalise_state: true,
        normalised_bias: true,
        squash_state: false,
    };
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        super::threads::threads_for(batch, steps * units * width),
        available.min(2),
        "the case must be large enough for two threads"
    );
    assert_eq!(super::threads::threads_for(1, steps * units * width), 1);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let case = RandomCase::draw(&mut rng, (units, width, inputs), (steps, batch));
    let parameters = case.parameters();
    let (x, hidden0, synaptic0) = (&case.inputs, &case.hidden0, &case.synaptic0);
    let (weight, lambda, gamma) = (&case.weight, &case.lambda, &case.gamma);
    let grad_outputs = random(&mut rng, steps * batch * units, 1.0);
    let run = |range: std::ops::Range<usize>| {
        let count = range.len();
        let step_major = |values: &[f64], row: usize| -> Vec<f64> {
            (0..steps)
                .flat_map(|step| {
                    values[(step * batch + range.start) * row..(step * batch + range.end) * row]
                        .to_vec()
                })
                .collect()
        };
        let (x, grad_outputs) = (step_major(&x, inputs), step_major(&grad_outputs, units));
        let sequence = Sequence {
            steps,
            batch: count,
            inputs: &x,
            hidden: &hidden0[range.start * units..range.end * units],
            synaptic: &synaptic0[range.start * units * width..range.end * units * width],
            lengths: &[],
        };
        let output = forward(config, parameters, sequence, true);
        let gradients = backward(
            config,
            parameters,
            sequence,
            Some(&output.checkpoints),
            &grad_outputs,
            None,
            None,
        );
        (output, gradients)
    };
    let (whole, whole_gradients) = run(0..batch);
    let mut parameter_sums = [
        vec![0.0; weight.len()],
        vec![0.0; lambda.len()],
        vec![0.0; gamma.len()],
    ];
    for element in 0..batch {
        let (alone, gradients) = run(element..element + 1);
        for step in 0..steps {
            let ours = &whole.packed[(step * batch + element) * units..][..units];
            assert_eq!(ours, &alone.packed[step * units..][..units], "output");
        }
        let synaptic = &whole.packed[whole.synaptic_start + element * units * width..];
        assert_eq!(
            &synaptic[..units * width],
            &alone.packed[alone.synaptic_start..],
            "final state"
        );
        assert_eq!(
            &whole_gradients.synaptic[element * units * width..][..units * width],
            &gradients.synaptic[..],
            "initial state's gradient"
        );
        for step in 0..steps {
            let ours = &whole_gradients.inputs[(step * batch + element) * inputs..][..inputs];
            assert_eq!(
                ours,
                &gradients.inputs[step * inputs..][..inputs],
                "input's gradient"
            );
        }
        for (sum, part) in
            parameter_sums
                .iter_mut()
                .zip([&gradients.weight, &gradients.lambda, &gradients.gamma])
        {
            sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        }
    }
    for (sum, whole) in parameter_sums.iter().zip([
        &whole_gradients.weight,
        &whole_gradients.lambda,
        &whole_gradients.gamma,
    ]) {
        let error = max_relative_error(whole, sum);
        assert!(error < 1e-12, "parameter gradients differ by {error}");
    }
}

/// The batch-lane layout ([`super::lanes`]) against the kernel that steps one element at a time,
/// for every option it covers, on a batch of one full and one padded group and a sequence
/// whose last checkpoint segment is short: outputs, final state and the gradients of the
/// inputs and the initial state to the bit, the parameters' (summed over the batch in another
/// order) to float64 rounding; its backward from its own checkpoints and from a forward of its
/// own alike.
#[test]
fn batch_lanes_match_the_element_kernel_for_every_option_they_cover() {
    let (units, inputs, steps, batch) = (5, 3, 7, 11);
    let mut seed = 100;
    let mut cases = 0;
    for normalisation in [Normalisation::Off, Normalisation::Pre] {
        for presynaptic in [Presynaptic::PreviousHidden, Presynaptic::CurrentHidden] {
            for recurrent in [true, false] {
                for activation in [Activation::Tanh, Activation::Sigmoid] {
                    // STPNr (the state scaled, the bias kept) and STPNf (neither).
                    for stpn_r in [true, false] {
                        for per_synapse in [true, false] {
                            seed += 1;
                            let config = KernelConfig {
                                input_size: inputs,
                                hidden_size: units,
                                normalisation,
                                presynaptic,
                                clamp: None,
                                recurrent,
                                activation,
                                normalise_state: stpn_r,
                                normalised_bias: stpn_r,
                                squash_state: false,
                            };
                            let width = config.presynaptic_size();
                            let mut rng = ChaCha8Rng::seed_from_u64(seed);
                            let mut case =
                                RandomCase::draw(&mut rng, (units, width, inputs), (steps, batch));
                            if !per_synapse {
                                (case.lambda, case.gamma) = (vec![0.9], vec![0.7]);
                            }
                            let grad_outputs = random(&mut rng, steps * batch * units, 1.0);
                            let grad_hidden = random(&mut rng, batch * units, 1.0);
                            let grad_synaptic = random(&mut rng, batch * units * width, 1.0);
                            let sequence = Sequence {
                                steps,
                                batch,
                                inputs: &case.inputs,
                                hidden: &case.hidden0,
                                synaptic: &case.synaptic0,
                                lengths: &[],
                            };
                            let label = format!("{config:?} per_synapse={per_synapse}");
                            assert!(super::lanes::covers(&config, &sequence), "{label}");
                            let interval = checkpoint_interval(steps);
                            let parameters = case.parameters();
                            let rows = super::threads::forward_rows(
                                config, parameters, sequence, interval,
                            );
                            let in_lanes = forward_keeping(config, parameters, sequence, interval);
                            assert!(in_lanes.checkpoints.lanes, "{label}");
                            assert_eq!(in_lanes.packed, rows.packed, "{label}: forward");
                            // A forward that keeps nothing (a rollout's).
                            let alone =
                                super::threads::forward_rows(config, parameters, sequence, 0);
                            let kept_nothing = forward(config, parameters, sequence, false);
                            assert!(kept_nothing.checkpoints.is_empty(), "{label}");
                            assert_eq!(
                                kept_nothing.packed, alone.packed,
                                "{label}: no checkpoints"
                            );
                            let backward_from = |checkpoints| {
                                backward(
                                    config,
                                    parameters,
                                    sequence,
                                    checkpoints,
                                    &grad_outputs,
                                    Some(&grad_hidden),
                                    Some(&grad_synaptic),
                                )
                            };
                            let expected = backward_from(Some(&rows.checkpoints));
                            let ours = backward_from(Some(&in_lanes.checkpoints));
                            assert_eq!(backward_from(None), ours, "{label}: own forward");
                            assert_eq!(ours.inputs, expected.inputs, "{label}: inputs");
                            assert_eq!(ours.hidden, expected.hidden, "{label}: h0");
                            assert_eq!(ours.synaptic, expected.synaptic, "{label}: F0");
                            for (what, ours, expected) in [
                                ("weight", &ours.weight, &expected.weight),
                                ("bias", &ours.bias, &expected.bias),
                                ("lambda", &ours.lambda, &expected.lambda),
                                ("gamma", &ours.gamma, &expected.gamma),
                            ] {
                                assert_eq!(ours.len(), expected.len(), "{label}: {what}");
                                let error = max_relative_error(ours, expected);
                                assert!(error < 1e-12, "{label}: {what} differs by {error:e}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 64);
}
