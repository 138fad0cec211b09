//! A bounded, deterministic mutation fuzzer for the tar shard indexer ([`index_tar`]), the
//! in-CI sibling of `fuzz_parsers.rs` and stand-in for the cargo-fuzz target
//! `fuzz/fuzz_targets/tar_index.rs`. A valid shard (plain names, a GNU long name, a PAX path, a
//! ustar prefix, a folder, a link) is mutated block-wise — header fields set to extremes and
//! their checksum fixed, so that the mutants get past the checksum — and byte-wise; the indexer
//! must return `Ok` with samples inside the shard and within the limits, or an error: no panic,
//! no allocation past the limits.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_data::{index_tar, Limits, TarSample};

const CASES: usize = 5000;
const BLOCK: usize = 512;

/// A PAX record, `"<length> <key>=<value>\n"`, its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut length = body.len() + 1;
    while (length.to_string().len() + body.len()) != length {
        length += 1;
    }
    format!("{length}{body}").into_bytes()
}

fn gnu_header(size: usize, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut header = gnu_header(data.len(), tar::EntryType::Regular);
    builder.append_data(&mut header, name, data).unwrap();
}

/// A 1 × 1 PNG (the indexer never decodes it; its bytes only have to be somewhere).
fn tiny_png() -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image::GrayImage::new(1, 1)
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
    bytes.into_inner()
}

/// The seed shard and the samples it holds: (image member, label).
fn seed_shard() -> (Vec<u8>, Vec<(String, i64)>) {
    let png = tiny_png();
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "s0.png", &png);
    append(&mut builder, "s0.cls", b"3\n");
    append(&mut builder, "s0.json", b"{}");
    // Longer than a header's 100 bytes: the builder writes a GNU long name record first.
    let long = format!("{}/s1", "d".repeat(120));
    append(&mut builder, &format!("{long}.png"), &png);
    append(&mut builder, &format!("{long}.cls"), b"1");
    // A PAX `path` renaming the member whose own header says otherwise.
    let record = pax_record("path", "pax/s2.png");
    let mut pax = gnu_header(record.len(), tar::EntryType::XHeader);
    pax.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"PaxHeaders/x");
    pax.set_cksum();
    builder.append(&pax, record.as_slice()).unwrap();
    let mut renamed = gnu_header(png.len(), tar::EntryType::Regular);
    renamed.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"wrong.txt");
    renamed.set_cksum();
    builder.append(&renamed, png.as_slice()).unwrap();
    append(&mut builder, "pax/s2.cls", b"0");
    // A ustar header splits a long path into prefix and name.
    let prefixed = format!("{}/s3", "p".repeat(120));
    let mut ustar = tar::Header::new_ustar();
    ustar.set_path(format!("{prefixed}.png")).unwrap();
    ustar.set_size(png.len() as u64);
    ustar.set_mode(0o644);
    ustar.set_cksum();
    builder.append(&ustar, png.as_slice()).unwrap();
    append(&mut builder, &format!("{prefixed}.cls"), b"2");
    // Members that are not files are skipped.
    let mut folder = gnu_header(0, tar::EntryType::Directory);
    builder.append_data(&mut folder, "s4.d", &[][..]).unwrap();
    let mut link = gnu_header(0, tar::EntryType::Symlink);
    builder.append_link(&mut link, "s5.png", "s0.png").unwrap();
    let expected = vec![
        ("s0.png".to_owned(), 3),
        (format!("{long}.png"), 1),
        ("pax/s2.png".to_owned(), 0),
        (format!("{prefixed}.png"), 2),
    ];
    (builder.into_inner().unwrap(), expected)
}

/// The image members the `tar` crate itself finds (name, data offset, size), resolving long
/// names and PAX records: the reference the indexer must agree with.
fn reference_images(bytes: &[u8]) -> std::io::Result<Vec<(String, u64, u64)>> {
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let mut images = Vec::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let file_name = &name[name.rfind('/').map_or(0, |i| i + 1)..];
        let extension = file_name
            .split_once('.')
            .map(|(_, e)| e.to_ascii_lowercase());
        if matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg")) {
            images.push((name, entry.raw_file_position(), entry.size()));
        }
    }
    Ok(images)
}

fn index(bytes: &[u8], labeled: bool, limits: &Limits) -> Result<Vec<TarSample>, String> {
    index_tar(Cursor::new(bytes), Path::new("fuzz.tar"), labeled, limits).map_err(|e| e.to_string())
}

fn image_triples(samples: &[TarSample]) -> Vec<(String, u64, u64)> {
    samples
        .iter()
        .map(|s| (s.image_member.clone(), s.image_offset, s.image_size))
        .collect()
}

#[test]
fn the_seed_shard_indexes_as_the_tar_crate_reads_it() {
    let (bytes, expected) = seed_shard();
    let samples = index(&bytes, true, &Limits::default()).unwrap();
    let found: Vec<(String, i64)> = samples
        .iter()
        .map(|s| (s.image_member.clone(), s.label.unwrap()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(image_triples(&samples), reference_images(&bytes).unwrap());
    let unlabeled = index(&bytes, false, &Limits::default()).unwrap();
    assert!(unlabeled.iter().all(|s| s.label.is_none()));
    assert_eq!(image_triples(&unlabeled), image_triples(&samples));
}

/// Sets the header checksum of the block at `start`, as a writer would.
fn fix_checksum(bytes: &mut [u8], start: usize) {
    let mut header = tar::Header::new_old();
    header
        .as_mut_bytes()
        .copy_from_slice(&bytes[start..start + BLOCK]);
    header.set_cksum();
    bytes[start..start + BLOCK].copy_from_slice(header.as_bytes());
}

/// A size field (12 bytes at 124): octal text or GNU base-256, small, huge or at the edges.
fn size_field(rng: &mut ChaCha8Rng) -> [u8; 12] {
    let value: u64 = match rng.random_range(0..6) {
        0 => rng.random_range(0..2048),
        1 => 1 << rng.random_range(0..64),
        2 => u64::MAX - rng.random_range(0..1024),
        3 => 0o77777777777,
        4 => i64::MAX as u64 + rng.random_range(0..2),
        _ => rng.random(),
    };
    let mut field = [0u8; 12];
    let octal = format!("{value:011o}");
    if octal.len() <= 11 && rng.random_bool(0.5) {
        field[..11].copy_from_slice(octal.as_bytes());
    } else {
        field[0] = 0x80;
        field[4..].copy_from_slice(&value.to_be_bytes());
    }
    field
}

/// One mutation of a header field of the block at `start`, its checksum usually fixed.
fn mutate_header(bytes: &mut [u8], start: usize, rng: &mut ChaCha8Rng) {
    let block = &mut bytes[start..start + BLOCK];
    match rng.random_range(0..5) {
        0 => block[124..136].copy_from_slice(&size_field(rng)),
        1 => {
            let kinds = b"0\x00125LKxgS7";
            block[156] = kinds[rng.random_range(0..kinds.len())];
        }
        2 => {
            let names: [&[u8]; 6] = [b"a.cls", b"a.png", b"b.PNG", b".png", b"a", b"/x.y.png"];
            let name = names[rng.random_range(0..names.len())];
            block[..100].fill(0);
            block[..name.len()].copy_from_slice(name);
        }
        3 => {
            let magics: [&[u8; 8]; 3] = [b"ustar\x0000", b"ustar  \x00", b"garbage!"];
            block[257..265].copy_from_slice(magics[rng.random_range(0..3)]);
        }
        _ => {
            let i = rng.random_range(0..BLOCK);
            block[i] = rng.random();
        }
    }
    if rng.random_bool(0.85) {
        fix_checksum(bytes, start);
    }
}

/// A `.cls`-like body at a block start: big numbers, signs, junk.
fn mutate_body(bytes: &mut [u8], start: usize, rng: &mut ChaCha8Rng) {
    let bodies: [&[u8]; 6] = [
        b"100000000000",
        b"9223372036854775807",
        b"-1",
        b"99999999999999999999999",
        b"1000000",
        b"1000001",
    ];
    let body = bodies[rng.random_range(0..bodies.len())];
    let end = (start + body.len()).min(bytes.len());
    bytes[start..end].copy_from_slice(&body[..end - start]);
}

fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    let blocks = bytes.len() / BLOCK;
    match rng.random_range(0..6) {
        0 | 1 if blocks > 0 => {
            let start = rng.random_range(0..blocks) * BLOCK;
            mutate_header(bytes, start, rng);
        }
        2 if blocks > 0 => {
            let start = rng.random_range(0..blocks) * BLOCK;
            mutate_body(bytes, start, rng);
        }
        3 => {
            let len = if rng.random_bool(0.5) {
                rng.random_range(0..=blocks) * BLOCK
            } else {
                rng.random_range(0..=bytes.len())
            };
            bytes.truncate(len);
        }
        4 if blocks > 1 => {
            // A whole block removed or repeated: members shift against their headers.
            let start = rng.random_range(0..blocks) * BLOCK;
            let block: Vec<u8> = bytes.drain(start..start + BLOCK).collect();
            if rng.random_bool(0.5) {
                let at = rng.random_range(0..=bytes.len() / BLOCK) * BLOCK;
                bytes.splice(at..at, block.iter().copied());
                bytes.splice(at..at, block);
            }
        }
        _ if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        _ => bytes.extend_from_slice(&[0; BLOCK]),
    }
}

/// What every accepted shard must satisfy.
fn check_samples(samples: &[TarSample], len: usize, labeled: bool, limits: &Limits) {
    for sample in samples {
        assert!(!sample.key.is_empty());
        assert!(sample.image_member.starts_with(&sample.key));
        assert!(sample.image_offset + sample.image_size <= len as u64);
        assert!(sample.image_size <= limits.max_shard_member_bytes);
        match sample.label {
            Some(label) => {
                assert!(labeled && label >= 0 && label as u64 <= limits.max_class_id);
            }
            None => assert!(!labeled),
        }
    }
}

/// Mutants indexed under the default limits and under limits just above what the seed needs,
/// so that the limit checks are reached with sizes a mutant can make.
fn limit_sets() -> [Limits; 2] {
    let mut tight = Limits::default();
    tight.max_shard_member_bytes = tiny_png().len() as u64;
    tight.max_label_bytes = 2;
    tight.max_class_id = 3;
    tight.max_tar_header_bytes = 200;
    [Limits::default(), tight]
}

#[test]
fn the_tar_indexer_survives_mutations() {
    let (seed, _) = seed_shard();
    let limits = limit_sets();
    let mut rng = ChaCha8Rng::seed_from_u64(40);
    let (mut ok, mut errors, mut compared) = (0usize, 0usize, 0usize);
    for case in 0..CASES {
        let mut bytes = seed.clone();
        for _ in 0..rng.random_range(1..=3) {
            mutate(&mut bytes, &mut rng);
        }
        let limits = &limits[case % 2];
        let labeled = rng.random_bool(0.5);
        let outcome = catch_unwind(AssertUnwindSafe(|| index(&bytes, labeled, limits)));
        let Ok(outcome) = outcome else {
            panic!(
                "case {case} panicked on {} bytes (labeled: {labeled}); first header block: {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(BLOCK)]
            );
        };
        match outcome {
            Ok(samples) => {
                ok += 1;
                check_samples(&samples, bytes.len(), labeled, limits);
                // Every image indexed is one the tar crate finds at the same place.
                if let Ok(reference) = reference_images(&bytes) {
                    compared += 1;
                    for image in image_triples(&samples) {
                        assert!(reference.contains(&image), "case {case}: {image:?}");
                    }
                }
            }
            Err(_) => errors += 1,
        }
    }
    // Both outcomes must occur, or the mutations are not exercising the indexer.
    assert!(
        ok > 0 && errors > 0 && compared > 0,
        "{ok} accepted ({compared} compared), {errors} rejected"
    );
}

#[test]
fn arbitrary_short_buffers_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for _ in 0..2000 {
        let len = rng.random_range(0..=3 * BLOCK);
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| [0u8, b'0', b'7', b' ', b'x', b'L', 0x80, 0xff][rng.random_range(0..8)])
            .collect();
        if bytes.len() >= BLOCK && rng.random_bool(0.5) {
            fix_checksum(&mut bytes, 0);
        }
        let _ = index(&bytes, rng.random_bool(0.5), &Limits::default());
    }
}
