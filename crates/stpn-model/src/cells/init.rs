//! Parameter initialisation (docs/reference.md Appendix B). Random draws use the device's generator, so
//! `device.seed(seed)` before `init` makes a model reproducible on a given backend.

use burn::module::Param;
use burn::tensor::{Device, Distribution, Shape, Tensor};

/// A trainable parameter drawn from `U[low, high)`.
pub fn uniform<const D: usize>(
    shape: impl Into<Shape>,
    low: f64,
    high: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Uniform(low, high),
        device,
    ))
}

/// A trainable parameter drawn from `U(-bound, bound)`, the PyTorch default for `Linear`,
/// `LSTMCell` and the generic STPN initialisation.
pub fn symmetric<const D: usize>(
    shape: impl Into<Shape>,
    bound: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    uniform(shape, -bound, bound, device)
}

/// A trainable parameter filled with one value.
pub fn constant<const D: usize>(
    shape: impl Into<Shape>,
    value: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::full(shape, value, device))
}

/// A trainable parameter drawn from `N(0, std²)`, the familiarity networks' initialisation.
pub fn normal<const D: usize>(
    shape: impl Into<Shape>,
    std: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Normal(0.0, std),
        device,
    ))
}
