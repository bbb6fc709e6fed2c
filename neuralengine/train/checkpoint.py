"""What a run keeps on disk and where it starts from: checkpoints, ``--init``
and the exported model.

Checkpoints hold the model, its EMA and the optimiser state as safetensors
(no pickle), with the progress record in the file's metadata, so a run
resumes exactly where it stopped. ``--init`` starts a new run from a weights
file (the shipped model), a run folder or a checkpoint. The exported model is
the EMA in the engine's weights format, with its ONNX graph beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralengine.atomic import atomic_path, write_text
from neuralengine.config import PRESETS, ConfigError, ModelConfig
from neuralengine.model import Transformer
from neuralengine.weights import WeightsError, save_weights

#: The checkpoint file of a run folder: model, EMA and optimiser tensors, with
#: the progress record (step, action values, elapsed) in its metadata, so that
#: one ``os.replace`` makes the whole checkpoint visible at once.
CHECKPOINT = "checkpoint.safetensors"


class InitError(ValueError):
    """An ``--init`` source that cannot seed this run; the message says why in one line."""


def _state_tensors(model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    out.update({f"ema/{k}": v.detach().float().cpu().contiguous() for k, v in ema.items()})
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, val in opt.state.get(p, {}).items():
                if torch.is_tensor(val):
                    out[f"opt/{names[id(p)]}/{key}"] = val.detach().float().cpu().contiguous().reshape(val.shape)
    return out


def save_checkpoint(run: Path, model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    info: dict[str, Any]) -> None:
    """One atomic checkpoint: a kill at any moment leaves either the previous
    checkpoint or this one, never a mixture. ``checkpoint.json`` is a readable
    copy of the progress record; resuming does not depend on it."""
    from safetensors.torch import save_file

    tensors = _state_tensors(model, ema, opt)
    with atomic_path(run / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    write_text(run / "checkpoint.json", json.dumps(info, indent=2))


def checkpoint_info(path: Path) -> dict[str, Any]:
    """The progress record stored in a checkpoint file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "info" in meta:
        return json.loads(meta["info"])
    # Checkpoints written before the record moved into the file.
    return json.loads((path.parent / "checkpoint.json").read_text())


def load_checkpoint(run: Path, model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Restore model, EMA and optimiser state from a run folder or checkpoint
    file (``tensors``: its contents, when already read); returns its record."""
    from safetensors.torch import load_file

    path = run / CHECKPOINT if run.is_dir() else run
    if tensors is None:
        tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    for k in ema:
        ema[k].copy_(tensors[f"ema/{k}"])
    params = dict(model.named_parameters())
    for name, p in params.items():
        state = {key.rsplit("/", 1)[1]: v.to(p.device) for key, v in tensors.items()
                 if key.startswith(f"opt/{name}/") and key.count("/") == name.count("/") + 2}
        if state:
            opt.state[p] = state
    return checkpoint_info(path)


def export_model(run: Path, cfg: ModelConfig, ema: dict[str, torch.Tensor], provenance: dict[str, Any],
                 name: str = "model") -> Path:
    """Write the EMA weights as ``<name>.safetensors`` in the engine's format,
    and their ONNX graph beside them; returns the weights file."""
    tensors = {k: v.detach().float().cpu().numpy() for k, v in ema.items()}
    path = save_weights(run / f"{name}.safetensors", cfg, tensors, provenance)
    from neuralengine.export import export_weights_file

    export_weights_file(path)
    return path


# --------------------------------------------------------------------------
# --init
# --------------------------------------------------------------------------


def init_source(path: str) -> tuple[Path, bool]:
    """Resolve ``--init``: a run folder (its checkpoint, else its exported
    model), a checkpoint file, or a weights file. Returns (file, is_checkpoint).
    Raises :class:`InitError` for anything else."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if p.is_dir():
        if (p / CHECKPOINT).exists():
            return p / CHECKPOINT, True
        p = p / "model.safetensors"
    if not p.is_file():
        raise InitError(f"{path} is not a weights file, checkpoint or run folder")
    try:
        with safe_open(str(p), framework="pt") as fh:
            is_checkpoint = any(k.startswith("model/") for k in fh.keys())
    except (SafetensorError, OSError) as exc:
        raise InitError(f"{p} is not a safetensors file ({exc})") from None
    return p, is_checkpoint


def init_config(path: str) -> ModelConfig:
    """The architecture of an ``--init`` source (:class:`InitError` when it has none)."""
    from neuralengine.weights import config_from_metadata, read_metadata

    source, is_checkpoint = init_source(path)
    try:
        if is_checkpoint:
            config = source.parent / "config.json"
            return ModelConfig.from_dict(json.loads(config.read_text())["model"])
        return config_from_metadata(read_metadata(source))
    except OSError as exc:
        raise InitError(f"{source} is a checkpoint without a readable config.json beside it "
                        f"({exc.strerror or exc})") from None
    except (KeyError, ValueError, WeightsError) as exc:  # ConfigError and bad JSON are ValueErrors
        raise InitError(str(exc) if isinstance(exc, (WeightsError, ConfigError)) else
                        f"{source}: the config.json beside it names no model ({exc})") from None


def init_architecture(path: str, preset_name: str | None = None, attention: str | None = None,
                      layers: int | None = None, dim: int | None = None,
                      heads: int | None = None, attention_bias: bool = False) -> dict[str, Any]:
    """The architecture of a run that starts from ``path``, as
    :class:`~neuralengine.train.loop.TrainConfig` fields.

    The ``--init`` model's architecture, with what the command line names
    instead: ``attention`` another layout (a shared-board encoder can seed a
    board-head model), ``preset_name`` other sizes, and ``layers``, ``dim``
    and ``heads`` single sizes; ``attention_bias`` adds the learned attention
    bias (kept when the init model has it; it starts at zero, so the new model
    first computes what the init model did). A width that differs from the init model's
    would leave none of its weights usable, so it raises :class:`InitError`.
    """
    src = init_config(path)
    sizes = PRESETS[preset_name] if preset_name else (src.num_layers, src.embed_dim, src.num_heads)
    chosen = {"attention": attention or src.attention, "layers": layers or sizes[0], "dim": dim or sizes[1],
              "heads": heads or sizes[2], "attention_bias": attention_bias or src.attention_bias}
    if chosen["dim"] != src.embed_dim:
        asked = f"--dim {dim}" if dim else f"--preset {preset_name}"
        raise InitError(f"{path} is a {src.num_layers}-layer model of width {src.embed_dim}, but {asked} asks for "
                        f"width {chosen['dim']}: none of its weights would fit. Leave out --preset and --dim to "
                        "train at the init model's sizes")
    return chosen


def init_from(path: str, model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> str:
    """Start from existing weights: every tensor whose name and shape match is
    copied (the position table is cut to this model's rows, so a shared-board
    encoder can seed a board-head model); the rest keep their fresh values. A
    checkpoint of the same architecture also brings its EMA and optimiser
    state. Returns a one-line summary; raises :class:`InitError` for a source
    that holds no usable weights."""
    from safetensors.torch import load_file

    source, is_checkpoint = init_source(path)
    if is_checkpoint:
        tensors = load_file(str(source))
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    else:
        from neuralengine.weights import load_weights

        try:
            loaded = load_weights(source)
        except WeightsError as exc:
            raise InitError(str(exc)) from None
        weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in loaded.tensors.items()}
    own = model.state_dict()
    copied, fresh = {}, []
    for name, value in own.items():
        src = weights.get(name)
        if src is not None and name == "pos_embed" and src.shape[1:] == value.shape[1:] and src.shape[0] >= value.shape[0]:
            src = src[: value.shape[0]]
        if src is not None and tuple(src.shape) == tuple(value.shape):
            copied[name] = src.to(value.dtype)
        else:
            fresh.append(name)
    model.load_state_dict({**own, **copied})
    complete = not fresh and len(copied) == len(weights)
    if is_checkpoint and complete:
        load_checkpoint(source, model, ema, opt, tensors)
        return f"initialised from checkpoint {source} (model, EMA and optimiser state)"
    for k in ema:
        ema[k].copy_(model.state_dict()[k].float())
    note = f"; fresh: {', '.join(sorted({n.split('.')[0] for n in fresh}))}" if fresh else ""
    return f"initialised from {source}: {len(copied)} of {len(own)} tensors{note}"
