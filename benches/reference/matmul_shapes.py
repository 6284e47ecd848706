"""The shapes of `cargo bench --bench matmul` through PyTorch's CPU matmul (MKL on x86), on one
thread and on all of them: median GFLOP/s of 30 products after 5 warm-up ones. Not part of the
build; see docs/performance.md."""
import time

import torch

SHAPES = [(2048, 256, 1024), (2048, 1024, 256), (2048, 256, 768), (256, 2048, 1024)]


def gflops(m, k, n):
    a, b = torch.randn(m, k), torch.randn(k, n)
    secs = []
    for i in range(35):
        t = time.perf_counter()
        a @ b
        if i >= 5:
            secs.append(time.perf_counter() - t)
    secs.sort()
    return 2 * m * k * n / secs[len(secs) // 2] / 1e9


threads = torch.get_num_threads()
print(f"m x k x n            1 thread  {threads} threads  (GFLOP/s, median of 30; torch {torch.__version__})")
for m, k, n in SHAPES:
    torch.set_num_threads(1)
    one = gflops(m, k, n)
    torch.set_num_threads(threads)
    every = gflops(m, k, n)
    print(f"{m:>4} x {k:>4} x {n:>4}  {one:>9.1f}  {every:>9.1f}")
