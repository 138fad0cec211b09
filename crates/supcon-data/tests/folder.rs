//! Image folders written with the `image` crate into temporary directories.

use std::path::Path;

use image::{GrayImage, ImageFormat, Rgb, RgbImage};
use supcon_data::{load_image_folder, ColorMode, DataError, ImageFolderOptions, ImageShape};

fn rgb_image(width: u32, height: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([seed.wrapping_add(x as u8), seed.wrapping_add(y as u8), seed])
    })
}

fn save_png(path: &Path, image: &RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save_with_format(path, ImageFormat::Png).unwrap();
}

fn rgb(options_resize: Option<(u32, u32)>) -> ImageFolderOptions {
    ImageFolderOptions {
        resize: options_resize,
        color: ColorMode::Rgb,
        ..Default::default()
    }
}

#[test]
fn classes_are_sorted_and_pngs_are_read_exactly() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    save_png(&r.join("zebra/b.png"), &rgb_image(5, 4, 100));
    save_png(&r.join("zebra/a.png"), &rgb_image(5, 4, 50));
    save_png(&r.join("ant/nested/x.PNG"), &rgb_image(5, 4, 10));
    save_png(&r.join(".hidden/skip.png"), &rgb_image(9, 9, 0));
    std::fs::write(r.join("ant/notes.txt"), b"not an image").unwrap();
    std::fs::write(r.join("README"), b"top-level file").unwrap();

    let dataset = load_image_folder(r, &rgb(None)).unwrap();
    assert_eq!(
        dataset.class_names(),
        &["ant".to_owned(), "zebra".to_owned()]
    );
    assert_eq!(dataset.labels(), &[0, 1, 1]);
    assert_eq!(dataset.shape(), ImageShape::new(4, 5, 3));
    // Sorted paths inside a class: a.png (seed 50) before b.png (seed 100). HWC layout.
    assert_eq!(
        dataset.read_image(1).unwrap(),
        rgb_image(5, 4, 50).as_raw().as_slice()
    );
    assert_eq!(
        dataset.read_image(2).unwrap(),
        rgb_image(5, 4, 100).as_raw().as_slice()
    );
    let pixel =
        |image: &[u8], y: usize, x: usize| image[(y * 5 + x) * 3..(y * 5 + x) * 3 + 3].to_vec();
    assert_eq!(
        pixel(&dataset.read_image(0).unwrap(), 3, 2),
        vec![12, 13, 10]
    );
}

#[test]
fn jpeg_and_gray_and_format_from_content() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let flat = RgbImage::from_pixel(16, 16, Rgb([200, 200, 200]));
    std::fs::create_dir_all(r.join("a")).unwrap();
    flat.save_with_format(r.join("a/one.jpg"), ImageFormat::Jpeg)
        .unwrap();
    // A PNG named .jpeg: read by content.
    std::fs::create_dir_all(r.join("b")).unwrap();
    GrayImage::from_pixel(16, 16, image::Luma([30]))
        .save_with_format(r.join("b/two.jpeg"), ImageFormat::Png)
        .unwrap();

    let gray = load_image_folder(
        r,
        &ImageFolderOptions {
            resize: None,
            color: ColorMode::Gray,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(gray.shape(), ImageShape::new(16, 16, 1));
    // JPEG is lossy, but a flat image stays within a couple of levels.
    assert!(
        gray.read_image(0)
            .unwrap()
            .iter()
            .all(|&v| v.abs_diff(200) <= 2),
        "{:?}",
        &gray.read_image(0).unwrap()[..8]
    );
    assert!(gray.read_image(1).unwrap().iter().all(|&v| v == 30));
    let colour = load_image_folder(r, &rgb(None)).unwrap();
    assert_eq!(colour.shape().channels, 3);
    assert!(
        colour.read_image(1).unwrap().iter().all(|&v| v == 30),
        "gray replicated to RGB"
    );
}

#[test]
fn resize_makes_mixed_sizes_loadable() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    save_png(
        &r.join("a/big.png"),
        &RgbImage::from_pixel(12, 8, Rgb([10, 20, 30])),
    );
    save_png(
        &r.join("b/small.png"),
        &RgbImage::from_pixel(3, 5, Rgb([40, 50, 60])),
    );

    let err = load_image_folder(r, &rgb(None)).unwrap_err();
    match &err {
        DataError::MixedImageSizes {
            path,
            height,
            width,
            found_height,
            found_width,
            ..
        } => {
            assert!(path.ends_with("b/small.png"));
            assert_eq!(
                (*height, *width, *found_height, *found_width),
                (8, 12, 5, 3)
            );
        }
        other => panic!("unexpected {other}"),
    }

    let dataset = load_image_folder(r, &rgb(Some((6, 4)))).unwrap();
    assert_eq!(dataset.shape(), ImageShape::new(6, 4, 3));
    // Bilinear resizing of a flat image keeps it flat.
    assert!(dataset
        .read_image(0)
        .unwrap()
        .chunks(3)
        .all(|p| p == [10, 20, 30]));
    assert!(dataset
        .read_image(1)
        .unwrap()
        .chunks(3)
        .all(|p| p == [40, 50, 60]));
}

#[test]
fn folder_errors_name_the_place() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let err = load_image_folder(r, &rgb(None)).unwrap_err();
    assert!(
        matches!(err, DataError::NoClassFolders { ref root } if root == r),
        "{err}"
    );

    save_png(&r.join("a/ok.png"), &rgb_image(2, 2, 0));
    std::fs::create_dir_all(r.join("b")).unwrap();
    std::fs::write(r.join("b/readme.txt"), b"no images here").unwrap();
    let err = load_image_folder(r, &rgb(None)).unwrap_err();
    assert!(
        matches!(err, DataError::EmptyClass { ref path } if path.ends_with("b")),
        "{err}"
    );

    std::fs::write(r.join("b/broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let err = load_image_folder(r, &rgb(None)).unwrap_err();
    assert!(
        matches!(err, DataError::Image { ref path, .. } if path.ends_with("b/broken.png")),
        "{err}"
    );
    assert!(err.to_string().contains("broken.png"));

    let err = load_image_folder(&r.join("missing"), &rgb(None)).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    let err = load_image_folder(r, &rgb(Some((0, 4)))).unwrap_err();
    assert!(matches!(err, DataError::InvalidShape { .. }), "{err}");
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_ends() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    save_png(&r.join("a/one.png"), &rgb_image(2, 2, 0));
    std::os::unix::fs::symlink(r.join("a"), r.join("a/loop")).unwrap();
    let dataset = load_image_folder(r, &rgb(None)).unwrap();
    assert_eq!(dataset.len(), 1);
}
