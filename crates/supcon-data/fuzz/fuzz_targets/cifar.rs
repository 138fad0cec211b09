//! CIFAR-10 / CIFAR-100 parsers: any bytes give `Ok` with consistent sizes or a `ParseError`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supcon_data::CIFAR_IMAGE_BYTES;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = supcon_data::parse_cifar10(data) {
        assert_eq!(batch.pixels.len(), batch.labels.len() * CIFAR_IMAGE_BYTES);
        assert!(batch.labels.iter().all(|l| (0..10).contains(l)));
    }
    if let Ok(batch) = supcon_data::parse_cifar100(data) {
        assert_eq!(
            batch.pixels.len(),
            batch.fine_labels.len() * CIFAR_IMAGE_BYTES
        );
        assert_eq!(batch.coarse_labels.len(), batch.fine_labels.len());
        assert!(batch.fine_labels.iter().all(|l| (0..100).contains(l)));
        assert!(batch.coarse_labels.iter().all(|l| (0..20).contains(l)));
    }
});
