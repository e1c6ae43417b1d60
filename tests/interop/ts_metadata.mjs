#!/usr/bin/env node
// RFC 9728 protected-resource-metadata discovery exactly as the official TypeScript SDK's auth
// code performs it, for the Rust integration tests.
//
//   node ts_metadata.mjs --url BASE_MCP_URL [--probe] [--resource-metadata-url URL]
//                        [--auth-server] [--timeout-ms 20000]
//
//   --probe                 first POST an unauthenticated `initialize` to --url and report the
//                           status and the WWW-Authenticate params the SDK extracts
//                           (resource_metadata, scope, error); a resource_metadata URL found
//                           there is then used for discovery, as the SDK's auth() does.
//   --resource-metadata-url use this metadata URL instead of the well-known path derivation.
//   --auth-server           also fetch the first authorization server's metadata
//                           (RFC 8414 / OIDC discovery) with discoverAuthorizationServerMetadata.
//
// Prints one JSON line: {"ok":true,"metadata":{…},"probe":{…}?,"authorizationServer":{…}?}
// or {"ok":false,"error":"…","status":N?} with exit code 1.

import {
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  extractWWWAuthenticateParams,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseArgs(argv) {
  const opts = { url: undefined, probe: false, resourceMetadataUrl: undefined, authServer: false, timeoutMs: 20000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--url': opts.url = next(); break;
      case '--probe': opts.probe = true; break;
      case '--resource-metadata-url': opts.resourceMetadataUrl = next(); break;
      case '--auth-server': opts.authServer = true; break;
      case '--timeout-ms': opts.timeoutMs = Number.parseInt(next(), 10); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!opts.url) throw new Error('usage: ts_metadata.mjs --url BASE_MCP_URL [--probe] [--resource-metadata-url URL] [--auth-server]');
  if (!Number.isInteger(opts.timeoutMs) || opts.timeoutMs < 1) throw new Error('--timeout-ms must be a positive integer');
  return opts;
}

let lastErrorStatus;
const recordingFetch = async (url, init) => {
  const res = await fetch(url, init);
  if (!res.ok) lastErrorStatus = res.status;
  return res;
};

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const out = { ok: true };
  let resourceMetadataUrl = opts.resourceMetadataUrl ? new URL(opts.resourceMetadataUrl) : undefined;

  if (opts.probe) {
    const res = await fetch(opts.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'ts_metadata', version: '0.1.0' } },
      }),
    });
    await res.body?.cancel();
    const params = extractWWWAuthenticateParams(res);
    out.probe = {
      status: res.status,
      wwwAuthenticate: res.headers.get('www-authenticate'),
      resourceMetadataUrl: params.resourceMetadataUrl?.href ?? null,
      scope: params.scope ?? null,
      error: params.error ?? null,
    };
    if (!resourceMetadataUrl && params.resourceMetadataUrl) resourceMetadataUrl = params.resourceMetadataUrl;
  }

  lastErrorStatus = undefined;
  out.metadata = await discoverOAuthProtectedResourceMetadata(opts.url, { resourceMetadataUrl }, recordingFetch);

  if (opts.authServer) {
    const as = out.metadata.authorization_servers?.[0];
    if (!as) throw new Error('metadata lists no authorization_servers');
    out.authorizationServer = (await discoverAuthorizationServerMetadata(as, { fetchFn: recordingFetch })) ?? null;
  }
  emit(out);
}

let opts0;
try {
  opts0 = parseArgs(process.argv.slice(2));
} catch (e) {
  emit({ ok: false, error: e.message });
  process.exit(1);
}
const timer = setTimeout(() => {
  emit({ ok: false, error: `timed out after ${opts0.timeoutMs} ms` });
  process.exit(1);
}, opts0.timeoutMs);
main().then(
  () => {
    clearTimeout(timer);
    process.exitCode = 0;
  },
  (err) => {
    clearTimeout(timer);
    const out = { ok: false, error: String(err?.message ?? err) };
    const m = /HTTP (\d{3})/.exec(out.error);
    if (m) out.status = Number(m[1]);
    else if (lastErrorStatus !== undefined) out.status = lastErrorStatus;
    emit(out);
    process.exitCode = 1;
  },
);
