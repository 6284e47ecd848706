//! `cargo bench --bench matmul`: GFLOP/s of the `gemm` crate, which runs every CPU matmul of the
//! model, on the shapes of a dense-tiny training step (batch 16 x seq 128 = 2,048 rows, d_model
//! 256, d_ff 1,024), on one thread, on all of them, and as two independent one-thread products
//! side by side (what two cores give work that needs no splitting).
//! `benches/reference/matmul_shapes.py` times the same shapes through PyTorch (MKL) for
//! comparison; see docs/performance.md.

use std::time::Instant;

use gemm::Parallelism;

/// (m, k, n) of `(m, k) x (k, n)`: FFN up, FFN down, the QKV projection, and a weight gradient.
const SHAPES: [(usize, usize, usize); 4] = [
    (2048, 256, 1024),
    (2048, 1024, 256),
    (2048, 256, 768),
    (256, 2048, 1024),
];
const WARM_UP: usize = 5;
const TIMED: usize = 30;

/// Operands of one `(m, k) x (k, n)` product, row-major.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Operands {
    fn new((m, k, n): (usize, usize, usize)) -> Self {
        Self {
            a: (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect(),
            b: (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect(),
            c: vec![0f32; m * n],
        }
    }

    fn multiply(&mut self, (m, k, n): (usize, usize, usize), par: Parallelism) {
        let (a, b, c) = (&self.a, &self.b, &mut self.c);
        // SAFETY: a, b and c are row-major (m, k), (k, n) and (m, n) buffers of those sizes.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
    }
}

/// Median seconds of `TIMED` calls of `f` after `WARM_UP` untimed ones.
fn median_secs(mut f: impl FnMut()) -> f64 {
    let mut secs: Vec<f64> = (0..WARM_UP + TIMED)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .skip(WARM_UP)
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[TIMED / 2]
}

fn gflop((m, k, n): (usize, usize, usize)) -> f64 {
    2.0 * (m * k * n) as f64 / 1e9
}

/// GFLOP/s of one product at a time, on one thread or split by gemm over `par`'s threads.
fn gflops(shape: (usize, usize, usize), par: Parallelism) -> f64 {
    let mut ops = Operands::new(shape);
    gflop(shape) / median_secs(|| ops.multiply(shape, par))
}

/// GFLOP/s of two independent one-thread products run side by side: the two-core ceiling for
/// work that needs no split.
fn gflops_pair(shape: (usize, usize, usize)) -> f64 {
    let (mut x, mut y) = (Operands::new(shape), Operands::new(shape));
    let secs = median_secs(|| {
        rayon::join(
            || x.multiply(shape, Parallelism::None),
            || y.multiply(shape, Parallelism::None),
        );
    });
    2.0 * gflop(shape) / secs
}

fn main() {
    let threads = rayon::current_num_threads();
    println!(
        "m x k x n            1 thread  {threads} threads  2 x 1-thread  (GFLOP/s, median of {TIMED})"
    );
    for shape in SHAPES {
        let one = gflops(shape, Parallelism::None);
        let all = gflops(shape, Parallelism::Rayon(threads));
        let pair = gflops_pair(shape);
        let (m, k, n) = shape;
        println!("{m:>4} x {k:>4} x {n:>4}  {one:>9.1}  {all:>9.1}  {pair:>12.1}");
    }
}
