#!/usr/bin/env bash
# Full test run: installs the interop dependencies, builds the binaries, runs every cargo test
# target, then a smoke run of each fuzz target (FUZZ_SECONDS each, default 30; 0 skips).
# Extra arguments go to `cargo test`. Fails when a test fails or a fuzz target crashes; a
# machine that cannot build the fuzz targets skips them with a printed reason.
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

# Issue 13: each cargo-fuzz target for FUZZ_SECONDS, after the tests (scripts/fuzz.sh).
bash "$ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-30}"
