//! What the example server offers: the protocol versions it negotiates, its capabilities, the
//! tool list with each tool's input schema, and its one resource and one prompt.

use serde_json::{Map, Value, json};

use crate::SERVER_NAME;
use crate::rpc::{RESOURCE_NOT_FOUND, RpcError, RpcResult, str_arg};

const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";
const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    LATEST_PROTOCOL_VERSION,
];
const INSTRUCTIONS: &str = "Example MCP server bundled with mcp-auth-proxy. Try the `echo` and \
    `add` tools, the `example://readme` resource and the `greet` prompt; the other tools exist \
    for the proxy's tests.";
const README_URI: &str = "example://readme";
const README_TEXT: &str = "This is mcp-example-server, the example stdio MCP server bundled \
    with mcp-auth-proxy. It offers a few simple tools, this resource and a `greet` prompt.\n";

pub(crate) fn initialize(params: &Map<String, Value>) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = requested
        .filter(|version| SUPPORTED_PROTOCOL_VERSIONS.contains(version))
        .unwrap_or(LATEST_PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": { "listChanged": false },
            "resources": {},
            "prompts": {},
        },
        "serverInfo": { "name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION") },
        "instructions": INSTRUCTIONS,
    })
}

pub(crate) fn tool_list() -> Value {
    fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
        json!({
            "name": name,
            "description": description,
            "inputSchema": { "type": "object", "properties": properties, "required": required },
        })
    }
    let none = || json!({});
    let string = |description: &str| json!({ "type": "string", "description": description });
    let integer =
        |description: &str| json!({ "type": "integer", "minimum": 0, "description": description });
    json!([
        tool(
            "echo",
            "Returns the message",
            json!({ "message": string("Text to echo") }),
            &["message"]
        ),
        tool(
            "add",
            "Adds two numbers",
            json!({ "a": { "type": "number" }, "b": { "type": "number" } }),
            &["a", "b"],
        ),
        tool(
            "sleep",
            "Answers after the given number of milliseconds",
            json!({ "ms": integer("Milliseconds to sleep") }),
            &["ms"],
        ),
        tool(
            "progress",
            "Sends `steps` progress notifications (given a progress token), `ms` apart",
            json!({ "steps": integer("Number of steps"), "ms": integer("Milliseconds per step") }),
            &["steps"],
        ),
        tool(
            "whoami",
            "Returns the MCP_USER environment variable, or \"anonymous\"",
            none(),
            &[]
        ),
        tool(
            "env",
            "Returns an environment variable of the server, or \"\" when unset",
            json!({ "name": string("Variable name") }),
            &["name"],
        ),
        tool(
            "meta",
            "Returns the request's params._meta as it arrived (JSON text)",
            none(),
            &[]
        ),
        tool(
            "cancelled",
            "Returns the requestIds of the notifications/cancelled received so far (JSON array)",
            none(),
            &[]
        ),
        tool(
            "crash",
            "Fault injection: exits at once with the given code (default 3), without answering",
            json!({ "code": { "type": "integer", "description": "Exit code" } }),
            &[],
        ),
        tool(
            "garbage",
            "Fault injection: writes a line that is not JSON, then answers",
            none(),
            &[]
        ),
        tool(
            "long_line",
            "Fault injection: writes a notification line of at least `bytes` bytes",
            json!({ "bytes": integer("Minimum line length") }),
            &["bytes"],
        ),
        tool(
            "stderr",
            "Fault injection: writes the message to stderr",
            json!({ "message": string("Text for stderr") }),
            &["message"],
        ),
        tool(
            "spawn_grandchild",
            "Fault injection: spawns `sleep 3600` in the server's process group, returns its pid",
            none(),
            &[],
        ),
        tool(
            "stop_reading",
            "Fault injection: answers, then never reads stdin again",
            none(),
            &[]
        ),
        tool(
            "ignore_sigterm",
            "Fault injection: makes the server ignore SIGTERM",
            none(),
            &[]
        ),
        tool(
            "sandbox_probe",
            "Reports uid, NoNewPrivs, TMPDIR and cwd; tries the given read, write, TCP connect, \
             allocation and fork bomb, each answered `ok` or an errno name",
            json!({
                "read": string("A path to read"),
                "write": string("A path to write"),
                "connect": string("An address to connect to, like 127.0.0.1:80"),
                "alloc": integer("Bytes to allocate and touch"),
                "fork": integer("Processes to start"),
            }),
            &[],
        ),
        tool(
            "notify",
            "Sends a notification with the given method, then answers",
            json!({ "method": string("e.g. notifications/tools/list_changed") }),
            &["method"],
        ),
    ])
}

pub(crate) fn resource_list() -> Value {
    json!([{
        "uri": README_URI,
        "name": "readme",
        "description": "About this server",
        "mimeType": "text/plain",
    }])
}

pub(crate) fn read_resource(params: &Map<String, Value>) -> RpcResult {
    let uri = str_arg(params, "uri")?;
    if uri != README_URI {
        let error = RpcError::new(RESOURCE_NOT_FOUND, "Resource not found");
        return Err(error.with_data(json!({ "uri": uri })));
    }
    Ok(json!({ "contents": [{
        "uri": README_URI,
        "mimeType": "text/plain",
        "text": README_TEXT,
    }] }))
}

pub(crate) fn prompt_list() -> Value {
    json!([{
        "name": "greet",
        "description": "Greets someone by name",
        "arguments": [{ "name": "name", "description": "Who to greet", "required": true }],
    }])
}

pub(crate) fn get_prompt(params: &Map<String, Value>) -> RpcResult {
    let name = str_arg(params, "name")?;
    if name != "greet" {
        return Err(RpcError::invalid_params(format!("Unknown prompt: {name}")));
    }
    let who = params
        .get("arguments")
        .and_then(|arguments| arguments.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("prompt `greet` needs the argument `name`"))?;
    Ok(json!({
        "description": "A greeting",
        "messages": [{
            "role": "user",
            "content": { "type": "text", "text": format!("Hello, {who}!") },
        }],
    }))
}
