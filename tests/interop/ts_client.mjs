#!/usr/bin/env node
// Interop client built on the official TypeScript MCP SDK, driven by the Rust integration tests.
//
//   node ts_client.mjs --url http://127.0.0.1:PORT/sse --transport sse|streamable --token TOKEN \
//       [--call TOOL --args '{"message":"hi"}'] [--progress] [--list-only] [--repeat N] \
//       [--timeout-ms 20000] [--elicit-content '{"name":"x"}']
//
// Prints exactly one JSON line on stdout and exits 0 on success:
//   {"ok":true,"serverName":…,"protocolVersion":…,"tools":[…],"results":[…],
//    "progress":N,"progressCallbacks":N,"sampling":N,"elicitation":N}
// "progress" counts notifications/progress received for our calls' tokens (wire level);
// "progressCallbacks" counts the SDK's onprogress invocations (can be lower, see below).
// or, on any failure, exits 1 after printing:
//   {"ok":false,"error":"…","status":<HTTP status when known>}
// Diagnostics go to stderr only.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const SAMPLING_REPLY_TEXT = 'interop sampling reply';
const SAMPLING_MODEL = 'interop-fixed-model';

function usage(msg) {
  const text =
    'usage: ts_client.mjs --url URL --transport sse|streamable --token TOKEN ' +
    "[--call TOOL] [--args JSON] [--progress] [--list-only] [--repeat N] [--timeout-ms MS] [--elicit-content JSON]";
  return new Error(msg ? `${msg}; ${text}` : text);
}

function parseArgs(argv) {
  const opts = {
    url: undefined,
    transport: undefined,
    token: undefined,
    call: undefined,
    args: {},
    progress: false,
    listOnly: false,
    repeat: 1,
    timeoutMs: 20000,
    elicitContent: undefined,
  };
  const takesValue = new Set(['--url', '--transport', '--token', '--call', '--args', '--repeat', '--timeout-ms', '--elicit-content']);
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    if (takesValue.has(flag) && value === undefined) {
      if (i + 1 >= argv.length) throw usage(`missing value for ${flag}`);
      value = argv[++i];
    }
    switch (flag) {
      case '--url': opts.url = value; break;
      case '--transport': opts.transport = value; break;
      case '--token': opts.token = value; break;
      case '--call': opts.call = value; break;
      case '--args':
        try { opts.args = JSON.parse(value); } catch (e) { throw usage(`--args is not JSON: ${e.message}`); }
        if (opts.args === null || typeof opts.args !== 'object' || Array.isArray(opts.args)) throw usage('--args must be a JSON object');
        break;
      case '--elicit-content':
        try { opts.elicitContent = JSON.parse(value); } catch (e) { throw usage(`--elicit-content is not JSON: ${e.message}`); }
        break;
      case '--repeat': opts.repeat = Number.parseInt(value, 10); break;
      case '--timeout-ms': opts.timeoutMs = Number.parseInt(value, 10); break;
      case '--progress': opts.progress = true; break;
      case '--list-only': opts.listOnly = true; break;
      case '-h': case '--help': throw usage();
      default: throw usage(`unknown argument ${flag}`);
    }
  }
  if (!opts.url) throw usage('--url is required');
  if (opts.transport !== 'sse' && opts.transport !== 'streamable') throw usage('--transport must be sse or streamable');
  if (opts.token === undefined) throw usage('--token is required');
  if (!Number.isInteger(opts.repeat) || opts.repeat < 1) throw usage('--repeat must be a positive integer');
  if (!Number.isInteger(opts.timeoutMs) || opts.timeoutMs < 1) throw usage('--timeout-ms must be a positive integer');
  return opts;
}

// Deterministic "user input" for an elicitation form: each property's default if it has one,
// otherwise (for required properties only) a value of the right type.
export function elicitationContentFor(requestedSchema) {
  const content = {};
  const props = requestedSchema?.properties ?? {};
  const required = new Set(requestedSchema?.required ?? []);
  for (const [name, prop] of Object.entries(props)) {
    if (prop && prop.default !== undefined) {
      content[name] = prop.default;
      continue;
    }
    if (!required.has(name)) continue;
    content[name] = sampleValue(prop ?? {});
  }
  return content;
}

function sampleValue(prop) {
  if (Array.isArray(prop.enum) && prop.enum.length) return prop.enum[0];
  if (Array.isArray(prop.oneOf) && prop.oneOf.length && prop.oneOf[0].const !== undefined) return prop.oneOf[0].const;
  switch (prop.type) {
    case 'boolean': return true;
    case 'integer': return Number.isInteger(prop.minimum) ? prop.minimum : 1;
    case 'number': return typeof prop.minimum === 'number' ? prop.minimum : 1;
    case 'array': {
      const items = prop.items ?? {};
      if (Array.isArray(items.enum) && items.enum.length) return [items.enum[0]];
      const alts = items.anyOf ?? items.oneOf;
      if (Array.isArray(alts) && alts.length && alts[0].const !== undefined) return [alts[0].const];
      return ['interop'];
    }
    default:
      switch (prop.format) {
        case 'email': return 'interop@example.com';
        case 'uri': return 'https://example.com/interop';
        case 'date': return '2000-01-01';
        case 'date-time': return '2000-01-01T00:00:00Z';
        default: return 'interop';
      }
  }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    emit({ ok: false, error: e.message });
    process.exitCode = 1;
    return;
  }

  const counters = { progress: 0, sampling: 0, elicitation: 0 };
  // First non-2xx HTTP status seen by the transport, for the error report.
  let firstErrorStatus;
  const recordingFetch = async (url, init) => {
    const res = await fetch(url, init);
    if (!res.ok && firstErrorStatus === undefined && !(res.status >= 300 && res.status < 400)) {
      firstErrorStatus = res.status;
    }
    return res;
  };

  // The Authorization header goes in requestInit.headers ONLY. In SDK 1.32 both transports
  // build every request's headers (SSE GET via the EventSource fetch wrapper, POSTs, the
  // streamable GET/DELETE) from _commonHeaders(), which spreads requestInit.headers into a
  // fresh Headers object. Adding it a second time (eventSourceInit fetch, a Headers instance
  // with a differently-cased key, an authProvider) yields "Bearer x, Bearer x".
  const url = new URL(opts.url);
  const requestInit = { headers: { Authorization: `Bearer ${opts.token}` } };
  const transport =
    opts.transport === 'sse'
      ? new SSEClientTransport(url, { requestInit, fetch: recordingFetch })
      : new StreamableHTTPClientTransport(url, {
          requestInit,
          fetch: recordingFetch,
          // Fail fast instead of retrying a dropped GET stream for ~1 minute.
          reconnectionOptions: { initialReconnectionDelay: 200, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 2 },
        });

  // Progress is counted on the wire: every notifications/progress whose token belongs to one of
  // our tools/call requests. SDK 1.32's Protocol runs notification handlers in a microtask but
  // response handlers synchronously, so when the final progress notification and the result
  // arrive in the same read (common on the legacy SSE stream) the result wins, the onprogress
  // handler is already gone and the SDK reports "progress notification for an unknown token"
  // (typescript-sdk issue #2580). onprogress invocations are reported separately as
  // progressCallbacks.
  const progressTokens = new Set();
  let progressCallbacks = 0;
  const pendingSends = new Set();
  const origSend = transport.send.bind(transport);
  transport.send = (message, options) => {
    const token = message?.method === 'tools/call' ? message.params?._meta?.progressToken : undefined;
    if (token !== undefined) progressTokens.add(String(token));
    const p = origSend(message, options);
    pendingSends.add(p);
    const done = () => pendingSends.delete(p);
    p.then(done, done);
    return p;
  };
  let innerOnMessage;
  Object.defineProperty(transport, 'onmessage', {
    configurable: true,
    get: () => (innerOnMessage ? wrappedOnMessage : undefined),
    set: (fn) => {
      innerOnMessage = fn;
    },
  });
  function wrappedOnMessage(message, extra) {
    if (message?.method === 'notifications/progress' && progressTokens.has(String(message.params?.progressToken))) {
      counters.progress++;
    }
    return innerOnMessage?.(message, extra);
  }

  let negotiatedVersion;
  const origSetVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (v) => {
    negotiatedVersion = v;
    origSetVersion?.(v);
  };

  const client = new Client(
    { name: 'mcp-auth-proxy-interop-ts', version: '0.1.0' },
    { capabilities: { sampling: {}, elicitation: {} } },
  );
  client.setRequestHandler(CreateMessageRequestSchema, async () => {
    counters.sampling++;
    return {
      role: 'assistant',
      content: { type: 'text', text: SAMPLING_REPLY_TEXT },
      model: SAMPLING_MODEL,
      stopReason: 'endTurn',
    };
  });
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    counters.elicitation++;
    const content = opts.elicitContent ?? elicitationContentFor(req.params?.requestedSchema);
    return { action: 'accept', content };
  });
  client.onerror = (err) => {
    process.stderr.write(`ts_client: transport/protocol error: ${err?.message ?? err}\n`);
  };

  let finished = false;
  const timer = setTimeout(() => {
    if (finished) return;
    finished = true;
    emit({ ok: false, error: `timed out after ${opts.timeoutMs} ms`, ...(firstErrorStatus ? { status: firstErrorStatus } : {}) });
    process.exit(1);
  }, opts.timeoutMs);

  const requestOptions = { timeout: opts.timeoutMs, maxTotalTimeout: opts.timeoutMs };
  try {
    await client.connect(transport, requestOptions);
    const serverInfo = client.getServerVersion();
    const listed = await client.listTools(undefined, requestOptions);
    const tools = listed.tools.map((t) => t.name);

    const results = [];
    if (opts.call && !opts.listOnly) {
      for (let i = 0; i < opts.repeat; i++) {
        const callOptions = { ...requestOptions };
        if (opts.progress) {
          callOptions.onprogress = () => {
            progressCallbacks++;
          };
          callOptions.resetTimeoutOnProgress = true;
        }
        const result = await client.callTool({ name: opts.call, arguments: opts.args }, undefined, callOptions);
        results.push(result);
      }
    }

    // Let in-flight POSTs finish (e.g. our reply to an elicitation whose 202 arrives after the
    // tool result) so close() does not abort them.
    await Promise.allSettled([...pendingSends]);
    // Clean shutdown: DELETE the streamable session, then close the transport / SSE stream.
    if (opts.transport === 'streamable') {
      try {
        await transport.terminateSession();
      } catch (e) {
        process.stderr.write(`ts_client: terminateSession failed: ${e?.message ?? e}\n`);
      }
    }
    await client.close();

    if (finished) return;
    finished = true;
    clearTimeout(timer);
    emit({
      ok: true,
      serverName: serverInfo?.name ?? null,
      protocolVersion: negotiatedVersion ?? null,
      tools,
      results,
      progress: counters.progress,
      progressCallbacks,
      sampling: counters.sampling,
      elicitation: counters.elicitation,
    });
    process.exitCode = 0;
  } catch (err) {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    let status;
    if (typeof err?.code === 'number' && err.code >= 100 && err.code < 600) status = err.code;
    else if (firstErrorStatus !== undefined) status = firstErrorStatus;
    else {
      const m = /HTTP (\d{3})/.exec(String(err?.message ?? ''));
      if (m) status = Number(m[1]);
    }
    const out = { ok: false, error: String(err?.message ?? err) };
    if (status !== undefined) out.status = status;
    emit(out);
    try {
      await client.close();
    } catch {
      /* ignore */
    }
    process.exitCode = 1;
  }
}

// Lets Node exit even when an EventSource keeps a socket half-open after close().
main().finally(() => {
  setTimeout(() => process.exit(process.exitCode ?? 1), 50).unref();
});
