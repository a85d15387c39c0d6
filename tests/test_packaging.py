"""One import name: Triage installs as the single top-level package ``triage``.

A user's own ``router.py`` or ``eval/`` package (common names in web apps and notebooks) must not
shadow Triage or be shadowed by it: a wheel built from this checkout, installed into a fresh
virtualenv, is imported from a working directory holding both, and routes a request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"triage": "triage", "router": "triage.router", "probes": "triage.probes",
           "policies": "triage.policies", "eval": "triage.eval"}


def test_pyproject_lists_every_package_folder() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder for folder, name in FOLDERS.items()}
    found = set()
    for folder, name in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(name if str(rel) == "." else name + "." + ".".join(rel.parts))
    assert sorted(config["packages"]) == sorted(found)


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_ignores_a_local_router_py_and_eval_package(tmp_path: Path) -> None:
    # Build from a clean copy of the sources (an in-tree build/ folder could hold stale files).
    src = tmp_path / "src"
    for name in ("triage", "router", "probes", "policies", "eval"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    [wheel] = list(wheels.glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The wheel, unpacked as pip would (no network, no dependency resolution) ...
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # ... and its dependencies from this test run's environment, on the path after it.
    (site / "triage-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    top_level = sorted({p.name.split(".")[0] for p in site.iterdir()
                        if p.name not in ("triage-deps.pth",) and not p.name.endswith(".dist-info")})
    assert top_level == ["triage"], top_level

    work = tmp_path / "user-project"
    (work / "eval").mkdir(parents=True)
    (work / "router.py").write_text("WHO = 'the user'\n")
    (work / "eval" / "__init__.py").write_text("WHO = 'the user'\n")
    script = (
        "import router, eval\n"
        "from triage import Router\n"
        "import triage.router.core\n"
        "assert router.WHO == 'the user' and eval.WHO == 'the user', (router, eval)\n"
        "assert triage.router.core.__file__.startswith(%r), triage.router.core.__file__\n"
        "r = Router.from_file(%r)\n"
        "d = r.route([{'role': 'user', 'content': 'What is 2 + 2?'}])\n"
        "print('tier', d.tier, 'strategy', d.strategy)\n"
    ) % (str(site), str(REPO / "policies" / "examples" / "local.yaml"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["TRIAGE_CACHE_DIR"] = str(_cache_dir())
    proc = subprocess.run([str(py), "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tier" in proc.stdout


def _cache_dir() -> Path:
    from triage.settings import get_settings

    return Path(get_settings().cache_dir).resolve()
