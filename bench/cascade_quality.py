"""How often the cascade plays the full evaluation's move, as a function of the moves the big model scores.

Two trained models stand in for the big and the fast one (``--big`` and
``--fast``). In every position both score all legal moves; the full
evaluation's move is the engine's choice from the big model's scores (rules
and conversion included). The cascade with ``k`` scored moves is the engine's
own choice (:meth:`~neuralengine.engine.Engine._choose`) from the big model's
scores of the fast model's best ``k`` moves, in the order
:meth:`~neuralengine.engine.Engine._cascade` uses; ``k = 0`` is the fast
model's own move. A position with fewer than ``k`` legal moves counts as
agreeing (the cascade scores all of them). The curve is printed (``--json``
for machines) and, with ``--plot``, drawn together with the int8 figures of
``int8_agreement.py --json`` (``--int8 FILE``).

    nice python bench/cascade_quality.py --big weights/candidates/gen4.safetensors \\
        --fast weights/neuralengine.safetensors --json > gen4.json
    nice python bench/cascade_quality.py --curves gen4.json gen0.json --int8 int8.json --plot docs/cascade.png
    pytest bench -k cascade_quality
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import chess

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from int8_agreement import DEFAULT_POSITIONS, read_fens  # noqa: E402

#: The largest ``k`` reported (every position of the test games has fewer legal moves than this).
MAX_K = 40


def agreement_curve(big_weights: Path, fast_weights: Path, fens: list[str], max_k: int = MAX_K,
                    threads: int = 1) -> dict[str, object]:
    """``agree[k]``: the share of positions where the cascade with ``k`` scored moves plays the full move."""
    from neuralengine.engine import Engine, SearchControl
    from neuralengine.progress import Progress

    big = Engine.open(big_weights, "onnx", threads)
    fast = Engine.open(fast_weights, "onnx", threads)
    agree = [0] * (max_k + 1)
    counted = 0
    with Progress("cascade quality", total=len(fens), unit="pos") as bar:
        for fen in fens:
            board = chess.Board(fen)
            moves, actions = big._candidates(board, None)
            bar.update()
            if not moves:
                continue
            counted += 1
            verdicts, rules = big._rule_scores(board, moves, SearchControl())
            big_scores = big._score_all(board, moves, actions)
            fast_scores = fast._score_all(board, moves, actions)
            full = big._choose(board, moves, actions, verdicts, big_scores, rules)
            assert full is not None
            ruled = {i: big._ruled(verdicts.get(i), fast_scores[i]) for i in range(len(moves))}
            order = sorted(range(len(moves)), key=lambda i: (-ruled[i], actions[i]))
            for k in range(max_k + 1):
                if k == 0:
                    choice = big._fast_choice(board, moves, actions, verdicts, fast_scores, rules, "fast")
                else:
                    top = set(order[:k])
                    partial = [big_scores[i] if i in top else None for i in range(len(moves))]
                    choice = big._choose(board, moves, actions, verdicts, partial, rules)
                assert choice is not None
                agree[k] += choice.bestmove == full.bestmove
    return {"big": big_weights.name, "fast": fast_weights.name, "positions": counted,
            "agreement": [a / counted for a in agree]}


def plot(curves: list[dict], int8_rows: list[dict], out: Path,  # type: ignore[type-arg]
         names: dict[str, str] | None = None) -> None:
    """The agreement curves (left) and the int8 figures (right, when given) in one PNG; ``names`` renames the
    models' files for display."""
    import matplotlib

    def name(text: str) -> str:
        return (names or {}).get(text, text.replace(".safetensors", ""))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if int8_rows else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.4), squeeze=False)
    ax = axes[0][0]
    for curve in curves:
        shares = curve["agreement"][:21]
        label = f"big {name(curve['big'])}, fast {name(curve['fast'])}"
        line, = ax.plot(range(len(shares)), [100 * a for a in shares], marker="o", markersize=3, label=label)
        for k in (0, 3):
            ax.annotate(f"{100 * shares[k]:.1f} %", (k, 100 * shares[k]), textcoords="offset points",
                        xytext=(6, -10), fontsize=7, color=line.get_color())
    ax.set_xlabel("moves the big model scores, in the fast model's order (0: the fast model's move)")
    ax.set_ylabel("plays the full evaluation's move (% of positions)")
    ax.set_title(f"Cascade against the full evaluation, {curves[0]['positions']} positions of real games", fontsize=9)
    ax.set_xticks(range(0, 21, 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if int8_rows:
        ax = axes[0][1]
        labels = [name(r["model"]) for r in int8_rows]
        x = range(len(int8_rows))
        ax.bar([i - 0.2 for i in x], [r["fp32_pos_s"] for r in int8_rows], width=0.4, label="float32")
        ax.bar([i + 0.2 for i in x], [r["int8_pos_s"] for r in int8_rows], width=0.4, label="int8")
        for i, r in enumerate(int8_rows):
            ax.annotate(f"{100 * r['agreement']:.1f} % same move\n{r['attention']}",
                        (i, max(r["fp32_pos_s"], r["int8_pos_s"])), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylim(top=4 * max(max(r["fp32_pos_s"], r["int8_pos_s"]) for r in int8_rows))
        ax.set_ylabel("positions/s, one thread (log scale)")
        ax.set_title("int8 (dynamic quantisation) against float32, ONNX Runtime", fontsize=9)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The cascade's agreement with the full evaluation.")
    parser.add_argument("--big", type=Path, help="the model standing in for the big one")
    parser.add_argument("--fast", type=Path, help="the model standing in for the fast one")
    parser.add_argument("--curves", nargs="+", type=Path, default=[],
                        help="curves measured before (this script's --json output), drawn too")
    parser.add_argument("--data", nargs="+", type=Path, default=DEFAULT_POSITIONS, help="FEN<TAB>moves files")
    parser.add_argument("--positions", type=int, default=None, help="at most this many positions")
    parser.add_argument("--max-k", type=int, default=MAX_K)
    parser.add_argument("--plot", type=Path, help="draw the curve (and --int8) into this PNG")
    parser.add_argument("--int8", type=Path, help="the JSON output of int8_agreement.py, for the plot")
    parser.add_argument("--name", action="append", default=[], metavar="FILE=LABEL",
                        help="show the model of this file name under this label in the plot; repeatable")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = dict(item.split("=", 1) for item in args.name if "=" in item)
    if (args.big is None) != (args.fast is None) or (args.big is None and not args.curves):
        parser.error("name --big and --fast, or --curves")
    curves = [json.loads(path.read_text()) for path in args.curves]
    if args.big is None:
        if args.plot:
            plot(curves, json.loads(args.int8.read_text()) if args.int8 else [], args.plot, names)
        return 0
    curve = agreement_curve(args.big, args.fast, read_fens(args.data, args.positions), args.max_k)
    if args.plot:
        plot([curve] + curves, json.loads(args.int8.read_text()) if args.int8 else [], args.plot, names)
    if args.json:
        print(json.dumps(curve, indent=1))
        return 0
    print(f"big {curve['big']}, fast {curve['fast']}, {curve['positions']} positions")
    print("k (moves scored by the big model): share of positions where the cascade plays the full move")
    for k, share in enumerate(curve["agreement"]):  # type: ignore[arg-type]
        print(f"{k:>3} {share:>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
