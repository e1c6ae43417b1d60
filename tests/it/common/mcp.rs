//! A raw Streamable HTTP client over reqwest, for the status codes and headers that the SDK
//! clients hide.

use serde_json::{Value, json};

pub const MODERN: &str = "2026-07-28";

/// What one POST answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub session: Option<String>,
    /// The JSON body, or each SSE event's data as JSON.
    pub messages: Vec<Value>,
    pub raw: String,
}

impl Answer {
    /// The last message (the response of a request).
    pub fn last(&self) -> &Value {
        self.messages.last().unwrap_or(&Value::Null)
    }
}

pub async fn read_answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let raw = r.text().await.unwrap_or_default();
    let messages = if content_type.starts_with("text/event-stream") {
        sse_data(&raw)
            .into_iter()
            .filter_map(|d| serde_json::from_str(&d).ok())
            .collect()
    } else {
        serde_json::from_str(&raw).into_iter().collect()
    };
    Answer {
        status,
        content_type,
        session,
        messages,
        raw,
    }
}

/// The `data` of each event in an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|block| {
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// A session-era client.
pub struct Session {
    client: reqwest::Client,
    pub url: String,
    pub token: String,
    pub id: String,
    pub version: String,
}

impl Session {
    pub async fn open(url: &str, token: &str, version: &str) -> Session {
        Self::open_on(&super::http(), url, token, version).await
    }

    /// As [`Session::open`], with every request of the session sent by `client`.
    pub async fn open_on(
        client: &reqwest::Client,
        url: &str,
        token: &str,
        version: &str,
    ) -> Session {
        let r = post_on(
            client,
            url,
            token,
            &[("mcp-protocol-version", version)],
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "it", "version": "0"}}}),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let id = r
            .session
            .clone()
            .expect("Mcp-Session-Id on the initialize response");
        assert_eq!(r.last()["result"]["protocolVersion"], version, "{r:?}");
        let s = Session {
            client: client.clone(),
            url: url.to_owned(),
            token: token.to_owned(),
            id,
            version: version.to_owned(),
        };
        let n = s
            .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
        assert_eq!(n.status, 202);
        s
    }

    pub async fn post(&self, body: &Value) -> Answer {
        post_on(
            &self.client,
            &self.url,
            &self.token,
            &[
                ("mcp-session-id", &self.id),
                ("mcp-protocol-version", &self.version),
            ],
            body,
        )
        .await
    }

    pub async fn call_tool(&self, id: Value, name: &str, args: Value) -> Answer {
        self.post(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":args}}))
            .await
    }
}

/// POST with a bearer token and the Accept header the spec requires.
pub async fn post(url: &str, token: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
    post_raw(url, token, headers, body.to_string()).await
}

pub async fn post_raw(url: &str, token: &str, headers: &[(&str, &str)], body: String) -> Answer {
    post_raw_on(&super::http(), url, token, headers, body).await
}

/// As [`post`], sent by `client` (an HTTPS or HTTP/2 client).
pub async fn post_on(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    post_raw_on(client, url, token, headers, body.to_string()).await
}

pub async fn post_raw_on(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Answer {
    let mut req = client
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read_answer(req.send().await.expect("POST /mcp")).await
}

/// A modern (2026-07-28) request with its mirrored headers; keys already in `params._meta`
/// (a `progressToken`) are kept.
pub async fn modern(url: &str, token: &str, id: Value, method: &str, params: Value) -> Answer {
    modern_on(&super::http(), url, token, id, method, params).await
}

/// As [`modern`], sent by `client`.
pub async fn modern_on(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    id: Value,
    method: &str,
    params: Value,
) -> Answer {
    let (headers, body) = modern_request(id, method, params);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post_on(client, url, token, &headers, &body).await
}

/// A modern `tools/call` of `name` with `arguments`.
pub async fn modern_tool(
    url: &str,
    token: &str,
    id: Value,
    name: &str,
    arguments: Value,
) -> Answer {
    modern(
        url,
        token,
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
    .await
}

/// The headers and body of a modern request (for clients that read the answer themselves).
pub fn modern_request(
    id: Value,
    method: &str,
    mut params: Value,
) -> (Vec<(&'static str, String)>, Value) {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    if let (Some(extra), Some(meta)) = (
        params.get("_meta").and_then(Value::as_object).cloned(),
        meta.as_object_mut(),
    ) {
        meta.extend(extra);
    }
    params["_meta"] = meta;
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut headers = vec![
        ("mcp-protocol-version", MODERN.to_owned()),
        ("mcp-method", method.to_owned()),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name", name));
    }
    (
        headers,
        json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}),
    )
}

/// A response stream kept open and read event by event (a `subscriptions/listen` stream).
pub struct EventStream {
    response: reqwest::Response,
    buf: String,
    queue: std::collections::VecDeque<Value>,
}

impl EventStream {
    /// Sends a modern request and keeps its SSE answer open.
    pub async fn modern(url: &str, token: &str, id: Value, method: &str, params: Value) -> Self {
        Self::modern_on(&reqwest::Client::new(), url, token, id, method, params).await
    }

    /// As [`EventStream::modern`], sent by `client`.
    pub async fn modern_on(
        client: &reqwest::Client,
        url: &str,
        token: &str,
        id: Value,
        method: &str,
        params: Value,
    ) -> Self {
        let (headers, body) = modern_request(id, method, params);
        let mut req = client
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in &headers {
            req = req.header(*k, v.as_str());
        }
        let response = req.send().await.expect("POST /mcp");
        assert_eq!(response.status(), 200, "{method}");
        let ct = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "{method}: {ct}");
        Self {
            response,
            buf: String::new(),
            queue: Default::default(),
        }
    }

    /// The next event's data as JSON; `None` when the stream ends or nothing comes in time.
    pub async fn next(&mut self, within: std::time::Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = self.queue.pop_front() {
                return Some(v);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                for data in sse_data(&block) {
                    if let Ok(v) = serde_json::from_str(&data) {
                        self.queue.push_back(v);
                    }
                }
            }
        }
    }
}
