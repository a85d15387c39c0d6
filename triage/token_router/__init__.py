"""Token-level small/large routing (R2R) and reasoning-level hand-off with a local model pair.

Modules: ``pair`` (chunked PyPI GGUFs -> verified cached files -> transformers), ``decode`` (the
routed decoding loop with KV caches kept in step), ``controllers`` (who writes the next token:
small-only, large-only, entropy-threshold, speculative-thinking, token-router), ``features``
(router inputs), ``labels`` (R2R label pipeline on GSM8K train), ``head`` (MLP -> ONNX + card,
onnxruntime runtime), ``runner`` (controller by name; the executor a ``token-routed`` strategy calls).
Importing this package loads no model and no torch.
"""
