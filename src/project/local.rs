//! A local projection: another model's training speed and energy on the machine a run measured,
//! from a roofline fitted to that run.
//!
//! A training step's time per token is modelled as `F x s_flop + B x s_byte`: its FLOPs at an
//! effective compute rate plus its memory traffic at an effective bandwidth (on a CPU the two
//! mostly do not overlap: the gemm runs, then the element-wise and optimiser passes stream
//! memory). `F` is the analytic training FLOPs per token; `B` counts the weights read in the
//! forward and backward passes and the gradient written (the experts the step's tokens touch),
//! the activations, and AdamW's pass over every parameter (read parameter, gradient and both
//! moments, write parameter and moments: 7 x 4 bytes each, whatever the number of tokens).
//!
//! The rates are fitted to the run's training and prefill phases, one equation each per model:
//! a compute rate for training, one for prefill (a forward pass only, whose kernels run at another
//! efficiency) and one memory bandwidth shared by both (prefill reads the weights once and has no
//! optimiser, so its bytes-to-FLOPs ratio differs from training's, which separates the two terms).
//! The fit is least squares on relative errors with every rate positive; a term that would need a
//! negative rate is dropped (and absent in the output). Where the bandwidth was measured (the
//! triad probe beside the matmul peak, at the run's start) it is taken as measured and only the
//! compute rates are fitted: fitted from two models alone, the bandwidth absorbs whatever else
//! differs between them (the MoE's routing and dispatch), and extrapolates badly to a model with
//! many more parameters. Decode is left out: at a few tokens per step its time is per-operation overhead that
//! neither term describes. Energy per token is the run's mean training power times the predicted
//! seconds per token, with the run's energy source.

use serde::{Deserialize, Serialize};

use super::ProjectError;
use crate::accounting::{bytes_per_token, params, prefill_flops_per_token, train_flops_per_token};
use crate::profile::ModelProfile;
use crate::runlog::{RunData, RunSummary};
use crate::vocab::{EnergySource, Phase};

/// Bytes AdamW moves per parameter and step: parameter, gradient, first and second moment read;
/// parameter and both moments written; f32 (the master weights are f32 on every device).
pub const ADAMW_BYTES_PER_PARAM: f64 = 7.0 * 4.0;
/// Weight passes of a training step: read forward, read backward (input gradient), gradient
/// written (weight gradient).
const TRAIN_WEIGHT_PASSES: f64 = 3.0;

/// What a step (training or prefill) costs per token: FLOPs and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepTraffic {
    pub flops_per_token: f64,
    pub bytes_per_token: f64,
    /// Of `bytes_per_token`, the optimiser's share.
    pub optimizer_bytes_per_token: f64,
}

/// Prefill of `batch` prompts of `prompt_len` tokens: one forward pass, weights read once (the
/// experts touched), activations and the KV cache written; no optimiser.
pub fn prefill_traffic(
    p: &ModelProfile,
    batch: usize,
    prompt_len: usize,
    act_bytes: f64,
) -> StepTraffic {
    let b = bytes_per_token(p, Phase::Prefill, batch, prompt_len, 4.0, act_bytes);
    StepTraffic {
        flops_per_token: prefill_flops_per_token(p, prompt_len).total(),
        bytes_per_token: b.total(),
        optimizer_bytes_per_token: 0.0,
    }
}

/// [`StepTraffic`] of `p` at `batch` sequences of its `seq_len`; activations of `act_bytes` each.
pub fn train_traffic(p: &ModelProfile, batch: usize, act_bytes: f64) -> StepTraffic {
    let tokens = (batch.max(1) * p.seq_len.max(1)) as f64;
    // bytes_per_token counts the two weight reads; the gradient write is a third pass.
    let b = bytes_per_token(p, Phase::Train, batch, p.seq_len, 4.0, act_bytes);
    let weights = b.weights_read * TRAIN_WEIGHT_PASSES / 2.0;
    let optimizer = params(p).total * ADAMW_BYTES_PER_PARAM / tokens;
    StepTraffic {
        flops_per_token: train_flops_per_token(p).total(),
        bytes_per_token: weights + b.activations + optimizer,
        optimizer_bytes_per_token: optimizer,
    }
}

/// One phase of one model of the run: measured against the fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitPoint {
    pub model: String,
    pub phase: Phase,
    pub traffic: StepTraffic,
    pub measured_tokens_per_s: f64,
    pub fitted_tokens_per_s: f64,
}

/// The roofline fitted to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalFit {
    pub device: String,
    pub batch: usize,
    pub act_bytes: f64,
    /// Effective compute rates of training and of prefill (their kernels differ: training runs
    /// the backward pass's transposed products) and the effective memory bandwidth, shared by
    /// both. Absent when the fit dropped the term (no positive value fits).
    pub train_flops_per_s: Option<f64>,
    pub prefill_flops_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    /// Where the bandwidth came from: "run" (probed at the run's start, in its header), "probe"
    /// (this machine's cached probe, or one now, for a run on this machine whose header has none)
    /// or "fit" (fitted with the compute rates).
    pub bandwidth_from: String,
    /// Mean power of the run's training phases (J/token x tokens/s, averaged over the models).
    pub power_w: Option<f64>,
    pub source: Option<EnergySource>,
    pub scope: Option<String>,
    pub points: Vec<FitPoint>,
}

/// A model's training predicted on the run's machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalPrediction {
    pub model: String,
    pub traffic: StepTraffic,
    pub tokens_per_s: f64,
    /// Denominator: tokens trained. Absent when the run carried no energy.
    pub joules_per_token: Option<f64>,
    /// Share of the predicted time spent on FLOPs (the rest on memory traffic).
    pub compute_share: f64,
    pub fit: LocalFit,
}

/// Solve the square system `a x = b` by Gaussian elimination with partial pivoting; `None` when
/// it is singular (relative to its scale).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = a.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() <= 1e-12 * scale {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        let (top, rest) = a.split_at_mut(c + 1);
        let pivot = &top[c];
        for (r, row) in rest.iter_mut().enumerate() {
            let f = row[c] / pivot[c];
            for (x, p) in row[c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[c + 1 + r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|k| a[c][k] * x[k]).sum();
        x[c] = (b[c] - s) / a[c][c];
    }
    Some(x)
}

/// Non-negative least squares of `rows · x ≈ y` over a few columns: every subset of columns is
/// fitted by ordinary least squares, those with all coefficients positive are kept, and the one
/// with the smallest squared error wins (exact for so few columns). Dropped columns are 0.
fn nnls(rows: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let cols = rows.first()?.len();
    let sse = |x: &[f64]| -> f64 {
        rows.iter()
            .zip(y)
            .map(|(r, y)| (y - r.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()).powi(2))
            .sum()
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 1u32..(1 << cols) {
        let keep: Vec<usize> = (0..cols).filter(|c| mask & (1 << c) != 0).collect();
        let ata: Vec<Vec<f64>> = keep
            .iter()
            .map(|&i| {
                keep.iter()
                    .map(|&j| rows.iter().map(|r| r[i] * r[j]).sum())
                    .collect()
            })
            .collect();
        let aty: Vec<f64> = keep
            .iter()
            .map(|&i| rows.iter().zip(y).map(|(r, y)| r[i] * y).sum())
            .collect();
        let Some(sub) = solve(ata, aty) else { continue };
        if sub.iter().any(|&v| v <= 0.0) {
            continue;
        }
        let mut x = vec![0.0; cols];
        for (k, &c) in keep.iter().enumerate() {
            x[c] = sub[k];
        }
        let e = sse(&x);
        if best.as_ref().is_none_or(|(b, _)| e < *b) {
            best = Some((e, x));
        }
    }
    best.map(|(_, x)| x)
}

/// Activation bytes of the precision a run computed in (bf16 on a GPU, f32 on a CPU).
fn act_bytes_of(summary: &RunSummary) -> f64 {
    match summary.peak.as_ref().map(|p| p.dtype.as_str()) {
        Some("bf16") | Some("f16") => 2.0,
        _ => 4.0,
    }
}

/// The fit's columns for one point: training FLOPs, prefill FLOPs, bytes.
fn columns(phase: Phase, t: &StepTraffic) -> Vec<f64> {
    let f = t.flops_per_token;
    match phase {
        Phase::Train => vec![f, 0.0, t.bytes_per_token],
        _ => vec![0.0, f, t.bytes_per_token],
    }
}

/// What the run measured: each model's training and prefill rates with their traffic, and the
/// training phases' mean power.
struct Measured {
    points: Vec<FitPoint>,
    powers: Vec<f64>,
    source: Option<EnergySource>,
    scope: Option<String>,
}

fn measured_points(run: &RunData, summary: &RunSummary, act_bytes: f64) -> Measured {
    let config = &run.header.config;
    let mut out = Measured {
        points: Vec::new(),
        powers: Vec::new(),
        source: None,
        scope: None,
    };
    for m in &summary.models {
        let Some(profile) = run.header.model(m.role) else {
            continue;
        };
        let infer_batch = config.infer_batch.unwrap_or(1);
        let phases = [
            (
                Phase::Train,
                train_traffic(profile, config.batch, act_bytes),
            ),
            (
                Phase::Prefill,
                prefill_traffic(profile, infer_batch, config.prompt_len, act_bytes),
            ),
        ];
        for (phase, traffic) in phases {
            let Some(p) = m.phase(phase) else { continue };
            let Some(tps) = p.tokens_per_s.map(|e| e.mean).filter(|t| *t > 0.0) else {
                continue;
            };
            if phase == Phase::Train {
                if let Some(j) = &p.joules_per_token {
                    out.powers.push(j.total.mean * tps);
                    out.source = out.source.or(p.source);
                    out.scope = out.scope.or(p.scope.clone());
                }
            }
            out.points.push(FitPoint {
                model: m.model.clone(),
                phase,
                traffic,
                measured_tokens_per_s: tps,
                fitted_tokens_per_s: 0.0,
            });
        }
    }
    out
}

/// Fit the roofline to the training and prefill phases of `run` (its `summary` computed from its
/// records). The bandwidth is the one measured at the run's start, else `probed` (measured now on
/// the same machine), else fitted with the compute rates.
pub fn fit_run(
    run: &RunData,
    summary: &RunSummary,
    probed: Option<f64>,
) -> Result<LocalFit, ProjectError> {
    let (batch, act_bytes) = (run.header.config.batch, act_bytes_of(summary));
    let Measured {
        mut points,
        powers,
        source,
        scope,
    } = measured_points(run, summary, act_bytes);
    if !points.iter().any(|p| p.phase == Phase::Train) {
        return Err(super::bad(
            "calibrate",
            "the run has no measured training steps to fit",
        ));
    }
    let in_run = run
        .header
        .machine
        .peak
        .as_ref()
        .and_then(|p| p.measurement.as_ref()?.memory_bytes_per_s);
    let (measured_bw, bandwidth_from) = match (in_run, probed) {
        (Some(b), _) => (Some(b), "run"),
        (None, Some(b)) => (Some(b), "probe"),
        (None, None) => (None, "fit"),
    };
    // Relative errors: each equation divided by its measured seconds per token. A measured
    // bandwidth is not fitted: its time comes off the right-hand side.
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for p in &points {
        let t = p.measured_tokens_per_s;
        let mut c: Vec<f64> = columns(p.phase, &p.traffic).iter().map(|x| x * t).collect();
        match measured_bw {
            Some(bw) => y.push(1.0 - c.pop().unwrap_or(0.0) / bw),
            None => y.push(1.0),
        }
        rows.push(c);
    }
    let x = nnls(&rows, &y)
        .map(|mut x| {
            if let Some(bw) = measured_bw {
                x.push(1.0 / bw);
            }
            x
        })
        .filter(|x| x[0] > 0.0 || x[2] > 0.0)
        .ok_or_else(|| {
            super::bad(
                "calibrate",
                "no positive compute rate or bandwidth fits the run's training",
            )
        })?;
    for p in &mut points {
        let s: f64 = columns(p.phase, &p.traffic)
            .iter()
            .zip(&x)
            .map(|(a, b)| a * b)
            .sum();
        p.fitted_tokens_per_s = 1.0 / s;
    }
    let rate = |v: f64| (v > 0.0).then(|| 1.0 / v);
    Ok(LocalFit {
        device: run.header.machine.device.clone(),
        batch,
        act_bytes,
        train_flops_per_s: rate(x[0]),
        prefill_flops_per_s: rate(x[1]),
        bytes_per_s: rate(x[2]),
        bandwidth_from: bandwidth_from.into(),
        power_w: (!powers.is_empty()).then(|| powers.iter().sum::<f64>() / powers.len() as f64),
        source,
        scope,
        points,
    })
}

impl LocalFit {
    /// `p`'s training on this machine at the run's batch.
    pub fn predict(&self, p: &ModelProfile) -> LocalPrediction {
        let traffic = train_traffic(p, self.batch, self.act_bytes);
        let compute_s = self
            .train_flops_per_s
            .map_or(0.0, |r| traffic.flops_per_token / r);
        let memory_s = self
            .bytes_per_s
            .map_or(0.0, |r| traffic.bytes_per_token / r);
        let s = compute_s + memory_s;
        LocalPrediction {
            model: p.name.clone(),
            traffic,
            tokens_per_s: 1.0 / s,
            joules_per_token: self.power_w.map(|w| w * s),
            compute_share: compute_s / s,
            fit: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_model;

    /// Columns and seconds per token of each model's train and prefill on a machine with these
    /// rates.
    fn machine(models: &[&ModelProfile], rates: [f64; 3]) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for p in models {
            for (phase, t) in [
                (Phase::Train, train_traffic(p, 8, 4.0)),
                (Phase::Prefill, prefill_traffic(p, 4, 64, 4.0)),
            ] {
                let c = columns(phase, &t);
                y.push(c.iter().zip(rates).map(|(x, r)| x / r).sum());
                rows.push(c);
            }
        }
        (rows, y)
    }

    #[test]
    fn a_machine_made_of_the_models_rates_is_fitted_exactly_and_predicts_a_third_model() {
        let rates = [50e9, 80e9, 20e9];
        let s = load_model("glam-tiny").unwrap();
        let d = load_model("dense-tiny").unwrap();
        let (rows, y) = machine(&[&s, &d], rates);
        let x = nnls(&rows, &y).unwrap();
        for (got, want) in x.iter().zip(rates) {
            assert!((1.0 / got / want - 1.0).abs() < 1e-6, "{x:?}");
        }
        let e64 = s.with_overrides(Some(64), None).unwrap();
        let t = train_traffic(&e64, 8, 4.0);
        let predicted: f64 = columns(Phase::Train, &t)
            .iter()
            .zip(&x)
            .map(|(a, b)| a * b)
            .sum();
        let truth = t.flops_per_token / rates[0] + t.bytes_per_token / rates[2];
        assert!((predicted / truth - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_column_that_would_need_a_negative_rate_is_dropped() {
        // y = 2 x1 exactly, x2 anticorrelated with the residual: the full solution is not
        // positive, the fit keeps x1 alone.
        let rows = vec![vec![1.0, 3.0], vec![2.0, 1.0], vec![3.0, 2.0]];
        let x = nnls(&rows, &[2.0, 4.0, 6.0]).unwrap();
        assert!((x[0] - 2.0).abs() < 1e-12 && x[1] == 0.0, "{x:?}");
        // And the unconstrained least squares of a consistent system is its solution.
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn adamw_traffic_grows_with_every_expert_and_flops_only_with_the_active_ones() {
        let e8 = load_model("glam-tiny").unwrap();
        let e64 = e8.with_overrides(Some(64), None).unwrap();
        let (t8, t64) = (train_traffic(&e8, 8, 4.0), train_traffic(&e64, 8, 4.0));
        // Top-2 either way: the same FLOPs per token up to the router's width.
        assert!((t64.flops_per_token / t8.flops_per_token - 1.0).abs() < 0.02);
        // The optimiser's bytes follow total parameters exactly.
        let ratio = params(&e64).total / params(&e8).total;
        assert!(
            (t64.optimizer_bytes_per_token / t8.optimizer_bytes_per_token - ratio).abs() < 1e-9
        );
        assert!(t64.bytes_per_token > 3.0 * t8.bytes_per_token);
    }
}
