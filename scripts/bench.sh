#!/usr/bin/env bash
# The benchmark of issue 7, reproducible in one command:
#   - builds the release proxy, the bundled example server and the load generator,
#   - installs supergateway and @modelcontextprotocol/server-everything into benches/node_modules
#     (npm ci from benches/package-lock.json),
#   - raises `ulimit -n` to the hard limit,
#   - runs benches/loadgen: direct stdio baseline, the proxy (legacy SSE, Streamable HTTP in
#     both eras when /mcp is served) and supergateway, same child, same run,
#   - prints the table with the issue's targets, and writes it to benches/results/.
#
# Usage:
#   scripts/bench.sh                 # default run (< 5 min): lat-1x1, tput-1x16, tput-50x1, idle-1000, setup
#   scripts/bench.sh --scale         # the soak: 2,000 sessions, each its own child, 1 call/s each for 60 s
#   scripts/bench.sh --duration 10   # any other loadgen flag (see: target/release/examples/loadgen --help)
# Env: BENCH_MACHINE (free text for the table's machine line).
# Only loopback is contacted; every loop in the load generator is bounded by a deadline.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scale=0
for a in "$@"; do [[ "$a" == "--scale" ]] && scale=1; done

echo "bench: building release binaries ..." >&2
cargo build --release --quiet --bins --example loadgen

# --- Node packages (supergateway, server-everything) --------------------------------------
command -v npm >/dev/null 2>&1 || { echo "bench: npm not found on PATH" >&2; exit 1; }
marker="$ROOT/benches/node_modules/.package-lock.json"
if [[ ! -f "$marker" || "$ROOT/benches/package-lock.json" -nt "$marker" || "$ROOT/benches/package.json" -nt "$marker" ]]; then
  echo "bench: installing benches/node_modules (npm ci) ..." >&2
  (cd "$ROOT/benches" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$marker"
fi

# --- Limits ---------------------------------------------------------------------------------
# Each legacy session costs the proxy 4 fds (client socket, child stdin/stdout/stderr) and the
# load generator 2 (SSE stream, POST connection); each child is one process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds="$(ulimit -n)"
if [[ "$scale" == 1 ]]; then
  need_fds=12000
  if [[ "$fds" != unlimited && "$fds" -lt "$need_fds" ]]; then
    echo "bench: --scale needs ulimit -n >= $need_fds (have $fds; raise the hard limit, e.g. in /etc/security/limits.conf)" >&2
    exit 1
  fi
  procs="$(ulimit -u)"
  if [[ "$procs" != unlimited && "$procs" -lt 2500 ]]; then
    echo "bench: --scale needs ulimit -u >= 2500 (have $procs)" >&2
    exit 1
  fi
  echo "bench: limits: open files $fds, processes $(ulimit -u), pid_max $(cat /proc/sys/kernel/pid_max)" >&2
fi

cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)"
machine="${BENCH_MACHINE:-$(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at start}"

mkdir -p "$ROOT/benches/results"
name=latest
[[ "$scale" == 1 ]] && name=scale
exec "$ROOT/target/release/examples/loadgen" \
  --supergateway "$ROOT/benches/node_modules/.bin/supergateway" \
  --everything "node $ROOT/benches/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio" \
  --machine "$machine" \
  --markdown "$ROOT/benches/results/$name.md" \
  --json "$ROOT/benches/results/$name.json" \
  "$@"
