"""The router head: a small torch MLP over router features, exported to ONNX with a model card.

Training (torch, offline) reads the label set of :mod:`triage.token_router.labels`; the exported
graph holds the feature standardisation and the sigmoid, so the runtime (:class:`RouterHead`,
onnxruntime only, no pickle) feeds raw features and gets P(critical). ``card.json`` records the
feature layout and version, the small/large model identities (sha256), the label set fingerprint and
counts, the target, the threshold, cross-validated metrics on held-out prompts (AUROC of the head
and of plain entropy, precision and recall at the target large-token share), the exact command and
the sha256 of every file; :meth:`RouterHead.load` refuses a folder that does not match its card.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triage.token_router.features import FEATURE_VERSION

CARD_FILE = "card.json"
HEAD_FILE = "router_head.onnx"
SCHEMA_VERSION = 1
LEGACY_ENGINE = "transformers-fp32"
ONNX_OPSET = 17
OPERATING_FRACTIONS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


class RouterHeadError(ValueError):
    """A router head folder that is missing, corrupted or does not fit the models in use."""


def head_dir() -> Path:
    from triage.settings import get_settings

    return Path(get_settings().cache_dir) / "token_router" / "head"


class RouterHeadCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    kind: Literal["token-router-head"] = "token-router-head"
    version: str
    created_at: str
    command: str
    feature_version: str
    hidden_size: int = Field(gt=0)
    top_k: int = Field(gt=0)
    input_dim: int = Field(gt=0)
    # Cards written before the ONNX engine lack it: their features all came from transformers fp32.
    engine: str = Field(default=LEGACY_ENGINE, description="Engine tag of the features (triage.lm.engine_tag).")
    small_model: dict[str, str]
    large_model: dict[str, str]
    head: dict[str, Any]
    target: Literal["divergent", "different"]
    threshold: float = Field(ge=0.0, le=1.0)
    target_large_fraction: float
    entropy_tau: float = Field(description="Entropy threshold (nats) flagging the same share of training positions.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    # Large-token share -> head threshold and entropy tau flagging that share of the label set's
    # positions (the benchmark's sweeps). Older cards have none.
    operating_points: dict[str, dict[str, float]] = Field(default_factory=dict)
    training_data: dict[str, Any] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str]


def _sha256(path: Path) -> str:
    from triage.probes.encoder.runtime import file_sha256

    return file_sha256(path)


def read_card(folder: Path | str) -> RouterHeadCard:
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise RouterHeadError(f"no router head card at {path}; run `triage token-router train`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise RouterHeadError(f"{path}: schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        card = RouterHeadCard.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise RouterHeadError(f"{path}: not a valid router head card ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RouterHeadError(f"{path}: field '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None
    if card.input_dim != 2 * card.hidden_size + card.top_k + 1:
        raise RouterHeadError(f"{path}: input_dim {card.input_dim} does not fit hidden_size/top_k")
    return card


class RouterHead:
    """onnxruntime-only runtime of an exported router head."""

    def __init__(self, card: RouterHeadCard, folder: Path, session: Any) -> None:
        self.card, self.folder, self._session = card, folder, session
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, folder: Path | str | None = None) -> RouterHead:
        import onnxruntime as ort

        path = Path(folder or head_dir())
        card = read_card(path)
        for name, sha in card.files.items():
            f = path / name
            if not f.is_file():
                raise RouterHeadError(f"{f}: listed in the card but missing")
            if _sha256(f) != sha:
                raise RouterHeadError(f"{f}: sha256 differs from the card (corrupted or replaced)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path / card.head["file"]), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RouterHeadError(f"{path / card.head['file']}: onnxruntime cannot load it ({exc})") from None
        return cls(card, path, session)

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def top_k(self) -> int:
        return self.card.top_k

    def check_small_model(self, name: str, hidden_size: int, sha256: str | None = None) -> None:
        """Refuse a small model other than the one whose features the head was trained on."""
        if hidden_size != self.card.hidden_size:
            raise RouterHeadError(f"router head {self.version} expects hidden size {self.card.hidden_size}, "
                                  f"small model {name!r} has {hidden_size}")
        if sha256 is not None and self.card.small_model.get("sha256") not in (None, sha256):
            raise RouterHeadError(f"router head {self.version} was trained on {self.card.small_model.get('name')} "
                                  f"(sha256 {self.card.small_model['sha256'][:12]}), not on this {name!r}")

    def check_engine(self, engine: str) -> None:
        """Refuse features from another engine than the head's (int4 and fp32 hidden states differ)."""
        if engine != self.card.engine:
            raise RouterHeadError(f"router head {self.version} was trained on {self.card.engine} features, the "
                                  f"models run on {engine}; retrain it on this engine with `triage token-router "
                                  "label` and `triage token-router train`")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.card.input_dim:
            raise RouterHeadError(f"router head {self.version} expects (n, {self.card.input_dim}) features, got {X.shape}")
        return self._session.run(None, {self._input: X})[0].reshape(-1)


# -- training ------------------------------------------------------------------------------------


def _targets(cats: np.ndarray, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(row mask, 0/1 labels). divergent: R2R labels, unresolved rows dropped; different: any disagreement.

    ``different`` is the default: on the decode benchmark (eval/bench/results/token_routing*.json)
    its head was as accurate or more at every large-token share. The cheap ``neutral`` label is a
    weak negative (40% of a checked sample were truly divergent), and a hand-off is only useful where
    the large model writes another token, which is what ``different`` predicts."""
    from triage.token_router.labels import DIVERGENT, IDENTICAL, UNRESOLVED

    if target == "divergent":
        keep = cats != UNRESOLVED
        return keep, (cats[keep] == DIVERGENT).astype(np.float32)
    if target == "different":
        keep = np.ones(len(cats), dtype=bool)
        return keep, (cats != IDENTICAL).astype(np.float32)
    raise ValueError(f"unknown target {target!r}: use 'divergent' or 'different'")


def auto_epochs(n_rows: int, batch_size: int = 4096) -> int:
    """About 300 optimizer steps, at least 8 passes: full-batch on a small label set (as before),
    a few minibatch epochs on a large one."""
    batches = max(1, -(-n_rows // batch_size))
    return max(8, min(300, -(-300 // batches)))


def _fit_mlp(X: np.ndarray, y: np.ndarray, *, hidden: int, epochs: int, seed: int, batch_size: int = 4096) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X32 = np.asarray(X, dtype=np.float32)
    mean = X32.mean(0)
    std = X32.std(0) + 1e-4

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean))
            self.register_buffer("std", torch.tensor(std))
            self.body = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.GELU(), nn.Dropout(0.2), nn.Linear(hidden, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.body((x - self.mean) / self.std))

    net = Net()
    xt, yt = torch.from_numpy(X32), torch.tensor(y)
    pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - pos) / max(pos, 1.0))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=5e-2)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(y)) if len(y) > batch_size else np.arange(len(y))
        for b in range(0, len(y), batch_size):
            idx = torch.from_numpy(order[b:b + batch_size])
            opt.zero_grad()
            logits = net.body((xt[idx] - net.mean) / net.std).reshape(-1)
            loss_fn(logits, yt[idx]).backward()
            opt.step()
    net.eval()
    return net


def _predict(net: Any, X: np.ndarray) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for b in range(0, len(X), 16384):  # chunks: a float16 label set is cast piece by piece
            out.append(net(torch.from_numpy(np.asarray(X[b:b + 16384], dtype=np.float32))).reshape(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _cv_folds(groups: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """Test masks of prompt-grouped folds: leave one prompt out up to ``n_folds`` prompts, else
    ``n_folds`` folds of whole prompts (a seeded shuffle of the prompts)."""
    prompts = np.unique(groups)
    if len(prompts) <= n_folds:
        return [groups == g for g in prompts]
    order = np.random.default_rng(0).permutation(prompts)
    return [np.isin(groups, part) for part in np.array_split(order, n_folds)]


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def _operating_point(y: np.ndarray, score: np.ndarray, fraction: float, name: str) -> dict[str, Any]:
    """Precision and recall of flagging the top ``fraction`` of held-out rows by ``score``."""
    if not len(y):
        return {}
    flag = score > np.quantile(score, 1.0 - fraction)
    return {f"cv_precision_{name}_at_fraction": float(y[flag].mean()) if flag.any() else None,
            f"cv_recall_{name}_at_fraction": float(y[flag].sum() / max(y.sum(), 1)),
            "cv_base_rate": float(y.mean())}


def _libraries() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "onnxruntime", "onnx", "numpy", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def train_and_export(*, labels_folder: Path | None = None, out_dir: Path | None = None, target: str = "different",
                     large_fraction: float = 0.15, hidden: int = 64, epochs: int | None = None, seed: int = 0,
                     n_folds: int = 5, command: str = "") -> dict[str, Any]:
    """Cross-validate on held-out prompts (``n_folds`` prompt-grouped folds; leave one prompt out
    on a tiny set), fit on all rows, export ONNX + card. Returns the card dict. ``epochs`` None:
    :func:`auto_epochs`."""
    import torch

    from triage.token_router.labels import load_labels

    X, cats, groups, manifest = load_labels(labels_folder)
    keep, y = _targets(cats, target)
    Xk, gk = X[keep], groups[keep]
    if y.sum() < 3:
        raise ValueError(f"only {int(y.sum())} positive '{target}' positions in the label set; "
                         "label more prompts or train with --target different")
    epochs = epochs or auto_epochs(len(y))
    oof = np.full(len(y), np.nan, dtype=np.float32)
    folds = _cv_folds(gk, n_folds)
    for test in folds:
        if y[~test].sum() == 0:
            continue
        oof[test] = _predict(_fit_mlp(Xk[~test], y[~test], hidden=hidden, epochs=epochs, seed=seed), Xk[test])
    have = ~np.isnan(oof)
    entropy = np.asarray(Xk[:, -1], dtype=np.float32)
    net = _fit_mlp(Xk, y, hidden=hidden, epochs=epochs, seed=seed)
    # Thresholds flag `large_fraction` of all positions of the reference paths (unresolved ones included).
    all_scores = _predict(net, X)
    threshold = float(np.quantile(all_scores, 1.0 - large_fraction))
    all_entropy = np.asarray(X[:, -1], dtype=np.float32)
    entropy_tau = float(np.quantile(all_entropy, 1.0 - large_fraction))
    operating_points = {f"{f:g}": {"threshold": float(np.quantile(all_scores, 1.0 - f)),
                                   "entropy_tau": float(np.quantile(all_entropy, 1.0 - f))}
                        for f in OPERATING_FRACTIONS}
    metrics = {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "prompts": int(len(np.unique(gk))),
        "cv": "leave-one-prompt-out" if len(folds) == len(np.unique(gk)) else f"{len(folds)}-fold by prompt",
        "epochs": epochs,
        "cv_auroc_head": _auroc(y[have], oof[have]) if have.any() else None,
        "cv_auroc_entropy": _auroc(y, entropy),
        **_operating_point(y[have], oof[have], large_fraction, "head"),
        **_operating_point(y[have], entropy[have], large_fraction, "entropy"),
        "train_auroc_head": _auroc(y, _predict(net, Xk)),
    }

    out = Path(out_dir or head_dir())
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter (dynamo=False) warns it is legacy; it is what runs here
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, (torch.zeros(1, X.shape[1]),), str(tmp / HEAD_FILE), input_names=["features"],
                              output_names=["p_critical"],
                              dynamic_axes={"features": {0: "n"}, "p_critical": {0: "n"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        files = {HEAD_FILE: _sha256(tmp / HEAD_FILE)}
        top_k = X.shape[1] - 2 * _hidden_size(manifest, X.shape[1]) - 1
        card = RouterHeadCard(
            version=f"tr-head-{files[HEAD_FILE][:12]}",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            command=command,
            feature_version=manifest["settings"].get("feature_version", FEATURE_VERSION),
            hidden_size=_hidden_size(manifest, X.shape[1]),
            top_k=top_k,
            input_dim=int(X.shape[1]),
            engine=manifest.get("engine") or manifest["settings"].get("engine") or LEGACY_ENGINE,
            small_model=manifest["small_model"],
            large_model=manifest["large_model"],
            head={"file": HEAD_FILE, "opset": ONNX_OPSET, "kind": "torch-mlp", "hidden": hidden, "epochs": epochs,
                  "seed": seed},
            target=target,  # type: ignore[arg-type]
            threshold=min(max(threshold, 0.0), 1.0),
            target_large_fraction=large_fraction,
            entropy_tau=entropy_tau,
            metrics=metrics,
            operating_points=operating_points,
            training_data={"labels_manifest_sha256": _sha256(Path(labels_folder or _labels_dir()) / "manifest.json"),
                           "labels_command": manifest["command"], "source": manifest["source"],
                           "prompt_indices": manifest["prompt_indices"], "counts": manifest["counts"]},
            libraries=_libraries(),
            files=files,
        )
        (tmp / CARD_FILE).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card.model_dump(mode="json")


def _labels_dir() -> Path:
    from triage.token_router.labels import labels_dir

    return labels_dir()


def _hidden_size(manifest: dict[str, Any], dim: int) -> int:
    top_k = int(manifest["settings"]["top_k"])
    return (dim - top_k - 1) // 2
