//! Small models and token batches shared by the model tests.

use candle_core::Tensor;
use sparsewatt::model::Model;
use sparsewatt::profile::{load_model, ModelProfile};

/// A shipped profile made smaller (32 positions) so the tests stay fast; same structure.
pub fn small(name: &str) -> ModelProfile {
    load_model(name)
        .unwrap()
        .with_overrides(None, Some(32))
        .unwrap()
}

/// A deterministic (batch, seq) batch of byte tokens, different for each `salt`.
pub fn ids(model: &Model, batch: usize, seq: usize, salt: u32) -> Tensor {
    let toks: Vec<u32> = (0..(batch * seq) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt) >> 7) % 256)
        .collect();
    model.ids(&toks, batch).unwrap()
}
