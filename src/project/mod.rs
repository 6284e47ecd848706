//! Projections onto hardware: roofline, cluster training time, energy, carbon, calibration.
