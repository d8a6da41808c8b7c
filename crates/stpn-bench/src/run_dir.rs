//! A run directory: the resolved config, metrics appended one row per epoch, checkpoints written
//! so that an interruption at any moment leaves a usable one, and the summary.
//!
//! A checkpoint is a folder (`last/`, `best/`). It is written whole under `NAME.tmp/`, then
//! swapped in: `NAME/` → `NAME.old/`, `NAME.tmp/` → `NAME/`, `NAME.old/` removed. Each rename is
//! atomic, so a reader finds `NAME/` or, between two renames, `NAME.old/`.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tensorboard::EventWriter;

/// A run's folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Creates a new run folder. Refuses a folder that already holds a run, and any other folder
    /// that is not empty: a run writes and replaces `last/`, `best/`, `metrics.csv`, …, and must
    /// never overwrite what a user keeps there.
    pub fn create(path: &Path) -> Result<Self> {
        if path.join("config.json").exists() {
            bail!(
                "{} already holds a run; pass --resume to continue it, or --out to choose another folder",
                path.display()
            );
        }
        if path.exists() {
            let empty = fs::read_dir(path)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
            if !empty {
                bail!(
                    "{} exists and is not an empty folder; choose a new or empty folder with --out",
                    path.display()
                );
            }
        }
        fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing run folder (to resume or evaluate it).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join("config.json").exists() {
            bail!(
                "{} is not a run folder (it has no config.json); give the --out folder of a training run",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `value` as pretty JSON, atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        write_atomically(&self.file(name), text.as_bytes())
    }

    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        read_json(&self.file(name))
    }

    /// Writes a checkpoint folder through `write`, which fills the folder it is given.
    pub fn write_checkpoint(
        &self,
        name: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let target = self.file(name);
        let staging = self.file(&format!("{name}.tmp"));
        let previous = self.file(&format!("{name}.old"));
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        fs::create_dir_all(&staging)?;
        write(&staging)
            .with_context(|| format!("cannot write checkpoint {}", staging.display()))?;
        if previous.exists() {
            fs::remove_dir_all(&previous)?;
        }
        if target.exists() {
            fs::rename(&target, &previous)?;
        }
        fs::rename(&staging, &target)?;
        if previous.exists() {
            fs::remove_dir_all(&previous)?;
        }
        Ok(())
    }

    /// Writes the training checkpoint `last/`: the model, the optimiser and the progress `state`.
    pub fn save_training<M: burn::module::Module, S: Serialize>(
        &self,
        model: &M,
        optimizer: &burn::optim::module_optimizer::ModuleOptimizer,
        state: &S,
    ) -> Result<()> {
        self.write_checkpoint("last", |folder| {
            model.clone().save_file(folder.join("model.bpk"))?;
            optimizer.save(folder.join("optimizer.bpk"))?;
            fs::write(
                folder.join("state.json"),
                serde_json::to_string_pretty(state)?,
            )?;
            Ok(())
        })
    }

    /// The model of the last checkpoint, loaded into `model` (a freshly built one of the run's
    /// configuration), and the iteration it was saved at (`iteration` of the same checkpoint's
    /// `state.json`; `None` if it has none): what evaluations start from.
    pub fn load_last_model<M: burn::module::Module>(&self, model: M) -> Result<(M, Option<usize>)> {
        let folder = self
            .checkpoint("last")
            .with_context(|| format!("{} has no checkpoint to evaluate", self.path.display()))?;
        let model = model
            .try_load_file(folder.join("model.bpk"))
            .with_context(|| format!("cannot load the model of {}", folder.display()))?;
        let iteration = read_json::<serde_json::Value>(&folder.join("state.json"))
            .ok()
            .and_then(|state| state.get("iteration")?.as_u64())
            .map(|iteration| iteration as usize);
        Ok((model, iteration))
    }

    /// With `resume`, the model, optimiser and progress of the training checkpoint `last/` (if
    /// the run has one) in place of the fresh ones given; otherwise the fresh ones.
    pub fn resume_training<M: burn::module::Module, S: DeserializeOwned>(
        &self,
        model: M,
        optimizer: burn::optim::module_optimizer::ModuleOptimizer,
        state: S,
        resume: bool,
    ) -> Result<(M, burn::optim::module_optimizer::ModuleOptimizer, S)> {
        let Some(folder) = self.checkpoint("last").filter(|_| resume) else {
            return Ok((model, optimizer, state));
        };
        let model = model
            .try_load_file(folder.join("model.bpk"))
            .with_context(|| format!("cannot load the model of {}", folder.display()))?;
        let optimizer = optimizer
            .load(folder.join("optimizer.bpk"))
            .with_context(|| format!("cannot load the optimizer of {}", folder.display()))?;
        let state = read_json(&folder.join("state.json"))?;
        Ok((model, optimizer, state))
    }

    /// The folder of a complete checkpoint, if there is one.
    pub fn checkpoint(&self, name: &str) -> Option<PathBuf> {
        [self.file(name), self.file(&format!("{name}.old"))]
            .into_iter()
            .find(|folder| folder.is_dir())
    }
}

/// What `eval.json` holds: an evaluation of a run's last checkpoint on fresh episodes without
/// updates (`maze-eval`, `pendulum-eval`, `pong-eval`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    pub episodes: usize,
    pub greedy: bool,
    pub mean_return: f64,
    pub std_return: f64,
    /// Mean episode length in environment steps.
    #[serde(default)]
    pub mean_length: f64,
    /// Energy of a step summed over the core's units, mean over steps and episodes
    /// (docs/reference.md §2.3): the paper's aggregation for Pong and InvertedPendulum.
    pub energy_per_step: f64,
    /// The same per unit (divided by H, or 4H for an LSTM): the authors' maze code saved the mean
    /// over units and episodes, so this is the maze's figure in the paper's terms
    /// (docs/authors-rl.md §5).
    #[serde(default)]
    pub energy_per_unit_per_step: f64,
    pub seed: u64,
    /// The training iteration of the checkpoint evaluated (absent in evaluations made before it
    /// was recorded): a run that trained on after its evaluation shows which model was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_iteration: Option<usize>,
    /// Pong: how much of the conv encoder is alive on frames of random play.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<stpn_rl::conv_encoder::EncoderActivity>,
}

impl Evaluation {
    /// From the result of [`stpn_rl::evaluate`].
    pub fn of(result: &stpn_rl::evaluate::EvaluationResult, greedy: bool, seed: u64) -> Self {
        let (mean_return, std_return) = result.return_mean_std();
        Self {
            episodes: result.returns.len(),
            greedy,
            mean_return,
            std_return,
            mean_length: result.lengths.iter().sum::<usize>() as f64
                / result.lengths.len().max(1) as f64,
            energy_per_step: result.energy_per_step,
            energy_per_unit_per_step: result.energy_per_step / result.energy_units.max(1) as f64,
            seed,
            checkpoint_iteration: None,
            encoder: None,
        }
    }

    /// [`Self::of`] the checkpoint saved at `iteration`.
    pub fn of_checkpoint(
        result: &stpn_rl::evaluate::EvaluationResult,
        greedy: bool,
        seed: u64,
        iteration: Option<usize>,
    ) -> Self {
        Self {
            checkpoint_iteration: iteration,
            ..Self::of(result, greedy, seed)
        }
    }

    /// How the tables describe the evaluation's actions, and its checkpoint when recorded:
    /// `sampled` or `greedy, iteration 725`.
    pub fn label(&self) -> String {
        let actions = if self.greedy { "greedy" } else { "sampled" };
        match self.checkpoint_iteration {
            Some(iteration) => format!("{actions}, iteration {iteration}"),
            None => actions.to_string(),
        }
    }

    /// The line the evaluation commands print.
    pub fn line(&self, run: &RunDir) -> String {
        let encoder = self.encoder.map_or(String::new(), |encoder| {
            format!(
                ", encoder: {:.0}% of first-layer filters alive, {:.0}% of features varying",
                100.0 * encoder.first_layer_filters_alive,
                100.0 * encoder.features_varying
            )
        });
        format!(
            "{}: {} episodes ({}), mean return {:.2} ± {:.2}, mean length {:.0}, energy per step {:.3}{encoder}  [{}]",
            run.path.display(),
            self.episodes,
            self.label(),
            self.mean_return,
            self.std_return,
            self.mean_length,
            self.energy_per_step,
            run.file("eval.json").display()
        )
    }
}

pub fn progress_bar(length: usize, unit: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  (eta {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

/// The last ten episode returns (or iteration rewards) of a run, saved with its progress (as a
/// plain list in `state.json`).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LastTen(Vec<f64>);

impl LastTen {
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
        if self.0.len() > 10 {
            self.0.remove(0);
        }
    }

    /// The mean of the values kept (0 when there are none).
    pub fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }

    pub fn is_full(&self) -> bool {
        self.0.len() == 10
    }
}

/// The progress of an RL run, saved with every checkpoint (flattened into each task's
/// `state.json`, so the field names are those of the files).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RlProgress {
    pub iteration: usize,
    pub env_steps: u64,
    pub episodes: u64,
    pub recent_returns: LastTen,
    pub train_seconds: f64,
}

impl RlProgress {
    /// Counts one iteration of `seconds` that brought the run to `env_steps` and finished
    /// episodes with `returns`.
    pub fn record(&mut self, env_steps: u64, seconds: f64, returns: impl IntoIterator<Item = f64>) {
        self.iteration += 1;
        self.env_steps = env_steps;
        self.train_seconds += seconds;
        for episode_return in returns {
            self.episodes += 1;
            self.recent_returns.push(episode_return);
        }
    }

    /// What `summary.json` reports of it.
    pub fn summary(&self) -> RlSummary {
        RlSummary {
            env_steps: self.env_steps,
            episodes: self.episodes,
            mean_return_last10: self.recent_returns.mean(),
            steps_per_second: self.env_steps as f64 / self.train_seconds.max(1e-9),
            train_seconds: self.train_seconds,
        }
    }
}

/// The part of every RL task's `summary.json` that measures the run (flattened into it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RlSummary {
    pub env_steps: u64,
    pub episodes: u64,
    /// Mean return of the last 10 finished episodes (maze: of the last 10 iterations, each the
    /// mean over its batch).
    pub mean_return_last10: f64,
    pub steps_per_second: f64,
    pub train_seconds: f64,
}

/// A seed derived from a run's seed and two indices (SplitMix64 mixing): the seed of one stream,
/// episode or iteration, so that runs resume exactly and no two purposes share a generator.
pub fn derive_seed(seed: u64, first: u64, second: u64) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    mix(mix(mix(seed) ^ first) ^ second)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// Writes a file through a temporary sibling and a rename, so that readers never see half of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let staging = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&staging)
            .with_context(|| format!("cannot write {}", staging.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&staging, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A CSV file of one row per epoch, mirrored row by row into a TensorBoard event file of the
/// run folder (`events.out.tfevents.*`).
pub struct Metrics {
    path: PathBuf,
    /// The header's column names: the first is the step, the others the scalars' tags.
    columns: Vec<String>,
    /// `None` once writing it failed: the events are a convenience, and must never stop a run or
    /// touch `metrics.csv`.
    events: RefCell<Option<EventWriter>>,
}

impl Metrics {
    /// Opens `metrics.csv`, keeping only the rows of epochs up to `keep_epochs` (the rows of an
    /// epoch whose checkpoint was not written are dropped on resume), and starts a new event file
    /// that holds the rows appended from now on (TensorBoard merges the files of a folder, and
    /// drops the earlier files' rows after `keep_epochs`).
    pub fn open(run: &RunDir, header: &str, keep_epochs: usize) -> Result<Self> {
        let path = run.file("metrics.csv");
        let mut kept = vec![header.to_string()];
        if let Ok(text) = fs::read_to_string(&path) {
            kept.extend(
                text.lines()
                    .skip(1)
                    .filter(|line| {
                        line.split(',')
                            .next()
                            .and_then(|epoch| epoch.parse::<usize>().ok())
                            .is_some_and(|epoch| epoch <= keep_epochs)
                    })
                    .map(str::to_string),
            );
        }
        write_atomically(&path, (kept.join("\n") + "\n").as_bytes())?;
        let events = EventWriter::create(&run.path, keep_epochs as i64 + 1)
            .inspect_err(|error| {
                tracing::warn!(
                    "{error:#}; this run writes no TensorBoard events (metrics.csv as usual)"
                )
            })
            .ok();
        Ok(Self {
            path,
            columns: header.split(',').map(str::to_string).collect(),
            events: RefCell::new(events),
        })
    }

    /// Appends a row (comma-separated, its first cell the epoch, update or iteration) and syncs
    /// it; then the same row as one TensorBoard event.
    pub fn append(&self, row: &str) -> Result<()> {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        writeln!(file, "{row}")
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.append_event(row);
        Ok(())
    }

    /// `row` as one event at the step of its first cell, one scalar per other numeric cell,
    /// tagged with its column's name. A failure warns once and ends the events, not the run.
    fn append_event(&self, row: &str) {
        let mut events = self.events.borrow_mut();
        let Some(writer) = events.as_ref() else {
            return;
        };
        let mut cells = row.split(',').map(str::trim);
        let Some(step) = cells.next().and_then(|cell| cell.parse::<i64>().ok()) else {
            return;
        };
        let scalars = self.columns[1..]
            .iter()
            .zip(cells)
            .filter_map(|(tag, cell)| Some((tag.as_str(), cell.parse::<f32>().ok()?)));
        if let Err(error) = writer.write_scalars(step, scalars) {
            tracing::warn!(
                "{error:#}; TensorBoard events of this run stop here (metrics.csv continues)"
            );
            *events = None;
        }
    }
}
