"""``neuralengine convert SOURCE``: released checkpoints into the engine's weights format.

* ``deepmind``: DeepMind's searchless-chess orbax checkpoints
  (:mod:`neuralengine.deepmind.convert`);
* ``nanogpt``: nanoGPT checkpoints such as Chess-GPT's, into ``pgn_lm`` text
  models (:mod:`neuralengine.textlm.convert`).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from neuralengine.deepmind.convert import add_parser
    from neuralengine.textlm.convert import add_arguments

    parser = argparse.ArgumentParser(
        prog="neuralengine convert",
        description="Convert released checkpoints into the engine's weights format.")
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    add_parser(sub)
    nano = sub.add_parser(
        "nanogpt", help="nanoGPT checkpoints (Chess-GPT's ckpt.pt) into pgn_lm text models",
        description="Convert a nanoGPT checkpoint (ckpt.pt with model and model_args, e.g. Chess-GPT's) into a "
                    "pgn_lm weights file. It is read with torch.load(weights_only=True); meta.pkl with a reader "
                    "that accepts only dicts, strings and integers.")
    add_arguments(nano)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.source == "nanogpt":
        from neuralengine.textlm.convert import run

        return run(args)
    from neuralengine.deepmind.convert import main as deepmind_main

    return deepmind_main(argv)


if __name__ == "__main__":
    sys.exit(main())
