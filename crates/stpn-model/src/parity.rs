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

use crate::cell::{CellState, RecurrentCell, run_sequence};
use crate::compare;
use crate::networks::art_net::{ArtNet, ArtNetConfig};
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
    /// The case file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The case file is not JSON.
    #[error("{path} is not valid JSON")]
    Json {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The case lacks a field or has one of the wrong shape.
    #[error("case `{case}`: {message}")]
    Format {
        /// The case.
        case: String,
        /// What is wrong.
        message: String,
    },
    /// The case's parameters do not fit the model.
    #[error("case `{case}`: {source}")]
    Parameters {
        /// The case.
        case: String,
        /// Why the parameters do not fit.
        source: LoadError,
    },
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
        // Numbers at different depths (`[1, [2, 3]]`) pass the walk; their count does not.
        if values.len() != shape.iter().product::<usize>() {
            return Err(self.error(format!("`{what}`: ragged array")));
        }
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
        Self {
            quantity,
            max_abs: compare::max_abs_difference(
                observed.iter().copied(),
                expected.iter().copied(),
            ),
            relative: compare::relative_difference(
                observed.iter().copied(),
                expected.iter().copied(),
            ),
            tolerance,
        }
    }

    /// Whether the error is within tolerance (a NaN never is).
    pub fn passed(&self) -> bool {
        compare::within(self.relative, self.tolerance)
    }
}

/// The result of one case on one device.
#[derive(Clone, Debug)]
pub struct ParityReport {
    /// The case's name (its file stem).
    pub case: String,
    /// The float type the case ran in.
    pub dtype: DType,
    /// One comparison per checked quantity (outputs, energy, state, gradients).
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

/// What a run of the case takes from its file, read and checked once.
struct Inputs {
    dtype: DType,
    device: Device,
    parameters: BTreeMap<String, Vec<f64>>,
    input_size: usize,
    hidden_size: usize,
    /// `[T, B, I]`.
    x: Array,
    /// `[T, B, H]`, or `[B, O]` for the associative-retrieval network.
    loss_weights: Array,
}

impl Inputs {
    /// Reads the case's parameters, sizes, inputs and loss weights, with their shapes checked
    /// here, so that a malformed file is an error, not a panic in a cell or a kernel.
    fn read(case: &ParityCase, device: Device, dtype: DType) -> Result<Self, ParityError> {
        let parameters = case
            .named_arrays("params")?
            .into_iter()
            .map(|(name, array)| (name, array.values))
            .collect();
        let (input_size, hidden_size) = (case.size("input_size")?, case.size("hidden_size")?);
        // Initialisations divide by these sizes.
        if input_size == 0 || hidden_size == 0 || case.is_art() && case.size("output_size")? == 0 {
            return Err(case.error("input_size, hidden_size and output_size must be at least 1"));
        }
        let x = case.field("x")?;
        let (steps, batch) = match x.shape[..] {
            [steps, batch, width] if steps > 0 && batch > 0 && width == input_size => {
                (steps, batch)
            }
            _ => {
                return Err(case.error(format!(
                    "`x` has shape {:?}; expected [steps ≥ 1, batch ≥ 1, input_size {input_size}]",
                    x.shape
                )));
            }
        };
        let loss_weights = case.field("loss_weights")?;
        let expected_weights = if case.is_art() {
            vec![batch, case.size("output_size")?]
        } else {
            vec![steps, batch, hidden_size]
        };
        if loss_weights.shape != expected_weights {
            return Err(case.error(format!(
                "`loss_weights` has shape {:?}; expected {expected_weights:?}",
                loss_weights.shape
            )));
        }
        Ok(Self {
            dtype,
            device,
            parameters,
            input_size,
            hidden_size,
            x,
            loss_weights,
        })
    }

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
    let inputs = Inputs::read(case, device, dtype)?;
    let observed = observe_case(case, &inputs, fused_stpn, Observe::Everything)?;
    compare_with_reference(case, dtype, observed)
}

/// What [`observe`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observe {
    /// Outputs, energy, final state, loss and gradients.
    Everything,
    /// The loss alone (finite differences).
    Loss,
}

/// Builds the case's cell with `inputs.parameters` and runs it.
fn observe_case(
    case: &ParityCase,
    inputs: &Inputs,
    fused_stpn: bool,
    what: Observe,
) -> Result<Observed, ParityError> {
    let (input_size, hidden_size) = (inputs.input_size, inputs.hidden_size);
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
            observe(case, inputs, config.init(&inputs.device), what)?
        }
        "stpn_f" => {
            let squash_state = squash_flag(case, "tanh")?;
            let config = StpnFConfig::new(input_size, hidden_size)
                .with_per_synapse(case.flag_bool("per_synapse", true)?)
                .with_normalised(case.flag_bool("weight_norm", true)?)
                .with_clamp(case.flag_f64("clamp")?)
                .with_squash_state(squash_state)
                .with_fused(fused_stpn);
            observe(case, inputs, config.init(&inputs.device), what)?
        }
        "hebbff" => {
            let config = HebbFfConfig::new(input_size, hidden_size)
                .with_squash_state(squash_flag(case, "sigmoid")?);
            observe(case, inputs, config.init(&inputs.device), what)?
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
            observe(case, inputs, config.init(&inputs.device), what)?
        }
        "lstm" => observe(case, inputs, LstmConfig::new(input_size, hidden_size).init(&inputs.device), what)?,
        "rnn" => observe(case, inputs, RnnConfig::new(input_size, hidden_size).init(&inputs.device), what)?,
        "modplast" => {
            let mut config = ModplastConfig::new(input_size, hidden_size);
            if let Some(clamp) = case.flag_f64("clamp")? {
                config = config.with_clamp(clamp);
            }
            observe(case, inputs, config.init(&inputs.device), what)?
        }
        other => return Err(case.error(format!(
            "unknown cell `{other}`; known: stpn_r, stpn_f, hebbff, fast_weights, lstm, rnn, modplast"
        ))),
    };
    Ok(observed)
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
    what: Observe,
) -> Result<Observed, ParityError> {
    let parameter_error = |source| ParityError::Parameters {
        case: case.name.clone(),
        source,
    };
    let x: Tensor<3> = inputs.tensor(&inputs.x);
    let batch = inputs.x.shape[1];
    // The comparison is only as strict as the type it ran in: a cell that silently computes in
    // float32 must not be measured against the float64 tolerance.
    let check_dtype = |dtype: DType| {
        if dtype == inputs.dtype {
            Ok(())
        } else {
            Err(case.error(format!(
                "the model computed in {dtype:?}, not in the requested {:?}",
                inputs.dtype
            )))
        }
    };
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
        let output = network.forward(x.clone(), false);
        check_dtype(output.logits.dtype())?;
        let loss = (output.logits.clone() * inputs.tensor::<2>(&inputs.loss_weights)).sum();
        if what == Observe::Loss {
            return Ok(Observed::loss_only(host_values::<f64, _>(loss)[0]));
        }
        // Energy comes from the step-by-step path; outputs and gradients from the cell's own
        // sequence path (fused where enabled).
        let energy = network.forward(x, true).energy_per_step;
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
        let sequence = run_sequence(&cell, x.clone(), cell.init_state(batch), false);
        check_dtype(sequence.outputs.dtype())?;
        let loss = (sequence.outputs.clone() * inputs.tensor::<3>(&inputs.loss_weights)).sum();
        if what == Observe::Loss {
            return Ok(Observed::loss_only(host_values::<f64, _>(loss)[0]));
        }
        let energy = run_sequence(&cell, x, cell.init_state(batch), true).energy;
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

impl Observed {
    fn loss_only(loss: f64) -> Self {
        Self {
            outputs: Vec::new(),
            energy: Vec::new(),
            final_state: BTreeMap::new(),
            loss,
            gradients: BTreeMap::new(),
        }
    }
}

/// Step of the finite differences, relative to the magnitude of the entry (at least 1e-4 in
/// absolute terms): large enough that rounding stays near 1e-12 of the loss, small enough that
/// the fourth-order stencil's truncation error does too, and that a step rarely crosses a kink
/// (a clamp's threshold).
const FINITE_DIFFERENCE_STEP: f64 = 1e-4;

/// Checks the gradients of the loss of `case` computed by backpropagation against central finite
/// differences of the same loss, in float64 on the op-by-op path, for up to `entries_per_parameter`
/// entries of every parameter (spread evenly over it). This needs no reference: a backward pass
/// that is wrong anywhere (an operation's derivative, a missing path through the state) shows up
/// here at any size. The fourth-order stencil
/// `(−L(p+2h) + 8 L(p+h) − 8 L(p−h) + L(p−2h)) / 12h` is accurate to about 1e-11 relative here.
///
/// Returns one [`Comparison`] per parameter (`fd.<name>`), scale-relative to the largest
/// gradient of that parameter (or 1 where it is all zero).
pub fn finite_difference_check(
    case: &ParityCase,
    device: &Device,
    entries_per_parameter: usize,
    tolerance: f64,
) -> Result<Vec<Comparison>, ParityError> {
    let device = device.clone().autodiff();
    if !device.supports_dtype(FloatDType::F64) {
        return Err(case.error("finite differences need a backend with float64"));
    }
    let mut inputs = Inputs::read(case, device, DType::F64)?;
    let analytic = observe_case(case, &inputs, false, Observe::Everything)?.gradients;
    let mut comparisons = Vec::new();
    for (name, gradient) in analytic {
        let values = inputs.parameters.get(&name).cloned().ok_or_else(|| {
            case.error(format!("the model's parameter `{name}` is not in the file"))
        })?;
        let gradient = gradient.map_or_else(|| vec![0.0; values.len()], |g| g.values);
        let stride = values.len().div_ceil(entries_per_parameter.max(1)).max(1);
        // Differences are measured against the parameter's largest gradient (1 where it is all
        // zero, as `compare::relative_difference` does).
        let largest = compare::nan_max(gradient.iter().map(|g| g.abs()));
        let unit = if largest > 0.0 { largest } else { 1.0 };
        let (mut ours, mut numeric, mut kinks) = (Vec::new(), Vec::new(), 0);
        for index in (0..values.len()).step_by(stride) {
            let mut loss_at = |offset: f64| -> Result<f64, ParityError> {
                let mut moved = values.clone();
                moved[index] += offset;
                inputs.parameters.insert(name.clone(), moved);
                Ok(observe_case(case, &inputs, false, Observe::Loss)?.loss)
            };
            let mut stencil = |step: f64| -> Result<f64, ParityError> {
                Ok(
                    (-loss_at(2.0 * step)? + 8.0 * loss_at(step)? - 8.0 * loss_at(-step)?
                        + loss_at(-2.0 * step)?)
                        / (12.0 * step),
                )
            };
            let step = FINITE_DIFFERENCE_STEP * values[index].abs().max(1.0);
            let (coarse, fine) = (stencil(step)?, stencil(step / 4.0)?);
            // Two step sizes that disagree mean the loss is not smooth within a step of this
            // entry (a clamp's threshold is that close): its derivative is one-sided there and
            // no stencil measures it. Such entries are left out, and counted.
            if (coarse - fine).abs() > tolerance * unit {
                kinks += 1;
                continue;
            }
            ours.push(gradient[index]);
            numeric.push(fine);
        }
        inputs.parameters.insert(name.clone(), values);
        let checked = ours.len();
        if checked == 0 || kinks > checked {
            return Err(case.error(format!(
                "finite differences of `{name}`: {kinks} of {} entries sit at a kink of the loss",
                kinks + checked
            )));
        }
        let max_abs = compare::max_abs_difference(ours.iter().copied(), numeric.iter().copied());
        comparisons.push(Comparison {
            quantity: format!("fd.{name}"),
            max_abs,
            relative: max_abs / unit,
            tolerance,
        });
    }
    Ok(comparisons)
}

fn state_values<S: CellState>(state: &S) -> BTreeMap<String, Vec<f64>> {
    state
        .parity_tensors()
        .into_iter()
        .map(|(name, tensor)| (name.to_string(), host_values::<f64, _>(tensor)))
        .collect()
}

fn compare_with_reference(
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
    let expected_state = case.named_arrays("final_state")?;
    for (name, expected) in &expected_state {
        let ours = observed.final_state.get(name).ok_or_else(|| {
            case.error(format!("final_state `{name}`: this cell has no such state"))
        })?;
        check(format!("state.{name}"), ours, expected, tolerance)?;
    }
    // The other direction: a case that leaves out a state tensor of the cell checks too little.
    // The associative-retrieval cases record the plastic state alone (the network's output is
    // the readout of the last hidden state, which the logits check).
    let recorded = |name: &str| case.is_art() && matches!(name, "h" | "c");
    if let Some(name) = observed
        .final_state
        .keys()
        .find(|name| !expected_state.contains_key(name.as_str()) && !recorded(name))
    {
        return Err(case.error(format!(
            "final_state has no `{name}`, a state tensor of this cell"
        )));
    }
    let loss = case.field("loss")?;
    // The loss is a sum of products of both signs: in float32 its cancellation can cost more
    // than the outputs' 1e-5, as much as the gradients' (which are sums too).
    check("loss".into(), &[observed.loss], &loss, gradient_tolerance)?;
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

    use burn::tensor::DType;

    use super::{ParityCase, ParityReport, Precision, finite_difference_check, run_case_in};
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

    /// The sizes of the repository's case files: `_s0` (input 5, hidden 4, batch 3, 6 steps) and
    /// `_s5` (input 7, hidden 6, batch 2, 5 steps).
    pub const SIZES: [&str; 2] = ["s0", "s5"];

    /// Largest scale-relative difference accepted between backpropagation and the finite
    /// differences (the stencil is accurate to ~1e-11 on these cases).
    pub const FINITE_DIFFERENCE_TOLERANCE: f64 = 1e-9;

    /// Runs the case `<stem>_s0.json` and `<stem>_s5.json` on every compiled CPU backend, in
    /// float64 and in float32, checks the float64 gradients against finite differences, and
    /// fails with the whole report.
    pub fn assert_case(stem: &str) {
        for size in SIZES {
            let file = format!("{stem}_{size}.json");
            let case = ParityCase::from_file(directory().join(&file)).expect("case file");
            for backend in Backend::compiled_cpu() {
                let device = backend.device().expect("CPU backend");
                for precision in [Precision::Highest, Precision::Float32] {
                    let report = run_case_in(&case, &device, precision).expect("case runs");
                    if precision == Precision::Highest {
                        assert_eq!(report.dtype, DType::F64, "{file} on {backend}");
                    }
                    assert!(
                        report.passed(),
                        "{file} on {backend} ({:?}):\n{}",
                        report.dtype,
                        describe(&report)
                    );
                }
            }
            assert_finite_differences(&case, &file);
        }
    }

    /// Backpropagation against finite differences of our own loss, every parameter, float64.
    pub fn assert_finite_differences(case: &ParityCase, file: &str) {
        let device = Backend::compiled_cpu()[0].device().expect("CPU backend");
        let comparisons = finite_difference_check(case, &device, 24, FINITE_DIFFERENCE_TOLERANCE)
            .expect("finite differences run");
        assert!(!comparisons.is_empty(), "{file}: no parameter was checked");
        let report = ParityReport {
            case: case.name.clone(),
            dtype: DType::F64,
            comparisons,
        };
        assert!(
            report.passed(),
            "{file}, finite differences:\n{}",
            describe(&report)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::golden::{self, assert_case, directory};
    use super::*;
    use crate::Backend;

    /// Every case file in the repository is claimed by a test beside its cell.
    #[test]
    fn every_case_file_is_tested() {
        let stems = [
            "art_fast_weights",
            "art_hebbff",
            "art_stpn_f",
            "art_stpn_r",
            "fast_weights",
            "hebbff",
            "lstm_art",
            "modplast",
            "modplast_strong",
            "rnn_art",
            "stpn_f_nonorm_clamp",
            "stpn_f_norm",
            "stpn_r_post_clamp",
            "stpn_r_post_clamp_strong",
            "stpn_r_pre",
            "stpn_r_scalar",
        ];
        let mut tested: Vec<String> = stems
            .iter()
            .flat_map(|stem| golden::SIZES.map(|size| format!("{stem}_{size}.json")))
            .collect();
        tested.sort();
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

    /// A case that leaves out a state tensor of the cell checks too little: an error, not a pass.
    #[test]
    fn missing_final_state_is_an_error() {
        let path = directory().join("stpn_r_pre_s5.json");
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["final_state"].as_object_mut().unwrap().remove("h");
        let case = ParityCase::from_json(&json.to_string(), "no-h").unwrap();
        let error = run_case(&case, &Backend::compiled_cpu()[0].device().unwrap()).unwrap_err();
        assert!(
            error.to_string().contains("final_state has no `h`"),
            "{error}"
        );
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
        for stem in ["art_stpn_r", "art_stpn_f", "art_hebbff", "art_fast_weights"] {
            assert_case(stem);
        }
    }

    /// Random damage to a case file (a value replaced, a field removed, a size changed, an array
    /// cut) gives a result or an error, never a panic.
    mod mutations {
        use proptest::prelude::*;

        use super::*;

        fn values(json: &Value) -> Vec<Vec<String>> {
            fn walk(value: &Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
                out.push(path.clone());
                match value {
                    Value::Object(map) => {
                        for (key, item) in map {
                            let mut next = path.clone();
                            next.push(key.clone());
                            walk(item, next, out);
                        }
                    }
                    Value::Array(items) => {
                        // The first and last items stand for the rest.
                        for index in [0, items.len().saturating_sub(1)] {
                            if index < items.len() {
                                let mut next = path.clone();
                                next.push(index.to_string());
                                walk(&items[index], next, out);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let mut out = Vec::new();
            walk(json, Vec::new(), &mut out);
            out
        }

        fn at<'a>(json: &'a mut Value, path: &[String]) -> &'a mut Value {
            path.iter().fold(json, |value, key| match value {
                Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
                other => &mut other[key.as_str()],
            })
        }

        fn replacement(kind: u8) -> Value {
            match kind % 9 {
                0 => Value::Null,
                1 => Value::from(0),
                2 => Value::from(-3),
                3 => Value::from(1e300),
                4 => Value::from("text"),
                5 => Value::from(vec![1.0, 2.0]),
                6 => Value::Array(Vec::new()),
                7 => Value::from(true),
                _ => serde_json::json!({ "unexpected": 1 }),
            }
        }

        /// Cases per run; `STPN_PROPTEST_CASES` asks for more (a longer search, by hand).
        const CASES: u32 = 96;

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("STPN_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(CASES),
                // A fixed seed: CI runs the same cases every time (the search is repeatable).
                rng_seed: if std::env::var_os("STPN_PROPTEST_CASES").is_some() { proptest::test_runner::RngSeed::Random } else { proptest::test_runner::RngSeed::Fixed(5) },
                ..ProptestConfig::default()
            })]
            #[test]
            fn damaged_case_files_never_panic(
                file in prop::sample::select(vec![
                    "stpn_r_pre_s0.json", "stpn_f_norm_s5.json", "art_stpn_r_s0.json",
                    "lstm_art_s5.json", "modplast_s0.json", "fast_weights_s0.json", "hebbff_s5.json",
                ]),
                pick in any::<prop::sample::Index>(),
                kind in any::<u8>(),
                remove in any::<bool>(),
            ) {
                let text = std::fs::read_to_string(directory().join(file)).unwrap();
                let mut json: Value = serde_json::from_str(&text).unwrap();
                let paths = values(&json);
                let path = pick.get(&paths).clone();
                if let (true, Some((last, parent))) = (remove, path.split_last()) {
                    match at(&mut json, parent) {
                        Value::Object(map) => { map.remove(last); }
                        Value::Array(items) => { items.remove(last.parse::<usize>().unwrap()); }
                        _ => {}
                    }
                } else {
                    *at(&mut json, &path) = replacement(kind);
                }
                let device = Backend::compiled_cpu()[0].device().unwrap();
                let outcome = std::panic::catch_unwind(|| {
                    ParityCase::from_json(&json.to_string(), "mutated")
                        .and_then(|case| run_case(&case, &device))
                        .map(|report| report.passed())
                });
                prop_assert!(outcome.is_ok(), "{file}: {path:?} → panic");
            }
        }
    }
}
