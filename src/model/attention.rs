//! Causal multi-head self-attention with an optional key/value cache for generation.

use candle_core::{DType, Device, Result, Tensor};

use super::fused;
use super::layers::{softmax_one_pass, Linear};
use crate::accounting::flops::elementwise::SOFTMAX_FLOPS_PER_ELEMENT;
use crate::accounting::{Component, FlopCount};

#[derive(Clone, Debug)]
pub struct Attention {
    /// Q, K and V projections fused into one (d_model, 3 x heads x d_head) matmul.
    pub qkv: Linear,
    pub out: Linear,
    pub heads: usize,
    pub d_head: usize,
}

/// Keys and values of one layer for the positions seen so far, each a (batch, heads, capacity,
/// d_head) buffer filled up to `len`. The buffers are allocated at the first pass with room for
/// `capacity` positions (the profile's seq_len); each later pass writes only its new positions,
/// so a decoding step copies one position per head rather than the whole cache.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
    capacity: usize,
}

impl LayerCache {
    /// An empty cache with room for `capacity` positions.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k` and `v` (batch, heads, new, d_head) and returns views of all the positions
    /// cached so far.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(2)?;
        if self.len + new > self.capacity {
            candle_core::bail!(
                "KV cache: {} positions cached + {new} new exceed its capacity of {}",
                self.len,
                self.capacity
            );
        }
        let (kc, vc) = match (&self.k, &self.v) {
            (Some(kc), Some(vc)) => (kc, vc),
            _ => {
                let (b, h, _, dh) = k.dims4()?;
                let shape = (b, h, self.capacity, dh);
                let kc = self.k.insert(Tensor::zeros(shape, k.dtype(), k.device())?);
                let vc = self.v.insert(Tensor::zeros(shape, v.dtype(), v.device())?);
                (&*kc, &*vc)
            }
        };
        kc.slice_set(k, 2, self.len)?;
        vc.slice_set(v, 2, self.len)?;
        self.len += new;
        Ok((kc.narrow(2, 0, self.len)?, vc.narrow(2, 0, self.len)?))
    }
}

/// An additive causal mask for `new` queries that start at absolute position `past` and attend
/// to `past + new` keys: 0 where a key is visible, -inf where it is in the future.
pub fn causal_mask(new: usize, past: usize, device: &Device) -> Result<Tensor> {
    let keys = past + new;
    let mask: Vec<f32> = (0..new)
        .flat_map(|i| (0..keys).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (new, keys), device)
}

impl Attention {
    /// Adds the FLOPs of `queries` query positions over `keys` keys each (scores, softmax and
    /// the weighted sum of values, as executed: the full square, masked after) to `f`.
    fn count_scores(&self, queries: usize, keys: usize, f: &mut FlopCount) {
        let (h, dh) = (self.heads, self.d_head);
        f.add_matmul(Component::AttnScores, h * queries, dh, keys);
        f.add(
            Component::NormAct,
            SOFTMAX_FLOPS_PER_ELEMENT * (h * queries * keys) as f64,
        );
        f.add_matmul(Component::AttnScores, h * queries, keys, dh);
    }

    /// The QKV and the output projection.
    pub fn matrices(&self) -> impl Iterator<Item = &Tensor> {
        [&self.qkv.w, &self.out.w].into_iter()
    }

    /// Adds the FLOPs of the fused attention half over `batch` sequences of `seq` positions
    /// (projections included) to `f`: its scores and weighted values cover the causal blocks it
    /// computes ([`fused::executed_score_pairs`]), not the full square; its softmax writes the
    /// whole square.
    pub fn count_fused(&self, batch: usize, seq: usize, f: &mut FlopCount) {
        let (rows, h, dh) = (batch * seq, self.heads, self.d_head);
        f.add_matmul(
            Component::AttnProj,
            rows,
            self.qkv.in_dim(),
            self.qkv.out_dim(),
        );
        let pairs = batch * h * fused::executed_score_pairs(seq);
        // q @ k^T over the pairs, then p @ v over the same pairs: 2 x d_head FLOPs a pair each.
        f.add(Component::AttnScores, 2.0 * 2.0 * (pairs * dh) as f64);
        f.add(
            Component::NormAct,
            SOFTMAX_FLOPS_PER_ELEMENT * (h * rows * seq) as f64,
        );
        f.add_matmul(
            Component::AttnProj,
            rows,
            self.out.in_dim(),
            self.out.out_dim(),
        );
    }

    /// `x` is (batch x new, d_model) for `batch` sequences of `new` positions each. With a cache,
    /// the new keys and values are appended to it and the queries attend to all of them. `mask` is
    /// [`causal_mask`] for the pass (the same for every layer), `None` for a single new position,
    /// which sees every cached key and itself.
    pub fn forward(
        &self,
        x: &Tensor,
        batch: usize,
        new: usize,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache>,
        f: &mut FlopCount,
    ) -> Result<Tensor> {
        let (h, dh) = (self.heads, self.d_head);
        let qkv = self.qkv.forward(x, Component::AttnProj, f)?;
        let keys = cache.as_ref().map_or(0, |c| c.len()) + new;
        self.count_scores(batch * new, keys, f);
        let ctx = match cache {
            None if fused::applies(&qkv) => fused::causal_attention(&qkv, batch, new, h, dh)?,
            None => composed_attention(&qkv, batch, new, h, dh, mask)?,
            Some(c) => {
                let (q, k, v) = split_heads(&qkv, batch, new, h, dh)?;
                let (k, v) = c.append(&k, &v)?;
                attend(&q, &k, &v, mask, batch, new)?
            }
        };
        self.out.forward(&ctx, Component::AttnProj, f)
    }
}

/// (batch x new, 3 x h x dh) -> q, k, v, each (batch, h, new, dh).
fn split_heads(
    qkv: &Tensor,
    batch: usize,
    new: usize,
    h: usize,
    dh: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    // (b, t, 3, h, dh) -> (3, b, h, t, dh)
    let qkv = qkv
        .reshape((batch, new, 3, h, dh))?
        .permute((2, 0, 3, 1, 4))?;
    Ok((
        qkv.get(0)?.contiguous()?,
        qkv.get(1)?.contiguous()?,
        qkv.get(2)?.contiguous()?,
    ))
}

/// Softmax attention of q over k and v, each (batch, h, positions, dh), with an additive mask;
/// returns (batch x new, h x dh).
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    batch: usize,
    new: usize,
) -> Result<Tensor> {
    let (h, dh) = (q.dim(1)?, q.dim(3)?);
    // The softmax in f32 whatever the model's dtype: in bf16 (8 significant bits) its sum over a
    // thousand keys loses the small probabilities.
    let scores =
        (q.matmul(&k.transpose(2, 3)?)? * (1.0 / (dh as f64).sqrt()))?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = softmax_one_pass(&scores)?.to_dtype(v.dtype())?;
    let ctx = probs.matmul(v)?; // (b, h, t, dh)
    ctx.transpose(1, 2)?.reshape((batch * new, h * dh))
}

/// Causal attention without a cache from candle's ops: the path off the CPU, and the fused
/// kernel's reference.
pub fn composed_attention(
    qkv: &Tensor,
    batch: usize,
    new: usize,
    h: usize,
    dh: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (q, k, v) = split_heads(qkv, batch, new, h, dh)?;
    attend(&q, &k, &v, mask, batch, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appending a prefill and then single positions gives what concatenating them gives, and a
    /// position beyond the capacity is an error that leaves the cache as it was.
    #[test]
    fn cache_appends_in_place_up_to_its_capacity() {
        let dev = Device::Cpu;
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let part = |t: usize, seed: f32| {
            let v: Vec<f32> = (0..2 * 3 * t * 4).map(|i| seed + i as f32).collect();
            Tensor::from_vec(v, (2, 3, t, 4), &dev).unwrap()
        };
        let parts = [part(3, 0.0), part(1, 100.0), part(1, 200.0)];
        let mut c = LayerCache::with_capacity(5);
        let mut seen: Vec<Tensor> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let (k, v) = c.append(p, &(p * 2.0).unwrap()).unwrap();
            seen.push(p.clone());
            let want = Tensor::cat(&seen, 2).unwrap();
            assert_eq!(c.len(), want.dim(2).unwrap(), "after part {i}");
            assert_eq!(values(&k), values(&want));
            assert_eq!(values(&v), values(&(want * 2.0).unwrap()));
        }
        assert!(c.append(&parts[1], &parts[1]).is_err());
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn mask_hides_exactly_the_future() {
        let m = causal_mask(2, 3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // query 0 is position 3 (sees keys 0..=3), query 1 is position 4 (sees all 5).
        assert_eq!(m[0][..4], [0.0; 4]);
        assert!(m[0][4].is_infinite());
        assert_eq!(m[1], vec![0.0; 5]);
    }
}
