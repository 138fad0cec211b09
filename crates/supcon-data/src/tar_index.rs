//! The index of one tar shard in the WebDataset layout (see [`crate::open_shards`]): where each
//! sample's image lies and what its label is, read from the member headers, the extension
//! records and the `.cls` bodies only.
//!
//! Every size a header declares is checked before anything is read: against its [`Limits`]
//! field (an image member, a `.cls` body, a GNU long name or PAX record) and against the bytes
//! the shard holds. The `tar` crate iterates the headers (checksums, numeric fields, seeking past
//! data) in raw mode, so that the extension records come here to be read within a limit instead
//! of whole; their meaning (a long name or PAX `path` renames the next member) is the `tar`
//! crate's own, so a valid shard indexes as it always did.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::{DataError, Limits};

/// One sample of a tar shard, as [`index_tar`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarSample {
    /// The key its members share: their path up to the first `.` of the file name.
    pub key: String,
    /// The image member's name.
    pub image_member: String,
    /// Byte offset of the image's data in the shard.
    pub image_offset: u64,
    /// Bytes of the image's data: within the shard and at most
    /// [`Limits::max_shard_member_bytes`].
    pub image_size: u64,
    /// The class index its `.cls` member holds (at most [`Limits::max_class_id`]) when indexed
    /// with labels, else `None`.
    pub label: Option<i64>,
}

/// Indexes one tar shard in the WebDataset layout from any seekable reader: a file, or a byte
/// slice in a [`std::io::Cursor`] (the shard starts at the reader's start). `shard` is the name
/// errors give it. With `labeled`, every sample needs a `.cls` member.
///
/// Reads member headers, extension records and `.cls` bodies only, each checked against
/// `limits` and the shard's length before it is read; image data is skipped with a seek. Never
/// panics: malformed bytes are a [`DataError::Tar`], an over-limit size a
/// [`DataError::LimitExceeded`], a member running past the end a [`DataError::ShardTruncated`].
pub fn index_tar<R: Read + Seek>(
    mut reader: R,
    shard: &Path,
    labeled: bool,
    limits: &Limits,
) -> Result<Vec<TarSample>, DataError> {
    let shard_len = stream_len(&mut reader).map_err(|source| DataError::Io {
        path: shard.to_path_buf(),
        source,
    })?;
    let mut indexer = Indexer {
        shard,
        shard_len,
        labeled,
        limits,
        samples: Vec::new(),
        pending: PendingSample::default(),
        extensions: Extensions::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries_with_seek()
        .map_err(|source| indexer.tar_error(source))?
        .raw(true);
    for entry in entries {
        let entry = entry.map_err(|source| indexer.tar_error(source))?;
        indexer.add(entry)?;
    }
    indexer.finish()
}

/// The reader's length, leaving it at its start.
fn stream_len(reader: &mut impl Seek) -> io::Result<u64> {
    let len = reader.seek(SeekFrom::End(0))?;
    reader.seek(SeekFrom::Start(0))?;
    Ok(len)
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

/// The extension records the `tar` crate resolves itself when not iterating raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExtensionKind {
    /// GNU `L`: the next member's full name.
    LongName,
    /// GNU `K`: the next member's link target (unused here, but it is not a member).
    LongLink,
    /// PAX `x`: `key=value` records for the next member (`path`, `size`, …).
    Pax,
}

impl ExtensionKind {
    /// The kind of an extension record, as the `tar` crate recognises them: only in a GNU or
    /// ustar header.
    fn of(header: &tar::Header) -> Option<Self> {
        if header.as_gnu().is_none() && header.as_ustar().is_none() {
            return None;
        }
        let kind = header.entry_type();
        if kind.is_gnu_longname() {
            Some(Self::LongName)
        } else if kind.is_gnu_longlink() {
            Some(Self::LongLink)
        } else if kind.is_pax_local_extensions() {
            Some(Self::Pax)
        } else {
            None
        }
    }

    fn record(self) -> &'static str {
        match self {
            Self::LongName => "GNU long name record",
            Self::LongLink => "GNU long link record",
            Self::Pax => "PAX extended header",
        }
    }
}

/// Extension records waiting for the member they describe.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && !self.long_link && self.pax.is_none()
    }

    /// Keeps a record for the next member; two of a kind for one member are malformed.
    fn add(&mut self, kind: ExtensionKind, record: Vec<u8>) -> Result<(), &'static str> {
        let duplicate = match kind {
            ExtensionKind::LongName => self.long_name.replace(record).is_some(),
            ExtensionKind::LongLink => std::mem::replace(&mut self.long_link, true),
            ExtensionKind::Pax => self.pax.replace(record).is_some(),
        };
        if duplicate {
            return Err("two extension records of one kind describe the same member");
        }
        Ok(())
    }

    /// The member's name as the `tar` crate gives it: the GNU long name (less one trailing NUL),
    /// else the PAX `path`, else the header's own.
    fn name(&self, header: &tar::Header) -> String {
        if let Some(long_name) = &self.long_name {
            let bytes = long_name.strip_suffix(&[0]).unwrap_or(long_name);
            return String::from_utf8_lossy(bytes).into_owned();
        }
        let pax_path = self.pax.as_deref().and_then(|pax| {
            tar::PaxExtensions::new(pax)
                .filter_map(Result::ok)
                .find(|record| record.key_bytes() == b"path")
                .map(|record| record.value_bytes())
        });
        match pax_path {
            Some(path) => String::from_utf8_lossy(path).into_owned(),
            None => String::from_utf8_lossy(&header.path_bytes()).into_owned(),
        }
    }

    /// The PAX `size`, parsed as the `tar` crate does (`None` from the first malformed record).
    fn pax_size(&self) -> Option<u64> {
        for record in tar::PaxExtensions::new(self.pax.as_deref()?) {
            let record = record.ok()?;
            if record.key() == Ok("size") {
                return record.value().ok()?.parse().ok();
            }
        }
        None
    }
}

/// A sample being assembled from consecutive members with one key.
#[derive(Default)]
struct PendingSample {
    key: String,
    image: Option<(u64, u64, String)>,
    label: Option<i64>,
}

/// The state of one shard's indexing.
struct Indexer<'a> {
    shard: &'a Path,
    shard_len: u64,
    labeled: bool,
    limits: &'a Limits,
    samples: Vec<TarSample>,
    pending: PendingSample,
    extensions: Extensions,
}

impl Indexer<'_> {
    fn tar_error(&self, source: io::Error) -> DataError {
        DataError::Tar {
            path: self.shard.to_path_buf(),
            source,
        }
    }

    fn malformed(&self, member: &str, reason: &str) -> DataError {
        self.tar_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("member `{member}`: {reason}"),
        ))
    }

    fn check_limit(
        &self,
        member: &str,
        what: &str,
        value: u64,
        limit: u64,
        setting: &'static str,
    ) -> Result<(), DataError> {
        if value <= limit {
            return Ok(());
        }
        Err(DataError::LimitExceeded {
            path: Some(self.shard.to_path_buf()),
            member: Some(member.to_owned()),
            what: what.to_owned(),
            value,
            limit,
            setting,
        })
    }

    /// A member's data must lie inside the shard: a larger declared size is a truncated (or
    /// lying) shard, and would make the `tar` crate seek past the end and stop silently.
    fn check_within_shard(&self, member: &str, offset: u64, size: u64) -> Result<(), DataError> {
        if offset
            .checked_add(size)
            .is_some_and(|end| end <= self.shard_len)
        {
            return Ok(());
        }
        Err(DataError::ShardTruncated {
            shard: self.shard.to_path_buf(),
            member: member.to_owned(),
            offset,
            size,
            shard_len: self.shard_len,
        })
    }

    /// Reads a member's data, at most `size` bytes: the caller has checked `size` against its
    /// limit and the shard's length.
    fn read_body<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
    ) -> Result<Vec<u8>, DataError> {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|source| self.tar_error(source))?;
        Ok(bytes)
    }

    fn add<R: Read>(&mut self, entry: tar::Entry<'_, R>) -> Result<(), DataError> {
        match ExtensionKind::of(entry.header()) {
            Some(kind) => self.add_extension(kind, entry),
            None => self.add_member(entry),
        }
    }

    /// Reads an extension record (within its limit) and keeps it for the next member.
    fn add_extension<R: Read>(
        &mut self,
        kind: ExtensionKind,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), DataError> {
        let (offset, size) = (entry.raw_file_position(), entry.size());
        let name = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
        let what = format!("{} size in bytes", kind.record());
        let limit = self.limits.max_tar_header_bytes;
        self.check_limit(&name, &what, size, limit, "max_tar_header_bytes")?;
        self.check_within_shard(&name, offset, size)?;
        let record = self.read_body(&mut entry, size)?;
        self.extensions
            .add(kind, record)
            .map_err(|reason| self.malformed(&name, reason))
    }

    /// A member proper: a part of a sample when it is a regular file named `<key>.<extension>`,
    /// else only checked to lie inside the shard.
    fn add_member<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), DataError> {
        let (offset, size) = (entry.raw_file_position(), entry.size());
        let extensions = std::mem::take(&mut self.extensions);
        let name = extensions.name(entry.header());
        self.check_layout(entry.header(), &extensions, &name, size)?;
        let is_file = entry.header().entry_type().is_file();
        let Some((key, extension)) = split_key(&name).filter(|_| is_file) else {
            return self.check_within_shard(&name, offset, size);
        };
        let (is_image, is_label) = (
            is_image_extension(extension),
            self.labeled && extension == "cls",
        );
        if key != self.pending.key {
            let key = key.to_owned();
            self.finish_sample()?;
            self.pending.key = key;
        }
        if is_image {
            let limit = self.limits.max_shard_member_bytes;
            self.check_limit(
                &name,
                "image size in bytes",
                size,
                limit,
                "max_shard_member_bytes",
            )?;
            self.check_within_shard(&name, offset, size)?;
            self.pending.image = Some((offset, size, name));
        } else if is_label {
            let limit = self.limits.max_label_bytes;
            self.check_limit(&name, "label size in bytes", size, limit, "max_label_bytes")?;
            self.check_within_shard(&name, offset, size)?;
            let body = self.read_body(&mut entry, size)?;
            self.pending.label = Some(self.parse_label(&name, &body)?);
        } else {
            self.check_within_shard(&name, offset, size)?;
        }
        Ok(())
    }

    /// Refuses what raw iteration cannot follow the way the `tar` crate's resolving iteration
    /// would: a PAX `size` other than the header's (the next header would be looked for
    /// elsewhere) and a GNU sparse member with extension blocks after its header.
    fn check_layout(
        &self,
        header: &tar::Header,
        extensions: &Extensions,
        name: &str,
        size: u64,
    ) -> Result<(), DataError> {
        if let Some(pax_size) = extensions.pax_size().filter(|&s| s != size) {
            return Err(self.malformed(
                name,
                &format!("its PAX size {pax_size} differs from its header's size {size}"),
            ));
        }
        let sparse_extended = header.entry_type().is_gnu_sparse()
            && header.as_gnu().is_some_and(tar::GnuHeader::is_extended);
        if sparse_extended {
            return Err(self.malformed(
                name,
                "a GNU sparse member with extension blocks (not supported in shards)",
            ));
        }
        Ok(())
    }

    /// A `.cls` body: a decimal class index, at most `max_class_id`.
    fn parse_label(&self, member: &str, body: &[u8]) -> Result<i64, DataError> {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let label = text
            .parse::<i64>()
            .ok()
            .filter(|&l| l >= 0)
            .ok_or_else(|| DataError::ShardLabel {
                shard: self.shard.to_path_buf(),
                member: member.to_owned(),
                text: text.chars().take(40).collect(),
            })?;
        let limit = self.limits.max_class_id;
        self.check_limit(member, "class index", label as u64, limit, "max_class_id")?;
        Ok(label)
    }

    /// Completes the pending sample: it needs an image, and a label when labeled.
    fn finish_sample(&mut self) -> Result<(), DataError> {
        let sample = std::mem::take(&mut self.pending);
        if sample.key.is_empty() {
            return Ok(());
        }
        let missing = |reason| DataError::ShardSample {
            shard: self.shard.to_path_buf(),
            key: sample.key.clone(),
            reason,
        };
        let Some((image_offset, image_size, image_member)) = sample.image.clone() else {
            return Err(missing("has no .png, .jpg or .jpeg member"));
        };
        if self.labeled && sample.label.is_none() {
            return Err(missing(
                "has no .cls member (its label); set data.labels = false for unlabeled shards",
            ));
        }
        self.samples.push(TarSample {
            key: sample.key,
            image_member,
            image_offset,
            image_size,
            label: sample.label,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<TarSample>, DataError> {
        if !self.extensions.is_empty() {
            return Err(self.malformed(
                "(end of archive)",
                "extension records describe a member that never comes",
            ));
        }
        self.finish_sample()?;
        Ok(self.samples)
    }
}
