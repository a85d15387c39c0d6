"""A minimal OpenAI-compatible upstream that answers at once - for overhead and load measurement ONLY.

It exists so the sidecar benchmark measures Triage's own cost (probe + policy + ledger + HTTP), not a
model's. Functional tests use the real local model; nothing else should point at this server.

    python eval/bench/stub_upstream.py --port 9100 [--fail-rate 0.05] [--timeout-rate 0.05] [--hang-s 5]

Answers ``POST /v1/chat/completions`` (JSON, or SSE with ``"stream": true``) and ``GET /v1/models``.
Fault injection, for models matching ``--fault-models`` (a glob on the request's ``model``): with
probability ``--fail-rate`` a 500/503 error, with probability ``--timeout-rate`` it holds the request
``--hang-s`` seconds before answering (longer than the caller's timeout makes it a timeout).
``GET /stats`` reports counts. Plain asyncio (uvloop when installed) HTTP/1.1 with keep-alive: a
stub this small costs the shared CPU little, so it disturbs the measurement little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from fnmatch import fnmatchcase
from typing import Any


class StubConfig:
    def __init__(self, fail_rate: float = 0.0, timeout_rate: float = 0.0, hang_s: float = 5.0,
                 fault_models: str = "*", seed: int = 0) -> None:
        self.fail_rate = fail_rate
        self.timeout_rate = timeout_rate
        self.hang_s = hang_s
        self.fault_models = fault_models
        self.rng = random.Random(seed)
        self.stats = {"requests": 0, "ok": 0, "failed": 0, "hung": 0, "bad": 0}


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required",
              500: b"Internal Server Error", 503: b"Service Unavailable"}.get(status, b"Error")
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
            % (status, reason, content_type, len(body))) + body


def _completion(req: dict[str, Any]) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in req.get("messages") or [] if isinstance(m, dict))
    return {
        "id": f"chatcmpl-stub{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
        "model": str(req.get("model", "stub")),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": 1,
                  "total_tokens": max(1, prompt_chars // 4) + 1},
    }


def _sse(req: dict[str, Any]) -> bytes:
    done = _completion(req)
    base = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"], "model": done["model"]}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": done["usage"]},
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


async def _answer(cfg: StubConfig, method: bytes, path: bytes, body: bytes) -> bytes:
    if method == b"GET" and path.startswith(b"/stats"):
        return _response(200, json.dumps(cfg.stats).encode())
    if method == b"GET" and path.endswith(b"/models"):
        return _response(200, b'{"object":"list","data":[{"id":"stub","object":"model","owned_by":"stub"}]}')
    if method != b"POST" or not path.endswith(b"/chat/completions"):
        return _response(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
    cfg.stats["requests"] += 1
    try:
        req = json.loads(body)
        assert isinstance(req, dict)
    except Exception:  # noqa: BLE001
        cfg.stats["bad"] += 1
        return _response(400, b'{"error":{"message":"bad json","type":"invalid_request_error"}}')
    if fnmatchcase(str(req.get("model", "")), cfg.fault_models):
        r = cfg.rng.random()
        if r < cfg.fail_rate:
            cfg.stats["failed"] += 1
            status = 500 if r < cfg.fail_rate / 2 else 503
            return _response(status, b'{"error":{"message":"injected failure","type":"server_error"}}')
        if r < cfg.fail_rate + cfg.timeout_rate:
            cfg.stats["hung"] += 1
            await asyncio.sleep(cfg.hang_s)
    cfg.stats["ok"] += 1
    if req.get("stream"):
        return _response(200, _sse(req), b"text/event-stream")
    return _response(200, json.dumps(_completion(req)).encode())


async def _handle(cfg: StubConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) < 2:
                return
            method, path = parts[0], parts[1]
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            if method == b"POST" and length is None:
                writer.write(_response(411, b'{"error":{"message":"content-length required"}}'))
            else:
                writer.write(await _answer(cfg, method, path, body))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, cfg: StubConfig, ready: Any = None) -> None:
    """Serve until SIGTERM or SIGINT, then close the listening socket and return."""
    server = await asyncio.start_server(lambda r, w: _handle(cfg, r, w), host, port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 500/503")
    ap.add_argument("--timeout-rate", type=float, default=0.0, help="share of requests held --hang-s")
    ap.add_argument("--hang-s", type=float, default=5.0)
    ap.add_argument("--fault-models", default="*", help="glob: faults only for these models")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the stub serves loopback only")
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    cfg = StubConfig(args.fail_rate, args.timeout_rate, args.hang_s, args.fault_models, args.seed)
    run_loop(serve(args.host, args.port, cfg, lambda p: print(f"stub upstream on {args.host}:{p}", flush=True)))


if __name__ == "__main__":
    main()
