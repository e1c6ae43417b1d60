#!/usr/bin/env node
// A real OpenID provider (npm `oidc-provider`) on loopback, for the Rust integration tests: it
// issues JWT access tokens (RFC 9068) through client_credentials with a resource indicator
// (RFC 8707), publishes its keys at its discovered `jwks_uri`, and can rotate them.
//
//   node oidc_provider.mjs [--port 0] [--algs RS256,ES256] [--jwks FILE] [--scopes "mcp:tools mcp:admin"]
//                          [--client-secret SECRET] [--ttl SECS] [--down]
//
//   --port     listen on 127.0.0.1:PORT (0: any free port; give the old port to restart in place)
//   --algs     signing algorithms; one confidential client per algorithm, `mcp-<alg lower-case>`
//              (e.g. mcp-rs256), whose access tokens are signed with that algorithm
//   --jwks     private JWK Set to sign with (default: fresh keys, one per algorithm)
//   --scopes   the scopes the resource server accepts (requested scopes are filtered to these)
//   --down     start answering 503 to everything until `UP` (an identity provider still booting)
//
// The issuer is http://127.0.0.1:PORT. Any absolute http(s) resource indicator is accepted and
// becomes the token's `aud` (this is a test provider: the proxy decides which audiences it takes).
// A token request without `resource` gets an opaque token (no audience, so no JWT).
//
// stdout: `LISTENING http://127.0.0.1:PORT` once serving, then `KEYS {"kids":[…]}` (signing
// keys first). Commands on stdin, one per line, each acknowledged on stdout:
//   ROTATE  new keys for every algorithm sign from now on; the old ones stay published
//           (a normal rollover)            → `OK ROTATE` + `KEYS {…}`
//   DROP    publish only the current signing keys (old ones retired) → `OK DROP` + `KEYS {…}`
//   DOWN    answer 503 to every request     → `OK DOWN`
//   UP      serve again                     → `OK UP`
// The process exits when stdin closes. Diagnostics go to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as readline from 'node:readline';

import Provider from 'oidc-provider';

function parseArgs(argv) {
  const opts = {
    port: 0,
    algs: ['RS256', 'ES256'],
    jwks: undefined,
    scopes: 'mcp:tools mcp:admin',
    clientSecret: 'interop-client-secret',
    ttl: 600,
    down: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--port': opts.port = Number.parseInt(next(), 10); break;
      case '--algs': opts.algs = next().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--jwks': opts.jwks = JSON.parse(fs.readFileSync(next(), 'utf8')); break;
      case '--scopes': opts.scopes = next(); break;
      case '--client-secret': opts.clientSecret = next(); break;
      case '--ttl': opts.ttl = Number.parseInt(next(), 10); break;
      case '--down': opts.down = true; break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0) throw new Error('--port must be a port number');
  if (!Number.isInteger(opts.ttl) || opts.ttl < 1) throw new Error('--ttl must be a positive integer');
  return opts;
}

let generation = 0;

// One fresh private JWK for `alg`, with `kid`, `alg` and `use` set (as most IdPs publish them).
function generateKey(alg) {
  let pair;
  if (/^(RS|PS)/.test(alg)) pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else if (alg === 'ES384') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
  else if (alg === 'EdDSA') pair = crypto.generateKeyPairSync('ed25519');
  else throw new Error(`unsupported algorithm ${alg}`);
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `${alg.toLowerCase()}-g${generation}-${crypto.randomBytes(4).toString('hex')}`, alg, use: 'sig' };
}

function freshKeys(algs) {
  generation += 1;
  return algs.map(generateKey);
}

function clientId(alg) {
  return `mcp-${alg.toLowerCase()}`;
}

function buildProvider(issuer, opts, keys) {
  const provider = new Provider(issuer, {
    jwks: { keys },
    clients: opts.algs.map((alg) => ({
      client_id: clientId(alg),
      client_secret: opts.clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // No default: a token request must name its resource.
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator, client) => {
          const url = URL.parse(resourceIndicator);
          if (!url || !/^https?:$/.test(url.protocol)) {
            throw new Provider.errors.InvalidTarget('resource must be an http(s) URL');
          }
          const alg = opts.algs.find((a) => clientId(a) === client.clientId) ?? opts.algs[0];
          return {
            scope: opts.scopes,
            audience: resourceIndicator,
            accessTokenTTL: opts.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    ttl: { ClientCredentials: opts.ttl },
  });
  provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc_provider: server_error: ${err?.stack ?? err}\n`));
  return provider;
}

// The kids in the order the provider uses them: for each algorithm, the first key signs.
function announceKeys(keys) {
  process.stdout.write(`KEYS ${JSON.stringify({ kids: keys.map((k) => k.kid) })}\n`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let down = opts.down;
  let handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = http.createServer((req, res) => {
    if (down) {
      res.statusCode = 503;
      res.setHeader('content-type', 'application/json');
      res.end('{"error":"temporarily_unavailable"}');
      return;
    }
    handler(req, res);
  });
  // No lingering keep-alive sockets: a stopped or restarted provider is really gone.
  server.keepAliveTimeout = 1000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  let current = opts.jwks?.keys ?? freshKeys(opts.algs);
  let published = current;
  const install = () => {
    handler = buildProvider(issuer, opts, published).callback();
  };
  install();
  process.stdout.write(`LISTENING ${issuer}\n`);
  announceKeys(published);

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const cmd = line.trim();
    try {
      switch (cmd) {
        case 'ROTATE':
          current = freshKeys(opts.algs);
          published = [...current, ...published];
          install();
          process.stdout.write('OK ROTATE\n');
          announceKeys(published);
          break;
        case 'DROP':
          published = current;
          install();
          process.stdout.write('OK DROP\n');
          announceKeys(published);
          break;
        case 'DOWN':
          down = true;
          process.stdout.write('OK DOWN\n');
          break;
        case 'UP':
          down = false;
          process.stdout.write('OK UP\n');
          break;
        case '':
          break;
        default:
          process.stdout.write(`ERR unknown command ${cmd}\n`);
      }
    } catch (e) {
      process.stdout.write(`ERR ${cmd}: ${e?.message ?? e}\n`);
    }
  });
  rl.on('close', () => {
    server.closeAllConnections?.();
    server.close();
    process.exit(0);
  });
}

main().catch((e) => {
  process.stderr.write(`oidc_provider: ${e?.stack ?? e}\n`);
  process.exit(1);
});
