//! A method owns how its frozen encoder is read (`pipeline::methods::MethodParts`): a CMC
//! checkpoint is probed with both encoders, refused by name when the configuration names
//! another method, and has no single projection head for `supcon embed --projections`.

mod common;

use common::{run, stderr, supcon};

#[test]
fn a_methods_checkpoint_is_read_its_way_and_refused_for_another_method() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::pretrain_args("cmc", dir.path(), &[]);
    args.extend(["--preset".into(), "quick-cpu-cmc".into()]);
    run(supcon().args(&args), true);
    let checkpoint = dir.path().join("cmc/checkpoints/pretrain-last.safetensors");
    let checkpoint = checkpoint.display().to_string();
    let out = dir.path().join("embedded");
    let embed = |preset: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["embed", "--quiet", "--checkpoint", &checkpoint]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--preset".into(), preset.into(), "--out".into()]);
        args.push(out.display().to_string());
        args.extend(common::FAST.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // CMC's probe reads both encoders: features twice the encoder's width (64 for resnet-tiny).
    run(supcon().args(embed("quick-cpu-cmc", &[])), true);
    let features: ndarray::Array2<f32> = ndarray_npy::read_npy(out.join("embeddings.npy")).unwrap();
    assert_eq!(features.ncols(), 128);
    // Its features are not one encoder's: no projection head applies.
    let refused = run(
        supcon().args(embed("quick-cpu-cmc", &["--projections"])),
        false,
    );
    assert!(
        stderr(&refused).contains("--projections: CMC's features concatenate two encoders"),
        "{}",
        stderr(&refused)
    );
    // The configuration of another method: the checkpoint's own group names its method.
    let refused = run(supcon().args(embed("quick-cpu-simclr", &[])), false);
    let message = stderr(&refused);
    assert!(
        message.contains("holds cmc_view1.*, a cmc encoder") && message.contains("simclr"),
        "{message}"
    );
}
