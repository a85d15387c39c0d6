"""Self-probe: a probe reading SmolLM2's internals, serving SmolLM2 -- one model, one prefill.

A small LM-feature probe is trained on 40 RouteLLM GSM8K queries (real features from the real local
model, real export), so the test exercises the path the issue describes: the probe's LM features come
from the served model's own prefill, the generation continues from that prefill's KV cache, and the
replay path computes the very same decision.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from triage.eval.importers import import_source
from triage.replay import ReplayData
from triage.eval.routers.policy import PolicyRouter
from triage.router.core import Router
from triage.settings import get_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm_policy(tmp_path_factory):
    from triage.probes.export import export_probe
    from triage.probes.training import TrainConfig, train_probe

    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[:40]
    data = ReplayData.from_records(records, name="gsm8k-40")
    folder = tmp_path_factory.mktemp("lmprobe")
    trained = train_probe(data, TrainConfig(features=["lm"], folds=2, n_boot=0), cache_dir=folder / "cache")
    export_probe(trained, folder / "probe", plot=False)
    raw = {
        "name": "self-probe", "probe": str(folder / "probe"),
        # no system prompt or template: the served chat is exactly the probe's prefill
        "strategies": {"plain": {"model": "local/smollm2-135m", "max_tokens": 8, "temperature": 0.0},
                       "longer": {"model": "local/smollm2-135m", "max_tokens": 12, "temperature": 0.0}},
        "tiers": {"easy": "plain", "normal": "plain", "hard": "longer"},
    }
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, data


def test_lm_features_come_from_the_served_models_own_prefill(lm_policy):
    from triage.lm import get_local_lm, loaded_local_models

    path, _ = lm_policy
    router = Router.from_file(path)
    messages = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}]
    lm = get_local_lm("smollm2-135m")  # the default engine's instance: int4 ONNX
    assert lm.engine == "onnx"
    before = dict(vars(lm.stats))
    response = router.completion(messages=messages)
    info = response._hidden_params["triage"]
    assert info["self_probe"] is True
    assert response.usage.completion_tokens <= 12
    # one model instance on the serving engine: the probe's and the answer's (other tests of the
    # session may have loaded the transformers engine too)
    assert [k for k in loaded_local_models() if k.startswith("onnx:")] == [f"onnx:{lm.resolved.key}"]
    # the answer continued from the probe's prefill (same chat, same model): no second prefill
    assert response._hidden_params["local"]["prefill_reused"] is True
    delta = {k: v - before[k] for k, v in vars(lm.stats).items()}
    assert (delta["prefills"], delta["prefill_reuses"], delta["generations"]) == (1, 1, 1), delta
    # the prompt ran once: one forward for the prefill, one per decode step after the first token
    assert delta["forwards"] == 1 + response.usage.completion_tokens - 1, delta


def test_self_probe_decisions_match_replay(lm_policy):
    path, data = lm_policy
    router = Router.from_file(path)
    rows = np.arange(6)
    sdk = [router.route(data.records[i].messages()) for i in rows]
    replay = PolicyRouter(path=str(path)).decisions(data, rows)
    assert [d.model_dump() for d in replay] == [d.model_dump() for d in sdk]
