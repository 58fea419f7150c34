//! `heimdallr top`: the `fix_next` list, readable in a 100-column terminal.

use heimdallr_core::warehouse::FixNextRow;

/// The widest line `top` prints.
pub const WIDTH: usize = 100;

/// `text` cut to `width` characters, with an ellipsis when cut. Control characters
/// (newlines, tabs, terminal escapes from an exception message) become spaces.
fn fit(text: &str, width: usize) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() <= width {
        return text;
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The first 12 characters of a sha (data from outside: never sliced by bytes).
fn short_sha(sha: &str) -> String {
    sha.chars().take(12).collect()
}

fn or_dash(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

/// The list as lines of at most [`WIDTH`] characters.
pub fn render(rows: &[FixNextRow]) -> Vec<String> {
    let ranked_by_users = rows.iter().any(|r| r.users_lost_d7.is_some());
    let mut lines = vec![if ranked_by_users {
        "Fix next: open error and critical items, most users lost (D7) first".to_string()
    } else {
        "Fix next: open error and critical items, most people hit in 30 days first".to_string()
    }];
    if !ranked_by_users {
        if let Some(note) = rows.iter().find_map(|r| r.estimate_note.as_deref()) {
            lines.push(fit(&format!("(no users-lost estimate: {note})"), WIDTH));
        }
    }
    lines.push(String::new());
    lines.push(format!(
        "{:>3}  {:<22} {:<18} {:<11} {:<9} {}",
        "#", "USERS LOST D7 (95%)", "PEOPLE 7D/30D/ALL", "TREND", "LEVEL", "ENVIRONMENT"
    ));
    let indent = "     ";
    for row in rows {
        let lost = match (
            &row.users_lost_d7,
            &row.users_lost_d7_low,
            &row.users_lost_d7_high,
        ) {
            (Some(lost), Some(low), Some(high)) => format!("{lost} ({low} to {high})"),
            (Some(lost), _, _) => lost.clone(),
            _ => "-".into(),
        };
        let people = format!("{}/{}/{}", row.people_7d, row.people_30d, row.people_all);
        let head = format!(
            "{:>3}  {:<22} {:<18} {:<11} {:<9} {}",
            row.rank,
            lost,
            people,
            row.trend,
            or_dash(&row.level),
            or_dash(&row.environment)
        );
        lines.push(fit(&head, WIDTH));
        lines.push(fit(
            &format!("{indent}{}", row.title.as_deref().unwrap_or("(no title)")),
            WIDTH,
        ));
        if ranked_by_users && row.users_lost_d7.is_none() {
            if let Some(note) = &row.estimate_note {
                lines.push(fit(&format!("{indent}no estimate: {note}"), WIDTH));
            }
        }
        let suspect = match (&row.suspect_source, &row.suspect_sha) {
            (Some(source), sha) => {
                let mut text = format!(
                    "{indent}suspect deploy: {source} {} {}",
                    or_dash(&row.suspect_target),
                    sha.as_deref().map_or_else(|| "-".to_string(), short_sha)
                );
                if let Some(day) = &row.suspect_deployed_on {
                    text.push_str(&format!(" on {day}"));
                }
                if let Some(actor) = &row.suspect_actor {
                    text.push_str(&format!(" by {actor}"));
                }
                text
            }
            (None, _) => format!("{indent}suspect deploy: none found"),
        };
        lines.push(fit(&suspect, WIDTH));
        let mut seen = format!(
            "{indent}first seen {}, last seen {}",
            or_dash(&row.first_seen_on),
            or_dash(&row.last_seen_on)
        );
        if row.reactivated {
            seen.push_str("; reactivated");
            if let Some(sha) = &row.reactivation_sha {
                seen.push_str(&format!(" (brought back by {})", short_sha(sha)));
            }
        }
        lines.push(fit(&seen, WIDTH));
        if let Some(url) = &row.rollbar_url {
            lines.push(fit(&format!("{indent}{url}"), WIDTH));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rank: u32) -> FixNextRow {
        FixNextRow {
            rank: rank.to_string(),
            item_id: "800000001".into(),
            environment: Some("production".into()),
            title: Some(format!("line one\n\x1b[31mred\t{}", "x".repeat(300))),
            level: Some("critical".into()),
            trend: "escalating".into(),
            people_7d: "1234567".into(),
            people_30d: "12345678".into(),
            people_all: "123456789".into(),
            users_lost_d7: Some("123456".into()),
            users_lost_d7_low: Some("-123456".into()),
            users_lost_d7_high: Some("1234567".into()),
            estimate_note: None,
            suspect_source: Some("heroku".into()),
            suspect_target: Some("a-very-long-heroku-app-name-that-goes-on-and-on".into()),
            suspect_sha: Some("aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111".into()),
            suspect_deployed_on: Some("2026-11-20".into()),
            suspect_actor: Some("someone-with-a-long-address@example.com".into()),
            first_seen_on: Some("2026-09-01".into()),
            last_seen_on: Some("2026-11-20".into()),
            reactivated: true,
            reactivation_sha: Some("bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222".into()),
            rollbar_url: Some(format!(
                "https://rollbar.com/item/uuid/?uuid={}",
                "f".repeat(36)
            )),
        }
    }

    #[test]
    fn every_line_fits_a_100_column_terminal_whatever_the_data() {
        let lines = render(&[row(1), row(20)]);
        for line in &lines {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
        assert!(lines
            .iter()
            .any(|l| l.contains("123456 (-123456 to 1234567)")));
        assert!(lines.iter().any(|l| l.ends_with('…')));
        assert!(lines
            .iter()
            .any(|l| l.contains("brought back by bbbb2222bbbb")));
    }

    #[test]
    fn without_estimates_the_list_says_why_it_ranks_by_people() {
        let mut plain = row(1);
        plain.users_lost_d7 = None;
        plain.estimate_note = Some("no activity table set (HEIMDALLR_ACTIVITY_TABLE)".into());
        let lines = render(&[plain]);
        assert!(
            lines[0].contains("most people hit in 30 days first"),
            "{lines:?}"
        );
        assert!(lines[1].contains("HEIMDALLR_ACTIVITY_TABLE"), "{lines:?}");
    }
}
