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
