//! What the MCP and JSON-RPC specifications fix: protocol versions, error codes, header names,
//! `_meta` keys — and [`jsonrpc`], the one look at a message that every layer shares. Nothing
//! here knows HTTP handlers, sessions or children.

pub(crate) mod jsonrpc;
mod params;

/// Versions served with sessions over Streamable HTTP (and, 2024-11-05, over legacy SSE).
pub(crate) const SESSION_VERSIONS: &[&str] =
    &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Versions served statelessly (spec 2026-07-28 versioning).
pub(crate) const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
/// Assumed when a session-era request carries no `MCP-Protocol-Version` (spec 2025-11-25
/// Transports §Protocol Version Header).
pub(crate) const DEFAULT_SESSION_VERSION: &str = "2025-03-26";
/// The one session-era version with JSON-RPC batches (removed in 2025-06-18).
pub(crate) const BATCH_VERSION: &str = "2025-03-26";

/// JSON-RPC 2.0 §5.1 error codes.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid params: also the answer to a denied tool, as for an unknown tool (spec 2025-11-25
/// server/tools §Error Handling), with the missing scopes named.
pub(crate) const INVALID_PARAMS: i64 = -32602;
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// A request the child did not answer within `request_timeout_secs`: the TypeScript SDK's
/// `RequestTimeout`, the same on every transport.
pub(crate) const REQUEST_TIMEOUT: i64 = -32001;
/// The child's input queue is full (`sessions.max_queued_bytes`): retry later.
pub(crate) const SERVER_BUSY: i64 = -32000;
/// A request over a rate limit (a server-defined code, JSON-RPC 2.0 §5.1: -32000 to -32099).
pub(crate) const RATE_LIMITED: i64 = -32029;
/// `HeaderMismatch` (spec 2026-07-28 Streamable HTTP §Server Validation).
pub(crate) const HEADER_MISMATCH: i64 = -32020;
/// `UnsupportedProtocolVersionError` (spec 2026-07-28 versioning).
pub(crate) const UNSUPPORTED_VERSION: i64 = -32022;

/// The message of every request timeout.
pub(crate) const TIMED_OUT: &str = "request timed out";
/// The message of every request whose child exited before answering (DESIGN §6).
pub(crate) const CHILD_EXITED: &str = "server process exited";
/// What in-flight requests get when the OOM killer ended the child at its cgroup's limit.
pub(crate) const CHILD_OOM: &str = "server process exceeded its memory limit";
/// … and when the child exited after its tree reached the cgroup's process limit.
pub(crate) const CHILD_PIDS: &str = "server process exceeded its process limit";

/// The session header (spec 2025-11-25 Transports §Session Management); also on `GET /sse`,
/// so a load balancer can learn the session (DESIGN §5).
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
pub(crate) const PROTOCOL_HEADER: &str = "mcp-protocol-version";
/// The mirrored headers of 2026-07-28 (Streamable HTTP §Standard Request Headers).
pub(crate) const METHOD_HEADER: &str = "mcp-method";
pub(crate) const NAME_HEADER: &str = "mcp-name";

/// The `_meta` key that ties a notification to its `subscriptions/listen` request
/// (spec 2026-07-28 patterns/subscriptions §Receiving Notifications).
pub(crate) const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// The `_meta` key of a modern request's protocol version (spec 2026-07-28 index).
pub(crate) const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
