"""Logistic-regression head: one ``StandardScaler + LogisticRegression`` pipeline per label.

Each success label gets a binary model and the tier a multinomial one. skl2onnx converts every
pipeline (``zipmap=False``); :func:`merge_label_graphs` joins them into one graph with the shared
``features`` input, so the runtime makes a single ``session.run``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.probes.heads.base import INPUT_NAME, ONNX_OPSET, Head, register_head
from triage.probes.types import TIERS


class _Constant:
    """Stand-in for a label that has one class in the training rows."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = np.asarray(probs, dtype=np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.probs, (X.shape[0], 1))


@register_head
class LogRegHead(Head):
    name = "logreg"

    def __init__(self, C: float = 0.05, max_iter: int = 2000, class_weight: str | None = None,
                 tier_C: float | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.tier_C = tier_C  # the tier model's own regularisation (None: C); the auto head chooses it

    def _pipeline(self, C: float | None = None) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C if C is None else C, max_iter=self.max_iter, class_weight=self.class_weight),
        )

    def _tier_pipeline(self) -> Any:
        return self._pipeline(self.tier_C)

    def fit(self, X: np.ndarray, success: np.ndarray, tier: np.ndarray) -> "LogRegHead":
        X = np.asarray(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        self.success_models_: list[Any] = []
        for j in range(success.shape[1]):
            y = success[:, j].astype(int)
            if np.unique(y).size < 2:
                self.success_models_.append(_Constant(np.array([1.0 - y[0], float(y[0])])))
            else:
                self.success_models_.append(self._pipeline().fit(X, y))
        t = tier.astype(int)
        present = np.unique(t)
        if present.size < 2:
            probs = np.zeros(len(TIERS), dtype=np.float32)
            probs[present[0]] = 1.0
            self.tier_model_: Any = _Constant(probs)
            self.tier_classes_ = np.arange(len(TIERS))
        else:
            self.tier_model_ = self._tier_pipeline().fit(X, t)
            self.tier_classes_ = present
        return self

    def fit_logged(self, X: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   tier_targets: np.ndarray | None) -> "LogRegHead":
        """Fit from logged bandit data (:mod:`triage.probes.bandit`).

        ``rows[j]`` = (row indices, 0/1 outcomes, sample weights) of label j: each success model sees
        only the queries its label was observed on, importance-weighted. ``tier_targets`` (n, 3) are
        soft tier labels (probabilities); the multinomial model fits them as three weighted copies of
        every row (the cross-entropy to a soft target).
        """
        X = np.asarray(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        self.success_models_ = []
        for idx, y, w in rows:
            y = np.asarray(y).astype(int)
            if np.unique(y).size < 2:
                self.success_models_.append(_Constant(np.array([1.0 - y[0], float(y[0])])))
            else:
                self.success_models_.append(self._pipeline().fit(X[idx], y, logisticregression__sample_weight=w))
        if tier_targets is None:  # cross-fitting folds need the success models only
            self.tier_model_ = _Constant(np.full(len(TIERS), 1.0 / len(TIERS), dtype=np.float32))
            self.tier_classes_ = np.arange(len(TIERS))
            return self
        n = X.shape[0]
        t = np.repeat(np.arange(len(TIERS)), n)
        w = np.asarray(tier_targets, dtype=np.float64).T.ravel()
        keep = w > 1e-6
        present = np.unique(t[keep])
        if present.size < 2:
            probs = np.zeros(len(TIERS), dtype=np.float32)
            probs[present[0] if present.size else 1] = 1.0
            self.tier_model_ = _Constant(probs)
            self.tier_classes_ = np.arange(len(TIERS))
        else:
            Xt = np.tile(X, (len(TIERS), 1))[keep]
            self.tier_model_ = self._tier_pipeline().fit(Xt, t[keep], logisticregression__sample_weight=w[keep])
            self.tier_classes_ = present
        return self

    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        success = np.column_stack([m.predict_proba(X)[:, 1] for m in self.success_models_])
        tier = np.zeros((X.shape[0], len(TIERS)), dtype=np.float32)
        tier[:, self.tier_classes_] = self.tier_model_.predict_proba(X)
        return success.astype(np.float32), tier

    def to_onnx(self) -> Any:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        def convert(model: Any) -> Any:
            if isinstance(model, _Constant):
                return model.probs
            lr = model.steps[-1][1]
            return to_onnx(
                model,
                initial_types=[(INPUT_NAME, FloatTensorType([None, self.n_features_in_]))],
                options={id(lr): {"zipmap": False}},
                target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3},
            )

        selector = np.zeros((len(self.tier_classes_), len(TIERS)), dtype=np.float32)
        selector[np.arange(len(self.tier_classes_)), self.tier_classes_] = 1.0
        return merge_label_graphs(
            [convert(m) for m in self.success_models_], convert(self.tier_model_), selector, self.n_features_in_
        )


def merge_label_graphs(success: list[Any], tier: Any, tier_selector: np.ndarray, dim: int) -> Any:
    """One ONNX model from per-label classifiers (``ModelProto`` with a ``probabilities`` output,
    or a constant probability row).

    ``success`` column j = class-1 probability of ``success[j]``; ``tier`` = ``tier`` probabilities
    times ``tier_selector`` (maps the classes seen in training onto the three tiers).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    opsets: dict[str, int] = {"": ONNX_OPSET}

    def splice(model: Any, prefix: str) -> str:
        """Copy ``model``'s graph in with every name prefixed; return its probabilities edge."""
        g = model.graph
        for op in model.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)

        def rename(name: str) -> str:
            return name if name in ("", INPUT_NAME) else prefix + name

        for init in g.initializer:
            new = onnx.TensorProto()
            new.CopyFrom(init)
            new.name = rename(init.name)
            inits.append(new)
        for node in g.node:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = prefix + (node.name or node.op_type)
            del new.input[:]
            new.input.extend(rename(x) for x in node.input)
            del new.output[:]
            new.output.extend(rename(x) for x in node.output)
            nodes.append(new)
        probs = [o.name for o in g.output if o.name == "probabilities"]
        if not probs:
            raise ValueError("converted classifier has no 'probabilities' output")
        return rename(probs[0])

    def constant_rows(probs: np.ndarray, prefix: str) -> str:
        """(n, k) edge equal to ``probs`` on every row: features @ 0 + probs."""
        zeros = numpy_helper.from_array(np.zeros((dim, probs.shape[0]), dtype=np.float32), prefix + "zeros")
        bias = numpy_helper.from_array(probs.astype(np.float32).reshape(1, -1), prefix + "bias")
        inits.extend([zeros, bias])
        nodes.append(helper.make_node("MatMul", [INPUT_NAME, prefix + "zeros"], [prefix + "mm"], name=prefix + "mm"))
        nodes.append(helper.make_node("Add", [prefix + "mm", prefix + "bias"], [prefix + "probs"], name=prefix + "add"))
        return prefix + "probs"

    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "class1_index")
    inits.append(one)
    columns = []
    for j, model in enumerate(success):
        prefix = f"s{j}_"
        edge = constant_rows(model, prefix) if isinstance(model, np.ndarray) else splice(model, prefix)
        col = f"{prefix}p1"
        nodes.append(helper.make_node("Gather", [edge, "class1_index"], [col], axis=1, name=f"{prefix}gather"))
        columns.append(col)
    if len(columns) == 1:
        nodes.append(helper.make_node("Identity", columns, ["success"], name="success_identity"))
    else:
        nodes.append(helper.make_node("Concat", columns, ["success"], axis=1, name="success_concat"))
    tier_edge = constant_rows(tier, "t_") if isinstance(tier, np.ndarray) else splice(tier, "t_")
    inits.append(numpy_helper.from_array(tier_selector.astype(np.float32), "tier_selector"))
    nodes.append(helper.make_node("MatMul", [tier_edge, "tier_selector"], ["tier"], name="tier_select"))

    graph = helper.make_graph(
        nodes,
        "triage_probe_head",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, dim])],
        [
            helper.make_tensor_value_info("success", TensorProto.FLOAT, [None, len(success)]),
            helper.make_tensor_value_info("tier", TensorProto.FLOAT, [None, len(TIERS)]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())], producer_name="triage"
    )
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model
