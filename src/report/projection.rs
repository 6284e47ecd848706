//! Projections of the run's models onto hardware profiles, and this machine's projection against
//! what the run measured.

use crate::runlog::RunData;

use super::document::{PhaseRow, ProjectionSection};

pub fn projections(_run: &RunData, _phases: &[PhaseRow]) -> ProjectionSection {
    ProjectionSection {
        note: Some(
            "Projections are not available in this build (src/project is not built yet).".into(),
        ),
        rows: Vec::new(),
        this_machine: Vec::new(),
    }
}
