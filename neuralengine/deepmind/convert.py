"""``neuralengine convert deepmind``: DeepMind checkpoint → weights file + ONNX.

Usage::

    neuralengine convert deepmind CKPT_DIR [--step N] [--ema] [--heads H] --out DIR

``CKPT_DIR`` is a downloaded model folder (``checkpoints/270M``), one of
its step folders, or a ``params`` folder. The result is
``DIR/<name>-<step>.safetensors`` with its ONNX graph beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from neuralengine.config import KINDS
from neuralengine.deepmind.checkpoint import READERS, Location, locate, read_params
from neuralengine.deepmind.mapping import map_tree
from neuralengine.weights import WeightsError

#: Bumped whenever the mapping changes, so cached conversions are redone.
CONVERTER_VERSION = 1

Reporter = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def output_name(location: Location) -> str:
    """File name of a conversion: ``<name>-<step>[-ema].safetensors``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", location.name).strip("._") or "deepmind"
    step = f"-{location.step}" if location.step is not None else ""
    return f"{name}{step}{'-ema' if location.ema else ''}.safetensors"


def convert_location(location: Location, target: str | os.PathLike[str], *, heads: int | None = None,
                     kind: str | None = None, layer_norm_eps: float | None = None, onnx: bool = True,
                     report: Reporter = _stderr, progress: bool = True, reader: str = "auto",
                     check: Callable[[], None] | None = None) -> Path:
    """Read, map and write one checkpoint; returns the weights path.

    ``reader`` picks the library reading the checkpoint (``tensorstore``,
    ``orbax`` or ``auto``; see :func:`~neuralengine.deepmind.checkpoint.read_params`).
    ``check``, if given, is called between the arrays read and between the
    stages; it may raise to stop the conversion (the files are written
    atomically, so nothing half-written is left).
    """
    from neuralengine.progress import Progress
    from neuralengine.weights import save_weights

    check = check or (lambda: None)
    target = Path(target)
    with Progress(f"converting {location.name}", total=4 if onnx else 3, unit="stages", enabled=progress) as bar:
        bar.update(0, postfix="reading the orbax checkpoint")
        tree = read_params(location.item, reader, check)
        bar.update(1, postfix="mapping the parameters")
        mapped = map_tree(tree, heads=heads, kind=kind, layer_norm_eps=layer_norm_eps, hint=location.name)
        del tree
        check()
        cfg = mapped.config
        provenance = {
            "source": "DeepMind searchless_chess checkpoint",
            "checkpoint": location.name,
            "checkpoint_path": str(location.item),
            "step": location.step,
            "ema": location.ema,
            "naming": mapped.style,
            "converter_version": CONVERTER_VERSION,
        }
        if mapped.notes:
            provenance["notes"] = mapped.notes
        bar.update(1, postfix="writing the weights")
        save_weights(target, cfg, mapped.tensors, provenance=provenance)
        del mapped
        check()
        bar.update(1, postfix="exporting ONNX" if onnx else "")
        if onnx:
            from neuralengine.export import export_weights_file

            export_weights_file(target)
            check()
            bar.update(1)
    report(f"{location.item} → {target}: {cfg.kind}, {cfg.num_layers} layers × {cfg.embed_dim}, "
           f"{cfg.num_heads} heads, {cfg.num_parameters():,} parameters ({provenance['naming']} names)")
    for note in provenance.get("notes", []):
        report(f"note: {note}")
    return target


def convert_checkpoint(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, step: int | None = None,
                       ema: bool = False, heads: int | None = None, kind: str | None = None,
                       layer_norm_eps: float | None = None, onnx: bool = True, report: Reporter = _stderr,
                       progress: bool = True, reader: str = "auto") -> Path:
    """Convert the checkpoint at ``path`` into ``out_dir``; returns the weights path."""
    location = locate(path, step, ema)
    target = Path(out_dir) / output_name(location)
    return convert_location(location, target, heads=heads, kind=kind, layer_norm_eps=layer_norm_eps, onnx=onnx,
                            report=report, progress=progress, reader=reader)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralengine convert",
        description="Convert released checkpoints into the engine's weights format (with the ONNX graph).")
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    add_parser(sub)
    return parser


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``deepmind`` subcommand's parser, added to the subparsers ``sub``."""
    dm = sub.add_parser(
        "deepmind", help="DeepMind's searchless_chess orbax checkpoints (9M, 136M, 270M, 9M_state_value, "
                         "9M_behavioral_cloning)",
        description="Convert a DeepMind searchless_chess checkpoint folder (e.g. checkpoints/270M, with "
                    "<step>/params inside). tensorstore reads it; orbax, when installed, is the fallback.")
    dm.add_argument("checkpoint", metavar="CKPT_DIR", help="model folder, step folder or params folder")
    dm.add_argument("--step", type=int, help="step to convert (default: the latest saved)")
    dm.add_argument("--ema", action="store_true", help="convert params_ema instead of params "
                                                       "(DeepMind's engines use params)")
    dm.add_argument("--heads", type=int, help="attention heads (default 8, as in every released model)")
    dm.add_argument("--kind", choices=KINDS, help="predictor kind (default: inferred from the shapes and the "
                                                  "folder name)")
    dm.add_argument("--layer-norm-eps", type=float,
                    help="LayerNorm epsilon (default: 1e-5 for Haiku names, 1e-6 for Flax names)")
    dm.add_argument("--out", default=".", metavar="DIR", help="output folder (default: the current folder)")
    dm.add_argument("--no-onnx", action="store_true", help="write the weights file only")
    dm.add_argument("--reader", choices=("auto",) + READERS, default="auto",
                    help="library reading the checkpoint (default auto: tensorstore, else orbax)")
    dm.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return dm


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.heads is not None and args.heads < 1:
        print("neuralengine convert: --heads must be positive", file=sys.stderr)
        return 2
    try:
        path = convert_checkpoint(args.checkpoint, args.out, step=args.step, ema=args.ema, heads=args.heads,
                                  kind=args.kind, layer_norm_eps=args.layer_norm_eps, onnx=not args.no_onnx,
                                  progress=not args.quiet, reader=args.reader)
    except (WeightsError, OSError) as exc:
        print(f"neuralengine convert: {exc}", file=sys.stderr)
        return 1
    print(path)
    onnx_path = path.with_suffix(".onnx")
    if onnx_path.is_file():
        print(onnx_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
