"""A proxy-model probe: LM features from a local model that answers nothing.

The probe reads ``text`` features and SmolLM2's internals (only some of its blocks:
``lm:parts=final+scalars``); the policy's strategies are API models. At request time the router must
prefill SmolLM2 for the probe alone, slice the trained blocks, keep no KV cache for it, and decide
exactly as the offline feature path (the training cache) would. Real SmolLM2 on the int4 engine, a
real trained and exported probe; ``route`` calls no model, so no upstream is needed.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from triage.eval.importers import import_source
from triage.router.core import Router

from triage.replay import ReplayData
from triage.settings import get_settings

pytestmark = pytest.mark.slow

LM_SPEC = "lm:parts=final+scalars"
QUESTION = "Tom has 3 apples and buys 4 more, then gives away half. How many apples does he keep?"


@pytest.fixture(scope="module")
def proxy_policy(tmp_path_factory):
    from triage.probes.export import export_probe
    from triage.probes.training import TrainConfig, train_probe

    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[:40]
    data = ReplayData.from_records(records, name="gsm8k-40")
    folder = tmp_path_factory.mktemp("proxyprobe")
    trained = train_probe(data, TrainConfig(features=["text:aux=false", LM_SPEC], folds=2, n_boot=0),
                          cache_dir=folder / "cache")
    export_probe(trained, folder / "probe", plot=False)
    raw = {
        "name": "proxy-probe", "probe": str(folder / "probe"),
        "strategies": {"cheap": {"model": "openai/gpt-4o-mini", "max_tokens": 64},
                       "big": {"model": "openai/gpt-4o", "max_tokens": 512}},
        "tiers": {"easy": "cheap", "normal": "cheap", "hard": "big"},
    }
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, folder


def test_card_names_the_proxy_variant(proxy_policy):
    from triage.probes.runtime import load_probe

    _, folder = proxy_policy
    probe = load_probe(folder / "probe")
    spec = next(s for s in probe.card.features if s.name == "lm")
    assert spec.params == {"model": "smollm2-135m", "parts": "final+scalars"}
    assert spec.requires_torch and spec.dim == 576 + 9
    assert probe.external_features == ["lm"]


def test_api_policy_prefills_the_proxy_and_decides_as_offline(proxy_policy):
    from triage.probes.features import make_feature
    from triage.probes.runtime import load_probe
    from triage.router.core.messages import probe_text

    from triage.lm import get_local_lm

    path, folder = proxy_policy
    router = Router.from_file(path)
    assert router.policy.local_models() == []  # no strategy runs a local model
    lm = get_local_lm("smollm2-135m")
    lm.forget_prefills()
    before = dict(vars(lm.stats))
    messages = [{"role": "user", "content": QUESTION}]
    routed = router.route_detailed(messages)
    delta = {k: v - before[k] for k, v in vars(lm.stats).items()}
    assert delta["prefills"] == 1 and delta["generations"] == 0, delta
    assert routed.self_probe is False
    assert routed.decision.strategy in ("cheap", "big")
    # a proxy's prefill answers nothing: its KV cache is not kept for a generation to continue
    assert not lm._prefills

    # the offline path: the variant's own transform (training cache side), fed to the same probe
    text = probe_text(routed.messages)
    offline = make_feature("lm", parts="final+scalars").transform([text])
    expected = load_probe(folder / "probe").predict([text], precomputed={"lm": offline})[0]
    for name, p in expected.success.items():
        assert routed.probe_output.success[name] == pytest.approx(p, abs=1e-5)
    for tier, p in expected.tier_probs.items():
        assert routed.probe_output.tier_probs[tier] == pytest.approx(p, abs=1e-5)


def test_replay_router_and_sdk_agree_for_a_proxy_probe(proxy_policy):
    from triage.eval.routers.policy import PolicyRouter

    path, _ = proxy_policy
    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[40:44]
    data = ReplayData.from_records(records, name="gsm8k-4")
    router = Router.from_file(path)
    sdk = [router.route(r.messages()) for r in data.records]
    replay = PolicyRouter(path=str(path)).decisions(data, np.arange(data.n))
    assert [d.model_dump() for d in replay] == [d.model_dump() for d in sdk]


def test_warm_builds_the_proxy_row_makers_before_any_request(proxy_policy, monkeypatch):
    """After ``warm()`` (the sidecar's start-up), a request builds nothing for the probe's LM
    features: making a feature object then would fail this test."""
    import triage.probes.features as features

    path, _ = proxy_policy
    router = Router.from_file(path).warm()

    def no_feature_objects_on_the_request_path(*a, **k):
        raise AssertionError("a feature object was built while serving a request")

    monkeypatch.setattr(features, "make_feature", no_feature_objects_on_the_request_path)
    routed = router.route_detailed([{"role": "user", "content": QUESTION}])
    assert routed.decision.strategy in ("cheap", "big")
