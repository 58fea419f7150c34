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

/// A size setting: bytes, or a number with KB/MB/GB (powers of 1000) or KiB/MiB/GiB
/// (powers of 1024), e.g. `8MiB`, `500KB`. At least 64 KiB.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 8MiB, 500KB, 1048576)"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = (number * factor).round();
    if !(65_536.0..=(1u64 << 40) as f64).contains(&bytes) {
        return Err(format!("{text:?} is outside 64KiB to 1TiB"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_bytes(" 500KB"), Ok(500_000));
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert_eq!(parse_bytes("1.5 MB"), Ok(1_500_000));
        assert!(parse_bytes("8 parsecs").unwrap_err().contains("unit"));
        assert!(parse_bytes("10").unwrap_err().contains("outside"));
        assert!(parse_bytes("lots").is_err());
    }

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

/// A stored cursor in one short line for `heimdallr status`: `key=value` pairs, nested
/// objects in braces, lists as their length, long strings (page tokens, ranges) cut, the
/// whole line at most `width` characters. The full cursor stays in `_heimdallr_state`.
pub fn summarize_cursor(cursor: &serde_json::Value, width: usize) -> String {
    fn render(value: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        match value {
            Value::Null => out.push('-'),
            Value::Bool(b) => out.push_str(if *b { "yes" } else { "no" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::String(s) => {
                let cut: String = s.chars().take(24).collect();
                if cut.len() < s.len() {
                    out.push_str(&format!("{cut}.."));
                } else {
                    out.push_str(s);
                }
            }
            Value::Array(items) => out.push_str(&format!("[{}]", items.len())),
            Value::Object(fields) => {
                let mut first = true;
                for (key, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
                    if !first {
                        out.push(' ');
                    }
                    first = false;
                    out.push_str(key);
                    out.push('=');
                    if value.is_object() {
                        out.push('{');
                        render(value, out);
                        out.push('}');
                    } else {
                        render(value, out);
                    }
                }
            }
        }
    }
    let mut line = String::new();
    render(cursor, &mut line);
    if line.chars().count() > width {
        let cut: String = line.chars().take(width.saturating_sub(2)).collect();
        line = format!("{cut}..");
    }
    line
}

/// `text` broken into lines of at most `width` characters, at spaces where it can.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: &str = word;
        loop {
            let room = width.saturating_sub(line.chars().count() + usize::from(!line.is_empty()));
            if word.chars().count() <= room {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
                break;
            }
            if line.is_empty() {
                // A word longer than a whole line: cut it.
                let split = word
                    .char_indices()
                    .nth(width.max(1))
                    .map_or(word.len(), |(i, _)| i);
                lines.push(word[..split].to_string());
                word = &word[split..];
                if word.is_empty() {
                    break;
                }
            } else {
                lines.push(std::mem::take(&mut line));
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cursor_reads_in_one_short_line() {
        let cursor = json!({
            "high_water": 1_234_567_890_i64,
            "walk": {"top": 1_234_567_999_i64, "next_below": 1_234_567_000_i64},
            "pending": (0..5000).collect::<Vec<_>>(),
            "sweep": null,
            "next": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        });
        let line = summarize_cursor(&cursor, 200);
        assert_eq!(
            line,
            "high_water=1234567890 next=eyJhbGciOiJIUzI1NiIsInR5.. pending=[5000] \
             walk={next_below=1234567000 top=1234567999}"
        );
        assert!(summarize_cursor(&cursor, 40).chars().count() <= 40);
    }

    #[test]
    fn text_wraps_at_spaces_and_cuts_words_longer_than_a_line() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert!(wrap("", 10).is_empty());
    }
}
