//! Causal self-attention over a fused QKV projection, as one op: the scores, the scaled and
//! masked softmax and the weighted sum of values for every (sequence, head), straight from the
//! (tokens, 3 x heads x d_head) projection to the (tokens, heads x d_head) context, with no
//! permuted copies. The backward pass reuses the probabilities the forward pass kept. Composed
//! from candle's ops this is about fifteen tensors each way.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::math::{dot, exp, max, sum};
use super::par::{multiversion, tensor_f32};

/// Softmax attention of each position over itself and the positions before it, for `qkv` of
/// (batch x seq, 3 x heads x d_head) laid out as [q | k | v], each head-major. Returns
/// (batch x seq, heads x d_head). Scores are scaled by 1 / sqrt(d_head).
pub fn causal_attention(
    qkv: &Tensor,
    batch: usize,
    seq: usize,
    heads: usize,
    d_head: usize,
) -> Result<Tensor> {
    let op = CausalAttention {
        dims: Dims {
            batch,
            seq,
            heads,
            d_head,
        },
        keep_probs: qkv.track_op(),
        probs: OnceLock::new(),
    };
    qkv.contiguous()?.apply_op1(op)
}

/// Query rows per block of the causal attention: each block is computed against the keys up to
/// its own last row, so the masked scores after the diagonal blocks are never computed. 32 of a
/// 128-position sequence runs 5/8 of the full square.
pub const CAUSAL_BLOCK: usize = 32;

/// The blocks of `t` positions as (first row, rows, keys seen by the block's last row).
fn causal_blocks(t: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..t).step_by(CAUSAL_BLOCK).map(move |r0| {
        let rows = CAUSAL_BLOCK.min(t - r0);
        (r0, rows, r0 + rows)
    })
}

/// Query-key pairs whose score the fused attention computes for one (sequence, head) of `t`
/// positions: the diagonal blocks and everything before them. The executed FLOPs of each of its
/// two matmuls are 2 x d_head x this.
pub fn executed_score_pairs(t: usize) -> usize {
    causal_blocks(t).map(|(_, rows, keys)| rows * keys).sum()
}

/// The shape of one attention pass: `batch` sequences of `seq` positions, `heads` heads of
/// `d_head` each.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub d_head: usize,
}

impl Dims {
    pub fn model_dim(&self) -> usize {
        self.heads * self.d_head
    }

    /// Scores are scaled by 1 / sqrt(d_head).
    fn scale(&self) -> f32 {
        1.0 / (self.d_head as f32).sqrt()
    }
}

struct CausalAttention {
    dims: Dims,
    /// Whether a backward pass may follow, so the probabilities are worth keeping.
    keep_probs: bool,
    /// (batch x heads, seq, seq) softmax probabilities, when kept.
    probs: OnceLock<Vec<f32>>,
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes its own (sequence, head) block; no two tasks touch the same element.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY (callers): offsets stay inside the buffer this pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// One single-threaded gemm, `dst = beta * lhs @ rhs`, operands given as (pointer, column
/// stride, row stride). Parallelism comes from running (sequence, head) blocks side by side.
///
/// # Safety
/// The pointers and strides must describe valid m x k, k x n and m x n matrices.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.0,
            dst.1 as isize,
            dst.2 as isize,
            false,
            lhs.0,
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0,
            rhs.1 as isize,
            rhs.2 as isize,
            0.0,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

multiversion! {
    /// Row `i` of the (t, t) scores becomes the softmax over columns `0..=i`, zero after.
    pub fn causal_softmax(p: &mut [f32], t: usize) {
        for (i, row) in p.chunks_exact_mut(t).enumerate() {
            let (seen, future) = row.split_at_mut(i + 1);
            let max = max(seen);
            seen.iter_mut().for_each(|v| *v = exp(*v - max));
            let inv = 1.0 / sum(seen);
            seen.iter_mut().for_each(|v| *v *= inv);
            future.fill(0.0);
        }
    }
}

multiversion! {
    /// The softmax backward, in place over `dp`: `ds = scale * p (dp - sum_j p dp)` per row.
    pub fn softmax_backward(p: &[f32], dp: &mut [f32], t: usize, scale: f32) {
        for (p, dp) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)) {
            let dot = dot(p, dp);
            for (d, &p) in dp.iter_mut().zip(p) {
                *d = scale * p * (*d - dot);
            }
        }
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = super::par::f32_slice(s, l, "attention")?;
        let dims = self.dims;
        let (ctx, probs) = forward(qkv, dims)?;
        if self.keep_probs {
            let _ = self.probs.set(probs);
        }
        Ok((
            CpuStorage::F32(ctx),
            Shape::from((dims.batch * dims.seq, dims.model_dim())),
        ))
    }

    fn bwd(&self, qkv: &Tensor, _ctx: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(probs) = self.probs.get() else {
            bail!("fused attention: backward without the forward's probabilities")
        };
        let grad = grad.contiguous()?;
        let dqkv = tensor_f32(qkv, |qkv| {
            tensor_f32(&grad, |g| backward(qkv, probs, g, self.dims))
        })??;
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?))
    }
}

/// The context (batch x seq, heads x d_head) and the softmax probabilities (batch x heads, seq,
/// seq) of causal attention over `qkv` (batch x seq, 3 x heads x d_head), one (sequence, head)
/// block per task.
pub(super) fn forward(qkv: &[f32], dims: Dims) -> Result<(Vec<f32>, Vec<f32>)> {
    let Dims {
        batch: b,
        seq: t,
        heads: h,
        d_head: dh,
    } = dims;
    let dm = dims.model_dim();
    let row = 3 * dm;
    if qkv.len() != b * t * row {
        bail!(
            "fused attention: {} values are not {b} x {t} positions of {row}",
            qkv.len()
        );
    }
    let mut ctx = Vec::with_capacity(b * t * dm);
    let mut probs = Vec::with_capacity(b * h * t * t);
    let (ctx_p, probs_p) = (Shared(ctx.as_mut_ptr()), Shared(probs.as_mut_ptr()));
    let scale = dims.scale();
    (0..b * h).into_par_iter().for_each(|task| {
        let (bi, hi) = (task / h, task % h);
        let q = qkv[bi * t * row + hi * dh..].as_ptr();
        // SAFETY: q, k and v are (t, dh) blocks with row stride `row` inside `qkv`; the
        // task's probabilities and context block are its own.
        unsafe {
            let (k, v) = (q.add(dm), q.add(2 * dm));
            let p = probs_p.at(task * t * t);
            // Each block of query rows against the keys up to its last row only; the scores
            // after those keys are all masked, so they are zeroed instead of computed.
            for (r0, rows, keys) in causal_blocks(t) {
                let pr = p.add(r0 * t);
                matmul(
                    (rows, keys, dh),
                    (pr, 1, t),
                    (q.add(r0 * row), 1, row),
                    (k, row, 1),
                    scale,
                );
                for i in 0..rows {
                    std::ptr::write_bytes(pr.add(i * t + keys), 0, t - keys);
                }
            }
            causal_softmax(std::slice::from_raw_parts_mut(p, t * t), t);
            let o = ctx_p.at(bi * t * dm + hi * dh);
            for (r0, rows, keys) in causal_blocks(t) {
                let pr = p.add(r0 * t);
                matmul(
                    (rows, dh, keys),
                    (o.add(r0 * dm), 1, dm),
                    (pr, 1, t),
                    (v, 1, row),
                    1.0,
                );
            }
        }
    });
    // SAFETY: the gemms wrote every probability and every context element (each task one
    // (t, t) block and one (t, dh) block; the blocks tile both buffers).
    unsafe {
        ctx.set_len(b * t * dm);
        probs.set_len(b * h * t * t);
    }
    Ok((ctx, probs))
}

/// For the gradients that reach the keys and the values: each key block's rows of `dst` (row
/// stride `row`) = `m[c0.., block]^T @ x[c0..]`, where `m` is a (t, t) matrix that is zero after
/// the diagonal and `x` has row stride `x_rs`: a block of keys starting at c0 is seen by the
/// queries from c0 on only.
///
/// # Safety
/// The pointers must describe those matrices for `t` positions and `dh` columns.
unsafe fn per_key_block(
    (t, dh, row): (usize, usize, usize),
    dst: *mut f32,
    m: *const f32,
    (x, x_rs): (*const f32, usize),
) {
    for (c0, cols, _) in causal_blocks(t) {
        unsafe {
            matmul(
                (cols, dh, t - c0),
                (dst.add(c0 * row), 1, row),
                (m.add(c0 * t + c0), t, 1),
                (x.add(c0 * x_rs), 1, x_rs),
                1.0,
            )
        }
    }
}

/// The gradient of `qkv` from the gradient `g` of the context, given the forward pass's
/// probabilities.
pub(super) fn backward(qkv: &[f32], probs: &[f32], g: &[f32], dims: Dims) -> Vec<f32> {
    let Dims {
        batch: b,
        seq: t,
        heads: h,
        d_head: dh,
    } = dims;
    let dm = dims.model_dim();
    let row = 3 * dm;
    let scale = dims.scale();
    let mut dqkv = Vec::with_capacity(qkv.len());
    let out = Shared(dqkv.as_mut_ptr());
    (0..b * h).into_par_iter().for_each(|task| {
        let (bi, hi) = (task / h, task % h);
        let base = bi * t * row + hi * dh;
        let p = probs[task * t * t..].as_ptr();
        let go = g[bi * t * dm + hi * dh..].as_ptr();
        let mut ds = vec![0f32; t * t];
        // SAFETY: as in the forward pass; the task writes only its own head's dq, dk and dv
        // columns of its own sequence's rows.
        unsafe {
            let q = qkv.as_ptr().add(base);
            let (k, v) = (q.add(dm), q.add(2 * dm));
            // dv = p^T do; dp = do v^T; ds = softmax backward; dq = ds k; dk = ds^T q, each
            // over the causal blocks only: p and ds are zero after the diagonal. A block of keys
            // c0.. is seen by the queries c0.. only.
            let (dq, dk, dv) = (out.at(base), out.at(base + dm), out.at(base + 2 * dm));
            let ds_p = ds.as_mut_ptr();
            per_key_block((t, dh, row), dv, p, (go, dm));
            for (r0, rows, keys) in causal_blocks(t) {
                let dsr = ds_p.add(r0 * t);
                matmul(
                    (rows, keys, dh),
                    (dsr, 1, t),
                    (go.add(r0 * dm), 1, dm),
                    (v, row, 1),
                    1.0,
                );
            }
            softmax_backward(std::slice::from_raw_parts(p, t * t), &mut ds, t, scale);
            let ds_p = ds.as_ptr();
            for (r0, rows, keys) in causal_blocks(t) {
                let dsr = ds_p.add(r0 * t);
                matmul(
                    (rows, dh, keys),
                    (dq.add(r0 * row), 1, row),
                    (dsr, 1, t),
                    (k, 1, row),
                    1.0,
                );
            }
            per_key_block((t, dh, row), dk, ds_p, (q, row));
        }
    });
    // SAFETY: the tasks' dq, dk and dv blocks tile the whole buffer.
    unsafe { dqkv.set_len(qkv.len()) };
    dqkv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::{causal_mask, composed_attention};
    use crate::model::fused::{max_abs_diff, weighted_sum_grads};
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradient_match_the_composed_attention() {
        let dev = Device::Cpu;
        // Two full causal blocks and a short last one.
        let (b, t, h, dh) = (3, 2 * CAUSAL_BLOCK + 6, 4, 8);
        let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b * t, 3 * h * dh), &dev).unwrap())
            .unwrap();
        let ours = causal_attention(qkv.as_tensor(), b, t, h, dh).unwrap();
        let mask = causal_mask(t, 0, &dev).unwrap();
        let theirs = composed_attention(qkv.as_tensor(), b, t, h, dh, Some(&mask)).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_abs_diff(&ours, &theirs) < 1e-5);

        let w = Tensor::randn(0f32, 1.0, ours.shape(), &dev).unwrap();
        let ga = weighted_sum_grads(&ours, &w);
        let gb = weighted_sum_grads(&theirs, &w);
        assert!(max_abs_diff(ga.get(&qkv).unwrap(), gb.get(&qkv).unwrap()) < 1e-5);
    }

    #[test]
    fn the_blocks_cover_the_lower_triangle_and_no_more_than_the_diagonal_blocks() {
        for t in [1, 5, CAUSAL_BLOCK, CAUSAL_BLOCK + 1, 128, 200] {
            let pairs = executed_score_pairs(t);
            // Every (query, key) with key <= query, and within a block at most the square of
            // the blocks along the diagonal beyond that.
            let (lower, n) = (t * (t + 1) / 2, t.div_ceil(CAUSAL_BLOCK));
            assert!(pairs >= lower && pairs <= lower + n * CAUSAL_BLOCK * CAUSAL_BLOCK / 2);
            assert!(pairs <= t * t);
        }
        assert_eq!(executed_score_pairs(128) * 8, 128 * 128 * 5);
    }

    #[test]
    fn the_first_position_attends_only_to_itself() {
        let dev = Device::Cpu;
        let (t, h, dh) = (5, 2, 3);
        let qkv = Tensor::randn(0f32, 1.0, (t, 3 * h * dh), &dev).unwrap();
        let ctx = causal_attention(&qkv, 1, t, h, dh).unwrap();
        // Position 0's context is its own value vector, head by head.
        let v0 = qkv.get(0).unwrap().narrow(0, 2 * h * dh, h * dh).unwrap();
        assert!(max_abs_diff(&ctx.get(0).unwrap(), &v0) < 1e-6);
    }
}
