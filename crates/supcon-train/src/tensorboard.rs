//! TensorBoard event files, written by hand: `tensorboard --logdir runs` shows a run's curves
//! while it trains.
//!
//! Every scalar goes through [`crate::metrics_log::MetricsWriter`]: each record it writes to
//! `metrics.jsonl` is also appended here ([`record_scalars`] names the tags), and the final
//! evaluation adds its accuracies (`report::MethodEvaluation::scalars`). The events file lives in the run
//! folder's `tensorboard/` ([`crate::run_dir::RunDir::tensorboard`]) and is named like
//! TensorFlow's, `events.out.tfevents.<unix seconds>.<hostname>.<pid>`; a resumed run starts a
//! new one (TensorBoard reads every file of a folder, in name order, and a step logged again
//! replaces the points of its tag from that step on, as `metrics.jsonl`'s truncation does).
//!
//! # Format
//!
//! A TFRecord file: for each record, `u64` length (little-endian), `u32` masked CRC-32C of
//! those 8 bytes, the data, `u32` masked CRC-32C of the data ([`frame_record`]). Each record is a
//! serialized `tensorflow.Event` protobuf; the few fields needed are encoded by [`proto`]:
//!
//! ```text
//! Event   { 1: wall_time double, 2: step int64, 3: file_version string, 5: summary Summary }
//! Summary { 1: repeated Value }
//! Value   { 1: tag string, 2: simple_value float }
//! ```
//!
//! The first record of a file carries only `file_version = "brain.Event:2"`.
//!
//! The file is a log, not state: it is appended to (one `write` per event, no user-space
//! buffer, so a reader sees each event at once), never written atomically; a torn last record
//! is skipped by TensorBoard. It is opened on the first scalar, so a command that logs none
//! leaves no file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::TrainError;
use crate::vocabulary::{MetricRecord, RecordKind};

/// `file_version` of the first event of a file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The reflected Castagnoli polynomial of CRC-32C.
const CASTAGNOLI: u32 = 0x82F6_3B78;

/// Added to the rotated CRC by [`masked_crc32c`].
const MASK_DELTA: u32 = 0xa282_ead8;

/// CRC-32C of every byte value, one byte at a time (built at compile time).
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CASTAGNOLI
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C (Castagnoli) of `bytes`, as TFRecord, iSCSI and ext4 use it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_extend(0, bytes)
}

/// The CRC-32C of the bytes `crc` covers followed by `bytes`: a CRC computed in pieces.
pub fn crc32c_extend(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = !crc;
    for &byte in bytes {
        crc = CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masking of a CRC (so that a CRC of data holding CRCs stays meaningful):
/// rotate right by 15 bits, then add `0xa282ead8` (wrapping).
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// The masked CRC-32C of `bytes`, as a TFRecord stores it.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    mask_crc(crc32c(bytes))
}

/// One TFRecord: length, masked CRC of the length, `data`, masked CRC of `data`.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The protobuf wire format, as far as `tensorflow.Event` needs it.
///
/// A field is a key, `(field number << 3) | wire type`, as a varint, then its value: a varint
/// (type 0), 8 little-endian bytes (type 1), a varint length and that many bytes (type 2:
/// strings and nested messages) or 4 little-endian bytes (type 5).
pub mod proto {
    /// Wire type of varints (`int64`).
    pub const VARINT: u8 = 0;
    /// Wire type of 64-bit values (`double`).
    pub const FIXED64: u8 = 1;
    /// Wire type of length-delimited values (strings, messages).
    pub const LEN: u8 = 2;
    /// Wire type of 32-bit values (`float`).
    pub const FIXED32: u8 = 5;

    /// Appends `value` as a varint: 7 bits a byte, least significant first, the high bit set on
    /// every byte but the last.
    pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// Appends the key of field `field` with `wire_type`.
    pub fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
        put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
    }

    /// Appends an `int64` field (negative values take ten bytes, as protobuf has it).
    pub fn put_int64(out: &mut Vec<u8>, field: u32, value: i64) {
        put_key(out, field, VARINT);
        put_varint(out, value as u64);
    }

    /// Appends a `double` field.
    pub fn put_double(out: &mut Vec<u8>, field: u32, value: f64) {
        put_key(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a `float` field.
    pub fn put_float(out: &mut Vec<u8>, field: u32, value: f32) {
        put_key(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a length-delimited field: a string's UTF-8 or a serialized message.
    pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        put_key(out, field, LEN);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

/// One named value of an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub value: f64,
}

impl Scalar {
    /// A scalar called `tag`.
    pub fn new(tag: impl Into<String>, value: f64) -> Self {
        Self {
            tag: tag.into(),
            value,
        }
    }
}

/// A serialized `Event { wall_time, file_version }`: the first record of a file.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut event = Vec::with_capacity(32);
    proto::put_double(&mut event, 1, wall_time);
    proto::put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
    event
}

/// A serialized `Event { wall_time, step, summary { value { tag, simple_value } ... } }`.
/// TensorBoard's `simple_value` is a 32-bit float.
pub fn scalar_event(wall_time: f64, step: u64, scalars: &[Scalar]) -> Vec<u8> {
    let mut summary = Vec::new();
    let mut value = Vec::new();
    for scalar in scalars {
        value.clear();
        proto::put_bytes(&mut value, 1, scalar.tag.as_bytes());
        proto::put_float(&mut value, 2, scalar.value as f32);
        proto::put_bytes(&mut summary, 1, &value);
    }
    let mut event = Vec::with_capacity(summary.len() + 24);
    proto::put_double(&mut event, 1, wall_time);
    proto::put_int64(&mut event, 2, i64::try_from(step).unwrap_or(i64::MAX));
    proto::put_bytes(&mut event, 5, &summary);
    event
}

/// The tags of one `metrics.jsonl` record, under its stage (`pretrain`, `linear`, `ce`):
///
/// - a step record: `<stage>/loss`, `<stage>/lr`, `<stage>/images_per_second` (since the last
///   step record);
/// - an epoch record: `<stage>/epoch_loss` (the epoch mean), `<stage>/epoch_lr`,
///   `<stage>/epoch_images_per_second` (the stage so far), and `<stage>/val_top1`,
///   `<stage>/train_top1` where measured.
///
/// The event's step is the record's, the stage's global optimizer step.
pub fn record_scalars(record: &MetricRecord) -> Vec<Scalar> {
    let stage = record.stage.as_str();
    let prefix = match record.kind {
        RecordKind::Step => "",
        RecordKind::Epoch => "epoch_",
    };
    let mut scalars = vec![
        Scalar::new(format!("{stage}/{prefix}loss"), record.loss),
        Scalar::new(format!("{stage}/{prefix}lr"), record.lr),
        Scalar::new(
            format!("{stage}/{prefix}images_per_second"),
            record.images_per_second,
        ),
    ];
    if let Some(top1) = record.val_top1 {
        scalars.push(Scalar::new(format!("{stage}/val_top1"), top1));
    }
    if let Some(top1) = record.train_top1 {
        scalars.push(Scalar::new(format!("{stage}/train_top1"), top1));
    }
    scalars
}

/// `events.out.tfevents.<unix seconds>.<hostname>.<pid>`, TensorFlow's name (characters of the
/// host name other than letters, digits, `-`, `_` and `.` become `_`).
pub fn events_file_name(unix_seconds: u64, hostname: &str, pid: u32) -> String {
    let host: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("events.out.tfevents.{unix_seconds}.{host}.{pid}")
}

/// The machine's name: the kernel's (Linux), else `$HOSTNAME`, else `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Time since the Unix epoch (0 on a clock before it).
fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// An open events file.
struct OpenFile {
    path: PathBuf,
    file: File,
}

/// Appends scalar events to a new events file in a folder, created with the first event.
///
/// Writing takes `&self` (the file is behind a mutex), so the evaluation, which holds the
/// session shared, logs through the same writer as the training loop.
pub struct EventWriter {
    dir: PathBuf,
    file: Mutex<Option<OpenFile>>,
}

impl EventWriter {
    /// A writer into `dir` (created, with the file, on the first write).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            file: Mutex::new(None),
        }
    }

    /// The folder of the events file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The events file, once the first event has created it.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().as_ref().map(|open| open.path.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenFile>> {
        // A panic while holding the lock leaves at worst a torn record, which readers skip.
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one event with `scalars` at `step` (nothing when `scalars` is empty). An I/O
    /// error is [`TrainError::Io`] naming the events file (or its folder).
    pub fn write_scalars(&self, step: u64, scalars: &[Scalar]) -> Result<(), TrainError> {
        if scalars.is_empty() {
            return Ok(());
        }
        let wall_time = now().as_secs_f64();
        let mut bytes = Vec::new();
        let mut guard = self.lock();
        if guard.is_none() {
            let open = self.create_file()?;
            tracing::debug!(path = %open.path.display(), "TensorBoard events file opened");
            bytes.extend_from_slice(&frame_record(&file_version_event(wall_time)));
            *guard = Some(open);
        }
        bytes.extend_from_slice(&frame_record(&scalar_event(wall_time, step, scalars)));
        if let Some(open) = guard.as_mut() {
            open.file
                .write_all(&bytes)
                .and_then(|()| open.file.flush())
                .map_err(|e| TrainError::io(&open.path, e))?;
        }
        Ok(())
    }

    /// Creates the events file: TensorFlow's name, or that name with `.1`, `.2`, ... when a
    /// writer of this process opened it in the same second (never two writers in one file).
    fn create_file(&self) -> Result<OpenFile, TrainError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let name = events_file_name(now().as_secs(), &hostname(), std::process::id());
        let mut suffix = 0u32;
        loop {
            let path = match suffix {
                0 => self.dir.join(&name),
                n => self.dir.join(format!("{name}.{n}")),
            };
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => return Ok(OpenFile { path, file }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && suffix < 1000 => {
                    suffix += 1;
                }
                Err(e) => return Err(TrainError::io(&path, e)),
            }
        }
    }

    /// Appends the scalars of a `metrics.jsonl` record ([`record_scalars`]) at its step.
    pub fn write_record(&self, record: &MetricRecord) -> Result<(), TrainError> {
        self.write_scalars(record.step, &record_scalars(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::Stage;

    #[test]
    fn crc32c_matches_the_standard_test_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 (iSCSI), B.4.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c_extend(crc32c(b"1234"), b"56789"), 0xE306_9283);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
    }

    #[test]
    fn masking_rotates_by_15_and_adds_the_delta() {
        assert_eq!(mask_crc(0), 0xa282_ead8);
        // 1 rotated right by 15 is 1 << 17; bit 15 comes down to bit 0; the sum wraps.
        assert_eq!(mask_crc(1), 0xa284_ead8);
        assert_eq!(mask_crc(0x8000), 0xa282_ead9);
        assert_eq!(mask_crc(0xFFFF_FFFF), 0xa282_ead7);
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, worked out by hand.
        assert_eq!(mask_crc(0xE306_9283), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn varints_and_keys_follow_the_protobuf_encoding() {
        let varint = |v: u64| {
            let mut out = Vec::new();
            proto::put_varint(&mut out, v);
            out
        };
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::MAX).len(), 10);
        let mut out = Vec::new();
        proto::put_key(&mut out, 5, proto::LEN);
        assert_eq!(out, [0x2a]);
        let mut out = Vec::new();
        proto::put_float(&mut out, 2, 1.0);
        assert_eq!(out, [0x15, 0x00, 0x00, 0x80, 0x3f]);
    }

    #[test]
    fn a_record_is_framed_with_its_length_and_both_masked_crcs() {
        let data = b"hello";
        let framed = frame_record(data);
        assert_eq!(framed.len(), 8 + 4 + data.len() + 4);
        assert_eq!(&framed[..8], &5u64.to_le_bytes());
        assert_eq!(
            &framed[8..12],
            &masked_crc32c(&5u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&framed[12..17], data);
        assert_eq!(&framed[17..], &masked_crc32c(data).to_le_bytes());
    }

    #[test]
    fn an_event_encodes_wall_time_step_and_tagged_values() {
        let event = scalar_event(2.0, 300, &[Scalar::new("a", 1.0)]);
        let mut expected = vec![0x09];
        expected.extend_from_slice(&2.0f64.to_le_bytes());
        // step 300
        expected.extend_from_slice(&[0x10, 0xac, 0x02]);
        // summary (field 5) { value (field 1) { tag "a", simple_value 1.0 } }
        expected.extend_from_slice(&[0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a']);
        expected.extend_from_slice(&[0x15, 0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(event, expected);
        let header = file_version_event(0.0);
        assert_eq!(header[9], 0x1a);
        assert_eq!(&header[11..], FILE_VERSION.as_bytes());
    }

    #[test]
    fn records_map_to_stage_tags_and_file_names_to_tensorflows() {
        let mut record = MetricRecord {
            stage: Stage::Linear,
            kind: RecordKind::Epoch,
            epoch: 0,
            step: 9,
            loss: 1.0,
            lr: 0.1,
            images_per_second: 50.0,
            val_top1: Some(0.5),
            train_top1: None,
            wall_seconds: 1.0,
        };
        let tags = |r: &MetricRecord| -> Vec<String> {
            record_scalars(r).into_iter().map(|s| s.tag).collect()
        };
        assert_eq!(
            tags(&record),
            [
                "linear/epoch_loss",
                "linear/epoch_lr",
                "linear/epoch_images_per_second",
                "linear/val_top1"
            ]
        );
        record.stage = Stage::Pretrain;
        record.kind = RecordKind::Step;
        record.val_top1 = None;
        assert_eq!(
            tags(&record),
            ["pretrain/loss", "pretrain/lr", "pretrain/images_per_second"]
        );
        assert_eq!(
            events_file_name(1_700_000_000, "my host/1", 42),
            "events.out.tfevents.1700000000.my_host_1.42"
        );
    }
}
