//! IDX parsers: any bytes give `Ok` with consistent sizes or a `ParseError`, never a panic or a
//! huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(images) = supcon_data::parse_idx_images(data) {
        assert_eq!(images.pixels.len() + 16, data.len());
        assert_eq!(
            images.pixels.len(),
            images.count * images.height * images.width
        );
    }
    if let Ok(labels) = supcon_data::parse_idx_labels(data) {
        assert_eq!(labels.len() + 8, data.len());
        let _ = supcon_data::check_labels(&labels, 10);
    }
});
