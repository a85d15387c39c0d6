"""The MiniLM sentence encoder: a one-time ONNX export (torch, train time) and an onnxruntime runtime.

``triage.probes.encoder.runtime`` is on the request path and imports numpy, onnxruntime and tokenizers
only; ``triage.probes.encoder.export`` needs torch + transformers and is imported lazily when the
exported file is missing.
"""
