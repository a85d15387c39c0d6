"""Running the policy's probe on a request, with self-probing for local models.

Self-probe (DiffAdapt): when the probe reads a local LM's internals (its ``lm`` feature) and the policy
serves that same local model, the LM features come from the served model's own prefill (the process
holds one instance per model, :func:`triage.lm.get_local_lm`), not from a second model. The query is
prefilled exactly as the probe was trained (one user turn with the probe text), so the SDK, the
sidecar and replay compute the same features. Text features run inside the probe (onnxruntime only).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from triage.policies.loader import resolve_probe_path
from triage.policies.policy import Policy
from triage.probes.types import ProbeOutput
from triage.errors import ConfigError


class ProbeLike(Protocol):
    version: str
    labels: list[str]
    feature_names: list[str]

    def predict(self, texts: list[str], *, precomputed: dict[str, Any] | None = None) -> list[ProbeOutput]: ...


def load_policy_probe(policy: Policy, policy_path: str | None) -> ProbeLike:
    """The probe a policy names: ``default`` (built on first use) or a path."""
    from triage.probes import runtime  # deferred: loading a probe is work, importing Triage is not

    where = resolve_probe_path(policy, policy_path)
    try:
        if where == "default":
            return runtime.load_probe(runtime.require_default_probe())
        return runtime.load_probe(where)
    except runtime.ProbeArtifactError as exc:
        raise ConfigError(f"policy '{policy.name}': probe {where}: {exc}") from None


def lm_feature_names(probe: ProbeLike) -> list[str]:
    """Names of the probe's features that the caller supplies (computed by a local model)."""
    return list(getattr(probe, "external_features", []))


def probe_lm_name(probe: ProbeLike) -> str | None:
    """The local model whose internals the probe was trained on, from its card (None if unknown)."""
    card = getattr(probe, "card", None)
    for spec in getattr(card, "features", []) or []:
        if getattr(spec, "requires_torch", False):
            for key in ("model", "model_name", "lm", "name_or_path"):
                value = (spec.params or {}).get(key)
                if isinstance(value, str) and value:
                    return value
    return None


class ProbeRunner:
    """Owns the probe of one router: :meth:`load` (the router's ``warm``, the sidecar's start-up)
    loads it and builds what its LM features need; a request that comes first loads it (thread-safe)."""

    def __init__(self, policy: Policy, policy_path: str | None = None, probe: ProbeLike | None = None) -> None:
        self.policy = policy
        self.policy_path = policy_path
        self._probe = probe
        self._lock = threading.Lock()
        self._self_probe: bool | None = None
        self._makers: dict[str, Any] | None = None

    @property
    def probe(self) -> ProbeLike:
        if self._probe is None:
            self.load()
        return self._probe  # type: ignore[return-value]

    def load(self) -> ProbeLike:
        """Load the probe (unless given) and build its per-feature row makers: the set-up a request
        would otherwise pay for on first use. Idempotent and thread-safe."""
        with self._lock:
            if self._probe is None:
                self._probe = load_policy_probe(self.policy, self.policy_path)
            if self._makers is None:
                self._makers = self._build_row_makers(self._probe)
            return self._probe

    def lm_model(self) -> str | None:
        """The local model whose prefill supplies the probe's LM features (None: text-only probe).

        It is the model the probe was trained on (its card says which); when the policy serves that
        same model, :func:`triage.lm.get_local_lm` hands back the very instance that will answer,
        so the features come from the served model's own prefill (self-probe).
        """
        probe = self.probe
        if not lm_feature_names(probe):
            return None
        return probe_lm_name(probe) or (self.policy.local_models() or [None])[0]

    def is_self_probe(self) -> bool:
        """Whether the probe's LM is one of the models the policy serves (computed once)."""
        if self._self_probe is None:
            name = self.lm_model()
            if name is None:
                self._self_probe = False
            else:
                from triage.lm import resolve_model

                key = resolve_model(name).key
                self._self_probe = any(resolve_model(m).key == key for m in self.policy.local_models())
        return self._self_probe

    @staticmethod
    def _build_row_makers(probe: ProbeLike) -> dict[str, Any]:
        """Per LM feature of the probe, what turns one prefill into its row: the card's feature
        (``lm:parts=scalars`` keeps 9 of the row's columns), else the whole row."""
        from triage.probes.features import make_feature
        from triage.probes.features.lm_internals import lm_features_from_prefill, row_maker

        specs = {s.name: s for s in getattr(getattr(probe, "card", None), "features", []) or []}
        makers = {}
        for name in lm_feature_names(probe):
            spec = specs.get(name)
            makers[name] = row_maker(make_feature(spec.name, **(spec.params or {}))) if spec is not None \
                else lm_features_from_prefill
        return makers

    def precompute(self, texts: list[str]) -> dict[str, Any] | None:
        """LM features of ``texts`` from the local model's prefill, exactly as the probe was trained:
        each text chat-formatted as one user turn (:func:`query_messages`), one query at a time.

        The model need not be one the policy serves (a proxy for API strategies): it is prefilled
        for the probe alone, and then keeps no KV cache, since no answer continues from it."""
        name = self.lm_model()
        if name is None:
            return None
        import numpy as np

        from triage.probes.features.lm_internals import query_prefill
        from triage.lm import get_local_lm

        lm = get_local_lm(name)
        keep = self.is_self_probe()
        if self._makers is None:
            self.load()  # a probe handed in at construction: its makers, once
        makers = self._makers or {}
        prefills = [query_prefill(lm, t, keep_state=keep) for t in texts]
        return {feature: np.stack([row(p) for p in prefills]) for feature, row in makers.items()}

    def predict(self, text: str) -> ProbeOutput:
        """The probe's output for one request's text (what the SDK, sidecar and replay all call)."""
        return self.probe.predict([text], precomputed=self.precompute([text]))[0]

    def predict_with_features(self, text: str) -> tuple[ProbeOutput, tuple[float, ...] | None]:
        """:meth:`predict` plus the feature row the probe's head read (None for a probe that does not
        expose one), for policies that keep features in the ledger (``ledger.store_features``)."""
        probe = self.probe
        with_features = getattr(probe, "predict_with_features", None)
        if with_features is None:
            return self.predict(text), None
        outs, X = with_features([text], precomputed=self.precompute([text]))
        # 7 significant digits: the float32 the head reads, without 17-digit JSON per value.
        return outs[0], tuple(float(f"{float(v):.7g}") for v in X[0])

    def predict_many(self, texts: list[str]) -> list[ProbeOutput]:
        return self.probe.predict(texts, precomputed=self.precompute(texts))
