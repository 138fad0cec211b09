//! `metrics.jsonl`: one JSON object per line, appended as training goes.
//!
//! The schema is shared with the report and the plots (`report.rs`, `plots.rs`):
//!
//! ```json
//! {"stage": "pretrain"|"linear"|"ce", "kind": "step"|"epoch", "epoch": 0, "step": 12,
//!  "loss": 5.1, "lr": 0.05, "images_per_second": 812.0,
//!  "val_top1": null, "train_top1": null, "wall_seconds": 14.2}
//! ```
//!
//! `epoch` counts from 0; `step` is the global optimizer step of the stage (after the step for
//! `kind = "step"`, the total at the end of the epoch for `kind = "epoch"`). `loss` is the last
//! step's loss for a step record and the epoch mean for an epoch record. `wall_seconds` is the
//! stage's training time so far (it goes on across a resume). `val_top1` / `train_top1` are
//! fractions in [0, 1], present on epoch records where measured.
//!
//! Evaluation inputs elsewhere in the crate: embeddings as `ndarray::Array2<f32>` `[n, dim]`
//! with labels `Vec<i64>`, logits as `Array2<f32>` `[n, classes]`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::TrainError;
use crate::run_dir::RunDir;
use crate::tensorboard::{EventWriter, Scalar};
// The record's schema is shared vocabulary; re-exported where the log's readers look for it.
pub use crate::run_dir::METRICS_FILE;
pub use crate::vocabulary::{MetricRecord, RecordKind, Stage};

/// Where a run's metrics go (burn-train's `MetricLogger` is the model): each sink receives
/// every record and every set of extra scalars. [`MetricsWriter`] hands them to its sinks in
/// order; a new destination (CSV, a tracking server) is one more implementation.
pub trait MetricSink {
    /// One step or epoch record.
    fn record(&mut self, record: &MetricRecord) -> Result<(), TrainError>;
    /// Scalars that are no record (the final evaluation's), at `step`. Sinks whose schema has
    /// no place for them ignore them.
    fn scalars(&mut self, step: u64, scalars: &[Scalar]) -> Result<(), TrainError>;
}

/// `metrics.jsonl`: one flushed line per record (a crash loses at most the line being written;
/// [`read_metrics`] skips a torn last line). Extra scalars have no line.
pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlSink {
    /// Opens `path` for appending, creating it when missing.
    pub fn append(path: &Path) -> Result<Self, TrainError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| TrainError::io(path, source))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }
}

impl MetricSink for JsonlSink {
    fn record(&mut self, record: &MetricRecord) -> Result<(), TrainError> {
        let line = serde_json::to_string(record).map_err(|e| TrainError::Json {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|source| TrainError::io(&self.path, source))
    }

    fn scalars(&mut self, _step: u64, _scalars: &[Scalar]) -> Result<(), TrainError> {
        Ok(())
    }
}

/// TensorBoard's events file: every record's scalars and the extra ones.
impl MetricSink for EventWriter {
    fn record(&mut self, record: &MetricRecord) -> Result<(), TrainError> {
        self.write_record(record)
    }

    fn scalars(&mut self, step: u64, scalars: &[Scalar]) -> Result<(), TrainError> {
        self.write_scalars(step, scalars)
    }
}

/// The one path of every scalar a run logs: its sinks, in order — `metrics.jsonl` first, so a
/// failing events file never costs a metrics line.
pub struct MetricsWriter {
    /// Locked for the extra scalars, which the evaluation writes through a shared session.
    sinks: Mutex<Vec<Box<dyn MetricSink + Send>>>,
}

impl MetricsWriter {
    /// The writer of a run: its `metrics.jsonl` (appended to, created when missing) and a new
    /// events file in its `tensorboard/` folder (created with the first record).
    pub fn for_run(run: &RunDir) -> Result<Self, TrainError> {
        let jsonl = JsonlSink::append(&run.metrics_path())?;
        Ok(Self::with_sinks(vec![
            Box::new(jsonl),
            Box::new(EventWriter::new(&run.tensorboard())),
        ]))
    }

    /// `metrics.jsonl` alone, appended to (created when missing), without TensorBoard events
    /// (see [`MetricsWriter::for_run`]).
    pub fn append(path: &Path) -> Result<Self, TrainError> {
        Ok(Self::with_sinks(vec![Box::new(JsonlSink::append(path)?)]))
    }

    /// A writer that drops every record: the ranks of a data-parallel run other than rank 0,
    /// which alone writes the run's logs.
    pub fn discard() -> Self {
        Self::with_sinks(Vec::new())
    }

    /// A writer to `sinks`, in order.
    pub fn with_sinks(sinks: Vec<Box<dyn MetricSink + Send>>) -> Self {
        Self {
            sinks: Mutex::new(sinks),
        }
    }

    fn sinks(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn MetricSink + Send>>> {
        // A sink that panicked leaves nothing the others depend on half-written.
        self.sinks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands one record to every sink, in order; the first error stops it.
    pub fn write(&mut self, record: &MetricRecord) -> Result<(), TrainError> {
        self.sinks()
            .iter_mut()
            .try_for_each(|sink| sink.record(record))
    }

    /// Hands scalars that are no `metrics.jsonl` record (the final evaluation's) to every sink.
    pub fn write_scalars(&self, step: u64, scalars: &[Scalar]) -> Result<(), TrainError> {
        self.sinks()
            .iter_mut()
            .try_for_each(|sink| sink.scalars(step, scalars))
    }
}

/// Reads every record of a `metrics.jsonl`. A torn (unparsable) *last* line, which a killed
/// process can leave, is skipped; an unparsable line elsewhere is an error naming its number.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRecord>, TrainError> {
    let file = File::open(path).map_err(|source| TrainError::io(path, source))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| TrainError::io(path, source))?;
    let mut records = Vec::with_capacity(lines.len());
    let last = lines.len().saturating_sub(1);
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<MetricRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) if index == last => break,
            Err(e) => {
                return Err(TrainError::Json {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", index + 1),
                })
            }
        }
    }
    Ok(records)
}

/// Rewrites `metrics.jsonl` keeping only the records a checkpoint has seen: on resume, the
/// lines logged after the last checkpoint are replayed by the resumed run, so they are dropped
/// here to keep one line per step. `keep` decides per record.
pub fn truncate_metrics(
    path: &Path,
    keep: impl Fn(&MetricRecord) -> bool,
) -> Result<(), TrainError> {
    if !path.exists() {
        return Ok(());
    }
    let records = read_metrics(path)?;
    let mut text = String::new();
    for record in records.iter().filter(|r| keep(r)) {
        let line = serde_json::to_string(record).map_err(|e| TrainError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    crate::files::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stage: Stage, kind: RecordKind, step: u64) -> MetricRecord {
        MetricRecord {
            stage,
            kind,
            epoch: 0,
            step,
            loss: 1.5,
            lr: 0.1,
            images_per_second: 100.0,
            val_top1: None,
            train_top1: Some(0.5),
            wall_seconds: 2.0,
        }
    }

    #[test]
    fn records_round_trip_with_the_shared_field_names() {
        let r = record(Stage::Pretrain, RecordKind::Step, 3);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"stage\":\"pretrain\""), "{json}");
        assert!(json.contains("\"kind\":\"step\""), "{json}");
        assert!(json.contains("\"val_top1\":null"), "{json}");
        assert_eq!(serde_json::from_str::<MetricRecord>(&json).unwrap(), r);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_truncation_keeps_the_chosen_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let mut w = MetricsWriter::append(&path).unwrap();
        for step in 1..=4 {
            w.write(&record(Stage::Ce, RecordKind::Step, step)).unwrap();
        }
        drop(w);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"stage\":\"ce\",\"ki");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_metrics(&path).unwrap().len(), 4);
        truncate_metrics(&path, |r| r.step <= 2).unwrap();
        let kept = read_metrics(&path).unwrap();
        assert_eq!(kept.iter().map(|r| r.step).collect::<Vec<_>>(), vec![1, 2]);
    }
}
