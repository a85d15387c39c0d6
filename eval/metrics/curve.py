"""Metrics of a router's cost-quality curve (its sweep of operating points).

* RouteLLM (two candidates, weak and strong): PGR, APGR, CPT(x%).
* RouterBench (any number of candidates): AIQ over the non-decreasing convex hull.
* ``cost_ratio_at_accuracy``: what a router's cheapest adequate point costs relative to a model.

All functions take plain arrays; the APGR functions also accept a leading batch axis (bootstrap
replicates), so intervals are computed without Python loops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "aiq",
    "apgr",
    "cost_ratio_at_accuracy",
    "cpt",
    "nondecreasing_hull",
    "pgr",
]


def pgr(acc: np.ndarray | float, acc_weak: np.ndarray | float,
        acc_strong: np.ndarray | float) -> np.ndarray:
    """Performance gap recovered: ``(acc - acc_weak) / (acc_strong - acc_weak)``; NaN if no gap."""
    acc, acc_weak, acc_strong = (np.asarray(x, dtype=float) for x in (acc, acc_weak, acc_strong))
    gap = acc_strong - acc_weak
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap != 0, (acc - acc_weak) / np.where(gap != 0, gap, 1.0), np.nan)


def _with_endpoints(share: np.ndarray, pgr_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add (0, 0) = all weak and (1, 1) = all strong, then sort each row by strong-call share."""
    share = np.asarray(share, dtype=float)
    pgr_values = np.asarray(pgr_values, dtype=float)
    share, pgr_values = np.broadcast_arrays(share, pgr_values)
    lead = share.shape[:-1]
    zeros, ones = np.zeros(lead + (1,)), np.ones(lead + (1,))
    x = np.concatenate([zeros, share, ones], axis=-1)
    y = np.concatenate([zeros, pgr_values, ones], axis=-1)
    # Sort by share; at equal share keep the curve's order of PGR (lexsort: last key is primary).
    order = np.lexsort((y, x), axis=-1)
    return np.take_along_axis(x, order, -1), np.take_along_axis(y, order, -1)


def apgr(share: np.ndarray | Sequence[float], pgr_values: np.ndarray | Sequence[float]) -> np.ndarray | float:
    """Average performance gap recovered (RouteLLM).

    Area under PGR as a function of the share of calls to the strong model, from 0 to 1, by the
    trapezoid rule over the sweep points after adding (0, weak) and (1, strong). ``share`` and
    ``pgr_values`` have the points on the last axis; leading axes are batch axes.
    """
    x, y = _with_endpoints(np.asarray(share), np.asarray(pgr_values))
    area = np.sum((x[..., 1:] - x[..., :-1]) * (y[..., 1:] + y[..., :-1]) / 2.0, axis=-1)
    return float(area) if np.ndim(area) == 0 else area


def cpt(share: np.ndarray | Sequence[float], pgr_values: np.ndarray | Sequence[float],
        target: float) -> float | None:
    """Call-performance threshold (RouteLLM): the smallest strong-call share reaching PGR ``target``.

    The curve (with the (0, 0) and (1, 1) endpoints) is walked in order of strong-call share and
    interpolated linearly inside the first segment that crosses the target; mixing two operating
    points at random realises every point of that segment. Returned as a share in [0, 1].
    """
    x, y = _with_endpoints(np.asarray(share), np.asarray(pgr_values))
    if np.isnan(y).any():
        return None
    for k in range(len(x)):
        if y[k] >= target:
            if k == 0:
                return float(x[0])
            x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
            if y1 == y0:
                return float(x1)
            return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))
    return None


def nondecreasing_hull(cost: np.ndarray | Sequence[float],
                       quality: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Upper convex hull of (cost, quality) points, flattened after its peak (RouterBench's NDCH).

    Any two operating points can be mixed at random, so every point under a chord is reachable;
    spending more than the best point needs never has to lower quality, hence "non-decreasing".
    Returns the hull vertices sorted by cost.
    """
    pts = sorted(set(zip(np.asarray(cost, dtype=float).tolist(), np.asarray(quality, dtype=float).tolist())))
    # For equal cost only the best quality matters.
    best: dict[float, float] = {}
    for c, q in pts:
        best[c] = max(q, best.get(c, -math.inf))
    xs = sorted(best)
    hull: list[tuple[float, float]] = []
    for c in xs:
        q = best[c]
        # Monotone chain, upper hull: drop the last vertex while it lies on or below the chord.
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (q - y1) - (y2 - y1) * (c - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((c, q))
    # Non-decreasing: cut the hull at its highest vertex (the cheapest one at that height).
    peak = max(range(len(hull)), key=lambda i: (hull[i][1], -hull[i][0]))
    hull = hull[: peak + 1]
    return np.array([h[0] for h in hull]), np.array([h[1] for h in hull])


def aiq(cost: np.ndarray | Sequence[float], quality: np.ndarray | Sequence[float],
        cost_min: float, cost_max: float) -> float | None:
    """Average improvement in quality (RouterBench): area under the non-decreasing convex hull.

    Cost is normalised to [0, 1] over ``[cost_min, cost_max]`` (the range of the candidates'
    mean costs) and clipped to it. Below the router's cheapest point the curve is 0 (it cannot
    run for less); above its peak it stays at the peak. A single model scores
    ``quality * (1 - normalised cost)``. ``None`` when the candidates all cost the same.
    """
    if not (math.isfinite(cost_min) and math.isfinite(cost_max)) or cost_max <= cost_min:
        return None
    c = np.clip((np.asarray(cost, dtype=float) - cost_min) / (cost_max - cost_min), 0.0, 1.0)
    q = np.asarray(quality, dtype=float)
    keep = np.isfinite(c) & np.isfinite(q)
    if not keep.any():
        return None
    hx, hy = nondecreasing_hull(c[keep], q[keep])
    hx = np.append(hx, 1.0)
    hy = np.append(hy, hy[-1])
    return float(np.sum((hx[1:] - hx[:-1]) * (hy[1:] + hy[:-1]) / 2.0))


def cost_ratio_at_accuracy(cost: np.ndarray | Sequence[float], accuracy: np.ndarray | Sequence[float],
                           target_accuracy: float, target_cost: float, *, tol: float = 1e-9) -> float | None:
    """Cost of the cheapest curve point with accuracy >= ``target_accuracy``, over ``target_cost``.

    ``None`` when no point reaches the target or the target cost is 0.
    """
    c = np.asarray(cost, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    ok = a >= target_accuracy - tol
    if not ok.any() or not target_cost:
        return None
    return float(c[ok].min() / target_cost)
