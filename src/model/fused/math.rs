//! Branch-free f32 `exp` and `erf` that the compiler can vectorise (std's call libm one element
//! at a time). Used by the fused GELU and softmax kernels.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody and Waite) so that `n * LN2_HI` is exact for the `n` that occur here.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 x 2^23 rounds an f32 to the nearest integer without a branch.
const ROUND: f32 = 12_582_912.0;

/// `e^x`, within 2 ulp of the exact value for `x` in [-87, 88]; clamped outside (no overflow to
/// infinity, no denormals); NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // j's low mantissa bits hold n = round(x log2 e) (offset by ROUND's own bits, which the
    // shift below pushes out): the integer without a float-to-int conversion, which the
    // compiler would not vectorise.
    let j = x * LOG2_E + ROUND;
    let n = j - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO; // |r| <= ln2 / 2
                                         // Taylor to degree 7: the remainder |r|^8 / 8! is under 2e-9 relative.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    let scale = f32::from_bits(j.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// `Phi(x)`, the standard normal CDF, given `e = exp(-x^2 / 2)` (GELU shares it with its
/// slope). The tail `Phi(-|x|) = erfc(|x| / sqrt 2) / 2` by Abramowitz and Stegun, Handbook of
/// Mathematical Functions (1964), formula 7.1.26 (absolute error under 1.5e-7 in erf, so 7.5e-8
/// here), and `Phi(x) = 1 - tail` for x >= 0. The tail is computed directly, never as a difference
/// of near-equal numbers, so one formula serves every x and the loop stays branch-free. Its f32
/// evaluation adds up to about 2.5e-7 near x = 0, where the polynomial's terms nearly cancel:
/// 3e-7 in all, against 6e-8 for an f32 ulp at 0.5. GELU's tests hold it to candle's erf within
/// 2e-6.
#[inline(always)]
pub fn normal_cdf_given_exp(x: f32, e: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let t = 1.0 / (1.0 + P * std::f32::consts::FRAC_1_SQRT_2 * x.abs());
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 0.5 * poly * e;
    if x < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// Lanes of the reductions below: one AVX-512 vector. Sixteen partial results in an array let
/// the compiler vectorise a sum that strict float semantics would otherwise keep sequential.
const LANES: usize = 16;

/// Sum of `x`, in sixteen interleaved partial sums.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sum of `a[i] * b[i]`, as [`sum`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Largest element of `x` (NaNs ignored, as `f32::max` does); -inf when empty.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series in f64: independent of the formula under test.
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn reductions_agree_with_f64_sums_at_every_length() {
        for n in [0, 1, 15, 16, 17, 100, 1000] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 11 % 13) as f32 - 6.0) / 3.0).collect();
            let s64: f64 = a.iter().map(|&v| v as f64).sum();
            let d64: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum(&a) as f64 - s64).abs() < 1e-3, "sum of {n}");
            assert!((dot(&a, &b) as f64 - d64).abs() < 1e-3, "dot of {n}");
            let m = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), m, "max of {n}");
        }
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e9) > 0.0 && exp(1e9).is_finite());
    }

    #[test]
    fn normal_cdf_matches_erf_series_within_the_published_bound_plus_f32_rounding() {
        let mut x = -5.5f32;
        while x <= 5.5 {
            let got = normal_cdf_given_exp(x, exp(-0.5 * x * x)) as f64;
            let want = 0.5 * (1.0 + erf_series(x as f64 * std::f64::consts::FRAC_1_SQRT_2));
            // 7.5e-8 for the formula, and f32 rounding of its terms (a few ulp of values near 1:
            // 3.1e-7 at most on this grid, near x = 0.04).
            assert!((got - want).abs() < 4e-7, "Phi({x}) = {got}, want {want}");
            x += 0.01;
        }
        // Symmetric to f32 rounding: Phi(-x) = 1 - Phi(x).
        for x in [0.3f32, 1.0, 2.5] {
            let e = exp(-0.5 * x * x);
            let sum = normal_cdf_given_exp(x, e) + normal_cdf_given_exp(-x, e);
            assert!((sum - 1.0).abs() < 1.2e-7, "{x}: {sum}");
        }
    }
}
