//! A composition of operations (torchvision's `Compose`) for images of a fixed channel count.

use crate::error::{invalid, AugmentError};
use crate::image::ImageRef;
use crate::ops::{Op, Scratch};
use crate::rng::ViewRng;

/// Operations applied in order to images with `channels` channels; the result is CHW f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    channels: usize,
    ops: Vec<Op>,
}

impl Pipeline {
    /// Validates every operation for `channels`-channel images.
    pub fn new(channels: usize, ops: Vec<Op>) -> Result<Self, AugmentError> {
        if channels == 0 {
            return Err(invalid("Pipeline", "channels", "must be at least 1"));
        }
        for op in &ops {
            op.validate(channels, false)?;
        }
        Ok(Self { channels, ops })
    }

    /// The channel count of input and output images.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The operations in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The view size for an input image of `height × width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        self.ops
            .iter()
            .fold((height, width), |(h, w), op| op.output_size(h, w))
    }

    /// Floats per view for an input image of `height × width`.
    pub fn view_len(&self, height: usize, width: usize) -> usize {
        let (h, w) = self.output_size(height, width);
        self.channels * h * w
    }

    /// One view of one image into `out` (`view_len` floats), allocating its own scratch.
    /// The batch writers ([`crate::Augmenter`]) reuse per-thread scratch instead.
    pub fn apply(
        &self,
        image: ImageRef<'_>,
        rng: &mut ViewRng,
        out: &mut [f32],
    ) -> Result<(), AugmentError> {
        self.check_image(&image, 0)?;
        let expected = self.view_len(image.height, image.width);
        if out.len() != expected {
            return Err(AugmentError::OutputSize {
                buffer: 0,
                len: out.len(),
                expected,
                batch: 1,
                views: 1,
                per_view: expected,
            });
        }
        self.run(&image, rng, &mut Scratch::default(), out);
        Ok(())
    }

    pub(crate) fn check_image(
        &self,
        image: &ImageRef<'_>,
        index: usize,
    ) -> Result<(), AugmentError> {
        image.validate(index)?;
        if image.channels != self.channels {
            return Err(AugmentError::ChannelMismatch {
                index,
                channels: image.channels,
                expected: self.channels,
            });
        }
        Ok(())
    }

    /// The hot path: the caller has checked the image and the length of `out`.
    pub(crate) fn run(
        &self,
        image: &ImageRef<'_>,
        rng: &mut ViewRng,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) {
        scratch.image.load(image);
        // A trailing Normalize is fused into the final copy: one pass fewer over the view.
        let (body, last_normalize) = match self.ops.split_last() {
            Some((Op::Normalize { mean, std }, body)) => (body, Some((mean, std))),
            _ => (&self.ops[..], None),
        };
        for op in body {
            op.apply(scratch, rng);
        }
        let img = &scratch.image;
        let pixels = img.pixels();
        debug_assert_eq!(pixels.len(), out.len());
        match last_normalize {
            None => out.copy_from_slice(pixels),
            Some((mean, std)) => {
                let plane = img.plane();
                for (ch, (dst, src)) in out
                    .chunks_exact_mut(plane)
                    .zip(pixels.chunks_exact(plane))
                    .enumerate()
                {
                    let (m, inv) = (mean[ch], 1.0 / std[ch]);
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = (s - m) * inv;
                    }
                }
            }
        }
    }
}
