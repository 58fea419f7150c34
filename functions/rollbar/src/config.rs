//! Rollbar settings: projects and their read tokens, paging, refresh cadence, PII policy.

use heimdallr_core::pii::PiiPolicy;
use std::time::Duration;

pub const DEFAULT_API_URL: &str = "https://api.rollbar.com/api/1";
/// The API's maximum `limit` for the occurrence walk.
pub const MAX_PAGE_LIMIT: u32 = 5000;
/// Occurrences per page by default. Over a real round trip larger pages are much faster
/// (scripts/bench-rollbar-pages.sh, 150 ms a request: 1 640 rows/s at 300, 3 900 at 1 000,
/// 7 500 at 5 000); memory grows with a page's text (about two pages' worth plus a batch):
/// 1 000 keeps it small even for large occurrences, and is what other Rollbar readers use.
pub const DEFAULT_PAGE_LIMIT: u32 = 1000;

/// The API's own page size for occurrences (`limit` "Default is 20"): the smallest page a
/// walk falls back to when pages time out.
pub const DEFAULT_API_PAGE: u32 = 20;
/// How often every item is re-read by default.
pub const DEFAULT_ITEMS_SWEEP_INTERVAL: &str = "1h";
/// How late an occurrence may become listable below ids already read, by default: each
/// walk re-reads what was received this long before the newest stored occurrence.
pub const DEFAULT_OVERLAP_WINDOW: &str = "2m";
/// Stored ids below the mark remembered in the cursor (so a quiet run writes nothing);
/// about 13 bytes each in the state row, well inside Redshift's 65 535-byte strings.
pub const OVERLAP_KNOWN_IDS: usize = 2000;
/// Pages of overlap one walk reads at most.
pub const OVERLAP_MAX_PAGES: u32 = 100;
/// Touched items read by id (a hundred a call) before a full sweep is asked for instead.
pub const DEFAULT_ITEM_REFRESH_LIMIT: usize = 2000;

pub use heimdallr_core::token::Token;

/// One Rollbar project: a label (the state scope, stable across runs) and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub label: String,
    pub token: Token,
}

#[derive(Debug, Clone)]
pub struct RollbarConfig {
    pub api_url: String,
    pub projects: Vec<Project>,
    /// Occurrences per page of the keyset walk (1 to 5000).
    pub page_limit: u32,
    /// How often every item is re-read, so resolves and mutes reach the warehouse.
    pub items_sweep_interval: Duration,
    /// Items touched by new occurrences are re-read by id (a hundred per call) up to this
    /// many; past it a full sweep is asked for.
    pub item_refresh_limit: usize,
    /// How late an occurrence may be listed below ids already read: each walk re-reads
    /// below the high-water mark what was received this long before it (ids are only
    /// approximately in time order; merges are idempotent). Zero re-reads only the
    /// mark's own second.
    pub overlap_window: Duration,
    /// Also sync the projects' deploy records (`rollbar/deploys/<project>`).
    pub deploys: bool,
    pub pii: PiiPolicy,
}

impl RollbarConfig {
    /// What each walk re-reads below the mark.
    pub fn overlap(&self) -> crate::sync::Overlap {
        crate::sync::Overlap {
            window_secs: i64::try_from(self.overlap_window.as_secs()).unwrap_or(i64::MAX),
            known_ids: OVERLAP_KNOWN_IDS,
            max_pages: OVERLAP_MAX_PAGES,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("ROLLBAR_ACCESS_TOKEN is not set: give a project read token, or several as label=token,label=token")]
    MissingToken,
    #[error("ROLLBAR_ACCESS_TOKEN entry {position}: {reason}")]
    BadTokenEntry { position: usize, reason: String },
    #[error("ROLLBAR_ACCESS_TOKEN names project {0:?} twice")]
    DuplicateLabel(String),
}

/// Parses the token setting: either one bare token (project label `default`) or a list of
/// `label=token` pairs separated by commas, spaces or newlines.
pub fn parse_projects(setting: &str) -> Result<Vec<Project>, ConfigError> {
    let entries: Vec<&str> = setting
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(ConfigError::MissingToken);
    }
    if entries.len() == 1 && !entries[0].contains('=') {
        return Ok(vec![Project {
            label: "default".into(),
            token: Token::new(entries[0]),
        }]);
    }
    let mut projects: Vec<Project> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let position = i + 1;
        let Some((label, token)) = entry.split_once('=') else {
            return Err(ConfigError::BadTokenEntry {
                position,
                reason: "expected label=token when several projects are given".into(),
            });
        };
        let label_ok = !label.is_empty()
            && label.len() <= 100
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !label_ok {
            return Err(ConfigError::BadTokenEntry {
                position,
                reason: format!("label {label:?} must be letters, digits, '_', '-' or '.'"),
            });
        }
        if token.is_empty() {
            return Err(ConfigError::BadTokenEntry {
                position,
                reason: format!("project {label:?} has an empty token"),
            });
        }
        if projects.iter().any(|p| p.label == label) {
            return Err(ConfigError::DuplicateLabel(label.to_string()));
        }
        projects.push(Project {
            label: label.to_string(),
            token: Token::new(token),
        });
    }
    Ok(projects)
}

impl RollbarConfig {
    /// Settings for parsed projects, with defaults elsewhere.
    pub fn for_projects(api_url: Option<&str>, projects: Vec<Project>) -> Self {
        Self {
            api_url: api_url
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .unwrap_or(DEFAULT_API_URL)
                .trim_end_matches('/')
                .to_string(),
            projects,
            page_limit: DEFAULT_PAGE_LIMIT,
            items_sweep_interval: heimdallr_core::time::parse_duration(
                DEFAULT_ITEMS_SWEEP_INTERVAL,
            )
            .unwrap_or_default(),
            item_refresh_limit: DEFAULT_ITEM_REFRESH_LIMIT,
            overlap_window: heimdallr_core::time::parse_duration(DEFAULT_OVERLAP_WINDOW)
                .unwrap_or_default(),
            deploys: false,
            pii: PiiPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_token_is_the_default_project() {
        let projects = parse_projects("  abc123\n").unwrap();
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0].label, "default");
        assert_eq!(projects[0].token.expose(), "abc123");
    }

    #[test]
    fn several_projects_are_label_token_pairs() {
        let projects = parse_projects("web=aaa, worker=bbb\nmobile-ios=ccc").unwrap();
        let labels: Vec<_> = projects.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["web", "worker", "mobile-ios"]);
        assert_eq!(projects[2].token.expose(), "ccc");
    }

    #[test]
    fn bad_settings_say_what_is_wrong_without_the_token() {
        assert_eq!(parse_projects(" "), Err(ConfigError::MissingToken));
        let err = parse_projects("web=aaa,secret-token-value").unwrap_err();
        assert!(err.to_string().contains("entry 2"));
        assert!(!err.to_string().contains("secret-token-value"));
        assert_eq!(
            parse_projects("web=a,web=b"),
            Err(ConfigError::DuplicateLabel("web".into()))
        );
        assert!(parse_projects("we b=a,x=").is_err());
        assert!(format!("{:?}", Token::new("s3cr3t"))
            .find("s3cr3t")
            .is_none());
    }

    #[test]
    fn api_url_defaults_and_loses_a_trailing_slash() {
        let config = RollbarConfig::for_projects(None, parse_projects("t").unwrap());
        assert_eq!(config.api_url, DEFAULT_API_URL);
        let config = RollbarConfig::for_projects(Some("http://127.0.0.1:9/api/1/"), vec![]);
        assert_eq!(config.api_url, "http://127.0.0.1:9/api/1");
    }
}
