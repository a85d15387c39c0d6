"""Sidecar settings (file + environment + flags), key hashing, rate limits and budgets, and `triage serve`
refusing bad configuration with one line and exit code 2."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from triage.errors import ConfigError
from triage.router.sidecar.auth import ANONYMOUS, Caller, KeyRing, authorize_model, hash_api_key
from triage.router.sidecar.errors import SidecarError
from triage.router.sidecar.limits import RateLimiter, SpendTracker
from triage.router.sidecar.settings import ApiKeySpec, load_sidecar_settings

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "policies" / "examples" / "local.yaml"
HASH = hashlib.sha256(b"k1").hexdigest()


def test_yaml_file_env_and_flags_in_order_of_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(f"port: 9001\nworkers: 3\npolicies: [{POLICY}]\nmax_body_bytes: 4096\n"
                   f"api_keys:\n  - id: team-a\n    sha256: {HASH}\n    rate_per_s: 2\n")
    monkeypatch.setenv("TRIAGE_SIDECAR_WORKERS", "2")
    s = load_sidecar_settings(config_file=cfg, port=9100, host=None)
    assert s.port == 9100  # flag beats file
    assert s.workers == 2  # environment beats file
    assert s.max_body_bytes == 4096  # file beats default
    assert s.host == "127.0.0.1"  # None means "flag not given"
    assert s.api_keys[0].id == "team-a" and s.api_keys[0].rate_per_s == 2


def test_toml_file_and_relative_policy_paths(tmp_path):
    (tmp_path / "p.yaml").write_text(POLICY.read_text())
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text('policies = ["p.yaml"]\nupstream_timeout_s = 7.5\n')
    s = load_sidecar_settings(config_file=cfg)
    assert s.policies == [(tmp_path / "p.yaml").resolve()]
    assert s.upstream_timeout_s == 7.5


def test_env_names_the_config_file(tmp_path, monkeypatch):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("port: 9333\n")
    monkeypatch.setenv("TRIAGE_SIDECAR_CONFIG_FILE", str(cfg))
    assert load_sidecar_settings().port == 9333


@pytest.mark.parametrize("text, where", [
    ("port: 99999\n", "port"),
    ("api_keys:\n  - id: a\n    sha256: sk-plaintext-key\n", "api_keys.0.sha256"),
    ("prot: 1\n", "prot"),
    ("policies: [missing.yaml]\n", "policies"),
    (f"api_keys:\n  - {{id: a, sha256: {HASH}}}\n  - {{id: a, sha256: {'a' * 64}}}\n", "duplicate id"),
    (f"api_keys:\n  - {{id: a, sha256: {'1' * 64}}}\n", "quote the hash"),
])
def test_bad_settings_name_the_field(tmp_path, text, where):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_sidecar_settings(config_file=cfg)
    assert where in str(err.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_sidecar_settings(config_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_sidecar_settings(config_file=bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_sidecar_settings(config_file=lst)


def test_anonymous_only_on_loopback_without_keys():
    assert load_sidecar_settings().anonymous_allowed
    assert not load_sidecar_settings(host="0.0.0.0").anonymous_allowed
    assert not load_sidecar_settings(api_keys=[{"id": "a", "sha256": HASH}]).anonymous_allowed
    assert load_sidecar_settings(host="0.0.0.0", allow_anonymous=True).anonymous_allowed


def test_keyring_matches_by_hash_only():
    ring = KeyRing([ApiKeySpec(id="a", sha256=hash_api_key("secret-a")),
                    ApiKeySpec(id="b", sha256=hash_api_key("secret-b"), tenant="acme")], allow_anonymous=False)
    assert ring.authenticate("Bearer secret-b") == Caller("b", "acme", ring._keys[1][1])
    assert ring.authenticate("bearer  secret-a ").key_id == "a"
    for header, code in [(None, "missing_api_key"), ("", "missing_api_key"), ("Basic abc", "invalid_authorization"),
                         ("Bearer", "invalid_authorization"), ("Bearer secret-c", "invalid_api_key"),
                         ("Bearer " + hash_api_key("secret-a"), "invalid_api_key")]:
        with pytest.raises(SidecarError) as err:
            ring.authenticate(header)
        assert err.value.status == 401 and err.value.code == code
        assert "secret" not in err.value.message
    assert hash_api_key("k1") == HASH


def test_anonymous_keyring_accepts_placeholder_keys():
    ring = KeyRing([], allow_anonymous=True)
    assert ring.authenticate(None) is ANONYMOUS
    assert ring.authenticate("Bearer sk-anything") is ANONYMOUS


def test_model_restrictions():
    spec = ApiKeySpec(id="r", sha256=HASH, models=["triage/local", "openai/*"])
    caller = Caller("r", "r", spec)
    authorize_model(caller, "triage/local")
    authorize_model(caller, "openai/gpt-4o")
    with pytest.raises(SidecarError) as err:
        authorize_model(caller, "triage/other")
    assert err.value.status == 403 and err.value.code == "model_not_allowed"


def test_token_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    caller = Caller("k", "k", ApiKeySpec(id="k", sha256=HASH, rate_per_s=2.0, burst=3))
    for _ in range(3):
        limiter.check(caller)
    with pytest.raises(SidecarError) as err:
        limiter.check(caller)
    assert err.value.status == 429 and err.value.headers["retry-after"] == "1"
    now[0] = 0.5  # one token back
    limiter.check(caller)
    with pytest.raises(SidecarError):
        limiter.check(caller)
    limiter.check(Caller("free", "free", ApiKeySpec(id="free", sha256="1" * 64)))  # no limit configured


@pytest.mark.parametrize("status, type_", [(403, "permission_error"), (429, "insufficient_quota")])
def test_spend_budget(status, type_):
    spend = SpendTracker(status)
    caller = Caller("k", "k", ApiKeySpec(id="k", sha256=HASH, budget_usd=0.01))
    spend.check(caller)
    spend.add(caller, 0.004)
    spend.add(caller, float("nan"))
    spend.check(caller)
    spend.add(caller, 0.007)
    with pytest.raises(SidecarError) as err:
        spend.check(caller)
    assert err.value.status == status and err.value.type == type_
    spend.seed({"k": 0.0})
    spend.check(caller)
    with pytest.raises(SidecarError):
        SpendTracker().check(Caller("z", "z", ApiKeySpec(id="z", sha256=HASH, budget_usd=0.0)))


def _serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "triage.router.cli.main", "serve", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("args, expected", [
    (["--policy", "nope.yaml"], "policy file not found"),
    (["--policy", str(POLICY), "--port", "70000"], "port"),
    (["--policy", str(POLICY), "--host", "0.0.0.0"], "no api_keys configured"),
    ([], "at least one policy"),
    (["BAD-PROBE"], "cannot load its probe"),
])
def test_serve_refuses_bad_configuration_with_one_line(args, expected, tmp_path):
    import os

    if args == ["BAD-PROBE"]:
        bad = tmp_path / "bad_probe.yaml"
        bad.write_text(POLICY.read_text().replace("probe: default", f"probe: {tmp_path / 'no-probe-here'}"))
        args = ["--policy", str(bad)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SIDECAR_")}
    env["TRIAGE_SIDECAR_LEDGER_URL"] = str(tmp_path / "l.sqlite")
    proc = _serve(*args, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
