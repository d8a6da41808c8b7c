//! The many-to-one network of the associative retrieval task (docs/reference.md §1.10, §3): a recurrent cell
//! over the one-hot sequence, then a linear readout of the last output. No embedding.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::cell::{RecurrentCell, run_sequence};
use crate::cells::init;

/// Configuration of the readout of an [`ArtNet`].
#[derive(Config, Debug)]
pub struct ArtNetConfig {
    /// Number of classes (37 symbols in the associative retrieval task).
    #[config(default = 37)]
    pub output_size: usize,
}

/// A cell followed by a linear readout of its last output.
#[derive(Module, Debug)]
pub struct ArtNet<C> {
    /// The recurrent cell.
    pub cell: C,
    /// Readout weights, `[O, H]` (rows = classes).
    pub readout_weight: Param<Tensor<2>>,
    /// Readout bias, `[O]`.
    pub readout_bias: Param<Tensor<1>>,
}

/// What [`ArtNet::forward`] returns.
#[derive(Clone, Debug)]
pub struct ArtOutput<S> {
    /// Logits after the last symbol, `[B, O]`.
    pub logits: Tensor<2>,
    /// Energy of every step summed over the cell's units (docs/reference.md §2.3), `[T, B]`, when asked for.
    pub energy_per_step: Option<Tensor<2>>,
    /// The cell's state after the last symbol.
    pub final_state: S,
}

impl ArtNetConfig {
    /// Wraps `cell` with a readout initialised as PyTorch's `Linear(H → O)`: `U(±1/√H)`.
    pub fn init<C: RecurrentCell>(&self, cell: C, device: &Device) -> ArtNet<C> {
        let hidden = cell.hidden_size();
        let scale = 1.0 / (hidden as f64).sqrt();
        ArtNet {
            cell,
            readout_weight: init::symmetric([self.output_size, hidden], scale, device),
            readout_bias: init::symmetric([self.output_size], scale, device),
        }
    }
}

impl<C: RecurrentCell> ArtNet<C> {
    /// Runs the sequence `[T, B, I]` from the zero state and reads out the last output.
    pub fn forward(&self, inputs: Tensor<3>, with_energy: bool) -> ArtOutput<C::State> {
        let [steps, batch, _] = inputs.dims();
        let state = self.cell.init_state(batch);
        let sequence = run_sequence(&self.cell, inputs, state, with_energy);
        let hidden = self.cell.hidden_size();
        let last = sequence
            .outputs
            .narrow(0, steps - 1, 1)
            .reshape([batch, hidden]);
        let logits = last.matmul(self.readout_weight.val().transpose())
            + self.readout_bias.val().unsqueeze_dim::<2>(0);
        ArtOutput {
            logits,
            energy_per_step: sequence
                .energy
                .map(|energy| energy.sum_dim(2).squeeze_dim::<2>(2)),
            final_state: sequence.final_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;

    use super::ArtNetConfig;
    use crate::{
        Backend, FastWeightsConfig, HebbFfConfig, LstmConfig, ModplastConfig, RnnConfig,
        StpnFConfig, StpnRConfig,
    };

    /// The nine associative-retrieval models at the paper's sizes have the parameter counts of
    /// docs/reference.md §3.3 (37 one-hot inputs, readout to 37 classes included).
    #[test]
    fn parameter_counts_match_the_paper() {
        let device = Backend::compiled_cpu()[0].device().unwrap();
        let art = ArtNetConfig::new();
        let symbols = 37;
        let counts = [
            (
                "STPN h11",
                art.init(StpnRConfig::new(symbols, 11).init(&device), &device)
                    .num_params(),
                2039,
            ),
            (
                "LSTM h9",
                art.init(LstmConfig::new(symbols, 9).init(&device), &device)
                    .num_params(),
                2062,
            ),
            (
                "RNN h20",
                art.init(RnnConfig::new(symbols, 20).init(&device), &device)
                    .num_params(),
                1937,
            ),
            (
                "FW h20",
                art.init(FastWeightsConfig::new(symbols, 20).init(&device), &device)
                    .num_params(),
                1977,
            ),
            (
                "MODPLAST h17",
                art.init(ModplastConfig::new(symbols, 17).init(&device), &device)
                    .num_params(),
                1908,
            ),
            (
                "scalar STPN h20",
                art.init(
                    StpnRConfig::new(symbols, 20)
                        .with_per_synapse(false)
                        .init(&device),
                    &device,
                )
                .num_params(),
                1939,
            ),
            (
                "STPNf h13",
                art.init(StpnFConfig::new(symbols, 13).init(&device), &device)
                    .num_params(),
                1974,
            ),
            (
                "scalar STPNf h26",
                art.init(
                    StpnFConfig::new(symbols, 26)
                        .with_per_synapse(false)
                        .init(&device),
                    &device,
                )
                .num_params(),
                1989,
            ),
            (
                "HebbFF h26",
                art.init(HebbFfConfig::new(symbols, 26).init(&device), &device)
                    .num_params(),
                1989,
            ),
        ];
        for (model, counted, paper) in counts {
            assert_eq!(counted, paper, "{model}");
        }
    }
}
