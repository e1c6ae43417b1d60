// A 2026-07-28 client on the official TypeScript SDK v2 (`@modelcontextprotocol/client`),
// with era negotiation on: it probes with server/discover and stays modern only on a valid
// discover result; once modern it rejects results without resultType and list results
// without ttlMs/cacheScope. Used by the era-bridge tests (tests/it/bridge_interop.rs).
//
//   node ts2_client.mjs --url URL --token TOKEN --scenario JSON [--timeout-ms MS]
//
// The scenario (every key optional):
//   { "call":   { "name": "...", "arguments": {...}, "progress": true },
//     "read":   "uri",
//     "prompt": { "name": "...", "arguments": {...} },
//     "listen": { "filter": { "toolsListChanged": true, ... },
//                 "trigger": { "name": "...", "arguments": {...} },   // a tool call that causes a change
//                 "expect": "notifications/tools/list_changed" } }
//
// Prints one JSON line: {"ok":true,"era","protocolVersion","serverName","tools":[names],
//   "call","progress","read","prompt","listen":{"honored","received"}} or {"ok":false,"error"}.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

function parseArgs(argv) {
  const out = { timeoutMs: 20000, scenario: {} };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--url': out.url = value; i++; break;
      case '--token': out.token = value; i++; break;
      case '--scenario': out.scenario = JSON.parse(value); i++; break;
      case '--timeout-ms': out.timeoutMs = Number(value); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!out.url || !out.token) throw new Error('--url and --token are required');
  return out;
}

async function run(opts) {
  const report = { ok: true, progress: 0 };
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
    requestInit: { headers: { Authorization: `Bearer ${opts.token}` } },
  });
  const client = new Client(
    { name: 'mcp-auth-proxy-interop-ts2', version: '0.0.0' },
    { capabilities: {}, versionNegotiation: { mode: 'auto' } },
  );
  await client.connect(transport);
  report.era = client.getProtocolEra();
  report.protocolVersion = client.getNegotiatedProtocolVersion();
  report.serverName = client.getServerVersion()?.name;
  report.tools = (await client.listTools()).tools.map((t) => t.name);
  const s = opts.scenario;
  if (s.call) {
    const options = s.call.progress ? { onprogress: () => { report.progress += 1; } } : {};
    report.call = await client.callTool({ name: s.call.name, arguments: s.call.arguments ?? {} }, options);
  }
  if (s.read) report.read = await client.readResource({ uri: s.read });
  if (s.prompt) report.prompt = await client.getPrompt({ name: s.prompt.name, arguments: s.prompt.arguments ?? {} });
  if (s.listen) {
    const received = new Promise((resolve) => {
      client.setNotificationHandler(s.listen.expect, (n) => resolve(n.method));
    });
    const subscription = await client.listen(s.listen.filter);
    report.listen = { honored: subscription.honoredFilter };
    if (s.listen.trigger) {
      await client.callTool({ name: s.listen.trigger.name, arguments: s.listen.trigger.arguments ?? {} });
    }
    report.listen.received = await received;
    await subscription.close();
  }
  await client.close();
  return report;
}

const opts = parseArgs(process.argv.slice(2));
const timer = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: `timed out after ${opts.timeoutMs} ms` }));
  process.exit(1);
}, opts.timeoutMs);
try {
  const report = await run(opts);
  clearTimeout(timer);
  console.log(JSON.stringify(report));
  process.exit(0);
} catch (e) {
  clearTimeout(timer);
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e), status: e?.status ?? e?.code }));
  process.exit(1);
}
