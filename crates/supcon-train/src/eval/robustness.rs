//! Accuracy under image corruptions (in the spirit of Hendrycks & Dietterich's
//! CIFAR-10-C / MNIST-C): every test image is corrupted at each severity 1..=5 and the
//! classifier's top-1 accuracy is measured per (corruption, severity).
//!
//! The classifier is any closure from a batch of images to logits, so the same code scores
//! SupCon's linear head and the CE baseline. Corruptions are [`ImageCorruption`]s; they see
//! one `[channels, height, width]` image with values in `[0, 1]` (before normalisation, which
//! is the classifier's business) and a per-image seed, so a run is reproducible.

use ndarray::{Array4, ArrayView4, ArrayViewMut3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{classification::top_k_accuracy, EvalError};

/// One kind of corruption, applied in place.
pub trait ImageCorruption: Sync {
    /// Name used in reports, e.g. `gaussian_noise`.
    fn name(&self) -> &str;
    /// Corrupts `image` (`[channels, height, width]`, values in `[0, 1]`) at `severity` in
    /// `1..=5`; `seed` is fixed per (image, corruption, severity).
    fn corrupt(&self, image: ArrayViewMut3<'_, f32>, severity: u8, seed: u64)
        -> Result<(), String>;
}

/// An [`ImageCorruption`] made of a name and a closure.
pub struct FnCorruption<F> {
    pub name: String,
    pub apply: F,
}

impl<F> ImageCorruption for FnCorruption<F>
where
    F: Fn(ArrayViewMut3<'_, f32>, u8, u64) -> Result<(), String> + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn corrupt(
        &self,
        image: ArrayViewMut3<'_, f32>,
        severity: u8,
        seed: u64,
    ) -> Result<(), String> {
        (self.apply)(image, severity, seed)
    }
}

/// Settings of [`robustness_accuracy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessOptions {
    /// Severities to measure (1..=5).
    pub severities: Vec<u8>,
    /// Images per classifier call.
    pub batch_size: usize,
    /// Base seed of the corruptions' randomness.
    pub seed: u64,
}

impl Default for RobustnessOptions {
    fn default() -> Self {
        Self {
            severities: (1..=5).collect(),
            batch_size: 500,
            seed: 0,
        }
    }
}

/// Top-1 accuracy under one corruption at one severity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessEntry {
    pub corruption: String,
    pub severity: u8,
    pub top1: f64,
}

/// Accuracy on the clean images and under every (corruption, severity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessReport {
    pub samples: usize,
    pub clean_top1: f64,
    pub entries: Vec<RobustnessEntry>,
    /// Mean of `entries[..].top1`: one number to compare SupCon and CE by.
    pub mean_corrupted_top1: f64,
}

impl RobustnessReport {
    /// Mean top-1 of one corruption over its severities, `None` when it was not measured.
    pub fn mean_for(&self, corruption: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .entries
            .iter()
            .filter(|e| e.corruption == corruption)
            .map(|e| e.top1)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Names of the corruptions, in the order they were measured.
    pub fn corruptions(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !names.contains(&e.corruption.as_str()) {
                names.push(&e.corruption);
            }
        }
        names
    }
}

/// Measures `classify`'s top-1 accuracy on `images` (`[n, channels, height, width]`, values
/// in `[0, 1]`) clean and under each corruption at each severity. `classify` gets batches of
/// at most `options.batch_size` images and returns `[batch, classes]` logits.
pub fn robustness_accuracy<F, E>(
    images: ArrayView4<'_, f32>,
    labels: &[i64],
    corruptions: &[&dyn ImageCorruption],
    mut classify: F,
    options: &RobustnessOptions,
) -> Result<RobustnessReport, EvalError>
where
    F: FnMut(ArrayView4<'_, f32>) -> Result<ndarray::Array2<f32>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if images.len_of(Axis(0)) != labels.len() {
        return Err(EvalError::LengthMismatch {
            what: "robustness images",
            expected: labels.len(),
            actual: images.len_of(Axis(0)),
        });
    }
    if labels.is_empty() {
        return Err(EvalError::TooFewRows {
            what: "robustness images",
            needed: 1,
            actual: 0,
        });
    }
    if options.batch_size == 0 {
        return Err(EvalError::InvalidOption {
            what: "robustness",
            message: "batch_size must be at least 1".into(),
        });
    }
    if let Some(&bad) = options.severities.iter().find(|s| !(1..=5).contains(*s)) {
        return Err(EvalError::InvalidOption {
            what: "robustness",
            message: format!("severity {bad} is outside 1..=5"),
        });
    }

    let mut score = |batch_images: ArrayView4<'_, f32>, context: &str| -> Result<f64, EvalError> {
        let mut logits = Vec::new();
        for (index, chunk) in batch_images
            .axis_chunks_iter(Axis(0), options.batch_size)
            .enumerate()
        {
            let out = classify(chunk).map_err(|e| EvalError::Classifier {
                context: format!("{context}, batch {index}"),
                source: e.into(),
            })?;
            if out.nrows() != chunk.len_of(Axis(0)) {
                return Err(EvalError::LengthMismatch {
                    what: "classifier logits",
                    expected: chunk.len_of(Axis(0)),
                    actual: out.nrows(),
                });
            }
            logits.push(out);
        }
        let width = logits.first().map_or(0, |l| l.ncols());
        if let Some(other) = logits.iter().find(|l| l.ncols() != width) {
            return Err(EvalError::DimensionMismatch {
                what: "classifier logits of two batches",
                left: width,
                right: other.ncols(),
            });
        }
        let views: Vec<_> = logits.iter().map(|l| l.view()).collect();
        let all = ndarray::concatenate(Axis(0), &views).map_err(|e| EvalError::InvalidOption {
            what: "robustness",
            message: format!("joining logits: {e}"),
        })?;
        top_k_accuracy(all.view(), labels, 1)
    };

    let clean_top1 = score(images, "clean images")?;
    let mut entries = Vec::new();
    for (corruption_index, corruption) in corruptions.iter().enumerate() {
        for &severity in &options.severities {
            let corrupted = corrupt_all(
                images,
                *corruption,
                corruption_index,
                severity,
                options.seed,
            )?;
            let context = format!("{} severity {severity}", corruption.name());
            tracing::debug!(
                corruption = corruption.name(),
                severity,
                "scoring corrupted images"
            );
            entries.push(RobustnessEntry {
                corruption: corruption.name().to_string(),
                severity,
                top1: score(corrupted.view(), &context)?,
            });
        }
    }
    let mean_corrupted_top1 = if entries.is_empty() {
        clean_top1
    } else {
        entries.iter().map(|e| e.top1).sum::<f64>() / entries.len() as f64
    };
    Ok(RobustnessReport {
        samples: labels.len(),
        clean_top1,
        entries,
        mean_corrupted_top1,
    })
}

/// A corrupted copy of all images, in parallel; image `i`'s seed mixes the base seed, the
/// corruption, the severity and `i`.
fn corrupt_all(
    images: ArrayView4<'_, f32>,
    corruption: &dyn ImageCorruption,
    corruption_index: usize,
    severity: u8,
    seed: u64,
) -> Result<Array4<f32>, EvalError> {
    let mut out = images.to_owned();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .try_for_each(|(index, image)| {
            let image_seed = seed
                ^ (corruption_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ u64::from(severity).wrapping_mul(0xBF58_476D_1CE4_E5B9)
                ^ (index as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
            corruption
                .corrupt(image, severity, image_seed)
                .map_err(|message| EvalError::Corruption {
                    context: format!("{} severity {severity} on image {index}", corruption.name()),
                    message,
                })
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4};

    /// Ten 1×2×2 images of constant brightness 0.05, 0.15, …, 0.95; class 1 when bright.
    fn brightness_set() -> (Array4<f32>, Vec<i64>) {
        let images = Array4::from_shape_fn((10, 1, 2, 2), |(i, _, _, _)| 0.05 + 0.1 * i as f32);
        let labels = (0..10).map(|i| i64::from(i >= 5)).collect();
        (images, labels)
    }

    /// Logits `[0.5 − mean, mean − 0.5]`: predicts class 1 when the image is brighter than 0.5.
    fn brightness_classifier(batch: ArrayView4<'_, f32>) -> Result<Array2<f32>, String> {
        Ok(Array2::from_shape_fn(
            (batch.len_of(Axis(0)), 2),
            |(i, c)| {
                let mean = batch.index_axis(Axis(0), i).mean().unwrap_or(0.0);
                if c == 0 {
                    0.5 - mean
                } else {
                    mean - 0.5
                }
            },
        ))
    }

    #[test]
    fn darkening_costs_the_expected_accuracy_per_severity() {
        let (images, labels) = brightness_set();
        // Severity s subtracts 0.1·s: exactly s of the five bright images (0.55 … 0.95) drop
        // below 0.5 while the dark ones stay dark, so top-1 = (10 − s) / 10.
        let darken = FnCorruption {
            name: "darken".to_string(),
            apply: |mut image: ArrayViewMut3<'_, f32>, severity: u8, _seed: u64| {
                image.mapv_inplace(|v| (v - 0.1 * f32::from(severity)).max(0.0));
                Ok(())
            },
        };
        let identity = FnCorruption {
            name: "identity".to_string(),
            apply: |_image: ArrayViewMut3<'_, f32>, _severity: u8, _seed: u64| Ok(()),
        };
        let options = RobustnessOptions {
            batch_size: 3,
            ..RobustnessOptions::default()
        };
        let report = robustness_accuracy(
            images.view(),
            &labels,
            &[&darken, &identity],
            brightness_classifier,
            &options,
        )
        .unwrap();
        assert_eq!(report.clean_top1, 1.0);
        assert_eq!(report.entries.len(), 10);
        for entry in report.entries.iter().filter(|e| e.corruption == "darken") {
            let expected = (10.0 - f64::from(entry.severity)) / 10.0;
            assert!((entry.top1 - expected).abs() < 1e-12, "{entry:?}");
        }
        assert_eq!(report.mean_for("identity"), Some(1.0));
        assert!((report.mean_for("darken").unwrap() - 0.7).abs() < 1e-12);
        assert!((report.mean_corrupted_top1 - 0.85).abs() < 1e-12);
        assert_eq!(report.corruptions(), vec!["darken", "identity"]);
    }

    #[test]
    fn seeds_differ_per_image_and_repeat_per_run() {
        let (images, labels) = brightness_set();
        let noise = FnCorruption {
            name: "seeded".to_string(),
            apply: |mut image: ArrayViewMut3<'_, f32>, _severity: u8, seed: u64| {
                image.fill((seed % 1000) as f32 / 1000.0);
                Ok(())
            },
        };
        let a = corrupt_all(images.view(), &noise, 0, 3, 11).unwrap();
        let b = corrupt_all(images.view(), &noise, 0, 3, 11).unwrap();
        assert_eq!(a, b);
        assert_ne!(a[[0, 0, 0, 0]], a[[1, 0, 0, 0]]);
        let _ = labels;
    }

    #[test]
    fn failures_are_reported_with_context() {
        let (images, labels) = brightness_set();
        let failing =
            |_: ArrayView4<'_, f32>| -> Result<Array2<f32>, String> { Err("boom".into()) };
        let err = robustness_accuracy(
            images.view(),
            &labels,
            &[],
            failing,
            &RobustnessOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("clean images"), "{err}");
        let bad = RobustnessOptions {
            severities: vec![6],
            ..RobustnessOptions::default()
        };
        assert!(matches!(
            robustness_accuracy(images.view(), &labels, &[], brightness_classifier, &bad),
            Err(EvalError::InvalidOption { .. })
        ));
    }
}
