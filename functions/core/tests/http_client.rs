//! The HTTP client against a loopback server that fails on purpose.

use heimdallr_core::http::{HttpClient, HttpConfig, HttpError};
use heimdallr_fakes::http::{serve, Handler, Reply, Request};
use reqwest::header::{HeaderName, HeaderValue};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves `replies` in order (the last one repeats), counting requests.
async fn scripted(replies: Vec<Reply>) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let handler: Handler = Arc::new(move |_request: Request| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let reply = replies[n.min(replies.len() - 1)].clone();
        Box::pin(async move { reply })
    });
    let (addr, task) = serve(handler).await.unwrap();
    (format!("http://{addr}/data"), count, task)
}

fn ok() -> Reply {
    Reply::json(200, &serde_json::json!({"ok": true}))
}

fn fast_client() -> HttpClient {
    HttpClient::new(HttpConfig {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_attempts: 4,
        ..HttpConfig::default()
    })
    .unwrap()
}

fn secret_header() -> Vec<(HeaderName, HeaderValue)> {
    vec![(
        HeaderName::from_static("x-token"),
        HeaderValue::from_static("super-secret-token"),
    )]
}

#[tokio::test]
async fn retry_after_is_honoured_then_the_answer_is_returned() {
    let (url, count, _server) = scripted(vec![
        Reply::json(429, &serde_json::json!({})).with_header("retry-after", "1"),
        ok(),
    ])
    .await;
    let client = fast_client();
    let started = Instant::now();
    let (body, _) = client
        .get_json::<serde_json::Value>(&url, &secret_header())
        .await
        .unwrap();
    assert_eq!(body["ok"], true);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().retries(), 1);
}

#[tokio::test]
async fn server_errors_resets_and_cut_bodies_are_retried() {
    let (url, count, _server) = scripted(vec![
        Reply::json(503, &serde_json::json!({})),
        Reply::Reset,
        Reply::CutShort {
            body: serde_json::json!({"ok": true, "padding": "x".repeat(500)})
                .to_string()
                .into_bytes(),
        },
        Reply::Delayed(Duration::from_millis(50), Box::new(ok())),
    ])
    .await;
    let client = fast_client();
    let (body, _) = client
        .get_json::<serde_json::Value>(&url, &secret_header())
        .await
        .unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert_eq!(client.stats().retries(), 3);
}

#[tokio::test]
async fn persistent_failure_names_the_url_and_never_the_token() {
    let (url, count, _server) = scripted(vec![Reply::json(500, &serde_json::json!({}))]).await;
    let error = fast_client()
        .get_json::<serde_json::Value>(&url, &secret_header())
        .await
        .unwrap_err();
    assert!(
        matches!(error, HttpError::Unreachable { attempts: 4, .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&url) && text.contains("HTTP 500"), "{text}");
    assert!(
        !text.contains("super-secret-token")
            && !format!("{error:?}").contains("super-secret-token")
    );
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn malformed_json_is_retried_then_reported_as_malformed() {
    let (url, _, _server) = scripted(vec![Reply::Response {
        status: 200,
        headers: vec![],
        body: b"{\"ok\": tr".to_vec(),
    }])
    .await;
    let error = fast_client()
        .get_json::<serde_json::Value>(&url, &[])
        .await
        .unwrap_err();
    assert!(matches!(error, HttpError::Malformed { .. }), "{error:?}");
    assert!(error.to_string().contains("invalid JSON"));
}

#[tokio::test]
async fn strings_a_strict_parser_refuses_are_read_as_replacement_characters() {
    let (url, count, _server) = scripted(vec![Reply::Response {
        status: 200,
        headers: vec![],
        body: br#"{"title": "cut \ud83d", "nul": "a\u0000b", "pair": "\ud83d\ude00"}"#.to_vec(),
    }])
    .await;
    let (body, _) = fast_client()
        .get_json::<serde_json::Value>(&url, &[])
        .await
        .expect("decoded at the first attempt");
    assert_eq!(
        body,
        serde_json::json!({"title": "cut \u{FFFD}", "nul": "a\u{FFFD}b", "pair": "😀"})
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unauthorized_fails_at_once() {
    let (url, count, _server) = scripted(vec![Reply::json(401, &serde_json::json!({}))]).await;
    let error = fast_client().get(&url, &secret_header()).await.unwrap_err();
    assert!(error.is_unauthorized());
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "a bad token is not retried"
    );
}

#[tokio::test]
async fn the_retry_budget_bounds_retries_across_requests() {
    let (url, count, _server) = scripted(vec![Reply::json(503, &serde_json::json!({}))]).await;
    let client = HttpClient::new(HttpConfig {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        max_attempts: 10,
        retry_budget: 3,
        ..HttpConfig::default()
    })
    .unwrap();
    let error = client.get(&url, &[]).await.unwrap_err();
    assert!(
        error.to_string().contains("retry budget of 3 used up"),
        "{error}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 4);
    // The budget is spent: the next request gets one attempt only.
    assert!(client.get(&url, &[]).await.is_err());
    assert_eq!(count.load(Ordering::SeqCst), 5);
    // A new pass (the long-running command's next pass, a warm Lambda's next invocation)
    // has its budget back.
    client.stats().start_pass();
    assert!(client.get(&url, &[]).await.is_err());
    assert_eq!(count.load(Ordering::SeqCst), 9, "three retries again");
}

#[tokio::test]
async fn rollbar_remaining_seconds_is_waited_out_when_the_window_is_spent() {
    let (url, count, _server) = scripted(vec![
        ok().with_header("x-rate-limit-remaining", "0")
            .with_header("x-rate-limit-remaining-seconds", "1")
            // A reset far in the future by our clock: Remaining-Seconds wins.
            .with_header("x-rate-limit-reset", "9999999999"),
        ok(),
    ])
    .await;
    let client = HttpClient::new(HttpConfig {
        rate_limit: Some(heimdallr_core::http::RateLimitHeaders {
            remaining: HeaderName::from_static("x-rate-limit-remaining"),
            reset_unix: Some(HeaderName::from_static("x-rate-limit-reset")),
            reset_in_seconds: Some(HeaderName::from_static("x-rate-limit-remaining-seconds")),
        }),
        ..HttpConfig::default()
    })
    .unwrap();
    client.get(&url, &[]).await.unwrap();
    let started = Instant::now();
    client.get(&url, &[]).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(30),
        "waited the window's remaining second, not until the far reset: {waited:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_caller_that_can_ask_for_less_hears_of_a_timeout_at_once() {
    let (url, count, _server) =
        scripted(vec![Reply::Delayed(Duration::from_secs(5), Box::new(ok()))]).await;
    let client = HttpClient::new(HttpConfig {
        request_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    })
    .unwrap();
    let error = client
        .get_json_with::<serde_json::Value>(
            &url,
            &[],
            heimdallr_core::http::RequestOptions {
                report_timeouts: true,
                max_body_bytes: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(error, HttpError::TimedOut { .. }), "{error:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn a_too_long_retry_after_fails_instead_of_stalling() {
    let (url, _, _server) = scripted(vec![
        Reply::json(429, &serde_json::json!({})).with_header("retry-after", "3600")
    ])
    .await;
    let error = fast_client().get(&url, &[]).await.unwrap_err();
    assert!(
        matches!(
            error,
            HttpError::RateLimited {
                wait_secs: 3600,
                ..
            }
        ),
        "{error:?}"
    );
}

/// A body over the caller's cap is abandoned as it arrives and reported at once (the
/// caller asks for less), not retried and not held whole in memory.
#[tokio::test]
async fn a_body_over_the_callers_cap_is_reported_at_once_not_held() {
    let big = Reply::Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!("{{\"pad\": \"{}\"}}", "x".repeat(3 * 1024 * 1024)).into_bytes(),
    };
    let (url, count, _server) = scripted(vec![big]).await;
    let client = HttpClient::new(HttpConfig::default()).unwrap();
    let error = client
        .get_json_with::<serde_json::Value>(
            &url,
            &[],
            heimdallr_core::http::RequestOptions {
                report_timeouts: false,
                max_body_bytes: Some(1024 * 1024),
            },
        )
        .await
        .unwrap_err();
    match error {
        HttpError::TooLarge { bytes, max, .. } => {
            assert_eq!(max, 1024 * 1024_u64);
            assert!(bytes > max, "{bytes}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
}
