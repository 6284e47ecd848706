//! The candle model: embeddings, attention, dense FFN, the MoE layer (router, experts, aux loss),
//! generation with a KV cache.
