//! Borrowed input images and the planar f32 working image the operations act on.

use crate::error::AugmentError;

/// One input image: `height × width × channels` bytes, row-major, channels last (HWC), as
/// data sets store them (IDX, CIFAR after transposition, decoded PNG/JPEG).
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    /// The pixels, `height × width × channels` bytes, HWC; 0–255 intensities.
    pub data: &'a [u8],
    /// Rows, in pixels.
    pub height: usize,
    /// Columns, in pixels.
    pub width: usize,
    /// Bytes per pixel, e.g. 1 (gray) or 3 (R, G, B).
    pub channels: usize,
}

impl<'a> ImageRef<'a> {
    /// A checked image: `data.len()` must be `height · width · channels`, all nonzero.
    pub fn new(
        data: &'a [u8],
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Self, AugmentError> {
        let image = Self {
            data,
            height,
            width,
            channels,
        };
        image.validate(0)?;
        Ok(image)
    }

    /// Checks the size; `index` names the image in the error.
    pub fn validate(&self, index: usize) -> Result<(), AugmentError> {
        if self.height == 0 || self.width == 0 || self.channels == 0 {
            return Err(AugmentError::EmptyImage {
                index,
                height: self.height,
                width: self.width,
                channels: self.channels,
            });
        }
        let expected = self
            .height
            .checked_mul(self.width)
            .and_then(|p| p.checked_mul(self.channels));
        if expected != Some(self.data.len()) {
            return Err(AugmentError::ImageSize {
                index,
                len: self.data.len(),
                height: self.height,
                width: self.width,
                channels: self.channels,
                expected: expected.unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }
}

/// `b / 255` for every byte, as torchvision's `ToTensor` divides (a table: the division is
/// the slowest part of loading otherwise).
static BYTE_TO_UNIT: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b as f32 / 255.0;
        b += 1;
    }
    table
};

/// A planar (CHW) f32 image with values in [0, 1] before normalisation. Its buffer is reused
/// from view to view: `reshape` only allocates when an image is larger than any before.
#[derive(Clone, Debug, Default)]
pub struct Planar {
    /// The buffer: the first `channels × height × width` values are the image, channel after
    /// channel (CHW, like a torch tensor); anything past them is stale capacity.
    pub data: Vec<f32>,
    /// Number of planes (C).
    pub channels: usize,
    /// Rows per plane (H), in pixels.
    pub height: usize,
    /// Columns per plane (W), in pixels.
    pub width: usize,
}

impl Planar {
    /// Sets the shape, growing the buffer when needed; the contents are unspecified.
    pub fn reshape(&mut self, channels: usize, height: usize, width: usize) {
        self.channels = channels;
        self.height = height;
        self.width = width;
        let len = channels * height * width;
        if self.data.len() < len {
            self.data.resize(len, 0.0);
        }
    }

    /// Pixels per channel.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// The live part of the buffer.
    pub fn pixels(&self) -> &[f32] {
        &self.data[..self.channels * self.plane()]
    }

    /// The live part of the buffer, mutable.
    pub fn pixels_mut(&mut self) -> &mut [f32] {
        let len = self.channels * self.plane();
        &mut self.data[..len]
    }

    /// HWC bytes → CHW floats in [0, 1], divided by 255 as torchvision's `ToTensor` does.
    pub fn load(&mut self, image: &ImageRef<'_>) {
        let (h, w, c) = (image.height, image.width, image.channels);
        self.reshape(c, h, w);
        let plane = h * w;
        let data = &mut self.data[..c * plane];
        if c == 1 {
            for (dst, &src) in data.iter_mut().zip(image.data) {
                *dst = BYTE_TO_UNIT[usize::from(src)];
            }
            return;
        }
        if c == 3 {
            let (r, rest) = data.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (((pixel, r), g), b) in image.data.chunks_exact(3).zip(r).zip(g).zip(b) {
                *r = BYTE_TO_UNIT[usize::from(pixel[0])];
                *g = BYTE_TO_UNIT[usize::from(pixel[1])];
                *b = BYTE_TO_UNIT[usize::from(pixel[2])];
            }
            return;
        }
        for (p, pixel) in image.data.chunks_exact(c).enumerate() {
            for (ch, &value) in pixel.iter().enumerate() {
                data[ch * plane + p] = BYTE_TO_UNIT[usize::from(value)];
            }
        }
    }
}
