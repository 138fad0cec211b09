//! What a run started from — its resolved configuration and a fingerprint of its data —
//! written into the run folder (`origin.json`) when the run is made, so that `--resume`
//! refuses a run whose `config.toml` was edited or whose data changed, naming what differs.
//! An exact resume needs both unchanged: another batch size, learning rate, split or data
//! set would continue a different run under the old run's name.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::data::TrainData;
use crate::config::RunConfig;
use crate::error::TrainError;
use crate::run_dir::{write_atomic, RunDir};
use crate::tensorboard::{crc32c, crc32c_extend};

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
    /// CRC-32C of the labels and pixels of the splits in memory, and the sizes of the files
    /// of data read from disk (sizes, not times: ranks on other machines compare it too).
    /// `None` in origins written before it was kept.
    #[serde(default)]
    pub content: Option<String>,
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
            content: Some(format!("{:08x}", content_crc(data))),
        }
    }
}

/// See [`DataFingerprint::content`].
fn content_crc(data: &TrainData) -> u32 {
    let in_memory = data.sets().fold(0, |crc, set| {
        let labels: Vec<u8> = set.labels().iter().flat_map(|l| l.to_le_bytes()).collect();
        let crc = crc32c_extend(crc, &labels);
        set.pixels()
            .map_or(crc, |pixels| crc32c_extend(crc, pixels))
    });
    data.source_files()
        .into_iter()
        .fold(in_memory, |crc, path| {
            let size = std::fs::metadata(path).map_or(u64::MAX, |m| m.len());
            crc32c_extend(crc, &size.to_le_bytes())
        })
}

/// The files a streamed data set (an image folder or shards read from disk) is read from, as
/// they were on disk: their count, total size, newest modification time, and a CRC-32C of every
/// file's (name, size, modification time), names relative to the files' common folder so that
/// moved data is no change. Kept by rank 0 only: ranks on other machines may hold copies made
/// at other times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamps {
    pub files: usize,
    pub bytes: u64,
    /// The most recently modified file and its modification time (seconds since the epoch).
    pub newest: String,
    pub crc32c: u32,
}

impl FileStamps {
    /// The stamps of the files `data`'s images are read from; `None` when they are in memory.
    pub fn of(data: &TrainData) -> Result<Option<Self>, TrainError> {
        let paths = data.source_files();
        let Some(common) = common_folder(&paths) else {
            return Ok(None);
        };
        let mut record = Vec::new();
        let mut bytes = 0u64;
        let mut newest: Option<(SystemTime, &Path)> = None;
        for &path in &paths {
            let meta = std::fs::metadata(path).map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let since_epoch = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let name = path.strip_prefix(common).unwrap_or(path);
            record.extend_from_slice(name.as_os_str().as_encoded_bytes());
            record.push(0);
            record.extend_from_slice(&meta.len().to_le_bytes());
            record.extend_from_slice(&since_epoch.as_nanos().to_le_bytes());
            bytes = bytes.saturating_add(meta.len());
            if newest.is_none_or(|(time, _)| modified > time) {
                newest = Some((modified, name));
            }
        }
        let newest = newest.map_or(String::new(), |(time, name)| {
            let secs = time
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            format!("{} modified at {:.3} s", name.display(), secs.as_secs_f64())
        });
        Ok(Some(Self {
            files: paths.len(),
            bytes,
            newest,
            crc32c: crc32c(&record),
        }))
    }
}

impl std::fmt::Display for FileStamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files, {} bytes, newest {}, CRC-32C {:08x}",
            self.files, self.bytes, self.newest, self.crc32c
        )
    }
}

/// The deepest folder holding every one of `paths` (sorted); `None` for none.
fn common_folder<'a>(paths: &[&'a Path]) -> Option<&'a Path> {
    let (first, last) = (paths.first()?, paths.last()?);
    // Sorted paths: what the first and the last share, every one between shares.
    let mut folder = first.parent().unwrap_or(first);
    while !last.starts_with(folder) {
        folder = folder.parent()?;
    }
    Some(folder)
}

/// The resolved configuration (as `config.toml` first held it), the data fingerprint and the
/// stamps of the data's files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOrigin {
    pub config: String,
    pub data: DataFingerprint,
    /// `None` for data in memory, and in origins written before stamps were kept.
    #[serde(default)]
    pub files: Option<FileStamps>,
}

impl RunOrigin {
    /// The origin of a run with `config` on `data` (whose fingerprint, shared with the ranks'
    /// check, is `fingerprint`), its files stamped now.
    pub fn new(
        config: &RunConfig,
        fingerprint: DataFingerprint,
        data: &TrainData,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            config: config.to_toml()?,
            data: fingerprint,
            files: FileStamps::of(data)?,
        })
    }

    /// Writes it into a new run folder.
    pub fn write(&self, run: &RunDir) -> Result<(), TrainError> {
        let path = run.file(ORIGIN_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| TrainError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, json.as_bytes())
    }

    /// What differs between the run as it started and the run about to resume, with
    /// `config`, `data` and `files` now: each configuration key that changed (with both
    /// values), the data's fingerprint, the data files' stamps. Empty when the resume is
    /// exact. A run folder made before origins were written has none to compare against; it
    /// resumes with a warning.
    pub fn changes_since_start(
        run: &RunDir,
        now: &RunOrigin,
        config: &RunConfig,
    ) -> Result<Vec<String>, TrainError> {
        let path = run.file(ORIGIN_FILE);
        if !path.exists() {
            tracing::warn!(run = %run.root().display(), "no {ORIGIN_FILE}: cannot check that the configuration and data are unchanged");
            return Ok(Vec::new());
        }
        let text = crate::files::read_text_file_within(&path, MAX_ORIGIN_BYTES)?;
        let started: RunOrigin = serde_json::from_str(&text).map_err(|e| TrainError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Read as this version reads it, so a key added since (with its default) is no change.
        let then = crate::config::parse_resolved(&started.config, &path)?;
        let mut changes: Vec<String> = changed_settings(&then, config)?
            .into_iter()
            .map(|key| format!("config.toml changed: {key}"))
            .collect();
        // An origin without a content CRC (older) compares the rest.
        let mut data_now = now.data.clone();
        if started.data.content.is_none() {
            data_now.content = None;
        }
        if started.data != data_now {
            changes.push(format!(
                "the data changed: then {}; now {}",
                describe(&started.data),
                describe(&now.data)
            ));
        }
        // An origin without stamps (older, or data in memory then) has nothing to compare.
        if let (Some(then), Some(now)) = (&started.files, &now.files) {
            if then != now {
                changes.push(format!("the data files changed: then {then}; now {now}"));
            }
        }
        Ok(changes)
    }

    /// Refuses a resume with `changes` (from [`RunOrigin::changes_since_start`]) unless
    /// `accept` (`--accept-changes`), which resumes, not exactly, with a warning per change.
    pub fn refuse_changes(
        run: &RunDir,
        changes: &[String],
        accept: bool,
    ) -> Result<(), TrainError> {
        if changes.is_empty() {
            return Ok(());
        }
        if accept {
            for change in changes {
                tracing::warn!(run = %run.root().display(), "resuming not exactly (--accept-changes): {change}");
            }
            return Ok(());
        }
        Err(TrainError::RunDir {
            path: run.root().to_path_buf(),
            message: format!(
                "cannot resume exactly: {}; undo the change, start a new run with the new \
                 settings, or resume anyway with --accept-changes",
                changes.join("; ")
            ),
        })
    }
}

fn describe(d: &DataFingerprint) -> String {
    format!(
        "{} classes [{}], {} training / {} validation / {} pre-training images of {}×{}×{}, content CRC-32C {}",
        d.class_names.len(),
        d.class_names.join(", "),
        d.train,
        d.validation,
        d.pretrain,
        d.image_shape[0],
        d.image_shape[1],
        d.image_shape[2],
        d.content.as_deref().unwrap_or("unknown")
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
    fn the_common_folder_is_the_deepest_holding_every_file() {
        let paths = [
            Path::new("/d/shards/a/x.tar"),
            Path::new("/d/shards/a/y.tar"),
            Path::new("/d/shards/b/z.tar"),
        ];
        assert_eq!(common_folder(&paths), Some(Path::new("/d/shards")));
        assert_eq!(common_folder(&paths[..2]), Some(Path::new("/d/shards/a")));
        assert_eq!(common_folder(&[]), None);
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
