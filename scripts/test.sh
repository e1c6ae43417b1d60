#!/usr/bin/env bash
# Full test run: installs the interop dependencies, builds the binaries, runs every cargo test
# target. Extra arguments go to `cargo test`. Exit status is cargo test's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/install-test-deps.sh"

# Where the Rust integration tests find the reference clients (tests/interop/*).
export MCP_INTEROP_DIR="${MCP_INTEROP_DIR:-$ROOT/tests/interop}"
export MCP_INTEROP_PYTHON="${MCP_INTEROP_PYTHON:-$MCP_INTEROP_DIR/.venv/bin/python}"
export MCP_INTEROP_NODE="${MCP_INTEROP_NODE:-$(command -v node)}"
# haproxy lands in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

cargo build --bins
cargo test --all-targets "$@"
