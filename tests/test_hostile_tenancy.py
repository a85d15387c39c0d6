"""Budgets and tenancy against the real sidecar (`triage serve` on loopback).

Upstream: eval/bench/stub_upstream.py, which answers at once with a known usage (prompt characters
// 4 prompt tokens, 1 completion token); the policy prices it at 1000 USD per million tokens, so
every answer costs a known, nonzero amount. The local model would take minutes for the bursts
below; what is under test is the sidecar's bookkeeping, which the stub leaves untouched.

* 30 concurrent requests (JSON and SSE) on a key whose budget covers 3.5 answers: the key's spend
  in the ledger ends within one request's cost of its budget; every other request gets 403
  budget_exceeded; no answered request is missing from the ledger.
* A request whose upstream fails gives its reservation back.
* /v1/ledger/summary: a tenant sees only its own records; an admin key sees all, or one tenant.
* /metrics, /docs, /redoc, /openapi.json without a key: refused by default, served with
  `public_metrics` / `public_docs`.

Plus, in-process: the reservation bound covers every call a policy's plan can make, and the
admission rule of the spend tracker.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.sidecar import (
    FailingUpstream,
    SidecarProcess,
    sha,
    stub_upstream,
)

slow = pytest.mark.slow  # the tests that start `triage serve` (the default probe loads for seconds)

PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}  # 0.001 USD per token
QUESTION = "What is 2 + 2?"  # the stub bills 14 // 4 = 3 prompt tokens + 1 completion token
COST = (len(QUESTION) // 4 + 1) * 1e-3  # USD per answer
BUDGET = 3.5 * COST  # covers three answers and half of a fourth

KEYS = {  # id -> (key, extra settings)
    "burst": ("sk-tenancy-burst-SECRET-1a2b3c", {"budget_usd": BUDGET}),
    "burst-sse": ("sk-tenancy-burstsse-SECRET-4d5e6f", {"budget_usd": BUDGET}),
    "fragile": ("sk-tenancy-fragile-SECRET-7a8b9c", {"budget_usd": BUDGET}),
    "ample": ("sk-tenancy-ample-SECRET-0d1e2f", {"budget_usd": 100.0}),
    "acme-1": ("sk-tenancy-acme-SECRET-3a4b5c", {"tenant": "acme"}),
    "globex-1": ("sk-tenancy-globex-SECRET-6d7e8f", {"tenant": "globex"}),
    "ops": ("sk-tenancy-ops-SECRET-9a0b1c", {"tenant": "ops", "admin": True, "budget_usd": 0.0}),
}
SECRETS = [k for k, _ in KEYS.values()]


def auth(key_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[key_id][0]}"}


def chat_body(model: str = "triage/stub", stream: bool = False) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": QUESTION}],
                       "stream": stream}).encode()


@pytest.fixture(scope="module")
def stub():
    with stub_upstream() as url:
        yield url + "/v1"


def _policies(folder, stub_base: str, down_base: str) -> list:
    tiers = {"easy": "only", "normal": "only", "hard": "only"}
    common = {"api_key_env": "TEST_UPSTREAM_KEY", "timeout_s": 10, "max_tokens": 8, "price": PRICE}
    docs = {"stub": {"model": "openai/stub", "api_base": stub_base, **common},
            "down": {"model": "openai/broken", "api_base": down_base, **common}}
    paths = []
    for name, strategy in docs.items():
        p = folder / f"{name}.yaml"
        p.write_text(json.dumps({"name": name, "probe": "default", "tiers": tiers, "strategies": {"only": strategy}}))
        paths.append(p)
    return paths


def _key_table() -> list[dict[str, Any]]:
    return [{"id": kid, "sha256": sha(key), **extra} for kid, (key, extra) in KEYS.items()]


@pytest.fixture(scope="module")
def server(stub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tenancy")
    down = FailingUpstream("5xx")
    proc = SidecarProcess(folder, _policies(folder, stub, down.base), extra={"api_keys": _key_table()})
    yield proc
    proc.stop()
    down.close()


@pytest.fixture(scope="module")
def public_server(stub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tenancy-public")
    proc = SidecarProcess(folder, _policies(folder, stub, stub)[:1],
                          extra={"api_keys": _key_table(), "public_metrics": True, "public_docs": True})
    yield proc
    proc.stop()


def ledger_records(server: SidecarProcess) -> list[Any]:
    from triage.router.ledger import open_ledger

    with open_ledger(str(server.ledger)) as store:
        return [e.record for e in store.iter_entries()]


async def _burst(url: str, key_id: str, n: int, stream: bool) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one() -> httpx.Response:
            r = await client.post("/v1/chat/completions", content=chat_body(stream=stream),
                                  headers={**auth(key_id), "content-type": "application/json"})
            await r.aread()
            return r
        return list(await asyncio.gather(*(one() for _ in range(n))))


def _check_refusals(responses: list[httpx.Response]) -> None:
    for r in responses:
        if r.status_code != 200:
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "budget_exceeded"


@pytest.mark.parametrize("key_id, stream", [("burst", False), ("burst-sse", True)])
@slow
def test_concurrent_burst_stays_within_one_request_of_the_budget(server, hostile, key_id, stream):
    responses = asyncio.run(_burst(server.url, key_id, 30, stream))
    _check_refusals(responses)
    # Then one at a time until the key is refused: the budget is usable to its end, not stuck.
    sequential = []
    for _ in range(10):
        r = httpx.post(server.url + "/v1/chat/completions", content=chat_body(stream=stream),
                       headers={**auth(key_id), "content-type": "application/json"}, timeout=120)
        sequential.append(r)
        if r.status_code != 200:
            break
    _check_refusals(sequential)
    assert sequential[-1].status_code == 403 and "used up" in sequential[-1].json()["error"]["message"]
    answered = [r for r in responses + sequential if r.status_code == 200]
    if stream:
        assert all(r.text.rstrip().endswith("data: [DONE]") for r in answered)
    records = [rec for rec in ledger_records(server) if rec.api_key_id == key_id]
    ids = {rec.request_id for rec in records}
    spent = sum(rec.cost_usd or 0.0 for rec in records)
    case = hostile.case(f"budget_burst_{'sse' if stream else 'json'}",
                        statuses=[r.status_code for r in responses + sequential],
                        records_lost=sum(1 for r in answered if r.headers["x-triage-request-id"] not in ids),
                        secrets_leaked=sum(1 for r in responses + sequential for s in SECRETS if s in r.text),
                        budget_usd=BUDGET, spent_usd=spent, answered=len(answered), records=len(records))
    assert case.count_5xx == 0 and case.records_lost == 0 and case.secrets_leaked == 0
    assert len(records) == len(answered)  # every admitted request was recorded, nothing else
    assert all(rec.cost_usd == pytest.approx(COST) for rec in records)
    # Before reservations all 30 passed the check (30 x COST); now at most one answer over budget.
    assert spent <= BUDGET + COST + 1e-12, (spent, BUDGET)
    assert len(answered) == 4  # 3.5 answers' budget: three fit, the fourth is the one allowed over
    assert Counter(case.statuses)[403] == len(case.statuses) - 4


@slow
def test_ample_budget_admits_a_whole_burst(server, hostile):
    responses = asyncio.run(_burst(server.url, "ample", 30, False))
    case = hostile.case("budget_ample_burst", statuses=[r.status_code for r in responses])
    assert case.statuses == [200] * 30  # reserving does not serialize a key that has room


@slow
def test_failed_request_gives_its_reservation_back(server, hostile):
    h = {**auth("fragile"), "content-type": "application/json"}
    failed = httpx.post(server.url + "/v1/chat/completions", content=chat_body("triage/down"), headers=h, timeout=60)
    after = httpx.post(server.url + "/v1/chat/completions", content=chat_body(), headers=h, timeout=60)
    case = hostile.case("budget_release_on_failure", statuses=[failed.status_code, after.status_code],
                        secrets_leaked=sum(1 for r in (failed, after) for s in SECRETS if s in r.text))
    # 502 is the documented answer for an upstream that fails with no fallback; a reservation it
    # kept would make the next request wait for a request that no longer exists (403 "held by").
    assert case.statuses == [502, 200], after.text
    assert case.count_5xx == 0 and case.secrets_leaked == 0


def _summary(server: SidecarProcess, key_id: str | None, **params: str) -> httpx.Response:
    return httpx.get(server.url + "/v1/ledger/summary", params=params, headers=auth(key_id) if key_id else {},
                     timeout=60)


@slow
def test_summary_is_scoped_to_the_callers_tenant(server, hostile):
    for key_id, n in (("acme-1", 2), ("globex-1", 3)):
        for _ in range(n):
            r = httpx.post(server.url + "/v1/chat/completions", content=chat_body(),
                           headers={**auth(key_id), "content-type": "application/json"}, timeout=60)
            assert r.status_code == 200, r.text
    records = ledger_records(server)
    per_tenant = Counter(rec.tenant for rec in records)
    acme, globex = _summary(server, "acme-1"), _summary(server, "globex-1")
    admin, admin_acme = _summary(server, "ops"), _summary(server, "ops", tenant="acme")
    own_filter, other = _summary(server, "acme-1", tenant="acme"), _summary(server, "acme-1", tenant="globex")
    anonymous = _summary(server, None)
    case = hostile.case("ledger_summary_scope",
                        statuses=[r.status_code for r in (acme, globex, admin, admin_acme, own_filter, other,
                                                          anonymous)],
                        acme_n=acme.json().get("n"), globex_n=globex.json().get("n"), admin_n=admin.json().get("n"),
                        ledger_per_tenant=dict(per_tenant))
    assert case.statuses == [200, 200, 200, 200, 200, 403, 401]
    assert other.json()["error"]["code"] == "tenant_not_allowed"
    assert acme.json()["n"] == per_tenant["acme"] == 2 and acme.json()["tenant"] == "acme"
    assert globex.json()["n"] == per_tenant["globex"] == 3
    assert acme.json()["overall"]["total_cost"] == pytest.approx(2 * COST)
    assert admin.json()["n"] == len(records) and admin.json()["overall"]["total_cost"] == pytest.approx(
        sum(rec.cost_usd or 0.0 for rec in records))
    assert admin_acme.json()["n"] == 2 and own_filter.json()["n"] == 2


@slow
def test_ops_endpoints_need_a_key_by_default(server, hostile):
    paths = ("/metrics", "/openapi.json", "/docs", "/redoc")
    anonymous = {p: httpx.get(server.url + p, timeout=30) for p in paths}
    tenant = {p: httpx.get(server.url + p, headers=auth("acme-1"), timeout=30) for p in paths}
    admin = httpx.get(server.url + "/metrics", headers=auth("ops"), timeout=30)
    probes = [httpx.get(server.url + p, timeout=30) for p in ("/healthz", "/readyz")]
    case = hostile.case("ops_exposure_default",
                        statuses=[*(r.status_code for r in anonymous.values()),
                                  *(r.status_code for r in tenant.values()), admin.status_code,
                                  *(r.status_code for r in probes)])
    assert [r.status_code for r in anonymous.values()] == [401, 401, 401, 401]
    assert all(r.json()["error"]["code"] == "missing_api_key" for r in anonymous.values())
    # Metrics count every tenant's traffic: an admin key only. The API document: any key.
    assert tenant["/metrics"].status_code == 403 and tenant["/metrics"].json()["error"]["code"] == "admin_required"
    assert tenant["/openapi.json"].status_code == 200 and "/v1/chat/completions" in tenant["/openapi.json"].json()["paths"]
    assert tenant["/docs"].status_code == 200 and "swagger" in tenant["/docs"].text.lower()
    assert tenant["/redoc"].status_code == 200
    assert admin.status_code == 200 and "triage_http_responses_total" in admin.text
    assert [r.status_code for r in probes] == [200, 200]  # load balancers' checks stay open
    assert case.count_5xx == 0


@slow
def test_ops_endpoints_public_when_configured(public_server, hostile):
    responses = {p: httpx.get(public_server.url + p, timeout=30)
                 for p in ("/metrics", "/openapi.json", "/docs", "/redoc")}
    summary = httpx.get(public_server.url + "/v1/ledger/summary", timeout=30)
    case = hostile.case("ops_exposure_public", statuses=[r.status_code for r in responses.values()]
                        + [summary.status_code])
    assert case.statuses == [200, 200, 200, 200, 401]  # public docs and metrics; the ledger never
    assert "triage_" in responses["/metrics"].text and "paths" in responses["/openapi.json"].json()


# -- in-process: the bound and the admission rule ------------------------------------------------


def _policy(**over: Any) -> Any:
    from triage.policies.policy import Policy

    doc = {"name": "p", "version": "1", "strategies": {
        "cheap": {"model": "openai/cheap", "max_tokens": 10, "price": {"input_per_mtok": 1e6, "output_per_mtok": 2e6},
                  "on_truncation": "escalate"},
        "big": {"model": "openai/big", "max_tokens": 100, "price": {"input_per_mtok": 1e6, "output_per_mtok": 1e6},
                "on_truncation": "retry", "retry_max_tokens": 300},
        "local": {"model": "local/smollm2-135m"}},
        "tiers": {"easy": "cheap", "normal": "big", "hard": "big"}, **over}
    return Policy.model_validate(doc)


def test_bound_covers_every_call_the_plan_can_make():
    from triage.policies.decide import decide
    from triage.probes.types import ProbeOutput
    from triage.router.sidecar.budget import request_cost_bound

    easy = ProbeOutput({"easy": 1.0, "normal": 0.0, "hard": 0.0})
    # Prices are 1 and 2 USD per token. cheap: 5 prompt + 10 out x 2 = 25, truncated -> escalates to big:
    # 5 + 100, truncated -> retried with 300: 5 + 300. Total 435.
    p = _policy()
    assert request_cost_bound(p, decide(p, easy), prompt_tokens=5) == pytest.approx(435)
    # The caller's max_tokens caps every call: 5 + 2 x 2, 5 + 2, 5 + 2.
    assert request_cost_bound(p, decide(p, easy), prompt_tokens=5, caller_max_tokens=2) == pytest.approx(23)
    # A fallback that already ran as an ordinary step may run once more; a local one costs nothing.
    fb = _policy(fallback="big")
    assert request_cost_bound(fb, decide(fb, easy), prompt_tokens=5) == pytest.approx(435 + 410)
    free = _policy(fallback="local")
    assert request_cost_bound(free, decide(free, easy), prompt_tokens=5) == pytest.approx(435)
    # A priced strategy with no completion budget has no bound.
    open_ended = _policy(strategies={"only": {"model": "openai/x", "price": {"input_per_mtok": 1, "output_per_mtok": 1}}},
                         tiers={"easy": "only", "normal": "only", "hard": "only"})
    assert request_cost_bound(open_ended, decide(open_ended, easy), prompt_tokens=5) == float("inf")


def test_prompt_bound_is_at_least_the_body_and_counts_images():
    from triage.router.sidecar.budget import IMAGE_ALLOWANCE_TOKENS, prompt_tokens_bound

    body = chat_body()
    assert prompt_tokens_bound(body) >= len(body)
    image = json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}).encode()
    assert prompt_tokens_bound(image) >= len(image) + IMAGE_ALLOWANCE_TOKENS


def test_admission_reserves_settles_and_releases():
    from triage.router.sidecar.auth import Caller
    from triage.router.sidecar.errors import SidecarError
    from triage.router.sidecar.limits import SpendTracker
    from triage.router.sidecar.settings import ApiKeySpec

    spend = SpendTracker()
    k = Caller("k", "k", ApiKeySpec(id="k", sha256=sha("k"), budget_usd=1.0))
    a, b = spend.reserve(k, 0.4), spend.reserve(k, 0.4)  # both fit
    with pytest.raises(SidecarError) as refused:
        spend.reserve(k, 0.4)  # 0.8 held: a third would not fit, and others are in flight
    assert refused.value.code == "budget_exceeded" and "in flight" in refused.value.message
    a.settle(0.1)
    a.settle(0.3)  # settling twice counts once
    b.release()
    assert (spend.spent("k"), spend.reserved("k"), spend.in_flight("k")) == (pytest.approx(0.1), 0.0, 0)
    alone = spend.reserve(k, float("inf"))  # larger than what is left, but alone: admitted
    with pytest.raises(SidecarError):
        spend.reserve(k, 0.0)  # nothing fits next to an unbounded hold
    alone.settle(1.2)
    with pytest.raises(SidecarError) as used_up:
        spend.reserve(k, 0.0)
    assert "used up" in used_up.value.message  # over by at most that one request's cost
