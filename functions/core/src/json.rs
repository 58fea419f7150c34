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
use std::fmt;

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

    /// Text known to be valid JSON (written by serde_json).
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
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let tree = FieldsSeed(fields).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(tree)
}

/// The raw text of the top-level member `key` of the JSON object `text` (the last one if it
/// appears twice); `None` if `text` is not an object or has no such member.
pub fn raw_member<'a>(text: &'a str, key: &str) -> Result<Option<&'a RawValue>, serde_json::Error> {
    Ok(top_level_members(text)?
        .into_iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, raw)| raw))
}

/// The top-level members of the JSON object `text`, in order, each as raw text. Anything
/// but an object gives no members.
pub fn top_level_members(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let members = de::Deserializer::deserialize_any(&mut deserializer, MembersVisitor)?;
    deserializer.end()?;
    Ok(members)
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            members.push((key, map.next_value::<&RawValue>()?));
        }
        Ok(members)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
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

struct FieldsSeed(&'static Fields);

impl<'de> DeserializeSeed<'de> for FieldsSeed {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.0 .0.iter().find(|(name, _)| *name == key) {
                Some((name, inner)) => {
                    object.insert((*name).to_string(), map.next_value_seed(FieldsSeed(inner))?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Json::Object(object))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        if self.0 .0.is_empty() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        } else {
            while let Some(item) = seq.next_element_seed(FieldsSeed(self.0))? {
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

    #[test]
    fn top_level_members_keep_their_raw_text() {
        let text = r#"{"a": {"b": [1, 2]}, "k\"q": "v", "a": 3}"#;
        let members = top_level_members(text).unwrap();
        let listed: Vec<(&str, &str)> =
            members.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(
            listed,
            [("a", r#"{"b": [1, 2]}"#), ("k\"q", r#""v""#), ("a", "3")]
        );
        assert_eq!(raw_member(text, "a").unwrap().map(RawValue::get), Some("3"));
        assert_eq!(raw_member(text, "z").unwrap().map(RawValue::get), None);
        assert!(top_level_members("[1]").unwrap().is_empty());
    }
}
