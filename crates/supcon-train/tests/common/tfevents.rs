//! A small reader of TensorBoard event files, independent of the crate's writer: it parses the
//! TFRecord framing, checks both masked CRC-32Cs of every record (with a bitwise CRC, not the
//! writer's table), and decodes the `tensorflow.Event` fields the writer uses, skipping any
//! other field as protobuf readers do. Any malformation panics with the record's index.
//! Included with `#[path = "common/tfevents.rs"] mod tfevents;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One decoded `tensorflow.Event`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// `summary.value[..]` as (tag, simple_value).
    pub values: Vec<(String, f32)>,
}

fn crc32c_bitwise(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb == 1 {
                crc ^= 0x82F6_3B78;
            }
        }
    }
    crc ^ 0xFFFF_FFFF
}

/// TFRecord's masked CRC, written as its documentation gives it.
#[allow(clippy::manual_rotate)]
fn masked(bytes: &[u8]) -> u32 {
    let crc = crc32c_bitwise(bytes);
    ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
}

/// Reads the data of every record of a TFRecord file, checking lengths and masked CRCs.
pub fn read_records(path: &Path) -> Vec<Vec<u8>> {
    read_records_with(path, false)
}

/// [`read_records`], but a truncated last record (a killed writer's) ends the file, as
/// TensorBoard has it.
pub fn read_records_allowing_torn_tail(path: &Path) -> Vec<Vec<u8>> {
    read_records_with(path, true)
}

fn read_records_with(path: &Path, allow_torn_tail: bool) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let index = records.len();
        if allow_torn_tail && bytes.len() - at < 12 {
            break;
        }
        assert!(
            bytes.len() - at >= 12,
            "record {index}: truncated header in {}",
            path.display()
        );
        let length_bytes = &bytes[at..at + 8];
        let length = u64::from_le_bytes(length_bytes.try_into().unwrap()) as usize;
        let length_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(
            length_crc,
            masked(length_bytes),
            "record {index}: length CRC"
        );
        let data_at = at + 12;
        if allow_torn_tail && bytes.len() < data_at + length + 4 {
            break;
        }
        assert!(
            bytes.len() >= data_at + length + 4,
            "record {index}: truncated data in {}",
            path.display()
        );
        let data = &bytes[data_at..data_at + length];
        let data_crc = u32::from_le_bytes(
            bytes[data_at + length..data_at + length + 4]
                .try_into()
                .unwrap(),
        );
        assert_eq!(data_crc, masked(data), "record {index}: data CRC");
        records.push(data.to_vec());
        at = data_at + length + 4;
    }
    records
}

/// A protobuf field: its number and value.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

fn fields(bytes: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(bytes[at - 8..at].try_into().unwrap())
            }
            2 => {
                let len = varint(bytes, &mut at) as usize;
                at += len;
                Field::Bytes(&bytes[at - len..at])
            }
            5 => {
                at += 4;
                Field::Fixed32(bytes[at - 4..at].try_into().unwrap())
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, field));
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 string field")
}

/// Decodes a serialized `tensorflow.Event`.
pub fn decode_event(data: &[u8]) -> Event {
    let mut event = Event::default();
    for (number, field) in fields(data) {
        match (number, field) {
            (1, Field::Fixed64(b)) => event.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => event.step = v as i64,
            (3, Field::Bytes(b)) => event.file_version = Some(text(b)),
            (5, Field::Bytes(summary)) => {
                for (number, value) in fields(summary) {
                    let (1, Field::Bytes(value)) = (number, value) else {
                        continue;
                    };
                    let mut tag = None;
                    let mut simple = None;
                    for (number, field) in fields(value) {
                        match (number, field) {
                            (1, Field::Bytes(b)) => tag = Some(text(b)),
                            (2, Field::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                            _ => {}
                        }
                    }
                    event.values.push((
                        tag.expect("a value without a tag"),
                        simple.expect("a value without simple_value"),
                    ));
                }
            }
            _ => {}
        }
    }
    event
}

/// Every event of one file.
pub fn read_events(path: &Path) -> Vec<Event> {
    read_records(path)
        .iter()
        .map(|data| decode_event(data))
        .collect()
}

/// Every complete event of one file whose writer may have been killed mid-record.
pub fn read_events_allowing_torn_tail(path: &Path) -> Vec<Event> {
    read_records_allowing_torn_tail(path)
        .iter()
        .map(|data| decode_event(data))
        .collect()
}

/// The events files of a folder, sorted by name (TensorBoard's reading order).
pub fn events_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    files
}

/// (step, value) of `tag` over `events`, in file order.
pub fn series(events: &[Event], tag: &str) -> Vec<(i64, f32)> {
    events
        .iter()
        .flat_map(|e| {
            e.values
                .iter()
                .filter(|(t, _)| t == tag)
                .map(move |(_, v)| (e.step, *v))
        })
        .collect()
}

/// The curve of `tag` as TensorBoard shows it from `files` read in order: a point preempts the
/// points of its tag at the same or later steps (how a resumed run's events replace those
/// logged after its checkpoint).
pub fn preempted_series(files: &[Vec<Event>], tag: &str) -> Vec<(i64, f32)> {
    let mut curve: Vec<(i64, f32)> = Vec::new();
    for events in files {
        for (step, value) in series(events, tag) {
            while curve.last().is_some_and(|&(last, _)| last >= step) {
                curve.pop();
            }
            curve.push((step, value));
        }
    }
    curve
}
