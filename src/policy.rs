//! Per-tool policy (DESIGN §4, `[[servers.NAME.tool_rules]]`): a tool whose name matches a
//! rule's patterns needs that rule's scopes. A denied `tools/call` is answered by the proxy with
//! a JSON-RPC error and never reaches the child; `tools/list` results are filtered to the tools
//! the caller may call. Tools that match no rule are open to every authenticated caller.

use serde::Deserialize;
use serde_json::Value;

use crate::config::ToolRule;

/// JSON-RPC error for a denied tool: invalid params, as for an unknown tool (spec 2025-11-25
/// server/tools §Error Handling), with the missing scopes named.
pub const TOOL_DENIED: i64 = -32602;

#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    rules: Vec<ToolRule>,
}

/// `*` matches any run of characters, `?` one character; everything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
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

#[derive(Deserialize)]
struct CallProbe<'a> {
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<NameProbe<'a>>,
}

#[derive(Deserialize)]
struct NameProbe<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// What the policy says about one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A `tools/list` request: filter its result.
    FilterList,
    /// A denied `tools/call`: the error message for the client.
    Deny(String),
}

impl ToolPolicy {
    pub fn new(rules: &[ToolRule]) -> Self {
        Self {
            rules: rules.to_vec(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scopes `tool` needs that `scopes` lacks (empty: allowed).
    pub fn missing(&self, tool: &str, scopes: &[String]) -> Vec<String> {
        let mut missing = Vec::new();
        for rule in &self.rules {
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

    /// Judges one message (a single JSON-RPC object) sent by a caller with `scopes`.
    pub fn judge(&self, message: &[u8], scopes: &[String]) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::Allow;
        }
        let Ok(probe) = serde_json::from_slice::<CallProbe<'_>>(message) else {
            return Verdict::Allow;
        };
        match probe.method.as_deref() {
            Some("tools/list") => Verdict::FilterList,
            Some("tools/call") => {
                let name = probe
                    .params
                    .and_then(|p| p.name)
                    .map(|n| n.into_owned())
                    .unwrap_or_default();
                let missing = self.missing(&name, scopes);
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
    pub fn filter_list(&self, line: &str, scopes: &[String]) -> Option<String> {
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
        let none: Vec<String> = vec![];
        let admin = vec!["mcp:admin".to_owned()];
        assert_eq!(p.judge(call("echo").as_bytes(), &none), Verdict::Allow);
        assert!(
            matches!(p.judge(call("delete_repo").as_bytes(), &none), Verdict::Deny(m) if m.contains("mcp:admin"))
        );
        assert_eq!(
            p.judge(call("delete_repo").as_bytes(), &admin),
            Verdict::Allow
        );
        assert!(
            matches!(p.judge(call("delete_write").as_bytes(), &admin), Verdict::Deny(m) if m.contains("mcp:write"))
        );
        assert_eq!(
            p.judge(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, &none),
            Verdict::FilterList
        );
        let list = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"},{"name":"admin_x"}]}}"#;
        let filtered = p.filter_list(list, &none).expect("changed");
        let v: Value = serde_json::from_str(&filtered).expect("json");
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name":"echo"}]));
        assert!(p.filter_list(list, &admin).is_none());
    }
}
