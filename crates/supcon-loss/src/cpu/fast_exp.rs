//! A branch-free `exp` for `f64`, so that LLVM vectorizes the 3·n·M exponentials of the loss
//! (libm's `exp` is a scalar call per element).
//!
//! Range reduction `x = n·ln2 + r` with `|r| ≤ ln2/2` (ln 2 split in two parts), a degree-13
//! Taylor polynomial for `e^r` (truncation below 10⁻¹⁷ relative), and `2ⁿ` built from the
//! exponent bits. Accurate to a few ulp for `x ∈ [−708, 709]`; below −708 (results under 10⁻³⁰⁷,
//! including −∞) it returns 0. Inputs here are `s_ij − LSE_i ≤ ~0`, never NaN.

const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, the high part with trailing zero bits so `n·LN2_HI` is exact (fdlibm).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5·2⁵²: adding it rounds to an integer and leaves that integer in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// e^x, branch-free (see the module docs for range and accuracy).
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    let clamped = x.clamp(-708.0, 709.0);
    let shifted = clamped * LOG2_E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    // Horner, coefficients 1/k! for k = 13 down to 0.
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n sits in the low bits of `shifted` (two's complement, |n| ≤ 1023).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f64::from_bits(n_bits.wrapping_add(1023) << 52);
    let y = p * scale;
    if x < -708.0 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn matches_libm_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -707.9f64;
        while x < 708.6 {
            for dx in [0.0, 1e-9, 0.123_456_789, 0.346_573_590_279_972_6] {
                let want = (x + dx).exp();
                let got = exp(x + dx);
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.731;
        }
        assert!(worst < 1e-15, "worst relative error {worst:e}");
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-300,
            -1e-300,
            0.5 * std::f64::consts::LN_2,
        ] {
            assert!(((exp(x) - x.exp()) / x.exp()).abs() < 1e-15, "{x}");
        }
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn underflows_to_zero_and_handles_minus_infinity() {
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e6), 0.0);
        assert_eq!(exp(-708.5), 0.0);
        assert!(exp(-707.0) > 0.0);
    }
}
