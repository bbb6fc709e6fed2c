"""Draw the model card's strength curve: each model against the training it had.

    python tools/plot_generations.py weights/generations.csv --out weights/generations.png

The CSV has one row per model (shipped generations, candidates and the
study's runs that continue the line) with the columns ``name``,
``action_values`` (millions seen since random weights, all runs of its
history), ``thread_hours`` (wall-clock hours of one training thread, all runs),
``puzzles`` (share of the 500 puzzles solved without the mate rule, in %) and
``shipped`` (``yes`` or ``no``). An empty puzzle cell means it was not
measured. The figure has two panels with the same points: puzzles against
action values seen and against thread-hours.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows with a puzzle score (the others cannot be drawn)."""
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["puzzles"].strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(args.csv)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "action_values", "action values seen (millions)"),
                           (axes[1], "thread_hours", "training time (thread-hours, one thread, shared machine)")):
        xs = [float(r[key]) for r in rows]
        ys = [float(r["puzzles"]) for r in rows]
        ax.plot(xs, ys, color="0.6", linewidth=1, zorder=1)
        for r, x, y in zip(rows, xs, ys):
            shipped = r["shipped"].strip() == "yes"
            ax.scatter([x], [y], s=40, zorder=2, color="tab:blue" if shipped else "tab:orange",
                       marker="o" if shipped else "s")
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
        ax.axhline(25, color="tab:red", linestyle="--", linewidth=1)
        ax.text(xs[0], 25.5, "target: 25 %", color="tab:red", fontsize=8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("puzzles solved without the mate rule (%)")
    axes[0].set_ylim(0, 30)
    axes[0].scatter([], [], color="tab:blue", marker="o", label="shipped")
    axes[0].scatter([], [], color="tab:orange", marker="s", label="not shipped")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Strength against training: the 4 x 128 board-head line, from random weights")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
