#!/usr/bin/env node
// Runs @modelcontextprotocol/server-everything's own HTTP transports (legacy SSE or Streamable
// HTTP) bound to loopback on a chosen or ephemeral port, for interop checks without the proxy.
//
//   node serve_everything.mjs --transport sse|streamable [--port 0] [--host 127.0.0.1]
//
// Prints exactly one line on stdout once listening:  LISTENING http://HOST:PORT
// (endpoints: /sse + /message for sse, /mcp for streamable). Everything else goes to stderr.
// server-everything itself only reads PORT and listens on all interfaces; this wrapper pins
// the host by wrapping net.Server#listen before loading the package's transport module.

import net from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const argv = process.argv.slice(2);
let transport;
let port = '0';
let host = '127.0.0.1';
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--transport') transport = argv[++i];
  else if (a === '--port') port = argv[++i];
  else if (a === '--host') host = argv[++i];
  else {
    console.error(`serve_everything: unknown argument ${a}`);
    process.exit(2);
  }
}
const modules = { sse: 'sse.js', streamable: 'streamableHttp.js', streamableHttp: 'streamableHttp.js' };
if (!modules[transport]) {
  console.error('usage: serve_everything.mjs --transport sse|streamable [--port N] [--host H]');
  process.exit(2);
}

// Keep stdout for the LISTENING line only (the streamable transport logs with console.log).
console.log = (...args) => console.error(...args);

const origListen = net.Server.prototype.listen;
let announced = false;
net.Server.prototype.listen = function patchedListen(...args) {
  // express: app.listen(PORT, cb) -> server.listen(PORT, cb). Insert the host.
  if ((typeof args[0] === 'number' || typeof args[0] === 'string') && !(typeof args[1] === 'string')) {
    const cb = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
    args = cb ? [Number(args[0]), host, cb] : [Number(args[0]), host];
  }
  this.once('listening', () => {
    if (announced) return;
    announced = true;
    const addr = this.address();
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    process.stdout.write(`LISTENING http://${h}:${addr.port}\n`);
  });
  return origListen.apply(this, args);
};

process.env.PORT = String(port);
const require = createRequire(import.meta.url);
const pkgJson = require.resolve('@modelcontextprotocol/server-everything/package.json');
const entry = path.join(path.dirname(pkgJson), 'dist', 'transports', modules[transport]);
process.on('SIGTERM', () => process.exit(0));
await import(pathToFileURL(entry).href);
