//! CMC's second modality on tensors (`supcon_models::sobel_magnitude`, batched on the device)
//! is the Sobel gradient magnitude that `supcon-augment` computes on one host image: one
//! concept, two homes, kept equal by this test.

use supcon_augment::{ImageRef, Op, Pipeline, ViewRng};
use tch::{Kind, Tensor};

#[test]
fn tensor_sobel_is_supcon_augments_sobel() {
    for channels in [1usize, 3] {
        let (h, w) = (9, 7);
        let pixels: Vec<u8> = (0..h * w * channels)
            .map(|i| ((i * 37 + i / 5 * 11) % 256) as u8)
            .collect();
        let image = ImageRef {
            data: &pixels,
            height: h,
            width: w,
            channels,
        };
        // The host op on [0, 1] intensities (ToTensor's scale, as the pipeline reads bytes).
        let pipeline = Pipeline::new(channels, vec![Op::Sobel]).unwrap();
        let mut host = vec![0f32; pipeline.view_len(h, w)];
        pipeline
            .apply(image, &mut ViewRng::for_view(0, 0, 0, 0), &mut host)
            .unwrap();
        // The same image as a [1, C, H, W] tensor on the same scale.
        let chw: Vec<f32> = (0..channels)
            .flat_map(|c| {
                let pixels = &pixels;
                (0..h * w).map(move |p| f32::from(pixels[p * channels + c]) / 255.0)
            })
            .collect();
        let tensor = Tensor::from_slice(&chw).view([1, channels as i64, h as i64, w as i64]);
        let magnitude = supcon_models::sobel_magnitude(&tensor.to_kind(Kind::Float));
        let ours: Vec<f32> = Vec::try_from(magnitude.flatten(0, -1)).unwrap();
        // The host op writes the magnitude to every channel; the tensor one has one channel.
        for (p, &m) in ours.iter().enumerate() {
            for c in 0..channels {
                let theirs = host[c * h * w + p];
                assert!(
                    (m - theirs).abs() < 1e-5,
                    "{channels} channel(s), pixel {p}: {m} vs {theirs}"
                );
            }
        }
    }
}
