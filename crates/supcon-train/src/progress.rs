//! Progress reporting for the training stages.
//!
//! One [`Progress`] serves the whole pipeline: [`Progress::begin_stage`] at the start of a
//! stage, [`Progress::update`] after optimizer steps, [`Progress::end_stage`] at its end, and
//! [`Progress::message`] for a line that must not tear a bar.
//!
//! Two renderers, chosen once (burn's idea of a terminal UI with a plain fallback):
//! - **bars**: an `indicatif` bar per stage on stderr with loss, lr, images/s and ETA, when
//!   stderr is a terminal and the run is not `--quiet` (stderr, not stdout, so that the summary
//!   table printed on stdout can be piped cleanly);
//! - **log**: a `tracing` info line every `log_every` steps (and at the first and last step),
//!   for `--quiet`, CI and redirected output.
//!
//! All methods take `&self` (state behind a mutex), so one `Progress` can be shared.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// `indicatif` bars on stderr.
    Bars,
    /// A `tracing` info line every `every` steps.
    Log { every: u64 },
    /// Nothing but [`Progress::message`] lines (tests, nested runs).
    Silent,
}

impl ProgressMode {
    /// Bars when stderr is a terminal and not `quiet`, otherwise log lines every `log_every` steps.
    pub fn detect(quiet: bool, log_every: u64) -> Self {
        if !quiet && std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Log {
                every: log_every.max(1),
            }
        }
    }
}

/// The latest figures of a stage, as shown.
#[derive(Clone, Debug, PartialEq)]
pub struct StageStatus {
    pub stage: String,
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
    /// Estimated time left, from the steps done since `begin_stage` (none before the first).
    pub eta: Option<Duration>,
}

impl StageStatus {
    /// `pretrain step 120/2340 (5.1%) loss 4.3121 lr 5.000e-2 912 img/s eta 0:03:12`.
    pub fn line(&self) -> String {
        let percent = if self.total_steps == 0 {
            100.0
        } else {
            100.0 * self.step as f64 / self.total_steps as f64
        };
        format!(
            "{} step {}/{} ({percent:.1}%) loss {:.4} lr {:.3e} {:.0} img/s eta {}",
            self.stage,
            self.step,
            self.total_steps,
            self.loss,
            self.lr,
            self.images_per_second,
            self.eta.map_or_else(|| "?".to_string(), format_duration)
        )
    }
}

/// `h:mm:ss`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

struct StageState {
    name: String,
    total_steps: u64,
    started: Instant,
    /// The step at `begin_stage` time's first update (non-zero after a resume), for the ETA.
    first_step: Option<u64>,
    last_logged: Option<u64>,
    last_status: Option<StageStatus>,
    bar: Option<ProgressBar>,
}

/// Progress of the training stages; see the module docs.
pub struct Progress {
    mode: ProgressMode,
    stage: Mutex<Option<StageState>>,
}

impl Progress {
    /// A `Progress` with the given renderer.
    pub fn new(mode: ProgressMode) -> Self {
        Self {
            mode,
            stage: Mutex::new(None),
        }
    }

    /// [`ProgressMode::detect`]: bars on a terminal unless `quiet`, else log lines.
    pub fn detect(quiet: bool, log_every: u64) -> Self {
        Self::new(ProgressMode::detect(quiet, log_every))
    }

    /// The renderer in use.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StageState>> {
        // A panic while holding the lock leaves only display state behind: keep going.
        self.stage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts showing a stage of `total_steps` optimizer steps (ends the previous one).
    pub fn begin_stage(&self, name: &str, total_steps: u64) {
        let mut guard = self.lock();
        if let Some(previous) = guard.take() {
            finish(previous);
        }
        let bar = (self.mode == ProgressMode::Bars).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>8} [{bar:30.cyan/blue}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        if self.mode != ProgressMode::Bars {
            tracing::info!(target: "supcon::progress", "{name}: {total_steps} steps");
        }
        *guard = Some(StageState {
            name: name.to_string(),
            total_steps,
            started: Instant::now(),
            first_step: None,
            last_logged: None,
            last_status: None,
            bar,
        });
    }

    /// Reports that `step` (1-based, global within the stage) is done.
    pub fn update(&self, step: u64, loss: f64, lr: f64, images_per_second: f64) {
        let mut guard = self.lock();
        let Some(state) = guard.as_mut() else {
            return;
        };
        // The ETA counts from the first update, so a resumed stage does not look fast.
        let first = *state.first_step.get_or_insert(step.saturating_sub(1));
        let done = step.saturating_sub(first);
        let eta = (done > 0).then(|| {
            let per_step = state.started.elapsed().as_secs_f64() / done as f64;
            Duration::from_secs_f64(per_step * state.total_steps.saturating_sub(step) as f64)
        });
        let status = StageStatus {
            stage: state.name.clone(),
            step,
            total_steps: state.total_steps,
            loss,
            lr,
            images_per_second,
            eta,
        };
        match self.mode {
            ProgressMode::Bars => {
                if let Some(bar) = &state.bar {
                    bar.set_position(step);
                    bar.set_message(format!(
                        "loss {loss:.4} lr {lr:.3e} {images_per_second:.0} img/s"
                    ));
                }
            }
            ProgressMode::Log { every } => {
                if should_log(step, state.last_logged, every, state.total_steps) {
                    tracing::info!(target: "supcon::progress", "{}", status.line());
                    state.last_logged = Some(step);
                }
            }
            ProgressMode::Silent => {}
        }
        state.last_status = Some(status);
    }

    /// The latest status of the current stage, if any update came.
    pub fn status(&self) -> Option<StageStatus> {
        self.lock().as_ref().and_then(|s| s.last_status.clone())
    }

    /// Ends the current stage: the bar is left showing its final figures.
    pub fn end_stage(&self) {
        if let Some(state) = self.lock().take() {
            finish(state);
        }
    }

    /// Shows a line without tearing the bar (above it), or as a `tracing` info line.
    pub fn message(&self, text: &str) {
        let guard = self.lock();
        match guard.as_ref().and_then(|s| s.bar.as_ref()) {
            Some(bar) => bar.println(text),
            None => tracing::info!(target: "supcon::progress", "{text}"),
        }
    }

    /// Runs `f` with the bar hidden, so that whatever `f` prints is not overdrawn.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = self.lock().as_ref().and_then(|s| s.bar.clone());
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

/// One stage's progress as the training loop sees it: epochs of `steps_per_epoch` steps, a
/// step at a time, on top of a [`Progress`] of its own (bars on a terminal unless `quiet`,
/// otherwise a log line about ten times per epoch). All methods take `&self`; `finish` may be
/// called more than once.
pub struct StageProgress {
    progress: Progress,
    stage: String,
    epochs: u32,
    steps_per_epoch: u64,
    step: std::sync::atomic::AtomicU64,
}

impl StageProgress {
    /// Starts showing `stage`: `epochs × steps_per_epoch` steps in all.
    pub fn new(stage: &str, epochs: u32, steps_per_epoch: u64, quiet: bool) -> Self {
        let log_every = (steps_per_epoch / 10).clamp(1, 200);
        Self::with_mode(
            stage,
            epochs,
            steps_per_epoch,
            ProgressMode::detect(quiet, log_every),
        )
    }

    /// As [`StageProgress::new`] with an explicit renderer.
    pub fn with_mode(stage: &str, epochs: u32, steps_per_epoch: u64, mode: ProgressMode) -> Self {
        let progress = Progress::new(mode);
        progress.begin_stage(stage, u64::from(epochs) * steps_per_epoch);
        Self {
            progress,
            stage: stage.to_string(),
            epochs,
            steps_per_epoch,
            step: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// An epoch (from 0) begins, `already_done_steps` of it done before (a resume).
    pub fn start_epoch(&self, epoch: u32, already_done_steps: u64) {
        self.step.store(
            u64::from(epoch) * self.steps_per_epoch + already_done_steps,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// One optimizer step is done.
    pub fn step(&self, loss: f64, lr: f64, images_per_second: f64) {
        let step = self.step.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.progress.update(step, loss, lr, images_per_second);
    }

    /// The epoch summarised by `record` is done: one line with its figures.
    pub fn finish_epoch(&self, record: &crate::vocabulary::MetricRecord) {
        let mut line = format!(
            "{} epoch {}/{}: loss {:.4}, {:.0} img/s",
            self.stage,
            record.epoch + 1,
            self.epochs,
            record.loss,
            record.images_per_second
        );
        for (name, value) in [
            ("train top-1", record.train_top1),
            ("val top-1", record.val_top1),
        ] {
            if let Some(v) = value {
                line.push_str(&format!(", {name} {:.2}%", 100.0 * v));
            }
        }
        self.progress.message(&line);
    }

    /// The stage is over (idempotent).
    pub fn finish(&self) {
        self.progress.end_stage();
    }

    /// The underlying [`Progress`] (for [`Progress::message`] / [`Progress::suspend`]).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }
}

fn finish(state: StageState) {
    let elapsed = state.started.elapsed();
    if let Some(bar) = state.bar {
        bar.disable_steady_tick();
        bar.abandon();
    }
    match state.last_status {
        Some(status) => tracing::info!(
            target: "supcon::progress",
            "{} done in {}: step {}/{} loss {:.4} {:.0} img/s",
            state.name,
            format_duration(elapsed),
            status.step,
            status.total_steps,
            status.loss,
            status.images_per_second
        ),
        None => {
            tracing::info!(target: "supcon::progress", "{} done in {}", state.name, format_duration(elapsed))
        }
    }
}

/// Log the first update, every `every`-th step, and the last step.
fn should_log(step: u64, last_logged: Option<u64>, every: u64, total: u64) -> bool {
    match last_logged {
        None => true,
        Some(last) => step >= total || step >= last + every,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_every_figure() {
        let status = StageStatus {
            stage: "pretrain".into(),
            step: 120,
            total_steps: 2400,
            loss: 4.31214,
            lr: 0.05,
            images_per_second: 912.4,
            eta: Some(Duration::from_secs(3 * 60 + 12)),
        };
        assert_eq!(
            status.line(),
            "pretrain step 120/2400 (5.0%) loss 4.3121 lr 5.000e-2 912 img/s eta 0:03:12"
        );
        assert_eq!(format_duration(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn log_cadence_is_first_every_nth_and_last() {
        let mut logged = Vec::new();
        let mut last = None;
        for step in 1..=23 {
            if should_log(step, last, 10, 23) {
                logged.push(step);
                last = Some(step);
            }
        }
        assert_eq!(logged, vec![1, 11, 21, 23]);
    }

    #[test]
    fn silent_progress_tracks_status_and_eta() {
        let progress = Progress::new(ProgressMode::Silent);
        progress.update(1, 1.0, 0.1, 10.0); // no stage: ignored
        assert!(progress.status().is_none());
        progress.begin_stage("linear", 10);
        progress.update(5, 2.0, 0.1, 100.0); // a resumed stage: first update at step 5
        let first = progress.status().unwrap();
        assert_eq!(first.step, 5);
        progress.update(6, 1.5, 0.1, 100.0);
        let status = progress.status().unwrap();
        assert_eq!((status.step, status.total_steps, status.loss), (6, 10, 1.5));
        assert!(status.eta.is_some());
        progress.message("hello");
        assert_eq!(progress.suspend(|| 7), 7);
        progress.end_stage();
        assert!(progress.status().is_none());
    }

    #[test]
    fn stage_progress_counts_global_steps_across_epochs() {
        let stage = StageProgress::with_mode("pretrain", 3, 4, ProgressMode::Silent);
        stage.start_epoch(1, 2); // resumed in the middle of the second epoch
        stage.step(1.0, 0.1, 10.0);
        let status = stage.progress().status().unwrap();
        assert_eq!((status.step, status.total_steps), (7, 12));
        stage.finish_epoch(&crate::vocabulary::MetricRecord {
            stage: crate::vocabulary::Stage::Pretrain,
            kind: crate::vocabulary::RecordKind::Epoch,
            epoch: 1,
            step: 8,
            loss: 1.0,
            lr: 0.1,
            images_per_second: 10.0,
            val_top1: Some(0.5),
            train_top1: None,
            wall_seconds: 1.0,
        });
        stage.finish();
        stage.finish();
        assert!(stage.progress().status().is_none());
    }

    #[test]
    fn bars_and_log_modes_run_without_a_terminal() {
        for mode in [ProgressMode::Bars, ProgressMode::Log { every: 2 }] {
            let progress = Progress::new(mode);
            progress.begin_stage("pretrain", 3);
            for step in 1..=3 {
                progress.update(step, 1.0 / step as f64, 0.5, 100.0);
            }
            progress.message("between steps");
            progress.begin_stage("linear", 1); // ends the first stage
            progress.update(1, 0.1, 0.1, 50.0);
            progress.end_stage();
        }
        assert_eq!(
            ProgressMode::detect(true, 0),
            ProgressMode::Log { every: 1 }
        );
    }
}
