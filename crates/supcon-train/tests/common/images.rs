//! Fashion-MNIST written out as files for the streamed-data tests: a PNG folder and WebDataset
//! tar shards of a small class-balanced subset.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat};
use supcon_data::{Dataset, FashionMnist, Split};

pub const TRAIN_PER_CLASS: usize = 30;
pub const TEST_PER_CLASS: usize = 10;

fn png(dataset: &Dataset, index: usize) -> Vec<u8> {
    let image =
        GrayImage::from_raw(28, 28, dataset.read_image(index).unwrap().into_owned()).unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn subset(split: Split, per_class: usize) -> Dataset {
    FashionMnist::load(split, None)
        .unwrap()
        .first_per_class(per_class)
}

/// `root/{train,test}/c<label>/<index>.png`: class folders sort in label order, so the folder
/// holds the subset's images in its order (class by class).
pub fn write_folder(root: &Path) {
    for (split, name, per_class) in [
        (Split::Train, "train", TRAIN_PER_CLASS),
        (Split::Test, "test", TEST_PER_CLASS),
    ] {
        let data = subset(split, per_class);
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.sort_by_key(|&i| data.label(i));
        for (position, i) in order.into_iter().enumerate() {
            let path = root.join(format!("{name}/c{}/{position:05}.png", data.label(i)));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, png(&data, i)).unwrap();
        }
    }
}

/// The folder's images as `shards` shards per split (`<split>-00000N.tar`), in folder order,
/// with `.cls` labels when `labels`.
pub fn write_shards(folder: &Path, out: &Path, shards: usize, labels: bool) {
    std::fs::create_dir_all(out).unwrap();
    for split in ["train", "test"] {
        let mut files: Vec<(PathBuf, usize)> = Vec::new();
        let mut classes: Vec<PathBuf> = std::fs::read_dir(folder.join(split))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        classes.sort();
        for (label, class) in classes.iter().enumerate() {
            let mut images: Vec<PathBuf> = std::fs::read_dir(class)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            images.sort();
            files.extend(images.into_iter().map(|p| (p, label)));
        }
        let per_shard = files.len().div_ceil(shards);
        for (s, chunk) in files.chunks(per_shard).enumerate() {
            let file = std::fs::File::create(out.join(format!("{split}-{s:06}.tar"))).unwrap();
            let mut builder = tar::Builder::new(file);
            for (i, (path, label)) in chunk.iter().enumerate() {
                let key = format!("{s:03}{i:05}");
                builder
                    .append_path_with_name(path, format!("{key}.png"))
                    .unwrap();
                if labels {
                    let text = label.to_string();
                    let mut header = tar::Header::new_gnu();
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder
                        .append_data(&mut header, format!("{key}.cls"), text.as_bytes())
                        .unwrap();
                }
            }
            builder.finish().unwrap();
        }
    }
}
