//! The trace context of a JSON-RPC request's `params._meta` (spec 2026-07-28 index,
//! "OpenTelemetry trace context"): the client's, read; the proxy's, written in its place.
//! The line is edited in place — every other byte stays the client's, as the multiplexer's id
//! rewriting keeps them — and only when telemetry is on.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Where a request line's trace context is, or would go.
struct Located<'a> {
    params: Option<&'a RawValue>,
    meta: Option<&'a RawValue>,
    traceparent: Option<&'a RawValue>,
    tracestate: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default, rename = "_meta", deserialize_with = "present")]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    traceparent: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    tracestate: Option<&'a RawValue>,
}

/// A member that is present, `null` included (serde's `Option` reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// `None` when the line is not one JSON object with unique members of these names.
fn locate(line: &str) -> Option<Located<'_>> {
    // serde reads a struct from an array too: only an object is a request here.
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let request: Request<'_> = serde_json::from_str(line).ok()?;
    let mut located = Located {
        params: request.params,
        meta: None,
        traceparent: None,
        tracestate: None,
    };
    if let Some(params) = request.params.filter(|p| is_object(p)) {
        let params: Params<'_> = serde_json::from_str(params.get()).ok()?;
        located.meta = params.meta;
        if let Some(meta) = params.meta.filter(|m| is_object(m)) {
            let meta: Meta<'_> = serde_json::from_str(meta.get()).ok()?;
            located.traceparent = meta.traceparent;
            located.tracestate = meta.tracestate;
        }
    }
    Some(located)
}

fn string(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?;
    raw.get()
        .starts_with('"')
        .then(|| serde_json::from_str(raw.get()).ok())
        .flatten()
}

/// The client's `params._meta.traceparent` and `tracestate`, when they are strings.
pub(crate) fn incoming(line: &str) -> Option<(String, Option<String>)> {
    let located = locate(line)?;
    Some((string(located.traceparent)?, string(located.tracestate)))
}

/// `line` with `params._meta.traceparent` set to `traceparent` (replacing the client's) and,
/// when `tracestate` is not empty, `params._meta.tracestate` to it; `_meta` and `params` are
/// added when missing. `None` when the line cannot take them (not an object, `params` or
/// `_meta` not objects, a member given twice): then it is forwarded as it came.
pub(crate) fn inject(line: &str, traceparent: &str, tracestate: &str) -> Option<String> {
    let located = locate(line)?;
    let quoted = |s: &str| serde_json::to_string(s).ok();
    let traceparent = quoted(traceparent)?;
    let tracestate = match tracestate {
        "" => None,
        s => Some(quoted(s)?),
    };
    // (offset, length replaced, text), applied back to front.
    let mut edits: Vec<(usize, usize, String)> = Vec::with_capacity(2);
    let members = |with_state: bool| {
        let mut m = format!("\"traceparent\":{traceparent}");
        if let (true, Some(state)) = (with_state, &tracestate) {
            m.push_str(",\"tracestate\":");
            m.push_str(state);
        }
        m
    };
    match (located.params, located.meta) {
        (None, _) => {
            // No params: the object has at least `jsonrpc` and `method`, so a comma leads.
            let close = line.rfind('}')?;
            let text = format!(",\"params\":{{\"_meta\":{{{}}}}}", members(true));
            edits.push((close, 0, text));
        }
        (Some(params), None) => {
            if !is_object(params) {
                return None;
            }
            let text = format!("\"_meta\":{{{}}}", members(true));
            edits.push(open_insert(line, params, text)?);
        }
        (Some(_), Some(meta)) => {
            if !is_object(meta) {
                return None;
            }
            match located.traceparent {
                Some(old) => {
                    let start = offset(line, old)?;
                    edits.push((start, old.get().len(), traceparent.clone()));
                    if let Some(state) = &tracestate {
                        match located.tracestate {
                            Some(old) => {
                                edits.push((offset(line, old)?, old.get().len(), state.clone()));
                            }
                            None => edits.push(open_insert(
                                line,
                                meta,
                                format!("\"tracestate\":{state}"),
                            )?),
                        }
                    }
                }
                None => {
                    // A client's tracestate without a traceparent is replaced as a pair.
                    match (located.tracestate, &tracestate) {
                        (Some(old), Some(state)) => {
                            edits.push((offset(line, old)?, old.get().len(), state.clone()));
                            edits.push(open_insert(line, meta, members(false))?);
                        }
                        _ => edits.push(open_insert(line, meta, members(true))?),
                    }
                }
            }
        }
    }
    edits.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
    let mut out = line.to_owned();
    for (at, len, text) in edits {
        if !out.is_char_boundary(at) || !out.is_char_boundary(at + len) {
            return None;
        }
        out.replace_range(at..at + len, &text);
    }
    Some(out)
}

/// The offset of `part` (borrowed from `line`) in `line`.
fn offset(line: &str, part: &RawValue) -> Option<usize> {
    let start = (part.get().as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    (start + part.get().len() <= line.len()).then_some(start)
}

/// An edit that puts `member` first in the object `object` (a comma after it unless the
/// object is empty).
fn open_insert(
    line: &str,
    object: &RawValue,
    mut member: String,
) -> Option<(usize, usize, String)> {
    let start = offset(line, object)?;
    let empty = object.get()[1..].trim_start().starts_with('}');
    if !empty {
        member.push(',');
    }
    Some((start + 1, 0, member))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";

    fn meta_of(line: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(line).expect("still JSON");
        v["params"]["_meta"].clone()
    }

    #[test]
    fn writes_the_proxys_context_wherever_the_request_has_room() {
        let cases = [
            // no params, empty params, params without _meta, empty _meta, _meta with others
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, None),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{ }}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":"pt-1"}}}"#,
                Some("pt-1"),
            ),
            // the client's traceparent is replaced, other members kept
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":"pt-1","traceparent":"00-11111111111111111111111111111111-2222222222222222-01"}}}"#,
                Some("pt-1"),
            ),
        ];
        for (line, progress) in cases {
            let out = inject(line, TP, "").unwrap_or_else(|| panic!("{line}"));
            let meta = meta_of(&out);
            assert_eq!(meta["traceparent"], TP, "{out}");
            assert_eq!(meta["progressToken"].as_str(), progress, "{out}");
            assert!(meta.get("tracestate").is_none(), "{out}");
            assert_eq!(incoming(&out).map(|(tp, _)| tp).as_deref(), Some(TP));
        }
    }

    #[test]
    fn keeps_every_other_byte_and_writes_the_tracestate() {
        let line = r#"{ "id" : 7, "params" : { "arguments" : { "n" : 12345678901234586790123 }, "_meta" : { "traceparent" : "x", "tracestate" : "a=b" } }, "method" : "tools/call", "jsonrpc" : "2.0" }"#;
        assert_eq!(
            incoming(line),
            Some(("x".to_owned(), Some("a=b".to_owned())))
        );
        let out = inject(line, TP, "k=\"v\"").expect("injected");
        assert_eq!(
            out,
            line.replace(r#""x""#, &format!("\"{TP}\""))
                .replace(r#""a=b""#, r#""k=\"v\"""#)
        );
        let fresh = inject(r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#, TP, "k=v").expect("ok");
        assert_eq!(
            fresh,
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"_meta":{{"traceparent":"{TP}","tracestate":"k=v"}}}}}}"#
            )
        );
    }

    #[test]
    fn leaves_alone_what_cannot_take_a_context() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{},"params":{}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"m"}]"#,
            "not json",
        ] {
            assert_eq!(inject(line, TP, ""), None, "{line}");
        }
        assert_eq!(
            incoming(
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"traceparent":5}}}"#
            ),
            None
        );
    }
}
