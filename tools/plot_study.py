"""Plot held-out accuracy against training seen, for several training runs.

A plotting tool, not a benchmark: it draws the model card's learning curve
(``weights/learning_curve.png``) from runs that ``neuralengine train`` wrote.

    python tools/plot_study.py runs/a runs/b ... --out weights/learning_curve.png \
        --label "shared_board recipe" --label "board_head" ...

Each run folder's ``metrics.csv`` gives the curve (action accuracy and Kendall τ
of the exported EMA weights at every evaluation, against the action values seen
so far). A run started with ``--init`` from another run continues that run's
curve when ``--continues`` names it (``--continues RUN=PARENT``), so a
generation's whole history reads as one line. A run folder holding
``puzzles_nomate/puzzles.json`` adds its puzzle score (without the mate rule)
as a point on the right-hand panel.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def curve(run: Path) -> list[tuple[float, float, float]]:
    """(action values seen, accuracy, tau) at each evaluation of ``run``."""
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen = 0.0
    points = []
    for row in rows:
        if row.get("action_values"):
            seen = float(row["action_values"])
        if row.get("action_accuracy"):
            points.append((seen, float(row["action_accuracy"]), float(row["kendall_tau"])))
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--label", action="append", default=[], help="one per run, in order")
    p.add_argument("--continues", action="append", default=[], metavar="RUN=PARENT",
                   help="RUN was started from PARENT's checkpoint: shift its curve by PARENT's training")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = args.label + [r.name for r in args.runs[len(args.label):]]
    parents = dict(item.split("=", 1) for item in args.continues)
    curves = {str(r): curve(r) for r in args.runs}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, label in zip(args.runs, labels):
        offset = 0.0
        parent = parents.get(str(run))
        if parent:
            offset = max(v for v, _, _ in curve(Path(parent)))
        pts = curves[str(run)]
        xs = [(v + offset) / 1e6 for v, _, _ in pts]
        ax1.plot(xs, [100 * a for _, a, _ in pts], "o-", ms=3, label=label)
        puzzles = run / "puzzles_nomate" / "puzzles.json"
        if puzzles.is_file() and pts:
            acc = json.loads(puzzles.read_text())["accuracy"]["overall"]["accuracy"]
            ax2.plot([xs[-1]], [100 * acc], "o", ms=7, label=label)
    ax1.set_xlabel("action values seen (millions)")
    ax1.set_ylabel("held-out action accuracy (%)")
    ax1.set_title("best move has Stockfish's best score")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("action values seen (millions)")
    ax2.set_ylabel("puzzles solved without the mate rule (%)")
    ax2.set_title("500 Lichess puzzles, the network's own choice")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
