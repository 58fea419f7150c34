//! JSON documents kept as text, and cheap reads of the few fields a mapping needs.
//!
//! Sources store each record's whole document next to its typed columns. Parsing that
//! document into a tree only to write it out again was most of a sync's CPU; instead the
//! text is kept as the source sent it (made storable), and the typed columns come from
//! [`read_fields`], which builds a tree of just the fields asked for.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

/// A JSON document as text that every backend accepts: valid JSON without U+0000 and without
/// unpaired UTF-16 surrogates (PostgreSQL's jsonb refuses both; each becomes U+FFFD).
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// The document of a parsed value.
    pub fn from_value(value: &Json) -> Self {
        Self::from_serialized(value.to_string())
    }

    /// The document of raw JSON text (already checked by the parser that produced it).
    pub fn from_raw(raw: &RawValue) -> Self {
        Self(storable(raw.get()).into_owned())
    }

    /// Checks `text` is one JSON document and makes it storable.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self::from_raw(raw))
    }

    /// Text known to be valid JSON (written by serde_json, or checked by its parser).
    pub(crate) fn from_serialized(text: String) -> Self {
        match storable(&text) {
            Cow::Borrowed(_) => Self(text),
            Cow::Owned(clean) => Self(clean),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The document as a tree (for reject records and tests). A number serde_json cannot
    /// hold (such as `1e400`) leaves the document as one string.
    pub fn to_value(&self) -> Json {
        serde_json::from_str(&self.0).unwrap_or_else(|_| Json::String(self.0.clone()))
    }
}

impl From<Json> for JsonText {
    fn from(value: Json) -> Self {
        Self::from_value(&value)
    }
}

impl From<&RawValue> for JsonText {
    fn from(raw: &RawValue) -> Self {
        Self::from_raw(raw)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Valid JSON text with every `\u0000` escape and every unpaired surrogate escape replaced
/// by `\ufffd`. Valid JSON carries U+0000 and surrogates only as escapes, so a scan of the
/// escapes is enough; text without `\u` is returned as it is.
pub fn storable(text: &str) -> Cow<'_, str> {
    if !text.contains("\\u") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut clean = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // a two-character escape, such as \\ or \"
            continue;
        }
        let Some(unit) = hex_unit(bytes, i + 2) else {
            i += 2;
            continue;
        };
        let keep = match unit {
            0 => 0,
            0xD800..=0xDBFF => {
                let paired = bytes.get(i + 6) == Some(&b'\\')
                    && bytes.get(i + 7) == Some(&b'u')
                    && matches!(hex_unit(bytes, i + 8), Some(0xDC00..=0xDFFF));
                if paired {
                    12
                } else {
                    0
                }
            }
            0xDC00..=0xDFFF => 0,
            _ => 6,
        };
        if keep > 0 {
            i += keep;
        } else {
            clean.push_str(&text[copied..i]);
            clean.push_str("\\ufffd");
            i += 6;
            copied = i;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    clean.push_str(&text[copied..]);
    Cow::Owned(clean)
}

/// The UTF-16 unit of the four hex digits at `at`.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let digits = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

/// Which fields of a document to read: each entry names a member and what to read inside
/// it. An empty list ([`LEAF`]) keeps a scalar there; objects and arrays there are read as
/// empty ones (so type checks still answer the same).
#[derive(Debug)]
pub struct Fields(pub &'static [(&'static str, Fields)]);

pub const LEAF: Fields = Fields(&[]);

/// Reads only `fields` of the JSON document `text`: the tree has the document's shape and
/// values at those paths, nothing else. Arrays on the way are read element by element with
/// the same fields. A member that appears twice counts once, the last one, as in a full parse.
pub fn read_fields(text: &str, fields: &'static Fields) -> Result<Json, serde_json::Error> {
    Ok(read_fields_and_spans(text, fields, &[])?.0)
}

/// Where each of the values asked for is in a document (byte ranges), if it is there.
pub type Spans = Vec<Option<Range<usize>>>;

/// Like [`read_fields`], and also says where in `text` the values at `spans` are (paths
/// through objects, each among `fields`): one pass gives a mapping its fields and the
/// documents it stores.
pub fn read_fields_and_spans(
    text: &str,
    fields: &'static Fields,
    spans: &[&[&str]],
) -> Result<(Json, Spans), serde_json::Error> {
    let found = RefCell::new(vec![None; spans.len()]);
    let mut path = Vec::new();
    let context = (!spans.is_empty()).then_some(SpanContext {
        path: &mut path,
        spans,
        found: &found,
        origin: text.as_ptr() as usize,
    });
    let tree = read_text(text, fields, context)?;
    Ok((tree, found.into_inner()))
}

fn read_text(
    text: &str,
    fields: &'static Fields,
    context: Option<SpanContext<'_>>,
) -> Result<Json, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let tree = FieldsSeed { fields, context }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(tree)
}

/// Reads the `fields` of one value.
struct FieldsSeed<'p> {
    fields: &'static Fields,
    /// Set while spans are looked for below this value.
    context: Option<SpanContext<'p>>,
}

/// The spans being looked for, and where the reading is.
struct SpanContext<'p> {
    path: &'p mut Vec<&'static str>,
    spans: &'p [&'p [&'p str]],
    found: &'p RefCell<Spans>,
    /// Address of the outermost text: spans are offsets from it.
    origin: usize,
}

impl SpanContext<'_> {
    /// The index of the span at the current path, and whether any span lies at or below it.
    fn at_path(&self) -> (Option<usize>, bool) {
        let here = self.path.as_slice();
        let index = self.spans.iter().position(|p| *p == here);
        let below = self.spans.iter().any(|p| p.starts_with(here));
        (index, below)
    }
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some((name, inner)) = self.fields.0.iter().find(|(name, _)| *name == key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value = match self.context.as_mut() {
                Some(context) => {
                    context.path.push(name);
                    let (span, below) = context.at_path();
                    let value = if below {
                        // The member's text (borrowed from the outermost text), then its
                        // fields from that text.
                        let raw = map.next_value::<&'de RawValue>()?;
                        let start = (raw.get().as_ptr() as usize).wrapping_sub(context.origin);
                        if let Some(index) = span {
                            context.found.borrow_mut()[index] =
                                Some(start..start + raw.get().len());
                        }
                        let inner_context = SpanContext {
                            path: context.path,
                            spans: context.spans,
                            found: context.found,
                            origin: context.origin,
                        };
                        read_text(raw.get(), inner, Some(inner_context)).map_err(de::Error::custom)
                    } else {
                        map.next_value_seed(FieldsSeed {
                            fields: inner,
                            context: None,
                        })
                    };
                    context.path.pop();
                    value?
                }
                None => map.next_value_seed(FieldsSeed {
                    fields: inner,
                    context: None,
                })?,
            };
            object.insert((*name).to_string(), value);
        }
        Ok(Json::Object(object))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // Spans are looked for through objects only.
        let mut items = Vec::new();
        if self.fields.0.is_empty() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        } else {
            while let Some(item) = seq.next_element_seed(FieldsSeed {
                fields: self.fields,
                context: None,
            })? {
                items.push(item);
            }
        }
        Ok(Json::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_string()))
    }
    fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storable_text_replaces_nul_and_unpaired_surrogates_only() {
        assert_eq!(storable(r#"{"a":"plain"}"#), r#"{"a":"plain"}"#);
        assert!(matches!(storable(r#"{"a":"\u00e9"}"#), Cow::Borrowed(_)));
        assert_eq!(storable(r#"["a\u0000b"]"#), r#"["a\ufffdb"]"#);
        // A pair stays; a lone high or low surrogate goes.
        assert_eq!(storable(r#"["\ud83d\ude00"]"#), r#"["\ud83d\ude00"]"#);
        assert_eq!(storable(r#"["\ud83dx"]"#), r#"["\ufffdx"]"#);
        assert_eq!(storable(r#"["\ude00\ud83d"]"#), r#"["\ufffd\ufffd"]"#);
        // An escaped backslash followed by "u0000" is text, not an escape.
        assert_eq!(storable(r#"["C:\\u0000"]"#), r#"["C:\\u0000"]"#);
        assert_eq!(storable(r#"{"k\u0000":1}"#), r#"{"k\ufffd":1}"#);
    }

    #[test]
    fn storable_text_is_accepted_by_a_strict_parser() {
        let text = r#"{"a":"\ud800","b":["\u0000\udfff"],"\ud800k":"\ud83d\ude00"}"#;
        assert!(serde_json::from_str::<Json>(text).is_err());
        let clean = JsonText::parse(text).unwrap();
        let tree: Json = serde_json::from_str(clean.as_str()).unwrap();
        assert_eq!(
            tree,
            json!({"a": "\u{FFFD}", "b": ["\u{FFFD}\u{FFFD}"], "\u{FFFD}k": "😀"})
        );
    }

    #[test]
    fn documents_from_values_never_carry_nul() {
        let doc = JsonText::from_value(&json!({"k\0": ["x\0", {"y": "\0"}], "n": 1}));
        assert_eq!(
            doc.to_value(),
            json!({"k\u{FFFD}": ["x\u{FFFD}", {"y": "\u{FFFD}"}], "n": 1})
        );
        assert!(JsonText::parse("{").is_err());
    }

    static PERSON: Fields = Fields(&[
        ("id", LEAF),
        ("person", Fields(&[("id", LEAF), ("email", LEAF)])),
        ("chain", Fields(&[("class", LEAF)])),
        ("note", LEAF),
    ]);

    #[test]
    fn only_the_fields_asked_for_are_read() {
        let text = r#"{"id": 7, "big": {"deep": [1, 2, {"x": "y"}]},
            "person": {"id": "u1", "email": "a@b", "name": "N"},
            "chain": [{"class": "E1", "frames": [1]}, {"class": "E2"}],
            "note": {"object": "at a leaf"}}"#;
        assert_eq!(
            read_fields(text, &PERSON).unwrap(),
            json!({"id": 7, "person": {"id": "u1", "email": "a@b"},
                   "chain": [{"class": "E1"}, {"class": "E2"}], "note": {}})
        );
        // Scalars where objects were expected are kept; the last duplicate wins.
        assert_eq!(
            read_fields(r#"{"person": "someone", "id": 1, "id": 2.5}"#, &PERSON).unwrap(),
            json!({"person": "someone", "id": 2.5})
        );
        assert_eq!(
            read_fields("[1, {\"id\": 3}]", &PERSON).unwrap(),
            json!([1, {"id": 3}])
        );
        assert!(read_fields(r#"{"id": 1} trailing"#, &PERSON).is_err());
    }

    static OCCURRENCE: Fields = Fields(&[
        ("id", LEAF),
        (
            "data",
            Fields(&[("level", LEAF), ("person", Fields(&[("email", LEAF)]))]),
        ),
    ]);

    #[test]
    fn spans_point_at_the_members_text_in_the_outer_document() {
        let text = r#"{"id": 1, "data": {"big": [1, {"x": 2}], "person": {"email": "a@b", "n": 1},
            "level": "error"}}"#;
        let spans: &[&[&str]] = &[&["data"], &["data", "person"], &["missing"]];
        let (tree, found) = read_fields_and_spans(text, &OCCURRENCE, spans).unwrap();
        assert_eq!(
            tree,
            json!({"id": 1, "data": {"level": "error", "person": {"email": "a@b"}}})
        );
        let data = found[0].clone().unwrap();
        assert!(text[data].starts_with(r#"{"big""#));
        let person = found[1].clone().unwrap();
        assert_eq!(&text[person], r#"{"email": "a@b", "n": 1}"#);
        assert_eq!(found[2], None);
        // A member that is not an object still has a span.
        let (_, found) = read_fields_and_spans(r#"{"data": 5}"#, &OCCURRENCE, spans).unwrap();
        assert_eq!(found[0], Some(9..10));
    }
}
