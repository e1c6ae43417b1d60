//! JSON-RPC 2.0 framing for the pipe: classify a message by looking only at `id` and `method`
//! (raw values, no full parse), validate what clients send, make one compact line of it.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INTERNAL_ERROR: i64 = -32603;

/// What a message is, from its `id` and `method` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// A message seen through its routing fields only.
#[derive(Debug, Deserialize)]
pub struct Probe<'a> {
    /// `Some("null")` for an explicit null, `None` when absent.
    #[serde(borrow, default, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

impl Probe<'_> {
    pub fn kind(&self) -> Kind {
        match (&self.method, self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }

    fn is_valid(&self) -> bool {
        self.jsonrpc.as_deref() == Some("2.0")
            && (self.method.is_some()
                || (self.id.is_some() && (self.result.is_some() || self.error.is_some())))
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Looks at one message's `id`/`method`. `None` when it is not a JSON object.
pub fn probe(text: &str) -> Option<Probe<'_>> {
    serde_json::from_str(text).ok()
}

/// Why a client's body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (-32700).
    Parse,
    /// JSON, but not a JSON-RPC 2.0 message (-32600).
    Invalid,
}

impl BodyError {
    pub fn code(self) -> i64 {
        match self {
            BodyError::Parse => PARSE_ERROR,
            BodyError::Invalid => INVALID_REQUEST,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            BodyError::Parse => "Parse error",
            BodyError::Invalid => "Invalid Request",
        }
    }
}

/// A validated client message (or batch), as one line for the child's stdin.
#[derive(Debug)]
pub struct ClientMessage {
    /// Compact JSON without a trailing newline.
    pub line: Vec<u8>,
    /// The ids of the requests in it (raw JSON text), to track what is in flight.
    pub request_ids: Vec<String>,
    /// Whether it is a batch (a JSON array).
    pub batch: bool,
    /// Number of requests / notifications / responses.
    pub kinds: Vec<Kind>,
    /// The method of the first message, if any (for logs and metrics).
    pub first_method: Option<String>,
}

/// Validates a POSTed body and makes it one compact line. A body without line breaks is
/// forwarded byte for byte; otherwise it is re-serialized (JSON strings cannot contain raw
/// newlines, so any line break is insignificant whitespace).
pub fn client_message(body: &[u8]) -> Result<ClientMessage, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Parse)?;
    let raw: &RawValue = serde_json::from_str(text).map_err(|_| BodyError::Parse)?;
    let trimmed = raw.get().trim_start();
    let (batch, items): (bool, Vec<&RawValue>) = if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(raw.get()).map_err(|_| BodyError::Invalid)?;
        if items.is_empty() {
            return Err(BodyError::Invalid);
        }
        (true, items)
    } else {
        (false, vec![raw])
    };
    let mut request_ids = Vec::new();
    let mut kinds = Vec::with_capacity(items.len());
    let mut first_method = None;
    for item in items {
        let probe: Probe<'_> = serde_json::from_str(item.get()).map_err(|_| BodyError::Invalid)?;
        if !probe.is_valid() {
            return Err(BodyError::Invalid);
        }
        let kind = probe.kind();
        if kind == Kind::Request
            && let Some(id) = probe.id
        {
            if !is_valid_id(id) {
                return Err(BodyError::Invalid);
            }
            request_ids.push(id.get().to_owned());
        }
        if first_method.is_none() {
            first_method = probe.method.as_deref().map(str::to_owned);
        }
        kinds.push(kind);
    }
    let line = if body.iter().any(|b| *b == b'\n' || *b == b'\r') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| BodyError::Parse)?;
        serde_json::to_vec(&value).map_err(|_| BodyError::Parse)?
    } else {
        body.to_vec()
    };
    Ok(ClientMessage {
        line,
        request_ids,
        batch,
        kinds,
        first_method,
    })
}

/// Replaces `part` (a slice of `line`, e.g. a raw `id` from [`probe`]) with `replacement`.
/// Falls back to `None` when `part` does not point into `line`.
pub fn splice(line: &str, part: &str, replacement: &str) -> Option<String> {
    let start = (part.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    if end > line.len() || !line.is_char_boundary(start) || !line.is_char_boundary(end) {
        return None;
    }
    let mut out = String::with_capacity(line.len() - part.len() + replacement.len());
    out.push_str(&line[..start]);
    out.push_str(replacement);
    out.push_str(&line[end..]);
    Some(out)
}

/// MCP request ids are strings or integers (schema `RequestId`), never null.
fn is_valid_id(id: &RawValue) -> bool {
    let s = id.get();
    s.starts_with('"') || s.starts_with('-') || s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// A JSON-RPC error response; `id` is raw JSON text (`null` when unknown).
pub fn error_response(id: &str, code: i64, message: &str) -> String {
    let message = serde_json::Value::String(message.to_owned());
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let p = probe(r#"{"jsonrpc":"2.0","id":"7","method":"tools/call","params":{}}"#)
            .expect("object");
        assert_eq!(p.kind(), Kind::Request);
        assert_eq!(p.id.map(RawValue::get), Some(r#""7""#));
        let p = probe(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#).expect("object");
        assert_eq!(p.kind(), Kind::Notification);
        let p = probe(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#).expect("object");
        assert_eq!(
            (p.kind(), p.id.map(RawValue::get)),
            (Kind::Response, Some("7"))
        );
        assert!(probe("not json").is_none());
    }

    #[test]
    fn client_bodies() {
        let m = client_message(b"{\"jsonrpc\":\"2.0\",\n \"id\":1,\"method\":\"ping\"}")
            .expect("valid");
        assert!(!m.line.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&m.line).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"ping"})
        );
        assert_eq!(m.request_ids, vec!["1"]);
        let same = br#"{"jsonrpc":"2.0","id":"a b","method":"ping"}"#;
        assert_eq!(client_message(same).expect("valid").line, same);
        assert_eq!(client_message(b"{nope").err(), Some(BodyError::Parse));
        assert_eq!(client_message(b"[]").err(), Some(BodyError::Invalid));
        assert_eq!(client_message(b"42").err(), Some(BodyError::Invalid));
        assert_eq!(
            client_message(br#"{"id":1,"method":"x"}"#).err(),
            Some(BodyError::Invalid)
        );
        assert_eq!(
            client_message(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).err(),
            Some(BodyError::Invalid)
        );
        let b = client_message(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"}]"#,
        )
        .expect("batch");
        assert!(b.batch);
        assert_eq!(b.kinds, vec![Kind::Request, Kind::Notification]);
    }

    #[test]
    fn splice_replaces_only_the_top_level_id() {
        let line = r#"{"jsonrpc":"2.0","id":"a","method":"m","params":{"id":"a"}}"#;
        let p = probe(line).expect("object");
        let id = p.id.expect("id").get();
        let out = splice(line, id, "17").expect("in bounds");
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":17,"method":"m","params":{"id":"a"}}"#
        );
        assert!(splice(line, "elsewhere", "1").is_none());
    }

    #[test]
    fn error_line_is_json() {
        let line = error_response(r#""x""#, INTERNAL_ERROR, "server process exited");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], -32603);
    }
}
