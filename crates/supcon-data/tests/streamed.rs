//! Streamed datasets (image folders and tar shards read on demand) against their in-memory
//! copies, WebDataset's order, and the errors of bad files.

use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use supcon_data::{
    expand_braces, load_image_folder, open_image_folder, open_shards, shard_order, shard_paths,
    ColorMode, DataError, Dataset, Fit, ImageFolderOptions,
};

fn noise_image(height: u32, width: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = (x * 31 + y * 17 + seed * 101) % 251;
        image::Rgb([v as u8, (v * 3 % 256) as u8, (255 - v) as u8])
    })
}

fn png_bytes(image: &RgbImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// Three classes of images of mixed sizes, in class folders.
fn write_folder(root: &Path) {
    for class in 0..3u32 {
        for i in 0..4u32 {
            let path = root.join(format!("class{class}/img{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, png_bytes(&noise_image(6 + i, 9 - i, class * 10 + i))).unwrap();
        }
    }
}

fn resized(fit: Fit) -> ImageFolderOptions {
    ImageFolderOptions {
        resize: Some((5, 5)),
        fit,
        color: ColorMode::Rgb,
    }
}

fn all_images(dataset: &Dataset) -> Vec<Vec<u8>> {
    let indices: Vec<usize> = (0..dataset.len()).collect();
    dataset
        .read_images(&indices)
        .unwrap()
        .into_iter()
        .map(|image| image.into_owned())
        .collect()
}

#[test]
fn a_streamed_folder_reads_the_bytes_of_the_in_memory_one() {
    let root = tempfile::tempdir().unwrap();
    write_folder(root.path());
    for fit in [Fit::Stretch, Fit::CenterCrop] {
        let memory = load_image_folder(root.path(), &resized(fit)).unwrap();
        let streamed = open_image_folder(root.path(), &resized(fit), true).unwrap();
        assert!(memory.is_in_memory() && !streamed.is_in_memory());
        assert!(streamed.pixels().is_none());
        assert_eq!(streamed.labels(), memory.labels());
        assert_eq!(streamed.class_names(), memory.class_names());
        assert_eq!(all_images(&streamed), all_images(&memory));
        assert_eq!(
            streamed.channel_stats().unwrap(),
            memory.channel_stats().unwrap()
        );
        // Splits and subsets pick the same images whether streamed or not.
        let (train_s, val_s) = streamed.train_validation_split(0.25, 7).unwrap();
        let (train_m, val_m) = memory.train_validation_split(0.25, 7).unwrap();
        assert_eq!(all_images(&train_s), all_images(&train_m));
        assert_eq!(all_images(&val_s), all_images(&val_m));
        assert_eq!(
            all_images(&streamed.sample(5, 3)),
            all_images(&memory.sample(5, 3))
        );
        assert_eq!(streamed.clone().into_memory().unwrap(), memory);
    }
}

#[test]
fn center_crop_keeps_the_aspect_ratio_and_the_centre() {
    let root = tempfile::tempdir().unwrap();
    // 4 rows × 8 columns: columns 0–1 and 6–7 black, the centre 4 columns white.
    let image = RgbImage::from_fn(8, 4, |x, _| {
        image::Rgb(if (2..6).contains(&x) {
            [255; 3]
        } else {
            [0; 3]
        })
    });
    std::fs::create_dir_all(root.path().join("a")).unwrap();
    std::fs::write(root.path().join("a/wide.png"), png_bytes(&image)).unwrap();
    let options = ImageFolderOptions {
        resize: Some((4, 4)),
        fit: Fit::CenterCrop,
        color: ColorMode::Gray,
    };
    let dataset = open_image_folder(root.path(), &options, true).unwrap();
    assert_eq!(&*dataset.read_image(0).unwrap(), &[255u8; 16][..]);
}

#[test]
fn an_unlabeled_folder_is_every_image_under_it() {
    let root = tempfile::tempdir().unwrap();
    write_folder(root.path());
    std::fs::write(
        root.path().join("loose.png"),
        png_bytes(&noise_image(5, 5, 99)),
    )
    .unwrap();
    let dataset = open_image_folder(root.path(), &resized(Fit::Stretch), false).unwrap();
    assert!(!dataset.is_labeled());
    assert_eq!(dataset.len(), 13);
    assert_eq!(dataset.num_classes(), 1);
    assert!(dataset.labels().iter().all(|&l| l == 0));
    let labeled = open_image_folder(root.path(), &resized(Fit::Stretch), true).unwrap();
    assert!(labeled.is_labeled());
}

#[test]
fn a_corrupt_image_is_named_when_read() {
    let root = tempfile::tempdir().unwrap();
    write_folder(root.path());
    let bad = root.path().join("class1/img2.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let streamed = open_image_folder(root.path(), &resized(Fit::Stretch), true).unwrap();
    // Indexing does not decode; the read does, and names the file.
    let err = streamed.read_images(&[0, 6, 7]).unwrap_err();
    assert!(
        matches!(&err, DataError::Image { path, .. } if path == &bad),
        "{err}"
    );
    assert!(err.to_string().contains("img2.png"), "{err}");
    let err = load_image_folder(root.path(), &resized(Fit::Stretch)).unwrap_err();
    assert!(
        matches!(&err, DataError::Image { path, .. } if path == &bad),
        "{err}"
    );
}

#[test]
fn streamed_images_of_another_size_are_refused_without_a_resize() {
    let root = tempfile::tempdir().unwrap();
    write_folder(root.path());
    let streamed = open_image_folder(root.path(), &ImageFolderOptions::default(), true).unwrap();
    assert_eq!(streamed.shape().height, 6);
    streamed.read_image(0).unwrap();
    let err = streamed.read_image(1).unwrap_err();
    assert!(matches!(err, DataError::MixedImageSizes { .. }), "{err}");
}

/// One member of a shard being written.
fn append(builder: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, bytes).unwrap();
}

/// Writes the folder's images as `shards` WebDataset shards, in the folder's order, and returns
/// their paths.
fn write_shards(dir: &Path, dataset: &Dataset, shards: usize, labels: bool) -> Vec<PathBuf> {
    let per_shard = dataset.len().div_ceil(shards);
    let shape = dataset.shape();
    (0..shards)
        .map(|s| {
            let path = dir.join(format!("train-{s:06}.tar"));
            let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
            for i in (s * per_shard)..((s + 1) * per_shard).min(dataset.len()) {
                let image = RgbImage::from_raw(
                    shape.width as u32,
                    shape.height as u32,
                    dataset.read_image(i).unwrap().into_owned(),
                )
                .unwrap();
                let key = format!("sample{i:05}");
                append(&mut builder, &format!("{key}.png"), &png_bytes(&image));
                if labels {
                    let label = dataset.label(i).to_string();
                    append(&mut builder, &format!("{key}.cls"), label.as_bytes());
                }
                append(&mut builder, &format!("{key}.json"), b"{}");
            }
            builder.finish().unwrap();
            path
        })
        .collect()
}

#[test]
fn shards_hold_the_images_and_labels_they_were_written_with() {
    let root = tempfile::tempdir().unwrap();
    write_folder(&root.path().join("images"));
    let folder = load_image_folder(&root.path().join("images"), &resized(Fit::Stretch)).unwrap();
    let paths = write_shards(root.path(), &folder, 3, true);
    let pattern = root.path().join("train-{000000..000002}.tar");
    assert_eq!(shard_paths(&pattern).unwrap(), paths);
    assert_eq!(shard_paths(root.path()).unwrap(), paths);
    let shards = open_shards(&paths, &ImageFolderOptions::default(), true).unwrap();
    assert_eq!(shards.len(), folder.len());
    assert_eq!(shards.labels(), folder.labels());
    assert_eq!(shards.class_names(), ["0", "1", "2"]);
    assert_eq!(all_images(&shards), all_images(&folder));
    assert_eq!(shards.shard_runs().unwrap(), vec![0..4, 4..8, 8..12]);
    assert_eq!(folder.shard_runs(), None);
    let unlabeled = open_shards(&paths, &ImageFolderOptions::default(), false).unwrap();
    assert!(!unlabeled.is_labeled());
    assert_eq!(all_images(&unlabeled), all_images(&folder));
}

#[test]
fn brace_patterns_expand_like_webdataset() {
    assert_eq!(
        expand_braces("a-{008..011}.tar").unwrap(),
        ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]
    );
    assert_eq!(
        expand_braces("{x,y}-{1..2}").unwrap(),
        ["x-1", "x-2", "y-1", "y-2"]
    );
    assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
    for bad in ["a-{1..", "a-{3..1}.tar", "a-{x..2}", "a}"] {
        assert!(
            matches!(expand_braces(bad), Err(DataError::ShardPattern { .. })),
            "{bad}"
        );
    }
}

#[test]
fn shard_order_is_a_seeded_permutation_that_reads_shard_by_shard() {
    let runs = vec![0..50, 50..120, 120..130, 130..200];
    let order = |buffer, seed| shard_order(&runs, buffer, &mut ChaCha8Rng::seed_from_u64(seed));
    for buffer in [0, 1, 16, 1000] {
        let a = order(buffer, 1);
        assert_eq!(a, order(buffer, 1), "deterministic");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "a permutation");
    }
    assert_ne!(order(16, 1), order(16, 2));
    // Without a buffer, each shard is read in sequence.
    let sequential = order(1, 3);
    let starts: Vec<usize> = sequential
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| w[1])
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    // With a buffer of 16, no sample comes out more than 16 places before it was read.
    let buffered = order(16, 3);
    let read_at: Vec<usize> = {
        let mut by_shard = runs.clone();
        let mut shard_sequence = vec![];
        // Reconstruct the shard order from the first index of each run in the sequential order.
        for &s in std::iter::once(&sequential[0]).chain(&starts) {
            let run = by_shard.iter().position(|r| r.start == s).unwrap();
            shard_sequence.extend(by_shard.remove(run));
        }
        shard_sequence
    };
    let position_read = |index: usize| read_at.iter().position(|&i| i == index).unwrap();
    for (position, &index) in buffered.iter().enumerate() {
        assert!(position_read(index) <= position + 16);
    }
}

#[test]
fn bad_shards_are_named() {
    let root = tempfile::tempdir().unwrap();
    write_folder(&root.path().join("images"));
    let folder = load_image_folder(&root.path().join("images"), &resized(Fit::Stretch)).unwrap();
    let paths = write_shards(root.path(), &folder, 2, true);
    let options = ImageFolderOptions::default();

    // Unlabeled shards read as labeled: the missing label is named.
    let unlabeled_dir = root.path().join("unlabeled");
    std::fs::create_dir(&unlabeled_dir).unwrap();
    let unlabeled = write_shards(&unlabeled_dir, &folder, 1, false);
    let err = open_shards(&unlabeled, &options, true).unwrap_err();
    assert!(
        matches!(&err, DataError::ShardSample { key, .. } if key == "sample00000"),
        "{err}"
    );
    assert!(err.to_string().contains("data.labels = false"), "{err}");

    // A truncated shard.
    let bytes = std::fs::read(&paths[1]).unwrap();
    let cut = root.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = open_shards(&[paths[0].clone(), cut.clone()], &options, true).unwrap_err();
    assert!(err.to_string().contains("cut.tar"), "{err}");

    // A corrupt image member: indexed, then named when read.
    let corrupt = root.path().join("corrupt.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&corrupt).unwrap());
    append(&mut builder, "a.png", b"not a png");
    append(&mut builder, "a.cls", b"1");
    append(&mut builder, "b.cls", b"seven");
    builder.finish().unwrap();
    let err = open_shards(std::slice::from_ref(&corrupt), &options, true).unwrap_err();
    assert!(
        matches!(&err, DataError::ShardLabel { text, .. } if text == "seven"),
        "{err}"
    );
    let corrupt_unlabeled = open_shards(
        std::slice::from_ref(&corrupt),
        &resized(Fit::Stretch),
        false,
    );
    // `b` has a label member but no image.
    let err = corrupt_unlabeled.unwrap_err();
    assert!(
        matches!(&err, DataError::ShardSample { key, .. } if key == "b"),
        "{err}"
    );
    let only_a = root.path().join("only-a.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&only_a).unwrap());
    append(&mut builder, "a.png", b"not a png");
    builder.finish().unwrap();
    let dataset =
        open_shards(std::slice::from_ref(&only_a), &resized(Fit::Stretch), false).unwrap();
    let err = dataset.read_image(0).unwrap_err();
    assert!(
        matches!(&err, DataError::ShardMember { member, .. } if member == "a.png"),
        "{err}"
    );
    assert!(err.to_string().contains("only-a.tar"), "{err}");

    // Missing shards.
    let err = open_shards(&[root.path().join("nope.tar")], &options, true).unwrap_err();
    assert!(err.to_string().contains("nope.tar"), "{err}");
}
