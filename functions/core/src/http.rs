//! The HTTP client every source uses: timeouts, jittered exponential backoff, Retry-After,
//! rate-limit headers and a bounded retry budget. Errors name the URL, never a header value,
//! so tokens (always sent in headers) cannot leak into logs.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Retries of failed requests allowed per pass, over all requests.
pub const DEFAULT_RETRY_BUDGET: u64 = 200;

/// Tunables of [`HttpClient`]; the defaults suit the public APIs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    /// Whole-request timeout (headers and body).
    pub request_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retries allowed per pass (see [`HttpStats::start_pass`]); past it, failures surface
    /// at once. A long-running command and a warm Lambda start a new pass every run.
    pub retry_budget: u64,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A longer Retry-After than this is treated as an error rather than slept through.
    pub max_retry_after: Duration,
    /// Headers that tell how many calls are left and when the window resets (Unix seconds).
    pub rate_limit: Option<RateLimitHeaders>,
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_attempts: 6,
            retry_budget: 200,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(120),
            rate_limit: None,
            user_agent: format!("heimdallr/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The HTTP settings a user can change (`--http-timeout`, `--http-retry-budget`), the same
/// for every source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Retries per pass.
    pub retry_budget: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let defaults = HttpConfig::default();
        Self {
            request_timeout: defaults.request_timeout,
            retry_budget: defaults.retry_budget,
        }
    }
}

impl HttpSettings {
    /// The client configuration with these settings and `rate_limit`.
    pub fn config(&self, rate_limit: Option<RateLimitHeaders>) -> HttpConfig {
        HttpConfig {
            request_timeout: self.request_timeout,
            retry_budget: self.retry_budget,
            rate_limit,
            ..HttpConfig::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    pub remaining: HeaderName,
    /// When the window resets (Unix seconds); APIs with a rolling budget (Heroku) have none,
    /// and the source decides what to do with the remaining count.
    pub reset_unix: Option<HeaderName>,
    /// Seconds until the window resets (Rollbar's `X-Rate-Limit-Remaining-Seconds`, what
    /// its own SDKs read): preferred to `reset_unix`, which trusts our clock.
    pub reset_in_seconds: Option<HeaderName>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{url}: unauthorized (HTTP 401): the token was rejected; check that it is set and valid"
    )]
    Unauthorized { url: String },
    #[error("{url}: forbidden (HTTP 403): the token lacks the scope this call needs")]
    Forbidden { url: String },
    #[error("{url}: not found (HTTP 404)")]
    NotFound { url: String },
    #[error("{url}: HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    /// The request timed out and the caller asked to hear of it at once (it can ask for
    /// less, e.g. a smaller page).
    #[error("{url}: timed out after {secs}s")]
    TimedOut { url: String, secs: u64 },
    #[error("{url}: unreachable after {attempts} attempt(s): {detail}")]
    Unreachable {
        url: String,
        attempts: u32,
        detail: String,
    },
    #[error("{url}: malformed response after {attempts} attempt(s): {detail}")]
    Malformed {
        url: String,
        attempts: u32,
        detail: String,
    },
    #[error("{url}: rate limited and asked to wait {wait_secs}s, longer than allowed")]
    RateLimited { url: String, wait_secs: u64 },
    /// The body was larger than the caller allowed (it can ask for less): the request was
    /// abandoned before the rest was read, so memory stays bounded.
    #[error("{url}: the answer is larger than {max} bytes (at least {bytes})")]
    TooLarge { url: String, bytes: u64, max: u64 },
    #[error("invalid URL {0:?}")]
    BadUrl(String),
}

impl HttpError {
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized { .. } | Self::Forbidden { .. })
    }
}

/// Counters shared with the engine for run records and metrics.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub bytes: AtomicU64,
    /// The last rate-limit "remaining" count the API reported, plus one (0: none yet).
    rate_limit_remaining: AtomicU64,
    /// `retries` when the current pass started: the retry budget is per pass.
    retries_at_pass_start: AtomicU64,
}

impl HttpStats {
    /// Calls the API last said are left in its rate-limit window, if it said.
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        self.rate_limit_remaining
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    /// Starts a pass: the retry budget is counted afresh from here, and the rate-limit
    /// count of the last pass is forgotten (the window has refilled since; the pass's first
    /// answer tells the count again, where a stale one would stop a warm Lambda before its
    /// first request, for ever). Called once per sync pass, so that the long-running
    /// command and warm Lambdas keep their budget.
    pub fn start_pass(&self) {
        self.rate_limit_remaining.store(0, Ordering::Relaxed);
        self.retries_at_pass_start
            .store(self.retries(), Ordering::Relaxed);
    }
    /// Retries since the current pass started.
    pub fn retries_this_pass(&self) -> u64 {
        self.retries()
            .saturating_sub(self.retries_at_pass_start.load(Ordering::Relaxed))
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A response whose status was 2xx.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    config: Arc<HttpConfig>,
    stats: Arc<HttpStats>,
    /// Earliest instant the next request may start (set by rate-limit headers).
    not_before: Arc<Mutex<Option<Instant>>>,
}

enum Attempt {
    Done(ApiResponse),
    Retry {
        detail: String,
        wait: Option<Duration>,
        timed_out: bool,
    },
    Fail(HttpError),
}

/// A JSON body kept as text that every backend can store (escaped NUL and unpaired
/// surrogates read as U+FFFD, see [`crate::json::storable`]), so that a caller can borrow
/// its parts instead of copying them; the response's own buffer when it needed no cleaning.
#[derive(Debug)]
pub struct JsonBody(BodyText);

#[derive(Debug)]
enum BodyText {
    Received(bytes::Bytes),
    Cleaned(String),
}

impl JsonBody {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Checked to be UTF-8 when it arrived.
            BodyText::Received(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            BodyText::Cleaned(text) => text,
        }
    }
}

/// How one request treats failures, beyond the client's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    /// A timeout is returned at once as [`HttpError::TimedOut`] instead of retried, for a
    /// caller that can ask for less (a smaller page) rather than repeat the same request.
    pub report_timeouts: bool,
    /// A body larger than this is abandoned as it arrives, and returned at once as
    /// [`HttpError::TooLarge`] (by its `Content-Length`, or once that many bytes came).
    pub max_body_bytes: Option<usize>,
}

impl HttpClient {
    pub fn new(config: HttpConfig) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| HttpError::BadUrl(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            config: Arc::new(config),
            stats: Arc::new(HttpStats::default()),
            not_before: Arc::new(Mutex::new(None)),
        })
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        Arc::clone(&self.stats)
    }

    /// GET `url` with `headers`, retrying what is worth retrying. Returns 2xx responses;
    /// 401/403/404 and other 4xx become typed errors at once.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<ApiResponse, HttpError> {
        self.get_with(url, headers, RequestOptions::default(), |_| Ok(()))
            .await
    }

    /// GET and decode JSON. A body that does not decode (truncated, malformed) is retried
    /// like a failed request, then reported with the URL. Escaped U+0000 and unpaired
    /// surrogates (JavaScript strings carry them; a strict parser and PostgreSQL refuse
    /// them) are read as U+FFFD, so one odd string never blocks a stream.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(T, HeaderMap), HttpError> {
        self.get_json_with(url, headers, RequestOptions::default())
            .await
    }

    /// GET a JSON body as text, checked by `validate` (which sees the storable text and
    /// says why it is not what was asked for): a body it refuses is retried like a failed
    /// request, then reported as malformed. Unlike [`HttpClient::get_json`] nothing is
    /// decoded into values here; the caller reads (and borrows from) the text.
    pub async fn get_json_body(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        options: RequestOptions,
        mut validate: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(JsonBody, HeaderMap), HttpError> {
        let mut cleaned: Option<String> = None;
        let response = self
            .get_with(url, headers, options, |body| {
                let text = std::str::from_utf8(body)
                    .map_err(|e| format!("invalid JSON (not UTF-8: {e})"))?;
                match crate::json::storable(text) {
                    std::borrow::Cow::Borrowed(text) => {
                        cleaned = None;
                        validate(text)
                    }
                    std::borrow::Cow::Owned(text) => {
                        let outcome = validate(&text);
                        cleaned = Some(text);
                        outcome
                    }
                }
            })
            .await?;
        let body = match cleaned {
            Some(text) => BodyText::Cleaned(text),
            None => BodyText::Received(response.body),
        };
        Ok((JsonBody(body), response.headers))
    }

    /// [`HttpClient::get_json`] with per-request options.
    pub async fn get_json_with<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        options: RequestOptions,
    ) -> Result<(T, HeaderMap), HttpError> {
        let mut decoded = None;
        let response = self
            .get_with(url, headers, options, |body| {
                let text = std::str::from_utf8(body)
                    .map_err(|e| format!("invalid JSON (not UTF-8: {e})"))?;
                match serde_json::from_str::<T>(&crate::json::storable(text)) {
                    Ok(value) => {
                        decoded = Some(value);
                        Ok(())
                    }
                    Err(e) => Err(format!("invalid JSON ({e})")),
                }
            })
            .await?;
        match decoded {
            Some(value) => Ok((value, response.headers)),
            None => Err(HttpError::Malformed {
                url: url.to_string(),
                attempts: 1,
                detail: "no body decoded".into(),
            }),
        }
    }

    async fn get_with(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        options: RequestOptions,
        mut validate: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<ApiResponse, HttpError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| HttpError::BadUrl(url.to_string()))?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.wait_for_rate_limit().await;
            let outcome = match self.attempt(&parsed, url, headers, options).await {
                Attempt::Done(response) => match validate(&response.body) {
                    Ok(()) => Attempt::Done(response),
                    Err(detail) => Attempt::Retry {
                        detail: format!("malformed body: {detail}"),
                        wait: None,
                        timed_out: false,
                    },
                },
                other => other,
            };
            match outcome {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry {
                    timed_out: true, ..
                } if options.report_timeouts => {
                    return Err(HttpError::TimedOut {
                        url: url.to_string(),
                        secs: self.config.request_timeout.as_secs(),
                    })
                }
                Attempt::Retry { detail, wait, .. } => {
                    let budget_left = self.stats.retries_this_pass() < self.config.retry_budget;
                    if attempt >= self.config.max_attempts || !budget_left {
                        let detail = if budget_left {
                            detail
                        } else {
                            format!(
                                "{detail} (retry budget of {} used up)",
                                self.config.retry_budget
                            )
                        };
                        return Err(if detail.starts_with("malformed body") {
                            HttpError::Malformed {
                                url: url.to_string(),
                                attempts: attempt,
                                detail,
                            }
                        } else {
                            HttpError::Unreachable {
                                url: url.to_string(),
                                attempts: attempt,
                                detail,
                            }
                        });
                    }
                    let sleep = match wait {
                        Some(wait) if wait > self.config.max_retry_after => {
                            return Err(HttpError::RateLimited {
                                url: url.to_string(),
                                wait_secs: wait.as_secs(),
                            })
                        }
                        Some(wait) => wait,
                        None => self.backoff(attempt),
                    };
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url, attempt, retry_in_ms = sleep.as_millis() as u64, reason = %detail, "retrying request");
                    tokio::time::sleep(sleep).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        parsed: &reqwest::Url,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        options: RequestOptions,
    ) -> Attempt {
        let mut request = self.client.get(parsed.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Retry {
                    detail: describe_transport_error(&e),
                    wait: None,
                    timed_out: e.is_timeout(),
                }
            }
        };
        let status = response.status();
        let response_headers = response.headers().clone();
        self.note_rate_limit(&response_headers);
        let body = match read_body(response, status.is_success(), options.max_body_bytes).await {
            Ok(body) => body,
            Err(BodyError::TooLarge(bytes)) => {
                return Attempt::Fail(HttpError::TooLarge {
                    url: url.to_string(),
                    bytes,
                    max: options.max_body_bytes.unwrap_or_default() as u64,
                })
            }
            Err(BodyError::Transport(e)) => {
                return Attempt::Retry {
                    detail: format!("body cut short: {}", describe_transport_error(&e)),
                    wait: None,
                    timed_out: e.is_timeout(),
                }
            }
        };
        self.stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if status.is_success() {
            return Attempt::Done(ApiResponse {
                status: status.as_u16(),
                headers: response_headers,
                body,
            });
        }
        let url = url.to_string();
        match status {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Attempt::Retry {
                detail: format!("HTTP {}", status.as_u16()),
                wait: retry_after(&response_headers),
                // A gateway that gave up waiting for the page: asking for less helps too.
                timed_out: status == StatusCode::GATEWAY_TIMEOUT,
            },
            StatusCode::UNAUTHORIZED => Attempt::Fail(HttpError::Unauthorized { url }),
            StatusCode::FORBIDDEN => Attempt::Fail(HttpError::Forbidden { url }),
            StatusCode::NOT_FOUND => Attempt::Fail(HttpError::NotFound { url }),
            other => Attempt::Fail(HttpError::Status {
                url,
                status: other.as_u16(),
                detail: body_snippet(&body),
            }),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.config.max_backoff);
        // Full jitter: spreads retries of concurrent clients apart.
        cap.mul_f64(rand::random::<f64>())
            .max(Duration::from_millis(10))
    }

    fn note_rate_limit(&self, headers: &HeaderMap) {
        let Some(limits) = &self.config.rate_limit else {
            return;
        };
        let remaining = header_u64(headers, &limits.remaining);
        if let Some(remaining) = remaining {
            self.stats
                .rate_limit_remaining
                .store(remaining.saturating_add(1), Ordering::Relaxed);
        }
        if remaining != Some(0) {
            return;
        }
        let reset_in = limits
            .reset_in_seconds
            .as_ref()
            .and_then(|name| header_u64(headers, name));
        let reset_at = limits
            .reset_unix
            .as_ref()
            .and_then(|name| header_u64(headers, name))
            .map(|reset| {
                let now = chrono::Utc::now().timestamp().max(0) as u64;
                reset.saturating_sub(now)
            });
        if let Some(seconds) = reset_in.or(reset_at) {
            let wait = Duration::from_secs(seconds.min(self.config.max_retry_after.as_secs()));
            if let Ok(mut slot) = self.not_before.lock() {
                *slot = Some(Instant::now() + wait);
            }
        }
    }

    async fn wait_for_rate_limit(&self) {
        let until = self.not_before.lock().ok().and_then(|mut slot| slot.take());
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                tracing::info!(
                    wait_ms = (until - now).as_millis() as u64,
                    "rate limit window exhausted; waiting for reset"
                );
                tokio::time::sleep(until - now).await;
            }
        }
    }
}

enum BodyError {
    TooLarge(u64),
    Transport(reqwest::Error),
}

/// A response's body, read chunk by chunk into one buffer of its announced size (no
/// second copy while it is gathered); a successful answer over `max` bytes is abandoned
/// as soon as that is known.
async fn read_body(
    mut response: reqwest::Response,
    success: bool,
    max: Option<usize>,
) -> Result<bytes::Bytes, BodyError> {
    let max = max.filter(|_| success);
    let announced = response.content_length();
    if let (Some(max), Some(length)) = (max, announced) {
        if length > max as u64 {
            return Err(BodyError::TooLarge(length));
        }
    }
    // Reserved up front only up to 16 MiB: a false or huge Content-Length must not
    // allocate what the body never brings.
    const MAX_RESERVED: u64 = 16 * 1024 * 1024;
    let capacity = announced.map_or(0, |n| {
        n.min(max.unwrap_or(usize::MAX) as u64).min(MAX_RESERVED) as usize
    });
    let mut body = bytes::BytesMut::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if let Some(max) = max {
            if body.len() + chunk.len() > max {
                return Err(BodyError::TooLarge((body.len() + chunk.len()) as u64));
            }
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Retry-After as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.signed_duration_since(chrono::Utc::now());
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "body read failed"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL (never headers); walk the sources for the cause.
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = crate::text::truncate_utf8(text.trim(), 300);
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let client = HttpClient::new(HttpConfig {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..HttpConfig::default()
        })
        .unwrap();
        for attempt in 1..20 {
            assert!(client.backoff(attempt) <= Duration::from_secs(1));
        }
    }
}
