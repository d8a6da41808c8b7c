//! Clipping by the global L2 norm of all gradients (PyTorch's `clip_grad_norm_`, RLlib's
//! `grad_clip`). Burn's own gradient clipping works tensor by tensor, which is another rule.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SquaredNorm<'a> {
    gradients: &'a GradientsParams,
    total: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(gradient) = self.gradients.get::<D>(param.id) {
            self.total += gradient.powi_scalar(2).sum().into_scalar::<f64>();
        }
    }
}

struct Scale<'a> {
    gradients: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(gradient) = self.gradients.remove::<D>(param.id) {
            self.gradients
                .register(param.id, gradient.mul_scalar(self.factor));
        }
    }
}

/// Scales all gradients of `module` so that their global L2 norm is at most `max_norm`; returns
/// them with the norm before clipping.
pub fn clip_by_global_norm<M: Module>(
    module: &M,
    mut gradients: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut norm = SquaredNorm {
        gradients: &gradients,
        total: 0.0,
    };
    module.visit(&mut norm);
    let norm = norm.total.sqrt();
    if norm > max_norm {
        // PyTorch's factor, with its 1e-6 guard.
        let factor = max_norm / (norm + 1e-6);
        module.visit(&mut Scale {
            gradients: &mut gradients,
            factor,
        });
    }
    (gradients, norm)
}

/// One optimiser step on `loss` as the RL algorithms take it: backpropagation, the gradients
/// clipped by their global norm `max_norm`, then `optimizer`'s step. Returns the module and the
/// norm before clipping.
pub fn clipped_step<M: Module>(
    module: M,
    optimizer: &mut burn::optim::module_optimizer::ModuleOptimizer,
    loss: Tensor<1>,
    learning_rate: f64,
    max_norm: f64,
) -> (M, f64) {
    let gradients = GradientsParams::from_grads(loss.backward(), &module);
    let (gradients, norm) = clip_by_global_norm(&module, gradients, max_norm);
    (optimizer.step(learning_rate, module, gradients), norm)
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use stpn_model::{Backend, LstmConfig};

    use super::*;

    #[test]
    fn clips_the_global_norm_and_keeps_directions() {
        let device = Backend::Flex.device().unwrap().autodiff();
        let module = LstmConfig::new(3, 2).init(&device);
        let loss = (module.weight.val().mul_scalar(3.0).sum() + module.bias.val().sum()) * 2.0;
        let gradients = GradientsParams::from_grads(loss.backward(), &module);
        // d/dW = 6 on 8×5 entries, d/db = 2 on 8 entries: norm² = 40·36 + 8·4.
        let expected = (40.0f64 * 36.0 + 8.0 * 4.0).sqrt();
        let (clipped, norm) = clip_by_global_norm(&module, gradients, 1.0);
        assert!((norm - expected).abs() < 1e-4, "{norm} vs {expected}");
        let weight = clipped.get::<2>(module.weight.id).unwrap();
        let bias = clipped.get::<1>(module.bias.id).unwrap();
        let clipped_norm = (weight.clone().powi_scalar(2).sum().into_scalar::<f64>()
            + bias.clone().powi_scalar(2).sum().into_scalar::<f64>())
        .sqrt();
        assert!((clipped_norm - 1.0).abs() < 1e-4, "{clipped_norm}");
        let ratio = weight.max().into_scalar::<f64>() / bias.max().into_scalar::<f64>();
        assert!((ratio - 3.0).abs() < 1e-4);
        let _ = module.num_params();
    }
}
