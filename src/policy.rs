//! Per-tool policy (DESIGN §4, `[[servers.NAME.tool_rules]]`): a tool whose name matches a
//! rule's patterns needs that rule's scopes. A denied `tools/call` is answered by the proxy with
//! a JSON-RPC error and never reaches the child; `tools/list` results are filtered to the tools
//! the caller may call. Tools that match no rule are open to every authenticated caller.

use std::sync::Arc;

use serde_json::Value;

use crate::config::ToolRule;
use crate::mux::Finish;
use crate::protocol::INVALID_PARAMS;
use crate::protocol::jsonrpc::{self, ClientMessage, Message};

#[derive(Debug, Clone, Default)]
pub(crate) struct ToolPolicy {
    rules: Arc<[ToolRule]>,
}

/// A `tools/list` answer to filter for the caller who asked (their scopes at that time).
struct ListFilter {
    policy: ToolPolicy,
    scopes: Vec<String>,
}

impl Finish for ListFilter {
    fn finish(&self, _method: &str, line: String) -> String {
        self.policy.filter_list(&line, &self.scopes).unwrap_or(line)
    }
}

/// The tool gate of every transport (DESIGN §4): `Ok(None)` lets the body through as it is,
/// `Ok(Some(filter))` lets a `tools/list` through with its answer to be filtered, `Err` is the
/// JSON-RPC error line that answers a denied `tools/call` in the child's place. Batches are not
/// judged (only 2025-03-26 has them, and tool rules are a per-request decision).
pub(crate) fn gate(
    policy: &ToolPolicy,
    message: &ClientMessage,
    scopes: &[String],
) -> Result<Option<Arc<dyn Finish>>, String> {
    if policy.is_empty() || message.batch {
        return Ok(None);
    }
    let Some(first) = message.first() else {
        return Ok(None);
    };
    match policy.judge(first, scopes) {
        Verdict::Allow => Ok(None),
        Verdict::FilterList => Ok(Some(Arc::new(ListFilter {
            policy: policy.clone(),
            scopes: scopes.to_vec(),
        }))),
        Verdict::Deny(why) => {
            tracing::info!("{why}");
            Err(jsonrpc::error_response(
                message.first_request_id(),
                INVALID_PARAMS,
                &why,
            ))
        }
    }
}

/// `*` matches any run of characters, `?` one character; everything else literally.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// What the policy says about one client message.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// A `tools/list` request: filter its result.
    FilterList,
    /// A denied `tools/call`: the error message for the client.
    Deny(String),
}

impl ToolPolicy {
    pub(crate) fn new(rules: &[ToolRule]) -> Self {
        Self {
            rules: rules.into(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scopes `tool` needs that `scopes` lacks (empty: allowed).
    fn missing(&self, tool: &str, scopes: &[String]) -> Vec<String> {
        let mut missing = Vec::new();
        for rule in self.rules.iter() {
            if rule.tools.iter().any(|p| glob(p, tool)) {
                for s in &rule.require_scopes {
                    if !scopes.contains(s) && !missing.contains(s) {
                        missing.push(s.clone());
                    }
                }
            }
        }
        missing
    }

    /// Judges one message sent by a caller with `scopes`.
    fn judge(&self, message: &Message, scopes: &[String]) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::Allow;
        }
        match message.method.as_deref() {
            Some("tools/list") => Verdict::FilterList,
            Some("tools/call") => {
                let name = message.name.as_deref().unwrap_or_default();
                let missing = self.missing(name, scopes);
                if missing.is_empty() {
                    Verdict::Allow
                } else {
                    Verdict::Deny(format!(
                        "tool `{name}` is not allowed: it requires scope {}",
                        missing.join(" ")
                    ))
                }
            }
            _ => Verdict::Allow,
        }
    }

    /// Removes from a `tools/list` response the tools the caller may not call. Returns `None`
    /// when nothing had to change (the line is forwarded as it is).
    fn filter_list(&self, line: &str, scopes: &[String]) -> Option<String> {
        let mut value: Value = serde_json::from_str(line).ok()?;
        let tools = value.pointer_mut("/result/tools")?.as_array_mut()?;
        let before = tools.len();
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| self.missing(name, scopes).is_empty())
        });
        if tools.len() == before {
            return None;
        }
        serde_json::to_string(&value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ToolPolicy {
        ToolPolicy::new(&[
            ToolRule {
                tools: vec!["delete_*".into(), "admin_?".into()],
                require_scopes: vec!["mcp:admin".into()],
            },
            ToolRule {
                tools: vec!["*_write".into()],
                require_scopes: vec!["mcp:write".into()],
            },
        ])
    }

    #[test]
    fn globs() {
        assert!(glob("delete_*", "delete_repo"));
        assert!(glob("*", "anything"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*_write", "file_write"));
        assert!(!glob("delete_*", "undelete_x"));
        assert!(glob("x*y*z", "xaaybbz"));
    }

    #[test]
    fn judging_calls_and_filtering_lists() {
        let p = policy();
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#
            )
        };
        let judge = |body: &str, scopes: &[String]| {
            let m = jsonrpc::client_message(body.as_bytes()).expect("valid");
            p.judge(m.first().expect("one"), scopes)
        };
        let none: Vec<String> = vec![];
        let admin = vec!["mcp:admin".to_owned()];
        assert_eq!(judge(&call("echo"), &none), Verdict::Allow);
        assert!(
            matches!(judge(&call("delete_repo"), &none), Verdict::Deny(m) if m.contains("mcp:admin"))
        );
        assert_eq!(judge(&call("delete_repo"), &admin), Verdict::Allow);
        assert!(
            matches!(judge(&call("delete_write"), &admin), Verdict::Deny(m) if m.contains("mcp:write"))
        );
        assert_eq!(
            judge(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, &none),
            Verdict::FilterList
        );
        let list = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"},{"name":"admin_x"}]}}"#;
        let filtered = p.filter_list(list, &none).expect("changed");
        let v: Value = serde_json::from_str(&filtered).expect("json");
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name":"echo"}]));
        assert!(p.filter_list(list, &admin).is_none());
    }
}
