//! Every name mailhook gives what it stores, formatted and parsed side by side, here only:
//! - an event's `Id`, and the archive's `Prefix` (empty, or ending with `/`);
//! - a per-event key, `<prefix>dt=YYYY-MM-DD/<id>.jsonl` (`Key`), and its partition, `dt=YYYY-MM-DD`;
//! - on S3: a merged object, `<prefix>dt=YYYY-MM-DD/merged-<hash>.jsonl.gz`, and the compaction
//!   lease, `<prefix>_compaction.lease`;
//! - in a local directory: a segment, `dt=YYYY-MM-DD/<YYYYMMDDTHHMMSS.mmmZ>-<counter>.jsonl`, its
//!   hidden companions (`.live`, `.snap`, `.clean`, `.quarantined`), and the lock file.

use std::fmt;

use sha2::{Digest, Sha256};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// The suffix of a per-event key, and of a local segment.
pub const LINES_SUFFIX: &str = ".jsonl";
/// What starts a partition's name.
const PARTITION_PREFIX: &str = "dt=";
const HEX_DIGITS: usize = 32;
/// What starts a merged object's name: after every per-event key (hex digits) in a listing.
const MERGED_PREFIX: &str = "merged-";
const MERGED_SUFFIX: &str = ".jsonl.gz";
/// The lease's key under the archive's prefix: no `dt=` partition, and no `.jsonl` for readers.
pub const LEASE_NAME: &str = "_compaction.lease";

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

/// Where an archive's keys start in its bucket: empty, or text that ends with `/` and does not
/// start with one. `Prefix::new` makes any text so, and nothing else makes a `Prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// `text` as a prefix: leading `/`s dropped, and a `/` added unless it is empty or has one.
    pub fn new(text: &str) -> Prefix {
        let text = text.trim_start_matches('/');
        if text.is_empty() || text.ends_with('/') { Prefix(text.to_owned()) } else { Prefix(format!("{text}/")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A partition's prefix in S3: `<prefix>dt=YYYY-MM-DD/`.
    pub fn partition(&self, date: Date) -> String {
        format!("{}{}/", self.0, partition_name(date))
    }

    /// The date of a partition's prefix, as a listing with the delimiter `/` gives it.
    pub fn parse_partition(&self, text: &str) -> Option<Date> {
        parse_partition(text.strip_prefix(self.as_str())?)
    }

    /// What every merged object's key in a partition starts with, to list them.
    pub fn merged_in(&self, date: Date) -> String {
        format!("{}{MERGED_PREFIX}", self.partition(date))
    }

    /// A merged object's key: `<prefix>dt=YYYY-MM-DD/merged-<hash>.jsonl.gz`, `hash` naming the
    /// ids in it.
    pub fn merged(&self, date: Date, hash: Id) -> String {
        format!("{}{hash}{MERGED_SUFFIX}", self.merged_in(date))
    }

    /// The compaction lease's key: `<prefix>_compaction.lease`.
    pub fn lease(&self) -> String {
        format!("{}{LEASE_NAME}", self.0)
    }
}

impl From<&str> for Prefix {
    fn from(text: &str) -> Prefix {
        Prefix::new(text)
    }
}

impl From<&Prefix> for Prefix {
    fn from(prefix: &Prefix) -> Prefix {
        prefix.clone()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a key listed under `Prefix::merged_in` is a merged object: it ends `.jsonl.gz`.
pub fn is_merged(key: &str) -> bool {
    key.ends_with(MERGED_SUFFIX)
}

/// One event's key: `<prefix>dt=<date>/<id>.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub prefix: Prefix,
    pub date: Date,
    pub id: Id,
}

impl Key {
    pub fn new(prefix: impl Into<Prefix>, date: Date, id: Id) -> Key {
        Key { prefix: prefix.into(), date, id }
    }

    /// The key as S3 stores it.
    pub fn format(&self) -> String {
        format!("{}{}{LINES_SUFFIX}", self.prefix.partition(self.date), self.id)
    }

    /// The key `text` names under `prefix`, if it is a per-event key there.
    pub fn parse(prefix: &Prefix, text: &str) -> Option<Key> {
        let (partition, name) = text.strip_prefix(prefix.as_str())?.split_once('/')?;
        Some(Key { prefix: prefix.clone(), date: parse_partition(partition)?, id: event_file_id(name)? })
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
    parse_date(date)
}

/// `YYYY-MM-DD`, as a partition, a `--through` flag or the lease names a day.
pub fn parse_date(text: &str) -> Option<Date> {
    Date::parse(text.trim(), format_description!("[year]-[month]-[day]")).ok()
}

/// The id a per-event file name spells: `<32 hex digits>.jsonl`, and nothing else.
pub fn event_file_id(name: &str) -> Option<Id> {
    Id::parse_hex(name.strip_suffix(LINES_SUFFIX)?.as_bytes())
}

/// The local archive's files in a partition directory (and its lock at the root).
pub mod segment {
    use super::{Id, LINES_SUFFIX, OffsetDateTime};

    /// Held while a process writes the directory, so two cannot append to the same segments.
    pub const LOCK_FILE: &str = ".mailhook.lock";
    const LIVE_SUFFIX: &str = ".live";
    const SNAPSHOT_SUFFIX: &str = ".snap";
    /// A sealed segment's lines that verify, written while what does not is moved out of it.
    const CLEAN_SUFFIX: &str = ".clean";
    /// What was moved out of a sealed segment because it does not verify: hidden, and with no
    /// `.jsonl` in its name, so no reader's glob meets it; never removed by mailhook.
    const QUARANTINE_SUFFIX: &str = ".quarantined";
    /// What the first segment version called them; a start after an upgrade seals and removes these too.
    const OLD_LIVE_SUFFIX: &str = ".jsonl.live";
    const OLD_SNAPSHOT_SUFFIX: &str = ".jsonl.snap";

    /// The stamp of a start's segment names: its start's UTC time, `YYYYMMDDTHHMMSS.mmmZ`, so
    /// names sort by age and a new start never appends to an old segment.
    pub fn stamp(now: OffsetDateTime) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        )
    }

    /// The `n`th segment name of a start: `<stamp>-<n, at least 4 digits>`.
    pub fn name(stamp: &str, n: u32) -> String {
        format!("{stamp}-{n:04}")
    }

    /// Whether `stem` (a `.jsonl` file's name without it) names a segment mailhook made:
    /// `YYYYMMDDTHHMMSS.mmmZ-<counter>`, as `stamp` and `name` make them.
    pub fn is_segment(stem: &str) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let Some((run, counter)) = stem.split_once('-') else { return false };
        let (date, time) = run.split_at_checked(8).unwrap_or_default();
        digits(date)
            && digits(counter)
            && time
                .strip_prefix('T')
                .and_then(|t| t.strip_suffix('Z'))
                .and_then(|t| t.split_once('.'))
                .is_some_and(|(hms, ms)| hms.len() == 6 && ms.len() == 3 && digits(hms) && digits(ms))
    }

    /// The visible file of segment `name`: `<name>.jsonl`, the only files readers glob.
    pub fn sealed(name: &str) -> String {
        format!("{name}{LINES_SUFFIX}")
    }

    /// The live segment being appended to: `.<name>.live`. No `.jsonl` in it, so a reader's glob
    /// (`*.jsonl*`, which matches hidden files too in DuckDB) never picks up its zeros ahead.
    pub fn live(name: &str) -> String {
        format!(".{name}{LIVE_SUFFIX}")
    }

    /// The copy of a live segment's durable lines, renamed over `<name>.jsonl` to publish them.
    pub fn snapshot(name: &str) -> String {
        format!(".{name}{SNAPSHOT_SUFFIX}")
    }

    /// A sealed segment's verified lines, renamed over it once synced.
    pub fn clean(name: &str) -> String {
        format!(".{name}{CLEAN_SUFFIX}")
    }

    /// Where what does not verify in segment `name` goes, named by what it holds.
    pub fn quarantined(name: &str, holds: Id) -> String {
        format!(".{name}.{holds}{QUARANTINE_SUFFIX}")
    }

    /// What a file in a partition directory is to recovery, by its name.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Leftover<'a> {
        /// A live segment (of this version or the first), to seal as `sealed(name)`.
        Live(&'a str),
        /// A snapshot or a clean copy: a copy of what is elsewhere, to remove.
        Copy,
        /// Anything else: a sealed segment, a quarantine, a user's file.
        Other,
    }

    /// Reads a file name in a partition directory as recovery sees it.
    pub fn leftover(file_name: &str) -> Leftover<'_> {
        let Some(hidden) = file_name.strip_prefix('.') else { return Leftover::Other };
        if [SNAPSHOT_SUFFIX, OLD_SNAPSHOT_SUFFIX, CLEAN_SUFFIX].iter().any(|s| hidden.ends_with(s)) {
            Leftover::Copy
        } else if let Some(name) = hidden.strip_suffix(OLD_LIVE_SUFFIX).or_else(|| hidden.strip_suffix(LIVE_SUFFIX)) {
            Leftover::Live(name)
        } else {
            Leftover::Other
        }
    }
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
        let mail = Prefix::new("mail");
        assert_eq!(Key::parse(&mail, &text), Some(key.clone()));
        assert_eq!(Key::parse(&Prefix::default(), &text), None, "the prefix is no partition");
        assert_eq!(Key::parse(&mail, &text.replace(".jsonl", ".jsonl.gz")), None);
        assert_eq!(key.partition(), "dt=2026-11-26");
    }

    #[test]
    fn a_prefix_is_empty_or_ends_with_a_slash() {
        for (text, prefix) in [("", ""), ("/", ""), ("mail", "mail/"), ("/mail/", "mail/"), ("a/b", "a/b/")] {
            assert_eq!(Prefix::new(text).as_str(), prefix, "{text:?}");
        }
        let mail = Prefix::new("mail/");
        let day = date!(2026 - 11 - 26);
        assert_eq!(mail.partition(day), "mail/dt=2026-11-26/");
        assert_eq!(mail.parse_partition("mail/dt=2026-11-26/"), Some(day));
        assert_eq!(mail.parse_partition("other/dt=2026-11-26/"), None);
        assert_eq!(mail.lease(), "mail/_compaction.lease");
        assert_eq!(Prefix::default().lease(), "_compaction.lease");
    }

    #[test]
    fn merged_objects_sort_after_every_per_event_key_of_their_partition() {
        let mail = Prefix::new("mail/");
        let day = date!(2026 - 11 - 26);
        let merged = mail.merged(day, Id::from_bytes([0xff; 16]));
        assert_eq!(merged, format!("mail/dt=2026-11-26/merged-{}.jsonl.gz", "ff".repeat(16)));
        assert!(merged.starts_with(&mail.merged_in(day)) && is_merged(&merged));
        assert!(Key::new(mail.clone(), day, Id::from_bytes([0xff; 16])).format() < merged);
        assert!(!is_merged(&Key::new(mail, day, Id::of(b"x")).format()));
    }

    #[test]
    fn segment_names_format_and_parse() {
        use segment::*;
        let stamp = stamp(time::macros::datetime!(2026-11-26 12:00:01.002 UTC));
        assert_eq!(stamp, "20261126T120001.002Z");
        let first = name(&stamp, 1);
        assert_eq!(first, "20261126T120001.002Z-0001");
        assert!(is_segment(&first) && is_segment(&name(&stamp, 12345)));
        assert_eq!(sealed(&first), "20261126T120001.002Z-0001.jsonl");
        assert_eq!(leftover(&live(&first)), Leftover::Live(&first));
        assert_eq!(leftover(&format!(".{first}.jsonl.live")), Leftover::Live(&first), "the first version's");
        assert_eq!(leftover(&snapshot(&first)), Leftover::Copy);
        assert_eq!(leftover(&format!(".{first}.jsonl.snap")), Leftover::Copy);
        assert_eq!(leftover(&clean(&first)), Leftover::Copy);
        assert_eq!(leftover(&quarantined(&first, Id::of(b"x"))), Leftover::Other);
        assert_eq!(leftover(&sealed(&first)), Leftover::Other);
        for foreign in ["notes", "20261126T120001.002Z", "20261126-0001", "20261126T1200.002Z-0001"] {
            assert!(!is_segment(foreign), "{foreign}");
        }
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
