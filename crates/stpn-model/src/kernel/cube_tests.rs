//! The CubeCL kernel ([`super::cube`], on wgpu) against the host kernel ([`super::cpu`]) in
//! float32: outputs, final state and the gradients to every parameter, the inputs and the
//! initial state, through the autodiff node; and the STPN golden cases through the cube path.
//! Small sizes, so that they run in seconds on a software Vulkan device (lavapipe).

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::autodiff::{OpInputs, unpack};
use super::cube::Placement;
use super::*;
use crate::Backend;
use crate::compare;
use crate::params::host_values;

/// The wgpu device, or `None` (the test then reports that it was skipped) on a machine with no
/// Vulkan adapter at all.
fn wgpu_device() -> Option<Device> {
    match Backend::Wgpu.device() {
        Ok(device) => Some(device),
        Err(error) => {
            eprintln!("skipped: {error}");
            None
        }
    }
}

fn random(rng: &mut ChaCha8Rng, count: usize, low: f32, high: f32) -> Vec<f32> {
    (0..count).map(|_| rng.random_range(low..high)).collect()
}

/// One option combination and its sizes.
#[derive(Clone, Copy, Debug)]
struct Case {
    config: KernelConfig,
    per_synapse: bool,
    batch: usize,
    steps: usize,
}

fn stpn_r(
    normalisation: Normalisation,
    presynaptic: Presynaptic,
    clamp: Option<f64>,
    recurrent: bool,
    activation: Activation,
) -> KernelConfig {
    KernelConfig {
        input_size: 5,
        hidden_size: 4,
        normalisation,
        presynaptic,
        clamp,
        recurrent,
        activation,
        normalise_state: true,
        normalised_bias: true,
        squash_state: false,
    }
}

fn stpn_f(normalised: bool, clamp: Option<f64>, squash_state: bool) -> KernelConfig {
    KernelConfig {
        normalise_state: false,
        normalised_bias: false,
        squash_state,
        ..stpn_r(
            if normalised {
                Normalisation::Pre
            } else {
                Normalisation::Off
            },
            Presynaptic::PreviousHidden,
            clamp,
            false,
            Activation::Tanh,
        )
    }
}

/// The cases: the associative-retrieval STPNr first, then the maze's, the ablations, HebbNet,
/// the familiarity STPNf-net, STPNf and HebbFF.
fn cases() -> Vec<Case> {
    use Activation::{Sigmoid, Tanh};
    use Normalisation::{Off, Post, Pre};
    use Presynaptic::{CurrentHidden, PreviousHidden};
    let case = |config, per_synapse| Case {
        config,
        per_synapse,
        batch: 3,
        steps: 8,
    };
    vec![
        case(stpn_r(Pre, CurrentHidden, None, true, Tanh), true),
        case(stpn_r(Pre, PreviousHidden, None, true, Tanh), true),
        case(stpn_r(Post, PreviousHidden, Some(0.2), true, Tanh), true),
        case(stpn_r(Pre, PreviousHidden, Some(0.2), true, Tanh), false),
        case(stpn_r(Off, CurrentHidden, Some(0.5), true, Tanh), true),
        case(stpn_r(Post, CurrentHidden, None, true, Sigmoid), false),
        case(stpn_r(Off, PreviousHidden, None, false, Sigmoid), false),
        case(stpn_r(Pre, PreviousHidden, None, false, Tanh), true),
        case(stpn_f(true, None, true), true),
        case(stpn_f(false, Some(0.3), false), false),
        // HebbFF with the associative-retrieval runner's sigmoid on F.
        case(
            KernelConfig {
                activation: Sigmoid,
                ..stpn_f(false, None, true)
            },
            false,
        ),
        // The associative-retrieval sizes (H 11, I 37: 528 synapses, more than the 256 units of
        // a cube, so that units own several synapses).
        Case {
            config: KernelConfig {
                input_size: 37,
                hidden_size: 11,
                ..stpn_r(Pre, CurrentHidden, None, true, Tanh)
            },
            per_synapse: true,
            batch: 2,
            steps: 9,
        },
        // One step of one element (the actor-critic's rollout step), and a sequence of whole
        // segments (T = 4, segments of 2).
        Case {
            batch: 1,
            steps: 1,
            ..case(stpn_r(Pre, CurrentHidden, None, true, Tanh), true)
        },
        Case {
            batch: 2,
            steps: 4,
            ..case(stpn_r(Post, PreviousHidden, Some(0.2), true, Tanh), true)
        },
    ]
}

/// The host kernel's results: outputs, final h, final F, then the gradients of W, b, Λ, Γ, the
/// inputs, h₀ and F₀.
type Results = Vec<(&'static str, Vec<f32>)>;

/// Random parameters, sequence and output gradients of `case`.
struct Data {
    weight: Vec<f32>,
    bias: Vec<f32>,
    lambda: Vec<f32>,
    gamma: Vec<f32>,
    inputs: Vec<f32>,
    hidden: Vec<f32>,
    synaptic: Vec<f32>,
    grad_outputs: Vec<f32>,
    grad_hidden: Vec<f32>,
    grad_synaptic: Vec<f32>,
}

impl Data {
    fn new(case: &Case, seed: u64) -> Self {
        let config = case.config;
        let (inputs, units, width) = (
            config.input_size,
            config.hidden_size,
            config.presynaptic_size(),
        );
        let (batch, steps) = (case.batch, case.steps);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let plastic = if case.per_synapse { units * width } else { 1 };
        Self {
            weight: random(&mut rng, units * width, -1.0, 1.0),
            bias: random(&mut rng, units, -1.0, 1.0),
            lambda: random(&mut rng, plastic, 0.0, 1.0),
            // Large rates, so that the plastic state matters and the clamps are reached.
            gamma: random(&mut rng, plastic, -1.5, 1.5),
            inputs: random(&mut rng, steps * batch * inputs, -1.0, 1.0),
            hidden: random(&mut rng, batch * units, -0.5, 0.5),
            synaptic: random(&mut rng, batch * units * width, -0.3, 0.3),
            grad_outputs: random(&mut rng, steps * batch * units, -1.0, 1.0),
            grad_hidden: random(&mut rng, batch * units, -1.0, 1.0),
            grad_synaptic: random(&mut rng, batch * units * width, -1.0, 1.0),
        }
    }

    fn host(&self, case: &Case) -> Results {
        let parameters = Parameters {
            weight: &self.weight,
            bias: &self.bias,
            lambda: &self.lambda,
            gamma: &self.gamma,
        };
        let sequence = Sequence {
            steps: case.steps,
            batch: case.batch,
            inputs: &self.inputs,
            hidden: &self.hidden,
            synaptic: &self.synaptic,
            lengths: &[],
        };
        let forward = forward(case.config, parameters, sequence, true);
        let gradients = backward(
            case.config,
            parameters,
            sequence,
            Some(&forward.checkpoints),
            &self.grad_outputs,
            Some(&self.grad_hidden),
            Some(&self.grad_synaptic),
        );
        vec![
            ("outputs", forward.outputs().to_vec()),
            ("final h", forward.hidden().to_vec()),
            ("final F", forward.synaptic().to_vec()),
            ("grad W", gradients.weight),
            ("grad b", gradients.bias),
            ("grad Λ", gradients.lambda),
            ("grad Γ", gradients.gamma),
            ("grad x", gradients.inputs),
            ("grad h0", gradients.hidden),
            ("grad F0", gradients.synaptic),
        ]
    }

    /// The same through the cube node on `device` (an autodiff wgpu device).
    fn cube(&self, case: &Case, device: &Device, placement: Placement) -> Results {
        let config = case.config;
        let (inputs, units, width) = (
            config.input_size,
            config.hidden_size,
            config.presynaptic_size(),
        );
        let (batch, steps) = (case.batch, case.steps);
        let plastic_shape = if case.per_synapse {
            vec![units, width]
        } else {
            vec![1, 1]
        };
        let tensor1 = |values: &[f32], shape: [usize; 1]| {
            Tensor::<1>::from_data(TensorData::new(values.to_vec(), shape), device).require_grad()
        };
        let tensor2 = |values: &[f32], shape: Vec<usize>| {
            Tensor::<2>::from_data(TensorData::new(values.to_vec(), shape), device).require_grad()
        };
        let tensor3 = |values: &[f32], shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(values.to_vec(), shape), device).require_grad()
        };
        let tensors = OpInputs {
            inputs: tensor3(&self.inputs, [steps, batch, inputs]),
            hidden: tensor2(&self.hidden, vec![batch, units]),
            synaptic: tensor3(&self.synaptic, [batch, units, width]),
            weight: tensor2(&self.weight, vec![units, width]),
            bias: tensor1(&self.bias, [units]),
            lambda: tensor2(&self.lambda, plastic_shape.clone()),
            gamma: tensor2(&self.gamma, plastic_shape),
        };
        let leaves = (
            tensors.inputs.clone(),
            tensors.hidden.clone(),
            tensors.synaptic.clone(),
            tensors.weight.clone(),
            tensors.bias.clone(),
            tensors.lambda.clone(),
            tensors.gamma.clone(),
        );
        let packed = super::cube_node::run(config, tensors, placement).expect("a cube device");
        let (outputs, hidden, synaptic) = unpack(packed, steps, batch, units, width);
        let constant3 = |values: &[f32], shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(values.to_vec(), shape), device)
        };
        let loss = (outputs.clone() * constant3(&self.grad_outputs, [steps, batch, units])).sum()
            + (hidden.clone()
                * Tensor::<2>::from_data(
                    TensorData::new(self.grad_hidden.clone(), [batch, units]),
                    device,
                ))
            .sum()
            + (synaptic.clone() * constant3(&self.grad_synaptic, [batch, units, width])).sum();
        let grads = loss.backward();
        let (x, h0, f0, weight, bias, lambda, gamma) = leaves;
        vec![
            ("outputs", host_values(outputs)),
            ("final h", host_values(hidden)),
            ("final F", host_values(synaptic)),
            ("grad W", host_values(weight.grad(&grads).unwrap())),
            ("grad b", host_values(bias.grad(&grads).unwrap())),
            ("grad Λ", host_values(lambda.grad(&grads).unwrap())),
            ("grad Γ", host_values(gamma.grad(&grads).unwrap())),
            ("grad x", host_values(x.grad(&grads).unwrap())),
            ("grad h0", host_values(h0.grad(&grads).unwrap())),
            ("grad F0", host_values(f0.grad(&grads).unwrap())),
        ]
    }
}

/// Compares two result lists (NaN fails) and returns the largest relative error.
fn compare_results(label: &str, ours: Results, reference: Results) -> f64 {
    let mut largest = 0.0_f64;
    for ((what, ours), (_, theirs)) in ours.into_iter().zip(reference) {
        assert_eq!(ours.len(), theirs.len(), "{label}: {what} length");
        let error = compare::relative_difference(ours, theirs);
        assert!(
            compare::within(error, 1e-4),
            "{label}: {what} relative error {error:e}"
        );
        largest = largest.max(error);
    }
    largest
}

/// Every case of [`cases`], with the working state where it fits (shared
/// memory), against the host kernel.
#[test]
fn cube_kernel_matches_the_host_kernel() {
    let Some(device) = wgpu_device() else { return };
    let device = device.autodiff();
    for (index, case) in cases().into_iter().enumerate() {
        let data = Data::new(&case, index as u64);
        let label = format!("{case:?}");
        let error = compare_results(
            &label,
            data.cube(&case, &device, Placement::Automatic),
            data.host(&case),
        );
        eprintln!("largest relative error {error:.2e}: {label}");
    }
}

/// The working state in global memory (the path of layers too large for shared memory), on
/// the associative-retrieval and the maze options; with a sequence whose last segment is short
/// (T = 11, segments of 4).
#[test]
fn cube_kernel_in_global_memory_matches_the_host_kernel() {
    let Some(device) = wgpu_device() else { return };
    let device = device.autodiff();
    for (index, case) in cases().into_iter().take(3).enumerate() {
        let case = Case { steps: 11, ..case };
        let data = Data::new(&case, 100 + index as u64);
        let label = format!("global {case:?}");
        let error = compare_results(
            &label,
            data.cube(&case, &device, Placement::Global),
            data.host(&case),
        );
        eprintln!("largest relative error {error:.2e}: {label}");
    }
}

/// On a wgpu device the layer takes the cube path, with and without autodiff; without autodiff
/// it runs forward only and gives the op-by-op outputs.
#[test]
fn cube_path_is_taken_on_wgpu_and_runs_forward_only_without_autodiff() {
    let Some(device) = wgpu_device() else { return };
    use crate::cell::{RecurrentCell, step_by_step};
    use crate::{StpnRConfig, StpnRState};
    assert!(autodiff::available(&Tensor::<2>::zeros([1, 1], &device)));
    assert!(autodiff::available(&Tensor::<2>::zeros(
        [1, 1],
        &device.clone().autodiff()
    )));
    let cell = StpnRConfig::new(3, 5).init(&device);
    let cell = crate::StpnR {
        gamma: burn::module::Param::from_tensor(cell.gamma.val().mul_scalar(300.0)),
        ..cell
    };
    let inputs = Tensor::<3>::random(
        [6, 2, 3],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let state = StpnRState {
        hidden: Tensor::zeros([2, 5], &device),
        synaptic: Tensor::zeros([2, 5, 8], &device),
    };
    let (fused, fused_state) = cell.forward_sequence(inputs.clone(), state.clone());
    assert!(!fused.is_autodiff());
    let (reference, reference_state) = step_by_step(&cell, inputs, state);
    for (what, ours, theirs) in [
        (
            "outputs",
            host_values::<f32, _>(fused),
            host_values::<f32, _>(reference),
        ),
        (
            "F",
            host_values::<f32, _>(fused_state.synaptic),
            host_values::<f32, _>(reference_state.synaptic),
        ),
    ] {
        let error = compare::relative_difference(ours, theirs);
        assert!(compare::within(error, 1e-5), "{what}: {error:e}");
    }
}

/// The recurrent STPN golden cases through the cube path (float32 tolerances).
#[test]
fn golden_stpn_cases_through_the_cube_path() {
    use crate::parity::{ParityCase, Precision, golden, run_case_with};
    let Some(device) = wgpu_device() else { return };
    let stems = [
        "stpn_r_pre",
        "stpn_r_scalar",
        "stpn_r_post_clamp",
        "stpn_r_post_clamp_strong",
        "art_stpn_r",
        "stpn_f_norm",
        "stpn_f_nonorm_clamp",
        "art_stpn_f",
    ];
    for file in stems
        .iter()
        .flat_map(|stem| golden::SIZES.map(|size| format!("{stem}_{size}.json")))
    {
        let case = ParityCase::from_file(golden::directory().join(&file)).unwrap();
        let report = run_case_with(&case, &device, Precision::Float32, true).unwrap();
        assert!(
            report.passed(),
            "{file} through the cube path:\n{}",
            golden::describe(&report)
        );
    }
}
