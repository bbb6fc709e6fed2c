"""Annotation throughput on Ray actors against the process pool, side by side.

Both annotate the same positions with the same settings (depth, hash,
shard size) and the same number of Stockfish workers: ``--workers``
processes of ``neuralengine annotate``'s pool, then as many Ray actors on a
local cluster (``annotate --ray``). They run in turns, ``--rounds`` times,
each into a fresh folder, so load from other processes falls on both alike.
The local cluster is started once, before the first round, as a long-lived
cluster would be; creating the actors and their Stockfish processes is
inside every Ray measurement, just as starting the worker processes is inside
every pool measurement. Every round checks that both wrote identical shards.

Reported: action values per second of each round, the median of the per-round
ratios Ray / pool (the issue's goal is at least 0.90), and a bar chart.

Usage (``pytest bench -k ray_throughput`` runs one small round)::

    python bench/ray_throughput.py POSITIONS.fen --positions 200 --depth 7 --workers 2 --rounds 3 \\
        --json ray_throughput.json --plot ray_throughput.png
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def read_positions(path: Path, count: int, out: Path) -> Path:
    """The first ``count`` position lines of a positions file, copied into ``out``."""
    from neuralengine.data.positions import iter_position_lines

    lines = []
    for _, line in iter_position_lines(path):
        lines.append(line.rstrip("\n") + "\n")
        if len(lines) == count:
            break
    target = out / "train.fen"
    target.write_text("".join(lines))
    return target


def shard_texts(folder: Path) -> dict[str, str]:
    return {p.name: gzip.open(p, "rt").read() for p in sorted(folder.glob("*.txt.gz"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("positions", type=Path, help="positions file (FEN<TAB>game_id lines, as datagen writes)")
    parser.add_argument("--positions", dest="count", type=int, default=200)
    parser.add_argument("--depth", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stockfish", help="Stockfish binary (default: stockfish on PATH or /usr/games)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--plot", type=Path, help="write a bar chart here (needs matplotlib)")
    args = parser.parse_args(argv)

    from neuralengine.data.annotation import Settings, annotate
    from neuralengine.data.cluster import RayBackend, connect
    from neuralengine.data.scheduler import PoolBackend
    from neuralengine.data.stockfish import Stockfish, resolve_engine

    command = resolve_engine(args.stockfish)
    with Stockfish(command) as probe:
        engine = probe.name
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    rows: list[dict[str, object]] = []
    ray = None
    try:
        source = read_positions(args.positions, args.count, work)
        ray, _ = connect(None, args.workers)
        for round_ in range(1, args.rounds + 1):
            results = {}
            for mode in ("pool", "ray"):
                out = work / f"{mode}-{round_}"
                settings = Settings(command=command, out_dir=str(out), depth=args.depth,
                                    shard_size=args.shard_size, engine=engine)
                start = time.perf_counter()
                backend = PoolBackend(args.workers) if mode == "pool" else RayBackend(None, args.workers)
                summary = annotate([source], settings, backend, progress=False)
                seconds = time.perf_counter() - start
                results[mode] = shard_texts(out)
                rows.append({"round": round_, "mode": mode, "seconds": round(seconds, 3),
                             "positions": summary.positions, "action_values": summary.action_values,
                             "av_per_s": round(summary.action_values / seconds, 1)})
                print(f"round {round_} {mode:4s}: {summary.positions} positions, {summary.action_values} action "
                      f"values in {seconds:.2f} s = {summary.action_values / seconds:.0f} AV/s", flush=True)
            if results["pool"] != results["ray"]:
                print("the pool and Ray wrote different shards", file=sys.stderr)
                return 1
    finally:
        if ray is not None:
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    ratios = [next(r["av_per_s"] for r in rows if r["round"] == k and r["mode"] == "ray")
              / next(r["av_per_s"] for r in rows if r["round"] == k and r["mode"] == "pool")
              for k in range(1, args.rounds + 1)]
    median = statistics.median(ratios)
    print(f"Ray / pool throughput, per round: {', '.join(f'{r:.3f}' for r in ratios)}; median {median:.3f}")
    report = {"positions": args.count, "depth": args.depth, "workers": args.workers, "shard_size": args.shard_size,
              "engine": engine, "cpus": os.cpu_count(), "rounds": rows, "ratios": ratios, "median_ratio": median}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.38
        for i, mode in enumerate(("pool", "ray")):
            values = [r["av_per_s"] for r in rows if r["mode"] == mode]
            ax.bar([k + (i - 0.5) * width for k in range(len(values))], values, width,
                   label=f"{mode} ({args.workers} {'processes' if mode == 'pool' else 'actors'})")
        ax.set_xticks(range(args.rounds), [f"round {k}" for k in range(1, args.rounds + 1)])
        ax.set_ylabel("action values / s")
        ax.set_title(f"Annotation, depth {args.depth}, {args.count} positions: Ray / pool = {median:.2f}")
        ax.legend(loc="lower right")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
