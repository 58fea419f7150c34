//! A stand-in for the AWS Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`): hands queued
//! events to a real `bootstrap` binary and records its responses and errors.

use crate::http::{serve, Handler, Reply, Request, ServerTask};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error(Value),
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Value, u64)>,
    outcomes: HashMap<String, Outcome>,
    init_error: Option<Value>,
    /// The `Lambda-Runtime-Function-Error-Type` header of the init error.
    init_error_type: Option<String>,
    next_id: u64,
}

#[derive(Clone)]
pub struct FakeLambdaRuntime {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

const PREFIX: &str = "/2018-06-01/runtime";
pub const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:heimdallr-rollbar";

impl FakeLambdaRuntime {
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let handler: Handler = Arc::new(move |request| {
            let state = Arc::clone(&shared);
            Box::pin(async move { handle(&state, request).await })
        });
        let (addr, task) = serve(handler).await?;
        Ok(Self {
            state,
            addr,
            _server: Arc::new(ServerTask(task)),
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an event whose deadline is `timeout` from now; returns its request id.
    pub fn invoke(&self, event: Value, timeout: Duration) -> String {
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(timeout)
            .as_millis() as u64;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.next_id += 1;
        let id = format!("req-{:04}", state.next_id);
        state.queue.push_back((id.clone(), event, deadline));
        id
    }

    /// Waits for the outcome of invocation `id`.
    pub async fn outcome(&self, id: &str, wait: Duration) -> Option<Outcome> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if let Some(outcome) = self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .outcomes
                .get(id)
            {
                return Some(outcome.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The error type header the function sent with its init error.
    pub fn init_error_type(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .init_error_type
            .clone()
    }

    pub fn init_error(&self) -> Option<Value> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .init_error
            .clone()
    }
}

/// A scheduled event as EventBridge sends it.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-26T04:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/heimdallr-rollbar"],
        "detail": {}
    })
}

async fn handle(state: &Mutex<State>, request: Request) -> Reply {
    let path = request.path.as_str();
    if request.method == "GET" && path == format!("{PREFIX}/invocation/next") {
        // Long poll, as the real API does.
        loop {
            let next = state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .queue
                .pop_front();
            if let Some((id, event, deadline)) = next {
                return Reply::json(200, &event)
                    .with_header("lambda-runtime-aws-request-id", &id)
                    .with_header("lambda-runtime-deadline-ms", &deadline.to_string())
                    .with_header("lambda-runtime-invoked-function-arn", FUNCTION_ARN)
                    .with_header("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    if request.method == "POST" && path == format!("{PREFIX}/init/error") {
        // The Runtime API reference ("Initialization error"): a JSON body with errorType
        // and errorMessage, and the type again in Lambda-Runtime-Function-Error-Type.
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.init_error = Some(body);
        state.init_error_type = request
            .header("lambda-runtime-function-error-type")
            .map(String::from);
        return Reply::json(202, &json!({"status": "OK"}));
    }
    if let Some(rest) = path.strip_prefix(&format!("{PREFIX}/invocation/")) {
        if let Some((id, kind)) = rest.split_once('/') {
            let outcome = match kind {
                "response" => Outcome::Response(body),
                "error" => Outcome::Error(body),
                _ => return Reply::json(404, &json!({"message": "unknown path"})),
            };
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .outcomes
                .insert(id.to_string(), outcome);
            return Reply::json(202, &json!({"status": "OK"}));
        }
    }
    Reply::json(404, &json!({"message": "unknown path"}))
}
