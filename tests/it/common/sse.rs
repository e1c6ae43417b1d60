//! A minimal legacy HTTP+SSE client over reqwest, for assertions the SDK clients hide.

use std::time::Duration;

use serde_json::Value;

pub struct SseClient {
    response: reqwest::Response,
    buf: String,
    pub session_id: String,
    pub endpoint: String,
    pub headers: reqwest::header::HeaderMap,
    token: String,
    /// One client for the session's POSTs: building a reqwest client per POST (its TLS roots
    /// are loaded each time) made a burst of POSTs cost seconds.
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseClient {
    /// `GET {base}/sse` with `token`; reads the endpoint event. Panics on a non-200.
    pub async fn connect(base_sse_url: &str, token: &str) -> SseClient {
        Self::connect_with(base_sse_url, token, &[]).await
    }

    /// As [`SseClient::connect`], with extra request headers.
    pub async fn connect_with(
        base_sse_url: &str,
        token: &str,
        extra: &[(&str, &str)],
    ) -> SseClient {
        Self::connect_on(super::http(), base_sse_url, token, extra).await
    }

    /// As [`SseClient::connect_with`], the stream and the session's POSTs sent by `http`.
    pub async fn connect_on(
        http: reqwest::Client,
        base_sse_url: &str,
        token: &str,
        extra: &[(&str, &str)],
    ) -> SseClient {
        let mut request = http
            .get(base_sse_url)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600));
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("GET /sse");
        assert_eq!(response.status(), 200, "GET /sse status");
        let headers = response.headers().clone();
        let session_id = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut client = SseClient {
            response,
            buf: String::new(),
            session_id,
            endpoint: String::new(),
            headers,
            token: token.to_owned(),
            http,
        };
        let first = client.next_event().await.expect("endpoint event");
        assert_eq!(first.event, "endpoint");
        client.endpoint = first.data;
        client
    }

    /// The next event (comments skipped), or `None` when the stream ends. Bounded by 20 s.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(Duration::from_secs(20), self.next_event_inner())
            .await
            .expect("SSE event within 20 s")
    }

    async fn next_event_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut event = String::from("message");
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // comment / keep-alive
                }
                return Some(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next `message` event as JSON.
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            let ev = self.next_event().await?;
            if ev.event == "message" {
                return Some(serde_json::from_str(&ev.data).expect("message is JSON"));
            }
        }
    }

    /// The response with this id, skipping notifications.
    pub async fn response_to(&mut self, id: &Value) -> Value {
        loop {
            let msg = self
                .next_message()
                .await
                .expect("stream ended before the response");
            if msg.get("id") == Some(id) && msg.get("method").is_none() {
                return msg;
            }
        }
    }

    /// POSTs a message to the endpoint; returns the status.
    pub async fn post(&self, body: &Value) -> u16 {
        self.post_raw(body.to_string().into_bytes(), &self.token.clone())
            .await
    }

    pub async fn post_raw(&self, body: Vec<u8>, token: &str) -> u16 {
        self.http
            .post(&self.endpoint)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST")
            .status()
            .as_u16()
    }

    /// Sends a request and waits for its response.
    pub async fn call(&mut self, id: Value, method: &str, params: Value) -> Value {
        let status = self
            .post(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(status, 202, "POST {method}");
        self.response_to(&id).await
    }

    /// initialize + notifications/initialized.
    pub async fn initialize(&mut self) -> Value {
        let r = self
            .call(
                serde_json::json!(0),
                "initialize",
                serde_json::json!({
                    "protocolVersion": "2024-11-05",
                    "capabilities": {},
                    "clientInfo": {"name": "it", "version": "0"}
                }),
            )
            .await;
        let s = self
            .post(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(s, 202);
        r
    }

    /// Calls a tool and returns the first text content.
    pub async fn tool_text(&mut self, id: Value, name: &str, args: Value) -> String {
        let r = self
            .call(
                id,
                "tools/call",
                serde_json::json!({"name": name, "arguments": args}),
            )
            .await;
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text in {r}"))
            .to_owned()
    }
}
