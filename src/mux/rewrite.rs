//! The id-like values inside messages that the multiplexer translates besides the top-level
//! `id`: progress tokens (client → proxy token → client) and subscription ids.

use serde_json::Value;

use crate::protocol::SUBSCRIPTION_ID;
use crate::protocol::jsonrpc::{ClientMessage, Message};

/// A client request as the child gets it: the proxy id in place of the client's, and the
/// progress token, when there is one, replaced too.
pub(crate) struct ToChild {
    pub(crate) line: String,
    /// The proxy's token (raw JSON) and the client's original one.
    pub(crate) progress: Option<(Box<str>, Box<str>)>,
}

/// Rewrites request `item` of `message` for the child under `proxy_id` (what
/// [`super::Mux::send`] does to every request; the fuzz target checks it round-trips).
pub(crate) fn request_to_child(message: &ClientMessage, item: &Message, proxy_id: u64) -> ToChild {
    let line = message.rewrite(item, Some(&proxy_id.to_string()), None);
    if item.progress_token
        && let Some((rewritten, original)) = progress_token(&line, proxy_id)
    {
        let token: Box<str> = format!("\"pt-{proxy_id}\"").into();
        return ToChild {
            line: rewritten,
            progress: Some((token, original.into())),
        };
    }
    ToChild {
        line,
        progress: None,
    }
}

/// Rewrites `params._meta.progressToken` to `"pt-<proxy id>"`; returns the line and the
/// original token as raw JSON.
fn progress_token(line: &str, proxy_id: u64) -> Option<(String, String)> {
    let mut value: Value = serde_json::from_str(line).ok()?;
    let token = value.pointer_mut("/params/_meta/progressToken")?;
    let original = serde_json::to_string(token).ok()?;
    *token = Value::String(format!("pt-{proxy_id}"));
    Some((serde_json::to_string(&value).ok()?, original))
}

/// The proxy token of a `notifications/progress` line (raw JSON).
pub(super) fn progress_of(value: &mut Value) -> Option<(&mut Value, String)> {
    let token = value.pointer_mut("/params/progressToken")?;
    let raw = serde_json::to_string(token).ok()?;
    Some((token, raw))
}

/// The proxy id in `params._meta[subscriptionId]` of a notification.
pub(super) fn subscription_of(value: &mut Value) -> Option<(&mut Value, u64)> {
    let sub = value
        .pointer_mut("/params/_meta")?
        .get_mut(SUBSCRIPTION_ID)?;
    let id = sub.as_u64()?;
    Some((sub, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_tokens_round_trip() {
        let line = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":"abc"}}}"#;
        let (rewritten, original) = progress_token(line, 5).expect("token");
        assert!(
            rewritten.contains(r#""progressToken":"pt-5""#),
            "{rewritten}"
        );
        assert_eq!(original, r#""abc""#);
        let mut note: Value = serde_json::from_str(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"pt-5","progress":1}}"#,
        )
        .expect("json");
        let (slot, raw) = progress_of(&mut note).expect("token");
        assert_eq!(raw, r#""pt-5""#);
        *slot = serde_json::from_str(&original).expect("original");
        assert_eq!(note["params"]["progressToken"], "abc");
    }
}
