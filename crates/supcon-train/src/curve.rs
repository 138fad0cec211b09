//! Accuracy against training time: one point per finished run (its `report.json`), a line per
//! method, drawn as one PNG and written as a Markdown table (`supcon curve`).
//!
//! A point's time is the sum of the wall times of the stages that produced its classifier
//! (pre-training and linear stage, or the CE stage), the figures the report holds: time to a
//! usable classifier, without the final evaluation.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::TrainError;
use crate::report::{Report, REPORT_JSON};
use crate::vocabulary::Stage;

/// One finished run of one method.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    pub method: String,
    /// The run folder's name.
    pub run: String,
    /// Epochs of the stage that trained the encoder (pre-training, or CE).
    pub epochs: u32,
    /// Wall time of the stages behind the classifier.
    pub train_seconds: f64,
    pub top1: f64,
    pub knn_top1: Option<f64>,
    /// Mean top-1 under the corruptions, when the run measured it.
    pub corrupted_top1: Option<f64>,
}

/// The figure's lines: one per method, in order of first appearance, each point
/// (training minutes, top-1 %).
pub fn accuracy_series(points: &[CurvePoint]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        let point = (p.train_seconds / 60.0, 100.0 * p.top1);
        match series.iter_mut().find(|(method, _)| *method == p.method) {
            Some((_, line)) => line.push(point),
            None => series.push((p.method.clone(), vec![point])),
        }
    }
    series
}

/// The points of one report: one per evaluated method.
pub fn points_of(report: &Report) -> Vec<CurvePoint> {
    report
        .evaluations
        .iter()
        .filter_map(|evaluation| {
            let classification = evaluation.classification.as_ref()?;
            let stages: Vec<_> = report
                .stages
                .iter()
                .filter(|s| s.method == evaluation.method)
                .collect();
            let encoder_stage = stages
                .iter()
                .find(|s| matches!(s.stage, Stage::Pretrain | Stage::Ce))?;
            Some(CurvePoint {
                method: evaluation.method.clone(),
                run: report.run_name.clone(),
                epochs: encoder_stage.epochs,
                train_seconds: stages.iter().map(|s| s.wall_seconds).sum(),
                top1: classification.top1,
                knn_top1: evaluation.knn.as_ref().map(|k| k.top1),
                corrupted_top1: evaluation
                    .robustness
                    .as_ref()
                    .map(|r| r.mean_corrupted_top1),
            })
        })
        .collect()
}

/// The points of every run folder directly under `runs` that has a report, sorted by method
/// then time; also returns the split they were measured on. Folders without a report (a run
/// still going, or one that failed) are skipped with a warning; reports measured on
/// different splits are an error, as is finding no point at all.
pub fn collect(runs: &Path) -> Result<(Vec<CurvePoint>, String), TrainError> {
    let entries = std::fs::read_dir(runs).map_err(|e| TrainError::io(runs, e))?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(runs, e))?;
        if entry.path().is_dir() {
            folders.push(entry.path());
        }
    }
    folders.sort();
    let mut points = Vec::new();
    let mut split: Option<String> = None;
    for folder in folders {
        let path = folder.join(REPORT_JSON);
        if !path.exists() {
            tracing::warn!("{}: no {REPORT_JSON}, skipped", folder.display());
            continue;
        }
        let report = Report::read(&path)?;
        match &split {
            Some(s) if *s != report.evaluated_on => {
                return Err(TrainError::RunDir {
                    path: folder,
                    message: format!(
                        "evaluated on the {} split, but earlier runs on the {s} split: one curve, one split",
                        report.evaluated_on
                    ),
                })
            }
            _ => split = Some(report.evaluated_on.clone()),
        }
        points.extend(points_of(&report));
    }
    let Some(split) = split.filter(|_| !points.is_empty()) else {
        return Err(TrainError::RunDir {
            path: runs.to_path_buf(),
            message: format!("no run folder here has a {REPORT_JSON} with an evaluated method"),
        });
    };
    points.sort_by(|a, b| {
        a.method
            .cmp(&b.method)
            .then(a.train_seconds.total_cmp(&b.train_seconds))
    });
    Ok((points, split))
}

/// The points as a Markdown table (`split` names the accuracy columns).
pub fn markdown_table(points: &[CurvePoint], split: &str) -> String {
    let mut md = format!(
        "| method | epochs | training wall time | {split} top-1 | kNN top-1 | mean under corruptions | run |\n\
         |---|---:|---:|---:|---:|---:|---|\n"
    );
    let percent = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.2} %", 100.0 * v));
    for p in points {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} min | {} | {} | {} | `{}` |",
            p.method,
            p.epochs,
            p.train_seconds / 60.0,
            percent(Some(p.top1)),
            percent(p.knn_top1),
            percent(p.corrupted_top1),
            p.run
        );
    }
    md
}

/// Named lines of `(x, y)` points, as the figures draw them.
pub type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// The largest label-efficiency table read (a few dozen rows are expected).
const MAX_TABLE_BYTES: u64 = 1 << 20;

/// The rows of a label-efficiency table (`supcon label-efficiency`): CSV lines
/// `row kind,labeled %,test top-1 %` (a header line and `#` comments are skipped), grouped by
/// row kind in order of appearance, each kind's points sorted by labeled %.
pub fn read_label_efficiency(path: &Path) -> Result<Lines, TrainError> {
    let size = std::fs::metadata(path)
        .map_err(|e| TrainError::io(path, e))?
        .len();
    if size > MAX_TABLE_BYTES {
        return Err(TrainError::Config(format!(
            "{}: {size} bytes; a label-efficiency table is at most {MAX_TABLE_BYTES}",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut rows: Lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (number == 0 && line.starts_with("row")) {
            continue;
        }
        let bad = |why: &str| {
            TrainError::Config(format!(
                "{} line {}: {why} (expected `row kind,labeled %,test top-1 %`)",
                path.display(),
                number + 1
            ))
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [kind, labeled, top1] = fields[..] else {
            return Err(bad("not three fields"));
        };
        let number_in = |field: &str, what: &str, max: f64| -> Result<f64, TrainError> {
            field
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=max).contains(v))
                .ok_or_else(|| bad(&format!("{what} `{field}` is not a number in [0, {max}]")))
        };
        let point = (
            number_in(labeled, "labeled %", 100.0)?,
            number_in(top1, "top-1 %", 100.0)?,
        );
        match rows.iter_mut().find(|(name, _)| name == kind) {
            Some((_, points)) => points.push(point),
            None => rows.push((kind.to_string(), vec![point])),
        }
    }
    if rows.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no rows (expected `row kind,labeled %,test top-1 %` lines)",
            path.display()
        )));
    }
    for (_, points) in &mut rows {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{ClassificationMetrics, ConfusionMatrix};
    use crate::report::StageReport;

    fn report(name: &str, method: &str, stages: &[(Stage, u32, f64)], top1_hits: u64) -> Report {
        let mut report = Report::new(name);
        for &(stage, epochs, seconds) in stages {
            report.upsert_stage(StageReport::new(stage, method, epochs, seconds, 100.0));
        }
        let confusion = ConfusionMatrix {
            num_classes: 2,
            counts: vec![vec![top1_hits, 10 - top1_hits], vec![0, 10]],
        };
        report.evaluation_mut(method).classification = Some(ClassificationMetrics {
            samples: 20,
            top1: confusion.accuracy(),
            top5: 1.0,
            per_class: confusion.per_class(),
            confusion,
        });
        report
    }

    #[test]
    fn a_point_sums_the_stages_behind_its_classifier() {
        let supcon = report(
            "supcon-2ep",
            "supcon",
            &[(Stage::Pretrain, 2, 120.0), (Stage::Linear, 10, 30.0)],
            8,
        );
        let points = points_of(&supcon);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].epochs, 2);
        assert_eq!(points[0].train_seconds, 150.0);
        assert_eq!(points[0].top1, 0.9);
        let ce = report("ce-4ep", "ce", &[(Stage::Ce, 4, 90.0)], 6);
        assert_eq!(points_of(&ce)[0].train_seconds, 90.0);
    }

    #[test]
    fn collect_reads_run_folders_skips_unfinished_ones_and_refuses_mixed_splits() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, report: &Report| {
            let folder = dir.path().join(name);
            std::fs::create_dir_all(&folder).unwrap();
            report.write(&folder).unwrap();
        };
        write("b", &report("b", "ce", &[(Stage::Ce, 4, 90.0)], 6));
        write("a", &report("a", "ce", &[(Stage::Ce, 2, 45.0)], 5));
        std::fs::create_dir_all(dir.path().join("still-running")).unwrap();
        let (points, split) = collect(dir.path()).unwrap();
        assert_eq!(split, "test");
        assert_eq!(
            points.iter().map(|p| p.epochs).collect::<Vec<_>>(),
            vec![2, 4]
        );
        let table = markdown_table(&points, &split);
        assert!(table.contains("| ce | 2 | 0.8 min | 75.00 % |"), "{table}");
        let mut tuning = report("c", "ce", &[(Stage::Ce, 1, 20.0)], 5);
        tuning.evaluated_on = "validation".into();
        write("c", &tuning);
        let err = collect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("one curve, one split"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(collect(empty.path()).is_err());
    }

    #[test]
    fn label_efficiency_tables_are_read_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "row,labeled,top1\nce,10,80\nce,1,60\n# note\nsimclr,1,70\n",
        )
        .unwrap();
        let rows = read_label_efficiency(&path).unwrap();
        assert_eq!(
            rows,
            [
                ("ce".to_string(), vec![(1.0, 60.0), (10.0, 80.0)]),
                ("simclr".to_string(), vec![(1.0, 70.0)])
            ]
        );
        for (text, says) in [
            ("ce,1\n", "line 1: not three fields"),
            ("ce,1,NaN\n", "top-1 % `NaN`"),
            ("ce,101,5\n", "labeled % `101`"),
            ("", "no rows"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_label_efficiency(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
