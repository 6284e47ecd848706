//! Each half of a pre-norm transformer block as one op, residual connection included:
//! `x + attention(norm(x) Wqkv) Wout` and `x + gelu(norm(x) Wup) Wdown`. The backward pass gives
//! candle the input gradient and computes the norm's and both matrices' gradients itself
//! (collected by [`WeightGrads::move_into`]).
//!
//! Through candle's graph each half is five or six ops, and candle accumulates every gradient of
//! every op into a zeroed tensor of its own: a dozen full-size buffers zeroed and added per block
//! on every step, next to the matmuls. Here the residual is added by the second matmul
//! (`dst += z W`), and the input gradient's residual term by the norm's backward pass.

use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::attention::{self, Dims};
use super::gelu::{forward_with_slope, slope_backward_into};
use super::glu::{self, Gated};
use super::norm;
use super::par::{
    all_cores, f32_slice, filled, half_cores, matmul, matmul_add, side_by_side, tensor_f32,
};
use super::side_grads::WeightGrads;
use crate::model::optim::sum_of_squares_here;
use crate::profile::FfnKind;

/// The norm at the head of a block: gain and bias (d_model) and epsilon.
pub struct BlockNorm<'a> {
    pub gain: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f32,
}

/// `x + causal_attention(norm(x) wqkv) wout` for `x` (batch x seq, d_model), `wqkv` (d_model,
/// 3 x heads x d_head) laid out as [q | k | v], `wout` (heads x d_head, d_model). The sink
/// receives the gradients of gain, bias, wqkv and wout, in that order.
pub fn attention_block(
    x: &Tensor,
    norm: BlockNorm,
    wqkv: &Tensor,
    wout: &Tensor,
    dims: Dims,
) -> Result<(Tensor, Arc<WeightGrads>)> {
    block(x, norm, [wqkv, wout], Inner::Attention(dims))
}

/// `x + gelu(norm(x) up) down` for `x` (rows, d_model), `up` (d_model, d_ff), `down` (d_ff,
/// d_model). The sink receives the gradients of gain, bias, up and down, in that order.
pub fn feed_forward_block(
    x: &Tensor,
    norm: BlockNorm,
    up: &Tensor,
    down: &Tensor,
) -> Result<(Tensor, Arc<WeightGrads>)> {
    block(x, norm, [up, down], Inner::Gelu)
}

/// `x + (act(norm(x) gate) * (norm(x) up)) down`, a gated unit of `kind` (GEGLU or SwiGLU), with
/// `gate` and `up` (d_model, d_ff) and `down` (d_ff, d_model). The sink receives the gradients of
/// gain, bias, up, down and gate, in that order.
pub fn gated_feed_forward_block(
    x: &Tensor,
    norm: BlockNorm,
    [gate, up, down]: [&Tensor; 3],
    kind: FfnKind,
) -> Result<(Tensor, Arc<WeightGrads>)> {
    if !kind.is_gated() {
        bail!("fused block: {} is not a gated unit", kind.label());
    }
    block(x, norm, [up, down], Inner::Gated(kind, gate.contiguous()?))
}

fn block(
    x: &Tensor,
    norm: BlockNorm,
    [w1, w2]: [&Tensor; 2],
    inner: Inner,
) -> Result<(Tensor, Arc<WeightGrads>)> {
    let mut weights = vec![norm.gain.clone(), norm.bias.clone(), w1.clone(), w2.clone()];
    if let Inner::Gated(_, gate) = &inner {
        weights.push(gate.clone());
    }
    let sink = WeightGrads::new(weights);
    let op = Block {
        gain: norm.gain.contiguous()?,
        bias: norm.bias.contiguous()?,
        eps: norm.eps,
        w1: w1.contiguous()?,
        w2: w2.contiguous()?,
        inner,
        keep: x.track_op(),
        saved: OnceLock::new(),
        sink: sink.clone(),
    };
    Ok((x.contiguous()?.apply_op1(op)?, sink))
}

/// What sits between a block's two matmuls.
#[derive(Clone)]
enum Inner {
    Attention(Dims),
    Gelu,
    /// A gated unit's activation and its gate matrix (d_model, d_ff), beside the first matmul.
    Gated(FfnKind, Tensor),
}

/// The activations the backward pass needs: the normed input, the first matmul's output `p`
/// (for the GELU half, GELU's slope at it, all that the backward needs of it), the second
/// matmul's input `z`, and the attention probabilities (empty for the GELU).
struct Saved {
    hn: Vec<f32>,
    p: Vec<f32>,
    z: Vec<f32>,
    probs: Vec<f32>,
    /// A gated unit's activations (then `p` and `z` are empty: they are in here).
    gated: Option<Gated>,
}

struct Block {
    gain: Tensor,
    bias: Tensor,
    eps: f32,
    w1: Tensor,
    w2: Tensor,
    inner: Inner,
    /// Whether a backward pass may follow, so the activations are worth keeping.
    keep: bool,
    saved: OnceLock<Saved>,
    sink: Arc<WeightGrads>,
}

/// A weight gradient with its sum of squares, taken on this thread while it is in cache (the
/// other half of the threads is busy with the paired product).
fn with_squares(dw: Vec<f32>) -> (Vec<f32>, f64) {
    let sq = sum_of_squares_here(&dw);
    (dw, sq)
}

impl Block {
    /// (d_model, the first matmul's width, the second's depth).
    fn widths(&self) -> Result<(usize, usize, usize)> {
        let (d, m1) = self.w1.dims2()?;
        let (m2, d2) = self.w2.dims2()?;
        if d2 != d || self.gain.elem_count() != d || self.bias.elem_count() != d {
            bail!(
                "fused block: weights {:?} and {:?}, norm of {}, do not fit one d_model",
                self.w1.dims(),
                self.w2.dims(),
                self.gain.elem_count()
            );
        }
        Ok((d, m1, m2))
    }
}

impl CustomOp1 for Block {
    fn name(&self) -> &'static str {
        match self.inner {
            Inner::Attention(_) => "fused-attention-block",
            Inner::Gelu => "fused-feed-forward-block",
            Inner::Gated(..) => "fused-gated-feed-forward-block",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "block")?;
        let (d, m1, m2) = self.widths()?;
        let n = x.len() / d;
        if n * d != x.len() {
            bail!("fused block: {} values are not rows of {d}", x.len());
        }
        let par = all_cores();
        let hn = tensor_f32(&self.gain, |gain| {
            tensor_f32(&self.bias, |bias| norm::forward(x, gain, bias, self.eps))
        })??;
        let p = tensor_f32(&self.w1, |w1| {
            filled(n * m1, |p| {
                matmul(p, (n, m1, d), (&hn, 1, d), (w1, 1, m1), par)
            })
        })?;
        let (p, z, probs, gated) = match &self.inner {
            Inner::Attention(dims) => {
                let (z, probs) = attention::forward(&p, *dims)?;
                (p, z, probs, None)
            }
            Inner::Gelu => {
                let (z, slope) = forward_with_slope(&p, true);
                (slope, z, Vec::new(), None)
            }
            Inner::Gated(kind, gate) => {
                let g = tensor_f32(gate, |gate| {
                    filled(n * m1, |g| {
                        matmul(g, (n, m1, d), (&hn, 1, d), (gate, 1, m1), par)
                    })
                })?;
                (
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    Some(glu::forward(*kind, &g, p, true)),
                )
            }
        };
        // The second matmul's input: a gated unit keeps it in `gated` (`z` is empty then).
        let zs = gated.as_ref().map_or(&z[..], |g| &g.z[..]);
        if zs.len() != n * m2 {
            bail!(
                "fused block: the inner output has {} values, not {n} x {m2}",
                zs.len()
            );
        }
        let mut y = x.to_vec();
        tensor_f32(&self.w2, |w2| {
            matmul_add(&mut y, (n, d, m2), (zs, 1, m2), (w2, 1, d), par)
        })?;
        if self.keep {
            let _ = self.saved.set(Saved {
                hn,
                p,
                z,
                probs,
                gated,
            });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(Saved {
            hn,
            p,
            z,
            probs,
            gated,
        }) = self.saved.get()
        else {
            bail!("fused block: backward without the forward's activations")
        };
        let (d, m1, m2) = self.widths()?;
        let n = hn.len() / d;
        let grad = grad.contiguous()?;
        let z = gated.as_ref().map_or(&z[..], |g| &g.z[..]);
        let (dx, dgain, dbias, dw1, dw2, dgate) = tensor_f32(&grad, |g| -> Result<_> {
            // dZ = dY w2^T; dW2 = Z^T dY.
            // Each pair of products below is independent and of equal size: they run side by
            // side, each on half the threads, with no synchronisation inside either.
            let half = half_cores();
            let (dz, dw2) = side_by_side(
                || {
                    tensor_f32(&self.w2, |w2| {
                        filled(n * m2, |dz| {
                            matmul(dz, (n, m2, d), (g, 1, d), (w2, d, 1), half)
                        })
                    })
                },
                || {
                    let dw = filled(m2 * d, |dw| {
                        matmul(dw, (m2, d, n), (z, m2, 1), (g, 1, d), half)
                    });
                    with_squares(dw)
                },
            );
            let dz = dz?;
            // A gated unit: dP is the up projection's gradient; dQ the gate's.
            let (dp, dq) = match (&self.inner, gated) {
                (Inner::Attention(dims), _) => (attention::backward(p, probs, &dz, *dims), None),
                (Inner::Gelu, _) => (
                    filled(n * m1, |dp| slope_backward_into(p, &dz, dp, true)),
                    None,
                ),
                (Inner::Gated(_, gate), Some(saved)) => {
                    let (du, dg) = glu::backward(saved, &dz, true);
                    (du, Some((gate, dg)))
                }
                (Inner::Gated(..), None) => bail!("fused block: gated without its activations"),
            };
            // dW1 = HN^T dP; dHN = dP w1^T; dX = dY + the norm's backward of dHN.
            let (dw1, dhn) = side_by_side(
                || {
                    let dw = filled(d * m1, |dw| {
                        matmul(dw, (d, m1, n), (hn, d, 1), (&dp, 1, m1), half)
                    });
                    with_squares(dw)
                },
                || {
                    tensor_f32(&self.w1, |w1| {
                        filled(n * d, |dhn| {
                            matmul(dhn, (n, d, m1), (&dp, 1, m1), (w1, m1, 1), half)
                        })
                    })
                },
            );
            let mut dhn = dhn?;
            // The gate: dGate = HN^T dQ; dHN += dQ gate^T.
            let dgate = match dq {
                None => None,
                Some((gate, dq)) => {
                    let dw = filled(d * m1, |dw| {
                        matmul(dw, (d, m1, n), (hn, d, 1), (&dq, 1, m1), all_cores())
                    });
                    tensor_f32(gate, |gate| {
                        matmul_add(
                            &mut dhn,
                            (n, d, m1),
                            (&dq, 1, m1),
                            (gate, m1, 1),
                            all_cores(),
                        )
                    })?;
                    Some(with_squares(dw))
                }
            };
            let (dx, dgain, dbias) = tensor_f32(x, |x| {
                tensor_f32(&self.gain, |gain| {
                    norm::backward(x, gain, &dhn, self.eps, g)
                })
            })??;
            Ok((dx, dgain, dbias, dw1, dw2, dgate))
        })??;
        let dev = x.device();
        self.sink
            .set(0, Tensor::from_vec(dgain, self.gain.shape(), dev)?);
        self.sink
            .set(1, Tensor::from_vec(dbias, self.bias.shape(), dev)?);
        let ((dw1, sq1), (dw2, sq2)) = (dw1, dw2);
        let sink = &self.sink;
        sink.set_with_squares(2, Tensor::from_vec(dw1, self.w1.shape(), dev)?, sq1);
        sink.set_with_squares(3, Tensor::from_vec(dw2, self.w2.shape(), dev)?, sq2);
        if let (Some((dw, sq)), Inner::Gated(_, gate)) = (dgate, &self.inner) {
            sink.set_with_squares(4, Tensor::from_vec(dw, gate.shape(), dev)?, sq);
        }
        Ok(Some(Tensor::from_vec(dx, x.shape(), dev)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::{causal_mask, composed_attention};
    use crate::model::fused::{max_abs_diff, normalise_composed, weighted_sum_grads};
    use candle_core::{Device, Var};

    const EPS: f32 = 1e-5;

    fn var(shape: (usize, usize), scale: f64, dev: &Device) -> Var {
        Var::from_tensor(&(Tensor::randn(0f32, 1.0, shape, dev).unwrap() * scale).unwrap()).unwrap()
    }

    /// The largest difference relative to the larger of 1 and the reference's largest value.
    fn rel_diff(ours: &Tensor, theirs: &Tensor) -> f32 {
        let scale = theirs.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        max_abs_diff(ours, theirs) / scale.to_scalar::<f32>().unwrap().max(1.0)
    }

    /// Forward and the input, gain, bias and every weight gradient against the same block
    /// composed from candle's ops (their gradients from candle's autograd), for each inner op:
    /// attention, the plain GELU MLP and both gated units.
    #[test]
    fn both_blocks_and_every_gradient_match_candles_ops() {
        let dev = Device::Cpu;
        // Large enough that the norm, the GELU and the matmuls split over the cores.
        let (b, t, h, dh) = (4, 64, 4, 16);
        let (n, d, ff) = (b * t, h * dh, 3 * h * dh);
        let dims = Dims {
            batch: b,
            seq: t,
            heads: h,
            d_head: dh,
        };
        let kinds = [
            None,
            Some(FfnKind::Mlp),
            Some(FfnKind::Geglu),
            Some(FfnKind::Swiglu),
        ];
        for ffn in kinds {
            let attention = ffn.is_none();
            let x = var((n, d), 1.0, &dev);
            let gain = Var::from_tensor(&(Tensor::rand(0.5f32, 1.5, d, &dev).unwrap())).unwrap();
            let bias = var((1, d), 0.1, &dev);
            let bias = Var::from_tensor(&bias.as_tensor().reshape(d).unwrap()).unwrap();
            let m1 = if attention { 3 * d } else { ff };
            let w1 = var((d, m1), 0.2, &dev);
            let w2 = var((if attention { d } else { ff }, d), 0.2, &dev);
            let gate = var((d, ff), 0.2, &dev);
            let norm = BlockNorm {
                gain: gain.as_tensor(),
                bias: bias.as_tensor(),
                eps: EPS,
            };
            let (w1t, w2t) = (w1.as_tensor(), w2.as_tensor());
            let (ours, sink) = match ffn {
                None => attention_block(x.as_tensor(), norm, w1t, w2t, dims),
                Some(FfnKind::Mlp) => feed_forward_block(x.as_tensor(), norm, w1t, w2t),
                Some(kind) => gated_feed_forward_block(
                    x.as_tensor(),
                    norm,
                    [gate.as_tensor(), w1t, w2t],
                    kind,
                ),
            }
            .unwrap();

            let hn = normalise_composed(x.as_tensor(), EPS as f64)
                .unwrap()
                .broadcast_mul(gain.as_tensor())
                .unwrap()
                .broadcast_add(bias.as_tensor())
                .unwrap();
            let p = hn.matmul(w1.as_tensor()).unwrap();
            let q = hn.matmul(gate.as_tensor()).unwrap();
            let z = match ffn {
                None => {
                    let mask = causal_mask(t, 0, &dev).unwrap();
                    composed_attention(&p, b, t, h, dh, Some(&mask)).unwrap()
                }
                Some(FfnKind::Mlp) => p.gelu_erf().unwrap(),
                Some(FfnKind::Geglu) => (q.gelu_erf().unwrap() * p).unwrap(),
                Some(FfnKind::Swiglu) => (q.silu().unwrap() * p).unwrap(),
            };
            let theirs = (x.as_tensor() + z.matmul(w2.as_tensor()).unwrap()).unwrap();
            assert!(rel_diff(&ours, &theirs) < 1e-5, "{ffn:?}");

            let w = Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap();
            let mut ga = weighted_sum_grads(&ours, &w);
            sink.move_into(&mut ga, &mut Default::default()).unwrap();
            let gb = weighted_sum_grads(&theirs, &w);
            let gated = ffn.is_some_and(FfnKind::is_gated);
            let all = [&x, &gain, &bias, &w1, &w2].into_iter();
            for v in all.chain(gated.then_some(&gate)) {
                let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                assert_eq!(a.dims(), b.dims());
                let diff = rel_diff(a, b);
                assert!(diff < 1e-4, "{ffn:?}, {:?}: {diff}", v.dims());
            }
            assert_eq!(ga.get(&gate).is_some(), gated);
        }
    }

    #[test]
    fn zero_output_weights_give_the_input_back_and_an_untracked_input_no_gradients() {
        let dev = Device::Cpu;
        let (n, d, ff) = (6, 8, 16);
        let x = Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap();
        let gain = Tensor::ones(d, candle_core::DType::F32, &dev).unwrap();
        let bias = gain.zeros_like().unwrap();
        let up = Tensor::randn(0f32, 1.0, (d, ff), &dev).unwrap();
        let down = Tensor::randn(0f32, 1.0, (ff, d), &dev).unwrap();
        let norm = BlockNorm {
            gain: &gain,
            bias: &bias,
            eps: EPS,
        };
        let (y, sink) = feed_forward_block(&x, norm, &up, &down).unwrap();
        assert_eq!(y.dims(), [n, d]);
        // The output is the input plus the block: zero weights out give the input back.
        let norm = BlockNorm {
            gain: &gain,
            bias: &bias,
            eps: EPS,
        };
        let (same, _) = feed_forward_block(&x, norm, &up, &down.zeros_like().unwrap()).unwrap();
        assert_eq!(max_abs_diff(&same, &x), 0.0);
        let mut store = (x.sum_all().unwrap() * 0.0).unwrap().backward().unwrap();
        sink.move_into(&mut store, &mut Default::default()).unwrap();
        assert!(store.get(&up).is_none() && store.get(&gain).is_none());
    }
}
