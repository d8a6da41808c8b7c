//! Parity with the authors' PyTorch code: runs a case file produced by the reference (the format
//! of `tests/golden/README.md`) and measures how far this implementation is from every number in
//! it: per-step outputs (or the readout's logits), per-unit (or per-step) energy, the final state,
//! the loss and the gradient of the loss with respect to every parameter.
//!
//! A case names its cell and options in `flags`; any size and seed works. The comparison runs in
//! float64 where the backend supports it and in float32 otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use serde_json::Value;

use crate::art_net::{ArtNet, ArtNetConfig};
use crate::cell::{CellState, RecurrentCell, run_sequence};
use crate::params::{LoadError, NamedValues, host_values, load_named, named_gradients};
use crate::{
    FastWeightsConfig, HebbFfConfig, LstmConfig, ModplastConfig, Normalisation, Presynaptic,
    RnnConfig, StpnFConfig, StpnRConfig,
};

/// Largest scale-relative error accepted in float64 (the reference agrees to about 1e-12).
pub const F64_TOLERANCE: f64 = 1e-10;
/// Largest scale-relative error accepted on outputs, energy and state in float32.
pub const F32_TOLERANCE: f64 = 1e-5;
/// Largest scale-relative error accepted on gradients in float32.
pub const F32_GRADIENT_TOLERANCE: f64 = 1e-4;

/// Why a case could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("case `{case}`: {message}")]
    Format { case: String, message: String },
    #[error("case `{case}`: {source}")]
    Parameters { case: String, source: LoadError },
}

/// One parity case file.
#[derive(Clone, Debug)]
pub struct ParityCase {
    /// The case's `name`.
    pub name: String,
    json: Value,
}

/// A nested JSON array, flattened row-major.
#[derive(Clone, Debug)]
struct Array {
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn flatten(
    value: &Value,
    shape: &mut Vec<usize>,
    depth: usize,
    out: &mut Vec<f64>,
) -> Result<(), String> {
    match value {
        Value::Number(number) => {
            if depth != shape.len() && !shape.is_empty() {
                return Err("ragged array".into());
            }
            out.push(number.as_f64().ok_or("not a finite number")?);
            Ok(())
        }
        Value::Array(items) => {
            if depth == shape.len() {
                shape.push(items.len());
            } else if shape[depth] != items.len() {
                return Err("ragged array".into());
            }
            items
                .iter()
                .try_for_each(|item| flatten(item, shape, depth + 1, out))
        }
        _ => Err("expected a number or an array of numbers".into()),
    }
}

impl ParityCase {
    /// Reads a case file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ParityError> {
        let path = path.as_ref();
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ParityError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_json(&text, &display)
    }

    /// Parses a case from its JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, ParityError> {
        let json: Value = serde_json::from_str(text).map_err(|source| ParityError::Json {
            path: origin.to_string(),
            source,
        })?;
        let name = json
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(origin)
            .to_string();
        if !json.get("flags").is_some_and(Value::is_object) {
            return Err(ParityError::Format {
                case: name,
                message: "no `flags` object: not a parity case file".into(),
            });
        }
        Ok(Self { name, json })
    }

    fn error(&self, message: impl Into<String>) -> ParityError {
        ParityError::Format {
            case: self.name.clone(),
            message: message.into(),
        }
    }

    fn array(&self, value: &Value, what: &str) -> Result<Array, ParityError> {
        let (mut shape, mut values) = (Vec::new(), Vec::new());
        flatten(value, &mut shape, 0, &mut values)
            .map_err(|message| self.error(format!("`{what}`: {message}")))?;
        Ok(Array { shape, values })
    }

    fn field(&self, key: &str) -> Result<Array, ParityError> {
        let value = self
            .json
            .get(key)
            .ok_or_else(|| self.error(format!("missing field `{key}`")))?;
        self.array(value, key)
    }

    fn size(&self, key: &str) -> Result<usize, ParityError> {
        self.json
            .get(key)
            .and_then(Value::as_u64)
            .map(|size| size as usize)
            .ok_or_else(|| self.error(format!("missing or invalid size `{key}`")))
    }

    fn flag(&self, key: &str) -> Option<&Value> {
        self.json["flags"].get(key).filter(|value| !value.is_null())
    }

    fn flag_str(&self, key: &str) -> Result<Option<&str>, ParityError> {
        self.flag(key)
            .map(|value| {
                value
                    .as_str()
                    .ok_or_else(|| self.error(format!("flag `{key}` must be a string")))
            })
            .transpose()
    }

    fn flag_bool(&self, key: &str, default: bool) -> Result<bool, ParityError> {
        self.flag(key).map_or(Ok(default), |value| {
            value
                .as_bool()
                .ok_or_else(|| self.error(format!("flag `{key}` must be true or false")))
        })
    }

    fn flag_f64(&self, key: &str) -> Result<Option<f64>, ParityError> {
        self.flag(key)
            .map(|value| {
                value
                    .as_f64()
                    .ok_or_else(|| self.error(format!("flag `{key}` must be a number")))
            })
            .transpose()
    }

    fn named_arrays(&self, key: &str) -> Result<BTreeMap<String, Array>, ParityError> {
        let object = self
            .json
            .get(key)
            .and_then(Value::as_object)
            .ok_or_else(|| self.error(format!("missing object `{key}`")))?;
        object
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.array(value, &format!("{key}.{name}"))?)))
            .collect()
    }

    /// The case's cell (`flags.cell`).
    pub fn cell(&self) -> Result<&str, ParityError> {
        self.flag_str("cell")?
            .ok_or_else(|| self.error("missing flag `cell`"))
    }

    /// Whether the case runs the associative-retrieval network (cell + readout).
    pub fn is_art(&self) -> bool {
        self.json.get("output_size").is_some()
    }
}

/// The error of one quantity.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// What was compared (`outputs`, `energy`, `state.F`, `loss`, `grad.weight`, …).
    pub quantity: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest absolute difference divided by the largest magnitude of the reference values
    /// (the absolute difference where the reference is all zero).
    pub relative: f64,
    /// Largest `relative` accepted.
    pub tolerance: f64,
}

impl Comparison {
    fn new(quantity: String, observed: &[f64], expected: &[f64], tolerance: f64) -> Self {
        let max_abs = observed
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, |worst: f64, error| {
                if error.is_nan() {
                    f64::NAN
                } else {
                    worst.max(error)
                }
            });
        let scale = expected
            .iter()
            .fold(0.0f64, |scale, value| scale.max(value.abs()));
        let relative = if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        };
        Self {
            quantity,
            max_abs,
            relative,
            tolerance,
        }
    }

    /// Whether the error is within tolerance (a NaN never is).
    pub fn passed(&self) -> bool {
        self.relative <= self.tolerance
    }
}

/// The result of one case on one device.
#[derive(Clone, Debug)]
pub struct ParityReport {
    pub case: String,
    /// The float type the case ran in.
    pub dtype: DType,
    pub comparisons: Vec<Comparison>,
}

impl ParityReport {
    /// Whether every quantity is within tolerance.
    pub fn passed(&self) -> bool {
        self.comparisons.iter().all(Comparison::passed)
    }

    /// The largest error relative to its tolerance.
    pub fn worst(&self) -> Option<&Comparison> {
        self.comparisons
            .iter()
            .max_by(|a, b| (a.relative / a.tolerance).total_cmp(&(b.relative / b.tolerance)))
    }
}

/// What this implementation produced for a case.
struct Observed {
    outputs: Vec<f64>,
    energy: Vec<f64>,
    final_state: BTreeMap<String, Vec<f64>>,
    loss: f64,
    gradients: BTreeMap<String, Option<NamedValues>>,
}

struct Inputs {
    dtype: DType,
    device: Device,
    parameters: BTreeMap<String, Vec<f64>>,
}

impl Inputs {
    fn tensor<const D: usize>(&self, array: &Array) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(array.values.clone(), array.shape.clone()),
            (&self.device, self.dtype),
        )
    }
}

/// The float type a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// float64 where the backend supports it, float32 otherwise.
    Highest,
    /// float32, the type models train in.
    Float32,
}

/// Runs `case` on `device` in the highest precision the backend supports (autodiff is enabled
/// here) and compares it with the reference.
pub fn run_case(case: &ParityCase, device: &Device) -> Result<ParityReport, ParityError> {
    run_case_in(case, device, Precision::Highest)
}

/// [`run_case`] in a chosen precision.
pub fn run_case_in(
    case: &ParityCase,
    device: &Device,
    precision: Precision,
) -> Result<ParityReport, ParityError> {
    run_case_with(case, device, precision, false)
}

/// [`run_case_in`], with STPNr and STPNf cells on their fused path when `fused_stpn` (float32
/// only: the kernel computes in float32).
pub fn run_case_with(
    case: &ParityCase,
    device: &Device,
    precision: Precision,
    fused_stpn: bool,
) -> Result<ParityReport, ParityError> {
    let device = device.clone().autodiff();
    let dtype = if precision == Precision::Highest && device.supports_dtype(FloatDType::F64) {
        DType::F64
    } else {
        DType::F32
    };
    let parameters = case
        .named_arrays("params")?
        .into_iter()
        .map(|(name, array)| (name, array.values))
        .collect();
    let inputs = Inputs {
        dtype,
        device,
        parameters,
    };
    let (input_size, hidden_size) = (case.size("input_size")?, case.size("hidden_size")?);

    let observed = match case.cell()? {
        "stpn_r" => {
            let normalisation = match (case.flag_bool("weight_norm", true)?, case.flag_str("norm_time")?) {
                (false, _) => Normalisation::Off,
                (true, None | Some("pre")) => Normalisation::Pre,
                (true, Some("post")) => Normalisation::Post,
                (true, Some(other)) => return Err(case.error(format!("unknown norm_time `{other}`"))),
            };
            let presynaptic = match case.flag_str("presynaptic")? {
                None | Some("previous_hidden") => Presynaptic::PreviousHidden,
                Some("current_hidden") => Presynaptic::CurrentHidden,
                Some(other) => return Err(case.error(format!("unknown presynaptic `{other}`"))),
            };
            let config = StpnRConfig::new(input_size, hidden_size)
                .with_per_synapse(case.flag_bool("per_synapse", true)?)
                .with_normalisation(normalisation)
                .with_clamp(case.flag_f64("clamp")?)
                .with_presynaptic(presynaptic)
                .with_fused(fused_stpn);
            observe(case, &inputs, config.init(&inputs.device))?
        }
        "stpn_f" => {
            let squash_state = squash_flag(case, "tanh")?;
            let config = StpnFConfig::new(input_size, hidden_size)
                .with_per_synapse(case.flag_bool("per_synapse", true)?)
                .with_normalised(case.flag_bool("weight_norm", true)?)
                .with_clamp(case.flag_f64("clamp")?)
                .with_squash_state(squash_state)
                .with_fused(fused_stpn);
            observe(case, &inputs, config.init(&inputs.device))?
        }
        "hebbff" => {
            let config = HebbFfConfig::new(input_size, hidden_size)
                .with_squash_state(squash_flag(case, "sigmoid")?);
            observe(case, &inputs, config.init(&inputs.device))?
        }
        "fast_weights" => {
            if !case.flag_bool("layer_norm", true)? {
                return Err(case.error("fast weights without layer norm are not implemented"));
            }
            let mut config = FastWeightsConfig::new(input_size, hidden_size)
                .with_double_update(case.flag_bool("double_update", false)?);
            if let Some(decay) = case.flag_f64("lambda")? {
                config = config.with_decay(decay);
            }
            if let Some(rate) = case.flag_f64("eta")? {
                config = config.with_rate(rate);
            }
            if let Some(steps) = case.flag_f64("inner_steps")? {
                config = config.with_inner_steps(steps as usize);
            }
            observe(case, &inputs, config.init(&inputs.device))?
        }
        "lstm" => observe(case, &inputs, LstmConfig::new(input_size, hidden_size).init(&inputs.device))?,
        "rnn" => observe(case, &inputs, RnnConfig::new(input_size, hidden_size).init(&inputs.device))?,
        "modplast" => {
            let mut config = ModplastConfig::new(input_size, hidden_size);
            if let Some(clamp) = case.flag_f64("clamp")? {
                config = config.with_clamp(clamp);
            }
            observe(case, &inputs, config.init(&inputs.device))?
        }
        other => return Err(case.error(format!(
            "unknown cell `{other}`; known: stpn_r, stpn_f, hebbff, fast_weights, lstm, rnn, modplast"
        ))),
    };
    compare(case, dtype, observed)
}

/// The `squash_state` flag: absent, or the name of the cell's own activation.
fn squash_flag(case: &ParityCase, activation: &str) -> Result<bool, ParityError> {
    match case.flag_str("squash_state")? {
        None => Ok(false),
        Some(name) if name == activation => Ok(true),
        Some(other) => Err(case.error(format!(
            "squash_state `{other}` is not this cell's activation `{activation}`"
        ))),
    }
}

fn observe<C: RecurrentCell>(
    case: &ParityCase,
    inputs: &Inputs,
    cell: C,
) -> Result<Observed, ParityError> {
    let parameter_error = |source| ParityError::Parameters {
        case: case.name.clone(),
        source,
    };
    let x: Tensor<3> = inputs.tensor(&case.field("x")?);
    let [_, batch, _] = x.dims();
    if case.is_art() {
        let output_size = case.size("output_size")?;
        let network = ArtNetConfig::new()
            .with_output_size(output_size)
            .init(cell, &inputs.device);
        // The file names the cell's parameters without the `cell.` prefix.
        let rename = |path: &str| path.strip_prefix("cell.").unwrap_or(path).to_string();
        let network: ArtNet<C> = load_named(
            network,
            &inputs.parameters,
            &rename,
            &inputs.device,
            inputs.dtype,
        )
        .map_err(parameter_error)?;
        // Energy comes from the step-by-step path; outputs and gradients from the cell's own
        // sequence path (fused where enabled).
        let energy = network.forward(x.clone(), true).energy_per_step;
        let output = network.forward(x, false);
        let loss = (output.logits.clone() * inputs.tensor::<2>(&case.field("loss_weights")?)).sum();
        let gradients = loss.backward();
        Ok(Observed {
            outputs: host_values::<f64, _>(output.logits),
            energy: host_values::<f64, _>(energy.expect("energy was asked for")),
            final_state: state_values(&output.final_state),
            loss: host_values::<f64, _>(loss)[0],
            gradients: named_gradients(&network, &gradients)
                .into_iter()
                .map(|(path, gradient)| (rename(&path), gradient))
                .collect(),
        })
    } else {
        let identity = |path: &str| path.to_string();
        let cell = load_named(
            cell,
            &inputs.parameters,
            &identity,
            &inputs.device,
            inputs.dtype,
        )
        .map_err(parameter_error)?;
        let energy = run_sequence(&cell, x.clone(), cell.init_state(batch), true).energy;
        let sequence = run_sequence(&cell, x, cell.init_state(batch), false);
        let loss =
            (sequence.outputs.clone() * inputs.tensor::<3>(&case.field("loss_weights")?)).sum();
        let gradients = loss.backward();
        Ok(Observed {
            outputs: host_values::<f64, _>(sequence.outputs),
            energy: host_values::<f64, _>(energy.expect("energy was asked for")),
            final_state: state_values(&sequence.final_state),
            loss: host_values::<f64, _>(loss)[0],
            gradients: named_gradients(&cell, &gradients),
        })
    }
}

fn state_values<S: CellState>(state: &S) -> BTreeMap<String, Vec<f64>> {
    state
        .parity_tensors()
        .into_iter()
        .map(|(name, tensor)| (name.to_string(), host_values::<f64, _>(tensor)))
        .collect()
}

fn compare(
    case: &ParityCase,
    dtype: DType,
    observed: Observed,
) -> Result<ParityReport, ParityError> {
    let (tolerance, gradient_tolerance) = if dtype == DType::F64 {
        (F64_TOLERANCE, F64_TOLERANCE)
    } else {
        (F32_TOLERANCE, F32_GRADIENT_TOLERANCE)
    };
    let mut comparisons = Vec::new();
    let mut check = |quantity: String, ours: &[f64], theirs: &Array, tolerance: f64| {
        if ours.len() != theirs.values.len() {
            return Err(case.error(format!(
                "`{quantity}`: {} values here, {} in the file (shape {:?})",
                ours.len(),
                theirs.values.len(),
                theirs.shape
            )));
        }
        comparisons.push(Comparison::new(quantity, ours, &theirs.values, tolerance));
        Ok(())
    };

    let (outputs_key, energy_key) = if case.is_art() {
        ("logits", "energy_per_step")
    } else {
        ("hidden", "energy_per_unit")
    };
    check(
        outputs_key.into(),
        &observed.outputs,
        &case.field(outputs_key)?,
        tolerance,
    )?;
    check(
        energy_key.into(),
        &observed.energy,
        &case.field(energy_key)?,
        tolerance,
    )?;
    for (name, expected) in case.named_arrays("final_state")? {
        let ours = observed.final_state.get(&name).ok_or_else(|| {
            case.error(format!("final_state `{name}`: this cell has no such state"))
        })?;
        check(format!("state.{name}"), ours, &expected, tolerance)?;
    }
    let loss = case.field("loss")?;
    check("loss".into(), &[observed.loss], &loss, tolerance)?;
    for (name, expected) in case.named_arrays("grads")? {
        let ours = match observed.gradients.get(&name) {
            None => {
                return Err(case.error(format!("grads `{name}`: this model has no such parameter")));
            }
            // The loss does not depend on the parameter: its gradient is zero.
            Some(None) => vec![0.0; expected.values.len()],
            Some(Some(gradient)) => gradient.values.clone(),
        };
        check(format!("grad.{name}"), &ours, &expected, gradient_tolerance)?;
    }
    if let Some(name) = observed
        .gradients
        .keys()
        .find(|name| case.json["grads"].get(name.as_str()).is_none())
    {
        return Err(case.error(format!("the file has no gradient for parameter `{name}`")));
    }
    Ok(ParityReport {
        case: case.name.clone(),
        dtype,
        comparisons,
    })
}

/// Test support: the repository's copy of the reference's parity cases.
#[cfg(test)]
pub(crate) mod golden {
    use std::path::PathBuf;

    use super::{ParityCase, ParityReport, Precision, run_case_in};
    use crate::Backend;

    pub fn directory() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
    }

    pub fn describe(report: &ParityReport) -> String {
        report
            .comparisons
            .iter()
            .map(|c| {
                format!(
                    "{:<24} max_abs {:.3e} rel {:.3e} tol {:.0e} {}",
                    c.quantity,
                    c.max_abs,
                    c.relative,
                    c.tolerance,
                    if c.passed() { "ok" } else { "FAIL" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs one case file on every compiled CPU backend, in float64 and in float32, and fails
    /// with the whole report.
    pub fn assert_case(file: &str) {
        let case = ParityCase::from_file(directory().join(file)).expect("case file");
        for backend in Backend::compiled_cpu() {
            let device = backend.device().expect("CPU backend");
            for precision in [Precision::Highest, Precision::Float32] {
                let report = run_case_in(&case, &device, precision).expect("case runs");
                assert!(
                    report.passed(),
                    "{file} on {backend} ({:?}):\n{}",
                    report.dtype,
                    describe(&report)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::golden::{assert_case, directory};
    use super::*;
    use crate::Backend;

    /// Every case file in the repository is claimed by a test beside its cell.
    #[test]
    fn every_case_file_is_tested() {
        let tested = [
            "art_fast_weights_s0.json",
            "art_stpn_f_s0.json",
            "art_stpn_r_s0.json",
            "fast_weights_s0.json",
            "hebbff_s0.json",
            "lstm_art_s0.json",
            "modplast_s0.json",
            "modplast_strong_s0.json",
            "rnn_art_s0.json",
            "stpn_f_nonorm_clamp_s0.json",
            "stpn_f_norm_s0.json",
            "stpn_r_post_clamp_s0.json",
            "stpn_r_post_clamp_strong_s0.json",
            "stpn_r_pre_s0.json",
            "stpn_r_scalar_s0.json",
        ];
        let mut found: Vec<String> = std::fs::read_dir(directory())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".json"))
            .collect();
        found.sort();
        assert_eq!(found, tested);
    }

    /// The harness detects a wrong model: one slow weight moved by 1e-3 must fail the case.
    #[test]
    fn a_perturbed_parameter_fails() {
        let path = directory().join("stpn_r_pre_s0.json");
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let weight = &mut json["params"]["weight"][0][0];
        *weight = Value::from(weight.as_f64().unwrap() + 1e-3);
        let case = ParityCase::from_json(&json.to_string(), "perturbed").unwrap();
        let device = Backend::compiled_cpu()[0].device().unwrap();
        let report = run_case(&case, &device).unwrap();
        assert!(!report.passed());
        assert!(
            !report
                .comparisons
                .iter()
                .find(|c| c.quantity == "hidden")
                .unwrap()
                .passed()
        );
    }

    /// A file for an unknown cell is a clear error, not a panic.
    #[test]
    fn unknown_cell_is_an_error() {
        let path = directory().join("rnn_art_s0.json");
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["flags"]["cell"] = Value::from("gru");
        let case = ParityCase::from_json(&json.to_string(), "gru").unwrap();
        let error = run_case(&case, &Backend::compiled_cpu()[0].device().unwrap()).unwrap_err();
        assert!(error.to_string().contains("unknown cell `gru`"), "{error}");
    }

    /// A parameter missing from the file is named in the error.
    #[test]
    fn missing_parameter_is_an_error() {
        let path = directory().join("lstm_art_s0.json");
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["params"].as_object_mut().unwrap().remove("bias");
        let case = ParityCase::from_json(&json.to_string(), "no-bias").unwrap();
        let error = run_case(&case, &Backend::compiled_cpu()[0].device().unwrap()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no value given for parameter `bias`"),
            "{error}"
        );
    }

    #[test]
    fn art_cases() {
        for file in [
            "art_stpn_r_s0.json",
            "art_stpn_f_s0.json",
            "art_fast_weights_s0.json",
        ] {
            assert_case(file);
        }
    }
}
