"""Vectorised paired bootstrap over queries.

Indices are resampled once per evaluation and shared by every router, so differences between
routers (TEP against a baseline, for example) are computed on the same resampled queries.
Every headline metric is a ratio of sums over queries, so a replicate only needs the per-query
values summed under the replicate's resampling weights: ``weights (B, G) @ sums (G, q)``.

For large datasets the queries are dealt at random into ``max_units`` blocks of (nearly) equal
size and whole blocks are resampled. Rows dealt at random are exchangeable, so the sum over
resampled blocks has the same variance as the sum over resampled rows (G blocks of n/G rows:
G * (n/G) * var = n * var), while the cost stops growing with n beyond one pass over the data.
Block sums are one ``np.bincount`` per quantity, so the data never has to be reordered.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Bootstrap", "percentile_interval"]


class Bootstrap:
    """Resampling weights for ``n`` queries, drawn once.

    Parameters
    ----------
    n: number of queries.
    n_boot: number of replicates B (0 disables intervals).
    seed: seed of the resampling.
    max_units: above this many queries, resample blocks of queries instead of single queries.
    """

    def __init__(self, n: int, n_boot: int = 1000, seed: int = 0, max_units: int = 5000) -> None:
        self.n = int(n)
        self.n_boot = int(n_boot)
        rng = np.random.default_rng(seed)
        if self.n > max_units:
            self.n_units = int(max_units)
            # Deal a random permutation into blocks: sizes differ by at most one.
            self._labels: np.ndarray | None = rng.permutation(self.n) % self.n_units
            self.unit_sizes = np.bincount(self._labels, minlength=self.n_units).astype(float)
        else:
            self.n_units = self.n
            self._labels = None
            self.unit_sizes = np.ones(self.n)
        if self.n_boot > 0 and self.n_units > 0:
            draws = rng.integers(0, self.n_units, size=(self.n_boot, self.n_units))
            flat = (draws + (np.arange(self.n_boot) * self.n_units)[:, None]).ravel()
            self.weights = np.bincount(flat, minlength=self.n_boot * self.n_units).reshape(
                self.n_boot, self.n_units).astype(float)
        else:
            self.weights = np.zeros((0, self.n_units))
        #: number of queries in each replicate (== n unless blocks differ in size)
        self.replicate_n = self.weights @ self.unit_sizes

    def unit_sums(self, values: np.ndarray) -> np.ndarray:
        """(q, n) per-query values -> (q, G) per-unit sums."""
        values = np.atleast_2d(np.asarray(values, dtype=float))
        if values.shape[-1] != self.n:
            raise ValueError(f"expected values for {self.n} queries, got {values.shape[-1]}")
        if self._labels is None:
            return values
        return np.stack([np.bincount(self._labels, weights=row, minlength=self.n_units) for row in values])

    def replicate_sums(self, values: np.ndarray) -> np.ndarray:
        """(q, n) per-query values -> (B, q) sums over each replicate's resampled queries."""
        return self.weights @ self.unit_sums(values).T

    def replicate_means(self, values: np.ndarray) -> np.ndarray:
        """(q, n) per-query values -> (B, q) means over each replicate's resampled queries."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.replicate_sums(values) / self.replicate_n[:, None]


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> list[float | None] | None:
    """Percentile bootstrap interval of 1-D ``replicates``; NaN replicates are ignored.

    ``method="nearest"`` picks actual replicate values, so infinite ones (cost-of-pass of a
    replicate with no correct answer) stay infinite instead of turning into NaN.
    """
    r = np.asarray(replicates, dtype=float)
    r = r[~np.isnan(r)]
    if r.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [alpha, 1.0 - alpha], method="nearest")
    return [float(lo), float(hi)]
