//! Heroku settings: the API key, which apps, page size, the rate-limit headroom, PII.

use heimdallr_core::pii::PiiPolicy;

pub const DEFAULT_API_URL: &str = "https://api.heroku.com";
/// The Range header's largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Requests of the account's hourly 4,500 left to every other Heroku client: a run stops
/// (and the next resumes) rather than go below.
pub const DEFAULT_HEADROOM: u64 = 1000;

/// Which apps to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apps {
    /// Names or ids, as configured (each is its stream's scope).
    Named(Vec<String>),
    /// Every app the key can see (`HEROKU_APPS=*`), listed at the start of each run.
    All,
}

#[derive(Debug, Clone)]
pub struct HerokuConfig {
    pub apps: Apps,
    pub page_size: u32,
    pub headroom: u64,
    pub pii: PiiPolicy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("HEROKU_API_KEY is not set: an API key or OAuth token (heroku authorizations:create)")]
    MissingToken,
    #[error("no Heroku app: set HEROKU_APPS to app names or ids separated by commas, or * for every app the key can see")]
    NoApps,
    #[error("app {0:?} is not a Heroku app name or id (lowercase letters, digits and dashes)")]
    BadApp(String),
}

pub fn parse_apps(list: &str) -> Result<Apps, ConfigError> {
    let apps = heimdallr_core::text::list_items(list);
    if apps == ["*"] {
        return Ok(Apps::All);
    }
    if let Some(bad) = apps.iter().find(|name| {
        !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }) {
        return Err(ConfigError::BadApp(bad.clone()));
    }
    if apps.is_empty() {
        return Err(ConfigError::NoApps);
    }
    Ok(Apps::Named(apps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_names_ids_or_everything() {
        assert_eq!(
            parse_apps("acme-web, 01234567-89ab-cdef-0123-456789abcdef").unwrap(),
            Apps::Named(vec![
                "acme-web".into(),
                "01234567-89ab-cdef-0123-456789abcdef".into()
            ])
        );
        assert_eq!(parse_apps(" * ").unwrap(), Apps::All);
        assert_eq!(parse_apps(""), Err(ConfigError::NoApps));
        assert_eq!(parse_apps("Acme"), Err(ConfigError::BadApp("Acme".into())));
    }
}
