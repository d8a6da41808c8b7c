//! An STPN layer inside a model of your own, trained with Burn's optimiser on a toy sequence task.
//!
//! The task, delayed recall: a sequence shows a cue symbol, then `DISTRACTORS` random symbols;
//! after the last one the model must name the cue. Chance is `1 / SYMBOLS`. The model is a
//! recurrent STPN layer (paper §3: `h_t = tanh(((W + F_{t-1}) z_t) / ‖W + F_{t-1}‖ + b)`, with
//! the synaptic state `F` updated by `Λ ⊙ F + Γ ⊙ (h_t ⊗ z_t)`) and a linear readout of its last
//! output: the cue has to survive in `h` and `F` across the distractors.
//!
//! ```text
//! cargo run --release --example stpn_layer -- [--backend flex|ndarray|wgpu] [--steps 300]
//! ```

use std::str::FromStr;

use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stpn_model::{Backend, RecurrentCell, StpnR, StpnRConfig};

/// Symbols, one-hot encoded.
const SYMBOLS: usize = 8;
/// Random symbols between the cue and the answer.
const DISTRACTORS: usize = 6;
const BATCH: usize = 64;

/// Your model: any Burn module can hold an STPN layer like any other layer.
#[derive(Module, Debug)]
pub struct Recaller {
    stpn: StpnR,
    readout: Linear,
}

/// Its configuration.
#[derive(Config, Debug)]
pub struct RecallerConfig {
    /// Hidden units of the STPN layer.
    #[config(default = 16)]
    hidden_size: usize,
}

impl RecallerConfig {
    pub fn init(&self, device: &Device) -> Recaller {
        Recaller {
            stpn: StpnRConfig::new(SYMBOLS, self.hidden_size).init(device),
            readout: LinearConfig::new(self.hidden_size, SYMBOLS).init(device),
        }
    }
}

impl Recaller {
    /// Logits `[B, SYMBOLS]` after the last symbol of the one-hot sequences `[T, B, SYMBOLS]`.
    pub fn forward(&self, sequences: Tensor<3>) -> Tensor<2> {
        let [steps, batch, _] = sequences.dims();
        // A whole sequence in one call: the fused kernel on flex/ndarray, step by step elsewhere.
        let (outputs, _final_state) = self
            .stpn
            .forward_sequence(sequences, self.stpn.init_state(batch));
        let last = outputs
            .narrow(0, steps - 1, 1)
            .reshape([batch, self.stpn.hidden_size()]);
        self.readout.forward(last)
    }
}

/// A batch of one-hot sequences `[T, B, SYMBOLS]` and their cues `[B]`.
pub fn batch(rng: &mut ChaCha8Rng, device: &Device) -> (Tensor<3>, Tensor<1, Int>) {
    let steps = 1 + DISTRACTORS;
    let mut one_hot = vec![0.0f32; steps * BATCH * SYMBOLS];
    let mut cues = Vec::with_capacity(BATCH);
    for row in 0..BATCH {
        for step in 0..steps {
            let symbol = rng.random_range(0..SYMBOLS);
            if step == 0 {
                cues.push(symbol as i64);
            }
            one_hot[(step * BATCH + row) * SYMBOLS + symbol] = 1.0;
        }
    }
    (
        Tensor::from_data(TensorData::new(one_hot, [steps, BATCH, SYMBOLS]), device),
        Tensor::from_data(TensorData::new(cues, [BATCH]), device),
    )
}

/// Trains for `steps` Adam steps on `backend` and returns the accuracy on 10 fresh batches.
pub fn train(backend: Backend, steps: usize, seed: u64) -> Result<f64, stpn_model::BackendError> {
    let device = backend.device()?.autodiff();
    device.seed(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = RecallerConfig::new().init(&device);
    let mut optimizer = AdamConfig::new().init();
    let loss_function = CrossEntropyLossConfig::new().init(&device);
    for step in 1..=steps {
        let (sequences, cues) = batch(&mut rng, &device);
        let loss = loss_function.forward(model.forward(sequences), cues);
        if step % 50 == 0 {
            println!("step {step}: loss {:.3}", loss.clone().into_scalar::<f32>());
        }
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(3e-3, model, gradients);
    }
    // Evaluation on the plain device: no autodiff graph.
    let model = model.valid();
    let plain = backend.device()?;
    let mut correct = 0usize;
    for _ in 0..10 {
        let (sequences, cues) = batch(&mut rng, &plain);
        let predicted = model.forward(sequences).argmax(1).reshape([BATCH]);
        correct += predicted.equal(cues).int().sum().into_scalar::<i64>() as usize;
    }
    Ok(correct as f64 / (10 * BATCH) as f64)
}

#[allow(dead_code)] // a test includes this file for `train`
fn main() {
    let mut backend = Backend::Flex;
    let mut steps = 300;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let parsed = match flag.as_str() {
            "--backend" => Backend::from_str(&value)
                .map(|b| backend = b)
                .map_err(|e| e.to_string()),
            "--steps" => value
                .parse()
                .map(|s| steps = s)
                .map_err(|_| format!("--steps takes a number, not `{value}`")),
            _ => Err(format!(
                "unknown option `{flag}`; use --backend flex|ndarray|wgpu and --steps N"
            )),
        };
        if let Err(message) = parsed {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
    match train(backend, steps, 0) {
        Ok(accuracy) => println!(
            "recall accuracy {accuracy:.3} (chance {:.3})",
            1.0 / SYMBOLS as f64
        ),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
