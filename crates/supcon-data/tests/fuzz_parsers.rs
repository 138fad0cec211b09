//! A bounded, deterministic mutation fuzzer for the byte parsers: the in-CI stand-in for the
//! cargo-fuzz targets in `fuzz/` (which need a nightly toolchain). Valid buffers are mutated
//! (bytes flipped, header fields set to extremes, cut, extended) and every parser must return
//! `Ok` with consistent sizes or a `ParseError`: no panic, no huge allocation.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_data::{
    parse_cifar10, parse_cifar100, parse_idx_images, parse_idx_labels, ParseError,
    CIFAR100_RECORD_BYTES, CIFAR10_RECORD_BYTES, CIFAR_IMAGE_BYTES,
};

const CASES_PER_SEED: usize = 5000;

fn idx_images_seed() -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    bytes.extend((0..60u8).map(|v| v.wrapping_mul(37)));
    bytes
}

fn idx_labels_seed() -> Vec<u8> {
    vec![0, 0, 8, 1, 0, 0, 0, 6, 0, 1, 2, 9, 4, 5]
}

fn cifar10_seed() -> Vec<u8> {
    (0..2 * CIFAR10_RECORD_BYTES)
        .map(|i| {
            if i % CIFAR10_RECORD_BYTES == 0 {
                7
            } else {
                (i * 13) as u8
            }
        })
        .collect()
}

fn cifar100_seed() -> Vec<u8> {
    (0..2 * CIFAR100_RECORD_BYTES)
        .map(|i| match i % CIFAR100_RECORD_BYTES {
            0 => 19,
            1 => 99,
            _ => (i * 29) as u8,
        })
        .collect()
}

/// One random mutation; header positions (the first 16 bytes) are hit more often, because the
/// sizes live there.
fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    let extremes = [0x00, 0x01, 0x7f, 0x80, 0xff];
    match rng.random_range(0..7) {
        0 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len().min(16));
            bytes[i] = extremes[rng.random_range(0..extremes.len())];
        }
        2 => {
            let len = rng.random_range(0..=bytes.len());
            bytes.truncate(len);
        }
        3 => {
            let extra = rng.random_range(1..8);
            bytes.extend((0..extra).map(|_| rng.random::<u8>()));
        }
        4 if bytes.len() >= 8 => {
            // A whole header field (u32, big-endian) set to a random or extreme value.
            let field = rng.random_range(0..bytes.len().min(16) / 4) * 4;
            let value: u32 = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => u32::MAX,
                _ => 1 << rng.random_range(0..32),
            };
            bytes[field..field + 4].copy_from_slice(&value.to_be_bytes());
        }
        5 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes.remove(i);
        }
        _ => {
            let i = rng.random_range(0..=bytes.len());
            bytes.insert(i, rng.random());
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(64).map(|b| format!("{b:02x}")).collect()
}

/// Runs `check` on `CASES_PER_SEED` mutants of `seed` (1–4 stacked mutations each).
fn fuzz(name: &str, seed: Vec<u8>, rng_seed: u64, check: impl Fn(&[u8]) -> Result<(), ParseError>) {
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let (mut ok, mut errors) = (0usize, 0usize);
    for case in 0..CASES_PER_SEED {
        let mut bytes = seed.clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut bytes, &mut rng);
        }
        match catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!(
                "{name}: case {case} panicked on {} bytes starting {}",
                bytes.len(),
                hex(&bytes)
            ),
        }
    }
    // Both outcomes must occur, or the mutations are not exercising the parser.
    assert!(
        ok > 0 && errors > 0,
        "{name}: {ok} accepted, {errors} rejected"
    );
}

#[test]
fn idx_image_parser_survives_mutations() {
    fuzz("idx images", idx_images_seed(), 1, |bytes| {
        let images = parse_idx_images(bytes)?;
        assert_eq!(
            images.pixels.len(),
            images.count * images.height * images.width
        );
        assert_eq!(bytes.len(), 16 + images.pixels.len());
        Ok(())
    });
}

#[test]
fn idx_label_parser_survives_mutations() {
    fuzz("idx labels", idx_labels_seed(), 2, |bytes| {
        let labels = parse_idx_labels(bytes)?;
        assert_eq!(bytes.len(), 8 + labels.len());
        Ok(())
    });
}

#[test]
fn cifar_parsers_survive_mutations() {
    fuzz("cifar-10", cifar10_seed(), 3, |bytes| {
        let batch = parse_cifar10(bytes)?;
        assert_eq!(batch.pixels.len(), batch.labels.len() * CIFAR_IMAGE_BYTES);
        assert!(batch.labels.iter().all(|l| (0..10).contains(l)));
        Ok(())
    });
    fuzz("cifar-100", cifar100_seed(), 4, |bytes| {
        let batch = parse_cifar100(bytes)?;
        assert_eq!(
            batch.pixels.len(),
            batch.fine_labels.len() * CIFAR_IMAGE_BYTES
        );
        assert!(batch.coarse_labels.iter().all(|l| (0..20).contains(l)));
        Ok(())
    });
}

#[test]
fn arbitrary_short_buffers_never_panic() {
    // Every buffer of length 0..=17 made of a few interesting bytes, for the IDX parsers,
    // whose header is where the danger is.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..2000 {
        let len = rng.random_range(0..=17);
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| [0u8, 1, 3, 8, 0x80, 0xff][rng.random_range(0..6)])
            .collect();
        if len >= 4 && rng.random_bool(0.5) {
            bytes[..4].copy_from_slice(&[0, 0, 8, if rng.random_bool(0.5) { 1 } else { 3 }]);
        }
        let _ = parse_idx_images(&bytes);
        let _ = parse_idx_labels(&bytes);
        let _ = parse_cifar10(&bytes);
        let _ = parse_cifar100(&bytes);
    }
}
