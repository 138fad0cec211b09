//! The tar shard indexer: any bytes give `Ok` with every sample's image inside the shard and
//! within the limits, or an error; never a panic, never an allocation past the limits.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use supcon_data::{index_tar, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for labeled in [false, true] {
        let Ok(samples) = index_tar(Cursor::new(data), Path::new("fuzz.tar"), labeled, &limits)
        else {
            continue;
        };
        for sample in &samples {
            assert!(sample.image_offset + sample.image_size <= data.len() as u64);
            assert!(sample.image_size <= limits.max_shard_member_bytes);
            assert!(sample.image_member.starts_with(&sample.key));
            match sample.label {
                Some(label) => assert!(labeled && (0..=1_000_000).contains(&label)),
                None => assert!(!labeled),
            }
        }
    }
});
