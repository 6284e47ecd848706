"""A plain PyTorch GLaM-tiny (or dense-tiny) trained the way `sparsewatt train` trains, on the same
bytes, batches, initial weights, schedule and validation windows: the reference for issue 17's
question whether sparsewatt's MoE learns as a plain implementation does. Not part of the build or
the tests; needs `pip install torch numpy`.

    python3 benches/reference/torch_glam_train.py --data FILE --experts 8 --steps 600 --batch 8
    python3 benches/reference/torch_glam_train.py --data FILE --experts 1 ...   # dense-tiny

What is reproduced from sparsewatt (src/data, src/model): the split (last 5% of the file,
moved to the next line), the SplitMix64 batch sampler and its window draws, the 4 fixed
validation batches, each parameter's initial values (SplitMix64 seeded by FNV-1a of its name,
Box-Muller normals, std 0.02, residual outputs / sqrt(2 layers), position embeddings 0.01), the
tied head, pre-norm layer norm (eps 1e-5), exact GELU, softmax router with renormalised top-2
gates, loss = cross-entropy + 0.01 x mean over MoE layers of E * sum_e f_e P_e, AdamW (0.9,
0.95, eps 1e-8, weight decay 0.1 on every tensor of rank >= 2), warm-up of steps/20 (1..100)
then cosine to a tenth, clipping at 1.0. Prints JSON lines: one per evaluation, then a summary.
"""
import argparse, json, math, time

import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--experts", type=int, default=8)
p.add_argument("--top-k", type=int, default=2)
p.add_argument("--steps", type=int, default=600)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--seed", type=int, default=42)
p.add_argument("--eval-every", type=int, default=100)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--aux", type=float, default=0.01)
p.add_argument("--val-batches", type=int, default=4, help="4 as `train`, 2 as `run`")
p.add_argument("--stop", type=int, default=0, help="stop after this many steps (the schedule "
               "still spans --steps), to follow the start of a long run")
a = p.parse_args()
torch.set_num_threads(a.threads)
V, D, L, H, FF, T = 256, 256, 4, 4, 1024, 128
M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & M64

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def next_f64(self):
        return (self.next_u64() >> 11) / float(1 << 53)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def name_seed(seed, name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h ^ ((seed * 0x9E3779B97F4A7C15) & M64)


def normal(name, seed, count, std):
    # The same stream as src/model/init.rs, vectorised: two uniforms give two normals.
    pairs = (count + 1) // 2
    s = name_seed(seed, name)
    gamma = 0x9E3779B97F4A7C15
    states = (np.uint64(s) + np.arange(1, 2 * pairs + 1, dtype=np.uint64) * np.uint64(gamma))
    z = states
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    u1 = np.maximum(u[0::2], np.finfo(np.float64).tiny)
    u2 = u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    th = 2.0 * math.pi * u2
    out = np.empty(2 * pairs)
    out[0::2] = r * np.cos(th) * std
    out[1::2] = r * np.sin(th) * std
    return torch.tensor(out[:count].astype(np.float32))


def moe_layer(i):
    return a.experts > 1 and (i + 1) % 2 == 0


def init_params(seed):
    std, resid = 0.02, 0.02 / math.sqrt(2 * L)
    P = {}

    def n(name, shape, s):
        P[name] = normal(name, seed, int(np.prod(shape)), s).reshape(shape)

    n("tok_emb", (V, D), std)
    n("pos_emb", (T, D), std / 2)
    P["final_norm.gain"], P["final_norm.bias"] = torch.ones(D), torch.zeros(D)
    for i in range(L):
        b = f"blocks.{i}"
        for nn_ in ("norm1", "norm2"):
            P[f"{b}.{nn_}.gain"], P[f"{b}.{nn_}.bias"] = torch.ones(D), torch.zeros(D)
        n(f"{b}.attn.qkv.w", (D, 3 * D), std)
        n(f"{b}.attn.out.w", (D, D), resid)
        if moe_layer(i):
            n(f"{b}.moe.router.w", (D, a.experts), std)
            for e in range(a.experts):
                n(f"{b}.moe.experts.{e}.up.w", (D, FF), std)
                n(f"{b}.moe.experts.{e}.down.w", (FF, D), resid)
        else:
            n(f"{b}.ffn.up.w", (D, FF), std)
            n(f"{b}.ffn.down.w", (FF, D), resid)
    return {k: v.clone().requires_grad_(True) for k, v in P.items()}


def layer_norm(x, P, name):
    return F.layer_norm(x, (D,), P[name + ".gain"], P[name + ".bias"], 1e-5)


def forward(P, ids):
    b, t = ids.shape
    x = P["tok_emb"][ids] + P["pos_emb"][:t]
    auxes, loads = [], []
    for i in range(L):
        pre = f"blocks.{i}"
        h = layer_norm(x, P, pre + ".norm1")
        q, k, v = (h @ P[pre + ".attn.qkv.w"]).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + ctx.transpose(1, 2).reshape(b, t, D) @ P[pre + ".attn.out.w"]
        h = layer_norm(x, P, pre + ".norm2").reshape(b * t, D)
        if moe_layer(i):
            probs = F.softmax(h @ P[pre + ".moe.router.w"], -1)
            gate, idx = probs.topk(a.top_k, -1)
            gate = gate / gate.sum(-1, keepdim=True)
            y = torch.zeros_like(h)
            for e in range(a.experts):
                tok, slot = (idx == e).nonzero(as_tuple=True)
                if tok.numel():
                    pe = f"{pre}.moe.experts.{e}"
                    out = F.gelu(h[tok] @ P[pe + ".up.w"]) @ P[pe + ".down.w"]
                    y = y.index_add(0, tok, out * gate[tok, slot].unsqueeze(1))
            f = torch.bincount(idx.flatten(), minlength=a.experts).float() / idx.numel()
            auxes.append(a.experts * (f * probs.mean(0)).sum())
            loads.append(torch.bincount(idx.flatten(), minlength=a.experts).tolist())
        else:
            y = F.gelu(h @ P[pre + ".ffn.up.w"]) @ P[pre + ".ffn.down.w"]
        x = x + y.view(b, t, D)
    logits = layer_norm(x, P, "final_norm") @ P["tok_emb"].t()
    aux = torch.stack(auxes).mean() if auxes else None
    return logits, aux, loads


# The data, as src/data/corpus.rs and batch.rs split and sample it.
data = open(a.data, "rb").read()
n_all = len(data)
val_len = max(int(math.floor(n_all * 0.05 + 0.5)), 1)
cut = n_all - val_len
nl = data.find(b"\n", cut, n_all - 1)
if nl >= 0:
    cut = nl + 1
    while cut < n_all - 1 and data[cut] == 10:
        cut += 1
train, val = np.frombuffer(data[:cut], np.uint8), np.frombuffer(data[cut:], np.uint8)
rng = SplitMix64(a.seed)


def window_batch(src, starts):
    w = np.stack([src[s:s + T + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())


def next_batch():
    total = len(train) - T
    return window_batch(train, [rng.below(total) for _ in range(a.batch)])


count = (len(val) - 1) // T
val_batches = [window_batch(val, [k * T for k in range(j * a.batch, (j + 1) * a.batch)])
               for j in range(min(a.val_batches, count // a.batch))]


def lr_at(step):
    warm = min(max(a.steps // 20, 1), 100)
    if step < warm:
        return a.lr * (step + 1) / warm
    prog = min((step - warm) / max(a.steps - warm, 1), 1.0)
    return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))


P = init_params(a.seed)
decay = [v for v in P.values() if v.dim() >= 2]
no_decay = [v for v in P.values() if v.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                         {"params": no_decay, "weight_decay": 0.0}],
                        lr=a.lr, betas=(0.9, 0.95), eps=1e-8)


def validate():
    with torch.no_grad():
        return sum(F.cross_entropy(forward(P, x)[0].reshape(-1, V), y.reshape(-1)).item()
                   for x, y in val_batches) / len(val_batches)


t0, recent = time.time(), []
for step in range(a.stop or a.steps):
    x, y = next_batch()
    logits, aux, loads = forward(P, x)
    ce = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss = ce + a.aux * aux if aux is not None else ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    opt.step()
    recent = (recent + [ce.item()])[-20:]
    if step == 0 or (step + 1) % a.eval_every == 0 or step + 1 == (a.stop or a.steps):
        print(json.dumps({"step": step + 1, "train_loss": ce.item(),
                          "train_loss_last20": sum(recent) / len(recent),
                          "val_loss": validate(), "loads": loads,
                          "seconds": round(time.time() - t0, 1)}), flush=True)
