"""The routing core: probe -> decide -> call through litellm -> record.

>>> router = Router.from_file("policies/examples/local.yaml")
>>> router.route([{"role": "user", "content": "What is 2 + 2?"}]).strategy
'terse'
>>> response = router.completion(messages=[{"role": "user", "content": "What is 2 + 2?"}])
>>> response._hidden_params["triage"]["decision"]["tier"]
'easy'

``completion`` / ``acompletion`` return litellm's ``ModelResponse`` (or, with ``stream=True``, an
iterator of litellm chunks); what Triage did is attached as ``response._hidden_params["triage"]``
(see :func:`triage.router.core.receipt.triage_info` for the keys).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from triage.ids import new_request_id
from triage.policies.decide import Decision, decide
from triage.policies.loader import load_policy
from triage.policies.policy import Policy
from triage.policies.pricing import import_litellm
from triage.router.core.deployments import DeploymentPool
from triage.router.core.drivers import aopen_stream, arun, open_stream, run
from triage.router.core.execution import Execution
from triage.router.core.grading import RequestGrading, with_gold
from triage.router.core.messages import normalize_messages, probe_text
from triage.router.core.preflight import check_policy_credentials, check_policy_models
from triage.router.core.probing import ProbeLike, ProbeRunner
from triage.router.core.receipt import LedgerLike, awrite_record, write_record
from triage.router.core.reload import (
    ReloadResult,
    RouterBundle,
    make_bundle,
    prepare_bundle,
    source_fingerprint,
    versions,
)
from triage.router.core.routed import Routed
from triage.router.core.shadow import ShadowRunner
from triage.logging import get_logger

log = get_logger("triage.router")

__all__ = ["Routed", "Router"]


class Router:
    """Routes chat requests with one policy. Thread-safe; one instance serves many requests.

    The probe is loaded on first use (or by :meth:`warm`). ``ledger``, when given, receives one
    record per routed call, committed before the answer is returned: a ledger URL or path (opened
    with :func:`triage.router.ledger.open_ledger` behind a :class:`~triage.router.ledger.LedgerWriter`, closed by
    :meth:`close`), a ``LedgerWriter``, or a ``LedgerStore``. ``store_prompts`` keeps prompt text in
    the records unless the policy's ``ledger.store_prompts`` says otherwise (the policy wins; a
    ``LedgerWriter`` passed in keeps its own ``store_prompts`` gate).
    """

    def __init__(self, policy: Policy, *, probe: ProbeLike | None = None,
                 ledger: LedgerLike | str | Path | None = None, policy_path: str | Path | None = None,
                 store_prompts: bool = False) -> None:
        check_policy_credentials(policy)  # an unset api_key_env fails here, naming the variable
        check_policy_models(policy)  # a model no provider serves fails here, not on every call
        self.policy_path = str(policy_path) if policy_path is not None else None
        self._store_prompts_arg = store_prompts  # a reload re-derives store_prompts from the new policy
        # Policy, probe and what derives from them: one immutable bundle, swapped whole by reload().
        # The policy's `ledger.store_prompts`, when set, wins over the argument (docs/sdk.md).
        self._bundle: RouterBundle = make_bundle(policy, self.policy_path, probe, store_prompts)
        store_prompts = self.store_prompts
        self._owned_ledger: Any = None
        if isinstance(ledger, str | Path):
            from triage.router.ledger import LedgerWriter, open_ledger

            self._owned_ledger = open_ledger(str(ledger))
            ledger = LedgerWriter(self._owned_ledger, store_prompts=store_prompts)
        self.ledger = ledger
        self._providers_ready = False
        # Cooldown state of the policy's deployments, shared by every request this router serves.
        self.deployments = DeploymentPool()
        # The policy's `shadow:` calls (triage.router.core.shadow): background, budgeted per process.
        self.shadow = ShadowRunner()

    @classmethod
    def from_file(cls, path: str | Path | None = None, **kwargs: Any) -> "Router":
        """A router for the policy file at ``path`` (default: ``policies/examples/local.yaml``)."""
        from triage.policies.loader import DEFAULT_POLICY

        p = Path(path) if path is not None else DEFAULT_POLICY
        # Fingerprinted before the file is read: what a watch or SIGHUP compares with is what this
        # router loaded, even when the file changes while the process starts (a worker that took
        # its baseline after an edit would never pick the edit up).
        fingerprint = source_fingerprint(p)
        router = cls(load_policy(p), policy_path=p, **kwargs)
        router._bundle = dataclasses.replace(router._bundle, fingerprint=fingerprint)
        return router

    @property
    def source_fingerprint(self) -> str | None:
        """The fingerprint of the policy file and probe this router's policy was loaded from."""
        return self._bundle.fingerprint

    # -- the bundle (policy + probe), and reloading it ---------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._bundle.policy

    @property
    def store_prompts(self) -> bool:
        return self._bundle.store_prompts

    @property
    def grading(self) -> RequestGrading | None:
        """The policy's `grader:` block: outcomes attached at request time (triage.router.core.grading)."""
        return self._bundle.grading

    @property
    def _probe(self) -> ProbeRunner:
        return self._bundle.probe

    def reload(self, path: str | Path | None = None, *, probe: ProbeLike | None = None,
               installed: bool = False) -> ReloadResult:
        """Re-read the policy file (``path``: switch to another one) and load the probe it names,
        check both as at start-up, then swap them in at once (docs/sdk.md, "Reloading").

        Requests already decided finish on the previous policy and probe, and their ledger records say
        so (``policy_version``/``probe_version``). A bad file raises
        :class:`~triage.router.core.reload.ReloadError` and the previous ones keep serving. ``probe``
        uses that probe object instead of loading the artifact the policy names.
        """
        new = self.prepare_reload(path, probe=probe, installed=installed)
        return self.commit_reload(new, path)

    def prepare_reload(self, path: str | Path | None = None, *, probe: ProbeLike | None = None,
                       installed: bool = False) -> RouterBundle:
        """The checked bundle :meth:`reload` would swap in (nothing changes yet); ReloadError if bad."""
        from triage.router.core.reload import ReloadError

        where = path if path is not None else self.policy_path
        if where is None:
            raise ReloadError("this router was not made from a policy file: pass reload(path=...)")
        return prepare_bundle(where, store_prompts=self._store_prompts_arg, probe=probe, installed=installed,
                              register_providers=self._providers_ready)

    def commit_reload(self, bundle: RouterBundle, path: str | Path | None = None) -> ReloadResult:
        """Swap ``bundle`` in (one reference assignment) and say what changed."""
        before = versions(self._bundle)
        self._bundle = bundle
        if path is not None:
            self.policy_path = str(path)
        result = ReloadResult(self.policy_path, before, versions(bundle))
        log.info("policy_reloaded", policy=bundle.policy.name, changed=result.changed,
                 before=before["policy_version"], after=bundle.policy.version,
                 probe_before=before["probe_version"], probe_after=result.after["probe_version"])
        return result

    # -- deciding ---------------------------------------------------------------------------------

    @property
    def probe(self) -> ProbeLike:
        return self._probe.probe

    def warm(self) -> "Router":
        """Load the probe (and register the local provider) now rather than on the first request."""
        self._probe.load()
        self._ensure_providers()
        return self

    def route_detailed(self, messages: Any, *, request_id: str | None = None) -> Routed:
        """Probe + decision. ``request_id`` seeds the policy's exploration (None: the greedy choice);
        the request that is then executed must carry the same id, so the ledger's propensity is the
        one this draw had."""
        msgs = normalize_messages(messages)
        t0 = time.perf_counter()
        b = self._bundle  # read once: a reload meanwhile does not mix two policies in one request
        text = probe_text(msgs)
        features = None
        if b.policy.ledger.store_features:
            out, features = b.probe.predict_with_features(text)
        else:
            out = b.probe.predict(text)
        decision = decide(b.policy, out, request_id=request_id)
        return Routed(decision, out, msgs, time.perf_counter() - t0, b.probe.is_self_probe(), features, bundle=b)

    def route(self, messages: Any, *, request_id: str | None = None) -> Decision:
        """The decision for ``messages`` without calling any model."""
        return self.route_detailed(messages, request_id=request_id).decision

    # -- calling ----------------------------------------------------------------------------------

    def _ensure_providers(self) -> None:
        if self._providers_ready:
            return
        import_litellm()
        # Each strategy kind the policy uses registers its litellm provider (local, token-routed, ...).
        kinds = {s.kind.name: s.kind for s in self.policy.strategies.values()}
        for kind in kinds.values():
            kind.register()
        self._providers_ready = True

    def execution(self, routed: Routed, *, request_id: str | None = None,
                  ledger_fields: dict[str, Any] | None = None, started: float | None = None,
                  stream: bool = False, caller: dict[str, Any] | None = None) -> Execution:
        """The books of one decided request (what every request loop drives).

        Caller fields are checked by :func:`~triage.router.core.calls.build_kwargs` when the first
        call's arguments are built, before anything is called or recorded: only OpenAI
        chat-completions fields pass (:mod:`triage.router.core.fields`), never credentials or destinations.
        """
        ledger_fields = with_gold(ledger_fields, caller or {})  # metadata.gold -> the record
        b = routed.bundle or self._bundle  # the bundle that decided: a reload since then changes nothing here
        return Execution(b.policy, routed, request_id=request_id or new_request_id(),
                         started=time.perf_counter() if started is None else started,
                         caller=dict(caller or {}),
                         ledger_fields=ledger_fields, store_prompts=b.store_prompts, stream=stream,
                         deployments=self.deployments)

    def execute(self, routed: Routed, *, request_id: str | None = None,
                ledger_fields: dict[str, Any] | None = None, started: float | None = None,
                stream: bool = False, **kwargs: Any) -> Any:
        """Run a decided request: calls, escalations, retries, fallback, then the ledger record.

        Returns litellm's ``ModelResponse``, or with ``stream=True`` a :class:`TriageStream`.
        """
        self._ensure_providers()
        ex = self.execution(routed, request_id=request_id, ledger_fields=ledger_fields, started=started,
                            stream=stream, caller=kwargs)
        grading = (routed.bundle or self._bundle).grading  # the deciding policy's grader
        write = self._write if grading is None else grading.wrap(ex, self._write, self.ledger)
        if ex.policy.shadow is not None:  # enqueued once the record is written: never on the caller's path
            write = self._with_shadow(ex, write, grading)
        if stream:
            return open_stream(ex, import_litellm(), write)
        return run(ex, import_litellm(), write)

    async def aexecute(self, routed: Routed, *, request_id: str | None = None,
                       ledger_fields: dict[str, Any] | None = None, started: float | None = None,
                       stream: bool = False, **kwargs: Any) -> Any:
        """Async :meth:`execute` (``stream=True`` gives an :class:`AsyncTriageStream`)."""
        self._ensure_providers()
        ex = self.execution(routed, request_id=request_id, ledger_fields=ledger_fields, started=started,
                            stream=stream, caller=kwargs)
        grading = (routed.bundle or self._bundle).grading  # the deciding policy's grader
        awrite = self._awrite if grading is None else grading.awrap(ex, self._awrite, self.ledger)
        if ex.policy.shadow is not None:
            awrite = self._awith_shadow(ex, awrite, grading)
        if stream:
            return await aopen_stream(ex, import_litellm(), awrite)
        return await arun(ex, import_litellm(), awrite)

    def completion(self, messages: Any = None, *, stream: bool = False, request_id: str | None = None,
                   ledger_fields: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Route and answer ``messages``; litellm-style (extra keyword arguments go to litellm).

        ``stream=True`` returns a :class:`triage.router.core.streaming.TriageStream` (an iterator of litellm
        chunks). ``ledger_fields`` (tenant, api_key_id, metadata) go into the ledger record.
        """
        kwargs.pop("model", None)  # the policy picks the model
        started = time.perf_counter()
        request_id = request_id or new_request_id()  # decided now: it seeds the policy's exploration
        routed = self.route_detailed(messages, request_id=request_id)
        return self.execute(routed, request_id=request_id, ledger_fields=ledger_fields, started=started,
                            stream=stream, **kwargs)

    async def acompletion(self, messages: Any = None, *, stream: bool = False, request_id: str | None = None,
                          ledger_fields: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Async :meth:`completion`; ``stream=True`` returns an async iterator of litellm chunks."""
        kwargs.pop("model", None)
        started = time.perf_counter()
        request_id = request_id or new_request_id()
        routed = await asyncio.to_thread(lambda: self.route_detailed(messages, request_id=request_id))
        return await self.aexecute(routed, request_id=request_id, ledger_fields=ledger_fields, started=started,
                                   stream=stream, **kwargs)

    # -- recording --------------------------------------------------------------------------------

    def feedback(self, request_id: str, score: float, *, source: str = "user") -> Any:
        """Attach an outcome (score in 0..1) to a routed request in the ledger."""
        if self.ledger is None or not hasattr(self.ledger, "feedback"):
            from triage.errors import TriageError

            raise TriageError("this router has no ledger writer to attach feedback to (pass ledger=URL)")
        return self.ledger.feedback(request_id, score, source=source)

    def close(self) -> None:
        """Let running shadow calls finish (briefly), then flush and close a ledger this router opened."""
        self.shadow.close()
        if self._owned_ledger is not None:
            self.ledger.close()
            self._owned_ledger.close()
            self._owned_ledger = None

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _with_shadow(self, ex: Execution, write: Any, grading: RequestGrading | None) -> Any:
        def write_then_shadow(record: Any) -> Any:
            out = write(record)
            self.shadow.submit(ex, record, self.ledger, grading)
            return out

        return write_then_shadow

    def _awith_shadow(self, ex: Execution, awrite: Any, grading: RequestGrading | None) -> Any:
        async def awrite_then_shadow(record: Any) -> Any:
            out = await awrite(record)
            self.shadow.asubmit(ex, record, self.ledger, grading)
            return out

        return awrite_then_shadow

    def _write(self, record: Any) -> None:
        log.debug("routed", request_id=record.request_id, policy=record.policy_name, tier=record.tier,
                  strategy=record.strategy, attempts=len(record.attempts), error=record.error is not None)
        if self.ledger is not None:
            write_record(self.ledger, record)

    async def _awrite(self, record: Any) -> None:
        log.debug("routed", request_id=record.request_id, policy=record.policy_name, tier=record.tier,
                  strategy=record.strategy, attempts=len(record.attempts), error=record.error is not None)
        if self.ledger is not None:
            await awrite_record(self.ledger, record)
