//! The MCP targets by the transport their name ends with: `…-sse`, `…-streamable`,
//! `…-modern` (the `proxy-`, `tls-`, `audit-` and `otel-` rows differ only in the proxy).

use std::sync::Arc;

use crate::transport::Target;

/// The target of row `name` (`proxy-sse`, `otel-modern`, …) on the proxy at `addr`.
pub(crate) fn mcp(name: &str, addr: String, token: Option<Arc<str>>) -> Target {
    match name.split_once('-').map_or("", |(_, t)| t) {
        "sse" => Target::LegacySse {
            addr,
            path: "/sse".into(),
            token,
        },
        "streamable" => Target::Streamable {
            addr,
            path: "/mcp".into(),
            token,
        },
        _ => Target::Modern {
            addr,
            path: "/mcp".into(),
            token,
        },
    }
}
