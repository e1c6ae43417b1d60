#!/usr/bin/env bash
# Installs what the interop/integration tests need, idempotently and quietly:
#   - the Node clients and servers in tests/interop (npm ci from the committed lockfile),
#   - the Python client's venv at tests/interop/.venv (pip install -r requirements.txt),
#   - haproxy, nginx and curl from Debian (only when not already installed; their services are
#     not started). curl is the TLS tests' HTTP/2 and client-certificate client.
# Prints one line per thing it installed; nothing when everything is up to date.
# Works from any cwd. Env overrides: MCP_INTEROP_BOOTSTRAP_PYTHON (python used to create the venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INTEROP="$ROOT/tests/interop"
LOG="$(mktemp "${TMPDIR:-/tmp}/install-test-deps.XXXXXX")"
trap 'rm -f "$LOG"' EXIT

# Run a command with its output captured; on failure show it and stop.
quiet() {
  if ! "$@" >"$LOG" 2>&1; then
    echo "install-test-deps: failed: $*" >&2
    cat "$LOG" >&2
    exit 1
  fi
}

# --- Node packages ------------------------------------------------------------------------
command -v node >/dev/null 2>&1 || { echo "install-test-deps: node not found on PATH" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "install-test-deps: npm not found on PATH" >&2; exit 1; }
# npm writes node_modules/.package-lock.json on every install: it is the "node_modules is
# newer than package-lock.json" marker (the directory's own mtime is not reliable).
npm_marker="$INTEROP/node_modules/.package-lock.json"
if [[ ! -f "$npm_marker" || "$INTEROP/package-lock.json" -nt "$npm_marker" || "$INTEROP/package.json" -nt "$npm_marker" ]]; then
  (cd "$INTEROP" && quiet npm ci --no-audit --no-fund --loglevel=error)
  touch "$npm_marker"
  echo "installed: npm packages in tests/interop ($(cd "$INTEROP" && node -p "Object.entries(require('./package.json').dependencies).map(([n,v])=>n+'@'+v).join(', ')"))"
fi

# --- Python venv --------------------------------------------------------------------------
venv="$INTEROP/.venv"
venv_py="$venv/bin/python"
stamp="$venv/.requirements.stamp"
boot_py="${MCP_INTEROP_BOOTSTRAP_PYTHON:-python3}"
command -v "$boot_py" >/dev/null 2>&1 || { echo "install-test-deps: $boot_py not found on PATH" >&2; exit 1; }
if [[ -x "$venv_py" ]] && ! "$venv_py" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"   # broken venv (e.g. its base interpreter went away)
fi
want_stamp="$(cat "$INTEROP/requirements.txt"; "$boot_py" -c 'import sys; print(sys.version)')"
want_stamp="$(printf '%s' "$want_stamp" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv_py" || ! -f "$stamp" || "$(cat "$stamp")" != "$want_stamp" ]]; then
  if [[ ! -x "$venv_py" ]]; then
    "$boot_py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
      { echo "install-test-deps: $boot_py is older than 3.10 (mcp needs >= 3.10)" >&2; exit 1; }
    quiet "$boot_py" -m venv "$venv"
  fi
  quiet "$venv_py" -m pip install --quiet --disable-pip-version-check --no-input -r "$INTEROP/requirements.txt"
  printf '%s\n' "$want_stamp" >"$stamp"
  echo "installed: python venv tests/interop/.venv ($(grep -E '^mcp([=<>~ ]|$)' "$INTEROP/requirements.txt" || echo requirements.txt))"
fi

# --- haproxy and nginx (the load-balancer tests run the real ones) -------------------------
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }
missing=()
have haproxy || missing+=(haproxy)
have nginx || missing+=(nginx-light)
have curl || missing+=(curl)
if (( ${#missing[@]} )); then
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo_cmd=(sudo -n); fi
  export DEBIAN_FRONTEND=noninteractive
  # The packages would start their system services (nginx on port 80): the tests run their
  # own instances, so invoke-rc.d is told not to start anything while they are installed.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | quiet "${sudo_cmd[@]}" tee "$policy"
    quiet "${sudo_cmd[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  quiet "${sudo_cmd[@]}" apt-get update -qq
  quiet "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
  if [[ "$own_policy" == 1 ]]; then quiet "${sudo_cmd[@]}" rm -f "$policy"; fi
  for pkg in "${missing[@]}"; do
    case "$pkg" in
      haproxy) echo "installed: haproxy $("$(command -v haproxy || echo /usr/sbin/haproxy)" -v 2>/dev/null | awk 'NR==1 {print $3}')" ;;
      curl) echo "installed: $(curl --version | head -1 | cut -d' ' -f1-2)" ;;
      nginx-light) echo "installed: nginx $("$(command -v nginx || echo /usr/sbin/nginx)" -v 2>&1 | awk -F/ '{print $2}')" ;;
    esac
  done
fi
