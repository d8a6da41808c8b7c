//! The CubeCL kernel ([`super::cube`]) as one node of Burn's autodiff graph on the cube backend
//! (`Autodiff<Cube>`, wgpu here), with or without gradient checkpointing; forward only on a cube
//! device without autodiff.
//!
//! Everything stays on the device: the node saves the parameters, the inputs and the forward's
//! checkpoints as device tensors, and its backward is one kernel launch followed by a reduction
//! over the batch. As on the host ([`super::autodiff`]), the outputs and the final state travel
//! packed in one flat tensor, split afterwards with differentiable `narrow` and `reshape`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Cube, DispatchKindConversion, DispatchTensor};
use burn::tensor::Tensor;
use burn_cubecl::tensor::CubeTensor;

use super::KernelConfig;
use super::autodiff::OpInputs;
use super::cube::{Launch, Placement, prepared};

/// What the backward needs: the launch (parameters and inputs on the device) and the
/// checkpoints.
#[derive(Clone, Debug)]
struct Saved {
    launch: Launch,
    checkpoints: CubeTensor,
}

#[derive(Debug)]
struct CubeStpnBackward;

impl Backward<Cube, 7> for CubeStpnBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [inputs, hidden, synaptic, weight, bias, lambda, gamma] = ops.parents;
        let grad_packed = grads.consume::<Cube>(&ops.node);
        let Saved {
            launch,
            checkpoints,
        } = ops.state;
        let gradients = launch.backward(checkpoints, grad_packed);
        for (node, gradient) in [
            (inputs, gradients.inputs),
            (hidden, gradients.hidden),
            (synaptic, gradients.synaptic),
            (weight, gradients.weight),
            (bias, gradients.bias),
            (lambda, gradients.lambda),
            (gamma, gradients.gamma),
        ] {
            if let Some(node) = node {
                grads.register::<Cube>(node.id, gradient);
            }
        }
    }
}

fn launch(
    config: KernelConfig,
    tensors: &OpInputs,
    primitives: [CubeTensor; 5],
    placement: Placement,
) -> Launch {
    let [steps, batch, _] = tensors.inputs.dims();
    let [inputs, weight, bias, lambda, gamma] = primitives.map(prepared);
    Launch {
        config,
        steps,
        batch,
        inputs,
        weight,
        bias,
        lambda,
        gamma,
        placement,
    }
}

/// Registers the node on `Autodiff<Cube, C>` if the tensors live there.
fn try_autodiff<C: CheckpointStrategy>(
    config: KernelConfig,
    tensors: &OpInputs,
    placement: Placement,
) -> Option<Tensor<1>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Cube, C>>,
{
    let primitives = tensors.autodiff_primitives::<Cube, C>()?;
    // The node's parents, in the order of its gradients.
    let parents = primitives.each_ref().map(|primitive| primitive.node());
    let [inputs, hidden, synaptic, weight, bias, lambda, gamma] = primitives;
    let launch = launch(
        config,
        tensors,
        [
            inputs.primitive().clone(),
            weight.primitive().clone(),
            bias.primitive().clone(),
            lambda.primitive().clone(),
            gamma.primitive().clone(),
        ],
        placement,
    );
    let forward = launch.forward(
        hidden.primitive().clone(),
        synaptic.primitive().clone(),
        true,
    );
    let prepared = <CubeStpnBackward as Backward<Cube, 7>>::prepare::<C>(CubeStpnBackward, parents);
    let output = match prepared.compute_bound().stateful() {
        OpsKind::Tracked(prepared) => prepared.finish(
            Saved {
                launch,
                checkpoints: forward.checkpoints,
            },
            forward.packed,
        ),
        OpsKind::UnTracked(prepared) => prepared.finish(forward.packed),
    };
    Some(Tensor::from_primitive::<Autodiff<Cube, C>>(output))
}

/// The forward alone, on a cube device without autodiff.
fn try_forward(
    config: KernelConfig,
    tensors: &OpInputs,
    placement: Placement,
) -> Option<Tensor<1>> {
    let convert3 = |t: &Tensor<3>| t.clone().try_into_primitive::<Cube>().ok();
    let convert2 = |t: &Tensor<2>| t.clone().try_into_primitive::<Cube>().ok();
    let inputs = convert3(&tensors.inputs)?;
    let hidden = convert2(&tensors.hidden)?;
    let synaptic = convert3(&tensors.synaptic)?;
    let weight = convert2(&tensors.weight)?;
    let bias = tensors.bias.clone().try_into_primitive::<Cube>().ok()?;
    let lambda = convert2(&tensors.lambda)?;
    let gamma = convert2(&tensors.gamma)?;
    let launch = launch(
        config,
        tensors,
        [inputs, weight, bias, lambda, gamma],
        placement,
    );
    let forward = launch.forward(hidden, synaptic, false);
    Some(Tensor::from_primitive::<Cube>(forward.packed))
}

/// Whether `tensor` lives on a cube device (with or without autodiff).
pub fn available(tensor: &Tensor<2>) -> bool {
    tensor
        .clone()
        .without_autodiff()
        .try_into_primitive::<Cube>()
        .is_ok()
}

/// Runs the kernel on the op's tensors, all on one cube device: the packed outputs, final hidden
/// and final synaptic states, as one flat tensor (differentiable on an autodiff device). `None`
/// when the tensors are not on a cube device.
pub(super) fn run(
    config: KernelConfig,
    tensors: OpInputs,
    placement: Placement,
) -> Option<Tensor<1>> {
    if tensors.is_autodiff() {
        // Inputs made outside autodiff enter as constants.
        let tensors = tensors.autodiff();
        try_autodiff::<NoCheckpointing>(config, &tensors, placement)
            .or_else(|| try_autodiff::<BalancedCheckpointing>(config, &tensors, placement))
    } else {
        try_forward(config, &tensors, placement)
    }
}
