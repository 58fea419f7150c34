//! Personal data policy: what happens to usernames, emails and client IPs before storage.
//!
//! Person ids are never touched: they are the join key to the company's own users.

use crate::json::{self, JsonText};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
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
    /// Applies the policy to the strings at `paths` of a stored document. Only the top-level
    /// members those paths go through are parsed and written again; the rest of the text is
    /// kept as the source sent it. A member that cannot be read is left out, not kept.
    pub fn apply_in_json_text(&self, doc: JsonText, paths: &[&[&str]]) -> JsonText {
        if *self == Self::Keep {
            return doc;
        }
        let Ok(members) = json::top_level_members(doc.as_str()) else {
            return doc;
        };
        let touches = |key: &str| paths.iter().any(|path| path.first() == Some(&key));
        if !members.iter().any(|(key, _)| touches(key)) {
            return doc;
        }
        let mut text = String::with_capacity(doc.len());
        text.push('{');
        let mut push_member = |key: &str, value: &str| {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&serde_json::Value::from(key).to_string());
            text.push(':');
            text.push_str(value);
        };
        for (key, raw) in &members {
            if !touches(key) {
                push_member(key, raw.get());
                continue;
            }
            let Ok(member) = serde_json::from_str::<serde_json::Value>(raw.get()) else {
                continue;
            };
            // Wrapped, so that a path naming the member itself drops or hashes it too.
            let mut wrapper =
                serde_json::Value::Object(serde_json::Map::from_iter([(key.to_string(), member)]));
            for path in paths
                .iter()
                .filter(|path| path.first() == Some(&key.as_ref()))
            {
                self.apply_in_json(&mut wrapper, path);
            }
            if let Some(member) = wrapper.get(key.as_ref()) {
                push_member(key, &member.to_string());
            }
        }
        text.push('}');
        JsonText::from_serialized(text)
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
    fn stored_documents_lose_or_hash_personal_members_and_keep_the_rest_verbatim() {
        let doc = JsonText::parse(
            r#"{"body": {"trace":  [1, 2]}, "person": {"id": 7, "email": "a@b.c"}, "ip": "1.2.3.4"}"#,
        )
        .unwrap();
        let paths: &[&[&str]] = &[&["person", "email"], &["ip"]];
        let dropped = PiiPolicy::Drop.apply_in_json_text(doc.clone(), paths);
        assert_eq!(
            dropped.as_str(),
            r#"{"body":{"trace":  [1, 2]},"person":{"id":7}}"#
        );
        let hash = PiiPolicy::from_config("hash", Some("s")).unwrap();
        let hashed = hash.apply_in_json_text(doc.clone(), paths).to_value();
        assert_eq!(
            hashed["person"]["email"],
            json!(hash.apply("a@b.c").unwrap())
        );
        assert_eq!(hashed["ip"], json!(hash.apply("1.2.3.4").unwrap()));
        assert_eq!(PiiPolicy::Keep.apply_in_json_text(doc.clone(), paths), doc);
        let untouched = JsonText::parse(r#"{"body": 1}"#).unwrap();
        assert_eq!(
            PiiPolicy::Drop.apply_in_json_text(untouched.clone(), paths),
            untouched
        );
    }
}
