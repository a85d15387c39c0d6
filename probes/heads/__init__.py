"""Probe heads (train time: scikit-learn / torch) exported to ONNX for the runtime."""

from triage.probes.heads.base import Head, available_heads, make_head

__all__ = ["Head", "available_heads", "make_head"]
