//! The evaluation → report → plots path end to end on synthetic but structured data:
//! clustered embeddings, logits from a nearest-centre classifier, a metrics log with two
//! stages. Checks the figures that can be known in advance and that every file is written.
//!
//! Set `SUPCON_KEEP_PLOTS=<dir>` to keep the run folder (to look at the PNGs).

use std::path::Path;

use ndarray::{Array2, ArrayView2};
use supcon_train::eval::{
    classification_metrics, embedding_geometry, knn_classify, GeometryOptions, KnnOptions,
};
use supcon_train::metrics_log::{MetricRecord, MetricsWriter, RecordKind, Stage, METRICS_FILE};
use supcon_train::plots::{
    EmbeddingsForPlot, PlotOptions, ACCURACY_PLOT, LOSS_PLOT, PCA_PLOT, PLOTS_DIR,
};
use supcon_train::report::{
    write_report, MethodEvaluation, Report, ReportInput, StageReport, REPORT_JSON, REPORT_MD,
};

const CLASSES: usize = 4;
const DIM: usize = 16;

/// `per_class` points per class around orthogonal directions `e_c`, with a deterministic
/// pseudo-random spread of `spread` in every coordinate.
fn clustered(per_class: usize, spread: f32, salt: u64) -> (Array2<f32>, Vec<i64>) {
    let n = per_class * CLASSES;
    let mut state = salt;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * spread
    };
    let labels: Vec<i64> = (0..n).map(|i| (i % CLASSES) as i64).collect();
    let x = Array2::from_shape_fn((n, DIM), |(i, d)| {
        let centre = if d == i % CLASSES { 1.0 } else { 0.0 };
        centre + noise()
    });
    (x, labels)
}

/// Logits of a nearest-centre classifier: the first `CLASSES` coordinates.
fn logits_of(x: ArrayView2<'_, f32>) -> Array2<f32> {
    x.slice(ndarray::s![.., ..CLASSES]).to_owned()
}

fn write_metrics(run_dir: &Path) {
    let mut writer = MetricsWriter::append(&run_dir.join(METRICS_FILE)).unwrap();
    let stages = [(Stage::Pretrain, 5.0), (Stage::Linear, 1.2)];
    for (stage, start_loss) in stages {
        for epoch in 0..3u32 {
            for s in 1..=10u64 {
                let step = u64::from(epoch) * 10 + s;
                let t = step as f64 / 30.0;
                writer
                    .write(&MetricRecord {
                        stage,
                        kind: RecordKind::Step,
                        epoch,
                        step,
                        loss: start_loss * (1.0 - 0.5 * t),
                        lr: 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                        images_per_second: 900.0,
                        val_top1: None,
                        train_top1: None,
                        wall_seconds: step as f64,
                    })
                    .unwrap();
            }
            let linear = stage == Stage::Linear;
            writer
                .write(&MetricRecord {
                    stage,
                    kind: RecordKind::Epoch,
                    epoch,
                    step: u64::from(epoch + 1) * 10,
                    loss: start_loss,
                    lr: 0.0,
                    images_per_second: 900.0,
                    val_top1: linear.then_some(0.7 + 0.1 * f64::from(epoch)),
                    train_top1: linear.then_some(0.75 + 0.1 * f64::from(epoch)),
                    wall_seconds: 10.0 * f64::from(epoch + 1),
                })
                .unwrap();
        }
    }
}

fn run_report(run_dir: &Path, plot_options: PlotOptions) -> Report {
    let (train, train_labels) = clustered(100, 0.05, 1);
    let (test, test_labels) = clustered(50, 0.05, 2);
    let (test_view2, _) = clustered(50, 0.05, 3);
    let logits = logits_of(test.view());

    let classification = classification_metrics(logits.view(), &test_labels).unwrap();
    let knn = knn_classify(
        train.view(),
        &train_labels,
        test.view(),
        &test_labels,
        CLASSES,
        &KnnOptions::default(),
    )
    .unwrap();
    let geometry = embedding_geometry(
        test.view(),
        Some(test_view2.view()),
        &GeometryOptions::default(),
    )
    .unwrap();
    assert_eq!(knn.top1, 1.0, "well separated clusters");
    // Four strong directions plus weak noise in all 16: singular values ≈ 7.1 (×4) and
    // ≈ 0.4 (×12), so exp(H) ≈ 6.8: above 4, far below 16.
    assert!(
        geometry.effective_rank > 4.0 && geometry.effective_rank < 8.0,
        "{geometry:?}"
    );
    assert!(geometry.alignment.unwrap() > 0.0 && geometry.alignment.unwrap() < 1.0);

    write_metrics(run_dir);
    let class_names: Vec<String> = ["T-shirt/top", "Trouser", "Pullover", "Dress"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut pretrain = StageReport::new(Stage::Pretrain, "supcon", 3, 30.0, 900.0);
    pretrain.wall_seconds = 30.0;
    let mut linear = StageReport::new(Stage::Linear, "supcon", 3, 12.0, 3000.0);
    linear.val_top1 = Some(0.9);
    linear.best_epoch = Some(2);
    let evaluation = MethodEvaluation {
        method: "supcon".into(),
        knn: Some(knn),
        geometry: Some(geometry),
        classification: Some(classification),
        robustness: None,
    };
    write_report(
        run_dir,
        ReportInput {
            run_name: "synthetic".into(),
            evaluated_on: "test".into(),
            dataset: Some("4 clusters in 16-D".into()),
            class_names: class_names.clone(),
            stages: vec![pretrain, linear],
            evaluations: vec![evaluation],
            pca: Some(EmbeddingsForPlot {
                embeddings: test.view(),
                labels: &test_labels,
                class_names: &class_names,
            }),
            plot_options,
        },
    )
    .unwrap()
}

/// Width and height from a PNG's IHDR chunk (after checking the signature).
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn check_run_dir(run_dir: &Path, report: &Report) {
    // Stage figures round-trip exactly; the kNN predictions are not written, and serde_json
    // may change a float's last digit, so the evaluations are compared by their key figures.
    let read = Report::read(&run_dir.join(REPORT_JSON)).unwrap();
    assert_eq!(read.stages, report.stages);
    assert_eq!(read.class_names, report.class_names);
    let (ours, theirs) = (&report.evaluations[0], &read.evaluations[0]);
    assert_eq!(ours.classification, theirs.classification);
    assert_eq!(theirs.knn.as_ref().map(|k| k.top1), Some(1.0));
    assert!(theirs.knn.as_ref().unwrap().predictions.is_empty());
    let rank = |e: &MethodEvaluation| e.geometry.as_ref().map(|g| g.effective_rank).unwrap();
    assert!((rank(ours) - rank(theirs)).abs() < 1e-12);
    let pretrain = &report.stages[0];
    let linear = &report.stages[1];
    assert_eq!(
        pretrain.knn_top1,
        Some(1.0),
        "kNN goes to the encoder's stage"
    );
    assert_eq!(pretrain.test_top1, None);
    assert!(linear.test_top1.unwrap() > 0.9, "{linear:?}");
    assert_eq!(linear.knn_top1, None);
    let md = std::fs::read_to_string(run_dir.join(REPORT_MD)).unwrap();
    for needle in [
        "## Summary",
        "## Embeddings",
        "Confusion matrix: supcon",
        "plots/pca.png",
        "Trouser",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let table = report.summary_table();
    assert!(table.contains("| supcon | pretrain |"), "{table}");
    assert!(table.contains("100.00%"), "{table}");
    let plots = run_dir.join(PLOTS_DIR);
    assert_eq!(
        png_size(&plots.join(LOSS_PLOT)),
        (1000, 800),
        "two stages → two rows"
    );
    assert_eq!(png_size(&plots.join(ACCURACY_PLOT)), (1000, 500));
    assert_eq!(png_size(&plots.join(PCA_PLOT)), (1000, 800));
    // Nothing temporary is left behind.
    for dir in [run_dir, plots.as_path()] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left over: {name}");
        }
    }
}

#[test]
fn report_and_plots_of_a_synthetic_run() {
    let kept = std::env::var_os("SUPCON_KEEP_PLOTS");
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = kept.as_ref().map_or_else(
        || tmp.path().to_path_buf(),
        |d| Path::new(d).join("with-font"),
    );
    std::fs::create_dir_all(&run_dir).unwrap();
    let _ = std::fs::remove_file(run_dir.join(METRICS_FILE));
    let report = run_report(&run_dir, PlotOptions::default());
    check_run_dir(&run_dir, &report);
}

#[test]
fn plots_are_drawn_without_text_when_the_font_is_missing() {
    let kept = std::env::var_os("SUPCON_KEEP_PLOTS");
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = kept.as_ref().map_or_else(
        || tmp.path().to_path_buf(),
        |d| Path::new(d).join("no-font"),
    );
    std::fs::create_dir_all(&run_dir).unwrap();
    let _ = std::fs::remove_file(run_dir.join(METRICS_FILE));
    let options = PlotOptions {
        font_path: Some(run_dir.join("no-such-font.ttf")),
        ..PlotOptions::default()
    };
    let report = run_report(&run_dir, options);
    check_run_dir(&run_dir, &report);
}
