//! Parameters by name: read every parameter of a module with its path (`cell.weight`), load
//! values by path, and read the gradient of each. Used by the parity harness, and by anything
//! that exchanges weights with the reference's PyTorch layout (same names, same shapes).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Gradients, Tensor, TensorData};

/// A parameter's values, flattened row-major, with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedValues {
    /// The parameter's shape.
    pub shape: Vec<usize>,
    /// Its values, flattened row-major.
    pub values: Vec<f64>,
}

/// A tensor's values on the host, row-major, converted to `E`.
pub fn host_values<E: burn::tensor::Element, const D: usize>(tensor: Tensor<D>) -> Vec<E> {
    tensor
        .into_data()
        .try_into_vec_as::<E>()
        .expect("readable tensor data")
}

fn flat_values<const D: usize>(tensor: Tensor<D>) -> NamedValues {
    let shape = tensor.dims().to_vec();
    NamedValues {
        shape,
        values: host_values(tensor),
    }
}

#[derive(Default)]
struct PathTracker {
    path: Vec<String>,
}

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.path.push(name.to_string());
    }

    fn exit(&mut self) {
        self.path.pop();
    }

    fn current(&self) -> String {
        self.path.join(".")
    }
}

struct ValueCollector<'a> {
    tracker: PathTracker,
    gradients: Option<&'a Gradients>,
    found: BTreeMap<String, Option<NamedValues>>,
}

impl ModuleVisitor for ValueCollector<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.tracker.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = match self.gradients {
            Some(gradients) => param.val().grad(gradients).map(flat_values),
            None => Some(flat_values(param.val())),
        };
        self.found.insert(self.tracker.current(), value);
    }
}

/// Every float parameter of `module` by path.
pub fn named_values<M: Module>(module: &M) -> BTreeMap<String, NamedValues> {
    let mut collector = ValueCollector {
        tracker: PathTracker::default(),
        gradients: None,
        found: BTreeMap::new(),
    };
    module.visit(&mut collector);
    collector
        .found
        .into_iter()
        .map(|(name, value)| (name, value.expect("parameter values are always present")))
        .collect()
}

/// The gradient of every float parameter of `module` by path; `None` where the loss does not
/// depend on the parameter.
pub fn named_gradients<M: Module>(
    module: &M,
    gradients: &Gradients,
) -> BTreeMap<String, Option<NamedValues>> {
    let mut collector = ValueCollector {
        tracker: PathTracker::default(),
        gradients: Some(gradients),
        found: BTreeMap::new(),
    };
    module.visit(&mut collector);
    collector.found
}

/// Why parameters could not be loaded by name.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A parameter of the model has no value.
    #[error("no value given for parameter `{0}`")]
    Missing(String),
    #[error(
        "parameter `{name}` has {expected} elements (shape {shape:?}) but {given} values were given"
    )]
    /// A parameter's value has the wrong number of elements.
    Size {
        /// The parameter.
        name: String,
        /// Its shape in the model.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Values given.
        given: usize,
    },
    /// A value names a parameter the model does not have.
    #[error("values given for `{0}`, which the model does not have")]
    Unknown(String),
}

struct ValueLoader<'a> {
    tracker: PathTracker,
    rename: &'a dyn Fn(&str) -> String,
    values: &'a BTreeMap<String, Vec<f64>>,
    device: Device,
    dtype: DType,
    used: Vec<String>,
    error: Option<LoadError>,
}

impl ModuleMapper for ValueLoader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.tracker.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = (self.rename)(&self.tracker.current());
        let shape = param.val().dims();
        let expected: usize = shape.iter().product();
        match self.values.get(&name) {
            None => {
                self.error.get_or_insert(LoadError::Missing(name));
                param
            }
            Some(values) if values.len() != expected => {
                self.error.get_or_insert(LoadError::Size {
                    name,
                    shape: shape.to_vec(),
                    expected,
                    given: values.len(),
                });
                param
            }
            Some(values) => {
                self.used.push(name);
                let data = TensorData::new(values.clone(), shape);
                Param::from_tensor(Tensor::from_data(data, (&self.device, self.dtype)))
            }
        }
    }
}

/// Replaces every float parameter of `module` by the values under its (renamed) path, as
/// `dtype` tensors on `device`. Every parameter must be given, with the right number of values,
/// and every given name must be a parameter.
pub fn load_named<M: Module>(
    module: M,
    values: &BTreeMap<String, Vec<f64>>,
    rename: &dyn Fn(&str) -> String,
    device: &Device,
    dtype: DType,
) -> Result<M, LoadError> {
    let mut loader = ValueLoader {
        tracker: PathTracker::default(),
        rename,
        values,
        device: device.clone(),
        dtype,
        used: Vec::new(),
        error: None,
    };
    let module = module.map(&mut loader);
    if let Some(error) = loader.error {
        return Err(error);
    }
    if let Some(unknown) = values.keys().find(|name| !loader.used.contains(name)) {
        return Err(LoadError::Unknown(unknown.clone()));
    }
    Ok(module)
}
