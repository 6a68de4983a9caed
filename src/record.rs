//! The stored line and its key: what an accepted event becomes.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::layout::{Id, Key, Prefix};
use crate::webhook::Event;

/// An event time further back than this from the receive time is taken as misread.
const PLAUSIBLE_PAST: Duration = Duration::days(30);
/// An event time further ahead than this from the receive time is taken as misread.
const PLAUSIBLE_FUTURE: Duration = Duration::days(1);

/// What the request says about itself besides its body.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub request_id: String,
    pub ip: Option<String>,
    pub ua: Option<String>,
    pub webhook_id: Option<String>,
}

/// One line, ready to store, and the key it is stored under.
#[derive(Debug, Clone)]
pub struct Record {
    /// `<prefix>dt=YYYY-MM-DD/<content hash>.jsonl`
    pub key: Key,
    /// One JSON object and a trailing newline.
    pub line: Bytes,
    /// The `event` field, for the log, if it looks like an event name (at most 32 letters, digits,
    /// `-` and `_`): whatever else a sender puts there is body content, and stays out of the log.
    pub event: Option<String>,
}

/// The stored line is `{ts, ip, ua, data, webhook_id, request_id, event, mailbox, event_time,
/// flags, id}`: the provider's reference receiver's five fields first, in its order, and last the
/// content hash that also names the event's key. serde writes the fields before and after `data`,
/// and the compacted body goes between them as it is: wrapping it in a `RawValue` would parse the
/// body once more (BENCHMARKS.md, work per event).
#[derive(Serialize)]
struct BeforeData<'a> {
    ts: String,
    ip: Option<&'a str>,
    ua: Option<&'a str>,
}

#[derive(Serialize)]
struct AfterData<'a> {
    webhook_id: Option<&'a str>,
    request_id: &'a str,
    event: Option<&'a str>,
    mailbox: Option<&'a str>,
    event_time: Option<String>,
    flags: Option<Vec<String>>,
    id: &'a str,
}

impl Record {
    /// Builds the line for `event` received at `received`, to be stored under `prefix`.
    pub fn new(event: &Event<'_>, meta: &Meta, received: OffsetDateTime, prefix: impl Into<Prefix>) -> Record {
        let data = compact_json(event.raw);
        let event_time = event.tstamp.and_then(event_time);
        let kind = event.event.and_then(text);
        let mailbox = event.mailbox.and_then(text);

        let id = Id::of(data.as_bytes());
        let key = Key::new(prefix, partition_for(event_time, received), id);
        let id = id.to_string();
        let before = BeforeData { ts: stored_time(received), ip: meta.ip.as_deref(), ua: meta.ua.as_deref() };
        let after = AfterData {
            webhook_id: meta.webhook_id.as_deref(),
            request_id: &meta.request_id,
            event: kind.as_deref(),
            mailbox: mailbox.as_deref(),
            event_time: event_time.map(stored_time),
            flags: event.flags.and_then(flag_list),
            id: &id,
        };
        const SERIALISES: &str = "a struct of strings always serialises";
        let after = serde_json::to_vec(&after).expect(SERIALISES);
        let mut line = Vec::with_capacity(data.len() + after.len() + 128);
        serde_json::to_writer(&mut line, &before).expect(SERIALISES);
        line.pop(); // the closing brace: `data` and the rest follow
        line.extend_from_slice(DATA_FIELD);
        line.extend_from_slice(data.as_bytes());
        line.push(b',');
        line.extend_from_slice(&after[1..]); // after its opening brace
        line.push(b'\n');
        let loggable = |k: &String| k.len() <= 32 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        Record { key, line: Bytes::from(line), event: kind.filter(loggable) }
    }
}

/// The sender's JSON on one line: whitespace outside strings removed, everything else (key
/// order, number text, escapes, unknown fields) byte for byte as sent. `json` must be valid JSON.
pub fn compact_json(json: &str) -> String {
    const WHITESPACE: [u8; 4] = [b' ', b'\t', b'\n', b'\r'];
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut at = 0;
    // Spans are cut only at ASCII bytes, so every slice below falls on a char boundary.
    while at < bytes.len() {
        let start = at;
        if bytes[at] == b'"' {
            // A string, through its closing quote; memchr jumps over the text between escapes.
            at += 1;
            loop {
                match memchr::memchr2(b'"', b'\\', &bytes[at..]) {
                    Some(found) if bytes[at + found] == b'\\' => {
                        // The escaped byte is ASCII in valid JSON; step over it only then.
                        let next = at + found + 1;
                        at = if bytes.get(next).is_some_and(u8::is_ascii) { next + 1 } else { next };
                    }
                    Some(found) => {
                        at += found + 1;
                        break;
                    }
                    None => {
                        at = bytes.len();
                        break;
                    }
                }
            }
        } else if WHITESPACE.contains(&bytes[at]) {
            at += 1;
            continue;
        } else {
            while at < bytes.len() && bytes[at] != b'"' && !WHITESPACE.contains(&bytes[at]) {
                at += 1;
            }
        }
        out.push_str(&json[start..at]);
    }
    out
}

/// What comes before `data` in a line (`ts`, `ip` and `ua` are strings, so this is its first
/// occurrence) and what follows it (the last occurrence: the fields after `data` are strings).
const DATA_FIELD: &[u8] = b",\"data\":";
const AFTER_DATA: &[u8] = b",\"webhook_id\":";
/// The end of every line: `,"id":"<32 hex digits>"}`.
const ID_FIELD: &[u8] = b",\"id\":\"";
const ID_HEX: usize = 32;

/// The id of a stored line (without its newline), if it ends with its id and its `data` hashes
/// to that id. Enough for an object S3 stored whole; a line read back from a local file after a
/// crash needs `verify_whole_line`.
pub fn verify_line(line: &[u8]) -> Option<Id> {
    let body = line.strip_suffix(b"\"}")?;
    let (head, id) = body.split_at_checked(body.len().checked_sub(ID_HEX)?)?;
    let id = Id::parse_hex(id)?;
    let head = head.strip_suffix(ID_FIELD)?;
    let start = memchr::memmem::find(head, DATA_FIELD)? + DATA_FIELD.len();
    let end = memchr::memmem::rfind(head, AFTER_DATA)?;
    (start <= end && Id::of(&head[start..end]) == id).then_some(id)
}

/// As `verify_line`, and the whole line is one JSON object whose top-level `data` is the span
/// that hashes to its id: the check that recovers a local segment after a power loss. A torn
/// write with a hole (a lost block read as zeros, or stale bytes) can join one line's head, or
/// nothing, to another's tail, and the tail alone would pass `verify_line`.
pub fn verify_whole_line(line: &[u8]) -> Option<Id> {
    /// The two fields the check needs; serde rejects a second `data` or `id`.
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
        #[serde(borrow)]
        id: &'a str,
    }
    let id = verify_line(line)?;
    let stored: Stored<'_> = serde_json::from_slice(line).ok()?;
    (Id::parse_hex(stored.id.as_bytes()) == Some(id) && Id::of(stored.data.get().as_bytes()) == id).then_some(id)
}

/// Which partition an event goes to: its own date, so that a resend lands beside the first try;
/// the receive date when the event time is missing or implausible, so no event hides outside
/// the dates users query.
pub fn partition_for(event_time: Option<OffsetDateTime>, received: OffsetDateTime) -> Date {
    let received = received.checked_to_offset(UtcOffset::UTC).unwrap_or(received);
    let plausible = |t: OffsetDateTime| {
        received.checked_sub(PLAUSIBLE_PAST).is_some_and(|earliest| t >= earliest)
            && received.checked_add(PLAUSIBLE_FUTURE).is_none_or(|latest| t <= latest)
    };
    match event_time {
        Some(t) if plausible(t) => t.date(),
        _ => received.date(),
    }
}

/// Reads `tstamp` loosely: a number or numeric string of seconds (fractions allowed) or
/// milliseconds, or an RFC 3339 string, whose UTC time falls in the years 0 to 9999 that RFC 3339
/// can write. `None` when it is none of these: a valid RFC 3339 text whose offset takes it past
/// those years (`9999-12-31T23:59:59-01:00`) is unreadable, not a panic.
pub fn event_time(tstamp: &RawValue) -> Option<OffsetDateTime> {
    read_time(tstamp).and_then(|t| t.checked_to_offset(UtcOffset::UTC)).filter(|t| (0..=9999).contains(&t.year()))
}

fn read_time(tstamp: &RawValue) -> Option<OffsetDateTime> {
    let raw = tstamp.get();
    let text = if raw.starts_with('"') { serde_json::from_str::<String>(raw).ok()? } else { raw.to_owned() };
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let (value, whole) = match text.parse::<i64>() {
        Ok(n) => (n as f64, Some(i128::from(n))),
        Err(_) => (text.parse::<f64>().ok().filter(|v| v.is_finite())?, None),
    };
    // Seconds stay below 1e11 until the year 5138; milliseconds of any date since 1973 are above it.
    let nanos_per_unit: i128 = if value.abs() < 1e11 {
        1_000_000_000
    } else if value.abs() < 1e14 {
        1_000_000
    } else {
        return None;
    };
    // Whole numbers convert exactly; fractions are rounded to the microsecond to drop float noise.
    let nanos = match whole {
        Some(n) => n * nanos_per_unit,
        None => (value * nanos_per_unit as f64 / 1e3).round() as i128 * 1000,
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// `flags` as a list of strings whatever form it came in: an array's items, or an IMAP-style
/// space-separated string split up. Gives Athena and DuckDB one type to query.
fn flag_list(flags: &RawValue) -> Option<Vec<String>> {
    match flags.get().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(flags.get()).ok()?;
            Some(items.into_iter().filter_map(text).collect())
        }
        Some(b'"') => Some(text(flags)?.split_whitespace().map(str::to_owned).collect()),
        _ => text(flags).map(|other| vec![other]),
    }
}

/// A JSON string's text; any other non-null value as its JSON text.
fn text(value: &RawValue) -> Option<String> {
    match value.get() {
        "null" => None,
        raw if raw.starts_with('"') => serde_json::from_str(raw).ok(),
        raw => Some(raw.to_owned()),
    }
}

/// How `ts` and `event_time` are written: RFC 3339 in UTC, always with milliseconds
/// (`2026-11-26T16:46:12.000Z`, finer digits cut off), so that a reader inferring the type from
/// the first lines it sees takes one precision for all of them (docs/querying.md).
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

fn stored_time(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC).format(STORED_TIME).expect("a UTC time between years 0 and 9999 formats")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::parse_body;
    use time::macros::datetime;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn time_of(json: &str) -> Option<String> {
        event_time(&raw(json)).map(stored_time)
    }

    #[test]
    fn tstamp_forms() {
        assert_eq!(time_of("1764175572").as_deref(), Some("2025-11-26T16:46:12.000Z"));
        assert_eq!(time_of("\"1764175572\"").as_deref(), Some("2025-11-26T16:46:12.000Z"));
        assert_eq!(time_of("1764175572123").as_deref(), Some("2025-11-26T16:46:12.123Z"));
        assert_eq!(time_of("\" 1764175572123 \"").as_deref(), Some("2025-11-26T16:46:12.123Z"));
        assert_eq!(time_of("1764175572.5").as_deref(), Some("2025-11-26T16:46:12.500Z"));
        assert_eq!(time_of("\"2025-11-26T18:46:12+02:00\"").as_deref(), Some("2025-11-26T16:46:12.000Z"));
        assert_eq!(time_of("\"2025-11-26T16:46:12.25Z\"").as_deref(), Some("2025-11-26T16:46:12.250Z"));
        for unreadable in [
            "null",
            "true",
            "\"yesterday\"",
            "\"\"",
            "[1]",
            "{}",
            "1e300",
            "12345678901234567",
            "\"2025-11-26 16:46:12\"",
            // Valid RFC 3339 whose UTC time is past the years RFC 3339 can write.
            "\"9999-12-31T23:59:59-01:00\"",
            "\"0000-01-01T00:00:00+00:01\"",
        ] {
            assert_eq!(time_of(unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn stored_times_always_have_milliseconds() {
        // A reader inferring a type from the first lines must see one precision in every line.
        assert_eq!(time_of("\"2025-11-26T16:46:12.123456789Z\"").as_deref(), Some("2025-11-26T16:46:12.123Z"));
        assert_eq!(time_of("\"2025-11-26T16:46:12.9999Z\"").as_deref(), Some("2025-11-26T16:46:12.999Z"));
        assert_eq!(time_of("\"0000-01-01T00:00:00Z\"").as_deref(), Some("0000-01-01T00:00:00.000Z"));
        assert_eq!(time_of("\"9999-12-31T23:59:59.5Z\"").as_deref(), Some("9999-12-31T23:59:59.500Z"));
        for received in [
            datetime!(2026-11-26 16:46:12 UTC),
            datetime!(2026-11-26 16:46:12.97 UTC),
            datetime!(2026-11-26 16:46:12.0059 UTC),
        ] {
            let line: serde_json::Value =
                serde_json::from_slice(&record(r#"{"tstamp":1795711572}"#, received).line).unwrap();
            for field in ["ts", "event_time"] {
                let text = line[field].as_str().unwrap();
                assert_eq!((text.len(), &text[19..20], &text[23..]), (24, ".", "Z"), "{field} {text}");
            }
        }
        let line: serde_json::Value =
            serde_json::from_slice(&record("{}", datetime!(2026-11-26 16:46:12.0059 UTC)).line).unwrap();
        assert_eq!(line["ts"], "2026-11-26T16:46:12.005Z");
    }

    #[test]
    fn partition_uses_a_plausible_event_date() {
        let received = datetime!(2026-11-26 00:10 UTC);
        assert_eq!(
            partition_for(Some(datetime!(2026-11-25 23:55 UTC)), received),
            datetime!(2026-11-25 0:00 UTC).date()
        );
        assert_eq!(partition_for(Some(datetime!(2026-10-28 00:10 UTC)), received).to_string(), "2026-10-28");
        assert_eq!(partition_for(Some(datetime!(2026-11-27 00:10 UTC)), received).to_string(), "2026-11-27");
        // Implausible: a misread unit or a broken clock falls back to the receive date.
        assert_eq!(partition_for(Some(datetime!(2026-10-27 00:09 UTC)), received).to_string(), "2026-11-26");
        assert_eq!(partition_for(Some(datetime!(2026-11-27 00:11 UTC)), received).to_string(), "2026-11-26");
        assert_eq!(partition_for(Some(datetime!(1970-01-21 00:00 UTC)), received).to_string(), "2026-11-26");
        assert_eq!(partition_for(None, received).to_string(), "2026-11-26");
    }

    #[test]
    fn compacting_keeps_everything_but_whitespace() {
        let pretty = "{\n  \"a\" : [ 1 , 2.50 ],\r\n\t\"s\": \"x y \\\" } \\\\\",\n \"big\": 123456789012345678901234567890, \"u\":\"\\u00e9 é\" }";
        assert_eq!(
            compact_json(pretty),
            r#"{"a":[1,2.50],"s":"x y \" } \\","big":123456789012345678901234567890,"u":"\u00e9 é"}"#
        );
    }

    fn record(body: &str, received: OffsetDateTime) -> Record {
        let event = parse_body(body.as_bytes(), 1 << 20).unwrap();
        let meta = Meta {
            request_id: "req-1".into(),
            ip: Some("203.0.113.9".into()),
            ua: Some("adm.tools mail webhook".into()),
            webhook_id: None,
        };
        Record::new(&event, &meta, received, "mail/")
    }

    #[test]
    fn the_stored_line() {
        let body = r#"{ "mailbox": "info@example.com", "uid": 18446744073709551617, "tstamp": "1764175572",
            "event": "flags-set", "folder": "INBOX", "flags": ["\\Seen", "\\Deleted"], "z_unknown": {"k": 1.0} }"#;
        let r = record(body, datetime!(2025-11-26 16:46:13.123456 UTC));
        let line = String::from_utf8(r.line.to_vec()).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"{"ts":"2025-11-26T16:46:13.123Z","ip":"203.0.113.9","ua":"adm.tools mail webhook","#,
                r#""data":{"mailbox":"info@example.com","uid":18446744073709551617,"tstamp":"1764175572","event":"flags-set","folder":"INBOX","flags":["\\Seen","\\Deleted"],"z_unknown":{"k":1.0}},"#,
                r#""webhook_id":null,"request_id":"req-1","event":"flags-set","mailbox":"info@example.com","event_time":"2025-11-26T16:46:12.000Z","#,
                r#""flags":["\\Seen","\\Deleted"],"id":"187f7d499961951ee1c240263b7a8ea0"}"#,
                "\n"
            )
        );
        assert_eq!(r.key.format(), "mail/dt=2025-11-26/187f7d499961951ee1c240263b7a8ea0.jsonl");
        assert_eq!(r.event.as_deref(), Some("flags-set"));
        // Anything else in `event` is the sender's text: stored as sent, never logged.
        let long = format!("\"{}\"", "x".repeat(33));
        for event in [r#""Re: invoice 4411 for olena""#, long.as_str(), r#""new\n""#] {
            let r = record(&format!(r#"{{"event":{event}}}"#), datetime!(2025-11-26 16:46 UTC));
            assert_eq!(r.event, None, "{event}");
            assert!(String::from_utf8_lossy(&r.line).contains(&format!(r#""data":{{"event":{event}}}"#)));
        }
    }

    #[test]
    fn a_whole_line_verifies_and_a_damaged_one_does_not() {
        // `data` holds the very field names the check looks for, as keys and inside strings.
        let body = r#"{"mailbox":"m@x","event":"new","n":{"data":1,"webhook_id":2,"id":"3"},"s":",\"data\":"}"#;
        let r = record(body, datetime!(2025-11-26 16:50 UTC));
        let line = &r.line[..r.line.len() - 1];
        let id = verify_line(line).expect("a stored line verifies");
        assert_eq!(r.key.id, id);
        for cut in 0..line.len() {
            assert_eq!(verify_line(&line[..cut]), None, "cut at {cut}");
        }
        let mut changed = line.to_vec();
        let at = memchr::memmem::find(&changed, b"m@x").unwrap();
        changed[at] = b'n';
        assert_eq!(verify_line(&changed), None, "a changed byte in data");
    }

    /// A disk that lost one block of an unsynced write and kept the next: what recovery reads
    /// where lines were is one line's head, zeros (or stale bytes), and another line's tail.
    #[test]
    fn a_line_joined_across_a_lost_block_does_not_verify() {
        let a = record(r#"{"mailbox":"m@x","uid":1,"event":"new"}"#, datetime!(2025-11-26 16:50 UTC)).line;
        let b = record(r#"{"mailbox":"m@x","uid":2,"event":"new"}"#, datetime!(2025-11-26 16:50 UTC)).line;
        let b = &b[..b.len() - 1];
        let head_of_a = &a[..20]; // before its `data`
        let tail_of_b = &b[30..];
        for filler in [&[0u8; 512][..], b"{\"ts\":\"2025-11-26\",\"stale\":\"", &a[..a.len() - 1]] {
            for joined in [[filler, b].concat(), [head_of_a, filler, tail_of_b].concat()] {
                assert_eq!(verify_whole_line(&joined), None, "{}", String::from_utf8_lossy(&joined));
            }
        }
        assert!(verify_whole_line(b).is_some());
    }

    #[test]
    fn key_depends_only_on_content() {
        let received = datetime!(2025-11-26 16:50 UTC);
        let a = record(r#"{"mailbox":"m@x","uid":1,"tstamp":1764175572,"event":"new"}"#, received);
        let pretty = record(
            "{\n \"mailbox\": \"m@x\",\n \"uid\": 1,\n \"tstamp\": 1764175572,\n \"event\": \"new\"\n}",
            received + Duration::minutes(15),
        );
        let other = record(r#"{"mailbox":"m@x","uid":2,"tstamp":1764175572,"event":"new"}"#, received);
        assert_eq!(a.key, pretty.key);
        assert_ne!(a.key, other.key);
    }

    #[test]
    fn flags_become_a_list_of_strings() {
        let flags = |json: &str| flag_list(&raw(json));
        assert_eq!(flags(r#"["\\Seen","\\Deleted"]"#).unwrap(), ["\\Seen", "\\Deleted"]);
        assert_eq!(flags(r#""\\Seen \\Flagged""#).unwrap(), ["\\Seen", "\\Flagged"]);
        assert_eq!(flags(r#""""#).unwrap(), Vec::<String>::new());
        assert_eq!(flags("[]").unwrap(), Vec::<String>::new());
        assert_eq!(flags(r#"[1,"a",null]"#).unwrap(), ["1", "a"]);
        assert_eq!(flags("7").unwrap(), ["7"]);
        assert_eq!(flags("null"), None);
    }

    #[test]
    fn loose_field_types_are_kept() {
        let r = record(r#"{"mailbox":null,"event":7,"tstamp":null}"#, datetime!(2026-01-02 03:04 UTC));
        let line: serde_json::Value = serde_json::from_slice(&r.line).unwrap();
        assert_eq!(line["event"], "7");
        assert_eq!(line["mailbox"], serde_json::Value::Null);
        assert_eq!(line["event_time"], serde_json::Value::Null);
        assert!(r.key.format().starts_with("mail/dt=2026-01-02/"));
    }
}
