"""What a :class:`~triage.router.core.router.Router` serves with, as one immutable bundle, and reloading it.

A router's policy, its probe and what is derived from the policy (the prompt-storing choice, the
request-time grader) are one :class:`RouterBundle`. A reload builds a whole new bundle from the files
on disk and checks it *before* anything changes: the policy validates, its credentials and models pass
the start-up preflight, its probe artifact loads (never trained) and decides a canary query with the
new policy. Only then is the bundle swapped in, by one reference assignment, so a request reads either
the old bundle or the new one, never a mix; a request already decided keeps the bundle that decided it
(:attr:`Routed.bundle`) until its ledger record is written. A bad file raises and changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.errors import ConfigError, TriageError
from triage.policies.decide import decide
from triage.policies.loader import load_policy, resolve_probe_path
from triage.policies.policy import Policy
from triage.router.core.grading import RequestGrading
from triage.router.core.preflight import check_policy_credentials, check_policy_models
from triage.router.core.probing import ProbeLike, ProbeRunner

# Decided once by every reloaded policy before it is swapped in: catches a probe whose labels the
# policy's rule needs but the probe lacks (which would otherwise fail every request).
CANARY = "What is 2 + 2?"


class ReloadError(ConfigError):
    """A reload was refused; the router keeps serving its previous policy and probe."""


@dataclass(frozen=True)
class RouterBundle:
    """Everything a router decides and records with; replaced whole, never mutated."""

    policy: Policy
    probe: ProbeRunner
    grading: RequestGrading | None
    store_prompts: bool
    fingerprint: str | None = None  # of the policy file and probe artifact it was loaded from


def make_bundle(policy: Policy, policy_path: str | None, probe: ProbeLike | None,
                store_prompts: bool, fingerprint: str | None = None) -> RouterBundle:
    """The bundle of ``policy``; the policy's ``ledger.store_prompts``, when set, wins over the argument."""
    chosen = policy.ledger.store_prompts
    return RouterBundle(policy=policy, probe=ProbeRunner(policy, policy_path, probe),
                        grading=RequestGrading.from_policy(policy),
                        store_prompts=store_prompts if chosen is None else chosen, fingerprint=fingerprint)


def source_fingerprint(policy_path: str | Path) -> str:
    """A digest of the policy file's bytes and of the probe artifact it names (each file's name, size
    and mtime): what a file watch compares. Unreadable parts are folded in as such, not raised."""
    h = hashlib.sha256()
    p = Path(policy_path)
    try:
        h.update(p.read_bytes())
        policy: Policy | None = load_policy(p)
    except (OSError, TriageError, ValueError) as exc:
        h.update(f"unreadable:{type(exc).__name__}".encode())
        policy = None
    if policy is not None:
        where = resolve_probe_path(policy, str(p))
        if where == "default":
            from triage.probes.runtime import default_probe_path

            where = str(default_probe_path())
        root = Path(where)
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            try:
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{f}:missing\n".encode())
    return h.hexdigest()


def versions(bundle: RouterBundle) -> dict[str, Any]:
    """The versions a bundle serves (the probe's only when it is loaded)."""
    loaded = bundle.probe._probe  # noqa: SLF001 - reading a loaded probe must not load one
    return {"policy": bundle.policy.name, "policy_version": bundle.policy.version,
            "probe": bundle.policy.probe, "probe_version": getattr(loaded, "version", None),
            "source": (bundle.fingerprint or "")[:12] or None}


def prepare_bundle(path: str | Path, *, store_prompts: bool, probe: ProbeLike | None = None,
                   installed: bool = False, register_providers: bool = False) -> RouterBundle:
    """A checked bundle for the policy file at ``path`` (probe loaded); :class:`ReloadError` if not.

    ``installed`` also requires local models' packages (as ``triage serve`` does at start-up);
    ``register_providers`` registers the litellm providers the new strategies need, for a router
    that already registered its old ones.
    """
    fingerprint = source_fingerprint(path)
    try:
        policy = load_policy(path)
        check_policy_credentials(policy)
        check_policy_models(policy, installed=installed)
        bundle = make_bundle(policy, str(path), probe, store_prompts, fingerprint)
        bundle.probe.load()  # the artifact and what its LM features need; a broken one fails here
        out = bundle.probe.predict(CANARY)
        decide(bundle.policy, out)
        if register_providers:
            for kind in {s.kind.name: s.kind for s in policy.strategies.values()}.values():
                kind.register()
    except Exception as exc:  # noqa: BLE001 - whatever the new files break, the old bundle keeps serving
        raise ReloadError(f"reload of {path} refused, the previous policy keeps serving: "
                          f"{str(exc).strip() or type(exc).__name__}") from None
    return bundle


@dataclass(frozen=True)
class ReloadResult:
    """What one router's reload changed."""

    path: str | None
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after, "changed": self.changed}
