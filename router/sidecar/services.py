"""What one sidecar process holds (``app.state.services``): routers, the ledger, keys and limits.

``Services.open(settings)`` loads every policy (a bad file fails start-up with its field path),
opens the ledger and starts its batching writer. Routers record through the writer, whose
``record`` returns only after the commit, so a response never reaches a client before its
ledger record is durable.

Model names resolve to a :class:`Target`:

* ``triage`` or ``triage/<policy>`` -> the policy's router;
* a concrete model that a policy's strategy uses, or that matches ``settings.models`` -> a
  pass-through router: a one-strategy policy calling that model as-is (with the connection
  settings, api_key_env and price of the policy strategy that uses it). The default policy's
  probe still reads the request, so the ledger records its tier like any other request;
* an alias (``settings.model_aliases``) -> its target's router, resolved as above. Aliases do not
  chain (a target is never looked up as an alias) and win over a concrete model of the same name.
  Every alias is resolved once at start-up, so a typo fails ``triage serve`` rather than a request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from triage.policies.decide import decide
from triage.policies.policy import Policy
from triage.policies.strategy import Strategy
from triage.router.core.router import Routed, Router
from triage.errors import ConfigError
from triage.router.ledger import LedgerWriter, open_ledger
from triage.router.ledger.metrics import LedgerMetrics
from triage.router.ledger.writer import DEFAULT_SPOOL
from triage.logging import get_logger
from triage.router.sidecar.auth import KeyRing
from triage.router.sidecar.decision_token import DecisionTokens
from triage.router.sidecar.errors import SidecarError
from triage.router.sidecar.limits import RateLimiter, SpendTracker
from triage.router.sidecar.settings import SidecarSettings

POLICY_PREFIX = "triage/"
PASSTHROUGH = "passthrough"
MAX_PASSTHROUGH = 256
LEDGER_RETRY_AFTER_S = 5  # a down ledger is retried every 2 s by the writer; 5 s lets it catch up
_CONNECTION_FIELDS = ("api_base", "api_key_env", "timeout_s", "price", "replay_candidate", "deployments")


def check_model_aliases(settings: SidecarSettings, policies: dict[str, Policy]) -> None:
    """``settings.model_aliases`` against the loaded policies (by name): one ConfigError line per problem.

    An alias may not carry a policy's name, and must point at ``triage``, ``triage/<policy>``, a
    model a policy's strategy uses, or a model ``settings.models`` admits.
    """
    used = {s.model for p in policies.values() for s in p.strategies.values()}
    for alias, target in settings.model_aliases.items():
        where = f"sidecar settings: model_aliases: alias '{alias}'"
        if alias in policies:
            raise ConfigError(f"{where} is also a policy's name (served as {POLICY_PREFIX}{alias}); pick another alias")
        if target == "triage":
            continue
        if target.startswith(POLICY_PREFIX):
            if target[len(POLICY_PREFIX):] not in policies:
                raise ConfigError(f"{where} points at unknown policy '{target}'; policies: "
                                  f"{', '.join(POLICY_PREFIX + n for n in policies)}")
        elif target not in used and not any(fnmatchcase(target, p) for p in settings.models):
            raise ConfigError(f"{where} points at unknown model '{target}': not used by a policy nor "
                              "admitted by the `models` setting")


def decision_tokens(settings: SidecarSettings) -> DecisionTokens:
    secret = settings.decision_token_secret
    return DecisionTokens(secret.get_secret_value().encode() if secret else None, settings.decision_token_ttl_s)


@dataclass
class Target:
    """Where a request's ``model`` sends it."""

    name: str  # what the caller asked for, normalised (`triage/<policy>` or the concrete model)
    router: Router
    policy_router: Router  # whose probe decides the tier (itself, or the default for pass-through)
    passthrough: bool = False
    alias: str | None = None  # the alias the caller used; ``name`` is then what it points to

    def route(self, messages: list[dict[str, Any]], request_id: str | None = None) -> Routed:
        """Probe + decision (CPU work: run it in a worker thread). ``request_id`` seeds the
        policy's exploration: the request's own id, or the /v1/route id of a decision token."""
        routed = self.policy_router.route_detailed(messages, request_id=request_id)
        if not self.passthrough:
            return routed
        decision = decide(self.router.policy, routed.probe_output, request_id=request_id)
        return Routed(decision, routed.probe_output, routed.messages, routed.decision_latency_s,
                      features=routed.features)


@dataclass
class Services:
    settings: SidecarSettings
    routers: dict[str, Router]
    default_policy: str
    store: Any
    writer: LedgerWriter
    metrics: LedgerMetrics
    keyring: KeyRing
    limiter: RateLimiter
    spend: SpendTracker
    passthrough: dict[str, Router] = field(default_factory=dict)
    warm: dict[str, str] = field(default_factory=dict)  # policy -> "loading" | "ready" | error text
    reloads: Any = None  # triage.router.sidecar.reload.ReloadState, made by its first use (lifespan start)
    tokens: DecisionTokens = field(default_factory=DecisionTokens)  # /v1/route -> chat (decision_token.py)

    # -- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: SidecarSettings, metrics: LedgerMetrics | None = None) -> "Services":
        if not settings.policies:
            raise ConfigError("sidecar settings: policies: give at least one policy file (--policy P.yaml)")
        metrics = metrics if metrics is not None else LedgerMetrics()
        store = open_ledger(settings.ledger_url)
        spool: Any = settings.ledger_spool if settings.ledger_spool is not None else DEFAULT_SPOOL
        writer = LedgerWriter(store, store_prompts=settings.store_prompts, metrics=metrics, spool=spool).start()
        routers: dict[str, Router] = {}
        try:
            for path in settings.policies:
                router = Router.from_file(Path(path), ledger=writer, store_prompts=settings.store_prompts)
                name = router.policy.name
                if name in routers:
                    raise ConfigError(f"two policy files are named '{name}' ({path}); policy names must differ")
                routers[name] = router
            # The writer is the last gate on prompt text: open it for a policy whose `ledger.store_prompts`
            # asks for prompts (records of the other policies carry none; docs/sidecar.md).
            writer.store_prompts = writer.store_prompts or any(r.store_prompts for r in routers.values())
        except BaseException:
            writer.close()
            store.close()
            raise
        keyring = KeyRing(settings.api_keys, allow_anonymous=settings.anonymous_allowed)
        services = cls(settings=settings, routers=routers, default_policy=next(iter(routers)), store=store,
                       writer=writer, metrics=metrics, keyring=keyring, limiter=RateLimiter(),
                       spend=SpendTracker(settings.budget_status), tokens=decision_tokens(settings))
        services.warm = {name: "loading" for name in routers}
        try:
            services.check_aliases()
        except BaseException:
            services.close()
            raise
        return services

    def check_aliases(self) -> None:
        """Every alias must point at a served policy or model and not hide a policy; ConfigError if not."""
        check_model_aliases(self.settings, {name: r.policy for name, r in self.routers.items()})
        for alias, target in self.settings.model_aliases.items():
            try:  # builds a concrete target's pass-through router now: a glob may admit a name no provider serves
                self._resolve_direct(target)
            except SidecarError as exc:
                raise ConfigError(f"sidecar settings: model_aliases: alias '{alias}' -> '{target}': "
                                  f"{exc.message}") from None

    async def warm_up(self) -> None:
        """Load every policy's probe and providers (worker threads) before serving; seed budgets.

        A probe that cannot load is a configuration error: start-up fails with its message.
        """
        log = get_logger("triage.sidecar")
        for name, router in self.routers.items():
            try:
                await asyncio.to_thread(router.warm)
            except Exception as exc:
                self.warm[name] = f"{type(exc).__name__}: {exc}"
                raise ConfigError(f"policy '{name}': cannot load its probe: {str(exc).splitlines()[0]}") from None
            self.warm[name] = "ready"
            log.info("policy_ready", policy=name, probe=getattr(router.probe, "version", "?"))
        if any(k.budget_usd is not None for k in self.settings.api_keys):
            self.spend.seed(await asyncio.to_thread(self.spend_from_ledger))

    def close(self) -> None:
        self.writer.close()
        self.store.close()

    # -- models -------------------------------------------------------------------------------------

    def policy_models(self) -> list[str]:
        return [POLICY_PREFIX + name for name in self.routers]

    def concrete_models(self) -> list[str]:
        seen: dict[str, None] = {}
        for router in self.routers.values():
            for strategy in router.policy.strategies.values():
                seen[strategy.model] = None
        for pattern in self.settings.models:
            if not any(c in pattern for c in "*?["):
                seen[pattern] = None
        return list(seen)

    def _strategy_for_model(self, model: str) -> Strategy | None:
        for router in self.routers.values():
            for strategy in router.policy.strategies.values():
                if strategy.model == model:
                    return strategy
        return None

    def alias_models(self) -> dict[str, str]:
        """Alias -> what it points to (``triage/<policy>`` spelled out for a bare ``triage``)."""
        return {a: (POLICY_PREFIX + self.default_policy if t == "triage" else t)
                for a, t in self.settings.model_aliases.items()}

    def _unknown_hint(self) -> str:
        aliases = list(self.settings.model_aliases)
        if not aliases:
            return "use triage/<policy> or a model listed by GET /v1/models"
        shown = ", ".join(aliases[:8]) + (", ..." if len(aliases) > 8 else "")
        return f"use triage/<policy>, an alias ({shown}) or a model listed by GET /v1/models"

    def resolve(self, model: str) -> Target:
        """The target of a request's ``model`` (an alias: of what it points to); 404 when not served."""
        target = self.settings.model_aliases.get(model)
        if target is None:
            return self._resolve_direct(model)
        resolved = self._resolve_direct(target)
        resolved.alias = model
        return resolved

    def _resolve_direct(self, model: str) -> Target:
        if model == "triage" or model.startswith(POLICY_PREFIX):
            name = model[len(POLICY_PREFIX):] if model.startswith(POLICY_PREFIX) else self.default_policy
            router = self.routers.get(name)
            if router is None:
                raise SidecarError(404, f"unknown policy '{name}'; served: {', '.join(self.policy_models())}",
                                   code="model_not_found", param="model")
            return Target(POLICY_PREFIX + name, router, router)
        router = self.passthrough.get(model)
        if router is None:
            source = self._strategy_for_model(model)
            if source is None and not any(fnmatchcase(model, p) for p in self.settings.models):
                raise SidecarError(404, f"unknown model '{model}': {self._unknown_hint()}",
                                   code="model_not_found", param="model")
            try:
                router = self._passthrough_router(model, source)
            except (ConfigError, ValueError) as exc:  # a glob admitted a name no provider serves
                raise SidecarError(404, f"unknown model '{model}': {str(exc).splitlines()[0]}",
                                   code="model_not_found", param="model") from None
            if len(self.passthrough) >= MAX_PASSTHROUGH:  # globs admit unboundedly many names
                self.passthrough.pop(next(iter(self.passthrough)))
            self.passthrough[model] = router
        return Target(model, router, self.routers[self.default_policy], passthrough=True)

    def _passthrough_router(self, model: str, source: Strategy | None) -> Router:
        spec: dict[str, Any] = {"model": model}
        if source is not None:
            spec.update({f: getattr(source, f) for f in _CONNECTION_FIELDS if getattr(source, f) is not None})
            if source.deployments:  # the same endpoints, cooled down the same way
                spec.update(cooldown_s=source.cooldown_s, allowed_fails=source.allowed_fails)
        policy = Policy.model_validate({
            "name": PASSTHROUGH, "version": "1", "description": f"{model} called as-is",
            "strategies": {PASSTHROUGH: spec},
            "tiers": {"easy": PASSTHROUGH, "normal": PASSTHROUGH, "hard": PASSTHROUGH},
        })
        default = self.routers[self.default_policy]
        return Router(policy, probe=default.probe, ledger=default.ledger, store_prompts=self.settings.store_prompts)

    # -- ledger -------------------------------------------------------------------------------------

    def spend_from_ledger(self) -> dict[str, float]:
        """USD recorded per api_key_id (for the budgets of keys)."""
        totals: dict[str, float] = {}
        for entry in self.store.iter_entries():
            rec = entry.record
            if rec.api_key_id and rec.cost_usd:
                totals[rec.api_key_id] = totals.get(rec.api_key_id, 0.0) + float(rec.cost_usd)
        return totals

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        ok = True
        for name, status in self.warm.items():
            checks[f"policy:{name}"] = status
            ok = ok and status == "ready"
        try:
            self.store.schema_version()
            checks["ledger"] = "reachable"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["ledger"] = f"unreachable: {type(exc).__name__}"
            self.writer.mark_down(f"readiness probe failed: {type(exc).__name__}")
            ok = False
        # Reachable is not enough: the last commit may have failed (disk full), or the SQLite
        # file may be gone, which still answers reads from the orphaned inode.
        writable, why = self.writer.health()
        checks["ledger_writes"] = "ok" if writable else f"failing: {why}"
        ok = ok and writable
        if self.writer.spool is not None:
            checks["ledger_spool"] = f"{self.writer.spool.size_bytes()} bytes waiting"
        return ok, checks

    def ledger_unavailable(self) -> SidecarError | None:
        """The 503 to answer before paying an upstream call the ledger could not record; None if fine."""
        writable, why = self.writer.health()
        if writable:
            return None
        return SidecarError(503, f"the ledger cannot record requests right now ({why}); nothing was called "
                            "upstream, retry later", type="server_error", code="ledger_unavailable",
                            headers={"Retry-After": str(LEDGER_RETRY_AFTER_S)})
