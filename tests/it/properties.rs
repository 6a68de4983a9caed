//! Properties of the request → verdict → record path, on generated input.

use mailhook::record::{Meta, Record, compact_json};
use mailhook::webhook::parse_body;
use proptest::prelude::*;
use serde_json::Value;
use time::macros::datetime;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[\\\\\"/\u{0}-\u{1f}\u{7f}-\u{10ffff}]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    (prop::collection::btree_map("\\PC{0,8}", json_value(), 0..8), any::<Option<i64>>(), "[a-z-]{0,10}").prop_map(
        |(fields, tstamp, event)| {
            let mut object: serde_json::Map<String, Value> = fields.into_iter().collect();
            if let Some(t) = tstamp {
                object.insert("tstamp".into(), Value::from(1_795_000_000 + t % 10_000_000));
            }
            object.insert("event".into(), Value::from(event));
            Value::Object(object)
        },
    )
}

/// The raw text of the stored line's `data`.
fn stored_data(line: &[u8]) -> &str {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    serde_json::from_slice::<Line>(line).unwrap().data.get()
}

fn meta(id: &str) -> Meta {
    Meta { request_id: id.into(), ip: Some("192.0.2.1".into()), ua: None, webhook_id: Some("7".into()) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever object is sent, compact or pretty, the stored line is one valid JSON line whose
    /// `data` is that object, and a resend in any layout lands on the same key.
    #[test]
    fn accepted_bodies_round_trip_and_key_on_content(value in json_object(), pretty in any::<bool>(), pad in "[ \t\r\n]{0,3}") {
        let compact = serde_json::to_string(&value).unwrap();
        let sent = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { compact.clone() };
        let sent = format!("{pad}{sent}{pad}");
        let received = datetime!(2026-11-26 12:00 UTC);

        let first = Record::new(&parse_body(sent.as_bytes(), 1 << 20).unwrap(), &meta("a"), received, "mail/");
        prop_assert!(first.line.ends_with(b"\n"));
        prop_assert_eq!(first.line.iter().filter(|&&b| b == b'\n').count(), 1);
        // data is the sent text compacted, byte for byte (which also means it parses to `value`).
        prop_assert_eq!(stored_data(&first.line), compact.as_str());
        // The crash recovery keeps exactly the lines that verify: every stored line does.
        let id = mailhook::record::verify_line(&first.line[..first.line.len() - 1]);
        let named = id == Some(first.key.id);
        prop_assert!(named, "the line verifies under its key's id: {}", first.key);

        // Received at the same time: the partition rule compares the event time with the receive
        // time, so a resend 15 minutes later of an event about 30 days old can fall on the other
        // side of its window (README, "What it accepts and what it stores").
        let resend = Record::new(&parse_body(compact.as_bytes(), 1 << 20).unwrap(), &meta("b"), received, "mail/");
        prop_assert_eq!(&first.key, &resend.key);
        let key = first.key.format();
        prop_assert!(key.starts_with("mail/dt=2026-1") && key.ends_with(".jsonl"), "{}", key);
    }

    /// Two different objects never share a key.
    #[test]
    fn different_content_different_key(a in json_object(), b in json_object()) {
        prop_assume!(a != b);
        let received = datetime!(2026-11-26 12:00 UTC);
        let key = |v: &Value| {
            let text = serde_json::to_string(v).unwrap();
            Record::new(&parse_body(text.as_bytes(), 1 << 20).unwrap(), &meta("x"), received, "").key
        };
        let (ka, kb) = (key(&a), key(&b));
        prop_assert_ne!(ka.id, kb.id);
    }

    /// Arbitrary bytes never panic: they are refused, or accepted and stored as what they say.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(event) = parse_body(&body, 1 << 20) {
            let record = Record::new(&event, &meta("x"), datetime!(2026-11-26 12:00 UTC), "");
            let line: Value = serde_json::from_slice(&record.line).unwrap();
            let sent: Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(&line["data"], &sent);
            prop_assert!(body.len() >= stored_data(&record.line).len());
        }
    }

    /// The compactor is public and cut at byte offsets: no text, JSON or not, makes it panic, and
    /// it only ever drops whitespace.
    #[test]
    fn compacting_any_text_never_panics(text in "(?s)[\"\\\\ \t\r\na-z{}\\[\\],:éд😀]{0,64}") {
        let compact = compact_json(&text);
        let kept: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')).collect();
        let dropped: String = compact.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')).collect();
        prop_assert_eq!(kept, dropped);
    }
}

/// A `tstamp` of every shape: RFC 3339 with any offset, fraction, leap second and the edges of
/// the years; numbers huge, negative, fractional and in exponent form; numeric strings; and every
/// other JSON type. As JSON text.
fn tstamp() -> impl Strategy<Value = String> {
    let rfc3339 = (
        prop_oneof![Just(0i32), Just(1), Just(1969), Just(1970), 1970..2100i32, Just(9998), Just(9999)],
        1u8..=12,
        prop_oneof![1u8..=28, Just(29), Just(30), Just(31)],
        0u8..=23,
        0u8..=59,
        prop_oneof![0u8..=59, Just(60)],
        prop::option::of("[0-9]{1,9}"),
        prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            (-1439i32..=1439).prop_map(|m| format!(
                "{}{:02}:{:02}",
                if m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            ))
        ],
        prop_oneof![Just('T'), Just('t'), Just(' ')],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, offset, sep)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("\"{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{offset}\"")
        });
    prop_oneof![
        8 => rfc3339,
        1 => Just("\"0000-01-01T00:00:00+00:01\"".to_owned()),
        1 => Just("\"9999-12-31T23:59:59-00:01\"".to_owned()),
        1 => Just("\"9999-12-31T23:59:60Z\"".to_owned()),
        1 => Just("\"2026-12-31T23:59:60+23:59\"".to_owned()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "-?[0-9]{12,60}".prop_map(|n| n.trim_start_matches('0').to_owned()).prop_filter("a number", |n| !n.is_empty() && n != "-"),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        1 => "-?[1-9][0-9]{0,3}(\\.[0-9]{1,20})?[eE][+-]?[0-9]{1,4}",
        1 => "\" ?-?[0-9]{0,20}(\\.[0-9]{0,9})? ?\"",
        1 => "\"[ -~]{0,24}\"".prop_map(|s| s.replace('\\', "")),
        1 => Just("null".to_owned()),
        1 => Just("true".to_owned()),
        1 => Just("false".to_owned()),
        1 => Just("[]".to_owned()),
        1 => Just("[1795711572]".to_owned()),
        1 => Just("{}".to_owned()),
        1 => Just("{\"seconds\":1795711572}".to_owned()),
    ]
}

/// Puts into memory, create-only: what `put_new` promises, and nothing more.
#[derive(Default)]
struct Memory(std::sync::Mutex<std::collections::HashMap<String, bytes::Bytes>>);

impl mailhook::archive::Archive for Memory {
    async fn put_new(
        &self,
        key: &mailhook::layout::Key,
        line: bytes::Bytes,
    ) -> Result<mailhook::archive::Stored, mailhook::archive::ArchiveError> {
        use std::collections::hash_map::Entry;
        Ok(match self.0.lock().unwrap().entry(key.format()) {
            Entry::Occupied(_) => mailhook::archive::Stored::AlreadyPresent,
            Entry::Vacant(e) => {
                e.insert(line);
                mailhook::archive::Stored::Created
            }
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever `tstamp` holds, the event is answered 200 and stored once (its resend is a 200
    /// and no second line); its `event_time` is null or a UTC time in the years 0 to 9999, with
    /// milliseconds, and its partition is that time's date, or the receive date.
    #[test]
    fn every_tstamp_is_answered_200_and_stored_once(t in tstamp(), pretty in any::<bool>()) {
        let body = format!(r#"{{"mailbox":"a@example.com","uid":1,"event":"new","tstamp":{t}}}"#);
        prop_assume!(serde_json::from_str::<Value>(&body).is_ok());
        // The same object laid out otherwise: the resend is the compact form.
        let sent = if pretty {
            format!("{{\n  \"mailbox\": \"a@example.com\",\n  \"uid\": 1,\n  \"event\": \"new\",\n  \"tstamp\": {t}\n}}")
        } else {
            body.clone()
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = crate::support::state(Memory::default(), "mail/");
        let app = mailhook::http::router(state.clone());
        let post = |text: String| {
            axum::http::Request::post("/")
                .header("x-webhook-token", crate::support::TOKEN)
                .body(axum::body::Body::from(text))
                .unwrap()
        };
        let before = time::OffsetDateTime::now_utc().date();
        let first = runtime.block_on(crate::support::call(&app, post(sent)));
        let resend = runtime.block_on(crate::support::call(&app, post(body)));
        let after = time::OffsetDateTime::now_utc().date();
        prop_assert_eq!(first.status.as_u16(), 200, "{}", String::from_utf8_lossy(&first.body));
        prop_assert_eq!(resend.status.as_u16(), 200);
        let stored = state.archive.0.lock().unwrap().clone();
        prop_assert_eq!(stored.len(), 1, "stored once: {:?}", stored.keys().collect::<Vec<_>>());
        let (key, line) = stored.into_iter().next().unwrap();
        let line: Value = serde_json::from_slice(&line).unwrap();
        let partition = &key["mail/dt=".len().."mail/dt=".len() + 10];
        match &line["event_time"] {
            Value::Null => prop_assert!(partition == before.to_string() || partition == after.to_string(), "{key}"),
            Value::String(at) => {
                prop_assert!(at.len() == 24 && at.as_bytes()[19] == b'.' && at.ends_with('Z'), "milliseconds, always: {at}");
                let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
                prop_assert_eq!(at.offset(), time::UtcOffset::UTC);
                prop_assert!((0..=9999).contains(&at.year()));
                let date = at.date().to_string();
                prop_assert!(partition == date || partition == before.to_string() || partition == after.to_string(), "{key} for {at}");
            }
            other => prop_assert!(false, "event_time {other}"),
        }
    }
}
