//! Energy to a target: hand-worked curves and their intervals.

use super::*;
use crate::runlog::{test_energy, test_step, Energy};
use crate::runlog::{EvalRecord, StepRecord};

fn eval(role: Role, steps: u64, losses: &[f64]) -> Record {
    Record::Eval(EvalRecord {
        t_s: 0.0,
        model: format!("{role:?}"),
        role,
        train_steps: steps,
        train_tokens: 0,
        train_flops: 0.0,
        train_joules: None,
        val_loss: losses.iter().sum::<f64>() / losses.len() as f64,
        val_losses: losses.to_vec(),
    })
}

fn train(role: Role, step: u64, joules: f64) -> Record {
    Record::Step(StepRecord {
        step,
        warmup: step == 0,
        tokens: 100,
        seconds: 0.5,
        flops: 1e6,
        energy: Some(Energy {
            idle_joules: Some(0.25 * joules),
            ..test_energy(joules)
        }),
        ..test_step(role, Phase::Train)
    })
}

#[test]
fn the_crossing_is_interpolated_between_the_evals_around_it() {
    // 2.5 lies halfway between 3.0 (index 1) and 2.0 (index 2).
    let x = first_reach(&[4.0, 3.0, 2.0], 2.5).unwrap();
    assert!((x - 1.5).abs() < 1e-12);
    assert!((at(&[100.0, 200.0, 300.0], x) - 250.0).abs() < 1e-9);
    assert!(first_reach(&[4.0, 3.0], 2.0).is_none());
    assert_eq!(first_reach(&[4.0, 3.0], 5.0), Some(0.0));
    assert_eq!(at(&[1.0, 2.0], 1.0), 2.0);
}

/// Two models, 4 steps each, evals at 0, 2 and 4 steps on two sequences.
fn run(sparse_j: f64) -> Vec<Record> {
    let mut r = Vec::new();
    for (role, j, evals) in [
        (Role::Sparse, sparse_j, [[5.0, 5.0], [3.0, 3.2], [2.0, 2.2]]),
        (Role::Dense, 1.0, [[5.0, 5.0], [3.8, 4.0], [2.9, 3.1]]),
    ] {
        for s in 0..4 {
            r.push(train(role, s, j));
        }
        for (k, l) in evals.iter().enumerate() {
            r.push(eval(role, 2 * k as u64, l));
        }
    }
    r
}

#[test]
fn the_default_target_is_the_lowest_loss_both_reached_and_costs_follow_the_records() {
    let t = to_target(&run(2.0), None).unwrap();
    // Dense's best is 3.0 (mean of 2.9 and 3.1); sparse crosses 3.0 between 2 steps (3.1)
    // and 4 steps (2.1): at 2 + 2 x (3.1 - 3.0) / (3.1 - 2.1) = 2.2 steps.
    assert!((t.target_loss - 3.0).abs() < 1e-12);
    assert_eq!(t.target_from, TARGET_LOWEST_REACHED);
    let s = t.model(Role::Sparse).unwrap();
    let x = 2.2;
    assert!((s.steps.unwrap() - x).abs() < 1e-9);
    // Independent: x steps of 100 tokens, 1e6 FLOPs, 2 J (0.5 J idle), 0.5 s each.
    assert!((s.tokens.unwrap().mean - 100.0 * x).abs() < 1e-9);
    assert!((s.flops.unwrap().mean - 1e6 * x).abs() < 1e-3);
    assert!((s.joules.unwrap().mean - 2.0 * x).abs() < 1e-9);
    assert!((s.joules_idle_subtracted.unwrap().mean - 1.5 * x).abs() < 1e-9);
    assert!((s.seconds.unwrap().mean - 0.5 * x).abs() < 1e-9);
    let d = t.model(Role::Dense).unwrap();
    assert!((d.joules.unwrap().mean - 4.0).abs() < 1e-9);
    let r = t.ratio.as_ref().unwrap().joules.unwrap();
    assert!((r.mean - 2.0 * x / 4.0).abs() < 1e-9);
    assert!(r.ci95[0] <= r.mean && r.mean <= r.ci95[1]);
    assert_eq!(t.val_sequences, 2);
    assert_eq!(t.sparse_ahead_at_end, Some(true));
    assert!(t.lead_changes.is_empty());
}

#[test]
fn the_interval_covers_the_eval_sequences_spread_and_a_target_never_reached_has_no_figures() {
    let t = to_target(&run(1.0), Some((2.5, TARGET_GIVEN))).unwrap();
    let s = t.model(Role::Sparse).unwrap();
    assert!(s.reached);
    // Resampling the two sequences: the curve at 2 steps is 3.0, 3.1 or 3.2, at 4 steps
    // 2.0, 2.1 or 2.2, so the crossing of 2.5 lies between these brute-force extremes.
    let cross = |l2: f64, l4: f64| 2.0 + 2.0 * (l2 - 2.5) / (l2 - l4);
    let (lo, hi) = (cross(3.0, 2.0), cross(3.2, 2.2));
    assert!(lo < hi);
    // With two sequences a resample is (0, 0), (0, 1) or (1, 0), or (1, 1), with chances 1/4,
    // 1/2 and 1/4: the 2.5th and 97.5th percentiles are the two extremes, exactly.
    let tokens = s.tokens.unwrap();
    assert!((tokens.ci95[0] - 100.0 * lo).abs() < 1e-9, "{tokens:?}");
    assert!((tokens.ci95[1] - 100.0 * hi).abs() < 1e-9, "{tokens:?}");
    assert!((tokens.mean - 100.0 * cross(3.1, 2.1)).abs() < 1e-9);
    assert_eq!(s.reached_share, 1.0);
    let d = t.model(Role::Dense).unwrap();
    assert!(!d.reached && d.joules.is_none() && d.tokens.is_none());
    assert!(t.ratio.is_none());
    let json = serde_json::to_value(&t).unwrap();
    assert!(json["models"][1].get("joules").is_none());
}

#[test]
fn energy_noise_widens_the_joules_interval_but_not_the_tokens() {
    // No eval sequences recorded: only the windows' spread moves the figures.
    let mut r = run(1.0);
    for rec in &mut r {
        match rec {
            Record::Eval(e) => e.val_losses.clear(),
            Record::Step(s) if s.role == Role::Sparse => {
                let e = s.energy.as_mut().unwrap();
                e.joules = if s.step % 2 == 0 { 0.5 } else { 1.5 };
            }
            _ => {}
        }
    }
    let t = to_target(&r, None).unwrap();
    assert_eq!(t.val_sequences, 0);
    let s = t.model(Role::Sparse).unwrap();
    let tok = s.tokens.unwrap();
    assert_eq!(tok.ci95, [tok.mean, tok.mean]);
    let j = s.joules.unwrap();
    assert!(j.ci95[0] < j.mean && j.mean < j.ci95[1], "{j:?}");
}

#[test]
fn curves_that_cross_give_the_step_of_the_change() {
    let mut r = run(1.0);
    // Dense ahead at 2 steps (2.5 against sparse 3.1), behind at 4 (2.9 against 2.1).
    for rec in &mut r {
        if let Record::Eval(e) = rec {
            if e.role == Role::Dense && e.train_steps == 2 {
                e.val_loss = 2.5;
                e.val_losses = vec![2.5, 2.5];
            }
        }
    }
    let t = to_target(&r, None).unwrap();
    assert_eq!(t.lead_changes.len(), 1);
    let c = &t.lead_changes[0];
    // diff 0.6 at 2 steps, -0.9 at 4: zero at 2 + 2 x 0.6 / 1.5.
    assert!((c.steps - 2.8).abs() < 1e-9 && c.sparse_ahead_after);
}
