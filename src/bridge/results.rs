//! The shape changes between a legacy child's messages and what a 2026-07-28 client expects
//! (spec 2026-07-28 changelog, schema `Result`, `CacheableResult`, `DiscoverResult`).

use serde_json::{Map, Value, json};

use super::Legacy;
use crate::transport::streamable::MODERN_VERSIONS;

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
const INVALID_PARAMS: i64 = -32602;

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

/// Removes the modern `_meta` keys from a request for a legacy child (an empty `_meta` goes
/// too); `None` when there is nothing to remove. `progressToken` and foreign keys stay.
pub(super) fn strip_modern_meta(line: &[u8]) -> Option<Vec<u8>> {
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
