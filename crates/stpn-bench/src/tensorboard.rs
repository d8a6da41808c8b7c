//! TensorBoard event files: the rows of a run's `metrics.csv` as scalars, so that
//! `tensorboard --logdir runs/` plots every run.
//!
//! An event file is a sequence of TFRecords, each one a `tensorflow.Event` protobuf
//! (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto), encoded here by
//! hand: the few fields written are not worth a protobuf dependency.
//!
//! The fields written, by number (as in TensorBoard 2.21's compiled protos): `Event` `wall_time`
//! 1 (double), `step` 2 (int64), `file_version` 3 (string), `summary` 5, `session_log` 7;
//! `Summary` `value` 1 (repeated); `Summary.Value` `tag` 1 (string), `simple_value` 2 (float);
//! `SessionLog` `status` 1 (`START` = 1).
//!
//! TFRecord framing: the data's length as a little-endian u64, the masked CRC32C of those 8
//! bytes, the data, the masked CRC32C of the data (both CRCs little-endian u32).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// What the first event of a file says it holds; TensorBoard reads version 2 files with the
/// `SessionLog` restart semantics (a `START` event drops the steps from its own on).
const FILE_VERSION: &str = "brain.Event:2";

/// An open event file that scalars are appended to, one event per call.
pub struct EventWriter {
    path: PathBuf,
    file: fs::File,
}

impl EventWriter {
    /// Creates a new event file in `folder`, named by TensorBoard's convention
    /// `events.out.tfevents.<unix seconds>.<host>` (with `.1`, `.2`, … when that name is taken:
    /// a run resumed within the same second), and writes its version event and a restart marker
    /// at `first_step`: TensorBoard then drops the steps from `first_step` on that earlier files
    /// of the folder hold (rows of an interrupted run whose checkpoint never landed).
    pub fn create(folder: &Path, first_step: i64) -> Result<Self> {
        let wall_time = unix_seconds();
        let base = format!(
            "events.out.tfevents.{}.{}",
            wall_time.floor() as u64,
            hostname()
        );
        let mut suffix = 0;
        let (path, file) = loop {
            let name = match suffix {
                0 => base.clone(),
                n => format!("{base}.{n}"),
            };
            let path = folder.join(name);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => break (path, file),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => suffix += 1,
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        };
        let writer = Self { path, file };
        let mut version = event_header(wall_time, 0);
        put_bytes(&mut version, 3, FILE_VERSION.as_bytes());
        let mut restart = event_header(wall_time, first_step);
        // Event field 7 `session_log` = SessionLog { field 1 `status` = START (1) }.
        put_bytes(&mut restart, 7, &[0x08, 0x01]);
        writer.write_records(&[version, restart])?;
        Ok(writer)
    }

    /// The file's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event at `step` with one scalar per `(tag, value)`, and syncs it to disk, so
    /// that a run killed afterwards leaves a complete file.
    pub fn write_scalars<'a>(
        &self,
        step: i64,
        scalars: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut summary_value = Vec::new();
            put_bytes(&mut summary_value, 1, tag.as_bytes());
            // simple_value: field 2, wire type 5 (32-bit).
            summary_value.push(2 << 3 | 5);
            summary_value.extend_from_slice(&value.to_le_bytes());
            put_bytes(&mut summary, 1, &summary_value);
        }
        let mut event = event_header(unix_seconds(), step);
        put_bytes(&mut event, 5, &summary);
        self.write_records(&[event])
    }

    /// Writes `events` framed as TFRecords in one write, then syncs.
    fn write_records(&self, events: &[Vec<u8>]) -> Result<()> {
        let mut bytes = Vec::new();
        for data in events {
            let length = (data.len() as u64).to_le_bytes();
            bytes.extend_from_slice(&length);
            bytes.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
            bytes.extend_from_slice(data);
            bytes.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        }
        (&self.file)
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The fields every event starts with: `wall_time` (1, double) and `step` (2, int64).
fn event_header(wall_time: f64, step: i64) -> Vec<u8> {
    let mut event = vec![1 << 3 | 1];
    event.extend_from_slice(&wall_time.to_le_bytes());
    event.push(2 << 3);
    put_varint(&mut event, step as u64);
    event
}

/// A length-delimited field (wire type 2): strings, bytes and nested messages.
fn put_bytes(message: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(message, field << 3 | 2);
    put_varint(message, bytes.len() as u64);
    message.extend_from_slice(bytes);
}

fn put_varint(message: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        message.push(value as u8 | 0x80);
        value >>= 7;
    }
    message.push(value as u8);
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) masked as TFRecord stores it, so that
/// the CRC of data that holds CRCs stays well distributed.
fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut crc = index as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[index] = crc;
            index += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ byte as u32) & 0xFF) as usize] ^ (crc >> 8)
    })
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0)
}

/// The machine's name for the file name (characters safe in a file name only), or `localhost`.
fn hostname() -> String {
    let name: String = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// A reader of event files for the tests: every record's framing and both CRCs checked, the
/// events decoded, and the folder's scalars as TensorBoard shows them.
#[cfg(test)]
pub mod test_reader {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::masked_crc32c;

    /// The fields of one event that the writer sets.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Event {
        pub wall_time: f64,
        pub step: i64,
        pub file_version: Option<String>,
        /// `SessionLog.status` (1: START).
        pub session_status: Option<u64>,
        pub scalars: Vec<(String, f32)>,
    }

    /// The events of one file, in order; panics on bad framing, a CRC mismatch or an unknown
    /// field.
    pub fn read_events(path: &Path) -> Vec<Event> {
        let bytes = std::fs::read(path).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let length_bytes = &bytes[at..at + 8];
            let length = u64::from_le_bytes(length_bytes.try_into().unwrap()) as usize;
            assert_eq!(
                u32_at(&bytes, at + 8),
                masked_crc32c(length_bytes),
                "length CRC"
            );
            let data = &bytes[at + 12..at + 12 + length];
            assert_eq!(
                u32_at(&bytes, at + 12 + length),
                masked_crc32c(data),
                "data CRC"
            );
            events.push(decode_event(data));
            at += 12 + length + 4;
        }
        events
    }

    /// The event files of `folder`, in TensorBoard's order (by name).
    pub fn event_files(folder: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("events.out.tfevents.")
            })
            .collect();
        files.sort();
        files
    }

    /// Every scalar of `folder`'s event files by tag, as `(step, value)` in the order
    /// TensorBoard keeps them: a `START` session log drops the steps from its own on.
    pub fn scalars(folder: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
        let mut series: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
        for file in event_files(folder) {
            for event in read_events(&file) {
                if event.session_status == Some(1) {
                    for points in series.values_mut() {
                        points.retain(|&(step, _)| step < event.step);
                    }
                }
                for (tag, value) in event.scalars {
                    series.entry(tag).or_default().push((event.step, value));
                }
            }
        }
        series
    }

    /// `metrics.csv`'s rows as the same series: step = first column, one per other column.
    pub fn csv_scalars(folder: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
        let text = std::fs::read_to_string(folder.join("metrics.csv")).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let mut series: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            let step = cells[0].parse().unwrap();
            for (tag, cell) in header.iter().zip(&cells).skip(1) {
                if let Ok(value) = cell.parse::<f32>() {
                    series
                        .entry(tag.to_string())
                        .or_default()
                        .push((step, value));
                }
            }
        }
        series
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// One protobuf field: its number and its value (a varint, fixed bytes or a length-delimited
    /// payload).
    enum Field<'a> {
        Varint(u64),
        Fixed(&'a [u8]),
        Bytes(&'a [u8]),
    }

    fn fields(mut message: &[u8]) -> Vec<(u64, Field<'_>)> {
        fn varint(message: &mut &[u8]) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let byte = message[0];
                *message = &message[1..];
                value |= ((byte & 0x7F) as u64) << shift;
                if byte < 0x80 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut fields = Vec::new();
        while !message.is_empty() {
            let key = varint(&mut message);
            let field = match key & 7 {
                0 => Field::Varint(varint(&mut message)),
                1 | 5 => {
                    let width = if key & 7 == 1 { 8 } else { 4 };
                    let (value, rest) = message.split_at(width);
                    message = rest;
                    Field::Fixed(value)
                }
                2 => {
                    let length = varint(&mut message) as usize;
                    let (value, rest) = message.split_at(length);
                    message = rest;
                    Field::Bytes(value)
                }
                wire => panic!("unexpected wire type {wire}"),
            };
            fields.push((key >> 3, field));
        }
        fields
    }

    fn decode_event(data: &[u8]) -> Event {
        let mut event = Event::default();
        for (number, field) in fields(data) {
            match (number, field) {
                (1, Field::Fixed(bytes)) => {
                    event.wall_time = f64::from_le_bytes(bytes.try_into().unwrap())
                }
                (2, Field::Varint(step)) => event.step = step as i64,
                (3, Field::Bytes(text)) => {
                    event.file_version = Some(String::from_utf8(text.to_vec()).unwrap())
                }
                (5, Field::Bytes(summary)) => {
                    for (number, value) in fields(summary) {
                        let (1, Field::Bytes(value)) = (number, value) else {
                            panic!("unexpected Summary field {number}");
                        };
                        let (mut tag, mut scalar) = (None, None);
                        for (number, field) in fields(value) {
                            match (number, field) {
                                (1, Field::Bytes(text)) => {
                                    tag = Some(String::from_utf8(text.to_vec()).unwrap())
                                }
                                (2, Field::Fixed(bytes)) => {
                                    scalar = Some(f32::from_le_bytes(bytes.try_into().unwrap()))
                                }
                                (number, _) => panic!("unexpected Summary.Value field {number}"),
                            }
                        }
                        event.scalars.push((tag.unwrap(), scalar.unwrap()));
                    }
                }
                (7, Field::Bytes(session_log)) => {
                    for (number, field) in fields(session_log) {
                        if let (1, Field::Varint(status)) = (number, field) {
                            event.session_status = Some(status);
                        }
                    }
                }
                (number, _) => panic!("unexpected Event field {number}"),
            }
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::test_reader::{event_files, read_events, scalars};
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path = crate::test_support::scratch("tensorboard", name);
        fs::create_dir_all(&path).unwrap();
        path
    }

    /// The CRC32C check value of the standard test string, and TFRecord's mask of it.
    #[test]
    fn tensorboard_crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let crc = 0xE306_9283u32;
        assert_eq!(
            masked_crc32c(b"123456789"),
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
    }

    /// Written events read back with their framing, CRCs, version, steps, tags and values.
    #[test]
    fn tensorboard_events_read_back() {
        let folder = scratch("read-back");
        let before = unix_seconds();
        let writer = EventWriter::create(&folder, 1).unwrap();
        writer
            .write_scalars(1, [("loss", 0.5), ("acc", 0.25)])
            .unwrap();
        // A step beyond a single varint byte, negative and non-finite values.
        writer
            .write_scalars(300, [("loss", -1.5e-3), ("acc", f32::INFINITY)])
            .unwrap();
        let name = writer.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("events.out.tfevents."), "{name}");

        let events = read_events(writer.path());
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!((events[1].session_status, events[1].step), (Some(1), 1));
        assert_eq!(events[2].step, 1);
        assert_eq!(
            events[2].scalars,
            vec![("loss".to_string(), 0.5), ("acc".to_string(), 0.25)]
        );
        assert_eq!(events[3].step, 300);
        assert_eq!(
            events[3].scalars,
            vec![
                ("loss".to_string(), -1.5e-3),
                ("acc".to_string(), f32::INFINITY)
            ]
        );
        assert!(events.iter().all(|event| event.wall_time >= before.floor()));
        fs::remove_dir_all(&folder).ok();
    }

    /// A second file in the same second gets its own name, sorted after the first; its restart
    /// marker drops the first file's steps from its own on.
    #[test]
    fn tensorboard_second_file_restarts_at_its_first_step() {
        let folder = scratch("restart");
        let first = EventWriter::create(&folder, 1).unwrap();
        for step in 1..=3 {
            first.write_scalars(step, [("x", step as f32)]).unwrap();
        }
        let second = EventWriter::create(&folder, 3).unwrap();
        second.write_scalars(3, [("x", 30.0)]).unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(
            event_files(&folder),
            vec![first.path().to_path_buf(), second.path().to_path_buf()]
        );
        assert_eq!(scalars(&folder)["x"], vec![(1, 1.0), (2, 2.0), (3, 30.0)]);
        fs::remove_dir_all(&folder).ok();
    }
}
