//! The TOML config loader: parse (with `MCP_PROXY__…` overrides from `#! KEY=VALUE` comment
//! lines), then validate. Never panics; a config that validates has a listen address and
//! public URL that parse, and the rate limiters built from it answer requests.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_proxy::config::{Config, parse_public_url};
use mcp_auth_proxy::fuzz;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = vec![(
        "MCP_PROXY_JWT_SECRET".to_owned(),
        "0123456789abcdef0123456789abcdef".to_owned(),
    )];
    env.extend(text.lines().filter_map(|line| {
        let (k, v) = line.strip_prefix("#! ")?.split_once('=')?;
        Some((k.to_owned(), v.to_owned()))
    }));
    let Ok(config) = Config::parse(text, &env) else {
        return;
    };
    if config.validate(&env).is_err() {
        return;
    }
    config
        .listen_addr()
        .expect("a validated listen address parses");
    if let Some(url) = &config.http.public_url {
        parse_public_url(url).expect("a validated public URL parses");
    }
    let _ = config.root_server();
    fuzz::use_config(&config);
});
