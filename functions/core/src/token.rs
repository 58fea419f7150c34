//! API credentials: held as [`Token`], which never prints its value, and sent only as a
//! header marked sensitive (so the HTTP stack never logs it either).

use reqwest::header::{HeaderName, HeaderValue};
use std::fmt;

/// An API token or key. `Debug` shows `Token(***)`; only [`Token::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// A token from a setting or secret field: trimmed, `None` when blank.
    pub fn from_setting(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self::new(text))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The header that carries the token (`prefix` e.g. `"Bearer "`), marked sensitive;
    /// `None` when the token cannot be a header value (the error never shows it).
    pub fn header(&self, name: &'static str, prefix: &str) -> Option<(HeaderName, HeaderValue)> {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", self.0)).ok()?;
        value.set_sensitive(true);
        Some((HeaderName::from_static(name), value))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let token = Token::new("s3cr3t");
        assert_eq!(format!("{token:?}"), "Token(***)");
        let (_, value) = token.header("authorization", "Bearer ").unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cr3t"));
        assert!(Token::new("bad\nvalue")
            .header("circle-token", "")
            .is_none());
    }
}
