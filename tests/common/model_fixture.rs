//! Small models and token batches shared by the model tests.

use candle_core::Tensor;
use sparsewatt::model::{cross_entropy, Forward, Model};
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

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap()
}

/// A forward pass over a fixed batch and its training loss (cross-entropy plus the balancing
/// loss).
pub fn training_forward(m: &Model) -> (Forward, Tensor) {
    let x = ids(m, 4, 32, 2);
    let targets = ids(m, 1, 128, 3).flatten_all().unwrap();
    let fwd = m.forward(&x).unwrap();
    let loss =
        (cross_entropy(&fwd.logits, &targets).unwrap() + fwd.aux_loss.clone().unwrap()).unwrap();
    (fwd, loss)
}

/// One decode step after an 8-token prompt in the KV cache gives the logits of recomputing all
/// nine positions, to 1e-4.
pub fn assert_cached_step_equals_recomputation(m: &Model, prompt: &[u32]) {
    let mut cache = m.new_cache();
    m.forward_cached(&m.ids(&prompt[..8], 1).unwrap(), &mut cache)
        .unwrap();
    let step = m
        .forward_cached(&m.ids(&prompt[8..9], 1).unwrap(), &mut cache)
        .unwrap();
    let full = m.forward(&m.ids(&prompt[..9], 1).unwrap()).unwrap();
    let last = full.logits.get(8).unwrap().unsqueeze(0).unwrap();
    let d = max_abs_diff(&step.logits, &last);
    assert!(d < 1e-4, "cached step against recomputation: {d}");
}
