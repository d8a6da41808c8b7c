//! RMSprop as TensorFlow 1's `RMSPropOptimizer` runs it without momentum, the optimiser of the
//! Atari A2C (Mnih et al. 2016; OpenAI Baselines' `a2c`, Stable-Baselines3's `RMSpropTFLike`):
//!
//! ```text
//! m ← α·m + (1 − α)·g²        (m starts at 1, not 0)
//! θ ← θ − lr · g / √(m + ε)   (ε inside the square root)
//! ```
//!
//! Burn's `RmsProp` is PyTorch's (m from 0, ε outside the root). The two differ where it
//! matters for a conv encoder whose gradients are tiny: starting from 1, the first few hundred
//! steps are small (a built-in warm-up), and ε under the root damps gradients below √ε instead of
//! blowing them up to full-size steps.

use burn::optim::module_optimizer::ModuleOptimizer;
use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};

/// TensorFlow 1's RMSprop without momentum; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct TfRmsProp {
    /// Smoothing constant α of the mean square (Baselines: 0.99).
    pub alpha: f32,
    /// ε, added under the square root (Baselines: 10⁻⁵).
    pub epsilon: f32,
}

impl TfRmsProp {
    /// The optimiser of a whole module.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

/// The running mean square of one parameter's gradient.
#[derive(Clone)]
pub struct MeanSquare<const D: usize>(pub Tensor<D>);

impl<const D: usize> RecordState for MeanSquare<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "mean_square", self.0.clone().into_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "mean_square")?;
        Some(Self(Tensor::from_data(data, device)))
    }
}

impl Optimizer for TfRmsProp {
    type State<const D: usize> = MeanSquare<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<MeanSquare<D>>,
    ) -> (Tensor<D>, Option<MeanSquare<D>>) {
        let previous = match state {
            Some(MeanSquare(mean_square)) => mean_square,
            None => grad.ones_like(),
        };
        let mean_square =
            previous.mul_scalar(self.alpha) + grad.clone().square().mul_scalar(1.0 - self.alpha);
        let step = grad / mean_square.clone().add_scalar(self.epsilon).sqrt();
        (tensor - step.mul_scalar(lr), Some(MeanSquare(mean_square)))
    }

    fn to_device<const D: usize>(state: MeanSquare<D>, device: &Device) -> MeanSquare<D> {
        MeanSquare(state.0.to_device(device))
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::TensorData;
    use stpn_model::Backend;

    use super::*;

    #[derive(Module, Debug)]
    struct Scalars {
        values: Param<Tensor<1>>,
    }

    /// Three steps on `L = Σ c·θ` (constant gradient `c`) against the update written out:
    /// m₁ = α + (1−α)c², m₂ = α·m₁ + (1−α)c², … and θ moves by lr·c/√(m + ε) each step.
    #[test]
    fn steps_follow_tensorflows_rmsprop() {
        let device = Backend::Flex.device().unwrap().autodiff();
        let (alpha, epsilon, lr) = (0.99f32, 1e-5f32, 7e-4);
        let gradient = [0.5f32, -2.0, 1e-4];
        let mut module = Scalars {
            values: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![1.0f32, 1.0, 1.0], [3]),
                &device,
            )),
        };
        let mut optimizer = TfRmsProp { alpha, epsilon }.init();
        let mut expected = [1.0f64; 3];
        let mut mean_square = [1.0f64; 3];
        for _ in 0..3 {
            let weights = Tensor::<1>::from_data(TensorData::new(gradient.to_vec(), [3]), &device);
            let loss = (module.values.val() * weights).sum();
            let gradients = GradientsParams::from_grads(loss.backward(), &module);
            module = optimizer.step(lr, module, gradients);
            for i in 0..3 {
                let g = f64::from(gradient[i]);
                mean_square[i] =
                    f64::from(alpha) * mean_square[i] + (1.0 - f64::from(alpha)) * g * g;
                expected[i] -= lr * g / (mean_square[i] + f64::from(epsilon)).sqrt();
            }
        }
        let got = stpn_model::params::host_values::<f32, 1>(module.values.val());
        let error = stpn_model::compare::max_abs_difference(
            got.iter().map(|&v| f64::from(v)),
            expected.iter().copied(),
        );
        assert!(
            stpn_model::compare::within(error, 1e-6),
            "{got:?} vs {expected:?}"
        );
        // A tiny gradient takes a tiny step (ε under the root, m from 1), unlike Adam's.
        assert!((1.0 - got[2]).abs() < 1e-6);
    }
}
