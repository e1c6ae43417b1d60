//! Config files on disk: every shipped config (config/*.toml, proxy.toml.example) and every
//! file in tests/fixtures/config/valid/ parses and validates; every file in
//! tests/fixtures/config/invalid/ is refused with the key its first line names
//! (`# expect: <key>`).

use std::path::{Path, PathBuf};

use mcp_auth_proxy::config::Config;

/// The environment the files are checked against: the secret the shipped configs and the
/// fixtures name, and one too short to be accepted.
fn env() -> Vec<(String, String)> {
    vec![
        (
            "MCP_PROXY_JWT_SECRET".to_owned(),
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("SHORT_SECRET".to_owned(), "tooshort".to_owned()),
    ]
}

/// A config error as the test needs it: the key it names, and the whole text as `check`
/// prints it.
struct Refusal {
    key: String,
    text: String,
}

fn load(path: &Path) -> Result<Config, Refusal> {
    let text = std::fs::read_to_string(path).expect("read");
    let env = env();
    Config::parse(&text, &env)
        .and_then(|c| c.validate(&env).map(|()| c))
        .map_err(|e| Refusal {
            key: e.key.clone(),
            text: e.to_string(),
        })
}

/// The `.toml` files in `dir`, sorted (so failures come in a stable order).
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the error names `key`: as its key, or in double quotes in its text (a missing
/// field comes back from the TOML layer at `(file)`, the field named only in the text). The
/// quotes keep `servers.default.env` from matching `servers.default.env_from_claims`.
fn names(e: &Refusal, key: &str) -> bool {
    e.key == key || e.text.contains(&format!("\"{key}\""))
}

fn assert_valid(files: &[PathBuf]) {
    for file in files {
        let config = load(file).unwrap_or_else(|e| panic!("{}: {}", file.display(), e.text));
        assert!(!config.servers.is_empty(), "{}", file.display());
    }
}

#[test]
fn shipped_configs_are_valid() {
    let mut files = vec![root().join("proxy.toml.example")];
    files.extend(toml_files(&root().join("config")));
    assert!(files.len() >= 6, "{files:?}");
    assert_valid(&files);
}

#[test]
fn valid_fixtures_parse_and_validate() {
    let files = toml_files(&root().join("tests/fixtures/config/valid"));
    assert!(files.len() >= 6, "{files:?}");
    assert_valid(&files);
}

#[test]
fn invalid_fixtures_are_refused_naming_their_key() {
    let files = toml_files(&root().join("tests/fixtures/config/invalid"));
    assert!(files.len() >= 10, "{files:?}");
    // Every file is checked before failing, so one run lists every fixture that is off.
    let mut wrong = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{}: no `# expect: <key>` first line", file.display()));
        match load(&file) {
            Ok(_) => wrong.push(format!("{}: accepted", file.display())),
            Err(e) if !names(&e, expected) => {
                let got = e.text;
                wrong.push(format!(
                    "{}: expected {expected}, got {got}",
                    file.display()
                ));
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
