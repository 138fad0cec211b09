//! What a run started from — its resolved configuration and a fingerprint of its data —
//! written into the run folder (`origin.json`) when the run is made, so that `--resume`
//! refuses a run whose `config.toml` was edited or whose data changed, naming what differs.
//! An exact resume needs both unchanged: another batch size, learning rate, split or data
//! set would continue a different run under the old run's name.

use serde::{Deserialize, Serialize};

use super::data::TrainData;
use crate::config::RunConfig;
use crate::error::TrainError;
use crate::run_dir::{write_atomic, RunDir};

/// File name of the origin inside a run folder.
pub const ORIGIN_FILE: &str = "origin.json";

/// The largest origin read back: its class names may number a million.
const MAX_ORIGIN_BYTES: u64 = 256 << 20;

/// Keys that may differ on resume besides where the data lies (moved data is compared by its
/// fingerprint; [`RunConfig::machine_independent`]): the device and the thread count (the same
/// run on another machine).
const MAY_DIFFER: [&str; 2] = ["device", "threads"];

/// The data as the run saw it: class names, split sizes and image shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub class_names: Vec<String>,
    pub train: usize,
    pub validation: usize,
    pub pretrain: usize,
    /// Height, width, channels.
    pub image_shape: [usize; 3],
}

impl DataFingerprint {
    /// The fingerprint of the data a session loaded.
    pub fn of(data: &TrainData) -> Self {
        let shape = data.train.shape();
        Self {
            class_names: data.train.class_names().to_vec(),
            train: data.train.len(),
            validation: data.validation.len(),
            pretrain: data.pretrain_set().len(),
            image_shape: [shape.height, shape.width, shape.channels],
        }
    }
}

/// The resolved configuration (as `config.toml` first held it) and the data fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOrigin {
    pub config: String,
    pub data: DataFingerprint,
}

impl RunOrigin {
    /// Writes it into a new run folder.
    pub fn write(&self, run: &RunDir) -> Result<(), TrainError> {
        let path = run.file(ORIGIN_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| TrainError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, json.as_bytes())
    }

    /// Checks that a resumed run, with `config` and `data` now, is the run it started as: the
    /// same configuration, key by key, and the same data. A run folder made before origins
    /// were written has none to compare against; it resumes with a warning.
    pub fn check_unchanged(
        run: &RunDir,
        config: &RunConfig,
        data: &DataFingerprint,
    ) -> Result<(), TrainError> {
        let path = run.file(ORIGIN_FILE);
        if !path.exists() {
            tracing::warn!(run = %run.root().display(), "no {ORIGIN_FILE}: cannot check that the configuration and data are unchanged");
            return Ok(());
        }
        let text = crate::files::read_text_file_within(&path, MAX_ORIGIN_BYTES)?;
        let started: RunOrigin = serde_json::from_str(&text).map_err(|e| TrainError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Read as this version reads it, so a key added since (with its default) is no change.
        let then = crate::config::parse_resolved(&started.config, &path)?;
        let changed = changed_settings(&then, config)?;
        if !changed.is_empty() {
            return Err(TrainError::RunDir {
                path: run.root().to_path_buf(),
                message: format!(
                    "cannot resume exactly: config.toml changed since the run started ({}); \
                     undo the edit, or start a new run with the new settings",
                    changed.join(", ")
                ),
            });
        }
        if started.data != *data {
            return Err(TrainError::RunDir {
                path: run.root().to_path_buf(),
                message: format!(
                    "cannot resume exactly: the data changed since the run started (then: \
                     {}; now: {}); point data.path at the run's data",
                    describe(&started.data),
                    describe(data)
                ),
            });
        }
        Ok(())
    }
}

fn describe(d: &DataFingerprint) -> String {
    format!(
        "{} classes [{}], {} training / {} validation / {} pre-training images of {}×{}×{}",
        d.class_names.len(),
        d.class_names.join(", "),
        d.train,
        d.validation,
        d.pretrain,
        d.image_shape[0],
        d.image_shape[1],
        d.image_shape[2]
    )
}

/// The settings that differ between a run's start and now, as [`changed_keys`] names them,
/// leaving out what may differ between machines.
fn changed_settings(then: &RunConfig, now: &RunConfig) -> Result<Vec<String>, TrainError> {
    changed_keys(
        &then.machine_independent().to_toml()?,
        &now.machine_independent().to_toml()?,
    )
}

/// The dotted keys whose values differ between two configurations, with both values.
fn changed_keys(then: &str, now: &str) -> Result<Vec<String>, TrainError> {
    let parse = |text: &str| {
        toml::from_str::<toml::Table>(text).map_err(|e| TrainError::Config(e.to_string()))
    };
    let mut then_keys = Vec::new();
    let mut now_keys = Vec::new();
    flatten("", &parse(then)?, &mut then_keys);
    flatten("", &parse(now)?, &mut now_keys);
    let then_map: std::collections::BTreeMap<_, _> = then_keys.into_iter().collect();
    let now_map: std::collections::BTreeMap<_, _> = now_keys.into_iter().collect();
    let keys: std::collections::BTreeSet<&String> = then_map.keys().chain(now_map.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|key| !MAY_DIFFER.contains(&key.as_str()))
        .filter_map(|key| {
            let (a, b) = (then_map.get(key), now_map.get(key));
            (a != b).then(|| {
                let show = |v: Option<&String>| v.map_or("absent".to_string(), Clone::clone);
                format!("{key}: {} then, {} now", show(a), show(b))
            })
        })
        .collect())
}

/// (dotted key, value as TOML) of every leaf of `table`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&path, inner, out),
            leaf => out.push((path, leaf.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_each_difference_with_both_values() {
        let then = "seed = 1\n[pretrain]\nbatch_size = 64\n[pretrain.optim]\nlr = 0.5\n";
        let now = "seed = 1\n[pretrain]\nbatch_size = 128\n[pretrain.optim]\nlr = 0.5\nextra = 1\n";
        let changed = changed_keys(then, now).unwrap();
        assert_eq!(
            changed,
            [
                "pretrain.batch_size: 64 then, 128 now",
                "pretrain.optim.extra: absent then, 1 now"
            ]
        );
        assert!(changed_keys(then, then).unwrap().is_empty());
    }

    #[test]
    fn moved_data_another_device_or_thread_count_is_no_change() {
        let then = RunConfig::preset("quick-cpu").unwrap();
        let mut now = then.clone();
        now.data.path = Some("/elsewhere/fashion-mnist".into());
        now.data.test_path = Some("/elsewhere/test".into());
        now.threads = 7;
        now.device = "cuda:1".into();
        assert!(changed_settings(&then, &now).unwrap().is_empty());
        now.pretrain.batch_size += 1;
        assert_eq!(changed_settings(&then, &now).unwrap().len(), 1);
    }
}
