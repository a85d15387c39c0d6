"""Feature plug-ins, the lexical features, the ONNX text encoder and the on-disk feature cache."""

from __future__ import annotations

import numpy as np
import pytest

from triage.probes.features import Feature, FeatureCache, FeatureError, cached_transform, make_feature, register_feature
from triage.probes.features.lexical import FEATURE_NAMES, LexicalFeature


class CountingFeature(Feature):
    """Counts how many texts it computed (to prove cache hits do not recompute)."""

    name = "test-counting"
    version = "1"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.computed = 0

    @property
    def dim(self) -> int:
        return 3

    def transform(self, texts):
        self.computed += len(texts)
        return np.array([[len(t) * self.scale, t.count("a"), 1.0] for t in texts], dtype=np.float32)


register_feature(CountingFeature)


def test_registry_and_errors():
    assert make_feature("lexical").dim == len(FEATURE_NAMES)
    with pytest.raises(FeatureError, match="unknown feature 'nope'"):
        make_feature("nope")
    with pytest.raises(FeatureError, match="bad parameters"):
        make_feature("lexical", colour="red")
    with pytest.raises(TypeError, match="name"):
        register_feature(type("NoName", (Feature,), {"dim": 1, "transform": lambda s, t: None}))


def test_lexical_values():
    text = "Tom has 12 apples and buys 3.5 kg more at $2 each. How many?\n```def f(): return 1```"
    row = dict(zip(FEATURE_NAMES, LexicalFeature().transform_checked([text, ""])[0], strict=True))
    assert row["question_marks"] == 1.0
    assert row["log_numbers"] == pytest.approx(np.log1p(4), abs=1e-5)  # 12, 3.5, $2, 1 (in return 1)
    assert row["log_decimals_fractions"] == pytest.approx(np.log1p(1), abs=1e-5)
    assert row["log10_max_number"] == pytest.approx(np.log10(13), abs=1e-5)
    assert row["log_code_markers"] > 0
    assert LexicalFeature().transform([""]).sum() == 0.0


def test_transform_checked_rejects_bad_shapes():
    class Broken(CountingFeature):
        name = "test-broken"

        def transform(self, texts):
            return np.zeros((len(texts), 2), dtype=np.float32)

    with pytest.raises(FeatureError, match="shape"):
        Broken().transform_checked(["a"])


def test_cache_hit_avoids_recompute(tmp_path):
    texts = ["alpha", "beta", "alpha", "gamma"]
    f = CountingFeature()
    first = FeatureCache(f, tmp_path).transform(texts)
    assert f.computed == 3  # the duplicate is computed once
    g = CountingFeature()  # a new process would build a new instance
    cache = FeatureCache(g, tmp_path)
    second = cache.transform(texts + ["delta"])
    assert g.computed == 1 and cache.stats.hits == 4 and cache.stats.misses == 1
    np.testing.assert_array_equal(second[:4], first)
    # other params (or another version) never read these rows
    h = CountingFeature(scale=2.0)
    third = cached_transform(h, texts, cache_dir=tmp_path)
    assert h.computed == 3 and third[0, 0] == 2 * first[0, 0]


def test_cache_ignores_corrupted_shards(tmp_path):
    f = CountingFeature()
    FeatureCache(f, tmp_path).transform(["one", "two"])
    cache = FeatureCache(CountingFeature(), tmp_path)
    for shard in cache.folder.glob("shard-*.npz"):
        shard.write_bytes(b"garbage")
    g = CountingFeature()
    out = FeatureCache(g, tmp_path).transform(["one", "two"])
    assert g.computed == 2 and out.shape == (2, 3)


def test_cache_compacts_many_shards(tmp_path):
    f = CountingFeature()
    for i in range(20):
        FeatureCache(f, tmp_path).transform([f"text {i}"])
    cache = FeatureCache(CountingFeature(), tmp_path)
    assert len(list(cache.folder.glob("shard-*.npz"))) <= 17
    assert len(cache) == 20


def test_text_encoder_matches_torch_reference_and_is_batch_independent():
    from triage.probes.encoder.export import reference_embeddings
    from triage.probes.encoder.export import ensure_encoder
    from triage.probes.encoder.runtime import TextEncoder

    texts = ["What is 2+2?", "Natalia sold clips to 48 of her friends in April. How many in May?", "word " * 300]
    ref = reference_embeddings(texts)
    folder = ensure_encoder()
    fp32 = TextEncoder(folder, variant="fp32").encode(texts)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)
    int8 = TextEncoder(folder, variant="int8")
    emb = int8.encode(texts)
    assert (np.sum(emb * ref, axis=1) > 0.98).all()  # int8 keeps the direction
    singles = np.stack([int8.encode([t])[0] for t in texts])
    np.testing.assert_array_equal(emb, singles)  # a text's embedding never depends on its batch
    assert int8.tokenize([texts[2]])[0].shape[1] == 128  # truncation
    # the shallow variants: the first layers of the same weights, int8
    for variant, layers in (("int8-l3", 3), ("int8-l2", 2)):
        shallow = TextEncoder(folder, variant=variant).encode(texts)
        assert (np.sum(shallow * reference_embeddings(texts, layers=layers), axis=1) > 0.98).all()
        assert (np.sum(shallow * ref, axis=1) < 0.999).any()  # it is not the full model
    # no layer (the fast probe's): the mean-pooled embedding layer, fp32, so torch's values exactly
    bare = TextEncoder(folder, variant="l0").encode(texts)
    np.testing.assert_allclose(bare, reference_embeddings(texts, layers=0), atol=1e-5)
    assert (np.sum(bare * ref, axis=1) < 0.99).all()


def test_text_feature_identity_names_the_encoder():
    f = make_feature("text", aux=False)
    ident = f.identity()
    assert ident["params"] == {"variant": "int8-l2", "max_tokens": 128, "aux": False}
    assert len(ident["encoder"]["sha256"]["model.l2.int8.onnx"]) == 64
    assert make_feature("text", aux=False, variant="int8").identity()["encoder"]["sha256"].keys() == {
        "model.int8.onnx", "tokenizer.json"}
    assert f.dim == 384 + len(FEATURE_NAMES)
    assert make_feature("text").dim == f.dim + 12


def test_aux_regressor_onnx_matches_sklearn(tmp_path):
    """The GSM8K solution-profile regressors: train on a few train-split rows, compare runtimes."""
    import json

    from triage.probes.features.difficulty_aux import TARGETS, AuxRegressor, solution_profile
    from triage.probes.features.difficulty_aux_build import train_aux_model
    from triage.settings import get_settings

    rows = (get_settings().data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:80]
    small = tmp_path / "train.jsonl"
    small.write_text("\n".join(rows) + "\n")
    folder = train_aux_model(tmp_path / "aux", train_file=small)
    card = json.loads((folder / "aux.json").read_text())
    assert card["training_data"]["rows"] == 80 and card["targets"] == list(TARGETS)
    prof = solution_profile(json.loads(rows[0])["answer"])  # "48/2 = <<48/2=24>>24 ... <<48+24=72>>72 #### 72"
    assert prof[:2] == [2.0, pytest.approx(np.log10(73))] and prof[4] == 1.0 and prof[7] == 1.0
    base = cached_transform(make_feature("text", aux=False), ["How many apples?"])
    out = AuxRegressor(folder).predict(base)
    assert out.shape == (1, len(TARGETS)) and np.isfinite(out).all()


_CHAR_SAMPLES = ["", "Tom has 12 apples and BUYS 3 more?", "x" * 500, "ÉCOLE ١٢٣ ²³ ½ Ünïcödé 日本語 A1", "\t\n 0\x7f~"]


@pytest.mark.parametrize("text", _CHAR_SAMPLES)
def test_character_counts_are_the_str_predicates(text: str) -> None:
    """The ASCII fast path counts exactly what str.isdigit/isalpha/isupper count (the head was
    trained on those values), and non-ASCII text takes the per-character definition."""
    from triage.probes.features.lexical import _char_counts

    assert _char_counts(text) == (sum(c.isdigit() for c in text), sum(c.isalpha() for c in text),
                                  sum(c.isupper() for c in text), sum(ord(c) > 127 for c in text))


def test_character_counts_match_on_every_ascii_character() -> None:
    from triage.probes.features.lexical import _char_counts

    for code in range(128):
        c = chr(code)
        assert _char_counts(c * 3) == (3 * c.isdigit(), 3 * c.isalpha(), 3 * c.isupper(), 0), repr(c)


def test_an_unknown_encoder_variant_is_one_clear_error():
    from triage.probes.encoder.runtime import EncoderError

    f = make_feature("text", aux=False, variant="l9")
    for use in (f.identity, f.artifact_files, lambda: f.transform(["What is 2+2?"])):
        with pytest.raises(EncoderError, match=r"unknown encoder variant 'l9'; use one of .*int8-l2.*l0"):
            use()
