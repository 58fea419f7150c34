//! A deliberately small HTTP/1.1 server (keep-alive, bodies by Content-Length) that gives
//! the fakes full control over the wire: slow answers, bodies cut short, connections reset.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    /// Every query pair in order, repeats included (`status=a&status=b`).
    pub query_pairs: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
    /// Every value of a repeated query parameter.
    pub fn query_all(&self, name: &str) -> Vec<&str> {
        self.query_pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What to send back.
#[derive(Debug, Clone)]
pub enum Reply {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers promise the whole body; the connection closes halfway through it.
    CutShort { body: Vec<u8> },
    /// Close the connection without answering (a reset).
    Reset,
    /// Wait, then answer.
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Reply::Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
    /// The same reply with its JSON body changed by `edit` (a body that is not JSON, or
    /// any other kind of reply, is left as it is).
    pub fn map_json(mut self, edit: impl FnOnce(&mut serde_json::Value)) -> Self {
        if let Reply::Response { body, .. } = &mut self {
            if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) {
                edit(&mut value);
                *body = value.to_string().into_bytes();
            }
        }
        self
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Response { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Serves `handler` on 127.0.0.1 (a free port) until the returned task is aborted.
pub async fn serve(handler: Handler) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let _ = connection(stream, handler).await;
            });
        }
    });
    Ok((addr, task))
}

async fn connection(stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let parsed = url::Url::parse(&format!("http://fake{target}"))
            .unwrap_or_else(|_| url::Url::parse("http://fake/").expect("static URL"));
        let request = Request {
            method,
            path: parsed.path().to_string(),
            query: parsed.query_pairs().into_owned().collect(),
            query_pairs: parsed.query_pairs().into_owned().collect(),
            headers,
            body,
        };
        let mut reply = handler(request).await;
        while let Reply::Delayed(wait, inner) = reply {
            tokio::time::sleep(wait).await;
            reply = *inner;
        }
        let stream = reader.get_mut();
        match reply {
            Reply::Response {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await?;
                stream.flush().await?;
            }
            Reply::CutShort { body } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body[..body.len() / 2]).await?;
                stream.flush().await?;
                return Ok(());
            }
            Reply::Reset => {
                // Linger 0 turns the close into a TCP RST.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                return Ok(());
            }
            Reply::Delayed(..) => unreachable!("delays are unwrapped above"),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Aborts the server task when the last handle on a fake is dropped.
pub struct ServerTask(pub tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves a fake whose answers are computed from its shared state under a lock.
pub async fn serve_state<S: Send + 'static>(
    state: Arc<std::sync::Mutex<S>>,
    answer: fn(&mut S, Request) -> Reply,
) -> std::io::Result<(SocketAddr, Arc<ServerTask>)> {
    let handler: Handler = Arc::new(move |request| {
        let reply = {
            let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
            answer(&mut guard, request)
        };
        Box::pin(async move { reply })
    });
    let (addr, task) = serve(handler).await?;
    Ok((addr, Arc::new(ServerTask(task))))
}
