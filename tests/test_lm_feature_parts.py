"""The ``lm`` feature's variants (``parts``): identities, layout, and one prefill per query for all.

The whole row keeps the identity it had before ``parts`` existed (so existing caches and probe cards
stay valid); each variant is its own feature whose rows are the whole row's columns, read from the
whole row's cache. Real SmolLM2 (int4 engine) where numbers are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
from triage.probes.features import FeatureCache, FeatureError, make_feature
from triage.probes.features.cache import params_digest
from triage.probes.features.lm_internals import (
    LM_SCALAR_NAMES,
    lm_features_from_prefill,
    query_messages,
)
from triage.probes.training import parse_features

H = 576  # SmolLM2-135M hidden size


def test_parts_are_canonical_and_validated():
    assert make_feature("lm", parts="scalars+final").parts == "final+scalars"
    assert make_feature("lm", parts=" Middle ").parts == "middle"
    for bad in ("", "final+logits", "+", 3):
        with pytest.raises(FeatureError, match="parts"):
            make_feature("lm", parts=bad)


def test_dims_and_names_follow_the_parts():
    dims = {p: make_feature("lm", parts=p).dim for p in ("final", "middle", "scalars", "final+scalars")}
    assert dims == {"final": H, "middle": H, "scalars": len(LM_SCALAR_NAMES), "final+scalars": H + 9}
    assert make_feature("lm").dim == 2 * H + 9
    assert make_feature("lm", parts="scalars").feature_names == list(LM_SCALAR_NAMES)
    assert make_feature("lm", parts="middle+scalars").feature_names[0] == "h_middle_0"


def test_whole_row_keeps_its_identity_and_variants_get_their_own():
    whole = make_feature("lm")
    assert whole.get_params() == {"model": "smollm2-135m"}  # what v1 caches and cards recorded
    assert make_feature("lm", parts="final+middle+scalars").identity() == whole.identity()
    keys = {params_digest(make_feature("lm", parts=p)) for p in ("scalars", "final", "middle", "final+scalars")}
    assert len(keys) == 4 and params_digest(whole) not in keys
    assert make_feature("lm", parts="scalars").get_params() == {"model": "smollm2-135m", "parts": "scalars"}


def test_feature_spec_grammar_reaches_the_parts():
    _, lm = parse_features("text:aux=false,lm:parts=final+scalars;model=smollm2-135m")
    assert (lm.parts, lm.model, lm.dim) == ("final+scalars", "smollm2-135m", H + 9)


@pytest.mark.slow
def test_variant_rows_are_the_whole_rows_columns_from_one_prefill(tmp_path):
    from triage.lm import get_local_lm

    texts = ["Tom has 3 apples and buys 4 more. How many apples does he have?",
             "What is the capital of Australia?"]
    lm = get_local_lm("smollm2-135m")
    direct = np.stack([lm_features_from_prefill(lm.prefill(query_messages(t), keep_state=False)) for t in texts])
    whole = FeatureCache(make_feature("lm")).transform(texts)  # the session's default cache
    np.testing.assert_allclose(whole, direct, rtol=0, atol=1e-5)
    before = lm.stats.prefills
    variant = make_feature("lm", parts="final+scalars")
    rows = FeatureCache(variant, tmp_path).transform(texts)
    assert lm.stats.prefills == before  # read from the whole row's cache, no new prefill
    np.testing.assert_array_equal(rows, whole[:, np.r_[0:H, 2 * H : 2 * H + 9]])
    pre = lm.prefill(query_messages(texts[0]), keep_state=False)
    np.testing.assert_allclose(variant.row_from_prefill(pre), rows[0], rtol=0, atol=1e-5)
