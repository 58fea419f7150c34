//! Rollbar API v1 calls: the `{"err":0,"result":...}` envelope, keyset paging of
//! occurrences, page-number paging of items, rate-limit headers.

use crate::config::Token;
use heimdallr_core::http::{HttpClient, HttpConfig, HttpError, HttpStats, RateLimitHeaders};
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
}

impl ApiError {
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_unauthorized())
    }
}

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

/// The result of an `/instances/` page: each occurrence kept as its text (see
/// [`crate::mapping::RawOccurrence`]), not parsed into a tree.
#[derive(Deserialize)]
struct InstancesResult {
    #[serde(default)]
    instances: Option<Vec<Box<RawValue>>>,
}

#[derive(Clone)]
pub struct RollbarClient {
    http: HttpClient,
    base: String,
}

impl RollbarClient {
    pub fn new(base_url: &str) -> Result<Self, HttpError> {
        let http = HttpClient::new(HttpConfig {
            rate_limit: Some(RateLimitHeaders {
                remaining: HeaderName::from_static("x-rate-limit-remaining"),
                reset_unix: Some(HeaderName::from_static("x-rate-limit-reset")),
            }),
            ..HttpConfig::default()
        })?;
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
        let code = match &envelope.err {
            Value::Null => 0,
            Value::Number(n) => n.as_i64().unwrap_or(1),
            Value::Bool(b) => i64::from(*b),
            _ => 1,
        };
        if code != 0 {
            return Err(ApiError::Rollbar {
                url,
                code,
                message: envelope.message.unwrap_or_else(|| "(no message)".into()),
            });
        }
        Ok(envelope.result)
    }

    /// One page of the project's occurrences, newest id first, ids below `below`.
    pub async fn occurrences(
        &self,
        token: &Token,
        below: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        let query = match below {
            Some(id) => format!("/instances/?lastId={id}&limit={limit}"),
            None => format!("/instances/?limit={limit}"),
        };
        let result: InstancesResult =
            self.call(token, &query)
                .await?
                .ok_or_else(|| ApiError::Shape {
                    url: format!("{}{}", self.base, query),
                    detail: "no result".into(),
                })?;
        Ok(result.instances.unwrap_or_default())
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
        let query = format!("/items/?page={page}");
        let result = self.call_tree(token, &query).await?;
        take_list(result, "items", &format!("{}{}", self.base, query))
    }

    /// One item by id; `None` if Rollbar no longer has it.
    pub async fn item(&self, token: &Token, id: i64) -> Result<Option<Value>, ApiError> {
        match self.call_tree(token, &format!("/item/{id}/")).await {
            Ok(item) if item.is_object() => Ok(Some(item)),
            Ok(_) => Ok(None),
            Err(ApiError::Http(HttpError::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }
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
