//! Where an event lives: `<prefix>dt=YYYY-MM-DD/<id>.jsonl`. The layout is written and read here
//! only; the S3 archive, the local segments and both compactors call these.

use std::fmt;

use sha2::{Digest, Sha256};
use time::Date;
use time::macros::format_description;

/// The suffix of a per-event key, and of a local segment.
pub const LINES_SUFFIX: &str = ".jsonl";
/// What starts a partition's name.
const PARTITION_PREFIX: &str = "dt=";
const HEX_DIGITS: usize = 32;

/// An event's id: the first 16 bytes of a SHA-256 of its compacted JSON. A resend, pretty-printed
/// or not, gets the same id, so it names the event's key and ends its stored line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id([u8; 16]);

impl Id {
    /// The id of an event whose compacted JSON is `compact`.
    pub fn of(compact: &[u8]) -> Id {
        Id(Sha256::digest(compact)[..16].try_into().expect("SHA-256 is 32 bytes"))
    }

    /// The id that 32 lowercase hex digits spell, as in a key's file name. Nothing else parses.
    pub fn parse_hex(text: &[u8]) -> Option<Id> {
        fn digit(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        if text.len() != HEX_DIGITS {
            return None;
        }
        let mut id = [0; 16];
        for (byte, pair) in id.iter_mut().zip(text.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Id(id))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Id {
        Id(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// The 32 lowercase hex digits that name the key and end the line.
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

/// One event's key: `<prefix>dt=<date>/<id>.jsonl`. `prefix` is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub prefix: String,
    pub date: Date,
    pub id: Id,
}

impl Key {
    pub fn new(prefix: impl Into<String>, date: Date, id: Id) -> Key {
        Key { prefix: prefix.into(), date, id }
    }

    /// The key as S3 stores it.
    pub fn format(&self) -> String {
        format!("{}{}/{}{LINES_SUFFIX}", self.prefix, partition_name(self.date), self.id)
    }

    /// The key `text` names under `prefix`, if it is a per-event key there.
    pub fn parse(prefix: &str, text: &str) -> Option<Key> {
        let (partition, name) = text.strip_prefix(prefix)?.split_once('/')?;
        Some(Key { prefix: prefix.to_owned(), date: parse_partition(partition)?, id: event_file_id(name)? })
    }

    /// The partition's name, `dt=YYYY-MM-DD`: a directory locally, a prefix level in S3.
    pub fn partition(&self) -> String {
        partition_name(self.date)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

/// `dt=YYYY-MM-DD`.
pub fn partition_name(date: Date) -> String {
    format!("{PARTITION_PREFIX}{date}")
}

/// The date a partition's name gives: `dt=YYYY-MM-DD`, with or without the `/` of a prefix.
/// Strict: anything else, `dt=2026-11` or `year=2026` or a `lost+found`, is not a partition.
pub fn parse_partition(name: &str) -> Option<Date> {
    let date = name.strip_suffix('/').unwrap_or(name).strip_prefix(PARTITION_PREFIX)?;
    Date::parse(date, format_description!("[year]-[month]-[day]")).ok()
}

/// The id a per-event file name spells: `<32 hex digits>.jsonl`, and nothing else.
pub fn event_file_id(name: &str) -> Option<Id> {
    Id::parse_hex(name.strip_suffix(LINES_SUFFIX)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_key_formats_and_parses_back() {
        let id = Id::of(b"{}");
        let key = Key::new("mail/", date!(2026 - 11 - 26), id);
        let text = key.format();
        assert_eq!(text, format!("mail/dt=2026-11-26/{id}.jsonl"));
        assert_eq!(text.len(), "mail/dt=2026-11-26/".len() + 32 + ".jsonl".len());
        assert_eq!(Key::parse("mail/", &text), Some(key.clone()));
        assert_eq!(Key::parse("", &text), None, "the prefix is no partition");
        assert_eq!(Key::parse("mail/", &text.replace(".jsonl", ".jsonl.gz")), None);
        assert_eq!(key.partition(), "dt=2026-11-26");
    }

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        let id = Id::of(b"x");
        assert_eq!(Id::parse_hex(id.to_string().as_bytes()), Some(id));
        assert_eq!(Id::parse_hex(b"0123"), None);
        assert_eq!(Id::parse_hex(&[b'A'; 32]), None);
        assert_eq!(Id::parse_hex(&[b'g'; 32]), None);
    }

    #[test]
    fn names_are_read_strictly() {
        assert_eq!(parse_partition("dt=2026-11-26/"), Some(date!(2026 - 11 - 26)));
        assert_eq!(parse_partition("dt=2026-11-26"), Some(date!(2026 - 11 - 26)));
        assert_eq!(parse_partition("dt=2026-11"), None);
        assert_eq!(parse_partition("dt=2026-02-30"), None);
        assert_eq!(parse_partition("year=2026"), None);
        assert_eq!(parse_partition("lost+found"), None);
        assert_eq!(parse_partition("mail/dt=2026-11-26"), None, "a prefix is the caller's to strip");
        assert!(event_file_id("0123456789abcdef0123456789abcdef.jsonl").is_some());
        assert!(event_file_id("0123456789abcdef0123456789abcdef.jsonl.gz").is_none());
        assert!(event_file_id("merged-0123456789abcdef0123456789abcdef.jsonl").is_none());
    }
}
