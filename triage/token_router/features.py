"""Router input features, computed identically at label time (teacher forcing) and at decode time.

For one position: the small model's last hidden state (final layer, after the final norm), the
input embedding of the token it proposes (its greedy token), its top-k next-token log-probabilities
(sorted) and the entropy of its next-token distribution. Layout (R2R, section 4.2, at small scale):

    [hidden (H) | token embedding (H) | top-k log-probs (k) | entropy (1)]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.lm.decoding import log_softmax_np

FEATURE_VERSION = "tr-features-1"
DEFAULT_TOP_K = 16


def feature_dim(hidden_size: int, top_k: int = DEFAULT_TOP_K) -> int:
    return 2 * hidden_size + top_k + 1


def entropy_from_logits(logits: Any) -> Any:
    """Entropy (nats) over the last dimension of a logits tensor (torch) or array (numpy)."""
    if isinstance(logits, np.ndarray):
        logp = log_softmax_np(logits)
        return -(np.exp(logp) * logp).sum(axis=-1)
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def router_features(hidden: Any, logits: Any, token_embedding: Any, top_k: int = DEFAULT_TOP_K) -> Any:
    """Features for ``n`` positions: (n, H), (n, V), (n, H) -> float32 numpy (n, 2H + k + 1).

    Torch tensors (transformers engine) or numpy arrays (ONNX engine: :func:`router_features_np`)."""
    if isinstance(logits, np.ndarray):
        return router_features_np(hidden, logits, token_embedding, top_k)
    import torch

    with torch.inference_mode():
        logp = torch.log_softmax(logits.float(), dim=-1)
        ent = -(logp.exp() * logp).sum(dim=-1, keepdim=True)
        top = torch.topk(logp, top_k, dim=-1).values
        feats = torch.cat([hidden.float(), token_embedding.float(), top, ent], dim=-1)
    return feats.numpy().astype("float32", copy=False)


def router_features_np(hidden: np.ndarray, logits: np.ndarray, token_embedding: np.ndarray,
                       top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """The numpy twin of :func:`router_features` (same layout, top-k sorted descending)."""
    logp = log_softmax_np(logits)
    ent = -(np.exp(logp) * logp).sum(axis=-1, keepdims=True)
    top = np.partition(logp, logp.shape[-1] - top_k, axis=-1)[..., -top_k:]
    top = -np.sort(-top, axis=-1)
    parts = [np.asarray(hidden, dtype=np.float32), np.asarray(token_embedding, dtype=np.float32), top, ent]
    return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)
