//! Text clean-up shared by every backend: the full value always stays in the raw JSON.

/// Cuts `text` to at most `max_bytes` bytes without splitting a UTF-8 character.
/// Returns the text unchanged when it already fits.
pub fn truncate_utf8(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// PostgreSQL text cannot hold U+0000; every backend gets the same replacement (U+FFFD) so
/// that the warehouses agree with each other (documents: [`crate::json::storable`]).
pub fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A setting's list: items separated by commas, spaces or newlines, empty ones dropped and
/// repeats kept once, in order.
pub fn list_items(text: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for item in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        if !items.iter().any(|i| i == item) {
            items.push(item.to_string());
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        let text = "aé😀b";
        assert_eq!(truncate_utf8(text, 100), text);
        assert_eq!(truncate_utf8(text, 1), "a");
        assert_eq!(truncate_utf8(text, 2), "a");
        assert_eq!(truncate_utf8(text, 3), "aé");
        assert_eq!(truncate_utf8(text, 6), "aé");
        assert_eq!(truncate_utf8(text, 7), "aé😀");
        assert_eq!(truncate_utf8(text, 0), "");
    }

    #[test]
    fn long_multibyte_text_is_cut_to_the_byte_limit() {
        let text = "ж".repeat(40_000); // 80 000 bytes
        let cut = truncate_utf8(&text, 65_535);
        assert!(cut.len() <= 65_535);
        assert_eq!(cut.len(), 65_534);
        assert!(cut.chars().all(|c| c == 'ж'));
    }

    #[test]
    fn nul_characters_are_replaced_in_text() {
        assert_eq!(without_nul("a\0b"), "a\u{FFFD}b");
        assert!(matches!(
            without_nul("ab"),
            std::borrow::Cow::Borrowed("ab")
        ));
    }
}
