"""The ``neuralengine`` command.

With no arguments (or ``uci``) it runs the UCI loop, so GUIs can start it
directly. Every other subcommand lives in its own module and is imported only
when asked for, which keeps the UCI start-up fast.
"""

from __future__ import annotations

import importlib
import os
import sys

#: subcommand -> (module, one-line help). Each module exposes ``main(argv) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "uci": ("neuralengine.uci", "run the UCI protocol on stdin/stdout (the default)"),
    "analyse": ("neuralengine.analyse", "rank the legal moves of a position with win % and centipawns"),
    "serve": ("neuralengine.web.serve", "a local analysis board in the browser: analysis, play, game review"),
    "bench": ("neuralengine.benchmarks.speed", "speed benchmark: positions/s, nodes/s, latency"),
    "match": ("neuralengine.benchmarks.match", "play matches (cutechess-cli, fastchess or built in) and rate them"),
    "puzzles": ("neuralengine.benchmarks.puzzles", "solve Lichess puzzles from a CSV file and report accuracy"),
    "datagen": ("neuralengine.data.datagen", "generate positions from Stockfish self-play or PGN/EPD files"),
    "annotate": ("neuralengine.data.annotation", "score every legal move of positions with Stockfish"),
    "prepare": ("neuralengine.data.prepare", "turn annotated text into train/test shards"),
    "train": ("neuralengine.train.cli", "train a model on action-value shards"),
    "export": ("neuralengine.export", "write the ONNX graph (and optionally int8) of a weights file"),
    "convert": ("neuralengine.convert", "convert released checkpoints (DeepMind, nanoGPT / Chess-GPT)"),
    "probe": ("neuralengine.research.command", "linear probes: what the network's layers know about the board"),
    "download": ("neuralengine.download", "download and convert a released model (DeepMind 9M/136M/270M, Chess-GPT)"),
    "lichess": ("neuralengine.lichess", "check a lichess-bot configuration file (lichess check config.yml)"),
}


def _usage() -> str:
    lines = ["usage: neuralengine [COMMAND] [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'neuralengine COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["uci"]
    if args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from neuralengine import __version__

        print(f"neuralengine {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"neuralengine: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        # Ctrl-C where the command has no handling of its own (while its modules
        # load, say): one line and the shell's status for SIGINT, no traceback.
        print(f"neuralengine {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``neuralengine analyse | head``): stop quietly, as
        # Unix tools do. Point stdout at /dev/null so that the interpreter's own
        # flush at exit does not raise the same error again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":
    sys.exit(main())
