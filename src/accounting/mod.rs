//! Compute accounting: analytic FLOPs, parameters and bytes per component for any profile, and the
//! executed-FLOP tally the real model fills in as it runs. Conventions: docs/accounting.md.

pub mod analytic;
pub mod bytes;
pub mod executed;
mod expert_load;
pub mod flops;
pub mod matched;
pub mod params;
pub mod summary;
pub mod table;

pub use analytic::{
    decode_flops_per_token, decode_flops_per_token_avg, forward_flops_per_token,
    forward_flops_per_token_with, prefill_flops_per_token, train_flops_per_token, AttnCounting,
    TRAIN_FORWARD_MULTIPLE,
};
pub use bytes::{
    bytes_per_token, expected_experts_touched, kv_cache_bytes_per_position, tokens_per_step,
    weights_read_per_step, ByteCount,
};
pub use executed::{
    cap_expert_tokens, capacity, check_expert_tokens, even_expert_tokens, executed_decode_flops,
    executed_forward_flops, executed_forward_flops_with, executed_prefill_flops, expert_capacity,
    AttentionRun,
};
pub use expert_load::{add_expert_tokens, sum_expert_tokens};
pub use flops::{Component, FlopCount};
pub use matched::{matched_dense, Baseline};
pub use params::{
    attn_matrices, attn_params, expert_params, ffn_params, params, ComponentParams, ParamCount,
};
pub use summary::{AccountOptions, Summary};

/// Errors of the accounting module.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// Per-expert token counts that do not fit the profile.
    #[error("expert token counts: {0}")]
    ExpertTokens(String),
}
