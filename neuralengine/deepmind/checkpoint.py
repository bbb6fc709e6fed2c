"""Find and read DeepMind's orbax checkpoints.

DeepMind's training loop writes one folder per step, with one orbax item per
saved tree: ``<name>/<step>/params``, ``<name>/<step>/params_ema`` (and
optimiser state). The engines use ``params``; step 6,400,000 for the
action-value releases.

An item is an OCDBT key-value store (``manifest.ocdbt`` and its ``d/``
data files; older orbax releases wrote one folder per array instead) holding
one zarr array per parameter, named by its tree path joined with dots
(``embed.embeddings``, ``multi_head_dot_product_attention_3/linear_2.w``).
The item's ``_METADATA`` lists the tree's keys.

Two readers, both giving host NumPy arrays and neither needing the Haiku
template nor the sharding the arrays were saved with:

* ``tensorstore`` (a core dependency): the storage library orbax itself
  uses, reading the zarr arrays straight out of the store;
* ``orbax`` (``orbax-checkpoint`` with JAX, about five times the size): the
  fallback when tensorstore is missing or cannot read an item.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from neuralengine.deepmind.errors import DeepMindError

#: Orbax items holding the parameters (raw and exponential moving average).
PARAMS = "params"
PARAMS_EMA = "params_ema"

#: Files an orbax PyTree item folder holds (any one marks the folder as one);
#: ``checkpoint`` is the msgpack tree of older orbax releases.
_ORBAX_FILES = ("_METADATA", "manifest.ocdbt", "checkpoint", "_sharding")

INSTALL_HINT = "pip install tensorstore (a dependency of neuralengine; reinstall it)"


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
    """``orbax.checkpoint``, on the CPU, or a :class:`DeepMindError` naming the package."""
    # The arrays land on the host; never probe for accelerators.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import orbax.checkpoint as ocp
    except ImportError as exc:
        raise DeepMindError(f"reading DeepMind checkpoints needs orbax-checkpoint ({exc.name or exc} is missing): "
                            "pip install orbax-checkpoint") from None
    return ocp


#: ``read_params`` readers, tried in this order by ``auto``.
READERS = ("tensorstore", "orbax")


def read_params(item: str | os.PathLike[str], reader: str = "auto",
                check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Restore one orbax item as a nested dict of NumPy arrays.

    ``reader`` is ``tensorstore``, ``orbax`` or ``auto``: tensorstore when it
    is installed, else orbax; orbax also when tensorstore fails on the item
    and orbax is installed. ``check``, if given, is called after each array
    (after the whole tree with orbax), when no read is in flight; it may
    raise to stop the reading.
    """
    if reader == "tensorstore":
        return read_params_tensorstore(item, check)
    if reader == "orbax":
        return read_params_orbax(item, check)
    if reader != "auto":
        raise ValueError(f"unknown reader {reader!r}; choose from auto, {', '.join(READERS)}")
    if not _installed("tensorstore"):
        if not _installed("orbax.checkpoint"):
            raise DeepMindError(f"reading DeepMind checkpoints needs tensorstore: {INSTALL_HINT}")
        return read_params_orbax(item, check)
    try:
        return read_params_tensorstore(item, check)
    except DeepMindError:
        if not _installed("orbax.checkpoint"):
            raise
    return read_params_orbax(item, check)


def readers_installed() -> list[str]:
    """The readers whose library is installed, in the order ``auto`` tries them."""
    return [name for name, module in zip(READERS, ("tensorstore", "orbax.checkpoint")) if _installed(module)]


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        return False


def import_tensorstore() -> Any:
    """``tensorstore``, or a :class:`DeepMindError` naming the extra."""
    try:
        import tensorstore as ts
    except ImportError as exc:
        raise DeepMindError(f"reading DeepMind checkpoints needs tensorstore ({exc.name or exc} is missing): "
                            f"{INSTALL_HINT}") from None
    return ts


#: Key suffixes marking an array inside the store, and the tensorstore driver reading it.
_ARRAY_MARKERS = (("/.zarray", "zarr"), ("/zarr.json", "zarr3"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stored_keys(item: Path) -> dict[str, tuple[str, ...]] | None:
    """Array name -> tree key path, from the item's ``_METADATA`` (None without one)."""
    path = item / "_METADATA"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        entries = meta["tree_metadata"]
        keys = {}
        for entry in entries.values():
            path_keys = tuple(str(part["key"]) for part in entry["key_metadata"])
            keys[".".join(path_keys)] = path_keys
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DeepMindError(f"{path} is not orbax tree metadata") from None
    return keys


def read_params_tensorstore(item: str | os.PathLike[str], check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Read one orbax item with tensorstore alone (no orbax, no JAX)."""
    item = Path(item).absolute()
    ts = import_tensorstore()
    store: dict[str, Any] = {"driver": "file", "path": str(item) + "/"}
    if (item / "manifest.ocdbt").is_file():
        store = {"driver": "ocdbt", "base": store}
    context = ts.Context()
    try:
        listed = ts.KvStore.open(store, context=context).result().list().result()
    except Exception as exc:  # tensorstore raises ValueError and others for unreadable stores
        raise DeepMindError(f"cannot read the checkpoint {item}: {_first_line(exc)}") from None
    arrays: dict[str, str] = {}
    for raw in listed:
        key = raw.decode("utf-8", "replace")
        for suffix, driver in _ARRAY_MARKERS:
            if key.endswith(suffix):
                arrays[key[:-len(suffix)]] = driver
    keys = _stored_keys(item)
    if keys is None:  # no tree metadata: the array names are the dotted key paths
        keys = {name: tuple(name.split(".")) for name in arrays}
    if not keys:
        raise DeepMindError(f"{item} holds no parameter tree")
    absent = sorted(name for name in keys if name not in arrays)
    if absent:
        raise DeepMindError(f"{item}: {', '.join(absent[:3])} {'is' if len(absent) == 1 else 'are'} not stored as "
                            f"zarr arrays")
    tree: dict[str, Any] = {}
    for name, path_keys in sorted(keys.items()):
        # Inside an OCDBT store the path is the key prefix; a plain folder adds it to its own path.
        inner = {**store, "path": store.get("path", "") + name + "/"}
        spec = {"driver": arrays[name], "kvstore": inner}
        try:
            value = ts.open(spec, context=context, open=True, read=True).result().read().result()
        except Exception as exc:
            raise DeepMindError(f"cannot read {name} from the checkpoint {item}: {_first_line(exc)}") from None
        node = tree
        for part in path_keys[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DeepMindError(f"{item}: {name} is stored both as an array and as a subtree")
        node[path_keys[-1]] = value
        if check is not None:
            check()
    return tree


def read_params_orbax(item: str | os.PathLike[str], check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Restore one orbax item with orbax (and JAX) as a nested dict of NumPy arrays."""
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
    if check is not None:
        check()
    if not isinstance(restored, Mapping):
        raise DeepMindError(f"{item} does not hold a dictionary of parameters")
    return dict(restored)
