"""The sidecar's endpoints. Each request: authenticate -> rate limit -> budget -> resolve the model
-> probe + decide (worker thread) -> reserve the request's cost bound against the key's budget ->
call through the router (which records) -> settle the reservation with the actual cost -> answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from triage.policies.decide import DecisionError
from triage.errors import TriageError
from triage.router.ledger import UnknownRequestError
from triage.router.sidecar.auth import (
    Caller,
    authorize_model,
    ledger_scope,
    require_every_tenant,
)
from triage.router.sidecar.budget import (
    cost_before_failure,
    prompt_tokens_bound,
    request_cost_bound,
)
from triage.router.sidecar.chat import complete, stream_completion, upstream_kwargs
from triage.router.sidecar.decision_token import HEADER as DECISION_TOKEN_HEADER
from triage.router.sidecar.errors import SidecarError
from triage.router.sidecar.openai_schema import (
    ERROR_RESPONSES,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    ModelCard,
    ModelList,
    RouteRequest,
    RouteResponse,
)
from triage.router.sidecar.services import Services

api = APIRouter()
_bearer = HTTPBearer(auto_error=False, description="A key configured by its SHA-256 in the sidecar settings.")


def services_of(request: Request) -> Services:
    return request.app.state.services


async def caller_of(request: Request,
                    _: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Caller:
    """Authenticate (401) and rate-limit (429) the request; the key's id goes to the access log."""
    services = services_of(request)
    caller = services.keyring.authenticate(request.headers.get("authorization"))
    request.state.key_id = caller.key_id
    services.limiter.check(caller)
    return caller


def _ledger_fields(caller: Caller, endpoint: str, requested: str, stream: bool,
                   target: Any = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"endpoint": endpoint, "requested_model": requested, "stream": stream}
    if target is not None and target.alias is not None:  # what the alias pointed to when it was used
        metadata["alias"] = target.alias
        metadata["alias_target"] = target.name
    return {"tenant": caller.tenant, "api_key_id": caller.key_id, "metadata": metadata}


async def _decide(request: Request, services: Services, caller: Caller, model: str | None,
                  messages: list[dict[str, Any]], token: str | None = None) -> tuple[Any, Any]:
    target = services.resolve(model or "triage")
    if target.alias is not None:  # echoed as x-triage-alias / x-triage-alias-target
        request.state.triage_alias = target.alias
        request.state.triage_alias_target = target.name
    authorize_model(caller, target.name)  # a key's `models` restrict what is called, whatever its name
    seed = request.state.request_id
    if token is not None:  # a /v1/route decision reused: its id seeds the exploration draw (400 if invalid)
        seed = services.tokens.check(token, caller.key_id, target.name).request_id
        request.state.route_request_id = seed
    try:
        routed = await asyncio.to_thread(target.route, messages, seed)
    except DecisionError as exc:  # the policy and its probe do not fit: the server's fault, said plainly
        raise SidecarError(500, f"policy '{target.name}' cannot decide: {str(exc).splitlines()[0]}",
                           type="server_error", code="policy_error") from None
    except TriageError as exc:  # the probe cannot read these messages
        raise SidecarError(422, str(exc).splitlines()[0], code="invalid_messages", param="messages") from None
    request.state.triage_tier = routed.decision.tier
    request.state.triage_strategy = routed.decision.strategy
    return target, routed


@api.post("/v1/chat/completions", response_model=ChatCompletionResponse, tags=["openai"],
          responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                              "description": "A chat completion, or SSE chunks with stream=true"}})
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           caller: Caller = Depends(caller_of)) -> Response:
    """OpenAI chat completions; `model` = `triage/<policy>` routes, a concrete model is called as-is."""
    started = time.perf_counter()
    services = services_of(request)
    services.spend.check(caller)
    kwargs = upstream_kwargs(body, services.settings.upstream_timeout_s)
    target, routed = await _decide(request, services, caller, body.model, body.messages_as_dicts(),
                                   token=request.headers.get(DECISION_TOKEN_HEADER))
    # Last check before money is spent: a call the ledger cannot record is not made (503 + Retry-After).
    # A store that fails after this point is covered by the writer's spool (docs/sidecar.md).
    unavailable = services.ledger_unavailable()
    if unavailable is not None:
        raise unavailable
    # Held from here until the call ends (a stream: until it ends or its client goes), so
    # concurrent requests of one key see each other's worst case (docs/sidecar.md, "Budgets").
    bound = request_cost_bound(target.router.policy, routed.decision,
                               prompt_tokens=prompt_tokens_bound(await request.body()),
                               caller_max_tokens=kwargs.get("max_tokens"))
    request_id = request.state.request_id
    fields = _ledger_fields(caller, "chat.completions", body.model, body.stream, target)
    route_id = getattr(request.state, "route_request_id", None)
    if route_id is not None:  # the /v1/route call whose decision this is (its id seeded the draw)
        fields["metadata"]["route_request_id"] = route_id
    reservation = services.spend.reserve(caller, bound)
    try:
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def on_done(stream: Any) -> None:
                reservation.settle((getattr(stream, "triage", None) or {}).get("cost_usd"))

            return await stream_completion(target, routed, request_id=request_id, ledger_fields=fields,
                                           started=started, kwargs=kwargs, include_usage=include_usage,
                                           state=request.state, on_done=on_done)
        data, info = await complete(target, routed, request_id=request_id, ledger_fields=fields,
                                    started=started, kwargs=kwargs)
    except BaseException as exc:  # failed or cancelled: what its attempts cost is in the ledger too
        reservation.settle(cost_before_failure(exc))
        raise
    request.state.triage_strategy = info.get("strategy") or routed.decision.strategy
    reservation.settle(info.get("cost_usd"))
    return Response(data, media_type="application/json")


@api.post("/v1/route", response_model=RouteResponse, tags=["triage"], responses=ERROR_RESPONSES)
async def route(body: RouteRequest, request: Request, caller: Caller = Depends(caller_of)) -> RouteResponse:
    """The decision only (tier, probabilities, strategy, model, budget, expected cost); nothing is called.
    `decision_token`, sent back as the `x-triage-decision-token` header of a chat call with the same
    model and messages, makes that call draw the same strategy (docs/sidecar.md)."""
    services = services_of(request)
    target, routed = await _decide(request, services, caller, body.model, body.messages_as_dicts())
    d = routed.decision
    services.metrics.observe_decision(routed.decision_latency_s, tier=d.tier, strategy=d.strategy)
    request_id = request.state.request_id
    return RouteResponse(request_id=request_id, policy=d.policy, decision=d.model_dump(mode="json"),
                         decision_token=services.tokens.issue(request_id, caller.key_id, target.name),
                         decision_token_ttl_s=services.tokens.ttl_s)


@api.post("/v1/feedback", response_model=FeedbackResponse, tags=["triage"], responses=ERROR_RESPONSES)
async def feedback(body: FeedbackRequest, request: Request, caller: Caller = Depends(caller_of)) -> FeedbackResponse:
    """Attach an outcome (score 0..1, source) to a request id from `x-triage-request-id`."""
    services = services_of(request)
    unknown = SidecarError(404, f"no ledger record for request id '{body.request_id}'",
                           code="unknown_request_id", param="request_id")
    unavailable = services.ledger_unavailable()  # its record may be in the spool, waiting for the store
    if unavailable is not None:
        raise unavailable
    record = await asyncio.to_thread(services.store.get, body.request_id)
    # A request's record is committed before its response leaves, so an id a client holds is stored.
    if record is None or (not caller.anonymous and record.tenant != caller.tenant):
        raise unknown  # another tenant's request: do not reveal that it exists
    request.state.triage_tier = record.tier
    request.state.triage_strategy = record.strategy
    try:
        await services.writer.afeedback(body.request_id, body.score, source=body.source)
    except UnknownRequestError:
        raise unknown from None
    return FeedbackResponse(request_id=body.request_id)


@api.get("/v1/models", response_model=ModelList, response_model_exclude_none=True, tags=["openai"],
         responses=ERROR_RESPONSES)
async def models(request: Request, caller: Caller = Depends(caller_of)) -> ModelList:
    """Policies as `triage/<name>`, then aliases (owned_by `triage-alias`, `target` = what they point
    to), then the concrete models that may be called as-is."""
    services = services_of(request)
    aliases = services.alias_models()
    cards = [ModelCard(id=n, owned_by="triage") for n in services.policy_models()]
    cards += [ModelCard(id=a, owned_by="triage-alias", target=t) for a, t in aliases.items()]
    cards += [ModelCard(id=n, owned_by="upstream") for n in services.concrete_models() if n not in aliases]
    allowed = []
    for card in cards:
        try:
            authorize_model(caller, card.target or card.id)  # an alias is listed when its target may be used
        except SidecarError:
            continue
        allowed.append(card)
    return ModelList(data=allowed)


@api.get("/v1/ledger/summary", tags=["triage"], responses=ERROR_RESPONSES)
async def ledger_summary(request: Request, caller: Caller = Depends(caller_of),
                         by: Literal["tier", "strategy", "model", "day"] = Query("strategy"),
                         since: str | None = Query(None, max_length=64, description="e.g. 7d, 12h or an ISO time"),
                         baseline: str | None = Query(None, max_length=200,
                                                      description="Strategy TEP compares against"),
                         tenant: str | None = Query(None, max_length=200,
                                                    description="Admin keys: one tenant only")) -> JSONResponse:
    """Requests, accuracy, tokens, cost, cost-of-pass, TEP, escalation and truncation rates of the
    caller's tenant (an admin key: every tenant, or the one `tenant` names)."""
    from triage.router.ledger.report import ledger_report, parse_since

    services = services_of(request)
    scope = ledger_scope(caller, services.keyring, tenant)
    try:
        when = parse_since(since) if since else None
        report = await asyncio.to_thread(ledger_report, services.store, by=by, since=when, baseline=baseline,
                                         tenant=scope)
    except (TriageError, ValueError) as exc:
        raise SidecarError(400, str(exc).splitlines()[0], code="invalid_summary_query") from None
    return JSONResponse(report)


@api.post("/v1/admin/reload", tags=["ops"], responses=ERROR_RESPONSES)
async def admin_reload(request: Request, caller: Caller = Depends(caller_of)) -> JSONResponse:
    """Re-read every policy file and the probe it names, check them all, then swap them in at once
    (admin key). In-flight requests finish on the previous policy; a bad file is 409 and changes nothing.
    Versions before and after per policy; with several workers the others are signalled to reload."""
    from triage.router.core.reload import ReloadError
    from triage.router.sidecar.reload import reload_policies, signal_other_workers

    services = services_of(request)
    require_every_tenant(caller, services.keyring, "reloading the policies")
    try:
        out = await asyncio.to_thread(reload_policies, services, trigger="admin")
    except ReloadError as exc:
        raise SidecarError(409, str(exc), code="reload_refused") from None
    workers = services.settings.workers
    out["workers"] = {"count": workers, "signalled": signal_other_workers(workers)}
    return JSONResponse(out)


@api.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Health:
    """The process is up (liveness)."""
    return Health(status="ok")


@api.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
async def readyz(request: Request) -> JSONResponse:
    """Probes loaded and ledger reachable (readiness); 503 until then."""
    ok, checks = await asyncio.to_thread(services_of(request).readiness)
    return JSONResponse(Health(status="ready" if ok else "not_ready", checks=checks).model_dump(),
                        status_code=200 if ok else 503)


async def _authenticated(request: Request) -> Caller:
    """``caller_of`` for endpoints that are public or not depending on the settings."""
    return await caller_of(request, None)


@api.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus exposition: requests, tokens, cost, latency by tier/strategy/model; HTTP statuses.
    Covers every tenant, so it needs an admin key unless `public_metrics` is set."""
    services = services_of(request)
    if not services.settings.public_metrics:
        require_every_tenant(await _authenticated(request), services.keyring, "/metrics")
    data, content_type = services.metrics.render()
    return Response(data, media_type=content_type)


# The API document and its viewers: any key unless `public_docs` is set (FastAPI's own routes for
# them are switched off in app.py). A browser cannot send the Bearer header, so with keys
# configured, /docs and /redoc need `public_docs: true` to be browsed.
@api.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> JSONResponse:
    if not services_of(request).settings.public_docs:
        await _authenticated(request)
    return JSONResponse(request.app.openapi())


@api.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    if not services_of(request).settings.public_docs:
        await _authenticated(request)
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - docs")


@api.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    if not services_of(request).settings.public_docs:
        await _authenticated(request)
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc")
