//! CircleCI settings: the project slugs, the look-back window and the sweep.

use std::time::Duration;

pub const DEFAULT_API_URL: &str = "https://circleci.com/api/v2";
/// Pipelines created this long before now get their workflows re-listed on every run, so
/// that re-runs added to them arrive (scripts/bench-circleci.sh weighs it in requests).
pub const DEFAULT_LOOKBACK: &str = "1h";
/// Every `DEFAULT_SWEEP_INTERVAL`, the re-listing reaches this far back instead.
pub const DEFAULT_SWEEP_WINDOW: &str = "7d";
pub const DEFAULT_SWEEP_INTERVAL: &str = "6h";
/// A pending workflow whose re-poll keeps failing is given up after this long (a day of
/// retries rides out an outage; the run that gives up fails, naming it).
pub const DEFAULT_GIVE_UP_AFTER: &str = "24h";
/// How often Insights is asked for recent runs the walk no longer lists (re-runs of
/// pipelines older than the look-back): two requests plus one per named workflow.
pub const DEFAULT_INSIGHTS_INTERVAL: &str = "1h";

#[derive(Debug, Clone)]
pub struct CircleCiConfig {
    /// Project slugs as CircleCI writes them (`gh/acme/web`, `circleci/<org-id>/<project-id>`).
    pub projects: Vec<String>,
    /// Pipelines this recent have their workflows re-listed on every run.
    pub lookback: Duration,
    /// How far back a sweep re-lists workflows, and how often one runs.
    pub sweep_window: Duration,
    pub sweep_interval: Duration,
    /// How long a pending workflow may keep failing before it is given up.
    pub give_up_after: Duration,
    /// How often Insights is asked for runs the walk no longer lists.
    pub insights_interval: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("CIRCLECI_TOKEN is not set: a personal API token (https://app.circleci.com/settings/user/tokens)")]
    MissingToken,
    #[error("no CircleCI project: set CIRCLECI_PROJECTS to slugs separated by commas, e.g. gh/acme/web,circleci/8e4z/1a2b")]
    NoProjects,
    #[error("project slug {0:?} is not VCS/ORG/PROJECT (e.g. gh/acme/web or circleci/8e4z/1a2b)")]
    BadSlug(String),
}

/// Slugs from a list separated by commas, spaces or newlines. Slugs are opaque to
/// Heimdallr beyond their three parts: they go into URLs as they are.
pub fn parse_projects(list: &str) -> Result<Vec<String>, ConfigError> {
    let projects = heimdallr_core::text::list_items(list);
    for slug in &projects {
        let parts: Vec<&str> = slug.split('/').collect();
        let well_formed = parts.len() == 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !well_formed {
            return Err(ConfigError::BadSlug(slug.clone()));
        }
    }
    if projects.is_empty() {
        return Err(ConfigError::NoProjects);
    }
    Ok(projects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_of_every_vcs_style_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_projects("gh/acme/web, bb/acme/api\ncircleci/8e4z-ab/1a2b_c").unwrap(),
            vec!["gh/acme/web", "bb/acme/api", "circleci/8e4z-ab/1a2b_c"]
        );
        assert_eq!(parse_projects("gh/acme/web,gh/acme/web").unwrap().len(), 1);
        assert_eq!(parse_projects(" , "), Err(ConfigError::NoProjects));
        assert_eq!(
            parse_projects("gh/acme"),
            Err(ConfigError::BadSlug("gh/acme".into()))
        );
        assert!(parse_projects("gh/acme/we b?x").is_err());
    }

    #[test]
    fn the_default_durations_parse() {
        for text in [
            DEFAULT_LOOKBACK,
            DEFAULT_SWEEP_WINDOW,
            DEFAULT_SWEEP_INTERVAL,
            DEFAULT_GIVE_UP_AFTER,
            DEFAULT_INSIGHTS_INTERVAL,
        ] {
            assert!(heimdallr_core::time::parse_duration(text).is_ok_and(|d| !d.is_zero()));
        }
    }
}
