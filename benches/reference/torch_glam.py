"""The PyTorch side of issue 2's comparison: glam-tiny / dense-tiny written plainly in PyTorch
(CPU, f32), timed the way `sparsewatt bench` times ours, so both can run on the same machine in
the same minutes. Not part of the build or the tests; needs `pip install torch`.

    python3 benches/reference/torch_glam.py --experts 8     # glam-tiny
    python3 benches/reference/torch_glam.py --experts 1     # dense-tiny

Prints JSON: train_tokens_per_s (batch 16 x seq 128, AdamW, loss + 0.01 x balancing loss) and
decode_tokens_per_s (batch 1, 64-token prompt, 64 new tokens, KV cache), medians after warm-up.
"""
import argparse, json, math, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--experts", type=int, default=8)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
V, D, L, H, FF, T, TOPK = 256, 256, 4, 4, 1024, 128, 2


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(D, FF, bias=False)
        self.down = nn.Linear(FF, D, bias=False)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Moe(nn.Module):
    def __init__(self, e):
        super().__init__()
        self.router = nn.Linear(D, e, bias=False)
        self.experts = nn.ModuleList(Mlp() for _ in range(e))

    def forward(self, x):
        probs = F.softmax(self.router(x), -1)
        gate, idx = probs.topk(TOPK, -1)
        gate = gate / gate.sum(-1, keepdim=True)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel():
                y.index_add_(0, tok, expert(x[tok]) * gate[tok, slot].unsqueeze(1))
        f = torch.bincount(idx.flatten(), minlength=len(self.experts)).float() / idx.numel()
        return y, len(self.experts) * (f * probs.mean(0)).sum()


class Block(nn.Module):
    def __init__(self, moe, e):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.out = nn.Linear(D, D, bias=False)
        self.ffn = Moe(e) if moe else Mlp()

    def forward(self, x, cache=None):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        x = x + self.out(ctx.transpose(1, 2).reshape(b, t, D))
        h = self.n2(x).reshape(b * t, D)
        aux = None
        if isinstance(self.ffn, Moe):
            y, aux = self.ffn(h)
        else:
            y = self.ffn(h)
        return x + y.view(b, t, D), aux


class Model(nn.Module):
    def __init__(self, e):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList(Block(e > 1 and i % 2 == 1, e) for i in range(L))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids, caches=None, past=0):
        x = self.tok(ids) + self.pos(torch.arange(past, past + ids.shape[1]))
        auxes = []
        for i, blk in enumerate(self.blocks):
            x, aux = blk(x, None if caches is None else caches[i])
            if aux is not None:
                auxes.append(aux)
        return self.head(self.norm(x)), (torch.stack(auxes).mean() if auxes else None)


torch.manual_seed(0)
m = Model(a.experts)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
ids = torch.randint(0, V, (16, T + 1))
times = []
for i in range(2 + a.steps):
    t0 = time.perf_counter()
    logits, aux = m(ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
    if aux is not None:
        loss = loss + 0.01 * aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    if i >= 2:
        times.append(time.perf_counter() - t0)
train = 16 * T / statistics.median(times)

dec = []
with torch.no_grad():
    prompt = torch.randint(0, V, (1, 64))
    for r in range(1 + a.repeats):
        caches = [dict() for _ in range(L)]
        logits, _ = m(prompt, caches, 0)
        tok = logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for j in range(64):
            logits, _ = m(tok, caches, 64 + j)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        if r:
            dec.append(time.perf_counter() - t0)
print(json.dumps({
    "experts": a.experts,
    "threads": torch.get_num_threads(),
    "torch": torch.__version__,
    "train_tokens_per_s": train,
    "decode_tokens_per_s": 64 / statistics.median(dec),
}))
