//! The continual familiarity experiment (Tyulmankov et al. 2022, as the STPN authors run it;
//! docs/reference.md §6): a network reads a stream of 5 000 random ±1 items of dimension 100 and answers, at
//! every item, whether it appeared `R` items earlier.
//!
//! Training follows the reference (`script_simple.py`): Adam (lr 1e-3), one gradient step per
//! stream with backpropagation through all 5 000 steps, batch of one stream, binary cross-entropy
//! averaged over the steps. Mode `dat` trains on one fixed stream (3 000 steps) and scores a fixed
//! validation stream; mode `inf` draws a fresh stream for every step (1 600 steps at R = 3, 3 500
//! at R = 6). Every `log_every` steps the mean training loss and accuracy of those steps and the
//! validation loss and accuracy go to `metrics.csv`, and the run is checkpointed.
//!
//! After training: accuracy, true-positive and false-positive rates on fresh streams at the
//! training interval (`test_*`) and at test intervals R = 1, 2, 3, … growing ×1.3 until the
//! true-positive rate falls to the false-positive rate (`generalisation.csv`,
//! `generalisation.svg`). Every stream has its own seed, derived from `data_seed`, the purpose
//! and the step, so runs resume exactly and every network sees the same streams.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use stpn_envs::familiarity::FamiliarityStream;
use stpn_model::networks::familiarity_net::{hebbnet_cell, stpn_cell};
use stpn_model::{FamiliarityNet, FamiliarityNetConfig, LstmConfig, RecurrentCell, StpnR};

use plotters::prelude::*;

use crate::experiments::{Experiment, ExperimentConfig, Session, checked, name_of};
use crate::run_dir::{Metrics, RunDir};
use stpn_rl::checks::{positive, positive_finite, unit_interval};

/// The networks of docs/reference.md §6.2.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum FamiliarityModel {
    /// Tyulmankov's HebbNet: sigmoid units, A ← λA + η h xᵀ, scalar λ ∈ [0, 1] and η.
    Hebbnet,
    /// Feedforward STPN, scalar Λ and Γ.
    Ustpnf,
    /// Feedforward STPN, Λ and Γ per synapse.
    Stpnf,
    /// Recurrent STPN, scalar Λ and Γ.
    Ustpnr,
    /// Recurrent STPN, Λ and Γ per synapse.
    Stpnr,
    /// LSTM.
    Lstm,
}

impl FamiliarityModel {
    /// The reference README's sizes, about 10.2k parameters each (docs/reference.md §6.3).
    pub fn paper_hidden_size(self) -> usize {
        match self {
            Self::Hebbnet | Self::Ustpnf => 100,
            Self::Stpnf => 34,
            Self::Ustpnr => 62,
            Self::Stpnr => 27,
            Self::Lstm => 21,
        }
    }
}

/// How training streams are drawn.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One fixed training stream (and a fixed validation stream).
    Dat,
    /// A fresh stream for every step.
    Inf,
}

/// One familiarity run. Every field but `net`, `mode` and `repeat` has the paper's value as its
/// default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamiliarityConfig {
    pub net: FamiliarityModel,
    pub hidden_size: usize,
    pub mode: Mode,
    /// `R`, the interval after which an item repeats.
    pub repeat: usize,
    /// Gradient steps (one per stream).
    pub train_steps: usize,
    /// Items per stream, `T` (the length of backpropagation through time).
    #[serde(default = "default_items")]
    pub items: usize,
    /// Item dimension `d`.
    #[serde(default = "default_dimension")]
    pub dimension: usize,
    /// Probability `P` that an item repeats the one `R` steps earlier.
    #[serde(default = "default_probability")]
    pub probability: f64,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Steps between two metric rows and checkpoints.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Plastic networks on the fused kernel (false: op by op, ~100× slower at T = 5 000).
    #[serde(default = "yes")]
    pub fused: bool,
    /// Seed of the initialisation.
    #[serde(default)]
    pub seed: u64,
    /// Seed of every stream.
    #[serde(default)]
    pub data_seed: u64,
}

fn default_items() -> usize {
    5000
}
fn default_dimension() -> usize {
    100
}
fn default_probability() -> f64 {
    0.5
}
fn default_learning_rate() -> f64 {
    1e-3
}
fn default_log_every() -> usize {
    10
}
fn yes() -> bool {
    true
}

impl FamiliarityConfig {
    /// The paper's settings: 3 000 steps in `dat` mode; 1 600 (R ≤ 3) or 3 500 (R ≥ 6) in `inf`.
    pub fn paper(net: FamiliarityModel, mode: Mode, repeat: usize) -> Self {
        let train_steps = match mode {
            Mode::Dat => 3000,
            Mode::Inf if repeat >= 6 => 3500,
            Mode::Inf => 1600,
        };
        Self {
            net,
            hidden_size: net.paper_hidden_size(),
            mode,
            repeat,
            train_steps,
            items: default_items(),
            dimension: default_dimension(),
            probability: default_probability(),
            learning_rate: default_learning_rate(),
            log_every: default_log_every(),
            fused: true,
            seed: 0,
            data_seed: 0,
        }
    }

    fn stream(&self, purpose: Purpose, index: u64, repeat: usize) -> FamiliarityStream {
        FamiliarityStream::generate(
            self.items,
            self.dimension,
            repeat,
            self.probability,
            stream_seed(self.data_seed, purpose, index),
        )
    }
}

impl ExperimentConfig for FamiliarityConfig {
    fn validate(&self) -> Result<()> {
        checked(positive_finite("learning_rate", self.learning_rate))?;
        checked(unit_interval("probability", self.probability))?;
        checked(positive("items", self.items))?;
        if self.repeat == 0 || self.repeat >= self.items {
            bail!(
                "repeat interval {} must be between 1 and the stream length {}",
                self.repeat,
                self.items
            );
        }
        checked(positive("hidden_size", self.hidden_size))?;
        checked(positive("dimension", self.dimension))?;
        checked(positive("train_steps", self.train_steps))?;
        checked(positive("log_every", self.log_every))?;
        Ok(())
    }

    /// `hebbnet-h100-inf-r3-s0`.
    fn run_name(&self) -> String {
        format!(
            "{}-h{}-{}-r{}-s{}",
            name_of(self.net),
            self.hidden_size,
            name_of(self.mode),
            self.repeat,
            self.seed
        )
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// What a stream is for; part of its seed, so that no two purposes share a stream.
#[derive(Clone, Copy)]
enum Purpose {
    Train = 1,
    Validation = 2,
    Test = 3,
    Generalisation = 4,
}

/// The seed of the stream for `purpose` number `index`.
fn stream_seed(data_seed: u64, purpose: Purpose, index: u64) -> u64 {
    crate::run_dir::derive_seed(data_seed, purpose as u64, index)
}

/// Accuracy and the rates of answering "familiar", on one stream.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Score {
    pub loss: f64,
    pub accuracy: f64,
    /// P(answer familiar | familiar).
    pub true_positive_rate: f64,
    /// P(answer familiar | novel).
    pub false_positive_rate: f64,
}

/// One point of the generalisation curve.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct GeneralisationPoint {
    pub repeat: usize,
    #[serde(flatten)]
    pub score: Score,
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub net: FamiliarityModel,
    pub hidden_size: usize,
    pub params: usize,
    pub mode: Mode,
    pub repeat: usize,
    pub train_steps: usize,
    pub items: usize,
    pub seed: u64,
    pub data_seed: u64,
    pub backend: String,
    /// Mean training loss and accuracy of the last `log_every` steps.
    pub final_train_loss: f64,
    pub final_train_acc: f64,
    pub final_val_acc: f64,
    /// On a fresh stream at the training interval.
    pub test_acc: f64,
    pub test_loss: f64,
    pub test_tpr: f64,
    pub test_fpr: f64,
    /// The largest test interval at which the true-positive rate exceeds the false-positive
    /// rate by at least 0.5 (0 if none): how far back the network reliably recognises.
    #[serde(default)]
    pub longest_repeat_half_detected: usize,
    pub generalisation: Vec<GeneralisationPoint>,
    /// The test intervals of the paper's generalisation figure, 1 to 19, every one evaluated
    /// (the authors' `plot_figs.py`; docs/authors-familiarity.md D5); the figure averages it
    /// over runs. Absent from summaries written before it existed.
    #[serde(default)]
    pub figure_generalisation: Vec<GeneralisationPoint>,
    pub train_seconds: f64,
    pub seconds_per_step: f64,
}

/// Progress saved with every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainingState {
    step: usize,
    final_train_loss: f64,
    final_train_acc: f64,
    final_val_acc: f64,
    train_seconds: f64,
    /// The steps since the last metrics row, when a run stopped between two (Ctrl-C): the row
    /// it owes averages them too.
    #[serde(default)]
    window: Window,
}

/// Sums over the steps since the last metrics row.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Window {
    loss: f64,
    correct: f64,
    steps: usize,
    seconds: f64,
}

pub const METRICS_HEADER: &str = "step,train_loss,train_acc,val_loss,val_acc,seconds";

/// The `familiarity` command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FamiliarityArgs {
    /// Network, at the paper's size unless --hidden is given (default hebbnet).
    #[arg(long, alias = "net", value_enum, conflicts_with = "config")]
    pub core: Option<FamiliarityModel>,
    /// `dat`: one fixed training stream; `inf`: a fresh stream every update (default inf).
    #[arg(long, value_enum, conflicts_with = "config")]
    pub mode: Option<Mode>,
    /// Repeat interval R (default 3).
    #[arg(long, conflicts_with = "config")]
    pub repeat: Option<usize>,
    /// Gradient updates, one per stream (default: the paper's, 3 000 dat, 1 600 inf at R 3,
    /// 3 500 inf at R 6); may extend a resumed run.
    #[arg(long, alias = "steps")]
    pub updates: Option<usize>,
    /// Hidden size (default: the paper's, ~10.2k parameters).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Items per stream (default 5 000).
    #[arg(long)]
    pub items: Option<usize>,
    /// Run the plastic networks op by op (the reference path) instead of on the fused kernel.
    #[arg(long)]
    pub ops: bool,
    /// Seed of the streams (separate from the model's --seed).
    #[arg(long)]
    pub data_seed: Option<u64>,
}

/// The continual familiarity experiment.
pub struct Familiarity;

impl Experiment for Familiarity {
    const NAME: &'static str = "familiarity";
    type Args = FamiliarityArgs;
    type Config = FamiliarityConfig;
    type Summary = Summary;

    fn paper_config(args: &FamiliarityArgs) -> Result<FamiliarityConfig> {
        Ok(FamiliarityConfig::paper(
            args.core.unwrap_or(FamiliarityModel::Hebbnet),
            args.mode.unwrap_or(Mode::Inf),
            args.repeat.unwrap_or(3),
        ))
    }

    fn override_config(args: &FamiliarityArgs, config: &mut FamiliarityConfig) {
        if let Some(hidden) = args.hidden {
            config.hidden_size = hidden;
        }
        if let Some(items) = args.items {
            config.items = items;
        }
        if args.ops {
            config.fused = false;
        }
        if let Some(seed) = args.data_seed {
            config.data_seed = seed;
        }
    }

    fn extend_config(args: &FamiliarityArgs, config: &mut FamiliarityConfig) {
        if let Some(updates) = args.updates {
            config.train_steps = updates;
        }
    }

    fn describe(config: &FamiliarityConfig) -> String {
        format!(
            "{}, {} updates on streams of {} items",
            config.run_name(),
            config.train_steps,
            config.items
        )
    }

    /// Trains (or resumes) a run and returns its summary (also written to `summary.json`).
    fn train(config: &FamiliarityConfig, session: &Session) -> Result<Summary> {
        let (device, host) = session.devices(config.seed)?;
        let (input, hidden, fused) = (config.dimension, config.hidden_size, config.fused);
        let readout = FamiliarityNetConfig::new();
        let plastic = |cell: StpnR| readout.init(cell, &host);
        type Plastic = FamiliarityNet<StpnR>;
        let train_with = |model: Plastic, constrain: fn(Plastic) -> Plastic| {
            train(model.fork(&device), constrain, config, session, &device)
        };
        let unconstrained: fn(Plastic) -> Plastic = std::convert::identity;
        match config.net {
            FamiliarityModel::Hebbnet => train_with(
                plastic(hebbnet_cell(input, hidden, fused, &host)),
                Plastic::with_decay_clamped,
            ),
            FamiliarityModel::Ustpnf => train_with(
                plastic(stpn_cell(input, hidden, false, false, fused, &host)),
                unconstrained,
            ),
            FamiliarityModel::Stpnf => train_with(
                plastic(stpn_cell(input, hidden, false, true, fused, &host)),
                unconstrained,
            ),
            FamiliarityModel::Ustpnr => train_with(
                plastic(stpn_cell(input, hidden, true, false, fused, &host)),
                unconstrained,
            ),
            FamiliarityModel::Stpnr => train_with(
                plastic(stpn_cell(input, hidden, true, true, fused, &host)),
                unconstrained,
            ),
            FamiliarityModel::Lstm => train(
                readout
                    .init(
                        LstmConfig::new(input, hidden)
                            .with_two_biases(true)
                            .init(&host),
                        &host,
                    )
                    .fork(&device),
                |model| model,
                config,
                session,
                &device,
            ),
        }
    }

    fn summary_line(config: &FamiliarityConfig, summary: &Summary) -> String {
        format!(
            "{}: {} params, {} updates ({:.2} s each), train_acc {:.4}, test_acc {:.4} (TPR {:.3}, FPR {:.3}) at R {}, TPR − FPR ≥ 0.5 up to R {}",
            config.run_name(),
            summary.params,
            summary.train_steps,
            summary.seconds_per_step,
            summary.final_train_acc,
            summary.test_acc,
            summary.test_tpr,
            summary.test_fpr,
            summary.repeat,
            summary.longest_repeat_half_detected,
        )
    }
}

/// The stream as a batch of one, `[T, 1, d]`, and its labels `[T, 1]`.
fn stream_tensors(stream: &FamiliarityStream, device: &Device) -> (Tensor<3>, Tensor<2>) {
    let steps = stream.len();
    let items = Tensor::from_data(
        TensorData::new(stream.items.clone(), [steps, 1, stream.dimension]),
        device,
    );
    let labels: Vec<f32> = stream.labels.iter().map(|&label| label as f32).collect();
    let labels = Tensor::from_data(TensorData::new(labels, [steps, 1]), device);
    (items, labels)
}

/// Binary cross-entropy of `σ(logits)` against `labels`, averaged, in the stable form
/// `max(z, 0) − y z + log(1 + e^{−|z|})`.
fn binary_cross_entropy(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    let softplus = logits.clone().clamp_min(0.0) + logits.clone().abs().neg().exp().log1p();
    (softplus - labels * logits).mean()
}

/// Loss, accuracy and rates of the logits `[T, 1]` of one stream.
fn score(logits: Tensor<2>, stream: &FamiliarityStream, loss: f64) -> Score {
    let answers = stpn_model::params::host_values::<f32, _>(logits);
    let (mut hits, mut familiar, mut false_alarms, mut novel) = (0usize, 0usize, 0usize, 0usize);
    for (answer, &label) in answers.iter().zip(&stream.labels) {
        let says_familiar = *answer > 0.0;
        if label == 1 {
            familiar += 1;
            hits += says_familiar as usize;
        } else {
            novel += 1;
            false_alarms += says_familiar as usize;
        }
    }
    let correct = hits + (novel - false_alarms);
    Score {
        loss,
        accuracy: correct as f64 / stream.len().max(1) as f64,
        true_positive_rate: hits as f64 / familiar.max(1) as f64,
        false_positive_rate: false_alarms as f64 / novel.max(1) as f64,
    }
}

/// Scores `model` (without autodiff) on `stream`.
pub fn evaluate<C: RecurrentCell>(model: &FamiliarityNet<C>, stream: &FamiliarityStream) -> Score {
    let device = model.readout_weight.val().device();
    let (items, labels) = stream_tensors(stream, &device);
    let logits = model.forward(items);
    let loss = binary_cross_entropy(logits.clone(), labels).into_scalar::<f64>();
    score(logits, stream, loss)
}

/// The largest test interval of `curve` with TPR − FPR ≥ 0.5 (0 if none).
pub fn longest_repeat_half_detected(curve: &[GeneralisationPoint]) -> usize {
    curve
        .iter()
        .filter(|point| point.score.true_positive_rate - point.score.false_positive_rate >= 0.5)
        .map(|point| point.repeat)
        .max()
        .unwrap_or(0)
}

/// Test intervals 1, 2, 3, … growing ×1.3 (rounded up, at least +1), as the reference.
fn next_test_interval(repeat: usize) -> usize {
    ((repeat as f64 * 1.3).ceil() as usize).max(repeat + 1)
}

/// The generalisation curve: fresh streams at growing intervals until the true-positive rate
/// falls to the false-positive rate (or the interval reaches half the stream).
pub fn generalisation<C: RecurrentCell>(
    model: &FamiliarityNet<C>,
    config: &FamiliarityConfig,
) -> Vec<GeneralisationPoint> {
    let mut points = Vec::new();
    let mut repeat = 1;
    while repeat <= config.items / 2 {
        let point = generalisation_point(model, config, repeat);
        points.push(point);
        if point.score.true_positive_rate <= point.score.false_positive_rate {
            break;
        }
        repeat = next_test_interval(repeat);
    }
    points
}

/// The test intervals of the paper's generalisation figure.
pub const FIGURE_TEST_INTERVALS: std::ops::RangeInclusive<usize> = 1..=19;

/// The paper figure's curve: a fresh stream at every interval of [`FIGURE_TEST_INTERVALS`] up
/// to half the stream, each scored whatever the one before gave (the streams of
/// [`generalisation`] at the intervals the two share).
pub fn figure_generalisation<C: RecurrentCell>(
    model: &FamiliarityNet<C>,
    config: &FamiliarityConfig,
) -> Vec<GeneralisationPoint> {
    FIGURE_TEST_INTERVALS
        .filter(|&repeat| repeat <= config.items / 2)
        .map(|repeat| generalisation_point(model, config, repeat))
        .collect()
}

/// The score on the fresh stream of test interval `repeat` (its own seed: both curves score the
/// same stream at an interval they share).
fn generalisation_point<C: RecurrentCell>(
    model: &FamiliarityNet<C>,
    config: &FamiliarityConfig,
    repeat: usize,
) -> GeneralisationPoint {
    let stream = config.stream(Purpose::Generalisation, repeat as u64, repeat);
    GeneralisationPoint {
        repeat,
        score: evaluate(model, &stream),
    }
}

#[allow(clippy::too_many_arguments)]
fn train<C: RecurrentCell>(
    model: FamiliarityNet<C>,
    constrain: impl Fn(FamiliarityNet<C>) -> FamiliarityNet<C>,
    config: &FamiliarityConfig,
    session: &Session,
    device: &Device,
) -> Result<Summary> {
    let (run, quiet) = (&session.run, session.quiet);
    let params = model.num_params();
    let mut model = constrain(model);
    let mut optimizer = stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON);
    let mut state = TrainingState {
        step: 0,
        final_train_loss: f64::NAN,
        final_train_acc: f64::NAN,
        final_val_acc: f64::NAN,
        train_seconds: 0.0,
        window: Window::default(),
    };
    (model, optimizer, state) = run.resume_training(model, optimizer, state, session.resume)?;
    let metrics = Metrics::open(run, METRICS_HEADER, state.step)?;
    let fixed_train =
        (config.mode == Mode::Dat).then(|| config.stream(Purpose::Train, 0, config.repeat));
    let validation = config.stream(Purpose::Validation, 0, config.repeat);

    let progress = crate::run_dir::progress_bar(
        config.train_steps.saturating_sub(state.step),
        "steps",
        quiet,
    );
    if state.step > 0 && !quiet {
        progress.println(format!(
            "resuming {} after step {}",
            run.path.display(),
            state.step
        ));
    }

    let mut window = state.window;
    let mut window_started = Instant::now();
    for step in state.step + 1..=config.train_steps {
        let fresh;
        let stream = match &fixed_train {
            Some(stream) => stream,
            None => {
                fresh = config.stream(Purpose::Train, step as u64, config.repeat);
                &fresh
            }
        };
        let (items, labels) = stream_tensors(stream, device);
        let logits = model.forward(items);
        let loss = binary_cross_entropy(logits.clone(), labels);
        let loss_value = loss.clone().into_scalar::<f64>();
        session.ensure_finite("training loss", loss_value, format_args!("update {step}"))?;
        let training = score(logits.detach(), stream, loss_value);
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = constrain(optimizer.step(config.learning_rate, model, gradients));
        window.loss += loss_value;
        window.correct += training.accuracy;
        window.steps += 1;
        progress.inc(1);

        if step % config.log_every == 0 || step == config.train_steps {
            let seconds = window.seconds + window_started.elapsed().as_secs_f64();
            let validation_score = evaluate(&model.valid(), &validation);
            state.step = step;
            state.final_train_loss = window.loss / window.steps as f64;
            state.final_train_acc = window.correct / window.steps as f64;
            state.window = Window::default();
            state.final_val_acc = validation_score.accuracy;
            state.train_seconds += seconds;
            // The metrics row first: a row without its checkpoint is dropped on resume.
            metrics.append(&format!(
                "{step},{:.6},{:.6},{:.6},{:.6},{seconds:.3}",
                state.final_train_loss,
                state.final_train_acc,
                validation_score.loss,
                validation_score.accuracy
            ))?;
            run.save_training(&model, &optimizer, &state)?;
            progress.set_message(format!(
                "loss {:.4}  acc {:.3}  val_acc {:.3}",
                state.final_train_loss, state.final_train_acc, state.final_val_acc
            ));
            if quiet {
                tracing::info!(
                    "step {step} loss {:.4} acc {:.4} val_acc {:.4}",
                    state.final_train_loss,
                    state.final_train_acc,
                    state.final_val_acc
                );
            }
            window = Window::default();
            window_started = Instant::now();
        } else if crate::experiments::interrupted() {
            // Stopped between two rows: the checkpoint carries the open window, so the resumed
            // run writes the rows an uninterrupted one would.
            window.seconds += window_started.elapsed().as_secs_f64();
            state.step = step;
            state.window = window;
            run.save_training(&model, &optimizer, &state)?;
        }
        session.stop_if_interrupted("update", step)?;
    }
    progress.finish_and_clear();

    let trained = model.valid();
    let test = evaluate(&trained, &config.stream(Purpose::Test, 0, config.repeat));
    let curve = generalisation(&trained, config);
    write_generalisation(run, config, &curve)?;
    let summary = Summary {
        net: config.net,
        hidden_size: config.hidden_size,
        params,
        mode: config.mode,
        repeat: config.repeat,
        train_steps: state.step,
        items: config.items,
        seed: config.seed,
        data_seed: config.data_seed,
        backend: session.backend.to_string(),
        final_train_loss: state.final_train_loss,
        final_train_acc: state.final_train_acc,
        final_val_acc: state.final_val_acc,
        test_acc: test.accuracy,
        test_loss: test.loss,
        test_tpr: test.true_positive_rate,
        test_fpr: test.false_positive_rate,
        longest_repeat_half_detected: longest_repeat_half_detected(&curve),
        generalisation: curve,
        figure_generalisation: figure_generalisation(&trained, config),
        train_seconds: state.train_seconds,
        seconds_per_step: state.train_seconds / state.step.max(1) as f64,
    };
    run.write_json("summary.json", &summary)?;
    Ok(summary)
}

/// `generalisation.csv` and `generalisation.svg` of one run.
fn write_generalisation(
    run: &RunDir,
    config: &FamiliarityConfig,
    curve: &[GeneralisationPoint],
) -> Result<()> {
    let mut csv = String::from("repeat,loss,acc,tpr,fpr\n");
    for point in curve {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6}\n",
            point.repeat,
            point.score.loss,
            point.score.accuracy,
            point.score.true_positive_rate,
            point.score.false_positive_rate
        ));
    }
    crate::run_dir::write_atomically(&run.file("generalisation.csv"), csv.as_bytes())?;
    plot_generalisation(
        &[(config.run_name(), curve.to_vec())],
        &format!(
            "Familiarity, {} trained at R = {}: generalisation",
            name_of(config.net),
            config.repeat
        ),
        &run.file("generalisation.svg"),
    )
}

/// Accuracy against the test interval (log scale), one line per curve, with the chance level
/// 2/3; a single curve also gets its true- and false-positive rates.
pub fn plot_generalisation(
    curves: &[(String, Vec<GeneralisationPoint>)],
    title: &str,
    path: &Path,
) -> Result<()> {
    let longest = curves
        .iter()
        .flat_map(|(_, curve)| curve.iter().map(|point| point.repeat))
        .max()
        .unwrap_or(2)
        .max(2) as f64;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((1f64..longest * 1.1).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("test interval R")
        .y_desc("fraction")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, 2.0 / 3.0), (longest * 1.1, 2.0 / 3.0)],
            BLACK.mix(0.4),
        ))?
        .label("chance (always novel)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    let single = curves.len() == 1;
    for (index, (name, curve)) in curves.iter().enumerate() {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![(
            if single {
                format!("{name}: accuracy")
            } else {
                name.clone()
            },
            curve
                .iter()
                .map(|point| (point.repeat as f64, point.score.accuracy))
                .collect(),
        )];
        if single {
            series.push((
                "true-positive rate".into(),
                curve
                    .iter()
                    .map(|point| (point.repeat as f64, point.score.true_positive_rate))
                    .collect(),
            ));
            series.push((
                "false-positive rate".into(),
                curve
                    .iter()
                    .map(|point| (point.repeat as f64, point.score.false_positive_rate))
                    .collect(),
            ));
        }
        for (offset, (label, points)) in series.into_iter().enumerate() {
            let style = crate::plot::color(index + offset).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(
                points.into_iter().map(|point| {
                    Circle::new(point, 3, crate::plot::color(index + offset).filled())
                }),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use stpn_model::params::{NamedValues, named_values};

    use std::path::PathBuf;

    use stpn_model::Backend;

    use super::*;

    fn tiny(net: FamiliarityModel, items: usize, steps: usize) -> FamiliarityConfig {
        let mut config = FamiliarityConfig::paper(net, Mode::Inf, 3);
        config.items = items;
        config.train_steps = steps;
        config
    }

    fn scratch(name: &str) -> PathBuf {
        crate::test_support::scratch("fam", name)
    }

    fn train_fresh(config: &FamiliarityConfig, name: &str) -> (Summary, RunDir) {
        let run = RunDir::create(&scratch(name)).unwrap();
        run.write_json("config.json", config).unwrap();
        let session = Session::new(run, Backend::Flex, false, true);
        let summary = Familiarity::train(config, &session).unwrap();
        let run = session.run;
        (summary, run)
    }

    fn last_weights(config: &FamiliarityConfig, run: &RunDir) -> Vec<(String, NamedValues)> {
        let device = Backend::Flex.device().unwrap();
        let cell = stpn_cell(
            config.dimension,
            config.hidden_size,
            true,
            true,
            true,
            &device,
        );
        let network = FamiliarityNetConfig::new()
            .init(cell, &device)
            .try_load_file(run.checkpoint("last").unwrap().join("model.bpk"))
            .unwrap();
        named_values(&network).into_iter().collect()
    }

    #[test]
    fn paper_settings() {
        let steps =
            |mode, repeat| FamiliarityConfig::paper(FamiliarityModel::Hebbnet, mode, repeat);
        assert_eq!(steps(Mode::Dat, 3).train_steps, 3000);
        assert_eq!(steps(Mode::Inf, 3).train_steps, 1600);
        assert_eq!(steps(Mode::Inf, 6).train_steps, 3500);
        let config = steps(Mode::Inf, 3);
        assert_eq!(
            (config.items, config.dimension, config.probability),
            (5000, 100, 0.5)
        );
        assert_eq!(config.learning_rate, 1e-3);
        assert_eq!(config.run_name(), "hebbnet-h100-inf-r3-s0");
    }

    #[test]
    fn test_intervals_grow_by_thirty_percent() {
        let mut intervals = vec![1];
        while intervals.len() < 12 {
            intervals.push(next_test_interval(*intervals.last().unwrap()));
        }
        assert_eq!(intervals, [1, 2, 3, 4, 6, 8, 11, 15, 20, 26, 34, 45]);
    }

    #[test]
    fn streams_differ_by_purpose_and_step() {
        let config = tiny(FamiliarityModel::Stpnr, 50, 1);
        let train = config.stream(Purpose::Train, 1, 3);
        assert_eq!(train, config.stream(Purpose::Train, 1, 3));
        assert_ne!(train.items, config.stream(Purpose::Train, 2, 3).items);
        assert_ne!(train.items, config.stream(Purpose::Test, 1, 3).items);
    }

    #[test]
    fn malformed_settings_are_clear_errors() {
        let mut config = tiny(FamiliarityModel::Stpnr, 50, 1);
        config.repeat = 50;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("repeat interval 50"), "{error}");
        let path = scratch("bad-config.json");
        std::fs::write(&path, r#"{"net": "stpnr", "hidden": 3}"#).unwrap();
        let error = format!("{:#}", FamiliarityConfig::load(&path).unwrap_err());
        assert!(error.contains("malformed"), "{error}");
        std::fs::remove_file(&path).ok();
    }

    /// An interrupted run resumed from its checkpoint ends where an uninterrupted one does.
    #[test]
    fn resume_equals_uninterrupted() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(FamiliarityModel::Stpnr, 120, 20);
        let (straight, straight_run) = train_fresh(&config, "straight");
        let mut first_part = config.clone();
        first_part.train_steps = 10;
        let (_, resumed_run) = train_fresh(&first_part, "resumed");
        let session = Session::new(resumed_run, Backend::Flex, true, true);
        let resumed = Familiarity::train(&config, &session).unwrap();
        let resumed_run = session.run;
        assert_eq!(
            last_weights(&config, &straight_run),
            last_weights(&config, &resumed_run)
        );
        assert_eq!(straight.test_acc, resumed.test_acc);
        assert_eq!(straight.test_loss, resumed.test_loss);
        assert_eq!(straight.generalisation, resumed.generalisation);
        let metrics = crate::test_support::metrics_without_timing;
        assert_eq!(metrics(&straight_run), metrics(&resumed_run));
        assert_eq!(metrics(&straight_run).len(), 3);
        for run in [straight_run, resumed_run] {
            std::fs::remove_dir_all(&run.path).ok();
        }
    }

    /// STPNr learns the task well above chance (2/3) within a minute, and the summary carries
    /// the names scripts read.
    #[test]
    fn stpn_learns_above_chance() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(FamiliarityModel::Stpnr, 500, 60);
        let (summary, run) = train_fresh(&config, "learns");
        assert!(summary.test_acc > 0.8, "test accuracy {}", summary.test_acc);
        assert!(summary.test_tpr > summary.test_fpr + 0.3, "{summary:?}");
        assert!(summary.longest_repeat_half_detected >= 3, "{summary:?}");
        // The figure's curve: every interval from 1 (up to half the stream), the same scores as
        // the other curve where they share an interval.
        let intervals: Vec<usize> = summary
            .figure_generalisation
            .iter()
            .map(|p| p.repeat)
            .collect();
        let expected: Vec<usize> = FIGURE_TEST_INTERVALS
            .filter(|&r| r <= config.items / 2)
            .collect();
        assert_eq!(intervals, expected);
        for point in &summary.generalisation {
            if let Some(same) = summary
                .figure_generalisation
                .iter()
                .find(|p| p.repeat == point.repeat)
            {
                assert_eq!(
                    same.score.accuracy.to_bits(),
                    point.score.accuracy.to_bits()
                );
            }
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.file("summary.json")).unwrap())
                .unwrap();
        for field in ["net", "params", "mode", "repeat", "train_steps", "test_acc"] {
            assert!(json.get(field).is_some(), "summary.json lacks {field}");
        }
        assert_eq!(json["net"], "stpnr");
        assert_eq!(json["params"], 10_342);
        assert!(run.file("generalisation.csv").exists());
        assert!(run.file("generalisation.svg").exists());
        std::fs::remove_dir_all(&run.path).ok();
    }

    /// `dat` mode trains on one fixed stream: its training accuracy climbs above the validation
    /// stream's, which it never sees.
    #[test]
    fn dat_mode_fits_its_one_stream() {
        let _seeded = crate::seeded_device_lock();
        let mut config = tiny(FamiliarityModel::Lstm, 60, 60);
        config.mode = Mode::Dat;
        config.hidden_size = 8;
        config.learning_rate = 3e-2;
        let (summary, run) = train_fresh(&config, "dat");
        assert_eq!(summary.mode, Mode::Dat);
        assert!(
            summary.final_train_acc > summary.final_val_acc,
            "{summary:?}"
        );
        std::fs::remove_dir_all(&run.path).ok();
    }

    /// HebbNet's loss falls below the entropy of the labels (what any predictor without memory
    /// of the items is bound by), and λ stays in [0, 1].
    #[test]
    fn hebbnet_uses_its_memory() {
        let _seeded = crate::seeded_device_lock();
        let config = tiny(FamiliarityModel::Hebbnet, 400, 40);
        let (summary, run) = train_fresh(&config, "hebbnet");
        let familiar: f64 = 1.0 / 3.0;
        let entropy = -(familiar * familiar.ln() + (1.0 - familiar) * (1.0 - familiar).ln());
        assert!(
            summary.test_loss < entropy - 0.1,
            "{} vs {entropy}",
            summary.test_loss
        );
        std::fs::remove_dir_all(&run.path).ok();
    }
}
