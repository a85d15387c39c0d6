"""Helpers for the sidecar tests: start the real `triage serve` on loopback, and upstreams that fail.

The failing upstreams below never answer a question: they return errors, or accept a connection and
say nothing. They exist to exercise the error paths (5xx, timeout, a provider echoing the key it was
sent); every answer the tests check comes from the real local model.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LOCAL_POLICY = REPO / "policies" / "examples" / "local.yaml"
LOCAL_MODEL = "local/smollm2-135m"

CLIENT_KEY = "sk-triage-client-SECRET-4f9a1c2b7e"
OTHER_KEY = "sk-triage-other-SECRET-8d3e5f0a1b"
LIMITED_KEY = "sk-triage-limited-SECRET-2c7b9e4d6f"
BROKE_KEY = "sk-triage-broke-SECRET-6a1f3d8c0e"
SPENDER_KEY = "sk-triage-spender-SECRET-3e8a2b5c9d"
RESTRICTED_KEY = "sk-triage-restricted-SECRET-7f0c4a9e2b"
UPSTREAM_KEY = "sk-upstream-provider-SECRET-5b2d8f1e7c"
ALL_SECRETS = (CLIENT_KEY, OTHER_KEY, LIMITED_KEY, BROKE_KEY, SPENDER_KEY, RESTRICTED_KEY, UPSTREAM_KEY)


@contextmanager
def openai_client(server: Any, key: str = CLIENT_KEY) -> Any:
    """The official openai client on a running sidecar (no retries: a test sees every error)."""
    from openai import OpenAI

    with OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300) as c:
        yield c


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FailingUpstream:
    """An OpenAI-shaped endpoint that always fails: ``mode`` = ``5xx`` (503 echoing the key it was sent,
    as some providers do), or ``hang`` (accepts the connection, never answers)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0
        if mode == "hang":
            self._sock = socket.socket()
            self._sock.bind(("127.0.0.1", 0))
            self._sock.listen(64)
            self.port = self._sock.getsockname()[1]
            self._held: list[socket.socket] = []
            self._thread = threading.Thread(target=self._hold, daemon=True)
        else:
            outer = self

            class Handler(BaseHTTPRequestHandler):
                def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                    outer.calls += 1
                    self.rfile.read(int(self.headers.get("content-length", 0)))
                    body = json.dumps({"error": {"message": f"overloaded; you sent {self.headers.get('authorization')}",
                                                 "type": "server_error"}}).encode()
                    self.send_response(503)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args: Any) -> None:
                    pass

            self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _hold(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.calls += 1
            self._held.append(conn)

    def close(self) -> None:
        if self.mode == "hang":
            self._sock.close()
            for c in self._held:
                c.close()
        else:
            self._server.shutdown()
            self._server.server_close()


def write_policies(folder: Path, five_xx: FailingUpstream, hang: FailingUpstream) -> list[Path]:
    """local.yaml plus test policies whose primary strategy points at a failing upstream."""
    def broken(base: str, timeout: float) -> dict[str, Any]:
        return {"model": "openai/broken", "api_base": base, "api_key_env": "TEST_UPSTREAM_KEY",
                "timeout_s": timeout, "max_tokens": 8}

    rescue = {"model": LOCAL_MODEL, "max_tokens": 8, "temperature": 0.0}
    tiers = {"easy": "primary", "normal": "primary", "hard": "primary"}
    docs = {
        "rescued": {"strategies": {"primary": broken(five_xx.base, 5.0), "rescue": rescue}, "fallback": "rescue"},
        "down": {"strategies": {"primary": broken(five_xx.base, 5.0)}},
        "stuck": {"strategies": {"primary": broken(hang.base, 1.0)}},
        "priced": {"strategies": {"primary": {**rescue, "price": {"input_per_mtok": 1000.0,
                                                                      "output_per_mtok": 1000.0}}}},
    }
    paths = [LOCAL_POLICY]
    for name, doc in docs.items():
        p = folder / f"{name}.yaml"
        p.write_text(json.dumps({"name": name, "probe": "default", "tiers": tiers, **doc}))
        paths.append(p)
    return paths


def key_table() -> list[dict[str, Any]]:
    return [
        {"id": "team-a", "sha256": sha(CLIENT_KEY), "tenant": "acme"},
        {"id": "team-b", "sha256": sha(OTHER_KEY), "tenant": "globex"},
        {"id": "limited", "sha256": sha(LIMITED_KEY), "rate_per_s": 0.2, "burst": 2},
        {"id": "broke", "sha256": sha(BROKE_KEY), "budget_usd": 0.0},
        {"id": "spender", "sha256": sha(SPENDER_KEY), "budget_usd": 1e-6},
        {"id": "restricted", "sha256": sha(RESTRICTED_KEY), "models": ["triage/local"]},
    ]


class SidecarProcess:
    """`python -m triage.router.cli.main serve --config FILE` on a free loopback port; logs go to a file."""

    def __init__(self, folder: Path, policies: list[Path], *, extra: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, wait_ready: bool = True) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ledger = (extra or {}).get("ledger_url") or folder / "ledger.sqlite"
        self.log = folder / "sidecar.log"
        config = {"policies": [str(p) for p in policies], "ledger_url": str(self.ledger), "api_keys": key_table(),
                  "max_body_bytes": 65536, "upstream_timeout_s": 120, **(extra or {})}
        (folder / "sidecar.yaml").write_text(json.dumps(config))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SIDECAR_")}
        full_env.update({"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "HF_HUB_OFFLINE": "1", **(env or {})})
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "triage.router.cli.main", "serve", "--config", str(folder / "sidecar.yaml"),
             "--port", str(self.port)], cwd=REPO, env=full_env, stdout=self._log_fh, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready(600)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"sidecar not ready after {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self._log_fh.flush()
        return self.log.read_text(errors="replace")

    def ledger_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.folder.glob("ledger.sqlite*"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: graceful shutdown, queued ledger records committed
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()


def record_of(ledger: Path, request_id: str) -> Any:
    from triage.router.ledger import open_ledger

    store = open_ledger(str(ledger))
    try:
        return store.get(request_id)
    finally:
        store.close()


@contextmanager
def stub_upstream(*args: str) -> Iterator[str]:
    """The benchmark's stub upstream (eval/bench/stub_upstream.py) in its own process on a free
    loopback port; yields its base URL (``http://127.0.0.1:PORT``, the OpenAI API under ``/v1``).
    ``args`` go to its command line (fault injection: ``--fail-rate 1``...)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "eval/bench/stub_upstream.py"), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "stub upstream on" in (proc.stdout.readline() if proc.stdout else "")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
