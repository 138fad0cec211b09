//! Tests of the encoders, heads, classifiers and checkpoints. Small models except where
//! the test is about the published parameter counts.

use supcon_models::{
    load_checkpoint, save_checkpoint, Architecture, CrossEntropyModel, FineTunedModel, HeadKind,
    LinearClassifier, LoadMode, ModelConfig, ModelError, Normalization, ResNet, Stem, SupConModel,
    TensorMismatch,
};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn tiny(in_channels: i64) -> ModelConfig {
    ModelConfig::new(Architecture::ResNetTiny).with_in_channels(in_channels)
}

fn images(n: i64, c: i64, hw: i64) -> Tensor {
    Tensor::randn([n, c, hw, hw], (Kind::Float, Device::Cpu))
}

fn var_names(vs: &nn::VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    names
}

#[test]
fn parameter_counts_match_the_published_ones() {
    // SupContrast's CIFAR ResNet-18 / ResNet-50 encoders: 11.17 M and 23.5 M parameters.
    for (arch, expected) in [
        (Architecture::ResNet18, 11_168_832u64),
        (Architecture::ResNet50, 23_500_352),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _encoder = ResNet::new(&vs.root(), &arch.spec(3, Stem::Cifar, false));
        assert_eq!(
            supcon_models::trainable_param_count(&vs),
            expected,
            "{arch}"
        );
        assert_eq!(
            arch.spec(3, Stem::Cifar, false).param_count(),
            expected,
            "{arch}"
        );
    }
}

#[test]
fn analytic_parameter_count_equals_the_built_model() {
    for arch in Architecture::ALL {
        if arch == Architecture::ResNet101 {
            continue; // 42 M parameters: the analytic formula is the same code path as ResNet-50
        }
        for (in_channels, stem) in [(1, Stem::Cifar), (3, Stem::Imagenet)] {
            let spec = arch.spec(in_channels, stem, false);
            let vs = nn::VarStore::new(Device::Cpu);
            let _encoder = ResNet::new(&vs.root(), &spec);
            assert_eq!(
                supcon_models::trainable_param_count(&vs),
                spec.param_count(),
                "{arch} in_channels={in_channels} {stem:?}"
            );
        }
    }
}

#[test]
fn flops_of_known_cases() {
    // resnet-tiny on 28×28×1, layer by layer (output h·w · c_out · c_in·k²):
    let stem = 28 * 28 * 16 * 9; // 3×3, 1 → 16
    let layer1 = 2 * 28 * 28 * 16 * 16 * 9;
    let layer2 = 14 * 14 * 32 * 16 * 9 + 14 * 14 * 32 * 32 * 9 + 14 * 14 * 32 * 16; // + 1×1 shortcut
    let layer3 = 7 * 7 * 64 * 32 * 9 + 7 * 7 * 64 * 64 * 9 + 7 * 7 * 64 * 32;
    let spec = Architecture::ResNetTiny.spec(1, Stem::Cifar, false);
    assert_eq!(
        spec.macs([28, 28]),
        (stem + layer1 + layer2 + layer3) as u64
    );
    assert_eq!(spec.macs([28, 28]), 9_345_280);
    assert_eq!(spec.flops([28, 28]), 2 * 9_345_280);
    // CIFAR ResNet-18 on 32×32×3: 0.56 G multiply-accumulates, the usual published figure.
    let r18 = Architecture::ResNet18.spec(3, Stem::Cifar, false);
    assert_eq!(r18.macs([32, 32]), 555_417_600);
    // torchvision's ResNet-50 on 224×224: 4.09 GMAC including its 2 M-MAC fc layer.
    let r50 = Architecture::ResNet50.spec(3, Stem::Imagenet, false);
    let macs = r50.macs([224, 224]) as f64;
    assert!((4.0e9..4.1e9).contains(&macs), "{macs}");
}

#[test]
fn output_shapes() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SupConModel::new(&vs.root(), &tiny(1)).unwrap();
    let x = images(4, 1, 28);
    let features = model.encode(&x, false);
    assert_eq!(features.size(), [4, 64]);
    let z = model.forward_t(&x, false);
    assert_eq!(z.size(), [4, 128]);
    let norms = z.norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
    assert!(norms.allclose(
        &Tensor::ones([4], (Kind::Float, Device::Cpu)),
        1e-5,
        1e-5,
        false
    ));

    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig {
        head: HeadKind::Linear,
        projection_dim: 32,
        stem: Stem::Imagenet,
        ..tiny(3)
    };
    let model = SupConModel::new(&vs.root(), &config).unwrap();
    assert_eq!(model.forward_t(&images(2, 3, 32), true).size(), [2, 32]);

    let vs = nn::VarStore::new(Device::Cpu);
    let ce = CrossEntropyModel::new(&vs.root(), &tiny(1), 10).unwrap();
    assert_eq!(ce.forward_t(&images(3, 1, 28), false).size(), [3, 10]);
    assert!(matches!(
        ce.f_forward_t(&images(3, 3, 28), false),
        Err(ModelError::InputShape { .. })
    ));

    let vs = nn::VarStore::new(Device::Cpu);
    let classifier = LinearClassifier::new(&vs.root(), 64, 10).unwrap();
    assert_eq!(classifier.forward(&features).size(), [4, 10]);
    assert!(LinearClassifier::new(&vs.root(), 64, 0).is_err());
}

#[test]
fn parameter_names_follow_supcontrast() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = SupConModel::new(&vs.root(), &tiny(1)).unwrap();
    let names = var_names(&vs);
    for expected in [
        "encoder.conv1.weight",
        "encoder.bn1.weight",
        "encoder.bn1.bias",
        "encoder.bn1.running_mean",
        "encoder.bn1.running_var",
        "encoder.bn1.num_batches_tracked",
        "encoder.layer1.0.conv1.weight",
        "encoder.layer1.0.bn2.weight",
        "encoder.layer2.0.shortcut.0.weight",
        "encoder.layer2.0.shortcut.1.running_var",
        "head.0.weight",
        "head.0.bias",
        "head.2.weight",
        "head.2.bias",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    // Same width, stride 1: identity shortcut, no variables.
    assert!(!names
        .iter()
        .any(|n| n.starts_with("encoder.layer1.0.shortcut")));
    // No conv biases (every conv is followed by a BN).
    assert!(!names
        .iter()
        .any(|n| n.contains("conv") && n.ends_with("bias")));

    let vs = nn::VarStore::new(Device::Cpu);
    let linear_head = ModelConfig {
        head: HeadKind::Linear,
        ..tiny(1)
    };
    let _ = SupConModel::new(&vs.root(), &linear_head).unwrap();
    let head: Vec<String> = names_with_prefix(&vs, "head");
    assert_eq!(head, ["head.bias", "head.weight"]);

    let vs = nn::VarStore::new(Device::Cpu);
    let _ = LinearClassifier::new(&vs.root(), 2048, 10).unwrap();
    assert_eq!(names_with_prefix(&vs, ""), ["fc.bias", "fc.weight"]);

    let vs = nn::VarStore::new(Device::Cpu);
    let _ = CrossEntropyModel::new(&vs.root(), &tiny(3), 10).unwrap();
    assert_eq!(names_with_prefix(&vs, "fc"), ["fc.bias", "fc.weight"]);
    assert!(names_with_prefix(&vs, "encoder.").len() > 10);

    // Bottleneck: conv3/bn3, and a projection shortcut already in layer1 (64 → 256).
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = ResNet::new(
        &(vs.root() / "encoder"),
        &Architecture::ResNet50.spec(3, Stem::Cifar, false),
    );
    let names = var_names(&vs);
    for expected in [
        "encoder.layer1.0.conv3.weight",
        "encoder.layer1.0.bn3.num_batches_tracked",
        "encoder.layer1.0.shortcut.0.weight",
        "encoder.layer4.2.conv3.weight",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}");
    }
    assert_eq!(
        vs.variables()["encoder.layer1.0.shortcut.0.weight"].size(),
        [256, 64, 1, 1]
    );
}

fn names_with_prefix(vs: &nn::VarStore, prefix: &str) -> Vec<String> {
    var_names(vs)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Features of very different scales per column, as different methods' encoders give.
fn skewed_features(n: i64, dim: i64) -> Tensor {
    let scales = Tensor::logspace(-1.0, 3.0, dim, 10.0, (Kind::Float, Device::Cpu));
    // Offsets of a few deviations (ReLU features sit off zero), not so far that f32 cancels.
    let offsets = Tensor::linspace(-3.0, 3.0, dim, (Kind::Float, Device::Cpu)) * &scales;
    Tensor::randn([n, dim], (Kind::Float, Device::Cpu)) * scales + offsets
}

#[test]
fn standardized_classifier_sees_unit_features_and_ignores_their_scale() {
    tch::manual_seed(7);
    let features = skewed_features(500, 16);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut classifier = LinearClassifier::standardized(&vs.root(), 16, 4).unwrap();
    assert_eq!(
        var_names(&vs),
        [
            "fc.bias",
            "fc.weight",
            "standardize.mean",
            "standardize.std"
        ]
    );
    // The statistics are carried by checkpoints and never trained.
    for (name, variable) in vs.variables() {
        assert_eq!(variable.requires_grad(), name.starts_with("fc."), "{name}");
    }
    classifier.fit_standardization(&features).unwrap();

    // What the layer sees, computed here independently in f64: zero mean, unit deviation.
    let formula = |classifier: &LinearClassifier, features: &Tensor| {
        let f = features.to_kind(Kind::Double);
        let mean = f.mean_dim(0, false, Kind::Double);
        let std = ((&f - &mean).square().mean_dim(0, false, Kind::Double) + 1e-5).sqrt();
        tch::no_grad(|| {
            ((&f - &mean) / &std).matmul(&classifier.fc.ws.to_kind(Kind::Double).tr())
                + classifier.fc.bs.as_ref().unwrap().to_kind(Kind::Double)
        })
    };
    let max_difference = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    let logits = tch::no_grad(|| classifier.forward(&features)).to_kind(Kind::Double);
    let error = max_difference(&logits, &formula(&classifier, &features));
    assert!(error < 1e-4, "logits differ from the formula by {error}");

    // Scaled and shifted features (another method's encoder) give the same logits once the
    // classifier is fitted on them: the probe's learning rate no longer meets their scale.
    let vs2 = nn::VarStore::new(Device::Cpu);
    let mut rescaled = LinearClassifier::standardized(&vs2.root(), 16, 4).unwrap();
    tch::no_grad(|| {
        rescaled.fc.ws.copy_(&classifier.fc.ws);
        rescaled
            .fc
            .bs
            .as_mut()
            .unwrap()
            .copy_(classifier.fc.bs.as_ref().unwrap());
    });
    let scaled = &features * 1000.0 + 3.0;
    rescaled.fit_standardization(&scaled).unwrap();
    let again = tch::no_grad(|| rescaled.forward(&scaled)).to_kind(Kind::Double);
    let error = max_difference(&again, &formula(&rescaled, &scaled));
    assert!(
        error < 1e-4,
        "scaled logits differ from the formula by {error}"
    );
    // Not exactly equal: the variance's epsilon (1e-5) is 1e-3 of the smallest column's
    // variance (scale 0.1) and nothing after scaling, so normalized values move by up to
    // 5e-4 relative, about 1e-3 on the logits (seen on CI's CPU). Unstandardized, the
    // logits would move by a factor of about 1000.
    let moved = max_difference(&again, &logits);
    assert!(moved < 1e-2, "scaled features moved the logits by {moved}");
}

#[test]
fn standardization_refuses_what_it_cannot_fit_and_keeps_its_statistics() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut plain = LinearClassifier::new(&vs.root(), 8, 3).unwrap();
    assert!(matches!(
        plain.fit_standardization(&skewed_features(10, 8)),
        Err(ModelError::InvalidConfig {
            field: "standardize",
            ..
        })
    ));

    let vs = nn::VarStore::new(Device::Cpu);
    let mut classifier = LinearClassifier::standardized(&vs.root(), 8, 3).unwrap();
    let good = skewed_features(10, 8);
    classifier.fit_standardization(&good).unwrap();
    let before = tch::no_grad(|| classifier.forward(&good));
    let with_nan = good.copy();
    let _ = with_nan.get(3).get(5).fill_(f64::NAN);
    for (bad, what) in [
        (skewed_features(10, 7), "wrong width"),
        (skewed_features(0, 8), "no rows"),
        (skewed_features(10, 8).reshape([10, 2, 4]), "rank 3"),
        (with_nan, "a NaN"),
    ] {
        let error = classifier.fit_standardization(&bad).unwrap_err();
        match what {
            "a NaN" => assert!(
                matches!(error, ModelError::NonFinite { .. }),
                "{what}: {error:?}"
            ),
            _ => assert!(
                matches!(error, ModelError::InputShape { .. }),
                "{what}: {error:?}"
            ),
        }
        let after = tch::no_grad(|| classifier.forward(&good));
        assert!(after.equal(&before), "{what} changed the statistics");
    }
}

#[test]
fn zero_init_residual_zeroes_the_last_bn_of_each_branch() {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig {
        zero_init_residual: true,
        ..tiny(1)
    };
    let _ = SupConModel::new(&vs.root(), &config).unwrap();
    let vars = vs.variables();
    for stage in 1..=3 {
        let last = &vars[&format!("encoder.layer{stage}.0.bn2.weight")];
        assert_eq!(last.abs().sum(Kind::Float).double_value(&[]), 0.0);
        let first = &vars[&format!("encoder.layer{stage}.0.bn1.weight")];
        assert_eq!(
            first.sum(Kind::Float).double_value(&[]),
            first.numel() as f64
        );
    }
    // The shortcut's BN is not part of the residual branch.
    let sc = &vars["encoder.layer2.0.shortcut.1.weight"];
    assert_eq!(sc.sum(Kind::Float).double_value(&[]), 32.0);
}

/// GroupNorm normalizes each image alone: a batch forwarded whole or in parts gives the same
/// outputs (what makes a data-parallel run exactly a one-process run), where BatchNorm does not.
#[test]
fn group_norm_outputs_do_not_depend_on_the_batch_split() {
    tch::manual_seed(4);
    let x = images(8, 1, 16) * 2.0 + 0.5;
    let split_gap = |norm: Normalization| {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig { norm, ..tiny(1) };
        let model = SupConModel::new(&vs.root(), &config).unwrap();
        let whole = model.forward_t(&x, true);
        let parts = Tensor::cat(
            &[
                model.forward_t(&x.narrow(0, 0, 3), true),
                model.forward_t(&x.narrow(0, 3, 5), true),
            ],
            0,
        );
        (vs, (&whole - &parts).abs().max().double_value(&[]))
    };
    let (vs, gap) = split_gap(Normalization::Group);
    assert!(gap < 1e-6, "group norm: {gap}");
    // Same parameter names and counts as BatchNorm, and no running statistics.
    assert!(vs.variables().contains_key("encoder.bn1.weight"));
    assert!(!vs.variables().keys().any(|k| k.contains("running")));
    let (_, gap) = split_gap(Normalization::Batch);
    assert!(gap > 1e-3, "batch norm depends on the split: {gap}");
    assert_eq!(
        "group".parse::<Normalization>().unwrap(),
        Normalization::Group
    );
}

#[test]
fn train_and_eval_mode_batch_norm_differ_and_eval_is_deterministic() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SupConModel::new(&vs.root(), &tiny(1)).unwrap();
    let x = images(8, 1, 16) * 3.0 + 1.0;
    let running_mean = vs.variables()["encoder.bn1.running_mean"].copy();
    let eval1 = model.forward_t(&x, false);
    let eval2 = model.forward_t(&x, false);
    assert!(eval1.equal(&eval2), "eval mode must be deterministic");
    assert!(
        vs.variables()["encoder.bn1.running_mean"].equal(&running_mean),
        "eval must not touch running stats"
    );

    let train = model.forward_t(&x, true);
    let diff = (&train - &eval1).abs().max().double_value(&[]);
    assert!(diff > 1e-3, "train-mode BN uses batch statistics ({diff})");
    let vars = vs.variables();
    assert!(
        !vars["encoder.bn1.running_mean"].equal(&running_mean),
        "train mode updates running stats"
    );
    assert_eq!(vars["encoder.bn1.num_batches_tracked"].int64_value(&[]), 1);
    assert_eq!(vars["encoder.bn1.num_batches_tracked"].kind(), Kind::Int64);
}

#[test]
fn gradients_reach_every_parameter() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SupConModel::new(&vs.root(), &tiny(3)).unwrap();
    let x = images(6, 3, 12);
    let z = model.forward_t(&x, true);
    let target = Tensor::randn(z.size(), (Kind::Float, Device::Cpu));
    (z * target).sum(Kind::Float).backward();
    let vars = vs.variables();
    let trainable = vs.trainable_variables();
    assert_eq!(
        trainable.len(),
        vars.iter().filter(|(_, t)| t.requires_grad()).count()
    );
    for (name, t) in &vars {
        if !t.requires_grad() {
            assert!(
                name.contains("running_") || name.ends_with("num_batches_tracked"),
                "{name}"
            );
            continue;
        }
        let grad = t.grad();
        assert!(grad.defined(), "{name} has no gradient");
        let g = grad.abs().sum(Kind::Float).double_value(&[]);
        assert!(g > 0.0 && g.is_finite(), "{name}: |grad| = {g}");
    }
}

#[test]
fn tiny_model_overfits_a_small_batch() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = CrossEntropyModel::new(&vs.root(), &tiny(1), 10).unwrap();
    let x = images(32, 1, 16);
    let y = Tensor::arange(32, (Kind::Int64, Device::Cpu)).remainder(10);
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let mut loss = f64::INFINITY;
    for _ in 0..60 {
        let l = model.forward_t(&x, true).cross_entropy_for_logits(&y);
        opt.backward_step(&l);
        loss = l.double_value(&[]);
        if loss < 0.1 {
            break;
        }
    }
    assert!(loss < 0.1, "loss {loss} after 60 steps");
}

#[test]
fn checkpoint_round_trip_gives_identical_outputs() {
    tch::manual_seed(5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SupConModel::new(&vs.root(), &tiny(1)).unwrap();
    let x = images(4, 1, 16);
    // Move the running statistics and the counter away from their initial values.
    for _ in 0..3 {
        let _ = model.forward_t(&(&x * 2.0 + 0.5), true);
    }
    let expected = model.forward_t(&x, false);
    save_checkpoint(&vs, &path).unwrap();
    // Saving again replaces the file; no temporary file is left behind.
    save_checkpoint(&vs, &path).unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, ["model.safetensors"]);

    tch::manual_seed(6);
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = SupConModel::new(&vs2.root(), &tiny(1)).unwrap();
    assert!(!model2.forward_t(&x, false).equal(&expected));
    let report = load_checkpoint(&mut vs2, &path, LoadMode::Strict).unwrap();
    assert_eq!(report.loaded, vs.variables().len());
    assert!(report.ignored.is_empty());
    assert!(model2.forward_t(&x, false).equal(&expected));
    assert_eq!(
        vs2.variables()["encoder.bn1.num_batches_tracked"].int64_value(&[]),
        3
    );

    // An encoder-only store takes the encoder from a SupCon checkpoint.
    let mut vs3 = nn::VarStore::new(Device::Cpu);
    let encoder = ResNet::new(&(vs3.root() / "encoder"), &tiny(1).encoder_spec());
    let err = load_checkpoint(&mut vs3, &path, LoadMode::Strict).unwrap_err();
    assert!(
        matches!(&err, ModelError::CheckpointMismatch { problems, .. }
        if problems.iter().all(|p| matches!(p, TensorMismatch::Unexpected { name, .. } if name.starts_with("head."))))
    );
    let report = load_checkpoint(&mut vs3, &path, LoadMode::IgnoreUnexpected).unwrap();
    assert_eq!(
        report.ignored,
        [
            "head.0.bias",
            "head.0.weight",
            "head.2.bias",
            "head.2.weight"
        ]
    );
    assert!(encoder.forward_t(&x, false).equal(&model.encode(&x, false)));
}

#[test]
fn incompatible_checkpoint_is_a_typed_error_and_overwrites_nothing() {
    tch::manual_seed(7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gray.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = SupConModel::new(&vs.root(), &tiny(1)).unwrap();
    save_checkpoint(&vs, &path).unwrap();

    // Three input channels instead of one: the stem's weight has another shape.
    let mut rgb = nn::VarStore::new(Device::Cpu);
    let _ = SupConModel::new(&rgb.root(), &tiny(3)).unwrap();
    let before: Vec<(String, Tensor)> = rgb
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let err = load_checkpoint(&mut rgb, &path, LoadMode::Strict).unwrap_err();
    match &err {
        ModelError::CheckpointMismatch { problems, .. } => assert_eq!(
            problems,
            &[TensorMismatch::Shape {
                name: "encoder.conv1.weight".into(),
                expected: vec![16, 3, 3, 3],
                found: vec![16, 1, 3, 3],
            }]
        ),
        other => panic!("unexpected error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("encoder.conv1.weight") && message.contains("[16, 1, 3, 3]"),
        "{message}"
    );
    let after = rgb.variables();
    for (name, t) in &before {
        assert!(after[name].equal(t), "{name} was overwritten");
    }

    // A deeper model: the checkpoint lacks the second block of each stage.
    let mut small = nn::VarStore::new(Device::Cpu);
    let _ = SupConModel::new(
        &small.root(),
        &ModelConfig::new(Architecture::ResNetSmall).with_in_channels(1),
    )
    .unwrap();
    match load_checkpoint(&mut small, &path, LoadMode::Strict).unwrap_err() {
        ModelError::CheckpointMismatch { problems, .. } => {
            assert!(problems.contains(&TensorMismatch::Missing {
                name: "encoder.layer1.1.conv1.weight".into(),
                expected: vec![16, 16, 3, 3],
            }));
        }
        other => panic!("unexpected error {other:?}"),
    }

    // Not there at all / not a safetensors file.
    let missing = dir.path().join("missing.safetensors");
    assert!(matches!(
        load_checkpoint(&mut small, &missing, LoadMode::Strict),
        Err(ModelError::Io { .. })
    ));
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    assert!(matches!(
        load_checkpoint(&mut small, &garbage, LoadMode::Strict),
        Err(ModelError::CheckpointFormat { .. })
    ));
}

#[test]
fn config_parses_from_toml() {
    let config: ModelConfig = toml::from_str(
        "architecture = \"ResNet-18\"\nin_channels = 1\nhead = \"linear\"\nstem = \"imagenet\"\n",
    )
    .unwrap();
    assert_eq!(config.architecture, Architecture::ResNet18);
    assert_eq!(config.in_channels, 1);
    assert_eq!(config.head, HeadKind::Linear);
    assert_eq!(config.stem, Stem::Imagenet);
    assert_eq!(config.projection_dim, 128);
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("architecture = \"resnet18\""), "{text}");
    assert_eq!(toml::from_str::<ModelConfig>(&text).unwrap(), config);
    let err = toml::from_str::<ModelConfig>("architecture = \"resnet19\"").unwrap_err();
    assert!(err.to_string().contains("resnet19"), "{err}");
    assert!(toml::from_str::<ModelConfig>("depth = 18").is_err());
    let vs = nn::VarStore::new(Device::Cpu);
    let bad = ModelConfig {
        in_channels: 0,
        ..tiny(1)
    };
    assert!(matches!(
        SupConModel::new(&vs.root(), &bad),
        Err(ModelError::InvalidConfig {
            field: "in_channels",
            ..
        })
    ));
}

/// The build script's rpath: this test binary starts with no LD_LIBRARY_PATH at all.
#[test]
fn test_binary_starts_without_ld_library_path() {
    if std::env::var_os("SUPCON_RPATH_CHILD").is_some() {
        // In the child: touch libtorch so the library really is loaded and used.
        let t = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(t.sum(Kind::Float).double_value(&[]), 4.0);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "test_binary_starts_without_ld_library_path",
            "--nocapture",
        ])
        .env_remove("LD_LIBRARY_PATH")
        .env("SUPCON_RPATH_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fine_tuned_model_keeps_the_first_head_layers_with_the_pretrained_names() {
    let mut config = tiny(1);
    config.head = HeadKind::Mlp3;
    let x = images(3, 1, 28);
    let pretrained_vs = nn::VarStore::new(Device::Cpu);
    let pretrained = SupConModel::new(&pretrained_vs.root(), &config).unwrap();
    let from = pretrained_vs.variables();
    // The head's layers by hand: x Wᵀ + b, a ReLU after all but the head's last.
    let layer = |x: &Tensor, name: &str| {
        x.matmul(&from[&format!("{name}.weight")].tr()) + &from[&format!("{name}.bias")]
    };
    let features = pretrained.encode(&x, false);
    let first = layer(&features, "head.0").relu();
    let second = layer(&first, "head.2").relu();
    let projection = layer(&second, "head.4");
    let expected = [features.shallow_clone(), first, second, projection];
    for (layers, want) in expected.iter().enumerate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = FineTunedModel::new(&vs.root(), &config, layers, 10).unwrap();
        let head: Vec<String> = var_names(&vs)
            .into_iter()
            .filter(|n| n.starts_with("head."))
            .collect();
        let named: Vec<String> = ["head.0", "head.2", "head.4"][..layers]
            .iter()
            .flat_map(|l| [format!("{l}.bias"), format!("{l}.weight")])
            .collect();
        assert_eq!(head, named, "the kept layers have the pre-trained names");
        tch::no_grad(|| {
            for (name, mut variable) in vs.variables() {
                if let Some(value) = from.get(&name) {
                    variable.copy_(value);
                }
            }
        });
        let got = model.features(&x, false);
        assert!(got.allclose(want, 1e-5, 1e-6, false), "{layers} layer(s)");
        assert_eq!(model.forward_t(&x, false).size(), [3, 10]);
    }
    let mut mlp = tiny(1);
    mlp.head = HeadKind::Mlp;
    let vs = nn::VarStore::new(Device::Cpu);
    let err = FineTunedModel::new(&vs.root(), &mlp, 3, 10).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::InvalidConfig {
                field: "head_layers",
                ..
            }
        ),
        "{err}"
    );
}
