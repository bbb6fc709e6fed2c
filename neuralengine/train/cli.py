"""The command line of the trainer: ``neuralengine train``, ``python -m
neuralengine.train`` and ``torchrun --nproc-per-node N -m neuralengine.train``."""

from __future__ import annotations

import argparse
import json
import sys

from neuralengine.config import ATTENTIONS, BOARD_ONCE, PRESETS, ConfigError
from neuralengine.train.checkpoint import InitError, init_architecture
from neuralengine.train.loop import TrainConfig, model_config, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralengine train", description="Train an action-value model on shards. "
                                "(neuralengine train pgn_lm --help: a character-level text model on move transcripts.)")
    p.add_argument("--data", nargs="+", required=True, help="shard files or folders (train-*.neav)")
    p.add_argument("--test-data", nargs="+", help="held-out shards (default: test-*.neav beside the data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.csv, metrics.png, model.safetensors")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model size (default: small, or the --init model's sizes)")
    p.add_argument("--init", metavar="FILE",
                   help="start from these weights: a weights file (the shipped model), a run folder or its "
                        "checkpoint (with EMA and optimiser state when the architecture is the same); the "
                        "architecture is the init model's except what --attention, --preset, --layers and "
                        "--heads name, and a width other than its own is refused")
    p.add_argument("--layers", type=int)
    p.add_argument("--dim", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--attention", choices=ATTENTIONS,
                   help="layout (default: shared_board, or the --init model's)")
    p.add_argument("--attention-bias", action="store_true",
                   help="a learned additive attention bias per head over the tokens ([heads, T, T] in every "
                        "layer; full and board_head layouts); kept when the --init model has it")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=64,
                   help="positions per step (shared_board) or action values per step (full)")
    p.add_argument("--max-moves", type=int, default=64, help="cap on moves per position in a batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--loss", default="hl_gauss", choices=["hl_gauss", "onehot"])
    p.add_argument("--sigma-buckets", type=float, default=0.75, help="HL-Gauss std in bucket widths")
    p.add_argument("--flip", type=float, default=0.0,
                   help="probability of colour-flipping each training position (0.5 doubles the data)")
    p.add_argument("--rank-weight", type=float, default=0.0,
                   help="weight of the ranking loss over each position's moves (0: off)")
    p.add_argument("--rank-temperature", type=float, default=0.05,
                   help="softmax temperature of the ranking loss, in win-probability units")
    p.add_argument("--only-move-oversample", type=float, default=1.0, metavar="F",
                   help="draw only-move positions (best move ahead of the second by more than 0.2 win "
                        "probability) F times as often as the others (default 1: uniform; board-once layouts)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch default)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50, help="steps between metrics.csv rows")
    p.add_argument("--eval-positions", type=int, default=2000)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many minutes (0: none)")
    p.add_argument("--stop-after", type=int, help="stop after this many steps in this invocation (resume later)")
    p.add_argument("--max-positions", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine train``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "pgn_lm":
        from neuralengine.train.pgn_lm import main as pgn_main

        return pgn_main(argv[1:])
    args = build_parser().parse_args(argv)
    fields = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if not args.only_move_oversample > 0:
        print("neuralengine train: --only-move-oversample must be a positive factor", file=sys.stderr)
        return 2
    try:
        if args.init:
            # The init model's architecture, with what the flags name instead.
            values.update(init_architecture(args.init, args.preset, args.attention, args.layers, args.dim,
                                            args.heads, args.attention_bias))
        tc = TrainConfig(**values)
        cfg = model_config(tc)
    except InitError as exc:
        print(f"neuralengine train: --init: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"neuralengine train: {exc}", file=sys.stderr)
        return 2
    if tc.only_move_oversample != 1.0 and cfg.attention not in BOARD_ONCE:
        print(f"neuralengine train: --only-move-oversample needs a layout that reads whole positions "
              f"({', '.join(BOARD_ONCE)}); {cfg.attention} draws single action values", file=sys.stderr)
        return 2
    result = train(tc, progress=not args.quiet)
    if "final_metrics" in result:  # rank 0 (or a single process) reports
        print(json.dumps({k: result[k] for k in ("weights", "step", "final_metrics")}, indent=2))
    return 0
