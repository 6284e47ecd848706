//! Gated feed-forward units (GEGLU, SwiGLU) through the whole model: the sparse experts against
//! brute force, the executed FLOPs against the shapes, the parameters against the accounting, and
//! the gradients the fused ops give against finite differences of the loss.

use candle_core::{Device, Tensor};
use sparsewatt::accounting::{executed_forward_flops_with, params, AttentionRun, Component};
use sparsewatt::model::{generate, generate_uncached, Model, SampleConfig, CAUSAL_BLOCK};
use sparsewatt::profile::{FfnKind, ModelProfile};

#[path = "common/model_fixture.rs"]
mod model_fixture;
use model_fixture::{
    assert_cached_step_equals_recomputation, ids, max_abs_diff, small, training_forward,
};

/// glam-tiny with GEGLU dense layers (GLaM's) and SwiGLU experts: both gated kinds, both fused
/// ops (the dense block and the experts).
fn gated_tiny() -> ModelProfile {
    ModelProfile {
        ffn: FfnKind::Geglu,
        expert_ffn: FfnKind::Swiglu,
        ..small("glam-tiny")
    }
}

#[test]
fn gated_experts_equal_brute_force_and_the_counts_match_the_accounting() {
    let p = gated_tiny();
    let m = Model::new(&p, &Device::Cpu, 3).unwrap();
    assert_eq!(m.num_params() as f64, params(&p).total);
    assert!(m.vars().contains_key("blocks.0.ffn.gate.w"));
    assert!(m.vars().contains_key("blocks.1.moe.experts.7.gate.w"));

    let x = Tensor::randn(0f32, 1.0, (40, p.d_model), &Device::Cpu).unwrap();
    let (sparse, brute) = m.moe_against_brute_force(1, &x).unwrap();
    assert!(max_abs_diff(&sparse, &brute) < 1e-5);

    let fwd = m.forward(&ids(&m, 2, 32, 5)).unwrap();
    let blocks = AttentionRun::CausalBlocks(CAUSAL_BLOCK);
    let by_shape = executed_forward_flops_with(&p, 2, 32, &fwd.expert_tokens(), blocks);
    for c in Component::ALL {
        let (a, b) = (fwd.flops.get(c), by_shape.get(c));
        assert!((a - b).abs() <= 1e-9 * b.max(1.0), "{c:?}: {a} vs {b}");
    }
}

/// Generation with the KV cache (the dense block fused without a backward pass, the experts on
/// one row) gives the tokens and logits of recomputing the whole sequence.
#[test]
fn gated_cached_generation_equals_full_recomputation() {
    let m = Model::new(&gated_tiny(), &Device::Cpu, 4).unwrap();
    let prompt: Vec<u32> = "Once upon a ".bytes().map(u32::from).collect();
    let cached = generate(&m, &prompt, 12, SampleConfig::greedy())
        .unwrap()
        .tokens;
    let full = generate_uncached(&m, &prompt, 12, SampleConfig::greedy()).unwrap();
    assert_eq!(cached, full);
    assert_cached_step_equals_recomputation(&m, &prompt);
}

/// The directional derivative of the loss along each checked matrix's own gradient, by central
/// differences, equals the gradient's norm: the gate, up and down matrices of a GEGLU dense layer
/// (the fused block) and of a SwiGLU expert (the fused experts op), and the router behind the
/// experts' gates. A direction rather than single entries so that the change in the loss stands
/// well above f32 rounding. Every token takes all 4 experts (top-4 of 4): with top-2 of 8 a
/// perturbation can flip a token's choice of expert, a jump in the loss that no gradient sees.
#[test]
fn gated_gradients_match_finite_differences_of_the_loss() {
    let p = ModelProfile {
        experts: 4,
        top_k: 4,
        ..gated_tiny()
    };
    let m = Model::new(&p, &Device::Cpu, 8).unwrap();
    let (fwd, l) = training_forward(&m);
    let grads = fwd.backward(&l).unwrap();
    let busy = fwd.expert_tokens()[0]
        .iter()
        .enumerate()
        .max_by_key(|(_, &t)| t)
        .map(|(e, _)| e)
        .unwrap();
    let names = [
        "blocks.0.ffn.gate.w".to_string(),
        "blocks.0.ffn.up.w".into(),
        "blocks.0.ffn.down.w".into(),
        format!("blocks.1.moe.experts.{busy}.gate.w"),
        format!("blocks.1.moe.experts.{busy}.up.w"),
        format!("blocks.1.moe.experts.{busy}.down.w"),
        "blocks.1.moe.router.w".into(),
    ];
    for name in names {
        let var = &m.vars()[&name];
        let g = grads.get(var.as_tensor()).unwrap().clone();
        let norm2 = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let dir = (&g / norm2.sqrt()).unwrap();
        let h = 2e-3;
        let original = var.as_tensor().copy().unwrap();
        let at = |step: f64| {
            var.set(&(&original + (&dir * step).unwrap()).unwrap())
                .unwrap();
            training_forward(&m).1.to_scalar::<f32>().unwrap() as f64
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        var.set(&original).unwrap();
        let want = norm2.sqrt();
        let rel = (fd - want).abs() / want;
        assert!(
            rel < 0.02,
            "{name}: finite difference {fd}, gradient norm {want} ({rel})"
        );
        eprintln!("{name}: finite difference {fd:.6e}, autograd {want:.6e}, rel {rel:.2e}");
    }
}
