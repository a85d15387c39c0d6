"""A scripted OpenAI-compatible upstream on loopback for the tool-calling tests.

Why not the real local model: SmolLM2-135M does not call tools reliably, and an agent test must
know which call comes next. So this endpoint plays a tool-calling model by a fixed script that
reads the messages it is sent (it never ignores them: the second call's arguments are computed
from the first tool's result, the final answer from the second's), and records every request
so a test can check what Triage forwarded. Everything between the test and this endpoint -
the router, litellm's ``openai/`` provider, the sidecar, the ledger - is real.

Script (``POST /v1/chat/completions``, JSON or SSE with ``"stream": true``):

* ``tool_choice`` naming a function -> that function called with ``FORCED_ARGS[name]``;
* ``response_format`` ``json_schema`` named N -> ``FORCED_ARGS[N]`` as JSON text;
* both agent tools offered (``lookup_price``, ``multiply``), question "How much do Q Xs cost?":
  no tool result yet -> ``lookup_price(item=X)``; one result P -> ``multiply(a=P, b=Q)``;
  two results -> "Q Xs cost R." with R the multiply result;
* a user turn containing ``BROKEN`` -> a ``lookup_price`` call whose arguments are not JSON;
* anything else -> "ok".
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PRICES = {"widget": 2.5, "gadget": 4.0}
FORCED_ARGS: dict[str, dict[str, Any]] = {"Invoice": {"item": "widget", "quantity": 7, "total": 17.5}}
_QUESTION = re.compile(r"(\d+)\s+(\w+?)s\b")


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


class ScriptedUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with outer._lock:
                    outer.requests.append(req)
                    n = len(outer.requests)
                message, finish = outer.reply(req, n)
                if req.get("stream"):
                    body, kind = _sse(message, finish, n), "text/event-stream"
                else:
                    body, kind = json.dumps(_completion(message, finish, n)).encode(), "application/json"
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def reply(req: dict[str, Any], n: int) -> tuple[dict[str, Any], str]:
        """The assistant message (``content`` / ``tool_calls``) and finish reason for ``req``."""
        def call(name: str, arguments: str) -> tuple[dict[str, Any], str]:
            return {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}_{name}", "type": "function", "function": {"name": name, "arguments": arguments}}]}, \
                "tool_calls"

        def say(text: str) -> tuple[dict[str, Any], str]:
            return {"role": "assistant", "content": text}, "stop"

        messages = req.get("messages") or []
        choice = req.get("tool_choice")
        if isinstance(choice, dict) and choice.get("function", {}).get("name") in FORCED_ARGS:
            name = choice["function"]["name"]
            return call(name, json.dumps(FORCED_ARGS[name]))
        fmt = req.get("response_format") or {}
        if fmt.get("type") == "json_schema" and fmt.get("json_schema", {}).get("name") in FORCED_ARGS:
            return say(json.dumps(FORCED_ARGS[fmt["json_schema"]["name"]]))
        user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        tools = {t.get("function", {}).get("name") for t in req.get("tools") or []}
        if "BROKEN" in user:
            return call("lookup_price", '{"item": "widget"')
        match = _QUESTION.search(user)
        if {"lookup_price", "multiply"} <= tools and match:
            qty, item = int(match.group(1)), match.group(2)
            results = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
            if not results:
                return call("lookup_price", json.dumps({"item": item}))
            if len(results) == 1:
                return call("multiply", json.dumps({"a": _number(results[0]), "b": qty}))
            return say(f"{qty} {item}s cost {results[1]}.")
        return say("ok")


def _usage(message: dict[str, Any], n: int) -> dict[str, int]:
    out = max(1, len(json.dumps(message)) // 8)
    return {"prompt_tokens": 10 + n, "completion_tokens": out, "total_tokens": 10 + n + out}


def _completion(message: dict[str, Any], finish: str, n: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-scripted-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": "scripted", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(message, n)}


def _sse(message: dict[str, Any], finish: str, n: int) -> bytes:
    """The answer as SSE chunks; tool-call arguments arrive in three pieces, as real providers split them."""
    base = {"id": f"chatcmpl-scripted-{n}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": "scripted"}
    deltas: list[dict[str, Any]] = []
    if message.get("tool_calls"):
        for i, tc in enumerate(message["tool_calls"]):
            args = tc["function"]["arguments"]
            third = max(1, len(args) // 3)
            deltas.append({"role": "assistant", "content": None, "tool_calls": [
                {"index": i, "id": tc["id"], "type": "function",
                 "function": {"name": tc["function"]["name"], "arguments": ""}}]})
            for piece in (args[:third], args[third:2 * third], args[2 * third:]):
                deltas.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    else:
        words = message["content"].split(" ")
        deltas = [{"role": "assistant", "content": w if i == 0 else " " + w} for i, w in enumerate(words)]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    events.append({**base, "choices": [], "usage": _usage(message, n)})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
