"""``neuralengine download NAME``: fetch and convert a released model into the cache.

NAME is one of DeepMind's models (:data:`neuralengine.paths.DEEPMIND_MODELS`,
handled by :mod:`neuralengine.deepmind.download`) or one of Chess-GPT's
(:data:`neuralengine.paths.CHESS_GPT_MODELS`, handled by
:mod:`neuralengine.textlm.download`). Both download with progress, resume an
interrupted download, keep the result in the cache, and let ``WeightsFile``
and ``--weights`` take the bare NAME.
"""

from __future__ import annotations

import argparse
import sys

from neuralengine.paths import CHESS_GPT_MODELS, DEEPMIND_MODELS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralengine download",
        description="Download a released model (DeepMind's searchless-chess models, Chess-GPT's text models), check "
                    "it, and convert it into the cache; WeightsFile and --weights then accept its name.")
    parser.add_argument("name", metavar="NAME",
                        help=f"DeepMind: {', '.join(DEEPMIND_MODELS)}; Chess-GPT: {', '.join(CHESS_GPT_MODELS)}")
    parser.add_argument("--url", metavar="BASE",
                        help="where the files are (DeepMind: BASE/NAME.zip, default $NEURALENGINE_DEEPMIND_URL or "
                             "DeepMind's bucket; Chess-GPT: BASE/<file>, default $NEURALENGINE_CHESSGPT_URL or "
                             "the Hugging Face repository)")
    parser.add_argument("--force", action="store_true", help="download and convert again even if already done")
    parser.add_argument("--keep-archive", action="store_true",
                        help="keep the downloaded archive or checkpoint after converting it")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="DeepMind: keep the unpacked orbax checkpoint (in the cache's deepmind/checkpoints/)")
    parser.add_argument("--no-onnx", action="store_true", help="DeepMind: write the weights file only")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not any(args.name.lower() == name.lower() for name in CHESS_GPT_MODELS):
        if not any(args.name.lower() == name.lower() for name in DEEPMIND_MODELS):
            print(f"neuralengine download: unknown model {args.name!r}; DeepMind released "
                  f"{', '.join(DEEPMIND_MODELS)}; Chess-GPT's are {', '.join(CHESS_GPT_MODELS)}", file=sys.stderr)
            return 2
        from neuralengine.deepmind.download import main as deepmind_main

        return deepmind_main(argv)
    from neuralengine.textlm.download import download, model_name
    from neuralengine.weights import WeightsError

    name = model_name(args.name)
    try:
        path = download(name, base_url=args.url, force=args.force, keep_archive=args.keep_archive,
                        progress=not args.quiet)
    except (WeightsError, OSError) as exc:
        print(f"neuralengine download: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neuralengine download: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(path)
    print(f"WeightsFile: {name}    (setoption name WeightsFile value {name}; neuralengine analyse --weights {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
