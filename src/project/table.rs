//! Plain-text tables of projections and hardware profiles, for the terminal (`sparsewatt project`,
//! `sparsewatt hardware`). Every column header carries its unit.

use super::calibrate::Calibration;
use super::inference::{InferenceProjection, PhaseRoofline};
use super::local::LocalPrediction;
use super::training::TrainingProjection;
use crate::profile::HardwareProfile;
use crate::units::{percent, signed_percent};

/// Three significant digits, plain between 0.001 and 10^6, scientific outside (`units` writes it).
use crate::units::sig3;

/// The roofline fitted to a run, each of its models measured against it, and the prediction.
pub fn local_table(p: &LocalPrediction) -> String {
    let f = &p.fit;
    let rate = |x: Option<f64>, unit: &str| {
        x.map_or("–".into(), |r| format!("{} {unit}", sig3(r / 1e9)))
    };
    let mut o = format!(
        "Roofline fitted to the run's training and prefill on {} (batch {}): training {}, prefill {} effective; memory {} ({}).\n",
        f.device,
        f.batch,
        rate(f.train_flops_per_s, "GFLOP/s"),
        rate(f.prefill_flops_per_s, "GFLOP/s"),
        rate(f.bytes_per_s, "GB/s"),
        match f.bandwidth_from.as_str() {
            "run" => "measured at the run's start",
            "probe" => "this machine's probe; the run's header has none",
            _ => "fitted",
        }
    );
    let row = |model: &str, t: &super::local::StepTraffic, measured: Option<f64>, fitted: f64| {
        vec![
            model.to_string(),
            sig3(t.flops_per_token / 1e6),
            sig3(t.bytes_per_token / 1e6),
            measured.map_or("–".into(), sig3),
            sig3(fitted),
            measured.map_or("–".into(), |m| signed_percent(fitted / m - 1.0, 1)),
        ]
    };
    let mut rows: Vec<Vec<String>> = f
        .points
        .iter()
        .map(|q| {
            row(
                &format!("{} {}", q.model, q.phase.label()),
                &q.traffic,
                Some(q.measured_tokens_per_s),
                q.fitted_tokens_per_s,
            )
        })
        .collect();
    rows.push(row(
        &format!("{} train (predicted)", p.model),
        &p.traffic,
        None,
        p.tokens_per_s,
    ));
    o.push_str(&grid(
        &[
            "model",
            "MFLOP/token",
            "MB/token",
            "measured tok/s",
            "roofline tok/s",
            "error",
        ],
        &rows,
    ));
    o.push_str(&format!(
        "\n{}: {} tokens/s trained, {} of the time on FLOPs",
        p.model,
        sig3(p.tokens_per_s),
        percent(p.compute_share, 0)
    ));
    match (p.joules_per_token, f.power_w, f.source) {
        (Some(j), Some(w), Some(src)) => o.push_str(&format!(
            "; {} J per token trained ({} at the run's mean training power of {} W, scope: {}).\n",
            sig3(j),
            src.label(),
            sig3(w),
            f.scope.as_deref().unwrap_or("?")
        )),
        _ => o.push_str("; no energy: the run carried none.\n"),
    }
    o.push_str("Bytes: weights read forward and backward and their gradients written (the experts touched), activations, and AdamW over every parameter (docs/projection.md).\n");
    o
}

/// Columns padded to their widest cell; the first column left-aligned, the rest right-aligned.
pub fn grid(headers: &[&str], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    let dashes: Vec<String> = w.iter().map(|&k| "-".repeat(k)).collect();
    out.push_str(&line(dashes.iter().map(String::as_str).collect()));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// One row per projection; `label` names the model (or the FLOP count) in the first column.
pub fn training_table(rows: &[(String, &TrainingProjection)]) -> String {
    let headers = [
        "hardware",
        "model",
        "chips",
        "MFU",
        "days",
        "MWh",
        "tCO2e",
        "W/chip",
        "power scope",
        "PUE",
        "J/token",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, p)| {
            vec![
                p.hardware.clone(),
                label.clone(),
                p.chips.to_string(),
                sig3(p.mfu),
                sig3(p.days),
                sig3(p.energy_mwh),
                sig3(p.co2e_tonnes),
                sig3(p.power_w_per_chip),
                p.power_scope.label().to_string(),
                sig3(p.pue),
                p.joules_per_token.map_or("-".into(), sig3),
            ]
        })
        .collect();
    grid(&headers, &body)
}

fn phase_row(p: &InferenceProjection, r: &PhaseRoofline) -> Vec<String> {
    vec![
        p.hardware.clone(),
        p.model.clone(),
        r.phase.label().to_string(),
        r.bound.label().to_string(),
        sig3(r.tokens_per_s),
        sig3(r.joules_per_token),
        sig3(r.flops_per_token),
        sig3(r.flops_per_byte),
        sig3(r.compute_s * 1e3),
        sig3(r.memory_s * 1e3),
        sig3(r.network_s * 1e3),
        if p.fits_in_memory { "yes" } else { "NO" }.to_string(),
    ]
}

/// Prefill and decode rows per projection. Per-token: per prompt token (prefill), per generated
/// token (decode); times per step.
pub fn inference_table(projections: &[&InferenceProjection]) -> String {
    let headers = [
        "hardware",
        "model",
        "phase",
        "bound",
        "tokens/s",
        "J/token",
        "FLOPs/token",
        "FLOPs/byte",
        "compute ms",
        "memory ms",
        "network ms",
        "fits",
    ];
    let mut body = Vec::new();
    for p in projections {
        body.push(phase_row(p, &p.prefill));
        body.push(phase_row(p, &p.decode));
    }
    grid(&headers, &body)
}

/// The key figures of hardware profiles.
pub fn hardware_table(profiles: &[HardwareProfile]) -> String {
    let headers = [
        "name",
        "kind",
        "peak TFLOP/s",
        "memory GB",
        "mem GB/s",
        "link GB/s",
        "pod chips",
        "power W",
        "power scope",
        "MFU",
        "PUE",
    ];
    let body: Vec<Vec<String>> = profiles
        .iter()
        .map(|h| {
            let power = h.default_power();
            vec![
                h.name.clone(),
                h.kind.label().to_string(),
                format!("{} {}", sig3(h.peak() / 1e12), h.default_precision),
                sig3(h.memory_bytes / 1e9),
                sig3(h.memory_bytes_per_s / 1e9),
                h.interconnect
                    .as_ref()
                    .map_or("-".into(), |i| sig3(i.bytes_per_s / 1e9)),
                h.interconnect
                    .as_ref()
                    .map_or("-".into(), |i| i.chips_per_pod.to_string()),
                sig3(power.watts),
                power.scope.label().to_string(),
                sig3(h.default_utilization),
                sig3(h.default_pue),
            ]
        })
        .collect();
    grid(&headers, &body)
}

/// A run measured against its machine's profile.
pub fn calibration_table(c: &Calibration) -> String {
    let headers = [
        "model",
        "phase",
        "GFLOP/s measured",
        "GFLOP/s projected",
        "ratio",
        "MFU",
        "W measured",
        "W projected",
        "J/FLOP ratio",
        "source",
    ];
    let body: Vec<Vec<String>> = c
        .phases
        .iter()
        .map(|p| {
            vec![
                p.model.clone(),
                p.phase.label().to_string(),
                sig3(p.measured_flops_per_s / 1e9),
                sig3(p.projected_flops_per_s / 1e9),
                sig3(p.utilization_ratio),
                sig3(p.achieved_mfu),
                p.measured_power_w.map_or("-".into(), sig3),
                sig3(p.projected_power_w),
                p.joules_per_flop_ratio.map_or("-".into(), sig3),
                p.source.map_or("-".into(), |s| s.label().to_string()),
            ]
        })
        .collect();
    grid(&headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_aligns_columns() {
        let g = grid(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(g, "a    bb\n---  --\nxyz   1\n");
    }
}
