//! The run's report: `report.json` (machine-readable) and `report.md` (for people), both
//! written atomically, and the summary table the CLI prints at the end of a run.
//!
//! A [`Report`] has one [`StageReport`] per training stage (method, epochs, wall time,
//! images/s, validation / test / kNN top-1) and one [`MethodEvaluation`] per evaluated model
//! (kNN, embedding geometry, per-class accuracy and confusion matrix, robustness), each part
//! optional so that a partial run still reports what it has. The data is here; its rendering
//! (the summary table, `report.md`) is `markdown.rs`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::eval::{ClassificationMetrics, EmbeddingGeometry, KnnResult, RobustnessReport};
use crate::files::write_atomic;
use crate::tensorboard::Scalar;
use crate::vocabulary::Stage;

mod markdown;

/// File name of the JSON report inside a run folder.
pub const REPORT_JSON: &str = "report.json";
/// File name of the Markdown report inside a run folder.
pub const REPORT_MD: &str = "report.md";

/// What one training stage did and scored. Accuracies are fractions in `[0, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: Stage,
    /// `supcon`, `simclr` or `ce`; for the linear stage, the method of the encoder it probes.
    pub method: String,
    /// Epochs trained.
    pub epochs: u32,
    /// Training time of the stage (without the final evaluation).
    pub wall_seconds: f64,
    /// Mean training throughput over the stage (all ranks together).
    pub images_per_second: f64,
    /// Ranks (processes) the stage ran on: 1 in one process.
    #[serde(default = "one_rank")]
    pub ranks: usize,
    /// Best validation top-1 (the selected epoch), where the stage has a classifier.
    #[serde(default)]
    pub val_top1: Option<f64>,
    /// Epoch (from 0) of the best validation top-1, the checkpoint that was tested.
    #[serde(default)]
    pub best_epoch: Option<u32>,
    #[serde(default)]
    pub test_top1: Option<f64>,
    #[serde(default)]
    pub test_top5: Option<f64>,
    /// Weighted kNN top-1 on the stage's encoder embeddings (train bank, test queries).
    #[serde(default)]
    pub knn_top1: Option<f64>,
}

impl StageReport {
    /// A stage report with the figures every stage has; the accuracies start empty.
    pub fn new(
        stage: Stage,
        method: &str,
        epochs: u32,
        wall_seconds: f64,
        images_per_second: f64,
    ) -> Self {
        Self {
            stage,
            method: method.to_string(),
            epochs,
            wall_seconds,
            images_per_second,
            ranks: 1,
            val_top1: None,
            best_epoch: None,
            test_top1: None,
            test_top5: None,
            knn_top1: None,
        }
    }
}

/// Test-set evaluation of one model (`supcon` encoder + linear head, or the CE baseline).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodEvaluation {
    pub method: String,
    #[serde(default)]
    pub knn: Option<KnnResult>,
    #[serde(default)]
    pub geometry: Option<EmbeddingGeometry>,
    #[serde(default)]
    pub classification: Option<ClassificationMetrics>,
    #[serde(default)]
    pub robustness: Option<RobustnessReport>,
}

impl MethodEvaluation {
    /// The final test-set figures of one method, those measured: `eval/<method>/top1`, `top5`
    /// (the classifier), `knn_top1`, `knn_top5` (weighted kNN on the encoder's embeddings) and
    /// `mean_corrupted_top1` (the corruption sweep).
    pub fn scalars(&self) -> Vec<Scalar> {
        let tag = |name: &str| format!("eval/{}/{name}", self.method);
        let mut scalars = Vec::new();
        if let Some(c) = &self.classification {
            scalars.push(Scalar::new(tag("top1"), c.top1));
            scalars.push(Scalar::new(tag("top5"), c.top5));
        }
        if let Some(knn) = &self.knn {
            scalars.push(Scalar::new(tag("knn_top1"), knn.top1));
            scalars.push(Scalar::new(tag("knn_top5"), knn.top5));
        }
        if let Some(r) = &self.robustness {
            scalars.push(Scalar::new(
                tag("mean_corrupted_top1"),
                r.mean_corrupted_top1,
            ));
        }
        scalars
    }

    /// An evaluation of `method` with nothing measured yet.
    pub fn new(method: &str) -> Self {
        Self {
            method: method.to_string(),
            ..Self::default()
        }
    }
}

/// Everything a run reports; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run_name: String,
    /// The split the accuracies were measured on: `test`, or `validation` for tuning runs.
    #[serde(default = "default_evaluated_on")]
    pub evaluated_on: String,
    /// Data set description, e.g. `fashion-mnist (54000 train / 6000 val / 10000 test)`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Class names by index (may be empty: classes are then shown by number).
    #[serde(default)]
    pub class_names: Vec<String>,
    pub stages: Vec<StageReport>,
    #[serde(default)]
    pub evaluations: Vec<MethodEvaluation>,
}

fn one_rank() -> usize {
    1
}

fn default_evaluated_on() -> String {
    "test".into()
}

impl Report {
    /// An empty report for `run_name`, evaluated on the test set.
    pub fn new(run_name: &str) -> Self {
        Self {
            run_name: run_name.to_string(),
            evaluated_on: default_evaluated_on(),
            ..Self::default()
        }
    }

    /// Adds `stage`, replacing an earlier report of the same stage and method (a rerun).
    pub fn upsert_stage(&mut self, stage: StageReport) {
        match self
            .stages
            .iter_mut()
            .find(|s| s.stage == stage.stage && s.method == stage.method)
        {
            Some(existing) => *existing = stage,
            None => self.stages.push(stage),
        }
    }

    /// Adds `evaluation`, replacing an earlier one of the same method.
    pub fn upsert_evaluation(&mut self, evaluation: MethodEvaluation) {
        match self
            .evaluations
            .iter_mut()
            .find(|e| e.method == evaluation.method)
        {
            Some(existing) => *existing = evaluation,
            None => self.evaluations.push(evaluation),
        }
    }

    /// The evaluation of `method`, created empty when missing.
    pub fn evaluation_mut(&mut self, method: &str) -> &mut MethodEvaluation {
        let index = match self.evaluations.iter().position(|e| e.method == method) {
            Some(index) => index,
            None => {
                self.evaluations.push(MethodEvaluation::new(method));
                self.evaluations.len() - 1
            }
        };
        &mut self.evaluations[index]
    }

    /// Reads a `report.json`.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes `report.json` and `report.md` into `run_dir`, each atomically.
    pub fn write(&self, run_dir: &Path) -> Result<(), TrainError> {
        let json_path = run_dir.join(REPORT_JSON);
        let json = serde_json::to_string_pretty(self).map_err(|e| TrainError::Json {
            path: json_path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&json_path, format!("{json}\n").as_bytes())?;
        write_atomic(
            &run_dir.join(REPORT_MD),
            self.to_markdown(run_dir).as_bytes(),
        )
    }
}

/// What [`write_report`] needs from a finished run.
pub struct ReportInput<'a> {
    pub run_name: String,
    /// `test`, or `validation` (see [`Report::evaluated_on`]).
    pub evaluated_on: String,
    pub dataset: Option<String>,
    pub class_names: Vec<String>,
    /// One per trained stage; `test_top1`, `test_top5` and `knn_top1` may be left empty:
    /// they are filled from `evaluations` (see [`Report::fill_stage_accuracies`]).
    pub stages: Vec<StageReport>,
    /// Test-set metrics per method, computed with [`crate::eval`].
    pub evaluations: Vec<MethodEvaluation>,
    /// Test embeddings to draw the PCA plot of (the main method's), if any.
    pub pca: Option<crate::plots::EmbeddingsForPlot<'a>>,
    pub plot_options: crate::plots::PlotOptions,
}

/// Writes the plots (from the run's `metrics.jsonl` and `input.pca`), `report.json` and
/// `report.md` into `run_dir`, and returns the report (print [`Report::summary_table`]).
/// A plot that cannot be drawn is logged and skipped: the report matters more.
pub fn write_report(run_dir: &Path, input: ReportInput<'_>) -> Result<Report, TrainError> {
    let mut report = Report {
        run_name: input.run_name,
        evaluated_on: input.evaluated_on,
        dataset: input.dataset,
        class_names: input.class_names,
        stages: input.stages,
        evaluations: input.evaluations,
    };
    report.fill_stage_accuracies();
    let metrics_path = run_dir.join(crate::run_dir::METRICS_FILE);
    let records = if metrics_path.exists() {
        crate::metrics_log::read_metrics(&metrics_path)?
    } else {
        Vec::new()
    };
    if let Err(e) = crate::plots::write_run_plots(run_dir, &records, input.pca, &input.plot_options)
    {
        tracing::warn!("plots not written: {}", crate::error::chain(&e));
    }
    report.write(run_dir)?;
    Ok(report)
}

impl Report {
    /// Copies each method's test figures into its stage rows where they are empty: test
    /// top-1/top-5 into the last stage that trained the classifier (`linear`, `ce`,
    /// `finetune` or `distill`), kNN top-1 into the last stage that trained the encoder
    /// (`pretrain`, `ce`, or `finetune` / `distill` after `pretrain`).
    pub fn fill_stage_accuracies(&mut self) {
        for evaluation in &self.evaluations {
            // A method's figures belong to its last stage of each kind: a fine-tuning or a
            // distillation after pre-training is what the evaluation read.
            let last = |kinds: &[Stage]| {
                self.stages
                    .iter()
                    .rposition(|s| s.method == evaluation.method && kinds.contains(&s.stage))
            };
            let classifier = last(&[Stage::Linear, Stage::Ce, Stage::Finetune, Stage::Distill]);
            let encoder = last(&[Stage::Pretrain, Stage::Ce, Stage::Finetune, Stage::Distill]);
            for (index, stage) in self.stages.iter_mut().enumerate() {
                if let (true, Some(c)) = (classifier == Some(index), &evaluation.classification) {
                    stage.test_top1.get_or_insert(c.top1);
                    stage.test_top5.get_or_insert(c.top5);
                }
                if let (true, Some(k)) = (encoder == Some(index), &evaluation.knn) {
                    stage.knn_top1.get_or_insert(k.top1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{ConfusionMatrix, RobustnessEntry};

    fn sample_report() -> Report {
        let mut report = Report::new("quick");
        report.dataset = Some("fashion-mnist".into());
        report.class_names = vec!["T-shirt/top".into(), "Trouser".into()];
        let mut pretrain = StageReport::new(Stage::Pretrain, "supcon", 10, 754.2, 912.0);
        pretrain.knn_top1 = Some(0.8912);
        report.upsert_stage(pretrain);
        let mut linear = StageReport::new(Stage::Linear, "supcon", 5, 41.0, 3000.0);
        linear.val_top1 = Some(0.9);
        linear.test_top1 = Some(0.9012);
        report.upsert_stage(linear.clone());
        linear.test_top1 = Some(0.9034); // a rerun replaces the row
        report.upsert_stage(linear);
        let confusion = ConfusionMatrix {
            num_classes: 2,
            counts: vec![vec![9, 1], vec![0, 10]],
        };
        let evaluation = report.evaluation_mut("supcon");
        evaluation.classification = Some(ClassificationMetrics {
            samples: 20,
            top1: confusion.accuracy(),
            top5: 1.0,
            per_class: confusion.per_class(),
            confusion,
        });
        evaluation.robustness = Some(RobustnessReport {
            samples: 20,
            clean_top1: 0.95,
            entries: vec![
                RobustnessEntry {
                    corruption: "gaussian_noise".into(),
                    severity: 1,
                    top1: 0.9,
                },
                RobustnessEntry {
                    corruption: "gaussian_noise".into(),
                    severity: 2,
                    top1: 0.8,
                },
            ],
            mean_corrupted_top1: 0.85,
        });
        report
    }

    #[test]
    fn summary_table_has_one_aligned_row_per_stage() {
        let table = sample_report().summary_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("| method | stage"), "{table}");
        assert!(
            lines[2].contains("12m 34s") && lines[2].contains("89.12%"),
            "{table}"
        );
        assert!(
            lines[3].contains("90.34%") && lines[3].contains("90.00%"),
            "{table}"
        );
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
    }

    #[test]
    fn report_round_trips_and_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        report.write(dir.path()).unwrap();
        let read = Report::read(&dir.path().join(REPORT_JSON)).unwrap();
        assert_eq!(read, report);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(REPORT_JSON)).unwrap())
                .unwrap();
        assert_eq!(json["stages"][0]["method"], "supcon");
        assert_eq!(json["stages"][0]["stage"], "pretrain");
        assert_eq!(json["stages"][1]["test_top1"], 0.9034);
        assert!(json["stages"][0]["wall_seconds"].is_number());
        assert!(json["stages"][0]["images_per_second"].is_number());
        let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
        assert!(md.contains("## Per-class test accuracy"), "{md}");
        assert!(md.contains("| Trouser     |"), "{md}");
        assert!(md.contains("| 0 T-shirt/top |"), "{md}");
        assert!(
            md.contains("gaussian_noise") && md.contains("85.00%"),
            "{md}"
        );
        // No temporary file is left beside the report.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_corrupt_report_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPORT_JSON);
        std::fs::write(&path, "{\"run_name\": 3").unwrap();
        let err = Report::read(&path).unwrap_err();
        assert!(err.to_string().contains("report.json"), "{err}");
    }
}
