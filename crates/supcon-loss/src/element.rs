//! The element types the CPU backend computes in: `f32` (production) and `f64` (gradient checks).

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type of the loss inputs: `f32` or `f64` (sealed).
///
/// Tiles of similarities and gradient products are computed in `T` (matrix products through
/// `matrixmultiply`), and so are the exponentials of the similarities ([`Element::scaled_exp`]:
/// a similarity is no more precise than its type); every reduction across tiles (log-sum-exp,
/// row sums, class sums, the loss) is accumulated in `f64`.
pub trait Element:
    ndarray::LinalgScalar + PartialOrd + std::fmt::Debug + Send + Sync + sealed::Sealed
{
    /// The type's name, for messages.
    const NAME: &'static str;
    /// Widen to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Round from `f64`.
    fn from_f64(value: f64) -> Self;
    /// `e^{self·scale − shift}` in the type's precision: a branch-free polynomial that
    /// vectorizes (eight `f32` lanes, or four `f64` lanes with AVX2), exact to a few ulp of the
    /// type for exponents down to its underflow, 0 below.
    fn exp_in(self, scale: Self, shift: Self) -> Self;
    /// [`Element::exp_in`] with `f64` parameters, widened to `f64`.
    #[inline(always)]
    fn scaled_exp(self, scale: f64, shift: f64) -> f64 {
        self.exp_in(Self::from_f64(scale), Self::from_f64(shift))
            .to_f64()
    }
    /// The widest span of exponents `x − μ` that [`Element::scaled_exp`] takes without
    /// overflow, with room for a product by a factor ≤ 1: where one exponential per similarity
    /// can stand for two (the CPU backend's factored coefficients).
    const EXP_SPAN: f64;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    const EXP_SPAN: f64 = 60.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline(always)]
    fn exp_in(self, scale: Self, shift: Self) -> Self {
        crate::fast_exp::exp_f32(self * scale - shift)
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    const EXP_SPAN: f64 = 600.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline(always)]
    fn exp_in(self, scale: Self, shift: Self) -> Self {
        crate::fast_exp::exp(self * scale - shift)
    }
}
