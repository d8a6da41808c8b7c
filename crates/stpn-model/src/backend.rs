//! Run-time choice among the backends compiled into this build (cargo features `flex`,
//! `ndarray`, `wgpu`, `cuda`), with a one-line error for one that is missing or unusable.

use std::fmt;
use std::str::FromStr;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use std::sync::OnceLock;

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
    /// CUDA: NVIDIA GPUs (the driver and NVRTC are loaded at run time).
    Cuda,
}

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "backend `{0}` is not compiled into this build; rebuild with `--features stpn-bench/{0}`{hint}",
        hint = .0.build_hint()
    )]
    /// The backend's cargo feature was off when this binary was built.
    NotCompiled(Backend),
    #[error(
        "backend `wgpu` found no usable GPU adapter ({0}); install a GPU driver (or `mesa-vulkan-drivers` for a software one), or use `--backend flex`"
    )]
    /// wgpu initialised but found no GPU adapter (the adapter error).
    NoAdapter(String),
    #[error(
        "backend `cuda` found no usable CUDA device ({0}); install the NVIDIA driver on a machine with an NVIDIA GPU, or use `--backend wgpu` or `--backend flex`"
    )]
    /// CUDA found no driver or no device (the first line of the reason).
    NoCudaDevice(String),
    /// A name that is not one of the backends.
    #[error("unknown backend `{0}`; choose one of flex, ndarray, wgpu, cuda")]
    Unknown(String),
}

impl Backend {
    /// Every backend, compiled or not.
    pub const ALL: [Backend; 4] = [
        Backend::Flex,
        Backend::Ndarray,
        Backend::Wgpu,
        Backend::Cuda,
    ];

    /// The name used on the command line and in cargo features.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// What building the backend in takes, beyond its feature (for the not-compiled error).
    fn build_hint(self) -> &'static str {
        match self {
            Backend::Cuda => {
                " (it downloads a prebuilt LLVM from GitHub while building, so it needs that network access; without it use `--backend wgpu`, which reaches NVIDIA GPUs through Vulkan)"
            }
            _ => " (the default features compile flex, ndarray and wgpu)",
        }
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether the backend runs on the CPU.
    pub fn is_cpu(self) -> bool {
        !matches!(self, Backend::Wgpu | Backend::Cuda)
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
            Backend::Wgpu => {
                static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
                DEVICE
                    .get_or_init(|| {
                        gpu_device(|| {
                            Device::wgpu_options()
                                .init()
                                .map_err(|error| error.to_string())
                        })
                    })
                    .clone()
                    .map_err(BackendError::NoAdapter)
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda => {
                static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
                DEVICE
                    .get_or_init(|| gpu_device(|| Ok(Device::cuda(0))))
                    .clone()
                    .map_err(BackendError::NoCudaDevice)
            }
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled(other)),
        }
    }
}

/// A GPU device from `open`, touched once so that a lazily failing driver fails here; the reason
/// of a failure (an error or a panic) in one line. Called once per process and backend (the
/// callers keep the answer): the wgpu runtime registers itself on its first initialisation and
/// refuses a second one.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_device(open: impl Fn() -> Result<Device, String>) -> Result<Device, String> {
    // wgpu and CUDA can panic deep inside device discovery on machines without a driver (CUDA's
    // library is loaded at first use); turn any failure into the one-line error instead of a
    // backtrace. (`open` is called once, inside: nothing it touches is observed after a panic.)
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let device = open()?;
        // Touch the device once, so that a lazily failing adapter fails here.
        let probe = burn::tensor::Tensor::<1>::ones([1], &device);
        probe
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|error| format!("{error:?}"))?;
        Ok::<Device, String>(device)
    }));
    std::panic::set_hook(previous_hook);
    match attempt {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(reason)) => Err(first_line(&reason)),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "device initialisation panicked".to_string());
            Err(first_line(&reason))
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
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
