"""Build what the text features read - the exported encoder, the aux regressors, the question PCA -
when it is missing (build time: torch and scikit-learn).

Training and offline evaluation call :func:`build_feature_artifacts` before computing features; the
request path never does (it loads, or fails with the command that builds).
"""

from __future__ import annotations

from collections.abc import Iterable

from triage.probes.features.base import Feature


def build_feature_artifacts(features: Iterable[Feature]) -> None:
    from triage.probes.encoder.export import ensure_encoder
    from triage.probes.features.difficulty_aux_build import ensure_aux_model, ensure_question_pca
    from triage.probes.features.text_encoder import MiniLMFeature, TextFeature

    for feature in features:
        if isinstance(feature, MiniLMFeature) and not feature.encoder_dir:
            ensure_encoder()
        if isinstance(feature, TextFeature):
            if feature.aux and not feature.aux_dir:
                ensure_aux_model(variant=feature.variant)
            if feature.pca and not feature.pca_dir:
                ensure_question_pca(variant=feature.variant)
