//! The LSTM's recurrence as one host operation of the autodiff graph, for [`crate::Lstm`]'s
//! sequences on the CPU backends. The input projection `x_t W_xᵀ + b` of every step is one
//! matrix product before it (Burn's, differentiable as usual); the operation runs the steps
//!
//! ```text
//! [i; f; g; o] = p_t + W_h h_{t-1}          (p_t: the projected input of step t)
//! c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
//! h_t = σ(o) ⊙ tanh(c_t)
//! ```
//!
//! and their exact backward through time. Op by op, each step is a dozen small tensor operations
//! forward and as many backward, which dominate short-hidden LSTMs on long sequences (the
//! familiarity stream: 5 000 steps of a 21-unit cell); here a step is a few loops over `4H × H`
//! numbers. Batch elements are independent and run on threads. Layouts: projected inputs
//! `[T, B, 4H]`, outputs `[T, B, H]`, states `[B, H]`, `W_h` `[4H, H]`; gate blocks `i, f, g, o`.

use burn::tensor::Tensor;

use super::autodiff::{HostBackward, host_node, unpack};
use super::options::Activation::{Sigmoid, Tanh};
use super::threads::{chunks, on_threads};
use crate::params::host_values;

/// What the backward needs, element-major (`[B, T, …]`) so that each thread's share is one
/// contiguous block.
#[derive(Clone, Debug)]
struct LstmTape {
    steps: usize,
    batch: usize,
    units: usize,
    recurrent_weight: Vec<f32>,
    initial_hidden: Vec<f32>,
    initial_cell: Vec<f32>,
    lengths: Vec<usize>,
    /// `σ(i), σ(f), tanh(g), σ(o)` of every step, `[B, T, 4H]`.
    gates: Vec<f32>,
    /// `c_t`, `[B, T, H]`.
    cells: Vec<f32>,
    /// `tanh(c_t)`, `[B, T, H]`.
    cell_tanh: Vec<f32>,
    /// `h_t`, `[B, T, H]`.
    hidden: Vec<f32>,
}

impl LstmTape {
    fn length(&self, element: usize) -> usize {
        self.lengths.get(element).copied().unwrap_or(self.steps)
    }

    /// The batch split over the threads: an element's work is `T` products by the `4H × H`
    /// recurrent weight, counted as the STPN kernel counts its synapse-steps.
    fn shares(&self) -> Vec<std::ops::Range<usize>> {
        chunks(self.batch, self.steps * 4 * self.units * self.units)
    }
}

/// One thread's forward: elements `range`, element-major results.
struct ForwardShare {
    gates: Vec<f32>,
    cells: Vec<f32>,
    cell_tanh: Vec<f32>,
    hidden: Vec<f32>,
    final_hidden: Vec<f32>,
    final_cell: Vec<f32>,
}

fn forward_share(
    tape: &LstmTape,
    projected: &[f32],
    range: std::ops::Range<usize>,
) -> ForwardShare {
    let (steps, batch, units) = (tape.steps, tape.batch, tape.units);
    let gate_size = 4 * units;
    let count = range.len();
    let mut share = ForwardShare {
        gates: vec![0.0; count * steps * gate_size],
        cells: vec![0.0; count * steps * units],
        cell_tanh: vec![0.0; count * steps * units],
        hidden: vec![0.0; count * steps * units],
        final_hidden: vec![0.0; count * units],
        final_cell: vec![0.0; count * units],
    };
    let mut preactivation = vec![0f32; gate_size];
    for (local, element) in range.enumerate() {
        let state = element * units..(element + 1) * units;
        let mut hidden = tape.initial_hidden[state.clone()].to_vec();
        let mut cell = tape.initial_cell[state].to_vec();
        for step in 0..tape.length(element) {
            let input = &projected[(step * batch + element) * gate_size..][..gate_size];
            for (row, value) in preactivation.iter_mut().enumerate() {
                let weights = &tape.recurrent_weight[row * units..(row + 1) * units];
                *value = input[row] + weights.iter().zip(&hidden).map(|(w, h)| w * h).sum::<f32>();
            }
            // The gates through their nonlinearities, as the op-by-op cell computes them.
            Sigmoid.apply_in_place(&mut preactivation[..2 * units]);
            Tanh.apply_in_place(&mut preactivation[2 * units..3 * units]);
            Sigmoid.apply_in_place(&mut preactivation[3 * units..]);
            let at = (local * steps + step) * units;
            share.gates[(local * steps + step) * gate_size..][..gate_size]
                .copy_from_slice(&preactivation);
            let (input_gate, rest) = preactivation.split_at(units);
            let (forget_gate, rest) = rest.split_at(units);
            let (candidate, output_gate) = rest.split_at(units);
            for unit in 0..units {
                cell[unit] = forget_gate[unit] * cell[unit] + input_gate[unit] * candidate[unit];
            }
            let cell_tanh = &mut share.cell_tanh[at..at + units];
            cell_tanh.copy_from_slice(&cell);
            Tanh.apply_in_place(cell_tanh);
            for unit in 0..units {
                hidden[unit] = output_gate[unit] * cell_tanh[unit];
            }
            share.cells[at..at + units].copy_from_slice(&cell);
            share.hidden[at..at + units].copy_from_slice(&hidden);
        }
        share.final_hidden[local * units..(local + 1) * units].copy_from_slice(&hidden);
        share.final_cell[local * units..(local + 1) * units].copy_from_slice(&cell);
    }
    share
}

/// One thread's backward: the gradients of its elements' projected inputs (element-major) and
/// initial states, and its share of `W_h`'s gradient.
struct BackwardShare {
    projected: Vec<f32>,
    initial_hidden: Vec<f32>,
    initial_cell: Vec<f32>,
    recurrent_weight: Vec<f32>,
}

fn backward_share(
    tape: &LstmTape,
    output_gradient: &[f32],
    range: std::ops::Range<usize>,
) -> BackwardShare {
    let (steps, batch, units) = (tape.steps, tape.batch, tape.units);
    let gate_size = 4 * units;
    let count = range.len();
    let outputs_end = steps * batch * units;
    let mut share = BackwardShare {
        projected: vec![0.0; count * steps * gate_size],
        initial_hidden: vec![0.0; count * units],
        initial_cell: vec![0.0; count * units],
        recurrent_weight: vec![0.0; gate_size * units],
    };
    for (local, element) in range.enumerate() {
        let state = element * units..(element + 1) * units;
        // The final state's gradients enter at the element's last step.
        let mut grad_hidden = output_gradient[outputs_end..][state.clone()].to_vec();
        let mut grad_cell = output_gradient[outputs_end + batch * units..][state.clone()].to_vec();
        for step in (0..tape.length(element)).rev() {
            let at = (element * steps + step) * units;
            let output = &output_gradient[(step * batch + element) * units..][..units];
            for (grad, extra) in grad_hidden.iter_mut().zip(output) {
                *grad += extra;
            }
            let gates = &tape.gates[(element * steps + step) * gate_size..][..gate_size];
            let cell_prev = if step == 0 {
                &tape.initial_cell[state.clone()]
            } else {
                &tape.cells[at - units..at]
            };
            let hidden_prev = if step == 0 {
                &tape.initial_hidden[state.clone()]
            } else {
                &tape.hidden[at - units..at]
            };
            let grad_gates =
                &mut share.projected[(local * steps + step) * gate_size..][..gate_size];
            for unit in 0..units {
                let (input_gate, forget_gate) = (gates[unit], gates[units + unit]);
                let (candidate, output_gate) = (gates[2 * units + unit], gates[3 * units + unit]);
                let squashed = tape.cell_tanh[at + unit];
                let grad_output_gate = grad_hidden[unit] * squashed;
                let grad_c =
                    grad_cell[unit] + grad_hidden[unit] * output_gate * Tanh.derivative(squashed);
                grad_gates[unit] = grad_c * candidate * Sigmoid.derivative(input_gate);
                grad_gates[units + unit] =
                    grad_c * cell_prev[unit] * Sigmoid.derivative(forget_gate);
                grad_gates[2 * units + unit] = grad_c * input_gate * Tanh.derivative(candidate);
                grad_gates[3 * units + unit] = grad_output_gate * Sigmoid.derivative(output_gate);
                grad_cell[unit] = grad_c * forget_gate;
            }
            // W_h's gradient, and h_{t-1}'s through W_h.
            grad_hidden.iter_mut().for_each(|grad| *grad = 0.0);
            for (row, &grad_gate) in grad_gates.iter().enumerate() {
                let weights = &tape.recurrent_weight[row * units..(row + 1) * units];
                let grad_weights = &mut share.recurrent_weight[row * units..(row + 1) * units];
                for unit in 0..units {
                    grad_weights[unit] += grad_gate * hidden_prev[unit];
                    grad_hidden[unit] += grad_gate * weights[unit];
                }
            }
        }
        share.initial_hidden[local * units..(local + 1) * units].copy_from_slice(&grad_hidden);
        share.initial_cell[local * units..(local + 1) * units].copy_from_slice(&grad_cell);
    }
    share
}

/// `[B, T, X]` (element-major) to `[T, B, X]`.
fn time_major(values: &[f32], batch: usize, steps: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for element in 0..batch {
        for step in 0..steps {
            let from = (element * steps + step) * width;
            let to = (step * batch + element) * width;
            out[to..to + width].copy_from_slice(&values[from..from + width]);
        }
    }
    out
}

impl HostBackward<4> for LstmTape {
    fn gradients(self, output_gradient: Vec<f32>, needed: [bool; 4]) -> [Option<Vec<f32>>; 4] {
        if !needed.iter().any(|&need| need) {
            return [None, None, None, None];
        }
        let (steps, batch, units) = (self.steps, self.batch, self.units);
        let results = on_threads(self.shares(), |range| {
            backward_share(&self, &output_gradient, range)
        });
        let mut projected = Vec::with_capacity(batch * steps * 4 * units);
        let (mut initial_hidden, mut initial_cell) = (Vec::new(), Vec::new());
        let mut recurrent_weight = vec![0f32; 4 * units * units];
        for share in results {
            projected.extend(share.projected);
            initial_hidden.extend(share.initial_hidden);
            initial_cell.extend(share.initial_cell);
            for (total, part) in recurrent_weight.iter_mut().zip(share.recurrent_weight) {
                *total += part;
            }
        }
        [
            Some(time_major(&projected, batch, steps, 4 * units)),
            Some(initial_hidden),
            Some(initial_cell),
            Some(recurrent_weight),
        ]
    }
}

/// The LSTM's steps over the projected inputs `[T, B, 4H]` from `(h_0, c_0)` (`[B, H]` each) with
/// the recurrent weight `[4H, H]`: the outputs `[T, B, H]` and the final `h` and `c`, all
/// differentiable on an autodiff device. With `lengths` (`[B]`, empty for all `T`), element `b`
/// stops after its own steps: zero outputs beyond, the final state the one after its last step.
/// Flex and ndarray only ([`super::autodiff::on_host`]).
pub fn lstm_recurrence(
    projected: Tensor<3>,
    hidden: Tensor<2>,
    cell: Tensor<2>,
    recurrent_weight: Tensor<2>,
    lengths: &[usize],
) -> (Tensor<3>, Tensor<2>, Tensor<2>) {
    let [steps, batch, gate_size] = projected.dims();
    let units = gate_size / 4;
    assert_eq!(
        recurrent_weight.dims(),
        [gate_size, units],
        "W_h is [4H, H]"
    );
    assert!(
        lengths.is_empty() || (lengths.len() == batch && lengths.iter().all(|&l| l <= steps)),
        "one length per batch element, each at most the {steps} steps"
    );
    let projected_values = host_values::<f32, 3>(projected.clone());
    let mut tape = LstmTape {
        steps,
        batch,
        units,
        recurrent_weight: host_values(recurrent_weight.clone()),
        initial_hidden: host_values(hidden.clone()),
        initial_cell: host_values(cell.clone()),
        lengths: lengths.to_vec(),
        gates: Vec::new(),
        cells: Vec::new(),
        cell_tanh: Vec::new(),
        hidden: Vec::new(),
    };
    let results = on_threads(tape.shares(), |range| {
        forward_share(&tape, &projected_values, range)
    });
    let (mut final_hidden, mut final_cell) = (Vec::new(), Vec::new());
    for share in results {
        tape.gates.extend(share.gates);
        tape.cells.extend(share.cells);
        tape.cell_tanh.extend(share.cell_tanh);
        tape.hidden.extend(share.hidden);
        final_hidden.extend(share.final_hidden);
        final_cell.extend(share.final_cell);
    }
    // Packed: outputs, final h, final c (the node has one output).
    let mut packed = time_major(&tape.hidden, batch, steps, units);
    packed.extend(final_hidden);
    packed.extend(final_cell);
    let parents = [
        projected.flatten(0, 2),
        hidden.flatten(0, 1),
        cell.flatten(0, 1),
        recurrent_weight.flatten(0, 1),
    ];
    let packed = host_node(parents, packed, tape);
    // Packed as the STPN op's output, with a cell state one number wide in place of F.
    let (outputs, final_hidden, final_cell) = unpack(packed, steps, batch, units, 1);
    (outputs, final_hidden, final_cell.reshape([batch, units]))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use crate::cell::{CellState, RecurrentCell, step_by_step};
    use crate::kernel::autodiff::tests::assert_close;
    use crate::params::{host_values, named_gradients};
    use crate::{Backend, Lstm, LstmConfig, LstmState};

    /// The values and gradients of a loss on each element's outputs and (whole sequences) final
    /// state, through the host recurrence (`fused`) or [`RecurrentCell::step`] in a loop over
    /// each element alone (with `lengths`, over its own steps).
    fn run(
        cell: &Lstm,
        inputs: &Tensor<3>,
        state: &LstmState,
        lengths: &[usize],
        fused: bool,
    ) -> Vec<(String, Vec<f32>)> {
        let [steps, batch, _] = inputs.dims();
        let inputs = inputs.clone().require_grad();
        let state = LstmState {
            hidden: state.hidden.clone().require_grad(),
            cell: state.cell.clone().require_grad(),
        };
        let padded = !lengths.is_empty();
        let length = |element: usize| if padded { lengths[element] } else { steps };
        let per_element: Vec<(Tensor<3>, Option<LstmState>)> = if fused && padded {
            let outputs = cell.forward_padded(inputs.clone(), state.clone(), lengths);
            (0..batch)
                .map(|e| {
                    (
                        outputs.clone().narrow(1, e, 1).narrow(0, 0, length(e)),
                        None,
                    )
                })
                .collect()
        } else if fused {
            let (outputs, last) = cell.forward_sequence(inputs.clone(), state.clone());
            (0..batch)
                .map(|e| (outputs.clone().narrow(1, e, 1), Some(last.row(e))))
                .collect()
        } else {
            (0..batch)
                .map(|e| {
                    let alone = inputs.clone().narrow(0, 0, length(e)).narrow(1, e, 1);
                    let (outputs, last) = step_by_step(cell, alone, state.row(e));
                    (outputs, (!padded).then_some(last))
                })
                .collect()
        };
        let mut values = Vec::new();
        let mut loss = Tensor::<1>::zeros([1], &inputs.device());
        for (element, (outputs, last)) in per_element.into_iter().enumerate() {
            values.extend(host_values::<f32, 3>(outputs.clone()));
            loss = loss
                + (outputs.clone() * outputs.clone())
                    .sum()
                    .mul_scalar(1.0 + 0.1 * element as f64)
                + outputs.narrow(0, 0, 1).sum();
            if let Some(last) = last {
                values.extend(host_values::<f32, 2>(last.hidden.clone()));
                values.extend(host_values::<f32, 2>(last.cell.clone()));
                loss = loss
                    + last.hidden.sum().mul_scalar(0.5)
                    + (last.cell.clone() * last.cell).sum();
            }
        }
        let gradients = loss.backward();
        let mut found = vec![("values".to_string(), values)];
        for (name, gradient) in named_gradients(cell, &gradients) {
            let values = gradient
                .unwrap()
                .values
                .into_iter()
                .map(|v| v as f32)
                .collect();
            found.push((name, values));
        }
        found.push((
            "inputs".into(),
            host_values(inputs.grad(&gradients).unwrap()),
        ));
        found.push((
            "h0".into(),
            host_values(state.hidden.grad(&gradients).unwrap()),
        ));
        found.push((
            "c0".into(),
            host_values(state.cell.grad(&gradients).unwrap()),
        ));
        found
    }

    /// The host recurrence gives the op-by-op cell's outputs, final states and gradients (to
    /// the weight, both biases, the inputs and the initial state), over whole and padded
    /// sequences, on one thread and on several, on every compiled CPU backend.
    #[test]
    fn host_recurrence_matches_the_op_by_op_cell() {
        for backend in Backend::compiled_cpu() {
            // (inputs, units, batch, steps): the second is large enough to use the threads.
            for (inputs_size, units, batch, steps) in [(5, 4, 3, 7), (9, 24, 8, 60)] {
                let device = backend.device().unwrap().autodiff();
                device.seed(11);
                let cell = LstmConfig::new(inputs_size, units)
                    .with_two_biases(true)
                    .init(&device);
                let inputs = Tensor::<3>::random(
                    [steps, batch, inputs_size],
                    Distribution::Uniform(-1.0, 1.0),
                    &device,
                );
                let state = LstmState {
                    hidden: Tensor::random(
                        [batch, units],
                        Distribution::Uniform(-0.5, 0.5),
                        &device,
                    ),
                    cell: Tensor::random([batch, units], Distribution::Uniform(-0.5, 0.5), &device),
                };
                let padded: Vec<usize> = (0..batch).map(|b| steps - (b * 3) % steps).collect();
                for lengths in [Vec::new(), padded] {
                    let fused = run(&cell, &inputs, &state, &lengths, true);
                    let reference = run(&cell, &inputs, &state, &lengths, false);
                    assert_eq!(fused.len(), 7, "values, three parameters, inputs, h0, c0");
                    for ((name, ours), (their_name, theirs)) in fused.into_iter().zip(reference) {
                        assert_eq!(name, their_name);
                        assert_close(
                            ours,
                            theirs,
                            &format!("{backend} H {units} lengths {lengths:?}: {name}"),
                        );
                    }
                }
            }
        }
    }
}
