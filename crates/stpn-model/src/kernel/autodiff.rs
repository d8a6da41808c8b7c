//! The fused STPN kernel ([`crate::kernel`], STPNr and STPNf) as a node of Burn's autodiff graph:
//! one operation from `(inputs, h_0, F_0, W, b, Λ, Γ)` to `(outputs, h_T, F_T)` whose backward is
//! the kernel's hand-written one, so that gradients reach every parameter, the input sequence (an
//! encoder in front of the cell trains through it) and the initial state.
//!
//! The node is registered on `Autodiff<Flex>` and `Autodiff<NdArray>` (with or without gradient
//! checkpointing); on a device without autodiff the kernel runs forward only. On the cube backend
//! (wgpu) the op runs the CubeCL kernel instead ([`super::cube_node`]). The kernel runs in float32.
//!
//! Burn's backward node has one output, so the three results travel packed in one flat tensor
//! and are split with ordinary (differentiable) `narrow` and `reshape`.

#![allow(deprecated)] // burn-ndarray is deprecated in Burn 0.22 and still supported here.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{
    Autodiff, Backend, DispatchKindConversion, DispatchTensor, TensorMetadata, read_sync,
};
use burn::tensor::{Tensor, TensorData};

use crate::kernel::{Checkpoints, KernelConfig, Parameters, Sequence, backward, forward};
use crate::params::host_values;

/// Everything the backward needs, captured by the forward (host copies, float32).
#[derive(Clone, Debug)]
struct Saved {
    config: KernelConfig,
    steps: usize,
    batch: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    lambda: Vec<f32>,
    gamma: Vec<f32>,
    inputs: Vec<f32>,
    hidden: Vec<f32>,
    synaptic: Vec<f32>,
    /// The forward's checkpoints ([`crate::kernel::ForwardOutput::checkpoints`]).
    checkpoints: Checkpoints<f32>,
    /// Steps of each batch element ([`Sequence::lengths`]).
    lengths: Vec<usize>,
}

impl Saved {
    fn parameters(&self) -> Parameters<'_, f32> {
        Parameters {
            weight: &self.weight,
            bias: &self.bias,
            lambda: &self.lambda,
            gamma: &self.gamma,
        }
    }

    fn sequence(&self) -> Sequence<'_, f32> {
        Sequence {
            steps: self.steps,
            batch: self.batch,
            inputs: &self.inputs,
            hidden: &self.hidden,
            synaptic: &self.synaptic,
            lengths: &self.lengths,
        }
    }
}

/// The kernel's backward from the gradient of the packed output (outputs, final hidden state,
/// final synaptic state), in the order of [`OpInputs`].
impl HostBackward<7> for Saved {
    fn gradients(self, packed: Vec<f32>, _needed: [bool; 7]) -> [Option<Vec<f32>>; 7] {
        let units = self.config.hidden_size;
        let outputs_end = self.steps * self.batch * units;
        let hidden_end = outputs_end + self.batch * units;
        let gradients = backward(
            self.config,
            self.parameters(),
            self.sequence(),
            Some(&self.checkpoints),
            &packed[..outputs_end],
            Some(&packed[outputs_end..hidden_end]),
            Some(&packed[hidden_end..]),
        );
        [
            gradients.inputs,
            gradients.hidden,
            gradients.synaptic,
            gradients.weight,
            gradients.bias,
            gradients.lambda,
            gradients.gamma,
        ]
        .map(Some)
    }
}

/// The backward of an operation computed on the host ([`host_node`]).
pub trait HostBackward<const N: usize>: Clone + Send + std::fmt::Debug + 'static {
    /// The gradients of the `N` parents, each flat (row-major), from that of the flat output;
    /// `needed[i]` says whether parent `i` is tracked (where it is not, `None` may be returned).
    fn gradients(self, output_gradient: Vec<f32>, needed: [bool; N]) -> [Option<Vec<f32>>; N];
}

/// The autodiff node of a host operation whose backward is `S`'s.
#[derive(Debug)]
struct HostNode<S>(std::marker::PhantomData<S>);

fn to_host<B: Backend>(tensor: B::FloatTensorPrimitive) -> Vec<f32> {
    read_sync(B::float_into_data(tensor))
        .expect("readable gradient")
        .try_into_vec_as::<f32>()
        .expect("float gradient")
}

fn from_host<B: Backend>(
    values: Vec<f32>,
    shape: Vec<usize>,
    device: &B::Device,
) -> B::FloatTensorPrimitive {
    B::float_from_data(TensorData::new(values, shape), device)
}

impl<B: Backend, S: HostBackward<N>, const N: usize> Backward<B, N> for HostNode<S> {
    /// The operation's saved values, the device, and each parent's length.
    type State = (S, B::Device, [usize; N]);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_gradient = to_host::<B>(grads.consume::<B>(&ops.node));
        let (saved, device, lengths) = ops.state;
        let needed = ops.parents.each_ref().map(Option::is_some);
        let gradients = saved.gradients(output_gradient, needed);
        for ((parent, gradient), length) in ops.parents.into_iter().zip(gradients).zip(lengths) {
            if let (Some(node), Some(values)) = (parent, gradient) {
                assert_eq!(values.len(), length, "a gradient of the parent's size");
                grads.register::<B>(node.id, from_host::<B>(values, vec![length], &device));
            }
        }
    }
}

/// `output`, computed on the host from the flat tensors `parents`, as a tensor on their device:
/// on an autodiff device a node of the graph whose backward is `saved`'s ([`HostBackward`]);
/// parents made outside autodiff enter as constants. Registered on `Autodiff<Flex>` and
/// `Autodiff<NdArray>`, with or without gradient checkpointing.
pub fn host_node<S: HostBackward<N>, const N: usize>(
    parents: [Tensor<1>; N],
    output: Vec<f32>,
    saved: S,
) -> Tensor<1> {
    let length = output.len();
    if !parents.iter().any(Tensor::is_autodiff) {
        return Tensor::from_data(TensorData::new(output, [length]), &parents[0].device());
    }
    let parents = parents.map(Tensor::autodiff);
    let (mut output, mut saved) = (Some(output), Some(saved));
    let mut node = None;
    #[cfg(feature = "flex")]
    {
        node = node
            .or_else(|| on_backend::<burn::backend::Flex, S, N>(&parents, &mut output, &mut saved));
    }
    #[cfg(feature = "ndarray")]
    {
        node = node.or_else(|| {
            on_backend::<burn::backend::NdArray, S, N>(&parents, &mut output, &mut saved)
        });
    }
    node.expect("host operations run on the flex and ndarray backends; check `kernel::autodiff::on_host` first")
}

/// Registers the node on `Autodiff<B>` (with or without gradient checkpointing) if the parents
/// live there.
fn on_backend<B: Backend, S: HostBackward<N>, const N: usize>(
    parents: &[Tensor<1>; N],
    output: &mut Option<Vec<f32>>,
    saved: &mut Option<S>,
) -> Option<Tensor<1>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<B, NoCheckpointing>>
        + DispatchKindConversion<Autodiff<B, BalancedCheckpointing>>,
{
    try_host_node::<B, NoCheckpointing, S, N>(parents, output, saved)
        .or_else(|| try_host_node::<B, BalancedCheckpointing, S, N>(parents, output, saved))
}

/// Registers the node on `Autodiff<B, C>` if the parents live there.
fn try_host_node<B: Backend, C: CheckpointStrategy, S: HostBackward<N>, const N: usize>(
    parents: &[Tensor<1>; N],
    output: &mut Option<Vec<f32>>,
    saved: &mut Option<S>,
) -> Option<Tensor<1>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<B, C>>,
{
    // The conversion consumes its tensor even when it fails: probe with clones.
    let primitives: Vec<_> = parents
        .iter()
        .map(|parent| parent.clone().try_into_primitive::<Autodiff<B, C>>().ok())
        .collect::<Option<_>>()?;
    let primitives: [_; N] = primitives.try_into().ok()?;
    let nodes = primitives.each_ref().map(|primitive| primitive.node());
    let lengths = parents.each_ref().map(|parent| parent.dims()[0]);
    let device = primitives[0].primitive().device();
    // Moved, not copied: only the backend that converts takes them.
    let output = output.take().expect("the node is registered once");
    let length = output.len();
    let output = from_host::<B>(output, vec![length], &device);
    let prepared =
        <HostNode<S> as Backward<B, N>>::prepare::<C>(HostNode(std::marker::PhantomData), nodes);
    let output = match prepared.compute_bound().stateful() {
        OpsKind::Tracked(prepared) => {
            let saved = saved.take().expect("the node is registered once");
            prepared.finish((saved, device, lengths), output)
        }
        OpsKind::UnTracked(prepared) => prepared.finish(output),
    };
    Some(Tensor::from_primitive::<Autodiff<B, C>>(output))
}

/// The op's tensor inputs, in the order of the backward node's parents.
pub(super) struct OpInputs {
    pub(super) inputs: Tensor<3>,
    pub(super) hidden: Tensor<2>,
    pub(super) synaptic: Tensor<3>,
    pub(super) weight: Tensor<2>,
    pub(super) bias: Tensor<1>,
    pub(super) lambda: Tensor<2>,
    pub(super) gamma: Tensor<2>,
}

impl OpInputs {
    /// The cell's parameters with a sequence's inputs and initial state.
    fn new(
        parameters: KernelTensors,
        inputs: Tensor<3>,
        hidden: Tensor<2>,
        synaptic: Tensor<3>,
    ) -> Self {
        Self {
            inputs,
            hidden,
            synaptic,
            weight: parameters.weight,
            bias: parameters.bias,
            lambda: parameters.lambda,
            gamma: parameters.gamma,
        }
    }

    /// The same tensors on the autodiff device (those made outside autodiff enter as constants).
    pub(super) fn autodiff(self) -> Self {
        Self {
            inputs: self.inputs.autodiff(),
            hidden: self.hidden.autodiff(),
            synaptic: self.synaptic.autodiff(),
            weight: self.weight.autodiff(),
            bias: self.bias.autodiff(),
            lambda: self.lambda.autodiff(),
            gamma: self.gamma.autodiff(),
        }
    }

    /// The seven tensors as primitives of `Autodiff<B, C>`, in the node's order (inputs, hidden,
    /// synaptic, weight, bias, Λ, Γ), or `None` if they live on another backend.
    pub(super) fn autodiff_primitives<B: Backend, C: CheckpointStrategy>(
        &self,
    ) -> Option<[burn::backend::tensor::FloatTensor<Autodiff<B, C>>; 7]>
    where
        DispatchTensor: DispatchKindConversion<Autodiff<B, C>>,
    {
        // The conversion consumes its tensor even when it fails: probe with clones.
        let convert3 = |t: &Tensor<3>| t.clone().try_into_primitive::<Autodiff<B, C>>().ok();
        let convert2 = |t: &Tensor<2>| t.clone().try_into_primitive::<Autodiff<B, C>>().ok();
        Some([
            convert3(&self.inputs)?,
            convert2(&self.hidden)?,
            convert3(&self.synaptic)?,
            convert2(&self.weight)?,
            self.bias
                .clone()
                .try_into_primitive::<Autodiff<B, C>>()
                .ok()?,
            convert2(&self.lambda)?,
            convert2(&self.gamma)?,
        ])
    }

    /// Whether any input lives on an autodiff device (the others then enter as constants).
    pub(super) fn is_autodiff(&self) -> bool {
        self.inputs.is_autodiff()
            || self.hidden.is_autodiff()
            || self.synaptic.is_autodiff()
            || self.weight.is_autodiff()
            || self.bias.is_autodiff()
            || self.lambda.is_autodiff()
            || self.gamma.is_autodiff()
    }
}

/// Whether the fused op can run on tensors of this device: the CPU backends ([`on_host`]) and
/// the cube backend (wgpu, [`super::cube`]), with or without autodiff.
pub fn available(tensor: &Tensor<2>) -> bool {
    on_host(tensor) || on_cube(tensor)
}

/// Whether tensors of this device run the host kernel (flex, ndarray, with or without
/// autodiff), the one a [`super::Recording`] drives.
pub fn on_host(tensor: &Tensor<2>) -> bool {
    let device = tensor.device().without_autodiff();
    let mut host = false;
    #[cfg(feature = "flex")]
    {
        host |= device == burn::tensor::Device::flex();
    }
    #[cfg(feature = "ndarray")]
    {
        host |= device == burn::tensor::Device::ndarray();
    }
    let _ = device;
    host
}

/// Whether tensors of this device run the CubeCL kernel ([`super::cube_node`]).
fn on_cube(tensor: &Tensor<2>) -> bool {
    #[cfg(feature = "wgpu")]
    {
        super::cube_node::available(tensor)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = tensor;
        false
    }
}

/// Whether a cell whose `fused` option is `enabled` and whose weights are `weight` runs on the
/// kernel: float32 on a backend that has it ([`available`]).
pub fn applies(enabled: bool, weight: &Tensor<2>) -> bool {
    enabled && weight.dtype() == burn::tensor::DType::F32 && available(weight)
}

/// The parameters of a cell the kernel computes (STPNr or STPNf), as tensors.
pub struct KernelTensors {
    /// Slow weights `W`, `[H, P]`.
    pub weight: Tensor<2>,
    /// Bias `b`, `[H]`.
    pub bias: Tensor<1>,
    /// Decay Λ, `[H, P]` or `[1, 1]`.
    pub lambda: Tensor<2>,
    /// Plasticity rate Γ, `[H, P]` or `[1, 1]`.
    pub gamma: Tensor<2>,
}

/// A cell the kernel computes: its options and its parameters.
pub struct KernelCell {
    /// The cell's options.
    pub config: KernelConfig,
    /// The cell's parameters.
    pub parameters: KernelTensors,
}

impl KernelCell {
    /// The cell of `config` and `parameters` when its `fused` option is on and the parameters
    /// live where the host kernel runs ([`applies`], [`on_host`]).
    pub fn if_on_host(
        fused: bool,
        config: KernelConfig,
        parameters: KernelTensors,
    ) -> Option<Self> {
        (applies(fused, &parameters.weight) && on_host(&parameters.weight))
            .then_some(Self { config, parameters })
    }

    /// A [`super::Recording`] of `steps` steps of this cell from the zero state of `batch`
    /// elements.
    pub fn recording(&self, steps: usize, batch: usize) -> super::Recording<f32> {
        let (units, width) = (self.config.hidden_size, self.config.presynaptic_size());
        let (weight, bias, lambda, gamma) = (
            host_values(self.parameters.weight.clone()),
            host_values(self.parameters.bias.clone()),
            host_values(self.parameters.lambda.clone()),
            host_values(self.parameters.gamma.clone()),
        );
        super::Recording::new(
            self.config,
            Parameters {
                weight: &weight,
                bias: &bias,
                lambda: &lambda,
                gamma: &gamma,
            },
            steps,
            vec![0.0; batch * units],
            vec![0.0; batch * units * width],
        )
    }
}

/// Runs the kernel with `config` over `inputs` (`[T, B, I]`) from the hidden (`[B, H]`) and
/// synaptic (`[B, H, P]`) states: the outputs `[T, B, H]` and the final hidden and synaptic
/// states, all differentiable on an autodiff device. With `lengths` (`[B]`, empty for all `T`),
/// each batch element runs its own number of steps ([`Sequence::lengths`]) on the host; the cube
/// path runs all `T` steps of every element, which leaves the outputs at the real steps and the
/// gradients through them unchanged (what `RecurrentCell::forward_padded` promises) but not the
/// final state of a shorter element.
pub fn run_kernel(
    config: KernelConfig,
    parameters: KernelTensors,
    inputs: Tensor<3>,
    hidden: Tensor<2>,
    synaptic: Tensor<3>,
    lengths: &[usize],
) -> (Tensor<3>, Tensor<2>, Tensor<3>) {
    let [steps, batch, _] = inputs.dims();
    assert!(
        lengths.is_empty() || (lengths.len() == batch && lengths.iter().all(|&l| l <= steps)),
        "one length per batch element, each at most the {steps} steps"
    );
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let tensors = OpInputs::new(parameters, inputs, hidden, synaptic);
    #[cfg(feature = "wgpu")]
    if super::cube_node::available(&tensors.weight) {
        let packed = super::cube_node::run(config, tensors, super::cube::Placement::Automatic)
            .expect("every tensor of the fused STPN op on the same cube device");
        return unpack(packed, steps, batch, units, width);
    }
    let saved = Saved {
        config,
        steps,
        batch,
        weight: host_values(tensors.weight.clone()),
        bias: host_values(tensors.bias.clone()),
        lambda: host_values(tensors.lambda.clone()),
        gamma: host_values(tensors.gamma.clone()),
        inputs: host_values(tensors.inputs.clone()),
        hidden: host_values(tensors.hidden.clone()),
        synaptic: host_values(tensors.synaptic.clone()),
        checkpoints: Checkpoints::default(),
        lengths: lengths.to_vec(),
    };
    // Without autodiff there is no backward: no checkpoints.
    let result = forward(
        saved.config,
        saved.parameters(),
        saved.sequence(),
        tensors.is_autodiff(),
    );
    let saved = Saved {
        checkpoints: result.checkpoints,
        ..saved
    };
    let packed = output_node(tensors, result.packed, saved);
    unpack(packed, steps, batch, units, width)
}

/// [`run_kernel`] for a feedforward layer (STPNf, HebbFF), whose kernel hidden state reaches
/// nothing without recurrence (zeros, made here): the outputs `[T, B, H]` and the final synaptic
/// state `[B, H, I]`.
pub fn run_feedforward_kernel(
    config: KernelConfig,
    parameters: KernelTensors,
    inputs: Tensor<3>,
    synaptic: Tensor<3>,
    lengths: &[usize],
) -> (Tensor<3>, Tensor<3>) {
    assert!(!config.recurrent, "a feedforward layer's kernel");
    let [_, batch, _] = inputs.dims();
    let weight = &parameters.weight;
    let hidden = Tensor::zeros(
        [batch, config.hidden_size],
        (&weight.device(), weight.dtype()),
    );
    let (outputs, _, synaptic) = run_kernel(config, parameters, inputs, hidden, synaptic, lengths);
    (outputs, synaptic)
}

/// The op's packed output on the tensors' device: a node of the autodiff graph whose backward
/// starts from `saved` when any of `tensors` is tracked, else a plain tensor.
fn output_node(tensors: OpInputs, packed: Vec<f32>, saved: Saved) -> Tensor<1> {
    let parents = [
        tensors.inputs.flatten(0, 2),
        tensors.hidden.flatten(0, 1),
        tensors.synaptic.flatten(0, 2),
        tensors.weight.flatten(0, 1),
        tensors.bias,
        tensors.lambda.flatten(0, 1),
        tensors.gamma.flatten(0, 1),
    ];
    host_node(parents, packed, saved)
}

/// [`run_kernel`] over the inputs (`[T, B, I]`) and from the state that `recording` ran, all
/// of its steps taken ([`super::Recording`]): the forward is the recording's, not run again, when
/// `parameters` and `inputs` hold the values it ran with; otherwise (parameters updated since,
/// other inputs) the kernel runs as [`run_kernel`] from the recording's initial state. The
/// initial state enters as a constant (no gradient).
pub fn run_kernel_recorded(
    parameters: KernelTensors,
    inputs: Tensor<3>,
    recording: super::Recording<f32>,
) -> (Tensor<3>, Tensor<2>, Tensor<3>) {
    let config = recording.config;
    let (units, width) = (config.hidden_size, config.presynaptic_size());
    let (steps, batch) = (recording.steps, recording.batch);
    assert_eq!(
        inputs.dims(),
        [steps, batch, config.input_size],
        "the inputs of the recorded steps"
    );
    let device = parameters.weight.device();
    let hidden = Tensor::<2>::from_data(
        TensorData::new(recording.initial_hidden.clone(), [batch, units]),
        &device,
    );
    let synaptic = Tensor::<3>::from_data(
        TensorData::new(recording.initial_synaptic.clone(), [batch, units, width]),
        &device,
    );
    if !recording.ran_with(&parameters, &inputs) {
        return run_kernel(config, parameters, inputs, hidden, synaptic, &[]);
    }
    let (recording, output) = recording.finish();
    let saved = Saved {
        config,
        steps,
        batch,
        weight: recording.weight,
        bias: recording.bias,
        lambda: recording.lambda,
        gamma: recording.gamma,
        inputs: recording.inputs,
        hidden: recording.initial_hidden,
        synaptic: recording.initial_synaptic,
        checkpoints: output.checkpoints,
        lengths: Vec::new(),
    };
    let tensors = OpInputs::new(parameters, inputs, hidden, synaptic);
    let packed = output_node(tensors, output.packed, saved);
    unpack(packed, steps, batch, units, width)
}

impl super::Recording<f32> {
    /// Whether every step is taken, on the host kernel, with the values of `parameters` and of
    /// `inputs` (`[T, B, I]`) to the bit: whether [`run_kernel_recorded`] uses the recording.
    pub fn ran_with(&self, parameters: &KernelTensors, inputs: &Tensor<3>) -> bool {
        let same = |tensor_values: Vec<f32>, recorded: &[f32]| {
            tensor_values.len() == recorded.len()
                && tensor_values
                    .iter()
                    .zip(recorded)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        self.is_complete()
            && on_host(&parameters.weight)
            && same(host_values(parameters.weight.clone()), &self.weight)
            && same(host_values(parameters.bias.clone()), &self.bias)
            && same(host_values(parameters.lambda.clone()), &self.lambda)
            && same(host_values(parameters.gamma.clone()), &self.gamma)
            && same(host_values(inputs.clone()), &self.inputs)
    }
}

/// Splits the op's packed output into the outputs `[T, B, H]`, the final hidden state `[B, H]`
/// and the final synaptic state `[B, H, P]` (differentiable).
pub(super) fn unpack(
    packed: Tensor<1>,
    steps: usize,
    batch: usize,
    units: usize,
    width: usize,
) -> (Tensor<3>, Tensor<2>, Tensor<3>) {
    let outputs_end = steps * batch * units;
    let outputs = packed
        .clone()
        .narrow(0, 0, outputs_end)
        .reshape([steps, batch, units]);
    let hidden = packed
        .clone()
        .narrow(0, outputs_end, batch * units)
        .reshape([batch, units]);
    let synaptic = packed
        .narrow(0, outputs_end + batch * units, batch * units * width)
        .reshape([batch, units, width]);
    (outputs, hidden, synaptic)
}

#[cfg(test)]
pub(crate) mod tests {
    use burn::module::Module;
    use burn::tensor::{Distribution, Tensor, TensorData};

    use crate::cell::{RecurrentCell, step_by_step};
    use crate::compare;
    use crate::params::{host_values, named_gradients};
    use crate::parity::{ParityCase, Precision, golden, run_case_with};
    use crate::{Backend, Normalisation, Presynaptic, StpnR, StpnRConfig, StpnRState};

    /// Relative error at most 2e-5 (NaN fails), or a panic naming `what`.
    pub(crate) fn assert_close(ours: Vec<f32>, reference: Vec<f32>, what: &str) {
        let error = compare::relative_difference(ours, reference);
        assert!(
            compare::within(error, 2e-5),
            "{what}: relative error {error:e}"
        );
    }

    /// An encoder (a matrix) in front of the cell: its gradient flows through the fused op.
    #[derive(Module, Debug)]
    struct Encoded {
        encoder: burn::module::Param<Tensor<2>>,
        cell: StpnR,
    }

    fn gradients_through(
        network: &Encoded,
        raw: Tensor<3>,
        state: StpnRState,
        fused: bool,
    ) -> Vec<(String, Vec<f32>)> {
        let [steps, batch, features] = raw.dims();
        let inputs = raw
            .reshape([steps * batch, features])
            .matmul(network.encoder.val())
            .reshape([steps, batch, network.cell.input_size]);
        let (outputs, last) = if fused {
            network.cell.forward_sequence(inputs, state.clone())
        } else {
            step_by_step(&network.cell, inputs, state.clone())
        };
        let loss = (outputs.clone() * outputs.clone()).sum()
            + outputs.narrow(0, 0, 1).sum()
            + last.hidden.sum().mul_scalar(0.5)
            + (last.synaptic.clone() * last.synaptic).sum();
        let autodiff = loss.backward();
        let mut found: Vec<(String, Vec<f32>)> = named_gradients(network, &autodiff)
            .into_iter()
            .map(|(name, gradient)| {
                (
                    name,
                    gradient
                        .unwrap()
                        .values
                        .into_iter()
                        .map(|v| v as f32)
                        .collect(),
                )
            })
            .collect();
        found.push((
            "h0".into(),
            host_values::<f32, _>(state.hidden.grad(&autodiff).unwrap()),
        ));
        found.push((
            "F0".into(),
            host_values::<f32, _>(state.synaptic.grad(&autodiff).unwrap()),
        ));
        found
    }

    /// The fused op in the autodiff graph gives the op-by-op gradients to every parameter, to
    /// an encoder before it and to the initial state, on every compiled CPU backend.
    #[test]
    fn fused_op_trains_like_the_op_by_op_cell() {
        for backend in Backend::compiled_cpu() {
            for (normalisation, presynaptic, clamp) in [
                (Normalisation::Pre, Presynaptic::PreviousHidden, None),
                (Normalisation::Post, Presynaptic::PreviousHidden, Some(0.2)),
                (Normalisation::Pre, Presynaptic::CurrentHidden, None),
            ] {
                let device = backend.device().unwrap().autodiff();
                device.seed(7);
                let (features, inputs, units, batch, steps) = (6, 5, 4, 3, 8);
                let cell = StpnRConfig::new(inputs, units)
                    .with_normalisation(normalisation)
                    .with_presynaptic(presynaptic)
                    .with_clamp(clamp)
                    .with_fused(true)
                    .init(&device);
                let cell = StpnR {
                    gamma: burn::module::Param::from_tensor(
                        cell.gamma.val().mul_scalar(300.0).detach(),
                    ),
                    ..cell
                };
                let network = Encoded {
                    encoder: crate::cells::init::symmetric([features, inputs], 1.0, &device),
                    cell,
                };
                let raw = Tensor::<3>::random(
                    [steps, batch, features],
                    Distribution::Uniform(-1.0, 1.0),
                    &device,
                );
                let state = StpnRState {
                    hidden: Tensor::random(
                        [batch, units],
                        Distribution::Uniform(-0.5, 0.5),
                        &device,
                    )
                    .require_grad(),
                    synaptic: Tensor::random(
                        [batch, units, inputs + units],
                        Distribution::Uniform(-0.1, 0.1),
                        &device,
                    )
                    .require_grad(),
                };
                let fused = gradients_through(&network, raw.clone(), state.clone(), true);
                let reference = gradients_through(&network, raw, state, false);
                assert_eq!(fused.len(), 7, "encoder, four cell parameters, h0, F0");
                for ((name, ours), (_, theirs)) in fused.into_iter().zip(reference) {
                    assert_close(
                        ours,
                        theirs,
                        &format!("{backend} {normalisation:?} {presynaptic:?}: {name}"),
                    );
                }
            }
        }
    }

    /// A masked loss of sequences padded at their ends: the real steps' outputs and every
    /// gradient (cell parameters, an encoder before it, the initial state) of the fused kernel
    /// skipping the padding, of the fused kernel running it, and of the op-by-op cell.
    fn padded_gradients(
        network: &Encoded,
        raw: Tensor<3>,
        state: StpnRState,
        lengths: &[usize],
        path: &str,
    ) -> Vec<(String, Vec<f32>)> {
        let [steps, batch, features] = raw.dims();
        let device = raw.device();
        let inputs = raw
            .reshape([steps * batch, features])
            .matmul(network.encoder.val())
            .reshape([steps, batch, network.cell.input_size]);
        let outputs = match path {
            "skipped" => network.cell.forward_padded(inputs, state.clone(), lengths),
            "fused" => network.cell.forward_sequence(inputs, state.clone()).0,
            _ => step_by_step(&network.cell, inputs, state.clone()).0,
        };
        let mask: Vec<f32> = (0..steps)
            .flat_map(|step| {
                lengths
                    .iter()
                    .map(move |&length| (step < length) as u8 as f32)
            })
            .collect();
        let mask = Tensor::<1>::from_data(TensorData::new(mask, [steps * batch]), &device)
            .reshape([steps, batch, 1]);
        let real = outputs * mask;
        let loss = (real.clone() * real.clone()).sum() + real.clone().sum_dim(2).sin().sum();
        let autodiff = loss.backward();
        let mut found = vec![("real outputs".to_string(), host_values::<f32, _>(real))];
        found.extend(
            named_gradients(network, &autodiff)
                .into_iter()
                .map(|(name, gradient)| {
                    let values = gradient.unwrap().values.into_iter();
                    (name, values.map(|v| v as f32).collect())
                }),
        );
        // Without recurrence h0 reaches nothing: the op-by-op graph has no gradient for it.
        let units = network.cell.hidden_size;
        found.push((
            "h0".into(),
            state
                .hidden
                .grad(&autodiff)
                .map_or(vec![0.0; batch * units], host_values::<f32, _>),
        ));
        found.push((
            "F0".into(),
            host_values::<f32, _>(state.synaptic.grad(&autodiff).unwrap()),
        ));
        found
    }

    #[test]
    fn padded_sequences_skip_their_padding_with_the_same_gradients() {
        let device = Backend::Flex.device().unwrap().autodiff();
        device.seed(11);
        let (features, inputs, units, batch, steps) = (6, 5, 4, 4, 9);
        let lengths = [9, 2, 5, 1];
        for (recurrent, normalisation) in [(true, Normalisation::Pre), (false, Normalisation::Post)]
        {
            let cell = StpnRConfig::new(inputs, units)
                .with_recurrent(recurrent)
                .with_normalisation(normalisation)
                .with_fused(true)
                .init(&device);
            let cell = StpnR {
                gamma: burn::module::Param::from_tensor(
                    cell.gamma.val().mul_scalar(300.0).detach(),
                ),
                ..cell
            };
            let width = cell.presynaptic_size();
            let network = Encoded {
                encoder: crate::cells::init::symmetric([features, inputs], 1.0, &device),
                cell,
            };
            let raw = Tensor::<3>::random(
                [steps, batch, features],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            );
            let state = StpnRState {
                hidden: Tensor::random([batch, units], Distribution::Uniform(-0.5, 0.5), &device)
                    .require_grad(),
                synaptic: Tensor::random(
                    [batch, units, width],
                    Distribution::Uniform(-0.1, 0.1),
                    &device,
                )
                .require_grad(),
            };
            let run = |path| padded_gradients(&network, raw.clone(), state.clone(), &lengths, path);
            let skipped = run("skipped");
            assert_eq!(
                skipped.len(),
                8,
                "outputs, encoder, four cell parameters, h0, F0"
            );
            for reference in ["fused", "ops"] {
                for ((name, ours), (_, theirs)) in skipped.iter().zip(run(reference)) {
                    assert_close(
                        ours.clone(),
                        theirs,
                        &format!("recurrent {recurrent}, {reference}: {name}"),
                    );
                }
            }
        }
    }

    /// The fused path is taken on the CPU backends, with and without autodiff (so that the
    /// comparisons above compare two different paths).
    #[test]
    fn fused_op_is_available_on_cpu_backends() {
        for backend in Backend::compiled_cpu() {
            let device = backend.device().unwrap();
            assert!(
                super::available(&Tensor::<2>::zeros([1, 1], &device)),
                "{backend}"
            );
            assert!(
                super::available(&Tensor::<2>::zeros([1, 1], &device.autodiff())),
                "{backend} autodiff"
            );
        }
    }

    /// Without autodiff the fused op runs forward only and gives the op-by-op outputs.
    #[test]
    fn fused_op_runs_forward_without_autodiff() {
        let device = Backend::Flex.device().unwrap();
        let cell = StpnRConfig::new(3, 5).with_fused(true).init(&device);
        let inputs = Tensor::<3>::random([6, 2, 3], Distribution::Uniform(-1.0, 1.0), &device);
        let (fused, fused_state) = cell.forward_sequence(inputs.clone(), cell.init_state(2));
        assert!(!fused.is_autodiff());
        let (reference, reference_state) = step_by_step(&cell, inputs, cell.init_state(2));
        assert_close(
            host_values::<f32, _>(fused),
            host_values::<f32, _>(reference),
            "outputs",
        );
        assert_close(
            host_values::<f32, _>(fused_state.synaptic),
            host_values::<f32, _>(reference_state.synaptic),
            "F",
        );
    }

    /// The recurrent STPN parity cases pass through the fused path (float32 tolerances).
    #[test]
    fn golden_stpn_cases_through_the_fused_path() {
        let stems = [
            "stpn_f_norm",
            "stpn_f_nonorm_clamp",
            "art_stpn_f",
            "stpn_r_pre",
            "stpn_r_scalar",
            "stpn_r_post_clamp",
            "stpn_r_post_clamp_strong",
            "art_stpn_r",
        ];
        for file in stems
            .iter()
            .flat_map(|stem| golden::SIZES.map(|size| format!("{stem}_{size}.json")))
        {
            let case = ParityCase::from_file(golden::directory().join(&file)).unwrap();
            for backend in Backend::compiled_cpu() {
                let report =
                    run_case_with(&case, &backend.device().unwrap(), Precision::Float32, true)
                        .unwrap();
                assert!(
                    report.passed(),
                    "{file} fused on {backend}:\n{}",
                    golden::describe(&report)
                );
            }
        }
    }
}
