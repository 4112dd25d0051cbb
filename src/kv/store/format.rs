//! On-disk record format shared by the log and the snapshots: CRC-32C, the record frame and the
//! JSON payloads.
//!
//! Frame: `[u32 LE len][u32 LE crc32c(seq ++ payload)][u64 LE seq][payload]`, where `len` is the
//! payload length and `seq ++ payload` is the 8 little-endian bytes of `seq` followed by the
//! payload. The payload is compact JSON of an [`Entry`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bytes before the payload: length, checksum, sequence number.
pub(super) const HEADER_LEN: usize = 16;

/// Continues a CRC-32C (Castagnoli) over `bytes`; start with `crc = 0`. The `crc32c` crate
/// uses the CPU's CRC instructions where there are some.
pub(super) fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// CRC-32C of `bytes`.
pub(super) fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    crc32c_update(crc32c(&seq.to_le_bytes()), payload)
}

/// One record payload. The log holds only `Set` and `Delete`; a snapshot is `Begin`, one `Set`
/// per item (each group's items in list order) and `End`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Entry {
    Set {
        stream: String,
        group: String,
        item: String,
        value: Value,
    },
    Delete {
        stream: String,
        group: String,
        item: String,
    },
    Begin {
        seq: u64,
    },
    End {
        items: u64,
    },
}

impl Entry {
    /// The `op` tag, for messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Entry::Set { .. } => "set",
            Entry::Delete { .. } => "delete",
            Entry::Begin { .. } => "begin",
            Entry::End { .. } => "end",
        }
    }
}

/// Borrowed form of [`Entry`] for writing without copying values.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum EntryRef<'a> {
    Set {
        stream: &'a str,
        group: &'a str,
        item: &'a str,
        value: &'a Value,
    },
    Delete {
        stream: &'a str,
        group: &'a str,
        item: &'a str,
    },
    Begin {
        seq: u64,
    },
    End {
        items: u64,
    },
}

/// Frames `entry` as record `seq`. Fails only when the payload does not fit the u32 length.
pub(super) fn encode(seq: u64, entry: &EntryRef<'_>) -> Result<Vec<u8>, EncodeError> {
    let payload = serde_json::to_vec(entry).map_err(EncodeError::Json)?;
    let len = u32::try_from(payload.len()).map_err(|_| EncodeError::TooLarge(payload.len()))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&record_crc(seq, &payload).to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Why a record could not be framed.
#[derive(Debug)]
pub(super) enum EncodeError {
    Json(serde_json::Error),
    TooLarge(usize),
}

/// A well-formed record found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Record<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    /// Offset just past the record.
    pub end: usize,
}

/// What is at one offset of a buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Frame<'a> {
    Record(Record<'a>),
    /// The header or the payload runs past the end of the buffer.
    Incomplete,
    /// The checksum does not match.
    BadChecksum,
}

impl Frame<'_> {
    /// Why this is not a record, for messages.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Frame::Record(_) => "valid record",
            Frame::Incomplete => "record runs past the end of the file",
            Frame::BadChecksum => "checksum mismatch",
        }
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

/// Header fields at `pos`, when a whole header and the payload it announces fit in `buf`.
fn header_at(buf: &[u8], pos: usize) -> Option<(usize, u32, u64)> {
    let rest = buf.get(pos..)?;
    if rest.len() < HEADER_LEN {
        return None;
    }
    let len = le_u32(rest) as usize;
    if rest.len() - HEADER_LEN < len {
        return None;
    }
    Some((len, le_u32(&rest[4..]), le_u64(&rest[8..])))
}

/// Decodes the record starting at `pos`.
pub(super) fn decode_at(buf: &[u8], pos: usize) -> Frame<'_> {
    let Some((len, crc, seq)) = header_at(buf, pos) else {
        return Frame::Incomplete;
    };
    let start = pos + HEADER_LEN;
    let payload = &buf[start..start + len];
    if record_crc(seq, payload) != crc {
        return Frame::BadChecksum;
    }
    Frame::Record(Record {
        seq,
        payload,
        end: start + len,
    })
}

/// The first offset after `from` holding a valid record whose sequence number is above `floor`
/// and plausible for the bytes left (at most one record per header's worth of bytes). Payloads
/// are JSON text, which never contains the zero bytes a small length or sequence number needs,
/// so record-shaped bytes inside a payload are not mistaken for a record.
pub(super) fn find_record_after(buf: &[u8], from: usize, floor: u64) -> Option<usize> {
    let last_start = buf.len().checked_sub(HEADER_LEN)?;
    (from..=last_start).find(|&pos| {
        let Some((len, _, seq)) = header_at(buf, pos) else {
            return false;
        };
        let ceiling = floor.saturating_add((buf.len() - pos) as u64);
        let plausible = seq > floor && seq <= ceiling && buf.get(pos + HEADER_LEN) == Some(&b'{');
        plausible && len > 0 && matches!(decode_at(buf, pos), Frame::Record(_))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crc32c_known_answers() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        let split = crc32c_update(crc32c(b"1234"), b"56789");
        assert_eq!(split, 0xE306_9283);
    }

    #[test]
    fn frame_round_trip() {
        let value = json!({"a": [1, "x"]});
        let entry = EntryRef::Set {
            stream: "s",
            group: "g",
            item: "i",
            value: &value,
        };
        let frame = encode(7, &entry).expect("encode");
        assert_eq!(le_u32(&frame) as usize, frame.len() - HEADER_LEN);
        let Frame::Record(record) = decode_at(&frame, 0) else {
            panic!("not a record");
        };
        assert_eq!(record.seq, 7);
        assert_eq!(record.end, frame.len());
        let parsed: Entry = serde_json::from_slice(record.payload).expect("payload");
        assert_eq!(
            parsed,
            Entry::Set {
                stream: "s".into(),
                group: "g".into(),
                item: "i".into(),
                value
            }
        );
        assert_eq!(decode_at(&frame[..frame.len() - 1], 0), Frame::Incomplete);
        assert_eq!(decode_at(&frame[..5], 0), Frame::Incomplete);
        let mut flipped = frame.clone();
        flipped[9] ^= 1; // inside seq: covered by the checksum
        assert_eq!(decode_at(&flipped, 0), Frame::BadChecksum);
    }

    #[test]
    fn finds_the_next_record_after_damage() {
        let one = encode(1, &EntryRef::End { items: 0 }).expect("encode");
        let two = encode(2, &EntryRef::End { items: 1 }).expect("encode");
        let mut buf = one.clone();
        buf.extend_from_slice(&two);
        buf[3] ^= 0x40; // length of the first record now runs past the end
        assert_eq!(decode_at(&buf, 0), Frame::Incomplete);
        assert_eq!(find_record_after(&buf, 1, 0), Some(one.len()));
        assert_eq!(
            find_record_after(&buf, 1, 2),
            None,
            "seq must be above floor"
        );
        assert_eq!(find_record_after(&buf[..one.len() + 3], 1, 0), None);
    }
}
