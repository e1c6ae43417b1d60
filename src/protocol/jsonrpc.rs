//! JSON-RPC 2.0 for the pipe: one look at a message — its `id`, `method` and the few `params`
//! the proxy routes or judges by — taken once per client body and shared by the transport, the
//! tool policy and the multiplexer; validation of what clients send; id splicing.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::params::Params;
use super::{INVALID_REQUEST, PARSE_ERROR};

/// What a message is, from its `id` and `method` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Notification,
    Response,
}

/// A message seen through its routing fields only (the child's lines are looked at this way).
#[derive(Debug, Deserialize)]
pub(crate) struct Probe<'a> {
    /// `Some("null")` for an explicit null, `None` when absent.
    #[serde(borrow, default, deserialize_with = "present")]
    pub(crate) id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    /// Kept as text (skipped like any other value): only the audit log reads its code.
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Params<'a>,
}

impl Probe<'_> {
    pub(crate) fn kind(&self) -> Kind {
        match (&self.method, self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }

    /// The `code` of an error answer's `error`; `None` for a result (or an error without an
    /// integer code).
    pub(crate) fn error_code(&self) -> Option<i64> {
        #[derive(Deserialize)]
        struct Code {
            code: i64,
        }
        serde_json::from_str::<Code>(self.error?.get())
            .ok()
            .map(|c| c.code)
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
pub(crate) fn probe(text: &str) -> Option<Probe<'_>> {
    serde_json::from_str(text).ok()
}

/// Why a client's body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Not JSON at all (-32700).
    Parse,
    /// JSON, but not a JSON-RPC 2.0 message (-32600).
    Invalid,
}

impl BodyError {
    pub(crate) fn code(self) -> i64 {
        match self {
            BodyError::Parse => PARSE_ERROR,
            BodyError::Invalid => INVALID_REQUEST,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            BodyError::Parse => "Parse error",
            BodyError::Invalid => "Invalid Request",
        }
    }
}

/// One message of a client body, as the proxy needs to see it. Ranges index
/// [`ClientMessage::line`].
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) kind: Kind,
    /// The raw `id` (requests and responses).
    id: Option<Range<usize>>,
    pub(crate) method: Option<String>,
    /// `params.name` when it is a string (`tools/call`, `prompts/get`).
    pub(crate) name: Option<String>,
    /// `params.uri` when it is a string (`resources/read`).
    pub(crate) uri: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` when it is a string.
    pub(crate) protocol_version: Option<String>,
    /// The raw `params._meta.progressToken`.
    progress_token: Option<Range<usize>>,
    /// The raw `params.requestId` (`notifications/cancelled`).
    request_id: Option<Range<usize>>,
    /// The whole message (an element of a batch, or the whole line).
    span: Range<usize>,
}

/// What [`ClientMessage::rewrite`] puts in place of a message's id-like values (raw JSON);
/// `None` keeps a value as it is.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Replace<'a> {
    pub(crate) id: Option<&'a str>,
    /// `params.requestId` (`notifications/cancelled`).
    pub(crate) request_id: Option<&'a str>,
    /// `params._meta.progressToken`.
    pub(crate) progress_token: Option<&'a str>,
}

/// A validated client body (one message or a batch) as one compact line for the child's stdin,
/// with what each message is.
#[derive(Debug, Clone)]
pub(crate) struct ClientMessage {
    /// Compact JSON without a trailing newline.
    pub(crate) line: String,
    /// Whether it is a batch (a JSON array).
    pub(crate) batch: bool,
    pub(crate) items: Vec<Message>,
}

impl ClientMessage {
    /// The first message (a body holds at least one).
    pub(crate) fn first(&self) -> Option<&Message> {
        self.items.first()
    }

    /// The method of the first message.
    pub(crate) fn first_method(&self) -> Option<&str> {
        self.first().and_then(|m| m.method.as_deref())
    }

    /// The raw id of the first request, `null` when there is none.
    pub(crate) fn first_request_id(&self) -> &str {
        self.items
            .iter()
            .find(|m| m.kind == Kind::Request)
            .and_then(|m| self.id(m))
            .unwrap_or("null")
    }

    /// The raw id of `message`.
    pub(crate) fn id(&self, message: &Message) -> Option<&str> {
        message.id.clone().and_then(|r| self.line.get(r))
    }

    /// The raw `params.requestId` of `message`.
    pub(crate) fn cancelled_id(&self, message: &Message) -> Option<&str> {
        message.request_id.clone().and_then(|r| self.line.get(r))
    }

    /// The raw `params._meta.progressToken` of `message`.
    pub(crate) fn progress_token(&self, message: &Message) -> Option<&str> {
        message
            .progress_token
            .clone()
            .and_then(|r| self.line.get(r))
    }

    /// The text of `message` alone.
    pub(crate) fn text(&self, message: &Message) -> &str {
        self.line.get(message.span.clone()).unwrap_or_default()
    }

    /// `message`'s text with the values `with` names replaced in place: every other byte is
    /// the client's (a body is forwarded byte for byte; re-serializing it would reorder keys
    /// and round numbers beyond f64).
    pub(crate) fn rewrite(&self, message: &Message, with: Replace<'_>) -> String {
        let base = message.span.start;
        let mut edits: Vec<(Range<usize>, &str)> = Vec::with_capacity(3);
        for (range, value) in [
            (&message.id, with.id),
            (&message.request_id, with.request_id),
            (&message.progress_token, with.progress_token),
        ] {
            if let (Some(range), Some(value)) = (range.clone(), value) {
                edits.push((range, value));
            }
        }
        edits.sort_by_key(|(r, _)| r.start);
        let text = self.text(message);
        let mut out = String::with_capacity(text.len() + 16);
        let mut at = 0;
        for (range, with) in edits {
            let (start, end) = (range.start - base, range.end - base);
            out.push_str(text.get(at..start).unwrap_or_default());
            out.push_str(with);
            at = end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        out
    }
}

/// The offset of `part` (a slice borrowed from `line`) in `line`.
fn range_in(line: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= line.len()).then_some(start..end)
}

/// A raw JSON value that is a string, unescaped.
fn raw_string(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// Validates a POSTed body and makes it one compact line. A body without line breaks is
/// forwarded byte for byte; otherwise it is re-serialized (JSON strings cannot contain raw
/// newlines, so any line break is insignificant whitespace). The body is looked at once.
pub(crate) fn client_message(body: &[u8]) -> Result<ClientMessage, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Parse)?;
    let line = if text.bytes().any(|b| b == b'\n' || b == b'\r') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| BodyError::Parse)?;
        serde_json::to_string(&value).map_err(|_| BodyError::Parse)?
    } else {
        text.to_owned()
    };
    let trimmed = line.trim_start();
    let batch = trimmed.starts_with('[');
    let items = if batch {
        let elements: Vec<&RawValue> = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) if e.is_syntax() || e.is_eof() => return Err(BodyError::Parse),
            Err(_) => return Err(BodyError::Invalid),
        };
        if elements.is_empty() {
            return Err(BodyError::Invalid);
        }
        let mut items = Vec::with_capacity(elements.len());
        for element in elements {
            let span = range_in(&line, element.get()).ok_or(BodyError::Invalid)?;
            let probe: Probe<'_> =
                serde_json::from_str(element.get()).map_err(|_| BodyError::Invalid)?;
            items.push(message(&line, &probe, span)?);
        }
        items
    } else if trimmed.starts_with('{') {
        let probe: Probe<'_> = match serde_json::from_str(&line) {
            Ok(p) => p,
            Err(e) if e.is_syntax() || e.is_eof() => return Err(BodyError::Parse),
            Err(_) => return Err(BodyError::Invalid),
        };
        vec![message(&line, &probe, 0..line.len())?]
    } else {
        serde_json::from_str::<IgnoredAny>(&line).map_err(|_| BodyError::Parse)?;
        return Err(BodyError::Invalid);
    };
    Ok(ClientMessage { line, batch, items })
}

fn message(line: &str, probe: &Probe<'_>, span: Range<usize>) -> Result<Message, BodyError> {
    if !probe.is_valid() {
        return Err(BodyError::Invalid);
    }
    let kind = probe.kind();
    if kind == Kind::Request && !probe.id.is_some_and(is_valid_id) {
        return Err(BodyError::Invalid);
    }
    let id = match probe.id {
        Some(id) => Some(range_in(line, id.get()).ok_or(BodyError::Invalid)?),
        None => None,
    };
    let request_id = probe
        .params
        .request_id
        .and_then(|r| range_in(line, r.get()));
    let progress_token = probe
        .params
        .progress_token
        .and_then(|r| range_in(line, r.get()));
    Ok(Message {
        kind,
        id,
        method: probe.method.as_deref().map(str::to_owned),
        name: raw_string(probe.params.name),
        uri: raw_string(probe.params.uri),
        protocol_version: raw_string(probe.params.protocol_version),
        progress_token,
        request_id,
        span,
    })
}

/// Replaces `part` (a slice of `line`, e.g. a raw `id` from [`probe`]) with `replacement`.
/// `None` when `part` does not point into `line`.
pub(crate) fn splice(line: &str, part: &str, replacement: &str) -> Option<String> {
    let range = range_in(line, part)?;
    if !line.is_char_boundary(range.start) || !line.is_char_boundary(range.end) {
        return None;
    }
    let mut out = String::with_capacity(line.len() - part.len() + replacement.len());
    out.push_str(&line[..range.start]);
    out.push_str(replacement);
    out.push_str(&line[range.end..]);
    Some(out)
}

/// MCP request ids are strings or integers (schema `RequestId`), never null.
fn is_valid_id(id: &RawValue) -> bool {
    let s = id.get();
    s.starts_with('"') || s.starts_with('-') || s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// A JSON-RPC error response; `id` is raw JSON text (`null` when unknown).
pub(crate) fn error_response(id: &str, code: i64, message: &str) -> String {
    let message = serde_json::Value::String(message.to_owned());
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
}

/// The error code of a JSON-RPC error response, when `line` is one.
pub(crate) fn error_code(line: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Answer {
        error: Option<Code>,
    }
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    if !line.contains("\"error\"") {
        return None;
    }
    serde_json::from_str::<Answer>(line)
        .ok()?
        .error
        .map(|e| e.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::INTERNAL_ERROR;

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
        let p = probe(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,{"name":2}]}"#)
            .expect("positional params read as empty");
        assert!(p.params.name.is_none());
    }

    #[test]
    fn an_answers_error_code_is_read_and_a_malformed_error_is_still_an_answer() {
        let code = |line| probe(line).expect("object").error_code();
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":7,"error":{"message":"x","code":-32001}}"#),
            Some(-32001)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":7,"result":{"error":1}}"#),
            None
        );
        let odd = probe(r#"{"jsonrpc":"2.0","id":7,"error":"boom"}"#).expect("object");
        assert_eq!((odd.kind(), odd.error_code()), (Kind::Response, None));
        assert!(odd.is_valid());
    }

    #[test]
    fn client_bodies() {
        let m = client_message(b"{\"jsonrpc\":\"2.0\",\n \"id\":1,\"method\":\"ping\"}")
            .expect("valid");
        assert!(!m.line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&m.line).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"ping"})
        );
        assert_eq!(m.first_request_id(), "1");
        let same = br#"{"jsonrpc":"2.0","id":"a b","method":"ping"}"#;
        assert_eq!(client_message(same).expect("valid").line.as_bytes(), same);
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
        let kinds: Vec<Kind> = b.items.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, vec![Kind::Request, Kind::Notification]);
        assert_eq!(b.text(&b.items[1]), r#"{"jsonrpc":"2.0","method":"n"}"#);
    }

    #[test]
    fn one_look_reads_the_routing_params() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get w\u00e9ather","arguments":{"name":"inner"},"_meta":{"progressToken":9,"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let m = client_message(body).expect("valid");
        let first = m.first().expect("one");
        assert_eq!(first.name.as_deref(), Some("get wéather"));
        assert_eq!(first.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(m.progress_token(first), Some("9"));
        let cancel = client_message(
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a","reason":"x"}}"#,
        )
        .expect("valid");
        let note = cancel.first().expect("one");
        assert_eq!(cancel.cancelled_id(note), Some(r#""a""#));
        assert_eq!(
            cancel.rewrite(
                note,
                Replace {
                    request_id: Some("17"),
                    ..Replace::default()
                }
            ),
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":17,"reason":"x"}}"#
        );
    }

    #[test]
    fn rewrite_replaces_only_the_top_level_id() {
        let m = client_message(br#"{"jsonrpc":"2.0","id":"a","method":"m","params":{"id":"a"}}"#)
            .expect("valid");
        let first = m.first().expect("one");
        assert_eq!(
            m.rewrite(
                first,
                Replace {
                    id: Some("17"),
                    ..Replace::default()
                }
            ),
            r#"{"jsonrpc":"2.0","id":17,"method":"m","params":{"id":"a"}}"#
        );
        let line = m.line.as_str();
        let p = probe(line).expect("object");
        let id = p.id.expect("id").get();
        assert_eq!(
            splice(line, id, "17").as_deref(),
            Some(r#"{"jsonrpc":"2.0","id":17,"method":"m","params":{"id":"a"}}"#)
        );
        assert!(splice(line, "elsewhere", "1").is_none());
    }

    #[test]
    fn error_line_is_json() {
        let line = error_response(r#""x""#, INTERNAL_ERROR, "server process exited");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], -32603);
        assert_eq!(error_code(&line), Some(INTERNAL_ERROR));
        assert_eq!(error_code(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#), None);
    }
}
