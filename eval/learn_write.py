"""`triage learn`'s last steps: the new policy file's text, applying it atomically, asking a running
sidecar to reload (step 5 of :mod:`triage.eval.learn`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from triage.errors import TriageError
from triage.policies.loader import policy_from_dict, read_policy_yaml


class LearnError(TriageError):
    """A step of `triage learn` cannot go on (one line for the user)."""


def bump_version(version: str) -> str:
    """``3`` -> ``4``, ``1.2`` -> ``1.3``, ``beta`` -> ``beta.1``."""
    m = re.match(r"^(.*?)(\d+)$", version)
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{version}.1"


def policy_header(name: str, version: str, used: int, logged: int, ledger: str) -> str:
    """The new policy file's first line. The ledger's URL loses its password: policy files get
    committed and shared."""
    from triage.router.ledger.store import redact_url

    return f"# {name} v{version}: written by `triage learn` from {used} of the {logged} logged queries of {redact_url(ledger)}\n"


def yaml_text(raw: dict[str, Any], header: str) -> str:
    import yaml

    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)


def apply_policy(policy_path: Path, new_text: str, old_version: str) -> Path:
    """Keep the old file as ``<stem>.v<old>.yaml`` and replace the policy file atomically."""
    backup = policy_path.with_name(f"{policy_path.stem}.v{old_version}{policy_path.suffix}")
    if backup.exists() and backup.read_bytes() != policy_path.read_bytes():
        raise LearnError(f"{backup} exists and differs from {policy_path}: move it away (it is the kept old version)")
    shutil.copy2(policy_path, backup)
    tmp = policy_path.with_name(f".{policy_path.name}.learn.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    policy_from_dict(read_policy_yaml(tmp), str(tmp))  # never swap in a file the loader refuses
    os.replace(tmp, policy_path)  # atomic: a reader sees the old file or the new one, never half
    return backup


def request_reload(url: str, admin_key: str | None) -> str:
    """POST the sidecar's /v1/admin/reload; a one-line summary (LearnError when it refuses)."""
    import urllib.error
    import urllib.request

    target = url.rstrip("/")
    if not target.endswith("/v1/admin/reload"):
        target += "/v1/admin/reload"
    req = urllib.request.Request(target, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    if admin_key:
        req.add_header("Authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the user's own sidecar
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise LearnError(f"the sidecar refused the reload ({exc.code}): "
                         f"{exc.read().decode('utf-8', 'replace')[:300]}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LearnError(f"could not reach the sidecar at {target}: {exc}") from None
    return f"sidecar reloaded ({target}): {body[:300]}"
