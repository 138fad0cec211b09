//! The `.npy` readers: any bytes give an array or an error, never a panic, and never an
//! allocation beyond what the file holds (run with `-rss_limit_mb=2048`: a header's forged
//! shape must be refused before it is allocated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("supcon-npy-fuzz-{}.npy", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = supcon_loss::npy::read_floats::<ndarray::Ix3>(&path, "features", "a 3-D");
    let _ = supcon_loss::npy::read_floats::<ndarray::Ix2>(&path, "features", "a 2-D");
    let _ = supcon_loss::npy::read_labels(&path, "labels");
});
