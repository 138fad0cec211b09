//! CIFAR readers on synthetic batches (the real files are not on the test machines).

use std::path::Path;

use supcon_data::{
    encode_cifar10, encode_cifar100, parse_cifar10, parse_cifar100, Cifar10, Cifar100,
    Cifar100Label, DataError, Dataset, ImageShape, ParseError, Partition, Split,
    CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES, CIFAR100_RECORD_BYTES, CIFAR10_CLASS_NAMES,
    CIFAR10_RECORD_BYTES,
};

/// A planar record whose red plane counts up, green is constant and blue counts down.
fn planar_image(seed: u8) -> Vec<u8> {
    let mut planar = Vec::with_capacity(3072);
    planar.extend((0..1024).map(|i| (i as u8).wrapping_add(seed)));
    planar.extend(std::iter::repeat_n(seed, 1024));
    planar.extend((0..1024).map(|i| 255 - (i as u8).wrapping_add(seed)));
    planar
}

fn cifar10_record(label: u8, seed: u8) -> Vec<u8> {
    let mut record = vec![label];
    record.extend(planar_image(seed));
    record
}

fn cifar100_record(coarse: u8, fine: u8, seed: u8) -> Vec<u8> {
    let mut record = vec![coarse, fine];
    record.extend(planar_image(seed));
    record
}

#[test]
fn cifar10_records_become_hwc_images() {
    let bytes = [cifar10_record(3, 0), cifar10_record(9, 5)].concat();
    let batch = parse_cifar10(&bytes).unwrap();
    assert_eq!(batch.labels, vec![3, 9]);
    assert_eq!(batch.pixels.len(), 2 * 3072);
    // Image 1, row 2, column 7: planar index 2·32 + 7 = 71 in each plane.
    let hwc = &batch.pixels[3072..];
    let at = (2 * 32 + 7) * 3;
    assert_eq!(&hwc[at..at + 3], &[71 + 5, 5, 255 - (71 + 5)]);
}

#[test]
fn cifar100_keeps_both_labels() {
    let bytes = [cifar100_record(19, 99, 1), cifar100_record(0, 4, 2)].concat();
    let batch = parse_cifar100(&bytes).unwrap();
    assert_eq!(batch.coarse_labels, vec![19, 0]);
    assert_eq!(batch.fine_labels, vec![99, 4]);
    assert_eq!(&batch.pixels[..3], &[1, 1, 254]);
}

#[test]
fn truncated_record_reports_offset_and_sizes() {
    let mut bytes = [cifar10_record(1, 0), cifar10_record(2, 0)].concat();
    bytes.truncate(bytes.len() - 10);
    assert_eq!(
        parse_cifar10(&bytes).unwrap_err(),
        ParseError::Truncated {
            what: "CIFAR-10 record",
            offset: CIFAR10_RECORD_BYTES,
            expected: CIFAR10_RECORD_BYTES,
            actual: CIFAR10_RECORD_BYTES - 10
        }
    );
    // A CIFAR-10 batch read as CIFAR-100 does not divide into records either.
    let ten = [cifar10_record(1, 0), cifar10_record(2, 0)].concat();
    assert!(matches!(
        parse_cifar100(&ten).unwrap_err(),
        ParseError::Truncated { .. }
    ));
    assert_eq!(
        parse_cifar10(&[]).unwrap_err(),
        ParseError::Empty {
            what: "CIFAR-10 record"
        }
    );
}

#[test]
fn labels_out_of_range_name_record_and_offset() {
    let bytes = [cifar10_record(1, 0), cifar10_record(10, 0)].concat();
    assert_eq!(
        parse_cifar10(&bytes).unwrap_err(),
        ParseError::LabelOutOfRange {
            index: 1,
            offset: CIFAR10_RECORD_BYTES,
            label: 10,
            num_classes: 10
        }
    );
    let bytes = [cifar100_record(0, 0, 0), cifar100_record(3, 100, 0)].concat();
    assert_eq!(
        parse_cifar100(&bytes).unwrap_err(),
        ParseError::LabelOutOfRange {
            index: 1,
            offset: CIFAR100_RECORD_BYTES + 1,
            label: 100,
            num_classes: 100
        }
    );
    let bytes = cifar100_record(20, 0, 0);
    assert!(matches!(
        parse_cifar100(&bytes).unwrap_err(),
        ParseError::LabelOutOfRange {
            index: 0,
            offset: 0,
            label: 20,
            num_classes: 20
        }
    ));
}

fn synthetic_dataset(count: usize, num_classes: usize) -> Dataset {
    let pixels: Vec<u8> = (0..count * 3072).map(|i| (i * 31 % 256) as u8).collect();
    let labels = (0..count).map(|i| ((i * 7) % num_classes) as i64).collect();
    let names = (0..num_classes).map(|c| c.to_string()).collect();
    Dataset::new(pixels, ImageShape::new(32, 32, 3), labels, names).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn cifar10_written_then_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut train = Vec::new();
    for (i, file) in Cifar10::TRAIN_FILES.iter().enumerate() {
        let part = synthetic_dataset(3 + i, 10);
        write(dir.path(), file, &encode_cifar10(&part).unwrap());
        train.push(part);
    }
    let test = synthetic_dataset(4, 10);
    write(
        dir.path(),
        "test_batch.bin",
        &encode_cifar10(&test).unwrap(),
    );

    let read = Cifar10::load(Split::Train, Some(dir.path())).unwrap();
    assert_eq!(read.len(), 3 + 4 + 5 + 6 + 7);
    assert_eq!(read.partition(), Partition::Train);
    assert_eq!(read.shape(), ImageShape::new(32, 32, 3));
    let expected_pixels: Vec<u8> = train
        .iter()
        .flat_map(|d| d.pixels().unwrap().to_vec())
        .collect();
    let expected_labels: Vec<i64> = train.iter().flat_map(|d| d.labels().to_vec()).collect();
    assert_eq!(read.pixels().unwrap(), expected_pixels.as_slice());
    assert_eq!(read.labels(), expected_labels.as_slice());
    // No batches.meta.txt: the built-in names.
    assert_eq!(read.class_names()[0], CIFAR10_CLASS_NAMES[0]);

    // With batches.meta.txt (trailing blank line as in the archive): its names.
    let meta: String = (0..10).map(|c| format!("name{c}\n")).collect::<String>() + "\n";
    write(dir.path(), "batches.meta.txt", meta.as_bytes());
    let read = Cifar10::load_dir(dir.path(), Split::Test).unwrap();
    assert_eq!(read.pixels().unwrap(), test.pixels().unwrap());
    assert_eq!(read.partition(), Partition::Test);
    assert_eq!(read.class_names()[9], "name9");
}

#[test]
fn cifar10_is_found_in_its_archive_folder_under_the_location() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(Cifar10::FOLDER);
    std::fs::create_dir(&dir).unwrap();
    write(
        &dir,
        "test_batch.bin",
        &encode_cifar10(&synthetic_dataset(2, 10)).unwrap(),
    );
    assert_eq!(
        Cifar10::load(Split::Test, Some(root.path())).unwrap().len(),
        2
    );
    // The train batches are missing: an error naming the first one.
    let err = Cifar10::load(Split::Train, Some(root.path())).unwrap_err();
    assert!(
        matches!(err, DataError::Io { ref path, .. } if path.ends_with("data_batch_1.bin")),
        "{err}"
    );
}

#[test]
fn cifar100_round_trip_with_either_label_as_target() {
    let fine = synthetic_dataset(6, 100);
    let coarse: Vec<i64> = fine.labels().iter().map(|&l| l / 5).collect();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "train.bin",
        &encode_cifar100(&fine, &coarse).unwrap(),
    );
    let read = Cifar100::load_dir(dir.path(), Split::Train, Cifar100Label::Fine).unwrap();
    assert_eq!(read.labels(), fine.labels());
    assert_eq!(read.pixels().unwrap(), fine.pixels().unwrap());
    assert_eq!(read.num_classes(), 100);
    assert_eq!(read.class_names()[99], CIFAR100_FINE_NAMES[99]);
    let read = Cifar100::load_dir(dir.path(), Split::Train, Cifar100Label::Coarse).unwrap();
    assert_eq!(read.labels(), coarse.as_slice());
    assert_eq!(read.num_classes(), 20);
    assert_eq!(read.class_names()[16], "small_mammals");

    // A names file with the wrong count is an error naming it.
    write(dir.path(), "coarse_label_names.txt", b"a\nb\n");
    let err = Cifar100::load_dir(dir.path(), Split::Train, Cifar100Label::Coarse).unwrap_err();
    assert!(
        matches!(err, DataError::ClassNames { expected: 20, found: 2, ref path } if path.ends_with("coarse_label_names.txt")),
        "{err}"
    );
}

#[test]
fn builtin_class_name_lists_are_complete_and_distinct() {
    for names in [
        &CIFAR10_CLASS_NAMES[..],
        &CIFAR100_FINE_NAMES[..],
        &CIFAR100_COARSE_NAMES[..],
    ] {
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }
    // The published CIFAR-100 lists are in alphabetical order.
    assert!(CIFAR100_FINE_NAMES.windows(2).all(|w| w[0] < w[1]));
    assert!(CIFAR100_COARSE_NAMES.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn encoding_rejects_what_cifar_cannot_hold() {
    let gray = Dataset::new(
        vec![0; 32 * 32],
        ImageShape::new(32, 32, 1),
        vec![0],
        vec!["a".into()],
    )
    .unwrap();
    assert!(matches!(
        encode_cifar10(&gray).unwrap_err(),
        DataError::Encode { .. }
    ));
    let eleven = synthetic_dataset(11, 11);
    assert!(matches!(
        encode_cifar10(&eleven).unwrap_err(),
        DataError::Encode { .. }
    ));
    let fine = synthetic_dataset(2, 100);
    assert!(matches!(
        encode_cifar100(&fine, &[0]).unwrap_err(),
        DataError::Encode { .. }
    ));
}

#[test]
fn missing_cifar_says_where_it_looked_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cifar100::load(Split::Test, Cifar100Label::Fine, Some(dir.path())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cifar-100-binary.tar.gz"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
}
