//! Rollbar API v1 calls: the `{"err":0,"result":...}` envelope, keyset paging of
//! occurrences, page-number paging of items and reads of items by id, rate-limit headers.
//!
//! From Rollbar's API reference (docs.rollbar.com/reference): `GET /instances/` lists
//! occurrences "descending by occurrence ID", `lastId` overrides the page number, `limit`
//! "Default is 20 and the max is 5000"; `GET /items/` returns "100 items ... per page",
//! `ids` is a "comma-separated list of integers" and `status` (active, resolved, muted,
//! archived) may be repeated. What an omitted `status` returns is not documented, so every
//! items request names all four: a sweep must see resolved and muted items too.

use crate::config::Token;
use heimdallr_core::http::{
    HttpClient, HttpError, HttpSettings, HttpStats, JsonBody, RateLimitHeaders, RequestOptions,
};
use heimdallr_core::stream::{ErrorKind, StreamError};
use reqwest::header::HeaderName;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{url}: Rollbar answered err={code}: {message}")]
    Rollbar {
        url: String,
        code: i64,
        message: String,
    },
    #[error("{url}: unexpected response shape: {detail}")]
    Shape { url: String, detail: String },
    #[error("the token is not a valid header value")]
    BadToken,
    /// A list Rollbar serves to every project token answered 404: the base URL is wrong.
    #[error(
        "{url}: not found (HTTP 404): Rollbar serves this list to every project token, so \
         ROLLBAR_API_URL is likely wrong: it must be the API's base URL with its version path, \
         e.g. {default} (it is {base:?})",
        default = crate::config::DEFAULT_API_URL
    )]
    WrongBaseUrl { url: String, base: String },
}

impl From<ApiError> for StreamError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Http(e) => e.into(),
            ApiError::BadToken => StreamError::new(ErrorKind::Authentication, error),
            ApiError::Rollbar { .. } | ApiError::WrongBaseUrl { .. } => {
                StreamError::new(ErrorKind::Api, error)
            }
            ApiError::Shape { .. } => StreamError::shape(error),
        }
    }
}

impl ApiError {
    /// The request timed out and was asked to say so at once (see
    /// [`RollbarClient::occurrences`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Http(HttpError::TimedOut { .. }))
    }

    /// The page was larger than allowed (see [`RollbarClient::occurrences`]): how large it
    /// was known to be.
    pub fn too_large(&self) -> Option<u64> {
        match self {
            Self::Http(HttpError::TooLarge { bytes, .. }) => Some(*bytes),
            _ => None,
        }
    }
}

/// The item statuses Rollbar knows; every items request names them all.
const ALL_STATUSES: &str = "status=active&status=resolved&status=muted&status=archived";
/// Items per page of `GET /items/`, and so the most ids one read asks for.
pub const ITEMS_PER_PAGE: usize = 100;

/// The envelope of every answer; `R` is how the result is read.
#[derive(Deserialize)]
struct Envelope<R> {
    #[serde(default)]
    err: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default = "Option::default")]
    result: Option<R>,
}

/// An `/instances/` answer read without copying: each occurrence borrowed as its text (see
/// [`crate::mapping::RawOccurrence`]), not parsed into a tree.
#[derive(Deserialize)]
struct InstancesEnvelope<'a> {
    #[serde(default)]
    err: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(borrow, default)]
    result: Option<InstancesResult<'a>>,
}

#[derive(Deserialize)]
struct InstancesResult<'a> {
    #[serde(borrow, default)]
    instances: Option<Vec<&'a RawValue>>,
}

/// One page of occurrences as received: the body's text, read when the walk gets to it.
/// A prefetched page waits as this text alone (no copies of its occurrences yet).
#[derive(Debug)]
pub struct OccurrencesPage {
    body: JsonBody,
    url: String,
}

impl OccurrencesPage {
    /// The page's size as received, in bytes.
    pub fn bytes(&self) -> usize {
        self.body.as_str().len()
    }

    /// The page's occurrences, borrowed from its text, in the order Rollbar sent them.
    pub fn instances(&self) -> Result<Vec<&RawValue>, ApiError> {
        let envelope: InstancesEnvelope<'_> =
            serde_json::from_str(self.body.as_str()).map_err(|e| ApiError::Shape {
                url: self.url.clone(),
                detail: e.to_string(),
            })?;
        instances_of(envelope, &self.url)
    }
}

/// An `/instances/` answer's occurrences, or why there are none to read.
fn instances_of<'a>(
    envelope: InstancesEnvelope<'a>,
    url: &str,
) -> Result<Vec<&'a RawValue>, ApiError> {
    refused(&envelope.err, envelope.message, url)?;
    // No list at all is not an empty page (which ends a walk as the start of history).
    envelope
        .result
        .and_then(|result| result.instances)
        .ok_or_else(|| ApiError::Shape {
            url: url.to_string(),
            detail: "no result.instances list".into(),
        })
}

/// An envelope whose `err` is set is Rollbar refusing the call, with its message.
fn refused(err: &Value, message: Option<String>, url: &str) -> Result<(), ApiError> {
    match err_code(err) {
        0 => Ok(()),
        code => Err(ApiError::Rollbar {
            url: url.to_string(),
            code,
            message: message.unwrap_or_else(|| "(no message)".into()),
        }),
    }
}

/// The envelope's `err`: 0 when the call succeeded.
fn err_code(err: &Value) -> i64 {
    match err {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().unwrap_or(1),
        Value::Bool(b) => i64::from(*b),
        _ => 1,
    }
}

#[derive(Clone)]
pub struct RollbarClient {
    http: HttpClient,
    base: String,
}

impl RollbarClient {
    pub fn new(base_url: &str, settings: &HttpSettings) -> Result<Self, HttpError> {
        let http = HttpClient::new(settings.config(Some(RateLimitHeaders {
            remaining: HeaderName::from_static("x-rate-limit-remaining"),
            reset_unix: Some(HeaderName::from_static("x-rate-limit-reset")),
            reset_in_seconds: Some(HeaderName::from_static("x-rate-limit-remaining-seconds")),
        })))?;
        Ok(Self::with_http(http, base_url))
    }

    pub fn with_http(http: HttpClient, base_url: &str) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats()
    }

    async fn call<R: DeserializeOwned>(
        &self,
        token: &Token,
        path_and_query: &str,
    ) -> Result<Option<R>, ApiError> {
        let url = format!("{}{}", self.base, path_and_query);
        let headers = [token
            .header("x-rollbar-access-token", "")
            .ok_or(ApiError::BadToken)?];
        let (envelope, _) = self.http.get_json::<Envelope<R>>(&url, &headers).await?;
        refused(&envelope.err, envelope.message, &url)?;
        Ok(envelope.result)
    }

    /// A list every project token may read answered 404: say the base URL is likely wrong.
    fn list_error(&self, error: ApiError) -> ApiError {
        match error {
            ApiError::Http(HttpError::NotFound { url }) => ApiError::WrongBaseUrl {
                url,
                base: self.base.clone(),
            },
            other => other,
        }
    }

    /// One page of the project's occurrences, newest id first, ids below `below`. With
    /// `options.report_timeouts`, a timeout comes back at once ([`ApiError::is_timeout`]),
    /// and a body over `options.max_body_bytes` is abandoned ([`ApiError::too_large`]), so
    /// that the walk can ask for a smaller page instead of repeating the same one.
    pub async fn occurrences(
        &self,
        token: &Token,
        below: Option<i64>,
        limit: u32,
        options: RequestOptions,
    ) -> Result<OccurrencesPage, ApiError> {
        let query = match below {
            Some(id) => format!("/instances/?lastId={id}&limit={limit}"),
            None => format!("/instances/?limit={limit}"),
        };
        let url = format!("{}{}", self.base, query);
        let headers = [token
            .header("x-rollbar-access-token", "")
            .ok_or(ApiError::BadToken)?];
        // What the last body said, read once: an `err` envelope is an error now, not when
        // the page is read.
        let mut verdict = Ok(());
        let (body, _) = self
            .http
            .get_json_body(&url, &headers, options, |text| {
                // A body that is not the envelope (truncated, malformed) is retried.
                let envelope = serde_json::from_str::<InstancesEnvelope<'_>>(text)
                    .map_err(|e| format!("invalid JSON ({e})"))?;
                verdict = instances_of(envelope, &url).map(|_| ());
                Ok(())
            })
            .await
            .map_err(|e| self.list_error(ApiError::Http(e)))?;
        verdict?;
        Ok(OccurrencesPage { body, url })
    }

    /// A call whose result is read as a tree.
    async fn call_tree(&self, token: &Token, path_and_query: &str) -> Result<Value, ApiError> {
        Ok(self
            .call::<Value>(token, path_and_query)
            .await?
            .unwrap_or(Value::Null))
    }

    /// One page (1-based, 100 a page) of the project's items, every status.
    pub async fn items_page(&self, token: &Token, page: u32) -> Result<Vec<Value>, ApiError> {
        let query = format!("/items/?page={page}&{ALL_STATUSES}");
        let result = self
            .call_tree(token, &query)
            .await
            .map_err(|e| self.list_error(e))?;
        take_list(result, "items", &format!("{}{}", self.base, query))
    }

    /// One page (1-based) of the project's deploys, most recent first ("List all deploys":
    /// "in pages of 20" by default, `limit` up to 5000). An empty page is the end of the
    /// list, as Rollbar's own example reads it.
    pub async fn deploys_page(
        &self,
        token: &Token,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Value>, ApiError> {
        let query = format!("/deploys/?page={page}&limit={limit}");
        let result = self
            .call_tree(token, &query)
            .await
            .map_err(|e| self.list_error(e))?;
        let url = format!("{}{}", self.base, query);
        // Only a list is a page: an answer without one must not read as the end.
        if !result.get("deploys").is_some_and(Value::is_array) {
            return Err(ApiError::Shape {
                url,
                detail: "result.deploys is missing or not a list".into(),
            });
        }
        take_list(result, "deploys", &url)
    }

    /// The items with these ids (at most [`ITEMS_PER_PAGE`]), whatever their status. The
    /// reference documents `ids` only as a "comma-separated list of integers" and
    /// `total_count` as "the count of all the items the query would return if no limit
    /// was applied": when it says more than a page holds, the next pages are read. Ids
    /// the answer never holds (an item deleted, or merged into another) are returned as
    /// `missing`, for the caller to record.
    pub async fn items_by_ids(&self, token: &Token, ids: &[i64]) -> Result<ItemsById, ApiError> {
        debug_assert!(ids.len() <= ITEMS_PER_PAGE);
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let mut items: Vec<Value> = Vec::new();
        let mut returned = std::collections::BTreeSet::new();
        // Bounded: the ids cannot fill more pages than there are ids.
        for page in 1..=ids.len().max(1) as u32 {
            let query = format!("/items/?ids={}&page={page}&{ALL_STATUSES}", list.join(","));
            let url = format!("{}{}", self.base, query);
            let result = self
                .call_tree(token, &query)
                .await
                .map_err(|e| self.list_error(e))?;
            let total = result.get("total_count").and_then(Value::as_u64);
            // Only a list is an answer: a result without `items` must not read as "none".
            if !result.get("items").is_some_and(Value::is_array) {
                return Err(ApiError::Shape {
                    url,
                    detail: "result.items is missing or not a list".into(),
                });
            }
            let page_items = take_list(result, "items", &url)?;
            // An answer with other items (a proxy that drops `ids`, a changed API) would
            // leave the asked ones unrefreshed while the walk forgets them: an error.
            if let Some(stranger) = page_items
                .iter()
                .filter_map(|item| crate::mapping::lenient_i64(item.get("id")))
                .find(|id| !ids.contains(id))
            {
                return Err(ApiError::Shape {
                    url,
                    detail: format!(
                        "asked for items by id and got item {stranger}: the API did not honour ids"
                    ),
                });
            }
            // A page with nothing new (an API that ignores `page` with `ids`) ends it.
            let before = returned.len();
            returned.extend(
                page_items
                    .iter()
                    .filter_map(|item| crate::mapping::lenient_i64(item.get("id"))),
            );
            let empty = returned.len() == before;
            items.extend(page_items);
            let all_here = total.is_none_or(|total| items.len() as u64 >= total);
            if all_here || empty {
                break;
            }
        }
        let missing = ids
            .iter()
            .copied()
            .filter(|id| !returned.contains(id))
            .collect();
        Ok(ItemsById { items, missing })
    }
}

/// What [`RollbarClient::items_by_ids`] found.
#[derive(Debug, Default)]
pub struct ItemsById {
    pub items: Vec<Value>,
    /// Asked for and not in the answer: deleted, or merged into another item.
    pub missing: Vec<i64>,
}

fn take_list(mut result: Value, field: &str, url: &str) -> Result<Vec<Value>, ApiError> {
    match result.get_mut(field).map(Value::take) {
        Some(Value::Array(list)) => Ok(list),
        Some(Value::Null) | None if result.is_object() => Ok(Vec::new()),
        _ => Err(ApiError::Shape {
            url: url.to_string(),
            detail: format!("result.{field} is not a list"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_taken_from_the_result() {
        let list = take_list(
            json!({"instances": [{"id": 1}], "page": 1}),
            "instances",
            "u",
        )
        .unwrap();
        assert_eq!(list.len(), 1);
        assert!(take_list(json!({"page": 3}), "items", "u")
            .unwrap()
            .is_empty());
        assert!(take_list(json!({"items": 5}), "items", "u").is_err());
    }
}
