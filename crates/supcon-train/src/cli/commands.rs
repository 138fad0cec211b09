//! What each command does. Returns the text for standard output (the binary prints it: the
//! library never prints).

use std::path::Path;

use clap::ValueEnum;
use ndarray::{Array1, Array2};
use supcon_loss::npy;
use supcon_loss::{InfoNceOptions, NceOptions, SupConOptions, SwavOptions};

use super::{
    AugmentStudyArgs, Cli, CmcPairing, Command, ConfigArgs, LossArgs, LossMethod, RunArgs,
    StudyCommand,
};
use crate::checkpoint::Checkpoint;
use crate::config::{self, EvalSplit, RunConfig, DEFAULT_PRESET};
use crate::dist::Comm;
use crate::error::TrainError;
use crate::loss_bridge::LossBridge;
use crate::pipeline::{self, evaluate, Session, SessionOptions};
use crate::run_dir::Reuse;
use crate::vocabulary::Stage;
use supcon_collectives::SingleProcess;

/// Runs the command on the ranks of `comm` (one process: the group of one); returns what to
/// print on standard output (nothing on ranks other than 0).
pub fn execute(cli: &Cli, comm: Comm) -> Result<String, TrainError> {
    let one_process = |command: &str| -> Result<(), TrainError> {
        if comm.world_size() > 1 {
            return Err(TrainError::Config(format!(
                "supcon {command} runs in one process; start it without mpirun / srun \
                 (train, pretrain, linear, finetune, distill, ce and check-ranks run across \
                 ranks)"
            )));
        }
        Ok(())
    };
    match &cli.command {
        Command::Train { run, with_baseline } => {
            let mut session = open_session(run, "train", Stage::Pretrain, cli.quiet, comm)?;
            let report = pipeline::train(&mut session, *with_baseline)?;
            Ok(finished(&session, report.as_ref()))
        }
        Command::Pretrain { run } => {
            let mut session = open_session(run, "pretrain", Stage::Pretrain, cli.quiet, comm)?;
            let (summary, checkpoint) = pipeline::pretrain(&mut session)?;
            if session.comm.rank() != 0 {
                return Ok(String::new());
            }
            Ok(format!(
                "pre-training finished: {} epochs, {} steps, {:.0} s, {:.0} images/s\ncheckpoint: {}\nnext: supcon linear --checkpoint {}\n",
                summary.epochs,
                summary.steps,
                summary.wall_seconds,
                summary.images_per_second,
                checkpoint.display(),
                checkpoint.display()
            ))
        }
        Command::Linear { checkpoint, run } => {
            let mut session = open_session(run, "linear", Stage::Linear, cli.quiet, comm)?;
            // Resuming the linear stage needs the encoder checkpoint again.
            session.set_resume_command(format!(
                "supcon linear --checkpoint {} --resume {}",
                checkpoint.display(),
                session.run.root().display()
            ));
            let outcome = pipeline::linear(&mut session, checkpoint)?;
            let report = pipeline::on_rank_zero(&session, |session| {
                let test = pipeline::data::load_evaluation_split(&session.config, &session.data)?;
                let mut stages = Vec::new();
                if let Ok(ckpt) = Checkpoint::load(checkpoint) {
                    if let Some(state) = &ckpt.state {
                        stages.push(pipeline::StageSummary::from_state(state));
                    }
                }
                stages.push(outcome.summary.clone());
                let method = evaluate::evaluate_supcon(session, &test, &outcome, stages)?;
                evaluate::finish_report(session, &test, vec![method])
            })?;
            Ok(finished(&session, report.as_ref()))
        }
        Command::Finetune { checkpoint, run } => {
            let mut session = open_session(run, "finetune", Stage::Finetune, cli.quiet, comm)?;
            // Resuming the stage needs the pre-training checkpoint again.
            session.set_resume_command(format!(
                "supcon finetune --checkpoint {} --resume {}",
                checkpoint.display(),
                session.run.root().display()
            ));
            let (summary, chosen) = pipeline::finetune(&mut session, checkpoint)?;
            let report = pipeline::on_rank_zero(&session, |session| {
                let test = pipeline::data::load_evaluation_split(&session.config, &session.data)?;
                let method = evaluate::evaluate_finetune(session, &test, &chosen, vec![summary])?;
                evaluate::finish_report(session, &test, vec![method])
            })?;
            Ok(finished(&session, report.as_ref()))
        }
        Command::Distill { teacher, run } => {
            let mut session = open_session(run, "distill", Stage::Distill, cli.quiet, comm)?;
            session.set_resume_command(format!(
                "supcon distill --teacher {} --resume {}",
                teacher.display(),
                session.run.root().display()
            ));
            let teacher = pipeline::distill::Teacher::from_run(
                teacher,
                &session.config,
                session.num_classes(),
                session.device,
            )?;
            let (summary, chosen) = pipeline::distill(&mut session, &teacher)?;
            let report = pipeline::on_rank_zero(&session, |session| {
                let test = pipeline::data::load_evaluation_split(&session.config, &session.data)?;
                let method = evaluate::evaluate_distill(session, &test, &chosen, vec![summary])?;
                evaluate::finish_report(session, &test, vec![method])
            })?;
            Ok(finished(&session, report.as_ref()))
        }
        Command::Ce { run } => {
            let mut session = open_session(run, "ce", Stage::Ce, cli.quiet, comm)?;
            let (summary, checkpoint) = pipeline::ce(&mut session)?;
            let report = pipeline::on_rank_zero(&session, |session| {
                let test = pipeline::data::load_evaluation_split(&session.config, &session.data)?;
                let method = evaluate::evaluate_ce(session, &test, &checkpoint, summary)?;
                evaluate::finish_report(session, &test, vec![method])
            })?;
            Ok(finished(&session, report.as_ref()))
        }
        Command::Eval {
            run,
            json,
            evaluate_on,
        } => {
            one_process("eval")?;
            let report = evaluate_run(run, *evaluate_on, cli.quiet)?;
            if *json {
                serde_json::to_string_pretty(&report).map_err(|e| TrainError::Json {
                    path: run.join("report.json"),
                    message: e.to_string(),
                })
            } else {
                Ok(report.summary_table())
            }
        }
        Command::Embed {
            checkpoint,
            split,
            out,
            projections,
            config,
        } => {
            one_process("embed")?;
            embed(checkpoint, split, out, *projections, config)
        }
        Command::Curve { runs } => {
            one_process("curve")?;
            curve(runs)
        }
        Command::LabelEfficiency { table, out } => {
            one_process("label-efficiency")?;
            let rows = crate::curve::read_label_efficiency(table)?;
            crate::plots::plot_label_efficiency(rows, out, &crate::plots::PlotOptions::default())?;
            Ok(format!("figure: {}\n", out.display()))
        }
        Command::Loss(args) => {
            one_process("loss")?;
            loss_on_npy(args)
        }
        Command::CheckRanks => crate::dist::check_ranks(&*comm),
        Command::Study(StudyCommand::Augment(args)) => {
            one_process("study augment")?;
            augment_study(args, cli.quiet, comm)
        }
    }
}

/// File names of `supcon curve`'s outputs inside the runs folder.
pub const CURVE_PNG: &str = "accuracy-vs-time.png";
pub const CURVE_MD: &str = "accuracy-vs-time.md";

fn curve(runs: &Path) -> Result<String, TrainError> {
    let (points, split) = crate::curve::collect(runs)?;
    let table = crate::curve::markdown_table(&points, &split);
    let png = runs.join(CURVE_PNG);
    crate::plots::plot_accuracy_vs_time(
        crate::curve::accuracy_series(&points),
        &split,
        &png,
        &crate::plots::PlotOptions::default(),
    )?;
    crate::files::write_atomic(&runs.join(CURVE_MD), table.as_bytes())?;
    Ok(format!(
        "{table}
figure: {}
table:  {}
",
        png.display(),
        runs.join(CURVE_MD).display()
    ))
}

/// What a training command prints: the report's table and where the run is (rank 0; the
/// other ranks of a data-parallel run have no report and print nothing).
fn finished(session: &Session, report: Option<&crate::report::Report>) -> String {
    let Some(report) = report else {
        return String::new();
    };
    format!(
        "\n{}\nrun folder: {}\nreport:     {}\n",
        report.summary_table(),
        session.run.root().display(),
        session.run.file(crate::report::REPORT_MD).display()
    )
}

/// `supcon study augment`: the grid's cells (resumed where they stopped), then its table.
fn augment_study(args: &AugmentStudyArgs, quiet: bool, comm: Comm) -> Result<String, TrainError> {
    use crate::study::augment::{self, StudySpec};
    if args.config.preset.is_some() || args.config.config.is_some() {
        return Err(TrainError::Config(
            "study augment trains every cell from its method's preset (quick-cpu-simclr, \
             quick-cpu); change a setting with --set"
                .into(),
        ));
    }
    let spec = StudySpec::new(
        &args.method,
        args.ops.as_deref(),
        config_overrides(&args.config),
    )?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| augment::default_out(&args.method));
    let table = augment::run(&spec, &out, quiet, comm)?;
    Ok(format!(
        "{table}\nstudy folder: {}\nheatmap:      {}\n",
        out.display(),
        out.join(augment::HEATMAP_FILE).display()
    ))
}

/// The configuration of a training command: the resumed run's, or preset + file + overrides.
pub fn resolve_config(args: &RunArgs, stage: Stage) -> Result<RunConfig, TrainError> {
    if let Some(run) = &args.resume {
        let c = &args.config;
        if c.preset.is_some() || c.config.is_some() || !c.overrides.is_empty() {
            return Err(TrainError::Config(
                "--resume continues a run with its own config.toml; drop --preset/--config/--set"
                    .into(),
            ));
        }
        return config::load_resolved(&run.join(crate::run_dir::CONFIG_FILE));
    }
    let mut overrides = config_overrides(&args.config);
    let stage_key = stage.as_str();
    let mut set = |key: String, value: String| overrides.push(format!("{key}={value}"));
    if let Some(m) = args.method {
        set("pretrain.method".into(), format!("\"{}\"", m.as_str()));
    }
    if let Some(v) = args.epochs {
        set(format!("{stage_key}.epochs"), v.to_string());
    }
    if let Some(v) = args.batch_size {
        set(format!("{stage_key}.batch_size"), v.to_string());
    }
    if let Some(v) = args.lr {
        set(format!("{stage_key}.optim.lr"), toml_float(v));
    }
    if let Some(v) = args.temperature {
        set("pretrain.temperature".into(), toml_float(v));
    }
    if let Some(v) = args.base_temperature {
        set("pretrain.base_temperature".into(), toml_float(v));
    }
    if let Some(v) = args.variant {
        set("pretrain.variant".into(), enum_value(v));
    }
    if let Some(v) = args.contrast_mode {
        set("pretrain.contrast_mode".into(), enum_value(v));
    }
    if let Some(v) = args.views {
        set("pretrain.views".into(), v.to_string());
    }
    if let Some(v) = &args.augment {
        set(format!("{stage_key}.augment"), toml_string(v));
    }
    if let Some(v) = &args.dataset {
        set("data.dataset".into(), toml_string(v));
    }
    if let Some(v) = args.cuda_precision {
        set("pretrain.cuda_precision".into(), enum_value(v));
    }
    if let Some(v) = args.loss_backend {
        set("pretrain.loss_backend".into(), enum_value(v));
    }
    if let Some(v) = args.queue {
        set("pretrain.queue".into(), v.to_string());
    }
    if let Some(v) = args.queue_momentum {
        set("pretrain.queue_momentum".into(), toml_float(v));
    }
    if let Some(v) = args.train_per_class {
        set("data.train_per_class".into(), v.to_string());
    }
    if let Some(v) = args.test_per_class {
        set("data.test_per_class".into(), v.to_string());
    }
    if let Some(v) = args.labeled_per_class {
        set("data.labeled_per_class".into(), v.to_string());
    }
    if let Some(v) = args.labeled_fraction {
        set("data.labeled_fraction".into(), toml_float(v));
    }
    if let Some(v) = args.checkpoint_every_steps {
        set("checkpoint.every_steps".into(), v.to_string());
    }
    if let Some(v) = args.checkpoint_every_epochs {
        set("checkpoint.every_epochs".into(), v.to_string());
    }
    if args.no_robustness {
        set("eval.robustness".into(), "false".into());
    }
    if let Some(split) = args.evaluate_on {
        set("eval.split".into(), enum_value(split));
    }
    let preset = args.config.preset.as_deref().unwrap_or(DEFAULT_PRESET);
    let mut config = config::resolve(preset, args.config.config.as_deref(), &overrides)?;
    // `supcon finetune` / `supcon distill` on a preset without the stage's table: its
    // defaults, in config.toml too.
    if stage == Stage::Finetune && config.finetune.is_none() {
        config.finetune = Some(config::FinetuneConfig::default());
        config.validate()?;
    }
    if stage == Stage::Distill && config.distill.is_none() {
        config.distill = Some(config::DistillConfig::default());
        config.validate()?;
    }
    Ok(config)
}

/// A clap value enum as the TOML string its serde form reads (both use the lower-case name).
fn enum_value(v: impl clap::ValueEnum) -> String {
    let name = v
        .to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string());
    toml_string(&name)
}

fn toml_float(v: f64) -> String {
    // TOML needs a decimal point or exponent for a float.
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("nan") {
        s
    } else {
        format!("{s}.0")
    }
}

fn config_overrides(c: &ConfigArgs) -> Vec<String> {
    let mut overrides = c.overrides.clone();
    if let Some(data) = &c.data {
        overrides.push(format!(
            "data.path={}",
            toml_string(&data.display().to_string())
        ));
    }
    if let Some(device) = &c.device {
        overrides.push(format!("device={}", toml_string(device)));
    }
    if let Some(threads) = c.threads {
        overrides.push(format!("threads={threads}"));
    }
    if let Some(seed) = c.seed {
        overrides.push(format!("seed={seed}"));
    }
    overrides
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn open_session(
    args: &RunArgs,
    command: &str,
    stage: Stage,
    quiet: bool,
    comm: Comm,
) -> Result<Session, TrainError> {
    let config = resolve_config(args, stage)?;
    config.validate_for_command(command)?;
    let (run_dir, reuse) = match &args.resume {
        Some(dir) => (dir.clone(), Reuse::Resume),
        None => {
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("{command}-{}", timestamp()));
            crate::run_dir::check_run_name(&name)?;
            let reuse = if args.overwrite {
                Reuse::Overwrite
            } else {
                Reuse::Refuse
            };
            (args.runs_dir.join(name), reuse)
        }
    };
    Session::open(
        config,
        &SessionOptions {
            run_dir,
            reuse,
            quiet,
            command: command.to_string(),
            accept_changes: args.accept_changes,
        },
        comm,
    )
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Re-evaluates a finished run from its checkpoints.
fn evaluate_run(
    run: &Path,
    evaluate_on: Option<EvalSplit>,
    quiet: bool,
) -> Result<crate::report::Report, TrainError> {
    let mut config = config::load_resolved(&run.join(crate::run_dir::CONFIG_FILE))?;
    // config.toml keeps the split the run was trained for; the report says what was read.
    if let Some(split) = evaluate_on {
        config.eval.split = split;
    }
    let session = Session::open(
        config,
        &SessionOptions {
            run_dir: run.to_path_buf(),
            reuse: Reuse::Resume,
            quiet,
            command: "eval".into(),
            accept_changes: false,
        },
        crate::dist::single_process(),
    )?;
    evaluate::evaluate_checkpoints(&session)
}

fn embed(
    checkpoint_path: &Path,
    split: &str,
    out: &Path,
    projections: bool,
    config_args: &ConfigArgs,
) -> Result<String, TrainError> {
    let checkpoint = Checkpoint::load(checkpoint_path)?;
    let preset = config_args.preset.as_deref().unwrap_or(DEFAULT_PRESET);
    let mut config = config::resolve(
        preset,
        config_args.config.as_deref(),
        &config_overrides(config_args),
    )?;
    if let Some(state) = &checkpoint.state {
        // The checkpoint knows its model; the config only supplies data and device.
        config.model = state.model.clone();
    }
    let device = config.tch_device()?;
    let data = pipeline::data::load_train(&config)?;
    let dataset = match split {
        "train" => data.train.clone(),
        "validation" => data.validation.clone(),
        _ => pipeline::data::load_test(&config)?.images,
    };
    let augmenter = supcon_augment::Augmenter::new(
        pipeline::data::augment_pipeline("none", dataset.shape().height, &data.mean, &data.std)?,
        0,
    );
    let batch = config.eval.batch_size;
    let is_ce = checkpoint.state.as_ref().map(|s| s.stage) == Some(Stage::Ce);
    let embeddings: Array2<f32> = if is_ce {
        if projections {
            return Err(TrainError::Config(
                "--projections: a CE checkpoint has no projection head".into(),
            ));
        }
        let mut vs = tch::nn::VarStore::new(device);
        // A CE checkpoint has its state (that is how it is known to be CE): its class count
        // sizes the classifier the weights are loaded into.
        let classes = checkpoint.require_state()?.num_classes as i64;
        let model = supcon_models::CrossEntropyModel::new(&vs.root(), &config.model, classes)?;
        checkpoint.load_into("model", &mut vs)?;
        pipeline::classifier::infer(&SingleProcess, &dataset, &augmenter, batch, device, &|x| {
            tch::nn::ModuleT::forward_t(&model.encoder, x, false)
        })?
    } else {
        let encoder = pipeline::classifier::FrozenEncoder::load(
            &config,
            &checkpoint,
            device,
            &data.mean,
            &data.std,
        )?;
        let head = projections.then(|| encoder.projection_head()).transpose()?;
        pipeline::classifier::infer(&SingleProcess, &dataset, &augmenter, batch, device, &|x| {
            let features = encoder.encode(x);
            match head {
                Some(model) => model.project(&features),
                None => features,
            }
        })?
    };
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let embeddings_path = out.join("embeddings.npy");
    let labels_path = out.join("labels.npy");
    write_npy_atomic(&embeddings_path, &embeddings)?;
    write_npy_atomic(&labels_path, &Array1::from(dataset.labels().to_vec()))?;
    Ok(format!(
        "wrote {} ({} × {}) and {}\n",
        embeddings_path.display(),
        embeddings.nrows(),
        embeddings.ncols(),
        labels_path.display()
    ))
}

fn write_npy_atomic<A, D>(path: &Path, array: &ndarray::ArrayBase<A, D>) -> Result<(), TrainError>
where
    A: ndarray::Data,
    A::Elem: ndarray_npy::WritableElement,
    D: ndarray::Dimension,
{
    crate::files::write_atomic_with(path, |tmp| ndarray_npy::write_npy(tmp, array))
}

/// `supcon loss`: one of supcon-loss's losses on .npy files, through `supcon_loss::npy`.
fn loss_on_npy(args: &LossArgs) -> Result<String, TrainError> {
    fn need<'a>(
        file: &'a Option<std::path::PathBuf>,
        flag: &str,
        method: LossMethod,
    ) -> Result<&'a Path, TrainError> {
        file.as_deref().ok_or_else(|| {
            TrainError::Config(format!(
                "supcon loss --method {}: {flag} FILE is required",
                method
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string())
            ))
        })
    }
    use config::methods::default_temperature as tau;
    let method = args.method;
    let grad_out = args.grad_out.as_deref();
    if method != LossMethod::Supcon && args.loss_backend != config::LossBackendKind::Cpu {
        return Err(TrainError::Config(format!(
            "supcon loss --method {}: --loss-backend {} is for supcon; the other losses run on \
             the CPU reference here (float32 or float64 files), and on libtorch in training \
             (pretrain.loss_backend = \"tch\")",
            method
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            args.loss_backend.as_str()
        )));
    }
    let summary = match args.method {
        LossMethod::Supcon => {
            let options = SupConOptions::default()
                .with_temperature(args.temperature.unwrap_or(tau::SUPCON))
                .with_base_temperature(args.base_temperature)
                .with_variant(match args.variant.unwrap_or_default() {
                    config::LossVariant::Out => supcon_loss::Variant::Out,
                    config::LossVariant::In => supcon_loss::Variant::In,
                })
                .with_contrast_mode(match args.contrast_mode.unwrap_or_default() {
                    config::AnchorMode::All => supcon_loss::ContrastMode::All,
                    config::AnchorMode::One => supcon_loss::ContrastMode::One,
                })
                .with_normalize(args.normalize);
            let bridge = LossBridge::new(args.loss_backend, tch::Device::Cpu, options)?;
            let queue = args
                .queue
                .as_deref()
                .map(|keys| (keys, args.queue_labels.as_deref()));
            npy::supcon_files(
                &args.features,
                args.labels.as_deref(),
                queue,
                bridge.options(),
                &*supcon_loss::supcon::host_backend(bridge.backend())?,
                grad_out,
            )?
        }
        LossMethod::Infonce => npy::infonce_files(
            &args.features,
            need(&args.positives, "--positives", method)?,
            need(&args.negatives, "--negatives", method)?,
            &InfoNceOptions::new(args.temperature.unwrap_or(tau::MOCO_V2))
                .with_normalize(args.normalize),
            grad_out,
        )?,
        LossMethod::Nce => {
            let data_size = args.data_size.ok_or_else(|| {
                TrainError::Config("supcon loss --method nce: --data-size N is required".into())
            })?;
            npy::nce_files(
                &args.features,
                need(&args.positives, "--positives", method)?,
                need(&args.negatives, "--negatives", method)?,
                &NceOptions::new(args.temperature.unwrap_or(tau::INSTDISC))
                    .with_dataset_size(data_size)
                    .with_partition(args.nce_z)
                    .with_normalize(args.normalize)
                    .with_proximal(args.proximal),
                grad_out,
            )?
        }
        LossMethod::Swav => npy::swav_files(
            &args.features,
            need(&args.prototypes, "--prototypes", method)?,
            &SwavOptions::default()
                .with_temperature(args.temperature.unwrap_or(tau::SWAV))
                .with_epsilon(args.epsilon)
                .with_sinkhorn_iterations(args.sinkhorn_iterations)
                .with_assignment_crops(args.assign_crops)
                .with_normalize(args.normalize),
            grad_out,
            args.prototype_grad_out.as_deref(),
        )?,
        LossMethod::Cmc => npy::cmc_files(
            &args.features,
            &supcon_loss::CmcOptions::new(args.temperature.unwrap_or(tau::CMC))
                .with_normalize(args.normalize)
                .with_pairing(match args.pairing {
                    CmcPairing::CoreView => supcon_loss::Pairing::CoreView,
                    CmcPairing::FullGraph => supcon_loss::Pairing::FullGraph,
                }),
            grad_out,
        )?,
        LossMethod::Invspread => npy::invspread_files(
            &args.features,
            &supcon_loss::InvSpreadOptions::new(args.temperature.unwrap_or(tau::INVSPREAD))
                .with_normalize(args.normalize),
            grad_out,
        )?,
        LossMethod::Cpc => npy::cpc_files(
            &args.features,
            need(&args.targets, "--targets", method)?,
            &supcon_loss::CpcOptions::default()
                .with_temperature(args.temperature.unwrap_or(tau::cpc(args.normalize)))
                .with_normalize(args.normalize),
            grad_out,
            args.target_grad_out.as_deref(),
        )?,
    };
    Ok(format!("{}\n", summary.json()))
}
