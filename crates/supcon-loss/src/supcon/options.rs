//! Loss options: temperature, variant, contrast mode, normalization.

/// Where the average over positives sits (Khosla et al. 2020, eqs. 2 and 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `L_out^sup`: the mean over positives is outside the log (the paper's and SupContrast's
    /// choice; it trains better).
    #[default]
    Out,
    /// `L_in^sup`: the mean over positives is inside the log. `L_in ≤ L_out` by Jensen.
    In,
}

/// Which rows are anchors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ContrastMode {
    /// Every view of every sample is an anchor (`n = batch · views`).
    #[default]
    All,
    /// Only view 0 of each sample is an anchor (`n = batch`); all views are still contrasted.
    One,
}

/// Options of the SupCon / SimCLR loss. Build them from [`SupConOptions::default`] (or
/// [`SupConOptions::new`], [`SupConOptions::simclr`]) and the `with_*` methods; the struct is
/// `#[non_exhaustive]`, so options can be added without breaking callers.
///
/// ```
/// use supcon_loss::{ContrastMode, SupConOptions, Variant};
/// let options = SupConOptions::new(0.1)
///     .with_base_temperature(Some(0.07))
///     .with_variant(Variant::In)
///     .with_contrast_mode(ContrastMode::One)
///     .with_normalize(true);
/// assert_eq!(options.loss_scale(), 0.1 / 0.07);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SupConOptions {
    /// τ, the temperature that divides every similarity. Default 0.1.
    pub temperature: f64,
    /// τ_base; the loss is multiplied by τ / τ_base. `None` means τ (factor 1).
    pub base_temperature: Option<f64>,
    /// `L_out` (default) or `L_in`.
    pub variant: Variant,
    /// All views as anchors (default) or view 0 only.
    pub contrast_mode: ContrastMode,
    /// L2-normalize features (and queue keys) inside the loss and back-propagate through the
    /// normalization. Off by default: models usually normalize their projections themselves.
    pub normalize: bool,
}

impl Default for SupConOptions {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            base_temperature: None,
            variant: Variant::Out,
            contrast_mode: ContrastMode::All,
            normalize: false,
        }
    }
}

impl SupConOptions {
    /// The default options with temperature `temperature`.
    pub fn new(temperature: f64) -> Self {
        Self::default().with_temperature(temperature)
    }

    /// The same options with τ = `temperature`.
    pub fn with_temperature(self, temperature: f64) -> Self {
        Self {
            temperature,
            ..self
        }
    }

    /// The same options with τ_base = `base_temperature` (`None`: τ).
    pub fn with_base_temperature(self, base_temperature: Option<f64>) -> Self {
        Self {
            base_temperature,
            ..self
        }
    }

    /// The same options with `variant`.
    pub fn with_variant(self, variant: Variant) -> Self {
        Self { variant, ..self }
    }

    /// The same options with `contrast_mode`.
    pub fn with_contrast_mode(self, contrast_mode: ContrastMode) -> Self {
        Self {
            contrast_mode,
            ..self
        }
    }

    /// The same options with `normalize`.
    pub fn with_normalize(self, normalize: bool) -> Self {
        Self { normalize, ..self }
    }

    /// The SimCLR (NT-Xent) setting: the default options with temperature `temperature`.
    /// SimCLR is SupCon without labels, so pass `labels: None` to the loss.
    pub fn simclr(temperature: f64) -> Self {
        Self {
            temperature,
            ..Self::default()
        }
    }

    /// τ_base, defaulting to τ.
    pub fn base_temperature_or_default(&self) -> f64 {
        self.base_temperature.unwrap_or(self.temperature)
    }

    /// The loss factor τ / τ_base.
    pub fn loss_scale(&self) -> f64 {
        self.temperature / self.base_temperature_or_default()
    }
}
