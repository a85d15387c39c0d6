"""Probe heads (train time: scikit-learn / torch) exported to ONNX for the runtime."""

from triage.probes.heads.base import HEADS, Head, available_heads, make_head, register_head

__all__ = ["HEADS", "Head", "available_heads", "make_head", "register_head"]
