//! The body as JSON: serde visitors that check every value (string escapes, nesting depth) and
//! pick out the fields mailhook reads, without building the document.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The fields mailhook reads; a repeated key keeps its last value, as PHP's `json_decode` does.
/// Every other value is still fully checked (string escapes, nesting depth), never just skipped,
/// so what is stored is JSON that any reader accepts.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub mailbox: Option<&'a RawValue>,
    pub event: Option<&'a RawValue>,
    pub tstamp: Option<&'a RawValue>,
    pub flags: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any JSON value is read, so that a syntax error is reported before "not an object".
        deserializer.deserialize_any(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "mailbox" => &mut fields.mailbox,
                "event" => &mut fields.event,
                "tstamp" => &mut fields.tstamp,
                "flags" => &mut fields.flags,
                _ => {
                    map.next_value::<Checked>()?;
                    continue;
                }
            };
            let value: &RawValue = map.next_value()?;
            serde_json::from_str::<Checked>(value.get()).map_err(de::Error::custom)?;
            *slot = Some(value);
        }
        Ok(fields)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Self::Value, S::Error> {
        CheckedVisitor.visit_seq(seq).map(|_| Fields::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
}

/// Any JSON value, read through and dropped. Unlike `IgnoredAny`, which skips text unchecked,
/// it decodes every string (so lone surrogate escapes fail) and counts nesting (so the parser's
/// depth limit applies). Numbers arrive as their text (serde_json's `arbitrary_precision`), so
/// one beyond f64's range is valid JSON here, as RFC 8259 has it.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Checked, M::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Checked, S::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
}
