"""Two sidecar replicas sharing one ledger on a real PostgreSQL server (as docs/sidecar.md describes for
running several replicas behind a load balancer): each records what it serves, feedback and summaries
work from any replica."""

from __future__ import annotations

import httpx
import pytest

from tests.support.sidecar import CLIENT_KEY, LOCAL_POLICY, SidecarProcess, record_of

pytestmark = pytest.mark.slow
H = {"authorization": f"Bearer {CLIENT_KEY}"}


@pytest.mark.minutes  # two sidecars on PostgreSQL (~25 s): `make test-all`
def test_replicas_share_a_postgres_ledger(postgres_url, tmp_path):
    replicas = []
    try:
        for i in range(2):
            folder = tmp_path / f"replica{i}"
            folder.mkdir()
            replicas.append(SidecarProcess(folder, [LOCAL_POLICY], extra={"ledger_url": postgres_url}))
        served = []
        for i in range(4):  # round-robin, as a load balancer would
            r = replicas[i % 2]
            resp = httpx.post(r.url + "/v1/chat/completions", headers=H, timeout=300, json={
                "model": "triage/local", "max_tokens": 4, "messages": [{"role": "user", "content": f"Count to {i}."}]})
            assert resp.status_code == 200, resp.text
            served.append(resp.headers["x-triage-request-id"])
        for rid in served:
            assert record_of(postgres_url, rid) is not None
        # Feedback for a request served by replica 0, posted to replica 1.
        fb = httpx.post(replicas[1].url + "/v1/feedback", headers=H, json={"request_id": served[0], "score": 1.0})
        assert fb.status_code == 200, fb.text
        for r in replicas:
            summary = httpx.get(r.url + "/v1/ledger/summary", headers=H).json()
            assert summary["n"] == 4 and summary["overall"]["n_scored"] == 1
            assert httpx.get(r.url + "/readyz").json()["checks"]["ledger"] == "reachable"
    finally:
        for r in replicas:
            r.stop()
