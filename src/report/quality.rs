//! The report's first answer: the energy (and FLOPs, tokens, seconds) each model needed to reach
//! the same validation loss, from `summary.json`'s `to_target` (computed in `runlog`), in
//! sentences and one table. Per-token cost is the second answer.

use crate::runlog::{Interval, ModelToTarget, ToTarget};
use crate::units::count;
use crate::vocab::Role;

use super::format::{num, source_label};

/// "1.23 [1.1, 1.4]", with "+" after the high end when it is open (replicates that never
/// reached the target: the true high end lies beyond the run).
pub fn with_interval(x: &Interval, show: fn(f64) -> String) -> String {
    format!(
        "{} [{}, {}{}]",
        show(x.mean),
        show(x.ci95[0]),
        show(x.ci95[1]),
        if x.open_above { "+" } else { "" }
    )
}

fn source_of(t: &ToTarget) -> String {
    source_label(t.source.map_or("unknown", |s| s.label()))
}

fn energy_label(t: &ToTarget) -> String {
    match &t.scope {
        Some(scope) => format!("{}, scope: {scope}", source_of(t)),
        None => source_of(t),
    }
}

/// The headline sentence: "To reach validation loss L, the sparse model used X J against the
/// dense model's Y J: ratio R [lo, hi] (source)". `None` without both roles.
pub fn headline(t: &ToTarget) -> Option<String> {
    let (s, d) = (t.model(Role::Sparse)?, t.model(Role::Dense)?);
    let label = source_of(t);
    let joules = |m: &ModelToTarget| match &m.joules {
        Some(j) => format!("{} J", with_interval(j, num)),
        None => "an unmeasured amount of energy".into(),
    };
    let l = t.target_loss;
    Some(match (s.reached, d.reached) {
        (true, true) => {
            let ratio = t
                .ratio
                .as_ref()
                .and_then(|r| r.joules.as_ref())
                .map_or("n/a".into(), |r| with_interval(r, num));
            format!(
                "To reach validation loss {l:.4} nats/token, the sparse model ({}) used {} against the dense model's ({}) {}: ratio {ratio} ({label}; training steps' energy, warm-up included, evaluation excluded; 95% intervals).",
                s.model,
                joules(s),
                d.model,
                joules(d)
            )
        }
        (true, false) => format!(
            "To reach validation loss {l:.4} nats/token, the sparse model ({}) used {} ({label}); the dense model ({}) did not reach it within the run (its best: {:.4}).",
            s.model,
            joules(s),
            d.model,
            d.best_val_loss
        ),
        (false, true) => format!(
            "To reach validation loss {l:.4} nats/token, the dense model ({}) used {} ({label}); the sparse model ({}) did not reach it within the run (its best: {:.4}).",
            d.model,
            joules(d),
            s.model,
            s.best_val_loss
        ),
        (false, false) => format!(
            "Neither model reached validation loss {l:.4} nats/token within the run (best: sparse {:.4}, dense {:.4}).",
            s.best_val_loss, d.best_val_loss
        ),
    })
}

/// Whether the sparse model won on energy, plainly, from the ratio's interval.
pub fn verdict(t: &ToTarget) -> Option<String> {
    let (s, d) = (t.model(Role::Sparse)?, t.model(Role::Dense)?);
    Some(match (s.reached, d.reached) {
        (true, true) => {
            let r = t.ratio.as_ref()?.joules.as_ref()?;
            if r.ci95[1] < 1.0 {
                "The sparse model reached this quality for less energy: the whole 95% interval of the ratio lies below 1.".into()
            } else if r.ci95[0] > 1.0 {
                "The sparse model loses here: it needed more energy than the dense model to reach this quality (the whole 95% interval of the ratio lies above 1).".into()
            } else {
                "The 95% interval of the ratio includes 1: this run does not establish which model reaches this quality for less energy.".into()
            }
        }
        (true, false) => "The sparse model wins: only it reached this quality.".into(),
        (false, true) => {
            "The sparse model loses: only the dense model reached this quality.".into()
        }
        (false, false) => return None,
    })
}

/// Where the validation curves cross, plainly: the measured crossover, or its absence.
pub fn crossover(t: &ToTarget, steps_run: Option<u64>) -> Option<String> {
    let (s, d) = (t.model(Role::Sparse)?, t.model(Role::Dense)?);
    let ahead = t.sparse_ahead_at_end?;
    let end = format!(
        "at the end the sparse model's validation loss is {:.4} against the dense model's {:.4}",
        s.last_val_loss, d.last_val_loss
    );
    let horizon = steps_run.map_or(String::new(), |n| format!(" within {n} steps"));
    Some(match t.lead_changes.as_slice() {
        [] if ahead => format!(
            "Validation curves: the sparse model was ahead at every eval{horizon} (no crossover); {end}."
        ),
        [] => format!(
            "Validation curves: the sparse model never pulled ahead{horizon} (no crossover); {end}."
        ),
        changes => {
            const SHOWN: usize = 4;
            let mut list: Vec<String> = changes
                .iter()
                .take(SHOWN)
                .map(|c| {
                    format!(
                        "step {:.0} (sparse {} after it)",
                        c.steps,
                        if c.sparse_ahead_after {
                            "ahead"
                        } else {
                            "behind"
                        }
                    )
                })
                .collect();
            if changes.len() > SHOWN {
                list.push(format!("{} more", changes.len() - SHOWN));
            }
            format!(
                "Validation curves cross at {}; {end}, so the sparse model {} at the end of this run.",
                list.join(", "),
                if ahead { "leads" } else { "is behind" }
            )
        }
    })
}

/// What the intervals cover, in one sentence.
pub fn interval_note(t: &ToTarget) -> String {
    let val = if t.val_sequences > 0 {
        format!(
            "over the validation loss's noise (the {} eval sequences resampled, the same for every eval and both models) and",
            t.val_sequences
        )
    } else {
        "(this folder did not record the eval sequences' losses, so the validation loss's noise is left out) over only".into()
    };
    format!(
        "Target: {} ({}). Intervals: 95% percentile bootstrap ({} replicates) {val} the energy and time per token (the measurement windows resampled); they do not cover seed-to-seed variation of training (docs/report.md).",
        num(t.target_loss),
        t.target_from,
        t.replicates
    )
}

pub const TABLE_HEADER: [&str; 6] = [
    "model",
    "joules [95% CI]",
    "idle-subtracted J",
    "FLOPs",
    "tokens trained",
    "seconds (training steps)",
];

/// One row per model and the sparse / dense row.
pub fn table_rows(t: &ToTarget) -> Vec<Vec<String>> {
    let cell = |x: Option<&Interval>, show: fn(f64) -> String| {
        x.map_or("–".into(), |x| with_interval(x, show))
    };
    let mut rows: Vec<Vec<String>> = t
        .models
        .iter()
        .map(|m| {
            if !m.reached {
                return vec![
                    format!("{} ({}): not reached", m.model, m.role),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                ];
            }
            vec![
                format!("{} ({})", m.model, m.role),
                cell(m.joules.as_ref(), num),
                cell(m.joules_idle_subtracted.as_ref(), num),
                cell(m.flops.as_ref(), count),
                cell(m.tokens.as_ref(), count),
                cell(m.seconds.as_ref(), num),
            ]
        })
        .collect();
    if let Some(r) = &t.ratio {
        rows.push(vec![
            "sparse / dense".into(),
            cell(r.joules.as_ref(), num),
            cell(r.joules_idle_subtracted.as_ref(), num),
            cell(r.flops.as_ref(), num),
            cell(r.tokens.as_ref(), num),
            cell(r.seconds.as_ref(), num),
        ]);
    }
    rows
}

/// The first answer's sentences, in order.
pub fn sentences(t: &ToTarget, steps_run: Option<u64>) -> Vec<String> {
    let mut v: Vec<String> = [headline(t), verdict(t), crossover(t, steps_run)]
        .into_iter()
        .flatten()
        .collect();
    v.push(format!("Energy: {}. {}", energy_label(t), interval_note(t)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{LeadChange, TargetRatio};

    fn iv(mean: f64, lo: f64, hi: f64) -> Interval {
        Interval {
            mean,
            ci95: [lo, hi],
            open_above: false,
        }
    }

    fn model(role: Role, joules: f64) -> ModelToTarget {
        ModelToTarget {
            model: format!("{role:?}").to_lowercase(),
            role,
            reached: true,
            joules: Some(iv(joules, joules * 0.9, joules * 1.1)),
            joules_idle_subtracted: None,
            flops: Some(iv(1e12, 1e12, 1e12)),
            tokens: Some(iv(1e5, 1e5, 1e5)),
            seconds: Some(iv(10.0, 9.0, 11.0)),
            steps: Some(100.0),
            reached_share: 1.0,
            best_val_loss: 2.0,
            last_val_loss: 2.0,
        }
    }

    fn target(ratio: Interval, ahead: bool, changes: Vec<LeadChange>) -> ToTarget {
        ToTarget {
            target_loss: 2.5,
            target_from: crate::runlog::TARGET_LOWEST_REACHED.into(),
            source: Some(crate::vocab::EnergySource::Rapl),
            scope: Some("package".into()),
            models: vec![model(Role::Sparse, 120.0), model(Role::Dense, 100.0)],
            ratio: Some(TargetRatio {
                joules: Some(ratio),
                joules_idle_subtracted: None,
                flops: None,
                tokens: None,
                seconds: None,
            }),
            val_sequences: 16,
            replicates: 2000,
            lead_changes: changes,
            sparse_ahead_at_end: Some(ahead),
        }
    }

    #[test]
    fn the_headline_names_both_joules_the_ratio_and_the_source() {
        let t = target(iv(1.2, 1.1, 1.3), false, vec![]);
        let h = headline(&t).unwrap();
        assert!(
            h.starts_with("To reach validation loss 2.5000 nats/token"),
            "{h}"
        );
        assert!(h.contains("used 120 [108, 132] J against the dense model's (dense) 100 [90.0, 110] J: ratio 1.20 [1.10, 1.30] (rapl;"), "{h}");
    }

    #[test]
    fn a_sparse_model_that_needs_more_energy_is_said_to_lose_and_an_overlap_is_undecided() {
        let lose = target(iv(1.2, 1.1, 1.3), false, vec![]);
        assert!(verdict(&lose).unwrap().contains("sparse model loses"));
        let win = target(iv(0.8, 0.7, 0.9), true, vec![]);
        assert!(verdict(&win).unwrap().contains("less energy"));
        let open = target(iv(1.0, 0.9, 1.1), true, vec![]);
        assert!(verdict(&open).unwrap().contains("does not establish"));
        assert!(crossover(&lose, Some(200))
            .unwrap()
            .contains("never pulled ahead within 200 steps (no crossover)"));
        let crossed = target(
            iv(1.2, 1.1, 1.3),
            false,
            vec![LeadChange {
                steps: 150.4,
                sparse_ahead_after: false,
            }],
        );
        let c = crossover(&crossed, None).unwrap();
        assert!(
            c.contains("cross at step 150 (sparse behind after it)")
                && c.contains("is behind at the end"),
            "{c}"
        );
    }

    #[test]
    fn an_estimate_is_labelled_as_not_measured() {
        let mut t = target(iv(1.2, 1.1, 1.3), false, vec![]);
        t.source = Some(crate::vocab::EnergySource::Estimate);
        assert!(headline(&t).unwrap().contains("estimate (not measured)"));
    }
}
