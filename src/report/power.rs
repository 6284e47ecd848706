//! Power over time from the sampler's records, averaged into at most [`MAX_POINTS`] points so a long
//! run's chart and JSON stay small.

use crate::runlog::Record;
use crate::stats::estimate;

use super::document::{Figure, PowerSeries};

pub const MAX_POINTS: usize = 400;

pub fn power_series(records: &[Record], scope: &str) -> PowerSeries {
    let samples: Vec<(f64, f64, &str)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Sample(s) => s
                .power_w
                .filter(|p| p.is_finite())
                .map(|p| (s.t_s, p, s.source.label())),
            _ => None,
        })
        .collect();
    let source = samples.first().map(|s| s.2.to_string());
    let per_point = samples.len().div_ceil(MAX_POINTS).max(1);
    let points = samples
        .chunks(per_point)
        .map(|c| {
            let n = c.len() as f64;
            [
                c.iter().map(|s| s.0).sum::<f64>() / n,
                c.iter().map(|s| s.1).sum::<f64>() / n,
            ]
        })
        .collect();
    let watts: Vec<f64> = samples.iter().map(|s| s.1).collect();
    PowerSeries {
        // A plain mean: consecutive samples are correlated, so a t interval would claim too much.
        mean_power_w: estimate(&watts)
            .zip(source.as_deref())
            .map(|(e, src)| Figure::new(e.mean, "W", src).with_scope(Some(scope))),
        source,
        scope: (!samples.is_empty()).then(|| scope.to_string()),
        samples: samples.len(),
        points,
    }
}
