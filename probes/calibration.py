"""Post-hoc calibration fitted on held-out (out-of-fold) predictions, stored as plain numbers.

* success labels (binary), per label, one of
    - ``platt``: ``sigmoid(a * logit(p) + b)`` - two numbers, strictly monotone (keeps the ranking
      a router sweeps over, no ties);
    - ``temperature``: ``sigmoid(logit(p) / T)`` - one number;
    - ``isotonic``: breakpoints ``x``/``y`` of scikit-learn's isotonic fit, applied with ``np.interp``.
* tier probabilities (3 classes): temperature scaling of the log-probabilities (one number).

Applying a calibrator needs numpy only (the request path); fitting uses scipy/scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-6
METHODS = ("platt", "temperature", "isotonic", "none")


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of ``p``, clipped away from 0 and 1 so that it stays finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The inverse of :func:`logit`."""
    return 1.0 / (1.0 + np.exp(-z))


def fit_binary(method: str, p: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> dict[str, Any]:
    """Calibration parameters (JSON-ready) for one binary label from predictions ``p`` and 0/1 ``y``.

    ``weight``: per-row weights (importance weights of logged bandit data); default 1.
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
    if method == "none" or np.unique(y).size < 2:
        return {"method": "none"}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y, sample_weight=w)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    z = logit(p)
    from scipy.optimize import minimize

    def nll(params: np.ndarray) -> float:
        a, b = (params[0], params[1]) if method == "platt" else (params[0], 0.0)
        q = np.clip(sigmoid(a * z + b), _EPS, 1 - _EPS)
        return float(-(w * (y * np.log(q) + (1 - y) * np.log1p(-q))).sum() / w.sum())

    if method == "platt":
        res = minimize(nll, x0=np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(1e-3, 100.0), (-20.0, 20.0)])
        return {"method": "platt", "a": float(res.x[0]), "b": float(res.x[1])}
    if method == "temperature":
        res = minimize(nll, x0=np.array([1.0]), method="L-BFGS-B", bounds=[(1e-2, 100.0)])
        return {"method": "temperature", "temperature": float(1.0 / res.x[0])}
    raise ValueError(f"unknown calibration method {method!r}; choose from: {', '.join(METHODS)}")


def apply_binary(params: dict[str, Any], p: np.ndarray) -> np.ndarray:
    method = params.get("method", "none")
    p = np.asarray(p, dtype=np.float64)
    if method == "none":
        out = p
    elif method == "isotonic":
        out = np.interp(p, np.asarray(params["x"], dtype=np.float64), np.asarray(params["y"], dtype=np.float64))
    elif method == "platt":
        out = sigmoid(float(params["a"]) * logit(p) + float(params["b"]))
    elif method == "temperature":
        out = sigmoid(logit(p) / float(params["temperature"]))
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return out.astype(np.float32)


def fit_tier_temperature(probs: np.ndarray, tier: np.ndarray) -> dict[str, Any]:
    """One temperature for the tier softmax, minimising held-out log loss."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0))
    t = np.asarray(tier, dtype=np.int64)

    def nll(temp: float) -> float:
        z = logp / temp
        z = z - z.max(axis=1, keepdims=True)
        logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logq[np.arange(len(t)), t].mean())

    res = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded")
    return {"method": "temperature", "temperature": float(res.x)}


def apply_tier(params: dict[str, Any], probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if params.get("method", "none") == "none":
        return probs.astype(np.float32)
    logp = np.log(np.clip(probs, _EPS, 1.0)) / float(params["temperature"])
    logp = logp - logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_all(method: str, success_p: np.ndarray, success_y: np.ndarray, tier_p: np.ndarray,
            tier_y: np.ndarray) -> dict[str, Any]:
    """Calibration for every success label and the tier head, as stored in the card."""
    return {
        "method": method,
        "success": [fit_binary(method, success_p[:, j], success_y[:, j]) for j in range(success_y.shape[1])],
        "tier": fit_tier_temperature(tier_p, tier_y) if method != "none" else {"method": "none"},
    }


def apply_all(calibration: dict[str, Any], success_p: np.ndarray, tier_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    success = np.column_stack(
        [apply_binary(c, success_p[:, j]) for j, c in enumerate(calibration["success"])]
    ) if success_p.shape[1] else success_p
    return success.astype(np.float32), apply_tier(calibration["tier"], tier_p)
