//! CircleCI API v2 calls: `{"items": [...], "next_page_token": ...}` lists followed by
//! `page-token`, the `Circle-Token` header, 404 for children that do not exist yet.
//!
//! A 404 on a project's pipeline list is not an empty project: CircleCI answers
//! `{"message": "Project not found"}` for a slug it does not know, a project the token's
//! user does not follow or cannot see, and for project API tokens, which API v2 does not
//! accept (CircleCI's API v2 docs and circleci/api-preview-docs#44).

use heimdallr_core::http::{HttpClient, HttpError, HttpSettings, HttpStats};
use heimdallr_core::stream::{ErrorKind, StreamError};
use heimdallr_core::token::Token;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the token is not a valid header value")]
    BadToken,
    #[error(
        "project {slug:?} not found (HTTP 404 on its pipelines): check the slug (vcs/org/repo, \
         e.g. gh/acme/web; GitHub App and GitLab projects are circleci/<org-id>/<project-id>, \
         shown in the project's settings), that the token is a personal API token (project \
         tokens are refused by API v2) and that its user can see and follows the project"
    )]
    ProjectNotFound { slug: String },
    #[error("{url}: the list's next_page_token does not move on: the walk cannot go on")]
    NoProgress { url: String },
}

/// The most pages one pipeline's workflows or one workflow's jobs may take.
const MAX_CHILD_PAGES: usize = 10_000;

impl From<ApiError> for StreamError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Http(e) => e.into(),
            ApiError::BadToken => StreamError::new(ErrorKind::Authentication, error),
            ApiError::ProjectNotFound { .. } => StreamError::new(ErrorKind::Api, error),
            ApiError::NoProgress { .. } => StreamError::shape(error),
        }
    }
}

/// One page of a list.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub items: Vec<Value>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

#[derive(Clone)]
pub struct CircleCiClient {
    http: HttpClient,
    base: String,
    token: Token,
}

impl CircleCiClient {
    /// 429s are retried by the core client, honouring Retry-After when CircleCI sends it.
    pub fn new(base_url: &str, token: Token, settings: &HttpSettings) -> Result<Self, HttpError> {
        Ok(Self::with_http(
            HttpClient::new(settings.config(None))?,
            base_url,
            token,
        ))
    }

    /// The same client (its connections and counters) with another token.
    pub fn with_token(&self, token: Token) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
        }
    }

    pub fn with_http(http: HttpClient, base_url: &str, token: Token) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats()
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let headers = [self
            .token
            .header("circle-token", "")
            .ok_or(ApiError::BadToken)?];
        Ok(self.http.get_json::<T>(&url, &headers).await?.0)
    }

    /// A page of the list at `path`; `Ok(None)` when CircleCI answers the first page 404
    /// (a pipeline with no workflows yet, a workflow that no longer exists). A 404 on a
    /// later page is an error: the list was there, and ending it would drop the rest.
    async fn page(&self, path: &str, token: Option<&str>) -> Result<Option<Page>, ApiError> {
        let path = match token {
            Some(t) => {
                let joint = if path.contains('?') { '&' } else { '?' };
                format!("{path}{joint}page-token={}", encode(t))
            }
            None => path.to_string(),
        };
        match self.get::<Page>(&path).await {
            Ok(page) => Ok(Some(page)),
            Err(ApiError::Http(HttpError::NotFound { .. })) if token.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A project's pipelines, newest first. A 404 fails: the project is not there for
    /// this token ([`ApiError::ProjectNotFound`]).
    pub async fn pipelines(&self, slug: &str, token: Option<&str>) -> Result<Page, ApiError> {
        self.page(&format!("/project/{}/pipeline", slug_path(slug)), token)
            .await?
            .ok_or_else(|| ApiError::ProjectNotFound {
                slug: slug.to_string(),
            })
    }

    /// Every workflow of a pipeline (all pages); empty when it has none yet.
    pub async fn pipeline_workflows(&self, pipeline_id: &str) -> Result<Vec<Value>, ApiError> {
        self.all(&format!("/pipeline/{}/workflow", encode(pipeline_id)))
            .await
    }

    /// Every job of a workflow (all pages, although the spec shows none).
    pub async fn workflow_jobs(&self, workflow_id: &str) -> Result<Vec<Value>, ApiError> {
        self.all(&format!("/workflow/{}/job", encode(workflow_id)))
            .await
    }

    /// The names of the project's workflows that Insights knows, on every branch
    /// (`GET /insights/{project-slug}/workflows`, API v2 OpenAPI: summary metrics per
    /// named workflow, the default branch only unless `all-branches`). A 404 is an error:
    /// the project's pipelines were listed a moment ago.
    pub async fn insights_workflow_names(&self, slug: &str) -> Result<Vec<String>, ApiError> {
        let path = format!("/insights/{}/workflows?all-branches=true", slug_path(slug));
        let items = self.all_required(&path).await?;
        let mut names: Vec<String> = items
            .iter()
            .filter_map(|item| item.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The recent runs of one named workflow on every branch, created at or after
    /// `since` (`GET /insights/{project-slug}/workflows/{workflow-name}`: "recent runs",
    /// newest first, re-runs included; `start-date` at most 90 days back). Items carry the
    /// workflow's `id`, `status`, `created_at` and `stopped_at`, not its pipeline.
    pub async fn insights_runs(
        &self,
        slug: &str,
        name: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Value>, ApiError> {
        let path = format!(
            "/insights/{}/workflows/{}?all-branches=true&start-date={}",
            slug_path(slug),
            encode(name),
            encode(&since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        );
        self.all_required(&path).await
    }

    /// Every page of a list whose first page must be there (a 404 is an error).
    async fn all_required(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        self.pages(path, false).await
    }

    /// One workflow by id; `None` if CircleCI no longer has it.
    pub async fn workflow(&self, workflow_id: &str) -> Result<Option<Value>, ApiError> {
        match self
            .get::<Value>(&format!("/workflow/{}", encode(workflow_id)))
            .await
        {
            Ok(workflow) if workflow.is_object() => Ok(Some(workflow)),
            Ok(_) => Ok(None),
            Err(ApiError::Http(HttpError::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every page of the list at `path`. A token handed back unchanged would ask for the
    /// same page for ever, and ten thousand pages is no workflow's or job list: both are
    /// errors rather than a list cut short.
    async fn all(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        self.pages(path, true).await
    }

    /// Every page of the list at `path`; a 404 on the first page is an empty list when
    /// `missing_is_empty`, else an error.
    async fn pages(&self, path: &str, missing_is_empty: bool) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_CHILD_PAGES {
            let Some(page) = self.page(path, token.as_deref()).await? else {
                if missing_is_empty {
                    return Ok(items);
                }
                return Err(ApiError::Http(HttpError::NotFound {
                    url: format!("{}{path}", self.base),
                }));
            };
            items.extend(page.items);
            match page.next_page_token.filter(|next| !next.is_empty()) {
                None => return Ok(items),
                Some(next) if Some(&next) == token.as_ref() => {
                    return Err(ApiError::NoProgress {
                        url: format!("{}{path}", self.base),
                    })
                }
                Some(next) => token = Some(next),
            }
        }
        Err(ApiError::NoProgress {
            url: format!("{}{path}", self.base),
        })
    }
}

/// Percent-encodes a query value or path segment.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A slug in a URL path: each of its parts encoded, the slashes kept (as CircleCI expects).
fn slug_path(slug: &str) -> String {
    slug.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_their_slashes_and_tokens_are_encoded() {
        assert_eq!(slug_path("circleci/8e4z/1a2b"), "circleci/8e4z/1a2b");
        assert_eq!(encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }
}
