//! The networks of the continual familiarity task (Tyulmankov et al. 2022, as the STPN authors
//! run it; docs/reference.md §6.2): a recurrent cell reads one ±1 item per step and a single sigmoid unit
//! answers "seen `R` steps ago" (1) or "novel" (0) at every step.
//!
//! ```text
//! y_t = σ(w₂ · h_t + b₂)          loss = mean_t BCE(y_t, label_t)
//! ```
//!
//! The cells are [`StpnR`] layers with the familiarity code's options and initialisation, or an
//! [`crate::Lstm`]:
//!
//! | network | cell | `h_t` | Λ, Γ |
//! |---|---|---|---|
//! | HebbNet | [`hebbnet_cell`] | `σ(b + (W + A) x_t)`, `A ← λA + η h_t ⊗ x_t` | scalar; λ clamped to [0, 1] |
//! | uSTPNf / STPNf | [`stpn_cell`], not recurrent | `tanh((W + F) x_t / ‖W + F‖ + b)`, F divided by the norm before its update | scalar / per synapse |
//! | uSTPNr / STPNr | [`stpn_cell`], recurrent | the same on `[x_t ; h_{t-1}]` | scalar / per synapse |
//!
//! Initialisation (docs/reference.md §6.2): weights `N(0, 1/fan_in)`, biases `N(0, 1)` (readout included);
//! HebbNet λ = 0.99, η = −5/d; STPN Λ ~ U(0, 1), Γ ~ U(±0.001/√H), except the scalar recurrent
//! network's Γ ~ U(±0.001/H) (no square root, as in the reference).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{RecurrentCell, run_sequence};
use crate::cells::init;
use crate::cells::stpn_r::{Activation, Normalisation, StpnR, StpnRConfig};

/// Configuration of the readout of a [`FamiliarityNet`].
#[derive(Config, Debug)]
pub struct FamiliarityNetConfig {}

/// A cell followed by one sigmoid unit on every step's output.
#[derive(Module, Debug)]
pub struct FamiliarityNet<C> {
    /// The recurrent cell.
    pub cell: C,
    /// Readout weights `w₂`, `[1, H]`.
    pub readout_weight: Param<Tensor<2>>,
    /// Readout bias `b₂`, `[1]`.
    pub readout_bias: Param<Tensor<1>>,
}

impl FamiliarityNetConfig {
    /// Wraps `cell` with a readout drawn as the reference's: `w₂ ~ N(0, 1/H)`, `b₂ ~ N(0, 1)`.
    pub fn init<C: RecurrentCell>(&self, cell: C, device: &Device) -> FamiliarityNet<C> {
        let hidden = cell.hidden_size();
        FamiliarityNet {
            cell,
            readout_weight: init::normal([1, hidden], 1.0 / (hidden as f64).sqrt(), device),
            readout_bias: init::normal([1], 1.0, device),
        }
    }
}

impl<C: RecurrentCell> FamiliarityNet<C> {
    /// The logit of "familiar" at every step of the streams `[T, B, d]`, from the zero state:
    /// `[T, B]`.
    pub fn forward(&self, items: Tensor<3>) -> Tensor<2> {
        let [steps, batch, _] = items.dims();
        let state = self.cell.init_state(batch);
        let outputs = run_sequence(&self.cell, items, state, false).outputs;
        let hidden = self.cell.hidden_size();
        let logits = outputs
            .reshape([steps * batch, hidden])
            .matmul(self.readout_weight.val().transpose())
            + self.readout_bias.val().unsqueeze_dim::<2>(0);
        logits.reshape([steps, batch])
    }
}

impl FamiliarityNet<StpnR> {
    /// Λ clamped to `[0, 1]`, HebbNet's constraint (the reference clamps in place at every step;
    /// clamping after every optimiser step gives the same forward and gradients). The parameter
    /// keeps its identity, so the optimiser's moments follow it.
    pub fn with_decay_clamped(self) -> Self {
        let cell = self.cell;
        let lambda = cell
            .lambda
            .map(|lambda| lambda.clamp(0.0, 1.0).detach().require_grad());
        Self {
            cell: StpnR { lambda, ..cell },
            ..self
        }
    }
}

/// Tyulmankov's HebbNet (`HebbNet` of the reference) on `d` inputs with `hidden` units:
/// sigmoid units, no normalisation, scalar λ = 0.99 and η = −5/d (keep λ in [0, 1] with
/// [`FamiliarityNet::with_decay_clamped`] after every update).
pub fn hebbnet_cell(input_size: usize, hidden_size: usize, fused: bool, device: &Device) -> StpnR {
    let cell = StpnRConfig::new(input_size, hidden_size)
        .with_per_synapse(false)
        .with_normalisation(Normalisation::Off)
        .with_recurrent(false)
        .with_activation(Activation::Sigmoid)
        .with_fused(fused)
        .init(device);
    StpnR {
        weight: init::normal(
            [hidden_size, input_size],
            1.0 / (input_size as f64).sqrt(),
            device,
        ),
        bias: init::normal([hidden_size], 1.0, device),
        lambda: init::constant([1, 1], 0.99, device),
        gamma: init::constant([1, 1], -5.0 / input_size as f64, device),
        ..cell
    }
}

/// The familiarity code's STPN networks (`STPNfNet`, `uSTPNfNet`, `STPNrNet`, `uSTPNrNet`):
/// tanh units, the efficacy normalised and the stored state divided by the same norm, no clamp.
pub fn stpn_cell(
    input_size: usize,
    hidden_size: usize,
    recurrent: bool,
    per_synapse: bool,
    fused: bool,
    device: &Device,
) -> StpnR {
    let cell = StpnRConfig::new(input_size, hidden_size)
        .with_per_synapse(per_synapse)
        .with_normalisation(Normalisation::Pre)
        .with_recurrent(recurrent)
        .with_fused(fused)
        .init(device);
    let fan_in = cell.presynaptic_size();
    let plastic_shape = if per_synapse {
        [hidden_size, fan_in]
    } else {
        [1, 1]
    };
    let rate_bound = if recurrent && !per_synapse {
        0.001 / hidden_size as f64
    } else {
        0.001 / (hidden_size as f64).sqrt()
    };
    StpnR {
        weight: init::normal([hidden_size, fan_in], 1.0 / (fan_in as f64).sqrt(), device),
        bias: init::normal([hidden_size], 1.0, device),
        lambda: init::uniform(plastic_shape, 0.0, 1.0, device),
        gamma: init::symmetric(plastic_shape, rate_bound, device),
        ..cell
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::params::{host_values, named_gradients};
    use crate::{Backend, LstmConfig};

    /// docs/reference.md §6.3's sizes: about 10.2k parameters each. The LSTM has one bias vector, not
    /// PyTorch's two (10 354 there).
    #[test]
    fn parameter_counts_match_the_paper() {
        let device = Backend::Flex.device().unwrap();
        let readout = FamiliarityNetConfig::new();
        let count = |cell: StpnR| readout.init(cell, &device).num_params();
        assert_eq!(count(hebbnet_cell(100, 100, true, &device)), 10_203);
        assert_eq!(
            count(stpn_cell(100, 100, false, false, true, &device)),
            10_203
        );
        assert_eq!(
            count(stpn_cell(100, 34, false, true, true, &device)),
            10_269
        );
        assert_eq!(
            count(stpn_cell(100, 62, true, false, true, &device)),
            10_171
        );
        assert_eq!(count(stpn_cell(100, 27, true, true, true, &device)), 10_342);
        // PyTorch's LSTMCell, two bias vectors, as the familiarity driver builds it.
        let lstm = LstmConfig::new(100, 21).with_two_biases(true);
        assert_eq!(
            readout.init(lstm.init(&device), &device).num_params(),
            10_354
        );
    }

    #[test]
    fn initialisation_follows_the_reference() {
        let device = Backend::Flex.device().unwrap();
        device.seed(3);
        let hebbnet = hebbnet_cell(100, 100, true, &device);
        assert!((host_values::<f64, _>(hebbnet.lambda.val())[0] - 0.99).abs() < 1e-7);
        assert!((host_values::<f64, _>(hebbnet.gamma.val())[0] + 0.05).abs() < 1e-7);
        let weight = host_values::<f64, _>(hebbnet.weight.val());
        let variance = weight.iter().map(|w| w * w).sum::<f64>() / weight.len() as f64;
        assert!((variance - 0.01).abs() < 0.001, "W variance {variance}");
        let bias = host_values::<f64, _>(hebbnet.bias.val());
        let variance = bias.iter().map(|b| b * b).sum::<f64>() / bias.len() as f64;
        assert!((variance - 1.0).abs() < 0.35, "b variance {variance}");
        let scalar_recurrent = stpn_cell(100, 62, true, false, true, &device);
        let rate = host_values::<f64, _>(scalar_recurrent.gamma.val())[0];
        assert!(rate.abs() <= 0.001 / 62.0);
        let per_synapse = stpn_cell(100, 27, true, true, true, &device);
        assert_eq!(per_synapse.weight.dims(), [27, 127]);
        let rates = host_values::<f64, _>(per_synapse.gamma.val());
        assert!(rates.iter().all(|r| r.abs() <= 0.001 / 27f64.sqrt()));
        assert!(rates.iter().any(|r| r.abs() > 0.001 / 27.0));
    }

    /// The fused kernel against the op-by-op cell through the whole network (loss and every
    /// gradient) for every plastic network of the task, float32.
    #[test]
    fn fused_networks_match_the_op_by_op_path() {
        for backend in Backend::compiled_cpu() {
            let device = backend.device().unwrap().autodiff();
            device.seed(11);
            let networks = [
                ("hebbnet", hebbnet_cell(12, 9, true, &device)),
                ("ustpnf", stpn_cell(12, 9, false, false, true, &device)),
                ("stpnf", stpn_cell(12, 5, false, true, true, &device)),
                ("ustpnr", stpn_cell(12, 7, true, false, true, &device)),
                ("stpnr", stpn_cell(12, 5, true, true, true, &device)),
            ];
            let items =
                Tensor::<3>::random([30, 2, 12], Distribution::Uniform(-1.0, 1.0), &device).sign();
            for (name, cell) in networks {
                // STPN rates ×200, so that the plastic state matters within the sequence
                // (HebbNet's η = −5/d is large already).
                let boost = if name == "hebbnet" { 1.0 } else { 200.0 };
                let cell = StpnR {
                    gamma: cell
                        .gamma
                        .clone()
                        .map(|g| g.mul_scalar(boost).detach().require_grad()),
                    ..cell
                };
                let fused = FamiliarityNetConfig::new().init(cell, &device);
                // The same parameters on the op-by-op path (the clone shares the values).
                let reference = FamiliarityNet {
                    cell: StpnR {
                        fused: false,
                        ..fused.cell.clone()
                    },
                    ..fused.clone()
                };
                let loss_of = |net: &FamiliarityNet<StpnR>| {
                    let logits = net.forward(items.clone());
                    (logits.clone() * logits.clone().tanh()).mean()
                };
                let (fused_loss, reference_loss) = (loss_of(&fused), loss_of(&reference));
                let fused_grads = named_gradients(&fused, &fused_loss.clone().backward());
                let reference_grads =
                    named_gradients(&reference, &reference_loss.clone().backward());
                let (a, b) = (
                    fused_loss.into_scalar::<f64>(),
                    reference_loss.into_scalar::<f64>(),
                );
                assert!(
                    crate::compare::within((a - b).abs(), 1e-5 * b.abs().max(1.0)),
                    "{backend} {name}: loss {a} vs {b}"
                );
                for (parameter, reference) in reference_grads {
                    let reference = reference.unwrap().values;
                    let ours = fused_grads[&parameter].clone().unwrap().values;
                    let error = crate::compare::relative_difference(ours, reference);
                    assert!(
                        error < 1e-4,
                        "{backend} {name}: grad {parameter} error {error:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn decay_clamp_keeps_the_parameter() {
        let device = Backend::Flex.device().unwrap().autodiff();
        let net = FamiliarityNetConfig::new().init(hebbnet_cell(4, 3, true, &device), &device);
        let id = net.cell.lambda.id;
        let net = FamiliarityNet {
            cell: StpnR {
                lambda: net
                    .cell
                    .lambda
                    .clone()
                    .map(|l| l.add_scalar(0.5).detach().require_grad()),
                ..net.cell.clone()
            },
            ..net
        }
        .with_decay_clamped();
        assert_eq!(net.cell.lambda.id, id);
        assert_eq!(host_values::<f64, _>(net.cell.lambda.val()), vec![1.0]);
    }
}
