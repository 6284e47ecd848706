//! Measurement windows: joules between a `begin` and an `end`, and the trapezoid rule used
//! where a sensor has power but no energy counter.

use std::time::Instant;

use super::MeterError;
use crate::vocab::EnergySource;

/// The meter's energy position at the start of a window, from [`super::Meter::begin`].
#[derive(Debug)]
pub struct Window {
    pub(super) start: Instant,
    /// Joules at the start, or why the start could not be read.
    pub(super) start_j: Result<Position, String>,
}

/// Where a window's joules come from: the sensor's counter, or the meter's running trapezoid
/// integral of power readings. A window's begin and end must have the same kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Position {
    Counter(f64),
    Integral(f64),
}

impl Position {
    /// Joules from `self` to `end`.
    pub(super) fn joules_to(self, end: Position) -> Result<f64, MeterError> {
        match (self, end) {
            (Position::Counter(a), Position::Counter(b))
            | (Position::Integral(a), Position::Integral(b)) => Ok(b - a),
            _ => Err(MeterError::Window(
                "the sensor switched between its energy counter and power readings".to_string(),
            )),
        }
    }
}

/// Energy over one window, with its source and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowEnergy {
    pub joules: f64,
    pub seconds: f64,
    pub source: EnergySource,
    pub scope: String,
}

impl WindowEnergy {
    /// Mean power over the window, watts; `None` for a window of no time.
    pub fn mean_power_w(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.joules / self.seconds)
    }
}

/// Energy, joules, of a power series `(t_s, power_w)` in time order, by the trapezoid rule.
pub fn trapezoid_j(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| trapezoid_step_j(w[0], w[1]))
        .sum()
}

/// Joules between two power readings `(t_s, power_w)`, power assumed linear in between.
pub fn trapezoid_step_j(a: (f64, f64), b: (f64, f64)) -> f64 {
    (b.0 - a.0) * (a.1 + b.1) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_of_a_linear_ramp_is_exact() {
        // P(t) = 100 + 50 t over [0, 4]: integral 400 + 25 x 16 = 800 J.
        let pts: Vec<(f64, f64)> = (0..=8)
            .map(|i| {
                let t = i as f64 * 0.5;
                (t, 100.0 + 50.0 * t)
            })
            .collect();
        assert!((trapezoid_j(&pts) - 800.0).abs() < 1e-9);
    }

    #[test]
    fn trapezoid_of_uneven_steps_matches_hand_computation() {
        // (0,10)-(1,20): 15 J; (1,20)-(3,20): 40 J; (3,20)-(3.5,0): 5 J.
        let pts = [(0.0, 10.0), (1.0, 20.0), (3.0, 20.0), (3.5, 0.0)];
        assert!((trapezoid_j(&pts) - 60.0).abs() < 1e-12);
        assert_eq!(trapezoid_j(&pts[..1]), 0.0);
        assert_eq!(trapezoid_j(&[]), 0.0);
    }

    #[test]
    fn positions_of_different_kinds_do_not_subtract() {
        assert_eq!(
            Position::Counter(2.0)
                .joules_to(Position::Counter(5.5))
                .unwrap(),
            3.5
        );
        assert!(Position::Counter(2.0)
            .joules_to(Position::Integral(5.0))
            .is_err());
    }
}
