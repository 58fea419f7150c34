//! Heroku Platform API v3 calls: the versioned Accept header, Bearer auth, and Range
//! pagination as the API defines it (`Range: <field> ..; max=N, order=desc`, a 206 with
//! `Next-Range` sent back verbatim, a 200 on the last page). Reports the account's
//! `RateLimit-Remaining` for the headroom check.
//!
//! Range fields are the ones each list accepts: the platform API's published schema
//! (heroku/platform-api `schema.json`, `ranges` of each List link) gives builds `id` and
//! `started_at`, apps `id`, `name` and `updated_at`; releases have no `ranges` there, and
//! the reference's `Accept-Ranges: id, version` and Heroku's own CLI use `version`.
//! Nothing in Heroku's documentation makes a 416 mean "nothing there": its error table
//! says "request failed, validate Content-Range header and try again", and the documented
//! end of a list is a 200 without `Next-Range`. So every 416 is an error naming the range.

use heimdallr_core::http::{HttpClient, HttpError, HttpSettings, HttpStats, RateLimitHeaders};
use heimdallr_core::stream::{ErrorKind, StreamError};
use heimdallr_core::token::Token;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the API key is not a valid header value")]
    BadToken,
    #[error("{url}: the Next-Range header is not text")]
    BadNextRange { url: String },
    #[error(
        "{url}: Heroku refused the range {range:?} (HTTP 416 Requested Range Not \
         Satisfiable): the list does not accept that Range field or value"
    )]
    RangeRefused { url: String, range: String },
    /// A Next-Range equal to the range sent would ask for the same page for ever; ending
    /// the list there would copy less than the source.
    #[error("{url}: Heroku answered the range {range:?} with the same Next-Range: the walk would not move")]
    RangeRepeated { url: String, range: String },
}

impl From<ApiError> for StreamError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Http(e) => e.into(),
            ApiError::BadToken => StreamError::new(ErrorKind::Authentication, error),
            ApiError::BadNextRange { .. }
            | ApiError::RangeRefused { .. }
            | ApiError::RangeRepeated { .. } => StreamError::shape(error),
        }
    }
}

/// One page of a Range-paginated list.
#[derive(Debug, Default)]
pub struct RangePage {
    pub items: Vec<Value>,
    /// The Range to send for the next page (verbatim from `Next-Range`); `None` on the last.
    pub next_range: Option<String>,
}

#[derive(Clone)]
pub struct HerokuClient {
    http: HttpClient,
    base: String,
    token: Token,
}

const ACCEPT: &str = "application/vnd.heroku+json; version=3";

impl HerokuClient {
    /// 429s are retried with jittered exponential backoff (Heroku sends no Retry-After).
    pub fn new(base_url: &str, token: Token, settings: &HttpSettings) -> Result<Self, HttpError> {
        let http = HttpClient::new(settings.config(Some(RateLimitHeaders {
            remaining: HeaderName::from_static("ratelimit-remaining"),
            reset_unix: None,
            reset_in_seconds: None,
        })))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// The same client (its connections, counters and rate-limit reading) with another key.
    pub fn with_token(&self, token: Token) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
        }
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats()
    }

    /// Requests the API last said are left this hour.
    pub fn remaining(&self) -> Option<u64> {
        self.http.stats().rate_limit_remaining()
    }

    fn headers(&self, range: Option<&str>) -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
        let mut headers = vec![
            (
                HeaderName::from_static("accept"),
                HeaderValue::from_static(ACCEPT),
            ),
            self.token
                .header("authorization", "Bearer ")
                .ok_or(ApiError::BadToken)?,
        ];
        if let Some(range) = range {
            let value = HeaderValue::from_str(range).map_err(|_| ApiError::BadNextRange {
                url: self.base.clone(),
            })?;
            headers.push((HeaderName::from_static("range"), value));
        }
        Ok(headers)
    }

    async fn one(&self, path: &str) -> Result<Option<Value>, ApiError> {
        let url = format!("{}{path}", self.base);
        match self
            .http
            .get_json::<Value>(&url, &self.headers(None)?)
            .await
        {
            Ok((value, _)) if value.is_object() => Ok(Some(value)),
            Ok(_) => Ok(None),
            Err(HttpError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One page of the list at `path` for `range`.
    async fn page(&self, path: &str, range: &str) -> Result<RangePage, ApiError> {
        let url = format!("{}{path}", self.base);
        match self
            .http
            .get_json::<Vec<Value>>(&url, &self.headers(Some(range))?)
            .await
        {
            Ok((items, headers)) => {
                let next_range = match headers.get("next-range") {
                    None => None,
                    Some(value) => Some(
                        value
                            .to_str()
                            .map_err(|_| ApiError::BadNextRange { url: url.clone() })?
                            .to_string(),
                    ),
                };
                Ok(RangePage { items, next_range })
            }
            Err(HttpError::Status { status: 416, .. }) => Err(ApiError::RangeRefused {
                url,
                range: range.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Every app the key can see.
    pub async fn apps(&self, page_size: u32) -> Result<Vec<Value>, ApiError> {
        let mut range = format!("name ..; max={page_size}");
        let mut apps = Vec::new();
        loop {
            let page = self.page("/apps", &range).await?;
            apps.extend(page.items);
            match page.next_range {
                None => return Ok(apps),
                Some(next) if next == range => {
                    return Err(ApiError::RangeRepeated {
                        url: format!("{}/apps", self.base),
                        range,
                    })
                }
                Some(next) => range = next,
            }
        }
    }

    pub async fn app(&self, app: &str) -> Result<Option<Value>, ApiError> {
        self.one(&format!("/apps/{}", encode(app))).await
    }

    /// Releases, newest version first; `range` is the previous page's Next-Range.
    pub async fn releases(
        &self,
        app: &str,
        range: Option<&str>,
        page_size: u32,
    ) -> Result<RangePage, ApiError> {
        let first = format!("version ..; max={page_size}, order=desc");
        self.page(
            &format!("/apps/{}/releases", encode(app)),
            range.unwrap_or(&first),
        )
        .await
    }

    pub async fn release(&self, app: &str, id: &str) -> Result<Option<Value>, ApiError> {
        self.one(&format!("/apps/{}/releases/{}", encode(app), encode(id)))
            .await
    }

    /// Builds, newest first by `started_at` (the schema's Range fields for builds are `id`
    /// and `started_at`; a build carries no `started_at` of its own, and starts as it is
    /// created, so the walk reads `created_at`).
    pub async fn builds(
        &self,
        app: &str,
        range: Option<&str>,
        page_size: u32,
    ) -> Result<RangePage, ApiError> {
        let first = format!("started_at ..; max={page_size}, order=desc");
        self.page(
            &format!("/apps/{}/builds", encode(app)),
            range.unwrap_or(&first),
        )
        .await
    }

    pub async fn build(&self, app: &str, id: &str) -> Result<Option<Value>, ApiError> {
        self.one(&format!("/apps/{}/builds/{}", encode(app), encode(id)))
            .await
    }

    /// The app's pipeline coupling (`GET /apps/{app}/pipeline-couplings`, "Pipeline
    /// Coupling Info By App": one object with its `stage`). Asked only of an app just
    /// found, whose 404 means it is in no pipeline (as the Heroku CLI reads it): `None`.
    pub async fn pipeline_coupling(&self, app: &str) -> Result<Option<Value>, ApiError> {
        self.one(&format!("/apps/{}/pipeline-couplings", encode(app)))
            .await
    }

    /// A slug (`GET /apps/{app}/slugs/{id}`), for its `commit`; `None` if it is gone.
    pub async fn slug(&self, app: &str, id: &str) -> Result<Option<Value>, ApiError> {
        self.one(&format!("/apps/{}/slugs/{}", encode(app), encode(id)))
            .await
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
