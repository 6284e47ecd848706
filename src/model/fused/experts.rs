//! The experts of one MoE layer as one op: each expert's rows gathered, its GELU feed-forward
//! run, and the outputs scaled by their gates and summed back per token, in one pass with no
//! per-expert tensors on candle's graph. The backward pass gives the input and gate gradients to
//! candle and computes the expert weights' gradients itself, straight into their own buffers, collected by
//! [`WeightGrads::move_into`]: through candle's graph every expert matrix would cost a zeroed
//! gradient buffer, a zeroed matmul output and an extra addition per step, and every expert a
//! full-size copy of the layer's input gradient; with 64 experts that was a third of a step.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;

use super::gelu::{forward_with_slope, slope_backward_into};
use super::glu::{self, Gated};
use super::math::dot;
use super::par::{
    assume_init, f32_slice, filled, for_rows, map_rows, matmul, matmul_add, matmul_transposed,
    tensor_f32,
};
use super::side_grads::WeightGrads;
use crate::model::optim::{sum_of_squares, sum_of_squares_here};
use crate::profile::FfnKind;

/// One expert's weights: `up` (d_model, d_ff) and `down` (d_ff, d_model), as the model stores them,
/// and for a gated unit `gate` (d_model, d_ff).
#[derive(Clone)]
pub struct ExpertWeights {
    pub up: Tensor,
    pub down: Tensor,
    pub gate: Option<Tensor>,
}

impl ExpertWeights {
    /// The matrices in the order the sink holds their gradients: up, down, then the gate.
    fn matrices(&self) -> impl Iterator<Item = &Tensor> {
        [&self.up, &self.down].into_iter().chain(&self.gate)
    }
}

/// Runs `experts[e]` (feed-forward blocks of `kind`) on the rows `rows[e]` of `x` (tokens,
/// d_model) and returns, for every token, the sum of its experts' outputs each scaled by its
/// gate, (tokens, d_model), with the sink the backward pass fills (up, down and, when gated, the
/// gate matrix of each expert in turn). `gates` holds one weight per routed row, in the order of
/// `rows` concatenated (expert after expert); a token no expert took gets zeros.
pub fn experts(
    x: &Tensor,
    gates: &Tensor,
    experts: &[ExpertWeights],
    rows: &[Vec<u32>],
    kind: FfnKind,
) -> Result<(Tensor, Arc<WeightGrads>)> {
    if experts.iter().any(|w| w.gate.is_some() != kind.is_gated()) {
        bail!(
            "fused experts: {} experts need a gate matrix each, and only they",
            kind.label()
        );
    }
    if experts.len() != rows.len() {
        bail!(
            "fused experts: {} experts, {} row lists",
            experts.len(),
            rows.len()
        );
    }
    let kept: usize = rows.iter().map(Vec::len).sum();
    if gates.elem_count() != kept {
        bail!(
            "fused experts: {} gates for {kept} routed rows",
            gates.elem_count()
        );
    }
    let sink = WeightGrads::new(experts.iter().flat_map(|w| w.matrices().cloned()).collect());
    let op = Experts {
        kind,
        weights: experts.to_vec(),
        rows: rows.to_vec(),
        keep: x.track_op() || gates.track_op(),
        saved: OnceLock::new(),
        sink: sink.clone(),
    };
    Ok((x.contiguous()?.apply_op2(&gates.contiguous()?, op)?, sink))
}

struct Experts {
    kind: FfnKind,
    weights: Vec<ExpertWeights>,
    rows: Vec<Vec<u32>>,
    /// Whether a backward pass may follow, so the activations are worth keeping.
    keep: bool,
    saved: OnceLock<Saved>,
    sink: Arc<WeightGrads>,
}

/// One expert's hidden activations, (rows, d_ff) each: for the plain MLP GELU's slope at its
/// pre-activation and the activation; for a gated unit all that [`glu::backward`] needs.
enum Hidden {
    Plain(Vec<f32>, Vec<f32>),
    Gated(Gated),
}

impl Hidden {
    /// The down projection's input.
    fn z(&self) -> &[f32] {
        match self {
            Hidden::Plain(_, a) => a,
            Hidden::Gated(g) => &g.z,
        }
    }
}

/// What the backward pass needs, when kept.
struct Saved {
    /// Per expert (`None` for one without rows).
    acts: Vec<Option<Hidden>>,
    /// The experts' outputs before the gates, (routed rows, d_model), expert after expert.
    out: Vec<f32>,
}

/// The routed rows that reach each token, as indices into the expert-after-expert order:
/// token `t`'s are `index[start[t]..start[t + 1]]`.
struct ByToken {
    start: Vec<usize>,
    index: Vec<u32>,
}

impl ByToken {
    fn new(rows: &[Vec<u32>], n: usize) -> ByToken {
        let mut start = vec![0usize; n + 1];
        for &t in rows.iter().flatten() {
            start[t as usize + 1] += 1;
        }
        for t in 0..n {
            start[t + 1] += start[t];
        }
        let mut next = start.clone();
        let mut index = vec![0u32; start[n]];
        for (j, &t) in rows.iter().flatten().enumerate() {
            index[next[t as usize]] = j as u32;
            next[t as usize] += 1;
        }
        ByToken { start, index }
    }

    fn of(&self, t: usize) -> &[u32] {
        &self.index[self.start[t]..self.start[t + 1]]
    }
}

/// `y[t] = sum over the routed rows j of token t of gates[j] * out[j]`, rows of `d`.
fn combine(out: &[f32], gates: &[f32], by_token: &ByToken, n: usize, d: usize) -> Vec<f32> {
    filled(n * d, |y| {
        for_rows(y, d, |first, chunk| {
            for (i, y) in chunk.chunks_exact_mut(d).enumerate() {
                y.iter_mut().for_each(|v| {
                    v.write(0.0);
                });
                // SAFETY: just written.
                let y = unsafe { assume_init(y) };
                for &j in by_token.of(first + i) {
                    let (g, o) = (
                        gates[j as usize],
                        &out[j as usize * d..(j as usize + 1) * d],
                    );
                    y.iter_mut().zip(o).for_each(|(y, &o)| *y += g * o);
                }
            }
        })
    })
}

/// Experts run side by side, each matmul on one thread, when there are enough of them to keep
/// the cores busy; otherwise one after another with the matmuls split over the cores.
fn plan(active: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if active >= 2 * threads {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// Calls `f` on every item: one after another, or side by side on all threads. Side by side,
/// the largest items (by `load`) go first and each thread takes the next one when it is free,
/// so the op waits at its end for a small expert rather than for a large one that a thread
/// picked up last.
fn for_each_expert<T: Send>(
    mut items: Vec<T>,
    side_by_side: bool,
    load: impl Fn(&T) -> usize,
    f: impl Fn(T) + Sync + Send,
) {
    if !side_by_side {
        return items.into_iter().for_each(f);
    }
    items.sort_by_key(|t| std::cmp::Reverse(load(t)));
    let queue: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        // Each index is handed out once, so each slot is taken by one thread only.
        while let Some(slot) = queue.get(next.fetch_add(1, Ordering::Relaxed)) {
            let item = slot.lock().unwrap().take();
            if let Some(t) = item {
                f(t);
            }
        }
    };
    rayon::scope(|s| {
        for _ in 1..rayon::current_num_threads() {
            s.spawn(|_| work());
        }
        work();
    });
}

/// Whether `rows` is 0, 1, ..., n - 1.
fn all_rows_in_order(rows: &[u32], n: usize) -> bool {
    rows.len() == n && rows.iter().enumerate().all(|(i, &r)| r as usize == i)
}

/// `rows` of `x` (row length d) as a (rows, d) matrix: `x` itself when the rows are all of it in
/// order (an expert that every token chose, as when top_k = experts), a gathered copy otherwise.
fn gather<'a>(x: &'a [f32], rows: &[u32], d: usize) -> Cow<'a, [f32]> {
    if all_rows_in_order(rows, x.len() / d) {
        return Cow::Borrowed(x);
    }
    let mut out = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        out.extend_from_slice(&x[r as usize * d..(r as usize + 1) * d]);
    }
    Cow::Owned(out)
}

/// The up projection and GELU of the rows `x` (rows, d) with `up` (d, f): GELU's slope at the
/// pre-activation (all the backward pass needs of it) and the activation, each (rows, f). The
/// elementwise pass is split over the cores when the matmul is.
pub(super) fn up_gelu(
    x: &[f32],
    up: &[f32],
    (rows, d, f): (usize, usize, usize),
    par: Parallelism,
) -> (Vec<f32>, Vec<f32>) {
    let h = filled(rows * f, |h| {
        matmul(h, (rows, f, d), (x, 1, d), (up, 1, f), par)
    });
    let (a, slope) = forward_with_slope(&h, !matches!(par, Parallelism::None));
    (slope, a)
}

/// Back through `a @ down` and the GELU, from the output gradient `go` (rows, d) and the
/// forward's GELU slope `s` and activation `a`: the pre-activation's gradient (rows, f) and the
/// gradient of `down` (f, d).
pub(super) fn down_gelu_backward(
    go: &[f32],
    (s, a): (&[f32], &[f32]),
    down: &[f32],
    (rows, d, f): (usize, usize, usize),
    par: Parallelism,
) -> (Vec<f32>, Vec<f32>) {
    // dA = dO down^T; dDown = A^T dO; dH = gelu'(H) dA = s dA.
    let da = filled(rows * f, |da| {
        matmul(da, (rows, f, d), (go, 1, d), (down, d, 1), par)
    });
    let d_down = filled(f * d, |g| {
        matmul(g, (f, d, rows), (a, f, 1), (go, 1, d), par)
    });
    let dh = filled(rows * f, |dh| {
        slope_backward_into(s, &da, dh, !matches!(par, Parallelism::None))
    });
    (dh, d_down)
}

/// What one expert's backward pass gives: its input gradient's rows and its two weight gradients,
/// with their sums of squares (for the clipping norm), taken while each was in cache.
struct ExpertGrads {
    dx: Vec<f32>,
    dx_layout: InputGrad,
    up: Vec<f32>,
    down: Vec<f32>,
    up_sumsq: f64,
    down_sumsq: f64,
    /// A gated unit's gate gradient and its sum of squares.
    gate: Option<(Vec<f32>, f64)>,
}

/// How an expert's input gradient `dH up^T` (rows, d_model) is computed and laid out. With few
/// rows, `gemm` is faster writing it transposed: it then packs `dH` rather than transposing all
/// of `up` into its packed layout. Probed on this project's 2-core VM (docs/performance.md): an
/// expert's forward and backward took 12% less time at 32 rows, 5% at 64, 2% at 128, and 3% more
/// at 512.
#[derive(Clone, Copy, Debug, PartialEq)]
enum InputGrad {
    RowMajor,
    /// (d_model, rows) row-major.
    Transposed,
}

impl InputGrad {
    /// The most rows computed transposed.
    const TRANSPOSED_UP_TO: usize = 128;

    fn for_rows(rows: usize) -> InputGrad {
        if rows <= Self::TRANSPOSED_UP_TO {
            InputGrad::Transposed
        } else {
            InputGrad::RowMajor
        }
    }

    /// Adds each row of the expert's input gradient `g` to its token's row of `dx` (a token sent
    /// to two experts gets both).
    fn scatter_add(self, g: &[f32], rows: &[u32], dx: &mut [f32], d: usize) {
        let n = rows.len();
        for (i, &row) in rows.iter().enumerate() {
            let dst = &mut dx[row as usize * d..(row as usize + 1) * d];
            match self {
                InputGrad::RowMajor => {
                    let src = &g[i * d..(i + 1) * d];
                    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                }
                InputGrad::Transposed => {
                    let src = g[i..].iter().step_by(n);
                    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                }
            }
        }
    }
}

/// One gated expert's backward pass from its output gradient `go` (rows, d_model) and its rows
/// of the input `xe`: `dZ = dO down^T`, `dDown = Z^T dO`, then through the gate
/// ([`glu::backward`]) `dUp = X^T dU`, `dGate = X^T dG` and `dX = dU up^T + dG gate^T`.
fn gated_backward(
    w: &ExpertWeights,
    saved: &Gated,
    go: &[f32],
    xe: &[f32],
    (rows, d): (usize, usize),
    par: Parallelism,
    squares: impl Fn(&[f32]) -> f64,
) -> Result<ExpertGrads> {
    let Some(gate) = &w.gate else {
        bail!("fused experts: a gated expert without a gate matrix")
    };
    let f = saved.z.len() / rows;
    let dz = tensor_f32(&w.down, |down| {
        filled(rows * f, |dz| {
            matmul(dz, (rows, f, d), (go, 1, d), (down, d, 1), par)
        })
    })?;
    let d_down = filled(f * d, |g| {
        matmul(g, (f, d, rows), (&saved.z, f, 1), (go, 1, d), par)
    });
    let (du, dg) = glu::backward(saved, &dz, !matches!(par, Parallelism::None));
    let weight_grad = |dh: &[f32]| {
        filled(d * f, |g| {
            matmul(g, (d, f, rows), (xe, d, 1), (dh, 1, f), par)
        })
    };
    let (d_up, d_gate) = (weight_grad(&du), weight_grad(&dg));
    let mut dx = tensor_f32(&w.up, |up| {
        filled(rows * d, |dx| {
            matmul(dx, (rows, d, f), (&du, 1, f), (up, f, 1), par)
        })
    })?;
    tensor_f32(gate, |gate| {
        matmul_add(&mut dx, (rows, d, f), (&dg, 1, f), (gate, f, 1), par)
    })?;
    let gate_sumsq = squares(&d_gate);
    Ok(ExpertGrads {
        dx,
        dx_layout: InputGrad::RowMajor,
        up_sumsq: squares(&d_up),
        down_sumsq: squares(&d_down),
        gate: Some((d_gate, gate_sumsq)),
        up: d_up,
        down: d_down,
    })
}

impl Experts {
    fn offsets(&self) -> Vec<usize> {
        let mut o = vec![0];
        for r in &self.rows {
            o.push(o.last().unwrap() + r.len());
        }
        o
    }
}

impl CustomOp2 for Experts {
    fn name(&self) -> &'static str {
        "fused-experts"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "experts")?;
        let gates = f32_slice(gs, gl, "experts")?;
        let (n, d) = l.shape().dims2()?;
        let f = self.weights.first().map_or(Ok(0), |w| w.up.dim(1))?;
        if let Some(bad) = self.rows.iter().flatten().find(|&&r| r as usize >= n) {
            bail!("fused experts: row {bad} of {n}");
        }
        let offsets = self.offsets();
        let kept = *offsets.last().unwrap();
        let mut out: Vec<f32> = Vec::with_capacity(kept * d);
        let out_spare = &mut out.spare_capacity_mut()[..kept * d];
        // Each expert's block of the output, handed to its task.
        let mut blocks: Vec<(usize, &mut [MaybeUninit<f32>])> = Vec::new();
        let mut rest = out_spare;
        for e in 0..self.rows.len() {
            let (block, tail) = rest.split_at_mut(self.rows[e].len() * d);
            if !block.is_empty() {
                blocks.push((e, block));
            }
            rest = tail;
        }
        let (side_by_side, par) = plan(blocks.len());
        let acts: Vec<Mutex<Option<Hidden>>> =
            (0..self.rows.len()).map(|_| Mutex::new(None)).collect();
        let failed = Mutex::new(None);
        for_each_expert(
            blocks,
            side_by_side,
            |(_, block)| block.len(),
            |(e, block): (usize, &mut [MaybeUninit<f32>])| {
                let w = &self.weights[e];
                let cnt = self.rows[e].len();
                let xe = gather(x, &self.rows[e], d);
                let mut run = || -> Result<()> {
                    let hidden = match &w.gate {
                        None => {
                            let (s, a) =
                                tensor_f32(&w.up, |up| up_gelu(&xe, up, (cnt, d, f), par))?;
                            Hidden::Plain(s, a)
                        }
                        Some(gate) => {
                            let project = |w: &[f32]| {
                                filled(cnt * f, |h| {
                                    matmul(h, (cnt, f, d), (&xe, 1, d), (w, 1, f), par)
                                })
                            };
                            let u = tensor_f32(&w.up, project)?;
                            let g = tensor_f32(gate, project)?;
                            let parallel = !matches!(par, Parallelism::None);
                            Hidden::Gated(glu::forward(self.kind, &g, u, parallel))
                        }
                    };
                    tensor_f32(&w.down, |down| {
                        matmul(block, (cnt, d, f), (hidden.z(), 1, f), (down, 1, d), par)
                    })?;
                    *acts[e].lock().unwrap() = Some(hidden);
                    Ok(())
                };
                if let Err(err) = run() {
                    *failed.lock().unwrap() = Some(err);
                }
            },
        );
        if let Some(err) = failed.into_inner().unwrap() {
            return Err(err);
        }
        // SAFETY: every expert block was written by its down-projection matmul; the blocks tile
        // the output.
        unsafe { out.set_len(kept * d) };
        let y = combine(&out, gates, &ByToken::new(&self.rows, n), n, d);
        if self.keep {
            let acts = acts.into_iter().map(|m| m.into_inner().unwrap()).collect();
            let _ = self.saved.set(Saved { acts, out });
        }
        Ok((CpuStorage::F32(y), Shape::from((n, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gates: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(Saved { acts, out }) = self.saved.get() else {
            bail!("fused experts: backward without the forward's activations")
        };
        let (n, d) = x.dims2()?;
        let grad = grad.contiguous()?;
        let offsets = self.offsets();
        // Through the gates: routed row j of token t gets dOut[j] = gate[j] dY[t], and its gate
        // gets dGate[j] = Out[j] . dY[t].
        let token_of: Vec<u32> = self.rows.concat();
        let (d_out, d_gates) = tensor_f32(gates, |gates| {
            tensor_f32(&grad, |g| {
                let mut parts = Vec::new();
                let d_out = filled(token_of.len() * d, |d_out| {
                    parts = map_rows(d_out, d, |first, chunk| {
                        let rows = chunk.chunks_exact_mut(d).enumerate();
                        rows.map(|(i, d_out)| {
                            let j = first + i;
                            let t = token_of[j] as usize;
                            let gt = &g[t * d..(t + 1) * d];
                            for (o, &gv) in d_out.iter_mut().zip(gt) {
                                o.write(gates[j] * gv);
                            }
                            dot(&out[j * d..(j + 1) * d], gt)
                        })
                        .collect::<Vec<f32>>()
                    });
                });
                (d_out, parts.concat())
            })
        })??;
        let active: Vec<usize> = (0..self.rows.len())
            .filter(|&e| !self.rows[e].is_empty())
            .collect();
        let (side_by_side, par) = plan(active.len());
        let squares = |g: &[f32]| match par {
            Parallelism::None => sum_of_squares_here(g),
            _ => sum_of_squares(g),
        };
        let results: Vec<Mutex<Option<Result<ExpertGrads>>>> =
            (0..self.rows.len()).map(|_| Mutex::new(None)).collect();
        let xs = x.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(xv)) = &*xs.0 else {
            bail!("fused experts: backward expects an f32 CPU input")
        };
        let Some((xa, xb)) = xs.1.contiguous_offsets() else {
            bail!("fused experts: backward expects a contiguous input")
        };
        let xv = &xv[xa..xb];
        for_each_expert(
            active,
            side_by_side,
            |&e| self.rows[e].len(),
            |e| {
                let w = &self.weights[e];
                let cnt = self.rows[e].len();
                let go = &d_out[offsets[e] * d..offsets[e + 1] * d];
                let run = || -> Result<ExpertGrads> {
                    let (s, a) = match &acts[e] {
                        Some(Hidden::Plain(s, a)) => (s, a),
                        Some(Hidden::Gated(saved)) => {
                            let xe = gather(xv, &self.rows[e], d);
                            return gated_backward(w, saved, go, &xe, (cnt, d), par, squares);
                        }
                        None => bail!("fused experts: expert {e} has rows but no activations"),
                    };
                    let f = a.len() / cnt;
                    // dUp = X^T dH; dX = dH up^T.
                    let (dh, d_down) = tensor_f32(&w.down, |down| {
                        down_gelu_backward(go, (s, a), down, (cnt, d, f), par)
                    })?;
                    let down_sumsq = squares(&d_down);
                    let xe = gather(xv, &self.rows[e], d);
                    let d_up = filled(d * f, |g| {
                        matmul(g, (d, f, cnt), (&xe, d, 1), (&dh, 1, f), par)
                    });
                    let up_sumsq = squares(&d_up);
                    let (dx, dx_layout) = tensor_f32(&w.up, |up| {
                        let layout = InputGrad::for_rows(cnt);
                        let dx = filled(cnt * d, |dx| {
                            let (lhs, rhs) = ((&dh[..], 1, f), (up, f, 1));
                            match layout {
                                InputGrad::RowMajor => matmul(dx, (cnt, d, f), lhs, rhs, par),
                                InputGrad::Transposed => {
                                    matmul_transposed(dx, (cnt, d, f), lhs, rhs, par)
                                }
                            }
                        });
                        (dx, layout)
                    })?;
                    Ok(ExpertGrads {
                        dx,
                        dx_layout,
                        up: d_up,
                        down: d_down,
                        up_sumsq,
                        down_sumsq,
                        gate: None,
                    })
                };
                *results[e].lock().unwrap() = Some(run());
            },
        );
        // Scatter-add each expert's input gradient to its tokens (a token sent to two experts
        // gets both), and hand the weight gradients to the sink.
        let mut dx = vec![0f32; n * d];
        for (e, r) in results.into_iter().enumerate() {
            let Some(r) = r.into_inner().unwrap() else {
                continue;
            };
            let g = r?;
            g.dx_layout.scatter_add(&g.dx, &self.rows[e], &mut dx, d);
            let w = &self.weights[e];
            let dev = w.up.device();
            let first = e * self.kind.matrices();
            let up = Tensor::from_vec(g.up, w.up.shape(), dev)?;
            self.sink.set_with_squares(first, up, g.up_sumsq);
            let down = Tensor::from_vec(g.down, w.down.shape(), dev)?;
            self.sink.set_with_squares(first + 1, down, g.down_sumsq);
            if let (Some((dg, sq)), Some(gate)) = (g.gate, &w.gate) {
                let dg = Tensor::from_vec(dg, gate.shape(), dev)?;
                self.sink.set_with_squares(first + 2, dg, sq);
            }
        }
        Ok((
            Some(Tensor::from_vec(dx, (n, d), x.device())?),
            Some(Tensor::from_vec(d_gates, gates.shape(), gates.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::{max_abs_diff, weighted_sum_grads};
    use candle_core::{Device, Var};

    #[test]
    fn both_input_gradient_layouts_scatter_the_same_rows() {
        let d = 3;
        let g: Vec<f32> = (0..15).map(|v| v as f32).collect(); // (5, 3) row-major
        let gt: Vec<f32> = (0..15).map(|k| g[(k % 5) * d + k / 5]).collect(); // its transpose
        let rows = [4u32, 0, 4, 2, 1];
        let mut a = vec![1f32; 6 * d];
        let mut b = a.clone();
        InputGrad::RowMajor.scatter_add(&g, &rows, &mut a, d);
        InputGrad::Transposed.scatter_add(&gt, &rows, &mut b, d);
        assert_eq!(a, b);
        // Token 4 got rows 0 and 2; token 3 none.
        assert_eq!(&a[12..15], &[7.0, 9.0, 11.0]);
        assert_eq!(&a[9..12], &[1.0, 1.0, 1.0]);
        assert_eq!(
            InputGrad::for_rows(InputGrad::TRANSPOSED_UP_TO),
            InputGrad::Transposed
        );
        assert_eq!(
            InputGrad::for_rows(InputGrad::TRANSPOSED_UP_TO + 1),
            InputGrad::RowMajor
        );
    }

    /// Both execution plans: few experts (matmuls split over the cores) and many (experts side
    /// by side), with an expert that gets no rows, tokens sent to two experts, tokens that keep
    /// one of their two (the other is the empty expert) and a token that no expert takes; for
    /// the plain MLP and both gated units, against candle's ops and autograd.
    #[test]
    fn outputs_and_every_gradient_match_candles_ops() {
        // 40 tokens: every expert's input gradient transposed; 300 tokens over 3 experts: row-major.
        let cases = [(40, 3), (40, 9), (300, 3), (300, 9)];
        for ((n, experts_n), kind) in cases
            .into_iter()
            .flat_map(|c| FfnKind::ALL.into_iter().map(move |k| (c, k)))
        {
            let dev = Device::Cpu;
            let (d, f) = (16, 24);
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap()).unwrap();
            let matrix = |rows, cols| {
                Var::from_tensor(&Tensor::randn(0f32, 0.3, (rows, cols), &dev).unwrap()).unwrap()
            };
            let weights: Vec<(Var, Var, Option<Var>)> = (0..experts_n)
                .map(|_| {
                    let gate = kind.is_gated().then(|| matrix(d, f));
                    (matrix(d, f), matrix(f, d), gate)
                })
                .collect();
            // Expert 1 gets nothing, token 5 goes nowhere, every other token to two experts
            // (one of which may be expert 1).
            let rows: Vec<Vec<u32>> = (0..experts_n)
                .map(|e| {
                    (0..n as u32)
                        .filter(|t| {
                            e != 1
                                && *t != 5
                                && (*t as usize % experts_n == e
                                    || (*t as usize + 2) % experts_n == e)
                        })
                        .collect()
                })
                .collect();
            let kept: usize = rows.iter().map(Vec::len).sum();
            let gates = Var::from_tensor(&Tensor::rand(0.1f32, 1.0, kept, &dev).unwrap()).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap();

            let ew: Vec<ExpertWeights> = weights
                .iter()
                .map(|(u, dn, g)| ExpertWeights {
                    up: u.as_tensor().clone(),
                    down: dn.as_tensor().clone(),
                    gate: g.as_ref().map(|g| g.as_tensor().clone()),
                })
                .collect();
            let (ours, sink) = experts(x.as_tensor(), gates.as_tensor(), &ew, &rows, kind).unwrap();
            let mut ga = weighted_sum_grads(&ours, &w);
            sink.move_into(&mut ga, &mut Default::default()).unwrap();

            let mut outs = Vec::new();
            for (e, (up, down, gate)) in weights.iter().enumerate() {
                if rows[e].is_empty() {
                    continue;
                }
                let r = Tensor::from_slice(&rows[e], rows[e].len(), &dev).unwrap();
                let xe = x.as_tensor().index_select(&r, 0).unwrap();
                let h = xe.matmul(up.as_tensor()).unwrap();
                let z = match (kind, gate) {
                    (FfnKind::Mlp, _) => h.gelu_erf().unwrap(),
                    (FfnKind::Geglu, Some(g)) => {
                        (xe.matmul(g.as_tensor()).unwrap().gelu_erf().unwrap() * h).unwrap()
                    }
                    (FfnKind::Swiglu, Some(g)) => {
                        (xe.matmul(g.as_tensor()).unwrap().silu().unwrap() * h).unwrap()
                    }
                    _ => unreachable!("gated kinds have a gate"),
                };
                outs.push(z.matmul(down.as_tensor()).unwrap());
            }
            let scaled = Tensor::cat(&outs, 0)
                .unwrap()
                .broadcast_mul(&gates.as_tensor().unsqueeze(1).unwrap())
                .unwrap();
            let all_rows = Tensor::from_vec(rows.concat(), kept, &dev).unwrap();
            let theirs = Tensor::zeros((n, d), candle_core::DType::F32, &dev)
                .unwrap()
                .index_add(&all_rows, &scaled, 0)
                .unwrap();
            let gb = weighted_sum_grads(&theirs, &w);

            assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{kind:?}");
            for v in [&x, &gates] {
                let diff = max_abs_diff(ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(diff < 1e-4, "{kind:?}: {diff}");
            }
            for (e, (up, down, gate)) in weights.iter().enumerate() {
                let all = [up, down].into_iter().chain(gate);
                if rows[e].is_empty() {
                    assert!(all.into_iter().all(|v| ga.get(v.as_tensor()).is_none()));
                    continue;
                }
                for v in all {
                    let (a, b) = (
                        ga.get(v.as_tensor()).unwrap(),
                        gb.get(v.as_tensor()).unwrap(),
                    );
                    let diff = max_abs_diff(a, b);
                    assert!(diff < 1e-4, "{kind:?} expert {e} of {experts_n}: {diff}");
                }
            }
        }
    }
}
