//! Loads a dataset and prints its size, class counts, pixel statistics and load time.
//!
//! ```text
//! cargo run -p supcon-data --example summary -- fashion-mnist [PATH]
//! cargo run -p supcon-data --example summary -- mnist PATH
//! cargo run -p supcon-data --example summary -- cifar10 [PATH]
//! cargo run -p supcon-data --example summary -- cifar100 [PATH]
//! cargo run -p supcon-data --example summary -- folder PATH [SIZE]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use supcon_data::{
    load_image_folder, Cifar10, Cifar100, Cifar100Label, ColorMode, DataError, Dataset,
    FashionMnist, ImageFolderOptions, Mnist, Split,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map(String::as_str).unwrap_or("fashion-mnist");
    let path = args.get(1).map(PathBuf::from);
    let location = path.as_deref();
    let load = |split: Split| -> Result<Dataset, DataError> {
        match kind {
            "fashion-mnist" => FashionMnist::load(split, location),
            "mnist" => Mnist::load(split, location),
            "cifar10" => Cifar10::load(split, location),
            "cifar100" => Cifar100::load(split, Cifar100Label::Fine, location),
            other => panic!("unknown dataset {other}"),
        }
    };
    let splits: Vec<(&str, Dataset, f64)> = if kind == "folder" {
        let root = location.ok_or("folder needs a PATH")?;
        let size: Option<u32> = args.get(2).map(|s| s.parse()).transpose()?;
        let options = ImageFolderOptions {
            resize: size.map(|s| (s, s)),
            color: ColorMode::Rgb,
            ..Default::default()
        };
        let start = Instant::now();
        let dataset = load_image_folder(root, &options)?;
        vec![("folder", dataset, start.elapsed().as_secs_f64())]
    } else {
        let mut out = Vec::new();
        for (name, split) in [("train", Split::Train), ("test", Split::Test)] {
            let start = Instant::now();
            let dataset = load(split)?;
            out.push((name, dataset, start.elapsed().as_secs_f64()));
        }
        out
    };
    for (name, dataset, seconds) in &splits {
        let start = Instant::now();
        let stats = dataset.channel_stats()?;
        let stats_seconds = start.elapsed().as_secs_f64();
        println!(
            "{name}: {} images of {}, {} classes, loaded in {seconds:.3} s",
            dataset.len(),
            dataset.shape(),
            dataset.num_classes()
        );
        println!("  class counts: {:?}", dataset.class_counts());
        println!(
            "  mean {:.4?} std {:.4?} ([0, 1] units; {stats_seconds:.3} s)",
            stats.mean, stats.std
        );
    }
    Ok(())
}
