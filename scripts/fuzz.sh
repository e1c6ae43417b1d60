#!/usr/bin/env bash
# Builds the cargo-fuzz targets (fuzz/) once and runs each for SECONDS (default 30), printing
# each target's exec count. Exit 0 when nothing crashed, or when fuzzing cannot run here (no
# cargo-fuzz and it cannot be installed, or this toolchain cannot do fuzz builds: one line says
# why); 1 when a target crashed (the input is kept under fuzz/artifacts/TARGET/) or when the
# proxy or the targets do not compile (that is a code error, never skipped).
#
# Toolchain: `cargo +nightly` when a nightly toolchain is installed, else stable with
# RUSTC_BOOTSTRAP=1 (the sanitizer flags cargo-fuzz passes are nightly-only).
# The working corpora live in fuzz/corpus/TARGET (ignored by git), seeded from fuzz/seeds/TARGET.
# Env: FUZZ_TARGETS (space-separated subset), FUZZ_STRICT=1 (any build failure fails instead
# of skipping). SECONDS=0 skips.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECS="${1:-30}"
skip() {
  echo "fuzz: skipped: $*"
  exit 0
}
[[ "$SECS" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2; }
[ "$SECS" -gt 0 ] || skip "SECONDS is 0"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked >/dev/null 2>&1 || skip "cargo-fuzz is not installed and could not be installed"
fi

CARGO=(cargo)
if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo +nightly --version >/dev/null 2>&1; then
  CARGO=(cargo +nightly)
  toolchain="nightly"
else
  export RUSTC_BOOTSTRAP=1
  toolchain="stable with RUSTC_BOOTSTRAP=1"
fi

# cargo-fuzz's own errors without a backtrace of cargo-fuzz (a target's panic keeps its own).
export RUST_LIB_BACKTRACE=0

TARGETS="${FUZZ_TARGETS:-$("${CARGO[@]}" fuzz list)}"
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")"
trap 'rm -rf "$LOG_DIR"' EXIT

echo "fuzz: building the targets ($toolchain)"
if ! "${CARGO[@]}" fuzz build >"$LOG_DIR/build.log" 2>&1; then
  tail -n 20 "$LOG_DIR/build.log" >&2
  # Our own code not compiling (the proxy or the targets, e.g. after an API change) is a
  # failure; only a toolchain that cannot do fuzz builds is a reason to skip.
  if grep -q 'could not compile `mcp-auth-proxy' "$LOG_DIR/build.log"; then
    echo "fuzz: the fuzz targets do not compile (log above)" >&2
    exit 1
  fi
  if [ "${FUZZ_STRICT:-0}" = 1 ]; then
    echo "fuzz: the targets do not build ($toolchain)" >&2
    exit 1
  fi
  skip "the fuzz targets do not build with $toolchain (log above)"
fi

failed=()
for target in $TARGETS; do
  corpus="fuzz/corpus/$target"
  artifacts="fuzz/artifacts/$target"
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  log="$LOG_DIR/$target.log"
  status=0
  # cargo-fuzz keeps a crashing input in fuzz/artifacts/TARGET/ itself.
  "${CARGO[@]}" fuzz run "$target" "$corpus" -- \
    -max_total_time="$SECS" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  if [ "$status" -eq 0 ]; then
    echo "fuzz: $target: ${execs:-?} execs in ${SECS}s, no crash"
  else
    tail -n 40 "$log" >&2
    echo "fuzz: $target: CRASHED after ${execs:-?} execs (exit $status; input in $artifacts/)" >&2
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
