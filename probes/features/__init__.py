"""Query features: a plug-in contract (base), built-in features (one module each) and a disk cache."""

from triage.probes.features.base import (
    Feature,
    FeatureError,
    available_features,
    get_feature_class,
    make_feature,
    register_feature,
)
from triage.probes.features.cache import FeatureCache, cached_transform

__all__ = [
    "Feature",
    "FeatureCache",
    "FeatureError",
    "available_features",
    "cached_transform",
    "get_feature_class",
    "make_feature",
    "register_feature",
]
