//! A stand-in for AWS Secrets Manager's GetSecretValue (AWS JSON 1.1), for the SDK's
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`. Counts reads so tests can check caching.

use crate::http::{serve_state, Reply, Request, ServerTask};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    secrets: HashMap<String, String>,
    reads: u64,
}

#[derive(Clone)]
pub struct FakeSecretsManager {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

impl FakeSecretsManager {
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr, server) = serve_state(Arc::clone(&state), handle).await?;
        Ok(Self {
            state,
            addr,
            _server: server,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores (or rotates) a secret under its ARN.
    pub fn put(&self, arn: &str, value: &str) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .secrets
            .insert(arn.to_string(), value.to_string());
    }

    pub fn reads(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reads
    }
}

fn handle(state: &mut State, request: Request) -> Reply {
    let target = request.header("x-amz-target").unwrap_or_default();
    if target != "secretsmanager.GetSecretValue" {
        return Reply::json(
            400,
            &json!({"__type": "UnknownOperationException", "message": target}),
        );
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let id = body["SecretId"].as_str().unwrap_or_default().to_string();
    state.reads += 1;
    match state.secrets.get(&id) {
        Some(value) => Reply::json(
            200,
            &json!({
                "ARN": id,
                "Name": id.rsplit(':').next().unwrap_or_default(),
                "SecretString": value,
                "VersionId": "00000000-0000-0000-0000-000000000001",
                "VersionStages": ["AWSCURRENT"],
                "CreatedDate": 1_795_000_000.0,
            }),
        )
        .with_header("content-type", "application/x-amz-json-1.1"),
        None => Reply::json(
            400,
            &json!({
                "__type": "ResourceNotFoundException",
                "Message": "Secrets Manager can't find the specified secret."
            }),
        )
        .with_header("content-type", "application/x-amz-json-1.1"),
    }
}
