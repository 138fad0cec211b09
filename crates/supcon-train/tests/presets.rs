//! Every CPU preset parses and pre-trains a few steps on a small Fashion-MNIST subset: the
//! presets' settings fit together (views, heads, multi-crop, method sections). Their accuracy
//! is a measured result in the book, not a test.

mod common;

use common::{run, supcon};
use supcon_train::config::{Method, RunConfig};

#[test]
fn every_cpu_preset_pretrains_a_few_steps() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    for (preset, method) in [
        ("quick-cpu", Method::Supcon),
        ("quick-cpu-simclr", Method::Simclr),
        ("quick-cpu-moco-v1", Method::Moco),
        ("quick-cpu-moco-v2", Method::Moco),
        ("quick-cpu-instdisc", Method::Instdisc),
        ("quick-cpu-swav", Method::Swav),
        ("cpu-long", Method::Supcon),
        ("semi-cpu", Method::Simclr),
    ] {
        assert_eq!(RunConfig::preset(preset).unwrap().pretrain.method, method);
        let mut args = common::pretrain_args(preset, dir.path(), &["pretrain.batch_size=32"]);
        args.extend(["--preset".to_string(), preset.to_string()]);
        run(supcon().args(&args), true);
        assert!(
            dir.path()
                .join(preset)
                .join("checkpoints/pretrain-last.safetensors")
                .exists(),
            "{preset}: no checkpoint"
        );
    }
}

#[test]
fn a_preset_extends_another_and_overrides_only_what_it_names() {
    let v1 = RunConfig::preset("quick-cpu-moco-v1").unwrap();
    let v2 = RunConfig::preset("quick-cpu-moco-v2").unwrap();
    let base = RunConfig::preset("quick-cpu").unwrap();
    assert_eq!(v1.pretrain.moco.version, 1);
    assert_eq!(v2.pretrain.moco.version, 2);
    assert_eq!(v1.pretrain.temperature(), 0.07);
    assert_eq!(v2.pretrain.temperature(), 0.2);
    assert_eq!(v2.pretrain.moco.queue, v1.pretrain.moco.queue);
    assert_ne!(v2.model.head, v1.model.head);
    assert_eq!(v2.linear, base.linear);
    assert_eq!(v2.data, base.data);
}
