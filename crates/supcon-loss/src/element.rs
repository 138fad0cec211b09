//! The element types the CPU backend computes in: `f32` (production) and `f64` (gradient checks).

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type of the loss inputs: `f32` or `f64` (sealed).
///
/// Tiles of similarities and gradient products are computed in `T` (matrix products through
/// `matrixmultiply`); every reduction across tiles (log-sum-exp, row sums, class sums, the loss)
/// is accumulated in `f64`.
pub trait Element:
    ndarray::LinalgScalar + PartialOrd + std::fmt::Debug + Send + Sync + sealed::Sealed
{
    /// The type's name, for messages.
    const NAME: &'static str;
    /// Widen to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Round from `f64`.
    fn from_f64(value: f64) -> Self;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }
}
