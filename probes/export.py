"""Write a trained probe as a self-contained folder: ONNX head, feature files, ``card.json``.

Layout::

    <out>/
      card.json                 # ProbeCard: features, labels, calibration, metrics, sha256 of the rest
      head.onnx                 # success (n, m) + tier (n, 3) from the concatenated features
      features/<name>/...       # files a feature needs at run time (e.g. the MiniLM encoder)
      reliability.png           # reliability plot of the cross-fitted calibrated predictions

The folder is built next to ``out`` and renamed into place, so readers never see half a probe.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from triage.probes.card import CARD_FILE, FeatureSpec, HeadSpec, ProbeCard, write_card
from triage.probes.encoder.runtime import file_sha256
from triage.probes.evaluation import reliability_plot
from triage.probes.heads.base import ONNX_OPSET
from triage.probes.training import TrainedProbe

HEAD_FILE = "head.onnx"


def _libraries() -> dict[str, str]:
    out = {}
    for pkg in ("onnxruntime", "onnx", "scikit-learn", "skl2onnx", "torch", "tokenizers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def current_command() -> str:
    """The command line of this process, shell-quoted (recorded in the card)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("triage", "__main__.py")):
        argv[0] = "triage"
    return " ".join(shlex.quote(a) for a in argv)


def export_probe(trained: TrainedProbe, out_dir: Path | str, *, command: str | None = None,
                 plot: bool = True, latency_texts: Sequence[str] | None = None) -> ProbeCard:
    """Write ``trained`` to ``out_dir`` (replacing what is there). Returns the card written.

    With ``latency_texts`` (some training queries), the exported probe is loaded as the runtime
    loads it and its decision latency is measured and recorded in the card
    (:mod:`triage.probes.latency`)."""
    import onnx

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        specs = []
        for f in trained.features:
            files = f.artifact_files()
            folder = None
            if files:
                folder = f"features/{f.name}"
                (tmp / folder).mkdir(parents=True, exist_ok=True)
                for name, src in files.items():
                    shutil.copyfile(src, tmp / folder / name)
            specs.append(
                FeatureSpec(
                    name=f.name, version=f.version, params=f.get_params(), dim=f.dim,
                    requires_torch=f.requires_torch, folder=folder, identity=jsonable(f.identity()),
                )
            )
        model = trained.head.to_onnx()
        onnx.save_model(model, str(tmp / HEAD_FILE))
        if plot and trained.labels.observed is None:  # logged data: no full label matrix to plot
            reliability_plot(trained.labels.candidates, trained.labels.success, trained.oof_success,
                             tmp / "reliability.png", title=f"{trained.data_name}: cross-fitted, calibrated")
        files = {
            str(p.relative_to(tmp)): file_sha256(p)
            for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != CARD_FILE
        }
        input_dim = sum(s.dim for s in specs)
        stamp = datetime.now(UTC)
        head_kind, head_params, selection = trained.head.describe()
        card = ProbeCard(
            probe_version=f"{'+'.join(s.name for s in specs)}-{head_kind}-"
                          f"{stamp:%Y%m%d}-{files[HEAD_FILE][:8]}",
            created_at=stamp.isoformat(timespec="seconds"),
            command=command if command is not None else current_command(),
            features=specs,
            head=HeadSpec(kind=head_kind, file=HEAD_FILE, params=jsonable(head_params),
                          input_dim=input_dim, opset=ONNX_OPSET,
                          selection=jsonable(selection) if selection is not None else None),
            labels=list(trained.labels.candidates),
            label_rule=trained.labels.rule.to_json(),
            thresholds={"success_score": float(trained.labels.rule.threshold)},
            label_costs={c: (None if v != v else v) for c, v in zip(trained.labels.candidates,
                                                                     trained.labels.mean_cost, strict=True)},
            calibration=jsonable(trained.calibration),
            metrics=jsonable(trained.metrics),
            training_data={
                "name": trained.data_name,
                "rows_used": int(len(trained.labels.rows)),
                "tier_counts": trained.labels.tier_counts(),
                "folds": trained.config.folds,
                "seed": trained.config.seed,
                **trained.data_fingerprint,
                # which rows it saw: `replay evaluate` flags figures on them as in-sample
                **({"rows": trained.training_rows} if trained.training_rows else {}),
                **({"logged": jsonable(trained.logged)} if trained.logged is not None else {}),
            },
            libraries=_libraries(),
            files=files,
        )
        write_card(card, tmp)
        if latency_texts:
            from triage.probes.latency import measure_decision_latency

            card = card.model_copy(update={"latency": measure_decision_latency(tmp, latency_texts)})
            write_card(card, tmp)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return card


def jsonable(obj: Any) -> Any:
    """Plain JSON values (numpy scalars/arrays -> Python, NaN -> None)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
