//! Branch-free `exp` for `f64` and `f32`, so that LLVM vectorizes the exponentials of the loss
//! (libm's `exp` is a scalar call per element). The `f32` one serves `f32` similarities: eight
//! lanes instead of four and a polynomial of half the degree.
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

const LOG2_E_F32: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI_F32 + LN2_LO_F32 (Cephes' split: the high part has 9 significant bits, so
/// `n·LN2_HI_F32` is exact for |n| ≤ 2¹⁵).
const LN2_HI_F32: f32 = 0.693_359_4;
const LN2_LO_F32: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to an integer and leaves that integer in the low mantissa bits.
const ROUND_MAGIC_F32: f32 = 12_582_912.0;

/// e^x for `f32`, branch-free: the same range reduction as [`exp`], a degree-7 Taylor
/// polynomial for `e^r` (truncation below 3·10⁻⁹ relative on |r| ≤ ln2/2), `2ⁿ` from the
/// exponent bits. Accurate to a few ulp for `x ∈ [−87, 88]`; below −87 it returns 0.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let clamped = x.clamp(-87.0, 88.0);
    let shifted = clamped * LOG2_E_F32 + ROUND_MAGIC_F32;
    let n = shifted - ROUND_MAGIC_F32;
    let r = (clamped - n * LN2_HI_F32) - n * LN2_LO_F32;
    let mut p = 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n sits in the low bits of `shifted` (two's complement, |n| ≤ 127).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC_F32.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = p * scale;
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::{exp, exp_f32};

    #[test]
    fn f32_matches_f64_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -86.9f32;
        while x < 88.0 {
            for dx in [0.0f32, 1e-6, 0.123_456_79, 0.346_573_6] {
                let v = (x + dx).min(88.0);
                let want = f64::from(v).exp();
                let got = f64::from(exp_f32(v));
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.0731;
        }
        // 4 ulp of f32 (2⁻²³ ≈ 1.2e-7 relative).
        assert!(
            worst < 4.0 * f64::from(f32::EPSILON),
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert!(exp_f32(-86.0) > 0.0);
    }

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
