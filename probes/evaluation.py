"""Probe quality: AUROC per label, Brier score, expected calibration error, reliability plots.

Every figure comes with a percentile bootstrap interval (queries resampled with replacement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from triage.probes.types import TIERS


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with a single class."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def multiclass_brier(y: np.ndarray, probs: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[np.asarray(y, dtype=int)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error with equal-width bins (weighted by bin size)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(total / max(len(y), 1))


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            rows.append({"bin": b, "n": int(sel.sum()), "mean_p": float(p[sel].mean()), "freq": float(y[sel].mean())})
    return rows


def _bootstrap(stat, arrays: tuple[np.ndarray, ...], n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        v = stat(*(a[i] for a in arrays))
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def _with_ci(stat, arrays: tuple[np.ndarray, ...], n_boot: int, seed: int) -> dict[str, float]:
    lo, hi = _bootstrap(stat, arrays, n_boot, seed)
    return {"value": float(stat(*arrays)), "ci95": [lo, hi]}


def probe_metrics(
    labels: list[str],
    success_y: np.ndarray,
    success_p: np.ndarray,
    tier_y: np.ndarray,
    tier_p: np.ndarray,
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-label AUROC/Brier/ECE and tier accuracy/Brier, each with a 95% bootstrap interval."""
    out: dict[str, Any] = {"n": int(len(tier_y)), "success": {}, "tier": {}}
    for j, name in enumerate(labels):
        y, p = success_y[:, j].astype(float), success_p[:, j].astype(float)
        out["success"][name] = {
            "base_rate": float(y.mean()),
            "auroc": _with_ci(auroc, (y, p), n_boot, seed),
            "brier": _with_ci(brier, (y, p), n_boot, seed),
            "ece": _with_ci(ece, (y, p), n_boot, seed),
        }
    t = np.asarray(tier_y, dtype=int)
    tp = np.asarray(tier_p, dtype=float)
    out["tier"] = {
        "counts": {name: int((t == k).sum()) for k, name in enumerate(TIERS)},
        "accuracy": _with_ci(lambda a, b: float((b.argmax(1) == a).mean()), (t, tp), n_boot, seed),
        "brier": _with_ci(multiclass_brier, (t, tp), n_boot, seed),
        "auroc_hard_vs_rest": _with_ci(lambda a, b: auroc(a == 2, b[:, 2]), (t, tp), n_boot, seed),
        "auroc_easy_vs_rest": _with_ci(lambda a, b: auroc(a == 0, b[:, 0]), (t, tp), n_boot, seed),
    }
    return out


def reliability_plot(
    labels: list[str], success_y: np.ndarray, success_p: np.ndarray, path: Path | str, *, bins: int = 10,
    title: str = "Probe reliability",
) -> Path:
    """One reliability curve per success label (predicted vs observed rate), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for j, name in enumerate(labels):
        rows = reliability_table(success_y[:, j], success_p[:, j], bins)
        e = ece(success_y[:, j], success_p[:, j], bins)
        ax.plot([r["mean_p"] for r in rows], [r["freq"] for r in rows], marker="o",
                label=f"{name[-28:]} (ECE {e:.3f})")
    ax.set_xlabel("predicted P(success)")
    ax.set_ylabel("observed success rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
