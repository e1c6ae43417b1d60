//! The id-like values the multiplexer translates: a request's `id` and progress token on the
//! way in (replaced in place, every other byte kept), progress tokens (proxy token → client's)
//! and subscription ids on the way out.

use serde_json::Value;

use crate::protocol::SUBSCRIPTION_ID;
use crate::protocol::jsonrpc::{ClientMessage, Message, Replace};

/// A client request as the child gets it: the proxy id in place of the client's, and the
/// progress token, when there is one, replaced too.
pub(crate) struct ToChild {
    pub(crate) line: String,
    /// The proxy's token (raw JSON) and the client's original one.
    pub(crate) progress: Option<(Box<str>, Box<str>)>,
}

/// Rewrites request `item` of `message` for the child under `proxy_id` (what
/// [`super::Mux::send`] does to every request; the fuzz target checks it round-trips). Both
/// values are replaced in place, every other byte is the client's.
pub(crate) fn request_to_child(message: &ClientMessage, item: &Message, proxy_id: u64) -> ToChild {
    let id = proxy_id.to_string();
    let Some(original) = message.progress_token(item) else {
        let with = Replace {
            id: Some(&id),
            ..Replace::default()
        };
        return ToChild {
            line: message.rewrite(item, with),
            progress: None,
        };
    };
    let token = format!("\"pt-{proxy_id}\"");
    let with = Replace {
        id: Some(&id),
        progress_token: Some(&token),
        ..Replace::default()
    };
    ToChild {
        line: message.rewrite(item, with),
        progress: Some((token.into(), original.into())),
    }
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
    use crate::protocol::jsonrpc;

    #[test]
    fn progress_tokens_round_trip() {
        let body = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":"abc"}}}"#;
        let message = jsonrpc::client_message(body).expect("valid");
        let item = message.first().expect("one");
        let ToChild { line, progress } = request_to_child(&message, item, 5);
        assert!(line.contains(r#""progressToken":"pt-5""#), "{line}");
        let (token, original) = progress.expect("token");
        assert_eq!((&*token, &*original), (r#""pt-5""#, r#""abc""#));
        let mut note: Value = serde_json::from_str(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"pt-5","progress":1}}"#,
        )
        .expect("json");
        let (slot, raw) = progress_of(&mut note).expect("token");
        assert_eq!(raw, r#""pt-5""#);
        *slot = serde_json::from_str(&original).expect("original");
        assert_eq!(note["params"]["progressToken"], "abc");
    }

    /// Found by the `jsonrpc_rewrite` fuzz target: the token was replaced by re-serializing
    /// the whole request, which reordered its keys and changed a large integer argument
    /// (12345678901234586790123 reached the child as 1.2345678901234589e22).
    #[test]
    fn a_request_with_a_progress_token_keeps_every_other_byte() {
        let body = r#"{ "method" : "tools/call" , "params" : { "arguments" : { "n" : 12345678901234586790123, "f" : 0.1 }, "_meta" : { "progressToken" : "a\u0062c" }, "name" : "x" }, "id" : "\u00e9" , "jsonrpc" : "2.0" }"#;
        let message = jsonrpc::client_message(body.as_bytes()).expect("valid");
        let item = message.first().expect("one");
        let ToChild { line, progress } = request_to_child(&message, item, 7);
        let want = body
            .replace(r#""\u00e9""#, "7")
            .replace(r#""a\u0062c""#, r#""pt-7""#);
        assert_eq!(line, want);
        let (token, original) = progress.expect("token");
        assert_eq!((&*token, &*original), (r#""pt-7""#, r#""a\u0062c""#));
    }
}
