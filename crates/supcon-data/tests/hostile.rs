//! Hostile inputs (issue 40): every size that comes from a file or a setting is bounded before
//! it is allocated. Each case builds a small bad input on disk and expects a typed error that
//! names the file (and member), the value and the limit, quickly and without a large allocation.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat};
use supcon_data::{
    expand_braces, expand_braces_with_limits, index_tar, load_image_folder, open_image_folder,
    open_shards, open_shards_with_limits, read_maybe_gzip_with_limits, shard_paths, ColorMode,
    DataError, Fit, ImageFolderOptions, Limits,
};

fn png_bytes(image: &GrayImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

fn gray_resize(height: u32, width: u32, fit: Fit) -> ImageFolderOptions {
    ImageFolderOptions {
        resize: Some((height, width)),
        fit,
        color: ColorMode::Gray,
    }
}

/// Asserts a `LimitExceeded` for `setting` whose message names every one of `names`.
fn assert_limit(result: Result<impl std::fmt::Debug, DataError>, setting: &str, names: &[&str]) {
    let err = result.expect_err("a limit should be exceeded");
    let message = err.to_string();
    assert!(
        matches!(&err, DataError::LimitExceeded { setting: s, .. } if *s == setting),
        "{message}"
    );
    for name in names.iter().chain(&[setting]) {
        assert!(message.contains(name), "`{name}` missing from: {message}");
    }
}

// ---- Images -------------------------------------------------------------------------------

#[test]
fn a_thin_image_is_refused_before_its_resize_is_allocated() {
    let root = tempfile::tempdir().unwrap();
    // One row of 3 000 000 pixels: about 3 KB of PNG. A centre crop to 224 × 224 would scale it
    // to 224 × 672 000 000 (150 G pixels); a stretch would make a 224 × 3 000 000 float buffer.
    write(
        &root.path().join("a/thin.png"),
        &png_bytes(&GrayImage::new(3_000_000, 1)),
    );
    let limit = Limits::DEFAULT_MAX_IMAGE_PIXELS.to_string();
    for fit in [Fit::CenterCrop, Fit::Stretch] {
        let options = gray_resize(224, 224, fit);
        let dataset = open_image_folder(root.path(), &options, true).unwrap();
        assert_limit(
            dataset.read_image(0),
            "max_image_pixels",
            &["thin.png", &limit],
        );
        assert_limit(
            load_image_folder(root.path(), &options),
            "max_image_pixels",
            &["thin.png", &limit],
        );
    }
    // The same image on its side shrinks column by column: nothing large, it is read.
    let tall = tempfile::tempdir().unwrap();
    write(
        &tall.path().join("a/tall.png"),
        &png_bytes(&GrayImage::new(1, 300_000)),
    );
    let options = gray_resize(224, 224, Fit::Stretch);
    let dataset = open_image_folder(tall.path(), &options, true).unwrap();
    assert_eq!(dataset.read_image(0).unwrap().len(), 224 * 224);
}

/// A 1 × 1 PNG whose header claims `width` × `height` (its checksum fixed, its data too short).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png_bytes(&GrayImage::new(1, 1));
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), 5 more bytes, CRC.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

#[test]
fn an_image_header_claiming_ten_billion_pixels_is_refused_before_decoding() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("a/huge.png"),
        &png_claiming(100_000, 100_000),
    );
    assert_limit(
        open_image_folder(root.path(), &ImageFolderOptions::default(), true),
        "max_image_pixels",
        &["huge.png", "100000x100000", "10000000000", "67108864"],
    );
}

#[test]
fn a_resize_target_over_the_pixel_limit_is_refused() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("a/one.png"),
        &png_bytes(&GrayImage::new(2, 2)),
    );
    let options = gray_resize(100_000, 100_000, Fit::Stretch);
    assert_limit(
        open_image_folder(root.path(), &options, true),
        "max_image_pixels",
        &["100000x100000", "10000000000", "67108864"],
    );
}

#[test]
fn the_pixel_limit_can_be_lowered_and_raised() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("a/one.png"),
        &png_bytes(&GrayImage::new(4, 4)),
    );
    let mut limits = Limits::default();
    limits.max_image_pixels = 15;
    let options = ImageFolderOptions::default();
    assert_limit(
        supcon_data::open_image_folder_with_limits(root.path(), &options, true, &limits),
        "max_image_pixels",
        &["one.png", "16", "15"],
    );
    limits.max_image_pixels = 16;
    supcon_data::open_image_folder_with_limits(root.path(), &options, true, &limits).unwrap();
}

#[test]
fn a_dataset_too_large_for_memory_is_an_error_not_an_abort() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("a/one.png"),
        &png_bytes(&GrayImage::new(2, 2)),
    );
    // Limits lifted: a resize to 2^31 × 2^31 × 3 bytes (1.4e19) is accepted, then its buffer
    // cannot be allocated.
    let mut limits = Limits::default();
    limits.max_image_pixels = u64::MAX;
    let options = ImageFolderOptions {
        resize: Some((1 << 31, 1 << 31)),
        ..Default::default()
    };
    let dataset =
        supcon_data::open_image_folder_with_limits(root.path(), &options, true, &limits).unwrap();
    let err = dataset.into_memory().unwrap_err();
    assert!(
        matches!(err, DataError::TooLargeForMemory { images: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("data.stream"), "{err}");
}

// ---- Tar shards ---------------------------------------------------------------------------

/// A GNU tar header for `name` declaring `size` bytes (whatever follows it), checksum set.
fn header(name: &str, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(size);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_cksum();
    header
}

/// A shard written block by block, so that a header may declare more than follows it.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn member(mut self, header: &tar::Header, data: &[u8]) -> Self {
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        let header = header(name, data.len() as u64, tar::EntryType::Regular);
        self.member(&header, data)
    }

    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}

fn tiny_png() -> Vec<u8> {
    png_bytes(&GrayImage::new(1, 1))
}

#[test]
fn a_shard_member_declaring_a_terabyte_is_refused_before_it_is_read() {
    let root = tempfile::tempdir().unwrap();
    let huge = header("a.png", 1 << 40, tar::EntryType::Regular);
    let shard = write(
        &root.path().join("huge.tar"),
        &RawTar::default().member(&huge, &tiny_png()).end(),
    );
    let limit = Limits::DEFAULT_MAX_SHARD_MEMBER_BYTES.to_string();
    assert_limit(
        open_shards(std::slice::from_ref(&shard), &Default::default(), false),
        "max_shard_member_bytes",
        &["huge.tar", "a.png", "1099511627776", &limit],
    );
    // Under the limit but past the shard's end: a truncated shard, named as such.
    let past_end = header("a.png", 1 << 20, tar::EntryType::Regular);
    let shard = write(
        &root.path().join("cut.tar"),
        &RawTar::default().member(&past_end, &tiny_png()).end(),
    );
    let err = open_shards(std::slice::from_ref(&shard), &Default::default(), false).unwrap_err();
    assert!(
        matches!(&err, DataError::ShardTruncated { member, size, .. }
            if member == "a.png" && *size == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("cut.tar"), "{err}");
}

#[test]
fn extension_records_declaring_a_terabyte_are_refused_before_they_are_read() {
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (
            "././@LongLink",
            tar::EntryType::GNULongName,
            "GNU long name",
        ),
        (
            "PaxHeaders/a.png",
            tar::EntryType::XHeader,
            "PAX extended header",
        ),
    ];
    for (name, kind, what) in cases {
        let record = header(name, 1 << 40, kind);
        let shard = write(
            &root.path().join("records.tar"),
            &RawTar::default()
                .member(&record, b"a.png")
                .file("a.png", &tiny_png())
                .end(),
        );
        assert_limit(
            open_shards(std::slice::from_ref(&shard), &Default::default(), false),
            "max_tar_header_bytes",
            &["records.tar", name, what, "65536"],
        );
    }
}

#[test]
fn a_long_name_record_under_the_limit_names_the_member() {
    let long_name = format!("{}/sample.png", "d".repeat(200));
    let mut name_record = long_name.clone().into_bytes();
    name_record.push(0);
    let bytes = RawTar::default()
        .member(
            &header(
                "././@LongLink",
                name_record.len() as u64,
                tar::EntryType::GNULongName,
            ),
            &name_record,
        )
        .file("ignored", &tiny_png())
        .end();
    let samples = index_tar(
        std::io::Cursor::new(bytes),
        Path::new("mem.tar"),
        false,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].image_member, long_name);
}

fn labeled_shard(dir: &Path, label: &[u8]) -> PathBuf {
    write(
        &dir.join("labels.tar"),
        &RawTar::default()
            .file("a.png", &tiny_png())
            .file("a.cls", label)
            .end(),
    )
}

#[test]
fn a_class_index_past_the_limit_is_refused_before_the_class_list_is_sized() {
    let root = tempfile::tempdir().unwrap();
    for label in ["100000000000", "9223372036854775807"] {
        let shard = labeled_shard(root.path(), label.as_bytes());
        assert_limit(
            open_shards(std::slice::from_ref(&shard), &Default::default(), true),
            "max_class_id",
            &["labels.tar", "a.cls", label, "1000000"],
        );
    }
    // The limit is inclusive and can be moved.
    let mut limits = Limits::default();
    limits.max_class_id = 5;
    let shard = labeled_shard(root.path(), b"5\n");
    let dataset = open_shards_with_limits(
        std::slice::from_ref(&shard),
        &Default::default(),
        true,
        &limits,
    )
    .unwrap();
    assert_eq!(dataset.num_classes(), 6);
    let shard = labeled_shard(root.path(), b"6");
    assert_limit(
        open_shards_with_limits(
            std::slice::from_ref(&shard),
            &Default::default(),
            true,
            &limits,
        ),
        "max_class_id",
        &["a.cls", "6", "5"],
    );
}

#[test]
fn a_label_body_over_the_limit_is_refused_before_it_is_read() {
    let root = tempfile::tempdir().unwrap();
    let long_body = format!("1{}", " ".repeat(100));
    let shard = labeled_shard(root.path(), long_body.as_bytes());
    assert_limit(
        open_shards(std::slice::from_ref(&shard), &Default::default(), true),
        "max_label_bytes",
        &["labels.tar", "a.cls", "101", "64"],
    );
    let declared = header("a.cls", 1 << 40, tar::EntryType::Regular);
    let shard = write(
        &root.path().join("declared.tar"),
        &RawTar::default()
            .file("a.png", &tiny_png())
            .member(&declared, b"1")
            .end(),
    );
    assert_limit(
        open_shards(std::slice::from_ref(&shard), &Default::default(), true),
        "max_label_bytes",
        &["declared.tar", "a.cls", "1099511627776"],
    );
}

// ---- Brace patterns -----------------------------------------------------------------------

#[test]
fn brace_patterns_naming_too_many_shards_are_refused_before_expansion() {
    let cases = [
        ("train-{0..99999999999}.tar", "100000000000"),
        ("train-{0000..9999}-{000..999}.tar", "10000000"),
        ("{0..18446744073709551615}", "18446744073709551615"),
        (
            "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}",
            "131072",
        ),
    ];
    for (pattern, count) in cases {
        assert_limit(
            expand_braces(pattern),
            "max_pattern_names",
            &[pattern, count, "100000"],
        );
        assert_limit(
            shard_paths(Path::new(pattern)),
            "max_pattern_names",
            &[pattern, count],
        );
    }
    let mut limits = Limits::default();
    limits.max_pattern_names = 99;
    assert_limit(
        expand_braces_with_limits("{0..9}-{0..9}", &limits),
        "max_pattern_names",
        &["100", "99"],
    );
    limits.max_pattern_names = 100;
    assert_eq!(
        expand_braces_with_limits("{0..9}-{0..9}", &limits)
            .unwrap()
            .len(),
        100
    );
}

#[test]
fn brace_patterns_expanding_past_path_max_are_refused() {
    let pattern = format!("{{a,b}}-{}", "x".repeat(5000));
    let err = expand_braces(&pattern).unwrap_err();
    assert!(matches!(err, DataError::ShardPattern { .. }), "{err}");
    assert!(err.to_string().contains("PATH_MAX"), "{err}");
    let padded = format!("{{{}1..2}}", "0".repeat(5000));
    assert!(matches!(
        expand_braces(&padded),
        Err(DataError::ShardPattern { .. })
    ));
}

// ---- Compressed files ---------------------------------------------------------------------

#[test]
fn a_gzip_bomb_is_refused_after_decompressing_up_to_the_limit() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("train-images-idx3-ubyte.gz");
    // 200 MB of zeros compress to about 200 KB.
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap();
    let mut limits = Limits::default();
    limits.max_decompressed_bytes = 1 << 20;
    assert_limit(
        read_maybe_gzip_with_limits(&path, &limits),
        "max_decompressed_bytes",
        &["train-images-idx3-ubyte.gz", "1048577", "1048576"],
    );
    limits.max_decompressed_bytes = 200 << 20;
    assert_eq!(
        read_maybe_gzip_with_limits(&path, &limits).unwrap().len(),
        200 << 20
    );
}

// ---- Files that are not regular files -----------------------------------------------------

/// Runs `open` on another thread and fails (instead of hanging) if it blocks for 10 s.
#[cfg(unix)]
fn without_blocking<T: Send + 'static>(open: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(open()).unwrap());
    receiver
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("opening a FIFO blocked")
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
fn assert_not_a_file(err: DataError, name: &str) {
    let message = err.to_string();
    assert!(
        matches!(&err, DataError::NotAFile { kind, .. } if kind.contains("FIFO")),
        "{message}"
    );
    assert!(message.contains(name), "{message}");
}

#[cfg(unix)]
#[test]
fn a_fifo_named_like_an_image_is_refused_without_blocking() {
    let root = tempfile::tempdir().unwrap();
    mkfifo(&root.path().join("a/x.png"));
    let folder = root.path().to_path_buf();
    let err = without_blocking(move || {
        open_image_folder(&folder, &ImageFolderOptions::default(), true).unwrap_err()
    });
    assert_not_a_file(err, "x.png");
    // With a resize nothing is decoded when opening: the read is what refuses it.
    let folder = root.path().to_path_buf();
    let err = without_blocking(move || {
        let options = gray_resize(4, 4, Fit::Stretch);
        let dataset = open_image_folder(&folder, &options, true).unwrap();
        dataset.read_image(0).unwrap_err()
    });
    assert_not_a_file(err, "x.png");
}

#[cfg(unix)]
#[test]
fn a_fifo_named_like_a_shard_or_a_dataset_file_is_refused_without_blocking() {
    let root = tempfile::tempdir().unwrap();
    let shard = root.path().join("x.tar");
    mkfifo(&shard);
    let err = without_blocking(move || {
        open_shards(&[shard], &ImageFolderOptions::default(), true).unwrap_err()
    });
    assert_not_a_file(err, "x.tar");
    let idx = root.path().join("train-labels-idx1-ubyte");
    mkfifo(&idx);
    let err = without_blocking(move || supcon_data::read_maybe_gzip(&idx).unwrap_err());
    assert_not_a_file(err, "train-labels-idx1-ubyte");
}
