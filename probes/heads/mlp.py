"""A small torch MLP head: standardise -> Linear -> GELU -> dropout -> (success logits, tier logits).

One shared hidden layer for every label (multi-task: the tier and the success labels share what
makes a query hard). Trained full-batch with AdamW; exported with ``torch.onnx.export(dynamo=False)``
with the standardisation and the sigmoid/softmax inside the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.probes.heads.base import INPUT_NAME, ONNX_OPSET, Head, register_head
from triage.probes.types import TIERS


@register_head
class MLPHead(Head):
    name = "mlp"

    def __init__(
        self,
        hidden: int = 64,
        dropout: float = 0.3,
        epochs: int = 200,
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        tier_weight: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.tier_weight = tier_weight
        self.seed = seed

    def _module(self, d: int, m: int, mean: np.ndarray, std: np.ndarray) -> Any:
        import torch

        class Net(torch.nn.Module):
            def __init__(self, hidden: int, dropout: float) -> None:
                super().__init__()
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
                self.register_buffer("inv_std", torch.tensor(1.0 / std, dtype=torch.float32))
                self.trunk = torch.nn.Sequential(
                    torch.nn.Linear(d, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout)
                )
                self.success = torch.nn.Linear(hidden, m)
                self.tier = torch.nn.Linear(hidden, len(TIERS))

            def logits(self, x: Any) -> tuple[Any, Any]:
                h = self.trunk((x - self.mean) * self.inv_std)
                return self.success(h), self.tier(h)

            def forward(self, x: Any) -> tuple[Any, Any]:
                s, t = self.logits(x)
                return torch.sigmoid(s), torch.softmax(t, dim=1)

        return Net(self.hidden, self.dropout)

    def fit(self, X: np.ndarray, success: np.ndarray, tier: np.ndarray) -> "MLPHead":
        import torch

        torch.manual_seed(self.seed)
        X = np.asarray(X, dtype=np.float32)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        self.n_features_in_ = X.shape[1]
        self.n_labels_ = success.shape[1]
        net = self._module(X.shape[1], success.shape[1], mean, std)
        xt = torch.from_numpy(X)
        st = torch.from_numpy(success.astype(np.float32))
        tt = torch.from_numpy(tier.astype(np.int64))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        bce = torch.nn.BCEWithLogitsLoss()
        ce = torch.nn.CrossEntropyLoss()
        net.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                opt.zero_grad()
                s_logit, t_logit = net.logits(xt)
                loss = bce(s_logit, st) + self.tier_weight * ce(t_logit, tt)
                loss.backward()
                opt.step()
        net.eval()
        self.net_ = net
        return self

    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            s, t = self.net_(torch.from_numpy(np.asarray(X, dtype=np.float32)))
        return s.numpy().astype(np.float32), t.numpy().astype(np.float32)

    def to_onnx(self) -> Any:
        import io
        import warnings

        import onnx
        import torch

        buf = io.BytesIO()
        dummy = torch.zeros((2, self.n_features_in_), dtype=torch.float32)
        with torch.no_grad(), warnings.catch_warnings():
            # dynamo=False is deliberate (small static graph, no onnxscript needed): hush its notice
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                self.net_,
                (dummy,),
                buf,
                input_names=[INPUT_NAME],
                output_names=["success", "tier"],
                dynamic_axes={INPUT_NAME: {0: "batch"}, "success": {0: "batch"}, "tier": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        return onnx.load_from_string(buf.getvalue())
