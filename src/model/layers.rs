//! The small building blocks: a counted linear layer, RMS norm, the GELU feed-forward block and a
//! softmax whose backward pass does not go through the max (it cancels out mathematically).
//!
//! Every weight matmul goes through [`Linear::forward`], which adds `2 * m * k * n` FLOPs to
//! the step's [`FlopCount`] with the shapes really run: that is the executed-FLOP counter.

use candle_core::{DType, Result, Tensor, D};

use super::fused;
use crate::accounting::flops::elementwise::{
    ffn_activation_flops_per_element, NORM_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT,
};
use crate::accounting::{Component, FlopCount};
use crate::profile::FfnKind;

/// `y = x @ w`, with `w` stored as (in, out) so the forward matmul reads it without a transpose.
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Tensor,
}

impl Linear {
    pub fn in_dim(&self) -> usize {
        self.w.dims()[0]
    }

    pub fn out_dim(&self) -> usize {
        self.w.dims()[1]
    }

    /// `x` is (rows, in); the result is (rows, out).
    pub fn forward(&self, x: &Tensor, c: Component, f: &mut FlopCount) -> Result<Tensor> {
        let rows = x.dim(0)?;
        f.add_matmul(c, rows, self.in_dim(), self.out_dim());
        x.matmul(&self.w)
    }
}

/// Layer norm with a learned gain and bias: the fused kernel on the CPU, differentiable candle
/// ops elsewhere (candle's own fused `layer_norm` has no backward pass).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub gain: Tensor,
    pub bias: Tensor,
}

pub const NORM_EPS: f64 = 1e-5;

impl LayerNorm {
    /// The gain and the bias.
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        [&self.gain, &self.bias].into_iter()
    }

    /// The norm as the fused blocks take it.
    pub fn fused(&self) -> fused::BlockNorm<'_> {
        fused::BlockNorm {
            gain: &self.gain,
            bias: &self.bias,
            eps: NORM_EPS as f32,
        }
    }

    /// Adds the FLOPs of normalising `elements` values to `f`, for callers that run the norm
    /// themselves.
    pub fn count(&self, elements: usize, f: &mut FlopCount) {
        f.add(Component::NormAct, NORM_FLOPS_PER_ELEMENT * elements as f64);
    }

    pub fn forward(&self, x: &Tensor, f: &mut FlopCount) -> Result<Tensor> {
        self.count(x.elem_count(), f);
        if fused::applies(x) {
            return fused::layer_norm(x, &self.gain, &self.bias, NORM_EPS as f32);
        }
        // Statistics in f32 whatever the model's dtype.
        let dtype = x.dtype();
        fused::normalise_composed(&x.to_dtype(DType::F32)?, NORM_EPS)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.gain)?
            .broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension. The max is detached: subtracting it does not change the
/// result, so its gradient is zero and computing it would only cost time.
pub fn softmax(x: &Tensor, f: &mut FlopCount) -> Result<Tensor> {
    f.add(
        Component::NormAct,
        SOFTMAX_FLOPS_PER_ELEMENT * x.elem_count() as f64,
    );
    softmax_uncounted(x)
}

/// [`softmax`] without adding to a FLOP count, for callers that count the softmax themselves.
pub fn softmax_uncounted(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

/// Softmax over the last dimension off the fused CPU path: candle-nn's one-pass kernel forward
/// (which has no backward pass of its own), and the backward `dy -> y * (dy - sum(dy * y))` from
/// tensor ops. On a GPU the composed [`softmax_uncounted`] makes six passes over attention's
/// batch x heads x positions^2 scores each way, three of them broadcasting.
pub fn softmax_one_pass(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let y = candle_nn::ops::softmax_last_dim(&x.detach())?;
    x.apply_op2(&y, WithSoftmaxGrad)
}

/// `(x, y) -> y`, with the gradient of `y = softmax(x)` for `x`: puts a softmax computed off the
/// graph back on it. The forward is a copy of `y`.
struct WithSoftmaxGrad;

impl candle_core::CustomOp2 for WithSoftmaxGrad {
    fn name(&self) -> &'static str {
        "with-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        y: &candle_core::CpuStorage,
        ly: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((y.try_clone(ly)?, ly.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &candle_core::Layout,
        y: &candle_core::CudaStorage,
        ly: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((y.try_clone(ly)?, ly.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = (grad * res)?;
        let dot = gy.sum_keepdim(D::Minus1)?;
        Ok((Some((gy - res.broadcast_mul(&dot)?)?), None))
    }
}

/// Log-softmax over the last dimension, with the max detached as in [`softmax`].
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let diff = x.broadcast_sub(&max)?;
    let lse = diff.exp()?.sum_keepdim(D::Minus1)?.log()?;
    diff.broadcast_sub(&lse)
}

/// Mean cross-entropy (nats per token) of `logits` (rows, vocab) against `targets` (rows) u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused::applies(logits) {
        return fused::cross_entropy(logits, targets);
    }
    cross_entropy_composed(logits, targets)
}

/// [`cross_entropy`] from candle's ops: the path off the CPU, and the fused kernel's reference.
pub fn cross_entropy_composed(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let rows = logits.dim(0)?;
    let lp = log_softmax(&logits.to_dtype(DType::F32)?)?;
    lp.gather(&targets.unsqueeze(1)?, 1)?
        .sum_all()?
        .affine(-1.0 / rows as f64, 0.0)
}

/// Cross-entropy of each row group: `logits` (rows, vocab) of `sequences` sequences of equal
/// length, the mean over each sequence's tokens (nats per token), from candle's ops. Their mean
/// is [`cross_entropy_composed`].
pub fn cross_entropy_per_sequence(
    logits: &Tensor,
    targets: &Tensor,
    sequences: usize,
) -> Result<Vec<f32>> {
    let lp = log_softmax(&logits.to_dtype(DType::F32)?)?;
    let picked = lp.gather(&targets.unsqueeze(1)?, 1)?; // (rows, 1)
    let rows = picked.dim(0)?;
    picked
        .reshape((sequences, rows / sequences.max(1)))?
        .mean(1)?
        .neg()?
        .to_vec1::<f32>()
}

/// The feed-forward block, d -> d_ff -> d: a dense layer's FFN and each expert. The plain MLP
/// is `gelu(x up) down`; a gated unit (GLaM's dense layers; Shazeer 2020, arXiv 2002.05202) is
/// `(act(x gate) * (x up)) down`, GELU for GEGLU and SiLU for SwiGLU.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub up: Linear,
    pub down: Linear,
    /// The gate projection of a gated unit; `None` for the plain MLP.
    pub gate: Option<Linear>,
    pub kind: FfnKind,
}

impl Mlp {
    /// The up and the down projection, then the gate where there is one.
    pub fn matrices(&self) -> impl Iterator<Item = &Tensor> {
        [&self.up.w, &self.down.w]
            .into_iter()
            .chain(self.gate.as_ref().map(|g| &g.w))
    }

    /// The weight matrices, for the fused experts op.
    pub fn weights(&self) -> fused::ExpertWeights {
        fused::ExpertWeights {
            up: self.up.w.clone(),
            down: self.down.w.clone(),
            gate: self.gate.as_ref().map(|g| g.w.clone()),
        }
    }

    /// Adds the FLOPs of running the block on `rows` rows to `f`, for callers that run it
    /// themselves.
    pub fn count(&self, rows: usize, c: Component, f: &mut FlopCount) {
        f.add_matmul(c, rows, self.up.in_dim(), self.up.out_dim());
        if let Some(g) = &self.gate {
            f.add_matmul(c, rows, g.in_dim(), g.out_dim());
        }
        f.add(
            Component::NormAct,
            ffn_activation_flops_per_element(self.kind) * (rows * self.up.out_dim()) as f64,
        );
        f.add_matmul(c, rows, self.down.in_dim(), self.down.out_dim());
    }

    pub fn forward(&self, x: &Tensor, c: Component, f: &mut FlopCount) -> Result<Tensor> {
        self.count(x.dim(0)?, c, f);
        let h = x.matmul(&self.up.w)?; // (rows, d_ff)
        let z = match &self.gate {
            None => gelu(&h)?,
            Some(gate) => {
                let g = x.matmul(&gate.w)?; // (rows, d_ff)
                let a = match self.kind {
                    FfnKind::Swiglu => g.silu()?,
                    FfnKind::Mlp | FfnKind::Geglu => gelu(&g)?,
                };
                (a * h)?
            }
        };
        z.matmul(&self.down.w)
    }
}

/// Exact (erf) GELU: the fused kernel where it applies, candle's op elsewhere.
fn gelu(h: &Tensor) -> Result<Tensor> {
    if fused::applies(h) {
        fused::gelu(h)
    } else {
        h.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_one_pass_softmax_and_its_gradient_match_the_composed_ones() {
        let x = Tensor::arange(0f32, 60.0, &Device::Cpu)
            .unwrap()
            .affine(0.37, -9.0)
            .unwrap()
            .sin()
            .unwrap()
            .affine(4.0, 0.0)
            .unwrap()
            .reshape((3, 4, 5))
            .unwrap();
        let w = x.cos().unwrap(); // a different weight for each output
        let v = candle_core::Var::from_tensor(&x).unwrap();
        let (a, b) = (
            softmax_one_pass(v.as_tensor()).unwrap(),
            softmax_uncounted(v.as_tensor()).unwrap(),
        );
        assert!(fused::max_abs_diff(&a, &b) < 1e-6);
        let ga = fused::weighted_sum_grads(&a, &w);
        let gb = fused::weighted_sum_grads(&b, &w);
        let (ga, gb) = (
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        assert!(fused::max_abs_diff(ga, gb) < 1e-6);
        assert!(
            ga.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.1
        );
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_a_direct_computation() {
        let x = Tensor::new(&[[1f32, 2.0, 3.0], [-1.0, 0.0, 5.0]], &Device::Cpu).unwrap();
        let s = softmax(&x, &mut FlopCount::default()).unwrap();
        let v = s.to_vec2::<f32>().unwrap();
        let row = [1f32, 2.0, 3.0];
        let z: f32 = row.iter().map(|a| a.exp()).sum();
        for (j, a) in row.iter().enumerate() {
            assert!((v[0][j] - a.exp() / z).abs() < 1e-6);
        }
        assert!((v[1].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_vocab() {
        let logits = Tensor::zeros((4, 256), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap();
        let l = cross_entropy(&logits, &t)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 256f32.ln()).abs() < 1e-5);
    }
}
