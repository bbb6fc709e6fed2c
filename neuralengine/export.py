"""Export a weights file to ONNX.

``neuralengine export WEIGHTS`` writes the ONNX graph that the ``onnx``
backend runs, next to the weights (``model.safetensors`` → ``model.onnx``).
The graph is written with NumPy alone; only the int8 copy
(:mod:`neuralengine.backends.quantize`, which the ``Int8`` option runs for
full-attention models) needs the ``onnx`` package (the ``torch`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuralengine.backends.graph import export_onnx, export_weights_file, model_from_weights
from neuralengine.backends.onnx_writer import OPSET
from neuralengine.backends.quantize import QUANTIZATION_KEY, int8_path, quantize_int8
from neuralengine.weights import WeightsError, read_metadata

__all__ = ["OPSET", "QUANTIZATION_KEY", "export_onnx", "export_weights_file", "int8_path", "model_from_weights",
           "quantize_int8"]


def main(argv: list[str] | None = None) -> int:
    """``neuralengine export WEIGHTS [--onnx OUT] [--int8]``: print the written paths."""
    parser = argparse.ArgumentParser(
        prog="neuralengine export",
        description="Write the ONNX graph of a weights file, which the onnx backend runs. "
                    "By default the graph goes next to the weights, with the suffix .onnx.")
    parser.add_argument("weights", type=Path, help="a neuralengine .safetensors weights file")
    parser.add_argument("--onnx", metavar="OUT", type=Path, help="where to write the graph (default: WEIGHTS with .onnx)")
    parser.add_argument("--int8", action="store_true",
                        help="also write a dynamically quantised int8 graph (OUT with .int8.onnx), which the "
                             "engine runs with the Int8 option (full-attention models only)")
    args = parser.parse_args(argv)
    try:
        read_metadata(args.weights)  # a quick check of the header before the heavy imports
    except WeightsError as exc:
        print(f"neuralengine export: {exc}", file=sys.stderr)
        return 1
    if args.int8:
        try:
            import onnx  # noqa: F401
        except ImportError:
            print("neuralengine export: --int8 needs the onnx package: pip install 'neuralengine[torch]'",
                  file=sys.stderr)
            return 1
    if args.onnx is not None and args.onnx.is_dir():
        print(f"neuralengine export: {args.onnx} is a folder; name the .onnx file to write", file=sys.stderr)
        return 2
    try:
        path = export_weights_file(args.weights, args.onnx)
    except WeightsError as exc:
        print(f"neuralengine export: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"neuralengine export: cannot write {args.onnx or args.weights}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(path)
    if args.int8:
        print(quantize_int8(path))
    return 0
