"""Packaging: the shipped weights travel inside the package, whatever the install scheme."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Run by the installed copy: where it lives, which weights it picks, and whether they load.
PROBE = """
import json, neuralengine
from neuralengine.paths import default_weights
from neuralengine.weights import load_weights
path = default_weights()
ok = path.is_file() and load_weights(path).config is not None
print(json.dumps({"package": neuralengine.__file__, "weights": str(path), "loads": ok,
                  "onnx": path.with_suffix(".onnx").is_file()}))
"""


def _copy_source(dest: Path) -> Path:
    """The files a build reads, copied so that building leaves the checkout untouched."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "neuralengine", dest / "neuralengine", ignore=ignore)
    shutil.copytree(REPO / "weights", dest / "weights", ignore=ignore)
    return dest


def _site_packages(prefix: Path) -> Path:
    found = [p for p in prefix.rglob("site-packages") if (p / "neuralengine").is_dir()]
    assert len(found) == 1, f"no single site-packages with neuralengine under {prefix}: {found}"
    return found[0]


@pytest.mark.slow
def test_prefix_install_finds_the_shipped_weights(tmp_path: Path) -> None:
    """An install whose data folder is not ``sys.prefix`` (``--user``, ``--prefix``, Debian's
    ``/usr/local``) still loads the shipped weights: they are package data."""
    source = _copy_source(tmp_path / "src")
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip would first uninstall the copy in the running environment.
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                            "--no-index", "--ignore-installed", "--disable-pip-version-check",
                            "--prefix", str(prefix), str(source)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "uninstall" not in build.stdout.lower()
    site = _site_packages(prefix)
    env = {k: v for k, v in os.environ.items() if k not in ("NEURALENGINE_WEIGHTS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["package"]).is_relative_to(site), found  # the installed copy, not the checkout
    assert Path(found["weights"]).is_relative_to(prefix), found
    assert found["loads"] and found["onnx"], found
    # Every code package travels too (setup.py discovers them; nothing is listed by hand).
    wanted = {p.parent.relative_to(source) for p in (source / "neuralengine").rglob("__init__.py")}
    assert all((site / package / "__init__.py").is_file() for package in wanted)
    # So does the page of ``neuralengine serve`` (data only, no ``__init__.py``).
    assert all((site / "neuralengine" / "web" / "static" / name).is_file()
               for name in ("index.html", "app.js", "style.css"))


def test_a_plain_install_pulls_in_neither_torch_nor_ray() -> None:
    """``pip install .`` gets the core dependencies only: PyTorch (training, torchrun), Ray (the annotation
    farm), onnx, orbax and JAX stay in extras. tensorstore is core: it converts DeepMind's checkpoints."""
    import re

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    core = names(project["dependencies"])
    assert core == {"numpy", "chess", "onnxruntime", "safetensors", "tqdm", "tensorstore"}
    extras = project["optional-dependencies"]
    assert "ray" in names(extras["cluster"]) and "torch" in names(extras["torch"])
