//! Tensor arithmetic shared by the plastic cells: outer products, row norms of the efficacy
//! matrix, the efficacy-times-input product and the synaptic energy (docs/reference.md §0, §2).
//!
//! Shapes: `B` batch, `H` postsynaptic units, `P` presynaptic inputs. Slow weights are `[H, P]`,
//! plastic (short-term) components `[B, H, P]`, presynaptic vectors `[B, P]`.

use burn::tensor::Tensor;

pub use crate::kernel::options::NORM_EPSILON;

/// Added under the square root of a row norm. Far below float resolution for any non-zero row,
/// it only keeps the gradient of an all-zero row finite (docs/reference.md §9.2).
const NORM_FLOOR: f64 = 1e-30;

/// `(post ⊗ pre)_{b,i,j} = post_{b,i} · pre_{b,j}`: `[B, H]` × `[B, P]` → `[B, H, P]`.
pub fn outer(post: Tensor<2>, pre: Tensor<2>) -> Tensor<3> {
    post.unsqueeze_dim::<3>(2) * pre.unsqueeze_dim::<3>(1)
}

/// L2 norm of every row of a batch of efficacy matrices over the presynaptic axis:
/// `[B, H, P]` → `[B, H, 1]`.
pub fn row_norm(efficacy: Tensor<3>) -> Tensor<3> {
    efficacy.square().sum_dim(2).add_scalar(NORM_FLOOR).sqrt()
}

/// `(W + F) · pre` for every batch element without materialising `W + F`:
/// `pre Wᵀ + Σ_j F_{b,i,j} pre_{b,j}` → `[B, H]`.
pub fn efficacy_product(weight: Tensor<2>, plastic: Tensor<3>, pre: Tensor<2>) -> Tensor<2> {
    let slow = pre.clone().matmul(weight.transpose());
    let fast = (plastic * pre.unsqueeze_dim::<3>(1))
        .sum_dim(2)
        .squeeze_dim::<2>(2);
    slow + fast
}

/// `W` broadcast to `[1, H, P]`, ready to be added to a batch of plastic components.
pub fn batched(weight: Tensor<2>) -> Tensor<3> {
    weight.unsqueeze_dim::<3>(0)
}

/// Energy of every postsynaptic unit for a weight shared by the batch (docs/reference.md §2.1):
/// `E_{b,i} = Σ_j |W_ij| · pre_{b,j}²` → `[B, H]`.
pub fn energy_shared(weight: Tensor<2>, pre: Tensor<2>) -> Tensor<2> {
    pre.square().matmul(weight.abs().transpose())
}

/// Energy of every postsynaptic unit for per-batch efficacies `[B, H, P]` (docs/reference.md §2.1):
/// `E_{b,i} = Σ_j |G_{b,i,j}| · pre_{b,j}²` → `[B, H]`.
pub fn energy_batched(efficacy: Tensor<3>, pre: Tensor<2>) -> Tensor<2> {
    (efficacy.abs() * pre.square().unsqueeze_dim::<3>(1))
        .sum_dim(2)
        .squeeze_dim::<2>(2)
}

/// The state of a feedforward plastic cell: the short-term synaptic component `F` (`[B, H, P]`).
#[derive(Clone, Debug)]
pub struct SynapticState {
    /// `F`, the plastic component of every synapse, per batch element.
    pub synaptic: Tensor<3>,
}

impl crate::cell::CellState for SynapticState {
    fn parity_tensors(&self) -> Vec<(&'static str, Tensor<3>)> {
        vec![("F", self.synaptic.clone())]
    }

    fn detach(self) -> Self {
        Self {
            synaptic: self.synaptic.detach(),
        }
    }

    fn cat(states: Vec<Self>) -> Self {
        Self {
            synaptic: Tensor::cat(states.iter().map(|s| s.synaptic.clone()).collect(), 0),
        }
    }

    fn row(&self, index: usize) -> Self {
        Self {
            synaptic: self.synaptic.clone().narrow(0, index, 1),
        }
    }

    fn zero_rows(self, keep: &Tensor<1>) -> Self {
        Self {
            synaptic: crate::cell::keep_rows(self.synaptic, keep),
        }
    }
}

/// The logistic function as `(1 + tanh(x/2)) / 2`: exact in the tensor's own precision and free
/// of overflow in the backward pass. (Burn's `activation::sigmoid` computes in float32 on
/// backends that use its default implementation, ndarray among them, which breaks float64
/// parity at 1e-7.)
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.mul_scalar(0.5).tanh().add_scalar(1.0).mul_scalar(0.5)
}
