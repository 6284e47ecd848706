//! GLaM's data-efficiency view (Du et al. 2022, section 6): loss against tokens and FLOPs for both
//! models, and the tokens, FLOPs and joules each needed to first reach the same loss.

use std::collections::BTreeMap;

use crate::runlog::Record;
use crate::vocab::EnergySource;
use crate::vocab::{Phase, Role};

use super::document::{source, DataEfficiency, Figure, LossCurve, LossPoint, Reach, SameLoss};

/// Loss curves from the eval records; from the train steps' own losses when the run has no eval.
pub fn data_efficiency(records: &[Record], energy: EnergySource) -> DataEfficiency {
    let mut evals: BTreeMap<(Role, String), Vec<LossPoint>> = BTreeMap::new();
    for r in records {
        if let Record::Eval(e) = r {
            evals
                .entry((e.role, e.model.clone()))
                .or_default()
                .push(LossPoint {
                    train_tokens: e.train_tokens,
                    train_flops: e.train_flops,
                    train_joules: e.train_joules,
                    loss_nats: e.val_loss,
                });
        }
    }
    let (basis, curves) = if evals.is_empty() {
        ("training loss", training_curves(records))
    } else {
        ("validation loss", evals)
    };
    let curves: Vec<LossCurve> = curves
        .into_iter()
        .map(|((role, model), mut points)| {
            points.sort_by_key(|p| p.train_tokens);
            LossCurve {
                role,
                model,
                points,
            }
        })
        .collect();
    DataEfficiency {
        basis: basis.into(),
        same_loss: same_loss(&curves, energy, basis),
        curves,
    }
}

/// Cumulative tokens, FLOPs and joules of every train step (warm-up included: the model learns
/// during warm-up too), with the step's training loss.
fn training_curves(records: &[Record]) -> BTreeMap<(Role, String), Vec<LossPoint>> {
    let mut out: BTreeMap<(Role, String), Vec<LossPoint>> = BTreeMap::new();
    let mut totals: BTreeMap<(Role, String), (u64, f64, Option<f64>)> = BTreeMap::new();
    for r in records {
        let Record::Step(s) = r else { continue };
        if s.phase != Phase::Train {
            continue;
        }
        let key = (s.role, s.model.clone());
        let t = totals.entry(key.clone()).or_insert((0, 0.0, Some(0.0)));
        t.0 += s.tokens;
        t.1 += s.flops;
        t.2 = match (t.2, &s.energy) {
            (Some(j), Some(e)) => Some(j + e.joules),
            _ => None,
        };
        if let Some(loss) = s.loss.filter(|l| l.is_finite()) {
            out.entry(key).or_default().push(LossPoint {
                train_tokens: t.0,
                train_flops: t.1,
                train_joules: t.2,
                loss_nats: loss,
            });
        }
    }
    out
}

/// Where a curve first reaches `target` (`runlog::first_reach`, the same crossing as
/// `summary.json`'s `to_target`): (tokens, FLOPs, joules) interpolated between the evals around it.
fn first_reach(points: &[LossPoint], target: f64) -> Option<(f64, f64, Option<f64>)> {
    let losses: Vec<f64> = points.iter().map(|p| p.loss_nats).collect();
    let x = crate::runlog::first_reach(&losses, target)?;
    let col = |f: fn(&LossPoint) -> f64| -> f64 {
        crate::runlog::interpolate_at(&points.iter().map(f).collect::<Vec<f64>>(), x)
    };
    let joules = points
        .iter()
        .map(|p| p.train_joules)
        .collect::<Option<Vec<f64>>>()
        .map(|j| crate::runlog::interpolate_at(&j, x));
    Some((
        col(|p| p.train_tokens as f64),
        col(|p| p.train_flops),
        joules,
    ))
}

fn same_loss(curves: &[LossCurve], energy: EnergySource, basis: &str) -> Option<SameLoss> {
    let sparse = curves.iter().find(|c| c.role == Role::Sparse)?;
    let dense = curves.iter().find(|c| c.role == Role::Dense)?;
    let best = |c: &LossCurve| c.points.iter().map(|p| p.loss_nats).reduce(f64::min);
    // The lowest loss both reached: the higher of the two minima.
    let target = best(sparse)?.max(best(dense)?);
    let reach = |c: &LossCurve| -> Option<Reach> {
        let (tokens, flops, joules) = first_reach(&c.points, target)?;
        Some(Reach {
            role: c.role,
            model: c.model.clone(),
            tokens: Figure::new(tokens, "tokens", source::INTERPOLATED),
            flops: Figure::new(flops, "FLOPs", source::INTERPOLATED),
            joules: joules.map(|j| Figure::new(j, "J", energy.label())),
        })
    };
    let (s, d) = (reach(sparse)?, reach(dense)?);
    let ratio = |a: f64, b: f64, src: &str| {
        (b > 0.0).then(|| Figure::new(a / b, "ratio", &format!("ratio of {src} figures")))
    };
    Some(SameLoss {
        target_loss: Figure::new(target, "nats/token", basis),
        ratio_tokens: ratio(s.tokens.value, d.tokens.value, source::INTERPOLATED),
        ratio_flops: ratio(s.flops.value, d.flops.value, source::INTERPOLATED),
        ratio_joules: match (&s.joules, &d.joules) {
            (Some(a), Some(b)) => ratio(a.value, b.value, energy.label()),
            _ => None,
        },
        reach: vec![s, d],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tokens: u64, loss: f64) -> LossPoint {
        LossPoint {
            train_tokens: tokens,
            train_flops: tokens as f64 * 10.0,
            train_joules: Some(tokens as f64 * 0.5),
            loss_nats: loss,
        }
    }

    #[test]
    fn the_crossing_is_interpolated_between_the_evals_around_it() {
        let pts = [p(100, 4.0), p(200, 3.0), p(300, 2.0)];
        // 2.5 lies halfway between 3.0 (200 tokens) and 2.0 (300 tokens).
        let (t, f, j) = first_reach(&pts, 2.5).unwrap();
        assert!((t - 250.0).abs() < 1e-9);
        assert!((f - 2500.0).abs() < 1e-9);
        assert!((j.unwrap() - 125.0).abs() < 1e-9);
    }

    #[test]
    fn a_target_never_reached_has_no_crossing_and_one_reached_first_is_the_first_point() {
        let pts = [p(100, 4.0), p(200, 3.0)];
        assert!(first_reach(&pts, 2.0).is_none());
        assert_eq!(first_reach(&pts, 5.0).unwrap().0, 100.0);
    }
}
