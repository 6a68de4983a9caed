//! Every sample in `events/` is read as the Lambda front door reads it and answered by the real
//! handler, as `sam local invoke -e` and `cargo lambda invoke --data-file` would send it.

use crate::support;

use support::*;

fn table() -> serde_json::Map<String, serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Each function URL sample's expected status and, for accepted ones, the `event` it stores. The
/// same table drives the end-to-end runs through `cargo lambda` (tests/py/e2e.py) and `sam local
/// invoke` (tests/py/sam_local.py); an entry naming another `function` is that function's event.
fn samples() -> Vec<(String, u16, Option<String>)> {
    table()
        .into_iter()
        .filter(|(_, e)| e.get("function").is_none())
        .map(|(name, e)| (name, e["status"].as_u64().unwrap() as u16, e["event"].as_str().map(str::to_owned)))
        .collect()
}

#[test]
fn every_sample_has_an_expectation() {
    let mut names: Vec<_> =
        std::fs::read_dir(events_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut listed: Vec<_> = table().into_iter().map(|s| s.0).collect();
    listed.sort();
    assert_eq!(names, listed, "every file in events/ is listed in tests/data/expected.json, and only those");
}

#[tokio::test]
async fn each_sample_gets_its_status_and_accepted_ones_are_stored_once() {
    for (name, status, event) in samples() {
        let name = name.as_str();
        let (app, dir) = dir_app();
        let reply = call(&app, support::event(name)).await;
        assert_eq!(reply.status.as_u16(), status, "{name}: {}", String::from_utf8_lossy(&reply.body));
        let stored = stored(dir.path());
        let Some(event) = event else {
            assert!(stored.is_empty(), "{name} stored nothing");
            continue;
        };
        assert_eq!(reply.json(), serde_json::json!({ "ok": true }), "{name}");
        assert_eq!(stored.len(), 1, "{name} stored one object");
        let (key, bytes) = &stored[0];
        assert!(bytes.ends_with(b"\n") && bytes.iter().filter(|&&b| b == b'\n').count() == 1, "{name}: one line");
        let line: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(line["event"], event, "{name}");
        assert_eq!(line["ip"], "185.68.16.10", "{name}: the function URL's sourceIp");
        assert_eq!(line["ua"], "adm.tools mail webhook");
        assert_eq!(line["webhook_id"], "1187");
        assert_eq!(line["mailbox"], line["data"]["mailbox"]);
        let sent: serde_json::Value = serde_json::from_slice(&event_body(name)).unwrap();
        assert_eq!(line["data"], sent, "{name}: data is the sender's JSON");
        assert_eq!(*key, expected_key("", &line), "{name}");
    }
}

#[tokio::test]
async fn new_mail_line_is_the_reference_superset() {
    let (app, dir) = dir_app();
    assert_eq!(call(&app, support::event("new.json")).await.status, 200);
    let (_, bytes) = stored(dir.path()).pop().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    // data is the body byte for byte (it was sent compact), unicode as the sender wrote it.
    let body = String::from_utf8(event_body("new.json")).unwrap();
    assert!(text.contains(&format!("\"data\":{body},")), "{text}");
    // The reference receiver's fields first, in its order, then mailhook's.
    let outer = text.replace(&body, "DATA");
    let names: Vec<&str> =
        outer.split(',').map(|field| field.trim_start_matches('{').split(':').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "\"ts\"",
            "\"ip\"",
            "\"ua\"",
            "\"data\"",
            "\"webhook_id\"",
            "\"request_id\"",
            "\"event\"",
            "\"mailbox\"",
            "\"event_time\"",
            "\"flags\"",
            "\"id\""
        ],
        "{outer}"
    );
    assert!(text.contains("\"event_time\":\"2026-11-26T16:46:12.000Z\""), "{text}");
}

#[tokio::test]
async fn base64_body_is_decoded_and_compacted() {
    let (app, dir) = dir_app();
    assert_eq!(call(&app, support::event("base64-no-content-type.json")).await.status, 200);
    let (_, bytes) = stored(dir.path()).pop().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(r#""data":{"mailbox":"sales@example.com","uid":"512","tstamp":"1795711812","event":"create","folder":"Drafts","flags":"\\Draft"}"#),
        "{text}"
    );
    assert!(text.contains("\"event_time\":\"2026-11-26T16:50:12.000Z\""), "{text}");
}

#[tokio::test]
async fn a_resend_is_answered_200_and_stored_once() {
    let (app, dir) = dir_app();
    assert_eq!(call(&app, support::event("new.json")).await.status, 200);
    let first = stored(dir.path());
    assert_eq!(call(&app, support::event("new.json")).await.status, 200);
    assert_eq!(stored(dir.path()), first, "the resend left the first line untouched");
}
