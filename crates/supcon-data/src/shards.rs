//! Tar shards in the WebDataset layout: each `.tar` holds samples as consecutive members that
//! share a key, `<key>.png|jpg|jpeg` (the image) and `<key>.cls` (the label, a decimal class
//! index as text); other members (`.json`, `.txt`, …) are ignored. The key is the member's path
//! up to the first `.` of its file name, as WebDataset splits it.
//!
//! Shards are **indexed** once when opened (member headers only: the images are skipped with a
//! seek, the small `.cls` members read), then each image is read by its offset when asked for.
//! WebDataset's order (shards shuffled per epoch, samples shuffled in a bounded buffer) is
//! [`shard_order`]; reading by offset is what lets every rank read its share of a global batch
//! and a killed run resume at its exact step, while reads stay within a window of each shard.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;

use crate::store::{check_size, convert, ImageStore};
use crate::{DataError, Dataset, ImageFolderOptions, ImageShape};

/// One sample's image inside its shard.
#[derive(Debug)]
struct Member {
    shard: u32,
    offset: u64,
    size: u64,
    /// The image member's name inside the tar (for messages).
    name: Box<str>,
}

/// An index of images in tar shards: the store of a sharded dataset.
#[derive(Debug)]
pub struct ShardStore {
    shards: Vec<PathBuf>,
    members: Vec<Member>,
    options: ImageFolderOptions,
    shape: ImageShape,
}

impl ShardStore {
    /// The shape every image is decoded to.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// The shard files, in the order given.
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }

    fn read_member(&self, id: usize) -> Result<Vec<u8>, DataError> {
        let member = &self.members[id];
        let path = &self.shards[member.shard as usize];
        let io_error = |source| DataError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        file.seek(SeekFrom::Start(member.offset))
            .map_err(io_error)?;
        let mut bytes = vec![0u8; member.size as usize];
        file.read_exact(&mut bytes).map_err(io_error)?;
        Ok(bytes)
    }
}

impl ImageStore for ShardStore {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn read(&self, id: usize) -> Result<Vec<u8>, DataError> {
        let bytes = self.read_member(id)?;
        let member = &self.members[id];
        let image = image::load_from_memory(&bytes).map_err(|source| DataError::ShardMember {
            shard: self.shards[member.shard as usize].clone(),
            member: member.name.to_string(),
            source,
        })?;
        let at = |m: &Member| self.shards[m.shard as usize].join(&*m.name);
        check_size(
            convert(image, &self.options),
            self.shape,
            || at(member),
            || at(&self.members[0]),
        )
    }

    fn describe(&self, id: usize) -> String {
        let member = &self.members[id];
        format!(
            "{} (member {})",
            self.shards[member.shard as usize].display(),
            member.name
        )
    }

    fn shard_of(&self, id: usize) -> Option<usize> {
        Some(self.members[id].shard as usize)
    }
}

/// WebDataset's split of a member name into (key, extension): the key runs to the first `.` of
/// the file name.
fn split_key(name: &str) -> Option<(&str, &str)> {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = file_start + name[file_start..].find('.')?;
    Some((&name[..dot], &name[dot + 1..]))
}

fn is_image_extension(extension: &str) -> bool {
    matches!(
        extension.to_ascii_lowercase().as_str(),
        "png" | "jpg" | "jpeg"
    )
}

/// A sample being assembled from consecutive members with one key.
#[derive(Default)]
struct PendingSample {
    key: String,
    image: Option<(u64, u64, String)>,
    label: Option<i64>,
}

/// Indexes one shard: its samples (image offset, size, name) and labels, in member order.
fn index_shard(
    path: &Path,
    shard: u32,
    labeled: bool,
    members: &mut Vec<Member>,
    labels: &mut Vec<i64>,
) -> Result<(), DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let tar_error = |source| DataError::Tar {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut pending = PendingSample::default();
    let mut finish = |sample: PendingSample| -> Result<(), DataError> {
        if sample.key.is_empty() {
            return Ok(());
        }
        let Some((offset, size, name)) = sample.image else {
            return Err(DataError::ShardSample {
                shard: path.to_path_buf(),
                key: sample.key,
                reason: "has no .png, .jpg or .jpeg member",
            });
        };
        if offset.saturating_add(size) > file_len {
            return Err(DataError::ShardSample {
                shard: path.to_path_buf(),
                key: sample.key,
                reason: "is cut short: the shard ends inside its image (truncated file?)",
            });
        }
        if labeled {
            let Some(label) = sample.label else {
                return Err(DataError::ShardSample {
                    shard: path.to_path_buf(),
                    key: sample.key,
                    reason: "has no .cls member (its label); set data.labels = false for unlabeled shards",
                });
            };
            labels.push(label);
        }
        members.push(Member {
            shard,
            offset,
            size,
            name: name.into_boxed_str(),
        });
        Ok(())
    };
    for entry in archive.entries_with_seek().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(tar_error)?
            .to_string_lossy()
            .into_owned();
        let Some((key, extension)) = split_key(&name) else {
            continue;
        };
        if key != pending.key {
            finish(std::mem::take(&mut pending))?;
            pending.key = key.to_owned();
        }
        if is_image_extension(extension) {
            pending.image = Some((entry.raw_file_position(), entry.size(), name.clone()));
        } else if labeled && extension == "cls" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(tar_error)?;
            let label = text.trim().parse::<i64>().ok().filter(|&l| l >= 0);
            pending.label = Some(label.ok_or_else(|| DataError::ShardLabel {
                shard: path.to_path_buf(),
                member: name.clone(),
                text: text.trim().chars().take(40).collect(),
            })?);
        }
    }
    finish(pending)
}

/// Expands WebDataset's brace notation: `train-{000000..000009}.tar` (a zero-padded numeric
/// range, both ends included) and `{a,b}` (alternatives), any number of times.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    let bad = |reason: &'static str| DataError::ShardPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(bad("a `}` without its `{`"));
        }
        return Ok(vec![pattern.to_owned()]);
    };
    let close = open
        + pattern[open..]
            .find('}')
            .ok_or_else(|| bad("a `{` without its `}`"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let choices: Vec<String> = if let Some((from, to)) = body.split_once("..") {
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| bad("a range end is not a number"))
        };
        let (first, last) = (parse(from)?, parse(to)?);
        if first > last {
            return Err(bad("a range that counts down"));
        }
        let width = if from.starts_with('0') { from.len() } else { 0 };
        (first..=last).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_owned).collect()
    };
    let rest = expand_braces(tail).map_err(|_| bad("a malformed brace after the first"))?;
    Ok(choices
        .iter()
        .flat_map(|choice| rest.iter().map(move |r| format!("{head}{choice}{r}")))
        .collect())
}

/// The shard files a `data.path` names: a brace pattern ([`expand_braces`]), one `.tar` file,
/// or a folder (its `*.tar` files, sorted).
pub fn shard_paths(pattern: &Path) -> Result<Vec<PathBuf>, DataError> {
    if pattern.is_dir() {
        let io_error = |source| DataError::Io {
            path: pattern.to_path_buf(),
            source,
        };
        let mut paths = std::fs::read_dir(pattern)
            .map_err(io_error)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_error)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "tar"));
        paths.sort();
        if paths.is_empty() {
            return Err(DataError::ShardPattern {
                pattern: pattern.display().to_string(),
                reason: "is a folder without .tar files",
            });
        }
        return Ok(paths);
    }
    Ok(expand_braces(&pattern.to_string_lossy())?
        .into_iter()
        .map(PathBuf::from)
        .collect())
}

/// Indexes tar shards (see the module docs) into a streamed [`Dataset`]: labels from the `.cls`
/// members when `labeled` (class names `"0"`, `"1"`, … up to the largest label), none
/// otherwise. Without a resize, the first image is decoded to learn every image's shape.
///
/// Errors name the shard and the sample: an unreadable or malformed shard, a sample without an
/// image, a missing or malformed label, an image member cut short by the end of the file.
pub fn open_shards(
    paths: &[PathBuf],
    options: &ImageFolderOptions,
    labeled: bool,
) -> Result<Dataset, DataError> {
    options.check()?;
    let mut members = Vec::new();
    let mut labels = Vec::new();
    for (shard, path) in paths.iter().enumerate() {
        index_shard(path, shard as u32, labeled, &mut members, &mut labels)?;
    }
    if members.is_empty() {
        return Err(DataError::ShardPattern {
            pattern: paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            reason: "holds no image",
        });
    }
    let mut store = ShardStore {
        shards: paths.to_vec(),
        members,
        options: *options,
        shape: ImageShape::new(0, 0, 0),
    };
    store.shape = match options.fixed_shape() {
        Some(shape) => shape,
        None => {
            let first = image::load_from_memory(&store.read_member(0)?).map_err(|source| {
                DataError::ShardMember {
                    shard: paths[0].clone(),
                    member: store.members[0].name.to_string(),
                    source,
                }
            })?;
            convert(first, options).shape
        }
    };
    let shape = store.shape;
    let class_names = labeled.then(|| {
        let classes = labels.iter().max().map_or(0, |&l| l + 1);
        (0..classes).map(|c| c.to_string()).collect()
    });
    tracing::debug!(images = store.len(), shards = paths.len(), %shape, "indexed tar shards");
    Dataset::stored(
        Arc::new(store),
        shape,
        labeled.then_some(labels),
        class_names.unwrap_or_default(),
    )
}

/// WebDataset's epoch order over the shards' runs of consecutive indices (see
/// [`Dataset::shard_runs`]): the runs in a shuffled order, read in sequence through a buffer of
/// `buffer` samples from which each next sample is drawn at random (`buffer` ≤ 1: no sample
/// shuffling). Every index appears once. The buffer never holds more than `buffer` samples, so
/// the order mixes samples within a sliding window of the shards' sequence, as WebDataset's
/// `shuffle(buffer)` does.
pub fn shard_order(runs: &[Range<usize>], buffer: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut shuffled: Vec<&Range<usize>> = runs.iter().collect();
    rand::seq::SliceRandom::shuffle(shuffled.as_mut_slice(), rng);
    let total = runs.iter().map(|r| r.len()).sum();
    let mut order = Vec::with_capacity(total);
    let mut pool: Vec<usize> = Vec::with_capacity(buffer.max(1));
    for index in shuffled.into_iter().flat_map(|run| run.clone()) {
        pool.push(index);
        if pool.len() >= buffer.max(1) {
            let pick = rng.random_range(0..pool.len());
            order.push(pool.swap_remove(pick));
        }
    }
    while !pool.is_empty() {
        let pick = rng.random_range(0..pool.len());
        order.push(pool.swap_remove(pick));
    }
    order
}
