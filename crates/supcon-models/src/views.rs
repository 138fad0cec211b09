//! Other views of a batch of images, on tensors, for methods whose encoders do not read the image
//! as it is: CMC's modalities (Lab's L and ab channels for colour, the Sobel gradient magnitude
//! for gray) and CPC's grid of patches.

use tch::Tensor;

/// The Sobel gradient magnitude of the luma of `images` `[N, C, H, W]` (edge samples repeated),
/// `[N, 1, H, W]`: what `supcon-augment`'s `Sobel` op computes on one host image (a test
/// checks that they agree), here batched on the images' device. Luma is Rec. 601's for 3
/// channels, the channel mean otherwise.
pub fn sobel_magnitude(images: &Tensor) -> Tensor {
    let (kind, device) = (images.kind(), images.device());
    let channels = images.size()[1];
    let luma = if channels == 3 {
        let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114])
            .to_kind(kind)
            .to_device(device)
            .view([1, 3, 1, 1]);
        (images * weights).sum_dim_intlist([1i64].as_slice(), true, kind)
    } else {
        images.mean_dim([1i64].as_slice(), true, kind)
    };
    let padded = luma.replication_pad2d([1, 1, 1, 1]);
    // [2, 1, 3, 3]: ∂/∂x (columns), then ∂/∂y (rows).
    let kernels = Tensor::from_slice(&[
        -1f32, 0., 1., -2., 0., 2., -1., 0., 1., //
        -1., -2., -1., 0., 0., 0., 1., 2., 1.,
    ])
    .to_kind(kind)
    .to_device(device)
    .view([2, 1, 3, 3]);
    let gradients = padded.conv2d(&kernels, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
    gradients
        .square()
        .sum_dim_intlist([1i64].as_slice(), true, kind)
        .sqrt()
}

/// CIE Lab (D65 white) of sRGB `images` `[N, 3, H, W]` with intensities in [0, 1]: `[N, 3, H, W]`
/// with L in [0, 100] and a, b about [−128, 127] — what `skimage.color.rgb2lab` (CMC's
/// transform) returns: sRGB gamma undone, linear RGB to XYZ, XYZ to Lab.
pub fn lab_from_srgb(images: &Tensor) -> Tensor {
    let (kind, device) = (images.kind(), images.device());
    let constant = |values: &[f32], shape: &[i64]| {
        Tensor::from_slice(values)
            .to_kind(kind)
            .to_device(device)
            .view(shape)
    };
    let linear = images.clamp(0.0, 1.0);
    // `a.where_self(c, b)` is `c ? a : b`.
    let linear = (&linear / 12.92).where_self(
        &linear.le(0.04045),
        &((&linear + 0.055) / 1.055).pow_tensor_scalar(2.4),
    );
    // XYZ of linear sRGB, each divided by the D65 white point (0.95047, 1, 1.08883).
    let to_xyz = constant(
        &[
            0.412_453, 0.357_580, 0.180_423, //
            0.212_671, 0.715_160, 0.072_169, //
            0.019_334, 0.119_193, 0.950_227,
        ],
        &[3, 3],
    ) / constant(&[0.950_456, 1.0, 1.088_754], &[3, 1]);
    let xyz = linear
        .permute([0, 2, 3, 1])
        .matmul(&to_xyz.tr())
        .permute([0, 3, 1, 2]);
    // f(t) = t^(1/3) above (6/29)^3, its linear continuation below.
    let epsilon = (6.0f64 / 29.0).powi(3);
    let f = xyz
        .clamp_min(epsilon)
        .pow_tensor_scalar(1.0 / 3.0)
        .where_self(
            &xyz.gt(epsilon),
            &(&xyz * (1.0 / (3.0 * (6.0f64 / 29.0).powi(2))) + 4.0 / 29.0),
        );
    let (fx, fy, fz) = (f.narrow(1, 0, 1), f.narrow(1, 1, 1), f.narrow(1, 2, 1));
    Tensor::cat(
        &[&fy * 116.0 - 16.0, (&fx - &fy) * 500.0, (&fy - &fz) * 200.0],
        1,
    )
}

/// The positions of a grid of `size × size` patches every `stride` pixels along a side of
/// `side` pixels (0 when a patch does not fit).
pub fn grid_positions(side: i64, size: i64, stride: i64) -> i64 {
    if size > side || stride < 1 {
        0
    } else {
        (side - size) / stride + 1
    }
}

/// The overlapping patches of `images` `[N, C, H, W]` on a grid (`size`, `stride`):
/// `[N·rows·cols, C, size, size]`, image-major, then row-major over the grid; and
/// `(rows, cols)`. CPC v2's input to the encoder.
pub fn patch_grid(images: &Tensor, size: i64, stride: i64) -> (Tensor, (i64, i64)) {
    let [n, c, h, w] = images.size()[..] else {
        panic!(
            "patch_grid needs [N, C, H, W] images, got {:?}",
            images.size()
        );
    };
    let (rows, cols) = (
        grid_positions(h, size, stride),
        grid_positions(w, size, stride),
    );
    // unfold(2) then unfold(3): [N, C, rows, cols, size, size].
    let patches = images
        .unfold(2, size, stride)
        .unfold(3, size, stride)
        .permute([0, 2, 3, 1, 4, 5])
        .contiguous()
        .view([n * rows * cols, c, size, size]);
    (patches, (rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn a_vertical_step_has_its_gradient_on_the_edge() {
        // Left half 0, right half 1: |∂/∂x| = 4 on the two columns beside the step, 0 elsewhere.
        let images = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 4, 3], (Kind::Float, tch::Device::Cpu)),
                Tensor::ones([1, 1, 4, 3], (Kind::Float, tch::Device::Cpu)),
            ],
            3,
        );
        let magnitude = sobel_magnitude(&images);
        let row: Vec<f32> = Vec::try_from(magnitude.get(0).get(0).get(1)).unwrap();
        assert_eq!(row, vec![0., 0., 4., 4., 0., 0.]);
    }

    #[test]
    fn lab_of_known_colours() {
        // White, black, sRGB red and a mid gray, against their published Lab values.
        let rgb = Tensor::from_slice(&[1f32, 0., 1., 0.5, 1., 0., 0., 0.5, 1., 0., 0., 0.5])
            .view([1, 3, 2, 2]);
        let lab = lab_from_srgb(&rgb);
        let at = |c: i64, i: i64| lab.get(0).get(c).view([-1]).double_value(&[i]);
        let expected = [
            (0, [100.0, 0.0, 0.0]),
            (1, [0.0, 0.0, 0.0]),
            (2, [53.24, 80.09, 67.20]),
            (3, [53.39, 0.0, 0.0]),
        ];
        for (pixel, [l, a, b]) in expected {
            for (channel, want) in [(0, l), (1, a), (2, b)] {
                let got = at(channel, pixel);
                assert!(
                    (got - want).abs() < 0.05,
                    "pixel {pixel} channel {channel}: {got}"
                );
            }
        }
    }

    #[test]
    fn patches_lie_where_the_grid_says() {
        let images =
            Tensor::arange(2 * 28 * 28, (Kind::Float, tch::Device::Cpu)).view([2, 1, 28, 28]);
        let (patches, (rows, cols)) = patch_grid(&images, 7, 3);
        assert_eq!((rows, cols), (8, 8));
        assert_eq!(patches.size(), [2 * 64, 1, 7, 7]);
        // Image 1, grid row 2, column 5: pixel (6, 15) of image 1 is its top-left corner.
        let corner = patches.get(64 + 2 * 8 + 5).get(0).get(0).get(0);
        assert_eq!(corner.double_value(&[]), (28 * 28 + 6 * 28 + 15) as f64);
    }
}
