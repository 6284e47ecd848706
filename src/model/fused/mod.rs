//! Fused CPU kernels for the parts of a training step where candle's composed ops spend their
//! time making tensors: layer norm, GELU, causal attention, each half of a transformer block
//! (norm, matmuls and residual), a MoE layer's experts and the cross-entropy loss. Each is a
//! candle custom op with its backward pass, so the autograd graph stays candle's; each makes one
//! pass over its data each way, split over the cores, vectorised for AVX-512 or AVX2 where the CPU
//! has them.
//!
//! They run on f32 CPU tensors ([`applies`]); elsewhere (the GPU, bf16) the model uses the
//! composed ops, which are also what the tests hold these kernels to.

mod attention;
mod block;
mod experts;
mod gelu;
mod glu;
pub mod math;
mod norm;
pub(crate) mod par;
mod side_grads;
mod xent;

pub use attention::{causal_attention, executed_score_pairs, Dims as AttentionDims, CAUSAL_BLOCK};
pub use block::{attention_block, feed_forward_block, gated_feed_forward_block, BlockNorm};
pub use experts::{experts, ExpertWeights};
pub use gelu::gelu;
pub use norm::{layer_norm, normalise_composed};
pub use par::{on_pool, on_pool_for};
pub use side_grads::{reaches_weights, WeightGrads};
pub use xent::cross_entropy;

use candle_core::{DType, Tensor};

/// Whether the fused kernels run on `t`: f32 on the CPU.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Largest absolute difference between two tensors of one shape: how the kernel tests compare
/// with the composed ops.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}

/// Gradients of `sum(t * w)`: a weighted sum, so that each element's gradient is scaled
/// differently, for the kernels' backward tests.
#[cfg(test)]
pub(crate) fn weighted_sum_grads(t: &Tensor, w: &Tensor) -> candle_core::backprop::GradStore {
    t.mul(w)
        .and_then(|s| s.sum_all()?.backward())
        .expect("a weighted sum with gradients")
}
