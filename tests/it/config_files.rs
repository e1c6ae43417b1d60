//! Every shipped config (config/*.toml, proxy.toml.example) parses and validates.

use mcp_auth_proxy::config::Config;

#[test]
fn shipped_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("proxy.toml.example")];
    for entry in std::fs::read_dir(root.join("config")).expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    let env = vec![(
        "MCP_PROXY_JWT_SECRET".to_owned(),
        "0123456789abcdef0123456789abcdef".to_owned(),
    )];
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let config = Config::parse(&text, &env)
            .and_then(|c| c.validate(&env).map(|()| c))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!config.servers.is_empty());
    }
}
