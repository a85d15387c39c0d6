"""The learning-loop bench end to end on a small slice, with shadowing: the policy it writes carries
the `shadow:` block, the simulated ledger holds the shadow outcomes, the trainer reads them as the
cheap label's rows, and the spend is reported apart. Real data (the shared RouterBench subset),
real SQLite ledgers, the real `triage learn`; one round, so it takes seconds, not the bench's minutes.
"""

from __future__ import annotations

import json
import re
import subprocess
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
    assert re.fullmatch(r"[0-9a-f]{40}(\+changes)?", rb["code"]), rb["code"]  # which code made the figure


def test_code_version_names_the_commit_and_says_when_the_code_has_changes(tmp_path: Path) -> None:
    from triage.eval.bench.provenance import code_version

    assert code_version(tmp_path) == "unknown"  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    results = tmp_path / "eval" / "bench" / "results"
    results.mkdir(parents=True)
    files = {"code.py": "x = 1\n", "README.md": "# r\n", "eval/bench/results/run.json": "{}\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    subprocess.run([*git, "add", *files], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.py").write_text("not part of the code\n")
    assert code_version(tmp_path) == head
    # a bench run rewrites its results file, and prose changes nothing a bench computes
    (results / "run.json").write_text('{"rounds": []}\n')
    (tmp_path / "README.md").write_text("# r, edited\n")
    assert code_version(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_version(tmp_path) == f"{head}+changes"


def test_a_run_for_one_dataset_keeps_the_others_in_its_file(tmp_path: Path) -> None:
    """`--datasets simpleqa` then `--datasets routerbench` with one configuration: one file with both
    (the second run used to overwrite the first); another configuration's file is replaced."""
    from triage.eval.bench.learning_loop import merged_with_earlier

    def section(share: float, covered: int) -> dict:
        return {"final_gain_share_of_full_information": share, "final_gain_share_matched": {},
                "final_gain_share_paired_bootstrap": {"goal_verdict_on_test_rows": "undecided"},
                "dr_coverage_test": {"accuracy": covered, "rounds": 6}}

    out = tmp_path / "learning_loop_shadow1.json"
    config = {"shadow": 1.0, "seed": 0}
    first = {"config": config, "datasets": {"simpleqa": section(0.95, 6)}}
    out.write_text(json.dumps(merged_with_earlier(first, out)))  # nothing earlier: as it is
    assert json.loads(out.read_text())["datasets"].keys() == {"simpleqa"}
    second = {"config": dict(config), "datasets": {"routerbench": section(0.5, 3)}, "goals": {}}
    both = merged_with_earlier(second, out)
    assert both["datasets"].keys() == {"simpleqa", "routerbench"}
    assert both["goals"]["dr_accuracy_covers_test_truth"] == "9/12"
    assert both["goals"]["gain_share_at_least_0.9"] == {"simpleqa": True, "routerbench": False}
    other = {"config": {"shadow": 0.5, "seed": 0}, "datasets": {"routerbench": section(0.5, 3)}}
    assert merged_with_earlier(other, out) is other


def test_an_unknown_dataset_is_refused_not_read_as_simpleqa(capsys: pytest.CaptureFixture[str]) -> None:
    """`load` used to read any name but routerbench as SimpleQA, so `--datasets gsm8k` ran SimpleQA
    and filed it under gsm8k."""
    from triage.eval.bench.learning_loop_data import dataset_names, load

    with pytest.raises(ValueError, match="unknown dataset gsm8k; choose from routerbench, simpleqa"):
        load("gsm8k")
    assert dataset_names(" simpleqa, routerbench ") == ["simpleqa", "routerbench"]
    with pytest.raises(ValueError, match="no dataset given"):
        dataset_names(" , ")
    with pytest.raises(SystemExit) as exc:
        main(["--datasets", "routerbench,gsm8k", "--no-write"])
    assert exc.value.code == 2 and "unknown dataset gsm8k" in capsys.readouterr().err
