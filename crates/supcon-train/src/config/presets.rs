//! Resolution: a preset (embedded TOML, `extends` chains), then a file, then overrides; and
//! the run folder's `config.toml` written and read back.

use serde::Deserialize;
use std::path::Path;

use super::{Method, RunConfig};
use crate::error::TrainError;

/// The embedded presets: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("quick-cpu", include_str!("../presets/quick-cpu.toml")),
    ("paper-cifar", include_str!("../presets/paper-cifar.toml")),
    ("gpu-fashion", include_str!("../presets/gpu-fashion.toml")),
    ("cpu-long", include_str!("../presets/cpu-long.toml")),
    (
        "quick-cpu-simclr",
        include_str!("../presets/quick-cpu-simclr.toml"),
    ),
    (
        "quick-cpu-moco-v1",
        include_str!("../presets/quick-cpu-moco-v1.toml"),
    ),
    (
        "quick-cpu-moco-v2",
        include_str!("../presets/quick-cpu-moco-v2.toml"),
    ),
    (
        "quick-cpu-instdisc",
        include_str!("../presets/quick-cpu-instdisc.toml"),
    ),
    (
        "quick-cpu-invspread",
        include_str!("../presets/quick-cpu-invspread.toml"),
    ),
    (
        "quick-cpu-swav",
        include_str!("../presets/quick-cpu-swav.toml"),
    ),
    (
        "quick-cpu-cmc",
        include_str!("../presets/quick-cpu-cmc.toml"),
    ),
    (
        "quick-cpu-cpc",
        include_str!("../presets/quick-cpu-cpc.toml"),
    ),
    ("semi-cpu", include_str!("../presets/semi-cpu.toml")),
];

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "quick-cpu";

/// Text of a named preset.
pub fn preset_text(name: &str) -> Result<&'static str, TrainError> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            TrainError::Config(format!(
                "unknown preset `{name}` (expected one of: {})",
                names.join(", ")
            ))
        })
}

/// The table of preset `name`. A preset may start with `extends = "other"`: the other
/// preset's table with this one's keys laid over it (so a method's preset names only what
/// differs from the default recipe).
fn preset_table(name: &str, depth: usize) -> Result<toml::Table, TrainError> {
    let mut table: toml::Table = toml::from_str(preset_text(name)?)
        .map_err(|e| TrainError::Config(format!("preset `{name}` is invalid: {e}")))?;
    match table.remove("extends") {
        None => Ok(table),
        Some(toml::Value::String(base)) if depth < 4 => {
            let mut merged = preset_table(&base, depth + 1)?;
            merge(&mut merged, table);
            Ok(merged)
        }
        Some(other) => Err(TrainError::Config(format!(
            "preset `{name}`: `extends = {other}` must name another preset (at most 4 deep)"
        ))),
    }
}

/// Builds a configuration: `preset`, then `file` (a partial TOML overlay: only the keys it
/// names change), then `overrides` (`section.key=value`, value parsed as TOML, else a string).
pub fn resolve(
    preset: &str,
    file: Option<&Path>,
    overrides: &[String],
) -> Result<RunConfig, TrainError> {
    let mut table = preset_table(preset, 0)?;
    if let Some(file) = file {
        let text = crate::files::read_text_file(file)?;
        let overlay: toml::Table = toml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", file.display())))?;
        merge(&mut table, overlay);
        // Check the file's keys alone first, so an error names the file.
        from_table(table.clone()).map_err(|e| {
            TrainError::Config(format!("{}: {}", file.display(), strip_config_prefix(&e)))
        })?;
    }
    for item in overrides {
        apply_override(&mut table, item)?;
    }
    let config = from_table(table.clone())?;
    check_method_tables(&table, config.pretrain.method)?;
    config.validate()?;
    Ok(config)
}

/// Another method's table (`[pretrain.swav]` under `method = "moco"`) would be read by nothing:
/// an error, like a misspelt key. (Resolved `config.toml` files leave those tables out.)
fn check_method_tables(table: &toml::Table, method: Method) -> Result<(), TrainError> {
    let Some(pretrain) = table.get("pretrain").and_then(toml::Value::as_table) else {
        return Ok(());
    };
    match pretrain
        .keys()
        .find(|key| is_other_methods_table(key, method))
    {
        Some(other) => Err(TrainError::Config(format!(
            "[pretrain.{other}] is read only with pretrain.method = \"{other}\", and the method \
             is \"{}\": drop the table, or pass --method {other}",
            method.as_str()
        ))),
        None => Ok(()),
    }
}

/// `key` of `[pretrain]` names a method's own table, and not `method`'s.
fn is_other_methods_table(key: &str, method: Method) -> bool {
    key != method.as_str()
        && <Method as clap::ValueEnum>::value_variants()
            .iter()
            .any(|m| m.as_str() == key)
}

/// The presets whose recipe is `method`'s (named in errors as a starting point).
pub fn presets_of(method: Method) -> Vec<&'static str> {
    PRESETS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| {
            preset_table(name, 0).is_ok_and(|table| {
                let preset_method = table
                    .get("pretrain")
                    .and_then(|p| p.get("method"))
                    .and_then(toml::Value::as_str);
                preset_method == Some(method.as_str())
            })
        })
        .collect()
}

/// Reads a resolved configuration (a run folder's `config.toml`).
pub fn load_resolved(path: &Path) -> Result<RunConfig, TrainError> {
    let text = crate::files::read_text_file(path)?;
    let config = parse_resolved(&text, path)?;
    config.validate()?;
    Ok(config)
}

/// A resolved configuration's text as this version reads it (keys it adds take their
/// defaults), unvalidated; `origin` names it in errors.
pub fn parse_resolved(text: &str, origin: &Path) -> Result<RunConfig, TrainError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", origin.display())))?;
    from_table(table).map_err(|e| {
        TrainError::Config(format!("{}: {}", origin.display(), strip_config_prefix(&e)))
    })
}

fn strip_config_prefix(e: &TrainError) -> String {
    match e {
        TrainError::Config(message) => message.clone(),
        other => crate::error::chain(other),
    }
}

/// `[finetune]` and `[distill]` name only what they change (`--set finetune.optim.lr=0.01`
/// alone is a whole stage): their other keys, those of their `optim` tables included, are the
/// stages' defaults.
fn from_table(mut table: toml::Table) -> Result<RunConfig, TrainError> {
    for (stage, defaults) in [
        (
            "finetune",
            toml::Table::try_from(super::FinetuneConfig::default()),
        ),
        (
            "distill",
            toml::Table::try_from(super::DistillConfig::default()),
        ),
    ] {
        if let Some(toml::Value::Table(given)) = table.remove(stage) {
            let mut full =
                defaults.map_err(|e| TrainError::Config(format!("{stage} defaults: {e}")))?;
            merge(&mut full, given);
            table.insert(stage.into(), full.into());
        }
    }
    RunConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| TrainError::Config(e.to_string().trim().to_string()))
}

/// Applies one `a.b.c=value` override.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<(), TrainError> {
    let (key, raw) = item.split_once('=').ok_or_else(|| {
        TrainError::Config(format!(
            "override `{item}` is not of the form section.key=value"
        ))
    })?;
    let key = key.trim();
    let raw = raw.trim();
    // A TOML value when it parses as one (numbers, booleans, arrays), else a bare string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    // The deepest key of the configuration has three parts (`pretrain.optim.lr`); a few more
    // leave room, while tens of thousands would nest tables deep enough to overflow the stack.
    const MAX_KEY_PARTS: usize = 8;
    let parts: Vec<&str> = key.splitn(MAX_KEY_PARTS + 1, '.').collect();
    if parts.len() > MAX_KEY_PARTS {
        return Err(TrainError::Config(format!(
            "override key `{}…` has more than {MAX_KEY_PARTS} dotted parts; no setting is that deep",
            key.chars().take(40).collect::<String>()
        )));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config(format!(
            "override `{item}`: empty key part"
        )));
    }
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            TrainError::Config(format!("override `{item}`: `{part}` is not a table"))
        })?;
    }
    current.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Recursively overlays `overlay` on `base`.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl RunConfig {
    /// The configuration of a named preset, unchanged.
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        resolve(name, None, &[])
    }

    /// The resolved configuration as TOML (what `config.toml` holds). The other methods' tables
    /// are left out, so the file can be given back with `--config`, where they are errors.
    pub fn to_toml(&self) -> Result<String, TrainError> {
        let error = |e: &dyn std::fmt::Display| TrainError::Config(e.to_string());
        let mut table = toml::Table::try_from(self).map_err(|e| error(&e))?;
        if let Some(pretrain) = table
            .get_mut("pretrain")
            .and_then(toml::Value::as_table_mut)
        {
            pretrain.retain(|key, _| !is_other_methods_table(key, self.pretrain.method));
        }
        toml::to_string_pretty(&table).map_err(|e| error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Method, ScheduleKind};

    #[test]
    fn every_preset_resolves_and_round_trips_through_its_toml() {
        for (name, _) in PRESETS {
            let config = RunConfig::preset(name).unwrap();
            let text = config.to_toml().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            assert_eq!(load_resolved(&path).unwrap(), config, "preset {name}");
        }
    }

    #[test]
    fn another_methods_table_is_an_error_and_config_toml_leaves_them_out() {
        let err = resolve(
            "quick-cpu",
            None,
            &[
                "pretrain.method=moco".into(),
                "pretrain.views=2".into(),
                "pretrain.swav.prototypes=10".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[pretrain.swav]"), "{err}");
        assert!(err.contains("\"moco\""), "{err}");
        // The method's own table is read; every preset's config.toml goes back in as --config.
        for (name, _) in PRESETS {
            let config = RunConfig::preset(name).unwrap();
            let text = config.to_toml().unwrap();
            let tables: Vec<&str> = ["moco", "instdisc", "swav"]
                .into_iter()
                .filter(|m| text.contains(&format!("[pretrain.{m}]")))
                .collect();
            let own = config.pretrain.method.as_str();
            assert!(tables.iter().all(|m| *m == own), "{name}: {tables:?}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            assert_eq!(resolve(name, Some(&path), &[]).unwrap(), config, "{name}");
        }
    }

    #[test]
    fn standardization_is_the_probes_and_old_configurations_load_without_it() {
        let err = resolve("quick-cpu", None, &["ce.standardize=true".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ce.standardize"), "{err}");
        assert!(err.contains("linear.standardize"), "{err}");
        // A run's config.toml from before the key existed: its probe was not standardized,
        // and its classifier checkpoint has no statistics to load.
        let text = RunConfig::preset("quick-cpu").unwrap().to_toml().unwrap();
        let old: String = text
            .lines()
            .filter(|line| !line.starts_with("standardize"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(old, text);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, old).unwrap();
        let config = load_resolved(&path).unwrap();
        assert!(!config.linear.standardize && !config.ce.standardize);
    }

    #[test]
    fn a_method_without_its_views_names_the_fix() {
        let err = resolve("quick-cpu", None, &["pretrain.method=simclr".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--views 2"), "{err}");
        assert!(err.contains("--preset quick-cpu-simclr"), "{err}");
        let err = resolve("quick-cpu-moco-v2", None, &["pretrain.views=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--views 2"), "{err}");
        assert!(
            err.contains("quick-cpu-moco-v1 / quick-cpu-moco-v2"),
            "{err}"
        );
    }

    #[test]
    fn paper_preset_has_supcontrast_hyper_parameters() {
        let c = RunConfig::preset("paper-cifar").unwrap();
        assert_eq!(c.pretrain.batch_size, 1024);
        assert_eq!(c.pretrain.optim.lr, 0.5);
        assert_eq!(c.pretrain.temperature(), 0.1);
        // SupContrast's SupConLoss default.
        assert_eq!(c.pretrain.base_temperature, Some(0.07));
        assert_eq!(c.pretrain.optim.schedule, ScheduleKind::Cosine);
        assert_eq!(c.linear.batch_size, 512);
        assert_eq!(c.linear.optim.lr, 5.0);
    }

    #[test]
    fn a_misspelt_key_in_a_file_is_an_error_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "[pretrain]\nepochz = 3\n").unwrap();
        let err = resolve("quick-cpu", Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochz"), "{err}");
        assert!(err.contains("run.toml"), "{err}");
    }

    #[test]
    fn file_then_overrides_are_applied_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "seed = 7\n[pretrain]\nepochs = 3\n").unwrap();
        let c = resolve(
            "quick-cpu",
            Some(&path),
            &[
                "pretrain.epochs=5".into(),
                "pretrain.method=simclr".into(),
                "pretrain.views=2".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.pretrain.epochs, 5);
        assert_eq!(c.pretrain.method, Method::Simclr);
        assert_eq!(c.pretrain.temperature(), 0.5);
        let err = resolve("quick-cpu", None, &["pretrain.lr=0.1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr"), "{err}");
        let err = resolve("quick-cpu", None, &["pretrain.optim.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pretrain.optim.lr"), "{err}");
    }
}
