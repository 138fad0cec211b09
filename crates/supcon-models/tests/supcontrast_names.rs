//! supcon-models against SupContrast's parameter names, without Python: the state dict of
//! SupContrast's `SupConResNet(name='resnet18', head='mlp', feat_dim=128)` (networks/resnet_big.py,
//! 3 input channels) is transcribed below, name by name, with PyTorch's shapes and dtypes, in
//! `state_dict()` order. It is the output of `python benches/supcontrast_interop.py --list-keys`
//! (PyTorch 2.11). A renamed, reshaped or missing variable in supcon-models fails here; the
//! numerical side by side with a real PyTorch model is `cargo xtask bench interop`.

use std::collections::BTreeMap;
use supcon_models::{load_checkpoint, Architecture, LoadMode, ModelConfig, SupConModel};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// (name, shape, dtype) of every entry of SupContrast's ResNet-18 SupConResNet state dict.
#[rustfmt::skip]
const SUPCONTRAST_RESNET18: &[(&str, &[i64], &str)] = &[
    ("encoder.conv1.weight", &[64, 3, 3, 3], "float32"),
    ("encoder.bn1.weight", &[64], "float32"),
    ("encoder.bn1.bias", &[64], "float32"),
    ("encoder.bn1.running_mean", &[64], "float32"),
    ("encoder.bn1.running_var", &[64], "float32"),
    ("encoder.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer1.0.conv1.weight", &[64, 64, 3, 3], "float32"),
    ("encoder.layer1.0.bn1.weight", &[64], "float32"),
    ("encoder.layer1.0.bn1.bias", &[64], "float32"),
    ("encoder.layer1.0.bn1.running_mean", &[64], "float32"),
    ("encoder.layer1.0.bn1.running_var", &[64], "float32"),
    ("encoder.layer1.0.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer1.0.conv2.weight", &[64, 64, 3, 3], "float32"),
    ("encoder.layer1.0.bn2.weight", &[64], "float32"),
    ("encoder.layer1.0.bn2.bias", &[64], "float32"),
    ("encoder.layer1.0.bn2.running_mean", &[64], "float32"),
    ("encoder.layer1.0.bn2.running_var", &[64], "float32"),
    ("encoder.layer1.0.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer1.1.conv1.weight", &[64, 64, 3, 3], "float32"),
    ("encoder.layer1.1.bn1.weight", &[64], "float32"),
    ("encoder.layer1.1.bn1.bias", &[64], "float32"),
    ("encoder.layer1.1.bn1.running_mean", &[64], "float32"),
    ("encoder.layer1.1.bn1.running_var", &[64], "float32"),
    ("encoder.layer1.1.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer1.1.conv2.weight", &[64, 64, 3, 3], "float32"),
    ("encoder.layer1.1.bn2.weight", &[64], "float32"),
    ("encoder.layer1.1.bn2.bias", &[64], "float32"),
    ("encoder.layer1.1.bn2.running_mean", &[64], "float32"),
    ("encoder.layer1.1.bn2.running_var", &[64], "float32"),
    ("encoder.layer1.1.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer2.0.conv1.weight", &[128, 64, 3, 3], "float32"),
    ("encoder.layer2.0.bn1.weight", &[128], "float32"),
    ("encoder.layer2.0.bn1.bias", &[128], "float32"),
    ("encoder.layer2.0.bn1.running_mean", &[128], "float32"),
    ("encoder.layer2.0.bn1.running_var", &[128], "float32"),
    ("encoder.layer2.0.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer2.0.conv2.weight", &[128, 128, 3, 3], "float32"),
    ("encoder.layer2.0.bn2.weight", &[128], "float32"),
    ("encoder.layer2.0.bn2.bias", &[128], "float32"),
    ("encoder.layer2.0.bn2.running_mean", &[128], "float32"),
    ("encoder.layer2.0.bn2.running_var", &[128], "float32"),
    ("encoder.layer2.0.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer2.0.shortcut.0.weight", &[128, 64, 1, 1], "float32"),
    ("encoder.layer2.0.shortcut.1.weight", &[128], "float32"),
    ("encoder.layer2.0.shortcut.1.bias", &[128], "float32"),
    ("encoder.layer2.0.shortcut.1.running_mean", &[128], "float32"),
    ("encoder.layer2.0.shortcut.1.running_var", &[128], "float32"),
    ("encoder.layer2.0.shortcut.1.num_batches_tracked", &[], "int64"),
    ("encoder.layer2.1.conv1.weight", &[128, 128, 3, 3], "float32"),
    ("encoder.layer2.1.bn1.weight", &[128], "float32"),
    ("encoder.layer2.1.bn1.bias", &[128], "float32"),
    ("encoder.layer2.1.bn1.running_mean", &[128], "float32"),
    ("encoder.layer2.1.bn1.running_var", &[128], "float32"),
    ("encoder.layer2.1.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer2.1.conv2.weight", &[128, 128, 3, 3], "float32"),
    ("encoder.layer2.1.bn2.weight", &[128], "float32"),
    ("encoder.layer2.1.bn2.bias", &[128], "float32"),
    ("encoder.layer2.1.bn2.running_mean", &[128], "float32"),
    ("encoder.layer2.1.bn2.running_var", &[128], "float32"),
    ("encoder.layer2.1.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer3.0.conv1.weight", &[256, 128, 3, 3], "float32"),
    ("encoder.layer3.0.bn1.weight", &[256], "float32"),
    ("encoder.layer3.0.bn1.bias", &[256], "float32"),
    ("encoder.layer3.0.bn1.running_mean", &[256], "float32"),
    ("encoder.layer3.0.bn1.running_var", &[256], "float32"),
    ("encoder.layer3.0.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer3.0.conv2.weight", &[256, 256, 3, 3], "float32"),
    ("encoder.layer3.0.bn2.weight", &[256], "float32"),
    ("encoder.layer3.0.bn2.bias", &[256], "float32"),
    ("encoder.layer3.0.bn2.running_mean", &[256], "float32"),
    ("encoder.layer3.0.bn2.running_var", &[256], "float32"),
    ("encoder.layer3.0.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer3.0.shortcut.0.weight", &[256, 128, 1, 1], "float32"),
    ("encoder.layer3.0.shortcut.1.weight", &[256], "float32"),
    ("encoder.layer3.0.shortcut.1.bias", &[256], "float32"),
    ("encoder.layer3.0.shortcut.1.running_mean", &[256], "float32"),
    ("encoder.layer3.0.shortcut.1.running_var", &[256], "float32"),
    ("encoder.layer3.0.shortcut.1.num_batches_tracked", &[], "int64"),
    ("encoder.layer3.1.conv1.weight", &[256, 256, 3, 3], "float32"),
    ("encoder.layer3.1.bn1.weight", &[256], "float32"),
    ("encoder.layer3.1.bn1.bias", &[256], "float32"),
    ("encoder.layer3.1.bn1.running_mean", &[256], "float32"),
    ("encoder.layer3.1.bn1.running_var", &[256], "float32"),
    ("encoder.layer3.1.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer3.1.conv2.weight", &[256, 256, 3, 3], "float32"),
    ("encoder.layer3.1.bn2.weight", &[256], "float32"),
    ("encoder.layer3.1.bn2.bias", &[256], "float32"),
    ("encoder.layer3.1.bn2.running_mean", &[256], "float32"),
    ("encoder.layer3.1.bn2.running_var", &[256], "float32"),
    ("encoder.layer3.1.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer4.0.conv1.weight", &[512, 256, 3, 3], "float32"),
    ("encoder.layer4.0.bn1.weight", &[512], "float32"),
    ("encoder.layer4.0.bn1.bias", &[512], "float32"),
    ("encoder.layer4.0.bn1.running_mean", &[512], "float32"),
    ("encoder.layer4.0.bn1.running_var", &[512], "float32"),
    ("encoder.layer4.0.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer4.0.conv2.weight", &[512, 512, 3, 3], "float32"),
    ("encoder.layer4.0.bn2.weight", &[512], "float32"),
    ("encoder.layer4.0.bn2.bias", &[512], "float32"),
    ("encoder.layer4.0.bn2.running_mean", &[512], "float32"),
    ("encoder.layer4.0.bn2.running_var", &[512], "float32"),
    ("encoder.layer4.0.bn2.num_batches_tracked", &[], "int64"),
    ("encoder.layer4.0.shortcut.0.weight", &[512, 256, 1, 1], "float32"),
    ("encoder.layer4.0.shortcut.1.weight", &[512], "float32"),
    ("encoder.layer4.0.shortcut.1.bias", &[512], "float32"),
    ("encoder.layer4.0.shortcut.1.running_mean", &[512], "float32"),
    ("encoder.layer4.0.shortcut.1.running_var", &[512], "float32"),
    ("encoder.layer4.0.shortcut.1.num_batches_tracked", &[], "int64"),
    ("encoder.layer4.1.conv1.weight", &[512, 512, 3, 3], "float32"),
    ("encoder.layer4.1.bn1.weight", &[512], "float32"),
    ("encoder.layer4.1.bn1.bias", &[512], "float32"),
    ("encoder.layer4.1.bn1.running_mean", &[512], "float32"),
    ("encoder.layer4.1.bn1.running_var", &[512], "float32"),
    ("encoder.layer4.1.bn1.num_batches_tracked", &[], "int64"),
    ("encoder.layer4.1.conv2.weight", &[512, 512, 3, 3], "float32"),
    ("encoder.layer4.1.bn2.weight", &[512], "float32"),
    ("encoder.layer4.1.bn2.bias", &[512], "float32"),
    ("encoder.layer4.1.bn2.running_mean", &[512], "float32"),
    ("encoder.layer4.1.bn2.running_var", &[512], "float32"),
    ("encoder.layer4.1.bn2.num_batches_tracked", &[], "int64"),
    ("head.0.weight", &[512, 512], "float32"),
    ("head.0.bias", &[512], "float32"),
    ("head.2.weight", &[128, 512], "float32"),
    ("head.2.bias", &[128], "float32"),
];

/// `sum(p.numel() for p in model.parameters())` of the same PyTorch model.
const SUPCONTRAST_RESNET18_PARAMETERS: u64 = 11_497_152;

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Int64 => "int64",
        _ => "other",
    }
}

fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

fn resnet18_store() -> (nn::VarStore, SupConModel) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SupConModel::new(&vs.root(), &ModelConfig::new(Architecture::ResNet18)).unwrap();
    (vs, model)
}

#[test]
fn the_transcribed_list_is_consistent() {
    // 1 stem conv + 1 BN, 8 blocks of 2 convs + 2 BNs, 3 projection shortcuts (conv + BN),
    // 2 linear layers; a BN has 5 entries.
    assert_eq!(
        SUPCONTRAST_RESNET18.len(),
        1 + 5 + 8 * (2 + 2 * 5) + 3 * (1 + 5) + 2 * 2
    );
    let parameters: i64 = SUPCONTRAST_RESNET18
        .iter()
        .filter(|(name, _, _)| !is_buffer(name))
        .map(|(_, shape, _)| shape.iter().product::<i64>())
        .sum();
    assert_eq!(parameters as u64, SUPCONTRAST_RESNET18_PARAMETERS);
}

#[test]
fn resnet18_variables_are_supcontrasts_state_dict() {
    let (vs, _model) = resnet18_store();
    let ours: BTreeMap<String, (Vec<i64>, &str)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, (t.size(), kind_name(t.kind()))))
        .collect();
    let theirs: BTreeMap<String, (Vec<i64>, &str)> = SUPCONTRAST_RESNET18
        .iter()
        .map(|&(name, shape, dtype)| (name.to_owned(), (shape.to_vec(), dtype)))
        .collect();
    assert_eq!(theirs.len(), SUPCONTRAST_RESNET18.len(), "duplicate names");

    let missing: Vec<&String> = theirs.keys().filter(|n| !ours.contains_key(*n)).collect();
    let extra: Vec<&String> = ours.keys().filter(|n| !theirs.contains_key(*n)).collect();
    let differ: Vec<String> = theirs
        .iter()
        .filter_map(|(name, t)| {
            let o = ours.get(name)?;
            (o != t).then(|| format!("{name}: SupContrast {t:?}, supcon-models {o:?}"))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "missing in supcon-models: {missing:?}\nnot in SupContrast: {extra:?}\ndiffer: {differ:#?}"
    );

    // Parameters are trainable, BN statistics are buffers, as in PyTorch.
    let trainable_count = vs.trainable_variables().len();
    let parameters = SUPCONTRAST_RESNET18
        .iter()
        .filter(|(name, _, _)| !is_buffer(name))
        .count();
    assert_eq!(trainable_count, parameters);
    assert_eq!(
        supcon_models::trainable_param_count(&vs),
        SUPCONTRAST_RESNET18_PARAMETERS
    );
}

#[test]
fn a_supcontrast_state_dict_loads_strictly_value_for_value() {
    // A file with SupContrast's names, shapes and dtypes and a distinct value in every tensor.
    let named: Vec<(String, Tensor)> = SUPCONTRAST_RESNET18
        .iter()
        .enumerate()
        .map(|(i, &(name, shape, dtype))| {
            let t = match dtype {
                "int64" => Tensor::from(i as i64 + 3),
                _ => Tensor::rand(shape, (Kind::Float, Device::Cpu)) + i as f64,
            };
            (name.to_owned(), t)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supcontrast.safetensors");
    Tensor::write_safetensors(&named, &path).unwrap();

    let (mut vs, model) = resnet18_store();
    let report = load_checkpoint(&mut vs, &path, LoadMode::Strict).unwrap();
    assert_eq!(report.loaded, SUPCONTRAST_RESNET18.len());
    assert!(report.ignored.is_empty());
    let variables = vs.variables();
    for (name, expected) in &named {
        let got = &variables[name];
        assert_eq!(got.kind(), expected.kind(), "{name}");
        assert!(got.equal(expected), "{name} did not receive its value");
    }

    // And the loaded model runs (eval mode uses the loaded running statistics).
    let images = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let z = tch::no_grad(|| model.forward_t(&images, false));
    assert_eq!(z.size(), [2, 128]);
}
