//! What the fused kernels share: reading candle's CPU storage, filling an output without first
//! zeroing it, splitting rows over rayon's pool (the one gemm already uses), and compiling a
//! kernel twice, for AVX-512 and for the baseline, picked at run time.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Below this many output elements a kernel runs on the calling thread: waking the pool costs
/// more than it saves.
const SERIAL_BELOW: usize = 1 << 14;

/// The contiguous f32 data of a kernel input.
pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("fused {what}: expects f32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("fused {what}: expects a contiguous input"),
    }
}

/// A vector of `n` f32 written by `fill`, which must write every element: the kernels here
/// write each output element once, zipped with their inputs. Skips the zeroing pass that
/// `vec![0.0; n]` would cost.
pub fn filled(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` initialised all `n` elements (the contract above).
    unsafe { v.set_len(n) };
    v
}

/// Views a fully written slice as initialised.
///
/// # Safety
/// Every element of `s` must have been written.
pub unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Runs `f` on one of rayon's workers and returns its result. Called from outside the pool,
/// every parallel region (each matmul, each fused kernel) is handed to the pool while the caller
/// sleeps until it returns, two thread wake-ups per region; from a worker, a region is shared
/// with the other workers through their queues. Costs nothing when already on a worker.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// [`on_pool`] for work whose activations hold `elements` values, or the calling thread for work
/// too small to split (a batch-1 decoding step), where the hand-over to the pool and back would
/// cost more than the parallel regions it saves.
pub fn on_pool_for<R: Send>(elements: usize, f: impl FnOnce() -> R + Send) -> R {
    if elements < SERIAL_BELOW {
        f()
    } else {
        on_pool(f)
    }
}

/// How many rows each parallel task takes: about four tasks per thread so that a late thread
/// does not hold the others up, or everything at once for small outputs.
pub(super) fn rows_per_task(rows: usize, row_len: usize) -> usize {
    if rows * row_len < SERIAL_BELOW {
        return rows.max(1);
    }
    rows.div_ceil(4 * rayon::current_num_threads()).max(1)
}

/// Calls `f(first_row, chunk)` for chunks of whole `row_len`-element rows of `out`, in parallel.
pub fn for_rows<T: Send>(out: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows = out.len() / row_len.max(1);
    let per = rows_per_task(rows, row_len);
    if per >= rows {
        f(0, out);
        return;
    }
    out.par_chunks_mut(per * row_len)
        .enumerate()
        .for_each(|(i, chunk)| f(i * per, chunk));
}

/// As [`for_rows`], where each task also returns a value (a partial sum, say); the values come
/// back in row order.
pub fn map_rows<T: Send, R: Send>(
    out: &mut [T],
    row_len: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let rows = out.len() / row_len.max(1);
    let per = rows_per_task(rows, row_len);
    if per >= rows {
        return vec![f(0, out)];
    }
    out.par_chunks_mut(per * row_len)
        .enumerate()
        .map(|(i, chunk)| f(i * per, chunk))
        .collect()
}

/// As [`map_rows`], over chunks of whole rows of an input instead of an output.
pub fn map_input_rows<R: Send>(
    x: &[f32],
    row_len: usize,
    f: impl Fn(usize, &[f32]) -> R + Sync,
) -> Vec<R> {
    let rows = x.len() / row_len.max(1);
    let per = rows_per_task(rows, row_len);
    if per >= rows {
        return vec![f(0, x)];
    }
    x.par_chunks(per * row_len)
        .enumerate()
        .map(|(i, chunk)| f(i * per, chunk))
        .collect()
}

/// The f32 values of a contiguous CPU tensor, read under its storage lock.
pub fn tensor_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*storage else {
        bail!("fused op: expects an f32 CPU tensor")
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        bail!("fused op: expects a contiguous tensor")
    };
    Ok(f(&v[a..b]))
}

/// A matrix operand: (data, column stride, row stride).
pub type Operand<'a> = (&'a [f32], usize, usize);

/// `dst (m, n) = lhs (m, k) @ rhs (k, n)`, `dst` row-major and fully written.
pub fn matmul(
    dst: &mut [MaybeUninit<f32>],
    shape: (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    par: Parallelism,
) {
    overwrite(dst, shape, Dst::RowMajor, lhs, rhs, par)
}

/// As [`matmul`], but `dst` receives the product transposed: (n, m) row-major. `gemm` packs
/// the operands to suit its output's layout, so the transposed output suits some products better
/// (see the experts' input gradient).
pub fn matmul_transposed(
    dst: &mut [MaybeUninit<f32>],
    shape: (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    par: Parallelism,
) {
    overwrite(dst, shape, Dst::Transposed, lhs, rhs, par)
}

/// The product into `dst`, laid out as `layout` says, every value written.
fn overwrite(
    dst: &mut [MaybeUninit<f32>],
    shape: (usize, usize, usize),
    layout: Dst,
    lhs: Operand,
    rhs: Operand,
    par: Parallelism,
) {
    assert!(dst.len() >= shape.0 * shape.1);
    // SAFETY: dst holds m x n values; gemm writes every one (read_dst = false) and reads none.
    unsafe {
        gemm_into(
            dst.as_mut_ptr() as *mut f32,
            shape,
            layout,
            lhs,
            rhs,
            false,
            par,
        )
    }
}

/// `dst (m, n) += lhs (m, k) @ rhs (k, n)`, `dst` row-major: a residual connection added by the
/// matmul itself rather than by a pass of its own.
pub fn matmul_add(
    dst: &mut [f32],
    shape: (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    par: Parallelism,
) {
    assert!(dst.len() >= shape.0 * shape.1);
    // SAFETY: dst holds m x n initialised values, which gemm adds to (read_dst, alpha = 1).
    unsafe { gemm_into(dst.as_mut_ptr(), shape, Dst::RowMajor, lhs, rhs, true, par) }
}

/// How a product's (m, n) result lies in memory.
#[derive(Clone, Copy)]
enum Dst {
    RowMajor,
    /// Column-major: the transpose, row-major.
    Transposed,
}

/// One gemm call into the (m, n) matrix at `dst`, adding to its values when `read_dst`,
/// overwriting them otherwise.
///
/// # Safety
/// `dst` must hold m x n values (initialised when `read_dst`); the operands' extents are checked
/// by the callers' shapes.
unsafe fn gemm_into(
    dst: *mut f32,
    (m, n, k): (usize, usize, usize),
    layout: Dst,
    lhs: Operand,
    rhs: Operand,
    read_dst: bool,
    par: Parallelism,
) {
    let alpha = if read_dst { 1.0 } else { 0.0 };
    let (dst_cs, dst_rs) = match layout {
        Dst::RowMajor => (1, n as isize),
        Dst::Transposed => (m as isize, 1),
    };
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs.0.as_ptr(),
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0.as_ptr(),
            rhs.1 as isize,
            rhs.2 as isize,
            alpha,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Every matmul split over all of rayon's threads.
pub fn all_cores() -> Parallelism {
    Parallelism::Rayon(rayon::current_num_threads())
}

/// The threads of each of two products run side by side ([`side_by_side`]): half of rayon's.
pub fn half_cores() -> Parallelism {
    match rayon::current_num_threads() / 2 {
        0 | 1 => Parallelism::None,
        t => Parallelism::Rayon(t),
    }
}

/// Runs two independent pieces of work at once, each on its share of the threads (for matmuls,
/// [`half_cores`]), or one after the other on a single thread. Two equal products side by side
/// keep both cores busy without the hand-offs gemm makes inside one product split over them.
pub fn side_by_side<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if rayon::current_num_threads() > 1 {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// Whether the CPU has AVX-512 (std caches the answer).
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX2 and FMA (x86-64-v3; std caches the answer).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `pub fn $name(args)` from one body compiled three times: for AVX-512, for AVX2 with
/// FMA (taken when the CPU has them, the best first) and for the build's baseline. The release
/// build targets plain x86-64, whose 4-wide vectors would leave half (AVX2 CPUs such as AMD Zen 3)
/// to three quarters (AVX-512) of the vector units idle.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $crate::model::fused::par::multiversion! {
            $(#[$meta])* pub fn $name($($arg: $ty),*) -> () $body
        }
    };
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty),*) -> $ret {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) -> $ret {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::model::fused::par::has_avx512() {
                // SAFETY: the CPU has the features `avx512` is compiled for.
                return unsafe { avx512($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::model::fused::par::has_avx2_fma() {
                // SAFETY: the CPU has the features `avx2` is compiled for.
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    /// Called from outside the pool (the test thread), work worth splitting moves onto a
    /// worker and small work stays where it is; both return the closure's value.
    #[test]
    fn on_pool_for_moves_only_work_worth_splitting() {
        assert_eq!(rayon::current_thread_index(), None);
        let (on, value) = on_pool_for(SERIAL_BELOW, || (rayon::current_thread_index(), 7));
        assert!(on.is_some());
        assert_eq!(value, 7);
        let (on, value) = on_pool_for(SERIAL_BELOW - 1, || (rayon::current_thread_index(), 8));
        assert_eq!(on, None);
        assert_eq!(value, 8);
        // Already on a worker: on_pool runs in place, on the same worker.
        let (outer, inner) = on_pool(|| {
            let outer = rayon::current_thread_index();
            (outer, on_pool(rayon::current_thread_index))
        });
        assert_eq!(outer, inner);
    }

    /// Products on one thread and split by gemm over all of them (a transposed operand, with
    /// and without accumulation) against a plain triple loop. The values are small multiples of
    /// 1/4, so every sum is exact in f32.
    #[test]
    fn matmuls_match_a_triple_loop() {
        let (m, k) = (64, 96);
        for n in [5, 300, 517] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 * 0.25).collect();
            // b transposed: (n, k) row-major, read as (k, n) with column stride k.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let want: Vec<f32> = (0..m * n)
                .map(|i| (0..k).map(|p| a[(i / n) * k + p] * b[p * n + i % n]).sum())
                .collect();
            for (rhs, par) in [
                ((&b[..], 1, n), all_cores()),
                ((&bt[..], k, 1), all_cores()),
                ((&b[..], 1, n), Parallelism::None),
            ] {
                let got = filled(m * n, |c| matmul(c, (m, n, k), (&a, 1, k), rhs, par));
                assert_eq!(got, want, "n = {n}");
                let mut acc = vec![1f32; m * n];
                matmul_add(&mut acc, (m, n, k), (&a, 1, k), rhs, par);
                let want_acc: Vec<f32> = want.iter().map(|w| w + 1.0).collect();
                assert_eq!(acc, want_acc, "n = {n}");
            }
        }
    }

    #[test]
    fn for_rows_visits_every_row_once_with_its_index() {
        for rows in [1, 7, 5000] {
            let mut out = vec![0usize; rows * 8];
            for_rows(&mut out, 8, |first, chunk| {
                for (r, row) in chunk.chunks_mut(8).enumerate() {
                    row.iter_mut().for_each(|v| *v += first + r + 1);
                }
            });
            let want: Vec<usize> = (0..rows).flat_map(|r| [r + 1; 8]).collect();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn map_rows_returns_partials_in_row_order() {
        let mut out = vec![1u64; 4096 * 16];
        let parts = map_rows(&mut out, 16, |first, chunk| (first, chunk.len() / 16));
        let mut next = 0;
        for (first, n) in parts {
            assert_eq!(first, next);
            next += n;
        }
        assert_eq!(next, 4096);
    }
}
