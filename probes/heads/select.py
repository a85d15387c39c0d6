"""``auto``: the head and its regularisation chosen by inner cross-validation on the rows it is fitted on.

Like scikit-learn's ``GridSearchCV``, the choice happens inside :meth:`AutoHead.fit`. So wherever a
head is cross-fitted (:func:`triage.probes.training.cross_fit`, the replay routers), every outer fold
chooses on its own training rows; the rows a figure is computed on never inform the choice.

Score: the mean, over success labels, of the out-of-inner-fold log loss, a proper score (calibration
and ranking both count). Regularisation mattered on the text features: C tuned this way (about
0.005) beat the fixed 0.02 by about 0.02 APGR on RouteLLM GSM8K and was neutral elsewhere. A
candidate within ``tolerance`` of the best loses to a simpler one (smaller C, logreg before mlp), so
noise does not buy a weaker regulariser. When the best C is at an edge of the grid, the search goes
up to ``extend`` steps past it (x2.5 apart): the default probe's 15k rows chose the grid's smallest C.

The tier model is a separate multinomial fit with its own needs: the C that is best for the success
labels can flatten it (the default probe's rows chose C=0.0008, and P(hard) no longer told
"What is 2 + 2?" from a proof). So when logreg wins, its ``tier_C`` is chosen the same way on the
multinomial log loss of the tier labels (same inner folds, same grid and edge extension).

The fitted head is the chosen candidate refitted on every row; :meth:`AutoHead.describe` gives its
kind and parameters plus the selection table for the probe card.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.probes.heads.base import Head, make_head, register_head

DEFAULT_C_GRID: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05)
HEAD_KINDS = ("logreg", "mlp")
_EPS = 1e-4


def _log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    p = np.clip(p.astype(np.float64), _EPS, 1.0 - _EPS)
    loss = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return float(np.average(loss, weights=w))


def _inner_folds(n: int, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    out[rng.permutation(n)] = np.arange(n) % folds
    return out


@register_head
class AutoHead(Head):
    """Choose among ``heads`` (``"logreg"``, ``"mlp"`` or both, comma-separated) and, for logreg,
    among ``C_grid``, by ``inner_folds``-fold cross-validation on the fitting rows."""

    name = "auto"

    def __init__(
        self,
        heads: str = "logreg",
        C_grid: tuple[float, ...] | list[float] = DEFAULT_C_GRID,
        inner_folds: int = 3,
        tolerance: float = 1e-3,
        seed: int = 0,
        mlp_params: dict[str, Any] | None = None,
        extend: int = 2,
    ) -> None:
        self.heads = heads
        self.C_grid = C_grid
        self.inner_folds = inner_folds
        self.tolerance = tolerance
        self.seed = seed
        self.mlp_params = mlp_params
        self.extend = extend

    # -- candidates -----------------------------------------------------------------------------
    def candidates(self) -> list[tuple[str, dict[str, Any]]]:
        """``(head name, params)`` in order of preference (simplest first)."""
        kinds = [k.strip() for k in str(self.heads).split(",") if k.strip()]
        unknown = [k for k in kinds if k not in HEAD_KINDS]
        if not kinds or unknown:
            raise ValueError(f"auto head: heads must be a comma-separated subset of {', '.join(HEAD_KINDS)}, "
                             f"got {self.heads!r}")
        if self.inner_folds < 2:
            raise ValueError(f"auto head: inner_folds must be at least 2, got {self.inner_folds}")
        out: list[tuple[str, dict[str, Any]]] = []
        if "logreg" in kinds:
            grid = sorted(float(c) for c in self.C_grid)
            if not grid or min(grid) <= 0:
                raise ValueError(f"auto head: C_grid must hold positive values, got {self.C_grid!r}")
            out += [("logreg", {"C": c}) for c in grid]
        if "mlp" in kinds:
            out.append(("mlp", {"seed": self.seed, **(self.mlp_params or {})}))
        return out

    # -- fitting --------------------------------------------------------------------------------
    def _choose(self, scores: list[float]) -> int:
        best = min(scores)
        return next(i for i, s in enumerate(scores) if s <= best + self.tolerance)

    def _record(self, cands: list[tuple[str, dict[str, Any]]], scores: list[float], chosen: int, n: int,
                weighted: bool) -> None:
        name, params = cands[chosen]
        self.chosen_ = (name, dict(params))
        self.selection_ = {
            "method": f"{self.inner_folds}-fold inner cross-validation on the fitting rows",
            "score": "mean out-of-fold log loss of the success labels" + (" (importance-weighted)" if weighted else ""),
            "rows": int(n),
            "tolerance": self.tolerance,
            "candidates": [{"head": h, "params": p, "log_loss": round(s, 6)} for (h, p), s in zip(cands, scores, strict=True)],
            "chosen": {"head": name, "params": dict(params)},
        }

    def _search(self, cands: list[tuple[str, dict[str, Any]]],
                score: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[float], int]:
        """Score every candidate; when the best C sits at an edge of the grid, try up to ``extend``
        more values past that edge (x2.5 apart), so the grid's bounds do not decide the answer."""
        cands = list(cands)
        scores = [score(name, params) for name, params in cands]
        for _ in range(self.extend):
            logreg = [i for i, (h, _) in enumerate(cands) if h == "logreg"]
            if len(logreg) < 2:
                break
            best = self._choose(scores)
            lo, hi = logreg[0], logreg[-1]  # candidates() lists C ascending
            if best == lo:
                at, c = lo, cands[lo][1]["C"] / 2.5
            elif best == hi:
                at, c = hi + 1, cands[hi][1]["C"] * 2.5
            else:
                break
            cands.insert(at, ("logreg", {"C": float(f"{c:.3g}")}))
            scores.insert(at, score(*cands[at]))
        return cands, scores, self._choose(scores)

    def fit(self, X: np.ndarray, success: np.ndarray, tier: np.ndarray) -> "AutoHead":
        X = np.asarray(X, dtype=np.float32)
        S = np.asarray(success)
        n = X.shape[0]
        folds = _inner_folds(n, min(self.inner_folds, n), self.seed)
        varied = [j for j in range(S.shape[1]) if np.unique(S[:, j]).size > 1]
        # The score reads the success labels only: a constant tier skips the multinomial fit per candidate.
        no_tier = np.zeros(n, dtype=np.int8)

        def score(name: str, params: dict[str, Any]) -> float:
            oof = np.zeros(S.shape, dtype=np.float64)
            for k in range(int(folds.max()) + 1):
                test = folds == k
                head = make_head(name, **params).fit(X[~test], S[~test], no_tier[~test])
                oof[test], _ = head.predict_proba(X[test])
            return float(np.mean([_log_loss(S[:, j], oof[:, j]) for j in varied])) if varied else 0.0

        cands, scores, chosen = self._search(self.candidates(), score)
        self._record(cands, scores, chosen, n, weighted=False)
        if cands[chosen][0] == "logreg":
            self._choose_tier_C(X, np.asarray(tier).astype(int), folds)
        self.best_ = make_head(self.chosen_[0], **self.chosen_[1]).fit(X, S, tier)
        self.n_features_in_ = X.shape[1]
        return self

    def _choose_tier_C(self, X: np.ndarray, tier: np.ndarray, folds: np.ndarray) -> None:
        """The tier model's C by the same inner folds, on the multinomial log loss of the tier labels."""
        if np.unique(tier).size < 2:
            return
        no_success = np.zeros((X.shape[0], 1), dtype=np.int8)  # constant: no success model is fitted

        def score(_: str, params: dict[str, Any]) -> float:
            losses = []
            for k in range(int(folds.max()) + 1):
                test = folds == k
                head = make_head("logreg", C=params["C"]).fit(X[~test], no_success[~test], tier[~test])
                _, probs = head.predict_proba(X[test])
                p = np.clip(probs[np.arange(int(test.sum())), tier[test]].astype(np.float64), _EPS, 1.0)
                losses.append(-np.log(p))
            return float(np.mean(np.concatenate(losses)))

        grid = [c for c in self.candidates() if c[0] == "logreg"]
        cands, scores, chosen = self._search(grid, score)
        tier_C = cands[chosen][1]["C"]
        self.chosen_ = (self.chosen_[0], {**self.chosen_[1], "tier_C": tier_C})
        self.selection_["chosen"] = {"head": self.chosen_[0], "params": dict(self.chosen_[1])}
        self.selection_["tier"] = {
            "score": "mean out-of-fold multinomial log loss of the tier labels",
            "candidates": [{"C": p["C"], "log_loss": round(v, 6)} for (_, p), v in zip(cands, scores, strict=True)],
            "chosen": {"tier_C": tier_C},
        }

    def fit_logged(self, X: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   tier_targets: np.ndarray | None) -> "AutoHead":
        """Logged bandit data (see :meth:`LogRegHead.fit_logged`): each label is scored on its own
        observed rows, importance-weighted; the inner folds split queries, not labels."""
        X = np.asarray(X, dtype=np.float32)
        cands = [c for c in self.candidates() if c[0] == "logreg"]  # the logged fit is logreg's
        if not cands:
            raise ValueError("auto head: logged data needs the logreg head (heads=logreg)")
        n = X.shape[0]
        folds = _inner_folds(n, min(self.inner_folds, n), self.seed)

        def score(name: str, params: dict[str, Any]) -> float:
            losses = []
            for k in range(int(folds.max()) + 1):
                in_test = folds == k
                train_rows = [(idx[~in_test[idx]], y[~in_test[idx]], w[~in_test[idx]]) for idx, y, w in rows]
                head = make_head(name, **params).fit_logged(X, train_rows, None)
                p, _ = head.predict_proba(X)
                for j, (idx, y, w) in enumerate(rows):
                    sel = in_test[idx]
                    if sel.any() and np.unique(y).size > 1:
                        losses.append((_log_loss(np.asarray(y[sel], float), p[idx[sel], j], w[sel]), float(w[sel].sum())))
            return float(np.average([v for v, _ in losses], weights=[w for _, w in losses])) if losses else 0.0

        cands, scores, chosen = self._search(cands, score)
        self._record(cands, scores, chosen, n, weighted=True)
        self.best_ = make_head(cands[chosen][0], **cands[chosen][1]).fit_logged(X, rows, tier_targets)
        self.n_features_in_ = X.shape[1]
        return self

    # -- the chosen head does the rest ------------------------------------------------------------
    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.best_.predict_proba(X)

    def to_onnx(self) -> Any:
        return self.best_.to_onnx()

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        name, params = self.chosen_
        return name, self.best_.get_params(), self.selection_
