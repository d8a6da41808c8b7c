//! The associative retrieval experiment (paper §4.1; docs/reference.md §3): a ~2 000-parameter network reads
//! `k1 v1 k2 v2 k3 v3 ? ? q` and answers the value paired with `q`.
//!
//! Training follows the reference runner: Adam (lr 1e-3, ε 1e-8), batches of 128 in a fixed
//! order (no shuffling), the last partial batch dropped, cross-entropy on the logits after the
//! ninth symbol, states reset for every batch. After every epoch the whole validation set is
//! scored (accuracy, energy); at the end the test set (full batches only, 19 968 sequences in the
//! paper's setting) is scored with the last and with the best model.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use stpn_envs::art::{self, ArtDataset, Example, SEQUENCE_LENGTH, VOCABULARY};
use stpn_model::{
    ArtNet, ArtNetConfig, FastWeightsConfig, HebbFfConfig, LstmConfig, ModplastConfig, Presynaptic,
    RecurrentCell, RnnConfig, StpnFConfig, StpnRConfig,
};

use crate::experiments::{Experiment, ExperimentConfig, Session, checked, name_of};
use crate::run_dir::Metrics;
use stpn_rl::checks::{positive, positive_finite};

/// The cell of an associative-retrieval network.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ArtModel {
    /// Recurrent STPN (normalised efficacy, F divided by the norm before its decay).
    StpnR,
    /// Feedforward STPN (normalised efficacy, no bias).
    StpnF,
    /// HebbFF (scalar σ / −exp plasticity, sigmoid units).
    Hebbff,
    /// Fast weights (Ba et al. 2016), λ 0.9, η 0.5, one inner step, layer norm.
    FastWeights,
    /// Neuromodulated plasticity (backpropamine).
    Modplast,
    /// LSTM with one bias.
    Lstm,
    /// Elman RNN.
    Rnn,
}

/// Which equations the plastic cells follow.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Equations {
    /// The reference's associative-retrieval runner (docs/reference.md §1.10): STPNr's update sees the new
    /// hidden state; STPNf and HebbFF squash F before each update; fast weights update twice.
    Reference,
    /// The paper's clean equations: presynaptic term h_{t-1}, no squashing, one update per step.
    Paper,
}

/// One associative-retrieval run: model and training settings. Every field but `model` and
/// `hidden_size` has the paper's value as its default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtConfig {
    pub model: ArtModel,
    pub hidden_size: usize,
    /// Λ and Γ per synapse (false: the scalar-STP ablation); STPN cells only.
    #[serde(default = "yes")]
    pub per_synapse: bool,
    #[serde(default = "reference")]
    pub equations: Equations,
    /// STPNr on its fused kernel (false: the op-by-op reference path, which the proof runs and
    /// the first sweep used).
    #[serde(default = "yes")]
    pub fused: bool,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "default_adam_epsilon")]
    pub adam_epsilon: f64,
    #[serde(default = "default_train_size")]
    pub train_size: usize,
    #[serde(default = "default_validation_size")]
    pub validation_size: usize,
    #[serde(default = "default_test_size")]
    pub test_size: usize,
    /// Seed of the model's initialisation.
    #[serde(default)]
    pub seed: u64,
    /// Seed of the data, separate from the model's: one dataset serves every model seed.
    #[serde(default)]
    pub data_seed: u64,
}

fn yes() -> bool {
    true
}
fn reference() -> Equations {
    Equations::Reference
}
fn default_epochs() -> usize {
    200
}
fn default_batch_size() -> usize {
    128
}
fn default_learning_rate() -> f64 {
    1e-3
}
fn default_adam_epsilon() -> f64 {
    1e-8
}
fn default_train_size() -> usize {
    art::TRAIN_SIZE
}
fn default_validation_size() -> usize {
    art::VALIDATION_SIZE
}
fn default_test_size() -> usize {
    art::TEST_SIZE
}

impl ArtConfig {
    /// A config of `model` with every setting at the paper's value.
    pub fn paper(model: ArtModel, hidden_size: usize) -> Self {
        serde_json::from_value(serde_json::json!({ "model": model, "hidden_size": hidden_size }))
            .expect("defaults are valid")
    }
}

impl ExperimentConfig for ArtConfig {
    fn validate(&self) -> Result<()> {
        checked(positive("hidden_size", self.hidden_size))?;
        checked(positive("batch_size", self.batch_size))?;
        checked(positive("epochs", self.epochs))?;
        checked(positive("validation_size", self.validation_size))?;
        checked(positive("test_size", self.test_size))?;
        checked(positive_finite("learning_rate", self.learning_rate))?;
        checked(positive_finite("adam_epsilon", self.adam_epsilon))?;
        if self.test_size < self.batch_size {
            bail!(
                "test_size {} is smaller than one batch of {}; the test set is scored in full batches, so nothing would be scored",
                self.test_size,
                self.batch_size
            );
        }
        if self.train_size < self.batch_size {
            bail!(
                "train_size {} is smaller than one batch of {}; the last partial batch is dropped, so nothing would train",
                self.train_size,
                self.batch_size
            );
        }
        if !self.per_synapse && !matches!(self.model, ArtModel::StpnR | ArtModel::StpnF) {
            bail!("per_synapse: false (scalar STP) applies to stpn_r and stpn_f only");
        }
        Ok(())
    }

    /// A short name: `stpn_r-h11-reference-s0`.
    fn run_name(&self) -> String {
        let scalar = if self.per_synapse { "" } else { "-scalar" };
        format!(
            "{}{scalar}-h{}-{}-s{}",
            name_of(self.model),
            self.hidden_size,
            name_of(self.equations),
            self.seed
        )
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// The scores of one model on one split.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    pub accuracy: f64,
    /// Mean over sequences and time steps of the energy of a step summed over the units.
    pub energy: f64,
    pub sequences: usize,
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub model: ArtModel,
    pub equations: Equations,
    pub hidden_size: usize,
    pub per_synapse: bool,
    pub params: usize,
    pub epochs: usize,
    pub seed: u64,
    pub data_seed: u64,
    pub backend: String,
    pub best_val_acc: f64,
    pub best_epoch: usize,
    pub final_val_acc: f64,
    pub final_val_energy: f64,
    pub test_acc: f64,
    pub test_energy: f64,
    pub best_model_test_acc: f64,
    pub best_model_test_energy: f64,
    pub test_sequences: usize,
    pub train_seconds: f64,
}

/// Progress saved with every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainingState {
    epoch: usize,
    best_val_acc: f64,
    best_epoch: usize,
    final_val_acc: f64,
    final_val_energy: f64,
    train_seconds: f64,
}

pub const METRICS_HEADER: &str = "epoch,train_loss,train_acc,val_acc,val_energy,epoch_seconds";

/// The `art` command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ArtArgs {
    /// Network to train with the paper's settings (instead of --config); needs --hidden.
    #[arg(
        long,
        alias = "model",
        value_enum,
        requires = "hidden",
        conflicts_with = "config"
    )]
    pub core: Option<ArtModel>,
    /// Hidden size, with --core.
    #[arg(long, conflicts_with = "config")]
    pub hidden: Option<usize>,
    /// Scalar Λ and Γ (the scalar-STP ablation), with --core stpn_r or stpn_f.
    #[arg(long)]
    pub scalar: bool,
    /// Equations of the plastic cells: the reference runner's or the paper's.
    #[arg(long, value_enum)]
    pub equations: Option<Equations>,
    /// Run STPNr op by op (the reference path) instead of on its fused kernel.
    #[arg(long)]
    pub ops: bool,
    /// Number of epochs (passes over the training set); may extend a resumed run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Number of training sequences (100 000 in the paper).
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Seed of the data (separate from the model's --seed).
    #[arg(long)]
    pub data_seed: Option<u64>,
}

/// The associative retrieval experiment.
pub struct Art;

impl Experiment for Art {
    const NAME: &'static str = "art";
    type Args = ArtArgs;
    type Config = ArtConfig;
    type Summary = Summary;

    fn paper_config(args: &ArtArgs) -> Result<ArtConfig> {
        Ok(match args.core {
            Some(model) => ArtConfig::paper(model, args.hidden.context("--core needs --hidden")?),
            None => {
                // The README's demonstration: about a minute on a 2-core CPU, validation accuracy ~0.99.
                let mut config = ArtConfig::paper(ArtModel::StpnR, 11);
                config.equations = Equations::Paper;
                config.epochs = 20;
                config
            }
        })
    }

    fn override_config(args: &ArtArgs, config: &mut ArtConfig) {
        if args.scalar {
            config.per_synapse = false;
        }
        if let Some(equations) = args.equations {
            config.equations = equations;
        }
        if args.ops {
            config.fused = false;
        }
        if let Some(size) = args.train_size {
            config.train_size = size;
        }
        if let Some(seed) = args.data_seed {
            config.data_seed = seed;
        }
    }

    fn extend_config(args: &ArtArgs, config: &mut ArtConfig) {
        if let Some(epochs) = args.epochs {
            config.epochs = epochs;
        }
    }

    fn describe(config: &ArtConfig) -> String {
        format!(
            "{}, {} epochs of {} training sequences",
            config.run_name(),
            config.epochs,
            config.train_size
        )
    }

    /// Trains (or resumes) a run and returns its summary (also written to `summary.json`).
    fn train(config: &ArtConfig, session: &Session) -> Result<Summary> {
        let (device, host) = session.devices(config.seed)?;
        let symbols = VOCABULARY;
        let hidden = config.hidden_size;
        let reference = config.equations == Equations::Reference;
        let art = ArtNetConfig::new().with_output_size(VOCABULARY);
        macro_rules! train_with {
            ($cell:expr) => {
                train(
                    art.init($cell, &host).fork(&device),
                    config,
                    session,
                    &device,
                )
            };
        }
        match config.model {
            ArtModel::StpnR => train_with!(
                StpnRConfig::new(symbols, hidden)
                    .with_per_synapse(config.per_synapse)
                    .with_fused(config.fused)
                    .with_presynaptic(if reference {
                        Presynaptic::CurrentHidden
                    } else {
                        Presynaptic::PreviousHidden
                    })
                    .init(&host)
            ),
            ArtModel::StpnF => train_with!(
                StpnFConfig::new(symbols, hidden)
                    .with_per_synapse(config.per_synapse)
                    .with_squash_state(reference)
                    .init(&host)
            ),
            ArtModel::Hebbff => train_with!(
                HebbFfConfig::new(symbols, hidden)
                    .with_squash_state(reference)
                    .init(&host)
            ),
            ArtModel::FastWeights => {
                train_with!(
                    FastWeightsConfig::new(symbols, hidden)
                        .with_double_update(reference)
                        .init(&host)
                )
            }
            ArtModel::Modplast => train_with!(ModplastConfig::new(symbols, hidden).init(&host)),
            ArtModel::Lstm => train_with!(LstmConfig::new(symbols, hidden).init(&host)),
            ArtModel::Rnn => train_with!(RnnConfig::new(symbols, hidden).init(&host)),
        }
    }

    fn summary_line(config: &ArtConfig, summary: &Summary) -> String {
        format!(
            "{}: {} params, {} epochs, val_acc {:.4} (best {:.4} at epoch {}), test_acc {:.4}, test_energy {:.3}",
            config.run_name(),
            summary.params,
            summary.epochs,
            summary.final_val_acc,
            summary.best_val_acc,
            summary.best_epoch,
            summary.test_acc,
            summary.test_energy,
        )
    }
}

/// One-hot inputs `[T, B, 37]` and targets `[B]` of a batch.
fn batch_tensors(examples: &[Example], device: &Device) -> (Tensor<3>, Tensor<1, Int>) {
    let batch = art::one_hot(examples);
    let inputs = Tensor::from_data(
        TensorData::new(batch.inputs, [SEQUENCE_LENGTH, batch.batch, VOCABULARY]),
        device,
    );
    let targets = Tensor::from_data(TensorData::new(batch.targets, [batch.batch]), device);
    (inputs, targets)
}

/// How many of the batch's logits `[B, O]` put their maximum on the target class.
fn correct_predictions(logits: Tensor<2>, targets: Tensor<1, Int>) -> i64 {
    let [batch, _] = logits.dims();
    let predictions = logits.argmax(1).reshape([batch]);
    predictions.equal(targets).int().sum().into_scalar::<i64>()
}

/// Accuracy and energy of `model` on `examples`, in batches of `batch_size`; with
/// `full_batches_only` the last partial batch is left out (the reference's test loader).
pub fn evaluate<C: RecurrentCell>(
    model: &ArtNet<C>,
    examples: &[Example],
    batch_size: usize,
    full_batches_only: bool,
) -> Evaluation {
    let model = model.valid();
    let device = model.readout_weight.val().device();
    let (mut correct, mut energy, mut sequences) = (0i64, 0f64, 0usize);
    for chunk in examples.chunks(batch_size) {
        if full_batches_only && chunk.len() < batch_size {
            break;
        }
        let (inputs, targets) = batch_tensors(chunk, &device);
        let output = model.forward(inputs, true);
        correct += correct_predictions(output.logits, targets);
        energy += output
            .energy_per_step
            .expect("energy was asked for")
            .sum()
            .into_scalar::<f64>();
        sequences += chunk.len();
    }
    Evaluation {
        accuracy: correct as f64 / sequences.max(1) as f64,
        energy: energy / (sequences.max(1) * SEQUENCE_LENGTH) as f64,
        sequences,
    }
}

fn train<C: RecurrentCell>(
    model: ArtNet<C>,
    config: &ArtConfig,
    session: &Session,
    device: &Device,
) -> Result<Summary> {
    let (run, quiet) = (&session.run, session.quiet);
    let params = model.num_params();
    let data = ArtDataset::generate(
        config.data_seed,
        config.train_size,
        config.validation_size,
        config.test_size,
    );
    let loss_function = CrossEntropyLossConfig::new().init(device);
    let mut optimizer = stpn_rl::adam(config.adam_epsilon);
    let mut model = model;

    let mut state = TrainingState {
        epoch: 0,
        best_val_acc: f64::NEG_INFINITY,
        best_epoch: 0,
        final_val_acc: f64::NAN,
        final_val_energy: f64::NAN,
        train_seconds: 0.0,
    };
    (model, optimizer, state) = run.resume_training(model, optimizer, state, session.resume)?;
    let metrics = Metrics::open(run, METRICS_HEADER, state.epoch)?;

    let batches = config.train_size / config.batch_size;
    let progress = crate::run_dir::progress_bar(
        config.epochs.saturating_sub(state.epoch) * batches,
        "steps",
        quiet,
    );
    if state.epoch > 0 && !quiet {
        progress.println(format!(
            "resuming {} after epoch {}",
            run.path.display(),
            state.epoch
        ));
    }

    for epoch in state.epoch + 1..=config.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut correct) = (0f64, 0i64);
        for (step, chunk) in data.train.chunks_exact(config.batch_size).enumerate() {
            let (inputs, targets) = batch_tensors(chunk, device);
            let output = model.forward(inputs, false);
            correct += correct_predictions(output.logits.clone(), targets.clone());
            let loss = loss_function.forward(output.logits, targets);
            loss_sum += loss.clone().into_scalar::<f64>();
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.learning_rate, model, gradients);
            progress.inc(1);
            if step % 50 == 0 {
                progress.set_message(format!(
                    "epoch {epoch}/{}  loss {:.3}  val_acc {:.3}",
                    config.epochs,
                    loss_sum / (step + 1) as f64,
                    state.final_val_acc
                ));
            }
        }
        let train_loss = loss_sum / batches as f64;
        session.ensure_finite("training loss", train_loss, format_args!("epoch {epoch}"))?;
        let train_acc = correct as f64 / (batches * config.batch_size) as f64;
        let validation = evaluate(&model, &data.validation, config.batch_size, false);
        let epoch_seconds = started.elapsed().as_secs_f64();
        state.epoch = epoch;
        state.final_val_acc = validation.accuracy;
        state.final_val_energy = validation.energy;
        state.train_seconds += epoch_seconds;
        let improved = validation.accuracy > state.best_val_acc;
        if improved {
            state.best_val_acc = validation.accuracy;
            state.best_epoch = epoch;
        }
        // The metrics row first: a row without its checkpoint is dropped on resume.
        metrics.append(&format!(
            "{epoch},{train_loss:.6},{train_acc:.6},{:.6},{:.6},{epoch_seconds:.3}",
            validation.accuracy, validation.energy
        ))?;
        if improved {
            run.write_checkpoint("best", |folder| {
                model.clone().save_file(folder.join("model.bpk"))?;
                Ok(())
            })?;
        }
        run.save_training(&model, &optimizer, &state)?;
        session.stop_if_interrupted("epoch", epoch)?;
        let line = format!(
            "epoch {epoch:>3}  train_loss {train_loss:.4}  train_acc {train_acc:.4}  val_acc {:.4}  val_energy {:.3}  {epoch_seconds:.1}s",
            validation.accuracy, validation.energy
        );
        if quiet {
            tracing::info!("{line}");
        } else {
            progress.println(line);
        }
    }
    progress.finish_and_clear();

    let test = evaluate(&model, &data.test, config.batch_size, true);
    let best_model = match run.checkpoint("best") {
        Some(folder) => model
            .clone()
            .try_load_file(folder.join("model.bpk"))
            .with_context(|| format!("cannot load the best model of {}", folder.display()))?,
        None => model.clone(),
    };
    let best_test = evaluate(&best_model, &data.test, config.batch_size, true);
    let summary = Summary {
        model: config.model,
        equations: config.equations,
        hidden_size: config.hidden_size,
        per_synapse: config.per_synapse,
        params,
        epochs: state.epoch,
        seed: config.seed,
        data_seed: config.data_seed,
        backend: session.backend.to_string(),
        best_val_acc: state.best_val_acc,
        best_epoch: state.best_epoch,
        final_val_acc: state.final_val_acc,
        final_val_energy: state.final_val_energy,
        test_acc: test.accuracy,
        test_energy: test.energy,
        best_model_test_acc: best_test.accuracy,
        best_model_test_energy: best_test.energy,
        test_sequences: test.sequences,
        train_seconds: state.train_seconds,
    };
    run.write_json("summary.json", &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stpn_model::params::{NamedValues, named_values};

    use std::path::PathBuf;

    use stpn_model::Backend;

    use super::*;
    use crate::run_dir::RunDir;

    fn tiny(model: ArtModel, hidden_size: usize, epochs: usize) -> ArtConfig {
        let mut config = ArtConfig::paper(model, hidden_size);
        config.epochs = epochs;
        config.train_size = 640;
        config.validation_size = 200;
        config.test_size = 256;
        config
    }

    fn scratch(name: &str) -> PathBuf {
        crate::test_support::scratch("art", name)
    }

    fn train_fresh(config: &ArtConfig, name: &str) -> (Summary, RunDir) {
        let run = RunDir::create(&scratch(name)).unwrap();
        run.write_json("config.json", config).unwrap();
        let session = Session::new(run, Backend::Flex, false, true);
        let summary = Art::train(config, &session).unwrap();
        (summary, session.run)
    }

    /// The weights of the last checkpoint of a run, loaded into `cell`'s network.
    fn last_weights<C: RecurrentCell>(cell: C, run: &RunDir) -> BTreeMap<String, NamedValues> {
        let device = Backend::Flex.device().unwrap();
        let network = ArtNetConfig::new()
            .init(cell, &device)
            .try_load_file(run.checkpoint("last").unwrap().join("model.bpk"))
            .unwrap();
        named_values(&network)
    }

    fn stpn_weights(run: &RunDir) -> BTreeMap<String, NamedValues> {
        last_weights(
            StpnRConfig::new(VOCABULARY, 6).init(&Backend::Flex.device().unwrap()),
            run,
        )
    }

    fn lstm_weights(run: &RunDir) -> BTreeMap<String, NamedValues> {
        last_weights(
            LstmConfig::new(VOCABULARY, 5).init(&Backend::Flex.device().unwrap()),
            run,
        )
    }

    /// An interrupted run resumed from its last checkpoint ends exactly where an uninterrupted
    /// one does: same weights, same metrics, same summary numbers.
    #[test]
    fn resume_equals_uninterrupted() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(ArtModel::StpnR, 6, 3);
        let (straight, straight_run) = train_fresh(&config, "straight");

        let mut first_part = config.clone();
        first_part.epochs = 2;
        let (_, resumed_run) = train_fresh(&first_part, "resumed");
        // A stale metrics row of an epoch whose checkpoint never landed must be dropped.
        crate::run_dir::Metrics::open(&resumed_run, METRICS_HEADER, 2)
            .unwrap()
            .append("3,9,9,9,9,9")
            .unwrap();
        let session = Session::new(resumed_run, Backend::Flex, true, true);
        let resumed = Art::train(&config, &session).unwrap();
        let resumed_run = session.run;

        assert_eq!(stpn_weights(&straight_run), stpn_weights(&resumed_run));
        assert_eq!(straight.final_val_acc, resumed.final_val_acc);
        assert_eq!(straight.test_acc, resumed.test_acc);
        assert_eq!(straight.test_energy, resumed.test_energy);
        let metrics = crate::test_support::metrics_without_timing;
        assert_eq!(metrics(&straight_run), metrics(&resumed_run));
        // TensorBoard shows each run's metrics.csv: the stale row's event is dropped by the
        // resumed run's restart marker, and no row is written twice.
        for run in [&straight_run, &resumed_run] {
            assert_eq!(
                crate::tensorboard::test_reader::scalars(&run.path),
                crate::tensorboard::test_reader::csv_scalars(&run.path)
            );
        }
        for run in [straight_run, resumed_run] {
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// A real run's event file holds exactly the rows of its metrics.csv, one scalar per column.
    #[test]
    fn tensorboard_events_equal_the_metrics_of_a_run() {
        let _seeded = crate::seeded_device_lock();
        let (_, run) = train_fresh(&tiny(ArtModel::Lstm, 5, 2), "tensorboard");
        let events = crate::tensorboard::test_reader::scalars(&run.path);
        assert_eq!(
            crate::tensorboard::test_reader::event_files(&run.path).len(),
            1
        );
        let tags: Vec<&str> = events.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = METRICS_HEADER.split(',').skip(1).collect();
        expected.sort();
        assert_eq!(tags, expected);
        assert_eq!(
            events["val_acc"]
                .iter()
                .map(|(step, _)| *step)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(
            events,
            crate::tensorboard::test_reader::csv_scalars(&run.path)
        );
        std::fs::remove_dir_all(&run.path).ok();
    }

    /// Same seed, same backend, same numbers; another seed, other numbers.
    #[test]
    fn runs_are_deterministic() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(ArtModel::Lstm, 5, 1);
        let (a, run_a) = train_fresh(&config, "det-a");
        let (b, run_b) = train_fresh(&config, "det-b");
        let mut other = config.clone();
        other.seed = 1;
        let (_, run_c) = train_fresh(&other, "det-c");
        assert_eq!(lstm_weights(&run_a), lstm_weights(&run_b));
        assert_eq!(a.test_energy, b.test_energy);
        assert_ne!(lstm_weights(&run_a), lstm_weights(&run_c));
        for run in [run_a, run_b, run_c] {
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// The summary carries the names scripts read, and the printed parameter count is the
    /// paper's (docs/reference.md §3.3).
    #[test]
    fn summary_has_the_documented_fields() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(ArtModel::Modplast, 17, 1);
        let (summary, run) = train_fresh(&config, "summary");
        assert_eq!(summary.params, 1908);
        let json: serde_json::Value = run.read_json("summary.json").unwrap();
        for key in [
            "model",
            "params",
            "epochs",
            "best_val_acc",
            "final_val_acc",
            "test_acc",
            "test_energy",
        ] {
            assert!(json.get(key).is_some(), "summary.json lacks {key}");
        }
        assert_eq!(json["model"], "modplast");
        assert_eq!(summary.test_sequences, 256);
        std::fs::remove_dir_all(&run.path).ok();
    }

    /// `--backend wgpu` (lavapipe in CI) trains as flex does: the same initial network (drawn on
    /// the host), the same batches, the cube kernel for the fused STPNr. After the same 20 Adam
    /// steps the validation accuracies agree within 0.01 and the weights within float32 drift.
    #[test]
    fn wgpu_trains_as_flex_does() {
        let _seeded = crate::seeded_device_lock();
        if let Err(error) = Backend::Wgpu.device() {
            eprintln!("skipped: {error}");
            return;
        }
        let mut config = tiny(ArtModel::StpnR, 11, 2);
        config.train_size = 1_280;
        config.validation_size = 500;
        let [(flex, flex_run), (wgpu, wgpu_run)] = [Backend::Flex, Backend::Wgpu].map(|backend| {
            let run = RunDir::create(&scratch(&format!("on-{}", backend.name()))).unwrap();
            run.write_json("config.json", &config).unwrap();
            let session = Session::new(run, backend, false, true);
            (Art::train(&config, &session).unwrap(), session.run)
        });
        assert!(
            (flex.final_val_acc - wgpu.final_val_acc).abs() <= 0.01,
            "validation accuracy: flex {}, wgpu {}",
            flex.final_val_acc,
            wgpu.final_val_acc
        );
        let weights = |run: &RunDir| {
            last_weights(
                StpnRConfig::new(VOCABULARY, 11).init(&Backend::Flex.device().unwrap()),
                run,
            )
        };
        let (on_flex, on_wgpu) = (weights(&flex_run), weights(&wgpu_run));
        for (name, expected) in &on_flex {
            let error = stpn_model::compare::relative_difference(
                on_wgpu[name].values.iter().copied(),
                expected.values.iter().copied(),
            );
            assert!(
                stpn_model::compare::within(error, 1e-3),
                "{name}: relative difference {error:e} between wgpu and flex"
            );
        }
        for run in [flex_run, wgpu_run] {
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// STPN learns the task: after 4 short epochs (about 2 s) it is well above the 10 % chance.
    #[test]
    fn stpn_learns_above_chance() {
        let _seeded = crate::seeded_device_lock();
        let mut config = tiny(ArtModel::StpnR, 11, 4);
        config.equations = Equations::Paper;
        config.train_size = 25_600;
        config.validation_size = 2_000;
        let (summary, run) = train_fresh(&config, "learns");
        assert!(
            summary.final_val_acc > 0.25,
            "validation accuracy {}",
            summary.final_val_acc
        );
        std::fs::remove_dir_all(&run.path).ok();
    }

    #[test]
    fn every_shipped_config_loads_with_the_paper_parameter_count() {
        let _seeded = crate::seeded_device_lock();
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/art");
        let expected = [
            ("stpn_h11", 2039),
            ("lstm_h9", 2062),
            ("rnn_h20", 1937),
            ("fast_weights_h20", 1977),
            ("modplast_h17", 1908),
            ("stpn_scalar_h20", 1939),
            ("stpnf_h13", 1974),
            ("stpnf_scalar_h26", 1989),
            ("hebbff_h26", 1989),
        ];
        for (name, params) in expected {
            let mut config = ArtConfig::load(&folder.join(format!("{name}.json"))).unwrap();
            assert_eq!(config.equations, Equations::Reference, "{name}");
            assert_eq!(config.epochs, 200, "{name}");
            config.train_size = 128;
            config.validation_size = 10;
            config.test_size = 10;
            config.epochs = 1;
            let (summary, run) = train_fresh(&config, name);
            assert_eq!(summary.params, params, "{name}");
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    #[test]
    fn malformed_config_is_a_clear_error() {
        let path = scratch("bad-config.json");
        std::fs::write(&path, r#"{ "model": "transformer", "hidden_size": 3 }"#).unwrap();
        let error = format!("{:#}", ArtConfig::load(&path).unwrap_err());
        assert!(
            error.contains("is malformed") && error.contains("unknown variant `transformer`"),
            "{error}"
        );
        std::fs::write(
            &path,
            r#"{ "model": "lstm", "hidden_size": 3, "epochz": 3 }"#,
        )
        .unwrap();
        let error = format!("{:#}", ArtConfig::load(&path).unwrap_err());
        assert!(error.contains("unknown field `epochz`"), "{error}");
        std::fs::remove_file(&path).ok();
    }
}
