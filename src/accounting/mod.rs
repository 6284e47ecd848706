//! Compute accounting: analytic FLOPs, parameters and bytes per component for any profile, and the
//! executed-FLOP tally the real model fills in as it runs.

pub mod flops;

pub use flops::{Component, FlopCount};
