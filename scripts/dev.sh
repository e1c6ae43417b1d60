#!/usr/bin/env bash
# Runs mcp-auth-proxy in front of the bundled example stdio MCP server, with a development
# HS256 secret (generated once into .dev-secret) and a token for `dev-user` in .dev-token.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

cargo build --release --bins --quiet

if [ -z "${MCP_PROXY_JWT_SECRET:-}" ]; then
  if [ ! -s .dev-secret ]; then
    (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n' > .dev-secret)
  fi
  MCP_PROXY_JWT_SECRET="$(cat .dev-secret)"
  export MCP_PROXY_JWT_SECRET
fi

CONFIG="${MCP_PROXY_CONFIG:-config/development.toml}"
PROXY="$ROOT/target/release/mcp-auth-proxy"
"$PROXY" check --config "$CONFIG" >/dev/null
(umask 077 && "$PROXY" token --config "$CONFIG" --sub dev-user --ttl 86400 > .dev-token)

cat <<TXT
mcp-auth-proxy (development config: $CONFIG)
  MCP endpoints:  http://127.0.0.1:8080/mcp (Streamable HTTP), http://127.0.0.1:8080/sse (legacy SSE)
  a 24 h token for 'dev-user' is in .dev-token; mint others with:
    MCP_PROXY_JWT_SECRET="\$(cat .dev-secret)" $PROXY token --config $CONFIG --sub alice
  try it:
    curl -N -H "Authorization: Bearer \$(cat .dev-token)" http://127.0.0.1:8080/sse
  or with the official TypeScript client (after scripts/install-test-deps.sh):
    node tests/interop/ts_client.mjs --transport sse --url http://127.0.0.1:8080/sse \\
      --token "\$(cat .dev-token)" --call echo --args '{"message":"hello"}'
TXT

exec "$PROXY" --config "$CONFIG"
