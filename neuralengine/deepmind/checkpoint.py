"""Find and read DeepMind's orbax checkpoints.

DeepMind's training loop writes one folder per step, with one orbax item per
saved tree: ``<name>/<step>/params``, ``<name>/<step>/params_ema`` (and
optimiser state). The engines use ``params``; step 6,400,000 for the
action-value releases.

Reading needs ``orbax-checkpoint`` (the ``deepmind`` extra) but neither the
Haiku template nor the sharding the arrays were saved with: every leaf is
restored as a host NumPy array, using the tree stored in the checkpoint's
own metadata.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from neuralengine.deepmind import DeepMindError

#: Orbax items holding the parameters (raw and exponential moving average).
PARAMS = "params"
PARAMS_EMA = "params_ema"

#: Files an orbax PyTree item folder holds (any one marks the folder as one);
#: ``checkpoint`` is the msgpack tree of older orbax releases.
_ORBAX_FILES = ("_METADATA", "manifest.ocdbt", "checkpoint", "_sharding")

INSTALL_HINT = "pip install 'neuralengine[deepmind]'"


@dataclass(frozen=True)
class Location:
    """One parameter tree inside a checkpoint folder."""

    item: Path
    name: str
    step: int | None
    ema: bool


def is_orbax_item(path: Path) -> bool:
    """Whether ``path`` looks like one orbax item (a saved PyTree)."""
    return path.is_dir() and any((path / name).exists() for name in _ORBAX_FILES)


def _is_step_dir(path: Path) -> bool:
    return any(is_orbax_item(path / item) for item in (PARAMS, PARAMS_EMA))


def list_steps(root: Path) -> list[int]:
    """The steps saved under ``root`` (numeric folders holding parameters), ascending."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    return sorted(int(p.name) for p in entries if p.name.isdigit() and _is_step_dir(p))


def _contents(path: Path, limit: int = 8) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f" … ({len(names) - limit} more)" if len(names) > limit else "")


def locate(path: str | os.PathLike[str], step: int | None = None, ema: bool = False) -> Location:
    """Find the parameter item of a checkpoint.

    ``path`` may be the model folder (``…/9M``, holding step folders), one
    step folder (``…/9M/6400000``) or the item itself (``…/6400000/params``).
    Without ``step`` the latest saved step is used. ``ema`` picks
    ``params_ema``.
    """
    path = Path(path)
    if not path.exists():
        raise DeepMindError(f"checkpoint folder not found: {path}")
    if not path.is_dir():
        raise DeepMindError(f"{path} is a file, not a checkpoint folder")
    item_name = PARAMS_EMA if ema else PARAMS

    if is_orbax_item(path) and not _is_step_dir(path) and not list_steps(path):
        # The item folder itself.
        found_step = int(path.parent.name) if path.parent.name.isdigit() else None
        if step is not None and found_step is not None and step != found_step:
            raise DeepMindError(f"{path} holds step {found_step}, not step {step}")
        if ema and path.name != PARAMS_EMA:
            raise DeepMindError(f"{path} is not a {PARAMS_EMA} folder; name the step folder to choose it")
        name = path.parent.parent.name if found_step is not None else path.parent.name
        return Location(path, name or "checkpoint", found_step, path.name == PARAMS_EMA)

    if _is_step_dir(path):
        step_dir = path
        found_step = int(path.name) if path.name.isdigit() else None
        if step is not None and found_step is not None and step != found_step:
            raise DeepMindError(f"{path} is the folder of step {found_step}, not step {step}")
        name = path.parent.name if found_step is not None else path.name
    else:
        steps = list_steps(path)
        if not steps:
            raise DeepMindError(
                f"{path} is not a DeepMind checkpoint folder: expected <step>/{PARAMS} orbax folders inside it "
                f"(found: {_contents(path)})")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise DeepMindError(f"step {step} is not in {path}; saved steps: {', '.join(map(str, steps))}")
        step_dir = path / str(step)
        found_step = step
        name = path.name
    item = step_dir / item_name
    if not is_orbax_item(item):
        raise DeepMindError(f"{step_dir} has no {item_name} checkpoint (found: {_contents(step_dir)})")
    return Location(item, name or "checkpoint", found_step, ema)


def _metadata_tree(meta: Any) -> Any:
    """The tree of array metadata, whatever wrapper this orbax version returns."""
    node = meta
    for attr in ("item_metadata", "tree"):
        inner = getattr(node, attr, None)
        if inner is not None and not isinstance(node, Mapping):
            node = inner
    return node


def _map_leaves(tree: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(tree, Mapping):
        return {key: _map_leaves(value, fn) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_leaves(value, fn) for value in tree)
    return fn(tree)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence orbax's and JAX's log chatter while reading."""
    loggers = [logging.getLogger(name) for name in ("", "absl", "jax", "orbax")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def import_orbax() -> Any:
    """``orbax.checkpoint``, on the CPU, or a :class:`DeepMindError` naming the extra."""
    # The arrays land on the host; never probe for accelerators.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import orbax.checkpoint as ocp
    except ImportError as exc:
        raise DeepMindError(f"reading DeepMind checkpoints needs orbax-checkpoint ({exc.name or exc} is missing): "
                            f"{INSTALL_HINT}") from None
    return ocp


def read_params(item: str | os.PathLike[str]) -> dict[str, Any]:
    """Restore one orbax item as a nested dict of NumPy arrays."""
    import numpy as np

    item = Path(item).absolute()
    ocp = import_orbax()
    with _quiet():
        checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
        try:
            tree = _metadata_tree(checkpointer.metadata(item))
            if not isinstance(tree, Mapping) or not tree:
                raise DeepMindError(f"{item} holds no parameter tree")
            restore_args = _map_leaves(tree, lambda _: ocp.RestoreArgs(restore_type=np.ndarray))
            if hasattr(ocp, "args") and hasattr(ocp.args, "PyTreeRestore"):
                restored = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=restore_args))
            else:  # orbax releases before the ``args`` API
                restored = checkpointer.restore(item, restore_args=restore_args)
        except DeepMindError:
            raise
        except Exception as exc:  # orbax raises many kinds; all mean an unreadable checkpoint
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeepMindError(f"cannot read the orbax checkpoint {item}: {text}") from None
        finally:
            close = getattr(checkpointer, "close", None)
            if close:
                close()
    if not isinstance(restored, Mapping):
        raise DeepMindError(f"{item} does not hold a dictionary of parameters")
    return dict(restored)
