//! The official MCP SDK clients (TypeScript `@modelcontextprotocol/sdk`, Python `mcp`) through
//! the proxy, to the bundled server and to `@modelcontextprotocol/server-everything`.
//! `scripts/test.sh` installs them (scripts/install-test-deps.sh).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Proxy, base_config};

pub(crate) struct Interop {
    pub dir: PathBuf,
    pub node: String,
    pub python: String,
}

/// Where the interop clients live; panics with instructions when they are not installed.
pub(crate) fn interop() -> Interop {
    let dir = std::env::var("MCP_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop"));
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").exists(),
        "the interop clients are not installed: run scripts/install-test-deps.sh (scripts/test.sh does)"
    );
    let python = std::env::var("MCP_INTEROP_PYTHON")
        .unwrap_or_else(|_| dir.join(".venv/bin/python").to_string_lossy().into_owned());
    let node = std::env::var("MCP_INTEROP_NODE").unwrap_or_else(|_| "node".into());
    Interop { dir, node, python }
}

/// Runs one client; returns its one-line JSON report.
pub(crate) async fn run_client(program: &str, script: &str, args: &[&str]) -> Value {
    run_client_with_env(program, script, args, &[]).await
}

/// As [`run_client`], with `env` added to the client's environment; `program` may be
/// `"node"` or `"python"` for the interop installation's.
pub(crate) async fn run_client_with_env(
    program: &str,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let i = interop();
    let program = match program {
        "node" => i.node.as_str(),
        "python" => i.python.as_str(),
        other => other,
    };
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(program)
            .arg(i.dir.join(script))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("client finished in time")
    .expect("client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{script} printed no JSON report; stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The arguments of one tool call by a client script: `--url`, `--transport`, `--token`,
/// `--call`, `--args`, then `extra` flags.
pub(crate) fn call_args<'a>(
    url: &'a str,
    transport: &'a str,
    token: &'a str,
    tool: &'a str,
    arguments: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut out = vec![
        "--url",
        url,
        "--transport",
        transport,
        "--token",
        token,
        "--call",
        tool,
        "--args",
        arguments,
    ];
    out.extend_from_slice(extra);
    out
}

pub(crate) async fn ts_client(args: &[&str]) -> Value {
    let i = interop();
    run_client(&i.node, "ts_client.mjs", args).await
}

pub(crate) async fn py_client(args: &[&str]) -> Value {
    let i = interop();
    run_client(&i.python, "py_client.py", args).await
}

/// server-everything, run from the installed package with node (no network at test time).
pub(crate) fn everything_section(name: &str) -> String {
    let i = interop();
    let entry = i
        .dir
        .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    format!(
        "[servers.{name}]\ncommand = \"{}\"\nargs = [\"{}\", \"stdio\"]\n",
        i.node,
        entry.display()
    )
}

fn proxy_config() -> String {
    base_config(&format!(
        "{}{}",
        crate::common::example_server_section(),
        everything_section("everything")
    ))
}

/// The text of a client report's first tool result ("" when there is none).
pub(crate) fn first_text(report: &Value) -> &str {
    report["results"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

fn assert_report(report: &Value, server_name: &str, tool_answer: &str) {
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["serverName"], server_name, "{report}");
    assert!(first_text(report).contains(tool_answer), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_over_legacy_sse() {
    let proxy = Proxy::with_config(&proxy_config(), &[]).await;
    let token = proxy.token("ts-user");
    let sse = format!("{}/sse", proxy.url);
    let everything = format!("{}/servers/everything/sse", proxy.url);
    let report = ts_client(&call_args(
        &sse,
        "sse",
        &token,
        "add",
        r#"{"a":2,"b":40}"#,
        &[],
    ))
    .await;
    assert_report(&report, "mcp-example-server", "42");
    let report = ts_client(&call_args(
        &everything,
        "sse",
        &token,
        "echo",
        r#"{"message":"via proxy"}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["tools"].as_array().is_some_and(|t| t.len() > 3),
        "{report}"
    );
    assert!(first_text(&report).contains("via proxy"), "{report}");
    // Without a token the SDK sees the 401.
    let report = ts_client(&["--url", &sse, "--transport", "sse", "--token", "bogus"]).await;
    assert_eq!(report["ok"], false, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_legacy_sse() {
    let proxy = Proxy::with_config(&proxy_config(), &[]).await;
    let token = proxy.token("py-user");
    let sse = format!("{}/sse", proxy.url);
    let everything = format!("{}/servers/everything/sse", proxy.url);
    let report = py_client(&call_args(
        &sse,
        "sse",
        &token,
        "echo",
        r#"{"message":"from python"}"#,
        &[],
    ))
    .await;
    assert_report(&report, "mcp-example-server", "from python");
    let report = py_client(&call_args(
        &everything,
        "sse",
        &token,
        "echo",
        r#"{"message":"py everything"}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(first_text(&report).contains("py everything"), "{report}");
}

/// The TypeScript SDK's Streamable HTTP client: the bundled server and server-everything,
/// including progress and server-initiated sampling and elicitation answered by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_over_streamable_http() {
    let proxy = Proxy::with_config(&proxy_config(), &[]).await;
    let token = proxy.token("ts-user");
    let mcp = format!("{}/mcp", proxy.url);
    let everything = format!("{}/servers/everything/mcp", proxy.url);
    let report = ts_client(&call_args(
        &mcp,
        "streamable",
        &token,
        "add",
        r#"{"a":2,"b":40}"#,
        &["--repeat", "3"],
    ))
    .await;
    assert_report(&report, "mcp-example-server", "42");
    assert_eq!(
        report["results"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    let report = ts_client(&call_args(
        &mcp,
        "streamable",
        &token,
        "progress",
        r#"{"steps":4}"#,
        &["--progress"],
    ))
    .await;
    assert_report(&report, "mcp-example-server", "done 4 steps");
    assert_eq!(report["progress"], 4, "{report}");
    let report = ts_client(&call_args(
        &everything,
        "streamable",
        &token,
        "trigger-long-running-operation",
        r#"{"duration":1,"steps":5}"#,
        &["--progress"],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["progress"], 5, "{report}");
    let report = ts_client(&call_args(
        &everything,
        "streamable",
        &token,
        "trigger-sampling-request",
        r#"{"prompt":"hello","maxTokens":10}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["sampling"], 1,
        "the server's sampling request reached the client: {report}"
    );
    assert!(
        first_text(&report).contains("interop sampling reply"),
        "the client's answer reached the server: {report}"
    );
    let report = ts_client(&call_args(
        &everything,
        "streamable",
        &token,
        "trigger-elicitation-request",
        "{}",
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["elicitation"], 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_streamable_http() {
    let proxy = Proxy::with_config(&proxy_config(), &[]).await;
    let token = proxy.token("py-user");
    let mcp = format!("{}/mcp", proxy.url);
    let everything = format!("{}/servers/everything/mcp", proxy.url);
    let report = py_client(&call_args(
        &mcp,
        "streamable",
        &token,
        "progress",
        r#"{"steps":3}"#,
        &["--progress"],
    ))
    .await;
    assert_report(&report, "mcp-example-server", "done 3 steps");
    assert_eq!(report["progress"], 3, "{report}");
    let report = py_client(&call_args(
        &everything,
        "streamable",
        &token,
        "trigger-sampling-request",
        r#"{"prompt":"hello","maxTokens":10}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["sampling"], 1, "{report}");
    let report = py_client(&call_args(
        &everything,
        "streamable",
        &token,
        "echo",
        r#"{"message":"py streamable"}"#,
        &[],
    ))
    .await;
    assert!(first_text(&report).contains("py streamable"), "{report}");
}
