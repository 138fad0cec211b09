//! Streamed data for `cargo xtask bench data`: writes the benchmark's image folders, and
//! measures reading + decoding + two-view augmentation + batching from them.
//!
//! ```text
//! stream_throughput generate-jpeg <dir> <images> <side>   # Fashion-MNIST upsampled, RGB JPEGs
//! stream_throughput generate-png <dir> <images>           # Fashion-MNIST 28×28 gray PNGs
//! stream_throughput pack-shards <out> <folder> <shards>    # a labeled folder as WebDataset shards
//! stream_throughput throughput <dir> [--threads N] [--batch B] [--batches K]
//! stream_throughput epoch <dir> --stream|--memory|--shards [--threads N] [--batch B]
//! ```
//!
//! `throughput`: the SupContrast two-view recipe (`presets::supcon_cifar` at the images' side,
//! ImageNet's mean and std) on `K` batches of a seeded sample of a streamed folder, the images
//! decoded by rayon's pool of `N` threads, as the training pipeline does: an untimed pass, then
//! a timed one; one JSON line with `img_per_s` (source images per second, each giving two
//! views) and `img_per_cpu_s`.
//!
//! `epoch`: one epoch over every image of the folder (`presets::fashion_mnist`, two views),
//! streamed, first decoded into memory, or streamed from the `*.tar` shards in `<dir>`; one
//! JSON line with the peak resident memory (`VmHWM`) of the process, which is what the streamed
//! paths keep flat.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use supcon_augment::{presets, Augmenter, ImageRef};
use supcon_data::{
    open_image_folder, open_shards, scan_image_folder, shard_paths, ColorMode, Dataset,
    FashionMnist, ImageFolderOptions, Split,
};

type Error = Box<dyn std::error::Error>;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, fields 14 and 15).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The path of image `i` of a generated folder: ten class folders, 1000 images per subfolder
/// (a million files in one folder would be slow to list on most file systems).
fn image_path(dir: &Path, i: usize, label: i64, extension: &str) -> PathBuf {
    dir.join(format!("c{label}"))
        .join(format!("{:04}", i / 1000))
        .join(format!("{i:07}.{extension}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::create_dir_all(path.parent().ok_or("no parent folder")?)?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Fashion-MNIST's training images, cycled to `count`, upsampled (bilinear) to `side`, tinted
/// per class into RGB and JPEG-encoded (quality 90): ImageNet-sized files with real content.
fn generate_jpeg(dir: &Path, count: usize, side: u32) -> Result<(), Error> {
    let source = FashionMnist::load(Split::Train, None)?;
    use rayon::prelude::*;
    (0..count)
        .into_par_iter()
        .try_for_each(|i| -> Result<(), String> {
            let k = i % source.len();
            let label = source.label(k);
            let pixels = source
                .read_image(k)
                .map_err(|e| e.to_string())?
                .into_owned();
            let gray = GrayImage::from_raw(28, 28, pixels).ok_or("bad image")?;
            let big =
                image::imageops::resize(&gray, side, side, image::imageops::FilterType::Triangle);
            let tint = [
                (label * 25) as u8,
                255 - (label * 20) as u8,
                (label * 13) as u8,
            ];
            let rgb = RgbImage::from_fn(side, side, |x, y| {
                let v = u16::from(big.get_pixel(x, y)[0]);
                image::Rgb(tint.map(|t| ((v * 3 + u16::from(t)) / 4) as u8))
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                .encode_image(&rgb)
                .map_err(|e| e.to_string())?;
            write(&image_path(dir, i, label, "jpg"), &bytes).map_err(|e| e.to_string())
        })?;
    Ok(())
}

/// Fashion-MNIST's training images (28×28 gray PNGs), cycled to `count`.
fn generate_png(dir: &Path, count: usize) -> Result<(), Error> {
    let source = FashionMnist::load(Split::Train, None)?;
    // Encode each source image once; the copies are the same bytes.
    use rayon::prelude::*;
    let encoded: Vec<Vec<u8>> = (0..source.len())
        .into_par_iter()
        .map(|k| {
            let pixels = source.read_image(k).expect("in memory").into_owned();
            let gray = GrayImage::from_raw(28, 28, pixels).expect("28×28");
            let mut bytes = std::io::Cursor::new(Vec::new());
            gray.write_to(&mut bytes, image::ImageFormat::Png)
                .expect("PNG encoding");
            bytes.into_inner()
        })
        .collect();
    (0..count).into_par_iter().try_for_each(|i| {
        let k = i % source.len();
        write(&image_path(dir, i, source.label(k), "png"), &encoded[k]).map_err(|e| e.to_string())
    })?;
    Ok(())
}

/// Where an epoch's images come from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Stream,
    Memory,
    Shards,
}

struct Options {
    threads: usize,
    batch: usize,
    batches: usize,
    source: Source,
}

fn options(args: &[String]) -> Result<Options, Error> {
    let mut o = Options {
        threads: 2,
        batch: 64,
        batches: 30,
        source: Source::Stream,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<usize, Error> {
            Ok(it.next().ok_or(format!("{name} needs a value"))?.parse()?)
        };
        match flag.as_str() {
            "--threads" => o.threads = value("--threads")?,
            "--batch" => o.batch = value("--batch")?,
            "--batches" => o.batches = value("--batches")?,
            "--stream" => o.source = Source::Stream,
            "--memory" => o.source = Source::Memory,
            "--shards" => o.source = Source::Shards,
            other => return Err(format!("unknown option `{other}`").into()),
        }
    }
    Ok(o)
}

/// What the training pipeline does per batch: read (decode) the images, augment two views.
fn prepare(
    dataset: &Dataset,
    augmenter: &Augmenter,
    indices: &[usize],
    out: &mut Vec<f32>,
) -> Result<(), Error> {
    let decoded = dataset.read_images(indices)?;
    let shape = dataset.shape();
    let images: Vec<ImageRef<'_>> = decoded
        .iter()
        .map(|data| ImageRef {
            data,
            height: shape.height,
            width: shape.width,
            channels: shape.channels,
        })
        .collect();
    let ids: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    out.resize(augmenter.output_len(&images, 2)?, 0.0);
    augmenter.augment_batch(&images, &ids, 0, 2, out)?;
    Ok(())
}

fn shuffled(len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(1));
    order
}

/// Batches of `order` through `prepare`; returns (images, seconds, CPU seconds).
fn time_batches(
    dataset: &Dataset,
    augmenter: &Augmenter,
    order: &[usize],
    batch: usize,
) -> Result<(usize, f64, Option<f64>), Error> {
    let mut out = Vec::new();
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    for indices in order.chunks(batch) {
        prepare(dataset, augmenter, indices, &mut out)?;
    }
    let cpu = cpu_start.zip(cpu_seconds()).map(|(a, b)| b - a);
    Ok((order.len(), start.elapsed().as_secs_f64(), cpu))
}

fn json_number(value: Option<f64>) -> String {
    value.map_or("null".into(), |v| format!("{v:.1}"))
}

fn throughput(dir: &Path, o: &Options) -> Result<(), Error> {
    let dataset = open_image_folder(dir, &ImageFolderOptions::default(), true)?;
    let side = dataset.shape().height;
    let augmenter = Augmenter::new(
        presets::supcon_cifar(side, &IMAGENET_MEAN, &IMAGENET_STD)?,
        1,
    );
    let order = shuffled(dataset.len());
    let needed = o.batches * o.batch;
    if order.len() < needed {
        return Err(format!("{} images, the benchmark needs {needed}", order.len()).into());
    }
    // As the torchvision side: an untimed pass over the sample (thread pool, page cache), then
    // the timed one.
    time_batches(&dataset, &augmenter, &order[..needed], o.batch)?;
    let (images, seconds, cpu) = time_batches(&dataset, &augmenter, &order[..needed], o.batch)?;
    println!(
        "{{\"img_per_s\": {:.1}, \"img_per_cpu_s\": {}, \"threads\": {}, \"batch\": {}, \"images\": {images}, \"side\": {side}, \"seconds\": {seconds:.3}}}",
        images as f64 / seconds,
        json_number(cpu.filter(|&c| c > 0.0).map(|c| images as f64 / c)),
        o.threads,
        o.batch,
    );
    Ok(())
}

fn epoch(dir: &Path, o: &Options) -> Result<(), Error> {
    let start = Instant::now();
    let gray = ImageFolderOptions {
        color: ColorMode::Gray,
        ..Default::default()
    };
    let mut dataset = match o.source {
        Source::Shards => open_shards(&shard_paths(dir)?, &gray, true)?,
        Source::Stream | Source::Memory => open_image_folder(dir, &gray, true)?,
    };
    let indexed = start.elapsed().as_secs_f64();
    let rss_indexed = peak_rss_mib();
    if o.source == Source::Memory {
        dataset = dataset.into_memory()?;
    }
    let loaded = start.elapsed().as_secs_f64();
    let augmenter = Augmenter::new(presets::fashion_mnist(dataset.shape().height)?, 1);
    let order = shuffled(dataset.len());
    let (images, seconds, _) = time_batches(&dataset, &augmenter, &order, o.batch)?;
    println!(
        "{{\"mode\": \"{}\", \"images\": {images}, \"peak_rss_mib\": {}, \"rss_after_index_mib\": {}, \"index_seconds\": {indexed:.1}, \"load_seconds\": {loaded:.1}, \"epoch_seconds\": {seconds:.1}, \"img_per_s\": {:.1}, \"threads\": {}}}",
        match o.source {
            Source::Stream => "stream",
            Source::Memory => "memory",
            Source::Shards => "shards",
        },
        json_number(peak_rss_mib()),
        json_number(rss_indexed),
        images as f64 / seconds,
        o.threads,
    );
    Ok(())
}

/// Writes the labeled image folder `folder` as `count` WebDataset shards `out/train-NNNNNN.tar`
/// (`<key>.png` with the file's bytes, `<key>.cls`), in the folder's order.
fn pack_shards(out: &Path, folder: &Path, count: usize) -> Result<(), Error> {
    let files: Vec<(PathBuf, usize)> = scan_image_folder(folder)?
        .into_iter()
        .enumerate()
        .flat_map(|(label, (_, paths))| paths.into_iter().map(move |p| (p, label)))
        .collect();
    std::fs::create_dir_all(out)?;
    let per_shard = files.len().div_ceil(count.max(1));
    for (s, chunk) in files.chunks(per_shard).enumerate() {
        let file = std::fs::File::create(out.join(format!("train-{s:06}.tar")))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        for (i, (path, label)) in chunk.iter().enumerate() {
            let key = format!("{s:06}-{i:07}");
            for (name, bytes) in [
                (format!("{key}.png"), std::fs::read(path)?),
                (format!("{key}.cls"), label.to_string().into_bytes()),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, name, bytes.as_slice())?;
            }
        }
        builder.into_inner()?;
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, dir, rest) = match args.as_slice() {
        [command, dir, rest @ ..] => (command.as_str(), Path::new(dir), rest),
        _ => {
            return Err(
                "usage: stream_throughput generate-jpeg|generate-png|throughput|epoch <dir> …"
                    .into(),
            )
        }
    };
    let count = |i: usize| -> Result<usize, Error> {
        Ok(rest
            .get(i)
            .ok_or("the number of images is missing")?
            .parse()?)
    };
    match command {
        "generate-jpeg" => generate_jpeg(dir, count(0)?, count(1)? as u32),
        "generate-png" => generate_png(dir, count(0)?),
        "pack-shards" => pack_shards(
            dir,
            Path::new(rest.first().ok_or("the image folder is missing")?),
            count(1)?,
        ),
        "throughput" | "epoch" => {
            let o = options(rest)?;
            rayon::ThreadPoolBuilder::new()
                .num_threads(o.threads)
                .build_global()?;
            if command == "throughput" {
                throughput(dir, &o)
            } else {
                epoch(dir, &o)
            }
        }
        other => Err(format!("unknown command `{other}`").into()),
    }
}
