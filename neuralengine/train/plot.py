"""``metrics.png``: the training and held-out curves of ``metrics.csv``.

Optional: matplotlib is not a core dependency, and a run without it keeps
its curves in ``metrics.csv`` alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

from neuralengine.atomic import atomic_path

#: What a run says when it cannot draw its curves.
NO_MATPLOTLIB = ("metrics.png not drawn: matplotlib is not installed (pip install matplotlib); "
                 "the curves are in metrics.csv")


def plot_metrics(csv_path: Path, png_path: Path) -> bool:
    """Draw the losses (left) and the held-out accuracy (also split into
    only-move and quiet positions, where measured) and Kendall tau (right) of
    ``csv_path`` into ``png_path``. Returns False, having drawn nothing,
    when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return True
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        trained = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
        ax1.plot([t[0] for t in trained], [t[1] for t in trained], label="train loss")
        evals = [(int(r["step"]), float(r["test_loss"]), float(r["action_accuracy"]), float(r["kendall_tau"]))
                 for r in rows if r.get("test_loss")]
        if evals:
            ax1.plot([e[0] for e in evals], [e[1] for e in evals], "o-", label="held-out loss")
            ax2.plot([e[0] for e in evals], [e[2] for e in evals], "o-", label="action accuracy")
            ax2.plot([e[0] for e in evals], [e[3] for e in evals], "s-", label="Kendall τ")
        for key, label, style in (("only_move_accuracy", "accuracy, only-move positions", "^--"),
                                  ("quiet_accuracy", "accuracy, quiet positions", "v--")):
            split = [(int(r["step"]), float(r[key])) for r in rows if r.get("test_loss") and r.get(key)]
            split = [(step, value) for step, value in split if value == value]  # NaN: no such positions
            if split:
                ax2.plot([e[0] for e in split], [e[1] for e in split], style, label=label, alpha=0.8)
        ax1.set_xlabel("step")
        ax1.set_ylabel("cross-entropy")
        ax1.legend()
        ax1.grid(alpha=0.3)
        ax2.set_xlabel("step")
        if evals:
            ax2.legend()
        ax2.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return True
