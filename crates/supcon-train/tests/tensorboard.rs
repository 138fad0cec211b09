//! The TensorBoard events files, read back with an independent reader (`common/tfevents.rs`):
//! framing and both masked CRCs of every record, then the `Event` fields.

#[path = "common/tfevents.rs"]
mod tfevents;

use supcon_train::metrics_log::{read_metrics, MetricRecord, MetricsWriter, RecordKind, Stage};
use supcon_train::run_dir::{Reuse, RunDir};
use supcon_train::tensorboard::{EventWriter, Scalar, FILE_VERSION};
use supcon_train::TrainError;
use tfevents::{events_files, read_events, series};

#[test]
fn written_scalars_read_back_with_their_tags_steps_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = dir.path().join("tb");
    let writer = EventWriter::new(&events_dir);
    assert!(writer.path().is_none(), "no file before the first event");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    writer
        .write_scalars(
            1,
            &[
                Scalar::new("pretrain/loss", 5.25),
                Scalar::new("pretrain/lr", 0.05),
            ],
        )
        .unwrap();
    writer.write_scalars(2, &[]).unwrap(); // nothing to write: no event
    writer
        .write_scalars(300, &[Scalar::new("pretrain/loss", 4.5)])
        .unwrap();
    writer
        .write_scalars(1 << 40, &[Scalar::new("eval/supcon/top1", 0.875)])
        .unwrap();

    let files = events_files(&events_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(writer.path().as_deref(), Some(files[0].as_path()));
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let parts: Vec<&str> = name
        .strip_prefix("events.out.tfevents.")
        .unwrap()
        .split('.')
        .collect();
    assert!(parts[0].parse::<u64>().is_ok(), "{name}");
    assert_eq!(
        parts.last().unwrap().parse::<u32>().unwrap(),
        std::process::id()
    );

    // Readable while the writer is still open: every event is on disk at once.
    let events = read_events(&files[0]);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    assert!(events[0].values.is_empty());
    for event in &events {
        assert!(event.wall_time >= before.floor() && event.wall_time < before + 600.0);
    }
    assert_eq!(
        events[1].values,
        [
            ("pretrain/loss".to_string(), 5.25),
            ("pretrain/lr".to_string(), 0.05f32)
        ]
    );
    assert_eq!(series(&events, "pretrain/loss"), [(1, 5.25), (300, 4.5)]);
    assert_eq!(series(&events, "eval/supcon/top1"), [(1 << 40, 0.875)]);
    assert!(events[1..].iter().all(|e| e.file_version.is_none()));

    // A second writer (a resumed run) adds a second file and leaves the first as it was.
    let first = std::fs::read(&files[0]).unwrap();
    drop(writer);
    let resumed = EventWriter::new(&events_dir);
    resumed
        .write_scalars(2, &[Scalar::new("pretrain/loss", 5.0)])
        .unwrap();
    let files = events_files(&events_dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(resumed.path().as_deref(), Some(files[1].as_path()));
    assert_eq!(std::fs::read(&files[0]).unwrap(), first);
    let events = read_events(&files[1]);
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    assert_eq!(series(&events, "pretrain/loss"), [(2, 5.0)]);
}

fn record(stage: Stage, kind: RecordKind, step: u64, val_top1: Option<f64>) -> MetricRecord {
    MetricRecord {
        stage,
        kind,
        epoch: 0,
        step,
        loss: 2.5,
        lr: 0.125,
        images_per_second: 640.0,
        val_top1,
        train_top1: None,
        wall_seconds: 1.0,
    }
}

#[test]
fn a_runs_metrics_writer_logs_every_record_to_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _lock) = RunDir::prepare(&dir.path().join("run"), Reuse::Refuse).unwrap();
    let mut metrics = MetricsWriter::for_run(&run).unwrap();
    metrics
        .write(&record(Stage::Pretrain, RecordKind::Step, 1, None))
        .unwrap();
    metrics
        .write(&record(Stage::Linear, RecordKind::Epoch, 4, Some(0.75)))
        .unwrap();
    metrics
        .write_scalars(4, &[Scalar::new("eval/supcon/knn_top1", 0.5)])
        .unwrap();

    assert_eq!(read_metrics(&run.metrics_path()).unwrap().len(), 2);
    let files = events_files(&run.tensorboard());
    assert_eq!(files.len(), 1, "{files:?}");
    let events = read_events(&files[0]);
    assert_eq!(events.len(), 4);
    assert_eq!(series(&events, "pretrain/loss"), [(1, 2.5)]);
    assert_eq!(series(&events, "pretrain/lr"), [(1, 0.125)]);
    assert_eq!(series(&events, "pretrain/images_per_second"), [(1, 640.0)]);
    assert_eq!(series(&events, "linear/epoch_loss"), [(4, 2.5)]);
    assert_eq!(series(&events, "linear/val_top1"), [(4, 0.75)]);
    assert!(series(&events, "linear/train_top1").is_empty());
    assert_eq!(series(&events, "eval/supcon/knn_top1"), [(4, 0.5)]);

    // A log without TensorBoard (`append`) writes no events.
    let path = dir.path().join("alone.jsonl");
    let mut alone = MetricsWriter::append(&path).unwrap();
    alone
        .write(&record(Stage::Ce, RecordKind::Step, 1, None))
        .unwrap();
    alone
        .write_scalars(1, &[Scalar::new("eval/ce/top1", 0.5)])
        .unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), 1);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "only run/ and alone.jsonl: {names:?}");
}

/// A sink of one's own, beside the run's: it sees every record and the extra scalars.
#[test]
fn a_metrics_writer_hands_everything_to_each_sink() {
    use std::sync::{Arc, Mutex};
    use supcon_train::metrics_log::MetricSink;
    #[derive(Default)]
    struct Collect(Arc<Mutex<Vec<String>>>);
    impl MetricSink for Collect {
        fn record(&mut self, record: &MetricRecord) -> Result<(), TrainError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", record.stage, record.step));
            Ok(())
        }
        fn scalars(&mut self, step: u64, scalars: &[Scalar]) -> Result<(), TrainError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{step}: {} scalars", scalars.len()));
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut metrics = MetricsWriter::with_sinks(vec![Box::new(Collect(seen.clone()))]);
    metrics
        .write(&record(Stage::Pretrain, RecordKind::Step, 3, None))
        .unwrap();
    metrics
        .write_scalars(3, &[Scalar::new("eval/supcon/top1", 0.9)])
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), ["pretrain 3", "3: 1 scalars"]);
}

#[test]
fn an_unwritable_events_folder_is_an_io_error_that_keeps_the_metrics_line() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _lock) = RunDir::prepare(&dir.path().join("run"), Reuse::Refuse).unwrap();
    // A file where the folder should be.
    std::fs::write(run.tensorboard(), b"not a folder").unwrap();
    let mut metrics = MetricsWriter::for_run(&run).unwrap();
    let err = metrics
        .write(&record(Stage::Pretrain, RecordKind::Step, 1, None))
        .unwrap_err();
    match &err {
        TrainError::Io { path, .. } => assert_eq!(path, &run.tensorboard()),
        other => panic!("not an I/O error: {other:?}"),
    }
    assert!(err.to_string().contains("tensorboard"), "{err}");
    let logged = read_metrics(&run.metrics_path()).unwrap();
    assert_eq!(logged.len(), 1, "the metrics line is written first");
}
