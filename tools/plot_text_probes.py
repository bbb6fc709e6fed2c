"""Plot a text model's board probe per layer next to the action-value models' (docs/pgn-model.md's figure).

The text model's curve comes from its ``probes.json`` (``neuralengine probe ... --weights model.safetensors``);
the action-value models' curves are the held-out accuracies published in docs/probes.md (generation 0's whole
board read from its move token, generation 1's square read from its own token), each with its random network.

    python tools/plot_text_probes.py probes-pgn/probes.json docs/pgn-model-probes.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: docs/probes.md, "Measured on the shipped model" and "Generation 0": embedding, blocks 1-4; model / random.
ACTION_VALUE = {
    "generation 0, move:piece3 (whole board from one token)": (
        [0.668, 0.699, 0.717, 0.721, 0.720], [0.661, 0.687, 0.695, 0.700, 0.701]),
    "generation 1, square:piece3 (a square's own token)": (
        [0.818, 0.908, 0.950, 0.955, 0.956], [0.819, 0.890, 0.896, 0.896, 0.902]),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    layers = report["layers"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple"])
    for name in ("dot:piece3", "dot:piece13"):
        if name not in report["results"]["trained"]:
            continue
        colour = next(colours)
        ax.plot(range(len(layers)), report["results"]["trained"][name], "o-", color=colour,
                label=f"text model, {name} (whole board at the move number's dot)")
        ax.plot(range(len(layers)), report["results"]["random"][name], "o--", color=colour, alpha=0.5,
                label=f"  random network, {name}")
    for name, (trained, rand) in ACTION_VALUE.items():
        colour = next(colours)
        ax.plot(range(len(trained)), trained, "s-", color=colour, label=name)
        ax.plot(range(len(rand)), rand, "s--", color=colour, alpha=0.5, label="  random network")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("held-out accuracy per square")
    ax.set_title("Board probes per layer: the text model and the action-value models", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(args[1], dpi=100)
    plt.close(fig)
    print(f"wrote {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
