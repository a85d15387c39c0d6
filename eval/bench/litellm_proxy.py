"""The LiteLLM proxy as the sidecar benchmark's point of comparison: its own virtualenv, its own config.

The proxy is what a Triage sidecar user would run instead, so ``sidecar_overhead.py`` measures it side
by side against the same stub upstream. It lives in a git-ignored virtualenv (``.bench-venvs/``) so its
dependency set (fastapi, uvicorn, ... at litellm's pins) never touches the project's environment, and
it runs with its defaults and no database (no virtual keys, no spend logs): the lightest set-up a user
would put in front of one OpenAI-compatible model.

    python eval/bench/litellm_proxy.py --install     # create/refresh the virtualenv, print what it holds
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".bench-venvs" / "litellm-proxy"
LOCK = REPO / "requirements" / "all.lock"
MODEL_NAME = "bench"


def pinned_version(lock: Path = LOCK) -> str | None:
    """The litellm version the project's lock file pins (the proxy is then the same litellm Triage uses)."""
    if not lock.is_file():
        return None
    m = re.search(r"^litellm==([0-9A-Za-z.+-]+)", lock.read_text(), flags=re.MULTILINE)
    return m.group(1) if m else None


def installed_version(venv: Path = VENV) -> str | None:
    py = venv / "bin" / "python"
    if not (venv / "bin" / "litellm").is_file() or not py.is_file():
        return None
    r = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True, timeout=60, check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


def ensure_venv(venv: Path = VENV, log: object = sys.stderr) -> dict[str, object]:
    """Create the virtualenv and ``pip install 'litellm[proxy]'`` at the lock's version when missing.

    When the pinned one cannot be installed with the proxy extra, pip picks a release whose extra installs.
    Returns what was done: version, whether it is the lock's pin, install seconds (0 when reused)."""
    pin = pinned_version()
    have = installed_version(venv)
    marker = venv / ".unpinned"
    if have is not None and (pin is None or have == pin or marker.is_file()):
        return {"version": have, "lock_pin": pin, "pinned": have == pin, "install_s": 0.0, "venv": str(venv),
                "note": marker.read_text().strip() if marker.is_file() else None}
    t0 = time.monotonic()
    if not (venv / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    specs = [f"litellm[proxy]=={pin}"] if pin else []
    specs.append("litellm[proxy]")
    pip_log = venv.parent / "litellm-proxy-install.log"
    with pip_log.open("w") as fh:  # pip is chatty (index warnings); its output is kept for a failure
        for spec in specs:
            print(f"installing {spec} into {venv} (pip log: {pip_log})", file=log, flush=True)  # type: ignore[call-overload]
            fh.write(f"$ pip install {spec}\n")
            fh.flush()
            if subprocess.run([*pip, spec], stdout=fh, stderr=subprocess.STDOUT, check=False).returncode == 0:
                break
        else:
            raise RuntimeError(f"could not pip install litellm[proxy] into {venv}; see {pip_log}")
    have = installed_version(venv)
    if have != pin:
        marker.write_text(f"the lock pins litellm {pin}, but litellm[proxy]=={pin} did not install (see {pip_log}); "
                          f"installed {have}\n")
    return {"version": have, "lock_pin": pin, "pinned": have == pin, "install_s": round(time.monotonic() - t0, 1),
            "venv": str(venv), "note": marker.read_text().strip() if marker.is_file() else None}


def proxy_config(stub_url: str, master_key: str, key_env: str) -> dict[str, object]:
    """One ``openai/...`` model pointing at the stub; the master key is the client's bearer key.

    No ``database_url``: without a database the proxy checks only the master key, as Triage checks its
    hashed key list. Everything else stays at the proxy's defaults."""
    return {
        "model_list": [{"model_name": MODEL_NAME, "litellm_params": {
            "model": "openai/flaky-small", "api_base": f"{stub_url}/v1", "api_key": f"os.environ/{key_env}"}}],
        "general_settings": {"master_key": master_key},
    }


class LiteLLMProxy:
    """``litellm --config ...`` (one uvicorn worker) on loopback; ``stop()`` ends it."""

    def __init__(self, tmp: Path, *, stub_url: str, port: int, master_key: str, upstream_key: str,
                 venv: Path = VENV) -> None:
        cfg = tmp / "litellm-proxy.yaml"
        cfg.write_text(json.dumps(proxy_config(stub_url, master_key, "BENCH_UPSTREAM_KEY"), indent=2))  # JSON is YAML
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / "litellm-proxy.log"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL")}
        # The bundled cost map instead of a download at start-up: no network, the same start every time.
        env.update({"BENCH_UPSTREAM_KEY": upstream_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"})
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                 "--num_workers", "1"], cwd=tmp, env=env, stdout=fh, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit(__doc__)
    print(json.dumps(ensure_venv()))
