//! SimCLR's augmentation study (Chen et al. 2020, section 3 and figure 5), for SimCLR or
//! SupCon: one short pre-training per pair of augmentations, each encoder read by the linear
//! probe on the validation split, drawn as a grid (diagonal: one augmentation alone).
//!
//! **Protocol.** As the paper's: the studied transformation goes on one branch only and the
//! other branch is the identity (`pretrain.first_view_augment = "none"`, two views), so that a
//! transformation is judged by what it adds to the task, not by what it does to both inputs.
//! The paper's images needed a crop to one size first; Fashion-MNIST's all have one size, so
//! no crop precedes the transformation. Pairs are unordered: the off-diagonal cell of ops `a`
//! and `b` applies both, in the order of the op list (the crop, which sets the size, first).
//! Every cell is the same recipe otherwise: the method's preset, the study's budget
//! ([`STUDY_OVERRIDES`]) and the user's `--set`s, with the run's seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{self, RunConfig};
use crate::dist::Comm;
use crate::error::TrainError;
use crate::pipeline::{self, Session, SessionOptions};
use crate::plots::{plot_heatmap, PlotOptions};
use crate::report::Report;
use crate::run_dir::{write_atomic, Reuse, CONFIG_FILE};

/// One transformation of the study: its name and the supcon-augment recipe step that makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StudyOp {
    pub name: &'static str,
    pub step: &'static str,
}

/// The paper's seven transformations as supcon-augment steps on 28 × 28 gray images: the
/// random crop at this data's scale (0.35–1, the presets' choice on Fashion-MNIST), a cutout
/// of half the side, colour as brightness and contrast at SimCLR's strength 1 (0.8; gray
/// images have no hue or saturation), the Sobel filter, Gaussian noise (σ 0.1), blur (always,
/// σ 0.1–2) and rotation (uniform in ±90°, where the paper draws one of 90°, 180°, 270°).
pub const OPS: [StudyOp; 7] = [
    StudyOp {
        name: "crop",
        step: "resized-crop:0.35",
    },
    StudyOp {
        name: "cutout",
        step: "cutout:14",
    },
    StudyOp {
        name: "color",
        step: "jitter:0.8",
    },
    StudyOp {
        name: "sobel",
        step: "sobel",
    },
    StudyOp {
        name: "noise",
        step: "noise:0.1",
    },
    StudyOp {
        name: "blur",
        step: "blur:1",
    },
    StudyOp {
        name: "rotate",
        step: "rotate:90",
    },
];

/// What every cell sets besides its augmentation, before the user's `--set`s: two views, the
/// identity on view 0, the validation split read, no robustness sweep, and the budget that
/// makes 28 cells fit two hours on two cores (600 training images per class, 3 pre-training
/// and 5 probe epochs).
pub const STUDY_OVERRIDES: [&str; 7] = [
    "pretrain.views=2",
    "pretrain.first_view_augment=\"none\"",
    "eval.split=\"validation\"",
    "eval.robustness=false",
    "data.train_per_class=600",
    "pretrain.epochs=3",
    "linear.epochs=5",
];

/// The methods the study runs, each with its preset.
pub const METHODS: [(&str, &str); 2] = [("simclr", "quick-cpu-simclr"), ("supcon", "quick-cpu")];

/// What a study is: the method, its ops, the base preset and overrides. Kept in the study's
/// folder (`study-spec.json`) so that a resumed study is the study it continues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudySpec {
    pub method: String,
    pub preset: String,
    /// Names of the studied ops, in grid order.
    pub ops: Vec<String>,
    /// The overrides of every cell after [`STUDY_OVERRIDES`] (the user's).
    pub overrides: Vec<String>,
}

impl StudySpec {
    /// The spec of `method` (`simclr` or `supcon`) over the ops named `ops` (`None`: all of
    /// [`OPS`]), with the user's `overrides`.
    pub fn new(
        method: &str,
        ops: Option<&[String]>,
        overrides: Vec<String>,
    ) -> Result<Self, TrainError> {
        let (_, preset) = METHODS.iter().find(|(m, _)| *m == method).ok_or_else(|| {
            TrainError::Config(format!(
                "study augment: method {method:?} is not simclr or supcon"
            ))
        })?;
        let ops: Vec<String> = match ops {
            None => OPS.iter().map(|op| op.name.to_string()).collect(),
            Some(names) => names.to_vec(),
        };
        for name in &ops {
            op_named(name)?;
        }
        if ops.is_empty() || ops.iter().enumerate().any(|(i, a)| ops[..i].contains(a)) {
            return Err(TrainError::Config(format!(
                "study augment: --ops must name distinct ops, at least one, of {}",
                op_names()
            )));
        }
        Ok(Self {
            method: method.to_string(),
            preset: preset.to_string(),
            ops,
            overrides,
        })
    }

    /// The grid's cells: every unordered pair of ops, row-major over the upper triangle (the
    /// diagonal included).
    pub fn cells(&self) -> Vec<Cell> {
        let n = self.ops.len();
        (0..n)
            .flat_map(|row| (row..n).map(move |column| Cell { row, column }))
            .collect()
    }

    /// The run configuration of `cell`.
    pub fn cell_config(&self, cell: Cell) -> Result<RunConfig, TrainError> {
        let mut overrides: Vec<String> = STUDY_OVERRIDES.iter().map(|s| s.to_string()).collect();
        overrides.push(format!("pretrain.method=\"{}\"", self.method));
        overrides.push(format!("pretrain.augment=\"{}\"", self.recipe(cell)?));
        overrides.extend(self.overrides.iter().cloned());
        config::resolve(&self.preset, None, &overrides)
    }

    /// The recipe of `cell`: its op, or its two ops in grid order.
    pub fn recipe(&self, cell: Cell) -> Result<String, TrainError> {
        let step = |i: usize| op_named(&self.ops[i]).map(|op| op.step);
        Ok(if cell.row == cell.column {
            step(cell.row)?.to_string()
        } else {
            format!("{}+{}", step(cell.row)?, step(cell.column)?)
        })
    }

    /// The cell's folder name, e.g. `crop+blur` (`crop` on the diagonal).
    pub fn cell_name(&self, cell: Cell) -> String {
        if cell.row == cell.column {
            self.ops[cell.row].clone()
        } else {
            format!("{}+{}", self.ops[cell.row], self.ops[cell.column])
        }
    }
}

fn op_named(name: &str) -> Result<StudyOp, TrainError> {
    OPS.iter()
        .copied()
        .find(|op| op.name == name)
        .ok_or_else(|| {
            TrainError::Config(format!(
                "study augment: no op {name:?}; the ops are {}",
                op_names()
            ))
        })
}

fn op_names() -> String {
    OPS.iter().map(|op| op.name).collect::<Vec<_>>().join(", ")
}

/// A cell of the grid: ops `row` and `column` (equal on the diagonal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub row: usize,
    pub column: usize,
}

/// What one cell measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub name: String,
    pub recipe: String,
    /// Linear probe top-1 (%) on the validation split (the report keeps fractions).
    pub probe_top1: f64,
    /// Weighted kNN top-1 (%) on the validation split.
    pub knn_top1: Option<f64>,
    /// Pre-training and probe wall time of the cell.
    pub train_seconds: f64,
}

/// The study's files inside its folder.
pub const SPEC_FILE: &str = "study-spec.json";
pub const RESULTS_FILE: &str = "study.json";
pub const TABLE_FILE: &str = "study.md";
pub const HEATMAP_FILE: &str = "heatmap.png";
const CELLS_DIR: &str = "cells";

/// Runs the cells of `spec` not yet finished in `out` (one run folder each under
/// `out/cells/`; an interrupted cell resumes exactly, a finished one is read back), then
/// writes `study.json`, `study.md` and `heatmap.png` there. Logs a line per cell. Returns the
/// table.
pub fn run(spec: &StudySpec, out: &Path, quiet: bool, comm: Comm) -> Result<String, TrainError> {
    check_same_study(spec, out)?;
    let cells = spec.cells();
    let mut results = Vec::with_capacity(cells.len());
    for (index, &cell) in cells.iter().enumerate() {
        let started = Instant::now();
        let result = run_cell(spec, cell, &out.join(CELLS_DIR), quiet, comm.clone())?;
        tracing::info!(
            "augmentation study ({}): cell {} of {}, {}: probe {:.2} %, kNN {}, {:.0} s",
            spec.method,
            index + 1,
            cells.len(),
            result.name,
            result.probe_top1,
            result.knn_top1.map_or("–".into(), |k| format!("{k:.2} %")),
            started.elapsed().as_secs_f64()
        );
        results.push(result);
    }
    write_outputs(spec, &results, out)
}

/// Writes the spec into a new study folder, or checks that an existing one holds this study.
fn check_same_study(spec: &StudySpec, out: &Path) -> Result<(), TrainError> {
    let path = out.join(SPEC_FILE);
    let json = |value: &StudySpec| {
        serde_json::to_string_pretty(value).map_err(|e| TrainError::Json {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    if path.exists() {
        let text = crate::files::read_text_file(&path)?;
        let started: StudySpec = serde_json::from_str(&text).map_err(|e| TrainError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if started != *spec {
            return Err(TrainError::Config(format!(
                "{} holds another study (started as {}); give this one another --out",
                out.display(),
                json(&started)?
            )));
        }
        return Ok(());
    }
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    write_atomic(&path, json(spec)?.as_bytes())
}

/// One cell: read back when finished, resumed when interrupted, else trained afresh.
fn run_cell(
    spec: &StudySpec,
    cell: Cell,
    cells_dir: &Path,
    quiet: bool,
    comm: Comm,
) -> Result<CellResult, TrainError> {
    let name = spec.cell_name(cell);
    let run_dir = cells_dir.join(&name);
    let report_path = run_dir.join(crate::report::REPORT_JSON);
    let recipe = spec.recipe(cell)?;
    if report_path.exists() {
        return cell_result(name, recipe, &Report::read(&report_path)?);
    }
    let reuse = if run_dir.join(CONFIG_FILE).exists() {
        Reuse::Resume
    } else if run_dir.exists() {
        // Made, then stopped before its configuration was written: nothing to keep.
        Reuse::Overwrite
    } else {
        Reuse::Refuse
    };
    std::fs::create_dir_all(cells_dir).map_err(|source| TrainError::Io {
        path: cells_dir.to_path_buf(),
        source,
    })?;
    let config = spec.cell_config(cell)?;
    let command = "train";
    config.validate_for_command(command)?;
    let mut session = Session::open(
        config,
        &SessionOptions {
            run_dir,
            reuse,
            quiet,
            command: command.into(),
            accept_changes: false,
        },
        comm,
    )?;
    session.set_resume_command("the same `supcon study augment` command".into());
    let report = pipeline::train(&mut session, false)?
        .ok_or_else(|| TrainError::Config(format!("study cell {name}: no report")))?;
    cell_result(name, recipe, &report)
}

/// The figures of a cell's report: the probe's top-1 and the kNN top-1 on validation.
fn cell_result(name: String, recipe: String, report: &Report) -> Result<CellResult, TrainError> {
    let probe = report
        .stages
        .iter()
        .find(|s| s.stage == crate::vocabulary::Stage::Linear)
        .and_then(|s| s.test_top1.map(|top1| (100.0 * top1, s.wall_seconds)));
    let Some((probe_top1, probe_seconds)) = probe else {
        return Err(TrainError::Config(format!(
            "study cell {name}: its report has no linear probe accuracy"
        )));
    };
    let pretrain_seconds: f64 = report
        .stages
        .iter()
        .filter(|s| s.stage == crate::vocabulary::Stage::Pretrain)
        .map(|s| s.wall_seconds)
        .sum();
    Ok(CellResult {
        name,
        recipe,
        probe_top1,
        knn_top1: report
            .stages
            .iter()
            .find_map(|s| s.knn_top1)
            .map(|k| 100.0 * k),
        train_seconds: pretrain_seconds + probe_seconds,
    })
}

/// `study.json`, `study.md` and `heatmap.png`; returns the table.
fn write_outputs(
    spec: &StudySpec,
    results: &[CellResult],
    out: &Path,
) -> Result<String, TrainError> {
    let path = out.join(RESULTS_FILE);
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "spec": spec,
        "study_overrides": STUDY_OVERRIDES,
        "cells": results,
    }))
    .map_err(|e| TrainError::Json {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, json.as_bytes())?;
    let grid = grid_of(spec, results);
    let table = markdown_table(spec, &grid, results);
    write_atomic(&out.join(TABLE_FILE), table.as_bytes())?;
    let title = format!(
        "{}: linear probe top-1 (%) on validation, one branch augmented",
        if spec.method == "simclr" {
            "SimCLR"
        } else {
            "SupCon"
        }
    );
    plot_heatmap(
        &grid,
        &spec.ops,
        &title,
        &out.join(HEATMAP_FILE),
        &PlotOptions::default(),
    )?;
    Ok(table)
}

/// The probe top-1 of every (row, column), both halves filled (pairs are unordered).
fn grid_of(spec: &StudySpec, results: &[CellResult]) -> Vec<Vec<Option<f64>>> {
    let n = spec.ops.len();
    let mut grid = vec![vec![None; n]; n];
    for (cell, result) in spec.cells().into_iter().zip(results) {
        grid[cell.row][cell.column] = Some(result.probe_top1);
        grid[cell.column][cell.row] = Some(result.probe_top1);
    }
    grid
}

fn markdown_table(spec: &StudySpec, grid: &[Vec<Option<f64>>], results: &[CellResult]) -> String {
    let mut text = format!(
        "Linear probe top-1 (%) on the validation split, {} pre-trained with one branch \
         augmented by the row's and the column's ops (the diagonal: one op alone).\n\n| |",
        spec.method
    );
    for op in &spec.ops {
        text.push_str(&format!(" {op} |"));
    }
    text.push_str(&format!("\n|---|{}\n", "---:|".repeat(spec.ops.len())));
    for (op, row) in spec.ops.iter().zip(grid) {
        text.push_str(&format!("| **{op}** |"));
        for value in row {
            text.push_str(&value.map_or(" – |".into(), |v| format!(" {v:.2} |")));
        }
        text.push('\n');
    }
    text.push_str(
        "\n| cell | recipe | probe top-1 | kNN top-1 | training (s) |\n|---|---|---:|---:|---:|\n",
    );
    for r in results {
        text.push_str(&format!(
            "| {} | `{}` | {:.2} | {} | {:.0} |\n",
            r.name,
            r.recipe,
            r.probe_top1,
            r.knn_top1.map_or("–".into(), |k| format!("{k:.2}")),
            r.train_seconds
        ));
    }
    text
}

/// The default study folder of `method`.
pub fn default_out(method: &str) -> PathBuf {
    PathBuf::from("runs").join(format!("augment-study-{method}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_every_unordered_pair_with_the_diagonal() {
        let spec = StudySpec::new("simclr", None, vec![]).unwrap();
        assert_eq!(spec.cells().len(), 7 * 8 / 2);
        let two = StudySpec::new("supcon", Some(&["crop".into(), "blur".into()]), vec![]).unwrap();
        let names: Vec<String> = two.cells().into_iter().map(|c| two.cell_name(c)).collect();
        assert_eq!(names, ["crop", "crop+blur", "blur"]);
        assert_eq!(
            two.recipe(Cell { row: 0, column: 1 }).unwrap(),
            "resized-crop:0.35+blur:1"
        );
        let config = two.cell_config(Cell { row: 1, column: 1 }).unwrap();
        assert_eq!(config.pretrain.augment, "blur:1");
        assert_eq!(config.pretrain.first_view_augment.as_deref(), Some("none"));
        assert_eq!(config.pretrain.views, 2);
    }

    #[test]
    fn unknown_or_repeated_ops_and_methods_are_refused() {
        for (method, ops, needle) in [
            ("byol", None, "not simclr or supcon"),
            (
                "simclr",
                Some(vec!["crop".to_string(), "zoom".into()]),
                "no op \"zoom\"",
            ),
            (
                "simclr",
                Some(vec!["crop".to_string(), "crop".into()]),
                "distinct",
            ),
            ("simclr", Some(vec![]), "distinct"),
        ] {
            let err = StudySpec::new(method, ops.as_deref(), vec![])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn every_op_is_a_recipe_supcon_augment_reads() {
        for op in OPS {
            supcon_augment::presets::by_name(op.step, 28, &[0.5], &[0.25])
                .unwrap_or_else(|e| panic!("{}: {e}", op.name));
        }
    }
}
