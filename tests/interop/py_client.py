#!/usr/bin/env python3
"""Interop client built on the official Python MCP SDK (`mcp`, 2.x or 1.x), driven by the Rust
integration tests. Same CLI and output as ts_client.mjs:

    python py_client.py --url http://127.0.0.1:PORT/sse --transport sse|streamable --token TOKEN \
        [--call TOOL --args '{"message":"hi"}'] [--progress] [--list-only] [--repeat N] \
        [--timeout-ms 20000] [--elicit-content '{"name":"x"}']

Prints exactly one JSON line on stdout. Success (exit 0):
    {"ok":true,"serverName":…,"protocolVersion":…,"tools":[…],"results":[…],
     "progress":N,"progressCallbacks":N,"sampling":N,"elicitation":N}
"progress" counts notifications/progress seen on the wire, "progressCallbacks" the SDK's
progress_callback invocations. Failure (exit 1): {"ok":false,"error":"…","status":N?}
Diagnostics go to stderr only; set MCP_INTEROP_LOG=DEBUG to see the SDK's logging there.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import threading
from contextlib import asynccontextmanager
from importlib import metadata as _metadata
from typing import Any

SAMPLING_REPLY_TEXT = "interop sampling reply"
SAMPLING_MODEL = "interop-fixed-model"

_emitted = False
_emit_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> bool:
    """Print the single result line; later calls are ignored."""
    global _emitted
    with _emit_lock:
        if _emitted:
            return False
        _emitted = True
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return True


def parse_args(argv: list[str]) -> argparse.Namespace:
    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one JSON line instead of argparse's usage dump
            emit({"ok": False, "error": f"usage: {message}"})
            sys.exit(1)

    p = _Parser(prog="py_client.py", description="MCP interop client (python SDK)")
    p.add_argument("--url", required=True)
    p.add_argument("--transport", required=True, choices=["sse", "streamable"])
    p.add_argument("--token", required=True)
    p.add_argument("--call")
    p.add_argument("--args", default="{}")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--list-only", action="store_true")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout-ms", type=int, default=20000)
    p.add_argument("--elicit-content")
    ns = p.parse_args(argv)
    try:
        ns.args = json.loads(ns.args)
    except json.JSONDecodeError as e:
        p.error(f"--args is not JSON: {e}")
    if not isinstance(ns.args, dict):
        p.error("--args must be a JSON object")
    if ns.elicit_content is not None:
        try:
            ns.elicit_content = json.loads(ns.elicit_content)
        except json.JSONDecodeError as e:
            p.error(f"--elicit-content is not JSON: {e}")
    if ns.repeat < 1:
        p.error("--repeat must be a positive integer")
    if ns.timeout_ms < 1:
        p.error("--timeout-ms must be a positive integer")
    return ns


# ---------------------------------------------------------------------------------------------
# Elicitation content: each property's default, else (required only) a value of the right type.


def _sample_value(prop: dict[str, Any]) -> Any:
    if prop.get("enum"):
        return prop["enum"][0]
    one_of = prop.get("oneOf")
    if one_of and isinstance(one_of[0], dict) and "const" in one_of[0]:
        return one_of[0]["const"]
    t = prop.get("type")
    if t == "boolean":
        return True
    if t == "integer":
        return prop["minimum"] if isinstance(prop.get("minimum"), int) else 1
    if t == "number":
        return prop["minimum"] if isinstance(prop.get("minimum"), (int, float)) else 1
    if t == "array":
        items = prop.get("items") or {}
        if items.get("enum"):
            return [items["enum"][0]]
        alts = items.get("anyOf") or items.get("oneOf")
        if alts and isinstance(alts[0], dict) and "const" in alts[0]:
            return [alts[0]["const"]]
        return ["interop"]
    return {
        "email": "interop@example.com",
        "uri": "https://example.com/interop",
        "date": "2000-01-01",
        "date-time": "2000-01-01T00:00:00Z",
    }.get(prop.get("format"), "interop")


def elicitation_content_for(schema: Any) -> dict[str, Any]:
    if hasattr(schema, "model_dump"):
        schema = schema.model_dump(by_alias=True, exclude_none=True)
    schema = schema or {}
    required = set(schema.get("required") or [])
    content: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop or {}
        if "default" in prop:
            content[name] = prop["default"]
        elif name in required:
            content[name] = _sample_value(prop)
    return content


# ---------------------------------------------------------------------------------------------
# SDK-version shims


def _sdk_version() -> str:
    try:
        return _metadata.version("mcp")
    except Exception:  # pragma: no cover
        return "unknown"


def _attr(obj: Any, *names: str) -> Any:
    """First present attribute (2.x uses snake_case fields, 1.x camelCase)."""
    for n in names:
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return None


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


class StatusRecorder:
    """httpx response hook: remembers the first HTTP error status (>= 400)."""

    def __init__(self) -> None:
        self.first_error: int | None = None

    async def hook(self, response: Any) -> None:
        if response.status_code >= 400 and self.first_error is None:
            self.first_error = response.status_code


def make_client_factory(recorder: StatusRecorder):
    from mcp.shared._httpx_utils import create_mcp_http_client

    def factory(headers=None, timeout=None, auth=None):
        client = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        client.event_hooks["response"].append(recorder.hook)
        return client

    return factory


@asynccontextmanager
async def open_transport(opts: argparse.Namespace, recorder: StatusRecorder):
    """Yields (read_stream, write_stream) for the chosen transport with the bearer header on
    every request (SSE GET + message POSTs; streamable POST/GET/DELETE)."""
    headers = {"Authorization": f"Bearer {opts.token}"}
    factory = make_client_factory(recorder)
    if opts.transport == "sse":
        from mcp.client.sse import sse_client

        async with sse_client(opts.url, headers=headers, httpx_client_factory=factory) as streams:
            yield streams[0], streams[1]
        return

    import mcp.client.streamable_http as sh

    new_api = getattr(sh, "streamable_http_client", None)
    if new_api is not None and "http_client" in inspect.signature(new_api).parameters:
        # mcp >= 2 (and late 1.x): headers live on a caller-owned httpx client.
        http_client = factory(headers=headers)
        async with http_client:
            async with new_api(opts.url, http_client=http_client) as streams:
                yield streams[0], streams[1]
    else:
        # mcp 1.x: streamablehttp_client(url, headers=…) -> (read, write, get_session_id)
        async with sh.streamablehttp_client(opts.url, headers=headers, httpx_client_factory=factory) as streams:
            yield streams[0], streams[1]


def _is_progress(item: Any) -> bool:
    msg = getattr(item, "message", None)
    msg = getattr(msg, "root", msg)  # 1.x wraps in a RootModel
    return getattr(msg, "method", None) == "notifications/progress"


# ---------------------------------------------------------------------------------------------


async def run(opts: argparse.Namespace, recorder: StatusRecorder) -> dict[str, Any]:
    import anyio
    import mcp.types as types
    from mcp import ClientSession

    counters = {"progress": 0, "progressCallbacks": 0, "sampling": 0, "elicitation": 0}

    async def sampling_callback(context, params):
        counters["sampling"] += 1
        return types.CreateMessageResult.model_validate(
            {
                "role": "assistant",
                "content": {"type": "text", "text": SAMPLING_REPLY_TEXT},
                "model": SAMPLING_MODEL,
                "stopReason": "endTurn",
            }
        )

    async def elicitation_callback(context, params):
        counters["elicitation"] += 1
        if opts.elicit_content is not None:
            content = opts.elicit_content
        else:
            content = elicitation_content_for(_attr(params, "requested_schema", "requestedSchema"))
        return types.ElicitResult(action="accept", content=content)

    async def progress_callback(progress, total, message):
        counters["progressCallbacks"] += 1

    async def message_handler(message):
        if isinstance(message, Exception):
            print(f"py_client: transport error: {message!r}", file=sys.stderr)

    async with open_transport(opts, recorder) as (read_stream, write_stream):
        # Tap between transport and session to count progress notifications on the wire.
        tap_send, tap_recv = anyio.create_memory_object_stream(0)

        async def pump() -> None:
            async with tap_send:
                async for item in read_stream:
                    if _is_progress(item):
                        counters["progress"] += 1
                    await tap_send.send(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            async with ClientSession(
                tap_recv,
                write_stream,
                sampling_callback=sampling_callback,
                elicitation_callback=elicitation_callback,
                message_handler=message_handler,
            ) as session:
                init = await session.initialize()
                server_info = _attr(init, "server_info", "serverInfo")
                protocol_version = _attr(init, "protocol_version", "protocolVersion")
                listed = await session.list_tools()
                tools = [t.name for t in listed.tools]
                results = []
                if opts.call and not opts.list_only:
                    for _ in range(opts.repeat):
                        res = await session.call_tool(
                            opts.call,
                            opts.args,
                            progress_callback=progress_callback if opts.progress else None,
                        )
                        results.append(_dump(res))
            tg.cancel_scope.cancel()

    return {
        "ok": True,
        "serverName": getattr(server_info, "name", None),
        "protocolVersion": protocol_version,
        "tools": tools,
        "results": results,
        "progress": counters["progress"],
        "progressCallbacks": counters["progressCallbacks"],
        "sampling": counters["sampling"],
        "elicitation": counters["elicitation"],
    }


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaf_exceptions(e))
        return out
    return [exc]


def _describe(exc: BaseException) -> tuple[str, int | None]:
    leaves = [e for e in _leaf_exceptions(exc) if not type(e).__name__.endswith("Cancelled")] or [exc]
    leaf = leaves[0]
    status = None
    for e in leaves:
        resp = getattr(e, "response", None)
        code = getattr(resp, "status_code", None)
        if isinstance(code, int):
            status = code
            leaf = e
            break
    text = str(leaf) or type(leaf).__name__
    err = getattr(leaf, "error", None)  # MCPError / McpError carry ErrorData
    if err is not None and getattr(err, "message", None) and err.message not in text:
        text = f"{text}: {err.message}"
    return f"{type(leaf).__name__}: {text}", status


def main() -> int:
    logging.basicConfig(level=os.environ.get("MCP_INTEROP_LOG", "CRITICAL").upper(), stream=sys.stderr)
    opts = parse_args(sys.argv[1:])
    timeout_s = opts.timeout_ms / 1000.0
    recorder = StatusRecorder()

    # Last-resort watchdog in case cancellation cannot unwind (e.g. a stuck socket close).
    def _watchdog() -> None:
        out: dict[str, Any] = {"ok": False, "error": f"timed out after {opts.timeout_ms} ms (watchdog)"}
        if recorder.first_error is not None:
            out["status"] = recorder.first_error
        emit(out)
        os._exit(1)

    wd = threading.Timer(timeout_s + 5.0, _watchdog)
    wd.daemon = True
    wd.start()

    import anyio

    async def bounded() -> dict[str, Any]:
        with anyio.fail_after(timeout_s):
            return await run(opts, recorder)

    try:
        out = anyio.run(bounded)
    except TimeoutError:
        out = {"ok": False, "error": f"timed out after {opts.timeout_ms} ms"}
        if recorder.first_error is not None:
            out["status"] = recorder.first_error
    except BaseException as exc:  # noqa: BLE001 - report anything as one JSON line
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        msg, status = _describe(exc)
        if isinstance(exc, BaseExceptionGroup) and any(isinstance(e, TimeoutError) for e in _leaf_exceptions(exc)):
            msg = f"timed out after {opts.timeout_ms} ms"
        out = {"ok": False, "error": msg}
        status = status if status is not None else recorder.first_error
        if status is not None:
            out["status"] = status
    wd.cancel()
    emit(out)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown of half-closed sockets / lingering threads.
    os._exit(code)
