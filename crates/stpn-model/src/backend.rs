//! Run-time choice among the backends compiled into this build (cargo features `flex`,
//! `ndarray`, `wgpu`), with a one-line error for one that is missing or unusable.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A Burn backend this project can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Burn's current pure-Rust CPU backend (the fastest measured on CPU).
    Flex,
    /// The ndarray CPU backend (deprecated by Burn, kept because users ask for it).
    Ndarray,
    /// wgpu: Vulkan, Metal, DirectX or OpenGL GPUs.
    Wgpu,
}

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "backend `{0}` is not compiled into this build; rebuild with `--features {0}` (the default features compile flex, ndarray and wgpu)"
    )]
    /// The backend's cargo feature was off when this binary was built.
    NotCompiled(Backend),
    #[error(
        "backend `wgpu` found no usable GPU adapter ({0}); install a GPU driver (or `mesa-vulkan-drivers` for a software one), or use `--backend flex`"
    )]
    /// wgpu initialised but found no GPU adapter (the adapter error).
    NoAdapter(String),
    /// A name that is not one of the backends.
    #[error("unknown backend `{0}`; choose one of flex, ndarray, wgpu")]
    Unknown(String),
}

impl Backend {
    /// Every backend, compiled or not.
    pub const ALL: [Backend; 3] = [Backend::Flex, Backend::Ndarray, Backend::Wgpu];

    /// The name used on the command line and in cargo features.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
        }
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// Whether the backend runs on the CPU.
    pub fn is_cpu(self) -> bool {
        !matches!(self, Backend::Wgpu)
    }

    /// The CPU backends compiled into this build.
    pub fn compiled_cpu() -> Vec<Backend> {
        Self::ALL
            .into_iter()
            .filter(|backend| backend.is_cpu() && backend.is_compiled())
            .collect()
    }

    /// The backend's default device (without autodiff).
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => wgpu_device(),
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled(other)),
        }
    }
}

/// The wgpu device, initialised once per process: the runtime registers itself on the first
/// initialisation and refuses a second one, so every later caller gets the first answer.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, BackendError> {
    static DEVICE: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            initialise_wgpu().map_err(|error| match error {
                BackendError::NoAdapter(reason) => reason,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(BackendError::NoAdapter)
}

#[cfg(feature = "wgpu")]
fn initialise_wgpu() -> Result<Device, BackendError> {
    // wgpu can panic deep inside adapter discovery on machines without a driver; turn any
    // failure into the one-line error instead of a backtrace.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let attempt = std::panic::catch_unwind(|| {
        let device = Device::wgpu_options()
            .init()
            .map_err(|error| error.to_string())?;
        // Touch the device once, so that a lazily failing adapter fails here.
        let probe = burn::tensor::Tensor::<1>::ones([1], &device);
        probe
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|error| format!("{error:?}"))?;
        Ok::<Device, String>(device)
    });
    std::panic::set_hook(previous_hook);
    match attempt {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(reason)) => Err(BackendError::NoAdapter(first_line(&reason))),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "adapter initialisation panicked".to_string());
            Err(BackendError::NoAdapter(first_line(&reason)))
        }
    }
}

#[cfg(feature = "wgpu")]
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|backend| backend.name() == text)
            .ok_or_else(|| BackendError::Unknown(text.to_string()))
    }
}
