//! A stand-in for Amazon S3's object API, path-style (`/BUCKET/KEY`, as an SDK client with
//! `force_path_style` addresses it), for the Redshift bulk path: PutObject, GetObject,
//! DeleteObject, and the listing by key prefix that COPY does (in process, for the Data API
//! stand-in). Rules and their sources (Amazon S3 API Reference):
//! - Requests must be signed ("AWS4-HMAC-SHA256" Authorization); anonymous ones get 403
//!   AccessDenied (the staging bucket blocks public access).
//! - A missing bucket is 404 NoSuchBucket, a missing key on GET 404 NoSuchKey; errors are
//!   `<Error><Code>..</Code><Message>..</Message></Error>` XML ("Error responses").
//! - DeleteObject answers 204 whether or not the key exists ("DeleteObject": deleting a
//!   key that does not exist is not an error).
//! - A body sent with `x-amz-checksum-crc32` must match it, or 400 BadDigest; an
//!   `aws-chunked` body (`Content-Encoding: aws-chunked`, `x-amz-decoded-content-length`)
//!   is decoded first ("Signature Calculations for the Authorization Header: Transferring
//!   Payload in Multiple Chunks").
//! - Throttling is 503 SlowDown, server trouble 500 InternalError ("Error responses"); both
//!   are retried by the SDK.
//!
//! Tests script failures per operation, and can make an accepted object vanish before
//! anyone reads it (a lifecycle expiry or a deletion under a running load).

use crate::http::{serve_state, Reply, Request, ServerTask};
use base64::Engine;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What a scripted request gets instead of being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Failure {
    /// 503 SlowDown.
    SlowDown,
    /// 500 InternalError.
    InternalError,
    /// 403 AccessDenied (a role without the permission).
    AccessDenied,
    /// The connection closes without an answer.
    Reset,
    /// No answer for this long (then 503 SlowDown): a client that gives up first never
    /// learns whether the object was stored (it was not).
    Stall(std::time::Duration),
}

#[derive(Debug, Clone, Default)]
pub struct S3Stats {
    /// Requests per operation ("PutObject", "GetObject", "DeleteObject", "ListForCopy").
    pub requests: HashMap<String, u64>,
    /// Bytes of object bodies stored by PutObject.
    pub bytes_put: u64,
}

#[derive(Default)]
struct State {
    buckets: HashSet<String>,
    objects: BTreeMap<(String, String), Vec<u8>>,
    failures: HashMap<&'static str, VecDeque<S3Failure>>,
    /// Accepted PUTs whose object vanishes at once (expired or deleted before a load).
    lose_next_puts: usize,
    stats: S3Stats,
}

#[derive(Clone)]
pub struct FakeS3 {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeS3 {
    /// Serves S3 on loopback with these (empty) buckets.
    pub async fn start(buckets: &[&str]) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            ..State::default()
        }));
        let (addr, server) = serve_state(Arc::clone(&state), answer).await?;
        Ok(Self {
            state,
            addr,
            _server: server,
        })
    }

    /// For `AWS_ENDPOINT_URL_S3`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next requests of `operation` ("PutObject", "GetObject", "DeleteObject") fail so.
    pub fn fail_next(
        &self,
        operation: &'static str,
        failures: impl IntoIterator<Item = S3Failure>,
    ) {
        lock(&self.state)
            .failures
            .entry(operation)
            .or_default()
            .extend(failures);
    }

    /// The next `count` objects put are accepted, then gone before anyone reads them.
    pub fn lose_next_puts(&self, count: usize) {
        lock(&self.state).lose_next_puts += count;
    }

    /// Every stored key of `bucket`.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        lock(&self.state)
            .objects
            .keys()
            .filter(|(b, _)| b == bucket)
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub fn stats(&self) -> S3Stats {
        lock(&self.state).stats.clone()
    }

    /// The objects whose keys start with `prefix`, in key order, as COPY lists its FROM path
    /// (for the Data API stand-in, in process). Err: the bucket does not exist.
    pub fn objects_with_prefix(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut state = lock(&self.state);
        *state
            .stats
            .requests
            .entry("ListForCopy".into())
            .or_default() += 1;
        if !state.buckets.contains(bucket) {
            return Err(format!("The specified bucket does not exist: {bucket}"));
        }
        Ok(state
            .objects
            .range((bucket.to_string(), prefix.to_string())..)
            .take_while(|((b, k), _)| b == bucket && k.starts_with(prefix))
            .map(|((_, k), body)| (k.clone(), body.clone()))
            .collect())
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::Response {
        status,
        headers: vec![("content-type".into(), "application/xml".into())],
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>"
        )
        .into_bytes(),
    }
}

fn answer(guard: &mut State, request: Request) -> Reply {
    let operation = match request.method.as_str() {
        "PUT" => "PutObject",
        "GET" => "GetObject",
        "DELETE" => "DeleteObject",
        _ => {
            return error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            )
        }
    };
    *guard.stats.requests.entry(operation.into()).or_default() += 1;
    if let Some(failure) = guard
        .failures
        .get_mut(operation)
        .and_then(VecDeque::pop_front)
    {
        return match failure {
            S3Failure::SlowDown => error(503, "SlowDown", "Please reduce your request rate."),
            S3Failure::InternalError => error(
                500,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ),
            S3Failure::AccessDenied => error(403, "AccessDenied", "Access Denied"),
            S3Failure::Reset => Reply::Reset,
            S3Failure::Stall(wait) => Reply::Delayed(
                wait,
                Box::new(error(503, "SlowDown", "Please reduce your request rate.")),
            ),
        };
    }
    if !request
        .header("authorization")
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 "))
    {
        return error(403, "AccessDenied", "Access Denied");
    }
    let path = request.path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if !guard.buckets.contains(bucket) {
        return error(404, "NoSuchBucket", "The specified bucket does not exist");
    }
    if key.is_empty() {
        return error(
            400,
            "InvalidRequest",
            "this stand-in serves objects only (PUT, GET, DELETE /BUCKET/KEY)",
        );
    }
    let id = (bucket.to_string(), key.to_string());
    match operation {
        "PutObject" => {
            let body = match object_body(&request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let etag = format!("\"{:08x}\"", crc32fast::hash(&body));
            guard.stats.bytes_put += body.len() as u64;
            if guard.lose_next_puts > 0 {
                guard.lose_next_puts -= 1;
            } else {
                guard.objects.insert(id, body);
            }
            Reply::Response {
                status: 200,
                headers: vec![("etag".into(), etag)],
                body: Vec::new(),
            }
        }
        "GetObject" => match guard.objects.get(&id) {
            Some(body) => Reply::Response {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
                body: body.clone(),
            },
            None => error(404, "NoSuchKey", "The specified key does not exist."),
        },
        _ => {
            guard.objects.remove(&id);
            Reply::Response {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
    }
}

/// The object's bytes: aws-chunked bodies decoded, a CRC32 checksum (header or trailer)
/// checked.
fn object_body(request: &Request) -> Result<Vec<u8>, Reply> {
    let chunked = request
        .header("content-encoding")
        .is_some_and(|e| e.split(',').any(|p| p.trim() == "aws-chunked"));
    let (body, trailer) = if chunked {
        decode_aws_chunked(&request.body).ok_or_else(|| {
            error(
                400,
                "IncompleteBody",
                "The request body terminated unexpectedly",
            )
        })?
    } else {
        (request.body.clone(), HashMap::new())
    };
    if let Some(declared) = request.header("x-amz-decoded-content-length") {
        if declared.parse::<usize>().ok() != Some(body.len()) {
            return Err(error(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header."));
        }
    }
    let expected = request
        .header("x-amz-checksum-crc32")
        .map(str::to_string)
        .or_else(|| trailer.get("x-amz-checksum-crc32").cloned());
    if let Some(expected) = expected {
        let actual =
            base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&body).to_be_bytes());
        if actual != expected {
            return Err(error(
                400,
                "BadDigest",
                "The CRC32 you specified did not match the calculated checksum.",
            ));
        }
    }
    Ok(body)
}

/// `SIZE[;chunk-signature=..]\r\nDATA\r\n ... 0\r\nTRAILER: v\r\n\r\n`.
fn decode_aws_chunked(raw: &[u8]) -> Option<(Vec<u8>, HashMap<String, String>)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + raw.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let header = std::str::from_utf8(&raw[at..line_end]).ok()?;
        let size = usize::from_str_radix(header.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            break;
        }
        body.extend_from_slice(raw.get(at..at + size)?);
        at += size + 2;
    }
    let mut trailer = HashMap::new();
    for line in std::str::from_utf8(raw.get(at..)?).ok()?.split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            trailer.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Some((body, trailer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_bodies_decode_with_their_trailer() {
        let raw = b"B\r\nHello world\r\n0\r\nx-amz-checksum-crc32:i9aeUg==\r\n\r\n";
        let (body, trailer) = decode_aws_chunked(raw).expect("decodes");
        assert_eq!(body, b"Hello world");
        assert_eq!(trailer["x-amz-checksum-crc32"], "i9aeUg==");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&body).to_be_bytes()),
            "i9aeUg=="
        );
    }
}
