"""``neuralengine probe``: the command. A text model (``pgn_lm``) goes to
:mod:`neuralengine.research.text_probe`, every other model to :mod:`neuralengine.research.probe`; both take
the same options and write the same ``probes.json`` and ``probes.png``."""

from __future__ import annotations

import sys
from pathlib import Path

from neuralengine.research.probe import ProbeError, build_parser, write_report
from neuralengine.research.probe import main as board_main


def text_model(name: str | None) -> Path | None:
    """The weights file that ``--weights`` names when it is a text model, else ``None``."""
    if not name:
        return None
    from neuralengine.config import TEXT_KINDS
    from neuralengine.paths import text_model_name
    from neuralengine.weights import WeightsError, read_metadata, weights_kind

    path = Path(name)
    if text_model_name(name) is not None:  # a downloaded Chess-GPT model
        from neuralengine.deepmind import resolve_weights

        try:
            path = resolve_weights(name)
        except WeightsError as exc:
            raise ProbeError(str(exc)) from None
    if not path.is_file():
        return None
    try:
        return path if weights_kind(read_metadata(path)) in TEXT_KINDS else None
    except WeightsError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine probe``."""
    args = build_parser().parse_args(argv)
    try:
        weights = text_model(args.weights)
    except ProbeError as exc:
        print(f"neuralengine probe: {exc}", file=sys.stderr)
        return 1
    if weights is None:
        return board_main(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("neuralengine probe: needs PyTorch: pip install 'neuralengine[research]'", file=sys.stderr)
        return 1
    from neuralengine.research.text_probe import TEXT_FAMILIES, format_text_intervention, run_text

    if args.features is None:
        args.features = ",".join(TEXT_FAMILIES)
    try:
        report = run_text(args, weights)
    except ProbeError as exc:
        print(f"neuralengine probe: {exc}", file=sys.stderr)
        return 1
    write_report(report, args.out, format_text_intervention)
    return 0


if __name__ == "__main__":
    sys.exit(main())
