//! The modern era's mirrored headers (spec 2026-07-28 Streamable HTTP §Server Validation,
//! §Value Encoding). Input: three lines — `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`
//! (`-` for an absent header) — then the body. Never panics; the `=?base64?…?=` sentinel
//! decodes only canonical base64 and any text survives it; a plain value is itself; and headers
//! mirrored from the body as a client following the spec writes them are accepted.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_auth_proxy::fuzz::{self, Kind, METHOD_HEADER, NAME_HEADER, PROTOCOL_HEADER};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let (Some(version), Some(method), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    decoding(name);
    let mut headers = HeaderMap::new();
    for (header, value) in [
        (PROTOCOL_HEADER, version),
        (METHOD_HEADER, method),
        (NAME_HEADER, name),
    ] {
        // Bytes no HTTP request can carry never reach the check.
        if value != b"-"
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            headers.insert(header, value);
        }
    }
    if fuzz::check_mirrored_headers(&headers, body).is_some() {
        mirrored_by_the_client(body);
    }
});

fn decoding(raw: &[u8]) {
    let Ok(raw) = std::str::from_utf8(raw) else {
        return;
    };
    let decoded = fuzz::decode_header_value(raw);
    match raw
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        None => assert_eq!(decoded.as_deref(), Some(raw), "a plain value is itself"),
        Some(encoded) => {
            if let Some(text) = decoded {
                assert_eq!(STANDARD.encode(text), encoded, "only canonical base64");
            }
        }
    }
    let wrapped = format!("=?base64?{}?=", STANDARD.encode(raw));
    assert_eq!(fuzz::decode_header_value(&wrapped).as_deref(), Some(raw));
}

/// A value a client can put in a header as it is (visible ASCII, spaces, tabs).
fn header_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn mirrored_by_the_client(body: &[u8]) {
    let Ok(parsed) = fuzz::client_message(body) else {
        return;
    };
    let Some(first) = parsed.items.first() else {
        return;
    };
    let (Some(method), Some(version)) = (&first.method, &first.protocol_version) else {
        return;
    };
    if first.kind != Kind::Request || !header_safe(method) || !header_safe(version) {
        return;
    }
    let name = match method.as_str() {
        "tools/call" | "prompts/get" => Some(first.name.as_deref()),
        "resources/read" => Some(first.uri.as_deref()),
        _ => None,
    };
    let mut headers = HeaderMap::new();
    let value = |v: &str| HeaderValue::from_str(v).expect("a header-safe value");
    headers.insert(PROTOCOL_HEADER, value(version));
    headers.insert(METHOD_HEADER, value(method));
    match name {
        None => {}
        Some(None) => return, // the body lacks the name its method needs
        Some(Some(name)) => {
            let encoded = format!("=?base64?{}?=", STANDARD.encode(name));
            headers.insert(NAME_HEADER, value(&encoded));
            let verdict = fuzz::check_mirrored_headers(&headers, body);
            assert_eq!(verdict, Some(Ok(())), "base64 name {name:?}");
            if !header_safe(name) || name.starts_with("=?base64?") {
                return;
            }
            headers.insert(NAME_HEADER, value(name));
        }
    }
    let verdict = fuzz::check_mirrored_headers(&headers, body);
    assert_eq!(verdict, Some(Ok(())), "headers mirrored from the body");
}
