//! The element-wise row kernels of the CPU backend: where its exponentials are.
//!
//! Each kernel is compiled twice, for the baseline target and with AVX2 + FMA, and the copy is
//! chosen at run time. Baseline x86-64 has only SSE2 (two `f64` lanes), and the exponentials are
//! the only work of the loss that is not a matrix product, so the wide copy is what keeps them
//! small next to the GEMMs (`matrixmultiply` dispatches its own kernels the same way).

use crate::fast_exp::exp;
use crate::Element;

/// Defines `pub(crate) fn $name<T: Element>(...)` from one body, compiled for the baseline and
/// (on x86-64) for AVX2 + FMA, dispatching on what the CPU has.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident<T: Element>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name<T: Element>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body<T: Element>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide<T: Element>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Independent accumulators of the reductions: a strict left-to-right sum or max cannot be
/// vectorized (floating-point addition is not associative), eight lanes combined in a fixed
/// order can, and stay deterministic.
const LANES: usize = 8;

/// Combines the lanes in a fixed tree order.
#[inline(always)]
fn combine(lanes: [f64; LANES], op: impl Fn(f64, f64) -> f64) -> f64 {
    op(
        op(op(lanes[0], lanes[4]), op(lanes[1], lanes[5])),
        op(op(lanes[2], lanes[6]), op(lanes[3], lanes[7])),
    )
}

dispatched! {
    /// The largest of `dots`, widened (`-inf` for an empty slice).
    fn max_dot<T: Element>(dots: &[T]) -> f64 {
        let mut lanes = [f64::NEG_INFINITY; LANES];
        let chunks = dots.chunks_exact(LANES);
        let tail = chunks
            .remainder()
            .iter()
            .fold(f64::NEG_INFINITY, |max, &dot| max.max(dot.to_f64()));
        for chunk in chunks {
            for (lane, &dot) in lanes.iter_mut().zip(chunk) {
                *lane = lane.max(dot.to_f64());
            }
        }
        combine(lanes, f64::max).max(tail)
    }
}

dispatched! {
    /// `Σ_c exp(dots[c]·inv_tau − shift)`: one tile row's share of an online log-sum-exp, the
    /// exponentials in `T`'s precision ([`Element::scaled_exp`]). The summation order depends
    /// only on the positions in `dots`.
    fn exp_sum<T: Element>(dots: &[T], inv_tau: f64, shift: f64) -> f64 {
        let mut lanes = [0.0f64; LANES];
        let chunks = dots.chunks_exact(LANES);
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&dot| dot.scaled_exp(inv_tau, shift))
            .sum();
        for chunk in chunks {
            for (lane, &dot) in lanes.iter_mut().zip(chunk) {
                *lane += dot.scaled_exp(inv_tau, shift);
            }
        }
        combine(lanes, |a, b| a + b) + tail
    }
}

dispatched! {
    /// `out[c] = exp(x_c − row_lse) + exp(x_c − column_lse[c])` with `x_c = dots[c]·inv_tau`:
    /// `π_jk + π_kj` of one row of the symmetric similarity block. An infinite `LSE` (a row that
    /// is not an anchor with positives) makes its term exactly 0.
    fn pair_softmax<T: Element>(
        dots: &[T],
        inv_tau: f64,
        row_lse: f64,
        column_lse: &[f64],
        out: &mut [T],
    ) {
        for ((o, &dot), &lse) in out.iter_mut().zip(dots).zip(column_lse) {
            let x = dot.to_f64() * inv_tau;
            *o = T::from_f64(exp(x - row_lse) + exp(x - lse));
        }
    }
}

dispatched! {
    /// `out[c] = exp(x_c − shift) · (row_factor + column_factors[c])`: [`pair_softmax`] with one
    /// exponential instead of two, all in `T` (the coefficients are rounded to `T` anyway), for
    /// `factor = exp(shift − LSE)` (see the caller for when the factors stay in range).
    fn factored_pair_softmax<T: Element>(
        dots: &[T],
        inv_tau: T,
        shift: T,
        row_factor: T,
        column_factors: &[T],
        out: &mut [T],
    ) {
        for ((o, &dot), &factor) in out.iter_mut().zip(dots).zip(column_factors) {
            *o = dot.exp_in(inv_tau, shift) * (row_factor + factor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_their_definitions() {
        let dots: Vec<f32> = (0..37).map(|k| (k as f32 * 0.37).sin()).collect();
        let (inv_tau, shift) = (1.0 / 0.07, 9.0);
        let want_max = dots.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        assert_eq!(max_dot(&dots), want_max);
        assert_eq!(max_dot::<f32>(&[]), f64::NEG_INFINITY);

        let want_sum: f64 = dots
            .iter()
            .map(|&d| (d as f64 * inv_tau - shift).exp())
            .sum();
        // f32 dots: the exponentials are f32's (a few ulp each).
        assert!((exp_sum(&dots, inv_tau, shift) - want_sum).abs() < 1e-6 * want_sum);
        let dots64: Vec<f64> = dots.iter().map(|&d| f64::from(d)).collect();
        assert!((exp_sum(&dots64, inv_tau, shift) - want_sum).abs() < 1e-12 * want_sum);
        assert_eq!(exp_sum::<f32>(&[], inv_tau, shift), 0.0);

        let column_lse: Vec<f64> = (0..37)
            .map(|k| {
                if k % 5 == 0 {
                    f64::INFINITY
                } else {
                    10.0 + k as f64 * 0.1
                }
            })
            .collect();
        let mut out = vec![0f32; 37];
        pair_softmax(&dots, inv_tau, 11.0, &column_lse, &mut out);
        for c in 0..37 {
            let x = dots[c] as f64 * inv_tau;
            let want = (x - 11.0).exp() + (x - column_lse[c]).exp();
            assert!((out[c] as f64 - want).abs() <= 1e-6 * want, "column {c}");
        }
        let mut factored = vec![0f32; 37];
        let factors: Vec<f32> = column_lse
            .iter()
            .map(|&l| (10.0 - l).exp() as f32)
            .collect();
        factored_pair_softmax(
            &dots,
            inv_tau as f32,
            10.0,
            (10.0f64 - 11.0).exp() as f32,
            &factors,
            &mut factored,
        );
        // f32 exponentials of an f32 argument x − shift (|x| ≤ 15): a few 1e-7 relative.
        for c in 0..37 {
            assert!((factored[c] - out[c]).abs() <= 4e-6 * out[c], "column {c}");
        }
        pair_softmax(
            &dots,
            inv_tau,
            f64::INFINITY,
            &[f64::INFINITY; 37],
            &mut out,
        );
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
