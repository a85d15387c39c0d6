"""The learning-loop bench end to end on a small slice, with shadowing: the policy it writes carries
the `shadow:` block, the simulated ledger holds the shadow outcomes, the trainer reads them as the
cheap label's rows, and the spend is reported apart. Real data (the shared RouterBench subset),
real SQLite ledgers, the real `triage learn`; one round, so it takes seconds, not the bench's minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from triage.eval.bench.learning_loop import main, write_policy


def test_write_policy_shadows_the_chosen_strategy(tmp_path: Path) -> None:
    from triage.policies.loader import load_policy

    write_policy(tmp_path / "p.yaml", "rb", "cheap-model", "strong-model", shadow=0.25)
    policy = load_policy(tmp_path / "p.yaml")
    assert policy.shadow is not None and policy.shadow.rate == 0.25 and policy.shadow.strategies == ["cheap"]
    write_policy(tmp_path / "q.yaml", "rb", "cheap-model", "strong-model", shadow=0.25, shadow_strategy="strong")
    assert load_policy(tmp_path / "q.yaml").shadow.strategies == ["strong"]
    write_policy(tmp_path / "r.yaml", "rb", "cheap-model", "strong-model")
    assert "shadow" not in yaml.safe_load((tmp_path / "r.yaml").read_text())


@pytest.mark.slow
def test_one_shadowed_round_on_routerbench(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--datasets", "routerbench", "--train", "300", "--test", "200", "--rounds", "1",
               "--shadow", "0.5", "--no-write", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["config"]["shadow"] == 0.5 and doc["config"]["shadow_strategy"] == "cheap"
    rb = doc["datasets"]["routerbench"]
    (rnd,) = rb["rounds"]
    cheap, strong = rb["pair"]["cheap"], rb["pair"]["strong"]
    assert rnd["shadows"] > 0 and rb["shadow"]["calls"] == rnd["shadows"]
    # the cheap model's outcomes: its first calls plus the shadows (the strong one is never shadowed)
    labels = rnd["probe_labels"]
    assert labels[cheap]["rows"] + labels[strong]["rows"] == 300 + rnd["shadows"]
    assert labels[cheap]["rows"] > rnd["shadows"]
    # shadowing the cheap model costs ~1% of the traffic's spend (it costs ~1.6% of the strong one)
    assert 0 < rb["shadow"]["cost_share_of_traffic"] < 0.05
    assert rnd["test_router"]["aiq"] is not None
