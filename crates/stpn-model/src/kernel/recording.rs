//! The kernel's forward driven one step at a time, for a rollout that acts between steps, keeping
//! what the sequence forward keeps for the backward (the checkpoints and every step's record).
//! An update whose loss runs the same inputs through the same parameters (the maze's A2C, which
//! backpropagates through the episodes it just played) then starts its backward from the recording
//! ([`super::autodiff::run_kernel_recorded`]) instead of running the forward a second time; and
//! the rollout's states stay in place on the host instead of passing through tensors at every
//! step.
//!
//! The numbers are those of [`super::forward`] to the bit: the same step, element by element.

use super::cpu::{Kernel, KernelFloat, StepShare, checkpoint_interval, with_fixed_width};
use super::options::{Checkpoints, ForwardOutput, KernelConfig, Parameters};
use super::threads::{chunks, split_rows, step_shares, zeroed_output};

/// A forward in progress over `steps` steps of a batch, fed one step's inputs at a time
/// ([`Self::step`]).
#[derive(Clone, Debug)]
pub struct Recording<F> {
    pub(super) config: KernelConfig,
    pub(super) weight: Vec<F>,
    pub(super) bias: Vec<F>,
    pub(super) lambda: Vec<F>,
    pub(super) gamma: Vec<F>,
    pub(super) steps: usize,
    pub(super) batch: usize,
    /// Steps taken so far.
    pub(super) taken: usize,
    /// The inputs of the steps taken, `[taken, B, I]`.
    pub(super) inputs: Vec<F>,
    /// The state the forward started from, `[B, H]` and `[B, H, P]`.
    pub(super) initial_hidden: Vec<F>,
    pub(super) initial_synaptic: Vec<F>,
    /// The current state, `[B, H]` and `[B, H, P]`, and room for the next `F`.
    hidden: Vec<F>,
    synaptic: Vec<F>,
    spare: Vec<F>,
    /// The outputs so far and what the backward starts from, as [`super::forward`] returns them
    /// (the final state is written by [`Self::finish`]).
    pub(super) output: ForwardOutput<F>,
}

impl<F: KernelFloat> Recording<F> {
    /// A forward of `steps` steps with `parameters`, from the state `initial_hidden` (`[B, H]`)
    /// and `initial_synaptic` (`[B, H, P]`).
    pub fn new(
        config: KernelConfig,
        parameters: Parameters<'_, F>,
        steps: usize,
        initial_hidden: Vec<F>,
        initial_synaptic: Vec<F>,
    ) -> Self {
        let (units, width) = (config.hidden_size, config.presynaptic_size());
        assert!(steps > 0, "a recording of at least one step");
        assert_eq!(
            initial_hidden.len() % units,
            0,
            "the hidden state is [B, {units}]"
        );
        let batch = initial_hidden.len() / units;
        assert_eq!(
            initial_synaptic.len(),
            batch * units * width,
            "the synaptic state is [B, {units}, {width}]"
        );
        let interval = checkpoint_interval(steps);
        let kernel = Kernel::new(config, parameters);
        let state_size = units + units * width;
        let checkpoints = Checkpoints {
            interval,
            states: vec![F::zero(); batch * steps.div_ceil(interval) * state_size],
            records: vec![F::zero(); batch * steps * kernel.record_size()],
            lanes: false,
        };
        Self {
            config,
            weight: parameters.weight.to_vec(),
            bias: parameters.bias.to_vec(),
            lambda: parameters.lambda.to_vec(),
            gamma: parameters.gamma.to_vec(),
            steps,
            batch,
            taken: 0,
            inputs: Vec::with_capacity(steps * batch * config.input_size),
            hidden: initial_hidden.clone(),
            synaptic: initial_synaptic.clone(),
            spare: vec![F::zero(); initial_synaptic.len()],
            initial_hidden,
            initial_synaptic,
            output: zeroed_output(config, (steps, batch), checkpoints),
        }
    }

    /// The next step on `inputs` (`[B, I]`): returns `h_t`, `[B, H]`. Panics after the last
    /// step or on inputs of another size.
    pub fn step(&mut self, inputs: &[F]) -> &[F] {
        let config = self.config;
        let (units, width) = (config.hidden_size, config.presynaptic_size());
        let (steps, batch, step) = (self.steps, self.batch, self.taken);
        assert!(step < steps, "the recording's {steps} steps are taken");
        assert_eq!(
            inputs.len(),
            batch * config.input_size,
            "one step's inputs are [B, I]"
        );
        self.inputs.extend_from_slice(inputs);
        // Field by field, not through a method: the shares below borrow other fields mutably.
        let kernel = Kernel::new(
            config,
            Parameters {
                weight: &self.weight,
                bias: &self.bias,
                lambda: &self.lambda,
                gamma: &self.gamma,
            },
        );
        let row = units * width;
        let slots = steps.div_ceil(self.output.checkpoints.interval);
        let ranges = chunks(batch, row);
        let shares: Vec<StepShare<'_, F>> = ranges
            .iter()
            .zip(split_rows(&ranges, units, &mut self.hidden))
            .zip(split_rows(&ranges, row, &mut self.spare))
            .zip(split_rows(
                &ranges,
                slots * (units + row),
                &mut self.output.checkpoints.states,
            ))
            .zip(split_rows(
                &ranges,
                steps * kernel.record_size(),
                &mut self.output.checkpoints.records,
            ))
            .map(
                |((((range, hidden), synaptic), states), records)| StepShare {
                    synaptic_prev: &self.synaptic[range.start * row..range.end * row],
                    range: range.clone(),
                    hidden,
                    synaptic,
                    states,
                    records,
                },
            )
            .collect();
        let position = (step, steps, self.output.checkpoints.interval);
        with_fixed_width!(kernel, fixed => step_shares(fixed, inputs, position, shares));
        std::mem::swap(&mut self.synaptic, &mut self.spare);
        self.output.packed[step * batch * units..(step + 1) * batch * units]
            .copy_from_slice(&self.hidden);
        self.taken += 1;
        &self.hidden
    }

    /// Whether every step has been taken.
    pub fn is_complete(&self) -> bool {
        self.taken == self.steps
    }

    /// The forward's output once every step is taken: what [`super::forward`] with checkpoints
    /// returns for the same inputs. Panics before the last step.
    pub(super) fn finish(mut self) -> (Self, ForwardOutput<F>) {
        assert!(
            self.is_complete(),
            "a recording finishes after its {} steps",
            self.steps
        );
        let empty = ForwardOutput {
            packed: Vec::new(),
            hidden_start: 0,
            synaptic_start: 0,
            checkpoints: Checkpoints {
                interval: 0,
                states: Vec::new(),
                records: Vec::new(),
                lanes: false,
            },
        };
        let mut output = std::mem::replace(&mut self.output, empty);
        let (start, synaptic_start) = (output.hidden_start, output.synaptic_start);
        output.packed[start..synaptic_start].copy_from_slice(&self.hidden);
        output.packed[synaptic_start..].copy_from_slice(&self.synaptic);
        (self, output)
    }
}
