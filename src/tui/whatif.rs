//! The Projections view's inputs and what-if settings: the hardware profiles, the full-size pairs
//! ([`COMPARISONS`]: GLaM's, Mixtral against Llama 3 70B, DeepSeek-V3 against Llama 3 405B), and the
//! comparison, chips, utilisation, PUE and grid intensity the keys change. The projected rows
//! are computed from these at draw time, so the table follows a key at once.

use ratatui::crossterm::event::KeyCode;

use crate::profile::{hardware_names, load_hardware, load_model, HardwareProfile, ModelProfile};
use crate::project::{
    calibrate, compare_inference, project_training, project_training_tokens, seed_comparison,
    Calibration, InferenceComparison, InferenceSettings, SeedComparison, Settings,
    TrainingProjection, Utilization, DEFAULT_GRID_KG_PER_KWH,
};
use crate::runlog::{RunHeader, RunSummary};
use crate::vocab::Role;

use super::state::RunState;

/// The full-size counterpart of the measured pair: GLaM 64B/64E and its dense baseline.
pub const GLAM_SPARSE: &str = "glam-64b-64e";
pub const GLAM_DENSE: &str = "glam-64b-dense";
/// Tokens of the full GLaM 64B/64E training run (Du et al. 2022, Table 1: 456 MWh for 600B tokens).
pub const GLAM_TOKENS: f64 = 600e9;
/// Chips of the GLaM training run (1,024 TPU v4; Du et al. 2022).
pub const GLAM_CHIPS: usize = 1024;
/// Serving setup of the selected chip's inference line: one expert per chip (expert parallelism
/// as GShard and GLaM shard experts), 64 sequences, GLaM's 1,024-token context.
pub const SERVE_CHIPS: usize = 64;
pub const SERVE_BATCH: usize = 64;
pub const SERVE_CONTEXT: usize = 1024;

/// A full-size sparse-against-dense comparison the Projections view shows; `m` cycles through
/// [`COMPARISONS`], the first (GLaM's) being the default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComparisonSpec {
    pub sparse: &'static str,
    pub dense: &'static str,
    /// Tokens both models are trained on in the table.
    pub tokens: f64,
    /// Where that token count comes from.
    pub tokens_source: &'static str,
    /// Serving setup of the selected chip's inference line.
    pub serve_chips: usize,
    pub serve_batch: usize,
    pub serve_context: usize,
}

/// GLaM against its dense base (the default); Mixtral 8x7B against Llama 3 70B, of similar quality
/// (Jiang et al. 2024, arXiv 2401.04088, Table 2), served on one 8-GPU server; DeepSeek-V3 against
/// Llama 3 405B, the largest open MoE and dense models, on 64 chips.
pub const COMPARISONS: [ComparisonSpec; 3] = [
    ComparisonSpec {
        sparse: GLAM_SPARSE,
        dense: GLAM_DENSE,
        tokens: GLAM_TOKENS,
        tokens_source: "GLaM's run (Du et al. 2022)",
        serve_chips: SERVE_CHIPS,
        serve_batch: SERVE_BATCH,
        serve_context: SERVE_CONTEXT,
    },
    ComparisonSpec {
        sparse: "mixtral-8x7b",
        dense: "llama3-70b",
        tokens: 15e12,
        tokens_source: "Llama 3's 15T (arXiv 2407.21783); Mixtral's is not published",
        serve_chips: 8,
        serve_batch: 64,
        serve_context: 4096,
    },
    ComparisonSpec {
        sparse: "deepseek-v3",
        dense: "llama3-405b",
        tokens: 14.8e12,
        tokens_source: "DeepSeek-V3's 14.8T (arXiv 2412.19437)",
        serve_chips: 64,
        serve_batch: 64,
        serve_context: 4096,
    },
];

const UTILIZATION_STEP: f64 = 0.05;
const PUE_STEP: f64 = 0.05;
const GRID_STEP: f64 = 0.05;

/// Profiles loaded once when the dashboard starts; what failed to load is reported in the Log view.
#[derive(Debug, Clone, Default)]
pub struct ProjectionInputs {
    pub hardware: Vec<HardwareProfile>,
    /// (sparse, dense) full-size pair, when both profiles load.
    pub glam: Option<(ModelProfile, ModelProfile)>,
    /// The seed's comparison: GLaM 64B/64E against its dense base and GPT-3 175B as their
    /// published runs were set up (the what-if keys do not apply), with the published figures.
    pub seed: Option<SeedComparison>,
    /// The (sparse, dense) pair of each of [`COMPARISONS`] after the first, in order, when both
    /// profiles load.
    pub others: Vec<Option<(ModelProfile, ModelProfile)>>,
    pub errors: Vec<String>,
}

impl ProjectionInputs {
    pub fn load() -> ProjectionInputs {
        let mut out = ProjectionInputs::default();
        for name in hardware_names() {
            match load_hardware(&name) {
                Ok(h) => out.hardware.push(h),
                Err(e) => out.errors.push(format!("hardware profile skipped: {e}")),
            }
        }
        match (load_model(GLAM_SPARSE), load_model(GLAM_DENSE)) {
            (Ok(s), Ok(d)) => out.glam = Some((s, d)),
            (Err(e), _) | (_, Err(e)) => out.errors.push(format!("GLaM projection skipped: {e}")),
        }
        match seed_comparison() {
            Ok(c) => out.seed = Some(c),
            Err(e) => out.errors.push(format!("GLaM against GPT-3 skipped: {e}")),
        }
        for c in &COMPARISONS[1..] {
            let pair = match (load_model(c.sparse), load_model(c.dense)) {
                (Ok(s), Ok(d)) => Some((s, d)),
                (Err(e), _) | (_, Err(e)) => {
                    out.errors
                        .push(format!("{} against {} skipped: {e}", c.sparse, c.dense));
                    None
                }
            };
            out.others.push(pair);
        }
        out
    }

    /// The (sparse, dense) pair of comparison `i` of [`COMPARISONS`], when it loaded.
    pub fn pair(&self, i: usize) -> Option<&(ModelProfile, ModelProfile)> {
        match i {
            0 => self.glam.as_ref(),
            _ => self.others.get(i - 1)?.as_ref(),
        }
    }

    /// The hardware profile of the machine a run was on ([`crate::project::machine_hardware`]:
    /// the GPU's for a GPU run, else the one the header names, else the generic CPU).
    pub fn machine(&self, h: &RunHeader) -> Option<&HardwareProfile> {
        let name = crate::project::machine_hardware(&h.machine)?;
        self.hardware.iter().find(|x| x.name == name)
    }
}

/// Settings that override the hardware profiles' defaults for every row of the projection table.
/// `None` means "each profile's own default".
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    /// The highlighted hardware row.
    pub selected: usize,
    /// Chips the full-size GLaM run is spread over.
    pub chips: usize,
    /// Model FLOPs utilisation, 0..1.
    pub utilization: Option<f64>,
    pub pue: Option<f64>,
    /// kgCO2e per kWh.
    pub grid_kg_per_kwh: f64,
    /// Which of [`COMPARISONS`] the full-size table shows.
    pub comparison: usize,
}

impl Default for WhatIf {
    fn default() -> Self {
        WhatIf {
            selected: 0,
            chips: GLAM_CHIPS,
            utilization: None,
            pue: None,
            grid_kg_per_kwh: DEFAULT_GRID_KG_PER_KWH,
            comparison: 0,
        }
    }
}

impl WhatIf {
    /// Apply a key of the Projections view; a setting left at "profile default" starts from the
    /// selected chip's default. Returns whether it was one of the view's keys.
    pub fn on_key(&mut self, code: KeyCode, hardware: &[HardwareProfile]) -> bool {
        let sel = hardware.get(self.selected);
        let util = || {
            self.utilization
                .or(sel.map(|h| h.default_utilization))
                .unwrap_or(0.4)
        };
        let pue = || self.pue.or(sel.map(|h| h.default_pue)).unwrap_or(1.0);
        match code {
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => {
                self.selected = (self.selected + 1).min(hardware.len().saturating_sub(1))
            }
            KeyCode::Char('c') => self.chips = (self.chips / 2).max(1),
            KeyCode::Char('C') => self.chips = self.chips.saturating_mul(2).min(1 << 20),
            KeyCode::Char('u') => {
                self.utilization = Some(step(util(), -UTILIZATION_STEP, 0.05, 1.0))
            }
            KeyCode::Char('U') => {
                self.utilization = Some(step(util(), UTILIZATION_STEP, 0.05, 1.0))
            }
            KeyCode::Char('p') => self.pue = Some(step(pue(), -PUE_STEP, 1.0, 3.0)),
            KeyCode::Char('P') => self.pue = Some(step(pue(), PUE_STEP, 1.0, 3.0)),
            KeyCode::Char('g') => {
                self.grid_kg_per_kwh = step(self.grid_kg_per_kwh, -GRID_STEP, 0.0, 2.0)
            }
            KeyCode::Char('G') => {
                self.grid_kg_per_kwh = step(self.grid_kg_per_kwh, GRID_STEP, 0.0, 2.0)
            }
            KeyCode::Char('m') => self.comparison = (self.comparison + 1) % COMPARISONS.len(),
            KeyCode::Char('r') => {
                *self = WhatIf {
                    selected: self.selected,
                    comparison: self.comparison,
                    ..WhatIf::default()
                }
            }
            _ => return false,
        }
        true
    }

    /// Training settings for `chips` chips with the what-if overrides.
    pub fn settings(&self, chips: usize) -> Settings {
        Settings {
            utilization: self.utilization.map(Utilization::Mfu),
            pue: self.pue,
            grid_kg_per_kwh: self.grid_kg_per_kwh,
            ..Settings::new(chips)
        }
    }
}

/// `x + d` rounded to the step's grid (so repeated presses do not drift) and clamped.
fn step(x: f64, d: f64, lo: f64, hi: f64) -> f64 {
    let y = ((x + d) / d.abs()).round() * d.abs();
    ((y * 1e6).round() / 1e6).clamp(lo, hi)
}

/// One hardware row of a projection table: the sparse and the dense model on it, or why not.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionRow {
    pub hardware: String,
    pub sparse: Result<TrainingProjection, String>,
    pub dense: Result<TrainingProjection, String>,
}

impl ProjectionRow {
    /// Sparse energy over dense energy, when both projected.
    pub fn energy_ratio(&self) -> Option<f64> {
        match (&self.sparse, &self.dense) {
            (Ok(s), Ok(d)) if d.energy_j > 0.0 => Some(s.energy_j / d.energy_j),
            _ => None,
        }
    }
}

/// The full-size GLaM pair trained on [`GLAM_TOKENS`] tokens, on every hardware profile with the
/// what-if settings (the Overview's table, whichever comparison the Projections view shows). Empty
/// when the GLaM profiles did not load.
pub fn glam_rows(inputs: &ProjectionInputs, w: &WhatIf) -> Vec<ProjectionRow> {
    comparison_rows(
        inputs,
        &WhatIf {
            comparison: 0,
            ..w.clone()
        },
    )
}

/// The selected comparison ([`WhatIf::comparison`]).
pub fn comparison(w: &WhatIf) -> &'static ComparisonSpec {
    &COMPARISONS[w.comparison % COMPARISONS.len()]
}

/// The selected comparison's pair trained on its tokens on every hardware profile with the
/// what-if settings ([`glam_rows`] for GLaM's). Empty when its profiles did not load.
pub fn comparison_rows(inputs: &ProjectionInputs, w: &WhatIf) -> Vec<ProjectionRow> {
    let c = comparison(w);
    let Some((sp, de)) = inputs.pair(w.comparison % COMPARISONS.len()) else {
        return Vec::new();
    };
    let s = w.settings(w.chips);
    inputs
        .hardware
        .iter()
        .map(|hw| ProjectionRow {
            hardware: hw.name.clone(),
            sparse: project_training_tokens(sp, c.tokens, hw, &s).map_err(|e| e.to_string()),
            dense: project_training_tokens(de, c.tokens, hw, &s).map_err(|e| e.to_string()),
        })
        .collect()
}

/// Serving the selected comparison's pair on the selected chip at its serving setup, with the
/// what-if PUE.
pub fn comparison_inference(
    inputs: &ProjectionInputs,
    w: &WhatIf,
) -> Option<Result<InferenceComparison, String>> {
    let c = comparison(w);
    let (sp, de) = inputs.pair(w.comparison % COMPARISONS.len())?;
    let hw = inputs.hardware.get(w.selected)?;
    let s = InferenceSettings {
        pue: w.pue,
        ..InferenceSettings::new(c.serve_chips, c.serve_batch, c.serve_context)
    };
    Some(compare_inference(sp, de, hw, &s).map_err(|e| e.to_string()))
}

/// The measured training workload (each model's executed FLOPs and tokens trained in this run,
/// warm-up included) on one chip of every hardware profile, with the what-if settings. Empty until
/// both models have trained.
pub fn measured_rows(
    inputs: &ProjectionInputs,
    w: &WhatIf,
    state: &RunState,
) -> Vec<ProjectionRow> {
    let (Some(sc), Some(dc)) = (
        state.training.get(&Role::Sparse),
        state.training.get(&Role::Dense),
    ) else {
        return Vec::new();
    };
    if sc.tokens == 0 || dc.tokens == 0 {
        return Vec::new();
    }
    let s = w.settings(1);
    let one = |flops: f64, tokens: u64, hw: &HardwareProfile| {
        project_training(flops, hw, &s)
            .map(|mut p| {
                p.tokens = Some(tokens as f64);
                p.joules_per_token = Some(p.energy_j / tokens as f64);
                p
            })
            .map_err(|e| e.to_string())
    };
    inputs
        .hardware
        .iter()
        .map(|hw| ProjectionRow {
            hardware: hw.name.clone(),
            sparse: one(sc.flops, sc.tokens, hw),
            dense: one(dc.flops, dc.tokens, hw),
        })
        .collect()
}

/// Serving the GLaM pair on the selected chip ([`SERVE_CHIPS`] chips, batch [`SERVE_BATCH`],
/// context [`SERVE_CONTEXT`]), with the what-if PUE.
pub fn glam_inference(
    inputs: &ProjectionInputs,
    w: &WhatIf,
) -> Option<Result<InferenceComparison, String>> {
    comparison_inference(
        inputs,
        &WhatIf {
            comparison: 0,
            ..w.clone()
        },
    )
}

/// The run against its machine's profile (measured FLOP/s and J/FLOP against the projection).
pub fn machine_calibration(
    inputs: &ProjectionInputs,
    header: Option<&RunHeader>,
    summary: Option<&RunSummary>,
) -> Option<Calibration> {
    let hw = inputs.machine(header?)?;
    Some(calibrate(summary?, hw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ProjectionInputs {
        let p = ProjectionInputs::load();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p
    }

    fn tpu_v4(rows: &[ProjectionRow]) -> TrainingProjection {
        rows.iter()
            .find(|r| r.hardware == "tpu-v4")
            .unwrap()
            .sparse
            .clone()
            .unwrap()
    }

    #[test]
    fn the_glam_row_on_tpu_v4_at_the_runs_own_utilisation_is_the_published_run() {
        // Du et al. 2022: 1,024 TPU v4 chips took 574 h for 280B tokens, and the whole 600B-token
        // run used 456 MWh. At the utilisation those 574 h imply, the dashboard's row (1,024
        // chips, 600B tokens, the profile's 326 W and PUE 1.11) must come within 5% of 456 MWh.
        let inp = inputs();
        let (sparse, _) = inp.glam.clone().unwrap();
        let hw = inp.hardware.iter().find(|h| h.name == "tpu-v4").unwrap();
        let flops_280b = crate::project::training_flops(&sparse, 280e9);
        let u = crate::project::implied_utilization(flops_280b, hw, 1024, 574.0, None).unwrap();
        let w = WhatIf {
            utilization: Some(u),
            ..WhatIf::default()
        };
        let p = tpu_v4(&glam_rows(&inp, &w));
        assert_eq!(p.chips, 1024);
        assert!(
            (p.energy_mwh / 456.0 - 1.0).abs() < 0.05,
            "{} MWh",
            p.energy_mwh
        );
    }

    #[test]
    fn what_if_keys_move_the_figures_as_the_formulas_say() {
        let inp = inputs();
        let sel = inp
            .hardware
            .iter()
            .position(|h| h.name == "tpu-v4")
            .unwrap();
        let mut w = WhatIf {
            selected: sel,
            ..WhatIf::default()
        };
        let base = tpu_v4(&glam_rows(&inp, &w));
        // Doubling the chips halves the time and leaves the energy.
        w.on_key(KeyCode::Char('C'), &inp.hardware);
        let p = tpu_v4(&glam_rows(&inp, &w));
        assert!((p.hours * 2.0 / base.hours - 1.0).abs() < 1e-9);
        assert!((p.energy_j / base.energy_j - 1.0).abs() < 1e-9);
        // PUE +0.05 from the profile's 1.11 scales the energy by 1.15 / 1.11 (1.11 + 0.05 = 1.16
        // rounds to the 0.05 grid: 1.15).
        w.on_key(KeyCode::Char('P'), &inp.hardware);
        assert_eq!(w.pue, Some(1.15));
        let q = tpu_v4(&glam_rows(&inp, &w));
        assert!((q.energy_j / p.energy_j - 1.15 / 1.11).abs() < 1e-9);
        // Utilisation up: shorter, and the energy falls in proportion.
        w.on_key(KeyCode::Char('U'), &inp.hardware);
        let u = w.utilization.unwrap();
        let r = tpu_v4(&glam_rows(&inp, &w));
        assert!((r.hours / q.hours - q.mfu / u).abs() < 1e-9);
        // Grid intensity scales the carbon only.
        w.on_key(KeyCode::Char('G'), &inp.hardware);
        let g = tpu_v4(&glam_rows(&inp, &w));
        assert!(
            (g.co2e_tonnes / r.co2e_tonnes - w.grid_kg_per_kwh / DEFAULT_GRID_KG_PER_KWH).abs()
                < 1e-9
        );
        assert_eq!(g.energy_j, r.energy_j);
        // r: back to the defaults, on the same row.
        w.on_key(KeyCode::Char('r'), &inp.hardware);
        assert_eq!(
            w,
            WhatIf {
                selected: sel,
                ..WhatIf::default()
            }
        );
    }

    #[test]
    fn steps_stay_on_their_grid_and_in_range() {
        assert_eq!(step(0.462, 0.05, 0.05, 1.0), 0.5);
        assert_eq!(step(0.05, -0.05, 0.05, 1.0), 0.05);
        assert_eq!(step(1.0, 0.05, 0.05, 1.0), 1.0);
    }
}
