//! Personal data policy: what happens to usernames, emails and client IPs before storage.
//!
//! Person ids are never touched: they are the join key to the company's own users.

use crate::json::JsonText;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// How personal fields are stored. The default is [`PiiPolicy::Drop`].
#[derive(Clone, Default, PartialEq, Eq)]
pub enum PiiPolicy {
    /// Store the values as the source sent them.
    Keep,
    /// Store `sha256:` + hex HMAC-SHA256(salt, value): joinable, not readable.
    Hash { salt: String },
    /// Store nothing (NULL in the column, removed from the raw JSON).
    #[default]
    Drop,
}

impl fmt::Debug for PiiPolicy {
    // The salt is a secret: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PiiPolicyError {
    #[error("unknown PII policy {0:?}: use keep, hash or drop")]
    Unknown(String),
    #[error("PII policy 'hash' needs a salt: set HEIMDALLR_PII_SALT to a long random string")]
    MissingSalt,
}

impl PiiPolicy {
    /// Builds the policy from its name (`keep`, `hash`, `drop`) and the salt for `hash`.
    pub fn from_config(name: &str, salt: Option<&str>) -> Result<Self, PiiPolicyError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "keep" => Ok(Self::Keep),
            "drop" => Ok(Self::Drop),
            "hash" => match salt.map(str::trim) {
                Some(salt) if !salt.is_empty() => Ok(Self::Hash {
                    salt: salt.to_string(),
                }),
                _ => Err(PiiPolicyError::MissingSalt),
            },
            other => Err(PiiPolicyError::Unknown(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Hash { .. } => "hash",
            Self::Drop => "drop",
        }
    }

    /// Applies the policy to one value.
    pub fn apply(&self, value: &str) -> Option<String> {
        match self {
            Self::Keep => Some(value.to_string()),
            Self::Drop => None,
            Self::Hash { salt } => Some(keyed_hash(salt, value)),
        }
    }

    /// Applies the policy to the string at `path` inside a JSON document, in place.
    /// A non-string value there is hashed by its JSON text, or removed under `drop`.
    pub fn apply_in_json(&self, doc: &mut serde_json::Value, path: &[&str]) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = doc;
        for key in parents {
            match node.get_mut(*key) {
                Some(child) => node = child,
                None => return,
            }
        }
        let Some(object) = node.as_object_mut() else {
            return;
        };
        match self {
            Self::Keep => {}
            Self::Drop => {
                object.remove(*last);
            }
            Self::Hash { .. } => {
                if let Some(value) = object.get_mut(*last) {
                    let text = match &*value {
                        serde_json::Value::Null => return,
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    *value = serde_json::Value::String(self.apply(&text).unwrap_or_default());
                }
            }
        }
    }
}

impl PiiPolicy {
    /// The value at `value` in `doc`, with the policy applied inside some of its members,
    /// without reading the rest of it. Spans are byte ranges of `doc` as found by
    /// [`crate::json::read_fields_and_spans`]; each member comes with the paths inside it to apply
    /// the policy to. Text outside the members is kept as it is; a member that cannot be read
    /// becomes `null`, never kept. `None` if `value` is not a span of `doc`.
    pub fn apply_in_spans(
        &self,
        doc: &JsonText,
        value: Range<usize>,
        members: &[(Range<usize>, &[&[&str]])],
    ) -> Option<JsonText> {
        let text = doc.as_str().get(value.clone())?;
        if *self == Self::Keep {
            return Some(JsonText::from_serialized(text.to_string()));
        }
        let mut members: Vec<(Range<usize>, &[&[&str]])> = members
            .iter()
            .filter(|(span, _)| span.start >= value.start && span.end <= value.end)
            .map(|(span, paths)| (span.start - value.start..span.end - value.start, *paths))
            .collect();
        members.sort_by_key(|(span, _)| span.start);
        let mut rewritten = String::with_capacity(text.len());
        let mut copied = 0;
        for (span, paths) in members {
            let Some(member) = text.get(span.clone()).filter(|_| span.start >= copied) else {
                continue;
            };
            rewritten.push_str(&text[copied..span.start]);
            match serde_json::from_str::<serde_json::Value>(member) {
                Ok(mut member) => {
                    for path in paths {
                        self.apply_in_json(&mut member, path);
                    }
                    rewritten.push_str(&member.to_string());
                }
                Err(_) => rewritten.push_str("null"),
            }
            copied = span.end;
        }
        rewritten.push_str(&text[copied..]);
        Some(JsonText::from_serialized(rewritten))
    }
}

impl FromStr for PiiPolicy {
    type Err = PiiPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_config(s, None)
    }
}

fn keyed_hash(salt: &str, value: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty digest
    // rather than panicking if a future version disagrees.
    match Hmac::<Sha256>::new_from_slice(salt.as_bytes()) {
        Ok(mut mac) => {
            mac.update(value.as_bytes());
            format!("sha256:{}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::from("sha256:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;
    use serde_json::json;

    #[test]
    fn hash_is_keyed_stable_and_hides_the_value() {
        let a = PiiPolicy::from_config("hash", Some("salt-1")).unwrap();
        let b = PiiPolicy::from_config("hash", Some("salt-2")).unwrap();
        let h1 = a.apply("ann@example.com").unwrap();
        assert_eq!(h1, a.apply("ann@example.com").unwrap());
        assert_ne!(h1, b.apply("ann@example.com").unwrap());
        assert!(h1.starts_with("sha256:") && h1.len() == 7 + 64);
        assert!(!h1.contains("ann"));
    }

    #[test]
    fn policies_parse_and_hash_requires_a_salt() {
        assert_eq!(
            PiiPolicy::from_config("KEEP", None).unwrap(),
            PiiPolicy::Keep
        );
        assert_eq!(
            PiiPolicy::from_config("drop", None).unwrap(),
            PiiPolicy::Drop
        );
        assert_eq!(
            PiiPolicy::from_config("hash", None).unwrap_err(),
            PiiPolicyError::MissingSalt
        );
        assert!(PiiPolicy::from_config("mask", None).is_err());
        assert_eq!(PiiPolicy::default(), PiiPolicy::Drop);
        let debug = format!(
            "{:?}",
            PiiPolicy::from_config("hash", Some("s3cret")).unwrap()
        );
        assert!(!debug.contains("s3cret"));
    }

    #[test]
    fn json_paths_are_dropped_or_hashed_in_place() {
        let mut doc =
            json!({"person": {"id": 7, "email": "a@b.c"}, "request": {"user_ip": "1.2.3.4"}});
        PiiPolicy::Drop.apply_in_json(&mut doc, &["person", "email"]);
        PiiPolicy::Drop.apply_in_json(&mut doc, &["missing", "email"]);
        assert_eq!(doc["person"], json!({"id": 7}));
        let hash = PiiPolicy::from_config("hash", Some("s")).unwrap();
        hash.apply_in_json(&mut doc, &["request", "user_ip"]);
        assert!(doc["request"]["user_ip"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
    }

    #[test]
    fn stored_documents_lose_or_hash_personal_fields_and_keep_the_rest_verbatim() {
        static FIELDS: json::Fields =
            json::Fields(&[("person", json::LEAF), ("request", json::LEAF)]);
        let doc = JsonText::parse(
            r#"{"body": {"trace":  [1, 2]}, "person": {"id": 7, "email": "a@b.c"}, "request": {"ip": "1.2.3.4"}}"#,
        )
        .unwrap();
        let (_, spans) =
            json::read_fields_and_spans(doc.as_str(), &FIELDS, &[&["person"], &["request"]])
                .unwrap();
        let members: Vec<(Range<usize>, &[&[&str]])> = vec![
            (spans[1].clone().unwrap(), &[&["ip"]]),
            (spans[0].clone().unwrap(), &[&["email"], &["name"]]),
        ];
        let whole = 0..doc.len();
        let dropped = PiiPolicy::Drop
            .apply_in_spans(&doc, whole.clone(), &members)
            .unwrap();
        assert_eq!(
            dropped.as_str(),
            r#"{"body": {"trace":  [1, 2]}, "person": {"id":7}, "request": {}}"#
        );
        let hash = PiiPolicy::from_config("hash", Some("s")).unwrap();
        let hashed = hash
            .apply_in_spans(&doc, whole.clone(), &members)
            .unwrap()
            .to_value();
        assert_eq!(
            hashed["person"]["email"],
            json!(hash.apply("a@b.c").unwrap())
        );
        assert_eq!(
            hashed["request"]["ip"],
            json!(hash.apply("1.2.3.4").unwrap())
        );
        let kept = PiiPolicy::Keep.apply_in_spans(&doc, whole, &members);
        assert_eq!(kept, Some(doc.clone()));
        // Only a part of the document: the person member alone.
        let person = spans[0].clone().unwrap();
        let alone = PiiPolicy::Drop
            .apply_in_spans(&doc, person, &members)
            .unwrap();
        assert_eq!(alone.as_str(), r#"{"id":7}"#);
        assert_eq!(
            PiiPolicy::Drop.apply_in_spans(&doc, 0..10_000, &members),
            None
        );
    }
}
