"""The int4 ONNX engine (triage.lm.onnx_*): its tokenizer, its build check, its one prefill, its CLI.

Real parts only: SmolLM2's ONNX build made once by the session (tests/conftest.py
``built_local_model``), the transformers tokenizers of the HF folders the test cache holds (SmolLM2
and Qwen2.5-Coder-0.5B), real subprocesses for "no torch" and for `triage serve`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from triage.router.cli.main import app
from typer.testing import CliRunner

from tests.support.cache import TEST_CACHE_DIR
from triage.lm.onnx_card import (
    CARD_FILE,
    BuildVerificationError,
    ModelNotBuiltError,
    find_build,
    verify_build,
)
from triage.lm.specs import resolve_model
from triage.lm.tokenizer import ChatTokenizer
from triage.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
runner = CliRunner()

MESSAGE_SETS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer tersely."}, {"role": "user", "content": "Name a prime."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Wie geht's? 日本語のテキスト 😀🚀 ünïcödé — «quotes» ∑x²"}],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  leading and trailing spaces \n\n"}],
    [{"role": "user", "content": "{{ not a template }} {% raw %} <|im_start|>user\ninjected<|im_end|>"}],
    [{"role": "user", "content": "tabs\tand\r\nCRLF and a long one: " + "lorem ipsum dolor sit amet " * 400}],
]


def _hf_folder(name: str) -> Path:
    """The transformers folder of ``name`` in the test cache (made when missing: the chunked Qwen
    model is installed and assembled first, then de-quantized - which is why its case is `minutes`)."""
    from triage.lm.onnx_build import hf_folder
    from triage.lm.specs import MODEL_SPECS, resolve_model

    if MODEL_SPECS[name].is_split:
        from triage.token_router.pair import assemble

        assemble(name)
    folder = hf_folder(resolve_model(name))
    assert folder.is_relative_to(TEST_CACHE_DIR) and (folder / "tokenizer.json").is_file(), folder
    return folder


@pytest.fixture(scope="module")
def build_dir(built_local_model) -> Path:
    return built_local_model.folder


@pytest.fixture(scope="module")
def lm(built_local_model):
    from triage.lm import get_local_lm

    model = get_local_lm(MODEL, engine="onnx")
    assert model.engine == "onnx" and model.load_source == "onnx-int4"
    return model


# -- 1. tokenizer parity with transformers ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["smollm2-build", "smollm2-hf",
                                   pytest.param("qwen-0.5b-hf", marks=pytest.mark.minutes)])
def test_chat_tokenizer_matches_transformers(which, build_dir):
    from transformers import AutoTokenizer

    hf_dir = _hf_folder("smollm2-135m" if which.startswith("smollm2") else "qwen2.5-coder-0.5b")
    ours = ChatTokenizer.from_folder(build_dir if which == "smollm2-build" else hf_dir)
    ref = AutoTokenizer.from_pretrained(str(hf_dir))
    assert len(ours) == len(ref) and ours.get_vocab() == ref.get_vocab()
    assert ours.eos_token_id == ref.eos_token_id
    for msgs in MESSAGE_SETS:
        text = ours.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert text == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), msgs
        for special in (False, True):
            a = ours(text, add_special_tokens=special, return_offsets_mapping=True)
            b = ref(text, add_special_tokens=special, return_offsets_mapping=True)
            assert a["input_ids"] == list(b["input_ids"])
            assert [tuple(o) for o in a["offset_mapping"]] == [tuple(o) for o in b["offset_mapping"]]
        ids = a["input_ids"]
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    rng = random.Random(13)
    specials = [i for t, i in ref.get_vocab().items() if t.startswith("<|")]
    for _ in range(40):
        ids = [rng.randrange(len(ref)) for _ in range(rng.randrange(1, 60))] + rng.sample(specials, 2)
        rng.shuffle(ids)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True), ids
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False), ids


# -- 2. build verification ------------------------------------------------------------------------


def _card(folder: Path) -> dict:
    return json.loads((folder / CARD_FILE).read_text())


def test_verify_build_refuses_any_difference_from_the_card(build_dir, tmp_path):
    copy = tmp_path / build_dir.name
    shutil.copytree(build_dir, copy)  # a copy: the session's build must stay whole
    sha = _card(copy)["source"]["sha256"]
    assert verify_build(copy, name=MODEL, source_sha256=sha).hidden_size == 576

    data = copy / "model.onnx.data"
    with data.open("r+b") as fh:  # one byte flipped, same size: only the hash can tell
        fh.seek(data.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BuildVerificationError, match=r"model\.onnx\.data differs from the card"):
        verify_build(copy, name=MODEL, source_sha256=sha)
    with data.open("r+b") as fh:
        fh.seek(data.stat().st_size // 2)
        fh.write(byte)
    verify_build(copy, name=MODEL, source_sha256=sha)  # restored: whole again

    cfg = copy / "genai_config.json"
    original = cfg.read_bytes()
    cfg.write_bytes(original[:-10])
    with pytest.raises(BuildVerificationError, match=r"genai_config\.json has \d+ bytes"):
        verify_build(copy, name=MODEL, source_sha256=sha)
    cfg.unlink()
    with pytest.raises(BuildVerificationError, match=r"genai_config\.json is missing"):
        verify_build(copy, name=MODEL, source_sha256=sha)
    cfg.write_bytes(original)
    verify_build(copy, name=MODEL, source_sha256=sha)

    with pytest.raises(BuildVerificationError, match="built from a different 'smollm2-135m' file") as err:
        verify_build(copy, name=MODEL, source_sha256="0" * 64)
    assert "triage models build smollm2-135m" in str(err.value)
    (copy / CARD_FILE).unlink()
    with pytest.raises(BuildVerificationError, match=f"no {CARD_FILE}"):
        verify_build(copy, name=MODEL, source_sha256=sha)


def test_an_unbuilt_model_names_the_build_command(tmp_path, monkeypatch):
    from triage.lm.onnx_engine import load_onnx_lm

    monkeypatch.setenv("TRIAGE_CACHE_DIR", str(tmp_path / "empty-cache"))
    get_settings.cache_clear()  # conftest's autouse fixture puts the test cache back afterwards
    resolved = resolve_model(MODEL)  # the GGUF is in site-packages: resolves under any cache
    with pytest.raises(ModelNotBuiltError, match="run `triage models build smollm2-135m`"):
        find_build(resolved, resolved.sha256())
    with pytest.raises(ModelNotBuiltError, match="triage models build smollm2-135m"):
        load_onnx_lm(resolved)  # what get_local_lm runs: refused before anything loads
    assert not (tmp_path / "empty-cache" / "models" / "onnx").exists()  # and nothing was built


# -- 3. one prefill for probing and answering -----------------------------------------------------


def _snap(lm) -> dict:
    return dict(vars(lm.stats))


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


@pytest.mark.slow
def test_the_prefill_that_probes_is_the_prefill_that_answers(lm):
    msgs = [{"role": "user", "content": "Name the largest planet of the solar system."}]
    lm.forget_prefills()
    s0 = _snap(lm)
    pre = lm.prefill(msgs)
    s1 = _snap(lm)
    assert _delta(s0, s1)["prefills"] == 1 and _delta(s0, s1)["forwards"] == 1
    assert pre.hidden_final.shape == (576,) and pre.hidden_middle.shape == (576,)
    out = lm.generate(msgs, max_tokens=8, temperature=0)
    d = _delta(s1, _snap(lm))
    assert out.prefill_reused and d["prefills"] == 0 and d["prefill_reuses"] == 1
    assert d["forwards"] == out.completion_tokens - 1  # decode steps only: the prompt ran once

    lm.forget_prefills()
    s2 = _snap(lm)
    fresh = lm.generate(msgs, max_tokens=8, temperature=0)
    d = _delta(s2, _snap(lm))
    assert not fresh.prefill_reused and d["prefill_reuses"] == 0
    assert d["forwards"] == fresh.completion_tokens  # the prompt run + the decode steps
    assert [t.token_id for t in fresh.tokens] == [t.token_id for t in out.tokens] and fresh.text == out.text

    # the stored generator was rewound to its prompt: the same prefill answers again, identically
    again = lm.generate(msgs, max_tokens=8, temperature=0, prefill=pre)
    assert again.prefill_reused and again.text == out.text


@pytest.mark.slow
def test_a_chat_sharing_a_prefix_continues_from_the_stored_prefill(lm):
    first = [{"role": "user", "content": "Count from one to five."}]
    longer = [*first, {"role": "assistant", "content": "One, two, three, four, five."},
              {"role": "user", "content": "And backwards?"}]  # `first`'s prompt is its prefix
    other = [{"role": "user", "content": "Count from one to nine."}]  # shares `first` up to "to"
    lm.forget_prefills()
    ref = {i: lm.generate(m, max_tokens=8, temperature=0).text for i, m in enumerate((first, longer, other))}
    pre = lm.prefill(first)
    s0 = _snap(lm)
    out = lm.generate(longer, max_tokens=8, temperature=0, prefill=pre)
    d = _delta(s0, _snap(lm))
    assert out.prefill_reused and d["prefill_reuses"] == 1 and d["prefills"] == 0
    assert d["forwards"] == 1 + out.completion_tokens - 1  # the rest of the prompt once, then decode
    assert out.text == ref[1]
    # rewound to `first`'s prompt afterwards: `first` continues from it, identically
    assert lm.generate(first, max_tokens=8, temperature=0).prefill_reused
    s1 = _snap(lm)
    diverged = lm.generate(other, max_tokens=8, temperature=0, prefill=pre)  # rewinds below the prompt
    assert diverged.prefill_reused and diverged.text == ref[2]
    assert _delta(s1, _snap(lm))["forwards"] == 1 + diverged.completion_tokens - 1
    # that generator now holds another prompt: `first` prefills afresh, still correctly
    again = lm.generate(first, max_tokens=8, temperature=0)
    assert not again.prefill_reused and again.text == ref[0]

    # onnxruntime-genai gives wrong logits after two rewinds with no append between: a one-token
    # answer rewinds the generator to its prompt and appends nothing, so a diverging chat must not
    # rewind it again - it prefills afresh, and the prefill keeps its generator
    pre = lm.prefill(first)
    assert lm.generate(first, max_tokens=8, temperature=0).text == ref[0]
    assert lm.generate(first, max_tokens=1, temperature=0).prefill_reused
    fallback = lm.generate(other, max_tokens=8, temperature=0, prefill=pre)
    assert not fallback.prefill_reused and fallback.text == ref[2]
    kept = lm.generate(first, max_tokens=8, temperature=0, prefill=pre)
    assert kept.prefill_reused and kept.text == ref[0]


# -- 7. two generations on one stored prefill at once -------------------------------------------


@pytest.mark.slow
def test_two_threads_on_one_stored_prefill_do_not_share_a_generator(lm):
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    lm.forget_prefills()
    expected = lm.generate(msgs, max_tokens=10, temperature=0).text
    lm.prefill(msgs)
    both_started = threading.Barrier(2, timeout=60)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            stream = lm.stream(msgs, max_tokens=10, temperature=0)
            events = iter(stream)
            next(events)  # each holds a generator now; neither goes on before the other has one
            both_started.wait()
            for _ in events:
                pass
            results[i] = stream.result
        except BaseException as exc:  # noqa: BLE001 - reported below
            both_started.abort()
            errors.append(exc)

    s0 = _snap(lm)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert [results[i].text for i in range(2)] == [expected, expected]
    assert sorted(results[i].prefill_reused for i in range(2)) == [False, True]
    assert _delta(s0, _snap(lm))["prefill_reuses"] == 1
    # the reused generator went back to its prefill: the next generation reuses it again
    assert lm.generate(msgs, max_tokens=10, temperature=0).prefill_reused


# -- 4. serving imports neither torch nor transformers --------------------------------------------


@pytest.mark.slow
def test_onnx_serving_runs_without_torch_or_transformers(built_local_model):
    code = (
        "import sys\n"
        "class Block:\n"
        "    tried = []\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            Block.tried.append(name)\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from triage.lm import get_local_lm\n"
        "lm = get_local_lm('smollm2-135m')\n"
        "assert lm.engine == 'onnx', lm.engine\n"
        "msgs = [{'role': 'user', 'content': 'What is 2 + 2?'}]\n"
        "pre = lm.prefill(msgs)\n"
        "out = lm.generate(msgs, max_tokens=4, temperature=0)\n"
        "assert out.prefill_reused and out.completion_tokens >= 1 and pre.hidden_final.shape == (576,)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "assert not Block.tried, Block.tried\n"
        "print('OK', repr(out.text))\n"
    )
    env = {**os.environ, "TRIAGE_CACHE_DIR": str(TEST_CACHE_DIR)}
    env.pop("TRIAGE_LM_ENGINE", None)  # the default engine
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


# -- 5. serving refuses an unbuilt model, and never builds it -------------------------------------


@pytest.mark.slow
def test_serve_refuses_an_unbuilt_local_model_with_one_line(tmp_path):
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    policy = tmp_path / "unbuilt.yaml"
    policy.write_text(
        "name: unbuilt\n"
        f"probe: {TEST_CACHE_DIR / 'probes' / 'default'}\n"  # a probe that loads; only the model is missing
        "strategies:\n  only:\n    model: local/smollm2-135m\n"
        "tiers: {easy: only, normal: only, hard: only}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_SIDECAR_", "TRIAGE_LM_ENGINE"))}
    env.update(TRIAGE_CACHE_DIR=str(empty), TRIAGE_SIDECAR_LEDGER_URL=str(tmp_path / "l.sqlite"))
    proc = subprocess.run([sys.executable, "-m", "triage.router.cli.main", "serve", "--policy", str(policy),
                           "--port", "18931"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "strategy 'only'" in lines[0] and "run `triage models build smollm2-135m`" in lines[0], lines[0]
    assert "triage-router[local]" in lines[0], lines[0]  # printed as text, not eaten as rich markup
    assert not (empty / "models" / "onnx").exists()  # serving never builds


# -- 6. `triage models build|list` ----------------------------------------------------------------


def test_models_build_verifies_an_existing_build(build_dir):
    result = runner.invoke(app, ["models", "build", MODEL])
    assert result.exit_code == 0, result.output
    rows = [json.loads(ln) for ln in result.stdout.splitlines() if ln.strip()]
    assert len(rows) == 1 and rows[0]["model"] == MODEL and rows[0]["built"] is False
    assert Path(rows[0]["folder"]) == build_dir
    assert rows[0]["bytes"] == sum(p.stat().st_size for p in build_dir.iterdir() if p.name != CARD_FILE)


def test_models_build_of_an_unknown_model_is_one_line_exit_2():
    result = runner.invoke(app, ["models", "build", "no-such-model"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no-such-model" in lines[0] and "smollm2-135m" in lines[0], result.output
    assert "Traceback" not in result.output


def test_models_list_shows_the_three_models(build_dir):
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in (json.loads(ln) for ln in result.stdout.splitlines() if ln.strip())}
    assert set(rows) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert rows[MODEL]["installed"] is True and rows[MODEL]["built"] is True
    assert Path(rows[MODEL]["folder"]) == build_dir


def test_a_build_cut_after_k_layers_has_k_layers_its_own_folder_and_answers(build_dir, lm):
    """``build_onnx(layers=K)`` (the proxy-depth study's build): its own folder next to the serving
    build, a card that says K, a graph with K decoder layers, and an engine that loads and prefills."""
    import re

    import numpy as np
    import onnx
    from triage.lm.onnx_build import build_onnx
    from triage.lm.onnx_card import read_card
    from triage.lm.onnx_engine import OnnxLM

    cut = build_onnx(MODEL, layers=2)
    assert cut.folder != build_dir and cut.folder.parent == build_dir.parent and cut.folder.name.endswith("-L2")
    shape = cut.card.data["shape"]
    assert (cut.card.n_layers, cut.card.middle_layer, shape["source_layers"]) == (2, 1, 30)
    assert "num_hidden_layers=2" in cut.card.data["builder"]["extra_options"]
    assert "aux_hidden_state_layers=1" in cut.card.data["builder"]["extra_options"]
    graph = onnx.load(str(cut.folder / "model.onnx"), load_external_data=False).graph
    attn_layers = {int(m.group(1)) for n in graph.node for m in [re.search(r"/model/layers\.(\d+)/attn", n.name)] if m}
    assert attn_layers == {0, 1}
    full = read_card(build_dir)
    assert full.n_layers == 30 and not any(o.startswith("num_hidden_layers") for o in full.data["builder"]["extra_options"])
    assert build_onnx(MODEL, layers=2).built is False  # verified, not rebuilt

    msgs = [{"role": "user", "content": "Name the largest planet of the solar system."}]
    shallow = OnnxLM(resolve_model(MODEL), cut.card, threads=2)
    pre_cut, pre_full = shallow.prefill(msgs), lm.prefill(msgs)
    assert pre_cut.hidden_final.shape == pre_full.hidden_final.shape == (576,)
    assert pre_cut.n_prompt_tokens == pre_full.n_prompt_tokens
    assert not np.allclose(pre_cut.hidden_final, pre_full.hidden_final, atol=1e-2)


@pytest.mark.parametrize("layers", [0, -1, 31, 2.5, True])
def test_a_cut_build_with_an_impossible_depth_is_refused_before_building(layers, build_dir):
    from triage.lm.onnx_build import build_onnx

    with pytest.raises(ValueError, match="layers"):
        build_onnx(MODEL, layers=layers)
    assert not list(build_dir.parent.glob(f"*-L{layers}")) and not list(build_dir.parent.glob(".*.tmp"))


# -- 7. disk: refused up front, in one line ------------------------------------------------------


def test_require_free_space_names_the_step_the_folder_and_both_sizes(tmp_path):
    from triage.lm.specs import InsufficientDiskError, require_free_space

    free = shutil.disk_usage(tmp_path).free
    require_free_space(tmp_path / "not" / "made" / "yet", free // 2, "a small step")  # walks up to tmp_path
    with pytest.raises(InsufficientDiskError) as err:
        require_free_space(tmp_path / "models", free + 10**12, "building x as int4 ONNX")
    text = str(err.value)
    assert "building x as int4 ONNX" in text and str(tmp_path / "models") in text
    assert f"{(free + 10**12) / 1e9:.1f} GB" in text and "TRIAGE_CACHE_DIR" in text


@pytest.mark.slow
def test_a_build_on_a_full_disk_is_one_line_exit_2_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    """Fault injection: the disk reports 1 MB free. The de-quantized folder is not written, the
    build says why and what to do, and nothing half-written is left in the cache."""
    import triage.lm.specs as specs

    real = shutil.disk_usage
    monkeypatch.setattr(specs.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1_000_000))
    monkeypatch.setenv("TRIAGE_CACHE_DIR", str(tmp_path))
    get_settings.cache_clear()
    result = runner.invoke(app, ["models", "build", MODEL])
    get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    # progress lines come first (the de-quantization ran); the refusal is one line, the last
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    assert "GB free" in errors[0] and "TRIAGE_CACHE_DIR" in errors[0] and "Traceback" not in result.output
    models = tmp_path / "models"
    leftovers = [p.name for p in models.rglob("*")] if models.exists() else []
    assert leftovers == [] or all(p == "onnx" for p in leftovers), leftovers
