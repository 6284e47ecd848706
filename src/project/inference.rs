//! Inference on `chips` chips: a per-token roofline for prefill and decode at a batch size.
//!
//! For one step (prefill: batch x context prompt tokens; decode: one new token for each of batch
//! sequences that have `context` cached tokens):
//! - compute time = step FLOPs / (chips x peak x utilisation);
//! - memory time = step bytes / (chips x memory bandwidth), bytes from `accounting::bytes_per_token`:
//!   weights read once per step and shared by its tokens, activations, KV cache per sequence;
//! - network time (MoE on more than one chip, experts spread over the chips: expert parallelism) =
//!   all-to-all bytes / (chips x interconnect bandwidth each way), where each token sends its
//!   activation to its top_k experts and gets their outputs back (dispatch + combine), and
//!   (chips - 1) / chips of the experts live on another chip (uniform routing); shared experts stay on every chip and send nothing;
//! - weights read per step: everything but the routed experts, and in each MoE layer the distinct
//!   experts the step's tokens reach (expected under uniform routing), so decode at batch 1 reads
//!   the active experts only and a large batch nearly all of them; the KV cache per position is
//!   keys and values of `kv_heads` heads, or multi-head latent attention's latent and rope key;
//! - step time = the largest of the three (perfect overlap), and that one is the bound.
//!
//! Not modelled: tensor-parallel all-reduces of dense layers, pipeline bubbles, kernel launch and
//! host overheads, traffic between pods. The power is the chip's average power for the whole step.

use serde::{Deserialize, Serialize};

use super::{bad, pick_power, pick_precision, pick_pue, ProjectError};
use crate::accounting::{
    bytes_per_token, decode_flops_per_token, expected_experts_touched, kv_cache_bytes_per_position,
    params, prefill_flops_per_token, tokens_per_step, weights_read_per_step, ByteCount,
};
use crate::profile::{HardwareProfile, ModelProfile, PowerScope, Precision};
use crate::vocab::Phase;

/// What an inference projection is asked for. `None` fields take the hardware profile's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceSettings {
    pub chips: usize,
    /// Sequences served together.
    pub batch: usize,
    /// Prompt length for prefill; tokens already in the KV cache for decode.
    pub context: usize,
    /// Number format of weights, activations, KV cache and matmuls.
    pub precision: Option<Precision>,
    /// Fraction of peak the matmuls reach; `None` is the roofline itself (1.0).
    pub compute_utilization: Option<f64>,
    pub power_w_per_chip: Option<f64>,
    pub power_scope: Option<PowerScope>,
    pub pue: Option<f64>,
}

impl InferenceSettings {
    pub fn new(chips: usize, batch: usize, context: usize) -> InferenceSettings {
        InferenceSettings {
            chips,
            batch,
            context,
            precision: None,
            compute_utilization: None,
            power_w_per_chip: None,
            power_scope: None,
            pue: None,
        }
    }
}

/// What limits a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Memory,
    Network,
}

impl Bound {
    pub fn label(self) -> &'static str {
        match self {
            Bound::Compute => "compute",
            Bound::Memory => "memory",
            Bound::Network => "network",
        }
    }
}

/// One phase (prefill or decode) on the roofline. Per-token figures: per prompt token (prefill)
/// or per generated token (decode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRoofline {
    pub phase: Phase,
    pub tokens_per_step: f64,
    pub flops_per_token: f64,
    pub bytes_per_token: ByteCount,
    /// All-to-all bytes per token over the interconnect (0 without expert parallelism).
    pub network_bytes_per_token: f64,
    /// Distinct routed experts the step's tokens reach in each MoE layer, expected under uniform
    /// routing: experts x (1 - (1 - top_k/experts)^tokens); 0 for a dense model.
    pub experts_touched_per_layer: f64,
    /// Weight bytes the step reads: everything but the routed experts (shared experts included)
    /// and the routed experts touched.
    pub weights_read_bytes_per_step: f64,
    /// FLOPs per byte of memory traffic.
    pub flops_per_byte: f64,
    /// Seconds of one step at the compute, memory and network limits.
    pub compute_s: f64,
    pub memory_s: f64,
    pub network_s: f64,
    pub step_s: f64,
    pub bound: Bound,
    /// All chips together.
    pub tokens_per_s: f64,
    /// Facility energy (chips x power x PUE x step time) per token.
    pub joules_per_token: f64,
}

/// A model served on one hardware profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceProjection {
    pub hardware: String,
    pub model: String,
    pub chips: usize,
    pub batch: usize,
    pub context: usize,
    pub precision: Precision,
    pub peak_flops_per_chip: f64,
    pub compute_utilization: f64,
    pub memory_bytes_per_s_per_chip: f64,
    pub interconnect_bytes_per_s_per_chip: Option<f64>,
    pub power_w_per_chip: f64,
    pub power_scope: PowerScope,
    pub pue: f64,
    /// Every weight the model holds, bytes.
    pub weights_held_bytes: f64,
    /// KV cache of the batch at the end of the decode step, bytes.
    pub kv_cache_bytes: f64,
    /// Weights and KV cache fit in the chips' memory together.
    pub fits_in_memory: bool,
    /// Experts spread over the chips (a sparse model on more than one chip).
    pub expert_parallel: bool,
    pub prefill: PhaseRoofline,
    pub decode: PhaseRoofline,
    /// What the figures leave out for this case.
    pub notes: Vec<String>,
}

struct Machine {
    chips: f64,
    flops_per_s: f64,
    mem_bytes_per_s: f64,
    net_bytes_per_s: Option<f64>,
    watts: f64,
    pue: f64,
    bytes: f64,
}

fn roofline(
    m: &ModelProfile,
    mach: &Machine,
    phase: Phase,
    s: &InferenceSettings,
    expert_parallel: bool,
) -> PhaseRoofline {
    let tokens = tokens_per_step(phase, s.batch, s.context);
    let flops_per_token = match phase {
        Phase::Prefill => prefill_flops_per_token(m, s.context).total(),
        _ => decode_flops_per_token(m, s.context).total(),
    };
    let b = bytes_per_token(m, phase, s.batch, s.context, mach.bytes, mach.bytes);
    let network_bytes_per_token = if expert_parallel {
        let off_chip = (mach.chips - 1.0) / mach.chips;
        // Dispatch the token's activation to each of its top_k experts and combine their outputs.
        2.0 * m.top_k as f64 * m.d_model as f64 * mach.bytes * off_chip * m.moe_layers() as f64
    } else {
        0.0
    };
    let compute_s = tokens * flops_per_token / (mach.chips * mach.flops_per_s);
    let memory_s = tokens * b.total() / (mach.chips * mach.mem_bytes_per_s);
    let network_s = match mach.net_bytes_per_s {
        Some(bw) if network_bytes_per_token > 0.0 => {
            tokens * network_bytes_per_token / (mach.chips * bw)
        }
        _ => 0.0,
    };
    let (bound, step_s) = [
        (Bound::Compute, compute_s),
        (Bound::Memory, memory_s),
        (Bound::Network, network_s),
    ]
    .into_iter()
    .fold(
        (Bound::Compute, f64::MIN),
        |a, b| if b.1 > a.1 { b } else { a },
    );
    let experts_touched_per_layer = if m.moe_layers() > 0 {
        expected_experts_touched(m.experts, m.top_k, tokens)
    } else {
        0.0
    };
    PhaseRoofline {
        phase,
        tokens_per_step: tokens,
        flops_per_token,
        bytes_per_token: b,
        network_bytes_per_token,
        experts_touched_per_layer,
        weights_read_bytes_per_step: weights_read_per_step(m, tokens) * mach.bytes,
        flops_per_byte: flops_per_token / b.total(),
        compute_s,
        memory_s,
        network_s,
        step_s,
        bound,
        tokens_per_s: tokens / step_s,
        joules_per_token: mach.chips * mach.watts * mach.pue * step_s / tokens,
    }
}

/// Project serving `model` on `hw` at the settings' chips, batch and context.
pub fn project_inference(
    model: &ModelProfile,
    hw: &HardwareProfile,
    s: &InferenceSettings,
) -> Result<InferenceProjection, ProjectError> {
    for (name, v) in [
        ("chips", s.chips),
        ("batch", s.batch),
        ("context", s.context),
    ] {
        if v == 0 {
            return Err(bad(name, "must be at least 1, got 0"));
        }
    }
    let (precision, peak) = pick_precision(hw, s.precision)?;
    let util = s.compute_utilization.unwrap_or(1.0);
    if !(util.is_finite() && util > 0.0 && util <= 1.0) {
        return Err(bad(
            "compute_utilization",
            format!("must be in (0, 1], got {util}"),
        ));
    }
    let power = pick_power(hw, s.power_w_per_chip, s.power_scope)?;
    let pue = pick_pue(hw, s.pue)?;
    let expert_parallel = model.is_sparse() && s.chips > 1;
    let net = hw.interconnect.as_ref().map(|i| i.bytes_per_s);
    let mut notes = Vec::new();
    if s.chips > 1 {
        match &hw.interconnect {
            None => {
                return Err(bad(
                    "chips",
                    format!(
                        "{} has no chip-to-chip interconnect; project it on 1 chip",
                        hw.name
                    ),
                ))
            }
            Some(i) if s.chips > i.chips_per_pod => notes.push(format!(
                "{}: {} chips span more than one {}-chip pod/NVLink domain; the slower network between them is not modelled",
                hw.name, s.chips, i.chips_per_pod
            )),
            Some(_) => {}
        }
        notes.push(
            "weights and KV cache are sharded over the chips; tensor-parallel all-reduces are not modelled"
                .into(),
        );
    }
    if s.compute_utilization.is_none() {
        notes.push("compute at peak (roofline): real kernels reach less".into());
    }
    let mach = Machine {
        chips: s.chips as f64,
        flops_per_s: peak * util,
        mem_bytes_per_s: hw.memory_bytes_per_s,
        net_bytes_per_s: net,
        watts: power.watts,
        pue,
        bytes: precision.bytes(),
    };
    let weights_held_bytes = params(model).total * precision.bytes();
    let kv_per_position = kv_cache_bytes_per_position(model, precision.bytes());
    let kv_cache_bytes = s.batch as f64 * (s.context as f64 + 1.0) * kv_per_position;
    let fits_in_memory = weights_held_bytes + kv_cache_bytes <= mach.chips * hw.memory_bytes;
    if !fits_in_memory {
        notes.push(format!(
            "{}: weights ({:.0} GB) and KV cache ({:.0} GB) do not fit in {} x {:.0} GB",
            hw.name,
            weights_held_bytes / 1e9,
            kv_cache_bytes / 1e9,
            s.chips,
            hw.memory_bytes / 1e9
        ));
    }
    Ok(InferenceProjection {
        hardware: hw.name.clone(),
        model: model.name.clone(),
        chips: s.chips,
        batch: s.batch,
        context: s.context,
        precision,
        peak_flops_per_chip: peak,
        compute_utilization: util,
        memory_bytes_per_s_per_chip: hw.memory_bytes_per_s,
        interconnect_bytes_per_s_per_chip: net,
        power_w_per_chip: power.watts,
        power_scope: power.scope,
        pue,
        weights_held_bytes,
        kv_cache_bytes,
        fits_in_memory,
        expert_parallel,
        prefill: roofline(model, &mach, Phase::Prefill, s, expert_parallel),
        decode: roofline(model, &mach, Phase::Decode, s, expert_parallel),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load_hardware, load_model};

    #[test]
    fn step_time_is_the_largest_limit() {
        let m = load_model("glam-64b-64e").unwrap();
        let hw = load_hardware("tpu-v4").unwrap();
        let p = project_inference(&m, &hw, &InferenceSettings::new(64, 8, 512)).unwrap();
        for r in [&p.prefill, &p.decode] {
            let max = r.compute_s.max(r.memory_s).max(r.network_s);
            assert_eq!(r.step_s, max);
            assert!((r.tokens_per_s * r.step_s - r.tokens_per_step).abs() < 1e-6);
        }
        assert!(p.expert_parallel && p.decode.network_s > 0.0);
    }

    #[test]
    fn dense_on_one_chip_has_no_network_time() {
        let m = load_model("glam-8b-dense").unwrap();
        let hw = load_hardware("h100-sxm").unwrap();
        let p = project_inference(&m, &hw, &InferenceSettings::new(1, 4, 128)).unwrap();
        assert_eq!(p.decode.network_s, 0.0);
        assert!(!p.expert_parallel);
    }

    #[test]
    fn decode_compute_time_matches_the_flop_count() {
        let m = load_model("gpt3-175b").unwrap();
        let hw = load_hardware("a100-80gb").unwrap();
        let p = project_inference(&m, &hw, &InferenceSettings::new(8, 16, 1000)).unwrap();
        let want = 16.0 * decode_flops_per_token(&m, 1000).total() / (8.0 * 312e12);
        assert!((p.decode.compute_s - want).abs() < 1e-12 * want.max(1.0));
    }

    #[test]
    fn gpt3_does_not_fit_on_one_h100_and_fits_on_eight() {
        let m = load_model("gpt3-175b").unwrap();
        let hw = load_hardware("h100-sxm").unwrap();
        let one = project_inference(&m, &hw, &InferenceSettings::new(1, 1, 128)).unwrap();
        let eight = project_inference(&m, &hw, &InferenceSettings::new(8, 1, 128)).unwrap();
        assert!(!one.fits_in_memory && eight.fits_in_memory);
    }

    #[test]
    fn cpu_refuses_more_than_one_chip() {
        let m = load_model("glam-tiny").unwrap();
        let hw = load_hardware("cpu-generic").unwrap();
        let e = project_inference(&m, &hw, &InferenceSettings::new(2, 1, 16)).unwrap_err();
        assert!(e.to_string().contains("interconnect"), "{e}");
    }
}
