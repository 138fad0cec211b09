//! Reads the real Fashion-MNIST files (Debian's `dataset-fashion-mnist`, which CI installs;
//! `$SUPCON_DATA` may point elsewhere). Each split is decompressed once per test binary.

use std::sync::OnceLock;

use supcon_data::{DataError, Dataset, FashionMnist, ImageShape, Partition, Split};

fn load(split: Split) -> &'static Dataset {
    static TRAIN: OnceLock<Dataset> = OnceLock::new();
    static TEST: OnceLock<Dataset> = OnceLock::new();
    let cell = match split {
        Split::Train => &TRAIN,
        Split::Test => &TEST,
    };
    cell.get_or_init(|| {
        FashionMnist::load(split, None).unwrap_or_else(|e| panic!("loading Fashion-MNIST: {e}"))
    })
}

#[test]
fn train_split_has_the_published_size_shape_and_balance() {
    let train = load(Split::Train);
    assert_eq!(train.len(), 60_000);
    assert_eq!(train.shape(), ImageShape::new(28, 28, 1));
    assert_eq!(train.pixels().unwrap().len(), 60_000 * 784);
    assert_eq!(train.partition(), Partition::Train);
    assert_eq!(train.class_counts(), vec![6_000; 10]);
    assert_eq!(train.class_names()[0], "T-shirt/top");
    assert_eq!(train.class_names()[9], "Ankle boot");
    assert_eq!(&train.labels()[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
}

#[test]
fn test_split_has_the_published_size_and_first_labels() {
    let test = load(Split::Test);
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.shape(), ImageShape::new(28, 28, 1));
    assert_eq!(test.partition(), Partition::Test);
    assert_eq!(test.class_counts(), vec![1_000; 10]);
    assert_eq!(&test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
}

#[test]
fn pixels_match_the_published_statistics() {
    // The normalisation constants everyone uses for Fashion-MNIST: mean 0.2860, std 0.3530.
    let stats = load(Split::Train).channel_stats().unwrap();
    assert_eq!(stats.count, 60_000 * 784);
    assert!(
        (stats.mean[0] - 0.2860).abs() < 5e-4,
        "mean {}",
        stats.mean[0]
    );
    assert!((stats.std[0] - 0.3530).abs() < 5e-4, "std {}", stats.std[0]);
    // First image: row 14 (a known row of the ankle boot), and the pixel sum of the image.
    let first = load(Split::Train).read_image(0).unwrap();
    assert_eq!(first.len(), 784);
    assert_eq!(first.iter().map(|&p| u64::from(p)).sum::<u64>(), 76_247);
    assert_eq!(&first[14 * 28..14 * 28 + 6], &[0, 0, 1, 4, 6, 7]);
}

#[test]
fn test_set_cannot_be_split_for_model_selection() {
    let err = load(Split::Test)
        .train_validation_split(0.1, 0)
        .unwrap_err();
    assert!(matches!(err, DataError::SplitOfTestSet), "{err}");
}

#[test]
fn train_validation_split_of_the_real_data_is_stratified() {
    let (train, validation) = load(Split::Train).train_validation_split(0.1, 7).unwrap();
    assert_eq!(validation.class_counts(), vec![600; 10]);
    assert_eq!(train.class_counts(), vec![5_400; 10]);
    assert_eq!(validation.partition(), Partition::Validation);
}

#[test]
fn the_debian_folder_resolves_without_location_or_environment() {
    let dir = FashionMnist::locate_with_env(None, None).unwrap();
    assert_eq!(dir, std::path::Path::new(FashionMnist::DEBIAN_DIR));
}
