//! The common interface of every recurrent cell and the helper that runs one over a sequence.

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;

use crate::kernel::autodiff::KernelCell;

/// The recurrent state of a cell.
pub trait CellState: Clone + Send {
    /// The state's tensors under the names of the reference's parity files (`h`, `c`, `F`,
    /// `hebb`), each as a rank-3 tensor (`[B, H]` states become `[B, H, 1]`).
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)>;

    /// The same state cut from the autodiff graph (truncated backpropagation through time).
    fn detach(self) -> Self;

    /// The states of several batches as one batch, in order (along the batch dimension): how
    /// recurrent RL batches sequences that start from stored states.
    fn cat(states: Vec<Self>) -> Self;

    /// Batch element `index` alone, as a batch of one.
    fn row(&self, index: usize) -> Self;

    /// The state with the batch elements where `keep` (`[B]`, 1 or 0) is 0 set to the initial
    /// (zero) state: episodes that ended restart while the others continue.
    fn zero_rows(self, keep: &Tensor<1>) -> Self;
}

/// `tensor` (`[B, …]`) times `keep` (`[B]`) broadcast over the other dimensions.
pub fn keep_rows<const D: usize>(tensor: Tensor<D>, keep: &Tensor<1>) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[0] = keep.dims()[0];
    tensor * keep.clone().reshape(shape)
}

/// A recurrent cell: one time step of a network layer with a state carried between steps.
pub trait RecurrentCell: Module + ModuleDisplay {
    /// What the cell carries from one step to the next.
    type State: CellState;

    /// Size of the external input `x_t`.
    fn input_size(&self) -> usize;

    /// Number of output (hidden) units.
    fn hidden_size(&self) -> usize;

    /// Number of units the energy is reported for: `H`, or `4H` gate rows for the LSTM.
    fn energy_units(&self) -> usize {
        self.hidden_size()
    }

    /// The all-zero state of a batch, on the device and in the float type of the parameters.
    fn init_state(&self, batch: usize) -> Self::State;

    /// One step: `input` is `[B, I]`; returns the activated output `[B, H]` and the new state.
    fn step(&self, input: Tensor<2>, state: Self::State) -> (Tensor<2>, Self::State);

    /// Runs a whole sequence `[T, B, I]` from `state`: the outputs `[T, B, H]` and the final
    /// state. Step by step unless the cell has a faster (fused) path.
    fn forward_sequence(&self, inputs: Tensor<3>, state: Self::State) -> (Tensor<3>, Self::State) {
        step_by_step(self, inputs, state)
    }

    /// The outputs `[T, B, H]` of sequences padded at their ends, batch element `b` having
    /// `lengths[b] ≤ T` real steps: exact at the real steps; at the padded ones unspecified
    /// (zero where the cell skips them), so callers must mask them out of every loss. The whole
    /// padded sequence runs unless the cell has a faster path.
    fn forward_padded(
        &self,
        inputs: Tensor<3>,
        state: Self::State,
        lengths: &[usize],
    ) -> Tensor<3> {
        let _ = lengths;
        self.forward_sequence(inputs, state).0
    }

    /// Energy of each unit for the step that `input` and `state` are about to make,
    /// `[B, energy_units]` (docs/reference.md §2): computed from the state entering the step, outside the
    /// autodiff graph, biases and heads excluded.
    fn energy(&self, input: Tensor<2>, state: &Self::State) -> Tensor<2>;

    /// The cell as the host kernel computes it (its options and parameters), when its sequences
    /// run there (STPNr and STPNf on flex or ndarray): a rollout may then drive the kernel one step
    /// at a time and hand the update its forward ([`crate::kernel::Recording`]). `None` otherwise.
    fn host_kernel(&self) -> Option<KernelCell> {
        None
    }
}

/// The result of [`run_sequence`].
#[derive(Clone, Debug)]
pub struct SequenceOutput<S> {
    /// Activated output of every step, `[T, B, H]`.
    pub outputs: Tensor<3>,
    /// Energy of every unit at every step, `[T, B, energy_units]`, when asked for.
    pub energy: Option<Tensor<3>>,
    /// The state after the last step.
    pub final_state: S,
}

/// The op-by-op path of [`RecurrentCell::forward_sequence`]: [`RecurrentCell::step`] in a loop.
pub fn step_by_step<C: RecurrentCell>(
    cell: &C,
    inputs: Tensor<3>,
    state: C::State,
) -> (Tensor<3>, C::State) {
    let sequence = unroll(cell, inputs, state, false);
    (sequence.outputs, sequence.final_state)
}

/// [`RecurrentCell::step`] over every step, with the energy of each step when asked for.
fn unroll<C: RecurrentCell>(
    cell: &C,
    inputs: Tensor<3>,
    state: C::State,
    with_energy: bool,
) -> SequenceOutput<C::State> {
    let [steps, batch, input_size] = inputs.dims();
    let mut state = state;
    let mut outputs = Vec::with_capacity(steps);
    let mut energies = Vec::with_capacity(if with_energy { steps } else { 0 });
    for step in 0..steps {
        let input = inputs
            .clone()
            .narrow(0, step, 1)
            .reshape([batch, input_size]);
        if with_energy {
            energies.push(cell.energy(input.clone(), &state));
        }
        let (output, next) = cell.step(input, state);
        outputs.push(output);
        state = next;
    }
    SequenceOutput {
        outputs: Tensor::stack(outputs, 0),
        energy: with_energy.then(|| Tensor::stack(energies, 0)),
        final_state: state,
    }
}

/// Runs `cell` over a time-major input sequence `[T, B, I]` from `state`. With energy, the
/// energy of every step is computed from the state entering it, which the step-by-step path
/// provides; without, the cell's own [`RecurrentCell::forward_sequence`] runs (fused where the
/// cell has a fused path).
pub fn run_sequence<C: RecurrentCell>(
    cell: &C,
    inputs: Tensor<3>,
    state: C::State,
    with_energy: bool,
) -> SequenceOutput<C::State> {
    if with_energy {
        return unroll(cell, inputs, state, true);
    }
    let (outputs, final_state) = cell.forward_sequence(inputs, state);
    SequenceOutput {
        outputs,
        energy: None,
        final_state,
    }
}
