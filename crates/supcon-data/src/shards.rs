//! Tar shards in the WebDataset layout: each `.tar` holds samples as consecutive members that
//! share a key, `<key>.png|jpg|jpeg` (the image) and `<key>.cls` (the label, a decimal class
//! index as text); other members (`.json`, `.txt`, …) are ignored. The key is the member's path
//! up to the first `.` of its file name, as WebDataset splits it.
//!
//! Shards are **indexed** once when opened ([`index_tar`]: member headers only, the images
//! skipped with a seek, the small `.cls` members read, every declared size checked against the
//! [`Limits`] and the shard's length first), then each image is read by its offset when asked
//! for. WebDataset's order (shards shuffled per epoch, samples shuffled in a bounded buffer) is
//! [`shard_order`]; reading by offset is what lets every rank read its share of a global batch
//! and a killed run resume at its exact step, while reads stay within a window of each shard.

use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::ImageReader;
use rand::Rng;

use crate::braces::expand_braces_with_limits;
use crate::files::open_regular_file;
use crate::store::{check_size, decode_image, Decoded, ImageOrigin, ImageStore};
use crate::tar_index::index_tar;
use crate::{DataError, Dataset, ImageFolderOptions, ImageShape, Limits};

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
    limits: Limits,
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

    /// The encoded bytes of image `id`. Its size was checked against the limit and the shard's
    /// length when indexed; reading through `take` keeps a shard rewritten since from making
    /// this read more.
    fn read_member(&self, id: usize) -> Result<Vec<u8>, DataError> {
        let member = &self.members[id];
        let path = &self.shards[member.shard as usize];
        let io_error = |source| DataError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open_regular_file(path)?;
        file.seek(SeekFrom::Start(member.offset))
            .map_err(io_error)?;
        let mut bytes = Vec::with_capacity(usize::try_from(member.size).unwrap_or(0));
        file.take(member.size)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if (bytes.len() as u64) < member.size {
            return Err(DataError::ShardTruncated {
                shard: path.clone(),
                member: member.name.to_string(),
                offset: member.offset,
                size: member.size,
                shard_len: member.offset + bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    fn decode_member(&self, id: usize) -> Result<Decoded, DataError> {
        let bytes = self.read_member(id)?;
        let member = &self.members[id];
        let origin = ImageOrigin::ShardMember {
            shard: &self.shards[member.shard as usize],
            member: &member.name,
        };
        let reader = ImageReader::new(Cursor::new(bytes));
        decode_image(reader, origin, &self.options, &self.limits)
    }
}

impl ImageStore for ShardStore {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn read(&self, id: usize) -> Result<Vec<u8>, DataError> {
        let at = |m: &Member| self.shards[m.shard as usize].join(&*m.name);
        check_size(
            self.decode_member(id)?,
            self.shape,
            || at(&self.members[id]),
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

    fn files(&self) -> &[PathBuf] {
        &self.shards
    }

    fn shard_of(&self, id: usize) -> Option<usize> {
        Some(self.members[id].shard as usize)
    }
}

/// Indexes one shard file into the store's members and the labels.
fn index_shard(
    path: &Path,
    shard: u32,
    labeled: bool,
    limits: &Limits,
    members: &mut Vec<Member>,
    labels: &mut Vec<i64>,
) -> Result<(), DataError> {
    let reader = BufReader::new(open_regular_file(path)?);
    for sample in index_tar(reader, path, labeled, limits)? {
        labels.extend(sample.label);
        members.push(Member {
            shard,
            offset: sample.image_offset,
            size: sample.image_size,
            name: sample.image_member.into_boxed_str(),
        });
    }
    Ok(())
}

/// The shard files a `data.path` names, within the default [`Limits`]: see
/// [`shard_paths_with_limits`].
pub fn shard_paths(pattern: &Path) -> Result<Vec<PathBuf>, DataError> {
    shard_paths_with_limits(pattern, &Limits::default())
}

/// The shard files a `data.path` names: a brace pattern ([`crate::expand_braces`], at most
/// [`Limits::max_pattern_names`] names), one `.tar` file, or a folder (its `*.tar` files,
/// sorted).
pub fn shard_paths_with_limits(pattern: &Path, limits: &Limits) -> Result<Vec<PathBuf>, DataError> {
    if pattern.is_dir() {
        return tar_files_in(pattern);
    }
    Ok(
        expand_braces_with_limits(&pattern.to_string_lossy(), limits)?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    )
}

/// The `*.tar` files of a folder, sorted.
fn tar_files_in(folder: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io_error = |source| DataError::Io {
        path: folder.to_path_buf(),
        source,
    };
    let mut paths = std::fs::read_dir(folder)
        .map_err(io_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "tar"));
    paths.sort();
    if paths.is_empty() {
        return Err(DataError::ShardPattern {
            pattern: folder.display().to_string(),
            reason: "is a folder without .tar files",
        });
    }
    Ok(paths)
}

/// Indexes tar shards within the default [`Limits`]: see [`open_shards_with_limits`].
pub fn open_shards(
    paths: &[PathBuf],
    options: &ImageFolderOptions,
    labeled: bool,
) -> Result<Dataset, DataError> {
    open_shards_with_limits(paths, options, labeled, &Limits::default())
}

/// Indexes tar shards (see the module docs) into a streamed [`Dataset`]: labels from the `.cls`
/// members when `labeled` (class names `"0"`, `"1"`, … up to the largest label), none
/// otherwise. Without a resize, the first image is decoded to learn every image's shape.
///
/// Errors name the shard and the sample: an unreadable, malformed or truncated shard, a path
/// that is not a regular file, a sample without an image, a missing or malformed label, a size
/// over one of `limits` (an image member, a `.cls` body or value, an extension record; later,
/// an image's pixels).
pub fn open_shards_with_limits(
    paths: &[PathBuf],
    options: &ImageFolderOptions,
    labeled: bool,
    limits: &Limits,
) -> Result<Dataset, DataError> {
    options.check(limits)?;
    let all_paths = || {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if u32::try_from(paths.len()).is_err() {
        return Err(DataError::ShardPattern {
            pattern: all_paths(),
            reason: "names more than 2^32 shards",
        });
    }
    let mut members = Vec::new();
    let mut labels = Vec::new();
    for (shard, path) in paths.iter().enumerate() {
        index_shard(
            path,
            shard as u32,
            labeled,
            limits,
            &mut members,
            &mut labels,
        )?;
    }
    if members.is_empty() {
        return Err(DataError::ShardPattern {
            pattern: all_paths(),
            reason: "holds no image",
        });
    }
    let mut store = ShardStore {
        shards: paths.to_vec(),
        members,
        options: *options,
        limits: *limits,
        shape: ImageShape::new(0, 0, 0),
    };
    store.shape = match options.fixed_shape() {
        Some(shape) => shape,
        None => store.decode_member(0)?.shape,
    };
    let shape = store.shape;
    let class_names = labeled.then(|| {
        // Labels are at most `limits.max_class_id`, so the list is as long as that at most.
        let classes = labels.iter().max().map_or(0, |&l| l.saturating_add(1));
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
