"""Run the ``neuralengine`` command as a plain ``pip install .`` would.

``python tests/plain_install.py ARGS...`` runs ``neuralengine ARGS...`` with
the optional packages made unimportable: PyTorch, onnx, orbax, JAX,
matplotlib and Ray (the ``torch``, ``research``, ``plot``, ``test`` and
``cluster`` extras). A test that runs through it shows that the core dependencies of
``pyproject.toml`` are enough for that command.
"""

from __future__ import annotations

import importlib.machinery
import sys

#: Top-level packages that a plain install does not have.
OPTIONAL = frozenset({"torch", "onnx", "orbax", "jax", "jaxlib", "matplotlib", "ray"})


class PlainPathFinder(importlib.machinery.PathFinder):
    """The standard path finder, blind to the optional packages: ``import torch`` fails and
    ``importlib.util.find_spec("torch")`` is None, exactly as when it is not installed."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):  # noqa: ANN001, ANN206
        if fullname.partition(".")[0] in OPTIONAL:
            return None
        return super().find_spec(fullname, path, target)


if __name__ == "__main__":
    sys.meta_path[:] = [PlainPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    from neuralengine.cli import main

    code = main(sys.argv[1:])
    leaked = sorted(name for name in sys.modules if name.partition(".")[0] in OPTIONAL)
    if leaked:  # cannot happen while the finder is in place; a guard against a loader bypassing it
        print(f"plain_install: optional modules were imported: {leaked}", file=sys.stderr)
        code = code or 3
    sys.exit(code)
