//! Plain-text tables of projections and hardware profiles, for the terminal (`sparsewatt project`,
//! `sparsewatt hardware`). Every column header carries its unit.

use super::calibrate::Calibration;
use super::inference::{InferenceProjection, PhaseRoofline};
use super::training::TrainingProjection;
use crate::profile::HardwareProfile;

/// Three significant digits, plain between 0.001 and 10^6, scientific outside.
pub fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let digits = (2 - a.log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
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
                format!("{:.3}", p.mfu),
                sig3(p.days),
                sig3(p.energy_mwh),
                sig3(p.co2e_tonnes),
                sig3(p.power_w_per_chip),
                p.power_scope.label().to_string(),
                format!("{:.2}", p.pue),
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
        r.phase_label().to_string(),
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

impl PhaseRoofline {
    fn phase_label(&self) -> &'static str {
        match self.phase {
            crate::runlog::Phase::Prefill => "prefill",
            crate::runlog::Phase::Decode => "decode",
            crate::runlog::Phase::Train => "train",
        }
    }
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
                format!("{:.3}", h.default_utilization),
                format!("{:.2}", h.default_pue),
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
                format!("{:?}", p.phase).to_lowercase(),
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
    fn sig3_keeps_three_significant_digits() {
        assert_eq!(sig3(1287.04), "1287");
        assert_eq!(sig3(14.77), "14.8");
        assert_eq!(sig3(0.01234), "0.0123");
        assert_eq!(sig3(3.14e23), "3.14e23");
        assert_eq!(sig3(0.0), "0");
    }

    #[test]
    fn grid_aligns_columns() {
        let g = grid(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(g, "a    bb\n---  --\nxyz   1\n");
    }
}
