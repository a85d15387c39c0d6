"""On-disk cache of feature matrices, keyed by (feature name, version, params, sha256 of text).

Layout under ``<cache_dir>/features/``::

    <name>-v<version>-<params hash>/
        meta.json               # the feature identity the folder belongs to
        shard-<uuid>.npz        # keys: (k, 32) uint8 sha256 digests, values: (k, dim) float32

Shards are written to a temporary file and renamed, so a crash never leaves half a shard, and two
processes filling the same cache at once only duplicate work. ``np.load(allow_pickle=False)``
reads them: nothing in the cache can execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage.probes.features.base import Feature

#: Merge shards into one when a folder holds more than this many.
_MAX_SHARDS = 16


def default_cache_dir() -> Path:
    """``get_settings().cache_dir`` - the project's one settings object (imported lazily)."""
    from triage.settings import get_settings  # settings only; probes never import routing code

    return Path(get_settings().cache_dir)


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def params_digest(feature: Feature) -> str:
    blob = json.dumps(feature.identity(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class FeatureCache:
    """Cache of one feature's rows. Call :meth:`transform` instead of ``feature.transform``."""

    def __init__(self, feature: Feature, cache_dir: Path | str | None = None) -> None:
        self.feature = feature
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.folder = root / "features" / f"{feature.name}-v{feature.version}-{params_digest(feature)}"
        self.stats = CacheStats()
        self._index: dict[bytes, np.ndarray] | None = None

    # -- reading -------------------------------------------------------------------------------

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz")) if self.folder.exists() else []

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is not None:
            return self._index
        index: dict[bytes, np.ndarray] = {}
        dim = self.feature.dim
        for shard in self._shards():
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, values = z["keys"], z["values"]
            except (OSError, ValueError, KeyError):
                continue  # a torn or foreign file: ignore it, the rows are recomputed
            if values.ndim != 2 or values.shape[1] != dim or keys.shape != (values.shape[0], 32):
                continue
            for k, row in zip(keys, values, strict=True):
                index[k.tobytes()] = row
        self._index = index
        return index

    def __len__(self) -> int:
        return len(self._load())

    # -- writing -------------------------------------------------------------------------------

    def _write_shard(self, keys: list[bytes], values: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.feature.identity(), indent=2, default=str))
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.folder / f".{name}.tmp"
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        with tmp.open("wb") as fh:
            np.savez(fh, keys=key_arr, values=np.asarray(values, dtype=np.float32))
        os.replace(tmp, self.folder / name)
        if len(self._shards()) > _MAX_SHARDS:
            self._compact()

    def _compact(self) -> None:
        """Merge every shard on disk (ours and other processes') into one."""
        old = self._shards()
        self._index = None
        index = self._load()
        if not index:
            return
        keys = list(index)
        values = np.stack([index[k] for k in keys])
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.folder / f".{name}.tmp"
        with tmp.open("wb") as fh:
            np.savez(fh, keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 32), values=values)
        os.replace(tmp, self.folder / name)
        for shard in old:
            shard.unlink(missing_ok=True)

    # -- the one call --------------------------------------------------------------------------

    def transform(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Rows for ``texts``: cached ones are read, the rest computed in batches and stored.

        ``progress(k)`` is called with the number of rows just made available (hits at once,
        misses batch by batch) so a progress bar can follow.
        """
        texts = list(texts)
        index = self._load()
        digests = [text_digest(t) for t in texts]
        out = np.empty((len(texts), self.feature.dim), dtype=np.float32)
        todo: dict[bytes, list[int]] = {}
        for i, d in enumerate(digests):
            row = index.get(d)
            if row is not None:
                out[i] = row
            else:
                todo.setdefault(d, []).append(i)
        n_hit = len(texts) - sum(len(v) for v in todo.values())
        self.stats.hits += n_hit
        if progress and n_hit:
            progress(n_hit)
        pending = list(todo)
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            batch_texts = [texts[todo[d][0]] for d in chunk]
            values = self.feature.transform_checked(batch_texts)
            self._write_shard(chunk, values)
            for d, row in zip(chunk, values, strict=True):
                index[d] = row
                for i in todo[d]:
                    out[i] = row
            n_new = sum(len(todo[d]) for d in chunk)
            self.stats.misses += n_new
            if progress:
                progress(n_new)
        return out


def cached_transform(
    feature: Feature,
    texts: Sequence[str],
    *,
    cache_dir: Path | str | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``feature.transform(texts)`` through the on-disk cache."""
    return FeatureCache(feature, cache_dir).transform(texts, batch_size=batch_size, progress=progress)
