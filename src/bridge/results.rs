//! The shape changes between a legacy child's messages and what a 2026-07-28 client expects
//! (spec 2026-07-28 changelog, schema `Result`, `CacheableResult`, `DiscoverResult`).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Legacy;
use crate::protocol::jsonrpc;
use crate::protocol::{INVALID_PARAMS, MODERN_VERSIONS};

/// `ttlMs` the proxy adds where a legacy result has none: immediately stale, since the proxy
/// cannot know how long the child's lists stay valid (schema `CacheableResult`).
pub(super) const TTL_MS: u64 = 0;
/// `cacheScope` the proxy adds: a child may serve per-user data, so never `public`.
pub(super) const CACHE_SCOPE: &str = "private";
/// Methods whose results are `CacheableResult`s (spec 2026-07-28 changelog, minor change 5).
const CACHEABLE: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The prefix of the modern request `_meta` keys (protocol version, client info and
/// capabilities, log level) that mean nothing to a legacy server.
const MODERN_META_PREFIX: &str = "io.modelcontextprotocol/";
/// Legacy "resource not found", renumbered to Invalid Params in 2026-07-28 (changelog, minor
/// change 6).
const LEGACY_RESOURCE_NOT_FOUND: i64 = -32002;

/// Capabilities of a legacy `InitializeResult` that keep their meaning for a modern client.
/// Left out: `logging` (legacy log messages belong to no request, and modern clients only get
/// logs for requests that ask), `tasks` (2025-11-25 tasks; an extension with other semantics in
/// 2026-07-28).
const KEPT_CAPABILITIES: &[&str] = &[
    "experimental",
    "completions",
    "prompts",
    "resources",
    "tools",
    "extensions",
];

/// The proxy's `DiscoverResult` for a legacy child, from what it declared in `initialize`.
pub(super) fn discover_result(legacy: &Legacy) -> Value {
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": MODERN_VERSIONS,
        "capabilities": modern_capabilities(&legacy.capabilities),
        "ttlMs": TTL_MS,
        "cacheScope": CACHE_SCOPE,
    });
    if legacy.server_info.is_object() {
        result["_meta"] = json!({ SERVER_INFO: legacy.server_info });
    }
    if let Some(instructions) = &legacy.instructions {
        result["instructions"] = Value::String(instructions.clone());
    }
    result
}

pub(super) fn modern_capabilities(legacy: &Value) -> Value {
    let kept: Map<String, Value> = legacy
        .as_object()
        .map(|caps| {
            caps.iter()
                .filter(|(k, _)| KEPT_CAPABILITIES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Value::Object(kept)
}

/// Completes a legacy child's answer to a modern request of `method`: `resultType`, and for
/// cacheable results `ttlMs`/`cacheScope`, each only where absent; the server's identity in
/// `_meta`; the renumbered resource-not-found error. Anything unexpected passes unchanged.
pub(super) fn finish(method: &str, line: String, server_info: &Value) -> String {
    match finish_raw(method, &line, server_info) {
        Some(fast) => fast,
        None => finish_by_tree(method, line, server_info),
    }
}

/// [`finish`] on the parsed answer: any shape, at the cost of a parse and a serialization.
fn finish_by_tree(method: &str, line: String, server_info: &Value) -> String {
    let Ok(mut answer) = serde_json::from_str::<Value>(&line) else {
        return line;
    };
    if let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) {
        result
            .entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
        if CACHEABLE.contains(&method) {
            result.entry("ttlMs").or_insert_with(|| json!(TTL_MS));
            result
                .entry("cacheScope")
                .or_insert_with(|| json!(CACHE_SCOPE));
        }
        if server_info.is_object() {
            let meta = result
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.entry(SERVER_INFO)
                    .or_insert_with(|| server_info.clone());
            }
        }
    } else if method == "resources/read"
        && let Some(code) = answer.pointer_mut("/error/code")
        && code.as_i64() == Some(LEGACY_RESOURCE_NOT_FOUND)
    {
        *code = json!(INVALID_PARAMS);
    } else {
        return line;
    }
    serde_json::to_string(&answer).unwrap_or(line)
}

/// The members of a JSON object in order, each value as its raw text (never parsed into a
/// tree: the bridge's rewrites cost a scan, not a parse and a serialization of the message).
struct RawMembers<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawMembers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Members<'a> {
            type Value = RawMembers<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMembers<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    out.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(RawMembers(out))
            }
        }
        d.deserialize_map(Members(PhantomData))
    }
}

impl RawMembers<'_> {
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// The raw value of one top-level member of the object `text`.
fn member<'a>(text: &'a str, key: &str) -> Option<&'a RawValue> {
    let members: RawMembers<'a> = serde_json::from_str(text).ok()?;
    members
        .0
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `{"k":raw,…}`: keys escaped again, values as they were.
fn write_object(members: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(members.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if k.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            out.push_str(&Value::from(*k).to_string());
        } else {
            out.push('"');
            out.push_str(k);
            out.push('"');
        }
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

/// [`finish`] for the usual answer, from raw members: a result object without a `_meta` of
/// its own to merge the server's identity into. `None`: the tree handles it.
fn finish_raw(method: &str, line: &str, server_info: &Value) -> Option<String> {
    let raw = member(line, "result")?;
    let result: RawMembers<'_> = serde_json::from_str(raw.get()).ok()?;
    if result.has("_meta") && server_info.is_object() {
        return None;
    }
    let cacheable = CACHEABLE.contains(&method);
    // Rendered only when added (they outlive `members`, which borrows them).
    let (ttl, scope, meta): (String, String, String);
    let mut members: Vec<(&str, &str)> = result.0.iter().map(|(k, v)| (&**k, v.get())).collect();
    if !result.has("resultType") {
        members.push(("resultType", r#""complete""#));
    }
    if cacheable && !result.has("ttlMs") {
        ttl = TTL_MS.to_string();
        members.push(("ttlMs", &ttl));
    }
    if cacheable && !result.has("cacheScope") {
        scope = format!(r#""{CACHE_SCOPE}""#);
        members.push(("cacheScope", &scope));
    }
    if server_info.is_object() {
        meta = format!(r#"{{"{SERVER_INFO}":{server_info}}}"#);
        members.push(("_meta", &meta));
    }
    jsonrpc::splice(line, raw.get(), &write_object(&members))
}

/// Removes the modern `_meta` keys from a request for a legacy child (an empty `_meta` goes
/// too); `None` when there is nothing to remove. `progressToken` and foreign keys stay. Only
/// `params` is rewritten (from raw members); the rest of the request keeps its bytes.
pub(super) fn strip_modern_meta(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.contains(MODERN_META_PREFIX) {
        return None;
    }
    let raw_params = member(text, "params")?;
    let params: RawMembers<'_> = serde_json::from_str(raw_params.get()).ok()?;
    let meta: RawMembers<'_> = serde_json::from_str(params.get("_meta")?.get()).ok()?;
    let kept: Vec<(&str, &str)> = meta
        .0
        .iter()
        .filter(|(k, _)| !k.starts_with(MODERN_META_PREFIX))
        .map(|(k, v)| (&**k, v.get()))
        .collect();
    if kept.len() == meta.0.len() {
        return None;
    }
    let new_meta = write_object(&kept);
    let members: Vec<(&str, &str)> = params
        .0
        .iter()
        .filter(|(k, _)| k != "_meta" || !kept.is_empty())
        .map(|(k, v)| {
            (
                &**k,
                if k == "_meta" {
                    new_meta.as_str()
                } else {
                    v.get()
                },
            )
        })
        .collect();
    jsonrpc::splice(text, raw_params.get(), &write_object(&members)).map(String::into_bytes)
}

/// [`strip_modern_meta`] on the parsed request: the reference the raw one is tested against.
#[cfg(test)]
fn strip_modern_meta_by_tree(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.contains(MODERN_META_PREFIX) {
        return None;
    }
    let mut request: Value = serde_json::from_str(text).ok()?;
    let params = request.get_mut("params")?.as_object_mut()?;
    let meta = params.get_mut("_meta")?.as_object_mut()?;
    let before = meta.len();
    meta.retain(|k, _| !k.starts_with(MODERN_META_PREFIX));
    if meta.len() == before {
        return None;
    }
    if meta.is_empty() {
        params.remove("_meta");
    }
    serde_json::to_vec(&request).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Value {
        json!({"name": "legacy-server", "version": "1.0"})
    }

    /// The raw rewrites give the same JSON as the tree ones for every shape they take, and
    /// decline what they cannot do.
    #[test]
    fn raw_rewrites_agree_with_the_tree() {
        let answers = [
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a}b\"c"}]}}"#,
            r#"{"jsonrpc":"2.0","id":"x","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{ "a" : 1 }}"#,
            r#"{"result":{"tools":[]},"id":3,"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[],"ttlMs":5,"resultType":"complete"}}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{"x":{"_meta":{"a":1}},"cacheScope":"public","k\u0041\n":2}}"#,
            r#"{"jsonrpc":"2.0","id":6,"result":{"contents":[],"_meta":{"x/y":1}}}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32002,"message":"m"}}"#,
        ];
        for info in [info(), Value::Null] {
            for method in ["tools/call", "tools/list", "resources/read"] {
                for line in answers {
                    let tree: Value =
                        serde_json::from_str(&finish_by_tree(method, line.into(), &info))
                            .expect("json");
                    let raw: Value = serde_json::from_str(&finish(method, line.into(), &info))
                        .expect("raw json");
                    assert_eq!(raw, tree, "{method} {line}");
                }
            }
        }
        for line in [
            r#"{"jsonrpc":"2.0","id":6,"result":{"_meta":{"x/y":1}}}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32002,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":8,"result":"#,
            r#"{"jsonrpc":"2.0","id":9,"result":[1]}"#,
        ] {
            assert!(
                finish_raw("resources/read", line, &info()).is_none(),
                "{line}"
            );
        }
        let requests: [&[u8]; 5] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"m":"io.modelcontextprotocol/x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"0"},"progressToken":"p"}}}"#,
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            br#"{"params":{"cursor":"c\"","_meta":{"io.modelcontextprotocol/a":1,"x/y":[1,2]}},"method":"tools/list","id":3,"jsonrpc":"2.0"}"#,
            br#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"x/y":"io.modelcontextprotocol/"}}}"#,
            br#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#,
        ];
        for line in requests {
            let raw = strip_modern_meta(line);
            let tree = strip_modern_meta_by_tree(line);
            let shown = String::from_utf8_lossy(line);
            assert_eq!(raw.is_some(), tree.is_some(), "{shown}");
            if let (Some(raw), Some(tree)) = (raw, tree) {
                let raw: Value = serde_json::from_slice(&raw).expect("raw json");
                let tree: Value = serde_json::from_slice(&tree).expect("json");
                assert_eq!(raw, tree, "{shown}");
            }
        }
    }

    #[test]
    fn list_results_get_result_type_and_cache_hints_only_where_absent() {
        let out = finish(
            "tools/list",
            r#"{"jsonrpc":"2.0","id":"a","result":{"tools":[]}}"#.into(),
            &info(),
        );
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["id"], "a");
        assert_eq!(v["result"]["resultType"], "complete");
        assert_eq!(v["result"]["ttlMs"], 0);
        assert_eq!(v["result"]["cacheScope"], "private");
        assert_eq!(v["result"]["_meta"][SERVER_INFO]["name"], "legacy-server");
        // Values the child set itself are kept.
        let out = finish(
            "resources/list",
            r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[],"ttlMs":60000,"cacheScope":"public","resultType":"complete","_meta":{"x/y":1}}}"#.into(),
            &Value::Null,
        );
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["result"]["ttlMs"], 60000);
        assert_eq!(v["result"]["cacheScope"], "public");
        assert_eq!(v["result"]["_meta"], json!({"x/y": 1}));
        // Other results get resultType only.
        let out = finish(
            "tools/call",
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#.into(),
            &Value::Null,
        );
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            v["result"],
            json!({"content": [], "resultType": "complete"})
        );
    }

    #[test]
    fn errors_pass_except_the_renumbered_resource_not_found() {
        let line = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#;
        assert_eq!(finish("tools/call", line.into(), &info()), line);
        let out = finish(
            "resources/read",
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"Resource not found","data":{"uri":"x:y"}}}"#.into(),
            &info(),
        );
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["data"]["uri"], "x:y");
        assert_eq!(finish("tools/list", "not json".into(), &info()), "not json");
    }

    #[test]
    fn modern_meta_is_stripped_and_the_progress_token_kept() {
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"progressToken":"p"}}}"#;
        let out: Value =
            serde_json::from_slice(&strip_modern_meta(line).expect("stripped")).expect("json");
        assert_eq!(out["params"]["_meta"], json!({"progressToken": "p"}));
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let out: Value =
            serde_json::from_slice(&strip_modern_meta(line).expect("stripped")).expect("json");
        assert_eq!(out["params"], json!({}));
        assert!(strip_modern_meta(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_none());
    }

    #[test]
    fn discover_is_built_from_the_initialize_result() {
        let legacy = Legacy {
            protocol_version: "2025-06-18".into(),
            capabilities: json!({"tools":{"listChanged":true},"logging":{},"tasks":{},"resources":{"subscribe":true}}),
            server_info: info(),
            instructions: Some("use it".into()),
        };
        let d = discover_result(&legacy);
        assert_eq!(d["resultType"], "complete");
        assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(
            d["capabilities"],
            json!({"tools":{"listChanged":true},"resources":{"subscribe":true}})
        );
        assert_eq!(d["_meta"][SERVER_INFO], info());
        assert_eq!(d["instructions"], "use it");
        assert_eq!(
            (d["ttlMs"].as_u64(), d["cacheScope"].as_str()),
            (Some(0), Some("private"))
        );
    }
}
