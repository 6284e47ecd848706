//! Mean cross-entropy over rows of logits in one pass, and its gradient `(softmax - onehot) / rows`
//! in one more; composed from candle's ops it is a log-softmax, a gather and their backward.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::math::{exp, max, sum};
use super::par::{assume_init, f32_slice, filled, for_rows, map_input_rows, multiversion};

/// Mean cross-entropy, nats per row, of `logits` (rows, vocab) against `targets` (rows) u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy)
}

multiversion! {
    /// Writes `exp(x - max)` of one row into `e`.
    pub fn exp_row(x: &[f32], max: f32, e: &mut [MaybeUninit<f32>]) {
        for (e, &x) in e.iter_mut().zip(x) {
            e.write(exp(x - max));
        }
    }
}

/// Writes `exp(x - max(x))` of one row into `e`; returns the max, the written row and its sum.
fn shifted_exps<'a>(x: &[f32], e: &'a mut [MaybeUninit<f32>]) -> (f32, &'a mut [f32], f32) {
    let m = max(x);
    exp_row(x, m, e);
    // SAFETY: exp_row wrote the whole row.
    let e = unsafe { assume_init(e) };
    let s = sum(e);
    (m, e, s)
}

/// The u32 targets of a kernel input, each checked against the vocabulary.
fn targets<'a>(s: &'a CpuStorage, l: &Layout, rows: usize, vocab: usize) -> Result<&'a [u32]> {
    let CpuStorage::U32(t) = s else {
        bail!(
            "fused cross-entropy: targets must be u32, got {:?}",
            s.dtype()
        )
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("fused cross-entropy: targets must be contiguous")
    };
    let t = &t[a..b];
    if t.len() != rows {
        bail!(
            "fused cross-entropy: {rows} rows of logits, {} targets",
            t.len()
        );
    }
    if let Some(bad) = t.iter().find(|&&t| t as usize >= vocab) {
        bail!("fused cross-entropy: target {bad} is outside the vocabulary of {vocab}");
    }
    Ok(t)
}

fn rows_and_vocab(l: &Layout) -> Result<(usize, usize)> {
    match l.shape().dims() {
        [rows, vocab] if *vocab > 0 => Ok((*rows, *vocab)),
        d => bail!("fused cross-entropy: logits must be (rows, vocab), got {d:?}"),
    }
}

struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "cross-entropy")?;
        let (rows, vocab) = rows_and_vocab(l1)?;
        let t = targets(s2, l2, rows, vocab)?;
        // Each task returns its rows' summed loss; the exponentials go to one row of scratch.
        let sums = map_input_rows(x, vocab, |row, x| {
            let mut scratch = Vec::with_capacity(vocab);
            let mut loss = 0f64;
            for (r, x) in x.chunks_exact(vocab).enumerate() {
                let (max, _, sum) = shifted_exps(x, &mut scratch.spare_capacity_mut()[..vocab]);
                loss += (max + sum.ln() - x[t[row + r] as usize]) as f64;
            }
            loss
        });
        let mean = sums.iter().sum::<f64>() / rows.max(1) as f64;
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let rows = logits.dim(0)?.max(1);
        let scale = g.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / rows as f32;
        let d = logits.apply_op2_no_bwd(targets, &CrossEntropyBackward { scale })?;
        Ok((Some(d), None))
    }
}

/// `scale * (softmax(x) - onehot(target))` per row.
struct CrossEntropyBackward {
    scale: f32,
}

impl CustomOp2 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "cross-entropy backward")?;
        let (rows, vocab) = rows_and_vocab(l1)?;
        let t = targets(s2, l2, rows, vocab)?;
        let d = filled(x.len(), |d| {
            for_rows(d, vocab, |row, d| {
                for (r, d) in d.chunks_exact_mut(vocab).enumerate() {
                    let x = &x[(row + r) * vocab..(row + r + 1) * vocab];
                    let (_, d, sum) = shifted_exps(x, d);
                    let k = self.scale / sum;
                    d.iter_mut().for_each(|v| *v *= k);
                    d[t[row + r] as usize] -= self.scale;
                }
            })
        });
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::max_abs_diff;
    use crate::model::layers::cross_entropy_composed;
    use candle_core::{Device, Var};

    #[test]
    fn loss_and_gradient_match_the_composed_log_softmax() {
        let dev = Device::Cpu;
        let (rows, vocab) = (200, 256);
        let logits =
            Var::from_tensor(&(Tensor::randn(0f32, 3.0, (rows, vocab), &dev).unwrap())).unwrap();
        let t: Vec<u32> = (0..rows as u32).map(|i| (i * 37) % vocab as u32).collect();
        let t = Tensor::from_vec(t, rows, &dev).unwrap();
        let ours = cross_entropy(logits.as_tensor(), &t).unwrap();
        let theirs = cross_entropy_composed(logits.as_tensor(), &t).unwrap();
        let (a, b) = (
            ours.to_scalar::<f32>().unwrap(),
            theirs.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-5 * b.abs(), "{a} vs {b}");

        // Scaled by 3 to check the incoming gradient is used.
        let ga = (ours * 3.0).unwrap().backward().unwrap();
        let gb = (theirs * 3.0).unwrap().backward().unwrap();
        assert!(max_abs_diff(ga.get(&logits).unwrap(), gb.get(&logits).unwrap()) < 1e-7);
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let logits = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
        let e = cross_entropy(&logits, &t).unwrap_err().to_string();
        assert!(
            e.contains("target 4") && e.contains("vocabulary of 4"),
            "{e}"
        );
    }
}
